/* test_buf.c - the growable buffer: appends, printf, integers, detach, reading a file descriptor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lam_buf.h"
#include "lam_mem.h"

static void test_append_and_format(void **st)
{
    (void)st;
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append(&b, "a\0b", 3);
    lam_buf_append_str(&b, "cd");
    lam_buf_append_char(&b, 'e');
    lam_buf_printf(&b, "%d-%s", 42, "x");
    lam_buf_append_i64(&b, INT64_MIN);
    lam_buf_append_i64(&b, 0);
    assert_int_equal(b.len, 3 + 2 + 1 + 4 + 20 + 1);
    assert_memory_equal(b.data, "a\0bcde42-x-92233720368547758080", b.len);
    assert_int_equal(b.data[b.len], '\0');
    lam_buf_clear(&b);
    assert_int_equal(b.len, 0);
    size_t n;
    char *d = lam_buf_detach(&b, &n);
    assert_int_equal(n, 0);
    assert_null(b.data);
    lam_free(d);
    lam_buf_free(&b);
}

static void test_read_fd(void **st)
{
    (void)st;
    int p[2];
    assert_int_equal(pipe(p), 0);
    char data[100000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + i % 26);
    if (fork() == 0) { /* a writer in pieces, so the reader sees short reads */
        close(p[0]);
        for (size_t off = 0; off < sizeof(data); off += 7000)
            if (write(p[1], data + off, sizeof(data) - off < 7000 ? sizeof(data) - off : 7000) < 0)
                _exit(1);
        _exit(0);
    }
    close(p[1]);
    lam_buf_t b = LAM_BUF_INIT;
    lam_buf_append_str(&b, "head:");
    assert_int_equal(lam_buf_read_fd(&b, p[0], 60000), 60000); /* stops at max */
    assert_int_equal(lam_buf_read_fd(&b, p[0], SIZE_MAX), 40000); /* then to end of file */
    assert_int_equal(b.len, 5 + sizeof(data));
    assert_memory_equal(b.data + 5, data, sizeof(data));
    close(p[0]);
    assert_int_equal(lam_buf_read_fd(&b, p[0], 10), -1); /* closed descriptor */
    lam_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_format),
        cmocka_unit_test(test_read_fd),
    };
    return cmocka_run_group_tests_name("test_buf", tests, NULL, NULL);
}
