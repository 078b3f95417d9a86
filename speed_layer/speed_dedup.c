/* speed_dedup.c - where each event id was first counted: per-session slot hashes and this session's Bloom filters. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "lam_hll.h"
#include "lam_mem.h"
#include "lam_store.h"
#include "lam_time.h"
#include "speed.h"

#define BLOOM_K 7               /* hash functions: ~0.8 % false hits at 10 bits per id */
#define BLOOM_BITS_PER_ID 10
#define BLOOM_FIRST_IDS 65536   /* ids of a slot's first filter; each further one is twice as large */

int64_t dedup_slot_seconds(const speed_ctx_t *ctx)
{
    int64_t w = ctx->cfg.dedup_window_ms / 1000;
    return w / 6 > 0 ? w / 6 : 1;
}

void speed_dedup_slot_key(lam_buf_t *out, int64_t slot, const char *token)
{
    char s[64];
    int n = *token ? snprintf(s, sizeof(s), "@%" PRId64 ":%s", slot, token) : snprintf(s, sizeof(s), "@%" PRId64, slot);
    lam_store_dedup_key(out, s, (size_t)n);
}

void speed_dedup_sessions_key(lam_buf_t *out)
{
    lam_store_dedup_key(out, "@sessions", 9);
}

int64_t speed_dedup_keep_s(const speed_ctx_t *ctx)
{
    return ctx->cfg.dedup_window_ms / 1000 + 3 * dedup_slot_seconds(ctx);
}

void speed_dedup_init(speed_ctx_t *ctx)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = lam_mix64((uint64_t)lam_time_now_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&r);
    snprintf(ctx->dedup_token, sizeof(ctx->dedup_token), "%016" PRIx64, r);
}

void speed_dedup_free(speed_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->nblooms; i++)
        lam_free(ctx->blooms[i].bits);
    lam_free(ctx->blooms);
    lam_buf_free(&ctx->other_keys);
}

/* ---- this session's Bloom filters, one or more per slot (nbits 0: over budget, every id may be in it) ---- */

static int bloom_has(const speed_bloom_t *b, uint64_t h1, uint64_t h2)
{
    if (!b->nbits)
        return 1;
    size_t mask = b->nbits - 1;
    for (int i = 0; i < BLOOM_K; i++) {
        size_t bit = (size_t)(h1 + (uint64_t)i * h2) & mask;
        if (!(b->bits[bit >> 6] & (1ULL << (bit & 63))))
            return 0;
    }
    return 1;
}

static void id_hashes(const char *id, size_t len, uint64_t *h1, uint64_t *h2)
{
    *h1 = lam_hll_hash(id, len);
    *h2 = lam_mix64(*h1) | 1;
}

int speed_dedup_maybe_own(const speed_ctx_t *ctx, const char *id, size_t len)
{
    if (!ctx->nblooms)
        return 0;
    uint64_t h1, h2;
    id_hashes(id, len, &h1, &h2);
    for (size_t i = 0; i < ctx->nblooms; i++)
        if (bloom_has(&ctx->blooms[i], h1, h2))
            return 1;
    return 0;
}

int speed_dedup_own_slot(const speed_ctx_t *ctx, int64_t slot)
{
    for (size_t i = 0; i < ctx->nblooms; i++)
        if (ctx->blooms[i].slot == slot)
            return 1;
    return 0;
}

void speed_dedup_add(speed_ctx_t *ctx, int64_t slot, const char *id, size_t len)
{
    speed_bloom_t *b = NULL;
    size_t last_cap = 0;
    for (size_t i = 0; i < ctx->nblooms; i++)
        if (ctx->blooms[i].slot == slot) {
            if (!ctx->blooms[i].nbits)
                return; /* over budget: this slot is looked up in Redis for every id */
            last_cap = ctx->blooms[i].cap;
            if (ctx->blooms[i].n < ctx->blooms[i].cap)
                b = &ctx->blooms[i];
        }
    if (!b) {
        if (ctx->nblooms == ctx->blooms_cap) {
            ctx->blooms_cap = ctx->blooms_cap ? 2 * ctx->blooms_cap : 8;
            ctx->blooms = lam_realloc(ctx->blooms, ctx->blooms_cap * sizeof(*ctx->blooms));
        }
        b = &ctx->blooms[ctx->nblooms++];
        size_t cap = last_cap ? 2 * last_cap : BLOOM_FIRST_IDS, nbits = 64;
        while (nbits < cap * BLOOM_BITS_PER_ID)
            nbits *= 2;
        *b = (speed_bloom_t){slot, NULL, 0, cap, 0};
        if (ctx->bloom_bytes + nbits / 8 <= SPEED_BLOOM_MAX_BYTES) {
            b->nbits = nbits;
            b->bits = lam_calloc(nbits / 64, sizeof(uint64_t));
            ctx->bloom_bytes += nbits / 8;
        } else {
            return;
        }
    }
    uint64_t h1, h2;
    id_hashes(id, len, &h1, &h2);
    size_t mask = b->nbits - 1;
    for (int i = 0; i < BLOOM_K; i++) {
        size_t bit = (size_t)(h1 + (uint64_t)i * h2) & mask;
        b->bits[bit >> 6] |= 1ULL << (bit & 63);
    }
    b->n++;
}

void speed_dedup_prune(speed_ctx_t *ctx, int64_t lo)
{
    size_t k = 0;
    for (size_t i = 0; i < ctx->nblooms; i++) {
        if (ctx->blooms[i].slot < lo) {
            ctx->bloom_bytes -= ctx->blooms[i].nbits / 8;
            lam_free(ctx->blooms[i].bits);
        } else {
            ctx->blooms[k++] = ctx->blooms[i];
        }
    }
    ctx->nblooms = k;
}
