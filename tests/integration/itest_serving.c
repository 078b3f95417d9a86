/* itest_serving.c - serving against real Redis/PostgreSQL written per shared/STORAGE.md by this test. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "lam_agg.h"
#include "lam_event.h"
#include "lam_json.h"
#include "lam_mem.h"
#include "lam_pg.h"
#include "lam_redis.h"
#include "lam_service.h"
#include "lam_store.h"
#include "lam_view.h"
#include "testlib.h"

#define T0 978307200000LL /* 2001-01-01T00:00:00Z */
#define HOUR 3600000LL
#define DAY 86400000LL
#define NHOURS 48
#define NITEMS 5
#define NUSERS 300
#define MAX_EVENTS 20000

/* ---------------------------------------------------------------- environment */

static char pg_url[512], redis_url[512], dbname[64];
static lam_views_t *views;
static PGconn *pg;
static redisContext *rds;
static pid_t srv_a = -1, srv_b = -1;
static int port_a, port_b;
static char dash_dir[512];

/* ---------------------------------------------------------------- a tiny HTTP client */

typedef struct resp {
    int status;
    char *raw;
    char *body;
    size_t len;
} resp_t;

static void resp_free(resp_t *r)
{
    lam_free(r->raw);
    memset(r, 0, sizeof(*r));
}

/* Sends the request (target verbatim, no normalisation) and reads until close. */
static int http(int port, const char *method, const char *target, const char *headers, resp_t *r)
{
    memset(r, 0, sizeof(*r));
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(s);
        return -1;
    }
    lam_buf_t q = LAM_BUF_INIT;
    lam_buf_printf(&q, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s\r\n", method, target,
                   headers ? headers : "", !strcmp(method, "POST") ? "Content-Length: 0\r\n" : "");
    size_t off = 0;
    while (off < q.len) {
        ssize_t w = write(s, q.data + off, q.len - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    lam_buf_free(&q);
    lam_buf_t in = LAM_BUF_INIT;
    char buf[65536];
    ssize_t n;
    while ((n = read(s, buf, sizeof(buf))) > 0)
        lam_buf_append(&in, buf, (size_t)n);
    close(s);
    if (!in.data)
        return -1;
    r->raw = lam_buf_detach(&in, NULL);
    r->status = atoi(r->raw + 9);
    char *e = strstr(r->raw, "\r\n\r\n");
    r->body = e ? e + 4 : r->raw + strlen(r->raw);
    r->len = strlen(r->body);
    return 0;
}

static const char *header_of(const resp_t *r, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    const char *p = r->raw;
    out[0] = '\0';
    while ((p = strstr(p, "\r\n")) && p < r->body - 2) {
        p += 2;
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t k = strcspn(v, "\r");
            snprintf(out, outsz, "%.*s", (int)k, v);
            return out;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- a tiny JSON tree for responses */

typedef struct jv {
    lam_json_tok_t t; /* OBJECT, ARRAY, STRING, NUMBER, TRUE, FALSE, NULL */
    char *s;          /* decoded string or number text */
    size_t n;         /* children */
    struct jv *kids;
    char **keys;
} jv_t;

static int jparse(lam_json_t *j, lam_json_tok_t t, jv_t *v)
{
    memset(v, 0, sizeof(*v));
    v->t = t;
    if (t == LAM_JSON_STRING || t == LAM_JSON_NUMBER) {
        v->s = lam_malloc(j->tok_len + 1);
        size_t k = t == LAM_JSON_STRING ? lam_json_decode(j->tok, j->tok_len, v->s, NULL) : j->tok_len;
        if (t == LAM_JSON_NUMBER)
            memcpy(v->s, j->tok, k);
        v->s[k] = '\0';
        return 0;
    }
    if (t != LAM_JSON_OBJECT && t != LAM_JSON_ARRAY)
        return t == LAM_JSON_TRUE || t == LAM_JSON_FALSE || t == LAM_JSON_NULL ? 0 : -1;
    for (;;) {
        lam_json_tok_t c = lam_json_next(j);
        if (c == LAM_JSON_OBJECT_END || c == LAM_JSON_ARRAY_END)
            return 0;
        char *key = NULL;
        if (t == LAM_JSON_OBJECT) {
            if (c != LAM_JSON_KEY)
                return -1;
            key = lam_malloc(j->tok_len + 1);
            key[lam_json_decode(j->tok, j->tok_len, key, NULL)] = '\0';
            c = lam_json_next(j);
        }
        v->kids = lam_realloc(v->kids, (v->n + 1) * sizeof(jv_t));
        v->keys = lam_realloc(v->keys, (v->n + 1) * sizeof(char *));
        v->keys[v->n] = key;
        if (jparse(j, c, &v->kids[v->n++]) < 0)
            return -1;
    }
}

static void jfree(jv_t *v)
{
    for (size_t i = 0; i < v->n; i++) {
        jfree(&v->kids[i]);
        lam_free(v->keys[i]);
    }
    lam_free(v->kids);
    lam_free(v->keys);
    lam_free(v->s);
}

static int jload(const char *text, jv_t *v)
{
    lam_json_t j;
    lam_json_init(&j, text, strlen(text), 0);
    return jparse(&j, lam_json_next(&j), v);
}

static jv_t *jget(jv_t *v, const char *key)
{
    if (!v || v->t != LAM_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < v->n; i++)
        if (!strcmp(v->keys[i], key))
            return &v->kids[i];
    return NULL;
}

static int64_t jint(jv_t *v)
{
    return v && v->t == LAM_JSON_NUMBER ? strtoll(v->s, NULL, 10) : INT64_MIN;
}

static int64_t jmicro(jv_t *v)
{
    int64_t m;
    if (!v || v->t != LAM_JSON_NUMBER || lam_agg_micro_parse(v->s, strlen(v->s), &m) < 0)
        return INT64_MIN;
    return m;
}

/* ---------------------------------------------------------------- generated events */

typedef struct tev {
    int64_t ts;
    int purchase;
    int item; /* -1 = absent */
    int64_t cents;
    int user;
    int epoch;
    char json[256];
} tev_t;

static tev_t *evs;
static size_t nevs;
static const char *items[NITEMS] = {"sword", "shield", "potion", "bow", "caf\xc3\xa9 \"quoted\""};

static void gen_events(size_t n, int epoch)
{
    for (size_t i = 0; i < n && nevs < MAX_EVENTS; i++) {
        tev_t *e = &evs[nevs++];
        e->epoch = epoch;
        e->ts = T0 + (int64_t)(lam_test_rand() % (NHOURS * HOUR));
        e->purchase = lam_test_rand() % 10 < 7;
        e->item = lam_test_rand() % 10 == 0 ? -1 : (int)(lam_test_rand() % NITEMS);
        e->cents = 1 + (int64_t)(lam_test_rand() % 99999);
        e->user = (int)(lam_test_rand() % NUSERS);
        lam_buf_t b = LAM_BUF_INIT;
        lam_buf_printf(&b, "{\"ts\":%lld,\"type\":\"%s\"", (long long)e->ts, e->purchase ? "purchase" : "page_view");
        if (e->item >= 0) {
            lam_buf_append_str(&b, ",\"item\":");
            lam_json_append_cstr(&b, items[e->item]);
        }
        lam_buf_printf(&b, ",\"price\":%lld.%02lld,\"user\":\"u%d\",\"url\":\"/p/%d\",\"geo\":{\"cc\":\"TH\"}}",
                       (long long)(e->cents / 100), (long long)(e->cents % 100), e->user, e->user % 7);
        snprintf(e->json, sizeof(e->json), "%s", b.data);
        lam_buf_free(&b);
    }
}

/* Expected purchases_by_item over events with epoch in [emin, emax): plain counting. */
typedef struct expcell {
    int64_t count, sum, min, max;
    uint8_t users[NUSERS];
    int batch, speed;
} expcell_t;

/* bucket index: hour (0..47), day (0..1) or 0 for all; group: item 0..4, 5 = null */
static expcell_t *expected(int64_t bucket_ms, int emax, int published)
{
    int nb = bucket_ms ? (int)(NHOURS * HOUR / bucket_ms) : 1;
    expcell_t *x = lam_calloc((size_t)nb * (NITEMS + 1), sizeof(expcell_t));
    for (size_t i = 0; i < nevs; i++) {
        tev_t *e = &evs[i];
        if (!e->purchase || e->epoch >= emax)
            continue;
        int b = bucket_ms ? (int)((e->ts - T0) / bucket_ms) : 0;
        expcell_t *c = &x[b * (NITEMS + 1) + (e->item < 0 ? NITEMS : e->item)];
        int64_t micro = e->cents * 10000;
        if (!c->count || micro < c->min)
            c->min = micro;
        if (!c->count || micro > c->max)
            c->max = micro;
        c->count++;
        c->sum += micro;
        c->users[e->user] = 1;
        if (e->epoch < published)
            c->batch = 1;
        else
            c->speed = 1;
    }
    return x;
}

static int group_of(jv_t *key)
{
    if (!key || key->t != LAM_JSON_ARRAY || key->n != 1)
        return -2;
    if (key->kids[0].t == LAM_JSON_NULL)
        return NITEMS;
    for (int i = 0; i < NITEMS; i++)
        if (key->kids[0].t == LAM_JSON_STRING && !strcmp(key->kids[0].s, items[i]))
            return i;
    return -2;
}

static char *get_ok(int port, const char *target, jv_t *doc)
{
    resp_t r;
    assert_int_equal(http(port, "GET", target, NULL, &r), 0);
    if (r.status != 200)
        fprintf(stderr, "GET %s -> %d %s\n", target, r.status, r.body);
    assert_int_equal(r.status, 200);
    assert_int_equal(jload(r.body, doc), 0);
    char *raw = r.raw;
    return raw;
}

/* Compare the served purchases_by_item against plain counting. Returns the number of groups seen. */
static size_t check_purchases(const char *gran, int64_t bucket_ms, int emax, int published)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/views/purchases_by_item?from=%lld&to=%lld&granularity=%s", (long long)T0,
             (long long)(T0 + NHOURS * HOUR), gran);
    jv_t doc;
    char *raw = get_ok(port_a, target, &doc);
    expcell_t *x = expected(bucket_ms, emax, published);
    int nb = bucket_ms ? (int)(NHOURS * HOUR / bucket_ms) : 1;
    size_t want = 0, seen = 0;
    for (int i = 0; i < nb * (NITEMS + 1); i++)
        want += x[i].count > 0;
    jv_t *buckets = jget(&doc, "buckets");
    assert_non_null(buckets);
    for (size_t b = 0; b < buckets->n; b++) {
        jv_t *bk = &buckets->kids[b];
        int64_t ts = jint(jget(bk, "ts"));
        int bi = bucket_ms ? (int)((ts - T0) / bucket_ms) : 0;
        assert_true(bi >= 0 && bi < nb);
        if (!bucket_ms)
            assert_int_equal(ts, 0);
        jv_t *groups = jget(bk, "groups");
        int any_batch = 0, any_speed = 0;
        for (size_t g = 0; g < groups->n; g++) {
            jv_t *gr = &groups->kids[g];
            int gi = group_of(jget(gr, "key"));
            assert_true(gi >= 0);
            expcell_t *c = &x[bi * (NITEMS + 1) + gi];
            any_batch |= c->batch;
            any_speed |= c->speed;
            if (jint(jget(gr, "count")) != c->count)
                fprintf(stderr, "%s bucket %lld group %d: count %lld want %lld\n", gran, (long long)ts, gi,
                        (long long)jint(jget(gr, "count")), (long long)c->count);
            assert_int_equal(jint(jget(gr, "count")), c->count);
            assert_int_equal(jmicro(jget(gr, "sum:price")), c->sum);
            assert_int_equal(jmicro(jget(gr, "min:price")), c->min);
            assert_int_equal(jmicro(jget(gr, "max:price")), c->max);
            int64_t du = 0;
            for (int u = 0; u < NUSERS; u++)
                du += c->users[u];
            int64_t est = jint(jget(gr, "distinct:user"));
            int64_t tol = du / 50 > 1 ? du / 50 : 1;
            if (llabs(est - du) > tol)
                fprintf(stderr, "distinct %lld vs %lld\n", (long long)est, (long long)du);
            assert_true(llabs(est - du) <= tol);
            seen++;
        }
        const char *src = jget(bk, "source")->s;
        const char *want_src = any_batch && any_speed ? "both" : any_batch ? "batch" : "speed";
        if (strcmp(src, want_src))
            fprintf(stderr, "bucket %lld source %s want %s\n", (long long)ts, src, want_src);
        assert_string_equal(src, want_src);
    }
    assert_int_equal(seen, want);
    jv_t *cov = jget(&doc, "coverage");
    if (published)
        assert_int_equal(jint(jget(cov, "batch_run")), published);
    else
        assert_int_equal(jget(cov, "batch_run")->t, LAM_JSON_NULL);
    lam_free(x);
    jfree(&doc);
    lam_free(raw);
    return seen;
}

/* ---------------------------------------------------------------- writing the storage contract */

static void redis_cmd_ok(int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(rds, argc, argv, lens);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "redis %s: %s\n", argv[0], r->str);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

/* What the speed layer would write for the events of one epoch. */
static void write_epoch(int epoch)
{
    char err[256];
    lam_agg_t *agg = lam_agg_new(views);
    lam_event_t ev;
    lam_event_init(&ev);
    lam_buf_t key = LAM_BUF_INIT, hk = LAM_BUF_INIT, fld = LAM_BUF_INIT, gk = LAM_BUF_INIT;
    char num[32], num2[32];
    int pending = 0;
    for (size_t i = 0; i < nevs; i++) {
        if (evs[i].epoch != epoch)
            continue;
        assert_int_equal(lam_event_parse(&ev, evs[i].json, strlen(evs[i].json), T0, -1, err, sizeof(err)), 0);
        lam_agg_add_event(agg, &ev);
        for (size_t vi = 0; vi < lam_views_count(views); vi++) {
            const lam_view_t *v = lam_views_get(views, vi);
            int64_t bucket;
            lam_buf_clear(&gk);
            if (!lam_agg_event_cell(v, &ev, &bucket, &gk))
                continue;
            for (size_t m = 0; m < v->nmetrics; m++) {
                if (v->metrics[m].kind != LAM_METRIC_DISTINCT)
                    continue;
                const lam_field_t *f = lam_view_field(&ev, &v->metrics[m].field);
                if (!f || f->type == LAM_VAL_NULL)
                    continue;
                lam_store_rt_hll_key(&key, epoch, v->name, bucket, m, gk.data, gk.len);
                const char *a[3] = {"PFADD", key.data, f->val};
                size_t l[3] = {5, key.len, f->val_len};
                redisAppendCommandArgv(rds, 3, a, l);
                lam_store_rt_hidx_key(&hk, epoch, v->name, bucket);
                const char *s[3] = {"SADD", hk.data, key.data};
                size_t sl[3] = {4, hk.len, key.len};
                redisAppendCommandArgv(rds, 3, s, sl);
                pending += 2;
            }
        }
    }
    size_t it = 0;
    lam_cell_t *c;
    while ((c = lam_agg_next(agg, &it))) {
        const lam_view_t *v = lam_views_get(views, lam_cell_view(c));
        size_t klen;
        const char *k = lam_cell_key(c, &klen);
        lam_store_rt_hash_key(&hk, epoch, v->name, lam_cell_ts(c));
        for (size_t m = 0; m <= v->nmetrics; m++) {
            int64_t val = 0;
            if (m == 0) {
                val = lam_cell_count(c);
            } else {
                lam_metric_kind_t kind = v->metrics[m - 1].kind;
                if (kind == LAM_METRIC_COUNT || kind == LAM_METRIC_DISTINCT ||
                    lam_cell_sum(c, m - 1, &val) != LAM_CELL_VALUE)
                    continue;
            }
            lam_store_rt_field(&fld, m, k, klen);
            snprintf(num, sizeof(num), "%lld", (long long)val);
            const char *a[4] = {"HSET", hk.data, fld.data, num};
            size_t l[4] = {4, hk.len, fld.len, strlen(num)};
            redisAppendCommandArgv(rds, 4, a, l);
            pending++;
        }
        lam_store_rt_idx_key(&key, epoch, v->name);
        snprintf(num, sizeof(num), "%lld", (long long)lam_cell_ts(c));
        const char *z[4] = {"ZADD", key.data, num, num};
        redisAppendCommandArgv(rds, 4, z, NULL);
        pending++;
    }
    snprintf(num2, sizeof(num2), "%d", epoch);
    const char *z[4] = {"ZADD", LAM_STORE_EPOCHS_KEY, num2, num2};
    redisAppendCommandArgv(rds, 4, z, NULL);
    pending++;
    for (int i = 0; i < pending; i++) {
        redisReply *r;
        assert_int_equal(redisGetReply(rds, (void **)&r), REDIS_OK);
        assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
        freeReplyObject(r);
    }
    lam_event_free(&ev);
    lam_agg_free(agg);
    lam_buf_free(&key);
    lam_buf_free(&hk);
    lam_buf_free(&fld);
    lam_buf_free(&gk);
}

/* What the speed layer does after a publish of run k: drop real-time keys of epochs < k. */
static void delete_epochs_below(int k)
{
    lam_buf_t key = LAM_BUF_INIT, hk = LAM_BUF_INIT;
    for (int e = 0; e < k; e++) {
        for (size_t vi = 0; vi < lam_views_count(views); vi++) {
            const lam_view_t *v = lam_views_get(views, vi);
            lam_store_rt_idx_key(&key, e, v->name);
            redisReply *r = redisCommand(rds, "ZRANGE %b 0 -1", key.data, key.len);
            for (size_t i = 0; r && i < r->elements; i++) {
                int64_t b = strtoll(r->element[i]->str, NULL, 10);
                lam_store_rt_hidx_key(&hk, e, v->name, b);
                redisReply *s = redisCommand(rds, "SMEMBERS %b", hk.data, hk.len);
                for (size_t j = 0; s && j < s->elements; j++)
                    freeReplyObject(redisCommand(rds, "DEL %b", s->element[j]->str, s->element[j]->len));
                freeReplyObject(s);
                freeReplyObject(redisCommand(rds, "DEL %b", hk.data, hk.len));
                lam_store_rt_hash_key(&hk, e, v->name, b);
                freeReplyObject(redisCommand(rds, "DEL %b", hk.data, hk.len));
            }
            freeReplyObject(r);
            freeReplyObject(redisCommand(rds, "DEL %b", key.data, key.len));
        }
        freeReplyObject(redisCommand(rds, "ZREM %s %d", LAM_STORE_EPOCHS_KEY, e));
    }
    lam_buf_free(&key);
    lam_buf_free(&hk);
}

static void pg_ok(const char *sql, int n, const char *const *params)
{
    char err[512];
    if (lam_pg_exec(pg, sql, n, params, err, sizeof(err)) < 0)
        fail_msg("%s: %s", sql, err);
}

/* What the batch layer does for run k: rows of epochs < k, publish in one transaction, SET current. */
static void publish_run(int k, int delay_ms)
{
    char err[256], run[16];
    snprintf(run, sizeof(run), "%d", k);
    lam_agg_t *agg = lam_agg_new(views);
    lam_event_t ev;
    lam_event_init(&ev);
    for (size_t i = 0; i < nevs; i++)
        if (evs[i].epoch < k) {
            assert_int_equal(lam_event_parse(&ev, evs[i].json, strlen(evs[i].json), T0, -1, err, sizeof(err)), 0);
            lam_agg_add_event(agg, &ev);
        }
    const char *rp[1] = {run};
    pg_ok("INSERT INTO lam_runs (run, status, started_at) VALUES ($1, 'running', now())"
          " ON CONFLICT (run) DO UPDATE SET status = 'running'", 1, rp);
    pg_ok("BEGIN", 0, NULL);
    lam_buf_t state = LAM_BUF_INIT;
    size_t it = 0;
    lam_cell_t *c;
    while ((c = lam_agg_next(agg, &it))) {
        const lam_view_t *v = lam_views_get(views, lam_cell_view(c));
        size_t klen;
        const char *key = lam_cell_key(c, &klen);
        char bucket[24], count[24];
        snprintf(bucket, sizeof(bucket), "%lld", (long long)lam_cell_ts(c));
        snprintf(count, sizeof(count), "%lld", (long long)lam_cell_count(c));
        lam_buf_clear(&state);
        lam_cell_serialize(v, c, &state);
        char *kz = lam_strndup(key, klen);
        const char *params[6] = {run, v->name, bucket, kz, count, state.data};
        int lens[6] = {0, 0, 0, 0, 0, (int)state.len};
        int fmts[6] = {0, 0, 0, 0, 0, 1};
        PGresult *res = PQexecParams(pg,
                                     "INSERT INTO lam_view_rows (run, view, bucket, gkey, count, state)"
                                     " VALUES ($1, $2, $3, $4, $5, $6)",
                                     6, NULL, params, lens, fmts, 0);
        assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);
        lam_free(kz);
    }
    pg_ok("COMMIT", 0, NULL);
    lam_buf_free(&state);
    lam_agg_free(agg);
    lam_event_free(&ev);
    pg_ok("BEGIN", 0, NULL);
    pg_ok("INSERT INTO lam_published (singleton, run) VALUES (true, $1) ON CONFLICT (singleton)"
          " DO UPDATE SET run = EXCLUDED.run, published_at = now()", 1, rp);
    pg_ok("UPDATE lam_runs SET status = 'succeeded', finished_at = now(), cut_at = now() WHERE run = $1", 1, rp);
    /* Even runs publish without NOTIFY, as if the notification were lost: serving must notice the
     * new run from lam:batch:current alone (or keep reading the old run consistently). */
    if (k % 2)
        pg_ok("SELECT pg_notify('lam_batch_published', $1)", 1, rp);
    pg_ok("COMMIT", 0, NULL);
    if (delay_ms)
        usleep((useconds_t)delay_ms * 1000);
    const char *a[3] = {"SET", LAM_STORE_CURRENT_KEY, run};
    redis_cmd_ok(3, a, NULL);
    if (delay_ms)
        usleep((useconds_t)delay_ms * 1000);
    delete_epochs_below(k);
    pg_ok("DELETE FROM lam_view_rows WHERE run < $1::bigint - 1", 1, rp);
}

/* ---------------------------------------------------------------- serving processes */

static pid_t start_serving(int port, const char *token, const char *dash, const char *cors)
{
    pid_t pid = fork();
    if (pid == 0) {
        char addr[64], bin[1024];
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
        snprintf(bin, sizeof(bin), "%s/serving", lam_test_env("LAM_BIN_DIR", "build/bin"));
        setenv("LAM_SERVING_ADDR", addr, 1);
        setenv("LAM_PG_URL", pg_url, 1);
        setenv("LAM_REDIS_URL", redis_url, 1);
        setenv("LAM_LOG_LEVEL", "warn", 1);
        setenv("LAM_SERVING_THREADS", "4", 1);
        /* A answers from fresh reads only (exact right after each write); B reuses answers for 100 ms */
        setenv("LAM_SERVING_RESULT_MS", token ? "100" : "0", 1);
        if (token)
            setenv("LAM_ADMIN_TOKEN", token, 1);
        else
            unsetenv("LAM_ADMIN_TOKEN");
        setenv("LAM_DASHBOARDS_DIR", dash ? dash : "/nonexistent-lam-dashboards", 1);
        if (cors)
            setenv("LAM_CORS_ORIGINS", cors, 1);
        else
            unsetenv("LAM_CORS_ORIGINS");
        execl(bin, bin, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        resp_t r;
        if (http(port, "GET", "/healthz", NULL, &r) == 0) {
            int st = r.status;
            resp_free(&r);
            if (st == 200)
                return pid;
        }
        usleep(50000);
    }
    fprintf(stderr, "serving on port %d did not become healthy\n", port);
    return pid;
}

static void stop_serving(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGTERM);
        int st;
        waitpid(*pid, &st, 0);
        *pid = -1;
    }
}

static int setup(void **state)
{
    (void)state;
    char err[512];
    const char *base = lam_test_env("LAM_PG_URL", "postgresql://lam@127.0.0.1:5432/lam");
    snprintf(dbname, sizeof(dbname), "itest_serving_%d", (int)getpid());
    PGconn *admin = lam_pg_connect(base, err, sizeof(err));
    if (!admin) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname); /* our own identifier, not user text */
    if (lam_pg_exec(admin, sql, 0, NULL, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        PQfinish(admin);
        return -1;
    }
    PQfinish(admin);
    const char *slash = strrchr(base, '/');
    snprintf(pg_url, sizeof(pg_url), "%.*s/%s", (int)(slash - base), base, dbname);
    pg = lam_pg_connect(pg_url, err, sizeof(err));
    if (!pg || lam_store_pg_migrate(pg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    const char *r = lam_test_env("LAM_REDIS_URL", "redis://127.0.0.1:6379");
    const char *rs = strchr(r + 8, '/');
    snprintf(redis_url, sizeof(redis_url), "%.*s/5", rs ? (int)(rs - r) : (int)strlen(r), r);
    rds = lam_redis_connect(redis_url, 5000, err, sizeof(err));
    if (!rds) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    freeReplyObject(redisCommand(rds, "FLUSHDB"));
    views = lam_views_load(lam_test_env("LAM_VIEWS", "shared/views.json"), err, sizeof(err));
    if (!views) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    evs = lam_calloc(MAX_EVENTS, sizeof(tev_t));
    /* dashboards: an index, an asset, a symlink leading out */
    snprintf(dash_dir, sizeof(dash_dir), "%s/itest_serving_dash_%d", lam_test_env("LAM_TEST_TMP", "/tmp"),
             (int)getpid());
    mkdir(dash_dir, 0755);
    char p[700];
    snprintf(p, sizeof(p), "%s/index.html", dash_dir);
    FILE *f = fopen(p, "w");
    fputs("<!doctype html><title>dash</title>", f);
    fclose(f);
    snprintf(p, sizeof(p), "%s/app", dash_dir);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/app/app.js", dash_dir);
    f = fopen(p, "w");
    fputs("console.log(1);\n", f);
    fclose(f);
    snprintf(p, sizeof(p), "%s/app/index.html", dash_dir);
    f = fopen(p, "w");
    fputs("<!doctype html><title>app</title>", f);
    fclose(f);
    /* dashboard files: a good one, a malformed one, and files that are not dashboards */
    snprintf(p, sizeof(p), "%s/good.json", dash_dir);
    f = fopen(p, "w");
    fputs("{\"id\":\"good\",\"title\":\"Good \\\"one\\\"\",\"panels\":[]}", f);
    fclose(f);
    snprintf(p, sizeof(p), "%s/broken.json", dash_dir);
    f = fopen(p, "w");
    fputs("{\"id\":\"broken\",\"title\":", f);
    fclose(f);
    snprintf(p, sizeof(p), "%s/package.json", dash_dir);
    f = fopen(p, "w");
    fputs("{\"name\":\"x\"}", f);
    fclose(f);
    snprintf(p, sizeof(p), "%s/leak", dash_dir);
    symlink("/etc/passwd", p);
    port_a = lam_test_free_port();
    port_b = lam_test_free_port();
    srv_a = start_serving(port_a, NULL, NULL, NULL);
    srv_b = start_serving(port_b, "s3cret-token", dash_dir, "https://ok.example");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    stop_serving(&srv_a);
    stop_serving(&srv_b);
    if (rds) {
        freeReplyObject(redisCommand(rds, "FLUSHDB"));
        redisFree(rds);
    }
    PQfinish(pg);
    char err[512];
    PGconn *admin = lam_pg_connect(lam_test_env("LAM_PG_URL", "postgresql://lam@127.0.0.1:5432/lam"), err, sizeof(err));
    if (admin) {
        char sql[128];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
        lam_pg_exec(admin, sql, 0, NULL, err, sizeof(err));
        PQfinish(admin);
    }
    lam_views_free(views);
    lam_free(evs);
    return 0;
}

/* ---------------------------------------------------------------- tests */

static void test_views_list(void **st)
{
    (void)st;
    jv_t doc;
    char *raw = get_ok(port_a, "/v1/views", &doc);
    jv_t *vs = jget(&doc, "views");
    assert_non_null(vs);
    assert_int_equal(vs->n, lam_views_count(views));
    assert_string_equal(jget(&vs->kids[0], "name")->s, lam_views_get(views, 0)->name);
    jfree(&doc);
    lam_free(raw);
}

static void test_phase1_speed_only(void **st)
{
    (void)st;
    gen_events(3000, 0);
    write_epoch(0);
    assert_true(check_purchases("hour", HOUR, 1, 0) > 50);
    check_purchases("day", DAY, 1, 0);
    check_purchases("all", 0, 1, 0);
}

static void test_phase2_batch_only(void **st)
{
    (void)st;
    publish_run(1, 0);
    /* the notification may take a moment; the Redis check makes even a stale run exact */
    check_purchases("hour", HOUR, 1, 1);
    check_purchases("day", DAY, 1, 1);
    check_purchases("all", 0, 1, 1);
}

static void test_phase3_both(void **st)
{
    (void)st;
    gen_events(3000, 1);
    write_epoch(1);
    check_purchases("hour", HOUR, 2, 1);
    check_purchases("day", DAY, 2, 1);
    check_purchases("all", 0, 2, 1);
}

/* A day bucket equals the sum of its hours, all equals the sum of the days (revenue: no group_by). */
static void test_rollups_sum_up(void **st)
{
    (void)st;
    char t[256];
    int64_t hour_sum[2] = {0}, hour_cnt[2] = {0};
    snprintf(t, sizeof(t), "/v1/views/purchases_by_item?from=%lld&to=%lld&where.item=sword,bow",
             (long long)T0, (long long)(T0 + NHOURS * HOUR));
    jv_t doc;
    char *raw = get_ok(port_a, t, &doc);
    jv_t *b = jget(&doc, "buckets");
    for (size_t i = 0; i < b->n; i++) {
        int d = (int)((jint(jget(&b->kids[i], "ts")) - T0) / DAY);
        jv_t *g = jget(&b->kids[i], "groups");
        for (size_t k = 0; k < g->n; k++) {
            int gi = group_of(jget(&g->kids[k], "key"));
            assert_true(gi == 0 || gi == 3); /* where.item=sword,bow */
            hour_cnt[d] += jint(jget(&g->kids[k], "count"));
            hour_sum[d] += jmicro(jget(&g->kids[k], "sum:price"));
        }
    }
    jfree(&doc);
    lam_free(raw);
    snprintf(t, sizeof(t), "/v1/views/purchases_by_item?from=%lld&to=%lld&where.item=sword,bow&granularity=day",
             (long long)T0, (long long)(T0 + NHOURS * HOUR));
    raw = get_ok(port_a, t, &doc);
    b = jget(&doc, "buckets");
    assert_int_equal(b->n, 2);
    for (size_t i = 0; i < 2; i++) {
        int64_t cnt = 0, sum = 0;
        jv_t *g = jget(&b->kids[i], "groups");
        for (size_t k = 0; k < g->n; k++) {
            cnt += jint(jget(&g->kids[k], "count"));
            sum += jmicro(jget(&g->kids[k], "sum:price"));
        }
        assert_int_equal(cnt, hour_cnt[i]);
        assert_int_equal(sum, hour_sum[i]);
    }
    jfree(&doc);
    lam_free(raw);
    /* revenue (day view, no group_by) with granularity=all equals the total of all purchases */
    snprintf(t, sizeof(t), "/v1/views/revenue?from=%lld&to=%lld&granularity=all", (long long)T0,
             (long long)(T0 + NHOURS * HOUR));
    raw = get_ok(port_a, t, &doc);
    b = jget(&doc, "buckets");
    assert_int_equal(b->n, 1);
    jv_t *g = &jget(&b->kids[0], "groups")->kids[0];
    assert_int_equal(jget(g, "key")->t, LAM_JSON_ARRAY);
    assert_int_equal(jget(g, "key")->n, 0);
    int64_t cnt = 0, sum = 0;
    for (size_t i = 0; i < nevs; i++)
        if (evs[i].purchase) {
            cnt++;
            sum += evs[i].cents * 10000;
        }
    assert_int_equal(jint(jget(g, "count")), cnt);
    assert_int_equal(jmicro(jget(g, "sum:price")), sum);
    assert_string_equal(jget(&b->kids[0], "source")->s, "both");
    jfree(&doc);
    lam_free(raw);
}

static void test_top_and_order(void **st)
{
    (void)st;
    char t[256];
    snprintf(t, sizeof(t), "/v1/views/purchases_by_item?from=%lld&to=%lld&granularity=all&top=2&order=sum:price",
             (long long)T0, (long long)(T0 + NHOURS * HOUR));
    jv_t doc;
    char *raw = get_ok(port_a, t, &doc);
    expcell_t *x = expected(0, 2, 1);
    int best = -1, second = -1;
    for (int i = 0; i <= NITEMS; i++) {
        if (best < 0 || x[i].sum > x[best].sum) {
            second = best;
            best = i;
        } else if (second < 0 || x[i].sum > x[second].sum) {
            second = i;
        }
    }
    jv_t *g = jget(&jget(&doc, "buckets")->kids[0], "groups");
    assert_int_equal(g->n, 2);
    assert_int_equal(group_of(jget(&g->kids[0], "key")), best);
    assert_int_equal(group_of(jget(&g->kids[1], "key")), second);
    lam_free(x);
    jfree(&doc);
    lam_free(raw);
    /* top by distinct (HLL union over the range) and by count at hourly granularity */
    snprintf(t, sizeof(t), "/v1/views/purchases_by_item?from=%lld&to=%lld&granularity=all&top=3&order=distinct:user",
             (long long)T0, (long long)(T0 + NHOURS * HOUR));
    raw = get_ok(port_a, t, &doc);
    assert_int_equal(jget(&jget(&doc, "buckets")->kids[0], "groups")->n, 3);
    jfree(&doc);
    lam_free(raw);
    snprintf(t, sizeof(t), "/v1/views/purchases_by_item?from=%lld&to=%lld&top=1", (long long)T0,
             (long long)(T0 + NHOURS * HOUR));
    raw = get_ok(port_a, t, &doc);
    x = expected(0, 2, 1);
    best = 0;
    for (int i = 1; i <= NITEMS; i++)
        if (x[i].count > x[best].count)
            best = i;
    jv_t *b = jget(&doc, "buckets");
    assert_true(b->n > 10);
    for (size_t i = 0; i < b->n; i++) {
        g = jget(&b->kids[i], "groups");
        assert_int_equal(g->n, 1);
        assert_int_equal(group_of(jget(&g->kids[0], "key")), best);
    }
    lam_free(x);
    jfree(&doc);
    lam_free(raw);
}

/* ---- a reader hammering while runs are published: never a double count or a gap ---- */

typedef struct hammer {
    volatile int stop;
    int port;
    int64_t want_count, want_sum;
    long ok, wrong, unavailable;
    char last_wrong[256];
} hammer_t;

static void *hammer_main(void *arg)
{
    hammer_t *h = arg;
    char t[256];
    snprintf(t, sizeof(t), "/v1/views/purchases_by_item?from=%lld&to=%lld&granularity=all", (long long)T0,
             (long long)(T0 + NHOURS * HOUR));
    while (!h->stop) {
        resp_t r;
        if (http(h->port, "GET", t, NULL, &r) < 0) {
            h->wrong++;
            continue;
        }
        if (r.status == 503) {
            h->unavailable++;
        } else {
            jv_t doc;
            int64_t cnt = 0, sum = 0;
            if (r.status == 200 && jload(r.body, &doc) == 0) {
                jv_t *b = jget(&doc, "buckets");
                for (size_t i = 0; b && i < b->n; i++) {
                    jv_t *g = jget(&b->kids[i], "groups");
                    for (size_t k = 0; k < g->n; k++) {
                        cnt += jint(jget(&g->kids[k], "count"));
                        sum += jmicro(jget(&g->kids[k], "sum:price"));
                    }
                }
                jfree(&doc);
            }
            if (cnt == h->want_count && sum == h->want_sum) {
                h->ok++;
            } else {
                h->wrong++;
                snprintf(h->last_wrong, sizeof(h->last_wrong), "status %d count %lld want %lld", r.status,
                         (long long)cnt, (long long)h->want_count);
            }
        }
        resp_free(&r);
    }
    return NULL;
}

static void test_publish_race_never_double_counts(void **st)
{
    (void)st;
    /* epochs 2..5 already in Redis (the speed layer ran ahead), then runs 2..5 publish one by one */
    for (int e = 2; e <= 5; e++) {
        gen_events(800, e);
        write_epoch(e);
    }
    hammer_t h[4] = {0};
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        h[i].port = i < 3 ? port_a : port_b;
        for (size_t k = 0; k < nevs; k++)
            if (evs[k].purchase) {
                h[i].want_count++;
                h[i].want_sum += evs[k].cents * 10000;
            }
        pthread_create(&th[i], NULL, hammer_main, &h[i]);
    }
    usleep(200000);
    for (int k = 2; k <= 6; k++) {
        publish_run(k, k % 2 ? 30 : 0);
        usleep(100000);
    }
    usleep(200000);
    long ok = 0, wrong = 0, unav = 0;
    for (int i = 0; i < 4; i++) {
        h[i].stop = 1;
        pthread_join(th[i], NULL);
        ok += h[i].ok;
        wrong += h[i].wrong;
        unav += h[i].unavailable;
        if (h[i].wrong)
            fprintf(stderr, "hammer %d: %s\n", i, h[i].last_wrong);
    }
    fprintf(stderr, "publish race: %ld exact answers, %ld wrong, %ld 503\n", ok, wrong, unav);
    assert_int_equal(wrong, 0);
    assert_true(ok > 20);
    assert_true(unav * 10 <= ok);
    /* after the last publish everything comes from batch run 6 */
    check_purchases("hour", HOUR, 6, 6);
}

/* ---- hostile queries ---- */

static void expect_status(int port, const char *method, const char *target, int want)
{
    resp_t r;
    assert_int_equal(http(port, method, target, NULL, &r), 0);
    if (r.status != want)
        fprintf(stderr, "%s %.120s -> %d (want %d) %s\n", method, target, r.status, want, r.body);
    assert_int_equal(r.status, want);
    if (want >= 400 && want != 414 && want != 431) {
        jv_t doc;
        assert_int_equal(jload(r.body, &doc), 0);
        jv_t *e = jget(&doc, "error");
        assert_non_null(e);
        assert_non_null(jget(e, "code"));
        assert_non_null(jget(e, "message"));
        jfree(&doc);
    }
    resp_free(&r);
}

static void test_hostile_queries(void **st)
{
    (void)st;
    const char *v = "/v1/views/purchases_by_item";
    char t[300];
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?where.item=%27%3B%20DROP%20TABLE%20lam_runs%3B--", 200);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?from=1%27%20OR%20%271%27%3D%271", 400);
    expect_status(port_a, "GET", "/v1/views/x%27%20OR%201%3D1--", 404);
    expect_status(port_a, "GET", "/v1/views/%C3%BCnic%C3%B8de", 404);
    /* "%00x": libmicrohttpd's unescaping truncates the path at the NUL (see serving/README.md) */
    expect_status(port_a, "GET", "/v1/views/%00purchases_by_item", 404);
    expect_status(port_a, "GET", "/v1/views/../../etc/passwd", 404);
    expect_status(port_a, "GET", "/../../etc/passwd", 404);
    expect_status(port_a, "GET", "/%2e%2e/%2e%2e/etc/passwd", 404);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?from=1&from=2", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?where.item=a&where.item=b", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?foo=1", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?where.price=1", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?granularity=minute", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?granularity=fortnight", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?top=0", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?top=1001", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?top=1e3", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?order=avg:price", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?from=2001-01-02T00:00:00Z&to=2001-01-01T00:00:00Z", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?from=5&to=5", 400);
    expect_status(port_a, "GET", "/v1/views/purchases_by_item?from=yesterday", 400);
    expect_status(port_a, "GET", "/v1/views/events_by_type?from=0&to=978307200000", 400); /* > 10000 minutes */
    expect_status(port_a, "GET", "/v1/views/events_by_type?from=0&to=978307200000&granularity=month", 200);
    expect_status(port_a, "POST", v, 405);
    expect_status(port_a, "DELETE", "/v1/batch/runs", 405);
    expect_status(port_a, "GET", "/v1/nothing", 404);
    expect_status(port_a, "GET", "/v1/batch/runs/abc", 404);
    expect_status(port_a, "GET", "/v1/batch/runs/999999", 404);
    expect_status(port_a, "GET", "/v1/batch/runs?limit=0", 400);
    expect_status(port_a, "GET", "/v1/batch/runs?sort=x", 400);
    /* 10k-character parameters */
    size_t n = 10000;
    char *big = lam_malloc(n + 200);
    int k = snprintf(big, 200, "%s?where.item=", v);
    memset(big + k, 'A', n);
    big[k + (int)n] = '\0';
    expect_status(port_a, "GET", big, 200);
    k = snprintf(big, 200, "%s?", v);
    memset(big + k, 'B', n);
    strcpy(big + k + n, "=1");
    expect_status(port_a, "GET", big, 400);
    k = snprintf(big, 200, "%s?from=", v);
    memset(big + k, '9', n);
    big[k + (int)n] = '\0';
    expect_status(port_a, "GET", big, 400);
    lam_free(big);
    /* still healthy, and the table the SQL-looking value named is still there */
    expect_status(port_a, "GET", "/healthz", 200);
    snprintf(t, sizeof(t), "/v1/batch/runs");
    expect_status(port_a, "GET", t, 200);
}

/* ---- batch control ---- */

static int64_t post_run(int port, const char *hdr, int want_status)
{
    resp_t r;
    assert_int_equal(http(port, "POST", "/v1/batch/runs", hdr, &r), 0);
    if (r.status != want_status)
        fprintf(stderr, "POST -> %d %s\n", r.status, r.body);
    assert_int_equal(r.status, want_status);
    int64_t run = -1;
    if (r.status == 202) {
        jv_t doc;
        assert_int_equal(jload(r.body, &doc), 0);
        run = jint(jget(&doc, "run"));
        assert_string_equal(jget(&doc, "status")->s, "requested");
        jfree(&doc);
    }
    resp_free(&r);
    return run;
}

static void test_batch_runs_control(void **st)
{
    (void)st;
    /* token unset: loopback may request; a second request coalesces */
    pg_ok("LISTEN lam_batch_runs", 0, NULL);
    int64_t a = post_run(port_a, NULL, 202);
    assert_true(a >= 7);
    /* the batch layer is told */
    PGnotify *n = NULL;
    for (int i = 0; i < 50 && !n; i++) {
        PQconsumeInput(pg);
        if (!(n = PQnotifies(pg)))
            usleep(20000);
    }
    assert_non_null(n);
    assert_string_equal(n->relname, "lam_batch_runs");
    assert_int_equal(strtoll(n->extra, NULL, 10), a);
    PQfreemem(n);
    assert_int_equal(post_run(port_a, NULL, 202), a);
    /* the batch layer picks it up: a new request is a new run */
    char rs[24];
    snprintf(rs, sizeof(rs), "%lld", (long long)a);
    const char *p[1] = {rs};
    pg_ok("UPDATE lam_runs SET status = 'running', started_at = now(), records = 5, records_total = 10 WHERE run = $1",
          1, p);
    /* token set: 401 without or with a wrong token, 202 with it */
    post_run(port_b, NULL, 401);
    post_run(port_b, "Authorization: Bearer wrong\r\n", 401);
    post_run(port_b, "Authorization: Bearer s3cret-token-and-more\r\n", 401);
    post_run(port_b, "Authorization: Basic s3cret-token\r\n", 401);
    int64_t b = post_run(port_b, "Authorization: Bearer s3cret-token\r\n", 202);
    assert_int_equal(b, a + 1);
    char t[64];
    snprintf(t, sizeof(t), "/v1/batch/runs/%lld", (long long)a);
    jv_t doc;
    char *raw = get_ok(port_a, t, &doc);
    assert_string_equal(jget(&doc, "status")->s, "running");
    assert_int_equal(jint(jget(jget(&doc, "progress"), "records")), 5);
    assert_int_equal(jint(jget(jget(&doc, "progress"), "records_total")), 10);
    jfree(&doc);
    lam_free(raw);
    raw = get_ok(port_a, "/v1/batch/runs?limit=3", &doc);
    jv_t *runs = jget(&doc, "runs");
    assert_int_equal(runs->n, 3);
    assert_int_equal(jint(jget(&runs->kids[0], "run")), b);
    assert_int_equal(jint(jget(&runs->kids[1], "run")), a);
    jfree(&doc);
    lam_free(raw);
    raw = get_ok(port_a, "/v1/status", &doc);
    assert_int_equal(jint(jget(jget(&doc, "batch"), "current_run")), 6);
    assert_int_equal(jint(jget(jget(jget(&doc, "batch"), "last_run"), "run")), b);
    assert_non_null(jget(jget(&doc, "speed"), "lag"));
    assert_non_null(jget(jget(&doc, "archive"), "lag"));
    jfree(&doc);
    lam_free(raw);
}

/* ---- dashboard files, CSP, CORS ---- */

static void test_static_files_and_cors(void **st)
{
    (void)st;
    resp_t r;
    char h[256], etag[128];
    assert_int_equal(http(port_b, "GET", "/", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "<title>dash</title>"));
    assert_non_null(header_of(&r, "Content-Type", h, sizeof(h)));
    assert_non_null(strstr(h, "text/html"));
    assert_non_null(header_of(&r, "Content-Security-Policy", h, sizeof(h)));
    assert_non_null(strstr(h, "default-src 'self'"));
    resp_free(&r);
    assert_int_equal(http(port_b, "GET", "/app/app.js", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    header_of(&r, "Content-Type", h, sizeof(h));
    assert_non_null(strstr(h, "javascript"));
    assert_non_null(header_of(&r, "ETag", etag, sizeof(etag)));
    assert_non_null(header_of(&r, "Cache-Control", h, sizeof(h)));
    resp_free(&r);
    snprintf(h, sizeof(h), "If-None-Match: %s\r\n", etag);
    assert_int_equal(http(port_b, "GET", "/app/app.js", h, &r), 0);
    assert_int_equal(r.status, 304);
    resp_free(&r);
    expect_status(port_b, "GET", "/leak", 404);            /* symlink out of the directory */
    expect_status(port_b, "GET", "/../etc/passwd", 404);
    expect_status(port_b, "GET", "/%2e%2e%2fetc%2fpasswd", 404);
    expect_status(port_b, "GET", "/.%2e/.%2e/etc/passwd", 404);
    expect_status(port_b, "GET", "//etc/passwd", 404);
    expect_status(port_b, "GET", "/nope.html", 404);
    /* only the page and /app/ are files: dashboard sources and npm files are not */
    expect_status(port_b, "GET", "/package.json", 404);
    expect_status(port_b, "GET", "/good.json", 404);
    expect_status(port_b, "GET", "/node_modules/x.js", 404);
    /* /d/{id} is the app's page whatever the id; bad ids are 404 */
    assert_int_equal(http(port_b, "GET", "/d/good", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "<title>app</title>"));
    resp_free(&r);
    expect_status(port_b, "GET", "/d/..", 404);
    expect_status(port_b, "GET", "/d/a%2fb", 404);
    /* the dashboard list: sorted, titles decoded, malformed files flagged, npm files skipped */
    assert_int_equal(http(port_b, "GET", "/v1/dashboards", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "{\"id\":\"broken\",\"title\":\"broken\",\"error\":\"invalid JSON at byte"));
    assert_non_null(strstr(r.body, "{\"id\":\"good\",\"title\":\"Good \\\"one\\\"\"}"));
    assert_true(strstr(r.body, "\"broken\"") < strstr(r.body, "\"good\""));
    assert_null(strstr(r.body, "package"));
    resp_free(&r);
    assert_int_equal(http(port_b, "GET", "/v1/dashboards/broken", NULL, &r), 0);
    assert_int_equal(r.status, 200); /* the bytes as they are: the page reports where they break */
    assert_string_equal(r.body, "{\"id\":\"broken\",\"title\":");
    resp_free(&r);
    expect_status(port_b, "GET", "/v1/dashboards/package", 404);
    expect_status(port_b, "GET", "/v1/dashboards/nope", 404);
    expect_status(port_b, "GET", "/v1/dashboards/..%2fetc%2fpasswd", 404);
    expect_status(port_b, "POST", "/v1/dashboards", 405);
    /* no dashboard installed: a placeholder index */
    assert_int_equal(http(port_a, "GET", "/", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "not installed"));
    resp_free(&r);
    /* CORS: only listed origins, only where configured */
    assert_int_equal(http(port_b, "GET", "/v1/views", "Origin: https://ok.example\r\n", &r), 0);
    assert_non_null(header_of(&r, "Access-Control-Allow-Origin", h, sizeof(h)));
    assert_string_equal(h, "https://ok.example");
    resp_free(&r);
    assert_int_equal(http(port_b, "GET", "/v1/views", "Origin: https://evil.example\r\n", &r), 0);
    assert_null(header_of(&r, "Access-Control-Allow-Origin", h, sizeof(h)));
    resp_free(&r);
    assert_int_equal(http(port_a, "GET", "/v1/views", "Origin: https://ok.example\r\n", &r), 0);
    assert_null(header_of(&r, "Access-Control-Allow-Origin", h, sizeof(h)));
    resp_free(&r);
}

static void test_live_tail(void **st)
{
    (void)st;
    resp_t r;
    freeReplyObject(redisCommand(rds, "DEL lam:tail"));
    const char *evs3[] = {"{\"id\":\"t1\",\"ts\":1,\"type\":\"a\"}", "{\"id\":\"t2\",\"ts\":2,\"type\":\"b\"}",
                          "{\"id\":\"t3\",\"ts\":3,\"type\":\"c\\u0000\"}"};
    for (int i = 0; i < 3; i++)
        freeReplyObject(redisCommand(rds, "XADD lam:tail * event %s", evs3[i]));
    assert_int_equal(http(port_a, "GET", "/v1/tail?limit=2", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    char want[256];
    snprintf(want, sizeof(want), "{\"events\":[%s,%s]}\n", evs3[2], evs3[1]); /* newest first */
    assert_string_equal(r.body, want);
    resp_free(&r);
    assert_int_equal(http(port_a, "GET", "/v1/tail", NULL, &r), 0);
    assert_non_null(strstr(r.body, "\"t1\""));
    resp_free(&r);
    expect_status(port_a, "GET", "/v1/tail?limit=0", 400);
    expect_status(port_a, "GET", "/v1/tail?limit=501", 400);
    expect_status(port_a, "GET", "/v1/tail?limit=2x", 400);
    expect_status(port_a, "POST", "/v1/tail", 405);
}

static void test_metrics_exposed(void **st)
{
    (void)st;
    resp_t r;
    assert_int_equal(http(port_a, "GET", "/metrics", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "lam_serving_route_requests_total{route=\"view_query\",status=\"2xx\"}"));
    assert_non_null(strstr(r.body, "lam_serving_route_requests_total{route=\"view_query\",status=\"4xx\"}"));
    assert_non_null(strstr(r.body, "lam_serving_cache_hit_ratio"));
    assert_non_null(strstr(r.body, "lam_serving_backend_seconds_count{backend=\"redis\"}"));
    assert_non_null(strstr(r.body, "lam_serving_http_requests_total"));
    const char *retries = strstr(r.body, "\nlam_serving_query_retries_total ");
    assert_non_null(retries);
    fprintf(stderr, "queries re-read after a publish race: %lld\n", strtoll(retries + 33, NULL, 10));
    resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_views_list),
        cmocka_unit_test(test_phase1_speed_only),
        cmocka_unit_test(test_phase2_batch_only),
        cmocka_unit_test(test_phase3_both),
        cmocka_unit_test(test_rollups_sum_up),
        cmocka_unit_test(test_top_and_order),
        cmocka_unit_test(test_publish_race_never_double_counts),
        cmocka_unit_test(test_hostile_queries),
        cmocka_unit_test(test_batch_runs_control),
        cmocka_unit_test(test_static_files_and_cors),
        cmocka_unit_test(test_live_tail),
        cmocka_unit_test(test_metrics_exposed),
    };
    return cmocka_run_group_tests_name("itest_serving", tests, setup, teardown);
}
