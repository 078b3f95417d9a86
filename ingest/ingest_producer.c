/* ingest_producer.c - where ingest writes to Kafka: idempotent acks=all producers shared by all
 * requests, each owning a share of the partitions. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ingest.h"
#include "lam_kafka.h"
#include "lam_log.h"
#include "lam_mem.h"
#include "lam_service.h"

static const double lat_bounds[INGEST_LAT_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                      0.25,  0.5,    1,     2.5,  5,    10,   30};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* 1 when ingest_partition_of() agrees with librdkafka's consistent_random partitioner on sample
 * keys (ingest partitions and steers ids itself only then). */
static int partitioner_agrees(rd_kafka_topic_t *topic)
{
    char key[64];
    for (int i = 0; i < 200; i++) {
        size_t len =
            (size_t)snprintf(key, sizeof(key), "%08x-%d-0190a3f1-7c2e-7b4d-9e8f", (unsigned)i * 2654435761u, i);
        len -= (size_t)(i % 23);
        for (int32_t np = 1; np <= 64; np = np * 2 + 1)
            if (ingest_partition_of(key, len, np) !=
                rd_kafka_msg_partitioner_consistent_random(topic, key, len, np, NULL, NULL))
                return 0;
    }
    return 1;
}

static void batch_fail(ingest_batch_t *b, const char *reason)
{
    pthread_mutex_lock(&b->fail_lock);
    if (!b->fail_reason[0])
        snprintf(b->fail_reason, sizeof(b->fail_reason), "%s", reason);
    pthread_mutex_unlock(&b->fail_lock);
}

/* One delivery report, on the delivery-report thread: definitive thanks to message.timeout.ms.
 * Sets the slot's status; the batch's counters are updated per run (run_done). Returns 1 when
 * persisted. */
static int on_delivery(const rd_kafka_message_t *m)
{
    ingest_slot_t *slot = m->_private;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        slot->status = INGEST_SLOT_OK;
        return 1;
    }
    slot->status = INGEST_SLOT_FAILED;
    char reason[160];
    snprintf(reason, sizeof(reason), "kafka: %s", rd_kafka_err2str(m->err));
    batch_fail(slot->b, reason);
    return 0;
}

/* n consecutive reports of batch b (ok of them persisted): one latency observation per event,
 * one decrement of b's outstanding count; replies when they were b's last. A produce response's
 * messages come in runs of the same request (produced together per partition). */
static void run_done(ingest_ctx_t *ctx, ingest_batch_t *b, int n, int ok, int64_t now)
{
    if (ok) {
        int64_t us = now - b->produce_us;
        double s = (double)us / 1e6;
        size_t i = 0;
        while (i < INGEST_LAT_BUCKETS && s > lat_bounds[i])
            i++;
        atomic_fetch_add_explicit(&ctx->m.lat[i], (unsigned long long)ok, memory_order_relaxed);
        atomic_fetch_add_explicit(&ctx->m.lat_sum_us, (unsigned long long)us * (unsigned long long)ok,
                                  memory_order_relaxed);
    }
    if (atomic_fetch_sub(&b->pending, n) == n)
        ingest_batch_reply(b); /* b is freed: the caller forgets it */
}

#define DR_CHUNK 512 /* delivery reports taken from one event at a time */

/* Delivery reports arrive as events carrying many messages (one per produce response), so one
 * wake-up of this thread answers every request those messages complete. */
static void *dr_main(void *arg)
{
    ingest_producer_t *pr = arg;
    ingest_ctx_t *ctx = pr->ctx;
    rd_kafka_queue_t *q = rd_kafka_queue_get_main(pr->rk);
    const rd_kafka_message_t *msgs[DR_CHUNK];
    while (!atomic_load(&ctx->dr_stop)) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
        if (!ev)
            continue;
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_DR) {
            int64_t now = mono_us();
            int any_ok = 0;
            size_t n;
            while ((n = rd_kafka_event_message_array(ev, msgs, DR_CHUNK)) > 0) {
                ingest_batch_t *run = NULL;
                int run_n = 0, run_ok = 0;
                for (size_t i = 0; i < n; i++) {
                    ingest_batch_t *b = ((ingest_slot_t *)msgs[i]->_private)->b;
                    if (b != run && run) {
                        run_done(ctx, run, run_n, run_ok, now);
                        run_n = run_ok = 0;
                    }
                    run = b;
                    run_n++;
                    int ok = on_delivery(msgs[i]);
                    run_ok += ok;
                    any_ok |= ok;
                }
                if (run)
                    run_done(ctx, run, run_n, run_ok, now);
            }
            if (any_ok)
                atomic_store_explicit(&ctx->last_delivery, now / 1000, memory_order_relaxed);
        }
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(q);
    return NULL;
}

/* The configuration of each producer: the queue bounds are shared out between them. */
static rd_kafka_conf_t *producer_conf(ingest_ctx_t *ctx, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = lam_kafka_conf_new(ctx->cfg.common.kafka_brokers, errstr, errstr_size);
    if (!conf)
        return NULL;
    char v[32];
    /* Every message gets a definitive delivery report within the request timeout. */
    snprintf(v, sizeof(v), "%lld", (long long)ctx->cfg.timeout_ms);
    if (lam_kafka_conf_set(conf, "message.timeout.ms", v, errstr, errstr_size) < 0)
        goto fail;
    /* Bounded memory: a full queue means 503, never unbounded growth. */
    snprintf(v, sizeof(v), "%lld", (long long)(ctx->cfg.queue_bytes / 1024 / ctx->nprod));
    if (lam_kafka_conf_set(conf, "queue.buffering.max.kbytes", v, errstr, errstr_size) < 0)
        goto fail;
    snprintf(v, sizeof(v), "%lld", (long long)(ctx->cfg.queue_events / ctx->nprod));
    if (lam_kafka_conf_set(conf, "queue.buffering.max.messages", v, errstr, errstr_size) < 0)
        goto fail;
    /* A single-event request waits for linger.ms plus the produce round trip, so N keep-alive
     * clients get at most N / linger requests a second (64 clients, 5 ms: 12.8k/s). With 1 ms,
     * wrk -c64 did 9.2-10.2k req/s against 7.5-9.0k with 5 ms, at 55 instead of 44 us CPU per
     * request; 100-event requests were no slower. */
    if (lam_kafka_conf_set(conf, "linger.ms", "1", errstr, errstr_size) < 0)
        goto fail;
    /* librdkafka 2.0 sends one ProduceRequest per partition, and the broker serves one request of
     * a connection at a time anyway: with one in flight, the messages of every partition gather
     * while the previous request is served. Single events (wrk -c64, 6 partitions): 6.3 -> 9.5
     * messages per ProduceRequest, Kafka CPU per event down; 100-event requests: Kafka 4.4-4.7 ->
     * 3.6 ms and ingest 3.4 -> 2.9 ms CPU per 1k events. Still idempotent and ordered. */
    if (lam_kafka_conf_set(conf, "max.in.flight.requests.per.connection", "1", errstr, errstr_size) < 0)
        goto fail;
    /* LAM_KAFKA_X_* overrides the settings above too. */
    if (lam_kafka_conf_apply_env(conf, errstr, errstr_size) < 0)
        goto fail;
    rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR);
    rd_kafka_conf_set_opaque(conf, ctx);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* Producer k with its topic handle. 0 or -1. */
static int producer_new(ingest_ctx_t *ctx, int k, char *errstr, size_t errstr_size)
{
    ingest_producer_t *pr = &ctx->prod[k];
    pr->ctx = ctx;
    rd_kafka_conf_t *conf = producer_conf(ctx, errstr, errstr_size);
    if (!conf)
        return -1;
    if (k == 0) {
        /* Partition ourselves only when librdkafka would use the partitioner we reproduce. */
        char part[64];
        size_t part_len = sizeof(part);
        ctx->own_partitioning = rd_kafka_conf_get(conf, "partitioner", part, &part_len) == RD_KAFKA_CONF_OK &&
                                !strcmp(part, "consistent_random");
    }
    pr->rk = lam_kafka_producer_new(conf, errstr, errstr_size);
    if (!pr->rk)
        return -1;
    pr->topic = rd_kafka_topic_new(pr->rk, ctx->cfg.common.kafka_topic, NULL);
    if (!pr->topic) {
        snprintf(errstr, errstr_size, "topic %s: %s", ctx->cfg.common.kafka_topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    return 0;
}

int ingest_producer_init(ingest_ctx_t *ctx, char *errstr, size_t errstr_size)
{
    /* The broker serves the requests of one connection one at a time, so one producer keeps at most
     * one of Kafka's request handlers busy. Each further producer is a connection of its own, and
     * partition p always goes to producer p % n: a partition's batches stay as large as with one
     * producer (its events are not spread over several), and each partition still has a single
     * idempotent writer, in order. */
    int want = (int)(ctx->cfg.producers > 0 ? ctx->cfg.producers : 1);
    if (want > INGEST_PRODUCERS_MAX)
        want = INGEST_PRODUCERS_MAX;
    ctx->nprod = want; /* producer_conf() shares the queue bounds out between `want` producers
                        * (also when the fallback below leaves one: a smaller bound, never larger) */
    if (producer_new(ctx, 0, errstr, errstr_size) < 0)
        return -1;
    if (ctx->own_partitioning && !partitioner_agrees(ctx->prod[0].topic)) {
        lam_warn("msg=\"librdkafka's consistent_random partitioner is not CRC-32: ingest leaves partitioning to it\"");
        ctx->own_partitioning = 0;
    }
    if (!ctx->own_partitioning && want > 1) {
        /* Without our own partitioning a message's partition is known only inside librdkafka:
         * one producer, so that each partition keeps a single writer. */
        lam_warn("msg=\"LAM_INGEST_PRODUCERS needs the consistent_random partitioner: using one producer\"");
        ctx->nprod = 1;
    }
    for (int k = 1; k < ctx->nprod; k++)
        if (producer_new(ctx, k, errstr, errstr_size) < 0)
            return -1;
    return 0;
}

int ingest_producer_start(ingest_ctx_t *ctx, char *errstr, size_t errstr_size)
{
    for (int k = 0; k < ctx->nprod; k++) {
        if (pthread_create(&ctx->prod[k].dr_thread, NULL, dr_main, &ctx->prod[k]) != 0) {
            snprintf(errstr, errstr_size, "cannot start a delivery-report thread");
            return -1;
        }
        ctx->prod[k].dr_started = 1;
    }
    return 0;
}

int ingest_producer_healthy(ingest_ctx_t *ctx)
{
    return atomic_load(&ctx->kafka_ok);
}

int ingest_producer_probe(ingest_ctx_t *ctx)
{
    int64_t now = lam_now_mono_ms();
    atomic_store(&ctx->kafka_checked, now);
    char err[256] = "";
    rd_kafka_t *rk = ctx->prod[0].rk;
    int ok = lam_kafka_ping(rk, 1000, err, sizeof(err)) == 0;
    /* Under heavy load a metadata request can be slow while deliveries flow: those count too. */
    if (!ok && now - atomic_load(&ctx->last_delivery) < 2000)
        ok = 1;
    const char *fatal = NULL;
    char ferr[256];
    for (int k = 0; k < ctx->nprod && !fatal; k++) {
        if (rd_kafka_fatal_error(ctx->prod[k].rk, ferr, sizeof(ferr)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            ok = 0;
            fatal = ferr;
        }
    }
    if (ok && !atomic_load(&ctx->kafka_ok)) {
        /* First contact (or recovery): make sure the topic exists. */
        if (lam_kafka_ensure_topic(rk, ctx->cfg.common.kafka_topic, (int)ctx->cfg.common.kafka_partitions,
                                   5000, err, sizeof(err)) < 0) {
            lam_warn("msg=\"cannot create topic\" error=\"%s\"", err);
            ok = 0;
        } else {
            lam_info("msg=\"kafka reachable\" brokers=%s topic=%s", ctx->cfg.common.kafka_brokers,
                     ctx->cfg.common.kafka_topic);
        }
    } else if (!ok && atomic_load(&ctx->kafka_ok)) {
        lam_warn("msg=\"cannot reach Kafka\" brokers=%s error=\"%s\"", ctx->cfg.common.kafka_brokers,
                 fatal ? fatal : err);
    }
    if (ok && ctx->own_partitioning) {
        /* For produce_by_partition(): the topic's partition count, refreshed every probe. */
        int np = lam_kafka_partition_count(rk, ctx->cfg.common.kafka_topic, 1000, err, sizeof(err));
        if (np > 0)
            atomic_store(&ctx->partitions, np);
    }
    atomic_store(&ctx->kafka_ok, ok);
    return ok;
}

/* The message arrays of each HTTP thread, reused across requests (freed when the thread ends). */
typedef struct msg_array {
    rd_kafka_message_t *m;  /* in request order */
    rd_kafka_message_t *by; /* grouped by partition */
    int32_t *part;
    size_t cap;
    size_t *count; /* per partition, then start offsets */
    size_t count_cap;
} msg_array_t;

static pthread_key_t msgs_key;
static pthread_once_t msgs_once = PTHREAD_ONCE_INIT;

static void msgs_release(msg_array_t *a)
{
    lam_free(a->m);
    lam_free(a->by);
    lam_free(a->part);
    a->m = a->by = NULL;
    a->part = NULL;
    a->cap = 0;
}

static void msgs_free(void *p)
{
    msg_array_t *a = p;
    msgs_release(a);
    lam_free(a->count);
    lam_free(a);
}

static void msgs_key_init(void)
{
    pthread_key_create(&msgs_key, msgs_free);
}

#define MSGS_KEEP 4096        /* keep arrays up to this many messages; a 100k-event request frees its own */
#define OWN_PARTITION_MIN 8   /* from this many events on (and for one), produce one batch per partition */
#define OWN_PARTITION_MAX 4096

/* Note one message rd_kafka_produce_batch() refused (err set) as failed. */
static void note_refused_one(ingest_ctx_t *ctx, ingest_batch_t *b, const rd_kafka_message_t *m)
{
    ingest_slot_t *s = m->_private;
    s->status = INGEST_SLOT_FAILED;
    if (m->err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        atomic_fetch_add(&ctx->m.queue_full, 1);
        batch_fail(b, "producer queue full");
    } else {
        char reason[160];
        snprintf(reason, sizeof(reason), "kafka: %s", rd_kafka_err2str(m->err));
        batch_fail(b, reason);
    }
}

/* Note every refused message of msgs[0..n); returns how many. */
static int note_refused(ingest_ctx_t *ctx, ingest_batch_t *b, const rd_kafka_message_t *msgs, size_t n)
{
    int refused = 0;
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].err) {
            note_refused_one(ctx, b, &msgs[i]);
            refused++;
        }
    }
    return refused;
}

/* Produce m[0..cnt), all for partition p. Returns how many were refused. Messages for a
 * partition librdkafka does not know yet (the topic grew) are produced with
 * RD_KAFKA_PARTITION_UA instead. */
static int produce_partition(ingest_ctx_t *ctx, ingest_batch_t *b, int32_t p, rd_kafka_message_t *m, size_t cnt)
{
    if (rd_kafka_produce_batch(ctx->prod[p % ctx->nprod].topic, p, 0, m, (int)cnt) == (int)cnt)
        return 0;
    int refused = 0;
    size_t again = 0;
    for (size_t i = 0; i < cnt; i++) {
        if (!m[i].err)
            continue;
        if (m[i].err != RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION) {
            note_refused_one(ctx, b, &m[i]);
            refused++;
            continue;
        }
        m[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
        m[again++] = m[i]; /* over entries already produced or noted */
    }
    if (again) {
        atomic_store(&ctx->partitions, 0); /* stale count: back to librdkafka's until the next probe */
        /* By the first producer: until the next probe a new partition may get a second writer,
         * which costs its order with the other producer's messages, not any message. */
        if (rd_kafka_produce_batch(ctx->prod[0].topic, RD_KAFKA_PARTITION_UA, 0, m, (int)again) < (int)again)
            refused += note_refused(ctx, b, m, again);
    }
    return refused;
}

/* The partition of message m (for np partitions): the one steer_id() chose, else the CRC-32 of
 * the key, as librdkafka's consistent_random partitioner picks it. */
static int32_t partition_of(ingest_ctx_t *ctx, const ingest_batch_t *b, const rd_kafka_message_t *m, int32_t np)
{
    const ingest_slot_t *s = m->_private;
    if (b->part_np == np && s->part >= 0)
        return s->part;
    if (m->key_len)
        return ingest_partition_of(m->key, m->key_len, np);
    return rd_kafka_msg_partitioner_consistent_random(ctx->prod[0].topic, m->key, 0, np, NULL, NULL);
}

/*
 * Produce msgs[0..n) one rd_kafka_produce_batch() per partition: librdkafka then takes each
 * partition's lock once per batch instead of once per message. The partition is the one
 * librdkafka's own consistent_random partitioner would pick (crc32 of the id), so the
 * partitioning is the same as producing with RD_KAFKA_PARTITION_UA. Messages keep their order
 * within a partition. Returns how many were refused.
 */
static int produce_by_partition(ingest_ctx_t *ctx, ingest_batch_t *b, msg_array_t *a, size_t n, int32_t np)
{
    if (n == 1)
        return produce_partition(ctx, b, partition_of(ctx, b, &a->m[0], np), a->m, 1);
    if ((size_t)np + 1 > a->count_cap) {
        a->count_cap = (size_t)np + 1;
        a->count = lam_realloc(a->count, a->count_cap * sizeof(*a->count));
    }
    memset(a->count, 0, ((size_t)np + 1) * sizeof(*a->count));
    for (size_t i = 0; i < n; i++) {
        a->part[i] = partition_of(ctx, b, &a->m[i], np);
        a->count[a->part[i] + 1]++;
    }
    for (int32_t p = 0; p < np; p++)
        a->count[p + 1] += a->count[p]; /* count[p] = where partition p starts */
    for (size_t i = 0; i < n; i++)
        a->by[a->count[a->part[i]]++] = a->m[i];
    int refused = 0;
    size_t start = 0;
    for (int32_t p = 0; p < np; p++) {
        size_t end = a->count[p]; /* after the placement loop: where partition p ends */
        if (end > start)
            refused += produce_partition(ctx, b, p, a->by + start, end - start);
        start = end;
    }
    return refused;
}

void ingest_producer_send(ingest_ctx_t *ctx, ingest_batch_t *b)
{
    pthread_once(&msgs_once, msgs_key_init);
    msg_array_t *a = pthread_getspecific(msgs_key);
    if (!a) {
        a = lam_calloc(1, sizeof(*a));
        pthread_setspecific(msgs_key, a);
    }
    size_t n = b->nslots;
    if (n > a->cap) {
        msgs_release(a);
        a->cap = n < 128 ? 128 : n;
        a->m = lam_malloc(a->cap * sizeof(*a->m));
        a->by = lam_malloc(a->cap * sizeof(*a->by));
        a->part = lam_malloc(a->cap * sizeof(*a->part));
    }
    rd_kafka_message_t *msgs = a->m;
    memset(msgs, 0, n * sizeof(*msgs));
    for (size_t i = 0; i < n; i++) {
        ingest_slot_t *s = &b->slots[i];
        msgs[i].payload = b->payload.data + s->payload_off;
        msgs[i].len = s->payload_len;
        msgs[i].key = b->keys.data + s->key_off;
        msgs[i].key_len = s->key_len;
        msgs[i]._private = s;
    }
    /* One reference per message plus ours, so an early delivery report cannot finish the batch. */
    atomic_store(&b->pending, (int)n + 1);
    b->produce_us = mono_us();
    /* No RD_KAFKA_MSG_F_COPY: payloads live in b until the last delivery report. No headers ever,
     * so no client can produce a cut marker. */
    int32_t np = atomic_load(&ctx->partitions);
    int refused;
    if (np > 0 && np <= OWN_PARTITION_MAX && (n >= OWN_PARTITION_MIN || n == 1))
        refused = produce_by_partition(ctx, b, a, n, np);
    else if (rd_kafka_produce_batch(ctx->prod[0].topic, RD_KAFKA_PARTITION_UA, 0, msgs, (int)n) < (int)n)
        refused = note_refused(ctx, b, msgs, n);
    else
        refused = 0;
    if (a->cap > MSGS_KEEP)
        msgs_release(a);
    /* b may be freed from here on */
    if (atomic_fetch_sub(&b->pending, refused + 1) == refused + 1)
        ingest_batch_reply(b);
}

void ingest_producer_destroy(ingest_ctx_t *ctx)
{
    /* Flush while the delivery-report threads still answer: with delivery reports as events,
     * rd_kafka_flush() only waits for them to be served. */
    int64_t deadline = lam_now_mono_ms() + 10000; /* for all of them together */
    for (int k = 0; k < ctx->nprod; k++) {
        ingest_producer_t *pr = &ctx->prod[k];
        int64_t left = deadline - lam_now_mono_ms();
        int wait_ms = pr->dr_started && left > 0 ? (int)left : 0;
        if (pr->rk && rd_kafka_flush(pr->rk, wait_ms) != RD_KAFKA_RESP_ERR_NO_ERROR && pr->dr_started)
            lam_warn("msg=\"producer flush timed out\" producer=%d queued=%d", k, rd_kafka_outq_len(pr->rk));
    }
    atomic_store(&ctx->dr_stop, 1);
    for (int k = 0; k < ctx->nprod; k++) {
        ingest_producer_t *pr = &ctx->prod[k];
        if (pr->dr_started) {
            pthread_join(pr->dr_thread, NULL);
            pr->dr_started = 0;
        }
        if (pr->topic) {
            rd_kafka_topic_destroy(pr->topic);
            pr->topic = NULL;
        }
        if (pr->rk) {
            rd_kafka_destroy(pr->rk);
            pr->rk = NULL;
        }
    }
}

/* Messages in the producers' queues. */
static int producer_queued(ingest_ctx_t *ctx)
{
    int n = 0;
    for (int k = 0; k < ctx->nprod; k++)
        n += ctx->prod[k].rk ? rd_kafka_outq_len(ctx->prod[k].rk) : 0;
    return n;
}

void ingest_producer_metrics(ingest_ctx_t *ctx, lam_buf_t *out)
{
    ingest_metrics_t *m = &ctx->m;
    lam_buf_printf(out,
                   "# HELP lam_ingest_events_accepted_total Events Kafka acknowledged (acks=all).\n"
                   "# TYPE lam_ingest_events_accepted_total counter\n"
                   "lam_ingest_events_accepted_total %llu\n"
                   "# HELP lam_ingest_events_rejected_total Invalid events reported in errors.\n"
                   "# TYPE lam_ingest_events_rejected_total counter\n"
                   "lam_ingest_events_rejected_total %llu\n"
                   "# HELP lam_ingest_events_not_acknowledged_total Valid events answered with 503.\n"
                   "# TYPE lam_ingest_events_not_acknowledged_total counter\n"
                   "lam_ingest_events_not_acknowledged_total %llu\n"
                   "# HELP lam_ingest_produced_bytes_total Canonical event bytes acknowledged by Kafka.\n"
                   "# TYPE lam_ingest_produced_bytes_total counter\n"
                   "lam_ingest_produced_bytes_total %llu\n"
                   "# HELP lam_ingest_queue_full_total Events refused because the producer queue was full.\n"
                   "# TYPE lam_ingest_queue_full_total counter\n"
                   "lam_ingest_queue_full_total %llu\n",
                   atomic_load(&m->events_accepted), atomic_load(&m->events_rejected),
                   atomic_load(&m->events_unacked), atomic_load(&m->produced_bytes), atomic_load(&m->queue_full));
    lam_buf_printf(out, "# HELP lam_ingest_produce_seconds Time from produce to delivery report, per event.\n"
                        "# TYPE lam_ingest_produce_seconds histogram\n");
    unsigned long long cum = 0;
    for (size_t i = 0; i <= INGEST_LAT_BUCKETS; i++) {
        cum += atomic_load(&m->lat[i]);
        if (i < INGEST_LAT_BUCKETS)
            lam_buf_printf(out, "lam_ingest_produce_seconds_bucket{le=\"%g\"} %llu\n", lat_bounds[i], cum);
        else
            lam_buf_printf(out, "lam_ingest_produce_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    lam_buf_printf(out, "lam_ingest_produce_seconds_sum %.6f\nlam_ingest_produce_seconds_count %llu\n",
                   (double)atomic_load(&m->lat_sum_us) / 1e6, cum);
    lam_buf_printf(out,
                   "# HELP lam_ingest_kafka_queue_messages Messages in librdkafka's queue (rd_kafka_outq_len).\n"
                   "# TYPE lam_ingest_kafka_queue_messages gauge\n"
                   "lam_ingest_kafka_queue_messages %d\n"
                   "# HELP lam_ingest_kafka_up 1 when the last probe reached Kafka.\n"
                   "# TYPE lam_ingest_kafka_up gauge\n"
                   "lam_ingest_kafka_up %d\n"
                   "# HELP lam_ingest_requests_in_flight Requests waiting for delivery reports.\n"
                   "# TYPE lam_ingest_requests_in_flight gauge\n"
                   "lam_ingest_requests_in_flight %d\n",
                   producer_queued(ctx), atomic_load(&ctx->kafka_ok),
                   atomic_load(&ctx->inflight));
}
