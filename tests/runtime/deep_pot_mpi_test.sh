#!/usr/bin/env bash
# Exports the example models (deepmd-kit inputs of examples/models, freshly initialised from a seed), then
# runs the N-ranks == 1-rank runtime test on a processor grid.
#   deep_pot_mpi_test.sh PYTHON OPS_LIBRARY PROGRAM NRANKS GRID
set -euo pipefail
python="$1" library="$2" program="$3" nranks="$4" grid="$5"
root="${TEST_SRCDIR:?run me with bazel test}/${TEST_WORKSPACE:?}"
work="${TEST_TMPDIR:-$(mktemp -d)}"
archives=""
for entry in dpa3:1 dpa2:2 hybrid:3 dpa3_spin:5 se_e2_a:4 dpa1:6; do
  name="${entry%:*}" seed="${entry#*:}"
  (
    asan_runtime=$(ldd "$library" | awk '/libasan/ {print $3}')
    if [ -n "$asan_runtime" ]; then
      export LD_PRELOAD="$asan_runtime $(ldd "$library" | awk '/libstdc\+\+/ {print $3}')"
    fi
    PYTHONPATH="$root" "$python" "$root/deepmd/tools/export.py" --ops-library "$library" \
      --config "$root/examples/models/$name.json" --seed "$seed" --out "$work/$name.pt2" >/dev/null
  )
  archives="$archives${archives:+,}$work/$name.pt2"
done
"$root/tests/run_mpi.sh" "$nranks" "$program" --grid="$grid" --archives="$archives"
