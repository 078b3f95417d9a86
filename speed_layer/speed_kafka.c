/* speed_kafka.c - where the speed layer reads Kafka: group membership, assignment from Redis offsets, lag. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lam_kafka.h"
#include "lam_log.h"
#include "lam_service.h"
#include "speed.h"

/* Offsets come from Redis (the stored offset decides); absent partitions start at the beginning. */
static int64_t start_offset(const speed_part_t *sp)
{
    return sp->stored == SPEED_NO_OFFSET ? RD_KAFKA_OFFSET_BEGINNING : sp->stored;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    speed_ctx_t *ctx = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        speed_batch_complete(ctx); /* before reading the offsets on the same connection */
        for (int i = 0; i < parts->cnt; i++) {
            speed_parts_ensure(ctx, parts->elems[i].partition);
            ctx->parts[parts->elems[i].partition].assigned = 1;
        }
        int have = ctx->redis && speed_redis_read_offsets(ctx) == 0;
        for (int i = 0; i < parts->cnt; i++) {
            speed_part_t *sp = &ctx->parts[parts->elems[i].partition];
            parts->elems[i].offset = have ? start_offset(sp) : RD_KAFKA_OFFSET_BEGINNING;
            lam_info("msg=\"partition assigned\" partition=%d offset=%" PRId64 " epoch=%" PRId64
                     " from=%s", parts->elems[i].partition, sp->stored, sp->epoch, have ? "redis" : "none-yet");
        }
        rd_kafka_assign(rk, parts);
        pthread_mutex_lock(&ctx->kick_lock);
        if (ctx->kick_parts)
            rd_kafka_topic_partition_list_destroy(ctx->kick_parts);
        ctx->kick_parts = rd_kafka_topic_partition_list_copy(parts);
        pthread_mutex_unlock(&ctx->kick_lock);
        if (have) {
            ctx->need_resync = 0;
        } else {
            /* Redis is away: hold the partitions until it is back and the stored offsets are known. */
            ctx->need_resync = 1;
            rd_kafka_pause_partitions(rk, parts);
        }
    } else {
        /* Write what we have for these partitions before giving them up (dropped if Redis is away:
         * the next owner resumes from the stored offsets either way). */
        speed_batch_sync(ctx);
        for (int i = 0; i < parts->cnt; i++) {
            int p = parts->elems[i].partition;
            if (p < ctx->nparts)
                ctx->parts[p].assigned = 0;
            lam_info("msg=\"partition revoked\" partition=%d", p);
        }
        pthread_mutex_lock(&ctx->kick_lock);
        if (ctx->kick_parts)
            rd_kafka_topic_partition_list_destroy(ctx->kick_parts);
        ctx->kick_parts = NULL;
        pthread_mutex_unlock(&ctx->kick_lock);
        rd_kafka_assign(rk, NULL);
    }
}

/* An integer property of conf as it will be used (our default or the operator's LAM_KAFKA_X_*). */
static int64_t conf_int(rd_kafka_conf_t *conf, const char *name, int64_t dflt)
{
    char v[64];
    size_t n = sizeof(v);
    if (rd_kafka_conf_get(conf, name, v, &n) != RD_KAFKA_CONF_OK)
        return dflt;
    return strtoll(v, NULL, 10);
}

int speed_kafka_init(speed_ctx_t *ctx, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = lam_kafka_conf_new(ctx->cfg.common.kafka_brokers, errstr, errstr_size);
    if (!conf)
        return -1;
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_opaque(conf, ctx);
    /* Eager assignment (rd_kafka_assign in the callback); larger fetches for catching up. */
    if (lam_kafka_conf_set(conf, "partition.assignment.strategy", "range,roundrobin", errstr, errstr_size) < 0 ||
        lam_kafka_conf_set(conf, "fetch.max.bytes", SPEED_FETCH_MAX_BYTES, errstr, errstr_size) < 0 ||
        lam_kafka_conf_set(conf, "queued.max.messages.kbytes", SPEED_PREFETCH_KB, errstr, errstr_size) < 0 ||
        /* librdkafka 2.0 backs a partition's fetcher off for fetch.error.backoff.ms (500) whenever the
         * prefetch queue is full, which stalled catch-up for ~0.5 s every ~30k records */
        lam_kafka_conf_set(conf, "fetch.error.backoff.ms", "10", errstr, errstr_size) < 0 ||
        lam_kafka_conf_apply_env(conf, errstr, errstr_size) < 0) { /* operators' LAM_KAFKA_X_* win */
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    ctx->prefetch_bytes = conf_int(conf, "queued.max.messages.kbytes", 65536) * 1024;
    ctx->prefetch_msgs = conf_int(conf, "queued.min.messages", 100000);
    ctx->consumer = lam_kafka_consumer_new(conf, ctx->cfg.group, errstr, errstr_size);
    if (!ctx->consumer)
        return -1;
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, ctx->cfg.common.kafka_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(ctx->consumer, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (err) {
        snprintf(errstr, errstr_size, "subscribe %s: %s", ctx->cfg.common.kafka_topic, rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

static rd_kafka_topic_partition_list_t *assigned_list(speed_ctx_t *ctx)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(ctx->nparts ? ctx->nparts : 1);
    for (int p = 0; p < ctx->nparts; p++)
        if (ctx->parts[p].assigned)
            rd_kafka_topic_partition_list_add(l, ctx->cfg.common.kafka_topic, p)->offset = start_offset(&ctx->parts[p]);
    return l;
}

int speed_kafka_resync(speed_ctx_t *ctx)
{
    speed_batch_complete(ctx); /* its outcome decides nothing now (the stored offsets do), but its replies come first */
    speed_batch_drop(ctx);
    speed_batch_forget(ctx);
    if (speed_redis_read_offsets(ctx) < 0)
        return -1;
    rd_kafka_topic_partition_list_t *l = assigned_list(ctx);
    if (l->cnt) {
        rd_kafka_pause_partitions(ctx->consumer, l);
        rd_kafka_error_t *e = rd_kafka_seek_partitions(ctx->consumer, l, 5000);
        if (e) {
            lam_warn("msg=\"seek failed\" error=\"%s\"", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            rd_kafka_topic_partition_list_destroy(l);
            return -1;
        }
        for (int i = 0; i < l->cnt; i++)
            if (l->elems[i].err)
                lam_warn("msg=\"seek failed\" partition=%d error=\"%s\"", l->elems[i].partition,
                         rd_kafka_err2str(l->elems[i].err));
        rd_kafka_resume_partitions(ctx->consumer, l);
    }
    for (int i = 0; i < l->cnt; i++)
        lam_info("msg=\"resumed from the stored offset\" partition=%d offset=%" PRId64, l->elems[i].partition,
                 ctx->parts[l->elems[i].partition].stored);
    rd_kafka_topic_partition_list_destroy(l);
    ctx->need_resync = 0;
    pthread_mutex_lock(&ctx->stats.lock);
    ctx->stats.resyncs++;
    pthread_mutex_unlock(&ctx->stats.lock);
    return 0;
}

void speed_kafka_pause(speed_ctx_t *ctx)
{
    rd_kafka_topic_partition_list_t *l = assigned_list(ctx);
    if (l->cnt)
        rd_kafka_pause_partitions(ctx->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
}

void speed_kafka_update_lag(speed_ctx_t *ctx)
{
    for (int p = 0; p < ctx->nparts; p++) {
        speed_part_t *sp = &ctx->parts[p];
        if (!sp->assigned) {
            sp->lag = -1;
            continue;
        }
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(ctx->consumer, ctx->cfg.common.kafka_topic, p, &lo, &hi) ||
            hi < 0) {
            sp->lag = -1;
            continue;
        }
        int64_t next = sp->stored == SPEED_NO_OFFSET ? (lo >= 0 ? lo : 0) : sp->stored;
        sp->lag = hi > next ? hi - next : 0;
    }
}

void speed_kafka_commit(speed_ctx_t *ctx)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(ctx->nparts ? ctx->nparts : 1);
    for (int p = 0; p < ctx->nparts; p++)
        if (ctx->parts[p].assigned && ctx->parts[p].stored != SPEED_NO_OFFSET)
            rd_kafka_topic_partition_list_add(l, ctx->cfg.common.kafka_topic, p)->offset = ctx->parts[p].stored;
    if (l->cnt)
        rd_kafka_commit(ctx->consumer, l, 1);
    rd_kafka_topic_partition_list_destroy(l);
}

void speed_kafka_note_sizes(speed_ctx_t *ctx, uint64_t bytes, uint64_t count)
{
    ctx->rec_bytes += bytes;
    ctx->rec_count += count;
    if (ctx->rec_count)
        atomic_store(&ctx->rec_bytes_avg, (long long)(ctx->rec_bytes / ctx->rec_count));
    if (ctx->rec_count > ((uint64_t)1 << 40)) { /* keep a recent average, never overflow */
        ctx->rec_bytes /= 2;
        ctx->rec_count /= 2;
    }
}

/* The assigned partitions whose cached high watermark is beyond what the application has consumed (a copy, or NULL). */
static rd_kafka_topic_partition_list_t *lagging_parts(speed_ctx_t *ctx)
{
    pthread_mutex_lock(&ctx->kick_lock);
    rd_kafka_topic_partition_list_t *all = ctx->kick_parts ? rd_kafka_topic_partition_list_copy(ctx->kick_parts) : NULL;
    pthread_mutex_unlock(&ctx->kick_lock);
    if (!all)
        return NULL;
    rd_kafka_topic_partition_list_t *lag = NULL;
    if (rd_kafka_position(ctx->consumer, all) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < all->cnt; i++) {
            int64_t lo, hi, pos = all->elems[i].offset;
            if (rd_kafka_get_watermark_offsets(ctx->consumer, all->elems[i].topic, all->elems[i].partition, &lo,
                                               &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
                hi <= 0 || (pos >= 0 && pos >= hi))
                continue;
            if (!lag)
                lag = rd_kafka_topic_partition_list_new(all->cnt);
            /* ListOffsets "latest" (timestamp -1): the cheapest request the partition's leader answers */
            rd_kafka_topic_partition_list_add(lag, all->elems[i].topic, all->elems[i].partition)->offset = -1;
        }
    }
    rd_kafka_topic_partition_list_destroy(all);
    return lag;
}

/*
 * librdkafka 2.0 stops fetching a partition while the consumer queue (which every partition's queue is forwarded
 * to) holds queued.max.messages.kbytes or queued.min.messages, and decides again only when its broker thread
 * wakes up: at a request's reply or op, else once a second. Nothing wakes it when the application drains the
 * queue, so a consumer slower than the fetcher got one prefetch-full per second (16 MB: ~100k records/s, README
 * "Prefetch"). Any request to the partition's leader wakes that broker thread: once the queue is below half its
 * capacity while records are waiting in Kafka, ask the leaders for their latest offsets (answer unused).
 */
static void *kicker_main(void *arg)
{
    speed_ctx_t *ctx = arg;
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(ctx->consumer);
    int64_t last_kick = 0;
    int refilled = 1; /* the queue was above the low mark since the last kick */
    long nap_ms = 2;  /* 2 ms while catching up, 20 ms when nothing lags (idle cost) */
    while (!atomic_load(&ctx->kick_stop)) {
        nanosleep(&(struct timespec){0, nap_ms * 1000 * 1000}, NULL);
        nap_ms = 2;
        int64_t avg = atomic_load(&ctx->rec_bytes_avg);
        if (avg <= 0)
            continue; /* nothing consumed yet: the fetcher is not held back by the queue */
        int64_t cap = ctx->prefetch_bytes / avg;
        if (ctx->prefetch_msgs > 0 && cap > ctx->prefetch_msgs)
            cap = ctx->prefetch_msgs;
        int64_t qlen = rd_kafka_queue_length(q);
        if (qlen >= cap / 2) {
            refilled = 1;
            continue;
        }
        int64_t now = lam_now_mono_ms();
        if (!refilled && now - last_kick < 100)
            continue;
        rd_kafka_topic_partition_list_t *lag = lagging_parts(ctx);
        if (!lag) {
            nap_ms = 20;
            continue;
        }
        rd_kafka_offsets_for_times(ctx->consumer, lag, 1000);
        rd_kafka_topic_partition_list_destroy(lag);
        last_kick = now;
        refilled = 0;
        pthread_mutex_lock(&ctx->stats.lock);
        ctx->stats.fetch_kicks++;
        pthread_mutex_unlock(&ctx->stats.lock);
    }
    rd_kafka_queue_destroy(q);
    return NULL;
}

void speed_kafka_kicker_start(speed_ctx_t *ctx)
{
    atomic_store(&ctx->kick_stop, 0);
    if (pthread_create(&ctx->kick_thread, NULL, kicker_main, ctx) == 0)
        ctx->kick_running = 1;
    else
        lam_warn("msg=\"cannot start the fetch kicker; catch-up will be slower\"");
}

void speed_kafka_destroy(speed_ctx_t *ctx)
{
    if (!ctx->consumer)
        return;
    if (ctx->kick_running) {
        atomic_store(&ctx->kick_stop, 1);
        pthread_join(ctx->kick_thread, NULL);
        ctx->kick_running = 0;
    }
    rd_kafka_consumer_close(ctx->consumer);
    rd_kafka_destroy(ctx->consumer);
    ctx->consumer = NULL;
    if (ctx->kick_parts)
        rd_kafka_topic_partition_list_destroy(ctx->kick_parts);
    ctx->kick_parts = NULL;
}
