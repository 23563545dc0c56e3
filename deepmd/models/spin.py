"""Spin models, virtual-atom scheme (deepmd-kit's "deepspin"): each atom of a type with spin gets a
virtual atom at r + virtual_scale[type] * S, of type type + ntypes. The backbone model sees real and
virtual atoms in the switched layout [real locals | virtual locals | real ghosts | virtual ghosts].

Outputs add `force_mag` = -dE/dS; `force` is the total force on the real atom (real + virtual parts,
by the chain rule), and the virial holds spins fixed under strain."""

from typing import Dict, List, Optional

import torch

from deepmd.models.model import EnergyModel


class SpinModel(torch.nn.Module):
    def __init__(self, backbone: EnergyModel, type_map: List[str], use_spin: List[bool],
                 virtual_scale: List[float]):
        super().__init__()
        ntypes = len(type_map)
        if len(use_spin) != ntypes or len(virtual_scale) != ntypes:
            raise ValueError("spin: use_spin and virtual_scale need one entry per type")
        self.backbone = backbone
        self.type_map = type_map
        self.ntypes = ntypes
        self.rcut = backbone.rcut
        self.sel = backbone.sel
        self.is_spin = True
        self.use_spin = use_spin
        self.register_buffer("virtual_scale", torch.tensor(
            [s if u else 0.0 for s, u in zip(virtual_scale, use_spin)], dtype=torch.float64))
        self.register_buffer("has_spin", torch.tensor(use_spin, dtype=torch.bool))

    def _switched(self, real: torch.Tensor, virtual: torch.Tensor, nloc: int) -> torch.Tensor:
        return torch.cat([real[:, :nloc], virtual[:, :nloc], real[:, nloc:], virtual[:, nloc:]], dim=1)

    def compute(self, coord: torch.Tensor, atype: torch.Tensor, spin: torch.Tensor, nlist: torch.Tensor,
                mapping: Optional[torch.Tensor], plan: Optional[torch.Tensor], fparam: Optional[torch.Tensor],
                aparam: Optional[torch.Tensor], do_atomic_virial: bool) -> Dict[str, torch.Tensor]:
        nf, nall, nloc, nnei = coord.shape[0], coord.shape[1], nlist.shape[1], nlist.shape[2]
        coord = coord.to(torch.float64).detach().requires_grad_(True)
        spin = spin.to(torch.float64).detach().requires_grad_(True)
        virtual_coord = coord + spin * self.virtual_scale[atype].unsqueeze(-1)
        ext_coord = self._switched(coord, virtual_coord, nloc)
        ext_type = self._switched(atype, atype + self.ntypes, nloc)
        # Index of real atom j and of its virtual atom in the switched layout; virtual atoms of types
        # without spin sit on their real atom and are left out of every neighbour list.
        j = torch.arange(nall, device=coord.device)
        real_index = torch.where(j < nloc, j, j + nloc)
        virtual_index = torch.where(j < nloc, j + nloc, j + nall)
        spin_type = self.has_spin[atype]  # [nf, nall]
        valid = nlist >= 0
        safe = torch.where(valid, nlist, torch.zeros_like(nlist))
        real_nei = torch.where(valid, real_index[safe], nlist)
        virtual_ok = valid & torch.gather(spin_type, 1, safe.reshape(nf, -1)).reshape(nf, nloc, nnei)
        virtual_nei = torch.where(virtual_ok, virtual_index[safe], torch.full_like(nlist, -1))
        i = torch.arange(nloc, device=coord.device)
        local_spin = spin_type[:, :nloc]
        self_virtual = torch.where(local_spin, (i + nloc).unsqueeze(0).expand(nf, -1), torch.full_like(local_spin, -1, dtype=torch.long))
        self_real = torch.where(local_spin, i.unsqueeze(0).expand(nf, -1), torch.full_like(local_spin, -1, dtype=torch.long))
        rows_real = torch.cat([self_virtual.unsqueeze(-1), real_nei, virtual_nei], dim=2)
        rows_virtual = torch.cat([self_real.unsqueeze(-1), real_nei, virtual_nei], dim=2)
        ext_nlist = torch.cat([rows_real, rows_virtual], dim=1)  # [nf, 2 nloc, 1 + 2 nnei]
        ext_mapping: Optional[torch.Tensor] = None
        if mapping is not None:
            ext_mapping = self._switched(mapping, mapping + nloc, nloc)
        ext_aparam: Optional[torch.Tensor] = None
        if aparam is not None:
            ext_aparam = torch.cat([aparam, aparam], dim=1)
        atom_energy = self.backbone.atomic_energies(ext_coord, ext_type, ext_nlist, ext_mapping, plan, fparam,
                                                    ext_aparam)[:, :nloc]  # real atoms only
        energy = atom_energy.sum(dim=1, keepdim=True)
        grads = torch.autograd.grad([energy.sum()], [coord, spin], allow_unused=True)
        g_coord, g_spin = grads[0], grads[1]
        force = -g_coord if g_coord is not None else torch.zeros_like(coord)
        force_mag = -g_spin if g_spin is not None else torch.zeros_like(spin)
        atom_virial = (force.unsqueeze(-1) * coord.detach().unsqueeze(-2)).reshape(nf, nall, 9)
        out: Dict[str, torch.Tensor] = {
            "energy": energy.detach(),
            "atom_energy": atom_energy.detach().unsqueeze(-1),
            "force": force.detach(),
            "force_mag": force_mag.detach(),
            "virial": atom_virial.sum(dim=1),
        }
        if do_atomic_virial:
            out["atom_virial"] = atom_virial
        return out


def virtual_margin(model: SpinModel, atype: torch.Tensor, spins: torch.Tensor) -> float:
    """How far beyond rcut a neighbour list must reach so that every virtual atom within rcut of a
    centre is found through its real atom: the largest virtual_scale[type] * |S|."""
    if spins.numel() == 0:
        return 0.0
    return float((model.virtual_scale[atype] * spins.norm(dim=-1)).max())


class SpinRegularGraph(torch.nn.Module):
    """One rank: ghosts (real and virtual) through the mapping. `spin` comes right after `atype`."""

    def __init__(self, model: SpinModel):
        super().__init__()
        from deepmd.models.model import set_ghost_filler
        set_ghost_filler(model, with_comm=False)
        self.model = model

    @torch.jit.export
    def forward_lower(self, coord: torch.Tensor, atype: torch.Tensor, spin: torch.Tensor, nlist: torch.Tensor,
                      mapping: Optional[torch.Tensor], fparam: Optional[torch.Tensor],
                      aparam: Optional[torch.Tensor], do_atomic_virial: bool) -> Dict[str, torch.Tensor]:
        return self.model.compute(coord, atype, spin, nlist, mapping, None, fparam, aparam, do_atomic_virial)

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, spin: torch.Tensor, nlist: torch.Tensor,
                mapping: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.forward_lower(coord, atype, spin, nlist, mapping, None, None, True)


class SpinWithCommGraph(torch.nn.Module):
    """Several ranks: real and virtual embeddings exchanged together with the real atoms' plan."""

    def __init__(self, model: SpinModel):
        super().__init__()
        from deepmd.models.model import set_ghost_filler
        set_ghost_filler(model, with_comm=True)
        self.model = model

    @torch.jit.export
    def forward_lower_with_comm(self, coord: torch.Tensor, atype: torch.Tensor, spin: torch.Tensor,
                                nlist: torch.Tensor, fparam: Optional[torch.Tensor], aparam: Optional[torch.Tensor],
                                do_atomic_virial: bool, plan: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.model.compute(coord, atype, spin, nlist, None, plan, fparam, aparam, do_atomic_virial)

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, spin: torch.Tensor, nlist: torch.Tensor,
                plan: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.forward_lower_with_comm(coord, atype, spin, nlist, None, None, True, plan)
