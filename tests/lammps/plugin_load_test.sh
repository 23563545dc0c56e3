#!/usr/bin/env bash
# plugin_load_test.sh RUN_MPI PROGRAM PLUGIN.so: the plugin loaded into the current LAMMPS, in-process.
set -euo pipefail
"$1" 1 "$2" "$PWD/$3"
