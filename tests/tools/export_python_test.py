"""The exporter on deepmd-kit training inputs (examples/models): archive layout and metadata, graphs
reloaded from the archive equal the eager deepmd/dpkit model built from the same input, use_loc_mapping
still gives a with-comm graph and the same numbers, the float32 twin agrees with float64, and a failed
export leaves no file. Usage: export_python_test.py OPS_LIBRARY."""

import copy
import io
import json
import os
import tempfile
import unittest
import zipfile

import torch

from tests import unittest_main

import deepmd.tools.export as exporter
from deepmd.dpkit.build import model_from_dict
from deepmd.dpkit.init import model_dict_from_input
from deepmd.dpkit.serialization import UnsupportedModel
from deepmd.models.model import RegularGraph
from deepmd.models.periodic import extend, random_system

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "models")
REQUIRED_KEYS = {"format_version", "artifact_kind", "type_map", "rcut", "sel", "nnei", "nlayers", "dim_fparam",
                 "dim_aparam", "precision", "is_spin", "has_message_passing", "has_message_passing_across_ranks",
                 "has_comm_artifact", "exchanged_feature_widths", "model_config", "source", "descriptor"}
SEED = 3


def example(name):
    with open(os.path.join(EXAMPLES, name + ".json")) as f:
        return json.load(f)


def eager(config, seed=SEED):
    return model_from_dict(model_dict_from_input(config["model"], seed))


def read_archive(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        top = names[0].split("/")[0]
        entries = {n[len(top) + 1:]: z.read(n) for n in names}
    return top, entries


def regular_outputs(entries, s):
    graph = torch.jit.load(io.BytesIO(entries[exporter.REGULAR_ENTRY]))
    return graph.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True)


class ExportTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def test_every_example(self):
        widths = {"se_e2_a": 0, "dpa1": 0, "dpa3": 2, "dpa2": 2, "hybrid": 2}
        for name in widths:
            config = example(name)
            path = os.path.join(self.dir, name + ".pt2")
            exporter.export_input(config, SEED, path, os.path.join(EXAMPLES, name + ".json"))
            top, entries = read_archive(path)
            self.assertEqual(top, name)
            meta = json.loads(entries["metadata.json"])
            self.assertLessEqual(REQUIRED_KEYS, set(meta))
            needs_comm = widths[name] > 0
            self.assertEqual(meta["has_comm_artifact"], needs_comm, name)
            self.assertEqual(exporter.WITH_COMM_ENTRY in entries, needs_comm, name)
            self.assertEqual(len(meta["exchanged_feature_widths"]), widths[name], name)
            self.assertEqual(meta["model_config"], config["model"])
            self.assertEqual(meta["source"]["seed"], SEED)
            self.assertEqual(meta["descriptor"]["type"], config["model"]["descriptor"]["type"])
            # The archived regular graph equals the eager model built from the same input and seed.
            model = eager(config)
            box = [9.0, 9.0, 9.0]
            pos, atype = random_system(40, box, 2, 4)
            s = extend(pos, atype, box, model.rcut)
            ref = RegularGraph(model).forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True)
            out = regular_outputs(entries, s)
            for key in ("energy", "force", "virial", "atom_virial"):
                torch.testing.assert_close(out[key], ref[key], rtol=1e-12, atol=1e-12, msg=f"{name} {key}")

    def test_spin_model(self):
        path = os.path.join(self.dir, "spin.pt2")
        meta = exporter.export_input(example("dpa3_spin"), SEED, path)
        _, entries = read_archive(path)
        self.assertTrue(meta["is_spin"])
        self.assertEqual(meta["use_spin"], [True, False])
        self.assertEqual(meta["virtual_scale"], [0.3, 0.0])
        self.assertEqual(meta["type_map"], ["Ni", "O"])
        self.assertEqual(meta["exchanged_feature_widths"], [32, 32])  # [h_real | h_virtual] rows, n_dim 16
        self.assertIn(exporter.WITH_COMM_ENTRY, entries)
        graph = torch.jit.load(io.BytesIO(entries[exporter.WITH_COMM_ENTRY]))
        self.assertTrue(hasattr(graph, "forward_lower_with_comm"))

    def test_use_loc_mapping_keeps_the_with_comm_graph_and_the_numbers(self):
        # deepmd-kit's use_loc_mapping remaps the list to local atoms; the math is the same, and the
        # archive still gets a with-comm graph (ghost embeddings filled per layer, docs/model_archive.md).
        paths = [os.path.join(self.dir, n) for n in ("noloc.pt2", "loc.pt2")]
        exporter.export_input(example("dpa3"), SEED, paths[0])
        meta = exporter.export_input(example("dpa3_loc_mapping"), SEED, paths[1])
        self.assertTrue(meta["model_config"]["descriptor"]["use_loc_mapping"])
        self.assertTrue(meta["has_comm_artifact"])
        box = [9.0, 9.0, 9.0]
        pos, atype = random_system(40, box, 2, 6)
        s = extend(pos, atype, box, 5.0)
        outs = [regular_outputs(read_archive(p)[1], s) for p in paths]
        for key in ("energy", "force", "virial"):
            torch.testing.assert_close(outs[1][key], outs[0][key], rtol=1e-12, atol=1e-12)

    def test_float32_twin_agrees_with_float64(self):
        paths = [os.path.join(self.dir, n) for n in ("m64.pt2", "m32.pt2")]
        exporter.export_input(example("dpa3"), SEED, paths[0])
        meta = exporter.export_input(example("dpa3_fp32"), SEED, paths[1])
        self.assertEqual(meta["precision"], "float32")
        box = [9.0, 9.0, 9.0]
        pos, atype = random_system(40, box, 2, 8)
        s = extend(pos, atype, box, 5.0)
        outs = [regular_outputs(read_archive(p)[1], s) for p in paths]
        torch.testing.assert_close(outs[1]["energy"], outs[0]["energy"], rtol=1e-5, atol=0)
        torch.testing.assert_close(outs[1]["force"], outs[0]["force"], rtol=1e-5,
                                   atol=1e-5 * float(outs[0]["force"].abs().max()))

    def test_failed_export_leaves_no_file(self):
        config = example("dpa3")
        path = os.path.join(self.dir, "bad.pt2")
        original = exporter.check_with_comm
        exporter.check_with_comm = lambda *args: 1.0  # the self-exchange check fails
        try:
            with self.assertRaisesRegex(RuntimeError, "Nothing was written"):
                exporter.export_input(config, SEED, path)
        finally:
            exporter.check_with_comm = original
        self.assertFalse(os.path.exists(path))
        bad = copy.deepcopy(config)
        bad["model"]["descriptor"]["type"] = "dpa9"
        with self.assertRaisesRegex(UnsupportedModel, "dpa9"):
            exporter.export_input(bad, SEED, path)
        self.assertEqual(os.listdir(self.dir), [])


def main():
    unittest_main.run()


if __name__ == "__main__":
    main()
