"""LAMMPS against deepmd-kit's reference outputs, for one registry model (tests/registry), every case of
its references file, on 1 rank and on the grids `2 1 1`, `3 1 1`, `2 2 1`:

    references_test.py OPS_LIBRARY LMP RUN_MPI REGISTRY.json ARCHIVE_DIR REFERENCES_DIR MODEL [spin_package]

Energy (thermo pe), forces, the pair virial (compute pressure NULL virial x volume), per-atom energy,
per-atom virial (compute stress/atom, 6 columns) and centroid stress (9 columns) and, for spin models,
magnetic forces, all against the reference through deepmd-kit's LAMMPS conventions (README of the
fixtures §1): virial (xx yy zz xy xz yz) = virial[0 4 8 3 6 7]; centroid column k = -nktv2p *
atom_virial[9i + (0 4 8 3 6 7 1 2 5)[k]]. Tolerance: float64 1e-10 absolute (energy: 1e-10 per atom
of the ~3e4 eV water energies' summation order, see README §6), float32 1e-6 relative.

Spins: custom per-atom arrays (d2_sp in, d2_fm = -dE/dS out), or with `spin_package` LAMMPS's SPIN
package (atom_style spin; fm in rad/ps, which deepmd-kit's pair_deepspin.cpp fills with -dE/dS |S| / ħ:
the test converts back with deepmd-kit's ħ and checks fm = 0 on atoms without spin).
"""
import json
import os
import sys
import tempfile
from typing import Tuple

import numpy as np

from tests.lammps import harness

GRIDS = [("1 1 1", 1), ("2 1 1", 2), ("3 1 1", 3), ("2 2 1", 4)]
HBAR_EV_PS = 6.5821191e-4  # deepmd-kit's source/lmp/pair_deepspin.cpp
VOIGT = [0, 4, 8, 3, 6, 7]
CENTROID = [0, 4, 8, 3, 6, 7, 1, 2, 5]


def lammps_system(case: dict) -> Tuple[harness.System, str]:
    """The case as a LAMMPS system (ids in reference order, LAMMPS type = model type + 1) and its boundary."""
    coord = np.asarray(case["coord"], dtype=float).reshape(-1, 3)
    types = np.asarray(case["atype"], dtype=int) + 1
    if case.get("box") is None:  # no periodicity: a fixed box with room around the cluster
        lo, hi = coord.min(0) - 5.0, coord.max(0) + 5.0
        shifted = coord - lo
        return harness.System(shifted, types, list(hi - lo), 0), "f f f"
    box = np.asarray(case["box"], dtype=float).reshape(3, 3)
    if abs(box[0, 1]) + abs(box[0, 2]) + abs(box[1, 2]) > 0:
        raise ValueError("LAMMPS boxes are lower triangular; this case's cell is not")
    lengths = [box[0, 0], box[1, 1], box[2, 2]]
    tilt = (box[1, 0], box[2, 0], box[2, 1])
    return harness.System(coord, types, lengths, 0, tilt), "p p p"


def expected(case: dict) -> dict:
    """The reference in the quantities LAMMPS reports (per atom, reference order)."""
    n = len(case["atype"])
    virial = np.asarray(case["virial"], dtype=float)
    out = {"pe": float(case["energy"]), "virial": virial[VOIGT],
           "f": np.asarray(case["force"], dtype=float).reshape(n, 3),
           "c_pe": np.asarray(case["atom_energy"], dtype=float)}
    if case.get("atom_virial") is not None:
        av = np.asarray(case["atom_virial"], dtype=float).reshape(n, 9)
        out["st"] = -av[:, VOIGT]
        out["cst"] = -av[:, CENTROID]
    if case.get("force_mag") is not None:
        out["fm"] = np.asarray(case["force_mag"], dtype=float).reshape(n, 3)
    # A free cluster's virial depends on the origin, but moving it into the LAMMPS box adds
    # (sum_j F_j) x shift = 0: the reference virial holds as it is.
    return out


def style_arguments(case: dict) -> str:
    args = ""
    if case.get("fparam"):
        args += " fparam " + " ".join(repr(float(v)) for v in case["fparam"])
    if case.get("aparam"):
        n = len(case["atype"])
        aparam = np.asarray(case["aparam"], dtype=float).reshape(n, -1)
        if not np.all(aparam == aparam[0]):
            raise ValueError("pair_style deepmd takes one aparam row for every atom; this case's differ")
        args += " aparam " + " ".join(repr(float(v)) for v in aparam[0])
    return args


def spins_column(case: dict) -> np.ndarray:
    s = np.asarray(case["spin"], dtype=float).reshape(-1, 3)
    norm = np.linalg.norm(s, axis=1, keepdims=True)
    direction = np.where(norm > 0, s / np.where(norm > 0, norm, 1.0), np.array([[1.0, 0.0, 0.0]]))
    return np.concatenate([direction, norm], axis=1)


def magnetic_forces(frame: dict, spins: np.ndarray, package: bool) -> np.ndarray:
    """-dE/dS (eV/μB) from the dump: d2_fm as it is, or the SPIN package's fm divided by |S| / ħ."""
    if not package:
        return np.stack([frame[f"d2_fm[{k}]"] for k in range(1, 4)], axis=1)
    fm = np.stack([frame[f"c_fm[{k}]"] for k in range(1, 4)], axis=1)
    norm = spins[:, 3:4]
    if np.abs(fm[norm[:, 0] == 0]).max(initial=0.0) != 0:
        raise AssertionError("fm is not 0 on atoms without spin")
    return np.where(norm > 0, fm * HBAR_EV_PS / np.where(norm > 0, norm, 1.0), 0.0)


def main(argv):
    lmp, run_mpi = os.path.abspath(argv[2]), os.path.abspath(argv[3])
    package = argv[8:] == ["spin_package"]
    with open(argv[4]) as f:
        entry = json.load(f)[argv[7]]
    archive = os.path.abspath(os.path.join(argv[5], argv[7] + ".pt2"))
    stem = os.path.splitext(entry["source"])[0]
    with open(os.path.join(argv[6], stem + ".json")) as f:
        reference = json.load(f)
    relative = entry["precision"] == "float32"
    tolerance = 1e-6 if relative else 1e-10
    type_map = reference["type_map"]
    failures, checked = [], 0
    with tempfile.TemporaryDirectory() as work:
        lammps = harness.Lammps(lmp, run_mpi, work)
        for case_name, case in sorted(reference["cases"].items()):
            system, boundary = lammps_system(case)
            system.ntypes = len(type_map)
            if entry["spin"]:
                system.spins = spins_column(case)
                system.spin_package = package
            model = harness.Model(archive, " ".join(type_map), entry["spin"], style_arguments(case),
                                  spin_package=package)
            comm = reference["rcut"] + 2.0 if entry["spin"] else None  # virtual atoms: up to 0.5 Å further
            want = expected(case)
            for grid, nranks in GRIDS:
                script = harness.lammps_input(model, grid=grid, boundary=boundary, comm_cutoff=comm)
                result = lammps.run(f"{case_name}_{nranks}", nranks, system, script)
                frame = result.frames[0]
                got = {"pe": result.thermo[0, 1], "virial": result.thermo[0, 3:9],
                       "f": np.stack([frame["fx"], frame["fy"], frame["fz"]], axis=1), "c_pe": frame["c_pe"],
                       "st": np.stack([frame[f"c_st[{k}]"] for k in range(1, 7)], axis=1) / harness.NKTV2P_METAL,
                       "cst": np.stack([frame[f"c_cst[{k}]"] for k in range(1, 10)], axis=1) / harness.NKTV2P_METAL}
                if entry["spin"]:
                    got["fm"] = magnetic_forces(frame, system.spins, package)
                worst, worst_key = 0.0, ""
                for key, value in want.items():
                    a, b = np.asarray(value, dtype=float), np.asarray(got[key], dtype=float)
                    scale = max(np.abs(a).max(initial=0.0), 1e-300) if relative else 1.0
                    deviation = float(np.abs(a - b).max(initial=0.0)) / scale
                    if deviation > worst:
                        worst, worst_key = deviation, key
                checked += 1
                verdict = "ok" if worst <= tolerance else "DIFFERENT"
                print(f"{argv[7]} {case_name} [{grid}]{' (SPIN package)' if package else ''}: {verdict} "
                      f"(worst {worst:.3e} in {worst_key})")
                if worst > tolerance:
                    failures.append(f"{case_name} [{grid}] {worst_key}: {worst:.3e} > {tolerance:.0e}")
    print(f"{checked - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
