"""deepmd_kernels::repflow_env (deepmd/kernels) alone against a dense torch evaluation of the same formula
(deepmd/dpkit/dpa3.py's DescrptDPA3.geometry: env.env_mat, env.normalize and env.safe_norm for the edges, the
angle list of the first min(a_sel, nnei) slots strictly within a_rcut trimmed by used_width, its own switch,
the unit vectors' cosines packed by repflow_layer.pack_angles), written over flat [rows, 3] coordinates with
explicit centre rows (each centre a frame of its own, its coordinates as atom 0): all six outputs (a_mask
and the packed cosines' exact order included) and the coordinates' gradient of a random weighted sum of
every float output, and of some of them only (the op's backward sees undefined gradients), float64 to 1e-12
and float32 to 1e-5 (relative to the largest reference value, or to the case's largest one where a
reference is identically zero; float32 against the float64 reference from the same inputs); both switches
(the quintic with most neighbours in its switching region and some below it, the exponential with
deepmd-kit's rcut_smth near rcut), edge_init_use_dist on and off, protection 0 and 0.3; a_sel 0 (no angle
list: a_mask and a_sw [nb, 0], no cosine, the edge outputs and their gradient as with angles), a_sel below
the number of real neighbours within a_rcut (truncation), a_sel within nnei and above it; random systems
(atoms in a box at a minimum distance, lists by brute force within e_rcut nearest first as format_nlist,
ghost atoms that are neighbours only) of one and several frames (centre rows f nall + i), no centre, no
neighbour slot, one slot; centres with no neighbour, with exactly one (behind holes, and in the first
slot), without holes, lists with holes, neighbours beyond a_rcut within e_rcut and beyond e_rcut (the
switch clamped), virtual centres (type -1: not normalised), padded tails; coincident neighbours (d = 0, L =
0: a copy of the centre's row in an angle slot and in the last slot, and the centre's own row) with
protection > 0 give finite outputs and gradients equal to the reference's, and with protection 0 the same
non-finite h2sw and edge_in slots as the reference; torch.autograd.gradcheck in float64 w.r.t. the
coordinates (distances away from the cutoffs' discontinuities and kinks); 1 and 4 intra-op threads give
bitwise the same outputs and gradients (60 centres, several chunks); non-contiguous inputs give bitwise the
same; a double backward is refused; out-of-range nbr, centre and ctype, wrong coord, nbr, centre, ctype,
davg and dstd shapes and dtypes, dtype mismatches and davg or dstd requiring grad are refused; the op runs
inside TorchScript.
Usage: repflow_env_test.py OPS_LIBRARY."""

import unittest

import torch

from tests import unittest_main
from tests.ops.kernel_checks import WorstErrors, rel
from deepmd.dpkit import env
from deepmd.dpkit.dpa3 import used_width
from deepmd.dpkit.repflow_layer import pack_angles

INPUTS = ["coord", "nbr", "centre", "ctype", "davg", "dstd"]
SCALARS = ["e_rcut", "e_rcut_smth", "a_rcut", "a_rcut_smth", "a_sel", "protection", "exp_switch", "edge_dist"]
OUTPUTS = ["h2sw", "sw", "edge_in", "a_mask", "a_sw", "cosine"]
FLOAT_OUTPUTS = ["h2sw", "sw", "edge_in", "a_sw", "cosine"]
# (e_rcut, e_rcut_smth, a_rcut, a_rcut_smth) per switch (exp_switch False / True): the quintic's switching
# regions hold most neighbours, the minimum distance 0.9 some below them; the exponential switch with
# rcut_smth near rcut, as deepmd-kit recommends (exp(20 (r - rcut_smth) / rcut_smth) stays moderate)
CUTOFFS = {False: (4.5, 2.5, 3.2, 2.0), True: (4.5, 3.8, 3.2, 2.8)}
# (nf, nloc, nall, nnei): one frame with ghosts, several frames, no centre, one slot, no slot, and lists
# wider than the neighbours within e_rcut (padded tails)
SIZES = [(1, 12, 40, 20), (3, 9, 30, 16), (1, 0, 10, 8), (2, 4, 12, 1), (1, 5, 12, 0), (2, 10, 36, 40)]
A_SELS = [0, 3, 10, 100]  # none, truncating, within nnei (most sizes), above nnei
# loss subsets: the op's backward gets undefined gradients for the others
SUBSETS = [["h2sw"], ["sw"], ["edge_in"], ["a_sw"], ["cosine"], ["h2sw", "cosine"], ["sw", "edge_in", "a_sw"]]


def options(exp_switch=False, edge_dist=False, protection=0.0, a_sel=10):
    e_rcut, e_smth, a_rcut, a_smth = CUTOFFS[exp_switch]
    return dict(e_rcut=e_rcut, e_rcut_smth=e_smth, a_rcut=a_rcut, a_rcut_smth=a_smth, a_sel=a_sel,
                protection=protection, exp_switch=exp_switch, edge_dist=edge_dist)


def op(t, o):
    return torch.ops.deepmd_kernels.repflow_env(*[t[k] for k in INPUTS], *[o[k] for k in SCALARS])


def dense(t, o):
    """DescrptDPA3.geometry over flat coordinates: centre b is frame b, whose atom 0 is a copy of the
    centre's row (differentiable) and atom r + 1 row r, its list nbr[b] + 1 (-1 kept)."""
    coord, nbr, centre = t["coord"], t["nbr"], t["centre"]
    nb, nnei = nbr.shape[0], nbr.shape[1]
    frames = torch.cat([coord[centre].unsqueeze(1), coord.unsqueeze(0).expand(nb, -1, -1)], dim=1)
    nlist = torch.where(nbr >= 0, nbr + 1, torch.full_like(nbr, -1)).unsqueeze(1)  # [nb, 1, nnei]
    mask = nlist >= 0
    atype_local = t["ctype"].unsqueeze(1)
    env_e, diff, sw = env.env_mat(frames, nlist, o["e_rcut"], o["e_rcut_smth"], o["protection"], o["exp_switch"])
    dmatrix = env.normalize(env_e, atype_local, t["davg"], t["dstd"])
    h2 = dmatrix[..., 1:]
    h2sw = torch.where(mask.unsqueeze(-1), h2 * sw.unsqueeze(-1), torch.zeros_like(h2))
    edge_in = env.safe_norm(diff) if o["edge_dist"] else dmatrix[..., 0]
    ncut = min(o["a_sel"], nnei)  # a_sel 0: no candidate slot, A = 0 (the op's convention without angles)
    a_real = mask[:, :, :ncut] & (env.safe_norm(diff[:, :, :ncut]) < o["a_rcut"])
    nang = used_width(a_real)
    a_mask = a_real[:, :, :nang]
    a_nlist = torch.where(a_mask, nlist[:, :, :nang], torch.full_like(nlist[:, :, :nang], -1))
    _, a_diff, a_sw = env.env_mat(frames, a_nlist, o["a_rcut"], o["a_rcut_smth"], o["protection"], o["exp_switch"])
    unit = a_diff / (env.safe_norm(a_diff).unsqueeze(-1) + 1e-6)
    cosine = torch.matmul(unit, unit.transpose(-1, -2)) * (1 - 1e-6)
    return h2sw[:, 0], sw[:, 0], edge_in[:, 0], a_mask[:, 0], a_sw[:, 0], pack_angles(cosine, a_mask)


def positions(n, side, min_dist, g):
    """n points uniform in a cube of the given side, pairwise at least min_dist apart."""
    pts = torch.zeros(0, 3, dtype=torch.float64)
    while pts.shape[0] < n:
        p = torch.rand(1, 3, generator=g, dtype=torch.float64) * side
        if pts.shape[0] == 0 or float(((pts - p) ** 2).sum(-1).min()) >= min_dist ** 2:
            pts = torch.cat([pts, p])
    return pts


def distances(x, centres):
    d = x.unsqueeze(0) - x[centres].unsqueeze(1)
    return torch.sqrt((d * d).sum(-1))


def neighbour_list(x, nloc, nnei, rcut):
    """format_nlist's list for x's first nloc atoms: every other atom within rcut, nearest first (stable
    sort), the first nnei of them, -1 after."""
    r = distances(x, torch.arange(nloc))
    r[torch.arange(nloc), torch.arange(nloc)] = float("inf")
    r, order = torch.sort(r, dim=-1, stable=True)
    nl = torch.where(r <= rcut, order, torch.full_like(order, -1))
    if nl.shape[1] < nnei:
        nl = torch.cat([nl, torch.full([nloc, nnei - nl.shape[1]], -1, dtype=nl.dtype)], dim=1)
    return nl[:, :nnei]


def system(nf, nloc, nall, nnei, dtype, seed, o, ntypes=3, coincident=False, special=True, margin=1e-4,
           density=0.05, min_dist=0.9):
    """nf frames of nall atoms in a box, the first nloc of each the centres (rows f nall + i), lists within
    e_rcut; with `special`: centre 0 has no neighbour, centre 1 exactly one (its nearest, in the last slot
    behind holes), centre 2 no hole, centre 3 exactly one in slot 0, centre 4 atoms beyond e_rcut in two
    slots, the others holes anywhere; centres 5 and nb - 1 are virtual. With `coincident`, two rows are
    appended: a copy of centre 6's row in its slot 0, a copy of centre 7's in its last slot, and centre 8
    lists its own row. Real slots within `margin` of a_rcut or e_rcut (in the given precision) are padded:
    the float32 and float64 decisions and switches' kinks there differ. davg random, dstd in [0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    side = (nall / density) ** (1.0 / 3.0)
    xs, lists = [], []
    for f in range(nf):
        x = positions(nall, side, min_dist, g)
        nl = neighbour_list(x, nloc, nnei, o["e_rcut"])
        xs.append(x)
        lists.append(torch.where(nl >= 0, nl + f * nall, nl))
    coord = torch.cat(xs) if xs else torch.zeros(0, 3, dtype=torch.float64)
    nbr = torch.cat(lists) if lists else torch.zeros(0, nnei, dtype=torch.long)
    centre = (torch.arange(nloc).reshape(1, nloc) + torch.arange(nf).reshape(nf, 1) * nall).reshape(-1)
    nb = nf * nloc
    ctype = torch.randint(0, ntypes, (nb,), generator=g)
    if special and nnei > 0:
        holes = torch.rand(nb, nnei, generator=g) < 0.25
        if nb > 2:
            holes[2] = False
        nbr = torch.where(holes, torch.full_like(nbr, -1), nbr)
        if nb > 0:
            nbr[0] = -1
        if nb > 1:
            first = int(nbr[1][nbr[1] >= 0][0]) if bool((nbr[1] >= 0).any()) else int(centre[1] + 1)
            nbr[1] = -1
            nbr[1, nnei - 1] = first
        if nb > 3:
            nbr[3, 1:] = -1
            if int(nbr[3, 0]) < 0:
                nbr[3, 0] = centre[3] + 1
        if nb > 4:
            f0 = int(centre[4]) // nall * nall
            r = distances(coord[f0:f0 + nall], torch.tensor([int(centre[4]) - f0]))[0]
            beyond = torch.nonzero(r > o["e_rcut"] + 0.01).reshape(-1)
            if beyond.numel():
                nbr[4, nnei - 1] = f0 + int(beyond[0])
                if nnei > 2:
                    nbr[4, 1] = f0 + int(beyond[-1])
        ctype[5:6] = -1
        if nb > 6:
            ctype[nb - 1] = -1
    if coincident:
        assert nb > 8 and nnei > 2
        rows = coord.shape[0]
        coord = torch.cat([coord, coord[centre[6]].unsqueeze(0), coord[centre[7]].unsqueeze(0)])
        nbr[6] = torch.cat([torch.tensor([rows]), nbr[6, :-1]])
        nbr[7, nnei - 1] = rows + 1
        nbr[8, 1] = centre[8]
    coord = coord.to(dtype)
    if nb > 0 and nnei > 0:
        x = coord.double()
        d = x[nbr.clamp(min=0)] - x[centre].unsqueeze(1)
        r = torch.sqrt((d * d).sum(-1))
        near = torch.zeros_like(nbr, dtype=torch.bool)
        for cut in (o["a_rcut"], o["e_rcut"]):
            near |= (r - cut).abs() < margin
        nbr = torch.where(near, torch.full_like(nbr, -1), nbr)
    davg = (torch.randn(ntypes, nnei, 4, generator=g, dtype=torch.float64) * 0.1).to(dtype)
    dstd = (0.5 + torch.rand(ntypes, nnei, 4, generator=g, dtype=torch.float64)).to(dtype)
    return dict(coord=coord, nbr=nbr, centre=centre, ctype=ctype, davg=davg, dstd=dstd)


def double(t):
    return {k: v.double() if v.is_floating_point() else v for k, v in t.items()}


def evaluate(f, t, o):
    """(coord leaf, outputs by name) of f on t."""
    coord = t["coord"].clone().requires_grad_(True)
    return coord, dict(zip(OUTPUTS, f(dict(t, coord=coord), o)))


def gradient(coord, out, weights, use=FLOAT_OUTPUTS):
    loss = sum([(out[k] * weights[k].to(out[k].dtype)).sum() for k in use])
    g, = torch.autograd.grad([loss], [coord], allow_unused=True)
    return torch.zeros_like(coord) if g is None else g


def random_weights(out, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(out[k].shape, generator=g, dtype=torch.float64) for k in FLOAT_OUTPUTS}


def detached(out):
    return {k: v.detach() for k, v in out.items()}


class RepflowEnvTest(WorstErrors, unittest.TestCase):
    def compare(self, dtype, tol, o, size, seed=0, coincident=False, use=FLOAT_OUTPUTS, t=None):
        """The op against the float64 reference on system(size) (or t): every output and the gradient of
        `use`'s weighted sum. Returns the inputs and the op's outputs."""
        if t is None:
            t = system(*size, dtype, seed, o, coincident=coincident)
        c_ref, ref = evaluate(dense, double(t), o)
        weights = random_weights(ref, seed + 1)
        g_ref = gradient(c_ref, ref, weights, use)
        c_op, got = evaluate(op, t, o)
        g_op = gradient(c_op, got, weights, use)
        ref, got = detached(ref), detached(got)
        where = f"{dtype} {size} {o} seed={seed} coincident={coincident} use={use}"
        nb, nnei = t["nbr"].shape
        for k in OUTPUTS:
            self.assertEqual(got[k].shape, ref[k].shape, f"{where} {k}")
            self.assertEqual(got[k].dtype, torch.bool if k == "a_mask" else dtype, f"{where} {k}")
        self.assertEqual(tuple(got["h2sw"].shape), (nb, nnei, 3), where)
        self.assertTrue(torch.equal(got["a_mask"], ref["a_mask"]), where + " a_mask")
        a_mask, real = got["a_mask"], t["nbr"] >= 0
        self.assertEqual(got["cosine"].numel(), int((a_mask.sum(1) ** 2).sum()), where + " packed length")
        self.assertTrue(bool((got["h2sw"][~real] == 0).all()) and bool((got["sw"][~real] == 0).all()), where)
        self.assertTrue(bool((got["a_sw"][~a_mask] == 0).all()), where + " a_sw of padded angle slots")
        if o["edge_dist"]:
            self.assertTrue(bool((got["edge_in"][~real] == 0).all()), where + " padded edge_in")
        values = [ref[k] for k in FLOAT_OUTPUTS] + [g_ref]
        scale = max([float(y.abs().max()) if y.numel() else 0.0 for y in values] + [1e-300])
        for k in FLOAT_OUTPUTS:
            self.assertFalse(bool(got[k].isnan().any()), f"{where} NaN in {k}")
            err = rel(got[k], ref[k], scale)
            self.record(f"{dtype} {k}", err)
            self.assertLessEqual(err, tol, f"{where} {k}")
        self.assertEqual(g_op.shape, t["coord"].shape, where)
        self.assertTrue(bool(g_op.isfinite().all()), where + " non-finite gradient")
        err = rel(g_op, g_ref, scale)
        self.record(f"{dtype} d/dcoord", err)
        self.assertLessEqual(err, tol, where + " d/dcoord")
        return t, got

    def sweep(self, dtype, tol):
        for size in SIZES:
            for exp_switch in (False, True):
                for edge_dist in (False, True):
                    for protection in (0.0, 0.3):
                        for a_sel in A_SELS:
                            o = options(exp_switch, edge_dist, protection, a_sel)
                            self.compare(dtype, tol, o, size, seed=len(size) + sum(size))

    def test_float64(self):
        self.sweep(torch.float64, 1e-12)

    def test_float32(self):
        self.sweep(torch.float32, 1e-5)

    def test_many_seeds(self):
        for seed in range(10, 22):
            o = options(seed % 2 == 1, seed % 3 == 0, 0.3 * (seed % 4 == 1), A_SELS[seed % 4])
            self.compare(torch.float64, 1e-12, o, (2, 11, 34, 24), seed=seed)
            self.compare(torch.float32, 1e-5, o, (2, 11, 34, 24), seed=seed)

    def test_system_has_the_cases(self):
        """The random systems hold what the docstring promises: truncation by a_sel, neighbours beyond a_rcut
        within e_rcut and beyond e_rcut, holes, virtual centres, centres with none and one neighbour."""
        for exp_switch in (False, True):
            o = options(exp_switch, a_sel=3)
            t, got = self.compare(torch.float64, 1e-12, o, SIZES[0])
            nbr, centre, x = t["nbr"], t["centre"], t["coord"]
            real = nbr >= 0
            d = x[nbr.clamp(min=0)] - x[centre].unsqueeze(1)
            r = torch.where(real, torch.sqrt((d * d).sum(-1)), torch.full_like(d[..., 0], float("inf")))
            self.assertEqual(got["a_mask"].shape[1], 3)
            self.assertTrue(bool(((r[:, 3:] < o["a_rcut"]).sum(1) > 0).any()), "a_sel truncates a list")
            self.assertTrue(bool(((r > o["a_rcut"]) & (r <= o["e_rcut"])).any()), "beyond a_rcut within e_rcut")
            self.assertTrue(bool((real & (r > o["e_rcut"])).any()), "beyond e_rcut")
            self.assertTrue(bool((r < o["e_rcut_smth"]).any()), "below e_rcut_smth")
            self.assertTrue(bool(((r > o["e_rcut_smth"]) & (r < o["e_rcut"])).any()), "in the switching region")
            later = real[:, 1:] & ~real[:, :-1]
            self.assertTrue(bool(later[4:].any()), "holes between real slots")
            self.assertEqual(int(real[0].sum()), 0)
            self.assertEqual(int(real[1].sum()), 1)
            self.assertTrue(bool(real[1, -1]))
            self.assertTrue(bool(real[3, 0]) and int(real[3].sum()) == 1)
            self.assertTrue(bool((t["ctype"] < 0).any()) and bool((t["ctype"] >= 0).any()))
            self.assertTrue(bool((t["nbr"] >= t["centre"].shape[0]).any()), "ghost neighbours")
        for a_sel in (10, 100):
            _, got = self.compare(torch.float64, 1e-12, options(a_sel=a_sel), SIZES[0])
            self.assertLessEqual(got["a_mask"].shape[1], min(a_sel, SIZES[0][3]))
        _, got = self.compare(torch.float64, 1e-12, options(a_sel=100), SIZES[0])
        self.assertGreater(got["a_mask"].shape[1], 3)
        t = system(*SIZES[1], torch.float64, 1, options())
        self.assertEqual(t["coord"].shape[0], 3 * 30)
        self.assertTrue(bool((t["centre"] >= 60).any()) and bool((t["nbr"] >= 60).any()), "third frame's rows")
        self.assertTrue(bool(((t["nbr"] >= 0) & (t["nbr"] < 30)).any()), "first frame's rows")

    def test_partial_outputs(self):
        """A loss of some outputs only: the others' gradients reach the op's backward undefined."""
        for use in SUBSETS:
            for exp_switch in (False, True):
                for edge_dist in (False, True):
                    o = options(exp_switch, edge_dist, 0.3, 10)
                    self.compare(torch.float64, 1e-12, o, SIZES[1], seed=4, use=use)
                    self.compare(torch.float32, 1e-5, o, SIZES[1], seed=4, use=use)
                    self.compare(torch.float64, 1e-12, o, SIZES[0], seed=5, coincident=True, use=use)

    def test_no_angles(self):
        """a_sel 0: a_mask and a_sw [nb, 0], no cosine, and the edge outputs and their gradient as with
        angles (bitwise)."""
        for exp_switch in (False, True):
            t = system(*SIZES[0], torch.float64, 3, options(exp_switch))
            weights = None
            runs = []
            for a_sel in (0, 10):
                o = options(exp_switch, a_sel=a_sel)
                coord, out = evaluate(op, t, o)
                if weights is None:
                    weights = random_weights(out, 4)
                runs.append((detached(out), gradient(coord, out, weights, ["h2sw", "sw", "edge_in"])))
            (none, g_none), (some, g_some) = runs
            nb = t["nbr"].shape[0]
            self.assertEqual(tuple(none["a_mask"].shape), (nb, 0))
            self.assertEqual(tuple(none["a_sw"].shape), (nb, 0))
            self.assertEqual(tuple(none["cosine"].shape), (0,))
            self.assertGreater(some["cosine"].numel(), 0)
            for k in ("h2sw", "sw", "edge_in"):
                self.assertTrue(torch.equal(none[k], some[k]), k)
            self.assertTrue(torch.equal(g_none, g_some))

    def test_no_centres(self):
        for a_sel, nang in ((0, 0), (3, 1)):
            o = options(a_sel=a_sel)
            t = system(1, 0, 10, 8, torch.float64, 1, o)
            coord, out = evaluate(op, t, o)
            self.assertEqual(tuple(out["h2sw"].shape), (0, 8, 3))
            self.assertEqual(tuple(out["sw"].shape), (0, 8))
            self.assertEqual(tuple(out["edge_in"].shape), (0, 8))
            self.assertEqual(tuple(out["a_mask"].shape), (0, nang))  # used_width: 1 where there are candidates
            self.assertEqual(tuple(out["a_sw"].shape), (0, nang))
            self.assertEqual(tuple(out["cosine"].shape), (0,))
            g = gradient(coord, out, random_weights(out, 1))
            self.assertTrue(torch.equal(g, torch.zeros(10, 3, dtype=torch.float64)))
            self.compare(torch.float64, 1e-12, o, (1, 0, 10, 8), t=t)

    def test_coincident(self):
        """Neighbours at the centre's position (a copy of its row in an angle slot and in the last slot, its
        own row): L = 0, finite outputs and gradients, the reference's, with protection > 0."""
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            for exp_switch in (False, True):
                for edge_dist in (False, True):
                    for a_sel in (0, 3, 100):
                        o = options(exp_switch, edge_dist, 0.3, a_sel)
                        t, got = self.compare(dtype, tol, o, SIZES[0], seed=6, coincident=True)
                        if a_sel:
                            self.assertTrue(bool(got["a_mask"][6, 0]), "coincident angle slot")
                        # without the cosines (their gradient at d = 0 is 1e6 times the others')
                        self.compare(dtype, tol, o, SIZES[0], seed=6, coincident=True,
                                     use=["h2sw", "sw", "edge_in", "a_sw"])

    def test_coincident_without_protection(self):
        """protection 0 and L = 0: h2sw (0 / 0) and edge_in (1 / 0, without edge_init_use_dist) are not
        finite in the reference; the op has non-finite values at the same slots and only there."""
        for exp_switch in (False, True):
            for edge_dist in (False, True):
                o = options(exp_switch, edge_dist, 0.0, 10)
                t = system(*SIZES[0], torch.float64, 6, o, coincident=True)
                ref = dense(t, o)
                got = op(t, o)
                for k, x, y in zip(OUTPUTS, got, ref):
                    if k == "a_mask":
                        self.assertTrue(torch.equal(x, y))
                        continue
                    self.assertTrue(torch.equal(x.isfinite(), y.isfinite()), f"{o} {k}")
                    fin = y.isfinite()
                    self.assertLessEqual(rel(x[fin], y[fin]), 1e-12, f"{o} {k}")
                self.assertFalse(bool(ref[0].isfinite().all()))

    def test_gradcheck(self):
        for exp_switch in (False, True):
            for edge_dist in (False, True):
                for protection, a_sel in ((0.0, 4), (0.3, 100)):
                    o = options(exp_switch, edge_dist, protection, a_sel)
                    t = system(2, 5, 12, 8, torch.float64, 7, o, margin=1e-3, density=0.08)
                    self.assertGreater(int((t["nbr"] >= 0).sum()), 10)
                    coord = t["coord"].clone().requires_grad_(True)

                    def f(x):
                        out = op(dict(t, coord=x), o)
                        return tuple(out[i] for i in (0, 1, 2, 4, 5))

                    self.assertGreater(f(coord)[4].numel(), 0)
                    self.assertTrue(torch.autograd.gradcheck(f, [coord], eps=1e-6, atol=1e-8), f"{o}")

    def test_threads(self):
        """60 centres, 16 a task: several parallel chunks give bitwise the numbers one thread gives."""
        threads = torch.get_num_threads()
        try:
            for exp_switch in (False, True):
                o = options(exp_switch, False, 0.3, 10)
                t = system(3, 20, 40, 24, torch.float64, 9, o, coincident=True)
                runs = []
                for n in (1, 4):
                    torch.set_num_threads(n)
                    self.assertEqual(torch.get_num_threads(), n)
                    coord, out = evaluate(op, t, o)
                    g = gradient(coord, out, random_weights(out, 10))
                    runs.append([v.detach() for v in out.values()] + [g])
                for k, x, y in zip(OUTPUTS + ["d/dcoord"], *runs):
                    self.assertTrue(torch.equal(x, y), f"{o} {k}")
                self.compare(torch.float64, 1e-12, o, (3, 20, 40, 24), seed=9, coincident=True)
                self.compare(torch.float32, 1e-5, o, (3, 20, 40, 24), seed=9, coincident=True)
        finally:
            torch.set_num_threads(threads)

    def test_non_contiguous(self):
        o = options(True, False, 0.3, 10)
        t = system(*SIZES[1], torch.float64, 2, o)
        t2 = dict(t, coord=t["coord"].t().contiguous().t(), nbr=t["nbr"].t().contiguous().t(),
                  centre=torch.stack([t["centre"], t["centre"]], 1)[:, 0],
                  ctype=torch.stack([t["ctype"], t["ctype"]], 1)[:, 1],
                  davg=t["davg"].transpose(0, 1).contiguous().transpose(0, 1),
                  dstd=torch.cat([t["dstd"], t["dstd"]], dim=2)[..., 4:])
        self.assertFalse(any(t2[k].is_contiguous() for k in INPUTS))
        runs = []
        for x in (t, t2):
            coord, out = evaluate(op, x, o)
            runs.append([v.detach() for v in out.values()] + [gradient(coord, out, random_weights(out, 3))])
        for k, x, y in zip(OUTPUTS + ["d/dcoord"], *runs):
            self.assertTrue(torch.equal(x, y), k)

    def test_not_twice_differentiable(self):
        o = options(a_sel=10)
        t = system(*SIZES[1], torch.float64, 1, o)
        coord, out = evaluate(op, t, o)
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            gr, = torch.autograd.grad([(out["h2sw"] ** 2).sum() + (out["cosine"] ** 2).sum()], [coord],
                                      create_graph=True)
            torch.autograd.grad([gr.sum()], [coord])

    def test_errors(self):
        o = options(a_sel=10)
        t = system(*SIZES[1], torch.float64, 1, o)
        rows, (nb, nnei), ntypes = t["coord"].shape[0], t["nbr"].shape, t["davg"].shape[0]

        def refused(message, **changes):
            with self.assertRaisesRegex(RuntimeError, message):
                op(dict(t, **changes), o)

        bad = t["nbr"].clone()
        bad[2, 1] = rows
        refused(f"nbr holds .* outside \\[-1, {rows}\\)", nbr=bad)
        bad[2, 1] = -2
        refused("nbr holds -2", nbr=bad)
        refused("nbr must be int64", nbr=t["nbr"].int())
        refused("nbr must be int64", nbr=t["nbr"][0])
        bad = t["centre"].clone()
        bad[3] = rows
        refused(f"centre holds .* outside \\[0, {rows}\\)", centre=bad)
        bad[3] = -1
        refused("centre holds -1", centre=bad)
        refused("centre must be a CPU int64 tensor", centre=t["centre"][1:])
        refused("centre must be a CPU int64 tensor", centre=t["centre"].int())
        bad = t["ctype"].clone()
        bad[0] = ntypes
        refused(f"ctype holds .* outside \\[-1, {ntypes}\\)", ctype=bad)
        bad[0] = -2
        refused("ctype holds -2", ctype=bad)
        refused("ctype must be a CPU int64 tensor", ctype=t["ctype"].reshape(nb, 1))
        refused("davg must be", davg=t["davg"][:, 1:])
        refused("davg must be", davg=torch.cat([t["davg"], t["davg"][:, :1]], dim=1))
        refused("davg must be", davg=t["davg"][..., :3])
        refused("davg must be", davg=t["davg"][0])
        refused("dstd must have shape", dstd=t["dstd"][:2])
        refused("dstd must have shape", dstd=t["dstd"][:, 1:])
        refused("davg is Float", davg=t["davg"].float())
        refused("dstd is Float", dstd=t["dstd"].float())
        refused("davg is Double on cpu, coord is Float", coord=t["coord"].float())
        refused("float32 or float64 only", coord=t["coord"].half(), davg=t["davg"].half(), dstd=t["dstd"].half())
        refused("float32 or float64 only", coord=t["coord"].long())
        refused("davg requires grad", davg=t["davg"].clone().requires_grad_())
        refused("dstd requires grad", dstd=t["dstd"].clone().requires_grad_(),
                coord=t["coord"].clone().requires_grad_())
        refused(r"coord must be \[rows, 3\]", coord=t["coord"][:, :2])
        refused(r"coord must be \[rows, 3\]", coord=t["coord"].unsqueeze(0))
        refused(r"coord must be \[rows, 3\]", coord=t["coord"].reshape(-1))
        refused("nbr holds", coord=t["coord"][:rows - 1])  # the rows nbr reads must exist
        self.assertEqual(nnei, SIZES[1][3])

    def test_scripted(self):
        @torch.jit.script
        def f(coord, nbr, centre, ctype, davg, dstd):
            return torch.ops.deepmd_kernels.repflow_env(coord, nbr, centre, ctype, davg, dstd, 4.5, 3.8, 3.2, 2.8, 10,
                                                        0.3, True, False)

        o = options(True, False, 0.3, 10)
        t = system(*SIZES[1], torch.float64, 2, o)
        for k, x, y in zip(OUTPUTS, f(*[t[k] for k in INPUTS]), dense(t, o)):
            if k == "a_mask":
                self.assertTrue(torch.equal(x, y))
            else:
                self.assertLessEqual(rel(x, y.detach()), 1e-12, k)


if __name__ == "__main__":
    unittest_main.run()
