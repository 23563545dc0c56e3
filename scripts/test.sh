#!/usr/bin/env bash
# Runs every test (the README's second command): the C++ style check (scripts/check_format.sh), then
# bazel test //... with any extra arguments, e.g.
#   scripts/test.sh --config=asan
# and ends with one summary line "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/check_format.sh
format=$?
log=$(mktemp)
bazel test //... "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -cE '^//.* PASSED' "$log")
failed=$(grep -cE '^//.* (FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' "$log")
rm -f "$log"
echo "bazel test: ${passed} passed, ${failed} failed$([ "$format" -ne 0 ] && echo '; C++ formatting check failed')"
[ "$status" -ne 0 ] && exit "$status"
exit "$format"
