#!/usr/bin/env bash
# bazel run //deepmd/tools:export -- MODEL.dp --out MODEL.pt2   (or --config CFG.json)
# Runs deepmd/tools/export.py in Debian's Python with the ops library; relative paths are taken from
# the directory bazel run was called in.
set -euo pipefail
python="$(readlink -f "$1")" library="$(readlink -f "$2")"
shift 2
root="$(pwd)"  # the runfiles root of this repository under bazel run
cd "${BUILD_WORKING_DIRECTORY:-$root}"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" "$root/deepmd/tools/export.py" --ops-library "$library" "$@"
