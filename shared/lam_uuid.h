/* lam_uuid.h - UUIDv7 (RFC 9562) ids for events that arrive without one. */
#ifndef LAM_UUID_H
#define LAM_UUID_H

#include <stdint.h>

#define LAM_UUID_LEN 36

/**
 * Write a UUIDv7 for now_ms as 36 lower-case hex chars + NUL into out. Monotonic within the
 * process (RFC 9562 method 1: 12-bit counter in rand_a, seeded randomly each millisecond; the
 * timestamp never goes backwards and advances early if the counter is exhausted). Thread-safe.
 * Randomness from getrandom(2). Returns 0, or -1 if no randomness is available.
 */
int lam_uuid7(char out[LAM_UUID_LEN + 1], int64_t now_ms);

/** Epoch ms embedded in a textual UUIDv7, or -1 if s is not one. */
int64_t lam_uuid7_ms(const char *s, uint64_t len);

#endif
