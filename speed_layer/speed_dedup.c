/* speed_dedup.c - where each event id was first counted: per-session slot hashes and this session's Bloom filters. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "lam_hll.h"
#include "lam_mem.h"
#include "lam_store.h"
#include "lam_time.h"
#include "speed.h"

#define BLOOM_K 11              /* hash functions: ~0.05 % false hits at 16 bits per id */
#define BLOOM_BITS_PER_ID 16    /* the same memory as 10 (sizes are rounded up to a power of two) */
#define BLOOM_FIRST_IDS 65536   /* ids of a slot's first filter; each further one is twice as large ... */
#define BLOOM_MAX_IDS 524288    /* ... up to this (1 MB): 2M ids take 5 MB of filters, not 8 (the last one half empty) */

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

/* Decimal of v ending at end. */
static char *u64_dec(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

void speed_dedup_shard_key(lam_buf_t *out, int64_t slot, const char *token, unsigned shard)
{
    /* "@{slot}:{token}:{shard}" without snprintf: a batch builds up to SPEED_DEDUP_SHARDS of them */
    char s[80], *e = s + sizeof(s), *p = u64_dec(e, shard);
    size_t tl = strnlen(token, 40);
    *--p = ':';
    p -= tl;
    memcpy(p, token, tl);
    *--p = ':';
    p = u64_dec(p, slot < 0 ? 0 - (uint64_t)slot : (uint64_t)slot);
    if (slot < 0)
        *--p = '-';
    *--p = '@';
    lam_store_dedup_key(out, p, (size_t)(e - p));
}

uint64_t speed_dedup_id_hash(const char *id, size_t len)
{
    return lam_hll_hash(id, len);
}

unsigned speed_dedup_shard(uint64_t idh)
{
    return (unsigned)((lam_mix64(idh ^ 0x5348415244ULL) >> 32) % SPEED_DEDUP_SHARDS);
}

static int get_varint(const char **p, const char *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int sh = 0; sh < 64 && *p < end; sh += 7) {
        uint8_t c = (uint8_t) * (*p)++;
        x |= (uint64_t)(c & 0x7f) << sh;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* A varint at p (room for 10 bytes); returns its end. */
static char *varint_at(char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (char)(0x80 | (v & 0x7f));
        v >>= 7;
    }
    *p++ = (char)v;
    return p;
}

#if !defined(__SSE2__)
/* Hex digit values of '0'-'9' and 'a'-'f' (lowercase only); 0x10 marks any other byte. */
static const uint8_t hexv[256] = {
#define X16 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10
    X16, X16, X16,
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, /* 0x30: '0'-'9' */
    X16, X16,
    0x10, 10, 11, 12, 13, 14, 15, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, /* 0x60: 'a'-'f' */
    X16, X16, X16, X16, X16, X16, X16, X16, X16,
#undef X16
};
#endif
/* where the 16 bytes' hex pairs are in the canonical text */
static const uint8_t uuid_pos[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};

/* The 16 bytes of an id that is a UUID in canonical lowercase text (8-4-4-4-12); 0 when it is not one. */
static int uuid_pack(const char *id, size_t len, uint8_t out[16])
{
    if (len != SPEED_DEDUP_UUID_LEN || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-')
        return 0;
#if defined(__SSE2__)
    /* the 32 hex digits in a row, checked and converted 16 at a time (this runs once per counted event) */
    char h[32];
    memcpy(h, id, 8);
    memcpy(h + 8, id + 9, 4);
    memcpy(h + 12, id + 14, 4);
    memcpy(h + 16, id + 19, 4);
    memcpy(h + 20, id + 24, 12);
    __m128i pairs[2];
    for (int half = 0; half < 2; half++) {
        __m128i c = _mm_loadu_si128((const __m128i *)(h + 16 * half));
        __m128i d = _mm_sub_epi8(c, _mm_set1_epi8('0')), a = _mm_sub_epi8(c, _mm_set1_epi8('a'));
        __m128i isd = _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d);
        __m128i isa = _mm_cmpeq_epi8(_mm_min_epu8(a, _mm_set1_epi8(5)), a);
        if (_mm_movemask_epi8(_mm_or_si128(isd, isa)) != 0xffff)
            return 0;
        __m128i v = _mm_or_si128(_mm_and_si128(isd, d), _mm_and_si128(isa, _mm_add_epi8(a, _mm_set1_epi8(10))));
        /* each 16-bit lane: first digit in its low byte, second in its high byte -> first << 4 | second */
        pairs[half] = _mm_or_si128(_mm_and_si128(_mm_slli_epi16(v, 4), _mm_set1_epi16(0x00f0)), _mm_srli_epi16(v, 8));
    }
    _mm_storeu_si128((__m128i *)out, _mm_packus_epi16(pairs[0], pairs[1]));
    return 1;
#else
    const uint8_t *u = (const uint8_t *)id;
    unsigned bad = 0;
    for (size_t k = 0; k < 16; k++) {
        unsigned hi = hexv[u[uuid_pos[k]]], lo = hexv[u[uuid_pos[k] + 1]];
        bad |= hi | lo;
        out[k] = (uint8_t)(hi << 4 | lo);
    }
    return !(bad & 0x10);
#endif
}

static void uuid_unpack(const uint8_t in[16], char out[SPEED_DEDUP_UUID_LEN])
{
    static const char hex[] = "0123456789abcdef";
    out[8] = out[13] = out[18] = out[23] = '-';
    for (size_t k = 0; k < 16; k++) {
        out[uuid_pos[k]] = hex[in[k] >> 4];
        out[uuid_pos[k] + 1] = hex[in[k] & 15];
    }
}

void speed_dedup_entry(lam_buf_t *b, const char *id, size_t len, int partition, int64_t offset)
{
    /* one reserve, no per-part append: this runs once per counted event */
    lam_buf_reserve(b, len + 30);
    char *p = b->data + b->len;
    uint8_t u[16];
    if (uuid_pack(id, len, u)) {
        /* README "Dedup": a canonical UUID as its 16 bytes after a zero length (no id is empty) */
        *p++ = 0;
        memcpy(p, u, 16);
        p += 16;
    } else {
        p = varint_at(p, len);
        memcpy(p, id, len);
        p += len;
    }
    p = varint_at(p, (uint64_t)partition);
    p = varint_at(p, (uint64_t)offset);
    b->len = (size_t)(p - b->data);
}

int speed_dedup_entry_next(const char **p, const char *end, char uuid[SPEED_DEDUP_UUID_LEN], const char **id,
                           size_t *len, int64_t *partition, int64_t *offset)
{
    if (*p >= end)
        return 0;
    uint64_t l, pa, of;
    if (get_varint(p, end, &l) < 0 || l > (uint64_t)(end - *p))
        return -1;
    if (l == 0) { /* a UUID's 16 bytes, given back as its canonical text */
        if (end - *p < 16)
            return -1;
        uuid_unpack((const uint8_t *)*p, uuid);
        *id = uuid;
        *len = SPEED_DEDUP_UUID_LEN;
        *p += 16;
    } else {
        *id = *p;
        *len = (size_t)l;
        *p += l;
    }
    if (get_varint(p, end, &pa) < 0 || get_varint(p, end, &of) < 0)
        return -1;
    *partition = (int64_t)pa;
    *offset = (int64_t)of;
    return 1;
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

/* ---- Bloom filters, one or more per (session, slot) (nbits 0: over budget, every id may be in it) ---- */

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

static void bloom_set(speed_bloom_t *b, uint64_t h1, uint64_t h2)
{
    size_t mask = b->nbits - 1;
    for (int i = 0; i < BLOOM_K; i++) {
        size_t bit = (size_t)(h1 + (uint64_t)i * h2) & mask;
        b->bits[bit >> 6] |= 1ULL << (bit & 63);
    }
}

static void id_hashes(uint64_t idh, uint64_t *h1, uint64_t *h2)
{
    *h1 = idh;
    *h2 = lam_mix64(idh) | 1;
}

int speed_dedup_maybe(const speed_ctx_t *ctx, uint64_t idh)
{
    if (!ctx->nblooms)
        return 0;
    uint64_t h1, h2;
    id_hashes(idh, &h1, &h2);
    for (size_t i = 0; i < ctx->nblooms; i++)
        if (bloom_has(&ctx->blooms[i], h1, h2))
            return 1;
    return 0;
}

size_t speed_dedup_hit_keys(const speed_ctx_t *ctx, uint64_t idh, unsigned shard, lam_buf_t *keys)
{
    uint64_t h1, h2;
    id_hashes(idh, &h1, &h2);
    size_t n = 0;
    lam_buf_t k = LAM_BUF_INIT;
    for (size_t i = 0; i < ctx->nblooms; i++) {
        const speed_bloom_t *b = &ctx->blooms[i];
        if (!b->nbits || !bloom_has(b, h1, h2))
            continue; /* over budget: those ids are in a slot hash (HMGET) */
        size_t j = 0; /* a slot may have several filters: one key per (session, slot) */
        for (; j < i; j++)
            if (ctx->blooms[j].slot == b->slot && !strcmp(ctx->blooms[j].token, b->token) &&
                bloom_has(&ctx->blooms[j], h1, h2))
                break;
        if (j < i)
            continue;
        speed_dedup_shard_key(&k, b->slot, b->token, shard);
        lam_buf_append(keys, k.data, k.len + 1);
        n++;
    }
    lam_buf_free(&k);
    return n;
}

int speed_dedup_over_budget(const speed_ctx_t *ctx, const char *token, int64_t slot)
{
    for (size_t i = 0; i < ctx->nblooms; i++)
        if (!ctx->blooms[i].nbits && ctx->blooms[i].slot == slot && !strcmp(ctx->blooms[i].token, token))
            return 1;
    return 0;
}

void speed_dedup_forget(speed_ctx_t *ctx, const char *token, int64_t slot)
{
    size_t k = 0;
    for (size_t i = 0; i < ctx->nblooms; i++) {
        if (ctx->blooms[i].slot == slot && !strcmp(ctx->blooms[i].token, token)) {
            ctx->bloom_bytes -= ctx->blooms[i].nbits / 8;
            lam_free(ctx->blooms[i].bits);
        } else {
            ctx->blooms[k++] = ctx->blooms[i];
        }
    }
    ctx->nblooms = k;
    ctx->bloom_add_last = 0;
}

void speed_dedup_drop_others(speed_ctx_t *ctx)
{
    size_t k = 0;
    for (size_t i = 0; i < ctx->nblooms; i++) {
        if (strcmp(ctx->blooms[i].token, ctx->dedup_token)) {
            ctx->bloom_bytes -= ctx->blooms[i].nbits / 8;
            lam_free(ctx->blooms[i].bits);
        } else {
            ctx->blooms[k++] = ctx->blooms[i];
        }
    }
    ctx->nblooms = k;
    ctx->bloom_add_last = 0;
}

int speed_dedup_add(speed_ctx_t *ctx, const char *token, int64_t slot, uint64_t idh)
{
    speed_bloom_t *b = NULL;
    /* a batch adds all its ids to one (session, slot): the filter written last is the newest of its
     * (session, slot) (a newer one is only ever made here), so when it has room the search below would
     * pick it, and no over-budget entry of that (session, slot) exists */
    if (ctx->bloom_add_last) {
        speed_bloom_t *l = &ctx->blooms[ctx->bloom_add_last - 1];
        if (l->slot == slot && l->nbits && l->n < l->cap && !strcmp(l->token, token))
            b = l;
    }
    if (!b) {
        size_t last_cap = 0;
        for (size_t i = 0; i < ctx->nblooms; i++)
            if (ctx->blooms[i].slot == slot && !strcmp(ctx->blooms[i].token, token)) {
                if (!ctx->blooms[i].nbits)
                    return 0; /* over budget */
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
            if (cap > BLOOM_MAX_IDS)
                cap = BLOOM_MAX_IDS;
            while (nbits < cap * BLOOM_BITS_PER_ID)
                nbits *= 2;
            *b = (speed_bloom_t){.slot = slot, .cap = cap};
            snprintf(b->token, sizeof(b->token), "%s", token);
            if (ctx->bloom_bytes + nbits / 8 <= (size_t)ctx->cfg.bloom_max_kb * 1024) {
                b->nbits = nbits;
                b->bits = lam_calloc(nbits / 64, sizeof(uint64_t));
                ctx->bloom_bytes += nbits / 8;
            } else {
                return 0;
            }
        }
    }
    ctx->bloom_add_last = (size_t)(b - ctx->blooms) + 1;
    uint64_t h1, h2;
    id_hashes(idh, &h1, &h2);
    bloom_set(b, h1, h2);
    b->n++;
    return 1;
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
    ctx->bloom_add_last = 0;
}
