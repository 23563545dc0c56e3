#!/usr/bin/env bash
# Installs every Debian package this project needs, then builds the current LAMMPS the plugin is tested
# in (scripts/build_lammps.sh, cached). Idempotent: prints nothing and touches nothing when all is
# present. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  bazel-bootstrap          # Bazel 4.2.3, the build system
  g++                      # C++17 compiler
  libtorch-dev             # LibTorch 1.13.1 (CPU) headers and libraries
  python3-torch            # the same torch for /usr/bin/python3 (scripting models, Python tests)
  python3-numpy            # used by torch's Python tensors printing and test helpers
  python3-h5py             # reads deepmd-kit .dp model files (HDF5)
  python3-yaml             # reads deepmd-kit .yaml model files
  libopenmpi-dev           # OpenMPI 4.1 headers and libmpi
  openmpi-bin              # mpirun
  libabsl-dev              # Abseil (Status, StatusOr, flags, strings)
  libgtest-dev             # GoogleTest
  libgmock-dev             # GoogleMock
  zlib1g-dev               # zlib
  lammps                   # LAMMPS executable (reference runs)
  liblammps-dev            # LAMMPS headers + liblammps.so for the plugin and launcher
  libfmt-dev               # fmt 9 (LAMMPS headers include it)
  nlohmann-json3-dev       # JSON (archive metadata)
  libopenblas0             # fast BLAS for LibTorch's matmuls
  python3-matplotlib       # benchmark plots
  valgrind                 # memcheck test of the standalone path
  clang-format             # the C++ style check of scripts/test.sh (.clang-format)
  cmake                    # builds LAMMPS 4 Feb 2025 (scripts/build_lammps.sh)
  ninja-build              # ... with ninja
  xz-utils                 # ... from its .orig.tar.xz
  debian-archive-keyring   # ... fetched with apt-get source (trixie's signed index)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# LAMMPS 4 Feb 2025 with PLUGIN and SPIN (@lammps_current), unless the user points Bazel at their own.
[ -n "${DEEPMD_LAMMPS_PREFIX:-}" ] || bash "$(dirname "$0")/build_lammps.sh"
