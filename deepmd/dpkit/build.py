"""The one registry of this package: deepmd-kit descriptor type -> class, and the model builders.

Each descriptor module is imported when present, so the registry lists what this checkout can run.
A descriptor class is built as `Cls(node, ntypes)` from its deepmd-kit dict node (descriptor.py)."""

import importlib
from typing import Any, Dict

import torch

from deepmd.dpkit.serialization import UnsupportedModel, load_model_dict

# (module, class, deepmd-kit type names). deepmd-kit's aliases: se_a = se_e2_a, se_atten = dpa1;
# se_atten_v2 is DPA1 with the stripped type embedding.
_MODULES = [
    ("deepmd.dpkit.se_e2_a", "SeE2A", ["se_e2_a", "se_a"]),
    ("deepmd.dpkit.dpa1", "DescrptDPA1", ["dpa1", "se_atten", "se_atten_v2"]),
    ("deepmd.dpkit.dpa2", "DescrptDPA2", ["dpa2"]),
    ("deepmd.dpkit.dpa3", "DescrptDPA3", ["dpa3"]),
    ("deepmd.dpkit.hybrid", "DescrptHybrid", ["hybrid"]),
]


# type name -> why its module could not be imported (a module that exists but fails to import must not
# take the other descriptors down with it; asking for its type raises the original error).
IMPORT_ERRORS: Dict[str, BaseException] = {}


def _registry() -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    for module_name, class_name, names in _MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # not written (yet): the type is simply not supported
                continue
            IMPORT_ERRORS.update({n: e for n in names})
            continue
        except Exception as e:  # noqa: BLE001 - kept and re-raised when the type is asked for
            IMPORT_ERRORS.update({n: e for n in names})
            continue
        cls = getattr(module, class_name, None)
        if cls is None:
            IMPORT_ERRORS.update({n: ImportError(f"{module_name} has no class {class_name}") for n in names})
            continue
        for name in names:
            found[name] = cls
    return found


DESCRIPTORS: Dict[str, Any] = _registry()

# deepmd-kit's descriptor versions that mean "compressed" (tabulated embedding nets).
_COMPRESSED_VERSION = {"se_e2_a": 3, "se_a": 3, "dpa1": 3, "se_atten": 3, "se_atten_v2": 3, "dpa2": 4}


def descriptor_from_dict(node: Dict[str, Any], ntypes: int, where: str = "model.descriptor") -> torch.nn.Module:
    kind = node.get("type")
    if "compress" in node or (kind in _COMPRESSED_VERSION and node.get("@version") == _COMPRESSED_VERSION[kind]):
        raise UnsupportedModel(f"{where}: this {kind} descriptor is compressed (@version {node.get('@version')}, "
                               "tabulated embedding nets); compressed/tabulated models are not supported: export "
                               "the uncompressed model (the one before `dp compress`)")
    if kind in IMPORT_ERRORS:
        raise ImportError(f"{where}: the module for descriptor type {kind!r} failed to import: "
                          f"{IMPORT_ERRORS[kind]!r}") from IMPORT_ERRORS[kind]
    if kind not in DESCRIPTORS:
        raise UnsupportedModel(f"{where}: descriptor type {kind!r} is not supported; supported types: "
                               f"{', '.join(sorted(DESCRIPTORS))}")
    return DESCRIPTORS[kind](node, ntypes, where)


def model_from_dict(node: Dict[str, Any]) -> torch.nn.Module:
    """The module for deepmd-kit's `model` node: standard -> StandardModel, spin_ener -> SpinEnergyModel."""
    if not isinstance(node, dict):
        raise UnsupportedModel("model: not a deepmd-kit model dict")
    if node.get("type") == "spin_ener":
        try:
            from deepmd.dpkit.spin import SpinEnergyModel
        except ModuleNotFoundError as e:
            if e.name != "deepmd.dpkit.spin":
                raise
            raise UnsupportedModel("model: spin_ener models are not supported by this build (no deepmd/dpkit/spin.py)")
        return SpinEnergyModel(node)
    from deepmd.dpkit.model import StandardModel
    return StandardModel(node)


def load_model(path: str) -> torch.nn.Module:
    return model_from_dict(load_model_dict(path)["model"])


def set_layer_formulation(model: torch.nn.Module, fused: bool) -> Dict[str, str]:
    """Selects, before scripting, how every layer that has a fused kernel (deepmd/kernels) computes:
    the kernel (fused=True) or deepmd-kit's reference formulation (the default of built models, and what
    training uses: the kernels are differentiable once only). DPA2's repformer layers choose one by one
    (the g2 attention and the g1 neighbour sums), and so does the repinit's three-body block. Per DPA3 descriptor, all or nothing: the
    fused layers pass packed angles (real pairs only) from one to the next, so one layer with options
    the kernel lacks keeps the whole descriptor on the reference. Returns {layer: "fused" | "fused; <what
    stays on the reference, why>" | "reference" | "reference: <why>"}."""
    from deepmd.dpkit.dpa2 import ThreeBody
    from deepmd.dpkit.dpa3 import DescrptDPA3
    from deepmd.dpkit.repformer_layer import RepformerLayer
    chosen: Dict[str, str] = {}
    for layer in model.modules():  # DPA2: the three-body block and each repformer layer on their own
        if isinstance(layer, (RepformerLayer, ThreeBody)):
            chosen[layer.where] = layer.set_fused(fused)
    for descriptor in model.modules():
        if not isinstance(descriptor, DescrptDPA3):
            continue
        layers = list(descriptor.layers)
        why = {layer.where: layer.fused_unsupported() for layer in layers} if fused else {}
        blocking = [f"{where}: {w}" for where, w in why.items() if w]
        on = fused and not blocking
        descriptor.fused_env = on
        for layer in layers:
            layer.fused = on
            if on:
                chosen[layer.where] = "fused"
            elif blocking:
                own = why[layer.where]
                chosen[layer.where] = "reference: " + (own if own else "the descriptor's other layers need it ("
                                                       + "; ".join(blocking) + ")")
            else:
                chosen[layer.where] = "reference"
    return chosen
