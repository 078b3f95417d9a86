/* lam_event.c - the event model: validate a JSON event, flatten it, canonical form, field lookup. */
#include "lam_event.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lam_json.h"
#include "lam_mem.h"
#include "lam_time.h"

void lam_event_init(lam_event_t *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->gen = 1;
}

void lam_event_free(lam_event_t *ev)
{
    if (!ev)
        return;
    lam_free(ev->fields);
    lam_free(ev->arena);
    lam_free(ev->htab);
    lam_free(ev->pbuf);
    lam_event_init(ev);
}

/* Field-name hash, word-at-a-time multiply/xorshift (names are short and hashed once per field):
   the whole 8-byte words, then the tail word k (bytes little-endian) and the finalizer. */
static inline __attribute__((always_inline)) uint64_t name_hash_words(const char **name, size_t *len)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ *len;
    while (*len >= 8) {
        uint64_t k;
        memcpy(&k, *name, 8);
        h = (h ^ k) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
        *name += 8;
        *len -= 8;
    }
    return h;
}

static inline __attribute__((always_inline)) uint32_t name_hash_final(uint64_t h, uint64_t k)
{
    h = (h ^ k) * 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 32;
    return (uint32_t)h;
}

uint32_t lam_event_name_hash(const char *name, size_t len)
{
    uint64_t h = name_hash_words(&name, &len);
    uint64_t k = 0;
    for (size_t i = 0; i < len; i++)
        k |= (uint64_t)(uint8_t)name[i] << (8 * i);
    return name_hash_final(h, k);
}

/*
 * lam_event_name_hash for a name followed by at least 8 readable bytes: the tail is one masked
 * load instead of a byte loop (little-endian, where both build the same word).
 */
static inline __attribute__((always_inline)) uint32_t name_hash_padded(const char *name, size_t len)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t h = name_hash_words(&name, &len);
    uint64_t k;
    memcpy(&k, name, 8);
    k &= len ? ~0ULL >> (64 - 8 * len) : 0;
    return name_hash_final(h, k);
#else
    return lam_event_name_hash(name, len);
#endif
}

/* Print a field name for an error message: verbatim when short and plain, else quoted/escaped. */
static void name_for_msg(char *dst, size_t dstsize, const char *name, size_t len)
{
    int plain = len > 0 && len <= 64;
    for (size_t i = 0; plain && i < len; i++)
        if ((uint8_t)name[i] < 0x20 || name[i] == '"' || name[i] == '\\' || name[i] == ' ')
            plain = 0;
    if (plain && lam_json_utf8_valid(name, len))
        snprintf(dst, dstsize, "%.*s", (int)len, name);
    else
        lam_json_quote_excerpt(dst, dstsize, name, len);
}

__attribute__((format(printf, 5, 6))) static int ev_err(char *errstr, size_t errstr_size, const char *name,
                                                        size_t name_len, const char *fmt, ...)
{
    if (!errstr || !errstr_size)
        return -1;
    char nm[96];
    name_for_msg(nm, sizeof(nm), name, name_len);
    int n = snprintf(errstr, errstr_size, "%s: ", nm);
    if (n >= 0 && (size_t)n < errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr + n, errstr_size - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void arena_reserve(lam_event_t *ev, size_t extra)
{
    if (ev->arena_len + extra <= ev->arena_cap)
        return;
    size_t cap = ev->arena_cap ? ev->arena_cap : 1024;
    while (cap < ev->arena_len + extra)
        cap *= 2;
    ev->arena = lam_realloc(ev->arena, cap);
    ev->arena_cap = cap;
}

/* ---- field-name hash table: entries are (gen << 32) | (hash & 0xffff0000) | field index ---- */

static int name_eq(const lam_event_t *ev, const lam_field_t *f, const char *name, size_t len)
{
    return f->name_len == len && memcmp(ev->arena + f->name_off, name, len) == 0;
}

static void htab_rebuild(lam_event_t *ev, size_t cap)
{
    lam_free(ev->htab);
    ev->htab = lam_calloc(cap, sizeof(uint64_t));
    ev->hmask = cap - 1;
    ev->gen = 1;
    for (size_t i = 0; i < ev->nfields; i++) {
        uint32_t h = ev->fields[i].hash;
        size_t s = h & ev->hmask;
        while ((uint32_t)(ev->htab[s] >> 32) == ev->gen)
            s = (s + 1) & ev->hmask;
        ev->htab[s] = ((uint64_t)ev->gen << 32) | (h & 0xffff0000u) | (uint32_t)i;
    }
}

/* Insert field index idx (already in ev->fields); returns -1 when the name is a duplicate. */
static inline __attribute__((always_inline)) int htab_insert(lam_event_t *ev, size_t idx)
{
    if (!ev->htab || (idx + 1) * 2 > ev->hmask + 1)
        htab_rebuild(ev, ev->htab ? (ev->hmask + 1) * 2 : 64);
    const lam_field_t *f = &ev->fields[idx];
    const char *name = ev->arena + f->name_off;
    size_t s = f->hash & ev->hmask;
    for (;;) {
        uint64_t e = ev->htab[s];
        if ((uint32_t)(e >> 32) != ev->gen)
            break;
        if (((uint32_t)e & 0xffff0000u) == (f->hash & 0xffff0000u) &&
            name_eq(ev, &ev->fields[e & 0xffff], name, f->name_len))
            return -1;
        s = (s + 1) & ev->hmask;
    }
    ev->htab[s] = ((uint64_t)ev->gen << 32) | (f->hash & 0xffff0000u) | (uint32_t)idx;
    return 0;
}

const lam_field_t *lam_event_get(const lam_event_t *ev, const char *name, size_t len)
{
    int builtin = (len == 2 && ((name[0] == 'i' && name[1] == 'd') || (name[0] == 't' && name[1] == 's'))) ||
                  (len == 4 && !memcmp(name, "type", 4));
    if (ev->proj && !builtin)
        return lam_event_get_proj(ev, name, len);
    return lam_event_get_h(ev, name, len, lam_event_name_hash(name, len));
}

int lam_event_micro_from_text(const char *text, size_t len, int64_t *micro)
{
    lam_json_num_t n;
    if (lam_json_num_parse(text, len, &n))
        return -1;
    return lam_json_num_to_fixed(&n, 6, micro);
}

static size_t id_canon_len(const lam_event_t *ev)
{
    if (ev->id.type == LAM_VAL_ABSENT)
        return 0;
    return 8 + lam_json_escaped_len(ev->id.val, ev->id.val_len); /* "id":"...", */
}

int lam_event_set_id(lam_event_t *ev, const char *id, size_t len, char *errstr, size_t errstr_size)
{
    if (len < 1 || len > LAM_EVENT_ID_MAX)
        return ev_err(errstr, errstr_size, "id", 2, "must be a string of 1..%d bytes", LAM_EVENT_ID_MAX);
    ev->canonical_len -= id_canon_len(ev);
    memcpy(ev->id_buf, id, len);
    ev->id_buf[len] = '\0';
    ev->id.type = LAM_VAL_STRING;
    ev->id.val = ev->id_buf;
    ev->id.val_len = (uint32_t)len;
    ev->id.canon_plain = 1;
    for (size_t i = 0; i < len; i++)
        if ((uint8_t)id[i] < 0x20 || (uint8_t)id[i] >= 0x7f || id[i] == '"' || id[i] == '\\')
            ev->id.canon_plain = 0;
    ev->canonical_len += id_canon_len(ev);
    return 0;
}

/* Short copies: a plain loop beats the rep-movs the compiler picks for a bounded memcpy. */
static void copy_small(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i];
}

/*
 * Fast path for the common numbers: [-]I[.F] with 1..12 integer digits, 1..6 fraction digits
 * and no trailing fraction zero (and not -0). Their text is already canonical and their micro
 * value exact, so the general decimal code is skipped. Returns 0 to use the general path.
 */
static int fast_number(const char *s, size_t n, int64_t *micro)
{
    static const uint64_t p10[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    size_t i = 0;
    int neg = s[0] == '-';
    i = (size_t)neg;
    size_t is = i;
    uint64_t ip = 0, fp = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        ip = ip * 10 + (uint64_t)(s[i++] - '0');
    size_t il = i - is, fl = 0;
    if (il == 0 || il > 12)
        return 0;
    if (i < n && s[i] == '.') {
        size_t fs = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            fp = fp * 10 + (uint64_t)(s[i++] - '0');
        fl = i - fs;
        if (fl == 0 || fl > 6 || s[i - 1] == '0')
            return 0;
    }
    if (i != n || (neg && ip == 0 && fl == 0))
        return 0;
    uint64_t m = ip * 1000000 + fp * p10[6 - fl];
    *micro = neg ? -(int64_t)m : (int64_t)m;
    return 1;
}

static void builtin_init(lam_field_t *f, const char *name, size_t len, uint32_t hash)
{
    memset(f, 0, sizeof(*f));
    f->name = name;
    f->name_len = (uint32_t)len;
    f->hash = hash;
}

/* lam_event_name_hash of "id", "ts" and "type" (test_event checks them): every parse sets them. */
#define HASH_ID LAM_EVENT_HASH_ID
#define HASH_TS LAM_EVENT_HASH_TS
#define HASH_TYPE LAM_EVENT_HASH_TYPE

/* Decode the current string token into the arena scratch area (not committed); returns its offset. */
static size_t decode_tmp(lam_event_t *ev, const lam_json_t *j, size_t *out_len, int *has_nul)
{
    arena_reserve(ev, j->tok_len + 1);
    size_t off = ev->arena_len;
    char *dst = ev->arena + off;
    if (j->tok_escaped) {
        *out_len = lam_json_decode(j->tok, j->tok_len, dst, has_nul);
    } else {
        memcpy(dst, j->tok, j->tok_len);
        *out_len = j->tok_len;
        *has_nul = 0;
    }
    dst[*out_len] = '\0';
    return off;
}

static int parse_ts(lam_event_t *ev, lam_json_t *j, lam_json_tok_t t, char *errstr, size_t errstr_size)
{
    int64_t ms;
    if (t == LAM_JSON_NUMBER) {
        lam_json_num_t n;
        lam_json_num_parse(j->tok, j->tok_len, &n);
        int frac = n.n1 + n.n2 > 0 && n.exp < 0;
        if (frac || lam_json_num_to_i64(&n, &ms) || ms < LAM_TIME_MIN_MS || ms > LAM_TIME_MAX_MS) {
            char q[64];
            lam_json_quote_excerpt(q, sizeof(q), j->tok, j->tok_len);
            return ev_err(errstr, errstr_size, "ts", 2, "%s: %.*s",
                          frac ? "not an integer number of milliseconds" : "out of range (years 0000..9999)",
                          (int)strlen(q) - 2, q + 1);
        }
    } else if (t == LAM_JSON_STRING) {
        size_t len;
        int nul;
        size_t off = decode_tmp(ev, j, &len, &nul);
        char msg[160];
        if (lam_time_parse_rfc3339(ev->arena + off, len, &ms, msg, sizeof(msg)))
            return ev_err(errstr, errstr_size, "ts", 2, "%s", msg);
    } else {
        return ev_err(errstr, errstr_size, "ts", 2, "must be a number (epoch ms) or an RFC 3339 string");
    }
    ev->ts_ms = ms;
    ev->ts_given = 1;
    return 0;
}

/* Reset ev for a new parse. */
static void parse_begin(lam_event_t *ev, int64_t now_ms)
{
    ev->nfields = 0;
    ev->arena_len = 0;
    ev->ts_given = 0;
    ev->proj = NULL;
    ev->ts_ms = now_ms;
    builtin_init(&ev->id, "id", 2, HASH_ID);
    builtin_init(&ev->ts, "ts", 2, HASH_TS);
    builtin_init(&ev->type, "type", 4, HASH_TYPE);
    if (++ev->gen == 0) { /* generation wrapped: forget every stale entry */
        if (ev->htab)
            memset(ev->htab, 0, (ev->hmask + 1) * sizeof(uint64_t));
        ev->gen = 1;
    }
}

/*
 * Checks after the last field, the built-in ts as a field, canonical_len and the final field
 * pointers. canon is the canonical length so far without "ts". 0 or -1 with a message.
 */
static int parse_finish(lam_event_t *ev, int seen_id, int seen_type, size_t canon, int64_t now_ms,
                        int64_t max_future_ms, const char *ts_text, size_t ts_len, char *errstr,
                        size_t errstr_size)
{
    if (!seen_type)
        return ev_err(errstr, errstr_size, "type", 4, "required");
    if (ev->ts_given && max_future_ms >= 0 && now_ms < INT64_MAX - max_future_ms &&
        ev->ts_ms > now_ms + max_future_ms)
        return ev_err(errstr, errstr_size, "ts", 2, "more than %lld s in the future",
                      (long long)(max_future_ms / 1000));
    if (ev->ts_ms < LAM_TIME_MIN_MS || ev->ts_ms > LAM_TIME_MAX_MS)
        return ev_err(errstr, errstr_size, "ts", 2, "out of range (years 0000..9999)");

    int64_t tsm = ev->ts_ms;
    char *tb = ev->ts_buf + sizeof(ev->ts_buf) - 1;
    *tb = '\0';
    if (ts_text) { /* already the canonical text of ts_ms */
        tb -= ts_len;
        memcpy(tb, ts_text, ts_len);
    } else {
        uint64_t u = tsm < 0 ? (uint64_t)0 - (uint64_t)tsm : (uint64_t)tsm;
        do {
            *--tb = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (tsm < 0)
            *--tb = '-';
    }
    ev->ts.type = LAM_VAL_NUMBER;
    ev->ts.val = tb;
    ev->ts.val_len = (uint32_t)(ev->ts_buf + sizeof(ev->ts_buf) - 1 - tb);
    ev->ts.micro_ok = !__builtin_mul_overflow(tsm, (int64_t)1000000, &ev->ts.micro);
    ev->ts.canon_plain = 1;
    canon += 6 + ev->ts.val_len; /* "ts":N, */
    if (canon + (seen_id ? 0 : 8 + LAM_EVENT_GENERATED_ID_LEN) > LAM_EVENT_MAX_BYTES)
        return ev_err(errstr, errstr_size, "event", 5, "larger than %d bytes in canonical form",
                      LAM_EVENT_MAX_BYTES);
    ev->canonical_len = canon;

    arena_reserve(ev, 8); /* 8 readable bytes after the last name in the arena (lam_event_get_padded) */
    for (size_t i = 0; i < ev->nfields; i++) {
        lam_field_t *f = &ev->fields[i];
        f->name = ev->arena + f->name_off;
        f->val = ev->arena + f->val_off;
    }
    return 0;
}

/*
 * Number field fields[idx] from token text that is not already canonical: canonical text at the
 * arena end, micro value. tok must not point into the arena unless the caller reserved
 * LAM_JSON_NUM_MAXLEN + 1 bytes first. -1 when out of range. Returns the text length in *vl.
 */
static int number_slow(lam_event_t *ev, size_t idx, const char *tok, size_t tok_len, size_t *vl)
{
    lam_json_num_t n;
    lam_json_num_parse(tok, tok_len, &n);
    if (!lam_json_num_in_range(&n))
        return -1;
    arena_reserve(ev, LAM_JSON_NUM_MAXLEN(&n) + 1);
    size_t off = ev->arena_len;
    *vl = lam_json_num_format(&n, ev->arena + off);
    ev->arena[off + *vl] = '\0';
    ev->arena_len += *vl + 1;
    lam_field_t *f = &ev->fields[idx];
    f->type = LAM_VAL_NUMBER;
    f->val_off = (uint32_t)off;
    f->val_len = (uint32_t)*vl;
    f->micro_ok = lam_json_num_to_fixed(&n, 6, &f->micro) == 0;
    return 0;
}

static int push_field(lam_event_t *ev, size_t name_off, size_t name_len, uint32_t hash, char *errstr,
                      size_t errstr_size)
{
    if (ev->nfields == ev->fields_cap) {
        ev->fields_cap = ev->fields_cap ? ev->fields_cap * 2 : 32;
        ev->fields = lam_realloc(ev->fields, ev->fields_cap * sizeof(lam_field_t));
    }
    lam_field_t *f = &ev->fields[ev->nfields];
    memset(f, 0, sizeof(*f));
    f->name_off = (uint32_t)name_off;
    f->name_len = (uint32_t)name_len;
    f->hash = hash;
    if (htab_insert(ev, ev->nfields))
        return ev_err(errstr, errstr_size, ev->arena + name_off, name_len, "duplicate field");
    ev->nfields++;
    return 0;
}

int lam_event_parse_general(lam_event_t *ev, const char *json, size_t len, int64_t now_ms, int64_t max_future_ms,
                            char *errstr, size_t errstr_size)
{
    lam_json_t j;
    /* per depth: length of the flattened-name prefix in ev->pbuf and whether it had escapes */
    size_t prefix_len[LAM_EVENT_MAX_DEPTH + 2];
    int prefix_esc[LAM_EVENT_MAX_DEPTH + 2];
    int depth = 0, seen_id = 0, seen_ts = 0, seen_type = 0;
    const char *last_static = NULL; /* name of the last value read, for syntax errors after it */
    size_t last_off = 0, last_len = 0, last_end = 0;
    size_t canon = 2; /* {} */

    parse_begin(ev, now_ms);
    prefix_len[0] = 0;
    prefix_esc[0] = 0;

    lam_json_init(&j, json, len, 0);
    lam_json_tok_t t = lam_json_next(&j);
    if (t == LAM_JSON_ERROR)
        return ev_err(errstr, errstr_size, "event", 5, "%s", j.err);
    if (t != LAM_JSON_OBJECT)
        return ev_err(errstr, errstr_size, "event", 5, "must be a JSON object");

    for (;;) {
        t = lam_json_next(&j);
        if (t == LAM_JSON_OBJECT_END) {
            if (depth == 0)
                break;
            depth--;
            continue;
        }
        if (t != LAM_JSON_KEY) { /* a syntax error: blame the field just read when right after it */
            size_t p = last_end;
            while (p < len && (json[p] == ' ' || json[p] == '\n' || json[p] == '\r' || json[p] == '\t'))
                p++;
            if (j.err_pos != p)
                return ev_err(errstr, errstr_size, "event", 5, "%s", j.err);
            if (last_static)
                return ev_err(errstr, errstr_size, last_static, strlen(last_static), "%s", j.err);
            if (last_len)
                return ev_err(errstr, errstr_size, ev->arena + last_off, last_len, "%s", j.err);
            return ev_err(errstr, errstr_size, "event", 5, "%s", j.err);
        }

        /* flattened name = prefix "." key, built at the arena end (not yet committed) */
        size_t pl = prefix_len[depth];
        arena_reserve(ev, pl + 1 + j.tok_len + 1);
        size_t name_off = ev->arena_len;
        char *nm = ev->arena + name_off;
        size_t kl;
        int nul = 0;
        if (depth > 0) {
            memcpy(nm, ev->pbuf, pl);
            nm[pl++] = '.';
        }
        if (j.tok_escaped)
            kl = lam_json_decode(j.tok, j.tok_len, nm + pl, &nul);
        else {
            memcpy(nm + pl, j.tok, j.tok_len);
            kl = j.tok_len;
        }
        size_t name_len = pl + kl;
        int name_esc = prefix_esc[depth] || j.tok_escaped;
        if (kl == 0)
            return ev_err(errstr, errstr_size, nm, name_len, "empty field name");
        if (nul)
            return ev_err(errstr, errstr_size, nm, name_len, "NUL byte in field name");
        if (nm[0] == '_')
            return ev_err(errstr, errstr_size, nm, name_len, "names starting with '_' are reserved");

        t = lam_json_next(&j);
        if (t == LAM_JSON_ERROR)
            return ev_err(errstr, errstr_size, nm, name_len, "%s", j.err);
        if (depth == 0 && name_len <= 4 &&
            ((name_len == 2 && memcmp(nm, "id", 2) == 0) || (name_len == 2 && memcmp(nm, "ts", 2) == 0) ||
             (name_len == 4 && memcmp(nm, "type", 4) == 0))) {
            last_static = nm[1] == 's' ? "ts" : nm[0] == 'i' ? "id" : "type";
            last_end = j.pos;
            if (nm[1] == 's') {
                if (seen_ts++)
                    return ev_err(errstr, errstr_size, "ts", 2, "duplicate field");
                if (parse_ts(ev, &j, t, errstr, errstr_size))
                    return -1;
                continue;
            }
            int is_id = nm[0] == 'i';
            const char *what = is_id ? "id" : "type";
            if ((is_id ? seen_id++ : seen_type++))
                return ev_err(errstr, errstr_size, what, strlen(what), "duplicate field");
            size_t vl;
            if (t != LAM_JSON_STRING)
                return ev_err(errstr, errstr_size, what, strlen(what), "must be a string of 1..128 bytes");
            lam_field_t *f = is_id ? &ev->id : &ev->type;
            char *dst = is_id ? ev->id_buf : ev->type_buf;
            if (j.tok_escaped) {
                size_t off = decode_tmp(ev, &j, &vl, &nul);
                if (vl >= 1 && vl <= 128)
                    copy_small(dst, ev->arena + off, vl);
            } else {
                vl = j.tok_len;
                if (vl >= 1 && vl <= 128)
                    copy_small(dst, j.tok, vl);
            }
            if (vl < 1 || vl > 128)
                return ev_err(errstr, errstr_size, what, strlen(what), "must be a string of 1..128 bytes");
            dst[vl] = '\0';
            f->type = LAM_VAL_STRING;
            f->val = dst;
            f->val_len = (uint32_t)vl;
            f->canon_plain = !j.tok_escaped;
            canon += (is_id ? 8 : 9) + (j.tok_escaped ? lam_json_escaped_len(dst, vl) : vl);
            continue;
        }

        if (t == LAM_JSON_OBJECT) {
            if (depth + 1 > LAM_EVENT_MAX_DEPTH)
                return ev_err(errstr, errstr_size, nm, name_len, "nested deeper than %d levels",
                              LAM_EVENT_MAX_DEPTH);
            if (name_len + 1 > ev->pbuf_cap) {
                ev->pbuf_cap = name_len + 64;
                ev->pbuf = lam_realloc(ev->pbuf, ev->pbuf_cap);
            }
            memcpy(ev->pbuf, nm, name_len);
            depth++;
            prefix_len[depth] = name_len;
            prefix_esc[depth] = name_esc;
            continue;
        }
        if (t == LAM_JSON_ARRAY)
            return ev_err(errstr, errstr_size, nm, name_len, "arrays are not supported");

        uint32_t hash = lam_event_name_hash(nm, name_len);
        size_t name_canon = 4 + (name_esc ? lam_json_escaped_len(nm, name_len) : name_len); /* ,"n": */
        ev->arena_len += name_len + 1;
        nm[name_len] = '\0';
        if (push_field(ev, name_off, name_len, hash, errstr, errstr_size))
            return -1;
        last_static = NULL;
        last_off = name_off;
        last_len = name_len;
        last_end = j.pos;
        lam_field_t *f = &ev->fields[ev->nfields - 1];
        f->canon_plain = !name_esc && !(t == LAM_JSON_STRING && j.tok_escaped);
        size_t vcanon;
        int64_t micro;
        if (t == LAM_JSON_STRING) {
            size_t vl;
            size_t off = decode_tmp(ev, &j, &vl, &nul);
            ev->arena_len += vl + 1;
            f->type = LAM_VAL_STRING;
            f->val_off = (uint32_t)off;
            f->val_len = (uint32_t)vl;
            vcanon = 2 + (j.tok_escaped ? lam_json_escaped_len(ev->arena + off, vl) : vl);
        } else if (t == LAM_JSON_NUMBER && fast_number(j.tok, j.tok_len, &micro)) {
            arena_reserve(ev, j.tok_len + 1);
            size_t off = ev->arena_len;
            copy_small(ev->arena + off, j.tok, j.tok_len);
            ev->arena[off + j.tok_len] = '\0';
            ev->arena_len += j.tok_len + 1;
            f = &ev->fields[ev->nfields - 1];
            f->type = LAM_VAL_NUMBER;
            f->val_off = (uint32_t)off;
            f->val_len = (uint32_t)j.tok_len;
            f->micro_ok = 1;
            f->micro = micro;
            vcanon = j.tok_len;
        } else if (t == LAM_JSON_NUMBER) {
            if (number_slow(ev, ev->nfields - 1, j.tok, j.tok_len, &vcanon))
                return ev_err(errstr, errstr_size, ev->arena + name_off, name_len,
                              "number out of range (1e-307..1e308)");
        } else {
            const char *lit = t == LAM_JSON_TRUE ? "true" : t == LAM_JSON_FALSE ? "false" : "null";
            size_t vl = strlen(lit);
            arena_reserve(ev, vl + 1);
            size_t off = ev->arena_len;
            memcpy(ev->arena + off, lit, vl + 1);
            ev->arena_len += vl + 1;
            f = &ev->fields[ev->nfields - 1];
            f->type = t == LAM_JSON_TRUE ? LAM_VAL_TRUE : t == LAM_JSON_FALSE ? LAM_VAL_FALSE : LAM_VAL_NULL;
            f->val_off = (uint32_t)off;
            f->val_len = (uint32_t)vl;
            vcanon = vl;
        }
        canon += name_canon + vcanon;
        if (canon > LAM_EVENT_MAX_BYTES)
            return ev_err(errstr, errstr_size, "event", 5, "larger than %d bytes in canonical form",
                          LAM_EVENT_MAX_BYTES);
    }
    if (lam_json_next(&j) != LAM_JSON_EOF)
        return ev_err(errstr, errstr_size, "event", 5, "%s", j.err);
    return parse_finish(ev, seen_id, seen_type, canon, now_ms, max_future_ms, NULL, 0, errstr, errstr_size);
}

/* ---- fast path ---- */

/* Skip JSON whitespace in a NUL-terminated buffer. */
static inline size_t skip_ws(const char *s, size_t p)
{
    while (s[p] == ' ' || s[p] == '\n' || s[p] == '\r' || s[p] == '\t')
        p++;
    return p;
}

/*
 * When the 8 bytes at s are all ASCII digits, their value (little-endian SWAR, as in simdjson's
 * parse_eight_digits_unrolled); else -1.
 */
static inline int64_t digits8(const char *s)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, s, 8);
    if ((((v & 0xF0F0F0F0F0F0F0F0ULL) | (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4))) !=
        0x3333333333333333ULL)
        return -1;
    v -= 0x3030303030303030ULL;
    v = (v * 10) + (v >> 8);
    v = (((v & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
         (((v >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
    return (int64_t)v;
#else
    (void)s;
    return -1;
#endif
}

/*
 * Offset of the closing quote of the string whose content starts at p, when the string has no
 * escapes or control characters and is valid UTF-8 (so its canonical form is its raw bytes);
 * 0 otherwise.
 */
static size_t plain_string_end_slow(const char *s, size_t start, size_t p, size_t len)
{
    const uint8_t *b = (const uint8_t *)s;
    int high = 0;
    for (;;) {
        if (p >= len)
            return 0;
        if (b[p] == '"')
            break;
        if (b[p] < 0x80)
            return 0;
        high = 1;
        p = lam_json_plain_run(b, p + 1, len);
    }
    if (high && !lam_json_utf8_valid(s + start, p - start))
        return 0;
    return p;
}

static inline __attribute__((always_inline)) size_t plain_string_end(const char *s, size_t p, size_t len)
{
    size_t e = lam_json_plain_run((const uint8_t *)s, p, len);
    if (e < len && s[e] == '"')
        return e;
    return plain_string_end_slow(s, p, e, len);
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* End of the JSON number starting at s[p] (NUL-terminated buffer), or 0 when it is not one. */
static inline __attribute__((always_inline)) size_t number_end(const char *s, size_t p)
{
    if (s[p] == '-')
        p++;
    if (s[p] == '0')
        p++;
    else if (is_digit(s[p]))
        while (is_digit(s[p]))
            p++;
    else
        return 0;
    if (s[p] == '.') {
        if (!is_digit(s[++p]))
            return 0;
        while (is_digit(s[p]))
            p++;
    }
    if (s[p] == 'e' || s[p] == 'E') {
        p++;
        if (s[p] == '+' || s[p] == '-')
            p++;
        if (!is_digit(s[p]))
            return 0;
        while (is_digit(s[p]))
            p++;
    }
    return p;
}

/* Length of the literal true/false/null at s (NUL-terminated buffer) with its type in *vt, or 0. */
static inline size_t literal_len(const char *s, lam_val_type_t *vt)
{
    if (s[0] == 't' && s[1] == 'r' && s[2] == 'u' && s[3] == 'e')
        return *vt = LAM_VAL_TRUE, 4;
    if (s[0] == 'f' && s[1] == 'a' && s[2] == 'l' && s[3] == 's' && s[4] == 'e')
        return *vt = LAM_VAL_FALSE, 5;
    if (s[0] == 'n' && s[1] == 'u' && s[2] == 'l' && s[3] == 'l')
        return *vt = LAM_VAL_NULL, 4;
    return 0;
}

/* ts as a plain non-negative integer (the common case) or an RFC 3339 string; 0 declines. */
static inline __attribute__((always_inline)) int fast_ts(lam_event_t *ev, const char *s, size_t *pp, size_t len,
                                                        size_t *text_len)
{
    size_t p = *pp;
    *text_len = 0;
    int64_t ms = 0;
    if (s[p] == '"') {
        size_t e = plain_string_end(s, p + 1, len);
        char msg[8];
        if (!e || lam_time_parse_rfc3339(s + p + 1, e - p - 1, &ms, msg, sizeof(msg)))
            return 0;
        p = e + 1;
    } else {
        size_t st = p;
        int64_t d8 = digits8(s + p); /* s has 8 readable bytes past its NUL */
        if (d8 >= 0) {
            /* epoch ms today has 13 digits: the last 8 of them (digits 5..12) give digits 8..12 */
            int64_t d8b = digits8(s + p + 5);
            if (d8b >= 0 && !is_digit(s[p + 13])) {
                ms = d8 * 100000 + d8b % 100000;
                p += 13;
            } else {
                ms = d8;
                p += 8;
            }
        }
        while (is_digit(s[p]) && p - st < 16)
            ms = ms * 10 + (s[p++] - '0');
        if (p == st || (s[st] == '0' && p - st > 1) || is_digit(s[p]) || s[p] == '.' || s[p] == 'e' ||
            s[p] == 'E' || ms > LAM_TIME_MAX_MS)
            return 0;
        *text_len = p - st; /* canonical: digits without a leading zero */
    }
    ev->ts_ms = ms;
    ev->ts_given = 1;
    *pp = p;
    return 1;
}

int lam_event_parse_fast(lam_event_t *ev, const char *json, size_t len, int64_t now_ms, int64_t max_future_ms)
{
    /*
     * Works on a copy of the input in the arena: names and values are NUL-terminated in place
     * (closing quote, or the byte after a number/literal once read), so most fields need no
     * copying. Flattened nested names and reformatted numbers go after the copy.
     */
    size_t pre_off[LAM_EVENT_MAX_DEPTH + 1], pre_len[LAM_EVENT_MAX_DEPTH + 1];
    int depth = 0, seen_id = 0, seen_ts = 0, seen_type = 0;
    size_t canon = 2, term = 0; /* term: where to put a NUL once the byte there was read */
    size_t ts_off = 0, ts_len = 0; /* ts given as canonical integer text in the copy */

    if (len > LAM_EVENT_MAX_BYTES * 4)
        return 0;
    parse_begin(ev, now_ms);
    arena_reserve(ev, len + 1 + 8); /* + 8: name_hash_padded reads past a name */
    char *s = ev->arena;
    memcpy(s, json, len);
    s[len] = '\0';
    ev->arena_len = len + 1;

    size_t p = skip_ws(s, 0);
    if (s[p] != '{')
        return 0;
    p = skip_ws(s, p + 1);
    for (;;) {
        if (s[p] != '"')
            return 0;
        size_t ks = p + 1, ke = plain_string_end(s, ks, len), kl = ke - ks;
        if (!ke || kl == 0 || (depth == 0 && s[ks] == '_'))
            return 0;
        s[ke] = '\0';
        p = skip_ws(s, ke + 1);
        if (s[p] != ':')
            return 0;
        p = skip_ws(s, p + 1);

        if (depth == 0 && (kl == 2 || kl == 4) &&
            ((kl == 2 && s[ks] == 't' && s[ks + 1] == 's') || (kl == 2 && s[ks] == 'i' && s[ks + 1] == 'd') ||
             (kl == 4 && memcmp(s + ks, "type", 4) == 0))) {
            if (s[ks + 1] == 's') {
                ts_off = p;
                if (seen_ts++ || !fast_ts(ev, s, &p, len, &ts_len))
                    return 0;
            } else {
                int is_id = s[ks] == 'i';
                size_t e = s[p] == '"' ? plain_string_end(s, p + 1, len) : 0, vl = e - p - 1;
                if (!e || vl < 1 || vl > 128 || (is_id ? seen_id++ : seen_type++))
                    return 0;
                lam_field_t *f = is_id ? &ev->id : &ev->type;
                char *dst = is_id ? ev->id_buf : ev->type_buf;
                memcpy(dst, s + p + 1, vl);
                dst[vl] = '\0';
                f->type = LAM_VAL_STRING;
                f->val = dst;
                f->val_len = (uint32_t)vl;
                f->canon_plain = 1;
                canon += (is_id ? 8 : 9) + vl;
                p = e + 1;
            }
        } else {
            /* the flattened name: the key in place at depth 0, else prefix "." key after the copy */
            size_t name_off = ks, name_len = kl;
            if (depth > 0) {
                size_t pl = pre_len[depth];
                arena_reserve(ev, pl + kl + 2 + 8);
                s = ev->arena;
                name_off = ev->arena_len;
                memcpy(s + name_off, s + pre_off[depth], pl);
                s[name_off + pl] = '.';
                memcpy(s + name_off + pl + 1, s + ks, kl);
                name_len = pl + 1 + kl;
                s[name_off + name_len] = '\0';
                ev->arena_len += name_len + 1;
            }
            if (s[p] == '{') {
                if (depth + 1 > LAM_EVENT_MAX_DEPTH)
                    return 0;
                depth++;
                pre_off[depth] = name_off;
                pre_len[depth] = name_len;
                p = skip_ws(s, p + 1);
                if (s[p] != '}')
                    continue;
                goto after_value; /* {} adds no field */
            }
            if (ev->nfields == ev->fields_cap) {
                ev->fields_cap = ev->fields_cap ? ev->fields_cap * 2 : 32;
                ev->fields = lam_realloc(ev->fields, ev->fields_cap * sizeof(lam_field_t));
            }
            size_t idx = ev->nfields;
            lam_field_t *f = &ev->fields[idx];
            f->name_off = (uint32_t)name_off;
            f->name_len = (uint32_t)name_len;
            f->hash = name_hash_padded(s + name_off, name_len);
            f->micro_ok = 0;
            f->micro = 0;
            f->canon_plain = 1;
            if (htab_insert(ev, idx))
                return 0;
            ev->nfields++;
            char c = s[p];
            size_t vcanon;
            if (c == '"') {
                size_t e = plain_string_end(s, p + 1, len);
                if (!e)
                    return 0;
                s[e] = '\0';
                f->type = LAM_VAL_STRING;
                f->val_off = (uint32_t)(p + 1);
                f->val_len = (uint32_t)(e - p - 1);
                vcanon = 2 + f->val_len;
                p = e + 1;
            } else if (c == '-' || is_digit(c)) {
                size_t e = number_end(s, p);
                if (!e)
                    return 0;
                if (fast_number(s + p, e - p, &f->micro)) {
                    f->type = LAM_VAL_NUMBER;
                    f->val_off = (uint32_t)p;
                    f->val_len = (uint32_t)(e - p);
                    f->micro_ok = 1;
                    vcanon = e - p;
                    term = e;
                } else {
                    arena_reserve(ev, e - p + 48 + 1); /* LAM_JSON_NUM_MAXLEN: tok stays put */
                    s = ev->arena;
                    if (number_slow(ev, idx, s + p, e - p, &vcanon))
                        return 0;
                }
                p = e;
            } else {
                lam_val_type_t vt;
                size_t vl = literal_len(s + p, &vt);
                if (!vl)
                    return 0;
                f->type = (uint8_t)vt;
                f->val_off = (uint32_t)p;
                f->val_len = (uint32_t)vl;
                vcanon = vl;
                p += vl;
                term = p;
            }
            canon += 4 + name_len + vcanon;
            if (canon > LAM_EVENT_MAX_BYTES)
                return 0;
        }
    after_value:
        p = skip_ws(s, p);
        char c = s[p];
        if (term) {
            s[term] = '\0';
            term = 0;
        }
        while (c == '}') {
            if (depth == 0)
                goto done;
            depth--;
            p = skip_ws(s, p + 1);
            c = s[p];
        }
        if (c != ',')
            return 0;
        p = skip_ws(s, p + 1);
    }
done:
    if (skip_ws(s, p + 1) != len)
        return 0;
    return parse_finish(ev, seen_id, seen_type, canon, now_ms, max_future_ms, ts_len ? s + ts_off : NULL, ts_len,
                        NULL, 0) == 0;
}

int lam_event_parse(lam_event_t *ev, const char *json, size_t len, int64_t now_ms, int64_t max_future_ms,
                    char *errstr, size_t errstr_size)
{
    if (lam_event_parse_fast(ev, json, len, now_ms, max_future_ms))
        return 0;
    return lam_event_parse_general(ev, json, len, now_ms, max_future_ms, errstr, errstr_size);
}

/* ---- projected scan (the batch recompute: canonical records, only the fields views read) ---- */

#define PROJ_TAB 256 /* slots of the name table: a power of two, at least 4x LAM_EVENT_PROJ_MAX */

struct lam_event_proj {
    size_t n;
    char **names; /* NUL-terminated, zero-padded by 8 bytes */
    size_t *lens;
    uint32_t *hashes; /* lam_event_name_hash */
    uint8_t tab[PROJ_TAB]; /* name index + 1 at key_class & (PROJ_TAB - 1), linear probing; 0 = empty */
};

/*
 * A cheap class of a key for the scan: its length and first 8 bytes (s is followed by 8 readable
 * bytes). Keys of one class are told apart by an exact compare.
 */
static inline uint32_t key_class(const char *s, size_t len)
{
    uint64_t k;
    memcpy(&k, s, 8);
    if (len < 8)
        k &= ~0ULL >> (64 - 8 * len);
    return (uint32_t)(((k ^ len) * 0x9e3779b97f4a7c15ULL) >> 32);
}

lam_event_proj_t *lam_event_proj_new(const char *const *names, const size_t *lens, size_t n)
{
    if (n > LAM_EVENT_PROJ_MAX)
        return NULL;
    lam_event_proj_t *pj = lam_calloc(1, sizeof(*pj));
    pj->names = lam_calloc(n ? n : 1, sizeof(char *));
    pj->lens = lam_calloc(n ? n : 1, sizeof(size_t));
    pj->hashes = lam_calloc(n ? n : 1, sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        pj->names[i] = lam_calloc(1, lens[i] + 9);
        memcpy(pj->names[i], names[i], lens[i]);
        pj->lens[i] = lens[i];
        pj->hashes[i] = lam_event_name_hash(names[i], lens[i]);
        pj->n = i + 1;
        size_t s = key_class(pj->names[i], lens[i]) & (PROJ_TAB - 1);
        int bad = lens[i] == 0;
        while (!bad && pj->tab[s]) {
            size_t k = pj->tab[s] - 1u;
            bad = pj->lens[k] == lens[i] && !memcmp(pj->names[k], names[i], lens[i]);
            s = (s + 1) & (PROJ_TAB - 1);
        }
        if (bad) {
            lam_event_proj_free(pj);
            return NULL;
        }
        pj->tab[s] = (uint8_t)(i + 1);
    }
    return pj;
}

void lam_event_proj_free(lam_event_proj_t *pj)
{
    if (!pj)
        return;
    for (size_t i = 0; i < pj->n; i++)
        lam_free(pj->names[i]);
    lam_free(pj->names);
    lam_free(pj->lens);
    lam_free(pj->hashes);
    lam_free(pj);
}

size_t lam_event_proj_count(const lam_event_proj_t *pj)
{
    return pj ? pj->n : 0;
}

#if defined(__SSE2__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* Index of projected name s[0..len) of class c, or -1. s is followed by 8 readable bytes. */
static inline int proj_find(const lam_event_proj_t *pj, const char *s, size_t len, uint32_t c)
{
    size_t slot = c & (PROJ_TAB - 1);
    for (;;) {
        unsigned e = pj->tab[slot];
        if (!e)
            return -1;
        e--;
        if (pj->lens[e] == len && lam_event_bytes_eq_padded_(pj->names[e], s, len))
            return (int)e;
        slot = (slot + 1) & (PROJ_TAB - 1);
    }
}

/* Position of the first quote at or after p (qm: one bit per byte, nw words), or SIZE_MAX. */
static inline size_t next_quote(const uint64_t *qm, size_t nw, size_t p)
{
    size_t w = p >> 6;
    if (w >= nw)
        return SIZE_MAX;
    uint64_t m = qm[w] & (~0ULL << (p & 63));
    while (!m) {
        if (++w >= nw)
            return SIZE_MAX;
        m = qm[w];
    }
    return w * 64 + (size_t)__builtin_ctzll(m);
}

/*
 * One pass over s[0..len) (followed by 32 zero bytes): every quote's position into qm, and the
 * result: -1 when a byte is a control character or a backslash (an escape), 1 when some byte is
 * non-ASCII, else 0.
 */
static int scan_quotes_sse2(const char *s, size_t len, uint64_t *qm)
{
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    unsigned bad = 0, high = 0;
    for (size_t i = 0; i < len; i += 64) {
        uint64_t q = 0;
        for (size_t k = 0; k < 64 && i + k < len; k += 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i + k));
            unsigned lt = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmplt_epi8(x, space), _mm_cmpeq_epi8(x, bslash)));
            unsigned hi = (unsigned)_mm_movemask_epi8(x);
            if (len - i - k < 16) {
                unsigned keep = (1u << (len - i - k)) - 1;
                lt &= keep;
                hi &= keep;
            }
            bad |= lt & ~hi;
            high |= hi;
            q |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, quote)) << k;
        }
        qm[i >> 6] = q; /* a quote past len is impossible: the bytes there are zero */
    }
    return bad ? -1 : high ? 1 : 0;
}

#ifdef __x86_64__
#include <immintrin.h>
__attribute__((target("avx2"))) static int scan_quotes_avx2(const char *s, size_t len, uint64_t *qm)
{
    const __m256i quote = _mm256_set1_epi8('"'), bslash = _mm256_set1_epi8('\\'), space = _mm256_set1_epi8(0x20);
    uint64_t bad = 0, high = 0;
    for (size_t i = 0; i < len; i += 64) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(const void *)(s + i));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(const void *)(s + i + 32));
        /* as signed bytes, controls and non-ASCII are both < 0x20 */
        uint64_t lt = (uint32_t)_mm256_movemask_epi8(
                          _mm256_or_si256(_mm256_cmpgt_epi8(space, x0), _mm256_cmpeq_epi8(x0, bslash))) |
                      (uint64_t)(uint32_t)_mm256_movemask_epi8(
                          _mm256_or_si256(_mm256_cmpgt_epi8(space, x1), _mm256_cmpeq_epi8(x1, bslash)))
                          << 32;
        uint64_t hi = (uint32_t)_mm256_movemask_epi8(x0) | (uint64_t)(uint32_t)_mm256_movemask_epi8(x1) << 32;
        if (len - i < 64) {
            uint64_t keep = (1ULL << (len - i)) - 1;
            lt &= keep;
            hi &= keep;
        }
        bad |= lt & ~hi;
        high |= hi;
        qm[i >> 6] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x0, quote)) |
                     (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x1, quote)) << 32;
    }
    return bad ? -1 : high ? 1 : 0;
}
#endif

static int scan_quotes(const char *s, size_t len, uint64_t *qm)
{
#ifdef __x86_64__
    static int avx2 = -1; /* the same value from every thread */
    if (__builtin_expect(avx2 < 0, 0))
        __atomic_store_n(&avx2, __builtin_cpu_supports("avx2") ? 1 : 0, __ATOMIC_RELAXED);
    if (__atomic_load_n(&avx2, __ATOMIC_RELAXED))
        return scan_quotes_avx2(s, len, qm);
#endif
    return scan_quotes_sse2(s, len, qm);
}

#define PROJ_MAX_LEN 4096 /* longer records take the full parse */
#define PROJ_MAX_KEYS 64

int lam_event_parse_projected(lam_event_t *ev, const char *json, size_t len, const lam_event_proj_t *pj)
{
    uint64_t qm[PROJ_MAX_LEN / 64];
    if (len < 2 || len > PROJ_MAX_LEN || json[0] != '{' || json[len - 1] != '}')
        return 0;
    parse_begin(ev, 0);
    if (ev->fields_cap < pj->n || !ev->fields_cap) {
        ev->fields_cap = pj->n > 32 ? pj->n : 32;
        ev->fields = lam_realloc(ev->fields, ev->fields_cap * sizeof(lam_field_t));
    }
    if (!ev->htab)
        htab_rebuild(ev, 64); /* empty: lam_event_get_h on this event finds no field, never reads NULL */
    arena_reserve(ev, len + 64); /* + zero bytes: whole-vector loads, padded compares */
    char *s = ev->arena;
    memcpy(s, json, len);
    memset(s + len, 0, 64);
    ev->arena_len = len + 1;

    /* Every quote ends a string (no escapes), and a valid UTF-8 record makes every string in it valid. */
    int r = scan_quotes(s, len, qm);
    if (r < 0 || (r > 0 && !lam_json_utf8_valid(s, len)))
        return 0;
    size_t nw = (len + 63) / 64;

    lam_field_t *fields = ev->fields;
    for (size_t i = 0; i < pj->n; i++)
        fields[i].type = LAM_VAL_ABSENT;
    /* every key seen (for duplicates): a 64-bit filter on the class, exact compares on a hit */
    uint32_t koff[PROJ_MAX_KEYS], klen[PROJ_MAX_KEYS];
    uint64_t kbits = 0;
    size_t nkeys = 0;
    int seen_id = 0, seen_ts = 0, seen_type = 0;
    size_t canon = 2, ts_off = 0, ts_len = 0, p = 1;
    for (;;) {
        if (s[p] != '"')
            return 0;
        size_t ks = p + 1, ke = next_quote(qm, nw, ks), kl = ke - ks;
        if (ke == SIZE_MAX || kl == 0 || s[ks] == '_' || s[ke + 1] != ':')
            return 0;
        p = ke + 2;
        if ((kl == 2 && s[ks] == 't' && s[ks + 1] == 's') || (kl == 2 && s[ks] == 'i' && s[ks + 1] == 'd') ||
            (kl == 4 && s[ks] == 't' && s[ks + 1] == 'y' && s[ks + 2] == 'p' && s[ks + 3] == 'e')) {
            if (s[ks + 1] == 's') {
                ts_off = p;
                if (seen_ts++ || !fast_ts(ev, s, &p, len, &ts_len) || !ts_len)
                    return 0;
            } else {
                int is_id = s[ks] == 'i';
                size_t e = s[p] == '"' ? next_quote(qm, nw, p + 1) : SIZE_MAX, vl = e - p - 1;
                if (e == SIZE_MAX || vl < 1 || vl > 128 || (is_id ? seen_id++ : seen_type++))
                    return 0;
                lam_field_t *f = is_id ? &ev->id : &ev->type;
                s[e] = '\0'; /* the value stays in the copy: nothing reallocates it from here on */
                f->type = LAM_VAL_STRING;
                f->val = s + p + 1;
                f->val_len = (uint32_t)vl;
                f->canon_plain = 1;
                canon += (is_id ? 8 : 9) + vl;
                p = e + 1;
            }
        } else {
            uint32_t kc = key_class(s + ks, kl);
            uint64_t bit = 1ULL << (kc >> 26);
            if (kbits & bit) {
                for (size_t k = 0; k < nkeys; k++)
                    if (klen[k] == kl && !memcmp(s + koff[k], s + ks, kl))
                        return 0; /* a duplicate: the full parse names it */
            }
            if (nkeys == PROJ_MAX_KEYS)
                return 0;
            kbits |= bit;
            koff[nkeys] = (uint32_t)ks;
            klen[nkeys++] = (uint32_t)kl;
            char c = s[p];
            lam_val_type_t vt;
            size_t vs = p, vl, term;
            int64_t micro = 0;
            if (c == '"') {
                size_t e = next_quote(qm, nw, p + 1);
                if (e == SIZE_MAX)
                    return 0;
                vt = LAM_VAL_STRING;
                vs = p + 1;
                vl = e - p - 1;
                term = e;
                canon += 2;
                p = e + 1;
            } else if (c == '-' || is_digit(c)) {
                size_t e = number_end(s, p);
                if (!e || !fast_number(s + p, e - p, &micro))
                    return 0;
                vt = LAM_VAL_NUMBER;
                vl = e - p;
                term = e;
                p = e;
            } else {
                if (!(vl = literal_len(s + p, &vt)))
                    return 0;
                p += vl;
                term = p;
            }
            canon += 4 + kl + vl;
            char sep = s[p];
            if (sep != ',' && (sep != '}' || p + 1 != len))
                return 0;
            int pi = proj_find(pj, s + ks, kl, kc);
            if (pi >= 0) {
                lam_field_t *f = &fields[pi];
                f->name = s + ks;
                f->name_len = (uint32_t)kl;
                f->hash = pj->hashes[pi]; /* the name is the projection's */
                f->type = (uint8_t)vt;
                f->micro_ok = vt == LAM_VAL_NUMBER;
                f->micro = micro;
                f->canon_plain = 1;
                f->val = s + vs;
                f->val_len = (uint32_t)vl;
                f->name_off = (uint32_t)ks;
                f->val_off = (uint32_t)vs;
                s[ke] = '\0';
                s[term] = '\0';
            }
            if (sep == '}')
                break;
            p++;
            continue;
        }
        if (s[p] == ',') {
            p++;
            continue;
        }
        if (s[p] == '}' && p + 1 == len)
            break;
        return 0;
    }
    if (!seen_ts || !seen_type)
        return 0;
    /* what parse_finish does, for a ts that fast_ts read as canonical in-range digits */
    ev->ts.type = LAM_VAL_NUMBER;
    memcpy(ev->ts_buf, s + ts_off, ts_len);
    ev->ts_buf[ts_len] = '\0';
    ev->ts.val = ev->ts_buf;
    ev->ts.val_len = (uint32_t)ts_len;
    ev->ts.micro_ok = !__builtin_mul_overflow(ev->ts_ms, (int64_t)1000000, &ev->ts.micro);
    ev->ts.canon_plain = 1;
    ev->canonical_len = canon + 6 + ts_len;
    ev->nfields = pj->n;
    ev->proj = pj; /* lookups go through the projection's table (lam_event_get_proj), not htab */
    return 1;
}

const lam_field_t *lam_event_get_proj(const lam_event_t *ev, const char *name, size_t len)
{
    const lam_event_proj_t *pj = ev->proj;
    if (!len)
        return NULL;
    char tmp[16] = {0}; /* key_class reads 8 bytes: a short name is padded here */
    const char *n = name;
    if (len < 8) {
        memcpy(tmp, name, len);
        n = tmp;
    }
    size_t slot = key_class(n, len) & (PROJ_TAB - 1);
    for (;;) {
        unsigned e = pj->tab[slot];
        if (!e)
            return NULL;
        e--;
        if (pj->lens[e] == len && !memcmp(pj->names[e], name, len))
            return ev->fields[e].type != LAM_VAL_ABSENT ? &ev->fields[e] : NULL;
        slot = (slot + 1) & (PROJ_TAB - 1);
    }
}
#else
int lam_event_parse_projected(lam_event_t *ev, const char *json, size_t len, const lam_event_proj_t *pj)
{
    (void)ev, (void)json, (void)len, (void)pj;
    return 0;
}

const lam_field_t *lam_event_get_proj(const lam_event_t *ev, const char *name, size_t len)
{
    (void)ev, (void)name, (void)len;
    return NULL; /* no projected events without the scan */
}
#endif

static int field_compare(const char *what, const lam_field_t *a, const lam_field_t *b, char *errstr,
                         size_t errstr_size)
{
    const char *d = NULL;
    if (a->type != b->type)
        d = "type";
    else if (a->type == LAM_VAL_ABSENT)
        return 0;
    else if (a->name_len != b->name_len || memcmp(a->name, b->name, a->name_len) != 0)
        d = "name";
    else if (a->hash != b->hash)
        d = "hash";
    else if (a->val_len != b->val_len || memcmp(a->val, b->val, a->val_len) != 0)
        d = "value";
    else if (a->val[a->val_len] != '\0' || b->val[b->val_len] != '\0')
        d = "value terminator";
    else if (a->micro_ok != b->micro_ok || (a->micro_ok && a->micro != b->micro))
        d = "micro value";
    if (!d)
        return 0;
    snprintf(errstr, errstr_size, "%s: %s differs", what, d);
    return -1;
}

int lam_event_compare(const lam_event_t *a, const lam_event_t *b, char *errstr, size_t errstr_size)
{
    if (a->ts_ms != b->ts_ms || a->ts_given != b->ts_given) {
        snprintf(errstr, errstr_size, "ts: %lld/%d vs %lld/%d", (long long)a->ts_ms, a->ts_given,
                 (long long)b->ts_ms, b->ts_given);
        return -1;
    }
    if (a->canonical_len != b->canonical_len) {
        snprintf(errstr, errstr_size, "canonical_len: %zu vs %zu", a->canonical_len, b->canonical_len);
        return -1;
    }
    if (field_compare("id", &a->id, &b->id, errstr, errstr_size) ||
        field_compare("ts", &a->ts, &b->ts, errstr, errstr_size) ||
        field_compare("type", &a->type, &b->type, errstr, errstr_size))
        return -1;
    if (a->nfields != b->nfields) {
        snprintf(errstr, errstr_size, "nfields: %zu vs %zu", a->nfields, b->nfields);
        return -1;
    }
    for (size_t i = 0; i < a->nfields; i++) {
        char what[32];
        snprintf(what, sizeof(what), "field %zu", i);
        if (field_compare(what, &a->fields[i], &b->fields[i], errstr, errstr_size))
            return -1;
        if (lam_event_get(a, a->fields[i].name, a->fields[i].name_len) != &a->fields[i] ||
            lam_event_get(b, b->fields[i].name, b->fields[i].name_len) != &b->fields[i]) {
            snprintf(errstr, errstr_size, "%s: lookup by name fails", what);
            return -1;
        }
    }
    return 0;
}

int lam_event_compare_projected(const lam_event_t *p, const lam_event_t *full, char *errstr, size_t errstr_size)
{
    const lam_event_proj_t *pj = p->proj;
    if (!pj || p->nfields != pj->n) {
        snprintf(errstr, errstr_size, "not a projected event");
        return -1;
    }
    if (p->ts_ms != full->ts_ms || p->ts_given != full->ts_given || p->canonical_len != full->canonical_len) {
        snprintf(errstr, errstr_size, "ts or canonical_len: %lld/%zu vs %lld/%zu", (long long)p->ts_ms,
                 p->canonical_len, (long long)full->ts_ms, full->canonical_len);
        return -1;
    }
    if (field_compare("id", &p->id, &full->id, errstr, errstr_size) ||
        field_compare("ts", &p->ts, &full->ts, errstr, errstr_size) ||
        field_compare("type", &p->type, &full->type, errstr, errstr_size))
        return -1;
    for (size_t i = 0; i < pj->n; i++) {
        const char *name = pj->names[i];
        const lam_field_t *want = lam_event_get(full, name, pj->lens[i]), *got = &p->fields[i];
        int builtin = (pj->lens[i] == 2 && (!memcmp(name, "id", 2) || !memcmp(name, "ts", 2))) ||
                      (pj->lens[i] == 4 && !memcmp(name, "type", 4));
        if (builtin)
            want = NULL; /* the built-ins are compared above; fields[i] stays absent */
        if (!want) {
            if (got->type != LAM_VAL_ABSENT) {
                snprintf(errstr, errstr_size, "%s: present in the projection only", name);
                return -1;
            }
            continue;
        }
        if (got->type == LAM_VAL_ABSENT) {
            snprintf(errstr, errstr_size, "%s: missing from the projection", name);
            return -1;
        }
        if (field_compare(name, got, want, errstr, errstr_size))
            return -1;
        if (lam_event_get(p, name, pj->lens[i]) != got) {
            snprintf(errstr, errstr_size, "%s: lookup by name fails", name);
            return -1;
        }
    }
    return 0;
}

/* ---- canonical form ---- */

/* Writer straight into a lam_buf: p/end cache the free space, synced back on growth and at the end. */
typedef struct canon_w {
    lam_buf_t *b;
    char *p, *end;
} canon_w_t;

static void cw_sync(canon_w_t *w)
{
    w->b->len = (size_t)(w->p - w->b->data);
}

static void cw_load(canon_w_t *w)
{
    w->p = w->b->data + w->b->len;
    w->end = w->b->data + w->b->cap - 1; /* room for the NUL */
}

static inline void cw_need(canon_w_t *w, size_t n)
{
    if ((size_t)(w->end - w->p) < n) {
        cw_sync(w);
        lam_buf_reserve(w->b, n);
        cw_load(w);
    }
}

static inline void cw_put(canon_w_t *w, const char *s, size_t n)
{
    memcpy(w->p, s, n);
    w->p += n;
}

/* A JSON string: verbatim between quotes when plain, else through the escaper. */
static inline void cw_string(canon_w_t *w, const char *s, size_t n, int plain)
{
    if (plain) {
        cw_need(w, n + 2);
        *w->p++ = '"';
        cw_put(w, s, n);
        *w->p++ = '"';
        return;
    }
    cw_sync(w);
    lam_json_append_string(w->b, s, n);
    cw_load(w);
}

void lam_event_canonical(const lam_event_t *ev, lam_buf_t *out)
{
    lam_buf_reserve(out, ev->canonical_len);
    canon_w_t w = {out, NULL, NULL};
    cw_load(&w);
    cw_need(&w, 6);
    cw_put(&w, "{", 1);
    if (ev->id.type != LAM_VAL_ABSENT) {
        cw_put(&w, "\"id\":", 5);
        cw_string(&w, ev->id.val, ev->id.val_len, ev->id.canon_plain);
        cw_need(&w, 6);
        *w.p++ = ',';
    }
    cw_need(&w, ev->ts.val_len + 13);
    cw_put(&w, "\"ts\":", 5);
    cw_put(&w, ev->ts.val, ev->ts.val_len);
    cw_put(&w, ",\"type\":", 8);
    cw_string(&w, ev->type.val, ev->type.val_len, ev->type.canon_plain);
    for (size_t i = 0; i < ev->nfields; i++) {
        const lam_field_t *f = &ev->fields[i];
        if (f->canon_plain) {
            cw_need(&w, f->name_len + f->val_len + 6);
            w.p[0] = ',';
            w.p[1] = '"';
            w.p += 2;
            cw_put(&w, f->name, f->name_len);
            w.p[0] = '"';
            w.p[1] = ':';
            w.p += 2;
            if (f->type == LAM_VAL_STRING) {
                *w.p++ = '"';
                cw_put(&w, f->val, f->val_len);
                *w.p++ = '"';
            } else {
                cw_put(&w, f->val, f->val_len);
            }
            continue;
        }
        cw_need(&w, 1);
        *w.p++ = ',';
        cw_sync(&w);
        lam_json_append_string(out, f->name, f->name_len);
        lam_buf_append_char(out, ':');
        if (f->type == LAM_VAL_STRING)
            lam_json_append_string(out, f->val, f->val_len);
        else
            lam_buf_append(out, f->val, f->val_len);
        cw_load(&w);
    }
    cw_need(&w, 1);
    *w.p++ = '}';
    cw_sync(&w);
    out->data[out->len] = '\0';
}
