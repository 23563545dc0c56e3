"""Writes the cases of deep_pot_test: archives of every example model (deepmd-kit inputs of
examples/models, freshly initialised) and random periodic systems with the eager deepmd/dpkit model's
energy, forces (folded onto owners), virial and magnetic forces.
Usage: make_cases.py OPS_LIBRARY OUT_DIR"""

import json
import os
import sys

import torch

import deepmd.tools.export as exporter
from deepmd.dpkit.build import model_from_dict
from deepmd.dpkit.init import model_dict_from_input
from deepmd.models.model import RegularGraph
from deepmd.models.periodic import extend, random_system
from deepmd.models.spin import SpinRegularGraph, virtual_margin

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "models")
MODELS = {"se_e2_a": 4, "dpa1": 6, "dpa3": 1, "dpa2": 2, "hybrid": 3, "dpa3_spin": 5}  # input -> seed


def load_input(name):
    with open(os.path.join(EXAMPLES, name + ".json")) as f:
        return json.load(f)


def regular_only(src, dst):
    """The archive without its with-comm graph (what an exporter following deepmd-kit writes for a
    use_loc_mapping model): it can run on one rank only."""
    reader = torch._C.PyTorchFileReader(src)
    meta = json.loads(bytes(reader.get_record("metadata.json")))
    meta.update(has_comm_artifact=False, graphs={"regular": exporter.REGULAR_ENTRY})
    exporter.write_archive(dst, meta, bytes(reader.get_record(exporter.REGULAR_ENTRY)), None)


def main():
    torch.ops.load_library(sys.argv[1])
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    cases = []
    for name, seed in MODELS.items():
        config = load_input(name)
        archive = os.path.join(out_dir, name + ".pt2")
        exporter.export_input(config, seed, archive)
        model = model_from_dict(model_dict_from_input(config["model"], seed))  # the oracle: eager, same input
        spin_model = bool(getattr(model, "is_spin", False))
        for system_seed, box in ((1, [9.0, 9.5, 10.0]), (2, [4.5, 4.8, 5.2])):  # the second: thinner than rcut
            natoms = 60 if box[0] > 8 else 10
            pos, atype = random_system(natoms, box, 2, system_seed)
            spins = None
            margin = 0.0
            if spin_model:
                spins = torch.randn(natoms, 3, generator=torch.Generator().manual_seed(system_seed),
                                    dtype=torch.float64)
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
                "name": f"{name}-{system_seed}",
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
    # A use_loc_mapping DPA3 that can only run on one rank (archived without its with-comm graph).
    loc = os.path.join(out_dir, "dpa3_loc_mapping.pt2")
    exporter.export_input(load_input("dpa3_loc_mapping"), 1, loc)
    regular_only(loc, os.path.join(out_dir, "dpa3_loc.pt2"))
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(cases, f)
    print(f"wrote {len(cases)} cases to {out_dir}")


if __name__ == "__main__":
    main()
