"""comm_style tiled: N ranks == 1 rank in LAMMPS, for one model, on 2, 3, 4 and 5 ranks.

    tiled_test.py OPS_LIBRARY LMP RUN_MPI ARCHIVE_DIR MODEL   (through tests/run_python_test.sh)

Three systems: a slab with vacuum, open in y (`p f p`), rebuilding every step; a droplet in a large
periodic box (most of each subdomain is vacuum), rebuilding only when fix balance or the skin asks, so
the steps between run on the cached plan; the droplet in an open box (`f f f`), rebuilding every step,
where ranks have swaps without sends or receives and the swap discovery needs more than one round
(checked through DEEPMD_PROFILE). Each N-rank run: `comm_style tiled`, `balance 1.0 rcb` before the
run, `fix balance 2 1.0 rcb` rebalancing every other step (checked: the cuts move); `run 0`, then 6
NVE steps while atoms change rank (checked). Energy, virial, forces, per-atom energy and (centroid)
virial, and for spin models magnetic forces, at every step, against 1 rank (brick).
"""
import json
import os
import sys
import tempfile
import time

import numpy as np

from tests.lammps import harness
from tests.lammps.models import MODELS, archive_path

# Rank counts per system (kept lean: dpa3 runs every count on the slab and the droplet, the others each
# count once).
NRANKS = {
    "dpa3": {"slab": (2, 3, 4, 5), "droplet": (2, 3, 4, 5), "cluster": (5,)},
    "dpa2": {"slab": (3, 5), "droplet": (2, 4)},
    "dpa3_spin": {"slab": (2, 4), "droplet": (3, 5), "cluster": (5,)},
}
STEPS = 6
NATOMS = 72


def slab(rng, ntypes):
    """A 12 Å slab normal to y with 8 Å of vacuum on each side, open in y (`p f p`). RCB cuts it along y
    first: the bottom rank only receives in swap 2 (y down) and only sends in swap 3, so its calls do
    not show where swap 3 ends and swap 4 (z) begins."""
    lengths = (9.0, 28.0, 9.0)
    positions = harness.random_positions(rng, np.array([0.0, 8.0, 0.0]), np.array([9.0, 20.0, 9.0]), NATOMS, 1.7)
    return harness.System(positions, rng.integers(1, ntypes + 1, NATOMS), lengths, ntypes,
                          velocities=40.0 * rng.standard_normal((NATOMS, 3))), "p f p"


def droplet(rng, ntypes, boundary="p p p"):
    """A cluster of radius 5.5 Å in a 22 Å box, drifting along x."""
    lengths = (22.0, 22.0, 22.0)
    centre = np.array(lengths) / 2
    points = []
    while len(points) < NATOMS:
        p = centre + rng.uniform(-5.5, 5.5, 3)
        if np.linalg.norm(p - centre) <= 5.5 and all(np.linalg.norm(p - q) >= 1.7 for q in points):
            points.append(p)
    velocities = 40.0 * rng.standard_normal((NATOMS, 3)) + np.array([150.0, 0.0, 0.0])
    return harness.System(np.array(points), rng.integers(1, ntypes + 1, NATOMS), lengths, ntypes,
                          velocities=velocities), boundary


def cluster(rng, ntypes):
    """The droplet in an open box (`f f f`): ranks on every face have swaps without sends or receives,
    and some discoveries need more than one round (checked)."""
    return droplet(rng, ntypes, "f f f")


def partitions(result):
    """The distinct RCB partitions `fix balance ... out` wrote (node coordinates of each rebalance)."""
    with open(os.path.join(result.directory, "balance.txt")) as f:
        blocks = f.read().split("ITEM: TIMESTEP")[1:]
    return {block.split("ITEM: NODES")[1] for block in blocks if "ITEM: NODES" in block}  # + cubes blocks


def discovery_rounds(prefix, nranks):
    """The most rounds a swap discovery took on any rank in the last run (DEEPMD_PROFILE files)."""
    rounds = 0
    for rank in range(nranks):
        with open(f"{prefix}.rank{rank}.json") as f:
            rounds = max(rounds, json.load(f)["plan_discovery_max_rounds"])
    return rounds


def owners(result):
    """Per dumped step, the rank owning each atom (sorted by id)."""
    frames = harness.read_dump(os.path.join(result.directory, "owners.txt"))
    return {step: frame["c_proc"].astype(int) for step, frame in frames.items()}


def main(argv):
    lmp, run_mpi, archive_dir = (os.path.abspath(a) for a in argv[2:5])  # argv[1]: the ops library
    name = argv[5]
    entry = MODELS[name]
    model = harness.Model(archive_path(archive_dir, name), entry.elements, entry.spin, entry.extra_style_args)
    ntypes = entry.elements.count(" ") + 1
    # Spin lists reach 2 x 0.3 x 2 = 1.2 Å (twice the farthest virtual atom) beyond rcut 5 + skin 1.
    comm_cutoff = 7.5 if model.spin else None
    rng = np.random.default_rng(20260301)
    failures = []
    with tempfile.TemporaryDirectory() as work:
        lammps = harness.Lammps(lmp, run_mpi, work)
        # The slab and the cluster rebuild every step; the droplet only when fix balance (or the skin) asks,
        # so steps in between run on the cached plan.
        most_rounds = 0
        for label, make, every_step in (("slab", slab, True), ("droplet", droplet, False), ("cluster", cluster, True)):
            system, boundary = make(rng, ntypes)
            if label not in NRANKS[name]:
                continue
            if model.spin:
                directions = rng.standard_normal((NATOMS, 3))
                directions /= np.linalg.norm(directions, axis=1, keepdims=True)
                system.spins = np.concatenate([directions, rng.uniform(0.5, 2.0, (NATOMS, 1))], axis=1)

            def script(tiled):
                extra = ("balance 1.0 rcb\nfix B all balance 2 1.0 rcb out balance.txt\n"
                         "compute proc all property/atom proc\n"
                         "dump O all custom 1 owners.txt id c_proc\ndump_modify O sort id") if tiled else ""
                text = harness.lammps_input(model, grid="* * *" if tiled else "1 1 1", boundary=boundary,
                                            steps=STEPS, rebuild_every_step=every_step, comm_cutoff=comm_cutoff,
                                            extra=extra)
                return text.replace("read_data", "comm_style tiled\nread_data") if tiled else text

            start = time.time()
            reference = lammps.run(f"{label}_ref", 1, system, script(False))
            print(f"{name} {label} on 1 rank (brick): {time.time() - start:.1f} s")
            for nranks in NRANKS[name][label]:
                start = time.time()
                os.environ["DEEPMD_PROFILE"] = os.path.join(work, f"{label}_{nranks}_profile")
                try:
                    result = lammps.run(f"{label}_{nranks}", nranks, system, script(True))
                finally:
                    del os.environ["DEEPMD_PROFILE"]
                rounds = discovery_rounds(os.path.join(work, f"{label}_{nranks}_profile"), nranks)
                problems = harness.compare(reference, result, **entry.tolerance, label=f"[{label} {nranks}] ")
                if "with-comm" not in reference.output.split("graphs in the archive:")[1].split(";")[0]:
                    problems.append(f"[{label}] {name} has no with-comm graph: nothing passes messages")
                elif f"running the with-comm graph on {nranks} MPI rank(s)" not in result.output:
                    problems.append(f"[{label} {nranks}] the log does not say the with-comm graph ran")
                owned = owners(result)
                steps = sorted(owned)
                moved = int((owned[steps[0]] != owned[steps[-1]]).sum())
                if moved == 0:
                    problems.append(f"[{label} {nranks}] no atom changed rank: the migration check is vacuous")
                if any(len(np.unique(owned[s])) != nranks for s in steps):
                    problems.append(f"[{label} {nranks}] some rank owns no atom at some step")
                rebalanced = len(partitions(result))
                if rebalanced < 2:
                    problems.append(f"[{label} {nranks}] fix balance never moved a cut: the run did not rebalance")
                print(f"{name} {label} on {nranks} ranks (tiled, rcb): {'OK' if not problems else 'DIFFERENT'}"
                      f" ({moved} atoms changed rank, {rebalanced} partitions, discovery in up to {rounds} "
                      f"round(s); {time.time() - start:.1f} s)")
                failures += problems
                if label == "cluster":
                    most_rounds = max(most_rounds, rounds)
            if model.spin:
                assert np.abs(reference.frames[0]["d2_fm[1]"]).max() > 0, "magnetic forces are all zero"
        if "cluster" in NRANKS[name] and most_rounds < 2:
            failures.append("no discovery on the open cluster needed a second round: that path went untested")
    if failures:
        print("\n".join(failures[:40]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
