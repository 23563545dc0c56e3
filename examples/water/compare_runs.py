"""The parity verdict of two LAMMPS runs of the same input (e.g. 1 rank and 2 ranks): every thermo
column of every run, compared row by row.

    compare_runs.py ONE.log OTHER.log [--rtol R]

R bounds |a - b| / max(|a|, 1) per value; exits 1 when a value differs by more or the tables differ in
shape. The default, 1e-5, is float32's (the water model's precision): each rank rounds its atoms' float32
terms, and the ranks sum forces and virials in another order than one rank does (measured: 1e-6 on the
pressure of 1,536 atoms); 1e-10 suits float64 models."""
import argparse
import sys

import numpy as np

from lammps_log import runs


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("one")
    p.add_argument("other")
    p.add_argument("--rtol", type=float, default=1e-5)
    args = p.parse_args(argv[1:])
    a, b = runs(args.one), runs(args.other)
    if len(a) != len(b) or any(x.rows.shape != y.rows.shape or x.columns != y.columns for x, y in zip(a, b)):
        print(f"PARITY FAILED: the logs' thermo tables differ in shape ({args.one}, {args.other})")
        return 1
    worst, where, nvalues = 0.0, "", 0
    for k, (x, y) in enumerate(zip(a, b)):
        error = np.abs(x.rows - y.rows) / np.maximum(np.abs(x.rows), 1.0)
        nvalues += error.size
        if error.size and error.max() > worst:
            r, c = np.unravel_index(np.argmax(error), error.shape)
            worst, where = float(error.max()), f"run {k + 1}, step {x.rows[r, 0]:.0f}, {x.columns[c]}"
    verdict = "PARITY OK" if worst <= args.rtol else "PARITY FAILED"
    print(f"{verdict}: {nvalues} thermo values of {len(a)} runs, largest relative difference {worst:.1e}"
          f"{' (' + where + ')' if where else ''}, tolerance {args.rtol:g}")
    return 0 if verdict == "PARITY OK" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
