"""The floating-point work a DPA3 or DPA2 energy + forces evaluation needs at least, counted analytically
from the model's widths and the system's neighbour statistics: the multiply-adds of every linear and
contraction, per real edge, real angle (or neighbour) pair, angle slot and atom (padded slots excluded;
work whose result feeds nothing is not counted: DPA3's angle update in the layer before a node-only last
layer, DPA2's g2 update in the last repformer layer), times 2 FLOPs, times 2 for the backward (each
linear's input gradient costs its forward again; no weight gradients). Activations, gathers and
element-wise passes are not counted: the figure is the matrix work a perfect implementation cannot avoid.
Used by angle_benchmark's and profile_step's "% of peak" (with fma_peak's measured peak)."""

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


def _net_macs(net: torch.nn.Module) -> int:
    """Multiply-adds of one evaluation of an embedding or fitting network (deepmd/dpkit/network.py)."""
    return sum(layer.w.numel() for layer in net.layers)


def dpa2_flops_per_atom(model: torch.nn.Module, coord: torch.Tensor, nlist: torch.Tensor, nloc: int,
                        nall: int) -> float:
    """Minimal FLOPs per atom of one energy + forces evaluation of a DPA2 model (the module's docstring);
    coord [nall, 3], nlist [nloc, nnei] within the repinit cutoff."""
    d = model.descriptor
    ri, tb = d.repinit, d.three_body
    E = neighbour_stats(coord, nlist, nloc, nall, ri.rcut, ri.nnei, ri.rcut, ri.nnei)["edges"]
    rf = neighbour_stats(coord, nlist, nloc, nall, d.rf_rcut, d.rf_nsel, d.rf_rcut, d.rf_nsel)
    R, R2 = rf["edges"], rf["pairs"]
    macs = E * _net_macs(ri.embedding) + E * ri.ng * 4 + ri.ng * 4 * ri.axis  # repinit: G, Gᵀ·R, its products
    if tb is not None:
        P = neighbour_stats(coord, nlist, nloc, nall, tb.rcut, tb.nnei, tb.rcut, tb.nnei)["pairs"]
        macs += P * (3 + _net_macs(tb.embedding) + tb.ng)  # r_j·r_k, the pair embedding, its weighted sum
    for layer in (d.g1_shape_tranform, d.tebd_transform):
        if layer is not None:
            macs += layer.w.numel()
    macs += R * d.g2_embd.w.numel()
    for i, layer in enumerate(d.layers):
        if layer.has_attn1 or layer.has_h2:
            raise ValueError("dpa2_flops_per_atom: g1 attention and h2 updates are not modelled")
        ng1, ng2, ax = layer.ng1, layer.ng2, layer.axis
        if layer.g1_self_mlp is not None:
            macs += layer.g1_self_mlp.w.numel()
        if layer.linear2 is not None and i < len(d.layers) - 1:  # the last layer's g2 feeds nothing
            macs += R * layer.linear2.w.numel()
            if layer.proj_g1g1g2 is not None:
                macs += R * layer.proj_g1g1g2.w.numel()
            if layer.attn2_mh_apply is not None:
                amap, apply = layer.attn2g_map, layer.attn2_mh_apply
                linears = (amap.mapq, amap.mapk, apply.mapv, apply.head_map)
                macs += R * sum(linear.w.numel() for linear in linears)
                macs += R2 * (amap.nhead * (amap.hidden + ng2) + 3)  # q·kᵀ, A·V per head; h2·h2ᵀ
        if layer.proj_g1g2 is not None:
            macs += R * (layer.proj_g1g2.w.numel() + (ng1 if layer.g1_out_conv else ng2))
        if layer.has_grrg:
            macs += 3 * R * ng2 + 3 * ax * ng2
        if layer.has_drrd:
            macs += 3 * R * ng1 + 3 * ax * ng1
        macs += layer.linear1.w.numel()
    macs += _net_macs(model.fitting.nets.networks[0])
    return 4.0 * macs


def flops_per_atom(model: torch.nn.Module, coord: torch.Tensor, nlist: torch.Tensor, nloc: int, nall: int) -> float:
    """dpa3_flops_per_atom or dpa2_flops_per_atom by the model's descriptor."""
    d = model.descriptor
    if hasattr(d, "repinit"):
        return dpa2_flops_per_atom(model, coord, nlist, nloc, nall)
    if not hasattr(d, "e_rcut"):
        raise ValueError(f"the FLOP model covers DPA3 and DPA2 descriptors, not {type(d).__name__}")
    stats = neighbour_stats(coord, nlist, nloc, nall, d.e_rcut, d.e_sel, d.a_rcut, d.a_sel)
    return dpa3_flops_per_atom(model, stats)
