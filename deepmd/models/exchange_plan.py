"""A Python encoder of the ghost-exchange plan (docs/exchange_plan.md), written from the spec
independently of the C++ PlanBuilder, and a dense-matrix model of what a plan means. The exporter uses
it for its self-exchange check; tests use it as the oracle for the C++ operators."""

import torch

MAGIC = 0x444D4350
VERSION = 1
NO_COMM = -1
HEADER = 10


def encode(nlocal, nghost, stages, rank=0, size=1, comm=NO_COMM):
    """stages: list of stages; a stage is a list of ("send", peer, rows) or ("recv", peer, count, first_row)."""
    nmsg = sum(len(s) for s in stages)
    table_end = HEADER + 2 * len(stages) + 4 * nmsg
    words = [MAGIC, VERSION, 0, comm, rank, size, nlocal, nghost, len(stages), nmsg]
    stage_table, msg_table, index_area = [], [], []
    first = 0
    for stage in stages:
        stage_table += [first, len(stage)]
        first += len(stage)
        for m in stage:
            if m[0] == "send":
                msg_table += [0, m[1], len(m[2]), table_end + len(index_area)]
                index_area += list(m[2])
            else:
                msg_table += [1, m[1], m[2], m[3]]
    words += stage_table + msg_table + index_area
    words[2] = len(words)
    return torch.tensor(words, dtype=torch.int32)


def exchange_matrix(nlocal, nghost, stages, dtype=torch.float64):
    """E such that exchange_ghosts(x) == E @ x, for a single-process plan (all messages to self)."""
    n = nlocal + nghost
    E = torch.eye(n, dtype=dtype)
    for stage in stages:
        sends = [m for m in stage if m[0] == "send"]
        recvs = [m for m in stage if m[0] == "recv"]
        S = torch.eye(n, dtype=dtype)
        for send, recv in zip(sends, recvs):
            for i, row in enumerate(send[2]):
                S[recv[3] + i] = 0
                S[recv[3] + i, row] = 1
        E = S @ E
    return E
