/* test_hll.c - unit tests for lam_hll, including byte-for-byte compatibility with a real redis-server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "lam_hll.h"
#include "lam_mem.h"
#include "testlib.h"

static void test_local(void **state)
{
    (void)state;
    lam_hll_t *h = lam_hll_new();
    static uint8_t ref[LAM_HLL_REGISTERS], got[LAM_HLL_REGISTERS];
    memset(ref, 0, sizeof(ref));
    assert_int_equal(lam_hll_count(h), 0);
    assert_true(lam_hll_is_sparse(h));
    char buf[32];
    int was_sparse_at = -1;
    for (int i = 0; i < 200000; i++) {
        int n = snprintf(buf, sizeof(buf), "user-%d", i);
        lam_hll_add(h, buf, (size_t)n);
        /* reference: Redis's hllPatLen on a plain byte array */
        uint64_t hash = lam_hll_hash(buf, (size_t)n);
        unsigned idx = (unsigned)(hash & (LAM_HLL_REGISTERS - 1));
        hash >>= LAM_HLL_P;
        hash |= (uint64_t)1 << (64 - LAM_HLL_P);
        unsigned c = 1;
        while (!(hash & ((uint64_t)1 << (c - 1))))
            c++;
        if (c > ref[idx])
            ref[idx] = (uint8_t)c;
        if (lam_hll_is_sparse(h))
            was_sparse_at = i;
        if (i == 100 || i == 1500 || i == 199999) {
            lam_hll_registers(h, got);
            assert_memory_equal(got, ref, sizeof(ref));
        }
    }
    assert_true(was_sparse_at > 500 && was_sparse_at < 5000);
    assert_false(lam_hll_is_sparse(h));
    uint64_t est = lam_hll_count(h);
    assert_true(est > 196000 && est < 204000);
    assert_int_equal(lam_hll_add(h, "user-5", 6), 0); /* already counted: no register change */
    lam_hll_t *d = lam_hll_dup(h);
    assert_true(lam_hll_equal(h, d));
    lam_hll_clear(d);
    assert_int_equal(lam_hll_count(d), 0);
    assert_true(lam_hll_memory(h) > 12288);
    assert_true(lam_hll_memory(d) < 1024);
    /* small sets estimate exactly-ish */
    for (int i = 0; i < 100; i++) {
        int n = snprintf(buf, sizeof(buf), "x%d", i);
        lam_hll_add(d, buf, (size_t)n);
    }
    assert_true(lam_hll_count(d) >= 99 && lam_hll_count(d) <= 101);
    /* merge: sparse into dense, dense into sparse */
    lam_hll_t *e = lam_hll_dup(d);
    lam_hll_merge(e, h);
    lam_hll_merge(h, d);
    assert_true(lam_hll_equal(e, h));
    assert_int_equal(lam_hll_register(h, 0), lam_hll_register(e, 0));
    assert_int_equal(lam_hll_register(h, 99999), 0);
    lam_hll_free(e);
    lam_hll_free(d);
    lam_hll_free(h);
    lam_hll_free(NULL);
}

static void test_blobs(void **state)
{
    (void)state;
    lam_hll_t *h = lam_hll_new();
    lam_buf_t b = LAM_BUF_INIT;
    char buf[32];
    char err[128];
    int sizes[] = {0, 1, 5, 300, 1024, 1025, 20000};
    int added = 0;
    for (size_t s = 0; s < LAM_ARRAY_SIZE(sizes); s++) {
        for (; added < sizes[s]; added++) {
            int n = snprintf(buf, sizeof(buf), "v%d", added);
            lam_hll_add(h, buf, (size_t)n);
        }
        lam_buf_clear(&b);
        lam_hll_to_redis(h, &b);
        assert_memory_equal(b.data, "HYLL", 4);
        assert_int_equal((uint8_t)b.data[4], lam_hll_is_sparse(h) ? 1 : 0);
        lam_hll_t *r = lam_hll_new();
        assert_int_equal(lam_hll_merge_redis_blob(r, b.data, b.len, err, sizeof(err)), 0);
        assert_true(lam_hll_equal(r, h));
        assert_int_equal(lam_hll_count(r), lam_hll_count(h));
        /* cached cardinality in the header */
        uint64_t card = 0;
        for (int i = 0; i < 8; i++)
            card |= (uint64_t)(uint8_t)b.data[8 + i] << (8 * i);
        assert_int_equal(card, lam_hll_count(h));
        lam_hll_free(r);
    }
    /* corrupt blobs are rejected and leave dst unchanged */
    lam_hll_t *r = lam_hll_new();
    lam_hll_add(r, "keep", 4);
    lam_hll_t *before = lam_hll_dup(r);
    assert_int_equal(lam_hll_merge_redis_blob(r, "HYLX", 4, err, sizeof(err)), -1);
    assert_string_equal(err, "hll: not a Redis HyperLogLog");
    lam_buf_clear(&b);
    lam_hll_to_redis(h, &b); /* dense */
    assert_int_equal(lam_hll_merge_redis_blob(r, b.data, b.len - 1, err, sizeof(err)), -1);
    b.data[4] = 2;
    assert_int_equal(lam_hll_merge_redis_blob(r, b.data, b.len, err, sizeof(err)), -1);
    uint8_t sp[LAM_HLL_HDR_SIZE + 4] = {'H', 'Y', 'L', 'L', 1};
    sp[16] = 0x7f; /* XZERO of 16384 */
    sp[17] = 0xff;
    assert_int_equal(lam_hll_merge_redis_blob(r, sp, 18, err, sizeof(err)), 0);
    assert_int_equal(lam_hll_merge_redis_blob(r, sp, 17, err, sizeof(err)), -1); /* truncated XZERO */
    sp[18] = 0x80;                                                                   /* one register too many */
    assert_int_equal(lam_hll_merge_redis_blob(r, sp, 19, err, sizeof(err)), -1);
    assert_string_equal(err, "hll: corrupt sparse HyperLogLog");
    sp[16] = 0x3f; /* ZERO 64, then nothing: too few registers */
    assert_int_equal(lam_hll_merge_redis_blob(r, sp, 17, err, sizeof(err)), -1);
    assert_true(lam_hll_equal(r, before));
    lam_hll_free(before);
    lam_hll_free(r);
    lam_hll_free(h);
    lam_buf_free(&b);
}

/* ---- a throwaway redis-server ---- */

static pid_t g_redis_pid;
static char g_redis_dir[64];
static redisContext *g_rc;

static int have_redis_server(void)
{
    const char *path = getenv("PATH");
    if (!path)
        return 0;
    char *p = lam_strdup(path), *save = NULL;
    int found = 0;
    for (char *d = strtok_r(p, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char full[512];
        snprintf(full, sizeof(full), "%s/redis-server", d);
        found = access(full, X_OK) == 0;
    }
    lam_free(p);
    return found;
}

static int redis_setup(void **state)
{
    (void)state;
    if (!have_redis_server())
        return 0;
    snprintf(g_redis_dir, sizeof(g_redis_dir), "/tmp/lam_test_hll.XXXXXX");
    if (!mkdtemp(g_redis_dir))
        return -1;
    for (int attempt = 0; attempt < 5 && !g_rc; attempt++) {
        int port = lam_test_free_port();
        char ports[16];
        snprintf(ports, sizeof(ports), "%d", port);
        g_redis_pid = fork();
        if (g_redis_pid == 0) {
            int fd = open("/dev/null", O_WRONLY);
            dup2(fd, 1);
            dup2(fd, 2);
            execlp("redis-server", "redis-server", "--port", ports, "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", g_redis_dir, (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 100; i++) {
            usleep(50000);
            redisContext *c = redisConnect("127.0.0.1", port);
            if (c && !c->err) {
                redisReply *r = redisCommand(c, "PING");
                if (r && r->type == REDIS_REPLY_STATUS) {
                    freeReplyObject(r);
                    g_rc = c;
                    break;
                }
                if (r)
                    freeReplyObject(r);
            }
            if (c)
                redisFree(c);
            if (waitpid(g_redis_pid, NULL, WNOHANG) == g_redis_pid)
                break; /* died (port taken?): try another port */
        }
        if (!g_rc && g_redis_pid > 0) {
            kill(g_redis_pid, SIGKILL);
            waitpid(g_redis_pid, NULL, 0);
            g_redis_pid = 0;
        }
    }
    return g_rc ? 0 : -1;
}

static int redis_teardown(void **state)
{
    (void)state;
    if (g_rc)
        redisFree(g_rc);
    if (g_redis_pid > 0) {
        kill(g_redis_pid, SIGTERM);
        waitpid(g_redis_pid, NULL, 0);
    }
    if (g_redis_dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_redis_dir);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

static redisReply *cmd_argv(int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(g_rc, argc, argv, lens);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("redis error: %s", r->str);
    return r;
}

static redisReply *cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(g_rc, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("redis error: %s", r->str);
    return r;
}

/* PFADD key with values [from, to) of a family, in batches; mirror them into h. */
static void pfadd_range(const char *key, lam_hll_t *h, const char *prefix, int from, int to)
{
    enum { BATCH = 1000 };
    static char store[BATCH][32];
    const char *argv[BATCH + 2];
    size_t lens[BATCH + 2];
    for (int i = from; i < to;) {
        int n = 0;
        argv[0] = "PFADD";
        lens[0] = 5;
        argv[1] = key;
        lens[1] = strlen(key);
        for (; n < BATCH && i < to; n++, i++) {
            /* binary values: embed NUL bytes in every third one */
            int len = snprintf(store[n], sizeof(store[n]), "%s%d", prefix, i);
            if (i % 3 == 0)
                store[n][len++] = '\0';
            argv[n + 2] = store[n];
            lens[n + 2] = (size_t)len;
            lam_hll_add(h, store[n], (size_t)len);
        }
        freeReplyObject(cmd_argv(n + 2, argv, lens));
    }
}

static redisReply *get_key(const char *key)
{
    redisReply *r = cmd("GET %s", key);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    return r;
}

static long long pfcount(const char *key)
{
    redisReply *r = cmd("PFCOUNT %s", key);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void assert_dense_bytes_equal(const char *key, const lam_hll_t *h)
{
    assert_int_equal(pfcount(key), (long long)lam_hll_count(h)); /* also makes Redis cache the count */
    redisReply *r = get_key(key);
    static uint8_t ours[LAM_HLL_DENSE_SIZE];
    lam_hll_to_redis_dense(h, ours);
    assert_int_equal(r->len, LAM_HLL_DENSE_SIZE);
    assert_int_equal((uint8_t)r->str[4], 0); /* dense */
    if (memcmp(r->str, ours, LAM_HLL_DENSE_SIZE) != 0) {
        size_t i = 0;
        while (((const uint8_t *)r->str)[i] == ours[i])
            i++;
        fail_msg("%s: dense bytes differ at offset %zu", key, i);
    }
    freeReplyObject(r);
}

/* dense merges and counts work four registers at a time: they must equal the register-wise
 * definition (max of lam_hll_register) at every register, for HLL and Redis-blob sources alike */
static void test_dense_groupwise(void **state)
{
    (void)state;
    lam_hll_t *a = lam_hll_new(), *b = lam_hll_new(), *c = lam_hll_new();
    char e[32];
    for (int i = 0; i < 60000; i++) {
        int n = snprintf(e, sizeof(e), "a%d", i);
        lam_hll_add(a, e, (size_t)n);
        n = snprintf(e, sizeof(e), "b%d", i * 7);
        lam_hll_add(b, e, (size_t)n);
    }
    for (int i = 0; i < 3000; i++) { /* dense too, but with many empty registers */
        int n = snprintf(e, sizeof(e), "c%d", i);
        lam_hll_add(c, e, (size_t)n);
    }
    assert_false(lam_hll_is_sparse(a));
    assert_false(lam_hll_is_sparse(b));
    assert_false(lam_hll_is_sparse(c));
    static uint8_t want[LAM_HLL_REGISTERS], got[LAM_HLL_REGISTERS];
    for (unsigned r = 0; r < LAM_HLL_REGISTERS; r++) {
        unsigned x = lam_hll_register(a, r), y = lam_hll_register(b, r), z = lam_hll_register(c, r);
        unsigned m = x > y ? x : y;
        want[r] = (uint8_t)(m > z ? m : z);
    }
    lam_hll_t *m1 = lam_hll_dup(c);
    lam_hll_merge(m1, a);
    lam_hll_merge(m1, b);
    lam_hll_t *m2 = lam_hll_dup(c);
    static uint8_t blob[LAM_HLL_DENSE_SIZE];
    char err[128];
    lam_hll_to_redis_dense(a, blob);
    assert_int_equal(lam_hll_merge_redis_blob(m2, blob, sizeof(blob), err, sizeof(err)), 0);
    lam_hll_to_redis_dense(b, blob);
    assert_int_equal(lam_hll_merge_redis_blob(m2, blob, sizeof(blob), err, sizeof(err)), 0);
    for (unsigned r = 0; r < LAM_HLL_REGISTERS; r++) {
        assert_int_equal(lam_hll_register(m1, r), want[r]);
        assert_int_equal(lam_hll_register(m2, r), want[r]);
    }
    lam_hll_registers(m1, got);
    assert_memory_equal(got, want, LAM_HLL_REGISTERS);
    assert_true(lam_hll_equal(m1, m2));
    /* 123k distinct elements: the estimate is within 2 % */
    uint64_t n = lam_hll_count(m1);
    assert_true(n > 123000 * 98 / 100 && n < 123000 * 102 / 100);
    lam_hll_free(a);
    lam_hll_free(b);
    lam_hll_free(c);
    lam_hll_free(m1);
    lam_hll_free(m2);
}

/* a remembered count is used until the HLL changes, by any route, and travels with copies */
static void test_count_cache(void **state)
{
    (void)state;
    lam_hll_t *a = lam_hll_new(), *b = lam_hll_new(), *s = lam_hll_new();
    char e[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(e, sizeof(e), "x%d", i);
        lam_hll_add(a, e, (size_t)n);
        n = snprintf(e, sizeof(e), "y%d", i);
        lam_hll_add(b, e, (size_t)n);
    }
    for (int i = 0; i < 50; i++) {
        int n = snprintf(e, sizeof(e), "z%d", i);
        lam_hll_add(s, e, (size_t)n);
    }
    uint64_t c0 = lam_hll_count(a), cs = lam_hll_count(s);
    assert_int_equal(lam_hll_count_cache(a), c0);
    assert_int_equal(lam_hll_count_cache(s), cs);
    lam_hll_t *d = lam_hll_dup(a), *d2 = lam_hll_dup(a), *d3 = lam_hll_dup(s);
    assert_int_equal(lam_hll_count(d), c0);
    for (int i = 5000; i < 10000; i++) { /* add */
        int n = snprintf(e, sizeof(e), "x%d", i);
        lam_hll_add(a, e, (size_t)n);
    }
    assert_true(lam_hll_count(a) > c0 * 3 / 2);
    lam_hll_merge(d, b); /* merge */
    assert_true(lam_hll_count(d) > c0 * 3 / 2);
    static uint8_t blob[LAM_HLL_DENSE_SIZE];
    char err[128];
    lam_hll_to_redis_dense(b, blob);
    assert_int_equal(lam_hll_merge_redis_blob(d2, blob, sizeof(blob), err, sizeof(err)), 0); /* Redis blob */
    assert_true(lam_hll_count(d2) > c0 * 3 / 2);
    lam_hll_merge(d3, s); /* nothing new: same count */
    assert_int_equal(lam_hll_count(d3), cs);
    lam_hll_add(d3, "new one", 7); /* sparse add */
    lam_hll_add(d3, "and another", 11);
    assert_true(lam_hll_count(d3) > cs);
    lam_hll_clear(s);
    assert_int_equal(lam_hll_count(s), 0);
    lam_hll_free(a);
    lam_hll_free(b);
    lam_hll_free(s);
    lam_hll_free(d);
    lam_hll_free(d2);
    lam_hll_free(d3);
}

static void test_redis_dense(void **state)
{
    (void)state;
    if (!g_rc)
        skip(); /* redis-server is not installed */
    freeReplyObject(cmd("CONFIG SET hll-sparse-max-bytes 0"));
    lam_hll_t *h = lam_hll_new();
    /* special values first: empty, NUL alone, NUL inside */
    const char *argv[] = {"PFADD", "dense", "", "\0", "a\0b", "\xff\xfe"};
    size_t lens[] = {5, 5, 0, 1, 3, 2};
    freeReplyObject(cmd_argv(6, argv, lens));
    for (int i = 2; i < 6; i++)
        lam_hll_add(h, argv[i], lens[i]);
    assert_dense_bytes_equal("dense", h);
    int steps[] = {10, 1000, 20000, 200000};
    int done = 0;
    for (size_t s = 0; s < LAM_ARRAY_SIZE(steps); s++) {
        pfadd_range("dense", h, "user:", done, steps[s]);
        done = steps[s];
        assert_dense_bytes_equal("dense", h);
    }
    /* Redis can read our dense blob */
    static uint8_t ours[LAM_HLL_DENSE_SIZE];
    lam_hll_to_redis_dense(h, ours);
    freeReplyObject(cmd("SET ours %b", ours, (size_t)LAM_HLL_DENSE_SIZE));
    freeReplyObject(cmd("PFADD ours user:1")); /* no change, but validates the blob */
    assert_int_equal(pfcount("ours"), (long long)lam_hll_count(h));
    freeReplyObject(cmd("CONFIG SET hll-sparse-max-bytes 3000"));
    lam_hll_free(h);
}

static void test_redis_sparse_and_merge(void **state)
{
    (void)state;
    if (!g_rc)
        skip(); /* redis-server is not installed */
    freeReplyObject(cmd("CONFIG SET hll-sparse-max-bytes 3000"));
    lam_hll_t *a = lam_hll_new(), *b = lam_hll_new(), *big = lam_hll_new();
    pfadd_range("sa", a, "item-", 0, 120);
    pfadd_range("sb", b, "item-", 100, 300);
    pfadd_range("big", big, "u", 0, 50000);
    char err[128];
    /* Redis keeps small HLLs sparse; we read them */
    redisReply *r = get_key("sa");
    assert_int_equal((uint8_t)r->str[4], 1);
    lam_hll_t *fa = lam_hll_new();
    assert_int_equal(lam_hll_merge_redis_blob(fa, r->str, r->len, err, sizeof(err)), 0);
    freeReplyObject(r);
    assert_true(lam_hll_equal(fa, a));
    assert_int_equal(pfcount("sa"), (long long)lam_hll_count(a));
    /* PFMERGE of two sparse keys == our merge of their blobs */
    freeReplyObject(cmd("PFMERGE m sa sb"));
    lam_hll_t *fm = lam_hll_new();
    r = get_key("sb");
    assert_int_equal(lam_hll_merge_redis_blob(fm, r->str, r->len, err, sizeof(err)), 0);
    freeReplyObject(r);
    r = get_key("sa");
    assert_int_equal(lam_hll_merge_redis_blob(fm, r->str, r->len, err, sizeof(err)), 0);
    freeReplyObject(r);
    lam_hll_t *rm = lam_hll_new();
    r = get_key("m");
    assert_int_equal(lam_hll_merge_redis_blob(rm, r->str, r->len, err, sizeof(err)), 0);
    freeReplyObject(r);
    assert_true(lam_hll_equal(fm, rm));
    assert_int_equal(pfcount("m"), (long long)lam_hll_count(fm));
    /* PFMERGE with a dense key: byte-identical dense result */
    freeReplyObject(cmd("PFMERGE md sa sb big"));
    lam_hll_merge(fm, big);
    assert_dense_bytes_equal("md", fm);
    /* Redis reads our sparse encoding */
    lam_buf_t bl = LAM_BUF_INIT;
    lam_hll_to_redis(a, &bl);
    assert_int_equal((uint8_t)bl.data[4], 1);
    freeReplyObject(cmd("SET oursparse %b", bl.data, bl.len));
    freeReplyObject(cmd("DEL ourscopy"));
    freeReplyObject(cmd("PFMERGE ourscopy oursparse"));
    assert_int_equal(pfcount("ourscopy"), (long long)lam_hll_count(a));
    freeReplyObject(cmd("PFADD oursparse extra")); /* Redis accepts and updates our sparse blob */
    lam_hll_add(a, "extra", 5);
    assert_int_equal(pfcount("oursparse"), (long long)lam_hll_count(a));
    r = get_key("oursparse");
    lam_hll_t *back = lam_hll_new();
    assert_int_equal(lam_hll_merge_redis_blob(back, r->str, r->len, err, sizeof(err)), 0);
    freeReplyObject(r);
    assert_true(lam_hll_equal(back, a));
    lam_hll_free(back);
    lam_buf_free(&bl);
    lam_hll_free(a);
    lam_hll_free(b);
    lam_hll_free(big);
    lam_hll_free(fa);
    lam_hll_free(fm);
    lam_hll_free(rm);
}

/*
 * lam_hll_set_max(h, lam_hll_pat(hash)) is lam_hll_add_hash, and the updates of a set of hashes
 * give the same HLL (registers, sparse or dense, Redis string) in any order: the recompute's
 * pipeline queues them and applies them later, grouped by HLL.
 */
static void test_set_max_any_order(void **state)
{
    (void)state;
    enum { N = 1400 }; /* past LAM_HLL_SPARSE_MAX registers: the switch to dense happens midway */
    for (int round = 0; round < 2; round++) {
        size_t n = round ? N : 300;
        uint64_t hs[N];
        for (size_t i = 0; i < n; i++)
            hs[i] = lam_hll_hash(&i, sizeof(i)) ^ (lam_test_rand() & 0xffff00000000ULL);
        lam_hll_t *a = lam_hll_new(), *b = lam_hll_new();
        for (size_t i = 0; i < n; i++)
            lam_hll_add_hash(a, hs[i]);
        for (size_t i = n; i-- > 0;) { /* reverse order, each twice */
            unsigned val, reg = lam_hll_pat(hs[(i * 7919) % n], &val);
            lam_hll_set_max(b, reg, val);
            assert_int_equal(lam_hll_set_max(b, reg, val), 0); /* no change the second time */
        }
        assert_true(lam_hll_equal(a, b));
        assert_int_equal(lam_hll_is_sparse(a), lam_hll_is_sparse(b));
        assert_int_equal(lam_hll_is_sparse(a), round == 0);
        assert_int_equal(lam_hll_count(a), lam_hll_count(b));
        lam_buf_t x = LAM_BUF_INIT, y = LAM_BUF_INIT;
        lam_hll_to_redis(a, &x);
        lam_hll_to_redis(b, &y);
        assert_int_equal(x.len, y.len);
        assert_memory_equal(x.data, y.data, x.len);
        lam_buf_free(&x);
        lam_buf_free(&y);
        lam_hll_free(a);
        lam_hll_free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local),
        cmocka_unit_test(test_blobs),
        cmocka_unit_test(test_dense_groupwise),
        cmocka_unit_test(test_count_cache),
        cmocka_unit_test(test_set_max_any_order),
        cmocka_unit_test(test_redis_dense),
        cmocka_unit_test(test_redis_sparse_and_merge),
    };
    return cmocka_run_group_tests(tests, redis_setup, redis_teardown);
}
