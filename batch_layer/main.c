/* main.c - batch_layer: configuration, start-up and shutdown; `batch_layer CMD` runs an operator command. */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "batch.h"
#include "lam_log.h"
#include "lam_pg.h"
#include "lam_service.h"

static const lam_config_entry_t batch_config_table[] = {
    LAM_CFG_ENTRY_KAFKA(batch_config_t, common),
    LAM_CFG_ENTRY_REDIS(batch_config_t, common),
    LAM_CFG_ENTRY_PG(batch_config_t, common),
    LAM_CFG_ENTRY_VIEWS(batch_config_t, common),
    LAM_CFG_ENTRY_LOG(batch_config_t, common),
    {"LAM_BATCH_ADDR", LAM_CFG_ADDR, "127.0.0.1:8083", offsetof(batch_config_t, addr),
     "batch_layer /healthz and /metrics listen address"},
    {"LAM_DATA_DIR", LAM_CFG_STR, ".lam/data", offsetof(batch_config_t, data_dir), "master dataset directory"},
    {"LAM_BATCH_SCHEDULE", LAM_CFG_STR, "daily@02:00", offsetof(batch_config_t, schedule),
     "scheduled runs: daily@HH:MM (UTC), an interval (every 30s, every 10m, every 6h) or off"},
    {"LAM_ARCHIVE_GROUP", LAM_CFG_STR, "archive", offsetof(batch_config_t, archive_group),
     "consumer group of the archiver (serving reads its lag)"},
    {"LAM_BATCH_SEGMENT_BYTES", LAM_CFG_SIZE, "64MiB", offsetof(batch_config_t, segment_bytes),
     "master dataset: seal a segment (read-only) once it reaches this size", 4096, (int64_t)1 << 40},
    {"LAM_BATCH_FLUSH_MS", LAM_CFG_MS, "200ms", offsetof(batch_config_t, flush_ms),
     "archiver: longest wait before buffered records are written and fsync'd", 1, 60000},
    {"LAM_BATCH_THREADS", LAM_CFG_INT, "2", offsetof(batch_config_t, threads), "recompute threads", 1, 64},
    {"LAM_BATCH_DEDUP_IDS", LAM_CFG_INT, "2000000", offsetof(batch_config_t, dedup_ids),
     "recompute memory bound: ids held at once per thread; a larger partition is read in several passes", 1,
     126000000},
    {"LAM_BATCH_CUT_TIMEOUT", LAM_CFG_MS, "60s", offsetof(batch_config_t, cut_timeout_ms),
     "a run fails when the archiver has not reached its markers after this long", 100, 86400000},
    {"LAM_BATCH_CODEC", LAM_CFG_STR, "lz4", offsetof(batch_config_t, codec),
     "archiver block compression: lz4 (faster recomputes) or zstd (~40 % less disk); both are always readable"},
    {NULL}};

static int is_command(const char *s)
{
    return !strcmp(s, "run") || !strcmp(s, "status") || !strcmp(s, "verify") || !strcmp(s, "dump") ||
           !strcmp(s, "recompute");
}

int main(int argc, char **argv)
{
    batch_ctx_t ctx = {0};
    int cmd = argc > 1 && is_command(argv[1]);
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
        printf("usage: batch_layer                 the service (archiver, scheduler, runs, /healthz, /metrics)\n"
               "       batch_layer run [--wait]    request a run (and follow its progress)\n"
               "       batch_layer status          master dataset summary and recent runs\n"
               "       batch_layer verify          check every checksum of the master dataset and its manifest\n"
               "       batch_layer dump [--partition P]  print the master records\n"
               "       batch_layer recompute [--run K]  measure a recompute up to run K's cut (read-only)\n\n");
    lam_config_init_or_exit("batch_layer", batch_config_table, &ctx.cfg, cmd ? 1 : argc, argv);
    lam_service_signals();

    batch_schedule_t sched;
    char err[512];
    int bad = batch_schedule_parse(ctx.cfg.schedule, &sched, err, sizeof(err)) < 0;
    if (!bad && strcmp(ctx.cfg.codec, "lz4") && strcmp(ctx.cfg.codec, "zstd")) {
        snprintf(err, sizeof(err), "LAM_BATCH_CODEC: expected lz4 or zstd: \"%s\"", ctx.cfg.codec);
        bad = 1;
    }
    if (bad) {
        fprintf(stderr, "batch_layer: %s\n", err);
        lam_config_free(batch_config_table, &ctx.cfg);
        return 2;
    }
    if (cmd) {
        int rc = batch_cli_main(&ctx, argc - 1, argv + 1);
        lam_config_free(batch_config_table, &ctx.cfg);
        return rc;
    }
    if (argc > 1) {
        fprintf(stderr, "batch_layer: unknown command %s (see --help)\n", argv[1]);
        lam_config_free(batch_config_table, &ctx.cfg);
        return 2;
    }

    ctx.views = lam_views_load(ctx.cfg.common.views_path, err, sizeof(err));
    if (!ctx.views) {
        fprintf(stderr, "batch_layer: LAM_VIEWS: %s\n", err);
        lam_config_free(batch_config_table, &ctx.cfg);
        return 2;
    }
    if (mkdir(ctx.cfg.data_dir, 0755) < 0 && errno != EEXIST) {
        lam_error("msg=\"cannot create data dir\" dir=%s error=\"%s\"", ctx.cfg.data_dir, strerror(errno));
        lam_views_free(ctx.views);
        lam_config_free(batch_config_table, &ctx.cfg);
        return 1;
    }
    ctx.archive = batch_archive_start(&ctx, err, sizeof(err));
    if (!ctx.archive) {
        lam_error("msg=\"cannot start the archiver\" error=\"%s\"", err);
        lam_views_free(ctx.views);
        lam_config_free(batch_config_table, &ctx.cfg);
        return 1;
    }
    lam_http_opts_t opts = {.host = ctx.cfg.addr.host, .port = ctx.cfg.addr.port, .max_body = 4096,
                            .conn_limit = 64, .timeout_s = 10, .handler = batch_http_handle, .opaque = &ctx};
    ctx.http = lam_http_start(&opts, err, sizeof(err));
    if (!ctx.http) {
        lam_error("msg=\"cannot start http\" error=\"%s\"", err);
        batch_archive_stop(ctx.archive);
        lam_views_free(ctx.views);
        lam_config_free(batch_config_table, &ctx.cfg);
        return 1;
    }
    lam_info("msg=started addr=%s:%d data_dir=%s schedule=\"%s\"", ctx.cfg.addr.host, ctx.cfg.addr.port,
             ctx.cfg.data_dir, ctx.cfg.schedule);

    batch_run_loop(&ctx, &sched);

    lam_info("msg=stopping");
    lam_http_stop(ctx.http);
    batch_archive_stop(ctx.archive);
    if (ctx.producer) {
        rd_kafka_flush(ctx.producer, 5000);
        rd_kafka_destroy(ctx.producer);
    }
    PQfinish(ctx.pg);
    lam_views_free(ctx.views);
    lam_config_free(batch_config_table, &ctx.cfg);
    lam_info("msg=stopped");
    return 0;
}
