"""Builds a model from its JSON configuration (docs/model_config.md)."""

import json
from typing import Any, Dict

import torch

from deepmd.models.descriptors import RepFlows, SeE2A
from deepmd.models.fitting import EnergyFitting
from deepmd.models.model import EnergyModel

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


def _descriptor(cfg: Dict[str, Any], ntypes: int, seed: int, dtype: torch.dtype) -> torch.nn.Module:
    kind = cfg.get("type")
    if kind == "se_e2_a":
        return SeE2A(ntypes, cfg["rcut"], cfg["rcut_smth"], cfg["sel"], cfg.get("neuron", [16, 32]),
                     cfg.get("axis_neuron", 8), seed, dtype)
    if kind == "dpa3":
        return RepFlows(ntypes, cfg["e_rcut"], cfg["e_rcut_smth"], cfg["e_sel"], cfg["a_rcut"], cfg["a_rcut_smth"],
                        cfg["a_sel"], cfg.get("n_dim", 32), cfg.get("e_dim", 16), cfg.get("a_dim", 8),
                        cfg.get("nlayers", 2), cfg.get("n_rbf", 8), seed, dtype)
    raise ValueError(f"descriptor.type {kind!r} is not one of: se_e2_a, dpa3")


def build_model(config: Dict[str, Any]) -> EnergyModel:
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
    rcut = desc_cfg.get("rcut", desc_cfg.get("e_rcut"))
    sel = [desc_cfg.get("sel", desc_cfg.get("e_sel"))]
    return EnergyModel(descriptor, fitting, type_map, rcut, sel)


def load_config(path: str) -> Dict[str, Any]:
    with open(path) as f:
        return json.load(f)
