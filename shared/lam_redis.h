/* lam_redis.h - hiredis helpers: connect from a redis:// URL with timeouts and AUTH/SELECT. */
#ifndef LAM_REDIS_H
#define LAM_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

/**
 * Connect to url (redis://[[user]:password@]host[:port][/db]) with connect and command timeouts of
 * timeout_ms, then AUTH and SELECT as the URL says. NULL with errstr on failure; the caller frees
 * the context with redisFree().
 */
redisContext *lam_redis_connect(const char *url, int timeout_ms, char *errstr, size_t errstr_size);
/**
 * lam_redis_connect() retried with backoff (logging each failure) until it succeeds or the
 * service is asked to stop (then NULL).
 */
redisContext *lam_redis_connect_wait(const char *url, int timeout_ms);
/** 0 when PING answers PONG. */
int lam_redis_ping(redisContext *c, char *errstr, size_t errstr_size);

#endif
