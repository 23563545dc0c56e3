"""The exporter: archive layout and metadata, graphs reloaded from the archive equal the eager model,
use_loc_mapping gives no with-comm graph, and a failed export leaves no file.
Usage: export_python_test.py OPS_LIBRARY."""

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
from deepmd.models.config import build_model, load_config
from deepmd.models.model import RegularGraph
from deepmd.models.periodic import extend, random_system

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deepmd", "models", "examples")
REQUIRED_KEYS = {"format_version", "artifact_kind", "type_map", "rcut", "sel", "nnei", "nlayers", "dim_fparam",
                 "dim_aparam", "precision", "is_spin", "has_message_passing", "has_message_passing_across_ranks",
                 "has_comm_artifact", "exchanged_feature_widths", "model_config"}


def example(name):
    return load_config(os.path.join(EXAMPLES, name + ".json"))


def read_archive(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        top = names[0].split("/")[0]
        entries = {n[len(top) + 1:]: z.read(n) for n in names}
    return top, entries


class ExportTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def test_every_example(self):
        for name in ("se_e2_a", "dpa3", "dpa2", "hybrid"):
            config = example(name)
            path = os.path.join(self.dir, name + ".pt2")
            exporter.export(config, path)
            top, entries = read_archive(path)
            self.assertEqual(top, name)
            meta = json.loads(entries["metadata.json"])
            self.assertLessEqual(REQUIRED_KEYS, set(meta))
            needs_comm = name != "se_e2_a"
            self.assertEqual(meta["has_comm_artifact"], needs_comm)
            self.assertEqual(meta["has_message_passing"], needs_comm)
            self.assertEqual(exporter.WITH_COMM_ENTRY in entries, needs_comm)
            self.assertEqual(len(meta["exchanged_feature_widths"]), {"se_e2_a": 0, "dpa3": 2, "dpa2": 2, "hybrid": 2}[name])
            # The archived regular graph equals the eager model.
            model = build_model(config)
            box = [9.0, 9.0, 9.0]
            pos, atype = random_system(40, box, 2, 4)
            s = extend(pos, atype, box, model.rcut)
            eager = RegularGraph(model).forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True)
            graph = torch.jit.load(io.BytesIO(entries[exporter.REGULAR_ENTRY]))
            out = graph.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True)
            for key in ("energy", "force", "virial"):
                torch.testing.assert_close(out[key], eager[key], rtol=1e-12, atol=1e-12)

    def test_spin_model(self):
        path = os.path.join(self.dir, "spin.pt2")
        meta = exporter.export(example("dpa3_spin"), path)
        _, entries = read_archive(path)
        self.assertTrue(meta["is_spin"])
        self.assertEqual(meta["use_spin"], [True, False])
        self.assertEqual(meta["virtual_scale"], [0.3, 0.0])
        self.assertEqual(meta["type_map"], ["Ni", "O"])
        self.assertEqual(meta["exchanged_feature_widths"], [32, 32])  # [h_real | h_virtual] rows
        self.assertIn(exporter.WITH_COMM_ENTRY, entries)
        graph = torch.jit.load(io.BytesIO(entries[exporter.WITH_COMM_ENTRY]))
        self.assertTrue(hasattr(graph, "forward_lower_with_comm"))

    def test_use_loc_mapping_has_no_comm_graph(self):
        config = example("dpa3")
        config["descriptor"]["use_loc_mapping"] = True
        path = os.path.join(self.dir, "loc.pt2")
        meta = exporter.export(config, path)
        _, entries = read_archive(path)
        self.assertFalse(meta["has_comm_artifact"])
        self.assertTrue(meta["has_message_passing"])
        self.assertFalse(meta["has_message_passing_across_ranks"])
        self.assertNotIn(exporter.WITH_COMM_ENTRY, entries)

    def test_float32_twin_agrees_with_float64(self):
        config = example("dpa3")
        config32 = copy.deepcopy(config)
        config32["precision"] = "float32"
        paths = [os.path.join(self.dir, n) for n in ("m64.pt2", "m32.pt2")]
        exporter.export(config, paths[0])
        exporter.export(config32, paths[1])
        box = [9.0, 9.0, 9.0]
        pos, atype = random_system(40, box, 2, 8)
        s = extend(pos, atype, box, 5.0)
        outs = []
        for p in paths:
            graph = torch.jit.load(io.BytesIO(read_archive(p)[1][exporter.REGULAR_ENTRY]))
            outs.append(graph.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True))
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
                exporter.export(config, path)
        finally:
            exporter.check_with_comm = original
        self.assertFalse(os.path.exists(path))
        bad = copy.deepcopy(config)
        bad["descriptor"]["type"] = "dpa9"
        with self.assertRaisesRegex(ValueError, "dpa9"):
            exporter.export(bad, path)
        self.assertEqual(os.listdir(self.dir), [])


def main():
    unittest_main.run()


if __name__ == "__main__":
    main()
