#!/usr/bin/env bash
# supervise.sh NAME PIDFILE CMD... - keep a service running like compose's restart: unless-stopped.
# A service that exits or is killed is restarted after 1 s (logged); exit code 2 (bad configuration)
# is not retried. SIGTERM/SIGINT stop the service and then the supervisor.
name="$1"; pidfile="$2"; shift 2
child=""; stop=0
log() { printf 'ts=%s level=%s service=supervisor %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$1" "$2" >&2; }
trap 'stop=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
restarts=0
while [ "$stop" = 0 ]; do
  "$@" &
  child=$!
  echo "$child" >"$pidfile"
  wait "$child"; rc=$?
  if [ "$stop" = 1 ]; then wait "$child" 2>/dev/null; break; fi
  if [ "$rc" = 2 ]; then
    log error "msg=\"$name has a configuration error, not restarting\" exit_code=2"
    rm -f "$pidfile"; exit 2
  fi
  restarts=$((restarts + 1))
  log warn "msg=\"$name exited, restarting in 1 s\" exit_code=$rc restarts=$restarts"
  sleep 1
done
rm -f "$pidfile"
