"""deepmd_kernels::repformer_attention (deepmd/kernels) alone against a dense torch evaluation of the same
formula (deepmd-kit's Atten2Map and Atten2MultiHeadApply between their linears, over all nnei slots, padded
ones included, as the padded formula computes them): forward and gradients w.r.t. q, k, v, h2 and sw (at real
slots; the op gives exactly zero at padded ones) of a random weighted sum of the output, float64 to 1e-12 /
1e-11 and float32 to 1e-5 (relative to the largest reference value, or to the case's largest one where a
reference is identically zero), smooth and non-smooth, with and without the gate, 1, 2 and 4 heads, key and
value widths that differ (5, 3) and equal (32, 32), and shifts other than 20; sizes with no slot and one,
centres without real neighbours and with exactly one, lists with holes, a real slot whose switch is exactly
zero, switches at and near 1; NaN in every padded slot's inputs reaches no output and no gradient (padded rows
of out and of every gradient are exactly zero); torch.autograd.gradcheck in float64; non-contiguous inputs; a
double backward is refused; bad masks, shapes, head counts and dtypes are refused; the op runs inside
TorchScript.
Usage: repformer_attention_test.py OPS_LIBRARY."""

import math
import os
import unittest

import torch

from tests import unittest_main

ORDER = ["q", "k", "v", "h2", "sw", "mask"]
DIFFERENTIABLE = ["q", "k", "v", "h2", "sw"]
SHIFT = 20.0


def inputs(nb, nnei, nh, nd, nv, dtype, seed, sw_one=False):
    """Random inputs; the mask has holes anywhere, centre 0 has no real neighbour, centre 1 exactly one (the
    last slot, behind holes), centre 2 no padded slot, centre 3 a real slot whose switch is exactly zero,
    centre 4 switches at and just below 1 (every real switch exactly 1 with sw_one). Padded slots hold
    random values: nothing may read them."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    real = torch.rand(nb, nnei, generator=g) > 0.35
    if nb > 0 and nnei > 0:
        real[0] = False
    if nb > 1 and nnei > 0:
        real[1] = False
        real[1, nnei - 1] = True
    if nb > 2:
        real[2] = True
    sw = 0.05 + 0.95 * torch.rand(nb, nnei, generator=g, dtype=torch.float64)
    if nb > 3 and nnei > 1:
        real[3, 1] = True  # real though its switch rounded to zero at the cutoff
        sw[3, 1] = 0.0
    if nb > 4 and nnei > 0:
        real[4, 0] = True
        sw[4] = 1.0 - 1e-9 * torch.rand(nnei, generator=g, dtype=torch.float64)
        sw[4, 0] = 1.0
    if sw_one:
        sw = torch.ones_like(sw)
    sw = torch.where(real, sw, torch.rand(nb, nnei, generator=g, dtype=torch.float64))
    return dict(q=r(nb, nnei, nh * nd), k=r(nb, nnei, nh * nd), v=r(nb, nnei, nh * nv), h2=r(nb, nnei, 3, scale=0.6),
                sw=sw.to(dtype), mask=real)


def with_nan_padding(t):
    """t with NaN in every padded slot's q, k, v, h2 and sw."""
    pad = ~t["mask"]
    out = dict(t)
    for name in DIFFERENTIABLE:
        x = t[name]
        p = pad.view(pad.shape + (1,) * (x.dim() - 2))
        out[name] = torch.where(p, torch.full_like(x, float("nan")), x)
    return out


def op(t, nh, gate, smooth, shift=SHIFT):
    return torch.ops.deepmd_kernels.repformer_attention(*[t[k] for k in ORDER], nh, gate, smooth, shift)


def dense(t, nh, gate, smooth, shift=SHIFT):
    """The padded formula over all nnei slots, padded slots' inputs replaced by zeros first."""
    mask = t["mask"]
    nb, nnei = mask.shape
    clean = {}
    for name in DIFFERENTIABLE:
        x = t[name]
        clean[name] = torch.where(mask.view(mask.shape + (1,) * (x.dim() - 2)), x, torch.zeros_like(x))
    nd = t["q"].shape[-1] // nh
    nv = t["v"].shape[-1] // nh

    def heads(x, width):  # [nb, nnei, nh * width] -> [nb, nh, nnei, width]
        return x.view(nb, nnei, nh, width).permute(0, 2, 1, 3)

    q, k, v = heads(clean["q"], nd), heads(clean["k"], nd), heads(clean["v"], nv)
    h2, sw = clean["h2"], clean["sw"]
    w = torch.matmul(q, k.transpose(-1, -2))  # [nb, nh, nnei, nnei]
    hh = torch.matmul(h2, h2.transpose(-1, -2)).unsqueeze(1)  # [nb, 1, nnei, nnei]
    w = w * hh / math.sqrt(nd) if gate else w / math.sqrt(nd)
    if smooth:
        s = (sw.unsqueeze(-1) * sw.unsqueeze(-2)).unsqueeze(1)
        p = torch.softmax(w * s + shift * (s - 1.0), dim=-1)
        a = p * s * hh / math.sqrt(3.0)
    else:
        key = mask.view(nb, 1, 1, nnei)
        x = torch.where(key, w, torch.full_like(w, -math.inf))
        x = torch.where(key.any(-1, keepdim=True), x, torch.zeros_like(x))  # no valid key: kept finite
        p = torch.softmax(x, dim=-1)
        pair = (mask.unsqueeze(-1) & mask.unsqueeze(-2)).unsqueeze(1)
        a = torch.where(pair, p, torch.zeros_like(p)) * hh / math.sqrt(3.0)
    out = torch.matmul(a, v)  # [nb, nh, nnei, nv]
    return out.permute(0, 2, 1, 3).reshape(nb, nnei, nh * nv)


def rel(x, ref, scale=1.0):
    """Largest difference over the largest reference value; over `scale` (the case's largest reference value
    of any kind) where the reference is identically zero: d/dq and d/dk of a centre whose only key is itself
    (a single-key softmax is exactly 1) are zero in exact arithmetic, a few ulps in the kernel's FMAs."""
    if not ref.numel():
        return 0.0
    return float((x.double() - ref.double()).abs().max()) / (float(ref.double().abs().max()) or scale)


def grads(f, t, g_out):
    leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
    out = f(leaves)
    got = torch.autograd.grad([(out * g_out).sum()], [leaves[k] for k in DIFFERENTIABLE], allow_unused=True)
    return out.detach(), [torch.zeros_like(leaves[k]) if x is None else x for k, x in zip(DIFFERENTIABLE, got)]


# (nb, nnei, nh, nd, nv)
SIZES = [(6, 7, 2, 5, 3), (3, 0, 2, 5, 3), (4, 1, 1, 5, 3), (6, 12, 4, 32, 32), (5, 9, 1, 8, 16),
         (6, 6, 4, 5, 3), (5, 20, 2, 32, 32), (6, 5, 2, 1, 1), (37, 15, 2, 5, 3)]
MODES = [(gate, smooth) for gate in (True, False) for smooth in (True, False)]


class RepformerAttentionTest(unittest.TestCase):
    worst = {}

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

    def compare(self, dtype, tol, gtol, size, gate, smooth, shift=SHIFT, seed=0, sw_one=False):
        nb, nnei, nh, nd, nv = size
        t = inputs(nb, nnei, nh, nd, nv, dtype, seed, sw_one=sw_one)
        g_out = torch.randn(nb, nnei, nh * nv, generator=torch.Generator().manual_seed(seed + 1),
                            dtype=torch.float64).to(dtype)
        # the kernel sees NaN in every padded slot; the float64 reference from the same real inputs is the truth
        out, gk = grads(lambda x: op(x, nh, gate, smooth, shift), with_nan_padding(t), g_out)
        t64 = {k: v.double() if v.is_floating_point() else v for k, v in t.items()}
        rout, gr = grads(lambda x: dense(x, nh, gate, smooth, shift), t64, g_out.double())
        where = f"{dtype} {size} gate={gate} smooth={smooth} shift={shift} sw_one={sw_one}"
        self.assertEqual(out.dtype, dtype)
        self.assertEqual(out.shape, rout.shape)
        pad = ~t["mask"]
        self.assertTrue(bool((out[pad] == 0).all()), where + " padded rows of out")
        self.assertFalse(bool(out.isnan().any()), where + " NaN in out")
        scale = max([float(y.abs().max()) if y.numel() else 0.0 for y in [rout] + gr] + [1e-300])
        err = rel(out, rout, scale)
        self.record(f"{dtype} out", err)
        self.assertLessEqual(err, tol, where + " out")
        for name, x, y in zip(DIFFERENTIABLE, gk, gr):
            self.assertTrue(bool((x[pad] == 0).all()), f"{where} padded rows of d/d{name}")
            if name == "sw":  # padded switches are structural (weight x mask): compare on real slots
                x, y = x[~pad], y[~pad]
            err = rel(x, y, scale)
            self.record(f"{dtype} d/d{name}", err)
            self.assertLessEqual(err, gtol, f"{where} d/d{name}")

    def test_float64(self):
        for size in SIZES:
            for gate, smooth in MODES:
                self.compare(torch.float64, 1e-12, 1e-11, size, gate, smooth)

    def test_float32(self):
        for size in SIZES:
            for gate, smooth in MODES:
                self.compare(torch.float32, 1e-5, 1e-5, size, gate, smooth)

    def test_shift_and_switches(self):
        for gate, smooth in MODES:
            for shift in (0.0, 3.5, 20.0):
                self.compare(torch.float64, 1e-12, 1e-11, (6, 8, 2, 5, 3), gate, smooth, shift=shift, seed=4)
            # every real switch exactly 1: the smooth map differs from the plain one by the padded terms only
            self.compare(torch.float64, 1e-12, 1e-11, (6, 8, 2, 5, 3), gate, smooth, seed=5, sw_one=True)

    def test_many_seeds(self):
        for seed in range(10, 20):
            for gate, smooth in MODES:
                self.compare(torch.float64, 1e-12, 1e-11, (7, 10, 2, 4, 6), gate, smooth, seed=seed)

    def test_padded_slots(self):
        """The padded slots' inputs are never read: any values there (NaN included) give bitwise the same out
        and gradients, exactly zero at padded rows."""
        t = inputs(6, 8, 2, 5, 3, torch.float64, 6)
        pad = ~t["mask"]
        self.assertTrue(bool(pad.any()) and bool(t["mask"].any()))
        g_out = torch.randn(6, 8, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        zeroed = dict(t)
        for name in DIFFERENTIABLE:
            x = t[name]
            zeroed[name] = torch.where(pad.view(pad.shape + (1,) * (x.dim() - 2)), torch.zeros_like(x), x)
        for gate, smooth in MODES:
            f = lambda x: op(x, 2, gate, smooth)  # noqa: E731
            runs = [grads(f, y, g_out) for y in (t, zeroed, with_nan_padding(t))]
            for out, gk in runs[1:]:
                self.assertTrue(torch.equal(out, runs[0][0]), f"gate={gate} smooth={smooth}")
                for name, x, y in zip(DIFFERENTIABLE, gk, runs[0][1]):
                    self.assertTrue(torch.equal(x, y), f"gate={gate} smooth={smooth} d/d{name}")
            self.assertEqual(float(runs[0][0][pad].abs().max()), 0.0)
            for x in runs[0][1]:
                self.assertEqual(float(x[pad].abs().max()), 0.0)

    def test_no_slots(self):
        for smooth in (True, False):
            t = inputs(3, 0, 2, 5, 3, torch.float64, 1)
            leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
            out = op(leaves, 2, True, smooth)
            self.assertEqual(tuple(out.shape), (3, 0, 6))
            got = torch.autograd.grad([out.sum()], [leaves[k] for k in DIFFERENTIABLE])
            for name, x in zip(DIFFERENTIABLE, got):
                self.assertEqual(x.shape, t[name].shape)
            empty = inputs(0, 4, 2, 5, 3, torch.float64, 1)
            self.assertEqual(tuple(op(empty, 2, True, smooth).shape), (0, 4, 6))

    def test_gradcheck(self):
        t = inputs(6, 4, 2, 3, 2, torch.float64, 8)
        for gate, smooth in MODES:
            diff = [t[k].clone().requires_grad_(True) for k in DIFFERENTIABLE]

            def f(q, k, v, h2, sw):
                return torch.ops.deepmd_kernels.repformer_attention(q, k, v, h2, sw, t["mask"], 2, gate, smooth, 2.0)

            self.assertTrue(torch.autograd.gradcheck(f, diff, eps=1e-6, atol=1e-8), f"gate={gate} smooth={smooth}")

    def test_not_twice_differentiable(self):
        t = inputs(3, 4, 2, 3, 2, torch.float64, 1)
        leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
        out = op(leaves, 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            gq, = torch.autograd.grad([(out * out).sum()], [leaves["q"]], create_graph=True)
            torch.autograd.grad([gq.sum()], [leaves["q"]])

    def test_errors(self):
        t = inputs(3, 4, 2, 4, 2, torch.float64, 1)
        with self.assertRaisesRegex(RuntimeError, "mask must be bool"):
            op(dict(t, mask=t["mask"].double()), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "mask must be bool"):
            op(dict(t, mask=t["mask"][:, :3]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "k must have shape"):
            op(dict(t, k=t["k"][:, :, :6]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "k must have shape"):
            op(dict(t, k=t["k"][:2]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "must be 3-d"):
            op(dict(t, q=t["q"][0]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "v must have shape"):
            op(dict(t, v=t["v"][:, :3]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "h2 must have shape"):
            op(dict(t, h2=t["h2"][..., :2]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "sw must have shape"):
            op(dict(t, sw=t["sw"][:, :3]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "nhead=3 must divide"):
            op(t, 3, True, True)  # widths 8 and 4
        with self.assertRaisesRegex(RuntimeError, "nhead=0 must divide"):
            op(t, 0, True, True)
        with self.assertRaisesRegex(RuntimeError, "nhead=4 must divide"):
            op(dict(t, v=t["v"][..., :3]), 4, True, True)
        with self.assertRaisesRegex(RuntimeError, "sw is Float, q is Double"):
            op(dict(t, sw=t["sw"].float()), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "v is Float, q is Double"):
            op(dict(t, v=t["v"].float()), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "float32 or float64 only"):
            op({k: x.half() if x.is_floating_point() else x for k, x in t.items()}, 2, True, True)

    def test_non_contiguous(self):
        t = inputs(5, 6, 2, 4, 3, torch.float64, 9)
        t2 = dict(t, q=torch.cat([t["q"], t["q"]], dim=2)[..., :8],
                  h2=t["h2"].transpose(1, 2).contiguous().transpose(1, 2), mask=t["mask"].t().contiguous().t(),
                  sw=t["sw"].t().contiguous().t())
        self.assertFalse(any(t2[k].is_contiguous() for k in ("q", "h2", "mask", "sw")))
        for gate, smooth in MODES:
            self.assertTrue(torch.equal(op(t, 2, gate, smooth), op(t2, 2, gate, smooth)))

    def test_scripted(self):
        @torch.jit.script
        def f(q, k, v, h2, sw, mask):
            return torch.ops.deepmd_kernels.repformer_attention(q, k, v, h2, sw, mask, 2, True, True, 20.0)

        t = inputs(4, 5, 2, 4, 3, torch.float64, 2)
        self.assertLessEqual(rel(f(*[t[k] for k in ORDER]), dense(t, 2, True, True)), 1e-12)


if __name__ == "__main__":
    unittest_main.run()
