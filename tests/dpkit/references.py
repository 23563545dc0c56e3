"""deepmd-kit's reference outputs (../shared/deepmd-kit/references) and an evaluator that runs a
graph of this project on a reference case the way deepmd-kit's DeepEval does: coordinates wrapped into
the cell, periodic images out to rcut, ghost forces and atomic virials folded onto their owners.

The fixtures folder: see fixtures_dir()."""

import json
import os
from typing import Dict, List, Optional

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fixtures_dir() -> str:
    """$DEEPMD_KIT_FIXTURES; under bazel test the @deepmd_kit_fixtures runfiles; else ../shared/deepmd-kit."""
    path = os.environ.get("DEEPMD_KIT_FIXTURES", "")
    runfiles = os.path.join(os.environ.get("TEST_SRCDIR", ""), "deepmd_kit_fixtures")
    if not path and os.environ.get("TEST_SRCDIR") and os.path.isdir(os.path.join(runfiles, "models")):
        path = runfiles
    path = path or os.path.join(os.path.dirname(REPO), "shared", "deepmd-kit")
    if not os.path.isdir(os.path.join(path, "models")):
        raise FileNotFoundError(f"deepmd-kit fixtures not found at {path} (set DEEPMD_KIT_FIXTURES)")
    return path


def model_path(stem: str) -> str:
    folder = os.path.join(fixtures_dir(), "models")
    for ext in (".dp", ".yaml"):
        if os.path.exists(os.path.join(folder, stem + ext)):
            return os.path.join(folder, stem + ext)
    raise FileNotFoundError(f"no model {stem}.dp/.yaml in {folder}")


def model_stems() -> List[str]:
    return sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(fixtures_dir(), "models")))


def load_reference(stem: str) -> dict:
    with open(os.path.join(fixtures_dir(), "references", stem + ".json")) as f:
        return json.load(f)


def extended_system(coord: np.ndarray, atype: np.ndarray, box: Optional[np.ndarray], rcut: float) -> dict:
    """coord [n,3], box [3,3] rows = cell vectors or None. Extended coordinates (locals first, wrapped),
    types, mapping and an unsorted full neighbour list (every extended atom within rcut)."""
    coord = np.asarray(coord, dtype=np.float64).reshape(-1, 3)
    n = coord.shape[0]
    if box is None:
        ext, owner = coord, np.arange(n)
    else:
        box = np.asarray(box, dtype=np.float64).reshape(3, 3)
        frac = coord @ np.linalg.inv(box)
        frac -= np.floor(frac)
        local = frac @ box
        volume = abs(np.linalg.det(box))
        heights = [volume / np.linalg.norm(np.cross(box[(k + 1) % 3], box[(k + 2) % 3])) for k in range(3)]
        reps = [int(np.ceil(rcut / h)) for h in heights]
        shifts = [(a, b, c) for a in range(-reps[0], reps[0] + 1) for b in range(-reps[1], reps[1] + 1)
                  for c in range(-reps[2], reps[2] + 1) if (a, b, c) != (0, 0, 0)]
        images = [local] + [local + np.array(s, dtype=np.float64) @ box for s in shifts]
        ext = np.concatenate(images, axis=0)
        owner = np.tile(np.arange(n), len(images))
        d_min = np.sqrt(((ext[:, None, :] - local[None, :, :]) ** 2).sum(-1)).min(1)
        keep = (np.arange(ext.shape[0]) < n) | (d_min <= rcut + 1e-9)
        ext, owner = ext[keep], owner[keep]
    d = np.sqrt(((ext[None, :, :] - ext[:n, None, :]) ** 2).sum(-1))
    d[np.arange(n), np.arange(n)] = np.inf
    within = d <= rcut
    nnei = max(1, int(within.sum(1).max()))
    nlist = -np.ones((n, nnei), dtype=np.int64)
    rng = np.random.default_rng(5)
    for i in range(n):
        js = np.nonzero(within[i])[0]
        nlist[i, : len(js)] = rng.permutation(js)  # unsorted: the graph must sort
    atype = np.asarray(atype, dtype=np.int64)
    return {"coord": ext, "atype": atype[owner], "mapping": owner, "nlist": nlist, "nloc": n}


def evaluate(graph, case: dict, rcut: float, spin: bool = False) -> Dict[str, np.ndarray]:
    """Runs graph.forward_lower on a reference case; outputs flat like the reference file."""
    box = None if case.get("box") is None else np.asarray(case["box"]).reshape(3, 3)
    # Spin models see virtual atoms up to virtual_scale |S| (< 1 Å here) from their real atoms: images and
    # candidate neighbours must reach that much further (the model keeps only those within rcut).
    margin = 1.0 if spin else 0.0
    s = extended_system(np.asarray(case["coord"]), np.asarray(case["atype"]), box, rcut + margin)
    nloc, mapping = s["nloc"], torch.from_numpy(s["mapping"])
    args = [torch.from_numpy(s["coord"]).unsqueeze(0), torch.from_numpy(s["atype"]).unsqueeze(0)]
    if spin:
        spins = np.asarray(case["spin"], dtype=np.float64).reshape(-1, 3)[s["mapping"]]
        args.append(torch.from_numpy(spins).unsqueeze(0))
    args.append(torch.from_numpy(s["nlist"]).unsqueeze(0))
    fparam = torch.tensor(case["fparam"], dtype=torch.float64).reshape(1, -1) if case.get("fparam") else None
    aparam = (torch.tensor(case["aparam"], dtype=torch.float64).reshape(1, nloc, -1)
              if case.get("aparam") else None)
    out = graph.forward_lower(*args, mapping.unsqueeze(0), fparam, aparam, True)

    def fold(x: torch.Tensor, width: int) -> np.ndarray:
        folded = torch.zeros(nloc, width, dtype=torch.float64).index_add_(0, mapping, x[0].reshape(-1, width))
        return folded.reshape(-1).numpy()

    result = {
        "energy": np.asarray(float(out["energy"].reshape(-1)[0])),
        "force": fold(out["force"], 3),
        "virial": out["virial"].reshape(-1).numpy(),
        "atom_energy": out["atom_energy"].reshape(-1).numpy(),
        "atom_virial": fold(out["atom_virial"], 9),
    }
    if spin:
        result["force_mag"] = fold(out["force_mag"], 3)
    return result


def max_errors(result: Dict[str, np.ndarray], case: dict) -> Dict[str, float]:
    """Largest absolute difference per output present in both."""
    errors = {}
    for key, value in result.items():
        if case.get(key) is None:
            continue
        errors[key] = float(np.max(np.abs(np.asarray(case[key], dtype=np.float64).reshape(-1) - value.reshape(-1))))
    return errors
