"""The protocol every deepmd-kit descriptor of this package follows (facts are read from these
attributes, never from configuration key names).

A descriptor is a torch.nn.Module built from its deepmd-kit dict node as `Cls(node, ntypes, where)` with:
  rcut: float              largest cutoff its neighbour list must cover (Å)
  sel: List[int]           per-type section sizes (mixed_types False) or [nsel] (mixed_types True)
  mixed_types: bool        one distance-sorted list (DPA1/2/3) or per-type sections (se_e2_a)
  dim_out: int             width of its output per local atom
  nlayers: int             message-passing layers (0 when none)
  has_message_passing: bool  a layer reads neighbours' embeddings through `self.ghosts`
  dtype: torch.dtype       its precision
  exchanged_widths() -> List[int]   width of each ghost fill in one evaluation, in call order
  forward(coord, atype, nlist, mapping, plan) -> [nf, nloc, dim_out] in its own dtype
    coord [nf, nall, 3] already cast to `dtype`; atype [nf, nall] int64 (−1 = virtual);
    nlist [nf, nloc, sum(sel)]: the model's formatted list (env.format_nlist, then
    env.distinguish_types when not mixed_types, then the model's pair exclusion), −1 padded.
    A descriptor needing shorter lists (DPA2's repformer, DPA3's angles) cuts them from this one.
Message-passing descriptors hold `self.ghosts` (deepmd.models.ghosts.MappingGhosts by default;
the exporter swaps in ExchangeGhosts for the with-comm graph) and call
`self.ghosts(node_local [nf, nloc, F], nall, mapping, plan) -> [nf, nall, F]` before every layer."""

from typing import List

import torch


class Descriptor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rcut = 0.0
        self.sel: List[int] = []
        self.mixed_types = True
        self.dim_out = 0
        self.nlayers = 0
        self.has_message_passing = False
        self.dtype = torch.float64

    def exchanged_widths(self) -> List[int]:
        return []
