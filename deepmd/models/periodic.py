"""A periodic system made the way LAMMPS makes ghosts on one rank: dimension by dimension, periodic
images as self messages, ghosts of ghosts in later hops when the cutoff exceeds the box. Gives the
extended coordinates, the ghost -> owner mapping, a full neighbour list and the matching exchange plan."""

import math

import torch

from deepmd.models.exchange_plan import encode


def extend(coord, atype, box, cutoff):
    """coord [n,3] inside the orthorhombic box (3 lengths). Returns a dict of tensors."""
    rows = [(i, list(map(float, coord[i]))) for i in range(coord.shape[0])]
    nloc = len(rows)
    stages = []
    for d in range(3):
        start = len(rows)
        previous = {}
        for hop in range(1, math.ceil(cutoff / box[d]) + 1):
            for direction in (-1, 1):
                cand = range(0, start) if hop == 1 else range(*previous[direction])
                send = [r for r in cand
                        if (rows[r][1][d] < cutoff if direction < 0 else rows[r][1][d] >= box[d] - cutoff)]
                first = len(rows)
                for r in send:
                    p = list(rows[r][1])
                    p[d] += box[d] if direction < 0 else -box[d]
                    rows.append((rows[r][0], p))
                previous[direction] = (first, len(rows))
                stages.append([("send", 0, send), ("recv", 0, len(send), first)])
    ext = torch.tensor([p for _, p in rows], dtype=torch.float64)
    owner = torch.tensor([i for i, _ in rows], dtype=torch.long)
    d2 = ((ext[:nloc, None, :] - ext[None, :, :]) ** 2).sum(-1)
    d2[torch.arange(nloc), torch.arange(nloc)] = float("inf")
    within = d2 < cutoff * cutoff
    nnei = int(within.sum(1).max())
    nlist = torch.full((nloc, nnei), -1, dtype=torch.long)
    for i in range(nloc):
        js = torch.nonzero(within[i]).flatten()
        js = js[torch.randperm(len(js), generator=torch.Generator().manual_seed(i))]  # unsorted, as allowed
        nlist[i, : len(js)] = js
    return {
        "coord": ext.unsqueeze(0),
        "atype": atype[owner].unsqueeze(0),
        "nlist": nlist.unsqueeze(0),
        "mapping": owner.unsqueeze(0),
        "plan": encode(nloc, len(rows) - nloc, stages),
        "nloc": nloc,
        "multi_hop": any(s[0][2] and min(s[0][2]) >= nloc for s in stages),
    }


def random_system(natoms, box, ntypes, seed, min_dist=0.9):
    """Random positions with a minimum separation (a liquid-like configuration)."""
    g = torch.Generator().manual_seed(seed)
    pos = []
    while len(pos) < natoms:
        p = torch.rand(3, generator=g, dtype=torch.float64) * torch.tensor(box, dtype=torch.float64)
        ok = True
        for q in pos:
            dv = p - q
            dv -= torch.round(dv / torch.tensor(box, dtype=torch.float64)) * torch.tensor(box, dtype=torch.float64)
            if float(dv.norm()) < min_dist:
                ok = False
                break
        if ok:
            pos.append(p)
    atype = torch.randint(0, ntypes, (natoms,), generator=g)
    return torch.stack(pos), atype
