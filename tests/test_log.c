/* test_log.c - error classes and secret redaction. */
#include <stdlib.h>
#include <string.h>

#include "errclass.h"
#include "log.h"
#include "testlib.h"

static void errclass_names_round_trip(void **state) {
    (void)state;
    for (int c = 0; c < SL_EC__COUNT; c++)
        assert_int_equal(sl_errclass_parse(sl_errclass_name(c)), c);
    assert_int_equal(sl_errclass_parse("nope"), -1);
}

static void default_mask_retries_transient_classes_only(void **state) {
    (void)state;
    unsigned m = sl_errclass_default_mask();
    assert_true(m & (1u << SL_EC_TIMEOUT));
    assert_true(m & (1u << SL_EC_HTTP_5XX));
    assert_true(m & (1u << SL_EC_RATE_LIMITED));
    assert_false(m & (1u << SL_EC_HTTP_4XX));
    assert_false(m & (1u << SL_EC_INVALID_INPUT));
    assert_false(m & (1u << SL_EC_QUOTA_EXHAUSTED));
}

static void redact_replaces_every_secret_occurrence(void **state) {
    (void)state;
    setenv("TEST_API_KEY", "sk-abcdef123456", 1);
    sl_redact_reload();
    char buf[128] = "auth sk-abcdef123456 and again sk-abcdef123456!";
    sl_redact(buf, sizeof buf);
    assert_string_equal(buf, "auth [redacted] and again [redacted]!");
    assert_null(strstr(buf, "sk-abc"));
}

static void redact_truncates_instead_of_overflowing(void **state) {
    (void)state;
    setenv("OTHER_TOKEN", "tok123456", 1);
    sl_redact_reload();
    char buf[16] = "x tok123456 yyy";
    sl_redact(buf, sizeof buf);
    assert_true(strlen(buf) < sizeof buf);
    assert_null(strstr(buf, "tok123456"));
}

static void redact_dup_grows_instead_of_truncating(void **state) {
    (void)state;
    setenv("SHORT_SECRET", "abcdef", 1);
    sl_redact_reload();
    char *out = sl_redact_dup("{\"a\":\"abcdef\",\"b\":\"abcdef abcdef\"}");
    assert_non_null(out);
    assert_string_equal(out, "{\"a\":\"[redacted]\",\"b\":"
                             "\"[redacted] [redacted]\"}");
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(errclass_names_round_trip),
        cmocka_unit_test(default_mask_retries_transient_classes_only),
        cmocka_unit_test(redact_replaces_every_secret_occurrence),
        cmocka_unit_test(redact_truncates_instead_of_overflowing),
        cmocka_unit_test(redact_dup_grows_instead_of_truncating),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
