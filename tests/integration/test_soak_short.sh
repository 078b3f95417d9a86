#!/usr/bin/env bash
# test_soak_short.sh - the short whole-pipeline soak for `make test`: its own throwaway stack
# (lam_throwaway_env, never the shared test servers), ~2 minutes of traffic (backfill, late
# events, duplicate ids, bursts) with each fault kind at least once (kill -9 speed_layer, a second
# speed_layer in the group, kill -9 batch_layer idle and during a run, kill -9 ingest, Redis and
# Kafka restarts, batch runs on demand), the hostile request suite, then tests/soak/oracle.py:
# tolerant after traffic stops, exact after a final batch run. SOAK_SEED reproduces a run.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export SOAK_TMP="${LAM_TEST_TMP:-/tmp}" SOAK_SECONDS="${SOAK_SHORT_SECONDS:-80}" SOAK_SEED="${SOAK_SEED:-$(( $(date +%s) % 100000 ))}"
export SOAK_SUMMARY="${LAM_TEST_TMP:-/tmp}/soak-short-summary.txt"
out="${LAM_TEST_TMP:-/tmp}/soak-short.out"
export SOAK_REPRO="SOAK_SEED=$SOAK_SEED SOAK_SHORT_SECONDS=$SOAK_SECONDS bash tests/integration/test_soak_short.sh"
bash tests/soak/soak.sh --short --hostile --rate 250 --backfill-days 2 --backfill-per-day 1500 >"$out" 2>&1
rc=$?
fails=0
check() { # name grep-pattern
  if grep -qE "$2" "$out"; then echo "ok - $1"; else echo "FAIL - $1"; fails=$((fails + 1)); fi
}
for f in kill9_speed_layer speed_second_start speed_second_stop kill9_batch_layer kill9_batch_inflight \
         kill9_ingest restart_redis restart_kafka batch_runs_on_demand; do
  check "fault injected: $f" "FAULT $f "
done
check "hostile suite passed" "hostile suite: PASS"
check "answers stable (or 503) during Redis restart, speed kill, batch publish" "answers stable during faults \(end\): PASS"
check "oracle after traffic (speed+batch merge) passed" "oracle end-merge +PASS"
check "oracle after the final batch run (exact) passed" "oracle end-exact +PASS"
check "oracle self-test: a missing event is detected" "oracle self-test .*: PASS"
sed -n "/== soak summary/,\$p" "$out" | sed -E "s/^[0-9:]+ \+ *[0-9.]+s /  /"
if [ "$rc" != 0 ] || [ "$fails" != 0 ]; then
  echo "FAIL - short soak (exit $rc); last lines of $out:"
  tail -40 "$out" | sed 's/^/  /'
  exit 1
fi
echo "ok - short soak"
