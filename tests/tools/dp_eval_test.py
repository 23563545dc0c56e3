"""dp_eval (C++) on extended XYZ files against the eager deepmd/dpkit models built from the same deepmd-kit
inputs (examples/models); model deviation of two models; errors. Usage: dp_eval_test.py OPS_LIBRARY DP_EVAL."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import torch

from tests import unittest_main

import deepmd.tools.export as exporter
from deepmd.dpkit.build import model_from_dict
from deepmd.dpkit.init import model_dict_from_input
from deepmd.models.model import RegularGraph
from deepmd.models.periodic import extend, random_system
from deepmd.models.spin import SpinRegularGraph, virtual_margin

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "models")
SEEDS = {"dpa3": 1, "dpa2": 2, "dpa3_spin": 5}
DP_EVAL = None


def run(*args):
    p = subprocess.run([DP_EVAL, *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def write_xyz(path, species, pos, box, spins=None):
    props = "species:S:1:pos:R:3" + (":spin:R:3" if spins is not None else "")
    with open(path, "w") as f:
        f.write(f"{len(species)}\n")
        f.write(f'Lattice="{box[0]} 0 0 0 {box[1]} 0 0 0 {box[2]}" Properties={props} pbc="T T T"\n')
        for i, el in enumerate(species):
            extra = " ".join(repr(float(x)) for x in spins[i]) if spins is not None else ""
            f.write(f"{el} {' '.join(repr(float(x)) for x in pos[i])} {extra}\n")


def eager(name, pos, atype, box, spins=None):
    model = model_from_dict(model_dict_from_input(DpEvalTest.configs[name]["model"], SEEDS[name]))
    margin = virtual_margin(model, atype, spins) if spins is not None else 0.0
    s = extend(pos, atype, box, model.rcut + margin)
    if spins is None:
        out = RegularGraph(model).forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True)
    else:
        out = SpinRegularGraph(model).forward_lower(s["coord"], s["atype"], spins[s["mapping"][0]].unsqueeze(0),
                                                    s["nlist"], s["mapping"], None, None, True)
    fold = lambda t: torch.zeros(len(atype), 3, dtype=torch.float64).index_add_(0, s["mapping"][0], t[0])
    return out["energy"].item(), fold(out["force"]), out["virial"][0], (fold(out["force_mag"]) if spins is not None else None)


class DpEvalTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.configs = {}
        for name in SEEDS:
            with open(os.path.join(EXAMPLES, name + ".json")) as f:
                cls.configs[name] = json.load(f)
        cls.archives = {}
        for name, config in cls.configs.items():
            cls.archives[name] = os.path.join(cls.dir, name + ".pt2")
            exporter.export_input(config, SEEDS[name], cls.archives[name])
        cls.box = [8.0, 8.5, 9.0]
        cls.pos, cls.atype = random_system(40, cls.box, 2, 12)

    def xyz(self, type_map, spins=None):
        path = os.path.join(self.dir, "frame.xyz")
        write_xyz(path, [type_map[t] for t in self.atype.tolist()], self.pos, self.box, spins)
        return path

    def test_matches_eager_python(self):
        for name in ("dpa3", "dpa3_spin"):
            config = self.configs[name]
            spins = torch.randn(40, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) \
                if name == "dpa3_spin" else None
            code, out, err = run(self.archives[name], self.xyz(config["model"]["type_map"], spins), "--json")
            self.assertEqual(code, 0, err)
            got = json.loads(out)
            e, f, v, fm = eager(name, self.pos, self.atype, self.box, spins)
            self.assertAlmostEqual(got["energy"], e, delta=1e-10 * abs(e))
            torch.testing.assert_close(torch.tensor(got["forces"], dtype=torch.float64), f, rtol=0, atol=1e-10)
            torch.testing.assert_close(torch.tensor(got["virial"], dtype=torch.float64), v, rtol=1e-10, atol=1e-10)
            if fm is not None:
                torch.testing.assert_close(torch.tensor(got["force_mag"], dtype=torch.float64), fm, rtol=0, atol=1e-10)

    def test_model_deviation_of_two_models(self):
        path = self.xyz(["O", "H"])
        code, out, err = run(self.archives["dpa3"], self.archives["dpa2"], path, "--json")
        self.assertEqual(code, 0, err)
        devi = json.loads(out)["model_deviation"]
        e1, f1, _, _ = eager("dpa3", self.pos, self.atype, self.box)
        e2, f2, _, _ = eager("dpa2", self.pos, self.atype, self.box)
        per_atom = (f1 - f2).norm(dim=1) / 2
        self.assertAlmostEqual(devi["max_devi_f"], per_atom.max().item(), delta=1e-10)
        self.assertAlmostEqual(devi["min_devi_f"], per_atom.min().item(), delta=1e-10)
        self.assertAlmostEqual(devi["avg_devi_f"], per_atom.mean().item(), delta=1e-10)
        self.assertAlmostEqual(devi["devi_e"], abs(e1 - e2) / 2 / 40, delta=1e-10)
        code, out, err = run(self.archives["dpa3"], self.archives["dpa2"], path)
        self.assertEqual(code, 0, err)
        self.assertIn("model deviation (2 models)", out)

    def test_errors(self):
        code, _, err = run(self.archives["dpa3"], self.xyz(["O", "Xe"]))
        self.assertEqual(code, 1)
        self.assertIn("is 'Xe', which the model does not know", err)
        bad = os.path.join(self.dir, "bad.xyz")
        with open(bad, "w") as f:
            f.write("2\nLattice=\"5 0 0 0 5 0 0 0 5\"\nO 0 0 0\nH 1 x 0\n")
        code, _, err = run(self.archives["dpa3"], bad)
        self.assertEqual(code, 1)
        self.assertIn("line 4: bad coordinate 'x'", err)
        code, _, err = run(self.archives["dpa3"], os.path.join(self.dir, "none.xyz"))
        self.assertEqual(code, 1)
        self.assertIn("cannot open structure file", err)
        code, _, err = run(self.archives["dpa3_spin"], self.xyz(["Ni", "O"]))
        self.assertEqual(code, 1)
        self.assertIn("needs a spin:R:3 column", err)
        code, _, err = run(self.archives["dpa3"], self.archives["dpa3_spin"], self.xyz(["O", "H"]))
        self.assertEqual(code, 1)
        self.assertIn("must describe the same elements", err)
        code, _, _ = run("only-one-arg")
        self.assertEqual(code, 2)


def main():
    global DP_EVAL
    DP_EVAL = os.path.abspath(sys.argv[2])
    unittest_main.run(extra=1)


if __name__ == "__main__":
    main()
