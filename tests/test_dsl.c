/* test_dsl.c - the pipeline loader: what it accepts (the model it builds)
 * and what it refuses (each error's message and exact line:column). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsltest.h"
#include "testlib.h"

#include "dsl.h"
#include "error.h"
#include "handler.h"

/* ---- helpers ------------------------------------------------------------ */

static void expect_error_named(const char *name, const char *yaml, int line,
                               int col, const char *msg) {
    sl_test_expect_diag(NULL, 0, yaml, name, line, col, msg);
}

static void expect_error(const char *yaml, int line, int col, const char *msg) {
    sl_test_expect_diag(NULL, 0, yaml, "t.yaml", line, col, msg);
}

/* Loads yaml that must be valid; fails the test with every diagnostic
 * otherwise. */
static sl_model *load_ok_named(const char *name, const char *yaml) {
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = sl_dsl_load_string(name, yaml, strlen(yaml), &m, &d);
    if (rc != 0) {
        char *all = sl_test_diags(&d);
        fail_msg("load failed (%d):\n%s", rc, all);
    }
    assert_int_equal(d.n, 0);
    assert_non_null(m);
    sl_diags_free(&d);
    return m;
}

static sl_model *load_ok(const char *yaml) {
    return load_ok_named("t.yaml", yaml);
}

/* A standalone pipeline without RLS, stages at line 4. */
#define HEAD "pipeline: p\nsecurity: {rls: false}\nstages:\n"
/* Stage a (lines 4-6); its further keys start at line 7. */
#define STAGE_A "  a:\n    queue: a_jobs\n    handler: noop\n"
/* A pipeline with a subject; stage a at lines 7-9, keys from line 10. */
#define SUBJ                                                                   \
    "pipeline: p\nsubject:\n  table: items\n  status:\n"                       \
    "    values: [new, busy, done, failed]\nstages:\n"                         \
    "  a:\n    queue: a_jobs\n    handler: noop\n"

#define INVALID(name, yaml, line, col, msg)                                    \
    static void name(void **state) {                                           \
        (void)state;                                                           \
        expect_error(yaml, line, col, msg);                                    \
    }

/* ---- refused: YAML itself ------------------------------------------------ */

INVALID(yaml_syntax_error_is_reported_where_the_parser_stopped,
        HEAD "  a: {queue: a_jobs, handler: noop\n", 5, 1,
        "YAML syntax error: did not find expected ',' or '}'")
INVALID(duplicate_key_names_the_first_definition,
        HEAD STAGE_A "    queue: b_jobs\n", 7, 5,
        "duplicate key 'queue' (first defined at line 5)")
INVALID(yaml_anchor_is_refused, HEAD "  a: &s {queue: a_jobs, handler: noop}\n",
        4, 6, "YAML anchor '&s': anchors and aliases are not supported")
INVALID(yaml_alias_is_refused,
        "pipeline: p\nsecurity: {rls: false}\nstages: *s\n", 3, 9,
        "YAML alias '*s'")
INVALID(yaml_tag_is_refused, "pipeline: !!str p\n", 1, 11,
        "YAML tag 'tag:yaml.org,2002:str' is not supported")
INVALID(second_yaml_document_is_refused, HEAD STAGE_A "---\npipeline: q\n", 7,
        1, "a second YAML document")
INVALID(top_level_list_is_refused, "- a\n- b\n", 1, 1,
        "expected a mapping with 'pipeline' and 'stages' at the top level, "
        "got a list")
INVALID(empty_file_is_refused, "", 1, 1, "the file is empty")
INVALID(comment_only_file_is_refused, "# nothing here\n\n", 1, 1,
        "the file is empty")

/* ---- refused: keys, types, required fields ---------------------------------
 */

INVALID(unknown_top_level_key_suggests_the_nearest,
        "pipeline: p\nsecurity: {rls: false}\nstage:\n  a: {queue: a_jobs, "
        "handler: noop}\n",
        3, 1, "unknown key 'stage' in a pipeline (did you mean 'stages'?)")
INVALID(unknown_retry_key_suggests_max_attempts,
        HEAD STAGE_A "    retry: {max_attempt: 3}\n", 7, 13,
        "unknown key 'max_attempt' in retry (did you mean 'max_attempts'?)")
INVALID(unknown_stage_key_suggests_the_nearest,
        HEAD STAGE_A "    concurency: 2\n", 7, 5,
        "unknown key 'concurency' in a stage (did you mean 'concurrency'?)")
INVALID(missing_pipeline_name_is_reported,
        "security: {rls: false}\nstages:\n  a: {queue: a_jobs, handler: "
        "noop}\n",
        1, 1, "missing required key 'pipeline'")
INVALID(missing_stages_is_reported, "pipeline: p\nsecurity: {rls: false}\n", 1,
        1, "missing required key 'stages'")
INVALID(missing_queue_is_reported_at_the_stage, HEAD "  a: {handler: noop}\n",
        4, 3, "stage 'a': missing required key 'queue'")
INVALID(missing_handler_is_reported_at_the_stage, HEAD "  a: {queue: a_jobs}\n",
        4, 3, "stage 'a': missing required key 'handler'")
INVALID(stages_as_a_list_is_a_type_error,
        "pipeline: p\nsecurity: {rls: false}\nstages: [a, b]\n", 3, 9,
        "stages: expected a mapping, got a list")
INVALID(stage_as_a_scalar_is_a_type_error, HEAD "  a: noop\n", 4, 6,
        "stage: expected a mapping, got 'noop'")
INVALID(columns_as_a_list_is_a_type_error, HEAD STAGE_A "    columns: [a, b]\n",
        7, 14, "columns: expected a mapping, got a list")
INVALID(concurrency_must_be_an_integer, HEAD STAGE_A "    concurrency: many\n",
        7, 18, "concurrency: expected an integer, got 'many'")
INVALID(concurrency_is_capped, HEAD STAGE_A "    concurrency: 2000\n", 7, 18,
        "concurrency: must be between 1 and 1024, got 2000")
INVALID(sql_writes_must_be_a_boolean, HEAD STAGE_A "    sql_writes: yes\n", 7,
        17, "sql_writes: expected true or false, got 'yes'")
INVALID(subject_status_needs_values,
        "pipeline: p\nsubject:\n  table: items\n  status: {column: state}\n"
        "stages:\n  a: {queue: a_jobs, handler: noop}\n",
        4, 11, "subject.status: missing required key 'values'")
INVALID(subject_status_values_must_not_be_empty,
        "pipeline: p\nsubject:\n  table: items\n  status:\n    values: []\n"
        "stages:\n  a: {queue: a_jobs, handler: noop}\n",
        5, 13, "subject.status.values: expected at least one value")
INVALID(standalone_queue_needs_security_inherit,
        "pipeline: p\nstages:\n  a:\n    queue: a_jobs\n    handler: noop\n", 1,
        11, "has no subject, so it needs security.inherit")

/* ---- refused: ranges and units --------------------------------------------
 */

INVALID(max_attempts_below_one_is_refused,
        HEAD STAGE_A "    retry:\n      max_attempts: 0\n", 8, 21,
        "max_attempts: must be >= 1, got 0")
INVALID(factor_below_one_is_refused,
        HEAD STAGE_A "    retry:\n      factor: 0.5\n", 8, 15,
        "factor: must be >= 1, got 0.5")
INVALID(max_delay_below_initial_is_refused,
        HEAD STAGE_A "    retry:\n      initial: 10s\n      max_delay: 5s\n", 9,
        18, "max_delay 5s must be >= initial 10s")
INVALID(jitter_outside_zero_to_one_is_refused,
        HEAD STAGE_A "    retry:\n      jitter: 1.5\n", 8, 15,
        "jitter: must be between 0 and 1, got 1.5")
INVALID(backoff_must_be_fixed_or_exponential,
        HEAD STAGE_A "    retry:\n      backoff: linear\n", 8, 16,
        "backoff: expected fixed or exponential, got 'linear'")
INVALID(unknown_error_class_suggests_the_nearest,
        HEAD STAGE_A "    retry:\n      on: [timeout, http_500]\n", 8, 21,
        "on: unknown error class 'http_500' (did you mean 'http_5xx'?)")
INVALID(heartbeat_must_be_shorter_than_timeout,
        HEAD STAGE_A "    timeout: 5s\n    heartbeat: 5s\n", 8, 16,
        "heartbeat 5s must be shorter than timeout 5s")
INVALID(heartbeat_must_be_shorter_than_lease,
        HEAD STAGE_A "    lease: 10s\n    heartbeat: 10s\n", 8, 16,
        "heartbeat 10s must be shorter than lease 10s")
INVALID(default_heartbeat_must_be_shorter_than_timeout,
        HEAD STAGE_A "    timeout: 2s\n", 7, 14,
        "heartbeat 10s (the default, lease/3) must be shorter than timeout 2s")
INVALID(duration_without_unit_is_refused, HEAD STAGE_A "    timeout: 30\n", 7,
        14,
        "timeout: expected a duration such as 250ms, 3s, 5m, 2h or 1d, got "
        "'30' (a number needs a unit)")
INVALID(sweep_pending_age_needs_a_unit,
        "pipeline: p\nsecurity: {rls: false}\nsweep: {pending_age: 60}\n"
        "stages:\n  a: {queue: a_jobs, handler: noop}\n",
        3, 22, "pending_age: expected a duration")
INVALID(progress_above_100_is_refused,
        SUBJ "    status:\n      on_done: {status: done, progress: 101}\n", 11,
        41, "progress: must be between 0 and 100, got 101")
INVALID(progress_from_above_to_is_refused,
        SUBJ "    status:\n      progress: {from: 90, to: 80}\n", 11, 24,
        "progress.from 90 is greater than progress.to 80")
INVALID(progress_going_backwards_along_next_is_refused,
        SUBJ "    status:\n      on_done: {progress: 50}\n    next: b\n"
             "  b:\n    queue: b_jobs\n    handler: noop\n    status:\n"
             "      on_done: {progress: 40}\n",
        17, 27,
        "progress goes backwards: on_done progress 40 of stage 'b' is lower "
        "than on_done progress 50 of stage 'a'")

/* ---- refused: names
 * ----------------------------------------------------------- */

INVALID(upper_case_identifier_is_refused,
        HEAD "  a:\n    queue: Upload_Jobs\n    handler: noop\n", 5, 12,
        "queue 'Upload_Jobs' is not a valid name")
INVALID(identifier_longer_than_63_bytes_is_refused,
        HEAD
        "  a:\n    queue: "
        "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq\n"
        "    handler: noop\n",
        5, 12, "is too long: 64 bytes, at most 63")
INVALID(sql_reserved_word_is_refused_as_a_table,
        HEAD "  a:\n    queue: select\n    handler: noop\n", 5, 12,
        "queue 'select' is an SQL reserved word")
INVALID(identifier_with_a_quote_and_semicolon_is_refused,
        HEAD
        "  a:\n    queue: \"x\\\"; drop table t; --\"\n    handler: noop\n",
        5, 12, "is not a valid name")
INVALID(interpolation_in_an_identifier_is_refused,
        HEAD "  a:\n    queue: ${QUEUE}\n    handler: noop\n", 5, 12,
        "${...} interpolation is not allowed in names")
INVALID(engine_managed_column_name_is_refused,
        HEAD STAGE_A "    columns:\n      attempts: int\n", 8, 7,
        "column 'attempts' is managed by the engine")
INVALID(subject_foreign_key_as_declared_column_is_refused,
        SUBJ "    columns:\n      item_id: uuid\n", 11, 7,
        "column 'item_id' is the subject's foreign key")
INVALID(unsupported_column_type_is_refused,
        HEAD STAGE_A "    columns:\n      note: varchar\n", 8, 13,
        "column 'note': unsupported type 'varchar'")
INVALID(overlong_column_type_is_refused,
        HEAD STAGE_A
        "    columns:\n      note: t<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<"
        "<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<ext\n",
        8, 13, "column 'note': unsupported type 't<<<")
INVALID(malformed_references_is_refused,
        HEAD STAGE_A
        "    columns:\n      owner: {type: uuid, references: a.b.c}\n",
        8, 39, "references: expected table.column")

/* ---- refused: references between things
 * ------------------------------------------ */

INVALID(unknown_handler_suggests_the_nearest,
        HEAD "  a:\n    queue: a_jobs\n    handler: noopp\n", 6, 14,
        "unknown handler 'noopp' (did you mean 'noop'?)")
INVALID(unknown_handler_lists_the_registered_ones,
        HEAD "  a:\n    queue: a_jobs\n    handler: transcoder\n", 6, 14,
        "unknown handler 'transcoder' (registered: noop")
INVALID(lua_handler_needs_a_run_hook,
        HEAD "  a:\n    queue: a_jobs\n    handler: lua\n", 6, 14,
        "handler 'lua' needs a 'run' hook")
INVALID(status_outside_subject_values_suggests_the_nearest,
        SUBJ "    status:\n      on_start: {status: bussy}\n", 11, 26,
        "status 'bussy' is not one of subject.status.values (did you mean "
        "'busy'?)")
INVALID(status_mapping_without_subject_is_refused,
        HEAD STAGE_A "    status:\n      on_done: {progress: 10}\n", 8, 7,
        "a status mapping needs a subject")
INVALID(next_stage_that_does_not_exist_suggests_the_nearest,
        HEAD "  upload:\n    queue: a_jobs\n    handler: noop\n"
             "    next: transcibe\n  transcribe:\n    queue: b_jobs\n"
             "    handler: noop\n",
        7, 11,
        "next stage 'transcibe' does not exist in pipeline 'p' (did you mean "
        "'transcribe'?)")
INVALID(cycle_prints_its_path,
        HEAD STAGE_A "    next: b\n  b:\n    queue: b_jobs\n    handler: noop\n"
                     "    next: [a]\n",
        11, 12, "cycle in next: a -> b -> a")
INVALID(unreachable_stage_is_refused,
        HEAD STAGE_A "  b:\n    queue: b_jobs\n    handler: noop\n", 7, 3,
        "stage 'b' is not reachable from the entry stage 'a'")
INVALID(same_queue_twice_names_both_places,
        HEAD "  a:\n    queue: jobs\n    handler: noop\n    next: b\n  b:\n"
             "    queue: jobs\n    handler: noop\n",
        9, 12,
        "queue table 'jobs' is already used by stage 'a' of pipeline 'p' "
        "(t.yaml:5:12)")
INVALID(same_channel_twice_names_both_places,
        HEAD "  a:\n    queue: a_jobs\n    channel: ch\n    handler: noop\n"
             "    next: b\n  b:\n    queue: b_jobs\n    channel: ch\n"
             "    handler: noop\n",
        11, 14,
        "channel 'ch' is already used by stage 'a' of pipeline 'p' "
        "(t.yaml:6:14)")
INVALID(map_to_a_column_the_next_stage_lacks_suggests_the_nearest,
        HEAD STAGE_A
        "    next:\n      - stage: b\n        map: {upload_ur: url}\n"
        "  b:\n    queue: b_jobs\n    handler: noop\n"
        "    columns: {upload_url: text}\n",
        9, 15,
        "map: next stage 'b' declares no column 'upload_ur' (did you mean "
        "'upload_url'?)")
INVALID(unset_variable_without_default_is_named,
        HEAD STAGE_A "    with:\n      url: ${SLUICE_TEST_UNSET_VAR}\n", 8, 12,
        "environment variable 'SLUICE_TEST_UNSET_VAR' is not set")
INVALID(malformed_interpolation_is_refused,
        HEAD STAGE_A "    with:\n      url: ${1X}\n", 8, 12,
        "bad interpolation in '${1X}'")
INVALID(missing_lua_hook_file_is_refused,
        HEAD STAGE_A "    hooks:\n      post: {file: nothere.lua}\n", 8, 20,
        "hook 'post': Lua file 'nothere.lua' not found")

static void lua_syntax_error_reports_the_file_and_lua_line(void **state) {
    (void)state;
    sl_test_file("broken.lua", "function post(x)\n  return x +\nend\n");
    const char *path =
        sl_test_file("hooked.yaml", HEAD STAGE_A
                     "    hooks:\n      post: {file: broken.lua}\n");
    const char *paths[] = {path};
    sl_test_expect_diag(paths, 1, NULL, path, 8, 20,
                      "hook 'post': Lua syntax error: broken.lua:3:");
}

static void precompiled_lua_bytecode_is_refused(void **state) {
    (void)state;
    sl_test_file("bytecode.lua", "\x1bLua\x54\x00 not really bytecode");
    const char *path =
        sl_test_file("bytecode.yaml", HEAD STAGE_A
                     "    hooks:\n      post: {file: bytecode.lua}\n");
    const char *paths[] = {path};
    sl_test_expect_diag(paths, 1, NULL, path, 8, 20,
                        "attempt to load a binary chunk");
}

static void same_pipeline_name_in_two_files_is_refused(void **state) {
    (void)state;
    char a[600], b[600];
    snprintf(a, sizeof a, "%s", sl_test_file("one.yaml", HEAD STAGE_A));
    snprintf(b, sizeof b, "%s",
             sl_test_file("two.yaml", HEAD "  b:\n    queue: b_jobs\n"
                                           "    handler: noop\n"));
    const char *paths[] = {a, b};
    char msg[700];
    snprintf(msg, sizeof msg, "pipeline 'p' is already defined at %s:1:11", a);
    sl_test_expect_diag(paths, 2, NULL, b, 1, 11, msg);
}

static void same_queue_in_two_files_is_refused(void **state) {
    (void)state;
    char a[600], b[600];
    snprintf(a, sizeof a, "%s", sl_test_file("q1.yaml", HEAD STAGE_A));
    snprintf(b, sizeof b, "%s",
             sl_test_file("q2.yaml", "pipeline: q\nsecurity: {rls: false}\n"
                                     "stages:\n" STAGE_A));
    const char *paths[] = {a, b};
    char msg[700];
    snprintf(msg, sizeof msg,
             "queue table 'a_jobs' is already used by stage 'a' of pipeline "
             "'p' (%s:5:12)",
             a);
    sl_test_expect_diag(paths, 2, NULL, b, 5, 12, msg);
}

/* A handler whose validate hook wants `with: {model: ...}`. */
static int strict_validate(const sl_stage *stage, char *err, size_t errlen) {
    if (!json_is_string(json_object_get(stage->with, "model"))) {
        snprintf(err, errlen, "with.model is required (a string)");
        return -1;
    }
    return 0;
}

static void strict_run(sl_ctx *ctx, const sl_job *job, void *st,
                       sl_result *res) {
    (void)ctx;
    (void)job;
    (void)st;
    sl_done(res, json_object());
}

static void handler_validate_hook_reports_at_the_stage(void **state) {
    (void)state;
    static const sl_handler strict = {
        .name = "test.strict", .validate = strict_validate, .run = strict_run};
    if (!sl_handler_find("test.strict")) sl_handler_register(&strict);
    expect_error(HEAD "  a:\n    queue: a_jobs\n    handler: test.strict\n"
                      "    with: {model: 3}\n",
                 4, 3,
                 "stage 'a': handler 'test.strict': with.model is required");
    sl_model *m = load_ok(HEAD "  a:\n    queue: a_jobs\n    handler: "
                               "test.strict\n    with: {model: \"x\"}\n");
    sl_model_free(m);
}

static void every_error_is_collected_in_one_run(void **state) {
    (void)state;
    const char *yaml = HEAD "  a:\n    queue: Bad\n    handler: nope\n"
                            "    timeout: 5\n    retry: {max_attempts: 0}\n";
    sl_model *m = NULL;
    sl_diags d = {0};
    assert_int_equal(sl_dsl_load_string("t.yaml", yaml, strlen(yaml), &m, &d),
                     -SL_EINVAL);
    assert_int_equal(d.n, 4);
    /* Sorted by position. */
    assert_int_equal(d.items[0].line, 5);
    assert_int_equal(d.items[1].line, 6);
    assert_int_equal(d.items[2].line, 7);
    assert_int_equal(d.items[3].line, 8);
    sl_diags_free(&d);
}

static void diagnostics_format_as_file_line_col_message(void **state) {
    (void)state;
    const char *yaml = HEAD "  a:\n    queue: a_jobs\n    handler: nop\n";
    sl_model *m = NULL;
    sl_diags d = {0};
    sl_dsl_load_string("dir/p.yaml", yaml, strlen(yaml), &m, &d);
    char *s = sl_diags_format(&d);
    assert_string_equal(
        s, "dir/p.yaml:6:14: unknown handler 'nop' (did you mean 'noop'?)\n");
    free(s);
    sl_diags_free(&d);
}

/* ---- accepted: the model
 * ------------------------------------------------------ */

static void minimal_stage_gets_the_engine_defaults(void **state) {
    (void)state;
    sl_model *m = load_ok(HEAD STAGE_A);
    assert_int_equal(m->npipelines, 1);
    const sl_pipeline *p = &m->pipelines[0];
    assert_string_equal(p->name, "p");
    assert_int_equal(p->has_subject, 0);
    assert_int_equal(p->rls.enabled, 0);
    assert_int_equal(p->sweep_interval_ms, 5000);
    assert_int_equal(p->sweep_age_ms, 60000);
    assert_int_equal(p->nstages, 1);
    const sl_stage *s = &p->stages[0];
    assert_string_equal(s->name, "a");
    assert_string_equal(s->queue, "a_jobs");
    assert_string_equal(s->channel, "a_jobs_channel");
    assert_string_equal(s->handler, "noop");
    assert_true(json_is_object(s->with));
    assert_int_equal(json_object_size(s->with), 0);
    assert_int_equal(s->ncolumns, 0);
    assert_int_equal(s->nhooks, 0);
    assert_int_equal(s->nnext, 0);
    assert_int_equal(s->retry.max_attempts, 5);
    assert_int_equal(s->retry.backoff, SL_BACKOFF_EXPONENTIAL);
    assert_int_equal(s->retry.initial_ms, 1000);
    assert_true(s->retry.factor == 2.0);
    assert_int_equal(s->retry.max_delay_ms, 600000);
    assert_true(s->retry.jitter == 0.1);
    assert_int_equal(s->retry.retry_mask, sl_errclass_default_mask());
    assert_int_equal(s->timeout_ms, 300000);
    assert_int_equal(s->lease_ms, 30000);
    assert_int_equal(s->heartbeat_ms, 10000);
    assert_int_equal(s->concurrency, 1);
    assert_int_equal(s->batch, 0); /* adaptive */
    assert_int_equal(s->priority, 0);
    assert_int_equal(s->sql_writes, 0);
    assert_int_equal(s->status.on_start.progress, -1);
    assert_null(s->status.on_start.status);
    assert_int_equal(s->status.progress_from, -1);
    assert_ptr_equal(s->pipeline, p);
    assert_int_equal(s->line, 4);
    assert_int_equal(s->col, 3);
    sl_model_free(m);
}

static const char full_yaml[] =
    "pipeline: full\n"
    "subject:\n"
    "  table: interviews\n"
    "  status:\n"
    "    values: [queued, working, done, failed]\n"
    "  progress: progress\n"
    "  detail: status_detail\n"
    "  channel: subj_channel\n"
    "sweep: {interval: 2s, pending_age: 90s}\n"
    "defaults:\n"
    "  retry:\n"
    "    max_attempts: 3\n"
    "    backoff: fixed\n"
    "    initial: 250ms\n"
    "    on: [timeout, http_5xx, rate_limited]\n"
    "  timeout: 2m\n"
    "  lease: 45s\n"
    "  concurrency: 4\n"
    "stages:\n"
    "  first:\n"
    "    queue: first_jobs\n"
    "    handler: noop\n"
    "    columns:\n"
    "      media: bytea\n"
    "      owner: {type: UUID, references: accounts.id, not_null: true}\n"
    "      score: double   precision\n"
    "      n: INT\n"
    "    status:\n"
    "      on_start: {status: working, progress: 5, detail: \"Started\"}\n"
    "      on_done: {status: working, progress: 20}\n"
    "      on_error: {status: failed, detail: \"Failed\"}\n"
    "    retry: {max_attempts: 7, fail_on: [http_5xx]}\n"
    "    next:\n"
    "      - stage: second\n"
    "        map: {input: media, who: owner}\n"
    "      - third\n"
    "  second:\n"
    "    queue: second_jobs\n"
    "    channel: second_ch\n"
    "    handler: noop\n"
    "    columns: {input: bytea, who: uuid}\n"
    "    timeout: 30s\n"
    "    heartbeat: 5s\n"
    "    priority: -3\n"
    "    batch: 10\n"
    "    sql_writes: true\n"
    "    status:\n"
    "      progress: {status: working, from: 30, to: 90}\n"
    "      on_done: {status: done, progress: 100}\n"
    "    next: third\n"
    "  third:\n"
    "    queue: third_jobs\n"
    "    handler: noop\n";

static void subject_fields_and_defaults_are_filled(void **state) {
    (void)state;
    sl_model *m = load_ok(full_yaml);
    const sl_pipeline *p = &m->pipelines[0];
    assert_true(p->has_subject);
    assert_string_equal(p->subject.table, "interviews");
    assert_string_equal(p->subject.key, "id");
    assert_string_equal(p->subject.fk, "interview_id");
    assert_string_equal(p->subject.status_column, "status");
    assert_int_equal(p->subject.nstatus_values, 4);
    assert_string_equal(p->subject.status_values[3], "failed");
    assert_string_equal(p->subject.progress_column, "progress");
    assert_string_equal(p->subject.detail_column, "status_detail");
    assert_string_equal(p->subject.channel, "subj_channel");
    /* RLS defaults to the subject. */
    assert_true(p->rls.enabled);
    assert_string_equal(p->rls.table, "interviews");
    assert_string_equal(p->rls.column, "interview_id");
    assert_string_equal(p->rls.key, "id");
    assert_int_equal(p->sweep_interval_ms, 2000);
    assert_int_equal(p->sweep_age_ms, 90000);
    sl_model_free(m);
}

static void stage_inherits_defaults_and_overrides_field_by_field(void **state) {
    (void)state;
    sl_model *m = load_ok(full_yaml);
    const sl_stage *first = sl_model_stage(m, "full", "first");
    const sl_stage *second = sl_model_stage(m, "full", "second");
    assert_non_null(first);
    assert_non_null(second);
    /* first: max_attempts overridden, the rest of retry inherited. */
    assert_int_equal(first->retry.max_attempts, 7);
    assert_int_equal(first->retry.backoff, SL_BACKOFF_FIXED);
    assert_int_equal(first->retry.initial_ms, 250);
    assert_int_equal(first->retry.retry_mask,
                     (1u << SL_EC_TIMEOUT) | (1u << SL_EC_RATE_LIMITED));
    assert_int_equal(first->timeout_ms, 120000);
    assert_int_equal(first->lease_ms, 45000);
    assert_int_equal(first->heartbeat_ms, 15000);
    assert_int_equal(first->concurrency, 4);
    /* second: its own timeout/heartbeat, inherited retry. */
    assert_int_equal(second->retry.max_attempts, 3);
    assert_int_equal(second->retry.retry_mask, (1u << SL_EC_TIMEOUT) |
                                                   (1u << SL_EC_HTTP_5XX) |
                                                   (1u << SL_EC_RATE_LIMITED));
    assert_int_equal(second->timeout_ms, 30000);
    assert_int_equal(second->heartbeat_ms, 5000);
    assert_int_equal(second->priority, -3);
    assert_int_equal(second->batch, 10);
    assert_int_equal(second->sql_writes, 1);
    assert_string_equal(second->channel, "second_ch");
    sl_model_free(m);
}

static void columns_are_normalised_with_references(void **state) {
    (void)state;
    sl_model *m = load_ok(full_yaml);
    const sl_stage *s = sl_model_stage(m, "full", "first");
    assert_int_equal(s->ncolumns, 4);
    assert_string_equal(s->columns[0].name, "media");
    assert_string_equal(s->columns[0].type, "bytea");
    assert_null(s->columns[0].ref_table);
    assert_int_equal(s->columns[0].not_null, 0);
    assert_string_equal(s->columns[1].name, "owner");
    assert_string_equal(s->columns[1].type, "uuid");
    assert_string_equal(s->columns[1].ref_table, "accounts");
    assert_string_equal(s->columns[1].ref_column, "id");
    assert_int_equal(s->columns[1].not_null, 1);
    assert_string_equal(s->columns[2].type, "double precision");
    assert_string_equal(s->columns[3].type, "integer");
    assert_int_equal(s->columns[0].line, 24);
    assert_int_equal(s->columns[0].col, 7);
    sl_model_free(m);
}

static void status_mapping_is_read(void **state) {
    (void)state;
    sl_model *m = load_ok(full_yaml);
    const sl_stage *a = sl_model_stage(m, "full", "first");
    const sl_stage *b = sl_model_stage(m, "full", "second");
    assert_string_equal(a->status.on_start.status, "working");
    assert_int_equal(a->status.on_start.progress, 5);
    assert_string_equal(a->status.on_start.detail, "Started");
    assert_int_equal(a->status.on_done.progress, 20);
    assert_null(a->status.on_done.detail);
    assert_string_equal(a->status.on_error.status, "failed");
    assert_int_equal(a->status.on_error.progress, -1);
    assert_string_equal(a->status.on_error.detail, "Failed");
    assert_int_equal(a->status.progress_from, -1);
    assert_string_equal(b->status.on_progress_status, "working");
    assert_int_equal(b->status.progress_from, 30);
    assert_int_equal(b->status.progress_to, 90);
    assert_null(b->status.on_start.status);
    sl_model_free(m);
}

static void next_and_map_are_resolved(void **state) {
    (void)state;
    sl_model *m = load_ok(full_yaml);
    const sl_pipeline *p = sl_model_pipeline(m, "full");
    const sl_stage *a = &p->stages[0];
    assert_int_equal(a->nnext, 2);
    assert_string_equal(a->next[0].stage_name, "second");
    assert_ptr_equal(a->next[0].stage, &p->stages[1]);
    assert_int_equal(a->next[0].nmap, 2);
    assert_string_equal(a->next[0].map[0].to, "input");
    assert_string_equal(a->next[0].map[0].from, "media");
    assert_string_equal(a->next[0].map[1].to, "who");
    assert_string_equal(a->next[0].map[1].from, "owner");
    assert_ptr_equal(a->next[1].stage, &p->stages[2]);
    assert_int_equal(a->next[1].nmap, 0);
    /* The shorthand `next: third`. */
    assert_int_equal(p->stages[1].nnext, 1);
    assert_ptr_equal(p->stages[1].next[0].stage, &p->stages[2]);
    assert_int_equal(p->stages[2].nnext, 0);
    assert_ptr_equal(sl_model_stage_by_queue(m, "third_jobs"), &p->stages[2]);
    sl_model_free(m);
}

static void with_is_json_with_interpolation_and_typed_scalars(void **state) {
    (void)state;
    setenv("SLUICE_TEST_SET", "/home/x", 1);
    unsetenv("SLUICE_TEST_URL");
    sl_model *m = load_ok(
        HEAD "  a:\n    queue: a_jobs\n    handler: noop\n    with:\n"
             "      url: ${SLUICE_TEST_URL:-http://localhost:1}/v1\n"
             "      home: ${SLUICE_TEST_SET}\n"
             "      n: 3\n      ratio: 0.5\n      flag: true\n"
             "      nothing: ~\n      quoted: \"42\"\n      yes_no: yes\n"
             "      list: [1, two, false]\n"
             "      nested: {a: {b: c}}\n"
             "      dollar: \"$${NOT_A_VAR}\"\n");
    json_t *w = m->pipelines[0].stages[0].with;
    assert_string_equal(json_string_value(json_object_get(w, "url")),
                        "http://localhost:1/v1");
    assert_string_equal(json_string_value(json_object_get(w, "home")),
                        "/home/x");
    assert_int_equal(json_integer_value(json_object_get(w, "n")), 3);
    assert_true(json_real_value(json_object_get(w, "ratio")) == 0.5);
    assert_true(json_is_true(json_object_get(w, "flag")));
    assert_true(json_is_null(json_object_get(w, "nothing")));
    assert_string_equal(json_string_value(json_object_get(w, "quoted")), "42");
    assert_string_equal(json_string_value(json_object_get(w, "yes_no")), "yes");
    json_t *l = json_object_get(w, "list");
    assert_int_equal(json_array_size(l), 3);
    assert_int_equal(json_integer_value(json_array_get(l, 0)), 1);
    assert_string_equal(json_string_value(json_array_get(l, 1)), "two");
    assert_true(json_is_false(json_array_get(l, 2)));
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(w, "nested"), "a"), "b")),
        "c");
    assert_string_equal(json_string_value(json_object_get(w, "dollar")),
                        "${NOT_A_VAR}");
    sl_model_free(m);
}

static void interpolated_variable_overrides_its_default(void **state) {
    (void)state;
    setenv("SLUICE_TEST_URL", "http://example.test", 1);
    sl_model *m = load_ok(HEAD STAGE_A "    with:\n"
                                       "      url: ${SLUICE_TEST_URL:-x}\n");
    assert_string_equal(json_string_value(json_object_get(
                            m->pipelines[0].stages[0].with, "url")),
                        "http://example.test");
    unsetenv("SLUICE_TEST_URL");
    sl_model_free(m);
}

static void interpolation_also_applies_to_durations_and_details(void **state) {
    (void)state;
    setenv("SLUICE_TEST_TIMEOUT", "90s", 1);
    sl_model *m =
        load_ok(SUBJ "    timeout: ${SLUICE_TEST_TIMEOUT}\n"
                     "    status:\n"
                     "      on_done: {detail: \"${SLUICE_TEST_TIMEOUT} "
                     "later\"}\n");
    assert_int_equal(m->pipelines[0].stages[0].timeout_ms, 90000);
    assert_string_equal(m->pipelines[0].stages[0].status.on_done.detail,
                        "90s later");
    unsetenv("SLUICE_TEST_TIMEOUT");
    sl_model_free(m);
}

static void default_foreign_key_is_the_singular_table_name(void **state) {
    (void)state;
    static const struct {
        const char *table, *fk;
    } cases[] = {{"interviews", "interview_id"},
                 {"categories", "category_id"},
                 {"boxes", "box_id"},
                 {"classes", "class_id"},
                 {"staff", "staff_id"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[512];
        snprintf(yaml, sizeof yaml,
                 "pipeline: p\nsubject:\n  table: %s\n  status: {values: [a]}\n"
                 "stages:\n" STAGE_A,
                 cases[i].table);
        sl_model *m = load_ok(yaml);
        assert_string_equal(m->pipelines[0].subject.fk, cases[i].fk);
        sl_model_free(m);
    }
}

static void
standalone_queue_inherits_rls_through_a_declared_column(void **state) {
    (void)state;
    sl_model *m = load_ok(
        "pipeline: gen\nsecurity:\n  inherit: {table: accounts, column: "
        "account_id}\nstages:\n  g:\n    queue: g_jobs\n    handler: noop\n"
        "    columns: {account_id: uuid}\n");
    const sl_pipeline *p = &m->pipelines[0];
    assert_true(p->rls.enabled);
    assert_string_equal(p->rls.table, "accounts");
    assert_string_equal(p->rls.column, "account_id");
    assert_string_equal(p->rls.key, "id");
    sl_model_free(m);
}

INVALID(rls_column_must_be_declared_by_every_standalone_stage,
        "pipeline: gen\nsecurity:\n  inherit: {table: accounts, column: "
        "account_id}\nstages:\n  g:\n    queue: g_jobs\n    handler: noop\n",
        5, 3, "stage 'g' does not declare column 'account_id'")

static void hooks_resolve_relative_to_the_yaml_file(void **state) {
    (void)state;
    sl_test_sh(NULL, "mkdir -p '%s/hooks'", sl_test_tmpdir());
    sl_test_file("hooks/h.lua", "function post(x) return x end\n"
                                "function chunk(x) return x end\n");
    const char *path =
        sl_test_file("hooks_ok.yaml", HEAD STAGE_A
                     "    hooks:\n"
                     "      post: {file: hooks/h.lua, function: post, "
                     "instructions: 5000, memory: 32MB}\n"
                     "      chunk: hooks/h.lua\n");
    const char *paths[] = {path};
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = sl_dsl_load(paths, 1, &m, &d);
    if (rc != 0) fail_msg("load failed: %s", sl_test_diags(&d));
    const sl_stage *s = &m->pipelines[0].stages[0];
    char expect[600];
    snprintf(expect, sizeof expect, "%s/hooks/h.lua", sl_test_tmpdir());
    char *real = realpath(sl_test_tmpdir(), NULL);
    char expect_real[600];
    snprintf(expect_real, sizeof expect_real, "%s/hooks/h.lua", real);
    free(real);
    assert_int_equal(s->nhooks, 2);
    assert_string_equal(s->hooks[0].point, "post");
    assert_string_equal(s->hooks[0].file, expect_real);
    assert_string_equal(s->hooks[0].function, "post");
    assert_int_equal(s->hooks[0].instruction_limit, 5000);
    assert_int_equal(s->hooks[0].memory_limit, 32u * 1024 * 1024);
    assert_string_equal(s->hooks[1].point, "chunk");
    assert_string_equal(s->hooks[1].function, "chunk");
    assert_int_equal(s->hooks[1].instruction_limit, 10000000);
    assert_int_equal(s->hooks[1].memory_limit, 64u * 1024 * 1024);
    assert_string_equal(m->pipelines[0].file, path[0] == '/' ? path : expect);
    sl_model_free(m);
    sl_diags_free(&d);
}

static void directory_loads_every_yaml_file_sorted_by_name(void **state) {
    (void)state;
    sl_test_sh(NULL, "mkdir -p '%s/dir'", sl_test_tmpdir());
    sl_test_file("dir/b.yml", "pipeline: bee\nsecurity: {rls: false}\nstages:\n"
                              "  b: {queue: bee_jobs, handler: noop}\n");
    sl_test_file("dir/a.yaml",
                 "pipeline: ant\nsecurity: {rls: false}\nstages:\n"
                 "  a: {queue: ant_jobs, handler: noop}\n");
    sl_test_file("dir/notes.txt", "not a pipeline");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/dir", sl_test_tmpdir());
    const char *paths[] = {dir};
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = sl_dsl_load(paths, 1, &m, &d);
    if (rc != 0) fail_msg("load failed: %s", sl_test_diags(&d));
    assert_int_equal(m->npipelines, 2);
    assert_string_equal(m->pipelines[0].name, "ant");
    assert_string_equal(m->pipelines[1].name, "bee");
    assert_ptr_equal(m->pipelines[1].stages[0].pipeline, &m->pipelines[1]);
    sl_model_free(m);
    sl_diags_free(&d);
}

static void missing_file_is_an_io_error(void **state) {
    (void)state;
    const char *paths[] = {"/nonexistent/sluice/p.yaml"};
    sl_model *m = NULL;
    sl_diags d = {0};
    assert_int_equal(sl_dsl_load(paths, 1, &m, &d), -SL_EIO);
    assert_null(m);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.items[0].file, "/nonexistent/sluice/p.yaml");
    assert_non_null(strstr(d.items[0].message, "No such file"));
    sl_diags_free(&d);
}

static void durations_parse_with_units(void **state) {
    (void)state;
    int64_t ms = 0;
    assert_int_equal(sl_duration_parse("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(sl_duration_parse("3s", &ms), 0);
    assert_int_equal(ms, 3000);
    assert_int_equal(sl_duration_parse("5m", &ms), 0);
    assert_int_equal(ms, 300000);
    assert_int_equal(sl_duration_parse("2h", &ms), 0);
    assert_int_equal(ms, 7200000);
    assert_int_equal(sl_duration_parse("1d", &ms), 0);
    assert_int_equal(ms, 86400000);
    assert_int_equal(sl_duration_parse("0s", &ms), 0);
    assert_int_equal(ms, 0);
}

static void durations_without_a_known_unit_are_refused(void **state) {
    (void)state;
    int64_t ms = 42;
    const char *bad[] = {"5",
                         "",
                         "s",
                         "5x",
                         "-1s",
                         " 5s",
                         "5s ",
                         "5 s",
                         "1.5s",
                         "5S",
                         "99999999999999999999ms",
                         "4000d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (sl_duration_parse(bad[i], &ms) != -SL_EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
    assert_int_equal(ms, 42);
}

static void reserved_words_include_postgres_reserved_keywords(void **state) {
    (void)state;
    assert_true(sl_reserved_word("select"));
    assert_true(sl_reserved_word("user"));
    assert_true(sl_reserved_word("order"));
    assert_true(sl_reserved_word("table"));
    assert_false(sl_reserved_word("status"));
    assert_false(sl_reserved_word("upload_jobs"));
}

/* ---- the shipped pipelines
 * ---------------------------------------------------- */

/* Placeholders for handlers not registered yet, so the model checks below
 * run before every handler has landed. Each is registered only while the
 * real one is missing. */
static void placeholder_run(sl_ctx *ctx, const sl_job *job, void *st,
                            sl_result *res) {
    (void)ctx;
    (void)job;
    (void)st;
    sl_fail(res, SL_EC_INTERNAL, "placeholder handler");
}

static const char *const shipped_handlers[] = {
    "assemblyai.upload", "assemblyai.transcribe", "llm.analyze", "llm.generate",
    NULL};

static void register_placeholders(void) {
    static sl_handler ph[8];
    for (size_t i = 0; shipped_handlers[i]; i++)
        if (!sl_handler_find(shipped_handlers[i])) {
            ph[i].name = shipped_handlers[i];
            ph[i].run = placeholder_run;
            sl_handler_register(&ph[i]);
        }
}

static sl_model *load_shipped(void) {
    const char *paths[] = {SL_SOURCE_DIR "/pipelines"};
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = sl_dsl_load(paths, 1, &m, &d);
    if (rc != 0) fail_msg("pipelines/ does not load:\n%s", sl_test_diags(&d));
    sl_diags_free(&d);
    return m;
}

static void shipped_pipelines_name_registered_handlers(void **state) {
    (void)state;
    /* Strict once every handler has landed: until then the missing ones
     * are named and the test is skipped (the placeholders registered by
     * other tests are not counted). */
    char missing[256] = "";
    for (size_t i = 0; shipped_handlers[i]; i++) {
        const sl_handler *h = sl_handler_find(shipped_handlers[i]);
        if (!h || h->run == placeholder_run) {
            strncat(missing, " ", sizeof missing - strlen(missing) - 1);
            strncat(missing, shipped_handlers[i],
                    sizeof missing - strlen(missing) - 1);
        }
    }
    if (missing[0]) {
        print_message("handlers not registered yet:%s\n", missing);
        skip();
    }
    sl_model *m = load_shipped();
    sl_model_free(m);
}

/* The cloud providers, chosen when both API keys are set, are the
 * reference design (test_dsl_providers.c covers the choice). */
static void with_cloud_keys(int on) {
    unsetenv("SLUICE_TRANSCRIBE_PROVIDER");
    unsetenv("SLUICE_ANALYZE_PROVIDER");
    if (on) {
        setenv("ASSEMBLYAI_API_KEY", "k1", 1);
        setenv("OPENAI_API_KEY", "k2", 1);
    } else {
        unsetenv("ASSEMBLYAI_API_KEY");
        unsetenv("OPENAI_API_KEY");
    }
}

static void interview_pipeline_reproduces_the_reference_design(void **state) {
    (void)state;
    register_placeholders();
    with_cloud_keys(1);
    sl_model *m = load_shipped();
    const sl_pipeline *p = sl_model_pipeline(m, "interview");
    assert_non_null(p);
    assert_string_equal(p->subject.table, "interviews");
    assert_string_equal(p->subject.key, "id");
    assert_string_equal(p->subject.fk, "interview_id");
    assert_string_equal(p->subject.status_column, "status");
    const char *values[] = {"uploading",  "uploaded", "transcribed",
                            "processing", "ready",    "error"};
    assert_int_equal(p->subject.nstatus_values, 6);
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(p->subject.status_values[i], values[i]);
    assert_string_equal(p->subject.progress_column, "progress");
    assert_string_equal(p->subject.detail_column, "status_detail");
    assert_string_equal(p->subject.channel, "interviews_status_channel");
    assert_true(p->rls.enabled);
    assert_string_equal(p->rls.table, "interviews");
    assert_string_equal(p->rls.column, "interview_id");
    assert_int_equal(p->nstages, 3);

    const sl_stage *up = &p->stages[0], *tr = &p->stages[1],
                   *an = &p->stages[2];
    assert_string_equal(up->name, "upload");
    assert_string_equal(up->queue, "upload_jobs");
    assert_string_equal(up->channel, "upload_jobs_channel");
    assert_string_equal(up->handler, "assemblyai.upload");
    assert_int_equal(up->ncolumns, 2);
    assert_string_equal(up->columns[0].name, "media_file");
    assert_string_equal(up->columns[0].type, "bytea");
    assert_string_equal(up->columns[1].name, "external_url");
    assert_string_equal(up->columns[1].type, "text");
    assert_string_equal(up->status.on_start.status, "uploading");
    assert_int_equal(up->status.on_start.progress, 5);
    assert_string_equal(up->status.on_start.detail, "Uploading file");
    assert_string_equal(up->status.on_done.status, "uploaded");
    assert_int_equal(up->status.on_done.progress, 20);
    assert_string_equal(up->status.on_done.detail, "File uploaded");
    assert_ptr_equal(up->next[0].stage, tr);

    assert_string_equal(tr->queue, "transcription_jobs");
    assert_string_equal(tr->channel, "transcription_jobs_channel");
    assert_string_equal(tr->handler, "assemblyai.transcribe");
    /* The seed's columns, then the audio for the local provider. */
    assert_int_equal(tr->ncolumns, 5);
    const char *tcols[][2] = {{"upload_url", "text"},
                              {"transcript", "text"},
                              {"utterances", "jsonb"},
                              {"words", "jsonb"},
                              {"media_file", "bytea"}};
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(tr->columns[i].name, tcols[i][0]);
        assert_string_equal(tr->columns[i].type, tcols[i][1]);
    }
    assert_string_equal(tr->status.on_start.status, "uploaded");
    assert_int_equal(tr->status.on_start.progress, -1);
    assert_string_equal(tr->status.on_start.detail, "Transcribing");
    assert_string_equal(tr->status.on_done.status, "transcribed");
    assert_int_equal(tr->status.on_done.progress, 50);
    assert_string_equal(tr->status.on_done.detail, "Transcription complete");
    assert_ptr_equal(tr->next[0].stage, an);

    assert_string_equal(an->queue, "analysis_jobs");
    assert_string_equal(an->channel, "analysis_jobs_channel");
    assert_string_equal(an->handler, "llm.analyze");
    assert_int_equal(an->ncolumns, 1);
    assert_string_equal(an->columns[0].name, "transcript");
    assert_string_equal(an->status.on_start.status, "processing");
    assert_int_equal(an->status.on_start.progress, 70);
    assert_string_equal(an->status.on_start.detail, "Analyzing insights");
    assert_string_equal(an->status.on_progress_status, "processing");
    assert_int_equal(an->status.progress_from, 70);
    assert_int_equal(an->status.progress_to, 99);
    assert_string_equal(an->status.on_done.status, "ready");
    assert_int_equal(an->status.on_done.progress, 100);
    assert_string_equal(an->status.on_done.detail, "Ready!");
    assert_int_equal(an->nnext, 0);

    for (size_t i = 0; i < 3; i++) {
        const sl_stage *s = &p->stages[i];
        assert_string_equal(s->status.on_error.status, "error");
        assert_non_null(s->status.on_error.detail);
        /* The seed's attempts < 5. */
        assert_int_equal(s->retry.max_attempts, 5);
        assert_true(json_is_string(json_object_get(s->with, "base_url")));
    }
    sl_model_free(m);
    with_cloud_keys(0);
}

static void shipped_provider_settings_come_from_the_environment(void **state) {
    (void)state;
    register_placeholders();
    with_cloud_keys(1);
    unsetenv("OPENAI_MODEL");
    unsetenv("ASSEMBLYAI_BASE_URL");
    setenv("OPENAI_BASE_URL", "http://127.0.0.1:9", 1);
    sl_model *m = load_shipped();
    const sl_stage *up = sl_model_stage(m, "interview", "upload");
    const sl_stage *an = sl_model_stage(m, "interview", "analyze");
    assert_string_equal(
        json_string_value(json_object_get(up->with, "base_url")),
        "https://api.assemblyai.com");
    assert_string_equal(
        json_string_value(json_object_get(an->with, "base_url")),
        "http://127.0.0.1:9");
    assert_string_equal(json_string_value(json_object_get(an->with, "model")),
                        "gpt-4o-mini");
    unsetenv("OPENAI_BASE_URL");
    sl_model_free(m);
    with_cloud_keys(0);
}

static void generation_pipeline_is_a_standalone_queue(void **state) {
    (void)state;
    register_placeholders();
    sl_model *m = load_shipped();
    const sl_pipeline *p = sl_model_pipeline(m, "generation");
    assert_non_null(p);
    assert_false(p->has_subject);
    assert_true(p->rls.enabled);
    assert_string_equal(p->rls.table, "accounts");
    assert_string_equal(p->rls.column, "account_id");
    assert_string_equal(p->rls.key, "id");
    assert_int_equal(p->nstages, 1);
    const sl_stage *g = &p->stages[0];
    assert_string_equal(g->queue, "generation_jobs");
    assert_string_equal(g->channel, "generation_jobs_channel");
    assert_string_equal(g->handler, "llm.generate");
    assert_int_equal(g->ncolumns, 4);
    assert_string_equal(g->columns[0].name, "account_id");
    assert_string_equal(g->columns[0].type, "uuid");
    assert_string_equal(g->columns[0].ref_table, "accounts");
    assert_string_equal(g->columns[0].ref_column, "id");
    assert_string_equal(g->columns[1].name, "project_id");
    assert_string_equal(g->columns[1].ref_table, "projects");
    assert_string_equal(g->columns[2].name, "payload");
    assert_string_equal(g->columns[2].type, "jsonb");
    assert_string_equal(g->columns[3].name, "result");
    assert_string_equal(g->columns[3].type, "jsonb");
    sl_model_free(m);
}

/* ---- hostile input
 * ------------------------------------------------------------ */

/* Loads text of any content; it must fail with a diagnostic and not crash.
 * Returns the first diagnostic's message (caller frees). */
static char *hostile(const char *text, size_t len) {
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = sl_dsl_load_string("h.yaml", text, len, &m, &d);
    assert_int_equal(rc, -SL_EINVAL);
    assert_null(m);
    assert_true(d.n >= 1);
    char *msg = strdup(d.items[0].message);
    sl_diags_free(&d);
    return msg;
}

static void ten_megabyte_input_is_refused_by_size(void **state) {
    (void)state;
    size_t len = 10u * 1024 * 1024;
    char *big = malloc(len);
    assert_non_null(big);
    for (size_t i = 0; i < len; i++)
        big[i] = i % 64 == 63 ? '\n' : 'a';
    char *msg = hostile(big, len);
    assert_non_null(strstr(msg, "the file is too large (10485760 bytes"));
    free(msg);
    /* The same through a file on disk. */
    char path[600];
    snprintf(path, sizeof path, "%s/big.yaml", sl_test_tmpdir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(big, 1, len, f), len);
    fclose(f);
    free(big);
    const char *paths[] = {path};
    sl_test_expect_diag(paths, 1, NULL, path, 1, 1, "the file is too large");
}

static void binary_garbage_is_refused(void **state) {
    (void)state;
    unsigned seed = 12345;
    char buf[4096];
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof buf; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (char)(seed >> 16);
        }
        free(hostile(buf, sizeof buf));
    }
}

static void invalid_utf8_is_a_syntax_error(void **state) {
    (void)state;
    const char bad[] = "pipeline: p\nstages: \xc3\x28\xff\n";
    char *msg = hostile(bad, sizeof bad - 1);
    assert_non_null(strstr(msg, "YAML syntax error"));
    free(msg);
}

static void nul_byte_is_refused_with_its_position(void **state) {
    (void)state;
    const char text[] = "pipeline: p\nsta\0ges:\n";
    expect_error_named("n.yaml", "", 1, 1, "the file is empty");
    sl_model *m = NULL;
    sl_diags d = {0};
    assert_int_equal(
        sl_dsl_load_string("n.yaml", text, sizeof text - 1, &m, &d),
        -SL_EINVAL);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.items[0].line, 2);
    assert_int_equal(d.items[0].col, 4);
    assert_non_null(strstr(d.items[0].message, "a NUL byte"));
    sl_diags_free(&d);
}

static void escaped_nul_in_a_value_is_refused(void **state) {
    (void)state;
    expect_error(HEAD "  a:\n    queue: \"a\\0b\"\n    handler: noop\n", 5, 12,
                 "a NUL character in a value");
}

static void deep_nesting_is_cut_off(void **state) {
    (void)state;
    size_t n = 100000;
    char *deep = malloc(2 * n + 32);
    assert_non_null(deep);
    size_t o = (size_t)sprintf(deep, "pipeline: p\nstages: ");
    for (size_t i = 0; i < n; i++)
        deep[o++] = '[';
    for (size_t i = 0; i < n; i++)
        deep[o++] = ']';
    deep[o] = '\0';
    char *msg = hostile(deep, o);
    assert_non_null(strstr(msg, "nesting deeper than 64 levels"));
    free(msg);
    free(deep);
}

static void alias_bomb_is_refused_without_expansion(void **state) {
    (void)state;
    const char *bomb =
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
        "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
        "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
        "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
        "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
        "pipeline: p\nstages: *i\n";
    char *msg = hostile(bomb, strlen(bomb));
    assert_non_null(strstr(msg, "anchors and aliases are not supported"));
    free(msg);
}

static void very_long_scalar_is_refused_and_quoted_briefly(void **state) {
    (void)state;
    size_t n = 900000;
    char *text = malloc(n + 128);
    assert_non_null(text);
    size_t o = (size_t)sprintf(text, "pipeline: ");
    memset(text + o, 'x', n);
    o += n;
    o += (size_t)sprintf(text + o, "\nsecurity: {rls: false}\nstages:\n"
                                   "  a: {queue: a_jobs, handler: noop}\n");
    sl_model *m = NULL;
    sl_diags d = {0};
    assert_int_equal(sl_dsl_load_string("l.yaml", text, o, &m, &d), -SL_EINVAL);
    assert_int_equal(d.n, 1);
    assert_non_null(strstr(d.items[0].message, "is too long: 900000 bytes"));
    assert_true(strlen(d.items[0].message) < 300);
    sl_diags_free(&d);
    free(text);
}

static void many_errors_are_capped(void **state) {
    (void)state;
    size_t cap = 200000;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = (size_t)sprintf(text, HEAD STAGE_A);
    for (int i = 0; i < 5000 && o < cap - 64; i++)
        o += (size_t)sprintf(text + o, "    bogus_%d: 1\n", i);
    sl_model *m = NULL;
    sl_diags d = {0};
    int64_t t0 = sl_test_now_ms();
    assert_int_equal(sl_dsl_load_string("c.yaml", text, o, &m, &d), -SL_EINVAL);
    assert_true(sl_test_now_ms() - t0 < 5000);
    assert_true(d.n <= 200);
    assert_non_null(strstr(d.items[d.n - 1].message, "too many errors"));
    sl_diags_free(&d);
    free(text);
}

static void thousands_of_stages_are_refused_quickly(void **state) {
    (void)state;
    size_t cap = 1000000;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = (size_t)sprintf(text, HEAD);
    for (int i = 0; i < 5000; i++)
        o += (size_t)sprintf(text + o,
                             "  s%d: {queue: q%d, handler: noop, next: s%d}\n",
                             i, i, i + 1);
    char *msg = hostile(text, o);
    assert_non_null(strstr(msg, "at most 1000 stages per pipeline"));
    free(msg);
    free(text);
}

static void a_thousand_chained_stages_load(void **state) {
    (void)state;
    size_t cap = 200000;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = (size_t)sprintf(text, HEAD);
    for (int i = 0; i < 999; i++)
        o += (size_t)sprintf(text + o,
                             "  s%d: {queue: q%d, handler: noop, next: s%d}\n",
                             i, i, i + 1);
    sprintf(text + o, "  s999: {queue: q999, handler: noop}\n");
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = sl_dsl_load_string("k.yaml", text, strlen(text), &m, &d);
    if (rc != 0) fail_msg("%s", sl_test_diags(&d));
    assert_int_equal(m->pipelines[0].nstages, 1000);
    sl_model_free(m);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            yaml_syntax_error_is_reported_where_the_parser_stopped),
        cmocka_unit_test(duplicate_key_names_the_first_definition),
        cmocka_unit_test(yaml_anchor_is_refused),
        cmocka_unit_test(yaml_alias_is_refused),
        cmocka_unit_test(yaml_tag_is_refused),
        cmocka_unit_test(second_yaml_document_is_refused),
        cmocka_unit_test(top_level_list_is_refused),
        cmocka_unit_test(empty_file_is_refused),
        cmocka_unit_test(comment_only_file_is_refused),
        cmocka_unit_test(unknown_top_level_key_suggests_the_nearest),
        cmocka_unit_test(unknown_retry_key_suggests_max_attempts),
        cmocka_unit_test(unknown_stage_key_suggests_the_nearest),
        cmocka_unit_test(missing_pipeline_name_is_reported),
        cmocka_unit_test(missing_stages_is_reported),
        cmocka_unit_test(missing_queue_is_reported_at_the_stage),
        cmocka_unit_test(missing_handler_is_reported_at_the_stage),
        cmocka_unit_test(stages_as_a_list_is_a_type_error),
        cmocka_unit_test(stage_as_a_scalar_is_a_type_error),
        cmocka_unit_test(columns_as_a_list_is_a_type_error),
        cmocka_unit_test(concurrency_must_be_an_integer),
        cmocka_unit_test(concurrency_is_capped),
        cmocka_unit_test(sql_writes_must_be_a_boolean),
        cmocka_unit_test(subject_status_needs_values),
        cmocka_unit_test(subject_status_values_must_not_be_empty),
        cmocka_unit_test(standalone_queue_needs_security_inherit),
        cmocka_unit_test(max_attempts_below_one_is_refused),
        cmocka_unit_test(factor_below_one_is_refused),
        cmocka_unit_test(max_delay_below_initial_is_refused),
        cmocka_unit_test(jitter_outside_zero_to_one_is_refused),
        cmocka_unit_test(backoff_must_be_fixed_or_exponential),
        cmocka_unit_test(unknown_error_class_suggests_the_nearest),
        cmocka_unit_test(heartbeat_must_be_shorter_than_timeout),
        cmocka_unit_test(heartbeat_must_be_shorter_than_lease),
        cmocka_unit_test(default_heartbeat_must_be_shorter_than_timeout),
        cmocka_unit_test(duration_without_unit_is_refused),
        cmocka_unit_test(sweep_pending_age_needs_a_unit),
        cmocka_unit_test(progress_above_100_is_refused),
        cmocka_unit_test(progress_from_above_to_is_refused),
        cmocka_unit_test(progress_going_backwards_along_next_is_refused),
        cmocka_unit_test(upper_case_identifier_is_refused),
        cmocka_unit_test(identifier_longer_than_63_bytes_is_refused),
        cmocka_unit_test(sql_reserved_word_is_refused_as_a_table),
        cmocka_unit_test(identifier_with_a_quote_and_semicolon_is_refused),
        cmocka_unit_test(interpolation_in_an_identifier_is_refused),
        cmocka_unit_test(engine_managed_column_name_is_refused),
        cmocka_unit_test(subject_foreign_key_as_declared_column_is_refused),
        cmocka_unit_test(unsupported_column_type_is_refused),
        cmocka_unit_test(overlong_column_type_is_refused),
        cmocka_unit_test(malformed_references_is_refused),
        cmocka_unit_test(unknown_handler_suggests_the_nearest),
        cmocka_unit_test(unknown_handler_lists_the_registered_ones),
        cmocka_unit_test(lua_handler_needs_a_run_hook),
        cmocka_unit_test(status_outside_subject_values_suggests_the_nearest),
        cmocka_unit_test(status_mapping_without_subject_is_refused),
        cmocka_unit_test(next_stage_that_does_not_exist_suggests_the_nearest),
        cmocka_unit_test(cycle_prints_its_path),
        cmocka_unit_test(unreachable_stage_is_refused),
        cmocka_unit_test(same_queue_twice_names_both_places),
        cmocka_unit_test(same_channel_twice_names_both_places),
        cmocka_unit_test(
            map_to_a_column_the_next_stage_lacks_suggests_the_nearest),
        cmocka_unit_test(unset_variable_without_default_is_named),
        cmocka_unit_test(malformed_interpolation_is_refused),
        cmocka_unit_test(missing_lua_hook_file_is_refused),
        cmocka_unit_test(lua_syntax_error_reports_the_file_and_lua_line),
        cmocka_unit_test(precompiled_lua_bytecode_is_refused),
        cmocka_unit_test(same_pipeline_name_in_two_files_is_refused),
        cmocka_unit_test(same_queue_in_two_files_is_refused),
        cmocka_unit_test(rls_column_must_be_declared_by_every_standalone_stage),
        cmocka_unit_test(handler_validate_hook_reports_at_the_stage),
        cmocka_unit_test(every_error_is_collected_in_one_run),
        cmocka_unit_test(diagnostics_format_as_file_line_col_message),
        cmocka_unit_test(minimal_stage_gets_the_engine_defaults),
        cmocka_unit_test(subject_fields_and_defaults_are_filled),
        cmocka_unit_test(stage_inherits_defaults_and_overrides_field_by_field),
        cmocka_unit_test(columns_are_normalised_with_references),
        cmocka_unit_test(status_mapping_is_read),
        cmocka_unit_test(next_and_map_are_resolved),
        cmocka_unit_test(with_is_json_with_interpolation_and_typed_scalars),
        cmocka_unit_test(interpolated_variable_overrides_its_default),
        cmocka_unit_test(interpolation_also_applies_to_durations_and_details),
        cmocka_unit_test(default_foreign_key_is_the_singular_table_name),
        cmocka_unit_test(
            standalone_queue_inherits_rls_through_a_declared_column),
        cmocka_unit_test(hooks_resolve_relative_to_the_yaml_file),
        cmocka_unit_test(directory_loads_every_yaml_file_sorted_by_name),
        cmocka_unit_test(missing_file_is_an_io_error),
        cmocka_unit_test(durations_parse_with_units),
        cmocka_unit_test(durations_without_a_known_unit_are_refused),
        cmocka_unit_test(reserved_words_include_postgres_reserved_keywords),
        cmocka_unit_test(shipped_pipelines_name_registered_handlers),
        cmocka_unit_test(interview_pipeline_reproduces_the_reference_design),
        cmocka_unit_test(shipped_provider_settings_come_from_the_environment),
        cmocka_unit_test(generation_pipeline_is_a_standalone_queue),
        cmocka_unit_test(ten_megabyte_input_is_refused_by_size),
        cmocka_unit_test(binary_garbage_is_refused),
        cmocka_unit_test(invalid_utf8_is_a_syntax_error),
        cmocka_unit_test(nul_byte_is_refused_with_its_position),
        cmocka_unit_test(escaped_nul_in_a_value_is_refused),
        cmocka_unit_test(deep_nesting_is_cut_off),
        cmocka_unit_test(alias_bomb_is_refused_without_expansion),
        cmocka_unit_test(very_long_scalar_is_refused_and_quoted_briefly),
        cmocka_unit_test(many_errors_are_capped),
        cmocka_unit_test(thousands_of_stages_are_refused_quickly),
        cmocka_unit_test(a_thousand_chained_stages_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
