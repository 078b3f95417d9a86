/* lam_crc.h - table-driven CRC-32 (slicing-by-8) for any reflected polynomial. */
#ifndef LAM_CRC_H
#define LAM_CRC_H

#include <stddef.h>
#include <stdint.h>

#define LAM_CRC32_POLY 0xEDB88320u  /* CRC-32 (ISO-HDLC): zlib's crc32(), Kafka's key partitioning */
#define LAM_CRC32C_POLY 0x82F63B78u /* CRC-32C (Castagnoli): the master dataset's checksums */

typedef struct {
    uint32_t t[8][256];
} lam_crc_tab_t;

/** Fill tab for the reflected polynomial poly (LAM_CRC32_POLY, LAM_CRC32C_POLY). */
void lam_crc_tab_init(lam_crc_tab_t *tab, uint32_t poly);

/** CRC of data[0..len) continued from crc (0 to start): lam_crc(t, lam_crc(t, 0, a), b) is the CRC of a then b. */
uint32_t lam_crc(const lam_crc_tab_t *tab, uint32_t crc, const void *data, size_t len);

#endif
