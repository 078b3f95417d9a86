/* bench_parse.c - micro-benchmark: event parse, parse+apply with shared/views.json, and jansson. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef LAM_BENCH_JANSSON
#include <jansson.h>
#endif

#include "lam_agg.h"
#include "lam_event.h"
#include "lam_mem.h"
#include "lam_view.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Synthetic clickstream like the load generator: page_view 70%, add_to_cart 15%, purchase 8%, ... */
static void gen(lam_buf_t *b, int64_t ts)
{
    static const char *urls[] = {"/", "/shop", "/shop/swords", "/shop/shields", "/cart", "/checkout", "/help"};
    static const char *items[] = {"sword", "shield", "potion", "bow", "helmet", "boots"};
    static const char *cc[] = {"TH", "DE", "US", "FR", "JP", "BR"};
    static const char *dev[] = {"mobile", "desktop", "tablet"};
    unsigned r = (unsigned)(rnd() % 100);
    unsigned user = (unsigned)(rnd() % 50000);
    if (r < 70)
        lam_buf_printf(b, "{\"type\":\"page_view\",\"ts\":%lld,\"url\":\"%s\",\"user\":\"u%u\",\"session\":\"s%u\","
                          "\"referrer\":\"https://example.com/\",\"device\":\"%s\",\"geo\":{\"cc\":\"%s\"},"
                          "\"latency_ms\":%u}",
                       (long long)ts, urls[rnd() % 7], user, (unsigned)(rnd() % 100000), dev[rnd() % 3],
                       cc[rnd() % 6], (unsigned)(rnd() % 900));
    else if (r < 85)
        lam_buf_printf(b, "{\"type\":\"add_to_cart\",\"ts\":%lld,\"item\":\"%s\",\"price\":%u.%02u,\"qty\":%u,"
                          "\"user\":\"u%u\"}",
                       (long long)ts, items[rnd() % 6], (unsigned)(rnd() % 100), (unsigned)(rnd() % 100),
                       (unsigned)(1 + rnd() % 3), user);
    else if (r < 93)
        lam_buf_printf(b, "{\"type\":\"purchase\",\"ts\":%lld,\"item\":\"%s\",\"price\":%u.%02u,\"qty\":%u,"
                          "\"user\":\"u%u\"}",
                       (long long)ts, items[rnd() % 6], (unsigned)(rnd() % 100), (unsigned)(rnd() % 100),
                       (unsigned)(1 + rnd() % 3), user);
    else if (r < 97)
        lam_buf_printf(b, "{\"type\":\"signup\",\"ts\":%lld,\"user\":\"u%u\",\"plan\":\"%s\",\"geo\":{\"cc\":\"%s\"}}",
                       (long long)ts, user, rnd() % 2 ? "free" : "pro", cc[rnd() % 6]);
    else
        lam_buf_printf(b, "{\"type\":\"login\",\"ts\":%lld,\"user\":\"u%u\"}", (long long)ts, user);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    const char *views_path = argc > 2 ? argv[2] : "shared/views.json";
    char err[256];
    lam_views_t *vs = lam_views_load(views_path, err, sizeof(err));
    if (!vs) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    lam_buf_t data = LAM_BUF_INIT;
    size_t *offs = lam_malloc((n + 1) * sizeof(size_t));
    int64_t ts0 = 1700000000000LL;
    for (size_t i = 0; i < n; i++) {
        offs[i] = data.len;
        gen(&data, ts0 + (int64_t)(i * 7)); /* ~n*7 ms of traffic */
    }
    offs[n] = data.len;
    printf("events: %zu, %.1f bytes avg\n", n, (double)data.len / n);

    /* best of REPS runs: the numbers are for an idle core, other load only slows runs down */
    enum { REPS = 3 };
    lam_event_t ev;
    lam_event_init(&ev);
    double best = 1e9;
    for (int rep = 0; rep < REPS; rep++) {
        double t = now_s();
        for (size_t i = 0; i < n; i++)
            if (lam_event_parse(&ev, data.data + offs[i], offs[i + 1] - offs[i], ts0, -1, err, sizeof(err))) {
                fprintf(stderr, "parse: %s\n", err);
                return 1;
            }
        double dt = now_s() - t;
        best = dt < best ? dt : best;
    }
    printf("lam_event_parse:            %8.2f M events/s  %7.1f MB/s\n", n / best / 1e6, data.len / best / 1e6);

    /* canonical form (what ingest writes to Kafka): parse a chunk of events, then time only
       lam_event_canonical over the chunk */
    enum { CHUNK = 256 };
    lam_event_t *evs = lam_malloc(CHUNK * sizeof(lam_event_t));
    for (size_t k = 0; k < CHUNK; k++)
        lam_event_init(&evs[k]);
    lam_buf_t canon = LAM_BUF_INIT;
    size_t canon_bytes = 0;
    best = 1e9;
    for (int rep = 0; rep < REPS; rep++) {
        double ct = 0;
        canon_bytes = 0;
        for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
            size_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
            for (size_t k = 0; k < m; k++)
                if (lam_event_parse(&evs[k], data.data + offs[i0 + k], offs[i0 + k + 1] - offs[i0 + k], ts0, -1,
                                    err, sizeof(err)))
                    return 1;
            double t = now_s();
            for (size_t k = 0; k < m; k++) {
                lam_buf_clear(&canon);
                lam_event_canonical(&evs[k], &canon);
                canon_bytes += canon.len;
            }
            ct += now_s() - t;
        }
        best = ct < best ? ct : best;
    }
    printf("lam_event_canonical:        %8.2f M events/s  %7.1f MB/s\n", n / best / 1e6, canon_bytes / best / 1e6);
    for (size_t k = 0; k < CHUNK; k++)
        lam_event_free(&evs[k]);
    lam_free(evs);
    lam_buf_free(&canon);

    lam_agg_t *agg = lam_agg_new(vs);
    best = 1e9;
    for (int rep = 0; rep < REPS; rep++) {
        lam_agg_reset(agg);
        double t = now_s();
        for (size_t i = 0; i < n; i++) {
            lam_event_parse(&ev, data.data + offs[i], offs[i + 1] - offs[i], ts0, -1, err, sizeof(err));
            lam_agg_add_event(agg, &ev);
        }
        double dt = now_s() - t;
        best = dt < best ? dt : best;
    }
    printf("parse + lam_agg_add_event:  %8.2f M events/s  (%zu views, %zu cells, %.1f MB state)\n", n / best / 1e6,
           lam_views_count(vs), lam_agg_size(agg), lam_agg_memory(agg) / 1e6);

    /* the batch recompute's path: the same events in canonical form (as the master dataset holds
       them), read by the projected scan (the views' fields only; the full parse when it declines) */
    lam_buf_t cdata = LAM_BUF_INIT;
    size_t *coffs = lam_malloc((n + 1) * sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        coffs[i] = cdata.len;
        lam_event_parse(&ev, data.data + offs[i], offs[i + 1] - offs[i], ts0, -1, err, sizeof(err));
        lam_event_canonical(&ev, &cdata);
    }
    coffs[n] = cdata.len;
    const lam_event_proj_t *pj = lam_agg_projection(agg);
    best = 1e9;
    size_t taken = 0;
    for (int rep = 0; rep < REPS; rep++) {
        lam_agg_reset(agg);
        taken = 0;
        double t = now_s();
        for (size_t i = 0; i < n; i++) {
            const char *rec = cdata.data + coffs[i];
            size_t len = coffs[i + 1] - coffs[i];
            if (pj && lam_event_parse_projected(&ev, rec, len, pj))
                taken++;
            else
                lam_event_parse(&ev, rec, len, 0, -1, err, sizeof(err));
            lam_agg_add_event(agg, &ev);
        }
        double dt = now_s() - t;
        best = dt < best ? dt : best;
    }
    printf("projected scan + add_event: %8.2f M events/s  (canonical records, the batch path; %zu of %zu by the scan)\n",
           n / best / 1e6, taken, n);
    lam_buf_free(&cdata);
    lam_free(coffs);

#ifdef LAM_BENCH_JANSSON
    /* jansson is ~10x slower: a quarter of the events keeps `make bench` short, the rate is per event */
    size_t nj = n / 4 ? n / 4 : n;
    best = 1e9;
    for (int rep = 0; rep < REPS; rep++) {
        double t = now_s();
        for (size_t i = 0; i < nj; i++) {
            json_error_t je;
            json_t *root = json_loadb(data.data + offs[i], offs[i + 1] - offs[i], 0, &je);
            if (!root)
                return 1;
            json_decref(root);
        }
        double dt = now_s() - t;
        best = dt < best ? dt : best;
    }
    printf("jansson json_loadb+decref:  %8.2f M events/s  %7.1f MB/s\n", nj / best / 1e6,
           (double)offs[nj] / best / 1e6);
#endif
    lam_agg_free(agg);
    lam_event_free(&ev);
    lam_views_free(vs);
    lam_buf_free(&data);
    lam_free(offs);
    return 0;
}
