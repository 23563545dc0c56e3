"""deepmd-kit's DPA2 descriptor (`Descriptor` type `dpa2`, @version 1-3; MATH.md §2.6 P1-P10;
deepmd-kit's dpmodel/descriptor/dpa2.py `_call_dense`, dpa1.py `DescrptBlockSeAtten.call` with
attn_layer 0, se_t_tebd.py `DescrptBlockSeTTebd.call`, repformers.py `DescrptBlockRepformers.call`)
as a TorchScript-able module.

* P1 lists: the model's list (sorted, nsel = repinit nsel, −1 beyond repinit rcut) is cut for the
  three-body and repformer blocks: first ns slots, −1 where r > rc (build_multiple_neighbor_list).
* P2 repinit (se_atten, no attention): R normalised (padded slots keep −davg/dstd), excluded pairs
  zeroed; G = Emb([s, T_j(, T_i)]) (concat; padded/excluded slots take T of extended atom 0) or
  G = G_s(s)·(1 + G_t(types)·[sw]) (strip; types of atom 0 likewise); gr = Σ_j G_jᵀ R_j / nnei;
  D = gr gr[:axis]ᵀ flattened (ng-major).
* P3 three-body (se_t_tebd): env_jk = R_j[1:]·R_k[1:], G = Emb([env_jk, T_j, T_k]) (or strip with
  sw_j sw_k), res = Σ_jk env_jk G_jk / nnei².
* P4 g1 = g1_shape_tranform([repinit, three-body]) (+ tebd_transform(T_i)).
* P5-P9 repformers: g1 = φ(g1); g2 = φ(g2_embd(s)) (or of r/rc with h2 = r_ij/rc when direct_dist);
  before every layer the ghosts' g1 are filled by `self.ghosts` (mapping gather in the regular graph,
  the exchange op in the with-comm graph); layers in repformer_layer.py.
* P10 output [g1_L, T_i if concat_output_tebd] in the descriptor's precision."""

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.jit import Final

from deepmd.dpkit import env
from deepmd.dpkit.descriptor import Descriptor
from deepmd.dpkit.network import (Activation, Layer, NetworkCollection, Network, precision_dtype,
                                  type_embedding_table)
from deepmd.dpkit.repformer_layer import RepformerLayer
from deepmd.dpkit.serialization import UnsupportedModel, check_version, refuse_unless, require, variables
from deepmd.models.ghosts import MappingGhosts

_REPINIT_DEFAULTS: Dict[str, Any] = {
    "neuron": [25, 50, 100], "axis_neuron": 16, "tebd_dim": 8, "tebd_input_mode": "concat",
    "set_davg_zero": True, "activation_function": "tanh", "resnet_dt": False, "type_one_side": False,
    "use_three_body": False, "three_body_neuron": [2, 4, 8], "three_body_sel": 40, "three_body_rcut": 4.0,
    "three_body_rcut_smth": 0.5,
}
_REPFORMER_DEFAULTS: Dict[str, Any] = {
    "nlayers": 3, "g1_dim": 128, "g2_dim": 16, "axis_neuron": 4, "direct_dist": False,
    "update_g1_has_conv": True, "update_g1_has_drrd": True, "update_g1_has_grrg": True,
    "update_g1_has_attn": True, "update_g2_has_g1g1": True, "update_g2_has_attn": True, "update_h2": False,
    "attn1_hidden": 64, "attn1_nhead": 4, "attn2_hidden": 16, "attn2_nhead": 4, "attn2_has_gate": False,
    "activation_function": "tanh", "update_style": "res_avg", "update_residual": 0.001,
    "update_residual_init": "norm", "set_davg_zero": True, "trainable_ln": True, "use_sqrt_nnei": True,
    "g1_out_conv": True, "g1_out_mlp": True, "ln_eps": 1e-5,
}
_KNOWN_OPTIONS = {
    "@class", "type", "@version", "ntypes", "repinit_args", "repformer_args", "concat_output_tebd", "precision",
    "smooth", "exclude_types", "env_protection", "trainable", "add_tebd_to_repinit_out", "use_econf_tebd",
    "use_tebd_bias", "type_map", "type_embedding", "g1_shape_tranform", "tebd_transform", "repinit_variable",
    "repformers_variable", "repinit_three_body_variable", "seed", "add_chg_spin_ebd", "default_chg_spin",
}


def _stats(node: Dict[str, Any], where: str, ntypes: int, nnei: int, dtype: torch.dtype) -> Tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    v = variables(node)
    davg = np.asarray(require(v, where + ".@variables", "davg"), dtype=np.float64)
    dstd = np.asarray(require(v, where + ".@variables", "dstd"), dtype=np.float64)
    for name, a in (("davg", davg), ("dstd", dstd)):
        if a.size != ntypes * nnei * 4:
            raise UnsupportedModel(f"{where}.@variables.{name}: {a.shape} does not match ({ntypes}, {nnei}, 4)")
    return (torch.from_numpy(davg.reshape(ntypes, nnei, 4)).to(dtype),
            torch.from_numpy(dstd.reshape(ntypes, nnei, 4)).to(dtype))


def _single_net(node: Dict[str, Any], key: str, where: str, dtype: torch.dtype, dim_in: int) -> Network:
    coll = NetworkCollection(require(node, where, key), f"{where}.{key}")
    if coll.ndim != 0 or len(coll.networks) != 1 or not coll.present[0]:
        raise UnsupportedModel(f"{where}.{key}: expected one shared network (ndim 0)")
    net = coll.networks[0].to(dtype)
    if net.dim_in != dim_in:
        raise UnsupportedModel(f"{where}.{key}: input width {net.dim_in}, expected {dim_in}")
    return net


def _first_blocks(block: torch.nn.Module, net: Network, strip: bool, widths: List[int],
                  names: Tuple[str, ...]) -> bool:
    """Concatenated type-embedding input (not strip): registers on `block` the first layer's weight rows
    of the geometric column and of each type block (Network.first_weight_blocks) under `names` (empty
    where absent); returns whether the blocks apply."""
    rows = None if strip else net.first_weight_blocks(widths)
    for i, name in enumerate(names):
        block.register_buffer(name, rows[i] if rows is not None and i < len(rows) else
                              torch.zeros(0, dtype=net.layers[0].w.dtype))
    return rows is not None


def _bias_or_zeros(layer: Layer) -> torch.Tensor:
    return layer.b if layer.has_bias else torch.zeros(layer.num_out, dtype=layer.w.dtype)


def _idt_or_ones(layer: Layer) -> torch.Tensor:
    return layer.idt if layer.has_idt else torch.ones(layer.num_out, dtype=layer.w.dtype)


def _neighbour_rows(x: torch.Tensor, nlist: torch.Tensor) -> torch.Tensor:
    """x [nf, nall, F] gathered at nlist [nf, nloc, nnei] (entries ≥ 0) -> [nf, nloc, nnei, F]."""
    nf, nloc, nnei, width = nlist.shape[0], nlist.shape[1], nlist.shape[2], x.shape[2]
    return torch.gather(x, 1, nlist.reshape(nf, nloc * nnei, 1).expand(-1, -1, width)).reshape(nf, nloc, nnei, width)


class _Block(torch.nn.Module):
    """Shared part of repinit and three-body: env matrix, normalisation, exclusion, type lookups."""

    def __init__(self, var: Dict[str, Any], where: str, ntypes: int, rcut: float, rcut_smth: float, nnei: int,
                 protection: float, exclude: List[List[int]], dtype: torch.dtype, tebd_mode: str, smooth: bool):
        super().__init__()
        self.rcut, self.rcut_smth, self.nnei, self.protection = rcut, rcut_smth, nnei, protection
        self.ntypes = ntypes
        self.strip = tebd_mode == "strip"
        self.smooth = smooth
        self.has_exclude = len(exclude) > 0
        self.register_buffer("exclude_table", env.pair_allowed_table(ntypes, exclude))
        davg, dstd = _stats(var, where, ntypes, nnei, dtype)
        self.register_buffer("davg", davg)
        self.register_buffer("dstd", dstd)
        # The block's env_mat node is ignored, as deepmd-kit's deserializer does (it always records the
        # block cutoffs and protection 0; the descriptor-level env_protection applies).

    def prepare(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor):
        """(rr = normalised R with excluded rows zeroed [nf,nloc,nnei,4], sw masked [nf,nloc,nnei],
        real-neighbour mask, list with padded/excluded slots at 0)."""
        nloc = nlist.shape[1]
        em, _, sw = env.env_mat(coord, nlist, self.rcut, self.rcut_smth, self.protection, False)
        rr = env.normalize(em, atype[:, :nloc], self.davg, self.dstd)
        if self.has_exclude:
            keep = env.pair_mask(nlist, atype, self.exclude_table)
            nlist = torch.where(keep, nlist, torch.full_like(nlist, -1))
            rr = rr * keep.unsqueeze(-1).to(rr.dtype)
        mask = nlist >= 0
        sw = torch.where(mask, sw, torch.zeros_like(sw))
        safe = torch.where(mask, nlist, torch.zeros_like(nlist))
        return rr, sw, mask, safe


class Repinit(_Block):
    """se_atten block with attn_layer 0 (P2) -> [nf, nloc, ng·axis]."""

    def __init__(self, args: Dict[str, Any], var: Dict[str, Any], where: str, ntypes: int, protection: float,
                 exclude: List[List[int]], dtype: torch.dtype, smooth: bool, table: torch.Tensor):
        mode = args["tebd_input_mode"]
        super().__init__(var, where, ntypes, float(require(args, "repinit_args", "rcut")),
                         float(require(args, "repinit_args", "rcut_smth")), int(require(args, "repinit_args", "nsel")),
                         protection, exclude, dtype, mode, smooth)
        self.type_one_side = bool(args["type_one_side"])
        self.axis = int(args["axis_neuron"])
        tebd = int(args["tebd_dim"])
        self.tebd = tebd
        nt_in = tebd if self.type_one_side else 2 * tebd
        self.embedding = _single_net(var, "embeddings", where, dtype, 1 if self.strip else 1 + nt_in)
        self.ng = self.embedding.dim_out
        widths = [1, tebd] + ([] if self.type_one_side else [tebd])
        self.blocks = _first_blocks(self, self.embedding, self.strip, widths, ("w_s", "w_j", "w_i"))
        if not 0 < self.axis <= self.ng:
            raise UnsupportedModel(f"{where}: axis_neuron {self.axis} must be in 1..{self.ng}")
        self.dim_out = self.ng * self.axis
        # strip: the type part depends on types only; tabulated once over [ntypes + 1] (one side) or
        # [(ntypes + 1)²] pairs, flat index t_i·(ntypes+1) + t_j with input [T_j, T_i].
        tt = torch.zeros(0, self.ng, dtype=dtype)
        if self.strip:
            net = _single_net(var, "embeddings_strip", where, dtype, nt_in)
            if net.dim_out != self.ng:
                raise UnsupportedModel(f"{where}.embeddings_strip: width {net.dim_out}, expected {self.ng}")
            ntp = table.shape[0]
            with torch.no_grad():
                if self.type_one_side:
                    tt = net(table)
                else:
                    nei = table.unsqueeze(0).expand(ntp, ntp, tebd)
                    cen = table.unsqueeze(1).expand(ntp, ntp, tebd)
                    tt = net(torch.cat([nei, cen], dim=-1).reshape(ntp * ntp, 2 * tebd))
        self.register_buffer("tt_full", tt)

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                tebd_ext: torch.Tensor) -> torch.Tensor:
        nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
        rr, sw, mask, safe = self.prepare(coord, atype, nlist)
        ss = rr[..., :1]
        if self.blocks:
            # [s, tebd_j, tebd_i]·W by blocks: the type rows' products per atom, gathered per neighbour
            xw = ss * self.w_s[0] + _neighbour_rows(torch.matmul(tebd_ext, self.w_j), safe)
            if not self.type_one_side:
                xw = xw + torch.matmul(tebd_ext[:, :nloc], self.w_i).unsqueeze(2)
            gg = self.embedding.forward_blocks(xw)
        elif not self.strip:
            tj = _neighbour_rows(tebd_ext, safe)
            if self.type_one_side:
                ss = torch.cat([ss, tj], dim=-1)
            else:
                ti = tebd_ext[:, :nloc].unsqueeze(2).expand(-1, -1, nnei, -1)
                ss = torch.cat([ss, tj, ti], dim=-1)
            gg = self.embedding(ss)
        else:
            ntp = self.ntypes + 1
            tj = torch.gather(atype, 1, safe.reshape(nf, nloc * nnei)).reshape(nf, nloc, nnei)
            tj = torch.where(tj >= 0, tj, torch.full_like(tj, ntp - 1))
            if self.type_one_side:
                idx = tj
            else:
                ti = atype[:, :nloc]
                ti = torch.where(ti >= 0, ti, torch.full_like(ti, ntp - 1))
                idx = ti.unsqueeze(-1) * ntp + tj
            gg_t = self.tt_full[idx]
            if self.smooth:
                gg_t = gg_t * sw.unsqueeze(-1)
            gg_s = self.embedding(ss)
            gg = gg_s * gg_t + gg_s
        # gr [nf, nloc, ng, 4] = Σ_j G_j ⊗ R_j / nnei
        gr = torch.matmul(gg.transpose(-1, -2), rr) / float(self.nnei)
        d = torch.matmul(gr, gr[:, :, : self.axis].transpose(-1, -2))  # [nf, nloc, ng, axis]
        return d.reshape(nf, nloc, self.ng * self.axis)


class ThreeBody(_Block):
    """se_t_tebd block (P3) -> [nf, nloc, ng]."""

    # The embedding of real neighbour pairs through deepmd_kernels::three_body (set_fused, before
    # scripting; Final: one branch is compiled).
    fused: Final[bool]
    fused_widths: List[int]
    fused_residual: List[int]

    def __init__(self, args: Dict[str, Any], var: Dict[str, Any], where: str, ntypes: int, protection: float,
                 exclude: List[List[int]], dtype: torch.dtype, smooth: bool, table: torch.Tensor):
        mode = args["tebd_input_mode"]
        super().__init__(var, where, ntypes, float(args["three_body_rcut"]), float(args["three_body_rcut_smth"]),
                         int(args["three_body_sel"]), protection, exclude, dtype, mode, smooth)
        tebd = int(args["tebd_dim"])
        self.embedding = _single_net(var, "embeddings", where, dtype, 1 if self.strip else 1 + 2 * tebd)
        self.ng = self.embedding.dim_out
        self.dim_out = self.ng
        self.blocks = _first_blocks(self, self.embedding, self.strip, [1, tebd, tebd], ("w_s", "w_j", "w_k"))
        tt = torch.zeros(0, self.ng, dtype=dtype)
        if self.strip:
            net = _single_net(var, "embeddings_strip", where, dtype, 2 * tebd)
            if net.dim_out != self.ng:
                raise UnsupportedModel(f"{where}.embeddings_strip: width {net.dim_out}, expected {self.ng}")
            ntp = table.shape[0]
            with torch.no_grad():
                first = table.unsqueeze(1).expand(ntp, ntp, tebd)
                second = table.unsqueeze(0).expand(ntp, ntp, tebd)
                tt = net(torch.cat([first, second], dim=-1).reshape(ntp * ntp, 2 * tebd))
        self.register_buffer("tt_full", tt)
        self.where = where
        self.fused = False
        self.fused_widths, self.fused_residual = [], []
        self.fused_act = Activation(None)
        self.register_buffer("fused_params", torch.zeros(0, dtype=dtype))

    def set_fused(self, fused: bool) -> str:
        """Selects (before scripting) the kernel where this block's options allow it; returns
        build.set_layer_formulation's entry."""
        why = self.fused_unsupported() if fused else ""
        self.fused = fused and not why
        if self.fused:
            net = self.embedding
            first = net.layers[0]
            parts = [self.w_s[0], _bias_or_zeros(first), _idt_or_ones(first)]
            for layer in net.layers[1:]:
                parts += [layer.w.reshape(-1), _bias_or_zeros(layer), _idt_or_ones(layer)]
            self.fused_params = torch.cat([p.reshape(-1) for p in parts]).contiguous()
            self.fused_widths = [int(layer.num_out) for layer in net.layers]
            self.fused_residual = [int(layer.residual) for layer in net.layers[1:]]
            self.fused_act = first.activation
        if not fused:
            return "reference"
        return "reference: " + why if why else "fused"

    def fused_unsupported(self) -> str:
        if not self.blocks:
            return "the type embedding as strip (tebd_input_mode), which the kernel does not implement"
        kinds = sorted({(layer.activation.kind, layer.activation.threshold) for layer in self.embedding.layers})
        if len(kinds) != 1 or kinds[0][0] not in (0, 1, 7, 8):
            return f"embedding activations {kinds} (the kernel has one of none, tanh, silu, silut for all layers)"
        if float(self.davg[..., 1:].abs().max()) != 0.0:
            return ("the stored env-matrix averages of the direction components are non-zero, so pairs with a padded "
                    "neighbour contribute")
        return ""

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                tebd_ext: torch.Tensor) -> torch.Tensor:
        nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
        rr, sw, mask, safe = self.prepare(coord, atype, nlist)
        r3 = rr[..., 1:]
        if self.fused:  # Σ_jk s_jk G_jk over real pairs (padded and excluded slots have r3 = 0)
            nb, h0 = nf * nloc, self.w_j.shape[1]
            pj = _neighbour_rows(torch.matmul(tebd_ext, self.w_j), safe).reshape(nb, nnei, h0)
            pk = _neighbour_rows(torch.matmul(tebd_ext, self.w_k), safe).reshape(nb, nnei, h0)
            act = self.fused_act
            res = torch.ops.deepmd_kernels.three_body(r3.reshape(nb, nnei, 3), mask.reshape(nb, nnei), pj, pk,
                                                      self.fused_params, self.fused_widths, self.fused_residual,
                                                      act.kind, act.threshold, act.slope, act.const)
            return res.reshape(nf, nloc, res.shape[1]) * (1.0 / float(self.nnei) / float(self.nnei))
        env_jk = torch.matmul(r3, r3.transpose(-1, -2))  # [nf, nloc, nnei, nnei]
        ss = env_jk.unsqueeze(-1)
        if self.blocks:
            # [r_j·r_k, tebd_j, tebd_k]·W by blocks: no [nloc, nnei, nnei, 1 + 2 tebd] input, and no product
            # (or input gradient) per pair for the type rows
            pj = _neighbour_rows(torch.matmul(tebd_ext, self.w_j), safe)
            pk = _neighbour_rows(torch.matmul(tebd_ext, self.w_k), safe)
            gg = self.embedding.forward_blocks(ss * self.w_s[0] + pj.unsqueeze(3) + pk.unsqueeze(2))
        elif not self.strip:
            tj = _neighbour_rows(tebd_ext, safe)  # [nf, nloc, nnei, tebd]
            ss = torch.cat([ss, tj.unsqueeze(3).expand(-1, -1, -1, nnei, -1),
                            tj.unsqueeze(2).expand(-1, -1, nnei, -1, -1)], dim=-1)
            gg = self.embedding(ss)
        else:
            ntp = self.ntypes + 1
            tj = torch.gather(atype, 1, safe.reshape(nf, nloc * nnei)).reshape(nf, nloc, nnei)
            tj = torch.where(tj >= 0, tj, torch.full_like(tj, ntp - 1))
            idx = tj.unsqueeze(-1) * ntp + tj.unsqueeze(-2)
            gg_t = self.tt_full[idx]
            if self.smooth:
                gg_t = gg_t * sw[:, :, :, None, None] * sw[:, :, None, :, None]
            gg_s = self.embedding(ss)
            gg = gg_s * gg_t + gg_s
        res = (env_jk.unsqueeze(-1) * gg).sum(dim=(2, 3))
        return res * (1.0 / float(self.nnei) / float(self.nnei))


class DescrptDPA2(Descriptor):
    def __init__(self, node: Dict[str, Any], ntypes: int, where: str = "model.descriptor"):
        super().__init__()
        version = node.get("@version", 1)
        if version == 4 or "compress" in (node.get("repinit_variable") or {}):
            raise UnsupportedModel(f"{where}: this DPA2 is compressed (@version 4, tabulated repinit embedding); "
                                   "compressed/tabulated models are not supported: export the uncompressed model "
                                   "(the one before `dp compress`)")
        check_version(node, where, 1, 3)
        unknown = sorted(set(node) - _KNOWN_OPTIONS)
        if unknown:
            raise UnsupportedModel(f"{where}: keys {unknown} are not ones deepmd-kit's dpa2 (@version ≤ 3) writes")
        refuse_unless(node, where, "use_econf_tebd", lambda v: not v, False,
                      "the electron-configuration type embedding is not supported; train with use_econf_tebd false")
        refuse_unless(node, where, "add_chg_spin_ebd", lambda v: not v, False,
                      "the charge/spin embedding is not supported; train without add_chg_spin_ebd")
        self.dtype = precision_dtype(node.get("precision", "float64"), where + ".precision")
        dtype = self.dtype
        self.ntypes = int(node.get("ntypes", ntypes))
        if self.ntypes != ntypes:
            raise UnsupportedModel(f"{where}: ntypes {self.ntypes} differs from the type_map's {ntypes}")
        smooth = bool(node.get("smooth", True))
        protection = float(node.get("env_protection", 0.0) or 0.0)
        exclude = [[int(a), int(b)] for a, b in (node.get("exclude_types") or [])]
        for a, b in exclude:
            if not (0 <= a < ntypes and 0 <= b < ntypes):
                raise UnsupportedModel(f"{where}: exclude_types pair {[a, b]} is outside 0..{ntypes - 1}")

        ri_args = dict(_REPINIT_DEFAULTS)
        ri_args.update(require(node, where, "repinit_args"))
        rf_args = dict(_REPFORMER_DEFAULTS)
        rf_args.update(require(node, where, "repformer_args"))
        for name, args, known in (("repinit_args", ri_args, _REPINIT_DEFAULTS),
                                  ("repformer_args", rf_args, _REPFORMER_DEFAULTS)):
            unknown = sorted(set(args) - set(known) - {"rcut", "rcut_smth", "nsel"})
            if unknown:
                raise UnsupportedModel(f"{where}.{name}: keys {unknown} are not ones deepmd-kit's dpa2 (@version ≤ 3) "
                                       "writes")
        if version < 3:  # deepmd-kit's compatibility rule for older files
            rf_args["use_sqrt_nnei"] = False
            rf_args["g1_out_conv"] = False
            rf_args["g1_out_mlp"] = False
        if rf_args.get("ln_eps") is None:
            rf_args["ln_eps"] = 1e-5
        mode = ri_args["tebd_input_mode"]
        if mode not in ("concat", "strip"):
            raise UnsupportedModel(f"{where}.repinit_args: tebd_input_mode {mode!r} is not supported (concat, strip)")

        # type embedding [ntypes + 1, tebd] with the zero padding row
        table = type_embedding_table(require(node, where, "type_embedding"), where + ".type_embedding").to(dtype)
        self.tebd_dim = int(ri_args["tebd_dim"])
        if table.shape[0] != ntypes + 1 or table.shape[1] != self.tebd_dim:
            raise UnsupportedModel(f"{where}.type_embedding: table {list(table.shape)}, expected "
                                   f"[{ntypes + 1}, {self.tebd_dim}]")
        self.register_buffer("tebd_table", table)

        self.repinit = Repinit(ri_args, require(node, where, "repinit_variable"), where + ".repinit_variable",
                               ntypes, protection, exclude, dtype, smooth, table)
        self.use_three_body = bool(ri_args["use_three_body"])
        self.three_body = None
        repinit_out = self.repinit.dim_out
        self.tb_rcut, self.tb_nsel = 0.0, 0
        if self.use_three_body:
            self.three_body = ThreeBody(ri_args, require(node, where, "repinit_three_body_variable"),
                                        where + ".repinit_three_body_variable", ntypes, protection, exclude, dtype,
                                        smooth, table)
            repinit_out += self.three_body.dim_out
            self.tb_rcut, self.tb_nsel = self.three_body.rcut, self.three_body.nnei

        self.g1_dim = int(rf_args["g1_dim"])
        self.g1_shape_tranform = None
        if repinit_out != self.g1_dim:
            self.g1_shape_tranform = Layer(require(node, where, "g1_shape_tranform"),
                                           where + ".g1_shape_tranform").to(dtype)
            if (self.g1_shape_tranform.num_in, self.g1_shape_tranform.num_out) != (repinit_out, self.g1_dim):
                raise UnsupportedModel(f"{where}.g1_shape_tranform: {self.g1_shape_tranform.num_in}x"
                                       f"{self.g1_shape_tranform.num_out}, expected {repinit_out}x{self.g1_dim}")
        self.tebd_transform = None
        if bool(node.get("add_tebd_to_repinit_out", False)):
            self.tebd_transform = Layer(require(node, where, "tebd_transform"), where + ".tebd_transform").to(dtype)
            if (self.tebd_transform.num_in, self.tebd_transform.num_out) != (self.tebd_dim, self.g1_dim):
                raise UnsupportedModel(f"{where}.tebd_transform: {self.tebd_transform.num_in}x"
                                       f"{self.tebd_transform.num_out}, expected {self.tebd_dim}x{self.g1_dim}")

        # repformer block
        rfw = where + ".repformers_variable"
        rfv = require(node, where, "repformers_variable")
        self.rf_rcut = float(require(rf_args, where + ".repformer_args", "rcut"))
        self.rf_rcut_smth = float(require(rf_args, where + ".repformer_args", "rcut_smth"))
        self.rf_nsel = int(require(rf_args, where + ".repformer_args", "nsel"))
        self.rf_protection = protection
        self.direct_dist = bool(rf_args["direct_dist"])
        self.rf_has_exclude = len(exclude) > 0
        self.register_buffer("exclude_table", env.pair_allowed_table(ntypes, exclude))
        davg, dstd = _stats(rfv, rfw, ntypes, self.rf_nsel, dtype)
        self.register_buffer("rf_davg", davg)
        self.register_buffer("rf_dstd", dstd)
        self.rf_act = Activation(rf_args["activation_function"], where + ".repformer_args.activation_function")
        g2_embd = Layer(require(rfv, rfw, "g2_embd"), rfw + ".g2_embd").to(dtype)
        if (g2_embd.num_in, g2_embd.num_out) != (1, int(rf_args["g2_dim"])):
            raise UnsupportedModel(f"{rfw}.g2_embd: {g2_embd.num_in}x{g2_embd.num_out}, expected 1x{rf_args['g2_dim']}")
        self.g2_embd = g2_embd
        layer_nodes = require(rfv, rfw, "repformer_layers")
        if len(layer_nodes) != int(rf_args["nlayers"]):
            raise UnsupportedModel(f"{rfw}: {len(layer_nodes)} repformer layers for nlayers {rf_args['nlayers']}")
        defaults = dict(rf_args)
        defaults["sel"] = [self.rf_nsel]
        defaults["smooth"] = smooth
        self.layers = torch.nn.ModuleList([RepformerLayer(l, f"{rfw}.repformer_layers[{i}]", dtype, defaults)
                                           for i, l in enumerate(layer_nodes)])
        if len(self.layers) > 0:  # the descriptor returns g1: the last layer's g2 and h2 feed nothing
            self.layers[-1].g2_read = False
        for i, l in enumerate(self.layers):
            if l.ng1 != self.g1_dim:
                raise UnsupportedModel(f"{rfw}.repformer_layers[{i}]: g1_dim {l.ng1} differs from {self.g1_dim}")
        # deepmd-kit's own order checks (dpa2.py: rcut and sel in the same order, repformer inside repinit)
        blocks = sorted([(self.rf_rcut, self.rf_nsel), (self.repinit.rcut, self.repinit.nnei)] +
                        ([(self.tb_rcut, self.tb_nsel)] if self.use_three_body else []))
        for a, b in zip(blocks[:-1], blocks[1:]):
            if a[1] > b[1]:
                raise UnsupportedModel(f"{where}: block cutoffs and sels are not in the same order {blocks} "
                                       "(deepmd-kit refuses this model too)")
        if not (self.repinit.rcut > self.rf_rcut and self.repinit.nnei > self.rf_nsel):
            raise UnsupportedModel(f"{where}: the repformer list (rcut {self.rf_rcut}, nsel {self.rf_nsel}) must lie "
                                   f"inside the repinit list (rcut {self.repinit.rcut}, nsel {self.repinit.nnei})")
        if self.use_three_body and not (self.tb_rcut <= self.repinit.rcut and self.tb_nsel <= self.repinit.nnei):
            raise UnsupportedModel(f"{where}: the three-body list (rcut {self.tb_rcut}, sel {self.tb_nsel}) must lie "
                                   "inside the repinit list")

        self.concat_output_tebd = bool(node.get("concat_output_tebd", True))
        self.rcut = self.repinit.rcut
        self.sel = [self.repinit.nnei]
        self.mixed_types = True
        self.dim_out = self.g1_dim + (self.tebd_dim if self.concat_output_tebd else 0)
        self.nlayers = len(self.layers)
        self.has_message_passing = True
        self.ghosts = MappingGhosts()

    def exchanged_widths(self) -> List[int]:
        return [self.g1_dim] * self.nlayers

    def _cut(self, nlist: torch.Tensor, r: torch.Tensor, rcut: float, nsel: int) -> torch.Tensor:
        out = nlist[:, :, :nsel]
        return torch.where(r[:, :, :nsel] > rcut, torch.full_like(out, -1), out)

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor, mapping: Optional[torch.Tensor],
                plan: Optional[torch.Tensor]) -> torch.Tensor:
        nf, nloc, nall = nlist.shape[0], nlist.shape[1], coord.shape[1]
        width = self.repinit.nnei
        if nlist.shape[2] < width:
            nlist = torch.cat([nlist, torch.full([nf, nloc, width - nlist.shape[2]], -1, dtype=nlist.dtype,
                                                 device=nlist.device)], dim=2)
        # P1: build_multiple_neighbor_list (distances in the descriptor's precision)
        r = torch.linalg.vector_norm(env.neighbor_vectors(coord.detach(), nlist), dim=-1)
        r = torch.where(nlist >= 0, r, torch.full_like(r, float("inf")))
        nlist_ri = self._cut(nlist, r, self.repinit.rcut, width)
        nlist_rf = self._cut(nlist, r, self.rf_rcut, self.rf_nsel)

        t = torch.where(atype >= 0, atype, torch.full_like(atype, self.ntypes))
        tebd_ext = self.tebd_table[t]  # [nf, nall, tebd]
        tebd_loc = tebd_ext[:, :nloc]
        g1 = self.repinit(coord, atype, nlist_ri, tebd_ext)
        three_body = self.three_body
        if three_body is not None:
            nlist_tb = self._cut(nlist, r, self.tb_rcut, self.tb_nsel)
            g1 = torch.cat([g1, three_body(coord, atype, nlist_tb, tebd_ext)], dim=-1)
        shape = self.g1_shape_tranform
        if shape is not None:
            g1 = shape(g1)
        tebd_transform = self.tebd_transform
        if tebd_transform is not None:
            g1 = g1 + tebd_transform(tebd_loc)

        # P5: repformer block (exclusion before the env matrix, as deepmd-kit's repformers)
        if self.rf_has_exclude:
            keep = env.pair_mask(nlist_rf, atype, self.exclude_table)
            nlist_rf = torch.where(keep, nlist_rf, torch.full_like(nlist_rf, -1))
        em, diff, sw = env.env_mat(coord, nlist_rf, self.rf_rcut, self.rf_rcut_smth, self.rf_protection, False)
        dmatrix = env.normalize(em, atype[:, :nloc], self.rf_davg, self.rf_dstd)
        mask = nlist_rf >= 0
        sw = torch.where(mask, sw, torch.zeros_like(sw))
        g1 = self.rf_act(g1)
        if not self.direct_dist:
            g2, h2 = dmatrix[..., :1], dmatrix[..., 1:]
        else:
            g2, h2 = env.safe_norm(diff).unsqueeze(-1) / self.rf_rcut, diff / self.rf_rcut
        g2 = self.rf_act(self.g2_embd(g2))
        safe = torch.where(mask, nlist_rf, torch.zeros_like(nlist_rf))
        for layer in self.layers:
            g1_ext = self.ghosts(g1, nall, mapping, plan)
            g1, g2, h2 = layer(g1, g1_ext, g2, h2, safe, mask, sw)
        if self.concat_output_tebd:
            g1 = torch.cat([g1, tebd_loc], dim=-1)
        return g1
