#!/usr/bin/env bash
# bazel run //deepmd/train:fit -- [--input IN.json] [--epochs N] [--out model.dp] ...   (fit.py --help)
# Runs deepmd/train/fit.py in Debian's Python (torch); relative paths are taken from the directory
# bazel run was called in.
set -euo pipefail
python="$(readlink -f "$1")"
shift
root="$(pwd)"  # the runfiles root of this repository under bazel run
cd "${BUILD_WORKING_DIRECTORY:-$root}"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" "$root/deepmd/train/fit.py" "$@"
