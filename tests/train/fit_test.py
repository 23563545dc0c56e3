"""deepmd/train/fit.py on deepmd-kit's water data, a tiny DPA3 (deepmd-kit's production options at test
size, float64), a few steps on 2 frames: the fit lowers the loss on its frames; the saved .dp loads
through deepmd.dpkit.build.load_model and gives the trainer's energies and forces (1e-10), and so does
the regular graph of its exported archive; forces of the trained model are -dE/dx (central finite
differences); the tree keeps the shapes and dtypes of the initial one, out_bias is the minimum-norm
least-squares fit; the same seed gives the same weights. Usage: fit_test.py OPS_LIBRARY."""

import copy
import io
import json
import os
import tempfile
import unittest
import zipfile

import numpy as np
import torch

from tests import unittest_main

from deepmd.dpkit.build import load_model
from deepmd.dpkit.init import model_dict_from_input
from deepmd.dpkit.serialization import load_model_dict
from deepmd.train import fit

SEED = 7
TINY = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "dpa3",
        "repflow": {
            "n_dim": 8, "e_dim": 4, "a_dim": 4, "nlayers": 2, "e_rcut": 4.0, "e_rcut_smth": 3.5, "e_sel": 60,
            "a_rcut": 3.0, "a_rcut_smth": 2.5, "a_sel": 16, "axis_neuron": 2, "a_compress_rate": 1,
            "a_compress_e_rate": 2, "a_compress_use_split": True, "smooth_edge_update": True,
            "edge_init_use_dist": True, "use_exp_switch": True, "update_residual": 0.1,
        },
        "activation_function": "silut:10.0",
        "precision": "float64",
        "use_loc_mapping": False,
    },
    "fitting_net": {"neuron": [16, 16], "resnet_dt": True, "precision": "float64",
                    "activation_function": "silut:10.0"},
}


def run_fit(folder, name):
    water = fit.water_dir()
    argv = ["--input", os.path.join(folder, "tiny.json"),
            "--train-systems", os.path.join(water, "data_0"), "--max-train-frames", "2",
            "--valid-systems", os.path.join(water, "data_3"), "--max-valid-frames", "1",
            "--epochs", "4", "--seed", str(SEED), "--start-lr", "0.01", "--stop-lr", "0.003",
            "--out", os.path.join(folder, name + ".dp")]
    lines = []
    history = fit.fit(fit.parser().parse_args(argv), log=lines.append)
    return history, lines


def loss(trainer, frames, pref_e=0.02, pref_f=1000.0):
    m = fit.metrics(trainer, frames)
    return pref_e * m["energy_rmse_per_atom"] ** 2 + pref_f * m["force_rmse"] ** 2, m


class FitTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        with open(os.path.join(cls.dir, "tiny.json"), "w") as f:
            json.dump({"model": TINY}, f)
        cls.history, cls.lines = run_fit(cls.dir, "model")
        cls.trainer = cls.history["trainer"]
        cls.train = cls.history["train_frames_list"]
        cls.valid = cls.history["valid_frames_list"]
        cls.dp = os.path.join(cls.dir, "model.dp")

    def test_loss_decreases(self):
        initial = fit.TrainableModel(model_dict_from_input(TINY, SEED))
        initial.set_out_bias(np.asarray(self.history["out_bias"]))
        before, m0 = loss(initial, self.train)
        after, m1 = loss(self.trainer, self.train)
        # 8 steps: the energy error falls fast, the force error (~all of the loss at pref_f 1000) slowly:
        # an untrained DPA3's forces are ~0.03 eV/A against labels of ~0.8 eV/A.
        self.assertLess(after, before - 0.1, (m0, m1))
        self.assertLess(m1["force_rmse"], m0["force_rmse"] - 1e-4, (m0, m1))
        self.assertLess(m1["energy_rmse_per_atom"], 0.5 * m0["energy_rmse_per_atom"], (m0, m1))
        rows = self.history["epochs"]
        self.assertEqual([r["epoch"] for r in rows], [0, 1, 2, 3, 4])
        self.assertEqual(len(self.history["steps"]), 8)
        self.assertTrue(any(line.lstrip().startswith("4 ") for line in self.lines), self.lines)

    def test_saved_model_equals_trainer(self):
        model = load_model(self.dp)
        for frame in self.train + self.valid:
            energy, force = self.trainer.energy_force(frame, create_graph=False)
            e2, f2 = fit.evaluate_loaded(model, frame)
            self.assertLess(abs(float(energy) - e2), 1e-10, frame.name)
            self.assertLess(float(np.abs(force.detach().numpy() - f2).max()), 1e-10, frame.name)
        self.assertLessEqual(self.history["round_trip"]["energy"], 1e-10)

    def test_exported_archive_equals_trainer(self):
        import deepmd.tools.export as exporter
        out = os.path.join(self.dir, "model.pt2")
        exporter.export_deepmd_kit(self.dp, out)
        with zipfile.ZipFile(out) as z:
            name = [n for n in z.namelist() if n.endswith("/" + exporter.REGULAR_ENTRY)][0]
            graph = torch.jit.load(io.BytesIO(z.read(name)))
        frame = self.valid[0]
        topo = frame.topology
        ext = (torch.from_numpy(frame.coord)[topo["owner"]] + topo["shift"]).unsqueeze(0)
        got = graph.forward_lower(ext, topo["atype"], topo["nlist"], topo["mapping"], None, None, False)
        force = torch.zeros(frame.natoms, 3, dtype=torch.float64).index_add_(0, topo["owner"], got["force"][0])
        energy, want = self.trainer.energy_force(frame, create_graph=False)
        self.assertLess(abs(float(got["energy"].reshape(-1)[0]) - float(energy)), 1e-10)
        self.assertLess(float((force - want.detach()).abs().max()), 1e-10)

    def test_forces_are_minus_gradient(self):
        frame = copy.copy(self.train[0])
        _, force = self.trainer.energy_force(frame, create_graph=False)
        h = 1e-4
        for atom, comp in [(0, 0), (5, 1), (64, 2), (100, 0), (191, 1)]:
            energies = []
            for sign in (1, -1):
                moved = copy.copy(frame)
                moved.coord = frame.coord.copy()
                moved.coord[atom, comp] += sign * h
                e, _ = self.trainer.energy_force(moved, create_graph=False)
                energies.append(float(e))
            numeric = -(energies[0] - energies[1]) / (2 * h)
            self.assertAlmostEqual(float(force[atom, comp]), numeric, delta=1e-6)

    def test_tree_shapes_bias_and_files(self):
        saved = load_model_dict(self.dp)["model"]
        initial = model_dict_from_input(TINY, SEED)
        a = list(fit._variable_paths(initial))
        b = dict(fit._variable_paths(saved))
        self.assertEqual(sorted(fit._path(t) for t, _ in a), sorted(fit._path(t) for t in b))
        changed = 0
        for tokens, array in a:
            got = np.asarray(b[tokens])
            self.assertEqual(got.shape, np.shape(array), fit._path(tokens))
            self.assertEqual(got.dtype, np.asarray(array).dtype, fit._path(tokens))
            changed += int(not np.array_equal(got, array))
        self.assertGreater(changed, 20)  # the weights moved
        counts = np.array([[64.0, 128.0]])
        energies = np.array([f.energy for f in self.train])
        bias = np.asarray(saved["@variables"]["out_bias"]).reshape(-1)
        np.testing.assert_allclose(bias, counts[0] * energies.mean() / (counts ** 2).sum(), rtol=1e-12)
        self.assertTrue(np.all(np.asarray(saved["fitting"]["@variables"]["bias_atom_e"]) == 0))
        with open(os.path.join(self.dir, "model.fit.json")) as f:
            log = json.load(f)
        self.assertEqual(len(log["epochs"]), 5)
        with open(os.path.join(self.dir, "model.fit.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_same_seed_same_weights(self):
        again, _ = run_fit(self.dir, "again")
        for (tokens, x), (_, y) in zip(fit._variable_paths(self.trainer.tree()),
                                       fit._variable_paths(again["trainer"].tree())):
            self.assertTrue(np.array_equal(x, y), fit._path(tokens))
        self.assertEqual([s["loss"] for s in self.history["steps"]], [s["loss"] for s in again["steps"]])

    def test_change_bias_removes_the_offset(self):
        from deepmd.train import change_bias
        out = os.path.join(self.dir, "rebiased.dp")
        frames = self.train  # data_0's first 2 frames
        delta = change_bias.change_bias(self.dp, out, [os.path.join(fit.water_dir(), "data_0")], len(frames))
        # The oracle: the trainer's own energies (not the file's evaluation change_bias uses).
        residual = np.mean([f.energy - float(self.trainer.energy_force(f, create_graph=False)[0]) for f in frames])
        counts = np.array([64.0, 128.0])
        np.testing.assert_allclose(delta, counts * residual / (counts ** 2).sum(), rtol=1e-8, atol=1e-12)
        model = load_model(out)
        for frame in frames + self.valid:
            energy, force = self.trainer.energy_force(frame, create_graph=False)
            e2, f2 = fit.evaluate_loaded(model, frame)
            self.assertAlmostEqual(e2 - float(energy), float(counts @ np.asarray(delta)), delta=1e-9)
            self.assertLess(float(np.abs(force.detach().numpy() - f2).max()), 1e-10, frame.name)
        self.assertLess(abs(np.mean([f.energy - fit.evaluate_loaded(model, f)[0] for f in frames])), 1e-9)
        self.assertNotEqual(residual, 0.0)

    def test_stop_after_epoch_is_the_same_schedule(self):
        water = fit.water_dir()
        argv = ["--input", os.path.join(self.dir, "tiny.json"),
                "--train-systems", os.path.join(water, "data_0"), "--max-train-frames", "2",
                "--valid-systems", os.path.join(water, "data_3"), "--max-valid-frames", "1",
                "--epochs", "4", "--stop-after-epoch", "2", "--seed", str(SEED), "--start-lr", "0.01",
                "--stop-lr", "0.003", "--out", os.path.join(self.dir, "partial.dp")]
        partial = fit.fit(fit.parser().parse_args(argv), log=lambda line: None)
        self.assertEqual([r["epoch"] for r in partial["epochs"]], [0, 1, 2])
        self.assertEqual([s["loss"] for s in partial["steps"]], [s["loss"] for s in self.history["steps"][:4]])

    def test_refuses_other_descriptors(self):
        section = {"type_map": ["O", "H"], "descriptor": {"type": "se_e2_a", "sel": [10, 20], "rcut": 4.0,
                                                          "rcut_smth": 3.0}, "fitting_net": {}}
        with self.assertRaisesRegex(ValueError, "DPA3"):
            fit.TrainableModel(model_dict_from_input(section, 1))


if __name__ == "__main__":
    unittest_main.run()
