/* test_batch_segment.c - the master dataset format: crc32c, records, zstd blocks, torn/corrupt blocks, manifest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "testlib.h"
#include <zstd.h>

/* The format module is compiled in directly so that this test links with the generic unit rule. */
#include "../../batch_layer/batch_segment.c"

static char dir[256];

static void test_crc32c_check_value(void **st)
{
    (void)st;
    assert_int_equal(batch_crc32c(0, "123456789", 9), 0xE3069283U);
    /* incremental = one shot */
    assert_int_equal(batch_crc32c(batch_crc32c(0, "1234", 4), "56789", 5), 0xE3069283U);
    assert_int_equal(batch_crc32c(0, "", 0), 0);
    assert_int_equal(lam_crc32c_sw(0, "123456789", 9), 0xE3069283U);
}

/* The hardware and the table implementation agree on every length, alignment and split. */
static void test_crc32c_hw_equals_portable(void **st)
{
    (void)st;
    unsigned char buf[1024 + 16];
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len <= 1024; len += len < 40 ? 1 : 37) {
            uint32_t a = batch_crc32c(0, buf + off, len), b = lam_crc32c_sw(0, buf + off, len);
            if (a != b)
                fail_msg("offset %zu length %zu: %08x != %08x (hw %d)", off, len, a, b, batch_crc32c_hw());
            size_t half = len / 3;
            assert_int_equal(batch_crc32c(batch_crc32c(0, buf + off, half), buf + off + half, len - half), b);
        }
}

static void test_records_roundtrip(void **st)
{
    (void)st;
    lam_buf_t raw = LAM_BUF_INIT;
    batch_rec_append(&raw, BATCH_REC_EVENT, 10, 0, "{\"id\":\"a\"}", 10);
    batch_rec_append(&raw, BATCH_REC_CUT, 11, 7, NULL, 0);
    batch_rec_append(&raw, BATCH_REC_EVENT, 15, 0, "x\0y", 3);
    size_t pos = 0;
    batch_rec_t r;
    assert_int_equal(batch_rec_next(&raw, &pos, &r), 1);
    assert_int_equal(r.kind, BATCH_REC_EVENT);
    assert_int_equal(r.offset, 10);
    assert_int_equal(r.len, 10);
    assert_memory_equal(r.data, "{\"id\":\"a\"}", 10);
    assert_int_equal(batch_rec_next(&raw, &pos, &r), 1);
    assert_int_equal(r.kind, BATCH_REC_CUT);
    assert_int_equal(r.run, 7);
    assert_int_equal(r.len, 0);
    assert_int_equal(batch_rec_next(&raw, &pos, &r), 1);
    assert_int_equal(r.len, 3);
    assert_memory_equal(r.data, "x\0y", 3);
    assert_int_equal(batch_rec_next(&raw, &pos, &r), 0);
    /* a truncated record is malformed, not an end */
    raw.len -= 1;
    pos = 0;
    assert_int_equal(batch_rec_next(&raw, &pos, &r), 1);
    assert_int_equal(batch_rec_next(&raw, &pos, &r), 1);
    assert_int_equal(batch_rec_next(&raw, &pos, &r), -1);
    lam_buf_free(&raw);
}

/* Write a segment with two blocks, block i lz4 when bit i of lz4 is set, else zstd (the format
   before lz4); returns its path in out. */
static void write_segment(char *out, size_t outsz, int64_t *size, int lz4)
{
    char err[256];
    snprintf(out, outsz, "%s/p00002-00000000000000000100.seg", dir);
    int fd = batch_seg_create(out, 2, err, sizeof(err));
    assert_true(fd >= 0);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    lam_buf_t raw = LAM_BUF_INIT, scratch = LAM_BUF_INIT;
    for (int blk = 0; blk < 2; blk++) {
        lam_buf_clear(&raw);
        for (int i = 0; i < 100; i++) {
            char ev[64];
            int n = snprintf(ev, sizeof(ev), "{\"id\":\"e%d\",\"ts\":1,\"type\":\"t\"}", blk * 100 + i);
            batch_rec_append(&raw, BATCH_REC_EVENT, 100 + blk * 100 + i, 0, ev, (uint32_t)n);
        }
        assert_true(batch_seg_write_block(fd, (lz4 >> blk) & 1 ? NULL : cctx, &raw, 100, 100 + blk * 100,
                                          199 + blk * 100, &scratch, err, sizeof(err)) > BATCH_BLK_HDR);
        uint32_t magic;
        memcpy(&magic, scratch.data, 4);
        assert_int_equal(magic, (lz4 >> blk) & 1 ? BATCH_BLK_MAGIC_LZ4 : BATCH_BLK_MAGIC);
    }
    struct stat sb;
    fstat(fd, &sb);
    *size = sb.st_size;
    close(fd);
    ZSTD_freeCCtx(cctx);
    lam_buf_free(&raw);
    lam_buf_free(&scratch);
}

/* Each codec mix of write_segment: both zstd, zstd then lz4, lz4 then zstd, both lz4. */
static void test_segment_blocks_and_corruption(void **st)
{
    (void)st;
    for (int lz4 = 0; lz4 < 4; lz4++) {
    char path[512], err[256];
    int64_t size;
    write_segment(path, sizeof(path), &size, lz4);
    batch_seg_reader_t r;
    assert_int_equal(batch_seg_open(&r, path, err, sizeof(err)), 0);
    assert_int_equal(r.partition, 2);
    batch_block_t b;
    int blocks = 0, records = 0;
    int rc;
    while ((rc = batch_seg_next_block(&r, &b, 1, err, sizeof(err))) == 1) {
        assert_int_equal(b.first, 100 + blocks * 100);
        assert_int_equal(b.last, 199 + blocks * 100);
        size_t pos = 0;
        batch_rec_t rec;
        while (batch_rec_next(&r.raw, &pos, &rec) == 1)
            assert_int_equal(rec.offset, 100 + records++);
        blocks++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(blocks, 2);
    assert_int_equal(records, 200);
    batch_seg_close(&r);

    /* one flipped payload byte: that block's checksum fails */
    int fd = open(path, O_RDWR);
    unsigned char c;
    off_t at = BATCH_SEG_HDR + BATCH_BLK_HDR + 5;
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= 1;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    assert_int_equal(batch_seg_open(&r, path, err, sizeof(err)), 0);
    assert_int_equal(batch_seg_next_block(&r, &b, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "checksum mismatch"));
    batch_seg_close(&r);
    c ^= 1;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);

    /* a header whose checksums hold but whose raw length is one more than the payload decodes to */
    unsigned char h[BATCH_BLK_HDR], h0[BATCH_BLK_HDR];
    assert_int_equal(pread(fd, h0, sizeof(h0), BATCH_SEG_HDR), (ssize_t)sizeof(h0));
    memcpy(h, h0, sizeof(h));
    uint32_t v;
    memcpy(&v, h + 8, 4);
    v++;
    memcpy(h + 8, &v, 4);
    v = batch_crc32c(0, h, 36);
    memcpy(h + 36, &v, 4);
    assert_int_equal(pwrite(fd, h, sizeof(h), BATCH_SEG_HDR), (ssize_t)sizeof(h));
    assert_int_equal(batch_seg_open(&r, path, err, sizeof(err)), 0);
    assert_int_equal(batch_seg_next_block(&r, &b, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not decompress"));
    batch_seg_close(&r);
    assert_int_equal(pwrite(fd, h0, sizeof(h0), BATCH_SEG_HDR), (ssize_t)sizeof(h0));

    /* a torn tail: the second block cut short */
    assert_int_equal(ftruncate(fd, size - 3), 0);
    close(fd);
    assert_int_equal(batch_seg_open(&r, path, err, sizeof(err)), 0);
    assert_int_equal(batch_seg_next_block(&r, &b, 1, err, sizeof(err)), 1);
    assert_int_equal(batch_seg_next_block(&r, &b, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "torn"));
    batch_seg_close(&r);

    /* a bad file header */
    fd = open(path, O_RDWR);
    assert_int_equal(pwrite(fd, "X", 1, 0), 1);
    close(fd);
    assert_int_equal(batch_seg_open(&r, path, err, sizeof(err)), -1);
    unlink(path);
    }
}

static void test_manifest_roundtrip_and_tamper(void **st)
{
    (void)st;
    char err[256], path[512];
    batch_manifest_t m, back;
    assert_int_equal(batch_manifest_load(dir, &m, err, sizeof(err)), 0); /* missing = empty */
    assert_int_equal(m.nsegs, 0);
    batch_segment_t *s = batch_manifest_add_seg(&m);
    snprintf(s->name, sizeof(s->name), "p00000-00000000000000000000.seg");
    s->partition = 0;
    s->first = 0;
    s->last = 99;
    s->count = 100;
    s->bytes = 4096;
    s->sealed = 1;
    s = batch_manifest_add_seg(&m);
    snprintf(s->name, sizeof(s->name), "p00001-00000000000000000005.seg");
    s->partition = 1;
    s->bytes = BATCH_SEG_HDR;
    assert_int_equal(batch_manifest_add_cut(&m, 3, 0, 50), 1);
    assert_int_equal(batch_manifest_add_cut(&m, 3, 0, 51), 0); /* one marker k per partition */
    assert_int_equal(batch_manifest_add_cut(&m, 3, 1, 7), 1);
    assert_int_equal(batch_manifest_save(dir, &m, err, sizeof(err)), 0);
    assert_int_equal(batch_manifest_load(dir, &back, err, sizeof(err)), 0);
    assert_int_equal(back.nsegs, 2);
    assert_string_equal(back.segs[0].name, m.segs[0].name);
    assert_int_equal(back.segs[0].last, 99);
    assert_int_equal(back.segs[0].sealed, 1);
    assert_int_equal(back.segs[1].first, -1);
    assert_int_equal(batch_manifest_cut(&back, 3, 0), 50);
    assert_int_equal(batch_manifest_cut(&back, 3, 1), 7);
    assert_int_equal(batch_manifest_cut(&back, 4, 1), -1);
    batch_manifest_free(&back);

    /* a changed digit is caught by the checksum line */
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    size_t len;
    char *txt = lam_test_read_file(path, &len);
    assert_non_null(txt);
    char *p = strstr(txt, " 99 ");
    assert_non_null(p);
    p[1] = '8';
    FILE *f = fopen(path, "w");
    fwrite(txt, 1, len, f);
    fclose(f);
    assert_int_equal(batch_manifest_load(dir, &back, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "checksum"));
    /* a manifest cut short (no end line) is refused too */
    f = fopen(path, "w");
    fwrite(txt, 1, (size_t)(p - txt), f);
    fputc('\n', f);
    fclose(f);
    assert_int_equal(batch_manifest_load(dir, &back, err, sizeof(err)), -1);
    lam_free(txt);
    batch_manifest_free(&m);
    unlink(path);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s/test_batch_segment.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_check_value),
        cmocka_unit_test(test_crc32c_hw_equals_portable),
        cmocka_unit_test(test_records_roundtrip),
        cmocka_unit_test(test_segment_blocks_and_corruption),
        cmocka_unit_test(test_manifest_roundtrip_and_tamper),
    };
    int rc = cmocka_run_group_tests_name("batch_segment", tests, NULL, NULL);
    rmdir(dir);
    return rc;
}
