"""Model deviation of two models with different cutoffs (dpa3: rcut 5, se_e2_a_small: rcut 6, both O H): the
ghost shell is sized for the larger cutoff whichever model comes first, so the deviation file is the same in
both orders (the deviation is symmetric in the models) and on 2 ranks as on 1. Before, a smaller-cutoff first
model left the other one a truncated neighbourhood.
Usage: deviation_cutoffs_test.py OPS_LIBRARY LMP RUN_MPI SMALL_RCUT.pt2 LARGE_RCUT.pt2"""

import os
import sys
import tempfile
import unittest

import numpy as np

from tests import unittest_main
from tests.lammps import harness

LMP = RUN_MPI = SMALL = LARGE = None


def deviation(directory):
    return np.loadtxt(os.path.join(directory, "devi.out"), ndmin=2)


class DeviationCutoffsTest(unittest.TestCase):
    def test_every_order_and_rank_count_gives_the_same_deviation(self):
        rng = np.random.default_rng(15)
        system = harness.dense_system(rng, (13.0, 11.0, 11.0), 50, 2)
        lammps = harness.Lammps(LMP, RUN_MPI, tempfile.mkdtemp())
        results = {}
        for order in [(SMALL, LARGE), (LARGE, SMALL)]:
            for nranks, grid in [(1, "1 1 1"), (2, "2 1 1")]:
                model = harness.Model(order[0], "O H", extra_style_args="out_freq 1 out_file devi.out")
                # Skin 0.3: a shell sized for the first model (5.3 A) misses neighbours of the other (6 A).
                script = harness.lammps_input(model, grid=grid, archives=" ".join(order), skin=0.3)
                name = f"{os.path.basename(order[0])}_first_{nranks}"
                code, output, directory = lammps.launch(name, nranks, system, script, timeout=200)
                self.assertEqual(code, 0, output[-3000:])
                results[name] = deviation(directory)
        reference = next(iter(results.values()))
        for name, devi in results.items():
            # step, then max/min/avg virial deviation, max/min/avg force deviation, energy deviation
            np.testing.assert_allclose(devi, reference, rtol=1e-9, atol=1e-11, err_msg=name)
        self.assertGreater(reference[0, 4], 0)  # the models do differ


def main():
    global LMP, RUN_MPI, SMALL, LARGE
    LMP, RUN_MPI, SMALL, LARGE = (os.path.abspath(a) for a in sys.argv[2:6])
    unittest_main.run(extra=4)


if __name__ == "__main__":
    main()
