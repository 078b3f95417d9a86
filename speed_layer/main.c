/* main.c - speed_layer: configuration, start-up, the consume loop and shutdown. */
#include <stddef.h>

#include "lam_kafka.h"
#include "lam_log.h"
#include "lam_redis.h"
#include "lam_service.h"
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
    {NULL}};

int main(int argc, char **argv)
{
    speed_ctx_t ctx = {0};
    lam_config_init_or_exit("speed_layer", speed_config_table, &ctx.cfg, argc, argv);
    lam_service_signals();

    char err[512];
    lam_http_opts_t opts = {.host = ctx.cfg.addr.host, .port = ctx.cfg.addr.port, .max_body = 4096,
                            .conn_limit = 64, .timeout_s = 10, .handler = speed_http_handle, .opaque = &ctx};
    ctx.http = lam_http_start(&opts, err, sizeof(err));
    if (!ctx.http) {
        lam_error("msg=\"cannot start http\" error=\"%s\"", err);
        return 1;
    }
    if (speed_kafka_init(&ctx, err, sizeof(err)) < 0) {
        lam_error("msg=\"cannot create kafka consumer\" error=\"%s\"", err);
        lam_http_stop(ctx.http);
        return 1;
    }
    lam_info("msg=started addr=%s:%d group=%s", ctx.cfg.addr.host, ctx.cfg.addr.port, ctx.cfg.group);
    speed_redis_connect(&ctx);

    while (!lam_service_stopping()) {
        if (ctx.redis && lam_redis_ping(ctx.redis, err, sizeof(err)) < 0) {
            lam_warn("msg=\"lost Redis\" error=\"%s\"", err);
            redisFree(ctx.redis);
            ctx.redis = NULL;
            atomic_store(&ctx.redis_ok, 0);
        }
        if (!ctx.redis)
            speed_redis_connect(&ctx);
        int ok = lam_kafka_ping(ctx.consumer, 1000, err, sizeof(err)) == 0;
        if (ok != atomic_load(&ctx.kafka_ok)) {
            if (ok)
                lam_info("msg=\"kafka reachable\" brokers=%s", ctx.cfg.common.kafka_brokers);
            else
                lam_warn("msg=\"cannot reach Kafka\" brokers=%s error=\"%s\"", ctx.cfg.common.kafka_brokers, err);
            atomic_store(&ctx.kafka_ok, ok);
        }
        lam_service_sleep_ms(1000);
    }

    lam_info("msg=stopping");
    lam_http_stop(ctx.http);
    speed_kafka_destroy(&ctx);
    if (ctx.redis)
        redisFree(ctx.redis);
    lam_config_free(speed_config_table, &ctx.cfg);
    lam_info("msg=stopped");
    return 0;
}
