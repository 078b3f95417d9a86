/* serving_query.c - GET /v1/views[/{name}]: parameters, the batch ⊕ speed merge loop, top/order, JSON. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lam_json.h"
#include "lam_log.h"
#include "lam_mem.h"
#include "serving.h"

#define QUERY_MAX_ATTEMPTS 5
#define TOP_MAX 1000

/* ---- bucket -> source map (open addressing; a few thousand buckets at most) ---- */

static size_t srcmap_slot(const serving_srcmap_t *m, int64_t ts)
{
    uint64_t h = (uint64_t)ts * 0x9e3779b97f4a7c15ULL;
    size_t s = (size_t)(h >> 17) & (m->cap - 1);
    while (m->flags[s] && m->ts[s] != ts)
        s = (s + 1) & (m->cap - 1);
    return s;
}

void serving_srcmap_mark(serving_srcmap_t *m, int64_t ts, uint8_t bit)
{
    if ((m->n + 1) * 2 > m->cap) {
        serving_srcmap_t g = {0};
        g.cap = m->cap ? m->cap * 2 : 64;
        g.ts = lam_calloc(g.cap, sizeof(int64_t));
        g.flags = lam_calloc(g.cap, 1);
        for (size_t i = 0; i < m->cap; i++)
            if (m->flags[i]) {
                size_t s = srcmap_slot(&g, m->ts[i]);
                g.ts[s] = m->ts[i];
                g.flags[s] = m->flags[i];
                g.n++;
            }
        lam_free(m->ts);
        lam_free(m->flags);
        *m = g;
    }
    size_t s = srcmap_slot(m, ts);
    if (!m->flags[s]) {
        m->ts[s] = ts;
        m->n++;
    }
    m->flags[s] |= bit;
}

uint8_t serving_srcmap_get(const serving_srcmap_t *m, int64_t ts)
{
    if (!m->cap)
        return 0;
    return m->flags[srcmap_slot(m, ts)];
}

static void srcmap_clear(serving_srcmap_t *m)
{
    if (m->cap)
        memset(m->flags, 0, m->cap);
    m->n = 0;
}

/* ---- where filters ---- */

static int keyval_eq(const lam_keyval_t *kv, const char *want)
{
    size_t n = strlen(want);
    switch (kv->type) {
    case LAM_VAL_STRING:
    case LAM_VAL_NUMBER:
        return kv->len == n && !memcmp(kv->val, want, n);
    case LAM_VAL_NULL:
        return !strcmp(want, "null");
    case LAM_VAL_TRUE:
        return !strcmp(want, "true");
    case LAM_VAL_FALSE:
        return !strcmp(want, "false");
    default:
        return 0;
    }
}

int serving_query_key_match(serving_query_t *q, const char *gkey, size_t len)
{
    if (!q->nfilters)
        return 1;
    lam_keyval_t vals[LAM_VIEW_GROUP_MAX];
    size_t n;
    if (lam_agg_key_decode(gkey, len, vals, LAM_VIEW_GROUP_MAX, &n, &q->scratch) < 0)
        return 0;
    for (size_t f = 0; f < q->nfilters; f++) {
        const serving_filter_t *fl = &q->filters[f];
        if (fl->pos >= n)
            return 0;
        int ok = 0;
        for (size_t i = 0; i < fl->nvals && !ok; i++)
            ok = keyval_eq(&vals[fl->pos], fl->vals[i]);
        if (!ok)
            return 0;
    }
    return 1;
}

static void query_free(serving_query_t *q)
{
    for (size_t f = 0; f < q->nfilters; f++) {
        for (size_t i = 0; i < q->filters[f].nvals; i++)
            lam_free(q->filters[f].vals[i]);
        lam_free(q->filters[f].vals);
    }
    lam_agg_free(q->out);
    lam_free(q->src.ts);
    lam_free(q->src.flags);
    lam_buf_free(&q->scratch);
    lam_buf_free(&q->keepbuf);
    lam_free(q->keep_key);
    lam_free(q->keep_len);
}

/* ---- parameters ---- */

typedef struct qparse {
    serving_query_t *q;
    const char *from, *to, *gran, *top, *order;
    char msg[600];
} qparse_t;

static int param_fail(qparse_t *p, const char *fmt, const char *name, size_t len)
{
    char ex[80];
    lam_json_quote_excerpt(ex, sizeof(ex), name, len);
    snprintf(p->msg, sizeof(p->msg), fmt, ex);
    return 1;
}

static int set_once(qparse_t *p, const char **slot, const char *key, const char *value)
{
    if (*slot)
        return param_fail(p, "query parameter %s is repeated", key, strlen(key));
    *slot = value;
    return 0;
}

/* A numeric filter value is compared in its canonical JSON form ("5.0" matches the key 5). */
static char *canonical_value(const char *s, size_t n)
{
    lam_json_num_t num;
    if (n && lam_json_num_parse(s, n, &num) == 0) {
        char *out = lam_malloc(LAM_JSON_NUM_MAXLEN(&num) + 1);
        size_t k = lam_json_num_format(&num, out);
        out[k] = '\0';
        return out;
    }
    return lam_strndup(s, n);
}

static int param_cb(void *arg, const char *key, const char *value)
{
    qparse_t *p = arg;
    serving_query_t *q = p->q;
    if (!strcmp(key, "from"))
        return set_once(p, &p->from, key, value);
    if (!strcmp(key, "to"))
        return set_once(p, &p->to, key, value);
    if (!strcmp(key, "granularity"))
        return set_once(p, &p->gran, key, value);
    if (!strcmp(key, "top"))
        return set_once(p, &p->top, key, value);
    if (!strcmp(key, "order"))
        return set_once(p, &p->order, key, value);
    if (!strncmp(key, "where.", 6)) {
        const char *field = key + 6;
        size_t flen = strlen(field), pos;
        for (pos = 0; pos < q->view->ngroup; pos++)
            if (q->view->group_by[pos].len == flen && !memcmp(q->view->group_by[pos].name, field, flen))
                break;
        if (pos == q->view->ngroup) {
            char ex[80];
            lam_json_quote_excerpt(ex, sizeof(ex), field, flen);
            snprintf(p->msg, sizeof(p->msg), "where: unknown field %s (not in group_by of view \"%s\")", ex,
                     q->view->name);
            return 1;
        }
        for (size_t f = 0; f < q->nfilters; f++)
            if (q->filters[f].pos == pos)
                return param_fail(p, "query parameter %s is repeated", key, strlen(key));
        serving_filter_t *fl = &q->filters[q->nfilters++];
        fl->pos = pos;
        const char *s = value;
        for (;;) {
            const char *e = strchr(s, ',');
            size_t n = e ? (size_t)(e - s) : strlen(s);
            if (fl->nvals >= SERVING_MAX_FILTER_VALUES)
                return param_fail(p, "%s: too many values (at most 64)", key, strlen(key));
            fl->vals = lam_realloc(fl->vals, (fl->nvals + 1) * sizeof(char *));
            fl->vals[fl->nvals++] = canonical_value(s, n);
            if (!e)
                break;
            s = e + 1;
        }
        return 0;
    }
    return param_fail(p, "unknown query parameter %s", key, strlen(key));
}

/* Number of buckets of granularity g between the buckets of lo and last (inclusive). */
static int64_t bucket_count(int64_t lo, int64_t last, lam_gran_t g)
{
    static const int64_t len[] = {60000LL, 3600000LL, 86400000LL, 7 * 86400000LL};
    int64_t a = lam_time_floor(lo, g), b = lam_time_floor(last, g);
    if (g <= LAM_GRAN_WEEK)
        return (b - a) / len[g] + 1;
    if (g == LAM_GRAN_MONTH) {
        int64_t y1, y2;
        unsigned m1, m2, d;
        lam_time_civil_from_days(a / 86400000LL, &y1, &m1, &d);
        lam_time_civil_from_days(b / 86400000LL, &y2, &m2, &d);
        return (y2 - y1) * 12 + ((int64_t)m2 - (int64_t)m1) + 1;
    }
    return 1;
}

static int parse_or_reply(serving_ctx_t *ctx, lam_http_req_t *req, serving_query_t *q)
{
    qparse_t p = {.q = q};
    if (lam_http_query_each(req, param_cb, &p))
        return serving_error(req, 400, NULL, "%s", p.msg);
    char err[256];
    int64_t now = lam_time_now_ms();
    q->to = now;
    if (p.to && lam_time_parse_param(p.to, strlen(p.to), &q->to, err, sizeof(err)) < 0)
        return serving_error(req, 400, NULL, "to: %s", err);
    q->from = q->to - 86400000LL;
    if (p.from && lam_time_parse_param(p.from, strlen(p.from), &q->from, err, sizeof(err)) < 0)
        return serving_error(req, 400, NULL, "from: %s", err);
    if (q->from < LAM_TIME_MIN_MS || q->to > LAM_TIME_MAX_MS + 1)
        return serving_error(req, 400, NULL, "from/to: outside years 0000..9999");
    if (q->from >= q->to)
        return serving_error(req, 400, NULL, "from must be before to (%lld >= %lld)", (long long)q->from,
                             (long long)q->to);
    q->gran = q->view->granularity;
    if (p.gran && lam_gran_parse(p.gran, strlen(p.gran), &q->gran) < 0) {
        char ex[80];
        lam_json_quote_excerpt(ex, sizeof(ex), p.gran, strlen(p.gran));
        return serving_error(req, 400, NULL, "granularity: unknown %s (minute|hour|day|week|month|all)", ex);
    }
    if (q->gran < q->view->granularity)
        return serving_error(req, 400, NULL, "granularity: %s is finer than view \"%s\" (%s)", lam_gran_name(q->gran),
                             q->view->name, lam_gran_name(q->view->granularity));
    q->top = 0;
    if (p.top) {
        char *end;
        long long t = strtoll(p.top, &end, 10);
        if (!*p.top || *end || t < 1 || t > TOP_MAX)
            return serving_error(req, 400, NULL, "top: must be an integer in 1..%d", TOP_MAX);
        q->top = t;
    }
    q->order = 0;
    if (p.order) {
        int m = lam_view_metric_index(q->view, p.order, strlen(p.order));
        if (m < 0) {
            char ex[80];
            lam_json_quote_excerpt(ex, sizeof(ex), p.order, strlen(p.order));
            return serving_error(req, 400, NULL, "order: unknown metric %s of view \"%s\"", ex, q->view->name);
        }
        q->order = m;
    }
    /* Read the view's buckets that overlap [from, to). */
    q->lo = lam_time_floor(q->from, q->view->granularity);
    /* Same bucket set as "bucket < to", but stable within a bucket so the cache key repeats. */
    q->hi = lam_time_floor(q->to - 1, q->view->granularity) + 1;
    int64_t n = bucket_count(q->lo, q->to - 1, q->gran);
    if (n > ctx->cfg.max_buckets)
        return serving_error(req, 400, NULL, "range has %lld %s buckets, more than the limit of %lld",
                             (long long)n, lam_gran_name(q->gran), (long long)ctx->cfg.max_buckets);
    return 0;
}

/* ---- ordering and rendering ---- */

static int64_t order_value(const lam_view_t *v, const lam_cell_t *c, size_t m)
{
    int64_t x = INT64_MIN;
    switch (v->metrics[m].kind) {
    case LAM_METRIC_COUNT:
        return lam_cell_count(c);
    case LAM_METRIC_DISTINCT: {
        const lam_hll_t *h = lam_cell_hll(c, m);
        return h ? (int64_t)lam_hll_count(h) : 0;
    }
    case LAM_METRIC_SUM:
        return lam_cell_sum(c, m, &x) == LAM_CELL_VALUE ? x : INT64_MIN;
    case LAM_METRIC_MIN:
        return lam_cell_min(c, m, &x) == LAM_CELL_VALUE ? x : INT64_MIN;
    default:
        return lam_cell_max(c, m, &x) == LAM_CELL_VALUE ? x : INT64_MIN;
    }
}

typedef struct ranked {
    const lam_cell_t *c;
    int64_t ts;
    int64_t val;
    const char *key;
    size_t key_len;
} ranked_t;

static int keycmp(const char *a, size_t al, const char *b, size_t bl)
{
    int r = memcmp(a, b, al < bl ? al : bl);
    return r ? r : (al < bl ? -1 : al > bl);
}

static int cmp_rank(const void *x, const void *y)
{
    const ranked_t *a = x, *b = y;
    if (a->val != b->val)
        return a->val > b->val ? -1 : 1;
    return keycmp(a->key, a->key_len, b->key, b->key_len);
}

static int cmp_key(const void *x, const void *y)
{
    const ranked_t *a = x, *b = y;
    return keycmp(a->key, a->key_len, b->key, b->key_len);
}

static int cmp_out(const void *x, const void *y)
{
    const ranked_t *a = x, *b = y;
    if (a->ts != b->ts)
        return a->ts < b->ts ? -1 : 1;
    return cmp_rank(x, y);
}

static int64_t acc(lam_metric_kind_t k, int64_t a, int64_t b)
{
    int64_t r;
    if (a == INT64_MIN)
        return b;
    if (b == INT64_MIN)
        return a;
    switch (k) {
    case LAM_METRIC_MIN:
        return a < b ? a : b;
    case LAM_METRIC_MAX:
        return a > b ? a : b;
    default:
        return __builtin_add_overflow(a, b, &r) ? (a > 0 ? INT64_MAX : INT64_MIN + 1) : r;
    }
}

void serving_query_rank(serving_query_t *q, int final)
{
    if (!q->top || q->ranked)
        return;
    const lam_view_t *v = q->view;
    lam_metric_kind_t kind = v->metrics[q->order].kind;
    lam_agg_t *totals = NULL;
    ranked_t *r;
    size_t n = 0;
    if (kind == LAM_METRIC_DISTINCT) {
        /* distinct does not add up: union the HLLs over the range, once everything is merged */
        if (!final || q->batch)
            return;
        char err[128];
        totals = lam_agg_new(q->views);
        lam_agg_rollup(totals, q->out, q->vi, LAM_GRAN_ALL, err, sizeof(err));
        r = lam_malloc((lam_agg_size(totals) + 1) * sizeof(ranked_t));
        size_t it = 0;
        lam_cell_t *c;
        while ((c = lam_agg_next(totals, &it))) {
            r[n].key = lam_cell_key(c, &r[n].key_len);
            r[n].val = order_value(v, c, (size_t)q->order);
            n++;
        }
    } else {
        /* count/sum add up, min/max fold: the speed cells (sorted here) joined with the batch
         * groups' totals (sorted once per cache entry); no cell merging needed. */
        const serving_bgroups_t *bg = serving_pg_batch_groups(q);
        size_t nrt = 0, it = 0, nb = bg ? bg->n : 0;
        ranked_t *rt = lam_malloc((lam_agg_size(q->out) + 1) * sizeof(ranked_t));
        lam_cell_t *c;
        while ((c = lam_agg_next(q->out, &it))) {
            rt[nrt].key = lam_cell_key(c, &rt[nrt].key_len);
            rt[nrt].val = order_value(v, c, (size_t)q->order);
            nrt++;
        }
        qsort(rt, nrt, sizeof(ranked_t), cmp_key);
        size_t u = 0;
        for (size_t i = 0; i < nrt; i++) {
            if (u && !keycmp(rt[u - 1].key, rt[u - 1].key_len, rt[i].key, rt[i].key_len))
                rt[u - 1].val = acc(kind, rt[u - 1].val, rt[i].val);
            else
                rt[u++] = rt[i];
        }
        nrt = u;
        r = lam_malloc((nrt + nb + 1) * sizeof(ranked_t));
        size_t i = 0, j = 0;
        while (i < nrt || j < nb) {
            if (j < nb && !serving_query_key_match(q, bg->key[j], bg->key_len[j])) {
                j++;
                continue;
            }
            int cmp = i == nrt ? 1 : j == nb ? -1 : keycmp(rt[i].key, rt[i].key_len, bg->key[j], bg->key_len[j]);
            if (cmp < 0) {
                r[n++] = rt[i++];
                continue;
            }
            int64_t bv = bg->tot[j * bg->nmetrics + (size_t)q->order];
            if (cmp > 0)
                r[n] = (ranked_t){.key = bg->key[j], .key_len = bg->key_len[j], .val = bv};
            else {
                r[n] = rt[i++];
                r[n].val = acc(kind, r[n].val, bv);
            }
            n++;
            j++;
        }
        lam_free(rt);
    }
    qsort(r, n, sizeof(ranked_t), cmp_rank);
    size_t keep = n < (size_t)q->top ? n : (size_t)q->top;
    qsort(r, keep, sizeof(ranked_t), cmp_key);
    q->keep_key = lam_realloc(q->keep_key, (keep + 1) * sizeof(*q->keep_key));
    q->keep_len = lam_realloc(q->keep_len, (keep + 1) * sizeof(size_t));
    lam_buf_clear(&q->keepbuf);
    for (size_t i = 0; i < keep; i++) {
        q->keep_len[i] = r[i].key_len;
        lam_buf_append(&q->keepbuf, r[i].key, r[i].key_len);
    }
    /* Pointers only once keepbuf has stopped growing. */
    for (size_t i = 0, off = 0; i < keep; off += q->keep_len[i], i++)
        q->keep_key[i] = q->keepbuf.data + off;
    q->nkeep = keep;
    q->ranked = 1;
    lam_free(r);
    lam_agg_free(totals);
}

/* Binary search of key among n sorted keys; its index, or (size_t)-1. */
static size_t find_key(const char *const *keys, const size_t *lens, size_t n, const char *key, size_t len)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = keycmp(keys[mid], lens[mid], key, len);
        if (!c)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (size_t)-1;
}

int serving_query_kept(const serving_query_t *q, const char *key, size_t len)
{
    if (!q->ranked)
        return 1;
    return find_key(q->keep_key, q->keep_len, q->nkeep, key, len) != (size_t)-1;
}

typedef struct bcell {
    lam_cell_t *c;
    const char *key;
    size_t key_len;
} bcell_t;

static int cmp_bcell(const void *x, const void *y)
{
    const bcell_t *a = x, *b = y;
    return keycmp(a->key, a->key_len, b->key, b->key_len);
}

serving_bgroups_t *serving_bgroups_build(const lam_view_t *v, const lam_agg_t *agg)
{
    size_t nc = lam_agg_size(agg), it = 0, k = 0, nm = v->nmetrics;
    bcell_t *bc = lam_malloc((nc + 1) * sizeof(bcell_t));
    lam_cell_t *c;
    while ((c = lam_agg_next(agg, &it)) && k < nc) {
        bc[k].c = c;
        bc[k].key = lam_cell_key(c, &bc[k].key_len);
        k++;
    }
    nc = k;
    qsort(bc, nc, sizeof(bcell_t), cmp_bcell);
    size_t ng = 0;
    for (size_t i = 0; i < nc; i++)
        if (!i || keycmp(bc[i - 1].key, bc[i - 1].key_len, bc[i].key, bc[i].key_len))
            ng++;
    serving_bgroups_t *g = lam_calloc(1, sizeof(*g));
    g->nmetrics = nm;
    g->key = lam_malloc((ng + 1) * sizeof(*g->key));
    g->key_len = lam_malloc((ng + 1) * sizeof(*g->key_len));
    g->tot = lam_malloc((ng * nm + 1) * sizeof(*g->tot));
    g->first = lam_malloc((ng + 1) * sizeof(*g->first));
    g->cells = lam_malloc((nc + 1) * sizeof(*g->cells));
    for (size_t i = 0; i < nc; i++) {
        if (!i || keycmp(bc[i - 1].key, bc[i - 1].key_len, bc[i].key, bc[i].key_len)) {
            g->key[g->n] = bc[i].key;
            g->key_len[g->n] = bc[i].key_len;
            g->first[g->n] = i;
            for (size_t m = 0; m < nm; m++)
                g->tot[g->n * nm + m] = INT64_MIN;
            g->n++;
        }
        int64_t *t = &g->tot[(g->n - 1) * nm];
        for (size_t m = 0; m < nm; m++)
            if (v->metrics[m].kind != LAM_METRIC_DISTINCT)
                t[m] = acc(v->metrics[m].kind, t[m], order_value(v, bc[i].c, m));
        g->cells[i] = bc[i].c;
    }
    g->first[g->n] = nc;
    g->bytes = sizeof(*g) + (ng + 1) * (sizeof(*g->key) + sizeof(*g->key_len) + sizeof(*g->first)) +
               (ng * nm + 1) * sizeof(*g->tot) + (nc + 1) * sizeof(*g->cells);
    lam_free(bc);
    return g;
}

void serving_bgroups_free(serving_bgroups_t *g)
{
    if (!g)
        return;
    lam_free(g->key);
    lam_free(g->key_len);
    lam_free(g->tot);
    lam_free(g->first);
    lam_free(g->cells);
    lam_free(g);
}

size_t serving_bgroups_find(const serving_bgroups_t *g, const char *key, size_t len)
{
    return find_key(g->key, g->key_len, g->n, key, len);
}

static void render_head(const serving_query_t *q, lam_buf_t *out)
{
    lam_buf_append_str(out, "{\"view\":");
    lam_json_append_cstr(out, q->view->name);
    lam_buf_append_str(out, ",\"granularity\":");
    lam_json_append_cstr(out, lam_gran_name(q->gran));
    lam_buf_printf(out, ",\"from\":%lld,\"to\":%lld", (long long)q->from, (long long)q->to);
}

/* Everything after "to": depends only on the cache key of the query, not on from/to themselves. */
static void render_rest(serving_ctx_t *ctx, serving_query_t *q, int64_t run, int64_t cut_at, lam_buf_t *out)
{
    const lam_view_t *v = q->view;
    (void)ctx;
    serving_query_rank(q, 1);
    size_t n = lam_agg_size(q->out), it = 0, k = 0;
    ranked_t *cells = lam_malloc((n + 1) * sizeof(ranked_t));
    lam_cell_t *c;
    while ((c = lam_agg_next(q->out, &it))) {
        ranked_t r = {.c = c, .ts = lam_cell_ts(c)};
        r.key = lam_cell_key(c, &r.key_len);
        if (!serving_query_kept(q, r.key, r.key_len))
            continue;
        r.val = order_value(v, c, (size_t)q->order);
        cells[k++] = r;
    }
    qsort(cells, k, sizeof(ranked_t), cmp_out);

    lam_buf_append_str(out, ",\"group_by\":[");
    for (size_t i = 0; i < v->ngroup; i++) {
        if (i)
            lam_buf_append_char(out, ',');
        lam_json_append_string(out, v->group_by[i].name, v->group_by[i].len);
    }
    lam_buf_append_str(out, "],\"metrics\":[");
    for (size_t i = 0; i < v->nmetrics; i++) {
        if (i)
            lam_buf_append_char(out, ',');
        lam_json_append_cstr(out, v->metrics[i].text);
    }
    lam_buf_append_str(out, "],\"buckets\":[");
    for (size_t i = 0; i < k; i++) {
        int first_in_bucket = i == 0 || cells[i].ts != cells[i - 1].ts;
        if (first_in_bucket) {
            if (i)
                lam_buf_append_str(out, "]},");
            uint8_t f = serving_srcmap_get(&q->src, cells[i].ts);
            lam_buf_printf(out, "{\"ts\":%lld,\"source\":\"%s\",\"groups\":[", (long long)cells[i].ts,
                           f == 3 ? "both" : f == 1 ? "batch" : "speed");
        } else {
            lam_buf_append_char(out, ',');
        }
        lam_buf_append_str(out, "{\"key\":");
        lam_buf_append(out, cells[i].key, cells[i].key_len);
        for (size_t m = 0; m < v->nmetrics; m++) {
            lam_buf_append_char(out, ',');
            lam_json_append_cstr(out, v->metrics[m].text);
            lam_buf_append_char(out, ':');
            lam_cell_append_metric_json(v, cells[i].c, m, out);
        }
        lam_buf_append_char(out, '}');
    }
    if (k)
        lam_buf_append_str(out, "]}");
    lam_buf_append_str(out, "],\"coverage\":{\"batch_run\":");
    if (run > 0)
        lam_buf_append_i64(out, run);
    else
        lam_buf_append_str(out, "null");
    lam_buf_append_str(out, ",\"batch_cut_at\":");
    if (run > 0 && cut_at != INT64_MIN)
        lam_buf_append_i64(out, cut_at);
    else
        lam_buf_append_str(out, "null");
    lam_buf_append_str(out, ",\"speed_epochs\":[");
    for (size_t i = 0; i < q->nepochs; i++) {
        if (i)
            lam_buf_append_char(out, ',');
        lam_buf_append_i64(out, q->epochs[i]);
    }
    lam_buf_append_str(out, "]}}\n");
    lam_free(cells);
}

/* The answer depends on the view, the bucket range read, granularity, filters, top and order. */
static void result_key(const serving_query_t *q, lam_buf_t *key)
{
    lam_buf_printf(key, "%zu|%lld|%lld|%d|%lld|%d", q->vi, (long long)q->lo, (long long)q->hi, (int)q->gran,
                   (long long)q->top, q->order);
    for (size_t p = 0; p < q->view->ngroup; p++)
        for (size_t f = 0; f < q->nfilters; f++)
            if (q->filters[f].pos == p) {
                lam_buf_printf(key, "|%zu=", p);
                for (size_t i = 0; i < q->filters[f].nvals; i++) {
                    lam_buf_append_i64(key, (int64_t)strlen(q->filters[f].vals[i]));
                    lam_buf_append_char(key, ':');
                    lam_buf_append_str(key, q->filters[f].vals[i]);
                }
            }
}

/* ---- handlers ---- */

void serving_handle_views(serving_ctx_t *ctx, lam_http_req_t *req)
{
    if (serving_get_only_or_reply(req) < 0)
        return;
    lam_buf_t b = LAM_BUF_INIT;
    lam_views_to_json(ctx->views, &b);
    lam_buf_append_char(&b, '\n');
    serving_reply_json(req, 200, &b);
    lam_buf_free(&b);
}

void serving_handle_view_query(serving_ctx_t *ctx, lam_http_req_t *req, const char *name)
{
    if (serving_get_only_or_reply(req) < 0)
        return;
    serving_query_t q = {0};
    q.view = lam_views_find(ctx->views, name, strlen(name));
    if (!q.view) {
        char ex[80];
        lam_json_quote_excerpt(ex, sizeof(ex), name, strlen(name));
        serving_error(req, 404, NULL, "no view named %s", ex);
        return;
    }
    q.vi = q.view->index;
    q.views = ctx->views;
    if (parse_or_reply(ctx, req, &q) < 0) {
        query_free(&q);
        return;
    }
    /* A merged answer a few ms old is a valid snapshot (lag only): serve it again if we have one. */
    lam_buf_t key = LAM_BUF_INIT;
    if (ctx->results) {
        result_key(&q, &key);
        lam_buf_t b = LAM_BUF_INIT;
        render_head(&q, &b);
        if (serving_results_get(ctx->results, &key, &b)) {
            atomic_fetch_add(&ctx->metrics.result_hits, 1);
            serving_reply_json(req, 200, &b);
            lam_buf_free(&b);
            lam_buf_free(&key);
            query_free(&q);
            return;
        }
        lam_buf_free(&b);
    }
    q.out = lam_agg_new(ctx->views);
    char err[512];
    int64_t run = -1, cut_at = INT64_MIN;
    int done = 0;
    for (int attempt = 0; attempt < QUERY_MAX_ATTEMPTS && !done; attempt++) {
        if (attempt)
            lam_agg_reset(q.out);
        srcmap_clear(&q.src);
        q.nepochs = 0;
        q.ranked = 0;
        run = atomic_load(&ctx->published_run);
        cut_at = INT64_MIN;
        serving_pg_batch_release(ctx, &q);
        if (serving_pg_batch_get(ctx, &q, &run, &cut_at, err, sizeof(err)) < 0) {
            serving_unavailable(req, "batch views (PostgreSQL)", err);
            query_free(&q);
            lam_buf_free(&key);
            return;
        }
        int64_t current = 0;
        int rc = serving_redis_merge(ctx, &q, run, &current, err, sizeof(err));
        if (rc < 0) {
            serving_pg_batch_release(ctx, &q);
            serving_unavailable(req, "real-time views (Redis)", err);
            query_free(&q);
            lam_buf_free(&key);
            return;
        }
        if (rc == 1) {
            /* Run current was published while we read run k: read again with the new run. */
            atomic_fetch_add(&ctx->metrics.query_retries, 1);
            lam_debug("msg=\"publish raced a query, retrying\" run=%lld current=%lld", (long long)run,
                      (long long)current);
            long long expected = run;
            atomic_compare_exchange_strong(&ctx->published_run, &expected, -1);
            continue;
        }
        serving_query_rank(&q, 0); /* top by a summable metric: merge only the kept batch groups */
        serving_pg_batch_apply(ctx, &q);
        done = 1;
    }
    serving_pg_batch_release(ctx, &q);
    if (!done) {
        atomic_fetch_add(&ctx->metrics.query_races_failed, 1);
        lam_http_add_header(req, "Retry-After", "1");
        serving_error(req, 503, NULL, "batch runs kept being published during the read; retry");
        query_free(&q);
        lam_buf_free(&key);
        return;
    }
    lam_buf_t b = LAM_BUF_INIT, rest = LAM_BUF_INIT;
    render_head(&q, &b);
    render_rest(ctx, &q, run, cut_at, &rest);
    lam_buf_append(&b, rest.data, rest.len);
    serving_reply_json(req, 200, &b);
    if (ctx->results)
        serving_results_put(ctx->results, &key, &rest, ctx->cfg.result_ms);
    lam_buf_free(&rest);
    lam_buf_free(&b);
    lam_buf_free(&key);
    query_free(&q);
}
