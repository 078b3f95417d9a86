/* fuzz_views.c - libFuzzer target: load a views file from bytes; if valid, apply fixed events. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lam_agg.h"
#include "lam_view.h"

static const char *k_events[] = {
    "{\"type\":\"purchase\",\"ts\":1700000000000,\"item\":\"sword\",\"price\":19.99,\"qty\":2,\"user\":\"u1\"}",
    "{\"type\":\"page_view\",\"ts\":1700000060000,\"url\":\"/\",\"user\":\"u2\",\"geo\":{\"cc\":\"TH\"},"
    "\"latency_ms\":120}",
    "{\"type\":\"signup\",\"ts\":-5,\"user\":7,\"plan\":null,\"price\":\"x\",\"a\":{\"b\":{\"c\":true}}}",
    "{\"type\":\"t\\u0000\",\"ts\":\"2001-01-01T00:00:00Z\",\"price\":9223372036854,\"qty\":1e300,"
    "\"item\":\"a\\\"b\\n\"}",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    lam_views_t *vs = lam_views_parse((const char *)data, size, "fuzz", err, sizeof(err));
    if (!vs) {
        if (strncmp(err, "fuzz: ", 6) != 0)
            abort();
        return 0;
    }
    /* rendering parses back to the same rendering */
    lam_buf_t r1 = LAM_BUF_INIT, r2 = LAM_BUF_INIT;
    lam_views_to_json(vs, &r1);
    lam_views_t *vs2 = lam_views_parse(r1.data, r1.len, "rendered", err, sizeof(err));
    if (!vs2)
        abort();
    lam_views_to_json(vs2, &r2);
    if (r1.len != r2.len || memcmp(r1.data, r2.data, r1.len) != 0)
        abort();
    lam_views_free(vs2);

    lam_agg_t *a = lam_agg_new(vs), *b = lam_agg_new(vs), *all = lam_agg_new(vs);
    lam_event_t ev;
    lam_event_init(&ev);
    for (size_t i = 0; i < sizeof(k_events) / sizeof(k_events[0]); i++) {
        if (lam_event_parse(&ev, k_events[i], strlen(k_events[i]), 1700000000000LL, -1, err, sizeof(err)))
            abort();
        lam_agg_add_event(i % 2 ? a : b, &ev);
        /* the shared apply path (field cache, where results shared between views) against each
           view on its own: the same views match and their cells exist */
        int matched = lam_agg_add_event(all, &ev), ref = 0;
        for (size_t vi = 0; vi < lam_views_count(vs); vi++) {
            int64_t ts;
            lam_buf_t k = LAM_BUF_INIT;
            if (lam_agg_event_cell(lam_views_get(vs, vi), &ev, &ts, &k)) {
                ref++;
                if (!lam_agg_find(all, vi, ts, k.data, k.len))
                    abort();
            }
            lam_buf_free(&k);
        }
        if (matched != ref)
            abort();
    }
    /* the pipelined apply (lam_agg_pipe_*, the batch recompute's) of the events three times over,
       more than it holds in flight, against lam_agg_add_event of the same */
    lam_agg_t *piped = lam_agg_new(vs), *thrice = lam_agg_new(vs);
    lam_agg_pipe_begin(piped, NULL, NULL);
    for (size_t i = 0; i < 3 * sizeof(k_events) / sizeof(k_events[0]); i++) {
        const char *e = k_events[i % (sizeof(k_events) / sizeof(k_events[0]))];
        lam_event_t *pe = lam_agg_pipe_event(piped);
        if (lam_event_parse(pe, e, strlen(e), 1700000000000LL, -1, err, sizeof(err)))
            abort();
        lam_agg_add_event(thrice, pe);
        lam_agg_pipe_push(piped, i);
    }
    lam_agg_pipe_drain(piped);
    if (lam_agg_size(piped) != lam_agg_size(thrice))
        abort();
    size_t pit = 0;
    lam_cell_t *pc;
    while ((pc = lam_agg_next(thrice, &pit))) {
        size_t kl;
        const char *k = lam_cell_key(pc, &kl);
        lam_cell_t *d = lam_agg_find(piped, lam_cell_view(pc), lam_cell_ts(pc), k, kl);
        if (!d || !lam_cell_equal(lam_views_get(vs, lam_cell_view(pc)), pc, d))
            abort();
    }
    uint64_t sk[2] = {0, 0}; /* the skipped counters, as one hash each */
    for (size_t v = 0; v < lam_views_count(vs); v++)
        for (size_t m = 0; m < lam_views_get(vs, v)->nmetrics; m++) {
            sk[0] = sk[0] * 1000003 + lam_agg_skipped(piped, v, m);
            sk[1] = sk[1] * 1000003 + lam_agg_skipped(thrice, v, m);
        }
    if (sk[0] != sk[1])
        abort();
    lam_agg_free(piped);
    lam_agg_free(thrice);

    lam_agg_merge(a, b);
    if (lam_agg_size(a) != lam_agg_size(all))
        abort();
    size_t it = 0;
    lam_cell_t *c;
    lam_buf_t blob = LAM_BUF_INIT, key = LAM_BUF_INIT;
    while ((c = lam_agg_next(all, &it))) {
        const lam_view_t *v = lam_views_get(vs, lam_cell_view(c));
        size_t kl;
        const char *k = lam_cell_key(c, &kl);
        lam_cell_t *d = lam_agg_find(a, lam_cell_view(c), lam_cell_ts(c), k, kl);
        if (!d || !lam_cell_equal(v, c, d))
            abort();
        lam_buf_clear(&blob);
        lam_cell_serialize(v, c, &blob);
        if (lam_agg_merge_blob(b, lam_cell_view(c), lam_cell_ts(c), k, kl, blob.data, blob.len, err, sizeof(err)))
            abort();
        lam_keyval_t vals[LAM_VIEW_GROUP_MAX];
        size_t n;
        if (lam_agg_key_decode(k, kl, vals, LAM_VIEW_GROUP_MAX, &n, &key) || n != v->ngroup)
            abort();
        for (size_t m = 0; m < v->nmetrics; m++)
            lam_cell_append_metric_json(v, c, m, &r2);
    }
    for (size_t v = 0; v < lam_views_count(vs); v++) {
        lam_agg_t *r = lam_agg_new(vs);
        lam_agg_rollup(r, all, v, LAM_GRAN_WEEK, err, sizeof(err));
        lam_agg_free(r);
    }
    lam_buf_free(&blob);
    lam_buf_free(&key);
    lam_buf_free(&r1);
    lam_buf_free(&r2);
    lam_event_free(&ev);
    lam_agg_free(a);
    lam_agg_free(b);
    lam_agg_free(all);
    lam_views_free(vs);
    return 0;
}
