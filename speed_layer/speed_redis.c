/* speed_redis.c - where the speed layer talks to Redis: the batch script, offsets, epochs, cleanup, stats. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lam_log.h"
#include "lam_mem.h"
#include "lam_redis.h"
#include "lam_service.h"
#include "lam_store.h"
#include "lam_time.h"
#include "speed.h"

int speed_redis_connect(speed_ctx_t *ctx)
{
    char err[512];
    if (ctx->redis)
        return 0;
    ctx->redis = lam_redis_connect(ctx->cfg.common.redis_url, SPEED_REDIS_TIMEOUT_MS, err, sizeof(err));
    if (!ctx->redis) {
        lam_warn("msg=\"%s\"", err);
        return -1;
    }
    lam_info("msg=\"redis reachable\" url=%s", ctx->cfg.common.redis_url);
    atomic_store(&ctx->redis_ok, 1);
    ctx->need_resync = 1;
    return 0;
}

void speed_redis_lost(speed_ctx_t *ctx, const char *why)
{
    if (ctx->redis) {
        lam_warn("msg=\"lost Redis, pausing consumption\" error=\"%s\"", why);
        redisFree(ctx->redis);
        ctx->redis = NULL;
    }
    atomic_store(&ctx->redis_ok, 0);
    ctx->need_resync = 1;
    ctx->pending = 0; /* its replies are gone with the connection: outcome unknown, the resync decides */
}

/* Run a command; NULL (and the connection dropped) on a transport error. */
static redisReply *cmd(speed_ctx_t *ctx, int argc, const char **argv, const size_t *lens)
{
    if (!ctx->redis)
        return NULL;
    redisReply *r = redisCommandArgv(ctx->redis, argc, argv, lens);
    if (!r) {
        char why[256];
        snprintf(why, sizeof(why), "redis %s: %s", argv[0], ctx->redis->errstr);
        speed_redis_lost(ctx, why);
    }
    return r;
}

/* ---- RESP: commands formatted here (hiredis's sdscatfmt per argument was ~20 % of our CPU) ---- */

static char *u64_dec(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

static void resp_len(lam_buf_t *b, char type, size_t n)
{
    char tmp[24], *e = tmp + sizeof(tmp);
    e[-2] = '\r';
    e[-1] = '\n';
    char *p = u64_dec(e - 2, n);
    *--p = type;
    lam_buf_append(b, p, (size_t)(e - p));
}

void speed_resp_cmd(lam_buf_t *b, size_t argc)
{
    resp_len(b, '*', argc);
}

void speed_resp_begin(lam_buf_t *b, size_t argc)
{
    lam_buf_clear(b);
    resp_len(b, '*', argc);
}

void speed_resp_arg(lam_buf_t *b, const void *data, size_t len)
{
    resp_len(b, '$', len);
    lam_buf_reserve(b, len + 2);
    memcpy(b->data + b->len, data, len);
    b->data[b->len + len] = '\r';
    b->data[b->len + len + 1] = '\n';
    b->len += len + 2;
}

static int read_hash(speed_ctx_t *ctx, const char *key, int is_offsets)
{
    const char *argv[2] = {"HGETALL", key};
    redisReply *r = cmd(ctx, 2, argv, NULL);
    if (!r)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY) {
        lam_error("msg=\"unexpected reply\" key=%s", key);
        freeReplyObject(r);
        return -1;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        int p = atoi(r->element[i]->str);
        if (p < 0 || p >= 1024)
            continue;
        speed_parts_ensure(ctx, p);
        int64_t v = strtoll(r->element[i + 1]->str, NULL, 10);
        if (is_offsets)
            ctx->parts[p].stored = ctx->parts[p].pos = v;
        else
            ctx->parts[p].epoch = v;
    }
    freeReplyObject(r);
    return 0;
}

int speed_redis_read_offsets(speed_ctx_t *ctx)
{
    for (int p = 0; p < ctx->nparts; p++) {
        ctx->parts[p].stored = ctx->parts[p].pos = SPEED_NO_OFFSET;
        ctx->parts[p].epoch = 0;
    }
    /* the sessions whose dedup entries we look up: every one that wrote before these offsets were read */
    if (read_hash(ctx, ctx->offsets_key, 1) < 0 || read_hash(ctx, ctx->epochs_key, 0) < 0 ||
        speed_redis_read_sessions(ctx) < 0)
        return -1;
    return 0;
}

int speed_redis_read_current(speed_ctx_t *ctx)
{
    const char *argv[2] = {"GET", LAM_STORE_CURRENT_KEY};
    redisReply *r = cmd(ctx, 2, argv, NULL);
    if (!r)
        return -1;
    int64_t k = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
    freeReplyObject(r);
    if (k != ctx->current_run)
        lam_info("msg=\"published batch run\" run=%" PRId64 " previous=%" PRId64, k, ctx->current_run);
    ctx->current_run = k;
    ctx->current_read_ms = lam_now_mono_ms();
    return 0;
}

/* UNLINK up to n keys given as replies or a buffer list. */
static int unlink_keys(speed_ctx_t *ctx, size_t n, const char **keys, const size_t *lens)
{
    if (!n)
        return 0;
    const char **argv = lam_malloc((n + 1) * sizeof(*argv));
    size_t *alen = lam_malloc((n + 1) * sizeof(*alen));
    argv[0] = "UNLINK";
    alen[0] = 6;
    memcpy(argv + 1, keys, n * sizeof(*argv));
    memcpy(alen + 1, lens, n * sizeof(*alen));
    redisReply *r = cmd(ctx, (int)(n + 1), argv, alen);
    lam_free(argv);
    lam_free(alen);
    if (!r)
        return -1;
    freeReplyObject(r);
    return 0;
}

/* Delete every real-time key of (epoch, view): walk its bucket index and HLL index sets. */
static int cleanup_view(speed_ctx_t *ctx, int64_t epoch, const char *view)
{
    lam_buf_t idx = LAM_BUF_INIT, k = LAM_BUF_INIT;
    lam_store_rt_idx_key(&idx, epoch, view);
    int rc = 0;
    for (;;) {
        const char *argv[4] = {"ZRANGE", idx.data, "0", "199"};
        redisReply *r = cmd(ctx, 4, argv, NULL);
        if (!r) {
            rc = -1;
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
            freeReplyObject(r);
            break;
        }
        for (size_t i = 0; i < r->elements && rc == 0; i++) {
            int64_t bucket = strtoll(r->element[i]->str, NULL, 10);
            lam_store_rt_hidx_key(&k, epoch, view, bucket);
            /* the HLL keys named in the bucket's hidx set, in chunks */
            for (;;) {
                const char *sargv[3] = {"SPOP", k.data, "500"};
                redisReply *s = cmd(ctx, 3, sargv, NULL);
                if (!s) {
                    rc = -1;
                    break;
                }
                size_t n = s->type == REDIS_REPLY_ARRAY ? s->elements : 0;
                if (n) {
                    const char **keys = lam_malloc(n * sizeof(*keys));
                    size_t *lens = lam_malloc(n * sizeof(*lens));
                    for (size_t j = 0; j < n; j++) {
                        keys[j] = s->element[j]->str;
                        lens[j] = s->element[j]->len;
                    }
                    rc = unlink_keys(ctx, n, keys, lens);
                    lam_free(keys);
                    lam_free(lens);
                }
                freeReplyObject(s);
                if (!n || rc < 0)
                    break;
            }
            if (rc < 0)
                break;
            lam_buf_t hk = LAM_BUF_INIT;
            lam_store_rt_hash_key(&hk, epoch, view, bucket);
            const char *keys[2] = {hk.data, k.data};
            size_t lens[2] = {hk.len, k.len};
            rc = unlink_keys(ctx, 2, keys, lens);
            lam_buf_free(&hk);
            if (rc == 0) {
                const char *zargv[3] = {"ZREM", idx.data, r->element[i]->str};
                redisReply *z = cmd(ctx, 3, zargv, NULL);
                if (!z)
                    rc = -1;
                else
                    freeReplyObject(z);
            }
        }
        freeReplyObject(r);
        if (rc < 0)
            break;
    }
    lam_buf_free(&idx);
    lam_buf_free(&k);
    return rc;
}

int speed_redis_cleanup_epochs(speed_ctx_t *ctx)
{
    if (ctx->current_run <= 0)
        return 0;
    char maxs[32];
    snprintf(maxs, sizeof(maxs), "(%" PRId64, ctx->current_run);
    const char *argv[4] = {"ZRANGEBYSCORE", LAM_STORE_EPOCHS_KEY, "-inf", maxs};
    redisReply *r = cmd(ctx, 4, argv, NULL);
    if (!r)
        return -1;
    int rc = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && rc == 0; i++) {
        int64_t e = strtoll(r->element[i]->str, NULL, 10);
        lam_info("msg=\"deleting real-time views of an epoch the batch view covers\" epoch=%" PRId64
                 " run=%" PRId64, e, ctx->current_run);
        for (size_t v = 0; v < lam_views_count(ctx->views) && rc == 0; v++)
            rc = cleanup_view(ctx, e, lam_views_get(ctx->views, v)->name);
        if (rc == 0) {
            const char *zargv[3] = {"ZREM", LAM_STORE_EPOCHS_KEY, r->element[i]->str};
            redisReply *z = cmd(ctx, 3, zargv, NULL);
            if (!z)
                rc = -1;
            else
                freeReplyObject(z);
        }
    }
    freeReplyObject(r);
    return rc;
}

int speed_redis_dedup_lookup(speed_ctx_t *ctx, size_t nkeys, const char **keys, const size_t *klens,
                             const uint8_t *key_own, size_t n, const char **ids, const size_t *lens,
                             const uint32_t *which, const uint8_t *maybe_own, uint8_t *found)
{
    if (!ctx->redis)
        return -1;
    if (!nkeys || !n)
        return 0;
    /* "*k+2 $5 HMGET <key>" then the ids, formatted once per kind (every id / the Bloom hits), one round trip */
    lam_buf_t *all = &ctx->resp2, *own = &ctx->resp3;
    lam_buf_clear(all);
    lam_buf_clear(own);
    size_t nown = 0;
    for (size_t i = 0; i < n; i++) {
        speed_resp_arg(all, ids[i], lens[i]);
        if (maybe_own[i]) {
            speed_resp_arg(own, ids[i], lens[i]);
            nown++;
        }
    }
    size_t nsent = 0;
    for (size_t k = 0; k < nkeys; k++) {
        size_t m = key_own[k] ? nown : n;
        if (!m)
            continue;
        speed_resp_begin(&ctx->resp, m + 2);
        speed_resp_arg(&ctx->resp, "HMGET", 5);
        speed_resp_arg(&ctx->resp, keys[k], klens[k]);
        redisAppendFormattedCommand(ctx->redis, ctx->resp.data, ctx->resp.len);
        redisAppendFormattedCommand(ctx->redis, key_own[k] ? own->data : all->data, key_own[k] ? own->len : all->len);
        nsent++;
    }
    int rc = 0;
    char here[48];
    for (size_t k = 0; k < nkeys && nsent; k++) {
        size_t m = key_own[k] ? nown : n;
        if (!m)
            continue;
        nsent--;
        redisReply *r = NULL;
        if (rc == 0 && redisGetReply(ctx->redis, (void **)&r) != REDIS_OK) {
            speed_redis_lost(ctx, ctx->redis->errstr);
            rc = -1;
        }
        /* an error (WRONGTYPE): no slot hash of ours (the script replaces such a key before writing) */
        if (rc == 0 && r->type != REDIS_REPLY_ERROR && (r->type != REDIS_REPLY_ARRAY || r->elements != m)) {
            lam_error("msg=\"unexpected HMGET reply\"");
            speed_redis_lost(ctx, "unexpected dedup reply");
            rc = -1;
        }
        for (size_t i = 0, e = 0; rc == 0 && r->type == REDIS_REPLY_ARRAY && i < n; i++) {
            if (key_own[k] && !maybe_own[i])
                continue;
            const redisReply *v = r->element[e++];
            if (v->type != REDIS_REPLY_STRING)
                continue; /* not in this slot */
            const speed_rec_t *rec = &ctx->recs[which[i]];
            int hl = snprintf(here, sizeof(here), "%d:%" PRId64, (int)rec->partition, rec->offset);
            if ((size_t)hl != v->len || memcmp(here, v->str, (size_t)hl))
                found[i] = 1; /* first counted elsewhere (equal: our own batch, replayed) */
        }
        if (r)
            freeReplyObject(r);
    }
    return rc;
}

int speed_redis_get_each(speed_ctx_t *ctx, size_t n, const char *names,
                         void (*fn)(speed_ctx_t *ctx, void *opaque, size_t i, const char *v, size_t len), void *opaque)
{
    enum { ROUND = 64 }; /* keys per round trip: bounds the replies held at once */
    const char *k = names;
    for (size_t i = 0; i < n;) {
        if (!ctx->redis)
            return -1;
        size_t m = n - i < ROUND ? n - i : ROUND;
        for (size_t j = 0; j < m; j++, k += strlen(k) + 1) {
            const char *argv[2] = {"GET", k};
            size_t alen[2] = {3, strlen(k)};
            redisAppendCommandArgv(ctx->redis, 2, argv, alen);
        }
        int rc = 0;
        for (size_t j = 0; j < m; j++) {
            redisReply *r = NULL;
            if (rc == 0 && redisGetReply(ctx->redis, (void **)&r) != REDIS_OK) {
                speed_redis_lost(ctx, ctx->redis->errstr);
                rc = -1;
            }
            if (rc == 0 && r->type == REDIS_REPLY_STRING) /* an error (WRONGTYPE): no record there */
                fn(ctx, opaque, i + j, r->str, r->len);
            if (r)
                freeReplyObject(r);
        }
        if (rc < 0)
            return -1;
        i += m;
    }
    return 0;
}

typedef struct others_load {
    const char **tokens; /* the other sessions, in key order */
    int64_t lo, nslots;
    size_t entries;
} others_load_t;

/* One record string of another session: its ids into that session's filter of that slot. */
static void load_record(speed_ctx_t *ctx, void *opaque, size_t i, const char *v, size_t len)
{
    others_load_t *o = opaque;
    size_t ks = i / SPEED_DEDUP_SHARDS;
    const char *token = o->tokens[ks / (size_t)o->nslots];
    int64_t slot = o->lo + (int64_t)(ks % (size_t)o->nslots);
    const char *p = v, *end = v + len, *id;
    char uuid[SPEED_DEDUP_UUID_LEN];
    size_t idlen;
    int64_t part, off;
    int rc;
    while ((rc = speed_dedup_entry_next(&p, end, uuid, &id, &idlen, &part, &off)) == 1) {
        /* an id only ever arrives in its own partition: the others' entries are not ours to check (the
         * records are read again at every assignment) */
        if (part < 0 || part >= ctx->nparts || !ctx->parts[part].assigned)
            continue;
        speed_dedup_add(ctx, token, slot, speed_dedup_id_hash(id, idlen));
        o->entries++;
    }
    if (rc < 0)
        lam_warn("msg=\"malformed dedup record, its remaining entries are ignored\" slot=%" PRId64 " session=%s", slot,
                 token);
}

void speed_argv_add(speed_argv_t *a, const void *data, size_t len)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 1024;
        a->off = lam_realloc(a->off, 2 * a->cap * sizeof(size_t));
    }
    a->off[2 * a->n] = a->bytes.len;
    a->off[2 * a->n + 1] = len;
    a->n++;
    lam_buf_append(&a->bytes, data, len);
}

void speed_argv_clear(speed_argv_t *a)
{
    lam_buf_clear(&a->bytes);
    a->n = 0;
}

void speed_argv_free(speed_argv_t *a)
{
    lam_buf_free(&a->bytes);
    lam_free(a->off);
    *a = (speed_argv_t){LAM_BUF_INIT, NULL, 0, 0};
}

/* One record string of another session as HSET arguments (field id, value "partition:offset"). */
static void conv_record(speed_ctx_t *ctx, void *opaque, size_t i, const char *v, size_t len)
{
    (void)ctx;
    (void)i;
    speed_argv_t *c = opaque;
    const char *p = v, *end = v + len, *id;
    char uuid[SPEED_DEDUP_UUID_LEN];
    size_t idlen;
    int64_t part, off;
    while (speed_dedup_entry_next(&p, end, uuid, &id, &idlen, &part, &off) == 1) {
        char pos[48];
        int n = snprintf(pos, sizeof(pos), "%" PRId64 ":%" PRId64, part, off);
        speed_argv_add(c, id, idlen);
        speed_argv_add(c, pos, (size_t)n);
    }
}

/*
 * Another session's (token, slot) holds more ids than the filters' budget: copy its records into its slot
 * hash lam:dedup:@{slot}:{token} (one field per id, the previous layout), which is looked up with HMGET
 * like a slot hash of the previous layout. Its filters are dropped. 0 or -1.
 */
static int convert_to_hash(speed_ctx_t *ctx, const char *token, int64_t slot)
{
    lam_buf_t hk = LAM_BUF_INIT, sk = LAM_BUF_INIT;
    speed_dedup_slot_key(&hk, slot, token);
    const char *targv[2] = {"TYPE", hk.data};
    redisReply *t = cmd(ctx, 2, targv, NULL);
    int rc = t ? 0 : -1;
    if (t && !(t->type == REDIS_REPLY_STATUS && (!strcmp(t->str, "hash") || !strcmp(t->str, "none")))) {
        const char *dargv[2] = {"DEL", hk.data};
        redisReply *d = cmd(ctx, 2, dargv, NULL);
        rc = d ? 0 : -1;
        if (d)
            freeReplyObject(d);
    }
    if (t)
        freeReplyObject(t);
    speed_argv_t c = {LAM_BUF_INIT, NULL, 0, 0};
    for (unsigned sh = 0; rc == 0 && sh < SPEED_DEDUP_SHARDS; sh++) {
        speed_dedup_shard_key(&sk, slot, token, sh);
        speed_argv_clear(&c);
        speed_argv_add(&c, "HSET", 4);
        speed_argv_add(&c, hk.data, hk.len);
        rc = speed_redis_get_each(ctx, 1, sk.data, conv_record, &c);
        if (rc < 0 || c.n == 2)
            continue;
        const char **argv = lam_malloc(c.n * sizeof(*argv));
        size_t *alen = lam_malloc(c.n * sizeof(*alen));
        for (size_t j = 0; j < c.n; j++) {
            argv[j] = c.bytes.data + c.off[2 * j];
            alen[j] = c.off[2 * j + 1];
        }
        redisReply *h = cmd(ctx, (int)c.n, argv, alen);
        rc = h && h->type != REDIS_REPLY_ERROR ? 0 : -1;
        if (h)
            freeReplyObject(h);
        lam_free(argv);
        lam_free(alen);
    }
    if (rc == 0) {
        char at[32];
        snprintf(at, sizeof(at), "%" PRId64, (slot + 2) * dedup_slot_seconds(ctx) + ctx->cfg.dedup_window_ms / 1000);
        const char *eargv[3] = {"EXPIREAT", hk.data, at};
        redisReply *e = cmd(ctx, 3, eargv, NULL);
        rc = e ? 0 : -1;
        if (e)
            freeReplyObject(e);
    }
    if (rc == 0) {
        speed_dedup_forget(ctx, token, slot);
        lam_buf_append(&ctx->other_keys, hk.data, hk.len + 1);
        ctx->nother_keys++;
        lam_warn("msg=\"dedup filters over budget: another session's slot is looked up in its slot hash\" slot=%" PRId64
                 " session=%s", slot, token);
    }
    speed_argv_free(&c);
    lam_buf_free(&hk);
    lam_buf_free(&sk);
    return rc;
}

int speed_redis_read_sessions(speed_ctx_t *ctx)
{
    lam_buf_t k = LAM_BUF_INIT, tokens = LAM_BUF_INIT;
    speed_dedup_sessions_key(&k);
    int64_t now_s = lam_time_now_ms() / 1000, slot_s = dedup_slot_seconds(ctx);
    char min[32];
    snprintf(min, sizeof(min), "%" PRId64, now_s - speed_dedup_keep_s(ctx));
    const char *argv[4] = {"ZRANGEBYSCORE", k.data, min, "+inf"};
    redisReply *r = cmd(ctx, 4, argv, NULL);
    if (!r) {
        lam_buf_free(&k);
        return -1;
    }
    /* tokens: "" (the unsessioned slot hashes of the previous layout), then the other sessions
     * (another type: no session wrote there; the transaction replaces it before its ZADD) */
    size_t ntok = 1;
    lam_buf_append_char(&tokens, '\0');
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len >= sizeof(ctx->dedup_token) ||
            strspn(e->str, "0123456789abcdef") != e->len || !strcmp(e->str, ctx->dedup_token))
            continue;
        lam_buf_append(&tokens, e->str, e->len + 1);
        ntok++;
    }
    freeReplyObject(r);
    /* their slot hashes that exist now (one pipelined round of TYPE): no other session writes an
     * entry for a partition we own after this point without moving its offset (README "Dedup") */
    int64_t cur = now_s / slot_s, lo = cur - (ctx->cfg.dedup_window_ms / 1000 + slot_s - 1) / slot_s - 1;
    size_t ncand = ntok * (size_t)(cur + 2 - lo), c = 0;
    lam_buf_t *cand = lam_calloc(ncand, sizeof(*cand));
    const char *tok = tokens.data;
    for (size_t t = 0; t < ntok; t++, tok += strlen(tok) + 1)
        for (int64_t sl = lo; sl <= cur + 1; sl++, c++) {
            speed_dedup_slot_key(&cand[c], sl, tok);
            const char *targv[2] = {"TYPE", cand[c].data};
            size_t alen[2] = {4, cand[c].len};
            redisAppendCommandArgv(ctx->redis, 2, targv, alen);
        }
    int rc = 0;
    lam_buf_clear(&ctx->other_keys);
    ctx->nother_keys = 0;
    for (c = 0; c < ncand; c++) {
        redisReply *t = NULL;
        if (rc == 0 && redisGetReply(ctx->redis, (void **)&t) != REDIS_OK) {
            speed_redis_lost(ctx, ctx->redis->errstr);
            rc = -1;
        }
        if (t && t->type == REDIS_REPLY_STATUS && !strcmp(t->str, "hash")) {
            lam_buf_append(&ctx->other_keys, cand[c].data, cand[c].len + 1);
            ctx->nother_keys++;
        }
        if (t)
            freeReplyObject(t);
        lam_buf_free(&cand[c]);
    }
    lam_free(cand);
    /* their record strings (this layout): the ids into a filter per (session, slot), read again every time */
    speed_dedup_drop_others(ctx);
    if (rc == 0 && ntok > 1) {
        int64_t nslots = cur + 2 - lo;
        const char **toks = lam_malloc((ntok - 1) * sizeof(*toks));
        lam_buf_t names = LAM_BUF_INIT;
        tok = tokens.data + 1; /* after "" */
        for (size_t t = 1; t < ntok; t++, tok += strlen(tok) + 1) {
            toks[t - 1] = tok;
            for (int64_t sl = lo; sl <= cur + 1; sl++)
                for (unsigned sh = 0; sh < SPEED_DEDUP_SHARDS; sh++) {
                    speed_dedup_shard_key(&k, sl, tok, sh);
                    lam_buf_append(&names, k.data, k.len + 1);
                }
        }
        others_load_t o = {toks, lo, nslots, 0};
        int64_t t0 = lam_now_mono_ms();
        rc = speed_redis_get_each(ctx, (ntok - 1) * (size_t)nslots * SPEED_DEDUP_SHARDS, names.data, load_record, &o);
        lam_info("msg=\"dedup records of other sessions read\" sessions=%zu ids=%zu ms=%" PRId64, ntok - 1, o.entries,
                 lam_now_mono_ms() - t0);
        for (size_t t = 0; rc == 0 && t + 1 < ntok; t++)
            for (int64_t sl = lo; rc == 0 && sl <= cur + 1; sl++)
                if (speed_dedup_over_budget(ctx, toks[t], sl))
                    rc = convert_to_hash(ctx, toks[t], sl);
        lam_buf_free(&names);
        lam_free(toks);
    }
    lam_buf_free(&tokens);
    lam_buf_free(&k);
    return rc;
}

/* Read one reply of a pipeline; NULL (and the connection dropped) on a transport error. */
static redisReply *get_reply(speed_ctx_t *ctx, const char *what)
{
    redisReply *r = NULL;
    if (!ctx->redis)
        return NULL;
    if (redisGetReply(ctx->redis, (void **)&r) != REDIS_OK || !r) {
        char why[256];
        snprintf(why, sizeof(why), "redis %s: %s", what, ctx->redis->errstr);
        speed_redis_lost(ctx, why);
        return NULL;
    }
    return r;
}

static void script_failed(speed_ctx_t *ctx, const char *what, const char *err)
{
    lam_error("msg=\"batch transaction failed\" command=%s error=\"%s\"", what, err);
    pthread_mutex_lock(&ctx->stats.lock);
    ctx->stats.script_errors++;
    pthread_mutex_unlock(&ctx->stats.lock);
}

/* Fence reply {code, ...}: 0 passed, 1 run moved, 2 offsets moved, 3 a key of an unexpected type. */
static int fence_result(speed_ctx_t *ctx, const redisReply *f)
{
    if (f->type != REDIS_REPLY_ARRAY || f->elements < 1 || f->element[0]->type != REDIS_REPLY_INTEGER) {
        script_failed(ctx, "fence", f->type == REDIS_REPLY_ERROR ? f->str : "unexpected reply");
        return -1;
    }
    long long code = f->element[0]->integer;
    if (code == 2)
        lam_warn("msg=\"stored offsets moved under us, resyncing\" partition=%lld stored=\"%s\"",
                 f->elements > 1 ? f->element[1]->integer : -1LL,
                 f->elements > 2 && f->element[2]->str ? f->element[2]->str : "");
    if (code == 3)
        script_failed(ctx, "fence", "lam:batch:current or the offsets hash has an unexpected type");
    return code == 0 ? 0 : code == 1 ? 1 : code == 2 ? 2 : -1;
}

/* Write hiredis's output buffer out. 0 or -1. */
static int flush_out(speed_ctx_t *ctx)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(ctx->redis, &done) != REDIS_OK)
            return -1;
    return 0;
}

/* Send len bytes on the connection's socket (blocking, with the connection's send timeout; no SIGPIPE when
 * Redis went away). 0 or -1. */
static int write_all(speed_ctx_t *ctx, const char *p, size_t len)
{
    for (size_t sent = 0; sent < len;) {
        ssize_t n = send(ctx->redis->fd, p + sent, len - sent, MSG_NOSIGNAL);
        if (n > 0)
            sent += (size_t)n;
        else if (n == 0 || errno != EINTR)
            return -1;
    }
    return 0;
}

int speed_redis_send_batch(speed_ctx_t *ctx)
{
    if (!ctx->redis)
        return -1;
    /*
     * One write, ntx + 6 replies: WATCH offsets, lam:batch:current and the fence key; the fence
     * script (which SETs the fence key when a fence fails, so that EXEC refuses); MULTI; EVAL of the
     * batch script; the plain commands; EXEC.
     */
    lam_buf_t *b = &ctx->resp;
    speed_resp_begin(b, 4);
    speed_resp_arg(b, "WATCH", 5);
    speed_resp_arg(b, ctx->offsets_key, strlen(ctx->offsets_key));
    speed_resp_arg(b, LAM_STORE_CURRENT_KEY, strlen(LAM_STORE_CURRENT_KEY));
    speed_resp_arg(b, ctx->fence_key, strlen(ctx->fence_key));
    speed_resp_cmd(b, 7 + 2 * ctx->nfence);
    speed_resp_arg(b, "EVAL", 4);
    speed_resp_arg(b, speed_fence_lua, strlen(speed_fence_lua));
    speed_resp_arg(b, "0", 1);
    speed_resp_arg(b, ctx->fence_key, strlen(ctx->fence_key));
    speed_resp_arg(b, LAM_STORE_CURRENT_KEY, strlen(LAM_STORE_CURRENT_KEY));
    char num[32];
    int nl = snprintf(num, sizeof(num), "%" PRId64, ctx->current_run);
    speed_resp_arg(b, num, (size_t)nl);
    speed_resp_arg(b, ctx->offsets_key, strlen(ctx->offsets_key));
    for (size_t i = 0; i < ctx->nfence; i++) {
        nl = snprintf(num, sizeof(num), "%d", ctx->fence[i].partition);
        speed_resp_arg(b, num, (size_t)nl);
        nl = ctx->fence[i].stored == SPEED_NO_OFFSET ? 0 : snprintf(num, sizeof(num), "%" PRId64, ctx->fence[i].stored);
        speed_resp_arg(b, num, (size_t)nl);
    }
    speed_resp_cmd(b, 1);
    speed_resp_arg(b, "MULTI", 5);
    speed_resp_cmd(b, ctx->args.n + 3);
    speed_resp_arg(b, "EVAL", 4);
    speed_resp_arg(b, speed_script_lua, strlen(speed_script_lua));
    speed_resp_arg(b, "0", 1);
    for (size_t i = 0; i < ctx->args.n; i++)
        speed_resp_arg(b, ctx->args.bytes.data + ctx->args.off[2 * i], ctx->args.off[2 * i + 1]);
    lam_buf_t *e = &ctx->resp2;
    speed_resp_begin(e, 1);
    speed_resp_arg(e, "EXEC", 4);
    /* on the wire now, so that Redis works on it while we build the next batch. The plain commands
     * (several MB when a batch touches many cells) go from ctx->tx straight to the socket, not through
     * a copy in hiredis's output buffer: one copy less at the peak of a batch's memory */
    if (redisAppendFormattedCommand(ctx->redis, b->data, b->len) != REDIS_OK || flush_out(ctx) < 0 ||
        write_all(ctx, ctx->tx.data, ctx->tx.len) < 0 ||
        redisAppendFormattedCommand(ctx->redis, e->data, e->len) != REDIS_OK || flush_out(ctx) < 0) {
        speed_redis_lost(ctx, "redis MULTI: cannot send");
        return -1; /* outcome unknown: the stored offsets decide after a resync */
    }
    return 0;
}

/* What exec_scan_fns saw of one reply: the top-level type, its elements, the first error among them. */
typedef struct exec_scan {
    int top;          /* REDIS_REPLY_* of the reply itself (-1: none yet) */
    size_t n;         /* its elements, when an array */
    long err_idx;     /* index of the first element that is an error (-1: none) */
    char err[256];    /* that error (or the reply's own, when it is one) */
} exec_scan_t;

static exec_scan_t *g_exec_scan; /* set around the one redisGetReply that uses exec_scan_fns */
static char exec_scan_obj;       /* what every create function returns: nothing is allocated */

static void exec_scan_note(const redisReadTask *t, int type)
{
    exec_scan_t *e = g_exec_scan;
    if (!t->parent)
        e->top = type;
}

static void *exec_scan_string(const redisReadTask *t, char *str, size_t len)
{
    exec_scan_t *e = g_exec_scan;
    exec_scan_note(t, t->type);
    if (t->type == REDIS_REPLY_ERROR && (!t->parent || (!t->parent->parent && e->err_idx < 0))) {
        if (t->parent)
            e->err_idx = t->idx;
        size_t l = len < sizeof(e->err) - 1 ? len : sizeof(e->err) - 1;
        memcpy(e->err, str, l);
        e->err[l] = '\0';
    }
    return &exec_scan_obj;
}

static void *exec_scan_array(const redisReadTask *t, int n)
{
    exec_scan_note(t, REDIS_REPLY_ARRAY);
    if (!t->parent)
        g_exec_scan->n = n > 0 ? (size_t)n : 0;
    return &exec_scan_obj;
}

static void *exec_scan_integer(const redisReadTask *t, long long v)
{
    (void)v;
    exec_scan_note(t, REDIS_REPLY_INTEGER);
    return &exec_scan_obj;
}

static void *exec_scan_nil(const redisReadTask *t)
{
    exec_scan_note(t, REDIS_REPLY_NIL);
    return &exec_scan_obj;
}

static void exec_scan_free(void *obj)
{
    (void)obj;
}

/* hiredis's reply reader with these builds no reply objects (~3.5k elements per EXEC, each allocated) */
static redisReplyObjectFunctions exec_scan_fns = {exec_scan_string, exec_scan_array, exec_scan_integer, exec_scan_nil,
                                                  exec_scan_free};

int speed_redis_recv_batch(speed_ctx_t *ctx, size_t ntx)
{
    if (!ctx->redis)
        return -1;
    /* WATCH +OK, the fence reply, MULTI +OK, +QUEUED per command (an error here makes EXEC refuse) */
    int fence = -1;
    for (size_t i = 0; i < 3; i++) {
        redisReply *r = get_reply(ctx, "MULTI");
        if (!r)
            return -1;
        if (i == 1)
            fence = fence_result(ctx, r);
        else if (r->type == REDIS_REPLY_ERROR)
            lam_error("msg=\"command refused inside the batch transaction\" index=%zu error=\"%s\"", i, r->str);
        freeReplyObject(r);
    }
    /* The +QUEUED replies (one per command, ~1 per 3 events) read without reply objects: with no object
     * functions hiredis hands back just the reply type (~1,000 instructions and 2 allocations less
     * each). A refused command is still seen (and EXEC's EXECABORT says why the transaction failed). */
    redisReplyObjectFunctions *fn = ctx->redis->reader->fn;
    ctx->redis->reader->fn = NULL;
    for (size_t i = 3; i < ntx + 4; i++) {
        void *t = NULL;
        if (redisGetReply(ctx->redis, &t) != REDIS_OK || !t) {
            ctx->redis->reader->fn = fn;
            char why[256];
            snprintf(why, sizeof(why), "redis MULTI: %s", ctx->redis->errstr);
            speed_redis_lost(ctx, why);
            return -1;
        }
        if ((int)(intptr_t)t == REDIS_REPLY_ERROR)
            lam_error("msg=\"command refused inside the batch transaction\" index=%zu", i);
    }
    /* EXEC's reply (an element per command) scanned, not built: its type, its length and the first error */
    exec_scan_t es = {.top = -1, .err_idx = -1};
    g_exec_scan = &es;
    ctx->redis->reader->fn = &exec_scan_fns;
    void *t = NULL;
    int got = redisGetReply(ctx->redis, &t);
    ctx->redis->reader->fn = fn;
    g_exec_scan = NULL;
    if (got != REDIS_OK || !t) {
        char why[256];
        snprintf(why, sizeof(why), "redis EXEC: %s", ctx->redis->errstr);
        speed_redis_lost(ctx, why);
        return -1;
    }
    int rc;
    if (es.top == REDIS_REPLY_NIL) {
        /* nothing was written: a fence failed (its reply says which), or a watched key changed after
         * the fence ran (another instance wrote its offsets, a run was published): filter and try again */
        rc = fence > 0 ? fence : fence < 0 ? -1 : 1;
    } else if (fence != 0) {
        /* cannot happen (a failed fence SETs a watched key); never count such a batch as written */
        script_failed(ctx, "EXEC", "transaction ran although the fence did not pass");
        rc = -1;
    } else if (es.top != REDIS_REPLY_ARRAY || es.n != ntx + 1) {
        /* EXECABORT: nothing was written; resync from the stored offsets all the same */
        script_failed(ctx, "EXEC", es.top == REDIS_REPLY_ERROR ? es.err : "unexpected reply");
        rc = -1;
    } else if (es.err_idx >= 0) {
        /* may have happened part-way (e.g. out of memory): resync from the stored offsets */
        script_failed(ctx, es.err_idx ? "command" : "script", es.err);
        rc = -1;
    } else {
        rc = 0;
    }
    return rc;
}

int speed_redis_push_stats(speed_ctx_t *ctx)
{
    speed_stats_t *s = &ctx->stats;
    lam_buf_t b = LAM_BUF_INIT;
    /* Counters are HINCRBY'd by deltas so several instances in one group add up. */
    pthread_mutex_lock(&s->lock);
    uint64_t ev = s->events, po = s->poison, du = s->duplicates, old = s->skipped_old;
    double rate = s->events_per_s;
    pthread_mutex_unlock(&s->lock);
    char v[4][32];
    snprintf(v[0], sizeof(v[0]), "%" PRIu64, ev - ctx->pushed_events);
    snprintf(v[1], sizeof(v[1]), "%" PRIu64, po - ctx->pushed_poison);
    snprintf(v[2], sizeof(v[2]), "%" PRIu64, du - ctx->pushed_dups);
    snprintf(v[3], sizeof(v[3]), "%" PRIu64, old - ctx->pushed_old);
    const char *names[4] = {"events_total", "poison_total", "duplicates_total", "skipped_old_total"};
    for (int i = 0; i < 4; i++) {
        if (!strcmp(v[i], "0"))
            continue;
        const char *argv[4] = {"HINCRBY", ctx->stats_key, names[i], v[i]};
        redisAppendCommandArgv(ctx->redis, 4, argv, NULL);
    }
    /* Gauges: per partition (owned by one instance at a time) and this instance's rate. */
    lam_buf_t fields = LAM_BUF_INIT;
    size_t nf = 0;
    const char *argv[2 + 2 * 2 * 1024 + 8];
    size_t off[2 * 2 * 1024 + 8];
    size_t alen[2 + 2 * 2 * 1024 + 8];
    char host[64];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "?");
    host[sizeof(host) - 1] = '\0';
#define PUSH_FIELD(...)                                                                                            \
    do {                                                                                                           \
        off[nf++] = fields.len;                                                                                    \
        lam_buf_printf(&fields, __VA_ARGS__);                                                                      \
        lam_buf_append_char(&fields, '\0');                                                                        \
    } while (0)
    PUSH_FIELD("updated_at");
    PUSH_FIELD("%" PRId64, lam_now_ms());
    PUSH_FIELD("events_per_s:%s:%d", host, (int)getpid());
    PUSH_FIELD("%.0f", rate);
    PUSH_FIELD("current_run");
    PUSH_FIELD("%" PRId64, ctx->current_run);
    for (int p = 0; p < ctx->nparts && p < 1024; p++) {
        if (!ctx->parts[p].assigned)
            continue;
        PUSH_FIELD("lag:%d", p);
        PUSH_FIELD("%" PRId64, ctx->parts[p].lag < 0 ? 0 : ctx->parts[p].lag);
        PUSH_FIELD("epoch:%d", p);
        PUSH_FIELD("%" PRId64, ctx->parts[p].epoch);
    }
#undef PUSH_FIELD
    argv[0] = "HSET";
    alen[0] = 4;
    argv[1] = ctx->stats_key;
    alen[1] = strlen(ctx->stats_key);
    for (size_t i = 0; i < nf; i++) {
        argv[2 + i] = fields.data + off[i];
        alen[2 + i] = strlen(argv[2 + i]);
    }
    redisAppendCommandArgv(ctx->redis, (int)(2 + nf), argv, alen);
    const char *eargv[3] = {"EXPIRE", ctx->stats_key, "86400"};
    redisAppendCommandArgv(ctx->redis, 3, eargv, NULL);
    int n = 2;
    for (int i = 0; i < 4; i++)
        n += strcmp(v[i], "0") != 0;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(ctx->redis, (void **)&r) != REDIS_OK) {
            speed_redis_lost(ctx, ctx->redis->errstr);
            rc = -1;
            break;
        }
        freeReplyObject(r);
    }
    if (rc == 0) {
        ctx->pushed_events = ev;
        ctx->pushed_poison = po;
        ctx->pushed_dups = du;
        ctx->pushed_old = old;
    }
    lam_buf_free(&fields);
    lam_buf_free(&b);
    return rc;
}
