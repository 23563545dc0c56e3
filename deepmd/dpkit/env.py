"""Neighbour selection and the environment matrix exactly as deepmd-kit builds them (MATH.md C2-C4,
E1-E5; deepmd-kit's nlist.py and env_mat.py). TorchScript-able.

The graphs receive neighbour rows of any length and order (contracts §2); `format_nlist` turns them
into deepmd-kit's list: distance-sorted, truncated to nsel, −1 beyond rcut and in padded slots."""

from typing import List, Tuple

import torch


def safe_norm(x: torch.Tensor) -> torch.Tensor:
    """|x| over the last axis with value and gradient 0 at x = 0 (safe_for_vector_norm)."""
    squared = (x * x).sum(-1)  # a sum and a sqrt: ~2x faster than linalg.vector_norm over 3 components
    nonzero = squared > 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, squared, torch.ones_like(squared))),
                       torch.zeros_like(squared))


def neighbor_vectors(coord: torch.Tensor, nlist: torch.Tensor) -> torch.Tensor:
    """r_j − r_i [nf, nloc, nnei, 3] for nlist [nf, nloc, nnei]; −1 entries read atom 0 (as deepmd-kit)."""
    nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
    safe = torch.where(nlist >= 0, nlist, torch.zeros_like(nlist))
    rj = torch.gather(coord, 1, safe.reshape(nf, nloc * nnei, 1).expand(-1, -1, 3)).reshape(nf, nloc, nnei, 3)
    return rj - coord[:, :nloc, :].unsqueeze(2)


def format_nlist(coord: torch.Tensor, nlist: torch.Tensor, rcut: float, nsel: int) -> torch.Tensor:
    """The nsel nearest entries of each row (ascending distance), −1 where r > rcut or empty."""
    nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
    if nnei < nsel:
        pad = torch.full([nf, nloc, nsel - nnei], -1, dtype=nlist.dtype, device=nlist.device)
        nlist = torch.cat([nlist, pad], dim=2)
    real = nlist >= 0
    d = neighbor_vectors(coord.detach().to(torch.float64), nlist)  # an order only: nothing to differentiate
    r = torch.sqrt((d * d).sum(-1))
    r = torch.where(real, r, torch.full_like(r, float("inf")))
    r, order = torch.sort(r, dim=-1, stable=True)
    out = torch.gather(nlist, 2, order)
    out = torch.where(r > rcut, torch.full_like(out, -1), out)
    return out[:, :, :nsel]


def distinguish_types(nlist: torch.Tensor, atype: torch.Tensor, sel: List[int]) -> torch.Tensor:
    """Per-type sections of sel[t] entries, each in the order of the (sorted) input (nlist_distinguish_types)."""
    nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
    empty = nlist < 0
    safe = torch.where(empty, torch.zeros_like(nlist), nlist)
    tj = torch.gather(atype, 1, safe.reshape(nf, nloc * nnei)).reshape(nf, nloc, nnei)
    tj = torch.where(empty, torch.full_like(tj, -1), tj)
    sections: List[torch.Tensor] = []
    for t, s in enumerate(sel):
        pick = (tj == t).to(torch.int32)
        order = torch.sort(-pick, dim=-1, stable=True)[1]
        picked = torch.gather(nlist, 2, order)
        keep = torch.gather(pick, 2, order) > 0
        picked = torch.where(keep, picked, torch.full_like(picked, -1))
        if s > nnei:
            picked = torch.cat([picked, torch.full([nf, nloc, s - nnei], -1, dtype=nlist.dtype,
                                                   device=nlist.device)], dim=2)
        sections.append(picked[:, :, :s])
    return torch.cat(sections, dim=2)


def pair_allowed_table(ntypes: int, exclude: List[List[int]]) -> torch.Tensor:
    """[ntypes + 1, ntypes + 1] int table, 0 for excluded (symmetric) pairs; the last row/column is the
    padding type, never excluded (PairExcludeMask)."""
    table = torch.ones(ntypes + 1, ntypes + 1, dtype=torch.long)
    for a, b in exclude:
        table[a, b] = 0
        table[b, a] = 0
    return table


def pair_mask(nlist: torch.Tensor, atype: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Bool [nf, nloc, nnei]: the pair (centre type, neighbour type) is allowed by `table`."""
    nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
    ntypes = table.shape[0] - 1
    empty = nlist < 0
    safe = torch.where(empty, torch.zeros_like(nlist), nlist)
    tj = torch.gather(atype, 1, safe.reshape(nf, nloc * nnei)).reshape(nf, nloc, nnei)
    tj = torch.where(empty | (tj < 0), torch.full_like(tj, ntypes), tj)
    ti = atype[:, :nloc]
    ti = torch.where(ti < 0, torch.full_like(ti, ntypes), ti).unsqueeze(-1).expand(-1, -1, nnei)
    return table[ti, tj] > 0


def exclude_pairs(nlist: torch.Tensor, atype: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """nlist with excluded pairs set to −1 (apply_pair_exclusion_nlist)."""
    return torch.where(pair_mask(nlist, atype, table), nlist, torch.full_like(nlist, -1))


def smooth_weight(r: torch.Tensor, rmin: float, rmax: float) -> torch.Tensor:
    """Quintic switch (E2): 1 below rmin, 0 above rmax."""
    r = torch.where(r < rmin, torch.full_like(r, rmin), r)
    r = torch.where(r > rmax, torch.full_like(r, rmax), r)
    u = (r - rmin) / (rmax - rmin)
    u2 = u * u
    return u2 * u * (-6.0 * u2 + 15.0 * u - 10.0) + 1.0


def exp_switch(r: torch.Tensor, rmin: float, rmax: float) -> torch.Tensor:
    """Exponential switch (E3): exp(−exp(20 (r − rmin) / rmin)), r clipped to [0, rmax]; nonzero at rmax."""
    r = torch.where(r < 0.0, torch.zeros_like(r), r)
    r = torch.where(r > rmax, torch.full_like(r, rmax), r)
    return torch.exp(-torch.exp(20.0 / rmin * (r - rmin)))


def env_mat(coord: torch.Tensor, nlist: torch.Tensor, rcut: float, rcut_smth: float, protection: float,
            use_exp_switch: bool, radial_only: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unnormalised environment matrix (E1): (env [nf,nloc,nnei,4 or 1], diff masked [nf,nloc,nnei,3],
    switch [nf,nloc,nnei]); padded slots give 0 in all three. `coord` in the module's precision."""
    mask = (nlist >= 0).unsqueeze(-1)
    diff = neighbor_vectors(coord, nlist)
    length = safe_norm(diff).unsqueeze(-1)
    length = length + (~mask).to(length.dtype)
    t0 = 1.0 / (length + protection)
    if use_exp_switch:
        weight = exp_switch(length, rcut_smth, rcut)
    else:
        weight = smooth_weight(length, rcut_smth, rcut)
    weight = weight * mask.to(weight.dtype)
    if radial_only:
        env = t0 * weight
    else:
        env = torch.cat([t0, diff / (length + protection) ** 2], dim=-1) * weight
    return env, diff * mask.to(diff.dtype), weight.squeeze(-1)


def normalize(env: torch.Tensor, atype_local: torch.Tensor, davg: torch.Tensor, dstd: torch.Tensor) -> torch.Tensor:
    """(env − davg[t_i]) / dstd[t_i] per slot and component (E4); virtual centres (type < 0) untouched.
    davg, dstd: [ntypes, nnei, ncomp]."""
    real = (atype_local >= 0).unsqueeze(-1).unsqueeze(-1)
    t = torch.where(atype_local >= 0, atype_local, torch.zeros_like(atype_local))
    avg = torch.where(real, davg[t], torch.zeros_like(davg[t]))
    std = torch.where(real, dstd[t], torch.ones_like(dstd[t]))
    return (env - avg) / std
