"""Per-type energy fitting: atom energy = MLP_type(descriptor [, fparam, aparam]) + bias_type."""

from typing import List, Optional

import torch

from deepmd.models.common import MLP


class EnergyFitting(torch.nn.Module):
    def __init__(self, ntypes: int, dim_descriptor: int, neuron: List[int], dim_fparam: int, dim_aparam: int,
                 bias: List[float], scale: float, seed: int, dtype: torch.dtype):
        super().__init__()
        self.dim_fparam, self.dim_aparam = dim_fparam, dim_aparam
        dims = [dim_descriptor + dim_fparam + dim_aparam] + neuron + [1]
        self.nets = torch.nn.ModuleList([MLP(dims, seed + 100 + t, dtype, activate_last=False)
                                         for t in range(ntypes)])
        self.register_buffer("bias", torch.tensor(bias, dtype=dtype))
        self.scale = scale  # sets the size of energies and forces (eV, eV/A) of a freshly seeded model

    def forward(self, descriptor: torch.Tensor, atype_local: torch.Tensor, fparam: Optional[torch.Tensor],
                aparam: Optional[torch.Tensor]) -> torch.Tensor:
        nf, nloc = descriptor.shape[0], descriptor.shape[1]
        x = descriptor
        if self.dim_fparam > 0:
            if fparam is None:
                raise RuntimeError("this model needs fparam")
            x = torch.cat([x, fparam.reshape(nf, 1, self.dim_fparam).expand(-1, nloc, -1)], dim=-1)
        if self.dim_aparam > 0:
            if aparam is None:
                raise RuntimeError("this model needs aparam")
            x = torch.cat([x, aparam.reshape(nf, nloc, self.dim_aparam)], dim=-1)
        energy = torch.zeros(nf, nloc, dtype=descriptor.dtype, device=descriptor.device)
        for t, net in enumerate(self.nets):
            energy = energy + (atype_local == t).to(descriptor.dtype) * (self.scale * net(x).squeeze(-1) + self.bias[t])
        return energy
