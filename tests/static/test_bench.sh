#!/usr/bin/env bash
# test_bench.sh - `make bench` without running it: the script parses, BENCH_ONLY names are checked,
# every section has code, and every row of issue #10 (with its goal and its reference) is in the table.
set -uo pipefail
cd "$(dirname "$0")/../.."
fail=0
check() { if eval "$2"; then echo "ok   - $1"; else echo "FAIL - $1"; fail=1; fi; }
b=scripts/bench.sh
check "bench.sh parses (bash -n)" 'bash -n "$b"'
check "bench helpers parse (python, node)" \
  'python3 -m py_compile bench/freshness.py bench/pg_views.py && node --check bench/duckdb/views.mjs'
sections="$(bash "$b" --sections)"
check "bench.sh --sections lists the sections" '[ -n "$sections" ]'
for s in $sections; do
  check "section $s has code (want $s)" 'grep -q "^if want $s; then" "$b"'
done
check "every #10 section exists" '[ "$(tr " " "\n" <<<"$sections" | sort | tr "\n" " ")" = "batch freshness ingest memory parse serving speed " ]'
out="$(BENCH_ONLY="ingest nosuch" bash "$b" 2>&1)"; rc=$?
check "an unknown BENCH_ONLY name exits 2 and names the valid ones" \
  '[ "$rc" = 2 ] && grep -q "unknown section \"nosuch\"" <<<"$out" && grep -q "$sections" <<<"$out"'
# Issue #10's rows: what the row says, its reference and its goal, as the table code writes them
# (one row call, continuation lines included).
row_code() { awk -v w="row \"$1" 'index($0, w) {on = 1} on {print; if ($0 !~ /\\$/) exit}' "$b"; }
while IFS='|' read -r what ref goal; do
  check "row: $what" 'code="$(row_code "$what")"; grep -qF "$ref" <<<"$code" && grep -qF "$goal" <<<"$code"'
done <<'ROWS'
ingest, 100-event NDJSON|kcat -P same events|≥ 200k and ≥ 0.5x
ingest, single-event requests|wrk on ingest /healthz|≥ 30k
speed catch-up, $backlog backlog, 1 instance|kcat -C same backlog|≥ 300k and ≥ 0.5x
speed catch-up, 2 instances|1 instance|scale-out
freshness at 10k events/s: ack -> visible|background load|p50 ≤ 100, p99 ≤ 500
batch recompute, ${b5_n|DuckDB over the NDJSON: ${dd_rate:-n/a}; PostgreSQL GROUP BY: ${pg_rate|≥ 3M and ≥ 1.0x DuckDB
batch publish: COPY|rows/s|≥ 1M rows/s, < 50 ms
serving, merged query (req/s, p50/p99)|wrk on serving /healthz|≥ 10k, p99 ≤ 10 ms, ≥ 0.5x
$name RSS, idle / after load (MB)|(peak|≤ $goal
batch scale curve: $recs events|ns/event|linear
ROWS
check "memory goals: ingest 30, speed 50, serving 50 MB" 'grep -qF "for s in ingest:30 speed_layer:50 serving:50; do" "$b"'
check "#10 sizes: 2M ingest/speed backlog, 5M recompute, curve 1 2 4 (5) 8M, 10k events/s" \
  'grep -qF "n_of 2000000" "$b" && grep -qF "ref_n=\$(n_of 5000000)" "$b" && grep -qF "for m in 1 2 4 5 8; do" "$b" && grep -qF -- "--rate 10000" "$b"'
check "ingest rows: 128 connections in their labels, loadgen --prebuild, CPU split of both rows on stderr" \
  'grep -qF "conns=128" "$b" && grep -qF -- "--prebuild" "$b" && grep -qF "\$conns connections (events/s)" "$b" &&
   grep -qF "\$conns connections (req/s, p99)" "$b" && grep -qF "cpu_note \"bulk CPU per 1k events\"" "$b" &&
   grep -qF "cpu_note \"single CPU per request\"" "$b"'
check "BENCHMARKS.md has the markers bench.sh fills" \
  'grep -qx "<!-- bench:begin -->" BENCHMARKS.md && grep -qx "<!-- bench:end -->" BENCHMARKS.md'
exit $fail
