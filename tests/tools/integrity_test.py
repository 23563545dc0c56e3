"""Integrity of model archives through the real tools (dp_eval, dp_archive verify): a flipped bit in a
weight, in the pickled code or in metadata.json fails its CRC-32 naming the entry; a graph replaced under
a valid CRC fails the content hash; metadata that contradicts itself, the model configuration or the graph,
and absurd values, are load errors naming the key; an archive without content hashes (exported before
them) still evaluates to the same numbers and `verify` says it has none; a ZIP that is not a model says so.
Usage: integrity_test.py OPS_LIBRARY DP_EVAL DP_ARCHIVE SE_E2_A.pt2 DPA3.pt2 SPIN.pt2 (registry archives)."""

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest
import warnings
import zipfile

import torch

from tests import unittest_main

import deepmd.tools.export as exporter

DP_EVAL = DP_ARCHIVE = SE_E2_A = DPA3 = SPIN = None
XYZ = """3
Lattice="10 0 0 0 10 0 0 0 10" Properties=species:S:1:pos:R:3 pbc="T T T"
O 1.0 1.0 1.0
H 1.9 1.2 1.0
H 0.8 1.9 1.1
"""


def run(*args):
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(bytes(data))


def entries_of(path):
    with zipfile.ZipFile(path) as z:
        top = z.namelist()[0].split("/")[0]
        return top, [(n[len(top) + 1:], z.read(n)) for n in z.namelist()]


def rewrite(src, dst, change, rehash=True):
    """src entry by entry through change(name, bytes) -> bytes or None (drop), through PyTorch's writer
    (valid CRC-32s); with rehash, metadata's content hashes follow the changed entries."""
    _, entries = entries_of(src)
    changed = [(n, change(n, d)) for n, d in entries if n != "version"]
    changed = [(n, d) for n, d in changed if d is not None]
    writer = torch._C.PyTorchFileWriter(dst)
    for name, data in changed:
        if name == "metadata.json" and rehash:
            meta = json.loads(data)
            meta["content_sha256"] = exporter.content_hashes([(n, d) for n, d in changed if n in meta["content_sha256"]])
            data = json.dumps(meta).encode()
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return dst


def data_offset(raw, header_offset):
    """Where a stored ZIP entry's data starts, from its local header."""
    name_len, extra_len = struct.unpack("<HH", raw[header_offset + 26:header_offset + 30])
    return header_offset + 30 + name_len + extra_len


def flip_in_graph(src, dst, pick):
    """Flips one bit inside the regular graph's nested entry chosen by pick(inner ZipFile) -> name, in place
    (the outer CRC-32 now disagrees); returns the nested entry's name."""
    raw = bytearray(read(src))
    outer = zipfile.ZipFile(io.BytesIO(bytes(raw)))
    info = next(i for i in outer.infolist() if i.filename.endswith("/" + exporter.REGULAR_ENTRY))
    start = data_offset(raw, info.header_offset)
    inner = zipfile.ZipFile(io.BytesIO(bytes(raw[start:start + info.file_size])))
    target = inner.getinfo(pick(inner))
    at = start + data_offset(raw[start:], target.header_offset) + target.file_size // 2
    raw[at] ^= 0x10
    write(dst, raw)
    return target.filename


def metadata_edit(edit):
    return lambda name, data: json.dumps(edit(json.loads(data))).encode() if name == "metadata.json" else data


class IntegrityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.xyz = os.path.join(cls.dir, "water.xyz")
        with open(cls.xyz, "w") as f:
            f.write(XYZ)
        code, cls.reference, err = run(DP_EVAL, SE_E2_A, cls.xyz, "--json")
        assert code == 0, err

    def path(self, name):
        return os.path.join(self.dir, name + ".pt2")

    def assertCorrupt(self, path, *fragments):
        """dp_eval and dp_archive verify both refuse it, exit 1, naming every fragment."""
        for args in ([DP_EVAL, path, self.xyz], [DP_ARCHIVE, "verify", path]):
            code, out, err = run(*args)
            self.assertEqual(code, 1, f"{args[0]}: {out}{err}")
            for fragment in fragments:
                self.assertIn(fragment, err, args[0])
            self.assertNotIn("Traceback", err)

    def test_a_flipped_weight_bit_was_silent_and_is_now_a_crc_error(self):
        flipped = self.path("weight_flip")
        inner = flip_in_graph(SE_E2_A, flipped, lambda z: max(  # the largest weight tensor
            (i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size).filename)
        # Without a CRC check the damage is silent: LibTorch's reader hands the flipped bytes over and the
        # graph loads as a different model.
        unchecked = bytes(torch._C.PyTorchFileReader(flipped).get_record(exporter.REGULAR_ENTRY))
        good = torch.jit.load(io.BytesIO(entries_dict(SE_E2_A)[exporter.REGULAR_ENTRY]))
        bad = torch.jit.load(io.BytesIO(unchecked))
        differs = any(not torch.equal(a, b) for a, b in zip(good.state_dict().values(), bad.state_dict().values()))
        self.assertTrue(differs, inner)
        self.assertCorrupt(flipped, "is corrupt", "entry model/forward_lower.pt fails its CRC-32 check",
                           "download it again")

    def test_a_flipped_code_bit_is_a_crc_error(self):
        flipped = self.path("code_flip")
        flip_in_graph(SE_E2_A, flipped, lambda z: next(n for n in z.namelist() if "/code/" in n and n.endswith(".py")))
        self.assertCorrupt(flipped, "entry model/forward_lower.pt fails its CRC-32 check")

    def test_a_flipped_metadata_bit_is_a_crc_error(self):
        raw = bytearray(read(SE_E2_A))
        info = next(i for i in zipfile.ZipFile(SE_E2_A).infolist() if i.filename.endswith("/metadata.json"))
        at = data_offset(raw, info.header_offset) + raw[data_offset(raw, info.header_offset):].index(b'"rcut"') + 9
        raw[at] ^= 0x01  # a digit of rcut: still valid JSON, a different cutoff
        path = self.path("metadata_flip")
        write(path, raw)
        self.assertCorrupt(path, "entry metadata.json fails its CRC-32 check")

    def test_a_replaced_graph_fails_the_content_hash(self):
        other = entries_dict(DPA3)[exporter.REGULAR_ENTRY]
        path = rewrite(SE_E2_A, self.path("replaced"), lambda n, d: other if n == exporter.REGULAR_ENTRY else d,
                       rehash=False)
        self.assertCorrupt(path, "entry model/forward_lower.pt does not match its content hash")
        # Also when the hash key lost one of the graphs.
        path = rewrite(SE_E2_A, self.path("uncovered"), metadata_edit(
            lambda m: {**m, "content_sha256": {"version": "0" * 64}}), rehash=False)
        self.assertCorrupt(path, "content_sha256 does not cover model/forward_lower.pt")

    def test_an_archive_without_content_hash_loads_and_verify_says_so(self):
        def drop(m):
            del m["content_sha256"]
            return m
        path = rewrite(SE_E2_A, self.path("old"), metadata_edit(drop), rehash=False)
        code, out, err = run(DP_EVAL, path, self.xyz, "--json")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), json.loads(self.reference))
        code, out, err = run(DP_ARCHIVE, "verify", path)
        self.assertEqual(code, 0, err)
        self.assertIn("no content hash", out)
        code, out, err = run(DP_ARCHIVE, "verify", SE_E2_A)
        self.assertEqual(code, 0, err)
        self.assertIn("content hash (sha256) of 1 entry OK", out)

    def test_contradicting_or_absurd_metadata_is_a_load_error_naming_the_key(self):
        cases = [
            (SE_E2_A, "rcut", lambda m: {**m, "rcut": 4.5}),  # the descriptor summary says 6
            (SE_E2_A, "contradicts the graph", lambda m: {**m, "rcut": 4.5, "descriptor": {}}),  # the graph says 6
            (SE_E2_A, "type_map", lambda m: {**m, "type_map": ["H", "O"], "model_config": {}}),
            (SE_E2_A, "nnei", lambda m: {**m, "nnei": m["nnei"] + 1}),
            (SE_E2_A, "sel", lambda m: {**m, "sel": [m["nnei"] + 1], "nnei": m["nnei"] + 1}),
            (SE_E2_A, "ntypes", lambda m: {**m, "ntypes": 3}),
            (DPA3, "exchanged_feature_widths", lambda m: {**m, "exchanged_feature_widths": [8]}),
            (DPA3, "nlayers", lambda m: {**m, "nlayers": 3, "exchanged_feature_widths": [8, 8, 8]}),
            (SPIN, "dim_aparam", lambda m: {**m, "dim_aparam": 2}),
            (SPIN, "use_spin", lambda m: {**m, "use_spin": [True]}),
            (SPIN, "use_spin", lambda m: {**m, "use_spin": [False, True]}),
            (SPIN, "virtual_scale", lambda m: {**m, "virtual_scale": [0.1, 0.0], "model_config": {}}),
            (SE_E2_A, "'rcut' is 1e+06", lambda m: {**m, "rcut": 1e6}),
            (SE_E2_A, "'nnei' holds 100000000000", lambda m: {**m, "nnei": 10**11}),
            (SE_E2_A, "'sel' holds 100000000000", lambda m: {**m, "nnei": 10**11, "sel": [10**11]}),
            (SE_E2_A, "'dim_fparam' holds -1", lambda m: {**m, "dim_fparam": -1}),
        ]
        for k, (source, fragment, edit) in enumerate(cases):
            path = rewrite(source, self.path(f"meta_{k}"), metadata_edit(edit))
            code, out, err = run(DP_ARCHIVE, "verify", path)
            self.assertEqual(code, 1, f"{fragment}: {out}{err}")
            self.assertIn(fragment, err)
        # And through dp_eval (pair_style loads the same way: DeepPot::Load).
        path = rewrite(SE_E2_A, self.path("meta_eval"), metadata_edit(lambda m: {**m, "rcut": 5.0, "descriptor": {}}))
        code, out, err = run(DP_EVAL, path, self.xyz)
        self.assertEqual(code, 1, out + err)
        self.assertIn("metadata.json says rcut = 5 but model/forward_lower.pt has 6", err)

    def test_duplicated_entries_and_zips_that_are_not_models(self):
        path = self.path("duplicated")
        _, entries = entries_of(SE_E2_A)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate
            with zipfile.ZipFile(path, "w") as z:
                for name, data in entries + [("metadata.json", entries[0][1])]:
                    z.writestr("se_e2_a_small/" + name, data)
        self.assertCorrupt(path, "appears twice")
        path = self.path("not_a_model")
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("photos/cat.txt", "meow" * 100)
            z.writestr("photos/version", "3\n")
        code, out, err = run(DP_EVAL, path, self.xyz)
        self.assertEqual(code, 1, out + err)
        self.assertIn("not a model archive", err)


def entries_dict(path):
    return dict(entries_of(path)[1])


def main():
    global DP_EVAL, DP_ARCHIVE, SE_E2_A, DPA3, SPIN
    DP_EVAL, DP_ARCHIVE, SE_E2_A, DPA3, SPIN = (os.path.abspath(a) for a in sys.argv[2:7])
    unittest_main.run(extra=5)


if __name__ == "__main__":
    main()
