/* batch.h - the batch layer: archiver of the master dataset and the recompute runs. */
#ifndef BATCH_H
#define BATCH_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lam_buf.h"
#include "lam_config.h"
#include "lam_crc.h"
#include "lam_http.h"
#include "lam_view.h"

typedef struct batch_config {
    lam_common_config_t common;
    lam_addr_t addr;
    char *data_dir;
    char *schedule;
    char *archive_group;   /* consumer group of the archiver */
    int64_t segment_bytes; /* seal a segment once it reaches this size */
    int64_t flush_ms;      /* longest time an archived record waits for its fsync */
    int64_t threads;       /* recompute threads */
    int64_t dedup_ids;     /* most ids one recompute thread holds at once (more: extra passes) */
    int64_t cut_timeout_ms; /* how long a run waits for the archiver to reach its markers */
    char *codec;            /* the archiver's block codec: "lz4" or "zstd" */
} batch_config_t;

/* ---- master dataset format (batch_segment.c, FORMAT.md) ---- */

#define BATCH_SEG_MAGIC "LAMSEG01"
#define BATCH_SEG_HDR 16        /* magic[8] partition u32 crc32c u32 */
#define BATCH_BLK_MAGIC 0x4B4C424CU     /* "LBLK" little endian: zstd payload */
#define BATCH_BLK_MAGIC_LZ4 0x344C424CU /* "LBL4": lz4 payload (what the archiver writes) */
#define BATCH_BLK_HDR 40
#define BATCH_REC_HDR 21        /* kind u8, offset i64, run i64, len u32 */
#define BATCH_REC_EVENT 0
#define BATCH_REC_CUT 1
#define BATCH_MANIFEST "MANIFEST"

/** One segment as listed by the manifest. */
typedef struct batch_segment {
    char name[64];      /* file name inside the data dir */
    int32_t partition;
    int64_t first, last; /* offsets of the first/last record; -1 when empty */
    int64_t count;      /* records */
    int64_t bytes;      /* file length holding whole blocks */
    int sealed;
} batch_segment_t;

/** Marker of run `run` at `offset` in `partition`. */
typedef struct batch_cut {
    int64_t run;
    int32_t partition;
    int64_t offset;
} batch_cut_t;

typedef struct batch_manifest {
    batch_segment_t *segs;
    size_t nsegs, segcap;
    batch_cut_t *cuts;
    size_t ncuts, cutcap;
} batch_manifest_t;

/** A block header, decoded. */
typedef struct batch_block {
    uint32_t magic; /* BATCH_BLK_MAGIC (zstd) or BATCH_BLK_MAGIC_LZ4 */
    uint32_t nrecords, raw_len, comp_len, crc;
    int64_t first, last;
} batch_block_t;

/** One record of a decompressed block; data points into the block. */
typedef struct batch_rec {
    int kind;
    int64_t offset;
    int64_t run;
    const char *data;
    uint32_t len;
} batch_rec_t;

/** Sequential reader of one segment file. */
typedef struct batch_seg_reader {
    int fd;
    int32_t partition;
    int64_t pos;   /* file position of the next block */
    int64_t size;
    lam_buf_t comp, raw;
    void *dctx;    /* ZSTD_DCtx, made at the first zstd block */
} batch_seg_reader_t;

/** crc32c (Castagnoli) continued from crc (0 to start): hardware when the CPU has SSE4.2. */
uint32_t batch_crc32c(uint32_t crc, const void *data, size_t len);
/** Whether batch_crc32c uses hardware; else it is lam_crc32c_sw (tables, any CPU). */
int batch_crc32c_hw(void);

void batch_manifest_init(batch_manifest_t *m);
void batch_manifest_free(batch_manifest_t *m);
/** Deep copy src into dst (dst is initialised first). */
void batch_manifest_copy(batch_manifest_t *dst, const batch_manifest_t *src);
batch_segment_t *batch_manifest_add_seg(batch_manifest_t *m);
/** Add a cut unless (run, partition) is already there. Returns 1 when added. */
int batch_manifest_add_cut(batch_manifest_t *m, int64_t run, int32_t partition, int64_t offset);
/** Offset of marker `run` in partition, or -1. */
int64_t batch_manifest_cut(const batch_manifest_t *m, int64_t run, int32_t partition);
/** Load dir/MANIFEST; a missing file is an empty manifest. 0, or -1 with errstr (corrupt). */
int batch_manifest_load(const char *dir, batch_manifest_t *m, char *errstr, size_t errstr_size);
/** Write dir/MANIFEST atomically (tmp, fsync, rename, fsync dir). 0 or -1 with errstr. */
int batch_manifest_save(const char *dir, const batch_manifest_t *m, char *errstr, size_t errstr_size);
/** fsync a directory. */
int batch_fsync_dir(const char *dir);

/** Append one record to a raw (uncompressed) block. */
void batch_rec_append(lam_buf_t *raw, int kind, int64_t offset, int64_t run, const void *data, uint32_t len);
/** Decode the record at *pos of raw; 1 and advance, 0 at the end, -1 when malformed. */
int batch_rec_next(const lam_buf_t *raw, size_t *pos, batch_rec_t *rec);

/** Create a segment file (truncating an orphan of the same name) with its header, fsync'd. fd or -1. */
int batch_seg_create(const char *path, int32_t partition, char *errstr, size_t errstr_size);
/**
 * Compress raw (nrecords records, offsets first..last) and append the block to fd: an lz4 block
 * ("LBL4") when cctx is NULL (the archiver), a zstd level 1 block ("LBLK", the format before lz4,
 * still read) with cctx a ZSTD_CCtx. Returns the bytes written or -1 with errstr. The caller fsyncs.
 */
int64_t batch_seg_write_block(int fd, void *cctx, const lam_buf_t *raw, uint32_t nrecords, int64_t first,
                              int64_t last, lam_buf_t *scratch, char *errstr, size_t errstr_size);

/** Open path for reading and check its header. 0 or -1 with errstr. Close with batch_seg_close. */
int batch_seg_open(batch_seg_reader_t *r, const char *path, char *errstr, size_t errstr_size);
void batch_seg_close(batch_seg_reader_t *r);
/**
 * Read the next block header at r->pos. 1 with *b, 0 at a clean end of file, -1 with errstr when
 * the block is torn or its header checksum fails. With decode, the payload is checked and
 * decompressed into r->raw; without, it is skipped.
 */
int batch_seg_next_block(batch_seg_reader_t *r, batch_block_t *b, int decode, char *errstr, size_t errstr_size);

/* ---- archiver (batch_archive.c) ---- */
typedef struct batch_archive batch_archive_t;
struct batch_ctx;

/**
 * Recover the master dataset under cfg->data_dir (torn tails truncated, orphans removed) and
 * start the archiver thread. NULL with errstr when the data dir is unusable.
 */
batch_archive_t *batch_archive_start(struct batch_ctx *ctx, char *errstr, size_t errstr_size);
/** Flush, stop the thread and free; accepts NULL. */
void batch_archive_stop(batch_archive_t *a);
/** A copy of the durable manifest (free with batch_manifest_free). */
void batch_archive_snapshot(batch_archive_t *a, batch_manifest_t *out);
/** Archiver counters for /metrics and /healthz. */
void batch_archive_metrics(batch_archive_t *a, lam_buf_t *out);
/** NULL when healthy, else a short problem. */
const char *batch_archive_problem(batch_archive_t *a);

/* ---- runs (batch_run.c) ---- */
typedef struct batch_ctx {
    batch_config_t cfg;
    lam_views_t *views;
    PGconn *pg;          /* the executor's connection; it holds the advisory lock */
    int pg_locked;
    lam_http_server_t *http;
    batch_archive_t *archive;
    void *producer;      /* rd_kafka_t for cut markers */
    atomic_int pg_ok;
    atomic_llong runs_succeeded, runs_failed, current_run, running_run;
    atomic_llong last_run_ms, last_run_records;
    int redis_pending;   /* lam:batch:current not yet written for current_run */
    int64_t unrecorded_run;        /* a run that failed while PostgreSQL was unreachable, or 0 */
    char unrecorded_reason[512];   /* ... and why: written when PostgreSQL is back */
} batch_ctx_t;

/** Parsed LAM_BATCH_SCHEDULE. */
typedef struct batch_schedule {
    enum { BATCH_SCHED_OFF, BATCH_SCHED_DAILY, BATCH_SCHED_EVERY } kind;
    int minute_of_day; /* DAILY */
    int64_t every_ms;  /* EVERY */
} batch_schedule_t;

/** Parse "daily@HH:MM", "every 30s|10m|6h" or "off". 0 or -1 with errstr. */
int batch_schedule_parse(const char *s, batch_schedule_t *out, char *errstr, size_t errstr_size);
/** Next due time (epoch ms) strictly after now_ms; INT64_MAX when off. */
int64_t batch_schedule_next(const batch_schedule_t *s, int64_t now_ms);

/** Outcome of a recompute; agg (all views merged) is the caller's to lam_agg_free. */
struct lam_agg;
typedef struct batch_recompute {
    struct lam_agg *agg;
    int64_t records, skipped, dups, total; /* total: the manifest's estimate of records below the cut */
    int64_t scan_us, merge_us;             /* wall time */
    int64_t read_us, busy_us;              /* summed over threads: block read+crc+decompress; whole scan */
    int threads;
} batch_recompute_t;
/** Called about every 0.5 s with records done / total (return value ignored). */
typedef int (*batch_progress_fn)(void *opaque, int64_t records, int64_t total, int64_t skipped);
/**
 * Read every master record of partitions 0..nparts-1 below cutoffs[p] (cfg->threads threads),
 * drop duplicate ids, apply the views, merge. 0 with *out, or -1 with errstr (stopped, unreadable).
 */
int batch_recompute(const batch_config_t *cfg, const lam_views_t *views, const batch_manifest_t *man,
                    const int64_t *cutoffs, int nparts, batch_progress_fn progress, void *opaque,
                    batch_recompute_t *out, char *errstr, size_t errstr_size);

/** The service loop: LISTEN for requests, schedule, execute runs one at a time. */
void batch_run_loop(batch_ctx_t *ctx, const batch_schedule_t *sched);
/** Execute claimed run k. 0 published, -1 failed (marked failed when PostgreSQL is reachable). */
int batch_run_execute(batch_ctx_t *ctx, int64_t run);

/* ---- PostgreSQL (batch_pg.c) ---- */
/** The batch layer's own settings on the shared schema (after lam_store_pg_migrate): lam_view_rows
 * partitioned by run (a plain one is converted, rows kept). 0 or -1. */
int batch_pg_prepare(PGconn *pg, char *errstr, size_t errstr_size);
/** Coalescing request: the pending 'requested' run, or a new one (NOTIFY lam_batch_runs). */
int batch_pg_request_run(PGconn *pg, int64_t *run, char *errstr, size_t errstr_size);
/** Claim the oldest requested run as running. 1 with *run, 0 none, -1 error. */
int batch_pg_claim(PGconn *pg, int64_t *run, char *errstr, size_t errstr_size);
/** Take the executor's advisory lock; 1 taken, 0 held by another live process, -1 error. */
int batch_pg_lock(PGconn *pg, char *errstr, size_t errstr_size);
/** Mark 'running' rows other than `except` failed (their process is dead). Returns rows or -1. */
int batch_pg_fail_stale(PGconn *pg, int64_t except, char *errstr, size_t errstr_size);
int batch_pg_set_cut(PGconn *pg, int64_t run, const char *cut_json, char *errstr, size_t errstr_size);
int batch_pg_progress(PGconn *pg, int64_t run, int64_t records, int64_t total, int64_t skipped, char *errstr,
                      size_t errstr_size);
int batch_pg_fail(PGconn *pg, int64_t run, const char *reason, char *errstr, size_t errstr_size);
/**
 * COPY the agg's cells into run k's own table (committed, not yet visible), then publish it in ONE
 * transaction (ATTACH as lam_view_rows' partition k, lam_published, lam_runs succeeded, NOTIFY
 * lam_batch_published). 0 or -1 with errstr (nothing published; the loaded table is dropped).
 */
struct lam_agg;
int batch_pg_publish(PGconn *pg, int64_t run, const struct lam_agg *agg, int64_t records, int64_t skipped,
                     char *errstr, size_t errstr_size);
/** Detach and drop the tables of runs older than run k except the previous succeeded one. */
int batch_pg_cleanup(PGconn *pg, int64_t run, char *errstr, size_t errstr_size);

/* ---- CLI (batch_cli.c) and HTTP ---- */
int batch_cli_main(batch_ctx_t *ctx, int argc, char **argv);
void batch_http_handle(lam_http_req_t *req, void *opaque);

#endif
