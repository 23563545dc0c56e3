"""deepmd-kit's se_e2_a descriptor (`Descriptor` type `se_e2_a`/`se_a`, @version 1-2; MATH.md A1-A5;
deepmd-kit's dpmodel/descriptor/se_e2_a.py `call`) as a TorchScript-able module.

Per neighbour-type section t of the (distance-sorted, per-type) list: R = normalised environment matrix
(padded slots included: R = −davg/dstd there), excluded pairs' rows zeroed, G = Emb(R[..., 0]) with the
net of t (type_one_side) or of (t_i, t); gr = Σ_j G_jᵀ R_j / nnei; D = gr gr[:axis]ᵀ flattened a·axis+b."""

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from deepmd.dpkit import env
from deepmd.dpkit.descriptor import Descriptor
from deepmd.dpkit.network import NetworkCollection, precision_dtype, tensor
from deepmd.dpkit.serialization import UnsupportedModel, check_version, refuse_unless, require, variables

_KNOWN_OPTIONS = {
    "@class", "type", "@version", "@variables", "rcut", "rcut_smth", "sel", "neuron", "axis_neuron", "resnet_dt",
    "trainable", "type_one_side", "exclude_types", "env_protection", "set_davg_zero", "activation_function",
    "precision", "spin", "env_mat", "embeddings", "type_map", "ntypes", "seed",
}


class SeE2A(Descriptor):
    sections: List[int]
    net_types: List[List[int]]
    net_used: List[bool]

    def __init__(self, node: Dict[str, Any], ntypes: int, where: str = "model.descriptor"):
        super().__init__()
        if "compress" in node or node.get("@version", 1) == 3:
            raise UnsupportedModel(f"{where}: this se_e2_a is compressed (tabulated embedding nets, @version 3); "
                                   "compressed/tabulated models are not supported: export the uncompressed model")
        check_version(node, where, 1, 2)
        unknown = sorted(set(node) - _KNOWN_OPTIONS)
        if unknown:
            raise UnsupportedModel(f"{where}: keys {unknown} are not ones deepmd-kit's se_e2_a (@version ≤ 2) writes")
        refuse_unless(node, where, "spin", lambda v: v is None, None, "descriptor-level spin is not implemented by "
                      "deepmd-kit; use a spin_ener model")
        self.dtype = precision_dtype(node.get("precision", "float64"), where + ".precision")
        self.rcut = float(require(node, where, "rcut"))
        self.rcut_smth = float(require(node, where, "rcut_smth"))
        self.sel = [int(s) for s in require(node, where, "sel")]
        self.ntypes = len(self.sel)
        if self.ntypes != ntypes:
            raise UnsupportedModel(f"{where}: sel has {self.ntypes} entries for a type_map of {ntypes} types")
        self.nnei = sum(self.sel)
        self.sections = [0]
        for s in self.sel:
            self.sections.append(self.sections[-1] + s)
        self.axis_neuron = int(node.get("axis_neuron", 8))
        self.protection = float(node.get("env_protection", 0.0) or 0.0)
        self.mixed_types = False
        self.type_one_side = bool(node.get("type_one_side", True))

        self.embeddings = NetworkCollection(require(node, where, "embeddings"), where + ".embeddings")
        ndim = 1 if self.type_one_side else 2
        if self.embeddings.ndim != ndim or self.embeddings.ntypes != self.ntypes:
            raise UnsupportedModel(f"{where}: embeddings have ndim {self.embeddings.ndim}, ntypes "
                                   f"{self.embeddings.ntypes}; type_one_side={self.type_one_side} needs ndim {ndim}")
        # Flat index k of the collection: neighbour type t = k (one side) or (t_i, t) = (k % n, k // n).
        self.net_types = []
        self.net_used = []
        widths: List[int] = []
        for k, net in enumerate(self.embeddings.networks):
            ti, t = (-1, k) if self.type_one_side else (k % self.ntypes, k // self.ntypes)
            self.net_types.append([ti, t])
            # deepmd-kit clears (serialises empty) the nets of excluded two-sided pairs; their rows are zero.
            used = self.embeddings.present[k] and len(net.layers) > 0
            self.net_used.append(used)
            if used:
                if net.dim_in != 1:
                    raise UnsupportedModel(f"{where}.embeddings.networks[{k}]: input width {net.dim_in}, expected 1")
                widths.append(net.dim_out)
        if not widths or any(w != widths[0] for w in widths):
            raise UnsupportedModel(f"{where}: embedding nets have output widths {widths}; they must be equal")
        self.ng = widths[0]
        if not 0 < self.axis_neuron <= self.ng:
            raise UnsupportedModel(f"{where}: axis_neuron {self.axis_neuron} must be in 1..{self.ng}")
        self.dim_out = self.ng * self.axis_neuron

        v = variables(node)
        shape = [self.ntypes, self.nnei, 4]
        davg, dstd = v.get("davg"), v.get("dstd")
        davg = np.zeros(shape) if davg is None else davg
        dstd = np.ones(shape) if dstd is None else dstd
        if list(np.shape(davg)) != shape or list(np.shape(dstd)) != shape:
            raise UnsupportedModel(f"{where}: davg/dstd have shapes {np.shape(davg)}/{np.shape(dstd)}, expected {shape}")
        self.register_buffer("davg", tensor(davg, self.dtype))
        self.register_buffer("dstd", tensor(dstd, self.dtype))

        exclude = [[int(a), int(b)] for a, b in node.get("exclude_types", []) or []]
        for a, b in exclude:
            if not (0 <= a < self.ntypes and 0 <= b < self.ntypes):
                raise UnsupportedModel(f"{where}: exclude_types pair {[a, b]} is not a pair of types")
        self.has_exclude = len(exclude) > 0
        self.register_buffer("pair_table", env.pair_allowed_table(self.ntypes, exclude))

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                mapping: Optional[torch.Tensor], plan: Optional[torch.Tensor]) -> torch.Tensor:
        nf, nloc = nlist.shape[0], nlist.shape[1]
        atype_local = atype[:, :nloc]
        rr, _, _ = env.env_mat(coord, nlist, self.rcut, self.rcut_smth, self.protection, False)
        rr = env.normalize(rr, atype_local, self.davg, self.dstd)
        if self.has_exclude:
            # Excluded pairs' rows are zeroed after normalisation (padded slots are never excluded).
            rr = rr * env.pair_mask(nlist, atype, self.pair_table).unsqueeze(-1).to(rr.dtype)
        gr = torch.zeros(nf, nloc, self.ng, 4, dtype=rr.dtype, device=rr.device)
        for k, net in enumerate(self.embeddings.networks):
            if self.net_used[k]:
                ti, t = self.net_types[k][0], self.net_types[k][1]
                tr = rr[:, :, self.sections[t]:self.sections[t + 1], :]
                gg = net(tr[..., 0:1])                                   # [nf, nloc, sel_t, ng]
                part = torch.matmul(gg.transpose(-1, -2), tr)            # [nf, nloc, ng, 4]
                if ti >= 0:
                    part = torch.where((atype_local == ti).reshape(nf, nloc, 1, 1), part, torch.zeros_like(part))
                gr = gr + part
        gr = gr / self.nnei
        grrg = torch.matmul(gr, gr[:, :, : self.axis_neuron, :].transpose(-1, -2))  # [nf, nloc, ng, axis]
        return grrg.reshape(nf, nloc, self.dim_out)
