/* serving_status.c - GET /v1/status: Kafka end offsets, speed-layer and archiver lag, batch runs. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lam_json.h"
#include "lam_kafka.h"
#include "lam_log.h"
#include "lam_mem.h"
#include "lam_pg.h"
#include "lam_service.h"
#include "lam_store.h"
#include "serving.h"

#define MAX_PARTS 1024

/* Kafka figures sampled by the main loop (status_lock). */
static int nparts = -1; /* -1 = Kafka not reached yet */
static int64_t lo_wm[MAX_PARTS], hi_wm[MAX_PARTS], archived[MAX_PARTS];
static int archive_known;
static int64_t sampled_at_ms;

void serving_status_tick(serving_ctx_t *ctx)
{
    int64_t now = lam_now_mono_ms();
    if (now < ctx->kafka_next_try_ms)
        return;
    ctx->kafka_next_try_ms = now + 2000;
    char err[512];
    if (!ctx->kafka) {
        rd_kafka_conf_t *conf = lam_kafka_conf_new(ctx->cfg.common.kafka_brokers, err, sizeof(err));
        if (conf)
            lam_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
        /* Never subscribes: only used to read watermarks and the archiver group's committed offsets. */
        ctx->kafka = conf ? lam_kafka_consumer_new(conf, ctx->cfg.archive_group, err, sizeof(err)) : NULL;
        if (!ctx->kafka) {
            lam_warn("msg=\"kafka handle for status\" error=\"%s\"", err);
            ctx->kafka_next_try_ms = now + 10000;
            return;
        }
    }
    /* Never subscribed, but errors still queue up as events: drain them. */
    rd_kafka_message_t *ev;
    while ((ev = rd_kafka_consumer_poll(ctx->kafka, 0)))
        rd_kafka_message_destroy(ev);
    int64_t t0 = serving_now_us();
    const char *topic = ctx->cfg.common.kafka_topic;
    int n = lam_kafka_partition_count(ctx->kafka, topic, 1000, err, sizeof(err));
    if (n <= 0) {
        serving_observe_backend(ctx, SB_KAFKA, t0, 0);
        pthread_mutex_lock(&ctx->status_lock);
        nparts = -1;
        pthread_mutex_unlock(&ctx->status_lock);
        ctx->kafka_next_try_ms = now + 5000;
        return;
    }
    if (n > MAX_PARTS)
        n = MAX_PARTS;
    int64_t lo[MAX_PARTS], hi[MAX_PARTS], arch[MAX_PARTS];
    int ok = 1;
    for (int p = 0; p < n && ok; p++)
        ok = rd_kafka_query_watermark_offsets(ctx->kafka, topic, p, &lo[p], &hi[p], 1000) ==
             RD_KAFKA_RESP_ERR_NO_ERROR;
    int arch_ok = 0;
    if (ok) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
        for (int p = 0; p < n; p++)
            rd_kafka_topic_partition_list_add(l, topic, p);
        if (rd_kafka_committed(ctx->kafka, l, 1000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            arch_ok = 1;
            for (int p = 0; p < n; p++) {
                int64_t off = l->elems[p].offset;
                arch[p] = off >= 0 ? off : lo[p];
            }
        }
        rd_kafka_topic_partition_list_destroy(l);
    }
    serving_observe_backend(ctx, SB_KAFKA, t0, ok);
    pthread_mutex_lock(&ctx->status_lock);
    if (ok) {
        int64_t total = 0;
        for (int p = 0; p < n; p++)
            total += hi[p];
        int64_t wall = lam_now_ms();
        if (ctx->events_prev_ms && wall > ctx->events_prev_ms && nparts == n)
            ctx->events_per_s = (double)(total - ctx->events_prev_total) * 1000.0 / (double)(wall - ctx->events_prev_ms);
        ctx->events_prev_total = total;
        ctx->events_prev_ms = wall;
        nparts = n;
        memcpy(lo_wm, lo, (size_t)n * sizeof(int64_t));
        memcpy(hi_wm, hi, (size_t)n * sizeof(int64_t));
        if (arch_ok)
            memcpy(archived, arch, (size_t)n * sizeof(int64_t));
        archive_known = arch_ok;
        sampled_at_ms = wall;
    } else {
        nparts = -1;
    }
    pthread_mutex_unlock(&ctx->status_lock);
}

/* Append a Redis hash reply as a JSON object; integer-looking values become numbers. */
static void append_hash(lam_buf_t *b, const redisReply *h)
{
    lam_buf_append_char(b, '{');
    if (h && h->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < h->elements; i += 2) {
            const redisReply *k = h->element[i], *v = h->element[i + 1];
            if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
                continue;
            if (i)
                lam_buf_append_char(b, ',');
            lam_json_append_string(b, k->str, k->len);
            lam_buf_append_char(b, ':');
            lam_json_num_t num;
            if (v->len && v->len < 40 && lam_json_num_parse(v->str, v->len, &num) == 0)
                lam_buf_append(b, v->str, v->len);
            else
                lam_json_append_string(b, v->str, v->len);
        }
    lam_buf_append_char(b, '}');
}

static int64_t hash_get_int(const redisReply *h, int part, int64_t def)
{
    char key[16];
    int kl = snprintf(key, sizeof(key), "%d", part);
    if (h && h->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < h->elements; i += 2)
            if (h->element[i]->type == REDIS_REPLY_STRING && h->element[i]->len == (size_t)kl &&
                !memcmp(h->element[i]->str, key, (size_t)kl) && h->element[i + 1]->type == REDIS_REPLY_STRING)
                return strtoll(h->element[i + 1]->str, NULL, 10);
    return def;
}

void serving_handle_status(serving_ctx_t *ctx, lam_http_req_t *req)
{
    if (serving_get_only_or_reply(req) < 0)
        return;
    char err[512];
    redisReply *rep[5] = {0};
    redisContext *rc = serving_redis(ctx, err, sizeof(err));
    lam_buf_t k = LAM_BUF_INIT;
    int redis_ok = 0;
    if (rc) {
        int64_t t0 = serving_now_us();
        static const char *what[3] = {"offsets", "epochs", "stats"};
        for (int i = 0; i < 3; i++) {
            lam_store_speed_key(&k, ctx->cfg.speed_group, what[i]);
            const char *a[2] = {"HGETALL", k.data};
            redisAppendCommandArgv(rc, 2, a, NULL);
        }
        const char *g[2] = {"GET", LAM_STORE_CURRENT_KEY};
        redisAppendCommandArgv(rc, 2, g, NULL);
        const char *z[4] = {"ZRANGE", LAM_STORE_EPOCHS_KEY, "0", "-1"};
        redisAppendCommandArgv(rc, 4, z, NULL);
        redis_ok = 1;
        for (int i = 0; i < 5; i++)
            if (redisGetReply(rc, (void **)&rep[i]) != REDIS_OK) {
                redis_ok = 0;
                serving_redis_drop(ctx);
                break;
            }
        /* An error reply (e.g. -LOADING while Redis replays its AOF after a restart) says nothing
         * about the stored offsets: report the lag as unknown, never as the whole topic. */
        for (int i = 0; redis_ok && i < 5; i++)
            if (rep[i]->type == REDIS_REPLY_ERROR)
                redis_ok = 0;
        serving_observe_backend(ctx, SB_REDIS, t0, redis_ok);
    }
    lam_buf_free(&k);

    lam_buf_t b = LAM_BUF_INIT;
    pthread_mutex_lock(&ctx->status_lock);
    int n = nparts;
    int64_t speed_lag = -1, arch_lag = -1, total = 0;
    if (n > 0) {
        if (redis_ok) {
            speed_lag = 0;
            for (int p = 0; p < n; p++) {
                int64_t off = hash_get_int(rep[0], p, lo_wm[p]);
                speed_lag += hi_wm[p] > off ? hi_wm[p] - off : 0;
            }
        }
        if (archive_known) {
            arch_lag = 0;
            for (int p = 0; p < n; p++)
                arch_lag += hi_wm[p] > archived[p] ? hi_wm[p] - archived[p] : 0;
        }
    }
    lam_buf_append_str(&b, "{\"speed\":{\"lag\":");
    if (speed_lag >= 0)
        lam_buf_append_i64(&b, speed_lag);
    else
        lam_buf_append_str(&b, "null");
    lam_buf_append_str(&b, ",\"group\":");
    lam_json_append_cstr(&b, ctx->cfg.speed_group);
    lam_buf_append_str(&b, ",\"offsets\":");
    append_hash(&b, redis_ok ? rep[0] : NULL);
    lam_buf_append_str(&b, ",\"partition_epochs\":");
    append_hash(&b, redis_ok ? rep[1] : NULL);
    lam_buf_append_str(&b, ",\"epochs\":[");
    if (redis_ok && rep[4]->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < rep[4]->elements; i++) {
            if (i)
                lam_buf_append_char(&b, ',');
            lam_buf_append_i64(&b, strtoll(rep[4]->element[i]->str ? rep[4]->element[i]->str : "0", NULL, 10));
        }
    lam_buf_append_str(&b, "],\"stats\":");
    append_hash(&b, redis_ok ? rep[2] : NULL);
    lam_buf_append_str(&b, "},\"archive\":{\"lag\":");
    if (arch_lag >= 0)
        lam_buf_append_i64(&b, arch_lag);
    else
        lam_buf_append_str(&b, "null");
    lam_buf_append_str(&b, ",\"group\":");
    lam_json_append_cstr(&b, ctx->cfg.archive_group);
    lam_buf_append_str(&b, "},\"kafka\":{\"reachable\":");
    lam_buf_append_str(&b, n > 0 ? "true" : "false");
    lam_buf_append_str(&b, ",\"topic\":");
    lam_json_append_cstr(&b, ctx->cfg.common.kafka_topic);
    lam_buf_append_str(&b, ",\"end_offsets\":{");
    for (int p = 0; p < n; p++) {
        lam_buf_printf(&b, "%s\"%d\":%lld", p ? "," : "", p, (long long)hi_wm[p]);
        total += hi_wm[p];
    }
    lam_buf_printf(&b, "},\"total\":%lld,\"events_per_s\":", (long long)total);
    lam_json_append_double(&b, n > 0 ? ctx->events_per_s : 0.0);
    lam_buf_printf(&b, ",\"sampled_at\":%lld}", (long long)sampled_at_ms);
    pthread_mutex_unlock(&ctx->status_lock);

    lam_buf_append_str(&b, ",\"batch\":{\"current_run\":");
    PGconn *pg = serving_pg(ctx, err, sizeof(err));
    int64_t published = pg ? serving_pg_refresh_published(ctx, pg, err, sizeof(err)) : -1;
    if (published > 0)
        lam_buf_append_i64(&b, published);
    else
        lam_buf_append_str(&b, "null");
    lam_buf_append_str(&b, ",\"redis_current_run\":");
    if (redis_ok && rep[3]->type == REDIS_REPLY_STRING)
        lam_buf_append_i64(&b, strtoll(rep[3]->str, NULL, 10));
    else
        lam_buf_append_str(&b, "null");
    lam_buf_append_str(&b, ",\"last_run\":");
    PGresult *res = NULL;
    if (pg) {
        int64_t t0 = serving_now_us();
        res = lam_pg_query(pg,
                           "SELECT run, status, (extract(epoch FROM finished_at) * 1000)::bigint, error,"
                           " records, records_total FROM lam_runs ORDER BY run DESC LIMIT 1",
                           0, NULL, err, sizeof(err));
        serving_observe_backend(ctx, SB_PG, t0, res != NULL);
    }
    if (res && PQntuples(res)) {
        lam_buf_printf(&b, "{\"run\":%s,\"status\":", PQgetvalue(res, 0, 0));
        lam_json_append_cstr(&b, PQgetvalue(res, 0, 1));
        lam_buf_append_str(&b, ",\"finished_at\":");
        lam_buf_append_str(&b, PQgetisnull(res, 0, 2) ? "null" : PQgetvalue(res, 0, 2));
        lam_buf_append_str(&b, ",\"error\":");
        if (PQgetisnull(res, 0, 3))
            lam_buf_append_str(&b, "null");
        else
            lam_json_append_cstr(&b, PQgetvalue(res, 0, 3));
        lam_buf_printf(&b, ",\"progress\":{\"records\":%s,\"records_total\":%s}}", PQgetvalue(res, 0, 4),
                       PQgetvalue(res, 0, 5));
    } else {
        lam_buf_append_str(&b, "null");
    }
    PQclear(res);
    lam_buf_printf(&b, "},\"backends\":{\"postgresql\":%s,\"redis\":%s,\"kafka\":%s}}\n", pg ? "true" : "false",
                   redis_ok ? "true" : "false", n > 0 ? "true" : "false");
    for (int i = 0; i < 5; i++)
        if (rep[i])
            freeReplyObject(rep[i]);
    serving_reply_json(req, 200, &b);
    lam_buf_free(&b);
}
