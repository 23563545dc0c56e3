"""Single-process tests of deepmd_comm::exchange_ghosts / exchange_ghosts_reverse, loaded into
Debian's Python torch. The oracle is a dense matrix built from the plan's meaning (deepmd/models/exchange_plan.py),
not the C++ code. Usage: ops_python_test.py LIBRARY [--script-out DIR]."""

import argparse
import os
import sys
import unittest

import torch

from deepmd.models.exchange_plan import encode, exchange_matrix

ops = None  # torch.ops.deepmd_comm once loaded


# A periodic 1-D chain on one process: ghosts of ghosts (multi-hop), two message pairs in one stage,
# a zero-count message, and rows sent to several ghosts.
NLOCAL, NGHOST = 5, 9
STAGES = [
    [("send", 0, [0, 1]), ("recv", 0, 2, 5)],                                      # rows 5,6
    [("send", 0, [5, 4, 3]), ("recv", 0, 3, 7)],                                   # 7 is a ghost of a ghost
    [("send", 0, [7, 6]), ("send", 0, []), ("recv", 0, 2, 10), ("recv", 0, 0, 12)],  # three hops
    [("send", 0, [2, 2]), ("recv", 0, 2, 12)],                                     # one owner, two ghosts
]


def plan():
    return encode(NLOCAL, NGHOST, STAGES)


# A plan that never sends a ghost row on (the reverse then reads ghost rows from its input directly).
ONE_HOP_STAGES = [
    [("send", 0, [3, 0, 4]), ("recv", 0, 3, 5)],
    [("send", 0, [1]), ("send", 0, [0, 0]), ("recv", 0, 1, 8), ("recv", 0, 2, 9)],
]


class ForwardAndReverseTest(unittest.TestCase):
    def test_forward_matches_matrix(self):
        for dtype in (torch.float64, torch.float32):
            x = torch.randn(NLOCAL + NGHOST, 7, dtype=dtype)
            E = exchange_matrix(NLOCAL, NGHOST, STAGES, dtype)
            torch.testing.assert_close(ops.exchange_ghosts(plan(), x), E @ x, rtol=0, atol=0)

    def test_ghost_of_ghost_reaches_three_hops(self):
        x = torch.arange(NLOCAL + NGHOST, dtype=torch.float64).unsqueeze(1)
        out = ops.exchange_ghosts(plan(), x).squeeze(1).tolist()
        self.assertEqual(out[:NLOCAL], [0, 1, 2, 3, 4])
        self.assertEqual(out[NLOCAL:], [0, 1, 0, 4, 3, 0, 1, 2, 2])

    def test_reverse_is_transpose(self):
        for stages, nghost in ((STAGES, NGHOST), (ONE_HOP_STAGES, 6)):
            for dtype in (torch.float64, torch.float32):
                g = torch.randn(NLOCAL + nghost, 3, dtype=dtype)
                E = exchange_matrix(NLOCAL, nghost, stages, dtype)
                torch.testing.assert_close(ops.exchange_ghosts_reverse(encode(NLOCAL, nghost, stages), g), E.T @ g,
                                           rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=1e-6)
                torch.testing.assert_close(ops.exchange_ghosts(encode(NLOCAL, nghost, stages), g), E @ g,
                                           rtol=0, atol=0)

    def test_adjoint_identity(self):
        torch.manual_seed(1)
        for _ in range(5):
            x = torch.randn(NLOCAL + NGHOST, 16, dtype=torch.float64)
            y = torch.randn(NLOCAL + NGHOST, 16, dtype=torch.float64)
            lhs = (ops.exchange_ghosts(plan(), x) * y).sum()
            rhs = (x * ops.exchange_ghosts_reverse(plan(), y)).sum()
            self.assertAlmostEqual(lhs.item(), rhs.item(), delta=1e-12 * abs(lhs.item()) + 1e-12)

    def test_owned_rows_alone(self):
        # The forward may take just the owned rows (it pads itself); the gradient is then [nlocal, F].
        E = exchange_matrix(NLOCAL, NGHOST, STAGES)
        x = torch.randn(NLOCAL, 6, dtype=torch.float64, requires_grad=True)
        out = ops.exchange_ghosts(plan(), x)
        torch.testing.assert_close(out, E[:, :NLOCAL] @ x, rtol=0, atol=0)
        w = torch.randn(NLOCAL + NGHOST, 6, dtype=torch.float64)
        (out * w).sum().backward()
        self.assertEqual(x.grad.shape, x.shape)
        torch.testing.assert_close(x.grad, E[:, :NLOCAL].T @ w, rtol=1e-14, atol=1e-14)
        self.assertTrue(torch.autograd.gradcheck(lambda t: ops.exchange_ghosts(plan(), t), (x,)))
        self.assertTrue(torch.autograd.gradgradcheck(lambda t: torch.tanh(ops.exchange_ghosts(plan(), t)).pow(3), (x,)))
        with self.assertRaisesRegex(RuntimeError, "or give the nlocal owned rows alone"):
            ops.exchange_ghosts(plan(), torch.randn(NLOCAL + 1, 6, dtype=torch.float64))
        with self.assertRaisesRegex(RuntimeError, "rows but the plan has"):
            ops.exchange_ghosts_reverse(plan(), torch.randn(NLOCAL, 6, dtype=torch.float64))

    def test_reverse_zeroes_ghost_rows(self):
        g = torch.ones(NLOCAL + NGHOST, 2, dtype=torch.float64)
        out = ops.exchange_ghosts_reverse(plan(), g)
        self.assertTrue(torch.all(out[NLOCAL:] == 0))
        # Row 0 owns ghosts 5, 7 (via 5), 10 (via 7): 1 + 3; row 2 owns 12 and 13: 1 + 2.
        self.assertEqual(out[:NLOCAL, 0].tolist(), [4, 3, 3, 2, 2])

    def test_out_of_place_and_noncontiguous(self):
        base = torch.randn(3, NLOCAL + NGHOST, dtype=torch.float64)
        x = base.t()  # non-contiguous view
        before = x.clone()
        out = ops.exchange_ghosts(plan(), x)
        self.assertTrue(torch.equal(x, before), "the input must not be modified")
        self.assertNotEqual(out.data_ptr(), x.data_ptr())
        torch.testing.assert_close(out, exchange_matrix(NLOCAL, NGHOST, STAGES) @ x)

    def test_degenerate_plans(self):
        cases = [
            (0, 0, []),                                      # nothing at all
            (4, 0, []),                                      # no ghosts, no stages
            (4, 0, [[("send", 0, []), ("recv", 0, 0, 4)]]),  # empty messages
            (0, 0, [[("send", 0, []), ("recv", 0, 0, 0)]]),  # an empty subdomain's plan
        ]
        for nlocal, nghost, stages in cases:
            p = encode(nlocal, nghost, stages)
            for width in (0, 3):
                x = torch.randn(nlocal + nghost, width, dtype=torch.float64, requires_grad=True)
                out = ops.exchange_ghosts(p, x)
                torch.testing.assert_close(out, x)
                out.sum().backward()
                torch.testing.assert_close(ops.exchange_ghosts_reverse(p, x.detach()), x.detach())


class AutogradTest(unittest.TestCase):
    def test_gradcheck_both_ops(self):
        x = torch.randn(NLOCAL + NGHOST, 4, dtype=torch.float64, requires_grad=True)
        p = plan()
        self.assertTrue(torch.autograd.gradcheck(lambda t: ops.exchange_ghosts(p, t), (x,)))
        self.assertTrue(torch.autograd.gradcheck(lambda t: ops.exchange_ghosts_reverse(p, t), (x,)))

    def test_double_backward(self):
        p = plan()
        x = torch.randn(NLOCAL + NGHOST, 4, dtype=torch.float64, requires_grad=True)
        # A nonlinear function of the exchanged features, so second derivatives are not trivially zero.
        f = lambda t: torch.tanh(ops.exchange_ghosts(p, t) * 0.7).pow(3)
        self.assertTrue(torch.autograd.gradgradcheck(f, (x,)))
        g = lambda t: torch.sin(ops.exchange_ghosts_reverse(p, t))
        self.assertTrue(torch.autograd.gradgradcheck(g, (x,)))

    def test_forces_like_pipeline(self):
        # energy = sum over local rows of a per-row function of exchanged features; the gradient must
        # equal the dense-matrix computation (this is how models use the op).
        p = plan()
        E = exchange_matrix(NLOCAL, NGHOST, STAGES)
        x = torch.randn(NLOCAL + NGHOST, 5, dtype=torch.float64, requires_grad=True)
        e1 = torch.cos(ops.exchange_ghosts(p, x)).sum()
        (g1,) = torch.autograd.grad(e1, x)
        x2 = x.detach().clone().requires_grad_()
        e2 = torch.cos(E @ x2).sum()
        (g2,) = torch.autograd.grad(e2, x2)
        torch.testing.assert_close(g1, g2, rtol=1e-13, atol=1e-13)


class ValidationTest(unittest.TestCase):
    def assertRejected(self, p, x, *fragments):
        with self.assertRaises(RuntimeError) as ctx:
            ops.exchange_ghosts(p, x)
        for fragment in fragments:
            self.assertIn(fragment, str(ctx.exception))

    def x(self, rows=NLOCAL + NGHOST):
        return torch.zeros(rows, 2, dtype=torch.float64)

    def mutate(self, index, value):
        p = plan()
        p[index] = value
        return p

    def test_header_fields(self):
        self.assertRejected(torch.zeros(4, dtype=torch.int32), self.x(), "fewer than the 10-word header")
        self.assertRejected(self.mutate(0, 7), self.x(), "magic is 7")
        self.assertRejected(self.mutate(1, 2), self.x(), "version is 2")
        self.assertRejected(self.mutate(2, 5), self.x(), "length is 5")
        self.assertRejected(self.mutate(4, 3), self.x(), "rank 3 / size 1")
        self.assertRejected(encode(2, 0, [], rank=0, size=2), self.x(2), "communicator is none", "size is 2")
        self.assertRejected(self.mutate(6, -1), self.x(), "nlocal is -1")
        self.assertRejected(self.mutate(7, -3), self.x(), "nghost is -3")
        self.assertRejected(self.mutate(8, 99), self.x(), "99 stages")

    def test_messages(self):
        self.assertRejected(encode(2, 1, [[("send", 0, [0]), ("recv", 0, 1, 3)]]), self.x(3),
                            "receive lands at row 3", "next unfilled row is 2")
        self.assertRejected(encode(2, 1, [[("send", 0, [2]), ("recv", 0, 1, 2)]]), self.x(3),
                            "sends row 2", "rows [0, 2)")
        self.assertRejected(encode(2, 1, [[("send", 1, [0]), ("recv", 1, 1, 2)]]), self.x(3),
                            "peer rank 1 is outside [0, 1)")
        self.assertRejected(encode(2, 2, [[("send", 0, [0]), ("recv", 0, 1, 2)]]), self.x(4),
                            "receives fill 1 ghost rows; nghost is 2")
        self.assertRejected(encode(2, 2, [[("send", 0, [0]), ("recv", 0, 2, 2)]]), self.x(4), "self send")
        self.assertRejected(encode(2, 1, [[("send", 0, [-1]), ("recv", 0, 1, 2)]]), self.x(3), "sends row -1")
        p = plan()
        p[HEADER_STAGE0_KIND] = 5
        self.assertRejected(p, self.x(), "kind is 5")

    def test_tensor_arguments(self):
        self.assertRejected(plan(), self.x(NLOCAL + NGHOST + 1), "have 15 rows", "nlocal + nghost = 5 + 9 = 14")
        self.assertRejected(plan().to(torch.int64), self.x(), "1-D int32 CPU tensor")
        self.assertRejected(plan(), torch.zeros(NLOCAL + NGHOST, dtype=torch.float64), "[nlocal + nghost, F]")
        self.assertRejected(plan(), torch.zeros(NLOCAL + NGHOST, 2, dtype=torch.int64), "float32 or float64")
        with self.assertRaises(RuntimeError) as ctx:
            ops.exchange_ghosts_reverse(plan().to(torch.int64), self.x())
        self.assertIn("1-D int32 CPU tensor", str(ctx.exception))


HEADER_STAGE0_KIND = 10 + 2 * len(STAGES)  # first word of the message table


class ScriptedModule(torch.nn.Module):
    """What a model's with-comm graph does: exchange, a nonlinear layer, energy, forces by autograd."""

    def __init__(self, plan, x, expected_exchange, expected_energy, expected_grad):
        super().__init__()
        self.register_buffer("expected_exchange", expected_exchange)
        self.register_buffer("example_plan", plan)
        self.register_buffer("example_x", x)
        self.register_buffer("expected_energy", expected_energy)
        self.register_buffer("expected_grad", expected_grad)

    def forward(self, plan: torch.Tensor, x: torch.Tensor):
        x = x.detach().requires_grad_(True)
        h = torch.ops.deepmd_comm.exchange_ghosts(plan, x)
        energy = torch.tanh(h).pow(2).sum()
        grad = torch.autograd.grad([energy], [x])[0]
        assert grad is not None
        return energy.detach(), grad

    @torch.jit.export
    def exchange(self, plan: torch.Tensor, x: torch.Tensor):
        return torch.ops.deepmd_comm.exchange_ghosts(plan, x)


def write_scripted_module(directory):
    torch.manual_seed(7)
    x = torch.randn(NLOCAL + NGHOST, 6, dtype=torch.float64)
    p = plan()
    E = exchange_matrix(NLOCAL, NGHOST, STAGES)
    xe = x.clone().requires_grad_()
    energy = torch.tanh(E @ xe).pow(2).sum()
    (grad,) = torch.autograd.grad(energy, xe)
    module = torch.jit.script(ScriptedModule(p, x, E @ x, energy.detach(), grad))
    e, g = module(p, x)  # the scripted module agrees with the dense oracle in Python too
    torch.testing.assert_close(e, energy.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(g, grad, rtol=1e-14, atol=1e-15)
    path = os.path.join(directory, "exchange_module.pt")
    module.save(path)
    return path


def main():
    global ops
    parser = argparse.ArgumentParser()
    parser.add_argument("library")
    parser.add_argument("--script-out", help="also save a scripted module for the C++ check here")
    args, rest = parser.parse_known_args()
    torch.ops.load_library(args.library)
    ops = torch.ops.deepmd_comm
    if args.script_out:
        print("wrote", write_scripted_module(args.script_out))
    result = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
