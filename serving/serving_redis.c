/* serving_redis.c - real-time views from Redis: pipelined MULTI reads of epochs >= k, merged through the engine (lam_agg_merge_rt, lam_agg_merge_hll_redis). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lam_log.h"
#include "lam_mem.h"
#include "lam_redis.h"
#include "lam_store.h"
#include "serving.h"

#define MAX_EPOCHS 64

redisContext *serving_redis(serving_ctx_t *ctx, char *err, size_t errsz)
{
    serving_conn_t *c = serving_conn_get(ctx);
    if (c->redis && c->redis->err) {
        redisFree(c->redis);
        c->redis = NULL;
    }
    if (!c->redis) {
        int64_t t0 = serving_now_us();
        c->redis = lam_redis_connect(ctx->cfg.common.redis_url, 2000, err, errsz);
        serving_observe_backend(ctx, SB_REDIS, t0, c->redis != NULL);
    }
    return c->redis;
}

void serving_redis_drop(serving_ctx_t *ctx)
{
    serving_conn_t *c = serving_conn_get(ctx);
    if (c->redis)
        redisFree(c->redis);
    c->redis = NULL;
}

/* ---- a pipelined MULTI ... EXEC ---- */

typedef struct pipe {
    redisContext *rc;
    int n;         /* queued commands */
    int failed;
    char *err;
    size_t errsz;
} pipe_t;

static void pipe_begin(pipe_t *p)
{
    const char *argv[1] = {"MULTI"};
    p->n = 0;
    if (redisAppendCommandArgv(p->rc, 1, argv, NULL) != REDIS_OK)
        p->failed = 1;
}

static void pipe_cmd(pipe_t *p, int argc, const char **argv, const size_t *lens)
{
    if (redisAppendCommandArgv(p->rc, argc, argv, lens) != REDIS_OK)
        p->failed = 1;
    p->n++;
}

/* Send EXEC and collect; returns the EXEC array reply (caller frees) or NULL with p->err. */
static redisReply *pipe_exec(pipe_t *p)
{
    const char *argv[1] = {"EXEC"};
    if (p->failed || redisAppendCommandArgv(p->rc, 1, argv, NULL) != REDIS_OK) {
        snprintf(p->err, p->errsz, "redis: cannot queue commands");
        return NULL;
    }
    redisReply *exec = NULL;
    for (int i = 0; i < p->n + 2; i++) {
        redisReply *r = NULL;
        if (redisGetReply(p->rc, (void **)&r) != REDIS_OK || !r) {
            snprintf(p->err, p->errsz, "redis: %s", p->rc->errstr[0] ? p->rc->errstr : "no reply");
            if (exec)
                freeReplyObject(exec);
            return NULL;
        }
        if (i == p->n + 1)
            exec = r;
        else
            freeReplyObject(r);
    }
    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != (size_t)p->n) {
        snprintf(p->err, p->errsz, "redis: transaction failed%s%s", exec->type == REDIS_REPLY_ERROR ? ": " : "",
                 exec->type == REDIS_REPLY_ERROR ? exec->str : "");
        freeReplyObject(exec);
        return NULL;
    }
    return exec;
}

static int64_t reply_int(const redisReply *r, int64_t def)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING) {
        char *end;
        long long v = strtoll(r->str, &end, 10);
        return *end ? def : v;
    }
    return def;
}

/* ---- the read ---- */

typedef struct rt_bucket {
    int64_t epoch, bucket;
} rt_bucket_t;

static pthread_mutex_t guess_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t guess_epochs[MAX_EPOCHS];
static size_t nguess;

static void merge_fields(serving_query_t *q, const redisReply *h, int64_t bucket)
{
    if (h->type != REDIS_REPLY_ARRAY)
        return;
    int64_t ts = lam_time_floor(bucket, q->gran);
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *f = h->element[i], *val = h->element[i + 1];
        size_t m, klen;
        const char *key;
        if (f->type != REDIS_REPLY_STRING || lam_store_rt_field_parse(f->str, f->len, &m, &key, &klen) < 0)
            continue;
        if (m > q->view->nmetrics || !serving_query_key_match(q, key, klen))
            continue;
        /* a sum that left the int64 range is the string "overflow" (shared/STORAGE.md) */
        int overflow = val->type == REDIS_REPLY_STRING && val->len == 8 && !memcmp(val->str, "overflow", 8);
        int64_t x = overflow ? 0 : reply_int(val, INT64_MIN);
        if (x == INT64_MIN)
            continue;
        if (lam_agg_merge_rt(q->out, q->vi, ts, key, klen, m, overflow ? LAM_CELL_OVERFLOW : LAM_CELL_VALUE, x) == 0 &&
            m == 0 && x > 0)
            serving_srcmap_mark(&q->src, ts, 2);
    }
}

int serving_redis_merge(serving_ctx_t *ctx, serving_query_t *q, int64_t run, int64_t *current, char *err,
                        size_t errsz)
{
    if (!atomic_load(&ctx->redis_ok)) { /* fail fast instead of waiting out a connect timeout */
        snprintf(err, errsz, "redis: unreachable (health check)");
        return -1;
    }
    redisContext *rc = serving_redis(ctx, err, errsz);
    if (!rc)
        return -1;
    int64_t t0 = serving_now_us();
    pipe_t p = {.rc = rc, .err = err, .errsz = errsz};
    lam_buf_t k1 = LAM_BUF_INIT;
    char runs[24], lo[24], hi[24];
    snprintf(runs, sizeof(runs), "%lld", (long long)(run < 0 ? 0 : run));
    snprintf(lo, sizeof(lo), "%lld", (long long)q->lo);
    snprintf(hi, sizeof(hi), "(%lld", (long long)q->hi);
    int rcode = -1;
    redisReply *r1 = NULL, *r1b = NULL, *r2 = NULL, *r3 = NULL;
    rt_bucket_t *bk = NULL;
    size_t nbk = 0;
    int has_distinct = 0;
    for (size_t i = 0; i < q->view->nmetrics; i++)
        has_distinct |= q->view->metrics[i].kind == LAM_METRIC_DISTINCT;

    /* Round 1: current run, epochs >= k, and the bucket index of the epochs seen last time. */
    int64_t guess[MAX_EPOCHS];
    size_t ng = 0;
    pthread_mutex_lock(&guess_lock);
    for (size_t i = 0; i < nguess; i++)
        if (guess_epochs[i] >= run)
            guess[ng++] = guess_epochs[i];
    pthread_mutex_unlock(&guess_lock);
    pipe_begin(&p);
    {
        const char *a1[2] = {"GET", LAM_STORE_CURRENT_KEY};
        pipe_cmd(&p, 2, a1, NULL);
        const char *a2[4] = {"ZRANGEBYSCORE", LAM_STORE_EPOCHS_KEY, runs, "+inf"};
        pipe_cmd(&p, 4, a2, NULL);
        for (size_t i = 0; i < ng; i++) {
            lam_store_rt_idx_key(&k1, guess[i], q->view->name);
            const char *a[4] = {"ZRANGEBYSCORE", k1.data, lo, hi};
            size_t l[4] = {13, k1.len, strlen(lo), strlen(hi)};
            pipe_cmd(&p, 4, a, l);
        }
    }
    if (!(r1 = pipe_exec(&p)))
        goto io_error;
    *current = reply_int(r1->element[0], 0);
    if (*current > run && run >= 0) {
        rcode = 1;
        goto out;
    }
    const redisReply *ep = r1->element[1];
    q->nepochs = 0;
    if (ep->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < ep->elements && q->nepochs < MAX_EPOCHS; i++)
            q->epochs[q->nepochs++] = reply_int(ep->element[i], 0);
    pthread_mutex_lock(&guess_lock);
    nguess = q->nepochs;
    memcpy(guess_epochs, q->epochs, q->nepochs * sizeof(int64_t));
    pthread_mutex_unlock(&guess_lock);
    /* Epochs not guessed: one more round for their indexes (rare: a new epoch appeared). */
    const redisReply *idx[MAX_EPOCHS] = {0};
    size_t missing[MAX_EPOCHS], nmissing = 0;
    for (size_t e = 0; e < q->nepochs; e++) {
        size_t g;
        for (g = 0; g < ng && guess[g] != q->epochs[e]; g++)
            ;
        if (g < ng)
            idx[e] = r1->element[2 + g];
        else
            missing[nmissing++] = e;
    }
    if (nmissing) {
        pipe_begin(&p);
        for (size_t i = 0; i < nmissing; i++) {
            lam_store_rt_idx_key(&k1, q->epochs[missing[i]], q->view->name);
            const char *a[4] = {"ZRANGEBYSCORE", k1.data, lo, hi};
            size_t l[4] = {13, k1.len, strlen(lo), strlen(hi)};
            pipe_cmd(&p, 4, a, l);
        }
        if (!(r1b = pipe_exec(&p)))
            goto io_error;
        for (size_t i = 0; i < nmissing; i++)
            idx[missing[i]] = r1b->element[i];
    }
    for (size_t e = 0; e < q->nepochs; e++)
        if (idx[e] && idx[e]->type == REDIS_REPLY_ARRAY)
            nbk += idx[e]->elements;
    bk = lam_malloc((nbk + 1) * sizeof(rt_bucket_t));
    nbk = 0;
    for (size_t e = 0; e < q->nepochs; e++)
        if (idx[e] && idx[e]->type == REDIS_REPLY_ARRAY)
            for (size_t i = 0; i < idx[e]->elements; i++)
                bk[nbk++] = (rt_bucket_t){q->epochs[e], reply_int(idx[e]->element[i], INT64_MIN)};

    /* Round 2: the bucket hashes (and HLL key sets), atomically. */
    pipe_begin(&p);
    for (size_t i = 0; i < nbk; i++) {
        lam_store_rt_hash_key(&k1, bk[i].epoch, q->view->name, bk[i].bucket);
        const char *a[2] = {"HGETALL", k1.data};
        size_t l[2] = {7, k1.len};
        pipe_cmd(&p, 2, a, l);
        if (has_distinct) {
            lam_store_rt_hidx_key(&k1, bk[i].epoch, q->view->name, bk[i].bucket);
            const char *s[2] = {"SMEMBERS", k1.data};
            size_t sl[2] = {8, k1.len};
            pipe_cmd(&p, 2, s, sl);
        }
    }
    if (!has_distinct) {
        const char *a[2] = {"GET", LAM_STORE_CURRENT_KEY};
        pipe_cmd(&p, 2, a, NULL);
    }
    if (!(r2 = pipe_exec(&p)))
        goto io_error;
    size_t per = has_distinct ? 2 : 1;
    char warn[128];
    for (size_t i = 0; i < nbk; i++)
        merge_fields(q, r2->element[i * per], bk[i].bucket);
    if (!has_distinct) {
        *current = reply_int(r2->element[nbk], 0);
        rcode = *current > run && run >= 0 ? 1 : 0;
        goto out;
    }

    /* Counts are complete now: with top (not ordered by distinct) only the kept groups need HLLs. */
    serving_query_rank(q, 0);

    /* Round 3: the HLLs of the groups that pass the filters, then lam:batch:current once more. */
    pipe_begin(&p);
    size_t nh = 0;
    typedef struct href {
        size_t b, metric;
        const char *key;
        size_t klen;
    } href_t;
    size_t cap = 0;
    for (size_t i = 0; i < nbk; i++)
        if (r2->element[i * 2 + 1]->type == REDIS_REPLY_ARRAY)
            cap += r2->element[i * 2 + 1]->elements;
    href_t *hr = lam_malloc((cap + 1) * sizeof(href_t));
    for (size_t i = 0; i < nbk; i++) {
        const redisReply *set = r2->element[i * 2 + 1];
        if (set->type != REDIS_REPLY_ARRAY)
            continue;
        lam_store_rt_hash_key(&k1, bk[i].epoch, q->view->name, bk[i].bucket);
        for (size_t j = 0; j < set->elements; j++) {
            const redisReply *m = set->element[j];
            /* {hash key}:hll:{i}:{gkey} */
            if (m->type != REDIS_REPLY_STRING || m->len <= k1.len + 5 || memcmp(m->str, k1.data, k1.len) ||
                memcmp(m->str + k1.len, ":hll:", 5))
                continue;
            const char *s = m->str + k1.len + 5, *end = m->str + m->len;
            size_t mi = 0, digits = 0;
            while (s < end && *s >= '0' && *s <= '9' && digits < 4) {
                mi = mi * 10 + (size_t)(*s++ - '0');
                digits++;
            }
            if (!digits || s >= end || *s != ':' || mi >= q->view->nmetrics ||
                q->view->metrics[mi].kind != LAM_METRIC_DISTINCT)
                continue;
            s++;
            if (!serving_query_key_match(q, s, (size_t)(end - s)) || !serving_query_kept(q, s, (size_t)(end - s)))
                continue;
            hr[nh] = (href_t){i, mi, s, (size_t)(end - s)};
            const char *a[2] = {"GET", m->str};
            size_t l[2] = {3, m->len};
            pipe_cmd(&p, 2, a, l);
            nh++;
        }
    }
    {
        const char *a[2] = {"GET", LAM_STORE_CURRENT_KEY};
        pipe_cmd(&p, 2, a, NULL);
    }
    if (!(r3 = pipe_exec(&p))) {
        lam_free(hr);
        goto io_error;
    }
    for (size_t i = 0; i < nh; i++) {
        const redisReply *v = r3->element[i];
        if (v->type != REDIS_REPLY_STRING || !v->len)
            continue;
        lam_agg_merge_hll_redis(q->out, q->vi, lam_time_floor(bk[hr[i].b].bucket, q->gran), hr[i].key,
                                hr[i].klen, hr[i].metric, v->str, v->len, warn, sizeof(warn));
    }
    lam_free(hr);
    *current = reply_int(r3->element[nh], 0);
    rcode = *current > run && run >= 0 ? 1 : 0;
    goto out;

io_error:
    serving_redis_drop(ctx);
    rcode = -1;
out:
    serving_observe_backend(ctx, SB_REDIS, t0, rcode >= 0);
    if (r1)
        freeReplyObject(r1);
    if (r1b)
        freeReplyObject(r1b);
    if (r2)
        freeReplyObject(r2);
    if (r3)
        freeReplyObject(r3);
    lam_free(bk);
    lam_buf_free(&k1);
    return rcode;
}
