/* lam_json.c - allocation-free JSON tokenizer/cursor, exact decimal numbers and a JSON writer. */
#include "lam_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_VALUE, ST_ARR_FIRST, ST_OBJ_FIRST, ST_KEY, ST_COLON, ST_AFTER, ST_DONE, ST_ERROR };


void lam_json_init(lam_json_t *j, const char *buf, size_t len, int flags)
{
    memset(j, 0, sizeof(*j));
    j->buf = buf;
    j->len = len;
    j->flags = flags;
    j->state = ST_VALUE;
}

static lam_json_tok_t fail(lam_json_t *j, size_t at, const char *msg)
{
    snprintf(j->err, sizeof(j->err), "invalid JSON at byte %zu: %s", at, msg);
    j->err_pos = at;
    j->state = ST_ERROR;
    return LAM_JSON_ERROR;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 if invalid. */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xc2)
        return 0;
    if (c < 0xe0)
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c < 0xf0) {
        if (n < 3 || (s[2] & 0xc0) != 0x80)
            return 0;
        uint8_t lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return s[1] >= lo && s[1] <= hi ? 3 : 0;
    }
    if (c < 0xf5) {
        if (n < 4 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        uint8_t lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return s[1] >= lo && s[1] <= hi ? 4 : 0;
    }
    return 0;
}

int lam_json_utf8_valid(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s, *end = p + len;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t n = utf8_seq(p, (size_t)(end - p));
        if (!n)
            return 0;
        p += n;
    }
    return 1;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Scan the string starting at the opening quote at j->pos; sets the token fields. */
static int scan_string(lam_json_t *j)
{
    const uint8_t *b = (const uint8_t *)j->buf;
    size_t p = j->pos + 1, len = j->len;
    int esc = 0;
    j->tok_pos = j->pos;
    for (;;) {
        p = lam_json_plain_run(b, p, len);
        if (p >= len) {
            fail(j, j->tok_pos, "unterminated string");
            return -1;
        }
        uint8_t c = b[p];
        if (c == '"')
            break;
        if (c == '\\') {
            esc = 1;
            if (p + 1 >= len) {
                fail(j, p, "unterminated string");
                return -1;
            }
            char e = (char)b[p + 1];
            if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
                e == 't') {
                p += 2;
                continue;
            }
            unsigned cp, lo;
            if (e != 'u' || p + 6 > len || hex4(j->buf + p + 2, &cp)) {
                fail(j, p, "invalid escape");
                return -1;
            }
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                fail(j, p, "lone surrogate in \\u escape");
                return -1;
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (p + 12 > len || b[p + 6] != '\\' || b[p + 7] != 'u' || hex4(j->buf + p + 8, &lo) ||
                    lo < 0xdc00 || lo > 0xdfff) {
                    fail(j, p, "lone surrogate in \\u escape");
                    return -1;
                }
                p += 12;
            } else {
                p += 6;
            }
            continue;
        }
        if (c < 0x20) {
            fail(j, p, "control character in string");
            return -1;
        }
        size_t n = utf8_seq(b + p, len - p);
        if (!n) {
            fail(j, p, "invalid UTF-8");
            return -1;
        }
        p += n;
    }
    j->tok = j->buf + j->pos + 1;
    j->tok_len = p - j->pos - 1;
    j->tok_escaped = esc;
    j->pos = p + 1;
    return 0;
}

static int isdig(char c)
{
    return c >= '0' && c <= '9';
}

/* Length of the JSON number at s[0..n), or 0 if there is none. */
static size_t scan_number(const char *s, size_t n)
{
    size_t p = 0;
    if (p < n && s[p] == '-')
        p++;
    if (p < n && s[p] == '0')
        p++;
    else if (p < n && isdig(s[p]))
        while (p < n && isdig(s[p]))
            p++;
    else
        return 0;
    if (p < n && s[p] == '.') {
        p++;
        if (p >= n || !isdig(s[p]))
            return 0;
        while (p < n && isdig(s[p]))
            p++;
    }
    if (p < n && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < n && (s[p] == '+' || s[p] == '-'))
            p++;
        if (p >= n || !isdig(s[p]))
            return 0;
        while (p < n && isdig(s[p]))
            p++;
    }
    return p;
}

static int in_array(const lam_json_t *j)
{
    return j->depth > 0 && ((j->arrays >> (j->depth - 1)) & 1);
}

static lam_json_tok_t value(lam_json_t *j)
{
    const char *b = j->buf;
    size_t p = j->pos;
    j->tok_pos = p;
    j->tok = b + p;
    j->tok_len = 1;
    j->tok_escaped = 0;
    if (p >= j->len)
        return fail(j, p, j->depth == 0 && p == 0 ? "empty input" : "unexpected end of input");
    switch (b[p]) {
    case '{':
    case '[':
        if (j->depth >= LAM_JSON_MAX_DEPTH)
            return fail(j, p, "nesting too deep");
        if (b[p] == '[')
            j->arrays |= (uint64_t)1 << j->depth;
        else
            j->arrays &= ~((uint64_t)1 << j->depth);
        j->depth++;
        j->pos = p + 1;
        j->state = b[p] == '[' ? ST_ARR_FIRST : ST_OBJ_FIRST;
        return b[p] == '[' ? LAM_JSON_ARRAY : LAM_JSON_OBJECT;
    case '"':
        if (scan_string(j))
            return LAM_JSON_ERROR;
        j->state = ST_AFTER;
        return LAM_JSON_STRING;
    case 't':
        if (j->len - p >= 4 && memcmp(b + p, "true", 4) == 0) {
            j->pos = p + 4;
            j->tok_len = 4;
            j->state = ST_AFTER;
            return LAM_JSON_TRUE;
        }
        break;
    case 'f':
        if (j->len - p >= 5 && memcmp(b + p, "false", 5) == 0) {
            j->pos = p + 5;
            j->tok_len = 5;
            j->state = ST_AFTER;
            return LAM_JSON_FALSE;
        }
        break;
    case 'n':
        if (j->len - p >= 4 && memcmp(b + p, "null", 4) == 0) {
            j->pos = p + 4;
            j->tok_len = 4;
            j->state = ST_AFTER;
            return LAM_JSON_NULL;
        }
        break;
    default:
        if (b[p] == '-' || isdig(b[p])) {
            size_t n = scan_number(b + p, j->len - p);
            if (!n)
                return fail(j, p, "invalid number");
            j->tok_len = n;
            j->pos = p + n;
            j->state = ST_AFTER;
            return LAM_JSON_NUMBER;
        }
        break;
    }
    return fail(j, p, "expected a value");
}

static lam_json_tok_t key(lam_json_t *j)
{
    if (j->pos >= j->len || j->buf[j->pos] != '"')
        return fail(j, j->pos, j->pos >= j->len ? "unexpected end of input" : "expected a member name");
    if (scan_string(j))
        return LAM_JSON_ERROR;
    j->state = ST_COLON;
    return LAM_JSON_KEY;
}

static lam_json_tok_t close_container(lam_json_t *j, int array)
{
    j->tok_pos = j->pos;
    j->tok = j->buf + j->pos;
    j->tok_len = 1;
    j->pos++;
    j->depth--;
    j->state = ST_AFTER;
    return array ? LAM_JSON_ARRAY_END : LAM_JSON_OBJECT_END;
}

lam_json_tok_t lam_json_next(lam_json_t *j)
{
    const char *b = j->buf;
    for (;;) {
        while (j->pos < j->len &&
               (b[j->pos] == ' ' || b[j->pos] == '\n' || b[j->pos] == '\r' || b[j->pos] == '\t'))
            j->pos++;
        switch (j->state) {
        case ST_ERROR:
            return LAM_JSON_ERROR;
        case ST_DONE:
            return LAM_JSON_EOF;
        case ST_VALUE:
            if (j->depth == 0 && j->pos >= j->len && (j->flags & LAM_JSON_F_STREAM)) {
                j->state = ST_DONE;
                return LAM_JSON_EOF;
            }
            return value(j);
        case ST_ARR_FIRST:
            if (j->pos < j->len && b[j->pos] == ']')
                return close_container(j, 1);
            return value(j);
        case ST_OBJ_FIRST:
            if (j->pos < j->len && b[j->pos] == '}')
                return close_container(j, 0);
            return key(j);
        case ST_KEY:
            return key(j);
        case ST_COLON:
            if (j->pos >= j->len || b[j->pos] != ':')
                return fail(j, j->pos, "expected ':'");
            j->pos++;
            j->state = ST_VALUE;
            continue;
        case ST_AFTER:
            if (j->depth == 0) {
                if (j->pos >= j->len) {
                    j->state = ST_DONE;
                    return LAM_JSON_EOF;
                }
                if (j->flags & LAM_JSON_F_STREAM) {
                    j->state = ST_VALUE;
                    continue;
                }
                return fail(j, j->pos, "trailing characters after the value");
            }
            if (j->pos >= j->len)
                return fail(j, j->pos, "unexpected end of input");
            if (b[j->pos] == ',') {
                j->pos++;
                j->state = in_array(j) ? ST_VALUE : ST_KEY;
                continue;
            }
            if (in_array(j)) {
                if (b[j->pos] == ']')
                    return close_container(j, 1);
                return fail(j, j->pos, "expected ',' or ']'");
            }
            if (b[j->pos] == '}')
                return close_container(j, 0);
            return fail(j, j->pos, "expected ',' or '}'");
        }
    }
}

int lam_json_skip(lam_json_t *j, lam_json_tok_t first)
{
    if (first == LAM_JSON_ERROR || first == LAM_JSON_EOF)
        return -1;
    if (first != LAM_JSON_OBJECT && first != LAM_JSON_ARRAY)
        return 0;
    int target = j->depth - 1;
    for (;;) {
        lam_json_tok_t t = lam_json_next(j);
        if (t == LAM_JSON_ERROR || t == LAM_JSON_EOF)
            return -1;
        if ((t == LAM_JSON_OBJECT_END || t == LAM_JSON_ARRAY_END) && j->depth == target)
            return 0;
    }
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t lam_json_decode(const char *raw, size_t raw_len, char *out, int *has_nul)
{
    size_t i = 0, o = 0;
    int nul = 0;
    while (i < raw_len) {
        const char *bs = memchr(raw + i, '\\', raw_len - i);
        size_t run = bs ? (size_t)(bs - (raw + i)) : raw_len - i;
        memmove(out + o, raw + i, run);
        o += run;
        i += run;
        if (i >= raw_len)
            break;
        char e = raw[i + 1];
        unsigned cp = 0, lo = 0;
        switch (e) {
        case 'b': out[o++] = '\b'; i += 2; break;
        case 'f': out[o++] = '\f'; i += 2; break;
        case 'n': out[o++] = '\n'; i += 2; break;
        case 'r': out[o++] = '\r'; i += 2; break;
        case 't': out[o++] = '\t'; i += 2; break;
        case 'u':
            hex4(raw + i + 2, &cp);
            i += 6;
            if (cp >= 0xd800 && cp <= 0xdbff && i + 6 <= raw_len) {
                hex4(raw + i + 2, &lo);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            }
            if (cp == 0)
                nul = 1;
            o += put_utf8(out + o, cp);
            break;
        default: /* '"', '\\', '/' */
            out[o++] = e;
            i += 2;
            break;
        }
    }
    if (has_nul)
        *has_nul = nul;
    return o;
}

/* ---- numbers ---- */

int lam_json_num_parse(const char *text, size_t len, lam_json_num_t *n)
{
    if (len == 0 || scan_number(text, len) != len)
        return -1;
    const char *p = text, *end = text + len;
    memset(n, 0, sizeof(*n));
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    const char *ip = p;
    while (p < end && isdig(*p))
        p++;
    size_t in = (size_t)(p - ip);
    const char *fp = p;
    size_t fn = 0;
    if (p < end && *p == '.') {
        fp = ++p;
        while (p < end && isdig(*p))
            p++;
        fn = (size_t)(p - fp);
    }
    int64_t x = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int xneg = 0;
        if (*p == '+' || *p == '-')
            xneg = *p++ == '-';
        while (p < end) {
            if (x < 1000000000000000LL)
                x = x * 10 + (*p - '0');
            p++;
        }
        if (xneg)
            x = -x;
    }
    int64_t exp = x - (int64_t)fn;
    if (in == 1 && ip[0] == '0') {
        in = 0;
        while (fn > 0 && *fp == '0') {
            fp++;
            fn--;
        }
    }
    while (fn > 0 && fp[fn - 1] == '0') {
        fn--;
        exp++;
    }
    if (fn == 0)
        while (in > 0 && ip[in - 1] == '0') {
            in--;
            exp++;
        }
    if (in + fn == 0) {
        n->d1 = n->d2 = text;
        return 0;
    }
    n->neg = neg;
    n->d1 = ip;
    n->n1 = in;
    n->d2 = fp;
    n->n2 = fn;
    n->exp = exp;
    return 0;
}

static char num_digit(const lam_json_num_t *n, size_t i)
{
    return i < n->n1 ? n->d1[i] : n->d2[i - n->n1];
}

int64_t lam_json_num_magnitude(const lam_json_num_t *n)
{
    size_t k = n->n1 + n->n2;
    return k ? (int64_t)k + n->exp - 1 : 0;
}

int lam_json_num_in_range(const lam_json_num_t *n)
{
    if (n->n1 + n->n2 == 0)
        return 1;
    int64_t m = lam_json_num_magnitude(n);
    return m >= -307 && m <= 307;
}

int lam_json_num_to_fixed(const lam_json_num_t *n, int decimals, int64_t *out)
{
    int64_t k = (int64_t)(n->n1 + n->n2);
    if (k == 0) {
        *out = 0;
        return 0;
    }
    int64_t e = n->exp + decimals;
    int64_t keep = e >= 0 ? k : k + e; /* digits left of the point after scaling */
    if (keep + (e > 0 ? e : 0) > 19)
        return -1;
    uint64_t q = 0;
    for (int64_t i = 0; i < keep; i++)
        q = q * 10 + (uint64_t)(num_digit(n, (size_t)i) - '0');
    if (e > 0) {
        for (int64_t i = 0; i < e; i++)
            q *= 10; /* fits: at most 19 digits in total */
    } else if (e < 0 && keep >= 0) {
        /* round half to even on the dropped digits d[keep..k) (no trailing zeros) */
        char d = num_digit(n, (size_t)keep);
        if (d > '5' || (d == '5' && keep < k - 1) || (d == '5' && (q & 1)))
            q++;
    } /* keep < 0: |value| < 0.1 after scaling, rounds to 0 */
    if (n->neg) {
        if (q > (uint64_t)INT64_MAX + 1)
            return -1;
        *out = q == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)q;
    } else {
        if (q > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)q;
    }
    return 0;
}

int lam_json_num_to_i64(const lam_json_num_t *n, int64_t *out)
{
    if (n->n1 + n->n2 > 0 && n->exp < 0)
        return -1;
    return lam_json_num_to_fixed(n, 0, out);
}

static size_t put_digits(const lam_json_num_t *n, size_t a, size_t b, char *o)
{
    size_t w = 0;
    for (size_t i = a; i < b; i++)
        o[w++] = num_digit(n, i);
    return w;
}

size_t lam_json_num_format(const lam_json_num_t *n, char *out)
{
    size_t k = n->n1 + n->n2, w = 0;
    if (k == 0) {
        out[0] = '0';
        return 1;
    }
    if (n->neg)
        out[w++] = '-';
    int64_t p = (int64_t)k + n->exp;
    if (n->exp >= 0 && p <= 21) {
        w += put_digits(n, 0, k, out + w);
        for (int64_t i = 0; i < n->exp; i++)
            out[w++] = '0';
    } else if (p > 0 && p <= 21) {
        w += put_digits(n, 0, (size_t)p, out + w);
        out[w++] = '.';
        w += put_digits(n, (size_t)p, k, out + w);
    } else if (p > -6 && p <= 0) {
        out[w++] = '0';
        out[w++] = '.';
        for (int64_t i = 0; i < -p; i++)
            out[w++] = '0';
        w += put_digits(n, 0, k, out + w);
    } else {
        out[w++] = num_digit(n, 0);
        if (k > 1) {
            out[w++] = '.';
            w += put_digits(n, 1, k, out + w);
        }
        out[w++] = 'e';
        int64_t x = p - 1;
        out[w++] = x < 0 ? '-' : '+';
        uint64_t ux = x < 0 ? (uint64_t)-x : (uint64_t)x;
        char tmp[24];
        int t = 0;
        do {
            tmp[t++] = (char)('0' + ux % 10);
            ux /= 10;
        } while (ux);
        while (t)
            out[w++] = tmp[--t];
    }
    return w;
}

/* ---- writer ---- */

/* 0: verbatim ASCII, 1: short escape, 2: \u00XX, 3: non-ASCII lead byte */
static const uint8_t esc_class[256] = {
    [0 ... 7] = 2, ['\b'] = 1, ['\t'] = 1, ['\n'] = 1, [0x0b] = 2, ['\f'] = 1, ['\r'] = 1,
    [0x0e ... 0x1f] = 2, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 3,
};

size_t lam_json_escaped_len(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s, *end = p + len;
    size_t n = 0;
    while (p < end) {
        switch (esc_class[*p]) {
        case 0: n++; p++; break;
        case 1: n += 2; p++; break;
        case 2: n += 6; p++; break;
        default: {
            size_t q = utf8_seq(p, (size_t)(end - p));
            n += q ? q : 3;
            p += q ? q : 1;
        }
        }
    }
    return n;
}

#define REP8(c) (0x0101010101010101ULL * (uint8_t)(c))
/* The 0x80 bit of each byte of w that is below n (n <= 128), possibly more: Bit Twiddling Hacks'
 * hasless(), exact as a test for "any". */
#define HASLESS(w, n) (((w) - REP8(n)) & ~(w) & REP8(0x80))

/* 1 when s[0..len) needs no escaping (printable ASCII and DEL, no '"' or '\\'), tested 8 bytes at a time. */
static int json_verbatim(const char *s, size_t len)
{
    uint64_t bad = 0, w;
    size_t i = 0;
    if (len < 8) {
        for (; i < len; i++) {
            uint8_t c = (uint8_t)s[i];
            if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\')
                return 0;
        }
        return 1;
    }
    for (;; i += 8) {
        if (i + 8 > len)
            i = len - 8; /* the last word overlaps the one before */
        memcpy(&w, s + i, 8);
        bad |= w | HASLESS(w, 0x20) | HASLESS(w ^ REP8('"'), 1) | HASLESS(w ^ REP8('\\'), 1);
        if (i + 8 == len)
            break;
    }
    return !(bad & REP8(0x80));
}

void lam_json_append_string(lam_buf_t *b, const char *s, size_t len)
{
    if (json_verbatim(s, len)) { /* the usual string (ids, names): one copy, no per-byte scan */
        lam_buf_reserve(b, len + 2);
        char *o = b->data + b->len;
        o[0] = '"';
        memcpy(o + 1, s, len);
        o[len + 1] = '"';
        o[len + 2] = '\0';
        b->len += len + 2;
        return;
    }
    const uint8_t *p = (const uint8_t *)s, *end = p + len;
    lam_buf_reserve(b, len + 2);
    lam_buf_append_char(b, '"');
    while (p < end) {
        const uint8_t *run = p;
        while (p < end && esc_class[*p] == 0)
            p++;
        while (p < end && esc_class[*p] == 3) { /* keep valid UTF-8 in the run */
            size_t q = utf8_seq(p, (size_t)(end - p));
            if (!q)
                break;
            p += q;
            while (p < end && esc_class[*p] == 0)
                p++;
        }
        if (p > run)
            lam_buf_append(b, run, (size_t)(p - run));
        if (p >= end)
            break;
        uint8_t c = *p++;
        char e[8];
        switch (esc_class[c]) {
        case 1:
            e[0] = '\\';
            e[1] = c == '"' ? '"' : c == '\\' ? '\\' : c == '\b' ? 'b' : c == '\f' ? 'f' : c == '\n' ? 'n'
                   : c == '\r' ? 'r' : 't';
            lam_buf_append(b, e, 2);
            break;
        case 2:
            snprintf(e, sizeof(e), "\\u%04x", c);
            lam_buf_append(b, e, 6);
            break;
        default: /* invalid UTF-8 byte */
            lam_buf_append(b, "\xef\xbf\xbd", 3);
            break;
        }
    }
    lam_buf_append_char(b, '"');
}

void lam_json_append_cstr(lam_buf_t *b, const char *s)
{
    lam_json_append_string(b, s, strlen(s));
}

void lam_json_append_i64(lam_buf_t *b, int64_t v)
{
    lam_buf_append_i64(b, v);
}

void lam_json_append_double(lam_buf_t *b, double v)
{
    if (!isfinite(v)) {
        lam_buf_append(b, "null", 4);
        return;
    }
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    lam_buf_append_str(b, tmp);
}

void lam_json_quote_excerpt(char *dst, size_t dstsize, const char *s, size_t len)
{
    if (dstsize < 8) {
        if (dstsize)
            dst[0] = '\0';
        return;
    }
    const uint8_t *p = (const uint8_t *)s, *end = p + len;
    size_t w = 0, room = dstsize - 5; /* leave space for ..." and NUL */
    dst[w++] = '"';
    while (p < end) {
        char e[8];
        size_t n;
        uint8_t c = *p;
        size_t adv = 1;
        switch (esc_class[c]) {
        case 0: e[0] = (char)c; n = 1; break;
        case 1:
            e[0] = '\\';
            e[1] = c == '"' ? '"' : c == '\\' ? '\\' : c == '\b' ? 'b' : c == '\f' ? 'f' : c == '\n' ? 'n'
                   : c == '\r' ? 'r' : 't';
            n = 2;
            break;
        case 2: snprintf(e, sizeof(e), "\\u%04x", c); n = 6; break;
        default:
            adv = utf8_seq(p, (size_t)(end - p));
            if (adv) {
                memcpy(e, p, adv);
                n = adv;
            } else {
                e[0] = '?';
                n = 1;
                adv = 1;
            }
        }
        if (w + n > room) {
            memcpy(dst + w, "...", 3);
            w += 3;
            break;
        }
        memcpy(dst + w, e, n);
        w += n;
        p += adv;
    }
    dst[w++] = '"';
    dst[w] = '\0';
}
