#!/usr/bin/env bash
# test_ingest_producers.sh - ingest's Kafka producers own disjoint partitions (LAM_INGEST_PRODUCERS):
# partition p is written only by producer p % n, so every partition has one idempotent writer (one
# producer id in its log) and n producers write at all. Read from the broker's own log segments
# (kafka.tools.DumpLogSegments prints each record batch's producerId), on the test stack's broker.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. tests/testlib.sh
DATA="${LAM_STATE_DIR:?LAM_STATE_DIR: the state directory of the test stack}/kafka/data"
ingest_pid=""
cleanup() { [ -n "$ingest_pid" ] && kill "$ingest_pid" 2>/dev/null && wait "$ingest_pid" 2>/dev/null; }
trap cleanup EXIT

# run PRODUCERS PARTITIONS: post 2,000 events with ids to a topic of its own, stop ingest, and
# write "partition producerId" for every record batch into $TMP/batches.
run() {
  local topic="ingest-producers-$$-${1:-default}" addr="127.0.0.1:$(lam_free_port)" i
  env LAM_KAFKA_TOPIC="$topic" LAM_KAFKA_PARTITIONS="$2" LAM_INGEST_ADDR="$addr" ${1:+LAM_INGEST_PRODUCERS=$1} \
    "$BIN/ingest" >"$TMP/ingest-${1:-default}.log" 2>&1 &
  ingest_pid=$!
  for ((i = 0; i < 300; i++)); do curl -fs -o /dev/null "http://$addr/healthz" && break; sleep 0.1; done
  python3 -c "
import json
for r in range(20):
    print('\n'.join(json.dumps({'id': f'p{r}-{i}', 'type': 'producers', 'n': i}) for i in range(100)), file=open('$TMP/body-%d' % r, 'w'))"
  local ok=0
  for ((i = 0; i < 20; i++)); do
    curl -s -o "$TMP/resp" -w '%{http_code}' -H 'Content-Type: application/x-ndjson' --data-binary @"$TMP/body-$i" \
      "http://$addr/v1/events" | grep -q '^200$' && grep -q '"accepted":100' "$TMP/resp" && ok=$((ok + 1))
  done
  kill "$ingest_pid"; wait "$ingest_pid"; ingest_pid=""
  [ "$ok" = 20 ] || { echo "# only $ok of 20 requests were accepted whole (log: $TMP/ingest-${1:-default}.log)"; return 1; }
  : >"$TMP/batches"
  for ((i = 0; i < $2; i++)); do
    java -cp "$LAM_KAFKA_LIBS/*" kafka.tools.DumpLogSegments --files "$(ls "$DATA/$topic-$i"/*.log | head -1)" 2>/dev/null |
      sed -n "s/.* count: \([0-9]*\) .* producerId: \([0-9-]*\) .*/$i \2 \1/p" >>"$TMP/batches"
  done
}
# owners N PARTITIONS: every partition's batches have one producer id, 2,000 records in all, and two
# partitions share a producer id exactly when they are equal modulo N.
owners() {
  python3 - "$1" "$2" "$TMP/batches" <<'PY'
import sys
n, np, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ids, records = {}, 0
for line in open(path):
    p, pid, count = map(int, line.split())
    ids.setdefault(p, set()).add(pid)
    records += count
print(f"# {records} records; producer ids by partition: {dict(sorted((p, sorted(s)) for p, s in ids.items()))}")
ok = records == 2000 and sorted(ids) == list(range(np)) and all(len(s) == 1 for s in ids.values())
owner = {p: next(iter(s)) for p, s in ids.items()} if ok else {}
ok = ok and all((owner[p] == owner[q]) == (p % n == q % n) for p in owner for q in owner)
sys.exit(0 if ok else 1)
PY
}

check "default (2 producers), 4 partitions: 2,000 events accepted" run "" 4
check "default: partitions 0 and 2 have one writer, 1 and 3 another" owners 2 4
check "LAM_INGEST_PRODUCERS=3, 6 partitions: 2,000 events accepted" run 3 6
check "3 producers: partition p written only by producer p % 3" owners 3 6
check "LAM_INGEST_PRODUCERS=1, 3 partitions: 2,000 events accepted" run 1 3
check "1 producer: one writer for every partition" owners 1 3

echo "test_ingest_producers: $((checks - fails))/$checks checks passed"
[ "$fails" = 0 ]
