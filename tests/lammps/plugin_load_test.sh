#!/usr/bin/env bash
# plugin_load_test.sh PROGRAM PLUGIN.so: the plugin as LAMMPS's `plugin load` would open it.
set -euo pipefail
"$1" "$2"
