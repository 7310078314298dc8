/* with.c - reading a handler's `with:` options (with.h). */
#include "with.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"

const char *sl_with_str(const json_t *with, const char *key, const char *dflt) {
    json_t *v = json_object_get(with, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

int sl_with_strings(const json_t *with, const char *const *keys, char *err,
                    size_t errlen) {
    for (; *keys; keys++) {
        json_t *v = json_object_get(with, *keys);
        if (v && !json_is_string(v)) {
            snprintf(err, errlen, "with.%s: expected a string", *keys);
            return -SL_EINVAL;
        }
    }
    return 0;
}

int sl_with_duration(const json_t *with, const char *key, int64_t dflt,
                     int64_t *ms, char *err, size_t errlen) {
    json_t *v = json_object_get(with, key);
    *ms = dflt;
    if (!v) return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *ms = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v) && sl_duration_parse(json_string_value(v), ms) == 0)
        return 0;
    snprintf(err, errlen,
             "with.%s: expected a duration such as \"30s\" or \"250ms\"", key);
    return -SL_EINVAL;
}

int sl_with_key(const json_t *with, const char *dflt_env, const char **key,
                char *err, size_t errlen) {
    static const char *const literal[] = {"api_key", "key", "token",
                                          "authorization"};
    *key = NULL;
    for (size_t i = 0; i < sizeof literal / sizeof literal[0]; i++)
        if (json_object_get(with, literal[i])) {
            snprintf(err, errlen,
                     "with.%s: API keys are never written in pipeline files; "
                     "name the environment variable that holds it with "
                     "api_key_env (default %s)",
                     literal[i], dflt_env);
            return -SL_EINVAL;
        }
    json_t *v = json_object_get(with, "api_key_env");
    const char *name = dflt_env;
    if (v) {
        if (!json_is_string(v) || !*json_string_value(v)) {
            snprintf(err, errlen,
                     "with.api_key_env: expected the name of an environment "
                     "variable");
            return -SL_EINVAL;
        }
        name = json_string_value(v);
    }
    const char *k = getenv(name);
    *key = k && *k ? k : NULL;
    return 0;
}

int sl_with_url(const json_t *with, const char *dflt_base, const char *path,
                char *buf, size_t len, char *err, size_t errlen) {
    json_t *v = json_object_get(with, "base_url");
    const char *base = dflt_base;
    if (v) {
        if (!json_is_string(v)) {
            snprintf(err, errlen, "with.base_url: expected a URL string");
            return -SL_EINVAL;
        }
        base = json_string_value(v);
    }
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    if ((strncmp(base, "http://", 7) != 0 &&
         strncmp(base, "https://", 8) != 0)) {
        snprintf(err, errlen,
                 "with.base_url: expected an http:// or https:// URL, not "
                 "'%.200s'",
                 base);
        return -SL_EINVAL;
    }
    int n = snprintf(buf, len, "%.*s%s", (int)bl, base, path);
    if (n < 0 || (size_t)n >= len) {
        snprintf(err, errlen, "with.base_url: too long");
        return -SL_EINVAL;
    }
    return 0;
}
