/* log.h - structured log lines (logfmt or JSON) on stderr.
 *
 * One line per event: time, level, message, then key=value fields. Every
 * message, key and value passes the sanitiser (text.h) first: valid
 * UTF-8, no NUL, every secret "[redacted]", long values cut between
 * characters. A JSON line is one object built with jansson, so it always
 * parses; numbers and booleans are typed. A logfmt line quotes and
 * escapes every value that needs it. Thread-safe: each line is written
 * with one write(2).
 */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <jansson.h>
#include <stddef.h>

#include "text.h" /* sl_redact*, for the callers that include log.h */

enum { SL_LOG_DEBUG = 0, SL_LOG_INFO = 1, SL_LOG_WARN = 2, SL_LOG_ERROR = 3 };

typedef enum { SL_LOGFMT = 0, SL_LOGJSON = 1 } sl_log_format;

/* Configures the logger; call once before threads start. */
void sl_log_init(sl_log_format fmt, int min_level);

/* Logs msg with fields given as NULL-terminated key, value pairs of
 * strings, e.g. sl_log(SL_LOG_INFO, "job done", "job", id, "stage", s, NULL).
 * A NULL key ends the list; a NULL value is "". In JSON lines a value
 * written as a decimal integer ("3", "-12") becomes a number and "true"
 * or "false" a boolean. */
void sl_log(int level, const char *msg, ...) __attribute__((sentinel));

/* Logs msg with the members of the JSON object fields (borrowed; NULL for
 * none) as typed fields: strings, numbers and booleans as they are, other
 * values as their JSON text. A field named like one already on the line
 * (ts, level, msg, or an earlier one) is dropped. */
void sl_log_fields(int level, const char *msg, const json_t *fields);

#endif
