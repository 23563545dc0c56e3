"""Reads deepmd-kit's backend-neutral model files into the model dict that deepmd-kit's
`deserialize` methods take: `.dp` (HDF5), `.yaml`/`.yml`, and the JSON dict inside deepmd-kit's
`.pt2` (AOTInductor export, entry `*/model/extra/model.json`) and `.pte` (extra file `model.json`).

Arrays are the leaves below every `@variables` key and every dict marked `"@is_variable": true`
(deepmd-kit's `traverse_model_dict`); they become numpy arrays of their stored dtype. Also the checks
every node reader shares: versions, options, and the error type that names node, key and fix."""

import json
import os
import zipfile
from typing import Any, Callable, Dict, List, Optional

import numpy as np


class UnsupportedModel(ValueError):
    """A model file this project cannot run exactly: the message names the node, the key and what to do."""


def _traverse(node: Any, leaf: Callable[[Any], Any], is_variable: bool = False) -> Any:
    if isinstance(node, dict):
        if node.get("@is_variable", False):
            return leaf(node)
        return {k: _traverse(v, leaf, is_variable or k == "@variables") for k, v in node.items()}
    if isinstance(node, list):
        return [_traverse(v, leaf, is_variable) for v in node]
    if node is None or not is_variable:
        return node
    return leaf(node)


def _array_from_yaml(leaf: Any) -> Any:
    if isinstance(leaf, dict) and leaf.get("@class") == "np.ndarray":
        return np.asarray(leaf["value"], dtype=np.dtype(leaf["dtype"]))
    return np.asarray(leaf)


def _load_dp(path: str) -> Dict[str, Any]:
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - bootstrap installs it
        raise UnsupportedModel(f"{path}: reading .dp files needs h5py (Debian package python3-h5py; "
                               "scripts/bootstrap.sh installs it)") from e
    try:
        with h5py.File(path, "r") as f:
            tree = json.loads(f.attrs["json"])
            return _traverse(tree, lambda name: f[name][()].copy())
    except (OSError, KeyError, ValueError) as e:
        raise UnsupportedModel(f"{path}: not a readable deepmd-kit .dp file (HDF5 with a 'json' attribute and "
                               f"its /variable_NNNN datasets): {e}") from e


def _load_yaml(path: str) -> Dict[str, Any]:
    import yaml
    try:
        with open(path) as f:
            tree = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UnsupportedModel(f"{path}: not a readable deepmd-kit .yaml model: {e}") from e
    return _traverse(tree, _array_from_yaml)


def _load_zip_json(path: str, suffixes: List[str], what: str) -> Dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if any(name == s or name.endswith("/" + s) for s in suffixes):
                    return _traverse(json.loads(z.read(name)), _array_from_yaml)
            names = z.namelist()
    except zipfile.BadZipFile as e:
        raise UnsupportedModel(f"{path}: not a ZIP archive ({e}); a deepmd-kit {what} is one") from e
    if any(n.endswith("metadata.json") for n in names) and any("forward_lower" in n for n in names):
        raise UnsupportedModel(f"{path} is already an archive of this project: give it to pair_style deepmd or "
                               "dp_eval directly")
    raise UnsupportedModel(f"{path}: no model dict ({' or '.join(suffixes)}) in this {what}; export the model with "
                           "deepmd-kit's `dp convert-backend MODEL model.dp` and give that file instead")


def load_model_dict(path: str) -> Dict[str, Any]:
    """The whole deepmd-kit dict of a model file (top keys `model`, `software`, `version`, ...)."""
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise UnsupportedModel(f"{path}: no such file")
    if ext == ".dp":
        data = _load_dp(path)
    elif ext in (".yaml", ".yml"):
        data = _load_yaml(path)
    elif ext == ".pt2":
        data = _load_zip_json(path, ["model/extra/model.json", "extra/model.json"], "AOTInductor .pt2")
    elif ext == ".pte":
        data = _load_zip_json(path, ["model.json", "extra/model.json"], ".pte")
    elif ext in (".pth", ".pt"):
        raise UnsupportedModel(f"{path} is a deepmd-kit PyTorch checkpoint/TorchScript model; convert it with "
                               f"`dp --pt convert-backend {path} model.dp` and export that file")
    elif ext == ".pb":
        raise UnsupportedModel(f"{path} is a deepmd-kit TensorFlow graph; convert it with "
                               f"`dp --tf convert-backend {path} model.dp` and export that file")
    else:
        raise UnsupportedModel(f"{path}: unknown model file type {ext!r}; expected a deepmd-kit .dp, .yaml, .pt2 or .pte")
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise UnsupportedModel(f"{path}: no 'model' node at the top of the model dict")
    return data


def check_version(node: Dict[str, Any], where: str, lowest: int, highest: int, default: int = 1) -> int:
    """deepmd-kit's check_version_compatibility, with a message naming the node."""
    version = node.get("@version", default)
    if not isinstance(version, int) or version < lowest or version > highest:
        hint = ("written by a newer deepmd-kit than this project knows" if isinstance(version, int) and
                version > highest else "not a version deepmd-kit writes")
        raise UnsupportedModel(f"{where}: @version {version!r} is {hint} (supported {lowest}..{highest}); "
                               "export the model with a deepmd-kit release this project supports, or update "
                               "this project")
    return version


def require(node: Dict[str, Any], where: str, key: str) -> Any:
    if key not in node:
        raise UnsupportedModel(f"{where}: required key {key!r} is missing; the file is incomplete or not a "
                               "deepmd-kit model dict")
    return node[key]


def refuse_unless(node: Dict[str, Any], where: str, key: str, allowed: Callable[[Any], bool], default: Any,
                  explanation: str) -> Any:
    """The option's value, or an UnsupportedModel naming node, key and value when `allowed` is false."""
    value = node.get(key, default)
    if not allowed(value):
        raise UnsupportedModel(f"{where}: option {key}={value!r} is not supported: {explanation}")
    return value


def variables(node: Dict[str, Any]) -> Dict[str, Optional[np.ndarray]]:
    return node.get("@variables", {}) or {}
