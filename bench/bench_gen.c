/* bench_gen.c - bench only: the load generator's clickstream, canonicalised, produced straight into Kafka. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lam_buf.h"
#include "lam_event.h"
#include "lam_kafka.h"
#include "lam_time.h"
#include "loadgen.h"

/*
 * `make bench` needs millions of canonical events in Kafka quickly (the batch scale curve, a speed
 * backlog when the ingest section is skipped). Going through ingest would measure ingest again, so
 * this tool runs each generated event through the same parser and canonical form ingest uses
 * (lam_event_parse + lam_event_canonical, key = id) and produces it with the shared durable
 * producer (acks=all, idempotence). --ndjson appends exactly the produced records, one a line, for
 * the DuckDB/PostgreSQL references.
 */

static atomic_long failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    if (m->err)
        atomic_fetch_add(&failed, 1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_gen --brokers B --topic T --count N [--seed S] [--days D] [--live] [--ndjson FILE]\n"
               "  --days D     event times spread over the D whole UTC days before today (default 1)\n"
               "  --live       event time = the time of generation instead\n"
               "  --ndjson F   also append every produced record to F\n"
               "Prints `produced=N seconds=S rate=R/s`; exit 1 when a record was not acknowledged.\n");
}

int main(int argc, char **argv)
{
    const char *brokers = NULL, *topic = NULL, *ndjson = NULL;
    long long count = -1, seed = 1, days = 1;
    int live = 0;
    static const struct option opts[] = {{"brokers", 1, 0, 'b'}, {"topic", 1, 0, 't'}, {"count", 1, 0, 'n'},
                                         {"seed", 1, 0, 's'},    {"days", 1, 0, 'd'},  {"live", 0, 0, 'l'},
                                         {"ndjson", 1, 0, 'o'},  {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'b': brokers = optarg; break;
        case 't': topic = optarg; break;
        case 'n': count = atoll(optarg); break;
        case 's': seed = atoll(optarg); break;
        case 'd': days = atoll(optarg); break;
        case 'l': live = 1; break;
        case 'o': ndjson = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!brokers || !topic || count < 0 || days < 1) {
        usage(stderr);
        return 2;
    }
    FILE *out = NULL;
    if (ndjson && !(out = fopen(ndjson, "a"))) {
        fprintf(stderr, "bench_gen: %s: %s\n", ndjson, strerror(errno));
        return 1;
    }
    char err[512];
    rd_kafka_conf_t *conf = lam_kafka_conf_new(brokers, err, sizeof(err));
    if (!conf || lam_kafka_conf_set(conf, "linger.ms", "100", err, sizeof(err)) < 0 ||
        lam_kafka_conf_set(conf, "compression.type", "lz4", err, sizeof(err)) < 0 ||
        lam_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_gen: %s\n", err);
        return 1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = lam_kafka_producer_new(conf, err, sizeof(err));
    if (!rk || lam_kafka_ensure_topic(rk, topic, 6, 30000, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_gen: %s\n", err);
        return 1;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);

    lg_catalogue_init(50000, 2000, 600);
    lg_gen_t g;
    lg_gen_init(&g, (uint64_t)seed, 0, 0, 0);
    lam_event_t ev;
    lam_event_init(&ev);
    lam_buf_t raw = LAM_BUF_INIT, canon = LAM_BUF_INIT;
    int64_t span = days * 86400000LL;
    int64_t base = lam_time_floor(lam_time_now_ms(), LAM_GRAN_DAY) - span;
    double t0 = now_s();
    for (long long i = 0; i < count; i++) {
        int64_t now = lam_time_now_ms();
        /* a multiplicative walk over the span: every chunk of the stream covers all of it */
        int64_t ts = live ? now : base + (int64_t)(((uint64_t)i * 2654435761ULL + (uint64_t)seed) % (uint64_t)span);
        raw.len = 0;
        canon.len = 0;
        lg_gen_event(&g, ts, &raw);
        if (lam_event_parse(&ev, raw.data, raw.len, now, -1, err, sizeof(err)) < 0) {
            fprintf(stderr, "bench_gen: generated event rejected: %s\n", err);
            return 1;
        }
        lam_event_canonical(&ev, &canon);
        for (;;) {
            if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, canon.data, canon.len, ev.id.val,
                                 ev.id.val_len, NULL) == 0)
                break;
            if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "bench_gen: produce: %s\n", rd_kafka_err2str(rd_kafka_last_error()));
                return 1;
            }
            rd_kafka_poll(rk, 10);
        }
        rd_kafka_poll(rk, 0);
        if (out) {
            fwrite(canon.data, 1, canon.len, out);
            fputc('\n', out);
        }
    }
    if (rd_kafka_flush(rk, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "bench_gen: %d records still unacknowledged after 120 s\n", rd_kafka_outq_len(rk));
        return 1;
    }
    double dt = now_s() - t0;
    if (out && fclose(out) != 0) {
        fprintf(stderr, "bench_gen: %s: %s\n", ndjson, strerror(errno));
        return 1;
    }
    long nfail = atomic_load(&failed);
    printf("produced=%lld seconds=%.2f rate=%.0f/s failed=%ld\n", count - nfail, dt, dt > 0 ? count / dt : 0.0, nfail);
    lam_event_free(&ev);
    lam_buf_free(&raw);
    lam_buf_free(&canon);
    lg_gen_free(&g);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return nfail ? 1 : 0;
}
