"""The fused layer kernels (deepmd/kernels, build.set_layer_formulation) against the reference
formulation and against deepmd-kit.

1. Every fixture model of ../shared/deepmd-kit with a repflow layer: fused against reference (energy,
   force, virial, atom energy, atom virial; max |Δ| ≤ 1e-12 x max(1, |reference|)) on deepmd-kit's
   reference cases, and fused against deepmd-kit's reference outputs (1e-10, as references_test), in the
   regular and the with-comm graph (self-exchange plan).
2. The float32 models of deepmd/train/water_dpa3.json and examples/models/dpa3_realistic.json (freshly
   initialised, seed 1): fused against reference to 1e-5 relative, every output; the realistic one in
   float64 to 1e-12. These have 3 layers: the fixtures' 2 layers never read the kernel's angle_new
   (the last layer updates nodes only), these do.
3. deepmd-kit's production DPA2 (examples/models/dpa2_medium.json, float64, residual weights 1 so that the
   g2 attention weighs): its kernels (three-body, g2 attention, g1 sums) against the reference to 1e-12,
   smooth and gated, and neither; float32 to 1e-5; blocks and layers whose options the kernels lack stay on
   the reference, saying why.
4. Forces = -dE/dx by central finite differences through the kernels (float64, DPA3 with 3 layers, DPA2).
Each check requires at least one fused layer, so a model silently left on the reference fails.
Usage: fused_test.py OPS_LIBRARY."""

import copy
import json
import os
import re
import unittest

import numpy as np
import torch

from tests import unittest_main
from tests.dpkit import references as R

from deepmd.dpkit import build
from deepmd.dpkit.serialization import load_model_dict
from deepmd.models.exchange_plan import encode
from deepmd.models.model import RegularGraph, WithCommGraph
from deepmd.models.periodic import extend, random_system

KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")
REPO = R.REPO


def model_dict(stem: str) -> dict:
    return load_model_dict(R.model_path(stem))["model"]


def is_spin(node: dict) -> bool:
    return node.get("type") == "spin_ener"


class SelfExchange:
    """The with-comm graph driven through forward_lower (references.evaluate): one rank, every ghost row
    filled from its owner in one stage."""

    def __init__(self, graph):
        self.graph = graph

    def forward_lower(self, *args):
        *inputs, nlist, mapping, fparam, aparam, do_atomic_virial = args
        nloc, nall = nlist.shape[1], mapping.shape[1]
        owners = mapping[0, nloc:].tolist()
        plan = encode(nloc, nall - nloc, [[("send", 0, owners), ("recv", 0, nall - nloc, nloc)]] if owners else [])
        return self.graph.forward_lower_with_comm(*inputs, nlist, fparam, aparam, do_atomic_virial, plan)


def built(node: dict, fused: bool):
    model = build.model_from_dict(copy.deepcopy(node))
    chosen = build.set_layer_formulation(model, fused)
    return model, chosen


def graphs(model, with_comm: bool):
    if is_spin_model(model):
        from deepmd.models.spin import SpinRegularGraph, SpinWithCommGraph
        cls = SpinWithCommGraph if with_comm else SpinRegularGraph
    else:
        cls = WithCommGraph if with_comm else RegularGraph
    graph = torch.jit.script(cls(copy.deepcopy(model)))
    return SelfExchange(graph) if with_comm else graph


def is_spin_model(model) -> bool:
    return bool(getattr(model, "is_spin", False))


def repflow_stems():
    try:
        stems = R.model_stems()
    except FileNotFoundError:
        return []
    found = []
    for stem in stems:
        try:
            model, chosen = built(model_dict(stem), True)
        except Exception:  # noqa: BLE001 - models this package refuses are references_test's business
            continue
        if "fused" in chosen.values():
            found.append(stem)
        elif chosen:
            print(f"  {stem}: no layer with a kernel ({chosen})")
    return found


def worst_relative(a: dict, b: dict, keys) -> dict:
    return {k: float(np.max(np.abs(a[k] - b[k]))) / max(1.0, float(np.max(np.abs(b[k])))) for k in keys}


class FixtureModelsTest(unittest.TestCase):
    def check(self, stem: str, with_comm: bool) -> None:
        node = model_dict(stem)
        fused_model, chosen = built(node, True)
        ref_model, _ = built(node, False)
        print(f"  {stem}: {chosen}", flush=True)
        if "fused" not in chosen.values():
            self.skipTest(f"no layer of {stem} has a kernel: {chosen}")
        spin = is_spin(node)
        fused, ref = graphs(fused_model, with_comm), graphs(ref_model, with_comm)
        reference = R.load_reference(stem)
        keys = KEYS + (("force_mag",) if spin else ())
        for name, case in reference["cases"].items():
            with self.subTest(case=name):
                a = R.evaluate(fused, case, fused_model.rcut, spin=spin)
                b = R.evaluate(ref, case, ref_model.rcut, spin=spin)
                diff = worst_relative(a, b, keys)
                errors = R.max_errors(a, case)
                print(f"  {stem}/{name}{' with-comm' if with_comm else ''}: fused-reference "
                      + " ".join(f"{k} {v:.1e}" for k, v in diff.items()) + "; fused-deepmd-kit "
                      + " ".join(f"{k} {v:.1e}" for k, v in errors.items()), flush=True)
                for key in keys:
                    self.assertLessEqual(diff[key], 1e-12, f"{stem}/{name}: fused vs reference {key}")
                for key, err in errors.items():
                    self.assertLessEqual(err, 1e-10, f"{stem}/{name}: fused vs deepmd-kit {key}")


for _stem in repflow_stems():
    _name = re.sub(r"\W", "_", _stem)
    setattr(FixtureModelsTest, f"test_{_name}", lambda self, s=_stem: self.check(s, False))
    setattr(FixtureModelsTest, f"test_{_name}_with_comm", lambda self, s=_stem: self.check(s, True))


def config_model_dict(path: str, precision: str = "", repflow: dict = None, block: str = "repflow",
                      descriptor: dict = None) -> dict:
    """The freshly initialised model of a training input (seed 1), optionally in another precision, with
    other options of its message-passing block (repflow: DPA3, repformer: DPA2) or descriptor."""
    from deepmd.dpkit.init import model_dict_from_input
    with open(os.path.join(REPO, path)) as f:
        section = json.load(f)["model"]
    if precision:
        section["descriptor"]["precision"] = precision
        section["fitting_net"]["precision"] = precision
    section["descriptor"][block].update(repflow or {})
    section["descriptor"].update(descriptor or {})
    return model_dict_from_input(section, 1)


# DPA2 medium with residual weights of 1 instead of its N(0, 0.01) ones: fresh models' g2 attention otherwise
# moves forces by ~1e-7 of their size, below what a 1e-12 comparison of the whole model could see.
STRONG_ATTENTION = {"update_residual": 1.0, "update_residual_init": "const"}
DPA2_MEDIUM = "examples/models/dpa2_medium.json"


def water(natoms: int, seed: int, ntypes: int):
    box = [(natoms / 0.1) ** (1.0 / 3.0)] * 3
    pos, atype = random_system(natoms, box, ntypes, seed=seed, min_dist=0.9)
    return pos, atype, box


def run(graph, s, atomic: bool = True):
    out = graph.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, atomic)
    return {k: v.detach().double().numpy() for k, v in out.items() if k in KEYS}


class ConfigModelsTest(unittest.TestCase):
    """The two float32 DPA3 configurations the benchmarks run, on a water-density box."""

    def check(self, path: str, precision: str = "", tolerance: float = 1e-5, repflow: dict = None,
              block: str = "repflow", descriptor: dict = None) -> None:
        node = config_model_dict(path, precision, repflow, block, descriptor)
        fused_model, chosen = built(node, True)
        ref_model, _ = built(node, False)
        self.assertEqual(set(chosen.values()), {"fused"}, chosen)
        default = torch.float64 if block == "repformer" else torch.float32  # the inputs' own precisions
        self.assertEqual(fused_model.descriptor.dtype, {"float64": torch.float64, "float32": torch.float32}.get(
            precision, default))
        pos, atype, box = water(60, 4, len(fused_model.type_map))
        s = extend(pos, atype, box, fused_model.rcut)
        a = run(torch.jit.script(RegularGraph(fused_model)), s)
        b = run(torch.jit.script(RegularGraph(ref_model)), s)
        for key in KEYS:
            scale = float(np.max(np.abs(b[key])))
            err = float(np.max(np.abs(a[key] - b[key]))) / scale
            print(f"  {path} {precision}: {key} relative {err:.1e}", flush=True)
            self.assertLessEqual(err, tolerance, f"{path}: {key}")

    def test_water_dpa3(self):
        self.check("deepmd/train/water_dpa3.json")

    def test_dpa3_realistic(self):
        self.check("examples/models/dpa3_realistic.json")

    def test_dpa3_realistic_float64(self):
        self.check("examples/models/dpa3_realistic.json", "float64", 1e-12)

    def test_a_sel_below_the_real_count(self):
        """a_sel 6 with ~27 neighbours within a_rcut: the angle list is cut (the first a_sel entries), and
        res_avg's update style; float64 to 1e-12."""
        pos, _, box = water(60, 4, 2)
        d = pos.unsqueeze(0) - pos.unsqueeze(1)
        d = d - torch.round(d / torch.tensor(box, dtype=d.dtype)) * torch.tensor(box, dtype=d.dtype)
        within = (d.norm(dim=-1) < 4.0).sum(-1) - 1
        self.assertGreater(int(within.min()), 6)  # every atom has more real angle neighbours than a_sel
        self.check("examples/models/dpa3_realistic.json", "float64", 1e-12,
                   {"a_sel": 6, "update_style": "res_avg"})

    def test_dpa3_edge_update_forms(self):
        """The edge kernel's combine (repflow_edge_update) under res_incr, and the graph's combine kept for
        smooth_edge_update=False (the angle update beyond the angle list is then per slot); without
        update_angle the kernel combines the edge self update alone (res_avg: alpha = 1/√2). Float64, 1e-12."""
        for repflow in ({"update_style": "res_incr"}, {"smooth_edge_update": False},
                        {"update_angle": False, "update_style": "res_avg"}):
            with self.subTest(**repflow):
                self.check("examples/models/dpa3_realistic.json", "float64", 1e-12, repflow)


    def test_dpa2_medium(self):
        """deepmd-kit's production DPA2 (float64): its g2 attention through the kernel, smooth and gated."""
        self.check(DPA2_MEDIUM, "", 1e-12, STRONG_ATTENTION, "repformer")

    def test_dpa2_medium_not_smooth_no_gate(self):
        self.check(DPA2_MEDIUM, "", 1e-12, dict(STRONG_ATTENTION, attn2_has_gate=False), "repformer",
                   {"smooth": False})

    def test_dpa2_without_local_atoms(self):
        """No local atom (nloc = 0, as a rank whose subdomain is empty; here no atom at all, which the regular
        graph can evaluate): the kernels' shapes stay defined and the graph gives what the reference gives."""
        node = config_model_dict(DPA2_MEDIUM, block="repformer")
        fused_model, chosen = built(node, True)
        ref_model, _ = built(node, False)
        self.assertIn("fused", chosen.values(), chosen)
        pos, atype, box = water(30, 2, len(fused_model.type_map))
        s = extend(pos, atype, box, fused_model.rcut)
        s = dict(s, coord=s["coord"][:, :0], atype=s["atype"][:, :0], nlist=s["nlist"][:, :0],
                 mapping=s["mapping"][:, :0])
        a = run(torch.jit.script(RegularGraph(fused_model)), s)
        b = run(torch.jit.script(RegularGraph(ref_model)), s)
        for key in KEYS:
            self.assertEqual(a[key].shape, b[key].shape, key)
            self.assertTrue(np.array_equal(a[key], b[key]), key)

    def test_dpa2_medium_float32(self):
        self.check(DPA2_MEDIUM, "float32", 1e-5, STRONG_ATTENTION, "repformer")


class FallbackTest(unittest.TestCase):
    """Options the kernel does not cover keep the reference formulation, saying why."""

    def test_uncovered_options(self):
        from deepmd.dpkit.init import model_dict_from_input
        for key, value, why in (("sequential_update", True, "sequential_update"),
                                ("activation_function", "gelu", "activation kind 3")):
            with open(os.path.join(REPO, "examples/models/dpa3.json")) as f:
                section = json.load(f)["model"]
            target = section["descriptor"] if key == "activation_function" else section["descriptor"]["repflow"]
            target[key] = value
            model, chosen = built(model_dict_from_input(section, 1), True)
            self.assertTrue(chosen and all(v.startswith("reference: ") and why in v for v in chosen.values()), chosen)
            self.assertFalse(any(layer.fused for layer in model.descriptor.layers))

    def test_reference_is_the_default(self):
        model = build.model_from_dict(config_model_dict("examples/models/dpa3.json"))
        self.assertFalse(any(layer.fused for layer in model.descriptor.layers))
        model = build.model_from_dict(config_model_dict(DPA2_MEDIUM, block="repformer"))
        self.assertFalse(any(layer.fused_attention or layer.fused_sums for layer in model.descriptor.layers))

    def test_dpa2_options_without_the_kernel(self):
        """update_h2 reads the attention map itself: the attention stays on the reference (the g1 sums do
        not); a layer with neither attention nor conv nor drrd has nothing to fuse. Each entry says why."""
        def layers(chosen):
            return [v for k, v in chosen.items() if "repformer_layers" in k]

        model, chosen = built(config_model_dict(DPA2_MEDIUM, block="repformer", repflow={"update_h2": True}), True)
        self.assertTrue(all(v.startswith("fused; the g2 attention on the reference") and "update_h2" in v
                            for v in layers(chosen)[:-1]), chosen)
        self.assertEqual([(layer.fused_attention, layer.fused_sums) for layer in model.descriptor.layers],
                         [(False, True)] * len(layers(chosen)))
        none = {"update_g2_has_attn": False, "update_g1_has_conv": False, "update_g1_has_drrd": False}
        model, chosen = built(config_model_dict(DPA2_MEDIUM, block="repformer", repflow=none), True)
        self.assertTrue(all(v.startswith("reference: nothing the kernels compute") for v in layers(chosen)), chosen)
        self.assertFalse(any(layer.fused_attention or layer.fused_sums for layer in model.descriptor.layers))

    def test_three_body_fallbacks(self):
        """The three-body kernel needs the first layer by blocks (not strip) and zero stored averages of the
        direction components (otherwise pairs with a padded slot contribute): else the reference, saying why."""
        node = config_model_dict(DPA2_MEDIUM, block="repinit", repflow={"tebd_input_mode": "strip"})
        _, chosen = built(node, True)
        self.assertTrue(chosen["model.descriptor.repinit_three_body_variable"].startswith("reference: the type "
                                                                                       "embedding as strip"), chosen)
        model = build.model_from_dict(config_model_dict(DPA2_MEDIUM, block="repformer"))
        with torch.no_grad():
            model.descriptor.three_body.davg[..., 1] += 0.25
        chosen = build.set_layer_formulation(model, True)
        self.assertIn("averages of the direction components are non-zero",
                      chosen["model.descriptor.repinit_three_body_variable"])
        self.assertFalse(model.descriptor.three_body.fused)

    def test_dpa2_not_out_conv(self):
        """g1_out_conv off: the convolution reads proj_g1g2 of the neighbours' g1 rows (float64, 1e-12)."""
        ConfigModelsTest().check(DPA2_MEDIUM, "", 1e-12, dict(STRONG_ATTENTION, g1_out_conv=False), "repformer")


class FiniteDifferenceTest(unittest.TestCase):
    """Forces of the fused graph are -dE/dx (central differences, float64)."""

    def test_forces(self):
        self.check(config_model_dict("deepmd/train/water_dpa3.json", "float64"))

    def test_forces_dpa2(self):
        self.check(config_model_dict(DPA2_MEDIUM, repflow=STRONG_ATTENTION, block="repformer"))

    def check(self, node: dict) -> None:
        model, chosen = built(node, True)
        self.assertIn("fused", chosen.values(), chosen)
        self.assertEqual(model.descriptor.dtype, torch.float64)
        graph = torch.jit.script(RegularGraph(model))
        pos, atype, box = water(30, 2, len(model.type_map))

        def energy_force(p):
            s = extend(p, atype, box, model.rcut)
            out = graph.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, False)
            force = torch.zeros(p.shape[0], 3, dtype=torch.float64).index_add_(0, s["mapping"][0],
                                                                                out["force"][0].double())
            return float(out["energy"].sum()), force

        _, force = energy_force(pos)
        h = 1e-5
        worst = 0.0
        for atom in (0, 7, 19):
            for d in range(3):
                plus, minus = pos.clone(), pos.clone()
                plus[atom, d] += h
                minus[atom, d] -= h
                numeric = -(energy_force(plus)[0] - energy_force(minus)[0]) / (2 * h)
                worst = max(worst, abs(numeric - float(force[atom, d])))
        print(f"  finite differences: max |F + dE/dx| {worst:.1e} (max |F| {float(force.abs().max()):.2e})", flush=True)
        self.assertGreater(float(force.abs().max()), 1e-3)
        self.assertLessEqual(worst, 1e-7)


if __name__ == "__main__":
    unittest_main.run()
