/* lam_config.c - LAM_* environment variables into a service's config struct, by table. */
#include "lam_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lam_log.h"
#include "lam_mem.h"

static int parse_i64(const char *s, int64_t *out, const char **rest)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno)
        return -1;
    *out = v;
    *rest = end;
    return 0;
}

static int parse_scaled(const char *s, int64_t *out, lam_cfg_type_t type)
{
    const char *rest;
    int64_t v;
    if (parse_i64(s, &v, &rest) < 0)
        return -1;
    int64_t mul = 1;
    if (type == LAM_CFG_SIZE) {
        if (!*rest || !strcasecmp(rest, "b"))
            mul = 1;
        else if (!strcasecmp(rest, "k") || !strcasecmp(rest, "kb") || !strcasecmp(rest, "kib"))
            mul = 1024;
        else if (!strcasecmp(rest, "m") || !strcasecmp(rest, "mb") || !strcasecmp(rest, "mib"))
            mul = 1024 * 1024;
        else if (!strcasecmp(rest, "g") || !strcasecmp(rest, "gb") || !strcasecmp(rest, "gib"))
            mul = 1024LL * 1024 * 1024;
        else
            return -1;
    } else {
        if (!*rest)
            mul = type == LAM_CFG_SEC ? 1000 : 1;
        else if (!strcmp(rest, "ms"))
            mul = 1;
        else if (!strcmp(rest, "s"))
            mul = 1000;
        else if (!strcmp(rest, "m"))
            mul = 60000;
        else if (!strcmp(rest, "h"))
            mul = 3600000;
        else
            return -1;
    }
    if (__builtin_mul_overflow(v, mul, out))
        return -1;
    return 0;
}

int lam_addr_parse(const char *s, lam_addr_t *addr)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -1;
    size_t hlen = (size_t)(colon - s);
    const char *h = s;
    if (h[0] == '[') {
        if (hlen < 3 || h[hlen - 1] != ']')
            return -1;
        h++;
        hlen -= 2;
    }
    if (hlen >= sizeof(addr->host))
        return -1;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port < 1 || port > 65535)
        return -1;
    memcpy(addr->host, h, hlen);
    addr->host[hlen] = '\0';
    addr->port = (int)port;
    return 0;
}

static int scheme_ok(const char *url, const char *schemes)
{
    const char *p = schemes;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (!strncmp(url, p, n) && !strncmp(url + n, "://", 3))
            return 1;
        if (!bar)
            break;
        p = bar + 1;
    }
    return 0;
}

static int load_one(const lam_config_entry_t *e, void *cfg, const char *val, char *errstr, size_t errstr_size)
{
    char *field = (char *)cfg + e->offset;
    int64_t v = 0;
    switch (e->type) {
    case LAM_CFG_STR:
    case LAM_CFG_URL:
        if (val && e->type == LAM_CFG_URL && !scheme_ok(val, e->extra)) {
            snprintf(errstr, errstr_size, "%s: not a %s:// URL: \"%s\"", e->name, e->extra, val);
            return -1;
        }
        *(char **)field = val ? lam_strdup(val) : NULL;
        return 0;
    case LAM_CFG_ADDR:
        if (lam_addr_parse(val, (lam_addr_t *)field) < 0) {
            snprintf(errstr, errstr_size, "%s: not host:port: \"%s\"", e->name, val);
            return -1;
        }
        return 0;
    case LAM_CFG_LEVEL:
        v = lam_log_level_parse(val);
        if (v < 0) {
            snprintf(errstr, errstr_size, "%s: not one of debug, info, warn, error: \"%s\"", e->name, val);
            return -1;
        }
        break;
    case LAM_CFG_BOOL:
        if (!strcasecmp(val, "1") || !strcasecmp(val, "true") || !strcasecmp(val, "yes") || !strcasecmp(val, "on"))
            v = 1;
        else if (!strcasecmp(val, "0") || !strcasecmp(val, "false") || !strcasecmp(val, "no") ||
                 !strcasecmp(val, "off"))
            v = 0;
        else {
            snprintf(errstr, errstr_size, "%s: not a boolean: \"%s\"", e->name, val);
            return -1;
        }
        break;
    case LAM_CFG_INT: {
        const char *rest;
        if (parse_i64(val, &v, &rest) < 0 || *rest) {
            snprintf(errstr, errstr_size, "%s: not an integer: \"%s\"", e->name, val);
            return -1;
        }
        break;
    }
    case LAM_CFG_SIZE:
    case LAM_CFG_MS:
    case LAM_CFG_SEC:
        if (parse_scaled(val, &v, e->type) < 0) {
            snprintf(errstr, errstr_size, "%s: not a %s: \"%s\"", e->name,
                     e->type == LAM_CFG_SIZE ? "size (e.g. 16MiB)" : "duration (e.g. 500ms, 5s)", val);
            return -1;
        }
        break;
    }
    if ((e->min || e->max) && (v < e->min || v > e->max)) {
        snprintf(errstr, errstr_size, "%s: %lld is out of range [%lld, %lld]", e->name, (long long)v,
                 (long long)e->min, (long long)e->max);
        return -1;
    }
    *(int64_t *)field = v;
    return 0;
}

int lam_config_load(const lam_config_entry_t *table, void *cfg, char *errstr, size_t errstr_size)
{
    for (const lam_config_entry_t *e = table; e->name; e++) {
        const char *val = getenv(e->name);
        if (val && !*val)
            val = NULL;
        if (!val)
            val = e->def;
        if (!val && e->type != LAM_CFG_STR && e->type != LAM_CFG_URL) {
            snprintf(errstr, errstr_size, "%s: required", e->name);
            return -1;
        }
        if (load_one(e, cfg, val, errstr, errstr_size) < 0)
            return -1;
    }
    return 0;
}

void lam_config_free(const lam_config_entry_t *table, void *cfg)
{
    if (!cfg)
        return;
    for (const lam_config_entry_t *e = table; e->name; e++) {
        if (e->type == LAM_CFG_STR || e->type == LAM_CFG_URL) {
            char **p = (char **)((char *)cfg + e->offset);
            lam_free(*p);
            *p = NULL;
        }
    }
}

void lam_config_print_table(const char *service, const lam_config_entry_t *table)
{
    for (const lam_config_entry_t *e = table; e->name; e++)
        printf("| `%s` | %s | `%s` | %s |\n", e->name, service, e->def ? e->def : "", e->desc);
}

void lam_config_init_or_exit(const char *service, const lam_config_entry_t *table, void *cfg, int argc,
                             char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config-table")) {
            lam_config_print_table(service, table);
            exit(0);
        }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("%s: configured by environment variables:\n", service);
            for (const lam_config_entry_t *e = table; e->name; e++)
                printf("  %-24s %s (default: %s)\n", e->name, e->desc, e->def ? e->def : "unset");
            exit(0);
        }
    }
    char err[512];
    if (lam_config_load(table, cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: configuration error: %s\n", service, err);
        exit(2);
    }
    const char *lvl = getenv("LAM_LOG_LEVEL");
    int level = lvl && *lvl ? lam_log_level_parse(lvl) : LAM_LOG_INFO;
    lam_log_init(service, level < 0 ? LAM_LOG_INFO : (lam_log_level_t)level);
}
