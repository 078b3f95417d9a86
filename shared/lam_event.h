/* lam_event.h - the event model: validate a JSON event, flatten it, canonical form, field lookup. */
#ifndef LAM_EVENT_H
#define LAM_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "lam_buf.h"

#define LAM_EVENT_MAX_BYTES 65536 /* canonical form, including a generated id */
#define LAM_EVENT_ID_MAX 128      /* bytes */
#define LAM_EVENT_TYPE_MAX 128    /* bytes */
#define LAM_EVENT_MAX_DEPTH 4     /* nested object depth; the event object itself is depth 0 */
#define LAM_EVENT_GENERATED_ID_LEN 36 /* a UUID; reserved in the size limit when id is absent */

/** Value types. LAM_VAL_ABSENT is only used by lookups/views for "no such field". */
typedef enum lam_val_type {
    LAM_VAL_ABSENT = 0,
    LAM_VAL_NULL,
    LAM_VAL_FALSE,
    LAM_VAL_TRUE,
    LAM_VAL_NUMBER,
    LAM_VAL_STRING
} lam_val_type_t;

/**
 * One flattened field. name/val point into the event and stay valid until the next parse,
 * set_id or free. At least 8 readable bytes follow a field's name (see lam_event_get_padded). val is NUL-terminated (not counted in val_len) and is:
 * STRING: the decoded bytes (binary safe, may contain NUL); NUMBER: canonical number text;
 * TRUE/FALSE/NULL: "true"/"false"/"null".
 */
typedef struct lam_field {
    const char *name;
    const char *val;
    uint32_t name_len;
    uint32_t val_len;
    uint32_t hash;   /* lam_event_name_hash(name) */
    uint8_t type;    /* lam_val_type_t */
    uint8_t micro_ok; /* NUMBER whose value * 10^6 (half-even) fits in int64 */
    uint8_t canon_plain; /* private: name and value are written verbatim in the canonical form */
    int64_t micro;   /* value in micro-units when micro_ok */
    uint32_t name_off, val_off; /* private */
} lam_field_t;

/**
 * A reusable parsed event. lam_event_init() once, lam_event_parse() many times: internal
 * buffers grow to the largest event seen and are reused, so steady-state parsing allocates
 * nothing. Public members are read-only.
 */
typedef struct lam_event {
    int64_t ts_ms;        /* event time, epoch ms */
    int ts_given;         /* 0 when ts was absent and now_ms was used */
    lam_field_t id;       /* type LAM_VAL_ABSENT when the event has no id */
    lam_field_t ts;       /* NUMBER, canonical integer ms */
    lam_field_t type;     /* STRING */
    lam_field_t *fields;  /* other fields, flattened, in input order */
    size_t nfields;
    size_t canonical_len; /* exact length of lam_event_canonical() output */
    /* the projection of lam_event_parse_projected (fields[i] is its name i), NULL after a full parse */
    const struct lam_event_proj *proj;
    /* private */
    size_t fields_cap;
    char *arena;
    size_t arena_len, arena_cap;
    uint64_t *htab;
    size_t hmask;
    uint32_t gen;
    char *pbuf; /* prefix of the enclosing objects' flattened name */
    size_t pbuf_cap;
    char id_buf[LAM_EVENT_ID_MAX + 1];
    char type_buf[LAM_EVENT_TYPE_MAX + 1];
    char ts_buf[24];
} lam_event_t;

/** Initialise an empty event (no allocation yet). */
void lam_event_init(lam_event_t *ev);
/** Release the event's buffers; the struct itself is the caller's. Accepts NULL. */
void lam_event_free(lam_event_t *ev);

/**
 * Parse and validate one JSON event (DESIGN §1) from json[0..len) (not retained).
 * now_ms is used when ts is absent; ts more than max_future_ms after now_ms is rejected
 * (max_future_ms < 0 disables the check). Returns 0, or -1 with a message naming the field,
 * e.g. `ts: not RFC 3339: "yesterday"` or `tags: arrays are not supported`.
 */
int lam_event_parse(lam_event_t *ev, const char *json, size_t len, int64_t now_ms, int64_t max_future_ms,
                    char *errstr, size_t errstr_size);

/**
 * The general parser behind lam_event_parse: same arguments, results and messages. It is the
 * reference the fast path is tested against; callers use lam_event_parse.
 */
int lam_event_parse_general(lam_event_t *ev, const char *json, size_t len, int64_t now_ms, int64_t max_future_ms,
                            char *errstr, size_t errstr_size);

/**
 * The fast path of lam_event_parse, for the common shape: strings without escapes, nested
 * objects, numbers, literals. Returns 1 when it parsed the event (ev exactly as
 * lam_event_parse_general leaves it), 0 when it declined (anything unusual or invalid; ev is
 * then unspecified and lam_event_parse_general gives the result and the message).
 */
int lam_event_parse_fast(lam_event_t *ev, const char *json, size_t len, int64_t now_ms, int64_t max_future_ms);

/**
 * A projection: the field names a consumer reads (views' where, group_by and metric fields).
 * Names are copied; free with lam_event_proj_free. Returns NULL when n is over LAM_EVENT_PROJ_MAX
 * or a name is empty or repeated (callers then parse in full).
 */
#define LAM_EVENT_PROJ_MAX 64
typedef struct lam_event_proj lam_event_proj_t;
lam_event_proj_t *lam_event_proj_new(const char *const *names, const size_t *lens, size_t n);
void lam_event_proj_free(lam_event_proj_t *pj);
/** Number of names in the projection. */
size_t lam_event_proj_count(const lam_event_proj_t *pj);

/**
 * Parse a record in flat canonical form (what ingest writes: one object without whitespace or
 * nesting, plain strings) keeping only the projection's fields; every other field is validated and
 * skipped. Returns 1 when it parsed: lam_event_parse(ev, json, len, 0, -1, ...) would succeed, and
 * ev's id, ts, type and the projected fields are what it would give (lam_event_get finds them);
 * ev->nfields is the projection's count, fields[i] is name i (type LAM_VAL_ABSENT when the record
 * lacks it), ev->proj = pj, and ev is not for lam_event_canonical. Returns 0 when it declined
 * (any other shape, or an invalid record): lam_event_parse gives the result and the message.
 */
int lam_event_parse_projected(lam_event_t *ev, const char *json, size_t len, const lam_event_proj_t *pj);

/**
 * Compare two parsed events field by field (ts, id, type, every field's name, value, type,
 * micro value and hash, canonical_len) and check each field is found by lam_event_get.
 * Returns 0 when identical, else -1 with what differs in errstr. For tests and fuzzing.
 */
int lam_event_compare(const lam_event_t *a, const lam_event_t *b, char *errstr, size_t errstr_size);

/**
 * Compare an event of lam_event_parse_projected with the same record parsed in full: ts, id,
 * type, canonical_len and every projected field (name, value, type, micro value, hash; absent in
 * both), and each present one found by lam_event_get. 0 or -1 with what differs. For tests/fuzzing.
 */
int lam_event_compare_projected(const lam_event_t *p, const lam_event_t *full, char *errstr, size_t errstr_size);

/** Set/replace the id (1..128 bytes, copied). Returns 0 or -1 with a message. */
int lam_event_set_id(lam_event_t *ev, const char *id, size_t len, char *errstr, size_t errstr_size);

/**
 * Append the canonical compact JSON of the event to out:
 * {"id":..,"ts":<int ms>,"type":..,<fields in input order>} ("id" omitted when absent).
 */
void lam_event_canonical(const lam_event_t *ev, lam_buf_t *out);

/** lam_event_name_hash of the built-in names "id", "ts" and "type". */
#define LAM_EVENT_HASH_ID 0x71a5a3b5u
#define LAM_EVENT_HASH_TS 0xe1f45608u
#define LAM_EVENT_HASH_TYPE 0x19433ecau

/** Hash used for field names (FNV-1a, 32 bit); views precompute it. */
uint32_t lam_event_name_hash(const char *name, size_t len);

/**
 * Find a field by flattened name ("geo.cc"); "id", "ts" and "type" return the built-ins.
 * NULL when absent. The pointer is owned by the event. lam_event_get_h takes a precomputed hash.
 * On an event of lam_event_parse_projected only lam_event_get finds the projected fields
 * (lam_event_get_h and lam_event_get_padded find the built-ins, other names give NULL).
 */
const lam_field_t *lam_event_get(const lam_event_t *ev, const char *name, size_t len);
static inline const lam_field_t *lam_event_get_h(const lam_event_t *ev, const char *name, size_t len,
                                                 uint32_t hash);

/** Parse a number token text into micro-units (value * 10^6, half to even). 0 or -1. */
int lam_event_micro_from_text(const char *text, size_t len, int64_t *micro);

/* Inline: this lookup runs several times per event per view on the batch hot path. */
static inline int lam_event_bytes_eq_(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/*
 * a[0..n) == b[0..n) a word at a time, when both are followed by enough readable bytes that the
 * last word (starting at a multiple of 8 below n) can be loaded whole.
 */
static inline __attribute__((always_inline)) int lam_event_bytes_eq_padded_(const char *a, const char *b, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; n >= 8; n -= 8, a += 8, b += 8) {
        uint64_t x, y;
        __builtin_memcpy(&x, a, 8);
        __builtin_memcpy(&y, b, 8);
        if (x != y)
            return 0;
    }
    if (!n)
        return 1;
    uint64_t x, y;
    __builtin_memcpy(&x, a, 8);
    __builtin_memcpy(&y, b, 8);
    return ((x ^ y) & (~0ULL >> (64 - 8 * n))) == 0;
#else
    return lam_event_bytes_eq_(a, b, n);
#endif
}

/** lam_event_get for an event of lam_event_parse_projected (ev->proj set): its projected fields. */
const lam_field_t *lam_event_get_proj(const lam_event_t *ev, const char *name, size_t len);

static inline __attribute__((always_inline)) const lam_field_t *
lam_event_get_(const lam_event_t *ev, const char *name, size_t len, uint32_t hash, int padded)
{
    if (len <= 4) {
        if (len == 4 && name[0] == 't' && name[1] == 'y' && name[2] == 'p' && name[3] == 'e')
            return &ev->type;
        if (len == 2 && name[0] == 't' && name[1] == 's')
            return &ev->ts;
        if (len == 2 && name[0] == 'i' && name[1] == 'd')
            return ev->id.type == LAM_VAL_ABSENT ? NULL : &ev->id;
    }
    if (!ev->nfields)
        return NULL;
    size_t s = hash & ev->hmask;
    for (;;) {
        uint64_t e = ev->htab[s];
        if ((uint32_t)(e >> 32) != ev->gen)
            return NULL;
        if (((uint32_t)e & 0xffff0000u) == (hash & 0xffff0000u)) {
            const lam_field_t *f = &ev->fields[e & 0xffff];
            if (f->name_len == len && (padded ? lam_event_bytes_eq_padded_(f->name, name, len)
                                              : lam_event_bytes_eq_(f->name, name, len)))
                return f;
        }
        s = (s + 1) & ev->hmask;
    }
}

static inline const lam_field_t *lam_event_get_h(const lam_event_t *ev, const char *name, size_t len,
                                                 uint32_t hash)
{
    return lam_event_get_(ev, name, len, hash, 0);
}

/**
 * lam_event_get_h for a name followed by at least 8 readable bytes (views pad their field
 * names; a parsed event's names always are): names compare a word at a time.
 */
static inline const lam_field_t *lam_event_get_padded(const lam_event_t *ev, const char *name, size_t len,
                                                      uint32_t hash)
{
    return lam_event_get_(ev, name, len, hash, 1);
}

#endif
