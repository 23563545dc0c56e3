"""deepmd-kit's DPA3 descriptor (`Descriptor` type `dpa3`, @version 1-2; MATH.md §2.5; deepmd-kit
deepmd/dpmodel/descriptor/dpa3.py and repflows.py) built from its dict node, TorchScript-able.

Ghost node features are filled before every layer by `self.ghosts` (deepmd-kit's use_loc_mapping=False
path; use_loc_mapping=True is the same math). Edges and angles are computed for local atoms only, in a
dense layout trimmed to the widest real row of the frame: padded slots contribute exactly zero, and the
normalisers stay the model's constants, so the static (e_sel/a_sel) and dynamic-sel models
(e_sel/sel_reduce_factor, a_sel/sel_reduce_factor, no padding to e_sel) are both exact.
The layer is in repflow_layer.py."""

import math
from typing import Any, Dict, Final, List, Optional, Tuple

import numpy as np
import torch

from deepmd.dpkit import env
from deepmd.dpkit.descriptor import Descriptor
from deepmd.dpkit.network import Activation, Layer, precision_dtype, tensor, type_embedding_table
from deepmd.dpkit.repflow_layer import RepFlowLayer
from deepmd.dpkit.serialization import UnsupportedModel, check_version, require, variables
from deepmd.models.ghosts import MappingGhosts

# RepFlowArgs constructor defaults (what deepmd-kit uses for a key an older file lacks).
_ARG_DEFAULTS: Dict[str, Any] = {
    "n_dim": 128, "e_dim": 64, "a_dim": 64, "nlayers": 6, "e_rcut": 6.0, "e_rcut_smth": 5.0, "e_sel": 120,
    "a_rcut": 4.0, "a_rcut_smth": 3.5, "a_sel": 20, "a_compress_rate": 0, "a_compress_e_rate": 1,
    "a_compress_use_split": False, "n_multi_edge_message": 1, "axis_neuron": 4, "update_angle": True,
    "update_style": "res_residual", "update_residual": 0.1, "update_residual_init": "const", "fix_stat_std": 0.3,
    "skip_stat": False, "optim_update": True, "smooth_edge_update": False, "edge_init_use_dist": False,
    "use_exp_switch": False, "use_dynamic_sel": False, "sel_reduce_factor": 10.0, "sequential_update": False,
}

_KNOWN_KEYS = {"@class", "type", "@version", "ntypes", "repflow_args", "concat_output_tebd", "activation_function",
               "precision", "exclude_types", "env_protection", "trainable", "use_econf_tebd", "use_tebd_bias",
               "use_loc_mapping", "type_map", "type_embedding", "repflow_variable", "add_chg_spin_ebd",
               "default_chg_spin", "chg_embedding", "spin_embedding", "mix_cs_mlp", "seed"}


def used_width(real: torch.Tensor) -> int:
    """1 + the last slot holding a real entry in any row (at least 1): slots beyond it are all padding."""
    nslot = real.shape[-1]
    if nslot == 0 or real.numel() == 0:
        return min(1, nslot)
    position = torch.arange(1, nslot + 1, dtype=torch.long, device=real.device)
    last = int((real.to(torch.long) * position).max().item())
    return max(last, 1)


class DescrptDPA3(Descriptor):
    # The geometry (environment matrix, switches, angle list and its cosines) through
    # deepmd_kernels::repflow_env, the angles packed to real pairs for the fused layers
    # (build.set_layer_formulation sets it with the layers' `fused`; Final: one branch is compiled).
    fused_env: Final[bool]

    def __init__(self, node: Dict[str, Any], ntypes: int, where: str = "model.descriptor"):
        super().__init__()
        self.fused_env = False
        if node.get("type") != "dpa3":
            raise UnsupportedModel(f"{where}: descriptor type {node.get('type')!r} is not dpa3")
        check_version(node, where, 1, 2)
        unknown = sorted(set(node) - _KNOWN_KEYS)
        if unknown:
            raise UnsupportedModel(f"{where}: keys {unknown} are not ones deepmd-kit's dpa3 descriptor writes; "
                                   "the file comes from a deepmd-kit this project does not know")
        if int(node.get("ntypes", ntypes)) != ntypes:
            raise UnsupportedModel(f"{where}: ntypes {node.get('ntypes')} differs from the model's type_map "
                                   f"({ntypes} types)")
        if node.get("add_chg_spin_ebd", False):
            raise UnsupportedModel(f"{where}: option add_chg_spin_ebd=True (charge/spin conditioning of the node "
                                   "embedding) is not supported: the exported graphs have no charge/spin input; "
                                   "train with add_chg_spin_ebd false")
        self.ntypes = ntypes
        self.dtype = precision_dtype(node.get("precision", "float64"), where + ".precision")
        args: Dict[str, Any] = dict(_ARG_DEFAULTS)
        given = require(node, where, "repflow_args")
        unknown = sorted(set(given) - set(_ARG_DEFAULTS))
        if unknown:
            raise UnsupportedModel(f"{where}.repflow_args: keys {unknown} are not repflow options this project knows "
                                   "(deepmd-kit bc902daf); update this project or export with that deepmd-kit")
        args.update(given)
        wa = where + ".repflow_args"
        self.n_dim, self.e_dim, self.a_dim = int(args["n_dim"]), int(args["e_dim"]), int(args["a_dim"])
        self.e_rcut, self.e_rcut_smth = float(args["e_rcut"]), float(args["e_rcut_smth"])
        self.a_rcut, self.a_rcut_smth = float(args["a_rcut"]), float(args["a_rcut_smth"])
        e_sel = args["e_sel"]
        self.e_sel = int(sum(e_sel)) if isinstance(e_sel, list) else int(e_sel)
        self.a_sel = int(args["a_sel"])
        if self.e_rcut < self.a_rcut or self.e_sel < self.a_sel:
            raise UnsupportedModel(f"{wa}: deepmd-kit needs e_rcut >= a_rcut and e_sel >= a_sel (got {self.e_rcut}, "
                                   f"{self.a_rcut}, {self.e_sel}, {self.a_sel})")
        if self.a_sel < 1 or self.e_sel < 1:
            raise UnsupportedModel(f"{wa}: e_sel and a_sel must be positive")
        self.update_angle = bool(args["update_angle"])
        self.edge_init_use_dist = bool(args["edge_init_use_dist"])
        self.use_exp_switch = bool(args["use_exp_switch"])
        self.use_dynamic_sel = bool(args["use_dynamic_sel"])
        if self.use_dynamic_sel and not bool(args["smooth_edge_update"]):
            raise UnsupportedModel(f"{wa}: use_dynamic_sel needs smooth_edge_update=True (deepmd-kit refuses this "
                                   "configuration)")
        if float(args["sel_reduce_factor"]) <= 0:
            raise UnsupportedModel(f"{wa}: sel_reduce_factor must be > 0")
        if args["update_style"] not in ("res_avg", "res_incr", "res_residual"):
            raise UnsupportedModel(f"{wa}: update_style {args['update_style']!r} is not one deepmd-kit defines")
        if bool(args["sequential_update"]) and (args["update_style"] != "res_residual" or not self.update_angle):
            raise UnsupportedModel(f"{wa}: sequential_update needs update_style res_residual and update_angle "
                                   "(deepmd-kit refuses this configuration)")
        self.protection = float(node.get("env_protection", 0.0))
        self.concat_output_tebd = bool(node.get("concat_output_tebd", False))
        self.act = Activation(node.get("activation_function", "silu"), where + ".activation_function")

        # C4: the descriptor's exclude_types, a pair mask (excluded pairs become -1).
        pairs = [[int(a), int(b)] for a, b in (node.get("exclude_types", []) or [])]
        for t in [t for p in pairs for t in p]:
            if not 0 <= t < ntypes:
                raise UnsupportedModel(f"{where}: exclude_types names type {t}, not a type of the model")
        self.has_exclude = len(pairs) > 0
        self.register_buffer("pair_table", env.pair_allowed_table(ntypes, pairs))

        # N7: type embedding (padding row for type -1); node features start as φ(T[t_i]).
        table = type_embedding_table(require(node, where, "type_embedding"), where + ".type_embedding")
        if table.shape[1] != self.n_dim or table.shape[0] != ntypes + 1:
            raise UnsupportedModel(f"{where}.type_embedding: table {list(table.shape)}, expected "
                                   f"[{ntypes + 1}, {self.n_dim}] (ntypes + padding, n_dim)")
        if table.dtype != self.dtype:
            raise UnsupportedModel(f"{where}.type_embedding: precision differs from the descriptor's")
        self.register_buffer("tebd", table)

        rv = require(node, where, "repflow_variable")
        wv = where + ".repflow_variable"
        stats = variables(rv)
        davg, dstd = require(stats, wv + ".@variables", "davg"), require(stats, wv + ".@variables", "dstd")
        for name, arr in (("davg", davg), ("dstd", dstd)):
            if arr is None or list(np.shape(arr)) != [ntypes, self.e_sel, 4]:
                raise UnsupportedModel(f"{wv}.@variables.{name}: shape {np.shape(arr)}, expected "
                                       f"[{ntypes}, {self.e_sel}, 4]")
        # fix_stat_std: the stored arrays are what deepmd-kit uses.
        self.register_buffer("davg", tensor(davg, self.dtype))
        self.register_buffer("dstd", tensor(dstd, self.dtype))
        self.edge_embd = Layer(require(rv, wv, "edge_embd"), wv + ".edge_embd")
        self.angle_embd = Layer(require(rv, wv, "angle_embd"), wv + ".angle_embd")
        for name, layer, width in (("edge_embd", self.edge_embd, self.e_dim),
                                   ("angle_embd", self.angle_embd, self.a_dim)):
            if layer.num_in != 1 or layer.num_out != width:
                raise UnsupportedModel(f"{wv}.{name}: shape [{layer.num_in}, {layer.num_out}], expected [1, {width}]")
            if layer.w.dtype != self.dtype:
                raise UnsupportedModel(f"{wv}.{name}: precision differs from the descriptor's")
        layers = require(rv, wv, "repflow_layers")
        if len(layers) != int(args["nlayers"]):
            raise UnsupportedModel(f"{wv}: {len(layers)} repflow_layers for nlayers {args['nlayers']}")
        dims = {"n_dim": self.n_dim, "e_dim": self.e_dim, "a_dim": self.a_dim, "e_sel": self.e_sel,
                "a_sel": self.a_sel, "update_angle": self.update_angle, "use_dynamic_sel": self.use_dynamic_sel}
        self.layers = torch.nn.ModuleList([RepFlowLayer(l, f"{wv}.repflow_layers[{i}]", self.dtype, dims)
                                           for i, l in enumerate(layers)])
        self.smooth_edge_update = all(l.smooth for l in self.layers)
        for i, layer in enumerate(self.layers):
            layer.angles_read = i < len(self.layers) - 2  # the last layer updates nodes only

        # protocol (descriptor.py)
        self.rcut = self.e_rcut
        self.sel = [self.e_sel]
        self.mixed_types = True
        self.nlayers = len(layers)
        self.has_message_passing = True
        self.dim_out = self.n_dim * (2 if self.concat_output_tebd else 1)
        self.ghosts = MappingGhosts()
        self.sqrt_pi = math.pi ** 0.5

    def exchanged_widths(self) -> List[int]:
        return [self.n_dim] * self.nlayers

    def geometry(self, coord: torch.Tensor, atype_local: torch.Tensor, nlist: torch.Tensor,
                 mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                              torch.Tensor]:
        """(h2sw [nf,nloc,N,3], sw [nf,nloc,N], the edge embedding's input [nf,nloc,N], a_mask and a_sw
        [nf,nloc,A], the angle embedding) of the reference formulation: D1-D4."""
        nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
        # D1: edge environment matrix (normalised with the stored davg/dstd), switch, masked diff.
        env_e, diff, sw = env.env_mat(coord, nlist, self.e_rcut, self.e_rcut_smth, self.protection,
                                      self.use_exp_switch)
        dmatrix = env.normalize(env_e, atype_local, self.davg[:, :nnei], self.dstd[:, :nnei])
        h2 = dmatrix[..., 1:]
        h2sw = torch.where(mask.unsqueeze(-1), h2 * sw.unsqueeze(-1), torch.zeros_like(h2))
        edge_in = env.safe_norm(diff) if self.edge_init_use_dist else dmatrix[..., 0]
        # D2/D3: angle list = first a_sel entries with r < a_rcut (strict), its own switch; angle init.
        if self.update_angle:
            ncut = min(self.a_sel, nnei)
            a_real = mask[:, :, :ncut] & (env.safe_norm(diff[:, :, :ncut]) < self.a_rcut)
            nang = used_width(a_real)
            a_mask = a_real[:, :, :nang]
            a_nlist = torch.where(a_mask, nlist[:, :, :nang], torch.full_like(nlist[:, :, :nang], -1))
            _, a_diff, a_sw = env.env_mat(coord, a_nlist, self.a_rcut, self.a_rcut_smth, self.protection,
                                          self.use_exp_switch)
            unit = a_diff / (env.safe_norm(a_diff).unsqueeze(-1) + 1e-6)
            cosine = torch.matmul(unit, unit.transpose(-1, -2)) * (1 - 1e-6)
            angle = self.angle_embd((cosine / self.sqrt_pi).unsqueeze(-1))
        else:
            a_mask, a_sw, angle = self.no_angles(nf, nloc, coord)
        return h2sw, sw, edge_in, a_mask, a_sw, angle

    def fused_geometry(self, coord: torch.Tensor, atype_local: torch.Tensor, nbr: torch.Tensor,
                       frame: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                     torch.Tensor, torch.Tensor]:
        """geometry() through deepmd_kernels::repflow_env: the angle embedding of the real pairs only,
        packed (pack_angles' order)."""
        nf, nloc, nnei, nall = nbr.shape[0], nbr.shape[1], nbr.shape[2], coord.shape[1]
        nb = nf * nloc
        centre = (torch.arange(nloc, dtype=nbr.dtype, device=nbr.device).reshape(1, nloc, 1) + frame).reshape(nb)
        h2sw, sw, edge_in, a_mask, a_sw, cosine = torch.ops.deepmd_kernels.repflow_env(
            coord.reshape(nf * nall, 3), nbr.reshape(nb, nnei), centre, atype_local.reshape(nb),
            self.davg[:, :nnei], self.dstd[:, :nnei], self.e_rcut, self.e_rcut_smth, self.a_rcut, self.a_rcut_smth,
            self.a_sel if self.update_angle else 0, self.protection, self.use_exp_switch, self.edge_init_use_dist)
        if self.update_angle:
            nang = a_mask.shape[1]
            a_mask, a_sw = a_mask.reshape(nf, nloc, nang), a_sw.reshape(nf, nloc, nang)
            angle = self.angle_embd((cosine / self.sqrt_pi).unsqueeze(-1))
        else:
            a_mask, a_sw, angle = self.no_angles(nf, nloc, coord)
        return (h2sw.reshape(nf, nloc, nnei, 3), sw.reshape(nf, nloc, nnei), edge_in.reshape(nf, nloc, nnei), a_mask,
                a_sw, angle)

    def no_angles(self, nf: int, nloc: int, coord: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Without update_angle: an empty angle list of one slot."""
        a_mask = torch.zeros(nf, nloc, 1, dtype=torch.bool, device=coord.device)
        a_sw = torch.zeros(nf, nloc, 1, dtype=coord.dtype, device=coord.device)
        angle = torch.zeros(nf, nloc, 1, 1, self.a_dim, dtype=coord.dtype, device=coord.device)
        return a_mask, a_sw, angle

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor, mapping: Optional[torch.Tensor],
                plan: Optional[torch.Tensor]) -> torch.Tensor:
        coord = coord.to(self.dtype)
        nf, nloc, nall = nlist.shape[0], nlist.shape[1], coord.shape[1]
        if self.has_exclude:
            nlist = env.exclude_pairs(nlist, atype, self.pair_table)
        # Trim the padding every row has (exact: padded slots are multiplied by zero switches).
        nnei = used_width(nlist >= 0)
        nlist = nlist[:, :, :nnei]
        mask = nlist >= 0
        atype_local = atype[:, :nloc]

        frame = torch.arange(nf, dtype=nlist.dtype, device=nlist.device).reshape(nf, 1, 1) * nall
        nbr = torch.where(mask, nlist + frame, torch.full_like(nlist, -1))
        tebd_local = self.tebd[torch.where(atype_local >= 0, atype_local, torch.full_like(atype_local, self.ntypes))]
        node = self.act(tebd_local)
        if self.fused_env:
            h2sw, sw, edge_in, a_mask, a_sw, angle = self.fused_geometry(coord, atype_local, nbr, frame)
            nang = a_mask.shape[2]
        else:
            h2sw, sw, edge_in, a_mask, a_sw, angle = self.geometry(coord, atype_local, nlist, mask)
            nang = a_mask.shape[2]
        edge = self.edge_embd(edge_in.unsqueeze(-1))
        if not self.edge_init_use_dist:
            edge = self.act(edge)
        if nnei > nang:
            full_mask = torch.cat([a_mask, torch.zeros(nf, nloc, nnei - nang, dtype=torch.bool,
                                                       device=a_mask.device)], dim=2)
        else:
            full_mask = a_mask

        # D5-D11: layers; ghosts' node features are filled before each one.
        flat_index = (torch.where(mask, nlist, torch.zeros_like(nlist)) + frame).reshape(-1)
        for i, layer in enumerate(self.layers):
            node_ext = self.ghosts(node, nall, mapping, plan)
            node, edge, angle = layer(node, node_ext, edge, angle, h2sw, sw, flat_index, nbr, a_mask, a_sw,
                                      full_mask, i == self.nlayers - 1)
        if self.concat_output_tebd:
            node = torch.cat([node, tebd_local], dim=-1)
        return node
