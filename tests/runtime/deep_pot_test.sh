#!/usr/bin/env bash
# Writes archives and eager-Python reference cases, then runs the C++ DeepPot tests on them.
set -euo pipefail
python="$1" library="$2" test_binary="$3"
root="${TEST_SRCDIR:?run me with bazel test}/${TEST_WORKSPACE:?}"
export CASES_DIR="${TEST_TMPDIR:-$(mktemp -d)}/cases"
asan_runtime=$(ldd "$library" | awk '/libasan/ {print $3}')
(
  if [ -n "$asan_runtime" ]; then
    export LD_PRELOAD="$asan_runtime $(ldd "$library" | awk '/libstdc\+\+/ {print $3}')"
  fi
  PYTHONPATH="$root" "$python" "$root/tests/runtime/make_cases.py" "$library" "$CASES_DIR"
)
"$test_binary"
