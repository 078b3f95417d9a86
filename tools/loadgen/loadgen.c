/* loadgen.c - send a clickstream to ingest at a target rate over keep-alive HTTP/1.1; retry 503s. */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "lam_buf.h"
#include "lam_json.h"
#include "lam_mem.h"
#include "lam_uuid.h"
#include "loadgen.h"

typedef struct options {
    char host[256];
    char port[16];
    char path[256];
    double rate;          /* events/s, 0 = as fast as possible */
    double duration_s;    /* 0 = until count */
    long long count;      /* live events, -1 = until duration */
    int batch;
    int connections;
    int backfill_days;
    long long backfill_per_day;
    double late_rate, dup_rate;
    unsigned long long seed;
    const char *out;
    const char *key;
    int progress;
    int rhythm;
    int max_retries;
    int quiet;
    int verbose;
    int server_ids;       /* send events without ids: ingest generates them (retries carry them) */
    int prebuild;         /* generate every request body before the clock starts */
} options_t;

static options_t opt = {.host = "127.0.0.1", .port = "8081", .path = "/v1/events", .rate = 1000, .count = -1,
                        .batch = 100, .connections = 4, .backfill_per_day = 2000, .seed = 1, .max_retries = 30};

static struct {
    atomic_llong live_reserved, backfill_reserved;
    atomic_llong sent, acked, rejected, retried, failed, dups, requests, http_errors;
    atomic_int stop;      /* stop generating (SIGINT, count or duration reached) */
    atomic_int abort_now; /* second SIGINT: give up on retries */
    int phase;            /* 0 backfill, 1 live */
    int64_t start_ns, live_start_ns, end_ns, done_ns;
    double cpu_start, cpu_done; /* loadgen's CPU seconds (user + system) at start_ns and done_ns */
    long long backfill_total;
    pthread_mutex_t out_lock;
    FILE *out;
    char first_error[300];
} g;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ns(int64_t ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    nanosleep(&ts, NULL);
}

static void on_sigint(int sig)
{
    (void)sig;
    if (atomic_exchange(&g.stop, 1))
        atomic_store(&g.abort_now, 1);
}

static void note_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_error(const char *fmt, ...)
{
    pthread_mutex_lock(&g.out_lock);
    if (!g.first_error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g.first_error, sizeof(g.first_error), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&g.out_lock);
}

/* ---- a small HTTP/1.1 client: one keep-alive connection per worker ---- */

typedef struct conn {
    int fd;
    char *rbuf;
    size_t rlen, rcap;
} conn_t;

static int conn_open(conn_t *c)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(opt.host, opt.port, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {60, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    c->fd = fd;
    c->rlen = 0;
    return 0;
}

static void conn_close(conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->rlen = 0;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_head_body(int fd, const char *head, size_t hl, const char *body, size_t bl)
{
    struct iovec iov[2] = {{(void *)head, hl}, {(void *)body, bl}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t w;
    do
        w = sendmsg(fd, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return -1;
    size_t sent = (size_t)w;
    if (sent < hl)
        return send_all(fd, head + sent, hl - sent) < 0 ? -1 : send_all(fd, body, bl);
    return send_all(fd, body + (sent - hl), bl - (sent - hl));
}

static int fill(conn_t *c)
{
    if (c->rlen + 4096 > c->rcap) {
        c->rcap = c->rcap ? c->rcap * 2 : 65536;
        c->rbuf = lam_realloc(c->rbuf, c->rcap + 1);
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c->rlen += (size_t)r;
        c->rbuf[c->rlen] = '\0';
        return 0;
    }
}

typedef struct http_resp {
    int status;
    const char *body; /* points into the connection buffer until the next request */
    size_t body_len;
    int retry_after;
} http_resp_t;

/* POST body; -1 on a connection problem (the caller reconnects and retries). */
static int http_post(conn_t *c, const char *ctype, const lam_buf_t *body, http_resp_t *resp)
{
    errno = 0;
    if (c->fd < 0 && conn_open(c) < 0)
        return -1;
    char head[1024];
    int hl = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                      opt.path, opt.host, opt.port, ctype, body->len, opt.key ? "Authorization: Bearer " : "",
                      opt.key ? opt.key : "", opt.key ? "\r\n" : "");
    /* Head and body in one segment when they fit in one write: half the syscalls per request. */
    if (send_head_body(c->fd, head, (size_t)hl, body->data, body->len) < 0) {
        conn_close(c);
        return -1;
    }
    c->rlen = 0; /* one request at a time: nothing of an earlier answer is left to read */
    if (c->rbuf)
        c->rbuf[0] = '\0';
    char *eoh;
    while (!(c->rlen && (eoh = strstr(c->rbuf, "\r\n\r\n")))) {
        if (fill(c) < 0) {
            conn_close(c);
            return -1;
        }
    }
    size_t hdr_len = (size_t)(eoh - c->rbuf) + 4;
    memset(resp, 0, sizeof(*resp));
    if (sscanf(c->rbuf, "HTTP/1.%*d %d", &resp->status) != 1) {
        conn_close(c);
        return -1;
    }
    size_t clen = 0;
    int close_after = 0;
    for (char *line = strstr(c->rbuf, "\r\n") + 2; line < eoh; line = strstr(line, "\r\n") + 2) {
        if (!strncasecmp(line, "Content-Length:", 15))
            clen = strtoull(line + 15, NULL, 10);
        else if (!strncasecmp(line, "Retry-After:", 12))
            resp->retry_after = atoi(line + 12);
        else if (!strncasecmp(line, "Connection:", 11) && strstr(line, "close") && strstr(line, "close") < strstr(line, "\r\n"))
            close_after = 1;
    }
    while (c->rlen < hdr_len + clen) {
        if (fill(c) < 0) {
            conn_close(c);
            return -1;
        }
    }
    resp->body = c->rbuf + hdr_len;
    resp->body_len = clen;
    if (close_after) {
        /* keep the bytes: the body stays readable, the socket goes */
        close(c->fd);
        c->fd = -1;
    }
    return 0;
}

/* ---- response parsing: mark events rejected (errors) and not acknowledged (503) by index ---- */

enum { EV_PENDING = 0, EV_ACKED, EV_REJECTED, EV_RETRY };

/* For each {"index":i,...} in the top-level array named `field`, set state[i] = mark. */
static int mark_indexes(const char *body, size_t len, const char *field, uint8_t *state, size_t n, uint8_t mark)
{
    lam_json_t j;
    lam_json_init(&j, body, len, 0);
    if (lam_json_next(&j) != LAM_JSON_OBJECT)
        return -1;
    size_t flen = strlen(field);
    int found = 0;
    for (;;) {
        lam_json_tok_t t = lam_json_next(&j);
        if (t == LAM_JSON_OBJECT_END || t == LAM_JSON_EOF)
            break;
        if (t != LAM_JSON_KEY)
            return -1;
        int want = j.tok_len == flen && !memcmp(j.tok, field, flen);
        t = lam_json_next(&j);
        if (!want || t != LAM_JSON_ARRAY) {
            if (lam_json_skip(&j, t) < 0)
                return -1;
            continue;
        }
        found = 1;
        for (;;) {
            t = lam_json_next(&j);
            if (t == LAM_JSON_ARRAY_END)
                break;
            if (t != LAM_JSON_OBJECT)
                return -1;
            for (;;) {
                t = lam_json_next(&j);
                if (t == LAM_JSON_OBJECT_END)
                    break;
                if (t != LAM_JSON_KEY)
                    return -1;
                int is_index = j.tok_len == 5 && !memcmp(j.tok, "index", 5);
                t = lam_json_next(&j);
                if (is_index && t == LAM_JSON_NUMBER) {
                    unsigned long long i = strtoull(j.tok, NULL, 10);
                    if (i < n)
                        state[i] = mark;
                } else if (lam_json_skip(&j, t) < 0) {
                    return -1;
                }
            }
        }
    }
    return found ? 0 : -1;
}

/* 1 when the body's last member is an empty "errors" array (ingest's 200 without rejections). */
static int errors_empty(const char *body, size_t len)
{
    static const char tail[] = "\"errors\":[]}";
    while (len && (body[len - 1] == '\n' || body[len - 1] == ' ' || body[len - 1] == '\r'))
        len--;
    return len >= sizeof(tail) - 1 && !memcmp(body + len - (sizeof(tail) - 1), tail, sizeof(tail) - 1);
}

/* --server-ids: the ids ingest gave the events sent, from a 200 or 503 answer: "ids" lists the
 * acknowledged events' ids in input order (state[k] == EV_ACKED), "not_acknowledged" the others'
 * by index. ids[k] receives the id of body event k. */
static void take_ids(const char *body, size_t len, const uint8_t *state, size_t n, char (*ids)[LAM_UUID_LEN + 1])
{
    lam_json_t j;
    lam_json_init(&j, body, len, 0);
    if (lam_json_next(&j) != LAM_JSON_OBJECT)
        return;
    for (;;) {
        lam_json_tok_t t = lam_json_next(&j);
        if (t != LAM_JSON_KEY)
            return;
        int is_ids = j.tok_len == 3 && !memcmp(j.tok, "ids", 3);
        int is_nack = j.tok_len == 16 && !memcmp(j.tok, "not_acknowledged", 16);
        t = lam_json_next(&j);
        if (is_ids && t == LAM_JSON_ARRAY) {
            size_t k = 0;
            while ((t = lam_json_next(&j)) == LAM_JSON_STRING) {
                while (k < n && state[k] != EV_ACKED)
                    k++;
                if (k < n && j.tok_len == LAM_UUID_LEN) {
                    memcpy(ids[k], j.tok, LAM_UUID_LEN);
                    ids[k++][LAM_UUID_LEN] = '\0';
                }
            }
            if (t != LAM_JSON_ARRAY_END)
                return;
        } else if (is_nack && t == LAM_JSON_ARRAY) {
            while ((t = lam_json_next(&j)) == LAM_JSON_OBJECT) {
                unsigned long long index = n;
                char id[LAM_UUID_LEN + 1] = "";
                while ((t = lam_json_next(&j)) == LAM_JSON_KEY) {
                    int is_index = j.tok_len == 5 && !memcmp(j.tok, "index", 5);
                    int is_id = j.tok_len == 2 && !memcmp(j.tok, "id", 2);
                    t = lam_json_next(&j);
                    if (is_index && t == LAM_JSON_NUMBER)
                        index = strtoull(j.tok, NULL, 10);
                    else if (is_id && t == LAM_JSON_STRING && j.tok_len == LAM_UUID_LEN) {
                        memcpy(id, j.tok, LAM_UUID_LEN);
                        id[LAM_UUID_LEN] = '\0';
                    } else if (lam_json_skip(&j, t) < 0)
                        return;
                }
                if (index < n && id[0])
                    memcpy(ids[index], id, sizeof(id));
            }
            if (t != LAM_JSON_ARRAY_END)
                return;
        } else if (lam_json_skip(&j, t) < 0) {
            return;
        }
    }
}

/* ---- workers ---- */

/*
 * --prebuild: every live request body made before the clock starts. Batch k holds events
 * [k * batch, ...) from the generator of connection k % connections; events are stored as sent
 * on a first attempt (each followed by a newline in bulk mode), so the buffer is the body. After
 * the run, state (and sid with --server-ids) hold each event's outcome for --out.
 */
typedef struct prebatch {
    lam_buf_t events;
    size_t *off, *len;
    size_t n;
    uint8_t *state;
    char (*sid)[LAM_UUID_LEN + 1];
} prebatch_t;

static prebatch_t *pre;
static size_t npre;
static atomic_llong pre_next;

typedef struct worker {
    int index;
    pthread_t thread;
    lg_gen_t gen;
    conn_t conn;
    lam_buf_t events;   /* the batch's events, back to back */
    size_t *off, *len;  /* per event */
    uint8_t *state;
    uint8_t *st;        /* per attempt: the answer for each event sent */
    size_t *map;        /* body position -> event */
    char (*sid)[LAM_UUID_LEN + 1]; /* --server-ids: the id ingest gave each event ("" = none yet) */
    char (*bid)[LAM_UUID_LEN + 1]; /* per attempt: ids for the events of the body */
    size_t cap;
    lam_buf_t body;
} worker_t;

/* --server-ids: drop the "id" member the generator put first (events[start..]). */
static void strip_id(lam_buf_t *events, size_t start)
{
    static const char head[] = "{\"id\":\"";
    size_t idlen = sizeof(head) - 1 + LAM_UUID_LEN + 2; /* "id":"<uuid>", */
    char *e = events->data + start;
    size_t len = events->len - start;
    if (len <= idlen || memcmp(e, head, sizeof(head) - 1) || memcmp(e + idlen - 2, "\",", 2))
        return;
    memmove(e + 1, e + idlen, len - idlen);
    events->len -= idlen - 1;
}

/* Append n new events to ev (cleared first), event i at off[i] with length len[i], each followed by
 * a newline in bulk mode: ev is then the body of the first attempt. ts < 0: backfill times. */
static void gen_events(lg_gen_t *gen, size_t n, int64_t ts, int64_t wall_now, lam_buf_t *ev, size_t *off, size_t *len)
{
    lam_buf_clear(ev);
    long long dups = 0;
    for (size_t i = 0; i < n; i++) {
        off[i] = ev->len;
        dups += lg_gen_event(gen, ts < 0 ? lg_gen_backfill_ts(gen, wall_now, opt.backfill_days) : ts, ev);
        if (opt.server_ids)
            strip_id(ev, off[i]);
        len[i] = ev->len - off[i];
        if (opt.batch > 1)
            lam_buf_append_char(ev, '\n');
    }
    atomic_fetch_add(&g.dups, dups);
}

/* Reserve up to want events from a budget (total < 0: unbounded); 0 when it is used up. */
static size_t reserve(atomic_llong *counter, long long total, size_t want, long long *first)
{
    long long old = atomic_fetch_add(counter, (long long)want);
    *first = old;
    if (total >= 0 && old >= total)
        return 0;
    if (total >= 0 && old + (long long)want > total)
        return (size_t)(total - old);
    return want;
}

/* Event i of events/off/len as sent: with --server-ids and an id from ingest, that id goes first. */
static void append_event(const lam_buf_t *events, const size_t *off, const size_t *len,
                         char (*sid)[LAM_UUID_LEN + 1], size_t i, lam_buf_t *out)
{
    const char *e = events->data + off[i];
    if (opt.server_ids && sid[i][0]) {
        lam_buf_append_str(out, "{\"id\":\"");
        lam_buf_append(out, sid[i], LAM_UUID_LEN);
        lam_buf_append_str(out, len[i] > 2 ? "\"," : "\"");
        lam_buf_append(out, e + 1, len[i] - 1);
    } else {
        lam_buf_append(out, e, len[i]);
    }
}

/* --out: the acknowledged events of a batch (state[i] == EV_ACKED), one a line. */
static void write_acked(const lam_buf_t *events, const size_t *off, const size_t *len, const uint8_t *state,
                        char (*sid)[LAM_UUID_LEN + 1], size_t n)
{
    if (!g.out)
        return;
    lam_buf_t line = LAM_BUF_INIT;
    pthread_mutex_lock(&g.out_lock);
    for (size_t i = 0; i < n; i++) {
        if (state[i] != EV_ACKED)
            continue;
        lam_buf_clear(&line);
        append_event(events, off, len, sid, i, &line);
        lam_buf_append_char(&line, '\n');
        fwrite(line.data, 1, line.len, g.out);
    }
    pthread_mutex_unlock(&g.out_lock);
    lam_buf_free(&line);
}

/* Send events [0..n) until each is acknowledged or rejected, retrying 503s with the same ids. */
static void send_batch(worker_t *w, size_t n)
{
    memset(w->state, EV_PENDING, n);
    int64_t backoff_ms = 100;
    for (int attempt = 0;; attempt++) {
        size_t m = 0;
        const lam_buf_t *body = &w->body;
        if (attempt == 0) {
            /* gen_events() laid the events out as the body of the first attempt: sent as they are */
            for (; m < n; m++)
                w->map[m] = m;
            body = &w->events;
        } else {
            lam_buf_clear(&w->body);
            for (size_t i = 0; i < n; i++) {
                if (w->state[i] != EV_PENDING && w->state[i] != EV_RETRY)
                    continue;
                w->state[i] = EV_PENDING;
                if (m)
                    lam_buf_append_char(&w->body, '\n');
                append_event(&w->events, w->off, w->len, w->sid, i, &w->body);
                w->map[m++] = i;
            }
            if (opt.batch > 1)
                lam_buf_append_char(&w->body, '\n');
        }
        if (!m)
            break;
        if (attempt > 0)
            atomic_fetch_add(&g.retried, (long long)m);
        if (attempt > opt.max_retries || (attempt > 0 && atomic_load(&g.abort_now))) {
            atomic_fetch_add(&g.failed, (long long)m);
            break;
        }
        http_resp_t r;
        atomic_fetch_add(&g.requests, 1);
        if (http_post(&w->conn, opt.batch > 1 ? "application/x-ndjson" : "application/json", body, &r) < 0) {
            atomic_fetch_add(&g.http_errors, 1);
            note_error("connection to %s:%s failed: %s", opt.host, opt.port, errno ? strerror(errno) : "closed");
            if (opt.verbose)
                fprintf(stderr, "loadgen: connection to %s:%s failed (attempt %d): %s\n", opt.host, opt.port,
                        attempt, errno ? strerror(errno) : "closed");
            sleep_ns(backoff_ms * 1000000);
            backoff_ms = backoff_ms * 2 > 2000 ? 2000 : backoff_ms * 2;
            continue;
        }
        if (opt.verbose && r.status != 200)
            fprintf(stderr, "loadgen: HTTP %d (attempt %d): %.*s\n", r.status, attempt,
                    (int)(r.body_len > 300 ? 300 : r.body_len), r.body);
        uint8_t *st = w->st;
        memset(st, EV_ACKED, m);
        if (r.status == 200) {
            /* ingest ends a 200 with "errors":[...]}: only parse the ids when there are errors */
            if (!errors_empty(r.body, r.body_len))
                mark_indexes(r.body, r.body_len, "errors", st, m, EV_REJECTED);
        } else if (r.status == 503) {
            mark_indexes(r.body, r.body_len, "errors", st, m, EV_REJECTED);
            if (mark_indexes(r.body, r.body_len, "not_acknowledged", st, m, EV_RETRY) < 0)
                memset(st, EV_RETRY, m);
        } else if (r.status == 400 && r.body_len && memmem(r.body, r.body_len, "no_valid_events", 15)) {
            memset(st, EV_REJECTED, m);
        } else {
            note_error("HTTP %d: %.*s", r.status, (int)(r.body_len > 200 ? 200 : r.body_len), r.body);
            atomic_fetch_add(&g.http_errors, 1);
            memset(st, r.status >= 500 ? EV_RETRY : EV_REJECTED, m);
            if (r.status < 500)
                atomic_fetch_add(&g.failed, (long long)m), memset(st, 0xff, m);
        }
        if (opt.server_ids && (r.status == 200 || r.status == 503)) {
            memset(w->bid, 0, m * sizeof(*w->bid));
            take_ids(r.body, r.body_len, st, m, w->bid);
            for (size_t k = 0; k < m; k++)
                if (w->bid[k][0] && !w->sid[w->map[k]][0])
                    memcpy(w->sid[w->map[k]], w->bid[k], sizeof(*w->bid));
        }
        int retry = 0;
        long long acked = 0, rejected = 0;
        for (size_t k = 0; k < m; k++) {
            size_t i = w->map[k];
            w->state[i] = st[k];
            if (st[k] == EV_ACKED)
                acked++;
            else if (st[k] == EV_REJECTED)
                rejected++;
            else if (st[k] == EV_RETRY)
                retry = 1;
        }
        atomic_fetch_add(&g.acked, acked);
        atomic_fetch_add(&g.rejected, rejected);
        if (!retry)
            break;
        int64_t wait = r.retry_after > 0 ? r.retry_after * 1000LL : backoff_ms;
        if (wait > backoff_ms)
            wait = backoff_ms; /* Retry-After is a hint; back off from 100 ms up to it */
        sleep_ns(wait * 1000000);
        backoff_ms = backoff_ms * 2 > 2000 ? 2000 : backoff_ms * 2;
    }
    if (!opt.prebuild) /* --prebuild writes --out after the clock stops */
        write_acked(&w->events, w->off, w->len, w->state, w->sid, n);
}

static void ensure_cap(worker_t *w, size_t n)
{
    if (n <= w->cap)
        return;
    w->cap = n;
    w->off = lam_realloc(w->off, n * sizeof(size_t));
    w->len = lam_realloc(w->len, n * sizeof(size_t));
    w->map = lam_realloc(w->map, n * sizeof(size_t));
    w->state = lam_realloc(w->state, n);
    w->st = lam_realloc(w->st, n);
    w->sid = lam_realloc(w->sid, n * sizeof(*w->sid));
    w->bid = lam_realloc(w->bid, n * sizeof(*w->bid));
}

/* Exchange the worker's events with a prebuilt batch's (buffers and arrays, no copies). */
static void prebatch_swap(worker_t *w, prebatch_t *pb)
{
    lam_buf_t e = w->events;
    w->events = pb->events;
    pb->events = e;
    size_t *p = w->off;
    w->off = pb->off;
    pb->off = p;
    p = w->len;
    w->len = pb->len;
    pb->len = p;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    ensure_cap(w, (size_t)opt.batch);
    int64_t wall_now = wall_ms();
    long long old;
    /* 1. backfill: history with past timestamps, as fast as ingest takes it */
    while (g.phase == 0 && !atomic_load(&g.stop)) {
        size_t n = reserve(&g.backfill_reserved, g.backfill_total, (size_t)opt.batch, &old);
        if (!n)
            break;
        gen_events(&w->gen, n, -1, wall_now, &w->events, w->off, w->len);
        for (size_t i = 0; i < n; i++)
            w->sid[i][0] = '\0';
        atomic_fetch_add(&g.sent, (long long)n);
        send_batch(w, n);
    }
    /* 2. live traffic at the target rate */
    while (g.phase == 1 && !atomic_load(&g.stop)) {
        size_t n;
        prebatch_t *pb = NULL;
        if (opt.prebuild) {
            long long k = atomic_fetch_add(&pre_next, 1);
            if (k >= (long long)npre)
                break;
            pb = &pre[k];
            n = pb->n;
            old = k * opt.batch;
        } else if (!(n = reserve(&g.live_reserved, opt.count, (size_t)opt.batch, &old))) {
            break;
        }
        if (opt.rate > 0) {
            /* constant-rate schedule: event k is due at live_start + k / rate */
            double r = opt.rate * (opt.rhythm ? lg_rhythm(wall_ms()) : 1.0);
            int64_t due = g.live_start_ns + (int64_t)((double)old * 1e9 / r);
            while (!atomic_load(&g.stop)) {
                int64_t d = due - now_ns();
                if (d <= 0)
                    break;
                sleep_ns(d > 100000000 ? 100000000 : d);
            }
            if (atomic_load(&g.stop))
                break;
        }
        if (g.end_ns && now_ns() >= g.end_ns)
            break;
        if (pb) { /* the prebuilt batch becomes the worker's for the request, then goes back */
            prebatch_swap(w, pb);
        } else {
            gen_events(&w->gen, n, wall_ms(), 0, &w->events, w->off, w->len);
        }
        for (size_t i = 0; i < n; i++)
            w->sid[i][0] = '\0';
        atomic_fetch_add(&g.sent, (long long)n);
        send_batch(w, n);
        if (pb) {
            prebatch_swap(w, pb);
            if (g.out) { /* the outcome, for --out after the clock */
                pb->state = lam_malloc(n);
                memcpy(pb->state, w->state, n);
                if (opt.server_ids) {
                    pb->sid = lam_malloc(n * sizeof(*pb->sid));
                    memcpy(pb->sid, w->sid, n * sizeof(*pb->sid));
                }
            }
        }
    }
    return NULL;
}

/* --prebuild, one thread per connection: batches k = index, index + connections, ... from this
 * connection's generator, all with the time of the build as their event time. */
static void *prebuild_main(void *arg)
{
    worker_t *w = arg;
    int64_t ts = wall_ms();
    for (size_t k = (size_t)w->index; k < npre; k += (size_t)opt.connections) {
        prebatch_t *pb = &pre[k];
        long long left = opt.count - (long long)k * opt.batch;
        pb->n = left < opt.batch ? (size_t)left : (size_t)opt.batch;
        pb->off = lam_malloc(pb->n * sizeof(size_t));
        pb->len = lam_malloc(pb->n * sizeof(size_t));
        gen_events(&w->gen, pb->n, ts, 0, &pb->events, pb->off, pb->len);
    }
    return NULL;
}

static void print_progress(int final, FILE *f, int tty)
{
    double s = (double)((g.done_ns ? g.done_ns : now_ns()) - g.start_ns) / 1e9;
    long long acked = atomic_load(&g.acked);
    fprintf(f, "%sloadgen: %s sent=%lld acknowledged=%lld rejected=%lld retried=%lld failed=%lld dups=%lld "
               "requests=%lld seconds=%.1f rate=%.0f/s",
            tty && !final ? "\r" : "", final ? "done" : "running", atomic_load(&g.sent), acked,
            atomic_load(&g.rejected), atomic_load(&g.retried), atomic_load(&g.failed), atomic_load(&g.dups),
            atomic_load(&g.requests), s, s > 0 ? (double)acked / s : 0.0);
    if (final) /* loadgen's own CPU while the clock ran (a --prebuild's generation is not in it) */
        fprintf(f, " cpu=%.2fs", g.cpu_done - g.cpu_start);
    fputs(tty && !final ? "   " : "\n", f);
    fflush(f);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen [options]\n"
            "  --url URL             ingest base or events URL (default http://127.0.0.1:8081/v1/events)\n"
            "  --rate N              target events/s (default 1000; 0 = as fast as possible)\n"
            "  --duration S          live phase length in seconds\n"
            "  --count N             live events to send (default: until --duration; 0 = none)\n"
            "  --batch N             events per request: N>1 NDJSON bulk, 1 = single JSON object (default 100)\n"
            "  --connections C       concurrent keep-alive connections (default 4)\n"
            "  --backfill-days D     first send history spread over the last D days (daily rhythm)\n"
            "  --backfill-per-day N  backfill events per day (default 2000)\n"
            "  --late-rate F         fraction of live events 1 min..2 h late (default 0)\n"
            "  --dup-rate F          fraction of events re-sent with an earlier id (client retries)\n"
            "  --rhythm              modulate the live rate by the hour of day\n"
            "  --seed N              PRNG seed (default 1)\n"
            "  --key KEY             Authorization: Bearer KEY (default $LAM_INGEST_KEY)\n"
            "  --out FILE            write every acknowledged event as NDJSON, exactly as sent\n"
            "  --server-ids          send events without ids: ingest generates them; retries and\n"
            "                        --out carry the id ingest gave (not with --dup-rate)\n"
            "  --max-retries N       retries of one event before giving up (default 30)\n"
            "  --prebuild            generate every request body (with --count) before the clock starts, so\n"
            "                        the rate measures sending only; --out is written after the clock stops\n"
            "                        (holds all the events in memory: ~210 bytes each)\n"
            "  --progress            progress line every second even when stderr is not a TTY\n"
            "  --quiet               no progress line\n"
            "  --verbose             log every non-200 answer and connection failure\n"
            "Stops after --count/--duration or on SIGINT; prints a summary on stdout.\n"
            "Exit status: 0 all acknowledged or rejected, 1 some events failed, 2 usage.\n");
}

static int parse_url(const char *url)
{
    const char *p = url;
    if (!strncmp(p, "http://", 7))
        p += 7;
    else if (strstr(p, "://"))
        return -1;
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    char hostport[300];
    if (hl == 0 || hl >= sizeof(hostport))
        return -1;
    memcpy(hostport, p, hl);
    hostport[hl] = '\0';
    char *colon = strrchr(hostport, ':');
    if (colon) {
        *colon = '\0';
        snprintf(opt.port, sizeof(opt.port), "%s", colon + 1);
    } else {
        snprintf(opt.port, sizeof(opt.port), "80");
    }
    snprintf(opt.host, sizeof(opt.host), "%s", hostport);
    if (slash && strcmp(slash, "/"))
        snprintf(opt.path, sizeof(opt.path), "%s", slash);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"url", required_argument, 0, 'u'},          {"rate", required_argument, 0, 'r'},
        {"duration", required_argument, 0, 'd'},     {"count", required_argument, 0, 'n'},
        {"batch", required_argument, 0, 'b'},        {"connections", required_argument, 0, 'c'},
        {"backfill-days", required_argument, 0, 'B'}, {"backfill-per-day", required_argument, 0, 'P'},
        {"late-rate", required_argument, 0, 'L'},    {"dup-rate", required_argument, 0, 'D'},
        {"seed", required_argument, 0, 's'},         {"out", required_argument, 0, 'o'},
        {"key", required_argument, 0, 'k'},          {"progress", no_argument, 0, 'p'},
        {"rhythm", no_argument, 0, 'R'},             {"max-retries", required_argument, 0, 'M'},
        {"quiet", no_argument, 0, 'q'},              {"help", no_argument, 0, 'h'},
        {"verbose", no_argument, 0, 'V'},           {"server-ids", no_argument, 0, 'I'},
        {"prebuild", no_argument, 0, 'X'},
        {0, 0, 0, 0}};
    opt.key = getenv("LAM_INGEST_KEY");
    int c;
    char *end;
#define NUM(dst, conv, cond)                                                                                  \
    do {                                                                                                      \
        errno = 0;                                                                                            \
        dst = conv;                                                                                           \
        if (errno || *end || !(cond)) {                                                                       \
            fprintf(stderr, "loadgen: --%s: bad value \"%s\"\n", longopts[idx].name, optarg);                 \
            return 2;                                                                                         \
        }                                                                                                     \
    } while (0)
    int idx = 0;
    while ((c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
        switch (c) {
        case 'u':
            if (parse_url(optarg) < 0) {
                fprintf(stderr, "loadgen: --url: expected http://host:port[/path], got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'r': NUM(opt.rate, strtod(optarg, &end), opt.rate >= 0); break;
        case 'd': NUM(opt.duration_s, strtod(optarg, &end), opt.duration_s > 0); break;
        case 'n': NUM(opt.count, strtoll(optarg, &end, 10), opt.count >= 0); break;
        case 'b': NUM(opt.batch, (int)strtol(optarg, &end, 10), opt.batch >= 1 && opt.batch <= 100000); break;
        case 'c': NUM(opt.connections, (int)strtol(optarg, &end, 10), opt.connections >= 1 && opt.connections <= 1024); break;
        case 'B': NUM(opt.backfill_days, (int)strtol(optarg, &end, 10), opt.backfill_days >= 0 && opt.backfill_days <= 3650); break;
        case 'P': NUM(opt.backfill_per_day, strtoll(optarg, &end, 10), opt.backfill_per_day >= 0); break;
        case 'L': NUM(opt.late_rate, strtod(optarg, &end), opt.late_rate >= 0 && opt.late_rate <= 1); break;
        case 'D': NUM(opt.dup_rate, strtod(optarg, &end), opt.dup_rate >= 0 && opt.dup_rate < 1); break;
        case 's': NUM(opt.seed, strtoull(optarg, &end, 10), 1); break;
        case 'M': NUM(opt.max_retries, (int)strtol(optarg, &end, 10), opt.max_retries >= 0); break;
        case 'o': opt.out = optarg; break;
        case 'k': opt.key = optarg; break;
        case 'p': opt.progress = 1; break;
        case 'R': opt.rhythm = 1; break;
        case 'q': opt.quiet = 1; break;
        case 'V': opt.verbose = 1; break;
        case 'I': opt.server_ids = 1; break;
        case 'X': opt.prebuild = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loadgen: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (opt.count < 0 && opt.duration_s <= 0) {
        fprintf(stderr, "loadgen: give --count N or --duration S (it must stop on its own)\n");
        return 2;
    }
    if (opt.prebuild && (opt.count <= 0 || opt.duration_s > 0 || opt.backfill_days > 0)) {
        fprintf(stderr, "loadgen: --prebuild needs --count N (and no --duration or --backfill-days)\n");
        return 2;
    }
    if (opt.key && !*opt.key)
        opt.key = NULL;
    if (opt.server_ids && opt.dup_rate > 0) {
        fprintf(stderr, "loadgen: --server-ids and --dup-rate: a re-sent event needs the id ingest gave it\n");
        return 2;
    }

    pthread_mutex_init(&g.out_lock, NULL);
    if (opt.out) {
        g.out = fopen(opt.out, "w");
        if (!g.out) {
            fprintf(stderr, "loadgen: --out %s: %s\n", opt.out, strerror(errno));
            return 2;
        }
    }
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lg_catalogue_init(50000, 2000, 600);
    g.backfill_total = (long long)opt.backfill_days * opt.backfill_per_day;
    worker_t *ws = lam_calloc((size_t)opt.connections, sizeof(worker_t));
    for (int i = 0; i < opt.connections; i++) {
        ws[i].index = i;
        ws[i].conn.fd = -1;
        lg_gen_init(&ws[i].gen, opt.seed, i, opt.late_rate, opt.dup_rate);
        ensure_cap(&ws[i], (size_t)opt.batch);
    }
    if (opt.prebuild) { /* before the clock */
        npre = (size_t)((opt.count + opt.batch - 1) / opt.batch);
        pre = lam_calloc(npre, sizeof(*pre));
        for (int i = 0; i < opt.connections; i++)
            pthread_create(&ws[i].thread, NULL, prebuild_main, &ws[i]);
        for (int i = 0; i < opt.connections; i++)
            pthread_join(ws[i].thread, NULL);
    }
    g.cpu_start = cpu_s();
    g.start_ns = now_ns();
    g.live_start_ns = g.start_ns; /* reset when the backfill is done, see below */
    int tty = isatty(2);
    int show = !opt.quiet && (tty || opt.progress);

    /* Backfill first (all connections), then the live phase. */
    for (int phase = 0; phase < 2; phase++) {
        if (phase == 0 && !g.backfill_total)
            continue;
        if (phase == 1) {
            g.live_start_ns = now_ns();
            g.end_ns = opt.duration_s > 0 ? g.live_start_ns + (int64_t)(opt.duration_s * 1e9) : 0;
        }
        g.phase = phase;
        for (int i = 0; i < opt.connections; i++)
            pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
        int64_t last = now_ns();
        int running = opt.connections;
        char *joined = lam_calloc((size_t)opt.connections, 1);
        while (running) {
            for (int i = 0; i < opt.connections; i++)
                if (!joined[i] && pthread_tryjoin_np(ws[i].thread, NULL) == 0)
                    joined[i] = 1, running--;
            if (!running)
                break;
            sleep_ns(20000000);
            if (g.end_ns && now_ns() >= g.end_ns)
                atomic_store(&g.stop, 1);
            if (show && now_ns() - last >= 1000000000) {
                print_progress(0, stderr, tty);
                last = now_ns();
            }
        }
        lam_free(joined);
        if (atomic_load(&g.stop))
            break;
    }
    g.done_ns = now_ns();
    g.cpu_done = cpu_s();
    if (show && tty)
        fputc('\n', stderr);
    for (size_t k = 0; k < npre; k++) {
        prebatch_t *pb = &pre[k];
        if (pb->state)
            write_acked(&pb->events, pb->off, pb->len, pb->state, pb->sid, pb->n);
        lam_buf_free(&pb->events);
        lam_free(pb->off);
        lam_free(pb->len);
        lam_free(pb->state);
        lam_free(pb->sid);
    }
    lam_free(pre);
    print_progress(1, stdout, 0);
    if (g.first_error[0])
        fprintf(stderr, "loadgen: first error: %s\n", g.first_error);
    if (g.out)
        fclose(g.out);
    for (int i = 0; i < opt.connections; i++) {
        conn_close(&ws[i].conn);
        lam_free(ws[i].conn.rbuf);
        lg_gen_free(&ws[i].gen);
        lam_buf_free(&ws[i].events);
        lam_buf_free(&ws[i].body);
        lam_free(ws[i].off);
        lam_free(ws[i].len);
        lam_free(ws[i].map);
        lam_free(ws[i].state);
    }
    lam_free(ws);
    return atomic_load(&g.failed) ? 1 : 0;
}
