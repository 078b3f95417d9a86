/* lam_store.c - Redis key names and PostgreSQL schema shared by speed_layer, batch_layer and serving. */
#include "lam_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lam_pg.h"

static void rt_prefix(lam_buf_t *out, int64_t epoch, const char *view)
{
    lam_buf_clear(out);
    lam_buf_append_str(out, "lam:rt:");
    lam_buf_append_i64(out, epoch);
    lam_buf_append_char(out, ':');
    lam_buf_append_str(out, view);
}

void lam_store_rt_hash_key(lam_buf_t *out, int64_t epoch, const char *view, int64_t bucket)
{
    rt_prefix(out, epoch, view);
    lam_buf_append_char(out, ':');
    lam_buf_append_i64(out, bucket);
}

void lam_store_rt_hll_key(lam_buf_t *out, int64_t epoch, const char *view, int64_t bucket, size_t metric,
                          const char *gkey, size_t gkey_len)
{
    lam_store_rt_hash_key(out, epoch, view, bucket);
    lam_buf_append_str(out, ":hll:");
    lam_buf_append_i64(out, (int64_t)metric);
    lam_buf_append_char(out, ':');
    lam_buf_append(out, gkey, gkey_len);
}

void lam_store_rt_idx_key(lam_buf_t *out, int64_t epoch, const char *view)
{
    lam_buf_clear(out);
    lam_buf_append_str(out, "lam:rt:idx:");
    lam_buf_append_i64(out, epoch);
    lam_buf_append_char(out, ':');
    lam_buf_append_str(out, view);
}

void lam_store_rt_hidx_key(lam_buf_t *out, int64_t epoch, const char *view, int64_t bucket)
{
    lam_buf_clear(out);
    lam_buf_append_str(out, "lam:rt:hidx:");
    lam_buf_append_i64(out, epoch);
    lam_buf_append_char(out, ':');
    lam_buf_append_str(out, view);
    lam_buf_append_char(out, ':');
    lam_buf_append_i64(out, bucket);
}

void lam_store_speed_key(lam_buf_t *out, const char *group, const char *what)
{
    lam_buf_clear(out);
    lam_buf_printf(out, "lam:speed:%s:%s", group, what);
}

void lam_store_dedup_key(lam_buf_t *out, const char *id, size_t id_len)
{
    lam_buf_clear(out);
    lam_buf_append_str(out, "lam:dedup:");
    lam_buf_append(out, id, id_len);
}

void lam_store_rt_field(lam_buf_t *out, size_t m, const char *gkey, size_t gkey_len)
{
    lam_buf_clear(out);
    lam_buf_append_i64(out, (int64_t)m);
    lam_buf_append_char(out, ':');
    lam_buf_append(out, gkey, gkey_len);
}

int lam_store_rt_field_parse(const char *f, size_t len, size_t *m, const char **gkey, size_t *gkey_len)
{
    size_t i = 0, v = 0;
    while (i < len && i < 4 && f[i] >= '0' && f[i] <= '9')
        v = v * 10 + (size_t)(f[i++] - '0');
    if (i == 0 || i >= len || f[i] != ':')
        return -1;
    *m = v;
    *gkey = f + i + 1;
    *gkey_len = len - i - 1;
    return 0;
}

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS lam_runs ("
    " run bigint PRIMARY KEY,"
    " status text NOT NULL CHECK (status IN ('requested','running','succeeded','failed')),"
    " requested_at timestamptz NOT NULL DEFAULT now(),"
    " started_at timestamptz, finished_at timestamptz,"
    " records bigint NOT NULL DEFAULT 0, records_total bigint NOT NULL DEFAULT 0,"
    " cut jsonb, cut_at timestamptz, view_rows bigint, skipped bigint NOT NULL DEFAULT 0, error text);"
    "CREATE TABLE IF NOT EXISTS lam_view_rows ("
    " run bigint NOT NULL, view text NOT NULL, bucket bigint NOT NULL, gkey text NOT NULL,"
    " count bigint NOT NULL, state bytea NOT NULL,"
    " PRIMARY KEY (run, view, bucket, gkey));"
    "CREATE TABLE IF NOT EXISTS lam_published ("
    " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),"
    " run bigint NOT NULL, published_at timestamptz NOT NULL DEFAULT now());";

int lam_store_pg_migrate(PGconn *pg, char *errstr, size_t errstr_size)
{
    /* Two services may start at once: serialise the DDL with an advisory lock. */
    if (lam_pg_exec(pg, "SELECT pg_advisory_lock(7236001)", 0, NULL, errstr, errstr_size) < 0)
        return -1;
    PGresult *res = PQexec(pg, schema_sql);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(errstr, errstr_size, "postgresql schema: %s", PQresultErrorMessage(res));
        char *nl = strchr(errstr, '\n');
        if (nl)
            *nl = '\0';
        rc = -1;
    }
    PQclear(res);
    char err2[256];
    lam_pg_exec(pg, "SELECT pg_advisory_unlock(7236001)", 0, NULL, err2, sizeof(err2));
    return rc;
}

int64_t lam_store_pg_published_run(PGconn *pg, char *errstr, size_t errstr_size)
{
    PGresult *res = lam_pg_query(pg, "SELECT run FROM lam_published", 0, NULL, errstr, errstr_size);
    if (!res)
        return -1;
    int64_t run = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    return run;
}

int64_t lam_store_pg_request_run(PGconn *pg, int *created, char *errstr, size_t errstr_size)
{
    char e2[256];
    int64_t run = -1;
    PGresult *res = NULL;
    if (lam_pg_exec(pg, "BEGIN", 0, NULL, errstr, errstr_size) < 0)
        return -1;
    if (lam_pg_exec(pg, "SELECT pg_advisory_xact_lock(7236002)", 0, NULL, errstr, errstr_size) < 0)
        goto fail;
    res = lam_pg_query(pg, "SELECT run FROM lam_runs WHERE status = 'requested' ORDER BY run LIMIT 1", 0, NULL,
                       errstr, errstr_size);
    if (!res)
        goto fail;
    *created = PQntuples(res) == 0;
    if (*created) {
        PQclear(res);
        res = lam_pg_query(pg,
                           "INSERT INTO lam_runs (run, status) SELECT COALESCE(max(run), 0) + 1, 'requested'"
                           " FROM lam_runs RETURNING run, pg_notify('" LAM_STORE_NOTIFY_RUNS "', run::text)",
                           0, NULL, errstr, errstr_size);
        if (!res)
            goto fail;
    }
    run = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    res = NULL;
    if (lam_pg_exec(pg, "COMMIT", 0, NULL, errstr, errstr_size) < 0)
        goto fail;
    return run;
fail:
    PQclear(res);
    lam_pg_exec(pg, "ROLLBACK", 0, NULL, e2, sizeof(e2));
    return -1;
}
