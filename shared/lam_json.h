/* lam_json.h - allocation-free JSON tokenizer/cursor, exact decimal numbers and a JSON writer. */
#ifndef LAM_JSON_H
#define LAM_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "lam_buf.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/** Token kinds returned by lam_json_next(). */
typedef enum lam_json_tok {
    LAM_JSON_ERROR = -1, /* see j->err; sticky */
    LAM_JSON_EOF = 0,    /* the document (or stream) is complete */
    LAM_JSON_OBJECT,     /* '{' */
    LAM_JSON_OBJECT_END, /* '}' */
    LAM_JSON_ARRAY,      /* '[' */
    LAM_JSON_ARRAY_END,  /* ']' */
    LAM_JSON_KEY,        /* object member name (tok/tok_len = raw, still escaped) */
    LAM_JSON_STRING,     /* string value (tok/tok_len = raw, still escaped) */
    LAM_JSON_NUMBER,     /* tok/tok_len = number text, grammar already checked */
    LAM_JSON_TRUE,
    LAM_JSON_FALSE,
    LAM_JSON_NULL
} lam_json_tok_t;

#define LAM_JSON_MAX_DEPTH 64 /* deeper nesting is an error (no recursion anywhere) */

/** Cursor flags. */
#define LAM_JSON_F_STREAM 1 /* accept several top-level values separated by whitespace (NDJSON) */

/**
 * Cursor over a caller-owned buffer (not copied, must outlive the cursor). Validates
 * structure, string escapes, UTF-8 (no overlongs, surrogates or > U+10FFFF), raw control
 * characters and the number grammar while tokenizing; performs no allocation.
 */
typedef struct lam_json {
    const char *buf;
    size_t len;
    size_t pos;        /* next byte to read */
    int depth;         /* open containers */
    int state;         /* private */
    int flags;
    uint64_t arrays;   /* private: bit d set when the container at depth d+1 is an array */
    const char *tok;   /* current token text (strings: between the quotes) */
    size_t tok_len;
    size_t tok_pos;    /* byte offset where the current token starts */
    int tok_escaped;   /* string token contains backslash escapes */
    size_t err_pos;    /* byte offset of the last LAM_JSON_ERROR */
    char err[96];      /* message of the last LAM_JSON_ERROR */
} lam_json_t;

/**
 * Offset of the first byte at or after p in b[0..len) that is '"', '\\', a control character
 * or non-ASCII (len when there is none): the end of a string's plain run. 8 bytes at a time.
 */
static inline size_t lam_json_plain_run(const uint8_t *b, size_t p, size_t len)
{
#ifdef __SSE2__
    /* 16 bytes at a time: as signed bytes, controls and non-ASCII are both < 0x20 */
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (p + 16 <= len) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(b + p));
        __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bslash)),
                                    _mm_cmplt_epi8(x, space));
        unsigned mask = (unsigned)_mm_movemask_epi8(stop);
        if (mask)
            return p + (size_t)__builtin_ctz(mask);
        p += 16;
    }
#endif
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (p + 8 <= len) {
        uint64_t w;
        __builtin_memcpy(&w, b + p, 8);
        uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
        uint64_t stop = (w | ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs)) & highs;
        if (stop)
            return p + (size_t)(__builtin_ctzll(stop) >> 3);
        p += 8;
    }
    while (p < len && b[p] >= 0x20 && b[p] < 0x80 && b[p] != '"' && b[p] != '\\')
        p++;
    return p;
}

/** Start a cursor over buf[0..len). */
void lam_json_init(lam_json_t *j, const char *buf, size_t len, int flags);
/** Next token. After LAM_JSON_ERROR every call returns LAM_JSON_ERROR again. */
lam_json_tok_t lam_json_next(lam_json_t *j);
/**
 * Skip the rest of a value whose first token 'first' was just returned (a scalar: nothing to do;
 * an object/array: through its matching end). Returns 0 or -1 (error in j->err).
 */
int lam_json_skip(lam_json_t *j, lam_json_tok_t first);

/**
 * Decode a validated raw string token into out, which must hold at least raw_len bytes
 * (decoding never grows). Handles every escape and UTF-16 surrogate pairs. Returns the decoded
 * length; *has_nul (may be NULL) is set when the result contains a NUL byte.
 */
size_t lam_json_decode(const char *raw, size_t raw_len, char *out, int *has_nul);

/** Check that s[0..len) is valid UTF-8 (RFC 3629). Returns 1 if valid. */
int lam_json_utf8_valid(const char *s, size_t len);

/**
 * Exact decimal view of a JSON number: value = (-1)^neg * DIGITS * 10^exp, where DIGITS is the
 * concatenation d1[0..n1) d2[0..n2) with no leading or trailing zeros (n1 + n2 == 0: zero;
 * -0 is zero). Points into the number text.
 */
typedef struct lam_json_num {
    int neg;
    const char *d1;
    size_t n1;
    const char *d2;
    size_t n2;
    int64_t exp;
} lam_json_num_t;

/** Parse JSON number text (strict grammar). Returns 0 or -1 if the text is not a JSON number. */
int lam_json_num_parse(const char *text, size_t len, lam_json_num_t *n);
/** Decimal exponent of the leading digit (1.5e3 -> 3, 0.01 -> -2); 0 for zero. */
int64_t lam_json_num_magnitude(const lam_json_num_t *n);
/** 1 when the number is zero or lies in 1e-307 <= |x| < 1e308 (what events accept). */
int lam_json_num_in_range(const lam_json_num_t *n);
/**
 * Round value * 10^decimals to an int64, half to even, from the decimal digits (no floating
 * point). Returns 0, or -1 when the result does not fit in int64. decimals must be 0..18.
 */
int lam_json_num_to_fixed(const lam_json_num_t *n, int decimals, int64_t *out);
/** Exact integer value: 0, or -1 when not an integer or out of int64 range. */
int lam_json_num_to_i64(const lam_json_num_t *n, int64_t *out);
/** Upper bound of the canonical text length of n. */
#define LAM_JSON_NUM_MAXLEN(n) ((n)->n1 + (n)->n2 + 48)
/**
 * Write the canonical text of n into out (at least LAM_JSON_NUM_MAXLEN bytes, not terminated):
 * JavaScript Number#toString layout applied to the exact decimal digits: plain digits when the
 * decimal point position p (value = 0.DIGITS * 10^p) is in -5 < p <= 21, else d.ddde+N / e-N.
 * Returns the length. Idempotent: canonical text parses back to the same digits.
 */
size_t lam_json_num_format(const lam_json_num_t *n, char *out);

/** Length of s[0..len) once escaped by lam_json_append_string (without the quotes). */
size_t lam_json_escaped_len(const char *s, size_t len);
/**
 * Append s[0..len) as a quoted JSON string with canonical (minimal) escaping: \" \\ \b \f \n \r
 * \t, \u00XX for other controls, everything else verbatim ('/' and non-ASCII included).
 * Invalid UTF-8 bytes are replaced by U+FFFD so the output is always valid JSON.
 */
void lam_json_append_string(lam_buf_t *b, const char *s, size_t len);
/** Append a NUL-terminated string as a JSON string. */
void lam_json_append_cstr(lam_buf_t *b, const char *s);
/** Append an integer. */
void lam_json_append_i64(lam_buf_t *b, int64_t v);
/** Append a double with the shortest "%.*g" text that round-trips; NaN/Inf become null. */
void lam_json_append_double(lam_buf_t *b, double v);
/**
 * Write a short, quoted, escaped excerpt of s (for error messages) into dst (NUL-terminated),
 * truncated with "..." to fit dstsize.
 */
void lam_json_quote_excerpt(char *dst, size_t dstsize, const char *s, size_t len);

#endif
