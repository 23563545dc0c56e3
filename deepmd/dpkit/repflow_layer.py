"""deepmd-kit's RepFlowLayer (DPA3's message-passing layer, @version 1-2; MATH.md §2.5 D5-D11,
deepmd-kit deepmd/dpmodel/descriptor/repflows.py) as a TorchScript-able module.

Dense layout, padded only to the widest real row of the frame (dpa3.py trims the lists): edges
[nf, nloc, N, e_dim], angles [nf, nloc, A, A, a_dim]. Padded slots carry values but every reduction
multiplies them by a zero switch or mask, so they contribute exactly zero; the normalisers are the
model's constants (e_sel, a_sel, or e_sel/sel_reduce_factor, a_sel/sel_reduce_factor with dynamic sel),
never the padded width. Linears of concatenations are evaluated block by block (deepmd-kit's
optim_update; identical math): per-atom and per-edge parts are multiplied before they are broadcast, so
no [nloc, A, A, n_dim + 2 e_dim] concatenation is ever formed."""

from typing import Any, Dict, Final, List, Optional, Tuple

import numpy as np
import torch

from deepmd.dpkit.network import Activation, Layer, precision_dtype, tensor
from deepmd.dpkit.serialization import UnsupportedModel, check_version, require, variables

STYLES = {"res_avg": 0, "res_incr": 1, "res_residual": 2}


def dummy_layer(dtype: torch.dtype) -> Layer:
    """A placeholder Layer (never evaluated) where deepmd-kit has None, so TorchScript sees one type."""
    name = "float32" if dtype == torch.float32 else "float64"
    return Layer({"@variables": {"w": np.zeros((1, 1)), "b": None, "idt": None}, "precision": name}, "unused")


class SplitLinear(torch.nn.Module):
    """A deepmd-kit Layer whose input is a concatenation [x0, x1, x2, x3]: its weight cut into row blocks
    so that x·W = Σ_k x_k·W_k is evaluated per block (unused blocks are empty)."""

    def __init__(self, node: Any, where: str, widths: List[int], dtype: torch.dtype):
        super().__init__()
        if node is None:
            self.present = False
            layer = dummy_layer(dtype)
            widths = [0, 0, 0, 0]
            w = torch.zeros(0, 1, dtype=dtype)
        else:
            if not isinstance(node, dict):
                raise UnsupportedModel(f"{where}: not a Layer node")
            self.present = True
            layer = Layer(node, where)
            if layer.w.dtype != dtype:
                raise UnsupportedModel(f"{where}: precision differs from the descriptor's")
            if layer.num_in != sum(widths):
                raise UnsupportedModel(f"{where}: input width {layer.num_in}, but its inputs are {widths} "
                                       f"(sum {sum(widths)}); the layer does not match the options of its RepFlowLayer")
            if layer.residual != 0:
                raise UnsupportedModel(f"{where}: resnet=True on a RepFlowLayer linear is not something deepmd-kit "
                                       "writes; re-export the model")
            w = layer.w
            widths = widths + [0] * (4 - len(widths))
        self.num_out = int(w.shape[1])
        starts = [0, widths[0], widths[0] + widths[1], widths[0] + widths[1] + widths[2]]
        self.register_buffer("w0", w[starts[0]:starts[0] + widths[0]].clone())
        self.register_buffer("w1", w[starts[1]:starts[1] + widths[1]].clone())
        self.register_buffer("w2", w[starts[2]:starts[2] + widths[2]].clone())
        self.register_buffer("w3", w[starts[3]:starts[3] + widths[3]].clone())
        self.has_bias = layer.has_bias
        self.register_buffer("b", layer.b.clone() if layer.has_bias else torch.zeros(self.num_out, dtype=dtype))
        self.has_idt = layer.has_idt
        self.register_buffer("idt", layer.idt.clone())
        self.activation = layer.activation

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """The layer's own activation and timestep after x·W + b (deepmd-kit writes 'none' and no idt)."""
        y = self.activation(y)
        if self.has_idt:
            y = y * self.idt
        return y

    @torch.jit.export
    def edge_form(self, node: torch.Tensor, node_ext: torch.Tensor, edge: torch.Tensor,
                  flat_index: torch.Tensor) -> torch.Tensor:
        """layer([n_i, n_j, e_ij]) = e_ij·W_e + (n_ext·W_j)[j] + (n_i·W_i + b), then its own activation."""
        nf, nloc, nnei = edge.shape[0], edge.shape[1], edge.shape[2]
        y = torch.matmul(edge, self.w2)
        y.add_(gather_neighbours(torch.matmul(node_ext, self.w1), flat_index, nf, nloc, nnei))
        y.add_((torch.matmul(node, self.w0) + self.b).unsqueeze(2))
        return self.forward(y)

    @torch.jit.export
    def angle_form(self, angle: torch.Tensor, node_a: torch.Tensor, edge_a: torch.Tensor) -> torch.Tensor:
        """layer([a_ijk, n_i, e_ik, e_ij]): the per-(i,j) and per-(i,k) parts added to a·W_a."""
        y = torch.matmul(angle, self.w0)
        pair_j = torch.matmul(edge_a, self.w3) + (torch.matmul(node_a, self.w1) + self.b).unsqueeze(2)
        y.add_(pair_j.unsqueeze(3))
        y.add_(torch.matmul(edge_a, self.w2).unsqueeze(2))
        return self.forward(y)


def _node_of(node: Dict[str, Any], key: str, where: str, needed: bool) -> Any:
    sub = node.get(key)
    if needed and not isinstance(sub, dict):
        raise UnsupportedModel(f"{where}: {key} is missing although the layer's options need it; the file is "
                               "incomplete or not a deepmd-kit model dict")
    return sub if needed else None


def gather_neighbours(x_ext: torch.Tensor, flat_index: torch.Tensor, nf: int, nloc: int, nnei: int) -> torch.Tensor:
    """x_ext [nf, nall, F] read at the neighbours: [nf, nloc, nnei, F] (flat_index includes frame offsets)."""
    width = x_ext.shape[2]
    return torch.index_select(x_ext.reshape(-1, width), 0, flat_index).reshape(nf, nloc, nnei, width)


def pack_angles(x: torch.Tensor, a_mask: torch.Tensor) -> torch.Tensor:
    """x [nf, nloc, A, A, ...] at the real pairs (a_mask_j & a_mask_k): [pairs, ...], centre by centre, j then
    k in slot order: the fused kernel's packed angle layout (deepmd/kernels/repflow_angle.h)."""
    pair = a_mask.unsqueeze(-1) & a_mask.unsqueeze(-2)
    return x[pair]


class RepFlowLayer(torch.nn.Module):
    # The edge path through deepmd_kernels::repflow_edge and the angle path through
    # deepmd_kernels::repflow_angle (deepmd/kernels) instead of the reference formulation. Final:
    # TorchScript compiles only the branch selected, so a reference graph never needs the kernels'
    # library. Set by build.set_layer_formulation before scripting.
    fused: Final[bool]
    # Whether a later layer reads this layer's new angles: not the one before a node-only last layer
    # (DescrptDPA3 sets it), whose angle update the fused path then skips.
    angles_read: Final[bool]

    def __init__(self, node: Dict[str, Any], where: str, dtype: torch.dtype, dims: Dict[str, Any]):
        super().__init__()
        self.fused = False
        self.angles_read = True
        self.where = where
        if node.get("@class", "RepFlowLayer") != "RepFlowLayer":
            raise UnsupportedModel(f"{where}: @class {node.get('@class')!r} is not RepFlowLayer")
        check_version(node, where, 1, 2)
        precision = precision_dtype(node.get("precision", "float64"), where)
        if precision != dtype:
            raise UnsupportedModel(f"{where}: precision {node.get('precision')!r} differs from the descriptor's")
        # Options of the layer itself (deepmd-kit rebuilds the layer from its own node; constructor defaults).
        self.n_dim = int(node.get("n_dim", 128))
        self.e_dim = int(node.get("e_dim", 16))
        self.a_dim = int(node.get("a_dim", 64))
        e_sel = node.get("e_sel", dims["e_sel"])
        self.nnei = int(sum(e_sel)) if isinstance(e_sel, list) else int(e_sel)
        self.a_sel = int(node.get("a_sel", dims["a_sel"]))
        self.axis = int(node.get("axis_neuron", 4))
        self.nheads = int(node.get("n_multi_edge_message", 1))
        self.update_angle = bool(node.get("update_angle", True))
        style = node.get("update_style", "res_residual")
        if style not in STYLES:
            raise UnsupportedModel(f"{where}: update_style {style!r} is not one deepmd-kit defines "
                                   f"({', '.join(STYLES)})")
        self.style = STYLES[style]
        self.smooth = bool(node.get("smooth_edge_update", False))
        self.dynamic = bool(node.get("use_dynamic_sel", False))
        reduce = float(node.get("sel_reduce_factor", 10.0))
        self.sequential = bool(node.get("sequential_update", False))
        rate = int(node.get("a_compress_rate", 0))
        e_rate = int(node.get("a_compress_e_rate", 1))
        split = bool(node.get("a_compress_use_split", False))
        for key, value in (("n_dim", self.n_dim), ("e_dim", self.e_dim), ("a_dim", self.a_dim),
                           ("e_sel", self.nnei), ("a_sel", self.a_sel), ("update_angle", self.update_angle),
                           ("use_dynamic_sel", self.dynamic)):
            if dims[key] != value:
                raise UnsupportedModel(f"{where}: {key}={value!r} differs from the descriptor's repflow_args "
                                       f"({dims[key]!r}); the file is inconsistent")
        if self.nheads < 1:
            raise UnsupportedModel(f"{where}: n_multi_edge_message={self.nheads} (deepmd-kit needs >= 1)")
        if self.sequential and (self.style != 2 or not self.update_angle):
            raise UnsupportedModel(f"{where}: sequential_update needs update_style res_residual and update_angle "
                                   "(deepmd-kit refuses this configuration)")
        if self.dynamic and not self.smooth:
            raise UnsupportedModel(f"{where}: use_dynamic_sel needs smooth_edge_update=True (deepmd-kit refuses "
                                   "this configuration)")
        if self.dynamic:
            if reduce <= 0:
                raise UnsupportedModel(f"{where}: sel_reduce_factor={reduce} must be > 0")
            e_norm = self.nnei / reduce
            a_norm = self.a_sel / reduce
            self.e_norm = e_norm
            self.e_scale = e_norm ** (-0.5)
            self.a_scale = a_norm ** 0.5
        else:
            self.e_norm = float(self.nnei)
            self.e_scale = 1.0 / (float(self.nnei) ** 0.5)
            self.a_scale = float(self.a_sel) ** 0.5
        # angle compression: 0 none, 1 bias-free linears, 2 first channels
        if self.update_angle and rate != 0:
            if (self.a_dim * e_rate) % (2 * rate) != 0:
                raise UnsupportedModel(f"{where}: a_dim*a_compress_e_rate must be divisible by 2*a_compress_rate")
            self.n_a = self.a_dim // rate
            self.e_a = self.a_dim // (2 * rate) * e_rate
            self.compress = 2 if split else 1
            if split and (self.n_a > self.n_dim or self.e_a > self.e_dim):
                raise UnsupportedModel(f"{where}: a_compress_use_split takes {self.n_a} node and {self.e_a} edge "
                                       "channels, more than there are")
        else:
            self.n_a, self.e_a, self.compress = self.n_dim, self.e_dim, 0
        self.act = Activation(node.get("activation_function", "silu"), where + ".activation_function")

        n, e, a = self.n_dim, self.e_dim, self.a_dim
        self.node_self_mlp = Layer(require(node, where, "node_self_mlp"), where + ".node_self_mlp")
        self.node_sym_linear = Layer(require(node, where, "node_sym_linear"), where + ".node_sym_linear")
        if self.node_sym_linear.num_in != self.axis * (n + e):
            raise UnsupportedModel(f"{where}.node_sym_linear: input width {self.node_sym_linear.num_in}, expected "
                                   f"axis_neuron*(n_dim+e_dim) = {self.axis * (n + e)}")
        self.node_edge_linear = SplitLinear(require(node, where, "node_edge_linear"), where + ".node_edge_linear",
                                            [n, n, e], dtype)
        if self.node_edge_linear.num_out != self.nheads * n:
            raise UnsupportedModel(f"{where}.node_edge_linear: output width {self.node_edge_linear.num_out}, "
                                   f"expected n_multi_edge_message*n_dim = {self.nheads * n}")
        self.edge_self_linear = SplitLinear(require(node, where, "edge_self_linear"), where + ".edge_self_linear",
                                            [n, n, e], dtype)
        ua = self.update_angle
        widths = [a, self.n_a, self.e_a, self.e_a]
        self.edge_angle_linear1 = SplitLinear(_node_of(node, "edge_angle_linear1", where, ua),
                                              where + ".edge_angle_linear1", widths, dtype)
        self.angle_self_linear = SplitLinear(_node_of(node, "angle_self_linear", where, ua),
                                             where + ".angle_self_linear", widths, dtype)
        lin2 = _node_of(node, "edge_angle_linear2", where, ua)
        self.edge_angle_linear2 = Layer(lin2, where + ".edge_angle_linear2") if ua else dummy_layer(dtype)
        linear_compress = ua and self.compress == 1
        cn = _node_of(node, "a_compress_n_linear", where, linear_compress)
        ce = _node_of(node, "a_compress_e_linear", where, linear_compress)
        self.a_compress_n_linear = Layer(cn, where + ".a_compress_n_linear") if linear_compress else dummy_layer(dtype)
        self.a_compress_e_linear = Layer(ce, where + ".a_compress_e_linear") if linear_compress else dummy_layer(dtype)
        for name in ("node_self_mlp", "node_sym_linear", "edge_angle_linear2", "a_compress_n_linear",
                     "a_compress_e_linear"):
            if getattr(self, name).w.dtype != dtype:
                raise UnsupportedModel(f"{where}.{name}: precision differs from the descriptor's")

        # Residual vectors r_k (res_residual): pair by position with the update terms (D11).
        v = variables(node)
        counts = {"n_residual": 2 + self.nheads, "e_residual": 2 if ua else 1, "a_residual": 1 if ua else 0}
        widths_res = {"n_residual": n, "e_residual": e, "a_residual": a}
        for key in ("n_residual", "e_residual", "a_residual"):
            arrays = v.get(key, node.get(key, [])) if self.style == 2 else []
            arrays = [] if arrays is None else list(arrays)
            if self.style == 2 and len(arrays) != counts[key]:
                raise UnsupportedModel(f"{where}.@variables.{key}: {len(arrays)} vectors, expected {counts[key]} "
                                       "for these options")
            for r in arrays:
                if np.size(r) != widths_res[key]:
                    raise UnsupportedModel(f"{where}.@variables.{key}: a vector of {np.size(r)} entries, expected "
                                           f"{widths_res[key]}")
            stacked = (np.stack([np.ravel(r) for r in arrays]) if arrays
                       else np.zeros((0, widths_res[key])))
            self.register_buffer(key, tensor(stacked, dtype))
        # The kernel's update angle_new = alpha angle + fused_res * aself, the three update_styles' combine.
        a_res = self.a_residual[0] if self.style == 2 and ua else torch.ones(a, dtype=dtype)
        self.fused_alpha = 0.5 ** 0.5 if self.style == 0 else 1.0
        self.register_buffer("fused_res", a_res * (0.5 ** 0.5) if self.style == 0 else a_res.clone())
        # The edge kernel's linear: node_edge_linear's outputs (the messages) then edge_self_linear's, so
        # that one product per edge serves both (the last layer's node-only update uses the first part).
        nel, esl = self.node_edge_linear, self.edge_self_linear
        for k in ("w0", "w1", "w2"):
            self.register_buffer("fused_" + k, torch.cat([getattr(nel, k), getattr(esl, k)], dim=1).contiguous())
        self.register_buffer("fused_b", torch.cat([nel.b, esl.b]))
        # The edge kernel's update: edge_new = alpha edge + r0 ⊙ eself + r1 ⊙ eang (the combine of the
        # update_style over the edge self update and, with update_angle, the angle one).
        updates = 2 if ua else 1
        if self.style == 2:
            self.fused_edge_alpha = 1.0
            r0 = self.e_residual[0].clone()
            r1 = self.e_residual[1].clone() if ua else torch.zeros(e, dtype=dtype)
        else:
            self.fused_edge_alpha = (1.0 / (updates + 1) ** 0.5) if self.style == 0 else 1.0
            scale = (1.0 / (updates + 1) ** 0.5) if self.style == 0 else 1.0 / updates ** 0.5
            r0 = torch.full([e], scale, dtype=dtype)
            r1 = torch.full([e], scale if ua else 0.0, dtype=dtype)
        self.register_buffer("fused_edge_r0", r0)
        self.register_buffer("fused_edge_r1", r1)

    def fused_unsupported(self) -> str:
        """Why the kernels cannot compute this layer ('' when it can). Python only (never scripted)."""
        if self.sequential:
            return "sequential_update=True"
        if self.act.kind not in (0, 1, 7, 8):
            return f"activation kind {self.act.kind} (the kernel has none, tanh, silu, silut)"
        for name in ("node_edge_linear", "edge_self_linear", "edge_angle_linear1", "angle_self_linear"):
            lin = getattr(self, name)
            if lin.activation.kind != 0 or lin.has_idt:
                return f"{name} has its own activation or timestep"
        return ""

    def combine(self, x: torch.Tensor, updates: List[torch.Tensor], residual: torch.Tensor) -> torch.Tensor:
        """update_style: res_avg (x + Σu)/√(n+1), res_incr x + Σu/√n, res_residual x + Σ r_k u_k."""
        if self.style == 2:
            for k, u in enumerate(updates):
                x = torch.addcmul(x, residual[k], u)
            return x
        if self.style == 0:
            for u in updates:
                x = x + u
            return x / (float(len(updates) + 1) ** 0.5)
        if len(updates) > 0:
            scale = 1.0 / (float(len(updates)) ** 0.5)
            for u in updates:
                x = x + scale * u
        return x

    def node_update(self, node: torch.Tensor, node_ext: torch.Tensor, edge: torch.Tensor, nei_node: torch.Tensor,
                    h2sw: torch.Tensor, sw: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:
        # h2ᵀ(g⊙sw) of edges and of neighbour nodes
        h2t = h2sw.transpose(-1, -2)
        # edge messages Σ_j φ(node_edge_linear([n_i, n_j, e_ij])) sw_ij / nnei, all heads
        msg = self.act(self.node_edge_linear.edge_form(node, node_ext, edge, flat_index))
        msg = torch.matmul(sw.unsqueeze(-2), msg).squeeze(-2) / self.e_norm
        return self.node_combine(node, torch.matmul(h2t, edge), torch.matmul(h2t, nei_node), msg)

    def node_combine(self, node: torch.Tensor, h2t_edge: torch.Tensor, h2t_node: torch.Tensor,
                     msg: torch.Tensor) -> torch.Tensor:
        """The node update from h2ᵀ(g⊙sw) of edges [nf,nloc,3,e] and neighbour nodes [nf,nloc,3,n] and the
        edge messages [nf,nloc,heads x n]."""
        nf, nloc = node.shape[0], node.shape[1]
        updates: List[torch.Tensor] = [self.act(self.node_self_mlp(node))]
        # grrg: hg = h2ᵀ(g⊙sw)/√nnei, grrg = hg[:, :axis]ᵀ hg / 3
        hg_e = h2t_edge * self.e_scale
        hg_n = h2t_node * self.e_scale
        grrg_e = torch.matmul(hg_e[..., : self.axis].transpose(-1, -2), hg_e) / 3.0
        grrg_n = torch.matmul(hg_n[..., : self.axis].transpose(-1, -2), hg_n) / 3.0
        sym_in = torch.cat([grrg_e.reshape(nf, nloc, self.axis * self.e_dim),
                            grrg_n.reshape(nf, nloc, self.axis * self.n_dim)], dim=-1)
        updates.append(self.act(self.node_sym_linear(sym_in)))
        # one term per head
        if self.nheads > 1:
            heads = msg.reshape(nf, nloc, self.nheads, self.n_dim)
            for h in range(self.nheads):
                updates.append(heads[:, :, h, :])
        else:
            updates.append(msg)
        return self.combine(node, updates, self.n_residual)

    def angle_inputs(self, node: torch.Tensor, edge: torch.Tensor,
                     a_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Compressed node and edge parts of the angle messages; edges cut to the angle list and zeroed
        outside it."""
        nang = a_mask.shape[2]
        edge = edge[:, :, :nang, :]
        if self.compress == 1:
            node_a = self.a_compress_n_linear(node)
            edge_a = self.a_compress_e_linear(edge)
        elif self.compress == 2:
            node_a = node[..., : self.n_a]
            edge_a = edge[..., : self.e_a]
        else:
            node_a = node
            edge_a = edge
        edge_a = torch.where(a_mask.unsqueeze(-1), edge_a, torch.zeros_like(edge_a))
        return node_a, edge_a

    def edge_angle_update(self, angle: torch.Tensor, node_a: torch.Tensor, edge_a: torch.Tensor,
                          fallback: torch.Tensor, a_sw: torch.Tensor, full_mask: torch.Tensor) -> torch.Tensor:
        """φ(edge_angle_linear2(m)), m_ij = Σ_k a_sw_ij a_sw_ik φ(edge_angle_linear1(...)) / √a_sel, zero
        beyond the angle list (or e_ij there when not smooth_edge_update)."""
        upd = self.act(self.edge_angle_linear1.angle_form(angle, node_a, edge_a))
        # Σ_k a_sw_ik upd_ijk as a [1, A] x [A, e_dim] product per (i, j)
        reduced = torch.matmul(a_sw.unsqueeze(2).unsqueeze(2), upd).squeeze(3)
        reduced = reduced * a_sw.unsqueeze(-1) / self.a_scale
        return self.edge_angle_finish(reduced, fallback, full_mask)

    def edge_angle_finish(self, reduced: torch.Tensor, fallback: torch.Tensor, full_mask: torch.Tensor) -> torch.Tensor:
        """m [nf, nloc, A, e_dim] padded to the edge list, then φ(edge_angle_linear2(m))."""
        nf, nloc, nnei = fallback.shape[0], fallback.shape[1], fallback.shape[2]
        nang = reduced.shape[2]
        if self.smooth:
            # beyond the angle list m is zero, so φ(edge_angle_linear2(0)) there is one constant row
            upd = self.act(self.edge_angle_linear2(reduced))
            if nnei > nang:
                zero = torch.zeros(1, 1, 1, reduced.shape[3], dtype=reduced.dtype, device=reduced.device)
                rest = self.act(self.edge_angle_linear2(zero)).expand(nf, nloc, nnei - nang, upd.shape[3])
                upd = torch.cat([upd, rest], dim=2)
            return upd
        if nnei > nang:
            reduced = torch.cat([reduced, torch.zeros(nf, nloc, nnei - nang, reduced.shape[3], dtype=reduced.dtype,
                                                      device=reduced.device)], dim=2)
        reduced = torch.where(full_mask.unsqueeze(-1), reduced, fallback)  # e_ij beyond the angle list
        return self.act(self.edge_angle_linear2(reduced))

    def fused_angle(self, angle: torch.Tensor, node_a: torch.Tensor, edge_a: torch.Tensor, a_mask: torch.Tensor,
                    a_sw: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(m [nf,nloc,A,e_dim] of edge_angle_update, combined angle) of the parallel update through the
        kernel, on packed angles [pairs, a_dim] (pack_angles): the per-(i, j) and per-(i, k) parts of both
        angle linears are small products here; the per-angle work is the op's."""
        nf, nloc, nang, a = a_mask.shape[0], a_mask.shape[1], a_mask.shape[2], angle.shape[1]
        l1, l2 = self.edge_angle_linear1, self.angle_self_linear
        pe = torch.matmul(edge_a, l1.w3) + (torch.matmul(node_a, l1.w1) + l1.b).unsqueeze(2)
        pa = torch.matmul(edge_a, l2.w3) + (torch.matmul(node_a, l2.w1) + l2.b).unsqueeze(2)
        nb = nf * nloc
        reduced, angle_new = torch.ops.deepmd_kernels.repflow_angle(
            angle, a_mask.reshape(nb, nang), a_sw.reshape(nb, nang), pe.reshape(nb, nang, self.e_dim),
            torch.matmul(edge_a, l1.w2).reshape(nb, nang, self.e_dim), l1.w0, pa.reshape(nb, nang, a),
            torch.matmul(edge_a, l2.w2).reshape(nb, nang, a), l2.w0, self.fused_res, self.fused_alpha,
            self.act.kind, self.act.threshold, self.act.slope, self.act.const, self.a_scale, self.angles_read)
        return reduced.reshape(nf, nloc, nang, self.e_dim), angle_new if self.angles_read else angle

    def fused_edges(self, node: torch.Tensor, node_ext: torch.Tensor, edge: torch.Tensor, h2sw: torch.Tensor,
                    sw: torch.Tensor, nbr: torch.Tensor, node_only: bool,
                    head: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(messages [nf,nloc,heads x n], edge self update [nf,nloc,N,e] (empty when node_only), h2ᵀ(g⊙sw)
        of edges and of neighbour nodes) through the kernel: per edge, one product of the two linears.
        With `head` (the angle update's φ(edge_angle_linear2(m)) on the angle slots, smooth_edge_update),
        the second output is the layer's new edge instead: the combine runs in the kernel."""
        nf, nloc, nnei = edge.shape[0], edge.shape[1], edge.shape[2]
        nb, n = nf * nloc, self.n_dim
        if node_only:
            w0, w1, w2, b = self.node_edge_linear.w0, self.node_edge_linear.w1, self.node_edge_linear.w2, \
                self.node_edge_linear.b
        else:
            w0, w1, w2, b = self.fused_w0, self.fused_w1, self.fused_w2, self.fused_b
        ext = node_ext.reshape(-1, n)
        edge_b, nbr_b, sw_b, h2sw_b = edge.reshape(nb, nnei, self.e_dim), nbr.reshape(nb, nnei), sw.reshape(nb, nnei), \
            h2sw.reshape(nb, nnei, 3)
        p, q = torch.matmul(ext, w1), torch.matmul(node.reshape(nb, n), w0) + b
        act = self.act
        if head is None:
            msg, eself, h2t_edge, h2t_node = torch.ops.deepmd_kernels.repflow_edge(
                edge_b, nbr_b, sw_b, h2sw_b, ext, p, q, w2, self.nheads * n, act.kind, act.threshold, act.slope,
                act.const, self.e_norm)
        else:
            r1 = self.fused_edge_r1
            tail = r1 * self.edge_angle_tail(edge) if self.update_angle else torch.zeros_like(r1)
            msg, eself, h2t_edge, h2t_node = torch.ops.deepmd_kernels.repflow_edge_update(
                edge_b, nbr_b, sw_b, h2sw_b, ext, p, q, w2, self.nheads * n, act.kind, act.threshold, act.slope,
                act.const, self.e_norm, (head * r1).reshape(nb, head.shape[2], self.e_dim), tail, self.fused_edge_r0,
                self.fused_edge_alpha)
        return (msg.reshape(nf, nloc, self.nheads * n), eself.reshape(nf, nloc, nnei, eself.shape[2]),
                h2t_edge.reshape(nf, nloc, 3, self.e_dim), h2t_node.reshape(nf, nloc, 3, n))

    def edge_angle_tail(self, edge: torch.Tensor) -> torch.Tensor:
        """φ(edge_angle_linear2(0)) [e_dim]: smooth_edge_update's angle update beyond the angle list."""
        zero = torch.zeros(1, edge.shape[3], dtype=edge.dtype, device=edge.device)
        return self.act(self.edge_angle_linear2(zero)).reshape(edge.shape[3])

    def fused_forward(self, node: torch.Tensor, node_ext: torch.Tensor, edge: torch.Tensor, angle: torch.Tensor,
                      h2sw: torch.Tensor, sw: torch.Tensor, nbr: torch.Tensor, a_mask: torch.Tensor,
                      a_sw: torch.Tensor, full_mask: torch.Tensor,
                      node_only: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The parallel update through the kernels (angles packed, pack_angles). With smooth_edge_update
        (or without update_angle) the edge kernel also forms the new edge."""
        if node_only:
            msg, _, h2t_edge, h2t_node = self.fused_edges(node, node_ext, edge, h2sw, sw, nbr, True, None)
            return self.node_combine(node, h2t_edge, h2t_node, msg), edge, angle
        nf, nloc = edge.shape[0], edge.shape[1]
        if self.update_angle:
            node_a, edge_a = self.angle_inputs(node, edge, a_mask)
            reduced, angle_new = self.fused_angle(angle, node_a, edge_a, a_mask, a_sw)
            if self.smooth:
                head = self.act(self.edge_angle_linear2(reduced))
                msg, edge_new, h2t_edge, h2t_node = self.fused_edges(node, node_ext, edge, h2sw, sw, nbr, False, head)
                return self.node_combine(node, h2t_edge, h2t_node, msg), edge_new, angle_new
            msg, eself, h2t_edge, h2t_node = self.fused_edges(node, node_ext, edge, h2sw, sw, nbr, False, None)
            eang = self.edge_angle_finish(reduced, edge, full_mask)
            node_new = self.node_combine(node, h2t_edge, h2t_node, msg)
            return node_new, self.combine(edge, [eself, eang], self.e_residual), angle_new
        no_angles = torch.zeros(nf, nloc, 0, self.e_dim, dtype=edge.dtype, device=edge.device)
        msg, edge_new, h2t_edge, h2t_node = self.fused_edges(node, node_ext, edge, h2sw, sw, nbr, False, no_angles)
        return self.node_combine(node, h2t_edge, h2t_node, msg), edge_new, angle

    def forward(self, node: torch.Tensor, node_ext: torch.Tensor, edge: torch.Tensor, angle: torch.Tensor,
                h2sw: torch.Tensor, sw: torch.Tensor, flat_index: torch.Tensor, nbr: torch.Tensor,
                a_mask: torch.Tensor, a_sw: torch.Tensor, full_mask: torch.Tensor,
                node_only: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """node [nf,nloc,n], node_ext [nf,nall,n] (ghosts filled), edge [nf,nloc,N,e], angle [nf,nloc,A,A,a]
        (fused: packed, [pairs, a], pack_angles),
        h2sw = h2⊙sw masked [nf,nloc,N,3], sw [nf,nloc,N], flat_index [nf*nloc*N] (padded slots at row 0 of
        their frame), nbr [nf,nloc,N] (the same rows, -1 at padded slots), a_mask / a_sw [nf,nloc,A],
        full_mask [nf,nloc,N] (angle mask padded with False). node_only (the last layer, whose edges and
        angles nothing reads): in parallel mode the node update reads only the layer's inputs, so the edge
        and angle updates are skipped (edge and angle are returned unchanged)."""
        if self.fused:
            return self.fused_forward(node, node_ext, edge, angle, h2sw, sw, nbr, a_mask, a_sw, full_mask, node_only)
        nf, nloc, nnei = edge.shape[0], edge.shape[1], edge.shape[2]
        nei_node = gather_neighbours(node_ext, flat_index, nf, nloc, nnei)
        if self.sequential:
            # edge self -> angle self (new edges) -> edge angle (new angles) -> node (final edges)
            eself = self.act(self.edge_self_linear.edge_form(node, node_ext, edge, flat_index))
            edge1 = torch.addcmul(edge, self.e_residual[0], eself)
            node_a, edge_a = self.angle_inputs(node, edge1, a_mask)
            aself = self.act(self.angle_self_linear.angle_form(angle, node_a, edge_a))
            angle_new = torch.addcmul(angle, self.a_residual[0], aself)
            eang = self.edge_angle_update(angle_new, node_a, edge_a, edge1, a_sw, full_mask)
            edge_new = torch.addcmul(edge1, self.e_residual[1], eang)
            node_new = self.node_update(node, node_ext, edge_new, nei_node, h2sw, sw, flat_index)
            return node_new, edge_new, angle_new
        node_new = self.node_update(node, node_ext, edge, nei_node, h2sw, sw, flat_index)
        if node_only:
            return node_new, edge, angle
        eself = self.act(self.edge_self_linear.edge_form(node, node_ext, edge, flat_index))
        if self.update_angle:
            node_a, edge_a = self.angle_inputs(node, edge, a_mask)
            eang = self.edge_angle_update(angle, node_a, edge_a, edge, a_sw, full_mask)
            edge_new = self.combine(edge, [eself, eang], self.e_residual)
            aself = self.act(self.angle_self_linear.angle_form(angle, node_a, edge_a))
            angle_new = self.combine(angle, [aself], self.a_residual)
        else:
            edge_new = self.combine(edge, [eself], self.e_residual)
            angle_new = angle
        return node_new, edge_new, angle_new
