#!/usr/bin/env bash
# run_module.sh PYTHON MODULE [ARGS...]: `bazel run //deepmd/train:fit` / `:change_bias` (see --help).
# Runs the module in Debian's Python (torch); relative paths are taken from the directory bazel run
# was called in.
set -euo pipefail
python="$(readlink -f "$1")"
module="$2"
shift 2
root="$(pwd)"  # the runfiles root of this repository under bazel run
cd "${BUILD_WORKING_DIRECTORY:-$root}"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m "$module" "$@"
