#!/usr/bin/env bash
# Builds LAMMPS 4 Feb 2025 (Debian trixie's source package 20250204+dfsg.1) with MPI, PLUGIN and SPIN into
# a cache on this machine, for `plugin load libdeepmd_lammps.so` and the Bazel repository @lammps_current.
# Idempotent: prints nothing when the cached build matches this script's configuration.
#
#   scripts/build_lammps.sh            # cache: $DEEPMD_LAMMPS_CACHE or ~/.cache/deepmd-gnn/lammps-20250204
#   scripts/build_lammps.sh --prefix   # prints the install prefix in use ($DEEPMD_LAMMPS_PREFIX wins)
#   -> $CACHE/install/{bin/lmp, lib/liblammps.so, include/lammps/*.h, lib/pkgconfig/liblammps.pc}
#
# Sources come through `apt-get source` with a private apt configuration: the deb-src line is
# third_party/lammps/apt/sources.list, apt's lists live under $CACHE/apt; /etc/apt is never read or changed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${DEEPMD_LAMMPS_CACHE:-$HOME/.cache/deepmd-gnn/lammps-20250204}"
VERSION=20250204+dfsg.1-2
ORIG=lammps_20250204+dfsg.1.orig.tar.xz
ORIG_SHA256=3671165bd52fad36734e0a9136c5bc5ecb225e03988f8c89aa13366a8b53b1c7
TREE=lammps-4Feb2025
PREFIX="$CACHE/install"
JOBS="${DEEPMD_LAMMPS_JOBS:-$(nproc)}"
if [ "${1:-}" = "--prefix" ]; then  # the rule of third_party/system/lammps_prefix.bzl
  echo "${DEEPMD_LAMMPS_PREFIX:-$PREFIX}"
  exit 0
fi

# The plugin and this build must agree on the integer sizes (smallbig, as Debian's liblammps) and MPI
# (Debian's OpenMPI). Only what the tests and examples use: PLUGIN (plugin load), SPIN (atom_style spin).
CMAKE_OPTIONS=(
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_INSTALL_PREFIX="$PREFIX"
  -DCMAKE_INSTALL_LIBDIR=lib
  -DCMAKE_INSTALL_RPATH='$ORIGIN/../lib'
  -DBUILD_SHARED_LIBS=on      # liblammps.so and the installed headers the plugin compiles against
  -DBUILD_MPI=on
  -DBUILD_OMP=off
  -DLAMMPS_SIZES=smallbig
  -DPKG_PLUGIN=on
  -DPKG_SPIN=on
  -DDOWNLOAD_POTENTIALS=off   # offline
  -DWITH_JPEG=off -DWITH_PNG=off -DWITH_FFMPEG=off -DWITH_GZIP=off
)
# The stamp names everything that determines the install: rebuilt when any of it changes.
STAMP_KEY="$VERSION $ORIG_SHA256 ${CMAKE_OPTIONS[*]} $(g++ -dumpfullversion) $(mpicxx --showme:version 2>&1 | head -1)"
STAMP="$PREFIX/.deepmd-build-stamp"
if [ -f "$STAMP" ] && [ "$(head -1 "$STAMP")" = "$STAMP_KEY" ] && [ -x "$PREFIX/bin/lmp" ]; then
  exit 0
fi

log() { echo "build_lammps: $*" >&2; }
start=$(date +%s)
mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/src"

# 1. The orig tarball through apt-get source (private configuration), verified against the pinned SHA-256.
APT=(-o Dir::Etc::SourceList="$ROOT/third_party/lammps/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$CACHE/apt/lists" -o Dir::Cache="$CACHE/apt/cache"
     -o APT::Sandbox::User="$(id -un)" -o Debug::NoLocking=true)
verified() { [ -f "$CACHE/src/$ORIG" ] && echo "$ORIG_SHA256  $CACHE/src/$ORIG" | sha256sum --check --status; }
if ! verified; then
  log "fetching LAMMPS $VERSION sources (apt-get source, ~130 MB)"
  apt-get "${APT[@]}" -qq update
  # The index (signed by Debian's archive key) must list the tarball with the pinned hash.
  if ! apt-get "${APT[@]}" source --print-uris "lammps=$VERSION" 2>/dev/null | grep -q "SHA256:$ORIG_SHA256"; then
    log "Debian's source index no longer lists $ORIG with SHA-256 $ORIG_SHA256 (apt-cache showsrc lammps:"
    apt-cache "${APT[@]}" showsrc lammps | grep -E '^Version' >&2 || true
    log "); update VERSION and ORIG_SHA256 in $0"
    exit 1
  fi
  # The .dsc is missing from the mirror (404): apt-get reports it and fetches the tarballs anyway.
  (cd "$CACHE/src" && apt-get "${APT[@]}" -qq source --download-only "lammps=$VERSION" >/dev/null 2>&1 || true)
  if ! verified; then
    log "apt-get source did not deliver $ORIG with SHA-256 $ORIG_SHA256 into $CACHE/src"
    exit 1
  fi
fi

# 2. Unpacked by hand (no .dsc, so no dpkg-source); Debian's patches touch only docs and potential paths.
if [ ! -f "$CACHE/src/$TREE/.unpacked" ]; then
  log "unpacking $ORIG"
  rm -rf "${CACHE:?}/src/$TREE"
  tar -C "$CACHE/src" -xf "$CACHE/src/$ORIG"
  touch "$CACHE/src/$TREE/.unpacked"
fi

# 3. Configure, build, install.
log "building LAMMPS with cmake (-j$JOBS) into $PREFIX"
rm -rf "$CACHE/build" "$PREFIX"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$CACHE/src/$TREE/cmake" -B "$CACHE/build" "${generator[@]}" "${CMAKE_OPTIONS[@]}" >"$CACHE/configure.log" 2>&1 ||
  { tail -40 "$CACHE/configure.log" >&2; log "cmake configure failed: $CACHE/configure.log"; exit 1; }
cmake --build "$CACHE/build" -j "$JOBS" >"$CACHE/build.log" 2>&1 ||
  { tail -40 "$CACHE/build.log" >&2; log "build failed: $CACHE/build.log"; exit 1; }
cmake --install "$CACHE/build" >"$CACHE/install.log" 2>&1 ||
  { tail -40 "$CACHE/install.log" >&2; log "install failed: $CACHE/install.log"; exit 1; }

# cmake installs a subset of the headers; the plugin also needs the plugin ABI and version headers.
cp "$CACHE/src/$TREE/src/lammpsplugin.h" "$CACHE/src/$TREE/src/version.h" "$PREFIX/include/lammps/"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
help="$("$PREFIX/bin/lmp" -h </dev/null)"
for package in PLUGIN SPIN; do
  if ! grep -qw "$package" <<<"$help"; then
    log "the built lmp lacks the $package package"
    exit 1
  fi
done
rm -rf "$CACHE/build"  # ~1 GB of objects; the install is all that is used
seconds=$(($(date +%s) - start))
printf '%s\n%s\n' "$STAMP_KEY" "built in ${seconds} s with -j$JOBS on $(date -u +%Y-%m-%dT%H:%MZ)" >"$STAMP"
log "LAMMPS 4 Feb 2025 built in ${seconds} s: $PREFIX/bin/lmp"
