"""What the benchmarks run on: water-density systems and the bench models' archives."""

import glob
import hashlib
import json
import os
import subprocess

import numpy as np

from tests.lammps import harness

DENSITY = 0.1  # atoms / Å^3, liquid water

# The bench models: the realistic DPA3 (tests/bench/configs), the example DPA2 and se_e2_a.
CONFIGS = {
    "dpa3": "tests/bench/configs/dpa3_realistic.json",
    "dpa2": "deepmd/models/examples/dpa2.json",
    "se_e2_a": "deepmd/models/examples/se_e2_a.json",
}


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


def export_models(tools: dict, models, directory: str) -> dict:
    """Exports each model's archive; reused while its configuration and the model code are unchanged."""
    os.makedirs(directory, exist_ok=True)
    code = hashlib.sha256()
    for source in sorted(glob.glob(os.path.join(tools["root"], "deepmd", "models", "*.py"))):
        with open(source, "rb") as f:
            code.update(f.read())
    archives = {}
    for model in models:
        config = os.path.join(tools["root"], CONFIGS[model])
        archive = os.path.join(directory, f"{model}.pt2")
        stamp = archive + ".config"
        with open(config) as f:
            wanted = json.dumps(json.load(f), sort_keys=True) + code.hexdigest()
        if not (os.path.exists(archive) and os.path.exists(stamp) and open(stamp).read() == wanted):
            subprocess.run([tools["python"], "-m", "deepmd.tools.export", "--ops-library", tools["ops_library"],
                            "--config", config, "--out", archive], check=True, stdout=subprocess.DEVNULL,
                           env=dict(os.environ, PYTHONPATH=tools["root"]))
            with open(stamp, "w") as f:
                f.write(wanted)
        archives[model] = archive
    return archives
