#!/usr/bin/env bash
# Memory errors of the standalone path: export the example DPA3 and DPA2 (every fused kernel: repflow edge and
# angle, repformer attention, neighbour sums, three-body), evaluate a periodic frame with dp_eval
#  1. built with AddressSanitizer and LeakSanitizer (every machine), and
#  2. under valgrind memcheck, where valgrind can run LibTorch's start-up code on this CPU (valgrind
#     3.19 cannot decode an instruction in libhwy's initialiser on some CPUs: SIGILL before main).
# Any error fails the test.
set -euo pipefail
python="$1" library="$2" dp_eval="$3" dp_eval_asan="$4" suppressions="$5" lsan_suppressions="$6"
root="${TEST_SRCDIR:?run me with bazel test}/${TEST_WORKSPACE:?}"
work="${TEST_TMPDIR:-$(mktemp -d)}"
models="dpa3 dpa2"
for m in $models; do
  PYTHONPATH="$root" "$python" "$root/deepmd/tools/export.py" --ops-library "$library" \
    --config "$root/examples/models/$m.json" --seed 1 --out "$work/$m.pt2"
done
cat > "$work/frame.xyz" <<'XYZ'
4
Lattice="4.0 0 0 0.5 4.2 0 0 0 4.4" Properties=species:S:1:pos:R:3 pbc="T T F"
O 1.0 1.0 1.0
H 1.9 1.2 1.0
H 0.5 1.8 1.3
O 3.0 3.1 2.8
XYZ
passed=0

# 1. AddressSanitizer (heap/stack overflows, use after free) and LeakSanitizer.
for m in $models; do
  ASAN_OPTIONS=detect_leaks=1:detect_odr_violation=0:abort_on_error=0:exitcode=3 \
    LSAN_OPTIONS="suppressions=$lsan_suppressions:print_suppressions=0" \
    "$dp_eval_asan" "$work/$m.pt2" "$work/frame.xyz" >"$work/asan.out"
done
echo "AddressSanitizer + LeakSanitizer: no errors ($models)"
passed=$((passed + 1))

# 2. valgrind memcheck.
deps=$(ldd "$dp_eval")
if grep -qE 'libasan|libubsan' <<<"$deps"; then
  echo "valgrind cannot run sanitizer builds: its check is left to the default configuration"
elif ! command -v valgrind >/dev/null; then
  echo "valgrind is missing: scripts/bootstrap.sh installs it" >&2
  exit 1
else
  # memcheck runs the path itself. No separate probe: a probe must exit 0 where valgrind works, and
  # absl's --help exits 1. valgrind 3.19 cannot decode an instruction in libhwy's initialiser on some
  # CPUs (SIGILL before main); only that case is skipped, every other failure fails the test.
  memcheck_status=0
  for m in $models; do
    [ "$memcheck_status" -eq 0 ] || break
    valgrind --tool=memcheck --error-exitcode=3 --leak-check=no --suppressions="$suppressions" \
      "$dp_eval" "$work/$m.pt2" "$work/frame.xyz" >"$work/memcheck.out" 2>&1 || memcheck_status=$?
    if [ "$memcheck_status" -eq 0 ] && ! grep -q "ERROR SUMMARY: 0 errors" "$work/memcheck.out"; then
      memcheck_status=3
    fi
  done
  if [ "$memcheck_status" -eq 0 ]; then
    grep -m1 "ERROR SUMMARY" "$work/memcheck.out"
    echo "valgrind memcheck: no errors ($models)"
    passed=$((passed + 1))
  elif grep -q "unhandled instruction bytes" "$work/memcheck.out" &&
    grep -q "signal 4 (SIGILL)" "$work/memcheck.out"; then
    echo "valgrind cannot decode an instruction of a library's start-up code on this CPU:"
    grep -m1 -A1 "unhandled instruction bytes" "$work/memcheck.out" || true
    echo "memcheck is skipped here; AddressSanitizer above checked the same path"
  else
    echo "valgrind memcheck failed (exit ${memcheck_status}):" >&2
    cat "$work/memcheck.out" >&2
    exit 1
  fi
fi
echo "${passed} passed, 0 failed"
