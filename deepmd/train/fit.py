"""Fits a DPA3 model, in deepmd-kit's format, to the energies and forces of deepmd-kit data systems.

    bazel run //deepmd/train:fit -- [--input IN.json] [--epochs N] [--out model.dp] [...]
    bazel run //deepmd/tools:export -- model.dp --out model.pt2

Not a second deepmd-kit: only what a small fit needs (README.md).

* Model: the `model` section of a deepmd-kit training input (default: water_dpa3.json beside this file)
  is initialised by deepmd.dpkit.init.model_dict_from_input(section, seed); the trained model is
  deepmd.dpkit's own module built from that tree (build.model_from_dict), unchanged. deepmd.dpkit keeps
  weights as buffers; the trainer replaces each trainable buffer by a float leaf tensor of the same
  value, dtype and shape with requires_grad (TrainableModel), so the forward math is exactly
  deepmd.dpkit's. The type-embedding table, which deepmd.dpkit computes once from its network, is
  recomputed from that network's (trainable) weights before every evaluation, with the same ops.
  After training the tensors are written back into the tree (same shapes and dtypes) and the tree is
  saved with deepmd.dpkit.init.write_dp: a deepmd-kit `.dp` file that //deepmd/tools:export imports.
  The file is reloaded through deepmd.dpkit.build.load_model and must give the trainer's energy and
  forces on a frame (float64: 1e-10 eV, eV/A).
* Energy bias: per-type least squares of the training frames' energies on their atom-type counts,
  minimum-norm (numpy lstsq) when the counts are rank-deficient (water: O:H always 1:2), as deepmd-kit
  does; stored as the model's out_bias (fitting bias_atom_e stays 0). Descriptor statistics are the
  ones init.py writes (DPA3: davg 0, dstd fix_stat_std, as deepmd-kit).
* Loss (deepmd-kit's `ener` loss): pref_e (dE/N)^2 + pref_f mean(dF^2) per frame, forces
  -dE/dx by autograd with create_graph; pref = limit + (start - limit) lr/start_lr.
* Optimiser: Adam, one frame per step, frames shuffled every epoch; learning rate deepmd-kit's `exp`
  schedule: start_lr decay_rate^(step // decay_steps), decay_rate chosen so that the last step reaches
  stop_lr (deepmd-kit's LearningRateExp, decay_steps shortened as deepmd-kit does when it is not
  below the number of steps).
* Output: a line per epoch (epoch, lr, train energy RMSE/atom and force RMSE over the epoch's steps,
  validation energy RMSE/atom and force RMSE, seconds), a JSON log (configuration, per-epoch rows,
  per-step loss) and a PNG learning curve.
* Deterministic on CPU for a given seed and --threads (torch.use_deterministic_algorithms).

Data: deepmd-kit's npy systems (type.raw, optional type_map.raw, set.*/coord.npy, box.npy, energy.npy,
force.npy; a `nopbc` file or no box.npy: open boundaries). Default: the water data
(../shared/deepmd-kit/data/water or $DEEPMD_KIT_FIXTURES/data/water): training data_0..data_2,
validation data_3."""

import argparse
import copy
import glob
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from deepmd.dpkit.build import load_model, model_from_dict
from deepmd.dpkit.init import model_dict_from_input, write_dp
from deepmd.dpkit.network import Layer, Network
from deepmd.dpkit.serialization import UnsupportedModel

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INPUT = os.path.join(HERE, "water_dpa3.json")

# Arrays of the tree that are statistics, not weights (never trained here).
_STATISTICS = {"davg", "dstd", "bias_atom_e", "out_std", "fparam_avg", "fparam_inv_std", "aparam_avg",
               "aparam_inv_std", "case_embd", "default_fparam_tensor"}


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


class Frame:
    """One labelled frame: coord [n, 3], box [3, 3] (rows = cell vectors) or None, atype [n] (the model's
    type indices), energy (eV), force [n, 3] (eV/A); float64. `topology` is filled by attach_topology."""

    def __init__(self, coord, box, atype, energy, force, name):
        self.coord, self.box, self.atype = coord, box, atype
        self.energy, self.force, self.name = energy, force, name
        self.topology: Optional[Dict[str, torch.Tensor]] = None

    @property
    def natoms(self) -> int:
        return int(self.coord.shape[0])


def water_dir() -> str:
    """deepmd-kit's water data: $DEEPMD_KIT_FIXTURES/data/water, the @deepmd_kit_fixtures runfiles,
    or ../shared/deepmd-kit/data/water beside the workspace."""
    candidates = []
    if os.environ.get("DEEPMD_KIT_FIXTURES"):
        candidates.append(os.path.join(os.environ["DEEPMD_KIT_FIXTURES"], "data", "water"))
    repo = os.path.dirname(os.path.dirname(HERE))
    candidates.append(os.path.join(os.path.dirname(repo), "deepmd_kit_fixtures", "data", "water"))  # runfiles
    for root in (os.environ.get("BUILD_WORKSPACE_DIRECTORY", ""), repo):
        if root:
            candidates.append(os.path.join(os.path.dirname(root), "shared", "deepmd-kit", "data", "water"))
    for path in candidates:
        if os.path.isdir(path):
            return path
    raise FileNotFoundError("deepmd-kit's water data not found (looked in " + ", ".join(candidates) +
                            "); give --train-systems and --valid-systems or set DEEPMD_KIT_FIXTURES")


def load_system(path: str, type_map: List[str]) -> List[Frame]:
    """The frames of one deepmd-kit npy system, atom types mapped onto the model's type_map by name."""
    if not os.path.isfile(os.path.join(path, "type.raw")):
        raise FileNotFoundError(f"{path}: not a deepmd-kit system (no type.raw)")
    atype = np.loadtxt(os.path.join(path, "type.raw"), dtype=np.int64, ndmin=1)
    names_file = os.path.join(path, "type_map.raw")
    if os.path.isfile(names_file):
        with open(names_file) as f:
            names = f.read().split()
        missing = sorted({names[t] for t in atype} - set(type_map))
        if missing:
            raise ValueError(f"{path}: elements {missing} are not in the model's type_map {type_map}")
        atype = np.array([type_map.index(names[t]) for t in atype], dtype=np.int64)
    elif atype.max() >= len(type_map):
        raise ValueError(f"{path}: type {atype.max()} but the model has {len(type_map)} types (and no type_map.raw)")
    nopbc = os.path.isfile(os.path.join(path, "nopbc"))
    sets = sorted(glob.glob(os.path.join(path, "set.*")))
    if not sets:
        raise FileNotFoundError(f"{path}: no set.* folders")
    frames = []
    n = atype.shape[0]
    for s in sets:
        coord = np.load(os.path.join(s, "coord.npy")).astype(np.float64).reshape(-1, n, 3)
        nf = coord.shape[0]
        energy = np.load(os.path.join(s, "energy.npy")).astype(np.float64).reshape(nf)
        force = np.load(os.path.join(s, "force.npy")).astype(np.float64).reshape(nf, n, 3)
        box_file = os.path.join(s, "box.npy")
        box = None if nopbc or not os.path.isfile(box_file) else np.load(box_file).astype(np.float64).reshape(nf, 3, 3)
        for i in range(nf):
            frames.append(Frame(coord[i], None if box is None else box[i], atype, float(energy[i]), force[i],
                                f"{os.path.basename(os.path.normpath(path))}/{os.path.basename(s)}#{i}"))
    return frames


def load_systems(paths: Sequence[str], type_map: List[str], max_frames: int = 0) -> Tuple[List[Frame], List[str]]:
    """The frames of several systems in order (the first max_frames of them when max_frames > 0) and
    the systems they come from."""
    frames: List[Frame] = []
    used: List[str] = []
    for path in paths:
        frames.extend(load_system(path, type_map))
        used.append(path)
        if 0 < max_frames <= len(frames):
            break
    return (frames[:max_frames] if max_frames > 0 else frames), used


def extended_topology(coord: np.ndarray, box: Optional[np.ndarray], rcut: float) -> Dict[str, np.ndarray]:
    """Periodic images within rcut of a local atom: extended atom a is atom owner[a] moved by shift[a]
    (ext = coord[owner] + shift; the first n are the atoms themselves, wrapped into the cell), and the
    unsorted full neighbour list of the local atoms over the extended ones (every atom within rcut)."""
    n = coord.shape[0]
    if box is None:
        owner = np.arange(n)
        shift = np.zeros((n, 3))
    else:
        frac = coord @ np.linalg.inv(box)
        wrap = -np.floor(frac) @ box
        local = coord + wrap
        volume = abs(np.linalg.det(box))
        heights = [volume / np.linalg.norm(np.cross(box[(k + 1) % 3], box[(k + 2) % 3])) for k in range(3)]
        reps = [int(math.ceil(rcut / h)) for h in heights]
        images = np.array([(a, b, c) for a in range(-reps[0], reps[0] + 1) for b in range(-reps[1], reps[1] + 1)
                           for c in range(-reps[2], reps[2] + 1) if (a, b, c) != (0, 0, 0)], dtype=np.float64)
        owners = [np.arange(n)]
        shifts = [wrap]
        for image in images:
            moved = local + image @ box
            d2 = ((moved[:, None, :] - local[None, :, :]) ** 2).sum(-1).min(1)
            keep = np.nonzero(d2 <= rcut * rcut)[0]
            owners.append(keep)
            shifts.append(wrap[keep] + image @ box)
        owner = np.concatenate(owners)
        shift = np.concatenate(shifts)
    ext = coord[owner] + shift
    d2 = ((ext[None, :, :] - ext[:n, None, :]) ** 2).sum(-1)
    d2[np.arange(n), np.arange(n)] = np.inf
    within = d2 <= rcut * rcut
    nnei = max(1, int(within.sum(1).max()))
    nlist = -np.ones((n, nnei), dtype=np.int64)
    for i in range(n):
        js = np.nonzero(within[i])[0]
        nlist[i, : js.shape[0]] = js
    return {"owner": owner, "shift": shift, "nlist": nlist}


def attach_topology(frames: Sequence[Frame], rcut: float) -> None:
    """Computes each frame's extended system once (positions do not change during a fit)."""
    for f in frames:
        t = extended_topology(f.coord, f.box, rcut)
        owner = torch.from_numpy(t["owner"])
        f.topology = {
            "owner": owner,
            "shift": torch.from_numpy(t["shift"]),
            "atype": torch.from_numpy(f.atype)[owner].unsqueeze(0),
            "mapping": owner.unsqueeze(0),
            "nlist": torch.from_numpy(t["nlist"]).unsqueeze(0),
        }


def energy_bias(frames: Sequence[Frame], ntypes: int) -> np.ndarray:
    """Per-type energies b minimising sum_frames (E - counts.b)^2, minimum-norm (deepmd-kit's lstsq)."""
    counts = np.stack([np.bincount(f.atype, minlength=ntypes) for f in frames]).astype(np.float64)
    energies = np.array([f.energy for f in frames], dtype=np.float64)
    bias, _, _, _ = np.linalg.lstsq(counts, energies, rcond=None)
    return bias


# --------------------------------------------------------------------------------------------------
# The trainable model: deepmd.dpkit's module with its weights as leaf tensors
# --------------------------------------------------------------------------------------------------

Tokens = Tuple[Any, ...]


def _get(tree: Any, tokens: Tokens) -> Any:
    for t in tokens:
        tree = tree[t]
    return tree


def _set(tree: Any, tokens: Tokens, value: Any) -> None:
    _get(tree, tokens[:-1])[tokens[-1]] = value


def _path(tokens: Tokens) -> str:
    return "".join(f"[{t}]" if isinstance(t, int) else ("." if i else "") + str(t) for i, t in enumerate(tokens))


def _variable_paths(node: Any, tokens: Tokens = (), below: bool = False):
    """(tokens, array) of every array of the tree (the leaves below '@variables')."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _variable_paths(v, tokens + (k,), below or k == "@variables")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _variable_paths(v, tokens + (i,), below)
    elif below and node is not None:
        yield tokens, node


class TrainableModel:
    """deepmd.dpkit's StandardModel of a DPA3 tree, its weights turned into leaf tensors that Adam
    updates; `tree()` writes them back into a copy of the tree.

    Bound: every Layer's w/b/idt (DPA3's edge/angle embeddings and repflow-layer linears, whose
    SplitLinear row blocks are written back concatenated; the fitting nets), the res_residual vectors,
    and the type-embedding network. Not trained: davg/dstd, bias_atom_e, out_bias/out_std (statistics)
    and nodes marked trainable false. Any other array of the tree is an error: nothing is left silently
    untrained."""

    def __init__(self, tree: Dict[str, Any]):
        if tree.get("type", "standard") != "standard":
            raise UnsupportedModel(f"fit.py trains standard energy models; this one is {tree.get('type')!r}")
        descriptor = tree.get("descriptor", {})
        if descriptor.get("type") != "dpa3":
            raise UnsupportedModel(f"fit.py trains DPA3 models; this descriptor is {descriptor.get('type')!r}")
        self._tree = copy.deepcopy(tree)
        self.model = model_from_dict(copy.deepcopy(tree))
        self.type_map: List[str] = list(self.model.type_map)
        self.ntypes = len(self.type_map)
        self.rcut = float(self.model.rcut)
        self.params: List[torch.Tensor] = []
        self._writers: List[Tuple[Tokens, Callable[[], np.ndarray]]] = []
        self._frozen: List[Tokens] = []
        self._bind_dpa3(self.model.descriptor, ("descriptor",))
        for i, net in enumerate(self.model.fitting.nets.networks):
            self._bind_network(net, ("fitting", "nets", "networks", i))
        self._writers.append((("@variables", "out_bias"), lambda: self.model.out_bias.detach().numpy().copy()))
        self._check_coverage()

    # ---- binding ---------------------------------------------------------------------------------
    def _leaf(self, module: torch.nn.Module, name: str) -> torch.Tensor:
        t = getattr(module, name).detach().clone().requires_grad_(True)
        module._buffers[name] = t  # the module reads the buffer by name: same math, now differentiable
        self.params.append(t)
        return t

    def _trainable(self, tokens: Tokens) -> bool:
        node = _get(self._tree, tokens)
        return bool(node.get("trainable", True)) if isinstance(node, dict) else True

    def _array_writer(self, tokens: Tokens, value: Callable[[], torch.Tensor]) -> None:
        orig = np.asarray(_get(self._tree, tokens))
        self._writers.append((tokens, lambda: value().detach().numpy().astype(orig.dtype).reshape(orig.shape)))

    def _bind_layer(self, layer: Layer, tokens: Tokens) -> None:
        if not self._trainable(tokens):
            self._frozen.append(tokens)
            return
        for name, present in (("w", True), ("b", layer.has_bias), ("idt", layer.has_idt)):
            if present:
                t = self._leaf(layer, name)
                self._array_writer(tokens + ("@variables", name), lambda t=t: t)

    def _bind_split(self, split: torch.nn.Module, tokens: Tokens) -> None:
        if not split.present:
            return
        if not self._trainable(tokens):
            self._frozen.append(tokens)
            return
        blocks = []
        for name in ("w0", "w1", "w2", "w3"):
            if getattr(split, name).shape[0] > 0:
                self._leaf(split, name)
            blocks.append(name)
        self._array_writer(tokens + ("@variables", "w"),
                           lambda: torch.cat([getattr(split, n) for n in blocks], dim=0))
        for name, present in (("b", split.has_bias), ("idt", split.has_idt)):
            if present:
                t = self._leaf(split, name)
                self._array_writer(tokens + ("@variables", name), lambda t=t: t)

    def _bind_network(self, net: Network, tokens: Tokens) -> None:
        for k, layer in enumerate(net.layers):
            self._bind_layer(layer, tokens + ("layers", k))

    def _bind_dpa3(self, d: torch.nn.Module, tokens: Tokens) -> None:
        node = _get(self._tree, tokens)
        trainable = bool(node.get("trainable", True))
        rv = tokens + ("repflow_variable",)
        self._bind_layer(d.edge_embd, rv + ("edge_embd",))
        self._bind_layer(d.angle_embd, rv + ("angle_embd",))
        for i, layer in enumerate(d.layers):
            lt = rv + ("repflow_layers", i)
            lnode = _get(self._tree, lt)
            for name in ("node_self_mlp", "node_sym_linear", "edge_angle_linear2", "a_compress_n_linear",
                         "a_compress_e_linear"):
                if isinstance(lnode.get(name), dict):
                    self._bind_layer(getattr(layer, name), lt + (name,))
            for name in ("node_edge_linear", "edge_self_linear", "edge_angle_linear1", "angle_self_linear"):
                self._bind_split(getattr(layer, name), lt + (name,))
            if layer.style == 2:  # res_residual: the vectors r_k are trainable in deepmd-kit
                for key in ("n_residual", "e_residual", "a_residual"):
                    vectors = lnode.get("@variables", {}).get(key)
                    if not vectors:
                        continue
                    if not trainable:
                        self._frozen.append(lt + ("@variables", key))
                        continue
                    t = self._leaf(layer, key)
                    for k in range(len(vectors)):
                        self._array_writer(lt + ("@variables", key, k), lambda t=t, k=k: t[k])
        # The type embedding: deepmd.dpkit evaluates its network once into the table `tebd`; here the
        # network is kept and the table recomputed from it (the same ops as type_embedding_table).
        te = tokens + ("type_embedding", "embedding")
        self.tebd_net = Network(_get(self._tree, te), _path(te))
        self.tebd_owner = d
        if self._trainable(tokens + ("type_embedding",)):
            self._bind_network(self.tebd_net, te)
        else:
            self._frozen.append(te)

    def _check_coverage(self) -> None:
        bound = {w[0] for w in self._writers}
        left = []
        for tokens, _ in _variable_paths(self._tree):
            if tokens in bound:
                continue
            if any(tokens[: len(f)] == f for f in self._frozen):
                continue
            if any(isinstance(t, str) and t in _STATISTICS for t in tokens):
                continue
            left.append(_path(tokens))
        if left:
            raise UnsupportedModel("fit.py does not know how to train these arrays of the model: " + ", ".join(left))

    # ---- evaluation ------------------------------------------------------------------------------
    def refresh_type_embedding(self) -> None:
        net = self.tebd_net
        table = net(torch.eye(self.ntypes, dtype=net.dtype))
        self.tebd_owner._buffers["tebd"] = torch.cat([table, torch.zeros(1, table.shape[1], dtype=table.dtype)], 0)

    def set_out_bias(self, bias: np.ndarray) -> None:
        self.model.out_bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float64)).reshape(1, self.ntypes, 1))

    def energy_force(self, frame: Frame, create_graph: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Energy (0-d float64) and forces [n, 3] = -dE/dx (differentiable in the weights when
        create_graph) of one frame."""
        topo = frame.topology
        coord = torch.from_numpy(frame.coord).requires_grad_(True)
        ext = (coord[topo["owner"]] + topo["shift"]).unsqueeze(0)
        self.refresh_type_embedding()
        atom_energy = self.model.atomic_energies(ext, topo["atype"], topo["nlist"], topo["mapping"], None, None, None)
        energy = atom_energy.sum()
        (grad,) = torch.autograd.grad([energy], [coord], create_graph=create_graph)
        return energy, -grad

    def tree(self) -> Dict[str, Any]:
        """The model dict with the current weights and out_bias (same shapes and dtypes as given)."""
        out = copy.deepcopy(self._tree)
        with torch.no_grad():
            for tokens, value in self._writers:
                _set(out, tokens, value())
        return out


def evaluate_loaded(model: torch.nn.Module, frame: Frame) -> Tuple[float, np.ndarray]:
    """Energy and forces (ghost forces folded onto their owners) of a model loaded from a file, through
    its graph interface `compute` on the frame's extended system."""
    topo = frame.topology
    ext = (torch.from_numpy(frame.coord)[topo["owner"]] + topo["shift"]).unsqueeze(0)
    out = model.compute(ext, topo["atype"], topo["nlist"], topo["mapping"], None, None, None, False)
    force = torch.zeros(frame.natoms, 3, dtype=torch.float64).index_add_(0, topo["owner"], out["force"][0])
    return float(out["energy"].reshape(-1)[0]), force.numpy()


# --------------------------------------------------------------------------------------------------
# Schedule and loss (deepmd-kit's LearningRateExp and EnergyStdLoss)
# --------------------------------------------------------------------------------------------------


class LearningRate:
    def __init__(self, start_lr: float, stop_lr: float, decay_steps: int, stop_steps: int):
        if decay_steps >= stop_steps:  # deepmd-kit's LearningRateExp does the same
            decay_steps = 100 if stop_steps // 10 > 100 else stop_steps // 100 + 1
        self.start_lr, self.stop_lr, self.decay_steps = start_lr, stop_lr, max(1, decay_steps)
        self.decay_rate = math.exp(math.log(stop_lr / start_lr) / (max(stop_steps, 1) / self.decay_steps))

    def __call__(self, step: int) -> float:
        return max(self.start_lr * self.decay_rate ** (step // self.decay_steps), self.stop_lr)


def prefactor(start: float, limit: float, lr: float, start_lr: float) -> float:
    return limit + (start - limit) * lr / start_lr


def metrics(trainer: TrainableModel, frames: Sequence[Frame]) -> Dict[str, float]:
    """Energy RMSE per atom and force RMSE (per component) of the current model on frames."""
    se, sf, nf = 0.0, 0.0, 0
    for f in frames:
        energy, force = trainer.energy_force(f, create_graph=False)
        se += ((float(energy) - f.energy) / f.natoms) ** 2
        sf += float(((force.detach().numpy() - f.force) ** 2).sum())
        nf += f.natoms * 3
    return {"energy_rmse_per_atom": math.sqrt(se / max(len(frames), 1)), "force_rmse": math.sqrt(sf / max(nf, 1))}


# --------------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------------


def read_input(path: str) -> Dict[str, Any]:
    with open(path) as f:
        config = json.load(f)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UnsupportedModel(f"{path}: not a deepmd-kit training input (no `model` section)")
    return config


def settings(args: argparse.Namespace, config: Dict[str, Any]) -> Dict[str, Any]:
    """Flags first, then the input's learning_rate / loss sections, then deepmd-kit's usual values."""
    lr, loss = config.get("learning_rate", {}) or {}, config.get("loss", {}) or {}
    training = config.get("training", {}) or {}
    if lr.get("type", "exp") != "exp":
        raise UnsupportedModel(f"learning_rate.type {lr.get('type')!r}: fit.py has deepmd-kit's 'exp' schedule only")
    if loss.get("type", "ener") != "ener":
        raise UnsupportedModel(f"loss.type {loss.get('type')!r}: fit.py has deepmd-kit's 'ener' loss only")

    def pick(flag, section, key, default):
        value = getattr(args, flag)
        return value if value is not None else section.get(key, default)

    return {
        "start_lr": float(pick("start_lr", lr, "start_lr", 1e-3)),
        "stop_lr": float(pick("stop_lr", lr, "stop_lr", 1e-5)),
        "decay_steps": int(pick("decay_steps", lr, "decay_steps", 5000)),
        "start_pref_e": float(pick("start_pref_e", loss, "start_pref_e", 0.02)),
        "limit_pref_e": float(pick("limit_pref_e", loss, "limit_pref_e", 1.0)),
        "start_pref_f": float(pick("start_pref_f", loss, "start_pref_f", 1000.0)),
        "limit_pref_f": float(pick("limit_pref_f", loss, "limit_pref_f", 1.0)),
        # deepmd-kit's training.gradient_max_norm: the gradient's 2-norm clipped to it (0: no clipping)
        "gradient_max_norm": float(pick("gradient_max_norm", training, "gradient_max_norm", 0.0)),
    }


def fit(args: argparse.Namespace, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Runs the fit the flags describe; writes the .dp, the JSON log and the plot; returns the log dict
    (with the TrainableModel under "trainer", the frames under "train_frames" / "valid_frames")."""
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    config = read_input(args.input)
    section = config["model"]
    s = settings(args, config)
    t0 = time.time()
    trainer = TrainableModel(model_dict_from_input(section, args.seed))
    if args.train_systems is None or args.valid_systems is None:
        water = water_dir()
    train_paths = args.train_systems or [os.path.join(water, f"data_{i}") for i in range(3)]
    valid_paths = args.valid_systems or [os.path.join(water, "data_3")]
    train, train_paths = load_systems(train_paths, trainer.type_map, args.max_train_frames)
    valid, valid_paths = load_systems(valid_paths, trainer.type_map, args.max_valid_frames)
    if not train:
        raise ValueError("no training frames")
    attach_topology(train + valid, trainer.rcut)
    bias = energy_bias(train, trainer.ntypes)
    trainer.set_out_bias(bias)
    nsteps = args.epochs * len(train)
    schedule = LearningRate(s["start_lr"], s["stop_lr"], s["decay_steps"], nsteps)
    optimizer = torch.optim.Adam(trainer.params, lr=s["start_lr"])
    rng = np.random.default_rng(args.seed)
    nparams = int(sum(p.numel() for p in trainer.params))
    log(f"fit: {len(train)} training frames ({', '.join(train_paths)}), {len(valid)} validation frames; "
        f"{nparams} weights; {args.epochs} epochs = {nsteps} steps; lr {s['start_lr']:g} -> {s['stop_lr']:g} "
        f"(decay every {schedule.decay_steps} steps); out_bias {np.round(bias, 4).tolist()}; "
        f"setup {time.time() - t0:.1f} s")

    history: Dict[str, Any] = {
        "input": os.path.abspath(args.input), "model_section": section, "settings": s, "seed": args.seed,
        "threads": args.threads, "train_systems": [os.path.abspath(p) for p in train_paths],
        "valid_systems": [os.path.abspath(p) for p in valid_paths], "train_frames": len(train),
        "valid_frames": len(valid), "weights": nparams, "out_bias": bias.tolist(), "epochs": [], "steps": [],
    }
    header = (f"{'epoch':>5} {'lr':>9} {'trn_e/atom':>11} {'trn_f':>9} {'val_e/atom':>11} {'val_f':>9} "
              f"{'seconds':>8}")
    log(header)

    def row(epoch, lr, train_m, valid_m, seconds):
        history["epochs"].append({"epoch": epoch, "lr": lr, "train": train_m, "valid": valid_m, "seconds": seconds})
        te = f"{train_m['energy_rmse_per_atom']:11.3e}" if train_m else f"{'-':>11}"
        tf = f"{train_m['force_rmse']:9.4f}" if train_m else f"{'-':>9}"
        ve = f"{valid_m['energy_rmse_per_atom']:11.3e}" if valid_m else f"{'-':>11}"
        vf = f"{valid_m['force_rmse']:9.4f}" if valid_m else f"{'-':>9}"
        log(f"{epoch:5d} {lr:9.3e} {te} {tf} {ve} {vf} {seconds:8.1f}")

    # What a checkpoint must agree with to be continued: the same fit, so the schedule and data order hold.
    signature = json.dumps({"section": section, "settings": s, "seed": args.seed, "epochs": args.epochs,
                            "train": [f.name for f in train], "valid": [f.name for f in valid]}, sort_keys=True)
    checkpoint = os.path.splitext(args.out)[0] + ".ckpt"
    first_epoch, step = 1, 0
    if args.resume and os.path.exists(checkpoint):
        state = torch.load(checkpoint)
        if state["signature"] != signature:
            raise ValueError(f"{checkpoint} belongs to a different fit (input, flags, data or --epochs differ); "
                             "remove it or rerun with the flags that made it")
        with torch.no_grad():
            for p, saved in zip(trainer.params, state["params"]):
                p.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        history, first_epoch, step = state["history"], state["epoch"] + 1, state["step"]
        log(f"resumed from {checkpoint} after epoch {state['epoch']} (step {step})")
    else:
        start = time.time()
        row(0, schedule(0), None, metrics(trainer, valid) if valid else None, time.time() - start)
    last_epoch = min(args.epochs, args.stop_after_epoch) if args.stop_after_epoch > 0 else args.epochs
    for epoch in range(first_epoch, last_epoch + 1):
        start = time.time()
        se, sf, nf = 0.0, 0.0, 0
        for index in rng.permutation(len(train)):
            frame = train[int(index)]
            lr = schedule(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pref_e = prefactor(s["start_pref_e"], s["limit_pref_e"], lr, s["start_lr"])
            pref_f = prefactor(s["start_pref_f"], s["limit_pref_f"], lr, s["start_lr"])
            energy, force = trainer.energy_force(frame, create_graph=True)
            de = (energy - frame.energy) / frame.natoms
            df2 = ((force - torch.from_numpy(frame.force)) ** 2).mean()
            loss = pref_e * de * de + pref_f * df2
            optimizer.zero_grad()
            loss.backward()
            if s["gradient_max_norm"] > 0:
                torch.nn.utils.clip_grad_norm_(trainer.params, s["gradient_max_norm"])
            optimizer.step()
            se += float(de) ** 2
            sf += float(df2) * frame.natoms * 3
            nf += frame.natoms * 3
            history["steps"].append({"step": step, "frame": frame.name, "lr": lr, "loss": float(loss)})
            step += 1
        train_m = {"energy_rmse_per_atom": math.sqrt(se / len(train)), "force_rmse": math.sqrt(sf / nf),
                   "seconds_per_step": (time.time() - start) / len(train)}
        valid_start = time.time()
        valid_m = metrics(trainer, valid) if valid else None
        if valid_m:
            valid_m["seconds_per_frame"] = (time.time() - valid_start) / len(valid)
        row(epoch, schedule(step - 1), train_m, valid_m, time.time() - start)
        save(trainer, section, args.out)  # after every epoch: a long fit that is stopped keeps its last epoch
        torch.save({"signature": signature, "params": [p.detach().clone() for p in trainer.params],
                    "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state, "history": history,
                    "epoch": epoch, "step": step}, checkpoint + ".partial")
        os.replace(checkpoint + ".partial", checkpoint)  # --resume continues from here

    save(trainer, section, args.out)
    check = round_trip(trainer, args.out, valid[0] if valid else train[0])
    history["round_trip"] = check
    log(f"wrote {args.out}; reloaded through deepmd.dpkit.build.load_model: |dE| {check['energy']:.1e} eV, "
        f"max |dF| {check['force']:.1e} eV/A on {check['frame']}")
    tolerance = 1e-10 if trainer.model.descriptor.dtype == torch.float64 else 1e-4
    if not (check["energy"] <= tolerance and check["force"] <= tolerance):
        raise RuntimeError(f"the saved model differs from the trained one (tolerance {tolerance:g}): {check}")
    log_path = args.log or os.path.splitext(args.out)[0] + ".fit.json"
    with open(log_path, "w") as f:
        json.dump(history, f, indent=1)
    plot_path = args.plot or os.path.splitext(args.out)[0] + ".fit.png"
    if plot_path != "none":
        plot(history, plot_path)
    log(f"log {log_path}" + ("" if plot_path == "none" else f", learning curve {plot_path}"))
    history.update({"trainer": trainer, "train_frames_list": train, "valid_frames_list": valid})
    return history


def save(trainer: TrainableModel, section: Dict[str, Any], path: str) -> None:
    """Writes the trainer's current weights as a deepmd-kit .dp file (atomically: a stopped fit never leaves
    half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"
    write_dp({"software": "deepmd-gnn-mpi", "version": "deepmd/train/fit.py", "backend": "dpmodel",
              "model": trainer.tree(), "model_def_script": section}, partial)
    os.replace(partial, path)


def round_trip(trainer: TrainableModel, path: str, frame: Frame) -> Dict[str, Any]:
    """Largest differences between the saved file (deepmd.dpkit.build.load_model) and the trainer."""
    energy, force = trainer.energy_force(frame, create_graph=False)
    e2, f2 = evaluate_loaded(load_model(path), frame)
    return {"frame": frame.name, "energy": abs(float(energy) - e2),
            "force": float(np.abs(force.detach().numpy() - f2).max())}


def plot(history: Dict[str, Any], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("fit: matplotlib is not installed; no plot", file=sys.stderr)
        return
    rows = history["epochs"]
    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("train", "-o"), ("valid", "-s")):
        pts = [(r["epoch"], r[key]) for r in rows if r[key]]
        if pts:
            ax_e.plot([p[0] for p in pts], [1000 * p[1]["energy_rmse_per_atom"] for p in pts], style, label=key)
            ax_f.plot([p[0] for p in pts], [p[1]["force_rmse"] for p in pts], style, label=key)
    ax_e.set_ylabel("energy RMSE (meV/atom)")
    ax_f.set_ylabel("force RMSE (eV/Å)")
    for ax in (ax_e, ax_f):
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"{os.path.basename(history['input'])}: {history['train_frames']} training frames, seed "
                 f"{history['seed']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", default=DEFAULT_INPUT, help="deepmd-kit training input (its model, learning_rate "
                   "and loss sections)")
    p.add_argument("--train-systems", nargs="+", help="deepmd-kit npy systems (default: water data_0..data_2)")
    p.add_argument("--valid-systems", nargs="+", help="validation systems (default: water data_3)")
    p.add_argument("--max-train-frames", type=int, default=0, help="use only the first N training frames (0: all)")
    p.add_argument("--max-valid-frames", type=int, default=0, help="use only the first N validation frames (0: all)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=1, help="weights (init.py) and frame order")
    p.add_argument("--start-lr", type=float, help="default: learning_rate.start_lr of the input, else 1e-3")
    p.add_argument("--stop-lr", type=float, help="default: learning_rate.stop_lr of the input, else 1e-5")
    p.add_argument("--decay-steps", type=int, help="default: learning_rate.decay_steps of the input, else 5000")
    p.add_argument("--start-pref-e", type=float, help="default: loss.start_pref_e of the input, else 0.02")
    p.add_argument("--limit-pref-e", type=float, help="default: loss.limit_pref_e of the input, else 1")
    p.add_argument("--start-pref-f", type=float, help="default: loss.start_pref_f of the input, else 1000")
    p.add_argument("--limit-pref-f", type=float, help="default: loss.limit_pref_f of the input, else 1")
    p.add_argument("--gradient-max-norm", type=float,
                   help="clip the gradient's 2-norm (default: training.gradient_max_norm of the input, else none)")
    p.add_argument("--stop-after-epoch", type=int, default=0,
                   help="stop after this epoch of the --epochs schedule (0: run it all); --resume continues")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT's .ckpt (written after every epoch) when it exists; same flags required")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--out", default="model.dp", help="the trained model (deepmd-kit .dp)")
    p.add_argument("--log", default="", help="JSON log (default: OUT with .fit.json)")
    p.add_argument("--plot", default="", help="PNG learning curve (default: OUT with .fit.png; 'none': no plot)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.epochs < 0 or args.threads < 1:
        print("fit: --epochs must be >= 0 and --threads >= 1", file=sys.stderr)
        return 2
    try:
        fit(args)
    except (UnsupportedModel, FileNotFoundError, ValueError) as e:
        print(f"fit: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
