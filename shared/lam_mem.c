/* lam_mem.c - allocation wrappers: one policy for out-of-memory (abort with a message). */
#include "lam_mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void lam_oom(size_t size)
{
    fprintf(stderr, "lam: out of memory allocating %zu bytes\n", size);
    abort();
}

void *lam_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        lam_oom(size);
    return p;
}

void *lam_calloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        lam_oom(nmemb * size);
    return p;
}

void *lam_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        lam_oom(size);
    return p;
}

char *lam_strdup(const char *s)
{
    if (!s)
        return NULL;
    return lam_strndup(s, strlen(s));
}

char *lam_strndup(const char *s, size_t n)
{
    char *p = lam_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void lam_free(void *ptr)
{
    free(ptr);
}
