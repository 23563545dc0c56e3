#!/usr/bin/env bash
# The ops loaded into Debian's Python torch (unit tests), then a module scripted there loaded in C++.
set -euo pipefail
python="$1" library="$2" checker="$3"
out="${TEST_TMPDIR:-$(mktemp -d)}"
# Under --config=asan the library needs the sanitizer runtime loaded first into the (plain) Python,
# with libstdc++ so that ASan can intercept C++ exceptions.
asan_runtime=$(ldd "$library" | awk '/libasan/ {print $3}')
if [ -n "$asan_runtime" ]; then
  export LD_PRELOAD="$asan_runtime $(ldd "$library" | awk '/libstdc\+\+/ {print $3}')"
fi
root="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHONPATH="$root" "$python" "$root/tests/ops/ops_python_test.py" "$library" --script-out "$out"
"$checker" "$out/exchange_module.pt"
