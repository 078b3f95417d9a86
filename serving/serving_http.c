/* serving_http.c - serving's routes, CORS, per-route and backend metrics. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lam_log.h"
#include "lam_mem.h"
#include "serving.h"

static const double lat_bounds[SERVING_LAT_N] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                 0.05,   0.1,   0.25,   0.5,   1,    2.5};
static const char *const route_names[SR_COUNT] = {"views",  "view_query", "batch_post", "batch_list",
                                                  "batch_get", "status", "dashboards", "tail",  "openapi",    "healthz",
                                                  "metrics", "static",    "other"};
static const char *const backend_names[SB_COUNT] = {"postgresql", "redis", "kafka"};

int64_t serving_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void serving_hist_observe(serving_hist_t *h, int64_t us)
{
    double s = (double)us / 1e6;
    size_t b;
    for (b = 0; b < SERVING_LAT_N; b++)
        if (s <= lat_bounds[b])
            break;
    atomic_fetch_add(&h->buckets[b], 1);
    atomic_fetch_add(&h->sum_us, (unsigned long long)(us > 0 ? us : 0));
}

void serving_observe_backend(serving_ctx_t *ctx, serving_backend_t b, int64_t start_us, int ok)
{
    serving_hist_observe(&ctx->metrics.backend_lat[b], serving_now_us() - start_us);
    if (!ok)
        atomic_fetch_add(&ctx->metrics.backend_errors[b], 1);
}

int serving_reply(lam_http_req_t *req, unsigned status, const char *ctype, const void *body, size_t len)
{
    return lam_http_reply(req, status, ctype, body, len);
}

int serving_reply_json(lam_http_req_t *req, unsigned status, const lam_buf_t *json)
{
    return lam_http_reply_json(req, status, json);
}

int serving_error(lam_http_req_t *req, unsigned status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return lam_http_error(req, status, code, "%s", msg);
}

int serving_unavailable(lam_http_req_t *req, const char *what, const char *detail)
{
    lam_warn("msg=\"%s unavailable\" path=\"%s\" error=\"%s\"", what, req->path, detail);
    lam_http_add_header(req, "Retry-After", "1");
    return serving_error(req, 503, NULL, "%s unavailable, retry shortly", what);
}

int serving_get_only_or_reply(lam_http_req_t *req)
{
    if (!strcmp(req->method, "GET") || !strcmp(req->method, "HEAD"))
        return 0;
    lam_http_add_header(req, "Allow", "GET, HEAD");
    return serving_error(req, 405, NULL, "use GET");
}

static int origin_allowed(serving_ctx_t *ctx, const char *origin)
{
    for (size_t i = 0; i < ctx->ncors; i++)
        if (!strcmp(ctx->cors[i], "*") || !strcmp(ctx->cors[i], origin))
            return 1;
    return 0;
}

void serving_http_cors(serving_ctx_t *ctx, lam_http_req_t *req)
{
    if (!ctx->ncors)
        return;
    const char *origin = lam_http_header(req, "Origin");
    if (!origin || !origin_allowed(ctx, origin))
        return;
    lam_http_add_header(req, "Access-Control-Allow-Origin", origin);
    lam_http_add_header(req, "Vary", "Origin");
}

static void append_hist(lam_buf_t *b, const char *name, const char *label, const serving_hist_t *h)
{
    unsigned long long cum = 0;
    for (size_t i = 0; i <= SERVING_LAT_N; i++) {
        cum += atomic_load(&h->buckets[i]);
        if (i < SERVING_LAT_N)
            lam_buf_printf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, label, lat_bounds[i], cum);
        else
            lam_buf_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, label, cum);
    }
    lam_buf_printf(b, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, label,
                   (double)atomic_load(&h->sum_us) / 1e6, name, label, cum);
}

static void handle_metrics(serving_ctx_t *ctx, lam_http_req_t *req)
{
    serving_metrics_t *m = &ctx->metrics;
    lam_buf_t b = LAM_BUF_INIT;
    char label[96];
    lam_buf_append_str(&b, "# HELP lam_serving_route_requests_total Requests by route and status class.\n"
                           "# TYPE lam_serving_route_requests_total counter\n");
    for (size_t r = 0; r < SR_COUNT; r++)
        for (int c = 0; c < 5; c++) {
            unsigned long long v = atomic_load(&m->by_route_class[r][c]);
            if (v)
                lam_buf_printf(&b, "lam_serving_route_requests_total{route=\"%s\",status=\"%dxx\"} %llu\n",
                               route_names[r], c + 1, v);
        }
    lam_buf_append_str(&b, "# HELP lam_serving_route_seconds Handler latency by route.\n"
                           "# TYPE lam_serving_route_seconds histogram\n");
    for (size_t r = 0; r < SR_COUNT; r++) {
        snprintf(label, sizeof(label), "route=\"%s\"", route_names[r]);
        append_hist(&b, "lam_serving_route_seconds", label, &m->route_lat[r]);
    }
    lam_buf_append_str(&b, "# HELP lam_serving_backend_seconds Latency of PostgreSQL, Redis and Kafka calls.\n"
                           "# TYPE lam_serving_backend_seconds histogram\n");
    for (size_t i = 0; i < SB_COUNT; i++) {
        snprintf(label, sizeof(label), "backend=\"%s\"", backend_names[i]);
        append_hist(&b, "lam_serving_backend_seconds", label, &m->backend_lat[i]);
    }
    lam_buf_append_str(&b, "# TYPE lam_serving_backend_errors_total counter\n");
    for (size_t i = 0; i < SB_COUNT; i++)
        lam_buf_printf(&b, "lam_serving_backend_errors_total{backend=\"%s\"} %llu\n", backend_names[i],
                       atomic_load(&m->backend_errors[i]));
    unsigned long long hits = atomic_load(&m->cache_hits), misses = atomic_load(&m->cache_misses);
    size_t bytes, entries;
    serving_cache_stats(ctx->cache, &bytes, &entries);
    lam_buf_printf(&b,
                   "# TYPE lam_serving_cache_hits_total counter\nlam_serving_cache_hits_total %llu\n"
                   "# TYPE lam_serving_cache_misses_total counter\nlam_serving_cache_misses_total %llu\n"
                   "# TYPE lam_serving_cache_evictions_total counter\nlam_serving_cache_evictions_total %llu\n"
                   "# TYPE lam_serving_cache_hit_ratio gauge\nlam_serving_cache_hit_ratio %.4f\n"
                   "# TYPE lam_serving_cache_bytes gauge\nlam_serving_cache_bytes %zu\n"
                   "# TYPE lam_serving_cache_entries gauge\nlam_serving_cache_entries %zu\n"
                   "# HELP lam_serving_query_retries_total Queries re-read because a batch run was published meanwhile.\n"
                   "# TYPE lam_serving_query_retries_total counter\nlam_serving_query_retries_total %llu\n"
                   "# TYPE lam_serving_query_race_failures_total counter\nlam_serving_query_race_failures_total %llu\n"
                   "# TYPE lam_serving_published_run gauge\nlam_serving_published_run %lld\n"
                   "# HELP lam_serving_result_hits_total Queries answered from a merged answer younger than LAM_SERVING_RESULT_MS.\n"
                   "# TYPE lam_serving_result_hits_total counter\nlam_serving_result_hits_total %llu\n",
                   hits, misses, atomic_load(&m->cache_evictions),
                   hits + misses ? (double)hits / (double)(hits + misses) : 0.0, bytes, entries,
                   atomic_load(&m->query_retries), atomic_load(&m->query_races_failed),
                   (long long)atomic_load(&ctx->published_run), atomic_load(&m->result_hits));
    lam_http_reply_metrics(req, "lam_serving", &b);
    lam_buf_free(&b);
}

static serving_route_t route(serving_ctx_t *ctx, lam_http_req_t *req)
{
    const char *p = req->path;
    if (!strcmp(p, "/healthz")) {
        const char *problem = !atomic_load(&ctx->pg_ok)      ? "cannot reach PostgreSQL"
                              : !atomic_load(&ctx->redis_ok) ? "cannot reach Redis"
                                                             : NULL;
        lam_http_reply_health(req, problem);
        return SR_HEALTHZ;
    }
    if (!strcmp(p, "/metrics")) {
        if (serving_get_only_or_reply(req) == 0)
            handle_metrics(ctx, req);
        return SR_METRICS;
    }
    int api = !strncmp(p, "/v1/", 4) || !strcmp(p, "/openapi.json");
    if (api) {
        serving_http_cors(ctx, req);
        if (!strcmp(req->method, "OPTIONS")) { /* CORS preflight */
            lam_http_add_header(req, "Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS");
            lam_http_add_header(req, "Access-Control-Allow-Headers", "Authorization, Content-Type");
            lam_http_add_header(req, "Access-Control-Max-Age", "600");
            serving_reply(req, 204, NULL, "", 0);
            return SR_OTHER;
        }
    }
    if (!strcmp(p, "/openapi.json")) {
        serving_handle_openapi(ctx, req);
        return SR_OPENAPI;
    }
    if (!strcmp(p, "/v1/views")) {
        serving_handle_views(ctx, req);
        return SR_VIEWS;
    }
    if (!strncmp(p, "/v1/views/", 10)) {
        serving_handle_view_query(ctx, req, p + 10);
        return SR_VIEW_QUERY;
    }
    if (!strcmp(p, "/v1/batch/runs") || !strncmp(p, "/v1/batch/runs/", 15)) {
        serving_handle_batch(ctx, req, p + 14);
        return !strcmp(req->method, "POST") ? SR_BATCH_POST : p[14] ? SR_BATCH_GET : SR_BATCH_LIST;
    }
    if (!strcmp(p, "/v1/status")) {
        serving_handle_status(ctx, req);
        return SR_STATUS;
    }
    if (!strcmp(p, "/v1/dashboards") || !strncmp(p, "/v1/dashboards/", 15)) {
        serving_handle_dashboards(ctx, req, p + 14);
        return SR_DASHBOARDS;
    }
    if (!strcmp(p, "/v1/tail")) {
        serving_handle_tail(ctx, req);
        return SR_TAIL;
    }
    if (api) {
        serving_error(req, 404, NULL, "no route for %s %s", req->method, p);
        return SR_OTHER;
    }
    if (!strncmp(p, "/d/", 3)) {
        serving_handle_dashboard_page(ctx, req, p + 3);
        return SR_STATIC;
    }
    serving_handle_static(ctx, req);
    return SR_STATIC;
}

void serving_http_handle(lam_http_req_t *req, void *opaque)
{
    serving_ctx_t *ctx = opaque;
    int64_t t0 = serving_now_us();
    serving_route_t r = route(ctx, req);
    unsigned status = req->status;
    if (status >= 100 && status < 600)
        atomic_fetch_add(&ctx->metrics.by_route_class[r][status / 100 - 1], 1);
    serving_hist_observe(&ctx->metrics.route_lat[r], serving_now_us() - t0);
}
