"""deepmd-kit's hybrid descriptor (`Descriptor` type `hybrid`, @version 1; deepmd-kit's
dpmodel/descriptor/hybrid.py): the children's outputs concatenated in list order.

The model formats one list for the hybrid: rcut = the largest child rcut; mixed_types if any child is mixed;
sel = [largest child nsel] (mixed) or the element-wise largest child sel (per-type sections). Each child gets
its own list cut from it by position, as deepmd-kit does: a child of the same kind (mixed or not) takes the
first entries of each section, sub_sel of them; a per-type child of a mixed hybrid takes them from the list
split into per-type sections of the element-wise largest per-type sel. Entries beyond a child's own rcut stay
in its list (deepmd-kit does not re-cut; the child's switch is 0 there)."""

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from deepmd.dpkit import env
from deepmd.dpkit.descriptor import Descriptor
from deepmd.dpkit.serialization import UnsupportedModel, check_version, require

_KNOWN_OPTIONS = {"@class", "type", "@version", "list", "type_map", "ntypes"}


class DescrptHybrid(Descriptor):
    cut_index: List[List[int]]
    same_kind: List[bool]
    sel_per_type: List[int]

    def __init__(self, node: Dict[str, Any], ntypes: int, where: str = "model.descriptor"):
        super().__init__()
        from deepmd.dpkit.build import descriptor_from_dict  # build imports this module

        check_version(node, where, 1, 1)
        self.type_name = "hybrid"
        unknown = sorted(set(node) - _KNOWN_OPTIONS)
        if unknown:
            raise UnsupportedModel(f"{where}: keys {unknown} are not ones deepmd-kit's hybrid descriptor writes")
        nodes = require(node, where, "list")
        if not isinstance(nodes, list) or not nodes:
            raise UnsupportedModel(f"{where}: 'list' must be a non-empty list of descriptors")
        children = [descriptor_from_dict(c, ntypes, f"{where}.list[{i}]") for i, c in enumerate(nodes)]
        self.children_list = torch.nn.ModuleList(children)
        self.mixed_types = any(bool(c.mixed_types) for c in children)
        per_type = [list(map(int, c.sel)) for c in children if not c.mixed_types]
        for s in per_type:
            if len(s) != len(per_type[0]):
                raise UnsupportedModel(f"{where}: per-type children have sel of different lengths {per_type}")
        if self.mixed_types:
            self.sel = [max(sum(int(s) for s in c.sel) for c in children)]
        else:
            self.sel = [int(s) for s in np.max(np.asarray(per_type), axis=0)]
        # Per-type sections used to cut lists for per-type children of a mixed hybrid.
        self.sel_per_type = [int(s) for s in np.max(np.asarray(per_type), axis=0)] if (
            self.mixed_types and per_type) else []
        self.cut_index = []
        self.same_kind = []
        for i, c in enumerate(children):
            same = bool(c.mixed_types) == self.mixed_types
            layout = self.sel if same else self.sel_per_type
            sub = [int(s) for s in c.sel]
            if len(sub) != len(layout):
                raise UnsupportedModel(f"{where}.list[{i}]: sel {sub} does not fit the hybrid's sections {layout}")
            starts = np.cumsum([0] + layout)[:-1]
            index: List[int] = []
            for start, s, cap in zip(starts, sub, layout):
                if s > cap:
                    raise UnsupportedModel(f"{where}.list[{i}]: sel {sub} exceeds the hybrid's sections {layout}")
                index.extend(range(int(start), int(start) + s))
            self.cut_index.append(index)
            self.same_kind.append(same)
        self.rcut = max(float(c.rcut) for c in children)
        self.dim_out = sum(int(c.dim_out) for c in children)
        self.nlayers = sum(int(c.nlayers) for c in children)
        self.has_message_passing = any(bool(c.has_message_passing) for c in children)
        dtypes = {c.dtype for c in children}
        self.dtype = children[0].dtype if len(dtypes) == 1 else torch.float64
        self.widths: List[int] = [int(w) for c in children for w in c.exchanged_widths()]

    def exchanged_widths(self) -> List[int]:
        return list(self.widths)

    def forward(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor, mapping: Optional[torch.Tensor],
                plan: Optional[torch.Tensor]) -> torch.Tensor:
        coord64 = coord.to(torch.float64) if coord.dtype != torch.float64 else coord
        typed = nlist
        if len(self.sel_per_type) > 0:
            typed = env.distinguish_types(nlist, atype, self.sel_per_type)
        outs: List[torch.Tensor] = []
        for i, child in enumerate(self.children_list):
            source = nlist if self.same_kind[i] else typed
            index = torch.tensor(self.cut_index[i], dtype=torch.long, device=nlist.device)
            sub = torch.index_select(source, 2, index)
            outs.append(child(coord64.to(child.dtype), atype, sub, mapping, plan).to(self.dtype))
        return torch.cat(outs, dim=-1)
