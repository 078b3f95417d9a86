/* serving_static.c - dashboard files from LAM_DASHBOARDS_DIR (no traversal, CSP, ETag) and /openapi.json. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lam_mem.h"
#include "serving.h"

#define STATIC_MAX_BYTES (16 * 1024 * 1024)
#define CSP "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"

/* serving/openapi.json, linked in by the assembler (NUL-terminated). */
__asm__(".section .rodata\n"
        ".global serving_openapi_json\n"
        ".type serving_openapi_json, @object\n"
        ".balign 16\n"
        "serving_openapi_json:\n"
        ".incbin \"serving/openapi.json\"\n"
        ".byte 0\n"
        ".previous\n");
extern const char serving_openapi_json[];

void serving_handle_openapi(serving_ctx_t *ctx, lam_http_req_t *req)
{
    (void)ctx;
    if (serving_get_only_or_reply(req) < 0)
        return;
    lam_http_add_header(req, "Cache-Control", "no-cache");
    serving_reply(req, 200, "application/json", serving_openapi_json, strlen(serving_openapi_json));
}

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {{".html", "text/html; charset=utf-8"},
                 {".htm", "text/html; charset=utf-8"},
                 {".js", "text/javascript; charset=utf-8"},
                 {".mjs", "text/javascript; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},
                 {".json", "application/json"},
                 {".map", "application/json"},
                 {".svg", "image/svg+xml"},
                 {".png", "image/png"},
                 {".jpg", "image/jpeg"},
                 {".jpeg", "image/jpeg"},
                 {".gif", "image/gif"},
                 {".ico", "image/x-icon"},
                 {".webp", "image/webp"},
                 {".woff", "font/woff"},
                 {".woff2", "font/woff2"},
                 {".txt", "text/plain; charset=utf-8"},
                 {".md", "text/plain; charset=utf-8"},
                 {NULL, NULL}};
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; types[i].ext; i++)
            if (!strcasecmp(dot, types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}

static const char placeholder[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>lam</title></head>\n"
    "<body><h1>lam</h1><p>The dashboard is not installed (no index.html in LAM_DASHBOARDS_DIR).</p>\n"
    "<ul><li><a href=\"/v1/views\">/v1/views</a></li><li><a href=\"/v1/status\">/v1/status</a></li>"
    "<li><a href=\"/openapi.json\">/openapi.json</a></li></ul></body></html>\n";

static void security_headers(lam_http_req_t *req)
{
    lam_http_add_header(req, "Content-Security-Policy", CSP);
    lam_http_add_header(req, "X-Content-Type-Options", "nosniff");
    lam_http_add_header(req, "Referrer-Policy", "no-referrer");
}

/* Reject what could leave the directory before touching the file system. */
static int path_safe(const char *p)
{
    if (p[0] != '/' || strlen(p) > 1024)
        return 0;
    for (const char *s = p; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '\\' || c == '%')
            return 0;
    }
    /* no "." / ".." segments, no hidden files, no empty segments */
    const char *seg = p + 1;
    while (*seg) {
        const char *e = strchr(seg, '/');
        size_t n = e ? (size_t)(e - seg) : strlen(seg);
        if ((n == 0 && e) || (n > 0 && seg[0] == '.'))
            return 0;
        if (!e)
            break;
        seg = e + 1;
    }
    return 1;
}

/*
 * Only the page and its assets are public: "/", "/index.html" and "/app/...". Everything else in
 * the folder (dashboard files, package.json, node_modules, build scripts) is not served as a file.
 */
static int path_public(const char *p)
{
    return !strcmp(p, "/") || !strcmp(p, "/index.html") || !strcmp(p, "/favicon.ico") || !strncmp(p, "/app/", 5);
}

void serving_handle_static(serving_ctx_t *ctx, lam_http_req_t *req)
{
    if (serving_get_only_or_reply(req) < 0)
        return;
    if (!path_public(req->path)) {
        security_headers(req);
        serving_error(req, 404, NULL, "not found");
        return;
    }
    serving_send_static(ctx, req, req->path);
}

/* The built-in page (dashboard not built or not found) where one is due, else 404. */
static void placeholder_or_404(lam_http_req_t *req, int want_placeholder)
{
    if (want_placeholder) {
        lam_http_add_header(req, "Cache-Control", "no-cache");
        serving_reply(req, 200, "text/html; charset=utf-8", placeholder, sizeof(placeholder) - 1);
    } else {
        serving_error(req, 404, NULL, "not found");
    }
}

void serving_send_static(serving_ctx_t *ctx, lam_http_req_t *req, const char *p)
{
    if (serving_get_only_or_reply(req) < 0)
        return;
    security_headers(req);
    if (!path_safe(p)) {
        serving_error(req, 404, NULL, "not found");
        return;
    }
    int want_index = p[strlen(p) - 1] == '/';
    if (!ctx->dash_real) {
        placeholder_or_404(req, !strcmp(p, "/") || !strcmp(p, "/index.html"));
        return;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s%s%s", ctx->dash_real, p, want_index ? "index.html" : "");
    /* realpath resolves symlinks: the file must still be inside the directory. */
    char *real = realpath(path, NULL);
    size_t dl = strlen(ctx->dash_real);
    struct stat st;
    if (!real || strncmp(real, ctx->dash_real, dl) || real[dl] != '/' || stat(real, &st) < 0 ||
        !S_ISREG(st.st_mode) || st.st_size > STATIC_MAX_BYTES) {
        free(real);
        placeholder_or_404(req, !strcmp(p, "/"));
        return;
    }
    char etag[64];
    snprintf(etag, sizeof(etag), "\"%llx-%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec, (unsigned long long)st.st_mtim.tv_nsec);
    const char *ctype = content_type(real);
    int html = !strncmp(ctype, "text/html", 9);
    lam_http_add_header(req, "ETag", etag);
    lam_http_add_header(req, "Cache-Control", html ? "no-cache" : "public, max-age=300");
    const char *inm = lam_http_header(req, "If-None-Match");
    if (inm && !strcmp(inm, etag)) {
        free(real);
        serving_reply(req, 304, NULL, "", 0);
        return;
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    free(real);
    if (fd < 0) {
        serving_error(req, 404, NULL, "not found");
        return;
    }
    lam_buf_t body = LAM_BUF_INIT;
    ssize_t got = lam_buf_read_fd(&body, fd, (size_t)st.st_size);
    close(fd);
    if (got < 0)
        serving_error(req, 404, NULL, "not found");
    else
        serving_reply(req, 200, ctype, body.data, body.len);
    lam_buf_free(&body);
}
