"""N ranks == 1 rank in LAMMPS, for one model, on every processor grid of the parity suite.

    parity_test.py OPS_LIBRARY LMP RUN_MPI ARCHIVE_DIR MODEL [GRID ...]   (through tests/run_python_test.sh)

One periodic box of ~120 atoms (16 x 12 x 12 Å; the ghost cutoff is 6 Å, so `4 1 1` gives 4 Å thin
subdomains and ghosts travel several hops). Each run: `run 0`, then 5 steps of NVE with the neighbour
list rebuilt every step while fast atoms cross subdomain boundaries. Energy, virial, forces, per-atom
energy and (centroid) virial, and for spin models magnetic forces, at every step, against 1 rank.
GRID (e.g. 2x1x1) replaces the default grids.
"""
import os
import sys
import tempfile

import numpy as np

from tests.lammps import harness
from tests.lammps.models import MODELS, archive_path

GRIDS = [("2 1 1", 2), ("1 2 1", 2), ("3 1 1", 3), ("4 1 1", 4), ("2 2 2", 8)]
LENGTHS = (16.0, 12.0, 12.0)


def crossings(reference: harness.Result, grid):
    """How many atoms changed subdomain of `grid` between the first and the last dumped step."""
    steps = sorted(reference.frames)
    counts = [int(g) for g in grid.split()]

    def cells(frame):
        x = np.stack([frame["x"], frame["y"], frame["z"]], axis=1) % np.array(LENGTHS)
        return np.floor(x / (np.array(LENGTHS) / counts)).astype(int)

    return int(np.any(cells(reference.frames[steps[0]]) != cells(reference.frames[steps[-1]]), axis=1).sum())


def main(argv):
    lmp, run_mpi, archive_dir = (os.path.abspath(a) for a in argv[2:5])  # argv[1]: the ops library
    name = argv[5]
    grids = [(g.replace("x", " "), int(np.prod([int(n) for n in g.split("x")]))) for g in argv[6:]] or GRIDS
    model = MODELS[name]
    model = harness.Model(archive_path(archive_dir, name), model.elements, model.spin, model.extra_style_args)
    rng = np.random.default_rng(20261126)
    system = harness.dense_system(rng, LENGTHS, 120, model.elements.count(" ") + 1, velocity_scale=60.0)
    if model.spin:
        directions = rng.standard_normal((120, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        system.spins = np.concatenate([directions, rng.uniform(0.5, 2.0, (120, 1))], axis=1)
    # Spin lists reach 2 x 0.3 x 2 = 1.2 Å (twice the farthest virtual atom) beyond rcut 5 + skin 1.
    comm_cutoff = 7.5 if model.spin else None
    tolerance = MODELS[name].tolerance
    with tempfile.TemporaryDirectory() as work:
        lammps = harness.Lammps(lmp, run_mpi, work)
        script = lambda grid: harness.lammps_input(model, grid=grid, steps=5, rebuild_every_step=True,
                                                   comm_cutoff=comm_cutoff)
        reference = lammps.run("ref", 1, system, script("1 1 1"))
        assert "running the regular graph on 1 MPI rank(s)" in reference.output, reference.output[-2000:]
        message_passing = "graphs in the archive: regular, with-comm" in reference.output
        moved = crossings(reference, "2 1 1")
        assert moved > 0, "no atom crossed a subdomain boundary: the migration check would be vacuous"
        failures = []
        for grid, nranks in grids:
            result = lammps.run(grid.replace(" ", ""), nranks, system, script(grid))
            graph = "with-comm" if message_passing else "regular"
            if f"running the {graph} graph on {nranks} MPI rank(s)" not in result.output:
                failures.append(f"[{grid}] the log does not say the {graph} graph ran on {nranks} ranks")
            problems = harness.compare(reference, result, **tolerance, label=f"[{grid}] ")
            print(f"{name} {grid} ({nranks} ranks): {'OK' if not problems else 'DIFFERENT'}"
                  f" ({moved} atoms crossed the 2 1 1 boundaries)")
            failures += problems
        if model.spin:
            fm = reference.frames[0]["d2_fm[1]"]
            assert np.abs(fm).max() > 0, "magnetic forces are all zero: the spin comparison would be vacuous"
        if failures:
            print("\n".join(failures[:40]))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
