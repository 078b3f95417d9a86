#!/usr/bin/env bash
# lam.sh up|down|run|status - the local stack: Kafka, Redis, PostgreSQL and the four services.
# State lives in LAM_STATE_DIR (default .lam/), logs in .lam/logs/. Every LAM_* variable in the
# environment reaches the services.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/common.sh

STATE="${LAM_STATE_DIR:-$root/.lam}"
BIN="${LAM_BIN_DIR:-$root/build/bin}"
mkdir -p "$STATE/pids" "$STATE/logs"
STATE="$(cd "$STATE" && pwd)"
export LAM_DATA_DIR="${LAM_DATA_DIR:-$STATE/data}"
export LAM_VIEWS="${LAM_VIEWS:-$root/shared/views.json}"
export LAM_DASHBOARDS_DIR="${LAM_DASHBOARDS_DIR:-$root/dashboards}"
SERVICES=(ingest speed_layer batch_layer serving)

health_url() {
  case "$1" in
    ingest) echo "http://$LAM_INGEST_ADDR/healthz" ;;
    speed_layer) echo "http://$LAM_SPEED_ADDR/healthz" ;;
    batch_layer) echo "http://$LAM_BATCH_ADDR/healthz" ;;
    serving) echo "http://$LAM_SERVING_ADDR/healthz" ;;
  esac
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

running() {
  local s
  for s in "${SERVICES[@]}"; do alive "$STATE/pids/$s.sup.pid" && return 0; done
  return 1
}

up() {
  if running; then
    lam_log "lam is already running (state in $STATE); 'make down' stops it"
    return 0
  fi
  for s in "${SERVICES[@]}"; do [ -x "$BIN/$s" ] || lam_die "$BIN/$s is missing: run make"; done
  scripts/stack.sh start "$STATE"
  local s
  for s in "${SERVICES[@]}"; do
    nohup scripts/supervise.sh "$s" "$STATE/pids/$s.pid" "$BIN/$s" >>"$STATE/logs/$s.log" 2>&1 </dev/null &
    echo $! >"$STATE/pids/$s.sup.pid"
  done
  local deadline=$((SECONDS + ${LAM_UP_TIMEOUT:-60}))
  for s in "${SERVICES[@]}"; do
    until curl -fs -o /dev/null --max-time 2 "$(health_url "$s")"; do
      if ! alive "$STATE/pids/$s.sup.pid" || [ $SECONDS -ge $deadline ]; then
        tail -n 20 "$STATE/logs/$s.log" >&2 || true
        lam_die "$s did not become healthy (log: $STATE/logs/$s.log)"
      fi
      sleep 0.2
    done
  done
  cat <<MSG
lam is up (state in $STATE, logs in $STATE/logs)
  dashboard  http://$LAM_SERVING_ADDR/
  query API  http://$LAM_SERVING_ADDR/v1/views
  ingest     http://$LAM_INGEST_ADDR/v1/events
  kafka $LAM_KAFKA_BROKERS   redis $LAM_REDIS_URL   postgresql $LAM_PG_URL
MSG
}

down() {
  local s pid i
  for s in "${SERVICES[@]}"; do
    if alive "$STATE/pids/$s.sup.pid"; then kill -TERM "$(cat "$STATE/pids/$s.sup.pid")" 2>/dev/null || true; fi
  done
  for s in "${SERVICES[@]}"; do
    for f in "$STATE/pids/$s.sup.pid" "$STATE/pids/$s.pid"; do
      [ -f "$f" ] || continue
      pid="$(cat "$f")"
      for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && { lam_log "$s did not stop in 30 s, killing"; kill -KILL "$pid" 2>/dev/null || true; }
      rm -f "$f"
    done
  done
  scripts/stack.sh stop "$STATE"
  lam_log "lam is down"
}

run() {
  up
  local demo_pid="" tail_pid=""
  # Ctrl-C: stop everything even if the terminal's pipes are gone (a second Ctrl-C does not cut it
  # short). Background jobs of a script ignore SIGINT, so the demo traffic and the log follower are
  # stopped here by pid.
  trap 'trap "" INT TERM PIPE; trap - EXIT; kill $demo_pid $tail_pid 2>/dev/null; echo >&2; down; exit 0' INT TERM EXIT
  if [ -x "$BIN/loadgen" ]; then
    lam_log "sending demo traffic (loadgen --rate ${LAM_DEMO_RATE:-200}/s); Ctrl-C stops everything"
    "$BIN/loadgen" --url "http://$LAM_INGEST_ADDR" --rate "${LAM_DEMO_RATE:-200}" --backfill-days 2 \
      --duration "${LAM_DEMO_SECONDS:-86400}" --progress >>"$STATE/logs/loadgen.log" 2>&1 &
    demo_pid=$!
  fi
  echo "open http://$LAM_SERVING_ADDR/ ; following the logs (Ctrl-C stops everything)"
  tail -n 0 -F "$STATE"/logs/{ingest,speed_layer,batch_layer,serving,loadgen}.log 2>/dev/null &
  tail_pid=$!
  wait "$tail_pid" || true
}

status() {
  scripts/stack.sh status "$STATE"
  local s
  for s in "${SERVICES[@]}"; do
    if alive "$STATE/pids/$s.pid"; then echo "$s running pid $(cat "$STATE/pids/$s.pid")"; else echo "$s stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  run) run ;;
  status) status ;;
  *) echo "usage: lam.sh up|down|run|status" >&2; exit 2 ;;
esac
