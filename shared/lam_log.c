/* lam_log.c - logfmt lines to stderr, one write() per line so threads never interleave. */
#include "lam_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *g_service = "lam";
static lam_log_level_t g_level = LAM_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void lam_log_init(const char *service, lam_log_level_t level)
{
    g_service = service;
    g_level = level;
}

int lam_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (!strcasecmp(s, level_names[i]))
            return i;
    if (!strcasecmp(s, "warning"))
        return LAM_LOG_WARN;
    return -1;
}

int lam_log_enabled(lam_log_level_t level)
{
    return level >= g_level;
}

void lam_log(lam_log_level_t level, const char *fmt, ...)
{
    if (level < g_level)
        return;
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s service=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), level_names[level], g_service);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
