/* http.c - handler "http": one HTTP request per job, for webhooks and
 * simple API calls (docs/stages.md).
 *
 * The request body is the job's input (its declared columns) as a JSON
 * object, or the value of one column (with.body_column: a string is sent
 * as it is, anything else as JSON), or nothing (method GET/HEAD/DELETE
 * without body_column). Headers come from with.headers (values may use
 * ${VAR} interpolation) and with.headers_env (header -> the name of an
 * environment variable read at run time, for tokens). A 2xx answer
 * completes the job with outputs {"status_code": n, "response": <the body
 * as JSON when it parses, else as text>}; failures are classified as in
 * http.h (5xx, 408, 409 and 429 retry by default, other 4xx fail).
 *
 * A retry after a lost answer sends the request again, so every request
 * carries "Idempotency-Key: <job id>" (unless with.headers or
 * with.headers_env set one): the same on every attempt of a job, for a
 * receiver that deduplicates.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "http.h"
#include "handler.h"

#define MAX_HEADERS 32

static int hs_check(const json_t *with, sl_http_req *limits, char *err,
                    size_t errlen) {
    const char *url = sl_with_str(with, "url", NULL);
    if (!url ||
        (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        snprintf(err, errlen,
                 "with.url: required, an http:// or https:// "
                 "URL");
        return -1;
    }
    static const char *const strings[] = {
        "method", "body_column", "content_type", "response_column", NULL};
    if (sl_with_strings(with, strings, err, errlen) != 0) return -1;
    static const char *const maps[] = {"headers", "headers_env"};
    size_t nh = 0;
    for (size_t i = 0; i < 2; i++) {
        json_t *m = json_object_get(with, maps[i]);
        const char *k;
        json_t *v;
        if (m && !json_is_object(m)) {
            snprintf(err, errlen,
                     "with.%s: expected a mapping of header "
                     "names to %s",
                     maps[i], i ? "environment variable names" : "values");
            return -1;
        }
        json_object_foreach(m, k, v) {
            if (!json_is_string(v) || !*k || strpbrk(k, ": \r\n") ||
                strpbrk(json_string_value(v), "\r\n")) {
                snprintf(err, errlen,
                         "with.%s.%s: expected a header name "
                         "and a one-line string",
                         maps[i], k);
                return -1;
            }
            nh++;
        }
    }
    if (nh > MAX_HEADERS - 2) {
        snprintf(err, errlen, "with.headers: at most %d headers",
                 MAX_HEADERS - 2);
        return -1;
    }
    json_t *fr = json_object_get(with, "follow_redirects");
    if (fr && !json_is_boolean(fr)) {
        snprintf(err, errlen, "with.follow_redirects: expected true or false");
        return -1;
    }
    return sl_http_with_limits(with, 30000, limits, err, errlen) ? -1 : 0;
}

static int hs_validate(const sl_stage *stage, char *err, size_t errlen) {
    sl_http_req r = {0};
    return hs_check(stage->with, &r, err, errlen);
}

static void hs_run(sl_ctx *ctx, const sl_job *job, void *state,
                   sl_result *res) {
    sl_http *h = state;
    const json_t *with = job->stage->with;
    char err[512];
    char *lines[MAX_HEADERS] = {0};
    const char *headers[MAX_HEADERS + 1] = {0};
    size_t nh = 0;
    char *body = NULL;
    sl_http_resp resp;
    sl_http_req req;
    memset(&resp, 0, sizeof resp);
    memset(&req, 0, sizeof req);
    if (hs_check(with, &req, err, sizeof err) != 0) {
        sl_fail(res, SL_EC_INVALID_INPUT, "http: %s", err);
        return;
    }
    req.what = "http stage";
    req.provider = "http";
    req.url = sl_with_str(with, "url", NULL);
    req.method = sl_with_str(with, "method", "POST");
    req.follow_redirects =
        json_is_true(json_object_get(with, "follow_redirects"));
    req.progress = sl_http_stop_check;
    req.progress_arg = ctx;

    const char *bc = sl_with_str(with, "body_column", NULL);
    int wants_body = bc || !(strcmp(req.method, "GET") == 0 ||
                             strcmp(req.method, "HEAD") == 0 ||
                             strcmp(req.method, "DELETE") == 0);
    if (wants_body) {
        json_t *v = bc ? json_object_get(job->input, bc) : job->input;
        if (json_is_string(v))
            body = strdup(json_string_value(v));
        else if (v)
            body = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        else
            body = strdup("");
        if (!body) {
            sl_fail(res, SL_EC_RETRYABLE, "http: out of memory");
            goto out;
        }
        req.body = body;
        req.body_len = strlen(body);
        if (asprintf(
                &lines[nh], "Content-Type: %s",
                sl_with_str(with, "content_type", "application/json")) < 0)
            lines[nh] = NULL;
        headers[nh] = lines[nh];
        nh++;
    }
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(with, "headers"), k, v) {
        if (asprintf(&lines[nh], "%s: %s", k, json_string_value(v)) < 0)
            lines[nh] = NULL;
        headers[nh] = lines[nh];
        nh++;
    }
    json_object_foreach(json_object_get(with, "headers_env"), k, v) {
        const char *val = getenv(json_string_value(v));
        if (!val || !*val) {
            sl_fail(res, SL_EC_INVALID_INPUT,
                    "http: header %s: environment variable %s is not set", k,
                    json_string_value(v));
            goto out;
        }
        if (asprintf(&lines[nh], "%s: %s", k, val) < 0) lines[nh] = NULL;
        headers[nh] = lines[nh];
        nh++;
    }
    int own_key = 0;
    for (size_t i = 0; i < nh; i++)
        own_key |= lines[i] && strncasecmp(lines[i], "Idempotency-Key:", 16) == 0;
    if (!own_key) {
        if (asprintf(&lines[nh], "Idempotency-Key: %s", job->id) < 0)
            lines[nh] = NULL;
        headers[nh] = lines[nh];
        nh++;
    }
    for (size_t i = 0; i < nh; i++)
        if (!lines[i]) {
            sl_fail(res, SL_EC_RETRYABLE, "http: out of memory");
            goto out;
        }
    headers[nh] = NULL;
    req.headers = headers;
    if (sl_http_do(h, &req, &resp, res) != 0) goto out;
    json_t *parsed =
        resp.body ? json_loadb(resp.body, resp.body_len, JSON_DECODE_ANY, NULL)
                  : NULL;
    if (!parsed) parsed = resp.body ? json_string(resp.body) : json_null();
    sl_done(res,
            json_pack("{s:I, s:o}", "status_code", (json_int_t)resp.status,
                      sl_with_str(with, "response_column", "response"),
                      parsed ? parsed : json_null()));
out:
    /* Header lines may hold tokens: wipe them before freeing. */
    for (size_t i = 0; i < nh; i++)
        if (lines[i]) {
            explicit_bzero(lines[i], strlen(lines[i]));
            free(lines[i]);
        }
    sl_http_resp_clear(&resp);
    free(body);
}

const sl_handler sl_handler_http = {"http", hs_validate, sl_http_state_init,
                                    sl_http_state_fini, hs_run};
