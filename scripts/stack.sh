#!/usr/bin/env bash
# stack.sh - start/stop lam's backing servers (Kafka KRaft, Redis, PostgreSQL) under a state directory.
#   stack.sh start STATE_DIR [kafka|redis|pg ...]   start (all by default) and wait until each answers
#   stack.sh stop  STATE_DIR [kafka|redis|pg ...]   stop by recorded pid
#   stack.sh status STATE_DIR
# Ports and users come from LAM_KAFKA_BROKERS, LAM_REDIS_URL and LAM_PG_URL; everything binds 127.0.0.1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/common.sh"

cmd="${1:?usage: stack.sh start|stop|status STATE_DIR [parts]}"
STATE="${2:?state directory}"
shift 2
parts=("$@"); [ ${#parts[@]} -gt 0 ] || parts=(kafka redis pg)
mkdir -p "$STATE"/{pids,logs}
STATE="$(cd "$STATE" && pwd)"
LOGS="$STATE/logs"

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

as_pg_user() { # initdb and postgres refuse to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_kafka() {
  local port host cport dir pidf
  port="$(lam_port_of "$LAM_KAFKA_BROKERS")"; host="$(lam_host_of "$LAM_KAFKA_BROKERS")"
  cport="${LAM_KAFKA_CONTROLLER_PORT:-$((port + 1))}"
  dir="$STATE/kafka"; pidf="$STATE/pids/kafka.pid"
  if pid_alive "$pidf"; then lam_log "kafka already running (pid $(cat "$pidf"))"; return 0; fi
  [ -f "$LAM_KAFKA_LIBS/kafka_2.13-$LAM_KAFKA_VERSION.jar" ] || lam_die "kafka jars missing in $LAM_KAFKA_LIBS: run make deps"
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$host:$cport
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$cport
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=${LAM_KAFKA_PARTITIONS:-6}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.flush.interval.ms=1000
PROPS
  cat >"$dir/log4j2.yaml" <<'YAML'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka
        level: WARN
      - name: org.apache.kafka
        level: WARN
      - name: state.change.logger
        level: WARN
YAML
  local java_opts=(-Xms${LAM_KAFKA_HEAP:-384m} -Xmx${LAM_KAFKA_HEAP:-384m} -XX:+UseSerialGC
                   -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
                   -Dlog4j2.configurationFile="$dir/log4j2.yaml" -cp "$LAM_KAFKA_LIBS/*")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java -cp "$LAM_KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    java "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
      >>"$LOGS/kafka.log" 2>&1 || lam_die "kafka storage format failed, see $LOGS/kafka.log"
  fi
  nohup java "${java_opts[@]}" kafka.Kafka "$dir/server.properties" >>"$LOGS/kafka.log" 2>&1 &
  echo $! >"$pidf"
  local i
  for ((i = 0; i < 600; i++)); do
    if kcat -b "$host:$port" -L -m 1 >/dev/null 2>&1; then lam_log "kafka ready at $host:$port (KRaft)"; return 0; fi
    pid_alive "$pidf" || { tail -20 "$LOGS/kafka.log" >&2; lam_die "kafka exited during start-up, see $LOGS/kafka.log"; }
    sleep 0.1
  done
  lam_die "kafka did not answer metadata requests within 60 s, see $LOGS/kafka.log"
}

start_redis() {
  local port host pidf
  port="$(lam_port_of "$LAM_REDIS_URL")"; host="$(lam_host_of "$LAM_REDIS_URL")"
  pidf="$STATE/pids/redis.pid"
  if pid_alive "$pidf"; then lam_log "redis already running (pid $(cat "$pidf"))"; return 0; fi
  mkdir -p "$STATE/redis"
  nohup redis-server --bind "$host" --port "$port" --dir "$STATE/redis" --daemonize no \
    --appendonly yes --appendfsync everysec --save '' --protected-mode no \
    --logfile "$LOGS/redis.log" >>"$LOGS/redis.log" 2>&1 &
  echo $! >"$pidf"
  local i
  for ((i = 0; i < 300; i++)); do
    if [ "$(redis-cli -h "$host" -p "$port" ping 2>/dev/null)" = PONG ]; then lam_log "redis ready at $host:$port (AOF everysec)"; return 0; fi
    pid_alive "$pidf" || lam_die "redis exited during start-up, see $LOGS/redis.log"
    sleep 0.1
  done
  lam_die "redis did not answer within 30 s"
}

pg_bin() { local d; d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"; echo "${d:-/usr/bin}"; }

start_pg() {
  local port host user db dir bin pidf
  port="$(lam_port_of "$LAM_PG_URL")"; host="$(lam_host_of "$LAM_PG_URL")"
  user="$(lam_pg_user_of "$LAM_PG_URL")"; db="$(lam_pg_db_of "$LAM_PG_URL")"
  dir="$STATE/pg"; bin="$(pg_bin)"; pidf="$STATE/pids/pg.pid"
  if pid_alive "$pidf"; then lam_log "postgresql already running (pid $(cat "$pidf"))"; return 0; fi
  mkdir -p "$dir" "$STATE/pgsock"
  touch "$LOGS/postgres.log"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir" "$STATE/pgsock" "$LOGS/postgres.log"; chmod 700 "$dir"
    chmod o+x "$STATE" "$(dirname "$STATE")" 2>/dev/null || true
  fi
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_pg_user "$bin/initdb" -D "$dir" -U "$user" --auth=trust -E UTF8 --locale=C.UTF-8 \
      >>"$LOGS/postgres.log" 2>&1 || lam_die "initdb failed, see $LOGS/postgres.log"
  fi
  # wal_level=minimal: the batch layer's COPY into a run table created in the same transaction writes
  # no WAL (no replicas or WAL archive here). LAM_PG_WAL_LEVEL=replica restores the default.
  local pg_wal="-c wal_level=${LAM_PG_WAL_LEVEL:-minimal}"
  [ "${LAM_PG_WAL_LEVEL:-minimal}" != minimal ] || pg_wal="$pg_wal -c max_wal_senders=0"
  # shared_buffers=32MB: a COPY's bulk-write ring is capped at 1/8 of it (16 MB at the default
  # 128MB), and the ring's dirty pages are written only at the load's COMMIT, before its fsync: with
  # a 4 MB ring the rest is written (and flushed, backend_flush_after) while COPY runs.
  pg_wal="$pg_wal -c shared_buffers=${LAM_PG_SHARED_BUFFERS:-32MB}"
  as_pg_user "$bin/pg_ctl" -D "$dir" -l "$LOGS/postgres.log" -w -t 60 \
    -o "-c listen_addresses=$host -p $port -k $STATE/pgsock -c fsync=${LAM_PG_FSYNC:-on} -c max_connections=100 $pg_wal" \
    start >/dev/null || lam_die "postgresql did not start, see $LOGS/postgres.log"
  head -1 "$dir/postmaster.pid" >"$pidf"
  if ! psql -h "$host" -p "$port" -U "$user" -d postgres -tAc "select 1 from pg_database where datname='$db'" | grep -q 1; then
    createdb -h "$host" -p "$port" -U "$user" "$db"
  fi
  lam_log "postgresql ready at $host:$port (database $db)"
}

stop_pid() { # name pidfile
  local pidf="$2" pid i
  [ -f "$pidf" ] || return 0
  pid="$(cat "$pidf")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then lam_log "$1 did not stop in 15 s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
    lam_log "$1 stopped"
  fi
  rm -f "$pidf"
}

stop_pg() {
  local dir="$STATE/pg"
  if [ -f "$dir/postmaster.pid" ]; then
    as_pg_user "$(pg_bin)/pg_ctl" -D "$dir" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  fi
  stop_pid postgresql "$STATE/pids/pg.pid"
}

case "$cmd" in
  start) for p in "${parts[@]}"; do "start_$p"; done ;;
  stop) for ((i = ${#parts[@]} - 1; i >= 0; i--)); do
          case "${parts[$i]}" in pg) stop_pg ;; *) stop_pid "${parts[$i]}" "$STATE/pids/${parts[$i]}.pid" ;; esac
        done ;;
  status) for p in kafka redis pg; do
            if pid_alive "$STATE/pids/$p.pid"; then echo "$p running pid $(cat "$STATE/pids/$p.pid")"; else echo "$p stopped"; fi
          done ;;
  *) lam_die "unknown command $cmd" ;;
esac
