"""One rank's work per step for a cubic subdomain of side a, ours against the ghost-shell alternative.

Ours: the with-comm graph over the subdomain's atoms with a ghost shell of rcut + skin, ghosts filled
before every layer by the exchange op (a periodic cube of side a: the same local and ghost counts; the
exchanges run as local copies of the same rows). Ghost shell: the regular graph over every atom within
L x rcut + skin of the subdomain (what pair styles without exchange, such as the original pair_mace,
evaluate), measured where it fits in memory and otherwise extrapolated from the measured per-atom cost
of the regular graph (the md benchmark shows the cost per atom is flat in size). Writes ghost_shell.json,
ghost_shell.md and ghost_shell.png into --out.

bazel run //tests/bench:ghost_shell_benchmark -- [--out DIR] [--sides 15,20,30,40]
"""

import argparse
import json
import os
import subprocess
import sys

from tests.bench import report, systems


def runtime_step(tools: dict, archive: str, natoms: int, with_comm: bool, out: str) -> dict:
    args = [tools["runtime_benchmark"], archive, f"--atoms={natoms}", "--steps=3", "--bare=false", f"--json={out}"]
    if with_comm:
        args.append("--with_comm")
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.environ.get("BUILD_WORKING_DIRECTORY", "."), "bench_results"))
    parser.add_argument("--model", default="dpa3", choices=sorted(systems.MODELS))
    parser.add_argument("--sides", default="15,20,30,40", help="subdomain edges (Å)")
    parser.add_argument("--skin", type=float, default=1.0)
    parser.add_argument("--reference-atoms", type=int, default=3000,
                        help="size of the regular-graph run that gives the per-atom cost and memory")
    parser.add_argument("--memory-fraction", type=float, default=0.6,
                        help="measure directly only what needs less than this share of the machine's memory")
    parser.add_argument("--tools", required=True)
    args = parser.parse_args(argv)
    tools = json.loads(args.tools)
    os.makedirs(args.out, exist_ok=True)
    runs = os.path.join(args.out, "runs")
    os.makedirs(runs, exist_ok=True)
    archive = systems.export_models(tools, [args.model], os.path.join(args.out, "archives"))[args.model]
    meta = systems.archive_metadata(archive)
    rcut, layers = meta["rcut"], max(meta["nlayers"], 1)
    machine = report.machine()
    budget = args.memory_fraction * machine["memory_gib"] * 2 ** 30

    reference = runtime_step(tools, archive, args.reference_atoms, False, os.path.join(runs, "gs_reference.json"))
    per_atom_s = reference["step_s"] / args.reference_atoms
    per_atom_bytes = reference["peak_rss_bytes"] / args.reference_atoms

    rows = []
    for side in [float(s) for s in args.sides.split(",")]:
        local = round(systems.DENSITY * side ** 3)
        shell_side = side + 2 * (layers * rcut + args.skin)
        nodes = round(systems.DENSITY * shell_side ** 3)
        row = {"side": side, "local_atoms": local, "ghost_shell_atoms": nodes, "layers": layers, "rcut": rcut}
        if local * per_atom_bytes < budget:
            ours = runtime_step(tools, archive, local, True, os.path.join(runs, f"gs_ours_{side:g}.json"))
            row.update(ours_s=ours["step_s"], ours_bytes=ours["peak_rss_bytes"], ours_measured=True)
        else:
            row.update(ours_s=per_atom_s * local, ours_bytes=per_atom_bytes * local, ours_measured=False)
        if nodes * per_atom_bytes < budget:
            shell = runtime_step(tools, archive, nodes, False, os.path.join(runs, f"gs_shell_{side:g}.json"))
            row.update(shell_s=shell["step_s"], shell_bytes=shell["peak_rss_bytes"], shell_measured=True)
        else:
            row.update(shell_s=per_atom_s * nodes, shell_bytes=per_atom_bytes * nodes, shell_measured=False)
        row["work_ratio"] = row["shell_s"] / row["ours_s"]
        rows.append(row)
        print(f"a = {side:4.0f} Å: ours {row['ours_s']:.2f} s, ghost shell {row['shell_s']:.2f} s "
              f"({row['work_ratio']:.1f}x)", flush=True)

    results = {"machine": machine, "model": args.model, "skin": args.skin, "memory_fraction": args.memory_fraction,
               "reference": reference, "rows": rows}
    report.save(args.out, "ghost_shell", results, report.ghost_shell_table(results))
    report.ghost_shell_plot(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
