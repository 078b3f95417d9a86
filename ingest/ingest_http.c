/* ingest_http.c - ingest's HTTP routes: POST /v1/events (auth, content type), /healthz, /metrics. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ingest.h"
#include "lam_mem.h"

void ingest_http_keys_init(ingest_ctx_t *ctx)
{
    ctx->keys = NULL;
    ctx->nkeys = 0;
    const char *p = ctx->cfg.keys;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        const char *e = comma ? comma : p + strlen(p);
        const char *s = p;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if (t > s) {
            ctx->keys = lam_realloc(ctx->keys, (ctx->nkeys + 1) * sizeof(char *));
            ctx->keys[ctx->nkeys++] = lam_strndup(s, (size_t)(t - s));
        }
        p = comma ? comma + 1 : e;
    }
}

void ingest_http_keys_free(ingest_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->nkeys; i++)
        lam_free(ctx->keys[i]);
    lam_free(ctx->keys);
    ctx->keys = NULL;
    ctx->nkeys = 0;
}

static int unauthorized(lam_http_req_t *req, const char *msg)
{
    lam_http_add_header(req, "WWW-Authenticate", "Bearer");
    return lam_http_error(req, 401, "unauthorized", "%s", msg);
}

/* When keys are configured: `Authorization: Bearer <key>`, compared with every key in constant time. */
static int auth_or_reply(ingest_ctx_t *ctx, lam_http_req_t *req)
{
    if (!ctx->nkeys)
        return 0;
    const char *h = lam_http_header(req, "Authorization");
    if (!h)
        return unauthorized(req, "missing Authorization: Bearer <key>");
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "Bearer ", 7))
        return unauthorized(req, "Authorization must be: Bearer <key>");
    h += 7;
    while (*h == ' ')
        h++;
    size_t len = strlen(h);
    while (len && (h[len - 1] == ' ' || h[len - 1] == '\t'))
        len--;
    int match = 0;
    for (size_t i = 0; i < ctx->nkeys; i++) /* no early exit: timing says nothing about which key */
        match |= lam_http_secret_eq(h, len, ctx->keys[i], strlen(ctx->keys[i]));
    if (!match)
        return unauthorized(req, "invalid key");
    return 0;
}

/* 1 = NDJSON, 0 = JSON, -1 = replied 415. Parameters are accepted; a charset must be UTF-8. */
static int content_type_or_reply(lam_http_req_t *req)
{
    const char *ct = lam_http_header(req, "Content-Type");
    if (!ct)
        return lam_http_error(req, 415, NULL, "Content-Type must be application/json or application/x-ndjson");
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    int kind;
    if (n == 16 && !strncasecmp(ct, "application/json", n))
        kind = 0;
    else if ((n == 20 && !strncasecmp(ct, "application/x-ndjson", n)) ||
             (n == 18 && !strncasecmp(ct, "application/ndjson", n)))
        kind = 1;
    else
        return lam_http_error(req, 415, NULL, "Content-Type %.*s: use application/json or application/x-ndjson",
                              (int)(n > 100 ? 100 : n), ct);
    const char *p = ct + n;
    while ((p = strchr(p, ';'))) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!strncasecmp(p, "charset=", 8)) {
            const char *v = p + 8;
            size_t vl = strcspn(v, "; \t");
            if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"')
                v++, vl -= 2;
            if (!((vl == 5 && !strncasecmp(v, "utf-8", 5)) || (vl == 4 && !strncasecmp(v, "utf8", 4))))
                return lam_http_error(req, 415, NULL, "charset %.*s: only UTF-8 is accepted", (int)(vl > 40 ? 40 : vl),
                                      v);
        }
    }
    return kind;
}

static void post_events(ingest_ctx_t *ctx, lam_http_req_t *req)
{
    if (strcmp(req->method, "POST")) {
        lam_http_add_header(req, "Allow", "POST");
        lam_http_error(req, 405, NULL, "use POST on /v1/events");
        return;
    }
    if (auth_or_reply(ctx, req) < 0)
        return;
    int ndjson = content_type_or_reply(req);
    if (ndjson < 0)
        return;
    ingest_events_post(ctx, req, ndjson);
}

void ingest_http_handle(lam_http_req_t *req, void *opaque)
{
    ingest_ctx_t *ctx = opaque;
    if (atomic_load(&ctx->stopping))
        lam_http_add_header(req, "Connection", "close");
    if (!strcmp(req->path, "/v1/events")) {
        post_events(ctx, req);
        return;
    }
    if (!strcmp(req->path, "/healthz")) {
        char problem[300];
        snprintf(problem, sizeof(problem), "cannot reach Kafka at %s", ctx->cfg.common.kafka_brokers);
        if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD"))
            lam_http_add_header(req, "Allow", "GET, HEAD");
        lam_http_reply_health(req, ingest_producer_healthy(ctx) ? NULL : problem);
        return;
    }
    if (!strcmp(req->path, "/metrics")) {
        lam_buf_t extra = LAM_BUF_INIT;
        if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD"))
            lam_http_add_header(req, "Allow", "GET, HEAD");
        else
            ingest_producer_metrics(ctx, &extra);
        lam_http_reply_metrics(req, "lam_ingest", &extra);
        lam_buf_free(&extra);
        return;
    }
    lam_http_error(req, 404, NULL, "no route for %s %s", req->method, req->path);
}
