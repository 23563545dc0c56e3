"""Refits a model's energy bias to data, as deepmd-kit's `dp change-bias` does (mode "change").

    bazel run //deepmd/train:change_bias -- MODEL.dp --out NEW.dp [--systems S1 S2 ...]

The model's energy on each frame is subtracted from the frame's label; the per-type least squares of
those residuals on the frames' atom-type counts (minimum-norm, deepmd-kit's lstsq) is added to the
model's out_bias. Weights are untouched, so forces do not change; only the energy's constant per-type
part does. Why it is needed after a fit: while the learning rate is high the energy wanders as a whole
(an offset common to all frames), and the remaining steps of a short fit do not bring it back; the
offset measured on the training frames is the one the held-out frames show (examples/water/README.md).

Default systems: the fit's training data (water data_0..data_2), never the held-out data_3.
"""

import argparse
import os
import sys
from typing import List, Optional, Sequence

import numpy as np

from deepmd.dpkit.build import model_from_dict
from deepmd.dpkit.init import write_dp
from deepmd.dpkit.serialization import UnsupportedModel, load_model_dict
from deepmd.train.fit import attach_topology, evaluate_loaded, load_systems, water_dir


def residual_bias(model, frames, ntypes: int) -> np.ndarray:
    """Per-type energies b minimising sum_frames (E_label - E_model - counts.b)^2 (minimum-norm)."""
    counts = np.stack([np.bincount(f.atype, minlength=ntypes) for f in frames]).astype(np.float64)
    residual = np.array([f.energy - evaluate_loaded(model, f)[0] for f in frames], dtype=np.float64)
    return np.linalg.lstsq(counts, residual, rcond=None)[0]


def change_bias(path: str, out: str, systems: Sequence[str], max_frames: int = 0) -> List[float]:
    """Writes PATH with its out_bias refitted on the systems (the first max_frames frames; 0: all) to OUT;
    returns the change per type (eV)."""
    tree = load_model_dict(path)
    if tree["model"].get("type") not in (None, "standard"):
        raise UnsupportedModel(f"{path}: change_bias handles standard energy models only")
    frames, _ = load_systems(systems, tree["model"]["type_map"], max_frames)
    if not frames:
        raise ValueError("no frames in " + ", ".join(systems))
    model = model_from_dict(tree["model"])
    attach_topology(frames, float(model.rcut))
    delta = residual_bias(model, frames, len(tree["model"]["type_map"]))
    out_bias = np.asarray(tree["model"]["@variables"]["out_bias"])
    out_bias[0, :, 0] += delta.astype(out_bias.dtype)
    tree["model"]["@variables"]["out_bias"] = out_bias
    partial = out + ".partial"
    write_dp(tree, partial)
    os.replace(partial, out)
    return delta.tolist()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="deepmd-kit .dp / .yaml model")
    p.add_argument("--out", required=True, help="the model with the refitted bias (.dp)")
    p.add_argument("--systems", nargs="+", help="deepmd-kit npy systems (default: water data_0..data_2)")
    p.add_argument("--max-frames", type=int, default=0, help="use only the first N frames (0: all)")
    args = p.parse_args(argv)
    systems = args.systems or [os.path.join(water_dir(), f"data_{i}") for i in range(3)]
    try:
        delta = change_bias(args.model, args.out, systems, args.max_frames)
    except (UnsupportedModel, FileNotFoundError, ValueError, KeyError) as e:
        print(f"change_bias: {e}", file=sys.stderr)
        return 1
    print(f"change_bias: out_bias += {np.round(delta, 6).tolist()} eV per type (least squares over "
          f"{', '.join(systems)}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
