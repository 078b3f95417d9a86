/* speed_apply.c - one micro-batch: epochs, dedup, the shared view engine, and the script arguments. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lam_json.h"
#include "lam_kafka.h"
#include "lam_log.h"
#include "lam_mem.h"
#include "lam_service.h"
#include "lam_store.h"
#include "lam_time.h"
#include "speed.h"

void speed_parts_ensure(speed_ctx_t *ctx, int p)
{
    if (p < ctx->nparts)
        return;
    int n = p + 1;
    ctx->parts = lam_realloc(ctx->parts, (size_t)n * sizeof(*ctx->parts));
    for (int i = ctx->nparts; i < n; i++)
        ctx->parts[i] = (speed_part_t){0, SPEED_NO_OFFSET, 0, SPEED_NO_OFFSET, -1};
    ctx->nparts = n;
}

void speed_batch_add(speed_ctx_t *ctx, rd_kafka_message_t *msg)
{
    if (ctx->nrecs == 0) {
        ctx->batch_start_ms = lam_now_mono_ms();
        lam_buf_clear(&ctx->payloads);
        /* sized for a full batch of records of the average size seen, + 1/8: doubling from a power of two
         * made it up to twice the batch (8 MB for 20k records of ~230 bytes), the largest buffer we hold */
        size_t avg = ctx->rec_count ? (size_t)(ctx->rec_bytes / ctx->rec_count) : 0;
        size_t want = (size_t)ctx->cfg.batch_max * avg;
        want += want / 8 + 1;
        if (avg && (want > ctx->payloads.cap || want < ctx->payloads.cap / 2)) {
            ctx->payloads.data = lam_realloc(ctx->payloads.data, want);
            ctx->payloads.cap = want;
            ctx->payloads.data[0] = '\0';
        }
        if (!ctx->recs)
            ctx->recs = lam_calloc((size_t)ctx->cfg.batch_max, sizeof(*ctx->recs));
    }
    speed_rec_t *r = &ctx->recs[ctx->nrecs++];
    *r = (speed_rec_t){.offset = (int64_t)msg->offset, .partition = msg->partition};
    rd_kafka_headers_t *h;
    const void *hv;
    size_t hlen;
    /* A marker carries no value (DESIGN "Cut markers"; ingest never produces headers): only an empty record
     * is looked at for lam-cut. rd_kafka_message_headers parses and allocates a header list for every
     * record, even one without headers (~1,000 instructions, 8 % of the speed layer's per event). */
    if (msg->len == 0 && rd_kafka_message_headers(msg, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(h, LAM_CUT_HEADER, &hv, &hlen) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        r->cut = hv ? 1 : 2;
        r->cut_off = ctx->payloads.len;
        r->cut_len = hv ? hlen : 0;
        if (hv)
            lam_buf_append(&ctx->payloads, hv, hlen);
    }
    r->has_payload = msg->payload != NULL;
    r->pay_off = ctx->payloads.len;
    r->pay_len = msg->payload ? msg->len : 0;
    if (msg->payload)
        lam_buf_append(&ctx->payloads, msg->payload, msg->len);
    rd_kafka_message_destroy(msg); /* its fetch buffer is freed once no record of it is held */
}

void speed_batch_drop(speed_ctx_t *ctx)
{
    ctx->nrecs = 0;
}

void speed_apply_free(speed_ctx_t *ctx)
{
    speed_batch_drop(ctx);
    lam_free(ctx->recs);
    for (size_t i = 0; i < ctx->naggs; i++)
        lam_agg_free(ctx->aggs[i].agg);
    lam_free(ctx->aggs);
    lam_event_free(&ctx->ev);
    lam_buf_free(&ctx->ids);
    lam_buf_free(&ctx->payloads);
    speed_argv_free(&ctx->args);
    lam_buf_free(&ctx->kbuf);
    lam_buf_free(&ctx->kbuf2);
    lam_buf_free(&ctx->fbuf);
    lam_buf_free(&ctx->dkeys);
    lam_free(ctx->dorder);
    lam_free(ctx->idset);
    lam_free(ctx->idset_h);
    lam_free(ctx->hcells);
    lam_free(ctx->hcell_tab);
    lam_free(ctx->hvals);
    lam_free(ctx->hval_set);
    lam_buf_free(&ctx->hbytes);
    if (ctx->didx)
        for (size_t v = 0; v < lam_views_count(ctx->views); v++)
            lam_free(ctx->didx[v]);
    lam_free(ctx->didx);
    lam_free(ctx->has_distinct);
    lam_free(ctx->hcnt_h);
    lam_free(ctx->hcnt_n);
    lam_free(ctx->xcache);
    lam_free(ctx->xcache_ms);
    speed_argv_free(&ctx->xkeys);
    lam_free(ctx->ogroups);
    lam_free(ctx->ogtab);
    lam_free(ctx->ops);
    lam_buf_free(&ctx->obytes);
    lam_buf_free(&ctx->tx);
    lam_free(ctx->fence);
    lam_buf_free(&ctx->resp);
    lam_buf_free(&ctx->resp2);
    lam_buf_free(&ctx->resp3);
    speed_dedup_free(ctx);
}

/* ---- keys refreshed recently (EXPIRE, hidx membership) ---- */

static void xcache_clear(speed_ctx_t *ctx)
{
    if (ctx->xcache)
        memset(ctx->xcache, 0, ctx->xcache_cap * sizeof(*ctx->xcache));
    ctx->xcache_n = 0;
}

/* 1 when (salt, key) was refreshed within SPEED_REFRESH_MS; else remember it as refreshed now and return 0. */
static int xcache_fresh(speed_ctx_t *ctx, const char *key, size_t len, uint64_t salt, int64_t now)
{
    if (!ctx->xcache) {
        ctx->xcache_cap = 1 << 16;
        ctx->xcache = lam_calloc(ctx->xcache_cap, sizeof(*ctx->xcache));
        ctx->xcache_ms = lam_malloc(ctx->xcache_cap * sizeof(*ctx->xcache_ms));
    }
    if (2 * ctx->xcache_n >= ctx->xcache_cap)
        xcache_clear(ctx); /* simple and bounded: forget everything, renew once more */
    uint64_t h = lam_hll_hash(key, len) ^ salt;
    if (!h)
        h = 1;
    size_t mask = ctx->xcache_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        if (ctx->xcache[i] == h) {
            if (now - ctx->xcache_ms[i] < SPEED_REFRESH_MS)
                return 1;
            ctx->xcache_ms[i] = now;
            return 0;
        }
        if (!ctx->xcache[i]) {
            ctx->xcache[i] = h;
            ctx->xcache_ms[i] = now;
            ctx->xcache_n++;
            return 0;
        }
    }
}

void speed_batch_forget(speed_ctx_t *ctx)
{
    xcache_clear(ctx);
}

/*
 * 1 when the HLL key should be made dense now: n more values go to it and it has had cfg.hll_dense_at or
 * more since this process first wrote it (an estimate: the table forgets everything when half full, and
 * a key deleted and written again stays "dense" here; either only costs speed, never a value).
 */
static int hll_make_dense(speed_ctx_t *ctx, const char *key, size_t len, size_t n)
{
    if (ctx->cfg.hll_dense_at <= 0)
        return 0;
    if (!ctx->hcnt_h || 2 * ctx->hcnt_used >= ctx->hcnt_cap) {
        if (!ctx->hcnt_h) {
            ctx->hcnt_cap = 1 << 15;
            ctx->hcnt_h = lam_malloc(ctx->hcnt_cap * sizeof(*ctx->hcnt_h));
            ctx->hcnt_n = lam_malloc(ctx->hcnt_cap * sizeof(*ctx->hcnt_n));
        }
        memset(ctx->hcnt_h, 0, ctx->hcnt_cap * sizeof(*ctx->hcnt_h));
        ctx->hcnt_used = 0;
    }
    uint64_t h = lam_hll_hash(key, len) | 1;
    size_t mask = ctx->hcnt_cap - 1, i = h & mask;
    while (ctx->hcnt_h[i] && ctx->hcnt_h[i] != h)
        i = (i + 1) & mask;
    if (!ctx->hcnt_h[i]) {
        ctx->hcnt_h[i] = h;
        ctx->hcnt_n[i] = 0;
        ctx->hcnt_used++;
    }
    if (ctx->hcnt_n[i] == UINT32_MAX)
        return 0;
    uint64_t t = (uint64_t)ctx->hcnt_n[i] + n;
    if (t < (uint64_t)ctx->cfg.hll_dense_at) {
        ctx->hcnt_n[i] = (uint32_t)t;
        return 0;
    }
    ctx->hcnt_n[i] = UINT32_MAX;
    return 1;
}

/* Queue an EXPIRE of key unless it was renewed recently. */
static void expire_key(speed_ctx_t *ctx, const char *key, size_t len, int64_t now)
{
    if (xcache_fresh(ctx, key, len, 0x45585049ULL, now))
        return;
    speed_argv_add(&ctx->xkeys, key, len);
}

/* ---- count/sum/min/max deltas grouped per hash key ---- */

static void ops_reset(speed_ctx_t *ctx)
{
    ctx->nogroups = 0;
    ctx->nops = 0;
    lam_buf_clear(&ctx->obytes);
    if (!ctx->ogtab) {
        ctx->ogtab_cap = 1024;
        ctx->ogtab = lam_malloc(ctx->ogtab_cap * sizeof(*ctx->ogtab));
    }
    memset(ctx->ogtab, 0, ctx->ogtab_cap * sizeof(*ctx->ogtab));
}

static void ogtab_insert(speed_ctx_t *ctx, size_t idx)
{
    size_t mask = ctx->ogtab_cap - 1;
    for (size_t i = ctx->ogroups[idx].hash & mask;; i = (i + 1) & mask)
        if (!ctx->ogtab[i]) {
            ctx->ogtab[i] = (uint32_t)idx + 1;
            return;
        }
}

/* The group of hash key `key` (created empty when new). */
static uint32_t ops_group(speed_ctx_t *ctx, const char *key, size_t len)
{
    uint64_t h = lam_hll_hash(key, len);
    size_t mask = ctx->ogtab_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t o = ctx->ogtab[i];
        if (!o)
            break;
        speed_ogroup_t *g = &ctx->ogroups[o - 1];
        if (g->hash == h && g->key_len == len && !memcmp(ctx->obytes.data + g->key_off, key, len))
            return o - 1;
    }
    if (ctx->nogroups == ctx->ogroups_cap) {
        ctx->ogroups_cap = ctx->ogroups_cap ? 2 * ctx->ogroups_cap : 256;
        ctx->ogroups = lam_realloc(ctx->ogroups, ctx->ogroups_cap * sizeof(*ctx->ogroups));
    }
    size_t idx = ctx->nogroups++;
    ctx->ogroups[idx] = (speed_ogroup_t){ctx->obytes.len, len, h, 0, 0, 0, 0, 0};
    lam_buf_append(&ctx->obytes, key, len);
    if (2 * ctx->nogroups > ctx->ogtab_cap) {
        ctx->ogtab_cap *= 2;
        ctx->ogtab = lam_realloc(ctx->ogtab, ctx->ogtab_cap * sizeof(*ctx->ogtab));
        memset(ctx->ogtab, 0, ctx->ogtab_cap * sizeof(*ctx->ogtab));
        for (size_t i = 0; i < ctx->nogroups; i++)
            ogtab_insert(ctx, i);
    } else {
        ogtab_insert(ctx, idx);
    }
    return (uint32_t)idx;
}

static void ops_add(speed_ctx_t *ctx, uint32_t gi, char op, const char *f, size_t flen, const char *v, size_t vlen)
{
    if (ctx->nops == ctx->ops_cap) {
        ctx->ops_cap = ctx->ops_cap ? 2 * ctx->ops_cap : 1024;
        ctx->ops = lam_realloc(ctx->ops, ctx->ops_cap * sizeof(*ctx->ops));
    }
    ctx->ops[ctx->nops] = (speed_op_t){ctx->obytes.len, flen, vlen, 0, op};
    lam_buf_append(&ctx->obytes, f, flen);
    lam_buf_append(&ctx->obytes, v, vlen);
    speed_ogroup_t *g = &ctx->ogroups[gi];
    if (g->tail)
        ctx->ops[g->tail - 1].next = ctx->nops + 1;
    else
        g->head = ctx->nops + 1;
    g->tail = ++ctx->nops;
    if (op == 'c')
        g->nc++;
    else
        g->nm++;
}

#define SPEED_MAX_NM 1000 /* min/max fields per HMGET (Lua unpack's stack limit is ~8000) */

static void arg_add(speed_ctx_t *ctx, const void *data, size_t len);
static void arg_i64(speed_ctx_t *ctx, int64_t v);

/* nk, then per hash key: key, nc, nm, nc x (field, delta), nm x (op, field, value). */
static void ops_emit(speed_ctx_t *ctx)
{
    size_t nk = 0;
    for (size_t gi = 0; gi < ctx->nogroups; gi++) {
        const speed_ogroup_t *g = &ctx->ogroups[gi];
        if (g->nc || g->nm) /* a key with counts only is not in the script */
            nk += 1 + (g->nm > SPEED_MAX_NM ? (g->nm - 1) / SPEED_MAX_NM : 0);
    }
    arg_i64(ctx, (int64_t)nk);
    for (size_t gi = 0; gi < ctx->nogroups; gi++) {
        const speed_ogroup_t *g = &ctx->ogroups[gi];
        if (!g->nc && !g->nm)
            continue;
        const char *key = ctx->obytes.data + g->key_off;
        size_t nc = g->nc, left = g->nm;
        size_t mi = g->head; /* next min/max op to emit */
        int first = 1;
        while (first || left) {
            size_t nm = left > SPEED_MAX_NM ? SPEED_MAX_NM : left;
            arg_add(ctx, key, g->key_len);
            arg_i64(ctx, first ? (int64_t)nc : 0);
            arg_i64(ctx, (int64_t)nm);
            if (first)
                for (size_t o = g->head; o; o = ctx->ops[o - 1].next) {
                    const speed_op_t *op = &ctx->ops[o - 1];
                    if (op->op != 'c')
                        continue;
                    arg_add(ctx, ctx->obytes.data + op->off, op->flen);
                    arg_add(ctx, ctx->obytes.data + op->off + op->flen, op->vlen);
                }
            for (size_t k = 0; k < nm; mi = ctx->ops[mi - 1].next) {
                const speed_op_t *op = &ctx->ops[mi - 1];
                if (op->op == 'c')
                    continue;
                arg_add(ctx, &op->op, 1);
                arg_add(ctx, ctx->obytes.data + op->off, op->flen);
                arg_add(ctx, ctx->obytes.data + op->off + op->flen, op->vlen);
                k++;
            }
            left -= nm;
            first = 0;
        }
    }
}

/* ---- script arguments: ctx->args ---- */

static void arg_add(speed_ctx_t *ctx, const void *data, size_t len)
{
    speed_argv_add(&ctx->args, data, len);
}

/* Decimal of v ending at end (no snprintf: this runs a few times per event). */
static char *i64_dec(char *end, int64_t v)
{
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--end = '-';
    return end;
}

static void arg_i64(speed_ctx_t *ctx, int64_t v)
{
    char b[24], *e = b + sizeof(b), *p = i64_dec(e, v);
    arg_add(ctx, p, (size_t)(e - p));
}

/* ---- the plain commands of the batch's transaction: RESP in ctx->tx ---- */

static void tx_cmd(speed_ctx_t *ctx, size_t argc)
{
    speed_resp_cmd(&ctx->tx, argc);
    ctx->ntx++;
}

static void tx_arg(speed_ctx_t *ctx, const void *data, size_t len)
{
    speed_resp_arg(&ctx->tx, data, len);
}

static void tx_str(speed_ctx_t *ctx, const char *s)
{
    tx_arg(ctx, s, strlen(s));
}

static void tx_i64(speed_ctx_t *ctx, int64_t v)
{
    char b[24], *e = b + sizeof(b), *p = i64_dec(e, v);
    tx_arg(ctx, p, (size_t)(e - p));
}

/* ---- helpers ---- */

static lam_agg_t *epoch_agg(speed_ctx_t *ctx, int64_t epoch)
{
    for (size_t i = 0; i < ctx->naggs; i++)
        if (ctx->aggs[i].used && ctx->aggs[i].epoch == epoch)
            return ctx->aggs[i].agg;
    for (size_t i = 0; i < ctx->naggs; i++)
        if (!ctx->aggs[i].used) {
            ctx->aggs[i].used = 1;
            ctx->aggs[i].epoch = epoch;
            return ctx->aggs[i].agg;
        }
    if (ctx->naggs == ctx->aggs_cap) {
        ctx->aggs_cap = ctx->aggs_cap ? 2 * ctx->aggs_cap : 4;
        ctx->aggs = lam_realloc(ctx->aggs, ctx->aggs_cap * sizeof(*ctx->aggs));
    }
    ctx->aggs[ctx->naggs] = (speed_epoch_agg_t){epoch, lam_agg_new(ctx->agg_views), 1};
    return ctx->aggs[ctx->naggs++].agg;
}

static void aggs_reset(speed_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->naggs; i++)
        if (ctx->aggs[i].used) {
            lam_agg_reset(ctx->aggs[i].agg);
            ctx->aggs[i].used = 0;
        }
}

static int parse_run(const void *v, size_t len, int64_t *k)
{
    const char *s = v;
    if (len == 0 || len > 18)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (s[i] - '0');
    }
    *k = x;
    return 0;
}

/* Find the top-level "id" of a JSON event and decode it into ctx->ids. 1 found, 0 none, -1 not JSON. */
static int extract_id(speed_ctx_t *ctx, const char *json, size_t len, size_t *off, size_t *idlen)
{
    lam_json_t j;
    lam_json_init(&j, json, len, 0);
    if (lam_json_next(&j) != LAM_JSON_OBJECT)
        return -1;
    for (;;) {
        lam_json_tok_t t = lam_json_next(&j);
        if (t == LAM_JSON_OBJECT_END)
            return 0;
        if (t != LAM_JSON_KEY)
            return -1;
        int is_id = !j.tok_escaped && j.tok_len == 2 && !memcmp(j.tok, "id", 2);
        t = lam_json_next(&j);
        if (t == LAM_JSON_ERROR)
            return -1;
        if (is_id) {
            if (t != LAM_JSON_STRING)
                return -1;
            lam_buf_reserve(&ctx->ids, j.tok_len + 1);
            *off = ctx->ids.len;
            *idlen = lam_json_decode(j.tok, j.tok_len, ctx->ids.data + ctx->ids.len, NULL);
            ctx->ids.len += *idlen;
            return *idlen ? 1 : -1;
        }
        if (lam_json_skip(&j, t) < 0)
            return -1;
    }
}

/* 1 when an earlier record of the batch carries the same id (else remember this one). */
static int seen_in_batch(speed_ctx_t *ctx, uint32_t ri)
{
    const speed_rec_t *r = &ctx->recs[ri];
    const char *id = ctx->ids.data + r->id_off;
    size_t mask = ctx->idset_cap - 1;
    uint64_t h = r->idh;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t o = ctx->idset[i];
        if (!o) {
            ctx->idset[i] = ri + 1;
            ctx->idset_h[i] = h;
            return 0;
        }
        const speed_rec_t *q = &ctx->recs[o - 1];
        if (ctx->idset_h[i] == h && q->id_len == r->id_len && !memcmp(ctx->ids.data + q->id_off, id, r->id_len))
            return 1;
    }
}

static void log_poison(speed_ctx_t *ctx, const speed_rec_t *r, const char *why)
{
    int64_t now = lam_now_mono_ms();
    if (now - ctx->last_poison_log_ms < 1000) {
        ctx->poison_log_suppressed++;
        return;
    }
    char excerpt[80];
    lam_json_quote_excerpt(excerpt, sizeof(excerpt), ctx->payloads.data ? ctx->payloads.data + r->pay_off : "", r->pay_len);
    for (char *p = excerpt; *p; p++)
        if (*p == '"')
            *p = '\'';
    lam_warn("msg=\"skipping poison record\" partition=%d offset=%" PRId64 " error=\"%s\" record=\"%s\""
             " suppressed=%" PRIu64,
             (int)r->partition, r->offset, why, excerpt, ctx->poison_log_suppressed);
    ctx->last_poison_log_ms = now;
    ctx->poison_log_suppressed = 0;
}

/* ---- distinct values per HLL cell ---- */


static void distinct_reset(speed_ctx_t *ctx, size_t max_values)
{
    if (!ctx->has_distinct) {
        size_t nv = lam_views_count(ctx->views);
        ctx->has_distinct = lam_calloc(nv + 1, 1);
        for (size_t v = 0; v < nv; v++) {
            const lam_view_t *view = lam_views_get(ctx->views, v);
            for (size_t m = 0; m < view->nmetrics; m++)
                if (view->metrics[m].kind == LAM_METRIC_DISTINCT)
                    ctx->has_distinct[v] = 1;
        }
        ctx->didx = lam_calloc(nv + 1, sizeof(*ctx->didx));
        for (size_t v = 0; v < nv; v++) {
            const lam_view_t *view = lam_views_get(ctx->views, v);
            if (!ctx->has_distinct[v])
                continue;
            size_t n = view->nwhere + view->ngroup + view->nmetrics;
            ctx->didx[v] = lam_malloc(n ? n : 1);
            for (size_t i = 0; i < n; i++) {
                const lam_fieldref_t *ref = i < view->nwhere                 ? &view->where[i].field
                                            : i < view->nwhere + view->ngroup ? &view->group_by[i - view->nwhere]
                                                                              : &view->metrics[i - view->nwhere - view->ngroup].field;
                size_t k = 0;
                while (k < ctx->ndnames && !(ctx->dnames[k]->len == ref->len && !memcmp(ctx->dnames[k]->name, ref->name, ref->len)))
                    k++;
                if (k == ctx->ndnames && k < LAM_ARRAY_SIZE(ctx->dnames))
                    ctx->dnames[ctx->ndnames++] = ref;
                ctx->didx[v][i] = k < LAM_ARRAY_SIZE(ctx->dnames) ? (uint8_t)k : 0xff; /* 0xff: looked up each time */
            }
        }
    }
    ctx->nhcells = 0;
    ctx->nhvals = 0;
    lam_buf_clear(&ctx->hbytes);
    if (!ctx->hcell_tab) {
        ctx->hcell_tab_cap = 1024;
        ctx->hcell_tab = lam_malloc(ctx->hcell_tab_cap * sizeof(*ctx->hcell_tab));
    }
    memset(ctx->hcell_tab, 0, ctx->hcell_tab_cap * sizeof(*ctx->hcell_tab));
    /* sized for what the last batch needed (hval_new grows it): not for every record times every distinct
     * metric, which made it 1 MB at 10k records and each probe a cache miss */
    size_t need = 1024;
    while (need < 4 * max_values)
        need *= 2;
    if (need != ctx->hval_set_cap) {
        lam_free(ctx->hval_set);
        ctx->hval_set = lam_malloc(need * sizeof(*ctx->hval_set));
        ctx->hval_set_cap = need;
    }
    memset(ctx->hval_set, 0, ctx->hval_set_cap * sizeof(*ctx->hval_set));
}

static void hval_put(uint64_t *set, size_t mask, uint64_t h)
{
    size_t i = h & mask;
    while (set[i])
        i = (i + 1) & mask;
    set[i] = h;
}

static void hcell_tab_insert(speed_ctx_t *ctx, size_t idx)
{
    size_t mask = ctx->hcell_tab_cap - 1;
    for (size_t i = ctx->hcells[idx].hash & mask;; i = (i + 1) & mask)
        if (!ctx->hcell_tab[i]) {
            ctx->hcell_tab[i] = (uint32_t)idx + 1;
            return;
        }
}

static speed_hcell_t *hcell_get(speed_ctx_t *ctx, int64_t epoch, uint32_t view, int64_t bucket, uint32_t metric,
                                const char *key, size_t key_len)
{
    uint64_t h = lam_mix64(lam_hll_hash(key, key_len) ^ lam_mix64((uint64_t)epoch * 31 + view) ^ lam_mix64((uint64_t)bucket) ^
                     ((uint64_t)metric << 56));
    size_t mask = ctx->hcell_tab_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t o = ctx->hcell_tab[i];
        if (!o)
            break;
        speed_hcell_t *c = &ctx->hcells[o - 1];
        if (c->hash == h && c->epoch == epoch && c->view == view && c->bucket == bucket && c->metric == metric &&
            c->key_len == key_len && !memcmp(ctx->hbytes.data + c->key_off, key, key_len))
            return c;
    }
    if (ctx->nhcells == ctx->hcells_cap) {
        ctx->hcells_cap = ctx->hcells_cap ? 2 * ctx->hcells_cap : 256;
        ctx->hcells = lam_realloc(ctx->hcells, ctx->hcells_cap * sizeof(*ctx->hcells));
    }
    size_t idx = ctx->nhcells++;
    ctx->hcells[idx] = (speed_hcell_t){epoch, bucket, view, metric, ctx->hbytes.len, key_len, h, 0, 0};
    lam_buf_append(&ctx->hbytes, key, key_len);
    if (2 * ctx->nhcells > ctx->hcell_tab_cap) {
        ctx->hcell_tab_cap *= 2;
        ctx->hcell_tab = lam_realloc(ctx->hcell_tab, ctx->hcell_tab_cap * sizeof(*ctx->hcell_tab));
        memset(ctx->hcell_tab, 0, ctx->hcell_tab_cap * sizeof(*ctx->hcell_tab));
        for (size_t i = 0; i < ctx->nhcells; i++)
            hcell_tab_insert(ctx, i);
    } else {
        hcell_tab_insert(ctx, idx);
    }
    return &ctx->hcells[idx];
}

/* 1 when (cell, value) is new in this batch. 64-bit hashes: a collision (odds ~1e-10 per batch) would
 * only leave one value out of a PFADD, far below HLL's own error. */
static int hval_new(speed_ctx_t *ctx, uint64_t h)
{
    if (!h)
        h = 1;
    if (2 * (ctx->nhvals + 1) > ctx->hval_set_cap) { /* entries = hvals: keep it at most half full */
        size_t cap = 2 * ctx->hval_set_cap;
        uint64_t *set = lam_calloc(cap, sizeof(*set));
        for (size_t i = 0; i < ctx->hval_set_cap; i++)
            if (ctx->hval_set[i])
                hval_put(set, cap - 1, ctx->hval_set[i]);
        lam_free(ctx->hval_set);
        ctx->hval_set = set;
        ctx->hval_set_cap = cap;
    }
    size_t mask = ctx->hval_set_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        if (!ctx->hval_set[i]) {
            ctx->hval_set[i] = h;
            return 1;
        }
        if (ctx->hval_set[i] == h)
            return 0;
    }
}

/* The fields of one event as collect_distinct reads them (dnames), each looked up at most once. */
typedef struct dfields {
    const lam_event_t *ev;
    uint64_t have, have_h;
    const lam_field_t *f[64];
    uint64_t h[64]; /* lam_hll_hash of field k's value: the same distinct field (user) in several views */
} dfields_t;

/* Field i of view v (where, then group_by, then metrics) of an event of the full parse or of the projected
 * scan (whose fields only lam_event_get finds). */
static const lam_field_t *dfield(const speed_ctx_t *ctx, dfields_t *d, size_t v, size_t i, const lam_fieldref_t *ref)
{
    if (!d->ev->proj)
        return lam_view_field(d->ev, ref);
    uint8_t k = ctx->didx[v][i];
    if (k == 0xff)
        return lam_event_get(d->ev, ref->name, ref->len);
    if (!(d->have & (1ULL << k))) {
        d->f[k] = lam_event_get(d->ev, ref->name, ref->len);
        d->have |= 1ULL << k;
    }
    return d->f[k];
}

/* lam_hll_hash of the value f of field i of view v, computed once per event and field. */
static uint64_t dvalue_hash(const speed_ctx_t *ctx, dfields_t *d, size_t v, size_t i, const lam_field_t *f)
{
    uint8_t k = ctx->didx[v][i];
    if (k == 0xff)
        return lam_hll_hash(f->val, f->val_len);
    if (!(d->have_h & (1ULL << k))) {
        d->h[k] = lam_hll_hash(f->val, f->val_len);
        d->have_h |= 1ULL << k;
    }
    return d->h[k];
}

/*
 * lam_agg_event_cell for an event of either parse: 1 matched (bucket and group key set), 0 not.
 * A projected event's fields come from the per-event field cache (dfield); the key is the engine's
 * (lam_agg_group_key_fields), escapes and all.
 */
static int event_cell(const speed_ctx_t *ctx, dfields_t *d, size_t vi, const lam_view_t *v, int64_t *bucket,
                      lam_buf_t *key)
{
    if (!d->ev->proj)
        return lam_agg_event_cell(v, d->ev, bucket, key);
    for (size_t i = 0; i < v->nwhere; i++)
        if (!lam_where_match(&v->where[i], dfield(ctx, d, vi, i, &v->where[i].field)))
            return 0;
    *bucket = lam_time_floor(d->ev->ts_ms, v->granularity);
    const lam_field_t *fs[LAM_VIEW_GROUP_MAX];
    for (size_t i = 0; i < v->ngroup; i++)
        fs[i] = dfield(ctx, d, vi, v->nwhere + i, &v->group_by[i]);
    lam_agg_group_key_fields(v, fs, key);
    return 1;
}

/*
 * The values an event adds to the distinct metrics of its cells, for PFADD. The cell is the engine's
 * (lam_agg_event_cell), the value is exactly what lam_agg_add_event feeds its HLL (hval_new keeps
 * each (cell, value) once).
 */
static void collect_distinct(speed_ctx_t *ctx, int64_t epoch, const lam_event_t *ev)
{
    size_t nv = lam_views_count(ctx->views);
    dfields_t d;
    d.ev = ev;
    d.have = 0;
    d.have_h = 0;
    for (size_t vi = 0; vi < nv; vi++) {
        if (!ctx->has_distinct[vi])
            continue;
        const lam_view_t *v = lam_views_get(ctx->views, vi);
        int64_t bucket;
        lam_buf_clear(&ctx->kbuf);
        if (!event_cell(ctx, &d, vi, v, &bucket, &ctx->kbuf))
            continue;
        for (size_t mi = 0; mi < v->nmetrics; mi++) {
            if (v->metrics[mi].kind != LAM_METRIC_DISTINCT)
                continue;
            const lam_field_t *f = dfield(ctx, &d, vi, v->nwhere + v->ngroup + mi, &v->metrics[mi].field);
            if (!f || f->type == LAM_VAL_NULL)
                continue;
            speed_hcell_t *c = hcell_get(ctx, epoch, (uint32_t)vi, bucket, (uint32_t)mi, ctx->kbuf.data, ctx->kbuf.len);
            if (!hval_new(ctx, lam_mix64(dvalue_hash(ctx, &d, vi, v->nwhere + v->ngroup + mi, f) ^ c->hash)))
                continue;
            if (ctx->nhvals == ctx->hvals_cap) {
                ctx->hvals_cap = ctx->hvals_cap ? 2 * ctx->hvals_cap : 1024;
                ctx->hvals = lam_realloc(ctx->hvals, ctx->hvals_cap * sizeof(*ctx->hvals));
            }
            ctx->hvals[ctx->nhvals] = (speed_hval_t){ctx->hbytes.len, f->val_len, c->head};
            c->head = ++ctx->nhvals;
            c->n++;
            lam_buf_append(&ctx->hbytes, f->val, f->val_len);
        }
    }
}

typedef struct batch_counts {
    uint64_t events, poison, dups, old, markers;
} batch_counts_t;

/* Per-partition working state of the batch being built. */
typedef struct part_work {
    int64_t epoch;
    int64_t next;
    int touched;
} part_work_t;

/* Parse and apply the counted records whose check flag is `checked` through the shared view engine, one agg per epoch. */
static void apply_records(speed_ctx_t *ctx, batch_counts_t *cnt, int checked)
{
    int64_t now = lam_time_now_ms();
    char err[256];
    for (size_t i = 0; i < ctx->nrecs; i++) {
        speed_rec_t *r = &ctx->recs[i];
        if (r->check != checked)
            continue;
        switch (r->kind) {
        case SPEED_REC_MARKER:
            cnt->markers++;
            continue;
        case SPEED_REC_POISON:
            cnt->poison++;
            continue;
        case SPEED_REC_OLD:
            cnt->old++;
            continue;
        case SPEED_REC_DUP:
            cnt->dups++;
            continue;
        case SPEED_REC_STALE:
            continue;
        default:
            break;
        }
        const char *why = NULL;
        const char *pay = ctx->payloads.data + r->pay_off;
        lam_agg_t *agg = NULL;
        if (r->has_payload && r->pay_len)
            agg = epoch_agg(ctx, r->epoch);
        /* the projected scan (only the views' fields) when it takes the record, else the full parser;
         * both give the engine the same event (README "Parse") */
        const lam_event_proj_t *pj = agg && !ctx->cfg.full_parse ? lam_agg_projection(agg) : NULL;
        if (!r->has_payload || r->pay_len == 0) {
            why = "empty record";
        } else if (!(pj && lam_event_parse_projected(&ctx->ev, pay, r->pay_len, pj)) &&
                   lam_event_parse(&ctx->ev, pay, r->pay_len, now, -1, err, sizeof(err)) < 0) {
            why = err;
        } else if (!ctx->ev.ts_given) {
            why = "not canonical: no ts";
        } else if ((ctx->ev.id.type == LAM_VAL_STRING) != (r->id_len > 0) ||
                   (r->id_len && (ctx->ev.id.val_len != r->id_len ||
                                  memcmp(ctx->ev.id.val, ctx->ids.data + r->id_off, r->id_len)))) {
            why = "not canonical: id";
        }
        if (why) {
            r->kind = SPEED_REC_POISON;
            cnt->poison++;
            log_poison(ctx, r, why);
            continue;
        }
        lam_agg_add_event(agg, &ctx->ev);
        collect_distinct(ctx, r->epoch, &ctx->ev);
        cnt->events++;
    }

}

/* The record of the batch carrying id (the first one: later copies are DUP already), or -1. */
static long batch_find_id(const speed_ctx_t *ctx, const char *id, size_t len)
{
    size_t mask = ctx->idset_cap - 1;
    uint64_t h = speed_dedup_id_hash(id, len);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t o = ctx->idset[i];
        if (!o)
            return -1;
        const speed_rec_t *q = &ctx->recs[o - 1];
        if (ctx->idset_h[i] == h && q->id_len == len && !memcmp(ctx->ids.data + q->id_off, id, len))
            return (long)o - 1;
    }
}

/* A dedup record string read back: its ids that a record still to be checked carries, first counted at
 * another position, make that record a duplicate (the same position: our own batch, replayed). */
static void scan_record(speed_ctx_t *ctx, void *opaque, size_t i, const char *v, size_t len)
{
    (void)opaque;
    (void)i;
    const char *p = v, *end = v + len, *id;
    char uuid[SPEED_DEDUP_UUID_LEN];
    size_t idlen;
    int64_t part, off;
    int rc;
    while ((rc = speed_dedup_entry_next(&p, end, uuid, &id, &idlen, &part, &off)) == 1) {
        long ri = batch_find_id(ctx, id, idlen);
        if (ri < 0)
            continue;
        speed_rec_t *r = &ctx->recs[ri];
        if (r->check && r->kind == SPEED_REC_EVENT && (part != r->partition || off != r->offset))
            r->kind = SPEED_REC_DUP;
    }
    if (rc < 0)
        lam_warn("msg=\"malformed dedup record, its remaining entries are ignored\"");
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Mark the batch's ids first counted elsewhere as duplicates (README "Dedup"): the shard record strings
 * of the (session, slot)s whose filters may hold them; with the slot hashes of the previous layout that
 * existed when the offsets were read, every id in them. 0 or -1 (Redis failed).
 */
static int dedup_lookup(speed_ctx_t *ctx, size_t nlookup, int64_t lo, int64_t hi)
{
    int rc = 0;
    /* slot hashes: the previous layout's and the ones over the filters' budget (other sessions' copied
     * when the offsets were read, this session's written) */
    lam_buf_t hkeys = LAM_BUF_INIT, one = LAM_BUF_INIT;
    size_t nh = ctx->nother_keys;
    lam_buf_append(&hkeys, ctx->other_keys.data, ctx->other_keys.len);
    for (int64_t sl = lo; sl <= hi; sl++)
        if (speed_dedup_over_budget(ctx, ctx->dedup_token, sl)) {
            speed_dedup_slot_key(&one, sl, ctx->dedup_token);
            lam_buf_append(&hkeys, one.data, one.len + 1);
            nh++;
        }
    lam_buf_free(&one);
    if (nh) {
        const char **ids = lam_malloc(nlookup * sizeof(*ids));
        size_t *lens = lam_malloc(nlookup * sizeof(*lens));
        uint32_t *which = lam_malloc(nlookup * sizeof(*which));
        uint8_t *found = lam_calloc(nlookup, 1), *maybe = lam_calloc(nlookup, 1);
        const char **keys = lam_malloc(nh * sizeof(*keys));
        size_t *klens = lam_malloc(nh * sizeof(*klens));
        uint8_t *key_own = lam_calloc(nh, 1);
        size_t n = 0;
        for (size_t i = 0; i < ctx->nrecs; i++) {
            speed_rec_t *r = &ctx->recs[i];
            if (!r->check)
                continue;
            ids[n] = ctx->ids.data + r->id_off;
            lens[n] = r->id_len;
            which[n++] = (uint32_t)i;
        }
        const char *k = hkeys.data;
        for (size_t i = 0; i < nh; i++, k += klens[i - 1] + 1) {
            keys[i] = k;
            klens[i] = strlen(k);
        }
        rc = speed_redis_dedup_lookup(ctx, nh, keys, klens, key_own, n, ids, lens, which, maybe, found);
        for (size_t j = 0; rc == 0 && j < n; j++)
            if (found[j])
                ctx->recs[which[j]].kind = SPEED_REC_DUP;
        lam_free(keys);
        lam_free(klens);
        lam_free(key_own);
        lam_free(ids);
        lam_free(lens);
        lam_free(which);
        lam_free(found);
        lam_free(maybe);
    }
    lam_buf_free(&hkeys);
    if (rc < 0)
        return -1;
    /* this layout: each shard key whose filter hits, once */
    lam_buf_clear(&ctx->dkeys);
    size_t nk = 0;
    for (size_t i = 0; i < ctx->nrecs; i++) {
        speed_rec_t *r = &ctx->recs[i];
        if (r->check && r->kind == SPEED_REC_EVENT)
            nk += speed_dedup_hit_keys(ctx, r->idh, speed_dedup_shard(r->idh), &ctx->dkeys);
    }
    if (!nk)
        return 0;
    const char **names = lam_malloc(nk * sizeof(*names));
    const char *k = ctx->dkeys.data;
    for (size_t i = 0; i < nk; i++, k += strlen(k) + 1)
        names[i] = k;
    qsort(names, nk, sizeof(*names), cmp_cstr);
    lam_buf_t uniq = LAM_BUF_INIT;
    size_t nu = 0;
    for (size_t i = 0; i < nk; i++)
        if (i == 0 || strcmp(names[i], names[i - 1])) {
            lam_buf_append(&uniq, names[i], strlen(names[i]) + 1);
            nu++;
        }
    lam_free(names);
    rc = speed_redis_get_each(ctx, nu, uniq.data, scan_record, NULL);
    lam_buf_free(&uniq);
    return rc;
}

/*
 * Classify the batch, look up dedup keys, aggregate, and lay out the script arguments.
 * Returns 0, or -1 when Redis failed (connection dropped).
 */
static int batch_build(speed_ctx_t *ctx, batch_counts_t *cnt, part_work_t *pw)
{
    memset(cnt, 0, sizeof(*cnt));
    aggs_reset(ctx);
    speed_argv_clear(&ctx->xkeys);
    lam_buf_clear(&ctx->ids);
    speed_argv_clear(&ctx->args);
    for (int p = 0; p < ctx->nparts; p++)
        pw[p] = (part_work_t){ctx->parts[p].epoch, ctx->parts[p].stored, 0};
    size_t need = 16;
    while (need < 2 * ctx->nrecs)
        need *= 2;
    if (need > ctx->idset_cap) {
        lam_free(ctx->idset);
        lam_free(ctx->idset_h);
        ctx->idset = lam_malloc(need * sizeof(*ctx->idset));
        ctx->idset_h = lam_malloc(need * sizeof(*ctx->idset_h));
        ctx->idset_cap = need;
    }
    memset(ctx->idset, 0, ctx->idset_cap * sizeof(*ctx->idset));

    /* Pass 1: markers and epochs, skip old epochs, find ids, drop repeats within the batch. */
    size_t nlookup = 0;
    for (size_t i = 0; i < ctx->nrecs; i++) {
        speed_rec_t *r = &ctx->recs[i];
        int p = r->partition;
        r->id_len = 0;
        if (p >= ctx->nparts || !ctx->parts[p].assigned) {
            r->kind = SPEED_REC_STALE;
            continue;
        }
        pw[p].touched = 1;
        pw[p].next = r->offset + 1;
        if (r->cut) {
            int64_t k;
            if (r->cut == 2 || parse_run(ctx->payloads.data + r->cut_off, r->cut_len, &k) < 0) {
                r->kind = SPEED_REC_POISON;
                log_poison(ctx, r, "bad lam-cut header");
                continue;
            }
            r->kind = SPEED_REC_MARKER;
            pw[p].epoch = k;
            continue;
        }
        r->epoch = pw[p].epoch;
        if (r->epoch < ctx->current_run) {
            r->kind = SPEED_REC_OLD;
            continue;
        }
        r->kind = SPEED_REC_EVENT;
        if (!r->has_payload)
            continue; /* poison, found in pass 2 */
        int f = extract_id(ctx, ctx->payloads.data + r->pay_off, r->pay_len, &r->id_off, &r->id_len);
        if (f <= 0) {
            r->id_len = 0;
            continue; /* no id (pass 2 decides whether it is an event at all) */
        }
        r->idh = speed_dedup_id_hash(ctx->ids.data + r->id_off, r->id_len);
        if (seen_in_batch(ctx, (uint32_t)i)) {
            r->kind = SPEED_REC_DUP;
            continue;
        }
        nlookup++;
    }

    /* Dedup: where was each id first counted? (slot hashes, see README "Dedup") */
    int64_t slot_s = dedup_slot_seconds(ctx);
    int64_t cur_slot = lam_time_now_ms() / 1000 / slot_s;
    /* the slots that may hold an id written within the window (+1 each side for clock skew) */
    int64_t lo = cur_slot - (ctx->cfg.dedup_window_ms / 1000 + slot_s - 1) / slot_s - 1;
    speed_dedup_prune(ctx, lo);
    /* ids that may have been counted before: any, when other sessions' slot hashes exist; else the Bloom hits */
    nlookup = 0;
    for (size_t i = 0; i < ctx->nrecs; i++) {
        speed_rec_t *r = &ctx->recs[i];
        r->check = r->kind == SPEED_REC_EVENT && r->id_len &&
                   (ctx->nother_keys || speed_dedup_maybe(ctx, r->idh));
        nlookup += r->check;
    }

    int64_t mono = lam_now_mono_ms();
    size_t ndistinct = 0;
    for (size_t v = 0; v < lam_views_count(ctx->views); v++) {
        const lam_view_t *view = lam_views_get(ctx->views, v);
        for (size_t mi = 0; mi < view->nmetrics; mi++)
            ndistinct += view->metrics[mi].kind == LAM_METRIC_DISTINCT;
    }
    distinct_reset(ctx, ndistinct ? ctx->nhvals : 0); /* the last batch's distinct values */
    /* Pass 2: records that need no lookup first (Redis is still executing the batch sent before),
     * then the pending batch's outcome, the lookup, and the records that needed it. */
    apply_records(ctx, cnt, 0);
    if (ctx->pending && speed_batch_complete(ctx) < 0)
        return -1;
    if (nlookup && dedup_lookup(ctx, nlookup, lo, cur_slot + 1) < 0)
        return -1;
    apply_records(ctx, cnt, 1);

    /*
     * The transaction (README "Write path"): the script's arguments (speed_script.c) in ctx->args,
     * the plain commands in ctx->tx, the fences (partition, stored offset we expect) in ctx->fence.
     */
    lam_buf_clear(&ctx->tx);
    ctx->ntx = 0;
    ctx->nfence = 0;
    lam_buf_t sessk = LAM_BUF_INIT;
    speed_dedup_sessions_key(&sessk);
    arg_add(ctx, sessk.data, sessk.len);
    char ttl[24], *ttl_p = i64_dec(ttl + sizeof(ttl), ctx->cfg.key_ttl_ms / 1000);
    size_t ttl_len = (size_t)(ttl + sizeof(ttl) - ttl_p);
    size_t np = 0;
    for (int p = 0; p < ctx->nparts; p++)
        np += pw[p].touched != 0;
    if (np > ctx->fence_cap) {
        ctx->fence_cap = np;
        ctx->fence = lam_realloc(ctx->fence, np * sizeof(*ctx->fence));
    }
    for (int p = 0; p < ctx->nparts; p++)
        if (pw[p].touched)
            ctx->fence[ctx->nfence++] = (speed_fence_t){p, ctx->parts[p].stored};
    if (np) {
        for (int which = 0; which < 2; which++) {
            tx_cmd(ctx, 2 + 2 * np);
            tx_str(ctx, "HSET");
            tx_str(ctx, which ? ctx->epochs_key : ctx->offsets_key);
            for (int p = 0; p < ctx->nparts; p++)
                if (pw[p].touched) {
                    tx_i64(ctx, p);
                    tx_i64(ctx, which ? pw[p].epoch : pw[p].next);
                }
        }
    }
    size_t ne = 0;
    for (size_t a = 0; a < ctx->naggs; a++)
        ne += ctx->aggs[a].used && lam_agg_size(ctx->aggs[a].agg);
    if (ne) {
        tx_cmd(ctx, 2 + 2 * ne);
        tx_str(ctx, "ZADD");
        tx_str(ctx, LAM_STORE_EPOCHS_KEY);
        for (size_t a = 0; a < ctx->naggs; a++)
            if (ctx->aggs[a].used && lam_agg_size(ctx->aggs[a].agg)) {
                tx_i64(ctx, ctx->aggs[a].epoch);
                tx_i64(ctx, ctx->aggs[a].epoch);
            }
        tx_cmd(ctx, 3);
        tx_str(ctx, "EXPIRE");
        tx_str(ctx, LAM_STORE_EPOCHS_KEY);
        tx_arg(ctx, ttl_p, ttl_len);
    }

    /*
     * Dedup: every counted event with an id, where it was first counted, appended to the record string
     * of its shard in the current slot (README "Dedup"): one APPEND per shard, not one hash field per id.
     */
    size_t nd = 0, nhash = 0;
    unsigned scnt[SPEED_DEDUP_SHARDS + 1] = {0};
    for (size_t i = 0; i < ctx->nrecs; i++) {
        speed_rec_t *r = &ctx->recs[i];
        if (r->kind != SPEED_REC_EVENT || !r->id_len)
            continue;
        /* into the filter before the outcome is known: a superset is safe, a hit is only a reason to look */
        if (!speed_dedup_add(ctx, ctx->dedup_token, cur_slot, r->idh)) {
            r->shard = SPEED_SHARD_HASH; /* filters over budget: one field of the slot hash */
            nhash++;
            continue;
        }
        r->shard = (uint16_t)speed_dedup_shard(r->idh);
        scnt[r->shard + 1]++;
        nd++;
    }
    lam_buf_t guards = LAM_BUF_INIT;
    size_t nguards = 0;
    if (nd) {
        if (nd > ctx->dorder_cap) {
            ctx->dorder_cap = (size_t)ctx->cfg.batch_max > nd ? (size_t)ctx->cfg.batch_max : nd;
            ctx->dorder = lam_realloc(ctx->dorder, ctx->dorder_cap * sizeof(*ctx->dorder));
        }
        for (unsigned sh = 0; sh < SPEED_DEDUP_SHARDS; sh++)
            scnt[sh + 1] += scnt[sh];
        unsigned fill[SPEED_DEDUP_SHARDS];
        memcpy(fill, scnt, sizeof(fill));
        for (size_t i = 0; i < ctx->nrecs; i++) {
            const speed_rec_t *r = &ctx->recs[i];
            if (r->kind == SPEED_REC_EVENT && r->id_len && r->shard != SPEED_SHARD_HASH)
                ctx->dorder[fill[r->shard]++] = (uint32_t)i;
        }
        int64_t expire_at = (cur_slot + 2) * slot_s + ctx->cfg.dedup_window_ms / 1000;
        lam_buf_t *sk = &ctx->kbuf, *ent = &ctx->fbuf;
        for (unsigned sh = 0; sh < SPEED_DEDUP_SHARDS; sh++) {
            if (scnt[sh] == scnt[sh + 1])
                continue;
            speed_dedup_shard_key(sk, cur_slot, ctx->dedup_token, sh);
            lam_buf_clear(ent);
            for (unsigned j = scnt[sh]; j < scnt[sh + 1]; j++) {
                const speed_rec_t *r = &ctx->recs[ctx->dorder[j]];
                speed_dedup_entry(ent, ctx->ids.data + r->id_off, r->id_len, r->partition, r->offset);
            }
            tx_cmd(ctx, 3);
            tx_str(ctx, "APPEND");
            tx_arg(ctx, sk->data, sk->len);
            tx_arg(ctx, ent->data, ent->len);
            if (!xcache_fresh(ctx, sk->data, sk->len, 0x44454450ULL, mono)) {
                /* new (or not known to exist): the script makes sure it is a string; kept until the
                 * window has passed after the slot's end (+ one slot for clock skew) */
                lam_buf_append(&guards, sk->data, sk->len + 1);
                nguards++;
                tx_cmd(ctx, 3);
                tx_str(ctx, "EXPIREAT");
                tx_arg(ctx, sk->data, sk->len);
                tx_i64(ctx, expire_at);
            }
        }
    }
    lam_buf_t hguard = LAM_BUF_INIT;
    if (nhash) {
        /* over the filters' budget: those ids as fields of the slot hash (the previous layout) */
        lam_buf_t *hk = &ctx->kbuf;
        speed_dedup_slot_key(hk, cur_slot, ctx->dedup_token);
        tx_cmd(ctx, 2 + 2 * nhash);
        tx_str(ctx, "HSET");
        tx_arg(ctx, hk->data, hk->len);
        for (size_t i = 0; i < ctx->nrecs; i++) {
            const speed_rec_t *r = &ctx->recs[i];
            if (r->kind != SPEED_REC_EVENT || !r->id_len || r->shard != SPEED_SHARD_HASH)
                continue;
            tx_arg(ctx, ctx->ids.data + r->id_off, r->id_len);
            char b[48], *e = b + sizeof(b), *q = i64_dec(e, r->offset);
            *--q = ':';
            q = i64_dec(q, r->partition);
            tx_arg(ctx, q, (size_t)(e - q));
        }
        if (!xcache_fresh(ctx, hk->data, hk->len, 0x44454450ULL, mono)) {
            lam_buf_append(&hguard, hk->data, hk->len + 1);
            tx_cmd(ctx, 3);
            tx_str(ctx, "EXPIREAT");
            tx_arg(ctx, hk->data, hk->len);
            tx_i64(ctx, (cur_slot + 2) * slot_s + ctx->cfg.dedup_window_ms / 1000);
        }
    }
    if (nd || nhash) {
        /* this session in the sessions zset (its last write), sessions that no longer matter out */
        int64_t now_s = lam_time_now_ms() / 1000, keep = speed_dedup_keep_s(ctx);
        tx_cmd(ctx, 4);
        tx_str(ctx, "ZADD");
        tx_arg(ctx, sessk.data, sessk.len);
        tx_i64(ctx, now_s);
        tx_str(ctx, ctx->dedup_token);
        tx_cmd(ctx, 4);
        tx_str(ctx, "ZREMRANGEBYSCORE");
        tx_arg(ctx, sessk.data, sessk.len);
        tx_str(ctx, "-inf");
        tx_i64(ctx, now_s - keep - 1);
        tx_cmd(ctx, 3);
        tx_str(ctx, "EXPIRE");
        tx_arg(ctx, sessk.data, sessk.len);
        tx_i64(ctx, keep);
    }
    arg_i64(ctx, (int64_t)nguards);
    for (const char *gk = guards.data; nguards--; gk += strlen(gk) + 1)
        arg_add(ctx, gk, strlen(gk));
    lam_buf_free(&guards);
    arg_i64(ctx, hguard.len ? 1 : 0);
    if (hguard.len)
        arg_add(ctx, hguard.data, hguard.len - 1);
    lam_buf_free(&hguard);

    /* Count/sum/min/max deltas grouped per hash key (see speed_script.c), then bucket index ZADDs. */
    ops_reset(ctx);
    lam_buf_t *hk = &ctx->kbuf, *xk = &ctx->kbuf2, *fb = &ctx->fbuf;
    lam_buf_t hllk = LAM_BUF_INIT;
    char num[24];
    for (size_t a = 0; a < ctx->naggs; a++) {
        if (!ctx->aggs[a].used)
            continue;
        int64_t epoch = ctx->aggs[a].epoch;
        size_t it = 0;
        lam_cell_t *c;
        /* cells of one (view, bucket) share their hash key: build it once per run of equal cells */
        size_t last_view = (size_t)-1;
        int64_t last_bucket = INT64_MIN;
        uint32_t g = 0;
        while ((c = lam_agg_next(ctx->aggs[a].agg, &it))) {
            const lam_view_t *v = lam_views_get(ctx->views, lam_cell_view(c));
            int64_t bucket = lam_cell_ts(c);
            size_t glen;
            const char *gkey = lam_cell_key(c, &glen);
            if (lam_cell_view(c) != last_view || bucket != last_bucket) {
                last_view = lam_cell_view(c);
                last_bucket = bucket;
                lam_store_rt_hash_key(hk, epoch, v->name, bucket);
                g = ops_group(ctx, hk->data, hk->len);
                if (!ctx->ogroups[g].seen) {
                    ctx->ogroups[g].seen = 1;
                    lam_store_rt_idx_key(xk, epoch, v->name);
                    expire_key(ctx, hk->data, hk->len, mono);
                    expire_key(ctx, xk->data, xk->len, mono);
                    if (!xcache_fresh(ctx, hk->data, hk->len, 0x5a414444ULL, mono)) { /* bucket not indexed lately */
                        tx_cmd(ctx, 4);
                        tx_str(ctx, "ZADD");
                        tx_arg(ctx, xk->data, xk->len);
                        tx_i64(ctx, bucket);
                        tx_i64(ctx, bucket);
                    }
                }
            }
            /* the count: a plain HINCRBY (it cannot overflow an int64, so it needs no script: a field
             * through the script cost Redis ~2.5x a plain command) */
            lam_store_rt_field(fb, 0, gkey, glen);
            char *dp = i64_dec(num + sizeof(num), lam_cell_count(c));
            tx_cmd(ctx, 4);
            tx_str(ctx, "HINCRBY");
            tx_arg(ctx, hk->data, hk->len);
            tx_arg(ctx, fb->data, fb->len);
            tx_arg(ctx, dp, (size_t)(num + sizeof(num) - dp));
            for (size_t mi = 0; mi < v->nmetrics; mi++) {
                lam_metric_kind_t kind = v->metrics[mi].kind;
                if (kind == LAM_METRIC_COUNT)
                    continue; /* field 0 holds the count */
                if (kind == LAM_METRIC_DISTINCT)
                    continue; /* PFADD section below */
                int64_t micro = 0;
                lam_cell_status_t st = kind == LAM_METRIC_SUM   ? lam_cell_sum(c, mi, &micro)
                                       : kind == LAM_METRIC_MIN ? lam_cell_min(c, mi, &micro)
                                                                : lam_cell_max(c, mi, &micro);
                if (st == LAM_CELL_EMPTY)
                    continue;
                lam_store_rt_field(fb, 1 + mi, gkey, glen);
                char op = st == LAM_CELL_OVERFLOW ? 'o'
                          : kind == LAM_METRIC_SUM ? 'c'
                          : kind == LAM_METRIC_MIN ? 'n'
                                                   : 'x';
                dp = i64_dec(num + sizeof(num), micro);
                ops_add(ctx, g, op, fb->data, fb->len, dp, (size_t)(num + sizeof(num) - dp));
            }
        }
    }
    ops_emit(ctx);

    /* Distinct metrics: PFADD of the batch's distinct values per HLL key, the key into its hidx set. A key
     * that has had LAM_SPEED_HLL_DENSE_AT values is first made dense: PFMERGE of itself and an empty dense
     * HLL (a temporary key of this session, deleted in the same transaction). The registers are the same
     * (max with zeros), so the PFADD that follows gives what it gives on the sparse key (README "Distinct"). */
    lam_buf_t dtmp = LAM_BUF_INIT;
    for (size_t hc = 0; hc < ctx->nhcells; hc++) {
        const speed_hcell_t *c = &ctx->hcells[hc];
        const char *vname = lam_views_get(ctx->views, c->view)->name;
        lam_store_rt_hll_key(&hllk, c->epoch, vname, c->bucket, c->metric, ctx->hbytes.data + c->key_off,
                             c->key_len);
        lam_store_rt_hidx_key(xk, c->epoch, vname, c->bucket);
        if (hll_make_dense(ctx, hllk.data, hllk.len, c->n)) {
            if (!dtmp.len) {
                lam_store_speed_key(&dtmp, ctx->cfg.group, "dense-hll");
                lam_buf_append(&dtmp, ":", 1);
                lam_buf_append(&dtmp, ctx->dedup_token, strlen(ctx->dedup_token));
                lam_hll_t *empty = lam_hll_new();
                uint8_t blob[LAM_HLL_DENSE_SIZE];
                lam_hll_to_redis_dense(empty, blob);
                lam_hll_free(empty);
                tx_cmd(ctx, 3);
                tx_str(ctx, "SET");
                tx_arg(ctx, dtmp.data, dtmp.len);
                tx_arg(ctx, blob, sizeof(blob));
            }
            tx_cmd(ctx, 4);
            tx_str(ctx, "PFMERGE");
            tx_arg(ctx, hllk.data, hllk.len);
            tx_arg(ctx, hllk.data, hllk.len);
            tx_arg(ctx, dtmp.data, dtmp.len);
        }
        tx_cmd(ctx, 2 + c->n);
        tx_str(ctx, "PFADD");
        tx_arg(ctx, hllk.data, hllk.len);
        for (size_t vi = c->head; vi; vi = ctx->hvals[vi - 1].next)
            tx_arg(ctx, ctx->hbytes.data + ctx->hvals[vi - 1].off, ctx->hvals[vi - 1].len);
        if (!xcache_fresh(ctx, hllk.data, hllk.len, 0x53414444ULL, mono)) { /* not a member of hidx lately */
            tx_cmd(ctx, 3);
            tx_str(ctx, "SADD");
            tx_arg(ctx, xk->data, xk->len);
            tx_arg(ctx, hllk.data, hllk.len);
        }
        expire_key(ctx, hllk.data, hllk.len, mono);
        expire_key(ctx, xk->data, xk->len, mono);
    }
    if (dtmp.len) {
        tx_cmd(ctx, 2);
        tx_str(ctx, "DEL");
        tx_arg(ctx, dtmp.data, dtmp.len);
    }
    lam_buf_free(&dtmp);
    lam_buf_free(&hllk);

    /* EXPIRE of the real-time keys not renewed within the hour. */
    for (size_t i = 0; i < ctx->xkeys.n; i++) {
        tx_cmd(ctx, 3);
        tx_str(ctx, "EXPIRE");
        tx_arg(ctx, ctx->xkeys.bytes.data + ctx->xkeys.off[2 * i], ctx->xkeys.off[2 * i + 1]);
        tx_arg(ctx, ttl_p, ttl_len);
    }

    lam_buf_free(&sessk);

    /* The last few counted events, in order, for the live tail (records are canonical JSON). */
    size_t first = ctx->nrecs, nt = 0;
    while (first > 0 && nt < SPEED_TAIL_PER_BATCH)
        if (ctx->recs[--first].kind == SPEED_REC_EVENT)
            nt++;
    for (size_t i = first; i < ctx->nrecs; i++)
        if (ctx->recs[i].kind == SPEED_REC_EVENT) {
            tx_cmd(ctx, 8);
            tx_str(ctx, "XADD");
            tx_str(ctx, LAM_STORE_TAIL_KEY);
            tx_str(ctx, "MAXLEN");
            tx_str(ctx, "~");
            tx_str(ctx, SPEED_TAIL_MAXLEN);
            tx_str(ctx, "*");
            tx_str(ctx, "event");
            tx_arg(ctx, ctx->payloads.data + ctx->recs[i].pay_off, ctx->recs[i].pay_len);
        }
    return 0;
}

/* The pending batch is lost (unknown outcome or refused): forget what it refreshed, resume from the stored offsets. */
static void pending_failed(speed_ctx_t *ctx)
{
    ctx->pending = 0;
    xcache_clear(ctx);
    ctx->need_resync = 1;
    lam_warn("msg=\"micro-batch not written; will resume from the stored offsets\" records=%zu", ctx->pend_nrecs);
}

int speed_batch_complete(speed_ctx_t *ctx)
{
    if (!ctx->pending)
        return 0;
    int w = speed_redis_recv_batch(ctx, ctx->pend_ntx);
    if (w != 0) {
        if (w == 1) /* a run was published or a watched key changed: re-filter when replaying */
            lam_info("msg=\"micro-batch refused by the fence, replaying from the stored offsets\"");
        pending_failed(ctx);
        return -1;
    }
    ctx->pending = 0;
    int64_t t1 = lam_now_mono_ms();
    speed_stats_t *s = &ctx->stats;
    pthread_mutex_lock(&s->lock);
    s->events += ctx->pend_events;
    s->poison += ctx->pend_poison;
    s->duplicates += ctx->pend_dups;
    s->skipped_old += ctx->pend_old;
    s->markers += ctx->pend_markers;
    s->batches++;
    speed_hist_observe(&s->batch_size, (double)ctx->pend_nrecs);
    speed_hist_observe(&s->batch_write_s, (double)(t1 - ctx->pend_t0) / 1000.0);
    speed_hist_observe(&s->batch_age_s, (double)(t1 - ctx->pend_start_ms) / 1000.0);
    pthread_mutex_unlock(&s->lock);
    lam_debug("msg=\"micro-batch written\" records=%zu events=%" PRIu64 " ms=%" PRId64 " build_ms=%" PRId64,
              ctx->pend_nrecs, ctx->pend_events, t1 - ctx->pend_t0, ctx->pend_build_ms);
    return 0;
}

int speed_batch_flush(speed_ctx_t *ctx)
{
    if (ctx->nrecs == 0)
        return 0;
    int64_t t0 = lam_now_mono_ms();
    part_work_t *pw = lam_malloc((size_t)(ctx->nparts ? ctx->nparts : 1) * sizeof(*pw));
    batch_counts_t cnt;
    int rc = -1;
    if (ctx->pending && t0 - ctx->current_read_ms >= 1000)
        speed_batch_complete(ctx); /* before another command on the connection */
    if (ctx->redis && !ctx->need_resync && (t0 - ctx->current_read_ms < 1000 || speed_redis_read_current(ctx) == 0) &&
        batch_build(ctx, &cnt, pw) == 0 && (!ctx->pending || speed_batch_complete(ctx) == 0) &&
        speed_redis_send_batch(ctx) == 0)
        rc = 0;
    if (rc < 0) {
        if (ctx->pending)
            pending_failed(ctx); /* its replies are behind whatever failed: outcome unknown */
        xcache_clear(ctx);
        ctx->need_resync = 1;
        lam_warn("msg=\"micro-batch not written; will resume from the stored offsets\" records=%zu", ctx->nrecs);
        speed_batch_drop(ctx);
        lam_free(pw);
        return -1;
    }
    /* sent: the next batch's fences expect these offsets (if this one fails, so does the next) */
    for (int p = 0; p < ctx->nparts; p++)
        if (pw[p].touched) {
            ctx->parts[p].stored = pw[p].next;
            ctx->parts[p].epoch = pw[p].epoch;
        }
    lam_free(pw);
    ctx->pending = 1;
    ctx->pend_ntx = ctx->ntx;
    ctx->pend_nrecs = ctx->nrecs;
    ctx->pend_events = cnt.events;
    ctx->pend_poison = cnt.poison;
    ctx->pend_dups = cnt.dups;
    ctx->pend_old = cnt.old;
    ctx->pend_markers = cnt.markers;
    ctx->pend_t0 = t0;
    ctx->pend_start_ms = ctx->batch_start_ms;
    ctx->pend_build_ms = lam_now_mono_ms() - t0;
    speed_batch_drop(ctx); /* the transaction holds copies of what it needs */
    return 0;
}

int speed_batch_sync(speed_ctx_t *ctx)
{
    int rc = speed_batch_flush(ctx);
    return speed_batch_complete(ctx) < 0 ? -1 : rc;
}
