"""Overlapping atoms in LAMMPS on 2 ranks: `run 0` stops every rank within 60 s with the message naming
both atoms by their LAMMPS atom ids and their distance (before: PotEng -nan or a huge energy, exit 0).
Usage: bad_physics_test.py OPS_LIBRARY LMP RUN_MPI ARCHIVE (the registry's se_e2_a_small: O H)."""

import os
import sys
import tempfile
import unittest

import numpy as np

from tests import unittest_main
from tests.lammps import harness

LMP = RUN_MPI = ARCHIVE = None


class BadPhysicsTest(unittest.TestCase):
    def launch(self, name, positions):
        lammps = harness.Lammps(LMP, RUN_MPI, tempfile.mkdtemp())
        system = harness.System(np.array(positions, dtype=float), np.array([1, 2, 1, 2, 1, 2]), (12.0, 12.0, 12.0), 2)
        script = harness.lammps_input(harness.Model(ARCHIVE, "O H"), grid="2 1 1")
        return lammps.launch(name, 2, system, script, timeout=60)

    def test_apart_runs(self):
        code, output, _ = self.launch("apart", [(1, 3, 3), (3, 3, 3), (5, 6, 6), (7, 6, 6), (9, 9, 9), (11, 9, 9)])
        self.assertEqual(code, 0, output[-3000:])

    def test_overlapping_atoms_across_ranks(self):
        # Atom ids 3 and 6 (rows 2 and 5), 0.01 A apart across the boundary between the ranks at x = 6.
        code, output, _ = self.launch("overlap", [(1, 3, 3), (3, 3, 3), (5.995, 6, 6), (8, 6, 6), (9, 9, 9),
                                                  (6.005, 6, 6)])
        self.assertNotIn(code, (0, 124, 137), output[-3000:])
        self.assertRegex(output, r"atom (3 and atom 6|6 and atom 3) are 0\.01 A apart", output[-3000:])


def main():
    global LMP, RUN_MPI, ARCHIVE
    LMP, RUN_MPI, ARCHIVE = (os.path.abspath(a) for a in sys.argv[2:5])
    unittest_main.run(extra=3)


if __name__ == "__main__":
    main()
