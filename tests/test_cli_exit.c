/* test_cli_exit.c - the exit-code table of docs/cli.md#exit-codes and the
 * typed --json shapes, with the binary run as a user would: bad
 * input 64 (options, values, ids, names with a did-you-mean), runtime
 * failure 1 (no database, a schema not migrated), invalid definitions 2,
 * and the job outcomes 3..6 of `watch` and `run --exit-when-idle`.
 *
 * Pipelines: te (subject boxes, one noop stage ending at `ready`), tx
 * (subject crates, a stage that always fails, one attempt) and, in a
 * folder of its own that is never migrated, tu.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "testlib.h"

#include "error.h"
#include "version.h"

#define DB "cli_exit"

#define SUBJECT(table)                                                         \
    "subject:\n"                                                               \
    "  table: " table "\n"                                                     \
    "  foreign_key: box_id\n"                                                  \
    "  status:\n"                                                              \
    "    values: [new, started, ready, error]\n"                               \
    "  progress: progress\n"                                                   \
    "  channel: " table "_status\n"

static const char *te_yaml = "pipeline: te\n" SUBJECT(
    "boxes") "stages:\n"
             "  pack:\n"
             "    queue: te_pack\n"
             "    handler: noop\n"
             "    status:\n"
             "      on_done: {status: ready, progress: 100}\n"
             "      on_error: {status: error}\n";

static const char *tx_yaml = "pipeline: tx\n" SUBJECT(
    "crates") "defaults:\n"
              "  retry: {max_attempts: 1}\n"
              "stages:\n"
              "  break:\n"
              "    queue: tx_break\n"
              "    handler: noop\n"
              "    with: {fail_first: 100}\n"
              "    status:\n"
              "      on_done: {status: ready, progress: 100}\n"
              "      on_error: {status: error}\n";

static const char *tu_yaml = "pipeline: tu\n"
                             "security: {rls: false}\n"
                             "stages:\n"
                             "  lone:\n"
                             "    queue: tu_jobs\n"
                             "    handler: noop\n";

static PGconn *db;
static char pipes[512], unmigrated[512];

static void ready(void) {
    static int done;
    if (done) return;
    char *out = NULL;
    sl_test_db(DB);
    setenv("PGDATABASE", DB, 1);
    unsetenv("DATABASE_URL");
    db = sl_test_connect("dbname=" DB);
    sl_test_exec(db, "CREATE TABLE boxes (id uuid PRIMARY KEY DEFAULT"
                     " gen_random_uuid(), status text NOT NULL DEFAULT 'new',"
                     " progress int NOT NULL DEFAULT 0);"
                     "CREATE TABLE crates (LIKE boxes INCLUDING ALL)");
    snprintf(pipes, sizeof pipes, "%s/pipelines", sl_test_tmpdir());
    snprintf(unmigrated, sizeof unmigrated, "%s/unmigrated", sl_test_tmpdir());
    mkdir(pipes, 0755);
    mkdir(unmigrated, 0755);
    sl_test_file("pipelines/te.yaml", te_yaml);
    sl_test_file("pipelines/tx.yaml", tx_yaml);
    sl_test_file("unmigrated/tu.yaml", tu_yaml);
    setenv("SLUICE_PIPELINES", pipes, 1);
    int rc = sl_test_sh(&out, "'%s' migrate 2>&1", sl_test_bin());
    if (rc != 0) fail_msg("sluice migrate failed (%d): %s", rc, out);
    free(out);
    done = 1;
}

/* Expects exit code `code` and `what` in the output of `sluice ARGS`. */
static void expect_exit(int code, const char *what, const char *args) {
    char *out = NULL;
    int rc = sl_test_sluice(&out, "%s", args);
    if (rc != code)
        fail_msg("sluice %s: exit %d, expected %d:\n%s", args, rc, code, out);
    if (what) sl_test_expect_in(out, what);
    free(out);
}

static char *new_row(const char *table) {
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s DEFAULT VALUES RETURNING id",
             table);
    return sl_test_scalar(db, sql);
}

static char *enqueue(const char *pipeline, const char *subject) {
    char *out = NULL;
    int rc = sl_test_sluice(&out, "enqueue %s --subject %s", pipeline, subject);
    if (rc != 0) fail_msg("enqueue: exit %d: %s", rc, out);
    out[strcspn(out, "\n")] = '\0';
    return out;
}

/* ---- 0 and 64 without a database ----------------------------------------- */

static void version_and_help_exit_0(void **state) {
    (void)state;
    ready();
    char *a = NULL, *b = NULL;
    expect_exit(0, "sluice " SL_VERSION "\n", "--version");
    assert_int_equal(sl_test_sluice(&a, "help run"), 0);
    assert_int_equal(sl_test_sluice(&b, "run --help"), 0);
    assert_string_equal(a, b);
    sl_test_expect_in(a, "--concurrency");
    free(a);
    free(b);
    expect_exit(64, "unknown command 'stauts' (did you mean 'stats'?)",
                "stauts");
}

static void run_values_are_checked_like_yaml_values(void **state) {
    (void)state;
    ready();
    expect_exit(64, "bad --concurrency 'abc' (expected an integer 1..1024)",
                "run -c abc");
    expect_exit(64, "bad --concurrency '0'", "run -c 0");
    expect_exit(64, "bad --concurrency '2000'", "run -c 2000");
    expect_exit(64, "bad --batch '0' (expected an integer 1..1000)",
                "run -b 0");
    expect_exit(64, "bad --drain 'soon'", "run --drain soon");
    expect_exit(64,
                "no stage, queue or pipeline named 'te_pakc' in the "
                "loaded pipelines (did you mean 'te_pack'?)",
                "run --allow-superuser -s te_pakc");
}

static void non_uuid_ids_exit_64_for_every_command(void **state) {
    (void)state;
    ready();
    expect_exit(64, "not a subject or job id", "status nope");
    expect_exit(64, "not a subject id", "watch nope");
    expect_exit(64, "not a job id", "retry nope");
    expect_exit(64, "not a job id", "cancel 6d1c1a3e-0000-4000-8000-0 nope");
    expect_exit(64, "(did you mean 'tx_break'?)", "jobs --queue tx_brake");
    expect_exit(64, "(did you mean 'te'?)",
                "status 6d1c1a3e-0000-4000-8000-000000000001 --pipeline tee");
}

static void invalid_definitions_exit_2(void **state) {
    (void)state;
    const char *bad = sl_test_file("bad.yaml", "pipeline: b\nstages:\n"
                                               "  a: {queue: a_jobs, handler: "
                                               "nop}\n");
    char args[700];
    snprintf(args, sizeof args, "validate '%s'", bad);
    expect_exit(2, "did you mean 'noop'", args);
    snprintf(args, sizeof args, "run --allow-superuser -p '%s'", bad);
    expect_exit(2, "did you mean 'noop'", args);
    snprintf(args, sizeof args, "jobs -p '%s'", bad);
    expect_exit(2, NULL, args);
}

/* ---- 1: the database ----------------------------------------------------- */

static void a_bad_database_url_names_the_variable_and_exits_1(void **state) {
    (void)state;
    ready();
    char *out = NULL;
    int rc =
        sl_test_sh(&out, "DATABASE_URL=garbage '%s' stats 2>&1", sl_test_bin());
    assert_int_equal(rc, 1);
    sl_test_expect_in(out,
                      "cannot connect to the database (from DATABASE_URL)");
    free(out);
}

static void run_before_migrate_names_the_queue_and_exits_1(void **state) {
    (void)state;
    ready();
    char args[1200];
    snprintf(args, sizeof args,
             "run --allow-superuser -p '%s' --exit-when-idle", unmigrated);
    expect_exit(1,
                "queue tu_jobs of pipeline tu is missing: run `sluice "
                "migrate -p ",
                args);
    /* With -s, only the selected stages' queues must exist. */
    snprintf(args, sizeof args,
             "run --allow-superuser -p '%s' -p '%s' -s te --exit-when-idle "
             "--log-level error",
             pipes, unmigrated);
    expect_exit(0, NULL, args);
}

/* ---- enqueue: 64 for bad values -------------------------------------------
 */

static void enqueue_bad_values_exit_64(void **state) {
    (void)state;
    ready();
    char *box = new_row("boxes"), args[1200];
    snprintf(args, sizeof args, "enqueue te --subject %s --run-at nope", box);
    expect_exit(64, "invalid input syntax", args);
    const char *bulk = sl_test_file(
        "bulk.jsonl", "{\"subject\": \"6d1c1a3e-0000-4000-8000-000000000001\","
                      " \"columns\": {\"nope\": 1}}\n");
    snprintf(args, sizeof args, "enqueue te --bulk '%s'", bulk);
    expect_exit(64, "bulk.jsonl:1:", args);
    /* A subject that does not exist is not bad input: 1. */
    expect_exit(1, "not found",
                "enqueue te --subject 6d1c1a3e-0000-4000-8000-000000000009");
    free(box);
}

/* ---- 3..6: job outcomes ----------------------------------------------------
 */

static void run_exit_when_idle_exits_3_when_a_job_failed(void **state) {
    (void)state;
    ready();
    char *crate = new_row("crates");
    free(enqueue("tx", crate));
    expect_exit(
        3, "1 job failed for good",
        "run --allow-superuser -s tx --exit-when-idle --log-level error");
    /* Then watch sees the error status: 3. */
    char args[128];
    snprintf(args, sizeof args, "watch %s --timeout 20s", crate);
    expect_exit(3, "stage break failed", args);
    free(crate);
}

static void watch_exits_4_when_the_jobs_were_cancelled(void **state) {
    (void)state;
    ready();
    char *box = new_row("boxes"), args[128];
    char *job = enqueue("te", box);
    snprintf(args, sizeof args, "cancel %s", job);
    expect_exit(0, "cancelled", args);
    snprintf(args, sizeof args, "watch %s --timeout 20s", box);
    expect_exit(4, "cancelled", args);
    free(job);
    free(box);
}

static void watch_exits_5_on_timeout(void **state) {
    (void)state;
    ready();
    char *box = new_row("boxes"), args[128];
    snprintf(args, sizeof args, "watch %s --timeout 200ms", box);
    expect_exit(5, "timed out", args);
    free(box);
}

static void watch_exits_6_when_the_subject_is_deleted(void **state) {
    (void)state;
    ready();
    char *box = new_row("boxes"), *out = NULL;
    free(enqueue("te", box));
    char path[600];
    snprintf(path, sizeof path, "%s/watch-del.out", sl_test_tmpdir());
    int rc = sl_test_sh(&out,
                        "'%1$s' watch %2$s --timeout 30s >'%3$s' 2>&1 & w=$!;"
                        " i=0; while [ ! -s '%3$s' ] && [ $i -lt 600 ]; do"
                        " sleep 0.05; i=$((i+1)); done;"
                        " psql -qAt -c \"DELETE FROM te_pack WHERE box_id ="
                        " '%2$s'; DELETE FROM boxes WHERE id = '%2$s'\";"
                        " wait $w; rc=$?; cat '%3$s'; exit $rc",
                        sl_test_bin(), box, path);
    if (rc != 6) fail_msg("watch: exit %d, expected 6:\n%s", rc, out);
    sl_test_expect_in(out, "was deleted");
    free(out);
    free(box);
}

/* ---- --json: parsed, and typed as documented ------------------------------
 */

/* Runs `sluice ARGS` (stdout only), expects exit 0 and returns the parsed
 * JSON (caller decrefs). */
static json_t *json_of(const char *fmt, const char *a) {
    char args[1024], *out = NULL;
    snprintf(args, sizeof args, fmt, a);
    int rc = sl_test_sh(&out, "'%s' %s 2>/dev/null", sl_test_bin(), args);
    if (rc != 0) fail_msg("sluice %s: exit %d:\n%s", args, rc, out);
    json_error_t je;
    json_t *v = json_loads(out, 0, &je);
    if (!v) fail_msg("sluice %s: not JSON (%s):\n%s", args, je.text, out);
    free(out);
    return v;
}

/* An RFC 3339 UTC timestamp as docs/cli.md shows it. */
static void expect_rfc3339(const json_t *v) {
    const char *s = json_string_value(v);
    if (!s || strlen(s) != 24 || s[4] != '-' || s[10] != 'T' || s[23] != 'Z')
        fail_msg("not an RFC 3339 timestamp: %s", s ? s : "(not a string)");
}

#define GET(o, k) json_object_get(o, k)

static void json_of_enqueue_jobs_retry_cancel_is_typed(void **state) {
    (void)state;
    ready();
    char *box = new_row("boxes"), args[256];
    snprintf(args, sizeof args, "--subject %s --output json", box);
    json_t *e = json_of("enqueue te %s", args);
    assert_int_equal(strlen(json_string_value(GET(e, "id"))), 36);
    assert_string_equal(json_string_value(GET(e, "pipeline")), "te");
    assert_string_equal(json_string_value(GET(e, "stage")), "pack");
    assert_string_equal(json_string_value(GET(e, "queue")), "te_pack");
    assert_string_equal(json_string_value(GET(e, "subject")), box);
    char id[40];
    snprintf(id, sizeof id, "%s", json_string_value(GET(e, "id")));
    json_decref(e);

    json_t *arr = json_of("jobs --queue %s --json", "te_pack"), *j, *row = NULL;
    size_t i;
    json_array_foreach(arr, i, j) if (strcmp(json_string_value(GET(j, "id")),
                                             id) == 0) row = j;
    assert_non_null(row);
    assert_string_equal(json_string_value(GET(row, "pipeline")), "te");
    assert_string_equal(json_string_value(GET(row, "stage")), "pack");
    assert_string_equal(json_string_value(GET(row, "status")), "pending");
    assert_true(json_is_integer(GET(row, "attempts")));
    assert_true(json_is_integer(GET(row, "max_attempts")));
    assert_true(json_is_integer(GET(row, "priority")));
    assert_true(json_is_real(GET(row, "age")));
    assert_true(json_is_null(GET(row, "runs_in")));
    expect_rfc3339(GET(row, "created_at"));
    expect_rfc3339(GET(row, "run_at"));
    json_decref(arr);

    arr = json_of("cancel %s --json", id);
    row = json_array_get(arr, 0);
    assert_string_equal(json_string_value(GET(row, "result")), "cancelled");
    assert_string_equal(json_string_value(GET(row, "was")), "pending");
    assert_string_equal(json_string_value(GET(row, "stage")), "pack");
    json_decref(arr);
    arr = json_of("retry %s --json", id);
    row = json_array_get(arr, 0);
    assert_string_equal(json_string_value(GET(row, "result")), "retried");
    assert_string_equal(json_string_value(GET(row, "was")), "cancelled");
    json_decref(arr);
    json_t *o = json_of("retry --queue %s --failed --json", "te_pack");
    assert_true(json_is_integer(GET(o, "retried")));
    assert_string_equal(json_string_value(GET(o, "pipeline")), "te");
    json_decref(o);
    free(box);
}

static void json_of_stats_and_validate_is_typed(void **state) {
    (void)state;
    ready();
    json_t *arr = json_of("stats --json%s", ""), *row;
    size_t i;
    assert_true(json_array_size(arr) >= 2);
    json_array_foreach(arr, i, row) {
        assert_true(json_is_string(GET(row, "queue")));
        assert_true(json_is_integer(GET(row, "pending")));
        assert_true(json_is_integer(GET(row, "error")));
        json_t *age = GET(row, "oldest_pending_age");
        assert_true(json_is_null(age) || json_is_real(age));
    }
    json_decref(arr);
    json_t *o = json_of("validate --json%s", "");
    assert_true(json_is_true(GET(o, "valid")));
    assert_int_equal(json_integer_value(GET(o, "pipeline_count")), 2);
    assert_int_equal(json_integer_value(GET(o, "stage_count")), 2);
    json_t *p = json_array_get(GET(o, "pipelines"), 0);
    assert_true(json_is_string(GET(p, "name")));
    json_t *st = json_array_get(GET(p, "stages"), 0);
    assert_true(json_is_string(GET(st, "queue")));
    assert_true(json_is_integer(GET(st, "concurrency")));
    json_decref(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(version_and_help_exit_0),
        cmocka_unit_test(run_values_are_checked_like_yaml_values),
        cmocka_unit_test(non_uuid_ids_exit_64_for_every_command),
        cmocka_unit_test(invalid_definitions_exit_2),
        cmocka_unit_test(a_bad_database_url_names_the_variable_and_exits_1),
        cmocka_unit_test(run_before_migrate_names_the_queue_and_exits_1),
        cmocka_unit_test(enqueue_bad_values_exit_64),
        cmocka_unit_test(run_exit_when_idle_exits_3_when_a_job_failed),
        cmocka_unit_test(watch_exits_4_when_the_jobs_were_cancelled),
        cmocka_unit_test(watch_exits_5_on_timeout),
        cmocka_unit_test(watch_exits_6_when_the_subject_is_deleted),
        cmocka_unit_test(json_of_enqueue_jobs_retry_cancel_is_typed),
        cmocka_unit_test(json_of_stats_and_validate_is_typed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
