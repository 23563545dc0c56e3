"""deepmd/dpkit/dpa2.py (DPA2 descriptor) against deepmd-kit.

1. The three DPA2 fixture models (deeppot_dpa, gen_dpa2_seed1_a0946240, dpa2_small_medium_options) in
   the scripted regular graph on every reference case: energy, force, virial, atom_energy, atom_virial
   within 1e-10 of deepmd-kit's outputs.
2. The with-comm graph (ghost g1 exchanged before every repformer layer by the deepmd_comm op) equals
   the regular graph on a periodic system whose ghosts travel several hops (self-exchange plan), for the
   fixtures and for option variants.
3. Options no fixture has (strip type embedding both ways, update_h2, res_avg/res_incr, direct_dist,
   no smooth, exclusions, protection, nonzero davg, add_tebd_to_repinit_out, concat_output_tebd false,
   g1_out_conv/mlp false, sqrt-free normalisation, non-trainable layer norm): variants of the medium
   fixture's descriptor node built here deterministically (new weights from a seeded generator where an
   option needs them); their descriptor on a fixed system is pinned by fingerprints that deepmd-kit's own
   dpmodel DescrptDPA2 (commit bc902daf, numpy) computed from the same nodes.
4. UnsupportedModel for compressed / econf / charge-spin models.
Usage: dpa2_test.py OPS_LIBRARY."""

import copy
import io
import unittest
from typing import Any, Callable, Dict, List

import numpy as np
import torch

from tests import unittest_main
from tests.dpkit import references as R

from deepmd.dpkit import build, env
from deepmd.dpkit.serialization import UnsupportedModel, load_model_dict
from deepmd.models.model import RegularGraph, WithCommGraph
from deepmd.models.periodic import extend, random_system

TOLERANCE = 1e-10
KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")
STEMS = ("deeppot_dpa", "gen_dpa2_seed1_a0946240", "dpa2_small_medium_options")


def model_dict(stem: str) -> Dict[str, Any]:
    return load_model_dict(R.model_path(stem))["model"]


# ---- option variants of the medium fixture's descriptor --------------------------------------------

def _rand_layer(rng: np.random.Generator, template: Dict[str, Any], num_in: int, num_out: int,
                bias: bool = True, activation: str = "none") -> Dict[str, Any]:
    layer = copy.deepcopy(template)
    layer["activation_function"] = activation
    layer["bias"] = bias
    layer["resnet"] = False
    layer["use_timestep"] = False
    layer["@variables"] = {"w": rng.normal(scale=1.0 / np.sqrt(num_in), size=(num_in, num_out)),
                           "b": rng.normal(size=num_out) if bias else None, "idt": None}
    return layer


def _rand_net(rng: np.random.Generator, template: Dict[str, Any], num_in: int) -> Dict[str, Any]:
    """A copy of the NetworkCollection `template` (ndim 0) whose first layer takes num_in inputs."""
    coll = copy.deepcopy(template)
    net = coll["networks"][0]
    net["in_dim"] = num_in
    for i, layer in enumerate(net["layers"]):
        w = layer["@variables"]["w"]
        n_in = num_in if i == 0 else w.shape[0]
        layer["@variables"]["w"] = rng.normal(scale=1.0 / np.sqrt(n_in), size=(n_in, w.shape[1]))
        layer["@variables"]["b"] = rng.normal(size=w.shape[1])
    return coll


def _layers(d: Dict[str, Any]) -> List[Dict[str, Any]]:
    return d["repformers_variable"]["repformer_layers"]


def _set_everywhere(d: Dict[str, Any], key: str, value: Any) -> None:
    d["repformer_args"][key] = value
    for layer in _layers(d):
        layer[key] = value


def _smooth_off(d, rng):
    d["smooth"] = False
    for layer in _layers(d):
        layer["smooth"] = False
        if "attn2g_map" in layer:
            layer["attn2g_map"]["smooth"] = False


def _strip(one_side: bool):
    def apply(d, rng):
        ri, tebd = d["repinit_args"], d["repinit_args"]["tebd_dim"]
        ri["tebd_input_mode"] = "strip"
        ri["type_one_side"] = one_side
        rv, tv = d["repinit_variable"], d["repinit_three_body_variable"]
        rv["embeddings_strip"] = _rand_net(rng, rv["embeddings"], tebd if one_side else 2 * tebd)
        rv["embeddings"] = _rand_net(rng, rv["embeddings"], 1)
        tv["embeddings_strip"] = _rand_net(rng, tv["embeddings"], 2 * tebd)
        tv["embeddings"] = _rand_net(rng, tv["embeddings"], 1)
    return apply


def _concat_one_side(d, rng):
    d["repinit_args"]["type_one_side"] = True
    rv = d["repinit_variable"]
    rv["embeddings"] = _rand_net(rng, rv["embeddings"], 1 + d["repinit_args"]["tebd_dim"])


def _style(style: str):
    def apply(d, rng):
        _set_everywhere(d, "update_style", style)
        for layer in _layers(d):
            layer.pop("@variables", None)
    return apply


def _update_h2(d, rng):
    d["repformer_args"]["update_h2"] = True
    for layer in _layers(d):
        if layer["update_chnnl_2"]:  # the last layer never updates g2/h2 (its node says update_h2 false)
            layer["update_h2"] = True
            nh = layer["attn2g_map"]["head_num"]
            template = layer["linear2"]
            layer["attn2_ev_apply"] = {"@class": "Atten2EquiVarApply", "@version": 1, "input_dim": layer["g2_dim"],
                                       "head_num": nh, "precision": "float64",
                                       "head_map": _rand_layer(rng, template, nh, 1, bias=False)}
            layer["@variables"]["h2_residual"] = [rng.normal(scale=0.1, size=1)]


def _g1_inside(d, rng):
    """g1_out_conv and g1_out_mlp false: conv and g1 go into linear1's input; proj_g1g2 is g1 -> g2."""
    _set_everywhere(d, "g1_out_conv", False)
    _set_everywhere(d, "g1_out_mlp", False)
    for layer in _layers(d):
        ng1, ng2, ax = layer["g1_dim"], layer["g2_dim"], layer["axis_neuron"]
        template = layer["linear1"]
        layer["linear1"] = _rand_layer(rng, template, ng1 + ng2 * ax + ng1 * ax + ng2, ng1)
        layer["proj_g1g2"] = _rand_layer(rng, template, ng1, ng2, bias=False)
        layer.pop("g1_self_mlp", None)
        layer["@variables"]["g1_residual"] = layer["@variables"]["g1_residual"][:1]


def _davg(d, rng):
    for key in ("repinit_variable", "repinit_three_body_variable", "repformers_variable"):
        v = d[key]["@variables"]
        v["davg"] = rng.normal(scale=0.1, size=v["davg"].shape)
        v["dstd"] = v["dstd"] * (0.5 + rng.random(size=v["dstd"].shape))


def _add_tebd(d, rng):
    d["add_tebd_to_repinit_out"] = True
    d["tebd_transform"] = _rand_layer(rng, d["g1_shape_tranform"], d["repinit_args"]["tebd_dim"],
                                      d["repformer_args"]["g1_dim"], bias=False)


def _no_ln_train(d, rng):
    _set_everywhere(d, "trainable_ln", False)
    _set_everywhere(d, "ln_eps", 1e-3)
    for layer in _layers(d):
        if "attn2_lm" in layer:
            layer["attn2_lm"]["trainable"] = False
            layer["attn2_lm"]["eps"] = 1e-3
            layer["attn2_lm"]["@variables"]["w"] = 0.5 + rng.random(layer["g2_dim"])
            layer["attn2_lm"]["@variables"]["b"] = rng.normal(size=layer["g2_dim"])


def _opt(key: str, value: Any, everywhere: bool = False) -> Callable:
    def apply(d, rng):
        if everywhere:
            _set_everywhere(d, key, value)
        else:
            d[key] = value
    return apply


def _rf_arg(key: str, value: Any) -> Callable:
    def apply(d, rng):
        d["repformer_args"][key] = value
    return apply


def _both(*fns):
    def apply(d, rng):
        for f in fns:
            f(d, rng)
    return apply


VARIANTS: Dict[str, Callable] = {
    "fixture": lambda d, rng: None,
    "strip_two_side": _strip(False),
    "strip_one_side": _strip(True),
    "concat_one_side": _concat_one_side,
    "not_smooth": _smooth_off,
    "not_smooth_strip": _both(_smooth_off, _strip(False)),
    "res_avg": _style("res_avg"),
    "res_incr": _style("res_incr"),
    "update_h2": _update_h2,
    "direct_dist": _rf_arg("direct_dist", True),
    "no_sqrt_nnei": _opt("use_sqrt_nnei", False, everywhere=True),
    "no_sqrt_nnei_not_smooth": _both(_opt("use_sqrt_nnei", False, everywhere=True), _smooth_off),
    "g1_out_conv_mlp_false": _g1_inside,
    "exclude_types": _opt("exclude_types", [[0, 1]]),
    "exclude_types_strip": _both(_opt("exclude_types", [[0, 0]]), _strip(True)),
    "env_protection": _opt("env_protection", 0.05),
    "davg_nonzero": _davg,
    "davg_nonzero_strip": _both(_davg, _strip(False)),
    "add_tebd_to_repinit_out": _add_tebd,
    "concat_output_tebd_false": _opt("concat_output_tebd", False),
    "layer_norm_not_trainable": _no_ln_train,
}


def variant(name: str) -> Dict[str, Any]:
    """The descriptor node of dpa2_small_medium_options with variant `name` applied (deterministic)."""
    d = copy.deepcopy(model_dict("dpa2_small_medium_options")["descriptor"])
    VARIANTS[name](d, np.random.default_rng(sum(map(ord, name))))
    return d


def fingerprint_system():
    """A fixed periodic system (30 atoms, 9 Å cube): extended coordinates, types, formatted list, mapping."""
    pos, atype = random_system(30, [9.0, 9.0, 9.0], 2, seed=11, min_dist=0.95)
    s = R.extended_system(pos.numpy(), atype.numpy(), np.eye(3) * 9.0, 6.0)
    coord = torch.from_numpy(s["coord"]).unsqueeze(0)
    nlist = env.format_nlist(coord, torch.from_numpy(s["nlist"]).unsqueeze(0), 6.0, 120)
    return coord, torch.from_numpy(s["atype"]).unsqueeze(0), nlist, torch.from_numpy(s["mapping"]).unsqueeze(0)


def fingerprint(descriptor: np.ndarray) -> List[float]:
    """Per-atom projections of the descriptor [nloc, dim] on fixed random weights, then the total."""
    w = np.random.default_rng(0).normal(size=descriptor.shape)
    per_atom = (descriptor * w).sum(-1)
    return [float(x) for x in per_atom[:8]] + [float(per_atom.sum()), float(np.abs(descriptor).sum())]


# Computed by deepmd-kit's dpmodel DescrptDPA2.deserialize(variant(name)).call(...) at commit bc902daf
# (numpy, float64) on fingerprint_system(); see the module docstring.
EXPECTED: Dict[str, List[float]] = {
    'fixture': [
        0.2375021218260043, 0.06887016654746214, 0.08070321989821028, 0.052305311218761086, 0.506704413856366,
        0.4965818788049277, -1.0797643423234897, -0.7969536935151977, 0.1311988119282264, 64.24231905497672],
    'strip_two_side': [
        1.4597929371931784, 0.034147578902312625, 0.21839875979013734, -0.24047871031927645, 0.7555141698551251,
        0.36075978265179337, -0.7850193694074288, -0.9274026059447258, -1.0724139932746237, 108.06120181992893],
    'strip_one_side': [
        -0.2541235147015033, 0.3238188639406576, -1.7161361874634091, -0.757069824040164, 0.7979620660935312,
        0.4178228382658893, -0.6066231610490073, -1.1723058674373008, -4.585035267791856, 97.6274990646975],
    'concat_one_side': [
        0.5055805282165233, 0.006749267414503879, -0.8194836477372618, 0.010759562914631149, 0.31184616680389177,
        0.3744849167216609, -1.2402340990786365, -0.8461501649378709, -3.3763425802027145, 63.63760587589344],
    'not_smooth': [
        0.22906782050082922, 0.07062816708092046, 0.0758502092620652, 0.05173251655071076, 0.5068591960930289,
        0.49790698630221386, -1.0812244698623747, -0.79751381233963, 0.11547290074840538, 63.98888505550177],
    'not_smooth_strip': [
        -3.1990569697243156, -0.25570009493872514, -3.387268435579165, -1.5581708499805338, -0.06472766193960255,
        0.5372181857169456, -1.7534841884981636, -1.6039910687494237, -5.804037498046011, 167.93102275620242],
    'res_avg': [
        1.1195598284793247, -2.350837657421494, -1.7476736973050895, 0.1490277135626571, -1.3596343084261293,
        3.18806735221159, -1.6407644253309224, 0.26091302981379916, 11.103177657968363, 284.5646093929912],
    'res_incr': [
        1.91240373246904, -2.4184101081033926, -2.1897351647960996, 0.9614681812722181, -0.4379145634735703,
        4.774659085549422, -1.3900544558370307, -0.2587571498948886, 16.632635658423283, 360.41693605726124],
    'update_h2': [
        0.2363198322700918, 0.06895205363522361, 0.08071118076883771, 0.052252551068012854, 0.5067805760621604,
        0.49655502772497206, -1.0797711344876537, -0.7969467394720294, 0.12966284831572872, 64.2343297854174],
    'direct_dist': [
        0.24084005620880297, 0.06845930167495617, 0.08266261253618312, 0.052354657431143425, 0.5065599912012333,
        0.49608080341008515, -1.079429369517933, -0.797064991403486, 0.13928249130541115, 64.31074926815907],
    'no_sqrt_nnei': [
        0.2407192857271626, 0.0684528775017581, 0.0825311872294166, 0.05224339238430881, 0.5065760838980452,
        0.49602666077863744, -1.0793086002252286, -0.7971324383289358, 0.13881265426549871, 64.30917323840009],
    'no_sqrt_nnei_not_smooth': [
        0.23936189735459215, 0.06871996640453348, 0.08075170676238358, 0.05172250316268928, 0.5066411440501777,
        0.49544854960247203, -1.079144724029218, -0.7979692137383109, 0.13622185616362192, 64.25239384887892],
    'g1_out_conv_mlp_false': [
        0.27636153721395074, 0.000645491588994962, -0.04723033427108786, 0.010771778882081251, 0.49014990375910583,
        0.4805813612464309, -1.0480462969154032, -0.7816282799999719, -0.022437238736447707, 61.716891183659655],
    'exclude_types': [
        0.21742908606988023, 0.14859821267261702, 0.045669132395288387, 0.004121254862448465, 0.4906662784603119,
        0.4303543927936496, -1.1035847498099909, -0.8433680402870548, -1.196038803906927, 54.319837156986935],
    'exclude_types_strip': [
        -0.24014914456405817, 0.2729254366958883, 0.6646213807949771, -0.13034799585986734, 0.41554208356532596,
        0.4046361750371923, -0.990153158226943, -0.8983794190695437, 0.37964633947696247, 87.21952140083081],
    'env_protection': [
        0.24444818288430997, 0.0732714926032344, 0.07019325903139317, 0.04735610930647194, 0.5066307351885666,
        0.4929951015223181, -1.0795646212051027, -0.799213651673588, 0.010227277831955234, 63.21431280746245],
    'davg_nonzero': [
        0.2109834502193746, 0.015165383352551132, 0.7814384790845458, 0.35216916868136966, 0.5928670169551534,
        0.6568200660057217, -0.7509737739512968, -0.613318782590391, 1.562555601151022, 87.7939394480039],
    'davg_nonzero_strip': [
        -3.7458436524315553, 1.4550181281316772, -2.369896017544808, -3.5829165779174934, 1.857767371570881,
        1.03894656232828, -1.448878450337992, -1.9758598933603633, -11.719035391806715, 231.29729648774435],
    'add_tebd_to_repinit_out': [
        1.2672444797220972, 0.32429170377500627, -1.362544043041597, -1.11864347067044, 1.2310424387843275,
        1.1891503499722977, -1.2570346570950464, -1.5937181444005055, -0.6878520388809001, 123.67803202552834],
    'concat_output_tebd_false': [
        0.03616520036239694, 0.0700471856587153, -0.3546558453182831, 0.045794855066919285, -0.10910569927379912,
        -0.021165405128024506, 0.005487732639972709, -0.03833804463284121, -1.3297228444737255, 18.024516985044627],
    'layer_norm_not_trainable': [
        0.23755488515730608, 0.06886026959653291, 0.08061211349949648, 0.05225278463838473, 0.5067254852035352,
        0.49655169596637627, -1.0797628506171146, -0.7969628023119064, 0.1314270095727344, 64.24399911022223],
}


class DPA2ReferencesTest(unittest.TestCase):
    """The fixture models against deepmd-kit's reference outputs (scripted regular graph)."""

    def check(self, stem: str) -> None:
        graph = torch.jit.script(RegularGraph(build.load_model(R.model_path(stem))))
        reference = R.load_reference(stem)
        for name, case in reference["cases"].items():
            with self.subTest(case=name):
                errors = R.max_errors(R.evaluate(graph, case, reference["rcut"]), case)
                print(f"  {stem}/{name}: " + " ".join(f"{k} {errors[k]:.1e}" for k in KEYS), flush=True)
                for key in KEYS:
                    self.assertLessEqual(errors[key], TOLERANCE, f"{stem}/{name}: {key} {errors[key]:.3e}")

    def test_deeppot_dpa(self):
        self.check("deeppot_dpa")

    def test_gen_dpa2_seed1(self):
        self.check("gen_dpa2_seed1_a0946240")

    def test_dpa2_small_medium_options(self):
        self.check("dpa2_small_medium_options")


def with_comm_difference(node: Dict[str, Any]) -> float:
    """Largest relative difference between the reloaded scripted with-comm and regular graphs of a
    model node on a multi-hop self-exchange system (as deepmd/tools/export.py checks)."""
    def reloaded(graph):
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(graph), buffer)
        buffer.seek(0)
        return torch.jit.load(buffer)

    regular = reloaded(RegularGraph(build.model_from_dict(copy.deepcopy(node))))
    with_comm = reloaded(WithCommGraph(build.model_from_dict(copy.deepcopy(node))))
    rcut = float(node["descriptor"]["repinit_args"]["rcut"])
    box = [0.8 * rcut, 0.9 * rcut, 1.1 * rcut]
    pos, atype = random_system(10, box, len(node["type_map"]), seed=17, min_dist=1.0)
    s = extend(pos, atype, box, rcut)
    assert s["multi_hop"]
    a = regular.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True)
    b = with_comm.forward_lower_with_comm(s["coord"], s["atype"], s["nlist"], None, None, True, s["plan"])
    worst = 0.0
    for key in ("energy", "force", "virial", "atom_virial"):
        worst = max(worst, float((a[key] - b[key]).abs().max()) / max(1.0, float(a[key].abs().max())))
    return worst


class DPA2WithCommTest(unittest.TestCase):
    def test_fixtures(self):
        for stem in STEMS:
            with self.subTest(model=stem):
                worst = with_comm_difference(model_dict(stem))
                print(f"  with-comm {stem}: {worst:.1e}", flush=True)
                self.assertLessEqual(worst, TOLERANCE)

    def test_variants(self):
        base = model_dict("dpa2_small_medium_options")
        for name in ("strip_two_side", "update_h2", "not_smooth", "g1_out_conv_mlp_false", "davg_nonzero"):
            with self.subTest(variant=name):
                node = copy.deepcopy(base)
                node["descriptor"] = variant(name)
                worst = with_comm_difference(node)
                print(f"  with-comm variant {name}: {worst:.1e}", flush=True)
                self.assertLessEqual(worst, TOLERANCE)

    def test_ghost_filler_is_swapped(self):
        """The with-comm graph's descriptor fills ghosts with the exchange op, not the mapping."""
        from deepmd.models.ghosts import ExchangeGhosts
        graph = WithCommGraph(build.load_model(R.model_path("dpa2_small_medium_options")))
        self.assertIsInstance(graph.model.descriptor.ghosts, ExchangeGhosts)
        self.assertEqual(graph.model.descriptor.exchanged_widths(), [16, 16])


class DPA2OptionsTest(unittest.TestCase):
    """Option variants against deepmd-kit's numbers for the same nodes."""

    @classmethod
    def setUpClass(cls):
        cls.system = fingerprint_system()

    def descriptor(self, node: Dict[str, Any]) -> np.ndarray:
        eager = build.descriptor_from_dict(copy.deepcopy(node), 2)
        d = torch.jit.script(eager)
        coord, atype, nlist, mapping = self.system
        return d(coord.to(eager.dtype), atype, nlist, mapping, None)[0].detach().to(torch.float64).numpy()

    def test_variants(self):
        self.assertEqual(sorted(EXPECTED), sorted(VARIANTS))
        for name in VARIANTS:
            with self.subTest(variant=name):
                got = fingerprint(self.descriptor(variant(name)))
                diff = float(np.max(np.abs(np.asarray(got) - np.asarray(EXPECTED[name]))))
                print(f"  variant {name}: max |Δ| {diff:.1e}", flush=True)
                self.assertLessEqual(diff, 1e-11, f"{name}: {got} vs deepmd-kit {EXPECTED[name]}")

    def test_protocol(self):
        d = build.descriptor_from_dict(model_dict("deeppot_dpa")["descriptor"], 2)
        self.assertEqual((d.rcut, d.sel, d.mixed_types, d.dim_out, d.nlayers, d.has_message_passing),
                         (6.0, [108], True, 13, 3, True))
        self.assertEqual(d.exchanged_widths(), [5, 5, 5])
        self.assertEqual(d.dtype, torch.float64)
        f32 = copy.deepcopy(model_dict("dpa2_small_medium_options")["descriptor"])
        f32["precision"] = "float32"
        d32 = torch.jit.script(build.descriptor_from_dict(f32, 2))
        coord, atype, nlist, mapping = fingerprint_system()
        out = d32(coord.to(torch.float32), atype, nlist, mapping, None)
        self.assertEqual(out.dtype, torch.float32)
        ref = self.descriptor(model_dict("dpa2_small_medium_options")["descriptor"])
        self.assertLess(float(np.abs(out[0].double().numpy() - ref).max()), 1e-4)


class DPA2UnsupportedTest(unittest.TestCase):
    def assert_unsupported(self, change: Callable, words: str) -> None:
        node = copy.deepcopy(model_dict("dpa2_small_medium_options"))
        change(node["descriptor"])
        with self.assertRaises(UnsupportedModel) as caught:
            build.model_from_dict(node)
        self.assertIn(words, str(caught.exception))

    def test_compressed(self):
        self.assert_unsupported(lambda d: d.update({"@version": 4}), "compressed")
        self.assert_unsupported(lambda d: d["repinit_variable"].update({"compress": {}}), "compressed")

    def test_econf(self):
        self.assert_unsupported(lambda d: d.update({"use_econf_tebd": True}), "use_econf_tebd")

    def test_charge_spin(self):
        self.assert_unsupported(lambda d: d.update({"add_chg_spin_ebd": True}), "add_chg_spin_ebd")

    def test_bad_mode_and_style(self):
        self.assert_unsupported(lambda d: d["repinit_args"].update({"tebd_input_mode": "mix"}), "tebd_input_mode")
        self.assert_unsupported(lambda d: [l.update({"update_style": "res_x"})
                                           for l in d["repformers_variable"]["repformer_layers"]], "update_style")

    def test_future_version(self):
        self.assert_unsupported(lambda d: d.update({"@version": 5}), "@version 5")

    def test_unknown_keys(self):
        self.assert_unsupported(lambda d: d["repformer_args"].update({"new_option": 1}), "new_option")
        self.assert_unsupported(lambda d: d["repformers_variable"]["repformer_layers"][0].update({"new_option": 1}),
                                "new_option")


if __name__ == "__main__":
    unittest_main.run()
