"""Writes a LAMMPS data file of one frame of deepmd-kit's DFT-labelled water (192 atoms, 64 H2O).

    make_data.py SYSTEM_DIR FRAME OUT.data

SYSTEM_DIR is a deepmd-kit npy system (type.raw, type_map.raw, set.000/{coord,box}.npy); LAMMPS types
follow its type map (1 = O, 2 = H). The box must be orthorhombic (the water data's is)."""
import sys

import numpy as np

MASSES = {"O": 15.999, "H": 1.008}


def main(argv):
    system, frame, out = argv[1], int(argv[2]), argv[3]
    types = np.loadtxt(f"{system}/type.raw", dtype=int, ndmin=1)
    type_map = open(f"{system}/type_map.raw").read().split()
    coord = np.load(f"{system}/set.000/coord.npy")[frame].reshape(-1, 3)
    box = np.load(f"{system}/set.000/box.npy")[frame].reshape(3, 3)
    if np.abs(box - np.diag(np.diag(box))).max() > 0:
        raise SystemExit(f"{system}: frame {frame} has a triclinic box; this writer handles orthorhombic ones")
    lengths = np.diag(box)
    coord = np.mod(coord, lengths)
    lines = [f"deepmd-kit water {system.rstrip('/').split('/')[-1]} set.000 frame {frame} (DFT-labelled, "
             f"{len(types)} atoms)", "", f"{len(types)} atoms", f"{len(type_map)} atom types", ""]
    lines += [f"0 {lengths[d]!r} {a}lo {a}hi" for d, a in enumerate("xyz")]
    lines += ["", "Masses", ""] + [f"{t + 1} {MASSES[name]}  # {name}" for t, name in enumerate(type_map)]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{i + 1} {t + 1} {x!r} {y!r} {z!r}" for i, (t, (x, y, z)) in enumerate(zip(types, coord))]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
