#!/usr/bin/env bash
# speed_catchup.sh - speed_layer catching up an N-event backlog (default views) versus `kcat -C`
# reading the same backlog, measured in the same run (the machine is shared: compare the ratio).
#
#   bench/speed_catchup.sh [N]            throwaway stack on free ports, N events (default 1000000)
#   BENCH_STATE=DIR bench/speed_catchup.sh [N]
#                                         keep the stack and the backlog in DIR and reuse them on the
#                                         next call (each run: FLUSHALL, a fresh consumer group);
#                                         `bench/speed_catchup.sh stop` with BENCH_STATE stops it.
# SHAPE=live (default: events stamped "now", like `make bench`'s ingest backlog: few cells per batch)
# or SHAPE=day (history spread over the last 24 h: every micro-batch touches thousands of cells).
# Env passes through to speed_layer (e.g. LAM_SPEED_BATCH_MAX). RUNS=k repeats the measurement.
# SPEED_BINS="a b" measures several speed_layer binaries in turn in the same run (e.g. before/after).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/common.sh
BIN="$root/${BUILD:-build}/bin"
N="${1:-1000000}"
RUNS="${RUNS:-1}"
export SHAPE="${SHAPE:-live}"

if [ -n "${BENCH_STATE:-}" ]; then
  st="$BENCH_STATE"; keep=1
else
  st="$(mktemp -d /tmp/lam-speedbench.XXXXXX)"; keep=0
fi
mkdir -p "$st"; chmod 755 "$st"
if [ -f "$st/env" ]; then . "$st/env"; else
  lam_throwaway_env "$st/stack"
  declare -p LAM_KAFKA_BROKERS LAM_KAFKA_CONTROLLER_PORT LAM_REDIS_URL LAM_PG_URL LAM_INGEST_ADDR \
    LAM_SERVING_ADDR LAM_SPEED_ADDR LAM_BATCH_ADDR LAM_STATE_DIR | sed 's/^declare -x /export /' >"$st/env"
fi
export LAM_VIEWS="$root/shared/views.json" LAM_LOG_LEVEL=warn LAM_DATA_DIR="$st/data"
if [ "$N" = stop ]; then scripts/stack.sh stop "$st/stack"; rm -rf "$st"; exit 0; fi
redis_port="$(lam_port_of "${LAM_REDIS_URL#redis://}")"
cleanup() {
  [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null
  if [ "$keep" = 0 ]; then scripts/stack.sh stop "$st/stack" >/dev/null 2>&1; rm -rf "$st"; fi
}
trap cleanup EXIT

scripts/stack.sh start "$st/stack" kafka redis >/dev/null || { echo "stack did not start" >&2; exit 1; }
B="$LAM_KAFKA_BROKERS"

if [ "$(cat "$st/produced" 2>/dev/null)" != "$SHAPE $N" ]; then
  [ ! -f "$st/produced" ] || { echo "$st holds another backlog ($(cat "$st/produced")): use another BENCH_STATE" >&2; exit 1; }
  "$BIN/ingest" >>"$st/ingest.log" 2>&1 &
  ipid=$!
  for ((i = 0; i < 300; i++)); do curl -fs -o /dev/null "http://$LAM_INGEST_ADDR/healthz" && break; sleep 0.1; done
  if [ "$SHAPE" = day ]; then
    "$BIN/loadgen" --url "http://$LAM_INGEST_ADDR" --rate 0 --count 0 --backfill-days 1 --backfill-per-day "$N" \
      --batch 100 --connections 16 --quiet --seed 7 >"$st/loadgen.out" 2>&1
  else
    "$BIN/loadgen" --url "http://$LAM_INGEST_ADDR" --rate 0 --count "$N" --batch 100 --connections 32 \
      --quiet --seed 7 >"$st/loadgen.out" 2>&1
  fi
  kill "$ipid"; wait "$ipid" 2>/dev/null
  echo "$SHAPE $N" >"$st/produced"
fi
total="$(kcat -C -b "$B" -t events -o beginning -e -q 2>/dev/null | wc -l)"
metric() { curl -fs "http://$1/metrics" | awk -v m="$2" '$1 == m {print $2; exit}'; }

for ((run = 1; run <= RUNS; run++)); do
for sbin in ${SPEED_BINS:-$BIN/speed_layer}; do
  redis-cli -p "$redis_port" FLUSHALL >/dev/null
  redis-cli -p "$redis_port" CONFIG RESETSTAT >/dev/null
  t0=$(date +%s.%N)
  LAM_SPEED_GROUP="bench-$$-$run" "$sbin" >>"$st/speed.log" 2>&1 &
  spid=$!
  c0="$(awk '{print $14+$15}' /proc/$spid/stat)"
  rpid="$(redis-cli -p "$redis_port" INFO server | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')"
  r0="$(awk '{print $14+$15}' /proc/$rpid/stat)"
  rc0="$(awk '{print $16+$17}' /proc/$rpid/stat)" # its children: AOF rewrites (BGREWRITEAOF forks)
  while :; do
    n="$(metric "$LAM_SPEED_ADDR" lam_speed_events_total)"; n="${n%.*}"
    [ "${n:-0}" -ge "$total" ] 2>/dev/null && break
    kill -0 "$spid" 2>/dev/null || { echo "speed_layer died" >&2; tail "$st/speed.log" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  cpu="$(awk '{print $14+$15}' /proc/$spid/stat)"
  hwm="$(awk '/^VmHWM/ {print $2}' /proc/$spid/status)"
  r1="$(awk '{print $14+$15}' /proc/$rpid/stat)"
  sleep 0.5 # a rewrite child running at the end is reaped (and counted) shortly after
  rc1="$(awk '{print $16+$17}' /proc/$rpid/stat)"
  kill "$spid"; wait "$spid" 2>/dev/null; spid=
  # BENCH_CMDSTATS=1: Redis's calls and usec per command of this run (INFO commandstats, reset before it)
  [ -z "${BENCH_CMDSTATS:-}" ] || redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' |
    awk -F'[:=,]' -v n="$n" '/^cmdstat_/ {sub("cmdstat_", "", $1); printf "  %-18s calls %9d  usec %10d  usec/call %6.2f  usec/event %.3f\n", $1, $3, $5, $7, $5 / n}' |
    sort -k5 -n -r
  k0=$(date +%s.%N)
  kn="$(kcat -C -b "$B" -t events -o beginning -e -q 2>/dev/null | wc -l)"
  k1=$(date +%s.%N)
  python3 - "$n" "$t0" "$t1" "$kn" "$k0" "$k1" "$cpu" "$c0" "$hwm" "$(cut -d' ' -f1 /proc/loadavg)" "$sbin" "$r0" "$r1" "$rc0" "$rc1" <<'PY'
import os, sys
n, t0, t1, kn, k0, k1, cpu, c0, hwm, load, sbin, r0, r1, rc0, rc1 = sys.argv[1:]
s = float(t1) - float(t0); ks = float(k1) - float(k0)
rate = int(n) / s; krate = int(kn) / ks
tck = os.sysconf("SC_CLK_TCK")
per200k = 200000 / max(int(n), 1)
print(f"{os.environ.get('SHAPE', 'live')}: {sbin}: {n} events in {s:.2f} s = {rate:,.0f}/s (cpu {(int(cpu) - int(c0)) / tck:.1f} s, "
      f"per 200k events: speed {(int(cpu) - int(c0)) / tck * per200k:.2f} s, redis {(int(r1) - int(r0)) / tck * per200k:.2f} s "
      f"+ its AOF rewrites {(int(rc1) - int(rc0)) / tck * per200k:.2f} s, "
      f"peak RSS {int(hwm) // 1024} MB) | kcat -C: {kn} in {ks:.2f} s = {krate:,.0f}/s | "
      f"ratio {rate / krate:.2f}x | load {load}")
PY
done
done
