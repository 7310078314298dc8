/* log.h - structured log lines (logfmt or JSON) on stderr.
 *
 * One line per event: time, level, message, then key=value fields. Values
 * that look like secrets (the values of every *_API_KEY / *_TOKEN /
 * *SECRET* / *PASSWORD* environment variable) are replaced by "[redacted]"
 * wherever they appear, so a key echoed in an error body never reaches a
 * log line. Thread-safe: each line is written with one write(2).
 */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stddef.h>

enum { SL_LOG_DEBUG = 0, SL_LOG_INFO = 1, SL_LOG_WARN = 2, SL_LOG_ERROR = 3 };

typedef enum { SL_LOGFMT = 0, SL_LOGJSON = 1 } sl_log_format;

/* Configures the logger; call once before threads start. */
void sl_log_init(sl_log_format fmt, int min_level);

/* Logs msg with fields given as NULL-terminated key, value pairs of
 * strings, e.g. sl_log(SL_LOG_INFO, "job done", "job", id, "stage", s, NULL).
 */
void sl_log(int level, const char *msg, ...) __attribute__((sentinel));

/* Replaces every known secret in buf (NUL-terminated) with "[redacted]",
 * in place, truncating if needed. Used for log lines and last_error. */
void sl_redact(char *buf, size_t cap);

/* Returns a malloc'd copy of s with every known secret replaced (caller
 * frees), or NULL when out of memory. Unlike sl_redact it never truncates;
 * for JSON text written to the database (checkpoints, outputs). */
char *sl_redact_dup(const char *s);

/* Re-reads the secret values from the environment (tests call it after
 * setenv). sl_log_init() calls it. */
void sl_redact_reload(void);

#endif
