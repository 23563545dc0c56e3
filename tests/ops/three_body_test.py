"""deepmd_kernels::three_body (deepmd/kernels) alone against a dense torch evaluation of the same formula
(deepmd-kit's se_t three-body embedding with the type rows' products as the first layer's blocks, the
parameters packed as the op's schema says: every pair (j, k) of a centre's nnei slots embedded, s_jk =
r_j·r_k, y0 = act(s_jk ws + pj_j + pk_k + b0) idt0, y_l = act(y_{l-1} W_l + b_l) idt_l plus y_{l-1}
(residual 1) or (y_{l-1}, y_{l-1}) (residual 2), out = Σ_jk s_jk y_L over the pairs of real slots):
forward and gradients w.r.t. r, pj and pk of a random weighted sum of the output, float64 to 1e-12 / 1e-11
and float32 to 1e-5 (relative to the largest reference value, or to the case's largest one where a
reference is identically zero), every activation the kernel implements (none, tanh, silu, silut with
thresholds that the pre-activations cross), widths [3], [4, 4], [5, 3], [2, 4, 8], [2, 4, 8, 8] and
[16, 32, 64] with residuals none, 1, 2 and mixed, idt ones and random; sizes with no slot and one, no
centre, centres without real slots and with exactly one (its self pair s_jj = |r_j|² counts), lists with
holes, a real slot whose direction row is exactly zero, 37 centres on 1 and 4 threads (several parallel
chunks, bitwise the same numbers); NaN in every padded slot's r, pj and pk reaches no output and no gradient
(padded rows of every gradient are exactly zero; random, zero and NaN padding give bitwise the same
results), a NaN in a real slot reaches its own centre's output only; torch.autograd.gradcheck in float64
w.r.t. r, pj and pk; non-contiguous inputs and parameters; a double backward is refused, and so are
parameters that require grad; bad masks, shapes, parameter lengths, widths, residuals, activation kinds
and dtypes are refused; the op runs inside TorchScript.
Usage: three_body_test.py OPS_LIBRARY."""

import math
import unittest

import torch

from tests import unittest_main
from tests.ops.kernel_checks import WorstErrors, real_mask, rel
from deepmd.dpkit.network import Activation

ORDER = ["r", "mask", "pj", "pk", "params"]
DIFFERENTIABLE = ["r", "pj", "pk"]  # also the per-slot inputs: the ones padded slots have
ACTIVATIONS = ["none", "tanh", "silu", "silut:0.5", "silut:3.0"]
# (widths [h0 .. hL], residual [L]): deepmd-kit's three-body embedding [2, 4, 8] without and with resnet
# (every layer that doubles), a single layer, equal widths, a narrowing layer, a mix, and wide layers
NETS = [([2, 4, 8], [0, 2]), ([2, 4, 8], [2, 2]), ([3], []), ([4, 4], [1]), ([5, 3], [0]), ([2, 4, 8, 8], [0, 2, 1]),
        ([16, 32, 64], [2, 2])]


def inputs(nb, nnei, h0, dtype, seed, scale=1.0):
    """Random per-slot inputs; the mask has holes anywhere, centre 0 has no real slot, centre 1 exactly one
    (the last slot, behind holes), centre 2 no padded slot, centre 3 a real slot whose direction row is
    exactly zero (at the cutoff). Padded slots hold random values: nothing may read them. `scale`
    multiplies pj and pk (larger pre-activations)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    real = real_mask(nb, nnei, g)
    rr = r(nb, nnei, 3, scale=0.6)
    if nb > 3 and nnei > 1:
        real[3, 1] = True
        rr[3, 1] = 0.0
    return dict(r=rr, mask=real, pj=r(nb, nnei, h0, scale=0.5 * scale), pk=r(nb, nnei, h0, scale=0.5 * scale))


def network(widths, dtype, seed, idt=True):
    """Random parameters packed as the op reads them: ws, b0, idt0, then each layer's W (row-major), b and
    idt; the weights scaled to keep every layer's values of order 1, idt random in [0.5, 1.5) or ones."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    def scales(n):
        return 0.5 + torch.rand(n, generator=g, dtype=torch.float64) if idt else torch.ones(n, dtype=torch.float64)

    h0 = widths[0]
    parts = [r(h0), r(h0, scale=0.3), scales(h0)]
    for a, b in zip(widths[:-1], widths[1:]):
        parts += [r(a, b, scale=1.0 / math.sqrt(a)).reshape(-1), r(b, scale=0.3), scales(b)]
    return torch.cat(parts).to(dtype)


def unpack(params, widths):
    """(ws, b0, idt0) and per layer (W [h_{l-1}, h_l], b, idt) out of the packed parameters."""
    h0 = widths[0]
    first = (params[:h0], params[h0:2 * h0], params[2 * h0:3 * h0])
    layers, at = [], 3 * h0
    for a, b in zip(widths[:-1], widths[1:]):
        w = params[at:at + a * b].reshape(a, b)
        at += a * b
        layers.append((w, params[at:at + b], params[at + b:at + 2 * b]))
        at += 2 * b
    assert at == params.numel()
    return first, layers


def activate(act, x):
    """deepmd-kit's activations of the kinds the kernel implements (network.py's Activation)."""
    if act.kind == 0:
        return x
    if act.kind == 1:
        return torch.tanh(x)
    if act.kind == 7:
        return x * torch.sigmoid(x)
    assert act.kind == 8
    return torch.where(x < act.threshold, x * torch.sigmoid(x), torch.tanh(act.slope * (x - act.threshold)) + act.const)


def op(t, widths, residual, act):
    return torch.ops.deepmd_kernels.three_body(*[t[k] for k in ORDER], widths, residual, act.kind, act.threshold,
                                               act.slope, act.const)


def dense(t, widths, residual, act, pre=None):
    """Every pair of slots embedded, padded slots' r, pj and pk replaced by zeros first, and out the sum over
    the pairs of real slots of s_jk y_L (pairs with a padded slot have s = 0 anyway). With `pre`, each layer's
    pre-activations are appended to it."""
    mask = t["mask"]
    zero = torch.zeros((), dtype=t["r"].dtype)
    r, pj, pk = (torch.where(mask.unsqueeze(-1), t[k], zero) for k in ("r", "pj", "pk"))
    s = torch.matmul(r, r.transpose(-1, -2))  # [nb, nnei, nnei]
    (ws, b0, idt0), layers = unpack(t["params"], widths)
    z = s.unsqueeze(-1) * ws + pj.unsqueeze(2) + pk.unsqueeze(1) + b0  # [nb, nnei, nnei, h0]: pair (j, k)
    pres = [z]
    y = activate(act, z) * idt0
    for (w, b, idt), res in zip(layers, residual):
        z = torch.matmul(y, w) + b
        pres.append(z)
        x, y = y, activate(act, z) * idt
        if res == 1:
            y = y + x
        elif res == 2:
            y = y + torch.cat([x, x], dim=-1)
    if pre is not None:
        pre += [p.detach() for p in pres]
    pair = mask.unsqueeze(2) & mask.unsqueeze(1)
    return (torch.where(pair, s, zero).unsqueeze(-1) * y).sum(dim=(1, 2))


def padded_like(t, fill):
    """t with `fill` (a function of a tensor) in every padded slot's r, pj and pk."""
    pad = ~t["mask"]
    out = dict(t)
    for name in DIFFERENTIABLE:
        out[name] = torch.where(pad.unsqueeze(-1), fill(t[name]), t[name])
    return out


def with_nan_padding(t):
    """t with NaN in every padded slot's r, pj and pk."""
    return padded_like(t, lambda x: torch.full_like(x, float("nan")))




def grads(f, t, g_out):
    leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
    out = f(leaves)
    got = torch.autograd.grad([(out * g_out).sum()], [leaves[k] for k in DIFFERENTIABLE], allow_unused=True)
    return out.detach(), [torch.zeros_like(leaves[k]) if x is None else x for k, x in zip(DIFFERENTIABLE, got)]


def case(nb, nnei, widths, dtype, seed, idt=True, scale=1.0):
    """The inputs (per-slot ones and the packed parameters) and a random upstream gradient of the output."""
    t = inputs(nb, nnei, widths[0], dtype, seed, scale=scale)
    t["params"] = network(widths, dtype, seed + 1, idt=idt)
    g_out = torch.randn(nb, widths[-1], generator=torch.Generator().manual_seed(seed + 2),
                        dtype=torch.float64).to(dtype)
    return t, g_out


# (nb, nnei)
SIZES = [(6, 7), (3, 0), (4, 1), (0, 5), (6, 12), (5, 20), (6, 5), (37, 15)]


class ThreeBodyTest(WorstErrors, unittest.TestCase):
    def compare(self, dtype, tol, gtol, size, net, act_name, seed=0, idt=True, scale=1.0):
        nb, nnei = size
        widths, residual = net
        act = Activation(act_name)
        t, g_out = case(nb, nnei, widths, dtype, seed, idt=idt, scale=scale)
        # the kernel sees NaN in every padded slot; the float64 reference from the same real inputs is the truth
        out, gk = grads(lambda x: op(x, widths, residual, act), with_nan_padding(t), g_out)
        t64 = {k: v.double() if v.is_floating_point() else v for k, v in t.items()}
        rout, gr = grads(lambda x: dense(x, widths, residual, act), t64, g_out.double())
        where = f"{dtype} {size} {net} {act_name} seed={seed} idt={idt} scale={scale}"
        self.assertEqual(out.dtype, dtype, where)
        self.assertEqual(tuple(out.shape), (nb, widths[-1]), where)
        self.assertFalse(bool(out.isnan().any()), where + " NaN in out")
        if nb > 0 and nnei > 0:
            self.assertTrue(bool((out[0] == 0).all()), where + " out of the centre without real slots")
            self.assertTrue(bool((out[1] != 0).any()), where + " out of the centre with one real slot")
        scale_ = max([float(y.abs().max()) if y.numel() else 0.0 for y in [rout] + gr] + [1e-300])
        err = rel(out, rout, scale_)
        self.record(f"{dtype} out", err)
        self.assertLessEqual(err, tol, where + " out")
        pad = ~t["mask"]
        for name, x, y in zip(DIFFERENTIABLE, gk, gr):
            self.assertEqual(x.shape, t[name].shape, f"{where} d/d{name}")
            self.assertFalse(bool(x.isnan().any()), f"{where} NaN in d/d{name}")
            self.assertTrue(bool((x[pad] == 0).all()), f"{where} padded rows of d/d{name}")
            err = rel(x, y, scale_)
            self.record(f"{dtype} d/d{name}", err)
            self.assertLessEqual(err, gtol, f"{where} d/d{name}")

    def test_float64(self):
        for size in SIZES:
            for net in NETS:
                for act_name in ACTIVATIONS:
                    for idt in (True, False):
                        self.compare(torch.float64, 1e-12, 1e-11, size, net, act_name, idt=idt)

    def test_float32(self):
        for size in SIZES:
            for net in NETS:
                for act_name in ACTIVATIONS:
                    for idt in (True, False):
                        self.compare(torch.float32, 1e-5, 1e-5, size, net, act_name, idt=idt)

    def test_many_seeds(self):
        for seed in range(10, 20):
            for act_name in ACTIVATIONS:
                self.compare(torch.float64, 1e-12, 1e-11, (7, 10), NETS[seed % len(NETS)], act_name, seed=seed,
                             idt=seed % 2 == 0)

    def test_silut_threshold(self):
        """silut's pre-activations fall on both sides of its threshold, in the first layer and after it, with
        the default inputs for threshold 0.5 and with larger pj, pk for deepmd-kit's default 3."""
        for act_name, scale in (("silut:0.5", 1.0), ("silut:3.0", 6.0), ("silut", 6.0)):
            act = Activation(act_name)
            for net in NETS:
                t, _ = case(6, 12, net[0], torch.float64, 3, scale=scale)
                pre = []
                dense(t, net[0], net[1], act, pre)
                pair = (t["mask"].unsqueeze(2) & t["mask"].unsqueeze(1)).unsqueeze(-1)
                for i, z in enumerate(pre[:2]):
                    z = z.masked_select(pair)
                    self.assertTrue(bool((z < act.threshold).any()) and bool((z >= act.threshold).any()),
                                    f"{act_name} {net} layer {i}")
                for dtype, tol, gtol in ((torch.float64, 1e-12, 1e-11), (torch.float32, 1e-5, 1e-5)):
                    self.compare(dtype, tol, gtol, (6, 12), net, act_name, seed=3, scale=scale)

    def test_self_pair(self):
        """A centre's only real slot j still has its pair (j, j): out = |r_j|² y(j, j), not zero."""
        widths, residual = [2, 4, 8], [0, 2]
        act = Activation("tanh")
        t, _ = case(4, 5, widths, torch.float64, 4)
        t["mask"] = torch.zeros(4, 5, dtype=torch.bool)
        for b in range(4):
            t["mask"][b, b] = True
        out = op(t, widths, residual, act)
        self.assertTrue(bool((out != 0).all()))
        for b in range(4):
            one = {k: v[b:b + 1, b:b + 1] for k, v in t.items() if k != "params"}
            one["params"] = t["params"]
            self.assertLessEqual(rel(out[b:b + 1], dense(one, widths, residual, act)), 1e-12)
        self.assertLessEqual(rel(out, dense(t, widths, residual, act)), 1e-12)

    def test_threads(self):
        """Several parallel chunks of centres give bitwise the numbers one gives."""
        threads = torch.get_num_threads()
        try:
            for net in (NETS[0], NETS[5], NETS[6]):
                act = Activation("silut:0.5")
                t, g_out = case(37, 15, net[0], torch.float64, 11)
                f = lambda x: op(x, net[0], net[1], act)  # noqa: E731
                torch.set_num_threads(1)
                one = grads(f, t, g_out)
                torch.set_num_threads(4)
                self.assertEqual(torch.get_num_threads(), 4)  # 37 centres, 4 a task: several chunks
                four = grads(f, t, g_out)
                for x, y in zip([one[0]] + one[1], [four[0]] + four[1]):
                    self.assertTrue(torch.equal(x, y), f"{net}")
                self.compare(torch.float64, 1e-12, 1e-11, (37, 15), net, "silut:0.5", seed=11)
                self.compare(torch.float32, 1e-5, 1e-5, (37, 15), net, "tanh", seed=13)
        finally:
            torch.set_num_threads(threads)

    def test_padded_slots(self):
        """The padded slots' r, pj and pk are never read: any values there (NaN included) give bitwise the
        same out and gradients, those of the gradients exactly zero at padded slots."""
        for net in (NETS[1], NETS[5]):
            for act_name in ("tanh", "silut:0.5"):
                act = Activation(act_name)
                t, g_out = case(6, 8, net[0], torch.float64, 6)
                pad = ~t["mask"]
                self.assertTrue(bool(pad.any()) and bool(t["mask"].any()))
                f = lambda x: op(x, net[0], net[1], act)  # noqa: E731
                runs = [grads(f, y, g_out) for y in (t, padded_like(t, torch.zeros_like), with_nan_padding(t))]
                for out, gk in runs[1:]:
                    self.assertTrue(torch.equal(out, runs[0][0]), f"{net} {act_name}")
                    for name, x, y in zip(DIFFERENTIABLE, gk, runs[0][1]):
                        self.assertTrue(torch.equal(x, y), f"{net} {act_name} d/d{name}")
                for x in runs[0][1]:
                    self.assertEqual(float(x[pad].abs().max()), 0.0)

    def test_nan_propagates(self):
        """A NaN in a real slot's r, pj or pk (a simulation blowing up) reaches its centre's output, for every
        activation (the float logistic's range guard must not clamp it into a finite number), and no other
        centre's."""
        widths, residual = [2, 4, 8], [0, 2]
        for dtype in (torch.float32, torch.float64):
            for act_name in ACTIVATIONS:
                for name in ("r", "pj", "pk"):
                    t, _ = case(4, 6, widths, dtype, 8)
                    x = t[name].clone()
                    x[2, 3, 0] = float("nan")  # centre 2 has no padded slot
                    out = op(dict(t, **{name: x}), widths, residual, Activation(act_name))
                    self.assertTrue(bool(torch.isnan(out[2]).any()), f"{dtype} {act_name} {name}")
                    self.assertFalse(bool(torch.isnan(out[[0, 1, 3]]).any()), f"{dtype} {act_name} {name}")

    def test_no_slots(self):
        widths, residual = [2, 4, 8], [0, 2]
        act = Activation("silu")
        t, _ = case(3, 0, widths, torch.float64, 1)
        leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
        out = op(leaves, widths, residual, act)
        self.assertEqual(tuple(out.shape), (3, 8))
        self.assertTrue(bool((out == 0).all()))
        got = torch.autograd.grad([out.sum()], [leaves[k] for k in DIFFERENTIABLE])
        for name, x in zip(DIFFERENTIABLE, got):
            self.assertEqual(x.shape, t[name].shape, name)
        empty, _ = case(0, 4, widths, torch.float64, 1)
        leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in empty.items()}
        out = op(leaves, widths, residual, act)
        self.assertEqual(tuple(out.shape), (0, 8))
        got = torch.autograd.grad([out.sum()], [leaves[k] for k in DIFFERENTIABLE])
        for name, x in zip(DIFFERENTIABLE, got):
            self.assertEqual(x.shape, empty[name].shape, name)
        # every slot padded: zero out and zero gradients
        t, g_out = case(3, 4, widths, torch.float64, 1)
        t["mask"] = torch.zeros(3, 4, dtype=torch.bool)
        out, gk = grads(lambda x: op(x, widths, residual, act), with_nan_padding(t), g_out)
        self.assertTrue(bool((out == 0).all()))
        for x in gk:
            self.assertTrue(bool((x == 0).all()))

    def test_gradcheck(self):
        for net in ((NETS[1], "tanh"), (NETS[3], "silu"), (NETS[5], "silut:0.5"), (NETS[2], "none")):
            (widths, residual), act_name = net
            act = Activation(act_name)
            t, _ = case(5, 4, widths, torch.float64, 8)
            diff = [t[k].clone().requires_grad_(True) for k in DIFFERENTIABLE]

            def f(r, pj, pk):
                return op(dict(t, r=r, pj=pj, pk=pk), widths, residual, act)

            self.assertTrue(torch.autograd.gradcheck(f, diff, eps=1e-6, atol=1e-8), f"{net}")

    def test_not_twice_differentiable(self):
        widths, residual = [2, 4, 8], [0, 2]
        t, _ = case(3, 4, widths, torch.float64, 1)
        leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
        out = op(leaves, widths, residual, Activation("tanh"))
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            gr, = torch.autograd.grad([(out * out).sum()], [leaves["r"]], create_graph=True)
            torch.autograd.grad([gr.sum()], [leaves["r"]])

    def test_params_requiring_grad(self):
        """An inference kernel: the parameters may not require grad, whether or not r does."""
        widths, residual = [2, 4, 8], [0, 2]
        t, _ = case(3, 4, widths, torch.float64, 1)
        for r_grad in (False, True):
            bad = dict(t, r=t["r"].clone().requires_grad_(r_grad), params=t["params"].clone().requires_grad_())
            with self.assertRaisesRegex(RuntimeError, "inference kernel"):
                op(bad, widths, residual, Activation("tanh"))

    def test_errors(self):
        widths, residual = [2, 4, 8], [0, 2]
        t, _ = case(3, 4, widths, torch.float64, 1)
        act = Activation("tanh")

        def refused(message, t=t, widths=widths, residual=residual, act=act):
            with self.assertRaisesRegex(RuntimeError, message):
                op(t, widths, residual, act)

        refused("mask must be a CPU bool tensor", dict(t, mask=t["mask"].double()))
        refused("mask must be a CPU bool tensor", dict(t, mask=t["mask"].long()))
        refused("mask must be a CPU bool tensor", dict(t, mask=t["mask"][:, :3]))
        refused("mask must be a CPU bool tensor", dict(t, mask=t["mask"][0]))
        refused(r"r must be \[nb, nnei, 3\]", dict(t, r=t["r"][..., :2]))
        refused(r"r must be \[nb, nnei, 3\]", dict(t, r=t["r"][0]))
        refused(r"r must be \[nb, nnei, 3\]", dict(t, r=t["r"].unsqueeze(0)))
        refused("pj must have shape", dict(t, pj=t["pj"][..., :1]))
        refused("pj must have shape", dict(t, pj=t["pj"][:, :3]))
        refused("pj must have shape", dict(t, pj=t["pj"][:2]))
        refused("pk must have shape", dict(t, pk=t["pk"][:, :3]))
        refused("pk must have shape", dict(t, pk=t["pk"].reshape(3, -1)))
        refused("params must have shape", dict(t, params=t["params"][:-1]))
        refused("params must have shape", dict(t, params=torch.cat([t["params"], t["params"][:1]])))
        refused("params must have shape", dict(t, params=t["params"].reshape(1, -1)))
        refused("params must have shape", widths=[2, 4, 9], residual=[0, 0])
        refused("layer 2 has residual 1 with widths 4 -> 8", residual=[0, 1])
        refused("layer 1 has residual 2 with widths 2 -> 5", widths=[2, 5, 8], residual=[2, 0])
        refused("layer 1 has residual 2 with widths 2 -> 2", widths=[2, 2], residual=[2])
        refused("layer 1 has residual 3", widths=[2, 4], residual=[3])
        refused("layer 1 has residual -1", widths=[2, 4], residual=[-1])
        refused("layer widths must be positive", widths=[2, 0, 8])
        refused(r"widths \[h0 .. hL\] \(3 given\) and residual \[L\] \(1 given\) disagree", residual=[0])
        refused(r"widths \[h0 .. hL\] \(3 given\) and residual \[L\] \(3 given\) disagree", residual=[0, 2, 0])
        refused(r"widths \[h0 .. hL\] \(0 given\) and residual \[L\] \(0 given\) disagree", widths=[], residual=[])
        for kind in (3, 2, 6, -1, 9):
            with self.assertRaisesRegex(RuntimeError, f"activation kind {kind} is not one the kernel implements"):
                torch.ops.deepmd_kernels.three_body(*[t[k] for k in ORDER], widths, residual, kind, 0.0, 0.0, 0.0)
        refused("pj is Float, r is Double", dict(t, pj=t["pj"].float()))
        refused("pk is Float, r is Double", dict(t, pk=t["pk"].float()))
        refused("params is Float, r is Double", dict(t, params=t["params"].float()))
        refused("pj is Double, r is Float", dict(t, r=t["r"].float()))
        refused("float32 or float64 only", {k: x.half() if x.is_floating_point() else x for k, x in t.items()})
        refused("float32 or float64 only", {k: x.bfloat16() if x.is_floating_point() else x for k, x in t.items()})

    def test_non_contiguous(self):
        widths, residual = [2, 4, 8, 8], [0, 2, 1]
        t, g_out = case(5, 6, widths, torch.float64, 9)
        t2 = dict(t, r=t["r"].transpose(1, 2).contiguous().transpose(1, 2), mask=t["mask"].t().contiguous().t(),
                  pj=torch.cat([t["pj"], t["pj"]], dim=2)[..., 2:],
                  pk=t["pk"].transpose(0, 1).contiguous().transpose(0, 1),
                  params=torch.stack([t["params"], t["params"]], dim=1)[:, 0])
        self.assertFalse(any(t2[k].is_contiguous() for k in ORDER))
        for act_name in ACTIVATIONS:
            f = lambda x: op(x, widths, residual, Activation(act_name))  # noqa: E731
            ref, got = grads(f, t, g_out), grads(f, t2, g_out)
            for x, y in zip([ref[0]] + ref[1], [got[0]] + got[1]):
                self.assertTrue(torch.equal(x, y), act_name)

    def test_scripted(self):
        @torch.jit.script
        def f(r, mask, pj, pk, params):
            return torch.ops.deepmd_kernels.three_body(r, mask, pj, pk, params, [2, 4, 8], [0, 2], 7, 0.0, 0.0, 0.0)

        t, _ = case(4, 5, [2, 4, 8], torch.float64, 2)
        self.assertLessEqual(rel(f(*[t[k] for k in ORDER]), dense(t, [2, 4, 8], [0, 2], Activation("silu"))), 1e-12)


if __name__ == "__main__":
    unittest_main.run()
