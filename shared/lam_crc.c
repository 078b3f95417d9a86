/* lam_crc.c - table-driven CRC-32 (slicing-by-8): 8 bytes per step, 8 KB of tables per polynomial. */
#include "lam_crc.h"

#include <pthread.h>
#include <string.h>

#define CRC32_POLY 0xEDB88320u  /* reflected */
#define CRC32C_POLY 0x82F63B78u /* reflected */

static uint32_t tab32[8][256], tab32c[8][256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void tab_init(uint32_t t[8][256], uint32_t poly)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
        t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int s = 1; s < 8; s++)
            t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
}

static void tabs_init(void)
{
    tab_init(tab32, CRC32_POLY);
    tab_init(tab32c, CRC32C_POLY);
}

static uint32_t crc_tables(const uint32_t t[8][256], uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= crc; /* little-endian words */
        crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
              t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

uint32_t lam_crc32(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&once, tabs_init);
    return crc_tables((const uint32_t(*)[256])tab32, crc, data, len);
}

uint32_t lam_crc32c_sw(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&once, tabs_init);
    return crc_tables((const uint32_t(*)[256])tab32c, crc, data, len);
}
