"""The graph wrappers (deepmd/models: RegularGraph / WithCommGraph, SpinRegularGraph / SpinWithCommGraph,
the ghost fillers), the Python exchange-plan encoder and the periodic helper, on deepmd/dpkit models
built from the deepmd-kit inputs of examples/models.

Oracles: the eager model for the scripted graphs; the regular (mapping) graph for the with-comm graph
on self-exchange plans whose ghosts travel several hops; central finite differences of the energy on
the periodic helper's systems for forces (folded onto owners over the images), the virial and the
magnetic force. deepmd-kit's own numbers for these models are tests/dpkit's business.
Usage: models_python_test.py OPS_LIBRARY."""

import copy
import json
import os
import unittest

import torch

from tests import unittest_main

from deepmd.dpkit.build import model_from_dict
from deepmd.dpkit.init import model_dict_from_input
from deepmd.models.exchange_plan import encode
from deepmd.models.model import RegularGraph, WithCommGraph
from deepmd.models.periodic import extend, random_system
from deepmd.models.spin import SpinRegularGraph, SpinWithCommGraph, virtual_margin

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "models")
NAMES = ("se_e2_a", "dpa1", "dpa3", "dpa2", "hybrid")
MESSAGE_PASSING = ("dpa3", "dpa2", "hybrid")


def section(name):
    with open(os.path.join(EXAMPLES, name + ".json")) as f:
        return json.load(f)["model"]


def build(name_or_section, seed=1):
    model_section = section(name_or_section) if isinstance(name_or_section, str) else name_or_section
    return model_from_dict(model_dict_from_input(model_section, seed))


def system(box, natoms, seed, rcut):
    pos, atype = random_system(natoms, box, 2, seed)
    return pos, atype, extend(pos, atype, box, rcut)


def regular(model, s, coord=None, fparam=None, aparam=None):
    return RegularGraph(model).forward_lower(s["coord"] if coord is None else coord, s["atype"], s["nlist"],
                                              s["mapping"], fparam, aparam, True)


class ScriptedEqualsEagerTest(unittest.TestCase):
    def test_both_graphs(self):
        for name in NAMES:
            model = build(name)
            _, _, s = system([8.0, 8.5, 9.0], 40, 11, model.rcut)
            eager = regular(build(name), s)
            scripted = torch.jit.script(RegularGraph(build(name)))
            outs = [scripted.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, True)]
            if name in MESSAGE_PASSING:
                comm = torch.jit.script(WithCommGraph(build(name)))
                outs.append(comm.forward_lower_with_comm(s["coord"], s["atype"], s["nlist"], None, None, True,
                                                         s["plan"]))
            for key in ("energy", "atom_energy", "force", "virial", "atom_virial"):
                for o in outs:
                    torch.testing.assert_close(o[key], eager[key], rtol=1e-12, atol=1e-12, msg=f"{name} {key}")


class WithCommEqualsRegularTest(unittest.TestCase):
    def test_multi_hop_self_plans(self):
        for name in MESSAGE_PASSING:
            model = build(name)
            # Boxes thinner than the cutoff: ghosts of ghosts, several hops per dimension.
            _, _, s = system([4.2, 4.6, 5.5], 12, 3, model.rcut)
            self.assertTrue(s["multi_hop"])
            ref = regular(copy.deepcopy(model), s)
            out = WithCommGraph(copy.deepcopy(model)).forward_lower_with_comm(
                s["coord"], s["atype"], s["nlist"], None, None, True, s["plan"])
            for key in ("energy", "force", "virial", "atom_virial"):
                torch.testing.assert_close(out[key], ref[key], rtol=1e-10, atol=1e-10, msg=f"{name} {key}")


class PeriodicHelperFiniteDifferenceTest(unittest.TestCase):
    """Forces folded over the helper's images and the diagonal virial equal finite differences of the
    energy of the periodic system: the helper's images, mapping and lists are those of the system."""

    def energy(self, model, pos, atype, box):
        s = extend(pos, atype, box, model.rcut)
        return regular(model, s)["energy"].item(), s

    def test_forces_and_virial(self):
        h = 1e-5
        for name in ("dpa3", "se_e2_a"):
            model = build(name)
            box = [6.0, 6.5, 7.0]
            pos, atype = random_system(14, box, 2, 5)
            _, s = self.energy(model, pos, atype, box)
            out = regular(model, s)
            force = torch.zeros(s["nloc"], 3, dtype=torch.float64).index_add_(0, s["mapping"][0], out["force"][0])
            scale = float(force.abs().max())
            self.assertGreater(scale, 0.0)
            for atom in (0, 5, 13):
                for a in range(3):
                    plus, minus = pos.clone(), pos.clone()
                    plus[atom, a] += h
                    minus[atom, a] -= h
                    fd = -(self.energy(model, plus, atype, box)[0] - self.energy(model, minus, atype, box)[0]) / (2 * h)
                    self.assertAlmostEqual(force[atom, a].item(), fd, delta=1e-6 * scale,
                                           msg=f"{name} force atom {atom} axis {a}")
            virial = out["virial"][0].reshape(3, 3)
            for a in range(3):
                def strained(eps):
                    m = torch.eye(3, dtype=torch.float64)
                    m[a, a] += eps
                    return self.energy(model, pos @ m.T, atype, [box[i] * m[i, i].item() for i in range(3)])[0]
                fd = -(strained(h) - strained(-h)) / (2 * h)
                self.assertAlmostEqual(virial[a, a].item(), fd, delta=1e-6 * max(1e-3, abs(fd)),
                                       msg=f"{name} virial {a}{a}")


class FrameAndAtomParametersTest(unittest.TestCase):
    def test_fparam_aparam_through_both_graphs(self):
        model = build("dpa3_params")
        _, _, s = system([4.4, 4.8, 5.3], 10, 6, model.rcut)
        fparam = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
        aparam = torch.linspace(0, 1, 10, dtype=torch.float64).reshape(1, 10, 1)
        args = (s["coord"], s["atype"], s["nlist"])
        ref = RegularGraph(copy.deepcopy(model)).forward_lower(*args, s["mapping"], fparam, aparam, True)
        out = WithCommGraph(copy.deepcopy(model)).forward_lower_with_comm(*args, fparam, aparam, True, s["plan"])
        torch.testing.assert_close(out["force"], ref["force"], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-12, atol=1e-12)
        other = RegularGraph(copy.deepcopy(model)).forward_lower(*args, s["mapping"], fparam * 2, aparam, True)
        self.assertNotAlmostEqual(other["energy"].item(), ref["energy"].item(), delta=1e-6)
        other = RegularGraph(copy.deepcopy(model)).forward_lower(*args, s["mapping"], fparam, aparam + 1, True)
        self.assertNotAlmostEqual(other["energy"].item(), ref["energy"].item(), delta=1e-6)


class EmptySystemTest(unittest.TestCase):
    """A rank that owns no atoms still runs its graph (it must take part in every exchange)."""

    def test_no_atoms(self):
        for name in NAMES + ("dpa3_spin",):
            model = build(name)
            coord = torch.zeros(1, 0, 3, dtype=torch.float64)
            atype = torch.zeros(1, 0, dtype=torch.long)
            nlist = torch.full((1, 0, 4), -1, dtype=torch.long)
            plan = encode(0, 0, [[("send", 0, []), ("recv", 0, 0, 0)]])
            if name == "dpa3_spin":
                spin = torch.zeros(1, 0, 3, dtype=torch.float64)
                outs = [SpinRegularGraph(copy.deepcopy(model)).forward_lower(coord, atype, spin, nlist, atype, None,
                                                                             None, True),
                        SpinWithCommGraph(copy.deepcopy(model)).forward_lower_with_comm(coord, atype, spin, nlist, None,
                                                                                        None, True, plan)]
            else:
                outs = [RegularGraph(copy.deepcopy(model)).forward_lower(coord, atype, nlist, atype, None, None, True)]
                if name in MESSAGE_PASSING:
                    outs.append(WithCommGraph(copy.deepcopy(model)).forward_lower_with_comm(coord, atype, nlist, None,
                                                                                            None, True, plan))
            for out in outs:
                self.assertEqual(out["energy"].item(), 0.0, name)
                self.assertEqual(tuple(out["force"].shape), (1, 0, 3), name)


class SpinTest(unittest.TestCase):
    """The spin graphs: with-comm equals regular on multi-hop plans, scripted equals eager, force and
    force_mag = -dE/dS by finite differences, no magnetic force on a type without spin."""

    def setUp(self):
        self.model = build("dpa3_spin")

    def run_model(self, pos, atype, spins, box, with_comm=False, scripted=False):
        s = extend(pos, atype, box, self.model.rcut + virtual_margin(self.model, atype, spins))
        spin = spins[s["mapping"][0]].unsqueeze(0)  # a ghost carries its owner's spin
        if with_comm:
            graph = SpinWithCommGraph(copy.deepcopy(self.model))
            graph = torch.jit.script(graph) if scripted else graph
            return graph.forward_lower_with_comm(s["coord"], s["atype"], spin, s["nlist"], None, None, True,
                                                 s["plan"]), s
        graph = SpinRegularGraph(copy.deepcopy(self.model))
        graph = torch.jit.script(graph) if scripted else graph
        return graph.forward_lower(s["coord"], s["atype"], spin, s["nlist"], s["mapping"], None, None, True), s

    def system(self, box, n, seed):
        pos, atype = random_system(n, box, 2, seed)
        spins = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return pos, atype, spins

    def test_graphs_agree_on_multi_hop_plans(self):
        box = [4.3, 4.7, 5.4]
        pos, atype, spins = self.system(box, 11, 2)
        ref, s = self.run_model(pos, atype, spins, box)
        self.assertTrue(s["multi_hop"])
        self.assertGreater(float(ref["force_mag"].abs().max()), 0)
        for with_comm, scripted in ((True, False), (True, True), (False, True)):
            out, _ = self.run_model(pos, atype, spins, box, with_comm, scripted)
            tolerance = 1e-10 if with_comm else 1e-12
            for key in ("energy", "force", "force_mag", "virial", "atom_virial"):
                torch.testing.assert_close(out[key], ref[key], rtol=tolerance, atol=tolerance,
                                           msg=f"{key} with_comm={with_comm} scripted={scripted}")

    def test_finite_differences(self):
        box = [6.0, 6.5, 7.0]
        pos, atype, spins = self.system(box, 12, 4)
        atype[0], atype[1] = 0, 1  # one atom with spin, one without
        out, s = self.run_model(pos, atype, spins, box)
        fold = lambda t: torch.zeros(12, 3, dtype=torch.float64).index_add_(0, s["mapping"][0], t[0])
        force, force_mag = fold(out["force"]), fold(out["force_mag"])
        scale = max(float(force.abs().max()), float(force_mag.abs().max()))
        energy = lambda p, sp: self.run_model(p, atype, sp, box)[0]["energy"].item()
        h = 1e-5
        for atom in (0, 1, 7):
            for a in range(3):
                dp = torch.zeros_like(pos)
                dp[atom, a] = h
                fd = -(energy(pos + dp, spins) - energy(pos - dp, spins)) / (2 * h)
                self.assertAlmostEqual(force[atom, a].item(), fd, delta=1e-6 * scale)
                fd_mag = -(energy(pos, spins + dp) - energy(pos, spins - dp)) / (2 * h)
                self.assertAlmostEqual(force_mag[atom, a].item(), fd_mag, delta=1e-6 * scale)
        self.assertEqual(float(force_mag[1].abs().max()), 0.0, "a type without spin has no magnetic force")


def main():
    unittest_main.run()


if __name__ == "__main__":
    main()
