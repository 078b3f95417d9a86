/* lam_http.h - libmicrohttpd wrapper: bounded bodies, timeouts, JSON errors, deferred replies, metrics. */
#ifndef LAM_HTTP_H
#define LAM_HTTP_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "lam_buf.h"

typedef struct lam_http_server lam_http_server_t;
typedef struct lam_http_req lam_http_req_t;

/**
 * Called once per request with the whole body. It must reply (lam_http_reply*) before returning,
 * or call lam_http_defer() and reply later from any thread.
 */
typedef void (*lam_http_handler_fn)(lam_http_req_t *req, void *opaque);

typedef struct lam_http_opts {
    const char *host;        /* listen address, e.g. "127.0.0.1" */
    int port;
    size_t max_body;         /* bodies larger than this get 413 without being buffered */
    unsigned conn_limit;     /* concurrent connections (0 = 1024) */
    unsigned timeout_s;      /* idle/slow connection timeout (0 = 30 s) */
    unsigned threads;        /* polling threads (0 = 1) */
    size_t conn_memory;      /* per-connection memory for the request line, headers and reads (0 = 64 KiB);
                              * libmicrohttpd answers 431 to headers that do not fit, and clears it
                              * between keep-alive requests, so smaller is cheaper per request */
    int use_poll;            /* poll(2) instead of epoll: cheaper when most requests are deferred, as
                              * each suspend/resume costs two epoll_ctl calls (ingest) */
    lam_http_handler_fn handler;
    void *opaque;
} lam_http_opts_t;

struct lam_http_req {
    const char *method;
    const char *path;        /* URL path without the query string */
    const char *body;        /* NUL-terminated copy of the body (body_len bytes) */
    size_t body_len;
    void *user;              /* free for the handler */
    unsigned status;         /* status of the reply sent (0 until then), e.g. for per-route metrics */
    /* private */
    struct MHD_Connection *conn;
    lam_http_server_t *srv;
    lam_buf_t buf;
    struct MHD_Response *pending;
    unsigned pending_status;
    int state;
    int64_t start_us;
    char extra_headers[512];
};

/** Start listening; NULL with errstr (e.g. address in use). Stop with lam_http_stop(). */
lam_http_server_t *lam_http_start(const lam_http_opts_t *opts, char *errstr, size_t errstr_size);
/** Stop accepting, close connections, free the server. Accepts NULL. */
void lam_http_stop(lam_http_server_t *srv);
/** Stop accepting new connections but keep serving those open (graceful shutdown, step 1). */
void lam_http_quiesce(lam_http_server_t *srv);
/** Number of connections currently open. */
unsigned lam_http_connections(lam_http_server_t *srv);

/** Request header value (case-insensitive name) or NULL. */
const char *lam_http_header(lam_http_req_t *req, const char *name);
/** 1 when the client connected from a loopback address (127.0.0.0/8, ::1, ::ffff:127.x). */
int lam_http_client_is_loopback(lam_http_req_t *req);
/** Query argument value or NULL (the first when repeated). */
const char *lam_http_query(lam_http_req_t *req, const char *name);
/** Call fn for every query argument, in order; stops when fn returns non-zero (which is returned). */
int lam_http_query_each(lam_http_req_t *req, int (*fn)(void *arg, const char *key, const char *value),
                        void *arg);

/** Add a response header for the reply about to be sent (e.g. Retry-After). */
void lam_http_add_header(lam_http_req_t *req, const char *name, const char *value);
/** Reply with a copy of body. Returns 0. */
int lam_http_reply(lam_http_req_t *req, unsigned status, const char *content_type, const void *body, size_t len);
/** Reply with a JSON body (application/json). */
int lam_http_reply_json(lam_http_req_t *req, unsigned status, const lam_buf_t *json);
/**
 * Reply with the JSON error shape {"error":{"code":"...","message":"..."}}; code defaults from
 * status when NULL (bad_request, unauthorized, not_found, ...). Returns -1 so handlers can
 * `return lam_http_error(...)` from *_or_reply() helpers.
 */
int lam_http_error(lam_http_req_t *req, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/**
 * Mark the request as answered later (from any thread) with one lam_http_reply*(). Call it from
 * the handler BEFORE handing the request to another thread: the connection is suspended here and
 * the later reply resumes it. req stays valid until that reply.
 */
void lam_http_defer(lam_http_req_t *req);
/**
 * Free the request body now instead of when the request completes: req->body becomes NULL. For a
 * handler that has copied what it needs and defers its reply (ingest: 128 requests waiting for
 * Kafka held ~2.7 MB of bodies they no longer read).
 */
void lam_http_body_done(lam_http_req_t *req);

/** Prometheus text for this server's counters, each metric prefixed with prefix (e.g. "lam_ingest"). */
void lam_http_metrics(lam_http_server_t *srv, const char *prefix, lam_buf_t *out);

/**
 * Answer GET /healthz: 200 {"status":"ok"} when problem is NULL, else 503 with the JSON error
 * shape carrying problem (e.g. "cannot reach Kafka at 127.0.0.1:9092") and Retry-After: 1.
 */
int lam_http_reply_health(lam_http_req_t *req, const char *problem);
/** Answer GET /metrics: this server's HTTP metrics under prefix, then extra (may be NULL). */
int lam_http_reply_metrics(lam_http_req_t *req, const char *prefix, const lam_buf_t *extra);

/** Compare two secrets in time independent of where they differ. 1 when equal. */
int lam_http_secret_eq(const char *a, size_t alen, const char *b, size_t blen);
/** Status code -> default error code ("not_found"). */
const char *lam_http_status_code(unsigned status);

#endif
