/* lam_http.c - the HTTP server every lam service uses, on libmicrohttpd. */
#include "lam_http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lam_json.h"
#include "lam_mem.h"

enum { ST_RECEIVING = 0, ST_TOO_LARGE, ST_HANDLING, ST_DEFERRED, ST_REPLIED };

static const unsigned metric_statuses[] = {200, 202, 204, 304, 400, 401, 403, 404, 405, 406,
                                           408, 413, 414, 415, 429, 431, 500, 503, 0};
#define N_STATUS (sizeof(metric_statuses) / sizeof(metric_statuses[0]))
static const double latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  10};
#define HTTP_BODY_PRESIZE_MAX ((size_t)1 << 20)
#define N_LAT (sizeof(latency_bounds) / sizeof(latency_bounds[0]))

struct lam_http_server {
    struct MHD_Daemon *d;
    lam_http_opts_t opts;
    atomic_ullong by_status[N_STATUS];
    atomic_ullong lat_buckets[N_LAT + 1];
    atomic_ullong lat_sum_us;
    atomic_ullong bytes_in;
    atomic_uint open_conns;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

const char *lam_http_status_code(unsigned status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 406: return "not_acceptable";
    case 408: return "request_timeout";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 414: return "uri_too_long";
    case 415: return "unsupported_media_type";
    case 429: return "too_many_requests";
    case 503: return "unavailable";
    default: return status >= 500 ? "internal" : "error";
    }
}

static void record(lam_http_server_t *srv, lam_http_req_t *req, unsigned status)
{
    size_t i;
    for (i = 0; i < N_STATUS - 1; i++)
        if (metric_statuses[i] == status)
            break;
    atomic_fetch_add(&srv->by_status[i], 1);
    int64_t us = now_us() - req->start_us;
    double s = (double)us / 1e6;
    size_t b;
    for (b = 0; b < N_LAT; b++)
        if (s <= latency_bounds[b])
            break;
    atomic_fetch_add(&srv->lat_buckets[b], 1);
    atomic_fetch_add(&srv->lat_sum_us, (unsigned long long)us);
}

static void add_extra_headers(struct MHD_Response *resp, char *hdrs)
{
    /* extra_headers holds "Name\0Value\0Name\0Value\0\0" */
    char *p = hdrs;
    while (*p) {
        char *v = p + strlen(p) + 1;
        MHD_add_response_header(resp, p, v);
        p = v + strlen(v) + 1;
    }
}

void lam_http_add_header(lam_http_req_t *req, const char *name, const char *value)
{
    size_t used = 0;
    while (req->extra_headers[used])
        used += strlen(req->extra_headers + used) + 1, used += strlen(req->extra_headers + used) + 1;
    size_t nl = strlen(name) + 1, vl = strlen(value) + 1;
    if (used + nl + vl + 1 > sizeof(req->extra_headers))
        return;
    memcpy(req->extra_headers + used, name, nl);
    memcpy(req->extra_headers + used + nl, value, vl);
    req->extra_headers[used + nl + vl] = '\0';
}

int lam_http_reply(lam_http_req_t *req, unsigned status, const char *content_type, const void *body, size_t len)
{
    if (req->state == ST_REPLIED || req->pending)
        return 0;
    req->status = status;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    add_extra_headers(resp, req->extra_headers);
    record(req->srv, req, status);
    if (req->state == ST_DEFERRED) {
        /* Another thread answers: hand the response to the connection's next callback. */
        req->pending = resp;
        req->pending_status = status;
        MHD_resume_connection(req->conn);
        return 0;
    }
    MHD_queue_response(req->conn, status, resp);
    MHD_destroy_response(resp);
    req->state = ST_REPLIED;
    return 0;
}

int lam_http_reply_json(lam_http_req_t *req, unsigned status, const lam_buf_t *json)
{
    return lam_http_reply(req, status, "application/json", json->data ? json->data : "", json->len);
}

int lam_http_error(lam_http_req_t *req, unsigned status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append_str(&b, "{\"error\":{\"code\":");
    lam_json_append_cstr(&b, code ? code : lam_http_status_code(status));
    lam_buf_append_str(&b, ",\"message\":");
    lam_json_append_cstr(&b, msg);
    lam_buf_append_str(&b, "}}\n");
    lam_http_reply_json(req, status, &b);
    lam_buf_free(&b);
    return -1;
}

void lam_http_body_done(lam_http_req_t *req)
{
    lam_buf_free(&req->buf);
    req->body = NULL;
    req->body_len = 0;
}

void lam_http_defer(lam_http_req_t *req)
{
    req->state = ST_DEFERRED;
    MHD_suspend_connection(req->conn);
}

const char *lam_http_header(lam_http_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

int lam_http_client_is_loopback(lam_http_req_t *req)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return 0;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

const char *lam_http_query(lam_http_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

typedef struct query_iter {
    int (*fn)(void *, const char *, const char *);
    void *arg;
    int rc;
} query_iter_t;

static enum MHD_Result query_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    query_iter_t *it = cls;
    it->rc = it->fn(it->arg, key, value ? value : "");
    return it->rc ? MHD_NO : MHD_YES;
}

int lam_http_query_each(lam_http_req_t *req, int (*fn)(void *arg, const char *key, const char *value), void *arg)
{
    query_iter_t it = {fn, arg, 0};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_cb, &it);
    return it.rc;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    (void)version;
    lam_http_server_t *srv = cls;
    lam_http_req_t *req = *con_cls;
    if (!req) {
        req = lam_calloc(1, sizeof(*req));
        req->conn = conn;
        req->srv = srv;
        req->method = method;
        req->path = url;
        req->start_us = now_us();
        *con_cls = req;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        unsigned long long clen = cl ? strtoull(cl, NULL, 10) : 0;
        if (clen > srv->opts.max_body) {
            req->state = ST_TOO_LARGE;
            lam_http_error(req, 413, NULL, "body exceeds %zu bytes", srv->opts.max_body);
        } else if (clen) {
            /* One allocation for the body instead of doubling through it; capped so that a
             * Content-Length the client never sends cannot reserve much memory. */
            lam_buf_reserve(&req->buf, clen < HTTP_BODY_PRESIZE_MAX ? (size_t)clen : HTTP_BODY_PRESIZE_MAX);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        atomic_fetch_add(&srv->bytes_in, *upload_data_size);
        if (req->state == ST_RECEIVING) {
            if (req->buf.len + *upload_data_size > srv->opts.max_body) {
                /* Stop buffering at once; the rest of the body is read and dropped. */
                req->state = ST_TOO_LARGE;
                lam_buf_free(&req->buf);
            } else {
                lam_buf_append(&req->buf, upload_data, *upload_data_size);
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    switch (req->state) {
    case ST_TOO_LARGE:
        lam_http_error(req, 413, NULL, "body exceeds %zu bytes", srv->opts.max_body);
        req->state = ST_REPLIED;
        return MHD_YES;
    case ST_RECEIVING:
        req->state = ST_HANDLING;
        if (!req->buf.data)
            lam_buf_reserve(&req->buf, 0);
        req->body = req->buf.data;
        req->body_len = req->buf.len;
        srv->opts.handler(req, srv->opts.opaque);
        if (req->state == ST_HANDLING) /* handler forgot to answer */
            lam_http_error(req, 500, NULL, "no response");
        return MHD_YES;
    case ST_DEFERRED:
        if (req->pending) {
            MHD_queue_response(conn, req->pending_status, req->pending);
            MHD_destroy_response(req->pending);
            req->pending = NULL;
            req->state = ST_REPLIED;
        }
        return MHD_YES;
    default:
        return MHD_YES;
    }
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    lam_http_req_t *req = *con_cls;
    if (!req)
        return;
    if (req->pending)
        MHD_destroy_response(req->pending);
    lam_buf_free(&req->buf);
    lam_free(req);
    *con_cls = NULL;
}

static void conn_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                    enum MHD_ConnectionNotificationCode toe)
{
    (void)conn;
    (void)socket_context;
    lam_http_server_t *srv = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&srv->open_conns, 1);
    else
        atomic_fetch_sub(&srv->open_conns, 1);
}

lam_http_server_t *lam_http_start(const lam_http_opts_t *opts, char *errstr, size_t errstr_size)
{
    lam_http_server_t *srv = lam_calloc(1, sizeof(*srv));
    srv->opts = *opts;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | (opts->use_poll ? MHD_USE_POLL : MHD_USE_EPOLL) |
                     MHD_ALLOW_SUSPEND_RESUME;
    if (inet_pton(AF_INET, opts->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)opts->port);
    } else if (inet_pton(AF_INET6, opts->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)opts->port);
        flags |= MHD_USE_IPv6;
    } else if (!strcmp(opts->host, "localhost")) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)opts->port);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
        snprintf(errstr, errstr_size, "listen address \"%s\" is not an IP address", opts->host);
        lam_free(srv);
        return NULL;
    }
    srv->d = MHD_start_daemon(flags, (uint16_t)opts->port, NULL, NULL, access_cb, srv, MHD_OPTION_SOCK_ADDR, &ss,
                              MHD_OPTION_CONNECTION_LIMIT, opts->conn_limit ? opts->conn_limit : 1024u,
                              MHD_OPTION_CONNECTION_TIMEOUT, opts->timeout_s ? opts->timeout_s : 30u,
                              MHD_OPTION_THREAD_POOL_SIZE, opts->threads ? opts->threads : 1u,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                              opts->conn_memory ? opts->conn_memory : (size_t)64 * 1024, MHD_OPTION_NOTIFY_COMPLETED,
                              completed_cb, srv, MHD_OPTION_NOTIFY_CONNECTION, conn_cb, srv,
                              MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!srv->d) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%d (address in use?)", opts->host, opts->port);
        lam_free(srv);
        return NULL;
    }
    return srv;
}

void lam_http_quiesce(lam_http_server_t *srv)
{
    if (!srv || !srv->d)
        return;
    MHD_socket fd = MHD_quiesce_daemon(srv->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

unsigned lam_http_connections(lam_http_server_t *srv)
{
    return srv ? atomic_load(&srv->open_conns) : 0;
}

void lam_http_stop(lam_http_server_t *srv)
{
    if (!srv)
        return;
    if (srv->d)
        MHD_stop_daemon(srv->d);
    lam_free(srv);
}

void lam_http_metrics(lam_http_server_t *srv, const char *prefix, lam_buf_t *out)
{
    lam_buf_printf(out, "# HELP %s_http_requests_total HTTP requests answered, by status.\n"
                        "# TYPE %s_http_requests_total counter\n", prefix, prefix);
    for (size_t i = 0; i < N_STATUS; i++) {
        unsigned long long v = atomic_load(&srv->by_status[i]);
        if (!v && metric_statuses[i] != 200)
            continue;
        if (metric_statuses[i])
            lam_buf_printf(out, "%s_http_requests_total{status=\"%u\"} %llu\n", prefix, metric_statuses[i], v);
        else
            lam_buf_printf(out, "%s_http_requests_total{status=\"other\"} %llu\n", prefix, v);
    }
    lam_buf_printf(out, "# HELP %s_http_request_seconds Time from request start to response queued.\n"
                        "# TYPE %s_http_request_seconds histogram\n", prefix, prefix);
    unsigned long long cum = 0;
    for (size_t b = 0; b <= N_LAT; b++) {
        cum += atomic_load(&srv->lat_buckets[b]);
        if (b < N_LAT)
            lam_buf_printf(out, "%s_http_request_seconds_bucket{le=\"%g\"} %llu\n", prefix, latency_bounds[b], cum);
        else
            lam_buf_printf(out, "%s_http_request_seconds_bucket{le=\"+Inf\"} %llu\n", prefix, cum);
    }
    lam_buf_printf(out, "%s_http_request_seconds_sum %.6f\n%s_http_request_seconds_count %llu\n", prefix,
                   (double)atomic_load(&srv->lat_sum_us) / 1e6, prefix, cum);
    lam_buf_printf(out, "# TYPE %s_http_received_bytes_total counter\n%s_http_received_bytes_total %llu\n", prefix,
                   prefix, (unsigned long long)atomic_load(&srv->bytes_in));
    lam_buf_printf(out, "# TYPE %s_http_open_connections gauge\n%s_http_open_connections %u\n", prefix, prefix,
                   atomic_load(&srv->open_conns));
}

int lam_http_reply_health(lam_http_req_t *req, const char *problem)
{
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        lam_http_add_header(req, "Allow", "GET, HEAD"); /* RFC 9110 15.5.6 */
        return lam_http_error(req, 405, NULL, "use GET");
    }
    if (problem) {
        lam_http_add_header(req, "Retry-After", "1");
        return lam_http_error(req, 503, NULL, "%s", problem);
    }
    static const char ok[] = "{\"status\":\"ok\"}\n";
    return lam_http_reply(req, 200, "application/json", ok, sizeof(ok) - 1);
}

int lam_http_reply_metrics(lam_http_req_t *req, const char *prefix, const lam_buf_t *extra)
{
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        lam_http_add_header(req, "Allow", "GET, HEAD"); /* RFC 9110 15.5.6 */
        return lam_http_error(req, 405, NULL, "use GET");
    }
    lam_buf_t b = LAM_BUF_INIT;
    lam_http_metrics(req->srv, prefix, &b);
    if (extra && extra->len)
        lam_buf_append(&b, extra->data, extra->len);
    lam_http_reply(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    lam_buf_free(&b);
    return 0;
}

int lam_http_secret_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Walk the longer length so the time depends on neither the contents nor where they differ. */
    size_t n = alen > blen ? alen : blen;
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < alen ? (unsigned char)a[i] : 0;
        unsigned char y = i < blen ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(x ^ y);
    }
    return diff == 0;
}
