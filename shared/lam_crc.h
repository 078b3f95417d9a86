/* lam_crc.h - table-driven CRC-32 (slicing-by-8) for the two polynomials lam uses. */
#ifndef LAM_CRC_H
#define LAM_CRC_H

#include <stddef.h>
#include <stdint.h>

/*
 * Both continue from crc (0 to start): f(f(0, a), b) is the CRC of a followed by b. The tables
 * (8 KB each) are built on first use, once, from any thread.
 */

/** CRC-32 (ISO-HDLC): zlib's crc32(), the hash of librdkafka's consistent_random partitioner. */
uint32_t lam_crc32(uint32_t crc, const void *data, size_t len);

/** CRC-32C (Castagnoli), tables only: the master dataset's checksums (batch_crc32c uses SSE4.2 when it can). */
uint32_t lam_crc32c_sw(uint32_t crc, const void *data, size_t len);

#endif
