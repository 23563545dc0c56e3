"""Building blocks shared by the reference descriptors: smooth switches, MLPs with deterministic
initialisation, and neighbour selection from an unsorted, -1-padded neighbour list.

Everything here is TorchScript-compatible on torch 1.13."""

from typing import List, Tuple

import torch


def smooth_switch(r: torch.Tensor, r_smth: float, r_cut: float) -> torch.Tensor:
    """1 below r_smth, 0 beyond r_cut, a quintic in between: value, first and second derivatives are
    continuous everywhere (so forces and their derivatives are continuous as atoms cross a cutoff)."""
    u = ((r - r_smth) / (r_cut - r_smth)).clamp(0.0, 1.0)
    return 1.0 - u * u * u * (10.0 + u * (-15.0 + 6.0 * u))


class MLP(torch.nn.Module):
    """tanh MLP; weights drawn from a generator seeded per layer so a model is a function of its seed."""

    def __init__(self, dims: List[int], seed: int, dtype: torch.dtype, gain: float = 1.0,
                 activate_last: bool = True):
        super().__init__()
        layers = []
        for i in range(len(dims) - 1):
            layer = torch.nn.Linear(dims[i], dims[i + 1], dtype=dtype)
            g = torch.Generator().manual_seed(seed * 1009 + i)
            with torch.no_grad():
                std = gain / (dims[i] ** 0.5)
                layer.weight.copy_(torch.randn(dims[i + 1], dims[i], generator=g, dtype=torch.float64) * std)
                layer.bias.copy_(torch.randn(dims[i + 1], generator=g, dtype=torch.float64) * 0.1)
            layers.append(layer)
        self.layers = torch.nn.ModuleList(layers)
        self.activate_last = activate_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n - 1 or self.activate_last:
                x = torch.tanh(x)
        return x

    # forward(torch.cat(parts, -1)) without the concatenation, for parts that broadcast against each
    # other: the first layer's product is a sum of per-part products, so a part shared by many rows (a
    # centre atom's features for all its neighbours) is multiplied once, and a part indexed by
    # neighbour can be multiplied per atom before the gather. `project` gives one term, `finish` the rest.

    def project(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x times the first layer's weight block for input columns [start, start + x.shape[-1])."""
        out = x
        for i, layer in enumerate(self.layers):  # TorchScript cannot index a ModuleList here
            if i == 0:
                out = torch.matmul(x, layer.weight[:, start : start + x.shape[-1]].t())
        return out

    def finish(self, first: torch.Tensor) -> torch.Tensor:
        """The MLP's output from the sum of its first layer's `project` terms."""
        n = len(self.layers)
        x = first
        for i, layer in enumerate(self.layers):
            x = x + layer.bias if i == 0 else layer(x)
            if i < n - 1 or self.activate_last:
                x = torch.tanh(x)
        return x


def select_neighbors(coord: torch.Tensor, nlist: torch.Tensor, nloc: int, rcut: float,
                     sel: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keeps, for each local atom, its `sel` nearest neighbours within rcut (nlist rows may be longer
    than sel, unsorted, -1 padded). Returns (index [nf,nloc,sel] with -1 where empty,
    rij [nf,nloc,sel,3] = r_j - r_i (zero where empty), distance [nf,nloc,sel] (rcut where empty))."""
    nf = coord.shape[0]
    nnei = nlist.shape[2]
    if nnei < sel:
        pad = torch.full([nf, nloc, sel - nnei], -1, dtype=nlist.dtype, device=nlist.device)
        nlist = torch.cat([nlist, pad], dim=2)
        nnei = sel
    valid = nlist >= 0
    safe = torch.where(valid, nlist, torch.zeros_like(nlist))
    ri = coord[:, :nloc, :].unsqueeze(2)
    rj = torch.gather(coord, 1, safe.reshape(nf, nloc * nnei, 1).expand(-1, -1, 3)).reshape(nf, nloc, nnei, 3)
    rij = rj - ri
    big = torch.full_like(rij[..., 0], 1e10)
    dist2 = torch.where(valid, (rij * rij).sum(-1), big)
    order = torch.topk(dist2, sel, dim=2, largest=False, sorted=True).indices
    index = torch.gather(nlist, 2, order)
    d2 = torch.gather(dist2, 2, order)
    keep = (index >= 0) & (d2 < rcut * rcut)
    index = torch.where(keep, index, torch.full_like(index, -1))
    rij = torch.gather(rij, 2, order.unsqueeze(-1).expand(-1, -1, -1, 3))
    rij = torch.where(keep.unsqueeze(-1), rij, torch.zeros_like(rij))
    # sqrt of a safe value where empty: no NaN gradients through padded entries.
    d2_safe = torch.where(keep, (rij * rij).sum(-1), torch.full_like(d2, rcut * rcut))
    return index, rij, d2_safe.sqrt()


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [nf, nall, F], index [nf, nloc, k] (-1 = empty) -> [nf, nloc, k, F], zero where empty."""
    nf, nloc, k = index.shape[0], index.shape[1], index.shape[2]
    safe = torch.where(index >= 0, index, torch.zeros_like(index))
    out = torch.gather(x, 1, safe.reshape(nf, nloc * k, 1).expand(-1, -1, x.shape[2]))
    out = out.reshape(nf, nloc, k, x.shape[2])
    return out * (index >= 0).unsqueeze(-1).to(x.dtype)
