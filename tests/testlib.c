/* testlib.c - helpers shared by the cmocka tests. */
#include "testlib.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lam_mem.h"

char *lam_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = lam_malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    if (len)
        *len = got;
    return buf;
}

const char *lam_test_env(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static unsigned long long g_state;

unsigned long long lam_test_seed(void)
{
    static unsigned long long seed;
    if (!seed) {
        const char *s = getenv("LAM_TEST_SEED");
        seed = s ? strtoull(s, NULL, 10) : 0x9e3779b97f4a7c15ULL;
        if (!seed)
            seed = 1;
        g_state = seed;
    }
    return seed;
}

unsigned long long lam_test_rand(void)
{
    if (!g_state)
        lam_test_seed();
    unsigned long long x = g_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return g_state = x;
}

int lam_test_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || getsockname(s, (struct sockaddr *)&a, &len)) {
        if (s >= 0)
            close(s);
        return -1;
    }
    close(s);
    return ntohs(a.sin_port);
}
