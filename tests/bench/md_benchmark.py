"""LAMMPS MD benchmark: steps/s, µs per atom-step, the step's breakdown, peak memory and 2-rank strong
scaling for the bench models: the fitted water DPA3 on liquid water (systems.LIQUID), the production-size
random-init models on water-density lattices; the runtime's overhead against bare graph execution and
the forward/backward split. Writes md.json, md.md and PNG plots into --out.

bazel run //tests/bench:md_benchmark -- [--out DIR] [--models water,dpa3,dpa2,se_e2_a] [--sizes 1536,...]
  (also dpa3_production, dpa2_medium: deepmd-kit's examples/water inputs, not in the default run)
"""

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np

from tests.bench import report, systems
from tests.lammps import harness

# Up to what fits this machine's 24 GiB on one rank (the realistic DPA3 needs ~2.8 MB per atom).
DEFAULT_SIZES = {"water": [1536, 3072], "dpa3": [500, 1000, 2000, 4000], "dpa2": [500, 1000, 2000, 4000, 8000, 16000],
                 "se_e2_a": [500, 1000, 2000, 4000, 8000, 16000], "dpa3_production": [1536], "dpa2_medium": [1536]}

LOOP_RE = re.compile(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms")
SECTION_RE = re.compile(r"^(Pair|Neigh|Comm|Output|Modify|Other)\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)\s*\|"
                        r"\s*([0-9.eE+-]+)", re.M)


def lammps_script(archive: str, grid: str, steps: int) -> str:
    return "\n".join([
        "units metal", "atom_style atomic", "boundary p p p", f"processors {grid}", "read_data data.lmp",
        f"pair_style deepmd {archive}", "pair_coeff * * O H", "mass 1 15.999", "mass 2 1.008",
        "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes",
        "velocity all create 300 7 loop geom", "timestep 0.0005", "fix NVE all nve", "thermo 100",
        "run 1",  # warm-up: first rebuild, lazy initialisation, heap growth
        f"run {steps}",  # measured: LAMMPS's timing table and the pair style's profile cover this run only
    ]) + "\n"


def parse_log(path: str) -> dict:
    with open(path) as f:
        text = f.read()
    loops = LOOP_RE.findall(text)
    if not loops:
        raise RuntimeError(f"no 'Loop time' in {path}")
    loop, procs, steps, atoms = loops[-1]
    last = text[text.rindex("Loop time of"):]
    sections = {name: float(avg) for name, _, avg, _ in SECTION_RE.findall(last)}
    return {"loop_s": float(loop), "procs": int(procs), "steps": int(steps), "atoms": int(atoms),
            "sections_avg_s": sections}


def read_profiles(directory: str, nranks: int) -> list:
    profiles = []
    for rank in range(nranks):
        with open(os.path.join(directory, f"profile.rank{rank}.json")) as f:
            profiles.append(json.load(f))
    return profiles


def summarize(log: dict, profiles: list) -> dict:
    """Per-step figures of the measured run: steps without rebuild, averaged over ranks; rebuild costs
    per rebuild (the run's setup always rebuilds)."""
    step_s = log["loop_s"] / log["steps"]

    def mean(bucket, key):
        return float(np.mean([p[bucket][key] / max(p[bucket]["steps"], 1) for p in profiles]))

    pair, graph = mean("steady", "pair_seconds"), mean("steady", "graph_seconds")
    forward, reverse = mean("steady", "exchange_forward_seconds"), mean("steady", "exchange_reverse_seconds")
    runtime_io = mean("steady", "inputs_seconds") + mean("steady", "outputs_seconds")
    rebuilds = max(p["rebuild"]["steps"] for p in profiles)
    return {
        "atoms": log["atoms"], "ranks": log["procs"], "steps": log["steps"], "step_s": step_s,
        "steps_per_s": 1.0 / step_s, "us_per_atom_step": step_s / log["atoms"] * 1e6,
        "breakdown_s": {
            "graph (forward + backward)": graph - forward - reverse,
            "exchanges forward": forward,
            "exchanges reverse": reverse,
            "runtime inputs/outputs": runtime_io,
            "pair style (forces, virial)": pair - graph - runtime_io,
            "LAMMPS (integration, comm, output)": step_s - pair,
        },
        "rebuild_s": {
            "neighbour list": mean("rebuild", "neighbor_list_seconds"),
            "plan discovery": float(np.mean([p["plan_discovery_seconds"] for p in profiles])) / max(rebuilds, 1),
            "rest of topology": mean("rebuild", "rebuild_seconds") - mean("rebuild", "neighbor_list_seconds"),
        },
        "ghosts_per_rank": float(np.mean([p["nghost"] for p in profiles])),
        "peak_rss_bytes_per_rank": float(max(p["peak_rss_bytes"] for p in profiles)),
        "bytes_per_atom": float(sum(p["peak_rss_bytes"] for p in profiles)) / log["atoms"],
        "lammps_sections_avg_s": log["sections_avg_s"],
        "rebuilds_in_measured_run": rebuilds - 1,
    }


def run_lammps(tools: dict, model: str, archive: str, natoms: int, nranks: int, steps: int, workdir: str) -> dict:
    name = f"{model}_{natoms}_{nranks}r"
    directory = os.path.join(workdir, name)
    os.makedirs(directory, exist_ok=True)
    for stale in os.listdir(directory):
        if stale.startswith("profile."):
            os.remove(os.path.join(directory, stale))
    lmp = harness.Lammps(tools["lmp"], tools["run_mpi"], workdir)
    os.environ["DEEPMD_PROFILE"] = os.path.join(directory, "profile")
    grid = {1: "1 1 1", 2: "2 1 1"}[nranks]
    system = systems.liquid_water(tools["root"], natoms) if model == "water" else systems.water_like(natoms)
    code, output, _ = lmp.launch(name, nranks, system, lammps_script(archive, grid, steps), timeout=3000)
    if code != 0:
        raise RuntimeError(f"{name} failed:\n{output[-3000:]}")
    return summarize(parse_log(os.path.join(directory, "log.lammps")), read_profiles(directory, nranks))


def run_runtime(tools: dict, archive: str, natoms: int) -> dict:
    """Runtime step against bare graph execution and the forward pass alone, one rank."""
    out = os.path.join(os.path.dirname(archive), f"runtime_{os.path.basename(archive)}_{natoms}.json")
    subprocess.run([tools["runtime_benchmark"], archive, f"--atoms={natoms}", "--steps=4", f"--json={out}"],
                   check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def concurrency_ceiling(tools: dict, archive: str, natoms: int) -> dict:
    """What two ranks can get on this machine with no communication at all: two independent processes
    each evaluating half the system at the same time, against one of them alone. Their ratio bounds the
    2-rank efficiency from above (shared memory bandwidth and caches, the hypervisor's vCPUs)."""
    half = natoms // 2
    outs = [os.path.join(os.path.dirname(archive), f"ceiling_{os.path.basename(archive)}_{k}.json") for k in range(3)]
    command = [tools["runtime_benchmark"], archive, f"--atoms={half}", "--steps=3", "--bare=false"]
    subprocess.run(command + [f"--json={outs[0]}"], check=True, stdout=subprocess.DEVNULL)
    together = [subprocess.Popen(command + [f"--json={out}"], stdout=subprocess.DEVNULL) for out in outs[1:]]
    if any(p.wait() != 0 for p in together):
        raise RuntimeError("the concurrent runtime_benchmark runs failed")
    times = []
    for out in outs:
        with open(out) as f:
            times.append(json.load(f)["step_s"])
    return {"atoms": natoms, "alone_s": times[0], "together_s": max(times[1:]),
            "ceiling": times[0] / max(times[1:])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.environ.get("BUILD_WORKING_DIRECTORY", "."), "bench_results"))
    parser.add_argument("--models", default="water,dpa3,dpa2,se_e2_a")
    parser.add_argument("--sizes", default="", help="comma-separated atom counts (default: per model)")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per run")
    parser.add_argument("--overhead-atoms", type=int, default=1000, help="system size of the overhead runs")
    parser.add_argument("--ceiling-atoms", type=int, default=4000,
                        help="system size of the 2-process concurrency ceiling (0: skip)")
    parser.add_argument("--tools", required=True, help="JSON: paths of lmp, run_mpi, runtime_benchmark, ...")
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(systems.MODELS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}: choose from {sorted(systems.MODELS)}")
    if not set(args.ranks.split(",")) <= {"1", "2"}:
        parser.error("--ranks: 1 and/or 2 (the targets are 2-rank ratios on a 2-core machine)")
    tools = json.loads(args.tools)
    os.makedirs(args.out, exist_ok=True)
    workdir = os.path.join(args.out, "runs")
    archives = systems.export_models(tools, args.models.split(","), os.path.join(args.out, "archives"))
    if os.geteuid() == 0:  # Open MPI refuses root unless told (the tests pass these through --test_env)
        os.environ.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")

    results = {"machine": report.machine(), "lammps": [], "runtime": [], "ceiling": []}
    for model, archive in archives.items():
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else DEFAULT_SIZES[model]
        for natoms in sizes:
            for nranks in [int(r) for r in args.ranks.split(",")]:
                row = run_lammps(tools, model, archive, natoms, nranks, args.steps, workdir)
                row["model"] = model
                results["lammps"].append(row)
                print(f"{model:8s} {natoms:6d} atoms {nranks} rank(s): {row['step_s'] * 1e3:9.1f} ms/step "
                      f"{row['us_per_atom_step']:8.1f} us/atom-step", flush=True)
        runtime = run_runtime(tools, archive, args.overhead_atoms)
        runtime["model"] = model
        results["runtime"].append(runtime)
        if args.ceiling_atoms:
            ceiling = concurrency_ceiling(tools, archive, args.ceiling_atoms)
            ceiling["model"] = model
            results["ceiling"].append(ceiling)
    report.save(args.out, "md", results, report.md_tables(results))
    report.md_plots(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
