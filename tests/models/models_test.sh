#!/usr/bin/env bash
# Runs the reference-model tests in Debian's Python with the ops library loaded.
set -euo pipefail
python="$1" library="$2"
root="$(cd "$(dirname "$0")/../.." && pwd)"
asan_runtime=$(ldd "$library" | awk '/libasan/ {print $3}')
if [ -n "$asan_runtime" ]; then
  export LD_PRELOAD="$asan_runtime $(ldd "$library" | awk '/libstdc\+\+/ {print $3}')"
fi
PYTHONPATH="$root" "$python" "$root/tests/models/models_python_test.py" "$library"
