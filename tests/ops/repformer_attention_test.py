"""deepmd_kernels::repformer_attention (deepmd/kernels) alone against a dense torch evaluation of the same
formula (deepmd-kit's Atten2Map and Atten2MultiHeadApply with their linears: the queries, keys and values
projected from g2 through the head-major blocks of wq, wk, wv and their biases, the map over all nnei slots,
padded ones included, as the padded formula computes them, and out = bo + concat_h(o_h) wo): forward and
gradients w.r.t. g2, h2 and sw (at real slots; the op gives exactly zero at padded ones) of a random weighted
sum of the output, float64 to 1e-12 / 1e-11 and float32 to 1e-5 (relative to the largest reference value, or
to the case's largest one where a reference is identically zero), smooth and non-smooth, with and without
the gate, 1, 2 and 4 heads, key and value widths that differ (5, 3) and equal (32, 32), g2 widths 4, 7 and
32, biases zero and nonzero, and shifts other than 20; sizes with no slot and one, no centre, centres
without real neighbours and with exactly one, lists with holes, a real slot whose switch is exactly zero,
switches at and near 1; NaN in every padded slot's g2, h2 and sw reaches no output and no gradient (padded
rows of out are exactly bo, those of every gradient exactly zero; random, zero and NaN padding give bitwise
the same results); torch.autograd.gradcheck in float64 w.r.t. g2, h2 and sw; non-contiguous inputs and
weights; a double backward is refused, and so are weights or biases that require grad; bad masks, shapes,
head counts and dtypes are refused; the op runs inside TorchScript.
Usage: repformer_attention_test.py OPS_LIBRARY."""

import math
import unittest

import torch

from tests import unittest_main
from tests.ops.kernel_checks import WorstErrors, real_mask, rel

ORDER = ["g2", "h2", "sw", "mask", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"]
DIFFERENTIABLE = ["g2", "h2", "sw"]  # also the per-slot inputs: the ones padded slots have
WEIGHTS = ["wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"]
SHIFT = 20.0


def inputs(nb, nnei, ng2, nh, nd, nv, dtype, seed, sw_one=False, bias=True):
    """Random inputs; the mask has holes anywhere, centre 0 has no real neighbour, centre 1 exactly one (the
    last slot, behind holes), centre 2 no padded slot, centre 3 a real slot whose switch is exactly zero,
    centre 4 switches at and just below 1 (every real switch exactly 1 with sw_one). Padded slots hold
    random values: nothing may read them. The weights are scaled to keep q, k, v and out of order 1; the
    biases are random, or exactly zero without `bias`."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    real = real_mask(nb, nnei, g)
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
    t = dict(g2=r(nb, nnei, ng2), h2=r(nb, nnei, 3, scale=0.6), sw=sw.to(dtype), mask=real)
    wscale, oscale = 1.0 / math.sqrt(ng2), 1.0 / math.sqrt(nh * nv)
    t.update(wq=r(ng2, nh * nd, scale=wscale), wk=r(ng2, nh * nd, scale=wscale), wv=r(ng2, nh * nv, scale=wscale),
             wo=r(nh * nv, ng2, scale=oscale))
    bscale = 0.5 if bias else 0.0
    t.update(bq=r(nh * nd, scale=bscale), bk=r(nh * nd, scale=bscale), bv=r(nh * nv, scale=bscale),
             bo=r(ng2, scale=bscale))
    return t


def padded_like(t, fill):
    """t with `fill` (a function of a tensor) in every padded slot's g2, h2 and sw."""
    pad = ~t["mask"]
    out = dict(t)
    for name in DIFFERENTIABLE:
        x = t[name]
        out[name] = torch.where(pad.view(pad.shape + (1,) * (x.dim() - 2)), fill(x), x)
    return out


def with_nan_padding(t):
    """t with NaN in every padded slot's g2, h2 and sw."""
    return padded_like(t, lambda x: torch.full_like(x, float("nan")))


def op(t, nh, gate, smooth, shift=SHIFT):
    return torch.ops.deepmd_kernels.repformer_attention(*[t[k] for k in ORDER], nh, gate, smooth, shift)


def dense(t, nh, gate, smooth, shift=SHIFT):
    """The padded formula over all nnei slots, padded slots' g2, h2 and sw replaced by zeros first: head h's
    q, k, v from g2 through columns h·nd.. of wq, wk and h·nv.. of wv (plus the biases' same entries), the
    map, o_h = A v, out = bo + concat_h(o_h) wo."""
    mask = t["mask"]
    nb, nnei = mask.shape
    clean = padded_like(t, torch.zeros_like)
    nd = t["wq"].shape[-1] // nh
    nv = t["wv"].shape[-1] // nh
    g2, h2, sw = clean["g2"], clean["h2"], clean["sw"]

    def heads(w, b, width):  # g2 [nb, nnei, ng2] -> [nb, nh, nnei, width], head by head
        blocks = [torch.matmul(g2, w[:, h * width:(h + 1) * width]) + b[h * width:(h + 1) * width]
                  for h in range(nh)]
        return torch.stack(blocks, dim=1)

    q, k, v = heads(t["wq"], t["bq"], nd), heads(t["wk"], t["bk"], nd), heads(t["wv"], t["bv"], nv)
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
    o = torch.matmul(a, v)  # [nb, nh, nnei, nv]
    o = torch.cat([o[:, h] for h in range(nh)], dim=-1)  # [nb, nnei, nh * nv], head-major
    return t["bo"] + torch.matmul(o, t["wo"])




def grads(f, t, g_out):
    leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
    out = f(leaves)
    got = torch.autograd.grad([(out * g_out).sum()], [leaves[k] for k in DIFFERENTIABLE], allow_unused=True)
    return out.detach(), [torch.zeros_like(leaves[k]) if x is None else x for k, x in zip(DIFFERENTIABLE, got)]


# (nb, nnei, ng2, nh, nd, nv)
SIZES = [(6, 7, 7, 2, 5, 3), (3, 0, 4, 2, 5, 3), (0, 4, 4, 2, 5, 3), (4, 1, 4, 1, 5, 3), (6, 12, 32, 4, 32, 32),
         (5, 9, 7, 1, 8, 16), (6, 6, 4, 4, 5, 3), (5, 20, 32, 2, 32, 32), (6, 5, 4, 2, 1, 1), (37, 15, 7, 2, 5, 3)]
MODES = [(gate, smooth) for gate in (True, False) for smooth in (True, False)]


class RepformerAttentionTest(WorstErrors, unittest.TestCase):
    def compare(self, dtype, tol, gtol, size, gate, smooth, shift=SHIFT, seed=0, sw_one=False, bias=True):
        nb, nnei, ng2, nh, nd, nv = size
        t = inputs(nb, nnei, ng2, nh, nd, nv, dtype, seed, sw_one=sw_one, bias=bias)
        g_out = torch.randn(nb, nnei, ng2, generator=torch.Generator().manual_seed(seed + 1),
                            dtype=torch.float64).to(dtype)
        # the kernel sees NaN in every padded slot; the float64 reference from the same real inputs is the truth
        out, gk = grads(lambda x: op(x, nh, gate, smooth, shift), with_nan_padding(t), g_out)
        t64 = {k: v.double() if v.is_floating_point() else v for k, v in t.items()}
        rout, gr = grads(lambda x: dense(x, nh, gate, smooth, shift), t64, g_out.double())
        where = f"{dtype} {size} gate={gate} smooth={smooth} shift={shift} sw_one={sw_one} bias={bias}"
        self.assertEqual(out.dtype, dtype)
        self.assertEqual(out.shape, rout.shape)
        pad = ~t["mask"]
        self.assertTrue(bool((out[pad] == t["bo"]).all()), where + " padded rows of out are not bo")
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
                for bias in (True, False):
                    self.compare(torch.float64, 1e-12, 1e-11, size, gate, smooth, bias=bias)

    def test_float32(self):
        for size in SIZES:
            for gate, smooth in MODES:
                for bias in (True, False):
                    self.compare(torch.float32, 1e-5, 1e-5, size, gate, smooth, bias=bias)

    def test_shift_and_switches(self):
        for gate, smooth in MODES:
            for shift in (0.0, 3.5, 20.0):
                self.compare(torch.float64, 1e-12, 1e-11, (6, 8, 7, 2, 5, 3), gate, smooth, shift=shift, seed=4)
            # every real switch exactly 1: the smooth map differs from the plain one by the padded terms only
            self.compare(torch.float64, 1e-12, 1e-11, (6, 8, 7, 2, 5, 3), gate, smooth, seed=5, sw_one=True)

    def test_many_seeds(self):
        for seed in range(10, 20):
            for gate, smooth in MODES:
                self.compare(torch.float64, 1e-12, 1e-11, (7, 10, 6, 2, 4, 6), gate, smooth, seed=seed,
                             bias=seed % 2 == 0)

    def test_padded_slots(self):
        """The padded slots' g2, h2 and sw are never read: any values there (NaN included) give bitwise the
        same out and gradients; padded rows of out are exactly bo, those of the gradients exactly zero."""
        t = inputs(6, 8, 7, 2, 5, 3, torch.float64, 6)
        pad = ~t["mask"]
        self.assertTrue(bool(pad.any()) and bool(t["mask"].any()))
        self.assertTrue(bool((t["bo"] != 0).all()))
        g_out = torch.randn(6, 8, 7, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        zeroed = padded_like(t, torch.zeros_like)
        for gate, smooth in MODES:
            f = lambda x: op(x, 2, gate, smooth)  # noqa: E731
            runs = [grads(f, y, g_out) for y in (t, zeroed, with_nan_padding(t))]
            for out, gk in runs[1:]:
                self.assertTrue(torch.equal(out, runs[0][0]), f"gate={gate} smooth={smooth}")
                for name, x, y in zip(DIFFERENTIABLE, gk, runs[0][1]):
                    self.assertTrue(torch.equal(x, y), f"gate={gate} smooth={smooth} d/d{name}")
            self.assertTrue(torch.equal(runs[0][0][pad], t["bo"].expand(int(pad.sum()), 7)))
            for x in runs[0][1]:
                self.assertEqual(float(x[pad].abs().max()), 0.0)

    def test_no_slots(self):
        for smooth in (True, False):
            t = inputs(3, 0, 4, 2, 5, 3, torch.float64, 1)
            leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
            out = op(leaves, 2, True, smooth)
            self.assertEqual(tuple(out.shape), (3, 0, 4))
            got = torch.autograd.grad([out.sum()], [leaves[k] for k in DIFFERENTIABLE])
            for name, x in zip(DIFFERENTIABLE, got):
                self.assertEqual(x.shape, t[name].shape)
            empty = inputs(0, 4, 4, 2, 5, 3, torch.float64, 1)
            self.assertEqual(tuple(op(empty, 2, True, smooth).shape), (0, 4, 4))

    def test_gradcheck(self):
        t = inputs(6, 4, 3, 2, 3, 2, torch.float64, 8)
        for gate, smooth in MODES:
            diff = [t[k].clone().requires_grad_(True) for k in DIFFERENTIABLE]

            def f(g2, h2, sw):
                return torch.ops.deepmd_kernels.repformer_attention(
                    g2, h2, sw, t["mask"], *[t[k] for k in WEIGHTS], 2, gate, smooth, 2.0)

            self.assertTrue(torch.autograd.gradcheck(f, diff, eps=1e-6, atol=1e-8), f"gate={gate} smooth={smooth}")

    def test_not_twice_differentiable(self):
        t = inputs(3, 4, 4, 2, 3, 2, torch.float64, 1)
        leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
        out = op(leaves, 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            gg, = torch.autograd.grad([(out * out).sum()], [leaves["g2"]], create_graph=True)
            torch.autograd.grad([gg.sum()], [leaves["g2"]])

    def test_weights_requiring_grad(self):
        """An inference kernel: no weight or bias may require grad, whether or not g2 does."""
        t = inputs(3, 4, 4, 2, 3, 2, torch.float64, 1)
        for name in WEIGHTS:
            for g2_grad in (False, True):
                bad = dict(t, g2=t["g2"].clone().requires_grad_(g2_grad), **{name: t[name].clone().requires_grad_()})
                with self.assertRaisesRegex(RuntimeError, "inference kernel"):
                    op(bad, 2, True, True)

    def test_errors(self):
        t = inputs(3, 4, 5, 2, 4, 2, torch.float64, 1)  # ng2 5, widths 8 (queries, keys) and 4 (values)
        with self.assertRaisesRegex(RuntimeError, "mask must be bool"):
            op(dict(t, mask=t["mask"].double()), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "mask must be bool"):
            op(dict(t, mask=t["mask"][:, :3]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, r"g2 must be \[nb, nnei, ng2\]"):
            op(dict(t, g2=t["g2"][0]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "h2 must have shape"):
            op(dict(t, h2=t["h2"][..., :2]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "h2 must have shape"):
            op(dict(t, h2=t["h2"][:2]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "sw must have shape"):
            op(dict(t, sw=t["sw"][:, :3]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "must be matrices"):
            op(dict(t, wq=t["wq"].unsqueeze(0)), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "must be matrices"):
            op(dict(t, wv=t["wv"].reshape(-1)), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "wq must have shape"):
            op(dict(t, wq=t["wq"][:4]), 2, True, True)  # rows != ng2
        with self.assertRaisesRegex(RuntimeError, "wk must have shape"):
            op(dict(t, wk=t["wk"][:, :6]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "wk must have shape"):
            op(dict(t, wk=t["wk"][:4]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "wv must have shape"):
            op(dict(t, wv=t["wv"][:3]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "wo must have shape"):
            op(dict(t, wo=t["wo"][:2]), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "wo must have shape"):
            op(dict(t, wo=t["wo"].t()), 2, True, True)
        for name, width in (("bq", 8), ("bk", 8), ("bv", 4), ("bo", 5)):
            with self.assertRaisesRegex(RuntimeError, f"{name} must have shape"):
                op(dict(t, **{name: t[name][:width - 1]}), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "nhead=3 must divide"):
            op(t, 3, True, True)  # widths 8 and 4
        with self.assertRaisesRegex(RuntimeError, "nhead=0 must divide"):
            op(t, 0, True, True)
        with self.assertRaisesRegex(RuntimeError, "nhead=4 must divide"):
            op(dict(t, wv=t["wv"][:, :3]), 4, True, True)
        with self.assertRaisesRegex(RuntimeError, "sw is Float, g2 is Double"):
            op(dict(t, sw=t["sw"].float()), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "wv is Float, g2 is Double"):
            op(dict(t, wv=t["wv"].float()), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "bo is Float, g2 is Double"):
            op(dict(t, bo=t["bo"].float()), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "wq is Double, g2 is Float"):
            op(dict(t, g2=t["g2"].float(), h2=t["h2"].float(), sw=t["sw"].float()), 2, True, True)
        with self.assertRaisesRegex(RuntimeError, "float32 or float64 only"):
            op({k: x.half() if x.is_floating_point() else x for k, x in t.items()}, 2, True, True)

    def test_non_contiguous(self):
        t = inputs(5, 6, 7, 2, 4, 3, torch.float64, 9)
        t2 = dict(t, g2=torch.cat([t["g2"], t["g2"]], dim=2)[..., :7],
                  h2=t["h2"].transpose(1, 2).contiguous().transpose(1, 2), mask=t["mask"].t().contiguous().t(),
                  sw=t["sw"].t().contiguous().t(), wq=t["wq"].t().contiguous().t(), wo=t["wo"].t().contiguous().t(),
                  bk=torch.stack([t["bk"], t["bk"]], dim=1)[:, 0])
        self.assertFalse(any(t2[k].is_contiguous() for k in ("g2", "h2", "mask", "sw", "wq", "wo", "bk")))
        for gate, smooth in MODES:
            self.assertTrue(torch.equal(op(t, 2, gate, smooth), op(t2, 2, gate, smooth)))

    def test_scripted(self):
        @torch.jit.script
        def f(g2, h2, sw, mask, wq, bq, wk, bk, wv, bv, wo, bo):
            return torch.ops.deepmd_kernels.repformer_attention(g2, h2, sw, mask, wq, bq, wk, bk, wv, bv, wo, bo, 2,
                                                                True, True, 20.0)

        t = inputs(4, 5, 7, 2, 4, 3, torch.float64, 2)
        self.assertLessEqual(rel(f(*[t[k] for k in ORDER]), dense(t, 2, True, True)), 1e-12)


if __name__ == "__main__":
    unittest_main.run()
