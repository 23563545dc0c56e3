"""Reference models in Python (eager and TorchScript) on periodic systems.

Oracles: the eager model for the scripted graphs; the regular (mapping) graph for the with-comm graph
on self-exchange plans whose ghosts travel several hops; central finite differences of the energy for
forces and virial. Usage: models_python_test.py OPS_LIBRARY."""

import copy
import json
import os
import unittest

import torch

from tests import unittest_main

from deepmd.models.common import MLP, gather_rows, select_neighbors, smooth_switch
from deepmd.models.config import build_model
from deepmd.models.exchange_plan import encode
from deepmd.models.model import RegularGraph, WithCommGraph
from deepmd.models.periodic import extend, random_system
from deepmd.models.spin import SpinRegularGraph, SpinWithCommGraph

HERE = os.path.dirname(os.path.abspath(__file__))

EXAMPLES = os.path.join(HERE, "..", "..", "deepmd", "models", "examples")
CONFIGS = {name: json.load(open(os.path.join(EXAMPLES, name + ".json"))) for name in ("se_e2_a", "dpa3", "dpa2", "hybrid")}


def small_config(name):
    """The example configuration, made smaller so finite differences stay fast."""
    cfg = copy.deepcopy(CONFIGS[name])
    shrink = {
        "dpa3": dict(n_dim=8, e_dim=6, a_dim=4, e_sel=48, a_sel=16),
        "se_e2_a": dict(neuron=[8, 12], axis_neuron=4, sel=48),
        "dpa2": dict(tebd_dim=4, init_neuron=[8, 12], g1_dim=8, g2_dim=6, attn_dim=6, sel_init=48, sel=40),
    }
    d = cfg["descriptor"]
    for child in d["list"] if d["type"] == "hybrid" else [d]:
        child.update(shrink[child["type"]])
    cfg["fitting"]["neuron"] = [12]
    return cfg


def system(box, natoms, seed, rcut):
    pos, atype = random_system(natoms, box, 2, seed)
    return pos, atype, extend(pos, atype, box, rcut)


def regular(model, s, coord=None):
    return RegularGraph(model).forward_lower(s["coord"] if coord is None else coord, s["atype"], s["nlist"],
                                              s["mapping"], None, None, True)


class ScriptedEqualsEagerTest(unittest.TestCase):
    def test_both_graphs(self):
        for name in CONFIGS:
            cfg = CONFIGS[name]
            rcut = build_model(cfg).rcut
            _, _, s = system([8.0, 8.5, 9.0], 50, 11, rcut)
            eager = regular(build_model(cfg), s)
            scripted = torch.jit.script(RegularGraph(build_model(cfg)))
            out = scripted.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True)
            comm = torch.jit.script(WithCommGraph(build_model(cfg)))
            out_comm = comm.forward_lower_with_comm(s["coord"], s["atype"], s["nlist"], None, None, True, s["plan"])
            for key in ("energy", "atom_energy", "force", "virial", "atom_virial"):
                for o in (out, out_comm):
                    torch.testing.assert_close(o[key], eager[key], rtol=1e-12, atol=1e-12, msg=f"{name} {key}")


def repflows_by_concatenation(d, coord, atype, nlist, mapping):
    """DPA3's repflows as its definition reads: every layer MLP applied to concatenated features, every
    layer's edges and angles updated. The model itself multiplies blocks of the first weight separately
    and skips the last layer's unused updates; both must give this."""
    nloc = nlist.shape[1]
    index, rij, dist = select_neighbors(coord, nlist, nloc, d.e_rcut, d.e_sel)
    mask = (index >= 0).to(coord.dtype)
    sw_e = (smooth_switch(dist, d.e_rcut_smth, d.e_rcut) * mask).unsqueeze(-1)
    edge = d.edge_embed(torch.exp(-(((dist.unsqueeze(-1) - d.rbf_centers) / d.rbf_width) ** 2)))
    a = d.a_sel
    ra, da = rij[:, :, :a, :], dist[:, :, :a]
    sw_a = smooth_switch(da, d.a_rcut_smth, d.a_rcut) * mask[:, :, :a]
    w_a = (sw_a.unsqueeze(-1) * sw_a.unsqueeze(-2)).unsqueeze(-1)
    angle = d.angle_embed((torch.matmul(ra, ra.transpose(2, 3)) / (da.unsqueeze(-1) * da.unsqueeze(-2))).unsqueeze(-1))
    node = d.type_embedding[atype[:, :nloc]]
    for layer in d.layers:
        node_ext = torch.gather(node, 1, mapping.unsqueeze(-1).expand(-1, -1, node.shape[2]))
        pair = torch.cat([node.unsqueeze(2).expand(-1, -1, d.e_sel, -1), gather_rows(node_ext, index), edge], dim=-1)
        node_next = node + layer.node_self(node) + (sw_e * layer.message(pair)).sum(2) / d.e_sel
        edge_next = edge + layer.edge_update(pair)
        ej = edge[:, :, :a, :].unsqueeze(3).expand(-1, -1, -1, a, -1)
        ek = edge[:, :, :a, :].unsqueeze(2).expand(-1, -1, a, -1, -1)
        angle = angle + layer.angle_update(torch.cat([angle, ej, ek], dim=-1))
        from_angles = (w_a * layer.angle_to_edge(angle)).sum(3) / a
        edge = torch.cat([edge_next[:, :, :a, :] + from_angles, edge_next[:, :, a:, :]], dim=2)
        node = node_next
    return node


class ConcatenationFreeLayersTest(unittest.TestCase):
    """The models' block-wise first-layer products against plain concatenation (eager, float64)."""

    def test_mlp_project_finish(self):
        mlp = MLP([5 + 3 + 4, 7, 6], seed=3, dtype=torch.float64)
        g = torch.Generator().manual_seed(1)
        centre = torch.randn(2, 1, 5, generator=g, dtype=torch.float64)    # broadcast over neighbours
        neighbour = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
        edge = torch.randn(2, 9, 4, generator=g, dtype=torch.float64)
        expected = mlp(torch.cat([centre.expand(-1, 9, -1), neighbour, edge], dim=-1))
        got = mlp.finish(mlp.project(centre, 0) + mlp.project(neighbour, 5) + mlp.project(edge, 8))
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)

    def test_repflows_equals_concatenated_definition(self):
        cfg = copy.deepcopy(small_config("dpa3"))
        cfg["descriptor"]["nlayers"] = 3
        model = build_model(cfg)
        _, _, s = system([8.0, 8.5, 9.0], 40, 5, model.rcut)
        coord = s["coord"].to(torch.float64)
        got = model.descriptor(coord, s["atype"], s["nlist"], s["mapping"], None)
        expected = repflows_by_concatenation(model.descriptor, coord, s["atype"], s["nlist"], s["mapping"])
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


class WithCommEqualsRegularTest(unittest.TestCase):
    def test_multi_hop_self_plans(self):
        for name in CONFIGS:
            cfg = small_config(name)
            model = build_model(cfg)
            # Boxes thinner than the cutoff: ghosts of ghosts, several hops per dimension.
            _, _, s = system([4.2, 4.6, 5.5], 12, 3, model.rcut)
            self.assertTrue(s["multi_hop"])
            ref = regular(copy.deepcopy(model), s)
            out = WithCommGraph(copy.deepcopy(model)).forward_lower_with_comm(
                s["coord"], s["atype"], s["nlist"], None, None, True, s["plan"])
            for key in ("energy", "force", "virial", "atom_virial"):
                torch.testing.assert_close(out[key], ref[key], rtol=1e-10, atol=1e-10, msg=f"{name} {key}")


class FiniteDifferenceTest(unittest.TestCase):
    def energy(self, model, pos, atype, box):
        s = extend(pos, atype, box, model.rcut)
        return regular(model, s)["energy"].item(), s

    def test_forces_and_virial(self):
        h = 1e-5
        for name in CONFIGS:
            model = build_model(small_config(name))
            box = [6.0, 6.5, 7.0]
            pos, atype = random_system(14, box, 2, 5)
            _, s = self.energy(model, pos, atype, box)
            out = regular(model, s)
            nloc = s["nloc"]
            # Forces on each atom = sum over its images (the ghosts' forces fold onto owners).
            force = torch.zeros(nloc, 3, dtype=torch.float64).index_add_(0, s["mapping"][0], out["force"][0])
            for atom in (0, 5, 13):
                for a in range(3):
                    plus, minus = pos.clone(), pos.clone()
                    plus[atom, a] += h
                    minus[atom, a] -= h
                    fd = -(self.energy(model, plus, atype, box)[0] - self.energy(model, minus, atype, box)[0]) / (2 * h)
                    self.assertAlmostEqual(force[atom, a].item(), fd, delta=1e-7 * max(1, abs(fd)),
                                           msg=f"{name} force atom {atom} axis {a}")
            # Virial = -dE/d(strain), diagonal components: scale positions and box together.
            virial = out["virial"][0].reshape(3, 3)
            for a in range(3):
                def strained(eps):
                    m = torch.eye(3, dtype=torch.float64)
                    m[a, a] += eps
                    return self.energy(model, pos @ m.T, atype, [box[i] * m[i, i].item() for i in range(3)])[0]
                fd = -(strained(h) - strained(-h)) / (2 * h)
                self.assertAlmostEqual(virial[a, a].item(), fd, delta=1e-6 * max(1, abs(fd)), msg=f"{name} virial {a}{a}")


def isolated(model, pos, atype, box=30.0):
    """Energy, forces and extended system of a cluster in a box much larger than the cutoff."""
    s = extend(pos, atype, [box] * 3, model.rcut)
    out = regular(model, s)
    nloc = s["nloc"]
    force = torch.zeros(nloc, 3, dtype=torch.float64).index_add_(0, s["mapping"][0], out["force"][0])
    return out["energy"].item(), force


def cluster(n, seed):
    pos, atype = random_system(n, [5.0, 5.0, 5.0], 2, seed)
    return pos + 12.5, atype


class ClusterVirialTest(unittest.TestCase):
    """All nine virial components by finite strain, on a cluster in a box far larger than the cutoff
    (no image interacts, so straining positions alone is straining the system)."""

    def test_all_components(self):
        h = 1e-5
        for name in CONFIGS:
            model = build_model(small_config(name))
            pos, atype = cluster(8, 31)
            s = extend(pos, atype, [30.0] * 3, model.rcut)
            virial = regular(model, s)["virial"][0].reshape(3, 3)
            for a in range(3):
                for b in range(3):
                    def energy(eps):
                        m = torch.eye(3, dtype=torch.float64)
                        m[a, b] += eps
                        return isolated(model, (pos - 15.0) @ m.T + 15.0, atype)[0]
                    fd = -(energy(h) - energy(-h)) / (2 * h)
                    self.assertAlmostEqual(virial[a, b].item(), fd, delta=1e-7 * max(1, abs(fd)),
                                           msg=f"{name} virial {a}{b}")


class FrameAndAtomParametersTest(unittest.TestCase):
    def test_fparam_aparam(self):
        cfg = small_config("dpa3")
        cfg["fitting"].update(dim_fparam=2, dim_aparam=1)
        model = build_model(cfg)
        _, _, s = system([4.4, 4.8, 5.3], 10, 6, model.rcut)
        fparam = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
        aparam = torch.linspace(0, 1, 10, dtype=torch.float64).reshape(1, 10, 1)
        args = (s["coord"], s["atype"], s["nlist"])
        ref = RegularGraph(copy.deepcopy(model)).forward_lower(*args, s["mapping"], fparam, aparam, True)
        out = WithCommGraph(copy.deepcopy(model)).forward_lower_with_comm(*args, fparam, aparam, True, s["plan"])
        torch.testing.assert_close(out["force"], ref["force"], rtol=1e-10, atol=1e-10)
        other = RegularGraph(copy.deepcopy(model)).forward_lower(*args, s["mapping"], fparam * 2, aparam, True)
        self.assertNotAlmostEqual(other["energy"].item(), ref["energy"].item(), delta=1e-6)
        other = RegularGraph(copy.deepcopy(model)).forward_lower(*args, s["mapping"], fparam, aparam + 1, True)
        self.assertNotAlmostEqual(other["energy"].item(), ref["energy"].item(), delta=1e-6)
        with self.assertRaisesRegex(RuntimeError, "needs fparam"):
            RegularGraph(copy.deepcopy(model)).forward_lower(*args, s["mapping"], None, aparam, True)


class EmptySystemTest(unittest.TestCase):
    """A rank that owns no atoms still runs its graph (it must take part in every exchange)."""

    def test_no_atoms(self):
        for name in list(CONFIGS) + ["dpa3_spin"]:
            cfg = small_config(name) if name in CONFIGS else json.load(open(os.path.join(EXAMPLES, name + ".json")))
            model = build_model(cfg)
            coord = torch.zeros(1, 0, 3, dtype=torch.float64)
            atype = torch.zeros(1, 0, dtype=torch.long)
            nlist = torch.full((1, 0, 4), -1, dtype=torch.long)
            plan = encode(0, 0, [[("send", 0, []), ("recv", 0, 0, 0)]])
            if name == "dpa3_spin":
                spin = torch.zeros(1, 0, 3, dtype=torch.float64)
                outs = [SpinRegularGraph(copy.deepcopy(model)).forward_lower(coord, atype, spin, nlist, atype, None, None, True),
                        SpinWithCommGraph(copy.deepcopy(model)).forward_lower_with_comm(coord, atype, spin, nlist, None, None,
                                                                                        True, plan)]
            else:
                outs = [RegularGraph(copy.deepcopy(model)).forward_lower(coord, atype, nlist, atype, None, None, True),
                        WithCommGraph(copy.deepcopy(model)).forward_lower_with_comm(coord, atype, nlist, None, None, True,
                                                                                    plan)]
            for out in outs:
                self.assertEqual(out["energy"].item(), 0.0, name)
                self.assertEqual(tuple(out["force"].shape), (1, 0, 3), name)


class InvarianceTest(unittest.TestCase):
    def test_translation_rotation_permutation(self):
        for name in CONFIGS:
            model = build_model(small_config(name))
            pos, atype = cluster(9, 21)
            e0, f0 = isolated(model, pos, atype)
            # Translation.
            e1, f1 = isolated(model, pos + torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64), atype)
            self.assertAlmostEqual(e1, e0, delta=1e-10 * abs(e0), msg=f"{name} translation")
            torch.testing.assert_close(f1, f0, rtol=1e-9, atol=1e-10)
            # Rotation about the cluster centre.
            q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
            centre = pos.mean(0)
            e2, f2 = isolated(model, (pos - centre) @ q.T + centre, atype)
            self.assertAlmostEqual(e2, e0, delta=1e-10 * abs(e0), msg=f"{name} rotation")
            torch.testing.assert_close(f2, f0 @ q.T, rtol=1e-9, atol=1e-10)
            # Permutation of the atoms.
            perm = torch.randperm(pos.shape[0], generator=torch.Generator().manual_seed(2))
            e3, f3 = isolated(model, pos[perm], atype[perm])
            self.assertAlmostEqual(e3, e0, delta=1e-10 * abs(e0), msg=f"{name} permutation")
            torch.testing.assert_close(f3, f0[perm], rtol=1e-9, atol=1e-10)


class CutoffContinuityTest(unittest.TestCase):
    """A probe atom crosses each cutoff of a descriptor: energy and forces stay continuous."""

    def cutoffs(self, cfg):
        d = cfg["descriptor"]
        out = []
        for child in d["list"] if d["type"] == "hybrid" else [d]:
            out += [child[k] for k in ("rcut", "e_rcut", "a_rcut", "rcut_init") if k in child]
        return sorted(set(out))

    def test_crossing_every_cutoff(self):
        # Over a step of 2*eps a smooth energy changes by -F.dx (to O(eps^2)) and forces by O(eps);
        # a switch that is not smooth would leave a jump of order one in the energy or the forces.
        eps = 1e-6
        for name in CONFIGS:
            cfg = small_config(name)
            model = build_model(cfg)
            for rc in self.cutoffs(cfg):
                results = []
                for x in (rc - eps, rc + eps):
                    # A at the centre, B 1.1 A away (within every cutoff of A), the probe P at distance x
                    # from A along x and farther from B.
                    pos = torch.tensor([[15.0, 15.0, 15.0], [15.0, 16.1, 15.0], [15.0 + x, 15.0, 15.0]],
                                       dtype=torch.float64)
                    results.append(isolated(model, pos, torch.tensor([0, 1, 1])))
                (e_in, f_in), (e_out, f_out) = results
                work = -0.5 * float(f_in[2, 0] + f_out[2, 0]) * 2 * eps
                self.assertLess(abs(e_out - e_in - work), 1e-10, msg=f"{name}: energy jumps at cutoff {rc}")
                self.assertLess(float((f_in - f_out).abs().max()), 1e-4, msg=f"{name}: forces jump at cutoff {rc}")


class SpinTest(unittest.TestCase):
    """Virtual-atom spin model: the same oracles, plus force_mag = -dE/dS by finite differences."""

    def setUp(self):
        self.config = json.load(open(os.path.join(EXAMPLES, "dpa3_spin.json")))
        self.config["descriptor"].update(n_dim=8, e_dim=6, a_dim=4)

    def run_model(self, model, pos, atype, spins, box, with_comm=False, scripted=False):
        s = extend(pos, atype, box, model.rcut)
        spin = spins[s["mapping"][0]].unsqueeze(0)  # a ghost carries its owner's spin
        if with_comm:
            graph = SpinWithCommGraph(copy.deepcopy(model))
            graph = torch.jit.script(graph) if scripted else graph
            return graph.forward_lower_with_comm(s["coord"], s["atype"], spin, s["nlist"], None, None, True,
                                                 s["plan"]), s
        graph = SpinRegularGraph(copy.deepcopy(model))
        graph = torch.jit.script(graph) if scripted else graph
        return graph.forward_lower(s["coord"], s["atype"], spin, s["nlist"], s["mapping"], None, None, True), s

    def system(self, box, n, seed):
        pos, atype = random_system(n, box, 2, seed)
        spins = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return pos, atype, spins

    def test_graphs_agree_on_multi_hop_plans(self):
        model = build_model(self.config)
        box = [4.3, 4.7, 5.4]
        pos, atype, spins = self.system(box, 11, 2)
        ref, s = self.run_model(model, pos, atype, spins, box)
        self.assertTrue(s["multi_hop"])
        self.assertGreater(float(ref["force_mag"].abs().max()), 0)
        for with_comm, scripted in ((True, False), (True, True), (False, True)):
            out, _ = self.run_model(model, pos, atype, spins, box, with_comm, scripted)
            tolerance = 1e-10 if with_comm else 1e-12  # scripted regular graph vs eager: 1e-12
            for key in ("energy", "force", "force_mag", "virial", "atom_virial"):
                torch.testing.assert_close(out[key], ref[key], rtol=tolerance, atol=tolerance,
                                           msg=f"{key} with_comm={with_comm} scripted={scripted}")

    def test_finite_differences(self):
        model = build_model(self.config)
        box = [6.0, 6.5, 7.0]
        pos, atype, spins = self.system(box, 12, 4)
        atype[0], atype[1] = 0, 1  # one atom with spin, one without
        out, s = self.run_model(model, pos, atype, spins, box)
        fold = lambda t: torch.zeros(12, 3, dtype=torch.float64).index_add_(0, s["mapping"][0], t[0])
        force, force_mag = fold(out["force"]), fold(out["force_mag"])
        energy = lambda p, sp: self.run_model(model, p, atype, sp, box)[0]["energy"].item()
        h = 1e-5
        for atom in (0, 1, 7):
            for a in range(3):
                dp = torch.zeros_like(pos)
                dp[atom, a] = h
                fd = -(energy(pos + dp, spins) - energy(pos - dp, spins)) / (2 * h)
                self.assertAlmostEqual(force[atom, a].item(), fd, delta=1e-7 * max(1, abs(fd)))
                fd_mag = -(energy(pos, spins + dp) - energy(pos, spins - dp)) / (2 * h)
                self.assertAlmostEqual(force_mag[atom, a].item(), fd_mag, delta=1e-7 * max(1, abs(fd_mag)))
        self.assertEqual(float(force_mag[1].abs().max()), 0.0, "a type without spin has no magnetic force")


def main():
    unittest_main.run()


if __name__ == "__main__":
    main()
