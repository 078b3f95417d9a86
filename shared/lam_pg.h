/* lam_pg.h - libpq helpers: connect with a clear error, run parameterised statements. */
#ifndef LAM_PG_H
#define LAM_PG_H

#include <libpq-fe.h>
#include <stddef.h>

/** Connect to url (a libpq URI); NULL with errstr ("cannot reach PostgreSQL at ...: ...") on failure. */
PGconn *lam_pg_connect(const char *url, char *errstr, size_t errstr_size);
/** lam_pg_connect() retried with backoff (logging each failure) until it succeeds or a stop is requested. */
PGconn *lam_pg_connect_wait(const char *url);
/**
 * Run sql with nparams text parameters ($1..$n; values may be NULL for SQL NULL) and return the
 * result when its status is COMMAND_OK or TUPLES_OK; otherwise NULL with errstr. Caller PQclear()s.
 */
PGresult *lam_pg_query(PGconn *pg, const char *sql, int nparams, const char *const *params, char *errstr,
                       size_t errstr_size);
/** lam_pg_query() for statements whose result is not needed: 0 or -1. */
int lam_pg_exec(PGconn *pg, const char *sql, int nparams, const char *const *params, char *errstr,
                size_t errstr_size);

#endif
