"""Special cases of the LAMMPS plugin, one per invocation:

    cases_test.py OPS_LIBRARY LMP RUN_MPI ARCHIVE_DIR DP_EVAL CASE

empty_subdomain, null_atoms, triclinic, slab: N ranks == 1 rank. model_deviation: the deviation file
on 2 ranks == on 1 rank, and its values == those computed here from each model's own forces.
standalone: 1 rank in LAMMPS == the runtime's standalone evaluation (dp_eval). failures: bad inputs
exit non-zero with a message that names the cause, within a timeout, on several ranks.
"""
import io
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, Optional

import numpy as np
import torch

from tests.lammps import harness
from tests.lammps.models import FP64, archive_path

RNG_SEED = 4242
INJECTED_FAILURE = "injected failure inside the with-comm graph on rank 1"


class FailsOnRank1(torch.nn.Module):
    """Wraps a with-comm graph and raises on rank 1 before its first exchange (a failure only one rank
    meets, like running out of memory): the other rank is then waiting inside that exchange."""

    __constants__ = ["message"]

    def __init__(self, with_comm):
        super().__init__()
        self.with_comm = with_comm
        self.message = INJECTED_FAILURE

    @torch.jit.export
    def forward_lower_with_comm(self, coord: torch.Tensor, atype: torch.Tensor, nlist: torch.Tensor,
                                fparam: Optional[torch.Tensor], aparam: Optional[torch.Tensor],
                                do_atomic_virial: bool, plan: torch.Tensor) -> Dict[str, torch.Tensor]:
        if int(plan[4]) == 1:  # the plan's rank word (docs/exchange_plan.md)
            raise RuntimeError(self.message)
        return self.with_comm.forward_lower_with_comm(coord, atype, nlist, fparam, aparam, do_atomic_virial, plan)


class Case:
    def __init__(self, ops_library, lmp, run_mpi, archive_dir, dp_eval, work):
        self.lammps = harness.Lammps(lmp, run_mpi, work)
        self.ops_library = ops_library
        self.archive_dir, self.dp_eval, self.work = archive_dir, dp_eval, work
        self.rng = np.random.default_rng(RNG_SEED)

    def model(self, name, elements="O H", **kwargs):
        return harness.Model(archive_path(self.archive_dir, name), elements, **kwargs)

    def failing_model(self):
        """dpa3 whose with-comm graph raises on rank 1 only, so rank 0 waits in the first exchange."""
        from deepmd.tools.export import REGULAR_ENTRY, WITH_COMM_ENTRY, write_archive
        torch.ops.load_library(self.ops_library)
        reader = torch._C.PyTorchFileReader(archive_path(self.archive_dir, "dpa3"))
        with_comm = torch.jit.load(io.BytesIO(bytes(reader.get_record(WITH_COMM_ENTRY))))
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(FailsOnRank1(with_comm)), buffer)
        path = os.path.join(self.work, "fails_on_rank1.pt2")
        write_archive(path, json.loads(bytes(reader.get_record("metadata.json"))),
                      bytes(reader.get_record(REGULAR_ENTRY)), buffer.getvalue())
        return harness.Model(path, "O H")

    def regular_only_model(self):
        """The use_loc_mapping DPA3 archived without its with-comm graph, as an exporter that follows
        deepmd-kit (use_loc_mapping: one rank only) would write it: it passes messages, so it cannot run on
        several ranks."""
        from deepmd.tools.export import REGULAR_ENTRY, write_archive
        reader = torch._C.PyTorchFileReader(archive_path(self.archive_dir, "dpa3_loc_mapping"))
        meta = json.loads(bytes(reader.get_record("metadata.json")))
        assert meta["model_config"]["descriptor"]["use_loc_mapping"] is True, meta["model_config"]
        meta.update(has_comm_artifact=False, graphs={"regular": REGULAR_ENTRY})
        path = os.path.join(self.work, "regular_only.pt2")
        write_archive(path, meta, bytes(reader.get_record(REGULAR_ENTRY)), None)
        return harness.Model(path, "O H")

    def parity(self, label, system, grids, script_for_grid, tolerance=FP64):
        reference = self.lammps.run(f"{label}_ref", 1, system, script_for_grid("1 1 1"))
        problems = []
        for grid in grids:
            nranks = int(np.prod([int(g) for g in grid.split()]))
            result = self.lammps.run(f"{label}_{grid.replace(' ', '')}", nranks, system, script_for_grid(grid))
            found = harness.compare(reference, result, **tolerance, label=f"[{label} {grid}] ")
            print(f"{label} {grid}: {'OK' if not found else 'DIFFERENT'}")
            problems += found
        assert not problems, "\n".join(problems[:40])
        return reference

    # --- cases -------------------------------------------------------------------------------------

    def empty_subdomain(self):
        """Atoms on one side of an elongated box: ranks with no atoms at all; `run 0`, then 5 steps that
        reuse the cached topology (no rebuild)."""
        lengths = (30.0, 10.0, 10.0)
        positions = harness.random_positions(self.rng, np.array([0.5, 0, 0]), np.array([12.5, 10, 10]), 60, 1.7)
        types = self.rng.integers(1, 3, len(positions))
        velocities = 0.5 * self.rng.standard_normal((len(positions), 3))
        system = harness.System(positions, types, lengths, 2, velocities=velocities)
        model = self.model("dpa3")
        reference = self.parity("empty", system, ["3 1 1", "4 1 1"],
                                lambda grid: harness.lammps_input(model, grid=grid, steps=5, skin=2.0))
        assert "Neighbor list builds = 0" in reference.output, "the 5 steps rebuilt the topology"

    def null_atoms(self):
        """NULL atoms (type 3): mixed in and straddling the x = 8 boundary with velocities across it, and
        alone (isolated) in the last subdomain, whose rank owns only that NULL atom. Their forces and
        energies are exactly zero, and the real atoms see what they see without them."""
        lengths = (24.0, 10.0, 10.0)
        real = harness.random_positions(self.rng, np.array([2.0, 0, 0]), np.array([13.0, 10, 10]), 70, 1.6)
        near_boundary = np.array([[7.8, 2.0, 2.0], [8.2, 5.0, 5.0], [7.9, 8.0, 3.0]])
        keep = np.all(np.linalg.norm(real[:, None, :] - near_boundary[None], axis=2) > 1.6, axis=1)
        real = real[keep]
        isolated = np.array([[20.0, 5.0, 5.0]])
        positions = np.concatenate([real, near_boundary, isolated])
        types = np.concatenate([self.rng.integers(1, 3, len(real)), [3] * len(near_boundary), [3]])
        velocities = 0.3 * self.rng.standard_normal((len(positions), 3))
        velocities[len(real):len(real) + 3, 0] = [40.0, -40.0, 40.0]  # NULL atoms cross x = 8
        system = harness.System(positions, types, lengths, 3, velocities=velocities)
        model = self.model("dpa3", "O H NULL")
        reference = self.parity("null", system, ["3 1 1", "2 1 1"],
                                lambda grid: harness.lammps_input(model, grid=grid, steps=5, rebuild_every_step=True))
        null = slice(len(real), len(positions))
        for step, frame in reference.frames.items():
            for column in ("fx", "fy", "fz", "c_pe"):
                assert np.all(frame[column][null] == 0.0), f"NULL atoms have non-zero {column} at step {step}"
        crossed = (reference.frames[0]["x"][null][:3] < 8) != (reference.frames[5]["x"][null][:3] < 8)
        assert crossed.sum() >= 2, "NULL atoms did not cross the x = 8 boundary"
        # Without the NULL atoms, the real atoms' energy and forces are the same.
        alone = harness.System(real, types[:len(real)], lengths, 2)
        without = self.lammps.run("null_removed", 1, alone, harness.lammps_input(self.model("dpa3")))
        with_null = reference.frames[0]
        assert abs(without.thermo[0, 1] - reference.thermo[0, 1]) < 1e-9, "NULL atoms changed the energy"
        for column in ("fx", "fy", "fz"):
            np.testing.assert_allclose(with_null[column][:len(real)], without.frames[0][column], rtol=0, atol=1e-10)

    def triclinic(self):
        system = harness.dense_system(self.rng, (16.0, 14.0, 12.0), 100, 2, tilt=(3.0, -2.0, 1.5),
                                      velocity_scale=30.0)
        model = self.model("dpa3")
        self.parity("triclinic", system, ["2 1 1", "2 2 1"],
                    lambda grid: harness.lammps_input(model, grid=grid, steps=3, rebuild_every_step=True))

    def slab(self):
        """Open in z (p p f), split along the open direction too."""
        positions = harness.random_positions(self.rng, np.array([0, 0, 3.0]), np.array([14.0, 12.0, 11.0]), 80, 1.6)
        system = harness.System(positions, self.rng.integers(1, 3, 80), (14.0, 12.0, 14.0), 2,
                                velocities=10.0 * self.rng.standard_normal((80, 3)))
        model = self.model("dpa3")
        self.parity("slab", system, ["2 1 1", "1 1 2", "2 1 2"],
                    lambda grid: harness.lammps_input(model, grid=grid, boundary="p p f", steps=3,
                                                      rebuild_every_step=True))

    def model_deviation(self):
        system = harness.dense_system(self.rng, (14.0, 12.0, 12.0), 90, 2, velocity_scale=20.0)
        first, second = (archive_path(self.archive_dir, n) for n in ("dpa3", "dpa3_second"))
        model = harness.Model(first, "O H", extra_style_args="out_freq 2 out_file devi.out atomic relative 0.5")
        script = lambda grid: harness.lammps_input(model, grid=grid, steps=4, rebuild_every_step=True,
                                                   archives=f"{first} {second}")
        one = self.lammps.run("devi_1", 1, system, script("1 1 1"))
        two = self.lammps.run("devi_2", 2, system, script("2 1 1"))
        table_one = np.loadtxt(os.path.join(one.directory, "devi.out"))
        table_two = np.loadtxt(os.path.join(two.directory, "devi.out"))
        # Steps 0 (run 0), 0 (the next run's setup), 2, 4; 8 columns, then every atom's deviation.
        assert table_one.shape == (4, 8 + 90), table_one.shape
        assert list(table_one[:, 0]) == [0, 0, 2, 4], table_one[:, 0]
        np.testing.assert_allclose(table_two, table_one, rtol=0, atol=1e-10)
        with open(os.path.join(one.directory, "devi.out")) as f:
            header = f.readline().split()
        assert header[:3] == ["#", "step", "max_devi_v"] and header[-1] == "devi_e", header
        # The deviation from each model's own forces (single-model runs of the same frame).
        forces = []
        for name in ("dpa3", "dpa3_second"):
            alone = self.lammps.run(f"devi_{name}", 1, system, harness.lammps_input(self.model(name)))
            forces.append(np.stack([alone.frames[0][c] for c in ("fx", "fy", "fz")], axis=1))
        forces = np.array(forces)
        mean = forces.mean(axis=0)
        devi = np.sqrt(((forces - mean) ** 2).sum(axis=2).mean(axis=0)) / (np.linalg.norm(mean, axis=1) + 0.5)
        row = table_one[0]
        np.testing.assert_allclose(row[8:], devi, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(row[[4, 5, 6]], [devi.max(), devi.min(), devi.mean()], rtol=1e-9)
        print("model deviation: 2 ranks == 1 rank; values == numpy from each model's forces")

    def parameters(self):
        """fparam / aparam reach the model (the energy depends on them) the same way on 2 ranks as on 1;
        a wrong count is an error naming it."""
        system = harness.dense_system(self.rng, (14.0, 12.0, 12.0), 80, 2, velocity_scale=10.0)
        energies = []
        for fparam in ("0.3 -0.2", "0.9 -0.2"):
            model = self.model("dpa3_params", extra_style_args=f"fparam {fparam} aparam 0.7")
            reference = self.parity(f"params_{fparam.split()[0]}", system, ["2 1 1"],
                                    lambda grid: harness.lammps_input(model, grid=grid, steps=2,
                                                                      rebuild_every_step=True))
            energies.append(reference.thermo[0, 1])
        assert abs(energies[0] - energies[1]) > 1e-6, "fparam does not change the energy"
        code, output, _ = self.lammps.launch("params_missing", 2, system, harness.lammps_input(
            self.model("dpa3_params", extra_style_args="fparam 0.3"), grid="2 1 1"), timeout=60)
        assert code != 0 and "takes 2 frame parameters" in output, output[-2000:]

    def standalone(self):
        """1 rank in LAMMPS == dp_eval (the runtime's standalone path, its own periodic images)."""
        tilt = (2.0, -1.0, 1.0)
        system = harness.dense_system(self.rng, (13.0, 12.0, 11.0), 80, 2, tilt=tilt)
        result = self.lammps.run("standalone", 1, system, harness.lammps_input(self.model("dpa3")))
        lx, ly, lz = system.lengths
        lattice = [lx, 0, 0, tilt[0], ly, 0, tilt[1], tilt[2], lz]
        xyz = os.path.join(self.work, "frame.xyz")
        with open(xyz, "w") as f:
            f.write(f"{len(system.positions)}\n")
            f.write('Lattice="%s" Properties=species:S:1:pos:R:3 pbc="T T T"\n' % " ".join(map(repr, lattice)))
            for t, p in zip(system.types, system.positions):
                f.write("%s %r %r %r\n" % (["O", "H"][t - 1], *p))
        out = json.loads(subprocess.run([self.dp_eval, archive_path(self.archive_dir, "dpa3"), xyz, "--json"],
                                        check=True, stdout=subprocess.PIPE, text=True).stdout)
        frame = result.frames[0]
        lammps_forces = np.stack([frame["fx"], frame["fy"], frame["fz"]], axis=1)
        np.testing.assert_allclose(lammps_forces, np.array(out["forces"]), rtol=0, atol=1e-10)
        assert abs(result.thermo[0, 1] - out["energy"]) < 1e-9, (result.thermo[0, 1], out["energy"])
        w = np.array(out["virial"]).reshape(3, 3)
        # LAMMPS virial (xx yy zz xy xz yz) from the pressure; the runtime's W[a][b] = sum F_a r_b.
        expected = [w[0, 0], w[1, 1], w[2, 2], w[1, 0], w[2, 0], w[2, 1]]
        np.testing.assert_allclose(result.thermo[0, 3:9], expected, rtol=1e-9, atol=1e-9)
        print("standalone: LAMMPS (1 rank) == dp_eval: energy, forces, virial")

    def failures(self):
        """Each bad input exits non-zero with its message, within 60 s, on 2 ranks (4 for the missing archive),
        and so does a graph that fails on one rank while the other waits in an exchange."""
        system = harness.dense_system(self.rng, (14.0, 12.0, 12.0), 60, 2)
        dpa3 = self.model("dpa3")
        cases = [
            ("no_with_comm", 2, harness.lammps_input(self.regular_only_model(), grid="2 1 1"),
             "has no with-comm graph"),
            ("newton_off", 2, harness.lammps_input(dpa3, grid="2 1 1").replace("units metal", "units metal\nnewton off"),
             "needs 'newton on'"),
            ("units_real", 2, harness.lammps_input(dpa3, grid="2 1 1").replace("units metal", "units real"),
             "needs 'units metal'"),
            ("unknown_element", 2, harness.lammps_input(self.model("dpa3", "O C"), grid="2 1 1"), "element 'C' (atom type 2)"),
            ("missing_spins", 2, harness.lammps_input(self.model("dpa3_spin", "Ni O"), grid="2 1 1").replace(
                "pair_style deepmd ", "pair_style deepmd/spin "), "d2_sp 4 ghost yes"),
            ("bad_keyword", 2, harness.lammps_input(dpa3, grid="2 1 1").replace("dpa3.pt2", "dpa3.pt2 out_freqq 3"),
             "'out_freqq' is neither"),
            ("missing_archive", 4, harness.lammps_input(dpa3, grid="2 2 1").replace("dpa3.pt2", "missing.pt2"),
             "missing.pt2"),
        ]
        cases.append(("rank_fails_in_graph", 2, harness.lammps_input(self.failing_model(), grid="2 1 1"),
                      INJECTED_FAILURE))
        corrupt = os.path.join(self.work, "corrupt.pt2")
        with open(corrupt, "wb") as f:
            f.write(b"PK\x03\x04 this is not a model archive")
        cases.append(("corrupt_archive", 2, harness.lammps_input(harness.Model(corrupt, "O H"), grid="2 1 1"),
                      "corrupt.pt2"))
        # Spins of 2 μB put virtual atoms 0.6 Å out and the lists reach twice that beyond rcut: the default
        # ghost shell (rcut 5 + skin 1) is too thin for the 7.2 Å needed.
        spinning = harness.System(system.positions, system.types, system.lengths, 2,
                                  spins=np.tile([0.0, 0.0, 1.0, 2.0], (len(system.positions), 1)))
        cases = [case + (system,) for case in cases] + [
            ("spin_ghost_cutoff", 2, harness.lammps_input(self.model("dpa3_spin", "Ni O", spin=True), grid="2 1 1"),
             "add 'comm_modify cutoff 7.2", spinning)]
        problems = []
        for name, nranks, script, message, atoms in cases:
            code, output, _ = self.lammps.launch(f"fail_{name}", nranks, atoms, script, timeout=60)
            verdict = "ok" if code not in (0, 137) and message in output else "WRONG"
            print(f"failure {name}: exit {code}, {verdict}")
            if verdict != "ok":
                problems.append(f"{name}: exit {code}, expected a message containing {message!r}:\n{output[-1500:]}")
        assert not problems, "\n".join(problems)


    def profile(self):
        """DEEPMD_PROFILE: each rank's file covers the last run only: its setup (a rebuild) and its 4 steps
        (none rebuild, as LAMMPS's own count says), the atoms it owned, and exchange time inside graph
        time inside pair time (what tests/bench reads)."""
        lengths = (16.0, 10.0, 10.0)
        positions = harness.random_positions(self.rng, np.zeros(3), np.array(lengths), 110, 1.6)
        system = harness.System(positions, self.rng.integers(1, 3, len(positions)), lengths, 2)
        prefix = os.path.join(self.work, "profile")
        os.environ["DEEPMD_PROFILE"] = prefix
        try:
            result = self.lammps.run("profile", 2, system,
                                     harness.lammps_input(self.model("dpa3"), grid="2 1 1", steps=4, skin=2.0))
        finally:
            del os.environ["DEEPMD_PROFILE"]
        assert "Neighbor list builds = 0" in result.output, "the 4 steps rebuilt the topology"
        owned = 0
        for rank in range(2):
            with open(f"{prefix}.rank{rank}.json") as f:
                p = json.load(f)
            steady, rebuild = p["steady"], p["rebuild"]
            assert (steady["steps"], rebuild["steps"]) == (4, 1), (rank, steady["steps"], rebuild["steps"])
            for bucket in (steady, rebuild):
                exchanges = bucket["exchange_forward_seconds"] + bucket["exchange_reverse_seconds"]
                assert 0 < exchanges < bucket["graph_seconds"] < bucket["pair_seconds"], (rank, bucket)
            assert steady["rebuild_seconds"] == 0 and 0 < rebuild["neighbor_list_seconds"] <= rebuild["rebuild_seconds"]
            assert p["plan_discovery_seconds"] > 0 and p["peak_rss_bytes"] > 0 and p["nghost"] > 0
            owned += p["nlocal"]
        assert owned == len(positions), owned
        print("profile: OK")


def main(argv):
    ops_library, lmp, run_mpi, archive_dir, dp_eval = (os.path.abspath(a) for a in argv[1:6])
    case = argv[6]
    with tempfile.TemporaryDirectory() as work:
        getattr(Case(ops_library, lmp, run_mpi, archive_dir, dp_eval, work), case)()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
