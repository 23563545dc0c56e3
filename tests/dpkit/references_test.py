"""deepmd/dpkit against deepmd-kit's own outputs (../shared/deepmd-kit, README.md §4-6).

For every fixture model whose descriptor type deepmd/dpkit/build.py registers: build it from the model
file, wrap it in the regular graph, torch.jit.script it, evaluate every reference case the way
deepmd-kit's DeepEval does (tests/dpkit/references.py) and require max |Δ| ≤ 1e-10 on energy, force,
virial, atom_energy, atom_virial (and force_mag for spin models). The with-comm graph must script too.
Also deepmd-kit's hard-coded test numbers (deepmd_kit_hardcoded.json) within their stated tolerance,
and UnsupportedModel (never another exception) for models this package cannot run.
Usage: references_test.py OPS_LIBRARY."""

import copy
import importlib.util
import json
import os
import re
import unittest
from typing import Dict, Optional

import numpy as np
import torch

from tests import unittest_main
from tests.dpkit import references as R

from deepmd.dpkit import build
from deepmd.dpkit.serialization import UnsupportedModel, load_model_dict
from deepmd.models.exchange_plan import encode
from deepmd.models.model import RegularGraph, WithCommGraph

TOLERANCE = 1e-10
KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")

_DICTS: Dict[str, dict] = {}


def model_dict(stem: str) -> dict:
    if stem not in _DICTS:
        _DICTS[stem] = load_model_dict(R.model_path(stem))["model"]
    return _DICTS[stem]


def is_spin(node: dict) -> bool:
    return node.get("type") == "spin_ener"


def not_runnable(stem: str) -> Optional[str]:
    """Why this package does not (yet) claim the model, or None when it must reproduce it."""
    node = model_dict(stem)
    backbone = node.get("backbone_model", node) if is_spin(node) else node
    kind = backbone.get("descriptor", {}).get("type")
    if kind in build.IMPORT_ERRORS:
        return None  # its module exists but is broken: building the model reports the error
    if kind not in build.DESCRIPTORS:
        return f"descriptor type {kind!r} is not registered in deepmd/dpkit/build.py"
    if is_spin(node) and importlib.util.find_spec("deepmd.dpkit.spin") is None:
        return "spin_ener models need deepmd/dpkit/spin.py"
    return None


_MODELS: Dict[str, torch.nn.Module] = {}
_GRAPHS: Dict[str, torch.jit.ScriptModule] = {}


_FAILED: Dict[str, BaseException] = {}


def scripted_graph(stem: str):
    """(model, scripted regular graph), built once per model. A failure is kept and raised again:
    scripting the same classes a second time after a failed attempt reports a misleading
    "Can't redefine method" instead of the real error."""
    if stem in _FAILED:
        raise _FAILED[stem]
    if stem not in _GRAPHS:
        try:
            model = build.model_from_dict(copy.deepcopy(model_dict(stem)))
            if is_spin(model_dict(stem)):
                from deepmd.models.spin import SpinRegularGraph
                graph = SpinRegularGraph(model)
            else:
                graph = RegularGraph(model)
            _MODELS[stem], _GRAPHS[stem] = model, torch.jit.script(graph)
        except Exception as e:
            _FAILED[stem] = e
            raise
    return _MODELS[stem], _GRAPHS[stem]


class SelfExchange:
    """A with-comm graph driven like a regular one (references.evaluate calls forward_lower): one rank
    whose plan fills every ghost row from its local owner in one stage (docs/exchange_plan.md)."""

    def __init__(self, graph):
        self.graph = graph

    def forward_lower(self, *args):
        *inputs, nlist, mapping, fparam, aparam, do_atomic_virial = args
        nloc, nall = nlist.shape[1], mapping.shape[1]
        owners = mapping[0, nloc:].tolist()
        stages = [[("send", 0, owners), ("recv", 0, nall - nloc, nloc)]] if owners else []
        plan = encode(nloc, nall - nloc, stages)
        return self.graph.forward_lower_with_comm(*inputs, nlist, fparam, aparam, do_atomic_virial, plan)


def check_errors(test: unittest.TestCase, what: str, errors: Dict[str, float], keys) -> None:
    print(f"  {what}: " + " ".join(f"{k} {errors[k]:.1e}" for k in keys if k in errors), flush=True)
    for key in keys:
        test.assertIn(key, errors, f"{what}: no {key} to compare")
        test.assertLessEqual(errors[key], TOLERANCE, f"{what}: {key} max |Δ| {errors[key]:.3e} > {TOLERANCE}")


class ReferencesTest(unittest.TestCase):
    """One test per fixture model (added below), one subTest per reference case."""

    def check_model(self, stem: str) -> None:
        reason = not_runnable(stem)
        if reason:
            self.skipTest(reason)
        model, graph = scripted_graph(stem)
        spin = is_spin(model_dict(stem))
        keys = KEYS + (("force_mag",) if spin else ())
        reference = R.load_reference(stem)
        self.assertEqual(list(model.type_map)[: len(reference["type_map"])], reference["type_map"])
        self.assertAlmostEqual(model.rcut, reference["rcut"], places=12)
        for name, case in reference["cases"].items():
            with self.subTest(case=name):
                result = R.evaluate(graph, case, model.rcut, spin=spin)
                present = tuple(k for k in keys if case.get(k) is not None)
                check_errors(self, f"{stem}/{name}", R.max_errors(result, case), present)
        # The with-comm graph of the same model (exporters write both): it scripts, and with a
        # self-exchange plan (every ghost row sent from its owner) it reproduces deepmd-kit as well.
        if spin:
            from deepmd.models.spin import SpinWithCommGraph
            comm = torch.jit.script(SpinWithCommGraph(copy.deepcopy(model)))
        else:
            comm = torch.jit.script(WithCommGraph(copy.deepcopy(model)))
        for name, case in reference["cases"].items():
            with self.subTest(case=name, graph="with-comm"):
                result = R.evaluate(SelfExchange(comm), case, model.rcut, spin=spin)
                present = tuple(k for k in keys if case.get(k) is not None)
                check_errors(self, f"{stem}/{name} with-comm", R.max_errors(result, case), present)


def _add_model_tests() -> None:
    try:
        stems = R.model_stems()
    except FileNotFoundError as e:  # reported by the test below instead of at import
        stems = []
        print(e)
    for stem in stems:
        setattr(ReferencesTest, "test_" + re.sub(r"\W", "_", stem), lambda self, stem=stem: self.check_model(stem))


_add_model_tests()


class FixturesPresentTest(unittest.TestCase):
    def test_fixtures_found(self):
        self.assertTrue(R.model_stems(), "no fixture models")
        for stem in R.model_stems():
            self.assertTrue(os.path.exists(os.path.join(R.fixtures_dir(), "references", stem + ".json")), stem)

    def test_se_e2_a_is_registered(self):
        self.assertIs(build.DESCRIPTORS["se_e2_a"], build.DESCRIPTORS["se_a"])


def _tolerance(stated: str, expected: np.ndarray) -> np.ndarray:
    """deepmd-kit's tolerance for a hard-coded entry (never below 1e-10), per element."""
    rel = re.search(r"rel\s*([0-9.eE+-]+)", stated)
    if rel or stated.strip() == "pytest.approx":
        # pytest.approx: rel 1e-6 (default) plus abs 1e-12.
        return np.maximum(TOLERANCE, float(rel.group(1) if rel else 1e-6) * np.abs(expected) + 1e-12)
    number = re.match(r"\s*([0-9.]+e-?[0-9]+)", stated)
    if number:
        return np.full(expected.shape, max(TOLERANCE, float(number.group(1))))
    # "see notes" / "see source/tests/infer/test_models.py": deepmd-kit's default_places = 7
    # (assert_almost_equal: |Δ| < 1.5e-7).
    return np.full(expected.shape, 1.5e-7)


class HardcodedNumbersTest(unittest.TestCase):
    """deepmd-kit's hard-coded test numbers for the models this package runs."""

    def test_hardcoded(self):
        with open(os.path.join(R.fixtures_dir(), "references", "deepmd_kit_hardcoded.json")) as f:
            entries = json.load(f)["entries"]
        checked = 0
        for i, entry in enumerate(entries):
            stem = os.path.splitext(os.path.basename(entry["model"]))[0]
            if not_runnable(stem):
                continue
            with self.subTest(entry=i, model=stem, case=entry["case"]):
                model, graph = scripted_graph(stem)
                result = R.evaluate(graph, entry["inputs"], model.rcut, spin=is_spin(model_dict(stem)))
                wanted = dict(entry.get("derived") or {})
                wanted.update(entry["expected"])
                worst = []
                for key, value in wanted.items():
                    expected = np.asarray(value, dtype=np.float64).reshape(-1)
                    diff = np.abs(result[key].reshape(-1) - expected)
                    tol = _tolerance(entry["test_tolerance_in_deepmd_kit"], expected)
                    worst.append(f"{key} {diff.max():.1e}")
                    self.assertTrue(np.all(diff <= tol), f"{stem} {entry['case']}: {key} max |Δ| {diff.max():.3e} "
                                    f"beyond deepmd-kit's tolerance {entry['test_tolerance_in_deepmd_kit']!r}")
                print(f"  hardcoded {stem} / {entry['case']}: {' '.join(worst)}", flush=True)
                checked += 1
        print(f"  {checked} hard-coded entries checked", flush=True)
        self.assertGreater(checked, 0)


class UnsupportedModelTest(unittest.TestCase):
    """Models this package cannot run exactly raise UnsupportedModel (and nothing else)."""

    def base(self) -> dict:
        return copy.deepcopy(model_dict("se_e2_a_small"))

    def assert_unsupported(self, node: dict, words: str) -> None:
        with self.assertRaises(UnsupportedModel) as caught:
            build.model_from_dict(node)
        self.assertIn(words, str(caught.exception))

    def test_unknown_descriptor_type(self):
        node = self.base()
        node["descriptor"]["type"] = "se_e3"
        self.assert_unsupported(node, "se_e2_a")  # the message lists the supported types

    def test_future_versions(self):
        for path in ([], ["descriptor"], ["fitting"], ["descriptor", "embeddings"]):
            node = self.base()
            target = node
            for key in path:
                target = target[key]
            target["@version"] = 99
            with self.subTest(path=path):
                self.assert_unsupported(node, "@version 99")

    def test_compressed_descriptor(self):
        node = self.base()
        node["descriptor"]["@version"] = 3
        node["descriptor"]["compress"] = {"@variables": {"compress_data": [], "compress_info": []}}
        self.assert_unsupported(node, "compressed")

    def test_other_model_types(self):
        for kind in ("zbl", "linear_ener", "pairtab"):
            node = self.base()
            node["type"] = kind
            with self.subTest(kind=kind):
                self.assert_unsupported(node, kind)

    def test_other_fitting_types(self):
        node = self.base()
        node["fitting"]["type"] = "dipole"
        self.assert_unsupported(node, "dipole")

    def test_unknown_option(self):
        node = self.base()
        node["fitting"]["some_new_option"] = True
        self.assert_unsupported(node, "some_new_option")

    def test_training_only_refusals(self):
        node = self.base()
        node["fitting"]["tot_ener_zero"] = True
        self.assert_unsupported(node, "tot_ener_zero")


if __name__ == "__main__":
    unittest_main.run()
