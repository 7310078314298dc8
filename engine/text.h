/* text.h - the one sanitiser for text that leaves the engine.
 *
 * Every text written to the database (last_error, progress details,
 * checkpoints, outputs, handler rows) or to a log line comes from
 * somewhere the engine does not control: a Lua string, a provider's body,
 * a server's or a tool's message. Before it leaves, it passes through
 * here, which makes it
 *   - valid UTF-8: each ill-formed sequence (the longest invalid prefix, as
 *     Unicode recommends) becomes U+FFFD;
 *   - free of NUL: a NUL byte becomes U+FFFD too (PostgreSQL text and
 *     jsonb cannot hold it, and a C string would end there);
 *   - free of secrets: the value of every environment variable whose name
 *     holds API_KEY, TOKEN, SECRET or PASSWORD (6 bytes or longer) becomes
 *     "[redacted]". A secret of 16 bytes or more is redacted wherever it
 *     appears. A shorter one (a password such as "postgres") is redacted
 *     only where it stands as a whole token: not when a letter, digit or
 *     '_' continues it on a side where the secret itself ends in one, so
 *     "postgresql" stays as it is while "user=postgres password=postgres,"
 *     loses both;
 *   - bounded: when it must be shortened it is cut between whole
 *     characters (never inside a character or a "[redacted]") and ends
 *     with "…" (U+2026) to show that it was.
 * Redaction happens before the cut, so a secret near the limit is never
 * half shown. Sanitising sanitised text changes nothing.
 *
 * Thread-safe; the secrets are read from the environment once
 * (sl_redact_reload) and shared by every thread.
 */
#ifndef SL_TEXT_H
#define SL_TEXT_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>

/* Writes the safe form of the len bytes at src (NUL bytes included) into
 * dst, at most cap - 1 bytes plus a terminating NUL. Returns the length
 * written. cap 0 writes nothing; dst and src must not overlap. */
size_t sl_text_copy(char *dst, size_t cap, const char *src, size_t len);

/* Returns the safe form of the len bytes at src as a malloc'd string
 * (caller frees), at most max bytes long (0: no limit), or NULL when out
 * of memory. */
char *sl_text_dup(const char *src, size_t len, size_t max);

/* Formats like snprintf, then writes the safe form of the whole result
 * into dst (cap bytes), so a long argument is cut between characters at
 * the end rather than anywhere. Returns the length written. */
size_t sl_text_format(char *dst, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
size_t sl_text_vformat(char *dst, size_t cap, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Returns a new JSON value: a deep copy of v in which every string and
 * every object key is in its safe form (no NUL, no secret, no length
 * limit). NULL when out of memory or v is NULL. */
json_t *sl_text_json(const json_t *v);

/* JSON text of the safe copy of v (sl_text_json), for the database.
 * flags as for json_dumps, without JSON_REAL_PRECISION: reals are written
 * with 15 significant digits when that reads back as the same double (so
 * 0.55 is stored as 0.55, not 0.55000000000000004), else with 17.
 * Returns a malloc'd string or NULL when out of memory. */
char *sl_text_json_dumps(const json_t *v, size_t flags);

/* Non-zero when the len bytes at s are valid UTF-8 without NUL. */
int sl_text_valid(const char *s, size_t len);

/* ---- the secrets ----------------------------------------------------- */

/* Re-reads the secret values from the environment (tests call it after
 * setenv). sl_log_init() calls it. */
void sl_redact_reload(void);

/* Makes the NUL-terminated text in buf (cap bytes) safe in place
 * (sl_text_copy of itself): for fixed buffers such as last_error and
 * command-line messages. */
void sl_redact(char *buf, size_t cap);

/* Returns a malloc'd safe copy of s without a length limit (caller frees),
 * or NULL when out of memory. */
char *sl_redact_dup(const char *s);

#endif
