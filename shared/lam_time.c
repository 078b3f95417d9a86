/* lam_time.c - UTC time: RFC 3339 parse/format, civil-date math and bucket floors. */
#include "lam_time.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lam_json.h"

#define MS_MIN 60000LL
#define MS_HOUR 3600000LL
#define MS_DAY 86400000LL

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

/* Howard Hinnant's days_from_civil / civil_from_days, exact for the proleptic Gregorian calendar. */
int64_t lam_time_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void lam_time_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

unsigned lam_time_days_in_month(int64_t y, unsigned m)
{
    static const unsigned dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12)
        return 0;
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

static int digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static int bad(const char *s, size_t len, const char *why, char *errstr, size_t errstr_size)
{
    char q[80];
    lam_json_quote_excerpt(q, sizeof(q), s, len);
    if (errstr && errstr_size)
        snprintf(errstr, errstr_size, "not RFC 3339: %s%s%s%s", q, why ? " (" : "", why ? why : "",
                 why ? ")" : "");
    return -1;
}

int lam_time_parse_rfc3339(const char *s, size_t len, int64_t *ms, char *errstr, size_t errstr_size)
{
    unsigned Y, M, D, h, mi, sec, frac = 0;
    /* YYYY-MM-DDTHH:MM:SS = 19 chars, then optional fraction, then Z or +hh:mm */
    if (len < 20 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
        digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &h) ||
        s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' || digits(s + 17, 2, &sec))
        return bad(s, len, NULL, errstr, errstr_size);
    size_t i = 19;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (i - start < 3)
                frac = frac * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        if (i == start)
            return bad(s, len, "empty fraction", errstr, errstr_size);
        for (size_t k = i - start; k < 3; k++)
            frac *= 10;
    }
    int off_min = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        unsigned oh, om;
        if (len - i < 6 || digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || digits(s + i + 4, 2, &om))
            return bad(s, len, NULL, errstr, errstr_size);
        if (oh > 23 || om > 59)
            return bad(s, len, "offset out of range", errstr, errstr_size);
        off_min = (int)(oh * 60 + om);
        if (s[i] == '-')
            off_min = -off_min;
        i += 6;
    } else {
        return bad(s, len, "missing Z or offset", errstr, errstr_size);
    }
    if (i != len)
        return bad(s, len, "trailing characters", errstr, errstr_size);
    if (M < 1 || M > 12)
        return bad(s, len, "month out of range", errstr, errstr_size);
    if (D < 1 || D > lam_time_days_in_month(Y, M))
        return bad(s, len, "day out of range", errstr, errstr_size);
    if (h > 23)
        return bad(s, len, "hour out of range", errstr, errstr_size);
    if (mi > 59)
        return bad(s, len, "minute out of range", errstr, errstr_size);
    if (sec > 60)
        return bad(s, len, "second out of range", errstr, errstr_size);
    if (sec == 60) { /* leap second: keep it inside its minute */
        sec = 59;
        frac = 999;
    }
    int64_t days = lam_time_days_from_civil(Y, M, D);
    int64_t t = days * MS_DAY + (int64_t)h * MS_HOUR + (int64_t)mi * MS_MIN + (int64_t)sec * 1000 +
                frac - (int64_t)off_min * MS_MIN;
    if (t < LAM_TIME_MIN_MS || t > LAM_TIME_MAX_MS)
        return bad(s, len, "outside years 0000..9999 UTC", errstr, errstr_size);
    *ms = t;
    return 0;
}

int lam_time_parse_param(const char *s, size_t len, int64_t *ms, char *errstr, size_t errstr_size)
{
    size_t i = 0;
    if (len > 0 && s[0] == '-')
        i = 1;
    if (i < len && len - i <= 18) {
        int64_t v = 0;
        size_t k = i;
        while (k < len && s[k] >= '0' && s[k] <= '9')
            v = v * 10 + (s[k++] - '0');
        if (k == len) {
            *ms = i ? -v : v;
            return 0;
        }
    }
    return lam_time_parse_rfc3339(s, len, ms, errstr, errstr_size);
}

static void put_num(char *o, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

size_t lam_time_format_rfc3339(int64_t ms, char out[LAM_TIME_RFC3339_LEN + 1])
{
    if (ms < LAM_TIME_MIN_MS || ms > LAM_TIME_MAX_MS) {
        out[0] = '\0';
        return 0;
    }
    int64_t days = floor_div(ms, MS_DAY);
    int64_t rem = ms - days * MS_DAY;
    int64_t y;
    unsigned m, d;
    lam_time_civil_from_days(days, &y, &m, &d);
    put_num(out, (unsigned)y, 4);
    out[4] = '-';
    put_num(out + 5, m, 2);
    out[7] = '-';
    put_num(out + 8, d, 2);
    out[10] = 'T';
    put_num(out + 11, (unsigned)(rem / MS_HOUR), 2);
    out[13] = ':';
    put_num(out + 14, (unsigned)(rem / MS_MIN % 60), 2);
    out[16] = ':';
    put_num(out + 17, (unsigned)(rem / 1000 % 60), 2);
    out[19] = '.';
    put_num(out + 20, (unsigned)(rem % 1000), 3);
    out[23] = 'Z';
    out[24] = '\0';
    return LAM_TIME_RFC3339_LEN;
}

int64_t lam_time_floor(int64_t ms, lam_gran_t g)
{
    switch (g) {
    case LAM_GRAN_MINUTE:
        return floor_div(ms, MS_MIN) * MS_MIN;
    case LAM_GRAN_HOUR:
        return floor_div(ms, MS_HOUR) * MS_HOUR;
    case LAM_GRAN_DAY:
        return floor_div(ms, MS_DAY) * MS_DAY;
    case LAM_GRAN_WEEK: {
        int64_t days = floor_div(ms, MS_DAY);
        /* 1970-01-01 was a Thursday: Monday-based weekday index is (days + 3) mod 7 */
        int64_t wd = (days + 3) % 7;
        if (wd < 0)
            wd += 7;
        return (days - wd) * MS_DAY;
    }
    case LAM_GRAN_MONTH: {
        int64_t y;
        unsigned m, d;
        lam_time_civil_from_days(floor_div(ms, MS_DAY), &y, &m, &d);
        return lam_time_days_from_civil(y, m, 1) * MS_DAY;
    }
    case LAM_GRAN_ALL:
    default:
        return 0;
    }
}

static const char *const gran_names[] = {"minute", "hour", "day", "week", "month", "all"};

int lam_gran_parse(const char *s, size_t len, lam_gran_t *out)
{
    for (size_t i = 0; i < sizeof(gran_names) / sizeof(gran_names[0]); i++) {
        if (strlen(gran_names[i]) == len && memcmp(gran_names[i], s, len) == 0) {
            *out = (lam_gran_t)i;
            return 0;
        }
    }
    return -1;
}

const char *lam_gran_name(lam_gran_t g)
{
    return (unsigned)g < sizeof(gran_names) / sizeof(gran_names[0]) ? gran_names[g] : "?";
}

int64_t lam_time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
