/* batch_segment.c - the master dataset on disk: segment files, lz4 (or older zstd) blocks, crc32c, the manifest. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <lz4.h>
#include <zstd.h>

#include "batch.h"
#include "lam_mem.h"

/* ---- crc32c (Castagnoli): SSE4.2 where the CPU has it, else slicing-by-8 tables built once ---- */

#if defined(__x86_64__)
/* The SSE4.2 crc32 instruction computes exactly crc32c, 8 bytes per instruction. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t c = ~crc;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}

int batch_crc32c_hw(void)
{
    return __builtin_cpu_supports("sse4.2");
}

uint32_t batch_crc32c(uint32_t crc, const void *data, size_t len)
{
    static int hw = -1; /* same answer from every thread: a benign race */
    if (hw < 0)
        hw = batch_crc32c_hw();
    return hw ? crc32c_sse42(crc, data, len) : lam_crc32c_sw(crc, data, len);
}
#else
int batch_crc32c_hw(void)
{
    return 0;
}

uint32_t batch_crc32c(uint32_t crc, const void *data, size_t len)
{
    return lam_crc32c_sw(crc, data, len);
}
#endif

/* ---- little-endian helpers (the format is little endian on every host) ---- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
/* One load each (the byte loops compiled to byte loads: ~170 instructions per record header). */
static inline uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}
static inline uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* ---- manifest ---- */

void batch_manifest_init(batch_manifest_t *m)
{
    memset(m, 0, sizeof(*m));
}

void batch_manifest_free(batch_manifest_t *m)
{
    if (!m)
        return;
    lam_free(m->segs);
    lam_free(m->cuts);
    batch_manifest_init(m);
}

void batch_manifest_copy(batch_manifest_t *dst, const batch_manifest_t *src)
{
    batch_manifest_init(dst);
    if (src->nsegs) {
        dst->segs = lam_malloc(src->nsegs * sizeof(*dst->segs));
        memcpy(dst->segs, src->segs, src->nsegs * sizeof(*dst->segs));
    }
    dst->nsegs = dst->segcap = src->nsegs;
    if (src->ncuts) {
        dst->cuts = lam_malloc(src->ncuts * sizeof(*dst->cuts));
        memcpy(dst->cuts, src->cuts, src->ncuts * sizeof(*dst->cuts));
    }
    dst->ncuts = dst->cutcap = src->ncuts;
}

batch_segment_t *batch_manifest_add_seg(batch_manifest_t *m)
{
    if (m->nsegs == m->segcap) {
        m->segcap = m->segcap ? m->segcap * 2 : 16;
        m->segs = lam_realloc(m->segs, m->segcap * sizeof(*m->segs));
    }
    batch_segment_t *s = &m->segs[m->nsegs++];
    memset(s, 0, sizeof(*s));
    s->first = s->last = -1;
    return s;
}

int64_t batch_manifest_cut(const batch_manifest_t *m, int64_t run, int32_t partition)
{
    for (size_t i = 0; i < m->ncuts; i++)
        if (m->cuts[i].run == run && m->cuts[i].partition == partition)
            return m->cuts[i].offset;
    return -1;
}

int batch_manifest_add_cut(batch_manifest_t *m, int64_t run, int32_t partition, int64_t offset)
{
    if (batch_manifest_cut(m, run, partition) >= 0)
        return 0;
    if (m->ncuts == m->cutcap) {
        m->cutcap = m->cutcap ? m->cutcap * 2 : 16;
        m->cuts = lam_realloc(m->cuts, m->cutcap * sizeof(*m->cuts));
    }
    m->cuts[m->ncuts++] = (batch_cut_t){run, partition, offset};
    return 1;
}

int batch_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int batch_manifest_load(const char *dir, batch_manifest_t *m, char *errstr, size_t errstr_size)
{
    batch_manifest_init(m);
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, BATCH_MANIFEST);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[512];
    uint32_t crc = 0;
    int lineno = 0, ended = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t len = strlen(line);
        if (ended || !len || line[len - 1] != '\n') {
            snprintf(errstr, errstr_size, "%s: line %d: malformed", path, lineno);
            rc = -1;
            break;
        }
        if (!strncmp(line, "end ", 4)) {
            unsigned long want = strtoul(line + 4, NULL, 16);
            if (want != crc) {
                snprintf(errstr, errstr_size, "%s: checksum mismatch (%08lx != %08" PRIx32 ")", path, want, crc);
                rc = -1;
                break;
            }
            ended = 1;
            continue;
        }
        crc = batch_crc32c(crc, line, len);
        if (lineno == 1) {
            if (strcmp(line, "lam-master 1\n")) {
                snprintf(errstr, errstr_size, "%s: not a lam manifest (version 1)", path);
                rc = -1;
                break;
            }
            continue;
        }
        if (!strncmp(line, "segment ", 8)) {
            batch_segment_t *s = batch_manifest_add_seg(m);
            int sealed = 0;
            if (sscanf(line, "segment %63s %" SCNd32 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %d", s->name,
                       &s->partition, &s->first, &s->last, &s->count, &s->bytes, &sealed) != 7) {
                snprintf(errstr, errstr_size, "%s: line %d: bad segment entry", path, lineno);
                rc = -1;
                break;
            }
            s->sealed = sealed;
        } else if (!strncmp(line, "cut ", 4)) {
            batch_cut_t c;
            if (sscanf(line, "cut %" SCNd64 " %" SCNd32 " %" SCNd64, &c.run, &c.partition, &c.offset) != 3) {
                snprintf(errstr, errstr_size, "%s: line %d: bad cut entry", path, lineno);
                rc = -1;
                break;
            }
            batch_manifest_add_cut(m, c.run, c.partition, c.offset);
        } else {
            snprintf(errstr, errstr_size, "%s: line %d: unknown entry", path, lineno);
            rc = -1;
            break;
        }
    }
    fclose(f);
    if (!rc && !ended) {
        snprintf(errstr, errstr_size, "%s: truncated (no end line)", path);
        rc = -1;
    }
    if (rc)
        batch_manifest_free(m);
    return rc;
}

int batch_manifest_save(const char *dir, const batch_manifest_t *m, char *errstr, size_t errstr_size)
{
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append_str(&b, "lam-master 1\n");
    for (size_t i = 0; i < m->nsegs; i++) {
        const batch_segment_t *s = &m->segs[i];
        lam_buf_printf(&b, "segment %s %" PRId32 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %d\n", s->name,
                       s->partition, s->first, s->last, s->count, s->bytes, s->sealed ? 1 : 0);
    }
    for (size_t i = 0; i < m->ncuts; i++)
        lam_buf_printf(&b, "cut %" PRId64 " %" PRId32 " %" PRId64 "\n", m->cuts[i].run, m->cuts[i].partition,
                       m->cuts[i].offset);
    lam_buf_printf(&b, "end %08" PRIx32 "\n", batch_crc32c(0, b.data, b.len));

    char tmp[4096], path[4096];
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, BATCH_MANIFEST);
    snprintf(path, sizeof(path), "%s/%s", dir, BATCH_MANIFEST);
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        snprintf(errstr, errstr_size, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    size_t off = 0;
    while (off < b.len) {
        ssize_t n = write(fd, b.data + off, b.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(errstr, errstr_size, "%s: write: %s", tmp, strerror(errno));
            close(fd);
            goto out;
        }
        off += (size_t)n;
    }
    if (fsync(fd) < 0) {
        snprintf(errstr, errstr_size, "%s: fsync: %s", tmp, strerror(errno));
        close(fd);
        goto out;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        snprintf(errstr, errstr_size, "%s: rename: %s", path, strerror(errno));
        goto out;
    }
    if (batch_fsync_dir(dir) < 0) {
        snprintf(errstr, errstr_size, "%s: fsync dir: %s", dir, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    lam_buf_free(&b);
    return rc;
}

/* ---- records ---- */

void batch_rec_append(lam_buf_t *raw, int kind, int64_t offset, int64_t run, const void *data, uint32_t len)
{
    uint8_t h[BATCH_REC_HDR];
    h[0] = (uint8_t)kind;
    put64(h + 1, (uint64_t)offset);
    put64(h + 9, (uint64_t)run);
    put32(h + 17, len);
    lam_buf_append(raw, h, sizeof(h));
    if (len)
        lam_buf_append(raw, data, len);
}

int batch_rec_next(const lam_buf_t *raw, size_t *pos, batch_rec_t *rec)
{
    if (*pos == raw->len)
        return 0;
    if (raw->len - *pos < BATCH_REC_HDR)
        return -1;
    const uint8_t *h = (const uint8_t *)raw->data + *pos;
    rec->kind = h[0];
    rec->offset = (int64_t)get64(h + 1);
    rec->run = (int64_t)get64(h + 9);
    rec->len = get32(h + 17);
    if (rec->kind > BATCH_REC_CUT || raw->len - *pos - BATCH_REC_HDR < rec->len)
        return -1;
    rec->data = raw->data + *pos + BATCH_REC_HDR;
    *pos += BATCH_REC_HDR + rec->len;
    return 1;
}

/* ---- segment files ---- */

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int batch_seg_create(const char *path, int32_t partition, char *errstr, size_t errstr_size)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    uint8_t h[BATCH_SEG_HDR];
    memcpy(h, BATCH_SEG_MAGIC, 8);
    put32(h + 8, (uint32_t)partition);
    put32(h + 12, batch_crc32c(0, h, 12));
    if (write_all(fd, h, sizeof(h)) < 0 || fsync(fd) < 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int64_t batch_seg_write_block(int fd, void *cctx, const lam_buf_t *raw, uint32_t nrecords, int64_t first,
                              int64_t last, lam_buf_t *scratch, char *errstr, size_t errstr_size)
{
    if (!cctx && raw->len > (size_t)LZ4_MAX_INPUT_SIZE) {
        snprintf(errstr, errstr_size, "block of %zu bytes is too large", raw->len);
        return -1;
    }
    size_t bound = cctx ? ZSTD_compressBound(raw->len) : (size_t)LZ4_compressBound((int)raw->len);
    lam_buf_clear(scratch);
    lam_buf_reserve(scratch, BATCH_BLK_HDR + bound);
    uint8_t *out = (uint8_t *)scratch->data;
    size_t clen;
    if (cctx) {
        clen = ZSTD_compressCCtx(cctx, out + BATCH_BLK_HDR, bound, raw->data, raw->len, 1);
        if (ZSTD_isError(clen)) {
            snprintf(errstr, errstr_size, "zstd: %s", ZSTD_getErrorName(clen));
            return -1;
        }
    } else {
        int n = LZ4_compress_default(raw->data, (char *)out + BATCH_BLK_HDR, (int)raw->len, (int)bound);
        if (n <= 0) {
            snprintf(errstr, errstr_size, "lz4: compression failed");
            return -1;
        }
        clen = (size_t)n;
    }
    put32(out, cctx ? BATCH_BLK_MAGIC : BATCH_BLK_MAGIC_LZ4);
    put32(out + 4, nrecords);
    put32(out + 8, (uint32_t)raw->len);
    put32(out + 12, (uint32_t)clen);
    put64(out + 16, (uint64_t)first);
    put64(out + 24, (uint64_t)last);
    put32(out + 32, batch_crc32c(0, out + BATCH_BLK_HDR, clen));
    put32(out + 36, batch_crc32c(0, out, 36));
    if (write_all(fd, out, BATCH_BLK_HDR + clen) < 0) {
        snprintf(errstr, errstr_size, "segment write: %s", strerror(errno));
        return -1;
    }
    return (int64_t)(BATCH_BLK_HDR + clen);
}

int batch_seg_open(batch_seg_reader_t *r, const char *path, char *errstr, size_t errstr_size)
{
    memset(r, 0, sizeof(*r));
    r->fd = open(path, O_RDONLY);
    if (r->fd < 0) {
        snprintf(errstr, errstr_size, "%s", strerror(errno));
        return -1;
    }
    struct stat st;
    uint8_t h[BATCH_SEG_HDR];
    if (fstat(r->fd, &st) < 0 || pread(r->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        snprintf(errstr, errstr_size, "short header");
        close(r->fd);
        r->fd = -1;
        return -1;
    }
    if (memcmp(h, BATCH_SEG_MAGIC, 8) || get32(h + 12) != batch_crc32c(0, h, 12)) {
        snprintf(errstr, errstr_size, "bad header (magic or checksum)");
        close(r->fd);
        r->fd = -1;
        return -1;
    }
    r->partition = (int32_t)get32(h + 8);
    r->pos = BATCH_SEG_HDR;
    r->size = st.st_size;
    return 0;
}

void batch_seg_close(batch_seg_reader_t *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    lam_buf_free(&r->comp);
    lam_buf_free(&r->raw);
    if (r->dctx)
        ZSTD_freeDCtx(r->dctx);
    r->dctx = NULL;
}

int batch_seg_next_block(batch_seg_reader_t *r, batch_block_t *b, int decode, char *errstr, size_t errstr_size)
{
    if (r->pos == r->size)
        return 0;
    uint8_t h[BATCH_BLK_HDR];
    if (r->size - r->pos < BATCH_BLK_HDR || pread(r->fd, h, sizeof(h), r->pos) != (ssize_t)sizeof(h)) {
        snprintf(errstr, errstr_size, "torn block header at byte %" PRId64, r->pos);
        return -1;
    }
    uint32_t magic = get32(h);
    if ((magic != BATCH_BLK_MAGIC && magic != BATCH_BLK_MAGIC_LZ4) || get32(h + 36) != batch_crc32c(0, h, 36)) {
        snprintf(errstr, errstr_size, "block header checksum mismatch at byte %" PRId64, r->pos);
        return -1;
    }
    b->magic = magic;
    b->nrecords = get32(h + 4);
    b->raw_len = get32(h + 8);
    b->comp_len = get32(h + 12);
    b->first = (int64_t)get64(h + 16);
    b->last = (int64_t)get64(h + 24);
    b->crc = get32(h + 32);
    if (r->size - r->pos - BATCH_BLK_HDR < (int64_t)b->comp_len) {
        snprintf(errstr, errstr_size, "torn block at byte %" PRId64, r->pos);
        return -1;
    }
    if (decode) {
        lam_buf_clear(&r->comp);
        lam_buf_reserve(&r->comp, b->comp_len);
        if (pread(r->fd, r->comp.data, b->comp_len, r->pos + BATCH_BLK_HDR) != (ssize_t)b->comp_len) {
            snprintf(errstr, errstr_size, "read error at byte %" PRId64 ": %s", r->pos, strerror(errno));
            return -1;
        }
        r->comp.len = b->comp_len;
        if (batch_crc32c(0, r->comp.data, b->comp_len) != b->crc) {
            snprintf(errstr, errstr_size, "block checksum mismatch at byte %" PRId64, r->pos);
            return -1;
        }
        lam_buf_clear(&r->raw);
        lam_buf_reserve(&r->raw, (size_t)b->raw_len + 1);
        size_t n;
        if (magic == BATCH_BLK_MAGIC_LZ4) {
            /* lz4 decodes about three times faster than zstd: a fifth of the recompute's read time */
            int m = b->raw_len > (uint32_t)LZ4_MAX_INPUT_SIZE || b->comp_len > (uint32_t)INT32_MAX
                        ? -1
                        : LZ4_decompress_safe(r->comp.data, r->raw.data, (int)b->comp_len, (int)b->raw_len);
            n = m < 0 ? (size_t)-1 : (size_t)m;
        } else {
            if (!r->dctx)
                r->dctx = ZSTD_createDCtx();
            n = ZSTD_decompressDCtx(r->dctx, r->raw.data, b->raw_len, r->comp.data, b->comp_len);
            if (ZSTD_isError(n))
                n = (size_t)-1;
        }
        if (n != b->raw_len) {
            snprintf(errstr, errstr_size, "block at byte %" PRId64 " does not decompress", r->pos);
            return -1;
        }
        r->raw.len = n;
        r->raw.data[n] = '\0';
    }
    r->pos += BATCH_BLK_HDR + b->comp_len;
    return 1;
}
