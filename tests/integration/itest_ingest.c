/* itest_ingest.c - ingest against the real broker: round trips, mixed bodies, hostile requests, auth, slowloris. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lam_buf.h"
#include "lam_json.h"
#include "lam_kafka.h"
#include "lam_mem.h"
#include "lam_service.h"
#include "lam_uuid.h"
#include "testlib.h"

#define PARTITIONS 3

static char g_topic[96];
static int g_port;        /* main instance: LAM_INGEST_ADDR, default limits, no keys */
static int g_port_b;      /* instance B: keys, 1 s connection timeout, 4 connections */
static pid_t g_pid, g_pid_b;
static long long g_accepted; /* events the instances said they accepted (200s) */

typedef struct expect {
    char *key;
    char *value; /* exact canonical form, NULL = only the key is checked */
} expect_t;
static expect_t g_expect[64];
static size_t g_nexpect;

static void expect_msg(const char *key, const char *value)
{
    assert_true(g_nexpect < LAM_ARRAY_SIZE(g_expect));
    g_expect[g_nexpect].key = lam_strdup(key);
    g_expect[g_nexpect].value = value ? lam_strdup(value) : NULL;
    g_nexpect++;
}

/* ---- processes ---- */

static pid_t spawn_ingest(const char *name, int port, const char *const *env)
{
    char bin[1024], log[1024], addr[64];
    snprintf(bin, sizeof(bin), "%s/ingest", lam_test_env("LAM_BIN_DIR", "build/bin"));
    snprintf(log, sizeof(log), "%s/itest-ingest-%s.log", lam_test_env("LAM_TEST_TMP", "/tmp"), name);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        setenv("LAM_INGEST_ADDR", addr, 1);
        setenv("LAM_KAFKA_TOPIC", g_topic, 1);
        char parts[8];
        snprintf(parts, sizeof(parts), "%d", PARTITIONS);
        setenv("LAM_KAFKA_PARTITIONS", parts, 1);
        unsetenv("LAM_INGEST_KEYS");
        for (size_t i = 0; env && env[i]; i += 2)
            setenv(env[i], env[i + 1], 1);
        execl(bin, bin, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* ---- a raw HTTP client: exact bytes out, status + body back ---- */

typedef struct resp {
    int status;
    char head[8192];
    lam_buf_t body;
    char code[64]; /* error.code of a JSON error body, "" when none */
} resp_t;

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

static void find_code(resp_t *r)
{
    r->code[0] = '\0';
    const char *p = r->body.data ? strstr(r->body.data, "\"code\":\"") : NULL;
    if (p) {
        p += 8;
        size_t n = strcspn(p, "\"");
        snprintf(r->code, sizeof(r->code), "%.*s", (int)(n < 63 ? n : 63), p);
    }
}

/* Read one response (Content-Length bodies; our server never chunks). 0 or -1 (closed early). */
static int read_resp(int fd, resp_t *r)
{
    lam_buf_t in = LAM_BUF_INIT;
    char chunk[65536];
    size_t body_off = 0, clen = 0; /* offsets: the buffer moves as it grows */
    int rc = -1;
    r->status = 0;
    r->head[0] = '\0';
    lam_buf_clear(&r->body);
    for (;;) {
        const char *eoh;
        if (in.data && !body_off && (eoh = strstr(in.data, "\r\n\r\n"))) {
            size_t hl = (size_t)(eoh - in.data);
            snprintf(r->head, sizeof(r->head), "%.*s", (int)(hl < sizeof(r->head) - 1 ? hl : sizeof(r->head) - 1),
                     in.data);
            sscanf(in.data, "HTTP/1.%*d %d", &r->status);
            const char *cl = strcasestr(r->head, "\r\nContent-Length:");
            clen = cl ? strtoull(cl + 17, NULL, 10) : 0;
            body_off = hl + 4;
        }
        if (body_off && in.len >= body_off + clen) {
            lam_buf_append(&r->body, in.data + body_off, clen);
            rc = 0;
            break;
        }
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
        if (n <= 0)
            break;
        lam_buf_append(&in, chunk, (size_t)n);
    }
    lam_buf_free(&in);
    find_code(r);
    return rc;
}

/* Send raw bytes (errors ignored: a server may answer and close before reading everything). */
static int raw_request(int port, const char *data, size_t len, resp_t *r)
{
    int fd = connect_port(port);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    int rc = read_resp(fd, r);
    close(fd);
    return rc;
}

static int request(int port, const char *method, const char *path, const char *ctype, const char *extra_hdrs,
                   const char *body, size_t len, resp_t *r)
{
    lam_buf_t req = LAM_BUF_INIT;
    lam_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", method, path);
    if (ctype)
        lam_buf_printf(&req, "Content-Type: %s\r\n", ctype);
    if (extra_hdrs)
        lam_buf_append_str(&req, extra_hdrs);
    if (body)
        lam_buf_printf(&req, "Content-Length: %zu\r\n", len);
    lam_buf_append_str(&req, "\r\n");
    if (body)
        lam_buf_append(&req, body, len);
    int rc = raw_request(port, req.data, req.len, r);
    lam_buf_free(&req);
    return rc;
}

static int post(int port, const char *ctype, const char *body, resp_t *r)
{
    return request(port, "POST", "/v1/events", ctype, NULL, body, strlen(body), r);
}

static int wait_healthy(int port, int timeout_ms)
{
    resp_t r = {0};
    int64_t end = lam_now_mono_ms() + timeout_ms;
    int ok = 0;
    while (lam_now_mono_ms() < end) {
        if (request(port, "GET", "/healthz", NULL, NULL, NULL, 0, &r) == 0 && r.status == 200) {
            ok = 1;
            break;
        }
        usleep(100000);
    }
    lam_buf_free(&r.body);
    return ok;
}

/* ---- response helpers ---- */

static long long json_int(const char *body, const char *field)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", field);
    const char *p = strstr(body, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* The strings of the top-level array "ids", decoded, into out[] (returns the count). */
static size_t json_ids(const char *body, char out[][LAM_UUID_LEN + 64], size_t max)
{
    lam_json_t j;
    lam_json_init(&j, body, strlen(body), 0);
    size_t n = 0;
    if (lam_json_next(&j) != LAM_JSON_OBJECT)
        return 0;
    for (;;) {
        lam_json_tok_t t = lam_json_next(&j);
        if (t != LAM_JSON_KEY)
            break;
        int is_ids = j.tok_len == 3 && !memcmp(j.tok, "ids", 3);
        t = lam_json_next(&j);
        if (!is_ids) {
            lam_json_skip(&j, t);
            continue;
        }
        while ((t = lam_json_next(&j)) == LAM_JSON_STRING) {
            if (n < max && j.tok_len < LAM_UUID_LEN + 63) {
                size_t l = lam_json_decode(j.tok, j.tok_len, out[n], NULL);
                out[n][l] = '\0';
            }
            n++;
        }
        break;
    }
    return n;
}

/* ---- setup ---- */

static int setup(void **st)
{
    (void)st;
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_topic, sizeof(g_topic), "itest-ingest-%d-%lld", (int)getpid(), (long long)lam_now_ms());
    const char *addr = lam_test_env("LAM_INGEST_ADDR", "");
    const char *colon = strrchr(addr, ':');
    g_port = colon ? atoi(colon + 1) : lam_test_free_port();
    g_port_b = lam_test_free_port();
    g_pid = spawn_ingest("main", g_port, NULL);
    static const char *const env_b[] = {"LAM_INGEST_KEYS",    "k-one, k-two", "LAM_INGEST_CONN_TIMEOUT", "1s",
                                        "LAM_INGEST_MAX_CONNECTIONS", "4", NULL};
    g_pid_b = spawn_ingest("b", g_port_b, env_b);
    if (!wait_healthy(g_port, 30000) || !wait_healthy(g_port_b, 30000)) {
        fprintf(stderr, "ingest did not become healthy (logs in %s)\n", lam_test_env("LAM_TEST_TMP", "/tmp"));
        return -1;
    }
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    int status, ok = 1;
    pid_t pids[2] = {g_pid, g_pid_b};
    for (int i = 0; i < 2; i++) {
        if (pids[i] <= 0)
            continue;
        kill(pids[i], SIGTERM);
        if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "ingest %d did not exit 0 on SIGTERM\n", i);
            ok = 0;
        }
    }
    for (size_t i = 0; i < g_nexpect; i++) {
        lam_free(g_expect[i].key);
        lam_free(g_expect[i].value);
    }
    return ok ? 0 : -1;
}

/* ---- tests ---- */

static void test_single_object_canonical(void **st)
{
    (void)st;
    resp_t r = {0};
    char id[64], body[512], canon[512];
    snprintf(id, sizeof(id), "itest-%d-1", (int)getpid());
    snprintf(body, sizeof(body),
             "{ \"type\" : \"purchase\", \"id\":\"%s\", \"ts\":\"2001-01-01T00:47:00Z\", \"price\": 12.50,"
             " \"qty\":2, \"geo\": {\"cc\":\"TH\", \"city\":{\"name\":\"Bangkok\"}}, \"ok\":true, \"n\":null,"
             " \"big\": 1e3, \"s\":\"caf\\u00e9 \\\"q\\\"\"}",
             id);
    assert_int_equal(post(g_port, "application/json; charset=UTF-8", body, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_int(r.body.data, "accepted"), 1);
    assert_int_equal(json_int(r.body.data, "rejected"), 0);
    char ids[4][LAM_UUID_LEN + 64];
    assert_int_equal(json_ids(r.body.data, ids, 4), 1);
    assert_string_equal(ids[0], id);
    assert_non_null(strstr(r.body.data, "\"errors\":[]"));
    snprintf(canon, sizeof(canon),
             "{\"id\":\"%s\",\"ts\":978310020000,\"type\":\"purchase\",\"price\":12.5,\"qty\":2,\"geo.cc\":\"TH\","
             "\"geo.city.name\":\"Bangkok\",\"ok\":true,\"n\":null,\"big\":1000,\"s\":\"caf\xc3\xa9 \\\"q\\\"\"}",
             id);
    expect_msg(id, canon);
    g_accepted += 1;
    lam_buf_free(&r.body);
}

/* The 200's ids are the ids as JSON strings: escaped where JSON needs it (ingest copies the usual
 * plain ids without its escaper, 8 bytes at a time: quotes and control bytes at every offset of a
 * word, short and long ids), UTF-8 kept. */
static void test_reply_ids_escaped(void **st)
{
    (void)st;
    static const char *const tails[] = {"q\"b", "\\", "ctl\x01", "0123456\"89abcdef-x", "01234567\\9abcdef",
                                        "0123456789abcde\x1f", "caf\xc3\xa9", "del\x7f~ok", "plain-0123456789abcdef"};
    static const char *const escaped[] = {"q\\\"b", "\\\\", "ctl\\u0001", "0123456\\\"89abcdef-x",
                                          "01234567\\\\9abcdef", "0123456789abcde\\u001f", "caf\xc3\xa9",
                                          "del\x7f~ok", "plain-0123456789abcdef"};
    enum { N = sizeof(tails) / sizeof(tails[0]) };
    lam_buf_t body = LAM_BUF_INIT, want = LAM_BUF_INIT;
    char id[N][128];
    lam_buf_append_str(&want, "\"ids\":[");
    for (size_t i = 0; i < N; i++) {
        snprintf(id[i], sizeof(id[i]), "esc-%d-%zu-%s", (int)getpid(), i, tails[i]);
        lam_buf_append_str(&body, "{\"type\":\"esc\",\"id\":");
        lam_json_append_cstr(&body, id[i]);
        lam_buf_append_str(&body, "}\n");
        lam_buf_printf(&want, "%s\"esc-%d-%zu-%s\"", i ? "," : "", (int)getpid(), i, escaped[i]);
        expect_msg(id[i], NULL);
    }
    lam_buf_append_str(&want, "]");
    resp_t r = {0};
    assert_int_equal(post(g_port, "application/x-ndjson", body.data, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_int(r.body.data, "accepted"), N);
    if (!strstr(r.body.data, want.data))
        printf("FAIL - want %s\n       in %s\n", want.data, r.body.data);
    assert_non_null(strstr(r.body.data, want.data));
    char ids[N][LAM_UUID_LEN + 64];
    assert_int_equal(json_ids(r.body.data, ids, N), N);
    for (size_t i = 0; i < N; i++)
        assert_string_equal(ids[i], id[i]);
    g_accepted += N;
    lam_buf_free(&r.body);
    lam_buf_free(&body);
    lam_buf_free(&want);
}

static void test_array_generates_uuid7_ids(void **st)
{
    (void)st;
    resp_t r = {0};
    int64_t before = lam_now_ms();
    assert_int_equal(post(g_port, "application/json",
                          "[{\"type\":\"login\",\"user\":\"u1\",\"ts\":1000},{\"type\":\"login\",\"user\":\"u2\","
                          "\"ts\":2000},{\"type\":\"signup\",\"user\":\"u3\",\"ts\":3000}]",
                          &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_int(r.body.data, "accepted"), 3);
    char ids[4][LAM_UUID_LEN + 64];
    assert_int_equal(json_ids(r.body.data, ids, 4), 3);
    const char *users[] = {"u1", "u2", "u3"}, *types[] = {"login", "login", "signup"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(strlen(ids[i]), LAM_UUID_LEN);
        int64_t ms = lam_uuid7_ms(ids[i], LAM_UUID_LEN);
        assert_true(ms >= before - 1000 && ms <= lam_now_ms() + 1000);
        for (int k = 0; k < i; k++)
            assert_string_not_equal(ids[i], ids[k]);
        char canon[256];
        snprintf(canon, sizeof(canon), "{\"id\":\"%s\",\"ts\":%d000,\"type\":\"%s\",\"user\":\"%s\"}", ids[i], i + 1,
                 types[i], users[i]);
        expect_msg(ids[i], canon);
    }
    g_accepted += 3;
    lam_buf_free(&r.body);
}

/* The partition librdkafka's consistent_random partitioner gives an id (crc32 of the key). */
static int32_t partition_of(const char *key, size_t len)
{
    return rd_kafka_msg_partitioner_consistent_random(NULL, key, len, PARTITIONS, NULL, NULL);
}

/* The ids ingest generates for one request share a partition (fewer produce requests), and are
 * still distinct UUIDv7s in order; the records land in their key's partition (checked in
 * test_topic_holds_exactly_the_accepted_events). */
static void test_generated_ids_share_a_partition(void **st)
{
    (void)st;
    enum { N = 40 };
    lam_buf_t body = LAM_BUF_INIT;
    for (int i = 0; i < N; i++)
        lam_buf_printf(&body, "{\"type\":\"page_view\",\"url\":\"/p/%d\",\"ts\":%d000}\n", i, i + 1);
    resp_t r = {0};
    assert_int_equal(post(g_port, "application/x-ndjson", body.data, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_int(r.body.data, "accepted"), N);
    char ids[N + 1][LAM_UUID_LEN + 64];
    assert_int_equal(json_ids(r.body.data, ids, N + 1), N);
    int32_t p0 = partition_of(ids[0], strlen(ids[0]));
    for (int i = 0; i < N; i++) {
        assert_int_equal(strlen(ids[i]), LAM_UUID_LEN);
        assert_true(lam_uuid7_ms(ids[i], LAM_UUID_LEN) > 0);
        assert_int_equal(partition_of(ids[i], LAM_UUID_LEN), p0);
        if (i)
            assert_true(strcmp(ids[i - 1], ids[i]) < 0);
    }
    g_accepted += N;
    lam_buf_free(&r.body);
    lam_buf_free(&body);
}

static void test_mixed_ndjson_reports_bad_lines_by_index(void **st)
{
    (void)st;
    resp_t r = {0};
    char body[1024], k0[64], k2[64], k5[64];
    int pid = (int)getpid();
    snprintf(k0, sizeof(k0), "mix-%d-0", pid);
    snprintf(k2, sizeof(k2), "mix-%d-2", pid);
    snprintf(k5, sizeof(k5), "mix-%d-5", pid);
    snprintf(body, sizeof(body),
             "{\"id\":\"%s\",\"type\":\"page_view\",\"ts\":5}\r\n"
             "{\"type\":\"page_view\",\"ts\":\"yesterday\"}\n"
             "\n"
             "   {\"id\":\"%s\",\"type\":\"add_to_cart\",\"ts\":6,\"price\":3.10}   \n"
             "{\"type\":\"x\",\"tags\":[1,2]}\n"
             "{not json\n"
             "{\"id\":\"%s\",\"type\":\"purchase\",\"ts\":7,\"_secret\":1}\n"
             "{\"id\":\"%s\",\"type\":\"purchase\",\"ts\":7}",
             k0, k2, k5, k5);
    assert_int_equal(post(g_port, "application/x-ndjson", body, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_int(r.body.data, "accepted"), 3);
    assert_int_equal(json_int(r.body.data, "rejected"), 4);
    char ids[8][LAM_UUID_LEN + 64];
    assert_int_equal(json_ids(r.body.data, ids, 8), 3);
    assert_string_equal(ids[0], k0);
    assert_string_equal(ids[1], k2);
    assert_string_equal(ids[2], k5);
    /* blank lines do not count: indexes are positions among the non-blank lines */
    assert_non_null(strstr(r.body.data, "{\"index\":1,\"message\":\"ts: "));
    assert_non_null(strstr(r.body.data, "{\"index\":3,\"message\":\"tags: arrays are not supported\"}"));
    assert_non_null(strstr(r.body.data, "{\"index\":4,\"message\":\"event: invalid JSON"));
    assert_non_null(strstr(r.body.data, "{\"index\":5,\"message\":\"_secret: "));
    assert_null(strstr(r.body.data, "\"index\":0,"));
    assert_null(strstr(r.body.data, "\"index\":2,"));
    assert_null(strstr(r.body.data, "\"index\":6,"));
    char canon[256];
    snprintf(canon, sizeof(canon), "{\"id\":\"%s\",\"ts\":5,\"type\":\"page_view\"}", k0);
    expect_msg(k0, canon);
    snprintf(canon, sizeof(canon), "{\"id\":\"%s\",\"ts\":6,\"type\":\"add_to_cart\",\"price\":3.1}", k2);
    expect_msg(k2, canon);
    snprintf(canon, sizeof(canon), "{\"id\":\"%s\",\"ts\":7,\"type\":\"purchase\"}", k5);
    expect_msg(k5, canon);
    g_accepted += 3;
    lam_buf_free(&r.body);
}

static void test_keep_alive_pipeline_of_requests(void **st)
{
    (void)st;
    /* Several requests on one connection, each answered in order. */
    int fd = connect_port(g_port);
    assert_true(fd >= 0);
    resp_t r = {0};
    for (int i = 0; i < 20; i++) {
        char body[128], req[512];
        int bl = snprintf(body, sizeof(body), "{\"type\":\"ka\",\"i\":%d}", i);
        int rl = snprintf(req, sizeof(req),
                          "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          bl, body);
        assert_int_equal(send(fd, req, (size_t)rl, MSG_NOSIGNAL), rl);
        assert_int_equal(read_resp(fd, &r), 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(json_int(r.body.data, "accepted"), 1);
    }
    close(fd);
    g_accepted += 20;
    lam_buf_free(&r.body);
}

/* ---- the hostile table ---- */

typedef enum { B_LITERAL, B_REPEAT, B_RAW } body_kind_t;

typedef struct hostile {
    const char *name;
    int inst;            /* 0 main, 1 instance B (keys) */
    const char *method;
    const char *path;
    const char *ctype;   /* NULL: no Content-Type */
    const char *headers; /* extra header lines */
    const char *body;    /* literal body (B_LITERAL) / repeated unit (B_REPEAT) / raw request (B_RAW) */
    size_t body_len;     /* 0 = strlen(body) */
    size_t repeat;       /* B_REPEAT: times */
    body_kind_t kind;
    int status;
    const char *code;    /* expected error.code; "" = not a JSON error (documented exceptions) */
    long long accepted;  /* for 200: expected accepted count */
} hostile_t;

#define AUTH_OK "Authorization: Bearer k-two\r\n"
#define EV "{\"type\":\"a\"}"

static const hostile_t hostile[] = {
    {"text/plain", 0, "POST", "/v1/events", "text/plain", NULL, EV, 0, 0, B_LITERAL, 415, "unsupported_media_type"},
    {"no content type", 0, "POST", "/v1/events", NULL, NULL, EV, 0, 0, B_LITERAL, 415, "unsupported_media_type"},
    {"form encoded", 0, "POST", "/v1/events", "application/x-www-form-urlencoded", NULL, "type=a", 0, 0, B_LITERAL,
     415, "unsupported_media_type"},
    {"xml", 0, "POST", "/v1/events", "application/xml", NULL, "<a/>", 0, 0, B_LITERAL, 415, "unsupported_media_type"},
    {"json with latin1 charset", 0, "POST", "/v1/events", "application/json; charset=iso-8859-1", NULL, EV, 0, 0,
     B_LITERAL, 415, "unsupported_media_type"},
    {"multipart", 0, "POST", "/v1/events", "multipart/form-data; boundary=x", NULL, "--x--", 0, 0, B_LITERAL, 415,
     "unsupported_media_type"},
    {"truncated object", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\"", 0, 0, B_LITERAL, 400,
     "invalid_json"},
    {"truncated array", 0, "POST", "/v1/events", "application/json", NULL, "[{\"type\":\"a\"},", 0, 0, B_LITERAL, 400,
     "invalid_json"},
    {"empty json body", 0, "POST", "/v1/events", "application/json", NULL, "", 0, 0, B_LITERAL, 400, "empty_body"},
    {"empty ndjson body", 0, "POST", "/v1/events", "application/x-ndjson", NULL, "\n\n", 0, 0, B_LITERAL, 400,
     "no_valid_events"},
    {"scalar body", 0, "POST", "/v1/events", "application/json", NULL, "42", 0, 0, B_LITERAL, 400, "invalid_json"},
    {"null body", 0, "POST", "/v1/events", "application/json", NULL, "null", 0, 0, B_LITERAL, 400, "invalid_json"},
    {"array of scalars", 0, "POST", "/v1/events", "application/json", NULL, "[1,\"a\",null]", 0, 0, B_LITERAL, 400,
     "no_valid_events"},
    {"empty array", 0, "POST", "/v1/events", "application/json", NULL, "[]", 0, 0, B_LITERAL, 400, "no_valid_events"},
    {"NaN", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\",\"v\":NaN}", 0, 0, B_LITERAL, 400,
     "invalid_json"},
    {"Infinity in ndjson", 0, "POST", "/v1/events", "application/x-ndjson", NULL, "{\"type\":\"a\",\"v\":Infinity}", 0,
     0, B_LITERAL, 400, "no_valid_events"},
    {"invalid UTF-8", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\",\"s\":\"\xff\xfe\"}", 0, 0,
     B_LITERAL, 400, "invalid_json"},
    {"overlong UTF-8", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"\xc0\xaf\"}", 0, 0, B_LITERAL,
     400, "invalid_json"},
    {"lone surrogate escape", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"\\ud800\"}", 0, 0,
     B_LITERAL, 400, "invalid_json"},
    {"raw NUL byte", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\0\"}", 14, 0, B_LITERAL, 400,
     "invalid_json"},
    {"trailing garbage", 0, "POST", "/v1/events", "application/json", NULL, EV " x", 0, 0, B_LITERAL, 400,
     "invalid_json"},
    {"two objects as json", 0, "POST", "/v1/events", "application/json", NULL, EV EV, 0, 0, B_LITERAL, 400,
     "invalid_json"},
    {"nesting 100 deep", 0, "POST", "/v1/events", "application/json", NULL, "[", 0, 100, B_REPEAT, 400,
     "invalid_json"},
    {"object depth 5", 0, "POST", "/v1/events", "application/json", NULL,
     "{\"type\":\"a\",\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":1}}}}}}", 0, 0, B_LITERAL, 400, "no_valid_events"},
    {"array field", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\",\"t\":[]}", 0, 0, B_LITERAL,
     400, "no_valid_events"},
    {"reserved _field", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\",\"_epoch\":1}", 0, 0,
     B_LITERAL, 400, "no_valid_events"},
    {"missing type", 0, "POST", "/v1/events", "application/json", NULL, "{\"user\":\"u\"}", 0, 0, B_LITERAL, 400,
     "no_valid_events"},
    {"type not a string", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":7}", 0, 0, B_LITERAL, 400,
     "no_valid_events"},
    {"empty id", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\",\"id\":\"\"}", 0, 0, B_LITERAL,
     400, "no_valid_events"},
    {"ts a year ahead", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\",\"ts\":\"2999-01-01T00:00:00Z\"}",
     0, 0, B_LITERAL, 400, "no_valid_events"},
    {"ts garbage", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\",\"ts\":\"soon\"}", 0, 0,
     B_LITERAL, 400, "no_valid_events"},
    {"number 1e400", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\",\"v\":1e400}", 0, 0,
     B_LITERAL, 400, "no_valid_events"},
    {"duplicate type", 0, "POST", "/v1/events", "application/json", NULL, "{\"type\":\"a\",\"type\":\"b\"}", 0, 0,
     B_LITERAL, 400, "no_valid_events"},
    {"event over 64 KiB", 0, "POST", "/v1/events", "application/x-ndjson", NULL, NULL, 0, 0, B_LITERAL, 400,
     "no_valid_events"},
    {"20 MB body", 0, "POST", "/v1/events", "application/x-ndjson", NULL, EV "\n", 0, 20000000 / 13, B_REPEAT, 413,
     "payload_too_large"},
    {"chunked body over the limit", 0, "POST", "/v1/events", NULL, NULL, NULL, 0, 0, B_RAW, 413, "payload_too_large"},
    {"100k tiny events", 0, "POST", "/v1/events", "application/x-ndjson", NULL, EV "\n", 0, 100000, B_REPEAT, 200,
     NULL, 100000},
    {"100001 tiny events", 0, "POST", "/v1/events", "application/x-ndjson", NULL, EV "\n", 0, 100001, B_REPEAT, 413,
     "too_many_events"},
    {"header flood (431 from libmicrohttpd, not JSON)", 0, "POST", "/v1/events", "application/json", NULL, EV, 0, 2000,
     B_LITERAL, 431, ""},
    {"GET /v1/events", 0, "GET", "/v1/events", NULL, NULL, NULL, 0, 0, B_LITERAL, 405, "method_not_allowed"},
    {"PUT /v1/events", 0, "PUT", "/v1/events", "application/json", NULL, EV, 0, 0, B_LITERAL, 405,
     "method_not_allowed"},
    {"DELETE /v1/events", 0, "DELETE", "/v1/events", NULL, NULL, NULL, 0, 0, B_LITERAL, 405, "method_not_allowed"},
    {"POST /healthz", 0, "POST", "/healthz", "application/json", NULL, EV, 0, 0, B_LITERAL, 405,
     "method_not_allowed"},
    {"POST /metrics", 0, "POST", "/metrics", "application/json", NULL, EV, 0, 0, B_LITERAL, 405,
     "method_not_allowed"},
    {"unknown path", 0, "POST", "/v1/event", "application/json", NULL, EV, 0, 0, B_LITERAL, 404, "not_found"},
    {"trailing slash", 0, "POST", "/v1/events/", "application/json", NULL, EV, 0, 0, B_LITERAL, 404, "not_found"},
    {"root", 0, "GET", "/", NULL, NULL, NULL, 0, 0, B_LITERAL, 404, "not_found"},
    {"missing key", 1, "POST", "/v1/events", "application/json", NULL, EV, 0, 0, B_LITERAL, 401, "unauthorized"},
    {"wrong key", 1, "POST", "/v1/events", "application/json", "Authorization: Bearer k-three\r\n", EV, 0, 0,
     B_LITERAL, 401, "unauthorized"},
    {"key prefix", 1, "POST", "/v1/events", "application/json", "Authorization: Bearer k-tw\r\n", EV, 0, 0,
     B_LITERAL, 401, "unauthorized"},
    {"key with suffix", 1, "POST", "/v1/events", "application/json", "Authorization: Bearer k-two2\r\n", EV, 0, 0,
     B_LITERAL, 401, "unauthorized"},
    {"basic auth", 1, "POST", "/v1/events", "application/json", "Authorization: Basic ay10d286\r\n", EV, 0, 0,
     B_LITERAL, 401, "unauthorized"},
    {"empty bearer", 1, "POST", "/v1/events", "application/json", "Authorization: Bearer \r\n", EV, 0, 0, B_LITERAL,
     401, "unauthorized"},
    {"right key, bad body", 1, "POST", "/v1/events", "application/json", AUTH_OK, "[", 0, 0, B_LITERAL, 400,
     "invalid_json"},
    {"right key", 1, "POST", "/v1/events", "application/json", AUTH_OK, EV, 0, 0, B_LITERAL, 200, NULL, 1},
    {"second key, lower-case scheme", 1, "POST", "/v1/events", "application/json",
     "Authorization: bearer k-one\r\n", EV, 0, 0, B_LITERAL, 200, NULL, 1},
    {"healthz needs no key", 1, "GET", "/healthz", NULL, NULL, NULL, 0, 0, B_LITERAL, 200, NULL},
};

static void build_hostile(const hostile_t *h, lam_buf_t *req)
{
    lam_buf_t body = LAM_BUF_INIT;
    if (h->kind == B_RAW) {
        /* chunked upload of 17 MiB in 1 MiB chunks, limit 16 MiB */
        lam_buf_append_str(req, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        char *chunk = lam_malloc(1 << 20);
        for (size_t i = 0; i < (1 << 20); i += 13)
            memcpy(chunk + i, (1 << 20) - i >= 13 ? EV "\n" : "             ", (1 << 20) - i >= 13 ? 13 : (1 << 20) - i);
        for (int c = 0; c < 17; c++) {
            lam_buf_printf(req, "%x\r\n", 1 << 20);
            lam_buf_append(req, chunk, 1 << 20);
            lam_buf_append_str(req, "\r\n");
        }
        lam_buf_append_str(req, "0\r\n\r\n");
        lam_free(chunk);
        return;
    }
    if (!strcmp(h->name, "event over 64 KiB")) {
        lam_buf_append_str(&body, "{\"type\":\"a\",\"s\":\"");
        for (int i = 0; i < 70000; i++)
            lam_buf_append_char(&body, 'x');
        lam_buf_append_str(&body, "\"}\n");
    } else if (h->kind == B_REPEAT) {
        for (size_t i = 0; i < h->repeat; i++)
            lam_buf_append_str(&body, h->body);
    } else if (h->body) {
        lam_buf_append(&body, h->body, h->body_len ? h->body_len : strlen(h->body));
    }
    lam_buf_printf(req, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", h->method, h->path);
    if (h->ctype)
        lam_buf_printf(req, "Content-Type: %s\r\n", h->ctype);
    if (h->headers)
        lam_buf_append_str(req, h->headers);
    if (h->kind == B_LITERAL && h->repeat) /* header flood: repeat extra header lines */
        for (size_t i = 0; i < h->repeat; i++)
            lam_buf_printf(req, "X-Flood-%zu: %0100d\r\n", i, 0);
    if (h->body || body.len)
        lam_buf_printf(req, "Content-Length: %zu\r\n", body.len);
    lam_buf_append_str(req, "\r\n");
    lam_buf_append(req, body.data ? body.data : "", body.len);
    lam_buf_free(&body);
}

static void test_hostile_requests(void **st)
{
    (void)st;
    size_t n = LAM_ARRAY_SIZE(hostile), failures = 0;
    assert_true(n >= 30);
    resp_t r = {0};
    for (size_t i = 0; i < n; i++) {
        const hostile_t *h = &hostile[i];
        lam_buf_t req = LAM_BUF_INIT;
        build_hostile(h, &req);
        int64_t t0 = lam_now_mono_ms();
        int rc = raw_request(h->inst ? g_port_b : g_port, req.data, req.len, &r);
        int64_t ms = lam_now_mono_ms() - t0;
        lam_buf_free(&req);
        int ok = rc == 0 && r.status == h->status;
        if (ok && h->code)
            ok = !strcmp(r.code, h->code);
        if (ok && h->code && h->code[0])
            ok = !strncmp(r.head, "HTTP/1.1", 8) && strcasestr(r.head, "Content-Type: application/json");
        if (ok && h->status == 405)
            ok = strcasestr(r.head, "\r\nAllow: ") != NULL;
        if (ok && h->status == 401)
            ok = strcasestr(r.head, "\r\nWWW-Authenticate: Bearer") != NULL;
        if (ok && h->status == 200 && h->accepted) {
            ok = json_int(r.body.data, "accepted") == h->accepted;
            g_accepted += h->accepted;
        }
        printf("%s - hostile %2zu: %-48s -> %d %s (%lld ms)\n", ok ? "ok  " : "FAIL", i, h->name, r.status, r.code,
               (long long)ms);
        if (!ok) {
            printf("       expected %d %s; got body: %.300s\n", h->status, h->code ? h->code : "",
                   r.body.data ? r.body.data : "");
            failures++;
        }
    }
    /* Still healthy, on both instances. */
    assert_int_equal(request(g_port, "GET", "/healthz", NULL, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(request(g_port_b, "GET", "/healthz", NULL, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    lam_buf_free(&r.body);
    assert_int_equal(failures, 0);
}

static void test_metrics(void **st)
{
    (void)st;
    resp_t r = {0};
    assert_int_equal(request(g_port, "GET", "/metrics", NULL, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    const char *b = r.body.data;
    assert_non_null(strcasestr(r.head, "Content-Type: text/plain"));
    assert_non_null(strstr(b, "lam_ingest_http_requests_total{status=\"200\"} "));
    assert_non_null(strstr(b, "lam_ingest_http_requests_total{status=\"415\"} "));
    assert_non_null(strstr(b, "lam_ingest_produce_seconds_bucket{le=\"+Inf\"} "));
    assert_non_null(strstr(b, "lam_ingest_kafka_queue_messages "));
    assert_non_null(strstr(b, "lam_ingest_kafka_up 1"));
    assert_non_null(strstr(b, "lam_ingest_produced_bytes_total "));
    const char *acc = strstr(b, "\nlam_ingest_events_accepted_total ");
    assert_non_null(acc);
    assert_true(strtoll(acc + 34, NULL, 10) >= 100000);
    const char *rej = strstr(b, "\nlam_ingest_events_rejected_total ");
    assert_non_null(rej);
    assert_true(strtoll(rej + 34, NULL, 10) >= 4);
    lam_buf_free(&r.body);
}

/* Everything the instances accepted is in the topic, keyed by id, canonical, without headers. */
static void test_topic_holds_exactly_the_accepted_events(void **st)
{
    (void)st;
    char err[512];
    rd_kafka_conf_t *conf = lam_kafka_conf_new(lam_test_env("LAM_KAFKA_BROKERS", "127.0.0.1:9092"), err, sizeof(err));
    char group[128];
    snprintf(group, sizeof(group), "%s-check", g_topic);
    rd_kafka_t *c = lam_kafka_consumer_new(conf, group, err, sizeof(err));
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(parts, g_topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(c, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    long long seen = 0, with_headers = 0, wrong_partition = 0;
    int *found = lam_calloc(g_nexpect ? g_nexpect : 1, sizeof(int));
    int64_t deadline = lam_now_mono_ms() + 30000;
    while (seen < g_accepted && lam_now_mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (!m)
            continue;
        if (!m->err) {
            seen++;
            if (m->partition != partition_of(m->key, m->key_len))
                wrong_partition++;
            rd_kafka_headers_t *h;
            if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR && rd_kafka_header_cnt(h) > 0)
                with_headers++;
            for (size_t i = 0; i < g_nexpect; i++) {
                if (m->key_len != strlen(g_expect[i].key) || memcmp(m->key, g_expect[i].key, m->key_len))
                    continue;
                found[i]++;
                if (g_expect[i].value && (m->len != strlen(g_expect[i].value) ||
                                          memcmp(m->payload, g_expect[i].value, m->len))) {
                    printf("FAIL - key %s: got %.*s\n       want %s\n", g_expect[i].key, (int)m->len,
                           (const char *)m->payload, g_expect[i].value);
                    found[i] = -1000;
                }
            }
            /* every record's key is the id (JSON-escaped) at the start of its canonical form */
            lam_buf_t prefix = LAM_BUF_INIT;
            lam_buf_append_str(&prefix, "{\"id\":");
            lam_json_append_string(&prefix, m->key, m->key_len);
            lam_buf_append_char(&prefix, ',');
            if (m->len < prefix.len || memcmp(m->payload, prefix.data, prefix.len))
                found[0] = -1000;
            lam_buf_free(&prefix);
        }
        rd_kafka_message_destroy(m);
    }
    /* nothing more than accepted arrives */
    for (int i = 0; i < 5; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (m) {
            if (!m->err)
                seen++;
            rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    printf("     topic %s: %lld records, %lld accepted in responses\n", g_topic, seen, g_accepted);
    assert_int_equal(seen, g_accepted);
    assert_int_equal(with_headers, 0);
    assert_int_equal(wrong_partition, 0);
    for (size_t i = 0; i < g_nexpect; i++) {
        if (found[i] != 1)
            printf("FAIL - key %s found %d times\n", g_expect[i].key, found[i]);
        assert_int_equal(found[i], 1);
    }
    lam_free(found);
}

/* Slow or stalled clients are timed out (instance B: 1 s) and the connection limit (4) holds. */
static void test_slowloris_and_connection_limit(void **st)
{
    (void)st;
    /* 1. a stalled request line and a stalled body are both closed by the server */
    int fd = connect_port(g_port_b);
    assert_true(fd >= 0);
    const char partial[] = "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Ty";
    send(fd, partial, sizeof(partial) - 1, MSG_NOSIGNAL);
    int fd2 = connect_port(g_port_b);
    assert_true(fd2 >= 0);
    const char partial_body[] = "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                "Authorization: Bearer k-one\r\nContent-Length: 100\r\n\r\n{\"type\":";
    send(fd2, partial_body, sizeof(partial_body) - 1, MSG_NOSIGNAL);
    int64_t t0 = lam_now_mono_ms();
    char buf[4096];
    struct pollfd pf = {fd, POLLIN, 0};
    assert_int_equal(poll(&pf, 1, 6000), 1);
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    int64_t closed_ms = lam_now_mono_ms() - t0;
    printf("     stalled headers closed after %lld ms (recv %zd)\n", (long long)closed_ms, n);
    assert_true(n <= 0 || strncmp(buf, "HTTP/1.1 200", 12) != 0);
    assert_true(closed_ms < 5000);
    pf.fd = fd2;
    assert_int_equal(poll(&pf, 1, 6000), 1);
    n = recv(fd2, buf, sizeof(buf) - 1, 0);
    if (n > 0) {
        buf[n] = '\0';
        assert_null(strstr(buf, " 200 "));
    }
    close(fd);
    close(fd2);

    /* 2. the connection limit: 4 idle connections hold every slot, a 5th client is not served... */
    int idle[4];
    for (int i = 0; i < 4; i++) {
        idle[i] = connect_port(g_port_b);
        assert_true(idle[i] >= 0);
    }
    usleep(200000);
    /* ...the 5th waits (MHD stops accepting at the limit, the client sits in the backlog) until the
     * idle ones time out after 1 s; then it is served */
    resp_t r = {0};
    t0 = lam_now_mono_ms();
    int rc = request(g_port_b, "GET", "/healthz", NULL, NULL, NULL, 0, &r);
    int64_t waited = lam_now_mono_ms() - t0;
    printf("     5th connection over the limit: rc=%d status=%d after %lld ms\n", rc, r.status, (long long)waited);
    assert_true(rc < 0 || waited >= 400);
    t0 = lam_now_mono_ms();
    int served = 0;
    while (lam_now_mono_ms() - t0 < 8000) {
        if (request(g_port_b, "GET", "/healthz", NULL, NULL, NULL, 0, &r) == 0 && r.status == 200) {
            served = 1;
            break;
        }
        usleep(200000);
    }
    assert_true(served);
    for (int i = 0; i < 4; i++)
        close(idle[i]);
    lam_buf_free(&r.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_object_canonical),
        cmocka_unit_test(test_reply_ids_escaped),
        cmocka_unit_test(test_array_generates_uuid7_ids),
        cmocka_unit_test(test_generated_ids_share_a_partition),
        cmocka_unit_test(test_mixed_ndjson_reports_bad_lines_by_index),
        cmocka_unit_test(test_keep_alive_pipeline_of_requests),
        cmocka_unit_test(test_hostile_requests),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_topic_holds_exactly_the_accepted_events),
        cmocka_unit_test(test_slowloris_and_connection_limit),
    };
    return cmocka_run_group_tests_name("itest_ingest", tests, setup, teardown);
}
