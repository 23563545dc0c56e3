#!/usr/bin/env bash
# bazel run wrapper of the Python benchmark drivers: python_bench.sh PYTHON OPS LMP RUN_MPI RUNTIME_BENCHMARK
# MODULE [ARGS...]. Runs MODULE in Debian's Python (torch, numpy, matplotlib) with the repository on
# PYTHONPATH and hands it the built tools' absolute paths as JSON (--tools).
set -euo pipefail
root="$(pwd)"  # the runfiles root under bazel run
abs() { readlink -f "$1"; }
python="$(abs "$1")" ops="$(abs "$2")" lmp="$(abs "$3")" run_mpi="$(abs "$4")" runtime="$(abs "$5")" module="$6"
shift 6
tools=$(printf '{"root": "%s", "python": "%s", "ops_library": "%s", "lmp": "%s", "run_mpi": "%s", "runtime_benchmark": "%s"}' \
  "$root" "$python" "$ops" "$lmp" "$run_mpi" "$runtime")
PYTHONPATH="$root" exec "$python" -m "$module" --tools "$tools" "$@"
