#!/usr/bin/env python3
"""oracle.py - an independent check of every lam view against plain SQL.

Loads the acknowledged events (NDJSON files as written by `loadgen --out`, duplicates
included; deduplicated by id keeping the FIRST occurrence) into a scratch table of the
stack's PostgreSQL (database `lam_oracle`, never lam's own tables), computes every view of
the views file with plain SQL GROUP BY (date_trunc on UTC timestamps, numeric arithmetic,
COUNT(DISTINCT)), then queries serving for every view over the whole range at the view's
granularity (in chunks below LAM_MAX_BUCKETS), day, week, month and all, and compares every
bucket and group: exact for count/sum/min/max (Decimal), within 2 % for distinct.

lam's C engine is not used: the only shared input is the views file.

Straddling duplicates (DESIGN §3): with --kafka the topic is read with kcat; an id that has a
copy before the cut marker of the published run k and a copy after it (same partition: the
key is the id) may be counted once extra until run k+1. In the default (tolerant) mode such
cells may exceed the oracle by a subset of those copies (count and sum only; min/max/distinct
are unaffected since the copies are identical); every tolerated cell is reported.
--exact allows no tolerance (use it after a final batch run with no traffic after its cut).

Exit status: 0 all views match, 1 a mismatch, 2 usage or infrastructure error.
"""
import argparse
import collections
import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal

GRAN_MS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
GRAN_ORDER = ["minute", "hour", "day", "week", "month", "all"]
FROM_MIN = -62167219200000      # 0000-01-01T00:00:00Z
TO_MAX = 253402300800000        # 10000-01-01T00:00:00Z (exclusive)
MICRO_MAX = Decimal("9223372036854.775807")


def die(msg, code=2):
    print("oracle: error: " + msg, file=sys.stderr)
    sys.exit(code)


def log(msg):
    print("oracle: " + msg, flush=True)


# ---------------------------------------------------------------- PostgreSQL via psql
class PG:
    def __init__(self, url, db):
        u = urllib.parse.urlsplit(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = str(u.port or 5432)
        self.user = urllib.parse.unquote(u.username or "lam")
        self.db = db
        self.env = dict(os.environ)
        if u.password:
            self.env["PGPASSWORD"] = urllib.parse.unquote(u.password)

    def run(self, sql, db=None, stdin=None):
        cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", self.port,
               "-U", self.user, "-d", db or self.db, "-At", "-c", sql]
        p = subprocess.run(cmd, input=stdin, capture_output=True, env=self.env)
        if p.returncode != 0:
            die("psql failed: %s\n  sql: %s" % (p.stderr.decode(errors="replace").strip(), sql[:300]))
        return p.stdout.decode()

    def rows(self, query):
        out = self.run("COPY (%s) TO STDOUT (FORMAT csv)" % query)
        return list(csv.reader(io.StringIO(out)))

    def ensure_db(self):
        if self.run("SELECT 1 FROM pg_database WHERE datname = '%s'" % self.db, db="postgres").strip() != "1":
            self.run('CREATE DATABASE "%s"' % self.db, db="postgres")


R6_SQL = """
CREATE OR REPLACE FUNCTION r6(x numeric) RETURNS numeric IMMUTABLE LANGUAGE sql AS $$
  SELECT CASE WHEN abs(x * 1000000 - trunc(x * 1000000)) = 0.5
              THEN (trunc(x * 1000000) + CASE WHEN mod(trunc(x * 1000000), 2) = 0 THEN 0 ELSE sign(x) END) / 1000000
              ELSE round(x, 6) END $$;
"""


# ---------------------------------------------------------------- events
def flatten(obj, prefix, out):
    for k, v in obj.items():
        name = prefix + k
        if isinstance(v, dict):
            flatten(v, name + ".", out)
        else:
            out[name] = v


def to_ms(ts, line_no, fname):
    if isinstance(ts, bool) or ts is None:
        die("%s:%d: ts must be a number here" % (fname, line_no))
    if isinstance(ts, (int, Decimal)):
        d = Decimal(ts)
        if d != d.to_integral_value():
            die("%s:%d: non-integer ts" % (fname, line_no))
        return int(d)
    die("%s:%d: the oracle only handles numeric ts (got %r)" % (fname, line_no, ts))


def load_events(files):
    seen = {}
    n_lines = n_dups = 0
    anon = 0
    for fname in files:
        if not os.path.exists(fname):
            continue
        with open(fname, "rb") as f:
            for ln, raw in enumerate(f, 1):
                raw = raw.strip()
                if not raw:
                    continue
                try:
                    ev = json.loads(raw, parse_float=Decimal)
                except ValueError:
                    # a torn last line of a killed writer is not an acknowledged event
                    print("oracle: warning: %s:%d: unparsable line skipped" % (fname, ln), file=sys.stderr)
                    continue
                n_lines += 1
                eid = ev.get("id")
                if eid is None:
                    anon += 1
                    eid = "\x00anon-%d" % anon
                if eid in seen:
                    n_dups += 1
                    continue
                flat = {}
                flatten(ev, "", flat)
                flat["ts"] = to_ms(ev.get("ts"), ln, fname) if "ts" in ev else die("%s:%d: no ts" % (fname, ln))
                seen[eid] = flat
    return seen, n_lines, n_dups


def dumps_exact(obj):
    # exact decimal text for numbers (no float rounding)
    def enc(o):
        if isinstance(o, bool) or o is None:
            return json.dumps(o)
        if isinstance(o, (int, Decimal)):
            return str(o)
        if isinstance(o, str):
            return json.dumps(o, ensure_ascii=False)
        if isinstance(o, dict):
            return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + enc(v) for k, v in o.items()) + "}"
        raise TypeError(type(o))
    return enc(obj)


def copy_events(pg, table, events):
    buf = io.StringIO()
    w = csv.writer(buf)
    for eid, flat in events.items():
        w.writerow([eid, flat["ts"], dumps_exact(flat)])
    pg.run("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id text PRIMARY KEY, ts bigint NOT NULL, d jsonb NOT NULL)"
           % (table, table))
    pg.run("COPY %s FROM STDIN (FORMAT csv)" % table, stdin=buf.getvalue().encode())


# ---------------------------------------------------------------- views in SQL
def lit(s):
    return "'" + s.replace("'", "''") + "'"


def fld(f):
    return "COALESCE(d -> %s, 'null'::jsonb)" % lit(f)


def num(f):
    return ("CASE WHEN jsonb_typeof(d -> %s) = 'number' AND abs(r6((d ->> %s)::numeric)) <= %s "
            "THEN r6((d ->> %s)::numeric) END" % (lit(f), lit(f), MICRO_MAX, lit(f)))


def distinct_val(f):
    return ("CASE jsonb_typeof(d -> {f}) WHEN 'string' THEN d ->> {f} WHEN 'boolean' THEN d ->> {f} "
            "WHEN 'number' THEN trim_scale((d ->> {f})::numeric)::text END").format(f=lit(f))


def bucket_sql(gran):
    if gran == "all":
        return "0::bigint"
    return ("(extract(epoch FROM date_trunc('%s', to_timestamp(floor(ts / 1000.0)) AT TIME ZONE 'UTC')) * 1000)::bigint"
            % gran)


def view_sql(view, gran, source):
    where = []
    for f, v in (view.get("where") or {}).items():
        vals = v if isinstance(v, list) else [v]
        where.append("%s IN (%s)" % (fld(f), ", ".join(lit(dumps_exact(x)) + "::jsonb" for x in vals)))
    group = view.get("group_by") or []
    key = "jsonb_build_array(%s)::text" % ", ".join(fld(f) for f in group)
    cols = [bucket_sql(gran) + " AS b", key + " AS k", "count(*)"]
    for m in view["metrics"]:
        kind, _, f = m.partition(":")
        if kind == "count":
            continue
        if kind == "sum":
            cols.append("sum(%s)" % num(f))
            cols.append("sum(GREATEST(%s, 0))" % num(f))   # positive part (tolerance ranges)
            cols.append("sum(LEAST(%s, 0))" % num(f))      # negative part
        elif kind == "min":
            cols.append("min(%s)" % num(f))
        elif kind == "max":
            cols.append("max(%s)" % num(f))
        elif kind == "distinct":
            cols.append("count(DISTINCT %s)" % distinct_val(f))
        else:
            die("view %s: unknown metric %s" % (view["name"], m))
    return "SELECT %s FROM %s %s GROUP BY 1, 2" % (
        ", ".join(cols), source, ("WHERE " + " AND ".join(where)) if where else "")


def dnum(s):
    return None if s == "" else Decimal(s)


def norm_val(v):
    if v is None:
        return ("null",)
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, (int, Decimal)):
        return ("n", Decimal(v).normalize() if Decimal(v) != 0 else Decimal(0))
    if isinstance(v, str):
        return ("s", v)
    return ("?", json.dumps(v, default=str))


def norm_key(k):
    return tuple(norm_val(v) for v in k)


def show_key(k):
    return json.dumps([v[1] if len(v) > 1 else None for v in k], default=str, ensure_ascii=False)


def expected_cells(pg, view, gran, source):
    cells = {}
    for r in pg.rows(view_sql(view, gran, source)):
        b = int(r[0])
        k = norm_key(json.loads(r[1], parse_float=Decimal, parse_int=Decimal))
        c = {"count": int(r[2]), "_ktext": r[1]}
        i = 3
        for m in view["metrics"]:
            kind = m.split(":")[0]
            if kind == "count":
                continue
            if kind == "sum":
                c[m] = dnum(r[i]); c[m + "+"] = dnum(r[i + 1]) or Decimal(0); c[m + "-"] = dnum(r[i + 2]) or Decimal(0)
                i += 3
            elif kind == "distinct":
                c[m] = int(r[i]); i += 1
            else:
                c[m] = dnum(r[i]); i += 1
        cells[(b, k)] = c
    return cells


# ---------------------------------------------------------------- serving
def http_json(url, tries=20):
    last = None
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return json.loads(r.read(), parse_float=Decimal, parse_int=Decimal)
        except urllib.error.HTTPError as e:
            body = e.read()[:300]
            if e.code == 503:
                last = "503 %s" % body
                time.sleep(0.5)
                continue
            die("GET %s -> %d %s" % (url, e.code, body))
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
            time.sleep(0.5)
    die("GET %s failed: %s" % (url, last))


def served_cells(base, view, gran, lo, hi, max_buckets):
    cells = {}
    if gran in GRAN_MS:
        step = GRAN_MS[gran] * max_buckets
        ranges = []
        a = lo
        while a < hi:
            ranges.append((a, min(hi, a + step)))
            a += step
    else:
        ranges = [(lo, hi)]
    for a, b in ranges:
        q = urllib.parse.urlencode({"from": a, "to": b, "granularity": gran})
        doc = http_json("%s/v1/views/%s?%s" % (base, view["name"], q))
        for bk in doc.get("buckets", []):
            for g in bk.get("groups", []):
                key = (int(bk["ts"]), norm_key(g["key"]))
                if key in cells:
                    die("%s %s: bucket %s group %s returned twice" % (view["name"], gran, bk["ts"], g["key"]), 1)
                cells[key] = g
    return cells


def fmt_ts(ms):
    if ms == 0:
        return "0 (all)"
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ms / 1000)) + "Z"


HLL_CHECK = None
hll_collisions = []
hll_checked = []          # at most 300 PFCOUNT cross-checks per run (a broken stack stays fast)


def make_hll_check(pg, redis_url):
    u = urllib.parse.urlsplit(redis_url)
    base = ["redis-cli", "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 6379), "-n", "15"]
    if u.password:
        base += ["-a", urllib.parse.unquote(u.password), "--no-auth-warning"]

    def check(view, gran, b, ktext, f):
        where = ["%s IN (%s)" % (fld(wf), ", ".join(lit(dumps_exact(x)) + "::jsonb" for x in (wv if isinstance(wv, list) else [wv])))
                 for wf, wv in (view.get("where") or {}).items()]
        key = "jsonb_build_array(%s)::text" % ", ".join(fld(x) for x in (view.get("group_by") or []))
        where += ["%s = %d" % (bucket_sql(gran), b), "%s = %s" % (key, lit(ktext)), "d -> %s IS NOT NULL" % lit(f)]
        vals = [r[0] for r in pg.rows("SELECT DISTINCT %s FROM ev WHERE %s" % (distinct_val(f), " AND ".join(where)))
                if r and r[0] != ""]
        p = subprocess.run(base + ["DEL", "lam_oracle_hll"], capture_output=True)
        for i in range(0, len(vals), 500):
            p = subprocess.run(base + ["PFADD", "lam_oracle_hll"] + vals[i:i + 500], capture_output=True)
            if p.returncode:
                return None
        p = subprocess.run(base + ["PFCOUNT", "lam_oracle_hll"], capture_output=True)
        subprocess.run(base + ["DEL", "lam_oracle_hll"], capture_output=True)
        try:
            return Decimal(p.stdout.decode().strip())
        except Exception:
            return None
    return check


def compare(view, gran, exp, got, tol, diffs, tolerated):
    n_bad = 0
    metrics = view["metrics"]
    for key in sorted(set(exp) | set(got), key=lambda k: (k[0], repr(k[1]))):
        e, g = exp.get(key), got.get(key)
        where = (view["name"], gran, fmt_ts(key[0]), show_key(key[1]))
        if g is None:
            n_bad += 1
            diffs.append(where + ("(group)", "present, count %d" % e["count"], "missing"))
            continue
        if e is None:
            n_bad += 1
            diffs.append(where + ("(group)", "absent", json.dumps({k: str(v) for k, v in g.items() if k != "key"})))
            continue
        t = tol.get(key)
        bad = []
        dcount = None
        for m in metrics:
            kind = m.split(":")[0]
            want = e["count"] if kind == "count" else e[m]
            have = g.get(m)
            have = None if have is None else Decimal(have)
            if kind == "distinct":
                want = Decimal(want)
                ok = have is not None and abs(have - want) <= Decimal("0.02") * want
                if not ok and have is not None and HLL_CHECK is not None and len(hll_checked) < 300:
                    hll_checked.append(1)
                    # small sets: a register collision costs 1 (7 users -> 6). Ask Redis's own
                    # PFCOUNT over the exact value set, an implementation independent of lam.
                    ref = HLL_CHECK(view, gran, key[0], e["_ktext"], m.split(":", 1)[1])
                    if ref is not None and have == ref:
                        ok = True
                        hll_collisions.append(where + (m, str(want), str(have)))
            elif kind == "sum" and want is None:
                ok = have is None or have == 0           # no value applied: identity
            else:
                ok = have == want
            if not ok and t is not None and kind in ("count", "sum") and have is not None:
                d = have - (want or 0)
                if kind == "count":
                    ok = 0 <= d <= t["count"]
                    dcount = d
                else:
                    ok = t[m + "-"] <= d <= t[m + "+"]
                if ok:
                    tolerated.append(where + (m, str(want), str(have)))
            if not ok:
                bad.append((m, "null" if want is None else str(want), "null" if have is None else str(have)))
        if bad:
            n_bad += 1
            for b in bad:
                diffs.append(where + b)
    return n_bad


def kafka_straddlers(brokers, topic, run):
    """ids with a copy before and a copy after cut marker `run` in their partition."""
    p = subprocess.run(["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q",
                        "-f", "%p\t%o\t%k\t%h\n"], capture_output=True, timeout=600)
    if p.returncode != 0:
        die("kcat failed: %s" % p.stderr.decode(errors="replace")[:300])
    recs = collections.defaultdict(list)
    cut = {}
    for line in p.stdout.decode(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        part, off, key, hdr = int(parts[0]), int(parts[1]), parts[2], parts[3]
        if "lam-cut=" in hdr:
            k = int(hdr.split("lam-cut=")[1].split(",")[0])
            if k == run:
                cut[part] = off
            continue
        recs[part].append((off, key))
    strad = set()
    n_records = 0
    for part, lst in recs.items():
        n_records += len(lst)
        c = cut.get(part)
        if c is None:
            continue
        before = {k for o, k in lst if o < c}
        after = {k for o, k in lst if o > c}
        strad |= before & after
    return strad, n_records


def wait_idle(base, timeout):
    """Until speed lag and archive lag are 0 and no batch run is requested/running."""
    t0 = time.time()
    deadline = t0 + timeout
    st = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/v1/status", timeout=10) as r:
                st = json.loads(r.read())
            last = (st.get("batch") or {}).get("last_run") or {}
            if (st["speed"].get("lag") == 0 and st["archive"].get("lag") == 0
                    and last.get("status") not in ("requested", "running")):
                time.sleep(0.5)   # answers may be reused for LAM_SERVING_RESULT_MS
                log("pipeline idle after %.1f s (speed lag 0, archive lag 0, published run %s, last run %s %s)"
                    % (time.time() - t0, st["batch"].get("current_run"), last.get("run"), last.get("status")))
                return st
        except Exception:
            pass
        time.sleep(0.5)
    die("the pipeline did not become idle within %d s (last status: %s)" % (timeout, json.dumps(st)[:400]), 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("events", nargs="+", help="NDJSON files of acknowledged events")
    ap.add_argument("--serving", default="http://" + os.environ.get("LAM_SERVING_ADDR", "127.0.0.1:8080"))
    ap.add_argument("--pg-url", default=os.environ.get("LAM_PG_URL", "postgresql://lam@127.0.0.1:5432/lam"))
    ap.add_argument("--db", default="lam_oracle")
    ap.add_argument("--views", default=os.environ.get("LAM_VIEWS", os.path.join(os.path.dirname(__file__), "../../shared/views.json")))
    ap.add_argument("--redis-url", default=os.environ.get("LAM_REDIS_URL"),
                    help="Redis for PFCOUNT cross-checks of small distinct counts (db 15; '' to disable)")
    ap.add_argument("--kafka", default=None, help="brokers: find straddling duplicates with kcat (tolerant mode)")
    ap.add_argument("--topic", default=os.environ.get("LAM_KAFKA_TOPIC", "events"))
    ap.add_argument("--exact", action="store_true", help="no tolerance for straddling duplicates")
    ap.add_argument("--wait-idle", type=float, default=120, help="seconds to wait for lag 0 first (0: do not wait)")
    ap.add_argument("--max-buckets", type=int, default=int(os.environ.get("LAM_MAX_BUCKETS", "10000")) - 100)
    ap.add_argument("--max-diffs", type=int, default=25)
    ap.add_argument("--json", default=None, help="write per-view results here")
    ap.add_argument("--only", default=None, help="comma-separated view names (default: every view)")
    ap.add_argument("--drop-id", action="append", default=[],
                    help="leave this event out (self-test: the check must then FAIL)")
    a = ap.parse_args()
    base = a.serving.rstrip("/")
    if not base.startswith("http"):
        base = "http://" + base
    views = json.load(open(a.views), parse_float=Decimal)["views"]
    if a.only:
        views = [v for v in views if v["name"] in a.only.split(",")]
    t0 = time.time()

    st = wait_idle(base, a.wait_idle) if a.wait_idle > 0 else None
    run = (st or {}).get("batch", {}).get("current_run") if st else None

    events, n_lines, n_dups = load_events(a.events)
    for d in a.drop_id:
        events.pop(d, None)
    pg = PG(a.pg_url, a.db)
    pg.ensure_db()
    pg.run(R6_SQL)
    global HLL_CHECK
    if a.redis_url:
        HLL_CHECK = make_hll_check(pg, a.redis_url)
    copy_events(pg, "ev", events)
    log("%d acknowledged lines, %d duplicate ids dropped, %d distinct events loaded into %s.ev"
        % (n_lines, n_dups, len(events), a.db))

    strad = set()
    if a.kafka and not a.exact and run:
        strad, nrec = kafka_straddlers(a.kafka, a.topic, run)
        log("kafka: %d event records; %d ids straddle cut %d (may count once extra until run %d)"
            % (nrec, len(strad), run, run + 1))
    pg.run("DROP TABLE IF EXISTS strad; CREATE TABLE strad (id text PRIMARY KEY)")
    if strad:
        buf = io.StringIO(); w = csv.writer(buf)
        for s in strad:
            w.writerow([s])
        pg.run("COPY strad FROM STDIN (FORMAT csv)", stdin=buf.getvalue().encode())

    if events:
        lo = min(e["ts"] for e in events.values())
        hi = max(e["ts"] for e in events.values())
    else:
        lo = hi = int(time.time() * 1000)
    lo_day = (lo // 86_400_000) * 86_400_000
    hi_day = (hi // 86_400_000 + 1) * 86_400_000

    diffs, tolerated, results = [], [], {}
    total_bad = 0
    for v in views:
        vg = v["granularity"]
        grans = [g for g in GRAN_ORDER if GRAN_ORDER.index(g) >= GRAN_ORDER.index(vg)]
        vbad = 0
        ncells = 0
        for g in grans:
            exp = expected_cells(pg, v, g, "ev")
            tol = expected_cells(pg, v, g, "(SELECT ev.* FROM ev JOIN strad USING (id)) s") if strad else {}
            if g == "all":
                got = served_cells(base, v, g, FROM_MIN, TO_MAX, a.max_buckets)
            elif g in ("week", "month"):
                got = served_cells(base, v, g, lo_day - 40 * 86_400_000, hi_day + 40 * 86_400_000, a.max_buckets)
                # roll-up buckets that start before lo are only partially in range: compare all
                # buckets (the range covers every event)
            else:
                got = served_cells(base, v, g, lo_day, hi_day, a.max_buckets)
            ncells += len(exp)
            vbad += compare(v, g, exp, got, tol, diffs, tolerated)
        results[v["name"]] = {"ok": vbad == 0, "cells": ncells, "bad_cells": vbad}
        total_bad += vbad
        log("%-24s %-4s %6d cells compared at %s, %d differing"
            % (v["name"], "ok" if vbad == 0 else "FAIL", ncells, "/".join(grans), vbad))

    if hll_collisions:
        log("%d distinct counts differ from the exact count but equal Redis PFCOUNT of the same values "
            "(HLL register collisions), e.g. %s" % (len(hll_collisions), " ".join(str(x) for x in hll_collisions[0])))
    if tolerated:
        log("%d metric values tolerated as straddling duplicates, e.g.:" % len(tolerated))
        for t in tolerated[:5]:
            log("  tolerated %s %s %s %s %s want %s got %s" % t)
    if diffs:
        print("\nfirst differences (of %d):" % len(diffs))
        hdr = ("view", "gran", "bucket", "group", "metric", "expected", "served")
        rows = [hdr] + [tuple(str(x) for x in d) for d in diffs[:a.max_diffs]]
        wid = [min(40, max(len(r[i]) for r in rows)) for i in range(len(hdr))]
        for r in rows:
            print("  " + "  ".join(r[i][:40].ljust(wid[i]) for i in range(len(hdr))))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"ok": total_bad == 0, "events": len(events), "lines": n_lines, "dup_lines": n_dups,
                       "straddlers": len(strad), "tolerated": len(tolerated), "hll_collisions": len(hll_collisions), "views": results,
                       "run": run}, f, indent=1)
    log("%s: %d views, %d differing cells, %.1f s" % ("PASS" if total_bad == 0 else "FAIL", len(views),
                                                       total_bad, time.time() - t0))
    sys.exit(0 if total_bad == 0 else 1)


if __name__ == "__main__":
    main()
