"""Writes the cases of deep_pot_test: archives of every example model and random periodic systems with
the eager Python model's energy, forces (folded onto owners), virial and magnetic forces.
Usage: make_cases.py OPS_LIBRARY OUT_DIR"""

import json
import os
import sys

import torch

import deepmd.tools.export as exporter
from deepmd.models.config import load_config
from deepmd.models.model import RegularGraph
from deepmd.models.periodic import extend, random_system
from deepmd.models.spin import SpinModel, SpinRegularGraph, virtual_margin

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deepmd", "models", "examples")


def main():
    torch.ops.load_library(sys.argv[1])
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    cases = []
    for name in ("se_e2_a", "dpa3", "dpa2", "hybrid", "dpa3_spin"):
        config = load_config(os.path.join(EXAMPLES, name + ".json"))
        archive = os.path.join(out_dir, name + ".pt2")
        exporter.export(config, archive)
        model = exporter.build_model(config)
        for seed, box in ((1, [9.0, 9.5, 10.0]), (2, [4.5, 4.8, 5.2])):  # the second: thinner than the cutoff
            natoms = 60 if box[0] > 8 else 10
            pos, atype = random_system(natoms, box, 2, seed)
            spins = None
            margin = 0.0
            if isinstance(model, SpinModel):
                spins = torch.randn(natoms, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
                margin = virtual_margin(model, atype, spins)  # complete lists of virtual neighbours
            s = extend(pos, atype, box, model.rcut + margin)
            args = [s["coord"], s["atype"]]
            if spins is not None:
                args.append(spins[s["mapping"][0]].unsqueeze(0))
                graph = SpinRegularGraph(model)
            else:
                graph = RegularGraph(model)
            out = graph.forward_lower(*args, s["nlist"], s["mapping"], None, None, True)
            fold = lambda t: torch.zeros(natoms, 3, dtype=torch.float64).index_add_(0, s["mapping"][0], t[0])
            case = {
                "name": f"{name}-{seed}",
                "archive": archive,
                "box": box,
                "coord": pos.flatten().tolist(),
                "atype": atype.tolist(),
                "energy": out["energy"].item(),
                "force": fold(out["force"]).flatten().tolist(),
                "virial": out["virial"][0].tolist(),
                "atom_energy": out["atom_energy"][0, :, 0].tolist(),
            }
            if spins is not None:
                case["spin"] = spins.flatten().tolist()
                case["force_mag"] = fold(out["force_mag"]).flatten().tolist()
            cases.append(case)
    # DPA3 that can only run on one rank (no with-comm graph).
    loc = load_config(os.path.join(EXAMPLES, "dpa3.json"))
    loc["descriptor"]["use_loc_mapping"] = True
    exporter.export(loc, os.path.join(out_dir, "dpa3_loc.pt2"))
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(cases, f)
    print(f"wrote {len(cases)} cases to {out_dir}")


if __name__ == "__main__":
    main()
