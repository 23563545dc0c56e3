#!/usr/bin/env bash
# The main job's LAMMPS part: liquid water, 1,536 atoms (deepmd-kit's 192-atom DFT frame replicated
# 2x2x2), with the DPA3 model fitted to deepmd-kit's DFT water data (examples/water: the committed .dp,
# exported at build time as a user would), in LAMMPS on 2 MPI ranks: NVT at 300 K, then NVE at 0.5 fs.
# Prints the thermo table, the conserved energy's drift, the O-O RDF's first peak (PNG plot), the time per
# step, and first the verdict of 2 ranks against 1 rank on the first steps.
#   NVT_STEPS, NVE_STEPS (default 1000 each: 0.5 ps each, ~6 min on this 2-core machine), DEMO_OUT (default /tmp/deepmd-water-demo: logs, rdf.dat, PNG)
#   LAMMPS=current (default): the current LAMMPS users run (scripts/build_lammps.sh's 4 Feb 2025, or
#   $DEEPMD_LAMMPS_PREFIX) with `plugin load bazel-bin/deepmd/lammps/libdeepmd_lammps.so` at the top of
#   the input; LAMMPS=debian: Debian's 2022 LAMMPS through our launcher bazel-bin/deepmd/lammps/lmp.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
nvt_steps="${NVT_STEPS:-1000}" nve_steps="${NVE_STEPS:-1000}" out="${DEMO_OUT:-/tmp/deepmd-water-demo}"
mkdir -p "$out"
case "${LAMMPS:=current}" in
  debian)
    bazel build //deepmd/lammps:lmp //examples/water:water_dpa3_archive
    lmp="$PWD/bazel-bin/deepmd/lammps/lmp"
    cp -f examples/water/in.water "$out/"
    ;;
  current)
    [ -n "${DEEPMD_LAMMPS_PREFIX:-}" ] || bash scripts/build_lammps.sh
    bazel build //deepmd/lammps:plugin //examples/water:water_dpa3_archive
    lmp="$(bash scripts/build_lammps.sh --prefix)/bin/lmp"
    { echo "plugin load $PWD/bazel-bin/deepmd/lammps/libdeepmd_lammps.so"; cat examples/water/in.water; } >"$out/in.water"
    ;;
  *) echo "lammps_demo.sh: LAMMPS=${LAMMPS} is neither debian nor current" >&2; exit 2 ;;
esac
cp -f examples/water/water.data bazel-bin/examples/water/water_dpa3.pt2 "$out/"
version="$("$lmp" -h </dev/null 2>/dev/null | sed -n 's/^Large-scale .* Simulator - //p')" || true
echo "== LAMMPS ${version:-of unknown version}: $lmp"
python=/usr/bin/python3
lammps() {  # NRANKS LOG [-var ...]: in.water in $out
  local nranks="$1" log="$2"
  shift 2
  (cd "$out" && mpirun -np "$nranks" --bind-to none "$lmp" -in in.water -var model water_dpa3.pt2 -log "$log" \
     -screen none "$@")
}

echo "== parity: the first 20 steps on 1 rank and on 2 ranks (regular graph vs with-comm graph)"
lammps 1 parity1.log -var nvt_steps 20 -var nve_steps 10 -var thermo 5
lammps 2 parity2.log -var nvt_steps 20 -var nve_steps 10 -var thermo 5
"$python" examples/water/compare_runs.py "$out/parity1.log" "$out/parity2.log"

echo "== LAMMPS (${LAMMPS}), water (fitted DPA3), 2 MPI ranks: NVT ${nvt_steps} steps, then NVE ${nve_steps} steps"
thermo=$(( (nvt_steps + nve_steps) / 20 > 10 ? (nvt_steps + nve_steps) / 20 : 10 ))  # ~20 thermo lines
lammps 2 md.log -var nvt_steps "$nvt_steps" -var nve_steps "$nve_steps" -var thermo "$thermo"
grep -m1 "^pair_style deepmd:" "$out/md.log" || true
awk '/^ *Step/,/^Loop time/' "$out/md.log"
"$python" examples/water/analyze.py "$out/md.log" "$out/rdf.dat" "$out/rdf_oo.png"
echo "logs, rdf.dat and the plot: $out"
