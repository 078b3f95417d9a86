/* ingest_http.c - ingest's HTTP routes: /healthz, /metrics (POST /v1/events comes with issue 4). */
#include <stdio.h>
#include <string.h>

#include "ingest.h"

void ingest_http_handle(lam_http_req_t *req, void *opaque)
{
    ingest_ctx_t *ctx = opaque;
    if (!strcmp(req->path, "/healthz")) {
        char problem[300];
        snprintf(problem, sizeof(problem), "cannot reach Kafka at %s", ctx->cfg.common.kafka_brokers);
        lam_http_reply_health(req, ingest_producer_healthy(ctx) ? NULL : problem);
        return;
    }
    if (!strcmp(req->path, "/metrics")) {
        lam_http_reply_metrics(req, "lam_ingest", NULL);
        return;
    }
    lam_http_error(req, 404, NULL, "no route for %s %s", req->method, req->path);
}
