/* test_config.c - the declarative configuration table: types, defaults, bounds, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lam_config.h"

typedef struct cfg {
    lam_common_config_t common;
    lam_addr_t addr;
    int64_t size, ms, sec, n, flag;
    char *opt;
} cfg_t;

static const lam_config_entry_t table[] = {
    LAM_CFG_ENTRY_KAFKA(cfg_t, common),
    LAM_CFG_ENTRY_REDIS(cfg_t, common),
    LAM_CFG_ENTRY_PG(cfg_t, common),
    LAM_CFG_ENTRY_LOG(cfg_t, common),
    {"T_ADDR", LAM_CFG_ADDR, "127.0.0.1:8081", offsetof(cfg_t, addr), "addr"},
    {"T_SIZE", LAM_CFG_SIZE, "16MiB", offsetof(cfg_t, size), "size", 1024, 1LL << 30},
    {"T_MS", LAM_CFG_MS, "10s", offsetof(cfg_t, ms), "ms", 100, 600000},
    {"T_SEC", LAM_CFG_SEC, "3600", offsetof(cfg_t, sec), "sec"},
    {"T_N", LAM_CFG_INT, "2", offsetof(cfg_t, n), "n", 1, 64},
    {"T_FLAG", LAM_CFG_BOOL, "off", offsetof(cfg_t, flag), "flag"},
    {"T_OPT", LAM_CFG_STR, NULL, offsetof(cfg_t, opt), "optional"},
    {NULL}};

static const char *vars[] = {"T_ADDR", "T_SIZE", "T_MS", "T_SEC", "T_N", "T_FLAG", "T_OPT", "LAM_LOG_LEVEL",
                             "LAM_REDIS_URL", "LAM_PG_URL", "LAM_KAFKA_BROKERS", NULL};

static int clear_env(void **st)
{
    (void)st;
    for (int i = 0; vars[i]; i++)
        unsetenv(vars[i]);
    return 0;
}

static int load(cfg_t *c, char *err, size_t n)
{
    memset(c, 0, sizeof(*c));
    int rc = lam_config_load(table, c, err, n);
    return rc;
}

static void test_defaults(void **st)
{
    (void)st;
    cfg_t c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof(err)), 0);
    assert_string_equal(c.common.kafka_brokers, "127.0.0.1:9092");
    assert_string_equal(c.common.kafka_topic, "events");
    assert_int_equal(c.common.kafka_partitions, 6);
    assert_string_equal(c.common.redis_url, "redis://127.0.0.1:6379");
    assert_string_equal(c.addr.host, "127.0.0.1");
    assert_int_equal(c.addr.port, 8081);
    assert_int_equal(c.size, 16 * 1024 * 1024);
    assert_int_equal(c.ms, 10000);
    assert_int_equal(c.sec, 3600000);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.flag, 0);
    assert_null(c.opt);
    lam_config_free(table, &c);
    assert_null(c.common.kafka_brokers);
}

static void test_values_and_suffixes(void **st)
{
    (void)st;
    cfg_t c;
    char err[256];
    setenv("T_ADDR", "[::1]:9", 1);
    setenv("T_SIZE", "2k", 1);
    setenv("T_MS", "250ms", 1);
    setenv("T_SEC", "2m", 1);
    setenv("T_FLAG", "yes", 1);
    setenv("T_OPT", "x", 1);
    setenv("LAM_PG_URL", "postgres://u@h:1/d", 1);
    assert_int_equal(load(&c, err, sizeof(err)), 0);
    assert_string_equal(c.addr.host, "::1");
    assert_int_equal(c.addr.port, 9);
    assert_int_equal(c.size, 2048);
    assert_int_equal(c.ms, 250);
    assert_int_equal(c.sec, 120000);
    assert_int_equal(c.flag, 1);
    assert_string_equal(c.opt, "x");
    lam_config_free(table, &c);
}

static void expect_error(const char *var, const char *val, const char *needle)
{
    cfg_t c;
    char err[256] = "";
    clear_env(NULL);
    setenv(var, val, 1);
    assert_int_equal(load(&c, err, sizeof(err)), -1);
    if (!strstr(err, needle) || strncmp(err, var, strlen(var)))
        fail_msg("%s=%s: got \"%s\", want it to start with the name and contain \"%s\"", var, val, err, needle);
    lam_config_free(table, &c);
}

static void test_errors_name_the_variable(void **st)
{
    (void)st;
    expect_error("T_ADDR", "nowhere", "not host:port");
    expect_error("T_ADDR", "h:0", "not host:port");
    expect_error("T_ADDR", "h:70000", "not host:port");
    expect_error("T_SIZE", "lots", "not a size");
    expect_error("T_SIZE", "1", "out of range");
    expect_error("T_SIZE", "9999999999999999999", "not a size");
    expect_error("T_MS", "5 parsecs", "not a duration");
    expect_error("T_MS", "1h", "out of range");
    expect_error("T_N", "2x", "not an integer");
    expect_error("T_N", "0", "out of range");
    expect_error("T_FLAG", "maybe", "not a boolean");
    expect_error("LAM_LOG_LEVEL", "loud", "not one of");
    expect_error("LAM_REDIS_URL", "http://x", "not a redis:// URL");
    expect_error("LAM_PG_URL", "mysql://x", "URL");
    clear_env(NULL);
}

static void test_empty_means_default(void **st)
{
    (void)st;
    cfg_t c;
    char err[256];
    setenv("T_N", "", 1);
    assert_int_equal(load(&c, err, sizeof(err)), 0);
    assert_int_equal(c.n, 2);
    lam_config_free(table, &c);
}

static void test_addr_parse(void **st)
{
    (void)st;
    lam_addr_t a;
    assert_int_equal(lam_addr_parse("0.0.0.0:8080", &a), 0);
    assert_string_equal(a.host, "0.0.0.0");
    assert_int_equal(lam_addr_parse(":8080", &a), -1);
    assert_int_equal(lam_addr_parse("host:", &a), -1);
    assert_int_equal(lam_addr_parse("[::1:80", &a), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_values_and_suffixes, clear_env),
        cmocka_unit_test_setup(test_errors_name_the_variable, clear_env),
        cmocka_unit_test_setup(test_empty_means_default, clear_env),
        cmocka_unit_test(test_addr_parse),
    };
    return cmocka_run_group_tests_name("test_config", tests, NULL, NULL);
}
