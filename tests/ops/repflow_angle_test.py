"""deepmd_kernels::repflow_angle (deepmd/kernels) alone against a dense torch evaluation of the same
formula (the padded one deepmd/dpkit/repflow_layer.py computes), the op's angles packed to real pairs:
forward and gradients, float64 to 1e-12 and float32 to 1e-5 (relative to the largest reference value),
every activation the kernel implements, sizes with no angle slots, one slot, centres without angle
neighbours, masks with holes and real slots whose switch is zero; torch.autograd.gradcheck in float64;
a double backward is refused; a packed angle of the wrong length is refused; the op runs inside
TorchScript.
Usage: repflow_angle_test.py OPS_LIBRARY."""

import math
import unittest

import torch

from tests import unittest_main
from tests.ops.kernel_checks import WorstErrors
from deepmd.dpkit.network import Activation

ACTIVATIONS = ["none", "tanh", "silu", "silut:3.0", "silut:10.0"]


def inputs(nb, nang, a, e, dtype, seed, holes=True, empty_centres=True):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    sw = torch.rand(nb, nang, generator=g, dtype=torch.float64)
    real = torch.ones(nb, nang, dtype=torch.bool)
    if holes and nang > 2:
        real &= torch.rand(nb, nang, generator=g) > 0.3  # holes anywhere in the list
    if empty_centres and nb > 1:
        real[0] = False  # a centre without angle neighbours
    if nang > 0 and nb > 2:
        real[1, 1:] = False  # one real slot
        real[1, 0] = True
    sw = torch.where(real, 0.1 + sw, torch.zeros_like(sw))
    if nang > 1 and nb > 3:
        real[3, 1] = True  # a real slot whose switch is zero (rounding at the cutoff): still real
        sw[3, 1] = 0.0
    sw = sw.to(dtype)
    return dict(angle=r(nb, nang, nang, a), a_mask=real, a_sw=sw, p_edge=r(nb, nang, e, scale=2.0), q_edge=r(nb, nang, e),
                w_edge=r(a, e, scale=1.0 / math.sqrt(max(a, 1))), p_angle=r(nb, nang, a, scale=2.0),
                q_angle=r(nb, nang, a), w_angle=r(a, a, scale=1.0 / math.sqrt(max(a, 1))),
                residual=r(a, scale=0.3))


ORDER = ["angle", "a_mask", "a_sw", "p_edge", "q_edge", "w_edge", "p_angle", "q_angle", "w_angle", "residual"]


def scalars(act: Activation, alpha: float, a_scale: float):
    return [alpha, act.kind, act.threshold, act.slope, act.const, a_scale]


def pair_mask(real):
    return real.unsqueeze(2) & real.unsqueeze(1)


def op(t, act, alpha, a_scale):
    """The op on the real pairs of t's padded angle (packed as deepmd/dpkit/repflow_layer.pack_angles);
    angle_new returned padded again, its padded pairs zero."""
    pair = pair_mask(t["a_mask"])
    x = dict(t, angle=t["angle"][pair])
    red, new = torch.ops.deepmd_kernels.repflow_angle(*[x[k] for k in ORDER], *scalars(act, alpha, a_scale))
    return red, torch.zeros_like(t["angle"]).masked_scatter(pair.unsqueeze(-1), new)


def dense(t, act, alpha, a_scale):
    """The padded formula, padded pairs of angle_new zero (nothing of them is kept)."""
    angle, sw = t["angle"], t["a_sw"]
    u = act(torch.matmul(angle, t["w_edge"]) + t["p_edge"].unsqueeze(2) + t["q_edge"].unsqueeze(1))
    reduced = torch.matmul(sw.unsqueeze(1).unsqueeze(1), u).squeeze(2) * sw.unsqueeze(-1) / a_scale
    v = act(torch.matmul(angle, t["w_angle"]) + t["p_angle"].unsqueeze(2) + t["q_angle"].unsqueeze(1))
    angle_new = torch.where(pair_mask(t["a_mask"]).unsqueeze(-1), alpha * angle + t["residual"] * v,
                            torch.zeros_like(angle))
    return reduced, angle_new


def rel(x, ref):
    return float((x.double() - ref.double()).abs().max()) / max(float(ref.double().abs().max()), 1e-300) \
        if ref.numel() else 0.0


DIFFERENTIABLE = ["angle", "a_sw", "p_edge", "q_edge", "p_angle", "q_angle"]


def grads(f, t, g_red, g_new):
    leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
    red, new = f(leaves)
    loss = (red * g_red).sum() + (new * g_new).sum()
    out = torch.autograd.grad([loss], [leaves[k] for k in DIFFERENTIABLE], allow_unused=True)
    return red.detach(), new.detach(), [torch.zeros_like(leaves[k]) if g is None else g
                                        for k, g in zip(DIFFERENTIABLE, out)]


class RepflowAngleTest(WorstErrors, unittest.TestCase):
    SIZES = [(5, 7, 4, 6), (3, 0, 4, 6), (3, 1, 3, 5), (4, 12, 16, 32), (2, 9, 8, 16), (6, 5, 1, 1)]

    def compare(self, dtype, tol, act_name, size, alpha=1.0, seed=0):
        act = Activation(act_name)
        nb, nang, a, e = size
        t = inputs(nb, nang, a, e, dtype, seed)
        a_scale = math.sqrt(30.0)
        g = torch.Generator().manual_seed(seed + 1)
        g_red = torch.randn(nb, nang, e, generator=g, dtype=torch.float64).to(dtype)
        g_new = torch.randn(nb, nang, nang, a, generator=g, dtype=torch.float64).to(dtype)
        red, new, gk = grads(lambda x: op(x, act, alpha, a_scale), t, g_red, g_new)
        # the reference in float64 from the same inputs: the truth for both precisions
        t64 = {k: v.double() if v.is_floating_point() else v for k, v in t.items()}
        rred, rnew, gr = grads(lambda x: dense(x, act, alpha, a_scale), t64, g_red.double(), g_new.double())
        where = f"{dtype} {act_name} {size}"
        self.assertEqual(red.dtype, dtype)
        self.assertLessEqual(rel(red, rred), tol, where + " reduced")
        self.assertLessEqual(rel(new, rnew), tol, where + " angle_new")
        for name, x, y in zip(DIFFERENTIABLE, gk, gr):
            if name == "a_sw":
                # padded slots are structural (the model's switch is weight x mask, its mask constant): the op
                # gives no gradient there, the dense formula does; compare on the real slots.
                real = t["a_mask"]
                self.assertTrue(bool((x[~real] == 0).all()), where)
                x, y = x[real], y[real]
            self.assertLessEqual(rel(x, y), tol, f"{where} d/d{name}")

    def test_float64(self):
        for act in ACTIVATIONS:
            for size in self.SIZES:
                self.compare(torch.float64, 1e-12, act, size)

    def test_float32(self):
        for act in ACTIVATIONS:
            for size in self.SIZES:
                self.compare(torch.float32, 1e-5, act, size)

    def test_update_styles(self):
        # res_avg's alpha = 1/sqrt(2); res_incr and res_residual have alpha = 1
        for alpha in (0.5 ** 0.5, 1.0):
            self.compare(torch.float64, 1e-12, "silu", (4, 6, 4, 8), alpha=alpha, seed=3)

    def test_without_angle_update(self):
        """update_angle=False (nothing reads angle_new): the same reduced and gradients as the edge message
        alone, angle_new empty."""
        act = Activation("silut:10.0")
        t = inputs(5, 7, 4, 6, torch.float64, 11)
        pair = pair_mask(t["a_mask"])
        g = torch.Generator().manual_seed(12)
        g_red = torch.randn(5, 7, 6, generator=g, dtype=torch.float64)

        def run(update):
            leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in dict(t, angle=t["angle"][pair]).items()}
            red, new = torch.ops.deepmd_kernels.repflow_angle(*[leaves[k] for k in ORDER], *scalars(act, 1.0, 3.0),
                                                               update)
            got = torch.autograd.grad([(red * g_red).sum()], [leaves[k] for k in ("angle", "a_sw", "p_edge", "q_edge")])
            return red, new, got

        red, new, got = run(True)
        red0, new0, got0 = run(False)
        self.assertEqual(tuple(new0.shape), (0, 4))
        self.assertLessEqual(rel(red0, red), 1e-15)
        for x, y in zip(got0, got):
            self.assertLessEqual(rel(x, y), 1e-15)

    def test_padded_slots(self):
        """Padded slots add nothing to reduced, and changing padded inputs changes no real output."""
        act = Activation("silut:10.0")
        t = inputs(4, 8, 4, 6, torch.float64, 5)
        red, new = op(t, act, 1.0, 3.0)
        pad = ~t["a_mask"]
        self.assertTrue(bool(pad.any()))
        self.assertEqual(float(red[pad].abs().max()), 0.0)
        t2 = dict(t)
        for k in ("p_edge", "q_edge", "p_angle", "q_angle"):
            t2[k] = torch.where(pad.unsqueeze(-1), t[k] + 7.0, t[k])
        t2["a_sw"] = torch.where(pad, t["a_sw"] + 0.5, t["a_sw"])  # padded switches are never read either
        t2["angle"] = torch.where((pad.unsqueeze(2) | pad.unsqueeze(1)).unsqueeze(-1), t["angle"] - 3.0, t["angle"])
        red2, new2 = op(t2, act, 1.0, 3.0)
        self.assertTrue(torch.equal(red, red2) and torch.equal(new, new2))

    def test_gradcheck(self):
        for act_name in ACTIVATIONS:
            act = Activation(act_name)
            t = inputs(5, 4, 3, 2, torch.float64, 7)
            pair = pair_mask(t["a_mask"])
            packed = t["angle"][pair].clone().requires_grad_(True)
            diff = [t[k].clone().requires_grad_(True) for k in DIFFERENTIABLE[1:]]

            def f(angle, a_sw, pe, qe, pa, qa):
                return torch.ops.deepmd_kernels.repflow_angle(angle, t["a_mask"], a_sw, pe, qe, t["w_edge"], pa, qa,
                                                               t["w_angle"], t["residual"],
                                                               *scalars(act, 1.0, 2.0))

            self.assertTrue(torch.autograd.gradcheck(f, [packed] + diff, eps=1e-6, atol=1e-8), act_name)

    def test_not_twice_differentiable(self):
        t = inputs(2, 3, 2, 2, torch.float64, 1)
        angle = t["angle"].clone().requires_grad_(True)
        red, _ = op(dict(t, angle=angle), Activation("silu"), 1.0, 1.0)
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            torch.autograd.grad([red.sum()], [angle], create_graph=True)

    def test_weights_not_differentiable(self):
        t = inputs(2, 3, 2, 2, torch.float64, 1)
        with self.assertRaisesRegex(RuntimeError, "weights"):
            op(dict(t, w_edge=t["w_edge"].clone().requires_grad_(True)), Activation("silu"), 1.0, 1.0)

    def test_errors(self):
        t = inputs(2, 3, 2, 2, torch.float64, 1)
        with self.assertRaisesRegex(RuntimeError, "p_edge must have shape"):
            op(dict(t, p_edge=t["p_edge"][:, :2]), Activation("silu"), 1.0, 1.0)
        with self.assertRaisesRegex(RuntimeError, "a_sw is Float, angle is Double"):
            op(dict(t, a_sw=t["a_sw"].float()), Activation("silu"), 1.0, 1.0)
        with self.assertRaisesRegex(RuntimeError, "activation kind"):
            op(t, Activation("gelu"), 1.0, 1.0)

    def test_scripted(self):
        @torch.jit.script
        def f(angle, mask, sw, pe, qe, we, pa, qa, wa, res):
            return torch.ops.deepmd_kernels.repflow_angle(angle, mask, sw, pe, qe, we, pa, qa, wa, res, 1.0, 7, 0.0,
                                                           0.0, 0.0, 2.0)

        t = inputs(3, 4, 3, 5, torch.float64, 2)
        pair = pair_mask(t["a_mask"])
        red, new = f(*[t[k][pair] if k == "angle" else t[k] for k in ORDER])
        rred, rnew = dense(t, Activation("silu"), 1.0, 2.0)
        self.assertLessEqual(rel(red, rred), 1e-12)
        self.assertLessEqual(rel(new, rnew[pair]), 1e-12)

    def test_non_contiguous(self):
        t = inputs(4, 5, 3, 4, torch.float64, 4)
        x = dict(t, angle=t["angle"][pair_mask(t["a_mask"])])
        wide = torch.cat([x["angle"], x["angle"]], dim=1)[:, :3]
        p_edge = t["p_edge"].transpose(1, 2).contiguous().transpose(1, 2)
        x2 = dict(x, angle=wide, p_edge=p_edge, a_mask=t["a_mask"].t().contiguous().t())
        self.assertFalse(x2["angle"].is_contiguous() or x2["p_edge"].is_contiguous() or x2["a_mask"].is_contiguous())
        act = Activation("tanh")
        run = lambda y: torch.ops.deepmd_kernels.repflow_angle(*[y[k] for k in ORDER], *scalars(act, 1.0, 2.0))
        self.assertTrue(all(torch.equal(a, b) for a, b in zip(run(x), run(x2))))

    def test_packed_length_checked(self):
        t = inputs(4, 5, 3, 4, torch.float64, 4)
        x = dict(t, angle=t["angle"][pair_mask(t["a_mask"])][1:])
        with self.assertRaisesRegex(RuntimeError, "real pairs"):
            torch.ops.deepmd_kernels.repflow_angle(*[x[k] for k in ORDER], *scalars(Activation("silu"), 1.0, 1.0))
        with self.assertRaisesRegex(RuntimeError, "a_mask must be a CPU bool"):
            y = dict(x, a_mask=t["a_mask"].double())
            torch.ops.deepmd_kernels.repflow_angle(*[y[k] for k in ORDER], *scalars(Activation("silu"), 1.0, 1.0))


if __name__ == "__main__":
    unittest_main.run()
