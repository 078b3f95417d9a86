/* test_crc.c - the slicing-by-8 CRC for both polynomials lam uses: check values, continuation, and
 * agreement with the bit-at-a-time definition over every alignment and tail length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lam_crc.h"

static uint32_t crc_bitwise(uint32_t poly, const uint8_t *p, size_t len)
{
    uint32_t c = ~0u;
    while (len--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
    }
    return ~c;
}

static void test_check_values(void **st)
{
    (void)st;
    /* the catalogue's check values: the CRC of the nine ASCII digits */
    assert_int_equal(lam_crc32(0, "123456789", 9), 0xCBF43926u);
    assert_int_equal(lam_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(lam_crc32(lam_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
    assert_int_equal(lam_crc32c_sw(lam_crc32c_sw(0, "1234", 4), "56789", 5), 0xE3069283u);
    assert_int_equal(lam_crc32(0, "", 0), 0);
}

static void test_matches_bitwise(void **st)
{
    (void)st;
    uint8_t buf[80];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; off + len <= sizeof(buf); len++) {
            assert_int_equal(lam_crc32(0, buf + off, len), crc_bitwise(0xEDB88320u, buf + off, len));
            assert_int_equal(lam_crc32c_sw(0, buf + off, len), crc_bitwise(0x82F63B78u, buf + off, len));
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_values),
        cmocka_unit_test(test_matches_bitwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
