/* itest_plumbing.c - the shared Kafka, Redis and PostgreSQL helpers against the real servers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lam_kafka.h"
#include "lam_pg.h"
#include "lam_redis.h"
#include "lam_service.h"
#include "testlib.h"

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    int *state = opaque;
    *state = m->err ? -1 : 1;
}

static void test_kafka_produce_then_consume_in_group(void **st)
{
    (void)st;
    char err[512], topic[64], group[64], payload[128];
    snprintf(topic, sizeof(topic), "itest-plumbing-%d", (int)getpid());
    snprintf(group, sizeof(group), "itest-group-%d", (int)getpid());
    snprintf(payload, sizeof(payload), "{\"id\":\"e1\",\"ts\":1,\"type\":\"t\",\"pid\":%d}", (int)getpid());
    const char *brokers = lam_test_env("LAM_KAFKA_BROKERS", "127.0.0.1:9092");

    int delivered = 0;
    rd_kafka_conf_t *conf = lam_kafka_conf_new(brokers, err, sizeof(err));
    assert_non_null(conf);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &delivered);
    rd_kafka_t *p = lam_kafka_producer_new(conf, err, sizeof(err));
    assert_non_null(p);
    assert_int_equal(lam_kafka_ping(p, 5000, err, sizeof(err)), 0);
    assert_int_equal(lam_kafka_ensure_topic(p, topic, 3, 10000, err, sizeof(err)), 0);
    /* A second call on an existing topic is not an error. */
    assert_int_equal(lam_kafka_ensure_topic(p, topic, 3, 10000, err, sizeof(err)), 0);
    assert_int_equal(lam_kafka_partition_count(p, topic, 5000, err, sizeof(err)), 3);

    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);
    rd_kafka_header_add(hdrs, LAM_CUT_HEADER, -1, "7", 1);
    rd_kafka_resp_err_t perr =
        rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY("e1", 2),
                          RD_KAFKA_V_VALUE(payload, strlen(payload)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
    assert_int_equal(perr, RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < 200 && !delivered; i++)
        rd_kafka_poll(p, 50);
    assert_int_equal(delivered, 1);

    conf = lam_kafka_conf_new(brokers, err, sizeof(err));
    rd_kafka_t *c = lam_kafka_consumer_new(conf, group, err, sizeof(err));
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    assert_int_equal(rd_kafka_subscribe(c, subs), 0);
    rd_kafka_topic_partition_list_destroy(subs);
    int found = 0;
    int64_t deadline = lam_now_mono_ms() + 30000;
    while (!found && lam_now_mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (!m)
            continue;
        if (!m->err) {
            assert_int_equal(m->key_len, 2);
            assert_memory_equal(m->key, "e1", 2);
            assert_int_equal(m->len, strlen(payload));
            assert_memory_equal(m->payload, payload, m->len);
            rd_kafka_headers_t *h;
            const void *v;
            size_t vlen;
            assert_int_equal(rd_kafka_message_headers(m, &h), 0);
            assert_int_equal(rd_kafka_header_get_last(h, LAM_CUT_HEADER, &v, &vlen), 0);
            assert_memory_equal(v, "7", 1);
            assert_int_equal(rd_kafka_commit_message(c, m, 0), 0);
            found = 1;
        }
        rd_kafka_message_destroy(m);
    }
    assert_true(found);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    rd_kafka_destroy(p);
}

static void test_kafka_unreachable_is_reported(void **st)
{
    (void)st;
    char err[512];
    rd_kafka_conf_t *conf = lam_kafka_conf_new("127.0.0.1:1", err, sizeof(err));
    rd_kafka_t *p = lam_kafka_producer_new(conf, err, sizeof(err));
    assert_non_null(p);
    assert_int_equal(lam_kafka_ping(p, 500, err, sizeof(err)), -1);
    assert_true(strlen(err) > 0);
    rd_kafka_destroy(p);
}

static void test_kafka_passthrough_property(void **st)
{
    (void)st;
    char err[512];
    setenv("LAM_KAFKA_X_NO_SUCH_PROPERTY", "1", 1);
    rd_kafka_conf_t *conf = lam_kafka_conf_new("127.0.0.1:1", err, sizeof(err));
    assert_null(lam_kafka_producer_new(conf, err, sizeof(err)));
    assert_non_null(strstr(err, "LAM_KAFKA_X_NO_SUCH_PROPERTY"));
    unsetenv("LAM_KAFKA_X_NO_SUCH_PROPERTY");
    setenv("LAM_KAFKA_X_LINGER_MS", "7", 1);
    conf = lam_kafka_conf_new("127.0.0.1:1", err, sizeof(err));
    assert_int_equal(lam_kafka_conf_apply_env(conf, err, sizeof(err)), 0);
    char val[32];
    size_t vlen = sizeof(val);
    assert_int_equal(rd_kafka_conf_get(conf, "linger.ms", val, &vlen), RD_KAFKA_CONF_OK);
    assert_string_equal(val, "7");
    rd_kafka_conf_destroy(conf);
    unsetenv("LAM_KAFKA_X_LINGER_MS");
}

static void test_redis_binary_safe_roundtrip(void **st)
{
    (void)st;
    char err[512];
    redisContext *r = lam_redis_connect(lam_test_env("LAM_REDIS_URL", "redis://127.0.0.1:6379"), 2000, err,
                                        sizeof(err));
    assert_non_null(r);
    assert_int_equal(lam_redis_ping(r, err, sizeof(err)), 0);
    const char key[] = "itest:plumbing:\x00key";
    const char val[] = "a\x00b\r\n\"c";
    redisReply *rep = redisCommand(r, "SET %b %b", key, sizeof(key) - 1, val, sizeof(val) - 1);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    rep = redisCommand(r, "GET %b", key, sizeof(key) - 1);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_int_equal(rep->len, sizeof(val) - 1);
    assert_memory_equal(rep->str, val, sizeof(val) - 1);
    freeReplyObject(rep);
    redisFree(r);
}

static void test_redis_unreachable_message(void **st)
{
    (void)st;
    char err[512];
    assert_null(lam_redis_connect("redis://127.0.0.1:1", 500, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot reach Redis at 127.0.0.1:1"));
    assert_null(lam_redis_connect("redis://127.0.0.1:6379/notanumber", 500, err, sizeof(err)));
    assert_non_null(strstr(err, "bad database"));
}

static void test_pg_parameterised_roundtrip(void **st)
{
    (void)st;
    char err[512];
    PGconn *pg = lam_pg_connect(lam_test_env("LAM_PG_URL", "postgresql://lam@127.0.0.1:5432/lam"), err, sizeof(err));
    assert_non_null(pg);
    assert_int_equal(lam_pg_exec(pg, "CREATE TEMP TABLE t (k text, v bigint)", 0, NULL, err, sizeof(err)), 0);
    const char *hostile = "x'); DROP TABLE t; --";
    const char *params[2] = {hostile, "42"};
    assert_int_equal(lam_pg_exec(pg, "INSERT INTO t VALUES ($1, $2)", 2, params, err, sizeof(err)), 0);
    PGresult *res = lam_pg_query(pg, "SELECT k, v FROM t WHERE k = $1", 1, params, err, sizeof(err));
    assert_non_null(res);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(PQgetvalue(res, 0, 0), hostile);
    assert_string_equal(PQgetvalue(res, 0, 1), "42");
    PQclear(res);
    assert_null(lam_pg_query(pg, "SELECT * FROM no_such_table", 0, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "no_such_table"));
    PQfinish(pg);
}

static void test_pg_unreachable_message(void **st)
{
    (void)st;
    char err[512];
    assert_null(lam_pg_connect("postgresql://lam@127.0.0.1:1/lam?connect_timeout=2", err, sizeof(err)));
    assert_non_null(strstr(err, "cannot reach PostgreSQL"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kafka_produce_then_consume_in_group),
        cmocka_unit_test(test_kafka_unreachable_is_reported),
        cmocka_unit_test(test_kafka_passthrough_property),
        cmocka_unit_test(test_redis_binary_safe_roundtrip),
        cmocka_unit_test(test_redis_unreachable_message),
        cmocka_unit_test(test_pg_parameterised_roundtrip),
        cmocka_unit_test(test_pg_unreachable_message),
    };
    return cmocka_run_group_tests_name("itest_plumbing", tests, NULL, NULL);
}
