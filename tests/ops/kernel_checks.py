"""What the tests of the fused kernels alone (tests/ops/*_test.py of deepmd_kernels ops) share: the error
measure against a dense reference, and a test-case mixin that reports the largest errors seen and checks
which instruction set the kernels run (DEEPMD_KERNELS_ISA=baseline caps it: the *_baseline_test targets)."""

import os

import torch


def rel(x, ref, scale=1.0):
    """Largest difference over the largest reference value; over `scale` (the case's largest reference value
    of any kind) where the reference is identically zero (no real slot, say, or a gradient that cancels in
    exact arithmetic and is a few ulps in the kernel's FMAs)."""
    if not ref.numel():
        return 0.0
    return float((x.double() - ref.double()).abs().max()) / (float(ref.double().abs().max()) or scale)


def real_mask(nb, nnei, g):
    """Real slots [nb, nnei] with holes anywhere (a third padded), drawn from generator g: centre 0 has no
    real slot, centre 1 exactly one (the last, behind holes), centre 2 no padded one."""
    real = torch.rand(nb, nnei, generator=g) > 0.35
    if nb > 0 and nnei > 0:
        real[0] = False
    if nb > 1 and nnei > 0:
        real[1] = False
        real[1, nnei - 1] = True
    if nb > 2:
        real[2] = True
    return real


class WorstErrors:
    """Mixin for a unittest.TestCase: record(key, err) keeps the largest error per key, printed once the
    class's tests have run; test_instruction_set checks and prints the kernels' instruction set."""

    worst: dict

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.worst = {}

    @classmethod
    def tearDownClass(cls):
        for key, err in sorted(cls.worst.items()):
            print(f"largest relative error {key}: {err:.2e}")

    def record(self, key, err):
        self.worst[key] = max(self.worst.get(key, 0.0), err)

    def test_instruction_set(self):
        isa = torch.ops.deepmd_kernels.instruction_set()
        if os.environ.get("DEEPMD_KERNELS_ISA") == "baseline":
            self.assertEqual(isa, "baseline (SSE2)")
        else:
            self.assertIn(isa, ("AVX-512", "AVX2+FMA", "baseline (SSE2)"))
        print("kernels' instruction set:", isa)
