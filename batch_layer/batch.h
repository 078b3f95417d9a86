/* batch.h - the batch layer: archiver of the master dataset and the recompute runs. */
#ifndef BATCH_H
#define BATCH_H

#include <libpq-fe.h>
#include <stdatomic.h>

#include "lam_config.h"
#include "lam_http.h"

typedef struct batch_config {
    lam_common_config_t common;
    lam_addr_t addr;
    char *data_dir;
    char *schedule;
} batch_config_t;

typedef struct batch_ctx {
    batch_config_t cfg;
    PGconn *pg;
    lam_http_server_t *http;
    atomic_int pg_ok;
} batch_ctx_t;

void batch_http_handle(lam_http_req_t *req, void *opaque);

#endif
