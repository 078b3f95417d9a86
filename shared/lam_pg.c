/* lam_pg.c - PostgreSQL helpers: every statement goes through PQexecParams. */
#include "lam_pg.h"

#include <stdio.h>
#include <string.h>

#include "lam_log.h"
#include "lam_service.h"

static void first_line(char *dst, size_t n, const char *msg)
{
    snprintf(dst, n, "%s", msg ? msg : "");
    char *nl = strchr(dst, '\n');
    if (nl)
        *nl = '\0';
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *lam_pg_connect(const char *url, char *errstr, size_t errstr_size)
{
    PGconn *pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[512];
        first_line(msg, sizeof(msg), PQerrorMessage(pg));
        snprintf(errstr, errstr_size, "cannot reach PostgreSQL at %s: %s", url, msg);
        PQfinish(pg);
        return NULL;
    }
    /* Notices (e.g. "relation already exists, skipping") are not errors: keep them out of logs. */
    PQsetNoticeProcessor(pg, quiet_notice, NULL);
    return pg;
}

PGresult *lam_pg_query(PGconn *pg, const char *sql, int nparams, const char *const *params, char *errstr,
                       size_t errstr_size)
{
    PGresult *res = PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    char msg[512];
    first_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : PQerrorMessage(pg));
    snprintf(errstr, errstr_size, "postgresql: %s", msg);
    PQclear(res);
    return NULL;
}

int lam_pg_exec(PGconn *pg, const char *sql, int nparams, const char *const *params, char *errstr,
                size_t errstr_size)
{
    PGresult *res = lam_pg_query(pg, sql, nparams, params, errstr, errstr_size);
    if (!res)
        return -1;
    PQclear(res);
    return 0;
}

PGconn *lam_pg_connect_wait(const char *url)
{
    lam_backoff_t bo = LAM_BACKOFF_INIT(200, 10000);
    char err[768];
    while (!lam_service_stopping()) {
        PGconn *pg = lam_pg_connect(url, err, sizeof(err));
        if (pg) {
            lam_info("msg=\"postgresql reachable\"");
            return pg;
        }
        int64_t d = lam_backoff_next(&bo);
        lam_warn("msg=\"%s\" retry_in_ms=%lld", err, (long long)d);
        lam_service_sleep_ms(d);
    }
    return NULL;
}
