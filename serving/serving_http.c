/* serving_http.c - serving's HTTP routes (the query API and dashboard come with issues 7 and 8). */
#include <string.h>

#include "serving.h"

void serving_http_handle(lam_http_req_t *req, void *opaque)
{
    serving_ctx_t *ctx = opaque;
    if (!strcmp(req->path, "/healthz")) {
        const char *problem = !atomic_load(&ctx->pg_ok)      ? "cannot reach PostgreSQL"
                              : !atomic_load(&ctx->redis_ok) ? "cannot reach Redis"
                                                             : NULL;
        lam_http_reply_health(req, problem);
        return;
    }
    if (!strcmp(req->path, "/metrics")) {
        lam_http_reply_metrics(req, "lam_serving", NULL);
        return;
    }
    lam_http_error(req, 404, NULL, "no route for %s %s", req->method, req->path);
}
