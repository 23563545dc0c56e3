"""The floating-point work a DPA3 energy + forces evaluation needs at least, counted analytically from the
model's widths and the system's neighbour statistics: the multiply-adds of every linear, per real edge,
real angle pair, angle slot and atom (padded slots excluded; the layer before a node-only last layer
computes no angle update), times 2 FLOPs, times 2 for the backward (each linear's input gradient costs
its forward again; no weight gradients). Activations, gathers and element-wise passes are not counted:
the figure is the matrix work a perfect implementation cannot avoid. Used by angle_benchmark's
"% of peak" (with fma_peak's measured peak)."""

from typing import Dict

import torch


def neighbour_stats(coord: torch.Tensor, nlist: torch.Tensor, nloc: int, nall: int, e_rcut: float, e_sel: int,
                    a_rcut: float, a_sel: int) -> Dict[str, float]:
    """Per local atom: real edges (within e_rcut, at most e_sel), angle slots (within a_rcut among the
    first a_sel), real angle pairs (slots squared), and extended atoms per local atom. coord [nall, 3],
    nlist [nloc, nnei] (any order, -1 padded)."""
    safe = torch.where(nlist >= 0, nlist, torch.zeros_like(nlist))
    r = (coord[safe] - coord[:nloc].unsqueeze(1)).norm(dim=-1)
    r = torch.sort(torch.where(nlist >= 0, r, torch.full_like(r, float("inf"))), dim=-1)[0][:, :e_sel]
    edges = r < e_rcut
    slots = (r[:, :a_sel] < a_rcut).sum(-1).double()
    return {"edges": float(edges.sum()) / nloc, "slots": float(slots.mean()), "pairs": float((slots ** 2).mean()),
            "ext": nall / nloc}


def dpa3_flops_per_atom(model: torch.nn.Module, stats: Dict[str, float]) -> float:
    """Minimal FLOPs per atom of one energy + forces evaluation (see the module's docstring)."""
    d = model.descriptor
    E, A, P, R = stats["edges"], stats["slots"], stats["pairs"], stats["ext"]
    macs = E * d.e_dim + P * d.a_dim  # edge and angle embeddings (one input each)
    nlayers = len(d.layers)
    for i, layer in enumerate(d.layers):
        n, e, a, m = layer.n_dim, layer.e_dim, layer.a_dim, layer.nheads * layer.n_dim
        macs += n * n + layer.node_sym_linear.w.numel()  # node_self_mlp, node_sym_linear
        macs += E * 3 * (e + n) + 3 * layer.axis * (e + n)  # grrg's moments and products
        macs += (E * e + (R + 1) * n) * m  # messages: edge, neighbour and centre blocks
        if i == nlayers - 1:
            continue  # node-only last layer
        macs += (E * e + (R + 1) * n) * e  # edge self update
        if not layer.update_angle:
            continue
        na, ea = layer.n_a, layer.e_a
        if layer.compress == 1:
            macs += n * na + A * e * ea
        macs += A * 2 * ea * e + na * e + P * a * e + A * e * e  # edge_angle_linear1 blocks, per pair, linear2
        if layer.angles_read:
            macs += A * 2 * ea * a + na * a + P * a * a  # angle_self_linear blocks, per pair
    nets = model.fitting.nets.networks
    macs += sum(layer.w.numel() for layer in nets[0].layers)
    return 4.0 * macs
