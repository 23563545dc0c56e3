"""Reference descriptors. Each maps (extended coordinates, extended types, neighbour list, ghost
mapping or plan) to per-local-atom features [nf, nloc, dim_out]. Message-passing descriptors fill
ghost embeddings before every layer through their `ghosts` submodule (ghosts.py); nothing else
differs between the regular and the with-comm graph."""

from typing import List, Optional

import torch

from deepmd.models.common import MLP, gather_rows, select_neighbors, smooth_switch
from deepmd.models.ghosts import MappingGhosts


class SeE2A(torch.nn.Module):
    """Two-body smooth embedding (DeepPot-SE): no message passing, the baseline."""

    def __init__(self, ntypes: int, rcut: float, rcut_smth: float, sel: int, neuron: List[int],
                 axis_neuron: int, seed: int, dtype: torch.dtype):
        super().__init__()
        self.rcut, self.rcut_smth, self.sel = rcut, rcut_smth, sel
        self.axis_neuron = axis_neuron
        self.nets = torch.nn.ModuleList([MLP([1] + neuron, seed + t, dtype) for t in range(ntypes)])
        self.dim_out = neuron[-1] * axis_neuron
        self.has_message_passing = False
        self.nlayers = 0
        self.ghosts = MappingGhosts()  # unused: kept so every descriptor has the same structure

    def exchanged_widths(self) -> List[int]:
        """Feature width of each ghost exchange of one evaluation, in call order (metadata)."""
        return []

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                mapping: Optional[torch.Tensor], plan: Optional[torch.Tensor]) -> torch.Tensor:
        nf, nloc = nlist.shape[0], nlist.shape[1]
        index, rij, d = select_neighbors(coord, nlist, nloc, self.rcut, self.sel)
        mask = (index >= 0).to(coord.dtype)
        sw = smooth_switch(d, self.rcut_smth, self.rcut) * mask
        s = sw / d
        env = torch.cat([s.unsqueeze(-1), (s / d).unsqueeze(-1) * rij], dim=-1)  # [nf,nloc,sel,4]
        tj = gather_rows(atype.unsqueeze(-1).to(coord.dtype), index).squeeze(-1).to(torch.long)
        g = torch.zeros(nf, nloc, self.sel, self.dim_out // self.axis_neuron, dtype=coord.dtype,
                        device=coord.device)
        for t, net in enumerate(self.nets):
            g = g + (tj == t).unsqueeze(-1).to(coord.dtype) * net(s.unsqueeze(-1))
        g = g * mask.unsqueeze(-1)
        t_mat = torch.matmul(g.transpose(2, 3), env) / self.sel ** 0.5  # [nf,nloc,M,4]
        desc = torch.matmul(t_mat, t_mat[:, :, : self.axis_neuron, :].transpose(2, 3))
        return desc.reshape(nf, nloc, self.dim_out)


class RepFlowLayer(torch.nn.Module):
    def __init__(self, n_dim: int, e_dim: int, a_dim: int, seed: int, dtype: torch.dtype):
        super().__init__()
        self.message = MLP([2 * n_dim + e_dim, n_dim], seed, dtype)
        self.node_self = MLP([n_dim, n_dim], seed + 1, dtype, gain=0.5)
        self.edge_update = MLP([2 * n_dim + e_dim, e_dim], seed + 2, dtype, gain=0.5)
        self.angle_update = MLP([a_dim + 2 * e_dim, a_dim], seed + 3, dtype, gain=0.5)
        self.angle_to_edge = MLP([a_dim, e_dim], seed + 4, dtype, gain=0.5)


class RepFlows(torch.nn.Module):
    """DPA3-style repflows: node, edge and angle embeddings updated layer by layer; every layer reads
    its neighbours' node embeddings, so ghosts must be filled before each layer."""

    def __init__(self, ntypes: int, e_rcut: float, e_rcut_smth: float, e_sel: int, a_rcut: float,
                 a_rcut_smth: float, a_sel: int, n_dim: int, e_dim: int, a_dim: int, nlayers: int,
                 n_rbf: int, seed: int, dtype: torch.dtype, use_loc_mapping: bool = False):
        super().__init__()
        # use_loc_mapping: ghosts only ever come through the mapping, so the model cannot run on
        # several ranks (no with-comm graph is exported), as deepmd-kit's DPA3 option of that name.
        self.use_loc_mapping = use_loc_mapping
        if a_sel > e_sel or a_rcut > e_rcut:
            raise ValueError("repflows: angles use the nearest edge neighbours, so a_sel <= e_sel and a_rcut <= e_rcut")
        self.e_rcut, self.e_rcut_smth, self.e_sel = e_rcut, e_rcut_smth, e_sel
        self.a_rcut, self.a_rcut_smth, self.a_sel = a_rcut, a_rcut_smth, a_sel
        self.n_dim, self.nlayers, self.dim_out = n_dim, nlayers, n_dim
        g = torch.Generator().manual_seed(seed)
        self.type_embedding = torch.nn.Parameter(torch.randn(ntypes, n_dim, generator=g, dtype=torch.float64).to(dtype))
        self.register_buffer("rbf_centers", torch.linspace(0.0, e_rcut, n_rbf, dtype=dtype))
        self.rbf_width = e_rcut / n_rbf
        self.edge_embed = MLP([n_rbf, e_dim], seed + 1, dtype)
        self.angle_embed = MLP([1, a_dim], seed + 2, dtype)
        self.layers = torch.nn.ModuleList([RepFlowLayer(n_dim, e_dim, a_dim, seed + 10 * (l + 1), dtype)
                                           for l in range(nlayers)])
        self.has_message_passing = True
        self.ghosts = MappingGhosts()

    def exchanged_widths(self) -> List[int]:
        return [] if self.use_loc_mapping else [self.n_dim] * self.nlayers

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                mapping: Optional[torch.Tensor], plan: Optional[torch.Tensor]) -> torch.Tensor:
        nloc, nall = nlist.shape[1], coord.shape[1]
        index, rij, d = select_neighbors(coord, nlist, nloc, self.e_rcut, self.e_sel)
        mask = (index >= 0).to(coord.dtype)
        sw_e = (smooth_switch(d, self.e_rcut_smth, self.e_rcut) * mask).unsqueeze(-1)
        rbf = torch.exp(-(((d.unsqueeze(-1) - self.rbf_centers) / self.rbf_width) ** 2))
        edge = self.edge_embed(rbf)  # [nf,nloc,e_sel,e_dim]
        a = self.a_sel
        ra, da = rij[:, :, :a, :], d[:, :, :a]
        sw_a = smooth_switch(da, self.a_rcut_smth, self.a_rcut) * mask[:, :, :a]
        cos = torch.matmul(ra, ra.transpose(2, 3)) / (da.unsqueeze(-1) * da.unsqueeze(-2))
        w_a = (sw_a.unsqueeze(-1) * sw_a.unsqueeze(-2)).unsqueeze(-1)  # [nf,nloc,a,a,1]
        angle = self.angle_embed(cos.unsqueeze(-1))  # [nf,nloc,a,a,a_dim]
        node = self.type_embedding[atype[:, :nloc]]  # [nf,nloc,n_dim]
        n, e, width_a = self.n_dim, edge.shape[-1], angle.shape[-1]
        last = len(self.layers) - 1
        for l, layer in enumerate(self.layers):
            node_ext = self.ghosts(node, nall, mapping, plan)
            # The message and edge MLPs read [centre | neighbour | edge]: the centre's and the
            # neighbours' terms are multiplied per atom, then broadcast and gathered per edge.
            if l == last:  # the last layer's edges and angles would feed nothing
                projected = layer.message.project(node_ext, n)
            else:
                projected = torch.cat([layer.message.project(node_ext, n), layer.edge_update.project(node_ext, n)],
                                      dim=-1)
            from_neighbors = gather_rows(projected, index)
            message = layer.message.finish(layer.message.project(node, 0).unsqueeze(2) + from_neighbors[..., :n]
                                           + layer.message.project(edge, 2 * n))
            node_next = node + layer.node_self(node) + (sw_e * message).sum(2) / self.e_sel
            if l < last:
                edge_next = edge + layer.edge_update.finish(
                    layer.edge_update.project(node, 0).unsqueeze(2) + from_neighbors[..., n:]
                    + layer.edge_update.project(edge, 2 * n))
                # The angle MLP reads [angle | edge_ij | edge_ik]: edge terms are multiplied per edge
                # and broadcast over the other neighbour.
                edge_a = edge[:, :, :a, :]
                update = layer.angle_update
                angle = angle + update.finish(update.project(angle, 0) + update.project(edge_a, width_a).unsqueeze(3)
                                              + update.project(edge_a, width_a + e).unsqueeze(2))
                from_angles = (w_a * layer.angle_to_edge(angle)).sum(3) / a
                edge = torch.cat([edge_next[:, :, :a, :] + from_angles, edge_next[:, :, a:, :]], dim=2)
            node = node_next
        return node


class RepformerLayer(torch.nn.Module):
    def __init__(self, g1_dim: int, g2_dim: int, attn_dim: int, axis: int, seed: int, dtype: torch.dtype):
        super().__init__()
        self.query = MLP([g1_dim, attn_dim], seed, dtype, activate_last=False)
        self.key = MLP([g1_dim, attn_dim], seed + 1, dtype, activate_last=False)
        self.value = MLP([g1_dim, g1_dim], seed + 2, dtype)
        self.pair_project = MLP([g1_dim, g2_dim], seed + 3, dtype, activate_last=False)
        self.pair_update = MLP([2 * g2_dim, g2_dim], seed + 4, dtype, gain=0.5)
        self.node_update = MLP([2 * g1_dim + g2_dim * axis, g1_dim], seed + 5, dtype, gain=0.5)


class Repformers(torch.nn.Module):
    """DPA2-style: a repinit block (two-body, type-embedded, no message passing) gives the first node
    features g1; repformer layers then update g1 from neighbours' g1 (smooth attention), pair
    features g2 and direction features, so every layer needs ghosts' g1."""

    def __init__(self, ntypes: int, rcut_init: float, rcut_smth_init: float, sel_init: int, rcut: float,
                 rcut_smth: float, sel: int, tebd_dim: int, init_neuron: List[int], init_axis: int, g1_dim: int,
                 g2_dim: int, attn_dim: int, axis: int, nlayers: int, seed: int, dtype: torch.dtype):
        super().__init__()
        if rcut > rcut_init:
            raise ValueError("dpa2: the repformer cutoff must not exceed the repinit cutoff")
        self.rcut_init, self.rcut_smth_init, self.sel_init = rcut_init, rcut_smth_init, sel_init
        self.rcut, self.rcut_smth, self.sel = rcut, rcut_smth, sel
        self.init_axis, self.axis, self.nlayers, self.dim_out = init_axis, axis, nlayers, g1_dim
        self.invariant_width = g2_dim * axis
        g = torch.Generator().manual_seed(seed)
        self.type_embedding = torch.nn.Parameter(
            torch.randn(ntypes, tebd_dim, generator=g, dtype=torch.float64).to(dtype))
        self.init_net = MLP([1 + 2 * tebd_dim] + init_neuron, seed + 1, dtype)
        self.init_width = init_neuron[-1] * init_axis
        self.init_out = MLP([self.init_width, g1_dim], seed + 2, dtype)
        self.pair_embed = MLP([1, g2_dim], seed + 3, dtype)
        self.layers = torch.nn.ModuleList([RepformerLayer(g1_dim, g2_dim, attn_dim, axis, seed + 10 * (l + 1), dtype)
                                           for l in range(nlayers)])
        self.has_message_passing = True
        self.ghosts = MappingGhosts()

    def exchanged_widths(self) -> List[int]:
        return [self.dim_out] * self.nlayers

    def _repinit(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor) -> torch.Tensor:
        nf, nloc = nlist.shape[0], nlist.shape[1]
        index, rij, d = select_neighbors(coord, nlist, nloc, self.rcut_init, self.sel_init)
        mask = (index >= 0).to(coord.dtype)
        s = smooth_switch(d, self.rcut_smth_init, self.rcut_init) * mask / d
        env = torch.cat([s.unsqueeze(-1), (s / d).unsqueeze(-1) * rij], dim=-1)
        tebd_ext = self.type_embedding[atype]  # [nf,nall,tebd]
        tebd_j = gather_rows(tebd_ext, index)
        tebd_i = tebd_ext[:, :nloc, :].unsqueeze(2).expand(-1, -1, self.sel_init, -1)
        g = self.init_net(torch.cat([s.unsqueeze(-1), tebd_i, tebd_j], dim=-1)) * mask.unsqueeze(-1)
        t_mat = torch.matmul(g.transpose(2, 3), env) / self.sel_init
        desc = torch.matmul(t_mat, t_mat[:, :, : self.init_axis, :].transpose(2, 3))
        return self.init_out(desc.reshape(nf, nloc, self.init_width))

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                mapping: Optional[torch.Tensor], plan: Optional[torch.Tensor]) -> torch.Tensor:
        nf, nloc, nall = nlist.shape[0], nlist.shape[1], coord.shape[1]
        g1 = self._repinit(coord, atype, nlist)
        index, rij, d = select_neighbors(coord, nlist, nloc, self.rcut, self.sel)
        mask = (index >= 0).to(coord.dtype)
        sw = smooth_switch(d, self.rcut_smth, self.rcut) * mask  # [nf,nloc,sel]
        h2 = rij / d.unsqueeze(-1)  # unit directions
        g2 = self.pair_embed((sw / d).unsqueeze(-1))
        for layer in self.layers:
            g1_ext = self.ghosts(g1, nall, mapping, plan)
            g1_j = gather_rows(g1_ext, index)
            # Smooth attention: a neighbour's weight and its share of the normalisation vanish with sw.
            logits = torch.tanh((layer.query(g1).unsqueeze(2) * layer.key(g1_j)).sum(-1)) * 3.0
            weight = sw * torch.exp(logits)
            weight = weight / (1.0 + weight.sum(-1, keepdim=True))
            attended = (weight.unsqueeze(-1) * layer.value(g1_j)).sum(2)
            g2 = g2 + layer.pair_update(torch.cat([g2, layer.pair_project(g1.unsqueeze(2) * g1_j)], dim=-1))
            # Rotation-invariant contraction of pair features with directions.
            t_mat = torch.matmul((sw.unsqueeze(-1) * g2).transpose(2, 3), h2) / self.sel  # [nf,nloc,g2,3]
            invariant = torch.matmul(t_mat, t_mat[:, :, : self.axis, :].transpose(2, 3)).reshape(
                nf, nloc, self.invariant_width)
            g1 = g1 + layer.node_update(torch.cat([g1, attended, invariant], dim=-1))
        return g1


class Hybrid(torch.nn.Module):
    """Concatenates the features of several descriptors; needs ghosts if any child does."""

    def __init__(self, children: List[torch.nn.Module]):
        super().__init__()
        self.children_list = torch.nn.ModuleList(children)
        self.dim_out = sum(c.dim_out for c in children)
        self.has_message_passing = any(c.has_message_passing for c in children)
        self.nlayers = max(c.nlayers for c in children)

    def exchanged_widths(self) -> List[int]:
        return [w for c in self.children_list for w in c.exchanged_widths()]

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                mapping: Optional[torch.Tensor], plan: Optional[torch.Tensor]) -> torch.Tensor:
        parts: List[torch.Tensor] = []
        for child in self.children_list:
            parts.append(child(coord, atype, nlist, mapping, plan))
        return torch.cat(parts, dim=-1)
