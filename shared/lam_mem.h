/* lam_mem.h - allocation that aborts on out-of-memory, so callers never check for NULL. */
#ifndef LAM_MEM_H
#define LAM_MEM_H

#include <stddef.h>

/** malloc() that aborts the process on out-of-memory. Never returns NULL. */
void *lam_malloc(size_t size);
/** calloc() that aborts on out-of-memory. */
void *lam_calloc(size_t nmemb, size_t size);
/** realloc() that aborts on out-of-memory. */
void *lam_realloc(void *ptr, size_t size);
/** strdup() that aborts on out-of-memory; NULL in, NULL out. */
char *lam_strdup(const char *s);
/** strndup() that aborts on out-of-memory. */
char *lam_strndup(const char *s, size_t n);
/** free(); accepts NULL. */
void lam_free(void *ptr);

#define LAM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
