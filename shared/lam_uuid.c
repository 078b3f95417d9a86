/* lam_uuid.c - UUIDv7 (RFC 9562) ids for events that arrive without one. */
#include "lam_uuid.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t g_last_ms = INT64_MIN;
static unsigned g_counter;            /* 12 bits used */
static uint8_t g_pool[512];           /* buffered randomness, refilled with getrandom() */
static size_t g_pool_pos = sizeof(g_pool);

static int rand_bytes(uint8_t *out, size_t n)
{
    if (g_pool_pos + n > sizeof(g_pool)) {
        size_t got = 0;
        while (got < sizeof(g_pool)) {
            ssize_t r = getrandom(g_pool + got, sizeof(g_pool) - got, 0);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                return -1;
            }
            got += (size_t)r;
        }
        g_pool_pos = 0;
    }
    memcpy(out, g_pool + g_pool_pos, n);
    g_pool_pos += n;
    return 0;
}

int lam_uuid7(char out[LAM_UUID_LEN + 1], int64_t now_ms)
{
    uint8_t u[16], r[10];
    pthread_mutex_lock(&g_lock);
    if (rand_bytes(r, sizeof(r))) {
        pthread_mutex_unlock(&g_lock);
        return -1;
    }
    if (now_ms > g_last_ms) {
        g_last_ms = now_ms;
        g_counter = ((unsigned)r[0] << 8 | r[1]) & 0x7ff; /* top bit clear: room to count up */
    } else if (++g_counter > 0xfff) {
        g_last_ms++; /* counter exhausted: borrow the next millisecond */
        g_counter = ((unsigned)r[0] << 8 | r[1]) & 0x7ff;
    }
    uint64_t ms = (uint64_t)g_last_ms;
    unsigned ctr = g_counter;
    pthread_mutex_unlock(&g_lock);

    for (int i = 0; i < 6; i++)
        u[i] = (uint8_t)(ms >> (40 - 8 * i));
    u[6] = (uint8_t)(0x70 | (ctr >> 8));
    u[7] = (uint8_t)ctr;
    u[8] = (uint8_t)(0x80 | (r[2] & 0x3f));
    memcpy(u + 9, r + 3, 7);
    static const char hex[] = "0123456789abcdef";
    size_t w = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[w++] = '-';
        out[w++] = hex[u[i] >> 4];
        out[w++] = hex[u[i] & 15];
    }
    out[w] = '\0';
    return 0;
}

int64_t lam_uuid7_ms(const char *s, uint64_t len)
{
    if (len != LAM_UUID_LEN || s[14] != '7')
        return -1;
    int64_t ms = 0;
    for (int i = 0; i < 13; i++) {
        if (i == 8)
            continue;
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return -1;
        ms = ms << 4 | v;
    }
    return ms;
}
