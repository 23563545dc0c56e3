"""The thermo tables of a LAMMPS log, one per run."""
from typing import List, NamedTuple

import numpy as np


class Run(NamedTuple):
    natoms: int
    columns: List[str]
    rows: np.ndarray  # [rows, columns]
    seconds: float    # LAMMPS's loop time
    steps: int


def runs(log_path: str) -> List[Run]:
    found, columns, rows = [], None, []
    for line in open(log_path):
        words = line.split()
        if line.startswith("Loop time of"):  # "Loop time of T on P procs for N steps with A atoms"
            found.append(Run(int(words[-2]), columns or [], np.array(rows), float(words[3]), int(words[8])))
            columns, rows = None, []
        elif words and words[0] == "Step":
            columns, rows = words, []
        elif columns is not None and len(words) == len(columns):
            try:
                rows.append([float(w) for w in words])
            except ValueError:
                pass
    return found
