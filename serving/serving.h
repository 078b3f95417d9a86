/* serving.h - the serving service: merged query API, batch control, status, dashboard hosting. */
#ifndef SERVING_H
#define SERVING_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>

#include "lam_config.h"
#include "lam_http.h"

typedef struct serving_config {
    lam_common_config_t common;
    lam_addr_t addr;
    char *admin_token;
    char *cors_origins;
    char *dashboards_dir;
    int64_t threads;
} serving_config_t;

typedef struct serving_ctx {
    serving_config_t cfg;
    lam_http_server_t *http;
    atomic_int pg_ok;
    atomic_int redis_ok;
} serving_ctx_t;

void serving_http_handle(lam_http_req_t *req, void *opaque);

#endif
