"""Runs LAMMPS on generated systems and reads back what it wrote.

The parity oracle of the LAMMPS tests: the same data file and input on 1 rank and on N ranks, results
read from dumps (sorted by atom id) and thermo output, compared with tolerances fit for the precision.

Two LAMMPS: our launcher (Debian's LAMMPS with the styles built in), or a LAMMPS with the PLUGIN
package when $DEEPMD_LAMMPS_PLUGIN names the plugin: every input then starts with `plugin load` of it
(tests/lammps/lammps_test.bzl declares each test both ways).
"""
import dataclasses
import os
import shutil
import subprocess
from typing import Dict, List, Optional, Sequence

import numpy as np

NKTV2P_METAL = 1.6021765e6  # LAMMPS's pressure * volume -> eV factor in metal units (force.cpp)


@dataclasses.dataclass
class System:
    positions: np.ndarray            # [n, 3]
    types: np.ndarray                # [n], LAMMPS types (1-based)
    lengths: Sequence[float]         # box edges along x, y, z (lo = 0)
    ntypes: int
    tilt: Sequence[float] = (0.0, 0.0, 0.0)   # xy, xz, yz
    velocities: Optional[np.ndarray] = None   # [n, 3], Å/ps
    spins: Optional[np.ndarray] = None        # [n, 4]: direction, magnitude
    spin_package: bool = False                # spins in `atom_style spin` Atoms lines, not a Spins section


def random_positions(rng, lo, hi, count, min_dist, existing=None):
    """Uniform positions in the box [lo, hi) at least min_dist apart (no periodic images: tests keep
    atoms away from periodic walls where it matters)."""
    points = [] if existing is None else list(existing)
    start = len(points)
    while len(points) - start < count:
        p = lo + (hi - lo) * rng.random(3)
        if all(np.linalg.norm(p - q) >= min_dist for q in points):
            points.append(p)
    return np.array(points[start:])


def dense_system(rng, lengths, count, ntypes, min_dist=1.6, tilt=(0.0, 0.0, 0.0), velocity_scale=0.0):
    """Atoms spread over a periodic box (minimum distance checked through the periodic images), with
    Gaussian velocities of standard deviation `velocity_scale` Å/ps per component when it is not 0."""
    lengths = np.asarray(lengths, dtype=float)
    cell = np.array([[lengths[0], 0, 0], [tilt[0], lengths[1], 0], [tilt[1], tilt[2], lengths[2]]])
    frac = []
    while len(frac) < count:
        f = rng.random(3)
        ok = True
        for g in frac:
            d = f - g
            d -= np.round(d)
            if np.linalg.norm(d @ cell) < min_dist:
                ok = False
                break
        if ok:
            frac.append(f)
    positions = np.array(frac) @ cell
    types = rng.integers(1, ntypes + 1, count)
    velocities = velocity_scale * rng.standard_normal((count, 3)) if velocity_scale else None
    return System(positions, types, lengths, ntypes, tilt, velocities)


def write_data(path, system: System):
    n = len(system.positions)
    lx, ly, lz = system.lengths
    lines = ["LAMMPS data file (deepmd-gnn tests)", "", f"{n} atoms", f"{system.ntypes} atom types", "",
             f"0 {lx!r} xlo xhi", f"0 {ly!r} ylo yhi", f"0 {lz!r} zlo zhi"]
    if any(t != 0 for t in system.tilt):
        lines.append("{!r} {!r} {!r} xy xz yz".format(*system.tilt))
    lines += ["", "Masses", ""] + [f"{t} 16.0" for t in range(1, system.ntypes + 1)]
    if system.spin_package:  # id type x y z spx spy spz |s|
        lines += ["", "Atoms # spin", ""]
        lines += [f"{i + 1} {system.types[i]} {p[0]!r} {p[1]!r} {p[2]!r} " + " ".join(repr(float(x)) for x in s)
                  for i, (p, s) in enumerate(zip(system.positions, system.spins))]
    else:
        lines += ["", "Atoms # atomic", ""]
        lines += [f"{i + 1} {system.types[i]} {p[0]!r} {p[1]!r} {p[2]!r}" for i, p in enumerate(system.positions)]
    if system.velocities is not None:
        lines += ["", "Velocities", ""]
        lines += [f"{i + 1} {v[0]!r} {v[1]!r} {v[2]!r}" for i, v in enumerate(system.velocities)]
    if system.spins is not None and not system.spin_package:
        lines += ["", "Spins", ""]
        lines += [f"{i + 1} " + " ".join(repr(float(x)) for x in s) for i, s in enumerate(system.spins)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


@dataclasses.dataclass
class Model:
    archive: str
    elements: str                 # pair_coeff names, one per LAMMPS type ("O H NULL")
    spin: bool = False
    extra_style_args: str = ""    # after the archives
    spin_package: bool = False    # spin: atom_style spin (SPIN package: sp, fm) instead of custom arrays


def lammps_input(model: Model, grid="1 1 1", boundary="p p p", steps=0, rebuild_every_step=False, skin=1.0,
                 comm_cutoff=None, archives=None, extra="", dump_every=1):
    """An input that reads data.lmp and writes log.lammps (thermo every step) and dump.txt. Magnetic
    forces are the dump's d2_fm[1..3] (custom arrays: -dE/dS) or c_fm[1..3] (SPIN package: fm)."""
    spin, package = model.spin, model.spin and model.spin_package
    per_atom = "id type x y z fx fy fz c_pe " + " ".join(f"c_st[{k}]" for k in range(1, 7)) + " " + \
        " ".join(f"c_cst[{k}]" for k in range(1, 10))
    if spin:
        per_atom += " c_fm[1] c_fm[2] c_fm[3]" if package else " d2_fm[1] d2_fm[2] d2_fm[3]"
    lines = [
        "units metal", f"atom_style {'spin' if package else 'atomic'}", f"boundary {boundary}",
        f"processors {grid}",
        "fix SP all property/atom d2_sp 4 ghost yes" if spin and not package else "",
        "read_data data.lmp" + (" fix SP NULL Spins" if spin and not package else ""),
        f"pair_style {'deepmd/spin' if spin else 'deepmd'} {archives or model.archive} {model.extra_style_args}",
        f"pair_coeff * * {model.elements}",
        f"neighbor {skin} bin",
        "neigh_modify every 1 delay 0 check no" if rebuild_every_step else "neigh_modify every 1 delay 0 check yes",
        f"comm_modify cutoff {comm_cutoff}" if comm_cutoff else "",
        "compute pe all pe/atom", "compute st all stress/atom NULL virial",
        "compute cst all centroid/stress/atom NULL virial", "compute vir all pressure NULL virial",
        "compute fm all property/atom fmx fmy fmz" if package else "",
        "thermo_style custom step pe vol " + " ".join(f"c_vir[{k}]" for k in range(1, 7)),
        "thermo_modify format float %.17g norm no", "thermo 1",
        f"dump D all custom {dump_every} dump.txt {per_atom}", "dump_modify D sort id format float %.17g",
        extra,
        "run 0",
    ]
    if steps:
        lines += ["timestep 0.001", "fix NVE all nve", f"run {steps}"]
    return "\n".join(line for line in lines if line) + "\n"


@dataclasses.dataclass
class Result:
    thermo: np.ndarray                 # rows: step pe vol virial(6) in eV (pressure * vol / nktv2p)
    frames: Dict[int, Dict[str, np.ndarray]]  # step -> column -> values (sorted by id)
    output: str
    directory: str


def sanitizer_runtime(binary: str) -> Optional[str]:
    """The AddressSanitizer runtime a binary links, if any (a sanitized plugin in an lmp that is not)."""
    libraries = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, text=True).stdout
    for line in libraries.splitlines():
        words = line.split()
        if words and words[0].startswith("libasan") and len(words) >= 3:
            return words[2]
    return None


class Lammps:
    def __init__(self, lmp: str, run_mpi: str, workdir: str, plugin: Optional[str] = None):
        """`plugin`: the plugin to `plugin load` first in every input; default $DEEPMD_LAMMPS_PLUGIN."""
        self.lmp, self.run_mpi, self.workdir = lmp, run_mpi, workdir
        plugin = plugin or os.environ.get("DEEPMD_LAMMPS_PLUGIN")
        self.plugin = os.path.abspath(plugin) if plugin else None
        self.preload = sanitizer_runtime(self.plugin) if self.plugin else None

    def script(self, script: str) -> str:
        """The input as this LAMMPS runs it."""
        return f"plugin load {self.plugin}\n" + script if self.plugin else script

    def launch(self, name: str, nranks: int, system: System, script: str, timeout: int = 240):
        """Runs in its own directory; returns (returncode, output, directory)."""
        directory = os.path.join(self.workdir, name)
        os.makedirs(directory, exist_ok=True)
        if isinstance(system, str):  # a data file LAMMPS wrote
            shutil.copyfile(system, os.path.join(directory, "data.lmp"))
        else:
            write_data(os.path.join(directory, "data.lmp"), system)
        with open(os.path.join(directory, "in.lmp"), "w") as f:
            f.write(self.script(script))
        env = dict(os.environ, MPI_TEST_TIMEOUT=str(timeout))
        if self.preload:  # ASan must come first; lmp itself is not instrumented
            env["LD_PRELOAD"] = self.preload
        proc = subprocess.run([self.run_mpi, str(nranks), self.lmp, "-in", "in.lmp", "-log", "log.lammps",
                               "-screen", "screen.txt"], cwd=directory, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        output = proc.stdout
        screen = os.path.join(directory, "screen.txt")
        if os.path.exists(screen):
            with open(screen) as f:
                output = f.read() + output
        return proc.returncode, output, directory

    def run(self, name: str, nranks: int, system: System, script: str, timeout: int = 240) -> Result:
        code, output, directory = self.launch(name, nranks, system, script, timeout)
        if code != 0:
            raise AssertionError(f"LAMMPS '{name}' on {nranks} ranks exited with {code}:\n{output[-4000:]}")
        if self.plugin and "Loading plugin: deepmd" not in output:
            raise AssertionError(f"LAMMPS '{name}' did not say it loaded the plugin:\n{output[-4000:]}")
        return Result(read_thermo(os.path.join(directory, "log.lammps")),
                      read_dump(os.path.join(directory, "dump.txt")), output, directory)


def read_thermo(path, columns_are_virial=True) -> np.ndarray:
    """The thermo rows of the log whose columns are those of its last thermo header (step pe vol
    virial[6] as lammps_input writes them, or any other columns)."""
    blocks, columns = [], None
    with open(path) as f:
        for line in f:
            words = line.split()
            if words[:1] == ["Step"]:
                columns = words
                blocks.append((columns, []))
                continue
            if columns and len(words) == len(columns):
                try:
                    blocks[-1][1].append([float(w) for w in words])
                except ValueError:
                    columns = None
            elif columns:
                columns = None
    last = blocks[-1][0]
    table = np.array([row for names, rows in blocks if names == last for row in rows])
    if columns_are_virial:
        table[:, 3:9] *= table[:, 2:3] / NKTV2P_METAL  # pressure -> virial (eV)
    return table


def read_dump(path) -> Dict[int, Dict[str, np.ndarray]]:
    frames = {}
    with open(path) as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        assert lines[i].startswith("ITEM: TIMESTEP"), lines[i]
        step = int(lines[i + 1])
        n = int(lines[i + 3])
        header = lines[i + 8].split()[2:]
        body = np.array([[float(w) for w in line.split()] for line in lines[i + 9:i + 9 + n]]).reshape(n, -1)
        frames[step] = {name: body[:, k] for k, name in enumerate(header)}
        i += 9 + n
    return frames


def compare(reference: Result, other: Result, atol: float, rtol: float = 0.0, label: str = "") -> List[str]:
    """Differences beyond |a - b| <= atol + rtol max|a| (per quantity), as messages (empty when they agree)."""
    problems = []

    def check(what, a, b):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape != b.shape:
            problems.append(f"{label}{what}: shapes {a.shape} and {b.shape}")
            return
        bad = np.abs(a - b) > atol + rtol * np.abs(a).max(initial=0.0)
        if bad.any():
            k = np.argmax(np.abs(a - b))
            problems.append(f"{label}{what}: {bad.sum()} values differ, worst {a.flat[k]!r} vs {b.flat[k]!r}")

    names = ["step", "pe", "vol"] + [f"virial[{k}]" for k in range(1, 7)]
    for k, column in enumerate(names):
        if reference.thermo.shape == other.thermo.shape:
            check(f"thermo {column}", reference.thermo[:, k], other.thermo[:, k])
        else:
            check("thermo", reference.thermo, other.thermo)
            break
    if sorted(reference.frames) != sorted(other.frames):
        problems.append(f"{label}dump steps {sorted(reference.frames)} vs {sorted(other.frames)}")
        return problems
    for step, frame in reference.frames.items():
        for column, values in frame.items():
            scale = 1.0 / NKTV2P_METAL if column.startswith(("c_st", "c_cst")) else 1.0
            check(f"step {step} {column}", values * scale, other.frames[step][column] * scale)
    return problems
