/* serving.h - the serving service: merged query API, batch control, status, dashboard hosting. */
#ifndef SERVING_H
#define SERVING_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lam_agg.h"
#include "lam_buf.h"
#include "lam_config.h"
#include "lam_http.h"
#include "lam_view.h"

typedef struct serving_config {
    lam_common_config_t common;
    lam_addr_t addr;
    char *admin_token;
    char *cors_origins;
    char *dashboards_dir;
    int64_t threads;
    int64_t max_buckets;
    int64_t cache_bytes;
    char *speed_group;
    char *archive_group;
    int64_t result_ms;
} serving_config_t;

/* ---- metrics ---- */

typedef enum serving_route {
    SR_VIEWS = 0,
    SR_VIEW_QUERY,
    SR_BATCH_POST,
    SR_BATCH_LIST,
    SR_BATCH_GET,
    SR_STATUS,
    SR_DASHBOARDS,
    SR_TAIL,
    SR_OPENAPI,
    SR_HEALTHZ,
    SR_METRICS,
    SR_STATIC,
    SR_OTHER,
    SR_COUNT
} serving_route_t;

#define SERVING_LAT_N 12
/** A latency histogram with fixed bounds (serving_lat_bounds). */
typedef struct serving_hist {
    atomic_ullong buckets[SERVING_LAT_N + 1];
    atomic_ullong sum_us;
} serving_hist_t;

typedef enum serving_backend { SB_PG = 0, SB_REDIS, SB_KAFKA, SB_COUNT } serving_backend_t;

typedef struct serving_metrics {
    atomic_ullong by_route_class[SR_COUNT][5]; /* 1xx..5xx */
    serving_hist_t route_lat[SR_COUNT];
    serving_hist_t backend_lat[SB_COUNT];
    atomic_ullong backend_errors[SB_COUNT];
    atomic_ullong cache_hits, cache_misses, cache_evictions;
    atomic_ullong query_retries, query_races_failed;
    atomic_ullong result_hits;
} serving_metrics_t;

void serving_hist_observe(serving_hist_t *h, int64_t us);
int64_t serving_now_us(void);

/* ---- connections (one set per HTTP thread: libpq and hiredis handles are not thread-safe) ---- */

typedef struct serving_conn {
    PGconn *pg;
    redisContext *redis;
    struct serving_conn *next;
} serving_conn_t;

/* ---- batch row cache (serving_pg.c) ---- */
typedef struct serving_cache serving_cache_t;
/* ---- merged answers kept for LAM_SERVING_RESULT_MS (serving_results.c) ---- */
typedef struct serving_results serving_results_t;

/* ---- the context ---- */

typedef struct serving_ctx {
    serving_config_t cfg;
    lam_views_t *views;
    lam_http_server_t *http;
    atomic_int pg_ok;
    atomic_int redis_ok;
    /* Newest published run as last seen (LISTEN/NOTIFY or a read); -1 = unknown. */
    atomic_llong published_run;
    atomic_llong published_cut_at; /* ms, INT64_MIN = none */
    serving_cache_t *cache;
    serving_results_t *results; /* NULL when LAM_SERVING_RESULT_MS=0 */
    serving_metrics_t metrics;
    pthread_mutex_t conns_lock;
    serving_conn_t *conns;
    /* /v1/status snapshot, rebuilt by the main loop (serving_status.c) */
    pthread_mutex_t status_lock;
    lam_buf_t status_kafka; /* JSON members for Kafka-derived figures */
    rd_kafka_t *kafka;
    int64_t kafka_next_try_ms;
    int64_t events_prev_total, events_prev_ms;
    double events_per_s;
    char **cors;
    size_t ncors;
    char *dash_real; /* realpath of the dashboards dir, NULL when missing */
} serving_ctx_t;

/* serving_http.c */
void serving_http_handle(lam_http_req_t *req, void *opaque);
/** Add CORS headers for an allowed Origin. */
void serving_http_cors(serving_ctx_t *ctx, lam_http_req_t *req);

/* serving_conn (serving_pg.c / serving_redis.c) */
/** This thread's connection set (created on first use, freed by serving_conns_free). */
serving_conn_t *serving_conn_get(serving_ctx_t *ctx);
void serving_conns_free(serving_ctx_t *ctx);
/** This thread's PostgreSQL connection, (re)connected when needed; NULL with err. */
PGconn *serving_pg(serving_ctx_t *ctx, char *err, size_t errsz);
/** This thread's Redis connection, (re)connected when needed; NULL with err. */
redisContext *serving_redis(serving_ctx_t *ctx, char *err, size_t errsz);
/** Drop this thread's Redis connection after an I/O error (the next use reconnects). */
void serving_redis_drop(serving_ctx_t *ctx);

/* ---- queries (serving_query.c) ---- */

#define SERVING_MAX_FILTER_VALUES 64

typedef struct serving_filter {
    size_t pos; /* index in the view's group_by */
    char **vals;
    size_t nvals;
} serving_filter_t;

/** Bucket -> where it came from (bit 1 batch, bit 2 speed). */
typedef struct serving_srcmap {
    int64_t *ts;
    uint8_t *flags;
    size_t cap, n;
} serving_srcmap_t;

typedef struct serving_query {
    const lam_view_t *view;
    size_t vi;
    int64_t from, to;       /* requested, half-open */
    int64_t lo, hi;         /* view buckets read: lo <= bucket < hi */
    lam_gran_t gran;
    serving_filter_t filters[LAM_VIEW_GROUP_MAX];
    size_t nfilters;
    int64_t top;            /* 0 = all */
    int order;              /* metric index */
    /* results */
    lam_agg_t *out;         /* cells at the requested granularity */
    serving_srcmap_t src;
    int64_t epochs[64];
    size_t nepochs;
    lam_buf_t scratch;
    /* top: the kept group keys, sorted (copies in keepbuf), once ranked */
    int ranked;
    size_t nkeep;
    const char **keep_key; /* into keepbuf */
    size_t *keep_len;
    lam_buf_t keepbuf;
    const lam_views_t *views;
    void *batch;            /* the batch rows read (a cache entry), merged late by serving_pg_batch_apply */
    int batch_applied;
} serving_query_t;

/** 1 when the group key passes the query's where filters. */
int serving_query_key_match(serving_query_t *q, const char *gkey, size_t len);
/**
 * With top: rank the groups of q->out over the whole range by the order metric and keep the best
 * q->top. When the order metric is distinct, ranking needs every HLL: only done when final != 0.
 */
void serving_query_rank(serving_query_t *q, int final);
/** 1 when the group passes the top selection (always 1 before ranking or without top). */
int serving_query_kept(const serving_query_t *q, const char *key, size_t len);
/** Record that bucket ts (requested granularity) received data from source bit. */
void serving_srcmap_mark(serving_srcmap_t *m, int64_t ts, uint8_t bit);
uint8_t serving_srcmap_get(const serving_srcmap_t *m, int64_t ts);
void serving_handle_view_query(serving_ctx_t *ctx, lam_http_req_t *req, const char *name);
void serving_handle_views(serving_ctx_t *ctx, lam_http_req_t *req);

/**
 * The groups of a batch read (one view, one bucket range), sorted by key: per group its totals over
 * the range per metric (count/sum added up, min/max folded; INT64_MIN = no value; distinct not
 * folded) and its cells. Built once per cache entry, so ranking and top selection cost the number
 * of groups, not the number of cells.
 */
typedef struct serving_bgroups {
    size_t n, nmetrics;
    const char **key;
    size_t *key_len;
    int64_t *tot;       /* n * nmetrics */
    size_t *first;      /* cells of group i: cells[first[i] .. first[i + 1]) */
    lam_cell_t **cells;
    size_t bytes;
} serving_bgroups_t;

serving_bgroups_t *serving_bgroups_build(const lam_view_t *v, const lam_agg_t *agg);
void serving_bgroups_free(serving_bgroups_t *g);
/** Index of the group with this key, or (size_t)-1. */
size_t serving_bgroups_find(const serving_bgroups_t *g, const char *key, size_t len);

/* ---- PostgreSQL reads and the cache (serving_pg.c) ---- */

serving_cache_t *serving_cache_new(size_t max_bytes);
void serving_cache_free(serving_cache_t *c);
void serving_cache_stats(serving_cache_t *c, size_t *bytes, size_t *entries);
/**
 * Get the batch rows of the published run for q's view and bucket range (cache or PostgreSQL) into
 * q->batch. *run is the run expected (-1 = unknown) and is set to the run actually read, *cut_at to
 * its cut time (ms, INT64_MIN = unknown). 0 or -1 with err.
 */
int serving_pg_batch_get(serving_ctx_t *ctx, serving_query_t *q, int64_t *run, int64_t *cut_at, char *err,
                         size_t errsz);
/** The groups of the batch cells read (view granularity, unfiltered), NULL when none. Read-only. */
const serving_bgroups_t *serving_pg_batch_groups(const serving_query_t *q);
/** Merge q->batch into q->out (where filters, top selection, roll-up) and release it. */
void serving_pg_batch_apply(serving_ctx_t *ctx, serving_query_t *q);
/** Release q->batch without merging (a retry or an error). */
void serving_pg_batch_release(serving_ctx_t *ctx, serving_query_t *q);
/** Read the published run and its cut time into ctx; returns the run (0 = none) or -1 with err. */
int64_t serving_pg_refresh_published(serving_ctx_t *ctx, PGconn *pg, char *err, size_t errsz);

/* ---- short-lived merged answers (serving_results.c) ---- */
serving_results_t *serving_results_new(size_t slots);
void serving_results_free(serving_results_t *r);
/** Append the cached body for key to out and return 1 when a fresh one exists, else 0. */
int serving_results_get(serving_results_t *r, const lam_buf_t *key, lam_buf_t *out);
/** Keep body for key during ttl_ms. */
void serving_results_put(serving_results_t *r, const lam_buf_t *key, const lam_buf_t *body, int64_t ttl_ms);

/* ---- Redis reads (serving_redis.c) ---- */

/**
 * Merge the real-time data of epochs >= run into q->out. Returns 0, 1 when lam:batch:current is
 * newer than run (a publish raced: retry) with *current set, or -1 with err.
 */
int serving_redis_merge(serving_ctx_t *ctx, serving_query_t *q, int64_t run, int64_t *current, char *err,
                        size_t errsz);

/* ---- batch control (serving_batch.c) ---- */
void serving_handle_batch(serving_ctx_t *ctx, lam_http_req_t *req, const char *rest);

/* ---- status (serving_status.c) ---- */
/** Refresh Kafka-derived status figures (called from the main loop). */
void serving_status_tick(serving_ctx_t *ctx);
void serving_handle_status(serving_ctx_t *ctx, lam_http_req_t *req);

/* ---- static files and OpenAPI (serving_static.c) ---- */
void serving_handle_static(serving_ctx_t *ctx, lam_http_req_t *req);
/** Send file p (a URL path such as "/app/index.html") from the dashboards folder, safely. */
void serving_send_static(serving_ctx_t *ctx, lam_http_req_t *req, const char *p);

/* ---- dashboards and the live tail (serving_dashboards.c) ---- */
int serving_dashboard_id_ok(const char *id, size_t len);
/** GET /v1/dashboards (rest = "") and /v1/dashboards/{id} (rest = "/{id}"). */
void serving_handle_dashboards(serving_ctx_t *ctx, lam_http_req_t *req, const char *rest);
/** GET /d/{id}: the dashboard page (the app loads the file through the API). */
void serving_handle_dashboard_page(serving_ctx_t *ctx, lam_http_req_t *req, const char *id);
/** GET /v1/tail?limit=N: the most recent events from the speed layer's capped stream. */
void serving_handle_tail(serving_ctx_t *ctx, lam_http_req_t *req);
void serving_handle_openapi(serving_ctx_t *ctx, lam_http_req_t *req);

/* ---- replies that remember their status for per-route metrics (serving_http.c) ---- */
void serving_observe_backend(serving_ctx_t *ctx, serving_backend_t b, int64_t start_us, int ok);
int serving_reply(lam_http_req_t *req, unsigned status, const char *ctype, const void *body, size_t len);
int serving_reply_json(lam_http_req_t *req, unsigned status, const lam_buf_t *json);
/** lam_http_error() that records the status; returns -1. */
int serving_error(lam_http_req_t *req, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/**
 * 503 + Retry-After for a backend failure: the detail (which may name hosts) goes to the log, the
 * client gets "<what> unavailable". Returns -1.
 */
int serving_unavailable(lam_http_req_t *req, const char *what, const char *detail);
/** Only GET/HEAD (plus OPTIONS for CORS preflight); replies 405 and returns -1 otherwise. */
int serving_get_only_or_reply(lam_http_req_t *req);

#endif
