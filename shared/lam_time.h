/* lam_time.h - UTC time: RFC 3339 parse/format, civil-date math and bucket floors (no libc tz). */
#ifndef LAM_TIME_H
#define LAM_TIME_H

#include <stddef.h>
#include <stdint.h>

/** Bucket granularities, finest first (the order is used for "coarser than" checks). */
typedef enum lam_gran {
    LAM_GRAN_MINUTE = 0,
    LAM_GRAN_HOUR,
    LAM_GRAN_DAY,
    LAM_GRAN_WEEK,  /* ISO week: starts Monday 00:00 UTC */
    LAM_GRAN_MONTH, /* calendar month, UTC */
    LAM_GRAN_ALL    /* one bucket for all time, bucket ts 0 */
} lam_gran_t;

#define LAM_TIME_MIN_MS (-62167219200000LL)   /* 0000-01-01T00:00:00.000Z */
#define LAM_TIME_MAX_MS (253402300799999LL)   /* 9999-12-31T23:59:59.999Z */
#define LAM_TIME_RFC3339_LEN 24               /* strlen("YYYY-MM-DDTHH:MM:SS.sssZ") */

/** Days since 1970-01-01 of a proleptic Gregorian date (month 1..12, day 1..31). */
int64_t lam_time_days_from_civil(int64_t y, unsigned m, unsigned d);
/** Inverse of lam_time_days_from_civil. */
void lam_time_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);
/** Days in month m (1..12) of year y. */
unsigned lam_time_days_in_month(int64_t y, unsigned m);

/**
 * Parse an RFC 3339 date-time ("2001-01-01T00:47:00Z", "...T01:47:00.25+01:00") into epoch ms.
 * 'T'/'t' and 'Z'/'z' accepted; fractional seconds of any length are truncated to ms (floor);
 * second 60 (leap second) is accepted and counted as hh:mm:59.999. The result must lie in
 * years 0000..9999 UTC. Returns 0, or -1 with a message such as `not RFC 3339: "yesterday"`.
 */
int lam_time_parse_rfc3339(const char *s, size_t len, int64_t *ms, char *errstr, size_t errstr_size);

/**
 * Parse a query parameter that is either epoch milliseconds (optional '-', digits) or RFC 3339.
 * Returns 0 or -1 with a message.
 */
int lam_time_parse_param(const char *s, size_t len, int64_t *ms, char *errstr, size_t errstr_size);

/**
 * Format epoch ms as "YYYY-MM-DDTHH:MM:SS.sssZ" into out (NUL-terminated).
 * Returns LAM_TIME_RFC3339_LEN, or 0 (and "") when ms is outside years 0000..9999.
 */
size_t lam_time_format_rfc3339(int64_t ms, char out[LAM_TIME_RFC3339_LEN + 1]);

/** Start (epoch ms) of the UTC bucket of granularity g that contains ms. LAM_GRAN_ALL gives 0. */
int64_t lam_time_floor(int64_t ms, lam_gran_t g);

/** Parse "minute"|"hour"|"day"|"week"|"month"|"all". Returns 0 or -1. */
int lam_gran_parse(const char *s, size_t len, lam_gran_t *out);
/** Static name of a granularity ("minute", ...). */
const char *lam_gran_name(lam_gran_t g);

/** Current wall-clock time in epoch ms (CLOCK_REALTIME). */
int64_t lam_time_now_ms(void);

#endif
