"""deepmd-kit's se_atten / DPA1 descriptor (`Descriptor` types `dpa1`, `se_atten`, and `se_atten_v2` = strip +
smooth, @version 1-4 except the compressed @version 3; MATH.md P2, T1-T4; deepmd-kit's
dpmodel/descriptor/dpa1.py DescrptBlockSeAtten.call, the dense path its models evaluate) as a TorchScript-able
module. One mixed, distance-sorted list of sel entries; no message passing (the attention runs over one centre's
neighbours, nothing is read from neighbours' embeddings).

Per centre i and slot j of the list (after the descriptor's own exclude_types set excluded pairs to −1):
  R_j   = (env_j − davg[t_i, j]) / dstd[t_i, j], rows of excluded pairs zeroed; padded slots keep −davg/dstd
  G_j   = Emb([s_j, T(t_j) (, T(t_i))]) (concat)   or   Emb_s(s_j) · (1 + Emb_t(T pair) [· sw_j]) (strip),
          s = R[..., 0]; padded/excluded slots read the type (embedding) of extended atom 0, as deepmd-kit
  G     = LN(G + GatedAttention(G)) per attention layer (T1-T2)
  gr    = Σ_j G_jᵀ B_j / nnei,  B = R (lmax 1) or the Cartesian moment basis up to lmax (@version 4)
  D     = gr · (gr[:axis] · degree weights)ᵀ, flattened a·axis + b; then [D, T(t_i)] if concat_output_tebd."""

import math
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from deepmd.dpkit import env
from deepmd.dpkit.descriptor import Descriptor
from deepmd.dpkit.network import Layer, LayerNorm, Network, NetworkCollection, precision_dtype, tensor, \
    type_embedding_table
from deepmd.dpkit.serialization import UnsupportedModel, check_version, refuse_unless, require, variables

_KNOWN_OPTIONS = {
    "@class", "type", "@version", "@variables", "rcut", "rcut_smth", "sel", "ntypes", "neuron", "axis_neuron",
    "tebd_dim", "tebd_input_mode", "set_davg_zero", "attn", "attn_layer", "attn_dotr", "attn_mask",
    "activation_function", "resnet_dt", "scaling_factor", "normalize", "temperature", "trainable_ln", "ln_eps",
    "smooth_type_embedding", "type_one_side", "concat_output_tebd", "use_econf_tebd", "use_tebd_bias", "type_map",
    "precision", "embeddings", "embeddings_strip", "attention_layers", "env_mat", "type_embedding", "exclude_types",
    "env_protection", "trainable", "spin", "lmax", "stripped_type_embedding", "seed",
}

# Constant shift of the smooth attention logits (deepmd-kit's attnw_shift).
_ATTNW_SHIFT = 20.0


class GatedAttention(torch.nn.Module):
    """deepmd-kit's GatedAttentionLayer with one head (T2). x [n, nnei, ng], mask/sw [n, nnei], r̂ [n, nnei, 3]."""

    def __init__(self, node: Dict[str, Any], nnei: int, where: str):
        super().__init__()
        heads = int(node.get("num_heads", 1))
        if heads != 1:
            raise UnsupportedModel(f"{where}: num_heads={heads}; deepmd-kit's se_atten builds one head only (its "
                                   "q/k/v split reads the first head's width), so this file is not one it writes")
        self.nnei = int(node.get("nnei", nnei))
        if self.nnei != nnei:
            raise UnsupportedModel(f"{where}: nnei {self.nnei} differs from the descriptor's sel {nnei}")
        self.hidden = int(require(node, where, "hidden_dim"))
        self.in_proj = Layer(require(node, where, "in_proj"), where + ".in_proj")
        self.out_proj = Layer(require(node, where, "out_proj"), where + ".out_proj")
        if self.in_proj.num_out != 3 * self.hidden or self.out_proj.num_in != self.hidden:
            raise UnsupportedModel(f"{where}: in_proj/out_proj widths {self.in_proj.num_out}/{self.out_proj.num_in} do "
                                   f"not fit hidden_dim {self.hidden}")
        temperature = node.get("temperature")
        factor = float(node.get("scaling_factor", 1.0))
        self.scaling = float((self.hidden * factor) ** -0.5 if temperature is None else temperature)
        self.normalize = bool(node.get("normalize", True))
        self.smooth = bool(node.get("smooth", True))
        self.dotr = bool(node.get("dotr", False))
        self.shift = _ATTNW_SHIFT
        self.floor = float(torch.finfo(self.in_proj.w.dtype).min)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, input_r: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
        h = self.hidden
        qkv = self.in_proj(x)
        q, k, v = qkv[..., :h], qkv[..., h:2 * h], qkv[..., 2 * h:3 * h]
        if self.normalize:
            q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
            k = k / torch.linalg.vector_norm(k, dim=-1, keepdim=True)
            v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        q = q * self.scaling
        w = torch.matmul(q, k.transpose(1, 2))  # [n, query j, key k]
        sw_q, sw_k = sw.unsqueeze(2), sw.unsqueeze(1)
        if self.smooth:
            w = (w + self.shift) * sw_q * sw_k - self.shift
        else:
            # deepmd-kit masks keys with −inf; a finite floor gives the same weights (exp underflows to 0
            # exactly) and no NaN in rows without any key (those rows are zeroed below anyway).
            w = torch.where(mask.unsqueeze(1), w, torch.full_like(w, self.floor))
        w = w - torch.max(w, dim=-1, keepdim=True)[0]
        w = torch.exp(w)
        w = w / w.sum(dim=-1, keepdim=True)
        w = torch.where(mask.unsqueeze(2), w, torch.zeros_like(w))
        if self.smooth:
            w = w * sw_q * sw_k
        if self.dotr:
            w = w * torch.matmul(input_r, input_r.transpose(1, 2))
        return self.out_proj(torch.matmul(w, v))


class AttentionLayer(torch.nn.Module):
    """NeighborGatedAttentionLayer (T1): x' = LN(x + GatedAttention(x))."""

    def __init__(self, node: Dict[str, Any], nnei: int, where: str):
        super().__init__()
        self.attention = GatedAttention(require(node, where, "attention_layer"), nnei, where + ".attention_layer")
        ln = dict(require(node, where, "attn_layer_norm"))
        if ln.get("eps") is None:
            ln["eps"] = 1e-5  # deepmd-kit: ln_eps None means 1e-5
        self.norm = LayerNorm(ln, where + ".attn_layer_norm")

    def forward(self, x: torch.Tensor, mask: torch.Tensor, input_r: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.attention(x, mask, input_r, sw))


class DescrptDPA1(Descriptor):
    def __init__(self, node: Dict[str, Any], ntypes: int, where: str = "model.descriptor"):
        super().__init__()
        kind = node.get("type", "dpa1")
        if kind not in ("dpa1", "se_atten", "se_atten_v2"):
            raise UnsupportedModel(f"{where}: descriptor type {kind!r} is not se_atten/dpa1")
        if "compress" in node or node.get("@version", 1) == 3:
            raise UnsupportedModel(f"{where}: this {kind} descriptor is compressed (@version 3, tabulated type "
                                   "embedding/geometric nets); compressed models are not supported: export the "
                                   "uncompressed model (the one before `dp compress`)")
        version = check_version(node, where, 1, 4)
        self.type_name = str(kind)
        unknown = sorted(set(node) - _KNOWN_OPTIONS)
        if unknown:
            raise UnsupportedModel(f"{where}: keys {unknown} are not ones deepmd-kit's {kind} (@version ≤ 4) writes")
        refuse_unless(node, where, "spin", lambda v: v is None, None,
                      "the old descriptor-level spin is not implemented by deepmd-kit; use a spin_ener model")
        refuse_unless(node, where, "attn_mask", lambda v: not v, False,
                      "deepmd-kit does not implement attn_mask=True (NotImplementedError)")
        self.dtype = precision_dtype(node.get("precision", "float64"), where + ".precision")
        self.rcut = float(require(node, where, "rcut"))
        self.rcut_smth = float(require(node, where, "rcut_smth"))
        sel = require(node, where, "sel")
        sel = [int(sel)] if isinstance(sel, (int, np.integer)) else [int(s) for s in sel]
        self.nnei = sum(sel)
        self.sel = [self.nnei]
        self.mixed_types = True
        self.nlayers = 0
        self.has_message_passing = False
        self.ntypes = int(node.get("ntypes", ntypes))
        if self.ntypes != ntypes:
            raise UnsupportedModel(f"{where}: ntypes {self.ntypes} differs from the model's type_map ({ntypes} types)")
        self.protection = float(node.get("env_protection", 0.0) or 0.0)
        self.axis_neuron = int(node.get("axis_neuron", 8))
        self.tebd_dim = int(node.get("tebd_dim", 8))
        self.type_one_side = bool(node.get("type_one_side", False))
        self.concat_output_tebd = bool(node.get("concat_output_tebd", True))
        if kind == "se_atten_v2":
            mode, self.smooth = "strip", True
        else:
            mode = node.get("tebd_input_mode", "concat")
            if node.get("stripped_type_embedding") is not None:  # deprecated alias, takes precedence
                mode = "strip" if node["stripped_type_embedding"] else "concat"
            self.smooth = bool(node.get("smooth_type_embedding", True))
        if mode not in ("concat", "strip"):
            raise UnsupportedModel(f"{where}: tebd_input_mode {mode!r} is not one deepmd-kit has (concat, strip)")
        self.strip = mode == "strip"
        self.lmax = int(node.get("lmax", 1))
        if self.lmax not in (1, 2, 3, 4):
            raise UnsupportedModel(f"{where}: lmax {self.lmax} is not 1..4")
        if version < 4 and self.lmax != 1:
            raise UnsupportedModel(f"{where}: lmax {self.lmax} needs @version 4 (deepmd-kit writes 4 iff lmax≠1)")

        # Type embedding table [ntypes + 1, tebd_dim], zero padding row (N7).
        table = type_embedding_table(require(node, where, "type_embedding"), where + ".type_embedding")
        if table.shape[0] != self.ntypes + 1 or table.shape[1] != self.tebd_dim:
            raise UnsupportedModel(f"{where}.type_embedding: table {list(table.shape)}, expected "
                                   f"[{self.ntypes + 1}, {self.tebd_dim}]")
        self.register_buffer("tebd", table.to(self.dtype))

        tebd_in = self.tebd_dim if self.type_one_side else 2 * self.tebd_dim
        self.embedding = self._one_net(require(node, where, "embeddings"), where + ".embeddings",
                                       tebd_in + 1 if not self.strip else 1)
        self.ng = self.embedding.dim_out
        if self.strip:
            self.embedding_strip = self._one_net(require(node, where, "embeddings_strip"), where + ".embeddings_strip",
                                                 tebd_in)
            if self.embedding_strip.dim_out != self.ng:
                raise UnsupportedModel(f"{where}.embeddings_strip: output width {self.embedding_strip.dim_out} differs "
                                       f"from the embedding's {self.ng}")
        else:
            self.embedding_strip = Network({"layers": []}, where + ".embeddings_strip")
        if not 0 < self.axis_neuron <= self.ng:
            raise UnsupportedModel(f"{where}: axis_neuron {self.axis_neuron} must be in 1..{self.ng}")

        att = require(node, where, "attention_layers")
        check_version(att, where + ".attention_layers", 1, 1)
        layers = require(att, where + ".attention_layers", "attention_layers")
        if len(layers) != int(node.get("attn_layer", len(layers))):
            raise UnsupportedModel(f"{where}: attn_layer {node.get('attn_layer')} but {len(layers)} attention layers")
        self.attention = torch.nn.ModuleList([AttentionLayer(l, self.nnei, f"{where}.attention_layers[{i}]")
                                              for i, l in enumerate(layers)])
        for i, layer in enumerate(self.attention):
            if layer.attention.in_proj.num_in != self.ng or layer.norm.num_in != self.ng:
                raise UnsupportedModel(f"{where}.attention_layers[{i}]: width differs from the embedding's {self.ng}")

        exclude = [[int(a), int(b)] for a, b in node.get("exclude_types", []) or []]
        for t in [t for p in exclude for t in p]:
            if not 0 <= t < self.ntypes:
                raise UnsupportedModel(f"{where}: exclude_types names type {t}, not one of {self.ntypes} types")
        self.has_exclude = len(exclude) > 0
        self.register_buffer("pair_table", env.pair_allowed_table(self.ntypes, exclude))

        v = variables(node)
        shape = [self.ntypes, self.nnei, 4]
        for name in ("davg", "dstd"):
            if list(np.shape(require(v, where + ".@variables", name))) != shape:
                raise UnsupportedModel(f"{where}.@variables.{name}: shape {list(np.shape(v[name]))}, expected {shape}")
        self.register_buffer("davg", tensor(v["davg"], self.dtype))
        self.register_buffer("dstd", tensor(v["dstd"], self.dtype))
        if self.lmax > 1:
            gain = require(v, where + ".@variables", "degree_gain_raw")
            if np.size(gain) != self.lmax - 1:
                raise UnsupportedModel(f"{where}.@variables.degree_gain_raw: {np.size(gain)} entries for lmax "
                                       f"{self.lmax}")
            gain_t = tensor(np.ravel(gain), self.dtype)
            weights = [torch.ones(4, dtype=self.dtype)]
            for degree in range(2, self.lmax + 1):
                weights.append((gain_t[degree - 2] * gain_t[degree - 2]).expand(2 * degree + 1))
            self.register_buffer("degree_weights", torch.cat(weights))
        else:
            self.register_buffer("degree_weights", torch.ones(4, dtype=self.dtype))
        self.dim_out = self.ng * self.axis_neuron + (self.tebd_dim if self.concat_output_tebd else 0)

    @staticmethod
    def _one_net(node: Dict[str, Any], where: str, dim_in: int) -> Network:
        coll = NetworkCollection(node, where)
        if coll.ndim != 0 or len(coll.networks) != 1 or not coll.present[0]:
            raise UnsupportedModel(f"{where}: expected one network (ndim 0), got ndim {coll.ndim}")
        net = coll.networks[0]
        if net.dim_in != dim_in:
            raise UnsupportedModel(f"{where}: input width {net.dim_in}, expected {dim_in}")
        return net

    def exchanged_widths(self) -> List[int]:
        return []

    def _moment_basis(self, rr: torch.Tensor, diff: torch.Tensor, sw: torch.Tensor, std: torch.Tensor,
                      valid: torch.Tensor) -> torch.Tensor:
        """deepmd-kit's Cartesian moment basis up to lmax: [R (4), radial · Y_l (2l+1 each, l = 2..lmax)] with
        direction r̂ = r/(|r| + p), radial = sw / (|r| + p) / dstd[t_i, j, 0] on valid neighbours at r ≠ 0."""
        d2 = (diff * diff).sum(-1, keepdim=True)
        has_dir = d2 > 0.0
        dist = torch.sqrt(torch.where(has_dir, d2, torch.ones_like(d2)))
        use = valid.unsqueeze(-1) & has_dir
        denom = torch.where(use, dist + self.protection, torch.ones_like(dist))
        usef = use.to(rr.dtype)
        u = diff / denom * usef
        radial = sw.unsqueeze(-1) / denom / std * usef
        x, y, z = u[..., 0], u[..., 1], u[..., 2]
        q = x * x + y * y + z * z
        s3 = math.sqrt(3.0)
        blocks = [rr, radial * torch.stack([s3 * x * y, s3 * y * z, 0.5 * (3.0 * z * z - q), s3 * x * z,
                                            0.5 * s3 * (x * x - y * y)], dim=-1)]
        if self.lmax >= 3:
            blocks.append(radial * torch.stack([
                math.sqrt(5.0 / 8.0) * y * (3.0 * x * x - y * y),
                math.sqrt(15.0) * x * y * z,
                math.sqrt(3.0 / 8.0) * y * (5.0 * z * z - q),
                0.5 * z * (5.0 * z * z - 3.0 * q),
                math.sqrt(3.0 / 8.0) * x * (5.0 * z * z - q),
                0.5 * math.sqrt(15.0) * z * (x * x - y * y),
                math.sqrt(5.0 / 8.0) * x * (x * x - 3.0 * y * y)], dim=-1))
        if self.lmax >= 4:
            z2 = z * z
            xy2 = x * x - y * y
            blocks.append(radial * torch.stack([
                0.5 * math.sqrt(35.0) * x * y * xy2,
                0.25 * math.sqrt(70.0) * y * z * (3.0 * x * x - y * y),
                0.5 * math.sqrt(5.0) * x * y * (7.0 * z2 - q),
                0.25 * math.sqrt(10.0) * y * z * (7.0 * z2 - 3.0 * q),
                0.125 * (35.0 * z2 * z2 - 30.0 * z2 * q + 3.0 * q * q),
                0.25 * math.sqrt(10.0) * x * z * (7.0 * z2 - 3.0 * q),
                0.25 * math.sqrt(5.0) * xy2 * (7.0 * z2 - q),
                0.25 * math.sqrt(70.0) * x * z * (x * x - 3.0 * y * y),
                0.125 * math.sqrt(35.0) * (x * x * x * x - 6.0 * x * x * y * y + y * y * y * y)], dim=-1))
        return torch.cat(blocks, dim=-1)

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor, mapping: Optional[torch.Tensor],
                plan: Optional[torch.Tensor]) -> torch.Tensor:
        nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
        nall = coord.shape[1]
        if nnei != self.nnei:
            raise RuntimeError("se_atten: the neighbour list must have sel entries per atom")
        coord = coord.to(self.dtype)
        atype_loc = atype[:, :nloc]
        envm, diff, sw = env.env_mat(coord, nlist, self.rcut, self.rcut_smth, self.protection, False)
        rr = env.normalize(envm, atype_loc, self.davg, self.dstd)
        if self.has_exclude:
            keep = env.pair_mask(nlist, atype, self.pair_table)
            nlist = torch.where(keep, nlist, torch.full_like(nlist, -1))
            rr = rr * keep.unsqueeze(-1).to(rr.dtype)
        valid = nlist >= 0
        sw = torch.where(valid, sw, torch.zeros_like(sw))
        safe = torch.where(valid, nlist, torch.zeros_like(nlist))  # padded/excluded slots read atom 0
        n = nf * nloc
        ntp = self.ntypes + 1
        t_ext = torch.where(atype >= 0, atype, torch.full_like(atype, self.ntypes))
        t_loc = t_ext[:, :nloc]
        t_nei = torch.gather(t_ext, 1, safe.reshape(nf, nloc * nnei)).reshape(nf, nloc, nnei)
        ss = rr[..., :1]
        if not self.strip:
            parts = [ss, self.tebd[t_nei]]
            if not self.type_one_side:
                parts.append(self.tebd[t_loc].unsqueeze(2).expand(-1, -1, nnei, -1))
            gg = self.embedding(torch.cat(parts, dim=-1))
        else:
            if self.type_one_side:
                gg_t = self.embedding_strip(self.tebd)[t_nei]
            else:
                pair = torch.cat([self.tebd.unsqueeze(0).expand(ntp, -1, -1),
                                  self.tebd.unsqueeze(1).expand(-1, ntp, -1)], dim=-1)  # [centre, nei, 2 tebd]
                table = self.embedding_strip(pair.reshape(ntp * ntp, 2 * self.tebd_dim))
                gg_t = table[t_loc.unsqueeze(-1) * ntp + t_nei]
            if self.smooth:
                gg_t = gg_t * sw.unsqueeze(-1)
            gg_s = self.embedding(ss)
            gg = gg_s * gg_t + gg_s
        gg = gg.reshape(n, nnei, self.ng)
        rr_flat = rr.reshape(n, nnei, 4)
        sw_flat = sw.reshape(n, nnei)
        valid_flat = valid.reshape(n, nnei)
        if len(self.attention) > 0:
            rvec = rr_flat[:, :, 1:4]
            input_r = rvec / torch.clamp(env.safe_norm(rvec), min=1e-12).unsqueeze(-1)
            for layer in self.attention:
                gg = layer(gg, valid_flat, input_r, sw_flat)
        if self.lmax > 1:
            t0 = torch.where(atype_loc >= 0, atype_loc, torch.zeros_like(atype_loc)).reshape(n)
            std = self.dstd[t0][:, :, 0:1]
            basis = self._moment_basis(rr_flat, diff.reshape(n, nnei, 3), sw_flat, std, valid_flat)
        else:
            basis = rr_flat
        gr = torch.matmul(gg.transpose(1, 2), basis) / float(self.nnei)  # [n, ng, M]
        gr1 = gr[:, :self.axis_neuron, :] * self.degree_weights
        out = torch.matmul(gr, gr1.transpose(1, 2)).reshape(nf, nloc, self.ng * self.axis_neuron)
        if self.concat_output_tebd:
            out = torch.cat([out, self.tebd[t_loc]], dim=-1)
        return out
