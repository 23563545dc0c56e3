#!/usr/bin/env bash
# Checks that every tracked C++ file follows .clang-format (clang-format --dry-run --Werror); run by
# scripts/test.sh, so CI fails on a file that does not. Fix with: scripts/check_format.sh --fix
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -- '*.cc' '*.h')
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/clang-format.$$; then
  grep -E '^[^ ].*: (error|warning):' /tmp/clang-format.$$ | cut -d: -f1 | sort -u | sed 's/^/  not formatted: /'
  rm -f /tmp/clang-format.$$
  echo "check_format: run scripts/check_format.sh --fix" >&2
  exit 1
fi
rm -f /tmp/clang-format.$$
echo "check_format: ${#files[@]} C++ files follow .clang-format"
