"""Summarises a run of in.water: thermo tables, conserved-energy drift, the O-O RDF's first peak.

    analyze.py LOG RDF_DAT OUT.png

Prints, from the LAMMPS log, the NVE run's conserved energy (etotal) drift per atom per ps (least-squares
slope) and its largest excursion per atom, the mean temperature of each run and the time per step; from
LAMMPS's fix ave/time output of compute rdf, the position and height of the O-O g(r)'s first peak
(parabola through the highest bin and its neighbours), and writes a PNG of g(r)."""
import sys

import numpy as np

from lammps_log import runs


def first_peak(r, g):
    window = (r > 2.0) & (r < 3.5)
    k = np.flatnonzero(window)[np.argmax(g[window])]
    y0, y1, y2 = g[k - 1], g[k], g[k + 1]
    shift = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) if (y0 - 2 * y1 + y2) != 0 else 0.0
    dr = r[1] - r[0]
    return r[k] + shift * dr, y1 - 0.25 * (y0 - y2) * shift


def main(argv):
    log_path, rdf_path, png = argv[1:4]
    all_runs = runs(log_path)
    if len(all_runs) < 2:
        raise SystemExit(f"{log_path}: expected an NVT and an NVE run, found {len(all_runs)} run(s)")
    (_, cols_t, nvt, sec_t, steps_t), (natoms, cols, nve, sec, steps) = all_runs[-2:]
    c = {name: i for i, name in enumerate(cols)}
    t, e = nve[:, c["Time"]], nve[:, c["TotEng"]] / natoms
    slope = np.polyfit(t - t[0], e, 1)[0] if len(t) > 1 else 0.0
    print(f"NVT: {steps_t} steps, mean T {nvt[1:, cols_t.index('Temp')].mean():.1f} K, "
          f"{1e3 * sec_t / max(steps_t, 1):.0f} ms/step")
    print(f"NVE: {steps} steps ({t[-1] - t[0]:.3f} ps), mean T {nve[:, c['Temp']].mean():.1f} K, "
          f"{1e3 * sec / max(steps, 1):.0f} ms/step ({1e6 * sec / max(steps, 1) / natoms:.0f} us/atom-step)")
    print(f"conserved energy (etotal): drift {slope:+.2e} eV/atom/ps, largest |E - E0| "
          f"{np.abs(e - e[0]).max():.2e} eV/atom over {natoms} atoms")

    blocks, block = [], []
    for line in open(rdf_path):
        if line.startswith("#"):
            continue
        words = line.split()
        if len(words) == 2:  # "timestep nrows": a new block
            block = []
            blocks.append(block)
        elif len(words) >= 3:
            block.append([float(w) for w in words[:3]])
    if not blocks or not blocks[-1]:
        raise SystemExit(f"{rdf_path}: no RDF block")
    data = np.array(blocks[-1])
    r, g = data[:, 1], data[:, 2]
    position, height = first_peak(r, g)
    print(f"O-O g(r): first peak at {position:.2f} A, height {height:.2f} (liquid water, experiment: "
          f"~2.8 A, ~2.5-3)")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return 0
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(r, g, "-", label=f"DPA3 (fitted), {natoms} atoms, NVE {t[-1] - t[0]:.2f} ps")
    ax.axvline(position, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g$_{OO}$(r)")
    ax.set_title(f"O-O RDF: first peak {position:.2f} Å, height {height:.2f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
