/* lam_agg.c - apply events to views: group keys, fixed-point metrics, cells, merge, roll-up. */
#include "lam_agg.h"

#include <stdio.h>
#include <string.h>

#include "lam_json.h"
#include "lam_mem.h"

#define F_HAS 1u
#define F_OVERFLOW 2u
#define BLOB_VERSION 1

typedef struct cell_metric {
    union {
        int64_t v;
        lam_hll_t *hll;
    } u;
    uint32_t flags;
    uint32_t pad;
} cell_metric_t;

struct lam_cell {
    uint64_t hash;
    int64_t ts;
    int64_t count;
    uint32_t view;
    uint32_t key_len;
    uint32_t nmetrics;
    uint32_t pad;
    cell_metric_t m[]; /* nmetrics slots, then key_len key bytes, padded to 8 */
};

typedef struct slot {
    uint32_t off8; /* (cell offset / 8) + 1; 0 = empty */
    uint32_t hash; /* low 32 bits of the cell hash */
} slot_t;

#define FC_MAX 64      /* fields an event remembers (bits of a uint64_t) */
#define FC_NONE 0xffu  /* beyond FC_MAX: looked up every time */

typedef struct agg_view {
    /* a view without group_by: its last cell (bucket last_ts, arena offset last_off + 1; 0 = none),
       taken again without a lookup while events stay in that bucket */
    int64_t last_ts;
    size_t last_off;
    uint32_t wrep;     /* first view with the same where clause: its match result is shared */
    uint8_t *wfi;      /* field-cache index of each where field (FC_NONE: look up) */
    uint8_t gfi[LAM_VIEW_GROUP_MAX];
    uint8_t *mfi;      /* per metric (count: unused) */
} agg_view_t;

struct lam_agg {
    const lam_views_t *views;
    char *cells; /* arena of cells, 8-aligned */
    size_t cells_len, cells_cap;
    size_t ncells;
    slot_t *tab;
    size_t mask;
    uint64_t *skipped; /* per flat metric index */
    lam_buf_t key;     /* scratch group key */
    const lam_view_t *varr; /* views are one contiguous array in lam_views_t */
    size_t nviews;
    size_t *mbase;     /* flat index of each view's first metric */
    /* Compiled at lam_agg_new so each event resolves and hashes a field once, however many views
       use it, and views with the same where clause share one match. */
    const lam_fieldref_t **fref; /* the distinct field names of every where, group_by and metric */
    size_t nfref;
    int fref_full;     /* some name did not fit FC_MAX */
    /* fref indexes that are id, ts or type (not in a projected event's fields) and which one */
    uint8_t nbuiltin, builtin_fi[3], builtin_kind[3]; /* kind: 0 id, 1 ts, 2 type */
    agg_view_t *av;    /* per view */
    lam_event_proj_t *proj; /* fref as a projection (name i = fref[i]); NULL when fref_full */
    lam_agg_pipe_t *pipe;   /* lam_agg_pipe_begin's events in flight; NULL until then */
};

static void pipe_free(lam_agg_t *a);
static void pipe_drop(lam_agg_t *a);
static inline void defer_add(lam_agg_pipe_t *p, lam_hll_t *h, uint64_t hash);

static size_t cell_size(uint32_t nmetrics, uint32_t key_len)
{
    return (sizeof(lam_cell_t) + nmetrics * sizeof(cell_metric_t) + key_len + 7) & ~(size_t)7;
}

static char *cell_keyp(const lam_cell_t *c)
{
    return (char *)&c->m[c->nmetrics];
}


static inline __attribute__((always_inline)) uint64_t cell_hash_head(size_t view, int64_t ts, const char **key,
                                                                    size_t *len)
{
    uint64_t h = ((uint64_t)ts * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)(view + 1) << 48) ^ *len;
    for (; *len >= 8; *len -= 8, *key += 8) {
        uint64_t k;
        memcpy(&k, *key, 8);
        h = (h ^ k) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }
    return h;
}

static uint64_t cell_hash(size_t view, int64_t ts, const char *key, size_t len)
{
    uint64_t h = cell_hash_head(view, ts, &key, &len);
    uint64_t k = 0;
    for (size_t s = 0; s < len; s++)
        k |= (uint64_t)(uint8_t)key[s] << (8 * s);
    return lam_mix64(h ^ k);
}

/*
 * cell_hash of a key followed by at least 8 readable bytes: the tail is one masked load
 * (little-endian, where both build the same word).
 */
static inline __attribute__((always_inline)) uint64_t cell_hash_padded(size_t view, int64_t ts, const char *key,
                                                                       size_t len)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t h = cell_hash_head(view, ts, &key, &len);
    uint64_t k;
    memcpy(&k, key, 8);
    k &= len ? ~0ULL >> (64 - 8 * len) : 0;
    return lam_mix64(h ^ k);
#else
    return cell_hash(view, ts, key, len);
#endif
}

/* Field-cache index of ref: its position among the distinct names, FC_NONE past FC_MAX of them. */
static uint8_t field_index(lam_agg_t *a, const lam_fieldref_t *ref)
{
    for (size_t i = 0; i < a->nfref; i++)
        if (a->fref[i]->len == ref->len && memcmp(a->fref[i]->name, ref->name, ref->len) == 0)
            return (uint8_t)i;
    if (a->nfref >= FC_MAX) {
        a->fref_full = 1;
        return FC_NONE;
    }
    a->fref[a->nfref] = ref;
    return (uint8_t)a->nfref++;
}

static void compile_views(lam_agg_t *a)
{
    a->fref = lam_malloc(FC_MAX * sizeof(*a->fref));
    a->av = lam_calloc(a->nviews ? a->nviews : 1, sizeof(agg_view_t));
    for (size_t vi = 0; vi < a->nviews; vi++) {
        const lam_view_t *v = &a->varr[vi];
        agg_view_t *av = &a->av[vi];
        av->wrep = (uint32_t)vi;
        for (size_t u = 0; u < vi; u++)
            if (lam_view_where_equal(&a->varr[u], v)) {
                av->wrep = (uint32_t)u;
                break;
            }
        av->wfi = lam_malloc(v->nwhere ? v->nwhere : 1);
        for (size_t i = 0; i < v->nwhere; i++)
            av->wfi[i] = field_index(a, &v->where[i].field);
        for (size_t i = 0; i < v->ngroup; i++)
            av->gfi[i] = field_index(a, &v->group_by[i]);
        av->mfi = lam_malloc(v->nmetrics ? v->nmetrics : 1);
        for (size_t i = 0; i < v->nmetrics; i++)
            av->mfi[i] = v->metrics[i].kind == LAM_METRIC_COUNT ? FC_NONE : field_index(a, &v->metrics[i].field);
    }
    if (!a->fref_full) {
        const char *names[FC_MAX];
        size_t lens[FC_MAX];
        for (size_t i = 0; i < a->nfref; i++) {
            names[i] = a->fref[i]->name;
            lens[i] = a->fref[i]->len;
            int kind = lens[i] == 2 && !memcmp(names[i], "id", 2)     ? 0
                       : lens[i] == 2 && !memcmp(names[i], "ts", 2)   ? 1
                       : lens[i] == 4 && !memcmp(names[i], "type", 4) ? 2
                                                                      : -1;
            if (kind >= 0) { /* each name is in fref once: at most three */
                a->builtin_fi[a->nbuiltin] = (uint8_t)i;
                a->builtin_kind[a->nbuiltin++] = (uint8_t)kind;
            }
        }
        a->proj = lam_event_proj_new(names, lens, a->nfref);
    }
}

lam_agg_t *lam_agg_new(const lam_views_t *views)
{
    lam_agg_t *a = lam_calloc(1, sizeof(*a));
    a->views = views;
    a->mask = 1023;
    a->tab = lam_calloc(a->mask + 1, sizeof(slot_t));
    a->skipped = lam_calloc(lam_views_total_metrics(views) + 1, sizeof(uint64_t));
    a->nviews = lam_views_count(views);
    a->varr = lam_views_get(views, 0);
    a->mbase = lam_malloc((a->nviews + 1) * sizeof(size_t));
    for (size_t i = 0; i < a->nviews; i++)
        a->mbase[i] = lam_views_metric_base(views, i);
    compile_views(a);
    return a;
}

static void free_hlls(lam_agg_t *a)
{
    size_t it = 0;
    lam_cell_t *c;
    while ((c = lam_agg_next(a, &it))) {
        const lam_view_t *v = lam_views_get(a->views, c->view);
        for (size_t i = 0; i < c->nmetrics; i++)
            if (v->metrics[i].kind == LAM_METRIC_DISTINCT)
                lam_hll_free(c->m[i].u.hll);
    }
}

void lam_agg_free(lam_agg_t *a)
{
    if (!a)
        return;
    if (a->views)
        free_hlls(a);
    lam_free(a->cells);
    lam_free(a->tab);
    lam_free(a->skipped);
    lam_free(a->mbase);
    for (size_t i = 0; a->av && i < a->nviews; i++) {
        lam_free(a->av[i].mfi);
        lam_free(a->av[i].wfi);
    }
    lam_free(a->av);
    lam_free(a->fref);
    lam_event_proj_free(a->proj);
    lam_buf_free(&a->key);
    pipe_free(a);
    lam_free(a);
}

void lam_agg_reset(lam_agg_t *a)
{
    free_hlls(a);
    a->cells_len = 0;
    a->ncells = 0;
    for (size_t i = 0; i < a->nviews; i++)
        a->av[i].last_off = 0;
    memset(a->tab, 0, (a->mask + 1) * sizeof(slot_t));
    memset(a->skipped, 0, (lam_views_total_metrics(a->views) + 1) * sizeof(uint64_t));
    pipe_drop(a);
}

const lam_event_proj_t *lam_agg_projection(const lam_agg_t *a)
{
    return a->proj;
}

const lam_views_t *lam_agg_views(const lam_agg_t *a)
{
    return a->views;
}

size_t lam_agg_size(const lam_agg_t *a)
{
    return a->ncells;
}

size_t lam_agg_memory(const lam_agg_t *a)
{
    size_t m = sizeof(*a) + a->cells_cap + (a->mask + 1) * sizeof(slot_t) + a->key.cap;
    size_t it = 0;
    lam_cell_t *c;
    while ((c = lam_agg_next(a, &it))) {
        const lam_view_t *v = lam_views_get(a->views, c->view);
        for (size_t i = 0; i < c->nmetrics; i++)
            if (v->metrics[i].kind == LAM_METRIC_DISTINCT && c->m[i].u.hll)
                m += lam_hll_memory(c->m[i].u.hll);
    }
    return m;
}

lam_cell_t *lam_agg_next(const lam_agg_t *a, size_t *iter)
{
    if (*iter >= a->cells_len)
        return NULL;
    lam_cell_t *c = (lam_cell_t *)(a->cells + *iter);
    *iter += cell_size(c->nmetrics, c->key_len);
    return c;
}

static lam_cell_t *lookup(const lam_agg_t *a, size_t view, int64_t ts, const char *key, size_t len, uint64_t h,
                          size_t *slot_out)
{
    size_t s = (uint32_t)h & a->mask;
    for (;;) {
        const slot_t *sl = &a->tab[s];
        if (!sl->off8) {
            *slot_out = s;
            return NULL;
        }
        if (sl->hash == (uint32_t)h) {
            lam_cell_t *c = (lam_cell_t *)(a->cells + (size_t)(sl->off8 - 1) * 8);
            if (c->ts == ts && c->view == view && c->key_len == len && memcmp(cell_keyp(c), key, len) == 0)
                return c;
        }
        s = (s + 1) & a->mask;
    }
}

lam_cell_t *lam_agg_find(const lam_agg_t *a, size_t view, int64_t ts, const char *key, size_t len)
{
    size_t s;
    return lookup(a, view, ts, key, len, cell_hash(view, ts, key, len), &s);
}

static void grow_table(lam_agg_t *a)
{
    size_t cap = (a->mask + 1) * 2;
    lam_free(a->tab);
    a->tab = lam_calloc(cap, sizeof(slot_t));
    a->mask = cap - 1;
    size_t it = 0;
    lam_cell_t *c;
    while ((c = lam_agg_next(a, &it))) {
        size_t s = (uint32_t)c->hash & a->mask;
        while (a->tab[s].off8)
            s = (s + 1) & a->mask;
        a->tab[s].off8 = (uint32_t)(((char *)c - a->cells) / 8 + 1);
        a->tab[s].hash = (uint32_t)c->hash;
    }
}

static lam_cell_t *get_h(lam_agg_t *a, size_t view, int64_t ts, const char *key, size_t len, uint64_t h)
{
    size_t s;
    lam_cell_t *c = lookup(a, view, ts, key, len, h, &s);
    if (c)
        return c;
    const lam_view_t *v = lam_views_get(a->views, view);
    size_t need = cell_size((uint32_t)v->nmetrics, (uint32_t)len);
    if (a->cells_len + need > a->cells_cap) {
        size_t cap = a->cells_cap ? a->cells_cap * 2 : 65536;
        while (cap < a->cells_len + need)
            cap *= 2;
        a->cells = lam_realloc(a->cells, cap);
        a->cells_cap = cap;
    }
    c = (lam_cell_t *)(a->cells + a->cells_len);
    memset(c, 0, need);
    c->hash = h;
    c->ts = ts;
    c->view = (uint32_t)view;
    c->key_len = (uint32_t)len;
    c->nmetrics = (uint32_t)v->nmetrics;
    memcpy(cell_keyp(c), key, len);
    a->tab[s].off8 = (uint32_t)(a->cells_len / 8 + 1);
    a->tab[s].hash = (uint32_t)h;
    a->cells_len += need;
    a->ncells++;
    if (a->ncells * 2 > a->mask + 1)
        grow_table(a);
    return c;
}

/*
 * get_h for the apply path: key is followed by 8 readable bytes, so the compare works a word at a
 * time and a hit costs no call (h = cell_hash_padded of the key).
 */
static inline __attribute__((always_inline)) lam_cell_t *get_padded(lam_agg_t *a, size_t view, int64_t ts,
                                                                    const char *key, size_t len, uint64_t h)
{
    size_t s = (uint32_t)h & a->mask;
    for (;;) {
        const slot_t *sl = &a->tab[s];
        if (!sl->off8)
            break;
        if (sl->hash == (uint32_t)h) {
            lam_cell_t *c = (lam_cell_t *)(a->cells + (size_t)(sl->off8 - 1) * 8);
            if (c->ts == ts && c->view == view && c->key_len == len && lam_event_bytes_eq_padded_(cell_keyp(c), key, len))
                return c;
        }
        s = (s + 1) & a->mask;
    }
    return get_h(a, view, ts, key, len, h);
}

lam_cell_t *lam_agg_get(lam_agg_t *a, size_t view, int64_t ts, const char *key, size_t len)
{
    return get_h(a, view, ts, key, len, cell_hash(view, ts, key, len));
}

/* ---- group keys ---- */

/* 1 when s needs no escaping inside a JSON string (plain printable ASCII) */
static int plain_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

static void append_value(lam_buf_t *out, const lam_field_t *f)
{
    if (!f || f->type == LAM_VAL_NULL) {
        lam_buf_append(out, "null", 4);
    } else if (f->type == LAM_VAL_STRING) {
        if (plain_ascii(f->val, f->val_len)) { /* fast path, same bytes as the escaper */
            lam_buf_reserve(out, f->val_len + 2);
            char *p = out->data + out->len;
            p[0] = '"';
            memcpy(p + 1, f->val, f->val_len);
            p[f->val_len + 1] = '"';
            out->len += f->val_len + 2;
            out->data[out->len] = '\0';
        } else {
            lam_json_append_string(out, f->val, f->val_len);
        }
    } else {
        lam_buf_append(out, f->val, f->val_len);
    }
}

static void group_key_slow(const lam_view_t *v, const lam_field_t *const *fs, lam_buf_t *out)
{
    lam_buf_reserve(out, 2);
    out->data[out->len++] = '[';
    for (size_t i = 0; i < v->ngroup; i++) {
        if (i) {
            lam_buf_reserve(out, 1);
            out->data[out->len++] = ',';
        }
        append_value(out, fs[i]);
    }
    lam_buf_reserve(out, 1);
    out->data[out->len++] = ']';
    out->data[out->len] = '\0';
}

/* Short copies (group-key values): whole words, then bytes; no call to memcpy, no read past src[n). */
static inline void copy_small(char *dst, const char *src, size_t n)
{
    for (; n >= 8; n -= 8, dst += 8, src += 8)
        memcpy(dst, src, 8);
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i];
}

/* The group key of the resolved group_by fields fs[0..v->ngroup) (NULL: absent). */
static void group_key_fields(const lam_view_t *v, const lam_field_t *const *fs, lam_buf_t *out)
{
    /* one pass of direct writes into room for the longest plain key; a string that needs
       escaping starts over on the slow path */
    size_t need = 2 + 5 * v->ngroup;
    for (size_t i = 0; i < v->ngroup; i++)
        need += fs[i] ? fs[i]->val_len : 0;
    if (out->cap - out->len < need + 1)
        lam_buf_reserve(out, need);
    char *p = out->data + out->len;
    *p++ = '[';
    for (size_t i = 0; i < v->ngroup; i++) {
        const lam_field_t *f = fs[i];
        if (i)
            *p++ = ',';
        if (!f || f->type == LAM_VAL_NULL) {
            memcpy(p, "null", 4);
            p += 4;
        } else if (f->type == LAM_VAL_STRING) {
            if (!f->canon_plain && !plain_ascii(f->val, f->val_len))
                return group_key_slow(v, fs, out);
            *p++ = '"';
            copy_small(p, f->val, f->val_len);
            p += f->val_len;
            *p++ = '"';
        } else {
            copy_small(p, f->val, f->val_len);
            p += f->val_len;
        }
    }
    *p++ = ']';
    *p = '\0';
    out->len = (size_t)(p - out->data);
}

void lam_agg_group_key_fields(const lam_view_t *v, const lam_field_t *const *fs, lam_buf_t *out)
{
    group_key_fields(v, fs, out);
}

void lam_agg_group_key(const lam_view_t *v, const lam_event_t *ev, lam_buf_t *out)
{
    const lam_field_t *fs[LAM_VIEW_GROUP_MAX];
    for (size_t i = 0; i < v->ngroup; i++)
        fs[i] = lam_view_field(ev, &v->group_by[i]);
    group_key_fields(v, fs, out);
}

int lam_agg_key_decode(const char *key, size_t len, lam_keyval_t *vals, size_t max, size_t *n,
                       lam_buf_t *scratch)
{
    lam_json_t j;
    lam_buf_clear(scratch);
    lam_buf_reserve(scratch, len + 1); /* decoding never grows: pointers stay valid */
    *n = 0;
    lam_json_init(&j, key, len, 0);
    if (lam_json_next(&j) != LAM_JSON_ARRAY)
        return -1;
    for (;;) {
        lam_json_tok_t t = lam_json_next(&j);
        if (t == LAM_JSON_ARRAY_END)
            break;
        if (*n >= max)
            return -1;
        lam_keyval_t *kv = &vals[*n];
        switch (t) {
        case LAM_JSON_STRING: {
            char *dst = scratch->data + scratch->len;
            kv->type = LAM_VAL_STRING;
            kv->len = lam_json_decode(j.tok, j.tok_len, dst, NULL);
            kv->val = dst;
            scratch->len += kv->len;
            break;
        }
        case LAM_JSON_NUMBER:
            kv->type = LAM_VAL_NUMBER;
            kv->val = j.tok;
            kv->len = j.tok_len;
            break;
        case LAM_JSON_TRUE:
        case LAM_JSON_FALSE:
        case LAM_JSON_NULL:
            kv->type = t == LAM_JSON_TRUE ? LAM_VAL_TRUE : t == LAM_JSON_FALSE ? LAM_VAL_FALSE : LAM_VAL_NULL;
            kv->val = j.tok;
            kv->len = j.tok_len;
            break;
        default:
            return -1;
        }
        (*n)++;
    }
    scratch->data[scratch->len] = '\0';
    return lam_json_next(&j) == LAM_JSON_EOF ? 0 : -1;
}

int lam_agg_event_cell(const lam_view_t *v, const lam_event_t *ev, int64_t *bucket_ts, lam_buf_t *key)
{
    if (!lam_view_match(v, ev))
        return 0;
    *bucket_ts = lam_time_floor(ev->ts_ms, v->granularity);
    lam_agg_group_key(v, ev, key);
    return 1;
}

/* ---- apply ---- */

/* One event's fields by field-cache index, each looked up (and HLL-hashed) at most once. */
typedef struct ev_cache {
    const lam_event_t *ev;
    uint64_t have, hashed;
    const lam_field_t *f[FC_MAX];
    uint64_t h[FC_MAX];
} ev_cache_t;

static inline __attribute__((always_inline)) const lam_field_t *ec_field(const lam_agg_t *a, ev_cache_t *c,
                                                                         uint8_t fi, const lam_fieldref_t *ref)
{
    if (fi == FC_NONE)
        return lam_view_field(c->ev, ref);
    if (!(c->have & (1ULL << fi))) {
        const lam_fieldref_t *r = a->fref[fi];
        c->f[fi] = lam_event_get_(c->ev, r->name, r->len, r->hash, 1); /* padded, inline */
        c->have |= 1ULL << fi;
    }
    return c->f[fi];
}

/* lam_hll_hash of field f (index fi) of the event. */
static inline __attribute__((always_inline)) uint64_t ec_hash(ev_cache_t *c, uint8_t fi, const lam_field_t *f)
{
    if (fi == FC_NONE)
        return lam_hll_hash(f->val, f->val_len);
    if (!(c->hashed & (1ULL << fi))) {
        c->h[fi] = lam_hll_hash(f->val, f->val_len);
        c->hashed |= 1ULL << fi;
    }
    return c->h[fi];
}

static inline __attribute__((always_inline)) int ec_match(const lam_agg_t *a, ev_cache_t *c, const lam_view_t *v,
                                                          const agg_view_t *av)
{
    for (size_t i = 0; i < v->nwhere; i++) {
        const lam_where_t *w = &v->where[i];
        uint8_t fi = av->wfi[i];
        if (!lam_where_match(w, ec_field(a, c, fi, &w->field)))
            return 0;
    }
    return 1;
}

/* lam_time_floor, inline for the fixed-length granularities views use (a remainder by a constant). */
static inline int64_t bucket_floor(int64_t ms, lam_gran_t g)
{
    int64_t len = g == LAM_GRAN_MINUTE ? 60000 : g == LAM_GRAN_HOUR ? 3600000 : g == LAM_GRAN_DAY ? 86400000 : 0;
    if (!len)
        return lam_time_floor(ms, g);
    int64_t r = ms % len;
    return ms - (r < 0 ? r + len : r);
}

static inline __attribute__((always_inline)) void ec_init(const lam_agg_t *a, ev_cache_t *c, const lam_event_t *ev)
{
    c->ev = ev;
    c->have = c->hashed = 0;
    if (ev->proj && ev->proj == a->proj) {
        /* a projected event: field i is fref[i], nothing to look up (with a projection every field
           the views read has a cache index, so ec_field never looks one up by hash) */
        for (size_t i = 0; i < a->nfref; i++)
            c->f[i] = ev->fields[i].type != LAM_VAL_ABSENT ? &ev->fields[i] : NULL;
        for (size_t b = 0; b < a->nbuiltin; b++) {
            unsigned k = a->builtin_kind[b];
            c->f[a->builtin_fi[b]] =
                k == 2 ? &ev->type : k == 1 ? &ev->ts : ev->id.type != LAM_VAL_ABSENT ? &ev->id : NULL;
        }
        c->have = ~0ULL;
    }
}

/* The metric updates of view vi for the event of c, into cell (whose count the caller took). */
static inline __attribute__((always_inline)) void apply_metrics(lam_agg_t *a, ev_cache_t *c, size_t vi,
                                                                const lam_view_t *v, const agg_view_t *av,
                                                                lam_cell_t *cell, int defer)
{
    uint64_t *skipped = a->skipped + a->mbase[vi];
    for (size_t mi = 0; mi < v->nmetrics; mi++) {
        const lam_metric_t *m = &v->metrics[mi];
        if (m->kind == LAM_METRIC_COUNT)
            continue;
        const lam_field_t *f = ec_field(a, c, av->mfi[mi], &m->field);
        if (!f || f->type == LAM_VAL_NULL)
            continue; /* the metric does not apply */
        cell_metric_t *cm = &cell->m[mi];
        if (m->kind == LAM_METRIC_DISTINCT) {
            if (!cm->u.hll)
                cm->u.hll = lam_hll_new();
            if (defer)
                defer_add(a->pipe, cm->u.hll, ec_hash(c, av->mfi[mi], f));
            else
                lam_hll_add_hash(cm->u.hll, ec_hash(c, av->mfi[mi], f));
            continue;
        }
        if (f->type != LAM_VAL_NUMBER || !f->micro_ok) {
            skipped[mi]++;
            continue;
        }
        int64_t x = f->micro;
        if (m->kind == LAM_METRIC_SUM) {
            if (!(cm->flags & F_OVERFLOW) && __builtin_add_overflow(cm->u.v, x, &cm->u.v)) {
                cm->flags |= F_OVERFLOW;
                cm->u.v = 0;
            }
        } else if (!(cm->flags & F_HAS) || (m->kind == LAM_METRIC_MIN ? x < cm->u.v : x > cm->u.v)) {
            cm->u.v = x;
        }
        cm->flags |= F_HAS;
    }
}

/* Where clause of view vi for the event of c; views with the same clause (the first 64) share one
   result through wdone/wok. */
static inline __attribute__((always_inline)) int ec_view_ok(const lam_agg_t *a, ev_cache_t *c, const lam_view_t *v,
                                                            const agg_view_t *av, uint64_t *wdone, uint64_t *wok)
{
    if (!v->nwhere)
        return 1;
    uint32_t r = av->wrep;
    if (r < 64 && (*wdone & (1ULL << r)))
        return (int)((*wok >> r) & 1);
    int ok = ec_match(a, c, v, av);
    if (r < 64) {
        *wdone |= 1ULL << r;
        *wok |= (uint64_t)ok << r;
    }
    return ok;
}

/* Bucket start of ts_ms at granularity g, computed once per event and granularity. */
static inline __attribute__((always_inline)) int64_t ec_bucket(int64_t ts_ms, lam_gran_t g, int64_t *floor_ts,
                                                               unsigned *floor_have)
{
    if (!(*floor_have & (1u << g))) {
        floor_ts[g] = bucket_floor(ts_ms, g);
        *floor_have |= 1u << g;
    }
    return floor_ts[g];
}

/* Append view vi's group key for the event of c to out, with 8 readable bytes after it (get_padded). */
static inline __attribute__((always_inline)) void ec_group_key(const lam_agg_t *a, ev_cache_t *c,
                                                               const lam_view_t *v, const agg_view_t *av,
                                                               lam_buf_t *out)
{
    const lam_field_t *fs[LAM_VIEW_GROUP_MAX];
    for (size_t i = 0; i < v->ngroup; i++)
        fs[i] = ec_field(a, c, av->gfi[i], &v->group_by[i]);
    group_key_fields(v, fs, out);
    if (out->cap - out->len < 9)
        lam_buf_reserve(out, 8);
}

/* The cell of view vi and bucket ts for the event of c (found or created). */
static inline __attribute__((always_inline)) lam_cell_t *ec_cell(lam_agg_t *a, ev_cache_t *c, size_t vi,
                                                                 const lam_view_t *v, agg_view_t *av, int64_t ts)
{
    int keyless = !v->ngroup;
    if (keyless && av->last_off && av->last_ts == ts)
        return (lam_cell_t *)(a->cells + av->last_off - 1);
    a->key.len = 0;
    ec_group_key(a, c, v, av, &a->key);
    lam_cell_t *cell = get_padded(a, vi, ts, a->key.data, a->key.len, cell_hash_padded(vi, ts, a->key.data, a->key.len));
    if (keyless) {
        av->last_ts = ts;
        av->last_off = (size_t)((char *)cell - a->cells) + 1;
    }
    return cell;
}

int lam_agg_add_event(lam_agg_t *a, const lam_event_t *ev)
{
    int matched = 0;
    ev_cache_t c;
    ec_init(a, &c, ev);
    uint64_t wdone = 0, wok = 0;
    int64_t floor_ts[LAM_GRAN_ALL + 1];
    unsigned floor_have = 0;
    for (size_t vi = 0; vi < a->nviews; vi++) {
        const lam_view_t *v = &a->varr[vi];
        agg_view_t *av = &a->av[vi];
        if (!ec_view_ok(a, &c, v, av, &wdone, &wok))
            continue;
        matched++;
        lam_cell_t *cell = ec_cell(a, &c, vi, v, av, ec_bucket(ev->ts_ms, v->granularity, floor_ts, &floor_have));
        cell->count++;
        apply_metrics(a, &c, vi, v, av, cell, 0);
    }
    return matched;
}

/* ---- pipelined apply (lam_agg_pipe_*) ---- */

/*
 * Up to PIPE_APPLY + 1 events in flight (a ring of PIPE_N), each a stage behind the one before,
 * so that the cache misses of one event (its cells' table slots, the cells, the caller's id-set
 * slot) overlap the work on the others instead of stalling in turn. A stage runs on event
 * t - distance when event t is pushed; events finish in push order. Distinct updates are queued
 * (below), not applied in the event's turn.
 */
#define PIPE_N 8
/* distances, < PIPE_N (1/2/3; 2/3/4 and 1/2/3 with a bigger queue were within noise, session 7) */
enum { PIPE_KEEP = 1, PIPE_CELL = 2, PIPE_APPLY = 3 };

typedef struct pipe_view {
    uint32_t vi;
    uint32_t key_len; /* UINT32_MAX: keyless view, resolved by ec_cell */
    size_t key_off;   /* in the entry's keys */
    int64_t ts;
    uint64_t h;
    size_t cell_off; /* of the cell in a->cells, from PIPE_CELL on */
} pipe_view_t;

typedef struct pipe_ent {
    lam_event_t ev;
    ev_cache_t c;
    uint64_t tag;
    int live;
    size_t nv;
    pipe_view_t *pv; /* one per view */
    lam_buf_t keys;
} pipe_ent_t;

/*
 * Deferred HLL updates. A distinct metric's update is a register max, so its order does not
 * matter (nor does the sparse/dense switch, which depends on the final register count only).
 * The pipeline queues (HLL, register, value) instead of touching the HLL: one sequential write
 * per update instead of two or three random misses (HLL struct, then its registers). Queues are
 * by HLL (DEFER_NB of them, by address hash), so that applying one (when full, and all at a drain)
 * touches 1/DEFER_NB of the agg's HLLs, a set that stays in L2 while thousands of updates hit it.
 * Packed: (HLL address >> 4) << 20 | register << 6 | value; an HLL whose address does not pack
 * (not 16-aligned or above 2^47, never seen on x86-64/arm64 Linux) is updated at once.
 */
#define DEFER_BITS 6
#define DEFER_NB (1u << DEFER_BITS)
#define DEFER_CAP 4096u

struct lam_agg_pipe {
    pipe_ent_t e[PIPE_N];
    int64_t head, tail; /* next to push, next to apply; both 0 after a drain */
    lam_agg_keep_fn keep;
    void *opaque;
    uint64_t *dq;          /* DEFER_NB queues of DEFER_CAP updates */
    uint32_t dn[DEFER_NB]; /* updates in each queue */
};

static void defer_apply(lam_agg_pipe_t *p, unsigned b)
{
    const uint64_t *q = p->dq + (size_t)b * DEFER_CAP;
    uint32_t n = p->dn[b];
    for (uint32_t i = 0; i < n; i++) {
        if (i + 8 < n)
            __builtin_prefetch((const void *)(uintptr_t)((q[i + 8] >> 20) << 4));
        uint64_t u = q[i];
        lam_hll_set_max((lam_hll_t *)(uintptr_t)((u >> 20) << 4), (unsigned)(u >> 6) & (LAM_HLL_REGISTERS - 1),
                        (unsigned)(u & 63));
    }
    p->dn[b] = 0;
}

static inline void defer_add(lam_agg_pipe_t *p, lam_hll_t *h, uint64_t hash)
{
    uintptr_t x = (uintptr_t)h;
    if ((x & 15) || (uint64_t)x >> 47) {
        lam_hll_add_hash(h, hash);
        return;
    }
    unsigned val, reg = lam_hll_pat(hash, &val);
    unsigned b = (unsigned)(((uint64_t)(x >> 4) * 0x9e3779b97f4a7c15ULL) >> (64 - DEFER_BITS));
    p->dq[(size_t)b * DEFER_CAP + p->dn[b]] = (uint64_t)(x >> 4) << 20 | reg << 6 | val;
    if (++p->dn[b] == DEFER_CAP)
        defer_apply(p, b);
}

static void pipe_free(lam_agg_t *a)
{
    lam_agg_pipe_t *p = a->pipe;
    if (!p)
        return;
    for (int i = 0; i < PIPE_N; i++) {
        lam_event_free(&p->e[i].ev);
        lam_free(p->e[i].pv);
        lam_buf_free(&p->e[i].keys);
    }
    lam_free(p->dq);
    lam_free(p);
    a->pipe = NULL;
}

/* Forget the events in flight (lam_agg_reset). */
static void pipe_drop(lam_agg_t *a)
{
    if (a->pipe) {
        a->pipe->head = a->pipe->tail = 0;
        memset(a->pipe->dn, 0, sizeof(a->pipe->dn)); /* their HLLs are being freed */
    }
}

void lam_agg_pipe_begin(lam_agg_t *a, lam_agg_keep_fn keep, void *opaque)
{
    if (!a->pipe) {
        lam_agg_pipe_t *p = lam_calloc(1, sizeof(*p));
        for (int i = 0; i < PIPE_N; i++) {
            lam_event_init(&p->e[i].ev);
            p->e[i].pv = lam_calloc(a->nviews ? a->nviews : 1, sizeof(pipe_view_t));
        }
        p->dq = lam_malloc((size_t)DEFER_NB * DEFER_CAP * sizeof(uint64_t));
        a->pipe = p;
    }
    a->pipe->keep = keep;
    a->pipe->opaque = opaque;
}

lam_event_t *lam_agg_pipe_event(lam_agg_t *a)
{
    return &a->pipe->e[a->pipe->head % PIPE_N].ev;
}

/* Stage 0: where, buckets, group keys and cell hashes; the cells' table slots prefetched. */
static void pipe_plan(lam_agg_t *a, pipe_ent_t *e)
{
    ec_init(a, &e->c, &e->ev);
    e->nv = 0;
    e->keys.len = 0;
    uint64_t wdone = 0, wok = 0;
    int64_t floor_ts[LAM_GRAN_ALL + 1];
    unsigned floor_have = 0;
    for (size_t vi = 0; vi < a->nviews; vi++) {
        if (!ec_view_ok(a, &e->c, &a->varr[vi], &a->av[vi], &wdone, &wok))
            continue;
        pipe_view_t *pv = &e->pv[e->nv++];
        pv->vi = (uint32_t)vi;
        pv->ts = ec_bucket(e->ev.ts_ms, a->varr[vi].granularity, floor_ts, &floor_have);
        if (!a->varr[vi].ngroup) {
            pv->key_len = UINT32_MAX;
            continue;
        }
        pv->key_off = e->keys.len;
        ec_group_key(a, &e->c, &a->varr[vi], &a->av[vi], &e->keys);
        pv->key_len = (uint32_t)(e->keys.len - pv->key_off);
        pv->h = cell_hash_padded(vi, pv->ts, e->keys.data + pv->key_off, pv->key_len);
        __builtin_prefetch(&a->tab[(uint32_t)pv->h & a->mask]);
    }
}

/* Stage PIPE_KEEP: the caller's verdict (in push order); the cells found in the slots prefetched. */
static void pipe_keep(lam_agg_t *a, pipe_ent_t *e)
{
    lam_agg_pipe_t *p = a->pipe;
    e->live = !p->keep || p->keep(p->opaque, &e->ev, e->tag);
    for (size_t i = 0; e->live && i < e->nv; i++) {
        const pipe_view_t *pv = &e->pv[i];
        if (pv->key_len == UINT32_MAX)
            continue;
        const slot_t *sl = &a->tab[(uint32_t)pv->h & a->mask];
        if (sl->off8 && sl->hash == (uint32_t)pv->h) {
            /* the header and the key (after the metrics), often the next line */
            const char *c = a->cells + (size_t)(sl->off8 - 1) * 8;
            __builtin_prefetch(c);
            __builtin_prefetch(c + sizeof(lam_cell_t) + a->varr[pv->vi].nmetrics * sizeof(cell_metric_t) + 7);
        }
    }
}

/* Stage PIPE_CELL: each cell found or created. */
static void pipe_cell(lam_agg_t *a, pipe_ent_t *e)
{
    for (size_t i = 0; e->live && i < e->nv; i++) {
        pipe_view_t *pv = &e->pv[i];
        lam_cell_t *cell = pv->key_len == UINT32_MAX
                               ? ec_cell(a, &e->c, pv->vi, &a->varr[pv->vi], &a->av[pv->vi], pv->ts)
                               : get_padded(a, pv->vi, pv->ts, e->keys.data + pv->key_off, pv->key_len, pv->h);
        pv->cell_off = (size_t)((char *)cell - a->cells);
    }
}

/* Stage PIPE_APPLY: counts and metrics. */
static void pipe_apply(lam_agg_t *a, pipe_ent_t *e)
{
    for (size_t i = 0; e->live && i < e->nv; i++) {
        lam_cell_t *cell = (lam_cell_t *)(a->cells + e->pv[i].cell_off);
        cell->count++;
        apply_metrics(a, &e->c, e->pv[i].vi, &a->varr[e->pv[i].vi], &a->av[e->pv[i].vi], cell, 1);
    }
}

/* The stages due when event t is pushed (or, draining, would be). */
static void pipe_tick(lam_agg_t *a, int64_t t)
{
    lam_agg_pipe_t *p = a->pipe;
#define PIPE_STAGE(d, fn)                                                                                    \
    if (t - (d) >= p->tail && t - (d) < p->head)                                                           \
        fn(a, &p->e[(t - (d)) % PIPE_N]);
    PIPE_STAGE(PIPE_KEEP, pipe_keep)
    PIPE_STAGE(PIPE_CELL, pipe_cell)
    PIPE_STAGE(PIPE_APPLY, pipe_apply)
#undef PIPE_STAGE
    if (t - PIPE_APPLY >= p->tail && t - PIPE_APPLY < p->head)
        p->tail = t - PIPE_APPLY + 1;
}

void lam_agg_pipe_push(lam_agg_t *a, uint64_t tag)
{
    lam_agg_pipe_t *p = a->pipe;
    pipe_ent_t *e = &p->e[p->head % PIPE_N];
    e->tag = tag;
    e->live = 1;
    pipe_plan(a, e);
    int64_t t = p->head++;
    pipe_tick(a, t);
}

void lam_agg_pipe_drain(lam_agg_t *a)
{
    lam_agg_pipe_t *p = a->pipe;
    if (!p)
        return;
    for (int64_t t = p->head; p->tail < p->head; t++)
        pipe_tick(a, t);
    p->head = p->tail = 0;
    for (unsigned b = 0; b < DEFER_NB; b++)
        defer_apply(p, b);
}

/* ---- cells ---- */

size_t lam_cell_view(const lam_cell_t *c)
{
    return c->view;
}

int64_t lam_cell_ts(const lam_cell_t *c)
{
    return c->ts;
}

const char *lam_cell_key(const lam_cell_t *c, size_t *len)
{
    *len = c->key_len;
    return cell_keyp(c);
}

int64_t lam_cell_count(const lam_cell_t *c)
{
    return c->count;
}

static lam_cell_status_t slot_status(const lam_cell_t *c, size_t m, int64_t *micro)
{
    if (m >= c->nmetrics)
        return LAM_CELL_EMPTY;
    const cell_metric_t *cm = &c->m[m];
    if (cm->flags & F_OVERFLOW)
        return LAM_CELL_OVERFLOW;
    if (!(cm->flags & F_HAS))
        return LAM_CELL_EMPTY;
    *micro = cm->u.v;
    return LAM_CELL_VALUE;
}

lam_cell_status_t lam_cell_sum(const lam_cell_t *c, size_t m, int64_t *micro)
{
    return slot_status(c, m, micro);
}

lam_cell_status_t lam_cell_min(const lam_cell_t *c, size_t m, int64_t *micro)
{
    return slot_status(c, m, micro);
}

lam_cell_status_t lam_cell_max(const lam_cell_t *c, size_t m, int64_t *micro)
{
    return slot_status(c, m, micro);
}

const lam_hll_t *lam_cell_hll(const lam_cell_t *c, size_t m)
{
    return m < c->nmetrics ? c->m[m].u.hll : NULL;
}

void lam_agg_cache_counts(lam_agg_t *a)
{
    size_t it = 0;
    lam_cell_t *c;
    while ((c = lam_agg_next(a, &it))) {
        const lam_view_t *v = lam_views_get(a->views, c->view);
        for (size_t m = 0; v && m < v->nmetrics && m < c->nmetrics; m++)
            if (v->metrics[m].kind == LAM_METRIC_DISTINCT && c->m[m].u.hll)
                lam_hll_count_cache(c->m[m].u.hll);
    }
}

void lam_cell_append_metric_json(const lam_view_t *v, const lam_cell_t *c, size_t m, lam_buf_t *out)
{
    if (m >= v->nmetrics) {
        lam_buf_append(out, "null", 4);
        return;
    }
    int64_t x;
    switch (v->metrics[m].kind) {
    case LAM_METRIC_COUNT:
        lam_buf_append_i64(out, c->count);
        break;
    case LAM_METRIC_DISTINCT:
        lam_buf_append_i64(out, c->m[m].u.hll ? (int64_t)lam_hll_count(c->m[m].u.hll) : 0);
        break;
    default:
        if (slot_status(c, m, &x) == LAM_CELL_VALUE)
            lam_agg_append_micro(out, x);
        else
            lam_buf_append(out, "null", 4);
    }
}

/* dst ⊕= src for one metric slot of kind k. */
static void slot_merge(lam_metric_kind_t k, cell_metric_t *d, const cell_metric_t *s)
{
    switch (k) {
    case LAM_METRIC_COUNT:
        break;
    case LAM_METRIC_DISTINCT:
        if (!s->u.hll)
            break;
        if (!d->u.hll)
            d->u.hll = lam_hll_dup(s->u.hll);
        else
            lam_hll_merge(d->u.hll, s->u.hll);
        break;
    case LAM_METRIC_SUM:
        if ((d->flags | s->flags) & F_OVERFLOW) {
            d->flags |= F_OVERFLOW | F_HAS;
            d->u.v = 0;
        } else if (s->flags & F_HAS) {
            if (__builtin_add_overflow(d->u.v, s->u.v, &d->u.v)) {
                d->flags |= F_OVERFLOW;
                d->u.v = 0;
            }
            d->flags |= F_HAS;
        }
        break;
    case LAM_METRIC_MIN:
    case LAM_METRIC_MAX:
        if ((s->flags & F_HAS) &&
            (!(d->flags & F_HAS) || (k == LAM_METRIC_MIN ? s->u.v < d->u.v : s->u.v > d->u.v)))
            d->u.v = s->u.v;
        d->flags |= s->flags & F_HAS;
        break;
    }
}

void lam_cell_merge(const lam_view_t *v, lam_cell_t *dst, const lam_cell_t *src)
{
    dst->count += src->count;
    for (size_t i = 0; i < v->nmetrics && i < dst->nmetrics; i++)
        slot_merge(v->metrics[i].kind, &dst->m[i], &src->m[i]);
}

int lam_agg_merge_rt(lam_agg_t *a, size_t view, int64_t ts, const char *key, size_t key_len, size_t m,
                     lam_cell_status_t st, int64_t micro)
{
    const lam_view_t *v = lam_views_get(a->views, view);
    if (!v || m > v->nmetrics)
        return -1;
    if (m == 0) {
        lam_agg_get(a, view, ts, key, key_len)->count += micro;
        return 0;
    }
    lam_metric_kind_t k = v->metrics[m - 1].kind;
    if (k == LAM_METRIC_COUNT || k == LAM_METRIC_DISTINCT || st == LAM_CELL_EMPTY)
        return -1;
    cell_metric_t one = {.u.v = st == LAM_CELL_OVERFLOW ? 0 : micro,
                         .flags = st == LAM_CELL_OVERFLOW ? (F_HAS | F_OVERFLOW) : F_HAS};
    if (st == LAM_CELL_OVERFLOW && k != LAM_METRIC_SUM)
        return -1;
    slot_merge(k, &lam_agg_get(a, view, ts, key, key_len)->m[m - 1], &one);
    return 0;
}

int lam_agg_merge_hll_redis(lam_agg_t *a, size_t view, int64_t ts, const char *key, size_t key_len, size_t metric,
                            const void *blob, size_t len, char *errstr, size_t errstr_size)
{
    const lam_view_t *v = lam_views_get(a->views, view);
    if (!v || metric >= v->nmetrics || v->metrics[metric].kind != LAM_METRIC_DISTINCT) {
        snprintf(errstr, errstr_size, "metric %zu of view %zu is not a distinct metric", metric, view);
        return -1;
    }
    /* Check the blob before touching the cell, so a corrupt value leaves the agg unchanged. */
    lam_hll_t *h = lam_hll_new();
    if (lam_hll_merge_redis_blob(h, blob, len, errstr, errstr_size) < 0) {
        lam_hll_free(h);
        return -1;
    }
    cell_metric_t *cm = &lam_agg_get(a, view, ts, key, key_len)->m[metric];
    if (!cm->u.hll) {
        cm->u.hll = h;
        return 0;
    }
    lam_hll_merge(cm->u.hll, h);
    lam_hll_free(h);
    return 0;
}

int lam_cell_equal(const lam_view_t *v, const lam_cell_t *a, const lam_cell_t *b)
{
    if (a->count != b->count || a->nmetrics != b->nmetrics)
        return 0;
    for (size_t i = 0; i < v->nmetrics; i++) {
        const cell_metric_t *x = &a->m[i], *y = &b->m[i];
        if (v->metrics[i].kind == LAM_METRIC_DISTINCT) {
            if (!x->u.hll || !y->u.hll) {
                if (x->u.hll != y->u.hll)
                    return 0;
            } else if (!lam_hll_equal(x->u.hll, y->u.hll)) {
                return 0;
            }
        } else if (v->metrics[i].kind != LAM_METRIC_COUNT && (x->flags != y->flags || x->u.v != y->u.v)) {
            return 0;
        }
    }
    return 1;
}

static void put_le(lam_buf_t *out, uint64_t v, int n)
{
    uint8_t b[8];
    for (int i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    lam_buf_append(out, b, (size_t)n);
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void lam_cell_serialize(const lam_view_t *v, const lam_cell_t *c, lam_buf_t *out)
{
    lam_buf_append_char(out, BLOB_VERSION);
    lam_buf_append_char(out, (char)v->nmetrics);
    put_le(out, (uint64_t)c->count, 8);
    for (size_t i = 0; i < v->nmetrics; i++) {
        const cell_metric_t *cm = &c->m[i];
        lam_buf_append_char(out, (char)v->metrics[i].kind);
        switch (v->metrics[i].kind) {
        case LAM_METRIC_COUNT:
            break;
        case LAM_METRIC_DISTINCT:
            if (!cm->u.hll) {
                put_le(out, 0, 4);
            } else {
                size_t at = out->len;
                put_le(out, 0, 4);
                lam_hll_to_redis(cm->u.hll, out);
                uint32_t n = (uint32_t)(out->len - at - 4);
                for (int k = 0; k < 4; k++)
                    out->data[at + (size_t)k] = (char)(n >> (8 * k));
            }
            break;
        default:
            lam_buf_append_char(out, (char)cm->flags);
            put_le(out, (uint64_t)cm->u.v, 8);
        }
    }
}

int lam_agg_merge_blob(lam_agg_t *a, size_t view, int64_t ts, const char *key, size_t key_len,
                       const void *blob, size_t len, char *errstr, size_t errstr_size)
{
    const lam_view_t *v = lam_views_get(a->views, view);
    const uint8_t *p = blob, *end = p + len;
    const char *why = NULL;
    if (!v) {
        why = "no such view";
        goto bad;
    }
    size_t sz = sizeof(lam_cell_t) + v->nmetrics * sizeof(cell_metric_t);
    lam_cell_t *tmp = lam_calloc(1, sz);
    tmp->nmetrics = (uint32_t)v->nmetrics;
    if (len < 10 || p[0] != BLOB_VERSION || p[1] != v->nmetrics) {
        why = "bad header or metric count";
        goto bad_tmp;
    }
    tmp->count = (int64_t)get_le(p + 2, 8);
    p += 10;
    for (size_t i = 0; i < v->nmetrics; i++) {
        if (p >= end || *p != v->metrics[i].kind) {
            why = "metric kinds differ from the view";
            goto bad_tmp;
        }
        p++;
        cell_metric_t *cm = &tmp->m[i];
        if (v->metrics[i].kind == LAM_METRIC_COUNT)
            continue;
        if (v->metrics[i].kind == LAM_METRIC_DISTINCT) {
            if (end - p < 4) {
                why = "truncated";
                goto bad_tmp;
            }
            uint32_t n = (uint32_t)get_le(p, 4);
            p += 4;
            if ((size_t)(end - p) < n) {
                why = "truncated";
                goto bad_tmp;
            }
            if (n) {
                cm->u.hll = lam_hll_new();
                if (lam_hll_merge_redis_blob(cm->u.hll, p, n, NULL, 0)) {
                    why = "corrupt HyperLogLog";
                    goto bad_tmp;
                }
            }
            p += n;
            continue;
        }
        if (end - p < 9 || (p[0] & ~(F_HAS | F_OVERFLOW))) {
            why = "truncated or bad flags";
            goto bad_tmp;
        }
        cm->flags = p[0];
        cm->u.v = (int64_t)get_le(p + 1, 8);
        p += 9;
    }
    if (p != end) {
        why = "trailing bytes";
        goto bad_tmp;
    }
    lam_cell_merge(v, lam_agg_get(a, view, ts, key, key_len), tmp);
    for (size_t i = 0; i < v->nmetrics; i++)
        if (v->metrics[i].kind == LAM_METRIC_DISTINCT)
            lam_hll_free(tmp->m[i].u.hll);
    lam_free(tmp);
    return 0;
bad_tmp:
    for (size_t i = 0; i < v->nmetrics; i++)
        if (v->metrics[i].kind == LAM_METRIC_DISTINCT)
            lam_hll_free(tmp->m[i].u.hll);
    lam_free(tmp);
bad:
    if (errstr && errstr_size)
        snprintf(errstr, errstr_size, "cell blob: %s", why);
    return -1;
}

int lam_agg_merge(lam_agg_t *dst, const lam_agg_t *src)
{
    if (dst == src || dst->views != src->views)
        return -1;
    size_t it = 0;
    lam_cell_t *c;
    while ((c = lam_agg_next(src, &it))) {
        lam_cell_t *d = get_h(dst, c->view, c->ts, cell_keyp(c), c->key_len, c->hash);
        lam_cell_merge(lam_views_get(dst->views, c->view), d, c);
    }
    size_t n = lam_views_total_metrics(dst->views);
    for (size_t i = 0; i < n; i++)
        dst->skipped[i] += src->skipped[i];
    return 0;
}

uint64_t lam_agg_skipped(const lam_agg_t *a, size_t view, size_t metric)
{
    const lam_view_t *v = lam_views_get(a->views, view);
    if (!v || metric >= v->nmetrics)
        return 0;
    return a->skipped[lam_views_metric_base(a->views, view) + metric];
}

int lam_agg_rollup(lam_agg_t *dst, const lam_agg_t *src, size_t view, lam_gran_t to, char *errstr,
                   size_t errstr_size)
{
    const lam_view_t *v = lam_views_get(src->views, view);
    if (!v || dst == src || dst->views != src->views) {
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "rollup: bad arguments");
        return -1;
    }
    if (to < v->granularity || to > LAM_GRAN_ALL) {
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "granularity: %s is finer than view \"%s\" (%s)", lam_gran_name(to),
                     v->name, lam_gran_name(v->granularity));
        return -1;
    }
    size_t it = 0;
    lam_cell_t *c;
    while ((c = lam_agg_next(src, &it))) {
        if (c->view != view)
            continue;
        lam_cell_t *d = lam_agg_get(dst, view, lam_time_floor(c->ts, to), cell_keyp(c), c->key_len);
        lam_cell_merge(v, d, c);
    }
    return 0;
}

/* ---- fixed point ---- */

int lam_agg_micro_parse(const char *text, size_t len, int64_t *micro)
{
    return lam_event_micro_from_text(text, len, micro);
}

size_t lam_agg_micro_format(int64_t micro, char out[LAM_AGG_MICRO_MAXLEN])
{
    uint64_t u = micro < 0 ? (uint64_t)0 - (uint64_t)micro : (uint64_t)micro;
    uint64_t ip = u / 1000000, fp = u % 1000000;
    char tmp[LAM_AGG_MICRO_MAXLEN];
    size_t w = sizeof(tmp);
    if (fp) {
        int digits = 6;
        while (fp % 10 == 0) {
            fp /= 10;
            digits--;
        }
        for (int i = 0; i < digits; i++) {
            tmp[--w] = (char)('0' + fp % 10);
            fp /= 10;
        }
        tmp[--w] = '.';
    }
    do {
        tmp[--w] = (char)('0' + ip % 10);
        ip /= 10;
    } while (ip);
    if (micro < 0)
        tmp[--w] = '-';
    size_t n = sizeof(tmp) - w;
    memcpy(out, tmp + w, n);
    out[n] = '\0';
    return n;
}

void lam_agg_append_micro(lam_buf_t *out, int64_t micro)
{
    char tmp[LAM_AGG_MICRO_MAXLEN];
    size_t n = lam_agg_micro_format(micro, tmp);
    lam_buf_append(out, tmp, n);
}
