"""The two graphs exported from a model (docs/model_archive.md §2).

A model (deepmd/dpkit: `StandardModel`) exposes `compute(coord, atype, nlist, mapping, plan, fparam, aparam,
do_atomic_virial)`; `RegularGraph` (method `forward_lower`, ghosts through the mapping) and
`WithCommGraph` (method `forward_lower_with_comm`, ghosts through the exchange op) wrap the same model
with a different ghost filler and nothing else."""

from typing import Dict, Optional

import torch

from deepmd.models.ghosts import ExchangeGhosts, MappingGhosts, SpinExchangeGhosts


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

    def __init__(self, model: torch.nn.Module):
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

    def __init__(self, model: torch.nn.Module):
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
