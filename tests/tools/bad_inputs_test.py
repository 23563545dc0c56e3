"""dp_eval and dp_archive on bad inputs: each exits 1 with a message naming the cause, never a NaN
reported as success, a silent wrap, a file written outside the target folder or an uncaught exception.
Usage: bad_inputs_test.py OPS_LIBRARY DP_EVAL DP_ARCHIVE ARCHIVE (the registry's se_e2_a_small: O H)."""

import os
import subprocess
import sys
import tempfile
import unittest
import zipfile

import torch

from tests import unittest_main

DP_EVAL = DP_ARCHIVE = ARCHIVE = None


def run(*args):
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def xyz(directory, positions, lattice="10 0 0 0 10 0 0 0 10", pbc="T T T", species=None):
    path = os.path.join(directory, "frame.xyz")
    species = species or ["O", "H", "H"][:len(positions)]
    with open(path, "w") as f:
        f.write(f"{len(positions)}\nLattice=\"{lattice}\" Properties=species:S:1:pos:R:3 pbc=\"{pbc}\"\n")
        for s, p in zip(species, positions):
            f.write(f"{s} {p[0]!r} {p[1]!r} {p[2]!r}\n")
    return path


class DpEvalTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def test_ordinary_frame(self):
        code, out, err = run(DP_EVAL, ARCHIVE, xyz(self.dir, [(1, 1, 1), (2, 1, 1), (1, 2, 1)]))
        self.assertEqual(code, 0, err)

    def test_fewer_atom_lines_than_announced(self):
        path = xyz(self.dir, [(1, 1, 1), (2, 1, 1), (1, 2, 1)])
        with open(path) as f:
            lines = f.read().splitlines()
        with open(path, "w") as f:
            f.write("\n".join(["4"] + lines[1:]) + "\n")
        code, out, err = run(DP_EVAL, ARCHIVE, path)
        self.assertEqual(code, 1, out + err)
        self.assertIn("the file ends after 3 atom lines; line 1 announces 4 atoms", err)

    def test_a_second_frame_is_refused(self):
        path = xyz(self.dir, [(1, 1, 1), (2, 1, 1), (1, 2, 1)])
        with open(path) as f:
            frame = f.read()
        with open(path, "w") as f:
            f.write(frame + frame)
        code, out, err = run(DP_EVAL, ARCHIVE, path)
        self.assertEqual(code, 1, out + err)
        self.assertIn("line 6: there is more after the 3 atoms of the first frame", err)
        self.assertIn("one file per frame", err)

    def test_neighbours_beyond_sel_are_a_warning_with_their_count(self):
        # 125 H on a 1 A grid, no cell: most have more than the 92 H neighbours se_e2_a_small keeps within 6 A.
        grid = [(1.0 + x, 1.0 + y, 1.0 + z) for x in range(5) for y in range(5) for z in range(5)]
        path = os.path.join(self.dir, "dense.xyz")
        with open(path, "w") as f:
            f.write(f"{len(grid)}\nProperties=species:S:1:pos:R:3 pbc=\"F F F\"\n")
            f.writelines(f"H {x} {y} {z}\n" for x, y, z in grid)
        code, out, err = run(DP_EVAL, ARCHIVE, path)
        self.assertEqual(code, 0, out + err)
        self.assertRegex(err, r"keeps at most \[46 92\] neighbours of each type per atom within rcut 6 A \(sel\), "
                              r"but \d+ atom\(s\) have more \(up to 124\)")
        self.assertEqual(err.count("(sel)"), 1, err)

    def test_close_atoms(self):
        # Atoms 1 and 2 0.01 A apart; also atoms 0 and 2 through a periodic image, and on top of each other.
        for positions, pair, distance in [([(1, 1, 1), (2, 1, 1), (2.01, 1, 1)], "atom 1 and atom 2", "0.01 A"),
                                          ([(0.004, 5, 5), (3, 5, 5), (9.998, 5, 5)], "atom 0 and atom 2", "0.006 A"),
                                          ([(1, 1, 1), (3, 3, 3), (1, 1, 1)], "atom 0 and atom 2", "0 A")]:
            code, out, err = run(DP_EVAL, ARCHIVE, xyz(self.dir, positions))
            self.assertEqual(code, 1, out + err)
            self.assertIn(f"{pair} are {distance} apart", err)
            self.assertNotIn("nan", out)

    def test_degenerate_cells(self):
        for lattice, message in [("10 0 0 0 10 0 0 0 0.0001", "thick across lattice vector c"),
                                 ("0.05 0 0 0 0.05 0 0 0 20", "0.05 A thick"),
                                 ("inf 0 0 0 10 0 0 0 10", "lattice vector a (inf, 0, 0) is non-finite"),
                                 ("10 0 0 0 nan 0 0 0 10", "lattice vector b"),
                                 ("10 0 0 0 10 0 0 0 1e200", "longer than")]:
            code, out, err = run(DP_EVAL, ARCHIVE, xyz(self.dir, [(0.01, 0.01, 0.01)], lattice=lattice))
            self.assertEqual(code, 1, f"{lattice}: {out}{err}")
            self.assertIn(message, err, lattice)

    def test_atom_far_outside_a_periodic_cell(self):
        code, out, err = run(DP_EVAL, ARCHIVE, xyz(self.dir, [(1, 1, 1), (1, 1, 1e6)]))
        self.assertEqual(code, 1, out + err)
        self.assertIn("atom 1 at (1, 1, 1e+06)", err)
        self.assertIn("cell lengths from the cell along the periodic lattice vector c", err)
        # Along an open direction it is only far away: no error.
        code, out, err = run(DP_EVAL, ARCHIVE, xyz(self.dir, [(1, 1, 1), (1, 1, 1e6)], pbc="T T F"))
        self.assertEqual(code, 0, out + err)


def rewrite_with(src, dst, extra):
    """The archive at src with extra (name, bytes) entries, through PyTorch's own writer."""
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
        top = names[0].split("/")[0]
        entries = [(n[len(top) + 1:], z.read(n)) for n in names]
    writer = torch._C.PyTorchFileWriter(dst)
    for name, data in entries + extra:
        if name != "version":  # the writer adds it
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()


class DpArchiveExtractTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def test_extract_then_refuse_to_overwrite_unless_forced(self):
        target = os.path.join(self.dir, "out")
        code, out, err = run(DP_ARCHIVE, "extract", ARCHIVE, target)
        self.assertEqual(code, 0, err)
        self.assertTrue(os.path.isfile(os.path.join(target, "metadata.json")))
        code, out, err = run(DP_ARCHIVE, "extract", ARCHIVE, target)
        self.assertEqual(code, 1, out + err)
        self.assertIn("exists already", err)
        self.assertIn("--force", err)
        code, out, err = run(DP_ARCHIVE, "extract", ARCHIVE, target, "--force")
        self.assertEqual(code, 0, err)

    def test_entries_outside_the_target_are_refused(self):
        outside = os.path.join(self.dir, "absolute", "evil.txt")
        for name in ["../escaped.txt", "sub/../../escaped.txt", outside]:
            archive = os.path.join(self.dir, "evil.pt2")
            rewrite_with(ARCHIVE, archive, [(name, b"not yours")])
            target = os.path.join(self.dir, "target")
            code, out, err = run(DP_ARCHIVE, "extract", archive, target)
            self.assertEqual(code, 1, f"{name}: {out}{err}")
            self.assertIn(f"entry '{name}' would be written outside", err)
            self.assertFalse(os.path.exists(os.path.join(self.dir, "escaped.txt")), name)
            self.assertFalse(os.path.exists(outside), name)

    def test_write_failure_is_reported(self):
        # The target is a file: its folders cannot be made (an uncaught filesystem_error before).
        target = os.path.join(self.dir, "a_file")
        with open(target, "w") as f:
            f.write("x")
        code, out, err = run(DP_ARCHIVE, "extract", ARCHIVE, target)
        self.assertEqual(code, 1, out + err)
        self.assertIn("cannot create the folder", err)


def main():
    global DP_EVAL, DP_ARCHIVE, ARCHIVE
    DP_EVAL, DP_ARCHIVE, ARCHIVE = (os.path.abspath(a) for a in sys.argv[2:5])
    unittest_main.run(extra=3)


if __name__ == "__main__":
    main()
