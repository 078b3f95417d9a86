/* batch_run.c - run k: cut markers, wait for the archiver, recompute every view from the master dataset, publish. */
#include <errno.h>
#include <malloc.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "batch.h"
#include "lam_agg.h"
#include "lam_event.h"
#include "lam_hll.h"
#include "lam_kafka.h"
#include "lam_log.h"
#include "lam_mem.h"
#include "lam_pg.h"
#include "lam_redis.h"
#include "lam_service.h"
#include "lam_store.h"

/* ---- schedule ---- */

int batch_schedule_parse(const char *s, batch_schedule_t *out, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    int hh, mm, n = 0;
    if (!strcmp(s, "off")) {
        out->kind = BATCH_SCHED_OFF;
        return 0;
    }
    if (sscanf(s, "daily@%2d:%2d%n", &hh, &mm, &n) == 2 && s[n] == '\0' && hh >= 0 && hh < 24 && mm >= 0 &&
        mm < 60 && strlen(s) == 11) {
        out->kind = BATCH_SCHED_DAILY;
        out->minute_of_day = hh * 60 + mm;
        return 0;
    }
    long long v;
    char unit[4] = "";
    if (sscanf(s, "every %lld%3s%n", &v, unit, &n) == 2 && s[n] == '\0' && v > 0) {
        int64_t mult = !strcmp(unit, "s") ? 1000 : !strcmp(unit, "m") ? 60000 : !strcmp(unit, "h") ? 3600000 : 0;
        if (mult && v <= INT64_MAX / mult / 2) {
            out->kind = BATCH_SCHED_EVERY;
            out->every_ms = v * mult;
            return 0;
        }
    }
    snprintf(errstr, errstr_size, "LAM_BATCH_SCHEDULE: expected daily@HH:MM (UTC), \"every N\" with s|m|h, or off: \"%s\"",
             s);
    return -1;
}

int64_t batch_schedule_next(const batch_schedule_t *s, int64_t now_ms)
{
    switch (s->kind) {
    case BATCH_SCHED_DAILY: {
        int64_t day = now_ms / 86400000 * 86400000;
        int64_t t = day + (int64_t)s->minute_of_day * 60000;
        return t > now_ms ? t : t + 86400000;
    }
    case BATCH_SCHED_EVERY:
        return now_ms + s->every_ms;
    default:
        return INT64_MAX;
    }
}

/* ---- exact id set (per partition: Kafka keys by id, so equal ids share a partition) ---- */

/*
 * A slot is 8 bytes: the upper half of the id's hash (its lowest bit set: 0 is an empty slot) above the
 * id's arena position in 8-byte units. Half the 16 bytes of a (hash, offset) pair: the table of a
 * partition's ~1M ids is 16 MB instead of 32, so fewer of its random probes miss the caches and there
 * is half as much to zero per partition (the set cost ~20 % of a recompute's CPU at 16 bytes). A tag
 * match is confirmed by comparing the id itself, so the set stays exact.
 */
typedef uint64_t idslot_t;

/* Arena entries are 8-aligned: positions / 8 fit the slot's 32 bits up to 32 GiB of ids. */
#define IDSET_ARENA_MAX ((uint64_t)UINT32_MAX * 8)
/* Ids per pass at most: half of what the arena holds of the longest ids (a slice can exceed its share). */
#define IDSET_IDS_MAX ((int64_t)(IDSET_ARENA_MAX / ((LAM_EVENT_ID_MAX + 2 + 7) & ~7) / 2))

typedef struct idset {
    idslot_t *slots;
    size_t mask, n;
    lam_buf_t arena; /* per id: u16 length, the id, padding to 8 bytes */
} idset_t;

static void idset_reset(idset_t *s)
{
    if (s->slots)
        memset(s->slots, 0, (s->mask + 1) * sizeof(*s->slots));
    s->n = 0;
    lam_buf_clear(&s->arena);
}

static void idset_free(idset_t *s)
{
    lam_free(s->slots);
    lam_buf_free(&s->arena);
}

/* Home slot of hash h: its low bits above bit 0 (a pass's slice uses bits 40+, the tag bits 32+). */
static inline size_t idset_home(uint64_t h, size_t mask)
{
    return (size_t)(h >> 1) & mask;
}

static inline uint64_t idset_tag(uint64_t h)
{
    return (h | ((uint64_t)1 << 32)) & ~(uint64_t)UINT32_MAX;
}

/*
 * A zeroed slot array. Large ones sit on transparent huge pages where the kernel allows it: every
 * insert probes a random slot, and with 4 KiB pages nearly every probe also missed the TLB.
 */
static idslot_t *slots_alloc(size_t n)
{
    size_t bytes = n * sizeof(idslot_t), huge = (size_t)2 << 20;
    void *p = NULL;
    if (bytes < huge || posix_memalign(&p, huge, bytes) != 0)
        return lam_calloc(n, sizeof(idslot_t));
    madvise(p, bytes, MADV_HUGEPAGE);
    memset(p, 0, bytes);
    return p;
}

static uint64_t id_hash(const char *id, size_t len);

/* The id a used slot points at in the arena (u16 length, then the bytes). */
static inline const char *idset_id(const idset_t *s, idslot_t slot, size_t *len)
{
    const unsigned char *e = (const unsigned char *)s->arena.data + (slot & UINT32_MAX) * 8;
    *len = (size_t)e[0] | ((size_t)e[1] << 8);
    return (const char *)e + 2;
}

static void idset_resize(idset_t *s, size_t ncap)
{
    idslot_t *ns = slots_alloc(ncap);
    for (size_t i = 0; s->slots && i <= s->mask; i++) {
        if (!s->slots[i])
            continue;
        /* the slot keeps only the hash's upper half: the home comes from the id again */
        size_t len;
        const char *id = idset_id(s, s->slots[i], &len);
        size_t j = idset_home(id_hash(id, len), ncap - 1);
        while (ns[j])
            j = (j + 1) & (ncap - 1);
        ns[j] = s->slots[i];
    }
    lam_free(s->slots);
    s->slots = ns;
    s->mask = ncap - 1;
}

/* Room for n ids without rehashing (the run knows each partition's record count from the manifest). */
static void idset_reserve(idset_t *s, size_t n)
{
    size_t cap = s->slots ? s->mask + 1 : 0, want = 1 << 16;
    while (want * 7 < (n + 1) * 10)
        want *= 2;
    if (want > cap)
        idset_resize(s, want);
}

/*
 * The hash of an id for the id set and the pass slices (only within a run, never stored): 8 bytes
 * at a time, a fraction of MurmurHash64A's work on 36-byte UUIDs.
 */
static inline uint64_t id_hash(const char *id, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)len * 0xc2b2ae3d27d4eb4fULL);
    for (; len >= 8; len -= 8, id += 8) {
        uint64_t w;
        memcpy(&w, id, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    uint64_t t = 0;
    for (size_t i = 0; i < len; i++)
        t |= (uint64_t)(uint8_t)id[i] << (8 * i);
    return lam_mix64(h ^ t);
}

/*
 * Write an arena entry (need = 2 + len rounded up to 8 bytes). On x86-64 with non-temporal stores:
 * the arena is written once per event and read back only when a tag matches (a duplicate, or one in
 * 4 billion), so its ~40 MB per partition is kept out of the caches, where it evicted the cells,
 * HLLs and table slots that every event does read (side by side over 5M events: 3.29 -> 3.55M
 * events/s, user CPU -6 %). This thread alone reads the arena, and sees its own stores in order.
 */
static inline void idset_put(char *dst, const char *id, size_t len, size_t need)
{
    unsigned char e[((LAM_EVENT_ID_MAX + 2 + 7) & ~7)];
    if (need > sizeof(e)) { /* not from the parsers, which keep ids <= LAM_EVENT_ID_MAX */
        dst[0] = (char)(len & 0xff);
        dst[1] = (char)(len >> 8);
        memcpy(dst + 2, id, len);
        return;
    }
    memset(e + need - 8, 0, 8); /* the padding */
    e[0] = (unsigned char)(len & 0xff);
    e[1] = (unsigned char)(len >> 8);
    memcpy(e + 2, id, len);
#if defined(__x86_64__)
    for (size_t o = 0; o < need; o += 8) {
        long long w;
        memcpy(&w, e + o, 8);
        _mm_stream_si64((long long *)(void *)(dst + o), w);
    }
#else
    memcpy(dst, e, need);
#endif
}

/*
 * 1 when id (hash = id_hash(id)) was new and is now in the set, 0 when it was there (exact compare),
 * -1 when the arena would pass IDSET_ARENA_MAX (run_worker's cap on ids per pass prevents it).
 */
static int idset_add(idset_t *s, const char *id, size_t len, uint64_t hash)
{
    if (!s->slots || (s->n + 1) * 10 > (s->mask + 1) * 7)
        idset_resize(s, s->slots ? (s->mask + 1) * 2 : 1 << 16);
    uint64_t tag = idset_tag(hash);
    size_t j = idset_home(hash, s->mask);
    while (s->slots[j]) {
        if ((s->slots[j] & ~(uint64_t)UINT32_MAX) == tag) {
            size_t elen;
            const char *e = idset_id(s, s->slots[j], &elen);
            if (elen == len && !memcmp(e, id, len))
                return 0;
        }
        j = (j + 1) & s->mask;
    }
    size_t need = (len + 2 + 7) & ~(size_t)7;
    if ((uint64_t)s->arena.len + need > IDSET_ARENA_MAX)
        return -1;
    if (s->arena.cap - s->arena.len < need + 1)
        lam_buf_reserve(&s->arena, need);
    idset_put(s->arena.data + s->arena.len, id, len, need);
    s->slots[j] = tag | (uint64_t)(s->arena.len / 8);
    s->arena.len += need;
    s->n++;
    return 1;
}

/* ---- recompute workers ---- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct run_job {
    const batch_config_t *cfg;
    const batch_manifest_t *man;
    const int64_t *cut;  /* marker offset per partition */
    const int64_t *est;  /* records per partition below the cut (estimate from the manifest) */
    int32_t *parts;      /* partitions of this worker */
    size_t nparts;
    lam_agg_t *agg;
    atomic_llong records, skipped, dups;
    int64_t read_ns, busy_ns; /* reading+checking+decompressing blocks; the whole scan (this thread) */
    atomic_int *cancel;
    int failed;
    char err[512];
    pthread_t th;
} run_job_t;

/*
 * The id of a canonical record without parsing it: canonical events start with {"id":"...".
 * 1 with the id bytes when found and free of escapes, else 0 (the caller parses).
 */
static int fast_id(const char *data, size_t len, const char **id, size_t *idlen)
{
    static const char pre[] = "{\"id\":\"";
    if (len < sizeof(pre) || memcmp(data, pre, sizeof(pre) - 1))
        return 0;
    const char *start = data + sizeof(pre) - 1, *end = data + len;
    for (const char *q = start; q < end; q++) {
        if (*q == '\\')
            return 0;
        if (*q == '"') {
            *id = start;
            *idlen = (size_t)(q - start);
            return 1;
        }
    }
    return 0;
}

/*
 * The id check of the agg's pipeline (lam_agg_pipe_*): events reach it in offset order, so the
 * first occurrence of an id still wins; the caller prefetched the id's slot when it pushed.
 */
typedef struct scan_keep {
    idset_t *ids;
    int64_t dups;
    int full; /* an id did not fit the set (idset_add -1) */
} scan_keep_t;

static int keep_first(void *opaque, const lam_event_t *ev, uint64_t hash)
{
    scan_keep_t *k = opaque;
    if (ev->id.type == LAM_VAL_ABSENT)
        return 1;
    int r = idset_add(k->ids, ev->id.val, ev->id.val_len, hash);
    if (r == 0) {
        k->dups++;
        return 0;
    }
    k->full |= r < 0;
    return 1;
}

/* Parse a record: the projected scan when it takes the record, else the full parser. 0 or -1. */
static int scan_parse(const lam_event_proj_t *proj, lam_event_t *ev, const char *data, size_t len, char *err,
                      size_t errsz)
{
    if (proj && lam_event_parse_projected(ev, data, len, proj))
        return 0;
    return lam_event_parse(ev, data, len, 0, -1, err, errsz);
}

/*
 * Scan partition p below its cut. With npasses > 1 only ids whose hash falls in slice `pass` are
 * aggregated (all copies of an id share a slice, so first-occurrence-wins stays exact) and the id
 * set holds one slice at a time; events without an id belong to pass 0. Returns 0 or -1 (j->err).
 */
static int scan_partition(run_job_t *j, int32_t p, int pass, int npasses, idset_t *ids)
{
    int64_t cut = j->cut[p];
    batch_seg_reader_t r;
    char path[4096], err[256];
    const lam_event_proj_t *proj = lam_agg_projection(j->agg);
    scan_keep_t keep = {.ids = ids};
    lam_agg_pipe_begin(j->agg, keep_first, &keep);
    for (size_t si = 0; si < j->man->nsegs; si++) {
        const batch_segment_t *s = &j->man->segs[si];
        if (s->partition != p || s->first < 0 || s->first >= cut)
            continue;
        snprintf(path, sizeof(path), "%s/%s", j->cfg->data_dir, s->name);
        if (batch_seg_open(&r, path, err, sizeof(err)) < 0) {
            snprintf(j->err, sizeof(j->err), "segment %s: %s", s->name, err);
            lam_agg_pipe_drain(j->agg); /* keep is this frame's */
            return -1;
        }
        batch_block_t b;
        int rc = 0, done = 0;
        while (!done && (rc = batch_seg_next_block(&r, &b, 0, err, sizeof(err))) == 1) {
            if (b.first >= cut) {
                done = 1;
                break;
            }
            /* Re-read the block with its payload (the header pass above only peeked). */
            r.pos -= BATCH_BLK_HDR + b.comp_len;
            int64_t t_read = now_ns();
            if (batch_seg_next_block(&r, &b, 1, err, sizeof(err)) != 1) {
                rc = -1;
                break;
            }
            j->read_ns += now_ns() - t_read;
            size_t pos = 0;
            batch_rec_t rec;
            int rr;
            int64_t n = 0, skipped = 0;
            while ((rr = batch_rec_next(&r.raw, &pos, &rec)) == 1) {
                if (rec.offset >= cut) {
                    done = 1;
                    break;
                }
                if (rec.kind != BATCH_REC_EVENT)
                    continue;
                if (pass == 0)
                    n++;
                lam_event_t *ev = lam_agg_pipe_event(j->agg);
                const char *id = NULL;
                size_t idlen = 0;
                uint64_t h = 0;
                int parsed = 0;
                if (npasses > 1) {
                    /* the slice from the id without parsing: other passes' events cost no parse */
                    if (fast_id(rec.data, rec.len, &id, &idlen)) {
                        h = id_hash(id, idlen);
                    } else {
                        if (scan_parse(proj, ev, rec.data, rec.len, err, sizeof(err)) < 0) {
                            skipped += pass == 0;
                            continue;
                        }
                        parsed = 1;
                        if (ev->id.type != LAM_VAL_ABSENT) {
                            id = ev->id.val;
                            idlen = ev->id.val_len;
                            h = id_hash(id, idlen);
                        }
                    }
                    int slice = id ? (int)((h >> 40) % (uint64_t)npasses) : 0;
                    if (slice != pass)
                        continue;
                }
                if (!parsed && scan_parse(proj, ev, rec.data, rec.len, err, sizeof(err)) < 0) {
                    skipped++;
                    continue;
                }
                if (ev->id.type != LAM_VAL_ABSENT) {
                    /* The parsed id is the fast one unless the record is unusual (then hash it anew). */
                    if (!id || ev->id.val_len != idlen || memcmp(ev->id.val, id, idlen))
                        h = id_hash(ev->id.val, ev->id.val_len);
                    if (ids->slots)
                        __builtin_prefetch(&ids->slots[idset_home(h | 1, ids->mask)]);
                }
                lam_agg_pipe_push(j->agg, h);
            }
            atomic_fetch_add(&j->records, n);
            atomic_fetch_add(&j->skipped, skipped);
            atomic_fetch_add(&j->dups, keep.dups);
            keep.dups = 0;
            if (rr < 0) {
                snprintf(err, sizeof(err), "malformed record in block at byte %" PRId64, r.pos);
                rc = -1;
                break;
            }
            if (atomic_load(j->cancel)) {
                snprintf(err, sizeof(err), "cancelled");
                rc = -1;
                break;
            }
        }
        batch_seg_close(&r);
        if (rc < 0 && !done) {
            snprintf(j->err, sizeof(j->err), "segment %s: %s", s->name, err);
            lam_agg_pipe_drain(j->agg); /* keep is this frame's */
            return -1;
        }
        if (done)
            break;
    }
    lam_agg_pipe_drain(j->agg); /* before the id set changes: the last events are checked against it */
    atomic_fetch_add(&j->dups, keep.dups);
    if (keep.full) {
        snprintf(j->err, sizeof(j->err), "partition %d: the id set of one pass outgrew 32 GiB: lower LAM_BATCH_DEDUP_IDS",
                 (int)p);
        return -1;
    }
    return 0;
}

static void *run_worker(void *arg)
{
    run_job_t *j = arg;
    int64_t t0 = now_ns();
    idset_t ids = {0};
    for (size_t pi = 0; pi < j->nparts && !j->failed; pi++) {
        int32_t p = j->parts[pi];
        /* Enough passes that one slice of the partition's ids fits LAM_BATCH_DEDUP_IDS. */
        int64_t est = j->est[p], cap = j->cfg->dedup_ids;
        if (cap > IDSET_IDS_MAX)
            cap = IDSET_IDS_MAX;
        int npasses = est > cap ? (int)((est + cap - 1) / cap) : 1;
        for (int pass = 0; pass < npasses && !j->failed; pass++) {
            idset_reset(&ids);
            idset_reserve(&ids, (size_t)((est + npasses - 1) / npasses));
            if (scan_partition(j, p, pass, npasses, &ids) < 0)
                j->failed = 1;
        }
    }
    idset_free(&ids);
    j->busy_ns = now_ns() - t0;
    return NULL;
}

/* ---- recompute: scan, dedup, apply and merge every partition below its cut ---- */

int batch_recompute(const batch_config_t *cfg, const lam_views_t *views, const batch_manifest_t *man,
                    const int64_t *cutoffs, int nparts, batch_progress_fn progress, void *opaque,
                    batch_recompute_t *out, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    /* Split partitions over the workers, largest first, each to the least loaded worker. */
    int nthreads = (int)cfg->threads;
    if (nthreads > nparts)
        nthreads = nparts;
    if (nthreads < 1)
        nthreads = 1;
    int64_t total = 0, *est = lam_calloc((size_t)(nparts ? nparts : 1), sizeof(*est));
    for (size_t i = 0; i < man->nsegs; i++) {
        const batch_segment_t *s = &man->segs[i];
        if (s->partition < nparts && s->first >= 0 && s->first < cutoffs[s->partition]) {
            int64_t c = s->last < cutoffs[s->partition] ? s->count : s->count - (s->last - cutoffs[s->partition]);
            if (c < 0)
                c = 0;
            est[s->partition] += c;
            total += c;
        }
    }
    run_job_t *jobs = lam_calloc((size_t)nthreads, sizeof(*jobs));
    int64_t *load = lam_calloc((size_t)nthreads, sizeof(*load));
    atomic_int cancel = 0;
    for (int t = 0; t < nthreads; t++) {
        jobs[t].cfg = cfg;
        jobs[t].man = man;
        jobs[t].cut = cutoffs;
        jobs[t].est = est;
        jobs[t].parts = lam_malloc((size_t)(nparts ? nparts : 1) * sizeof(int32_t));
        jobs[t].agg = lam_agg_new(views);
        jobs[t].cancel = &cancel;
    }
    int *done = lam_calloc((size_t)(nparts ? nparts : 1), sizeof(int));
    for (int k = 0; k < nparts; k++) {
        int best = -1;
        for (int p = 0; p < nparts; p++)
            if (!done[p] && (best < 0 || est[p] > est[best]))
                best = p;
        done[best] = 1;
        int t = 0;
        for (int u = 1; u < nthreads; u++)
            if (load[u] < load[t])
                t = u;
        jobs[t].parts[jobs[t].nparts++] = best;
        load[t] += est[best] + 1;
    }
    lam_free(done);
    lam_free(load);
    if (progress)
        progress(opaque, 0, total, 0);

    int64_t t_scan = now_ns();
    for (int t = 0; t < nthreads; t++)
        pthread_create(&jobs[t].th, NULL, run_worker, &jobs[t]);
    int finished = 0;
    int *joined = lam_calloc((size_t)nthreads, sizeof(int));
    int64_t records = 0, skipped = 0, dups = 0;
    while (!finished) {
        for (int i = 0; i < 25 && !finished; i++) {
            lam_service_sleep_ms(i < 5 ? 2 : 20); /* short first sleeps: small runs end quickly */
            if (lam_service_stopping())
                atomic_store(&cancel, 1);
            finished = 1;
            for (int t = 0; t < nthreads; t++) {
                if (!joined[t] && pthread_tryjoin_np(jobs[t].th, NULL) == 0)
                    joined[t] = 1;
                if (!joined[t])
                    finished = 0;
            }
        }
        records = skipped = dups = 0;
        for (int t = 0; t < nthreads; t++) {
            records += atomic_load(&jobs[t].records);
            skipped += atomic_load(&jobs[t].skipped);
            dups += atomic_load(&jobs[t].dups);
        }
        if (!finished && progress)
            progress(opaque, records, total > records ? total : records, skipped);
    }
    lam_free(joined);
    out->scan_us = (now_ns() - t_scan) / 1000;
    const char *why = NULL;
    for (int t = 0; t < nthreads; t++) {
        out->read_us += jobs[t].read_ns / 1000;
        out->busy_us += jobs[t].busy_ns / 1000;
        if (jobs[t].failed && !why)
            why = jobs[t].err;
    }
    if (!why && atomic_load(&cancel))
        why = "batch_layer stopped during the run";
    int64_t t_merge = now_ns();
    for (int t = 1; t < nthreads && !why; t++)
        lam_agg_merge(jobs[0].agg, jobs[t].agg);
    out->merge_us = (now_ns() - t_merge) / 1000;
    if (why)
        snprintf(errstr, errstr_size, "%s", why);
    else
        out->agg = jobs[0].agg;
    for (int t = why ? 0 : 1; t < nthreads; t++)
        lam_agg_free(jobs[t].agg);
    for (int t = 0; t < nthreads; t++)
        lam_free(jobs[t].parts);
    out->records = records;
    out->skipped = skipped;
    out->dups = dups;
    out->total = total;
    out->threads = nthreads;
    lam_free(jobs);
    lam_free(est);
    return why ? -1 : 0;
}

/* ---- cut markers ---- */

static void marker_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    int64_t *slot = m->_private;
    if (slot)
        *slot = m->err ? -2 : m->offset;
}

static rd_kafka_t *producer(batch_ctx_t *ctx, char *errstr, size_t errstr_size)
{
    if (ctx->producer)
        return ctx->producer;
    rd_kafka_conf_t *conf = lam_kafka_conf_new(ctx->cfg.common.kafka_brokers, errstr, errstr_size);
    if (!conf)
        return NULL;
    rd_kafka_conf_set_dr_msg_cb(conf, marker_dr);
    ctx->producer = lam_kafka_producer_new(conf, errstr, errstr_size);
    return ctx->producer;
}

/* Produce marker k into every partition; fills offsets[0..nparts). */
static int produce_markers(batch_ctx_t *ctx, int64_t run, int64_t **offsets, int *nparts, char *errstr,
                           size_t errstr_size)
{
    rd_kafka_t *rk = producer(ctx, errstr, errstr_size);
    if (!rk)
        return -1;
    int n = lam_kafka_partition_count(rk, ctx->cfg.common.kafka_topic, 10000, errstr, errstr_size);
    if (n <= 0)
        return -1;
    int64_t *offs = lam_malloc((size_t)n * sizeof(*offs));
    char num[32];
    int len = snprintf(num, sizeof(num), "%" PRId64, run);
    for (int p = 0; p < n; p++) {
        offs[p] = -1;
        rd_kafka_headers_t *h = rd_kafka_headers_new(1);
        rd_kafka_header_add(h, LAM_CUT_HEADER, -1, num, len);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(ctx->cfg.common.kafka_topic), RD_KAFKA_V_PARTITION(p), RD_KAFKA_V_VALUE(NULL, 0),
            RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&offs[p]), RD_KAFKA_V_END);
        if (err) {
            rd_kafka_headers_destroy(h);
            snprintf(errstr, errstr_size, "produce marker to partition %d: %s", p, rd_kafka_err2str(err));
            rd_kafka_flush(rk, 10000);
            lam_free(offs);
            return -1;
        }
    }
    rd_kafka_flush(rk, 30000);
    for (int p = 0; p < n; p++)
        if (offs[p] < 0) {
            snprintf(errstr, errstr_size, "marker not acknowledged by partition %d", p);
            lam_free(offs);
            return -1;
        }
    *offsets = offs;
    *nparts = n;
    return 0;
}

/* ---- one run ---- */

static int fail_run(batch_ctx_t *ctx, int64_t run, const char *reason)
{
    char err[512];
    lam_error("msg=\"run failed\" run=%" PRId64 " reason=\"%s\"", run, reason);
    atomic_fetch_add(&ctx->runs_failed, 1);
    if (!ctx->pg || batch_pg_fail(ctx->pg, run, reason, err, sizeof(err)) < 0) {
        /* PostgreSQL is gone (the likely reason of the failure): record it once it is back, before
         * runs left 'running' are marked failed as if the process had died. */
        lam_error("msg=\"cannot mark run failed; will when PostgreSQL is back\" run=%" PRId64 " error=\"%s\"", run,
                  ctx->pg ? err : "no connection");
        ctx->unrecorded_run = run;
        snprintf(ctx->unrecorded_reason, sizeof(ctx->unrecorded_reason), "%s", reason);
    }
    return -1;
}

static int redis_publish(batch_ctx_t *ctx, int64_t run)
{
    char err[512], num[32];
    redisContext *r = lam_redis_connect(ctx->cfg.common.redis_url, 2000, err, sizeof(err));
    if (!r) {
        lam_warn("msg=\"cannot publish current run to Redis; will retry\" run=%" PRId64 " error=\"%s\"", run, err);
        return -1;
    }
    int len = snprintf(num, sizeof(num), "%" PRId64, run);
    redisReply *rep = redisCommand(r, "SET %s %b", LAM_STORE_CURRENT_KEY, num, (size_t)len);
    int ok = rep && rep->type == REDIS_REPLY_STATUS;
    if (!ok)
        lam_warn("msg=\"cannot SET %s; will retry\" run=%" PRId64, LAM_STORE_CURRENT_KEY, run);
    if (rep)
        freeReplyObject(rep);
    redisFree(r);
    return ok ? 0 : -1;
}

struct run_progress_arg {
    batch_ctx_t *ctx;
    int64_t run;
};

static int run_progress(void *opaque, int64_t records, int64_t total, int64_t skipped)
{
    struct run_progress_arg *a = opaque;
    char err[512];
    if (batch_pg_progress(a->ctx->pg, a->run, records, total, skipped, err, sizeof(err)) < 0) {
        lam_warn("msg=\"cannot write progress\" run=%" PRId64 " error=\"%s\"", a->run, err);
        return -1;
    }
    return 0;
}

int batch_run_execute(batch_ctx_t *ctx, int64_t run)
{
    char err[512];
    int64_t t0 = lam_now_mono_ms();
    atomic_store(&ctx->running_run, run);
    lam_info("msg=\"run started\" run=%" PRId64, run);

    int64_t *dr_offs = NULL;
    int nparts = 0;
    if (produce_markers(ctx, run, &dr_offs, &nparts, err, sizeof(err)) < 0) {
        atomic_store(&ctx->running_run, 0);
        return fail_run(ctx, run, err);
    }
    lam_buf_t cut = LAM_BUF_INIT;
    lam_buf_append_char(&cut, '{');
    for (int p = 0; p < nparts; p++)
        lam_buf_printf(&cut, "%s\"%d\":%" PRId64, p ? "," : "", p, dr_offs[p]);
    lam_buf_append_char(&cut, '}');
    int rc = batch_pg_set_cut(ctx->pg, run, cut.data, err, sizeof(err));
    lam_buf_free(&cut);
    if (rc < 0) {
        lam_free(dr_offs);
        atomic_store(&ctx->running_run, 0);
        return fail_run(ctx, run, err);
    }

    /* Wait until every marker is durable in the master dataset. */
    batch_manifest_t man;
    batch_manifest_init(&man);
    int64_t deadline = lam_now_mono_ms() + ctx->cfg.cut_timeout_ms;
    int64_t *cutoffs = lam_malloc((size_t)nparts * sizeof(*cutoffs));
    char seen_problem[256] = "";
    for (;;) {
        batch_manifest_free(&man);
        batch_archive_snapshot(ctx->archive, &man);
        int have = 0;
        for (int p = 0; p < nparts; p++)
            have += (cutoffs[p] = batch_manifest_cut(&man, run, p)) >= 0;
        if (have == nparts)
            break;
        const char *problem = batch_archive_problem(ctx->archive);
        if (problem)
            snprintf(seen_problem, sizeof(seen_problem), "%s", problem);
        if (lam_now_mono_ms() > deadline || lam_service_stopping()) {
            /* Name what held the archiver back (a full disk, an unwritable data dir) when it knows. */
            snprintf(err, sizeof(err), "archiver holds marker %" PRId64 " in %d of %d partitions after %" PRId64 " ms%s%s",
                     run, have, nparts, ctx->cfg.cut_timeout_ms, seen_problem[0] ? ": " : "", seen_problem);
            batch_manifest_free(&man);
            lam_free(cutoffs);
            lam_free(dr_offs);
            atomic_store(&ctx->running_run, 0);
            return fail_run(ctx, run, err);
        }
        lam_service_sleep_ms(20);
    }
    for (size_t i = 0; i < man.ncuts; i++)
        if (man.cuts[i].run > run) {
            /* Epochs are marker numbers: a newer marker already in the log means lam_runs was reset. */
            snprintf(err, sizeof(err), "the master dataset already holds marker %" PRId64 " > run %" PRId64
                     " (was lam_runs reset?)", man.cuts[i].run, run);
            batch_manifest_free(&man);
            lam_free(cutoffs);
            lam_free(dr_offs);
            atomic_store(&ctx->running_run, 0);
            return fail_run(ctx, run, err);
        }
    for (int p = 0; p < nparts; p++)
        if (cutoffs[p] != dr_offs[p])
            lam_warn("msg=\"marker offset differs from delivery report\" partition=%d archived=%" PRId64
                     " reported=%" PRId64,
                     p, cutoffs[p], dr_offs[p]);
    lam_free(dr_offs);

    batch_recompute_t out;
    int result = 0;
    if (batch_recompute(&ctx->cfg, ctx->views, &man, cutoffs, nparts, run_progress, &(struct run_progress_arg){ctx, run},
                        &out, err, sizeof(err)) < 0) {
        result = fail_run(ctx, run, err);
    } else {
        int64_t records = out.records;
        lam_info("msg=\"recomputed\" run=%" PRId64 " records=%" PRId64 " skipped=%" PRId64 " duplicates=%" PRId64
                 " cells=%zu threads=%d scan_ms=%" PRId64 " read_ms=%" PRId64 " busy_ms=%" PRId64 " merge_ms=%" PRId64
                 " events_per_s=%.0f",
                 run, records, out.skipped, out.dups, lam_agg_size(out.agg), out.threads, out.scan_us / 1000,
                 out.read_us / 1000, out.busy_us / 1000, out.merge_us / 1000,
                 out.scan_us ? (double)records * 1e6 / (double)out.scan_us : 0.0);
        int64_t t_pub = lam_now_mono_ms();
        if (batch_pg_publish(ctx->pg, run, out.agg, records, out.skipped, err, sizeof(err)) < 0) {
            result = fail_run(ctx, run, err);
        } else {
            lam_info("msg=\"published\" run=%" PRId64 " view_rows=%zu load_publish_ms=%" PRId64, run,
                     lam_agg_size(out.agg), lam_now_mono_ms() - t_pub);
            atomic_store(&ctx->current_run, run);
            atomic_fetch_add(&ctx->runs_succeeded, 1);
            atomic_store(&ctx->last_run_ms, lam_now_mono_ms() - t0);
            atomic_store(&ctx->last_run_records, records);
            ctx->redis_pending = redis_publish(ctx, run) < 0;
            if (batch_pg_cleanup(ctx->pg, run, err, sizeof(err)) < 0)
                lam_warn("msg=\"cannot delete old view rows\" run=%" PRId64 " error=\"%s\"", run, err);
        }
        lam_agg_free(out.agg);
    }
    lam_free(cutoffs);
    batch_manifest_free(&man);
    atomic_store(&ctx->running_run, 0);
    /* The run's memory (aggregates, id sets, block buffers) goes back to the system between runs. */
    malloc_trim(0);
    return result;
}

/* ---- the service loop ---- */

static void pg_drop(batch_ctx_t *ctx)
{
    if (ctx->pg)
        PQfinish(ctx->pg);
    ctx->pg = NULL;
    ctx->pg_locked = 0;
    atomic_store(&ctx->pg_ok, 0);
}

/* Connect, migrate, LISTEN and take the run lock. 0 ready, -1 retry later. */
static int pg_ready(batch_ctx_t *ctx)
{
    char err[512];
    if (ctx->pg && PQstatus(ctx->pg) != CONNECTION_OK) {
        lam_warn("msg=\"lost PostgreSQL\"");
        pg_drop(ctx);
    }
    if (!ctx->pg) {
        ctx->pg = lam_pg_connect_wait(ctx->cfg.common.pg_url);
        if (!ctx->pg)
            return -1;
        if (lam_store_pg_migrate(ctx->pg, err, sizeof(err)) < 0 || batch_pg_prepare(ctx->pg, err, sizeof(err)) < 0 ||
            lam_pg_exec(ctx->pg, "LISTEN " LAM_STORE_NOTIFY_RUNS, 0, NULL, err, sizeof(err)) < 0) {
            lam_error("msg=\"postgresql set-up failed\" error=\"%s\"", err);
            pg_drop(ctx);
            return -1;
        }
        int64_t pub = lam_store_pg_published_run(ctx->pg, err, sizeof(err));
        if (pub > 0) {
            atomic_store(&ctx->current_run, pub);
            ctx->redis_pending = 1; /* a crash may have come between the publish and the Redis SET */
        }
    }
    atomic_store(&ctx->pg_ok, 1);
    if (!ctx->pg_locked) {
        int got = batch_pg_lock(ctx->pg, err, sizeof(err));
        if (got < 0) {
            lam_error("msg=\"cannot take the run lock\" error=\"%s\"", err);
            pg_drop(ctx);
            return -1;
        }
        if (!got) {
            static int64_t last_log;
            if (lam_now_mono_ms() - last_log > 30000) {
                lam_warn("msg=\"another batch_layer holds the run lock; not executing runs\"");
                last_log = lam_now_mono_ms();
            }
            return -1;
        }
        ctx->pg_locked = 1;
        if (ctx->unrecorded_run > 0) {
            if (batch_pg_fail(ctx->pg, ctx->unrecorded_run, ctx->unrecorded_reason, err, sizeof(err)) < 0) {
                lam_error("msg=\"cannot mark run failed\" run=%" PRId64 " error=\"%s\"", ctx->unrecorded_run, err);
                pg_drop(ctx);
                return -1;
            }
            lam_info("msg=\"recorded a run that failed while PostgreSQL was unreachable\" run=%" PRId64,
                     ctx->unrecorded_run);
            ctx->unrecorded_run = 0;
        }
        int n = batch_pg_fail_stale(ctx->pg, -1, err, sizeof(err));
        if (n > 0)
            lam_warn("msg=\"marked runs of a dead batch_layer failed\" runs=%d", n);
    }
    return 0;
}

static void wait_notify(batch_ctx_t *ctx, int ms)
{
    int fd = PQsocket(ctx->pg);
    if (fd >= 0) {
        fd_set rs;
        FD_ZERO(&rs);
        FD_SET(fd, &rs);
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        select(fd + 1, &rs, NULL, NULL, &tv);
    } else {
        lam_service_sleep_ms(ms);
    }
    PQconsumeInput(ctx->pg);
    PGnotify *n;
    while ((n = PQnotifies(ctx->pg)))
        PQfreemem(n);
}

void batch_run_loop(batch_ctx_t *ctx, const batch_schedule_t *sched)
{
    char err[512];
    int64_t due = batch_schedule_next(sched, lam_now_ms());
    while (!lam_service_stopping()) {
        if (pg_ready(ctx) < 0) {
            lam_service_sleep_ms(1000);
            continue;
        }
        if (ctx->redis_pending && atomic_load(&ctx->current_run) > 0)
            ctx->redis_pending = redis_publish(ctx, atomic_load(&ctx->current_run)) < 0;
        if (lam_now_ms() >= due) {
            int64_t k;
            if (batch_pg_request_run(ctx->pg, &k, err, sizeof(err)) < 0)
                lam_error("msg=\"scheduled run request failed\" error=\"%s\"", err);
            else
                lam_info("msg=\"scheduled run requested\" run=%" PRId64, k);
            due = batch_schedule_next(sched, lam_now_ms());
        }
        int64_t k;
        int got = batch_pg_claim(ctx->pg, &k, err, sizeof(err));
        if (got < 0) {
            lam_error("msg=\"cannot claim a run\" error=\"%s\"", err);
            lam_service_sleep_ms(500);
            continue;
        }
        if (got) {
            batch_run_execute(ctx, k);
            continue;
        }
        wait_notify(ctx, 500);
    }
}
