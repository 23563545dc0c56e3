"""deepmd-kit's spin energy model (`type: spin_ener`; MATH.md S1-S7; deepmd-kit's dpmodel/model/spin_model.py,
deepmd/utils/spin.py, pt_expt/model/transform_output.py) on this project's StandardModel.

Every atom i of real type t gets a virtual atom at r_i + virtual_scale[t]·use_spin[t]·S_i of type t + ntypes
(for types without spin it sits on the real atom; the backbone's stored exclusions drop its pairs and its
energy). The backbone sees the doubled system in the switched layout [real locals | virtual locals | real
ghosts | virtual ghosts] (deepmd.models.ghosts.SpinExchangeGhosts relies on it).

Neighbour list: deepmd-kit's reference path builds the list on the doubled system (every real or virtual atom
within rcut of the centre, distance-sorted with ties in extended-index order, truncated to sel, then the pair
exclusion, which leaves holes). The candidate rows here are, for the real centre i, [virtual i, real
neighbours, virtual neighbours] and for the virtual centre i, [real i, real neighbours, virtual neighbours];
the backbone sorts them stably, so a real atom precedes its coinciding virtual atom, as in deepmd-kit. The
real rows given must reach rcut + 2·max(virtual_scale·|S|) (a virtual centre's virtual neighbours) for the
lists to be complete.

Derivatives, spins held fixed: force = −∂E/∂r (the real atom's total: its own and its virtual atom's part),
force_mag = −∂E/∂S = virtual_scale·F_virtual, virial Σ_j F_j ⊗ r_j, and deepmd-kit's atomic virial
av_j = F_j ⊗ r_j + Σ_i r_i ⊗ ∂E_i/∂r_j. In deepmd-kit's terms that is the virtual atom's atomic virial
(with its F_virtual ⊗ (−virtual_scale·S) coordinate correction) added to its real atom's."""

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from deepmd.dpkit.model import StandardModel
from deepmd.dpkit.serialization import UnsupportedModel, require


def _use_spin(value: Any, type_map: List[str], where: str) -> List[bool]:
    """deepmd-kit's normalize_spin_use_spin: a per-type bool list, a list of type indices or of element names."""
    if not isinstance(value, (list, tuple)):
        raise UnsupportedModel(f"{where}: use_spin {value!r} is not a list")
    values = list(value)
    if values and isinstance(values[0], str):
        unknown = [v for v in values if v not in type_map]
        if unknown:
            raise UnsupportedModel(f"{where}: use_spin names {unknown}, not in the type_map {type_map}")
        values = [type_map.index(v) for v in values]
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        if len(values) != len(type_map):
            raise UnsupportedModel(f"{where}: use_spin has {len(values)} entries for {len(type_map)} real types")
        return [bool(v) for v in values]
    flags = [False] * len(type_map)
    for v in values:
        if not 0 <= int(v) < len(type_map):
            raise UnsupportedModel(f"{where}: use_spin index {v} is not a type of {type_map}")
        flags[int(v)] = True
    return flags


def _virtual_scale(value: Any, use_spin: List[bool], where: str) -> List[float]:
    """deepmd-kit's Spin: one value per real type, one per spin type, or one float for all."""
    n = len(use_spin)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)] * n
    if not isinstance(value, (list, tuple)):
        raise UnsupportedModel(f"{where}: virtual_scale {value!r} is neither a list nor a number")
    if len(value) == n:
        return [float(v) for v in value]
    if len(value) == sum(use_spin):
        it = iter(value)
        return [float(next(it)) if u else 0.0 for u in use_spin]
    raise UnsupportedModel(f"{where}: virtual_scale has {len(value)} entries; expected {n} (real types) or "
                           f"{sum(use_spin)} (types with spin)")


class SpinEnergyModel(torch.nn.Module):
    use_spin: List[bool]
    type_map: List[str]

    def __init__(self, node: Dict[str, Any], where: str = "model"):
        super().__init__()
        if node.get("type") != "spin_ener":
            raise UnsupportedModel(f"{where}: type {node.get('type')!r} is not spin_ener")
        unknown = sorted(set(node) - {"type", "backbone_model", "spin", "@class", "@version"})
        if unknown:
            raise UnsupportedModel(f"{where}: keys {unknown} are not ones deepmd-kit's spin model writes")
        spin = require(node, where, "spin")
        if not isinstance(spin, dict):
            raise UnsupportedModel(f"{where}.spin: not a dict")
        extra = sorted(set(spin) - {"use_spin", "virtual_scale", "allow_missing_label"})
        if extra:
            raise UnsupportedModel(f"{where}.spin: keys {extra} are not ones deepmd-kit's Spin has")
        self.backbone = StandardModel(require(node, where, "backbone_model"), where + ".backbone_model")
        full_map = list(self.backbone.type_map)
        if len(full_map) % 2 != 0:
            raise UnsupportedModel(f"{where}.backbone_model: type_map {full_map} has an odd number of types; a spin "
                                   "backbone has the real types and their virtual (X_spin) types")
        ntypes = len(full_map) // 2
        self.type_map = [str(t) for t in full_map[:ntypes]]
        self.ntypes = ntypes
        self.use_spin = _use_spin(require(spin, where + ".spin", "use_spin"), self.type_map, where + ".spin")
        scale = _virtual_scale(require(spin, where + ".spin", "virtual_scale"), self.use_spin, where + ".spin")
        self.rcut = self.backbone.rcut
        self.sel = self.backbone.sel
        self.is_spin = True
        # virtual_scale_mask of deepmd-kit: the scale for types with spin, 0 for the others.
        self.register_buffer("virtual_scale", torch.tensor([s if u else 0.0 for s, u in zip(scale, self.use_spin)],
                                                           dtype=torch.float64))

    def _switched(self, real: torch.Tensor, virtual: torch.Tensor, nloc: int) -> torch.Tensor:
        return torch.cat([real[:, :nloc], virtual[:, :nloc], real[:, nloc:], virtual[:, nloc:]], dim=1)

    def doubled_nlist(self, nlist: torch.Tensor, nloc: int, nall: int) -> torch.Tensor:
        """Candidate rows of the doubled system (switched layout) from the real atoms' rows."""
        nf, nnei = nlist.shape[0], nlist.shape[2]
        j = torch.arange(nall, dtype=nlist.dtype, device=nlist.device)
        real_index = torch.where(j < nloc, j, j + nloc)
        virtual_index = torch.where(j < nloc, j + nloc, j + nall)
        valid = nlist >= 0
        safe = torch.where(valid, nlist, torch.zeros_like(nlist))
        empty = torch.full_like(nlist, -1)
        real_nei = torch.where(valid, real_index[safe], empty)
        virtual_nei = torch.where(valid, virtual_index[safe], empty)
        i = torch.arange(nloc, dtype=nlist.dtype, device=nlist.device).reshape(1, nloc, 1).expand(nf, nloc, 1)
        rows_real = torch.cat([i + nloc, real_nei, virtual_nei], dim=2)
        rows_virtual = torch.cat([i, real_nei, virtual_nei], dim=2)
        return torch.cat([rows_real, rows_virtual], dim=1)  # [nf, 2 nloc, 1 + 2 nnei]

    def compute(self, coord: torch.Tensor, atype: torch.Tensor, spin: torch.Tensor, nlist: torch.Tensor,
                mapping: Optional[torch.Tensor], plan: Optional[torch.Tensor], fparam: Optional[torch.Tensor],
                aparam: Optional[torch.Tensor], do_atomic_virial: bool) -> Dict[str, torch.Tensor]:
        nf, nall, nloc = coord.shape[0], coord.shape[1], nlist.shape[1]
        coord = coord.to(torch.float64).detach().requires_grad_(True)
        spin = spin.to(torch.float64).detach().requires_grad_(True)
        real = atype >= 0
        t = torch.where(real, atype, torch.zeros_like(atype))
        scale = torch.where(real, self.virtual_scale[t], torch.zeros_like(self.virtual_scale[t]))
        virtual_coord = coord + spin * scale.unsqueeze(-1)
        ext_coord = self._switched(coord, virtual_coord, nloc)
        ext_type = self._switched(atype, torch.where(real, atype + self.ntypes, atype), nloc)
        ext_nlist = self.doubled_nlist(nlist, nloc, nall)
        ext_mapping: Optional[torch.Tensor] = None
        if mapping is not None:
            ext_mapping = self._switched(mapping, mapping + nloc, nloc)
        ext_aparam: Optional[torch.Tensor] = None
        if aparam is not None:
            # deepmd-kit's expand_aparam: zeros for the virtual atoms (whose energies are excluded).
            ext_aparam = torch.cat([aparam, torch.zeros_like(aparam)], dim=1)
        atom_energy = self.backbone.atomic_energies(ext_coord, ext_type, ext_nlist, ext_mapping, plan, fparam,
                                                    ext_aparam)[:, :nloc]  # real atoms (virtual ones are 0)
        energy = atom_energy.sum(dim=1, keepdim=True)
        grads = torch.autograd.grad([energy.sum()], [coord, spin], retain_graph=do_atomic_virial, allow_unused=True)
        g_coord, g_spin = grads[0], grads[1]
        force = -g_coord if g_coord is not None else torch.zeros_like(coord)
        force_mag = -g_spin if g_spin is not None else torch.zeros_like(spin)
        r = coord.detach()
        f_r = force.unsqueeze(-1) * r.unsqueeze(-2)  # [3a + b] = F_a r_b
        out: Dict[str, torch.Tensor] = {
            "energy": energy.detach(),
            "atom_energy": atom_energy.detach().unsqueeze(-1),
            "force": force.detach(),
            "force_mag": force_mag.detach(),
            "virial": f_r.sum(dim=1).reshape(nf, 9).detach(),
        }
        if do_atomic_virial:
            centre = r[:, :nloc, :]
            columns: List[torch.Tensor] = []
            for d in range(3):
                g = torch.autograd.grad([(atom_energy * centre[:, :, d]).sum()], [coord], retain_graph=d < 2,
                                        allow_unused=True)[0]
                columns.append(g if g is not None else torch.zeros_like(coord))
            corr = torch.stack(columns, dim=-1)  # [nf, nall, m, d] = Σ_i ∂E_i/∂r_{j,m} r_{i,d}
            out["atom_virial"] = (f_r.detach() + corr).reshape(nf, nall, 9).detach()
        return out
