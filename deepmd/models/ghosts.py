"""The one step that differs between the two exported graphs: filling ghost atoms' node embeddings
before a message-passing layer. Both take local embeddings [nf, nloc, F] and return [nf, nall, F]."""

from typing import Optional

import torch


class MappingGhosts(torch.nn.Module):
    """Regular graph (one rank): each extended atom takes the row of its local owner (mapping)."""

    def forward(self, node: torch.Tensor, nall: int, mapping: Optional[torch.Tensor],
                plan: Optional[torch.Tensor]) -> torch.Tensor:
        if mapping is None:
            raise RuntimeError("the regular graph needs the ghost -> owner mapping")
        return torch.gather(node, 1, mapping.unsqueeze(-1).expand(-1, -1, node.shape[2]))


def _check_exchange(node: torch.Tensor, plan: Optional[torch.Tensor]) -> torch.Tensor:
    if plan is None:
        raise RuntimeError("the with-comm graph needs the ghost-exchange plan")
    if node.shape[0] != 1:
        raise RuntimeError("the with-comm graph evaluates one frame at a time")
    return plan


def _exchange(plan: torch.Tensor, rows: torch.Tensor, nall: int) -> torch.Tensor:
    """The owned rows [nloc, F] with their ghosts appended [nall, F] (the op pads: no copy here)."""
    out = torch.ops.deepmd_comm.exchange_ghosts(plan, rows)
    if out.shape[0] != nall:
        raise RuntimeError("the ghost-exchange plan has " + str(out.shape[0]) + " rows but the graph expects nall = "
                           + str(nall))
    return out


class ExchangeGhosts(torch.nn.Module):
    """With-comm graph (several ranks): ghost rows come from their owners through the
    deepmd_comm::exchange_ghosts op, driven by the ghost-exchange plan (one frame)."""

    def forward(self, node: torch.Tensor, nall: int, mapping: Optional[torch.Tensor],
                plan: Optional[torch.Tensor]) -> torch.Tensor:
        plan = _check_exchange(node, plan)
        return _exchange(plan, node[0], nall).unsqueeze(0)


class SpinExchangeGhosts(torch.nn.Module):
    """With-comm graph of a spin model. Its descriptors see real and virtual atoms in the switched
    layout [real locals | virtual locals | real ghosts | virtual ghosts]; an atom's real and virtual
    embeddings travel together in one row [h_real | h_virtual], so the real atoms' plan serves."""

    def forward(self, node: torch.Tensor, nall: int, mapping: Optional[torch.Tensor],
                plan: Optional[torch.Tensor]) -> torch.Tensor:
        plan = _check_exchange(node, plan)
        nloc, nall_real, width = node.shape[1] // 2, nall // 2, node.shape[2]
        rows = torch.cat([node[0, :nloc], node[0, nloc:]], dim=1)  # [nloc, 2F]
        out = _exchange(plan, rows, nall_real)
        real, virtual = out[:, :width], out[:, width:]
        return torch.cat([real[:nloc], virtual[:nloc], real[nloc:], virtual[nloc:]], dim=0).unsqueeze(0)
