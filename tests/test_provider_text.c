/* test_provider_text.c - provider replies against the fake cloud server
 * (issue 11 item 8): a "\u0000" escape is valid JSON and accepted, a
 * retry-after-ms of NaN is ignored, a proxy's HTML 502 page is summarised
 * by its title, a server that takes its time to answer is bounded by
 * request_timeout (not low_speed_time). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fakes/fakecloud.h"
#include "http.h"
#include "llm.h"
#include "testlib.h"
#include "text.h"

#define OKEY "sk-test-openai-key-51b0e2"

static fake_cloud fake;

static int setup_group(void **state) {
    (void)state;
    setenv("OPENAI_API_KEY", OKEY, 1);
    sl_redact_reload();
    fake_start(&fake, "--openai-key " OKEY);
    return 0;
}

static int teardown_group(void **state) {
    (void)state;
    fake_stop(&fake);
    return 0;
}

typedef struct t_prov {
    sl_http *h;
    sl_http_resp resp;
    sl_result res;
    char url[256];
} t_prov;

static int setup(void **state) {
    t_prov *t = calloc(1, sizeof *t);
    char err[256];
    assert_int_equal(sl_http_new(&t->h, err, sizeof err), 0);
    json_decref(fake_call(&fake, "/_reset", "{}"));
    *state = t;
    return 0;
}

static int teardown(void **state) {
    t_prov *t = *state;
    sl_http_resp_clear(&t->resp);
    json_decref(t->res.outputs);
    sl_http_free(t->h);
    free(t);
    return 0;
}

static const char *const HEADERS[] = {"Authorization: Bearer " OKEY,
                                      "Content-Type: application/json", NULL};

/* POSTs body to the fake's route (chat unless path says) with the given
 * limits. */
static int post_to(t_prov *t, const char *path, const char *body,
                   int64_t timeout_ms, int64_t low_ms, long low_bps) {
    snprintf(t->url, sizeof t->url, "%s%s", fake.base, path);
    sl_http_req r = {.what = "chat",
                     .method = "POST",
                     .url = t->url,
                     .headers = HEADERS,
                     .body = body,
                     .body_len = strlen(body),
                     .timeout_ms = timeout_ms,
                     .low_speed_ms = low_ms,
                     .low_speed_bps = low_bps};
    sl_http_resp_clear(&t->resp);
    memset(&t->res, 0, sizeof t->res);
    return sl_http_do(t->h, &r, &t->resp, &t->res);
}

static int post(t_prov *t, const char *body, int64_t timeout_ms,
                int64_t low_ms, long low_bps) {
    return post_to(t, "/v1/chat/completions", body, timeout_ms, low_ms,
                   low_bps);
}

static const char *CHAT =
    "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": "
    "\"Dana: I wish it was faster.\"}]}";

static void a_nul_escape_in_a_reply_is_valid_json(void **state) {
    t_prov *t = *state;
    fake_faults(&fake, "chat", "[\"nul\"]");
    assert_int_equal(post(t, CHAT, 0, 0, 0), 0);
    sl_http_req r = {.what = "chat", .url = t->url};
    json_t *j = NULL;
    if (sl_http_json(&r, &t->resp, &j, &t->res) != 0)
        fail_msg("rejected: %s", t->res.message);
    json_t *note = json_object_get(j, "note");
    assert_int_equal(json_string_length(note), 12);
    char *safe = sl_text_json_dumps(note, JSON_ENCODE_ANY);
    assert_string_equal(safe, "\"before\xEF\xBF\xBD" "after\"");
    free(safe);
    json_decref(j);
}

static void nan_retry_after_ms_is_ignored(void **state) {
    t_prov *t = *state;
    fake_faults(&fake, "chat", "[\"nanretry\"]");
    assert_int_not_equal(post(t, CHAT, 0, 0, 0), 0);
    assert_int_equal(t->res.errclass, SL_EC_HTTP_5XX);
    assert_int_equal(t->resp.retry_after_ms, -1);
    assert_int_equal(t->res.delay_ms, 0);
}

static void an_html_error_page_is_summarised_by_its_title(void **state) {
    t_prov *t = *state;
    fake_faults(&fake, "chat", "[\"html502\"]");
    assert_int_not_equal(post(t, CHAT, 0, 0, 0), 0);
    assert_int_equal(t->res.errclass, SL_EC_HTTP_5XX);
    assert_non_null(strstr(t->res.message, "HTTP 502: 502 Bad Gateway"));
    assert_null(strchr(t->res.message, '<'));
    assert_true(strlen(t->res.message) < 300);
    char text[64];
    sl_http_error_text("\n\nplain failure\nsecond line", 27, text, sizeof text);
    assert_string_equal(text, "plain failure");
}

/* The server thinks for 1.5 s: low_speed_time (0.5 s) does not apply to
 * that wait; request_timeout (5 s) does. */
static void a_slow_answer_is_bounded_by_request_timeout_only(void **state) {
    t_prov *t = *state;
    fake_faults(&fake, "chat", "[\"sleep:1500\"]");
    int rc = post(t, CHAT, 5000, 500, 1);
    if (rc != 0) fail_msg("failed: %s", t->res.message);
    fake_faults(&fake, "chat", "[\"timeout\"]");
    int64_t t0 = sl_test_now_ms();
    assert_int_not_equal(post(t, CHAT, 800, 300, 1), 0);
    assert_int_equal(t->res.errclass, SL_EC_TIMEOUT);
    assert_true(sl_test_now_ms() - t0 >= 700);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_nul_escape_in_a_reply_is_valid_json,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(nan_retry_after_ms_is_ignored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            an_html_error_page_is_summarised_by_its_title, setup, teardown),
        cmocka_unit_test_setup_teardown(
            a_slow_answer_is_bounded_by_request_timeout_only, setup, teardown),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
