#!/usr/bin/env python3
"""freshness.py - `make bench`: how long after ingest acknowledges an event it is visible via serving.

Run while background traffic flows (bench.sh runs loadgen at 10k events/s next to it). Every
1/RATE s a probe event with a unique url is POSTed to ingest; from the moment ingest answers 200
(acks=all: the event is in Kafka) two pollers query page_views_by_url?where.url=<that url> until
the group shows up: one on the serving the users see (its merged-answer cache on, default
LAM_SERVING_RESULT_MS: a poll may be answered by a cached answer up to that old), one on a
serving with the cache off (the pipeline's own freshness). Prints one JSON line:
{"probes", "lost", "cached": {"p50_ms", "p99_ms", "max_ms"}, "nocache": {...}}.

usage: freshness.py INGEST_ADDR SERVING_ADDR SERVING_NOCACHE_ADDR SECONDS [PROBES_PER_S]
"""
import http.client
import json
import sys
import threading
import time
import uuid

TIMEOUT_S = 10.0
POLL_S = 0.002


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def conn(addr):
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=5)


def visible(c, path):
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        return False
    return any(b["groups"] for b in json.loads(body)["buckets"])


def poll(addr, path, t_ack, out, key):
    c = conn(addr)
    while True:
        try:
            if visible(c, path):
                out[key] = (time.monotonic() - t_ack) * 1000.0
                return
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            c.close()
            c = conn(addr)
        if time.monotonic() - t_ack > TIMEOUT_S:
            return
        time.sleep(POLL_S)


def probe(ingest, serving, nocache, window, results, lock):
    url = "/bench-probe/" + uuid.uuid4().hex
    body = json.dumps({"type": "page_view", "url": url, "user": "bench-probe", "geo": {"cc": "ZZ"},
                       "latency_ms": 1})
    c = conn(ingest)
    c.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    t_ack = time.monotonic()
    c.close()
    if r.status != 200:
        with lock:
            results.append({"error": r.status})
        return
    path = "/v1/views/page_views_by_url?granularity=hour&from=%d&to=%d&where.url=%s" % (
        window[0], window[1], url)
    out = {}
    ts = [threading.Thread(target=poll, args=(a, path, t_ack, out, k))
          for a, k in ((serving, "cached"), (nocache, "nocache"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    with lock:
        results.append(out)


def main():
    ingest, serving, nocache, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
    now_ms = int(time.time() * 1000)
    window = (now_ms - 3600000, now_ms + 7200000)  # fixed for the run: only where.url varies
    results, lock, threads = [], threading.Lock(), []
    t_end = time.monotonic() + seconds
    next_t = time.monotonic()
    while time.monotonic() < t_end:
        t = threading.Thread(target=probe, args=(ingest, serving, nocache, window, results, lock))
        t.start()
        threads.append(t)
        next_t += 1.0 / rate
        time.sleep(max(0.0, next_t - time.monotonic()))
    for t in threads:
        t.join()
    summary = {"probes": len(results), "errors": sum(1 for r in results if "error" in r)}
    for k in ("cached", "nocache"):
        xs = [r[k] for r in results if k in r]
        summary["lost_" + k] = sum(1 for r in results if "error" not in r and k not in r)
        summary[k] = {"p50_ms": percentile(xs, 50), "p99_ms": percentile(xs, 99), "max_ms": max(xs) if xs else None}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
