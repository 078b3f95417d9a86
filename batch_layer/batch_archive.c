/* batch_archive.c - the archiver: Kafka consumer group "archive" -> fsync'd segments of the master dataset. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "batch.h"
#include "lam_kafka.h"
#include "lam_log.h"
#include "lam_mem.h"
#include "lam_service.h"

#define BLOCK_RAW_MAX (1 << 20)   /* a block is written once its records reach 1 MiB */
#define PENDING_MAX (8 << 20)     /* all partitions: flush at 8 MiB buffered */

typedef struct part_state {
    int fd;          /* open (unsealed) segment, -1 when none */
    size_t seg;      /* its index in the working manifest */
    int64_t next;    /* next offset to archive; -1 when nothing of the partition is on disk */
    lam_buf_t raw;   /* records of the block being built */
    uint32_t nrec;
    int64_t bfirst, blast;
    int dirty;       /* a block was written since the last fsync */
    int commit;      /* offset to commit after the next manifest save */
} part_state_t;

struct batch_archive {
    batch_ctx_t *ctx;
    const char *dir;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    batch_manifest_t man;     /* working manifest, archiver thread only */
    batch_manifest_t durable; /* the last saved manifest, read by others under mu */
    part_state_t *parts;      /* indexed by partition */
    size_t nparts;
    batch_cut_t *pcuts;       /* cuts in blocks not yet fsync'd */
    size_t npcuts, pcutcap;
    ZSTD_CCtx *cctx;          /* LAM_BATCH_CODEC=zstd; NULL: lz4 blocks */
    lam_buf_t scratch;
    rd_kafka_t *rk;
    int lock_fd;
    int64_t pending_since, pending_bytes;
    int flush_now;
    atomic_llong archived, blocks, bytes, flushes, errors;
    char problem[256];        /* under mu */
    atomic_int consumer_problem; /* problem is the consumer's (cleared once it gets partitions or records) */
};

static part_state_t *part(batch_archive_t *a, int32_t p)
{
    if ((size_t)p >= a->nparts) {
        size_t n = (size_t)p + 1;
        a->parts = lam_realloc(a->parts, n * sizeof(*a->parts));
        for (size_t i = a->nparts; i < n; i++) {
            memset(&a->parts[i], 0, sizeof(a->parts[i]));
            a->parts[i].fd = -1;
            a->parts[i].next = -1;
        }
        a->nparts = n;
    }
    return &a->parts[p];
}

/* A write or recovery problem (msg), or none (NULL); held until the next successful flush. */
static void set_problem(batch_archive_t *a, const char *msg)
{
    pthread_mutex_lock(&a->mu);
    snprintf(a->problem, sizeof(a->problem), "%s", msg ? msg : "");
    atomic_store(&a->consumer_problem, 0);
    pthread_mutex_unlock(&a->mu);
}

/*
 * A consumer error (e.g. "Subscribed topic not available" right after the topic was created): it
 * ends when the consumer is assigned partitions or receives records, not only at the next flush
 * (an idle archiver would otherwise stay unhealthy until events arrive). A write problem stays.
 */
static void set_consumer_problem(batch_archive_t *a, const char *msg)
{
    pthread_mutex_lock(&a->mu);
    if (!a->problem[0] || atomic_load(&a->consumer_problem)) {
        snprintf(a->problem, sizeof(a->problem), "%s", msg);
        atomic_store(&a->consumer_problem, 1);
    }
    pthread_mutex_unlock(&a->mu);
}

static void clear_consumer_problem(batch_archive_t *a)
{
    if (!atomic_load_explicit(&a->consumer_problem, memory_order_relaxed))
        return;
    pthread_mutex_lock(&a->mu);
    if (atomic_load(&a->consumer_problem)) {
        a->problem[0] = '\0';
        atomic_store(&a->consumer_problem, 0);
    }
    pthread_mutex_unlock(&a->mu);
}

static void publish_durable(batch_archive_t *a)
{
    batch_manifest_t copy;
    batch_manifest_copy(&copy, &a->man);
    pthread_mutex_lock(&a->mu);
    batch_manifest_free(&a->durable);
    a->durable = copy;
    pthread_mutex_unlock(&a->mu);
}

static void close_parts(batch_archive_t *a)
{
    for (size_t i = 0; i < a->nparts; i++) {
        if (a->parts[i].fd >= 0)
            close(a->parts[i].fd);
        lam_buf_free(&a->parts[i].raw);
    }
    lam_free(a->parts);
    a->parts = NULL;
    a->nparts = 0;
    a->npcuts = 0;
    a->pending_since = a->pending_bytes = 0;
    a->flush_now = 0;
}

static int in_manifest(const batch_manifest_t *m, const char *name)
{
    for (size_t i = 0; i < m->nsegs; i++)
        if (!strcmp(m->segs[i].name, name))
            return 1;
    return 0;
}

/*
 * Bring the data dir to a consistent state and rebuild the per-partition positions from it:
 * open segments are rescanned (their torn tail truncated, markers found in them added to the
 * cuts), files the manifest does not know are unacknowledged leftovers and are removed.
 */
static int recover(batch_archive_t *a, char *errstr, size_t errstr_size)
{
    close_parts(a);
    batch_manifest_free(&a->man);
    if (batch_manifest_load(a->dir, &a->man, errstr, errstr_size) < 0)
        return -1;
    char path[4096], err[256];
    for (size_t i = 0; i < a->man.nsegs; i++) {
        batch_segment_t *s = &a->man.segs[i];
        snprintf(path, sizeof(path), "%s/%s", a->dir, s->name);
        struct stat st;
        if (stat(path, &st) < 0) {
            snprintf(errstr, errstr_size, "segment %s: %s", s->name, strerror(errno));
            return -1;
        }
        if (!s->sealed) {
            batch_seg_reader_t r;
            if (batch_seg_open(&r, path, err, sizeof(err)) < 0) {
                snprintf(errstr, errstr_size, "segment %s: %s", s->name, err);
                return -1;
            }
            batch_block_t b;
            int64_t valid = r.pos, count = 0, first = -1, last = -1;
            int rc;
            while ((rc = batch_seg_next_block(&r, &b, 1, err, sizeof(err))) == 1) {
                size_t pos = 0;
                batch_rec_t rec;
                int rr;
                while ((rr = batch_rec_next(&r.raw, &pos, &rec)) == 1)
                    if (rec.kind == BATCH_REC_CUT)
                        batch_manifest_add_cut(&a->man, rec.run, s->partition, rec.offset);
                if (rr < 0) {
                    rc = -1;
                    break;
                }
                valid = r.pos;
                count += b.nrecords;
                if (first < 0)
                    first = b.first;
                last = b.last;
            }
            batch_seg_close(&r);
            if (rc < 0) {
                lam_warn("msg=\"truncating torn tail of open segment\" segment=%s valid_bytes=%" PRId64
                         " file_bytes=%lld reason=\"%s\"",
                         s->name, valid, (long long)st.st_size, err);
                int fd = open(path, O_WRONLY);
                if (fd < 0 || ftruncate(fd, valid) < 0 || fsync(fd) < 0) {
                    snprintf(errstr, errstr_size, "segment %s: truncate: %s", s->name, strerror(errno));
                    if (fd >= 0)
                        close(fd);
                    return -1;
                }
                close(fd);
            }
            s->bytes = valid;
            s->count = count;
            s->first = first;
            s->last = last;
            if ((st.st_mode & 0222) == 0)
                s->sealed = 1; /* sealed just before a crash: chmod done, manifest not yet saved */
        }
        part_state_t *ps = part(a, s->partition);
        if (s->last >= 0 && s->last + 1 > ps->next)
            ps->next = s->last + 1;
    }
    /* Orphans: created before a crash but never listed, so nothing in them was acknowledged. */
    DIR *d = opendir(a->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t n = strlen(e->d_name);
            if (n > 4 && !strcmp(e->d_name + n - 4, ".seg") && !in_manifest(&a->man, e->d_name)) {
                snprintf(path, sizeof(path), "%s/%s", a->dir, e->d_name);
                lam_warn("msg=\"removing unlisted segment\" segment=%s", e->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    for (size_t i = 0; i < a->man.nsegs; i++) {
        batch_segment_t *s = &a->man.segs[i];
        if (s->sealed)
            continue;
        part_state_t *ps = part(a, s->partition);
        snprintf(path, sizeof(path), "%s/%s", a->dir, s->name);
        if (ps->fd >= 0) { /* two open segments of one partition: seal the older */
            a->man.segs[ps->seg].sealed = 1;
            fchmod(ps->fd, 0444);
            close(ps->fd);
        }
        ps->fd = open(path, O_WRONLY | O_APPEND);
        if (ps->fd < 0) {
            snprintf(errstr, errstr_size, "segment %s: %s", s->name, strerror(errno));
            return -1;
        }
        ps->seg = i;
    }
    if (batch_manifest_save(a->dir, &a->man, errstr, errstr_size) < 0)
        return -1;
    publish_durable(a);
    return 0;
}

static int write_block(batch_archive_t *a, int32_t p, char *errstr, size_t errstr_size)
{
    part_state_t *ps = &a->parts[p];
    if (!ps->nrec)
        return 0;
    if (ps->fd < 0) {
        batch_segment_t *s = batch_manifest_add_seg(&a->man);
        snprintf(s->name, sizeof(s->name), "p%05d-%020" PRId64 ".seg", (int)p, ps->bfirst);
        s->partition = p;
        s->bytes = BATCH_SEG_HDR;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", a->dir, s->name);
        ps->fd = batch_seg_create(path, p, errstr, errstr_size);
        if (ps->fd < 0) {
            a->man.nsegs--;
            return -1;
        }
        ps->seg = a->man.nsegs - 1;
    }
    int64_t n = batch_seg_write_block(ps->fd, a->cctx, &ps->raw, ps->nrec, ps->bfirst, ps->blast, &a->scratch,
                                      errstr, errstr_size);
    if (n < 0)
        return -1;
    batch_segment_t *s = &a->man.segs[ps->seg];
    s->bytes += n;
    s->count += ps->nrec;
    if (s->first < 0)
        s->first = ps->bfirst;
    s->last = ps->blast;
    atomic_fetch_add(&a->blocks, 1);
    atomic_fetch_add(&a->bytes, n);
    lam_buf_clear(&ps->raw);
    ps->nrec = 0;
    ps->dirty = 1;
    return 0;
}

/* Write every pending block, fsync, seal full segments, save the manifest, then commit offsets. */
static int flush_all(batch_archive_t *a, char *errstr, size_t errstr_size)
{
    for (size_t p = 0; p < a->nparts; p++)
        if (write_block(a, (int32_t)p, errstr, errstr_size) < 0)
            return -1;
    for (size_t p = 0; p < a->nparts; p++) {
        part_state_t *ps = &a->parts[p];
        if (!ps->dirty)
            continue;
        if (fdatasync(ps->fd) < 0) {
            snprintf(errstr, errstr_size, "segment %s: fsync: %s", a->man.segs[ps->seg].name, strerror(errno));
            return -1;
        }
        ps->dirty = 0;
        ps->commit = 1;
        if (a->man.segs[ps->seg].bytes >= a->ctx->cfg.segment_bytes) {
            if (fchmod(ps->fd, 0444) < 0 || fsync(ps->fd) < 0) {
                snprintf(errstr, errstr_size, "segment %s: seal: %s", a->man.segs[ps->seg].name, strerror(errno));
                return -1;
            }
            close(ps->fd);
            ps->fd = -1;
            a->man.segs[ps->seg].sealed = 1;
        }
    }
    for (size_t i = 0; i < a->npcuts; i++)
        batch_manifest_add_cut(&a->man, a->pcuts[i].run, a->pcuts[i].partition, a->pcuts[i].offset);
    int ncuts = (int)a->npcuts;
    a->npcuts = 0;
    if (batch_manifest_save(a->dir, &a->man, errstr, errstr_size) < 0)
        return -1;
    publish_durable(a);
    atomic_fetch_add(&a->flushes, 1);
    if (ncuts)
        lam_debug("msg=\"cut markers archived\" markers=%d", ncuts);

    /* Only now is the data durable: tell Kafka (async; a lost commit is harmless, disk wins). */
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(8);
    for (size_t p = 0; p < a->nparts; p++) {
        if (!a->parts[p].commit)
            continue;
        a->parts[p].commit = 0;
        rd_kafka_topic_partition_list_add(offs, a->ctx->cfg.common.kafka_topic, (int32_t)p)->offset =
            a->parts[p].next;
    }
    if (offs->cnt && a->rk)
        rd_kafka_commit(a->rk, offs, 1);
    rd_kafka_topic_partition_list_destroy(offs);
    a->pending_since = a->pending_bytes = 0;
    a->flush_now = 0;
    return 0;
}

static void handle_record(batch_archive_t *a, const rd_kafka_message_t *m)
{
    if (strcmp(rd_kafka_topic_name(m->rkt), a->ctx->cfg.common.kafka_topic))
        return; /* not ours (a stale assignment of the group); never archived */
    part_state_t *ps = part(a, m->partition);
    if (ps->next >= 0 && m->offset < ps->next)
        return; /* already on disk (redelivery after a rebalance or restart) */
    int kind = BATCH_REC_EVENT;
    int64_t run = 0;
    rd_kafka_headers_t *hdrs;
    const void *v;
    size_t vlen;
    /* a marker has no value (DESIGN "Cut markers"); the speed layer reads lam-cut of empty records only, too */
    if (m->len == 0 && !rd_kafka_message_headers(m, &hdrs) &&
        !rd_kafka_header_get_last(hdrs, LAM_CUT_HEADER, &v, &vlen)) {
        char num[32];
        size_t n = vlen < sizeof(num) - 1 ? vlen : sizeof(num) - 1;
        memcpy(num, v, n);
        num[n] = '\0';
        kind = BATCH_REC_CUT;
        run = strtoll(num, NULL, 10);
    }
    if (!ps->nrec)
        ps->bfirst = m->offset;
    batch_rec_append(&ps->raw, kind, m->offset, run, m->payload, (uint32_t)m->len);
    ps->nrec++;
    ps->blast = m->offset;
    ps->next = m->offset + 1;
    atomic_fetch_add(&a->archived, 1);
    if (!a->pending_since)
        a->pending_since = lam_now_mono_ms();
    a->pending_bytes += (int64_t)(m->len + BATCH_REC_HDR);
    if (kind == BATCH_REC_CUT) {
        if (a->npcuts == a->pcutcap) {
            a->pcutcap = a->pcutcap ? a->pcutcap * 2 : 16;
            a->pcuts = lam_realloc(a->pcuts, a->pcutcap * sizeof(*a->pcuts));
        }
        a->pcuts[a->npcuts++] = (batch_cut_t){run, m->partition, m->offset};
        a->flush_now = 1; /* a run is waiting for this marker */
    }
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    batch_archive_t *a = opaque;
    char errstr[512];
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* Disk is the truth: continue right after the last record we hold, whatever was committed. */
        for (int i = 0; i < parts->cnt; i++) {
            if (strcmp(parts->elems[i].topic, a->ctx->cfg.common.kafka_topic)) {
                lam_warn("msg=\"ignoring partition of another topic\" topic=%s partition=%d", parts->elems[i].topic,
                         (int)parts->elems[i].partition);
                parts->elems[i].offset = RD_KAFKA_OFFSET_END;
                continue;
            }
            part_state_t *ps = part(a, parts->elems[i].partition);
            clear_consumer_problem(a); /* the topic is there */
            parts->elems[i].offset = ps->next >= 0 ? ps->next : RD_KAFKA_OFFSET_BEGINNING;
            lam_info("msg=\"archiving partition\" partition=%d from_offset=%" PRId64, (int)parts->elems[i].partition,
                     ps->next);
        }
        rd_kafka_assign(rk, parts);
        /* What is on disk is durable: commit it now too, so the archive lag (Kafka's committed offset)
         * is right after a crash between fsync and commit, even if no new record ever arrives. */
        rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(parts->cnt);
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].offset >= 0)
                rd_kafka_topic_partition_list_add(offs, parts->elems[i].topic, parts->elems[i].partition)->offset =
                    parts->elems[i].offset;
        if (offs->cnt)
            rd_kafka_commit(rk, offs, 1);
        rd_kafka_topic_partition_list_destroy(offs);
    } else {
        if (flush_all(a, errstr, sizeof(errstr)) < 0)
            lam_error("msg=\"flush on revoke failed\" error=\"%s\"", errstr);
        rd_kafka_assign(rk, NULL);
    }
}

/* After a write error: forget what is buffered, recover from disk and re-seek the assignment. */
static void reset_to_disk(batch_archive_t *a)
{
    char errstr[512];
    for (;;) {
        if (recover(a, errstr, sizeof(errstr)) == 0)
            break;
        lam_error("msg=\"archive recovery failed\" error=\"%s\" retry_in_ms=1000", errstr);
        set_problem(a, errstr);
        if (lam_service_sleep_ms(1000))
            return;
    }
    rd_kafka_topic_partition_list_t *asg = NULL;
    if (!rd_kafka_assignment(a->rk, &asg) && asg) {
        for (int i = 0; i < asg->cnt; i++) {
            if (strcmp(asg->elems[i].topic, a->ctx->cfg.common.kafka_topic))
                continue;
            part_state_t *ps = part(a, asg->elems[i].partition);
            asg->elems[i].offset = ps->next >= 0 ? ps->next : RD_KAFKA_OFFSET_BEGINNING;
        }
        rd_kafka_assign(a->rk, asg);
        rd_kafka_topic_partition_list_destroy(asg);
    }
}

static void *archive_main(void *arg)
{
    batch_archive_t *a = arg;
    batch_config_t *cfg = &a->ctx->cfg;
    char errstr[512];
    while (!lam_service_stopping()) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(a->rk, a->pending_since ? 20 : 100);
        if (m) {
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                    lam_warn("msg=\"archive consumer\" error=\"%s\"", rd_kafka_message_errstr(m));
                    set_consumer_problem(a, rd_kafka_message_errstr(m));
                }
            } else {
                clear_consumer_problem(a);
                handle_record(a, m);
            }
            rd_kafka_message_destroy(m);
        }
        if (a->pending_since && (a->flush_now || a->pending_bytes >= PENDING_MAX ||
                                 lam_now_mono_ms() - a->pending_since >= cfg->flush_ms)) {
            if (flush_all(a, errstr, sizeof(errstr)) < 0) {
                atomic_fetch_add(&a->errors, 1);
                lam_error("msg=\"archive write failed; rewinding to disk\" error=\"%s\"", errstr);
                set_problem(a, errstr);
                lam_service_sleep_ms(1000);
                reset_to_disk(a);
            } else {
                set_problem(a, NULL);
            }
        } else {
            for (size_t p = 0; p < a->nparts; p++)
                if (a->parts[p].raw.len >= BLOCK_RAW_MAX && write_block(a, (int32_t)p, errstr, sizeof(errstr)) < 0) {
                    atomic_fetch_add(&a->errors, 1);
                    lam_error("msg=\"archive write failed; rewinding to disk\" error=\"%s\"", errstr);
                    set_problem(a, errstr);
                    lam_service_sleep_ms(1000);
                    reset_to_disk(a);
                    break;
                }
        }
    }
    if (flush_all(a, errstr, sizeof(errstr)) < 0)
        lam_error("msg=\"final archive flush failed\" error=\"%s\"", errstr);
    return NULL;
}

batch_archive_t *batch_archive_start(batch_ctx_t *ctx, char *errstr, size_t errstr_size)
{
    batch_archive_t *a = lam_calloc(1, sizeof(*a));
    a->ctx = ctx;
    a->dir = ctx->cfg.data_dir;
    a->lock_fd = -1;
    pthread_mutex_init(&a->mu, NULL);
    batch_manifest_init(&a->man);
    batch_manifest_init(&a->durable);
    if (!strcmp(ctx->cfg.codec, "zstd"))
        a->cctx = ZSTD_createCCtx();

    char path[4096];
    snprintf(path, sizeof(path), "%s/LOCK", a->dir);
    a->lock_fd = open(path, O_RDWR | O_CREAT, 0644);
    if (a->lock_fd < 0 || flock(a->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        snprintf(errstr, errstr_size, "%s: in use by another batch_layer (%s)", a->dir, strerror(errno));
        batch_archive_stop(a);
        return NULL;
    }
    if (recover(a, errstr, errstr_size) < 0) {
        batch_archive_stop(a);
        return NULL;
    }
    int64_t records = 0;
    for (size_t i = 0; i < a->man.nsegs; i++)
        records += a->man.segs[i].count;
    lam_info("msg=\"master dataset recovered\" dir=%s segments=%zu records=%" PRId64 " cuts=%zu", a->dir,
             a->man.nsegs, records, a->man.ncuts);

    rd_kafka_conf_t *conf = lam_kafka_conf_new(ctx->cfg.common.kafka_brokers, errstr, errstr_size);
    if (!conf) {
        batch_archive_stop(a);
        return NULL;
    }
    /* Static membership: a restarted archiver (same instance id) gets its partitions back at once
     * instead of waiting out the dead member's session timeout. LAM_KAFKA_X_GROUP_INSTANCE_ID overrides. */
    char instance[512];
    snprintf(instance, sizeof(instance), "%s-%s", ctx->cfg.archive_group, ctx->cfg.common.kafka_topic);
    if (lam_kafka_conf_set(conf, "group.instance.id", instance, errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(conf);
        batch_archive_stop(a);
        return NULL;
    }
    /* Prefetch at most 8 MiB per partition queue (librdkafka's default is 64 MiB): catching up a
     * backlog otherwise fills the queues and the RSS with records that only wait for their turn. */
    if (lam_kafka_conf_set(conf, "queued.max.messages.kbytes", "8192", errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(conf);
        batch_archive_stop(a);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, a);
    a->rk = lam_kafka_consumer_new(conf, ctx->cfg.archive_group, errstr, errstr_size);
    if (!a->rk) {
        batch_archive_stop(a);
        return NULL;
    }
    char err2[256];
    if (lam_kafka_ensure_topic(a->rk, ctx->cfg.common.kafka_topic, (int)ctx->cfg.common.kafka_partitions, 10000, err2,
                               sizeof(err2)) < 0)
        lam_warn("msg=\"cannot ensure topic\" topic=%s error=\"%s\"", ctx->cfg.common.kafka_topic, err2);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, ctx->cfg.common.kafka_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(a->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (kerr) {
        snprintf(errstr, errstr_size, "subscribe %s: %s", ctx->cfg.common.kafka_topic, rd_kafka_err2str(kerr));
        batch_archive_stop(a);
        return NULL;
    }
    if (pthread_create(&a->th, NULL, archive_main, a) != 0) {
        snprintf(errstr, errstr_size, "cannot start archiver thread");
        batch_archive_stop(a);
        return NULL;
    }
    a->started = 1;
    return a;
}

void batch_archive_stop(batch_archive_t *a)
{
    if (!a)
        return;
    if (a->started) {
        lam_service_request_stop();
        pthread_join(a->th, NULL);
    }
    if (a->rk) {
        rd_kafka_consumer_close(a->rk);
        rd_kafka_destroy(a->rk);
    }
    close_parts(a);
    batch_manifest_free(&a->man);
    batch_manifest_free(&a->durable);
    lam_free(a->pcuts);
    lam_buf_free(&a->scratch);
    if (a->cctx)
        ZSTD_freeCCtx(a->cctx);
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    pthread_mutex_destroy(&a->mu);
    lam_free(a);
}

void batch_archive_snapshot(batch_archive_t *a, batch_manifest_t *out)
{
    pthread_mutex_lock(&a->mu);
    batch_manifest_copy(out, &a->durable);
    pthread_mutex_unlock(&a->mu);
}

const char *batch_archive_problem(batch_archive_t *a)
{
    static __thread char buf[256];
    pthread_mutex_lock(&a->mu);
    snprintf(buf, sizeof(buf), "%s", a->problem);
    pthread_mutex_unlock(&a->mu);
    return buf[0] ? buf : NULL;
}

void batch_archive_metrics(batch_archive_t *a, lam_buf_t *out)
{
    batch_manifest_t m;
    batch_archive_snapshot(a, &m);
    int64_t records = 0, sealed = 0, bytes = 0;
    for (size_t i = 0; i < m.nsegs; i++) {
        records += m.segs[i].count;
        sealed += m.segs[i].sealed;
        bytes += m.segs[i].bytes;
    }
    lam_buf_printf(out,
                   "# TYPE lam_batch_archived_records_total counter\nlam_batch_archived_records_total %lld\n"
                   "# TYPE lam_batch_archive_blocks_total counter\nlam_batch_archive_blocks_total %lld\n"
                   "# TYPE lam_batch_archive_flushes_total counter\nlam_batch_archive_flushes_total %lld\n"
                   "# TYPE lam_batch_archive_errors_total counter\nlam_batch_archive_errors_total %lld\n"
                   "# TYPE lam_batch_master_records gauge\nlam_batch_master_records %" PRId64 "\n"
                   "# TYPE lam_batch_master_bytes gauge\nlam_batch_master_bytes %" PRId64 "\n"
                   "# TYPE lam_batch_master_segments gauge\nlam_batch_master_segments %zu\n"
                   "# TYPE lam_batch_master_sealed_segments gauge\nlam_batch_master_sealed_segments %" PRId64 "\n",
                   (long long)atomic_load(&a->archived), (long long)atomic_load(&a->blocks),
                   (long long)atomic_load(&a->flushes), (long long)atomic_load(&a->errors), records, bytes, m.nsegs,
                   sealed);
    batch_manifest_free(&m);
}
