/* speed_redis.c - where the speed layer talks to Redis. */
#include "lam_redis.h"
#include "speed.h"

int speed_redis_connect(speed_ctx_t *ctx)
{
    ctx->redis = lam_redis_connect_wait(ctx->cfg.common.redis_url, 2000);
    atomic_store(&ctx->redis_ok, ctx->redis != NULL);
    return ctx->redis ? 0 : -1;
}
