"""The shared entry point of the Python test scripts: load the ops library (argv[1]), hand the next
`extra` arguments to the script, run unittest, end with the plain "N passed, M failed" line."""

import sys
import unittest

import torch


def run(extra: int = 0):
    """Returns nothing: exits with 0 when every test passed. Extra arguments are in sys.argv[2:2+extra]
    when the module's tests run (read them in setUpClass or before calling run)."""
    torch.ops.load_library(sys.argv[1])
    rest = sys.argv[2 + extra:]
    result = unittest.main(module="__main__", argv=[sys.argv[0]] + rest, exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
