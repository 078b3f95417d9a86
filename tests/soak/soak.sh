#!/usr/bin/env bash
# soak.sh [soak.py options] - the whole stack on free ports in a temporary directory, traffic and
# seeded chaos for SOAK_SECONDS (default 600), checked by the oracle; cleans up what it started.
#   SOAK_SECONDS=600 SOAK_SEED=42 tests/soak/soak.sh          (make soak)
#   SOAK_KEEP=1 keeps the work directory (events, oracle tables, logs) for inspection.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. scripts/common.sh
SOAK_SECONDS="${SOAK_SECONDS:-600}"
SOAK_SEED="${SOAK_SEED:-$(( $(date +%s) % 100000 ))}"
work="$(mktemp -d "${SOAK_TMP:-/tmp}/lam-soak.XXXXXX")"
chmod 755 "$work"
echo "soak: seed $SOAK_SEED, $SOAK_SECONDS s, work directory $work"
lam_throwaway_env "$work/stack"
mkdir -p "$LAM_STATE_DIR"; chmod 755 "$LAM_STATE_DIR"
export LAM_VIEWS="$root/shared/views.json" LAM_BATCH_SCHEDULE=off
export LAM_BIN_DIR="${LAM_BIN_DIR:-$root/build/bin}"
soak_pid=""
cleanup() {
  trap - EXIT INT TERM
  [ -n "$soak_pid" ] && kill -TERM "$soak_pid" 2>/dev/null && wait "$soak_pid" 2>/dev/null
  scripts/lam.sh down >/dev/null 2>&1
  if [ "${SOAK_KEEP:-0}" = 1 ] || [ "${rc:-1}" != 0 ]; then
    echo "soak: work directory kept: $work (logs in $work/stack/logs, fault log $work/soak.log)"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'rc=130; exit 130' INT TERM
if ! scripts/lam.sh up >"$work/up.log" 2>&1; then
  tail -20 "$work/up.log"; echo "FAIL - the stack did not come up"; rc=1; exit 1
fi
python3 tests/soak/soak.py --seconds "$SOAK_SECONDS" --seed "$SOAK_SEED" --workdir "$work" "$@" &
soak_pid=$!
wait "$soak_pid"; rc=$?
soak_pid=""
[ -f "$work/summary.txt" ] && cp "$work/summary.txt" "${SOAK_SUMMARY:-$root/build/soak-summary.txt}" 2>/dev/null
[ "$rc" = 0 ] || echo "soak: FAILED - reproduce with SOAK_SEED=$SOAK_SEED SOAK_SECONDS=$SOAK_SECONDS scripts/soak.sh"
exit "$rc"
