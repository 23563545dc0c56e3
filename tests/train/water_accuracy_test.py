"""The committed water model (examples/water/water_dpa3.dp, through its exported archive) meets the
accuracy examples/water/README.md states on the held-out frames (deepmd-kit's water data_3), as
`dp_eval --system` measures it: force RMSE <= 0.15 eV/A, energy RMSE <= 5 meV/atom (issue targets), and
no worse than the recorded values by more than rounding. Usage: water_accuracy_test.py OPS DP_EVAL
ARCHIVE."""

import os
import re
import subprocess
import sys
import unittest

from tests import unittest_main

from deepmd.train.fit import water_dir

RECORDED = {"force": 0.1373, "energy_per_atom": 1.053e-3}  # examples/water/README.md


class WaterAccuracyTest(unittest.TestCase):
    def test_held_out_accuracy(self):
        dp_eval, archive = sys.argv[2:4]
        system = os.path.join(water_dir(), "data_3")
        out = subprocess.run([dp_eval, archive, "--system", system], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=600)
        self.assertEqual(out.returncode, 0, out.stdout[-3000:])

        def value(label):
            m = re.search(r"^" + re.escape(label) + r"\s*:\s*(\S+)", out.stdout, re.M)
            self.assertIsNotNone(m, f"no '{label}' in dp_eval's output:\n{out.stdout[-2000:]}")
            return float(m.group(1))

        self.assertEqual(int(value("# number of test data")), 80)
        force, energy = value("Force  RMSE"), value("Energy RMSE/Natoms")
        self.assertLessEqual(force, 0.15)
        self.assertLessEqual(energy, 5e-3)
        self.assertLessEqual(force, RECORDED["force"] * 1.001)
        self.assertLessEqual(energy, RECORDED["energy_per_atom"] * 1.01)


if __name__ == "__main__":
    unittest_main.run(extra=2)
