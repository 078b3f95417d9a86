/* test_http.c - the shared HTTP server: routing hook, bounded bodies, deferred replies, timeouts. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "testlib.h"

#include "lam_http.h"
#include "lam_mem.h"

static lam_http_server_t *g_srv;
static unsigned g_status_seen;
static int g_port;

static void *reply_later(void *arg)
{
    lam_http_req_t *req = arg;
    usleep(50000);
    lam_http_add_header(req, "X-Later", "yes");
    lam_http_reply(req, 200, "text/plain", "later", 5);
    return NULL;
}

/* /done: what the handler saw after lam_http_body_done(), replied later from another thread. */
static char g_done_seen[64];
static void *reply_done(void *arg)
{
    lam_http_req_t *req = arg;
    usleep(20000);
    lam_http_reply(req, 200, "text/plain", g_done_seen, strlen(g_done_seen));
    return NULL;
}

static void handler(lam_http_req_t *req, void *opaque)
{
    (void)opaque;
    if (!strcmp(req->path, "/healthz")) {
        lam_http_reply_health(req, NULL);
    } else if (!strcmp(req->path, "/sick")) {
        lam_http_reply_health(req, "cannot reach Kafka at 127.0.0.1:1");
    } else if (!strcmp(req->path, "/echo")) {
        lam_http_reply(req, 200, "application/octet-stream", req->body, req->body_len);
    } else if (!strcmp(req->path, "/defer")) {
        lam_http_defer(req);
        pthread_t t;
        pthread_create(&t, NULL, reply_later, req);
        pthread_detach(t);
    } else if (!strcmp(req->path, "/done")) {
        size_t len = req->body_len;
        lam_http_body_done(req);
        snprintf(g_done_seen, sizeof(g_done_seen), "%zu %s %zu", len, req->body ? "kept" : "freed", req->body_len);
        lam_http_defer(req);
        pthread_t t;
        pthread_create(&t, NULL, reply_done, req);
        pthread_detach(t);
    } else if (!strcmp(req->path, "/query")) {
        const char *a = lam_http_query(req, "a");
        lam_http_reply(req, 200, "text/plain", a ? a : "-", a ? strlen(a) : 1);
    } else if (!strcmp(req->path, "/metrics")) {
        lam_http_reply_metrics(req, "lam_test", NULL);
    } else if (!strcmp(req->path, "/loopback")) {
        const char *yes = lam_http_client_is_loopback(req) ? "yes" : "no";
        lam_http_reply(req, 200, "text/plain", yes, strlen(yes));
    } else if (!strcmp(req->path, "/status")) {
        unsigned before = req->status;
        lam_http_error(req, 409, NULL, "conflict");
        g_status_seen = before * 1000 + req->status;
    } else if (!strcmp(req->path, "/silent")) {
        /* forgets to answer: the wrapper must answer 500 */
    } else {
        lam_http_error(req, 404, NULL, "no route for %s \"%s\"", req->method, req->path);
    }
}

static int setup(void **st)
{
    (void)st;
    char err[256];
    g_port = lam_test_free_port();
    lam_http_opts_t o = {.host = "127.0.0.1", .port = g_port, .max_body = 1000, .conn_limit = 16,
                         .timeout_s = 1, .threads = 2, .handler = handler};
    g_srv = lam_http_start(&o, err, sizeof(err));
    return g_srv ? 0 : -1;
}

static int teardown(void **st)
{
    (void)st;
    lam_http_stop(g_srv);
    return 0;
}

static int connect_srv(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {5, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return s;
}

/* Send raw bytes, read the whole response (Connection: close), return it (caller frees). */
static char *roundtrip(const char *raw, size_t len)
{
    int s = connect_srv();
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(s, raw + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    size_t cap = 65536, n = 0;
    char *buf = lam_malloc(cap);
    for (;;) {
        if (n + 1 >= cap)
            buf = lam_realloc(buf, cap *= 2);
        ssize_t r = recv(s, buf + n, cap - n - 1, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    close(s);
    return buf;
}

static char *get(const char *path)
{
    char req[512];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    return roundtrip(req, (size_t)n);
}

static int status_of(const char *resp)
{
    int st = 0;
    sscanf(resp, "HTTP/1.1 %d", &st);
    return st;
}

static const char *body_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

static void test_health_and_json_errors(void **st)
{
    (void)st;
    char *r = get("/healthz");
    assert_int_equal(status_of(r), 200);
    assert_string_equal(body_of(r), "{\"status\":\"ok\"}\n");
    free(r);
    r = get("/sick");
    assert_int_equal(status_of(r), 503);
    assert_non_null(strstr(r, "Retry-After: 1"));
    assert_string_equal(body_of(r), "{\"error\":{\"code\":\"unavailable\",\"message\":\"cannot reach Kafka at 127.0.0.1:1\"}}\n");
    free(r);
    r = get("/nope%22%0a");
    assert_int_equal(status_of(r), 404);
    /* the quote and newline in the path are escaped inside the JSON message */
    assert_non_null(strstr(body_of(r), "{\"error\":{\"code\":\"not_found\",\"message\":\"no route for GET \\\"/nope\\\"\\n\\\"\"}}"));
    free(r);
    r = get("/silent");
    assert_int_equal(status_of(r), 500);
    free(r);
}

static void test_body_limit(void **st)
{
    (void)st;
    char req[4096];
    /* within the limit: echoed back */
    int n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello");
    char *r = roundtrip(req, (size_t)n);
    assert_int_equal(status_of(r), 200);
    assert_string_equal(body_of(r), "hello");
    free(r);
    /* declared too large: 413 before reading the body */
    n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 20000000\r\n\r\n");
    r = roundtrip(req, (size_t)n);
    assert_int_equal(status_of(r), 413);
    assert_non_null(strstr(body_of(r), "\"payload_too_large\""));
    free(r);
    /* chunked, no length: stops buffering past the limit and answers 413 */
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append_str(&b, "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        lam_buf_append_str(&b, "1f4\r\n");
        for (int j = 0; j < 500; j++)
            lam_buf_append_char(&b, 'a');
        lam_buf_append_str(&b, "\r\n");
    }
    lam_buf_append_str(&b, "0\r\n\r\n");
    r = roundtrip(b.data, b.len);
    assert_int_equal(status_of(r), 413);
    free(r);
    lam_buf_free(&b);
}

static void test_deferred_reply_from_other_thread(void **st)
{
    (void)st;
    for (int i = 0; i < 20; i++) {
        char *r = get("/defer");
        assert_int_equal(status_of(r), 200);
        assert_non_null(strstr(r, "X-Later: yes"));
        assert_string_equal(body_of(r), "later");
        free(r);
    }
}

/* lam_http_body_done(): the body is freed before the (deferred) reply, which still goes out, and
 * the connection serves its next keep-alive request. */
static void test_body_done_before_deferred_reply(void **st)
{
    (void)st;
    const char two[] = "POST /done HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                       "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc";
    char *r = roundtrip(two, sizeof(two) - 1);
    assert_int_equal(status_of(r), 200);
    assert_non_null(strstr(r, "\r\n\r\n5 freed 0"));
    const char *second = strstr(r + 1, "HTTP/1.1 200");
    assert_non_null(second);
    assert_string_equal(body_of(second), "abc");
    free(r);
}

static void test_query_args(void **st)
{
    (void)st;
    char *r = get("/query?a=x%20y&b=2");
    assert_string_equal(body_of(r), "x y");
    free(r);
}

static void test_header_flood_rejected(void **st)
{
    (void)st;
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append_str(&b, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 3000; i++)
        lam_buf_printf(&b, "X-Flood-%d: %040d\r\n", i, i);
    lam_buf_append_str(&b, "Connection: close\r\n\r\n");
    char *r = roundtrip(b.data, b.len);
    assert_int_equal(status_of(r), 431); /* Request Header Fields Too Large */
    free(r);
    lam_buf_free(&b);
    r = get("/healthz"); /* still serving */
    assert_int_equal(status_of(r), 200);
    free(r);
}

/* A GET /healthz whose headers take about header_bytes. */
static char *get_with_headers(size_t header_bytes)
{
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append_str(&b, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; b.len < header_bytes; i++)
        lam_buf_printf(&b, "X-Pad-%d: %040d\r\n", i, i);
    lam_buf_append_str(&b, "Connection: close\r\n\r\n");
    char *r = roundtrip(b.data, b.len);
    lam_buf_free(&b);
    return r;
}

/* conn_memory bounds the headers (431 beyond), use_poll serves deferred replies, and a body
 * larger than the connection memory arrives whole. */
static void test_conn_memory_and_poll(void **st)
{
    (void)st;
    /* the default 64 KiB server takes 24 KB of headers */
    char *r = get_with_headers(24000);
    assert_int_equal(status_of(r), 200);
    free(r);

    int default_port = g_port;
    char err[256];
    g_port = lam_test_free_port();
    lam_http_opts_t o = {.host = "127.0.0.1", .port = g_port, .max_body = 200000, .conn_limit = 16,
                         .timeout_s = 1, .threads = 2, .handler = handler, .conn_memory = 16 * 1024,
                         .use_poll = 1};
    lam_http_server_t *small = lam_http_start(&o, err, sizeof(err));
    assert_non_null(small);
    r = get_with_headers(24000);
    assert_int_equal(status_of(r), 431);
    free(r);
    r = get_with_headers(4000);
    assert_int_equal(status_of(r), 200);
    free(r);
    for (int i = 0; i < 10; i++) {
        r = get("/defer");
        assert_int_equal(status_of(r), 200);
        assert_string_equal(body_of(r), "later");
        free(r);
    }
    lam_buf_t b = LAM_BUF_INIT, body = LAM_BUF_INIT;
    for (int i = 0; body.len < 150000; i++)
        lam_buf_printf(&body, "%d,", i);
    lam_buf_printf(&b, "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n", body.len);
    lam_buf_append(&b, body.data, body.len);
    r = roundtrip(b.data, b.len);
    assert_int_equal(status_of(r), 200);
    assert_string_equal(body_of(r), body.data);
    free(r);
    lam_buf_free(&b);
    lam_buf_free(&body);
    lam_http_stop(small);
    g_port = default_port;
}

static void test_slow_client_timed_out(void **st)
{
    (void)st;
    int s = connect_srv();
    const char part[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n"; /* never finishes the headers */
    send(s, part, sizeof(part) - 1, MSG_NOSIGNAL);
    char buf[256];
    time_t t0 = time(NULL);
    ssize_t r = recv(s, buf, sizeof(buf), 0); /* the server closes after timeout_s (1 s) */
    assert_true(r <= 0);
    assert_true(time(NULL) - t0 <= 3); /* closed by the server, not by our 5 s receive timeout */
    close(s);
}

static void test_metrics_count_by_status(void **st)
{
    (void)st;
    free(get("/nope"));
    char *r = get("/metrics");
    assert_int_equal(status_of(r), 200);
    assert_non_null(strstr(r, "lam_test_http_requests_total{status=\"404\"}"));
    assert_non_null(strstr(r, "lam_test_http_request_seconds_bucket{le=\"+Inf\"}"));
    free(r);
}

static void test_loopback_and_status(void **st)
{
    (void)st;
    char *r = get("/loopback");
    assert_string_equal(body_of(r), "yes"); /* the test connects from 127.0.0.1 */
    free(r);
    r = get("/status");
    assert_int_equal(status_of(r), 409);
    assert_int_equal(g_status_seen, 409); /* 0 before the reply, 409 after */
    free(r);
}

static void test_secret_eq(void **st)
{
    (void)st;
    assert_true(lam_http_secret_eq("abc", 3, "abc", 3));
    assert_false(lam_http_secret_eq("abc", 3, "abd", 3));
    assert_false(lam_http_secret_eq("abc", 3, "abcd", 4));
    assert_false(lam_http_secret_eq("", 0, "a", 1));
    assert_true(lam_http_secret_eq("", 0, "", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_and_json_errors), cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_deferred_reply_from_other_thread), cmocka_unit_test(test_query_args),
        cmocka_unit_test(test_body_done_before_deferred_reply),
        cmocka_unit_test(test_header_flood_rejected), cmocka_unit_test(test_slow_client_timed_out),
        cmocka_unit_test(test_metrics_count_by_status), cmocka_unit_test(test_secret_eq),
        cmocka_unit_test(test_loopback_and_status), cmocka_unit_test(test_conn_memory_and_poll),
    };
    return cmocka_run_group_tests_name("test_http", tests, setup, teardown);
}
