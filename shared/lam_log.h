/* lam_log.h - one-line logfmt logging to stderr, level from LAM_LOG_LEVEL. */
#ifndef LAM_LOG_H
#define LAM_LOG_H

typedef enum { LAM_LOG_DEBUG = 0, LAM_LOG_INFO, LAM_LOG_WARN, LAM_LOG_ERROR } lam_log_level_t;

/** Set the service name printed on every line (a static string) and the minimum level. */
void lam_log_init(const char *service, lam_log_level_t level);
/** Parse "debug|info|warn|error"; -1 when unknown. */
int lam_log_level_parse(const char *s);
/** Log one line: `ts=... level=... service=... <fmt>`; fmt should be logfmt (msg="..." k=v). */
void lam_log(lam_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int lam_log_enabled(lam_log_level_t level);

#define lam_debug(...) do { if (lam_log_enabled(LAM_LOG_DEBUG)) lam_log(LAM_LOG_DEBUG, __VA_ARGS__); } while (0)
#define lam_info(...) lam_log(LAM_LOG_INFO, __VA_ARGS__)
#define lam_warn(...) lam_log(LAM_LOG_WARN, __VA_ARGS__)
#define lam_error(...) lam_log(LAM_LOG_ERROR, __VA_ARGS__)

#endif
