/* lam_service.c - signals, sleeping and backoff for long-running services. */
#include "lam_service.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int g_stop;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_stop, 1);
}

void lam_service_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int lam_service_stopping(void)
{
    return atomic_load(&g_stop);
}

void lam_service_request_stop(void)
{
    atomic_store(&g_stop, 1);
}

int64_t lam_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t lam_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int lam_service_sleep_ms(int64_t ms)
{
    int64_t end = lam_now_mono_ms() + ms;
    while (!lam_service_stopping()) {
        int64_t left = end - lam_now_mono_ms();
        if (left <= 0)
            return 0;
        int64_t step = left < 50 ? left : 50;
        struct timespec ts = {step / 1000, (step % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    return 1;
}

int64_t lam_backoff_next(lam_backoff_t *b)
{
    b->cur_ms = b->cur_ms ? b->cur_ms * 2 : b->min_ms;
    if (b->cur_ms > b->max_ms)
        b->cur_ms = b->max_ms;
    int64_t jitter = b->cur_ms / 5;
    return b->cur_ms - jitter + (jitter ? (int64_t)(random() % (2 * jitter + 1)) : 0);
}

void lam_backoff_reset(lam_backoff_t *b)
{
    b->cur_ms = 0;
}
