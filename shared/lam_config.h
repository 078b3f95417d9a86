/* lam_config.h - declarative configuration tables read from LAM_* environment variables. */
#ifndef LAM_CONFIG_H
#define LAM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    LAM_CFG_STR,   /* char *            any non-empty string */
    LAM_CFG_URL,   /* char *            URL whose scheme is one of entry->extra ("redis" or "postgresql|postgres") */
    LAM_CFG_INT,   /* int64_t           integer in [min, max] */
    LAM_CFG_SIZE,  /* int64_t           bytes, with optional K/M/G/KiB/MiB/GiB suffix */
    LAM_CFG_MS,    /* int64_t           milliseconds; suffix ms, s, m, h (plain number = ms) */
    LAM_CFG_SEC,   /* int64_t           milliseconds; suffix ms, s, m, h (plain number = seconds) */
    LAM_CFG_BOOL,  /* int64_t           1/0, true/false, yes/no, on/off */
    LAM_CFG_ADDR,  /* lam_addr_t        host:port (port 1..65535) */
    LAM_CFG_LEVEL, /* int64_t           log level debug|info|warn|error */
} lam_cfg_type_t;

typedef struct lam_addr {
    char host[256];
    int port;
} lam_addr_t;

typedef struct lam_config_entry {
    const char *name;    /* environment variable, e.g. "LAM_KAFKA_BROKERS" */
    lam_cfg_type_t type;
    const char *def;     /* default as text; NULL = empty/unset (only STR/URL may be unset) */
    size_t offset;       /* offsetof() the field in the service's config struct */
    const char *desc;    /* one line for the README table */
    int64_t min, max;    /* bounds for INT/SIZE/MS; 0,0 = none */
    const char *extra;   /* URL schemes, '|'-separated */
} lam_config_entry_t;

/**
 * Fill cfg from the environment following table (terminated by an entry with name == NULL).
 * Returns 0, or -1 with errstr naming the variable: `LAM_INGEST_MAX_BODY: not a size: "lots"`.
 * Strings are allocated; release them with lam_config_free().
 */
int lam_config_load(const lam_config_entry_t *table, void *cfg, char *errstr, size_t errstr_size);
void lam_config_free(const lam_config_entry_t *table, void *cfg);

/** Print the table as markdown rows: | variable | default | description | (for the README). */
void lam_config_print_table(const char *service, const lam_config_entry_t *table);

/**
 * The start of every service's main(): handles --help and --config-table (prints and exits 0),
 * loads the table, and on a bad value prints `<service>: <error>` and exits with code 2.
 * Also initialises logging from LAM_LOG_LEVEL.
 */
void lam_config_init_or_exit(const char *service, const lam_config_entry_t *table, void *cfg, int argc,
                             char **argv);

/** Parse "host:port" / "[v6]:port" into addr. */
int lam_addr_parse(const char *s, lam_addr_t *addr);

/* Entries every service shares, so names, defaults and descriptions are written once. */
#define LAM_CFG_ENTRY_KAFKA(T, F)                                                                    \
    {"LAM_KAFKA_BROKERS", LAM_CFG_STR, "127.0.0.1:9092", offsetof(T, F.kafka_brokers),             \
     "Kafka bootstrap servers (host:port,...)"},                                                    \
    {"LAM_KAFKA_TOPIC", LAM_CFG_STR, "events", offsetof(T, F.kafka_topic), "Kafka topic of events"}, \
    {"LAM_KAFKA_PARTITIONS", LAM_CFG_INT, "6", offsetof(T, F.kafka_partitions),                    \
     "partitions when lam creates the topic", 1, 10000}
#define LAM_CFG_ENTRY_REDIS(T, F)                                                                   \
    {"LAM_REDIS_URL", LAM_CFG_URL, "redis://127.0.0.1:6379", offsetof(T, F.redis_url),            \
     "Redis URL redis://[:password@]host:port[/db]", 0, 0, "redis"}
#define LAM_CFG_ENTRY_PG(T, F)                                                                      \
    {"LAM_PG_URL", LAM_CFG_URL, "postgresql://lam@127.0.0.1:5432/lam", offsetof(T, F.pg_url),     \
     "PostgreSQL connection URL", 0, 0, "postgresql|postgres"}
#define LAM_CFG_ENTRY_VIEWS(T, F)                                                                   \
    {"LAM_VIEWS", LAM_CFG_STR, "shared/views.json", offsetof(T, F.views_path), "views file"}
#define LAM_CFG_ENTRY_LOG(T, F)                                                                     \
    {"LAM_LOG_LEVEL", LAM_CFG_LEVEL, "info", offsetof(T, F.log_level), "debug, info, warn or error"}

/** The fields the LAM_CFG_ENTRY_* macros fill; embed as a member of the service's config. */
typedef struct lam_common_config {
    char *kafka_brokers;
    char *kafka_topic;
    int64_t kafka_partitions;
    char *redis_url;
    char *pg_url;
    char *views_path;
    int64_t log_level;
} lam_common_config_t;

#endif
