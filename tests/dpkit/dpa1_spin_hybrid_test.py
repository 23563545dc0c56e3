"""deepmd/dpkit's DPA1 (se_atten), spin_ener and hybrid models against deepmd-kit's reference outputs.

Oracles: deepmd-kit's own outputs (../shared/deepmd-kit/references, fp64, 1e-10) for the DPA1 and spin fixtures
(scripted regular graphs, every case); the regular graph for the with-comm graph (multi-hop self-exchange plan,
as deepmd/tools/export.py checks it); for hybrid (no deepmd-kit fixture): (a) fixture models rebuilt as hybrids
whose fitting reads the extra children through zero weights must reproduce that fixture's references, (b) a
hybrid with nonzero weights equals its children evaluated by hand on lists cut the way deepmd-kit's hybrid
cuts them (an independent numpy implementation of the cut). Optional (skipped unless $DEEPMD_KIT_PYTHON names a
folder holding deepmd-kit's Python package and its pure-Python dependencies, e.g. array_api_compat): DPA1 and hybrid
descriptor outputs against deepmd-kit's own dpmodel code on random option sets.
Usage: dpa1_spin_hybrid_test.py OPS_LIBRARY."""

import copy
import os
import subprocess
import sys
import unittest

import numpy as np
import torch

from tests import unittest_main
from tests.dpkit import references as R

from deepmd.dpkit import build
from deepmd.dpkit.serialization import UnsupportedModel, load_model_dict
from deepmd.models.model import RegularGraph, WithCommGraph
from deepmd.models.periodic import extend, random_system
from deepmd.models.spin import SpinRegularGraph, SpinWithCommGraph

TOL = 1e-10
KEYS = ("energy", "force", "force_mag", "virial", "atom_energy", "atom_virial")


def model_node(stem):
    return load_model_dict(R.model_path(stem))["model"]


def spin_reach(model, case):
    """How far beyond rcut the real atoms' list must reach: a virtual centre's virtual neighbours."""
    atype = np.asarray(case["atype"])
    spin = np.asarray(case["spin"], dtype=np.float64).reshape(-1, 3)
    return 2.0 * float((model.virtual_scale.numpy()[atype] * np.linalg.norm(spin, axis=1)).max())


class ReferenceCase(unittest.TestCase):
    def check_fixture(self, graph, stem, spin=False, model=None, reference=None):
        ref = R.load_reference(reference or stem)
        for name, case in ref["cases"].items():
            reach = spin_reach(model, case) + 1e-9 if spin else 0.0
            errors = R.max_errors(R.evaluate(graph, case, ref["rcut"] + reach, spin=spin), case)
            print(f"  {stem} {name}: " + " ".join(f"{k} {errors[k]:.1e}" for k in KEYS if k in errors))
            for key in KEYS:
                if key in case and case[key] is not None:
                    self.assertIn(key, errors)
                    self.assertLess(errors[key], TOL, f"{stem} {name} {key}")

    def check_with_comm(self, make_model, spin):
        """The with-comm graph equals the regular one on a cell thinner than the cutoff (multi-hop ghosts)."""
        regular_cls, comm_cls = (SpinRegularGraph, SpinWithCommGraph) if spin else (RegularGraph, WithCommGraph)
        regular = torch.jit.script(regular_cls(make_model()))
        comm = torch.jit.script(comm_cls(make_model()))
        model = make_model()
        box = [0.8 * model.rcut, 0.9 * model.rcut, 1.1 * model.rcut]
        pos, atype = random_system(10, box, len(model.type_map), seed=17, min_dist=1.0)
        s = extend(pos, atype, box, model.rcut + (1.0 if spin else 0.0))
        self.assertTrue(s["multi_hop"])
        args = [s["coord"], s["atype"]]
        if spin:
            spins = torch.randn(pos.shape[0], 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
            args.append(spins[s["mapping"][0]].unsqueeze(0))
        args.append(s["nlist"])
        fitting = (model.backbone if spin else model).fitting
        fparam = torch.ones(1, fitting.dim_fparam, dtype=torch.float64) if fitting.dim_fparam else None
        aparam = torch.ones(1, s["nloc"], fitting.dim_aparam, dtype=torch.float64) if fitting.dim_aparam else None
        ref = regular.forward_lower(*args, s["mapping"], fparam, aparam, True)
        out = comm.forward_lower_with_comm(*args, fparam, aparam, True, s["plan"])
        worst = 0.0
        for key in [k for k in KEYS if k in ref]:
            worst = max(worst, float((out[key] - ref[key]).abs().max()))
        print(f"  with-comm vs regular: {worst:.1e}")
        self.assertLess(worst, TOL)


class DPA1Test(ReferenceCase):
    def test_gen_dpa1_fixture(self):
        stem = "gen_dpa1_seed1_a0946240"
        model = build.load_model(R.model_path(stem))
        self.assertEqual((model.descriptor.exchanged_widths(), model.descriptor.has_message_passing,
                          model.descriptor.nlayers, model.descriptor.mixed_types), ([], False, 0, True))
        self.check_fixture(torch.jit.script(RegularGraph(model)), stem)

    def test_refusals(self):
        node = model_node("gen_dpa1_seed1_a0946240")
        for change in ({"@version": 3}, {"compress": {}}, {"attn_mask": True}, {"@version": 5},
                       {"tebd_input_mode": "add"}, {"spin": {"use_spin": [True]}}, {"unknown_option": 1}):
            bad = copy.deepcopy(node)
            bad["descriptor"].update(change)
            with self.assertRaises(UnsupportedModel, msg=str(change)):
                build.model_from_dict(bad)

    def test_option_variants_rotation_and_fd(self):
        """Option variants deepmd-kit has but no fixture holds (strip both ways, two-sided concat, no smooth
        attention, exclusions, davg≠0, lmax 4): rotation invariant and forces = finite differences."""
        base = model_node("gen_dpa1_seed1_a0946240")
        rng = np.random.default_rng(11)
        variants = []
        for mode, one_side, smooth in (("strip", True, True), ("strip", False, False), ("concat", False, False)):
            variants.append(dict(tebd_input_mode=mode, type_one_side=one_side, smooth_type_embedding=smooth))
        variants.append(dict(exclude_types=[[0, 1]], davg=True))
        variants.append(dict(lmax=4, davg=True))
        for v in variants:
            node = self.variant(base, rng, **v)
            model = build.model_from_dict(node)
            graph = torch.jit.script(RegularGraph(model))
            case = R.load_reference("gen_dpa1_seed1_a0946240")["cases"]["test6_nopbc"]
            out = R.evaluate(graph, case, model.rcut)
            rot = self.rotation(rng)
            turned = dict(case, coord=(np.asarray(case["coord"]).reshape(-1, 3) @ rot.T).reshape(-1).tolist())
            out2 = R.evaluate(graph, turned, model.rcut)
            self.assertTrue(np.isfinite(out["energy"]), v)
            self.assertLess(abs(float(out["energy"] - out2["energy"])), 1e-12, v)
            f = out["force"].reshape(-1, 3) @ rot.T
            self.assertLess(float(np.abs(f - out2["force"].reshape(-1, 3)).max()), 1e-12, v)
            # finite differences of the energy for one force component
            h, k = 1e-5, 4
            c = np.asarray(case["coord"], dtype=np.float64)
            e = []
            for step in (2, 1, -1, -2):
                cc = c.copy()
                cc[k] += step * h
                e.append(float(R.evaluate(graph, dict(case, coord=cc.tolist()), model.rcut)["energy"]))
            fd = -(8 * (e[1] - e[2]) - (e[0] - e[3])) / (12 * h)
            self.assertLess(abs(fd - out["force"][k]), 1e-7, v)

    @staticmethod
    def rotation(rng):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        return q * np.sign(np.linalg.det(q))

    @staticmethod
    def variant(base, rng, tebd_input_mode="concat", type_one_side=True, smooth_type_embedding=True,
                exclude_types=(), davg=False, lmax=1):
        """gen_dpa1 with other options; the nets that change width get random weights."""
        node = copy.deepcopy(base)
        d = node["descriptor"]
        d.update(tebd_input_mode=tebd_input_mode, type_one_side=type_one_side,
                 smooth_type_embedding=smooth_type_embedding, exclude_types=[list(p) for p in exclude_types])
        for layer in d["attention_layers"]["attention_layers"]:
            layer["attention_layer"]["smooth"] = smooth_type_embedding
        tebd = d["tebd_dim"]
        tebd_in = tebd if type_one_side else 2 * tebd

        def net(dim_in, template):
            out = copy.deepcopy(template)
            w = out["networks"][0]["layers"][0]["@variables"]["w"]
            out["networks"][0]["layers"][0]["@variables"]["w"] = rng.normal(size=(dim_in, w.shape[1]))
            return out

        template = d["embeddings"]
        if tebd_input_mode == "strip":
            d["embeddings"] = net(1, template)
            d["embeddings_strip"] = net(tebd_in, template)
        else:
            d["embeddings"] = net(1 + tebd_in, template)
        if davg:  # statistics as deepmd-kit computes them: davg only radial, one dstd for x, y, z
            shape = d["@variables"]["davg"].shape
            davg_arr, dstd_arr = np.zeros(shape), np.ones(shape)
            davg_arr[..., 0] = rng.normal(size=shape[:2]) * 0.05
            dstd_arr[..., 0] = 0.5 + rng.random(shape[:2])
            dstd_arr[..., 1:] = (0.5 + rng.random(shape[:2]))[..., None]
            d["@variables"]["davg"], d["@variables"]["dstd"] = davg_arr, dstd_arr
        if lmax > 1:
            d["@version"] = 4
            d["lmax"] = lmax
            d["@variables"]["degree_gain_raw"] = rng.normal(size=lmax - 1)
        return node


class SpinTest(ReferenceCase):
    def test_dpa1_spin_fixture(self):
        stem = "deeppot_dpa_spin"
        model = build.load_model(R.model_path(stem))
        self.assertEqual(model.type_map, ["Ni", "O", "H"])
        self.assertEqual(model.virtual_scale.tolist(), [0.314, 0.0, 0.0])
        self.check_fixture(torch.jit.script(SpinRegularGraph(model)), stem, spin=True, model=model)

    def test_dpa1_spin_with_comm(self):
        self.check_with_comm(lambda: build.load_model(R.model_path("deeppot_dpa_spin")), spin=True)

    def test_dpa3_spin_fixtures(self):
        for stem in ("deeppot_dpa3_spin", "deeppot_dpa3_spin_mpi"):
            model = build.load_model(R.model_path(stem))
            self.check_fixture(torch.jit.script(SpinRegularGraph(model)), stem, spin=True, model=model)

    def test_dpa3_spin_with_comm(self):
        for stem in ("deeppot_dpa3_spin", "deeppot_dpa3_spin_mpi"):
            model = build.load_model(R.model_path(stem))
            self.assertTrue(model.backbone.descriptor.exchanged_widths())
            self.check_with_comm(lambda: build.load_model(R.model_path(stem)), spin=True)

    def test_spin_forms(self):
        """use_spin as indices / names and virtual_scale per spin type or one number mean the same model."""
        node = model_node("deeppot_dpa_spin")
        for use_spin, scale in (([0], [0.314]), (["Ni"], 0.314), ([True, False, False], [0.314, 0.0, 0.0])):
            n = copy.deepcopy(node)
            n["spin"] = {"use_spin": use_spin, "virtual_scale": scale}
            m = build.model_from_dict(n)
            self.assertEqual(m.use_spin, [True, False, False])
            self.assertEqual(m.virtual_scale.tolist(), [0.314, 0.0, 0.0])


def zero_extended_fitting(fitting, before, after):
    """The fitting reading a wider descriptor: zero input rows `before` and `after` its own."""
    f = copy.deepcopy(fitting)
    for net in f["nets"]["networks"]:
        if net is None:
            continue
        w = net["layers"][0]["@variables"]["w"]
        net["layers"][0]["@variables"]["w"] = np.concatenate(
            [np.zeros((before, w.shape[1])), w, np.zeros((after, w.shape[1]))], axis=0)
        if "in_dim" in net:
            net["in_dim"] = w.shape[0] + before + after
    f["dim_descrpt"] = fitting["dim_descrpt"] + before + after
    return f


def hybrid_node(base, children, fitting):
    node = copy.deepcopy(base)
    node["descriptor"] = {"@class": "Descriptor", "type": "hybrid", "@version": 1, "list": copy.deepcopy(children)}
    node["fitting"] = fitting
    return node


def reduced_se(node, sel):
    """se_e2_a with smaller per-type sel: its davg/dstd slots of each section cut to the new sizes."""
    d = copy.deepcopy(node)
    old = d["sel"]
    starts = np.cumsum([0] + old)[:-1]
    slots = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, sel)])
    for key in ("davg", "dstd"):
        d["@variables"][key] = d["@variables"][key][:, slots, :]
    d["sel"] = list(sel)
    return d


class HybridTest(ReferenceCase):
    @classmethod
    def setUpClass(cls):
        cls.se = model_node("se_e2_a_small")
        cls.dpa1 = model_node("gen_dpa1_seed1_a0946240")

    def test_zero_weights_reproduce_each_fixture(self):
        se_d, dpa1_d = self.se["descriptor"], self.dpa1["descriptor"]
        dim_se, dim_dpa1 = self.se["fitting"]["dim_descrpt"], self.dpa1["fitting"]["dim_descrpt"]
        node = hybrid_node(self.se, [se_d, dpa1_d], zero_extended_fitting(self.se["fitting"], 0, dim_dpa1))
        model = build.model_from_dict(node)
        self.assertEqual((model.descriptor.mixed_types, model.descriptor.sel, model.descriptor.rcut), (True, [138], 6.0))
        self.assertEqual((model.descriptor.dim_out, model.descriptor.exchanged_widths()), (dim_se + dim_dpa1, []))
        self.check_fixture(torch.jit.script(RegularGraph(model)), "hybrid(se_e2_a_small,gen_dpa1)",
                           reference="se_e2_a_small")
        node = hybrid_node(self.dpa1, [se_d, dpa1_d], zero_extended_fitting(self.dpa1["fitting"], dim_se, 0))
        self.check_fixture(torch.jit.script(RegularGraph(build.model_from_dict(node))),
                           "hybrid(se_e2_a_small,gen_dpa1)", reference="gen_dpa1_seed1_a0946240")

    def test_message_passing_child(self):
        """A DPA3 child: exchanged widths and message passing come from it; its fixture's references with
        zero weights on the other child; the with-comm graph equals the regular one."""
        stem = "gen_dpa3_seed1_head_noloc"
        dpa3 = model_node(stem)
        dim_se = self.se["fitting"]["dim_descrpt"]
        node = hybrid_node(dpa3, [dpa3["descriptor"], self.se["descriptor"]],
                           zero_extended_fitting(dpa3["fitting"], 0, dim_se))
        model = build.model_from_dict(node)
        child = build.model_from_dict(dpa3).descriptor
        self.assertEqual(model.descriptor.exchanged_widths(), child.exchanged_widths())
        self.assertTrue(model.descriptor.has_message_passing)
        self.assertEqual(model.descriptor.nlayers, child.nlayers)
        self.check_fixture(torch.jit.script(RegularGraph(model)), "hybrid(gen_dpa3_noloc,se_e2_a_small)",
                           reference=stem)
        self.check_with_comm(lambda: build.model_from_dict(node), spin=False)

    def by_hand(self, model, case, layout):
        """Energy and forces of the hybrid computed from its children directly, each on the list deepmd-kit's
        hybrid gives it: sorted within rcut, first sum(hybrid sel), then per child `layout` (numpy)."""
        box = None if case.get("box") is None else np.asarray(case["box"]).reshape(3, 3)
        s = R.extended_system(np.asarray(case["coord"]), np.asarray(case["atype"]), box, model.rcut)
        ext, at, nloc = s["coord"], s["atype"], s["nloc"]
        nsel = sum(model.descriptor.sel)
        nearest = []
        for i in range(nloc):
            js = [j for j in s["nlist"][i] if j >= 0]
            d = [np.linalg.norm(ext[j] - ext[i]) for j in js]
            order = [js[k] for k in np.argsort(d, kind="stable") if d[k] <= model.rcut]
            nearest.append(order[:nsel])
        coord = torch.from_numpy(ext).unsqueeze(0).requires_grad_(True)
        atype = torch.from_numpy(at).unsqueeze(0)
        mapping = torch.from_numpy(s["mapping"]).unsqueeze(0)
        parts = []
        for child, (kind, sel) in zip(model.descriptor.children_list, layout):
            rows = []
            for i in range(nloc):
                if kind == "mixed":
                    row = nearest[i][: sel[0]]
                    row = row + [-1] * (sel[0] - len(row))
                else:
                    typed = [[j for j in nearest[i] if at[j] == t] for t in range(len(sel))]
                    row = []
                    for t, n in enumerate(sel):
                        row += typed[t][:n] + [-1] * (n - len(typed[t][:n]))
                rows.append(row)
            nl = torch.tensor(rows, dtype=torch.long).unsqueeze(0)
            parts.append(child(coord, atype, nl, mapping, None).to(torch.float64))
        t = atype[:, :nloc]
        e_atom = model.fitting(torch.cat(parts, -1), t, None, None) + model.out_bias[0, :, 0][t]
        energy = e_atom.sum()
        force = -torch.autograd.grad(energy, coord)[0][0]
        folded = torch.zeros(nloc, 3, dtype=torch.float64).index_add_(0, mapping[0], force)
        return float(energy), folded.reshape(-1).numpy(), e_atom.detach().reshape(-1).numpy()

    def check_by_hand(self, node, layout):
        model = build.model_from_dict(node)
        graph = torch.jit.script(RegularGraph(build.model_from_dict(node)))
        for name, case in R.load_reference("se_e2_a_small")["cases"].items():
            out = R.evaluate(graph, case, model.rcut)
            energy, force, atom_energy = self.by_hand(model, case, layout)
            errors = (abs(energy - float(out["energy"])), float(np.abs(force - out["force"]).max()),
                      float(np.abs(atom_energy - out["atom_energy"]).max()))
            print(f"  {name}: energy {errors[0]:.1e} force {errors[1]:.1e} atom_energy {errors[2]:.1e}")
            self.assertLess(max(errors), 1e-10, name)

    def random_fitting(self, dim_extra, seed):
        f = zero_extended_fitting(self.se["fitting"], dim_extra, 0)
        rng = np.random.default_rng(seed)
        for net in f["nets"]["networks"]:
            net["layers"][0]["@variables"]["w"][:dim_extra] = rng.normal(size=(dim_extra, 24)) * 0.3
        return f

    def test_mixed_hybrid_cuts_like_deepmd_kit(self):
        """[DPA1, se_e2_a with sel (20, 40)]: hybrid sel [60]; the se child takes the first 20 O / 40 H of the
        60 nearest (not of its own 60 nearest per type)."""
        se_small = reduced_se(self.se["descriptor"], [20, 40])
        node = hybrid_node(self.se, [self.dpa1["descriptor"], se_small], self.random_fitting(40, 5))
        model = build.model_from_dict(node)
        self.assertEqual((model.descriptor.sel, model.descriptor.sel_per_type), ([60], [20, 40]))
        self.check_by_hand(node, [("mixed", [30]), ("typed", [20, 40])])

    def test_typed_hybrid_cuts_like_deepmd_kit(self):
        """[se_e2_a (46, 92), se_e2_a (20, 40)]: per-type hybrid, sections (46, 92); the second child takes the
        first 20 / 40 of each section."""
        se_small = reduced_se(self.se["descriptor"], [20, 40])
        node = hybrid_node(self.se, [self.se["descriptor"], se_small], self.random_fitting(128, 6))
        model = build.model_from_dict(node)
        self.assertEqual((model.descriptor.mixed_types, model.descriptor.sel), (False, [46, 92]))
        self.check_by_hand(node, [("typed", [46, 92]), ("typed", [20, 40])])


def oracle_compare() -> int:
    """DPA1 (every option) and hybrid outputs vs deepmd-kit's dpmodel classes, same formatted lists. Runs in a
    process whose `deepmd` package is deepmd-kit's with this project's appended (see OracleTest). Returns the
    number of failures."""
    from deepmd.dpmodel.descriptor.dpa1 import DescrptDPA1 as Ref
    from deepmd.dpmodel.descriptor.hybrid import DescrptHybrid as RefHybrid
    from deepmd.dpmodel.descriptor.se_atten_v2 import DescrptSeAttenV2 as RefV2
    from deepmd.dpmodel.descriptor.se_e2_a import DescrptSeA as RefSeA
    from deepmd.dpkit import env
    from deepmd.dpkit.dpa1 import DescrptDPA1

    def system(seed, rcut, n=14, length=7.0):
        rng = np.random.default_rng(seed)
        pos = []
        while len(pos) < n:
            p = rng.random(3) * length
            if all(np.linalg.norm((p - q) - length * np.round((p - q) / length)) > 1.0 for q in pos):
                pos.append(p)
        return R.extended_system(np.array(pos), rng.integers(0, 3, n), np.eye(3) * length, rcut)

    def compare(name, ref, tol=1e-12):
        rng = np.random.default_rng(len(name))
        for d in (ref.descrpt_list if isinstance(ref, RefHybrid) else [ref]):
            block = d.se_atten if hasattr(d, "se_atten") else d
            block["davg"] = (rng.normal(size=block["davg"].shape) * 0.1).astype(block["davg"].dtype)
            block["dstd"] = (0.5 + rng.random(size=block["dstd"].shape)).astype(block["dstd"].dtype)
        node = copy.deepcopy(ref.serialize())
        # se_atten_v2 is not in build.py's registry: build it with the class directly.
        mine = DescrptDPA1(node, 3) if node["type"] == "se_atten_v2" else build.descriptor_from_dict(node, 3)
        scripted = torch.jit.script(mine)
        worst = 0.0
        for seed in (3, 4):
            s = system(seed, mine.rcut)
            coord = torch.from_numpy(s["coord"]).unsqueeze(0)
            atype = torch.from_numpy(s["atype"]).unsqueeze(0)
            nl = env.format_nlist(coord, torch.from_numpy(s["nlist"]).unsqueeze(0), mine.rcut, sum(mine.sel))
            if not mine.mixed_types:
                nl = env.distinguish_types(nl, atype, mine.sel)
            expected = ref.call(s["coord"].reshape(1, -1), s["atype"].reshape(1, -1), nl.numpy(),
                                s["mapping"].reshape(1, -1))[0]
            out = scripted(coord.to(mine.dtype), atype, nl, torch.from_numpy(s["mapping"]).unsqueeze(0), None)
            worst = max(worst, float(np.abs(out.detach().numpy() - expected).max()) / max(1.0, np.abs(expected).max()))
        print(f"  {'ok  ' if worst < tol else 'FAIL'} {name}: {worst:.1e}", flush=True)
        return int(not worst < tol)

    base = dict(rcut=5.0, rcut_smth=1.0, sel=30, ntypes=3, neuron=[4, 8], axis_neuron=3, tebd_dim=5, attn=6,
                attn_layer=2)

    def dpa1(**kw):
        return Ref(**dict(base, **kw))

    def sea(**kw):
        return RefSeA(**dict(dict(rcut=4.0, rcut_smth=0.5, sel=[10, 12, 8], neuron=[4, 6], axis_neuron=2, seed=31), **kw))

    cases = [
        ("concat two-side smooth dotr normalize", dpa1(seed=1), 1e-12),
        ("concat one-side", dpa1(type_one_side=True, seed=2), 1e-12),
        ("strip one-side smooth", dpa1(tebd_input_mode="strip", type_one_side=True, seed=3), 1e-12),
        ("strip two-side smooth", dpa1(tebd_input_mode="strip", seed=4), 1e-12),
        ("strip two-side not smooth", dpa1(tebd_input_mode="strip", smooth_type_embedding=False, seed=5), 1e-12),
        ("concat not smooth", dpa1(smooth_type_embedding=False, seed=6), 1e-12),
        ("no dotr/normalize, temperature None, scaling 2", dpa1(attn_dotr=False, normalize=False,
                                                               scaling_factor=2.0, seed=7), 1e-12),
        ("temperature 0.7", dpa1(temperature=0.7, seed=8), 1e-12),
        ("attn_layer 0", dpa1(attn_layer=0, seed=9), 1e-12),
        ("attn_layer 3, ln_eps 1e-3, trainable_ln false", dpa1(attn_layer=3, ln_eps=1e-3, trainable_ln=False,
                                                              seed=10), 1e-12),
        ("exclude_types", dpa1(exclude_types=[[0, 1], [2, 2]], seed=11), 1e-12),
        ("exclude, strip two-side not smooth", dpa1(exclude_types=[[0, 2]], tebd_input_mode="strip",
                                                    smooth_type_embedding=False, seed=12), 1e-12),
        ("env_protection, resnet_dt, gelu", dpa1(env_protection=0.1, resnet_dt=True, activation_function="gelu",
                                                 seed=13), 1e-12),
        ("concat_output_tebd false, use_tebd_bias", dpa1(concat_output_tebd=False, use_tebd_bias=True, seed=14), 1e-12),
        ("neuron [4,8,16], axis 5", dpa1(neuron=[4, 8, 16], axis_neuron=5, seed=15), 1e-12),
        ("lmax 2", dpa1(lmax=2, seed=16), 1e-12),
        ("lmax 3 strip", dpa1(lmax=3, tebd_input_mode="strip", seed=17), 1e-12),
        ("lmax 4 exclude", dpa1(lmax=4, exclude_types=[[1, 1]], seed=18), 1e-12),
        ("sel 8 (truncated)", dpa1(sel=8, seed=19), 1e-12),
        ("silut:3, set_davg_zero", dpa1(activation_function="silut:3.0", set_davg_zero=True, seed=20), 1e-12),
        ("se_atten_v2", RefV2(**dict(base, seed=21)), 1e-12),
        ("se_atten_v2 one-side exclude", RefV2(**dict(base, type_one_side=True, exclude_types=[[0, 0]], seed=22)),
         1e-12),
        ("float32", dpa1(precision="float32", seed=24), 2e-6),
        ("hybrid [dpa1 rc5, se_e2_a rc4]", RefHybrid(list=[dpa1(seed=30), sea()]), 1e-12),
        ("hybrid [se_e2_a rc5, dpa1 rc3.5 sel 10 strip]", RefHybrid(list=[sea(rcut=5.0), dpa1(
            rcut=3.5, sel=10, tebd_input_mode="strip", seed=32)]), 1e-12),
        ("hybrid [se_e2_a rc5, se_e2_a rc3 smaller sel, exclude]", RefHybrid(list=[sea(rcut=5.0), sea(
            rcut=3.0, sel=[4, 5, 6], exclude_types=[[0, 1]], seed=33)]), 1e-12),
        ("hybrid [dpa1 float32, se_e2_a float64]", RefHybrid(list=[dpa1(precision="float32", seed=34), sea()]), 2e-6),
    ]
    return sum(compare(name, ref, tol) for name, ref, tol in cases)


@unittest.skipUnless(os.environ.get("DEEPMD_KIT_PYTHON"), "set DEEPMD_KIT_PYTHON to deepmd-kit's Python sources")
class OracleTest(unittest.TestCase):
    def test_descriptors_against_deepmd_kit_dpmodel(self):
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import deepmd; deepmd.__path__.append(sys.argv[2]); "
                "sys.path.append(sys.argv[3]); from tests.dpkit.dpa1_spin_hybrid_test import oracle_compare; "
                "sys.exit(min(oracle_compare(), 100))")
        done = subprocess.run([sys.executable, "-c", code, os.environ["DEEPMD_KIT_PYTHON"],
                               os.path.join(R.REPO, "deepmd"), R.REPO], capture_output=True, text=True)
        print(done.stdout + done.stderr[-3000:])
        self.assertEqual(done.returncode, 0)


if __name__ == "__main__":
    unittest_main.run()
