/* lam_service.h - process plumbing every service shares: stop signals, interruptible sleep, backoff. */
#ifndef LAM_SERVICE_H
#define LAM_SERVICE_H

#include <stdint.h>

/** Install SIGTERM/SIGINT handlers that request a stop, and ignore SIGPIPE. */
void lam_service_signals(void);
/** Non-zero once SIGTERM/SIGINT arrived (or lam_service_request_stop() was called). */
int lam_service_stopping(void);
void lam_service_request_stop(void);
/** Sleep up to ms, returning early (non-zero) when a stop is requested. */
int lam_service_sleep_ms(int64_t ms);
/** Monotonic and wall clocks in milliseconds. */
int64_t lam_now_mono_ms(void);
int64_t lam_now_ms(void);

/** Exponential backoff with jitter between min_ms and max_ms. */
typedef struct lam_backoff {
    int64_t min_ms, max_ms, cur_ms;
} lam_backoff_t;
#define LAM_BACKOFF_INIT(min, max) {(min), (max), 0}
/** The next delay to wait (doubles each call, capped, +-20% jitter). */
int64_t lam_backoff_next(lam_backoff_t *b);
void lam_backoff_reset(lam_backoff_t *b);

#endif
