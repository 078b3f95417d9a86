/* lam_kafka.h - librdkafka helpers: producer/consumer set-up, topic creation, reachability. */
#ifndef LAM_KAFKA_H
#define LAM_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

/** Header carried by cut markers (DESIGN.md section 3); its value is the run number in decimal. */
#define LAM_CUT_HEADER "lam-cut"

/**
 * A new configuration with bootstrap.servers = brokers, plus every LAM_KAFKA_X_<NAME> environment
 * variable as librdkafka property <name> (lower case, '_' -> '.'), e.g. LAM_KAFKA_X_LINGER_MS=5.
 * Returns NULL with errstr on a bad property. The caller owns the conf (or hands it to rd_kafka_new).
 */
rd_kafka_conf_t *lam_kafka_conf_new(const char *brokers, char *errstr, size_t errstr_size);
/** Set one property; -1 with errstr on failure. */
int lam_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                       size_t errstr_size);
/** Apply LAM_KAFKA_X_* overrides (called last, so operators win over our defaults). */
int lam_kafka_conf_apply_env(rd_kafka_conf_t *conf, char *errstr, size_t errstr_size);

/**
 * A durable producer: acks=all, enable.idempotence=true. conf may carry extra settings
 * (delivery report callback, opaque) and is consumed in every case. NULL with errstr on failure.
 */
rd_kafka_t *lam_kafka_producer_new(rd_kafka_conf_t *conf, char *errstr, size_t errstr_size);
/**
 * A consumer in group `group` with auto-commit off and auto.offset.reset=earliest.
 * conf is consumed in every case.
 */
rd_kafka_t *lam_kafka_consumer_new(rd_kafka_conf_t *conf, const char *group, char *errstr, size_t errstr_size);

/** 0 when a metadata request is answered within timeout_ms, else -1 and errstr. */
int lam_kafka_ping(rd_kafka_t *rk, int timeout_ms, char *errstr, size_t errstr_size);
/** Number of partitions of topic, or -1 (errstr) when it does not exist or Kafka is unreachable. */
int lam_kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms, char *errstr, size_t errstr_size);
/** Create topic with `partitions` partitions unless it exists. 0 on success or when it exists. */
int lam_kafka_ensure_topic(rd_kafka_t *rk, const char *topic, int partitions, int timeout_ms, char *errstr,
                           size_t errstr_size);

#endif
