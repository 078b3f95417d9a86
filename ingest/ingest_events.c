/* ingest_events.c - POST /v1/events: split the body into events, validate, canonicalise, reply. */
#include <stdio.h>
#include <string.h>

#include "ingest.h"
#include "lam_event.h"
#include "lam_json.h"
#include "lam_log.h"
#include "lam_mem.h"
#include "lam_service.h"
#include "lam_uuid.h"

/* Finished batches keep their buffers for the next request (allocated on the HTTP threads, freed
 * on the delivery-report thread, hence one shared list), up to BATCH_POOL_MAX batches holding at
 * most BATCH_POOL_BYTES of buffers in all: a bounded cache, whatever the requests were. */
#define BATCH_POOL_MAX 128
#define BATCH_POOL_BYTES ((size_t)4 << 20)

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static ingest_batch_t *pool[BATCH_POOL_MAX];
static size_t pool_bytes[BATCH_POOL_MAX];
static size_t npool, pool_total;

ingest_batch_t *ingest_batch_new(ingest_ctx_t *ctx, lam_http_req_t *req)
{
    ingest_batch_t *b = NULL;
    pthread_mutex_lock(&pool_lock);
    if (npool) {
        b = pool[--npool];
        pool_total -= pool_bytes[npool];
    }
    pthread_mutex_unlock(&pool_lock);
    if (!b) {
        b = lam_calloc(1, sizeof(*b));
        pthread_mutex_init(&b->fail_lock, NULL);
    }
    b->ctx = ctx;
    b->req = req;
    return b;
}

static void batch_release(ingest_batch_t *b)
{
    lam_buf_free(&b->payload);
    lam_buf_free(&b->keys);
    lam_buf_free(&b->ids);
    lam_buf_free(&b->ok_reply);
    lam_buf_free(&b->errors);
    lam_free(b->slots);
    pthread_mutex_destroy(&b->fail_lock);
    lam_free(b);
}

void ingest_batch_free(ingest_batch_t *b)
{
    if (!b)
        return;
    size_t bytes = b->payload.cap + b->keys.cap + b->ids.cap + b->ok_reply.cap + b->errors.cap +
                   b->slots_cap * sizeof(*b->slots);
    /* Back to the state ingest_batch_new() hands out, buffers kept. */
    lam_buf_clear(&b->payload);
    lam_buf_clear(&b->keys);
    lam_buf_clear(&b->ids);
    lam_buf_clear(&b->ok_reply);
    lam_buf_clear(&b->errors);
    b->ctx = NULL;
    b->req = NULL;
    b->nslots = b->nevents = b->rejected = b->first_err_index = 0;
    b->deferred = 0;
    b->first_err[0] = '\0';
    atomic_store(&b->pending, 0);
    b->produce_us = 0;
    b->fail_reason[0] = '\0';
    pthread_mutex_lock(&pool_lock);
    if (npool < BATCH_POOL_MAX && pool_total + bytes <= BATCH_POOL_BYTES) {
        pool_bytes[npool] = bytes;
        pool[npool++] = b;
        pool_total += bytes;
        b = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
    if (b)
        batch_release(b);
}

void ingest_batch_pool_free(void)
{
    pthread_mutex_lock(&pool_lock);
    while (npool)
        batch_release(pool[--npool]);
    pool_total = 0;
    pthread_mutex_unlock(&pool_lock);
}

/* The per-request parse state; the event is reused by every request on this thread. */
typedef struct parse_state {
    ingest_ctx_t *ctx;
    ingest_batch_t *b;
    lam_event_t *ev;
    int64_t now_ms;
    int32_t np;      /* the topic's partitions when ingest knows them (0: ids are not steered) */
    size_t ngen;     /* ids generated for this request so far */
    int32_t part;    /* the partition steer_id() gave the current event's id, -1 = none */
} parse_state_t;

/*
 * Ids ingest generates are steered to one partition at a time: the events that arrive without an
 * id within ID_WINDOW_MS (and each run of ID_RUN of them in one request) get ids whose partition
 * (librdkafka's consistent_random: crc32 of the id) is the same, rotating over the partitions.
 * librdkafka sends one ProduceRequest per partition, so single-event requests arriving together
 * then make one request instead of one per partition. The key is still the id, so a retry of an
 * id lands in its partition as before; the id is still a UUIDv7 (the last 8 of its 74 random bits
 * are picked among 256 candidates), in order within the process.
 */
#define ID_WINDOW_MS 10
#define ID_RUN 1000

static void steer_id(parse_state_t *st, char id[LAM_UUID_LEN + 1])
{
    int32_t target = (int32_t)(((uint64_t)(st->now_ms / ID_WINDOW_MS) + st->ngen++ / ID_RUN) % (uint64_t)st->np);
    static const char hex[] = "0123456789abcdef";
    unsigned orig = (unsigned)(strchr(hex, id[34]) - hex) << 4 | (unsigned)(strchr(hex, id[35]) - hex);
    uint32_t prefix = lam_crc32(0, id, 34); /* the CRC continues over the two chars tried */
    for (unsigned k = 0; k < 256; k++) {
        unsigned v = (orig + k) & 0xff;
        id[34] = hex[v >> 4];
        id[35] = hex[v & 15];
        if ((int32_t)(lam_crc32(prefix, id + 34, 2) % (uint32_t)st->np) == target) {
            st->part = target;
            return;
        }
    }
    id[34] = hex[orig >> 4]; /* no candidate fits (odds 2^-67 with 6 partitions): the random id */
    id[35] = hex[orig & 15];
}

/* One reusable event per HTTP thread (its buffers grow to the largest event seen). */
static pthread_key_t event_key;
static pthread_once_t event_once = PTHREAD_ONCE_INIT;

static void event_free(void *p)
{
    lam_event_free(p);
    lam_free(p);
}

static void event_key_init(void)
{
    pthread_key_create(&event_key, event_free);
}

static lam_event_t *thread_event(void)
{
    pthread_once(&event_once, event_key_init);
    lam_event_t *ev = pthread_getspecific(event_key);
    if (!ev) {
        ev = lam_malloc(sizeof(*ev));
        lam_event_init(ev);
        pthread_setspecific(event_key, ev);
    }
    return ev;
}

static void reject(ingest_batch_t *b, size_t index, const char *message)
{
    if (!b->rejected) {
        b->first_err_index = index;
        snprintf(b->first_err, sizeof(b->first_err), "%s", message);
    }
    if (b->errors.len)
        lam_buf_append_char(&b->errors, ',');
    lam_buf_append_str(&b->errors, "{\"index\":");
    lam_json_append_i64(&b->errors, (int64_t)index);
    lam_buf_append_str(&b->errors, ",\"message\":");
    lam_json_append_cstr(&b->errors, message);
    lam_buf_append_char(&b->errors, '}');
    b->rejected++;
}

/* Validate one event (json[0..len)) and, when valid, queue its canonical form in the batch. */
static void add_event(parse_state_t *st, const char *json, size_t len)
{
    ingest_batch_t *b = st->b;
    lam_event_t *ev = st->ev;
    size_t index = b->nevents++;
    char err[256];
    if (lam_event_parse(ev, json, len, st->now_ms, st->ctx->cfg.max_future_ms, err, sizeof(err)) < 0) {
        reject(b, index, err);
        return;
    }
    st->part = -1;
    if (ev->id.type == LAM_VAL_ABSENT) {
        char id[LAM_UUID_LEN + 1];
        if (lam_uuid7(id, st->now_ms) < 0) {
            reject(b, index, "id: cannot generate one (no randomness)");
            return;
        }
        if (st->np > 0)
            steer_id(st, id);
        if (lam_event_set_id(ev, id, LAM_UUID_LEN, err, sizeof(err)) < 0) {
            reject(b, index, "id: cannot generate one (no randomness)");
            return;
        }
    }
    if (b->nslots == b->slots_cap) {
        b->slots_cap = b->slots_cap ? b->slots_cap * 2 : 16;
        b->slots = lam_realloc(b->slots, b->slots_cap * sizeof(*b->slots));
    }
    ingest_slot_t *s = &b->slots[b->nslots++];
    memset(s, 0, sizeof(*s));
    s->b = b;
    s->index = (uint32_t)index;
    s->part = st->part;
    s->key_off = b->keys.len;
    s->key_len = ev->id.val_len;
    lam_buf_append(&b->keys, ev->id.val, ev->id.val_len);
    s->payload_off = b->payload.len;
    lam_buf_reserve(&b->payload, ev->canonical_len + 1);
    lam_event_canonical(ev, &b->payload);
    s->payload_len = (uint32_t)(b->payload.len - s->payload_off);
    if (b->ids.len)
        lam_buf_append_char(&b->ids, ',');
    lam_json_append_string(&b->ids, ev->id.val, ev->id.val_len);
}

static int too_many_or_reply(parse_state_t *st)
{
    if (st->b->nevents < (size_t)st->ctx->cfg.max_events)
        return 0;
    return lam_http_error(st->b->req, 413, "too_many_events", "more than %lld events in one request",
                          (long long)st->ctx->cfg.max_events);
}

/* NDJSON: one event per non-blank line; index = position among the non-blank lines. */
static int split_ndjson_or_reply(parse_state_t *st, const char *body, size_t len)
{
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *s = p;
        while (s < le && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        const char *e = le;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        p = nl ? nl + 1 : end;
        if (s == e)
            continue;
        if (too_many_or_reply(st) < 0)
            return -1;
        add_event(st, s, (size_t)(e - s));
    }
    return 0;
}

/* application/json: one object, or an array whose elements are events (non-objects are rejected). */
static int split_json_or_reply(parse_state_t *st, const char *body, size_t len)
{
    lam_http_req_t *req = st->b->req;
    size_t ws = 0;
    while (ws < len && (body[ws] == ' ' || body[ws] == '\t' || body[ws] == '\r' || body[ws] == '\n'))
        ws++;
    if (ws == len)
        return lam_http_error(req, 400, "empty_body", "the body is empty: send a JSON object or array of objects");
    lam_json_t j;
    lam_json_init(&j, body, len, 0);
    lam_json_tok_t t = lam_json_next(&j);
    if (t == LAM_JSON_OBJECT) {
        size_t start = j.tok_pos;
        if (lam_json_skip(&j, t) < 0 || lam_json_next(&j) != LAM_JSON_EOF)
            return lam_http_error(req, 400, "invalid_json", "%s", j.err);
        add_event(st, body + start, j.pos - start);
        return 0;
    }
    if (t != LAM_JSON_ARRAY) {
        if (t == LAM_JSON_ERROR)
            return lam_http_error(req, 400, "invalid_json", "%s", j.err);
        return lam_http_error(req, 400, "invalid_json", "the body must be a JSON object or an array of objects");
    }
    for (;;) {
        t = lam_json_next(&j);
        if (t == LAM_JSON_ARRAY_END)
            break;
        if (t == LAM_JSON_ERROR || t == LAM_JSON_EOF)
            return lam_http_error(req, 400, "invalid_json", "%s", j.err);
        size_t start = j.tok_pos;
        if (lam_json_skip(&j, t) < 0)
            return lam_http_error(req, 400, "invalid_json", "%s", j.err);
        if (too_many_or_reply(st) < 0)
            return -1;
        if (t == LAM_JSON_OBJECT) {
            add_event(st, body + start, j.pos - start);
        } else {
            reject(st->b, st->b->nevents++, "event: must be a JSON object");
        }
    }
    if (lam_json_next(&j) != LAM_JSON_EOF)
        return lam_http_error(req, 400, "invalid_json", "%s", j.err);
    return 0;
}

static void append_counts(lam_buf_t *out, size_t accepted, size_t rejected)
{
    lam_buf_append_str(out, "\"accepted\":");
    lam_json_append_i64(out, (int64_t)accepted);
    lam_buf_append_str(out, ",\"rejected\":");
    lam_json_append_i64(out, (int64_t)rejected);
}

static void append_errors(lam_buf_t *out, const ingest_batch_t *b)
{
    lam_buf_append_str(out, ",\"errors\":[");
    lam_buf_append(out, b->errors.data ? b->errors.data : "", b->errors.len);
    lam_buf_append_str(out, "]}\n");
}

/* 400 when no event is valid: the error shape plus the per-event errors. */
static void reply_nothing_valid(ingest_batch_t *b)
{
    lam_buf_t out = LAM_BUF_INIT;
    char msg[400];
    if (b->nevents == 0) {
        snprintf(msg, sizeof(msg), "no events in the body");
    } else {
        snprintf(msg, sizeof(msg), "no valid event (%zu rejected); event %zu: %s", b->rejected, b->first_err_index,
                 b->first_err);
    }
    lam_buf_append_str(&out, "{\"error\":{\"code\":\"no_valid_events\",\"message\":");
    lam_json_append_cstr(&out, msg);
    lam_buf_append_str(&out, "},");
    append_counts(&out, 0, b->rejected);
    lam_buf_append_str(&out, ",\"ids\":[]");
    append_errors(&out, b);
    lam_http_reply_json(b->req, 400, &out);
    lam_buf_free(&out);
}

void ingest_batch_reply(ingest_batch_t *b)
{
    ingest_ctx_t *ctx = b->ctx;
    size_t ok = 0;
    unsigned long long bytes = 0;
    for (size_t i = 0; i < b->nslots; i++) {
        if (b->slots[i].status == INGEST_SLOT_OK) {
            ok++;
            bytes += b->slots[i].payload_len;
        }
    }
    size_t failed = b->nslots - ok;
    if (b->deferred && atomic_load(&ctx->stopping))
        lam_http_add_header(b->req, "Connection", "close");
    atomic_fetch_add(&ctx->m.events_accepted, ok);
    atomic_fetch_add(&ctx->m.events_unacked, failed);
    atomic_fetch_add(&ctx->m.produced_bytes, bytes);
    if (failed == 0) {
        lam_http_reply_json(b->req, 200, &b->ok_reply);
    } else {
        /* 503: which events Kafka did not acknowledge, by index and id, so a client can retry
         * exactly those with the same ids (idempotent downstream). */
        lam_buf_t out = LAM_BUF_INIT;
        char msg[400];
        snprintf(msg, sizeof(msg), "Kafka did not acknowledge %zu of %zu events within %lld ms (%s); retry them",
                 failed, b->nslots, (long long)ctx->cfg.timeout_ms,
                 b->fail_reason[0] ? b->fail_reason : "unavailable");
        lam_buf_append_str(&out, "{\"error\":{\"code\":\"unavailable\",\"message\":");
        lam_json_append_cstr(&out, msg);
        lam_buf_append_str(&out, "},");
        append_counts(&out, ok, b->rejected);
        lam_buf_append_str(&out, ",\"ids\":[");
        size_t n = 0;
        for (size_t i = 0; i < b->nslots; i++) {
            ingest_slot_t *s = &b->slots[i];
            if (s->status != INGEST_SLOT_OK)
                continue;
            if (n++)
                lam_buf_append_char(&out, ',');
            lam_json_append_string(&out, b->keys.data + s->key_off, s->key_len);
        }
        lam_buf_append_str(&out, "],\"not_acknowledged\":[");
        n = 0;
        for (size_t i = 0; i < b->nslots; i++) {
            ingest_slot_t *s = &b->slots[i];
            if (s->status == INGEST_SLOT_OK)
                continue;
            if (n++)
                lam_buf_append_char(&out, ',');
            lam_buf_append_str(&out, "{\"index\":");
            lam_json_append_i64(&out, s->index);
            lam_buf_append_str(&out, ",\"id\":");
            lam_json_append_string(&out, b->keys.data + s->key_off, s->key_len);
            lam_buf_append_char(&out, '}');
        }
        lam_buf_append_char(&out, ']');
        append_errors(&out, b);
        lam_http_add_header(b->req, "Retry-After", "1");
        lam_http_reply_json(b->req, 503, &out);
        lam_buf_free(&out);
    }
    int deferred = b->deferred;
    ingest_batch_free(b);
    if (deferred)
        atomic_fetch_sub(&ctx->inflight, 1);
}

void ingest_events_post(ingest_ctx_t *ctx, lam_http_req_t *req, int ndjson)
{
    ingest_batch_t *b = ingest_batch_new(ctx, req);
    int32_t np = ctx->own_partitioning ? atomic_load(&ctx->partitions) : 0;
    parse_state_t st = {ctx, b, thread_event(), lam_now_ms(), np, 0, -1};
    b->part_np = np;
    int rc = ndjson ? split_ndjson_or_reply(&st, req->body, req->body_len)
                    : split_json_or_reply(&st, req->body, req->body_len);
    if (rc < 0) {
        ingest_batch_free(b);
        return;
    }
    /* Every event's canonical form and id are in b now: the body is not read again, and a request
     * waiting for its delivery reports would otherwise hold it (128 connections x 100-event
     * requests: ~2.7 MB). */
    lam_http_body_done(req);
    atomic_fetch_add(&ctx->m.events_rejected, b->rejected);
    if (b->nslots == 0) {
        reply_nothing_valid(b);
        ingest_batch_free(b);
        return;
    }
    if (!ingest_producer_healthy(ctx)) {
        /* Fail fast: Kafka is known to be unreachable, nothing is produced. */
        for (size_t i = 0; i < b->nslots; i++)
            b->slots[i].status = INGEST_SLOT_FAILED;
        snprintf(b->fail_reason, sizeof(b->fail_reason), "cannot reach Kafka at %s", ctx->cfg.common.kafka_brokers);
        ingest_batch_reply(b);
        return;
    }
    lam_buf_reserve(&b->ok_reply, b->ids.len + b->errors.len + 64);
    lam_buf_append_char(&b->ok_reply, '{');
    append_counts(&b->ok_reply, b->nslots, b->rejected);
    lam_buf_append_str(&b->ok_reply, ",\"ids\":[");
    lam_buf_append(&b->ok_reply, b->ids.data, b->ids.len);
    lam_buf_append_char(&b->ok_reply, ']');
    append_errors(&b->ok_reply, b);
    lam_buf_clear(&b->ids);

    b->deferred = 1;
    atomic_fetch_add(&ctx->inflight, 1);
    lam_http_defer(req); /* before producing: a delivery report may reply at once */
    ingest_producer_send(ctx, b);
}
