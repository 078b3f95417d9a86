/* ingest_producer.c - where ingest writes to Kafka: one idempotent acks=all producer for all requests. */
#include <stdio.h>

#include "ingest.h"
#include "lam_kafka.h"
#include "lam_log.h"
#include "lam_service.h"

int ingest_producer_init(ingest_ctx_t *ctx, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = lam_kafka_conf_new(ctx->cfg.common.kafka_brokers, errstr, errstr_size);
    if (!conf)
        return -1;
    ctx->producer = lam_kafka_producer_new(conf, errstr, errstr_size);
    return ctx->producer ? 0 : -1;
}

int ingest_producer_healthy(ingest_ctx_t *ctx)
{
    int64_t now = lam_now_mono_ms();
    if (now - atomic_load(&ctx->kafka_checked) < 1000)
        return atomic_load(&ctx->kafka_ok);
    atomic_store(&ctx->kafka_checked, now);
    char err[256];
    int ok = lam_kafka_ping(ctx->producer, 500, err, sizeof(err)) == 0;
    if (ok && !atomic_load(&ctx->kafka_ok)) {
        /* First contact (or recovery): make sure the topic exists. */
        if (lam_kafka_ensure_topic(ctx->producer, ctx->cfg.common.kafka_topic, (int)ctx->cfg.common.kafka_partitions,
                                   5000, err, sizeof(err)) < 0) {
            lam_warn("msg=\"cannot create topic\" error=\"%s\"", err);
            ok = 0;
        } else {
            lam_info("msg=\"kafka reachable\" brokers=%s", ctx->cfg.common.kafka_brokers);
        }
    } else if (!ok && atomic_load(&ctx->kafka_ok)) {
        lam_warn("msg=\"cannot reach Kafka\" brokers=%s error=\"%s\"", ctx->cfg.common.kafka_brokers, err);
    }
    atomic_store(&ctx->kafka_ok, ok);
    return ok;
}

void ingest_producer_destroy(ingest_ctx_t *ctx)
{
    if (!ctx->producer)
        return;
    rd_kafka_flush(ctx->producer, 10000);
    rd_kafka_destroy(ctx->producer);
    ctx->producer = NULL;
}
