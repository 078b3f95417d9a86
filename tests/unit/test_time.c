/* test_time.c - unit tests for lam_time: RFC 3339, civil dates, bucket floors, granularities. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "lam_mem.h"
#include "lam_time.h"
#include "testlib.h"

static int parse(const char *s, int64_t *ms)
{
    char err[128];
    return lam_time_parse_rfc3339(s, strlen(s), ms, err, sizeof(err));
}

static void test_parse_valid(void **state)
{
    (void)state;
    struct {
        const char *in;
        int64_t want;
    } cases[] = {
        {"1970-01-01T00:00:00Z", 0},
        {"1970-01-01t00:00:00z", 0},
        {"2001-01-01T00:47:00Z", 978310020000LL},
        {"2001-01-01T01:47:00+01:00", 978310020000LL},
        {"2000-12-31T19:17:00-05:30", 978310020000LL},
        {"2001-01-01T00:47:00-00:00", 978310020000LL},
        {"2001-01-01T00:47:00.5Z", 978310020500LL},
        {"2001-01-01T00:47:00.123456789Z", 978310020123LL},
        {"2001-01-01T00:47:00.1Z", 978310020100LL},
        {"1969-12-31T23:59:59.999Z", -1},
        {"1969-12-31T23:59:59.9999Z", -1}, /* sub-ms digits truncate (floor) */
        {"0000-01-01T00:00:00Z", LAM_TIME_MIN_MS},
        {"9999-12-31T23:59:59.999Z", LAM_TIME_MAX_MS},
        {"2000-02-29T00:00:00Z", 951782400000LL},
        {"2024-02-29T12:00:00Z", 1709208000000LL},
        {"2016-12-31T23:59:60Z", 1483228799999LL}, /* leap second -> :59.999 */
        {"2016-12-31T23:59:60.5Z", 1483228799999LL},
        {"2001-01-01T00:00:00+23:59", 978307200000LL - (23 * 60 + 59) * 60000LL},
    };
    for (size_t i = 0; i < LAM_ARRAY_SIZE(cases); i++) {
        int64_t ms = 0;
        if (parse(cases[i].in, &ms) != 0 || ms != cases[i].want)
            fail_msg("%s -> %lld, want %lld", cases[i].in, (long long)ms, (long long)cases[i].want);
    }
}

static void test_parse_invalid(void **state)
{
    (void)state;
    const char *bad[] = {
        "", "yesterday", "2001-01-01", "2001-01-01T00:00:00", "2001-01-01 00:00:00Z", "2001-1-01T00:00:00Z",
        "2001-01-01T00:00Z", "2001-13-01T00:00:00Z", "2001-00-01T00:00:00Z", "2001-01-00T00:00:00Z",
        "2001-01-32T00:00:00Z", "2001-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2001-04-31T00:00:00Z",
        "2001-01-01T24:00:00Z", "2001-01-01T00:60:00Z", "2001-01-01T00:00:61Z", "2001-01-01T00:00:00.Z",
        "2001-01-01T00:00:00+24:00", "2001-01-01T00:00:00+01:60", "2001-01-01T00:00:00+0100",
        "2001-01-01T00:00:00+01", "2001-01-01T00:00:00ZZ", "2001-01-01T00:00:00Z ", " 2001-01-01T00:00:00Z",
        "+2001-01-01T00:00:00Z", "-001-01-01T00:00:00Z", "0000-01-01T00:00:00+00:01", "2001-01-01T00:00:00,5Z",
        "2001-01-01T00:00:00.5", "200a-01-01T00:00:00Z",
    };
    for (size_t i = 0; i < LAM_ARRAY_SIZE(bad); i++) {
        int64_t ms;
        char err[160];
        if (lam_time_parse_rfc3339(bad[i], strlen(bad[i]), &ms, err, sizeof(err)) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(strstr(err, "not RFC 3339: \""));
    }
    char err[160];
    int64_t ms;
    lam_time_parse_rfc3339("yesterday", 9, &ms, err, sizeof(err));
    assert_string_equal(err, "not RFC 3339: \"yesterday\"");
    /* NUL inside the string is not accepted */
    assert_int_equal(lam_time_parse_rfc3339("2001-01-01T00:00:00Z\0", 21, &ms, err, sizeof(err)), -1);
}

static void test_format(void **state)
{
    (void)state;
    char out[LAM_TIME_RFC3339_LEN + 1];
    assert_int_equal(lam_time_format_rfc3339(0, out), LAM_TIME_RFC3339_LEN);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    lam_time_format_rfc3339(-1, out);
    assert_string_equal(out, "1969-12-31T23:59:59.999Z");
    lam_time_format_rfc3339(LAM_TIME_MAX_MS, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999Z");
    lam_time_format_rfc3339(LAM_TIME_MIN_MS, out);
    assert_string_equal(out, "0000-01-01T00:00:00.000Z");
    lam_time_format_rfc3339(978310020123LL, out);
    assert_string_equal(out, "2001-01-01T00:47:00.123Z");
    assert_int_equal(lam_time_format_rfc3339(LAM_TIME_MAX_MS + 1, out), 0);
    assert_string_equal(out, "");
    assert_int_equal(lam_time_format_rfc3339(LAM_TIME_MIN_MS - 1, out), 0);
}

static void test_roundtrip_random(void **state)
{
    (void)state;
    unsigned long long seed = lam_test_seed();
    char out[LAM_TIME_RFC3339_LEN + 1];
    for (int i = 0; i < 200000; i++) {
        int64_t ms = LAM_TIME_MIN_MS + (int64_t)(lam_test_rand() % (uint64_t)(LAM_TIME_MAX_MS - LAM_TIME_MIN_MS + 1));
        int64_t back;
        assert_int_equal(lam_time_format_rfc3339(ms, out), LAM_TIME_RFC3339_LEN);
        if (parse(out, &back) != 0 || back != ms)
            fail_msg("seed %llu: %lld -> %s -> %lld", seed, (long long)ms, out, (long long)back);
    }
}

static void test_civil(void **state)
{
    (void)state;
    assert_int_equal(lam_time_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(lam_time_days_from_civil(2000, 3, 1), 11017);
    assert_int_equal(lam_time_days_from_civil(0, 1, 1), -719528);
    for (int64_t d = -800000; d < 3000000; d += 17) {
        int64_t y;
        unsigned m, dd;
        lam_time_civil_from_days(d, &y, &m, &dd);
        assert_true(m >= 1 && m <= 12 && dd >= 1 && dd <= lam_time_days_in_month(y, m));
        assert_int_equal(lam_time_days_from_civil(y, m, dd), d);
    }
    /* agree with timegm for 1970..2100 */
    for (int64_t d = 0; d < 47500; d += 13) {
        int64_t y;
        unsigned m, dd;
        lam_time_civil_from_days(d, &y, &m, &dd);
        struct tm tm = {.tm_year = (int)y - 1900, .tm_mon = (int)m - 1, .tm_mday = (int)dd};
        assert_int_equal((int64_t)timegm(&tm), d * 86400);
    }
    assert_int_equal(lam_time_days_in_month(2000, 2), 29);
    assert_int_equal(lam_time_days_in_month(1900, 2), 28);
    assert_int_equal(lam_time_days_in_month(2024, 2), 29);
    assert_int_equal(lam_time_days_in_month(2023, 2), 28);
    assert_int_equal(lam_time_days_in_month(2023, 13), 0);
}

static int64_t at(const char *s)
{
    int64_t ms;
    assert_int_equal(parse(s, &ms), 0);
    return ms;
}

static void test_floor(void **state)
{
    (void)state;
    int64_t t = at("2024-01-03T13:47:12.345Z"); /* a Wednesday */
    assert_int_equal(lam_time_floor(t, LAM_GRAN_MINUTE), at("2024-01-03T13:47:00Z"));
    assert_int_equal(lam_time_floor(t, LAM_GRAN_HOUR), at("2024-01-03T13:00:00Z"));
    assert_int_equal(lam_time_floor(t, LAM_GRAN_DAY), at("2024-01-03T00:00:00Z"));
    assert_int_equal(lam_time_floor(t, LAM_GRAN_WEEK), at("2024-01-01T00:00:00Z"));
    assert_int_equal(lam_time_floor(t, LAM_GRAN_MONTH), at("2024-01-01T00:00:00Z"));
    assert_int_equal(lam_time_floor(t, LAM_GRAN_ALL), 0);
    /* Monday stays, Sunday goes back 6 days; ISO week across a year boundary */
    assert_int_equal(lam_time_floor(at("2024-01-01T00:00:00Z"), LAM_GRAN_WEEK), at("2024-01-01T00:00:00Z"));
    assert_int_equal(lam_time_floor(at("2024-01-07T23:59:59.999Z"), LAM_GRAN_WEEK), at("2024-01-01T00:00:00Z"));
    assert_int_equal(lam_time_floor(at("2021-01-02T10:00:00Z"), LAM_GRAN_WEEK), at("2020-12-28T00:00:00Z"));
    /* before the epoch: 1970-01-01 is a Thursday */
    assert_int_equal(lam_time_floor(0, LAM_GRAN_WEEK), at("1969-12-29T00:00:00Z"));
    assert_int_equal(lam_time_floor(-1, LAM_GRAN_MINUTE), -60000);
    assert_int_equal(lam_time_floor(-1, LAM_GRAN_DAY), -86400000);
    assert_int_equal(lam_time_floor(-1, LAM_GRAN_MONTH), at("1969-12-01T00:00:00Z"));
    assert_int_equal(lam_time_floor(at("2024-02-29T23:59:59Z"), LAM_GRAN_MONTH), at("2024-02-01T00:00:00Z"));
    assert_int_equal(lam_time_floor(LAM_TIME_MIN_MS, LAM_GRAN_WEEK), at("0000-01-01T00:00:00Z") - 5 * 86400000LL);
    assert_int_equal(lam_time_floor(LAM_TIME_MAX_MS, LAM_GRAN_MONTH), at("9999-12-01T00:00:00Z"));
    /* random: floor is idempotent, <= t, and within one bucket */
    for (int i = 0; i < 100000; i++) {
        int64_t x = LAM_TIME_MIN_MS + (int64_t)(lam_test_rand() % (uint64_t)(LAM_TIME_MAX_MS - LAM_TIME_MIN_MS));
        for (int g = LAM_GRAN_MINUTE; g <= LAM_GRAN_MONTH; g++) {
            int64_t f = lam_time_floor(x, (lam_gran_t)g);
            assert_true(f <= x);
            assert_int_equal(lam_time_floor(f, (lam_gran_t)g), f);
            assert_true(x - f < 31LL * 86400000);
        }
    }
}

static void test_gran_and_param(void **state)
{
    (void)state;
    lam_gran_t g;
    const char *names[] = {"minute", "hour", "day", "week", "month", "all"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(lam_gran_parse(names[i], strlen(names[i]), &g), 0);
        assert_int_equal(g, i);
        assert_string_equal(lam_gran_name(g), names[i]);
    }
    assert_int_equal(lam_gran_parse("Hour", 4, &g), -1);
    assert_int_equal(lam_gran_parse("", 0, &g), -1);
    assert_int_equal(lam_gran_parse("hours", 5, &g), -1);
    int64_t ms;
    char err[128];
    assert_int_equal(lam_time_parse_param("978310020000", 12, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 978310020000LL);
    assert_int_equal(lam_time_parse_param("-5", 2, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, -5);
    assert_int_equal(lam_time_parse_param("2001-01-01T00:47:00Z", 20, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 978310020000LL);
    assert_int_equal(lam_time_parse_param("12abc", 5, &ms, err, sizeof(err)), -1);
    assert_int_equal(lam_time_parse_param("", 0, &ms, err, sizeof(err)), -1);
    assert_int_equal(lam_time_parse_param("-", 1, &ms, err, sizeof(err)), -1);
    assert_true(lam_time_now_ms() > 1600000000000LL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),   cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_format),        cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_civil),         cmocka_unit_test(test_floor),
        cmocka_unit_test(test_gran_and_param),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
