/* batch_http.c - batch_layer's small HTTP listener: /healthz and /metrics. */
#include <string.h>

#include "batch.h"

void batch_http_handle(lam_http_req_t *req, void *opaque)
{
    batch_ctx_t *ctx = opaque;
    if (!strcmp(req->path, "/healthz")) {
        const char *problem = NULL;
        if (!atomic_load(&ctx->pg_ok))
            problem = "cannot reach PostgreSQL";
        else if (ctx->archive)
            problem = batch_archive_problem(ctx->archive);
        lam_http_reply_health(req, problem);
        return;
    }
    if (!strcmp(req->path, "/metrics")) {
        lam_buf_t m = LAM_BUF_INIT;
        if (ctx->archive)
            batch_archive_metrics(ctx->archive, &m);
        lam_buf_printf(&m,
                       "# TYPE lam_batch_runs_total counter\nlam_batch_runs_total{status=\"succeeded\"} %lld\n"
                       "lam_batch_runs_total{status=\"failed\"} %lld\n"
                       "# TYPE lam_batch_current_run gauge\nlam_batch_current_run %lld\n"
                       "# TYPE lam_batch_running_run gauge\nlam_batch_running_run %lld\n"
                       "# TYPE lam_batch_last_run_seconds gauge\nlam_batch_last_run_seconds %.3f\n"
                       "# TYPE lam_batch_last_run_records gauge\nlam_batch_last_run_records %lld\n",
                       (long long)atomic_load(&ctx->runs_succeeded), (long long)atomic_load(&ctx->runs_failed),
                       (long long)atomic_load(&ctx->current_run), (long long)atomic_load(&ctx->running_run),
                       atomic_load(&ctx->last_run_ms) / 1000.0, (long long)atomic_load(&ctx->last_run_records));
        lam_http_reply_metrics(req, "lam_batch", &m);
        lam_buf_free(&m);
        return;
    }
    lam_http_error(req, 404, NULL, "no route for %s %s", req->method, req->path);
}
