/* test_text.c - the sanitiser and the secret redactor (engine/text.h):
 * every secret length and position in a full buffer (the stack overflow
 * of issue 11), whole-token matching of short secrets, invalid UTF-8, NUL
 * bytes, cuts between characters, JSON values and their reals. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "testlib.h"
#include "text.h"

#define LONG_KEY "sk-live-0123456789abcdef"

static int setup_group(void **state) {
    (void)state;
    setenv("PGPASSWORD", "postgres", 1);
    setenv("TEST_API_KEY", LONG_KEY, 1);
    setenv("A_TOKEN", "tok-123", 1);
    setenv("SHORT_SECRET", "abc", 1); /* under 6 bytes: never a secret */
    sl_redact_reload();
    return 0;
}

static void assert_safe(const char *s, size_t cap) {
    size_t n = strlen(s);
    assert_true(n < cap);
    assert_true(sl_text_valid(s, n));
}

/* Issue 11: a 6..9 byte secret in the last bytes of a full buffer made
 * `cap - 1 - pos - rl` wrap, and memmove/memcpy wrote past the buffer
 * (ASan: negative-size-param). Every length, every position. */
static void redact_secret_at_every_position_of_a_full_buffer(void **state) {
    (void)state;
    static const char *const secrets[] = {"pa55w0", "pa55w0r", "pa55w0rd",
                                          "pa55w0rd9"};
    char name[32];
    for (size_t k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "T%zu_PASSWORD", k);
        setenv(name, secrets[k], 1);
    }
    sl_redact_reload();
    for (size_t k = 0; k < 4; k++) {
        const char *s = secrets[k];
        size_t sl = strlen(s);
        for (size_t cap = 2; cap <= 64; cap++) {
            for (size_t pos = 0; pos + sl + 1 <= cap; pos++) {
                char *buf = malloc(cap); /* exact size: ASan sees overruns */
                memset(buf, ' ', cap);
                memcpy(buf + pos, s, sl);
                buf[cap - 1] = '\0';
                sl_redact(buf, cap);
                assert_safe(buf, cap);
                assert_null(strstr(buf, s));
                free(buf);
            }
        }
    }
    for (size_t k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "T%zu_PASSWORD", k);
        unsetenv(name);
    }
    sl_redact_reload();
}

/* The reported case itself: progress detail "reading: " + 494 x +
 * "postgres", exactly filling a 512-byte buffer. The password ends a
 * longer word here, so it is left as it is (whole tokens only). */
static void redact_reported_progress_detail_does_not_overflow(void **state) {
    (void)state;
    char buf[512] = "reading: ";
    memset(buf + 9, 'x', 494);
    memcpy(buf + 503, "postgres", 9);
    assert_int_equal(strlen(buf), 511);
    sl_redact(buf, sizeof buf);
    assert_safe(buf, sizeof buf);
    assert_int_equal(strlen(buf), 511);
    /* As a token it goes, and the buffer still holds. */
    buf[502] = ' ';
    sl_redact(buf, sizeof buf);
    assert_safe(buf, sizeof buf);
    assert_null(strstr(buf, " postgres"));
}

static void short_secret_matches_only_whole_tokens(void **state) {
    (void)state;
    char out[256];
    const char *in = "postgresql://postgres:postgres@db/postgres_x "
                     "(postgres) xpostgres";
    sl_text_copy(out, sizeof out, in, strlen(in));
    assert_string_equal(out, "postgresql://[redacted]:[redacted]@db/"
                             "postgres_x ([redacted]) xpostgres");
    in = "tok-123tok-123";
    sl_text_copy(out, sizeof out, in, strlen(in));
    assert_string_equal(out, "tok-123tok-123");
    in = "a tok-123, abc";
    sl_text_copy(out, sizeof out, in, strlen(in));
    assert_string_equal(out, "a [redacted], abc");
}

static void long_secret_matches_anywhere(void **state) {
    (void)state;
    char out[256];
    const char *in = "Bearer " LONG_KEY "xyz x" LONG_KEY LONG_KEY;
    sl_text_copy(out, sizeof out, in, strlen(in));
    assert_string_equal(out, "Bearer [redacted]xyz x[redacted][redacted]");
    /* A short secret against a long one still stands alone. */
    in = "postgres" LONG_KEY;
    sl_text_copy(out, sizeof out, in, strlen(in));
    assert_string_equal(out, "[redacted][redacted]");
}

static void invalid_bytes_and_nul_become_replacement_characters(void **state) {
    (void)state;
    char out[64];
    sl_text_copy(out, sizeof out, "a\xff" "b", 3);
    assert_string_equal(out, "a\xEF\xBF\xBD" "b");
    sl_text_copy(out, sizeof out, "a\0b", 3);
    assert_string_equal(out, "a\xEF\xBF\xBD" "b");
    /* A truncated sequence is one U+FFFD; an overlong form and a
     * surrogate are ill-formed byte by byte. */
    sl_text_copy(out, sizeof out, "\xE2\x82x", 3);
    assert_string_equal(out, "\xEF\xBF\xBDx");
    sl_text_copy(out, sizeof out, "\xC0\xAF", 2);
    assert_string_equal(out, "\xEF\xBF\xBD\xEF\xBF\xBD");
    sl_text_copy(out, sizeof out, "\xED\xA0\x80", 3);
    assert_true(sl_text_valid(out, strlen(out)));
    sl_text_copy(out, sizeof out, "\xF0\x9F\x98\x80 \xC3\xA9", 7);
    assert_string_equal(out, "\xF0\x9F\x98\x80 \xC3\xA9");
    assert_false(sl_text_valid("a\0b", 3));
    assert_false(sl_text_valid("\xff", 1));
}

/* "é" and "😀" cut at every buffer size: always between characters, with
 * "…" when shortened (and room for it). */
static void cut_only_between_whole_characters(void **state) {
    (void)state;
    char in[400] = "";
    for (int i = 0; i < 60; i++) strcat(in, i % 3 ? "\xC3\xA9" : "\xF0\x9F\x98\x80");
    size_t len = strlen(in);
    for (size_t cap = 1; cap <= len + 2; cap++) {
        char *out = malloc(cap);
        size_t n = sl_text_copy(out, cap, in, len);
        assert_int_equal(n, strlen(out));
        assert_safe(out, cap);
        if (n < len && cap > 4) {
            assert_true(n >= 3);
            assert_memory_equal(out + n - 3, "\xE2\x80\xA6", 3);
            assert_memory_equal(out, in, n - 3);
        }
        if (cap > len) assert_string_equal(out, in);
        free(out);
    }
}

static void a_secret_is_redacted_before_the_cut(void **state) {
    (void)state;
    char out[20];
    const char *in = "key=" LONG_KEY " and more";
    sl_text_copy(out, sizeof out, in, strlen(in));
    assert_null(strstr(out, "sk-live"));
    assert_string_equal(out, "key=[redacted] a\xE2\x80\xA6");
}

static void sanitised_text_is_a_fixed_point(void **state) {
    (void)state;
    static const char in[] = "x\xff postgres \0 " LONG_KEY " \xC3\xA9";
    size_t len = sizeof in - 1;
    char a[128], b[128];
    size_t n = sl_text_copy(a, sizeof a, in, len);
    sl_text_copy(b, sizeof b, a, n);
    assert_string_equal(a, b);
}

static void dup_has_no_limit_unless_asked(void **state) {
    (void)state;
    size_t len = 1 << 20;
    char *big = malloc(len);
    for (size_t i = 0; i < len; i++) big[i] = (i % 7) ? 'a' : '\xff';
    char *out = sl_text_dup(big, len, 0);
    assert_non_null(out);
    assert_true(sl_text_valid(out, strlen(out)));
    assert_true(strlen(out) > len);
    free(out);
    out = sl_text_dup(big, len, 100);
    assert_true(strlen(out) <= 100);
    assert_true(sl_text_valid(out, strlen(out)));
    free(out);
    free(big);
}

static void format_cuts_the_whole_result_between_characters(void **state) {
    (void)state;
    char arg[3000] = "";
    for (int i = 0; i < 1000; i++) strcat(arg, "\xC3\xA9");
    char out[101];
    size_t n = sl_text_format(out, sizeof out, "msg: %s (%d)", arg, 7);
    assert_true(n <= 100);
    assert_true(sl_text_valid(out, n));
    assert_memory_equal(out + n - 3, "\xE2\x80\xA6", 3);
}

static void json_strings_and_keys_are_made_safe(void **state) {
    (void)state;
    json_error_t je;
    json_t *v = json_loads("{\"s\": \"x\\u0000y\", \"k\": [\"postgres\", "
                           "\"" LONG_KEY "\"], \"n\": 3, \"r\": 0.55}",
                           JSON_ALLOW_NUL, &je);
    assert_non_null(v);
    json_object_setn_new(v, "a\0b", 3, json_true());
    char *s = sl_text_json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s, "{\"a\xEF\xBF\xBD" "b\":true,"
                           "\"k\":[\"[redacted]\",\"[redacted]\"],\"n\":3,"
                           "\"r\":0.55,\"s\":\"x\xEF\xBF\xBDy\"}");
    free(s);
    json_decref(v);
}

static void json_reals_read_back_exactly(void **state) {
    (void)state;
    json_t *v = json_pack("[f, f, f]", 0.55, 0.1 + 0.2, 1e300);
    char *s = sl_text_json_dumps(v, JSON_COMPACT);
    json_t *back = json_loads(s, 0, NULL);
    assert_true(json_equal(v, back));
    free(s);
    json_decref(back);
    json_decref(v);
    v = json_pack("{s:f, s:f}", "confidence", 0.55, "x", 0.125);
    s = sl_text_json_dumps(v, JSON_COMPACT);
    assert_string_equal(s, "{\"confidence\":0.55,\"x\":0.125}");
    free(s);
    json_decref(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(redact_secret_at_every_position_of_a_full_buffer),
        cmocka_unit_test(redact_reported_progress_detail_does_not_overflow),
        cmocka_unit_test(short_secret_matches_only_whole_tokens),
        cmocka_unit_test(long_secret_matches_anywhere),
        cmocka_unit_test(invalid_bytes_and_nul_become_replacement_characters),
        cmocka_unit_test(cut_only_between_whole_characters),
        cmocka_unit_test(a_secret_is_redacted_before_the_cut),
        cmocka_unit_test(sanitised_text_is_a_fixed_point),
        cmocka_unit_test(dup_has_no_limit_unless_asked),
        cmocka_unit_test(format_cuts_the_whole_result_between_characters),
        cmocka_unit_test(json_strings_and_keys_are_made_safe),
        cmocka_unit_test(json_reals_read_back_exactly),
    };
    return cmocka_run_group_tests(tests, setup_group, NULL);
}
