# testlib.sh - sourced by the shell integration tests from the project's root (after `cd "$root"`):
#   $BIN   the built binaries (LAM_BIN_DIR, else build/bin)
#   $TMP   a scratch directory of the test's own: $LAM_TEST_TMP/<test name>
#   check "description" command args...   runs the command: "ok   - description" or "FAIL - ..."
# At the end a test reports $((checks - fails))/$checks and exits non-zero when fails > 0.
. scripts/common.sh
BIN="${LAM_BIN_DIR:-$PWD/build/bin}"
TMP="${LAM_TEST_TMP:-$(mktemp -d)}/$(basename "$0" .sh)"
mkdir -p "$TMP"
fails=0; checks=0
check() { # description command...
  checks=$((checks + 1))
  if "${@:2}"; then echo "ok   - $1"; else echo "FAIL - $1"; fails=$((fails + 1)); fi
}
