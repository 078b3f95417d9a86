/* lam_kafka.c - librdkafka helpers shared by ingest, speed_layer and batch_layer. */
#include "lam_kafka.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lam_log.h"
#include "lam_mem.h"

extern char **environ;

int lam_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                       size_t errstr_size)
{
    char err[256];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errstr_size, "kafka property %s=%s: %s", name, value, err);
        return -1;
    }
    return 0;
}

int lam_kafka_conf_apply_env(rd_kafka_conf_t *conf, char *errstr, size_t errstr_size)
{
    static const char prefix[] = "LAM_KAFKA_X_";
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, prefix, sizeof(prefix) - 1))
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        const char *n = *e + sizeof(prefix) - 1;
        size_t nlen = (size_t)(eq - n);
        char name[128];
        if (nlen == 0 || nlen >= sizeof(name)) {
            snprintf(errstr, errstr_size, "%.*s: bad librdkafka property name", (int)(eq - *e), *e);
            return -1;
        }
        for (size_t i = 0; i < nlen; i++)
            name[i] = n[i] == '_' ? '.' : (char)tolower((unsigned char)n[i]);
        name[nlen] = '\0';
        char err[256];
        if (lam_kafka_conf_set(conf, name, eq + 1, err, sizeof(err)) < 0) {
            snprintf(errstr, errstr_size, "%.*s: %s", (int)(eq - *e), *e, err);
            return -1;
        }
    }
    return 0;
}

/* librdkafka's own log lines, in our logfmt and at our level (syslog levels: 3 err, 4 warning). */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    lam_log_level_t l = level <= 3 ? LAM_LOG_ERROR : level == 4 ? LAM_LOG_WARN : level <= 6 ? LAM_LOG_INFO
                                                                                          : LAM_LOG_DEBUG;
    if (!lam_log_enabled(l))
        return;
    char msg[1024];
    size_t j = 0;
    for (size_t i = 0; buf[i] && j < sizeof(msg) - 2; i++)
        msg[j++] = buf[i] == '"' ? '\'' : buf[i];
    msg[j] = '\0';
    lam_log(l, "msg=\"kafka: %s\" facility=%s client=%s", msg, fac, rd_kafka_name(rk));
}

rd_kafka_conf_t *lam_kafka_conf_new(const char *brokers, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    if (lam_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, errstr_size) < 0 ||
        lam_kafka_conf_set(conf, "client.id", "lam", errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

static rd_kafka_t *kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errstr, size_t errstr_size)
{
    if (lam_kafka_conf_apply_env(conf, errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk) {
        snprintf(errstr, errstr_size, "kafka client: %s", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

rd_kafka_t *lam_kafka_producer_new(rd_kafka_conf_t *conf, char *errstr, size_t errstr_size)
{
    if (lam_kafka_conf_set(conf, "acks", "all", errstr, errstr_size) < 0 ||
        lam_kafka_conf_set(conf, "enable.idempotence", "true", errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
}

rd_kafka_t *lam_kafka_consumer_new(rd_kafka_conf_t *conf, const char *group, char *errstr, size_t errstr_size)
{
    if (lam_kafka_conf_set(conf, "group.id", group, errstr, errstr_size) < 0 ||
        lam_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, errstr_size) < 0 ||
        lam_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) < 0 ||
        lam_kafka_conf_set(conf, "enable.partition.eof", "false", errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (rk)
        rd_kafka_poll_set_consumer(rk);
    return rk;
}

int lam_kafka_ping(rd_kafka_t *rk, int timeout_ms, char *errstr, size_t errstr_size)
{
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (err) {
        snprintf(errstr, errstr_size, "%s", rd_kafka_err2str(err));
        return -1;
    }
    int nbrokers = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
    if (nbrokers == 0) {
        snprintf(errstr, errstr_size, "no brokers in metadata");
        return -1;
    }
    return 0;
}

int lam_kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms, char *errstr, size_t errstr_size)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (err) {
        snprintf(errstr, errstr_size, "topic %s: %s", topic, rd_kafka_err2str(err));
        return -1;
    }
    int n = -1;
    if (md->topic_cnt == 1 && !md->topics[0].err)
        n = md->topics[0].partition_cnt;
    else
        snprintf(errstr, errstr_size, "topic %s: %s", topic,
                 md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "not found");
    rd_kafka_metadata_destroy(md);
    return n;
}

int lam_kafka_ensure_topic(rd_kafka_t *rk, const char *topic, int partitions, int timeout_ms, char *errstr,
                           size_t errstr_size)
{
    char err[256];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, err, sizeof(err));
    if (!nt) {
        snprintf(errstr, errstr_size, "topic %s: %s", topic, err);
        return -1;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, NULL, 0);
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, NULL, 0);
    rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
    int rc = -1;
    if (!ev) {
        snprintf(errstr, errstr_size, "topic %s: create timed out", topic);
    } else if (rd_kafka_event_error(ev)) {
        snprintf(errstr, errstr_size, "topic %s: %s", topic, rd_kafka_event_error_string(ev));
    } else {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t cnt;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
        rd_kafka_resp_err_t terr = cnt ? rd_kafka_topic_result_error(tr[0]) : RD_KAFKA_RESP_ERR_NO_ERROR;
        if (terr == RD_KAFKA_RESP_ERR_NO_ERROR || terr == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            rc = 0;
        else
            snprintf(errstr, errstr_size, "topic %s: %s", topic, rd_kafka_topic_result_error_string(tr[0]));
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    return rc;
}
