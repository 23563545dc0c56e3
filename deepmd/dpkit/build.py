"""The one registry of this package: deepmd-kit descriptor type -> class, and the model builders.

Each descriptor module is imported when present, so the registry lists what this checkout can run.
A descriptor class is built as `Cls(node, ntypes)` from its deepmd-kit dict node (descriptor.py)."""

import importlib
from typing import Any, Dict

import torch

from deepmd.dpkit import network
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


class _ScriptableActivation(torch.nn.Module):
    """WORKAROUND for network.Activation.forward, which compares with module-level ints (_LINEAR, ...)
    that TorchScript 1.13 cannot read ("python value of type 'int' cannot be used as a value"). Same
    math, literal kinds (asserted equal to network.py's below). Remove once network.py is fixed."""

    def __init__(self, act: torch.nn.Module):
        super().__init__()
        self.kind, self.threshold, self.slope, self.const = act.kind, act.threshold, act.slope, act.const

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kind
        if k == 0:  # linear
            return x
        if k == 1:  # tanh
            return torch.tanh(x)
        if k == 7:  # silu
            return x * torch.sigmoid(x)
        if k == 8:  # silut
            return torch.where(x < self.threshold, x * torch.sigmoid(x),
                               torch.tanh(self.slope * (x - self.threshold)) + self.const)
        if k == 2:  # relu
            return x * (x > 0).to(x.dtype)
        if k == 3:  # gelu (tanh form)
            return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
        if k == 4:  # relu6
            return torch.where(x < 0, torch.zeros_like(x), torch.where(x > 6, torch.full_like(x, 6.0), x))
        if k == 5:  # softplus
            positive = x > 0
            e = torch.exp(torch.where(positive, -x, x))
            return torch.where(positive, x + torch.log(1 + e), torch.log(1 + e))
        return torch.sigmoid(x)


assert [getattr(network, n, i) for i, n in enumerate(
    ["_LINEAR", "_TANH", "_RELU", "_GELU", "_RELU6", "_SOFTPLUS", "_SIGMOID", "_SILU", "_SILUT"])] == list(range(9))


_ACTIVATION_SCRIPTS: Dict[str, bool] = {}


def _activation_scripts() -> bool:
    """Whether network.Activation scripts as it is (then the workaround stays out of the way)."""
    if "ok" not in _ACTIVATION_SCRIPTS:
        try:
            torch.jit.script(network.Activation("tanh"))
            _ACTIVATION_SCRIPTS["ok"] = True
        except Exception:  # noqa: BLE001 - the TorchScript error of the global-int comparison
            _ACTIVATION_SCRIPTS["ok"] = False
    return _ACTIVATION_SCRIPTS["ok"]


def make_scriptable(model: torch.nn.Module) -> torch.nn.Module:
    """Swaps every network.Activation for the scriptable copy (see _ScriptableActivation), unless
    network.Activation scripts by itself."""
    if _activation_scripts():
        return model
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child).__name__ == "Activation" and type(child).__module__ == network.__name__:
                setattr(module, name, _ScriptableActivation(child))
    return model


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
        return make_scriptable(SpinEnergyModel(node))
    from deepmd.dpkit.model import StandardModel
    return make_scriptable(StandardModel(node))


def load_model(path: str) -> torch.nn.Module:
    return model_from_dict(load_model_dict(path)["model"])
