#!/usr/bin/env bash
# bench.sh - `make bench`: lam's throughput, latency and memory (issue #10), each figure next to a
# reference measured in the same run on the same machine (ratios are what count on a noisy machine).
# Starts its own throwaway stack on free ports, prints a table, writes bench/results/latest.md and
# BENCHMARKS.md, and cleans up.
#   BENCH_SCALE=0.2      shrinks every workload (a quick look; the table says which scale ran)
#   BENCH_BUDGET_S=1140  the 8M point of the batch curve is skipped (and the table says so) when it
#                        would end the run later than this
#   BENCH_ONLY="a b"     runs only these sections (`bench.sh --sections` lists them; missing inputs are made)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/common.sh
BUILD="${BUILD:-build}"
BIN="$root/$BUILD/bin"
SCALE="${BENCH_SCALE:-1}"
BUDGET="${BENCH_BUDGET_S:-1140}" # seconds; the batch scale curve's last point is dropped to stay under it
SECTIONS="parse ingest speed freshness serving memory batch"
[ "${1:-}" != --sections ] || { echo "$SECTIONS"; exit 0; }
ONLY="${BENCH_ONLY:-$SECTIONS}"; ONLY="${ONLY//,/ }"
for s in $ONLY; do
  [[ " $SECTIONS " == *" $s "* ]] || { echo "bench: unknown section \"$s\" in BENCH_ONLY (sections: $SECTIONS)" >&2; exit 2; }
done
want() { [[ " $ONLY " == *" $1 "* ]]; }
n_of() { python3 -c "print(max(1000, int($1 * $SCALE)))"; }
secs_of() { python3 -c "print(max(3, int($1 * $SCALE)))"; }
for t in bench_parse bench_gen; do
  [ -x "$BUILD/bench/$t" ] || make -s "$BUILD/bench/$t" >/dev/null || { echo "bench: cannot build $BUILD/bench/$t" >&2; exit 1; }
done

tmp="$(mktemp -d /tmp/lam-bench.XXXXXX)"; chmod 755 "$tmp"
lam_throwaway_env "$tmp/stack"
export LAM_DATA_DIR="$tmp/data" LAM_VIEWS="$root/shared/views.json" LAM_LOG_LEVEL=warn
pids=()
cleanup() {
  for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  scripts/stack.sh stop "$tmp/stack" >/dev/null 2>&1
  if [ -n "${BENCH_KEEP:-}" ]; then # for profiling afterwards: the master dataset stays in batch-data
    echo "bench: BENCH_KEEP set: kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rows=() times=()
row() { # what | lam | reference | ratio | goal
  rows+=("| $1 | $2 | $3 | $4 | $5 |")
  printf '%-46s %-34s %-36s %-7s %s\n' "$1" "$2" "$3" "$4" "$5"
}
ratio() { python3 -c "a,b=float('$1' or 0),float('$2' or 0); print(f'{a/b:.2f}x' if b else 'n/a')"; }
verdict() { python3 -c "print('met' if $1 else 'MISSED')"; }
rss_mb() { awk '/^VmRSS/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null; }
metric() { curl -fs "http://$1/metrics" | awk -v m="$2" '$1 == m {printf "%d", $2; exit}'; }
now() { date +%s.%N; }
per_s() { python3 -c "print(int($1 / ($3 - $2)) if $3 > $2 else 0)"; }
loadgen_rate() { sed -n 's/.* rate=\([0-9]*\)\/s.*/\1/p' | tail -1; } # loadgen's summary on stdin -> events/s
sec_name="" sec_t0=$SECONDS t_start=$SECONDS
section() { # progress + time per section on stderr, and in the results file
  [ -z "$sec_name" ] || { times+=("$sec_name $((SECONDS - sec_t0))s"); echo "bench: [$sec_name] $((SECONDS - sec_t0))s (total $((SECONDS - t_start))s)" >&2; }
  sec_name="$1"; sec_t0=$SECONDS
  [ -z "$1" ] || echo "bench: [$1] starting at $(date -u +%H:%M:%S)" >&2
}
start_svc() { # name addr [env...] -> pid in $svc_pid once /healthz answers on addr
  local name="$1" addr="$2"; shift 2
  env "$@" "$BIN/$name" >>"$tmp/$name.log" 2>&1 &
  svc_pid=$!; pids+=("$svc_pid")
  local i; for ((i = 0; i < 300; i++)); do curl -fs -o /dev/null "http://$addr/healthz" && return 0; sleep 0.1; done
  echo "bench: $name did not become healthy" >&2; tail "$tmp/$name.log" >&2; return 1
}
stop_pid() { [ -z "${1:-}" ] || { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }; }
declare -A idle_mb pid_of
# The long-running services: started once, their idle RSS read 1 s after start-up (nothing to do yet).
ensure_svc() { # name addr
  [ -n "${pid_of[$1]:-}" ] && return 0
  start_svc "$1" "$2" || exit 1
  pid_of[$1]=$svc_pid; sleep 1; idle_mb[$1]="$(rss_mb "$svc_pid")"
}
gen() { # topic count [extra bench_gen args] -> bench_gen's summary line
  "$BUILD/bench/bench_gen" --brokers "$B" --topic "$1" --count "$2" "${@:3}" 2>>"$tmp/bench_gen.log" \
    || { echo "bench: bench_gen failed: $(tail -2 "$tmp/bench_gen.log")" >&2; exit 1; }
}

load0="$(cut -d' ' -f1 /proc/loadavg)"
echo "lam benchmarks — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), scale $SCALE, sections: $ONLY"
printf '%-46s %-34s %-36s %-7s %s\n' "what" "lam" "reference (same run)" "ratio" "goal"

# ---- parse: the event parser and view engine, one core, against jansson.
if want parse; then
  section parse
  out="$("$BUILD/bench/bench_parse" "$(n_of 500000)")"
  parse="$(awk '/^lam_event_parse/ {print $2}' <<<"$out")"
  apply="$(awk '/^parse \+ lam_agg/ {print $4}' <<<"$out")"
  jans="$(awk '/^jansson/ {print $3}' <<<"$out")"
  row "event parse, 1 core (M events/s)" "$parse" "jansson json_loadb: $jans" "$(ratio "$parse" "$jans")" "one parser for every service"
  canon="$(awk '/^lam_event_canonical/ {print $2}' <<<"$out")"
  row "canonical form (what ingest writes to Kafka), 1 core (M events/s)" "$canon" "—" "" "(no goal; ingest's per-event cost)"
  row "parse + apply 8 views, 1 core (M events/s)" "$apply" "—" "" "≥ 1.5 per core (3M/s on 2): $(verdict "${apply:-0} >= 1.5")"
fi

section stack
scripts/stack.sh start "$tmp/stack" >/dev/null 2>"$tmp/stack.log" || { cat "$tmp/stack.log" >&2; echo "bench: stack did not start" >&2; exit 1; }
B="$LAM_KAFKA_BROKERS"
backlog=0 # events in topic "events" before the speed section
if want speed; then # the speed layer's idle RSS: nothing to consume yet (its run is measured below)
  gen events 0 >/dev/null
  start_svc speed_layer "$LAM_SPEED_ADDR" LAM_SPEED_GROUP="bench-idle-$$" || exit 1
  sleep 1; idle_mb[speed_layer]="$(rss_mb "$svc_pid")"; stop_pid "$svc_pid"
fi

# ---- ingest: 100-event NDJSON requests (acks=all) versus kcat -P producing the same events;
# then single-event requests with keep-alive (wrk) versus wrk on /healthz. Both with 128 connections:
# Kafka's CPU per event falls with the events in flight (BENCHMARKS.md, ingest notes, session 6).
if want ingest; then
  section ingest
  ensure_svc ingest "$LAM_INGEST_ADDR"
  # CPU seconds of each process during a row (utime + stime from /proc; the clients' own from `time`),
  # on stderr: on a shared machine the rates move with the load, CPU per event much less.
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
  uticks() { awk '{print $14}' "/proc/$1/stat" 2>/dev/null || echo 0; } # user only: Kafka's JVM work
  kpid="$(cat "$LAM_STATE_DIR/pids/kafka.pid" 2>/dev/null)" ipid="${pid_of[ingest]}" tck="$(getconf CLK_TCK)"
  TIMEFORMAT='CPU %U %S'
  cpu_note() { # what scale unit count {name ticks|seconds}... ["; label:" count {name value}...]
    python3 - "$tck" "$(cut -d' ' -f1 /proc/loadavg)" "$@" <<'PY' >&2
import sys
tck, load, what, scale, unit, *rest = sys.argv[1:]
def val(name, v, n):  # /proc ticks for the services, seconds (with a dot) for the clients
    s = float(v or 0) if "." in (v or "") else int(v or 0) / int(tck)
    return f"{name} {s / n * float(scale):.2f} {unit}"
parts, i = [[f"{what}:", max(1, int(rest[0]))]], 1
while i < len(rest):
    if rest[i].startswith(";"):
        parts.append([rest[i][1:].strip(), max(1, int(rest[i + 1]))])
    else:
        parts[-1].append(val(rest[i], rest[i + 1], parts[-1][1]))
    i += 2
print("bench: [ingest] " + "; ".join(p[0] + " " + ", ".join(p[2:]) for p in parts) + f" (load {load})")
PY
  }
  n="$(n_of 2000000)" conns=128
  # kcat needs its topic to exist (auto-creation is off): bench_gen creates it, producing nothing.
  gen bench-kcat 0 >/dev/null
  # Warm-up, untimed: the broker has just started and its JIT compiles the produce path during the
  # first load it sees. Measured cold, the ingest row (always the first) paid for it alone: Kafka's
  # C1 compiler thread burned 0.22 ms per 1k events and a second round on the same broker ran 35 %
  # faster, while the kcat row after it found a warm broker (BENCHMARKS.md, session 10). So both
  # paths run once first: 300k events through ingest, the same events by kcat -P.
  wout="$("$BIN/loadgen" --url "http://$LAM_INGEST_ADDR" --rate 0 --count "$(n_of 300000)" --batch 100 \
           --connections $conns --prebuild --quiet --seed 3 --out "$tmp/warm.ndjson")"
  t0=$(now)
  kcat -P -b "$B" -t bench-kcat -X acks=all -X enable.idempotence=true -l "$tmp/warm.ndjson" 2>>"$tmp/kcat.log"
  echo "bench: [ingest] warm-up (untimed): ingest $(loadgen_rate <<<"$wout") events/s," \
       "kcat -P $(per_s "$(wc -l <"$tmp/warm.ndjson")" "$t0" "$(now)") events/s" >&2
  rm -f "$tmp/warm.ndjson"
  # --prebuild: loadgen builds every body before its clock starts (as kcat reads a ready file).
  i0=$(ticks "$ipid") k0=$(ticks "$kpid") ku0=$(uticks "$kpid")
  out="$("$BIN/loadgen" --url "http://$LAM_INGEST_ADDR" --rate 0 --count "$n" --batch 100 --connections $conns \
          --prebuild --quiet --seed 7 --out "$tmp/events.ndjson")"
  i1=$(ticks "$ipid") k1=$(ticks "$kpid") ku1=$(uticks "$kpid")
  lam_rate="$(loadgen_rate <<<"$out")"
  backlog="$(sed -n 's/.* acknowledged=\([0-9]*\) .*/\1/p' <<<"$out" | tail -1)"
  lines="$(wc -l <"$tmp/events.ndjson")"
  t0=$(now)
  kc_cpu="$( { time kcat -P -b "$B" -t bench-kcat -X acks=all -X enable.idempotence=true -l "$tmp/events.ndjson" \
               2>>"$tmp/kcat.log"; } 2>&1 | awk '$1 == "CPU" {print $2 + $3}')"
  kcat_rate="$(per_s "$lines" "$t0" "$(now)")"
  k2=$(ticks "$kpid") ku2=$(uticks "$kpid")
  lcpu="$(sed -n 's/.* cpu=\([0-9.]*\)s.*/\1/p' <<<"$out" | tail -1)"
  cpu_note "bulk CPU per 1k events" 1e6 ms "${backlog:-0}" ingest $((i1 - i0)) Kafka $((k1 - k0)) loadgen "$lcpu" \
    "; kcat -P:" "$lines" Kafka $((k2 - k1)) kcat "$kc_cpu"
  # Kafka's user time alone: its extra work per event under ingest is the JVM's per request (smaller
  # record batches), not the kernel's (BENCHMARKS.md, ingest notes, session 7).
  cpu_note "Kafka user CPU per 1k events" 1e6 ms "${backlog:-0}" "ingest row" $((ku1 - ku0)) \
    "; " "$lines" "kcat -P row" $((ku2 - ku1))
  rm -f "$tmp/events.ndjson"
  row "ingest, 100-event NDJSON, $backlog events, $conns connections (events/s)" "$lam_rate" "kcat -P same events: $kcat_rate" "$(ratio "$lam_rate" "$kcat_rate")" \
      "≥ 200k and ≥ 0.5x: $(verdict "${lam_rate:-0} >= 200000 and ${lam_rate:-0} >= 0.5 * $kcat_rate")"

  cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"type":"page_view","url":"/p/1","user":"u1","session":"s1","device":"mobile"}'
LUA
  secs="$(secs_of 10)"
  i0=$(ticks "$ipid") k0=$(ticks "$kpid")
  w1="$( { time wrk -t2 -c$conns -d"${secs}s" --latency -s "$tmp/post.lua" "http://$LAM_INGEST_ADDR/v1/events"; } 2>&1)"
  i1=$(ticks "$ipid") k1=$(ticks "$kpid")
  nreq="$(awk '/requests in/ {print $1}' <<<"$w1")" wcpu="$(awk '$1 == "CPU" {print $2 + $3}' <<<"$w1")"
  cpu_note "single CPU per request" 1e6 us "${nreq:-0}" ingest $((i1 - i0)) Kafka $((k1 - k0)) wrk "$wcpu"
  w2="$(wrk -t2 -c$conns -d"${secs}s" --latency "http://$LAM_INGEST_ADDR/healthz" 2>&1)"
  rps1="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w1")"; p99a="$(awk '$1=="99%" {print $2}' <<<"$w1")"
  rps2="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w2")"; p99h="$(awk '$1=="99%" {print $2}' <<<"$w2")"
  row "ingest, single-event requests, $conns connections (req/s, p99)" "$rps1, p99 $p99a" "wrk on ingest /healthz: $rps2, p99 $p99h" "$(ratio "$rps1" "$rps2")" \
      "≥ 30k: $(verdict "${rps1:-0} >= 30000")"
fi

# ---- speed: catching up a 2M backlog with 1 and 2 instances, versus kcat -C reading it.
# Real-time views and stored offsets live in Redis: FLUSHALL before each measurement, so each
# one starts from offset 0. The 1-instance run's process stays up for the later sections.
if want speed; then
  section speed
  if [ "$backlog" -lt "$(n_of 2000000)" ]; then # no ingest section: make the backlog directly
    out="$(gen events $(($(n_of 2000000) - backlog)) --live --seed 11)"
    backlog=$((backlog + $(sed -n 's/^produced=\([0-9]*\).*/\1/p' <<<"$out")))
  fi
  # What the speed layer must consume: the end offsets of topic "events" (no markers in it).
  backlog="$(kcat -Q -b "$B" $(for p in 0 1 2 3 4 5; do echo "-t events:$p:-1"; done) 2>/dev/null | awk '{s += $4} END {print s + 0}')"
  redis_port="$(lam_port_of "$LAM_REDIS_URL")"
  catchup() { # instances -> events/s in $rate, peak RSS (MB) of the first in $peak; leaves pids in $spids
    local k i total addrs=() t0 t1; spids=()
    redis-cli -p "$redis_port" FLUSHALL >/dev/null
    t0=$(now)
    for ((i = 0; i < $1; i++)); do
      addrs+=("127.0.0.1:$(lam_free_port)")
      start_svc speed_layer "${addrs[i]}" LAM_SPEED_ADDR="${addrs[i]}" LAM_SPEED_GROUP="bench-$1-$$" || exit 1
      spids+=("$svc_pid")
    done
    local deadline=$((SECONDS + 900))
    while :; do
      total=0; for k in "${addrs[@]}"; do v="$(metric "$k" lam_speed_events_total)"; total=$((total + ${v:-0})); done
      [ "$total" -ge "$backlog" ] && break
      [ $SECONDS -lt $deadline ] || { echo "bench: speed layer did not catch up in 900 s (at $total)" >&2; break; }
      sleep 0.1
    done
    t1=$(now)
    rate="$(per_s "$total" "$t0" "$t1")"; peak=$(($(hwm_kb "${spids[0]}") / 1024))
    speed_addr="${addrs[0]}"
  }
  catchup 2; rate2=$rate
  for p in "${spids[@]}"; do stop_pid "$p"; done
  catchup 1; rate1=$rate
  pid_of[speed_layer]="${spids[0]}"; LAM_SPEED_ADDR="$speed_addr"
  t0=$(now)
  kc_n="$(kcat -C -b "$B" -t events -o beginning -e -q 2>/dev/null | wc -l)"
  kc_rate="$(per_s "$kc_n" "$t0" "$(now)")"
  row "speed catch-up, $backlog backlog, 1 instance (events/s)" "$rate1" "kcat -C same backlog: $kc_rate" "$(ratio "$rate1" "$kc_rate")" \
      "≥ 300k and ≥ 0.5x: $(verdict "$rate1 >= 300000 and $rate1 >= 0.5 * $kc_rate")"
  row "speed catch-up, 2 instances (events/s)" "$rate2" "1 instance: $rate1" "$(ratio "$rate2" "$rate1")" \
      "scale-out (2 cores shared with Kafka + Redis)"
fi

# ---- freshness: probe events acknowledged by ingest -> visible via serving, under 10k events/s.
if want freshness; then
  section freshness
  ensure_svc ingest "$LAM_INGEST_ADDR"
  [ -n "${pid_of[speed_layer]:-}" ] || ensure_svc speed_layer "$LAM_SPEED_ADDR"
  ensure_svc serving "$LAM_SERVING_ADDR"
  nocache="127.0.0.1:$(lam_free_port)"
  start_svc serving "$nocache" LAM_SERVING_ADDR="$nocache" LAM_SERVING_RESULT_MS=0 || exit 1
  nocache_pid=$svc_pid
  secs="$(secs_of 30)"
  "$BIN/loadgen" --url "http://$LAM_INGEST_ADDR" --rate 10000 --duration $((secs + 6)) --batch 100 --connections 4 \
    --quiet --seed 13 >"$tmp/fresh-load.out" 2>&1 &
  lg=$!; pids+=("$lg")
  sleep 3
  fr="$(python3 bench/freshness.py "$LAM_INGEST_ADDR" "$LAM_SERVING_ADDR" "$nocache" "$secs" 10)"
  wait "$lg"
  stop_pid "$nocache_pid"
  bg="$(loadgen_rate <"$tmp/fresh-load.out")"
  read -r probes lost p50 p99 np50 np99 < <(FR="$fr" python3 -c '
import json, os
d = json.loads(os.environ["FR"]); c, n = d["cached"], d["nocache"]
f = lambda v: "%.0f" % v if v is not None else "9999999"
print(d["probes"], d["errors"] + d["lost_cached"], f(c["p50_ms"]), f(c["p99_ms"]), f(n["p50_ms"]), f(n["p99_ms"]))')
  row "freshness at 10k events/s: ack -> visible (ms)" "p50 $p50 / p99 $p99 ($probes probes, $lost lost)" \
      "background load: ${bg:-?} events/s" "" \
      "p50 ≤ 100, p99 ≤ 500: $(verdict "$lost == 0 and $p50 <= 100 and $p99 <= 500")"
  row "freshness, serving answer cache off (ms)" "p50 $np50 / p99 $np99" "same probes" "" \
      "(pipeline alone; the row above is what clients see)"
fi

# ---- serving: a typical merged query (24 hourly buckets, top 10) versus /healthz on the same server.
if want serving; then
  section serving
  ensure_svc serving "$LAM_SERVING_ADDR"
  secs="$(secs_of 10)"
  q="/v1/views/page_views_by_url?granularity=hour&top=10"
  curl -fs -o /dev/null "http://$LAM_SERVING_ADDR$q" || echo "bench: the typical query failed" >&2
  w1="$(wrk -t2 -c32 -d"${secs}s" --latency "http://$LAM_SERVING_ADDR$q" 2>&1)"
  w2="$(wrk -t2 -c32 -d"${secs}s" --latency "http://$LAM_SERVING_ADDR/healthz" 2>&1)"
  rps1="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w1")"; p50="$(awk '$1=="50%" {print $2}' <<<"$w1")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$w1")"; rps2="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w2")"
  p99h="$(awk '$1=="99%" {print $2}' <<<"$w2")"
  p99ms="$(python3 -c "v='$p99'; print(float(v[:-2]) if v.endswith('ms') else float(v[:-2])/1000 if v.endswith('us') else float(v[:-1])*1000 if v.endswith('s') else 1e9)")"
  row "serving, merged query (req/s, p50/p99)" "$rps1, $p50 / $p99" "wrk on serving /healthz: $rps2, p99 $p99h" "$(ratio "$rps1" "$rps2")" \
      "≥ 10k, p99 ≤ 10 ms, ≥ 0.5x: $(verdict "${rps1:-0} >= 10000 and $p99ms <= 10 and ${rps1:-0} >= 0.5 * ${rps2:-1}")"
  # The same query with the answer cache off: every request merges PostgreSQL and Redis data.
  nocache="127.0.0.1:$(lam_free_port)"
  start_svc serving "$nocache" LAM_SERVING_ADDR="$nocache" LAM_SERVING_RESULT_MS=0 || exit 1
  w3="$(wrk -t2 -c32 -d"${secs}s" --latency "http://$nocache$q" 2>&1)"
  stop_pid "$svc_pid"
  rps3="$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$w3")"; p99c="$(awk '$1=="99%" {print $2}' <<<"$w3")"
  row "serving, same query, answer cache off" "$rps3, p99 $p99c" "wrk on serving /healthz: $rps2" "$(ratio "$rps3" "$rps2")" \
      "(every request merges PostgreSQL + Redis)"
fi

# ---- memory: RSS of each service idle (1 s after start-up) and now, after the sections above.
if want memory; then
  section memory
  ensure_svc ingest "$LAM_INGEST_ADDR"; ensure_svc speed_layer "$LAM_SPEED_ADDR"; ensure_svc serving "$LAM_SERVING_ADDR"
  for s in ingest:30 speed_layer:50 serving:50; do
    IFS=: read -r name goal <<<"$s"
    pid="${pid_of[$name]}"; idle="${idle_mb[$name]:-?}"
    row "$name RSS, idle / after load (MB)" "${idle} / $(rss_mb "$pid") (peak $(($(hwm_kb "$pid") / 1024)))" "—" "" \
        "≤ $goal: $(verdict "$(hwm_kb "$pid") <= $goal*1024")"
  done
fi

# ---- batch: recompute over the master dataset at 1, 2, 4, 5 and 8M events (one growing topic:
# each run recomputes everything archived so far), the 5M point against DuckDB and PostgreSQL
# over the same events; publish measured at the 1M point with a view of ~580k rows.
if want batch; then
  section batch
  for s in ingest speed_layer serving; do stop_pid "${pid_of[$s]:-}"; pid_of[$s]=""; done
  export LAM_KAFKA_TOPIC=bench-batch LAM_DATA_DIR="$tmp/batch-data"
  batch_start() { # views file
    LAM_VIEWS="$1" start_svc batch_layer "$LAM_BATCH_ADDR" LAM_BATCH_SCHEDULE=off LAM_LOG_LEVEL=info || exit 1
    batch_pid=$svc_pid
  }
  batch_run() { # -> the "recomputed" and "rows loaded and published" log lines of the run in $rec, $pub
    "$BIN/batch_layer" run --wait >"$tmp/run.out" 2>&1 || { echo "bench: batch run failed: $(tail -3 "$tmp/run.out")" >&2; exit 1; }
    local k; k="$(sed -n 's/^run \([0-9]*\) requested.*/\1/p' "$tmp/run.out")"; run_k=$k
    rec="$(grep 'msg=\(\"\)\?recomputed' "$tmp/batch_layer.log" | grep " run=$k " | tail -1)"
    pub="$(grep 'rows loaded and published' "$tmp/batch_layer.log" | grep " run=$k " | tail -1)"
  }
  kv() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
  gen bench-batch 0 >/dev/null # the topic, before the archiver subscribes
  batch_start "$LAM_VIEWS"
  produced=0 curve=() curve_runs=() dd_rate="" pg_rate="" ref_n=$(n_of 5000000)
  for m in 1 2 4 5 8; do
    target="$(n_of $((m * 1000000)))"
    a0="$(metric "$LAM_BATCH_ADDR" lam_batch_archived_records_total)" need=$((target - produced))
    if [ "$m" = 8 ]; then # the last point is the one a slow machine can drop: the run must stay < 20 min
      lr="${rate%.*}"; est="$(python3 -c "print(int($need / max(1, ${gen_rate:-1}) + $target / max(1, ${lr:-1}) + 40))")"
      if [ $((SECONDS - t_start + est)) -gt "$BUDGET" ]; then
        echo "bench: skipping the $target point: about ${est}s left of it, over BENCH_BUDGET_S=$BUDGET" >&2
        skipped="$target (about ${est}s more, over the ${BUDGET}s budget)"
        need=0
      fi
    fi
    extra=(); [ "$produced" -lt "$ref_n" ] && extra=(--ndjson "$tmp/batch.ndjson")
    pgl=""
    if [ "$m" = 8 ] && [ -s "$tmp/batch.csv" ]; then # PostgreSQL's COPY (not timed) while the last 3M are made
      python3 bench/pg_views.py load "$LAM_PG_URL" "$LAM_VIEWS" "$tmp/batch.csv" >"$tmp/pg-load.out" 2>&1 &
      pgl=$!
    fi
    out="$(gen bench-batch "$need" --days 1 --seed $m "${extra[@]}")"
    [ "$need" = 0 ] || gen_rate="$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<<"$out")"
    produced=$target
    echo "bench: $target events in topic bench-batch at $((SECONDS - t_start))s" >&2
    if [ -n "$pgl" ]; then # the GROUP BY reference, alone on the machine
      if wait "$pgl" && pg="$(python3 bench/pg_views.py query "$LAM_PG_URL" "$LAM_VIEWS" 2>>"$tmp/pg-load.out")"; then
        pg_rate="$(PG="$pg" python3 -c 'import json, os; d = json.loads(os.environ["PG"]); print(int(d["events"] / d["seconds"]))')"
      else
        echo "bench: PostgreSQL reference failed: $(tail -2 "$tmp/pg-load.out")" >&2
      fi
      rm -f "$tmp/batch.csv"
    fi
    [ -z "${skipped:-}" ] || break
    deadline=$((SECONDS + 600))
    until [ "$(metric "$LAM_BATCH_ADDR" lam_batch_archived_records_total)" -ge $((a0 + need)) ] 2>/dev/null; do
      [ $SECONDS -lt $deadline ] || { echo "bench: archiver did not catch up" >&2; break; }
      sleep 0.5
    done
    batch_run
    recs="$(kv records "$rec")" scan="$(kv scan_ms "$rec")" rate="$(kv events_per_s "$rec")"
    curve+=("$target:${recs:-?}:${scan:-?}:${rate%.*}"); curve_runs+=("$run_k")
    echo "bench: batch run over ${recs:-?} events: ${scan:-?} ms, ${rate%.*} events/s" >&2
    if [ "$m" = 1 ]; then # publish: the same events, a view of one row per user and hour
      stop_pid "$batch_pid"
      batch_start "$root/bench/views_publish.json"
      batch_run
      copy_rate="$(kv rows_per_s "$pub")"; pub_ms="$(kv publish_ms "$pub")"; rows_n="$(kv view_rows "$pub")"
      row "batch publish: COPY ${rows_n:-?} rows, publish" "${copy_rate%.*} rows/s, ${pub_ms:-?} ms" "—" "" \
          "≥ 1M rows/s, < 50 ms: $(verdict "${copy_rate:-0} >= 1000000 and ${pub_ms:-999} < 50")"
      stop_pid "$batch_pid"
      batch_start "$LAM_VIEWS"
    fi
    if [ "$m" = 5 ]; then # the references over the same events, each alone on the machine
      b5_rate="${rate%.*}" b5_n="$recs"
      dd="$(cd bench/duckdb && node views.mjs "$LAM_VIEWS" "$tmp/batch.ndjson" "$tmp/batch.csv" 2>>"$tmp/duckdb.log")"
      dd_rate="$(DD="$dd" python3 -c 'import json, os; d = json.loads(os.environ["DD"]); print(int(d["events"] / d["seconds"]))' 2>/dev/null)"
      [ -n "$dd_rate" ] || { echo "bench: DuckDB reference failed: $(tail -3 "$tmp/duckdb.log")" >&2; dd_rate=0; }
      rm -f "$tmp/batch.ndjson"
    fi
  done
  stop_pid "$batch_pid"
  row "batch recompute, ${b5_n:-?} events (events/s)" "${b5_rate:-n/a}" "DuckDB over the NDJSON: ${dd_rate:-n/a}; PostgreSQL GROUP BY: ${pg_rate:-n/a}" \
      "$(ratio "${b5_rate:-0}" "${dd_rate:-0}")" \
      "≥ 3M and ≥ 1.0x DuckDB: $(verdict "${b5_rate:-0} >= 3000000 and ${b5_rate:-0} >= ${dd_rate:-1}")"
  # Linear means a constant time per event: compare every point's ns/event with the 1M point's.
  first_ns=""
  for c in "${curve[@]}"; do
    IFS=: read -r target recs scan rate <<<"$c"
    ns="$(python3 -c "print(round($scan * 1e6 / $recs))" 2>/dev/null)"
    first_ns="${first_ns:-$ns}"
    row "batch scale curve: $recs events" "$(python3 -c "print(f'{$scan/1000:.2f} s')" 2>/dev/null), $rate events/s" \
        "$ns ns/event" "$(ratio "$ns" "$first_ns")" \
        "linear (ns/event ≤ 1.5x the first point's): $(verdict "${ns:-0} > 0 and ${ns:-0} <= 1.5 * ${first_ns:-0}")"
  done
  [ -z "${skipped:-}" ] || row "batch scale curve: $skipped" "skipped" "—" "" "linear: MISSED (not measured)"
  # Memory: the recompute's peak RSS up to the first and the last cut of the curve, each in its own
  # read-only `batch_layer recompute`. The exact id set grows with a partition's records up to
  # LAM_BATCH_DEDUP_IDS per thread (2M by default, then more passes); with a cap below both points'
  # partitions and views whose groups do not grow with the data (bench/views_memory.json: the
  # default views without url and item), what is left must not grow with the number of events.
  rss_of() { # run [env...] -> "peak_mb:view_rows"
    local k=$1; shift
    env "$@" "$BIN/batch_layer" recompute --run "$k" >"$tmp/recompute.out" 2>&1 ||
      { echo "bench: batch_layer recompute failed: $(tail -2 "$tmp/recompute.out")" >&2; echo "0:0"; return; }
    echo "$(sed -n 's/.*peak_rss_mb=\([0-9]*\).*/\1/p' "$tmp/recompute.out"):$(sed -n 's/.*, \([0-9]*\) view rows.*/\1/p' "$tmp/recompute.out")"
  }
  if [ "${#curve_runs[@]}" -ge 2 ]; then
    r1="${curve_runs[0]}" rn="${curve_runs[-1]}" n1="${curve[0]%%:*}" nn="${curve[-1]%%:*}"
    cap=$((n1 / 12)) # half of a partition's records at the first point (6 partitions)
    IFS=: read -r d1 v1 <<<"$(rss_of "$r1")"; IFS=: read -r dn vn <<<"$(rss_of "$rn")"
    row "batch_layer RSS, recompute up to $n1 / $nn events (MB)" "$d1 / $dn" "view rows: $v1 / $vn" "" \
        "(default views and id-set cap: grows with view rows and, up to the cap, ids)"
    mem=(LAM_BATCH_DEDUP_IDS=$cap LAM_VIEWS="$root/bench/views_memory.json")
    IFS=: read -r c1 w1 <<<"$(rss_of "$r1" "${mem[@]}")"; IFS=: read -r cn wn <<<"$(rss_of "$rn" "${mem[@]}")"
    row "batch_layer RSS, same cuts, views with bounded groups, LAM_BATCH_DEDUP_IDS=$cap (MB)" "$c1 / $cn" \
        "view rows: $w1 / $wn" "$(ratio "${cn:-0}" "${c1:-0}")" \
        "independent of events (≤ 1.25x): $(verdict "${c1:-0} > 0 and ${cn:-0} > 0 and ${cn:-0} <= 1.25 * ${c1:-0}")"
  fi
fi
section ""

elapsed=$((SECONDS - t_start))
{
  echo "# lam benchmark results"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), load average $load0 at the start and $(cut -d' ' -f1 /proc/loadavg) at the end, scale $SCALE, ${elapsed}s. Command: \`make bench\`$([ "$ONLY" = "$SECTIONS" ] || echo " (BENCH_ONLY=\"$ONLY\")")."
  echo "Every lam figure sits next to a reference measured in the same run; on this noisy 2-core"
  echo "machine the ratios are what to compare. Load generator, services and servers share the cores."
  echo
  echo "| what | lam | reference (same run) | ratio | goal |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Time per section: ${times[*]}."
} >"$root/bench/results/latest.md"
# A full run at scale 1 also refreshes the table in BENCHMARKS.md (between its bench: markers;
# the notes around it are kept).
if [ "$ONLY" = "$SECTIONS" ] && [ "$SCALE" = 1 ] && grep -q '^<!-- bench:begin -->$' BENCHMARKS.md; then
  python3 - "$root/BENCHMARKS.md" "$root/bench/results/latest.md" <<'PY'
import sys
doc, new = open(sys.argv[1]).read(), open(sys.argv[2]).read()
head, rest = doc.split("<!-- bench:begin -->\n", 1)
tail = rest.split("<!-- bench:end -->", 1)[1]
body = new.split("\n", 2)[2]  # without the "# lam benchmark results" title
open(sys.argv[1], "w").write(head + "<!-- bench:begin -->\n" + body + "<!-- bench:end -->" + tail)
PY
  echo "bench: ${elapsed}s; wrote bench/results/latest.md and the table in BENCHMARKS.md"
else
  echo "bench: ${elapsed}s; wrote bench/results/latest.md"
fi
