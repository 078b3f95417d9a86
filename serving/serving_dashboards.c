/* serving_dashboards.c - the dashboard's routes: /d/{id}, /v1/dashboards[/{id}] and the live tail /v1/tail. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lam_json.h"
#include "lam_log.h"
#include "lam_mem.h"
#include "lam_store.h"
#include "serving.h"

#define DASH_FILE_MAX (1024 * 1024)
#define TAIL_MAX 500

/** 1 when id is [A-Za-z0-9_-]{1,64}: the only names that map to files. */
int serving_dashboard_id_ok(const char *id, size_t len)
{
    if (len == 0 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Files in the dashboards folder that are not dashboards. */
static int not_a_dashboard(const char *id)
{
    return !strcmp(id, "package") || !strcmp(id, "package-lock");
}

static char *read_dashboard(serving_ctx_t *ctx, const char *id, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.json", ctx->dash_real, id);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > DASH_FILE_MAX) {
        close(fd);
        return NULL;
    }
    lam_buf_t b = LAM_BUF_INIT;
    ssize_t got = lam_buf_read_fd(&b, fd, (size_t)st.st_size);
    close(fd);
    if (got < 0) {
        lam_buf_free(&b);
        return NULL;
    }
    return lam_buf_detach(&b, len);
}

/*
 * Check that text is one JSON object and find its top-level "title". Returns 0, or -1 with a
 * message naming the position. The page validates the dashboard itself; this only feeds the list.
 */
static int dashboard_title(const char *text, size_t len, lam_buf_t *title, char *err, size_t errsz)
{
    lam_json_t j;
    lam_json_init(&j, text, len, 0);
    lam_json_tok_t t = lam_json_next(&j);
    if (t != LAM_JSON_OBJECT) {
        snprintf(err, errsz, "not a JSON object");
        return -1;
    }
    for (;;) {
        t = lam_json_next(&j);
        if (t == LAM_JSON_OBJECT_END)
            break;
        if (t != LAM_JSON_KEY)
            goto bad;
        int is_title = j.tok_len == 5 && !memcmp(j.tok, "title", 5);
        t = lam_json_next(&j);
        if (is_title && t == LAM_JSON_STRING) {
            char *dec = lam_malloc(j.tok_len + 1);
            int has_nul = 0;
            size_t n = lam_json_decode(j.tok, j.tok_len, dec, &has_nul);
            lam_buf_clear(title);
            lam_buf_append(title, dec, n);
            lam_free(dec);
        } else if (lam_json_skip(&j, t) < 0) {
            goto bad;
        }
    }
    if (lam_json_next(&j) != LAM_JSON_EOF)
        goto bad;
    return 0;
bad:
    snprintf(err, errsz, "invalid JSON at byte %zu", (size_t)j.err_pos);
    return -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_dashboards(serving_ctx_t *ctx, lam_http_req_t *req)
{
    lam_buf_t out = LAM_BUF_INIT, title = LAM_BUF_INIT;
    lam_buf_append_char(&out, '[');
    DIR *d = ctx->dash_real ? opendir(ctx->dash_real) : NULL;
    char **ids = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".json") || !serving_dashboard_id_ok(de->d_name, l - 5))
            continue;
        char *id = lam_strndup(de->d_name, l - 5);
        if (not_a_dashboard(id)) {
            lam_free(id);
            continue;
        }
        if (n == cap)
            ids = lam_realloc(ids, (cap = cap ? cap * 2 : 16) * sizeof(*ids));
        ids[n++] = id;
    }
    if (d)
        closedir(d);
    qsort(ids, n, sizeof(*ids), cmp_str);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char err[128] = "";
        char *text = read_dashboard(ctx, ids[i], &len);
        lam_buf_clear(&title);
        int ok = text && dashboard_title(text, len, &title, err, sizeof(err)) == 0;
        if (!text)
            snprintf(err, sizeof(err), "cannot read the file");
        if (i)
            lam_buf_append_char(&out, ',');
        lam_buf_append_str(&out, "{\"id\":");
        lam_json_append_cstr(&out, ids[i]);
        lam_buf_append_str(&out, ",\"title\":");
        if (title.len)
            lam_json_append_string(&out, title.data, title.len);
        else
            lam_json_append_cstr(&out, ids[i]);
        if (!ok) {
            lam_warn("msg=\"malformed dashboard file\" file=%s/%s.json error=\"%s\"", ctx->dash_real, ids[i], err);
            lam_buf_append_str(&out, ",\"error\":");
            lam_json_append_cstr(&out, err);
        }
        lam_buf_append_char(&out, '}');
        lam_free(text);
        lam_free(ids[i]);
    }
    lam_free(ids);
    lam_buf_append_str(&out, "]\n");
    serving_reply_json(req, 200, &out);
    lam_buf_free(&out);
    lam_buf_free(&title);
}

void serving_handle_dashboards(serving_ctx_t *ctx, lam_http_req_t *req, const char *rest)
{
    if (serving_get_only_or_reply(req) < 0)
        return;
    if (!*rest) {
        list_dashboards(ctx, req);
        return;
    }
    const char *id = rest + 1; /* rest = "/{id}" */
    size_t len;
    char *text = NULL;
    if (serving_dashboard_id_ok(id, strlen(id)) && !not_a_dashboard(id) && ctx->dash_real)
        text = read_dashboard(ctx, id, &len);
    if (!text) {
        serving_error(req, 404, NULL, "no dashboard \"%.64s\"", id);
        return;
    }
    /* The bytes as they are: the page reports a malformed file with line and column. */
    lam_http_add_header(req, "Cache-Control", "no-cache");
    serving_reply(req, 200, "application/json", text, len);
    lam_free(text);
}

void serving_handle_dashboard_page(serving_ctx_t *ctx, lam_http_req_t *req, const char *id)
{
    if (!serving_dashboard_id_ok(id, strlen(id))) {
        if (serving_get_only_or_reply(req) == 0)
            serving_error(req, 404, NULL, "no dashboard \"%.64s\"", id);
        return;
    }
    serving_send_static(ctx, req, "/app/index.html");
}

void serving_handle_tail(serving_ctx_t *ctx, lam_http_req_t *req)
{
    if (serving_get_only_or_reply(req) < 0)
        return;
    long limit = 50;
    const char *l = lam_http_query(req, "limit");
    if (l) {
        char *end;
        limit = strtol(l, &end, 10);
        if (!*l || *end || limit < 1 || limit > TAIL_MAX) {
            serving_error(req, 400, NULL, "limit: expected an integer in [1, %d]", TAIL_MAX);
            return;
        }
    }
    char err[256];
    redisContext *r = serving_redis(ctx, err, sizeof(err));
    if (!r) {
        serving_unavailable(req, "redis", err);
        return;
    }
    char count[16];
    snprintf(count, sizeof(count), "%ld", limit);
    const char *argv[] = {"XREVRANGE", LAM_STORE_TAIL_KEY, "+", "-", "COUNT", count};
    redisReply *rep = redisCommandArgv(r, 6, argv, NULL);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        snprintf(err, sizeof(err), "%s", rep ? rep->str : r->errstr);
        if (!rep)
            serving_redis_drop(ctx);
        freeReplyObject(rep);
        serving_unavailable(req, "redis", err);
        return;
    }
    lam_buf_t out = LAM_BUF_INIT;
    lam_buf_append_str(&out, "{\"events\":[");
    size_t emitted = 0;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        redisReply *kv = e->element[1];
        for (size_t k = 0; k + 1 < kv->elements; k += 2) {
            if (kv->element[k]->len != 5 || memcmp(kv->element[k]->str, "event", 5))
                continue;
            /* The speed layer stores canonical events (lam_event_canonical): valid JSON as is. */
            if (emitted++)
                lam_buf_append_char(&out, ',');
            lam_buf_append(&out, kv->element[k + 1]->str, kv->element[k + 1]->len);
        }
    }
    lam_buf_append_str(&out, "]}\n");
    freeReplyObject(rep);
    lam_http_add_header(req, "Cache-Control", "no-store");
    serving_reply_json(req, 200, &out);
    lam_buf_free(&out);
}
