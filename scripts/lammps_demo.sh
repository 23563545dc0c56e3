#!/usr/bin/env bash
# The main job's LAMMPS part: a small DPA3 (deepmd-kit input examples/models/dpa3.json, freshly initialised)
# in the example input deepmd/lammps/examples/in.dpa3 on 2 MPI ranks,
# its thermo output, then the same run on 1 rank and a one-line verdict of their parity.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
bazel build //deepmd/lammps:lmp //deepmd/lammps:plugin
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
bazel run //deepmd/tools:export -- --config "$PWD/examples/models/dpa3.json" --seed 1 --out "$work/dpa3.pt2"
cp deepmd/lammps/examples/in.dpa3 deepmd/lammps/examples/water.data "$work/"
lmp="$PWD/bazel-bin/deepmd/lammps/lmp"

thermo() {  # the thermo rows of a LAMMPS log
  awk '/^ *Step/ {on = 1; next} /^Loop time/ {on = 0} on && NF == 6' "$1"
}
echo "== LAMMPS, DPA3 (deepmd-kit input examples/models/dpa3.json), 192 atoms, 2 MPI ranks"
(cd "$work" && mpirun -np 2 --oversubscribe --bind-to none "$lmp" -in in.dpa3 -var model dpa3.pt2 -log two.log \
   -screen none)
awk '/^ *Step/,/^Loop time/' "$work/two.log"
(cd "$work" && mpirun -np 1 "$lmp" -in in.dpa3 -var model dpa3.pt2 -log one.log -screen none)
paste <(thermo "$work/one.log") <(thermo "$work/two.log") | awk '
  { for (c = 3; c <= 5; ++c) { d = $c - $(c + 6); if (d < 0) d = -d; if (d > worst) worst = d } ; n++ }
  END {
    verdict = (n > 0 && worst <= 1e-8) ? "PARITY OK" : "PARITY FAILED"
    printf "%s: 2 ranks vs 1 rank, %d thermo rows, largest |difference| of pe, ke, etotal = %.1e eV (printed to 1e-10)\n", verdict, n, worst
    exit verdict == "PARITY OK" ? 0 : 1
  }'
