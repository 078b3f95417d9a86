/* itest_speed.c - speed_layer against real Kafka and Redis: exact real-time views, crashes, rebalance, epochs. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "lam_buf.h"
#include "lam_event.h"
#include "lam_hll.h"
#include "lam_kafka.h"
#include "lam_mem.h"
#include "lam_redis.h"
#include "lam_service.h"
#include "testlib.h"

/* ---------------------------------------------------------------- environment */

#define DB 3
#define BASE_TS 1767225600000LL /* 2026-01-01T00:00:00Z */
#define HOURS 6
#define NUSERS 3000
#define NTYPES 4
#define NITEMS 8
#define NCC 6 /* + absent */
#define NURLS 20
#define NPLANS 3
#define MAXP 8

static const char *types[NTYPES] = {"page_view", "purchase", "add_to_cart", "signup"};
static const char *items[NITEMS] = {"sword", "shield", "bow", "axe", "potion", "helm", "ring", "boots"};
static const char *ccs[NCC] = {"TH", "DE", "US", "FR", "JP", "BR"};
static const char *plans[NPLANS] = {"free", "pro", "team"};

static char g_redis_url[512]; /* the stack's Redis, database DB */
static const char *g_brokers;

static void redis_url_db(const char *base, char *out, size_t n)
{
    const char *p = strstr(base, "://");
    p = p ? p + 3 : base;
    const char *slash = strchr(p, '/');
    size_t len = slash ? (size_t)(slash - base) : strlen(base);
    snprintf(out, n, "%.*s/%d", (int)len, base, DB);
}

static redisContext *rconnect(const char *url)
{
    char err[512];
    redisContext *r = lam_redis_connect(url, 5000, err, sizeof(err));
    if (!r)
        fprintf(stderr, "itest_speed: %s\n", err);
    assert_non_null(r);
    return r;
}

static redisReply *rcmd(redisContext *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(r, fmt, ap);
    va_end(ap);
    assert_non_null(rep);
    return rep;
}

static long long rint_cmd(redisContext *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(r, fmt, ap);
    va_end(ap);
    assert_non_null(rep);
    long long v = rep->type == REDIS_REPLY_INTEGER ? rep->integer
                  : rep->type == REDIS_REPLY_STRING ? strtoll(rep->str, NULL, 10)
                                                    : -1;
    freeReplyObject(rep);
    return v;
}

/* ---------------------------------------------------------------- speed_layer processes */

typedef struct proc {
    pid_t pid;
    char addr[64];
} proc_t;

/* Children still running; a failed assertion leaves the test early, the teardown kills them. */
static pid_t g_children[16];

static void child_track(pid_t pid, int add)
{
    for (size_t i = 0; i < LAM_ARRAY_SIZE(g_children); i++)
        if (add ? g_children[i] == 0 : g_children[i] == pid) {
            g_children[i] = add ? pid : 0;
            return;
        }
}

static int kill_children(void **st)
{
    (void)st;
    for (size_t i = 0; i < LAM_ARRAY_SIZE(g_children); i++)
        if (g_children[i] > 0) {
            kill(g_children[i], SIGKILL);
            waitpid(g_children[i], NULL, 0);
            g_children[i] = 0;
        }
    return 0;
}

static const char *g_filter_kb; /* LAM_SPEED_DEDUP_FILTER_KB of the next spawn_speed (NULL: default) */

static pid_t spawn_speed(const char *topic, const char *group, const char *redis_url, const char *batch_max,
                         const char *log, char *addr_out)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", lam_test_free_port());
    if (addr_out)
        strcpy(addr_out, addr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("LAM_KAFKA_TOPIC", topic, 1);
        setenv("LAM_SPEED_GROUP", group, 1);
        setenv("LAM_REDIS_URL", redis_url, 1);
        setenv("LAM_SPEED_ADDR", addr, 1);
        if (batch_max)
            setenv("LAM_SPEED_BATCH_MAX", batch_max, 1);
        if (g_filter_kb)
            setenv("LAM_SPEED_DEDUP_FILTER_KB", g_filter_kb, 1);
        setenv("LAM_LOG_LEVEL", "info", 0);
        setenv("LAM_KAFKA_X_SESSION_TIMEOUT_MS", "6000", 1);
        setenv("LAM_KAFKA_X_HEARTBEAT_INTERVAL_MS", "500", 1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        char bin[1024];
        snprintf(bin, sizeof(bin), "%s/speed_layer", lam_test_env("LAM_BIN_DIR", "build/bin"));
        execl(bin, "speed_layer", (char *)NULL);
        _exit(127);
    }
    child_track(pid, 1);
    return pid;
}

static void kill9(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    child_track(pid, 0);
}

/* SIGTERM and expect exit code 0 within 20 s. */
static void stop_speed(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 200; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            child_track(pid, 0);
            assert_true(WIFEXITED(st));
            assert_int_equal(WEXITSTATUS(st), 0);
            return;
        }
        usleep(100000);
    }
    kill9(pid);
    fail_msg("speed_layer did not stop within 20 s of SIGTERM");
}

static void log_path(char *out, size_t n, const char *name)
{
    const char *tmp = lam_test_env("LAM_TEST_TMP", "/tmp");
    snprintf(out, n, "%s/itest-speed-%s-%d.log", tmp, name, (int)getpid());
}

/* ---------------------------------------------------------------- Kafka producer */

typedef struct producer {
    rd_kafka_t *rk;
    char topic[128];
    int64_t end[MAXP]; /* next offset after the last delivered record, per partition */
    long failed;
} producer_t;

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    producer_t *p = opaque;
    if (m->err) {
        p->failed++;
        return;
    }
    if (m->partition < MAXP && m->offset + 1 > p->end[m->partition])
        p->end[m->partition] = m->offset + 1;
}

static void producer_open(producer_t *p, const char *suffix, int partitions)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->topic, sizeof(p->topic), "itest-speed-%d-%s", (int)getpid(), suffix);
    char err[512];
    rd_kafka_conf_t *conf = lam_kafka_conf_new(g_brokers, err, sizeof(err));
    rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
    rd_kafka_conf_set_opaque(conf, p);
    lam_kafka_conf_set(conf, "linger.ms", "20", err, sizeof(err));
    p->rk = lam_kafka_producer_new(conf, err, sizeof(err));
    assert_non_null(p->rk);
    assert_int_equal(lam_kafka_ensure_topic(p->rk, p->topic, partitions, 15000, err, sizeof(err)), 0);
}

static void produce(producer_t *p, int partition, const char *key, size_t klen, const void *val, size_t vlen,
                    const char *cut)
{
    rd_kafka_headers_t *h = NULL;
    if (cut) {
        h = rd_kafka_headers_new(1);
        rd_kafka_header_add(h, LAM_CUT_HEADER, -1, cut, (ssize_t)strlen(cut));
    }
    for (;;) {
        int32_t part = partition < 0 ? RD_KAFKA_PARTITION_UA : partition;
        rd_kafka_resp_err_t e =
            h ? rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(p->topic), RD_KAFKA_V_PARTITION(part),
                                  RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_VALUE((void *)val, vlen),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END)
              : rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(p->topic), RD_KAFKA_V_PARTITION(part),
                                  RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_VALUE((void *)val, vlen),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p->rk, 10);
            continue;
        }
        assert_int_equal(e, RD_KAFKA_RESP_ERR_NO_ERROR);
        break;
    }
    rd_kafka_poll(p->rk, 0);
}

static void producer_flush(producer_t *p)
{
    assert_int_equal(rd_kafka_flush(p->rk, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(p->failed, 0);
}

static void producer_close(producer_t *p)
{
    rd_kafka_destroy(p->rk);
}

/* ---------------------------------------------------------------- generated events and expected views */

typedef struct bits {
    uint8_t b[NUSERS / 8 + 1];
} bits_t;

static void bits_set(bits_t *s, int u)
{
    s->b[u / 8] |= (uint8_t)(1u << (u % 8));
}

static int bits_count(const bits_t *s)
{
    int n = 0;
    for (size_t i = 0; i < sizeof(s->b); i++)
        n += __builtin_popcount(s->b[i]);
    return n;
}

typedef struct mm {
    int64_t count, sum, min, max;
    bits_t users;
} mm_t;

/* Expected real-time views of one epoch, computed by plain counting (not lam_agg). */
typedef struct model {
    int64_t by_type[HOURS * 60][NTYPES];
    mm_t pv_url[HOURS][NURLS];
    mm_t pv_cc[HOURS][NCC + 1];
    mm_t pur[HOURS][NITEMS];
    mm_t rev;
    mm_t cart[HOURS][NITEMS];
    int64_t signups[HOURS][NPLANS];
    bits_t day_users;
    int any_day_user;
} model_t;

static void mm_add(mm_t *m, int64_t micro, int user)
{
    if (m->count == 0 || micro < m->min)
        m->min = micro;
    if (m->count == 0 || micro > m->max)
        m->max = micro;
    m->count++;
    m->sum += micro;
    if (user >= 0)
        bits_set(&m->users, user);
}

typedef struct gen {
    unsigned long long s;
    int runid;
    long next;
    int uuid_ids; /* ids as UUIDs too: canonical lowercase (dedup records store 16 bytes) and uppercase (text) */
    lam_event_t ev;
    lam_buf_t raw, canon;
    /* canonical events produced so far (for re-sending duplicates) */
    char **sent;
    size_t *sent_len;
    long nsent, cap;
} gen_t;

static unsigned long long rnd(gen_t *g)
{
    g->s ^= g->s << 13;
    g->s ^= g->s >> 7;
    g->s ^= g->s << 17;
    return g->s;
}

static void gen_init(gen_t *g, int runid)
{
    memset(g, 0, sizeof(*g));
    g->s = 0x9E3779B97F4A7C15ULL ^ ((unsigned long long)runid * 7919) ^ lam_test_seed();
    if (!g->s)
        g->s = 1;
    g->runid = runid;
    lam_event_init(&g->ev);
}

static void gen_free(gen_t *g)
{
    for (long i = 0; i < g->nsent; i++)
        lam_free(g->sent[i]);
    lam_free(g->sent);
    lam_free(g->sent_len);
    lam_event_free(&g->ev);
    lam_buf_free(&g->raw);
    lam_buf_free(&g->canon);
}

/* The id of event i: "e-{run}-{i}", or with uuid_ids for 3 of 4 events a UUID (unique per run and i), in
 * canonical lowercase text (a dedup record holds its 16 bytes) or uppercase (kept as text). */
static void gen_id(const gen_t *g, long i, char *out, size_t n)
{
    unsigned long long lo = (unsigned long long)i & 0xffffffffffffULL;
    if (!g->uuid_ids || i % 4 == 2)
        snprintf(out, n, "e-%d-%ld", g->runid, i);
    else
        snprintf(out, n, i % 4 == 1 ? "%08X-%04X-7%03X-8%03X-%012llX" : "%08x-%04x-7%03x-8%03x-%012llx",
                 0xabc00000u | (unsigned)g->runid, (unsigned)(i % 0xffff), (unsigned)(i % 0xfff),
                 (unsigned)(i % 0xeff), lo);
}

/* Make the next event, apply it to m, return its canonical bytes in g->canon. */
static void gen_event(gen_t *g, model_t *m)
{
    long i = g->next++;
    int t = (int)(rnd(g) % 10);
    int type = t < 5 ? 0 : t < 7 ? 1 : t < 9 ? 2 : 3;
    int64_t off = (int64_t)(rnd(g) % (HOURS * 3600000ULL));
    int64_t ts = BASE_TS + off;
    int hour = (int)(off / 3600000), minute = (int)(off / 60000);
    int user = (int)(rnd(g) % NUSERS);
    lam_buf_t *b = &g->raw;
    lam_buf_clear(b);
    char id[64];
    gen_id(g, i, id, sizeof(id));
    lam_buf_printf(b, "{\"id\":\"%s\",\"ts\":%lld,\"type\":\"%s\",\"user\":\"u%d\"", id, (long long)ts,
                   types[type], user);
    m->by_type[minute][type]++;
    bits_set(&m->day_users, user);
    m->any_day_user = 1;
    if (type == 0) {
        int url = (int)(rnd(g) % NURLS), cc = (int)(rnd(g) % (NCC + 1));
        int lat = (int)(rnd(g) % 2000);
        lam_buf_printf(b, ",\"url\":\"/p/%d\",\"latency_ms\":%d", url, lat);
        if (cc < NCC)
            lam_buf_printf(b, ",\"geo\":{\"cc\":\"%s\"}", ccs[cc]);
        mm_add(&m->pv_url[hour][url], 0, user);
        mm_add(&m->pv_cc[hour][cc], (int64_t)lat * 1000000, user);
    } else if (type == 1) {
        int item = (int)(rnd(g) % NITEMS);
        int cents = (int)(rnd(g) % 100000);
        lam_buf_printf(b, ",\"item\":\"%s\",\"price\":%d.%02d", items[item], cents / 100, cents % 100);
        mm_add(&m->pur[hour][item], (int64_t)cents * 10000, user);
        mm_add(&m->rev, (int64_t)cents * 10000, -1);
    } else if (type == 2) {
        int item = (int)(rnd(g) % NITEMS), qty = 1 + (int)(rnd(g) % 5);
        lam_buf_printf(b, ",\"item\":\"%s\",\"qty\":%d", items[item], qty);
        mm_add(&m->cart[hour][item], (int64_t)qty * 1000000, -1);
    } else {
        int plan = (int)(rnd(g) % NPLANS);
        lam_buf_printf(b, ",\"plan\":\"%s\"", plans[plan]);
        m->signups[hour][plan]++;
    }
    lam_buf_append_char(b, '}');
    char err[256];
    int rc = lam_event_parse(&g->ev, b->data, b->len, lam_now_ms(), -1, err, sizeof(err));
    if (rc)
        fprintf(stderr, "gen: %s: %s\n", err, b->data);
    assert_int_equal(rc, 0);
    lam_buf_clear(&g->canon);
    lam_event_canonical(&g->ev, &g->canon);
    if (g->nsent == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 1024;
        g->sent = lam_realloc(g->sent, (size_t)g->cap * sizeof(*g->sent));
        g->sent_len = lam_realloc(g->sent_len, (size_t)g->cap * sizeof(*g->sent_len));
    }
    g->sent[g->nsent] = lam_strndup(g->canon.data, g->canon.len);
    g->sent_len[g->nsent++] = g->canon.len;
}

static void produce_canon(producer_t *p, int partition, const char *json, size_t len)
{
    /* key = id: the id is the first member of the canonical form */
    const char *q = strstr(json, "\"id\":\"");
    assert_non_null(q);
    q += 6;
    const char *e = strchr(q, '"');
    produce(p, partition, q, (size_t)(e - q), json, len, NULL);
}

/* Produce n generated events (into partition or by key), with ~2% duplicates: half re-sent at once,
 * half re-sent from earlier in the stream. Returns the number of duplicates produced. */
static long produce_events(producer_t *p, gen_t *g, model_t *m, long n, int partition)
{
    long dups = 0;
    for (long i = 0; i < n; i++) {
        gen_event(g, m);
        produce_canon(p, partition, g->canon.data, g->canon.len);
        unsigned long long r = rnd(g) % 100;
        if (r == 0) {
            produce_canon(p, partition, g->canon.data, g->canon.len);
            dups++;
        } else if (r == 1 && g->nsent > 1 && partition < 0) { /* by key, like ingest: same partition */
            long j = (long)(rnd(g) % (unsigned long long)g->nsent);
            produce_canon(p, partition, g->sent[j], g->sent_len[j]);
            dups++;
        }
    }
    return dups;
}

/* ---------------------------------------------------------------- comparing Redis with the model */

typedef struct lines {
    char **v;
    size_t n, cap;
} lines_t;

static void lines_add(lines_t *l, const char *fmt, ...)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = lam_realloc(l->v, l->cap * sizeof(*l->v));
    }
    lam_buf_t b = LAM_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    lam_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    l->v[l->n++] = lam_buf_detach(&b, NULL);
}

static int cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void lines_free(lines_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        lam_free(l->v[i]);
    lam_free(l->v);
    memset(l, 0, sizeof(*l));
}

/* Every (bucket, field, value) of a view in Redis, through its bucket index. */
static void redis_view_lines(redisContext *r, int64_t epoch, const char *view, lines_t *out)
{
    redisReply *idx = rcmd(r, "ZRANGE lam:rt:idx:%lld:%s 0 -1", (long long)epoch, view);
    assert_int_equal(idx->type, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < idx->elements; i++) {
        redisReply *h = rcmd(r, "HGETALL lam:rt:%lld:%s:%s", (long long)epoch, view, idx->element[i]->str);
        for (size_t j = 0; j + 1 < h->elements; j += 2)
            lines_add(out, "%s|%s=%s", idx->element[i]->str, h->element[j]->str, h->element[j + 1]->str);
        freeReplyObject(h);
    }
    freeReplyObject(idx);
}

static void compare_lines(const char *view, lines_t *want, lines_t *got)
{
    qsort(want->v, want->n, sizeof(char *), cmpstr);
    qsort(got->v, got->n, sizeof(char *), cmpstr);
    size_t i = 0, j = 0, shown = 0;
    while ((i < want->n || j < got->n) && shown < 10) {
        int c = i == want->n ? 1 : j == got->n ? -1 : strcmp(want->v[i], got->v[j]);
        if (c == 0) {
            i++, j++;
            continue;
        }
        if (c < 0)
            fprintf(stderr, "%s: missing  %s\n", view, want->v[i++]);
        else
            fprintf(stderr, "%s: extra    %s\n", view, got->v[j++]);
        shown++;
    }
    if (shown)
        fail_msg("view %s differs from the independent recomputation (%zu expected, %zu in Redis)", view, want->n,
                 got->n);
}

static int64_t hour_ts(int h)
{
    return BASE_TS + (int64_t)h * 3600000;
}

static void check_distinct(redisContext *r, int64_t epoch, const char *view, int64_t bucket, int metric,
                           const char *gkey, const bits_t *users)
{
    int want = bits_count(users);
    if (!want)
        return;
    char key[512];
    snprintf(key, sizeof(key), "lam:rt:%lld:%s:%lld:hll:%d:%s", (long long)epoch, view, (long long)bucket, metric,
             gkey);
    long long got = rint_cmd(r, "PFCOUNT %s", key);
    /* Redis's own PFADD of the exact set must give the same estimate (same registers by construction);
     * the estimate itself is HLL's (0.81% standard error, so allow 3 sigma plus a little). */
    const char **argv = lam_malloc((NUSERS + 2) * sizeof(*argv));
    char(*names)[8] = lam_malloc(NUSERS * sizeof(*names));
    int n = 0;
    argv[n++] = "PFADD";
    argv[n++] = "itest:speed:exact";
    for (int u = 0; u < NUSERS; u++)
        if (users->b[u / 8] & (1u << (u % 8))) {
            snprintf(names[u], sizeof(names[u]), "u%d", u);
            argv[n++] = names[u];
        }
    freeReplyObject(rcmd(r, "DEL itest:speed:exact"));
    redisReply *rep = redisCommandArgv(r, n, argv, NULL);
    assert_non_null(rep);
    freeReplyObject(rep);
    lam_free(argv);
    lam_free(names);
    long long exact = rint_cmd(r, "PFCOUNT itest:speed:exact");
    freeReplyObject(rcmd(r, "DEL itest:speed:exact"));
    if (got != exact)
        fail_msg("%s: distinct %lld, Redis PFADD of the same %d values gives %lld", key, got, want, exact);
    double tol = want * 0.025 < 2 ? 2 : want * 0.025;
    if ((double)llabs(got - want) > tol)
        fail_msg("%s: distinct %lld, expected %d", key, got, want);
    assert_int_equal(rint_cmd(r, "SISMEMBER lam:rt:hidx:%lld:%s:%lld %s", (long long)epoch, view,
                              (long long)bucket, key),
                     1);
}

static void check_view_model(redisContext *r, int64_t epoch, const model_t *m)
{
    lines_t want = {0}, got = {0};
    /* events_by_type: count per minute and type */
    for (int mi = 0; mi < HOURS * 60; mi++)
        for (int t = 0; t < NTYPES; t++)
            if (m->by_type[mi][t])
                lines_add(&want, "%lld|0:[\"%s\"]=%lld", (long long)(BASE_TS + (int64_t)mi * 60000), types[t],
                          (long long)m->by_type[mi][t]);
    redis_view_lines(r, epoch, "events_by_type", &got);
    compare_lines("events_by_type", &want, &got);
    lines_free(&want), lines_free(&got);

    /* page_views_by_url: count (+ distinct:user, metric 1) */
    for (int h = 0; h < HOURS; h++)
        for (int u = 0; u < NURLS; u++)
            if (m->pv_url[h][u].count)
                lines_add(&want, "%lld|0:[\"/p/%d\"]=%lld", (long long)hour_ts(h), u,
                          (long long)m->pv_url[h][u].count);
    redis_view_lines(r, epoch, "page_views_by_url", &got);
    compare_lines("page_views_by_url", &want, &got);
    lines_free(&want), lines_free(&got);
    for (int h = 0; h < HOURS; h++)
        for (int u = 0; u < NURLS; u++) {
            char gk[64];
            snprintf(gk, sizeof(gk), "[\"/p/%d\"]", u);
            check_distinct(r, epoch, "page_views_by_url", hour_ts(h), 1, gk, &m->pv_url[h][u].users);
        }

    /* page_views_by_country: count, sum:latency_ms (field 2), max:latency_ms (3), distinct:user (metric 3) */
    for (int h = 0; h < HOURS; h++)
        for (int c = 0; c <= NCC; c++) {
            const mm_t *x = &m->pv_cc[h][c];
            if (!x->count)
                continue;
            char gk[32];
            snprintf(gk, sizeof(gk), c < NCC ? "[\"%s\"]" : "[null]", c < NCC ? ccs[c] : "");
            lines_add(&want, "%lld|0:%s=%lld", (long long)hour_ts(h), gk, (long long)x->count);
            lines_add(&want, "%lld|2:%s=%lld", (long long)hour_ts(h), gk, (long long)x->sum);
            lines_add(&want, "%lld|3:%s=%lld", (long long)hour_ts(h), gk, (long long)x->max);
            check_distinct(r, epoch, "page_views_by_country", hour_ts(h), 3, gk, &x->users);
        }
    redis_view_lines(r, epoch, "page_views_by_country", &got);
    compare_lines("page_views_by_country", &want, &got);
    lines_free(&want), lines_free(&got);

    /* purchases_by_item: count, sum (2), min (3), max (4), distinct:user (metric 4) */
    for (int h = 0; h < HOURS; h++)
        for (int it = 0; it < NITEMS; it++) {
            const mm_t *x = &m->pur[h][it];
            if (!x->count)
                continue;
            long long b = (long long)hour_ts(h);
            lines_add(&want, "%lld|0:[\"%s\"]=%lld", b, items[it], (long long)x->count);
            lines_add(&want, "%lld|2:[\"%s\"]=%lld", b, items[it], (long long)x->sum);
            lines_add(&want, "%lld|3:[\"%s\"]=%lld", b, items[it], (long long)x->min);
            lines_add(&want, "%lld|4:[\"%s\"]=%lld", b, items[it], (long long)x->max);
            char gk[32];
            snprintf(gk, sizeof(gk), "[\"%s\"]", items[it]);
            check_distinct(r, epoch, "purchases_by_item", hour_ts(h), 4, gk, &x->users);
        }
    redis_view_lines(r, epoch, "purchases_by_item", &got);
    compare_lines("purchases_by_item", &want, &got);
    lines_free(&want), lines_free(&got);

    /* revenue: sum:price (field 1), count (field 0), per day */
    if (m->rev.count) {
        lines_add(&want, "%lld|0:[]=%lld", (long long)BASE_TS, (long long)m->rev.count);
        lines_add(&want, "%lld|1:[]=%lld", (long long)BASE_TS, (long long)m->rev.sum);
    }
    redis_view_lines(r, epoch, "revenue", &got);
    compare_lines("revenue", &want, &got);
    lines_free(&want), lines_free(&got);

    /* cart_adds_by_item: count, sum:qty (field 2) */
    for (int h = 0; h < HOURS; h++)
        for (int it = 0; it < NITEMS; it++) {
            const mm_t *x = &m->cart[h][it];
            if (!x->count)
                continue;
            lines_add(&want, "%lld|0:[\"%s\"]=%lld", (long long)hour_ts(h), items[it], (long long)x->count);
            lines_add(&want, "%lld|2:[\"%s\"]=%lld", (long long)hour_ts(h), items[it], (long long)x->sum);
        }
    redis_view_lines(r, epoch, "cart_adds_by_item", &got);
    compare_lines("cart_adds_by_item", &want, &got);
    lines_free(&want), lines_free(&got);

    /* signups: count per plan */
    for (int h = 0; h < HOURS; h++)
        for (int pl = 0; pl < NPLANS; pl++)
            if (m->signups[h][pl])
                lines_add(&want, "%lld|0:[\"%s\"]=%lld", (long long)hour_ts(h), plans[pl],
                          (long long)m->signups[h][pl]);
    redis_view_lines(r, epoch, "signups", &got);
    compare_lines("signups", &want, &got);
    lines_free(&want), lines_free(&got);

    /* distinct_users_per_day: only an HLL, plus the count field */
    if (m->any_day_user) {
        int64_t total = 0;
        for (int mi = 0; mi < HOURS * 60; mi++)
            for (int t = 0; t < NTYPES; t++)
                total += m->by_type[mi][t];
        lines_add(&want, "%lld|0:[]=%lld", (long long)BASE_TS, (long long)total);
        check_distinct(r, epoch, "distinct_users_per_day", BASE_TS, 0, "[]", &m->day_users);
    }
    redis_view_lines(r, epoch, "distinct_users_per_day", &got);
    compare_lines("distinct_users_per_day", &want, &got);
    lines_free(&want), lines_free(&got);
}

/* Wait until the offsets stored in Redis reach the producer's end offsets. */
static void wait_caught_up(redisContext *r, const char *group, const producer_t *p, int nparts, int timeout_s)
{
    int64_t deadline = lam_now_mono_ms() + timeout_s * 1000LL;
    for (;;) {
        int done = 1;
        for (int i = 0; i < nparts && done; i++) {
            if (!p->end[i])
                continue;
            redisReply *rep = redisCommand(r, "HGET lam:speed:%s:offsets %d", group, i);
            if (!rep) {
                done = 0;
                break;
            }
            long long v = rep->type == REDIS_REPLY_STRING ? strtoll(rep->str, NULL, 10) : -1;
            freeReplyObject(rep);
            if (v < p->end[i])
                done = 0;
        }
        if (done)
            return;
        if (lam_now_mono_ms() > deadline)
            fail_msg("speed_layer did not catch up within %d s", timeout_s);
        usleep(100000);
    }
}

/* Sum of the offsets stored in Redis (records consumed and written so far); -1 when Redis is away. */
static long long stored_sum(redisContext *r, const char *group)
{
    redisReply *rep = redisCommand(r, "HVALS lam:speed:%s:offsets", group);
    if (!rep)
        return -1;
    long long s = 0;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++)
        s += strtoll(rep->element[i]->str, NULL, 10);
    freeReplyObject(rep);
    return s;
}

/* Block until the stored progress reaches at least target; returns it. */
static long long wait_progress(redisContext *r, const char *group, long long target, int timeout_s)
{
    int64_t deadline = lam_now_mono_ms() + timeout_s * 1000LL;
    long long s;
    while ((s = stored_sum(r, group)) < target) {
        if (lam_now_mono_ms() > deadline)
            fail_msg("no progress to %lld within %d s (at %lld)", target, timeout_s, s);
        usleep(2000);
    }
    return s;
}

static long long stat_field(redisContext *r, const char *group, const char *field)
{
    redisReply *rep = rcmd(r, "HGET lam:speed:%s:stats %s", group, field);
    long long v = rep->type == REDIS_REPLY_STRING ? strtoll(rep->str, NULL, 10) : 0;
    freeReplyObject(rep);
    return v;
}

/* Stats are pushed every second. */
static long long wait_stat(redisContext *r, const char *group, const char *field, long long want)
{
    long long v = 0;
    for (int i = 0; i < 50; i++) {
        v = stat_field(r, group, field);
        if (v == want)
            break;
        usleep(100000);
    }
    return v;
}

static redisContext *fresh_db(void)
{
    redisContext *r = rconnect(g_redis_url);
    freeReplyObject(rcmd(r, "FLUSHDB"));
    return r;
}

/* ---------------------------------------------------------------- tests */

static model_t g_m0, g_m1;

/* 50k events with ~2% duplicate ids and some poison records: exact views, counters, tail, dedup keys, TTLs. */
static void test_replay_exact(void **st)
{
    (void)st;
    redisContext *r = fresh_db();
    producer_t p;
    producer_open(&p, "replay", 4);
    gen_t g;
    gen_init(&g, 1);
    memset(&g_m0, 0, sizeof(g_m0));
    long dups = produce_events(&p, &g, &g_m0, 25000, -1);
    const char *poison[] = {"not json", "\xff\xfe{}", "{\"id\":\"p1\",\"ts\":1}", "[1,2]",
                            "{\"id\":\"p2\",\"ts\":1,\"type\":\"x\",\"tags\":[1]}"};
    for (size_t i = 0; i < LAM_ARRAY_SIZE(poison); i++)
        produce(&p, (int)i % 4, "k", 1, poison[i], strlen(poison[i]), NULL);
    produce(&p, 1, "k", 1, "", 0, "x1"); /* a marker with a bad run number */
    dups += produce_events(&p, &g, &g_m0, 25000, -1);
    producer_flush(&p);

    char log[512], group[64];
    log_path(log, sizeof(log), "replay");
    snprintf(group, sizeof(group), "g-replay-%d", (int)getpid());
    int64_t t0 = lam_now_mono_ms();
    pid_t pid = spawn_speed(p.topic, group, g_redis_url, NULL, log, NULL);
    wait_caught_up(r, group, &p, 4, 90);
    fprintf(stderr, "replay: %ld records caught up in %lld ms (incl. start-up and group join)\n",
            50000 + dups + 6, (long long)(lam_now_mono_ms() - t0));
    check_view_model(r, 0, &g_m0);
    assert_int_equal(wait_stat(r, group, "poison_total", 6), 6);
    assert_int_equal(wait_stat(r, group, "duplicates_total", dups), dups);
    assert_int_equal(wait_stat(r, group, "events_total", 50000), 50000);
    /* where the first event was counted: an entry (varint length, id, varint partition, varint offset)
     * of one record string lam:dedup:@{slot}:{token}:{shard} of this session; the session in
     * lam:dedup:@sessions */
    redisReply *ks = rcmd(r, "KEYS lam:dedup:*");
    assert_int_equal(ks->type, REDIS_REPLY_ARRAY);
    assert_true(ks->elements >= 2 && ks->elements <= 2 * 1024 + 1); /* sessions + 1024 shards of 1-2 slots */
    int found_first = 0, sessions = 0;
    for (size_t i = 0; i < ks->elements; i++) {
        const char *k = ks->element[i]->str;
        assert_true(rint_cmd(r, "TTL %s", k) > 3600);
        if (!strcmp(k, "lam:dedup:@sessions")) {
            assert_int_equal(rint_cmd(r, "ZCARD %s", k), 1);
            sessions++;
            continue;
        }
        const char *c1 = strchr(k + 11, ':');
        assert_true(!strncmp(k, "lam:dedup:@", 11) && c1 && strchr(c1 + 1, ':'));
        redisReply *d = rcmd(r, "GET %s", k);
        assert_int_equal(d->type, REDIS_REPLY_STRING);
        for (const char *q = d->str; (q = memmem(q, d->len - (size_t)(q - d->str), "\x05" "e-1-0", 6)); q++)
            if ((size_t)(q - d->str) + 7 < d->len && (unsigned char)q[6] < 4)
                found_first++;
        freeReplyObject(d);
    }
    freeReplyObject(ks);
    assert_int_equal(sessions, 1);
    assert_int_equal(found_first, 1);
    /* real-time keys carry a safety-net TTL */
    long long ttl = rint_cmd(r, "TTL lam:rt:0:revenue:%lld", (long long)BASE_TS);
    assert_true(ttl > 86400 && ttl <= 8 * 86400);
    assert_true(rint_cmd(r, "TTL lam:rt:idx:0:revenue") > 86400);
    long long xl = rint_cmd(r, "XLEN lam:tail");
    assert_true(xl >= 50 && xl <= 1200);
    assert_int_equal(rint_cmd(r, "ZSCORE lam:rt:epochs 0"), 0);
    stop_speed(pid);
    /* a restart with nothing new changes nothing */
    pid = spawn_speed(p.topic, group, g_redis_url, NULL, log, NULL);
    usleep(1500000);
    stop_speed(pid);
    check_view_model(r, 0, &g_m0);
    gen_free(&g);
    producer_close(&p);
    redisFree(r);
}

/* A counter of speed_layer's /metrics at addr, polled until it equals want (counters follow the outcome
 * of the batch in flight) or 5 s passed; the last value read. */
static long long wait_metric(const char *addr, const char *name, long long want)
{
    long long v = -1;
    for (int i = 0; i < 50; i++) {
        char cmd[256], line[512];
        snprintf(cmd, sizeof(cmd), "curl -fsS http://%s/metrics", addr);
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        size_t nl = strlen(name);
        while (fgets(line, sizeof(line), f))
            if (!strncmp(line, name, nl) && line[nl] == ' ')
                v = (long long)strtod(line + nl + 1, NULL);
        pclose(f);
        if (v == want)
            break;
        usleep(100000);
    }
    return v;
}

/*
 * Duplicates of ids counted by earlier sessions (each killed with SIGKILL) are found in their dedup records;
 * an id in a slot hash of the previous layout (another session's) is found too. Three sessions: A, then B
 * with LAM_SPEED_DEDUP_FILTER_KB = filter_kb_b (NULL: the default), then C. With "0" B has no room for any
 * filter: it copies A's records into A's slot hash and writes its own ids one hash field each, and C still
 * finds them all.
 */
static void dedup_sessions(const char *suffix, int runid, const char *filter_kb_b)
{
    redisContext *r = fresh_db();
    producer_t p;
    producer_open(&p, suffix, 3);
    gen_t g;
    gen_init(&g, runid);
    g.uuid_ids = 1;
    memset(&g_m0, 0, sizeof(g_m0));
    enum { N1 = 6000, N2 = 3000, N3 = 1000 };
    for (long i = 0; i < N1; i++) {
        gen_event(&g, &g_m0);
        produce_canon(&p, -1, g.canon.data, g.canon.len);
    }
    producer_flush(&p);
    char log[512], group[64], addr[64];
    log_path(log, sizeof(log), suffix);
    snprintf(group, sizeof(group), "g-%s-%d", suffix, (int)getpid());
    pid_t pid = spawn_speed(p.topic, group, g_redis_url, "700", log, NULL);
    wait_caught_up(r, group, &p, 3, 90);
    kill9(pid);
    assert_true(rint_cmd(r, "ZCARD lam:dedup:@sessions") == 1);
    /* the records hold a lowercase UUID as 16 bytes (about 20 bytes an entry, ~41 as text): N1 ids, half of
     * them such UUIDs, a quarter uppercase ones, a quarter "e-..." ids, take ~23.5 bytes an id (~34 as text) */
    long long rbytes = 0;
    for (unsigned long long cur = 0, first = 1; first || cur;) {
        first = 0;
        redisReply *sc = rcmd(r, "SCAN %llu MATCH lam:dedup:@* COUNT 1000 TYPE string", cur);
        assert_true(sc->type == REDIS_REPLY_ARRAY && sc->elements == 2);
        cur = strtoull(sc->element[0]->str, NULL, 10);
        for (size_t k = 0; k < sc->element[1]->elements; k++)
            rbytes += rint_cmd(r, "STRLEN %s", sc->element[1]->element[k]->str);
        freeReplyObject(sc);
    }
    assert_true(rbytes > 20LL * N1 && rbytes < 27LL * N1);
    /* an event whose id another session of the previous layout counted (slot hash field = id) */
    static model_t scratch;
    gen_event(&g, &scratch);
    char old_id[64];
    gen_id(&g, g.next - 1, old_id, sizeof(old_id));
    long long slot = lam_now_ms() / 1000 / 600; /* LAM_DEDUP_WINDOW_S 3600: slots of 600 s */
    freeReplyObject(rcmd(r, "ZADD lam:dedup:@sessions %lld 00000000000000aa", lam_now_ms() / 1000));
    freeReplyObject(rcmd(r, "HSET lam:dedup:@%lld:00000000000000aa %s 0:999999999", slot, old_id));
    produce_canon(&p, -1, g.canon.data, g.canon.len);
    /* every event of the first session again, in a new order, between new events */
    for (long i = 0; i < N1; i++) {
        long j = (i * 7919) % N1;
        produce_canon(&p, -1, g.sent[j], g.sent_len[j]);
        if (i % 2 == 0 && i / 2 < N2) {
            gen_event(&g, &g_m0);
            produce_canon(&p, -1, g.canon.data, g.canon.len);
        }
    }
    producer_flush(&p);
    g_filter_kb = filter_kb_b;
    pid = spawn_speed(p.topic, group, g_redis_url, "700", log, addr);
    g_filter_kb = NULL;
    wait_caught_up(r, group, &p, 3, 90);
    check_view_model(r, 0, &g_m0);
    /* the second session's own counters (the first one's last stats push died with it) */
    assert_int_equal(wait_metric(addr, "lam_speed_duplicates_total", N1 + 1), N1 + 1);
    assert_int_equal(wait_metric(addr, "lam_speed_events_total", N2), N2);
    kill9(pid);
    /* everything sent so far again (A's, B's and the previous layout's ids), then new events: C */
    long nsent = g.nsent;
    for (long j = nsent - 1; j >= 0; j--) {
        produce_canon(&p, -1, g.sent[j], g.sent_len[j]);
        if (j % 3 == 0 && j / 3 < N3) {
            gen_event(&g, &g_m0);
            produce_canon(&p, -1, g.canon.data, g.canon.len);
        }
    }
    producer_flush(&p);
    pid = spawn_speed(p.topic, group, g_redis_url, "700", log, addr);
    wait_caught_up(r, group, &p, 3, 90);
    check_view_model(r, 0, &g_m0);
    assert_int_equal(wait_metric(addr, "lam_speed_duplicates_total", nsent), nsent);
    assert_int_equal(wait_metric(addr, "lam_speed_events_total", N3), N3);
    stop_speed(pid);
    gen_free(&g);
    producer_close(&p);
    redisFree(r);
}

/* A command that fails inside the batch transaction (XADD into a lam:tail of the wrong type): the EXEC reply's
 * error is seen (lam_speed_script_errors_total), the batch is not counted as written, consumption resumes from
 * the stored offsets (which that transaction did move), and the views stay exact. */
static void test_command_error_in_exec(void **st)
{
    (void)st;
    redisContext *r = fresh_db();
    freeReplyObject(rcmd(r, "SET lam:tail not-a-stream"));
    producer_t p;
    producer_open(&p, "execerr", 2);
    gen_t g;
    gen_init(&g, 9);
    memset(&g_m0, 0, sizeof(g_m0));
    produce_events(&p, &g, &g_m0, 3000, -1);
    producer_flush(&p);
    char log[512], group[64], addr[64];
    log_path(log, sizeof(log), "execerr");
    snprintf(group, sizeof(group), "g-execerr-%d", (int)getpid());
    pid_t pid = spawn_speed(p.topic, group, g_redis_url, "500", log, addr);
    wait_caught_up(r, group, &p, 2, 90);
    check_view_model(r, 0, &g_m0);
    long long errs = wait_metric(addr, "lam_speed_script_errors_total", -2); /* never -2: the value after 5 s */
    assert_true(errs >= 1);
    assert_int_equal(rint_cmd(r, "EXISTS lam:dedup:@sessions"), 1);
    stop_speed(pid);
    gen_free(&g);
    producer_close(&p);
    redisFree(r);
}

static void test_dedup_across_sessions(void **st)
{
    (void)st;
    dedup_sessions("dsess", 7, NULL);
}

static void test_dedup_over_budget(void **st)
{
    (void)st;
    dedup_sessions("dbudget", 8, "0");
}

/* A 200k-event replay; speed_layer killed with SIGKILL three times at random points (whenever the stored
 * progress passes a random threshold) and restarted each time: the views are still exact. */
static void test_kill9_three_times(void **st)
{
    (void)st;
    redisContext *r = fresh_db();
    producer_t p;
    producer_open(&p, "kill", 4);
    gen_t g;
    gen_init(&g, 2);
    memset(&g_m0, 0, sizeof(g_m0));
    long total = 200000 + produce_events(&p, &g, &g_m0, 200000, -1);
    producer_flush(&p);
    char log[512], group[64];
    log_path(log, sizeof(log), "kill");
    snprintf(group, sizeof(group), "g-kill-%d", (int)getpid());
    pid_t pid = spawn_speed(p.topic, group, g_redis_url, "5000", log, NULL);
    long long at = 0;
    for (int k = 0; k < 3; k++) {
        long long target = at + 1 + (long long)(rnd(&g) % (unsigned long long)((total - at) / (4 - k)));
        at = wait_progress(r, group, target, 60);
        kill9(pid);
        fprintf(stderr, "kill9: killed at %lld of %ld records\n", stored_sum(r, group), total);
        pid = spawn_speed(p.topic, group, g_redis_url, "5000", log, NULL);
    }
    wait_caught_up(r, group, &p, 4, 120);
    check_view_model(r, 0, &g_m0);
    stop_speed(pid);
    gen_free(&g);
    producer_close(&p);
    redisFree(r);
}

/* Redis killed (SIGKILL, AOF everysec: the last second is lost) and restarted mid-replay: exact. */
static void test_redis_restart(void **st)
{
    (void)st;
    char dir[512], port[16], url[128], pidf[600];
    snprintf(dir, sizeof(dir), "%s/itest-speed-redis-%d", lam_test_env("LAM_TEST_TMP", "/tmp"), (int)getpid());
    mkdir(dir, 0755);
    snprintf(port, sizeof(port), "%d", lam_test_free_port());
    snprintf(url, sizeof(url), "redis://127.0.0.1:%s", port);
    snprintf(pidf, sizeof(pidf), "%s/redis.log", dir);
    pid_t rpid = 0;
#define START_REDIS()                                                                                               \
    do {                                                                                                           \
        rpid = fork();                                                                                             \
        if (rpid == 0) {                                                                                           \
            int fd = open(pidf, O_WRONLY | O_CREAT | O_APPEND, 0644);                                              \
            dup2(fd, 1);                                                                                           \
            dup2(fd, 2);                                                                                           \
            execlp("redis-server", "redis-server", "--bind", "127.0.0.1", "--port", port, "--dir", dir,            \
                   "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "no",     \
                   (char *)NULL);                                                                                  \
            _exit(127);                                                                                            \
        }                                                                                                          \
        child_track(rpid, 1);                                                                                      \
        for (int i = 0; i < 100; i++) {                                                                            \
            char e_[256];                                                                                          \
            redisContext *c_ = lam_redis_connect(url, 500, e_, sizeof(e_));                                        \
            if (c_) {                                                                                              \
                redisReply *pr_ = redisCommand(c_, "PING");                                                        \
                int ok_ = pr_ && pr_->type == REDIS_REPLY_STATUS;                                                  \
                if (pr_)                                                                                           \
                    freeReplyObject(pr_);                                                                          \
                redisFree(c_);                                                                                     \
                if (ok_)                                                                                           \
                    break;                                                                                         \
            }                                                                                                      \
            usleep(100000);                                                                                        \
        }                                                                                                          \
    } while (0)
    START_REDIS();
    producer_t p;
    producer_open(&p, "redis", 4);
    gen_t g;
    gen_init(&g, 3);
    memset(&g_m0, 0, sizeof(g_m0));
    char log[512], group[64];
    log_path(log, sizeof(log), "redis");
    snprintf(group, sizeof(group), "g-redis-%d", (int)getpid());
    long total = 200000 + produce_events(&p, &g, &g_m0, 200000, -1);
    producer_flush(&p);
    pid_t pid = spawn_speed(p.topic, group, url, "5000", log, NULL);
    redisContext *r = rconnect(url);
    long long target = total / 4 + (long long)(rnd(&g) % (unsigned long long)(total / 2));
    wait_progress(r, group, target, 60);
    redisFree(r);
    kill9(rpid);
    /* A SIGKILL alone loses nothing (the AOF is in the page cache): cut the AOF's tail as a power loss
     * would, so Redis comes back with fewer batches than the speed layer wrote (data, offsets and
     * dedup keys together; a torn MULTI/EXEC is dropped by aof-load-truncated). */
    char cut[2048];
    snprintf(cut, sizeof(cut),
             "f=$(ls %s/appendonlydir/*.incr.aof | tail -1); s=$(stat -c %%s \"$f\"); truncate -s $((s * 3 / 5)) \"$f\"",
             dir);
    assert_int_equal(system(cut), 0);
    usleep(500000);
    START_REDIS();
    r = rconnect(url);
    fprintf(stderr, "redis: killed after %lld of %ld records; %lld survived in the AOF\n", target, total,
            stored_sum(r, group));
#undef START_REDIS
    wait_caught_up(r, group, &p, 4, 120);
    check_view_model(r, 0, &g_m0);
    stop_speed(pid);
    redisFree(r);
    kill9(rpid);
    gen_free(&g);
    producer_close(&p);
}

/* Two instances share the partitions; one is killed mid-stream and the other takes over: exact. */
static void test_two_instances_one_killed(void **st)
{
    (void)st;
    redisContext *r = fresh_db();
    producer_t p;
    producer_open(&p, "group", 6);
    gen_t g;
    gen_init(&g, 4);
    memset(&g_m0, 0, sizeof(g_m0));
    char log[512], group[64];
    log_path(log, sizeof(log), "group");
    snprintf(group, sizeof(group), "g-group-%d", (int)getpid());
    pid_t a = spawn_speed(p.topic, group, g_redis_url, "1000", log, NULL);
    pid_t b = spawn_speed(p.topic, group, g_redis_url, "1000", log, NULL);
    usleep(4000000); /* both joined */
    produce_events(&p, &g, &g_m0, 50000, -1);
    producer_flush(&p);
    usleep(300000);
    kill9(b);
    produce_events(&p, &g, &g_m0, 50000, -1);
    producer_flush(&p);
    wait_caught_up(r, group, &p, 6, 120);
    check_view_model(r, 0, &g_m0);
    stop_speed(a);
    gen_free(&g);
    producer_close(&p);
    redisFree(r);
}

static void produce_marker(producer_t *p, int partition, const char *k)
{
    produce(p, partition, NULL, 0, NULL, 0, k);
}

/* Markers put later events into epoch k; publishing run k deletes epochs < k and later epoch-0 events are skipped. */
static void test_markers_and_publish(void **st)
{
    (void)st;
    redisContext *r = fresh_db();
    producer_t p;
    producer_open(&p, "epochs", 3);
    gen_t g;
    gen_init(&g, 5);
    memset(&g_m0, 0, sizeof(g_m0));
    memset(&g_m1, 0, sizeof(g_m1));
    for (int i = 0; i < 3; i++)
        produce_events(&p, &g, &g_m0, 300, i);
    produce_marker(&p, 0, "1");
    produce_marker(&p, 1, "1");
    /* a record with a value and a lam-cut header is an event of epoch 1, not a marker: only empty records
     * are read for lam-cut (the archiver does the same) */
    gen_event(&g, &g_m1);
    const char *idq = strstr(g.canon.data, "\"id\":\"") + 6;
    produce(&p, 0, idq, (size_t)(strchr(idq, '"') - idq), g.canon.data, g.canon.len, "7");
    produce_events(&p, &g, &g_m1, 300, 0);
    produce_events(&p, &g, &g_m1, 300, 1);
    produce_events(&p, &g, &g_m0, 300, 2); /* no marker in partition 2 yet: still epoch 0 */
    producer_flush(&p);

    char log[512], group[64];
    log_path(log, sizeof(log), "epochs");
    snprintf(group, sizeof(group), "g-epochs-%d", (int)getpid());
    pid_t pid = spawn_speed(p.topic, group, g_redis_url, NULL, log, NULL);
    wait_caught_up(r, group, &p, 3, 60);
    check_view_model(r, 0, &g_m0);
    check_view_model(r, 1, &g_m1);
    assert_int_equal(rint_cmd(r, "HGET lam:speed:%s:epochs 0", group), 1);
    assert_int_equal(rint_cmd(r, "HGET lam:speed:%s:epochs 1", group), 1);
    assert_int_equal(rint_cmd(r, "HGET lam:speed:%s:epochs 2", group), 0);
    assert_int_equal(rint_cmd(r, "ZCARD lam:rt:epochs"), 2);
    long long hll0 = rint_cmd(r, "SCARD lam:rt:hidx:0:distinct_users_per_day:%lld", (long long)BASE_TS);
    assert_int_equal(hll0, 1);

    /* publish run 1: epoch 0 disappears */
    freeReplyObject(rcmd(r, "SET lam:batch:current 1"));
    int gone = 0;
    for (int i = 0; i < 60 && !gone; i++) {
        usleep(100000);
        gone = rint_cmd(r, "ZCARD lam:rt:epochs") == 1 && rint_cmd(r, "EXISTS lam:rt:idx:0:events_by_type") == 0;
    }
    assert_true(gone);
    const char *views[] = {"events_by_type", "page_views_by_url", "page_views_by_country", "purchases_by_item",
                           "revenue", "cart_adds_by_item", "signups", "distinct_users_per_day"};
    for (size_t v = 0; v < LAM_ARRAY_SIZE(views); v++) {
        assert_int_equal(rint_cmd(r, "EXISTS lam:rt:idx:0:%s", views[v]), 0);
        for (int h = 0; h < HOURS; h++) {
            assert_int_equal(rint_cmd(r, "EXISTS lam:rt:0:%s:%lld", views[v], (long long)hour_ts(h)), 0);
            assert_int_equal(rint_cmd(r, "EXISTS lam:rt:hidx:0:%s:%lld", views[v], (long long)hour_ts(h)), 0);
        }
    }
    assert_int_equal(rint_cmd(r, "EXISTS lam:rt:0:distinct_users_per_day:%lld:hll:0:[]", (long long)BASE_TS), 0);
    check_view_model(r, 1, &g_m1);

    /* epoch-0 events consumed after the publish are skipped; after the marker they count in epoch 1 */
    model_t *skipped = lam_calloc(1, sizeof(model_t));
    long long old0 = stat_field(r, group, "skipped_old_total");
    long mark = g.nsent;
    long d = produce_events(&p, &g, skipped, 200, 2);
    /* never re-send a skipped event later: it was not counted anywhere, so it would count as new */
    for (long i = mark; i < g.nsent; i++)
        lam_free(g.sent[i]);
    g.nsent = mark;
    produce_marker(&p, 2, "1");
    produce_events(&p, &g, &g_m1, 200, 2);
    producer_flush(&p);
    wait_caught_up(r, group, &p, 3, 60);
    check_view_model(r, 1, &g_m1);
    assert_int_equal(rint_cmd(r, "EXISTS lam:rt:idx:0:events_by_type"), 0);
    assert_int_equal(rint_cmd(r, "HGET lam:speed:%s:epochs 2", group), 1);
    assert_int_equal(wait_stat(r, group, "skipped_old_total", old0 + 200 + d), old0 + 200 + d);
    lam_free(skipped);
    stop_speed(pid);
    gen_free(&g);
    producer_close(&p);
    redisFree(r);
}

/* /healthz and /metrics on LAM_SPEED_ADDR. */
static void test_http_endpoints(void **st)
{
    (void)st;
    redisContext *r = fresh_db();
    producer_t p;
    producer_open(&p, "http", 2);
    gen_t g;
    gen_init(&g, 6);
    memset(&g_m0, 0, sizeof(g_m0));
    produce_events(&p, &g, &g_m0, 1000, -1);
    producer_flush(&p);
    char log[512], group[64], addr[64];
    log_path(log, sizeof(log), "http");
    snprintf(group, sizeof(group), "g-http-%d", (int)getpid());
    pid_t pid = spawn_speed(p.topic, group, g_redis_url, NULL, log, addr);
    wait_caught_up(r, group, &p, 2, 60);
    usleep(2500000); /* lag and epochs gauges refresh every second */
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "curl -fsS http://%s/metrics", addr);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    lam_buf_t out = LAM_BUF_INIT;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        lam_buf_append(&out, buf, n);
    assert_int_equal(pclose(f), 0);
    assert_non_null(strstr(out.data, "lam_speed_events_total 1"));
    assert_non_null(strstr(out.data, "lam_speed_partition_lag{partition=\"0\"} 0"));
    assert_non_null(strstr(out.data, "lam_speed_partition_epoch{partition=\"1\"} 0"));
    assert_non_null(strstr(out.data, "lam_speed_batch_records_bucket"));
    assert_non_null(strstr(out.data, "lam_speed_batch_write_seconds_count"));
    lam_buf_free(&out);
    snprintf(cmd, sizeof(cmd), "curl -fsS http://%s/healthz >/dev/null", addr);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(stat_field(r, group, "lag:0"), 0);
    stop_speed(pid);
    gen_free(&g);
    producer_close(&p);
    redisFree(r);
}

/*
 * librdkafka 2.0 holds a partition's fetcher back while the consumer queue is over queued.max.messages.kbytes
 * and looks again only when its broker thread wakes (once a second when nothing else happens): the speed
 * layer's fetch kicker wakes it once the queue drained (README "Prefetch"). A queue threshold far below one
 * 64 KB fetch makes every fetch hold the fetcher back, so the kicker must act: the catch-up is exact and the
 * kicks are counted (the time is printed, not asserted: 4.2 s without the kicker, 1.7-1.9 s with it, when written).
 */
static void test_fetch_kicker(void **st)
{
    (void)st;
    redisContext *r = fresh_db();
    producer_t p;
    producer_open(&p, "kick", 2);
    gen_t g;
    gen_init(&g, 7);
    memset(&g_m0, 0, sizeof(g_m0));
    long dups = produce_events(&p, &g, &g_m0, 40000, -1);
    producer_flush(&p);
    char log[512], group[64], addr[64];
    log_path(log, sizeof(log), "kick");
    snprintf(group, sizeof(group), "g-kick-%d", (int)getpid());
    setenv("LAM_KAFKA_X_QUEUED_MAX_MESSAGES_KBYTES", "16", 1);
    setenv("LAM_KAFKA_X_FETCH_MAX_BYTES", "65536", 1);
    setenv("LAM_KAFKA_X_MAX_PARTITION_FETCH_BYTES", "65536", 1);
    setenv("LAM_KAFKA_X_MESSAGE_MAX_BYTES", "65536", 1);
    pid_t pid = spawn_speed(p.topic, group, g_redis_url, NULL, log, addr);
    unsetenv("LAM_KAFKA_X_QUEUED_MAX_MESSAGES_KBYTES");
    unsetenv("LAM_KAFKA_X_FETCH_MAX_BYTES");
    unsetenv("LAM_KAFKA_X_MAX_PARTITION_FETCH_BYTES");
    unsetenv("LAM_KAFKA_X_MESSAGE_MAX_BYTES");
    int64_t t0 = lam_now_mono_ms();
    wait_caught_up(r, group, &p, 2, 60);
    fprintf(stderr, "fetch kicker: caught up in %.1f s\n", (double)(lam_now_mono_ms() - t0) / 1000.0);
    check_view_model(r, 0, &g_m0);
    assert_int_equal(wait_metric(addr, "lam_speed_events_total", 40000), 40000);
    assert_int_equal(wait_metric(addr, "lam_speed_duplicates_total", dups), dups);
    long long kicks = wait_metric(addr, "lam_speed_fetch_kicks_total", -2);
    fprintf(stderr, "fetch kicker: %lld kicks\n", kicks);
    assert_true(kicks > 0);
    stop_speed(pid);
    gen_free(&g);
    producer_close(&p);
    redisFree(r);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every real-time key of the database, as text: hashes field by field, HLLs as their registers (dense), zsets
 * and sets member by member; sorted, so that two runs that wrote the same state give the same text. */
static void dump_rt_state(redisContext *r, lam_buf_t *out)
{
    redisReply *ks = rcmd(r, "KEYS lam:rt:*");
    assert_int_equal(ks->type, REDIS_REPLY_ARRAY);
    char **lines = lam_malloc((ks->elements + 1) * sizeof(*lines));
    size_t nl = 0;
    for (size_t i = 0; i < ks->elements; i++) {
        const char *k = ks->element[i]->str;
        lam_buf_t b = LAM_BUF_INIT;
        redisReply *t = rcmd(r, "TYPE %s", k);
        lam_buf_printf(&b, "%s %s:", k, t->str);
        redisReply *v = NULL;
        if (!strcmp(t->str, "hash")) {
            v = rcmd(r, "HGETALL %s", k);
            /* field order in a hash is not the write order: sort the pairs */
            size_t np = v->elements / 2;
            char **pairs = lam_malloc((np + 1) * sizeof(*pairs));
            for (size_t j = 0; j < np; j++) {
                lam_buf_t pb = LAM_BUF_INIT;
                lam_buf_printf(&pb, " %s=%s", v->element[2 * j]->str, v->element[2 * j + 1]->str);
                pairs[j] = lam_strndup(pb.data, pb.len);
                lam_buf_free(&pb);
            }
            qsort(pairs, np, sizeof(*pairs), cmp_str);
            for (size_t j = 0; j < np; j++) {
                lam_buf_printf(&b, "%s", pairs[j]);
                lam_free(pairs[j]);
            }
            lam_free(pairs);
        } else if (!strcmp(t->str, "string")) {
            /* an HLL: compare registers, not the sparse encoding (which may depend on the order of PFADDs) */
            v = rcmd(r, "GET %s", k);
            lam_hll_t *h = lam_hll_new();
            char err[256];
            assert_int_equal(lam_hll_merge_redis_blob(h, v->str, v->len, err, sizeof(err)), 0);
            uint8_t dense[LAM_HLL_DENSE_SIZE];
            lam_hll_to_redis_dense(h, dense);
            uint64_t fp = 1469598103934665603ULL;
            for (size_t j = 0; j < sizeof(dense); j++)
                fp = (fp ^ dense[j]) * 1099511628211ULL;
            lam_buf_printf(&b, " registers %016llx", (unsigned long long)fp);
            lam_hll_free(h);
        } else if (!strcmp(t->str, "zset")) {
            v = rcmd(r, "ZRANGE %s 0 -1 WITHSCORES", k);
            for (size_t j = 0; j < v->elements; j++)
                lam_buf_printf(&b, " %s", v->element[j]->str);
        } else if (!strcmp(t->str, "set")) {
            v = rcmd(r, "SORT %s ALPHA", k);
            for (size_t j = 0; j < v->elements; j++)
                lam_buf_printf(&b, " %s", v->element[j]->str);
        }
        if (v)
            freeReplyObject(v);
        freeReplyObject(t);
        lines[nl++] = lam_strndup(b.data, b.len);
        lam_buf_free(&b);
    }
    qsort(lines, nl, sizeof(*lines), cmp_str);
    for (size_t i = 0; i < nl; i++) {
        lam_buf_printf(out, "%s\n", lines[i]);
        lam_free(lines[i]);
    }
    lam_free(lines);
    freeReplyObject(ks);
}

/*
 * The projected scan (lam_event_parse_projected, the views' fields only) and the full parser give the same
 * Redis state (README "Parse"), and HLL keys made dense (LAM_SPEED_HLL_DENSE_AT) hold the registers PFADD
 * alone gives (README "Distinct"): generated events plus records the scan declines (nested objects, escapes)
 * or whose group key it leaves to the full parse (non-ASCII, quotes), numbers, booleans and null as group
 * values, a number as a distinct value, a string where a sum expects a number.
 */
static void test_projected_equals_full(void **st)
{
    (void)st;
    producer_t p;
    producer_open(&p, "proj", 2);
    gen_t g;
    gen_init(&g, 11);
    model_t *m = lam_calloc(1, sizeof(*m));
    produce_events(&p, &g, m, 3000, -1);
    static const char *odd[] = {
        "{\"id\":\"o1\",\"ts\":1767225601000,\"type\":\"page_view\",\"url\":\"/caf\xc3\xa9\",\"user\":\"u1\",\"geo.cc\":\"TH\"}",
        "{\"id\":\"o2\",\"ts\":1767225602000,\"type\":\"page_view\",\"url\":\"/a\\\"b\",\"user\":\"u2\",\"latency_ms\":5}",
        "{\"id\":\"o3\",\"ts\":1767225603000,\"type\":\"page_view\",\"url\":\"/n\",\"user\":\"u3\",\"geo\":{\"cc\":\"DE\"}}",
        "{\"id\":\"o4\",\"ts\":1767225604000,\"type\":\"purchase\",\"item\":12,\"price\":3.5,\"user\":\"u4\"}",
        "{\"id\":\"o5\",\"ts\":1767225605000,\"type\":\"purchase\",\"item\":true,\"price\":\"7\",\"user\":5}",
        "{\"id\":\"o6\",\"ts\":1767225606000,\"type\":\"purchase\",\"item\":null,\"price\":-2,\"user\":null}",
        "{\"id\":\"o7\",\"ts\":1767225607000,\"type\":\"purchase\",\"price\":1e2,\"user\":\"u\xe2\x82\xac\"}",
        "{\"id\":\"o8\",\"ts\":1767225608000,\"type\":\"page_view\",\"url\":\"/p\\u00e9\",\"user\":\"u8\",\"geo.cc\":\"\xc3\x85X\"}",
        "{\"id\":\"o9\",\"ts\":1767225609000,\"type\":\"add_to_cart\",\"item\":\"sword\",\"qty\":2.25,\"user\":\"u9\"}",
        "{\"ts\":1767225610000,\"type\":\"page_view\",\"url\":\"/noid\",\"user\":\"u10\"}",
    };
    for (size_t i = 0; i < LAM_ARRAY_SIZE(odd); i++)
        produce(&p, (int)(i % 2), "k", 1, odd[i], strlen(odd[i]), NULL);
    producer_flush(&p);

    lam_buf_t state[2] = {LAM_BUF_INIT, LAM_BUF_INIT};
    size_t dense_full = 0;
    for (int full = 1; full >= 0; full--) {
        redisContext *r = fresh_db();
        char log[512], group[64];
        log_path(log, sizeof(log), full ? "proj-full" : "proj-scan");
        snprintf(group, sizeof(group), "g-proj-%d-%d", full, (int)getpid());
        setenv("LAM_SPEED_FULL_PARSE", full ? "1" : "0", 1);
        setenv("LAM_SPEED_HLL_DENSE_AT", full ? "0" : "16", 1); /* the scan run also makes HLLs dense early */
        pid_t pid = spawn_speed(p.topic, group, g_redis_url, "700", log, NULL);
        unsetenv("LAM_SPEED_FULL_PARSE");
        unsetenv("LAM_SPEED_HLL_DENSE_AT");
        wait_caught_up(r, group, &p, 2, 60);
        stop_speed(pid);
        dump_rt_state(r, &state[full]);
        /* HLL keys: more dense ones with LAM_SPEED_HLL_DENSE_AT (without it only Redis's own conversion of
         * the largest); the temporary dense key never outlives its transaction */
        redisReply *ks = rcmd(r, "KEYS lam:rt:*:hll:*");
        size_t dense = 0;
        for (size_t i = 0; i < ks->elements; i++)
            dense += rint_cmd(r, "STRLEN %s", ks->element[i]->str) == LAM_HLL_DENSE_SIZE;
        fprintf(stderr, "projected: %s run: %zu of %zu HLL keys dense\n", full ? "full-parse" : "scan", dense, ks->elements);
        assert_true(ks->elements > 10);
        if (full)
            dense_full = dense;
        else
            assert_true(dense > dense_full + 10);
        freeReplyObject(ks);
        ks = rcmd(r, "KEYS *dense-hll*");
        assert_int_equal(ks->elements, 0);
        freeReplyObject(ks);
        redisFree(r);
    }
    assert_true(state[1].len > 1000);
    if (state[0].len != state[1].len || memcmp(state[0].data, state[1].data, state[0].len)) {
        size_t i = 0;
        while (i < state[0].len && i < state[1].len && state[0].data[i] == state[1].data[i])
            i++;
        size_t from = i > 200 ? i - 200 : 0;
        fail_msg("projected scan and full parse differ at byte %zu:\n  full: %.400s\n  scan: %.400s", i,
                 state[1].data + from, state[0].data + from);
    }
    lam_buf_free(&state[0]);
    lam_buf_free(&state[1]);
    lam_free(m);
    gen_free(&g);
    producer_close(&p);
}

int main(void)
{
    g_brokers = lam_test_env("LAM_KAFKA_BROKERS", "127.0.0.1:9092");
    redis_url_db(lam_test_env("LAM_REDIS_URL", "redis://127.0.0.1:6379"), g_redis_url, sizeof(g_redis_url));
    const char *only = getenv("ITEST_SPEED_ONLY");
    struct CMUnitTest all[] = {
        cmocka_unit_test_teardown(test_replay_exact, kill_children),
        cmocka_unit_test_teardown(test_markers_and_publish, kill_children),
        cmocka_unit_test_teardown(test_http_endpoints, kill_children),
        cmocka_unit_test_teardown(test_dedup_across_sessions, kill_children),
        cmocka_unit_test_teardown(test_command_error_in_exec, kill_children),
        cmocka_unit_test_teardown(test_dedup_over_budget, kill_children),
        cmocka_unit_test_teardown(test_kill9_three_times, kill_children),
        cmocka_unit_test_teardown(test_redis_restart, kill_children),
        cmocka_unit_test_teardown(test_two_instances_one_killed, kill_children),
        cmocka_unit_test_teardown(test_fetch_kicker, kill_children),
        cmocka_unit_test_teardown(test_projected_equals_full, kill_children),
    };
    if (only)
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests_name("itest_speed", all, NULL, NULL);
}
