/* main.c - serving: configuration, start-up, the LISTEN/health loop and shutdown. */
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lam_log.h"
#include "lam_mem.h"
#include "lam_pg.h"
#include "lam_redis.h"
#include "lam_service.h"
#include "lam_store.h"
#include "serving.h"

static const lam_config_entry_t serving_config_table[] = {
    LAM_CFG_ENTRY_KAFKA(serving_config_t, common),
    LAM_CFG_ENTRY_REDIS(serving_config_t, common),
    LAM_CFG_ENTRY_PG(serving_config_t, common),
    LAM_CFG_ENTRY_VIEWS(serving_config_t, common),
    LAM_CFG_ENTRY_LOG(serving_config_t, common),
    {"LAM_SERVING_ADDR", LAM_CFG_ADDR, "127.0.0.1:8080", offsetof(serving_config_t, addr),
     "serving listen address (API and dashboard)"},
    {"LAM_ADMIN_TOKEN", LAM_CFG_STR, NULL, offsetof(serving_config_t, admin_token),
     "Bearer token for batch control; unset = loopback clients only"},
    {"LAM_CORS_ORIGINS", LAM_CFG_STR, NULL, offsetof(serving_config_t, cors_origins),
     "comma-separated origins allowed by CORS (`*` = any); unset = CORS off"},
    {"LAM_DASHBOARDS_DIR", LAM_CFG_STR, "dashboards", offsetof(serving_config_t, dashboards_dir),
     "dashboard files and static assets"},
    {"LAM_SERVING_THREADS", LAM_CFG_INT, "2", offsetof(serving_config_t, threads), "HTTP threads", 1, 64},
    {"LAM_MAX_BUCKETS", LAM_CFG_INT, "10000", offsetof(serving_config_t, max_buckets),
     "most buckets one view query may return", 1, 10000000},
    {"LAM_SERVING_CACHE_MB", LAM_CFG_INT, "32", offsetof(serving_config_t, cache_bytes),
     "memory for cached batch view rows, MiB (0 = no cache)", 0, 65536},
    {"LAM_SERVING_RESULT_MS", LAM_CFG_MS, "50ms", offsetof(serving_config_t, result_ms),
     "reuse a merged answer this long (adds at most 2x this much lag; 0 = off)", 0, 60000},
    {"LAM_SPEED_GROUP", LAM_CFG_STR, "speed", offsetof(serving_config_t, speed_group),
     "speed_layer consumer group (for its offsets and stats in Redis)"},
    {"LAM_ARCHIVE_GROUP", LAM_CFG_STR, "archive", offsetof(serving_config_t, archive_group),
     "batch_layer archiver consumer group (for archive lag)"},
    {NULL}};

static void parse_cors(serving_ctx_t *ctx)
{
    const char *s = ctx->cfg.cors_origins;
    if (!s)
        return;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        while (n && (*s == ' ')) {
            s++;
            n--;
        }
        while (n && s[n - 1] == ' ')
            n--;
        if (n) {
            ctx->cors = lam_realloc(ctx->cors, (ctx->ncors + 1) * sizeof(char *));
            ctx->cors[ctx->ncors++] = lam_strndup(s, n);
        }
        if (!e)
            break;
        s = e + 1;
    }
}

/* The main thread's own PostgreSQL connection: health, LISTEN lam_batch_published. */
static PGconn *listen_connect(serving_ctx_t *ctx)
{
    char err[768];
    PGconn *pg = lam_pg_connect(ctx->cfg.common.pg_url, err, sizeof(err));
    if (!pg) {
        lam_warn("msg=\"%s\"", err);
        return NULL;
    }
    if (lam_store_pg_migrate(pg, err, sizeof(err)) < 0)
        lam_warn("msg=\"cannot create tables\" error=\"%s\"", err);
    if (lam_pg_exec(pg, "LISTEN " LAM_STORE_NOTIFY_PUBLISHED, 0, NULL, err, sizeof(err)) < 0) {
        lam_warn("msg=\"cannot LISTEN\" error=\"%s\"", err);
        PQfinish(pg);
        return NULL;
    }
    if (serving_pg_refresh_published(ctx, pg, err, sizeof(err)) < 0)
        lam_warn("msg=\"cannot read the published run\" error=\"%s\"", err);
    lam_info("msg=\"postgresql reachable, listening for publishes\" run=%lld",
             (long long)atomic_load(&ctx->published_run));
    return pg;
}

/* Drain notifications; on a publish, re-read the published run (cheap, once per publish). */
static int listen_poll(serving_ctx_t *ctx, PGconn *pg)
{
    char err[512];
    if (!PQconsumeInput(pg))
        return -1;
    int got = 0;
    PGnotify *n;
    while ((n = PQnotifies(pg))) {
        got = 1;
        PQfreemem(n);
    }
    if (got && serving_pg_refresh_published(ctx, pg, err, sizeof(err)) < 0) {
        lam_warn("msg=\"cannot read the published run\" error=\"%s\"", err);
        return -1;
    }
    if (got)
        lam_info("msg=\"batch run published\" run=%lld", (long long)atomic_load(&ctx->published_run));
    return 0;
}

int main(int argc, char **argv)
{
    serving_ctx_t ctx = {0};
    lam_config_init_or_exit("serving", serving_config_table, &ctx.cfg, argc, argv);
    lam_service_signals();

    char err[768];
    ctx.views = lam_views_load(ctx.cfg.common.views_path, err, sizeof(err));
    if (!ctx.views) {
        fprintf(stderr, "serving: %s\n", err);
        lam_config_free(serving_config_table, &ctx.cfg);
        return 2;
    }
    atomic_store(&ctx.published_run, -1);
    atomic_store(&ctx.published_cut_at, INT64_MIN);
    pthread_mutex_init(&ctx.conns_lock, NULL);
    pthread_mutex_init(&ctx.status_lock, NULL);
    ctx.cache = serving_cache_new((size_t)ctx.cfg.cache_bytes * 1024 * 1024);
    ctx.results = ctx.cfg.result_ms > 0 ? serving_results_new(128) : NULL;
    parse_cors(&ctx);
    ctx.dash_real = realpath(ctx.cfg.dashboards_dir, NULL);

    lam_http_opts_t opts = {.host = ctx.cfg.addr.host, .port = ctx.cfg.addr.port, .max_body = 64 * 1024,
                            .conn_limit = 1024, .timeout_s = 30, .threads = (unsigned)ctx.cfg.threads,
                            .handler = serving_http_handle, .opaque = &ctx};
    ctx.http = lam_http_start(&opts, err, sizeof(err));
    if (!ctx.http) {
        lam_error("msg=\"cannot start http\" error=\"%s\"", err);
        return 1;
    }
    lam_info("msg=started addr=%s:%d views=%zu", ctx.cfg.addr.host, ctx.cfg.addr.port,
             lam_views_count(ctx.views));

    PGconn *pg = NULL;
    redisContext *redis = NULL;
    int64_t next_check = 0, next_pg_try = 0, next_redis_try = 0;
    while (!lam_service_stopping()) {
        int64_t now = lam_now_mono_ms();
        if (pg && listen_poll(&ctx, pg) < 0) {
            lam_warn("msg=\"lost PostgreSQL\"");
            PQfinish(pg);
            pg = NULL;
        }
        if (now >= next_check) {
            next_check = now + 1000;
            if (pg && lam_pg_exec(pg, "SELECT 1", 0, NULL, err, sizeof(err)) < 0) {
                lam_warn("msg=\"lost PostgreSQL\" error=\"%s\"", err);
                PQfinish(pg);
                pg = NULL;
            }
            if (!pg && now >= next_pg_try) {
                pg = listen_connect(&ctx);
                next_pg_try = now + 2000;
            }
            atomic_store(&ctx.pg_ok, pg != NULL);
            if (redis && lam_redis_ping(redis, err, sizeof(err)) < 0) {
                lam_warn("msg=\"lost Redis\" error=\"%s\"", err);
                redisFree(redis);
                redis = NULL;
            }
            if (!redis && now >= next_redis_try) {
                redis = lam_redis_connect(ctx.cfg.common.redis_url, 1000, err, sizeof(err));
                if (!redis)
                    lam_warn("msg=\"%s\"", err);
                next_redis_try = now + 2000;
            }
            atomic_store(&ctx.redis_ok, redis != NULL);
            serving_status_tick(&ctx);
        }
        lam_service_sleep_ms(100);
    }

    lam_info("msg=stopping");
    lam_http_quiesce(ctx.http);
    lam_http_stop(ctx.http);
    PQfinish(pg);
    if (redis)
        redisFree(redis);
    if (ctx.kafka)
        rd_kafka_destroy(ctx.kafka);
    serving_conns_free(&ctx);
    serving_cache_free(ctx.cache);
    serving_results_free(ctx.results);
    lam_views_free(ctx.views);
    for (size_t i = 0; i < ctx.ncors; i++)
        lam_free(ctx.cors[i]);
    lam_free(ctx.cors);
    free(ctx.dash_real);
    lam_buf_free(&ctx.status_kafka);
    lam_config_free(serving_config_table, &ctx.cfg);
    lam_info("msg=stopped");
    return 0;
}
