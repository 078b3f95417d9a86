/* speed.h - the speed layer: Kafka -> real-time views in Redis, exactly once, by epoch. */
#ifndef SPEED_H
#define SPEED_H

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lam_agg.h"
#include "lam_buf.h"
#include "lam_config.h"
#include "lam_event.h"
#include "lam_http.h"
#include "lam_view.h"

#define SPEED_TAIL_PER_BATCH 50     /* canonical events per micro-batch appended to lam:tail */
#define SPEED_TAIL_MAXLEN "1000"    /* XADD MAXLEN ~ */
#define SPEED_REDIS_TIMEOUT_MS 5000 /* connect and command timeout */
#define SPEED_REFRESH_MS 3600000  /* EXPIRE of a real-time key is renewed at most this often */
#ifndef SPEED_PREFETCH_KB
#define SPEED_PREFETCH_KB "4096" /* librdkafka queued.max.messages.kbytes (README "Prefetch": with the fetch kicker 4 MB no longer starves) */
#endif
#ifndef SPEED_FETCH_MAX_BYTES
#define SPEED_FETCH_MAX_BYTES "1048576" /* librdkafka fetch.max.bytes: an lz4 response decompresses to several times this (README "Prefetch") */
#endif
#define SPEED_NO_OFFSET (-1)        /* partition has no offset stored in Redis: start at the beginning */

typedef struct speed_config {
    lam_common_config_t common;
    lam_addr_t addr;
    char *group;
    int64_t dedup_window_ms;
    int64_t batch_max;
    int64_t batch_ms;
    int64_t key_ttl_ms;
    int64_t bloom_max_kb;
    int64_t full_parse; /* LAM_SPEED_FULL_PARSE: never the projected scan (tests compare the two) */
    int64_t hll_dense_at; /* LAM_SPEED_HLL_DENSE_AT: values sent to an HLL key before it is made dense (0 never) */
} speed_config_t;

/** What the speed layer knows about one partition of the topic. */
typedef struct speed_part {
    int assigned;
    int64_t stored; /* next offset as stored in Redis (SPEED_NO_OFFSET when absent) */
    int64_t epoch;  /* epoch as stored in Redis (run number of the last marker written) */
    int64_t pos;    /* next offset expected from Kafka (>= stored; SPEED_NO_OFFSET = any) */
    int64_t lag;    /* high watermark - stored, refreshed every second (-1 unknown) */
} speed_part_t;

/** Arguments of one command: their bytes one after the other, (offset, length) pairs in off. */
typedef struct speed_argv {
    lam_buf_t bytes;
    size_t *off;
    size_t n, cap;
} speed_argv_t;

/** One aggregation state per epoch present in the micro-batch (reset and reused). */
typedef struct speed_epoch_agg {
    int64_t epoch;
    lam_agg_t *agg;
    int used;
} speed_epoch_agg_t;

/** What happened to one record of the micro-batch. */
typedef enum speed_rec_kind {
    SPEED_REC_EVENT = 0, /* counted */
    SPEED_REC_MARKER,
    SPEED_REC_POISON,
    SPEED_REC_OLD,  /* epoch < published run: already in the batch view */
    SPEED_REC_DUP,  /* id seen within the dedup window (or earlier in this batch) */
    SPEED_REC_STALE /* partition not ours any more / before the expected offset */
} speed_rec_kind_t;

/** A record of the micro-batch: its bytes are copied into ctx->payloads and the Kafka message destroyed at once. */
typedef struct speed_rec {
    size_t pay_off, pay_len; /* payload in ctx->payloads */
    size_t cut_off, cut_len; /* value of the lam-cut header in ctx->payloads */
    uint8_t has_payload;     /* 0: the message had no payload (poison) */
    uint8_t cut;             /* 0 no lam-cut header, 1 with a value, 2 without one (poison) */
    int64_t offset;
    int32_t partition;
    int64_t epoch;
    size_t id_off, id_len; /* decoded id in batch.ids (id_len 0: no id) */
    uint8_t kind;
    uint8_t check;  /* its id must be looked up in Redis before it is counted */
    uint16_t shard; /* dedup record shard of its id (speed_dedup_shard) */
    uint64_t idh;   /* speed_dedup_id_hash of its id (id_len > 0): hashed once, for the batch's id set,
                     * the shard and the Bloom filters */
} speed_rec_t;

/** One (epoch, view, bucket, distinct metric, group) of the batch and its values (a list in hvals). */
typedef struct speed_hcell {
    int64_t epoch, bucket;
    uint32_t view, metric;
    size_t key_off, key_len; /* group key in hbytes */
    uint64_t hash;
    size_t head, n; /* head = hval index + 1 (0 = none) */
} speed_hcell_t;

/** The deltas of one real-time hash key in the batch (a list of speed_op_t). */
typedef struct speed_ogroup {
    size_t key_off, key_len; /* in obytes */
    uint64_t hash;
    size_t head, tail;       /* op index + 1 (0 = none) */
    size_t nc, nm;           /* HINCRBY ops, other ops */
    int seen;
} speed_ogroup_t;

typedef struct speed_op {
    size_t off, flen, vlen, next; /* field then value in obytes; next = op index + 1 */
    char op;                      /* c HINCRBY, o overflow, n min, x max */
} speed_op_t;

typedef struct speed_hval {
    size_t off, len, next; /* bytes in hbytes; next = hval index + 1 */
} speed_hval_t;

/**
 * Ids in the dedup records of one session's slot (README "Dedup"): this session's (added when a batch is
 * built) and the other sessions' (loaded when the offsets are read). A hit is checked in Redis.
 */
typedef struct speed_bloom {
    int64_t slot;
    char token[17];
    uint64_t *bits;
    size_t nbits;  /* power of two; 0: over LAM_SPEED_DEDUP_FILTER_KB (the slot hash holds the later ids) */
    size_t cap, n; /* ids it is sized for, ids added */
} speed_bloom_t;

/* all Bloom filters together: LAM_SPEED_DEDUP_FILTER_KB (default 8192) */
#define SPEED_DEDUP_SHARDS 1024          /* dedup record strings per (session, slot) */
#define SPEED_SHARD_HASH 0xffff          /* speed_rec_t.shard: the id goes to the slot hash (filters over budget) */

/** A partition of the batch and the stored offset we believe it has (checked under WATCH before MULTI). */
typedef struct speed_fence {
    int partition;
    int64_t stored; /* SPEED_NO_OFFSET: absent */
} speed_fence_t;

#define SPEED_HIST_BUCKETS 12

/** A Prometheus histogram (cumulative buckets are computed when rendering). */
typedef struct speed_hist {
    const double *bounds; /* nbounds upper bounds, +Inf implied */
    int nbounds;
    uint64_t counts[SPEED_HIST_BUCKETS + 1];
    double sum;
    uint64_t n;
} speed_hist_t;

/** Counters and gauges; written by the consumer thread, read by the HTTP thread under lock. */
typedef struct speed_stats {
    pthread_mutex_t lock;
    uint64_t events, poison, duplicates, skipped_old, markers, batches, script_errors, resyncs, fetch_kicks;
    double events_per_s;
    speed_hist_t batch_size, batch_write_s, batch_age_s;
    /* per partition snapshots (copied from ctx->parts every second) */
    int nparts;
    int64_t part_lag[1024];
    int64_t part_epoch[1024];
    int part_assigned[1024];
    int64_t current_run;
} speed_stats_t;

typedef struct speed_ctx {
    speed_config_t cfg;
    lam_views_t *views;
    lam_views_t *agg_views; /* the same views for lam_agg, distinct metrics as count: PFADD takes the raw values */
    rd_kafka_t *consumer;
    redisContext *redis;
    lam_http_server_t *http;
    atomic_int kafka_ok;
    pthread_t health_thread; /* Kafka reachability (main.c), off the consume loop; ends with the service */
    int health_running;
    atomic_int redis_ok;

    /* partitions of the topic, indexed by partition number */
    speed_part_t *parts;
    int nparts;
    int need_resync; /* Redis was lost or a write was refused: re-read offsets and seek */

    /* the fetch kicker (README "Prefetch"): a thread that wakes librdkafka's fetcher once the consumer queue drained */
    pthread_t kick_thread;
    int kick_running;
    atomic_int kick_stop;
    pthread_mutex_t kick_lock;                   /* guards kick_parts */
    rd_kafka_topic_partition_list_t *kick_parts; /* the assigned partitions (NULL: none) */
    atomic_llong rec_bytes_avg;                  /* average record size seen by the consumer thread */
    uint64_t rec_bytes, rec_count;               /* consumer thread: what rec_bytes_avg is computed from */
    int64_t prefetch_bytes, prefetch_msgs;       /* queued.max.messages.kbytes in bytes, queued.min.messages */

    /* the micro-batch being collected */
    speed_rec_t *recs;
    size_t nrecs;
    int64_t batch_start_ms;
    lam_buf_t ids; /* decoded ids of the batch */
    lam_buf_t payloads; /* the records' payloads and lam-cut values (README "Prefetch": no fetch buffer is held) */

    /* reused per flush */
    speed_epoch_agg_t *aggs;
    size_t naggs, aggs_cap;
    lam_event_t ev;
    speed_argv_t args; /* arguments of the script call */
    lam_buf_t kbuf, kbuf2, fbuf; /* key and field scratch */
    lam_buf_t dkeys;             /* dedup: shard keys to read, NUL-terminated */
    uint32_t *dorder;            /* dedup: counted records ordered by shard */
    size_t dorder_cap;
    uint32_t *idset;   /* open-addressing set of record indexes (within-batch dedup) */
    uint64_t *idset_h; /* the hash of each idset entry's id */
    size_t idset_cap;

    /* distinct values of the batch per HLL cell, PFADD'ed by the script (see README "Distinct") */
    speed_hcell_t *hcells;
    size_t nhcells, hcells_cap;
    uint32_t *hcell_tab; /* open addressing: hcell index + 1 */
    size_t hcell_tab_cap;
    speed_hval_t *hvals;
    size_t nhvals, hvals_cap;
    uint64_t *hval_set; /* hashes of (cell, value) seen in this batch */
    size_t hval_set_cap;
    lam_buf_t hbytes;   /* group keys and values */
    /* values PFADDed per HLL key (by key hash) since it was seen: made dense at cfg.hll_dense_at (README "Distinct") */
    uint64_t *hcnt_h;
    uint32_t *hcnt_n; /* UINT32_MAX: made dense */
    size_t hcnt_cap, hcnt_used;
    unsigned char *has_distinct; /* per view */
    /* the fields collect_distinct reads, each name once (a projected event's are looked up once per event):
     * dnames[k]; per view with distinct metrics, nwhere + ngroup + nmetrics indexes into dnames in didx[v] */
    const lam_fieldref_t *dnames[64];
    size_t ndnames;
    uint8_t **didx;

    /* hash-key groups of the batch's count/sum/min/max deltas */
    speed_ogroup_t *ogroups;
    size_t nogroups, ogroups_cap;
    uint32_t *ogtab; /* open addressing: group index + 1 */
    size_t ogtab_cap;
    speed_op_t *ops;
    size_t nops, ops_cap;
    lam_buf_t obytes;        /* keys, fields, values */
    lam_buf_t resp, resp2, resp3; /* RESP-formatted commands */
    lam_buf_t tx;            /* the batch's plain commands inside MULTI/EXEC (RESP), ntx of them */
    size_t ntx;
    speed_fence_t *fence;    /* the partitions of the batch and their stored offsets */
    size_t nfence, fence_cap;

    /* keys whose EXPIRE / hidx membership was written recently (skip repeating it every batch) */
    uint64_t *xcache;
    int64_t *xcache_ms;
    size_t xcache_cap, xcache_n;
    speed_argv_t xkeys;  /* EXPIRE list of the batch being built */

    /* dedup: this session's token and Bloom filters; the other sessions' slot hashes that existed
     * when the offsets were last read (NUL-terminated names) */
    char dedup_token[17];
    speed_bloom_t *blooms;
    size_t nblooms, blooms_cap, bloom_bytes;
    size_t bloom_add_last; /* index + 1 of the filter speed_dedup_add wrote last (0: none; reset when the
                            * array is compacted): the newest of its (session, slot), tried first */
    lam_buf_t other_keys;
    size_t nother_keys;

    /* the batch sent last whose replies are not read yet (README "Overlap") */
    int pending;
    size_t pend_nrecs, pend_ntx;
    uint64_t pend_events, pend_poison, pend_dups, pend_old, pend_markers;
    int64_t pend_t0, pend_start_ms, pend_build_ms;

    int64_t current_run; /* lam:batch:current as last read */
    int64_t current_read_ms;
    char offsets_key[256], epochs_key[256], stats_key[256], fence_key[256];
    int64_t last_poison_log_ms;
    uint64_t poison_log_suppressed;

    /* stats pushed into lam:speed:{group}:stats */
    uint64_t pushed_events, pushed_poison, pushed_dups, pushed_old;
    speed_stats_t stats;
} speed_ctx_t;

/* speed_redis.c */
/** Try to connect once (timeouts SPEED_REDIS_TIMEOUT_MS) and load the script. 0 or -1. */
int speed_redis_connect(speed_ctx_t *ctx);
/** Drop the connection after an error: later calls reconnect and resync. */
void speed_redis_lost(speed_ctx_t *ctx, const char *why);
/**
 * Read lam:speed:{group}:offsets and :epochs into ctx->parts for every partition (stored,
 * epoch; pos = stored). 0 or -1 (connection dropped).
 */
int speed_redis_read_offsets(speed_ctx_t *ctx);
/** GET lam:batch:current into ctx->current_run. 0 or -1. */
int speed_redis_read_current(speed_ctx_t *ctx);
/** Delete the real-time keys of every epoch < ctx->current_run. 0 or -1. */
int speed_redis_cleanup_epochs(speed_ctx_t *ctx);
/**
 * Dedup lookup of n ids, one pipelined round of HMGET: every id in the keys of other sessions, the ids
 * with maybe_own[i] in our own keys (key_own[k]). found[i] = 1 when id i was first counted somewhere
 * else than the record recs[which[i]] ("partition:offset"), else left as it is (absent, or a replay
 * of our own batch). 0 or -1 (connection dropped).
 */
int speed_redis_dedup_lookup(speed_ctx_t *ctx, size_t nkeys, const char **keys, const size_t *klens,
                             const uint8_t *key_own, size_t n, const char **ids, const size_t *lens,
                             const uint32_t *which, const uint8_t *maybe_own, uint8_t *found);
/**
 * GET n keys (NUL-terminated names, one after the other in names) in pipelined rounds of a bounded size;
 * fn is called with each key's index and value (absent and non-string keys are skipped). 0 or -1.
 */
int speed_redis_get_each(speed_ctx_t *ctx, size_t n, const char *names,
                         void (*fn)(speed_ctx_t *ctx, void *opaque, size_t i, const char *v, size_t len), void *opaque);
/**
 * The other sessions that wrote within the window (ZRANGEBYSCORE of the sessions zset) and which of
 * their slot hashes exist (TYPE): into ctx->other_keys. Done whenever the offsets are read. 0 or -1.
 */
int speed_redis_read_sessions(speed_ctx_t *ctx);

/* speed_dedup.c */
/** Dedup slot length in seconds (window / 6, at least 1). */
int64_t dedup_slot_seconds(const speed_ctx_t *ctx);
/** lam:dedup:@{slot}:{token}: a slot hash of the previous layout (token "": the unsessioned one before it). */
void speed_dedup_slot_key(lam_buf_t *out, int64_t slot, const char *token);
/** lam:dedup:@{slot}:{token}:{shard}: a dedup record string (README "Dedup"). */
void speed_dedup_shard_key(lam_buf_t *out, int64_t slot, const char *token, unsigned shard);
/** The hash of an id that its shard and the Bloom filters are derived from (computed once per record). */
uint64_t speed_dedup_id_hash(const char *id, size_t len);
/** The record shard of an id (0 .. SPEED_DEDUP_SHARDS - 1), from its speed_dedup_id_hash. */
unsigned speed_dedup_shard(uint64_t idh);
#define SPEED_DEDUP_UUID_LEN 36 /* a UUID's canonical text (8-4-4-4-12) */
/**
 * Append one record entry: varint id length, id, varint partition, varint offset; an id that is a UUID in
 * canonical lowercase text as a zero length and its 16 bytes (README "Dedup").
 */
void speed_dedup_entry(lam_buf_t *b, const char *id, size_t len, int partition, int64_t offset);
/**
 * Next entry of a record string at *p (< end): 1 read, 0 at the end, -1 malformed. The id points into the
 * record, or for a UUID entry into uuid (its text, valid until the next call with that buffer).
 */
int speed_dedup_entry_next(const char **p, const char *end, char uuid[SPEED_DEDUP_UUID_LEN], const char **id,
                           size_t *len, int64_t *partition, int64_t *offset);
/** lam:dedup:@sessions: zset token -> unix seconds of its last write. */
void speed_dedup_sessions_key(lam_buf_t *out);
/** How long a session's slot records matter after its last write (window + 3 slots), seconds. */
int64_t speed_dedup_keep_s(const speed_ctx_t *ctx);
void speed_dedup_init(speed_ctx_t *ctx);
void speed_dedup_free(speed_ctx_t *ctx);
/** 1 when a filter (of this or another session) may hold id, 0 when no record within the window has it. */
int speed_dedup_maybe(const speed_ctx_t *ctx, uint64_t idh);
/** Append the shard keys that may hold id (one per (session, slot) whose filter hits), NUL-terminated. */
size_t speed_dedup_hit_keys(const speed_ctx_t *ctx, uint64_t idh, unsigned shard, lam_buf_t *keys);
/**
 * Remember id in the filter of (token, slot): 1, or 0 when the filters are over LAM_SPEED_DEDUP_FILTER_KB (from
 * then on that slot's ids are kept in its slot hash, one field per id, and looked up with HMGET).
 */
int speed_dedup_add(speed_ctx_t *ctx, const char *token, int64_t slot, uint64_t idh);
/** 1 when (token, slot) went over the budget: its later ids are in lam:dedup:@{slot}:{token} (a hash). */
int speed_dedup_over_budget(const speed_ctx_t *ctx, const char *token, int64_t slot);
/** Forget the filters of (token, slot). */
void speed_dedup_forget(speed_ctx_t *ctx, const char *token, int64_t slot);
/** Forget the filters of the other sessions (before they are loaded again). */
void speed_dedup_drop_others(speed_ctx_t *ctx);
/** Forget the filters of slots before lo. */
void speed_dedup_prune(speed_ctx_t *ctx, int64_t lo);

/**
 * Send the micro-batch's transaction in one write, without waiting: WATCH the offsets hash,
 * lam:batch:current and the fence key; the fence script (ctx->fence, ctx->current_run); MULTI, EVAL
 * of the batch script with ctx->args, the commands of ctx->tx, EXEC. 0 sent, -1 connection dropped.
 */
int speed_redis_send_batch(speed_ctx_t *ctx);
/**
 * Read the replies of the transaction sent last (ntx plain commands). Returns 0 written, 1 refused
 * because lam:batch:current moved or a watched key changed before EXEC, 2 refused because the
 * stored offsets are not what we believed, -1 connection/unknown outcome or error.
 */
int speed_redis_recv_batch(speed_ctx_t *ctx, size_t ntx);
/** HINCRBY/HSET the stats summary. 0 or -1. */
int speed_redis_push_stats(speed_ctx_t *ctx);

/** Append one argument (binary safe). */
void speed_argv_add(speed_argv_t *a, const void *data, size_t len);
void speed_argv_clear(speed_argv_t *a);
void speed_argv_free(speed_argv_t *a);

/** RESP formatting: `*argc`, then one bulk string per argument (begin clears b, cmd appends). */
void speed_resp_begin(lam_buf_t *b, size_t argc);
void speed_resp_cmd(lam_buf_t *b, size_t argc);
void speed_resp_arg(lam_buf_t *b, const void *data, size_t len);

/* speed_script.c */
extern const char speed_script_lua[];
extern const char speed_fence_lua[];

/* speed_apply.c */
/** Append one record to the batch: its payload and lam-cut header are copied, msg is destroyed. */
void speed_batch_add(speed_ctx_t *ctx, rd_kafka_message_t *msg);
/**
 * Aggregate the micro-batch and send its transaction; it stays pending (its replies unread) while
 * the next one is collected and built. The batch sent before is completed first (during the build).
 * The offsets we believe advance when it is sent; on any failure the batch is dropped and a resync
 * is requested (the stored offsets decide where consumption resumes). 0 or -1.
 */
int speed_batch_flush(speed_ctx_t *ctx);
/** Read the outcome of the pending batch (if any): counted on success, else resync. 0 or -1. */
int speed_batch_complete(speed_ctx_t *ctx);
/** Flush, then complete: everything in hand written and confirmed (revoke, shutdown). */
int speed_batch_sync(speed_ctx_t *ctx);
/** Forget the batch's records without writing. */
void speed_batch_drop(speed_ctx_t *ctx);
void speed_apply_free(speed_ctx_t *ctx);
/** Forget which keys were refreshed recently (after a Redis reconnect or resync: Redis may have lost them). */
void speed_batch_forget(speed_ctx_t *ctx);
/** Make sure ctx->parts covers partition p. */
void speed_parts_ensure(speed_ctx_t *ctx, int p);

/* speed_kafka.c */
int speed_kafka_init(speed_ctx_t *ctx, char *errstr, size_t errstr_size);
/** Re-read stored offsets and seek every assigned partition there; resume them. 0 or -1. */
int speed_kafka_resync(speed_ctx_t *ctx);
/** Pause every assigned partition (Redis unavailable). */
void speed_kafka_pause(speed_ctx_t *ctx);
/** Refresh per-partition lag from the cached high watermarks. */
void speed_kafka_update_lag(speed_ctx_t *ctx);
/** Start the fetch kicker thread (README "Prefetch"); speed_kafka_destroy stops it. */
void speed_kafka_kicker_start(speed_ctx_t *ctx);
/** Record sizes for the kicker's estimate of the prefetch queue's capacity in records (consumer thread). */
void speed_kafka_note_sizes(speed_ctx_t *ctx, uint64_t bytes, uint64_t count);
/** Commit the stored offsets to Kafka (asynchronously, for lag tools only). */
void speed_kafka_commit(speed_ctx_t *ctx);
void speed_kafka_destroy(speed_ctx_t *ctx);

/* speed_http.c */
void speed_http_handle(lam_http_req_t *req, void *opaque);
void speed_stats_init(speed_stats_t *s);
void speed_hist_observe(speed_hist_t *h, double v);

#endif
