#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the main job: the ghost-exchange
# ops on 2 MPI ranks (checked, then benchmarked), then liquid water with the DPA3 fitted to deepmd-kit's
# DFT water data (examples/water) in LAMMPS on 2 ranks (scripts/lammps_demo.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
bazel build //deepmd/ops/... //tests/ops:exchange_mpi_test //tests/bench:exchange_benchmark
echo "== ghost exchange on 2 ranks, checked against each atom's owner (1-D split, multi-hop, empty subdomains)"
tests/run_mpi.sh 2 bazel-bin/tests/ops/exchange_mpi_test --grid=2,1,1
echo "== throughput against a plain MPI_Sendrecv"
bazel run //tests/bench:exchange_benchmark
echo "== molecular dynamics in LAMMPS: liquid water, fitted DPA3"
scripts/lammps_demo.sh
