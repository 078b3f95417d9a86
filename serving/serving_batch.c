/* serving_batch.c - batch control: request a run (POST /v1/batch/runs), list runs, one run's progress. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lam_json.h"
#include "lam_log.h"
#include "lam_pg.h"
#include "lam_store.h"
#include "serving.h"


static const char run_columns[] =
    "SELECT r.run, r.status, (extract(epoch FROM r.requested_at) * 1000)::bigint,"
    " (extract(epoch FROM r.started_at) * 1000)::bigint, (extract(epoch FROM r.finished_at) * 1000)::bigint,"
    " r.records, r.records_total, r.cut::text, (extract(epoch FROM r.cut_at) * 1000)::bigint, r.view_rows,"
    " r.skipped, r.error, r.run = (SELECT run FROM lam_published) FROM lam_runs r";

static int authorized_or_reply(serving_ctx_t *ctx, lam_http_req_t *req)
{
    const char *token = ctx->cfg.admin_token;
    if (!token) {
        if (lam_http_client_is_loopback(req))
            return 0;
        return serving_error(req, 403, NULL, "batch control is limited to loopback clients (LAM_ADMIN_TOKEN unset)");
    }
    const char *h = lam_http_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) ||
        !lam_http_secret_eq(h + 7, strlen(h + 7), token, strlen(token))) {
        lam_http_add_header(req, "WWW-Authenticate", "Bearer");
        return serving_error(req, 401, NULL, "missing or wrong bearer token");
    }
    return 0;
}

static void append_int_or_null(lam_buf_t *b, const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        lam_buf_append_str(b, "null");
    else
        lam_buf_append_i64(b, strtoll(PQgetvalue(res, row, col), NULL, 10));
}

static void append_run(lam_buf_t *b, const PGresult *res, int i)
{
    lam_buf_append_str(b, "{\"run\":");
    lam_buf_append_i64(b, strtoll(PQgetvalue(res, i, 0), NULL, 10));
    lam_buf_append_str(b, ",\"status\":");
    lam_json_append_cstr(b, PQgetvalue(res, i, 1));
    lam_buf_append_str(b, ",\"requested_at\":");
    append_int_or_null(b, res, i, 2);
    lam_buf_append_str(b, ",\"started_at\":");
    append_int_or_null(b, res, i, 3);
    lam_buf_append_str(b, ",\"finished_at\":");
    append_int_or_null(b, res, i, 4);
    lam_buf_append_str(b, ",\"progress\":{\"records\":");
    append_int_or_null(b, res, i, 5);
    lam_buf_append_str(b, ",\"records_total\":");
    append_int_or_null(b, res, i, 6);
    lam_buf_append_str(b, "},\"cut\":");
    lam_buf_append_str(b, PQgetisnull(res, i, 7) ? "null" : PQgetvalue(res, i, 7));
    lam_buf_append_str(b, ",\"cut_at\":");
    append_int_or_null(b, res, i, 8);
    lam_buf_append_str(b, ",\"view_rows\":");
    append_int_or_null(b, res, i, 9);
    lam_buf_append_str(b, ",\"skipped\":");
    append_int_or_null(b, res, i, 10);
    lam_buf_append_str(b, ",\"error\":");
    if (PQgetisnull(res, i, 11))
        lam_buf_append_str(b, "null");
    else
        lam_json_append_cstr(b, PQgetvalue(res, i, 11));
    lam_buf_append_str(b, ",\"published\":");
    lam_buf_append_str(b, !PQgetisnull(res, i, 12) && PQgetvalue(res, i, 12)[0] == 't' ? "true" : "false");
    lam_buf_append_char(b, '}');
}

static void handle_post(serving_ctx_t *ctx, lam_http_req_t *req)
{
    if (authorized_or_reply(ctx, req) < 0)
        return;
    char err[512];
    int64_t run = -1;
    int created = 0;
    for (int attempt = 0; attempt < 3 && run < 0; attempt++) {
        PGconn *pg = serving_pg(ctx, err, sizeof(err));
        if (!pg)
            break;
        int64_t t0 = serving_now_us();
        run = lam_store_pg_request_run(pg, &created, err, sizeof(err));
        serving_observe_backend(ctx, SB_PG, t0, run >= 0);
    }
    if (run < 0) {
        serving_unavailable(req, "batch run store (PostgreSQL)", err);
        return;
    }
    if (created)
        lam_info("msg=\"batch run requested\" run=%lld", (long long)run);
    char loc[64];
    snprintf(loc, sizeof(loc), "/v1/batch/runs/%lld", (long long)run);
    lam_http_add_header(req, "Location", loc);
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_printf(&b, "{\"run\":%lld,\"status\":\"requested\",\"created\":%s}\n", (long long)run,
                   created ? "true" : "false");
    serving_reply_json(req, 202, &b);
    lam_buf_free(&b);
}

typedef struct list_args {
    const char *limit;
    int bad;
    char msg[200];
} list_args_t;

static int list_param(void *arg, const char *key, const char *value)
{
    list_args_t *a = arg;
    char ex[80];
    lam_json_quote_excerpt(ex, sizeof(ex), key, strlen(key));
    if (!strcmp(key, "limit")) {
        if (a->limit) {
            snprintf(a->msg, sizeof(a->msg), "query parameter %s is repeated", ex);
            return 1;
        }
        a->limit = value;
        return 0;
    }
    snprintf(a->msg, sizeof(a->msg), "unknown query parameter %s", ex);
    return 1;
}

static void handle_get(serving_ctx_t *ctx, lam_http_req_t *req, const char *rest)
{
    if (serving_get_only_or_reply(req) < 0)
        return;
    char err[512];
    list_args_t la = {0};
    if (lam_http_query_each(req, list_param, &la)) {
        serving_error(req, 400, NULL, "%s", la.msg);
        return;
    }
    long long limit = 20, k = 0;
    if (*rest) { /* "/{k}" */
        char *end;
        k = strtoll(rest + 1, &end, 10);
        if (rest[1] < '0' || rest[1] > '9' || *end || k < 1) {
            serving_error(req, 404, NULL, "no batch run %s", "(run numbers are positive integers)");
            return;
        }
        if (la.limit) {
            serving_error(req, 400, NULL, "limit applies to the run list only");
            return;
        }
    } else if (la.limit) {
        char *end;
        limit = strtoll(la.limit, &end, 10);
        if (!*la.limit || *end || limit < 1 || limit > 1000) {
            serving_error(req, 400, NULL, "limit: must be an integer in 1..1000");
            return;
        }
    }
    PGconn *pg = serving_pg(ctx, err, sizeof(err));
    if (!pg) {
        serving_unavailable(req, "batch run store (PostgreSQL)", err);
        return;
    }
    char num[24], sql[1024];
    snprintf(num, sizeof(num), "%lld", *rest ? k : limit);
    const char *params[1] = {num};
    snprintf(sql, sizeof(sql), "%s %s", run_columns,
             *rest ? "WHERE r.run = $1::bigint" : "ORDER BY r.run DESC LIMIT $1::bigint");
    int64_t t0 = serving_now_us();
    PGresult *res = lam_pg_query(pg, sql, 1, params, err, sizeof(err));
    serving_observe_backend(ctx, SB_PG, t0, res != NULL);
    if (!res) {
        serving_unavailable(req, "batch run store (PostgreSQL)", err);
        return;
    }
    lam_buf_t b = LAM_BUF_INIT;
    if (*rest) {
        if (!PQntuples(res)) {
            PQclear(res);
            serving_error(req, 404, NULL, "no batch run %lld", k);
            return;
        }
        append_run(&b, res, 0);
    } else {
        lam_buf_append_str(&b, "{\"runs\":[");
        for (int i = 0; i < PQntuples(res); i++) {
            if (i)
                lam_buf_append_char(&b, ',');
            append_run(&b, res, i);
        }
        lam_buf_append_str(&b, "]}");
    }
    lam_buf_append_char(&b, '\n');
    PQclear(res);
    serving_reply_json(req, 200, &b);
    lam_buf_free(&b);
}

void serving_handle_batch(serving_ctx_t *ctx, lam_http_req_t *req, const char *rest)
{
    if (!strcmp(req->method, "POST")) {
        if (*rest) {
            lam_http_add_header(req, "Allow", "GET, HEAD");
            serving_error(req, 405, NULL, "POST /v1/batch/runs requests a new run");
            return;
        }
        handle_post(ctx, req);
        return;
    }
    if (!*rest && strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        lam_http_add_header(req, "Allow", "GET, HEAD, POST");
        serving_error(req, 405, NULL, "use GET or POST");
        return;
    }
    handle_get(ctx, req, rest);
}
