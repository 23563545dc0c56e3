"""deepmd-kit's RepformerLayer (DPA2's message-passing layer, MATH.md P6-P9; deepmd-kit's
dpmodel/descriptor/repformers.py `RepformerLayer.call` and its attention sub-modules Atten2Map,
Atten2MultiHeadApply, Atten2EquiVarApply, LocalAtten) as TorchScript-able modules built from the
layer's own dict node (deepmd-kit rebuilds each layer from its node, so the layer's options rule).

Shapes: g1 [nf, nloc, ng1], g1_ext [nf, nall, ng1] (ghosts filled by the caller), g2 [nf, nloc, nnei, ng2],
h2 [nf, nloc, nnei, 3], nlist [nf, nloc, nnei] with padded slots set to 0, mask (real neighbour) and the
switch sw [nf, nloc, nnei] (0 at padded slots). Attention maps are kept head-major
[nf, nloc, nh, nnei(j), nnei(k)] inside; deepmd-kit's transposes around them cancel."""

from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch.jit import Final

from deepmd.dpkit.network import Activation, Layer, LayerNorm
from deepmd.dpkit.serialization import UnsupportedModel, check_version, require, variables

UPDATE_STYLES = {"res_avg": 0, "res_incr": 1, "res_residual": 2}
_KNOWN_OPTIONS = {
    "@class", "@version", "@variables", "rcut", "rcut_smth", "sel", "ntypes", "g1_dim", "g2_dim", "axis_neuron",
    "update_chnnl_2", "update_g1_has_conv", "update_g1_has_drrd", "update_g1_has_grrg", "update_g1_has_attn",
    "update_g2_has_g1g1", "update_g2_has_attn", "update_h2", "attn1_hidden", "attn1_nhead", "attn2_hidden",
    "attn2_nhead", "attn2_has_gate", "activation_function", "update_style", "update_residual",
    "update_residual_init", "smooth", "precision", "trainable_ln", "use_sqrt_nnei", "g1_out_conv", "g1_out_mlp",
    "ln_eps", "trainable", "seed", "linear1", "linear2", "proj_g1g2", "proj_g1g1g2", "attn2g_map", "attn2_mh_apply",
    "attn2_lm", "attn2_ev_apply", "loc_attn", "g1_self_mlp", "g1_residual", "g2_residual", "h2_residual",
}


def _layer(node: Dict[str, Any], key: str, where: str, dtype: torch.dtype, num_in: int, num_out: int) -> Layer:
    sub = require(node, where, key)
    if not isinstance(sub, dict):
        raise UnsupportedModel(f"{where}.{key}: expected a Layer node")
    layer = Layer(sub, f"{where}.{key}").to(dtype)
    if layer.num_in != num_in or layer.num_out != num_out:
        raise UnsupportedModel(f"{where}.{key}: weight is {layer.num_in}x{layer.num_out}, expected "
                               f"{num_in}x{num_out} for this layer's options")
    return layer


def _bias(layer: Layer) -> torch.Tensor:
    """The layer's bias, zeros where it has none (the fused kernels add one either way)."""
    return layer.b.clone() if layer.has_bias else torch.zeros(layer.num_out, dtype=layer.w.dtype)


def _plain(layer: Layer) -> bool:
    """x W + b alone: no activation, timestep or residual (what the fused attention computes)."""
    return layer.activation.kind == 0 and not layer.has_idt and layer.residual == 0


def _masked_softmax(x: torch.Tensor, key_valid: torch.Tensor, smooth: bool) -> torch.Tensor:
    """softmax over the last axis as deepmd-kit's np_softmax; without smooth, invalid keys get −inf first
    (rows without any valid key give 0 after the caller's masking; here they are kept finite)."""
    if not smooth:
        any_valid = key_valid.any(dim=-1, keepdim=True)
        x = torch.where(key_valid, x, torch.full_like(x, float("-inf")))
        x = torch.where(any_valid, x, torch.zeros_like(x))
    return torch.softmax(x, dim=-1)


class Atten2Map(torch.nn.Module):
    """Gated, smoothed multi-head neighbour-pair attention map (P8) -> [nf, nloc, nh, nnei, nnei]."""

    def __init__(self, node: Dict[str, Any], where: str, dtype: torch.dtype, ng2: int):
        super().__init__()
        check_version(node, where, 1, 1)
        self.hidden = int(require(node, where, "hidden_dim"))
        self.nhead = int(require(node, where, "head_num"))
        self.has_gate = bool(node.get("has_gate", False))
        self.smooth = bool(node.get("smooth", True))
        self.shift = float(node.get("attnw_shift", 20.0))
        mapqk = _layer(node, "mapqk", where, dtype, ng2, self.hidden * 2 * self.nhead)
        # deepmd-kit's mapqk output column d·2nh + h is query head h, channel d; d·2nh + nh + h the key's.
        # Queries and keys as two linears with head-major columns (h·nd + d): the same numbers, without
        # the interleaved [.., nd, 2nh] layout whose slicing backward zero-fills and adds full-size buffers.
        if mapqk.residual:
            raise UnsupportedModel(f"{where}.mapqk: resnet is set, which deepmd-kit's Atten2Map never writes")
        d, h = torch.arange(self.hidden).unsqueeze(0), torch.arange(self.nhead).unsqueeze(1)
        self.mapq = mapqk.columns((d * 2 * self.nhead + h).reshape(-1))
        self.mapk = mapqk.columns((d * 2 * self.nhead + self.nhead + h).reshape(-1))
        self.register_buffer("bq", _bias(self.mapq))
        self.register_buffer("bk", _bias(self.mapk))

    def forward(self, g2: torch.Tensor, h2: torch.Tensor, mask: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
        nf, nloc, nnei = g2.shape[0], g2.shape[1], g2.shape[2]
        nd, nh = self.hidden, self.nhead
        q = self.mapq(g2).view(nf, nloc, nnei, nh, nd).transpose(2, 3)
        k = self.mapk(g2).view(nf, nloc, nnei, nh, nd).transpose(2, 3)
        w = torch.matmul(q, k.transpose(-1, -2))
        hh = torch.matmul(h2, h2.transpose(-1, -2)).unsqueeze(2)  # [nf, nloc, 1, nnei, nnei]
        inv = 1.0 / float(nd) ** 0.5
        w = w * (hh * inv) if self.has_gate else w * inv
        if not self.smooth:
            key_valid = mask[:, :, None, None, :]
            w = _masked_softmax(w, key_valid.expand(w.shape), False)
            w = torch.where(key_valid & mask[:, :, None, :, None], w, torch.zeros_like(w))
            return w * (hh / 3.0 ** 0.5)
        # (w + shift)·sw_j·sw_k − shift as one multiply-add by pair-sized factors (every pass over the
        # head-sized map counts); sw is 0 at padded slots, so the final product by it zeroes their rows
        # and columns, which deepmd-kit's two masks do.
        s2 = sw[:, :, None, :, None] * sw[:, :, None, None, :]
        w = torch.softmax(torch.addcmul(self.shift * (s2 - 1.0), w, s2), dim=-1)
        return w * (s2 * (hh / 3.0 ** 0.5))


class Atten2MultiHeadApply(torch.nn.Module):
    """O_j = head_map(concat_h Σ_k A^h_jk V^h_k), V = mapv(g2) split channel-major (c·nh + h)."""

    def __init__(self, node: Dict[str, Any], where: str, dtype: torch.dtype, ng2: int, nhead: int):
        super().__init__()
        check_version(node, where, 1, 1)
        self.nhead = int(require(node, where, "head_num"))
        if self.nhead != nhead:
            raise UnsupportedModel(f"{where}: head_num {self.nhead} differs from attn2g_map's {nhead}")
        self.mapv = _layer(node, "mapv", where, dtype, ng2, ng2 * nhead)
        self.head_map = _layer(node, "head_map", where, dtype, ng2 * nhead, ng2)
        for key in ("mapv", "head_map"):
            if getattr(self, key).residual:
                raise UnsupportedModel(f"{where}.{key}: resnet is set, which deepmd-kit's Atten2MultiHeadApply "
                                       "never writes")
        # The fused kernel's head-major layout (h·ng2 + c) of the values and of head_map's input: column
        # h·ng2 + c of wv is mapv's c·nh + h, and row h·ng2 + c of wo is head_map's row c·nh + h.
        c, h = torch.arange(ng2).unsqueeze(0), torch.arange(nhead).unsqueeze(1)
        order = (c * nhead + h).reshape(-1)
        self.register_buffer("wv", self.mapv.w[:, order].contiguous())
        self.register_buffer("bv", _bias(self.mapv)[order].contiguous())
        self.register_buffer("wo", self.head_map.w[order, :].contiguous())
        self.register_buffer("bo", _bias(self.head_map))

    def fused(self, wq: torch.Tensor, bq: torch.Tensor, wk: torch.Tensor, bk: torch.Tensor, g2: torch.Tensor,
              h2: torch.Tensor, mask: torch.Tensor, sw: torch.Tensor, gate: bool, smooth: bool,
              shift: float) -> torch.Tensor:
        """head_map(concat_h Σ_k A^h_jk V^h_k) with Atten2Map's attention (its query and key linears wq, bq,
        wk, bk, head-major) formed per centre over real neighbours inside deepmd_kernels::repformer_attention
        (deepmd/kernels): no queries, keys, values or maps of the padded slots exist."""
        nf, nloc, nnei, ng2 = g2.shape[0], g2.shape[1], g2.shape[2], g2.shape[3]
        nb = nf * nloc
        out = torch.ops.deepmd_kernels.repformer_attention(
            g2.reshape(nb, nnei, ng2), h2.reshape(nb, nnei, 3), sw.reshape(nb, nnei), mask.reshape(nb, nnei), wq, bq,
            wk, bk, self.wv, self.bv, self.wo, self.bo, self.nhead, gate, smooth, shift)
        return out.reshape(nf, nloc, nnei, ng2)

    def forward(self, aa: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        nf, nloc, nnei, ng2 = g2.shape[0], g2.shape[1], g2.shape[2], g2.shape[3]
        nh = self.nhead
        v = self.mapv(g2).reshape(nf, nloc, nnei, ng2, nh).permute(0, 1, 4, 2, 3)
        out = torch.matmul(aa, v)  # [nf, nloc, nh, nnei, ng2]
        out = out.permute(0, 1, 3, 4, 2).reshape(nf, nloc, nnei, ng2 * nh)
        return self.head_map(out)


class Atten2EquiVarApply(torch.nn.Module):
    """h2_j' = Σ_h w_h Σ_k A^h_jk h2_k (equivariant pair update, update_h2)."""

    def __init__(self, node: Dict[str, Any], where: str, dtype: torch.dtype, nhead: int):
        super().__init__()
        check_version(node, where, 1, 1)
        self.nhead = int(require(node, where, "head_num"))
        if self.nhead != nhead:
            raise UnsupportedModel(f"{where}: head_num {self.nhead} differs from attn2g_map's {nhead}")
        self.head_map = _layer(node, "head_map", where, dtype, nhead, 1)

    def forward(self, aa: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(aa, h2.unsqueeze(2))  # [nf, nloc, nh, nnei, 3]
        return self.head_map(out.permute(0, 1, 3, 4, 2)).squeeze(-1)


class LocalAtten(torch.nn.Module):
    """Single-query attention of g1_i over its neighbours' g1 (update_g1_has_attn); the heads are
    concatenated head-major (h·ng1 + c) before head_map."""

    def __init__(self, node: Dict[str, Any], where: str, dtype: torch.dtype, ng1: int):
        super().__init__()
        check_version(node, where, 1, 1)
        self.hidden = int(require(node, where, "hidden_dim"))
        self.nhead = int(require(node, where, "head_num"))
        self.smooth = bool(node.get("smooth", True))
        self.shift = float(node.get("attnw_shift", 20.0))
        if int(node.get("input_dim", ng1)) != ng1:
            raise UnsupportedModel(f"{where}: input_dim {node.get('input_dim')} differs from g1_dim {ng1}")
        self.ng1 = ng1
        self.mapq = _layer(node, "mapq", where, dtype, ng1, self.hidden * self.nhead)
        self.mapkv = _layer(node, "mapkv", where, dtype, ng1, (self.hidden + ng1) * self.nhead)
        self.head_map = _layer(node, "head_map", where, dtype, ng1 * self.nhead, ng1)

    def forward(self, g1: torch.Tensor, gg1: torch.Tensor, mask: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
        nf, nloc, nnei = gg1.shape[0], gg1.shape[1], gg1.shape[2]
        nd, nh, ni = self.hidden, self.nhead, self.ng1
        q = self.mapq(g1).reshape(nf, nloc, nd, nh).transpose(-1, -2)  # [nf, nloc, nh, nd]
        kv = self.mapkv(gg1).reshape(nf, nloc, nnei, nd + ni, nh).permute(0, 1, 4, 2, 3)
        k, v = kv[..., :nd], kv[..., nd:]
        w = torch.matmul(q.unsqueeze(-2), k.transpose(-1, -2)).squeeze(-2) / float(nd) ** 0.5  # [nf,nloc,nh,nnei]
        swk = sw.unsqueeze(-2)
        if self.smooth:
            w = (w + self.shift) * swk - self.shift
        key_valid = mask.unsqueeze(-2)
        w = _masked_softmax(w, key_valid.expand(w.shape), self.smooth)
        w = torch.where(key_valid, w, torch.zeros_like(w))
        if self.smooth:
            w = w * swk
        out = torch.matmul(w.unsqueeze(-2), v).squeeze(-2)  # [nf, nloc, nh, ng1]
        return self.head_map(out.reshape(nf, nloc, nh * ni))


def _residuals(v: Dict[str, Any], node: Dict[str, Any], key: str, where: str, dim: int,
               dtype: torch.dtype) -> torch.Tensor:
    raw = v.get(key, node.get(key, [])) or []
    rows: List[np.ndarray] = []
    for i, r in enumerate(raw):
        if isinstance(r, str):
            raise UnsupportedModel(f"{where}.{key}[{i}]: stored as {r!r} outside @variables; re-export the model "
                                   "with a current deepmd-kit (`dp convert-backend`)")
        arr = np.ravel(np.asarray(r, dtype=np.float64))
        if arr.size != dim:
            raise UnsupportedModel(f"{where}.{key}[{i}]: {arr.size} entries, expected {dim}")
        rows.append(arr)
    if not rows:
        return torch.zeros(0, dim, dtype=dtype)
    return torch.from_numpy(np.stack(rows)).to(dtype)


class RepformerLayer(torch.nn.Module):
    """One repformer layer (P6-P9): returns (g1', g2', h2'); g2 and h2 only change when update_chnnl_2."""

    # The g2 attention through deepmd_kernels::repformer_attention, the g1 convolution and drrd moments
    # through deepmd_kernels::neighbor_sums (build.set_layer_formulation sets them; Final: one branch is
    # compiled, so a reference graph does not mention the ops).
    fused_attention: Final[bool]
    fused_sums: Final[bool]
    # The gathered neighbour rows g1_ext[nlist] [nf, nloc, nnei, ng1]: needed unless fused_sums computes
    # everything that reads them (g1g1 and the local attention read them too).
    gather_gg1: Final[bool]
    # False for the last layer (DescrptDPA2 sets it): nothing reads its g2 and h2, so they are not updated.
    g2_read: Final[bool]

    def __init__(self, node: Dict[str, Any], where: str, dtype: torch.dtype, defaults: Dict[str, Any]):
        super().__init__()
        check_version(node, where, 1, 2)
        if node.get("@class", "RepformerLayer") != "RepformerLayer":
            raise UnsupportedModel(f"{where}: @class {node.get('@class')!r} is not RepformerLayer")
        unknown = sorted(set(node) - _KNOWN_OPTIONS)
        if unknown:
            raise UnsupportedModel(f"{where}: keys {unknown} are not ones deepmd-kit's RepformerLayer (@version ≤ 2) "
                                   "writes")

        def opt(key: str) -> Any:
            return node[key] if key in node else defaults[key]

        self.ng1 = int(opt("g1_dim"))
        self.ng2 = int(opt("g2_dim"))
        self.axis = int(opt("axis_neuron"))
        self.nnei = int(sum(opt("sel"))) if isinstance(opt("sel"), list) else int(opt("sel"))
        self.update_chnnl_2 = bool(node.get("update_chnnl_2", True))
        self.has_conv = bool(opt("update_g1_has_conv"))
        self.has_drrd = bool(opt("update_g1_has_drrd"))
        self.has_grrg = bool(opt("update_g1_has_grrg"))
        self.has_attn1 = bool(opt("update_g1_has_attn"))
        self.has_g1g1 = bool(opt("update_g2_has_g1g1")) and self.update_chnnl_2
        self.has_attn2 = bool(opt("update_g2_has_attn")) and self.update_chnnl_2
        self.has_h2 = bool(opt("update_h2")) and self.update_chnnl_2
        self.smooth = bool(opt("smooth"))
        self.use_sqrt_nnei = bool(opt("use_sqrt_nnei"))
        self.g1_out_conv = bool(opt("g1_out_conv"))
        self.g1_out_mlp = bool(opt("g1_out_mlp"))
        self.epsilon = 1e-4
        self.where = where
        self.fused_attention = False
        self.fused_sums = False
        self.g2_read = True
        style = opt("update_style")
        if style not in UPDATE_STYLES:
            raise UnsupportedModel(f"{where}: update_style {style!r} is not one deepmd-kit defines "
                                   f"({', '.join(UPDATE_STYLES)})")
        self.style = UPDATE_STYLES[style]
        self.act = Activation(opt("activation_function"), where + ".activation_function")
        self.cal_gg1 = self.has_drrd or self.has_conv or self.has_attn1 or self.has_g1g1
        self.gather_gg1 = self.cal_gg1
        ng1, ng2, ax = self.ng1, self.ng2, self.axis

        in1 = (0 if self.g1_out_mlp else ng1) + (ng2 * ax if self.has_grrg else 0) + (
            ng1 * ax if self.has_drrd else 0) + (ng2 if self.has_conv and not self.g1_out_conv else 0)
        self.linear1 = _layer(node, "linear1", where, dtype, in1, ng1)
        self.linear2 = _layer(node, "linear2", where, dtype, ng2, ng2) if self.update_chnnl_2 else None
        self.g1_self_mlp = _layer(node, "g1_self_mlp", where, dtype, ng1, ng1) if self.g1_out_mlp else None
        self.proj_g1g2 = None
        if self.has_conv:
            self.proj_g1g2 = (_layer(node, "proj_g1g2", where, dtype, ng2, ng1) if self.g1_out_conv
                              else _layer(node, "proj_g1g2", where, dtype, ng1, ng2))
        self.proj_g1g1g2 = _layer(node, "proj_g1g1g2", where, dtype, ng1, ng2) if self.has_g1g1 else None
        # With g1_out_conv the fused sums project g2 themselves (proj_g1g2 is x W [+ b]: deepmd-kit's is)
        empty = torch.zeros(0, dtype=dtype)
        plain_proj = self.proj_g1g2 is not None and self.g1_out_conv and _plain(self.proj_g1g2)
        self.register_buffer("proj_w", self.proj_g1g2.w if plain_proj else empty)
        self.register_buffer("proj_b", _bias(self.proj_g1g2) if plain_proj else empty)
        self.attn2g_map = None
        self.attn2_mh_apply = None
        self.attn2_lm = None
        self.attn2_ev_apply = None
        if self.has_attn2 or self.has_h2:
            self.attn2g_map = Atten2Map(require(node, where, "attn2g_map"), where + ".attn2g_map", dtype, ng2)
            nh = self.attn2g_map.nhead
            if self.has_attn2:
                self.attn2_mh_apply = Atten2MultiHeadApply(require(node, where, "attn2_mh_apply"),
                                                           where + ".attn2_mh_apply", dtype, ng2, nh)
                self.attn2_lm = LayerNorm(require(node, where, "attn2_lm"), where + ".attn2_lm").to(dtype)
                if self.attn2_lm.num_in != ng2:
                    raise UnsupportedModel(f"{where}.attn2_lm: width {self.attn2_lm.num_in}, expected {ng2}")
            if self.has_h2:
                self.attn2_ev_apply = Atten2EquiVarApply(require(node, where, "attn2_ev_apply"),
                                                         where + ".attn2_ev_apply", dtype, nh)
        self.loc_attn = (LocalAtten(require(node, where, "loc_attn"), where + ".loc_attn", dtype, ng1)
                         if self.has_attn1 else None)

        # Residual vectors (res_residual): stored in construction order, applied by position to the
        # update lists (P9): residual k multiplies update term k+1.
        v = variables(node)
        self.register_buffer("g1_residual", _residuals(v, node, "g1_residual", where, ng1, dtype))
        self.register_buffer("g2_residual", _residuals(v, node, "g2_residual", where, ng2, dtype))
        self.register_buffer("h2_residual", _residuals(v, node, "h2_residual", where, 1, dtype))
        n_g1 = 1 + int(self.g1_out_mlp) + int(self.has_conv and self.g1_out_conv) + int(self.has_attn1)
        n_g2 = (1 + int(self.has_g1g1) + int(self.has_attn2)) if self.update_chnnl_2 else 0
        n_h2 = int(self.has_h2)
        if self.style == 2:
            for name, have, most in (("g1_residual", self.g1_residual.shape[0], n_g1),
                                     ("g2_residual", self.g2_residual.shape[0], n_g2),
                                     ("h2_residual", self.h2_residual.shape[0], n_h2)):
                if have > most:
                    raise UnsupportedModel(f"{where}: {have} {name} vectors for {most} update terms "
                                           "(deepmd-kit cannot evaluate this layer either)")

    def set_fused(self, fused: bool) -> str:
        """Selects (before scripting) the kernels for what this layer's options let them compute; returns
        build.set_layer_formulation's entry: "fused", "fused; <what stays on the reference and why>", or
        "reference[: why]"."""
        amap, apply = self.attn2g_map, self.attn2_mh_apply
        attention = amap is not None and apply is not None and self.attn2_ev_apply is None
        plain = attention and all(_plain(x) for x in (amap.mapq, amap.mapk, apply.mapv, apply.head_map))
        sums = self.has_conv or self.has_drrd
        self.fused_attention = fused and attention and plain
        self.fused_sums = fused and sums
        self.gather_gg1 = self.cal_gg1 and not (self.fused_sums and not self.has_g1g1 and not self.has_attn1)
        if not fused:
            return "reference"
        if not attention and not sums:
            return "reference: nothing the kernels compute (no g2 attention, conv or drrd)"
        if self.attn2_ev_apply is not None:
            return "fused; the g2 attention on the reference: update_h2 reads the attention map itself"
        if attention and not plain:
            return "fused; the g2 attention on the reference: its linears have an activation or timestep"
        return "fused"

    def _combine(self, updates: List[torch.Tensor], residual: torch.Tensor) -> torch.Tensor:
        u = updates[0]
        n = len(updates)
        if self.style == 0:
            for i in range(1, n):
                u = u + updates[i]
            return u / float(n) ** 0.5
        if self.style == 1:
            scale = 1.0 / float(n - 1) ** 0.5 if n > 1 else 0.0
            for i in range(1, n):
                u = u + scale * updates[i]
            return u
        for i in range(residual.shape[0]):
            u = u + residual[i] * updates[i + 1]
        return u

    def _hg_norm(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The normalisation of hᵀ g: 1/√nnei or 1/nnei when smooth, else per atom over its real neighbours
        [nf, nloc, 1, 1]."""
        nnei = mask.shape[2]
        if self.smooth:
            inv = 1.0 / float(nnei) ** 0.5 if self.use_sqrt_nnei else 1.0 / float(nnei)
            return torch.full([1, 1, 1, 1], inv, dtype=dtype, device=mask.device)
        n = mask.to(dtype).sum(-1)
        return (1.0 / (self.epsilon + (torch.sqrt(n) if self.use_sqrt_nnei else n)))[:, :, None, None]

    def _hg(self, g: torch.Tensor, h: torch.Tensor, mask: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
        """hᵀ g / norm [nf, nloc, 3, ng] with g masked (and switched when smooth)."""
        g = torch.where(mask.unsqueeze(-1), g, torch.zeros_like(g))
        if self.smooth:
            g = g * sw.unsqueeze(-1)
        return torch.matmul(h.transpose(-1, -2), g) * self._hg_norm(mask, g.dtype)

    def _grrg_of(self, hg: torch.Tensor) -> torch.Tensor:
        nf, nloc, ng = hg.shape[0], hg.shape[1], hg.shape[3]
        out = torch.matmul(hg[..., : self.axis].transpose(-1, -2), hg) / 3.0
        return out.reshape(nf, nloc, self.axis * ng)

    def _grrg(self, g: torch.Tensor, h: torch.Tensor, mask: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
        return self._grrg_of(self._hg(g, h, mask, sw))

    def _conv_norm(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The convolution's normalisation [nf, nloc, 1]: 1/nnei when smooth, else per atom."""
        if self.smooth:
            return torch.full([1, 1, 1], 1.0 / float(mask.shape[2]), dtype=dtype, device=mask.device)
        return (1.0 / (self.epsilon + mask.to(dtype).sum(-1))).unsqueeze(-1)

    def _fused_sums(self, g1_ext: torch.Tensor, g2: torch.Tensor, h2: torch.Tensor, nlist: torch.Tensor,
                    mask: torch.Tensor, sw: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(conv [nf, nloc, ng1 or ng2] normalised, or empty; drrd's hᵀ g1 [nf, nloc, 3, ng1] normalised, or
        empty) through deepmd_kernels::neighbor_sums: each neighbour's row of g1_ext (or of proj_g1g2 of it)
        read in place, weighted by the switch (smooth) or 1 at real slots."""
        nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
        nall, ng1, nb = g1_ext.shape[1], g1_ext.shape[2], nf * nloc
        frame = (torch.arange(nf, dtype=nlist.dtype, device=nlist.device) * nall).view(nf, 1, 1)
        nbr = torch.where(mask, nlist + frame, torch.full_like(nlist, -1)).reshape(nb, nnei)
        weight = (sw if self.smooth else mask.to(g2.dtype)).reshape(nb, nnei)
        h = h2.reshape(nb, nnei, 3)
        rows = g1_ext.reshape(nf * nall, ng1)
        none = torch.zeros(0, dtype=g2.dtype, device=g2.device)
        conv, hg = none, none
        proj_g1g2 = self.proj_g1g2
        if proj_g1g2 is not None:
            if self.g1_out_conv:  # Σ_j w_j proj(g2_j) ⊙ g1_nbr: its moments are drrd's (the same rows)
                if self.proj_w.numel() > 0:  # the kernel projects the real slots' g2 rows itself
                    a, wa, ba = g2.reshape(nb, nnei, g2.shape[3]), self.proj_w, self.proj_b
                else:
                    a, wa, ba = proj_g1g2(g2).reshape(nb, nnei, ng1), none, none
                c, hg = torch.ops.deepmd_kernels.neighbor_sums(a, wa, ba, rows, nbr, weight, h)
            else:  # Σ_j w_j g2_j ⊙ proj(g1)_nbr: proj of a gathered row is the gathered row of proj
                p = proj_g1g2(g1_ext)
                c, _ = torch.ops.deepmd_kernels.neighbor_sums(g2.reshape(nb, nnei, g2.shape[3]), none, none,
                                                              p.reshape(nf * nall, p.shape[2]), nbr, weight, h)
            # explicit widths in these reshapes: a rank's subdomain may hold no atom (nloc = 0)
            conv = c.reshape(nf, nloc, c.shape[1]) * self._conv_norm(mask, c.dtype)
        if self.has_drrd:
            if hg.numel() == 0:
                _, hg = torch.ops.deepmd_kernels.neighbor_sums(none, none, none, rows, nbr, weight, h)
            hg = hg.reshape(nf, nloc, 3, ng1) * self._hg_norm(mask, hg.dtype)
        return conv, hg

    def forward(self, g1: torch.Tensor, g1_ext: torch.Tensor, g2: torch.Tensor, h2: torch.Tensor,
                nlist: torch.Tensor, mask: torch.Tensor, sw: torch.Tensor):
        nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
        g1_update: List[torch.Tensor] = [g1]
        g1_mlp: List[torch.Tensor] = []
        if not self.g1_out_mlp:
            g1_mlp.append(g1)
        g1_self_mlp = self.g1_self_mlp
        if g1_self_mlp is not None:
            g1_update.append(self.act(g1_self_mlp(g1)))
        gg1 = torch.zeros(0, dtype=g1.dtype, device=g1.device)
        if self.gather_gg1:
            ng1 = g1_ext.shape[2]
            gg1 = torch.gather(g1_ext, 1, nlist.reshape(nf, nloc * nnei, 1).expand(-1, -1, ng1)).reshape(
                nf, nloc, nnei, ng1)
        mask4 = mask.unsqueeze(-1)
        sw4 = sw.unsqueeze(-1)

        g2_new, h2_new = g2, h2
        linear2 = self.linear2
        if linear2 is not None and self.g2_read:
            g2_update: List[torch.Tensor] = [g2, self.act(linear2(g2))]
            h2_update: List[torch.Tensor] = [h2]
            proj_g1g1g2 = self.proj_g1g1g2
            if proj_g1g1g2 is not None:
                t = g1.unsqueeze(-2) * gg1
                t = torch.where(mask4, t, torch.zeros_like(t))
                if self.smooth:
                    t = t * sw4
                g2_update.append(proj_g1g1g2(t))
            attn2g_map = self.attn2g_map
            attn2_mh_apply = self.attn2_mh_apply
            attn2_lm = self.attn2_lm
            if self.fused_attention and attn2g_map is not None and attn2_mh_apply is not None and attn2_lm is not None:
                g2_update.append(attn2_lm(attn2_mh_apply.fused(
                    attn2g_map.mapq.w, attn2g_map.bq, attn2g_map.mapk.w, attn2g_map.bk, g2, h2, mask, sw,
                    attn2g_map.has_gate, attn2g_map.smooth, attn2g_map.shift)))
            elif attn2g_map is not None:
                aa = attn2g_map(g2, h2, mask, sw)
                if attn2_mh_apply is not None and attn2_lm is not None:
                    g2_update.append(attn2_lm(attn2_mh_apply(aa, g2)))
                attn2_ev_apply = self.attn2_ev_apply
                if attn2_ev_apply is not None:
                    h2_update.append(attn2_ev_apply(aa, h2))
            g2_new = self._combine(g2_update, self.g2_residual)
            h2_new = self._combine(h2_update, self.h2_residual)

        proj_g1g2 = self.proj_g1g2
        drrd_hg = torch.zeros(0, dtype=g1.dtype, device=g1.device)
        if self.fused_sums:
            conv, drrd_hg = self._fused_sums(g1_ext, g2, h2, nlist, mask, sw)
            if proj_g1g2 is not None:
                if self.g1_out_conv:
                    g1_update.append(conv)
                else:
                    g1_mlp.append(conv)
        elif proj_g1g2 is not None:
            if self.g1_out_conv:
                gg = gg1
            else:
                gg = proj_g1g2(gg1)
            gg = torch.where(mask4, gg, torch.zeros_like(gg))
            if self.smooth:
                gg = gg * sw4
                inv = (1.0 / float(nnei)) * torch.ones(nf, nloc, 1, dtype=gg.dtype, device=gg.device)
            else:
                inv = (1.0 / (self.epsilon + mask.to(gg.dtype).sum(-1))).unsqueeze(-1)
            if self.g1_out_conv:
                conv = (proj_g1g2(g2) * gg).sum(2) * inv
                g1_update.append(conv)
            else:
                conv = (g2 * gg).sum(2) * inv
                g1_mlp.append(conv)
        if self.has_grrg:
            g1_mlp.append(self._grrg(g2, h2, mask, sw))
        if self.has_drrd:
            g1_mlp.append(self._grrg_of(drrd_hg) if self.fused_sums else self._grrg(gg1, h2, mask, sw))
        g1_update.append(self.act(self.linear1(torch.cat(g1_mlp, dim=-1))))
        loc_attn = self.loc_attn
        if loc_attn is not None:
            g1_update.append(loc_attn(g1, gg1, mask, sw))
        g1_new = self._combine(g1_update, self.g1_residual)
        return g1_new, g2_new, h2_new
