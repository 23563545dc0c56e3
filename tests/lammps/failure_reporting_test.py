"""What LAMMPS users are told, on 2 ranks: an exception on one rank (DEEPMD_TEST_FAULT, a std::bad_alloc on
demand) stops every rank with its message, in log.lammps too where the ranks could agree, never a hang or a
silent death; `clear` before pair_style deepmd in lmp, and deviation keywords with one model, are errors that
name the cause and the fix; neighbours beyond sel are one warning with their count.
Usage: failure_reporting_test.py OPS_LIBRARY LMP RUN_MPI ARCHIVE (the registry's se_e2_a_small: O H)."""

import os
import sys
import tempfile
import unittest

import numpy as np

from tests import unittest_main
from tests.lammps import harness

LMP = RUN_MPI = ARCHIVE = None
APART = [(1, 3, 3), (3, 3, 3), (5, 6, 6), (7, 6, 6), (9, 9, 9), (11, 9, 9)]
HANG_OR_SUCCESS = (0, 124, 137)  # run_mpi.sh kills a hung job (137)


class FailureReportingTest(unittest.TestCase):
    def launch(self, name, script=None, fault=None, system=None, style_args=""):
        lammps = harness.Lammps(LMP, RUN_MPI, tempfile.mkdtemp())
        system = system or harness.System(np.array(APART, dtype=float), np.array([1, 2, 1, 2, 1, 2]),
                                          (12.0, 12.0, 12.0), 2)
        script = script or harness.lammps_input(harness.Model(ARCHIVE, "O H", extra_style_args=style_args),
                                                grid="2 1 1")
        if fault:
            os.environ["DEEPMD_TEST_FAULT"] = fault
        try:
            code, output, directory = lammps.launch(name, 2, system, script, timeout=60)
        finally:
            os.environ.pop("DEEPMD_TEST_FAULT", None)
        with open(os.path.join(directory, "log.lammps")) as f:
            log = f.read()
        return code, output, log

    def test_exception_in_the_runtime_on_one_rank_stops_both_with_its_message(self):
        # Rank 1 runs out of memory while its peer goes on to the ranks' agreement (before: it waited there).
        code, output, log = self.launch("fault_rebuild", fault="rebuild@1")
        self.assertNotIn(code, HANG_OR_SUCCESS, output[-3000:])
        message = "rank 1: preparing the model's inputs: out of memory"
        self.assertIn(message, output, output[-3000:])
        self.assertIn(message, log, log[-3000:])

    def test_exception_in_pair_style_on_one_rank_stops_both_with_its_message(self):
        # Before: rank 1's exception left lmp while rank 0 read the next command.
        code, output, log = self.launch("fault_settings", fault="settings@1")
        self.assertNotIn(code, HANG_OR_SUCCESS, output[-3000:])
        message = "pair_style deepmd: rank 1: pair_style: out of memory"
        self.assertIn(message, output, output[-3000:])
        self.assertIn(message, log, log[-3000:])

    def test_exception_outside_the_runtime_during_a_step_aborts_with_its_message(self):
        # Its peer may be in a communication already: the job is aborted, with the message on rank 1's stderr.
        code, output, _ = self.launch("fault_compute", fault="compute@1")
        self.assertNotIn(code, HANG_OR_SUCCESS, output[-3000:])
        self.assertIn("pair_style deepmd on rank 1: compute: out of memory", output, output[-3000:])

    def test_clear_then_pair_style_deepmd_names_cause_and_fix(self):
        script = "clear\n" + harness.lammps_input(harness.Model(ARCHIVE, "O H"), grid="2 1 1")
        code, output, log = self.launch("clear", script=script)
        self.assertNotIn(code, HANG_OR_SUCCESS, output[-3000:])
        self.assertIn("a 'clear' command discards them", output, output[-3000:])
        self.assertIn("Remove 'clear' from the input", log, log[-3000:])

    def test_deviation_keywords_with_one_model_name_cause_and_fix(self):
        code, output, _ = self.launch("one_model_atomic", style_args="out_file devi.out atomic")
        self.assertNotIn(code, HANG_OR_SUCCESS, output[-3000:])
        self.assertIn("'out_file' applies to the model deviation, which needs two or more models", output,
                      output[-3000:])

    def test_neighbours_beyond_sel_are_one_warning_with_their_count(self):
        # 125 H on a 1 A grid: most have more than the 92 H neighbours se_e2_a_small keeps within 6 A.
        grid = np.array([(2.0 + x, 2.0 + y, 2.0 + z) for x in range(5) for y in range(5) for z in range(5)])
        system = harness.System(grid, np.full(len(grid), 2), (20.0, 20.0, 20.0), 2)
        script = harness.lammps_input(harness.Model(ARCHIVE, "O H"), grid="2 1 1", steps=2)
        code, output, log = self.launch("beyond_sel", script=script, system=system)
        self.assertEqual(code, 0, output[-3000:])
        self.assertRegex(log, r"WARNING: '.*se_e2_a_small.pt2' keeps at most \[46 92\] neighbours of each type per "
                              r"atom within rcut 6 A \(sel\), but \d+ atom\(s\) have more \(up to 124\)")
        self.assertEqual(log.count("(sel)"), 1, log[-3000:])


def main():
    global LMP, RUN_MPI, ARCHIVE
    LMP, RUN_MPI, ARCHIVE = (os.path.abspath(a) for a in sys.argv[2:5])
    unittest_main.run(extra=3)


if __name__ == "__main__":
    main()
