/* serving_pg.c - PostgreSQL reads of published batch views, per-thread connections and the LRU row cache. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lam_log.h"
#include "lam_mem.h"
#include "lam_pg.h"
#include "lam_redis.h"
#include "lam_store.h"
#include "serving.h"

/* ---- per-thread connections ---- */

static __thread serving_conn_t *tls_conn;

serving_conn_t *serving_conn_get(serving_ctx_t *ctx)
{
    if (!tls_conn) {
        tls_conn = lam_calloc(1, sizeof(*tls_conn));
        pthread_mutex_lock(&ctx->conns_lock);
        tls_conn->next = ctx->conns;
        ctx->conns = tls_conn;
        pthread_mutex_unlock(&ctx->conns_lock);
    }
    return tls_conn;
}

void serving_conns_free(serving_ctx_t *ctx)
{
    pthread_mutex_lock(&ctx->conns_lock);
    serving_conn_t *c = ctx->conns;
    ctx->conns = NULL;
    pthread_mutex_unlock(&ctx->conns_lock);
    while (c) {
        serving_conn_t *next = c->next;
        PQfinish(c->pg);
        if (c->redis)
            redisFree(c->redis);
        lam_free(c);
        c = next;
    }
}

PGconn *serving_pg(serving_ctx_t *ctx, char *err, size_t errsz)
{
    serving_conn_t *c = serving_conn_get(ctx);
    if (c->pg && PQstatus(c->pg) != CONNECTION_OK) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    if (!c->pg) {
        int64_t t0 = serving_now_us();
        c->pg = lam_pg_connect(ctx->cfg.common.pg_url, err, errsz);
        serving_observe_backend(ctx, SB_PG, t0, c->pg != NULL);
    }
    return c->pg;
}

/* ---- the cache: batch cells of (run, view, bucket range), immutable once built ---- */

typedef struct centry {
    int64_t run, cut_at, lo, hi;
    size_t vi;
    lam_agg_t *agg;
    serving_bgroups_t *groups; /* agg's cells by group key, with totals */
    size_t bytes;
    int refs;    /* readers plus 1 while in the table */
    int in_table;
    struct centry *prev, *next; /* LRU list, most recent first */
    struct centry *chain;       /* hash chain */
} centry_t;

#define CACHE_SLOTS 4096

struct serving_cache {
    pthread_mutex_t lock;
    size_t max_bytes, bytes, entries;
    centry_t *head, *tail;
    centry_t *slots[CACHE_SLOTS];
};

serving_cache_t *serving_cache_new(size_t max_bytes)
{
    serving_cache_t *c = lam_calloc(1, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    c->max_bytes = max_bytes;
    return c;
}

static void entry_free(centry_t *e)
{
    serving_bgroups_free(e->groups);
    lam_agg_free(e->agg);
    lam_free(e);
}

static size_t slot_of(int64_t run, size_t vi, int64_t lo, int64_t hi)
{
    uint64_t h = (uint64_t)run * 0x9e3779b97f4a7c15ULL ^ (uint64_t)vi * 0xc2b2ae3d27d4eb4fULL;
    h ^= (uint64_t)lo * 0x165667b19e3779f9ULL;
    h ^= (uint64_t)hi * 0xff51afd7ed558ccdULL;
    h ^= h >> 31;
    return (size_t)(h % CACHE_SLOTS);
}

/* Unlink from table and LRU (lock held); frees when no reader holds it. */
static void cache_remove(serving_cache_t *c, centry_t *e)
{
    centry_t **pp = &c->slots[slot_of(e->run, e->vi, e->lo, e->hi)];
    while (*pp && *pp != e)
        pp = &(*pp)->chain;
    if (*pp)
        *pp = e->chain;
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    c->bytes -= e->bytes;
    c->entries--;
    e->in_table = 0;
    if (--e->refs == 0)
        entry_free(e);
}

void serving_cache_free(serving_cache_t *c)
{
    if (!c)
        return;
    while (c->head)
        cache_remove(c, c->head);
    pthread_mutex_destroy(&c->lock);
    lam_free(c);
}

void serving_cache_stats(serving_cache_t *c, size_t *bytes, size_t *entries)
{
    pthread_mutex_lock(&c->lock);
    *bytes = c->bytes;
    *entries = c->entries;
    pthread_mutex_unlock(&c->lock);
}

/* Drop entries of runs other than run (after a publish they are never asked for again). */
static void cache_drop_other_runs(serving_cache_t *c, int64_t run)
{
    pthread_mutex_lock(&c->lock);
    centry_t *e = c->head;
    while (e) {
        centry_t *next = e->next;
        if (e->run != run)
            cache_remove(c, e);
        e = next;
    }
    pthread_mutex_unlock(&c->lock);
}

static centry_t *cache_get(serving_cache_t *c, int64_t run, size_t vi, int64_t lo, int64_t hi)
{
    pthread_mutex_lock(&c->lock);
    centry_t *e = c->slots[slot_of(run, vi, lo, hi)];
    while (e && !(e->run == run && e->vi == vi && e->lo == lo && e->hi == hi))
        e = e->chain;
    if (e) {
        e->refs++;
        if (c->head != e) { /* move to front */
            e->prev->next = e->next;
            if (e->next)
                e->next->prev = e->prev;
            else
                c->tail = e->prev;
            e->prev = NULL;
            e->next = c->head;
            c->head->prev = e;
            c->head = e;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return e;
}

static void cache_release(serving_cache_t *c, centry_t *e)
{
    pthread_mutex_lock(&c->lock);
    if (--e->refs == 0)
        entry_free(e);
    pthread_mutex_unlock(&c->lock);
}

/* Insert e (the caller keeps one reference); evicts least recently used entries. */
static void cache_put(serving_ctx_t *ctx, serving_cache_t *c, centry_t *e)
{
    e->refs = 1;
    if (e->bytes > c->max_bytes / 4) /* too big to be worth caching: keep it private */
        return;
    pthread_mutex_lock(&c->lock);
    centry_t *old = c->slots[slot_of(e->run, e->vi, e->lo, e->hi)];
    while (old && !(old->run == e->run && old->vi == e->vi && old->lo == e->lo && old->hi == e->hi))
        old = old->chain;
    if (old) /* another thread loaded the same rows */
        cache_remove(c, old);
    while (c->tail && c->bytes + e->bytes > c->max_bytes) {
        cache_remove(c, c->tail);
        atomic_fetch_add(&ctx->metrics.cache_evictions, 1);
    }
    size_t s = slot_of(e->run, e->vi, e->lo, e->hi);
    e->chain = c->slots[s];
    c->slots[s] = e;
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
    c->bytes += e->bytes;
    c->entries++;
    e->in_table = 1;
    e->refs++;
    pthread_mutex_unlock(&c->lock);
}

/* ---- reads ---- */

static int64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (uint8_t)p[i];
    return (int64_t)v;
}

int64_t serving_pg_refresh_published(serving_ctx_t *ctx, PGconn *pg, char *err, size_t errsz)
{
    int64_t t0 = serving_now_us();
    PGresult *res = lam_pg_query(pg,
                                 "SELECT p.run, (extract(epoch FROM r.cut_at) * 1000)::bigint FROM lam_published p"
                                 " LEFT JOIN lam_runs r ON r.run = p.run",
                                 0, NULL, err, errsz);
    serving_observe_backend(ctx, SB_PG, t0, res != NULL);
    if (!res)
        return -1;
    int64_t run = 0, cut = INT64_MIN;
    if (PQntuples(res)) {
        run = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        if (!PQgetisnull(res, 0, 1))
            cut = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    }
    PQclear(res);
    atomic_store(&ctx->published_cut_at, cut);
    long long prev = atomic_exchange(&ctx->published_run, run);
    if (prev != run)
        cache_drop_other_runs(ctx->cache, run);
    return run;
}

/* Run k, its cut time and its rows for (view, lo <= bucket < hi) in ONE statement. */
static centry_t *load_rows(serving_ctx_t *ctx, PGconn *pg, const serving_query_t *q, char *err, size_t errsz)
{
    char lo[24], hi[24];
    snprintf(lo, sizeof(lo), "%lld", (long long)q->lo);
    snprintf(hi, sizeof(hi), "%lld", (long long)q->hi);
    const char *params[3] = {q->view->name, lo, hi};
    int64_t t0 = serving_now_us();
    PGresult *res = PQexecParams(pg,
                                 "SELECT p.run, (extract(epoch FROM lr.cut_at) * 1000)::bigint, v.bucket, v.gkey, v.state"
                                 " FROM lam_published p LEFT JOIN lam_runs lr ON lr.run = p.run"
                                 " LEFT JOIN lam_view_rows v ON v.run = p.run AND v.view = $1"
                                 /* the same run as a value known at executor start-up: PostgreSQL then
                                  * scans only that run's partition (lam_view_rows is partitioned by run) */
                                 " AND v.run = (SELECT run FROM lam_published)"
                                 " AND v.bucket >= $2::bigint AND v.bucket < $3::bigint",
                                 3, NULL, params, NULL, NULL, 1);
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    serving_observe_backend(ctx, SB_PG, t0, ok);
    if (!ok) {
        snprintf(err, errsz, "postgresql: %s", res ? PQresultErrorMessage(res) : PQerrorMessage(pg));
        char *nl = strchr(err, '\n');
        if (nl)
            *nl = '\0';
        PQclear(res);
        return NULL;
    }
    centry_t *e = lam_calloc(1, sizeof(*e));
    e->vi = q->vi;
    e->lo = q->lo;
    e->hi = q->hi;
    e->cut_at = INT64_MIN;
    e->agg = lam_agg_new(ctx->views);
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        if (i == 0) {
            e->run = be64(PQgetvalue(res, 0, 0));
            if (!PQgetisnull(res, 0, 1))
                e->cut_at = be64(PQgetvalue(res, 0, 1));
        }
        if (PQgetisnull(res, i, 2))
            continue; /* LEFT JOIN: a published run without rows in range */
        char berr[128];
        if (lam_agg_merge_blob(e->agg, q->vi, be64(PQgetvalue(res, i, 2)), PQgetvalue(res, i, 3),
                               (size_t)PQgetlength(res, i, 3), PQgetvalue(res, i, 4), (size_t)PQgetlength(res, i, 4),
                               berr, sizeof(berr)) < 0)
            lam_warn("msg=\"skipping corrupt batch row\" run=%lld view=%s error=\"%s\"", (long long)e->run,
                     q->view->name, berr);
    }
    PQclear(res);
    lam_agg_cache_counts(e->agg); /* batch-only buckets answer their distinct counts without recounting */
    e->groups = serving_bgroups_build(q->view, e->agg);
    e->bytes = lam_agg_memory(e->agg) + e->groups->bytes + sizeof(*e);
    return e;
}

const serving_bgroups_t *serving_pg_batch_groups(const serving_query_t *q)
{
    return q->batch && !q->batch_applied ? ((const centry_t *)q->batch)->groups : NULL;
}

static void apply_cell(serving_query_t *q, const lam_cell_t *c, const char *key, size_t klen)
{
    int64_t ts = lam_time_floor(lam_cell_ts(c), q->gran);
    lam_cell_merge(q->view, lam_agg_get(q->out, q->vi, ts, key, klen), c);
    serving_srcmap_mark(&q->src, ts, 1);
}

void serving_pg_batch_release(serving_ctx_t *ctx, serving_query_t *q)
{
    if (q->batch)
        cache_release(ctx->cache, q->batch);
    q->batch = NULL;
}

void serving_pg_batch_apply(serving_ctx_t *ctx, serving_query_t *q)
{
    const centry_t *e = q->batch;
    if (!e)
        return;
    const serving_bgroups_t *g = e->groups;
    if (q->ranked) { /* top: only the kept groups' cells, found by key */
        for (size_t k = 0; k < q->nkeep; k++) {
            const char *key = q->keep_key[k];
            size_t klen = q->keep_len[k], gi = serving_bgroups_find(g, key, klen);
            if (gi == (size_t)-1 || !serving_query_key_match(q, key, klen))
                continue;
            for (size_t i = g->first[gi]; i < g->first[gi + 1]; i++)
                apply_cell(q, g->cells[i], key, klen);
        }
    } else {
        for (size_t gi = 0; gi < g->n; gi++) {
            if (!serving_query_key_match(q, g->key[gi], g->key_len[gi]))
                continue;
            for (size_t i = g->first[gi]; i < g->first[gi + 1]; i++)
                apply_cell(q, g->cells[i], g->key[gi], g->key_len[gi]);
        }
    }
    q->batch_applied = 1;
    serving_pg_batch_release(ctx, q);
}

int serving_pg_batch_get(serving_ctx_t *ctx, serving_query_t *q, int64_t *run, int64_t *cut_at, char *err,
                         size_t errsz)
{
    centry_t *e = NULL;
    if (*run >= 0 && ctx->cfg.cache_bytes > 0)
        e = cache_get(ctx->cache, *run, q->vi, q->lo, q->hi);
    if (e) {
        atomic_fetch_add(&ctx->metrics.cache_hits, 1);
    } else {
        atomic_fetch_add(&ctx->metrics.cache_misses, 1);
        for (int attempt = 0; attempt < 2 && !e; attempt++) {
            PGconn *pg = serving_pg(ctx, err, errsz);
            if (!pg)
                return -1;
            e = load_rows(ctx, pg, q, err, errsz);
            if (!e && PQstatus(pg) == CONNECTION_OK)
                return -1; /* a real error, not a dropped connection */
        }
        if (!e)
            return -1;
        long long prev = atomic_load(&ctx->published_run);
        if (e->run > prev) {
            /* First read or a publish we have not been told about yet (runs only move forward). */
            if (atomic_compare_exchange_strong(&ctx->published_run, &prev, e->run)) {
                atomic_store(&ctx->published_cut_at, e->cut_at);
                if (prev >= 0)
                    cache_drop_other_runs(ctx->cache, e->run);
            }
        }
        if (ctx->cfg.cache_bytes > 0)
            cache_put(ctx, ctx->cache, e);
        else
            e->refs = 1;
    }
    *run = e->run;
    *cut_at = e->cut_at;
    q->batch = e;
    q->batch_applied = 0;
    return 0;
}
