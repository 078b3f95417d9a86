/* test_serving.c - serving's pure parts: where filters, bucket sources, top ranking, the answer cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* The units under test are compiled in directly (serving/ is a program, not a library). */
#include "../../serving/serving_query.c"
#include "../../serving/serving_results.c"

/* ---- stubs for what serving_query.c calls outside itself ---- */
int serving_reply_json(lam_http_req_t *req, unsigned status, const lam_buf_t *json)
{
    (void)req, (void)status, (void)json;
    return 0;
}
int serving_error(lam_http_req_t *req, unsigned status, const char *code, const char *fmt, ...)
{
    (void)req, (void)status, (void)code, (void)fmt;
    return -1;
}
int serving_unavailable(lam_http_req_t *req, const char *what, const char *detail)
{
    (void)req, (void)what, (void)detail;
    return -1;
}
int serving_get_only_or_reply(lam_http_req_t *req)
{
    (void)req;
    return 0;
}
static const lam_agg_t *stub_batch;
int serving_pg_batch_get(serving_ctx_t *ctx, serving_query_t *q, int64_t *run, int64_t *cut_at, char *err,
                         size_t errsz)
{
    (void)ctx, (void)q, (void)run, (void)cut_at, (void)err, (void)errsz;
    return -1;
}
static serving_bgroups_t *stub_groups;
const serving_bgroups_t *serving_pg_batch_groups(const serving_query_t *q)
{
    if (!q->batch)
        return NULL;
    if (!stub_groups)
        stub_groups = serving_bgroups_build(q->view, stub_batch);
    return stub_groups;
}
void serving_pg_batch_apply(serving_ctx_t *ctx, serving_query_t *q)
{
    (void)ctx, (void)q;
}
void serving_pg_batch_release(serving_ctx_t *ctx, serving_query_t *q)
{
    (void)ctx;
    q->batch = NULL;
}
int serving_redis_merge(serving_ctx_t *ctx, serving_query_t *q, int64_t run, int64_t *current, char *err,
                        size_t errsz)
{
    (void)ctx, (void)q, (void)run, (void)current, (void)err, (void)errsz;
    return -1;
}

static const char views_json[] =
    "{\"views\":[{\"name\":\"v\",\"group_by\":[\"item\",\"n\"],\"granularity\":\"hour\","
    "\"metrics\":[\"count\",\"sum:price\",\"max:price\",\"distinct:user\"]}]}";

static lam_views_t *load(void)
{
    char err[256];
    lam_views_t *vs = lam_views_parse(views_json, sizeof(views_json) - 1, "test", err, sizeof(err));
    assert_non_null(vs);
    return vs;
}

static void add_filter(serving_query_t *q, size_t pos, const char *csv)
{
    serving_filter_t *f = &q->filters[q->nfilters++];
    f->pos = pos;
    char *dup = lam_strdup(csv), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        f->vals = lam_realloc(f->vals, (f->nvals + 1) * sizeof(char *));
        f->vals[f->nvals++] = canonical_value(t, strlen(t));
    }
    lam_free(dup);
}

static int match(serving_query_t *q, const char *key)
{
    return serving_query_key_match(q, key, strlen(key));
}

static void test_where_filters(void **st)
{
    (void)st;
    lam_views_t *vs = load();
    serving_query_t q = {0};
    q.view = lam_views_get(vs, 0);
    assert_true(match(&q, "[\"a\",1]")); /* no filter: everything */
    add_filter(&q, 0, "a,caf\xc3\xa9");
    assert_true(match(&q, "[\"a\",1]"));
    assert_true(match(&q, "[\"caf\\u00e9\",1]")); /* escaped in the key, decoded for comparison */
    assert_false(match(&q, "[\"b\",1]"));
    assert_false(match(&q, "[null,1]"));
    add_filter(&q, 1, "5.0,null,true");
    assert_true(match(&q, "[\"a\",5]")); /* 5.0 canonicalises to 5 */
    assert_true(match(&q, "[\"a\",null]"));
    assert_true(match(&q, "[\"a\",true]"));
    assert_true(match(&q, "[\"a\",\"5\"]")); /* the string "5" has the same text */
    assert_false(match(&q, "[\"a\",false]"));
    assert_false(match(&q, "[\"a\",6]"));
    assert_false(match(&q, "not json"));
    query_free(&q);
    lam_views_free(vs);
}

static void test_srcmap(void **st)
{
    (void)st;
    serving_srcmap_t m = {0};
    for (int64_t i = 0; i < 1000; i++)
        serving_srcmap_mark(&m, i * 3600000, 1);
    for (int64_t i = 500; i < 1500; i++)
        serving_srcmap_mark(&m, i * 3600000, 2);
    assert_int_equal(serving_srcmap_get(&m, 0), 1);
    assert_int_equal(serving_srcmap_get(&m, 700 * 3600000LL), 3);
    assert_int_equal(serving_srcmap_get(&m, 1200 * 3600000LL), 2);
    assert_int_equal(serving_srcmap_get(&m, 5), 0);
    srcmap_clear(&m);
    assert_int_equal(serving_srcmap_get(&m, 0), 0);
    lam_free(m.ts);
    lam_free(m.flags);
}

static void put(lam_agg_t *a, int64_t ts, const char *key, int64_t count)
{
    lam_cell_t *c = lam_agg_get(a, 0, ts, key, strlen(key));
    (void)c;
    /* count via a blob: version 1, 4 metrics, count, then empty slots */
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append_char(&b, 1);
    lam_buf_append_char(&b, 4);
    for (int i = 0; i < 8; i++)
        lam_buf_append_char(&b, (char)((uint64_t)count >> (8 * i)));
    lam_buf_append_char(&b, LAM_METRIC_COUNT);
    lam_buf_append_char(&b, LAM_METRIC_SUM);
    lam_buf_append(&b, "\0\0\0\0\0\0\0\0\0", 9);
    lam_buf_append_char(&b, LAM_METRIC_MAX);
    lam_buf_append(&b, "\0\0\0\0\0\0\0\0\0", 9);
    lam_buf_append_char(&b, LAM_METRIC_DISTINCT);
    lam_buf_append(&b, "\0\0\0\0", 4);
    char err[128];
    assert_int_equal(lam_agg_merge_blob(a, 0, ts, key, strlen(key), b.data, b.len, err, sizeof(err)), 0);
    lam_buf_free(&b);
}

/* top ranks over the whole range, speed cells in out plus batch cells not merged yet */
static void test_top_ranking(void **st)
{
    (void)st;
    lam_views_t *vs = load();
    serving_query_t q = {0};
    q.view = lam_views_get(vs, 0);
    q.views = vs;
    q.out = lam_agg_new(vs);
    lam_agg_t *batch = lam_agg_new(vs);
    put(q.out, 0, "[\"a\",1]", 5);
    put(q.out, 3600000, "[\"b\",1]", 4);
    put(batch, 0, "[\"b\",1]", 4);
    put(batch, 0, "[\"c\",1]", 7);
    put(batch, 7200000, "[\"a\",1]", 1);
    stub_batch = batch;
    q.batch = (void *)1;
    q.top = 2;
    q.order = 0;
    serving_query_rank(&q, 0);
    assert_true(q.ranked);
    assert_int_equal(q.nkeep, 2);
    assert_true(serving_query_kept(&q, "[\"b\",1]", 7)); /* 8 */
    assert_true(serving_query_kept(&q, "[\"c\",1]", 7)); /* 7 */
    assert_false(serving_query_kept(&q, "[\"a\",1]", 7)); /* 6 */
    /* distinct order cannot rank before every HLL is in */
    serving_query_t d = {0};
    d.view = q.view;
    d.views = vs;
    d.out = lam_agg_new(vs);
    d.top = 1;
    d.order = 3;
    d.batch = (void *)1;
    serving_query_rank(&d, 0);
    assert_false(d.ranked);
    assert_true(serving_query_kept(&d, "[\"zzz\"]", 7));
    /* a where filter applies to the batch groups too: without "c", "a" (6) is second */
    serving_query_t f = {0};
    f.view = q.view;
    f.views = vs;
    f.out = lam_agg_new(vs);
    put(f.out, 0, "[\"a\",1]", 5);
    put(f.out, 3600000, "[\"b\",1]", 4);
    add_filter(&f, 0, "a,b");
    f.batch = (void *)1;
    f.top = 2;
    f.order = 0;
    serving_query_rank(&f, 0);
    assert_int_equal(f.nkeep, 2);
    assert_true(serving_query_kept(&f, "[\"b\",1]", 7));
    assert_true(serving_query_kept(&f, "[\"a\",1]", 7));
    assert_false(serving_query_kept(&f, "[\"c\",1]", 7));
    q.batch = NULL;
    d.batch = NULL;
    f.batch = NULL;
    query_free(&q);
    query_free(&d);
    query_free(&f);
    serving_bgroups_free(stub_groups);
    stub_groups = NULL;
    lam_agg_free(batch);
    lam_views_free(vs);
}

/* the batch groups of a cache entry: sorted by key, totals per group, cells per group, lookup */
static void test_bgroups(void **st)
{
    (void)st;
    lam_views_t *vs = load();
    const lam_view_t *v = lam_views_get(vs, 0);
    lam_agg_t *a = lam_agg_new(vs);
    put(a, 7200000, "[\"b\",1]", 2);
    put(a, 0, "[\"c\",1]", 7);
    put(a, 0, "[\"b\",1]", 3);
    put(a, 3600000, "[\"b\",1]", 4);
    put(a, 0, "[\"a\",10]", 1);
    serving_bgroups_t *g = serving_bgroups_build(v, a);
    assert_int_equal(g->n, 3);
    assert_int_equal(g->nmetrics, 4);
    assert_memory_equal(g->key[0], "[\"a\",10]", 8);
    assert_memory_equal(g->key[1], "[\"b\",1]", 7);
    assert_memory_equal(g->key[2], "[\"c\",1]", 7);
    assert_int_equal(g->tot[0 * 4 + 0], 1);
    assert_int_equal(g->tot[1 * 4 + 0], 9); /* 2 + 3 + 4 over three buckets */
    assert_int_equal(g->tot[2 * 4 + 0], 7);
    assert_true(g->tot[1 * 4 + 1] == INT64_MIN); /* no sum value in these cells */
    assert_int_equal(g->first[1], 1);
    assert_int_equal(g->first[2], 4);
    assert_int_equal(g->first[3], 5);
    for (size_t i = g->first[1]; i < g->first[2]; i++) {
        size_t len;
        const char *k = lam_cell_key(g->cells[i], &len);
        assert_int_equal(len, 7);
        assert_memory_equal(k, "[\"b\",1]", 7);
    }
    assert_int_equal(serving_bgroups_find(g, "[\"c\",1]", 7), 2);
    assert_int_equal(serving_bgroups_find(g, "[\"a\",10]", 8), 0);
    assert_true(serving_bgroups_find(g, "[\"a\",1]", 7) == (size_t)-1);
    assert_true(serving_bgroups_find(g, "[\"d\",1]", 7) == (size_t)-1);
    serving_bgroups_free(g);
    lam_agg_t *empty = lam_agg_new(vs);
    g = serving_bgroups_build(v, empty);
    assert_int_equal(g->n, 0);
    assert_true(serving_bgroups_find(g, "x", 1) == (size_t)-1);
    serving_bgroups_free(g);
    lam_agg_free(empty);
    lam_agg_free(a);
    lam_views_free(vs);
}

static void test_results_cache(void **st)
{
    (void)st;
    serving_results_t *r = serving_results_new(8);
    lam_buf_t k = LAM_BUF_INIT, k2 = LAM_BUF_INIT, body = LAM_BUF_INIT, out = LAM_BUF_INIT;
    lam_buf_append_str(&k, "0|1|2");
    lam_buf_append_str(&k2, "0|1|3");
    lam_buf_append_str(&body, ",\"x\":1}");
    assert_false(serving_results_get(r, &k, &out));
    serving_results_put(r, &k, &body, 200);
    assert_true(serving_results_get(r, &k, &out));
    assert_string_equal(out.data, ",\"x\":1}");
    lam_buf_clear(&out);
    assert_false(serving_results_get(r, &k2, &out));
    assert_int_equal(out.len, 0);
    usleep(210000);
    /* expired: the first caller recomputes, the others keep the old answer meanwhile */
    lam_buf_clear(&out);
    assert_false(serving_results_get(r, &k, &out));
    assert_true(serving_results_get(r, &k, &out));
    usleep(210000);
    lam_buf_clear(&out);
    assert_false(serving_results_get(r, &k, &out)); /* beyond 2 x ttl: gone */
    lam_buf_free(&k);
    lam_buf_free(&k2);
    lam_buf_free(&body);
    lam_buf_free(&out);
    serving_results_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_where_filters),
        cmocka_unit_test(test_srcmap),
        cmocka_unit_test(test_top_ranking),
        cmocka_unit_test(test_bgroups),
        cmocka_unit_test(test_results_cache),
    };
    return cmocka_run_group_tests_name("test_serving", tests, NULL, NULL);
}
