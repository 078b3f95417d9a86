/* test_json.c - unit tests for lam_json: tokenizer, hostile input, numbers, decoding, writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lam_json.h"
#include "lam_mem.h"
#include "testlib.h"

/* Tokenize a whole document; returns 0 when it is valid JSON. */
static int valid_json(const char *s, size_t len)
{
    lam_json_t j;
    lam_json_init(&j, s, len, 0);
    for (;;) {
        lam_json_tok_t t = lam_json_next(&j);
        if (t == LAM_JSON_ERROR)
            return -1;
        if (t == LAM_JSON_EOF)
            return 0;
    }
}

#define VALID(s) assert_int_equal(valid_json(s, sizeof(s) - 1), 0)
#define INVALID(s) assert_int_equal(valid_json(s, sizeof(s) - 1), -1)

static void test_tokens(void **state)
{
    (void)state;
    const char *doc = " {\"a\" : [1, -2.5e3, true, false, null, \"x\\n\"], \"b\":{}}\n";
    lam_json_tok_t want[] = {LAM_JSON_OBJECT, LAM_JSON_KEY, LAM_JSON_ARRAY, LAM_JSON_NUMBER, LAM_JSON_NUMBER,
                             LAM_JSON_TRUE, LAM_JSON_FALSE, LAM_JSON_NULL, LAM_JSON_STRING, LAM_JSON_ARRAY_END,
                             LAM_JSON_KEY, LAM_JSON_OBJECT, LAM_JSON_OBJECT_END, LAM_JSON_OBJECT_END, LAM_JSON_EOF};
    lam_json_t j;
    lam_json_init(&j, doc, strlen(doc), 0);
    for (size_t i = 0; i < LAM_ARRAY_SIZE(want); i++) {
        lam_json_tok_t t = lam_json_next(&j);
        assert_int_equal(t, want[i]);
        if (i == 4) {
            assert_int_equal(j.tok_len, 6);
            assert_memory_equal(j.tok, "-2.5e3", 6);
        }
        if (i == 8)
            assert_true(j.tok_escaped);
    }
    assert_int_equal(lam_json_next(&j), LAM_JSON_EOF);
}

static void test_structure_errors(void **state)
{
    (void)state;
    INVALID("");
    INVALID("   ");
    INVALID("{");
    INVALID("{\"a\"}");
    INVALID("{\"a\":}");
    INVALID("{\"a\":1,}");
    INVALID("[1,]");
    INVALID("[1 2]");
    INVALID("{\"a\":1 \"b\":2}");
    INVALID("{1:2}");
    INVALID("{} x");
    INVALID("{}{}");
    INVALID("]");
    INVALID("[}");
    INVALID("{]");
    INVALID("tru");
    INVALID("truex");
    INVALID("nul");
    INVALID("'a'");
    INVALID("{\"a\":1}\x00");
    VALID("\t\r\n {\"a\":1} \t\r\n");
    VALID("[]");
    VALID("{}");
    VALID("\"\"");
    VALID("0");
}

static void test_numbers_grammar(void **state)
{
    (void)state;
    VALID("0");
    VALID("-0");
    VALID("1e5");
    VALID("1E+5");
    VALID("1e-5");
    VALID("-12.5e10");
    VALID("1e400");
    INVALID("01");
    INVALID("1.");
    INVALID(".5");
    INVALID("-");
    INVALID("+1");
    INVALID("1e");
    INVALID("1e+");
    INVALID("NaN");
    INVALID("Infinity");
    INVALID("-Infinity");
    INVALID("0x10");
    INVALID("1.5.2");
    INVALID("--1");
}

static void test_strings_hostile(void **state)
{
    (void)state;
    VALID("\"plain\"");
    VALID("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"");
    VALID("\"\\u0000\"");
    VALID("\"\\ud83d\\ude00\"");
    VALID("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    VALID("\"\xf4\x8f\xbf\xbf\""); /* U+10FFFF */
    VALID("\"\xed\x9f\xbf\"");     /* U+D7FF */
    INVALID("\"\xc0\x80\"");        /* overlong NUL */
    INVALID("\"\xc1\xbf\"");        /* overlong */
    INVALID("\"\xe0\x80\xaf\"");    /* overlong '/' */
    INVALID("\"\xf0\x80\x80\xaf\""); /* overlong */
    INVALID("\"\xed\xa0\x80\"");    /* UTF-16 surrogate D800 */
    INVALID("\"\xed\xbf\xbf\"");    /* surrogate DFFF */
    INVALID("\"\xf4\x90\x80\x80\""); /* > U+10FFFF */
    INVALID("\"\xf5\x80\x80\x80\"");
    INVALID("\"\xff\"");
    INVALID("\"\x80\"");            /* lone continuation */
    INVALID("\"\xe2\x82\"");        /* truncated */
    INVALID("\"\xe2\x82");          /* truncated at end of input */
    INVALID("\"\xc3\"");
    INVALID("\"a\x01\"");           /* raw control */
    INVALID("\"a\nb\"");
    INVALID("\"\\x41\"");
    INVALID("\"\\u12\"");
    INVALID("\"\\u12g4\"");
    INVALID("\"\\ud800\"");         /* lone high surrogate */
    INVALID("\"\\udc00\"");         /* lone low surrogate */
    INVALID("\"\\ud800\\u0041\"");
    INVALID("\"\\ud800x\"");
    INVALID("\"unterminated");
    INVALID("\"ends with backslash\\");
}

static void test_deep_nesting(void **state)
{
    (void)state;
    size_t n = 100000;
    char *s = lam_malloc(2 * n + 1);
    memset(s, '[', n);
    memset(s + n, ']', n);
    s[2 * n] = '\0';
    lam_json_t j;
    lam_json_init(&j, s, 2 * n, 0);
    lam_json_tok_t t;
    int count = 0;
    while ((t = lam_json_next(&j)) == LAM_JSON_ARRAY)
        count++;
    assert_int_equal(t, LAM_JSON_ERROR);
    assert_int_equal(count, LAM_JSON_MAX_DEPTH);
    assert_non_null(strstr(j.err, "nesting too deep"));
    /* exactly the limit is fine */
    assert_int_equal(valid_json(s + n - LAM_JSON_MAX_DEPTH, 2 * LAM_JSON_MAX_DEPTH), 0);
    for (size_t i = 0; i < n; i++)
        s[i] = i % 2 ? '[' : '{';
    assert_int_equal(valid_json(s, n), -1);
    lam_free(s);
}

static void test_stream_and_skip(void **state)
{
    (void)state;
    const char *s = "{\"a\":[1,{\"b\":2}],\"c\":3}\n{\"d\":4}\n  [5]\n";
    lam_json_t j;
    lam_json_init(&j, s, strlen(s), LAM_JSON_F_STREAM);
    int values = 0;
    for (;;) {
        size_t start = j.pos;
        lam_json_tok_t t = lam_json_next(&j);
        if (t == LAM_JSON_EOF)
            break;
        assert_true(t == LAM_JSON_OBJECT || t == LAM_JSON_ARRAY);
        (void)start;
        size_t begin = j.tok_pos;
        assert_int_equal(lam_json_skip(&j, t), 0);
        if (values == 1)
            assert_memory_equal(s + begin, "{\"d\":4}", j.pos - begin);
        values++;
    }
    assert_int_equal(values, 3);
    /* skip inside an object */
    lam_json_init(&j, s, strlen(s), LAM_JSON_F_STREAM);
    assert_int_equal(lam_json_next(&j), LAM_JSON_OBJECT);
    assert_int_equal(lam_json_next(&j), LAM_JSON_KEY);
    assert_int_equal(lam_json_skip(&j, lam_json_next(&j)), 0);
    assert_int_equal(lam_json_next(&j), LAM_JSON_KEY);
    assert_memory_equal(j.tok, "c", 1);
    /* empty stream */
    lam_json_init(&j, " \n", 2, LAM_JSON_F_STREAM);
    assert_int_equal(lam_json_next(&j), LAM_JSON_EOF);
}

static void test_decode(void **state)
{
    (void)state;
    const char *raw = "a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20ac\\ud83d\\ude00\\u0000z";
    char out[64];
    int nul = 0;
    size_t n = lam_json_decode(raw, strlen(raw), out, &nul);
    const char want[] = "a\"\\/\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\0z";
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(out, want, n);
    assert_true(nul);
    n = lam_json_decode("abc", 3, out, &nul);
    assert_int_equal(n, 3);
    assert_false(nul);
    assert_true(lam_json_utf8_valid(out, n));
    assert_false(lam_json_utf8_valid("\xed\xa0\x80", 3));
}

static void check_canon(const char *in, const char *want)
{
    lam_json_num_t n;
    char out[256];
    assert_int_equal(lam_json_num_parse(in, strlen(in), &n), 0);
    size_t len = lam_json_num_format(&n, out);
    out[len] = '\0';
    if (strcmp(out, want) != 0)
        fail_msg("canonical(%s) = %s, want %s", in, out, want);
    /* idempotent */
    lam_json_num_t n2;
    char out2[256];
    assert_int_equal(lam_json_num_parse(out, len, &n2), 0);
    size_t len2 = lam_json_num_format(&n2, out2);
    assert_int_equal(len2, len);
    assert_memory_equal(out2, out, len);
}

static void test_number_canonical(void **state)
{
    (void)state;
    check_canon("0", "0");
    check_canon("-0", "0");
    check_canon("-0.0e5", "0");
    check_canon("0.000", "0");
    check_canon("1.0", "1");
    check_canon("1.50", "1.5");
    check_canon("1e3", "1000");
    check_canon("1.0e3", "1000");
    check_canon("0.1e1", "1");
    check_canon("100", "100");
    check_canon("-12.340e-2", "-0.1234");
    check_canon("19.99", "19.99");
    check_canon("0.000001", "0.000001");
    check_canon("0.0000001", "1e-7");
    check_canon("1e-7", "1e-7");
    check_canon("1e20", "100000000000000000000");
    check_canon("1e21", "1e+21");
    check_canon("123e20", "1.23e+22");
    check_canon("123456789012345678901234", "1.23456789012345678901234e+23");
    check_canon("1e400", "1e+400");
    check_canon("-1.5e-400", "-1.5e-400");
}

static void test_number_canonical_strict(void **state)
{
    (void)state;
    lam_json_num_t n;
    assert_int_equal(lam_json_num_parse("01", 2, &n), -1);
    assert_int_equal(lam_json_num_parse("1.", 2, &n), -1);
    assert_int_equal(lam_json_num_parse("", 0, &n), -1);
    assert_int_equal(lam_json_num_parse("1e99999999999999999999999", 25, &n), 0);
    assert_false(lam_json_num_in_range(&n));
    assert_int_equal(lam_json_num_parse("1e307", 5, &n), 0);
    assert_true(lam_json_num_in_range(&n));
    assert_int_equal(lam_json_num_parse("1e308", 5, &n), 0);
    assert_false(lam_json_num_in_range(&n));
    assert_int_equal(lam_json_num_parse("1e-307", 6, &n), 0);
    assert_true(lam_json_num_in_range(&n));
    assert_int_equal(lam_json_num_parse("9e-308", 6, &n), 0);
    assert_false(lam_json_num_in_range(&n));
}

static int fixed(const char *s, int dec, int64_t *out)
{
    lam_json_num_t n;
    assert_int_equal(lam_json_num_parse(s, strlen(s), &n), 0);
    return lam_json_num_to_fixed(&n, dec, out);
}

static void test_number_fixed(void **state)
{
    (void)state;
    struct {
        const char *in;
        int rc;
        int64_t want;
    } cases[] = {
        {"0", 0, 0},
        {"19.99", 0, 19990000},
        {"-3", 0, -3000000},
        {"99.5", 0, 99500000},
        {"0.000001", 0, 1},
        {"0.0000005", 0, 0},   /* tie -> even (0) */
        {"0.0000015", 0, 2},   /* tie -> even (2) */
        {"0.0000025", 0, 2},   /* tie -> even (2) */
        {"0.00000251", 0, 3},  /* above the tie */
        {"0.00000249999", 0, 2},
        {"-0.0000005", 0, 0},
        {"-0.0000015", 0, -2},
        {"0.00000049", 0, 0},
        {"0.0000000001", 0, 0},
        {"1e-400", 0, 0},
        {"1.5e3", 0, 1500000000},
        {"9223372036854.775807", 0, INT64_MAX},
        {"9223372036854.7758074", 0, INT64_MAX},
        {"9223372036854.775808", -1, 0},
        {"-9223372036854.775808", 0, INT64_MIN},
        {"-9223372036854.775809", -1, 0},
        {"9223372036854.7758075", -1, 0}, /* rounds up past the max */
        {"1e13", -1, 0},
        {"1e400", -1, 0},
        {"99999999999999999999", -1, 0},
    };
    for (size_t i = 0; i < LAM_ARRAY_SIZE(cases); i++) {
        int64_t v = 0;
        int rc = fixed(cases[i].in, 6, &v);
        if (rc != cases[i].rc || (rc == 0 && v != cases[i].want))
            fail_msg("to_fixed(%s) = %d/%lld, want %d/%lld", cases[i].in, rc, (long long)v, cases[i].rc,
                     (long long)cases[i].want);
    }
    int64_t v;
    lam_json_num_t n;
    assert_int_equal(lam_json_num_parse("1.0e3", 5, &n), 0);
    assert_int_equal(lam_json_num_to_i64(&n, &v), 0);
    assert_int_equal(v, 1000);
    assert_int_equal(lam_json_num_parse("1.5", 3, &n), 0);
    assert_int_equal(lam_json_num_to_i64(&n, &v), -1);
    assert_int_equal(lam_json_num_parse("-9223372036854775808", 20, &n), 0);
    assert_int_equal(lam_json_num_to_i64(&n, &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(lam_json_num_parse("9223372036854775808", 19, &n), 0);
    assert_int_equal(lam_json_num_to_i64(&n, &v), -1);
}

static void test_writer(void **state)
{
    (void)state;
    lam_buf_t b = LAM_BUF_INIT;
    const char in[] = "a\"\\/\b\f\n\r\t\x01\x1f\x7f\xc3\xa9\0z";
    lam_json_append_string(&b, in, sizeof(in) - 1);
    const char *want = "\"a\\\"\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\xc3\xa9\\u0000z\"";
    assert_string_equal(b.data, want);
    assert_int_equal(lam_json_escaped_len(in, sizeof(in) - 1), strlen(want) - 2);
    lam_buf_clear(&b);
    lam_json_append_string(&b, "x\xff\xc3y", 4); /* invalid UTF-8 replaced */
    assert_string_equal(b.data, "\"x\xef\xbf\xbd\xef\xbf\xbdy\"");
    assert_int_equal(lam_json_escaped_len("x\xff\xc3y", 4), b.len - 2);
    lam_buf_clear(&b);
    lam_json_append_double(&b, 0.1);
    lam_buf_append_char(&b, ' ');
    lam_json_append_double(&b, 1.0 / 0.0);
    lam_buf_append_char(&b, ' ');
    lam_json_append_i64(&b, INT64_MIN);
    assert_string_equal(b.data, "0.1 null -9223372036854775808");
    lam_buf_free(&b);

    char q[16];
    lam_json_quote_excerpt(q, sizeof(q), "abcdefghijklmnopqrstuvwxyz", 26);
    assert_string_equal(q, "\"abcdefghij...\"");
    lam_json_quote_excerpt(q, sizeof(q), "a\nb", 3);
    assert_string_equal(q, "\"a\\nb\"");
}

/* Random strings survive escape -> tokenize -> decode. */
static void test_string_roundtrip_random(void **state)
{
    (void)state;
    unsigned long long seed = lam_test_seed();
    lam_buf_t b = LAM_BUF_INIT;
    char raw[64], out[512];
    for (int it = 0; it < 20000; it++) {
        size_t n = lam_test_rand() % sizeof(raw);
        for (size_t i = 0; i < n; i++) {
            unsigned r = (unsigned)(lam_test_rand() % 6);
            raw[i] = r == 0 ? (char)(lam_test_rand() % 0x20) : r == 1 ? '"' : r == 2 ? '\\' : (char)('a' + r);
        }
        lam_buf_clear(&b);
        lam_json_append_string(&b, raw, n);
        lam_json_t j;
        lam_json_init(&j, b.data, b.len, 0);
        if (lam_json_next(&j) != LAM_JSON_STRING)
            fail_msg("seed %llu: escaped string does not tokenize: %s", seed, j.err);
        size_t m = lam_json_decode(j.tok, j.tok_len, out, NULL);
        if (m != n || memcmp(out, raw, n) != 0)
            fail_msg("seed %llu: round trip differs", seed);
        assert_int_equal(lam_json_escaped_len(raw, n), b.len - 2);
    }
    lam_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_numbers_grammar),
        cmocka_unit_test(test_strings_hostile),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_stream_and_skip),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_number_canonical),
        cmocka_unit_test(test_number_canonical_strict),
        cmocka_unit_test(test_number_fixed),
        cmocka_unit_test(test_writer),
        cmocka_unit_test(test_string_roundtrip_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
