/* test_agg.c - unit tests for lam_agg: fixed point, group keys, apply, merge (property), blobs, roll-up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lam_agg.h"
#include "lam_json.h"
#include "lam_mem.h"
#include "testlib.h"

static const char *k_views =
    "{\"views\":["
    "{\"name\":\"by_item\",\"where\":{\"type\":\"purchase\"},\"group_by\":[\"item\",\"geo.cc\"],"
    "\"granularity\":\"minute\",\"metrics\":[\"count\",\"sum:price\",\"min:price\",\"max:price\",\"distinct:user\"]},"
    "{\"name\":\"all_types\",\"group_by\":[\"type\"],\"granularity\":\"hour\",\"metrics\":[\"count\",\"sum:qty\"]},"
    "{\"name\":\"total\",\"granularity\":\"day\",\"metrics\":[\"distinct:user\",\"count\",\"max:qty\"]}"
    "]}";

static lam_views_t *views(void)
{
    char err[256];
    lam_views_t *vs = lam_views_parse(k_views, strlen(k_views), "test", err, sizeof(err));
    if (!vs)
        fail_msg("%s", err);
    return vs;
}

static void add(lam_agg_t *a, lam_event_t *ev, const char *json)
{
    char err[256];
    if (lam_event_parse(ev, json, strlen(json), 0, -1, err, sizeof(err)))
        fail_msg("%s: %s", json, err);
    lam_agg_add_event(a, ev);
}

static void test_micro(void **state)
{
    (void)state;
    struct {
        const char *in;
        int64_t micro;
        const char *out;
    } cases[] = {
        {"99.5", 99500000, "99.5"},
        {"19.99", 19990000, "19.99"},
        {"-3", -3000000, "-3"},
        {"0.000001", 1, "0.000001"},
        {"-0.000001", -1, "-0.000001"},
        {"0", 0, "0"},
        {"-0.0", 0, "0"},
        {"1e3", 1000000000, "1000"},
        {"0.0000025", 2, "0.000002"},
        {"0.0000035", 4, "0.000004"},
        {"123456.7890125", 123456789012, "123456.789012"},
        {"9223372036854.775807", INT64_MAX, "9223372036854.775807"},
        {"-9223372036854.775808", INT64_MIN, "-9223372036854.775808"},
    };
    for (size_t i = 0; i < LAM_ARRAY_SIZE(cases); i++) {
        int64_t m;
        char out[LAM_AGG_MICRO_MAXLEN];
        assert_int_equal(lam_agg_micro_parse(cases[i].in, strlen(cases[i].in), &m), 0);
        if (m != cases[i].micro)
            fail_msg("%s -> %lld", cases[i].in, (long long)m);
        size_t n = lam_agg_micro_format(m, out);
        assert_int_equal(n, strlen(cases[i].out));
        assert_string_equal(out, cases[i].out);
    }
    int64_t m;
    assert_int_equal(lam_agg_micro_parse("abc", 3, &m), -1);
    assert_int_equal(lam_agg_micro_parse("1e13", 4, &m), -1);
    /* format -> parse round trip */
    for (int i = 0; i < 100000; i++) {
        int64_t v = (int64_t)lam_test_rand();
        char out[LAM_AGG_MICRO_MAXLEN];
        size_t n = lam_agg_micro_format(v, out);
        assert_int_equal(lam_agg_micro_parse(out, n, &m), 0);
        assert_true(m == v);
    }
}

static void test_group_key(void **state)
{
    (void)state;
    char err[256];
    const char *doc = "{\"views\":[{\"name\":\"g\",\"group_by\":[\"s\",\"n\",\"b\",\"missing\"],\"granularity\":\"day\","
                      "\"metrics\":[\"count\"]}]}";
    lam_views_t *vs = lam_views_parse(doc, strlen(doc), "t", err, sizeof(err));
    assert_non_null(vs);
    const lam_view_t *v = lam_views_get(vs, 0);
    lam_event_t ev;
    lam_event_init(&ev);
    lam_buf_t key = LAM_BUF_INIT, scratch = LAM_BUF_INIT;
    const char *ev_json = "{\"type\":\"t\",\"s\":\"a,\\\"]b\\n\\u0000\\u00e9[\",\"n\":-1.50,\"b\":false}";
    assert_int_equal(lam_event_parse(&ev, ev_json, strlen(ev_json), 0, -1, err, sizeof(err)), 0);
    lam_agg_group_key(v, &ev, &key);
    assert_string_equal(key.data, "[\"a,\\\"]b\\n\\u0000\xc3\xa9[\",-1.5,false,null]");
    lam_keyval_t kv[4];
    size_t n;
    assert_int_equal(lam_agg_key_decode(key.data, key.len, kv, 4, &n, &scratch), 0);
    assert_int_equal(n, 4);
    assert_int_equal(kv[0].type, LAM_VAL_STRING);
    assert_int_equal(kv[0].len, 10);
    assert_memory_equal(kv[0].val, "a,\"]b\n\0\xc3\xa9[", 10);
    assert_int_equal(kv[1].type, LAM_VAL_NUMBER);
    assert_memory_equal(kv[1].val, "-1.5", 4);
    assert_int_equal(kv[2].type, LAM_VAL_FALSE);
    assert_int_equal(kv[3].type, LAM_VAL_NULL);
    assert_int_equal(lam_agg_key_decode(key.data, key.len, kv, 3, &n, &scratch), -1); /* too many */
    assert_int_equal(lam_agg_key_decode("[1", 2, kv, 4, &n, &scratch), -1);
    assert_int_equal(lam_agg_key_decode("[{}]", 4, kv, 4, &n, &scratch), -1);
    assert_int_equal(lam_agg_key_decode("[] x", 4, kv, 4, &n, &scratch), -1);
    assert_int_equal(lam_agg_key_decode("[]", 2, kv, 4, &n, &scratch), 0);
    assert_int_equal(n, 0);
    /* speed-layer helper */
    int64_t bts;
    lam_buf_clear(&key);
    assert_int_equal(lam_agg_event_cell(v, &ev, &bts, &key), 1);
    assert_int_equal(bts, 0);
    /* string "1" and number 1 are different keys; absent and null are the same */
    const char *e2 = "{\"type\":\"t\",\"s\":\"1\",\"n\":null}";
    lam_event_parse(&ev, e2, strlen(e2), 0, -1, err, sizeof(err));
    lam_buf_clear(&key);
    lam_agg_group_key(v, &ev, &key);
    assert_string_equal(key.data, "[\"1\",null,null,null]");
    lam_event_free(&ev);
    lam_buf_free(&key);
    lam_buf_free(&scratch);
    lam_views_free(vs);
}

static lam_cell_t *cell(lam_agg_t *a, size_t view, int64_t ts, const char *key)
{
    lam_cell_t *c = lam_agg_find(a, view, ts, key, strlen(key));
    if (!c)
        fail_msg("no cell %zu/%lld/%s", view, (long long)ts, key);
    return c;
}

static void test_apply(void **state)
{
    (void)state;
    lam_views_t *vs = views();
    lam_agg_t *a = lam_agg_new(vs);
    lam_event_t ev;
    lam_event_init(&ev);
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":61000,\"item\":\"sword\",\"geo\":{\"cc\":\"TH\"},\"price\":19.99,"
                "\"user\":\"u1\",\"qty\":2}");
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":119999,\"item\":\"sword\",\"geo\":{\"cc\":\"TH\"},\"price\":0.01,"
                "\"user\":\"u2\",\"qty\":1}");
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":62000,\"item\":\"sword\",\"geo\":{\"cc\":\"TH\"},\"price\":\"free\","
                "\"user\":\"u1\"}");
    add(a, &ev, "{\"type\":\"purchase\","
                "\"ts\":63000,\"item\":\"sword\",\"geo\":{\"cc\":\"TH\"},\"price\":null,\"user\":null}");
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":64000,\"item\":\"sword\",\"geo\":{\"cc\":\"TH\"},\"price\":true,"
                "\"user\":7}");
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":65000,\"item\":\"sword\",\"geo\":{\"cc\":\"TH\"},\"price\":1e20}");
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":120000,\"item\":\"shield\",\"price\":-5}");
    add(a, &ev, "{\"type\":\"page_view\",\"ts\":5000,\"user\":\"u1\"}");
    assert_int_equal(lam_agg_size(a), 2 + 2 + 1);
    lam_cell_t *c = cell(a, 0, 60000, "[\"sword\",\"TH\"]");
    assert_int_equal(lam_cell_count(c), 6);
    int64_t m;
    assert_int_equal(lam_cell_sum(c, 1, &m), LAM_CELL_VALUE);
    assert_int_equal(m, 20000000); /* 19.99 + 0.01 exactly */
    assert_int_equal(lam_cell_min(c, 2, &m), LAM_CELL_VALUE);
    assert_int_equal(m, 10000);
    assert_int_equal(lam_cell_max(c, 3, &m), LAM_CELL_VALUE);
    assert_int_equal(m, 19990000);
    assert_int_equal(lam_hll_count(lam_cell_hll(c, 4)), 3); /* u1, u2, 7 */
    /* "free", true and 1e20 were skipped (x3 metrics); null/absent do not count as skipped */
    assert_int_equal(lam_agg_skipped(a, 0, 1), 3);
    assert_int_equal(lam_agg_skipped(a, 0, 2), 3);
    assert_int_equal(lam_agg_skipped(a, 0, 3), 3);
    assert_int_equal(lam_agg_skipped(a, 0, 0), 0);
    assert_int_equal(lam_agg_skipped(a, 9, 0), 0);
    lam_buf_t out = LAM_BUF_INIT;
    for (size_t i = 0; i < 5; i++) {
        lam_cell_append_metric_json(lam_views_get(vs, 0), c, i, &out);
        lam_buf_append_char(&out, ' ');
    }
    assert_string_equal(out.data, "6 20 0.01 19.99 3 ");
    c = cell(a, 0, 120000, "[\"shield\",null]");
    assert_int_equal(lam_cell_count(c), 1);
    assert_int_equal(lam_cell_sum(c, 1, &m), LAM_CELL_VALUE);
    assert_int_equal(m, -5000000);
    assert_null(lam_cell_hll(c, 4));
    lam_buf_clear(&out);
    lam_cell_append_metric_json(lam_views_get(vs, 0), c, 4, &out);
    assert_string_equal(out.data, "0");
    c = cell(a, 1, 0, "[\"purchase\"]");
    assert_int_equal(lam_cell_count(c), 7);
    assert_int_equal(lam_cell_sum(c, 1, &m), LAM_CELL_VALUE);
    assert_int_equal(m, 3000000);
    c = cell(a, 1, 0, "[\"page_view\"]");
    assert_int_equal(lam_cell_sum(c, 1, &m), LAM_CELL_EMPTY);
    lam_buf_clear(&out);
    lam_cell_append_metric_json(lam_views_get(vs, 1), c, 1, &out);
    assert_string_equal(out.data, "null");
    c = cell(a, 2, 0, "[]");
    assert_int_equal(lam_cell_count(c), 8);
    assert_int_equal(lam_hll_count(lam_cell_hll(c, 0)), 3);
    size_t kl;
    assert_memory_equal(lam_cell_key(c, &kl), "[]", 2);
    assert_int_equal(kl, 2);
    assert_int_equal(lam_cell_view(c), 2);
    assert_int_equal(lam_cell_ts(c), 0);
    /* iteration sees every cell once */
    size_t it = 0, n = 0;
    while (lam_agg_next(a, &it))
        n++;
    assert_int_equal(n, lam_agg_size(a));
    /* reset and reuse */
    lam_agg_reset(a);
    assert_int_equal(lam_agg_size(a), 0);
    assert_int_equal(lam_agg_skipped(a, 0, 1), 0);
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":61000,\"item\":\"x\",\"price\":1}");
    assert_int_equal(lam_agg_size(a), 3);
    lam_buf_free(&out);
    lam_event_free(&ev);
    lam_agg_free(a);
    lam_agg_free(NULL);
    lam_views_free(vs);
}

static void test_overflow(void **state)
{
    (void)state;
    lam_views_t *vs = views();
    lam_agg_t *a = lam_agg_new(vs), *b = lam_agg_new(vs), *c2 = lam_agg_new(vs);
    lam_event_t ev;
    lam_event_init(&ev);
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":0,\"item\":\"x\",\"price\":9000000000000}");
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":0,\"item\":\"x\",\"price\":9000000000000}");
    add(b, &ev, "{\"type\":\"purchase\",\"ts\":0,\"item\":\"x\",\"price\":1}");
    lam_cell_t *c = cell(a, 0, 0, "[\"x\",null]");
    int64_t m;
    assert_int_equal(lam_cell_sum(c, 1, &m), LAM_CELL_OVERFLOW);
    assert_int_equal(lam_cell_max(c, 3, &m), LAM_CELL_VALUE);
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":0,\"item\":\"x\",\"price\":-9000000000000}");
    assert_int_equal(lam_cell_sum(cell(a, 0, 0, "[\"x\",null]"), 1, &m), LAM_CELL_OVERFLOW); /* sticky */
    /* survives merge in both directions and serialization */
    assert_int_equal(lam_agg_merge(b, a), 0);
    assert_int_equal(lam_cell_sum(cell(b, 0, 0, "[\"x\",null]"), 1, &m), LAM_CELL_OVERFLOW);
    lam_buf_t blob = LAM_BUF_INIT;
    lam_cell_serialize(lam_views_get(vs, 0), cell(b, 0, 0, "[\"x\",null]"), &blob);
    char err[128];
    assert_int_equal(lam_agg_merge_blob(c2, 0, 0, "[\"x\",null]", 10, blob.data, blob.len, err, sizeof(err)), 0);
    assert_int_equal(lam_cell_sum(cell(c2, 0, 0, "[\"x\",null]"), 1, &m), LAM_CELL_OVERFLOW);
    lam_buf_t out = LAM_BUF_INIT;
    lam_cell_append_metric_json(lam_views_get(vs, 0), cell(c2, 0, 0, "[\"x\",null]"), 1, &out);
    assert_string_equal(out.data, "null");
    assert_int_equal(lam_agg_merge(a, a), -1);
    lam_buf_free(&out);
    lam_buf_free(&blob);
    lam_event_free(&ev);
    lam_agg_free(a);
    lam_agg_free(b);
    lam_agg_free(c2);
    lam_views_free(vs);
}

/* Random clickstream-ish events. */
static void rand_event(lam_buf_t *b)
{
    static const char *types[] = {"purchase", "purchase", "page_view", "signup"};
    static const char *items[] = {"sword", "shield", "a\\\"b", "\\u0000", "\xc3\xa9"};
    lam_buf_clear(b);
    lam_buf_printf(b, "{\"type\":\"%s\",\"ts\":%llu", types[lam_test_rand() % 4],
                   lam_test_rand() % (3ULL * 86400000));
    if (lam_test_rand() % 8)
        lam_buf_printf(b, ",\"item\":\"%s\"", items[lam_test_rand() % 5]);
    if (lam_test_rand() % 3)
        lam_buf_printf(b, ",\"geo\":{\"cc\":\"%c%c\"}", (char)('A' + lam_test_rand() % 3), 'X');
    switch (lam_test_rand() % 6) {
    case 0: break;
    case 1: lam_buf_append_str(b, ",\"price\":\"n/a\""); break;
    case 2: lam_buf_printf(b, ",\"price\":-%llu.%02llu", lam_test_rand() % 100, lam_test_rand() % 100); break;
    default: lam_buf_printf(b, ",\"price\":%llu.%03llu", lam_test_rand() % 1000, lam_test_rand() % 1000); break;
    }
    if (lam_test_rand() % 4)
        lam_buf_printf(b, ",\"user\":\"u%llu\"", lam_test_rand() % 3000);
    if (lam_test_rand() % 2)
        lam_buf_printf(b, ",\"qty\":%llu", lam_test_rand() % 5);
    lam_buf_append_char(b, '}');
}

static void assert_aggs_equal(const lam_views_t *vs, const lam_agg_t *x, const lam_agg_t *y, unsigned long long seed)
{
    if (lam_agg_size(x) != lam_agg_size(y))
        fail_msg("seed %llu: %zu cells vs %zu", seed, lam_agg_size(x), lam_agg_size(y));
    size_t it = 0;
    lam_cell_t *c;
    while ((c = lam_agg_next(x, &it))) {
        size_t kl;
        const char *k = lam_cell_key(c, &kl);
        lam_cell_t *d = lam_agg_find(y, lam_cell_view(c), lam_cell_ts(c), k, kl);
        if (!d)
            fail_msg("seed %llu: cell %.*s missing", seed, (int)kl, k);
        if (!lam_cell_equal(lam_views_get(vs, lam_cell_view(c)), c, d))
            fail_msg("seed %llu: cell %zu/%lld/%.*s differs", seed, lam_cell_view(c), (long long)lam_cell_ts(c),
                     (int)kl, k);
    }
    for (size_t v = 0; v < lam_views_count(vs); v++)
        for (size_t m = 0; m < lam_views_get(vs, v)->nmetrics; m++)
            assert_int_equal(lam_agg_skipped(x, v, m), lam_agg_skipped(y, v, m));
}

/* merge(apply(part_i)) in random order == apply(all), for random splits. */
static void test_merge_property(void **state)
{
    (void)state;
    unsigned long long seed = lam_test_seed();
    lam_views_t *vs = views();
    lam_event_t ev;
    lam_event_init(&ev);
    lam_buf_t b = LAM_BUF_INIT;
    char err[256];
    for (int round = 0; round < 12; round++) {
        size_t nev = 500 + lam_test_rand() % 5000, k = 1 + lam_test_rand() % 7;
        lam_agg_t *all = lam_agg_new(vs), *parts[8], *merged = lam_agg_new(vs);
        for (size_t i = 0; i < k; i++)
            parts[i] = lam_agg_new(vs);
        for (size_t i = 0; i < nev; i++) {
            rand_event(&b);
            if (lam_event_parse(&ev, b.data, b.len, 0, -1, err, sizeof(err)))
                fail_msg("seed %llu: %s: %s", seed, b.data, err);
            lam_agg_add_event(all, &ev);
            lam_agg_add_event(parts[lam_test_rand() % k], &ev);
        }
        /* merge in a random order, sometimes through an intermediate (associativity) */
        size_t order[8];
        for (size_t i = 0; i < k; i++)
            order[i] = i;
        for (size_t i = k; i > 1; i--) {
            size_t j = lam_test_rand() % i, t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        if (k >= 3 && lam_test_rand() % 2) {
            assert_int_equal(lam_agg_merge(parts[order[1]], parts[order[2]]), 0);
            lam_agg_reset(parts[order[2]]);
        }
        for (size_t i = 0; i < k; i++)
            assert_int_equal(lam_agg_merge(merged, parts[order[i]]), 0);
        /* empty cells created by reset parts are impossible: reset drops cells */
        assert_aggs_equal(vs, all, merged, seed);
        assert_aggs_equal(vs, merged, all, seed);
        /* blobs: serialize every cell of all, load into a fresh agg -> equal */
        lam_agg_t *loaded = lam_agg_new(vs);
        size_t it = 0;
        lam_cell_t *c;
        lam_buf_t blob = LAM_BUF_INIT;
        while ((c = lam_agg_next(all, &it))) {
            lam_buf_clear(&blob);
            const lam_view_t *v = lam_views_get(vs, lam_cell_view(c));
            lam_cell_serialize(v, c, &blob);
            size_t kl;
            const char *key = lam_cell_key(c, &kl);
            if (lam_agg_merge_blob(loaded, lam_cell_view(c), lam_cell_ts(c), key, kl, blob.data, blob.len, err,
                                   sizeof(err)))
                fail_msg("seed %llu: %s", seed, err);
        }
        it = 0;
        while ((c = lam_agg_next(all, &it))) {
            size_t kl;
            const char *key = lam_cell_key(c, &kl);
            lam_cell_t *d = lam_agg_find(loaded, lam_cell_view(c), lam_cell_ts(c), key, kl);
            assert_non_null(d);
            assert_true(lam_cell_equal(lam_views_get(vs, lam_cell_view(c)), c, d));
        }
        lam_buf_free(&blob);
        lam_agg_free(loaded);
        for (size_t i = 0; i < k; i++)
            lam_agg_free(parts[i]);
        lam_agg_free(all);
        lam_agg_free(merged);
    }
    lam_buf_free(&b);
    lam_event_free(&ev);
    lam_views_free(vs);
}

/*
 * Rebuild every cell of an agg from the values the speed layer keeps in Redis (count, each
 * sum/min/max, each HLL as a Redis string) with lam_agg_merge_rt / lam_agg_merge_hll_redis:
 * the result must equal the original cell by cell, in two halves merged (partial states).
 */
static void test_merge_rt_rebuilds_cells(void **state)
{
    (void)state;
    lam_views_t *vs = views();
    lam_agg_t *a = lam_agg_new(vs), *r = lam_agg_new(vs);
    lam_event_t ev;
    lam_event_init(&ev);
    lam_buf_t b = LAM_BUF_INIT, hll = LAM_BUF_INIT;
    char err[256];
    for (int i = 0; i < 3000; i++) {
        rand_event(&b);
        if (lam_event_parse(&ev, b.data, b.len, 0, -1, err, sizeof(err)))
            fail_msg("%s: %s", b.data, err);
        lam_agg_add_event(a, &ev);
    }
    size_t it = 0, ncells = 0;
    for (lam_cell_t *c; (c = lam_agg_next(a, &it));) {
        size_t vi = lam_cell_view(c), klen;
        const lam_view_t *v = lam_views_get(vs, vi);
        const char *key = lam_cell_key(c, &klen);
        int64_t ts = lam_cell_ts(c);
        /* the count in two parts, as two epochs would hold it */
        assert_int_equal(lam_agg_merge_rt(r, vi, ts, key, klen, 0, LAM_CELL_VALUE, lam_cell_count(c) / 2), 0);
        assert_int_equal(lam_agg_merge_rt(r, vi, ts, key, klen, 0, LAM_CELL_VALUE, lam_cell_count(c) - lam_cell_count(c) / 2), 0);
        for (size_t m = 0; m < v->nmetrics; m++) {
            int64_t micro;
            lam_cell_status_t st;
            switch (v->metrics[m].kind) {
            case LAM_METRIC_SUM: st = lam_cell_sum(c, m, &micro); break;
            case LAM_METRIC_MIN: st = lam_cell_min(c, m, &micro); break;
            case LAM_METRIC_MAX: st = lam_cell_max(c, m, &micro); break;
            case LAM_METRIC_DISTINCT:
                if (lam_cell_hll(c, m)) {
                    lam_buf_clear(&hll);
                    lam_hll_to_redis(lam_cell_hll(c, m), &hll);
                    assert_int_equal(lam_agg_merge_hll_redis(r, vi, ts, key, klen, m, hll.data, hll.len, err, sizeof(err)), 0);
                }
                continue;
            default:
                /* a count metric has no slot of its own */
                assert_int_equal(lam_agg_merge_rt(r, vi, ts, key, klen, m + 1, LAM_CELL_VALUE, 1), -1);
                continue;
            }
            if (st != LAM_CELL_EMPTY)
                assert_int_equal(lam_agg_merge_rt(r, vi, ts, key, klen, m + 1, st, micro), 0);
        }
        assert_non_null(lam_agg_find(r, vi, ts, key, klen));
        if (!lam_cell_equal(v, c, lam_agg_find(r, vi, ts, key, klen)))
            fail_msg("cell %zu of view %s differs after the rebuild", ncells, v->name);
        ncells++;
    }
    assert_true(ncells > 50);
    assert_int_equal(lam_agg_size(r), ncells);
    /* an overflowed sum stays overflowed; bad indexes and corrupt HLLs change nothing */
    const char k1[] = "[\"x\",null]";
    assert_int_equal(lam_agg_merge_rt(r, 0, 0, k1, sizeof(k1) - 1, 2, LAM_CELL_VALUE, 5), 0);
    assert_int_equal(lam_agg_merge_rt(r, 0, 0, k1, sizeof(k1) - 1, 2, LAM_CELL_OVERFLOW, 0), 0);
    assert_int_equal(lam_agg_merge_rt(r, 0, 0, k1, sizeof(k1) - 1, 2, LAM_CELL_VALUE, 7), 0);
    int64_t m;
    assert_int_equal(lam_cell_sum(lam_agg_find(r, 0, 0, k1, sizeof(k1) - 1), 1, &m), LAM_CELL_OVERFLOW);
    size_t before = lam_agg_size(r);
    assert_int_equal(lam_agg_merge_rt(r, 0, 1, k1, sizeof(k1) - 1, 99, LAM_CELL_VALUE, 1), -1);
    assert_int_equal(lam_agg_merge_rt(r, 0, 1, k1, sizeof(k1) - 1, 3, LAM_CELL_OVERFLOW, 1), -1); /* min */
    assert_int_equal(lam_agg_merge_hll_redis(r, 0, 1, k1, sizeof(k1) - 1, 4, "HYLLjunk", 8, err, sizeof(err)), -1);
    assert_int_equal(lam_agg_merge_hll_redis(r, 0, 1, k1, sizeof(k1) - 1, 1, hll.data, hll.len, err, sizeof(err)), -1);
    assert_int_equal(lam_agg_size(r), before);
    lam_buf_free(&b);
    lam_buf_free(&hll);
    lam_event_free(&ev);
    lam_agg_free(a);
    lam_agg_free(r);
    lam_views_free(vs);
}

static void test_blob_errors(void **state)
{
    (void)state;
    lam_views_t *vs = views();
    lam_agg_t *a = lam_agg_new(vs), *dst = lam_agg_new(vs);
    lam_event_t ev;
    lam_event_init(&ev);
    add(a, &ev, "{\"type\":\"purchase\",\"ts\":0,\"item\":\"x\",\"price\":1,\"user\":\"u\"}");
    lam_buf_t blob = LAM_BUF_INIT;
    lam_cell_serialize(lam_views_get(vs, 0), cell(a, 0, 0, "[\"x\",null]"), &blob);
    char err[128];
    for (size_t cut = 0; cut < blob.len; cut++)
        assert_int_equal(lam_agg_merge_blob(dst, 0, 0, "k", 1, blob.data, cut, err, sizeof(err)), -1);
    assert_int_equal(lam_agg_merge_blob(dst, 1, 0, "k", 1, blob.data, blob.len, err, sizeof(err)), -1);
    assert_string_equal(err, "cell blob: bad header or metric count");
    assert_int_equal(lam_agg_merge_blob(dst, 7, 0, "k", 1, blob.data, blob.len, err, sizeof(err)), -1);
    lam_buf_append_char(&blob, 0);
    assert_int_equal(lam_agg_merge_blob(dst, 0, 0, "k", 1, blob.data, blob.len, err, sizeof(err)), -1);
    assert_string_equal(err, "cell blob: trailing bytes");
    assert_int_equal(lam_agg_size(dst), 0); /* nothing half-applied */
    lam_buf_free(&blob);
    lam_event_free(&ev);
    lam_agg_free(a);
    lam_agg_free(dst);
    lam_views_free(vs);
}

static void test_rollup(void **state)
{
    (void)state;
    lam_views_t *vs = views();
    lam_agg_t *a = lam_agg_new(vs);
    lam_event_t ev;
    lam_event_init(&ev);
    /* 2024-01-03 (Wed) 10:15, 2024-01-07 (Sun) 23:59, 2024-01-08 (Mon) 00:00, 2024-02-01 */
    const char *ts[] = {"2024-01-03T10:15:00Z", "2024-01-07T23:59:59Z", "2024-01-08T00:00:00Z", "2024-02-01T00:00:00Z"};
    char buf[256];
    for (size_t i = 0; i < 4; i++) {
        snprintf(buf, sizeof(buf), "{\"type\":\"purchase\",\"ts\":\"%s\",\"item\":\"x\",\"price\":%zu}", ts[i], i + 1);
        add(a, &ev, buf);
    }
    struct {
        lam_gran_t g;
        size_t cells;
    } cases[] = {{LAM_GRAN_MINUTE, 4}, {LAM_GRAN_HOUR, 4}, {LAM_GRAN_DAY, 4},
                 {LAM_GRAN_WEEK, 3},   {LAM_GRAN_MONTH, 2}, {LAM_GRAN_ALL, 1}};
    char err[128];
    for (size_t i = 0; i < LAM_ARRAY_SIZE(cases); i++) {
        lam_agg_t *r = lam_agg_new(vs);
        assert_int_equal(lam_agg_rollup(r, a, 0, cases[i].g, err, sizeof(err)), 0);
        assert_int_equal(lam_agg_size(r), cases[i].cells);
        int64_t total = 0;
        size_t it = 0;
        lam_cell_t *c;
        while ((c = lam_agg_next(r, &it))) {
            total += lam_cell_count(c);
            assert_int_equal(lam_cell_ts(c), lam_time_floor(lam_cell_ts(c), cases[i].g));
        }
        assert_int_equal(total, 4);
        if (cases[i].g == LAM_GRAN_WEEK) {
            int64_t mon;
            lam_time_parse_rfc3339("2024-01-01T00:00:00Z", 20, &mon, err, sizeof(err));
            lam_cell_t *c0 = cell(r, 0, mon, "[\"x\",null]");
            assert_int_equal(lam_cell_count(c0), 2);
            int64_t m;
            assert_int_equal(lam_cell_sum(c0, 1, &m), LAM_CELL_VALUE);
            assert_int_equal(m, 3000000);
        }
        if (cases[i].g == LAM_GRAN_ALL) {
            int64_t m;
            lam_cell_t *c0 = cell(r, 0, 0, "[\"x\",null]");
            assert_int_equal(lam_cell_max(c0, 3, &m), LAM_CELL_VALUE);
            assert_int_equal(m, 4000000);
        }
        lam_agg_free(r);
    }
    lam_agg_t *r = lam_agg_new(vs);
    assert_int_equal(lam_agg_rollup(r, a, 1, LAM_GRAN_MINUTE, err, sizeof(err)), -1);
    assert_string_equal(err, "granularity: minute is finer than view \"all_types\" (hour)");
    assert_int_equal(lam_agg_rollup(a, a, 0, LAM_GRAN_DAY, err, sizeof(err)), -1);
    lam_agg_free(r);
    lam_event_free(&ev);
    lam_agg_free(a);
    lam_views_free(vs);
}

/* Memory is bounded by cells, not events. */
static void test_memory_bounded(void **state)
{
    (void)state;
    lam_views_t *vs = views();
    lam_agg_t *a = lam_agg_new(vs);
    lam_event_t ev;
    lam_event_init(&ev);
    lam_buf_t b = LAM_BUF_INIT;
    size_t mem = 0;
    for (int i = 0; i < 300000; i++) {
        lam_buf_clear(&b);
        lam_buf_printf(&b, "{\"type\":\"purchase\",\"ts\":%d,\"item\":\"i%d\",\"price\":1,\"user\":\"u%d\"}",
                       i % 1000, i % 10, i % 50);
        char err[128];
        assert_int_equal(lam_event_parse(&ev, b.data, b.len, 0, -1, err, sizeof(err)), 0);
        lam_agg_add_event(a, &ev);
        if (i == 100000)
            mem = lam_agg_memory(a);
    }
    assert_int_equal(lam_agg_size(a), 10 + 1 + 1);
    assert_int_equal(lam_agg_memory(a), mem);
    lam_buf_free(&b);
    lam_event_free(&ev);
    lam_agg_free(a);
    lam_views_free(vs);
}

/* Reference group key: every value through the general JSON writer. */
static void ref_key(const lam_view_t *v, const lam_event_t *ev, lam_buf_t *out)
{
    lam_buf_append_char(out, '[');
    for (size_t i = 0; i < v->ngroup; i++) {
        const lam_field_t *f = lam_event_get(ev, v->group_by[i].name, v->group_by[i].len);
        if (i)
            lam_buf_append_char(out, ',');
        if (!f || f->type == LAM_VAL_NULL)
            lam_buf_append_str(out, "null");
        else if (f->type == LAM_VAL_STRING)
            lam_json_append_string(out, f->val, f->val_len);
        else
            lam_buf_append(out, f->val, f->val_len);
    }
    lam_buf_append_char(out, ']');
}

/* One cell of the reference aggregation the apply tests check lam_agg_add_event against. */
typedef struct ref_cell {
    size_t view;
    int64_t ts;
    char key[128];
    size_t key_len;
    int64_t count, sum;
    lam_hll_t *h[4]; /* distinct metrics 0..3 */
} ref_cell_t;

/* The reference cell (view, ts, key) in ref[0..*nref), added (empty, with 4 HLLs) when new. */
static ref_cell_t *ref_get(ref_cell_t *ref, size_t *nref, size_t max, size_t view, int64_t ts, const lam_buf_t *key)
{
    size_t r = 0;
    while (r < *nref && !(ref[r].view == view && ref[r].ts == ts && ref[r].key_len == key->len &&
                          memcmp(ref[r].key, key->data, key->len) == 0))
        r++;
    if (r == *nref) {
        assert_true(*nref < max && key->len <= sizeof(ref[r].key));
        memset(&ref[r], 0, sizeof(ref[r]));
        ref[r].view = view;
        ref[r].ts = ts;
        memcpy(ref[r].key, key->data, key->len);
        ref[r].key_len = key->len;
        for (size_t h = 0; h < 4; h++)
            ref[r].h[h] = lam_hll_new();
        (*nref)++;
    }
    return &ref[r];
}

static void ref_free(ref_cell_t *ref, size_t nref)
{
    for (size_t r = 0; r < nref; r++)
        for (size_t h = 0; h < 4; h++)
            lam_hll_free(ref[r].h[h]);
}

/* A test's own part of the reference for one view the event falls in (key: lam_agg_event_cell's). */
typedef void ref_metrics_fn(const lam_view_t *v, const lam_event_t *ev, const lam_buf_t *key, ref_cell_t *rc);

/* ev into a (lam_agg_add_event) and into the reference: each view on its own through
   lam_agg_event_cell, its cell counted and handed to fn; both must match the same views. */
static void ref_apply(lam_agg_t *a, const lam_views_t *vs, const lam_event_t *ev, ref_cell_t *ref, size_t *nref,
                      size_t max, ref_metrics_fn *fn)
{
    lam_buf_t key = LAM_BUF_INIT;
    int matched = lam_agg_add_event(a, ev), rmatched = 0;
    for (size_t vi = 0; vi < lam_views_count(vs); vi++) {
        const lam_view_t *v = lam_views_get(vs, vi);
        int64_t ts;
        lam_buf_clear(&key);
        if (!lam_agg_event_cell(v, ev, &ts, &key))
            continue;
        rmatched++;
        ref_cell_t *rc = ref_get(ref, nref, max, vi, ts, &key);
        rc->count++;
        fn(v, ev, &key, rc);
    }
    lam_buf_free(&key);
    assert_int_equal(matched, rmatched);
}

/* test_apply_matches_reference's part: the group key against ref_key, HLLs of the distinct fields. */
static void ref_key_and_hlls(const lam_view_t *v, const lam_event_t *ev, const lam_buf_t *key, ref_cell_t *rc)
{
    lam_buf_t rkey = LAM_BUF_INIT;
    ref_key(v, ev, &rkey);
    if (key->len != rkey.len || memcmp(key->data, rkey.data, key->len) != 0)
        fail_msg("group key %s, reference %s", key->data, rkey.data);
    lam_buf_free(&rkey);
    for (size_t m = 0; m < v->nmetrics; m++) {
        const lam_field_t *f = lam_event_get(ev, v->metrics[m].field.name, v->metrics[m].field.len);
        if (v->metrics[m].kind == LAM_METRIC_DISTINCT && f && f->type != LAM_VAL_NULL)
            lam_hll_add(rc->h[m], f->val, f->val_len);
    }
}

/* test_apply_shared_where's part: the sum of every sum metric of the view (n, or the 70 f fields). */
static void ref_sums(const lam_view_t *v, const lam_event_t *ev, const lam_buf_t *key, ref_cell_t *rc)
{
    (void)key;
    for (size_t m = 0; m < v->nmetrics; m++) {
        const lam_field_t *f = lam_event_get(ev, v->metrics[m].field.name, v->metrics[m].field.len);
        if (v->metrics[m].kind == LAM_METRIC_SUM && f && f->type == LAM_VAL_NUMBER)
            rc->sum += f->micro;
    }
}

/* lam_agg_add_event against a straightforward reference: group keys, counts and HLL registers
   (six distinct metrics over five fields: more than the per-event hash cache holds). */
static void test_apply_matches_reference(void **state)
{
    (void)state;
    static const char *doc =
        "{\"views\":["
        "{\"name\":\"a\",\"group_by\":[\"s\",\"n\"],\"granularity\":\"hour\","
        "\"metrics\":[\"count\",\"distinct:u\",\"distinct:s\",\"distinct:n\"]},"
        "{\"name\":\"b\",\"where\":{\"type\":\"x\"},\"group_by\":[\"g.c\",\"b\",\"missing\"],"
        "\"granularity\":\"minute\",\"metrics\":[\"distinct:u\",\"distinct:v\",\"distinct:w\",\"count\"]},"
        "{\"name\":\"c\",\"granularity\":\"day\",\"metrics\":[\"distinct:w\",\"distinct:s\",\"distinct:v\"]}"
        "]}";
    static const char *strs[] = {"\"p\"", "\"q\\\"r\"", "\"\\u00e9\"", "\"\xc3\xa9\"", "\"t\\u0000\"", "\"\"",
                                 "\"a\\\\b\"", "\"long value with spaces\"", "null", "1", "2.50", "true"};
    char err[256];
    lam_views_t *vs = lam_views_parse(doc, strlen(doc), "t", err, sizeof(err));
    if (!vs)
        fail_msg("%s", err);
    lam_agg_t *a = lam_agg_new(vs);
    lam_event_t ev;
    lam_event_init(&ev);
    lam_buf_t in = LAM_BUF_INIT;
    enum { MAXREF = 4096 };
    static ref_cell_t ref[MAXREF];
    size_t nref = 0;
    for (int it = 0; it < 3000; it++) {
        lam_buf_clear(&in);
        lam_buf_printf(&in, "{\"type\":\"%s\",\"ts\":%d", lam_test_rand() % 3 ? "x" : "y",
                       (int)(lam_test_rand() % 7200000));
        const char *names[] = {"s", "n", "u", "v", "w", "b"};
        for (size_t k = 0; k < 6; k++)
            if (lam_test_rand() % 2) /* values of each field of their own, so HLLs differ by field */
                lam_buf_printf(&in, ",\"%s\":\"%s%u\"", names[k], names[k], (unsigned)(lam_test_rand() % 50));
            else if (lam_test_rand() % 3)
                lam_buf_printf(&in, ",\"%s\":%s", names[k], strs[lam_test_rand() % 12]);
        if (lam_test_rand() % 2)
            lam_buf_printf(&in, ",\"g\":{\"c\":%s}", strs[lam_test_rand() % 12]);
        lam_buf_append_char(&in, '}');
        if (lam_event_parse(&ev, in.data, in.len, 0, -1, err, sizeof(err)))
            fail_msg("%s: %s", in.data, err);
        ref_apply(a, vs, &ev, ref, &nref, MAXREF, ref_key_and_hlls);
    }
    assert_int_equal(lam_agg_size(a), nref);
    size_t compared = 0;
    for (size_t r = 0; r < nref; r++) {
        const lam_view_t *v = lam_views_get(vs, ref[r].view);
        lam_cell_t *c = lam_agg_find(a, ref[r].view, ref[r].ts, ref[r].key, ref[r].key_len);
        assert_non_null(c);
        assert_int_equal(lam_cell_count(c), ref[r].count);
        for (size_t m = 0; m < v->nmetrics; m++) {
            if (v->metrics[m].kind != LAM_METRIC_DISTINCT)
                continue;
            const lam_hll_t *h = lam_cell_hll(c, m);
            if (lam_hll_count(ref[r].h[m]) == 0)
                assert_true(!h || lam_hll_count(h) == 0);
            else if (++compared && (!h || !lam_hll_equal(h, ref[r].h[m])))
                fail_msg("view %zu metric %zu: HLL differs from the reference", ref[r].view, m);
        }
    }
    ref_free(ref, nref);
    print_message("%zu cells, %zu HLLs compared\n", nref, compared);
    lam_agg_free(a);
    lam_views_free(vs);
    lam_event_free(&ev);
    lam_buf_free(&in);
}

/*
 * The apply path resolves each field once per event, shares one where match between views with
 * the same clause, and hashes/compares keys a word at a time: check it against lam_agg_event_cell
 * (each view on its own) with shared and near-identical where clauses, key lengths around 8,
 * and more distinct field names (70 sums) than the per-event field cache holds.
 */
static void test_apply_shared_where(void **state)
{
    (void)state;
    lam_buf_t doc = LAM_BUF_INIT;
    lam_buf_append_str(&doc, "{\"views\":["
        "{\"name\":\"v0\",\"where\":{\"type\":\"x\"},\"group_by\":[\"s\"],\"granularity\":\"minute\",\"metrics\":[\"count\",\"sum:n\"]},"
        "{\"name\":\"v1\",\"where\":{\"type\":\"x\"},\"group_by\":[\"k\"],\"granularity\":\"hour\",\"metrics\":[\"count\"]},"
        "{\"name\":\"v2\",\"where\":{\"type\":[\"x\",\"y\"]},\"group_by\":[\"s\",\"k\"],\"granularity\":\"hour\",\"metrics\":[\"count\"]},"
        "{\"name\":\"v3\",\"where\":{\"type\":\"y\",\"s\":\"s1\"},\"granularity\":\"day\",\"metrics\":[\"count\",\"sum:n\"]},"
        "{\"name\":\"v4\",\"where\":{\"s\":\"s1\",\"type\":\"y\"},\"granularity\":\"day\",\"metrics\":[\"count\"]},"
        "{\"name\":\"v5\",\"where\":{\"type\":\"y\",\"s\":\"s2\"},\"granularity\":\"day\",\"metrics\":[\"count\"]},"
        "{\"name\":\"v6\",\"where\":{\"n\":null},\"group_by\":[\"type\"],\"granularity\":\"day\",\"metrics\":[\"count\"]},"
        "{\"name\":\"v7\",\"where\":{\"type\":\"x\"},\"group_by\":[\"s\"],\"granularity\":\"minute\",\"metrics\":[\"count\",\"sum:n\"]},"
        "{\"name\":\"wide\",\"group_by\":[\"k\"],\"granularity\":\"day\",\"metrics\":[\"count\"");
    for (int i = 0; i < 70; i++)
        lam_buf_printf(&doc, ",\"sum:f%d\"", i);
    lam_buf_append_str(&doc, "]}]}");
    char err[256];
    lam_views_t *vs = lam_views_parse(doc.data, doc.len, "t", err, sizeof(err));
    if (!vs)
        fail_msg("%s", err);
    assert_true(lam_view_where_equal(lam_views_get(vs, 0), lam_views_get(vs, 1)));
    assert_false(lam_view_where_equal(lam_views_get(vs, 0), lam_views_get(vs, 2)));
    assert_false(lam_view_where_equal(lam_views_get(vs, 3), lam_views_get(vs, 4))); /* order differs */
    assert_false(lam_view_where_equal(lam_views_get(vs, 3), lam_views_get(vs, 5)));
    lam_agg_t *a = lam_agg_new(vs);
    lam_event_t ev;
    lam_event_init(&ev);
    lam_buf_t in = LAM_BUF_INIT;
    enum { MAXREF = 8192 };
    static ref_cell_t ref[MAXREF];
    size_t nref = 0;
    static const char *keys[] = {"", "a", "abcdef", "abcdefg", "abcdefgh", "abcdefghi", "abcdefghijklmno",
                                 "abcdefghijklmnop", "abcdefghijklmnopq"};
    for (int it = 0; it < 4000; it++) {
        lam_buf_clear(&in);
        lam_buf_printf(&in, "{\"type\":\"%s\",\"ts\":%d,\"s\":\"s%u\",\"k\":\"%s\"", lam_test_rand() % 2 ? "x" : "y",
                       (int)(lam_test_rand() % 345600000) - 172800000, (unsigned)(lam_test_rand() % 3), keys[lam_test_rand() % 9]);
        if (lam_test_rand() % 4)
            lam_buf_printf(&in, ",\"n\":%u", (unsigned)(lam_test_rand() % 100));
        for (int i = 0; i < 70; i++)
            if (lam_test_rand() % 8 == 0)
                lam_buf_printf(&in, ",\"f%d\":%d", i, i + 1);
        lam_buf_append_char(&in, '}');
        if (lam_event_parse(&ev, in.data, in.len, 0, -1, err, sizeof(err)))
            fail_msg("%s: %s", in.data, err);
        ref_apply(a, vs, &ev, ref, &nref, MAXREF, ref_sums);
    }
    assert_int_equal(lam_agg_size(a), nref);
    for (size_t r = 0; r < nref; r++) {
        const lam_view_t *v = lam_views_get(vs, ref[r].view);
        lam_cell_t *c = lam_agg_find(a, ref[r].view, ref[r].ts, ref[r].key, ref[r].key_len);
        assert_non_null(c);
        assert_int_equal(lam_cell_count(c), ref[r].count);
        int64_t sum = 0;
        for (size_t m = 0; m < v->nmetrics; m++) {
            int64_t x;
            if (v->metrics[m].kind == LAM_METRIC_SUM && lam_cell_sum(c, m, &x) == LAM_CELL_VALUE)
                sum += x;
        }
        assert_int_equal(sum, ref[r].sum);
    }
    ref_free(ref, nref);
    /* 70 sums and more: too many names for a projection, so the batch parses these in full */
    assert_null(lam_agg_projection(a));
    lam_agg_free(a);
    lam_views_free(vs);
    lam_event_free(&ev);
    lam_buf_free(&in);
    lam_buf_free(&doc);
}

/*
 * The batch recompute parses records with lam_event_parse_projected (the views' fields only):
 * applying those events gives the same cells as applying the full parse, for records in
 * canonical form and for the ones the projected scan leaves to the full parse.
 */
/* lam_agg_pipe_* filter of the tests: keep sees each pushed event once, in push order, intact;
   it drops every fifth tag. */
typedef struct pipe_check {
    uint64_t next;  /* the tag keep expects next */
    int64_t ts[8];  /* ts of the events pushed and not yet seen, by tag % 8 */
} pipe_check_t;

static int keep_check(void *opaque, const lam_event_t *ev, uint64_t tag)
{
    pipe_check_t *pc = opaque;
    assert_int_equal(tag, pc->next);
    assert_int_equal(ev->ts_ms, pc->ts[tag % 8]);
    pc->next++;
    return tag % 5 != 0;
}

static void apply_projected_vs_full(lam_views_t *vs)
{
    char err[256];
    lam_agg_t *full = lam_agg_new(vs), *proj = lam_agg_new(vs);
    /* kept: lam_agg_add_event of the events the pipeline keeps; piped: the pipeline */
    lam_agg_t *kept = lam_agg_new(vs), *piped = lam_agg_new(vs);
    pipe_check_t pc = {0};
    uint64_t tag = 0;
    lam_agg_pipe_begin(piped, keep_check, &pc);
    const lam_event_proj_t *pj = lam_agg_projection(proj);
    assert_non_null(pj);
    lam_event_t ev, ep;
    lam_event_init(&ev);
    lam_event_init(&ep);
    lam_buf_t in = LAM_BUF_INIT, canon = LAM_BUF_INIT;
    static const char *types[] = {"page_view", "purchase", "add_to_cart", "signup", "login"};
    static const char *vals[] = {"\"a\"", "\"b\"", "\"\\u00e9\"", "\"\xc3\xa9\"", "null", "12.5", "true", "7", "\"q\\\"r\""};
    int taken = 0, total = 20000;
    /* twice: the second round after lam_agg_reset (which must forget every cell, also the last
       cell a view without group_by keeps) */
    for (int round = 0; round < 2; round++) {
    if (round) {
        lam_agg_reset(full);
        lam_agg_reset(proj);
        lam_agg_reset(kept);
        /* events in flight are dropped: push some first (kept by no filter) */
        lam_agg_pipe_begin(piped, NULL, NULL);
        for (int k = 0; k < 3; k++) {
            lam_event_t *pe = lam_agg_pipe_event(piped);
            static const char *login = "{\"type\":\"login\",\"user\":\"z\"}";
            if (lam_event_parse(pe, login, strlen(login), 0, -1, err, sizeof(err)))
                fail_msg("%s", err);
            lam_agg_pipe_push(piped, 0);
        }
        lam_agg_reset(piped);
        lam_agg_pipe_begin(piped, keep_check, &pc);
        pc.next = tag = 0;
        taken = 0;
    }
    for (int it = 0; it < total; it++) {
        lam_buf_clear(&in);
        lam_buf_printf(&in, "{\"type\":\"%s\",\"ts\":%d", types[lam_test_rand() % 5],
                       (int)(lam_test_rand() % 345600000));
        if (lam_test_rand() % 4)
            lam_buf_printf(&in, ",\"id\":\"id%u\"", (unsigned)(lam_test_rand() % 100000));
        static const char *names[] = {"url", "user", "item", "price", "qty", "plan", "latency_ms", "other"};
        for (size_t k = 0; k < 8; k++)
            if (lam_test_rand() % 3)
                lam_buf_printf(&in, ",\"%s\":%s", names[k], vals[lam_test_rand() % 9]);
            else if (lam_test_rand() % 2)
                lam_buf_printf(&in, ",\"%s\":\"%s%u\"", names[k], names[k], (unsigned)(lam_test_rand() % 40));
        if (lam_test_rand() % 2)
            lam_buf_printf(&in, ",\"geo\":{\"cc\":%s}", vals[lam_test_rand() % 9]);
        lam_buf_append_char(&in, '}');
        if (lam_event_parse(&ev, in.data, in.len, 0, -1, err, sizeof(err)))
            fail_msg("%s: %s", in.data, err);
        lam_buf_clear(&canon);
        lam_event_canonical(&ev, &canon);
        int m1 = lam_agg_add_event(full, &ev), m2;
        if (lam_event_parse_projected(&ep, canon.data, canon.len, pj)) {
            taken++;
            m2 = lam_agg_add_event(proj, &ep);
        } else {
            if (lam_event_parse(&ep, canon.data, canon.len, 0, -1, err, sizeof(err)))
                fail_msg("%s: %s", canon.data, err);
            m2 = lam_agg_add_event(proj, &ep);
        }
        assert_int_equal(m1, m2);
        /* the pipeline: parsed like the batch scan into its event; every 7th one not pushed (a
           record the scan skips), every fifth pushed one dropped by keep; drained now and then */
        lam_event_t *pe = lam_agg_pipe_event(piped);
        if (!lam_event_parse_projected(pe, canon.data, canon.len, lam_agg_projection(piped)) &&
            lam_event_parse(pe, canon.data, canon.len, 0, -1, err, sizeof(err)))
            fail_msg("%s: %s", canon.data, err);
        if (it % 7 == 3)
            continue;
        if (tag % 5 != 0)
            lam_agg_add_event(kept, &ev);
        pc.ts[tag % 8] = ev.ts_ms;
        lam_agg_pipe_push(piped, tag++);
        if (lam_test_rand() % 1000 == 0)
            lam_agg_pipe_drain(piped);
    }
    assert_true(taken > total / 4 && taken < total); /* both paths ran */
    assert_aggs_equal(vs, full, proj, 0);
    lam_agg_pipe_drain(piped);
    assert_int_equal(pc.next, tag);
    assert_aggs_equal(vs, piped, kept, 1);
    }
    print_message("%d events, %d by the projected scan, %zu cells\n", total, taken, lam_agg_size(full));
    lam_agg_free(full);
    lam_agg_free(proj);
    lam_agg_free(kept);
    lam_agg_free(piped);
    lam_views_free(vs);
    lam_event_free(&ev);
    lam_event_free(&ep);
    lam_buf_free(&in);
    lam_buf_free(&canon);
}

static void test_apply_projected(void **state)
{
    (void)state;
    char err[256];
    lam_views_t *vs = lam_views_load(lam_test_env("LAM_VIEWS", "shared/views.json"), err, sizeof(err));
    if (!vs)
        fail_msg("%s", err);
    apply_projected_vs_full(vs);
    /* the built-ins as view fields: where on type, group_by id and type, metrics over ts and id */
    static const char *doc =
        "{\"views\":["
        "{\"name\":\"a\",\"where\":{\"type\":[\"page_view\",\"login\"]},\"group_by\":[\"id\",\"url\"],"
        "\"granularity\":\"hour\",\"metrics\":[\"count\",\"max:ts\",\"distinct:id\"]},"
        "{\"name\":\"b\",\"group_by\":[\"type\",\"geo.cc\"],\"granularity\":\"day\","
        "\"metrics\":[\"min:ts\",\"sum:price\",\"distinct:user\"]},"
        /* nine where conditions: the ninth is looked up by name (lam_event_get on the projected event) */
        "{\"name\":\"c\",\"where\":{\"url\":[null,\"a\",\"b\",7,12.5,true,\"url1\",\"url2\",\"url3\"],"
        "\"user\":[null,\"a\",\"b\",7,12.5,true,\"user1\",\"user2\"],\"item\":[null,\"a\",\"b\",7,12.5,true],"
        "\"price\":[null,\"a\",\"b\",7,12.5,true],\"qty\":[null,\"a\",\"b\",7,12.5,true],"
        "\"plan\":[null,\"a\",\"b\",7,12.5,true],\"latency_ms\":[null,\"a\",\"b\",7,12.5,true],"
        "\"type\":[\"page_view\",\"login\",\"purchase\",\"add_to_cart\",\"signup\"],"
        "\"other\":[\"a\",\"b\",7,true,\"other1\",\"other2\"]},"
        "\"granularity\":\"day\",\"metrics\":[\"count\"]}]}";
    vs = lam_views_parse(doc, strlen(doc), "t", err, sizeof(err));
    if (!vs)
        fail_msg("%s", err);
    apply_projected_vs_full(vs);
}

/*
 * The pipeline queues distinct updates (register maxima) per HLL and applies them when a queue
 * fills and at the drain: the cells, serialized, equal lam_agg_add_event's, with queues filled
 * many times over (one keyless cell takes every event), HLLs that go dense (thousands of users
 * in a cell) and others that stay sparse; updates queued before lam_agg_reset are dropped with
 * the cells (their HLLs freed; applied later, they would land in new HLLs at the same addresses).
 */
static void test_pipe_deferred_hll(void **state)
{
    (void)state;
    char err[256];
    static const char *doc =
        "{\"views\":["
        "{\"name\":\"all\",\"granularity\":\"day\",\"metrics\":[\"count\",\"distinct:user\"]},"
        "{\"name\":\"by_item\",\"group_by\":[\"item\"],\"granularity\":\"hour\","
        "\"metrics\":[\"distinct:user\",\"sum:qty\",\"distinct:item\"]}]}";
    lam_views_t *vs = lam_views_parse(doc, strlen(doc), "t", err, sizeof(err));
    if (!vs)
        fail_msg("%s", err);
    lam_agg_t *ref = lam_agg_new(vs), *piped = lam_agg_new(vs);
    lam_event_t ev;
    lam_event_init(&ev);
    lam_buf_t in = LAM_BUF_INIT, b1 = LAM_BUF_INIT, b2 = LAM_BUF_INIT;
    for (int round = 0; round < 2; round++) {
        lam_agg_pipe_begin(piped, NULL, NULL);
        int n = round ? 60000 : 3000;
        for (int i = 0; i < n; i++) {
            lam_buf_clear(&in);
            /* items 0-2 take half the events from many users (dense), the others few users (sparse) */
            unsigned item = (unsigned)(lam_test_rand() % 80);
            item = item < 40 ? item : item % 3;
            unsigned user = (unsigned)(lam_test_rand() % (item < 3 ? 200000 : 300));
            lam_buf_printf(&in, "{\"type\":\"t\",\"ts\":%d,\"user\":\"u%u\",\"item\":\"i%u\",\"qty\":%d}",
                           (int)(lam_test_rand() % 7200000), user, item, i % 9);
            lam_event_t *pe = lam_agg_pipe_event(piped);
            if (lam_event_parse(pe, in.data, in.len, 0, -1, err, sizeof(err)) ||
                lam_event_parse(&ev, in.data, in.len, 0, -1, err, sizeof(err)))
                fail_msg("%s", err);
            lam_agg_pipe_push(piped, 0);
            if (round)
                lam_agg_add_event(ref, &ev);
        }
        if (!round) /* dropped: the queued updates with the cells and the events in flight */
            lam_agg_reset(piped);
    }
    lam_agg_pipe_drain(piped);
    assert_aggs_equal(vs, piped, ref, 0);
    size_t it = 0, dense = 0, sparse = 0;
    lam_cell_t *c;
    while ((c = lam_agg_next(ref, &it))) {
        size_t kl;
        const char *k = lam_cell_key(c, &kl);
        const lam_view_t *v = lam_views_get(vs, lam_cell_view(c));
        lam_cell_t *d = lam_agg_find(piped, lam_cell_view(c), lam_cell_ts(c), k, kl);
        lam_buf_clear(&b1);
        lam_buf_clear(&b2);
        lam_cell_serialize(v, c, &b1);
        lam_cell_serialize(v, d, &b2);
        assert_int_equal(b1.len, b2.len);
        assert_memory_equal(b1.data, b2.data, b1.len);
        const lam_hll_t *h = lam_cell_hll(c, lam_cell_view(c) ? 0 : 1);
        if (h)
            lam_hll_is_sparse(h) ? sparse++ : dense++;
    }
    print_message("%zu cells, distinct:user dense in %zu, sparse in %zu\n", lam_agg_size(ref), dense, sparse);
    assert_true(dense >= 3 && sparse >= 3);
    lam_agg_free(ref);
    lam_agg_free(piped);
    lam_views_free(vs);
    lam_event_free(&ev);
    lam_buf_free(&in);
    lam_buf_free(&b1);
    lam_buf_free(&b2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_micro),          cmocka_unit_test(test_group_key),
        cmocka_unit_test(test_apply_matches_reference), cmocka_unit_test(test_apply_shared_where),
        cmocka_unit_test(test_apply_projected), cmocka_unit_test(test_pipe_deferred_hll),
        cmocka_unit_test(test_apply),          cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_merge_property), cmocka_unit_test(test_blob_errors),
        cmocka_unit_test(test_merge_rt_rebuilds_cells),
        cmocka_unit_test(test_rollup),         cmocka_unit_test(test_memory_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
