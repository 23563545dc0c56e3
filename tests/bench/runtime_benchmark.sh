#!/usr/bin/env bash
# bazel run //tests/bench:runtime_benchmark [-- INPUT.json] [-- --atoms=4000 --steps=10]
# Exports the example DPA3 (examples/models/dpa3.json, or a deepmd-kit training input INPUT.json), freshly
# initialised, to a temporary archive, then runs the C++ benchmark.
set -euo pipefail
python="$(readlink -f "$1")" library="$(readlink -f "$2")" program="$(readlink -f "$3")"
shift 3
root="$(pwd)"  # the runfiles root under bazel run
config="$root/examples/models/dpa3.json"
if [ $# -gt 0 ] && [[ "$1" == *.json ]]; then config="$(cd "${BUILD_WORKING_DIRECTORY:-.}" && readlink -f "$1")"; shift; fi
archive="$(mktemp -d)/model.pt2"
PYTHONPATH="$root" "$python" "$root/deepmd/tools/export.py" --ops-library "$library" --config "$config" \
  --seed 1 --out "$archive" >/dev/null
"$program" "$archive" "$@"
