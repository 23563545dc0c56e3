#!/usr/bin/env bash
# Runs a Python test in Debian's Python with this repository on PYTHONPATH and the ops library:
#   run_python_test.sh PYTHON OPS_LIBRARY TEST_SCRIPT [ARGS...]   (paths relative to the runfiles root)
set -euo pipefail
python="$1" library="$2" script="$3"
shift 3
root="${TEST_SRCDIR:?run me with bazel test}/${TEST_WORKSPACE:?}"
# Under --config=asan the library needs the sanitizer runtime (and libstdc++, for ASan's exception
# interceptors) loaded first into the uninstrumented Python.
asan_runtime=$(ldd "$library" | awk '/libasan/ {print $3}')
if [ -n "$asan_runtime" ]; then
  export LD_PRELOAD="$asan_runtime $(ldd "$library" | awk '/libstdc\+\+/ {print $3}')"
fi
PYTHONPATH="$root" "$python" "$root/$script" "$library" "$@"
