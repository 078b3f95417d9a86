#!/usr/bin/env bash
# test_ingest_fault.sh - ingest with its own Kafka: broker stopped -> 503 and nothing accepted; broker
# back -> ingest recovers by itself; a restart under load loses no acknowledged event; SIGTERM with
# requests in flight delivers their 200s and exits 0. A speed_layer on the same broker (and the test
# stack's Redis) reports the outage on /healthz, keeps running, and consumes again afterwards.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. tests/testlib.sh

# Our own broker on other free ports, so the shared test broker is never disturbed.
export LAM_KAFKA_BROKERS="127.0.0.1:$(lam_free_port)" LAM_KAFKA_CONTROLLER_PORT="$(lam_free_port)"
export LAM_KAFKA_TOPIC="ingest-fault-$$" LAM_KAFKA_PARTITIONS=3
export LAM_INGEST_ADDR="127.0.0.1:$(lam_free_port)" LAM_INGEST_TIMEOUT_MS=2000
export LAM_LOG_LEVEL=info
URL="http://$LAM_INGEST_ADDR"
ingest_pid=""; lg_pid=""; lg2_pid=""; speed_pid=""
SPEED_URL="http://127.0.0.1:$(lam_free_port)"
SPEED_REDIS="${LAM_REDIS_URL:-redis://127.0.0.1:6379}"; SPEED_REDIS="${SPEED_REDIS%/}/9" # a database no other test uses
cleanup() {
  if [ -n "$speed_pid" ]; then
    kill "$speed_pid" 2>/dev/null; wait "$speed_pid" 2>/dev/null
    redis-cli -u "$SPEED_REDIS" FLUSHDB >/dev/null 2>&1
  fi
  [ -n "$lg_pid" ] && kill "$lg_pid" 2>/dev/null
  [ -n "$lg2_pid" ] && kill "$lg2_pid" 2>/dev/null
  [ -n "$ingest_pid" ] && kill "$ingest_pid" 2>/dev/null && wait "$ingest_pid" 2>/dev/null
  scripts/stack.sh stop "$TMP/stack" kafka >/dev/null 2>&1
}
trap cleanup EXIT

kafka_start() { scripts/stack.sh start "$TMP/stack" kafka >>"$TMP/stack.log" 2>&1; }
kafka_stop() { scripts/stack.sh stop "$TMP/stack" kafka >>"$TMP/stack.log" 2>&1; }
health() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "${1:-$URL}/healthz"; } # [base url]
wait_health() { # code seconds [base url: ingest's]
  local i; for ((i = 0; i < $2 * 10; i++)); do [ "$(health "${3:-$URL}")" = "$1" ] && return 0; sleep 0.1; done; return 1; }
speed_events() { curl -s --max-time 3 "$SPEED_URL/metrics" | awk '$1 == "lam_speed_events_total" {print $2 + 0}'; }
post() { # body-file -> writes $TMP/resp.{code,body,head}
  curl -s -D "$TMP/resp.head" -o "$TMP/resp.body" -w '%{http_code}' --max-time 30 \
    -H 'Content-Type: application/x-ndjson' --data-binary @"$1" "$URL/v1/events" >"$TMP/resp.code"
}
ndjson() { # prefix n -> file with n events whose ids are prefix-i
  local f="$TMP/$1.ndjson" i; : >"$f"
  for ((i = 0; i < $2; i++)); do echo "{\"id\":\"$1-$i\",\"type\":\"fault\",\"i\":$i}" >>"$f"; done; echo "$f"
}
resp_is() { [ "$(cat "$TMP/resp.code")" = "$1" ] && grep -q "$2" "$TMP/resp.body"; }
topic_ids() { kcat -b "$LAM_KAFKA_BROKERS" -C -t "$LAM_KAFKA_TOPIC" -e -q -f '%k\n' 2>/dev/null | sort -u; }

check "own kafka starts" kafka_start
"$BIN/ingest" >"$TMP/ingest.log" 2>&1 &
ingest_pid=$!
check "ingest healthy with the broker up" wait_health 200 30
LAM_SPEED_ADDR="${SPEED_URL#http://}" LAM_SPEED_GROUP="fault-$$" LAM_REDIS_URL="$SPEED_REDIS" \
  "$BIN/speed_layer" >"$TMP/speed.log" 2>&1 &
speed_pid=$!
check "speed_layer healthy with the broker up" wait_health 200 30 "$SPEED_URL"
post "$(ndjson before 5)"
check "POST with the broker up: 200, 5 accepted" resp_is 200 '"accepted":5,'

# 1. A load generator runs through a broker stop and restart: acknowledged events must all be in
#    Kafka at the end; 503s are retried with the same ids.
"$BIN/loadgen" --url "$URL" --rate 500 --duration 20 --batch 20 --connections 2 --max-retries 1000 \
  --out "$TMP/acked.ndjson" --quiet >"$TMP/loadgen.out" 2>"$TMP/loadgen.err" &
lg_pid=$!
# The same without ids (--server-ids): ingest generates them, the 503s name them, and the retries
# must carry them, so an event keeps one id however often it is sent.
"$BIN/loadgen" --url "$URL" --rate 300 --duration 20 --batch 10 --connections 2 --max-retries 1000 --seed 5 \
  --server-ids --out "$TMP/acked-sid.ndjson" --quiet >"$TMP/loadgen-sid.out" 2>"$TMP/loadgen-sid.err" &
lg2_pid=$!
sleep 2

# 2. The broker stops under load: /healthz says so, POSTs get 503 naming every event, nothing accepted.
t0=$(date +%s%N)
check "broker stops (under load)" kafka_stop
check "/healthz turns 503 within 10 s" wait_health 503 10
echo "     unhealthy $(( ($(date +%s%N) - t0) / 1000000 )) ms after the stop began"
post "$(ndjson down 10)"
code="$(cat "$TMP/resp.code")"
check "POST with the broker down: 503 (got $code)" test "$code" = 503
check "503 has Retry-After" grep -qi '^Retry-After: ' "$TMP/resp.head"
check "503 reports nothing accepted" grep -q '"accepted":0,' "$TMP/resp.body"
check "503 lists all 10 events as not acknowledged with their ids" \
  test "$(grep -o '{"index":[0-9]*,"id":"down-[0-9]*"}' "$TMP/resp.body" | wc -l)" = 10
check "503 is the JSON error shape (code unavailable)" grep -q '^{"error":{"code":"unavailable"' "$TMP/resp.body"
check "ingest still running while the broker is down" kill -0 "$ingest_pid"
check "speed_layer /healthz turns 503 within 20 s (two failed pings)" wait_health 503 20 "$SPEED_URL"
check "speed_layer still running while the broker is down" kill -0 "$speed_pid"
sev0="$(speed_events)" # nothing to consume until the broker is back

# 3. The broker comes back: ingest recovers by itself.
check "broker restarts" kafka_start
t0=$(date +%s%N)
check "ingest recovers by itself (/healthz 200 within 30 s)" wait_health 200 30
echo "     healthy again $(( ($(date +%s%N) - t0) / 1000000 )) ms after the broker answered"
post "$(ndjson after 5)"
check "POST after the restart: 200, 5 accepted" resp_is 200 '"accepted":5,'
check "speed_layer recovers by itself (/healthz 200 within 30 s)" wait_health 200 30 "$SPEED_URL"
wait "$lg_pid"; rc=$?; lg_pid=""
cat "$TMP/loadgen.out"
check "loadgen through the restart: every event acknowledged in the end (exit $rc)" test "$rc" = 0
check "loadgen had to retry" grep -q 'retried=[1-9]' "$TMP/loadgen.out"
wait "$lg2_pid"; rc=$?; lg2_pid=""
cat "$TMP/loadgen-sid.out"
check "loadgen --server-ids through the restart: every event acknowledged in the end (exit $rc)" test "$rc" = 0
check "loadgen --server-ids had to retry" grep -q 'retried=[1-9]' "$TMP/loadgen-sid.out"
check "loadgen --server-ids wrote every acknowledged event with the id ingest gave it" \
  test "$(grep -c '^{"id":"[0-9a-f-]\{36\}","ts":' "$TMP/acked-sid.ndjson")" = "$(wc -l <"$TMP/acked-sid.ndjson")"
speed_consumes() { # events counted after the restart (the "after" POST and the loadgens' rest)
  local i; for ((i = 0; i < 300; i++)); do [ "$(speed_events)" -gt "${sev0:-0}" ] 2>/dev/null && return 0; sleep 0.1; done; return 1; }
check "speed_layer consumes again after the restart (beyond the ${sev0:-?} events counted before it)" speed_consumes
kill "$speed_pid"; wait "$speed_pid"; rc=$?; speed_pid=""
check "speed_layer stops on SIGTERM with exit 0 (exit $rc)" test "$rc" = 0
redis-cli -u "$SPEED_REDIS" FLUSHDB >/dev/null 2>&1

# 3b. loadgen --prebuild (the bench's mode): every body built before the clock, 250 events in
#     requests of 100, 100 and 50 over 2 connections; --out written after the clock stops.
"$BIN/loadgen" --url "$URL" --rate 0 --count 250 --batch 100 --connections 2 --prebuild --seed 9 \
  --out "$TMP/acked-pre.ndjson" --quiet >"$TMP/loadgen-pre.out" 2>&1
rc=$?
cat "$TMP/loadgen-pre.out"
check "loadgen --prebuild: done (exit $rc), 250 sent and acknowledged in 3 requests" \
  grep -q 'sent=250 acknowledged=250 rejected=0 retried=0 failed=0 dups=0 requests=3 ' "$TMP/loadgen-pre.out"
check "loadgen --prebuild: --out has 250 events with 250 distinct ids" \
  test "$(cut -c8-43 "$TMP/acked-pre.ndjson" | sort -u | wc -l)" = 250
check "loadgen --prebuild: reports its CPU during the clock" grep -q ' cpu=[0-9.]*s$' "$TMP/loadgen-pre.out"
"$BIN/loadgen" --url "$URL" --rate 0 --count 10 --duration 5 --prebuild >/dev/null 2>&1
check "loadgen --prebuild with --duration: usage error (exit 2)" test $? = 2

# 4. SIGTERM with requests in flight: their 200s arrive, the producer is flushed, exit 0.
big="$(ndjson term 3000)"
for i in 1 2 3 4 5 6; do
  curl -s -o "$TMP/term-$i.body" -w '%{http_code}' --max-time 30 --limit-rate 100k \
    -H 'Content-Type: application/x-ndjson' --data-binary @"$big" "$URL/v1/events" >"$TMP/term-$i.code" &
done
sleep 0.3
t0=$(date +%s%N)
kill -TERM "$ingest_pid"
wait "$ingest_pid"; rc=$?; ingest_pid=""
echo "     ingest exited $rc after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
wait
check "SIGTERM with requests in flight: exit 0" test "$rc" = 0
ok=0; for i in 1 2 3 4 5 6; do [ "$(cat "$TMP/term-$i.code")" = 200 ] && grep -q '"accepted":3000,' "$TMP/term-$i.body" && ok=$((ok + 1)); done
check "all 6 in-flight requests got their 200 (got $ok)" test "$ok" = 6
check "the log says drained and stopped" grep -q 'msg=stopped' "$TMP/ingest.log"

# 5. The topic: every acknowledged event is there, none of the 503'd ones.
topic_ids >"$TMP/topic.ids"
grep -o '"id":"[^"]*"' "$TMP/acked.ndjson" | cut -d'"' -f4 | sort -u >"$TMP/acked.ids"
missing="$(comm -23 "$TMP/acked.ids" "$TMP/topic.ids" | wc -l)"
check "all $(wc -l <"$TMP/acked.ids") events loadgen saw acknowledged are in the topic (missing $missing)" test "$missing" = 0
cut -c8-43 "$TMP/acked-sid.ndjson" | sort >"$TMP/acked-sid.ids"
missing="$(comm -23 "$TMP/acked-sid.ids" "$TMP/topic.ids" | wc -l)"
check "all $(wc -l <"$TMP/acked-sid.ids") events loadgen --server-ids saw acknowledged are in the topic (missing $missing)" \
  test "$missing" = 0
check "loadgen --server-ids: no id acknowledged twice" test -z "$(uniq -d "$TMP/acked-sid.ids")"
cut -c8-43 "$TMP/acked-pre.ndjson" | sort >"$TMP/acked-pre.ids"
missing="$(comm -23 "$TMP/acked-pre.ids" "$TMP/topic.ids" | wc -l)"
check "all 250 events loadgen --prebuild saw acknowledged are in the topic (missing $missing)" test "$missing" = 0
check "the before/after/term events are in the topic" \
  test "$(grep -cE '^(before|after|term)-' "$TMP/topic.ids")" = 3010
check "no event answered 503 is in the topic" test "$(grep -c '^down-' "$TMP/topic.ids")" = 0

# 6. loadgen --server-ids against a stand-in for ingest whose first answer is a 503 acknowledging
#    event 0 and naming the ids it gave events 1 and 2: the retry carries exactly those ids.
cat >"$TMP/fake.py" <<'PY'
import http.server, json, sys
port, log = int(sys.argv[1]), sys.argv[2]
seen = [0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        lines = [l for l in body.split("\n") if l.strip()]
        seen[0] += 1
        with open(log, "a") as f: f.write(body.rstrip("\n") + "\n--\n")
        ids = [json.loads(l).get("id") or "00000000-0000-7000-8000-%012d" % (100 * seen[0] + i) for i, l in enumerate(lines)]
        if seen[0] == 1:
            out, code = {"error": {"code": "unavailable", "message": "test"}, "accepted": 1, "rejected": 0, "ids": ids[:1],
                         "not_acknowledged": [{"index": i, "id": ids[i]} for i in range(1, len(lines))], "errors": []}, 503
        else:
            out, code = {"accepted": len(lines), "rejected": 0, "ids": ids, "errors": []}, 200
        b = (json.dumps(out, separators=(",", ":")) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
PY
for mode in "" --prebuild; do # the same with every body built before the clock
  fport="$(lam_free_port)"
  rm -f "$TMP/fake-requests.log"
  python3 "$TMP/fake.py" "$fport" "$TMP/fake-requests.log" &
  fake_pid=$!
  lam_wait_tcp 127.0.0.1 "$fport" 10
  "$BIN/loadgen" --url "http://127.0.0.1:$fport" --rate 0 --count 3 --batch 3 --connections 1 --server-ids $mode \
    --out "$TMP/fake-acked.ndjson" --quiet >"$TMP/fake-loadgen.out" 2>&1
  rc=$?
  kill "$fake_pid" 2>/dev/null; wait "$fake_pid" 2>/dev/null
  awk 'BEGIN {RS = "--\n"} NR == 1' "$TMP/fake-requests.log" >"$TMP/fake-first.body"
  awk 'BEGIN {RS = "--\n"} NR == 2' "$TMP/fake-requests.log" >"$TMP/fake-retry.body"
  check "loadgen --server-ids${mode:+ $mode} against the stand-in: done (exit $rc)" test "$rc" = 0
  check "loadgen --server-ids${mode:+ $mode}: the first request carries no ids" test "$(grep -c '"id"' "$TMP/fake-first.body")" = 0
  check "loadgen --server-ids${mode:+ $mode}: the retry is events 1 and 2 with the ids the 503 named" \
    test "$(grep . "$TMP/fake-retry.body" | cut -c8-43 | tr '\n' ' ')" = \
    "00000000-0000-7000-8000-000000000101 00000000-0000-7000-8000-000000000102 "
  check "loadgen --server-ids${mode:+ $mode}: --out has the 3 events with the ids they were acknowledged under" \
    test "$(cut -c8-43 "$TMP/fake-acked.ndjson" | sort | tr '\n' ' ')" = \
    "00000000-0000-7000-8000-000000000100 00000000-0000-7000-8000-000000000101 00000000-0000-7000-8000-000000000102 "
done

echo "test_ingest_fault: $((checks - fails)) passed, $fails failed"
[ "$fails" = 0 ]
