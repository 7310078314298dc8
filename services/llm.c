/* llm.c - OpenAI-compatible chat completions with structured outputs
 * (llm.h). */
#include "llm.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"

#define DEFAULT_BASE "https://api.openai.com"
#define DEFAULT_LLM_TIMEOUT_MS 120000

/* ---- configuration --------------------------------------------------------
 */

int sl_llm_cfg_from_with(const json_t *with, sl_llm_cfg *cfg, char *err,
                         size_t errlen) {
    int rc;
    memset(cfg, 0, sizeof *cfg);
    json_t *v = json_object_get(with, "base_url");
    const char *base = json_is_string(v) ? json_string_value(v) : DEFAULT_BASE;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    /* OPENAI_BASE_URL is often spelled with its /v1 suffix. */
    const char *path = bl >= 3 && strncmp(base + bl - 3, "/v1", 3) == 0
                           ? "/chat/completions"
                           : "/v1/chat/completions";
    if ((rc = sl_with_url(with, DEFAULT_BASE, path, cfg->url,
                               sizeof cfg->url, err, errlen)))
        return rc;
    v = json_object_get(with, "model");
    if (!json_is_string(v) || !*json_string_value(v)) {
        snprintf(err, errlen,
                 "with.model: required, the model name (e.g. "
                 "${OPENAI_MODEL:-gpt-4o-mini})");
        return -SL_EINVAL;
    }
    cfg->model = json_string_value(v);
    if ((rc = sl_with_key(with, "OPENAI_API_KEY", &cfg->api_key, err,
                               errlen)))
        return rc;
    v = json_object_get(with, "temperature");
    if (v) {
        if (!json_is_number(v) || json_number_value(v) < 0 ||
            json_number_value(v) > 2) {
            snprintf(err, errlen, "with.temperature: expected a number 0..2");
            return -SL_EINVAL;
        }
        cfg->has_temperature = 1;
        cfg->temperature = json_number_value(v);
    }
    v = json_object_get(with, "max_tokens");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            snprintf(err, errlen, "with.max_tokens: expected an integer >= 1");
            return -SL_EINVAL;
        }
        cfg->max_tokens = (long)json_integer_value(v);
    }
    v = json_object_get(with, "response_format");
    if (v) {
        const char *f = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(f, "json_object") == 0)
            cfg->json_object = 1;
        else if (strcmp(f, "json_schema") != 0) {
            snprintf(err, errlen,
                     "with.response_format: json_schema (default) or "
                     "json_object");
            return -SL_EINVAL;
        }
    }
    return sl_http_with_limits(with, DEFAULT_LLM_TIMEOUT_MS, &cfg->limits, err,
                               errlen);
}

/* ---- schema validation ----------------------------------------------------
 */

static const char *json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static int type_matches(const char *want, const json_t *v) {
    if (strcmp(want, "number") == 0) return json_is_number(v);
    if (strcmp(want, "integer") == 0)
        return json_is_integer(v) ||
               (json_is_real(v) &&
                floor(json_real_value(v)) == json_real_value(v));
    return strcmp(want, json_type_name(v)) == 0;
}

static int validate_at(const json_t *schema, const json_t *v, char *path,
                       size_t plen, size_t pcap, char *err, size_t errlen) {
    if (!json_is_object(schema)) return 0; /* true / {} accept anything */
    json_t *type = json_object_get(schema, "type");
    if (json_is_string(type) || json_is_array(type)) {
        int ok = 0;
        char names[128] = "";
        if (json_is_string(type)) {
            ok = type_matches(json_string_value(type), v);
            snprintf(names, sizeof names, "%s", json_string_value(type));
        } else {
            size_t i;
            json_t *t;
            json_array_foreach(type, i, t) {
                if (!json_is_string(t)) continue;
                ok = ok || type_matches(json_string_value(t), v);
                size_t nl = strlen(names);
                snprintf(names + nl, sizeof names - nl, "%s%s",
                         nl ? " or " : "", json_string_value(t));
            }
        }
        if (!ok) {
            snprintf(err, errlen, "%s: expected %s, got %s", path, names,
                     json_type_name(v));
            return -SL_EINVAL;
        }
    }
    json_t *en = json_object_get(schema, "enum");
    if (json_is_array(en)) {
        size_t i;
        json_t *e;
        int found = 0;
        json_array_foreach(en, i, e) found = found || json_equal(e, v);
        if (!found) {
            char *want = json_dumps(en, JSON_COMPACT);
            snprintf(err, errlen, "%s: expected one of %s", path,
                     want ? want : "the enum");
            free(want);
            return -SL_EINVAL;
        }
    }
    if (json_is_number(v)) {
        json_t *mn = json_object_get(schema, "minimum");
        json_t *mx = json_object_get(schema, "maximum");
        double d = json_number_value(v);
        if ((json_is_number(mn) && d < json_number_value(mn)) ||
            (json_is_number(mx) && d > json_number_value(mx))) {
            snprintf(err, errlen, "%s: %g is out of range", path, d);
            return -SL_EINVAL;
        }
    }
    if (json_is_object(v)) {
        json_t *props = json_object_get(schema, "properties");
        json_t *req = json_object_get(schema, "required");
        json_t *extra = json_object_get(schema, "additionalProperties");
        size_t i;
        json_t *r;
        json_array_foreach(req, i, r) {
            if (json_is_string(r) &&
                !json_object_get(v, json_string_value(r))) {
                snprintf(err, errlen, "%s: missing required field \"%s\"", path,
                         json_string_value(r));
                return -SL_EINVAL;
            }
        }
        const char *k;
        json_t *fv;
        json_object_foreach((json_t *)v, k, fv) {
            json_t *ps = json_object_get(props, k);
            if (!ps) {
                if (json_is_false(extra)) {
                    snprintf(err, errlen, "%s: unexpected field \"%s\"", path,
                             k);
                    return -SL_EINVAL;
                }
                continue;
            }
            int n = snprintf(path + plen, pcap - plen, ".%s", k);
            size_t nl =
                n > 0 && plen + (size_t)n < pcap ? plen + (size_t)n : plen;
            int rc = validate_at(ps, fv, path, nl, pcap, err, errlen);
            path[plen] = '\0';
            if (rc) return rc;
        }
    }
    if (json_is_array(v)) {
        json_t *items = json_object_get(schema, "items");
        json_t *mn = json_object_get(schema, "minItems");
        json_t *mx = json_object_get(schema, "maxItems");
        size_t n = json_array_size(v);
        if ((json_is_integer(mn) && (json_int_t)n < json_integer_value(mn)) ||
            (json_is_integer(mx) && (json_int_t)n > json_integer_value(mx))) {
            snprintf(err, errlen, "%s: %zu items is out of range", path, n);
            return -SL_EINVAL;
        }
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it) {
            int w = snprintf(path + plen, pcap - plen, "[%zu]", i);
            size_t nl =
                w > 0 && plen + (size_t)w < pcap ? plen + (size_t)w : plen;
            int rc = validate_at(items, it, path, nl, pcap, err, errlen);
            path[plen] = '\0';
            if (rc) return rc;
        }
    }
    return 0;
}

int sl_llm_validate(const json_t *schema, const json_t *v, char *err,
                    size_t errlen) {
    char path[256] = "$";
    return validate_at(schema, v, path, 1, sizeof path, err, errlen);
}

/* ---- hooks ------------------------------------------------------------------
 */

json_t *sl_llm_hook_messages(json_t *ret, const char *system_prompt,
                             sl_result *res) {
    if (json_is_string(ret)) {
        json_t *m =
            json_pack("[{s:s, s:s}, {s:s, s:o}]", "role", "system", "content",
                      system_prompt, "role", "user", "content", ret);
        if (!m) sl_fail(res, SL_EC_RETRYABLE, "out of memory");
        return m;
    }
    size_t i;
    json_t *msg;
    int ok = json_is_array(ret) && json_array_size(ret) > 0;
    json_array_foreach(ret, i, msg) ok =
        ok && json_is_string(json_object_get(msg, "role")) &&
        json_is_string(json_object_get(msg, "content"));
    if (!ok) {
        json_decref(ret);
        sl_fail(res, SL_EC_SCRIPT,
                "Lua hook 'prompt' must return the user message (a string) or "
                "a list of {role=..., content=...}");
        return NULL;
    }
    return ret;
}

/* ---- the call -------------------------------------------------------------
 */

/* Parses the reply text (len bytes, NUL escapes included) as JSON,
 * tolerating a Markdown code fence around it (some compatible servers add
 * one in json_object mode). */
static json_t *parse_content(const char *text, size_t len) {
    const size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL;
    json_t *j = json_loadb(text, len, flags, NULL);
    if (j) return j;
    const char *end = text + len;
    const char *s = memmem(text, len, "```", 3);
    if (!s) return NULL;
    s += 3;
    while (s < end && *s != '\n')
        s++; /* skip "json" after the fence */
    const char *e = memmem(s, (size_t)(end - s), "```", 3);
    if (!e) return NULL;
    return json_loadb(s, (size_t)(e - s), flags, NULL);
}

static int fail_reply(sl_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail_reply(sl_result *res, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sl_fail(res, SL_EC_INVALID_RESPONSE, "chat completion: %s", msg);
    sl_redact(res->message, sizeof res->message);
    return -SL_EHTTP;
}

static json_t *request_body(const sl_llm_cfg *cfg, const json_t *messages,
                            const json_t *schema, const char *schema_name) {
    json_t *b = json_pack("{s:s, s:O}", "model", cfg->model, "messages",
                          (json_t *)messages);
    if (!b) return NULL;
    if (cfg->has_temperature)
        json_object_set_new(b, "temperature", json_real(cfg->temperature));
    if (cfg->max_tokens > 0)
        json_object_set_new(b, "max_tokens", json_integer(cfg->max_tokens));
    if (schema && cfg->json_object)
        json_object_set_new(b, "response_format",
                            json_pack("{s:s}", "type", "json_object"));
    else if (schema)
        json_object_set_new(b, "response_format",
                            json_pack("{s:s, s:{s:s, s:b, s:O}}", "type",
                                      "json_schema", "json_schema", "name",
                                      schema_name ? schema_name : "result",
                                      "strict", 1, "schema", (json_t *)schema));
    return b;
}

int sl_llm_chat(sl_http *h, const sl_llm_cfg *cfg, const json_t *messages,
                const json_t *schema, const char *schema_name, json_t **out,
                sl_http_progress_fn progress, void *progress_arg,
                sl_result *res) {
    char auth[1024] = "";
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    json_t *body = NULL, *reply = NULL;
    char *text = NULL;
    sl_http_resp resp;
    int rc;
    *out = NULL;
    memset(&resp, 0, sizeof resp);

    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        sl_fail(res, SL_EC_INVALID_INPUT,
                "chat completion: messages must be a non-empty array");
        return -SL_EINVAL;
    }
    body = request_body(cfg, messages, schema, schema_name);
    text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (!text) {
        sl_fail(res, SL_EC_INTERNAL, "chat completion: out of memory");
        rc = -SL_ENOMEM;
        goto out;
    }
    if (cfg->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", cfg->api_key);
        headers[1] = auth;
    }
    sl_http_req req = cfg->limits;
    req.what = "chat completion";
    req.provider = "llm";
    req.method = "POST";
    req.url = cfg->url;
    req.headers = headers;
    req.body = text;
    req.body_len = strlen(text);
    req.progress = progress;
    req.progress_arg = progress_arg;
    rc = sl_http_do(h, &req, &resp, res);
    if (rc != 0) goto out;
    rc = sl_http_json(&req, &resp, &reply, res);
    if (rc != 0) goto out;

    rc = -SL_EHTTP;
    json_t *choice = json_array_get(json_object_get(reply, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    if (!json_is_object(msg)) {
        char etext[300];
        sl_http_error_text(resp.body, resp.body_len, etext, sizeof etext);
        fail_reply(res, "no choices[0].message in the reply%s%s",
                   json_object_get(reply, "error") ? ": " : "",
                   json_object_get(reply, "error") ? etext : "");
        goto out;
    }
    const char *finish =
        json_string_value(json_object_get(choice, "finish_reason"));
    json_t *refusal = json_object_get(msg, "refusal");
    json_t *content = json_object_get(msg, "content");
    if (json_is_string(refusal) && *json_string_value(refusal)) {
        fail_reply(res, "the model refused: %.300s",
                   json_string_value(refusal));
        goto out;
    }
    if (finish && strcmp(finish, "length") == 0) {
        fail_reply(res, "the reply was cut short (finish_reason=length); "
                        "raise max_tokens or send smaller chunks");
        goto out;
    }
    if (finish && strcmp(finish, "content_filter") == 0) {
        fail_reply(res, "the reply was withheld by the content filter");
        goto out;
    }
    if (!json_is_string(content)) {
        fail_reply(res, "the reply has no text content");
        goto out;
    }
    if (!schema) {
        *out = json_incref(content);
        rc = 0;
        goto out;
    }
    json_t *parsed = parse_content(json_string_value(content),
                                   json_string_length(content));
    if (!parsed) {
        fail_reply(res, "the reply is not JSON (%zu bytes)",
                   json_string_length(content));
        goto out;
    }
    char verr[512];
    if (sl_llm_validate(schema, parsed, verr, sizeof verr) != 0) {
        json_decref(parsed);
        fail_reply(res, "the reply does not match the schema%s%s: %s",
                   schema_name ? " " : "", schema_name ? schema_name : "",
                   verr);
        goto out;
    }
    *out = parsed;
    rc = 0;
out:
    /* The header buffer held the key: do not leave it on the stack. */
    explicit_bzero(auth, sizeof auth);
    sl_http_resp_clear(&resp);
    json_decref(reply);
    free(text);
    json_decref(body);
    return rc;
}
