/* test_http.c - the HTTP module against the fake cloud server: bodies from
 * memory and streamed from files, every fault the fake injects classified
 * into the right error class, Retry-After / retry-after-ms, the response
 * size cap, timeouts, connection reuse, and keys kept out of messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "fakes/fakecloud.h"
#include "http.h"
#include "log.h"
#include "testlib.h"

#define AKEY "aai-test-key-7f3c9d"
#define OKEY "sk-test-openai-key-51b0e2"

static fake_cloud fake;

static int setup_group(void **state) {
    (void)state;
    setenv("ASSEMBLYAI_API_KEY", AKEY, 1);
    setenv("OPENAI_API_KEY", OKEY, 1);
    sl_redact_reload();
    fake_start(&fake, "--assemblyai-key " AKEY " --openai-key " OKEY
                      " --slow-seconds 3");
    return 0;
}

static int teardown_group(void **state) {
    (void)state;
    fake_stop(&fake);
    return 0;
}

typedef struct t_http {
    sl_http *h;
    sl_http_resp resp;
    sl_result res;
    char url[256];
} t_http;

static int setup(void **state) {
    t_http *t = calloc(1, sizeof *t);
    char err[256];
    assert_int_equal(sl_http_new(&t->h, err, sizeof err), 0);
    json_decref(fake_call(&fake, "/_reset", "{}"));
    *state = t;
    return 0;
}

static int teardown(void **state) {
    t_http *t = *state;
    sl_http_resp_clear(&t->resp);
    json_decref(t->res.outputs);
    sl_http_free(t->h);
    free(t);
    return 0;
}

static const char *const OAI_HEADERS[] = {"Authorization: Bearer " OKEY,
                                          "Content-Type: application/json",
                                          NULL};

static const char *CHAT_BODY =
    "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": "
    "\"Dana: I wish it was faster.\"}]}";

/* A chat request to the fake with the given timeout (0 = default). */
static int chat(t_http *t, int64_t timeout_ms) {
    snprintf(t->url, sizeof t->url, "%s/v1/chat/completions", fake.base);
    sl_http_req r = {.what = "chat",
                     .method = "POST",
                     .url = t->url,
                     .headers = OAI_HEADERS,
                     .body = CHAT_BODY,
                     .body_len = strlen(CHAT_BODY),
                     .timeout_ms = timeout_ms};
    sl_http_resp_clear(&t->resp);
    memset(&t->res, 0, sizeof t->res);
    return sl_http_do(t->h, &r, &t->resp, &t->res);
}

static void assert_failed_as(t_http *t, int rc, sl_errclass c) {
    if (rc == 0) fail_msg("request succeeded, want class %s",
                          sl_errclass_name(c));
    assert_int_equal(t->res.outcome, SL_OUT_FAIL);
    if (t->res.errclass != c)
        fail_msg("class %s, want %s (message: %s)",
                 sl_errclass_name(t->res.errclass), sl_errclass_name(c),
                 t->res.message);
    assert_null(strstr(t->res.message, OKEY));
    assert_null(strstr(t->res.message, AKEY));
}

/* ---- successful requests ------------------------------------------------ */

static void post_from_memory_returns_parsed_json(void **state) {
    t_http *t = *state;
    assert_int_equal(chat(t, 0), 0);
    assert_int_equal(t->resp.status, 200);
    assert_non_null(strstr(t->resp.content_type, "application/json"));
    json_t *j = NULL;
    sl_http_req r = {.what = "chat"};
    assert_int_equal(sl_http_json(&r, &t->resp, &j, &t->res), 0);
    assert_string_equal(json_string_value(json_object_get(j, "object")),
                        "chat.completion");
    json_decref(j);
    assert_int_equal(t->resp.retry_after_ms, -1);
}

static void post_streams_a_file_body_with_its_length(void **state) {
    t_http *t = *state;
    /* 300 KiB: several read callbacks. */
    size_t n = 300 * 1024;
    char *data = malloc(n + 1);
    for (size_t i = 0; i < n; i++) data[i] = (char)('a' + i % 26);
    data[n] = '\0';
    const char *path = sl_test_file("upload.bin", data);
    free(data);
    snprintf(t->url, sizeof t->url, "%s/v2/upload", fake.base);
    const char *const hdr[] = {"Authorization: " AKEY,
                               "Content-Type: application/octet-stream", NULL};
    sl_http_req r = {.what = "upload", .method = "POST", .url = t->url,
                     .headers = hdr, .body_file = path};
    assert_int_equal(sl_http_do(t->h, &r, &t->resp, &t->res), 0);
    json_t *j = NULL;
    assert_int_equal(sl_http_json(&r, &t->resp, &j, &t->res), 0);
    assert_non_null(strstr(json_string_value(json_object_get(j, "upload_url")),
                           "/upload/"));
    json_decref(j);
    assert_int_equal(fake_count(&fake, "uploads"), 1);
    assert_int_equal(fake_count(&fake, "upload_bytes"), (long)n);
}

static void missing_body_file_is_invalid_input(void **state) {
    t_http *t = *state;
    snprintf(t->url, sizeof t->url, "%s/v2/upload", fake.base);
    sl_http_req r = {.method = "POST", .url = t->url,
                     .body_file = "/nonexistent/file.wav"};
    int rc = sl_http_do(t->h, &r, &t->resp, &t->res);
    assert_int_equal(rc, -SL_EIO);
    assert_failed_as(t, rc, SL_EC_INVALID_INPUT);
    assert_non_null(strstr(t->res.message, "/nonexistent/file.wav"));
}

static void sequential_requests_reuse_one_connection(void **state) {
    t_http *t = *state;
    assert_int_equal(chat(t, 0), 0);
    assert_int_equal(chat(t, 0), 0);
    assert_int_equal(chat(t, 0), 0);
    json_t *s = fake_stats(&fake);
    json_t *reqs = json_object_get(s, "requests");
    assert_int_equal(json_array_size(reqs), 3);
    json_int_t p0 = json_integer_value(
        json_object_get(json_array_get(reqs, 0), "peer_port"));
    for (size_t i = 1; i < 3; i++)
        assert_int_equal(json_integer_value(json_object_get(
                             json_array_get(reqs, i), "peer_port")),
                         p0);
    json_decref(s);
}

/* ---- HTTP statuses ------------------------------------------------------ */

static void status_500_and_503_are_http_5xx(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"500\", \"503\"]");
    assert_failed_as(t, chat(t, 0), SL_EC_HTTP_5XX);
    assert_non_null(strstr(t->res.message, "HTTP 500"));
    assert_non_null(strstr(t->res.message, "injected 500"));
    assert_failed_as(t, chat(t, 0), SL_EC_HTTP_5XX);
    assert_non_null(strstr(t->res.message, "HTTP 503"));
    assert_int_equal(chat(t, 0), 0);
}

static void status_408_and_409_retry_like_5xx(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"408\", \"409\"]");
    assert_failed_as(t, chat(t, 0), SL_EC_HTTP_5XX);
    assert_failed_as(t, chat(t, 0), SL_EC_HTTP_5XX);
}

static void status_400_and_404_are_http_4xx(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"400\", \"404\"]");
    assert_failed_as(t, chat(t, 0), SL_EC_HTTP_4XX);
    assert_failed_as(t, chat(t, 0), SL_EC_HTTP_4XX);
    assert_non_null(strstr(t->res.message, "HTTP 404"));
}

static void wrong_key_is_http_4xx_without_the_key(void **state) {
    t_http *t = *state;
    snprintf(t->url, sizeof t->url, "%s/v2/transcript", fake.base);
    const char *const hdr[] = {"Authorization: wrong-" AKEY, NULL};
    const char *body = "{\"audio_url\": \"https://example.com/a.mp3\"}";
    sl_http_req r = {.what = "AssemblyAI transcript", .method = "POST",
                     .url = t->url, .headers = hdr, .body = body,
                     .body_len = strlen(body)};
    int rc = sl_http_do(t->h, &r, &t->resp, &t->res);
    assert_failed_as(t, rc, SL_EC_HTTP_4XX);
    assert_int_equal(t->resp.status, 401);
    assert_non_null(strstr(t->res.message, "HTTP 401"));
    assert_non_null(strstr(t->res.message, "Authentication error"));
    assert_null(strstr(t->res.message, "Authorization"));
}

static void assemblyai_rejects_a_bearer_key(void **state) {
    t_http *t = *state;
    snprintf(t->url, sizeof t->url, "%s/v2/transcript/x", fake.base);
    const char *const hdr[] = {"Authorization: Bearer " AKEY, NULL};
    sl_http_req r = {.url = t->url, .headers = hdr};
    assert_failed_as(t, sl_http_do(t->h, &r, &t->resp, &t->res),
                     SL_EC_HTTP_4XX);
    assert_int_equal(t->resp.status, 401);
}

static void status_429_is_rate_limited_with_retry_after_seconds(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"429\"]");
    assert_failed_as(t, chat(t, 0), SL_EC_RATE_LIMITED);
    assert_int_equal(t->resp.retry_after_ms, 1000);
    assert_int_equal(t->res.delay_ms, 1000);
    assert_non_null(strstr(t->res.message, "retry after 1000 ms"));
}

static void retry_after_ms_wins_over_retry_after(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"429ms\"]");
    assert_failed_as(t, chat(t, 0), SL_EC_RATE_LIMITED);
    assert_int_equal(t->res.delay_ms, 250);
}

static void status_429_insufficient_quota_is_quota_exhausted(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"quota\"]");
    assert_failed_as(t, chat(t, 0), SL_EC_QUOTA_EXHAUSTED);
    assert_non_null(strstr(t->res.message, "exceeded your current quota"));
}

/* ---- transport faults --------------------------------------------------- */

static void slow_response_past_the_timeout_is_timeout(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"timeout\"]");
    int64_t t0 = sl_test_now_ms();
    assert_failed_as(t, chat(t, 300), SL_EC_TIMEOUT);
    int64_t took = sl_test_now_ms() - t0;
    assert_true(took >= 250 && took < 2500);
}

static void connection_reset_mid_body_is_connection(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"reset\"]");
    assert_failed_as(t, chat(t, 0), SL_EC_CONNECTION);
    /* The client recovers on the next request. */
    assert_int_equal(chat(t, 0), 0);
}

static void refused_connection_is_connection(void **state) {
    t_http *t = *state;
    /* Port 1 on loopback: nothing listens there. */
    sl_http_req r = {.what = "probe", .url = "http://127.0.0.1:1/x",
                     .connect_timeout_ms = 1000};
    assert_failed_as(t, sl_http_do(t->h, &r, &t->resp, &t->res),
                     SL_EC_CONNECTION);
    assert_int_equal(t->resp.status, 0);
}

static void truncated_json_is_invalid_response(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"truncated\"]");
    assert_int_equal(chat(t, 0), 0);
    json_t *j = NULL;
    sl_http_req r = {.what = "chat", .method = "POST", .url = t->url};
    int rc = sl_http_json(&r, &t->resp, &j, &t->res);
    assert_null(j);
    assert_failed_as(t, rc, SL_EC_INVALID_RESPONSE);
    assert_non_null(strstr(t->res.message, "truncated JSON"));
}

static void malformed_json_is_invalid_response(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"malformed\"]");
    assert_int_equal(chat(t, 0), 0);
    json_t *j = NULL;
    sl_http_req r = {.what = "chat"};
    assert_failed_as(t, sl_http_json(&r, &t->resp, &j, &t->res),
                     SL_EC_INVALID_RESPONSE);
    assert_non_null(strstr(t->res.message, "malformed JSON"));
}

static void response_over_the_size_cap_is_invalid_response(void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"big\"]");
    snprintf(t->url, sizeof t->url, "%s/v1/chat/completions", fake.base);
    sl_http_req r = {.what = "chat", .method = "POST", .url = t->url,
                     .headers = OAI_HEADERS, .body = CHAT_BODY,
                     .body_len = strlen(CHAT_BODY),
                     .max_response = 1 << 20};
    assert_failed_as(t, sl_http_do(t->h, &r, &t->resp, &t->res),
                     SL_EC_INVALID_RESPONSE);
    assert_non_null(strstr(t->res.message, "larger than 1048576 bytes"));
    assert_true(t->resp.body_len <= (1u << 20));
}

static int abort_after_first_call(void *arg, int64_t sent, int64_t total) {
    (void)sent;
    (void)total;
    return ++*(int *)arg >= 1;
}

static void progress_callback_aborts_the_transfer(void **state) {
    t_http *t = *state;
    int calls = 0;
    fake_faults(&fake, "chat", "[\"sleep:1000\"]");
    snprintf(t->url, sizeof t->url, "%s/v1/chat/completions", fake.base);
    sl_http_req r = {.what = "chat", .method = "POST", .url = t->url,
                     .headers = OAI_HEADERS, .body = CHAT_BODY,
                     .body_len = strlen(CHAT_BODY),
                     .progress = abort_after_first_call,
                     .progress_arg = &calls};
    int64_t t0 = sl_test_now_ms();
    assert_failed_as(t, sl_http_do(t->h, &r, &t->resp, &t->res),
                     SL_EC_RETRYABLE);
    assert_true(sl_test_now_ms() - t0 < 900);
    assert_non_null(strstr(t->res.message, "aborted"));
}

/* ---- secrets ------------------------------------------------------------ */

static void messages_carry_neither_headers_nor_query_nor_user_info(
    void **state) {
    t_http *t = *state;
    fake_faults(&fake, "chat", "[\"500\"]");
    snprintf(t->url, sizeof t->url,
             "http://user:pw-%s@127.0.0.1:%d/v1/chat/completions?key=%s",
             OKEY, fake.port, OKEY);
    sl_http_req r = {.what = "chat", .method = "POST", .url = t->url,
                     .headers = OAI_HEADERS, .body = CHAT_BODY,
                     .body_len = strlen(CHAT_BODY)};
    int rc = sl_http_do(t->h, &r, &t->resp, &t->res);
    assert_int_not_equal(rc, 0);
    assert_null(strstr(t->res.message, OKEY));
    assert_null(strstr(t->res.message, "pw-"));
    assert_null(strstr(t->res.message, "key="));
    assert_null(strstr(t->res.message, "Bearer"));
    assert_non_null(strstr(t->res.message, "/v1/chat/completions"));
}

static void a_key_echoed_by_the_server_is_redacted(void **state) {
    (void)state;
    /* A provider that quotes the key back in its error body. */
    char body[256], text[256];
    snprintf(body, sizeof body, "{\"error\": \"bad key %s\"}", AKEY);
    sl_http_error_text(body, strlen(body), text, sizeof text);
    assert_null(strstr(text, AKEY)); /* made safe at once (text.h) */
    sl_redact(text, sizeof text);
    assert_null(strstr(text, AKEY));
    assert_non_null(strstr(text, "[redacted]"));
}

/* ---- pure functions ------------------------------------------------------ */

static void classify_maps_statuses_to_classes(void **state) {
    (void)state;
    assert_int_equal(sl_http_classify(200, NULL), -1);
    assert_int_equal(sl_http_classify(204, NULL), -1);
    assert_int_equal(sl_http_classify(500, NULL), SL_EC_HTTP_5XX);
    assert_int_equal(sl_http_classify(502, NULL), SL_EC_HTTP_5XX);
    assert_int_equal(sl_http_classify(408, NULL), SL_EC_HTTP_5XX);
    assert_int_equal(sl_http_classify(409, NULL), SL_EC_HTTP_5XX);
    assert_int_equal(sl_http_classify(429, "{}"), SL_EC_RATE_LIMITED);
    assert_int_equal(
        sl_http_classify(429, "{\"error\":{\"code\":\"insufficient_quota\"}}"),
        SL_EC_QUOTA_EXHAUSTED);
    assert_int_equal(sl_http_classify(400, NULL), SL_EC_HTTP_4XX);
    assert_int_equal(sl_http_classify(401, NULL), SL_EC_HTTP_4XX);
    assert_int_equal(sl_http_classify(301, NULL), SL_EC_HTTP_4XX);
}

static void retry_after_parses_seconds_and_http_dates(void **state) {
    (void)state;
    int64_t now = 1700000000; /* Tue, 14 Nov 2023 22:13:20 GMT */
    assert_int_equal(sl_http_parse_retry_after("7", now), 7000);
    assert_int_equal(sl_http_parse_retry_after(" 0", now), 0);
    assert_int_equal(sl_http_parse_retry_after("1.5", now), 1500);
    assert_int_equal(
        sl_http_parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now),
        30000);
    /* A date in the past means "now". */
    assert_int_equal(
        sl_http_parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now), 0);
    /* Capped at an hour. */
    assert_int_equal(sl_http_parse_retry_after("999999", now), 3600000);
    assert_int_equal(sl_http_parse_retry_after("soon", now), -1);
    assert_int_equal(sl_http_parse_retry_after("-3", now), -1);
    assert_int_equal(sl_http_parse_retry_after("", now), -1);
    assert_int_equal(sl_http_parse_retry_after(NULL, now), -1);
}

static void error_text_reads_both_provider_formats(void **state) {
    (void)state;
    char buf[128];
    const char *a = "{\"error\": \"Transcript not found\"}";
    sl_http_error_text(a, strlen(a), buf, sizeof buf);
    assert_string_equal(buf, "Transcript not found");
    const char *o = "{\"error\": {\"message\": \"Rate limit reached\", "
                    "\"type\": \"requests\", \"code\": \"x\"}}";
    sl_http_error_text(o, strlen(o), buf, sizeof buf);
    assert_string_equal(buf, "Rate limit reached");
    const char *h = "<html>\n<b>Bad gateway</b></html>";
    sl_http_error_text(h, strlen(h), buf, sizeof buf);
    assert_string_equal(buf, "Bad gateway"); /* no title: its text */
    sl_http_error_text(NULL, 0, buf, sizeof buf);
    assert_string_equal(buf, "");
}

static void non_http_urls_are_refused(void **state) {
    t_http *t = *state;
    sl_http_req r = {.url = "file:///etc/passwd"};
    int rc = sl_http_do(t->h, &r, &t->resp, &t->res);
    assert_int_equal(rc, -SL_EINVAL);
    assert_failed_as(t, rc, SL_EC_INVALID_INPUT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(post_from_memory_returns_parsed_json),
        T(post_streams_a_file_body_with_its_length),
        T(missing_body_file_is_invalid_input),
        T(sequential_requests_reuse_one_connection),
        T(status_500_and_503_are_http_5xx),
        T(status_408_and_409_retry_like_5xx),
        T(status_400_and_404_are_http_4xx),
        T(wrong_key_is_http_4xx_without_the_key),
        T(assemblyai_rejects_a_bearer_key),
        T(status_429_is_rate_limited_with_retry_after_seconds),
        T(retry_after_ms_wins_over_retry_after),
        T(status_429_insufficient_quota_is_quota_exhausted),
        T(slow_response_past_the_timeout_is_timeout),
        T(connection_reset_mid_body_is_connection),
        T(refused_connection_is_connection),
        T(truncated_json_is_invalid_response),
        T(malformed_json_is_invalid_response),
        T(response_over_the_size_cap_is_invalid_response),
        T(progress_callback_aborts_the_transfer),
        T(messages_carry_neither_headers_nor_query_nor_user_info),
        T(a_key_echoed_by_the_server_is_redacted),
        T(classify_maps_statuses_to_classes),
        T(retry_after_parses_seconds_and_http_dates),
        T(error_text_reads_both_provider_formats),
        T(non_http_urls_are_refused),
#undef T
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
