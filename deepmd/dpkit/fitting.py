"""deepmd-kit's energy fitting (`Fitting` type `ener`, @version 1-4; MATH.md F1-F10; deepmd-kit's
general_fitting.py `_call_common`, invar_fitting.py, ener_fitting.py) as a TorchScript-able module.

Input of the nets: [descriptor, (fparam − avg)·inv_std, (aparam − avg)·inv_std, case_embd] (each part
only when present); one net (mixed_types) or one per atom type; + bias_atom_e[type]; fitting
exclude_types zero those atoms. Computes in the fitting's precision (deepmd-kit's cast_precision)."""

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from deepmd.dpkit.network import NetworkCollection, precision_dtype, tensor
from deepmd.dpkit.serialization import UnsupportedModel, check_version, refuse_unless, require, variables

# Options deepmd-kit writes for an `ener` fitting that do not change inference (training-only) or are
# checked below. Anything else is refused: deepmd-kit's own deserializer would not accept it either.
_KNOWN_OPTIONS = {
    "@class", "type", "@version", "@variables", "nets", "var_name", "ntypes", "dim_descrpt", "dim_out", "neuron",
    "resnet_dt", "numb_fparam", "numb_aparam", "dim_case_embd", "default_fparam", "rcond", "activation_function",
    "precision", "mixed_types", "exclude_types", "type_map", "tot_ener_zero", "trainable", "layer_name",
    "use_aparam_as_mask", "spin", "atom_ener", "seed",
}
_KNOWN_VARIABLES = {"bias_atom_e", "fparam_avg", "fparam_inv_std", "aparam_avg", "aparam_inv_std", "case_embd",
                    "default_fparam_tensor"}


class EnergyFitting(torch.nn.Module):
    remove_vacuum: List[bool]

    def __init__(self, node: Dict[str, Any], where: str = "model.fitting"):
        super().__init__()
        if node.get("@class", "Fitting") != "Fitting" or node.get("type", "ener") != "ener":
            raise UnsupportedModel(f"{where}: fitting @class {node.get('@class')!r} type {node.get('type')!r} is not "
                                   "supported; only energy models (fitting type 'ener') can be exported")
        check_version(node, where, 1, 4)
        unknown = sorted(set(node) - _KNOWN_OPTIONS)
        if unknown:
            raise UnsupportedModel(f"{where}: keys {unknown} are not ones deepmd-kit's energy fitting (@version ≤ 4) "
                                   "writes; export the model with the deepmd-kit release this project supports")
        refuse_unless(node, where, "dim_out", lambda v: v == 1, 1, "an energy fitting has one output per atom")
        refuse_unless(node, where, "spin", lambda v: v is None, None,
                      "deepmd-kit's fitting-level spin is not implemented (use a spin_ener model)")
        refuse_unless(node, where, "tot_ener_zero", lambda v: not v, False, "deepmd-kit does not implement it")
        refuse_unless(node, where, "layer_name", lambda v: v is None, None,
                      "shared fitting layers are TensorFlow-only; deepmd-kit's backend-neutral models do not have them")
        var = variables(node)
        unknown = sorted(set(var) - _KNOWN_VARIABLES)
        if unknown:
            raise UnsupportedModel(f"{where}.@variables: {unknown} are not variables of deepmd-kit's energy fitting")

        self.dtype = precision_dtype(node.get("precision", "float64"), where + ".precision")
        self.ntypes = int(require(node, where, "ntypes"))
        self.dim_descrpt = int(require(node, where, "dim_descrpt"))
        self.dim_fparam = int(node.get("numb_fparam", 0) or 0)
        self.dim_aparam = int(node.get("numb_aparam", 0) or 0)
        self.dim_case_embd = int(node.get("dim_case_embd", 0) or 0)
        self.use_aparam_as_mask = bool(node.get("use_aparam_as_mask", False))
        # use_aparam_as_mask: deepmd-kit then leaves aparam out of the net input (and uses it nowhere else).
        self.use_aparam = self.dim_aparam > 0 and not self.use_aparam_as_mask

        self.nets = NetworkCollection(require(node, where, "nets"), where + ".nets")
        self.mixed_types = bool(node.get("mixed_types", True))
        if self.nets.ndim != (0 if self.mixed_types else 1):
            raise UnsupportedModel(f"{where}: nets have ndim {self.nets.ndim} but mixed_types is {self.mixed_types}")
        if not all(self.nets.present):
            raise UnsupportedModel(f"{where}: a fitting net is missing (null) in the file")
        dim_in = self.dim_descrpt + self.dim_fparam + (self.dim_aparam if self.use_aparam else 0) + self.dim_case_embd
        for i, net in enumerate(self.nets.networks):
            if net.dim_in != dim_in or net.dim_out != 1:
                raise UnsupportedModel(f"{where}.nets.networks[{i}]: shape {net.dim_in}->{net.dim_out}, expected "
                                       f"{dim_in}->1 (descriptor {self.dim_descrpt} + fparam + aparam + case_embd)")

        bias = require(var, where + ".@variables", "bias_atom_e")
        if bias is None or np.size(bias) != self.ntypes:
            raise UnsupportedModel(f"{where}: bias_atom_e must have one entry per type ({self.ntypes})")
        # Stored in float64, used in the fitting's precision (deepmd-kit: asarray(dtype=outs.dtype)).
        self.register_buffer("bias_atom_e", tensor(np.reshape(bias, [-1]), self.dtype))

        def stat(name: str, size: int, fill: float) -> torch.Tensor:
            arr = var.get(name)
            if size == 0:
                return torch.zeros(0, dtype=self.dtype)
            if arr is None:
                arr = np.full([size], fill)
            if np.size(arr) != size:
                raise UnsupportedModel(f"{where}.@variables.{name}: {np.size(arr)} entries, expected {size}")
            return tensor(np.reshape(arr, [-1]), self.dtype)

        self.register_buffer("fparam_avg", stat("fparam_avg", self.dim_fparam, 0.0))
        self.register_buffer("fparam_inv_std", stat("fparam_inv_std", self.dim_fparam, 1.0))
        self.register_buffer("aparam_avg", stat("aparam_avg", self.dim_aparam, 0.0))
        self.register_buffer("aparam_inv_std", stat("aparam_inv_std", self.dim_aparam, 1.0))
        self.register_buffer("case_embd", stat("case_embd", self.dim_case_embd, 0.0))

        # default_fparam: the stored tensor (v4) wins over the option, as deepmd-kit's deserialize sets the
        # variable after the constructor built it from the option.
        default = var.get("default_fparam_tensor")
        if default is None and node.get("default_fparam") is not None:
            default = np.asarray(node["default_fparam"], dtype=np.float64)
        self.has_default_fparam = default is not None and self.dim_fparam > 0
        if self.has_default_fparam and np.size(default) != self.dim_fparam:
            raise UnsupportedModel(f"{where}: default_fparam has {np.size(default)} entries for numb_fparam "
                                   f"{self.dim_fparam}")
        self.register_buffer("default_fparam", tensor(np.reshape(default, [-1]) if self.has_default_fparam
                                                      else None, self.dtype))

        # atom_ener: deepmd-kit (dpmodel/pt) only uses which entries are non-null: for those types the net's
        # output on a zero descriptor (same fparam/aparam/case_embd) is subtracted (vacuum contribution).
        atom_ener = node.get("atom_ener")
        remove: List[bool] = []
        if atom_ener is not None and any(x is not None for x in atom_ener):
            remove = [x is not None for x in atom_ener]
            # Types beyond the list are also subtracted (deepmd-kit's `not (len > t and not remove[t])`).
            remove = remove + [True] * max(0, self.ntypes - len(remove))
        self.has_vacuum = len(remove) > 0
        self.remove_vacuum = remove

        exclude = [int(t) for t in node.get("exclude_types", []) or []]
        keep = torch.ones(self.ntypes, dtype=torch.bool)
        for t in exclude:
            if not 0 <= t < self.ntypes:
                raise UnsupportedModel(f"{where}: exclude_types entry {t} is not a type (ntypes {self.ntypes})")
            keep[t] = False
        self.register_buffer("type_keep", keep)

    def forward(self, descriptor: torch.Tensor, atype: torch.Tensor, fparam: Optional[torch.Tensor],
                aparam: Optional[torch.Tensor]) -> torch.Tensor:
        """descriptor [nf, nloc, d] (any float dtype), atype [nf, nloc] (< 0: virtual, output 0 from the
        model's mask; treated as type 0 here as deepmd-kit does), fparam [nf, nfp] or None (the default is
        used), aparam [nf, nloc, nap] or None. Returns atomic energies [nf, nloc] float64."""
        nf, nloc = descriptor.shape[0], descriptor.shape[1]
        atype = torch.where(atype >= 0, atype, torch.zeros_like(atype))
        parts: List[torch.Tensor] = []
        if self.dim_fparam > 0:
            if fparam is None:
                if not self.has_default_fparam:
                    raise RuntimeError("this model needs fparam (numb_fparam > 0 and no default_fparam)")
                fp = self.default_fparam.reshape(1, self.dim_fparam).expand(nf, -1)
            else:
                fp = fparam.to(self.dtype).reshape(nf, self.dim_fparam)
            fp = (fp - self.fparam_avg) * self.fparam_inv_std
            parts.append(fp.reshape(nf, 1, self.dim_fparam).expand(-1, nloc, -1))
        if self.use_aparam:
            if aparam is None:
                raise RuntimeError("this model needs aparam (numb_aparam > 0)")
            ap = aparam.to(self.dtype).reshape(nf, nloc, self.dim_aparam)
            parts.append((ap - self.aparam_avg) * self.aparam_inv_std)
        if self.dim_case_embd > 0:
            parts.append(self.case_embd.reshape(1, 1, -1).expand(nf, nloc, -1))
        x = descriptor.to(self.dtype)
        xx = torch.cat([x] + parts, dim=-1)
        x0 = torch.cat([torch.zeros_like(x)] + parts, dim=-1)  # the vacuum input (only used with atom_ener)

        if self.mixed_types:
            out = torch.zeros(nf, nloc, 1, dtype=self.dtype, device=descriptor.device)
            for net in self.nets.networks:
                out = net(xx)
                if self.has_vacuum:
                    out = out - net(x0)
        else:
            out = torch.zeros(nf, nloc, 1, dtype=self.dtype, device=descriptor.device)
            for t, net in enumerate(self.nets.networks):
                y = net(xx)
                if self.has_vacuum and self.remove_vacuum[t]:
                    y = y - net(x0)
                out = out + torch.where((atype == t).unsqueeze(-1), y, torch.zeros_like(y))
        out = out.squeeze(-1) + self.bias_atom_e[atype]
        out = torch.where(self.type_keep[atype], out, torch.zeros_like(out))
        return out.to(torch.float64)
