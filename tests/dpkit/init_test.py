"""deepmd/dpkit/init.py: model dicts from training inputs, and the .dp writer.

* Every fixture model in ../shared/deepmd-kit/models carries its training input (`model_def_script`).
  `model_dict_from_input(model_def_script, seed)` must give a tree with the fixture's structure: the
  same keys at every node, the same option values (and Python types), the same array shapes and
  dtypes, the same None-ness of optional arrays. The only keys excused are the deepmd-kit
  version-dependent ones listed in VERSION_DEPENDENT (the generated tree is deepmd-kit bc902daf's;
  some fixtures were written by 3.0.0b3/b5 or a0946240) and the two documented input patches of
  INPUT_PATCHES (fixture provenance, not a difference of this module).
  - defaults="constructor" (deepmd-kit's get_model on the raw dict, how every fixture was built):
    exact for every fixture.
  - defaults="argcheck" (what `dp train` builds): exact for the fixtures whose model_def_script is
    already argcheck-normalised; for the others only the argcheck-vs-constructor default differences
    of ARGCHECK_VS_CONSTRUCTOR appear.
* write_dp -> serialization.load_model_dict gives back the identical tree (values, dtypes, None),
  with datasets /variable_NNNN numbered in traversal order, for generated trees and for the fixtures.
* deepmd-kit's production example inputs (examples/water/*, examples/spin/se_e2_a; copied below as
  dicts) produce trees, in both modes.
* Options this module cannot fill raise UnsupportedModel naming the key.
* When deepmd/dpkit/build.py (model_from_dict) is present: every generated model builds and evaluates
  a small reference case to finite energy, forces and virial (skipped otherwise).

Usage: init_test.py [OPS_LIBRARY] (the ops library is not needed; it is accepted for the shared runner)."""

import copy
import json
import os
import re
import sys
import tempfile
import unittest
from typing import Any, Dict, List, Tuple

import numpy as np

from tests.dpkit import references as R

from deepmd.dpkit.init import model_dict_from_input, write_dp
from deepmd.dpkit.serialization import UnsupportedModel, load_model_dict

SEED = 20261201

# ---------------------------------------------------------------------------------------------
# What may differ between a fixture and the generated tree.
# ---------------------------------------------------------------------------------------------

# Keys deepmd-kit bc902daf writes that older deepmd-kit versions did not: (node kind, key) -> why.
# The node kind is the node's "@class" (the descriptor's "type" for Descriptor nodes), or the key
# under which a class-less node sits (env_mat, repflow_args); "<kind>.@variables" is that node's
# @variables. Allowed only as "present in the generated tree, absent in the fixture".
VERSION_DEPENDENT: Dict[Tuple[str, str], str] = {
    ("Layer", "trainable"): "Layer @version 2 added 'trainable' (deepmd-kit 3.0.0b5 files hold Layer v1)",
    ("env_mat", "protection"): "EnvMat.serialize gained 'protection' after 3.0.0b5",
    ("env_mat", "use_exp_switch"): "EnvMat.serialize gained 'use_exp_switch' after 3.0.0b5",
    ("Fitting", "dim_case_embd"): "Fitting @version 3 (case embedding, deepmd-kit #4417)",
    ("Fitting.@variables", "case_embd"): "Fitting @version 3 (case embedding, deepmd-kit #4417)",
    ("Fitting", "default_fparam"): "Fitting @version 4 (default_fparam, deepmd-kit #4888)",
    ("dpa3", "default_chg_spin"): "DPA3 default_chg_spin was added after a0946240",
    ("repflow_args", "sequential_update"): "repflow sequential_update was added after a0946240",
    ("RepFlowLayer", "sequential_update"): "repflow sequential_update was added after a0946240",
}
# Keys older deepmd-kit versions wrote that bc902daf does not (present only in the fixture).
FIXTURE_ONLY: Dict[Tuple[str, str], str] = {
    ("Fitting.@variables", "default_fparam_tensor"): "written by the Fitting v4 serializer of deepmd-kit "
                                                     "3.0.0b3+#5311; bc902daf rebuilds it from default_fparam",
}
# "@version" of these node classes may be older in the fixture than the generated one.
OLDER_VERSIONS = {"Layer": 2, "Fitting": 4}

# Changes to a fixture's model_def_script before generating (the fixture's model is not exactly
# what its script builds, for reasons of provenance): stem -> (path in the input, value, why).
INPUT_PATCHES: Dict[str, List[Tuple[Tuple[str, ...], Any, str]]] = {
    "fparam_aparam": [
        (("fitting_net", "precision"), "float64",
         "exported by deepmd-kit's TensorFlow backend, which writes the resolved precision name ('float64') "
         "where the input says 'default'"),
    ],
    "fparam_aparam_default": [
        (("fitting_net", "precision"), "float64", "as fparam_aparam (a copy of it)"),
        (("fitting_net", "default_fparam"), [0.25852028],
         "made from fparam_aparam.yaml by adding default_fparam to the model (deepmd-kit #5311); its "
         "model_def_script was not updated"),
    ],
}

# Fixtures whose model_def_script deepmd-kit's `dp train` already normalised with argcheck: in
# argcheck mode they must match exactly, too.
NORMALISED_SCRIPTS = {"deeppot_dpa", "fparam_aparam", "fparam_aparam_default"}

# argcheck mode vs the fixtures built by deepmd-kit's get_model from un-normalised scripts: the
# documented differences of the two default sets (deepmd/utils/argcheck.py vs the constructors, and
# the spin env_protection of the PyTorch vs the dpmodel model factory). path regex -> (generated
# value in argcheck mode, fixture value). "len" entries are list lengths.
_P = r"(?:\.backbone_model)?"
ARGCHECK_VS_CONSTRUCTOR: List[Tuple[str, Any, Any, str]] = [
    (_P + r"\.fitting\.atom_ener", [], None, "fitting atom_ener: argcheck [] / constructor None"),
    (_P + r"\.(?:fitting|descriptor)(?:\.[^.]+|\[\d+\])*\.precision", "default", "float64",
     "precision: argcheck 'default' / constructor 'float64' (kept verbatim where deepmd-kit keeps it)"),
    (_P + r"\.descriptor\.set_davg_zero", True, False, "se_atten set_davg_zero: argcheck true / constructor false"),
    (_P + r"\.descriptor\.(?:smooth_type_embedding|attention_layers\.attention_layers\[\d+\]\.attention_layer\.smooth)",
     False, True, "se_atten smooth_type_embedding: argcheck false / constructor true"),
    (_P + r"\.descriptor\.(?:env_protection|env_mat\.protection)", 0.01, 1e-6,
     "spin models: the PyTorch factory sets env_protection 0.01, the dpmodel factory 1e-6"),
    (r"\.descriptor\.type_one_side", False, True, "se_e2_a type_one_side: argcheck false / constructor true"),
    (r"\.descriptor\.embeddings\.ndim", 2, 1, "se_e2_a two-sided nets (type_one_side false)"),
    (r"\.descriptor\.embeddings\.networks", ("len", 4), ("len", 2), "se_e2_a two-sided nets (ntypes^2)"),
]


def _kind(node: Dict[str, Any], key_in_parent: str) -> str:
    cls = node.get("@class")
    if cls == "Descriptor":
        return str(node.get("type"))
    if cls is not None:
        return str(cls)
    return key_in_parent


def compare(gen: Any, fix: Any, path: str = "", kind: str = "", key: str = "") -> List[Tuple[str, Any, Any]]:
    """Differences (path, generated, fixture) of structure, options and arrays (shape, dtype, None),
    with the VERSION_DEPENDENT / FIXTURE_ONLY / OLDER_VERSIONS keys excused."""
    out: List[Tuple[str, Any, Any]] = []
    if isinstance(gen, dict) and isinstance(fix, dict):
        kind = _kind(fix, key) if key != "@variables" else kind + ".@variables"
        for k in sorted(set(gen) | set(fix), key=str):
            p = f"{path}.{k}"
            if k not in fix:
                if (kind, k) not in VERSION_DEPENDENT:
                    out.append((p, _short(gen[k]), "<absent>"))
            elif k not in gen:
                if (kind, k) not in FIXTURE_ONLY:
                    out.append((p, "<absent>", _short(fix[k])))
            elif (k == "@version" and kind in OLDER_VERSIONS and isinstance(fix[k], int)
                  and gen[k] == OLDER_VERSIONS[kind] and fix[k] < gen[k]):
                continue
            else:
                out += compare(gen[k], fix[k], p, kind, k)
        return out
    if isinstance(gen, list) and isinstance(fix, list):
        if len(gen) != len(fix):
            out.append((path, ("len", len(gen)), ("len", len(fix))))
        for i, (g, f) in enumerate(zip(gen, fix)):
            out += compare(g, f, f"{path}[{i}]", kind, key)
        return out
    if isinstance(gen, np.ndarray) or isinstance(fix, np.ndarray):
        if not (isinstance(gen, np.ndarray) and isinstance(fix, np.ndarray)):
            out.append((path, _short(gen), _short(fix)))
        elif gen.shape != fix.shape or gen.dtype != fix.dtype:
            out.append((path, _short(gen), _short(fix)))
        return out
    if type(gen) is not type(fix) or gen != fix:
        out.append((path, gen, fix))
    return out


def _short(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return f"array {x.dtype}{list(x.shape)}"
    if isinstance(x, (dict, list)):
        return f"<{type(x).__name__}>"
    return x


def fixture_input(stem: str, data: Dict[str, Any]) -> Dict[str, Any]:
    script = copy.deepcopy(data["model_def_script"])
    for keys, value, _ in INPUT_PATCHES.get(stem, []):
        node = script
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = copy.deepcopy(value)
    return script


_FIXTURES: Dict[str, Dict[str, Any]] = {}


def fixture(stem: str) -> Dict[str, Any]:
    if stem not in _FIXTURES:
        _FIXTURES[stem] = load_model_dict(R.model_path(stem))
    return _FIXTURES[stem]


def walk_arrays(node: Any, path: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk_arrays(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_arrays(v, f"{path}[{i}]")
    elif isinstance(node, np.ndarray):
        yield path, node


def assert_identical(test: unittest.TestCase, a: Any, b: Any, path: str = "") -> None:
    """Same tree, same values, same dtypes (the .dp round trip)."""
    if isinstance(a, dict):
        test.assertIsInstance(b, dict, path)
        test.assertEqual(list(a), list(b), f"{path}: keys (order included)")
        for k in a:
            assert_identical(test, a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        test.assertIsInstance(b, list, path)
        test.assertEqual(len(a), len(b), path)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(test, x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        test.assertIsInstance(b, np.ndarray, path)
        test.assertEqual((a.dtype, a.shape), (b.dtype, b.shape), path)
        test.assertTrue(np.array_equal(a, b), f"{path}: values differ")
    else:
        test.assertIs(type(a), type(b), f"{path}: {a!r} vs {b!r}")
        test.assertEqual(a, b, path)


# ---------------------------------------------------------------------------------------------
# deepmd-kit's production example inputs (the `model` sections, copied from deepmd-kit bc902daf); the
# two the benchmarks run are read from examples/models.
# ---------------------------------------------------------------------------------------------

EXAMPLES: Dict[str, Dict[str, Any]] = {
    # examples/water/dpa3/input_torch_dynamic.json
    "water_dpa3_dynamic": {
        "type_map": ["O", "H"],
        "descriptor": {
            "type": "dpa3",
            "repflow": {"n_dim": 128, "e_dim": 64, "a_dim": 32, "nlayers": 6, "e_rcut": 6.0, "e_rcut_smth": 5.3,
                        "e_sel": 1200, "a_rcut": 4.0, "a_rcut_smth": 3.5, "a_sel": 300, "axis_neuron": 4,
                        "fix_stat_std": 0.3, "a_compress_rate": 1, "a_compress_e_rate": 2,
                        "a_compress_use_split": True, "update_angle": True, "smooth_edge_update": True,
                        "edge_init_use_dist": True, "use_dynamic_sel": True, "sel_reduce_factor": 10.0,
                        "use_exp_switch": True, "update_style": "res_residual", "update_residual": 0.1,
                        "update_residual_init": "const"},
            "activation_function": "silut:10.0", "use_tebd_bias": False, "precision": "float32",
            "concat_output_tebd": False, "seed": 1,
        },
        "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "precision": "float32",
                        "activation_function": "silut:10.0", "seed": 1, "_comment": " that's all"},
        "_comment": " that's all",
    },
    # examples/water/dpa2/input_torch_compressible.json (repinit tebd_input_mode strip)
    "water_dpa2_compressible": {
        "type_map": ["O", "H"],
        "descriptor": {
            "type": "dpa2",
            "repinit": {"tebd_dim": 8, "rcut": 6.0, "rcut_smth": 0.5, "nsel": 120, "neuron": [25, 50, 100],
                        "axis_neuron": 12, "activation_function": "tanh", "three_body_sel": 48,
                        "three_body_rcut": 4.0, "three_body_rcut_smth": 3.5, "use_three_body": True,
                        "tebd_input_mode": "strip"},
            "repformer": {"rcut": 4.0, "rcut_smth": 3.5, "nsel": 48, "nlayers": 3, "g1_dim": 128, "g2_dim": 32,
                          "attn2_hidden": 32, "attn2_nhead": 4, "attn1_hidden": 128, "attn1_nhead": 4,
                          "axis_neuron": 4, "update_h2": False, "update_g1_has_conv": True,
                          "update_g1_has_grrg": True, "update_g1_has_drrd": True, "update_g1_has_attn": False,
                          "update_g2_has_g1g1": False, "update_g2_has_attn": False,
                          "update_style": "res_residual", "update_residual": 0.01, "update_residual_init": "norm",
                          "attn2_has_gate": True, "use_sqrt_nnei": True, "g1_out_conv": True, "g1_out_mlp": True},
            "precision": "float64", "add_tebd_to_repinit_out": False, "seed": 1,
        },
        "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "precision": "float64", "seed": 1,
                        "_comment": " that's all"},
        "_comment": " that's all",
    },
    # examples/water/se_atten/input_torch.json
    "water_se_atten": {
        "type_map": ["O", "H"],
        "descriptor": {"type": "dpa1", "sel": 120, "rcut_smth": 0.5, "rcut": 6.0, "neuron": [25, 50, 100],
                       "tebd_dim": 8, "axis_neuron": 16, "type_one_side": True, "attn": 128, "attn_layer": 2,
                       "attn_dotr": True, "attn_mask": False, "activation_function": "tanh", "scaling_factor": 1.0,
                       "normalize": True, "temperature": 1.0, "seed": 1},
        "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "seed": 1, "_comment": " that's all"},
        "_comment": " that's all",
    },
    # examples/water/se_e2_a/input_torch.json
    "water_se_e2_a": {
        "type_map": ["O", "H"],
        "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut_smth": 0.5, "rcut": 6.0, "neuron": [25, 50, 100],
                       "resnet_dt": False, "axis_neuron": 16, "type_one_side": True, "seed": 1,
                       "_comment": " that's all"},
        "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "seed": 1, "_comment": " that's all"},
        "data_stat_nbatch": 20,
        "_comment": " that's all",
    },
    # examples/spin/se_e2_a/input_torch.json
    "spin_se_e2_a": {
        "type_map": ["Ni", "O"],
        "descriptor": {"type": "se_e2_a", "sel": [60, 60], "rcut_smth": 5.4, "rcut": 5.6, "neuron": [25, 50, 100],
                       "resnet_dt": False, "axis_neuron": 16, "seed": 1, "_comment": " that's all"},
        "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "seed": 1, "_comment": " that's all"},
        "data_stat_nbatch": 10,
        "spin": {"use_spin": [True, False], "virtual_scale": [0.314], "_comment": " that's all"},
        "_comment": " that's all",
    },
}


def _example_input(name: str) -> Dict[str, Any]:
    with open(os.path.join(R.REPO, "examples", "models", name)) as f:
        return json.load(f)["model"]


EXAMPLES["water_dpa3"] = _example_input("dpa3_production.json")  # examples/water/dpa3/input_torch.json
EXAMPLES["water_dpa2_medium"] = _example_input("dpa2_medium.json")  # examples/water/dpa2/input_torch_medium.json


class FixtureStructureTest(unittest.TestCase):
    """One test per fixture and mode (added below)."""

    def check_constructor(self, stem: str) -> None:
        data = fixture(stem)
        tree = model_dict_from_input(fixture_input(stem, data), SEED, defaults="constructor")
        diffs = compare(tree, data["model"])
        self.assertEqual(diffs, [], f"{stem}: generated tree differs from the fixture")

    def check_argcheck(self, stem: str) -> None:
        data = fixture(stem)
        tree = model_dict_from_input(fixture_input(stem, data), SEED, defaults="argcheck")
        diffs = compare(tree, data["model"])
        if stem in NORMALISED_SCRIPTS:
            self.assertEqual(diffs, [], f"{stem}: its script is argcheck-normalised; the tree must match exactly")
            return
        unexplained = [d for d in diffs
                       if not any(re.fullmatch(rx, d[0]) and d[1] == g and d[2] == f
                                  for rx, g, f, _ in ARGCHECK_VS_CONSTRUCTOR)]
        self.assertEqual(unexplained, [], f"{stem}: differences beyond the argcheck/constructor defaults")


def _add_fixture_tests() -> None:
    for stem in R.model_stems():
        name = re.sub(r"\W", "_", stem)
        setattr(FixtureStructureTest, f"test_{name}_constructor",
                lambda self, s=stem: self.check_constructor(s))
        setattr(FixtureStructureTest, f"test_{name}_argcheck", lambda self, s=stem: self.check_argcheck(s))


_add_fixture_tests()


class ComparatorTest(unittest.TestCase):
    """The comparison itself notices what it must."""

    def test_notices(self):
        data = fixture("se_e2_a_small")
        tree = model_dict_from_input(data["model_def_script"], SEED, defaults="constructor")
        self.assertEqual(compare(tree, data["model"]), [])
        broken = copy.deepcopy(tree)
        broken["descriptor"]["embeddings"]["networks"][0]["layers"][1]["@variables"]["idt"] = np.zeros(16)
        broken["fitting"]["neuron"] = [24, 24]
        broken["descriptor"]["@variables"]["davg"] = broken["descriptor"]["@variables"]["davg"].astype(np.float32)
        del broken["fitting"]["var_name"]
        paths = {d[0] for d in compare(broken, data["model"])}
        self.assertEqual(paths, {".descriptor.embeddings.networks[0].layers[1].@variables.idt", ".fitting.neuron",
                                 ".descriptor.@variables.davg", ".fitting.var_name"})

    def test_version_rules_are_narrow(self):
        """A missing 'trainable' is excused on a Layer node only, not elsewhere."""
        data = fixture("deeppot_sea")
        tree = model_dict_from_input(data["model_def_script"], SEED, defaults="constructor")
        tree["fitting"]["trainable_extra"] = True
        self.assertEqual([d[0] for d in compare(tree, data["model"])], [".fitting.trainable_extra"])


class WeightsTest(unittest.TestCase):
    def test_seeded_and_distributed(self):
        section = fixture("dpa2_small_medium_options")["model_def_script"]
        a = model_dict_from_input(section, 1)
        b = model_dict_from_input(section, 1)
        c = model_dict_from_input(section, 2)
        arrays_a, arrays_b, arrays_c = (dict(walk_arrays(t)) for t in (a, b, c))
        self.assertEqual(list(arrays_a), list(arrays_b))
        for path, x in arrays_a.items():
            self.assertTrue(np.array_equal(x, arrays_b[path]), f"{path}: not reproducible from the seed")
        w = ".descriptor.repinit_variable.embeddings.networks[0].layers[0].@variables.w"
        self.assertFalse(np.array_equal(arrays_a[w], arrays_c[w]), "another seed gives the same weights")
        for path, x in arrays_a.items():
            self.assertTrue(np.isfinite(x).all(), path)
            if path.endswith("@variables.idt"):
                self.assertLess(float(np.abs(x - 0.1).max()), 0.01, path)
            if path.endswith(".@variables.davg") or path.endswith("bias_atom_e") or path.endswith("out_bias"):
                self.assertFalse(x.any(), f"{path} must be 0")
            if path.endswith(".@variables.dstd") or path.endswith("out_std"):
                self.assertTrue((x == 1).all(), f"{path} must be 1")
            if re.search(r"attn2_lm\.@variables\.w$", path):
                self.assertTrue((x == 1).all(), path)
        big = arrays_a[".descriptor.repformers_variable.repformer_layers[0].linear1.@variables.w"]
        self.assertAlmostEqual(float(big.std()), 1.0 / np.sqrt(big.shape[0] + big.shape[1]), delta=0.02)
        res = arrays_a[".descriptor.repformers_variable.repformer_layers[0].@variables.g1_residual[0]"]
        self.assertLess(float(np.abs(res).max()), 0.1)  # norm(0.01) residual init

    def test_dpa3_fix_stat_std(self):
        tree = model_dict_from_input(EXAMPLES["water_dpa3"], 0)
        var = tree["descriptor"]["repflow_variable"]["@variables"]
        self.assertTrue((var["dstd"] == np.float32(0.3)).all())
        self.assertFalse(var["davg"].any())
        layer = tree["descriptor"]["repflow_variable"]["repflow_layers"][0]
        self.assertTrue(all((r == np.float32(0.1)).all() for r in layer["@variables"]["n_residual"]))


class ExampleTest(unittest.TestCase):
    def check_example(self, name: str) -> None:
        for mode in ("argcheck", "constructor"):
            with self.subTest(mode=mode):
                tree = model_dict_from_input(EXAMPLES[name], 1, defaults=mode)
                backbone = tree.get("backbone_model", tree)
                self.assertEqual((backbone["@class"], backbone["type"], backbone["@version"]), ("Model", "standard", 2))
                self.assertEqual(backbone["fitting"]["dim_descrpt"],
                                 backbone["fitting"]["nets"]["networks"][0]["in_dim"])
                for path, array in walk_arrays(tree):
                    self.assertTrue(np.isfinite(array).all(), path)

    def test_hybrid(self):
        se_a = copy.deepcopy(EXAMPLES["water_se_e2_a"]["descriptor"])
        dpa1 = copy.deepcopy(EXAMPLES["water_se_atten"]["descriptor"])
        section = {"type_map": ["O", "H"], "descriptor": {"type": "hybrid", "list": [se_a, dpa1]},
                   "fitting_net": {"neuron": [16, 16]}}
        tree = model_dict_from_input(section, 1)
        d = tree["descriptor"]
        self.assertEqual({k: d[k] for k in ("@class", "type", "@version")},
                         {"@class": "Descriptor", "type": "hybrid", "@version": 1})
        for sub, example in zip(d["list"], ("water_se_e2_a", "water_se_atten")):
            self.assertEqual(compare(sub, model_dict_from_input(EXAMPLES[example], 2)["descriptor"]), [])
        self.assertEqual(tree["fitting"]["dim_descrpt"], 100 * 16 + (100 * 16 + 8))
        self.assertTrue(tree["fitting"]["mixed_types"])  # any sub-descriptor mixed -> one fitting net
        self.assertEqual(tree["fitting"]["nets"]["ndim"], 0)

    def test_preset_out_bias_and_exclusions(self):
        section = copy.deepcopy(EXAMPLES["water_se_e2_a"])
        section.update({"preset_out_bias": {"energy": [-93.5, None]}, "atom_exclude_types": [1],
                        "pair_exclude_types": [[0, 1]]})
        tree = model_dict_from_input(section, 1)
        self.assertEqual(tree["@variables"]["out_bias"].reshape(-1).tolist(), [-93.5, 0.0])
        self.assertEqual(tree["preset_out_bias"], {"energy": [[-93.5], None]})
        self.assertEqual((tree["atom_exclude_types"], tree["fitting"]["exclude_types"]), ([1], [1]))
        self.assertEqual(tree["pair_exclude_types"], [[0, 1]])
        # the dpmodel factory (constructor mode) does not pass preset_out_bias to the model
        self.assertIsNone(model_dict_from_input(section, 1, defaults="constructor")["preset_out_bias"])
        with self.assertRaises(ValueError):
            model_dict_from_input(section, 1, defaults="normalised")

    def test_float32_dtypes(self):
        tree = model_dict_from_input(EXAMPLES["water_dpa3"], 1)
        self.assertEqual(tree["descriptor"]["precision"], "float32")
        for path, array in walk_arrays(tree):
            # deepmd-kit keeps the output statistics in float64 (GLOBAL_NP_FLOAT_PRECISION) for every model
            expected = np.float64 if re.search(r"(bias_atom_e|out_bias|out_std)$", path) else np.float32
            self.assertEqual(array.dtype, expected, path)

    def test_dpa3_production_shapes(self):
        d = model_dict_from_input(EXAMPLES["water_dpa3"], 1)["descriptor"]
        layers = d["repflow_variable"]["repflow_layers"]
        self.assertEqual(len(layers), 6)
        # angle input: a_dim + (1 + a_compress_e_rate) * a_dim / a_compress_rate = 32 + 3*32
        self.assertEqual(layers[0]["edge_angle_linear1"]["@variables"]["w"].shape, (128, 64))
        self.assertNotIn("a_compress_n_linear", layers[0])  # a_compress_use_split
        self.assertEqual(layers[0]["node_sym_linear"]["@variables"]["w"].shape, (128 * 4 + 64 * 4, 128))
        self.assertEqual(d["repflow_variable"]["@variables"]["dstd"].shape, (2, 120, 4))
        self.assertTrue(d["use_loc_mapping"])

    def test_dpa2_production_shapes(self):
        d = model_dict_from_input(EXAMPLES["water_dpa2_medium"], 1)["descriptor"]
        layers = d["repformers_variable"]["repformer_layers"]
        self.assertEqual(len(layers), 6)
        self.assertEqual([("attn2g_map" in layer, layer["update_chnnl_2"]) for layer in layers],
                         [(True, True)] * 5 + [(False, False)])
        self.assertEqual(layers[0]["attn2g_map"]["mapqk"]["@variables"]["w"].shape, (32, 32 * 2 * 4))
        self.assertEqual([len(layer["@variables"]["g1_residual"]) for layer in layers], [3] * 6)
        self.assertEqual([len(layer["@variables"]["g2_residual"]) for layer in layers], [2] * 5 + [0])
        self.assertEqual(d["g1_shape_tranform"]["@variables"]["w"].shape, (100 * 12 + 8, 128))
        self.assertEqual(d["repinit_variable"]["embeddings"]["networks"][0]["in_dim"], 17)
        compressible = model_dict_from_input(EXAMPLES["water_dpa2_compressible"], 1)["descriptor"]
        self.assertEqual(compressible["repinit_variable"]["embeddings"]["networks"][0]["in_dim"], 1)
        self.assertEqual(compressible["repinit_variable"]["embeddings_strip"]["networks"][0]["in_dim"], 16)
        self.assertEqual(compressible["repinit_three_body_variable"]["embeddings_strip"]["networks"][0]["in_dim"], 16)

    def test_spin_example(self):
        for mode, protection, nets in (("argcheck", 0.01, 16), ("constructor", 1e-6, 4)):
            tree = model_dict_from_input(EXAMPLES["spin_se_e2_a"], 1, defaults=mode)
            self.assertEqual(set(tree), {"type", "backbone_model", "spin"})
            self.assertEqual(tree["spin"], {"use_spin": [True, False], "virtual_scale": [0.314, 0.0]})
            backbone = tree["backbone_model"]
            self.assertEqual(backbone["type_map"], ["Ni", "O", "Ni_spin", "O_spin"])
            self.assertEqual(backbone["pair_exclude_types"], [[3, 0], [3, 1], [3, 2], [3, 3]])
            self.assertEqual(backbone["atom_exclude_types"], [2, 3])
            self.assertEqual(backbone["fitting"]["exclude_types"], [2, 3])
            descriptor = backbone["descriptor"]
            self.assertEqual(descriptor["sel"], [60, 60, 60, 60])
            self.assertEqual(descriptor["exclude_types"], backbone["pair_exclude_types"])
            self.assertEqual(descriptor["env_protection"], protection)
            self.assertEqual(len(descriptor["embeddings"]["networks"]), nets)


def _add_example_tests() -> None:
    for name in EXAMPLES:
        setattr(ExampleTest, f"test_{name}", lambda self, n=name: self.check_example(n))


_add_example_tests()


class WriteDpTest(unittest.TestCase):
    def roundtrip(self, tree: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.dp")
            write_dp(tree, path, **kwargs)
            import h5py
            with h5py.File(path, "r") as f:
                raw = json.loads(f.attrs["json"])
                names: List[str] = []

                def collect(node: Any, is_variable: bool = False) -> None:
                    if isinstance(node, dict):
                        for k, v in node.items():
                            collect(v, is_variable or k == "@variables")
                    elif isinstance(node, list):
                        for v in node:
                            collect(v, is_variable)
                    elif node is not None and is_variable:
                        names.append(node)

                collect(raw)
                self.assertEqual(names, [f"/variable_{i:04d}" for i in range(len(names))], "traversal numbering")
                self.assertEqual(sorted(f.keys()), sorted(n[1:] for n in names))
            return raw, load_model_dict(path)

    def test_generated_models(self):
        for stem in R.model_stems():
            with self.subTest(model=stem):
                script = fixture(stem)["model_def_script"]
                tree = model_dict_from_input(fixture_input(stem, fixture(stem)), SEED, defaults="constructor")
                raw, back = self.roundtrip(tree, model_def_script=script)
                self.assertEqual(list(raw)[:3], ["software", "version", "time"])
                self.assertEqual(set(raw), {"software", "version", "time", "backend", "model", "model_def_script",
                                            "@variables"})
                self.assertEqual(raw["software"], "deepmd-kit")
                self.assertEqual(raw["@variables"], {})
                self.assertEqual(back["model_def_script"], script)
                assert_identical(self, tree, back["model"], "model")

    def test_examples(self):
        for name in ("water_dpa3", "spin_se_e2_a"):
            with self.subTest(example=name):
                tree = model_dict_from_input(EXAMPLES[name], 5)
                _, back = self.roundtrip(tree)
                assert_identical(self, tree, back["model"], "model")

    def test_fixture_files(self):
        """A whole deepmd-kit file dict (with a 'model' key) is written as given."""
        for stem in ("deeppot_dpa", "gen_dpa3_seed1_head", "deeppot_dpa_spin"):
            with self.subTest(model=stem):
                data = fixture(stem)
                _, back = self.roundtrip(data)
                for key in ("software", "version", "time"):
                    back.pop(key)
                expected = {k: v for k, v in data.items() if k not in ("software", "version", "time")}
                assert_identical(self, expected, back, stem)


class UnsupportedTest(unittest.TestCase):
    def base(self) -> Dict[str, Any]:
        return copy.deepcopy(fixture("gen_dpa3_seed1_head")["model_def_script"])

    def assert_unsupported(self, section: Dict[str, Any], needle: str, **kwargs: Any) -> None:
        with self.assertRaises(UnsupportedModel) as ctx:
            model_dict_from_input(section, 0, **kwargs)
        self.assertIn(needle, str(ctx.exception))

    def test_unknown_types_and_options(self):
        s = self.base()
        s["descriptor"]["type"] = "se_e3"
        self.assert_unsupported(s, "'se_e3'")
        s = self.base()
        s["fitting_net"]["type"] = "dipole"
        self.assert_unsupported(s, "'dipole'")
        s = self.base()
        s["descriptor"]["repflow"]["e_dimension"] = 3
        self.assert_unsupported(s, "'e_dimension'")
        s = self.base()
        s["descriptor"]["use_magic"] = True
        self.assert_unsupported(s, "'use_magic'")
        s = self.base()
        s["fitting_net"]["tot_ener_zero"] = True
        self.assert_unsupported(s, "'tot_ener_zero'")
        s = self.base()
        s["bogus"] = 1
        self.assert_unsupported(s, "'bogus'")
        s = self.base()
        s["use_srtab"] = "table.txt"
        self.assert_unsupported(s, "'use_srtab'")
        s = self.base()
        s["type"] = "linear_ener"
        self.assert_unsupported(s, "'linear_ener'")

    def test_needs_data_or_is_refused(self):
        s = copy.deepcopy(EXAMPLES["water_se_e2_a"])
        del s["descriptor"]["sel"]  # argcheck default "auto" needs the training data
        self.assert_unsupported(s, "sel")
        s = copy.deepcopy(EXAMPLES["water_se_e2_a"])
        del s["descriptor"]["rcut"]  # required by the constructor
        self.assert_unsupported(s, "'rcut'", defaults="constructor")
        s = self.base()
        del s["descriptor"]["repflow"]["e_rcut"]  # required by argcheck
        self.assert_unsupported(s, "'e_rcut'")
        s = self.base()
        s["descriptor"]["precision"] = "bfloat16"
        self.assert_unsupported(s, "bfloat16")
        s = self.base()
        s["descriptor"]["activation_function"] = "swish"
        self.assert_unsupported(s, "swish")
        s = self.base()
        s["descriptor"]["use_econf_tebd"] = True
        self.assert_unsupported(s, "use_econf_tebd")
        s = copy.deepcopy(EXAMPLES["spin_se_e2_a"])
        s["spin"]["scheme"] = "native"
        self.assert_unsupported(s, "native")
        s = copy.deepcopy(EXAMPLES["water_dpa3_dynamic"])
        s["descriptor"]["repflow"]["smooth_edge_update"] = False
        self.assert_unsupported(s, "use_dynamic_sel")
        s = self.base()
        del s["type_map"]
        self.assert_unsupported(s, "type_map")

    def test_aliases_and_comments(self):
        s = copy.deepcopy(EXAMPLES["water_se_e2_a"])
        s["descriptor"]["n_axis_neuron"] = s["descriptor"].pop("axis_neuron")
        s["fitting_net"]["n_neuron"] = s["fitting_net"].pop("neuron")
        a = model_dict_from_input(s, 3)
        b = model_dict_from_input(EXAMPLES["water_se_e2_a"], 3)
        self.assertEqual(compare(a, b), [])
        s["descriptor"]["axis_neuron"] = 4
        self.assert_unsupported(s, "'axis_neuron' given twice")


# ---------------------------------------------------------------------------------------------
# The generated models build and evaluate (when deepmd/dpkit/build.py is there).
# ---------------------------------------------------------------------------------------------


def _builder():
    try:
        from deepmd.dpkit import build
    except ImportError as e:  # not written yet, or torch-side pieces missing
        return None, f"deepmd.dpkit.build is not importable: {e}"
    if not hasattr(build, "model_from_dict"):
        return None, "deepmd.dpkit.build has no model_from_dict"
    return build, None


class BuildTest(unittest.TestCase):
    def evaluate(self, tree: Dict[str, Any], what: str) -> None:
        build, reason = _builder()
        if build is None:
            self.skipTest(reason)
        from deepmd.models.model import RegularGraph

        spin = tree.get("type") == "spin_ener"
        backbone = tree["backbone_model"] if spin else tree
        kind = backbone["descriptor"]["type"]
        if kind not in getattr(build, "DESCRIPTORS", {kind: None}):
            self.skipTest(f"descriptor {kind!r} is not registered in build.py")
        try:
            model = build.model_from_dict(copy.deepcopy(tree))
        except UnsupportedModel as e:
            if spin and "spin" in str(e):
                self.skipTest(str(e))
            raise
        if spin:
            from deepmd.models.spin import SpinRegularGraph
            graph = SpinRegularGraph(model)
            case = R.load_reference("deeppot_dpa3_spin")["cases"]["nio4_spin"]
        elif len(tree["type_map"]) == 1:
            graph = RegularGraph(model)
            case = R.load_reference("fparam_aparam")["cases"]["fparam6_pbc"]  # six atoms of type 0
        else:
            graph = RegularGraph(model)
            case = R.load_reference("se_e2_a_small")["cases"]["test6_pbc"]
        fitting = backbone["fitting"]
        nloc = len(case["atype"])
        case = dict(case)
        case["fparam"] = [0.3] * fitting["numb_fparam"] if fitting["numb_fparam"] else None
        case["aparam"] = [0.3] * (nloc * fitting["numb_aparam"]) if fitting["numb_aparam"] else None
        result = R.evaluate(graph, case, model.rcut, spin=spin)
        for key in ("energy", "force", "virial", "atom_energy"):
            self.assertTrue(np.isfinite(result[key]).all(), f"{what}: {key} not finite")
        self.assertAlmostEqual(float(result["atom_energy"].sum()), float(result["energy"]), delta=1e-6)

    def test_fixture_inputs(self):
        for stem in R.model_stems():
            with self.subTest(model=stem):
                data = fixture(stem)
                self.evaluate(model_dict_from_input(fixture_input(stem, data), SEED, defaults="constructor"), stem)

    def test_examples(self):
        for name in EXAMPLES:
            with self.subTest(example=name):
                self.evaluate(model_dict_from_input(EXAMPLES[name], SEED), name)

    def test_hybrid(self):
        section = {"type_map": ["O", "H"],
                   "descriptor": {"type": "hybrid", "list": [EXAMPLES["water_se_e2_a"]["descriptor"],
                                                             fixture("gen_dpa1_seed1_a0946240")["model_def_script"]
                                                             ["descriptor"]]},
                   "fitting_net": {"neuron": [8, 8]}}
        self.evaluate(model_dict_from_input(section, SEED), "hybrid")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].endswith(".so"):
        from tests import unittest_main
        unittest_main.run()
    else:
        unittest.main(verbosity=2)
