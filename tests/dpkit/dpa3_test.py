"""deepmd/dpkit's DPA3 descriptor (dpa3.py, repflow_layer.py) against deepmd-kit.

Oracles:
* deepmd-kit's reference outputs (../shared/deepmd-kit/references, fp64, 1e-10) for the five DPA3 fixtures,
  every case (scripted regular graph): static and dynamic sel, use_loc_mapping true/false, the production
  option set (a_compress split, smooth edges, edge_init_use_dist, exp switch, silut:10).
* Option variants no fixture holds (res_avg, res_incr, n_multi_edge_message, sequential_update, linear angle
  compression, non-smooth edge update, update_angle false, use_tebd_bias, exclude_types, env_protection,
  optim_update false, other activations, dynamic sel with sel_reduce_factor, float32): the descriptors built by
  `variant_node` from a seed, on water192 (both lists truncated), checked against fingerprints of deepmd-kit's
  own DescrptDPA3 (deepmd-kit bc902daf, deepmd/dpmodel, numpy) on exactly these nodes and neighbour lists
  (VARIANT_FINGERPRINTS; how they were made is in its comment); plus forces = finite differences.
* The regular graph for the with-comm graph (multi-hop self-exchange plan, as deepmd/tools/export.py checks it).
* The float64 model for its float32 cast (1e-5 relative).
Usage: dpa3_test.py OPS_LIBRARY."""

import copy
import unittest
from typing import Any, Dict

import numpy as np
import torch

from tests import unittest_main
from tests.dpkit import references as R

from deepmd.dpkit import build, env
from deepmd.dpkit.dpa3 import DescrptDPA3
from deepmd.dpkit.serialization import UnsupportedModel, load_model_dict
from deepmd.models.ghosts import ExchangeGhosts
from deepmd.models.model import RegularGraph, WithCommGraph
from deepmd.models.periodic import extend, random_system

STEMS = ["gen_dpa3_seed1_head", "gen_dpa3_seed1_head_noloc", "gen_dpa3_seed1_a0946240", "dpa3_small_prod_options",
         "dpa3_small_dynamic"]
TOL = 1e-10
KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")


def model_node(stem: str) -> Dict[str, Any]:
    return load_model_dict(R.model_path(stem))["model"]


def to_float32(tree: Any) -> Any:
    """The model dict with every floating array cast to float32 and every precision key set to float32."""
    if isinstance(tree, dict):
        return {k: ("float32" if k == "precision" else to_float32(v)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [to_float32(v) for v in tree]
    if isinstance(tree, np.ndarray) and np.issubdtype(tree.dtype, np.floating):
        return tree.astype(np.float32)
    return tree


# --- option variants built from scratch in deepmd-kit's serialized layout -----------------------------------

def _layer(rng, nin, nout, precision, bias=True, activation="none", resnet=False, scale=1.0):
    dt = np.float32 if precision == "float32" else np.float64
    return {"@class": "Layer", "@version": 2, "bias": bias, "use_timestep": False, "activation_function": activation,
            "resnet": resnet, "precision": precision, "trainable": True,
            "@variables": {"w": (rng.normal(size=(nin, nout)) * scale / np.sqrt(nin)).astype(dt),
                           "b": (rng.normal(size=nout) * 0.3).astype(dt) if bias else None, "idt": None}}


VARIANTS: Dict[str, Dict[str, Any]] = {
    # name: repflow_args changes, descriptor-level changes
    "res_avg_nonsmooth": ({"update_style": "res_avg"}, {}),
    "res_incr_heads2": ({"update_style": "res_incr", "n_multi_edge_message": 2}, {"activation_function": "tanh"}),
    "sequential_compress_linear": ({"sequential_update": True, "a_compress_rate": 2, "a_dim": 8,
                                    "n_multi_edge_message": 2}, {}),
    "prod_like_split": ({"a_compress_rate": 1, "a_compress_e_rate": 2, "a_compress_use_split": True,
                         "smooth_edge_update": True, "edge_init_use_dist": True, "use_exp_switch": True,
                         "e_rcut_smth": 5.3, "a_rcut_smth": 3.5}, {"activation_function": "silut:10.0",
                                                                   "concat_output_tebd": False}),
    "no_angle_tebd_bias_exclude": ({"update_angle": False}, {"use_tebd_bias": True, "exclude_types": [[0, 1]],
                                                              "env_protection": 0.01}),
    "no_optim_linear_compress": ({"optim_update": False, "a_compress_rate": 2, "a_dim": 8},
                                 {"activation_function": "gelu"}),
    "dynamic_sel": ({"use_dynamic_sel": True, "smooth_edge_update": True, "e_sel": 300, "a_sel": 100,
                     "sel_reduce_factor": 5.0}, {}),
    "dynamic_sequential_float32": ({"use_dynamic_sel": True, "smooth_edge_update": True, "e_sel": 300, "a_sel": 100,
                                    "sequential_update": True, "a_compress_rate": 1, "a_compress_e_rate": 2,
                                    "a_compress_use_split": True}, {"precision": "float32"}),
}


def variant_node(name: str, ntypes: int = 2) -> Dict[str, Any]:
    """A DPA3 descriptor node with the options of VARIANTS[name] and seeded random weights, residuals and
    statistics (davg ≠ 0, so padded slots carry values), laid out as deepmd-kit's serialize() writes it."""
    changes, top = VARIANTS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    args = {"n_dim": 8, "e_dim": 6, "a_dim": 4, "nlayers": 2, "e_rcut": 6.0, "e_rcut_smth": 2.0, "e_sel": 30,
            "a_rcut": 4.0, "a_rcut_smth": 2.0, "a_sel": 20, "a_compress_rate": 0, "a_compress_e_rate": 1,
            "a_compress_use_split": False, "n_multi_edge_message": 1, "axis_neuron": 4, "update_angle": True,
            "update_style": "res_residual", "update_residual": 0.1, "update_residual_init": "norm",
            "fix_stat_std": 0.3, "optim_update": True, "smooth_edge_update": False, "edge_init_use_dist": False,
            "use_exp_switch": False, "use_dynamic_sel": False, "sel_reduce_factor": 10.0, "sequential_update": False}
    args.update(changes)
    desc = {"@class": "Descriptor", "type": "dpa3", "@version": 2, "ntypes": ntypes, "repflow_args": args,
            "concat_output_tebd": True, "activation_function": "silu", "precision": "float64", "exclude_types": [],
            "env_protection": 0.0, "trainable": True, "use_econf_tebd": False, "use_tebd_bias": False,
            "use_loc_mapping": False, "add_chg_spin_ebd": False, "default_chg_spin": None, "type_map": None}
    desc.update(top)
    p = desc["precision"]
    dt = np.float32 if p == "float32" else np.float64
    n, e, a, H = args["n_dim"], args["e_dim"], args["a_dim"], args["n_multi_edge_message"]
    tb = desc["use_tebd_bias"]
    desc["type_embedding"] = {
        "@class": "TypeEmbedNet", "@version": 2, "ntypes": ntypes, "neuron": [n], "resnet_dt": False, "precision": p,
        "activation_function": "Linear", "trainable": True, "padding": True, "use_econf_tebd": False,
        "use_tebd_bias": tb, "type_map": None,
        "embedding": {"@class": "EmbeddingNetwork", "@version": 2, "in_dim": ntypes, "neuron": [n],
                      "activation_function": "Linear", "resnet_dt": False, "bias": tb, "precision": p,
                      "layers": [_layer(rng, ntypes, n, p, bias=tb, activation="Linear", resnet=True, scale=1.5)]}}
    rate, e_rate = args["a_compress_rate"], args["a_compress_e_rate"]
    n_a, e_a = (a // rate, a // (2 * rate) * e_rate) if rate else (n, e)
    layers = []
    for _ in range(args["nlayers"]):
        lay = {"@class": "RepFlowLayer", "@version": 2, "e_rcut": args["e_rcut"], "e_rcut_smth": args["e_rcut_smth"],
               "e_sel": [args["e_sel"]], "a_rcut": args["a_rcut"], "a_rcut_smth": args["a_rcut_smth"],
               "a_sel": args["a_sel"], "ntypes": ntypes, "n_dim": n, "e_dim": e, "a_dim": a,
               "activation_function": desc["activation_function"], "precision": p}
        for k in ("a_compress_rate", "a_compress_e_rate", "a_compress_use_split", "n_multi_edge_message",
                  "axis_neuron", "update_angle", "update_style", "update_residual", "update_residual_init",
                  "optim_update", "smooth_edge_update", "use_dynamic_sel", "sel_reduce_factor", "sequential_update"):
            lay[k] = args[k]
        ax = args["axis_neuron"]
        lay["node_self_mlp"] = _layer(rng, n, n, p)
        lay["node_sym_linear"] = _layer(rng, ax * (n + e), n, p, scale=2.0)
        lay["node_edge_linear"] = _layer(rng, 2 * n + e, H * n, p)
        lay["edge_self_linear"] = _layer(rng, 2 * n + e, e, p)
        if args["update_angle"]:
            lay["edge_angle_linear1"] = _layer(rng, a + n_a + 2 * e_a, e, p)
            lay["edge_angle_linear2"] = _layer(rng, e, e, p)
            lay["angle_self_linear"] = _layer(rng, a + n_a + 2 * e_a, a, p)
            if rate and not args["a_compress_use_split"]:
                lay["a_compress_n_linear"] = _layer(rng, n, n_a, p, bias=False)
                lay["a_compress_e_linear"] = _layer(rng, e, e_a, p, bias=False)
        if args["update_style"] == "res_residual":
            def res(width, count):
                return [(0.3 * rng.normal(size=width)).astype(dt) for _ in range(count)]
            lay["@variables"] = {"n_residual": res(n, 2 + H), "e_residual": res(e, 2 if args["update_angle"] else 1),
                                 "a_residual": res(a, 1 if args["update_angle"] else 0)}
        layers.append(lay)
    shape = (ntypes, args["e_sel"], 4)
    desc["repflow_variable"] = {
        "edge_embd": _layer(rng, 1, e, p), "angle_embd": _layer(rng, 1, a, p, bias=False, scale=2.0),
        "repflow_layers": layers,
        "env_mat": {"rcut": args["e_rcut"], "rcut_smth": args["e_rcut_smth"], "protection": 0.0,
                    "use_exp_switch": False},
        "@variables": {"davg": (0.05 * rng.normal(size=shape)).astype(dt),
                       "dstd": (0.2 + 0.3 * rng.random(size=shape)).astype(dt)}}
    return desc


def variant_inputs(desc_node: Dict[str, Any]):
    """water192 extended to the cutoff, the list formatted as the model formats it (sorted, e_sel)."""
    case = R.load_reference("dpa3_small_prod_options")["cases"]["water192"]
    rcut = desc_node["repflow_args"]["e_rcut"]
    s = R.extended_system(np.asarray(case["coord"]), np.asarray(case["atype"]),
                          np.asarray(case["box"]).reshape(3, 3), rcut)
    coord = torch.from_numpy(s["coord"]).unsqueeze(0)
    nlist = env.format_nlist(coord, torch.from_numpy(s["nlist"]).unsqueeze(0), rcut,
                             int(desc_node["repflow_args"]["e_sel"]))
    return coord, torch.from_numpy(s["atype"]).unsqueeze(0), nlist, torch.from_numpy(s["mapping"]).unsqueeze(0)


def fingerprint(x: np.ndarray):
    """(Σx, Σx·cos(0.37k), Σ|x|) over the flattened descriptor."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    return float(flat.sum()), float((flat * np.cos(0.37 * np.arange(flat.size))).sum()), float(np.abs(flat).sum())


# fingerprint() of deepmd-kit's own output: deepmd-kit bc902daf's deepmd/dpmodel DescrptDPA3.deserialize(
# variant_node(name)).call(coord, atype, nlist, mapping) on variant_inputs(...) as numpy arrays (its numpy
# backend, run outside this project with a numpy stand-in for array_api_compat), first output (node_ebd).
VARIANT_FINGERPRINTS = {
    "res_avg_nonsmooth": (-1174.4069042389497, -5.929321850830959, 1639.426023717341),
    "res_incr_heads2": (-1174.4916469362825, 1.4414615468912135, 2420.9930102282387),
    "sequential_compress_linear": (-249.97312523667858, -3.626115100055401, 1641.3011319975328),
    "prod_like_split": (-3.803310248307106, -13.800502069901686, 1107.6561931806866),
    "no_angle_tebd_bias_exclude": (1835.1774380428094, -13.386713244692285, 2660.0330422279467),
    "no_optim_linear_compress": (983.3811801139409, 1.284322987975778, 1732.545517153213),
    "dynamic_sel": (806.571607402976, 27.209964797358886, 2958.7441805829076),
    "dynamic_sequential_float32": (230.37552338535897, 11.655094572486039, 2339.3545891598333),
}


class ReferenceCase(unittest.TestCase):
    def check_fixture(self, graph, stem):
        ref = R.load_reference(stem)
        for name, case in ref["cases"].items():
            errors = R.max_errors(R.evaluate(graph, case, ref["rcut"]), case)
            print(f"  {stem} {name}: " + " ".join(f"{k} {errors[k]:.1e}" for k in KEYS if k in errors))
            for key in KEYS:
                if case.get(key) is not None:
                    self.assertIn(key, errors)
                    self.assertLess(errors[key], TOL, f"{stem} {name} {key}")

    @staticmethod
    def comm_system(rcut: float, ntypes: int):
        box = [0.8 * rcut, 0.9 * rcut, 1.1 * rcut]  # thinner than the cutoff: ghosts of ghosts
        pos, atype = random_system(10, box, ntypes, seed=17, min_dist=1.0)
        return extend(pos, atype, box, rcut)


class FixtureTest(ReferenceCase):
    def test_fixtures(self):
        for stem in STEMS:
            model = build.load_model(R.model_path(stem))
            d = model.descriptor
            self.assertIsInstance(d, DescrptDPA3)
            args = model_node(stem)["descriptor"]["repflow_args"]
            self.assertEqual((d.rcut, d.sel, d.mixed_types, d.has_message_passing, d.nlayers),
                             (args["e_rcut"], [args["e_sel"]], True, True, args["nlayers"]))
            self.assertEqual(d.exchanged_widths(), [args["n_dim"]] * args["nlayers"])
            self.check_fixture(torch.jit.script(RegularGraph(model)), stem)

    def test_with_comm(self):
        """The with-comm graph (ghost node features exchanged before every layer) equals the regular one."""
        for stem in ("gen_dpa3_seed1_head_noloc", "dpa3_small_prod_options", "dpa3_small_dynamic"):
            regular = torch.jit.script(RegularGraph(build.load_model(R.model_path(stem))))
            comm = torch.jit.script(WithCommGraph(build.load_model(R.model_path(stem))))
            s = self.comm_system(regular.model.rcut, 2)
            self.assertTrue(s["multi_hop"])
            ref = regular.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True)
            out = comm.forward_lower_with_comm(s["coord"], s["atype"], s["nlist"], None, None, True, s["plan"])
            worst = max(float((out[k] - ref[k]).abs().max()) for k in KEYS)
            print(f"  {stem} with-comm vs regular: {worst:.1e} (|F| max {float(ref['force'].abs().max()):.1e})")
            self.assertLess(worst, TOL)

    def test_float32(self):
        """The production model's float32 cast (weights and precision keys) against the float64 model."""
        stem = "dpa3_small_prod_options"
        node32 = to_float32(model_node(stem))
        model32 = build.model_from_dict(node32)
        self.assertEqual(model32.descriptor.dtype, torch.float32)
        graph32 = torch.jit.script(RegularGraph(model32))
        ref = R.load_reference(stem)
        for name in ("test6_pbc", "water192_triclinic"):
            case = ref["cases"][name]
            out = R.evaluate(graph32, case, ref["rcut"])
            for key in KEYS:
                scale = float(np.abs(np.asarray(case[key])).max())
                rel = float(np.abs(out[key] - np.asarray(case[key]).reshape(out[key].shape)).max()) / scale
                print(f"  float32 {name} {key}: {rel:.1e} relative")
                self.assertLess(rel, 1e-5, f"{name} {key}")
        # its with-comm graph too (the tolerance the exporter uses for float32)
        comm = torch.jit.script(WithCommGraph(build.model_from_dict(to_float32(model_node(stem)))))
        s = self.comm_system(model32.rcut, 2)
        a = graph32.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True)
        b = comm.forward_lower_with_comm(s["coord"], s["atype"], s["nlist"], None, None, True, s["plan"])
        for key in KEYS:
            self.assertLess(float((a[key] - b[key]).abs().max()) / max(1.0, float(a[key].abs().max())), 1e-5, key)

    def test_refusals(self):
        node = model_node("gen_dpa3_seed1_head")
        changes = [({"add_chg_spin_ebd": True}, None), ({"@version": 3}, None), ({"unknown_option": 1}, None),
                   ({"use_econf_tebd": True}, "type_embedding"), ({}, {"update_style": "res_other"}),
                   ({}, {"use_dynamic_sel": True, "smooth_edge_update": False}),
                   ({}, {"sequential_update": True, "update_style": "res_avg"}), ({}, {"unknown_repflow": 1})]
        for top, args in changes:
            bad = copy.deepcopy(node)
            if args == "type_embedding":
                bad["descriptor"]["type_embedding"].update(top)
            else:
                bad["descriptor"].update(top)
                if args:
                    bad["descriptor"]["repflow_args"].update(args)
            with self.assertRaises(UnsupportedModel, msg=f"{top} {args}"):
                build.model_from_dict(bad)


class VariantTest(ReferenceCase):
    @staticmethod
    def descriptor(name: str) -> DescrptDPA3:
        return DescrptDPA3(variant_node(name), 2)

    def test_against_deepmd_kit(self):
        for name in VARIANTS:
            desc = self.descriptor(name)
            scripted = torch.jit.script(desc)
            coord, atype, nlist, mapping = variant_inputs(variant_node(name))
            out = scripted(coord.to(desc.dtype), atype, nlist, mapping, None).double().numpy()
            got = fingerprint(out)
            want = VARIANT_FINGERPRINTS[name]
            tol = 1e-5 if desc.dtype == torch.float32 else 1e-12
            err = max(abs(g - w) for g, w in zip(got, want)) / want[2]
            print(f"  {name}: fingerprint relative difference {err:.1e}")
            self.assertLess(err, tol, name)

    def test_forces_and_with_comm(self):
        """Forces of Σ w·D are finite differences of it, and the exchange ghost filler gives the mapping's result."""
        rng = np.random.default_rng(3)
        for name in VARIANTS:
            desc = self.descriptor(name)
            if desc.dtype != torch.float64:
                continue
            regular = torch.jit.script(self.descriptor(name))
            comm_desc = self.descriptor(name)
            comm_desc.ghosts = ExchangeGhosts()
            comm = torch.jit.script(comm_desc)
            s = self.comm_system(desc.rcut, 2)
            nlist = env.format_nlist(s["coord"], s["nlist"], desc.rcut, desc.e_sel)
            a = regular(s["coord"], s["atype"], nlist, s["mapping"], None)
            b = comm(s["coord"], s["atype"], nlist, None, s["plan"])
            self.assertLess(float((a - b).abs().max()), 1e-12, name)
            weights = torch.from_numpy(rng.normal(size=tuple(a.shape)))

            def energy(c):
                return float((regular(c, s["atype"], nlist, s["mapping"], None) * weights).sum())

            coord = s["coord"].clone().requires_grad_(True)
            (regular(coord, s["atype"], nlist, s["mapping"], None) * weights).sum().backward()
            h = 1e-5
            for atom, k in ((0, 0), (3, 2), (int(s["nloc"]) + 1, 1)):
                e = []
                for step in (2, 1, -1, -2):
                    c = s["coord"].clone()
                    c[0, atom, k] += step * h
                    e.append(energy(c))
                fd = (8 * (e[1] - e[2]) - (e[0] - e[3])) / (12 * h)
                self.assertLess(abs(fd - float(coord.grad[0, atom, k])), 1e-7, f"{name} atom {atom} {k}")


if __name__ == "__main__":
    unittest_main.run()
