/* batch_http.c - batch_layer's small HTTP listener: /healthz and /metrics. */
#include <string.h>

#include "batch.h"

void batch_http_handle(lam_http_req_t *req, void *opaque)
{
    batch_ctx_t *ctx = opaque;
    if (!strcmp(req->path, "/healthz")) {
        lam_http_reply_health(req, atomic_load(&ctx->pg_ok) ? NULL : "cannot reach PostgreSQL");
        return;
    }
    if (!strcmp(req->path, "/metrics")) {
        lam_http_reply_metrics(req, "lam_batch", NULL);
        return;
    }
    lam_http_error(req, 404, NULL, "no route for %s %s", req->method, req->path);
}
