"""dp_eval with deepmd-kit's own files, and dp_eval --system on deepmd-kit's data format.

    deepmd_kit_files_test.py OPS_LIBRARY DP_EVAL ARCHIVE_DIR

1. A deepmd-kit model file handed straight to dp_eval (its .dp, .yaml, frozen TorchScript .pth, training
   checkpoint, AOTInductor .pt2) fails with a message that says what it is and the command converting it.
2. `dp_eval MODEL --system DIR --json` on three labelled water frames equals the errors computed here from
   the eager deepmd-kit-exact model (deepmd/dpkit) on the same frames (energy and force MAE/RMSE).
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest
import zipfile

import numpy as np
import torch

from deepmd.dpkit.build import load_model
from deepmd.models.model import RegularGraph
from tests import unittest_main
from tests.dpkit import references

DP_EVAL = ARCHIVES = ""


def run_dp_eval(*args):
    return subprocess.run([DP_EVAL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class DeepmdKitFilesTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp()
        self.xyz = os.path.join(self.work, "one.xyz")
        with open(self.xyz, "w") as f:
            f.write('1\nLattice="10 0 0 0 10 0 0 0 10" Properties=species:S:1:pos:R:3 pbc="T T T"\nO 1 1 1\n')

    def check_refused(self, path, *phrases):
        proc = run_dp_eval(path, self.xyz)
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        for phrase in phrases:
            self.assertIn(phrase, proc.stderr)

    def test_dp_and_yaml(self):
        export = "bazel run //deepmd/tools:export -- "
        self.check_refused(references.model_path("se_e2_a_small"), "HDF5", ".dp", export)
        self.check_refused(references.model_path("deeppot_sea"), ".yaml", export)

    def test_torchscript_checkpoint_and_aoti(self):
        frozen = os.path.join(self.work, "frozen.pth")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), frozen)
        self.check_refused(frozen, "TorchScript", "dp --pt convert-backend")
        checkpoint = os.path.join(self.work, "model.ckpt.pt")
        torch.save({"model": torch.zeros(2)}, checkpoint)
        self.check_refused(checkpoint, "checkpoint", "dp --pt freeze")
        aoti = os.path.join(self.work, "aoti.pt2")
        with zipfile.ZipFile(aoti, "w") as z:  # the layout of deepmd-kit's pt_expt export (FORMAT.md)
            z.writestr("model/extra/model.json", "{}")
            z.writestr("model/data/weights", "0")
        self.check_refused(aoti, "deepmd-kit export", "export -- " + aoti)

    def test_system_errors_equal_the_eager_model(self):
        water = os.path.join(references.fixtures_dir(), "data", "water", "data_3")
        system = os.path.join(self.work, "system")
        os.makedirs(os.path.join(system, "set.000"))
        for name in ("type.raw", "type_map.raw"):
            with open(os.path.join(water, name)) as src, open(os.path.join(system, name), "w") as dst:
                dst.write(src.read())
        frames = slice(0, 3)
        arrays = {k: np.load(os.path.join(water, "set.000", k + ".npy"))[frames] for k in ("coord", "box", "energy", "force")}
        for k, v in arrays.items():
            np.save(os.path.join(system, "set.000", k + ".npy"), v)
        proc = run_dp_eval(os.path.join(ARCHIVES, "se_e2_a_small.pt2"), "--system", system, "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        got = json.loads(proc.stdout)
        graph = RegularGraph(load_model(references.model_path("se_e2_a_small")))
        atype = np.loadtxt(os.path.join(system, "type.raw"), dtype=int)
        de, df = [], []
        for f in range(3):
            case = {"coord": arrays["coord"][f].astype(np.float64), "atype": atype,
                    "box": arrays["box"][f].astype(np.float64)}
            out = references.evaluate(graph, case, 6.0)
            de.append(float(out["energy"]) - float(arrays["energy"][f]))
            df.append(out["force"] - arrays["force"][f].astype(np.float64))
        de, df = np.array(de), np.concatenate(df)
        natoms = len(atype)
        want = {"energy_mae": np.abs(de).mean(), "energy_rmse": np.sqrt((de ** 2).mean()),
                "energy_mae_per_atom": np.abs(de).mean() / natoms, "force_mae": np.abs(df).mean(),
                "force_rmse": np.sqrt((df ** 2).mean())}
        self.assertEqual(got["nframes"], 3)
        for key, value in want.items():
            self.assertAlmostEqual(got[key], value, delta=1e-9 * max(1.0, abs(value)), msg=key)


if __name__ == "__main__":
    DP_EVAL, ARCHIVES = os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    unittest_main.run(extra=2)
