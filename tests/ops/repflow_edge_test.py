"""deepmd_kernels::repflow_edge (deepmd/kernels) alone against a dense torch evaluation of the same formula
(the padded one deepmd/dpkit/repflow_layer.py computes, neighbours gathered with index_select): forward
and gradients, float64 to 1e-12 and float32 to 1e-5 (relative to the largest reference value), every
activation the kernel implements, with and without the edge self update, several message heads, sizes
with no neighbour slot and one, centres without neighbours, lists with holes, a real slot whose switch is
zero, neighbours shared by many centres; torch.autograd.gradcheck in float64; a double backward is
refused; bad shapes and rows are refused; the op runs inside TorchScript.
deepmd_kernels::repflow_edge_update (the same with the layer's edge update, edge_new = alpha edge +
self_scale eself + head per angle slot, tail beyond) against that dense evaluation's edge update: the same
tolerances, activations and sizes (those with F - n_msg = e), angle lists of no slot, one, half and every
slot, alpha 1 and 1/sqrt(3), a random self_scale; outputs and the gradients of a random weighted sum of all
outputs w.r.t. every differentiable input and head (head's is edge_new's at the angle slots, bitwise; a
padded slot's edge gradient is exactly alpha times edge_new's); gradcheck w.r.t. edge, p, q and head; a
double backward is refused; a self width other than e, bad head, tail and self_scale shapes and dtypes,
and tail or self_scale requiring grad are refused; 1 and 4 intra-op threads give bitwise the same outputs
and gradients; the op runs inside TorchScript; its msg and moments (and the gradients of those alone) are
bitwise repflow_edge's.
Usage: repflow_edge_test.py OPS_LIBRARY."""

import math
import unittest

import torch

from tests import unittest_main
from tests.ops.kernel_checks import WorstErrors
from deepmd.dpkit.network import Activation

ACTIVATIONS = ["none", "tanh", "silu", "silut:3.0", "silut:10.0"]
ORDER = ["edge", "nbr", "sw", "h2sw", "node_ext", "p", "q", "w"]
DIFFERENTIABLE = ["edge", "sw", "h2sw", "node_ext", "p", "q"]
DIFFERENTIABLE_UPDATE = DIFFERENTIABLE + ["head"]  # tail and self_scale are weights


def inputs(nb, nnei, e, n, f, rows, dtype, seed):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    nbr = torch.randint(0, rows, (nb, nnei), generator=g)
    if nnei > 2:
        nbr = torch.where(torch.rand(nb, nnei, generator=g) > 0.3, nbr, torch.full_like(nbr, -1))  # holes
    if nb > 1:
        nbr[0] = -1  # a centre without neighbours
    if nb > 2 and nnei > 0:
        nbr[1, 1:] = -1
        nbr[1, 0] = rows - 1
    real = nbr >= 0
    sw = torch.where(real, 0.1 + torch.rand(nb, nnei, generator=g, dtype=torch.float64), torch.zeros(nb, nnei,
                                                                                                   dtype=torch.float64))
    if nb > 3 and nnei > 1:
        nbr[3, 1] = 0  # a real slot whose switch is zero (rounding at the cutoff): still real
        sw[3, 1] = 0.0
        real = nbr >= 0
    h2sw = torch.where(real.unsqueeze(-1), r(nb, nnei, 3).double(), torch.zeros(nb, nnei, 3, dtype=torch.float64))
    return dict(edge=r(nb, nnei, e), nbr=nbr, sw=sw.to(dtype), h2sw=h2sw.to(dtype), node_ext=r(rows, n),
                p=r(rows, f, scale=2.0), q=r(nb, f), w=r(e, f, scale=1.0 / math.sqrt(max(e, 1))))


def scalars(act, n_msg, e_norm):
    return [n_msg, act.kind, act.threshold, act.slope, act.const, e_norm]


def op(t, act, n_msg, e_norm):
    return torch.ops.deepmd_kernels.repflow_edge(*[t[k] for k in ORDER], *scalars(act, n_msg, e_norm))


def dense(t, act, n_msg, e_norm):
    """The padded formula: every slot evaluated, padded ones read at row 0 and multiplied by zero."""
    nb, nnei = t["nbr"].shape
    real = t["nbr"] >= 0
    flat = torch.where(real, t["nbr"], torch.zeros_like(t["nbr"])).reshape(-1)
    p_j = torch.index_select(t["p"], 0, flat).reshape(nb, nnei, t["p"].shape[1])
    node_j = torch.index_select(t["node_ext"], 0, flat).reshape(nb, nnei, t["node_ext"].shape[1])
    y = act(torch.matmul(t["edge"], t["w"]) + p_j + t["q"].unsqueeze(1))
    msg = torch.matmul(t["sw"].unsqueeze(1), y[..., :n_msg]).squeeze(1) / e_norm
    eself = torch.where(real.unsqueeze(-1), y[..., n_msg:], torch.zeros_like(y[..., n_msg:]))
    h2t = t["h2sw"].transpose(1, 2)
    return msg, eself, torch.matmul(h2t, t["edge"]), torch.matmul(h2t, node_j)


def update_inputs(t, nang, seed):
    """inputs() with the edge update's head [nb, nang, e], tail [e] and a random self_scale [e]."""
    nb, _, e = t["edge"].shape
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(t["edge"].dtype)

    return dict(t, head=r(nb, nang, e), tail=r(e), self_scale=r(e))


def op_update(t, act, n_msg, e_norm, alpha):
    return torch.ops.deepmd_kernels.repflow_edge_update(*[t[k] for k in ORDER], *scalars(act, n_msg, e_norm),
                                                        t["head"], t["tail"], t["self_scale"], alpha)


def dense_update(t, act, n_msg, e_norm, alpha):
    """dense() with the edge update: alpha edge + self_scale eself + head at the angle slots, tail beyond."""
    msg, eself, hg_edge, hg_node = dense(t, act, n_msg, e_norm)
    nb, nnei, e = t["edge"].shape
    angle = torch.cat([t["head"], t["tail"].expand(nb, nnei - t["head"].shape[1], e)], dim=1)
    return msg, alpha * t["edge"] + t["self_scale"] * eself + angle, hg_edge, hg_node


def angle_counts(nnei):
    """nang: no angle slot, one, half of them, all."""
    return sorted({0, min(1, nnei), nnei // 2, nnei})


def rel(x, ref):
    return float((x.double() - ref.double()).abs().max()) / max(float(ref.double().abs().max()), 1e-300) \
        if ref.numel() else 0.0


def grads(f, t, upstream, names=DIFFERENTIABLE):
    leaves = {k: (v.clone().requires_grad_(k in names)) for k, v in t.items()}
    outs = f(leaves)
    loss = sum((o * u).sum() for o, u in zip(outs, upstream) if u is not None)
    got = torch.autograd.grad([loss], [leaves[k] for k in names], allow_unused=True)
    return [o.detach() for o in outs], [torch.zeros_like(leaves[k]) if x is None else x
                                        for k, x in zip(names, got)]


class RepflowEdgeTest(WorstErrors, unittest.TestCase):
    # (nb, nnei, e, n, heads x n + self width, message width, rows)
    SIZES = [(5, 7, 4, 6, 10, 6, 9), (3, 0, 4, 6, 10, 6, 4), (3, 1, 3, 5, 8, 5, 2), (6, 24, 16, 32, 48, 32, 20),
             (4, 9, 8, 16, 40, 32, 3), (4, 6, 4, 6, 6, 6, 8), (2, 5, 1, 1, 2, 1, 1)]

    def compare(self, dtype, tol, act_name, size, seed=0):
        act = Activation(act_name)
        nb, nnei, e, n, f, m, rows = size
        t = inputs(nb, nnei, e, n, f, rows, dtype, seed)
        e_norm = 12.0
        g = torch.Generator().manual_seed(seed + 1)
        upstream = [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)
                    for s in ((nb, m), (nb, nnei, f - m), (nb, 3, e), (nb, 3, n))]
        outs, gk = grads(lambda x: op(x, act, m, e_norm), t, upstream)
        # the reference in float64 from the same inputs: the truth for both precisions
        t64 = {k: v.double() if v.is_floating_point() else v for k, v in t.items()}
        routs, gr = grads(lambda x: dense(x, act, m, e_norm), t64, [u.double() for u in upstream])
        where = f"{dtype} {act_name} {size}"
        for name, x, y in zip(("msg", "eself", "hg_edge", "hg_node"), outs, routs):
            self.assertEqual(x.dtype, dtype)
            self.assertEqual(x.shape, y.shape, where + " " + name)
            self.assertLessEqual(rel(x, y), tol, f"{where} {name}")
        real = t["nbr"] >= 0
        for name, x, y in zip(DIFFERENTIABLE, gk, gr):
            if name in ("sw", "h2sw"):
                # padded slots are structural (their switch is weight x mask, the mask constant): the op gives
                # no gradient there, the dense formula does; compare on the real slots.
                self.assertTrue(bool((x[~real] == 0).all()), where + " d/d" + name)
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

    def test_padded_slots(self):
        """Changing what sits in padded slots (edges, switches, rows read nowhere else) changes nothing."""
        act = Activation("silut:10.0")
        t = inputs(4, 8, 4, 6, 10, 30, torch.float64, 5)
        pad = t["nbr"] < 0
        self.assertTrue(bool(pad.any()))
        outs = op(t, act, 6, 3.0)
        self.assertEqual(float(outs[1][pad].abs().max()), 0.0)
        t2 = dict(t, edge=torch.where(pad.unsqueeze(-1), t["edge"] + 7.0, t["edge"]),
                  sw=torch.where(pad, t["sw"] + 0.5, t["sw"]), h2sw=torch.where(pad.unsqueeze(-1), t["h2sw"] - 2.0,
                                                                             t["h2sw"]))
        self.assertTrue(all(torch.equal(a, b) for a, b in zip(outs, op(t2, act, 6, 3.0))))

    def test_nan_propagates(self):
        """A NaN in a real edge (a simulation blowing up) reaches the outputs as in the dense formula, for every
        activation (the float logistic's range guard must not clamp it into a finite number)."""
        for dtype in (torch.float32, torch.float64):
            for act_name in ACTIVATIONS:
                t = inputs(4, 6, 4, 6, 10, 9, dtype, 8)
                b, j = 2, int((t["nbr"][2] >= 0).nonzero()[0])
                edge = t["edge"].clone()
                edge[b, j, 0] = float("nan")
                msg, eself, _, _ = op(dict(t, edge=edge), Activation(act_name), 6, 3.0)
                self.assertTrue(bool(torch.isnan(msg[b]).any()), f"{dtype} {act_name}")
                self.assertTrue(bool(torch.isnan(eself[b, j]).any()), f"{dtype} {act_name}")
                self.assertFalse(bool(torch.isnan(msg[3]).any()), f"{dtype} {act_name}: another centre")

    def test_gradcheck(self):
        for act_name in ACTIVATIONS:
            act = Activation(act_name)
            t = inputs(5, 4, 3, 2, 5, 4, torch.float64, 7)
            diff = [t[k].clone().requires_grad_(True) for k in DIFFERENTIABLE]

            def f(edge, sw, h2sw, node_ext, p, q):
                return op(dict(t, edge=edge, sw=sw, h2sw=h2sw, node_ext=node_ext, p=p, q=q), act, 3, 2.0)

            self.assertTrue(torch.autograd.gradcheck(f, diff, eps=1e-6, atol=1e-8), act_name)

    def test_not_twice_differentiable(self):
        t = inputs(3, 3, 2, 2, 4, 3, torch.float64, 1)
        edge = t["edge"].clone().requires_grad_(True)
        msg = op(dict(t, edge=edge), Activation("silu"), 2, 1.0)[0]
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            torch.autograd.grad([msg.sum()], [edge], create_graph=True)

    def test_weights_not_differentiable(self):
        t = inputs(2, 3, 2, 2, 4, 3, torch.float64, 1)
        with self.assertRaisesRegex(RuntimeError, "weights"):
            op(dict(t, w=t["w"].clone().requires_grad_(True)), Activation("silu"), 2, 1.0)

    def test_errors(self):
        t = inputs(2, 3, 2, 2, 4, 3, torch.float64, 1)
        with self.assertRaisesRegex(RuntimeError, "p must have shape"):
            op(dict(t, p=t["p"][:, :3]), Activation("silu"), 2, 1.0)
        with self.assertRaisesRegex(RuntimeError, "sw is Float, edge is Double"):
            op(dict(t, sw=t["sw"].float()), Activation("silu"), 2, 1.0)
        with self.assertRaisesRegex(RuntimeError, "activation kind"):
            op(t, Activation("gelu"), 2, 1.0)
        with self.assertRaisesRegex(RuntimeError, "n_msg=5"):
            op(t, Activation("silu"), 5, 1.0)
        with self.assertRaisesRegex(RuntimeError, "nbr holds row 3"):
            op(dict(t, nbr=torch.full_like(t["nbr"], 3)), Activation("silu"), 2, 1.0)
        with self.assertRaisesRegex(RuntimeError, "nbr must be int64"):
            op(dict(t, nbr=t["nbr"].int()), Activation("silu"), 2, 1.0)

    def test_scripted(self):
        @torch.jit.script
        def f(edge, nbr, sw, h2sw, node_ext, p, q, w):
            return torch.ops.deepmd_kernels.repflow_edge(edge, nbr, sw, h2sw, node_ext, p, q, w, 4, 7, 0.0, 0.0, 0.0,
                                                          3.0)

        t = inputs(3, 4, 3, 4, 6, 5, torch.float64, 2)
        ref = dense(t, Activation("silu"), 4, 3.0)
        for x, y in zip(f(*[t[k] for k in ORDER]), ref):
            self.assertLessEqual(rel(x, y), 1e-12)

    def test_non_contiguous(self):
        t = inputs(4, 5, 3, 4, 6, 5, torch.float64, 4)
        t2 = dict(t, edge=t["edge"].transpose(1, 2).contiguous().transpose(1, 2),
                  p=torch.cat([t["p"], t["p"]], dim=1)[:, :6], nbr=t["nbr"].t().contiguous().t())
        self.assertFalse(t2["edge"].is_contiguous() or t2["p"].is_contiguous() or t2["nbr"].is_contiguous())
        act = Activation("tanh")
        self.assertTrue(all(torch.equal(a, b) for a, b in zip(op(t, act, 4, 2.0), op(t2, act, 4, 2.0))))


    # the edge update needs F - n_msg = e
    UPDATE_SIZES = [s for s in SIZES if s[4] - s[5] == s[2]]
    ALPHAS = [1.0, 1.0 / math.sqrt(3.0)]

    def compare_update(self, dtype, tol, act_name, size, nang, alpha, seed=0):
        act = Activation(act_name)
        nb, nnei, e, n, f, m, rows = size
        t = update_inputs(inputs(nb, nnei, e, n, f, rows, dtype, seed), nang, seed + 2)
        e_norm = 12.0
        g = torch.Generator().manual_seed(seed + 1)
        upstream = [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)
                    for s in ((nb, m), (nb, nnei, e), (nb, 3, e), (nb, 3, n))]
        outs, gk = grads(lambda x: op_update(x, act, m, e_norm, alpha), t, upstream, DIFFERENTIABLE_UPDATE)
        t64 = {k: v.double() if v.is_floating_point() else v for k, v in t.items()}
        routs, gr = grads(lambda x: dense_update(x, act, m, e_norm, alpha), t64, [u.double() for u in upstream],
                          DIFFERENTIABLE_UPDATE)
        where = f"update {dtype} {act_name} {size} nang={nang} alpha={alpha:.4f}"
        for name, x, y in zip(("msg", "edge_new", "hg_edge", "hg_node"), outs, routs):
            self.assertEqual(x.dtype, dtype)
            self.assertEqual(x.shape, y.shape, where + " " + name)
            self.assertLessEqual(rel(x, y), tol, f"{where} {name}")
        real = t["nbr"] >= 0
        pad = ~real
        for name, x, y in zip(DIFFERENTIABLE_UPDATE, gk, gr):
            self.assertEqual(x.shape, y.shape, where + " d/d" + name)
            if name in ("sw", "h2sw"):
                self.assertTrue(bool((x[pad] == 0).all()), where + " d/d" + name)
                x, y = x[real], y[real]
            if name == "edge":
                # a padded slot's edge reaches edge_new only through alpha edge: exactly alpha times its gradient
                self.assertTrue(torch.equal(x[pad], (alpha * upstream[1])[pad]), where + " d/dedge padded")
                if dtype == torch.float64:
                    self.assertTrue(torch.equal(x[pad], y[pad]), where + " d/dedge padded")
            if name == "head":
                self.assertTrue(torch.equal(x, upstream[1][:, :nang]), where + " d/dhead")
            self.assertLessEqual(rel(x, y), tol, f"{where} d/d{name}")

    def test_update_float64(self):
        for act in ACTIVATIONS:
            for size in self.UPDATE_SIZES:
                for nang in angle_counts(size[1]):
                    for alpha in self.ALPHAS:
                        self.compare_update(torch.float64, 1e-12, act, size, nang, alpha)

    def test_update_float32(self):
        for act in ACTIVATIONS:
            for size in self.UPDATE_SIZES:
                for nang in angle_counts(size[1]):
                    for alpha in self.ALPHAS:
                        self.compare_update(torch.float32, 1e-5, act, size, nang, alpha)

    def test_update_gradcheck(self):
        for act_name in ACTIVATIONS:
            act = Activation(act_name)
            t = update_inputs(inputs(5, 4, 3, 2, 5, 4, torch.float64, 7), 2, 9)
            diff = [t[k].clone().requires_grad_(True) for k in ("edge", "p", "q", "head")]

            def f(edge, p, q, head):
                return op_update(dict(t, edge=edge, p=p, q=q, head=head), act, 2, 2.0, 1.0 / math.sqrt(3.0))

            self.assertTrue(torch.autograd.gradcheck(f, diff, eps=1e-6, atol=1e-8), act_name)

    def test_update_not_twice_differentiable(self):
        t = update_inputs(inputs(3, 3, 2, 2, 4, 3, torch.float64, 1), 2, 3)
        edge, head = t["edge"].clone().requires_grad_(True), t["head"].clone().requires_grad_(True)
        edge_new = op_update(dict(t, edge=edge, head=head), Activation("silu"), 2, 1.0, 0.5)[1]
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            torch.autograd.grad([edge_new.sum()], [edge, head], create_graph=True)

    def test_update_errors(self):
        t = update_inputs(inputs(2, 3, 2, 2, 4, 3, torch.float64, 1), 2, 3)  # e = 2, F = 4
        silu = Activation("silu")

        def refused(pattern, n_msg=2, **changes):
            with self.assertRaisesRegex(RuntimeError, pattern):
                op_update(dict(t, **changes), silu, n_msg, 1.0, 1.0)

        op_update(t, silu, 2, 1.0, 1.0)  # the valid call the refusals depart from
        refused("F - n_msg = 3 must be e_dim = 2", n_msg=1)
        refused("F - n_msg = 4 must be e_dim = 2", n_msg=0)
        refused("nang <= nnei", head=torch.zeros(2, 4, 2, dtype=torch.float64))
        refused("nang <= nnei", head=torch.zeros(2, 2, dtype=torch.float64))
        refused("head must have shape", head=torch.zeros(2, 2, 3, dtype=torch.float64))
        refused("head must have shape", head=torch.zeros(1, 2, 2, dtype=torch.float64))
        refused("head is Float, edge is Double", head=t["head"].float())
        refused("tail must have shape", tail=torch.zeros(3, dtype=torch.float64))
        refused("tail must have shape", tail=torch.zeros(1, 2, dtype=torch.float64))
        refused("tail is Float, edge is Double", tail=t["tail"].float())
        refused("self_scale must have shape", self_scale=torch.zeros(3, dtype=torch.float64))
        refused("self_scale must have shape", self_scale=torch.zeros(2, 1, dtype=torch.float64))
        refused("self_scale is Float, edge is Double", self_scale=t["self_scale"].float())
        refused("self_scale is empty", self_scale=torch.zeros(0, dtype=torch.float64))
        with torch.inference_mode():  # the CPU kernel refuses it too (inference mode skips the autograd kernel)
            refused("self_scale is empty", self_scale=torch.zeros(0, dtype=torch.float64))
        refused("weights", tail=t["tail"].clone().requires_grad_(True))
        refused("weights", self_scale=t["self_scale"].clone().requires_grad_(True))
        refused("weights", w=t["w"].clone().requires_grad_(True))

    def test_update_threads(self):
        """37 centres, 8 a task: several parallel chunks give bitwise the numbers one thread gives."""
        threads = torch.get_num_threads()
        act = Activation("silut:3.0")
        try:
            for dtype in (torch.float64, torch.float32):
                t = update_inputs(inputs(37, 15, 8, 6, 14, 20, dtype, 11), 7, 12)
                g = torch.Generator().manual_seed(13)
                upstream = [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)
                            for s in ((37, 6), (37, 15, 8), (37, 3, 8), (37, 3, 6))]
                results = []
                for n in (1, 4):
                    torch.set_num_threads(n)
                    self.assertEqual(torch.get_num_threads(), n)
                    results.append(grads(lambda x: op_update(x, act, 6, 5.0, 1.0 / math.sqrt(3.0)), t, upstream,
                                         DIFFERENTIABLE_UPDATE))
                one, four = results
                for x, y in zip(one[0] + one[1], four[0] + four[1]):
                    self.assertTrue(torch.equal(x, y), str(dtype))
        finally:
            torch.set_num_threads(threads)

    def test_update_scripted(self):
        @torch.jit.script
        def f(edge, nbr, sw, h2sw, node_ext, p, q, w, head, tail, self_scale):
            return torch.ops.deepmd_kernels.repflow_edge_update(edge, nbr, sw, h2sw, node_ext, p, q, w, 3, 7, 0.0, 0.0,
                                                                 0.0, 3.0, head, tail, self_scale, 0.5)

        t = update_inputs(inputs(3, 4, 3, 4, 6, 5, torch.float64, 2), 2, 4)
        ref = dense_update(t, Activation("silu"), 3, 3.0, 0.5)
        for x, y in zip(f(*[t[k] for k in ORDER + ["head", "tail", "self_scale"]]), ref):
            self.assertLessEqual(rel(x, y), 1e-12)

    def test_update_same_messages(self):
        """msg, hg_edge and hg_node (and the gradients of those alone) are bitwise repflow_edge's."""
        for dtype in (torch.float64, torch.float32):
            for act_name in ("tanh", "silut:10.0"):
                for size in self.UPDATE_SIZES:
                    nb, nnei, e, n, f, m, rows = size
                    t = update_inputs(inputs(nb, nnei, e, n, f, rows, dtype, 3), nnei // 2, 5)
                    g = torch.Generator().manual_seed(6)
                    upstream = [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)
                                for s in ((nb, m), (nb, nnei, e), (nb, 3, e), (nb, 3, n))]
                    upstream[1] = None  # no gradient reaches edge_new or eself
                    act = Activation(act_name)
                    plain = grads(lambda x: op(x, act, m, 4.0), t, upstream)
                    update = grads(lambda x: op_update(x, act, m, 4.0, 1.0 / math.sqrt(3.0)), t, upstream)
                    where = f"{dtype} {act_name} {size}"
                    for i in (0, 2, 3):
                        self.assertTrue(torch.equal(plain[0][i], update[0][i]), f"{where} output {i}")
                    for name, x, y in zip(DIFFERENTIABLE, plain[1], update[1]):
                        self.assertTrue(torch.equal(x, y), f"{where} d/d{name}")

if __name__ == "__main__":
    unittest_main.run()
