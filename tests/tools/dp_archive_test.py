"""dp_archive (C++) on good archives of every example model (deepmd-kit inputs of examples/models,
freshly initialised) and on each kind of corrupt archive.
Usage: dp_archive_test.py OPS_LIBRARY DP_ARCHIVE."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
import zipfile

import torch

from tests import unittest_main

import deepmd.tools.export as exporter
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "models")
MODELS = {"se_e2_a": 4, "dpa1": 6, "dpa3": 1, "dpa2": 2, "hybrid": 3, "dpa3_spin": 5}  # input -> seed
WITHOUT_MESSAGE_PASSING = ("se_e2_a", "dpa1")
DP_ARCHIVE = None


def run(*args):
    p = subprocess.run([DP_ARCHIVE, *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


def rewrite(src, dst, change):
    """Copies an archive entry by entry through change(name, bytes) -> bytes or None (drop), with the
    content hashes of the changed entries updated (as the exporter would write them), so that the check
    a case aims at is the one that fires."""
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
        top = names[0].split("/")[0]
        entries = [(n[len(top) + 1:], z.read(n)) for n in names]
    changed = [(name, change(name, data)) for name, data in entries if name != "version"]  # the writer adds it
    changed = [(name, data) for name, data in changed if data is not None]
    hashes = exporter.content_hashes([(n, d) for n, d in changed if n != "metadata.json"])
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    writer = torch._C.PyTorchFileWriter(dst)
    for name, data in changed:
        if name == "metadata.json":
            meta = json.loads(data)
            if isinstance(meta, dict) and "content_sha256" in meta:
                meta["content_sha256"] = {n: hashes[n] for n in meta["content_sha256"] if n in hashes}
                data = json.dumps(meta).encode()
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()


class DpArchiveTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.archives = {}
        for name, seed in MODELS.items():
            cls.archives[name] = os.path.join(cls.dir, name + ".pt2")
            with open(os.path.join(EXAMPLES, name + ".json")) as f:
                exporter.export_input(json.load(f), seed, cls.archives[name])

    def test_good_archives(self):
        for name, path in self.archives.items():
            code, out = run("verify", path)
            self.assertEqual(code, 0, out)
            self.assertIn("verdict: OK", out)
            if name not in WITHOUT_MESSAGE_PASSING:
                self.assertIn("with-comm graph on a multi-hop self-exchange plan", out)
            code, out = run("inspect", path)
            self.assertEqual(code, 0, out)
            self.assertIn("type map", out)
            code, out = run("inspect", "--json", path)
            self.assertEqual(code, 0, out)
            meta = json.loads(out)["metadata"]
            self.assertEqual(meta["has_comm_artifact"], name not in WITHOUT_MESSAGE_PASSING)

    def test_extract(self):
        target = os.path.join(self.dir, "extracted")
        code, out = run("extract", self.archives["dpa3"], target)
        self.assertEqual(code, 0, out)
        self.assertTrue(os.path.exists(os.path.join(target, "model", "extra", "forward_lower_with_comm.pt")))
        with open(os.path.join(target, "metadata.json")) as f:
            self.assertEqual(json.load(f)["type_map"], ["O", "H"])

    def corrupt(self, label, change, source="dpa3"):
        path = os.path.join(self.dir, "corrupt", label + ".pt2")
        rewrite(self.archives[source], path, change)
        return path

    def assertFails(self, path, *fragments):
        code, out = run("verify", path)
        self.assertEqual(code, 1, out)
        for fragment in fragments:
            self.assertIn(fragment, out)
        self.assertNotIn("Traceback", out)

    def test_corrupt_archives(self):
        meta = lambda edit: lambda name, data: (json.dumps(edit(json.loads(data))).encode()
                                                if name == "metadata.json" else data)

        def drop(key):
            def edit(m):
                del m[key]
                return m
            return edit

        text = os.path.join(self.dir, "text.pt2")
        with open(text, "w") as f:
            f.write("not an archive\n")
        self.assertFails(text, "not a ZIP file")
        truncated = os.path.join(self.dir, "truncated.pt2")
        with open(self.archives["dpa3"], "rb") as f:
            data = f.read()
        with open(truncated, "wb") as f:
            f.write(data[: len(data) // 2])
        self.assertFails(truncated, "truncated or corrupt")
        self.assertFails(os.path.join(self.dir, "missing.pt2"), "cannot open model archive")
        self.assertFails(self.corrupt("no_metadata", lambda n, d: None if n == "metadata.json" else d), "no metadata.json")
        self.assertFails(self.corrupt("no_rcut", meta(drop("rcut"))), "key 'rcut' is missing")
        self.assertFails(self.corrupt("version", meta(lambda m: {**m, "format_version": 99})),
                         "'format_version' is 99")
        self.assertFails(self.corrupt("kind", meta(lambda m: {**m, "artifact_kind": "aotinductor"})),
                         "'artifact_kind' is 'aotinductor'")
        self.assertFails(self.corrupt("bad_type", meta(lambda m: {**m, "type_map": "O H"})),
                         "key 'type_map' has the wrong type")
        self.assertFails(self.corrupt("comm_flag", meta(lambda m: {**m, "has_comm_artifact": False})),
                         "has_comm_artifact = false but the archive has")
        regular = zipfile.ZipFile(self.archives["dpa3"]).read("dpa3/" + exporter.REGULAR_ENTRY)
        self.assertFails(self.corrupt("wrong_graph", lambda n, d: regular if n == exporter.WITH_COMM_ENTRY else d),
                         "has no method forward_lower_with_comm")
        self.assertFails(self.corrupt("garbled_graph", lambda n, d: d[:100] if n == exporter.REGULAR_ENTRY else d),
                         "cannot load model/forward_lower.pt")

    def test_usage(self):
        code, out = run("frobnicate", "x")
        self.assertEqual(code, 2)
        self.assertIn("usage", out)


def main():
    global DP_ARCHIVE
    DP_ARCHIVE = os.path.abspath(sys.argv[2])
    unittest_main.run(extra=1)


if __name__ == "__main__":
    main()
