#!/usr/bin/env bash
# bench.sh - `make bench`: lam's throughput, latency and memory, each figure next to a reference
# measured in the same run on the same machine (ratios are what count on a noisy machine).
# Starts its own throwaway stack on free ports, prints a table, writes bench/results/latest.md and
# BENCHMARKS.md, and cleans up. BENCH_SCALE=0.2 shrinks every workload (for a quick look).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/common.sh
BUILD="${BUILD:-build}"
BIN="$root/$BUILD/bin"
SCALE="${BENCH_SCALE:-1}"
n_of() { python3 -c "print(max(1000, int($1 * $SCALE)))"; }

tmp="$(mktemp -d /tmp/lam-bench.XXXXXX)"; chmod 755 "$tmp"
lam_throwaway_env "$tmp/stack"
export LAM_DATA_DIR="$tmp/data" LAM_VIEWS="$root/shared/views.json" LAM_LOG_LEVEL=warn
pids=()
cleanup() {
  for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  scripts/stack.sh stop "$tmp/stack" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

rows=()
row() { # what | lam | reference | ratio | goal
  rows+=("| $1 | $2 | $3 | $4 | $5 |")
  printf '%-44s %-30s %-34s %-8s %s\n' "$1" "$2" "$3" "$4" "$5"
}
ratio() { python3 -c "a,b=float('$1' or 0),float('$2' or 0); print(f'{a/b:.2f}x' if b else 'n/a')"; }
verdict() { python3 -c "print('met' if $1 else 'MISSED')"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null; }
start_svc() { # name -> pid in $svc_pid, waits for /healthz on $2
  "$BIN/$1" >>"$tmp/$1.log" 2>&1 &
  svc_pid=$!; pids+=("$svc_pid")
  local i; for ((i = 0; i < 300; i++)); do curl -fs -o /dev/null "http://$2/healthz" && return 0; sleep 0.1; done
  echo "bench: $1 did not become healthy" >&2; tail "$tmp/$1.log" >&2; return 1
}

echo "lam benchmarks — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), scale $SCALE"
printf '%-44s %-30s %-34s %-8s %s\n' "what" "lam" "reference (same run)" "ratio" "goal"
t_start=$SECONDS

# 1. The event parser and view engine, one core, against jansson.
if [ -x "$BUILD/bench/bench_parse" ] || make -s "$BUILD/bench/bench_parse" >/dev/null 2>&1; then
  out="$("$BUILD/bench/bench_parse" "$(n_of 1000000)")"
  parse="$(awk '/^lam_event_parse/ {print $2}' <<<"$out")"
  apply="$(awk '/^parse \+ lam_agg/ {print $4}' <<<"$out")"
  jans="$(awk '/^jansson/ {print $3}' <<<"$out")"
  row "event parse, 1 core (M events/s)" "$parse" "jansson json_loadb: $jans" "$(ratio "$parse" "$jans")" "one parser for every service"
  row "parse + apply 8 views, 1 core (M events/s)" "$apply" "—" "" "≥ 1.5 per core (3M/s on 2)"
fi

scripts/stack.sh start "$tmp/stack" >/dev/null || { echo "bench: stack did not start" >&2; exit 1; }
B="$LAM_KAFKA_BROKERS"

# 2. Ingest, 100-event NDJSON requests, acks=all, versus kcat -P producing the same events.
start_svc ingest "$LAM_INGEST_ADDR" || exit 1
ingest_pid=$svc_pid
n="$(n_of 2000000)"
out="$("$BIN/loadgen" --url "http://$LAM_INGEST_ADDR" --rate 0 --count "$n" --batch 100 --connections 32 \
        --quiet --seed 7 --out "$tmp/events.ndjson")"
lam_rate="$(sed -n 's/.* rate=\([0-9]*\)\/s.*/\1/p' <<<"$out" | tail -1)"
acked="$(sed -n 's/.* acknowledged=\([0-9]*\) .*/\1/p' <<<"$out" | tail -1)"
# kcat needs its topic to exist (lam creates topics itself; auto-creation is off): a second ingest makes it.
LAM_KAFKA_TOPIC=bench-kcat LAM_INGEST_ADDR="127.0.0.1:$(lam_free_port)" "$BIN/ingest" >/dev/null 2>&1 &
mk=$!; sleep 3; kill "$mk" 2>/dev/null; wait "$mk" 2>/dev/null
lines="$(wc -l <"$tmp/events.ndjson")"
t0=$(date +%s.%N)
kcat -P -b "$B" -t bench-kcat -X acks=all -X enable.idempotence=true -l "$tmp/events.ndjson" 2>>"$tmp/kcat.log"
t1=$(date +%s.%N)
kcat_rate="$(python3 -c "print(int($lines/($t1-$t0)))")"
row "ingest, 100-event NDJSON (events/s)" "$lam_rate" "kcat -P: $kcat_rate" "$(ratio "$lam_rate" "$kcat_rate")" \
    "≥ 200k and ≥ 0.5x: $(verdict "$lam_rate >= 200000 and $lam_rate >= 0.5 * $kcat_rate")"

# 3. Ingest, single-event requests with keep-alive (wrk), versus wrk on /healthz.
cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"type":"page_view","url":"/p/1","user":"u1","session":"s1","device":"mobile"}'
LUA
secs="$(python3 -c "print(max(3, int(10 * $SCALE)))")"
w1="$(wrk -t2 -c64 -d"${secs}s" --latency -s "$tmp/post.lua" "http://$LAM_INGEST_ADDR/v1/events" 2>&1)"
w2="$(wrk -t2 -c64 -d"${secs}s" --latency "http://$LAM_INGEST_ADDR/healthz" 2>&1)"
rps1="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w1")"; p99a="$(awk '$1=="99%" {print $2}' <<<"$w1")"
rps2="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w2")"
row "ingest, single-event requests (req/s, p99)" "$rps1, p99 $p99a" "wrk /healthz: $rps2" "$(ratio "$rps1" "$rps2")" \
    "≥ 30k: $(verdict "${rps1:-0} >= 30000")"

# 4. Speed layer catching up the backlog the ingest run left in the topic, versus kcat -C reading it.
metric() { curl -fs "http://$1/metrics" | awk -v m="$2" '$1 == m {print $2; exit}'; }
t0=$(date +%s.%N)
start_svc speed_layer "$LAM_SPEED_ADDR" || exit 1
speed_pid=$svc_pid
deadline=$((SECONDS + 900))
while :; do
  done_n="$(metric "$LAM_SPEED_ADDR" lam_speed_events_total)"
  [ "${done_n%.*}" -ge "$acked" ] 2>/dev/null && break
  [ $SECONDS -lt $deadline ] || { echo "bench: speed layer did not catch up in 900 s (at ${done_n:-0})" >&2; break; }
  sleep 0.2
done
t1=$(date +%s.%N)
speed_rate="$(python3 -c "print(int(${done_n%.*} / ($t1 - $t0)))")"
t0=$(date +%s.%N)
kc_n="$(kcat -C -b "$B" -t events -o beginning -e -q 2>/dev/null | wc -l)"
t1=$(date +%s.%N)
kc_rate="$(python3 -c "print(int($kc_n / ($t1 - $t0)))")"
row "speed layer catch-up, ${acked} backlog (events/s)" "$speed_rate" "kcat -C: $kc_rate" "$(ratio "$speed_rate" "$kc_rate")" \
    "≥ 300k and ≥ 0.5x: $(verdict "$speed_rate >= 300000 and $speed_rate >= 0.5 * $kc_rate")"

# 5. Serving: a typical merged query (24 hourly buckets, top 10) versus /healthz on the same server.
start_svc serving "$LAM_SERVING_ADDR" || exit 1
serving_pid=$svc_pid
q="/v1/views/page_views_by_url?granularity=hour&top=10"
curl -fs -o /dev/null "http://$LAM_SERVING_ADDR$q" || echo "bench: the typical query failed" >&2
w1="$(wrk -t2 -c32 -d"${secs}s" --latency "http://$LAM_SERVING_ADDR$q" 2>&1)"
w2="$(wrk -t2 -c32 -d"${secs}s" --latency "http://$LAM_SERVING_ADDR/healthz" 2>&1)"
rps1="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w1")"; p50="$(awk '$1=="50%" {print $2}' <<<"$w1")"
p99="$(awk '$1=="99%" {print $2}' <<<"$w1")"; rps2="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w2")"
p99ms="$(python3 -c "v='$p99'; print(float(v[:-2]) if v.endswith('ms') else float(v[:-2])/1000 if v.endswith('us') else float(v[:-1])*1000 if v.endswith('s') else 1e9)")"
row "serving, merged query (req/s, p50/p99)" "$rps1, $p50 / $p99" "wrk /healthz: $rps2" "$(ratio "$rps1" "$rps2")" \
    "≥ 10k, p99 ≤ 10 ms, ≥ 0.5x: $(verdict "${rps1:-0} >= 10000 and $p99ms <= 10 and ${rps1:-0} >= 0.5 * ${rps2:-1}")"

# The same query with serving's short-lived answer cache off (LAM_SERVING_RESULT_MS=0): every
# request merges PostgreSQL and Redis data.
LAM_SERVING_ADDR2="127.0.0.1:$(lam_free_port)"
LAM_SERVING_RESULT_MS=0 LAM_SERVING_ADDR="$LAM_SERVING_ADDR2" start_svc serving "$LAM_SERVING_ADDR2" || exit 1
w3="$(wrk -t2 -c32 -d"${secs}s" --latency "http://$LAM_SERVING_ADDR2$q" 2>&1)"
kill "$svc_pid" 2>/dev/null
rps3="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w3")"; p99c="$(awk '$1=="99%" {print $2}' <<<"$w3")"
row "serving, same query, answer cache off" "$rps3, p99 $p99c" "wrk /healthz: $rps2" "$(ratio "$rps3" "$rps2")" \
    "(every request merges PostgreSQL + Redis)"

# 7. Batch recompute over the master dataset (the archiver first takes in the whole backlog).
LAM_BATCH_SCHEDULE=off LAM_LOG_LEVEL=info start_svc batch_layer "$LAM_BATCH_ADDR" || exit 1
batch_pid=$svc_pid
deadline=$((SECONDS + 900))
until [ "$(curl -fs "http://$LAM_SERVING_ADDR/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["archive"]["lag"])' 2>/dev/null)" = 0 ]; do
  [ $SECONDS -lt $deadline ] || { echo "bench: archiver did not catch up" >&2; break; }
  sleep 0.5
done
"$BIN/batch_layer" run --wait >"$tmp/run.out" 2>&1 || echo "bench: batch run failed: $(tail -3 "$tmp/run.out")" >&2
rec_line="$(grep 'msg=recomputed\|msg="recomputed' "$tmp/batch_layer.log" | tail -1)"
pub_line="$(grep 'rows loaded and published' "$tmp/batch_layer.log" | tail -1)"
kv() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
b_rate="$(kv events_per_s "$rec_line")"; b_rate="${b_rate%.*}"
copy_rate="$(kv rows_per_s "$pub_line")"; copy_rate="${copy_rate%.*}"; pub_ms="$(kv publish_ms "$pub_line")"
rows_n="$(kv view_rows "$pub_line")"
# DuckDB computing the same views over the same events as NDJSON (bench/duckdb/views.mjs).
dd_rate=""
if [ -d bench/duckdb/node_modules ]; then
  dd="$(cd bench/duckdb && node views.mjs "$LAM_VIEWS" "$tmp/events.ndjson" 2>>"$tmp/duckdb.log")"
  dd_rate="$(DD="$dd" python3 -c 'import json, os; d = json.loads(os.environ["DD"]); print(int(d["events"] / d["seconds"]))' 2>/dev/null)"
fi
row "batch recompute, $acked events (events/s)" "${b_rate:-n/a}" "DuckDB over the NDJSON: ${dd_rate:-n/a}" \
    "$(ratio "${b_rate:-0}" "${dd_rate:-0}")" \
    "≥ 3M and ≥ 1.0x: $(verdict "${b_rate:-0} >= 3000000 and ${b_rate:-0} >= ${dd_rate:-1}")"
row "batch publish: COPY ${rows_n:-?} rows, publish" "${copy_rate:-n/a} rows/s, ${pub_ms:-?} ms" "—" "" \
    "≥ 1M rows/s, < 50 ms: $(verdict "${copy_rate:-0} >= 1000000 and ${pub_ms:-999} < 50")"

# 6. Memory of each service after the load above.
for s in ingest:$ingest_pid:30 speed_layer:$speed_pid:50 serving:$serving_pid:50; do
  IFS=: read -r name pid goal <<<"$s"
  row "$name RSS after load (MB)" "$(( $(rss_kb "$pid") / 1024 )) (peak $(( $(hwm_kb "$pid") / 1024 )))" "—" "" \
      "≤ $goal: $(verdict "$(hwm_kb "$pid") <= $goal*1024")"
done

row "batch_layer RSS after the run (MB)" "$(( $(rss_kb "$batch_pid") / 1024 )) (peak $(( $(hwm_kb "$batch_pid") / 1024 )))" "—" "" \
    "bounded by view rows, not events"

elapsed=$((SECONDS - t_start))
{
  echo "# lam benchmark results"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), scale $SCALE, ${elapsed}s. Command: \`make bench\`."
  echo "Every lam figure sits next to a reference measured in the same run; on this noisy 2-core"
  echo "machine the ratios are what to compare. Load generator, services and servers share the cores."
  echo
  echo "| what | lam | reference (same run) | ratio | goal |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$root/bench/results/latest.md"
cp "$root/bench/results/latest.md" "$root/BENCHMARKS.md"
echo "bench: ${elapsed}s; wrote bench/results/latest.md and BENCHMARKS.md"
