/* speed_http.c - speed_layer's small HTTP listener: /healthz and /metrics. */
#include <string.h>

#include "speed.h"

void speed_http_handle(lam_http_req_t *req, void *opaque)
{
    speed_ctx_t *ctx = opaque;
    if (!strcmp(req->path, "/healthz")) {
        const char *problem = !atomic_load(&ctx->redis_ok)   ? "cannot reach Redis"
                              : !atomic_load(&ctx->kafka_ok) ? "cannot reach Kafka"
                                                             : NULL;
        lam_http_reply_health(req, problem);
        return;
    }
    if (!strcmp(req->path, "/metrics")) {
        lam_http_reply_metrics(req, "lam_speed", NULL);
        return;
    }
    lam_http_error(req, 404, NULL, "no route for %s %s", req->method, req->path);
}
