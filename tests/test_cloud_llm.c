/* test_cloud_llm.c - services/llm.c: configuration from `with:`, the JSON
 * Schema validation of replies, and chat completions against the fake
 * OpenAI-compatible server (request shape, replies that must fail as
 * invalid_response, rate limits and quota). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fakes/fakecloud.h"
#include "http.h"
#include "llm.h"
#include "log.h"
#include "testlib.h"

#define OKEY "sk-llm-test-key-33aa44bb"

static fake_cloud fake;
static sl_http *http;
static json_t *cfg_with; /* the `with` behind the latest cfg() */

static int setup_group(void **state) {
    (void)state;
    char err[256];
    setenv("OPENAI_API_KEY", OKEY, 1);
    sl_redact_reload();
    fake_start(&fake, "--openai-key " OKEY);
    assert_int_equal(sl_http_new(&http, err, sizeof err), 0);
    return 0;
}

static int teardown_group(void **state) {
    (void)state;
    sl_http_free(http);
    json_decref(cfg_with);
    fake_stop(&fake);
    return 0;
}

static int reset(void **state) {
    (void)state;
    json_decref(fake_call(&fake, "/_reset", "{}"));
    return 0;
}

static json_t *with_json(const char *text) {
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    return j;
}

/* ---- configuration --------------------------------------------------------- */

static void base_url_gets_the_chat_path_with_or_without_v1(void **state) {
    (void)state;
    sl_llm_cfg c;
    char err[256];
    json_t *w = with_json("{\"base_url\": \"http://h:1/\", \"model\": \"m\"}");
    assert_int_equal(sl_llm_cfg_from_with(w, &c, err, sizeof err), 0);
    assert_string_equal(c.url, "http://h:1/v1/chat/completions");
    json_decref(w);
    w = with_json("{\"base_url\": \"http://h:1/v1\", \"model\": \"m\"}");
    assert_int_equal(sl_llm_cfg_from_with(w, &c, err, sizeof err), 0);
    assert_string_equal(c.url, "http://h:1/v1/chat/completions");
    json_decref(w);
    w = with_json("{\"model\": \"m\"}");
    assert_int_equal(sl_llm_cfg_from_with(w, &c, err, sizeof err), 0);
    assert_string_equal(c.url, "https://api.openai.com/v1/chat/completions");
    assert_string_equal(c.api_key, OKEY);
    assert_int_equal(c.has_temperature, 0);
    assert_int_equal(c.limits.timeout_ms, 120000);
    json_decref(w);
}

static void key_comes_from_the_named_environment_variable(void **state) {
    (void)state;
    sl_llm_cfg c;
    char err[256];
    setenv("MY_LLM_KEY", "sk-other", 1);
    json_t *w = with_json("{\"model\": \"m\", \"api_key_env\": \"MY_LLM_KEY\"}");
    assert_int_equal(sl_llm_cfg_from_with(w, &c, err, sizeof err), 0);
    assert_string_equal(c.api_key, "sk-other");
    json_decref(w);
    w = with_json("{\"model\": \"m\", \"api_key_env\": \"UNSET_KEY_VAR_X\"}");
    assert_int_equal(sl_llm_cfg_from_with(w, &c, err, sizeof err), 0);
    assert_null(c.api_key);
    json_decref(w);
}

static void a_key_written_in_the_pipeline_is_refused(void **state) {
    (void)state;
    sl_llm_cfg c;
    char err[256];
    json_t *w = with_json("{\"model\": \"m\", \"api_key\": \"sk-in-yaml\"}");
    assert_int_equal(sl_llm_cfg_from_with(w, &c, err, sizeof err),
                     -SL_EINVAL);
    assert_non_null(strstr(err, "api_key_env"));
    assert_null(strstr(err, "sk-in-yaml"));
    json_decref(w);
}

static void bad_options_name_the_key(void **state) {
    (void)state;
    sl_llm_cfg c;
    char err[256];
    const char *cases[][2] = {
        {"{}", "with.model"},
        {"{\"model\": \"m\", \"temperature\": 3}", "with.temperature"},
        {"{\"model\": \"m\", \"max_tokens\": 0}", "with.max_tokens"},
        {"{\"model\": \"m\", \"base_url\": \"ftp://x\"}", "with.base_url"},
        {"{\"model\": \"m\", \"request_timeout\": \"soon\"}",
         "with.request_timeout"},
        {"{\"model\": \"m\", \"response_format\": \"xml\"}",
         "with.response_format"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *w = with_json(cases[i][0]);
        assert_int_equal(sl_llm_cfg_from_with(w, &c, err, sizeof err),
                         -SL_EINVAL);
        if (!strstr(err, cases[i][1]))
            fail_msg("%s: '%s' does not name %s", cases[i][0], err,
                     cases[i][1]);
        json_decref(w);
    }
}

/* ---- schema validation ------------------------------------------------------ */

static const char *SCHEMA =
    "{\"type\": \"object\", \"additionalProperties\": false,"
    " \"required\": [\"items\", \"title\"],"
    " \"properties\": {"
    "  \"title\": {\"type\": \"string\"},"
    "  \"note\": {\"type\": [\"string\", \"null\"]},"
    "  \"count\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 9},"
    "  \"items\": {\"type\": \"array\", \"maxItems\": 2, \"items\": {"
    "    \"type\": \"object\", \"required\": [\"kind\"],"
    "    \"properties\": {\"kind\": {\"type\": \"string\","
    "      \"enum\": [\"a\", \"b\"]}}}}}}";

static void check(const char *value, const char *want_err) {
    json_t *s = with_json(SCHEMA);
    json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
    char err[256] = "";
    int rc = sl_llm_validate(s, v, err, sizeof err);
    if (!want_err && rc != 0) fail_msg("%s rejected: %s", value, err);
    if (want_err && (rc == 0 || !strstr(err, want_err)))
        fail_msg("%s: got '%s', want '%s'", value, err, want_err);
    json_decref(v);
    json_decref(s);
}

static void validation_accepts_matching_values(void **state) {
    (void)state;
    check("{\"title\": \"t\", \"items\": []}", NULL);
    check("{\"title\": \"t\", \"note\": null, \"count\": 3, \"items\": "
          "[{\"kind\": \"a\"}, {\"kind\": \"b\", \"x\": 1}]}",
          NULL);
    check("{\"title\": \"t\", \"count\": 3.0, \"items\": []}", NULL);
}

static void validation_names_the_failing_path(void **state) {
    (void)state;
    check("{\"items\": []}", "$: missing required field \"title\"");
    check("{\"title\": 1, \"items\": []}", "$.title: expected string, got "
                                           "integer");
    check("{\"title\": \"t\", \"items\": [], \"extra\": 1}",
          "$: unexpected field \"extra\"");
    check("{\"title\": \"t\", \"items\": [{\"kind\": \"a\"}, {\"kind\": "
          "\"c\"}]}",
          "$.items[1].kind: expected one of [\"a\",\"b\"]");
    check("{\"title\": \"t\", \"items\": [{}]}",
          "$.items[0]: missing required field \"kind\"");
    check("{\"title\": \"t\", \"note\": 5, \"items\": []}",
          "$.note: expected string or null");
    check("{\"title\": \"t\", \"count\": 1.5, \"items\": []}",
          "$.count: expected integer");
    check("{\"title\": \"t\", \"count\": 10, \"items\": []}",
          "$.count: 10 is out of range");
    check("{\"title\": \"t\", \"items\": [{\"kind\": \"a\"}, {\"kind\": "
          "\"a\"}, {\"kind\": \"a\"}]}",
          "$.items: 3 items is out of range");
    check("[1]", "$: expected object, got array");
}

/* ---- chat against the fake --------------------------------------------------- */

static sl_llm_cfg cfg(const char *extra) {
    sl_llm_cfg c;
    char err[256], text[512];
    snprintf(text, sizeof text,
             "{\"base_url\": \"%s\", \"model\": \"test-model\"%s%s}",
             fake.base, extra ? ", " : "", extra ? extra : "");
    /* cfg borrows its strings from `with`: keep the latest alive. */
    json_decref(cfg_with);
    cfg_with = with_json(text);
    if (sl_llm_cfg_from_with(cfg_with, &c, err, sizeof err) != 0)
        fail_msg("cfg: %s", err);
    return c;
}

static json_t *user_msg(const char *text) {
    return json_pack("[{s:s, s:s}]", "role", "user", "content", text);
}

/* The body of the last chat request the fake received. */
static json_t *last_chat_body(void) {
    json_t *s = fake_stats(&fake);
    json_t *reqs = json_object_get(s, "requests");
    json_t *b = json_incref(json_object_get(
        json_array_get(reqs, json_array_size(reqs) - 1), "body"));
    json_decref(s);
    return b;
}

static void plain_chat_returns_the_reply_text(void **state) {
    (void)state;
    sl_llm_cfg c = cfg(NULL);
    sl_result res = {0};
    json_t *out = NULL, *m = user_msg("Write a haiku");
    assert_int_equal(sl_llm_chat(http, &c, m, NULL, NULL, &out, NULL, NULL,
                                 &res),
                     0);
    assert_string_equal(json_string_value(out), "Generated: Write a haiku");
    json_t *b = last_chat_body();
    assert_string_equal(json_string_value(json_object_get(b, "model")),
                        "test-model");
    /* Unset options are not sent at all. */
    assert_null(json_object_get(b, "temperature"));
    assert_null(json_object_get(b, "max_tokens"));
    assert_null(json_object_get(b, "response_format"));
    json_decref(b);
    json_decref(out);
    json_decref(m);
}

static void schema_chat_returns_validated_json(void **state) {
    (void)state;
    sl_llm_cfg c = cfg("\"temperature\": 0, \"max_tokens\": 500");
    sl_result res = {0};
    json_t *schema = with_json(SCHEMA);
    json_t *out = NULL, *m = user_msg("Summarise");
    assert_int_equal(sl_llm_chat(http, &c, m, schema, "summary", &out, NULL,
                                 NULL, &res),
                     0);
    assert_true(json_is_object(out));
    assert_true(json_is_string(json_object_get(out, "title")));
    json_t *b = last_chat_body();
    assert_true(json_number_value(json_object_get(b, "temperature")) == 0);
    assert_int_equal(json_integer_value(json_object_get(b, "max_tokens")),
                     500);
    json_t *js = json_object_get(json_object_get(b, "response_format"),
                                 "json_schema");
    assert_string_equal(json_string_value(json_object_get(js, "name")),
                        "summary");
    assert_true(json_equal(json_object_get(js, "schema"), schema));
    json_decref(b);
    json_decref(out);
    json_decref(m);
    json_decref(schema);
}

static void expect_reply_failure(const char *fault, sl_errclass cls,
                                 const char *msg) {
    sl_llm_cfg c = cfg(NULL);
    sl_result res = {0};
    json_t *schema = with_json(SCHEMA);
    json_t *out = NULL, *m = user_msg("Summarise");
    char plan[64];
    snprintf(plan, sizeof plan, "[\"%s\"]", fault);
    fake_faults(&fake, "chat", plan);
    assert_int_not_equal(sl_llm_chat(http, &c, m, schema, "summary", &out,
                                     NULL, NULL, &res),
                         0);
    assert_null(out);
    assert_int_equal(res.outcome, SL_OUT_FAIL);
    if (res.errclass != cls || !strstr(res.message, msg))
        fail_msg("fault %s: %s '%s', want %s '%s'", fault,
                 sl_errclass_name(res.errclass), res.message,
                 sl_errclass_name(cls), msg);
    assert_null(strstr(res.message, OKEY));
    json_decref(m);
    json_decref(schema);
}

static void a_reply_cut_at_max_tokens_is_invalid(void **state) {
    (void)state;
    expect_reply_failure("length", SL_EC_INVALID_RESPONSE,
                         "finish_reason=length");
}

static void a_refusal_is_invalid(void **state) {
    (void)state;
    expect_reply_failure("refusal", SL_EC_INVALID_RESPONSE,
                         "the model refused: I'm sorry");
}

static void a_reply_breaking_the_schema_is_invalid(void **state) {
    (void)state;
    expect_reply_failure("schema", SL_EC_INVALID_RESPONSE,
                         "does not match the schema summary");
}

static void quota_and_rate_limits_are_told_apart(void **state) {
    (void)state;
    expect_reply_failure("quota", SL_EC_QUOTA_EXHAUSTED, "HTTP 429");
    expect_reply_failure("429ms", SL_EC_RATE_LIMITED, "retry after 250 ms");
    expect_reply_failure("503", SL_EC_HTTP_5XX, "HTTP 503");
}

static void a_wrong_key_is_a_client_error(void **state) {
    (void)state;
    sl_llm_cfg c = cfg(NULL);
    c.api_key = "sk-wrong";
    sl_result res = {0};
    json_t *out = NULL, *m = user_msg("hi");
    assert_int_not_equal(sl_llm_chat(http, &c, m, NULL, NULL, &out, NULL,
                                     NULL, &res),
                         0);
    assert_int_equal(res.errclass, SL_EC_HTTP_4XX);
    assert_non_null(strstr(res.message, "HTTP 401"));
    assert_null(strstr(res.message, "sk-wrong"));
    json_decref(m);
}

static void empty_messages_are_refused_without_a_request(void **state) {
    (void)state;
    sl_llm_cfg c = cfg(NULL);
    sl_result res = {0};
    json_t *out = NULL, *m = json_array();
    assert_int_equal(sl_llm_chat(http, &c, m, NULL, NULL, &out, NULL, NULL,
                                 &res),
                     -SL_EINVAL);
    assert_int_equal(res.errclass, SL_EC_INVALID_INPUT);
    assert_int_equal(fake_count(&fake, "chat"), 0);
    json_decref(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup(f, reset)
        T(base_url_gets_the_chat_path_with_or_without_v1),
        T(key_comes_from_the_named_environment_variable),
        T(a_key_written_in_the_pipeline_is_refused),
        T(bad_options_name_the_key),
        T(validation_accepts_matching_values),
        T(validation_names_the_failing_path),
        T(plain_chat_returns_the_reply_text),
        T(schema_chat_returns_validated_json),
        T(a_reply_cut_at_max_tokens_is_invalid),
        T(a_refusal_is_invalid),
        T(a_reply_breaking_the_schema_is_invalid),
        T(quota_and_rate_limits_are_told_apart),
        T(a_wrong_key_is_a_client_error),
        T(empty_messages_are_refused_without_a_request),
#undef T
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
