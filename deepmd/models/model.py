"""Energy model and the two graphs exported from it (contracts §2).

`EnergyModel.compute` is the whole model; `RegularGraph` (method `forward_lower`, ghosts through the
mapping) and `WithCommGraph` (method `forward_lower_with_comm`, ghosts through the exchange op) wrap the
same model with a different ghost filler and nothing else."""

from typing import Dict, List, Optional

import torch

from deepmd.models.ghosts import ExchangeGhosts, MappingGhosts, SpinExchangeGhosts


class EnergyModel(torch.nn.Module):
    def __init__(self, descriptor: torch.nn.Module, fitting: torch.nn.Module, type_map: List[str], rcut: float,
                 sel: List[int]):
        super().__init__()
        self.descriptor = descriptor
        self.fitting = fitting
        self.type_map = type_map
        self.rcut = rcut
        self.sel = sel

    def atomic_energies(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                        mapping: Optional[torch.Tensor], plan: Optional[torch.Tensor], fparam: Optional[torch.Tensor],
                        aparam: Optional[torch.Tensor]) -> torch.Tensor:
        """Energies of the local atoms [nf, nloc], float64, differentiable in the float64 coord.
        A float32 model computes in float32 inside; autograd carries forces back through the cast."""
        dtype = self.fitting.bias.dtype
        if fparam is not None:
            fparam = fparam.to(dtype)
        if aparam is not None:
            aparam = aparam.to(dtype)
        descriptor = self.descriptor(coord.to(dtype), atype, nlist, mapping, plan)
        return self.fitting(descriptor, atype[:, : nlist.shape[1]], fparam, aparam).to(torch.float64)

    def compute(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor, mapping: Optional[torch.Tensor],
                plan: Optional[torch.Tensor], fparam: Optional[torch.Tensor], aparam: Optional[torch.Tensor],
                do_atomic_virial: bool) -> Dict[str, torch.Tensor]:
        nf, nall = coord.shape[0], coord.shape[1]
        coord = coord.to(torch.float64).detach().requires_grad_(True)
        atom_energy = self.atomic_energies(coord, atype, nlist, mapping, plan, fparam, aparam)
        energy = atom_energy.sum(dim=1, keepdim=True)
        grad = torch.autograd.grad([energy.sum()], [coord])[0]
        if grad is None:
            grad = torch.zeros_like(coord)
        force = -grad
        # atom_virial[a*3+b] = F_a r_b: summed over extended atoms it is -dE/d(strain) (docs/model_archive.md).
        atom_virial = (force.unsqueeze(-1) * coord.detach().unsqueeze(-2)).reshape(nf, nall, 9)
        out: Dict[str, torch.Tensor] = {
            "energy": energy.detach(),
            "atom_energy": atom_energy.detach().unsqueeze(-1),
            "force": force.detach(),
            "virial": atom_virial.sum(dim=1),
        }
        if do_atomic_virial:
            out["atom_virial"] = atom_virial
        return out


def set_ghost_filler(model: torch.nn.Module, with_comm: bool) -> None:
    """Installs the ghost filler of one graph in every descriptor of the model."""
    spin = bool(getattr(model, "is_spin", False))
    for module in model.modules():
        if hasattr(module, "ghosts") and isinstance(module.ghosts, (MappingGhosts, ExchangeGhosts, SpinExchangeGhosts)):
            if not with_comm:
                module.ghosts = MappingGhosts()
            else:
                module.ghosts = SpinExchangeGhosts() if spin else ExchangeGhosts()


class RegularGraph(torch.nn.Module):
    """One rank: ghost embeddings are gathered from their local owners through `mapping`."""

    def __init__(self, model: EnergyModel):
        super().__init__()
        set_ghost_filler(model, with_comm=False)
        self.model = model

    @torch.jit.export
    def forward_lower(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                      mapping: Optional[torch.Tensor], fparam: Optional[torch.Tensor],
                      aparam: Optional[torch.Tensor], do_atomic_virial: bool) -> Dict[str, torch.Tensor]:
        return self.model.compute(coord, atype, nlist, mapping, None, fparam, aparam, do_atomic_virial)

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                mapping: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.forward_lower(coord, atype, nlist, mapping, None, None, True)


class WithCommGraph(torch.nn.Module):
    """Several ranks: ghost embeddings are exchanged before every layer (deepmd_comm ops); one frame."""

    def __init__(self, model: EnergyModel):
        super().__init__()
        set_ghost_filler(model, with_comm=True)
        self.model = model

    @torch.jit.export
    def forward_lower_with_comm(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                                fparam: Optional[torch.Tensor], aparam: Optional[torch.Tensor],
                                do_atomic_virial: bool, plan: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.model.compute(coord, atype, nlist, None, plan, fparam, aparam, do_atomic_virial)

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                plan: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.forward_lower_with_comm(coord, atype, nlist, None, None, True, plan)
