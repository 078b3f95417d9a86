/* lam_crc.c - table-driven CRC-32 (slicing-by-8): 8 bytes per step, 8 KB of tables per polynomial. */
#include "lam_crc.h"

#include <string.h>

void lam_crc_tab_init(lam_crc_tab_t *tab, uint32_t poly)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
        tab->t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int s = 1; s < 8; s++)
            tab->t[s][i] = (tab->t[s - 1][i] >> 8) ^ tab->t[0][tab->t[s - 1][i] & 0xff];
}

uint32_t lam_crc(const lam_crc_tab_t *tab, uint32_t crc, const void *data, size_t len)
{
    const uint32_t(*t)[256] = tab->t;
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
