/* speed_http.c - speed_layer's small HTTP listener: /healthz and /metrics (Prometheus text). */
#include <inttypes.h>
#include <string.h>

#include "speed.h"

static const double size_bounds[] = {1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000};
static const double sec_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

void speed_stats_init(speed_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->batch_size = (speed_hist_t){size_bounds, 10};
    s->batch_write_s = (speed_hist_t){sec_bounds, 12};
    s->batch_age_s = (speed_hist_t){sec_bounds, 12};
}

void speed_hist_observe(speed_hist_t *h, double v)
{
    int i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->n++;
}

static void hist_render(lam_buf_t *out, const char *name, const char *help, const speed_hist_t *h)
{
    lam_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->nbounds; i++) {
        cum += h->counts[i];
        lam_buf_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, h->bounds[i], cum);
    }
    cum += h->counts[h->nbounds];
    lam_buf_printf(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %g\n%s_count %" PRIu64 "\n", name, cum, name,
                   h->sum, name, h->n);
}

static void counter(lam_buf_t *out, const char *name, const char *help, uint64_t v)
{
    lam_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

static void render_metrics(speed_ctx_t *ctx, lam_buf_t *out)
{
    speed_stats_t *s = &ctx->stats;
    pthread_mutex_lock(&s->lock);
    counter(out, "lam_speed_events_total", "events applied to real-time views", s->events);
    counter(out, "lam_speed_poison_total", "records skipped as unparseable or malformed", s->poison);
    counter(out, "lam_speed_duplicates_total", "events dropped as duplicate ids within the dedup window",
            s->duplicates);
    counter(out, "lam_speed_skipped_old_total", "events skipped because the published batch run covers them",
            s->skipped_old);
    counter(out, "lam_speed_markers_total", "cut markers seen", s->markers);
    counter(out, "lam_speed_batches_total", "micro-batches written", s->batches);
    counter(out, "lam_speed_script_errors_total", "micro-batch script errors", s->script_errors);
    counter(out, "lam_speed_resyncs_total", "resumptions from the offsets stored in Redis", s->resyncs);
    counter(out, "lam_speed_fetch_kicks_total",
            "requests sent to wake librdkafka's fetcher after the prefetch queue drained (README Prefetch)",
            s->fetch_kicks);
    lam_buf_printf(out, "# HELP lam_speed_events_per_second events applied per second (last second)\n"
                        "# TYPE lam_speed_events_per_second gauge\nlam_speed_events_per_second %.0f\n",
                   s->events_per_s);
    lam_buf_printf(out, "# HELP lam_speed_batch_current_run lam:batch:current as last read\n"
                        "# TYPE lam_speed_batch_current_run gauge\nlam_speed_batch_current_run %" PRId64 "\n",
                   s->current_run);
    hist_render(out, "lam_speed_batch_records", "records per micro-batch", &s->batch_size);
    hist_render(out, "lam_speed_batch_write_seconds", "time to aggregate and write one micro-batch",
                &s->batch_write_s);
    hist_render(out, "lam_speed_batch_age_seconds", "first record of a micro-batch polled -> batch written",
                &s->batch_age_s);
    lam_buf_printf(out, "# HELP lam_speed_partition_lag records behind the high watermark (assigned partitions)\n"
                        "# TYPE lam_speed_partition_lag gauge\n");
    for (int p = 0; p < s->nparts; p++)
        if (s->part_assigned[p] && s->part_lag[p] >= 0)
            lam_buf_printf(out, "lam_speed_partition_lag{partition=\"%d\"} %" PRId64 "\n", p, s->part_lag[p]);
    lam_buf_printf(out, "# HELP lam_speed_partition_epoch epoch of the partition (run of its last cut marker)\n"
                        "# TYPE lam_speed_partition_epoch gauge\n");
    for (int p = 0; p < s->nparts; p++)
        if (s->part_assigned[p])
            lam_buf_printf(out, "lam_speed_partition_epoch{partition=\"%d\"} %" PRId64 "\n", p, s->part_epoch[p]);
    lam_buf_printf(out, "# HELP lam_speed_up Kafka and Redis reachable\n# TYPE lam_speed_up gauge\n"
                        "lam_speed_up{system=\"kafka\"} %d\nlam_speed_up{system=\"redis\"} %d\n",
                   atomic_load(&ctx->kafka_ok), atomic_load(&ctx->redis_ok));
    pthread_mutex_unlock(&s->lock);
}

void speed_http_handle(lam_http_req_t *req, void *opaque)
{
    speed_ctx_t *ctx = opaque;
    if (!strcmp(req->path, "/healthz")) {
        const char *problem = !atomic_load(&ctx->redis_ok)   ? "cannot reach Redis"
                              : !atomic_load(&ctx->kafka_ok) ? "cannot reach Kafka"
                                                             : NULL;
        lam_http_reply_health(req, problem);
        return;
    }
    if (!strcmp(req->path, "/metrics")) {
        lam_buf_t extra = LAM_BUF_INIT;
        render_metrics(ctx, &extra);
        lam_http_reply_metrics(req, "lam_speed", &extra);
        lam_buf_free(&extra);
        return;
    }
    lam_http_error(req, 404, NULL, "no route for %s %s", req->method, req->path);
}
