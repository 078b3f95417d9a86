#!/usr/bin/env python3
"""pg_views.py - `make bench`'s PostgreSQL reference: every view as one GROUP BY over the events in a table.

The events come as the CSV bench/duckdb/views.mjs writes (ts + every field the views use, header
row), are loaded into an UNLOGGED table with COPY (not timed) and analysed; then every view runs
as a GROUP BY with the same bucket (UTC floor of ts), filters and metrics, in one psql session,
and the server-side times psql reports are summed. distinct:F is count(DISTINCT F): exact, as
stock PostgreSQL has no HyperLogLog. Prints one JSON line {"events", "rows", "seconds"}.

usage: pg_views.py load PG_URL VIEWS.json EVENTS.csv    (table ev, not timed)
       pg_views.py query PG_URL VIEWS.json               (timed; drops the table)
"""
import csv
import json
import re
import subprocess
import sys

GRAN_MS = {"minute": 60000, "hour": 3600000, "day": 86400000}


def q_ident(name):
    return '"' + name.replace('"', '""') + '"'


def q_lit(value):
    """A literal for a where= value; the views file is the operator's, still never spliced raw."""
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def view_sql(v):
    def col(f):
        return q_ident(f)

    where = []
    for f, val in (v.get("where") or {}).items():
        vals = val if isinstance(val, list) else [val]
        where.append("%s IN (%s)" % (col(f), ", ".join(q_lit(x) for x in vals)))
    bucket = "(ts - ts %% %d)" % GRAN_MS[v["granularity"]]
    groups = [col(f) for f in v.get("group_by") or []]
    metrics = []
    for m in v["metrics"]:
        kind, _, field = m.partition(":")
        metrics.append({"count": "count(*)", "sum": "sum(%s)", "min": "min(%s)", "max": "max(%s)",
                        "distinct": "count(DISTINCT %s)"}[kind] % ((col(field),) if field else ()))
    sql = "SELECT %s FROM ev" % ", ".join([bucket + " AS bucket"] + groups + metrics)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " GROUP BY " + ", ".join(["1"] + [str(i + 2) for i in range(len(groups))])
    return "SELECT count(*) FROM (%s) v;" % sql


def psql(url, script):
    r = subprocess.run(["psql", url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"], input=script,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("pg_views: psql: " + r.stderr.strip())
    return r.stdout


def main():
    cmd, url, views_path = sys.argv[1:4]
    views = json.load(open(views_path))["views"]
    if cmd == "load":
        csv_path = sys.argv[4]
        with open(csv_path, newline="") as f:
            header = next(csv.reader(f))
        numeric = {m.split(":", 1)[1] for v in views for m in v["metrics"] if m.split(":")[0] in ("sum", "min", "max")}
        cols = ", ".join("%s %s" % (q_ident(c), "bigint" if c == "ts" else "numeric" if c in numeric else "text")
                         for c in header)
        psql(url, "DROP TABLE IF EXISTS ev; CREATE UNLOGGED TABLE ev (%s);\n"
                  "\\copy ev FROM %s WITH (FORMAT csv, HEADER true)\nVACUUM ANALYZE ev;\n"
             % (cols, q_lit(csv_path)))
        return
    script = "SET work_mem = '256MB';\n\\timing on\n" + "\n".join(view_sql(v) for v in views) + "\n"
    out = psql(url, script + "SELECT count(*) FROM ev;\n")
    times = [float(t) for t in re.findall(r"^Time: ([0-9.]+) ms", out, re.M)]
    counts = [int(x) for x in out.split("\n") if x.strip().isdigit()]
    seconds = sum(times[:len(views)]) / 1000.0
    psql(url, "DROP TABLE ev;")
    print(json.dumps({"events": counts[-1], "rows": sum(counts[:len(views)]), "seconds": seconds}))


if __name__ == "__main__":
    main()
