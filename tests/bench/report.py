"""Tables and plots of the benchmarks' results (Markdown and PNG, Debian's matplotlib)."""

import json
import os
import platform
import subprocess

import numpy as np


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mpi = subprocess.run(["mpirun", "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") *
                                                                      os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
            "kernel": platform.release(), "mpi": mpi.stdout.splitlines()[0] if mpi.stdout else "unknown"}


def save(directory: str, stem: str, results: dict, markdown: str) -> None:
    """STEM.json and STEM.md in the results folder; the Markdown also goes to stdout."""
    with open(os.path.join(directory, stem + ".json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(directory, stem + ".md"), "w") as f:
        f.write(markdown)
    print(markdown)


def _pairs(results):
    """(model, atoms) -> {ranks: row}."""
    table = {}
    for row in results["lammps"]:
        table.setdefault((row["model"], row["atoms"]), {})[row["ranks"]] = row
    return table


def md_tables(results: dict) -> str:
    m = results["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['mpi']}; one thread per rank.", "",
           "| model | atoms | ranks | ms/step | steps/s | µs/atom-step | 2-rank efficiency | exchanges % | "
           "non-graph % | graph % | ghosts/rank | peak MB/rank | kB/atom |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pairs = _pairs(results)
    for (model, atoms), by_ranks in sorted(pairs.items()):
        for ranks, row in sorted(by_ranks.items()):
            b = row["breakdown_s"]
            step = row["step_s"]
            exchanges = b["exchanges forward"] + b["exchanges reverse"]
            graph = b["graph (forward + backward)"]
            efficiency = ""
            if ranks == 2 and 1 in by_ranks:
                efficiency = f"{by_ranks[1]['step_s'] / (2 * step):.2f}"
            out.append(f"| {model} | {atoms} | {ranks} | {step * 1e3:.1f} | {1 / step:.3g} | "
                       f"{row['us_per_atom_step']:.1f} | {efficiency} | {100 * exchanges / step:.2f} | "
                       f"{100 * (step - graph - exchanges) / step:.2f} | {100 * graph / step:.1f} | "
                       f"{row['ghosts_per_rank']:.0f} | {row['peak_rss_bytes_per_rank'] / 1e6:.0f} | "
                       f"{row['bytes_per_atom'] / 1e3:.0f} |")
    out += ["", "Step breakdown (ms per step without rebuild, mean over ranks) and rebuild costs (ms per rebuild):", "",
            "| model | atoms | ranks | " + " | ".join(next(iter(results["lammps"]))["breakdown_s"]) +
            " | neighbour list | plan discovery | rest of topology |",
            "|---" * (3 + 6 + 3) + "|"]
    for row in sorted(results["lammps"], key=lambda r: (r["model"], r["atoms"], r["ranks"])):
        cells = [f"{v * 1e3:.2f}" for v in row["breakdown_s"].values()]
        cells += [f"{v * 1e3:.2f}" for v in row["rebuild_s"].values()]
        out.append(f"| {row['model']} | {row['atoms']} | {row['ranks']} | " + " | ".join(cells) + " |")
    if results.get("runtime"):
        out += ["", "Runtime against bare graph execution (one rank, medians of alternating runs):", "",
                "| model | atoms | runtime step ms | bare graph ms | overhead % | forward alone ms | backward ms |",
                "|---|---|---|---|---|---|---|"]
        for r in results["runtime"]:
            out.append(f"| {r['model']} | {r['atoms']} | {r['step_s'] * 1e3:.1f} | {r['bare_s'] * 1e3:.1f} | "
                       f"{100 * (r['step_s'] - r['bare_s']) / r['bare_s']:.1f} | {r['forward_s'] * 1e3:.1f} | "
                       f"{(r['bare_s'] - r['forward_s']) * 1e3:.1f} |")
    if results.get("ceiling"):
        out += ["", "This machine's ceiling for 2 ranks: two independent processes, each evaluating half the "
                "system at once, against one alone (no communication):", "",
                "| model | atoms | half alone ms | both at once ms | ceiling |", "|---|---|---|---|---|"]
        for c in results["ceiling"]:
            out.append(f"| {c['model']} | {c['atoms']} | {c['alone_s'] * 1e3:.1f} | {c['together_s'] * 1e3:.1f} | "
                       f"{c['ceiling']:.2f} |")
    return "\n".join(out) + "\n"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def md_plots(results: dict, directory: str) -> None:
    plt = _pyplot()
    rows = results["lammps"]
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model in models:
        for ranks, style in ((1, "o-"), (2, "s--")):
            sel = sorted((r for r in rows if r["model"] == model and r["ranks"] == ranks), key=lambda r: r["atoms"])
            if not sel:
                continue
            atoms = [r["atoms"] for r in sel]
            axes[0].plot(atoms, [r["steps_per_s"] for r in sel], style, label=f"{model}, {ranks} rank(s)")
            axes[1].plot(atoms, [r["us_per_atom_step"] for r in sel], style, label=f"{model}, {ranks} rank(s)")
    for ax, label in ((axes[0], "steps / s"), (axes[1], "µs / atom-step")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("atoms")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "md_speed.png"), dpi=120)
    plt.close(fig)

    # Breakdown of the step at 2 ranks (shares), one bar per model and size.
    sel = sorted((r for r in rows if r["ranks"] == 2), key=lambda r: (r["model"], r["atoms"]))
    if sel:
        fig, ax = plt.subplots(figsize=(13, 4))
        parts = list(sel[0]["breakdown_s"])
        bottom = np.zeros(len(sel))
        for part in parts:
            share = np.array([100 * r["breakdown_s"][part] / r["step_s"] for r in sel])
            ax.bar(range(len(sel)), share, bottom=bottom, label=part)
            bottom += share
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels([f"{r['model']}\n{r['atoms']}" for r in sel], fontsize=7)
        ax.set_ylabel("% of the step (2 ranks)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        fig.savefig(os.path.join(directory, "md_breakdown.png"), dpi=120)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in models:
        sel = sorted((r for r in rows if r["model"] == model and r["ranks"] == 1), key=lambda r: r["atoms"])
        ax.plot([r["atoms"] for r in sel], [r["peak_rss_bytes_per_rank"] / 1e9 for r in sel], "o-", label=model)
    ax.set_xlabel("atoms (1 rank)")
    ax.set_ylabel("peak memory (GB)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "md_memory.png"), dpi=120)
    plt.close(fig)


def ghost_shell_table(results: dict) -> str:
    reference, rows = results["reference"], results["rows"]
    per_atom_s = reference["step_s"] / reference["atoms"]
    per_atom_bytes = reference["peak_rss_bytes"] / reference["atoms"]
    first = rows[0]
    lines = [f"{results['model']}: {first['layers']} layers, rcut {first['rcut']} Å, skin {results['skin']} Å; regular "
             f"graph per-atom cost {per_atom_s * 1e3:.2f} ms and {per_atom_bytes / 1e6:.2f} MB at {reference['atoms']} "
             f"atoms. 'est.' = extrapolated from that (would need more than {results['memory_fraction']:.0%} of this "
             "machine's memory).", "",
             "| subdomain (Å) | local atoms | ghost-shell atoms | ours s/step | ghost shell s/step | work ratio | "
             "ours GB | ghost shell GB |", "|---|---|---|---|---|---|---|---|"]

    def tag(measured):
        return "" if measured else " (est.)"

    for r in rows:
        lines.append(f"| {r['side']:g} | {r['local_atoms']} | {r['ghost_shell_atoms']} | "
                     f"{r['ours_s']:.2f}{tag(r['ours_measured'])} | {r['shell_s']:.2f}{tag(r['shell_measured'])} | "
                     f"{r['work_ratio']:.1f}x | {r['ours_bytes'] / 1e9:.1f} | {r['shell_bytes'] / 1e9:.1f} |")
    return "\n".join(lines) + "\n"


def ghost_shell_plot(results: dict, directory: str) -> None:
    plt = _pyplot()
    rows = results["rows"]
    sides = [r["side"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.38
    x = np.arange(len(rows))
    ax.bar(x - width / 2, [r["ours_s"] for r in rows], width, label="per-layer exchange (ours)")
    ax.bar(x + width / 2, [r["shell_s"] for r in rows], width, label="ghost shell L x rcut",
           hatch=None)
    for i, r in enumerate(rows):
        ax.text(i + width / 2, r["shell_s"], f"{r['work_ratio']:.1f}x" + ("" if r["shell_measured"] else "*"),
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{s:g} Å" for s in sides])
    ax.set_yscale("log")
    ax.set_ylabel("one rank's step (s)")
    ax.set_title(f"{results['model']}: subdomain edge (* extrapolated)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "ghost_shell.png"), dpi=120)
    plt.close(fig)
