"""The registry (registry.bzl) lists every model the project ships or is checked against: each deepmd-kit
fixture model (@deepmd_kit_fixtures//:models) and each deepmd-kit input of examples/models.

    registry_test.py OPS_LIBRARY REGISTRY.json EXAMPLES.json EXAMPLES_DIR FIXTURE_MODELS_DIR
"""
import json
import os
import sys
import unittest

from tests import unittest_main

ARGS = []


class RegistryTest(unittest.TestCase):
    def setUp(self):
        with open(ARGS[0]) as f:
            self.models = json.load(f)
        with open(ARGS[1]) as f:
            self.examples = json.load(f)

    def test_every_fixture_is_registered(self):
        fixtures = sorted(f for f in os.listdir(ARGS[3]) if f.endswith((".dp", ".yaml", ".yml")))
        self.assertTrue(fixtures, "no fixture models found")
        registered = sorted(entry["source"] for entry in self.models.values())
        self.assertEqual(fixtures, registered, "add the missing fixture models to tests/registry/registry.bzl")

    def test_every_example_is_registered(self):
        inputs = sorted(f for f in os.listdir(ARGS[2]) if f.endswith(".json"))
        self.assertTrue(inputs, "no example inputs found")
        registered = sorted(entry["input"] for entry in self.examples.values())
        self.assertEqual(inputs, registered, "add the missing examples/models inputs to tests/registry/registry.bzl")

    def test_entries_are_complete(self):
        for name, entry in self.models.items():
            self.assertEqual(sorted(entry), ["lammps", "precision", "source", "spin"], name)
            self.assertIn(entry["precision"], ("float64", "float32"), name)
        for name, entry in self.examples.items():
            self.assertIsInstance(entry["seed"], int, name)


if __name__ == "__main__":
    ARGS[:] = [os.path.abspath(a) for a in sys.argv[2:6]]
    unittest_main.run(extra=4)
