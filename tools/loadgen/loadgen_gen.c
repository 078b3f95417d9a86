/* loadgen_gen.c - the clickstream model: users, sessions, Zipf items and urls, a daily rhythm. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lam_mem.h"
#include "lam_uuid.h"
#include "loadgen.h"

static const char *const cc_names[] = {"US", "DE", "GB", "FR", "IN", "BR", "JP", "TH", "CA", "NL", "ES", "AU"};
static const double cc_weights[] = {30, 10, 9, 7, 12, 8, 6, 5, 4, 3, 3, 3};
#define N_CC (sizeof(cc_names) / sizeof(cc_names[0]))
static const char *const device_names[] = {"mobile", "desktop", "tablet"};
static const double device_weights[] = {58, 36, 6};
static const char *const referrers[] = {"https://www.google.com/", "https://www.bing.com/", "https://t.co/",
                                        "https://news.ycombinator.com/", "https://www.facebook.com/", ""};
#define N_REF (sizeof(referrers) / sizeof(referrers[0]))
static const char *const plans[] = {"free", "free", "free", "free", "free", "free", "free", "pro", "pro", "team"};

static struct {
    uint32_t users, items, urls;
    double *item_cdf, *url_cdf;
    int32_t *item_cents; /* price per item, 2 decimals */
    char (*url_text)[48];
    int *url_item;       /* item shown on a product url, -1 for other pages */
} cat;

static uint64_t next_u64(lg_gen_t *g)
{
    /* xorshift64* */
    uint64_t x = g->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

double lg_rand01(lg_gen_t *g)
{
    return (double)(next_u64(g) >> 11) / 9007199254740992.0;
}

static uint32_t rand_below(lg_gen_t *g, uint32_t n)
{
    return (uint32_t)(lg_rand01(g) * n);
}

static size_t pick_weighted(lg_gen_t *g, const double *w, size_t n)
{
    double total = 0;
    for (size_t i = 0; i < n; i++)
        total += w[i];
    double r = lg_rand01(g) * total;
    for (size_t i = 0; i < n; i++) {
        if (r < w[i])
            return i;
        r -= w[i];
    }
    return n - 1;
}

/* Zipf(s=1.1) CDF over n ranks. */
static double *zipf_cdf(uint32_t n)
{
    double *cdf = lam_malloc(n * sizeof(double));
    double sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += 1.0 / pow((double)(i + 1), 1.1);
    double acc = 0;
    for (uint32_t i = 0; i < n; i++) {
        acc += 1.0 / pow((double)(i + 1), 1.1) / sum;
        cdf[i] = acc;
    }
    cdf[n - 1] = 1.0;
    return cdf;
}

static uint32_t zipf_pick(lg_gen_t *g, const double *cdf, uint32_t n)
{
    double r = lg_rand01(g);
    uint32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (cdf[mid] < r)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void lg_catalogue_init(uint32_t users, uint32_t items, uint32_t urls)
{
    cat.users = users;
    cat.items = items;
    cat.urls = urls;
    cat.item_cdf = zipf_cdf(items);
    cat.url_cdf = zipf_cdf(urls);
    cat.item_cents = lam_malloc(items * sizeof(int32_t));
    for (uint32_t i = 0; i < items; i++) {
        uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
        cat.item_cents[i] = 199 + (int32_t)(h % 19800); /* 1.99 .. 199.98 */
    }
    cat.url_text = lam_malloc(urls * sizeof(*cat.url_text));
    cat.url_item = lam_malloc(urls * sizeof(int));
    static const char *const pages[] = {"/", "/search", "/cart", "/deals", "/account", "/help", "/blog"};
    for (uint32_t u = 0; u < urls; u++) {
        /* the most popular urls are the fixed pages, then product pages */
        if (u < 7) {
            snprintf(cat.url_text[u], sizeof(cat.url_text[u]), "%s", pages[u]);
            cat.url_item[u] = -1;
        } else {
            uint32_t item = (u - 7) % items;
            snprintf(cat.url_text[u], sizeof(cat.url_text[u]), "/product/sku-%05u", item);
            cat.url_item[u] = (int)item;
        }
    }
}

void lg_gen_init(lg_gen_t *g, uint64_t seed, int thread, double late_rate, double dup_rate)
{
    memset(g, 0, sizeof(*g));
    g->rng = (seed + 1) * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)(thread + 1) * 0xD1B54A32D192ED03ULL);
    if (!g->rng)
        g->rng = 1;
    g->late_rate = late_rate;
    g->dup_rate = dup_rate;
    for (int i = 0; i < LG_SESSIONS; i++)
        g->sess[i].pages_left = 0; /* start fresh on first use */
}

void lg_gen_free(lg_gen_t *g)
{
    for (size_t i = 0; i < LG_RECENT; i++)
        lam_free(g->recent[i]);
}

double lg_rhythm(int64_t ts_ms)
{
    double h = (double)((ts_ms / 1000) % 86400) / 3600.0;
    return 0.35 + 0.65 * (0.5 - 0.5 * cos(2 * M_PI * (h - 4) / 24));
}

int64_t lg_gen_backfill_ts(lg_gen_t *g, int64_t now_ms, int days)
{
    int64_t span = (int64_t)days * 86400000;
    for (;;) {
        int64_t ts = now_ms - 1 - (int64_t)(lg_rand01(g) * (double)span);
        if (lg_rand01(g) < lg_rhythm(ts))
            return ts;
    }
}

static void new_session(lg_gen_t *g, lg_session_t *s)
{
    s->user = rand_below(g, cat.users);
    s->id = next_u64(g);
    s->device = (uint8_t)pick_weighted(g, device_weights, 3);
    s->cc = (uint8_t)pick_weighted(g, cc_weights, N_CC);
    s->pages_left = 1 + (int)(-log(1 - lg_rand01(g)) * 6);
    s->last_url = -1;
    s->cart_item = -1;
    s->cart_qty = 0;
}

static void remember(lg_gen_t *g, const char *ev, size_t len)
{
    size_t i = g->recent_pos;
    lam_free(g->recent[i]);
    g->recent[i] = lam_strndup(ev, len);
    g->recent_len[i] = len;
    g->recent_pos = (i + 1) % LG_RECENT;
    if (g->nrecent < LG_RECENT)
        g->nrecent++;
}

/* "u%06u" */
static void user_text(char out[16], unsigned u)
{
    char tmp[12];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n < 6)
        tmp[n++] = '0';
    out[0] = 'u';
    for (int i = 0; i < n; i++)
        out[1 + i] = tmp[n - 1 - i];
    out[1 + n] = '\0';
}

/* Appenders instead of printf: formatting was half of loadgen's CPU, which it shares with ingest. */
static void put(lam_buf_t *o, const char *s)
{
    lam_buf_append_str(o, s);
}

/* v in decimal, zero-padded to at least width digits. */
static void put_u(lam_buf_t *o, unsigned long long v, int width)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < width && n < (int)sizeof(tmp))
        tmp[sizeof(tmp) - 1 - n++] = '0';
    lam_buf_append(o, tmp + sizeof(tmp) - n, (size_t)n);
}

static void put_i(lam_buf_t *o, long long v)
{
    if (v < 0) {
        lam_buf_append_char(o, '-');
        put_u(o, 0ULL - (unsigned long long)v, 0);
    } else {
        put_u(o, (unsigned long long)v, 0);
    }
}

/* The common start of every event: {"id":"<id>","ts":<ts>,"type":"<type>" */
static void put_head(lam_buf_t *o, const char *id, int64_t ts_ms, const char *type)
{
    put(o, "{\"id\":\"");
    put(o, id);
    put(o, "\",\"ts\":");
    put_i(o, ts_ms);
    put(o, ",\"type\":\"");
    put(o, type);
    lam_buf_append_char(o, '"');
}

static void put_price(lam_buf_t *o, int32_t cents)
{
    if (cents < 0) {
        lam_buf_append_char(o, '-');
        cents = -cents;
    }
    put_u(o, (unsigned)(cents / 100), 0);
    lam_buf_append_char(o, '.');
    put_u(o, (unsigned)(cents % 100), 2);
}

static void put_hex16(lam_buf_t *o, unsigned long long v)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    for (int i = 15; i >= 0; i--, v >>= 4)
        tmp[i] = hex[v & 15];
    lam_buf_append(o, tmp, sizeof(tmp));
}

/* ,"item":"sku-NNNNN","price":P,"qty":Q,"user":"U"} */
static void put_cart(lam_buf_t *o, int item, int32_t cents, int qty, const char *user)
{
    put(o, ",\"item\":\"sku-");
    put_u(o, (unsigned)item, 5); /* an index into the catalogue, never negative */
    put(o, "\",\"price\":");
    put_price(o, cents);
    put(o, ",\"qty\":");
    put_i(o, qty);
    put(o, ",\"user\":\"");
    put(o, user);
    put(o, "\"}");
}

int lg_gen_event(lg_gen_t *g, int64_t ts_ms, lam_buf_t *out)
{
    if (g->nrecent && g->dup_rate > 0 && lg_rand01(g) < g->dup_rate) {
        size_t i = rand_below(g, (uint32_t)g->nrecent);
        lam_buf_append(out, g->recent[i], g->recent_len[i]);
        return 1;
    }
    if (g->late_rate > 0 && lg_rand01(g) < g->late_rate)
        ts_ms -= 60000 + (int64_t)(lg_rand01(g) * 7140000); /* 1 min .. 2 h late */
    lg_session_t *s = &g->sess[rand_below(g, LG_SESSIONS)];
    char id[LAM_UUID_LEN + 1];
    lam_uuid7(id, ts_ms);
    size_t start = out->len;
    char user[16];
    user_text(user, s->user);
    const char *cc = cc_names[s->cc];

    if (s->pages_left <= 0) {
        new_session(g, s);
        user_text(user, s->user);
        cc = cc_names[s->cc];
        double r = lg_rand01(g);
        if (r < 0.04) {
            put_head(out, id, ts_ms, "signup");
            put(out, ",\"user\":\"");
            put(out, user);
            put(out, "\",\"plan\":\"");
            put(out, plans[rand_below(g, 10)]);
            put(out, "\",\"geo\":{\"cc\":\"");
            put(out, cc);
            put(out, "\"}}");
            goto done;
        }
        if (r < 0.35) {
            put_head(out, id, ts_ms, "login");
            put(out, ",\"user\":\"");
            put(out, user);
            put(out, "\"}");
            goto done;
        }
    }
    if (s->cart_item >= 0 && lg_rand01(g) < 0.3) {
        put_head(out, id, ts_ms, "purchase");
        put_cart(out, s->cart_item, cat.item_cents[s->cart_item], s->cart_qty, user);
        s->cart_item = -1;
        s->pages_left--;
        goto done;
    }
    if (s->last_url >= 0 && cat.url_item[s->last_url] >= 0 && lg_rand01(g) < 0.25) {
        int item = cat.url_item[s->last_url];
        if (lg_rand01(g) < 0.5) /* or something else popular */
            item = (int)zipf_pick(g, cat.item_cdf, cat.items);
        s->cart_item = item;
        s->cart_qty = 1 + (int)rand_below(g, 3);
        put_head(out, id, ts_ms, "add_to_cart");
        put_cart(out, item, cat.item_cents[item], s->cart_qty, user);
        goto done;
    }
    {
        int url = (int)zipf_pick(g, cat.url_cdf, cat.urls);
        const char *ref = s->last_url >= 0 ? cat.url_text[s->last_url] : referrers[rand_below(g, N_REF)];
        /* page latency: log-normal-ish around 120 ms, long tail */
        int lat = (int)(20 + exp(4.6 + 0.7 * (lg_rand01(g) + lg_rand01(g) + lg_rand01(g) - 1.5) * 2));
        put_head(out, id, ts_ms, "page_view");
        put(out, ",\"url\":\"");
        put(out, cat.url_text[url]);
        put(out, "\",\"user\":\"");
        put(out, user);
        put(out, "\",\"session\":\"");
        put_hex16(out, (unsigned long long)s->id);
        put(out, "\",\"referrer\":\"");
        put(out, ref);
        put(out, "\",\"device\":\"");
        put(out, device_names[s->device]);
        put(out, "\",\"geo\":{\"cc\":\"");
        put(out, cc);
        put(out, "\"},\"latency_ms\":");
        put_i(out, lat);
        lam_buf_append_char(out, '}');
        s->last_url = url;
        s->pages_left--;
    }
done:
    if (g->dup_rate > 0)
        remember(g, out->data + start, out->len - start);
    return 0;
}
