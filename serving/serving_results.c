/* serving_results.c - merged answers reused for LAM_SERVING_RESULT_MS: a bounded table, one entry per slot. */
#include <string.h>

#include "lam_mem.h"
#include "lam_service.h"
#include "serving.h"

typedef struct rslot {
    char *key;
    size_t key_len;
    char *body;
    size_t body_len;
    int64_t expires_ms; /* monotonic */
    int64_t ttl_ms;
    int refreshing;     /* one request is recomputing: the others keep the answer up to 2 x ttl */
} rslot_t;

struct serving_results {
    pthread_mutex_t lock;
    size_t nslots;
    rslot_t *slots;
};

serving_results_t *serving_results_new(size_t slots)
{
    serving_results_t *r = lam_calloc(1, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->nslots = slots;
    r->slots = lam_calloc(slots, sizeof(rslot_t));
    return r;
}

void serving_results_free(serving_results_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nslots; i++) {
        lam_free(r->slots[i].key);
        lam_free(r->slots[i].body);
    }
    lam_free(r->slots);
    pthread_mutex_destroy(&r->lock);
    lam_free(r);
}

static size_t slot_of(const serving_results_t *r, const lam_buf_t *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < key->len; i++)
        h = (h ^ (uint8_t)key->data[i]) * 1099511628211ULL;
    return (size_t)(h % r->nslots);
}

int serving_results_get(serving_results_t *r, const lam_buf_t *key, lam_buf_t *out)
{
    rslot_t *s = &r->slots[slot_of(r, key)];
    int hit = 0;
    pthread_mutex_lock(&r->lock);
    if (s->key && s->key_len == key->len && !memcmp(s->key, key->data, key->len)) {
        int64_t now = lam_now_mono_ms();
        if (now < s->expires_ms || (s->refreshing && now < s->expires_ms + s->ttl_ms)) {
            lam_buf_append(out, s->body, s->body_len);
            hit = 1;
        } else if (now < s->expires_ms + s->ttl_ms) {
            s->refreshing = 1; /* this caller recomputes (single flight) */
        }
    }
    pthread_mutex_unlock(&r->lock);
    return hit;
}

void serving_results_put(serving_results_t *r, const lam_buf_t *key, const lam_buf_t *body, int64_t ttl_ms)
{
    if (body->len > 256 * 1024) /* big answers are not worth pinning (bounds memory: slots x 256 KiB) */
        return;
    char *k = lam_malloc(key->len + 1), *b = lam_malloc(body->len + 1);
    memcpy(k, key->data, key->len);
    memcpy(b, body->data, body->len);
    rslot_t *s = &r->slots[slot_of(r, key)];
    pthread_mutex_lock(&r->lock);
    char *oldk = s->key, *oldb = s->body;
    s->key = k;
    s->key_len = key->len;
    s->body = b;
    s->body_len = body->len;
    s->expires_ms = lam_now_mono_ms() + ttl_ms;
    s->ttl_ms = ttl_ms;
    s->refreshing = 0;
    pthread_mutex_unlock(&r->lock);
    lam_free(oldk);
    lam_free(oldb);
}
