/* batch_cli.c - operator commands: run [--wait], status, verify, dump. */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "lam_agg.h"
#include "lam_mem.h"
#include "lam_pg.h"
#include "lam_service.h"
#include "lam_store.h"

static PGconn *cli_pg(batch_ctx_t *ctx)
{
    char err[512];
    PGconn *pg = lam_pg_connect(ctx->cfg.common.pg_url, err, sizeof(err));
    if (!pg) {
        fprintf(stderr, "batch_layer: %s\n", err);
        return NULL;
    }
    if (lam_store_pg_migrate(pg, err, sizeof(err)) < 0) {
        fprintf(stderr, "batch_layer: %s\n", err);
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

static void progress_line(int tty, int64_t run, const char *status, int64_t rec, int64_t total)
{
    if (tty) {
        int width = 30, filled = total > 0 ? (int)(rec * width / total) : 0;
        if (filled > width)
            filled = width;
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[width] = '\0';
        printf("\rrun %" PRId64 " %-9s [%s] %3d%% %" PRId64 "/%" PRId64 "   ", run, status, bar,
               total > 0 ? (int)(rec * 100 / total) : 0, rec, total);
    } else {
        printf("run %" PRId64 " %s records=%" PRId64 " records_total=%" PRId64 "\n", run, status, rec, total);
    }
    fflush(stdout);
}

static int cli_run(batch_ctx_t *ctx, int wait)
{
    char err[512];
    PGconn *pg = cli_pg(ctx);
    if (!pg)
        return 1;
    int64_t run;
    if (batch_pg_request_run(pg, &run, err, sizeof(err)) < 0) {
        fprintf(stderr, "batch_layer: %s\n", err);
        PQfinish(pg);
        return 1;
    }
    printf("run %" PRId64 " requested\n", run);
    fflush(stdout);
    if (!wait) {
        PQfinish(pg);
        return 0;
    }
    int tty = isatty(STDOUT_FILENO);
    char r[32];
    snprintf(r, sizeof(r), "%" PRId64, run);
    const char *p[] = {r};
    char last[128] = "";
    int64_t last_print = 0, started = lam_now_mono_ms();
    int warned = 0;
    for (;;) {
        PGresult *res = lam_pg_query(pg, "SELECT status, records, records_total, coalesce(error, '') FROM lam_runs"
                                         " WHERE run = $1::bigint", 1, p, err, sizeof(err));
        if (!res || PQntuples(res) != 1) {
            fprintf(stderr, "\nbatch_layer: %s\n", res ? "run disappeared" : err);
            if (res)
                PQclear(res);
            PQfinish(pg);
            return 1;
        }
        const char *st = PQgetvalue(res, 0, 0);
        int64_t rec = strtoll(PQgetvalue(res, 0, 1), NULL, 10), total = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        char now[128];
        snprintf(now, sizeof(now), "%s %" PRId64 " %" PRId64, st, rec, total);
        int final = !strcmp(st, "succeeded") || !strcmp(st, "failed");
        if (!warned && !strcmp(st, "requested") && lam_now_mono_ms() - started > 10000) {
            fprintf(stderr, "%sbatch_layer: run %" PRId64 " not picked up after 10 s: is the batch_layer service running?\n",
                    tty ? "\n" : "", run);
            warned = 1;
        }
        if (tty || final || (strcmp(now, last) && lam_now_mono_ms() - last_print >= 1000)) {
            progress_line(tty, run, st, rec, total);
            snprintf(last, sizeof(last), "%s", now);
            last_print = lam_now_mono_ms();
        }
        if (final) {
            int ok = !strcmp(st, "succeeded");
            if (tty)
                printf("\n");
            if (!ok)
                fprintf(stderr, "batch_layer: run %" PRId64 " failed: %s\n", run, PQgetvalue(res, 0, 3));
            PQclear(res);
            PQfinish(pg);
            return ok ? 0 : 1;
        }
        PQclear(res);
        if (lam_service_sleep_ms(tty ? 100 : 250)) {
            PQfinish(pg);
            return 130;
        }
    }
}

static int cli_status(batch_ctx_t *ctx)
{
    char err[512];
    batch_manifest_t m;
    if (batch_manifest_load(ctx->cfg.data_dir, &m, err, sizeof(err)) < 0) {
        printf("master dataset: %s\n", err);
    } else {
        int64_t records = 0, bytes = 0;
        int sealed = 0;
        for (size_t i = 0; i < m.nsegs; i++) {
            records += m.segs[i].count;
            bytes += m.segs[i].bytes;
            sealed += m.segs[i].sealed;
        }
        printf("master dataset: %s: %zu segments (%d sealed), %" PRId64 " records, %" PRId64 " bytes, %zu cut markers\n",
               ctx->cfg.data_dir, m.nsegs, sealed, records, bytes, m.ncuts);
        batch_manifest_free(&m);
    }
    PGconn *pg = cli_pg(ctx);
    if (!pg)
        return 1;
    int64_t pub = lam_store_pg_published_run(pg, err, sizeof(err));
    printf("published run: %" PRId64 "\n", pub);
    PGresult *res = lam_pg_query(pg,
                                 "SELECT run, status, coalesce(to_char(started_at AT TIME ZONE 'UTC',"
                                 " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '-'), coalesce(round(extract(epoch FROM"
                                 " finished_at - started_at)::numeric, 2)::text, '-'), records, records_total, skipped,"
                                 " coalesce(view_rows::text, '-'), coalesce(error, '') FROM lam_runs ORDER BY run DESC"
                                 " LIMIT 10",
                                 0, NULL, err, sizeof(err));
    if (!res) {
        fprintf(stderr, "batch_layer: %s\n", err);
        PQfinish(pg);
        return 1;
    }
    printf("%-6s %-10s %-21s %8s %12s %12s %8s %10s %s\n", "run", "status", "started", "secs", "records", "total",
           "skipped", "view_rows", "error");
    for (int i = 0; i < PQntuples(res); i++)
        printf("%-6s %-10s %-21s %8s %12s %12s %8s %10s %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
               PQgetvalue(res, i, 2), PQgetvalue(res, i, 3), PQgetvalue(res, i, 4), PQgetvalue(res, i, 5),
               PQgetvalue(res, i, 6), PQgetvalue(res, i, 7), PQgetvalue(res, i, 8));
    PQclear(res);
    PQfinish(pg);
    return 0;
}

/* Check one segment against its manifest entry; collects its cut records into found, counts blocks by codec. */
static int verify_segment(const char *dir, const batch_segment_t *s, batch_manifest_t *found, int64_t *records,
                          int64_t *lz4_blocks, int64_t *zstd_blocks)
{
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s/%s", dir, s->name);
    struct stat st;
    if (stat(path, &st) < 0) {
        printf("segment %s: missing\n", s->name);
        return -1;
    }
    if (s->sealed && (st.st_mode & 0222)) {
        printf("segment %s: sealed but writable (mode %o)\n", s->name, (unsigned)(st.st_mode & 0777));
        return -1;
    }
    if (s->sealed && st.st_size != s->bytes) {
        printf("segment %s: size %lld, manifest says %" PRId64 "\n", s->name, (long long)st.st_size, s->bytes);
        return -1;
    }
    if (st.st_size < s->bytes) {
        printf("segment %s: shorter (%lld) than the manifest says (%" PRId64 ")\n", s->name, (long long)st.st_size,
               s->bytes);
        return -1;
    }
    batch_seg_reader_t r;
    if (batch_seg_open(&r, path, err, sizeof(err)) < 0) {
        printf("segment %s: %s\n", s->name, err);
        return -1;
    }
    if (r.partition != s->partition) {
        printf("segment %s: partition %d in file, %d in manifest\n", s->name, (int)r.partition, (int)s->partition);
        batch_seg_close(&r);
        return -1;
    }
    batch_block_t b;
    int rc;
    int64_t count = 0, first = -1, last = -1, prev = -1;
    int bad = 0;
    while (r.pos < s->bytes && (rc = batch_seg_next_block(&r, &b, 1, err, sizeof(err))) == 1) {
        size_t pos = 0;
        batch_rec_t rec;
        int rr;
        uint32_t n = 0;
        while ((rr = batch_rec_next(&r.raw, &pos, &rec)) == 1) {
            if (rec.offset <= prev) {
                printf("segment %s: offset %" PRId64 " not increasing\n", s->name, rec.offset);
                bad = 1;
                break;
            }
            prev = rec.offset;
            if (rec.kind == BATCH_REC_CUT)
                batch_manifest_add_cut(found, rec.run, s->partition, rec.offset);
            n++;
        }
        if (bad)
            break;
        if (rr < 0 || n != b.nrecords) {
            printf("segment %s: block at byte %" PRId64 " holds malformed records\n", s->name,
                   r.pos - BATCH_BLK_HDR - b.comp_len);
            bad = 1;
            break;
        }
        count += n;
        *(b.magic == BATCH_BLK_MAGIC_LZ4 ? lz4_blocks : zstd_blocks) += 1;
        if (first < 0)
            first = b.first;
        last = b.last;
    }
    if (!bad && r.pos < s->bytes) {
        printf("segment %s: %s\n", s->name, err);
        bad = 1;
    }
    if (!bad && r.pos != s->bytes) {
        printf("segment %s: blocks end at byte %" PRId64 ", manifest says %" PRId64 "\n", s->name, r.pos, s->bytes);
        bad = 1;
    }
    if (!bad && (count != s->count || first != s->first || last != s->last)) {
        printf("segment %s: holds %" PRId64 " records %" PRId64 "..%" PRId64 ", manifest says %" PRId64 " records %" PRId64
               "..%" PRId64 "\n",
               s->name, count, first, last, s->count, s->first, s->last);
        bad = 1;
    }
    /* An open segment may have grown since the manifest was saved: check those blocks too. */
    while (!bad && !s->sealed && (rc = batch_seg_next_block(&r, &b, 1, err, sizeof(err))) != 0) {
        if (rc < 0) {
            if (r.size - r.pos < BATCH_BLK_HDR)
                break; /* a block being written right now */
            printf("segment %s: %s\n", s->name, err);
            bad = 1;
        }
    }
    batch_seg_close(&r);
    *records += count;
    return bad ? -1 : 0;
}

static int cli_verify(batch_ctx_t *ctx)
{
    char err[512];
    batch_manifest_t m, found;
    if (batch_manifest_load(ctx->cfg.data_dir, &m, err, sizeof(err)) < 0) {
        printf("manifest: %s\n", err);
        return 1;
    }
    batch_manifest_init(&found);
    int failures = 0;
    int64_t records = 0, lz4_blocks = 0, zstd_blocks = 0;
    for (size_t i = 0; i < m.nsegs; i++) {
        for (size_t j = 0; j < i; j++)
            if (!strcmp(m.segs[i].name, m.segs[j].name)) {
                printf("manifest: segment %s listed twice\n", m.segs[i].name);
                failures++;
            }
        if (verify_segment(ctx->cfg.data_dir, &m.segs[i], &found, &records, &lz4_blocks, &zstd_blocks) < 0)
            failures++;
    }
    for (size_t i = 0; i < m.ncuts; i++) {
        const batch_cut_t *c = &m.cuts[i];
        if (batch_manifest_cut(&found, c->run, c->partition) != c->offset) {
            printf("manifest: cut %" PRId64 " partition %d offset %" PRId64 " is not a marker in the segments\n", c->run,
                   (int)c->partition, c->offset);
            failures++;
        }
    }
    if (failures) {
        printf("verify: %d problem(s) in %s\n", failures, ctx->cfg.data_dir);
    } else {
        printf("verify: ok: %zu segments, %" PRId64 " records, %zu cut markers, blocks %" PRId64 " lz4 + %" PRId64
               " zstd in %s\n",
               m.nsegs, records, m.ncuts, lz4_blocks, zstd_blocks, ctx->cfg.data_dir);
    }
    batch_manifest_free(&m);
    batch_manifest_free(&found);
    return failures ? 1 : 0;
}

static int cli_dump(batch_ctx_t *ctx, int argc, char **argv)
{
    int32_t only = -1;
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--partition") && i + 1 < argc)
            only = atoi(argv[++i]);
    char err[512], path[4096];
    batch_manifest_t m;
    if (batch_manifest_load(ctx->cfg.data_dir, &m, err, sizeof(err)) < 0) {
        fprintf(stderr, "batch_layer: %s\n", err);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < m.nsegs; i++) {
        const batch_segment_t *s = &m.segs[i];
        if (only >= 0 && s->partition != only)
            continue;
        snprintf(path, sizeof(path), "%s/%s", ctx->cfg.data_dir, s->name);
        batch_seg_reader_t r;
        if (batch_seg_open(&r, path, err, sizeof(err)) < 0) {
            fprintf(stderr, "batch_layer: segment %s: %s\n", s->name, err);
            rc = 1;
            continue;
        }
        batch_block_t b;
        int brc;
        while ((brc = batch_seg_next_block(&r, &b, 1, err, sizeof(err))) == 1) {
            size_t pos = 0;
            batch_rec_t rec;
            while (batch_rec_next(&r.raw, &pos, &rec) == 1) {
                if (rec.kind == BATCH_REC_CUT)
                    printf("%d\t%" PRId64 "\tcut\t%" PRId64 "\n", (int)s->partition, rec.offset, rec.run);
                else
                    printf("%d\t%" PRId64 "\tevent\t%.*s\n", (int)s->partition, rec.offset, (int)rec.len, rec.data);
            }
        }
        if (brc < 0 && r.pos < s->bytes) {
            fprintf(stderr, "batch_layer: segment %s: %s\n", s->name, err);
            rc = 1;
        }
        batch_seg_close(&r);
    }
    batch_manifest_free(&m);
    return rc;
}

static int64_t peak_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %lld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/*
 * Read-only measurement: recompute every view over the master dataset up to run K's markers (the
 * newest cut by default; everything when the dataset holds no cut yet) and print the rate and where
 * the time went. Nothing is written to PostgreSQL, Redis or the data dir.
 */
static int cli_recompute(batch_ctx_t *ctx, int argc, char **argv)
{
    int64_t run = -1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--run") && i + 1 < argc) {
            run = strtoll(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "batch_layer recompute: unknown option %s (recompute [--run K])\n", argv[i]);
            return 2;
        }
    }
    char err[512];
    lam_views_t *views = lam_views_load(ctx->cfg.common.views_path, err, sizeof(err));
    if (!views) {
        fprintf(stderr, "batch_layer: LAM_VIEWS: %s\n", err);
        return 2;
    }
    batch_manifest_t m;
    if (batch_manifest_load(ctx->cfg.data_dir, &m, err, sizeof(err)) < 0) {
        fprintf(stderr, "batch_layer: %s\n", err);
        lam_views_free(views);
        return 1;
    }
    int nparts = 0;
    for (size_t i = 0; i < m.nsegs; i++)
        if (m.segs[i].partition >= nparts)
            nparts = m.segs[i].partition + 1;
    int64_t newest = -1;
    for (size_t i = 0; i < m.ncuts; i++) {
        if (m.cuts[i].run > newest)
            newest = m.cuts[i].run;
        if (m.cuts[i].partition >= nparts)
            nparts = m.cuts[i].partition + 1;
    }
    if (run < 0)
        run = newest;
    int64_t *cut = lam_malloc((size_t)(nparts ? nparts : 1) * sizeof(*cut));
    int rc = 0;
    for (int p = 0; p < nparts; p++) {
        cut[p] = run < 0 ? INT64_MAX : batch_manifest_cut(&m, run, p);
        if (cut[p] < 0) {
            fprintf(stderr, "batch_layer: the master dataset holds no marker of run %" PRId64 " in partition %d\n",
                    run, p);
            rc = 1;
        }
    }
    batch_recompute_t out;
    if (!rc && batch_recompute(&ctx->cfg, views, &m, cut, nparts, NULL, NULL, &out, err, sizeof(err)) < 0) {
        fprintf(stderr, "batch_layer: %s\n", err);
        rc = 1;
    }
    if (!rc) {
        double s = (double)out.scan_us / 1e6;
        printf("recompute: %s %" PRId64 ": %" PRId64 " records (%" PRId64 " skipped, %" PRId64
               " duplicates), %zu view rows, %d threads\n",
               run < 0 ? "whole dataset, no cut; records" : "up to the markers of run", run < 0 ? out.records : run,
               out.records, out.skipped, out.dups, lam_agg_size(out.agg), out.threads);
        printf("recompute: scan %.3f s wall (threads busy %.3f s, of which read+crc+decompress %.3f s), merge %.3f s\n", s,
               (double)out.busy_us / 1e6, (double)out.read_us / 1e6, (double)out.merge_us / 1e6);
        printf("recompute: events_per_s=%.0f peak_rss_mb=%" PRId64 "\n", s > 0 ? (double)out.records / s : 0.0,
               peak_rss_kb() / 1024);
        lam_agg_free(out.agg);
    }
    lam_free(cut);
    batch_manifest_free(&m);
    lam_views_free(views);
    return rc;
}

int batch_cli_main(batch_ctx_t *ctx, int argc, char **argv)
{
    const char *cmd = argv[0];
    if (!strcmp(cmd, "run")) {
        int wait = 0;
        for (int i = 1; i < argc; i++) {
            if (!strcmp(argv[i], "--wait")) {
                wait = 1;
            } else {
                fprintf(stderr, "batch_layer run: unknown option %s\n", argv[i]);
                return 2;
            }
        }
        return cli_run(ctx, wait);
    }
    if (!strcmp(cmd, "status"))
        return cli_status(ctx);
    if (!strcmp(cmd, "verify"))
        return cli_verify(ctx);
    if (!strcmp(cmd, "dump"))
        return cli_dump(ctx, argc - 1, argv + 1);
    if (!strcmp(cmd, "recompute"))
        return cli_recompute(ctx, argc - 1, argv + 1);
    fprintf(stderr, "batch_layer: unknown command %s (run [--wait] | status | verify | dump [--partition P] |"
            " recompute [--run K])\n", cmd);
    return 2;
}
