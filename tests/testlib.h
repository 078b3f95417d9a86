/* testlib.h - small helpers shared by the cmocka unit and integration tests. */
#ifndef LAM_TESTLIB_H
#define LAM_TESTLIB_H

#include <stddef.h>

/** Read a whole file into a NUL-terminated buffer (caller frees with lam_free); NULL on error. */
char *lam_test_read_file(const char *path, size_t *len);
/** A TCP port on 127.0.0.1 that was free a moment ago (for servers a test starts); -1 on error. */
int lam_test_free_port(void);
/** Environment variable or a default. */
const char *lam_test_env(const char *name, const char *def);
/** Deterministic xorshift PRNG for property tests; seed from LAM_TEST_SEED when set. */
unsigned long long lam_test_rand(void);
unsigned long long lam_test_seed(void);

#endif
