#!/usr/bin/env bash
# test_updown.sh - make up / make down / make up, supervision restarts, no twins, no leftovers,
# LAM_* reaching the services, and a clear exit 2 for bad configuration. Uses its own state
# directory and free ports, so it never touches a running stack.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. tests/testlib.sh
export LAM_BIN_DIR="$BIN"

# 1. A wrong value exits with code 2 and names the variable, for every service.
for svc in ingest speed_layer batch_layer serving; do
  out="$(LAM_LOG_LEVEL=loud "$BIN/$svc" 2>&1)"; rc=$?
  check "$svc: bad LAM_LOG_LEVEL exits 2 naming the variable" test "$rc" = 2 -a -n "$(echo "$out" | grep LAM_LOG_LEVEL)"
done
out="$(LAM_INGEST_ADDR=nowhere "$BIN/ingest" 2>&1)"; rc=$?
check "ingest: LAM_INGEST_ADDR=nowhere exits 2" test "$rc" = 2 -a -n "$(echo "$out" | grep 'LAM_INGEST_ADDR: not host:port')"
out="$(LAM_PG_URL=mysql://x "$BIN/serving" 2>&1)"; rc=$?
check "serving: LAM_PG_URL with wrong scheme exits 2" test "$rc" = 2 -a -n "$(echo "$out" | grep LAM_PG_URL)"

# 2. Starting without dependencies: a clear message and retries, no crash.
port="$(lam_free_port)"
LAM_REDIS_URL="redis://127.0.0.1:1" LAM_SPEED_ADDR="127.0.0.1:$port" timeout 3 "$BIN/speed_layer" >"$LAM_TEST_TMP/nodeps.log" 2>&1
check "speed_layer without Redis says so" grep -q 'cannot reach Redis at 127.0.0.1:1' "$LAM_TEST_TMP/nodeps.log"
delays="$(sed -n 's/.*retry_in_ms=\([0-9]*\).*/\1/p' "$LAM_TEST_TMP/nodeps.log" | head -3 | tr '\n' ' ')"
check "speed_layer retries with growing backoff ($delays ms)" python3 -c "d=[int(x) for x in '$delays'.split()]; assert len(d) >= 3 and d[0] < d[1] < d[2], d"
check "speed_layer stopped by SIGTERM while waiting" grep -q 'msg=stopped' "$LAM_TEST_TMP/nodeps.log"

# 3. The whole stack with its own state and ports.
lam_throwaway_env "$LAM_TEST_TMP/updown"
mkdir -p "$LAM_STATE_DIR"; chmod 755 "$LAM_STATE_DIR"
export LAM_INGEST_MAX_BODY=2048   # proves LAM_* in the environment of `up` reach the services
cleanup() { scripts/lam.sh down >/dev/null 2>&1; }
trap cleanup EXIT

healthy_all() {
  local a; for a in "$LAM_INGEST_ADDR" "$LAM_SERVING_ADDR" "$LAM_SPEED_ADDR" "$LAM_BATCH_ADDR"; do
    curl -fs -o /dev/null --max-time 2 "http://$a/healthz" || return 1; done
}
no_leftovers() { ! pgrep -f "$LAM_STATE_DIR" >/dev/null && ! pgrep -f "$BIN/" -u "$(id -u)" -a | grep -q "$LAM_INGEST_ADDR"; }

check "make up (1st) succeeds" scripts/lam.sh up
check "every service healthy after up" healthy_all
out="$(scripts/lam.sh up 2>&1)"
check "a second up says it is already running" grep -q "already running" <<<"$out"
check "LAM_INGEST_MAX_BODY reached ingest (3 KiB body gets 413)" \
  test "$(head -c 3072 /dev/zero | tr '\0' 'a' | curl -s -o /dev/null -w '%{http_code}' --data-binary @- "http://$LAM_INGEST_ADDR/v1/events")" = 413

old="$(cat "$LAM_STATE_DIR/pids/ingest.pid")"
kill -9 "$old"
t0=$(date +%s%N)
until curl -fs -o /dev/null --max-time 1 "http://$LAM_INGEST_ADDR/healthz" && [ "$(cat "$LAM_STATE_DIR/pids/ingest.pid" 2>/dev/null)" != "$old" ]; do
  [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 10000 ] || break
  sleep 0.05
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "     ingest restarted and healthy ${ms} ms after kill -9"
check "killed ingest restarted (new pid) within 2 s" test "$ms" -le 2000
check "the restart is logged" grep -q 'ingest exited, restarting' "$LAM_STATE_DIR/logs/ingest.log"

check "make down succeeds" scripts/lam.sh down
check "make down leaves no process of ours behind" no_leftovers
check "make up (2nd) succeeds" scripts/lam.sh up
check "every service healthy after the 2nd up" healthy_all
check "make down (2nd) succeeds" scripts/lam.sh down
check "no process left after the 2nd down" no_leftovers

# make run: up + demo traffic + logs; Ctrl-C (SIGINT to the whole process group, as a terminal
# sends it) stops everything.
# A script's background job starts with SIGINT ignored; a terminal's foreground job does not: start
# it the way a terminal would (own process group, default SIGINT).
LAM_INGEST_MAX_BODY="" LAM_DEMO_RATE=500 python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL); os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' \
  scripts/lam.sh run >"$LAM_TEST_TMP/run.out" 2>&1 </dev/null &
run_pid=$!
events=0
for i in $(seq 1 120); do
  events="$(curl -fs "http://$LAM_SERVING_ADDR/v1/views/events_by_type?granularity=all" |
            python3 -c 'import json,sys; print(sum(g["count"] for b in json.load(sys.stdin)["buckets"] for g in b["groups"]))' 2>/dev/null)"
  [ "${events:-0}" -gt 0 ] && break
  sleep 0.5
done
check "make run sends demo traffic that reaches the views ($events events)" test "${events:-0}" -gt 0
kill -INT -- "-$run_pid"
for i in $(seq 1 600); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.1; done
check "Ctrl-C ends make run" bash -c "! kill -0 $run_pid 2>/dev/null"
check "Ctrl-C leaves no process behind" no_leftovers
trap - EXIT

echo "test_updown: $((checks - fails)) passed, $fails failed"
[ "$fails" = 0 ]
