#!/usr/bin/env bash
# test_serving_openapi.sh - /openapi.json is valid OpenAPI 3.1 and real serving responses (and the ingest
# shapes it documents) validate against its schemas. Uses its own PostgreSQL database and Redis DB 6.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. scripts/common.sh
BIN="${LAM_BIN_DIR:-$root/build/bin}"
python3 -c 'import jsonschema' 2>/dev/null || { echo "FAIL - python3-jsonschema missing (scripts/deps.sh)"; exit 1; }

# a bad views file stops serving at start-up with exit code 2 and a message naming the view
bad="${LAM_TEST_TMP:-/tmp}/serving-bad-views-$$.json"
echo '{"views":[{"name":"x","granularity":"hour","metrics":["avg:price"]}]}' >"$bad"
out="$(LAM_VIEWS="$bad" timeout 10 "$BIN/serving" 2>&1)"; rc=$?
rm -f "$bad"
if [ "$rc" = 2 ] && echo "$out" | grep -q 'view "x"'; then echo "ok   - bad views file: exit 2 naming the view"
else echo "FAIL - bad views file: rc=$rc out=$out"; exit 1; fi

# Redis unreachable: queries answer 503 with the JSON error shape, /healthz says why
p2="$(lam_free_port)"
LAM_REDIS_URL="redis://127.0.0.1:1" LAM_SERVING_ADDR="127.0.0.1:$p2" LAM_LOG_LEVEL=error "$BIN/serving" 2>/dev/null &
p2pid=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$p2/healthz" && break; sleep 0.1; done
sleep 1.5
q="$(curl -s -w ' %{http_code}' "http://127.0.0.1:$p2/v1/views/revenue")"
h="$(curl -s -w ' %{http_code}' "http://127.0.0.1:$p2/healthz")"
kill "$p2pid"; wait "$p2pid" 2>/dev/null
case "$q" in *'"code":"unavailable"'*' 503') echo "ok   - Redis down: query 503 unavailable";; *) echo "FAIL - Redis down: $q"; exit 1;; esac
case "$h" in *'cannot reach Redis'*' 503') echo "ok   - Redis down: /healthz 503";; *) echo "FAIL - Redis down healthz: $h"; exit 1;; esac

db="itest_openapi_$$"
base_pg="${LAM_PG_URL:?}"
psql -q "$base_pg" -c "CREATE DATABASE $db" >/dev/null || exit 1
export LAM_PG_URL="${base_pg%/*}/$db"
export LAM_REDIS_URL="${LAM_REDIS_URL%/}/6"
redis-cli -u "$LAM_REDIS_URL" FLUSHDB >/dev/null
port="$(lam_free_port)"
export LAM_SERVING_ADDR="127.0.0.1:$port" LAM_LOG_LEVEL=warn
unset LAM_ADMIN_TOKEN
"$BIN/serving" 2>"${LAM_TEST_TMP:-/tmp}/openapi-serving.log" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  redis-cli -u "$LAM_REDIS_URL" FLUSHDB >/dev/null
  psql -q "$base_pg" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
}
trap cleanup EXIT
# one real-time cell written per shared/STORAGE.md, so query responses carry groups and metrics
b=978307200000; k="lam:rt:0:purchases_by_item:$b"; g='["sword"]'
redis-cli -u "$LAM_REDIS_URL" HSET "$k" "0:$g" 3 "2:$g" 29970000 "3:$g" 9990000 "4:$g" 9990000 >/dev/null
redis-cli -u "$LAM_REDIS_URL" PFADD "$k:hll:4:$g" u1 u2 >/dev/null
redis-cli -u "$LAM_REDIS_URL" SADD "lam:rt:hidx:0:purchases_by_item:$b" "$k:hll:4:$g" >/dev/null
redis-cli -u "$LAM_REDIS_URL" ZADD lam:rt:idx:0:purchases_by_item "$b" "$b" >/dev/null
redis-cli -u "$LAM_REDIS_URL" ZADD lam:rt:epochs 0 0 >/dev/null
# live ingest responses: one ingest with a key and a small body limit on its own topic, and one
# whose Kafka is unreachable (immediate 503)
iport="$(lam_free_port)"; dport="$(lam_free_port)"
LAM_INGEST_ADDR="127.0.0.1:$iport" LAM_INGEST_KEYS=k1 LAM_INGEST_MAX_BODY=4096 LAM_KAFKA_TOPIC="openapi_$$" \
  "$BIN/ingest" 2>"${LAM_TEST_TMP:-/tmp}/openapi-ingest.log" &
ipid=$!
LAM_INGEST_ADDR="127.0.0.1:$dport" LAM_KAFKA_BROKERS=127.0.0.1:1 LAM_LOG_LEVEL=error "$BIN/ingest" 2>/dev/null &
dpid=$!
trap 'kill "$ipid" "$dpid" 2>/dev/null; wait "$ipid" "$dpid" 2>/dev/null; cleanup' EXIT
for _ in $(seq 100); do curl -fs -o /dev/null "http://$LAM_SERVING_ADDR/healthz" && break; sleep 0.1; done
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$iport/healthz" && break; sleep 0.1; done
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$dport/healthz" && break; sleep 0.1; done

python3 - "http://$LAM_SERVING_ADDR" "http://127.0.0.1:$iport" "http://127.0.0.1:$dport" <<'PY'
import json, sys, urllib.request, urllib.error
import jsonschema
base = sys.argv[1]
fails = 0
def check(name, ok, extra=""):
    global fails
    print(("ok   - " if ok else "FAIL - ") + name + (" " + extra if extra and not ok else ""))
    fails += 0 if ok else 1

def call(method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()

st, _, raw = call("GET", "/openapi.json")
doc = json.loads(raw)
check("GET /openapi.json is 200 JSON", st == 200)
check("openapi is 3.1.x", doc.get("openapi", "").startswith("3.1"))
try:
    from jsonschema.validators import Draft202012Validator as V
    V.check_schema({"$defs": doc["components"]["schemas"]})
    check("component schemas are valid JSON Schema 2020-12", True)
except Exception as e:  # noqa
    check("component schemas are valid JSON Schema 2020-12", False, str(e))
for p in ["/v1/views", "/v1/views/{name}", "/v1/batch/runs", "/v1/batch/runs/{run}", "/v1/status",
          "/openapi.json", "/healthz", "/metrics", "/v1/events", "/v1/dashboards", "/v1/dashboards/{id}",
          "/v1/tail", "/d/{id}"]:
    check("documents " + p, p in doc["paths"])

def schema_of(path, method, status):
    resp = doc["paths"][path][method]["responses"][str(status)]
    if "$ref" in resp:
        resp = doc["components"]["responses"][resp["$ref"].split("/")[-1]]
    s = resp["content"]["application/json"]["schema"]
    return {"$ref": s["$ref"]} if "$ref" in s else s

def validate(name, path, method, status, got_status, raw):
    if got_status != status:
        check(name, False, "status %d != %d: %s" % (got_status, status, raw[:200]))
        return
    s = dict(schema_of(path, method, status))
    s["components"] = doc["components"]
    # the document's "#/components/..." refs resolve against this wrapper
    try:
        jsonschema.validate(json.loads(raw), s, cls=jsonschema.Draft202012Validator)
        check(name, True)
    except jsonschema.ValidationError as e:
        check(name, False, e.message)

st, _, raw = call("GET", "/v1/views"); validate("GET /v1/views", "/v1/views", "get", 200, st, raw)
views = [v["name"] for v in json.loads(raw)["views"]]
for v in views:
    st, _, raw = call("GET", "/v1/views/%s?from=2001-01-01T00:00:00Z&to=2001-01-02T00:00:00Z&granularity=day" % v)
    validate("GET /v1/views/" + v, "/v1/views/{name}", "get", 200, st, raw)
st, _, raw = call("GET", "/v1/views/purchases_by_item?from=2001-01-01T00:00:00Z&to=2001-01-02T00:00:00Z")
validate("GET /v1/views/purchases_by_item with data", "/v1/views/{name}", "get", 200, st, raw)
g = json.loads(raw)["buckets"][0]["groups"][0] if st == 200 and json.loads(raw)["buckets"] else {}
check("real-time cell served exactly", g == {"key": ["sword"], "count": 3, "sum:price": 29.97, "min:price": 9.99,
                                             "max:price": 9.99, "distinct:user": 2}, str(g))
st, _, raw = call("GET", "/v1/views/nope"); validate("404 error shape", "/v1/views/{name}", "get", 404, st, raw)
st, _, raw = call("GET", "/v1/views/%s?bogus=1" % views[0]); validate("400 error shape", "/v1/views/{name}", "get", 400, st, raw)
st, _, raw = call("POST", "/v1/batch/runs", b""); validate("POST /v1/batch/runs", "/v1/batch/runs", "post", 202, st, raw)
run = json.loads(raw)["run"]
st, _, raw = call("GET", "/v1/batch/runs"); validate("GET /v1/batch/runs", "/v1/batch/runs", "get", 200, st, raw)
st, _, raw = call("GET", "/v1/batch/runs/%d" % run); validate("GET /v1/batch/runs/{run}", "/v1/batch/runs/{run}", "get", 200, st, raw)
st, _, raw = call("GET", "/v1/batch/runs/424242"); validate("GET unknown run 404", "/v1/batch/runs/{run}", "get", 404, st, raw)
st, _, raw = call("GET", "/v1/status"); validate("GET /v1/status", "/v1/status", "get", 200, st, raw)
st, _, raw = call("GET", "/healthz"); validate("GET /healthz", "/healthz", "get", 200, st, raw)
st, _, raw = call("GET", "/v1/dashboards"); validate("GET /v1/dashboards", "/v1/dashboards", "get", 200, st, raw)
st, _, raw = call("GET", "/v1/dashboards/nope"); validate("GET unknown dashboard 404", "/v1/dashboards/{id}", "get", 404, st, raw)
st, _, raw = call("GET", "/v1/tail?limit=5"); validate("GET /v1/tail", "/v1/tail", "get", 200, st, raw)
st, _, raw = call("GET", "/v1/tail?limit=0"); validate("GET /v1/tail bad limit 400", "/v1/tail", "get", 400, st, raw)
st, h, raw = call("GET", "/metrics")
check("GET /metrics is Prometheus text", st == 200 and h.get("Content-Type", "").startswith("text/plain"))
st, h, raw = call("TRACE", "/healthz")
check("405 names the allowed methods (RFC 9110)", st == 405 and h.get("Allow") == "GET, HEAD", "%d %s" % (st, h.get("Allow")))

# real ingest responses against the same document
ingest, dead = sys.argv[2], sys.argv[3]
def icall(url, body, ctype="application/json", key="k1", method="POST"):
    hdr = {"Content-Type": ctype} if ctype else {}
    if key:
        hdr["Authorization"] = "Bearer " + key
    req = urllib.request.Request(url + "/v1/events", method=method, data=body, headers=hdr)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
E = "/v1/events"
st, _, raw = icall(ingest, b'{"type":"page_view","url":"/a","geo":{"cc":"TH"}}')
validate("ingest 200, one event", E, "post", 200, st, raw)
st, _, raw = icall(ingest, b'[{"type":"a","id":"openapi-1"},{"nope":1},{"type":"b","ts":"2001-01-01T00:00:00Z"}]')
validate("ingest 200, array with a bad event", E, "post", 200, st, raw)
r = json.loads(raw) if st == 200 else {}
check("ingest reports the bad event by index", r.get("accepted") == 2 and [e["index"] for e in r.get("errors", [])] == [1], str(r))
st, _, raw = icall(ingest, b'{"type":"a"}\nnot json\n{"type":"c"}\n', "application/x-ndjson")
validate("ingest 200, mixed NDJSON", E, "post", 200, st, raw)
st, _, raw = icall(ingest, b'[{"nope":1}]'); validate("ingest 400, nothing valid", E, "post", 400, st, raw)
check("ingest 400 carries the per-event errors", st == 400 and json.loads(raw).get("rejected") == 1, raw[:200])
st, _, raw = icall(ingest, b'[]'); validate("ingest 400, empty array", E, "post", 400, st, raw)
st, _, raw = icall(ingest, b'{"type":'); validate("ingest 400, truncated JSON", E, "post", 400, st, raw)
st, _, raw = icall(ingest, b'{"type":"a"}', key=None); validate("ingest 401, no key", E, "post", 401, st, raw)
st, _, raw = icall(ingest, b'{"type":"a"}', key="k2"); validate("ingest 401, wrong key", E, "post", 401, st, raw)
st, _, raw = icall(ingest, b'{"type":"a"}', "text/plain"); validate("ingest 415", E, "post", 415, st, raw)
st, _, raw = icall(ingest, b'[' + b'{"type":"a"},' * 400 + b'{"type":"a"}]'); validate("ingest 413", E, "post", 413, st, raw)
st, h, raw = icall(ingest, None, None, method="GET")
check("ingest 405 with Allow: POST", st == 405 and h.get("Allow") == "POST", "%d %s" % (st, h.get("Allow")))
st, h, raw = icall(dead, b'[{"type":"a","id":"x1"},{"type":"b","id":"x2"}]', key=None)
validate("ingest 503 (Kafka unreachable)", E, "post", 503, st, raw)
check("ingest 503 has Retry-After", h.get("Retry-After") is not None)
sys.exit(1 if fails else 0)
PY
rc=$?

# /v1/status when Redis answers with an error reply (as -LOADING does while it replays its AOF):
# the speed lag is unknown (null), never the whole topic; with the offsets readable it is a number.
# A serving on the ingest's topic, which now holds events, and the offsets key of another type.
sport2="$(lam_free_port)"
LAM_SERVING_ADDR="127.0.0.1:$sport2" LAM_KAFKA_TOPIC="openapi_$$" LAM_SPEED_GROUP="openapi_$$" "$BIN/serving" 2>/dev/null &
s2pid=$!
trap 'kill "$ipid" "$dpid" "$s2pid" 2>/dev/null; wait "$ipid" "$dpid" "$s2pid" 2>/dev/null; cleanup' EXIT
redis-cli -u "$LAM_REDIS_URL" SET "lam:speed:openapi_$$:offsets" "not a hash" >/dev/null
status_field() { curl -s "http://127.0.0.1:$sport2/v1/status" | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
for _ in $(seq 100); do [ "$(status_field "d['kafka']['total']" 2>/dev/null)" -gt 0 ] 2>/dev/null && break; sleep 0.1; done
got="$(status_field "d['kafka']['total'], d['speed']['lag'], d['backends']['redis']")"
set -- $got
if [ "$1" -gt 0 ] && [ "$2" = None ] && [ "$3" = False ]; then
  echo "ok   - /v1/status on a Redis error reply: speed lag unknown, not the whole topic ($got)"
else echo "FAIL - /v1/status on a Redis error reply: total, lag, redis = $got"; rc=1; fi
redis-cli -u "$LAM_REDIS_URL" DEL "lam:speed:openapi_$$:offsets" >/dev/null
got="$(status_field "d['kafka']['total'], d['speed']['lag'], d['backends']['redis']")"
set -- $got
if [ "$2" != None ] && [ "$2" = "$1" ] && [ "$3" = True ]; then
  echo "ok   - /v1/status with no stored offsets: lag is the whole topic ($got)"
else echo "FAIL - /v1/status with no stored offsets: total, lag, redis = $got"; rc=1; fi
exit $rc
