"""The two graphs of a spin model (deepmd/dpkit: `SpinEnergyModel`, deepmd-kit's spin_ener, virtual-atom
scheme): `compute(coord, atype, spin, nlist, mapping, plan, fparam, aparam, do_atomic_virial)` with
`spin` right after `atype`; outputs add `force_mag` = -dE/dS. The backbone sees real and virtual atoms
in the switched layout [real locals | virtual locals | real ghosts | virtual ghosts], whose ghost rows
`SpinExchangeGhosts` (ghosts.py) exchanges as [h_real | h_virtual] with the real atoms' plan."""

from typing import Dict, Optional

import torch


def virtual_margin(model: torch.nn.Module, atype: torch.Tensor, spins: torch.Tensor) -> float:
    """How far beyond rcut the real atoms' neighbour list must reach for complete spin lists: twice the
    largest virtual_scale[type] * |S| (a virtual centre's virtual neighbours, deepmd/dpkit/spin.py; the
    runtime's VirtualAtomMargin is the same)."""
    if spins.numel() == 0:
        return 0.0
    return 2.0 * float((model.virtual_scale[atype] * spins.norm(dim=-1)).max())


class SpinRegularGraph(torch.nn.Module):
    """One rank: ghosts (real and virtual) through the mapping. `spin` comes right after `atype`."""

    def __init__(self, model: torch.nn.Module):
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

    def __init__(self, model: torch.nn.Module):
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
