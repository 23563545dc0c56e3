#!/usr/bin/env bash
# bazel run wrapper of the Python benchmark drivers: python_bench.sh PYTHON OPS LMP RUN_MPI RUNTIME_BENCHMARK
# FMA_PEAK MODULE [ARGS...]. Runs MODULE in Debian's Python (torch, numpy, matplotlib) with the repository on
# PYTHONPATH and hands it the built tools' absolute paths as JSON (--tools).
set -euo pipefail
root="$(pwd)"  # the runfiles root under bazel run
abs() { readlink -f "$1"; }
python="$(abs "$1")" ops="$(abs "$2")" lmp="$(abs "$3")" run_mpi="$(abs "$4")" runtime="$(abs "$5")"
fma_peak="$(abs "$6")" module="$7"
shift 7
tools=$(printf '{"root": "%s", "python": "%s", "ops_library": "%s", "lmp": "%s", "run_mpi": "%s", "runtime_benchmark": "%s", "fma_peak": "%s"}' \
  "$root" "$python" "$ops" "$lmp" "$run_mpi" "$runtime" "$fma_peak")
PYTHONPATH="$root" exec "$python" -m "$module" --tools "$tools" "$@"
