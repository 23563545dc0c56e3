"""Spin dynamics of the SPIN package with pair_style deepmd/spin: N ranks == 1 rank (current LAMMPS, plugin load).

    spin_dynamics_test.py OPS_LIBRARY LMP RUN_MPI ARCHIVE

atom_style spin, the dpa3_spin example model (Ni with spin, O without), 120 atoms with random spins and
fast atoms (they cross subdomains), `fix precession/spin zeeman` (a 10 T field, its energy in pe) and
`fix nve/spin lattice moving` for 10 steps of 1 fs, neighbour lists rebuilt every step. On 2 1 1,
3 1 1 and 2 2 1 (4 ranks) against 1 rank: pe, virial, positions, forces, spins and fm (pair + Zeeman) of
every atom at every step.

fix nve/spin sweeps the spins in one order on 1 rank and sector by sector on several ranks, and on
several ranks it needs a pair spin/* style's cutoff to size the sectors: `pair_style hybrid/overlay`
adds spin/exchange with J = 0 (no energy, no force, 1 Å cutoff) for that. The spins then move under
the Zeeman field only (each on its own), so the order does not matter and the trajectories must agree;
the atoms move under deepmd/spin's forces, which depend on the spins. (fix nve/spin computes the field
that rotates a spin from pair spin/* styles and fixes, not from fm: deepmd/spin's fm drive minimizers
such as min_style spin, and are checked against deepmd-kit in references_*_plugin_test.)
"""
import os
import sys
import tempfile

import numpy as np

from tests.lammps import harness
from tests.lammps.parity_test import crossings

GRIDS = [("2 1 1", 2), ("3 1 1", 3), ("2 2 1", 4)]
LENGTHS = (16.0, 12.0, 12.0)
STEPS = 10
COLUMNS = "id type x y z fx fy fz c_s[1] c_s[2] c_s[3] c_s[4] c_s[5] c_s[6] c_s[7]"


def script(archive, grid):
    return "\n".join([
        "units metal", "atom_style spin", "atom_modify map array", "boundary p p p", f"processors {grid}",
        "read_data data.lmp",
        f"pair_style hybrid/overlay deepmd/spin {archive} spin/exchange 1.0",
        "pair_coeff * * deepmd/spin Ni O", "pair_coeff * * spin/exchange exchange 1.0 0.0 0.0 1.0",
        "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check no",
        "comm_modify cutoff 7.5",  # rcut 5 + skin 1 + the virtual atoms' 2 x 0.3 x 2 Å
        "compute vir all pressure NULL virial", "compute s all property/atom spx spy spz sp fmx fmy fmz",
        "fix Z all precession/spin zeeman 10.0 0.0 0.0 1.0", "fix_modify Z energy yes",
        "fix I all nve/spin lattice moving", "timestep 0.001",
        "thermo_style custom step pe vol " + " ".join(f"c_vir[{k}]" for k in range(1, 7)),
        "thermo_modify format float %.17g norm no", "thermo 1",
        f"dump D all custom 1 dump.txt {COLUMNS}", "dump_modify D sort id format float %.17g",
        f"run {STEPS}", ""])


def main(argv):
    lmp, run_mpi, archive = (os.path.abspath(a) for a in argv[2:5])
    rng = np.random.default_rng(20261202)
    system = harness.dense_system(rng, LENGTHS, 120, 2, velocity_scale=60.0)
    directions = rng.standard_normal((120, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    system.spins = np.concatenate([directions, rng.uniform(0.5, 2.0, (120, 1))], axis=1)
    system.spins[system.types == 2, 3] = 0.0  # O has no spin in the model
    system.spin_package = True
    with tempfile.TemporaryDirectory() as work:
        lammps = harness.Lammps(lmp, run_mpi, work)
        reference = lammps.run("ref", 1, system, script(archive, "1 1 1"))
        first, last = reference.frames[0], reference.frames[STEPS]
        spin = lambda frame: np.stack([frame[f"c_s[{k}]"] for k in range(1, 4)], axis=1)
        fm = np.stack([first[f"c_s[{k}]"] for k in range(5, 8)], axis=1)
        # Not vacuous: spins turn, fm is not 0 where there is spin, atoms cross the 2 1 1 boundary.
        turned = np.abs(spin(last) - spin(first)).max()
        assert turned > 1e-6, f"the spins did not move ({turned})"
        assert np.abs(fm[system.types == 1]).min() > 0, "fm is 0 on an atom with spin"
        moved = crossings(reference, "2 1 1")
        assert moved > 0, "no atom crossed a subdomain boundary"
        failures = []
        for grid, nranks in GRIDS:
            result = lammps.run(grid.replace(" ", ""), nranks, system, script(archive, grid))
            problems = harness.compare(reference, result, atol=1e-12, rtol=1e-8, label=f"[{grid}] ")
            print(f"spin dynamics {grid} ({nranks} ranks): {'OK' if not problems else 'DIFFERENT'} "
                  f"({STEPS} steps, spins turned by up to {turned:.2e}, {moved} atoms crossed 2 1 1)")
            failures += problems
        if failures:
            print("\n".join(failures[:40]))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
