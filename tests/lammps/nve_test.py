"""Energy conservation in NVE with the small DPA3 (examples/models/dpa3.json, a freshly initialised
deepmd-kit model) on 2 ranks (with-comm graph), 1,000 steps.

    nve_test.py OPS_LIBRARY LMP RUN_MPI ARCHIVE_DIR

64 atoms in an 11 Å box, relaxed first (an untrained model has no repulsive core, so a short-range WCA
wall, lj/cut through pair_style hybrid/overlay, keeps atoms apart, as ZBL does for real models), then
300 K. What is proven:
  - over 1,000 steps of 1 fs, |E(t) - E(0)| <= 1e-4 eV/atom and the fitted drift <= 2e-5 eV/atom/ps
    (measured: 2.2e-5 and 2e-7);
  - the fluctuation is velocity Verlet's own: halving the step divides it by ~4 (accepted 2.5-6.5,
    measured 4.0); forces inconsistent with the energy would leave an error that does not shrink.
Sanitizer builds (an order of magnitude slower) relax less, run 100 steps and check the |E - E0| bound only.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

from tests.lammps import harness
from tests.lammps.models import archive_path

NATOMS = 64
PAIR = ("pair_style hybrid/overlay deepmd {archive} lj/cut 2.4694\npair_modify shift yes\n"
        "pair_coeff * * deepmd O H\npair_coeff * * lj/cut 0.5 2.2\n")


def script(archive, setup, dt, steps):
    return "\n".join([
        "units metal", "atom_style atomic", "boundary p p p", "processors 2 1 1", "read_data data.lmp",
        PAIR.format(archive=archive), "neighbor 1.0 bin", setup,
        "velocity all create 300 8812 loop all", "thermo_style custom step pe ke etotal",
        "thermo_modify format float %.17g norm no", "thermo 10", f"timestep {dt}", "fix NVE all nve",
        f"run {steps}", ""])


def energies(directory):
    table = harness.read_thermo(os.path.join(directory, "log.lammps"), columns_are_virial=False)
    last = np.where(table[:, 0] == 0)[0][-1]  # the NVE run's rows
    return table[last:, 0], table[last:, 3]


def sanitized(binary):
    libraries = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, text=True).stdout
    return "libasan" in libraries or "libubsan" in libraries


def main(argv):
    lmp, run_mpi, archive_dir = (os.path.abspath(a) for a in argv[2:5])  # argv[1]: the ops library
    archive = archive_path(archive_dir, "dpa3")
    steps, relax_iterations = (100, 60) if sanitized(lmp) else (1000, 300)
    rng = np.random.default_rng(7)
    system = harness.dense_system(rng, (11.0, 11.0, 11.0), NATOMS, 2, min_dist=2.0)
    with tempfile.TemporaryDirectory() as work:
        lammps = harness.Lammps(lmp, run_mpi, work)
        relax = f"minimize 1e-12 1e-8 {relax_iterations} 3000\nwrite_data relaxed.data\nreset_timestep 0"
        code, output, coarse = lammps.launch("dt1", 2, system, script(archive, relax, 0.001, steps), timeout=600)
        assert code == 0, output[-3000:]
        times, e = energies(coarse)
        assert times[-1] == steps, times[-1]
        deviation = np.abs(e - e[0]).max() / NATOMS
        drift = np.polyfit(times * 0.001, e, 1)[0] / NATOMS  # eV/atom/ps
        print(f"NVE, 2 ranks, {steps} x 1 fs: max |E - E0| = {deviation:.3e} eV/atom, drift = {drift:.3e} eV/atom/ps")
        assert deviation <= 1e-4, deviation
        if steps < 1000:
            return 0
        assert abs(drift) <= 2e-5, drift
        code, output, fine = lammps.launch("dt05", 2, os.path.join(coarse, "relaxed.data"),
                                           script(archive, "", 0.0005, 400), timeout=600)
        assert code == 0, output[-3000:]
        _, e_fine = energies(fine)
        window = times <= 200  # the same 200 fs as the 400 half steps
        ratio = np.abs(e[window] - e[0]).max() / np.abs(e_fine - e_fine[0]).max()
        print(f"halving the step divides the fluctuation by {ratio:.2f}")
        assert 2.5 <= ratio <= 6.5, ratio
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
