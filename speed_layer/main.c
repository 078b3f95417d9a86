/* main.c - speed_layer: configuration, start-up, the consume loop and shutdown. */
#include <inttypes.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>

#include "lam_kafka.h"
#include "lam_log.h"
#include "lam_mem.h"
#include "lam_redis.h"
#include "lam_service.h"
#include "lam_store.h"
#include "speed.h"

static const lam_config_entry_t speed_config_table[] = {
    LAM_CFG_ENTRY_KAFKA(speed_config_t, common),
    LAM_CFG_ENTRY_REDIS(speed_config_t, common),
    LAM_CFG_ENTRY_VIEWS(speed_config_t, common),
    LAM_CFG_ENTRY_LOG(speed_config_t, common),
    {"LAM_SPEED_ADDR", LAM_CFG_ADDR, "127.0.0.1:8082", offsetof(speed_config_t, addr),
     "speed_layer /healthz and /metrics listen address"},
    {"LAM_SPEED_GROUP", LAM_CFG_STR, "speed", offsetof(speed_config_t, group), "speed_layer consumer group"},
    {"LAM_DEDUP_WINDOW_S", LAM_CFG_SEC, "3600", offsetof(speed_config_t, dedup_window_ms),
     "seconds an event id is remembered for duplicate detection", 0, 30LL * 86400000},
    {"LAM_SPEED_BATCH_MAX", LAM_CFG_INT, "15000", offsetof(speed_config_t, batch_max),
     "speed_layer micro-batch: at most this many records per Redis write", 1, 100000},
    {"LAM_SPEED_BATCH_MS", LAM_CFG_MS, "50", offsetof(speed_config_t, batch_ms),
     "speed_layer micro-batch: written at the latest this long after its first record", 1, 60000},
    {"LAM_SPEED_KEY_TTL_S", LAM_CFG_SEC, "691200", offsetof(speed_config_t, key_ttl_ms),
     "safety-net EXPIRE of real-time keys, renewed on every write (publish deletes them earlier)", 60000,
     365LL * 86400000},
    {"LAM_SPEED_DEDUP_FILTER_KB", LAM_CFG_INT, "8192", offsetof(speed_config_t, bloom_max_kb),
     "memory for the dedup Bloom filters (ids of the window); beyond it ids are kept one Redis hash field each", 0,
     4194304},
    {"LAM_SPEED_HLL_DENSE_AT", LAM_CFG_INT, "256", offsetof(speed_config_t, hll_dense_at),
     "an HLL key is made dense once this many values were added to it (sparse PFADDs cost Redis ~9x dense ones; 0: never)",
     0, 1000000000},
    {"LAM_SPEED_FULL_PARSE", LAM_CFG_BOOL, "0", offsetof(speed_config_t, full_parse),
     "parse every record with the full parser, not the projected scan of the views' fields (for tests)"},
    {NULL}};

/* Every second: published run, cleanup of covered epochs, lag, stats push, offsets commit. */
static void periodic(speed_ctx_t *ctx, int64_t *last_events, int64_t *last_tick)
{
    int64_t now = lam_now_mono_ms();
    if (now - *last_tick < 1000)
        return;
    speed_batch_complete(ctx); /* its replies come before those of anything sent now */
    if (ctx->redis && speed_redis_read_current(ctx) == 0)
        speed_redis_cleanup_epochs(ctx);
    speed_kafka_update_lag(ctx);
    speed_stats_t *s = &ctx->stats;
    pthread_mutex_lock(&s->lock);
    s->events_per_s = (double)((int64_t)s->events - *last_events) * 1000.0 / (double)(now - *last_tick);
    *last_events = (int64_t)s->events;
    s->nparts = ctx->nparts < 1024 ? ctx->nparts : 1024;
    for (int p = 0; p < s->nparts; p++) {
        s->part_lag[p] = ctx->parts[p].lag;
        s->part_epoch[p] = ctx->parts[p].epoch;
        s->part_assigned[p] = ctx->parts[p].assigned;
    }
    s->current_run = ctx->current_run;
    pthread_mutex_unlock(&s->lock);
    if (ctx->redis)
        speed_redis_push_stats(ctx);
    speed_kafka_commit(ctx);
    *last_tick = now;
}

/*
 * Kafka reachability, every 2 s on a thread of its own: a metadata request can wait on the broker
 * behind the consumer's long-poll fetch or on a busy machine, and the consume loop must not stall on
 * it (with the ping on the loop and a 500 ms limit, /healthz once went 503 on an idle, reachable
 * broker). One slow answer is not an outage: unhealthy after two failed pings in a row, healthy
 * again at the first answer.
 */
static void *health_main(void *arg)
{
    speed_ctx_t *ctx = arg;
    char err[512];
    int failed = 0;
    while (!lam_service_sleep_ms(2000)) { /* consume() returns only once the service is stopping */
        int ok = lam_kafka_ping(ctx->consumer, 2000, err, sizeof(err)) == 0;
        failed = ok ? 0 : failed + 1;
        if (!ok && failed < 2)
            continue;
        if (ok != atomic_load(&ctx->kafka_ok)) {
            if (ok)
                lam_info("msg=\"kafka reachable\" brokers=%s", ctx->cfg.common.kafka_brokers);
            else
                lam_warn("msg=\"cannot reach Kafka\" brokers=%s error=\"%s\"", ctx->cfg.common.kafka_brokers, err);
            atomic_store(&ctx->kafka_ok, ok);
        }
    }
    return NULL;
}

/* Redis away: hold the partitions, reconnect with backoff, then resume from the stored offsets. */
static void ensure_redis(speed_ctx_t *ctx, lam_backoff_t *bo, int64_t *next_try)
{
    if (!ctx->redis) {
        int64_t now = lam_now_mono_ms();
        if (now < *next_try)
            return;
        speed_kafka_pause(ctx);
        if (speed_redis_connect(ctx) < 0) {
            int64_t d = lam_backoff_next(bo);
            *next_try = now + d;
            lam_warn("msg=\"redis unavailable, consumption paused\" retry_in_ms=%" PRId64, d);
            return;
        }
        lam_backoff_reset(bo);
    }
    if (ctx->need_resync && speed_kafka_resync(ctx) < 0 && ctx->redis)
        lam_warn("msg=\"resync failed, retrying\"");
}

static void consume(speed_ctx_t *ctx)
{
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(ctx->consumer);
    size_t cap = (size_t)ctx->cfg.batch_max;
    rd_kafka_message_t **msgs = lam_malloc(cap * sizeof(*msgs));
    lam_backoff_t bo = LAM_BACKOFF_INIT(200, 10000);
    int64_t next_try = 0, last_events = 0, last_tick = lam_now_mono_ms();
    while (!lam_service_stopping()) {
        ensure_redis(ctx, &bo, &next_try);
        periodic(ctx, &last_events, &last_tick);
        int64_t now = lam_now_mono_ms();
        int timeout = 100;
        if (ctx->nrecs) {
            int64_t left = ctx->batch_start_ms + ctx->cfg.batch_ms - now;
            timeout = left < 0 ? 0 : (int)left;
        }
        size_t room = cap - ctx->nrecs;
        ssize_t n;
        if (!ctx->nrecs) {
            /* Idle: wait for ONE record, so the batch window starts when it arrives
             * (rd_kafka_consume_batch_queue waits its whole timeout for the array to fill), then
             * take what is already queued without waiting. */
            msgs[0] = rd_kafka_consume_queue(q, timeout);
            n = msgs[0] ? 1 : 0;
            if (n && room > 1) {
                ssize_t more = rd_kafka_consume_batch_queue(q, 0, msgs + 1, room - 1);
                n += more > 0 ? more : 0;
            }
        } else {
            n = rd_kafka_consume_batch_queue(q, timeout, msgs, room);
        }
        uint64_t nbytes = 0;
        for (ssize_t i = 0; i < n; i++)
            nbytes += msgs[i]->len;
        if (n > 0)
            speed_kafka_note_sizes(ctx, nbytes, (uint64_t)n);
        if (n <= 0)
            speed_batch_complete(ctx); /* idle: the pending batch's counters should not wait for the next one */
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    lam_warn("msg=\"kafka consume error\" error=\"%s\"", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                continue;
            }
            int p = m->partition;
            speed_part_t *sp = p < ctx->nparts ? &ctx->parts[p] : NULL;
            /* Not ours, not yet resynced, or fetched before a seek back: the stored offset decides. */
            if (!sp || !sp->assigned || ctx->need_resync || !ctx->redis ||
                (sp->pos != SPEED_NO_OFFSET && m->offset < sp->pos)) {
                rd_kafka_message_destroy(m);
                continue;
            }
            sp->pos = m->offset + 1;
            speed_batch_add(ctx, m);
        }
        if (ctx->nrecs && (ctx->nrecs >= cap || lam_now_mono_ms() - ctx->batch_start_ms >= ctx->cfg.batch_ms))
            speed_batch_flush(ctx);
    }
    /* SIGTERM: write the micro-batch in hand, then leave the group. */
    if (ctx->redis && !ctx->need_resync)
        speed_batch_sync(ctx);
    speed_batch_drop(ctx);
    rd_kafka_queue_destroy(q);
    lam_free(msgs);
}

int main(int argc, char **argv)
{
    static speed_ctx_t ctx;
    mallopt(M_ARENA_MAX, 2); /* librdkafka's threads would each get an arena: RSS, not speed */
    lam_config_init_or_exit("speed_layer", speed_config_table, &ctx.cfg, argc, argv);
    lam_service_signals();
    speed_stats_init(&ctx.stats);
    lam_event_init(&ctx.ev);
    speed_dedup_init(&ctx);
    pthread_mutex_init(&ctx.kick_lock, NULL);

    char err[512];
    ctx.views = lam_views_load(ctx.cfg.common.views_path, err, sizeof(err));
    if (!ctx.views) {
        fprintf(stderr, "speed_layer: %s\n", err);
        lam_error("msg=\"bad views file\" error=\"%s\"", err);
        return 2;
    }
    /* The engine's own HLLs are not used (the batch PFADDs the raw values, see README "Distinct"): the
     * aggregation runs on a copy of the views whose distinct metrics are max, never emitted (a max only
     * checks its value is a number, and keeps the field in the agg's projection for collect_distinct). */
    ctx.agg_views = lam_views_load(ctx.cfg.common.views_path, err, sizeof(err));
    if (!ctx.agg_views) {
        lam_error("msg=\"bad views file\" error=\"%s\"", err);
        return 2;
    }
    for (size_t v = 0; v < lam_views_count(ctx.agg_views); v++) {
        lam_view_t *view = (lam_view_t *)lam_views_get(ctx.agg_views, v);
        for (size_t m = 0; m < view->nmetrics; m++)
            if (view->metrics[m].kind == LAM_METRIC_DISTINCT)
                view->metrics[m].kind = LAM_METRIC_MAX;
    }
    lam_buf_t k = LAM_BUF_INIT;
    lam_store_speed_key(&k, ctx.cfg.group, "offsets");
    snprintf(ctx.offsets_key, sizeof(ctx.offsets_key), "%s", k.data);
    lam_store_speed_key(&k, ctx.cfg.group, "epochs");
    snprintf(ctx.epochs_key, sizeof(ctx.epochs_key), "%s", k.data);
    lam_store_speed_key(&k, ctx.cfg.group, "stats");
    snprintf(ctx.stats_key, sizeof(ctx.stats_key), "%s", k.data);
    lam_store_speed_key(&k, ctx.cfg.group, "fence");
    snprintf(ctx.fence_key, sizeof(ctx.fence_key), "%s", k.data);
    lam_buf_free(&k);
    ctx.need_resync = 1;

    lam_http_opts_t opts = {.host = ctx.cfg.addr.host, .port = ctx.cfg.addr.port, .max_body = 4096,
                            .conn_limit = 64, .timeout_s = 10, .handler = speed_http_handle, .opaque = &ctx};
    ctx.http = lam_http_start(&opts, err, sizeof(err));
    if (!ctx.http) {
        lam_error("msg=\"cannot start http\" error=\"%s\"", err);
        return 1;
    }
    /* Redis first, so the first assignment already knows the stored offsets. */
    lam_backoff_t start_bo = LAM_BACKOFF_INIT(200, 10000);
    while (!lam_service_stopping() && speed_redis_connect(&ctx) < 0) {
        int64_t d = lam_backoff_next(&start_bo);
        lam_warn("msg=\"waiting for redis before consuming\" retry_in_ms=%" PRId64, d);
        lam_service_sleep_ms(d);
    }
    if (ctx.redis)
        speed_redis_read_current(&ctx);
    if (speed_kafka_init(&ctx, err, sizeof(err)) < 0) {
        lam_error("msg=\"cannot create kafka consumer\" error=\"%s\"", err);
        lam_http_stop(ctx.http);
        return 1;
    }
    atomic_store(&ctx.kafka_ok, lam_kafka_ping(ctx.consumer, 2000, err, sizeof(err)) == 0);
    speed_kafka_kicker_start(&ctx);
    ctx.health_running = pthread_create(&ctx.health_thread, NULL, health_main, &ctx) == 0;
    if (!ctx.health_running)
        lam_warn("msg=\"cannot start the Kafka health thread; /healthz keeps the start-up answer\"");
    lam_info("msg=started addr=%s:%d group=%s topic=%s batch_max=%" PRId64 " batch_ms=%" PRId64, ctx.cfg.addr.host,
             ctx.cfg.addr.port, ctx.cfg.group, ctx.cfg.common.kafka_topic, ctx.cfg.batch_max, ctx.cfg.batch_ms);

    consume(&ctx);

    lam_info("msg=stopping");
    if (ctx.health_running)
        pthread_join(ctx.health_thread, NULL);
    speed_kafka_destroy(&ctx); /* the revoke callback writes nothing more: the batch is empty */
    lam_http_stop(ctx.http);
    if (ctx.redis)
        redisFree(ctx.redis);
    speed_apply_free(&ctx);
    lam_views_free(ctx.views);
    lam_views_free(ctx.agg_views);
    lam_free(ctx.parts);
    lam_config_free(speed_config_table, &ctx.cfg);
    lam_info("msg=stopped");
    return 0;
}
