#!/usr/bin/env bash
# test_runner.sh - the test runner itself: a failing test binary must make it fail, a passing one not.
set -uo pipefail
cd "$(dirname "$0")/../.."
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tests"
printf '#!/bin/sh\nexit 0\n' >"$tmp/tests/test_ok"; printf '#!/bin/sh\nexit 3\n' >"$tmp/tests/test_bad"
chmod +x "$tmp/tests/"*
out="$(LAM_TEST_BINARIES_ONLY=1 scripts/test.sh "$tmp" unit 2>&1)"; rc=$?
if [ "$rc" -ne 0 ] && grep -q "^1 passed, 1 failed$" <<<"$out" && grep -q "failed: test_bad" <<<"$out"; then
  echo "ok   - a failing test binary fails the run and is named"
else
  echo "FAIL - runner did not report the failing binary (rc=$rc)"; echo "$out"; exit 1
fi
rm "$tmp/tests/test_bad"
if LAM_TEST_BINARIES_ONLY=1 scripts/test.sh "$tmp" unit >/dev/null 2>&1; then
  echo "ok   - only passing binaries: the run passes"
else
  echo "FAIL - runner failed with only passing binaries"; exit 1
fi
