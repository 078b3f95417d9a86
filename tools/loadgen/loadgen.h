/* loadgen.h - lam's load generator: a realistic clickstream sent to ingest over keep-alive HTTP/1.1. */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <stddef.h>
#include <stdint.h>

#include "lam_buf.h"

/* ---- loadgen_gen.c: the clickstream model ---- */

typedef struct lg_session {
    uint32_t user;
    uint64_t id;
    uint8_t device, cc;
    int pages_left;
    int last_url;      /* -1: none yet (external referrer) */
    int cart_item;     /* -1: empty */
    int cart_qty;
} lg_session_t;

#define LG_SESSIONS 64
#define LG_RECENT 256

/** One generator per thread: its own PRNG and sessions; the catalogue (Zipf tables) is shared. */
typedef struct lg_gen {
    uint64_t rng;
    double late_rate, dup_rate;
    lg_session_t sess[LG_SESSIONS];
    /* recently generated events, re-sent verbatim as client retries (--dup-rate) */
    char *recent[LG_RECENT];
    size_t recent_len[LG_RECENT];
    size_t nrecent, recent_pos;
} lg_gen_t;

/** Build the shared catalogue (users, items with prices, urls, Zipf CDFs). Call once. */
void lg_catalogue_init(uint32_t users, uint32_t items, uint32_t urls);
/** Seed a generator (thread index mixed in). */
void lg_gen_init(lg_gen_t *g, uint64_t seed, int thread, double late_rate, double dup_rate);
void lg_gen_free(lg_gen_t *g);
/**
 * Append one event as a JSON object (no newline) to out. ts_ms is its event time (the receive
 * time for live traffic, a past time for backfill); late events are moved further back. Returns
 * 1 when the event is a duplicate (an earlier event re-sent with its id), else 0.
 */
int lg_gen_event(lg_gen_t *g, int64_t ts_ms, lam_buf_t *out);
/** A backfill timestamp in [now - days, now), following the daily rhythm. */
int64_t lg_gen_backfill_ts(lg_gen_t *g, int64_t now_ms, int days);
/** Relative traffic at this time of day (0.35 at 04:00 UTC .. 1.0 at 16:00 UTC). */
double lg_rhythm(int64_t ts_ms);
/** Uniform double in [0,1). */
double lg_rand01(lg_gen_t *g);

#endif
