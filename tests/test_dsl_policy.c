/* test_dsl_policy.c - the loader's side of the queue policies:
 * `retention:`, `fair:` and `limit:` (docs/dsl.md), their defaults and
 * their errors at file:line:col. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsltest.h"
#include "testlib.h"

#include "dsl.h"
#include "error.h"

/* A standalone stage with a text column account_id; keys from line 7. */
#define HEAD                                                                   \
    "pipeline: p\nsecurity: {rls: false}\nstages:\n"                           \
    "  a:\n    queue: a_jobs\n    handler: noop\n"                             \
    "    columns: {account_id: text}\n"

static sl_model *load_ok(const char *yaml) {
    sl_model *m = NULL;
    sl_diags d = {0};
    if (sl_dsl_load_string("t.yaml", yaml, strlen(yaml), &m, &d) != 0)
        fail_msg("load failed:\n%s", sl_test_diags(&d));
    sl_diags_free(&d);
    return m;
}

static void stage_without_policies_keeps_everything_in_plain_order(
    void **state) {
    (void)state;
    sl_model *m = load_ok(HEAD);
    const sl_stage *s = &m->pipelines[0].stages[0];
    for (int i = 0; i < SL_RETAIN__COUNT; i++)
        assert_int_equal(s->retention_ms[i], -1);
    assert_null(s->fair_key);
    assert_null(s->limit_key);
    assert_int_equal(s->limit_max, 0);
    sl_model_free(m);
}

static void policies_are_read_into_the_model(void **state) {
    (void)state;
    sl_model *m = load_ok(HEAD "    retention: {done: 7d, cancelled: 0s}\n"
                               "    fair: {key: account_id}\n"
                               "    limit: {key: account_id, max: 2}\n");
    const sl_stage *s = &m->pipelines[0].stages[0];
    assert_int_equal(s->retention_ms[SL_RETAIN_DONE], 7LL * 86400000);
    assert_int_equal(s->retention_ms[SL_RETAIN_ERROR], -1);
    assert_int_equal(s->retention_ms[SL_RETAIN_CANCELLED], 0);
    assert_string_equal(s->fair_key, "account_id");
    assert_string_equal(s->limit_key, "account_id");
    assert_int_equal(s->limit_max, 2);
    sl_model_free(m);
}

static void retention_refuses_bad_durations_and_unknown_statuses(
    void **state) {
    (void)state;
    sl_test_expect_diag(NULL, 0, HEAD "    retention: {done: 7x}\n", "t.yaml",
                        8, 23, "retention.done: expected a duration");
    sl_test_expect_diag(NULL, 0, HEAD "    retention: {errors: 1d}\n",
                        "t.yaml", 8, 17, "did you mean 'error'?");
}

static void fair_and_limit_keys_must_be_declared_columns(void **state) {
    (void)state;
    sl_test_expect_diag(NULL, 0, HEAD "    fair: {key: acount_id}\n", "t.yaml",
                        8, 17,
                        "fair.key: 'acount_id' is not a declared column of"
                        " the stage (did you mean 'account_id'?)");
    sl_test_expect_diag(NULL, 0, HEAD "    fair: {}\n", "t.yaml", 8, 11,
                        "fair: missing required key 'key'");
    sl_test_expect_diag(NULL, 0, HEAD "    limit: {key: account_id}\n",
                        "t.yaml", 8, 12, "limit: missing required key 'max'");
    sl_test_expect_diag(NULL, 0,
                        HEAD "    limit: {key: account_id, max: 0}\n",
                        "t.yaml", 8, 35,
                        "limit.max: must be between 1 and 10000, got 0");
    /* Claims order the keys; json has no ordering. */
    sl_test_expect_diag(NULL, 0,
                        "pipeline: p\nsecurity: {rls: false}\nstages:\n"
                        "  a:\n    queue: a_jobs\n    handler: noop\n"
                        "    columns: {doc: json}\n"
                        "    fair: {key: doc}\n",
                        "t.yaml", 8, 17,
                        "fair.key: column 'doc' has type json, which cannot"
                        " be ordered; declare it jsonb");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            stage_without_policies_keeps_everything_in_plain_order),
        cmocka_unit_test(policies_are_read_into_the_model),
        cmocka_unit_test(retention_refuses_bad_durations_and_unknown_statuses),
        cmocka_unit_test(fair_and_limit_keys_must_be_declared_columns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
