/*
 * fuzz_event.c - libFuzzer target: parse an event; the fast path must agree with the general
 * parser; if valid, canonical form must be a fixed point; the projected scan (of the input and of
 * its canonical form) accepts only what lam_event_parse accepts, with the same projected fields.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lam_event.h"
#include "lam_json.h"

/* The projected scan of data takes only what lam_event_parse takes, with the same fields. */
static void check_projected(const char *data, size_t size)
{
    static lam_event_proj_t *pj;
    static lam_event_t ep, ef;
    if (!pj) {
        const char *names[] = {"k0", "k1", "url", "user", "price", "geo.cc", "type", "id", "a.b"};
        size_t lens[sizeof(names) / sizeof(names[0])];
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            lens[i] = strlen(names[i]);
        pj = lam_event_proj_new(names, lens, sizeof(names) / sizeof(names[0]));
        lam_event_init(&ep);
        lam_event_init(&ef);
    }
    if (!lam_event_parse_projected(&ep, data, size, pj))
        return;
    char err[256], why[160];
    if (lam_event_parse(&ef, data, size, 0, -1, err, sizeof(err)) != 0) {
        fprintf(stderr, "projected scan accepted, lam_event_parse: %s\n", err);
        abort();
    }
    if (lam_event_compare_projected(&ep, &ef, why, sizeof(why))) {
        fprintf(stderr, "projected scan differs: %s\n", why);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lam_event_t ev, ev2, evg;
    static int init;
    static lam_buf_t c1, c2, cg;
    if (!init) {
        lam_event_init(&ev);
        lam_event_init(&ev2);
        lam_event_init(&evg);
        init = 1;
    }
    char err[256], errg[256], why[128];
    const int64_t now = 1700000000000LL;
    check_projected((const char *)data, size);
    /* differential: the fast path accepts only what the general parser accepts, identically */
    int rg = lam_event_parse_general(&evg, (const char *)data, size, now, 86400000, errg, sizeof(errg));
    if (lam_event_parse_fast(&ev, (const char *)data, size, now, 86400000)) {
        if (rg != 0) {
            fprintf(stderr, "fast path accepted, general parser: %s\n", errg);
            abort();
        }
        if (lam_event_compare(&ev, &evg, why, sizeof(why))) {
            fprintf(stderr, "fast path differs: %s\n", why);
            abort();
        }
    }
    int r = lam_event_parse(&ev, (const char *)data, size, now, 86400000, err, sizeof(err));
    if (r != rg || (r != 0 && strcmp(err, errg) != 0)) {
        fprintf(stderr, "lam_event_parse %d '%s', general %d '%s'\n", r, r ? err : "", rg, rg ? errg : "");
        abort();
    }
    if (r != 0) {
        /* every rejection names a field: "<name>: ..." */
        if (!strstr(err, ": "))
            abort();
        return 0;
    }
    if (lam_event_compare(&ev, &evg, why, sizeof(why))) {
        fprintf(stderr, "lam_event_parse differs from the general parser: %s\n", why);
        abort();
    }
    lam_buf_clear(&cg);
    lam_event_canonical(&evg, &cg);
    lam_buf_clear(&c1);
    lam_event_canonical(&ev, &c1);
    if (c1.len != ev.canonical_len || c1.len > LAM_EVENT_MAX_BYTES)
        abort();
    if (c1.len != cg.len || memcmp(c1.data, cg.data, c1.len) != 0)
        abort();
    if (lam_event_parse(&ev2, c1.data, c1.len, now, 86400000, err, sizeof(err)) != 0) {
        fprintf(stderr, "canonical form rejected: %s\n", err);
        abort();
    }
    check_projected(c1.data, c1.len);
    lam_buf_clear(&c2);
    lam_event_canonical(&ev2, &c2);
    if (c1.len != c2.len || memcmp(c1.data, c2.data, c1.len) != 0)
        abort();
    /* lookups agree with the field list */
    for (size_t i = 0; i < ev.nfields; i++)
        if (lam_event_get(&ev, ev.fields[i].name, ev.fields[i].name_len) != &ev.fields[i])
            abort();
    if (ev.ts_ms != ev2.ts_ms || ev.nfields != ev2.nfields)
        abort();
    /* the generic tokenizer accepts the canonical form as well */
    lam_json_t j;
    lam_json_init(&j, c1.data, c1.len, 0);
    lam_json_tok_t t = lam_json_next(&j);
    if (lam_json_skip(&j, t) != 0 || lam_json_next(&j) != LAM_JSON_EOF)
        abort();
    return 0;
}
