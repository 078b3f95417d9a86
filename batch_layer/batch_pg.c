/* batch_pg.c - PostgreSQL side of runs: request/claim, progress, COPY of view rows and the one-transaction publish. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
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

static int64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
static int64_t now_us(void)
{
    return clock_us(CLOCK_MONOTONIC);
}

/*
 * lam_view_rows is partitioned by run, one table per run (lam_view_rows_<k>). A run's rows are loaded
 * into a table created in the same transaction, without index (PostgreSQL skips its WAL with
 * wal_level=minimal), then indexed by one sorted build, and attached by the publish transaction:
 * per-row btree inserts into one big primary key cost PostgreSQL 2.5x the CPU. Dropping an old run is
 * DROP TABLE instead of DELETE.
 * Identifiers carry only the run number (an int64 of ours, never user text): DDL takes no parameters.
 */
#define PART_FMT "lam_view_rows_%" PRId64
#define BATCH_PG_HALVES 2 /* run k's table is partitioned by bucket into lam_view_rows_<k>_0 and _1 */

/* Statements without parameters, one at a time (the extended protocol takes one per call): 0 or -1. */
static int exec_all(PGconn *pg, const char *const *sql, int n, char *errstr, size_t errstr_size)
{
    for (int i = 0; i < n; i++)
        if (lam_pg_exec(pg, sql[i], 0, NULL, errstr, errstr_size) < 0)
            return -1;
    return 0;
}

/*
 * Create a run table (empty, not attached, no index) in the current transaction: `name` is run k's
 * table or one of its halves, `check` the half's bound on bucket (" AND bucket < s", "" for none).
 */
static int part_create(PGconn *pg, const char *name, int64_t run, const char *check, char *errstr,
                       size_t errstr_size)
{
    char create[512], storage[128];
    /*
     * CHECK (run = k AND the half's bound on bucket) lets ATTACH skip its validation scans: one
     * CHECK, not two, is one expression evaluated per row COPYed (~3 % less COPY CPU; PostgreSQL
     * splits its ANDs to prove a partition bound). Cell states are mostly HLL registers that
     * pglz hardly shrinks (about 10 %) but compresses slowly (COPY took 10x longer): EXTERNAL keeps
     * large states out of line, uncompressed. The fixed-width columns come first (a partition's
     * columns match the parent's by name, not position): no alignment padding after view, 96 instead
     * of 104 bytes a row for count-only cells. DEFAULT k: COPY leaves run out (5 % less COPY CPU,
     * 12 bytes a row less to send).
     */
    snprintf(create, sizeof(create),
             "CREATE TABLE %s (run bigint NOT NULL DEFAULT %" PRId64 ", bucket bigint NOT NULL,"
             " count bigint NOT NULL, view text NOT NULL, gkey text NOT NULL, state bytea NOT NULL,"
             " CHECK (run = %" PRId64 "%s))",
             name, run, run, check);
    snprintf(storage, sizeof(storage), "ALTER TABLE %s ALTER COLUMN state SET STORAGE EXTERNAL", name);
    return exec_all(pg, (const char *[]){create, storage}, 2, errstr, errstr_size);
}

/* Index a loaded run table (or half): one sorted build instead of a btree insert per row. */
static int part_index(PGconn *pg, const char *name, char *errstr, size_t errstr_size)
{
    char index[256];
    /*
     * (view, bucket): what serving's query selects on (one view, a range of buckets). A run has a few
     * hundred (view, bucket) keys, so the index deduplicates to a posting list of row ids per key: 4 MB
     * for 577k rows instead of 37 MB for a unique (view, bucket, gkey), 0.34 instead of 0.43 s CPU to
     * build, 33 MB less to fsync at the load's commit, and serving's range scan reads 5-9x fewer index
     * pages (1 hour 12.2 -> 7.9 ms, 6 hours 68 -> 46 ms). Rows are unique per (view, bucket, gkey) by
     * construction: they are the cells of one lam_agg, a hash table on that key.
     */
    snprintf(index, sizeof(index), "CREATE INDEX %s_view_bucket ON %s (view, bucket)", name, name);
    /*
     * One process: the rows come sorted, so a serial build's in-memory sort only checks the order. A
     * parallel build has each worker sort its share to a temporary file and the leader merge them:
     * twice the CPU (0.93 vs 0.43 s for 577k rows, unique index) and 33 MB of temporary writes, for
     * no faster a build on our 2 cores.
     */
    return exec_all(pg,
                    (const char *[]){"SET LOCAL maintenance_work_mem = '256MB'",
                                     "SET LOCAL max_parallel_maintenance_workers = 0", index},
                    3, errstr, errstr_size);
}

/* Attach run k's indexed table as lam_view_rows' partition for k (no scan: its CHECK implies the bound). */
static int part_attach(PGconn *pg, int64_t run, char *errstr, size_t errstr_size)
{
    char attach[256];
    snprintf(attach, sizeof(attach),
             "ALTER TABLE lam_view_rows ATTACH PARTITION " PART_FMT " FOR VALUES IN (%" PRId64 ")", run, run);
    return lam_pg_exec(pg, attach, 0, NULL, errstr, errstr_size);
}

/* Drop run k's table and halves left unattached by an attempt that never published (one query to look). */
static int part_drop_loose(PGconn *pg, int64_t run, char *errstr, size_t errstr_size)
{
    char names[3][64];
    snprintf(names[0], sizeof(names[0]), PART_FMT, run);
    snprintf(names[1], sizeof(names[1]), PART_FMT "_0", run);
    snprintf(names[2], sizeof(names[2]), PART_FMT "_1", run);
    const char *p[] = {names[0], names[1], names[2]};
    /* ordered: run k's table first, which takes the halves attached to it along */
    PGresult *res = lam_pg_query(pg,
                                 "SELECT c.relname FROM pg_class c WHERE c.oid IN (to_regclass($1), to_regclass($2),"
                                 " to_regclass($3)) AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)"
                                 " ORDER BY length(c.relname), c.relname",
                                 3, p, errstr, errstr_size);
    if (!res)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(res) && !rc; i++)
        for (int j = 0; j < 3; j++) /* our own name, not the catalog's text, goes into the DDL */
            if (!strcmp(PQgetvalue(res, i, 0), names[j])) {
                char sql[128];
                snprintf(sql, sizeof(sql), "DROP TABLE %s", names[j]);
                rc = lam_pg_exec(pg, sql, 0, NULL, errstr, errstr_size);
            }
    PQclear(res);
    return rc;
}

static int view_rows_partitioned(PGconn *pg, char *errstr, size_t errstr_size)
{
    PGresult *res = lam_pg_query(pg, "SELECT relkind FROM pg_class WHERE oid = 'lam_view_rows'::regclass", 0, NULL,
                                 errstr, errstr_size);
    if (!res)
        return -1;
    int p = PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "p");
    PQclear(res);
    return p;
}

int batch_pg_prepare(PGconn *pg, char *errstr, size_t errstr_size)
{
    int p = view_rows_partitioned(pg, errstr, errstr_size);
    if (p != 0)
        return p < 0 ? -1 : 0;
    /*
     * The shared schema creates lam_view_rows as one plain table: turn it into the partitioned one,
     * moving each run's rows into its own partition, in ONE transaction under the schema's advisory
     * lock (readers wait for it, then see the same rows).
     */
    if (lam_pg_exec(pg, "BEGIN", 0, NULL, errstr, errstr_size) < 0)
        return -1;
    if (lam_pg_exec(pg, "SELECT pg_advisory_xact_lock(7236001)", 0, NULL, errstr, errstr_size) < 0 ||
        (p = view_rows_partitioned(pg, errstr, errstr_size)) < 0)
        return rollback(pg);
    if (p)
        return lam_pg_exec(pg, "COMMIT", 0, NULL, errstr, errstr_size);
    const char *convert[] = {
        "LOCK TABLE lam_view_rows IN ACCESS EXCLUSIVE MODE",
        "ALTER TABLE lam_view_rows RENAME TO lam_view_rows_legacy",
        "CREATE TABLE lam_view_rows (run bigint NOT NULL, view text NOT NULL, bucket bigint NOT NULL,"
        " gkey text NOT NULL, count bigint NOT NULL, state bytea NOT NULL) PARTITION BY LIST (run)",
        "ALTER TABLE lam_view_rows ALTER COLUMN state SET STORAGE EXTERNAL",
    };
    if (exec_all(pg, convert, 4, errstr, errstr_size) < 0)
        return rollback(pg);
    PGresult *res = lam_pg_query(pg, "SELECT DISTINCT run FROM lam_view_rows_legacy", 0, NULL, errstr, errstr_size);
    if (!res)
        return rollback(pg);
    int rc = 0;
    for (int i = 0; i < PQntuples(res) && !rc; i++) {
        const char *rs = PQgetvalue(res, i, 0);
        int64_t run = strtoll(rs, NULL, 10);
        char sql[384];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO " PART_FMT " (run, view, bucket, gkey, count, state)"
                 " SELECT run, view, bucket, gkey, count, state FROM lam_view_rows_legacy"
                 " WHERE run = $1::bigint ORDER BY view, bucket, gkey",
                 run);
        char name[64];
        snprintf(name, sizeof(name), PART_FMT, run);
        rc = part_create(pg, name, run, "", errstr, errstr_size) < 0 ||
             lam_pg_exec(pg, sql, 1, &rs, errstr, errstr_size) < 0 || part_index(pg, name, errstr, errstr_size) < 0 ||
             part_attach(pg, run, errstr, errstr_size) < 0;
    }
    PQclear(res);
    if (rc || lam_pg_exec(pg, "DROP TABLE lam_view_rows_legacy", 0, NULL, errstr, errstr_size) < 0 ||
        lam_pg_exec(pg, "COMMIT", 0, NULL, errstr, errstr_size) < 0)
        return rollback(pg);
    lam_info("msg=\"lam_view_rows partitioned by run\"");
    return 0;
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

/* Big-endian stores into room already reserved; each returns the position after what it wrote. */
static char *at_be16(char *p, uint16_t v)
{
    v = htons(v);
    memcpy(p, &v, 2);
    return p + 2;
}
static char *at_be32(char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
    return p + 4;
}
static char *at_i64_field(char *p, int64_t v)
{
    uint64_t be = __builtin_bswap64((uint64_t)v);
    p = at_be32(p, 8);
    memcpy(p, &be, 8);
    return p + 8;
}
static char *at_bytes_field(char *p, const void *data, size_t len)
{
    p = at_be32(p, (uint32_t)len);
    memcpy(p, data, len);
    return p + len;
}

/*
 * The rows go out grouped by (view, bucket) in index order, the order of the run table's index: its
 * build's sort then only checks the order, and a range of buckets is a range of pages. Within a group
 * any order does (the index is not on gkey), so cells are counted per group and placed by a counting
 * sort: two passes instead of a comparison sort of all cells (0.2 s of the load's client CPU for 577k).
 */
typedef struct {
    uint32_t view_rank; /* rank of the view's name among the views */
    int64_t ts;
    size_t at;          /* cells counted, then where the group's cells start */
} cell_group_t;

typedef struct {
    cell_group_t *g;
    size_t n, cap;
    uint32_t *slot; /* open addressing: group index + 1, 0 empty */
    size_t nslots;  /* power of 2, > 2 n */
    int64_t split;  /* the bucket where half 1 starts */
} cell_groups_t;

static size_t groups_hash(uint32_t rank, int64_t ts, size_t mask)
{
    uint64_t h = ((uint64_t)ts ^ ((uint64_t)rank << 56)) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 32) & mask;
}

static void groups_grow(cell_groups_t *gs)
{
    size_t n = gs->nslots ? gs->nslots * 2 : 256;
    uint32_t *slot = lam_calloc(n, sizeof(*slot));
    for (size_t i = 0; i < gs->n; i++) {
        size_t h = groups_hash(gs->g[i].view_rank, gs->g[i].ts, n - 1);
        while (slot[h])
            h = (h + 1) & (n - 1);
        slot[h] = (uint32_t)i + 1;
    }
    lam_free(gs->slot);
    gs->slot = slot;
    gs->nslots = n;
}

/* Index of group (rank, ts), added when new. */
static uint32_t groups_of(cell_groups_t *gs, uint32_t rank, int64_t ts)
{
    if (2 * (gs->n + 1) > gs->nslots)
        groups_grow(gs);
    size_t h = groups_hash(rank, ts, gs->nslots - 1);
    for (; gs->slot[h]; h = (h + 1) & (gs->nslots - 1)) {
        cell_group_t *g = &gs->g[gs->slot[h] - 1];
        if (g->ts == ts && g->view_rank == rank)
            return gs->slot[h] - 1;
    }
    if (gs->n == gs->cap) {
        gs->cap = gs->cap ? gs->cap * 2 : 64;
        gs->g = lam_realloc(gs->g, gs->cap * sizeof(*gs->g));
    }
    gs->g[gs->n] = (cell_group_t){rank, ts, 0};
    gs->slot[h] = (uint32_t)gs->n + 1;
    return (uint32_t)gs->n++;
}

/* Groups in load order: those of half 0 (bucket below the split) first, each half by (view, bucket). */
static int group_idx_cmp(const void *pa, const void *pb, void *arg)
{
    const cell_groups_t *gs = arg;
    const cell_group_t *a = &gs->g[*(const uint32_t *)pa], *b = &gs->g[*(const uint32_t *)pb];
    int ha = a->ts >= gs->split, hb = b->ts >= gs->split;
    if (ha != hb)
        return ha - hb;
    if (a->view_rank != b->view_rank)
        return a->view_rank < b->view_rank ? -1 : 1;
    return a->ts < b->ts ? -1 : a->ts > b->ts;
}

typedef struct {
    int64_t ts;
    size_t n;
} bucket_count_t;

static int bucket_count_cmp(const void *pa, const void *pb)
{
    const bucket_count_t *a = pa, *b = pb;
    return a->ts < b->ts ? -1 : a->ts > b->ts;
}

/* The bucket that splits the ncells cells (counted per group) closest to in half: below it, and the rest. */
static int64_t split_bucket(const cell_groups_t *gs, size_t ncells)
{
    if (!gs->n)
        return 0;
    bucket_count_t *bc = lam_malloc(gs->n * sizeof(*bc));
    for (size_t i = 0; i < gs->n; i++)
        bc[i] = (bucket_count_t){gs->g[i].ts, gs->g[i].at};
    qsort(bc, gs->n, sizeof(*bc), bucket_count_cmp);
    int64_t best = bc[0].ts;
    size_t below = 0, best_off = ncells; /* |2 below - ncells| */
    for (size_t i = 0; i < gs->n; i++) {
        if (i == 0 || bc[i].ts != bc[i - 1].ts) {
            size_t off = 2 * below > ncells ? 2 * below - ncells : ncells - 2 * below;
            if (off < best_off) {
                best_off = off;
                best = bc[i].ts;
            }
        }
        below += bc[i].n;
    }
    lam_free(bc);
    return best;
}

/*
 * The agg's cells in load order: *n0 cells of half 0 (bucket below *split, the bucket that halves
 * them: split_bucket), then those of half 1, each half grouped by (view name, bucket) ascending; *n
 * in all (lam_free the array). Placed straight into their half: no second pass over the cells.
 */
static lam_cell_t **cells_in_groups(const lam_agg_t *agg, size_t *n, size_t *n0, int64_t *split)
{
    const lam_views_t *views = lam_agg_views(agg);
    size_t nviews = lam_views_count(views), ncells = lam_agg_size(agg), it = 0, ci = 0;
    uint32_t *rank = lam_calloc(nviews ? nviews : 1, sizeof(*rank));
    for (size_t i = 0; i < nviews; i++)
        for (size_t j = 0; j < nviews; j++)
            rank[i] += strcmp(lam_views_get(views, j)->name, lam_views_get(views, i)->name) < 0;
    lam_cell_t **cells = lam_malloc((ncells ? ncells : 1) * sizeof(*cells));
    uint32_t *gid = lam_malloc((ncells ? ncells : 1) * sizeof(*gid));
    cell_groups_t gs = {0};
    lam_cell_t *c;
    while ((c = lam_agg_next(agg, &it)) && ci < ncells) {
        gid[ci] = groups_of(&gs, rank[lam_cell_view(c)], lam_cell_ts(c));
        gs.g[gid[ci]].at++;
        cells[ci++] = c;
    }
    lam_free(rank);
    *split = gs.split = split_bucket(&gs, ci);
    uint32_t *byorder = lam_malloc((gs.n ? gs.n : 1) * sizeof(*byorder));
    for (size_t i = 0; i < gs.n; i++)
        byorder[i] = (uint32_t)i;
    qsort_r(byorder, gs.n, sizeof(*byorder), group_idx_cmp, &gs);
    size_t at = 0;
    *n0 = 0;
    for (size_t i = 0; i < gs.n; i++) {
        cell_group_t *g = &gs.g[byorder[i]];
        size_t cnt = g->at;
        g->at = at;
        at += cnt;
        if (g->ts < gs.split)
            *n0 = at;
    }
    lam_cell_t **out = lam_malloc((ci ? ci : 1) * sizeof(*out));
    for (size_t i = 0; i < ci; i++)
        out[gs.g[gid[i]].at++] = cells[i];
    lam_free(byorder);
    lam_free(gs.g);
    lam_free(gs.slot);
    lam_free(gid);
    lam_free(cells);
    *n = ci;
    return out;
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

/*
 * The publish transaction of run k (its table loaded and committed). Returns 0, -1 (rolled back), or 1
 * when the lock on lam_view_rows was not granted in time (rolled back; try again).
 */
static int publish_txn(PGconn *pg, int64_t run, const char *rec, const char *sk, const char *nrows, char *errstr,
                       size_t errstr_size)
{
    char r[32];
    snprintf(r, sizeof(r), "%" PRId64, run);
    const char *p1[] = {r};
    /*
     * ACCESS EXCLUSIVE on lam_view_rows for these few ms: ATTACH alone takes a lock that readers do not
     * wait for, and a reader planned before the commit (without partition k) but executed after it
     * (seeing lam_published = k) would read no rows of k. The lock waits for running readers; new ones
     * wait for the commit, then plan with partition k. A reader holding it long makes us retry.
     * ONLY the parent: every reader locks it first, and the run tables' own locks (autovacuum
     * analyzing the previous run holds one for seconds; it made a publish wait 0.5 s) do not
     * concern the publish.
     */
    if (lam_pg_exec(pg, "BEGIN", 0, NULL, errstr, errstr_size) < 0)
        return -1;
    if (lam_pg_exec(pg, "SET LOCAL lock_timeout = '2s'", 0, NULL, errstr, errstr_size) < 0 ||
        lam_pg_exec(pg, "LOCK TABLE ONLY lam_view_rows IN ACCESS EXCLUSIVE MODE", 0, NULL, errstr, errstr_size) <
            0) {
        rollback(pg);
        return strstr(errstr, "lock timeout") ? 1 : -1;
    }
    if (lam_pg_exec(pg, "SET LOCAL lock_timeout = 0", 0, NULL, errstr, errstr_size) < 0 ||
        part_attach(pg, run, errstr, errstr_size) < 0)
        return rollback(pg);
    PGresult *res = lam_pg_query(pg,
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
    return 0;
}

/* A publish that failed after the load: roll back, and drop the loaded table now (else the next cleanup does). */
static int unload(PGconn *pg, int64_t run)
{
    char e[256];
    rollback(pg);
    part_drop_loose(pg, run, e, sizeof(e));
    return -1;
}

/* A connection with the parameters opts (PQconninfo of the executor's); NULL with errstr. */
static PGconn *connect_with(const PQconninfoOption *opts, char *errstr, size_t errstr_size)
{
    if (!opts) {
        snprintf(errstr, errstr_size, "postgresql: second connection: out of memory");
        return NULL;
    }
    const char *keys[128], *vals[128];
    int n = 0;
    for (const PQconninfoOption *o = opts; o->keyword && n < 127; o++)
        if (o->val && *o->val) {
            keys[n] = o->keyword;
            vals[n++] = o->val;
        }
    keys[n] = vals[n] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 0);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(errstr, errstr_size, "postgresql: second connection: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* COPY cells (in index order) into table `name`, in the current transaction. 0 or -1 with errstr. */
static int copy_rows(PGconn *pg, const char *name, lam_cell_t *const *cells, size_t ncells, const lam_views_t *views,
                     char *errstr, size_t errstr_size)
{
    char copy_sql[160];
    snprintf(copy_sql, sizeof(copy_sql), "COPY %s (bucket, count, view, gkey, state) FROM STDIN (FORMAT binary, FREEZE)",
             name);
    PGresult *res = PQexec(pg, copy_sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        snprintf(errstr, errstr_size, "postgresql: COPY: %s", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append(&b, "PGCOPY\n\377\r\n\0", 11);
    put_i32(&b, 0);
    put_i32(&b, 0);
    int rc = 0;
    const lam_view_t *v = NULL;
    size_t vi = (size_t)-1, vlen = 0;
    for (size_t ci = 0; ci < ncells; ci++) {
        lam_cell_t *c = cells[ci];
        if (lam_cell_view(c) != vi) { /* rows come grouped by view */
            vi = lam_cell_view(c);
            v = lam_views_get(views, vi);
            vlen = strlen(v->name);
        }
        size_t klen;
        const char *key = lam_cell_key(c, &klen);
        /*
         * The fixed part of the row written straight into reserved room (field by field through
         * lam_buf_append it was 40 % of the load's client instructions); the state is serialized in
         * place, its length after.
         */
        lam_buf_reserve(&b, 2 + 2 * 12 + 4 + vlen + 4 + klen + 4);
        char *p = at_be16(b.data + b.len, 5);
        p = at_i64_field(p, lam_cell_ts(c));
        p = at_i64_field(p, lam_cell_count(c));
        p = at_bytes_field(p, v->name, vlen);
        p = at_bytes_field(p, key, klen);
        b.len = (size_t)(p - b.data) + 4; /* the state's length, filled in below */
        size_t at = b.len - 4;
        lam_cell_serialize(v, c, &b);
        uint32_t slen = htonl((uint32_t)(b.len - at - 4));
        memcpy(b.data + at, &slen, 4);
        if (b.len >= (1 << 20) && (rc = copy_flush(pg, &b, errstr, errstr_size)) < 0)
            break;
    }
    if (!rc) {
        put_i16(&b, -1);
        rc = copy_flush(pg, &b, errstr, errstr_size);
    }
    lam_buf_free(&b);
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
    return rc;
}

/* One half of run k's rows, loaded on its own connection (half 0 on the executor's, 1 on a second one). */
typedef struct {
    PGconn *pg;       /* NULL: open own, with the parameters opts */
    const PQconninfoOption *opts;
    PGconn *own;
    int64_t run;
    int half;
    /* set by the publishing thread once the rows are ordered (ready), while half 1 connects */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;
    int64_t split;
    lam_cell_t *const *cells;
    size_t n;
    const lam_views_t *views;
    int rc;
    int64_t cpu_us;
    int64_t copy_us, index_us, commit_us; /* wall time of the load's COPY, index build and COMMIT */
    char err[512];
} half_load_t;

/*
 * Load half h into lam_view_rows_<k>_<h>: created in this transaction (with wal_level=minimal its rows
 * skip the WAL), committed unattached, so invisible to readers. Committing it here keeps its flush to
 * disk out of the publish transaction. FREEZE (allowed: the table is this transaction's) writes the
 * rows frozen and all-visible, so serving's first reads of the run do not set hint bits and write
 * every page again. backend_flush_after: the pages COPY writes out of its ring buffer start their
 * writeback at once, so the commit's fsync of the table waits for less (0.23-0.30 s -> 0.11-0.14 s
 * for 58 MB).
 */
static void *half_load(void *arg)
{
    half_load_t *h = arg;
    int64_t cpu0 = clock_us(CLOCK_THREAD_CPUTIME_ID);
    PGconn *pg = h->pg ? h->pg : (h->own = connect_with(h->opts, h->err, sizeof(h->err)));
    pthread_mutex_lock(&h->mu);
    while (!h->ready)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    h->rc = -1;
    if (!pg)
        return NULL;
    char name[64], check[96];
    snprintf(name, sizeof(name), PART_FMT "_%d", h->run, h->half);
    snprintf(check, sizeof(check), " AND bucket %s %" PRId64, h->half ? ">=" : "<", h->split);
    if (lam_pg_exec(pg, "BEGIN", 0, NULL, h->err, sizeof(h->err)) < 0)
        return NULL;
    /*
     * synchronous_commit off: the commit does not wait for its WAL record's flush; the assembly's
     * commit (synchronous, before the publish) flushes the WAL up to it, so a published run was
     * loaded durably (with wal_level=minimal the table itself is fsynced at this commit either way).
     */
    int64_t t[4];
    if (lam_pg_exec(pg, "SET LOCAL backend_flush_after = '2MB'", 0, NULL, h->err, sizeof(h->err)) < 0 ||
        lam_pg_exec(pg, "SET LOCAL synchronous_commit = off", 0, NULL, h->err, sizeof(h->err)) < 0 ||
        part_create(pg, name, h->run, check, h->err, sizeof(h->err)) < 0 || (t[0] = now_us()) < 0 ||
        copy_rows(pg, name, h->cells, h->n, h->views, h->err, sizeof(h->err)) < 0 || (t[1] = now_us()) < 0 ||
        part_index(pg, name, h->err, sizeof(h->err)) < 0 || (t[2] = now_us()) < 0 ||
        lam_pg_exec(pg, "COMMIT", 0, NULL, h->err, sizeof(h->err)) < 0) {
        rollback(pg);
        return NULL;
    }
    t[3] = now_us();
    h->copy_us = t[1] - t[0];
    h->index_us = t[2] - t[1];
    h->commit_us = t[3] - t[2];
    h->rc = 0;
    h->cpu_us = clock_us(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    return NULL;
}

/*
 * Run k's table: partitioned by bucket, its two halves (loaded, indexed, committed) attached below and
 * above split. Committed, not attached to lam_view_rows: still invisible to readers. This commit is
 * synchronous: its WAL flush (which takes the loads' asynchronous commits along) comes before the
 * publish transaction, not while it holds lam_view_rows locked.
 */
static int part_assemble(PGconn *pg, int64_t run, int64_t split, char *errstr, size_t errstr_size)
{
    char create[384], a0[192], a1[192], index[192];
    snprintf(create, sizeof(create),
             "CREATE TABLE " PART_FMT " (run bigint NOT NULL, bucket bigint NOT NULL, count bigint NOT NULL,"
             " view text NOT NULL, gkey text NOT NULL, state bytea NOT NULL) PARTITION BY RANGE (bucket)",
             run);
    /* no validation scan: each half's CHECKs (run = k, its side of split) imply its bound */
    snprintf(a0, sizeof(a0),
             "ALTER TABLE " PART_FMT " ATTACH PARTITION " PART_FMT "_0 FOR VALUES FROM (MINVALUE) TO (%" PRId64 ")",
             run, run, split);
    snprintf(a1, sizeof(a1),
             "ALTER TABLE " PART_FMT " ATTACH PARTITION " PART_FMT "_1 FOR VALUES FROM (%" PRId64 ") TO (MAXVALUE)",
             run, run, split);
    /* made of the halves' indexes, attached (no build) */
    snprintf(index, sizeof(index), "CREATE INDEX " PART_FMT "_view_bucket ON " PART_FMT " (view, bucket)", run, run);
    if (lam_pg_exec(pg, "BEGIN", 0, NULL, errstr, errstr_size) < 0)
        return -1;
    if (exec_all(pg, (const char *[]){create, a0, a1, index, "COMMIT"}, 5, errstr, errstr_size) < 0)
        return rollback(pg);
    return 0;
}

int batch_pg_publish(PGconn *pg, int64_t run, const lam_agg_t *agg, int64_t records, int64_t skipped,
                     char *errstr, size_t errstr_size)
{
    char r[32], rec[32], sk[32], nrows[32];
    snprintf(r, sizeof(r), "%" PRId64, run);
    snprintf(rec, sizeof(rec), "%" PRId64, records);
    snprintf(sk, sizeof(sk), "%" PRId64, skipped);
    snprintf(nrows, sizeof(nrows), "%zu", lam_agg_size(agg));
    int64_t t0 = now_us(), cpu0 = clock_us(CLOCK_THREAD_CPUTIME_ID);
    if (part_drop_loose(pg, run, errstr, errstr_size) < 0)
        return -1;
    /*
     * Load: two halves of the rows, split at a bucket, each loaded and indexed on its own connection at
     * once (PostgreSQL spends about 1 us a row per connection in COPY; the index builds run side by side
     * too), then made run k's table, partitioned by bucket: serving's query (one view, a range of
     * buckets) prunes to the halves its range touches and reads each by its (view, bucket) index. The
     * rows of half 1 are built and sent by a second thread while half 0 streams; that thread opens
     * its connection while the rows are ordered.
     */
    PQconninfoOption *opts = PQconninfo(pg);
    half_load_t hl[BATCH_PG_HALVES] = {
        {.pg = pg, .run = run, .half = 0, .ready = 1},
        {.opts = opts, .run = run, .half = 1},
    };
    for (int h = 0; h < BATCH_PG_HALVES; h++) {
        pthread_mutex_init(&hl[h].mu, NULL);
        pthread_cond_init(&hl[h].cv, NULL);
    }
    pthread_t th;
    int threaded = pthread_create(&th, NULL, half_load, &hl[1]) == 0;
    size_t ncells, n0;
    int64_t split;
    lam_cell_t **halves = cells_in_groups(agg, &ncells, &n0, &split);
    const lam_views_t *views = lam_agg_views(agg);
    for (int h = 0; h < BATCH_PG_HALVES; h++) {
        pthread_mutex_lock(&hl[h].mu);
        hl[h].split = split;
        hl[h].views = views;
        hl[h].cells = h ? halves + n0 : halves;
        hl[h].n = h ? ncells - n0 : n0;
        hl[h].ready = 1;
        pthread_cond_signal(&hl[h].cv);
        pthread_mutex_unlock(&hl[h].mu);
    }
    int64_t t_rows = now_us();
    half_load(&hl[0]);
    if (threaded)
        pthread_join(th, NULL);
    else
        half_load(&hl[1]);
    PQconninfoFree(opts);
    for (int h = 0; h < BATCH_PG_HALVES; h++) {
        pthread_mutex_destroy(&hl[h].mu);
        pthread_cond_destroy(&hl[h].cv);
    }
    lam_free(halves);
    /* the second connection is closed after the publish: its backend's exit does not compete with it */
    PGconn *second = hl[1].own;
    for (int h = 0; h < BATCH_PG_HALVES; h++)
        if (hl[h].rc < 0) {
            snprintf(errstr, errstr_size, "%s", hl[h].err);
            PQfinish(second);
            return unload(pg, run);
        }
    int64_t t_load = now_us();
    if (part_assemble(pg, run, split, errstr, errstr_size) < 0) {
        PQfinish(second);
        return unload(pg, run);
    }
    int64_t t1 = now_us();
    /* Publish, ONE transaction: run k's rows, its status and lam_published become visible together. */
    int prc;
    for (int attempt = 1; (prc = publish_txn(pg, run, rec, sk, nrows, errstr, errstr_size)) == 1 && attempt < 10;
         attempt++)
        lam_warn("msg=\"publish waits for readers of lam_view_rows\" run=%s attempt=%d", r, attempt);
    int64_t t2 = now_us();
    PQfinish(second);
    if (prc != 0)
        return unload(pg, run);
    /* client_cpu_ms: building, sorting and sending the rows, both threads (PostgreSQL's is apart) */
    lam_info("msg=\"rows loaded and published\" run=%s view_rows=%s copy_ms=%.3f rows_per_s=%.0f publish_ms=%.3f"
             " client_cpu_ms=%.1f halves=%zu/%zu split_bucket=%" PRId64 " order_ms=%.3f load_ms=%.3f assemble_ms=%.3f"
             " half_copy_ms=%.0f/%.0f half_index_ms=%.0f/%.0f half_commit_ms=%.0f/%.0f",
             r, nrows, (double)(t1 - t0) / 1000.0,
             t1 > t0 ? (double)lam_agg_size(agg) * 1e6 / (double)(t1 - t0) : 0.0, (double)(t2 - t1) / 1000.0,
             (double)(clock_us(CLOCK_THREAD_CPUTIME_ID) - cpu0 + hl[1].cpu_us) / 1000.0, n0, ncells - n0, split,
             (double)(t_rows - t0) / 1000.0, (double)(t_load - t_rows) / 1000.0, (double)(t1 - t_load) / 1000.0,
             hl[0].copy_us / 1e3, hl[1].copy_us / 1e3, hl[0].index_us / 1e3, hl[1].index_us / 1e3,
             hl[0].commit_us / 1e3, hl[1].commit_us / 1e3);
    return 0;
}

int batch_pg_cleanup(PGconn *pg, int64_t run, char *errstr, size_t errstr_size)
{
    char r[32];
    snprintf(r, sizeof(r), "%" PRId64, run);
    const char *p[] = {r};
    /*
     * Run tables older than k but the previous succeeded run: attached, half detached, or left
     * standalone; and halves no run table holds (a load that never assembled). Halves of a run table
     * go with it. Names matched as lam_view_rows_<run>[_<half>] are rebuilt from those numbers.
     */
    PGresult *res = lam_pg_query(
        pg,
        "SELECT run, state, half FROM (SELECT CASE WHEN c.relname ~ '^lam_view_rows_[0-9]{1,18}(_[0-9])?$' THEN"
        " substring(c.relname from '^lam_view_rows_([0-9]+)')::bigint END AS run, CASE WHEN"
        " c.relname ~ '^lam_view_rows_[0-9]+_[0-9]$' THEN right(c.relname, 1)::int ELSE -1 END AS half,"
        " CASE WHEN i.inhrelid IS NOT NULL"
        " THEN CASE WHEN i.inhdetachpending THEN 'p' ELSE 'a' END WHEN EXISTS (SELECT 1 FROM pg_inherits j"
        " WHERE j.inhrelid = c.oid) THEN 'h' ELSE 's' END AS state FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'lam_view_rows'::regclass"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname LIKE 'lam\\_view\\_rows\\_%') t"
        " WHERE state <> 'h' AND run < $1::bigint AND run <> COALESCE((SELECT max(run) FROM lam_runs"
        " WHERE status = 'succeeded' AND run < $1::bigint), -1) ORDER BY run, half",
        1, p, errstr, errstr_size);
    if (!res)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(res) && !rc; i++) {
        int64_t old = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        int half = atoi(PQgetvalue(res, i, 2));
        char state = PQgetvalue(res, i, 1)[0], sql[256], name[64];
        if (half < 0) /* the run's table: its halves go with it */
            snprintf(name, sizeof(name), PART_FMT, old);
        else
            snprintf(name, sizeof(name), PART_FMT "_%d", old, half);
        /*
         * DETACH CONCURRENTLY takes no lock that blocks readers (DROP of an attached partition would lock
         * all of lam_view_rows); it waits for queries that may still read the run. One interrupted half
         * way is finished with FINALIZE.
         */
        if (state != 's') {
            snprintf(sql, sizeof(sql), "ALTER TABLE lam_view_rows DETACH PARTITION %s%s", name,
                     state == 'p' ? " FINALIZE" : " CONCURRENTLY");
            rc = lam_pg_exec(pg, sql, 0, NULL, errstr, errstr_size);
        }
        if (!rc) {
            snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s", name);
            rc = lam_pg_exec(pg, sql, 0, NULL, errstr, errstr_size);
        }
    }
    PQclear(res);
    return rc;
}
