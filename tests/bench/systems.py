"""What the benchmarks run on: water-density systems and the bench models' archives."""

import glob
import hashlib
import json
import os
import subprocess
import zipfile

import numpy as np

from tests.lammps import harness

DENSITY = 0.1  # atoms / Å^3, liquid water

# The bench models (deepmd-kit training inputs of examples/models, freshly initialised from the seed): the
# realistic DPA3, the example DPA2 and se_e2_a.
MODELS = {
    "dpa3": ("examples/models/dpa3_realistic.json", 11),
    "dpa2": ("examples/models/dpa2.json", 2),
    "se_e2_a": ("examples/models/se_e2_a.json", 4),
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
        config = os.path.join(tools["root"], source)
        archive = os.path.join(directory, f"{model}.pt2")
        stamp = archive + ".config"
        with open(config) as f:
            wanted = json.dumps(json.load(f), sort_keys=True) + f" seed {seed} " + code.hexdigest()
        if not (os.path.exists(archive) and os.path.exists(stamp) and open(stamp).read() == wanted):
            subprocess.run([tools["python"], "-m", "deepmd.tools.export", "--ops-library", tools["ops_library"],
                            "--config", config, "--seed", str(seed), "--out", archive], check=True,
                           stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=tools["root"]))
            with open(stamp, "w") as f:
                f.write(wanted)
        archives[model] = archive
    return archives


def archive_metadata(archive: str) -> dict:
    """metadata.json of an archive (docs/model_archive.md)."""
    with zipfile.ZipFile(archive) as z:
        name = next(n for n in z.namelist() if n.endswith("/metadata.json"))
        return json.loads(z.read(name))
