/* lam_redis.c - Redis connection helpers shared by speed_layer, batch_layer and serving. */
#include "lam_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "lam_config.h"
#include "lam_log.h"
#include "lam_service.h"

typedef struct redis_url {
    char host[256];
    int port;
    char user[128];
    char password[256];
    int db;
} redis_url_t;

static int parse_url(const char *url, redis_url_t *u, char *errstr, size_t errstr_size)
{
    memset(u, 0, sizeof(*u));
    u->port = 6379;
    if (strncmp(url, "redis://", 8)) {
        snprintf(errstr, errstr_size, "redis url must start with redis://");
        return -1;
    }
    const char *p = url + 8;
    const char *at = strchr(p, '@');
    const char *slash = strchr(p, '/');
    if (at && (!slash || at < slash)) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            snprintf(u->user, sizeof(u->user), "%.*s", (int)(colon - p), p);
            snprintf(u->password, sizeof(u->password), "%.*s", (int)(at - colon - 1), colon + 1);
        } else {
            snprintf(u->password, sizeof(u->password), "%.*s", (int)(at - p), p);
        }
        p = at + 1;
    }
    size_t hostport_len = slash ? (size_t)(slash - p) : strlen(p);
    char hostport[300];
    if (hostport_len == 0 || hostport_len >= sizeof(hostport)) {
        snprintf(errstr, errstr_size, "redis url: bad host");
        return -1;
    }
    memcpy(hostport, p, hostport_len);
    hostport[hostport_len] = '\0';
    lam_addr_t addr;
    if (strchr(hostport, ':')) {
        if (lam_addr_parse(hostport, &addr) < 0) {
            snprintf(errstr, errstr_size, "redis url: bad host:port \"%s\"", hostport);
            return -1;
        }
        snprintf(u->host, sizeof(u->host), "%s", addr.host);
        u->port = addr.port;
    } else {
        snprintf(u->host, sizeof(u->host), "%s", hostport);
    }
    if (slash && slash[1]) {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (*end || db < 0 || db > 10000) {
            snprintf(errstr, errstr_size, "redis url: bad database \"%s\"", slash + 1);
            return -1;
        }
        u->db = (int)db;
    }
    return 0;
}

static int simple_cmd(redisContext *c, char *errstr, size_t errstr_size, int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (!r) {
        snprintf(errstr, errstr_size, "redis %s: %s", argv[0], c->errstr);
        return -1;
    }
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(errstr, errstr_size, "redis %s: %s", argv[0], r->str);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

redisContext *lam_redis_connect(const char *url, int timeout_ms, char *errstr, size_t errstr_size)
{
    redis_url_t u;
    if (parse_url(url, &u, errstr, errstr_size) < 0)
        return NULL;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(u.host, u.port, tv);
    if (!c || c->err) {
        snprintf(errstr, errstr_size, "cannot reach Redis at %s:%d: %s", u.host, u.port,
                 c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (u.password[0]) {
        const char *argv[3] = {"AUTH", u.user[0] ? u.user : u.password, u.password};
        if (simple_cmd(c, errstr, errstr_size, u.user[0] ? 3 : 2, argv) < 0) {
            redisFree(c);
            return NULL;
        }
    }
    if (u.db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", u.db);
        const char *argv[2] = {"SELECT", db};
        if (simple_cmd(c, errstr, errstr_size, 2, argv) < 0) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

int lam_redis_ping(redisContext *c, char *errstr, size_t errstr_size)
{
    const char *argv[1] = {"PING"};
    return simple_cmd(c, errstr, errstr_size, 1, argv);
}

redisContext *lam_redis_connect_wait(const char *url, int timeout_ms)
{
    lam_backoff_t bo = LAM_BACKOFF_INIT(200, 10000);
    char err[512];
    while (!lam_service_stopping()) {
        redisContext *c = lam_redis_connect(url, timeout_ms, err, sizeof(err));
        if (c) {
            lam_info("msg=\"redis reachable\" url=%s", url);
            return c;
        }
        int64_t d = lam_backoff_next(&bo);
        lam_warn("msg=\"%s\" retry_in_ms=%lld", err, (long long)d);
        lam_service_sleep_ms(d);
    }
    return NULL;
}
