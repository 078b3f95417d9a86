/* main.c - batch_layer: configuration, start-up and shutdown. */
#include <errno.h>
#include <stddef.h>
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
     "nightly run time (daily@HH:MM UTC) or an interval (every 6h)"},
    {NULL}};

int main(int argc, char **argv)
{
    batch_ctx_t ctx = {0};
    lam_config_init_or_exit("batch_layer", batch_config_table, &ctx.cfg, argc, argv);
    lam_service_signals();

    if (mkdir(ctx.cfg.data_dir, 0755) < 0 && errno != EEXIST) {
        lam_error("msg=\"cannot create data dir\" dir=%s error=\"%s\"", ctx.cfg.data_dir, strerror(errno));
        return 1;
    }
    char err[512];
    lam_http_opts_t opts = {.host = ctx.cfg.addr.host, .port = ctx.cfg.addr.port, .max_body = 4096,
                            .conn_limit = 64, .timeout_s = 10, .handler = batch_http_handle, .opaque = &ctx};
    ctx.http = lam_http_start(&opts, err, sizeof(err));
    if (!ctx.http) {
        lam_error("msg=\"cannot start http\" error=\"%s\"", err);
        return 1;
    }
    lam_info("msg=started addr=%s:%d data_dir=%s", ctx.cfg.addr.host, ctx.cfg.addr.port, ctx.cfg.data_dir);

    while (!lam_service_stopping()) {
        if (ctx.pg && PQstatus(ctx.pg) != CONNECTION_OK) {
            lam_warn("msg=\"lost PostgreSQL\"");
            PQfinish(ctx.pg);
            ctx.pg = NULL;
        }
        if (!ctx.pg)
            ctx.pg = lam_pg_connect_wait(ctx.cfg.common.pg_url);
        atomic_store(&ctx.pg_ok, ctx.pg && lam_pg_exec(ctx.pg, "SELECT 1", 0, NULL, err, sizeof(err)) == 0);
        lam_service_sleep_ms(1000);
    }

    lam_info("msg=stopping");
    lam_http_stop(ctx.http);
    PQfinish(ctx.pg);
    lam_config_free(batch_config_table, &ctx.cfg);
    lam_info("msg=stopped");
    return 0;
}
