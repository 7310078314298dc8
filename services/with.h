/* with.h - reading a handler's `with:` options (the stage's free-form
 * configuration, docs/stages.md): strings, durations, API keys from the
 * environment, base URLs. Every handler and the Lua API read their options
 * through these, so the rules (and the error texts) are the same for all.
 */
#ifndef SL_WITH_H
#define SL_WITH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The string option `key` of `with`, or dflt when it is absent or not a
 * string (borrowed from `with`). */
const char *sl_with_str(const json_t *with, const char *key, const char *dflt);

/* Checks that each of the NULL-terminated keys that `with` has is a
 * string. Returns 0 or -SL_EINVAL with "with.<key>: expected a string". */
int sl_with_strings(const json_t *with, const char *const *keys, char *err,
                    size_t errlen);

/* A duration option of `with`: a string such as "250ms", "30s", "5m", or an
 * integer number of milliseconds; *ms = dflt when absent. Returns 0 or
 * -SL_EINVAL with a message naming the key. */
int sl_with_duration(const json_t *with, const char *key, int64_t dflt,
                     int64_t *ms, char *err, size_t errlen);

/* The API key for a provider: the value of the environment variable named
 * by with.api_key_env (default dflt_env). A key written into `with`
 * itself (api_key, key, token) is refused: keys live only in the
 * environment. Returns 0 with *key = the environment's string (NULL when
 * unset or empty; never copy it anywhere that is logged or stored), or
 * -SL_EINVAL. */
int sl_with_key(const json_t *with, const char *dflt_env, const char **key,
                char *err, size_t errlen);

/* Joins with.base_url (default dflt_base, trailing slashes dropped) and
 * path into buf. Returns 0, or -SL_EINVAL when the base is not an http(s)
 * URL or does not fit. */
int sl_with_url(const json_t *with, const char *dflt_base, const char *path,
                char *buf, size_t len, char *err, size_t errlen);

#endif
