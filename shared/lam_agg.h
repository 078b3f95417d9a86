/* lam_agg.h - apply events to views: group keys, fixed-point metrics, cells, merge, roll-up. */
#ifndef LAM_AGG_H
#define LAM_AGG_H

#include <stddef.h>
#include <stdint.h>

#include "lam_buf.h"
#include "lam_event.h"
#include "lam_hll.h"
#include "lam_time.h"
#include "lam_view.h"

#define LAM_AGG_MICRO_MAXLEN 24 /* "-9223372036854.775808" + NUL, rounded up */

/** Aggregation state: hash table (view, bucket ts, group key) -> cell. Not thread-safe. */
typedef struct lam_agg lam_agg_t;
/**
 * One cell: count plus one slot per metric of its view. Pointers into an agg stay valid only
 * until the next call that may add cells to that agg (add_event, get, merge, merge_blob, rollup).
 */
typedef struct lam_cell lam_cell_t;

/** State of a sum/min/max slot. */
typedef enum lam_cell_status {
    LAM_CELL_EMPTY = 0,   /* no numeric value contributed */
    LAM_CELL_VALUE = 1,   /* *micro holds the value */
    LAM_CELL_OVERFLOW = 2 /* sum left the int64 micro range (sticky) */
} lam_cell_status_t;

/** A decoded group-key value; val points into the key or the caller's scratch buffer. */
typedef struct lam_keyval {
    lam_val_type_t type; /* NULL, FALSE, TRUE, NUMBER (canonical text) or STRING (decoded) */
    const char *val;
    size_t len;
} lam_keyval_t;

/** New empty agg for views (borrowed: views must outlive the agg). Free with lam_agg_free. */
lam_agg_t *lam_agg_new(const lam_views_t *views);
/** Free the agg, its cells and their HLLs; accepts NULL. */
void lam_agg_free(lam_agg_t *agg);
/** Drop every cell and counter, keeping the allocations for reuse. */
void lam_agg_reset(lam_agg_t *agg);
const lam_views_t *lam_agg_views(const lam_agg_t *agg);
/**
 * The fields the views read, as a projection for lam_event_parse_projected (owned by the agg);
 * NULL when there are too many names (parse in full). lam_agg_add_event takes an event parsed
 * with it without looking its fields up.
 */
const lam_event_proj_t *lam_agg_projection(const lam_agg_t *agg);

/**
 * Apply one event to every view: where filter, UTC bucket of ev->ts_ms at the view's
 * granularity, group key, then count/sum/min/max/distinct updates. No allocation once the
 * cell exists. Returns the number of views the event matched.
 */
int lam_agg_add_event(lam_agg_t *agg, const lam_event_t *ev);

/**
 * Pipelined apply, for long scans (the batch recompute): the same result as lam_agg_add_event on
 * each kept event in push order, with several events in flight so that their cache misses overlap.
 * lam_agg_pipe_begin sets the filter (NULL: keep all); then per event: parse into
 * lam_agg_pipe_event(agg) (owned by the agg, valid until the next push; not pushing it is fine),
 * then lam_agg_pipe_push(agg, tag). A few pushes later, in push order, keep(opaque, ev, tag) is
 * called and the event applied when it returns 1. lam_agg_pipe_drain finishes every pushed event;
 * call it before reading, merging or freeing the filter's state. lam_agg_reset drops pushed events.
 */
typedef int (*lam_agg_keep_fn)(void *opaque, const lam_event_t *ev, uint64_t tag);
typedef struct lam_agg_pipe lam_agg_pipe_t;
void lam_agg_pipe_begin(lam_agg_t *agg, lam_agg_keep_fn keep, void *opaque);
lam_event_t *lam_agg_pipe_event(lam_agg_t *agg);
void lam_agg_pipe_push(lam_agg_t *agg, uint64_t tag);
void lam_agg_pipe_drain(lam_agg_t *agg);

/** Number of cells. */
size_t lam_agg_size(const lam_agg_t *agg);
/** Heap bytes used (cells, table, HLLs). */
size_t lam_agg_memory(const lam_agg_t *agg);
/** Iterate in insertion order: set *iter = 0, call until NULL. */
lam_cell_t *lam_agg_next(const lam_agg_t *agg, size_t *iter);
/** Find a cell; NULL if absent. */
lam_cell_t *lam_agg_find(const lam_agg_t *agg, size_t view, int64_t ts, const char *key, size_t key_len);
/** Find or create an empty cell (view must be a valid index). */
lam_cell_t *lam_agg_get(lam_agg_t *agg, size_t view, int64_t ts, const char *key, size_t key_len);
/** dst += src, cell by cell (and skipped counters). Both must use the same views. 0 or -1. */
int lam_agg_merge(lam_agg_t *dst, const lam_agg_t *src);
/** Values skipped by metric (view, metric): non-numeric or out of range for sum/min/max. */
uint64_t lam_agg_skipped(const lam_agg_t *agg, size_t view, size_t metric);
/**
 * Re-bucket the cells of one view of src to granularity 'to' (>= the view's; minute, hour, day,
 * week = ISO week from Monday 00:00 UTC, month = calendar month UTC, all = bucket ts 0) and merge
 * them into dst (same views, dst != src). Returns 0 or -1 with a message.
 */
int lam_agg_rollup(lam_agg_t *dst, const lam_agg_t *src, size_t view, lam_gran_t to, char *errstr,
                   size_t errstr_size);
/**
 * Deserialize a cell blob (lam_cell_serialize) and merge it into the agg's cell
 * (view, ts, key). Returns 0, or -1 with a message when the blob is corrupt or does not fit
 * the view's metrics (agg unchanged).
 */
int lam_agg_merge_blob(lam_agg_t *agg, size_t view, int64_t ts, const char *key, size_t key_len,
                       const void *blob, size_t len, char *errstr, size_t errstr_size);

/**
 * Merge one value of the speed layer's Redis layout (shared/STORAGE.md) into cell (view, ts, key):
 * m = 0 adds micro to the count; m = 1+i merges metric i (sum, min or max) as a partial state
 * holding micro (st = LAM_CELL_VALUE) or an overflowed sum (st = LAM_CELL_OVERFLOW).
 * Returns 0, or -1 (agg unchanged) when m does not name a count, sum, min or max slot.
 */
int lam_agg_merge_rt(lam_agg_t *agg, size_t view, int64_t ts, const char *key, size_t key_len, size_t m,
                     lam_cell_status_t st, int64_t micro);
/**
 * Merge a Redis HyperLogLog string (dense or sparse) into distinct metric `metric` of cell
 * (view, ts, key). Returns 0, or -1 with a message (agg unchanged) when the blob is corrupt or
 * the metric is not distinct.
 */
int lam_agg_merge_hll_redis(lam_agg_t *agg, size_t view, int64_t ts, const char *key, size_t key_len,
                            size_t metric, const void *blob, size_t len, char *errstr, size_t errstr_size);

/* ---- cells ---- */
size_t lam_cell_view(const lam_cell_t *c);
int64_t lam_cell_ts(const lam_cell_t *c);
/** Group key bytes (canonical JSON array), owned by the agg. */
const char *lam_cell_key(const lam_cell_t *c, size_t *len);
int64_t lam_cell_count(const lam_cell_t *c);
/** Sum/min/max of metric index m (must be of that kind) in micro-units. */
lam_cell_status_t lam_cell_sum(const lam_cell_t *c, size_t m, int64_t *micro);
lam_cell_status_t lam_cell_min(const lam_cell_t *c, size_t m, int64_t *micro);
lam_cell_status_t lam_cell_max(const lam_cell_t *c, size_t m, int64_t *micro);
/** HLL of a distinct metric, NULL when no value was added. Owned by the cell. */
const lam_hll_t *lam_cell_hll(const lam_cell_t *c, size_t m);
/** Remember every distinct metric's count in its cells (lam_hll_count_cache): for aggs read often, changed never. */
void lam_agg_cache_counts(lam_agg_t *a);
/**
 * Append metric m's value as JSON: count and distinct (estimate) as integers, sum/min/max as
 * decimals (19.99), null when empty or overflowed.
 */
void lam_cell_append_metric_json(const lam_view_t *v, const lam_cell_t *c, size_t m, lam_buf_t *out);
/** dst ⊕= src (same view): counts and sums add, min/max, HLL register max. */
void lam_cell_merge(const lam_view_t *v, lam_cell_t *dst, const lam_cell_t *src);
/** Append the compact binary form of the cell's state (not its key/ts) to out. */
void lam_cell_serialize(const lam_view_t *v, const lam_cell_t *c, lam_buf_t *out);
/** 1 when both cells hold identical state (count, sums, min, max, HLL registers). */
int lam_cell_equal(const lam_view_t *v, const lam_cell_t *a, const lam_cell_t *b);

/* ---- group keys ---- */
/**
 * Append the event's group key for view v to out: the compact canonical JSON array of the
 * group_by values, absent fields as null (`["sword",null]`, `[]` without group_by).
 */
void lam_agg_group_key(const lam_view_t *v, const lam_event_t *ev, lam_buf_t *out);
/** The same from the group_by fields already looked up (fs[i] for group_by[i], NULL when absent). */
void lam_agg_group_key_fields(const lam_view_t *v, const lam_field_t *const *fs, lam_buf_t *out);
/**
 * Decode a group key into at most max values (*n set). Strings are decoded into scratch
 * (cleared first); pointers stay valid until scratch changes. Returns 0 or -1 if malformed.
 */
int lam_agg_key_decode(const char *key, size_t len, lam_keyval_t *vals, size_t max, size_t *n,
                       lam_buf_t *scratch);
/**
 * For the speed layer: when v matches ev, set *bucket_ts, append the group key to key and
 * return 1; else return 0.
 */
int lam_agg_event_cell(const lam_view_t *v, const lam_event_t *ev, int64_t *bucket_ts, lam_buf_t *key);

/* ---- fixed point ---- */
/** Decimal/JSON number text -> micro-units, exactly rounded half to even. 0 or -1. */
int lam_agg_micro_parse(const char *text, size_t len, int64_t *micro);
/** Shortest decimal text of a micro value (99.5, 19.99, -3, 0.000001). Returns the length. */
size_t lam_agg_micro_format(int64_t micro, char out[LAM_AGG_MICRO_MAXLEN]);
void lam_agg_append_micro(lam_buf_t *out, int64_t micro);

#endif
