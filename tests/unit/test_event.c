/* test_event.c - unit tests for lam_event (validation, flattening, canonical form) and lam_uuid. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>

#include "lam_event.h"
#include "lam_json.h"
#include "lam_mem.h"
#include "lam_time.h"
#include "lam_uuid.h"
#include "testlib.h"

#define NOW 1700000000000LL
#define DAY 86400000LL

static lam_event_t g_ev;
static char g_err[512];
static lam_buf_t g_out;

static int setup(void **state)
{
    (void)state;
    lam_event_init(&g_ev);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    lam_event_free(&g_ev);
    lam_event_free(NULL);
    lam_buf_free(&g_out);
    return 0;
}

static int parse_n(const char *s, size_t n)
{
    g_err[0] = '\0';
    return lam_event_parse(&g_ev, s, n, NOW, DAY, g_err, sizeof(g_err));
}

static int parse(const char *s)
{
    return parse_n(s, strlen(s));
}

static const char *canon(void)
{
    lam_buf_clear(&g_out);
    lam_event_canonical(&g_ev, &g_out);
    assert_int_equal(g_out.len, g_ev.canonical_len);
    return g_out.data;
}

#define OK(in, want)                                                                                               \
    do {                                                                                                           \
        if (parse(in) != 0)                                                                                        \
            fail_msg("rejected %s: %s", in, g_err);                                                                \
        assert_string_equal(canon(), want);                                                                        \
    } while (0)

#define BAD(in, msg)                                                                                               \
    do {                                                                                                           \
        if (parse(in) == 0)                                                                                        \
            fail_msg("accepted %s", in);                                                                           \
        if (strcmp(g_err, msg) != 0)                                                                               \
            fail_msg("%s: got error '%s', want '%s'", in, g_err, msg);                                             \
    } while (0)

#define BAD_N(in, msg)                                                                                             \
    do {                                                                                                           \
        if (parse_n(in, sizeof(in) - 1) == 0)                                                                      \
            fail_msg("accepted %s", in);                                                                           \
        if (strstr(g_err, msg) == NULL)                                                                            \
            fail_msg("got error '%s', want '%s'", g_err, msg);                                                     \
    } while (0)

static void test_basic(void **state)
{
    (void)state;
    OK("{\"type\":\"x\"}", "{\"ts\":1700000000000,\"type\":\"x\"}");
    assert_false(g_ev.ts_given);
    assert_int_equal(g_ev.id.type, LAM_VAL_ABSENT);
    assert_int_equal(g_ev.nfields, 0);
    OK("{\"price\":19.990,\"type\":\"purchase\",\"item\":\"sword\",\"geo\":{\"cc\":\"TH\",\"x\":{\"y\":1e3}},"
       "\"ts\":\"2001-01-01T00:47:00.5+01:00\",\"n\":null,\"b\":true,\"f\":false,\"id\":\"abc\"}",
       "{\"id\":\"abc\",\"ts\":978306420500,\"type\":\"purchase\",\"price\":19.99,\"item\":\"sword\","
       "\"geo.cc\":\"TH\",\"geo.x.y\":1000,\"n\":null,\"b\":true,\"f\":false}");
    assert_true(g_ev.ts_given);
    assert_int_equal(g_ev.nfields, 7);
    const lam_field_t *f = lam_event_get(&g_ev, "price", 5);
    assert_non_null(f);
    assert_int_equal(f->type, LAM_VAL_NUMBER);
    assert_true(f->micro_ok);
    assert_int_equal(f->micro, 19990000);
    assert_string_equal(f->val, "19.99");
    f = lam_event_get(&g_ev, "geo.cc", 6);
    assert_non_null(f);
    assert_string_equal(f->val, "TH");
    assert_int_equal(lam_event_get(&g_ev, "geo.x.y", 7)->micro, 1000000000);
    assert_null(lam_event_get(&g_ev, "geo", 3));
    assert_null(lam_event_get(&g_ev, "missing", 7));
    assert_int_equal(lam_event_get(&g_ev, "n", 1)->type, LAM_VAL_NULL);
    assert_int_equal(lam_event_get(&g_ev, "b", 1)->type, LAM_VAL_TRUE);
    assert_int_equal(lam_event_get(&g_ev, "f", 1)->type, LAM_VAL_FALSE);
    assert_string_equal(lam_event_get(&g_ev, "type", 4)->val, "purchase");
    assert_string_equal(lam_event_get(&g_ev, "id", 2)->val, "abc");
    f = lam_event_get(&g_ev, "ts", 2);
    assert_string_equal(f->val, "978306420500");
    assert_int_equal(f->micro, 978306420500000000LL);
}

static void test_whitespace_and_escapes(void **state)
{
    (void)state;
    OK("\n\t {\r\n\"type\" :\t\"x\" , \"a\" : { \"b\" : -0 } } \n\r\t", "{\"ts\":1700000000000,\"type\":\"x\",\"a.b\":0}");
    OK("{\"type\":\"\\u0074\\/\",\"k\\n\\\"\":\"\\u0000\\ud83d\\ude00\\u00e9/\\u001f\\u007f\"}",
       "{\"ts\":1700000000000,\"type\":\"t/\",\"k\\n\\\"\":\"\\u0000\xf0\x9f\x98\x80\xc3\xa9/\\u001f\x7f\"}");
    const lam_field_t *f = lam_event_get(&g_ev, "k\n\"", 3);
    assert_non_null(f);
    assert_int_equal(f->val_len, 1 + 4 + 2 + 1 + 1 + 1);
    assert_int_equal(f->val[0], '\0'); /* NUL in values is kept */
    OK("{\"type\":\"x\",\"e\":\"\"}", "{\"ts\":1700000000000,\"type\":\"x\",\"e\":\"\"}");
}

static void test_ts(void **state)
{
    (void)state;
    OK("{\"type\":\"x\",\"ts\":0}", "{\"ts\":0,\"type\":\"x\"}");
    OK("{\"type\":\"x\",\"ts\":1.0e3}", "{\"ts\":1000,\"type\":\"x\"}");
    OK("{\"type\":\"x\",\"ts\":-1}", "{\"ts\":-1,\"type\":\"x\"}");
    OK("{\"type\":\"x\",\"ts\":-0}", "{\"ts\":0,\"type\":\"x\"}");
    OK("{\"type\":\"x\",\"ts\":\"1970-01-01T00:00:00Z\"}", "{\"ts\":0,\"type\":\"x\"}");
    OK("{\"type\":\"x\",\"ts\":-62167219200000}", "{\"ts\":-62167219200000,\"type\":\"x\"}");
    /* the future limit is checked against now_ms; disabled with max_future_ms < 0 */
    char err[128];
    const char *far = "{\"type\":\"x\",\"ts\":\"9999-12-31T23:59:59.999Z\"}";
    assert_int_equal(lam_event_parse(&g_ev, far, strlen(far), NOW, -1, err, sizeof(err)), 0);
    assert_int_equal(g_ev.ts_ms, LAM_TIME_MAX_MS);
    OK("{\"type\":\"x\",\"ts\":1700086400000}", "{\"ts\":1700086400000,\"type\":\"x\"}");
    BAD("{\"type\":\"x\",\"ts\":1700086400001}", "ts: more than 86400 s in the future");
    BAD("{\"type\":\"x\",\"ts\":\"yesterday\"}", "ts: not RFC 3339: \"yesterday\"");
    BAD("{\"type\":\"x\",\"ts\":\"2001-02-29T00:00:00Z\"}",
        "ts: not RFC 3339: \"2001-02-29T00:00:00Z\" (day out of range)");
    BAD("{\"type\":\"x\",\"ts\":1.5}", "ts: not an integer number of milliseconds: 1.5");
    BAD("{\"type\":\"x\",\"ts\":1e400}", "ts: out of range (years 0000..9999): 1e400");
    BAD("{\"type\":\"x\",\"ts\":253402300800000}", "ts: out of range (years 0000..9999): 253402300800000");
    BAD("{\"type\":\"x\",\"ts\":-62167219200001}", "ts: out of range (years 0000..9999): -62167219200001");
    BAD("{\"type\":\"x\",\"ts\":99999999999999999999999}",
        "ts: out of range (years 0000..9999): 99999999999999999999999");
    BAD("{\"type\":\"x\",\"ts\":NaN}", "ts: invalid JSON at byte 17: expected a value");
    BAD("{\"type\":\"x\",\"ts\":Infinity}", "ts: invalid JSON at byte 17: expected a value");
    BAD("{\"type\":\"x\",\"ts\":true}", "ts: must be a number (epoch ms) or an RFC 3339 string");
    BAD("{\"type\":\"x\",\"ts\":null}", "ts: must be a number (epoch ms) or an RFC 3339 string");
    BAD("{\"type\":\"x\",\"ts\":{\"a\":1}}", "ts: must be a number (epoch ms) or an RFC 3339 string");
    BAD("{\"type\":\"x\",\"ts\":1,\"ts\":2}", "ts: duplicate field");
}

static void test_rejections(void **state)
{
    (void)state;
    BAD("", "event: invalid JSON at byte 0: empty input");
    BAD("   ", "event: invalid JSON at byte 3: unexpected end of input");
    BAD("[1]", "event: must be a JSON object");
    BAD("\"x\"", "event: must be a JSON object");
    BAD("{}", "type: required");
    BAD("{\"type\":\"x\"} x", "event: invalid JSON at byte 13: trailing characters after the value");
    BAD("{\"type\":\"x\"}{}", "event: invalid JSON at byte 12: trailing characters after the value");
    BAD("{\"type\":\"x\"", "type: invalid JSON at byte 11: unexpected end of input");
    BAD("{\"type\":\"x\",}", "event: invalid JSON at byte 12: expected a member name");
    BAD("{\"type\":\"\"}", "type: must be a string of 1..128 bytes");
    BAD("{\"type\":1}", "type: must be a string of 1..128 bytes");
    BAD("{\"type\":null}", "type: must be a string of 1..128 bytes");
    BAD("{\"type\":\"x\",\"type\":\"y\"}", "type: duplicate field");
    BAD("{\"type\":\"x\",\"id\":\"\"}", "id: must be a string of 1..128 bytes");
    BAD("{\"type\":\"x\",\"id\":5}", "id: must be a string of 1..128 bytes");
    BAD("{\"type\":\"x\",\"id\":\"a\",\"id\":\"a\"}", "id: duplicate field");
    BAD("{\"type\":\"x\",\"tags\":[1,2]}", "tags: arrays are not supported");
    BAD("{\"type\":\"x\",\"a\":{\"tags\":[]}}", "a.tags: arrays are not supported");
    BAD("{\"type\":\"x\",\"_a\":1}", "_a: names starting with '_' are reserved");
    BAD("{\"type\":\"x\",\"_\":{\"b\":1}}", "_: names starting with '_' are reserved");
    BAD("{\"type\":\"x\",\"\":1}", "\"\": empty field name");
    BAD("{\"type\":\"x\",\"a\":{\"\":1}}", "a.: empty field name");
    BAD("{\"type\":\"x\",\"a\\u0000b\":1}", "\"a\\u0000b\": NUL byte in field name");
    BAD("{\"type\":\"x\",\"a\":1,\"a\":2}", "a: duplicate field");
    BAD("{\"type\":\"x\",\"a.b\":1,\"a\":{\"b\":2}}", "a.b: duplicate field");
    BAD("{\"type\":\"x\",\"a\":{\"b\":2},\"a\\u002eb\":1}", "a.b: duplicate field");
    BAD("{\"type\":\"x\",\"a\":{\"b\":1},\"a\":{\"b\":2}}", "a.b: duplicate field");
    BAD("{\"type\":\"x\",\"p\":1e400}", "p: number out of range (1e-307..1e308)");
    BAD("{\"type\":\"x\",\"p\":-1e-400}", "p: number out of range (1e-307..1e308)");
    BAD("{\"type\":\"x\",\"p\":01}", "p: invalid JSON at byte 17: expected ',' or '}'");
    BAD("{\"type\":\"x\",\"p\":\"a\\ud800\"}", "p: invalid JSON at byte 18: lone surrogate in \\u escape");
    BAD_N("{\"type\":\"x\",\"s\":\"\xc0\x80\"}", "s: invalid JSON at byte 17: invalid UTF-8");
    BAD_N("{\"type\":\"x\",\"s\":\"\xed\xa0\x80\"}", "s: invalid JSON at byte 17: invalid UTF-8");
    BAD_N("{\"type\":\"x\",\"s\":\"\xe2\x82\"}", "s: invalid JSON at byte 17: invalid UTF-8");
    BAD_N("{\"type\":\"x\",\"s\":\"\xf8\x88\x80\x80\x80\"}", "s: invalid JSON at byte 17: invalid UTF-8");
    BAD_N("{\"type\":\"x\",\"\xff\":1}", "event: invalid JSON at byte 13: invalid UTF-8");
    BAD_N("{\"type\":\"x\",\"s\":\"a\0b\"}", "s: invalid JSON at byte 18: control character in string");
    BAD_N("{\"type\":\"x\"}\0", "event: invalid JSON at byte 12: trailing characters after the value");
}

static void test_depth(void **state)
{
    (void)state;
    OK("{\"type\":\"x\",\"a\":{\"b\":{\"c\":{\"d\":{\"e\":1}}}}}", "{\"ts\":1700000000000,\"type\":\"x\",\"a.b.c.d.e\":1}");
    BAD("{\"type\":\"x\",\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":1}}}}}}", "a.b.c.d.e: nested deeper than 4 levels");
    OK("{\"type\":\"x\",\"a\":{},\"b\":{\"c\":{}}}", "{\"ts\":1700000000000,\"type\":\"x\"}");
    /* 1000 levels: rejected, no stack overflow */
    size_t n = 1000;
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append_str(&b, "{\"type\":\"x\",");
    for (size_t i = 0; i < n; i++)
        lam_buf_append_str(&b, "\"a\":{");
    lam_buf_append_str(&b, "\"z\":1");
    for (size_t i = 0; i < n; i++)
        lam_buf_append_char(&b, '}');
    lam_buf_append_char(&b, '}');
    assert_int_equal(parse_n(b.data, b.len), -1);
    assert_string_equal(g_err, "a.a.a.a.a: nested deeper than 4 levels");
    lam_buf_clear(&b);
    for (size_t i = 0; i < 100000; i++)
        lam_buf_append_char(&b, '[');
    assert_int_equal(parse_n(b.data, b.len), -1);
    assert_string_equal(g_err, "event: must be a JSON object");
    lam_buf_clear(&b);
    for (size_t i = 0; i < 100000; i++)
        lam_buf_append_str(&b, "{\"a\":");
    assert_int_equal(parse_n(b.data, b.len), -1);
    lam_buf_free(&b);
}

/* Build {"id":"i","type":"t","s":"<pad>"} whose canonical form is exactly target bytes. */
static void test_size_limit(void **state)
{
    (void)state;
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append_str(&b, "{\"id\":\"i\",\"type\":\"t\",\"s\":\"\"}");
    assert_int_equal(parse_n(b.data, b.len), 0);
    size_t base = g_ev.canonical_len;
    for (int extra = 0; extra <= 1; extra++) {
        size_t pad = LAM_EVENT_MAX_BYTES - base + (size_t)extra;
        lam_buf_clear(&b);
        lam_buf_append_str(&b, "{\"id\":\"i\",\"type\":\"t\",\"s\":\"");
        for (size_t i = 0; i < pad; i++)
            lam_buf_append_char(&b, 'x');
        lam_buf_append_str(&b, "\"}");
        int rc = parse_n(b.data, b.len);
        if (extra == 0) {
            assert_int_equal(rc, 0);
            assert_int_equal(g_ev.canonical_len, LAM_EVENT_MAX_BYTES);
            canon();
        } else {
            assert_int_equal(rc, -1);
            assert_string_equal(g_err, "event: larger than 65536 bytes in canonical form");
        }
    }
    /* escapes count in canonical size: 11000 control chars become 66000 bytes */
    lam_buf_clear(&b);
    lam_buf_append_str(&b, "{\"type\":\"t\",\"s\":\"");
    for (size_t i = 0; i < 11000; i++)
        lam_buf_append_str(&b, "\\u0001");
    lam_buf_append_str(&b, "\"}");
    assert_int_equal(parse_n(b.data, b.len), -1);
    assert_string_equal(g_err, "event: larger than 65536 bytes in canonical form");
    /* without an id, room for a generated one is reserved */
    lam_buf_clear(&b);
    lam_buf_append_str(&b, "{\"type\":\"t\",\"s\":\"");
    for (size_t i = 0; i < LAM_EVENT_MAX_BYTES - 60; i++)
        lam_buf_append_char(&b, 'x');
    lam_buf_append_str(&b, "\"}");
    assert_int_equal(parse_n(b.data, b.len), -1);
    /* a 64 KiB + 1 value (just over) and whitespace that canonicalises away (fine) */
    lam_buf_clear(&b);
    lam_buf_append_str(&b, "{\"type\":\"t\",");
    for (size_t i = 0; i < 200000; i++)
        lam_buf_append_char(&b, ' ');
    lam_buf_append_str(&b, "\"a\":1}");
    assert_int_equal(parse_n(b.data, b.len), 0);
    lam_buf_free(&b);
}

static void test_set_id_and_reuse(void **state)
{
    (void)state;
    OK("{\"type\":\"x\",\"a\":1}", "{\"ts\":1700000000000,\"type\":\"x\",\"a\":1}");
    char err[128];
    assert_int_equal(lam_event_set_id(&g_ev, "q\"1", 3, err, sizeof(err)), 0);
    assert_string_equal(canon(), "{\"id\":\"q\\\"1\",\"ts\":1700000000000,\"type\":\"x\",\"a\":1}");
    assert_int_equal(lam_event_set_id(&g_ev, "r", 1, err, sizeof(err)), 0);
    assert_string_equal(canon(), "{\"id\":\"r\",\"ts\":1700000000000,\"type\":\"x\",\"a\":1}");
    assert_int_equal(lam_event_set_id(&g_ev, "", 0, err, sizeof(err)), -1);
    assert_string_equal(err, "id: must be a string of 1..128 bytes");
    char big[200];
    memset(big, 'a', sizeof(big));
    assert_int_equal(lam_event_set_id(&g_ev, big, 129, err, sizeof(err)), -1);
    assert_int_equal(lam_event_set_id(&g_ev, big, 128, err, sizeof(err)), 0);
    /* a big event then a small one: nothing stale remains */
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append_str(&b, "{\"type\":\"big\"");
    for (int i = 0; i < 3000; i++)
        lam_buf_printf(&b, ",\"f%d\":%d", i, i);
    lam_buf_append_char(&b, '}');
    assert_int_equal(parse_n(b.data, b.len), 0);
    assert_int_equal(g_ev.nfields, 3000);
    assert_int_equal(lam_event_get(&g_ev, "f2999", 5)->micro, 2999000000LL);
    for (int i = 0; i < 3000; i += 7) {
        char nm[16];
        int n = snprintf(nm, sizeof(nm), "f%d", i);
        assert_non_null(lam_event_get(&g_ev, nm, (size_t)n));
    }
    OK("{\"type\":\"small\",\"f1\":true}", "{\"ts\":1700000000000,\"type\":\"small\",\"f1\":true}");
    assert_null(lam_event_get(&g_ev, "f2", 2));
    assert_int_equal(g_ev.id.type, LAM_VAL_ABSENT);
    lam_buf_free(&b);
    int64_t m;
    assert_int_equal(lam_event_micro_from_text("19.99", 5, &m), 0);
    assert_int_equal(m, 19990000);
    assert_int_equal(lam_event_micro_from_text("x", 1, &m), -1);
}

static void test_numbers(void **state)
{
    (void)state;
    OK("{\"type\":\"x\",\"a\":1.0,\"b\":-12.340e-2,\"c\":1e21,\"d\":0.0000001,\"e\":123456789012345678901234,"
       "\"f\":9223372036854.775808,\"g\":-0.0}",
       "{\"ts\":1700000000000,\"type\":\"x\",\"a\":1,\"b\":-0.1234,\"c\":1e+21,\"d\":1e-7,"
       "\"e\":1.23456789012345678901234e+23,\"f\":9223372036854.775808,\"g\":0}");
    assert_int_equal(lam_event_get(&g_ev, "b", 1)->micro, -123400);
    assert_true(lam_event_get(&g_ev, "d", 1)->micro_ok);
    assert_int_equal(lam_event_get(&g_ev, "d", 1)->micro, 0);
    assert_false(lam_event_get(&g_ev, "c", 1)->micro_ok);
    assert_false(lam_event_get(&g_ev, "f", 1)->micro_ok);
}

/* ---- random events: canonical form is a fixed point ---- */

static void rand_string(lam_buf_t *b, int name)
{
    static const char *pieces[] = {"a", "b", "z", "0", ".", " ", "\\n", "\\\"", "\\\\", "\\/", "\\u0001",
                                   "\\u00e9", "\xc3\xa9", "\xe2\x82\xac", "\\ud83d\\ude00", "\xf0\x9f\x98\x80",
                                   "\\u0000", "\\t", "/", "\x7f"};
    size_t n = 1 + lam_test_rand() % 8;
    lam_buf_append_char(b, '"');
    if (name)
        lam_buf_append_char(b, (char)('a' + lam_test_rand() % 4)); /* no '_' start, non-empty */
    for (size_t i = 0; i < n; i++) {
        const char *p = pieces[lam_test_rand() % LAM_ARRAY_SIZE(pieces)];
        if (name && (strcmp(p, "\\u0000") == 0 || strcmp(p, ".") == 0))
            continue;
        lam_buf_append_str(b, p);
    }
    lam_buf_append_char(b, '"');
}

static void rand_number(lam_buf_t *b)
{
    if (lam_test_rand() % 2)
        lam_buf_append_char(b, '-');
    if (lam_test_rand() % 4 == 0)
        lam_buf_append_char(b, '0');
    else
        lam_buf_printf(b, "%llu", lam_test_rand() % (lam_test_rand() % 2 ? 1000ULL : 100000000000000000ULL));
    if (lam_test_rand() % 2) {
        lam_buf_append_char(b, '.');
        for (unsigned i = 0, n = 1 + (unsigned)(lam_test_rand() % 10); i < n; i++)
            lam_buf_append_char(b, (char)('0' + lam_test_rand() % 10));
    }
    if (lam_test_rand() % 3 == 0)
        lam_buf_printf(b, "%s%d", lam_test_rand() % 2 ? "e-" : "E+", (int)(lam_test_rand() % 40));
}

static void ws(lam_buf_t *b)
{
    static const char *w[] = {"", "", "", " ", "\n", "\t", "\r\n "};
    lam_buf_append_str(b, w[lam_test_rand() % LAM_ARRAY_SIZE(w)]);
}

static void rand_object(lam_buf_t *b, int depth)
{
    lam_buf_append_char(b, '{');
    size_t n = lam_test_rand() % (depth == 0 ? 10 : 4);
    int first = 1;
    if (depth == 0) {
        lam_buf_append_str(b, "\"type\":");
        rand_string(b, 0);
        first = 0;
        if (lam_test_rand() % 2) {
            lam_buf_append_str(b, ",\"id\":");
            rand_string(b, 0);
        }
        if (lam_test_rand() % 2)
            lam_buf_printf(b, ",\"ts\":%lld", (long long)(lam_test_rand() % 1600000000000ULL) - 100000000000LL);
        else if (lam_test_rand() % 2)
            lam_buf_append_str(b, ",\"ts\":\"2021-03-04T05:06:07.089+07:00\"");
    }
    for (size_t i = 0; i < n; i++) {
        if (!first)
            lam_buf_append_char(b, ',');
        first = 0;
        ws(b);
        rand_string(b, 1);
        ws(b);
        lam_buf_append_char(b, ':');
        ws(b);
        switch (lam_test_rand() % 7) {
        case 0: rand_object(b, depth + 1); break;
        case 1: rand_number(b); break;
        case 2: lam_buf_append_str(b, lam_test_rand() % 2 ? "true" : "false"); break;
        case 3: lam_buf_append_str(b, "null"); break;
        default: rand_string(b, 0); break;
        }
        ws(b);
    }
    lam_buf_append_char(b, '}');
}

static void test_canonical_fixed_point_random(void **state)
{
    (void)state;
    unsigned long long seed = lam_test_seed();
    lam_event_t ev2;
    lam_event_init(&ev2);
    lam_buf_t in = LAM_BUF_INIT, c1 = LAM_BUF_INIT, c2 = LAM_BUF_INIT;
    int ok = 0, total = 30000;
    for (int it = 0; it < total; it++) {
        lam_buf_clear(&in);
        rand_object(&in, 0);
        if (parse_n(in.data, in.len) != 0) {
            /* only structural reasons are expected: duplicates, depth, range */
            if (!strstr(g_err, "duplicate") && !strstr(g_err, "deeper") && !strstr(g_err, "out of range"))
                fail_msg("seed %llu: unexpected rejection of %s: %s", seed, in.data, g_err);
            continue;
        }
        ok++;
        lam_buf_clear(&c1);
        lam_event_canonical(&g_ev, &c1);
        assert_int_equal(c1.len, g_ev.canonical_len);
        char err[256];
        if (lam_event_parse(&ev2, c1.data, c1.len, 0, -1, err, sizeof(err)) != 0)
            fail_msg("seed %llu: canonical form rejected: %s: %s", seed, c1.data, err);
        lam_buf_clear(&c2);
        lam_event_canonical(&ev2, &c2);
        if (c1.len != c2.len || memcmp(c1.data, c2.data, c1.len) != 0)
            fail_msg("seed %llu: not a fixed point:\n%s\n%s", seed, c1.data, c2.data);
        assert_int_equal(ev2.nfields, g_ev.nfields);
        for (size_t i = 0; i < g_ev.nfields; i++) {
            const lam_field_t *f = lam_event_get(&ev2, g_ev.fields[i].name, g_ev.fields[i].name_len);
            assert_non_null(f);
            assert_int_equal(f->type, g_ev.fields[i].type);
            assert_int_equal(f->val_len, g_ev.fields[i].val_len);
            assert_memory_equal(f->val, g_ev.fields[i].val, f->val_len);
        }
    }
    if (ok < total / 2)
        fail_msg("seed %llu: only %d of %d random events were valid", seed, ok, total);
    lam_event_free(&ev2);
    lam_buf_free(&in);
    lam_buf_free(&c1);
    lam_buf_free(&c2);
}

/* ---- differential: fast path vs general parser ---- */

static uint64_t g_rng;
static unsigned rnd_below(unsigned n)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (unsigned)(g_rng % n);
}

#define PICK(arr) (arr)[rnd_below(sizeof(arr) / sizeof((arr)[0]))]

static const char *const d_ws[] = {"", "", "", "", " ", "\n", " \t\r\n "};
static const char *const d_keys[] = {
    "\"a\"", "\"b\"", "\"user\"", "\"geo\"", "\"cc\"", "\"url\"", "\"price\"", "\"id\"", "\"ts\"", "\"type\"",
    "\"_x\"", "\"a.b\"", "\"\"", "\"k\\u0000\"", "\"\\u00e9t\\u00e9\"", "\"\xc3\xa9t\xc3\xa9\"", "\"q\\\"\"",
    "\"x y\"", "\"\\u0061\"", "\"sl\\/ash\"", "\"\xff\"", "\"\x01\"",
    "\"a_rather_long_field_name_that_goes_past_sixty_four_bytes_of_text_in_total\"", "\"\xd1\x82\xd0\xb8\"",
    "\"t\\u0079pe\"", "\"ty\"", "\"tsx\"", "\"i\"", "a", "\"unterminated"};
static const char *const d_strs[] = {
    "\"\"", "\"x\"", "\"page_view\"", "\"/shop/swords\"", "\"a\\nb\"", "\"\\u0000\"", "\"nul\\u0000mid\"",
    "\"\\ud83d\\ude00\"", "\"\\ud83d\"", "\"\\ude00\"", "\"\xf0\x9f\x98\x80\"", "\"\xe2\x82\xac\"", "\"\xc3\"",
    "\"\xed\xa0\x80\"", "\"\xff\xfe\"", "\"\x01\"", "\"\x7f\"", "\"\\/\"", "\"\\\"\\\\\"", "\"\\x\"", "\"\\u12\"",
    "\"https://example.com/?q=1&r=2\"", "\"tab\there\"", "\"a somewhat longer string value with spaces\"",
    "\"unterminated"};
static const char *const d_nums[] = {
    "0", "-0", "1", "-1", "01", "00", "1.0", "1.50", "19.99", "-3.5", "0.5", "-0.5", "0.000001", "0.0000005",
    "0.0000015", "1e3", "1E+3", "1e-3", "-1e-400", "1e-307", "1e308", "1e309", "2e307", "123456789012",
    "1234567890123", "999999999999.999999", "9223372036854.775807", "9223372036854.775808",
    "-9223372036854.775808", "12345678901234567890123", "1.", ".5", "-", "1e", "1e+", "+1", "0x10", "1.2.3",
    "--1", "1-", "100000000000000000000000000000"};
static const char *const d_lits[] = {"true", "false", "null", "tru", "nul", "falsey", "True", "[]", "[1]"};
static const char *const d_ts[] = {
    "1700000000000", "1700000000001", "0", "-1", "017", "1700000000000.0", "1700000000000.5", "1.7e12",
    "253402300799999", "253402300800000", "-62167219200000", "-62167219200001", "1800000000000",
    "99999999999999999999", "\"2023-11-14T22:13:20Z\"", "\"2023-11-14T22:13:20.123+07:00\"", "\"yesterday\"",
    "\"2023-11-14T22:13:20\\u005a\"", "\"\"", "null", "true", "{}"};
static const char *const d_types[] = {"\"page_view\"", "\"purchase\"", "\"\"", "\"\\u0070v\"", "1", "null",
                                      "\"x\xc3\xa9\"", "\"a\\\"b\""};

static void d_value(lam_buf_t *b, int depth);

static void d_object(lam_buf_t *b, int depth)
{
    lam_buf_append_str(b, "{");
    lam_buf_append_str(b, PICK(d_ws));
    int n = (int)rnd_below(depth ? 4 : 9) + (depth == 0);
    for (int i = 0; i < n; i++) {
        if (i) {
            lam_buf_append_str(b, PICK(d_ws));
            lam_buf_append_str(b, rnd_below(60) ? "," : rnd_below(2) ? ",," : ";");
            lam_buf_append_str(b, PICK(d_ws));
        }
        unsigned r = depth == 0 && i == 0 && rnd_below(4) ? 0 : 1 + rnd_below(19);
        if (depth == 0 && r < 2) {
            lam_buf_append_str(b, "\"type\"");
            lam_buf_append_str(b, PICK(d_ws));
            lam_buf_append_str(b, ":");
            lam_buf_append_str(b, PICK(d_ws));
            lam_buf_append_str(b, rnd_below(4) ? "\"page_view\"" : PICK(d_types));
            continue;
        }
        if (depth == 0 && r < 5) {
            lam_buf_append_str(b, "\"ts\":");
            lam_buf_append_str(b, rnd_below(2) ? "1700000000000" : PICK(d_ts));
            continue;
        }
        if (depth == 0 && r < 6) {
            lam_buf_append_str(b, "\"id\":");
            lam_buf_append_str(b, rnd_below(3) ? "\"0190f1a2-aaaa-7bbb-8ccc-000000000001\"" : PICK(d_strs));
            continue;
        }
        if (rnd_below(4) == 0)
            lam_buf_append_str(b, PICK(d_keys));
        else
            lam_buf_printf(b, "\"k%u\"", rnd_below(12)); /* sometimes a duplicate */
        lam_buf_append_str(b, PICK(d_ws));
        lam_buf_append_str(b, rnd_below(80) ? ":" : "=");
        lam_buf_append_str(b, PICK(d_ws));
        d_value(b, depth);
    }
    lam_buf_append_str(b, PICK(d_ws));
    lam_buf_append_str(b, rnd_below(80) ? "}" : "]");
}

static void d_value(lam_buf_t *b, int depth)
{
    unsigned r = rnd_below(20);
    if (r < 8 && rnd_below(3))
        lam_buf_printf(b, "\"v%u\"", rnd_below(1000));
    else if (r < 8)
        lam_buf_append_str(b, PICK(d_strs));
    else if (r < 14 && rnd_below(3))
        lam_buf_printf(b, "%u.%02u", rnd_below(1000), rnd_below(100));
    else if (r < 14)
        lam_buf_append_str(b, PICK(d_nums));
    else if (r < 17)
        lam_buf_append_str(b, PICK(d_lits));
    else if (depth < 6)
        d_object(b, depth + 1);
    else
        lam_buf_append_str(b, "{}");
}

/* Generated corpus: lam_event_parse (fast path first) must agree with the general parser on
   results, messages and every field; whatever the fast path accepts, the general one accepts. */
static void test_fast_path_differential(void **state)
{
    (void)state;
    unsigned long long seed = lam_test_seed();
    g_rng = seed * 2654435761ULL + 1;
    lam_event_t eg, ef;
    lam_event_init(&eg);
    lam_event_init(&ef);
    lam_buf_t in = LAM_BUF_INIT, cg = LAM_BUF_INIT, cf = LAM_BUF_INIT;
    int total = 200000, fast = 0, valid = 0;
    for (int it = 0; it < total; it++) {
        lam_buf_clear(&in);
        d_object(&in, 0);
        unsigned m = rnd_below(10);
        if (m == 0 && in.len > 1) /* truncated */
            in.len = rnd_below((unsigned)in.len);
        else if (m == 1) /* one byte replaced */
            in.data[rnd_below((unsigned)in.len)] = (char)rnd_below(256);
        else if (m == 2)
            lam_buf_append_str(&in, PICK(d_ws));
        int64_t future = rnd_below(4) ? DAY : -1;
        char eg_err[256] = "", ep_err[256] = "";
        int rg = lam_event_parse_general(&eg, in.data, in.len, NOW, future, eg_err, sizeof(eg_err));
        int rf = lam_event_parse_fast(&ef, in.data, in.len, NOW, future);
        if (rf) {
            fast++;
            if (rg != 0)
                fail_msg("seed %llu: fast path accepted what the general parser rejects (%s): %.*s", seed, eg_err,
                         (int)in.len, in.data);
            char why[128];
            if (lam_event_compare(&ef, &eg, why, sizeof(why)))
                fail_msg("seed %llu: fast path differs: %s: %.*s", seed, why, (int)in.len, in.data);
            lam_buf_clear(&cg);
            lam_buf_clear(&cf);
            lam_event_canonical(&eg, &cg);
            lam_event_canonical(&ef, &cf);
            if (cg.len != cf.len || memcmp(cg.data, cf.data, cg.len) != 0 || cf.len != ef.canonical_len)
                fail_msg("seed %llu: canonical differs:\n%s\n%s", seed, cg.data, cf.data);
        }
        int rp = lam_event_parse(&ef, in.data, in.len, NOW, future, ep_err, sizeof(ep_err));
        if (rp != rg || strcmp(ep_err, eg_err) != 0)
            fail_msg("seed %llu: lam_event_parse %d '%s' vs general %d '%s': %.*s", seed, rp, ep_err, rg, eg_err,
                     (int)in.len, in.data);
        if (rg == 0) {
            valid++;
            char why[128];
            if (lam_event_compare(&ef, &eg, why, sizeof(why)))
                fail_msg("seed %llu: lam_event_parse differs: %s", seed, why);
        }
    }
    /* the corpus exercises both paths: the fast path takes a good share of the valid events */
    if (valid < total / 20 || fast < valid / 4)
        fail_msg("seed %llu: %d valid, %d by the fast path, of %d", seed, valid, fast, total);
    print_message("differential: %d inputs, %d valid, %d by the fast path\n", total, valid, fast);
    lam_event_free(&eg);
    lam_event_free(&ef);
    lam_buf_free(&in);
    lam_buf_free(&cg);
    lam_buf_free(&cf);
}

/* Hand-picked shapes on both sides of every fast-path decision. */
static void test_fast_path_cases(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int fast; /* the fast path takes it */
    } cases[] = {
        {"{\"type\":\"a\",\"ts\":1700000000000,\"x\":1,\"g\":{\"cc\":\"TH\",\"h\":{\"i\":true}},\"n\":null}", 1},
        {" { \"type\" : \"a\" ,\n\"x\" :\t-1.5 , \"e\":{ } } \n", 1},
        {"{\"type\":\"a\",\"p\":12.50}", 1},        /* non-canonical number: reformatted */
        {"{\"type\":\"a\",\"p\":1e3}", 1},
        {"{\"type\":\"a\",\"p\":1e309}", 0},        /* out of range */
        {"{\"type\":\"a\",\"u\":\"\xc3\xa9\"}", 1},  /* valid UTF-8 */
        {"{\"type\":\"a\",\"u\":\"\xc3\"}", 0},      /* invalid UTF-8 */
        {"{\"type\":\"a\",\"u\":\"a\\nb\"}", 0},      /* escape */
        {"{\"type\":\"a\",\"_u\":1}", 0},
        {"{\"type\":\"a\",\"g\":{\"_u\":1}}", 1},    /* '_' only reserved at the start of the name */
        {"{\"type\":\"a\",\"x\":1,\"x\":2}", 0},
        {"{\"type\":\"a\",\"g.c\":1,\"g\":{\"c\":2}}", 0},
        {"{\"type\":\"a\",\"a\":{\"b\":{\"c\":{\"d\":1}}}}", 1},
        {"{\"type\":\"a\",\"a\":{\"b\":{\"c\":{\"d\":{\"e\":1}}}}}", 1},
        {"{\"type\":\"a\",\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":1}}}}}}", 0},
        {"{\"type\":\"a\",\"ts\":\"2023-11-14T22:13:20Z\"}", 1},
        {"{\"type\":\"a\",\"ts\":1700000000000.0}", 0},
        {"{\"type\":\"a\",\"ts\":-5}", 0},
        {"{\"type\":\"a\",\"ts\":1900000000000}", 0}, /* future */
        /* ts digits are read 8 at a time when 8 are there: numbers around and inside that window */
        {"{\"type\":\"a\",\"ts\":0}", 1},
        {"{\"type\":\"a\",\"ts\":1234567}", 1},
        {"{\"type\":\"a\",\"ts\":12345678}", 1},
        {"{\"type\":\"a\",\"ts\":123456789}", 1},
        {"{\"type\":\"a\",\"ts\":99999999}", 1},
        {"{\"type\":\"a\",\"ts\":1700000000999}", 1},
        {"{\"type\":\"a\",\"ts\":1699999999999,\"x\":1}", 1},
        {"{\"type\":\"a\",\"ts\":1234567}\n", 1},
        {"{\"type\":\"a\",\"ts\":1234:}", 0},
        {"{\"type\":\"a\",\"ts\":01234567}", 0},       /* leading zero */
        {"{\"type\":\"a\",\"ts\":12345678.5}", 0},
        {"{\"type\":\"a\",\"ts\":12345678e1}", 0},
        {"{\"type\":\"a\",\"ts\":1234567/}", 0},
        {"{\"type\":\"a\",\"ts\":17000000000000000}", 0}, /* 17 digits */
        /* 13 digits are read as two overlapping groups of 8 */
        {"{\"type\":\"a\",\"ts\":1234567890123}", 1},
        {"{\"type\":\"a\",\"ts\":1234567890123,\"x\":1}", 1},
        {"{\"type\":\"a\",\"ts\":0234567890123}", 0},
        {"{\"type\":\"a\",\"ts\":12345678901234}", 0},   /* 14 digits: in the future here */
        {"{\"type\":\"a\",\"ts\":123456789012345}", 0},  /* 15 digits: in the future here */
        {"{\"type\":\"a\",\"ts\":999999999999}", 1},     /* 12 */
        {"{\"type\":\"a\",\"ts\":1234567890123.5}", 0},
        {"{\"type\":\"a\",\"ts\":1234567890123e1}", 0},
        {"{\"type\":\"a\",\"ts\":1234567890123}\n", 1},
        {"{\"type\":\"a\",\"id\":\"x\",\"id\":\"y\"}", 0},
        {"{\"ts\":1}", 0},
        {"{\"type\":\"a\"}x", 0},
        {"{\"type\":\"a\",\"x\":01}", 0},
        {"{\"type\":\"a\",\"x\":[1]}", 0},
        {"{\"type\":\"a\",\"x\":tru}", 0},
    };
    lam_event_t eg;
    lam_event_init(&eg);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *in = cases[i].in;
        size_t n = strlen(in);
        char err[256] = "", why[128];
        int rg = lam_event_parse_general(&eg, in, n, NOW, DAY, err, sizeof(err));
        int rf = lam_event_parse_fast(&g_ev, in, n, NOW, DAY);
        if (rf != cases[i].fast)
            fail_msg("%s: fast path %d, want %d", in, rf, cases[i].fast);
        if (rf && (rg != 0 || lam_event_compare(&g_ev, &eg, why, sizeof(why))))
            fail_msg("%s: differs from the general parser: %s", in, rg ? err : why);
    }
    lam_event_free(&eg);
}

/* ---- projected scan ---- */

static lam_event_proj_t *test_proj(void)
{
    static const char *const names[] = {"k0", "k1", "k3", "k7", "type", "ts", "a.b", "x y", "g.cc",
                                        "a_rather_long_field_name_that_goes_past_sixty_four_bytes_of_text_in_total"};
    size_t lens[sizeof(names) / sizeof(names[0])];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        lens[i] = strlen(names[i]);
    lam_event_proj_t *pj = lam_event_proj_new(names, lens, sizeof(names) / sizeof(names[0]));
    assert_non_null(pj);
    return pj;
}

/* 1 when the projected scan took in[0..n); fails the test when it differs from the full parse. */
static int check_projected(const lam_event_proj_t *pj, lam_event_t *ep, lam_event_t *ef, const char *in, size_t n,
                           unsigned long long seed)
{
    char err[256] = "", why[160];
    int rp = lam_event_parse_projected(ep, in, n, pj);
    int rf = lam_event_parse(ef, in, n, 0, -1, err, sizeof(err));
    if (!rp)
        return 0;
    if (rf != 0)
        fail_msg("seed %llu: projected scan accepted what lam_event_parse rejects (%s): %.*s", seed, err, (int)n, in);
    if (lam_event_compare_projected(ep, ef, why, sizeof(why)))
        fail_msg("seed %llu: projected scan differs: %s: %.*s", seed, why, (int)n, in);
    return 1;
}

/*
 * Generated corpus, raw and in canonical form, mutated: whatever the projected scan takes,
 * lam_event_parse takes too, with the same id, ts, type and projected fields; a record it does
 * not take is left to lam_event_parse (so an invalid record is still counted as one).
 */
static void test_projected_differential(void **state)
{
    (void)state;
    unsigned long long seed = lam_test_seed();
    g_rng = seed * 2654435761ULL + 7;
    lam_event_proj_t *pj = test_proj();
    lam_event_t ep, ef;
    lam_event_init(&ep);
    lam_event_init(&ef);
    lam_buf_t in = LAM_BUF_INIT, canon = LAM_BUF_INIT;
    char err[256];
    int total = 100000, canonical = 0, took = 0, took_canonical = 0;
    for (int it = 0; it < total; it++) {
        lam_buf_clear(&in);
        d_object(&in, 0);
        took += check_projected(pj, &ep, &ef, in.data, in.len, seed);
        if (lam_event_parse(&ef, in.data, in.len, 0, -1, err, sizeof(err)) != 0)
            continue;
        lam_buf_clear(&canon);
        lam_event_canonical(&ef, &canon);
        canonical++;
        int t = check_projected(pj, &ep, &ef, canon.data, canon.len, seed);
        took_canonical += t;
        took += t;
        /* the canonical record mutated: a byte replaced, cut short, a field repeated */
        unsigned m = rnd_below(4);
        if (m == 0) {
            canon.data[rnd_below((unsigned)canon.len)] = (char)rnd_below(256);
        } else if (m == 1) {
            canon.len = rnd_below((unsigned)canon.len);
        } else if (m == 2 && canon.len > 2) {
            canon.len--; /* the closing brace */
            lam_buf_printf(&canon, ",\"k%u\":%u}", rnd_below(12), rnd_below(3));
        } else {
            lam_buf_printf(&canon, "%s", PICK(d_ws));
        }
        took += check_projected(pj, &ep, &ef, canon.data, canon.len, seed);
    }
    /* the projected scan takes most canonical records (this corpus is rich in escapes, exponents and
       negative ts, which it leaves to the full parse) */
    if (canonical < total / 20 || took_canonical * 4 < canonical * 3)
        fail_msg("seed %llu: %d canonical records, the projected scan took %d", seed, canonical, took_canonical);
    print_message("projected: %d inputs (+ canonical + mutated), %d canonical, %d taken\n", total, canonical, took);
    lam_event_proj_free(pj);
    lam_event_free(&ep);
    lam_event_free(&ef);
    lam_buf_free(&in);
    lam_buf_free(&canon);
}

/* Hand-picked records on both sides of every decision of the projected scan. */
static void test_projected_cases(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int took;
    } cases[] = {
        {"{\"id\":\"a\",\"ts\":1700000000000,\"type\":\"page_view\",\"k0\":\"x\",\"k1\":-1.5,\"k2\":true,\"k3\":null}", 1},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"g.cc\":\"TH\",\"k9\":\"skipped\"}", 1}, /* no id */
        {"{\"type\":\"t\",\"ts\":1700000000000,\"k0\":1}", 1},                          /* any order */
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k0\":\"\xc3\xa9t\xc3\xa9\",\"k9\":\"\xe2\x82\xac\"}", 1},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k0\":\"\xc3\"}", 0},           /* invalid UTF-8 */
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k9\":\"\xed\xa0\x80\"}", 0},   /* surrogate, skipped field */
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k9\":\"a\\nb\"}", 0},          /* escape */
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k9\":\"a\tb\"}", 0},           /* control character */
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k9\":1,\"k9\":2}", 0},         /* duplicate, not projected */
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k0\":1,\"k0\":2}", 0},         /* duplicate, projected */
        {"{\"ts\":1700000000000,\"type\":\"t\",\"type\":\"u\"}", 0},
        {"{\"ts\":1700000000000,\"ts\":1700000000000,\"type\":\"t\"}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"_k\":1}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"\":1}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"g\":{\"cc\":\"TH\"}}", 0},     /* nested: the full parse */
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k0\":[1]}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k9\":1.50}", 0},               /* not canonical */
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k9\":01}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k9\":1e3}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k9\":tru}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k0\":1 }", 0},                 /* whitespace */
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k0\":1}}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k0\":\"x}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"k0\"}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",}", 0},
        {"{\"ts\":1700000000000}", 0},                                            /* no type */
        {"{\"type\":\"t\"}", 0},                                                  /* no ts: the full parse */
        {"{\"ts\":\"2023-11-14T22:13:20Z\",\"type\":\"t\"}", 0},
        {"{\"ts\":-5,\"type\":\"t\"}", 0},
        {"{\"ts\":1700000000000,\"type\":\"\"}", 0},
        {"{\"ts\":1700000000000,\"type\":1}", 0},
        {"{\"ts\":1700000000000,\"type\":\"t\",\"id\":\"\"}", 0},
        {"{}", 0},
    };
    lam_event_proj_t *pj = test_proj();
    lam_event_t ep, ef;
    lam_event_init(&ep);
    lam_event_init(&ef);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int took = check_projected(pj, &ep, &ef, cases[i].in, strlen(cases[i].in), 0);
        if (took != cases[i].took)
            fail_msg("%s: projected scan %d, want %d", cases[i].in, took, cases[i].took);
    }
    /* a long record (past the scan's limit) goes to the full parse */
    lam_buf_t big = LAM_BUF_INIT;
    lam_buf_append_str(&big, "{\"ts\":1700000000000,\"type\":\"t\",\"k9\":\"");
    for (int i = 0; i < 5000; i++)
        lam_buf_append_char(&big, 'x');
    lam_buf_append_str(&big, "\"}");
    assert_int_equal(check_projected(pj, &ep, &ef, big.data, big.len, 0), 0);
    lam_buf_free(&big);
    /* every parse sets the built-ins' hashes from constants */
    assert_int_equal(lam_event_name_hash("id", 2), LAM_EVENT_HASH_ID);
    assert_int_equal(lam_event_name_hash("ts", 2), LAM_EVENT_HASH_TS);
    assert_int_equal(lam_event_name_hash("type", 4), LAM_EVENT_HASH_TYPE);
    /* the projection refuses empty and repeated names */
    const char *dup[] = {"a", "a"}, *empty[] = {""};
    size_t dlen[] = {1, 1}, elen[] = {0};
    assert_null(lam_event_proj_new(dup, dlen, 2));
    assert_null(lam_event_proj_new(empty, elen, 1));
    lam_event_proj_free(pj);
    lam_event_free(&ep);
    lam_event_free(&ef);
}

/* ---- lam_uuid ---- */

static void test_uuid7(void **state)
{
    (void)state;
    char a[LAM_UUID_LEN + 1], b[LAM_UUID_LEN + 1];
    assert_int_equal(lam_uuid7(a, NOW), 0);
    assert_int_equal(strlen(a), 36);
    assert_true(a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
    assert_int_equal(a[14], '7');
    assert_non_null(strchr("89ab", a[19]));
    assert_int_equal(lam_uuid7_ms(a, strlen(a)), NOW);
    assert_int_equal(lam_uuid7_ms("nope", 4), -1);
    /* monotonic (strictly increasing text) even with a frozen or backwards clock */
    for (int i = 0; i < 100000; i++) {
        assert_int_equal(lam_uuid7(b, i % 3 == 0 ? NOW - 5 : NOW), 0);
        if (strcmp(a, b) >= 0)
            fail_msg("not monotonic: %s then %s", a, b);
        memcpy(a, b, sizeof(a));
    }
    /* counter exhaustion borrowed a few ms at most */
    int64_t ms = lam_uuid7_ms(a, 36);
    assert_true(ms >= NOW && ms < NOW + 100);
    assert_int_equal(lam_uuid7(b, NOW + 1000), 0);
    assert_int_equal(lam_uuid7_ms(b, 36), NOW + 1000);
}

#define THREADS 4
#define PER_THREAD 20000
static char g_ids[THREADS][PER_THREAD][LAM_UUID_LEN + 1];

static void *uuid_thread(void *arg)
{
    size_t t = (size_t)arg;
    for (int i = 0; i < PER_THREAD; i++)
        lam_uuid7(g_ids[t][i], NOW + 5000);
    return NULL;
}

static int cmp_id(const void *x, const void *y)
{
    return strcmp(x, y);
}

static void test_uuid7_threads(void **state)
{
    (void)state;
    pthread_t th[THREADS];
    for (size_t t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, uuid_thread, (void *)t);
    for (size_t t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    qsort(g_ids, THREADS * PER_THREAD, LAM_UUID_LEN + 1, cmp_id);
    char(*flat)[LAM_UUID_LEN + 1] = &g_ids[0][0];
    for (size_t i = 1; i < THREADS * PER_THREAD; i++)
        assert_true(strcmp(flat[i - 1], flat[i]) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_whitespace_and_escapes),
        cmocka_unit_test(test_ts),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_set_id_and_reuse),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_canonical_fixed_point_random),
        cmocka_unit_test(test_fast_path_differential),
        cmocka_unit_test(test_fast_path_cases),
        cmocka_unit_test(test_projected_differential),
        cmocka_unit_test(test_projected_cases),
        cmocka_unit_test(test_uuid7),
        cmocka_unit_test(test_uuid7_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
