/* speed.h - the speed layer: Kafka -> real-time views in Redis, exactly once, by epoch. */
#ifndef SPEED_H
#define SPEED_H

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

#include "lam_config.h"
#include "lam_http.h"

typedef struct speed_config {
    lam_common_config_t common;
    lam_addr_t addr;
    char *group;
    int64_t dedup_window_ms;
} speed_config_t;

typedef struct speed_ctx {
    speed_config_t cfg;
    rd_kafka_t *consumer;
    redisContext *redis;
    lam_http_server_t *http;
    atomic_int kafka_ok;
    atomic_int redis_ok;
} speed_ctx_t;

/** Connect to Redis, retrying with backoff until it answers or a stop is requested. */
int speed_redis_connect(speed_ctx_t *ctx);
int speed_kafka_init(speed_ctx_t *ctx, char *errstr, size_t errstr_size);
void speed_kafka_destroy(speed_ctx_t *ctx);
void speed_http_handle(lam_http_req_t *req, void *opaque);

#endif
