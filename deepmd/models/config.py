"""Builds a model from its JSON configuration (docs/model_config.md)."""

import json
from typing import Any, Dict

import torch

from deepmd.models.descriptors import Hybrid, RepFlows, Repformers, SeE2A
from deepmd.models.fitting import EnergyFitting
from deepmd.models.model import EnergyModel
from deepmd.models.spin import SpinModel

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


def _descriptor(cfg: Dict[str, Any], ntypes: int, seed: int, dtype: torch.dtype) -> torch.nn.Module:
    kind = cfg.get("type")
    if kind == "se_e2_a":
        return SeE2A(ntypes, cfg["rcut"], cfg["rcut_smth"], cfg["sel"], cfg.get("neuron", [16, 32]),
                     cfg.get("axis_neuron", 8), seed, dtype)
    if kind == "dpa3":
        return RepFlows(ntypes, cfg["e_rcut"], cfg["e_rcut_smth"], cfg["e_sel"], cfg["a_rcut"], cfg["a_rcut_smth"],
                        cfg["a_sel"], cfg.get("n_dim", 32), cfg.get("e_dim", 16), cfg.get("a_dim", 8),
                        cfg.get("nlayers", 2), cfg.get("n_rbf", 8), seed, dtype, cfg.get("use_loc_mapping", False))
    if kind == "dpa2":
        return Repformers(ntypes, cfg["rcut_init"], cfg["rcut_smth_init"], cfg["sel_init"], cfg["rcut"],
                          cfg["rcut_smth"], cfg["sel"], cfg.get("tebd_dim", 8), cfg.get("init_neuron", [16, 32]),
                          cfg.get("init_axis", 4), cfg.get("g1_dim", 32), cfg.get("g2_dim", 16),
                          cfg.get("attn_dim", 16), cfg.get("axis", 4), cfg.get("nlayers", 2), seed, dtype)
    if kind == "hybrid":
        return Hybrid([_descriptor(child, ntypes, seed + 1000 * (i + 1), dtype) for i, child in enumerate(cfg["list"])])
    raise ValueError(f"descriptor.type {kind!r} is not one of: se_e2_a, dpa3, dpa2, hybrid")


def cutoff(cfg: Dict[str, Any]) -> float:
    """The largest neighbour cutoff of a descriptor configuration (what the neighbour list must cover)."""
    if cfg["type"] == "hybrid":
        return max(cutoff(child) for child in cfg["list"])
    return max(cfg.get(k, 0.0) for k in ("rcut", "e_rcut", "rcut_init"))


def max_sel(cfg: Dict[str, Any]) -> int:
    if cfg["type"] == "hybrid":
        return max(max_sel(child) for child in cfg["list"])
    return max(cfg.get(k, 0) for k in ("sel", "e_sel", "sel_init"))


def build_model(config: Dict[str, Any]) -> torch.nn.Module:
    """An EnergyModel, or a SpinModel around one when the configuration has a "spin" section."""
    if "spin" in config:
        spin = config["spin"]
        ntypes = len(config["type_map"])
        backbone_config = dict(config)
        del backbone_config["spin"]
        backbone_config["type_map"] = list(config["type_map"]) + [t + "_spin" for t in config["type_map"]]
        fitting = dict(config.get("fitting", {}))
        fitting["bias"] = list(fitting.get("bias", [-1.0] * ntypes)) + [0.0] * ntypes  # virtual atoms: no energy
        backbone_config["fitting"] = fitting
        return SpinModel(_build_energy_model(backbone_config), list(config["type_map"]), list(spin["use_spin"]),
                         list(spin["virtual_scale"]))
    return _build_energy_model(config)


def _build_energy_model(config: Dict[str, Any]) -> EnergyModel:
    type_map = config["type_map"]
    ntypes = len(type_map)
    dtype = PRECISIONS[config.get("precision", "float64")]
    seed = int(config.get("seed", 1))
    desc_cfg = config["descriptor"]
    descriptor = _descriptor(desc_cfg, ntypes, seed, dtype)
    fit_cfg = config.get("fitting", {})
    bias = fit_cfg.get("bias", [-1.0] * ntypes)
    fitting = EnergyFitting(ntypes, descriptor.dim_out, fit_cfg.get("neuron", [32, 32]), fit_cfg.get("dim_fparam", 0),
                            fit_cfg.get("dim_aparam", 0), bias, fit_cfg.get("scale", 20.0), seed + 7, dtype)
    rcut = cutoff(desc_cfg)
    sel = [max_sel(desc_cfg)]
    return EnergyModel(descriptor, fitting, type_map, rcut, sel)


def load_config(path: str) -> Dict[str, Any]:
    with open(path) as f:
        return json.load(f)
