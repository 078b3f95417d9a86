/* speed_kafka.c - where the speed layer reads Kafka. */
#include "lam_kafka.h"
#include "speed.h"

int speed_kafka_init(speed_ctx_t *ctx, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = lam_kafka_conf_new(ctx->cfg.common.kafka_brokers, errstr, errstr_size);
    if (!conf)
        return -1;
    ctx->consumer = lam_kafka_consumer_new(conf, ctx->cfg.group, errstr, errstr_size);
    return ctx->consumer ? 0 : -1;
}

void speed_kafka_destroy(speed_ctx_t *ctx)
{
    if (!ctx->consumer)
        return;
    rd_kafka_consumer_close(ctx->consumer);
    rd_kafka_destroy(ctx->consumer);
    ctx->consumer = NULL;
}
