/* lam_buf.h - growable byte buffer (binary safe, always NUL-terminated for convenience). */
#ifndef LAM_BUF_H
#define LAM_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct lam_buf {
    char *data;  /* owned; NUL-terminated after every operation (not counted in len) */
    size_t len;
    size_t cap;
} lam_buf_t;

#define LAM_BUF_INIT {NULL, 0, 0}

/** Make room for at least extra more bytes. */
void lam_buf_reserve(lam_buf_t *b, size_t extra);
void lam_buf_append(lam_buf_t *b, const void *data, size_t len);
void lam_buf_append_str(lam_buf_t *b, const char *s);
void lam_buf_append_char(lam_buf_t *b, char c);
/** printf-style append. */
void lam_buf_printf(lam_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lam_buf_vprintf(lam_buf_t *b, const char *fmt, va_list ap);
void lam_buf_append_i64(lam_buf_t *b, int64_t v);
/**
 * Append what fd holds until end of file, at most max bytes (retrying EINTR). Returns the number
 * of bytes appended, or -1 with errno set on a read error (what was read stays appended).
 */
ssize_t lam_buf_read_fd(lam_buf_t *b, int fd, size_t max);
/** Reset length to 0, keep the allocation. */
void lam_buf_clear(lam_buf_t *b);
/** Release the allocation; the buffer may be reused afterwards. Accepts NULL. */
void lam_buf_free(lam_buf_t *b);
/** Hand the data over to the caller (who frees it with lam_free) and reset the buffer. */
char *lam_buf_detach(lam_buf_t *b, size_t *len);

#endif
