/* ingest.h - the ingest service: HTTP events API in front of the Kafka producer. */
#ifndef INGEST_H
#define INGEST_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lam_buf.h"
#include "lam_config.h"
#include "lam_crc.h"
#include "lam_http.h"

typedef struct ingest_config {
    lam_common_config_t common;
    lam_addr_t addr;
    int64_t max_body;
    char *keys;            /* comma-separated bearer keys, NULL = open */
    int64_t timeout_ms;
    int64_t conn_limit;
    int64_t conn_timeout_ms;
    int64_t threads;
    int64_t max_future_ms;
    int64_t max_events;    /* events per request (413 too_many_events beyond) */
    int64_t queue_bytes;   /* producer queue bound: queue.buffering.max.kbytes */
    int64_t queue_events;  /* producer queue bound: queue.buffering.max.messages */
    int64_t producers;     /* Kafka producers, each owning the partitions p with p % producers == its index */
} ingest_config_t;

#define INGEST_PRODUCERS_MAX 8

/* One producer (one broker connection) and its delivery-report thread. */
typedef struct ingest_producer {
    struct ingest_ctx *ctx;
    rd_kafka_t *rk;
    rd_kafka_topic_t *topic;
    pthread_t dr_thread;
    int dr_started;
} ingest_producer_t;

/* Produce latency histogram bounds (seconds), produce call -> delivery report. */
#define INGEST_LAT_BUCKETS 14

typedef struct ingest_metrics {
    atomic_ullong events_accepted;  /* delivery report said persisted */
    atomic_ullong events_rejected;  /* invalid events (reported in "errors") */
    atomic_ullong events_unacked;   /* valid events Kafka did not take in time (503) */
    atomic_ullong produced_bytes;   /* canonical bytes acknowledged by Kafka */
    atomic_ullong lat[INGEST_LAT_BUCKETS + 1];
    atomic_ullong lat_sum_us;
    atomic_ullong queue_full;       /* produce attempts refused with a full queue */
} ingest_metrics_t;

typedef struct ingest_ctx {
    ingest_config_t cfg;
    ingest_producer_t prod[INGEST_PRODUCERS_MAX]; /* partition p goes to prod[p % nprod] */
    int nprod;
    lam_http_server_t *http;
    char **keys;                /* parsed LAM_INGEST_KEYS */
    size_t nkeys;
    atomic_int kafka_ok;        /* last health probe result */
    atomic_llong kafka_checked; /* monotonic ms of the last probe */
    atomic_llong last_delivery; /* monotonic ms of the last successful delivery report */
    atomic_int stopping;        /* SIGTERM seen: answer with Connection: close */
    atomic_int inflight;        /* deferred requests waiting for delivery reports */
    int own_partitioning;       /* the partitioner is consistent_random: ingest groups events by partition */
    atomic_int partitions;      /* the topic's partition count at the last probe (0 = unknown) */
    atomic_int dr_stop;
    ingest_metrics_t m;
} ingest_ctx_t;

/* ---- ingest_producer.c: the producers, their delivery-report threads, health ---- */

/** One accepted event of a request, in flight to Kafka. */
typedef struct ingest_slot {
    struct ingest_batch *b;
    uint32_t index;       /* position of the event in the request */
    uint32_t payload_len;
    size_t payload_off;   /* canonical form in b->payload */
    size_t key_off;       /* raw id in b->keys */
    uint32_t key_len;
    int32_t part;         /* partition of the key for b->part_np partitions, -1 = not computed */
    uint8_t status;       /* INGEST_SLOT_* */
} ingest_slot_t;

enum { INGEST_SLOT_PENDING = 0, INGEST_SLOT_OK, INGEST_SLOT_FAILED };

/**
 * A request's events on their way to Kafka. Owned by the request until ingest_producer_send(),
 * then by the producer, which replies on req and frees the batch after the last delivery report.
 */
typedef struct ingest_batch {
    ingest_ctx_t *ctx;
    lam_http_req_t *req;
    lam_buf_t payload;      /* canonical events, back to back (referenced by librdkafka, not copied) */
    lam_buf_t keys;         /* raw ids, back to back */
    lam_buf_t ids;          /* ,"id" entries of the valid events, in order */
    lam_buf_t ok_reply;     /* the complete 200 body, built before producing */
    lam_buf_t errors;       /* ,{"index":i,"message":"..."} entries of rejected events */
    ingest_slot_t *slots;
    size_t nslots, slots_cap;
    size_t nevents;         /* events seen (valid + rejected) */
    size_t rejected;
    int32_t part_np;        /* the partition count the slots' part fields were computed for */
    int deferred;           /* the request was deferred (counted in ctx->inflight) */
    size_t first_err_index; /* the first rejected event, for the 400 message */
    char first_err[200];
    atomic_int pending;     /* outstanding delivery reports + 1 while the sender holds it */
    int64_t produce_us;     /* monotonic us when produced */
    char fail_reason[160];  /* first failure, for the 503 message */
    pthread_mutex_t fail_lock;
} ingest_batch_t;

int ingest_producer_init(ingest_ctx_t *ctx, char *errstr, size_t errstr_size);
/** Start the delivery-report threads. 0 or -1. */
int ingest_producer_start(ingest_ctx_t *ctx, char *errstr, size_t errstr_size);
/** Probe Kafka (from the main loop; blocks up to a second). Updates ctx->kafka_ok; 1 when reachable. */
int ingest_producer_probe(ingest_ctx_t *ctx);
/** Cached health, never blocks. */
int ingest_producer_healthy(ingest_ctx_t *ctx);
/**
 * Hand b (with its deferred request) to Kafka. Takes ownership: the reply (200, or 503 naming the
 * events not acknowledged) is sent and b freed when the last delivery report arrives, possibly
 * before this returns.
 */
void ingest_producer_send(ingest_ctx_t *ctx, ingest_batch_t *b);
/** Flush what is queued (10 s in all), stop the delivery-report threads, destroy the producers.
 * Accepts a half-built ctx. */
void ingest_producer_destroy(ingest_ctx_t *ctx);
/**
 * The partition librdkafka's consistent_random partitioner picks for a non-empty key: its CRC-32.
 * lam_crc32 (slicing-by-8) rather than zlib's crc32_z, which librdkafka calls: ids are hashed once
 * per event to pick their partition (and steered ids are tried against up to 256 endings), and
 * crc32_z spent ~120 ns on a 36-byte id (4 % of ingest's CPU on 100-event requests).
 */
static inline int32_t ingest_partition_of(const void *key, size_t len, int32_t np)
{
    return (int32_t)(lam_crc32(0, key, len) % (uint32_t)np);
}
/** Append ingest's own Prometheus metrics (events, bytes, produce latency, queue depth). */
void ingest_producer_metrics(ingest_ctx_t *ctx, lam_buf_t *out);

/* ---- ingest_events.c: POST /v1/events ---- */

/** A new, empty batch for req (from the pool of finished batches when it has one). */
ingest_batch_t *ingest_batch_new(ingest_ctx_t *ctx, lam_http_req_t *req);
/** Free a batch: back to the pool with its buffers when they are small, else released. Accepts NULL. */
void ingest_batch_free(ingest_batch_t *b);
/** Release the pooled batches (at exit, after the last request). */
void ingest_batch_pool_free(void);
/** Build and send the reply of a batch whose deliveries are all reported (from the producer). */
void ingest_batch_reply(ingest_batch_t *b);
/** Handle POST /v1/events (method, auth and content type already checked). */
void ingest_events_post(ingest_ctx_t *ctx, lam_http_req_t *req, int ndjson);

/* ---- ingest_http.c: routes ---- */

void ingest_http_handle(lam_http_req_t *req, void *opaque);
/** Parse LAM_INGEST_KEYS into ctx->keys. */
void ingest_http_keys_init(ingest_ctx_t *ctx);
void ingest_http_keys_free(ingest_ctx_t *ctx);

#endif
