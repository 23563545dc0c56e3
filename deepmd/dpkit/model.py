"""deepmd-kit's standard energy model (`Model` type `standard`, @version 2; MATH.md C1-C8, F9) as a
TorchScript-able module with the graph interface of docs/model_archive.md (`compute`).

Order of the neighbour-list steps is deepmd-kit's build_neighbor_list (what produced the references):
sort by distance, −1 beyond rcut, truncate to sum(sel), per-type sections (se_e2_a), then the model's
pair_exclude_types (exclusion after truncation: an excluded neighbour still takes a slot)."""

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from deepmd.dpkit import env
from deepmd.dpkit.fitting import EnergyFitting
from deepmd.dpkit.serialization import UnsupportedModel, check_version, require, variables

_KNOWN_OPTIONS = {"@class", "type", "@version", "@variables", "type_map", "descriptor", "fitting",
                  "atom_exclude_types", "pair_exclude_types", "rcond", "preset_out_bias", "data_stat_protect"}

_OTHER_MODELS = {
    "linear_ener": "a linear combination of models",
    "zbl": "a DP + ZBL model",
    "pairtab": "a pair-table model",
    "linear": "a linear combination of models",
}


def check_standard(node: Dict[str, Any], where: str) -> None:
    kind = node.get("type", "standard")
    if kind in _OTHER_MODELS:
        raise UnsupportedModel(f"{where}: model type {kind!r} ({_OTHER_MODELS[kind]}) is not supported; only "
                               "standard energy models (and spin_ener) can be exported")
    if kind != "standard":
        raise UnsupportedModel(f"{where}: model type {kind!r} is not supported (standard, spin_ener)")
    if node.get("@class", "Model") != "Model":
        raise UnsupportedModel(f"{where}: @class {node.get('@class')!r} is not a deepmd-kit Model")


class StandardModel(torch.nn.Module):
    def __init__(self, node: Dict[str, Any], where: str = "model"):
        super().__init__()
        from deepmd.dpkit.build import descriptor_from_dict  # build imports this module

        check_standard(node, where)
        check_version(node, where, 2, 2)
        unknown = sorted(set(node) - _KNOWN_OPTIONS)
        if unknown:
            raise UnsupportedModel(f"{where}: keys {unknown} are not ones deepmd-kit's standard model (@version 2) "
                                   "writes")
        self.type_map: List[str] = [str(t) for t in require(node, where, "type_map")]
        ntypes = len(self.type_map)
        self.descriptor = descriptor_from_dict(require(node, where, "descriptor"), ntypes, where + ".descriptor")
        self.fitting = EnergyFitting(require(node, where, "fitting"), where + ".fitting")
        if self.fitting.ntypes != ntypes:
            raise UnsupportedModel(f"{where}.fitting: ntypes {self.fitting.ntypes} differs from the type_map ({ntypes})")
        if self.fitting.dim_descrpt != self.descriptor.dim_out:
            raise UnsupportedModel(f"{where}.fitting: dim_descrpt {self.fitting.dim_descrpt} differs from the "
                                   f"descriptor's output width {self.descriptor.dim_out}")
        self.rcut = float(self.descriptor.rcut)
        self.descriptor_sel: List[int] = [int(s) for s in self.descriptor.sel]
        self.nsel = sum(self.descriptor_sel)
        self.sel: List[int] = [self.nsel]
        self.mixed_types = bool(self.descriptor.mixed_types)
        self.dim_fparam = self.fitting.dim_fparam
        self.dim_aparam = self.fitting.dim_aparam
        self.has_default_fparam = self.fitting.has_default_fparam
        self.descriptor_dtype = self.descriptor.dtype

        out_bias = variables(node).get("out_bias")
        if out_bias is None:
            out_bias = np.zeros([1, ntypes, 1])
        if list(np.shape(out_bias)) != [1, ntypes, 1]:
            raise UnsupportedModel(f"{where}.@variables.out_bias: shape {np.shape(out_bias)}, expected [1, {ntypes}, 1]")
        # Added to the float64 fitting output (apply_out_stat); out_std is not applied to energies.
        self.register_buffer("out_bias", torch.from_numpy(np.asarray(out_bias, dtype=np.float64).copy()))

        pairs = [[int(a), int(b)] for a, b in node.get("pair_exclude_types", []) or []]
        atoms = [int(t) for t in node.get("atom_exclude_types", []) or []]
        for t in [t for p in pairs for t in p] + atoms:
            if not 0 <= t < ntypes:
                raise UnsupportedModel(f"{where}: exclusion type {t} is not a type of the type_map ({ntypes} types)")
        self.has_pair_exclude = len(pairs) > 0
        self.register_buffer("pair_table", env.pair_allowed_table(ntypes, pairs))
        keep = torch.ones(ntypes, dtype=torch.bool)
        for t in atoms:
            keep[t] = False
        self.register_buffer("atom_keep", keep)
        # deepmd-kit's DPAtomicModel re-initialises the fitting's exclude_types with the model's
        # atom_exclude_types (the fitting's own list in the file is overridden).
        self.fitting.type_keep.copy_(keep)

    def formatted_nlist(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor) -> torch.Tensor:
        """The list the descriptor gets: virtual atoms (type < 0) removed as neighbours and given empty rows
        (deepmd-kit's neighbour-list contract), deepmd-kit's sort/truncate/sections, then pair exclusion."""
        nf, nloc, nnei = nlist.shape[0], nlist.shape[1], nlist.shape[2]
        safe = torch.where(nlist >= 0, nlist, torch.zeros_like(nlist))
        real_nei = torch.gather(atype, 1, safe.reshape(nf, nloc * nnei)).reshape(nf, nloc, nnei) >= 0
        real_centre = (atype[:, :nloc] >= 0).unsqueeze(-1)
        nlist = torch.where(real_nei & real_centre & (nlist >= 0), nlist, torch.full_like(nlist, -1))
        nlist = env.format_nlist(coord, nlist, self.rcut, self.nsel)
        if not self.mixed_types:
            nlist = env.distinguish_types(nlist, atype, self.descriptor_sel)
        if self.has_pair_exclude:
            nlist = env.exclude_pairs(nlist, atype, self.pair_table)
        return nlist

    def atomic_energies(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                        mapping: Optional[torch.Tensor], plan: Optional[torch.Tensor], fparam: Optional[torch.Tensor],
                        aparam: Optional[torch.Tensor]) -> torch.Tensor:
        """Energies of the local atoms [nf, nloc] float64 (out_bias included, excluded and virtual atoms 0),
        differentiable in the float64 coord."""
        nloc = nlist.shape[1]
        nlist = self.formatted_nlist(coord, atype, nlist)
        descriptor = self.descriptor(coord.to(self.descriptor_dtype), atype, nlist, mapping, plan)
        atype_local = atype[:, :nloc]
        energy = self.fitting(descriptor.to(torch.float64), atype_local, fparam, aparam)
        t = torch.where(atype_local >= 0, atype_local, torch.zeros_like(atype_local))
        energy = energy + self.out_bias[0, :, 0][t]
        keep = (atype_local >= 0) & self.atom_keep[t]
        return torch.where(keep, energy, torch.zeros_like(energy))

    def compute(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor, mapping: Optional[torch.Tensor],
                plan: Optional[torch.Tensor], fparam: Optional[torch.Tensor], aparam: Optional[torch.Tensor],
                do_atomic_virial: bool) -> Dict[str, torch.Tensor]:
        nf, nall, nloc = coord.shape[0], coord.shape[1], nlist.shape[1]
        coord = coord.to(torch.float64).detach().requires_grad_(True)
        atom_energy = self.atomic_energies(coord, atype, nlist, mapping, plan, fparam, aparam)
        energy = atom_energy.sum(dim=1, keepdim=True)
        grad = torch.autograd.grad([energy.sum()], [coord], retain_graph=do_atomic_virial)[0]
        if grad is None:
            grad = torch.zeros_like(coord)
        force = -grad
        r = coord.detach()
        # F_j ⊗ r_j, index [3a + b] = F_a r_b; summed over extended atoms it is the virial.
        f_r = force.unsqueeze(-1) * r.unsqueeze(-2)
        out: Dict[str, torch.Tensor] = {
            "energy": energy.detach(),
            "atom_energy": atom_energy.detach().unsqueeze(-1),
            "force": force.detach(),
            "virial": f_r.sum(dim=1).reshape(nf, 9).detach(),
        }
        if do_atomic_virial:
            # deepmd-kit's atomic-virial correction: corr_j[m][d] = Σ_i r_{i,d} ∂E_i/∂r_{j,m} (r_i local
            # centres, detached), so av_j = Σ_i (−∂E_i/∂r_j) ⊗ (r_j − r_i); one backward pass per d.
            centre = r[:, :nloc, :]
            columns: List[torch.Tensor] = []
            for d in range(3):
                g = torch.autograd.grad([(atom_energy * centre[:, :, d]).sum()], [coord], retain_graph=d < 2)[0]
                if g is None:
                    g = torch.zeros_like(coord)
                columns.append(g)
            corr = torch.stack(columns, dim=-1)  # [nf, nall, m, d]
            out["atom_virial"] = (f_r + corr).reshape(nf, nall, 9).detach()
        return out
