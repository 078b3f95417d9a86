#!/usr/bin/env bash
# test_compose.sh - docker-compose.yml checked statically (there is no Docker engine in CI):
# Debian's docker-compose validates it, and a YAML parse asserts services, ports, volumes,
# healthchecks and that every LAM_* it sets is a variable some service reads.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${LAM_BIN_DIR:-build/bin}"
if command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f docker-compose.yml config -q
  echo "ok   - docker-compose config -q"
fi
known="$(for s in ingest speed_layer batch_layer serving; do "$BIN/$s" --config-table; done | cut -d'`' -f2 | sort -u)"
KNOWN="$known" python3 - <<'PY'
import os, sys, yaml
doc = yaml.safe_load(open("docker-compose.yml"))
known = set(os.environ["KNOWN"].split())
fails = []
def check(cond, what):
    print(("ok   - " if cond else "FAIL - ") + what)
    if not cond: fails.append(what)
svcs = doc["services"]
for s in ["kafka", "redis", "postgres", "ingest", "speed_layer", "batch_layer", "serving", "demo"]:
    check(s in svcs, f"service {s} defined")
check(svcs["kafka"]["image"].startswith("apache/kafka:"), "kafka uses the official apache/kafka image")
check("KAFKA_PROCESS_ROLES" in svcs["kafka"]["environment"], "kafka runs in KRaft mode")
check(svcs["redis"]["image"].startswith("redis:7"), "redis:7 image")
check("--appendonly" in svcs["redis"]["command"], "redis with AOF")
check(svcs["postgres"]["image"].startswith("postgres:16"), "postgres:16 image")
for s in ["kafka", "redis", "postgres", "ingest", "speed_layer", "batch_layer", "serving"]:
    check("healthcheck" in svcs[s], f"{s} has a healthcheck")
for s in ["ingest", "speed_layer", "batch_layer", "serving"]:
    env = svcs[s]["environment"]
    check(svcs[s].get("build") == ".", f"{s} is built from the Dockerfile")
    check(svcs[s].get("restart") == "unless-stopped", f"{s} restarts unless stopped")
    for v in ["LAM_KAFKA_BROKERS", "LAM_REDIS_URL", "LAM_PG_URL", "LAM_VIEWS"]:
        check(v in env, f"{s} sets {v}")
    unknown = [k for k in env if k.startswith("LAM_") and k not in known]
    check(not unknown, f"{s}: every LAM_* is read by a service {unknown or ''}")
    deps = svcs[s].get("depends_on", {})
    check(all(deps.get(d, {}).get("condition") == "service_healthy" for d in ["kafka", "redis", "postgres"]),
          f"{s} waits for healthy kafka, redis, postgres")
check("8080:8080" in svcs["serving"]["ports"], "serving publishes 8080")
check("8081:8081" in svcs["ingest"]["ports"], "ingest publishes 8081")
check(svcs["demo"].get("profiles") == ["demo"], "demo traffic behind the demo profile")
for v in ["kafka-data", "redis-data", "pg-data", "lam-data"]:
    check(v in doc["volumes"], f"named volume {v}")
check(any("lam-data:" in m for m in svcs["batch_layer"]["volumes"]), "master dataset on a named volume")
df = open("Dockerfile").read()
check(df.count("FROM debian:") >= 2, "Dockerfile is multi-stage and Debian-based")
print(f"test_compose: {len(fails)} failed")
sys.exit(1 if fails else 0)
PY
