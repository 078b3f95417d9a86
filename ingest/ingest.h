/* ingest.h - the ingest service: HTTP events API in front of the Kafka producer. */
#ifndef INGEST_H
#define INGEST_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

#include "lam_config.h"
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
} ingest_config_t;

typedef struct ingest_ctx {
    ingest_config_t cfg;
    rd_kafka_t *producer;
    lam_http_server_t *http;
    atomic_int kafka_ok;        /* last health probe result */
    atomic_llong kafka_checked; /* monotonic ms of the last probe */
} ingest_ctx_t;

int ingest_producer_init(ingest_ctx_t *ctx, char *errstr, size_t errstr_size);
/** Probe Kafka (cached for a second); 1 when reachable. */
int ingest_producer_healthy(ingest_ctx_t *ctx);
void ingest_producer_destroy(ingest_ctx_t *ctx);

void ingest_http_handle(lam_http_req_t *req, void *opaque);

#endif
