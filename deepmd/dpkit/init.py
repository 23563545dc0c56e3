"""A freshly initialised deepmd-kit model dict from the `model` section of a training input.

`model_dict_from_input(model_section, seed)` returns the tree deepmd-kit's serialize writes for the
model that `dp train` would build from that input before any training step: the `model` node of
`dp convert-backend` (`{"@class": "Model", "type": "standard", "@version": 2, ...}`, or the
`spin_ener` node for inputs with a `spin` section). Every option the input omits is filled the way
deepmd-kit fills it, every network has the Layer structure deepmd-kit builds (shapes, resnet /
use_timestep / bias / activation / precision flags, idt where resnet_dt), and the weights are drawn
from `numpy.random.default_rng(seed)`. The weights are not deepmd-kit's (its per-network child seeds
are not reproduced); their distribution is deepmd-kit's: w ~ N(0, 1/sqrt(in+out)), b ~ N(0, 1),
idt ~ N(0.1, 0.001), LayerNorm w=1 b=0, residual vectors as update_residual(_init) says. Data
statistics are the untrained ones: davg 0 and dstd 1 (DPA3 repflows: dstd = fix_stat_std),
fitting bias_atom_e 0, model out_bias 0 (or preset_out_bias), out_std 1, fparam/aparam avg 0 and
inv_std 1.

Two ways of filling omitted options (deepmd-kit itself has both):
* `defaults="argcheck"` (the default): what `dp --pt train` does. The input is normalised with the
  defaults of deepmd/utils/argcheck.py and the model is built as the PyTorch backend builds it
  (deepmd/pt/model/model/__init__.py: spin models get env_protection 0.01 when it is absent or 0 --
  the dpmodel/pt_expt factory would keep the normalised 0.0 --, and preset_out_bias is kept).
* `defaults="constructor"`: what deepmd-kit's `get_model(model_def_script)` does with a raw,
  un-normalised dict (its tests and the fixture generators): omitted options take the
  constructors' defaults, which differ from argcheck's in places (se_e2_a neuron [24,48,96],
  axis_neuron 8, type_one_side true; se_atten neuron [25,50,100], axis_neuron 8, set_davg_zero
  false, smooth_type_embedding true; precision "float64" instead of "default"; fitting atom_ener
  None), and spin models get env_protection 1e-6 unless given (deepmd/dpmodel/model/model_factory.py).

`write_dp(tree, path)` writes a deepmd-kit `.dp` file (FORMAT.md §1.1).

Options or types this module does not know raise deepmd.dpkit.serialization.UnsupportedModel
naming the node and the key; so do options that need training data (`sel: "auto"`)."""

import copy
import datetime
import json
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from deepmd.dpkit.serialization import UnsupportedModel

__all__ = ["model_dict_from_input", "write_dp", "DEFAULT_MODES"]

DEFAULT_MODES = ("argcheck", "constructor")

# --------------------------------------------------------------------------------------------------
# Option tables: key -> (argcheck default, constructor default). _REQ: required there; _ABSENT:
# optional without a default in argcheck (an omitted key stays omitted and the constructor default
# applies). Aliases are deepmd-kit's argcheck aliases (normalised to the canonical key).
# --------------------------------------------------------------------------------------------------


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_REQ = _Marker("<required>")
_ABSENT = _Marker("<absent>")

_SE_E2_A = {
    "sel": ("auto", _REQ), "rcut": (6.0, _REQ), "rcut_smth": (0.5, _REQ),
    "neuron": ([10, 20, 40], [24, 48, 96]), "axis_neuron": (4, 8), "activation_function": ("tanh", "tanh"),
    "resnet_dt": (False, False), "type_one_side": (False, True), "precision": ("default", "float64"),
    "trainable": (True, True), "seed": (_ABSENT, None), "exclude_types": ([], []),
    "env_protection": (0.0, 0.0), "set_davg_zero": (False, False),
}
_SE_E2_A_ALIASES = {"n_axis_neuron": "axis_neuron"}

_SE_ATTEN = {
    "sel": ("auto", _REQ), "rcut": (6.0, _REQ), "rcut_smth": (0.5, _REQ),
    "neuron": ([10, 20, 40], [25, 50, 100]), "axis_neuron": (4, 8), "lmax": (_ABSENT, 1),
    "activation_function": ("tanh", "tanh"), "resnet_dt": (False, False), "type_one_side": (False, False),
    "precision": ("default", "float64"), "trainable": (True, True), "seed": (_ABSENT, None),
    "exclude_types": ([], []), "env_protection": (0.0, 0.0), "attn": (128, 128), "attn_layer": (2, 2),
    "attn_dotr": (True, True), "attn_mask": (False, False),
    "stripped_type_embedding": (None, None), "smooth_type_embedding": (False, True),
    "set_davg_zero": (True, False), "trainable_ln": (True, True), "ln_eps": (None, 1e-5),
    "tebd_dim": (8, 8), "use_econf_tebd": (False, False), "use_tebd_bias": (False, False),
    "tebd_input_mode": ("concat", "concat"), "scaling_factor": (1.0, 1.0), "normalize": (True, True),
    "temperature": (_ABSENT, None), "concat_output_tebd": (True, True),
}
_SE_ATTEN_ALIASES = {"n_axis_neuron": "axis_neuron", "smooth_type_embdding": "smooth_type_embedding"}

_DPA2 = {
    "repinit": (_REQ, _REQ), "repformer": (_REQ, _REQ), "concat_output_tebd": (True, True),
    "precision": ("default", "float64"), "smooth": (True, True), "exclude_types": ([], []),
    "env_protection": (0.0, 0.0), "trainable": (True, True), "seed": (_ABSENT, None),
    "add_tebd_to_repinit_out": (False, False), "use_econf_tebd": (False, False),
    "use_tebd_bias": (False, False),
}
_DPA2_ALIASES = {"repformer_add_type_ebd_to_seq": "add_tebd_to_repinit_out"}

_REPINIT = {
    "rcut": (_REQ, _REQ), "rcut_smth": (_REQ, _REQ), "nsel": (_REQ, _REQ),
    "neuron": ([25, 50, 100], [25, 50, 100]), "axis_neuron": (16, 16), "tebd_dim": (8, 8),
    "tebd_input_mode": ("concat", "concat"), "set_davg_zero": (True, True),
    "activation_function": ("tanh", "tanh"), "type_one_side": (False, False), "resnet_dt": (False, False),
    "use_three_body": (False, False), "three_body_neuron": ([2, 4, 8], [2, 4, 8]),
    "three_body_rcut": (4.0, 4.0), "three_body_rcut_smth": (0.5, 0.5), "three_body_sel": (40, 40),
}

_REPFORMER = {
    "rcut": (_REQ, _REQ), "rcut_smth": (_REQ, _REQ), "nsel": (_REQ, _REQ), "nlayers": (3, 3),
    "g1_dim": (128, 128), "g2_dim": (16, 16), "axis_neuron": (4, 4), "direct_dist": (False, False),
    "update_g1_has_conv": (True, True), "update_g1_has_drrd": (True, True),
    "update_g1_has_grrg": (True, True), "update_g1_has_attn": (True, True),
    "update_g2_has_g1g1": (True, True), "update_g2_has_attn": (True, True),
    "use_sqrt_nnei": (True, True), "g1_out_conv": (True, True), "g1_out_mlp": (True, True),
    "update_h2": (False, False), "attn1_hidden": (64, 64), "attn1_nhead": (4, 4),
    "attn2_hidden": (16, 16), "attn2_nhead": (4, 4), "attn2_has_gate": (False, False),
    "activation_function": ("tanh", "tanh"), "update_style": ("res_avg", "res_avg"),
    "update_residual": (0.001, 0.001), "update_residual_init": ("norm", "norm"),
    "set_davg_zero": (True, True), "trainable_ln": (True, True), "ln_eps": (None, 1e-5),
}

_DPA3 = {
    "repflow": (_REQ, _REQ), "concat_output_tebd": (False, False), "add_chg_spin_ebd": (False, False),
    "default_chg_spin": (None, None), "activation_function": ("silu", "silu"),
    "precision": ("default", "float64"), "exclude_types": ([], []), "env_protection": (0.0, 0.0),
    "trainable": (True, True), "seed": (_ABSENT, None), "use_econf_tebd": (False, False),
    "use_tebd_bias": (False, False), "use_loc_mapping": (True, True),
}

_REPFLOW = {
    "n_dim": (128, 128), "e_dim": (64, 64), "a_dim": (64, 64), "nlayers": (6, 6),
    "e_rcut": (_REQ, 6.0), "e_rcut_smth": (_REQ, 5.0), "e_sel": (_REQ, 120),
    "a_rcut": (_REQ, 4.0), "a_rcut_smth": (_REQ, 3.5), "a_sel": (_REQ, 20),
    "a_compress_rate": (0, 0), "a_compress_e_rate": (1, 1), "a_compress_use_split": (False, False),
    "n_multi_edge_message": (1, 1), "axis_neuron": (4, 4), "fix_stat_std": (0.3, 0.3),
    "skip_stat": (False, False), "update_angle": (True, True), "update_style": ("res_residual", "res_residual"),
    "update_residual": (0.1, 0.1), "update_residual_init": ("const", "const"), "optim_update": (True, True),
    "smooth_edge_update": (False, False), "edge_init_use_dist": (False, False),
    "use_exp_switch": (False, False), "use_dynamic_sel": (False, False), "sel_reduce_factor": (10.0, 10.0),
    "sequential_update": (False, False),
}
_REPFLOW_ALIASES = {"edge_use_dist": "edge_init_use_dist", "use_env_envelope": "use_exp_switch"}

_FITTING_ENER = {
    "numb_fparam": (0, 0), "numb_aparam": (0, 0), "default_fparam": (None, None), "dim_case_embd": (0, 0),
    "neuron": ([120, 120, 120], [120, 120, 120]), "activation_function": ("tanh", "tanh"),
    "precision": ("default", "float64"), "resnet_dt": (True, True), "trainable": (True, None),
    "rcond": (None, None), "seed": (_ABSENT, None), "atom_ener": ([], None), "layer_name": (_ABSENT, None),
    "use_aparam_as_mask": (False, False),
}
_FITTING_ALIASES = {"n_neuron": "neuron"}

# Model-level keys of argcheck's model_args / standard_model_args. Training-only ones are accepted and
# have no effect on the tree; the ones that select a different model are refused.
_MODEL_KEYS = {"type_map", "descriptor", "fitting_net", "type", "spin", "pair_exclude_types",
               "atom_exclude_types", "preset_out_bias", "data_stat_nbatch", "data_stat_protect",
               "data_bias_nsample", "srtab_add_bias", "finetune_head", "model_branch_alias", "info"}
_MODEL_REFUSED = {
    "use_srtab": "a ZBL/pair-table model (use_srtab, sw_rmin, sw_rmax, smin_alpha) is not supported",
    "sw_rmin": "a ZBL/pair-table model (use_srtab, sw_rmin, sw_rmax, smin_alpha) is not supported",
    "sw_rmax": "a ZBL/pair-table model (use_srtab, sw_rmin, sw_rmax, smin_alpha) is not supported",
    "smin_alpha": "a ZBL/pair-table model (use_srtab, sw_rmin, sw_rmax, smin_alpha) is not supported",
    "type_embedding": "a model-level type_embedding is TensorFlow-only; put tebd options in the descriptor",
    "modifier": "model modifiers (dipole_charge) are TensorFlow-only and not supported",
    "compress": "compressed models are not supported",
    "bridging_method": "analytical bridging (ZBL) is not supported",
    "bridging_r_inner": "analytical bridging (ZBL) is not supported",
    "bridging_r_outer": "analytical bridging (ZBL) is not supported",
}
_SPIN_KEYS = {"use_spin", "virtual_scale", "scheme", "allow_missing_label", "spin_norm", "virtual_len"}

_PRECISIONS = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "half": np.float16,
               "single": np.float32, "double": np.float64, "default": np.float64}
_ACTIVATIONS = {"tanh", "relu", "gelu", "gelu_tf", "relu6", "softplus", "sigmoid", "silu", "none", "linear"}


def _fill(section: Any, table: Dict[str, Tuple[Any, Any]], aliases: Dict[str, str], where: str,
          mode: str, ignore: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """The section with aliases resolved and every option of `table` present (mode's defaults)."""
    if not isinstance(section, dict):
        raise UnsupportedModel(f"{where}: expected a dict, got {type(section).__name__}")
    out: Dict[str, Any] = {}
    for key, value in section.items():
        if key.startswith("_") or key in ignore:  # argcheck's trim_pattern "_*" drops comments
            continue
        canonical = aliases.get(key, key)
        if canonical not in table:
            raise UnsupportedModel(f"{where}: unknown option {key!r} (not a deepmd-kit option of this "
                                   f"node, or one this project does not support); known: {', '.join(sorted(table))}")
        if canonical in out:
            raise UnsupportedModel(f"{where}: option {canonical!r} given twice (also as an alias)")
        out[canonical] = copy.deepcopy(value)
    for key, (arg_default, ctor_default) in table.items():
        if key in out:
            continue
        default = arg_default if mode == "argcheck" else ctor_default
        if default is _ABSENT:
            default = ctor_default
        if default is _REQ:
            raise UnsupportedModel(f"{where}: required option {key!r} is missing")
        out[key] = copy.deepcopy(default)
    return out


def _dtype(precision: Any, where: str) -> Any:
    if not isinstance(precision, str) or precision.lower() not in _PRECISIONS:
        raise UnsupportedModel(f"{where}: precision {precision!r} is not supported (float64, float32, float16, "
                               "default; bfloat16 cannot be stored in a .dp file)")
    return _PRECISIONS[precision.lower()]


def _dtype_name(precision: str, where: str) -> str:
    return np.dtype(_dtype(precision, where)).name


def _check_activation(name: Any, where: str) -> None:
    key = "none" if name is None else str(name).lower()
    if key.startswith("silut") or key.startswith("custom_silu"):
        if ":" in key:
            try:
                float(key.split(":")[-1])
            except ValueError:
                raise UnsupportedModel(f"{where}: activation_function {name!r}: bad silut threshold") from None
        return
    if key not in _ACTIVATIONS:
        raise UnsupportedModel(f"{where}: activation_function {name!r} is not one deepmd-kit defines "
                               f"({', '.join(sorted(_ACTIVATIONS))}, silut:T)")


def _sel_int(value: Any, where: str, key: str) -> int:
    """A mixed-type sel (int or list of ints, summed as deepmd-kit does)."""
    if isinstance(value, str):
        raise UnsupportedModel(f"{where}: {key}={value!r} needs neighbour statistics of the training data "
                               "(deepmd-kit's update_sel); give the number explicitly")
    if isinstance(value, bool):
        raise UnsupportedModel(f"{where}: {key}={value!r} is not a number of neighbours")
    if isinstance(value, int):
        return value
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return int(sum(value))
    raise UnsupportedModel(f"{where}: {key}={value!r} is not an int or a list of ints")


def _bool(value: Any, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise UnsupportedModel(f"{where}: option {key}={value!r} must be true or false")
    return value


def _int_list(value: Any, where: str, key: str, nonempty: bool = True) -> List[int]:
    if (not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or (nonempty and not value)):
        raise UnsupportedModel(f"{where}: option {key}={value!r} must be a{' non-empty' if nonempty else ''} "
                               "list of ints")
    return value


def _exclude_pairs(value: Any, where: str, key: str, ntypes: int) -> List[List[int]]:
    if not isinstance(value, list):
        raise UnsupportedModel(f"{where}: option {key}={value!r} must be a list of type pairs")
    out = []
    for pair in value:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(t, int) and 0 <= t < ntypes for t in pair)):
            raise UnsupportedModel(f"{where}: {key} entry {pair!r} is not a pair of type indices < {ntypes}")
        out.append([int(pair[0]), int(pair[1])])
    return out


# --------------------------------------------------------------------------------------------------
# Network nodes (deepmd/dpmodel/utils/network.py serialize layout).
# --------------------------------------------------------------------------------------------------


class _Init:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def layer(self, n_in: int, n_out: int, precision: str, where: str, *, bias: bool = True,
              use_timestep: bool = False, activation: Optional[str] = None, resnet: bool = False,
              trainable: bool = True) -> Dict[str, Any]:
        dtype = _dtype(precision, where)
        use_timestep = bool(use_timestep and (n_out == n_in or n_out == 2 * n_in))
        w = self.rng.normal(scale=1.0 / np.sqrt(n_in + n_out), size=(n_in, n_out)).astype(dtype)
        b = self.rng.normal(scale=1.0, size=(n_out,)).astype(dtype) if bias else None
        idt = (self.rng.normal(scale=0.001, size=(n_out,)) + 0.1).astype(dtype) if use_timestep else None
        return {
            "@class": "Layer",
            "@version": 2,
            "bias": bias,
            "use_timestep": use_timestep,
            "activation_function": activation if activation is not None else "none",
            "resnet": resnet,
            "precision": _dtype_name(precision, where),
            "trainable": bool(trainable),
            "@variables": {"w": w, "b": b, "idt": idt},
        }

    def embedding_net(self, in_dim: int, neuron: List[int], activation: str, resnet_dt: bool, precision: str,
                      where: str, *, bias: bool = True, trainable: Any = True) -> Dict[str, Any]:
        if isinstance(trainable, bool):
            trainable = [trainable] * len(neuron)
        layers = []
        for ii, width in enumerate(neuron):
            layers.append(self.layer(in_dim if ii == 0 else neuron[ii - 1], width, precision, where, bias=bias,
                                     use_timestep=resnet_dt, activation=activation, resnet=True,
                                     trainable=trainable[ii]))
        return {
            "@class": "EmbeddingNetwork",
            "@version": 2,
            "in_dim": in_dim,
            "neuron": list(neuron),
            "activation_function": activation,
            "resnet_dt": resnet_dt,
            "bias": bias,
            "precision": _dtype_name(precision, where),
            "layers": layers,
        }

    def fitting_net(self, in_dim: int, out_dim: int, neuron: List[int], activation: str, resnet_dt: bool,
                    precision: str, where: str, trainable: Any) -> Dict[str, Any]:
        if trainable is None:
            trainable = [True] * (len(neuron) + 1)
        elif isinstance(trainable, bool):
            trainable = [trainable] * (len(neuron) + 1)
        hidden = self.embedding_net(in_dim, neuron, activation, resnet_dt, precision, where,
                                    trainable=trainable[:-1])
        last_in = neuron[-1] if neuron else in_dim
        hidden["layers"].append(self.layer(last_in, out_dim, precision, where, bias=True, use_timestep=False,
                                           activation=None, resnet=False, trainable=trainable[-1]))
        return {
            "@class": "FittingNetwork",
            "@version": 1,
            "in_dim": in_dim,
            "out_dim": out_dim,
            "neuron": list(neuron),
            "activation_function": activation,
            "resnet_dt": resnet_dt,
            "precision": precision,
            "bias_out": True,
            "layers": hidden["layers"],
        }

    @staticmethod
    def collection(ndim: int, ntypes: int, network_type: str, networks: List[Any]) -> Dict[str, Any]:
        return {"@class": "NetworkCollection", "@version": 1, "ndim": ndim, "ntypes": ntypes,
                "network_type": network_type, "networks": networks}

    @staticmethod
    def layer_norm(num_in: int, eps: float, trainable: bool, precision: str, where: str) -> Dict[str, Any]:
        dtype = _dtype(precision, where)
        return {"@class": "LayerNorm", "@version": 1, "eps": eps, "trainable": trainable, "precision": precision,
                "@variables": {"w": np.ones(num_in, dtype=dtype), "b": np.zeros(num_in, dtype=dtype)}}

    def type_embed_net(self, ntypes: int, dim: int, precision: str, where: str, *, use_econf_tebd: bool = False,
                       use_tebd_bias: bool = False, type_map: Optional[List[str]] = None,
                       trainable: bool = True) -> Dict[str, Any]:
        if use_econf_tebd:
            raise UnsupportedModel(f"{where}: use_econf_tebd=true (electronic-configuration type embedding) is "
                                   "not supported")
        return {
            "@class": "TypeEmbedNet",
            "@version": 2,
            "ntypes": ntypes,
            "neuron": [dim],
            "resnet_dt": False,
            "precision": precision,
            "activation_function": "Linear",
            "trainable": trainable,
            "padding": True,
            "use_econf_tebd": use_econf_tebd,
            "use_tebd_bias": use_tebd_bias,
            "type_map": copy.deepcopy(type_map),
            "embedding": self.embedding_net(ntypes, [dim], "Linear", False, precision, where, bias=use_tebd_bias,
                                            trainable=trainable),
        }

    def residual(self, dim: int, scale: float, mode: str, precision: str, where: str,
                 trainable: bool = True) -> np.ndarray:
        dtype = _dtype(precision, where)
        if mode not in ("norm", "const"):
            raise UnsupportedModel(f"{where}: update_residual_init={mode!r} is not 'norm' or 'const'")
        if not trainable:
            return np.zeros(dim, dtype=dtype)
        if mode == "norm":
            return self.rng.normal(scale=scale, size=dim).astype(dtype)
        return np.full(dim, scale, dtype=dtype)


def _env_mat(rcut: Any, rcut_smth: Any, protection: Any = 0.0, use_exp_switch: bool = False) -> Dict[str, Any]:
    return {"rcut": rcut, "rcut_smth": rcut_smth, "protection": protection, "use_exp_switch": use_exp_switch}


def _stat(ntypes: int, nnei: int, precision: str, where: str, std: float = 1.0) -> Dict[str, np.ndarray]:
    dtype = _dtype(precision, where)
    return {"davg": np.zeros((ntypes, nnei, 4), dtype=dtype),
            "dstd": np.full((ntypes, nnei, 4), std, dtype=dtype)}


# --------------------------------------------------------------------------------------------------
# Descriptors. Each returns (node, dim_out, mixed_types).
# --------------------------------------------------------------------------------------------------


def _se_e2_a(d: Dict[str, Any], ntypes: int, type_map: List[str], init: _Init, where: str):
    sel = d["sel"]
    if isinstance(sel, str):
        _sel_int(sel, where, "sel")
    sel = _int_list(sel, where, "sel")
    if len(sel) != ntypes:
        raise UnsupportedModel(f"{where}: sel has {len(sel)} entries; se_e2_a needs one per type ({ntypes})")
    neuron = _int_list(d["neuron"], where, "neuron")
    _check_activation(d["activation_function"], where)
    prec = d["precision"]
    _dtype(prec, where)
    exclude = _exclude_pairs(d["exclude_types"], where, "exclude_types", ntypes)
    excluded = {(a, b) for a, b in exclude} | {(b, a) for a, b in exclude}
    type_one_side = _bool(d["type_one_side"], where, "type_one_side")
    ndim = 1 if type_one_side else 2
    networks = []
    for flat in range(ntypes ** ndim):
        net = init.embedding_net(1, neuron, d["activation_function"], d["resnet_dt"], prec, where,
                                 trainable=d["trainable"])
        # deepmd-kit zeroes the (unused) nets of excluded pairs when not type_one_side (se_e2_a.py).
        if ndim == 2 and (flat % ntypes, flat // ntypes) in excluded:
            for layer in net["layers"]:
                layer["@variables"] = {k: (None if v is None else np.zeros_like(v))
                                       for k, v in layer["@variables"].items()}
        networks.append(net)
    node = {
        "@class": "Descriptor",
        "type": "se_e2_a",
        "@version": 2,
        "rcut": d["rcut"],
        "rcut_smth": d["rcut_smth"],
        "sel": sel,
        "neuron": neuron,
        "axis_neuron": d["axis_neuron"],
        "resnet_dt": d["resnet_dt"],
        "trainable": d["trainable"],
        "type_one_side": type_one_side,
        "exclude_types": exclude,
        "env_protection": d["env_protection"],
        "set_davg_zero": d["set_davg_zero"],
        "activation_function": d["activation_function"],
        "precision": _dtype_name(prec, where),
        "spin": None,
        "env_mat": _env_mat(d["rcut"], d["rcut_smth"], d["env_protection"]),
        "embeddings": init.collection(ndim, ntypes, "embedding_network", networks),
        "@variables": _stat(ntypes, sum(sel), prec, where),
        "type_map": copy.deepcopy(type_map),
    }
    return node, neuron[-1] * d["axis_neuron"], False


def _se_atten_embeddings(init: _Init, ntypes: int, tebd_dim: int, type_one_side: bool, mode: str, neuron: List[int],
                         activation: str, resnet_dt: bool, precision: str, where: str, trainable: bool,
                         three_body: bool = False):
    tebd_in = tebd_dim * 2 if (three_body or not type_one_side) else tebd_dim
    if mode not in ("concat", "strip"):
        raise UnsupportedModel(f"{where}: tebd_input_mode={mode!r} is not 'concat' or 'strip'")
    in_dim = 1 + tebd_in if mode == "concat" else 1
    emb = init.collection(0, ntypes, "embedding_network",
                          [init.embedding_net(in_dim, neuron, activation, resnet_dt, precision, where,
                                              trainable=trainable)])
    strip = None
    if mode == "strip":
        strip = init.collection(0, ntypes, "embedding_network",
                                [init.embedding_net(tebd_in, neuron, activation, resnet_dt, precision, where,
                                                    trainable=trainable)])
    return emb, strip


def _dpa1(d: Dict[str, Any], ntypes: int, type_map: List[str], init: _Init, where: str):
    if d["lmax"] != 1:
        raise UnsupportedModel(f"{where}: lmax={d['lmax']!r} (higher moments, descriptor @version 4) is not "
                               "supported; use lmax 1")
    if d["attn_mask"]:
        raise UnsupportedModel(f"{where}: attn_mask=true is not supported (deepmd-kit refuses it too)")
    mode = d["tebd_input_mode"]
    if d["stripped_type_embedding"] is not None:
        mode = "strip" if _bool(d["stripped_type_embedding"], where, "stripped_type_embedding") else "concat"
    sel_value = d["sel"]
    nnei = _sel_int(sel_value, where, "sel")
    sel = [sel_value] if isinstance(sel_value, int) else list(sel_value)
    neuron = _int_list(d["neuron"], where, "neuron")
    prec = d["precision"]
    _dtype(prec, where)
    _check_activation(d["activation_function"], where)
    ln_eps = 1e-5 if d["ln_eps"] is None else d["ln_eps"]
    tebd_dim, type_one_side = d["tebd_dim"], _bool(d["type_one_side"], where, "type_one_side")
    exclude = _exclude_pairs(d["exclude_types"], where, "exclude_types", ntypes)
    trainable = d["trainable"]
    emb, strip = _se_atten_embeddings(init, ntypes, tebd_dim, type_one_side, mode, neuron,
                                      d["activation_function"], d["resnet_dt"], prec, where, trainable)
    embed_dim, hidden = neuron[-1], d["attn"]
    temperature, scaling = d["temperature"], d["scaling_factor"]
    smooth = _bool(d["smooth_type_embedding"], where, "smooth_type_embedding")
    layers = []
    for _ in range(d["attn_layer"]):
        gated = {
            "nnei": nnei, "embed_dim": embed_dim, "hidden_dim": hidden, "num_heads": 1, "dotr": d["attn_dotr"],
            "do_mask": False, "scaling_factor": scaling, "normalize": d["normalize"], "temperature": temperature,
            "bias": True, "smooth": smooth, "precision": prec,
            "in_proj": init.layer(embed_dim, hidden * 3, prec, where, trainable=trainable),
            "out_proj": init.layer(hidden, embed_dim, prec, where, trainable=trainable),
        }
        layers.append({
            "nnei": nnei, "embed_dim": embed_dim, "hidden_dim": hidden, "dotr": d["attn_dotr"], "do_mask": False,
            "scaling_factor": scaling, "normalize": d["normalize"], "temperature": temperature,
            "trainable_ln": d["trainable_ln"], "ln_eps": ln_eps, "precision": prec,
            "attention_layer": gated,
            "attn_layer_norm": init.layer_norm(embed_dim, ln_eps, d["trainable_ln"], prec, where),
        })
    attention = {
        "@class": "NeighborGatedAttention", "@version": 1, "layer_num": d["attn_layer"], "nnei": nnei,
        "embed_dim": embed_dim, "hidden_dim": hidden, "dotr": d["attn_dotr"], "do_mask": False,
        "scaling_factor": scaling, "normalize": d["normalize"], "temperature": temperature,
        "trainable_ln": d["trainable_ln"], "ln_eps": ln_eps, "precision": prec, "attention_layers": layers,
    }
    node = {
        "@class": "Descriptor",
        "type": "dpa1",
        "@version": 2,
        "rcut": d["rcut"],
        "rcut_smth": d["rcut_smth"],
        "sel": sel,
        "ntypes": ntypes,
        "neuron": neuron,
        "axis_neuron": d["axis_neuron"],
        "tebd_dim": tebd_dim,
        "tebd_input_mode": mode,
        "set_davg_zero": d["set_davg_zero"],
        "attn": hidden,
        "attn_layer": d["attn_layer"],
        "attn_dotr": d["attn_dotr"],
        "attn_mask": False,
        "activation_function": d["activation_function"],
        "resnet_dt": d["resnet_dt"],
        "scaling_factor": scaling,
        "normalize": d["normalize"],
        "temperature": temperature,
        "trainable_ln": d["trainable_ln"],
        "ln_eps": ln_eps,
        "smooth_type_embedding": smooth,
        "type_one_side": type_one_side,
        "concat_output_tebd": d["concat_output_tebd"],
        "use_econf_tebd": d["use_econf_tebd"],
        "use_tebd_bias": d["use_tebd_bias"],
        "type_map": copy.deepcopy(type_map),
        "precision": _dtype_name(prec, where),
        "embeddings": emb,
        "attention_layers": attention,
        "env_mat": _env_mat(d["rcut"], d["rcut_smth"], d["env_protection"]),
        "type_embedding": init.type_embed_net(ntypes, tebd_dim, prec, where + ".type_embedding",
                                              use_econf_tebd=d["use_econf_tebd"],
                                              use_tebd_bias=d["use_tebd_bias"], type_map=type_map,
                                              trainable=trainable),
        "exclude_types": exclude,
        "env_protection": d["env_protection"],
        "@variables": _stat(ntypes, nnei, prec, where),
        "trainable": trainable,
        "spin": None,
    }
    if strip is not None:
        node["embeddings_strip"] = strip
    dim_out = neuron[-1] * d["axis_neuron"] + (tebd_dim if d["concat_output_tebd"] else 0)
    return node, dim_out, True


def _repformer_layer(r: Dict[str, Any], ntypes: int, nsel: int, last: bool, smooth: bool, prec: str,
                     init: _Init, where: str, trainable: bool) -> Dict[str, Any]:
    g1, g2, ax = r["g1_dim"], r["g2_dim"], r["axis_neuron"]
    chnnl_2 = not last
    has_g1g1 = r["update_g2_has_g1g1"] and chnnl_2
    has_attn2 = r["update_g2_has_attn"] and chnnl_2
    has_h2 = r["update_h2"] and chnnl_2
    res = r["update_style"] == "res_residual"
    if r["update_style"] not in ("res_avg", "res_incr", "res_residual"):
        raise UnsupportedModel(f"{where}: update_style={r['update_style']!r} is not res_avg, res_incr or res_residual")
    ln_eps = 1e-5 if r["ln_eps"] is None else r["ln_eps"]

    def residual(dim: int) -> np.ndarray:
        return init.residual(dim, r["update_residual"], r["update_residual_init"], prec, where, trainable)

    g1_res, g2_res, h2_res = [], [], []
    if res:
        g1_res.append(residual(g1))
    in1 = 0 if r["g1_out_mlp"] else g1
    in1 += (g2 * ax if r["update_g1_has_grrg"] else 0) + (g1 * ax if r["update_g1_has_drrd"] else 0)
    in1 += g2 if (r["update_g1_has_conv"] and not r["g1_out_conv"]) else 0
    node: Dict[str, Any] = {
        "@class": "RepformerLayer",
        "@version": 2,
        "rcut": r["rcut"],
        "rcut_smth": r["rcut_smth"],
        "sel": [nsel],
        "ntypes": ntypes,
        "g1_dim": g1,
        "g2_dim": g2,
        "axis_neuron": ax,
        "update_chnnl_2": chnnl_2,
        "update_g1_has_conv": r["update_g1_has_conv"],
        "update_g1_has_drrd": r["update_g1_has_drrd"],
        "update_g1_has_grrg": r["update_g1_has_grrg"],
        "update_g1_has_attn": r["update_g1_has_attn"],
        "update_g2_has_g1g1": has_g1g1,
        "update_g2_has_attn": has_attn2,
        "update_h2": has_h2,
        "attn1_hidden": r["attn1_hidden"],
        "attn1_nhead": r["attn1_nhead"],
        "attn2_hidden": r["attn2_hidden"],
        "attn2_nhead": r["attn2_nhead"],
        "attn2_has_gate": r["attn2_has_gate"],
        "activation_function": r["activation_function"],
        "update_style": r["update_style"],
        "smooth": smooth,
        "precision": prec,
        "trainable_ln": r["trainable_ln"],
        "use_sqrt_nnei": r["use_sqrt_nnei"],
        "g1_out_conv": r["g1_out_conv"],
        "g1_out_mlp": r["g1_out_mlp"],
        "ln_eps": ln_eps,
        "linear1": init.layer(in1, g1, prec, where, trainable=trainable),
    }
    if chnnl_2:
        node["linear2"] = init.layer(g2, g2, prec, where, trainable=trainable)
        if res:
            g2_res.append(residual(g2))
    if r["g1_out_mlp"]:
        self_mlp = init.layer(g1, g1, prec, where, trainable=trainable)
        if res:
            g1_res.append(residual(g1))
    if r["update_g1_has_conv"]:
        if not r["g1_out_conv"]:
            node["proj_g1g2"] = init.layer(g1, g2, prec, where, bias=False, trainable=trainable)
        else:
            node["proj_g1g2"] = init.layer(g2, g1, prec, where, bias=False, trainable=trainable)
            if res:
                g1_res.append(residual(g1))
    if has_g1g1:
        node["proj_g1g1g2"] = init.layer(g1, g2, prec, where, bias=False, trainable=trainable)
        if res:
            g2_res.append(residual(g2))
    if has_attn2 or has_h2:
        hidden, nhead = r["attn2_hidden"], r["attn2_nhead"]
        node["attn2g_map"] = {
            "@class": "Atten2Map", "@version": 1, "input_dim": g2, "hidden_dim": hidden, "head_num": nhead,
            "has_gate": r["attn2_has_gate"], "smooth": smooth, "attnw_shift": 20.0, "precision": prec,
            "mapqk": init.layer(g2, hidden * 2 * nhead, prec, where, bias=False, trainable=trainable),
        }
        if has_attn2:
            node["attn2_mh_apply"] = {
                "@class": "Atten2MultiHeadApply", "@version": 1, "input_dim": g2, "head_num": nhead,
                "precision": prec,
                "mapv": init.layer(g2, g2 * nhead, prec, where, bias=False, trainable=trainable),
                "head_map": init.layer(g2 * nhead, g2, prec, where, trainable=trainable),
            }
            node["attn2_lm"] = init.layer_norm(g2, ln_eps, r["trainable_ln"], prec, where)
            if res:
                g2_res.append(residual(g2))
        if has_h2:
            node["attn2_ev_apply"] = {
                "@class": "Atten2EquiVarApply", "@version": 1, "input_dim": g2, "head_num": nhead,
                "precision": prec,
                "head_map": init.layer(nhead, 1, prec, where, bias=False, trainable=trainable),
            }
            if res:
                h2_res.append(residual(1))
    if r["update_g1_has_attn"]:
        hidden, nhead = r["attn1_hidden"], r["attn1_nhead"]
        node["loc_attn"] = {
            "@class": "LocalAtten", "@version": 1, "input_dim": g1, "hidden_dim": hidden, "head_num": nhead,
            "smooth": smooth, "attnw_shift": 20.0, "precision": prec,
            "mapq": init.layer(g1, hidden * nhead, prec, where, bias=False, trainable=trainable),
            "mapkv": init.layer(g1, (hidden + g1) * nhead, prec, where, bias=False, trainable=trainable),
            "head_map": init.layer(g1 * nhead, g1, prec, where, trainable=trainable),
        }
        if res:
            g1_res.append(residual(g1))
    if r["g1_out_mlp"]:
        node["g1_self_mlp"] = self_mlp
    if res:
        node["@variables"] = {"g1_residual": g1_res, "g2_residual": g2_res, "h2_residual": h2_res}
    return node


def _dpa2(d: Dict[str, Any], ntypes: int, type_map: List[str], init: _Init, where: str, mode: str):
    ri = _fill(d["repinit"], _REPINIT, {}, where + ".repinit", mode)
    rf = _fill(d["repformer"], _REPFORMER, {}, where + ".repformer", mode)
    rf["ln_eps"] = 1e-5 if rf["ln_eps"] is None else rf["ln_eps"]
    prec, trainable, smooth = d["precision"], d["trainable"], d["smooth"]
    _dtype(prec, where)
    for sub, w in ((ri, where + ".repinit"), (rf, where + ".repformer")):
        _check_activation(sub["activation_function"], w)
    exclude = _exclude_pairs(d["exclude_types"], where, "exclude_types", ntypes)
    nsel_i = _sel_int(ri["nsel"], where + ".repinit", "nsel")
    nsel_f = _sel_int(rf["nsel"], where + ".repformer", "nsel")
    tebd_dim = ri["tebd_dim"]
    neuron = _int_list(ri["neuron"], where + ".repinit", "neuron")
    emb, strip = _se_atten_embeddings(init, ntypes, tebd_dim, ri["type_one_side"], ri["tebd_input_mode"], neuron,
                                      ri["activation_function"], ri["resnet_dt"], prec, where + ".repinit",
                                      trainable)
    repinit_out = neuron[-1] * ri["axis_neuron"]
    three_body = None
    if ri["use_three_body"]:
        nsel_3 = _sel_int(ri["three_body_sel"], where + ".repinit", "three_body_sel")
        tb_neuron = _int_list(ri["three_body_neuron"], where + ".repinit", "three_body_neuron")
        emb3, strip3 = _se_atten_embeddings(init, ntypes, tebd_dim, False, ri["tebd_input_mode"], tb_neuron,
                                            ri["activation_function"], ri["resnet_dt"], prec,
                                            where + ".repinit(three-body)", trainable, three_body=True)
        three_body = {"embeddings": emb3,
                      "env_mat": _env_mat(ri["three_body_rcut"], ri["three_body_rcut_smth"]),
                      "@variables": _stat(ntypes, nsel_3, prec, where)}
        if strip3 is not None:
            three_body["embeddings_strip"] = strip3
        repinit_out += tb_neuron[-1]
        rcsl = sorted([(rf["rcut"], nsel_f), (ri["rcut"], nsel_i), (ri["three_body_rcut"], nsel_3)])
    else:
        rcsl = sorted([(rf["rcut"], nsel_f), (ri["rcut"], nsel_i)])
    if any(rcsl[i - 1][1] > rcsl[i][1] for i in range(1, len(rcsl))):
        raise UnsupportedModel(f"{where}: the cut-offs and sels of repinit, three-body and repformer are not in "
                               "the same order (deepmd-kit asserts larger rcut <=> larger sel)")
    if not (ri["rcut"] > rf["rcut"] and nsel_i > nsel_f):
        raise UnsupportedModel(f"{where}: deepmd-kit requires repinit rcut > repformer rcut and repinit nsel > "
                               "repformer nsel")
    g1 = rf["g1_dim"]
    if repinit_out == g1:
        g1_shape = {"@class": "Identity", "@version": 1}
    else:
        g1_shape = init.layer(repinit_out, g1, prec, where, bias=False, trainable=trainable)
    layers = [_repformer_layer(rf, ntypes, nsel_f, ii == rf["nlayers"] - 1, smooth, prec, init,
                               f"{where}.repformer.layer{ii}", trainable) for ii in range(rf["nlayers"])]
    repinit_args = {k: ri[k] for k in _REPINIT}
    repformer_args = {k: rf[k] for k in _REPFORMER}
    node: Dict[str, Any] = {
        "@class": "Descriptor",
        "type": "dpa2",
        "@version": 3,
        "ntypes": ntypes,
        "repinit_args": repinit_args,
        "repformer_args": repformer_args,
        "concat_output_tebd": d["concat_output_tebd"],
        "precision": prec,
        "smooth": smooth,
        "exclude_types": exclude,
        "env_protection": d["env_protection"],
        "trainable": trainable,
        "add_tebd_to_repinit_out": d["add_tebd_to_repinit_out"],
        "use_econf_tebd": d["use_econf_tebd"],
        "use_tebd_bias": d["use_tebd_bias"],
        "type_map": copy.deepcopy(type_map),
        "type_embedding": init.type_embed_net(ntypes, tebd_dim, prec, where + ".type_embedding",
                                              use_econf_tebd=d["use_econf_tebd"],
                                              use_tebd_bias=d["use_tebd_bias"], type_map=type_map,
                                              trainable=trainable),
        "g1_shape_tranform": g1_shape,
    }
    if d["add_tebd_to_repinit_out"]:
        node["tebd_transform"] = init.layer(tebd_dim, g1, prec, where, bias=False, trainable=trainable)
    repinit_variable = {"embeddings": emb, "env_mat": _env_mat(ri["rcut"], ri["rcut_smth"]),
                        "@variables": _stat(ntypes, nsel_i, prec, where)}
    if strip is not None:
        repinit_variable["embeddings_strip"] = strip
    node["repinit_variable"] = repinit_variable
    node["repformers_variable"] = {
        "g2_embd": init.layer(1, rf["g2_dim"], prec, where, trainable=trainable),
        "repformer_layers": layers,
        "env_mat": _env_mat(rf["rcut"], rf["rcut_smth"]),
        "@variables": _stat(ntypes, nsel_f, prec, where),
    }
    if three_body is not None:
        node["repinit_three_body_variable"] = three_body
    return node, g1 + (tebd_dim if d["concat_output_tebd"] else 0), True


def _repflow_layer(r: Dict[str, Any], ntypes: int, e_sel: int, act: str, prec: str, init: _Init, where: str,
                   trainable: bool) -> Dict[str, Any]:
    n, e, a, ax, heads = r["n_dim"], r["e_dim"], r["a_dim"], r["axis_neuron"], r["n_multi_edge_message"]
    res = r["update_style"] == "res_residual"

    def residual(dim: int) -> np.ndarray:
        return init.residual(dim, r["update_residual"], r["update_residual_init"], prec, where, trainable)

    n_res, e_res, a_res = [], [], []
    edge_info = 2 * n + e
    node: Dict[str, Any] = {
        "@class": "RepFlowLayer",
        "@version": 2,
        "e_rcut": float(r["e_rcut"]),
        "e_rcut_smth": float(r["e_rcut_smth"]),
        "e_sel": [e_sel],
        "a_rcut": float(r["a_rcut"]),
        "a_rcut_smth": float(r["a_rcut_smth"]),
        "a_sel": r["a_sel"],
        "ntypes": ntypes,
        "n_dim": n,
        "e_dim": e,
        "a_dim": a,
        "a_compress_rate": r["a_compress_rate"],
        "a_compress_e_rate": r["a_compress_e_rate"],
        "a_compress_use_split": r["a_compress_use_split"],
        "n_multi_edge_message": heads,
        "axis_neuron": ax,
        "activation_function": act,
        "update_angle": r["update_angle"],
        "update_style": r["update_style"],
        "update_residual": r["update_residual"],
        "update_residual_init": r["update_residual_init"],
        "precision": prec,
        "optim_update": r["optim_update"],
        "smooth_edge_update": r["smooth_edge_update"],
        "use_dynamic_sel": r["use_dynamic_sel"],
        "sel_reduce_factor": r["sel_reduce_factor"],
        "sequential_update": r["sequential_update"],
    }
    node["node_self_mlp"] = init.layer(n, n, prec, where, trainable=trainable)
    if res:
        n_res.append(residual(n))
    node["node_sym_linear"] = init.layer(n * ax + e * ax, n, prec, where, trainable=trainable)
    if res:
        n_res.append(residual(n))
    node["node_edge_linear"] = init.layer(edge_info, heads * n, prec, where, trainable=trainable)
    if res:
        n_res.extend(residual(n) for _ in range(heads))
    node["edge_self_linear"] = init.layer(edge_info, e, prec, where, trainable=trainable)
    if res:
        e_res.append(residual(e))
    if r["update_angle"]:
        c, ce = r["a_compress_rate"], r["a_compress_e_rate"]
        if c == 0:
            angle_dim = a + n + 2 * e
        else:
            if (a * ce) % (2 * c) != 0:
                raise UnsupportedModel(f"{where}: a_dim*a_compress_e_rate must be divisible by 2*a_compress_rate")
            angle_dim = a + (1 + ce) * (a // c)
            if not r["a_compress_use_split"]:
                node["a_compress_n_linear"] = init.layer(n, a // c, prec, where, bias=False, trainable=trainable)
                node["a_compress_e_linear"] = init.layer(e, a // (2 * c) * ce, prec, where, bias=False,
                                                         trainable=trainable)
        node["edge_angle_linear1"] = init.layer(angle_dim, e, prec, where, trainable=trainable)
        node["edge_angle_linear2"] = init.layer(e, e, prec, where, trainable=trainable)
        if res:
            e_res.append(residual(e))
        node["angle_self_linear"] = init.layer(angle_dim, a, prec, where, trainable=trainable)
        if res:
            a_res.append(residual(a))
    if res:
        node["@variables"] = {"n_residual": n_res, "e_residual": e_res, "a_residual": a_res}
    return node


def _dpa3(d: Dict[str, Any], ntypes: int, type_map: List[str], init: _Init, where: str, mode: str):
    w = where + ".repflow"
    r = _fill(d["repflow"], _REPFLOW, _REPFLOW_ALIASES, w, mode)
    if r["skip_stat"]:
        r["fix_stat_std"] = 0.3
    prec, act, trainable = d["precision"], d["activation_function"], d["trainable"]
    _dtype(prec, where)
    _check_activation(act, where)
    e_sel = _sel_int(r["e_sel"], w, "e_sel")
    a_sel = _sel_int(r["a_sel"], w, "a_sel")
    r["e_sel"], r["a_sel"] = e_sel, a_sel
    if r["update_style"] not in ("res_avg", "res_incr", "res_residual"):
        raise UnsupportedModel(f"{w}: update_style={r['update_style']!r} is not res_avg, res_incr or res_residual")
    if r["sequential_update"] and (r["update_style"] != "res_residual" or not r["update_angle"]):
        raise UnsupportedModel(f"{w}: sequential_update needs update_style res_residual and update_angle true")
    if r["use_dynamic_sel"] and not r["smooth_edge_update"]:
        raise UnsupportedModel(f"{w}: use_dynamic_sel needs smooth_edge_update true (deepmd-kit refuses it)")
    if r["sel_reduce_factor"] <= 0:
        raise UnsupportedModel(f"{w}: sel_reduce_factor must be > 0")
    if r["n_multi_edge_message"] < 1:
        raise UnsupportedModel(f"{w}: n_multi_edge_message must be >= 1")
    if not (r["e_rcut"] >= r["a_rcut"] and e_sel >= a_sel):
        raise UnsupportedModel(f"{w}: deepmd-kit requires e_rcut >= a_rcut and e_sel >= a_sel")
    if d["default_chg_spin"] is not None and len(d["default_chg_spin"]) != 2:
        raise UnsupportedModel(f"{where}: default_chg_spin must have exactly 2 values [charge, spin]")
    exclude = _exclude_pairs(d["exclude_types"], where, "exclude_types", ntypes)
    n_dim = r["n_dim"]
    args = {k: r[k] for k in _REPFLOW if k != "skip_stat"}
    args["e_sel"], args["a_sel"] = d["repflow"].get("e_sel", e_sel), d["repflow"].get("a_sel", a_sel)
    node: Dict[str, Any] = {
        "@class": "Descriptor",
        "type": "dpa3",
        "@version": 2,
        "ntypes": ntypes,
        "repflow_args": args,
        "concat_output_tebd": d["concat_output_tebd"],
        "activation_function": act,
        "precision": prec,
        "exclude_types": exclude,
        "env_protection": d["env_protection"],
        "trainable": trainable,
        "use_econf_tebd": d["use_econf_tebd"],
        "use_tebd_bias": d["use_tebd_bias"],
        "use_loc_mapping": d["use_loc_mapping"],
        "add_chg_spin_ebd": d["add_chg_spin_ebd"],
        "default_chg_spin": d["default_chg_spin"],
        "type_map": copy.deepcopy(type_map),
        "type_embedding": init.type_embed_net(ntypes, n_dim, prec, where + ".type_embedding",
                                              use_econf_tebd=d["use_econf_tebd"],
                                              use_tebd_bias=d["use_tebd_bias"], type_map=type_map,
                                              trainable=trainable),
    }
    if d["add_chg_spin_ebd"]:
        node["chg_embedding"] = init.type_embed_net(200, n_dim, prec, where + ".chg_embedding")
        node["spin_embedding"] = init.type_embed_net(100, n_dim, prec, where + ".spin_embedding")
        node["mix_cs_mlp"] = init.layer(2 * n_dim, n_dim, prec, where)
    std = r["fix_stat_std"] if r["fix_stat_std"] != 0.0 else 1.0
    node["repflow_variable"] = {
        "edge_embd": init.layer(1, r["e_dim"], prec, w, trainable=trainable),
        "angle_embd": init.layer(1, r["a_dim"], prec, w, bias=False, trainable=trainable),
        "repflow_layers": [_repflow_layer(r, ntypes, e_sel, act, prec, init, f"{w}.layer{ii}", trainable)
                           for ii in range(r["nlayers"])],
        "env_mat": _env_mat(float(r["e_rcut"]), float(r["e_rcut_smth"])),
        "@variables": _stat(ntypes, e_sel, prec, w, std=std),
    }
    return node, n_dim * (2 if d["concat_output_tebd"] else 1), True


_DESCRIPTORS = {
    "se_e2_a": ("se_e2_a", _SE_E2_A, _SE_E2_A_ALIASES),
    "se_a": ("se_e2_a", _SE_E2_A, _SE_E2_A_ALIASES),
    "se_atten": ("se_atten", _SE_ATTEN, _SE_ATTEN_ALIASES),
    "dpa1": ("se_atten", _SE_ATTEN, _SE_ATTEN_ALIASES),
    "dpa2": ("dpa2", _DPA2, _DPA2_ALIASES),
    "dpa3": ("dpa3", _DPA3, {}),
}


def _descriptor(section: Any, ntypes: int, type_map: List[str], init: _Init, mode: str,
                where: str = "model.descriptor"):
    if not isinstance(section, dict):
        raise UnsupportedModel(f"{where}: expected a dict")
    kind = section.get("type")
    if kind == "hybrid":
        extra = [k for k in section if k not in ("type", "list") and not k.startswith("_")]
        if extra:
            raise UnsupportedModel(f"{where}: unknown option {extra[0]!r} of the hybrid descriptor")
        subs = section.get("list")
        if not isinstance(subs, list) or not subs:
            raise UnsupportedModel(f"{where}: the hybrid descriptor needs a non-empty 'list'")
        nodes, dim, mixed = [], 0, False
        for ii, sub in enumerate(subs):
            if isinstance(sub, dict) and sub.get("type") == "hybrid":
                raise UnsupportedModel(f"{where}.list[{ii}]: a hybrid inside a hybrid is not supported")
            node, d, m = _descriptor(sub, ntypes, type_map, init, mode, f"{where}.list[{ii}]")
            nodes.append(node)
            dim += d
            mixed = mixed or m
        return {"@class": "Descriptor", "type": "hybrid", "@version": 1, "list": nodes}, dim, mixed
    if kind not in _DESCRIPTORS:
        raise UnsupportedModel(f"{where}: descriptor type {kind!r} is not supported; supported: "
                               f"{', '.join(sorted(_DESCRIPTORS))}, hybrid")
    name, table, aliases = _DESCRIPTORS[kind]
    d = _fill(section, table, aliases, where, mode, ignore=("type",))
    if name == "se_e2_a":
        return _se_e2_a(d, ntypes, type_map, init, where)
    if name == "se_atten":
        return _dpa1(d, ntypes, type_map, init, where)
    if name == "dpa2":
        return _dpa2(d, ntypes, type_map, init, where, mode)
    return _dpa3(d, ntypes, type_map, init, where, mode)


def _fitting(section: Any, ntypes: int, type_map: List[str], dim_descrpt: int, mixed_types: bool,
             exclude_types: List[int], init: _Init, mode: str, where: str = "model.fitting_net") -> Dict[str, Any]:
    section = {} if section is None else section
    if not isinstance(section, dict):
        raise UnsupportedModel(f"{where}: expected a dict")
    kind = section.get("type", "ener")
    if kind != "ener":
        raise UnsupportedModel(f"{where}: fitting type {kind!r} is not supported (only 'ener')")
    f = _fill(section, _FITTING_ENER, _FITTING_ALIASES, where, mode, ignore=("type",))
    if f["layer_name"] is not None:
        raise UnsupportedModel(f"{where}: layer_name (shared fitting layers) is not supported")
    prec, neuron = f["precision"], _int_list(f["neuron"], where, "neuron", nonempty=False)
    dtype = _dtype(prec, where)
    _check_activation(f["activation_function"], where)
    nfp, nap, ncase = f["numb_fparam"], f["numb_aparam"], f["dim_case_embd"]
    trainable = f["trainable"]
    if isinstance(trainable, list) and len(trainable) != len(neuron) + 1:
        raise UnsupportedModel(f"{where}: trainable has {len(trainable)} entries; it needs len(neuron)+1")
    default_fparam = f["default_fparam"]
    if default_fparam is not None:
        if nfp > 0 and len(default_fparam) != nfp:
            raise UnsupportedModel(f"{where}: default_fparam has {len(default_fparam)} values, numb_fparam is {nfp}")
    in_dim = dim_descrpt + nfp + (0 if f["use_aparam_as_mask"] else nap) + ncase
    nets = [init.fitting_net(in_dim, 1, neuron, f["activation_function"], f["resnet_dt"], prec, where, trainable)
            for _ in range(1 if mixed_types else ntypes)]
    trainable_list = ([True] * (len(neuron) + 1) if trainable is None else
                      [trainable] * (len(neuron) + 1) if isinstance(trainable, bool) else list(trainable))
    return {
        "@class": "Fitting",
        "@version": 4,
        "var_name": "energy",
        "ntypes": ntypes,
        "dim_descrpt": dim_descrpt,
        "neuron": neuron,
        "resnet_dt": f["resnet_dt"],
        "numb_fparam": nfp,
        "numb_aparam": nap,
        "dim_case_embd": ncase,
        "default_fparam": default_fparam,
        "rcond": f["rcond"],
        "activation_function": f["activation_function"],
        "precision": prec,
        "mixed_types": mixed_types,
        "exclude_types": list(exclude_types),
        "nets": init.collection(0 if mixed_types else 1, ntypes, "fitting_network", nets),
        "@variables": {
            "bias_atom_e": np.zeros((ntypes, 1), dtype=np.float64),
            "case_embd": np.zeros(ncase, dtype=dtype) if ncase > 0 else None,
            "fparam_avg": np.zeros(nfp, dtype=dtype) if nfp > 0 else None,
            "fparam_inv_std": np.ones(nfp, dtype=dtype) if nfp > 0 else None,
            "aparam_avg": np.zeros(nap, dtype=dtype) if nap > 0 else None,
            "aparam_inv_std": np.ones(nap, dtype=dtype) if nap > 0 else None,
        },
        "type_map": copy.deepcopy(type_map),
        "tot_ener_zero": False,
        "trainable": trainable_list,
        "layer_name": None,
        "use_aparam_as_mask": f["use_aparam_as_mask"],
        "spin": None,
        "dim_out": 1,
        "atom_ener": f["atom_ener"],
        "type": "ener",
    }


def _standard(data: Dict[str, Any], init: _Init, mode: str, where: str) -> Dict[str, Any]:
    type_map = data["type_map"]
    ntypes = len(type_map)
    atom_exclude = data.get("atom_exclude_types", [])
    pair_exclude = data.get("pair_exclude_types", [])
    if not isinstance(atom_exclude, list) or not all(isinstance(t, int) and 0 <= t < ntypes for t in atom_exclude):
        raise UnsupportedModel(f"{where}: atom_exclude_types={atom_exclude!r} is not a list of type indices")
    pair_exclude = _exclude_pairs(pair_exclude, where, "pair_exclude_types", ntypes)
    descriptor, dim_out, mixed = _descriptor(data.get("descriptor"), ntypes, type_map, init, mode,
                                             where + ".descriptor")
    fitting = _fitting(data.get("fitting_net"), ntypes, type_map, dim_out, mixed, atom_exclude, init, mode,
                       where + ".fitting_net")
    out_bias = np.zeros((1, ntypes, 1), dtype=np.float64)
    preset = data.get("preset_out_bias") if mode == "argcheck" else None
    if preset is not None:
        if not isinstance(preset, dict) or set(preset) - {"energy"}:
            raise UnsupportedModel(f"{where}: preset_out_bias={preset!r}: only {{'energy': [per-type value or "
                                   "null]}} applies to an energy model")
        values = preset.get("energy", [None] * ntypes)
        if len(values) != ntypes:
            raise UnsupportedModel(f"{where}: preset_out_bias['energy'] needs one entry per type ({ntypes})")
        preset = {"energy": []}
        for t, v in enumerate(values):
            if v is None:
                preset["energy"].append(None)
                continue
            v = [float(x) for x in v] if isinstance(v, list) else [float(v)]
            if len(v) != 1:
                raise UnsupportedModel(f"{where}: preset_out_bias['energy'][{t}] must be one number")
            out_bias[0, t, 0] = v[0]
            preset["energy"].append(v)
    return {
        "type_map": copy.deepcopy(type_map),
        "atom_exclude_types": list(atom_exclude),
        "pair_exclude_types": pair_exclude,
        "rcond": None,
        "preset_out_bias": preset,
        "@variables": {"out_bias": out_bias, "out_std": np.ones((1, ntypes, 1), dtype=np.float64)},
        "@class": "Model",
        "type": "standard",
        "@version": 2,
        "descriptor": descriptor,
        "fitting": fitting,
    }


def _use_spin_bools(use_spin: Any, type_map: List[str], where: str) -> List[bool]:
    if not isinstance(use_spin, list) or not use_spin:
        raise UnsupportedModel(f"{where}: use_spin={use_spin!r} must be a non-empty list")
    if all(isinstance(v, bool) for v in use_spin):
        if len(use_spin) != len(type_map):
            raise UnsupportedModel(f"{where}: use_spin has {len(use_spin)} entries for {len(type_map)} types")
        return list(use_spin)
    if all(isinstance(v, str) for v in use_spin):
        unknown = [v for v in use_spin if v not in type_map]
        if unknown:
            raise UnsupportedModel(f"{where}: use_spin names {unknown} that are not in type_map")
        idx = [type_map.index(v) for v in use_spin]
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in use_spin):
        idx = list(use_spin)
        if any(not 0 <= i < len(type_map) for i in idx):
            raise UnsupportedModel(f"{where}: use_spin indices {idx} out of range")
    else:
        raise UnsupportedModel(f"{where}: use_spin={use_spin!r} mixes booleans, indices and names")
    return [t in idx for t in range(len(type_map))]


def _spin(data: Dict[str, Any], init: _Init, mode: str) -> Dict[str, Any]:
    where = "model.spin"
    spin = data["spin"]
    if not isinstance(spin, dict):
        raise UnsupportedModel(f"{where}: expected a dict")
    for key in spin:
        if key not in _SPIN_KEYS and not key.startswith("_"):
            raise UnsupportedModel(f"{where}: unknown option {key!r}")
    if str(spin.get("scheme", "deepspin")) != "deepspin":
        raise UnsupportedModel(f"{where}: scheme={spin['scheme']!r} (native spin, DPA4/SeZM only) is not supported")
    if spin.get("allow_missing_label", False):
        raise UnsupportedModel(f"{where}: allow_missing_label is only supported by DPA4/SeZM spin models")
    for key in ("spin_norm", "virtual_len"):
        if key in spin:
            raise UnsupportedModel(f"{where}: {key} is the TensorFlow spin scheme; give virtual_scale instead")
    if "virtual_scale" not in spin:
        raise UnsupportedModel(f"{where}: required option 'virtual_scale' is missing")
    type_map = data["type_map"]
    n = len(type_map)
    use_spin = _use_spin_bools(spin["use_spin"], type_map, where)
    scale = spin["virtual_scale"]
    if isinstance(scale, list):
        if len(scale) == n:
            virtual_scale = np.array(scale)
        elif len(scale) == sum(use_spin):
            virtual_scale = np.zeros(n, dtype=np.float64)
            virtual_scale[np.array(use_spin)] = scale
        else:
            raise UnsupportedModel(f"{where}: virtual_scale has {len(scale)} entries; expected {n} or "
                                   f"{sum(use_spin)}")
    elif isinstance(scale, float):
        virtual_scale = np.array([scale] * n)
    else:
        raise UnsupportedModel(f"{where}: virtual_scale={scale!r} must be a float or a list of floats")
    # deepmd/utils/spin.py: placeholder (virtual types of non-spin species) x every type are excluded
    # pairs; every virtual type is an excluded atom type.
    placeholder = [n + t for t in range(n) if not use_spin[t]]
    pair_exclude = [[p, t] for p in placeholder for t in range(2 * n)]
    user_pairs = data.get("pair_exclude_types")
    if user_pairs is not None:
        pair_exclude += _exclude_pairs(user_pairs, "model", "pair_exclude_types", 2 * n)
    atom_exclude = list(range(n, 2 * n))
    user_atoms = data.get("atom_exclude_types")
    if user_atoms is not None:
        atom_exclude = sorted(set(atom_exclude + list(user_atoms)))
    backbone = copy.deepcopy(data)
    backbone.pop("spin")
    backbone["type_map"] = list(type_map) + [t + "_spin" for t in type_map]
    backbone["pair_exclude_types"] = pair_exclude
    backbone["atom_exclude_types"] = atom_exclude
    descriptor = backbone.get("descriptor")
    if not isinstance(descriptor, dict):
        raise UnsupportedModel("model.descriptor: expected a dict")
    if descriptor.get("type") == "hybrid":
        raise UnsupportedModel("model.descriptor: spin models with a hybrid descriptor are not supported "
                               "(deepmd-kit sets exclude_types on the descriptor, which hybrid does not take)")
    descriptor["exclude_types"] = copy.deepcopy(pair_exclude)
    if mode == "argcheck":  # deepmd/pt/model/model/__init__.py get_spin_model
        if descriptor.get("env_protection", 0.0) == 0.0:
            descriptor["env_protection"] = 0.01
    else:  # deepmd/dpmodel/model/model_factory.py get_spin_model
        descriptor.setdefault("env_protection", 1e-6)
    if descriptor.get("type") in ("se_e2_a", "se_a"):
        sel = descriptor.get("sel", "auto")
        if isinstance(sel, str):
            _sel_int(sel, "model.descriptor", "sel")
        sel = _int_list(sel, "model.descriptor", "sel")
        descriptor["sel"] = list(sel) + list(sel)  # deepmd-kit doubles se_e2_a's per-type sel
    return {
        "type": "spin_ener",
        "backbone_model": _standard(backbone, init, mode, "model(backbone)"),
        "spin": {"use_spin": np.array(use_spin).tolist(), "virtual_scale": virtual_scale.tolist()},
    }


def model_dict_from_input(model_section: dict, seed: int, *, defaults: str = "argcheck") -> dict:
    """The deepmd-kit model node (what `dp convert-backend` writes under "model") of the freshly
    initialised model of a training input's `model` section; see the module docstring. `defaults`:
    "argcheck" (what `dp train` builds) or "constructor" (deepmd-kit's get_model on the raw dict)."""
    if defaults not in DEFAULT_MODES:
        raise ValueError(f"defaults={defaults!r}: expected one of {DEFAULT_MODES}")
    if not isinstance(model_section, dict):
        raise UnsupportedModel(f"model: expected a dict (the 'model' section of input.json), got "
                               f"{type(model_section).__name__}")
    data = {k: v for k, v in model_section.items() if not k.startswith("_")}
    for key in data:
        if key in _MODEL_REFUSED:
            raise UnsupportedModel(f"model: option {key!r}: {_MODEL_REFUSED[key]}")
        if key not in _MODEL_KEYS:
            raise UnsupportedModel(f"model: unknown option {key!r}; known: {', '.join(sorted(_MODEL_KEYS))}")
    if data.get("type", "standard") != "standard":
        raise UnsupportedModel(f"model: model type {data['type']!r} is not supported (only 'standard')")
    type_map = data.get("type_map")
    if not isinstance(type_map, list) or not type_map or not all(isinstance(t, str) for t in type_map):
        raise UnsupportedModel("model: type_map (a non-empty list of element names) is required")
    if "descriptor" not in data:
        raise UnsupportedModel("model: required option 'descriptor' is missing")
    if defaults == "argcheck" and "fitting_net" not in data:  # the constructor path defaults it to {}
        raise UnsupportedModel("model: required option 'fitting_net' is missing")
    init = _Init(seed)
    if "spin" in data:
        return _spin(data, init, defaults)
    return _standard(data, init, defaults, "model")


# --------------------------------------------------------------------------------------------------
# .dp writer (deepmd/dpmodel/utils/serialization.py save_dp_model; FORMAT.md §1.1)
# --------------------------------------------------------------------------------------------------


def _jsonable(node: Any, where: str) -> Any:
    if isinstance(node, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, (np.bool_,)):
        return bool(node)
    if isinstance(node, np.integer):
        return int(node)
    if isinstance(node, np.floating):
        return float(node)
    if node is None or isinstance(node, (str, bool, int, float)):
        return node
    raise UnsupportedModel(f"{where}: {type(node).__name__} cannot be stored in a .dp file's JSON")


def _walk_variables(node: Any, store: Callable[[Any], str], is_variable: bool = False) -> Any:
    """deepmd-kit's traverse_model_dict: leaves below '@variables' (and '@is_variable' dicts) are arrays."""
    if isinstance(node, dict):
        if node.get("@is_variable", False):
            return store(node)
        return {k: _walk_variables(v, store, is_variable or k == "@variables") for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_walk_variables(v, store, is_variable) for v in node]
    if node is None or not is_variable:
        return node
    return store(node)


def write_dp(model_dict_tree: dict, path: str, model_def_script: Optional[dict] = None,
             backend: str = "dpmodel", version: str = "3.0.0") -> None:
    """Write a deepmd-kit `.dp` file. `model_dict_tree` is either a model node (as
    model_dict_from_input returns; it is wrapped with software/version/time/backend/model_def_script/
    @variables) or a whole file dict with a "model" key (written as given, software/version/time
    refreshed as deepmd-kit's writer does). Arrays become datasets /variable_NNNN in traversal order;
    the JSON attribute holds the tree with each array replaced by its dataset name."""
    import h5py

    if not isinstance(model_dict_tree, dict):
        raise UnsupportedModel("write_dp: expected a dict")
    if "model" in model_dict_tree and isinstance(model_dict_tree["model"], dict):
        body = dict(model_dict_tree)
    else:
        body = {"backend": backend, "model": model_dict_tree,
                "model_def_script": {} if model_def_script is None else model_def_script, "@variables": {}}
    head = {"software": "deepmd-kit", "version": version, "time": str(datetime.datetime.now(tz=datetime.timezone.utc))}
    for key in head:
        body.pop(key, None)
    counter = [0]
    with h5py.File(path, "w") as f:
        def store(value: Any) -> str:
            name = f"variable_{counter[0]:04d}"
            counter[0] += 1
            return f.create_dataset(name, data=np.asarray(value)).name

        tree = _walk_variables(body, store)
        f.attrs["json"] = json.dumps(_jsonable({**head, **tree}, "tree"), separators=(",", ":"))
