#!/usr/bin/env bash
# The ops loaded into Debian's Python torch (unit tests), then a module scripted there loaded in C++.
set -euo pipefail
python="$1" library="$2" checker="$3"
out="${TEST_TMPDIR:-$(mktemp -d)}"
# Under --config=asan the library needs the sanitizer runtime loaded first into the (plain) Python.
asan_runtime=$(ldd "$library" | awk '/libasan/ {print $3}')
[ -n "$asan_runtime" ] && export LD_PRELOAD="$asan_runtime"
"$python" "$(dirname "$0")/ops_python_test.py" "$library" --script-out "$out"
"$checker" "$out/exchange_module.pt"
