/* lam_hll.h - HyperLogLog byte-compatible with Redis 7 (PFADD/PFCOUNT/PFMERGE, dense and sparse). */
#ifndef LAM_HLL_H
#define LAM_HLL_H

#include <stddef.h>
#include <stdint.h>

#include "lam_buf.h"

#define LAM_HLL_P 14
#define LAM_HLL_REGISTERS 16384
#define LAM_HLL_HDR_SIZE 16
#define LAM_HLL_DENSE_SIZE (LAM_HLL_HDR_SIZE + (LAM_HLL_REGISTERS * 6 + 7) / 8) /* 12304 */
#define LAM_HLL_SPARSE_MAX 1024 /* registers kept sparse (4 bytes each) before going dense */

/**
 * One HyperLogLog. Starts sparse (sorted register list, ~4 bytes per non-zero register) and
 * switches to Redis's packed 6-bit dense array (12 KiB) past LAM_HLL_SPARSE_MAX registers.
 */
typedef struct lam_hll lam_hll_t;

/** New empty HLL; free with lam_hll_free. */
lam_hll_t *lam_hll_new(void);
/** Deep copy; free with lam_hll_free. */
lam_hll_t *lam_hll_dup(const lam_hll_t *h);
/** Free; accepts NULL. */
void lam_hll_free(lam_hll_t *h);
/** Reset to empty (keeps nothing). */
void lam_hll_clear(lam_hll_t *h);

/** Redis's MurmurHash64A with seed 0xadc83b19. */
uint64_t lam_hll_hash(const void *data, size_t len);
/** MurmurHash3's 64-bit finalizer: mixes a value or a combination of hashes for hash tables. */
static inline uint64_t lam_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/** Add an element (binary safe), exactly like PFADD. Returns 1 if a register changed. */
int lam_hll_add(lam_hll_t *h, const void *data, size_t len);
/** Add an element by its lam_hll_hash() (computed once for several HLLs). Returns 1 if a register changed. */
int lam_hll_add_hash(lam_hll_t *h, uint64_t hash);
/**
 * The register a hash sets and the value it offers (Redis's hllPatLen): lam_hll_add_hash(h, hash)
 * is lam_hll_set_max(h, lam_hll_pat(hash, &val), val).
 */
static inline unsigned lam_hll_pat(uint64_t hash, unsigned *val)
{
    unsigned reg = (unsigned)(hash & (LAM_HLL_REGISTERS - 1));
    hash >>= LAM_HLL_P;
    hash |= (uint64_t)1 << (64 - LAM_HLL_P);
    *val = (unsigned)__builtin_ctzll(hash) + 1; /* hash != 0: bit 64 - P is set */
    return reg;
}
/**
 * Register reg (0..16383) = max(register, val) for val 1..64 - LAM_HLL_P + 1. Registers only grow,
 * so updates may be applied in any order with the same final state. Returns 1 if it changed.
 */
int lam_hll_set_max(lam_hll_t *h, unsigned reg, unsigned val);
/** dst = register-wise max(dst, src), like PFMERGE. */
void lam_hll_merge(lam_hll_t *dst, const lam_hll_t *src);
/**
 * Merge a Redis HLL string value (GET of a PFADD key; dense or sparse encoding) into dst.
 * Returns 0, or -1 with a message when the blob is not a valid HLL. dst is unchanged on error.
 */
int lam_hll_merge_redis_blob(lam_hll_t *dst, const void *blob, size_t len, char *errstr, size_t errstr_size);
/**
 * Write the Redis dense representation (LAM_HLL_DENSE_SIZE bytes) with a valid cached
 * cardinality, i.e. exactly what Redis holds after PFADD ...; PFCOUNT on a dense key.
 */
void lam_hll_to_redis_dense(const lam_hll_t *h, uint8_t out[LAM_HLL_DENSE_SIZE]);
/**
 * Append a compact Redis-compatible representation to out: Redis sparse encoding when every
 * register is <= 32 and the HLL is sparse, else dense. Both load in Redis (SET then PFCOUNT).
 */
void lam_hll_to_redis(const lam_hll_t *h, lam_buf_t *out);
/** Cardinality estimate, Redis 7's hllCount (Ertl's improved estimator); equals PFCOUNT. */
uint64_t lam_hll_count(const lam_hll_t *h);
/**
 * lam_hll_count, remembered in h until h changes: later lam_hll_count calls on h (and on
 * lam_hll_dup copies of it) return it at once. For HLLs read many times and never changed (serving's
 * cached batch cells); call it before sharing h between threads.
 */
uint64_t lam_hll_count_cache(lam_hll_t *h);
/** Register i (0..16383). */
unsigned lam_hll_register(const lam_hll_t *h, unsigned i);
/** All registers, one byte each. */
void lam_hll_registers(const lam_hll_t *h, uint8_t out[LAM_HLL_REGISTERS]);
/** 1 when both have identical registers. */
int lam_hll_equal(const lam_hll_t *a, const lam_hll_t *b);
/** 1 while the sparse representation is in use. */
int lam_hll_is_sparse(const lam_hll_t *h);
/** Heap bytes used by h. */
size_t lam_hll_memory(const lam_hll_t *h);

#endif
