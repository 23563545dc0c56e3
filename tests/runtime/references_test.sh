#!/usr/bin/env bash
# Runs references_test_program on the registry's archives and deepmd-kit's reference outputs.
set -euo pipefail
program="$1" registry="$2" one_archive="$3"
references="${TEST_SRCDIR:?run me with bazel test}/deepmd_kit_fixtures/references"
exec "$program" "$registry" "$(dirname "$one_archive")" "$references"
