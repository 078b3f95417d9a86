/* lam_store.h - the storage contract (shared/STORAGE.md): Redis key names and the PostgreSQL schema. */
#ifndef LAM_STORE_H
#define LAM_STORE_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "lam_buf.h"

#define LAM_STORE_CURRENT_KEY "lam:batch:current"  /* newest published batch run */
#define LAM_STORE_EPOCHS_KEY "lam:rt:epochs"       /* zset of epochs holding real-time data */
#define LAM_STORE_TAIL_KEY "lam:tail"              /* stream of recent events */
#define LAM_STORE_NOTIFY_RUNS "lam_batch_runs"     /* NOTIFY channel: a run was requested */
#define LAM_STORE_NOTIFY_PUBLISHED "lam_batch_published" /* NOTIFY channel: run k published */

/* Each builder clears out and writes one key (binary safe; out->len is the length). */
void lam_store_rt_hash_key(lam_buf_t *out, int64_t epoch, const char *view, int64_t bucket);
void lam_store_rt_hll_key(lam_buf_t *out, int64_t epoch, const char *view, int64_t bucket, size_t metric,
                          const char *gkey, size_t gkey_len);
void lam_store_rt_idx_key(lam_buf_t *out, int64_t epoch, const char *view);
void lam_store_rt_hidx_key(lam_buf_t *out, int64_t epoch, const char *view, int64_t bucket);
/** `lam:speed:{group}:{what}` for what = offsets | epochs | stats. */
void lam_store_speed_key(lam_buf_t *out, const char *group, const char *what);
void lam_store_dedup_key(lam_buf_t *out, const char *id, size_t id_len);

/** Hash field of a real-time cell value: `{m}:{groupkey}` (m = 0 count, 1+i metric i). */
void lam_store_rt_field(lam_buf_t *out, size_t m, const char *gkey, size_t gkey_len);
/** Split a field back; -1 when malformed. gkey points into f. */
int lam_store_rt_field_parse(const char *f, size_t len, size_t *m, const char **gkey, size_t *gkey_len);

/** Create lam's tables when missing (idempotent, safe to run concurrently). 0 or -1 with errstr. */
int lam_store_pg_migrate(PGconn *pg, char *errstr, size_t errstr_size);
/**
 * Request a batch run: in one transaction, serialised by an advisory lock, return the pending
 * 'requested' run if there is one (*created = 0), else insert run max(run)+1 as 'requested' and
 * NOTIFY LAM_STORE_NOTIFY_RUNS (*created = 1). Used by serving's POST /v1/batch/runs, the batch
 * layer's schedule and `batch_layer run`, so requests coalesce whoever makes them.
 * Returns the run number, or -1 with errstr (the transaction is rolled back).
 */
int64_t lam_store_pg_request_run(PGconn *pg, int *created, char *errstr, size_t errstr_size);
/** The published run k (0 when none yet) or -1 with errstr. */
int64_t lam_store_pg_published_run(PGconn *pg, char *errstr, size_t errstr_size);

#endif
