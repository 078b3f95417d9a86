/* lam_buf.c - growable byte buffer. */
#include "lam_buf.h"

#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "lam_mem.h"

void lam_buf_reserve(lam_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = lam_realloc(b->data, cap);
    b->cap = cap;
}

void lam_buf_append(lam_buf_t *b, const void *data, size_t len)
{
    lam_buf_reserve(b, len);
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void lam_buf_append_str(lam_buf_t *b, const char *s)
{
    lam_buf_append(b, s, strlen(s));
}

void lam_buf_append_char(lam_buf_t *b, char c)
{
    lam_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void lam_buf_vprintf(lam_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return;
    lam_buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void lam_buf_printf(lam_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lam_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void lam_buf_append_i64(lam_buf_t *b, int64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    lam_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

void lam_buf_clear(lam_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void lam_buf_free(lam_buf_t *b)
{
    if (!b)
        return;
    lam_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *lam_buf_detach(lam_buf_t *b, size_t *len)
{
    if (!b->data)
        lam_buf_reserve(b, 0);
    char *d = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

ssize_t lam_buf_read_fd(lam_buf_t *b, int fd, size_t max)
{
    size_t got = 0;
    while (got < max) {
        size_t want = max - got < 65536 ? max - got : 65536;
        lam_buf_reserve(b, want);
        ssize_t r = read(fd, b->data + b->len, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        b->len += (size_t)r;
        b->data[b->len] = '\0';
        got += (size_t)r;
    }
    return (ssize_t)got;
}
