# common.sh - settings shared by lam's scripts (sourced, not run).
LAM_KAFKA_VERSION="${LAM_KAFKA_VERSION:-4.1.1}"
LAM_CACHE="${LAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lam}"
LAM_KAFKA_LIBS="$LAM_CACHE/kafka-$LAM_KAFKA_VERSION/libs"
LAM_VENV="$LAM_CACHE/venv"

# Defaults from ../shared/DESIGN.md; every LAM_* in the environment wins.
: "${LAM_KAFKA_BROKERS:=127.0.0.1:9092}"
: "${LAM_KAFKA_TOPIC:=events}"
: "${LAM_REDIS_URL:=redis://127.0.0.1:6379}"
: "${LAM_PG_URL:=postgresql://lam@127.0.0.1:5432/lam}"
: "${LAM_INGEST_ADDR:=127.0.0.1:8081}"
: "${LAM_SERVING_ADDR:=127.0.0.1:8080}"
: "${LAM_SPEED_ADDR:=127.0.0.1:8082}"
: "${LAM_BATCH_ADDR:=127.0.0.1:8083}"
export LAM_KAFKA_BROKERS LAM_KAFKA_TOPIC LAM_REDIS_URL LAM_PG_URL LAM_INGEST_ADDR LAM_SERVING_ADDR \
       LAM_SPEED_ADDR LAM_BATCH_ADDR

lam_log() { printf '%s lam: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
lam_die() { lam_log "error: $*"; exit 1; }

# host and port out of "host:port" or a URL such as redis://h:p/0 or postgresql://u@h:p/db
lam_port_of() { local s="${1#*://}"; s="${s#*@}"; s="${s%%/*}"; s="${s%%,*}"; echo "${s##*:}"; }
lam_host_of() { local s="${1#*://}"; s="${s#*@}"; s="${s%%/*}"; s="${s%%,*}"; echo "${s%:*}"; }
lam_pg_user_of() { local s="${1#*://}"; case "$s" in *@*) s="${s%%@*}"; echo "${s%%:*}";; *) echo lam;; esac; }
lam_pg_db_of() { local s="${1#*://}"; s="${s#*/}"; s="${s%%\?*}"; echo "${s:-lam}"; }

# A free TCP port on 127.0.0.1 (for throwaway test stacks).
lam_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

lam_wait_tcp() { # host port seconds
  local i; for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# Point every LAM_* address at a free port and the stack state at DIR (throwaway stacks for
# tests and benchmarks, so they never collide with a running `make up`).
lam_throwaway_env() {
  export LAM_KAFKA_BROKERS="127.0.0.1:$(lam_free_port)" LAM_KAFKA_CONTROLLER_PORT="$(lam_free_port)"
  export LAM_REDIS_URL="redis://127.0.0.1:$(lam_free_port)"
  export LAM_PG_URL="postgresql://lam@127.0.0.1:$(lam_free_port)/lam"
  export LAM_INGEST_ADDR="127.0.0.1:$(lam_free_port)" LAM_SERVING_ADDR="127.0.0.1:$(lam_free_port)"
  export LAM_SPEED_ADDR="127.0.0.1:$(lam_free_port)" LAM_BATCH_ADDR="127.0.0.1:$(lam_free_port)"
  export LAM_STATE_DIR="$1"
}
