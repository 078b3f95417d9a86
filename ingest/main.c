/* main.c - ingest: configuration, start-up and graceful shutdown. */
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ingest.h"
#include "lam_log.h"
#include "lam_service.h"

static const lam_config_entry_t ingest_config_table[] = {
    LAM_CFG_ENTRY_KAFKA(ingest_config_t, common),
    LAM_CFG_ENTRY_LOG(ingest_config_t, common),
    {"LAM_INGEST_ADDR", LAM_CFG_ADDR, "127.0.0.1:8081", offsetof(ingest_config_t, addr), "ingest listen address"},
    {"LAM_INGEST_MAX_BODY", LAM_CFG_SIZE, "16MiB", offsetof(ingest_config_t, max_body),
     "largest request body (413 beyond)", 1024, 1LL << 30},
    {"LAM_INGEST_KEYS", LAM_CFG_STR, NULL, offsetof(ingest_config_t, keys),
     "comma-separated API keys (Bearer); unset = no auth"},
    {"LAM_INGEST_TIMEOUT_MS", LAM_CFG_MS, "10s", offsetof(ingest_config_t, timeout_ms),
     "how long a request waits for Kafka before 503", 100, 600000},
    {"LAM_INGEST_MAX_CONNECTIONS", LAM_CFG_INT, "1024", offsetof(ingest_config_t, conn_limit),
     "concurrent HTTP connections", 1, 100000},
    {"LAM_INGEST_CONN_TIMEOUT", LAM_CFG_MS, "30s", offsetof(ingest_config_t, conn_timeout_ms),
     "idle or slow client timeout", 1000, 3600000},
    {"LAM_INGEST_THREADS", LAM_CFG_INT, "2", offsetof(ingest_config_t, threads), "HTTP threads", 1, 64},
    {"LAM_MAX_FUTURE_S", LAM_CFG_SEC, "86400", offsetof(ingest_config_t, max_future_ms),
     "reject events further in the future than this many seconds", 0, 365LL * 86400000},
    {"LAM_INGEST_MAX_EVENTS", LAM_CFG_INT, "100000", offsetof(ingest_config_t, max_events),
     "most events in one request (413 too_many_events beyond)", 1, 10000000},
    {"LAM_INGEST_QUEUE_BYTES", LAM_CFG_SIZE, "64MiB", offsetof(ingest_config_t, queue_bytes),
     "producer queue bound in bytes; a full queue answers 503", 1LL << 20, 1LL << 40},
    {"LAM_INGEST_QUEUE_EVENTS", LAM_CFG_INT, "500000", offsetof(ingest_config_t, queue_events),
     "producer queue bound in events; a full queue answers 503", 1000, 10000000},
    {"LAM_INGEST_PRODUCERS", LAM_CFG_INT, "2", offsetof(ingest_config_t, producers),
     "Kafka producers (broker connections), each owning a share of the partitions", 1, INGEST_PRODUCERS_MAX},
    {NULL}};

#define INGEST_DRAIN_GRACE_MS 5000
/* Per-connection buffer: libmicrohttpd clears it between keep-alive requests, so 16 KiB instead of
 * 64 KiB is a quarter of that cost per request; request headers over about 16 KiB get 431. */
#define INGEST_CONN_MEMORY ((size_t)16 * 1024)

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* SIGTERM: no new connections, let in-flight requests get their delivery reports and replies. */
static void drain(ingest_ctx_t *ctx)
{
    atomic_store(&ctx->stopping, 1);
    lam_http_quiesce(ctx->http);
    int64_t t0 = lam_now_mono_ms(), last_log = t0;
    int64_t hard = t0 + ctx->cfg.timeout_ms + 30000;
    for (;;) {
        int64_t now = lam_now_mono_ms();
        int inflight = atomic_load(&ctx->inflight);
        unsigned conns = lam_http_connections(ctx->http);
        /* Connections still open may be uploading a request (lam_http does not tell us), or be idle
         * keep-alive clients that never come back: wait for them up to a grace period. Every reply
         * from now on says Connection: close, so active clients go away after their next answer. */
        if (inflight == 0 && (conns == 0 || now - t0 >= INGEST_DRAIN_GRACE_MS))
            break;
        if (now >= hard) {
            lam_error("msg=\"requests still waiting for Kafka at the deadline\" inflight=%d", inflight);
            exit(1);
        }
        if (now - last_log >= 5000) {
            lam_info("msg=\"draining\" inflight=%d connections=%u", inflight, conns);
            last_log = now;
        }
        sleep_ms(20);
    }
    sleep_ms(100); /* replies handed to the HTTP threads get written out */
}

/* Two malloc arenas instead of glibc's one per thread (HTTP threads, delivery reports, librdkafka's
 * threads): a request's buffers and librdkafka's messages are allocated on an HTTP thread and
 * freed on the delivery-report thread, and each arena grew towards the peak of the requests in
 * flight. 1M events as 100-event requests over 128 connections (bodies freed before the wait for
 * Kafka), 3 alternated rounds: peak RSS 26 / 26 / 26 MB with glibc's arenas, 25 / 25 / 26 with 2,
 * 23 / 24 / 23 with 1 - but one arena cost ingest 2.32-2.76 instead of 2.28-2.41 ms of CPU per 1k
 * events (lock contention between the HTTP, delivery-report and broker threads), two 2.32-2.55.
 * MALLOC_ARENA_MAX or GLIBC_TUNABLES (glibc.malloc.arena_max) in the environment win. */
#define INGEST_MALLOC_ARENAS 2

static void limit_arenas(void)
{
    const char *t = getenv("GLIBC_TUNABLES");
    if (getenv("MALLOC_ARENA_MAX") || (t && strstr(t, "glibc.malloc.arena_max")))
        return;
    mallopt(M_ARENA_MAX, INGEST_MALLOC_ARENAS);
}

int main(int argc, char **argv)
{
    limit_arenas(); /* before any thread starts */
    ingest_ctx_t ctx = {0};
    lam_config_init_or_exit("ingest", ingest_config_table, &ctx.cfg, argc, argv);
    lam_service_signals();

    ingest_http_keys_init(&ctx);
    if (ctx.cfg.keys && !ctx.nkeys) {
        fprintf(stderr, "ingest: LAM_INGEST_KEYS: no key in the list\n");
        return 2;
    }

    char err[512];
    if (ingest_producer_init(&ctx, err, sizeof(err)) < 0 || ingest_producer_start(&ctx, err, sizeof(err)) < 0) {
        lam_error("msg=\"cannot create kafka producer\" error=\"%s\"", err);
        ingest_producer_destroy(&ctx);
        return 1;
    }
    ingest_producer_probe(&ctx); /* answer /healthz and POSTs truthfully from the first request */
    lam_http_opts_t opts = {
        .host = ctx.cfg.addr.host,
        .port = ctx.cfg.addr.port,
        .max_body = (size_t)ctx.cfg.max_body,
        .conn_limit = (unsigned)ctx.cfg.conn_limit,
        .timeout_s = (unsigned)((ctx.cfg.conn_timeout_ms + 999) / 1000),
        .threads = (unsigned)ctx.cfg.threads,
        .conn_memory = INGEST_CONN_MEMORY,
        .use_poll = 1, /* every POST is suspended until its delivery reports: see lam_http.h */
        .handler = ingest_http_handle,
        .opaque = &ctx,
    };
    ctx.http = lam_http_start(&opts, err, sizeof(err));
    if (!ctx.http) {
        lam_error("msg=\"cannot start http\" error=\"%s\"", err);
        ingest_producer_destroy(&ctx);
        return 1;
    }
    lam_info("msg=started addr=%s:%d kafka=%s topic=%s auth=%s", ctx.cfg.addr.host, ctx.cfg.addr.port,
             ctx.cfg.common.kafka_brokers, ctx.cfg.common.kafka_topic, ctx.nkeys ? "bearer" : "none");

    while (!lam_service_stopping()) {
        lam_service_sleep_ms(1000);
        if (!lam_service_stopping())
            ingest_producer_probe(&ctx);
    }

    lam_info("msg=\"stopping: draining requests\"");
    drain(&ctx);
    lam_http_stop(ctx.http);
    ingest_producer_destroy(&ctx);
    ingest_batch_pool_free();
    lam_info("msg=stopped");
    ingest_http_keys_free(&ctx);
    lam_config_free(ingest_config_table, &ctx.cfg);
    return 0;
}
