"""deepmd_kernels::neighbor_sums (deepmd/kernels) alone against a dense torch evaluation of the same sums
(the neighbours' rows of x gathered to [nb, nnei, F], padded slots zeroed, multiplied and summed over the
slots): conv and hx, and the gradients w.r.t. a, x, w and h2 of a random weighted sum of both, float64 to
1e-12 / 1e-11 and float32 to 1e-5 (relative to the largest reference value, or to the case's largest one
where a reference is identically zero), with and without a, F = 1, 3, 17 and 128; sizes with no slot and one,
no centre, centres without real neighbours and with exactly one, lists with holes, a real slot whose weight is
exactly zero, rows read by two slots of one centre and by several centres (x's gradient accumulates over all
of them), rows of x no slot reads (their gradient is exactly zero), 37 centres on 1 and 4 threads (several
parallel chunks, bitwise the same numbers); gradients of one output only; NaN in every padded slot's a, w
and h2 and in every unread row of x reaches no output and no gradient (padded rows of every gradient are
exactly zero); torch.autograd.gradcheck in float64; non-contiguous inputs; a double backward is refused; bad
rows, shapes and dtypes are refused; the op runs inside TorchScript. With a projection (wa, ba: the conv's
rows are a_j wa + ba, a [nb, nnei, c]) the same checks of the sums, c = 1, 5 and 32, and projection weights
that require gradients are refused.
Usage: neighbor_sums_test.py OPS_LIBRARY."""

import unittest

import torch

from tests import unittest_main
from tests.ops.kernel_checks import WorstErrors, real_mask, rel

ORDER = ["a", "wa", "ba", "x", "nbr", "w", "h2"]
DIFFERENTIABLE = ["a", "x", "w", "h2"]
SLOTWISE = ["a", "w", "h2"]  # one row per slot: never read at padded ones


def unread(rows):
    """The rows of x that inputs() never names: every fifth from row 2, and the last."""
    return [r for r in range(rows) if r % 5 == 2 or r == rows - 1]


def no_conv(dtype):
    """The op's `a` for no conv: a 1-d empty tensor."""
    return torch.zeros(0, dtype=dtype)


def inputs(nb, nnei, f, dtype, seed, has_a=True, project=0):
    """Random inputs; fewer rows of x than slots, so most rows are read by several slots, and the rows of
    unread() by none; holes anywhere, centre 0 has no real neighbour, centre 1 exactly one (the last slot,
    behind holes), centre 2 no padded slot and its first two slots read the same row, centre 3 a real slot
    whose weight is exactly zero, centre 4 reads centre 2's first row. Padded slots hold random values:
    nothing may read them. project = c > 0: a is [nb, nnei, c] with a projection wa [c, f], ba [f]."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    rows = 5 + nb * nnei // 3
    readable = torch.tensor([i for i in range(rows) if i not in unread(rows)], dtype=torch.int64)
    nbr = readable[torch.randint(len(readable), (nb, nnei), generator=g)]
    real = real_mask(nb, nnei, g)
    if nb > 2 and nnei > 1:
        nbr[2, 1] = nbr[2, 0]
    w = 0.05 + 0.95 * torch.rand(nb, nnei, generator=g, dtype=torch.float64)
    if nb > 3 and nnei > 1:
        real[3, 1] = True  # real though its weight (a switch) rounded to zero at the cutoff
        w[3, 1] = 0.0
    if nb > 4 and nnei > 0:
        real[4, 0] = True
        nbr[4, 0] = nbr[2, 0]
    nbr = torch.where(real, nbr, torch.full_like(nbr, -1))
    a = (r(nb, nnei, project) if project else r(nb, nnei, f)) if has_a else no_conv(dtype)
    wa = r(project, f, scale=project ** -0.5) if project else no_conv(dtype)
    ba = r(f, scale=0.5) if project else no_conv(dtype)
    return dict(a=a, wa=wa, ba=ba, x=r(rows, f), nbr=nbr, w=w.to(dtype), h2=r(nb, nnei, 3, scale=0.6))


def with_nan_padding(t, rows_too=False):
    """t with NaN in every padded slot's a, w and h2 (and in every unread row of x with rows_too)."""
    pad = t["nbr"] < 0
    out = dict(t)
    for name in SLOTWISE:
        x = t[name]
        if x.dim() == 1:  # no conv
            continue
        p = pad.view(pad.shape + (1,) * (x.dim() - 2))
        out[name] = torch.where(p, torch.full_like(x, float("nan")), x)
    if rows_too:
        out["x"] = t["x"].clone()
        out["x"][unread(t["x"].shape[0])] = float("nan")
    return out


def op(t):
    return torch.ops.deepmd_kernels.neighbor_sums(*[t[k] for k in ORDER])


def dense(t):
    """The sums over all nnei slots of the gathered rows, padded slots' rows and inputs replaced by zeros."""
    nbr = t["nbr"]
    nb, nnei = nbr.shape
    real = nbr >= 0
    x = t["x"]
    xg = x[nbr.clamp(min=0)]  # [nb, nnei, F]
    zero = torch.zeros((), dtype=x.dtype)
    xg = torch.where(real.unsqueeze(-1), xg, zero)
    w = torch.where(real, t["w"], zero)
    h2 = torch.where(real.unsqueeze(-1), t["h2"], zero)
    hx = (w.view(nb, nnei, 1, 1) * h2.unsqueeze(-1) * xg.unsqueeze(-2)).sum(1)  # [nb, 3, F]
    if t["a"].dim() == 1:  # no conv: [nb, 0] (in the graph, so that a loss on it alone has gradients: zero)
        return (w.unsqueeze(-1) * xg).sum(1)[:, :0], hx
    a = torch.where(real.unsqueeze(-1), t["a"], zero)
    if t["wa"].numel():
        a = torch.matmul(a, t["wa"]) + t["ba"]
    return (w.unsqueeze(-1) * a * xg).sum(1), hx




def grads(f, t, g_out):
    """The outputs and the gradients w.r.t. DIFFERENTIABLE of sum(out_i * g_out_i) over the outputs whose
    g_out_i is not None (zeros where autograd has none: the empty a of no conv, which requires grad too)."""
    leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
    outs = f(leaves)
    loss = sum((o * g).sum() for o, g in zip(outs, g_out) if g is not None)
    got = torch.autograd.grad([loss], [leaves[k] for k in DIFFERENTIABLE], allow_unused=True)
    return [o.detach() for o in outs], [torch.zeros_like(leaves[k]) if x is None else x
                                        for k, x in zip(DIFFERENTIABLE, got)]


def random_g_out(t, seed):
    g = torch.Generator().manual_seed(seed)
    nb, f, dtype = t["nbr"].shape[0], t["x"].shape[1], t["x"].dtype
    width = f if t["a"].dim() == 3 else 0
    return [torch.randn(nb, width, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(nb, 3, f, generator=g, dtype=torch.float64).to(dtype)]


# (nb, nnei, F)
SIZES = [(6, 7, 3), (3, 0, 17), (4, 1, 1), (6, 12, 128), (5, 9, 17), (0, 5, 3), (6, 5, 1), (37, 15, 17),
         (37, 6, 128), (9, 20, 3)]


class NeighborSumsTest(WorstErrors, unittest.TestCase):
    def compare(self, dtype, tol, gtol, size, has_a, seed=0, which=(True, True), project=0):
        nb, nnei, f = size
        t = inputs(nb, nnei, f, dtype, seed, has_a=has_a, project=project)
        g_out = [g if use else None for g, use in zip(random_g_out(t, seed + 1), which)]
        # the kernel sees NaN in every padded slot; the float64 reference from the same real inputs is the truth
        outs, gk = grads(op, with_nan_padding(t), g_out)
        t64 = {k: v.double() if v.is_floating_point() else v for k, v in t.items()}
        routs, gr = grads(dense, t64, [None if g is None else g.double() for g in g_out])
        where = f"{dtype} {size} has_a={has_a} seed={seed} outputs={which} project={project}"
        pad = t["nbr"] < 0
        nobody = unread(t["x"].shape[0])
        scale = max([float(y.abs().max()) if y.numel() else 0.0 for y in routs + gr] + [1e-300])
        for name, out, rout in zip(("conv", "hx"), outs, routs):
            self.assertEqual(out.dtype, dtype, where)
            self.assertEqual(out.shape, rout.shape, f"{where} {name}")
            self.assertFalse(bool(out.isnan().any()), f"{where} NaN in {name}")
            if nb > 0 and nnei > 0:
                self.assertTrue(bool((out[0] == 0).all()), f"{where} {name} of centre 0")
            err = rel(out, rout, scale)
            self.record(f"{dtype} {name}", err)
            self.assertLessEqual(err, tol, f"{where} {name}")
        self.assertEqual(tuple(outs[0].shape), (nb, f if has_a else 0), where)
        for name, x, y in zip(DIFFERENTIABLE, gk, gr):
            self.assertEqual(x.shape, t[name].shape, f"{where} d/d{name}")
            self.assertFalse(bool(x.isnan().any()), f"{where} NaN in d/d{name}")
            if name == "x":
                self.assertTrue(bool((x[nobody] == 0).all()), f"{where} unread rows of d/dx")
            elif x.dim() > 1:
                self.assertTrue(bool((x[pad] == 0).all()), f"{where} padded rows of d/d{name}")
            err = rel(x, y, scale)
            self.record(f"{dtype} d/d{name}", err)
            self.assertLessEqual(err, gtol, f"{where} d/d{name}")

    def test_float64(self):
        for size in SIZES:
            for has_a in (True, False):
                self.compare(torch.float64, 1e-12, 1e-11, size, has_a)

    def test_float32(self):
        for size in SIZES:
            for has_a in (True, False):
                self.compare(torch.float32, 1e-5, 1e-5, size, has_a)

    def test_projection(self):
        """The conv's rows projected inside the kernel: a_j wa + ba (DPA2's proj_g1g2 of g2)."""
        for c in (1, 5, 32):
            for size in SIZES:
                self.compare(torch.float64, 1e-12, 1e-11, size, True, project=c)
                self.compare(torch.float32, 1e-5, 1e-5, size, True, project=c)
            self.compare(torch.float64, 1e-12, 1e-11, (6, 8, 17), True, seed=3, which=(True, False), project=c)

    def test_many_seeds(self):
        for seed in range(10, 20):
            for has_a in (True, False):
                self.compare(torch.float64, 1e-12, 1e-11, (7, 10, 5), has_a, seed=seed)

    def test_one_output(self):
        """Gradients of conv alone and of hx alone (the other output's gradient undefined)."""
        for which in ((True, False), (False, True)):
            for has_a in (True, False):
                self.compare(torch.float64, 1e-12, 1e-11, (6, 8, 17), has_a, seed=3, which=which)

    def test_shared_rows(self):
        """Rows read by two slots of one centre and by several centres: d/dx sums over all of them."""
        t = inputs(6, 8, 3, torch.float64, 5)
        nbr = t["nbr"]
        self.assertEqual(int(nbr[2, 0]), int(nbr[2, 1]))
        self.assertEqual(int(nbr[4, 0]), int(nbr[2, 0]))
        readers = torch.bincount(nbr[nbr >= 0], minlength=t["x"].shape[0])
        self.assertGreater(int(readers.max()), 2)
        self.assertTrue(bool((readers[unread(t["x"].shape[0])] == 0).all()))
        self.compare(torch.float64, 1e-12, 1e-11, (6, 8, 3), True, seed=5)

    def test_threads(self):
        """Several parallel chunks of centres give bitwise the numbers one gives."""
        threads = torch.get_num_threads()
        try:
            for has_a in (True, False):
                t = inputs(37, 15, 17, torch.float64, 11, has_a=has_a)
                g_out = random_g_out(t, 12)
                torch.set_num_threads(1)
                one = grads(op, t, g_out)
                torch.set_num_threads(4)
                self.assertEqual(torch.get_num_threads(), 4)  # 37 centres, 8 a task: 4 chunks
                four = grads(op, t, g_out)
                for x, y in zip(one[0] + one[1], four[0] + four[1]):
                    self.assertTrue(torch.equal(x, y), f"has_a={has_a}")
                self.compare(torch.float64, 1e-12, 1e-11, (37, 15, 17), has_a, seed=11)
                self.compare(torch.float32, 1e-5, 1e-5, (37, 6, 128), has_a, seed=13)
        finally:
            torch.set_num_threads(threads)

    def test_padded_slots(self):
        """The padded slots' a, w and h2 and the rows of x no slot names are never read: any values there
        (NaN included) give bitwise the same outputs and gradients, exactly zero at padded slots and unread
        rows."""
        for has_a in (True, False):
            t = inputs(6, 8, 5, torch.float64, 6, has_a=has_a)
            pad = t["nbr"] < 0
            self.assertTrue(bool(pad.any()) and bool((~pad).any()))
            g_out = random_g_out(t, 7)
            zeroed = dict(t)
            for name in SLOTWISE:
                x = t[name]
                if x.dim() > 1:
                    zeroed[name] = torch.where(pad.view(pad.shape + (1,) * (x.dim() - 2)), torch.zeros_like(x), x)
            zeroed["x"] = t["x"].clone()
            zeroed["x"][unread(t["x"].shape[0])] = 0.0
            runs = [grads(op, y, g_out) for y in (t, zeroed, with_nan_padding(t, rows_too=True))]
            for outs, gk in runs[1:]:
                for x, y in zip(outs, runs[0][0]):
                    self.assertTrue(torch.equal(x, y), f"has_a={has_a}")
                for name, x, y in zip(DIFFERENTIABLE, gk, runs[0][1]):
                    self.assertTrue(torch.equal(x, y), f"has_a={has_a} d/d{name}")
            ga, gx, gw, gh2 = runs[0][1]
            self.assertEqual(float(gx[unread(t["x"].shape[0])].abs().max()), 0.0)
            for x in (ga, gw, gh2):
                if x.dim() > 1:
                    self.assertEqual(float(x[pad].abs().max()), 0.0)

    def test_no_slots(self):
        for has_a in (True, False):
            t = inputs(3, 0, 4, torch.float64, 1, has_a=has_a)
            leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
            conv, hx = op(leaves)
            self.assertEqual(tuple(conv.shape), (3, 4 if has_a else 0))
            self.assertEqual(tuple(hx.shape), (3, 3, 4))
            self.assertTrue(bool((conv == 0).all()) and bool((hx == 0).all()))
            got = torch.autograd.grad([conv.sum() + hx.sum()], [leaves[k] for k in DIFFERENTIABLE], allow_unused=True)
            for name, x in zip(DIFFERENTIABLE, got):
                if name == "a" and not has_a:
                    self.assertIsNone(x)
                    continue
                self.assertEqual(x.shape, t[name].shape, name)
                self.assertTrue(bool((x == 0).all()), name)
            empty = inputs(0, 4, 3, torch.float64, 1, has_a=has_a)
            conv, hx = op(empty)
            self.assertEqual((tuple(conv.shape), tuple(hx.shape)), ((0, 3 if has_a else 0), (0, 3, 3)))
            # no row of x at all: every slot padded
            nothing = dict(inputs(3, 4, 2, torch.float64, 1, has_a=has_a), x=torch.zeros(0, 2, dtype=torch.float64),
                           nbr=torch.full((3, 4), -1, dtype=torch.int64))
            conv, hx = op(nothing)
            self.assertEqual((tuple(conv.shape), tuple(hx.shape)), ((3, 2 if has_a else 0), (3, 3, 2)))
            self.assertTrue(bool((conv == 0).all()) and bool((hx == 0).all()))

    def test_gradcheck(self):
        for has_a, project in ((True, 0), (False, 0), (True, 2)):
            t = inputs(6, 4, 3, torch.float64, 8, has_a=has_a, project=project)
            names = [k for k in DIFFERENTIABLE if t[k].numel() > 0]
            diff = [t[k].clone().requires_grad_(True) for k in names]

            def f(*args):
                given = dict(t, **dict(zip(names, args)))
                return torch.ops.deepmd_kernels.neighbor_sums(*[given[k] for k in ORDER])

            self.assertTrue(torch.autograd.gradcheck(f, diff, eps=1e-6, atol=1e-8), f"has_a={has_a} project={project}")

    def test_not_twice_differentiable(self):
        t = inputs(3, 4, 2, torch.float64, 1)
        leaves = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE)) for k, v in t.items()}
        conv, hx = op(leaves)
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            gx, = torch.autograd.grad([(conv * conv).sum() + (hx * hx).sum()], [leaves["x"]], create_graph=True)
            torch.autograd.grad([gx.sum()], [leaves["x"]])

    def test_errors(self):
        t = inputs(5, 4, 3, torch.float64, 1)
        rows = t["x"].shape[0]
        with self.assertRaisesRegex(RuntimeError, "nbr must be a CPU int64 tensor"):
            op(dict(t, nbr=t["nbr"].int()))
        with self.assertRaisesRegex(RuntimeError, "nbr must be a CPU int64 tensor"):
            op(dict(t, nbr=t["nbr"][0]))
        bad = t["nbr"].clone()
        bad[4, 3] = rows
        with self.assertRaisesRegex(RuntimeError, f"nbr holds row {rows} but x has {rows} rows"):
            op(dict(t, nbr=bad))
        bad[4, 3] = -2
        with self.assertRaisesRegex(RuntimeError, "nbr holds row -2"):
            op(dict(t, nbr=bad))
        with self.assertRaisesRegex(RuntimeError, "nbr holds row -2"):
            op(dict(t, nbr=bad, a=no_conv(torch.float64)))
        with self.assertRaisesRegex(RuntimeError, "a must have shape"):
            op(dict(t, a=t["a"][:, :, :2]))
        with self.assertRaisesRegex(RuntimeError, "a must have shape"):
            op(dict(t, a=t["a"][:, :3]))
        with self.assertRaisesRegex(RuntimeError, "a must have shape"):
            op(dict(t, a=t["a"][:2]))
        with self.assertRaisesRegex(RuntimeError, "a must have shape"):
            op(dict(t, a=t["a"][:, 0]))
        with self.assertRaisesRegex(RuntimeError, "a must have shape"):
            op(dict(t, a=t["a"].reshape(-1)))  # 1-d but not empty
        with self.assertRaisesRegex(RuntimeError, "w must have shape"):
            op(dict(t, w=t["w"][:, :3]))
        with self.assertRaisesRegex(RuntimeError, "w must have shape"):
            op(dict(t, w=t["w"].reshape(-1)))
        with self.assertRaisesRegex(RuntimeError, "h2 must have shape"):
            op(dict(t, h2=t["h2"][..., :2]))
        with self.assertRaisesRegex(RuntimeError, "h2 must have shape"):
            op(dict(t, h2=t["h2"][:4]))
        with self.assertRaisesRegex(RuntimeError, r"x must be \[rows, F\]"):
            op(dict(t, x=t["x"][0]))
        with self.assertRaisesRegex(RuntimeError, r"x must be \[rows, F\]"):
            op(dict(t, x=t["x"].unsqueeze(0)))
        with self.assertRaisesRegex(RuntimeError, "a must have shape"):
            op(dict(t, x=t["x"][:, :2]))  # F from x
        with self.assertRaisesRegex(RuntimeError, "w is Float, x is Double"):
            op(dict(t, w=t["w"].float()))
        with self.assertRaisesRegex(RuntimeError, "a is Float, x is Double"):
            op(dict(t, a=t["a"].float()))
        with self.assertRaisesRegex(RuntimeError, "h2 is Double, x is Float"):
            op(dict(t, a=t["a"].float(), x=t["x"].float(), w=t["w"].float()))
        with self.assertRaisesRegex(RuntimeError, "float32 or float64 only"):
            op({k: x.half() if x.is_floating_point() else x for k, x in t.items()})
        with self.assertRaisesRegex(RuntimeError, "float32 or float64 only"):
            op({k: x.half() if x.is_floating_point() else x for k, x in dict(t, a=no_conv(torch.float64)).items()})

    def test_projection_errors(self):
        t = inputs(5, 4, 3, torch.float64, 1, project=2)
        with self.assertRaisesRegex(RuntimeError, "wa must have shape"):
            op(dict(t, wa=t["wa"][:, :2]))
        with self.assertRaisesRegex(RuntimeError, "wa must be"):
            op(dict(t, wa=t["wa"].reshape(-1)))
        with self.assertRaisesRegex(RuntimeError, "ba must have shape"):
            op(dict(t, ba=t["ba"][:2]))
        with self.assertRaisesRegex(RuntimeError, "a must have shape"):
            op(dict(t, a=t["a"][..., :1]))
        with self.assertRaisesRegex(RuntimeError, "wa is Float, x is Double"):
            op(dict(t, wa=t["wa"].float()))
        for name in ("wa", "ba"):
            with self.assertRaisesRegex(RuntimeError, "inference kernel"):
                op(dict(t, **{name: t[name].clone().requires_grad_(True)}))

    def test_non_contiguous(self):
        for has_a in (True, False):
            t = inputs(5, 6, 4, torch.float64, 9, has_a=has_a)
            t2 = dict(t, x=torch.cat([t["x"], t["x"]], dim=1)[:, 4:], nbr=t["nbr"].t().contiguous().t(),
                      h2=t["h2"].transpose(1, 2).contiguous().transpose(1, 2), w=t["w"].t().contiguous().t())
            if has_a:
                t2["a"] = torch.cat([t["a"], t["a"]], dim=2)[..., 4:]
            self.assertFalse(any(t2[k].is_contiguous() for k in ORDER if t2[k].dim() > 1))
            g_out = random_g_out(t, 10)
            ref, got = grads(op, t, g_out), grads(op, t2, g_out)
            for x, y in zip(ref[0] + ref[1], got[0] + got[1]):
                self.assertTrue(torch.equal(x, y), f"has_a={has_a}")

    def test_scripted(self):
        @torch.jit.script
        def f(a, wa, ba, x, nbr, w, h2):
            return torch.ops.deepmd_kernels.neighbor_sums(a, wa, ba, x, nbr, w, h2)

        for has_a in (True, False):
            t = inputs(4, 5, 3, torch.float64, 2, has_a=has_a)
            for got, ref in zip(f(*[t[k] for k in ORDER]), dense(t)):
                self.assertEqual(got.shape, ref.shape)
                self.assertLessEqual(rel(got, ref), 1e-12)


if __name__ == "__main__":
    unittest_main.run()
