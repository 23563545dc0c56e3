"""What the benchmarks run on: water-density systems, liquid water, and the bench models' archives."""

import glob
import hashlib
import json
import os
import subprocess
import zipfile

import numpy as np

from tests.lammps import harness

DENSITY = 0.1  # atoms / Å^3, liquid water

# The bench models: the DPA3 fitted to DFT water (examples/water: its .dp goes through the exporter as a
# user's model does; it runs on liquid water, where a physical configuration matters), and deepmd-kit
# training inputs of examples/models freshly initialised from the seed (production-size configs for
# cost, on water-density lattices): the realistic DPA3, the example DPA2 and se_e2_a; and deepmd-kit's
# production DPA3 and DPA2 medium (its examples/water inputs unchanged), run when asked for.
MODELS = {
    "water": ("examples/water/water_dpa3.dp", None),
    "dpa3": ("examples/models/dpa3_realistic.json", 11),
    "dpa2": ("examples/models/dpa2.json", 2),
    "se_e2_a": ("examples/models/se_e2_a.json", 4),
    "dpa3_production": ("examples/models/dpa3_production.json", 1),  # deepmd-kit's examples/water inputs
    "dpa2_medium": ("examples/models/dpa2_medium.json", 1),
}

# 1,536 atoms of liquid water at 300 K: deepmd-kit's DFT frame (examples/water/water.data) replicated
# 2x2x2, then 0.1 ps of NVT at 300 K and 5 fs of NVE with the fitted model (examples/water/in.liquid).
LIQUID = "examples/water/water_liquid.data"


def water_like(natoms: int, seed: int = 5) -> harness.System:
    """A jittered simple-cubic lattice at water's number density, one O (type 1) per two H (type 2):
    liquid-like neighbour counts without overlapping atoms."""
    side = (natoms / DENSITY) ** (1.0 / 3.0)
    per_side = int(np.ceil(natoms ** (1.0 / 3.0)))
    index = np.arange(natoms)
    grid = np.stack([index % per_side, (index // per_side) % per_side, index // per_side ** 2], axis=1)
    rng = np.random.default_rng(seed)
    positions = (grid + 0.5) * side / per_side + rng.normal(0.0, 0.15, (natoms, 3))
    types = np.where(index % 3 == 0, 1, 2)
    return harness.System(np.mod(positions, side), types, (side, side, side), 2)


def read_data(path: str) -> harness.System:
    """Atoms and orthorhombic box of a LAMMPS data file of atom_style atomic (as write_data writes)."""
    with open(path) as f:
        lines = [line.split("#")[0].split() for line in f]
    lo, hi, natoms, ntypes, atoms_at = np.zeros(3), np.zeros(3), 0, 0, None
    for k, words in enumerate(lines):
        if words[-1:] == ["atoms"]:
            natoms = int(words[0])
        elif words[-2:] == ["atom", "types"]:
            ntypes = int(words[0])
        elif len(words) == 4 and words[2][1:] == "lo":
            axis = "xyz".index(words[2][0])
            lo[axis], hi[axis] = float(words[0]), float(words[1])
        elif words[:1] == ["Atoms"]:
            atoms_at = k + 2
        elif words[-3:] == ["xy", "xz", "yz"] and any(float(w) != 0 for w in words[:3]):
            raise ValueError(f"{path}: triclinic boxes are not handled")
    rows = np.array([[float(w) for w in words[:5]] for words in lines[atoms_at:atoms_at + natoms]])
    rows = rows[np.argsort(rows[:, 0])]
    return harness.System(rows[:, 2:5] - lo, rows[:, 1].astype(int), tuple(hi - lo), ntypes)


def liquid_water(root: str, natoms: int) -> harness.System:
    """LIQUID replicated along x, then y, then z to natoms (1,536 times 1, 2, 4 or 8)."""
    base = read_data(os.path.join(root, LIQUID))
    copies = natoms // len(base.positions)
    factors = {1: (1, 1, 1), 2: (2, 1, 1), 4: (2, 2, 1), 8: (2, 2, 2)}.get(copies)
    if factors is None or copies * len(base.positions) != natoms:
        raise ValueError(f"liquid water comes in {len(base.positions)} x 1, 2, 4 or 8 atoms, not {natoms}")
    lengths = np.asarray(base.lengths)
    shifts = [np.array([i, j, k]) * lengths for i in range(factors[0]) for j in range(factors[1])
              for k in range(factors[2])]
    return harness.System(np.concatenate([base.positions + s for s in shifts]), np.tile(base.types, len(shifts)),
                          tuple(lengths * factors), base.ntypes)


def export_models(tools: dict, models, directory: str) -> dict:
    """Exports each model's archive; reused while its input, seed and the model code are unchanged."""
    os.makedirs(directory, exist_ok=True)
    code = hashlib.sha256()
    for package in ("models", "dpkit", "tools"):
        for source in sorted(glob.glob(os.path.join(tools["root"], "deepmd", package, "*.py"))):
            with open(source, "rb") as f:
                code.update(f.read())
    archives = {}
    for model in models:
        source, seed = MODELS[model]
        path = os.path.join(tools["root"], source)
        archive = os.path.join(directory, f"{model}.pt2")
        stamp = archive + ".config"
        with open(path, "rb") as f:
            wanted = hashlib.sha256(f.read()).hexdigest() + f" seed {seed} " + code.hexdigest()
        # A training input is initialised from the seed; a model file (.dp) is exported as it is.
        what = [path] if seed is None else ["--config", path, "--seed", str(seed)]
        if not (os.path.exists(archive) and os.path.exists(stamp) and open(stamp).read() == wanted):
            subprocess.run([tools["python"], "-m", "deepmd.tools.export", "--ops-library", tools["ops_library"]] +
                           what + ["--out", archive], check=True, stdout=subprocess.DEVNULL,
                           env=dict(os.environ, PYTHONPATH=tools["root"]))
            with open(stamp, "w") as f:
                f.write(wanted)
        archives[model] = archive
    return archives


def archive_metadata(archive: str) -> dict:
    """metadata.json of an archive (docs/model_archive.md)."""
    with zipfile.ZipFile(archive) as z:
        name = next(n for n in z.namelist() if n.endswith("/metadata.json"))
        return json.loads(z.read(name))
