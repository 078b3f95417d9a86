#!/usr/bin/env bash
# test.sh BUILD_DIR [unit|integration|all] - run lam's tests. Integration tests get throwaway
# Kafka, Redis and PostgreSQL servers on free ports in a temporary directory, stopped on exit.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
BUILD="${1:-build}"
WHAT="${2:-all}"
. scripts/common.sh

passed=0; failed=0; failures=()
result() { # name rc
  if [ "$2" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$1"); fi
}

if [ "$WHAT" = all ] || [ "$WHAT" = unit ]; then
  echo "== unit tests"
  for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    "$t"; rc=$?; result "$(basename "$t")" "$rc"
  done
  if [ "${LAM_TEST_BINARIES_ONLY:-0}" = 1 ]; then WHAT=none; fi
fi
if [ "$WHAT" = all ] || [ "$WHAT" = unit ]; then
  echo "== static checks"
  for t in tests/static/test_*.sh; do
    [ -f "$t" ] || continue
    LAM_BIN_DIR="$root/$BUILD/bin" bash "$t"; rc=$?; result "$(basename "$t")" "$rc"
  done
  echo "== fuzz targets over their seed corpus"
  if make -s fuzz-corpus; then result fuzz-corpus 0; else result fuzz-corpus 1; fi
fi

# LAM_TEST_ONLY=regex runs only the integration tests whose name matches (e.g. LAM_TEST_ONLY=itest_speed).
only() { [ -z "${LAM_TEST_ONLY:-}" ] || [[ "$(basename "$1")" =~ ${LAM_TEST_ONLY} ]]; }

if [ "$WHAT" = all ] || [ "$WHAT" = integration ]; then
  echo "== integration tests (throwaway servers)"
  tmp="$(mktemp -d /tmp/lam-test.XXXXXX)"
  chmod 755 "$tmp"
  lam_throwaway_env "$tmp/stack"
  export LAM_TEST_TMP="$tmp" LAM_BIN_DIR="$root/$BUILD/bin" LAM_VIEWS="$root/shared/views.json"
  export LAM_PG_FSYNC=off
  stop_stack() {
    scripts/stack.sh stop "$tmp/stack" >/dev/null 2>&1
    if [ "${LAM_TEST_KEEP:-0}" = 1 ]; then echo "test state kept in $tmp"; else rm -rf "$tmp"; fi
  }
  trap stop_stack EXIT
  if ! scripts/stack.sh start "$tmp/stack"; then
    result stack-start 1
  else
    for t in "$BUILD"/tests/itest_*; do
      [ -x "$t" ] || continue
      only "$t" || continue
      echo "-- $(basename "$t")"
      "$t"; rc=$?; result "$(basename "$t")" "$rc"
    done
    for t in tests/integration/test_*.sh; do
      [ -f "$t" ] || continue
      only "$t" || continue
      echo "-- $(basename "$t")"
      bash "$t"; rc=$?; result "$(basename "$t")" "$rc"
    done
  fi
fi

if { [ "$WHAT" = all ] || [ "$WHAT" = browser ]; } && [ "${LAM_TEST_BROWSER:-1}" != 0 ]; then
  echo "== browser tests (playwright-core + Debian chromium)"
  if [ -d tests/browser/node_modules ] && command -v chromium >/dev/null 2>&1; then
    node --test tests/browser/; rc=$?; result browser "$rc"
  else
    echo "browser tests need chromium and tests/browser/node_modules (make deps installs both)"
    result browser 1
  fi
fi

echo
echo "== summary: test binaries and scripts"
[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
