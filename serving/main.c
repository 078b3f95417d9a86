/* main.c - serving: configuration, start-up and shutdown. */
#include <stddef.h>

#include "lam_log.h"
#include "lam_pg.h"
#include "lam_redis.h"
#include "lam_service.h"
#include "serving.h"

static const lam_config_entry_t serving_config_table[] = {
    LAM_CFG_ENTRY_REDIS(serving_config_t, common),
    LAM_CFG_ENTRY_PG(serving_config_t, common),
    LAM_CFG_ENTRY_VIEWS(serving_config_t, common),
    LAM_CFG_ENTRY_LOG(serving_config_t, common),
    {"LAM_SERVING_ADDR", LAM_CFG_ADDR, "127.0.0.1:8080", offsetof(serving_config_t, addr),
     "serving listen address (API and dashboard)"},
    {"LAM_ADMIN_TOKEN", LAM_CFG_STR, NULL, offsetof(serving_config_t, admin_token),
     "Bearer token for batch control; unset = loopback clients only"},
    {"LAM_CORS_ORIGINS", LAM_CFG_STR, NULL, offsetof(serving_config_t, cors_origins),
     "comma-separated origins allowed by CORS; unset = CORS off"},
    {"LAM_DASHBOARDS_DIR", LAM_CFG_STR, "dashboards", offsetof(serving_config_t, dashboards_dir),
     "dashboard files and static assets"},
    {"LAM_SERVING_THREADS", LAM_CFG_INT, "2", offsetof(serving_config_t, threads), "HTTP threads", 1, 64},
    {NULL}};

int main(int argc, char **argv)
{
    serving_ctx_t ctx = {0};
    lam_config_init_or_exit("serving", serving_config_table, &ctx.cfg, argc, argv);
    lam_service_signals();

    char err[512];
    lam_http_opts_t opts = {.host = ctx.cfg.addr.host, .port = ctx.cfg.addr.port, .max_body = 64 * 1024,
                            .conn_limit = 1024, .timeout_s = 30, .threads = (unsigned)ctx.cfg.threads,
                            .handler = serving_http_handle, .opaque = &ctx};
    ctx.http = lam_http_start(&opts, err, sizeof(err));
    if (!ctx.http) {
        lam_error("msg=\"cannot start http\" error=\"%s\"", err);
        return 1;
    }
    lam_info("msg=started addr=%s:%d", ctx.cfg.addr.host, ctx.cfg.addr.port);

    PGconn *pg = NULL;
    redisContext *redis = NULL;
    while (!lam_service_stopping()) {
        if (pg && lam_pg_exec(pg, "SELECT 1", 0, NULL, err, sizeof(err)) < 0) {
            lam_warn("msg=\"lost PostgreSQL\" error=\"%s\"", err);
            PQfinish(pg);
            pg = NULL;
        }
        if (!pg)
            pg = lam_pg_connect_wait(ctx.cfg.common.pg_url);
        atomic_store(&ctx.pg_ok, pg != NULL);
        if (redis && lam_redis_ping(redis, err, sizeof(err)) < 0) {
            lam_warn("msg=\"lost Redis\" error=\"%s\"", err);
            redisFree(redis);
            redis = NULL;
        }
        if (!redis)
            redis = lam_redis_connect_wait(ctx.cfg.common.redis_url, 2000);
        atomic_store(&ctx.redis_ok, redis != NULL);
        lam_service_sleep_ms(1000);
    }

    lam_info("msg=stopping");
    lam_http_quiesce(ctx.http);
    lam_http_stop(ctx.http);
    PQfinish(pg);
    if (redis)
        redisFree(redis);
    lam_config_free(serving_config_table, &ctx.cfg);
    lam_info("msg=stopped");
    return 0;
}
