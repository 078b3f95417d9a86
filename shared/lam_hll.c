/* lam_hll.c - HyperLogLog byte-compatible with Redis 7 (PFADD/PFCOUNT/PFMERGE, dense and sparse). */
#include "lam_hll.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lam_mem.h"

#define HLL_Q (64 - LAM_HLL_P)
#define HLL_BITS 6
#define HLL_REGISTER_MAX 63
#define HLL_DENSE_BYTES (LAM_HLL_DENSE_SIZE - LAM_HLL_HDR_SIZE)
#define HLL_ALPHA_INF 0.721347520444481703680
#define SPARSE_VAL_MAX 32

struct lam_hll {
    uint32_t *sp;    /* sparse: sorted entries (register << 8 | value), value > 0 */
    uint32_t n, cap;
    uint8_t *dense;  /* dense: Redis's packed 6-bit registers (+1 pad byte); NULL while sparse */
    int64_t card;    /* lam_hll_count remembered by lam_hll_count_cache; -1 = not known */
};

/* Redis's HLL_DENSE_GET_REGISTER / HLL_DENSE_SET_REGISTER (reads one byte past the last). */
static inline unsigned dense_get(const uint8_t *p, unsigned reg)
{
    unsigned byte = reg * HLL_BITS / 8, fb = reg * HLL_BITS & 7, fb8 = 8 - fb;
    unsigned b0 = p[byte], b1 = p[byte + 1];
    return ((b0 >> fb) | (b1 << fb8)) & HLL_REGISTER_MAX;
}

static inline void dense_set(uint8_t *p, unsigned reg, unsigned val)
{
    unsigned byte = reg * HLL_BITS / 8, fb = reg * HLL_BITS & 7, fb8 = 8 - fb;
    p[byte] &= (uint8_t) ~(HLL_REGISTER_MAX << fb);
    p[byte] |= (uint8_t)(val << fb);
    p[byte + 1] &= (uint8_t) ~(HLL_REGISTER_MAX >> fb8);
    p[byte + 1] |= (uint8_t)(val >> fb8);
}

/* Four registers in three bytes (6 bits each, least significant first): whole-array loops
 * (merge, count, unpack) work a group at a time instead of a register at a time. */
static inline void unpack4(const uint8_t *p, uint8_t r[4])
{
    unsigned b0 = p[0], b1 = p[1], b2 = p[2];
    r[0] = (uint8_t)(b0 & HLL_REGISTER_MAX);
    r[1] = (uint8_t)((b0 >> 6 | b1 << 2) & HLL_REGISTER_MAX);
    r[2] = (uint8_t)((b1 >> 4 | b2 << 4) & HLL_REGISTER_MAX);
    r[3] = (uint8_t)(b2 >> 2);
}

static inline void pack4(uint8_t *p, const uint8_t r[4])
{
    p[0] = (uint8_t)(r[0] | r[1] << 6);
    p[1] = (uint8_t)(r[1] >> 2 | r[2] << 4);
    p[2] = (uint8_t)(r[2] >> 4 | r[3] << 2);
}

/* the group at p = register-wise max(group, s) */
static inline void merge4(uint8_t *p, const uint8_t s[4])
{
    uint8_t d[4];
    unpack4(p, d);
    if (s[0] > d[0] || s[1] > d[1] || s[2] > d[2] || s[3] > d[3]) {
        for (int k = 0; k < 4; k++)
            d[k] = s[k] > d[k] ? s[k] : d[k];
        pack4(p, d);
    }
}

/* dense = register-wise max(dense, regs) */
static void dense_merge_regs(uint8_t *dense, const uint8_t *regs)
{
    for (unsigned g = 0; g < LAM_HLL_REGISTERS / 4; g++)
        merge4(dense + 3 * g, regs + 4 * g);
}

static void dense_unpack(const uint8_t *dense, uint8_t *regs)
{
    for (unsigned g = 0; g < LAM_HLL_REGISTERS / 4; g++)
        unpack4(dense + 3 * g, regs + 4 * g);
}

uint64_t lam_hll_hash(const void *key, size_t len)
{
    const uint64_t m = 0xc6a4a7935bd1e995ULL;
    const int r = 47;
    uint64_t h = 0xadc83b19ULL ^ ((uint64_t)len * m);
    const uint8_t *data = key;
    const uint8_t *end = data + (len - (len & 7));
    while (data != end) {
        uint64_t k;
        memcpy(&k, data, 8); /* little-endian hosts, as Redis on x86/arm64 */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        k = __builtin_bswap64(k);
#endif
        k *= m;
        k ^= k >> r;
        k *= m;
        h ^= k;
        h *= m;
        data += 8;
    }
    switch (len & 7) {
    case 7: h ^= (uint64_t)data[6] << 48; /* fall through */
    case 6: h ^= (uint64_t)data[5] << 40; /* fall through */
    case 5: h ^= (uint64_t)data[4] << 32; /* fall through */
    case 4: h ^= (uint64_t)data[3] << 24; /* fall through */
    case 3: h ^= (uint64_t)data[2] << 16; /* fall through */
    case 2: h ^= (uint64_t)data[1] << 8;  /* fall through */
    case 1:
        h ^= (uint64_t)data[0];
        h *= m;
    }
    h ^= h >> r;
    h *= m;
    h ^= h >> r;
    return h;
}

lam_hll_t *lam_hll_new(void)
{
    lam_hll_t *h = lam_calloc(1, sizeof(lam_hll_t));
    h->card = -1;
    return h;
}

void lam_hll_free(lam_hll_t *h)
{
    if (!h)
        return;
    lam_free(h->sp);
    lam_free(h->dense);
    lam_free(h);
}

void lam_hll_clear(lam_hll_t *h)
{
    lam_free(h->sp);
    lam_free(h->dense);
    memset(h, 0, sizeof(*h));
    h->card = -1;
}

lam_hll_t *lam_hll_dup(const lam_hll_t *h)
{
    lam_hll_t *d = lam_hll_new();
    if (h->dense) {
        d->dense = lam_malloc(HLL_DENSE_BYTES + 1);
        memcpy(d->dense, h->dense, HLL_DENSE_BYTES + 1);
    } else if (h->n) {
        d->sp = lam_malloc(h->n * sizeof(uint32_t));
        memcpy(d->sp, h->sp, h->n * sizeof(uint32_t));
        d->n = d->cap = h->n;
    }
    d->card = h->card;
    return d;
}

static void to_dense(lam_hll_t *h)
{
    h->dense = lam_calloc(1, HLL_DENSE_BYTES + 1);
    for (uint32_t i = 0; i < h->n; i++)
        dense_set(h->dense, h->sp[i] >> 8, h->sp[i] & 0xff);
    lam_free(h->sp);
    h->sp = NULL;
    h->n = h->cap = 0;
}

/* register = max(register, val); returns 1 if it changed */
static int set_max(lam_hll_t *h, unsigned reg, unsigned val)
{
    if (h->dense) {
        if (dense_get(h->dense, reg) >= val)
            return 0;
        dense_set(h->dense, reg, val);
        return 1;
    }
    /* first entry with register >= reg (entries are reg << 8 | val with val > 0): a branch-free
       lower bound, as the registers of random hashes mispredict half of a branchy search's steps */
    uint32_t lo = 0;
    if (h->n) {
        const uint32_t key = reg << 8, *base = h->sp;
        uint32_t len = h->n;
        while (len > 1) {
            uint32_t half = len / 2;
            base = base[half] < key ? base + half : base;
            len -= half;
        }
        lo = (uint32_t)(base - h->sp) + (*base < key);
    }
    if (lo < h->n && (h->sp[lo] >> 8) == reg) {
        if ((h->sp[lo] & 0xff) >= val)
            return 0;
        h->sp[lo] = reg << 8 | val;
        return 1;
    }
    if (h->n >= LAM_HLL_SPARSE_MAX) {
        to_dense(h);
        dense_set(h->dense, reg, val);
        return 1;
    }
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 8;
        if (h->cap > LAM_HLL_SPARSE_MAX)
            h->cap = LAM_HLL_SPARSE_MAX;
        h->sp = lam_realloc(h->sp, h->cap * sizeof(uint32_t));
    }
    memmove(h->sp + lo + 1, h->sp + lo, (h->n - lo) * sizeof(uint32_t));
    h->sp[lo] = reg << 8 | val;
    h->n++;
    return 1;
}

int lam_hll_add(lam_hll_t *h, const void *data, size_t len)
{
    return lam_hll_add_hash(h, lam_hll_hash(data, len));
}

int lam_hll_add_hash(lam_hll_t *h, uint64_t hash)
{
    unsigned count, index = lam_hll_pat(hash, &count);
    return lam_hll_set_max(h, index, count);
}

int lam_hll_set_max(lam_hll_t *h, unsigned reg, unsigned val)
{
    if (!set_max(h, reg, val))
        return 0;
    h->card = -1;
    return 1;
}

void lam_hll_merge(lam_hll_t *dst, const lam_hll_t *src)
{
    dst->card = -1;
    if (!src->dense) {
        for (uint32_t i = 0; i < src->n; i++)
            set_max(dst, src->sp[i] >> 8, src->sp[i] & 0xff);
        return;
    }
    if (!dst->dense)
        to_dense(dst);
    for (unsigned g = 0; g < LAM_HLL_REGISTERS / 4; g++) {
        uint8_t s[4];
        unpack4(src->dense + 3 * g, s);
        merge4(dst->dense + 3 * g, s);
    }
}

unsigned lam_hll_register(const lam_hll_t *h, unsigned i)
{
    if (i >= LAM_HLL_REGISTERS)
        return 0;
    if (h->dense)
        return dense_get(h->dense, i);
    uint32_t lo = 0, hi = h->n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if ((h->sp[mid] >> 8) < i)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < h->n && (h->sp[lo] >> 8) == i ? h->sp[lo] & 0xff : 0;
}

void lam_hll_registers(const lam_hll_t *h, uint8_t out[LAM_HLL_REGISTERS])
{
    if (h->dense) {
        dense_unpack(h->dense, out);
        return;
    }
    memset(out, 0, LAM_HLL_REGISTERS);
    for (uint32_t i = 0; i < h->n; i++)
        out[h->sp[i] >> 8] = (uint8_t)(h->sp[i] & 0xff);
}

int lam_hll_equal(const lam_hll_t *a, const lam_hll_t *b)
{
    static __thread uint8_t ra[LAM_HLL_REGISTERS], rb[LAM_HLL_REGISTERS];
    lam_hll_registers(a, ra);
    lam_hll_registers(b, rb);
    return memcmp(ra, rb, LAM_HLL_REGISTERS) == 0;
}

int lam_hll_is_sparse(const lam_hll_t *h)
{
    return h->dense == NULL;
}

size_t lam_hll_memory(const lam_hll_t *h)
{
    return sizeof(*h) + (h->dense ? HLL_DENSE_BYTES + 1 : h->cap * sizeof(uint32_t));
}

/* Redis's hllSigma / hllTau / hllCount */
static double hll_sigma(double x)
{
    if (x == 1.)
        return INFINITY;
    double zp, y = 1, z = x;
    do {
        x *= x;
        zp = z;
        z += x * y;
        y += y;
    } while (zp != z);
    return z;
}

static double hll_tau(double x)
{
    if (x == 0. || x == 1.)
        return 0.;
    double zp, y = 1.0, z = 1 - x;
    do {
        x = sqrt(x);
        zp = z;
        y *= 0.5;
        z -= pow(1 - x, 2) * y;
    } while (zp != z);
    return z / 3;
}

uint64_t lam_hll_count(const lam_hll_t *h)
{
    if (h->card >= 0)
        return (uint64_t)h->card;
    int histo[64] = {0};
    if (h->dense) {
        for (unsigned g = 0; g < LAM_HLL_REGISTERS / 4; g++) {
            uint8_t r[4];
            unpack4(h->dense + 3 * g, r);
            histo[r[0]]++;
            histo[r[1]]++;
            histo[r[2]]++;
            histo[r[3]]++;
        }
    } else {
        histo[0] = LAM_HLL_REGISTERS - (int)h->n;
        for (uint32_t i = 0; i < h->n; i++)
            histo[h->sp[i] & 0x3f]++;
    }
    double m = LAM_HLL_REGISTERS;
    double z = m * hll_tau((m - histo[HLL_Q + 1]) / m);
    for (int j = HLL_Q; j >= 1; --j) {
        z += histo[j];
        z *= 0.5;
    }
    z += m * hll_sigma(histo[0] / m);
    return (uint64_t)llroundl(HLL_ALPHA_INF * m * m / z);
}

uint64_t lam_hll_count_cache(lam_hll_t *h)
{
    uint64_t n = lam_hll_count(h);
    h->card = (int64_t)n;
    return n;
}

static void put_header(uint8_t *hdr, int encoding, uint64_t card)
{
    memcpy(hdr, "HYLL", 4);
    hdr[4] = (uint8_t)encoding;
    hdr[5] = hdr[6] = hdr[7] = 0;
    for (int i = 0; i < 8; i++)
        hdr[8 + i] = (uint8_t)(card >> (8 * i));
}

void lam_hll_to_redis_dense(const lam_hll_t *h, uint8_t out[LAM_HLL_DENSE_SIZE])
{
    put_header(out, 0, lam_hll_count(h));
    uint8_t *regs = out + LAM_HLL_HDR_SIZE;
    if (h->dense) {
        memcpy(regs, h->dense, HLL_DENSE_BYTES);
        return;
    }
    uint8_t tmp[HLL_DENSE_BYTES + 1];
    memset(tmp, 0, sizeof(tmp));
    for (uint32_t i = 0; i < h->n; i++)
        dense_set(tmp, h->sp[i] >> 8, h->sp[i] & 0xff);
    memcpy(regs, tmp, HLL_DENSE_BYTES);
}

static void put_zeros(lam_buf_t *out, unsigned n)
{
    while (n > 0) {
        if (n > 64) {
            unsigned run = n > 16384 ? 16384 : n;
            uint8_t x[2] = {(uint8_t)(0x40 | ((run - 1) >> 8)), (uint8_t)((run - 1) & 0xff)};
            lam_buf_append(out, x, 2);
            n -= run;
        } else {
            lam_buf_append_char(out, (char)(n - 1));
            n = 0;
        }
    }
}

void lam_hll_to_redis(const lam_hll_t *h, lam_buf_t *out)
{
    int sparse_ok = h->dense == NULL;
    for (uint32_t i = 0; sparse_ok && i < h->n; i++)
        if ((h->sp[i] & 0xff) > SPARSE_VAL_MAX)
            sparse_ok = 0;
    if (!sparse_ok) {
        lam_buf_reserve(out, LAM_HLL_DENSE_SIZE);
        lam_hll_to_redis_dense(h, (uint8_t *)out->data + out->len);
        out->len += LAM_HLL_DENSE_SIZE;
        out->data[out->len] = '\0';
        return;
    }
    uint8_t hdr[LAM_HLL_HDR_SIZE];
    put_header(hdr, 1, lam_hll_count(h));
    lam_buf_append(out, hdr, sizeof(hdr));
    unsigned next = 0; /* first register not yet encoded */
    uint32_t i = 0;
    while (i < h->n) {
        unsigned reg = h->sp[i] >> 8, val = h->sp[i] & 0xff, run = 1;
        put_zeros(out, reg - next);
        while (run < 4 && i + run < h->n && (h->sp[i + run] >> 8) == reg + run &&
               (h->sp[i + run] & 0xff) == val)
            run++;
        lam_buf_append_char(out, (char)(0x80 | ((val - 1) << 2) | (run - 1)));
        next = reg + run;
        i += run;
    }
    put_zeros(out, LAM_HLL_REGISTERS - next);
}

int lam_hll_merge_redis_blob(lam_hll_t *dst, const void *blob, size_t len, char *errstr, size_t errstr_size)
{
    const uint8_t *b = blob;
    uint8_t regs[LAM_HLL_REGISTERS];
    if (len < LAM_HLL_HDR_SIZE || memcmp(b, "HYLL", 4) != 0 || b[4] > 1) {
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "hll: not a Redis HyperLogLog");
        return -1;
    }
    if (b[4] == 0) {
        if (len != LAM_HLL_DENSE_SIZE) {
            if (errstr && errstr_size)
                snprintf(errstr, errstr_size, "hll: dense HyperLogLog has wrong length %zu", len);
            return -1;
        }
        dense_unpack(b + LAM_HLL_HDR_SIZE, regs);
    } else {
        const uint8_t *p = b + LAM_HLL_HDR_SIZE, *end = b + len;
        unsigned i = 0;
        memset(regs, 0, sizeof(regs));
        while (p < end) {
            unsigned run, val = 0;
            if ((*p & 0xc0) == 0) {
                run = (*p & 0x3f) + 1u;
                p++;
            } else if ((*p & 0xc0) == 0x40) {
                if (p + 1 >= end)
                    break;
                run = (((unsigned)*p & 0x3f) << 8 | p[1]) + 1u;
                p += 2;
            } else {
                val = ((*p >> 2) & 0x1f) + 1u;
                run = (*p & 0x3) + 1u;
                p++;
            }
            if (i + run > LAM_HLL_REGISTERS) {
                i = LAM_HLL_REGISTERS + 1;
                break;
            }
            for (unsigned k = 0; k < run && val; k++)
                regs[i + k] = (uint8_t)val;
            i += run;
        }
        if (i != LAM_HLL_REGISTERS || p != end) {
            if (errstr && errstr_size)
                snprintf(errstr, errstr_size, "hll: corrupt sparse HyperLogLog");
            return -1;
        }
    }
    unsigned nz = 0;
    for (unsigned r = 0; r < LAM_HLL_REGISTERS; r++)
        nz += regs[r] != 0;
    dst->card = -1;
    if (!dst->dense && dst->n + nz > LAM_HLL_SPARSE_MAX)
        to_dense(dst);
    if (dst->dense) {
        dense_merge_regs(dst->dense, regs);
        return 0;
    }
    for (unsigned r = 0; r < LAM_HLL_REGISTERS; r++)
        if (regs[r])
            set_max(dst, r, regs[r]);
    return 0;
}
