"""Energy conservation in NVE with the DPA3 fitted to deepmd-kit's DFT water data (examples/water), on
2 ranks (with-comm graph), no wall or other help: real liquid water, 192 atoms, 300 K.

    nve_test.py OPS_LIBRARY LMP RUN_MPI ARCHIVE DATA [--one-timestep]

What is proven (the DFT frame is already a liquid: no relaxation):
  - over 200 fs at 0.5 fs (400 steps), |E(t) - E(0)| <= 2e-4 eV/atom and the fitted drift of E
    <= 1e-3 eV/atom/ps;
  - the fluctuation is velocity Verlet's own: the same 200 fs at 0.25 fs divide it by ~4 (accepted
    2.5-6.5); forces inconsistent with the energy would leave an error that does not shrink.
Sanitizer builds (an order of magnitude slower) run 40 steps and check the |E - E0| bound only;
--one-timestep (the current-LAMMPS twin, for CI time: the integrator is LAMMPS's, the forces the same
code) checks the bound and drift at 0.5 fs only.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

from tests.lammps import harness

NATOMS = 192
TIME_FS = 200.0


def script(archive, dt_fs, steps):
    return "\n".join([
        "units metal", "atom_style atomic", "boundary p p p", "processors 2 1 1", "read_data data.lmp",
        f"pair_style deepmd {archive}", "pair_coeff * * O H", "neighbor 1.0 bin",
        "velocity all create 300 8812 mom yes rot yes loop all", "thermo_style custom step pe ke etotal",
        "thermo_modify format float %.17g norm no", "thermo 4", f"timestep {dt_fs / 1000}", "fix NVE all nve",
        f"run {steps}", ""])


def energies(directory):
    table = harness.read_thermo(os.path.join(directory, "log.lammps"), columns_are_virial=False)
    return table[:, 0], table[:, 3]


def sanitized(binary):
    libraries = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, text=True).stdout
    return "libasan" in libraries or "libubsan" in libraries


def main(argv):
    lmp, run_mpi, archive, data = (os.path.abspath(a) for a in argv[2:6])  # argv[1]: the ops library
    short = sanitized(lmp)
    one_timestep = "--one-timestep" in argv[6:]
    with tempfile.TemporaryDirectory() as work:
        lammps = harness.Lammps(lmp, run_mpi, work)
        steps = 40 if short else int(TIME_FS / 0.5)
        code, output, coarse = lammps.launch("dt0.5", 2, data, script(archive, 0.5, steps), timeout=900)
        assert code == 0, output[-3000:]
        assert "running the with-comm graph on 2 MPI rank(s)" in output + open(
            os.path.join(coarse, "log.lammps")).read(), "2 ranks did not run the with-comm graph"
        steps_done, e = energies(coarse)
        assert steps_done[-1] == steps, steps_done[-1]
        deviation = np.abs(e - e[0]).max() / NATOMS
        drift = np.polyfit(steps_done * 0.5e-3, e, 1)[0] / NATOMS  # eV/atom/ps
        print(f"NVE water, 2 ranks, {steps} x 0.5 fs: max |E - E0| = {deviation:.3e} eV/atom, "
              f"drift = {drift:.3e} eV/atom/ps")
        ratio = None
        if not short and not one_timestep:  # the same time at half the step, before any verdict: the numbers tell what failed
            code, output, fine = lammps.launch("dt0.25", 2, data, script(archive, 0.25, 2 * steps), timeout=900)
            assert code == 0, output[-3000:]
            _, e_fine = energies(fine)
            ratio = np.abs(e - e[0]).max() / np.abs(e_fine - e_fine[0]).max()
            drift_fine = np.polyfit(np.arange(len(e_fine)) * 4 * 0.25e-3, e_fine, 1)[0] / NATOMS
            print(f"at 0.25 fs: max |E - E0| = {np.abs(e_fine - e_fine[0]).max() / NATOMS:.3e} eV/atom, drift = "
                  f"{drift_fine:.3e} eV/atom/ps; halving the step divides the fluctuation by {ratio:.2f}")
        assert deviation <= 2e-4, deviation
        if short:
            return 0
        assert abs(drift) <= 1e-3, drift
        if one_timestep:
            return 0
        assert 2.5 <= ratio <= 6.5, ratio
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
