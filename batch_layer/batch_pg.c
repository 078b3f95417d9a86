/* batch_pg.c - PostgreSQL side of runs: request/claim, progress, COPY of view rows and the one-transaction publish. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "lam_agg.h"
#include "lam_log.h"
#include "lam_mem.h"
#include "lam_pg.h"
#include "lam_service.h"
#include "lam_store.h"

#define BATCH_RUN_LOCK_KEY "7236006"     /* pg advisory lock held by the live run executor */

static int rollback(PGconn *pg);

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int batch_pg_prepare(PGconn *pg, char *errstr, size_t errstr_size)
{
    /*
     * Cell states are mostly HLL registers that pglz hardly shrinks (about 10 %) but compresses slowly:
     * with compression, COPY of a run's rows took 10x longer. EXTERNAL keeps large states out of line,
     * uncompressed. Changing it only touches the catalog; it is done once (the check takes no lock).
     */
    PGresult *res = lam_pg_query(pg,
                                 "SELECT attstorage FROM pg_attribute WHERE attrelid = 'lam_view_rows'::regclass"
                                 " AND attname = 'state'",
                                 0, NULL, errstr, errstr_size);
    if (!res)
        return -1;
    int external = PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "e");
    PQclear(res);
    if (external)
        return 0;
    return lam_pg_exec(pg, "ALTER TABLE lam_view_rows ALTER COLUMN state SET STORAGE EXTERNAL", 0, NULL, errstr,
                       errstr_size);
}

int batch_pg_request_run(PGconn *pg, int64_t *run, char *errstr, size_t errstr_size)
{
    int created;
    *run = lam_store_pg_request_run(pg, &created, errstr, errstr_size);
    return *run < 0 ? -1 : 0;
}

int batch_pg_claim(PGconn *pg, int64_t *run, char *errstr, size_t errstr_size)
{
    PGresult *res = lam_pg_query(pg,
                                 "UPDATE lam_runs SET status = 'running', started_at = now(), records = 0,"
                                 " records_total = 0, skipped = 0, error = NULL"
                                 " WHERE run = (SELECT min(run) FROM lam_runs WHERE status = 'requested')"
                                 " AND status = 'requested' RETURNING run",
                                 0, NULL, errstr, errstr_size);
    if (!res)
        return -1;
    int n = PQntuples(res);
    if (n)
        *run = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n > 0;
}

int batch_pg_lock(PGconn *pg, char *errstr, size_t errstr_size)
{
    PGresult *res = lam_pg_query(pg, "SELECT pg_try_advisory_lock(" BATCH_RUN_LOCK_KEY ")", 0, NULL, errstr,
                                 errstr_size);
    if (!res)
        return -1;
    int got = !strcmp(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    return got;
}

int batch_pg_fail_stale(PGconn *pg, int64_t except, char *errstr, size_t errstr_size)
{
    char ex[32];
    snprintf(ex, sizeof(ex), "%" PRId64, except);
    const char *p[] = {ex};
    PGresult *res = lam_pg_query(pg,
                                 "UPDATE lam_runs SET status = 'failed', finished_at = now(),"
                                 " error = 'batch_layer stopped during the run (crash or kill)'"
                                 " WHERE status = 'running' AND run <> $1::bigint",
                                 1, p, errstr, errstr_size);
    if (!res)
        return -1;
    int n = atoi(PQcmdTuples(res));
    PQclear(res);
    return n;
}

int batch_pg_set_cut(PGconn *pg, int64_t run, const char *cut_json, char *errstr, size_t errstr_size)
{
    char r[32];
    snprintf(r, sizeof(r), "%" PRId64, run);
    const char *p[] = {r, cut_json};
    return lam_pg_exec(pg, "UPDATE lam_runs SET cut = $2::jsonb, cut_at = now() WHERE run = $1::bigint", 2, p,
                       errstr, errstr_size);
}

int batch_pg_progress(PGconn *pg, int64_t run, int64_t records, int64_t total, int64_t skipped, char *errstr,
                      size_t errstr_size)
{
    char r[32], a[32], b[32], c[32];
    snprintf(r, sizeof(r), "%" PRId64, run);
    snprintf(a, sizeof(a), "%" PRId64, records);
    snprintf(b, sizeof(b), "%" PRId64, total);
    snprintf(c, sizeof(c), "%" PRId64, skipped);
    const char *p[] = {r, a, b, c};
    return lam_pg_exec(pg,
                       "UPDATE lam_runs SET records = $2::bigint, records_total = $3::bigint, skipped = $4::bigint"
                       " WHERE run = $1::bigint AND status = 'running'",
                       4, p, errstr, errstr_size);
}

int batch_pg_fail(PGconn *pg, int64_t run, const char *reason, char *errstr, size_t errstr_size)
{
    char r[32];
    snprintf(r, sizeof(r), "%" PRId64, run);
    const char *p[] = {r, reason};
    return lam_pg_exec(pg,
                       "UPDATE lam_runs SET status = 'failed', finished_at = now(), error = $2"
                       " WHERE run = $1::bigint AND status IN ('running', 'requested')",
                       2, p, errstr, errstr_size);
}

/* ---- binary COPY ---- */

static void put_i16(lam_buf_t *b, int16_t v)
{
    uint16_t n = htons((uint16_t)v);
    lam_buf_append(b, &n, 2);
}
static void put_i32(lam_buf_t *b, int32_t v)
{
    uint32_t n = htonl((uint32_t)v);
    lam_buf_append(b, &n, 4);
}
static void put_i64_field(lam_buf_t *b, int64_t v)
{
    put_i32(b, 8);
    uint64_t u = (uint64_t)v;
    unsigned char be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (unsigned char)(u >> (56 - 8 * i));
    lam_buf_append(b, be, 8);
}
static void put_bytes_field(lam_buf_t *b, const void *data, size_t len)
{
    put_i32(b, (int32_t)len);
    lam_buf_append(b, data, len);
}

static int cell_cmp(const void *pa, const void *pb, void *arg)
{
    const lam_views_t *views = arg;
    const lam_cell_t *a = *(lam_cell_t *const *)pa, *b = *(lam_cell_t *const *)pb;
    if (lam_cell_view(a) != lam_cell_view(b))
        return strcmp(lam_views_get(views, lam_cell_view(a))->name, lam_views_get(views, lam_cell_view(b))->name);
    if (lam_cell_ts(a) != lam_cell_ts(b))
        return lam_cell_ts(a) < lam_cell_ts(b) ? -1 : 1;
    size_t la, lb;
    const char *ka = lam_cell_key(a, &la), *kb = lam_cell_key(b, &lb);
    int r = memcmp(ka, kb, la < lb ? la : lb);
    return r ? r : (la < lb ? -1 : la > lb);
}

static int copy_flush(PGconn *pg, lam_buf_t *b, char *errstr, size_t errstr_size)
{
    if (b->len && PQputCopyData(pg, b->data, (int)b->len) != 1) {
        snprintf(errstr, errstr_size, "postgresql: COPY: %s", PQerrorMessage(pg));
        return -1;
    }
    lam_buf_clear(b);
    return 0;
}

static int rollback(PGconn *pg)
{
    char e[256];
    lam_pg_exec(pg, "ROLLBACK", 0, NULL, e, sizeof(e));
    return -1;
}

int batch_pg_publish(PGconn *pg, int64_t run, const lam_agg_t *agg, int64_t records, int64_t skipped,
                     char *errstr, size_t errstr_size)
{
    char r[32], rec[32], sk[32], nrows[32];
    snprintf(r, sizeof(r), "%" PRId64, run);
    snprintf(rec, sizeof(rec), "%" PRId64, records);
    snprintf(sk, sizeof(sk), "%" PRId64, skipped);
    snprintf(nrows, sizeof(nrows), "%zu", lam_agg_size(agg));
    const char *p1[] = {r};
    int64_t t0 = now_us();
    if (lam_pg_exec(pg, "BEGIN", 0, NULL, errstr, errstr_size) < 0)
        return -1;
    /* Leftovers of an earlier attempt at the same run number (never published). */
    if (lam_pg_exec(pg, "DELETE FROM lam_view_rows WHERE run = $1::bigint", 1, p1, errstr, errstr_size) < 0)
        return rollback(pg);
    PGresult *res = PQexec(pg, "COPY lam_view_rows (run, view, bucket, gkey, count, state) FROM STDIN (FORMAT binary)");
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        snprintf(errstr, errstr_size, "postgresql: COPY: %s", PQresultErrorMessage(res));
        PQclear(res);
        return rollback(pg);
    }
    PQclear(res);
    const lam_views_t *views = lam_agg_views(agg);
    lam_buf_t b = LAM_BUF_INIT, state = LAM_BUF_INIT;
    lam_buf_append(&b, "PGCOPY\n\377\r\n\0", 11);
    put_i32(&b, 0);
    put_i32(&b, 0);
    /* Rows in primary-key order: the index is then filled left to right (much faster COPY). */
    size_t ncells = lam_agg_size(agg), it = 0, ci = 0;
    lam_cell_t **cells = lam_malloc((ncells ? ncells : 1) * sizeof(*cells)), *c;
    while ((c = lam_agg_next(agg, &it)) && ci < ncells)
        cells[ci++] = c;
    ncells = ci;
    qsort_r(cells, ncells, sizeof(*cells), cell_cmp, (void *)views);
    int rc = 0;
    for (ci = 0; ci < ncells; ci++) {
        c = cells[ci];
        const lam_view_t *v = lam_views_get(views, lam_cell_view(c));
        size_t klen;
        const char *key = lam_cell_key(c, &klen);
        lam_buf_clear(&state);
        lam_cell_serialize(v, c, &state);
        put_i16(&b, 6);
        put_i64_field(&b, run);
        put_bytes_field(&b, v->name, strlen(v->name));
        put_i64_field(&b, lam_cell_ts(c));
        put_bytes_field(&b, key, klen);
        put_i64_field(&b, lam_cell_count(c));
        put_bytes_field(&b, state.data, state.len);
        if (b.len >= (1 << 20) && (rc = copy_flush(pg, &b, errstr, errstr_size)) < 0)
            break;
    }
    lam_free(cells);
    if (!rc) {
        put_i16(&b, -1);
        rc = copy_flush(pg, &b, errstr, errstr_size);
    }
    lam_buf_free(&b);
    lam_buf_free(&state);
    if (PQputCopyEnd(pg, rc ? "aborted" : NULL) != 1) {
        snprintf(errstr, errstr_size, "postgresql: COPY end: %s", PQerrorMessage(pg));
        rc = -1;
    }
    while ((res = PQgetResult(pg))) {
        if (!rc && PQresultStatus(res) != PGRES_COMMAND_OK) {
            snprintf(errstr, errstr_size, "postgresql: COPY: %s", PQresultErrorMessage(res));
            rc = -1;
        }
        PQclear(res);
    }
    if (rc)
        return rollback(pg);
    char *nl;
    if ((nl = strchr(errstr, '\n')))
        *nl = '\0';
    int64_t t1 = now_us();
    /* Publish: readers select the published run, so these three become visible together. */
    res = lam_pg_query(pg,
                       "UPDATE lam_runs SET status = 'succeeded', finished_at = clock_timestamp(), records = $2::bigint,"
                       " records_total = $2::bigint, skipped = $3::bigint, view_rows = $4::bigint"
                       " WHERE run = $1::bigint AND status = 'running'",
                       4, (const char *[]){r, rec, sk, nrows}, errstr, errstr_size);
    if (!res)
        return rollback(pg);
    int updated = atoi(PQcmdTuples(res));
    PQclear(res);
    if (updated != 1) {
        snprintf(errstr, errstr_size, "run %s is no longer running (marked failed meanwhile)", r);
        return rollback(pg);
    }
    if (lam_pg_exec(pg,
                    "INSERT INTO lam_published (singleton, run, published_at) VALUES (true, $1::bigint, clock_timestamp())"
                    " ON CONFLICT (singleton) DO UPDATE SET run = EXCLUDED.run, published_at = EXCLUDED.published_at"
                    " WHERE lam_published.run < EXCLUDED.run",
                    1, p1, errstr, errstr_size) < 0 ||
        lam_pg_exec(pg, "SELECT pg_notify('" LAM_STORE_NOTIFY_PUBLISHED "', $1)", 1, p1, errstr, errstr_size) < 0 ||
        lam_pg_exec(pg, "COMMIT", 0, NULL, errstr, errstr_size) < 0)
        return rollback(pg);
    int64_t t2 = now_us();
    lam_info("msg=\"rows loaded and published\" run=%s view_rows=%s copy_ms=%.3f rows_per_s=%.0f publish_ms=%.3f", r,
             nrows, (double)(t1 - t0) / 1000.0, t1 > t0 ? (double)lam_agg_size(agg) * 1e6 / (double)(t1 - t0) : 0.0,
             (double)(t2 - t1) / 1000.0);
    return 0;
}

int batch_pg_cleanup(PGconn *pg, int64_t run, char *errstr, size_t errstr_size)
{
    char r[32];
    snprintf(r, sizeof(r), "%" PRId64, run);
    const char *p[] = {r};
    return lam_pg_exec(pg,
                       "DELETE FROM lam_view_rows WHERE run < $1::bigint AND run <> COALESCE((SELECT max(run) FROM"
                       " lam_runs WHERE status = 'succeeded' AND run < $1::bigint), -1)",
                       1, p, errstr, errstr_size);
}
