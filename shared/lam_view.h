/* lam_view.h - the views file: load, validate (DESIGN §2), match events, render definitions. */
#ifndef LAM_VIEW_H
#define LAM_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "lam_buf.h"
#include "lam_event.h"
#include "lam_time.h"

#define LAM_VIEW_NAME_MAX 63
#define LAM_VIEW_GROUP_MAX 4

typedef enum lam_metric_kind {
    LAM_METRIC_COUNT = 0,
    LAM_METRIC_SUM,
    LAM_METRIC_MIN,
    LAM_METRIC_MAX,
    LAM_METRIC_DISTINCT
} lam_metric_kind_t;

/** A compiled reference to an event field (name NUL-terminated and zero-padded by 8 bytes, hash precomputed). */
typedef struct lam_fieldref {
    char *name;
    size_t len;
    uint32_t hash;
} lam_fieldref_t;

typedef struct lam_metric {
    lam_metric_kind_t kind;
    lam_fieldref_t field; /* unused for count */
    char *text;           /* as written: "count", "sum:price" */
} lam_metric_t;

/** One accepted value of a where clause: type plus canonical bytes (numbers canonical text). */
typedef struct lam_where_value {
    lam_val_type_t type;
    char *val;
    size_t len;
} lam_where_value_t;

typedef struct lam_where {
    lam_fieldref_t field;
    lam_where_value_t *values;
    size_t nvalues;
    int is_list; /* written as a list (rendering only) */
} lam_where_t;

/** One view definition. Read-only for users; owned by its lam_views_t. */
typedef struct lam_view {
    size_t index; /* position in the file */
    char *name;
    char *description; /* NULL when absent */
    lam_where_t *where;
    size_t nwhere;
    lam_fieldref_t group_by[LAM_VIEW_GROUP_MAX];
    size_t ngroup;
    lam_gran_t granularity;
    lam_metric_t *metrics;
    size_t nmetrics;
} lam_view_t;

typedef struct lam_views lam_views_t;

/**
 * Parse and validate a views document json[0..len). source_name prefixes error messages
 * (e.g. "views.json"). Returns a new object (free with lam_views_free) or NULL with a message
 * naming the view and the field: `views.json: view "x": unknown metric "avg:price"`.
 */
lam_views_t *lam_views_parse(const char *json, size_t len, const char *source_name, char *errstr,
                             size_t errstr_size);
/** Read and parse a views file; errors are prefixed with path. */
lam_views_t *lam_views_load(const char *path, char *errstr, size_t errstr_size);
/** Free; accepts NULL. */
void lam_views_free(lam_views_t *vs);

size_t lam_views_count(const lam_views_t *vs);
/** View i (0-based) or NULL. Owned by vs. */
const lam_view_t *lam_views_get(const lam_views_t *vs, size_t i);
/** View by name (len bytes) or NULL. Owned by vs. */
const lam_view_t *lam_views_find(const lam_views_t *vs, const char *name, size_t len);
/** Total number of metrics over all views (for per-metric counters). */
size_t lam_views_total_metrics(const lam_views_t *vs);
/** Index of view v's first metric in the flat numbering of lam_views_total_metrics. */
size_t lam_views_metric_base(const lam_views_t *vs, size_t view_index);

/** Index of a metric by its text ("sum:price") in view v, or -1. */
int lam_view_metric_index(const lam_view_t *v, const char *text, size_t len);
/** Static name of a metric kind ("count", "sum", ...). */
const char *lam_metric_kind_name(lam_metric_kind_t k);

/** Resolve a field reference on an event; NULL when absent. Owned by the event. */
static inline const lam_field_t *lam_view_field(const lam_event_t *ev, const lam_fieldref_t *ref)
{
    return lam_event_get_padded(ev, ref->name, ref->len, ref->hash);
}
/** 1 when the event passes the view's where clause (absent fields compare as null). */
int lam_view_match(const lam_view_t *v, const lam_event_t *ev);
/** 1 when field f (NULL when absent: compares as null) passes one condition w of a where clause. */
static inline int lam_where_match(const lam_where_t *w, const lam_field_t *f)
{
    lam_val_type_t ft = f ? (lam_val_type_t)f->type : LAM_VAL_NULL;
    for (size_t k = 0; k < w->nvalues; k++) {
        const lam_where_value_t *wv = &w->values[k];
        if (wv->type != ft)
            continue;
        if (ft == LAM_VAL_NULL || ft == LAM_VAL_TRUE || ft == LAM_VAL_FALSE)
            return 1;
        if (f->val_len == wv->len && lam_event_bytes_eq_(f->val, wv->val, wv->len))
            return 1;
    }
    return 0;
}
/** 1 when views a and b have the same where clause (same conditions in the same order). */
int lam_view_where_equal(const lam_view_t *a, const lam_view_t *b);

/** Append {"views":[...]} (the validated definitions, canonical JSON) to out. */
void lam_views_to_json(const lam_views_t *vs, lam_buf_t *out);
/** Append one view definition object to out. */
void lam_view_to_json(const lam_view_t *v, lam_buf_t *out);

#endif
