/* test_lua_http.c - sluice.http.request from Lua against the local fake
 * cloud server (tests/fakes/fake_cloud.py): requests go out as written
 * (method, headers, JSON body), responses come back as tables, and
 * failures carry the HTTP module's error classes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fakes/fakecloud.h"
#include "lua_host.h"
#include "testlib.h"

static const char *const HOOKS =
    "function get(base)\n"
    "  return sluice.http.request{url = base .. '/_stats', timeout = 5}\n"
    "end\n"
    "function chat(base, key)\n"
    "  local r = sluice.http.request{\n"
    "    method = 'POST', url = base .. '/v1/chat/completions',\n"
    "    headers = {Authorization = 'Bearer ' .. key, ['X-Hook'] = 'lua'},\n"
    "    body = {model = 'm1', messages = {{role = 'user',\n"
    "            content = 'hello from lua'}}},\n"
    "    timeout = 10}\n"
    "  return {status = r.status, content = "
    "r.json.choices[1].message.content,\n"
    "          type = r.content_type}\n"
    "end\n"
    "function chat_returning_errors(base, key)\n"
    "  local r = sluice.http.request{\n"
    "    method = 'POST', url = base .. '/v1/chat/completions',\n"
    "    headers = {'Authorization: Bearer ' .. key},\n"
    "    body = '{\"model\": \"m1\", \"messages\": [{\"role\": \"user\", '\n"
    "        .. '\"content\": \"x\"}]}',\n"
    "    errors = 'return'}\n"
    "  return {status = r.status, class = r.class, error = r.error}\n"
    "end\n"
    "function chat_auth(base)\n"
    "  return sluice.http.request{method = 'POST', auth = 'bearer',\n"
    "    url = base .. '/v1/chat/completions',\n"
    "    body = {model = 'm1', messages = {{role = 'user', content = "
    "'k'}}}}.status\n"
    "end\n"
    "function header_injection(base)\n"
    "  return sluice.http.request{url = base .. '/_stats',\n"
    "    headers = {['X-A'] = 'a\\r\\nX-Evil: 1'}}\n"
    "end\n";

static const char *const POINTS[] = {
    "get",       "chat", "chat_returning_errors", "header_injection",
    "chat_auth", NULL};

/* Calls chat_auth(base) with a base URL of our choosing. */
static int call_with_base(sl_lua *L, const char *point, const char *base,
                          json_t **ret, sl_result *res) {
    memset(res, 0, sizeof *res);
    json_t *args = json_pack("[s]", base);
    int rc = sl_lua_call(L, point, NULL, NULL, args, ret, res);
    json_decref(args);
    return rc;
}

typedef struct fixture {
    fake_cloud fake;
    sl_stage stage;
    sl_hook hooks[5];
    sl_lua *L;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    fake_start(&f->fake, "--openai-key sk-test-lua-123");
    const char *file = sl_test_file("http_hooks.lua", HOOKS);
    for (int i = 0; POINTS[i]; i++)
        f->hooks[i] =
            (sl_hook){.point = POINTS[i], .file = file, .function = POINTS[i]};
    f->stage.name = "http";
    /* The fake server listens on 127.0.0.1: a loopback address, which
     * sluice.http refuses unless the stage allows it (http_private). */
    f->stage.with = json_pack("{s:s, s:s, s:b}", "api_key_env",
                              "LUA_HTTP_TEST_KEY", "base_url", f->fake.base,
                              "http_private", 1);
    f->stage.hooks = f->hooks;
    f->stage.nhooks = 5;
    char err[512];
    if (sl_lua_open(&f->stage, &f->L, err, sizeof err) != 0)
        fail_msg("open: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    sl_lua_close(f->L);
    fake_stop(&f->fake);
    json_decref(f->stage.with);
    free(f);
    return 0;
}

static int call(fixture *f, const char *point, const char *key, json_t **ret,
                sl_result *res) {
    memset(res, 0, sizeof *res);
    json_t *args = key ? json_pack("[ss]", f->fake.base, key)
                       : json_pack("[s]", f->fake.base);
    int rc = sl_lua_call(f->L, point, NULL, NULL, args, ret, res);
    json_decref(args);
    return rc;
}

static void get_returns_status_body_and_decoded_json(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "get", NULL, &ret, &res), 0);
    assert_int_equal(json_integer_value(json_object_get(ret, "status")), 200);
    assert_non_null(strstr(json_string_value(json_object_get(ret, "body")),
                           "\"requests\""));
    assert_true(json_is_object(json_object_get(ret, "json")));
    json_decref(ret);
}

static void post_sends_headers_and_a_json_body(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    int rc = call(f, "chat", "sk-test-lua-123", &ret, &res);
    if (rc != 0) fail_msg("chat: %s", res.message);
    assert_int_equal(json_integer_value(json_object_get(ret, "status")), 200);
    assert_non_null(strstr(json_string_value(json_object_get(ret, "content")),
                           "hello from lua"));
    json_decref(ret);
    /* The fake logged the body it received: our table, as JSON. */
    json_t *st = fake_stats(&f->fake);
    json_t *reqs = json_object_get(st, "requests");
    json_t *last = json_array_get(reqs, json_array_size(reqs) - 1);
    json_t *body = json_object_get(last, "body");
    assert_string_equal(json_string_value(json_object_get(body, "model")),
                        "m1");
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(body, "messages"), 0), "content")),
        "hello from lua");
    assert_int_equal(json_integer_value(json_object_get(st, "unauthorized")),
                     0);
    json_decref(st);
}

static void wrong_key_raises_http_4xx_without_echoing_the_key(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "chat", "sk-wrong-key-999", &ret, &res), -SL_ELUA);
    assert_int_equal(res.errclass, SL_EC_HTTP_4XX);
    assert_non_null(strstr(res.message, "401"));
    assert_null(strstr(res.message, "sk-wrong-key-999"));
}

static void server_error_raises_http_5xx_for_the_retry_policy(void **state) {
    fixture *f = *state;
    fake_faults(&f->fake, "chat", "[\"503\"]");
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "chat", "sk-test-lua-123", &ret, &res), -SL_ELUA);
    assert_int_equal(res.errclass, SL_EC_HTTP_5XX);
    assert_non_null(strstr(res.message, "503"));
}

static void rate_limit_raises_rate_limited_with_retry_after(void **state) {
    fixture *f = *state;
    fake_faults(&f->fake, "chat", "[\"429\"]");
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "chat", "sk-test-lua-123", &ret, &res), -SL_ELUA);
    assert_int_equal(res.errclass, SL_EC_RATE_LIMITED);
    assert_int_equal(res.delay_ms, 1000);
}

static void errors_return_gives_the_response_instead(void **state) {
    fixture *f = *state;
    fake_faults(&f->fake, "chat", "[\"500\"]");
    json_t *ret = NULL;
    sl_result res;
    int rc = call(f, "chat_returning_errors", "sk-test-lua-123", &ret, &res);
    if (rc != 0) fail_msg("%s", res.message);
    assert_int_equal(json_integer_value(json_object_get(ret, "status")), 500);
    assert_string_equal(json_string_value(json_object_get(ret, "class")),
                        "http_5xx");
    json_decref(ret);
}

static void header_with_a_line_break_is_refused(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "header_injection", NULL, &ret, &res), -SL_ELUA);
    assert_non_null(strstr(res.message, "line break"));
}

static void auth_adds_the_key_named_by_the_stage(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    unsetenv("LUA_HTTP_TEST_KEY");
    assert_int_equal(call(f, "chat_auth", NULL, &ret, &res), -SL_ELUA);
    assert_non_null(strstr(res.message, "LUA_HTTP_TEST_KEY is not set"));
    setenv("LUA_HTTP_TEST_KEY", "sk-test-lua-123", 1);
    int rc = call(f, "chat_auth", NULL, &ret, &res);
    if (rc != 0) fail_msg("%s", res.message);
    assert_int_equal(json_integer_value(ret), 200);
    json_decref(ret);
    unsetenv("LUA_HTTP_TEST_KEY");
}

static void auth_is_refused_outside_the_base_url(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    setenv("LUA_HTTP_TEST_KEY", "sk-test-lua-123", 1);
    char other[300];
    /* Same server, but not under base_url: a look-alike host, userinfo
     * and another port. */
    const char *const tricks[] = {"%s.evil.example", "%s@evil.example",
                                  "%s0", NULL};
    for (int i = 0; tricks[i]; i++) {
        snprintf(other, sizeof other, tricks[i], f->fake.base);
        assert_int_equal(call_with_base(f->L, "chat_auth", other, &ret, &res),
                         -SL_ELUA);
        assert_non_null(strstr(res.message, "auth refused for this URL"));
        assert_null(strstr(res.message, "sk-test-lua-123"));
    }
    unsetenv("LUA_HTTP_TEST_KEY");
}

static void loopback_is_refused_unless_the_stage_allows_it(void **state) {
    fixture *f = *state;
    sl_stage st = f->stage;
    st.with = json_pack("{s:s}", "api_key_env", "LUA_HTTP_TEST_KEY");
    sl_lua *L = NULL;
    char err[512];
    assert_int_equal(sl_lua_open(&st, &L, err, sizeof err), 0);
    json_t *ret = NULL;
    sl_result res;
    const char *const bases[] = {"http://127.0.0.1:9", "http://localhost:9",
                                 "http://[::1]:9", "http://10.1.2.3:9",
                                 "http://169.254.169.254", "http://0.0.0.0:9",
                                 "http://[::ffff:127.0.0.1]:9", NULL};
    for (int i = 0; bases[i]; i++) {
        assert_int_equal(call_with_base(L, "get", bases[i], &ret, &res),
                         -SL_ELUA);
        if (!strstr(res.message, "refused to connect to") &&
            !strstr(res.message, "Could not resolve"))
            fail_msg("%s: %s", bases[i], res.message);
        assert_int_equal(res.errclass, SL_EC_INVALID_INPUT);
    }
    /* The fake server itself, through a name that resolves to it. */
    char url[300];
    snprintf(url, sizeof url, "http://localhost:%s",
             strrchr(f->fake.base, ':') + 1);
    assert_int_equal(call_with_base(L, "get", url, &ret, &res), -SL_ELUA);
    assert_non_null(strstr(res.message, "refused to connect to"));
    sl_lua_close(L);
    json_decref(st.with);
}

int main(void) {
#define T(n) cmocka_unit_test_setup_teardown(n, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(get_returns_status_body_and_decoded_json),
        T(post_sends_headers_and_a_json_body),
        T(wrong_key_raises_http_4xx_without_echoing_the_key),
        T(server_error_raises_http_5xx_for_the_retry_policy),
        T(rate_limit_raises_rate_limited_with_retry_after),
        T(errors_return_gives_the_response_instead),
        T(header_with_a_line_break_is_refused),
        T(auth_adds_the_key_named_by_the_stage),
        T(auth_is_refused_outside_the_base_url),
        T(loopback_is_refused_unless_the_stage_allows_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
