/* test_cli_json.c - every command that prints takes --json (enqueue:
 * --output json) and its output parses with jansson and has the types
 * docs/cli.md#json-output documents: integers, numbers of seconds,
 * booleans, RFC 3339 times in UTC with milliseconds, and the pipeline,
 * stage and queue names of every job. The binary is run as a user would.
 *
 * Pipeline jp: subject table parcels, one noop stage `ship` (queue
 * jp_ship) ending at `ready`, with retention and an alert rule.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "testlib.h"

#define DB "sluice_test_cli_json"

static const char *jp_yaml =
    "pipeline: jp\n"
    "subject:\n"
    "  table: parcels\n"
    "  status:\n"
    "    values: [new, shipping, ready, error]\n"
    "  progress: progress\n"
    "  channel: parcels_live\n"
    "stages:\n"
    "  ship:\n"
    "    queue: jp_ship\n"
    "    handler: noop\n"
    "    retention: {done: 1s}\n"
    "    columns:\n"
    "      note: text\n"
    "    status:\n"
    "      on_done: {status: ready, progress: 100}\n"
    "      on_error: {status: error}\n"
    "alerts:\n"
    "  notifiers:\n"
    "    hook: {type: webhook, url_env: JP_HOOK_URL, secret_env: JP_HOOK_KEY}\n"
    "  rules:\n"
    "    backlog: {when: backlog, stage: ship, over: 100, for: 1m}\n";

static PGconn *db;
static char dir[512];
static char subject[64];

static int setup(void **state) {
    (void)state;
    sl_test_db(DB);
    setenv("PGDATABASE", DB, 1);
    unsetenv("DATABASE_URL");
    setenv("JP_HOOK_URL", "http://127.0.0.1:9/hook", 1);
    setenv("JP_HOOK_KEY", "k", 1);
    setenv("SLUICE_TOKEN_SECRET", "a-test-secret-of-enough-length-0123456789",
           1);
    db = sl_test_connect("dbname=" DB);
    sl_test_exec(db, "CREATE TABLE parcels (id uuid PRIMARY KEY DEFAULT"
                     " gen_random_uuid(), status text NOT NULL DEFAULT 'new',"
                     " progress int NOT NULL DEFAULT 0)");
    char *id = sl_test_scalar(db, "INSERT INTO parcels DEFAULT VALUES"
                                  " RETURNING id");
    snprintf(subject, sizeof subject, "%s", id);
    free(id);
    snprintf(dir, sizeof dir, "%s/pipelines", sl_test_tmpdir());
    mkdir(dir, 0755);
    char path[600];
    snprintf(path, sizeof path, "%s/jp.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(jp_yaml, f);
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    PQfinish(db);
    return 0;
}

/* ------------------------------------------------------------ checks */

/* Runs `sluice ARGS` with stdout only (stderr dropped); expects exit
 * `want` and one JSON document, returned (caller json_decrefs). */
static json_t *run_json(int want, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static json_t *run_json(int want, const char *fmt, ...) {
    char args[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *out = NULL;
    int rc = sl_test_sh(&out, "'%s' %s 2>/dev/null", sl_test_bin(), args);
    if (rc != want)
        fail_msg("sluice %s: exit %d, expected %d:\n%s", args, rc, want,
                 out ? out : "");
    json_error_t e;
    json_t *v = json_loads(out ? out : "", 0, &e);
    if (!v)
        fail_msg("sluice %s: not JSON (%s at line %d):\n%s", args, e.text,
                 e.line, out ? out : "");
    free(out);
    return v;
}

static json_t *get(json_t *o, const char *key) {
    if (!json_is_object(o)) fail_msg("not an object looking for '%s'", key);
    json_t *v = json_object_get(o, key);
    if (!v) fail_msg("missing key '%s'", key);
    return v;
}

static void want_str(json_t *o, const char *key, const char *value) {
    json_t *v = get(o, key);
    if (!json_is_string(v)) fail_msg("'%s' is not a string", key);
    if (value && strcmp(json_string_value(v), value) != 0)
        fail_msg("'%s' is '%s', expected '%s'", key, json_string_value(v),
                 value);
}

static void want_string_item(json_t *v) {
    if (!json_is_string(v)) fail_msg("an array item is not a string");
}

static void want_int(json_t *o, const char *key) {
    if (!json_is_integer(get(o, key))) fail_msg("'%s' is not an integer", key);
}

static void want_num_or_null(json_t *o, const char *key) {
    json_t *v = get(o, key);
    if (!json_is_number(v) && !json_is_null(v))
        fail_msg("'%s' is neither a number nor null", key);
}

static void want_bool(json_t *o, const char *key, int value) {
    json_t *v = get(o, key);
    if (!json_is_boolean(v)) fail_msg("'%s' is not a boolean", key);
    if (value >= 0 && json_is_true(v) != value)
        fail_msg("'%s' is %d, expected %d", key, json_is_true(v), value);
}

/* "2025-05-01T10:00:02.123Z" */
static int is_rfc3339(const char *s) {
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (strlen(s) != sizeof pat - 1) return 0;
    for (size_t i = 0; pat[i]; i++)
        if (pat[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != pat[i])
            return 0;
    return 1;
}

static void want_time(json_t *o, const char *key, int nullable) {
    json_t *v = get(o, key);
    if (nullable && json_is_null(v)) return;
    if (!json_is_string(v) || !is_rfc3339(json_string_value(v)))
        fail_msg("'%s' is not an RFC 3339 time: %s", key,
                 json_is_string(v) ? json_string_value(v) : "(not a string)");
}

static void want_job_names(json_t *j) {
    want_str(j, "pipeline", "jp");
    want_str(j, "stage", "ship");
    want_str(j, "queue", "jp_ship");
}

/* A job of `status --json`. */
static void check_status_job(json_t *j) {
    want_job_names(j);
    want_str(j, "id", NULL);
    want_str(j, "subject", subject);
    want_str(j, "status", NULL);
    want_int(j, "attempts");
    want_int(j, "max_attempts");
    want_int(j, "progress");
    want_time(j, "created_at", 0);
    want_time(j, "run_at", 0);
    want_time(j, "started_at", 1);
    want_time(j, "finished_at", 1);
    want_num_or_null(j, "took");
    want_num_or_null(j, "runs_in");
}

/* ------------------------------------------------------------ tests */

static void validate_sql_and_migrate_print_typed_json(void **state) {
    (void)state;
    json_t *v = run_json(0, "validate --json -p %s", dir);
    want_bool(v, "valid", 1);
    want_int(v, "pipeline_count");
    want_int(v, "stage_count");
    json_t *p = json_array_get(get(v, "pipelines"), 0);
    want_str(p, "name", "jp");
    want_int(json_array_get(get(p, "stages"), 0), "concurrency");
    json_decref(v);

    v = run_json(0, "sql --json -p %s", dir);
    want_str(v, "sql", NULL);
    want_string_item(json_array_get(get(v, "pipelines"), 0));
    json_decref(v);

    v = run_json(0, "migrate --dry-run --json -p %s", dir);
    want_str(v, "status", "dry_run");
    want_bool(v, "dry_run", 1);
    want_str(v, "sql", NULL);
    if (!json_is_null(get(v, "migration_id"))) fail_msg("dry run has an id");
    if (json_array_size(get(v, "changes")) == 0) fail_msg("no changes");
    json_decref(v);

    v = run_json(0, "migrate --json -p %s", dir);
    want_str(v, "status", "applied");
    want_int(v, "migration_id");
    want_bool(v, "dry_run", 0);
    want_string_item(json_array_get(get(v, "changes"), 0));
    want_string_item(json_array_get(get(v, "pipelines"), 0));
    json_decref(v);

    v = run_json(0, "migrate --json -p %s", dir);
    want_str(v, "status", "up_to_date");
    assert_int_equal(json_array_size(get(v, "changes")), 0);
    json_decref(v);
}

static void enqueue_status_and_jobs_print_typed_json(void **state) {
    (void)state;
    json_t *v = run_json(0, "enqueue jp --subject %s --set note=hi"
                            " --output json -p %s",
                         subject, dir);
    want_job_names(v);
    want_str(v, "id", NULL);
    char job[64];
    snprintf(job, sizeof job, "%s", json_string_value(get(v, "id")));
    json_decref(v);

    v = run_json(0, "status %s --json -p %s", subject, dir);
    want_str(v, "id", subject);
    json_t *s = json_array_get(get(v, "subjects"), 0);
    want_str(s, "pipeline", "jp");
    want_str(s, "status", "new");
    want_int(s, "progress");
    json_t *st = json_array_get(get(s, "stages"), 0);
    want_str(st, "name", "ship");
    want_str(st, "queue", "jp_ship");
    check_status_job(json_array_get(get(st, "jobs"), 0));
    if (!json_is_null(get(v, "job"))) fail_msg("subject status has a job");
    json_decref(v);

    v = run_json(0, "status %s --json -p %s", job, dir);
    check_status_job(get(v, "job"));
    assert_int_equal(json_array_size(get(v, "subjects")), 0);
    json_decref(v);

    v = run_json(0, "jobs --json -p %s", dir);
    json_t *j = json_array_get(v, 0);
    want_job_names(j);
    want_int(j, "attempts");
    want_int(j, "max_attempts");
    want_int(j, "priority");
    want_time(j, "created_at", 0);
    want_time(j, "run_at", 0);
    if (!json_is_real(get(j, "age"))) fail_msg("age is not a number");
    json_decref(v);

    v = run_json(0, "cancel %s --json -p %s", job, dir);
    want_job_names(json_array_get(v, 0));
    want_str(json_array_get(v, 0), "result", "cancelled");
    json_decref(v);
    v = run_json(0, "retry %s --json -p %s", job, dir);
    want_str(json_array_get(v, 0), "result", "retried");
    json_decref(v);
}

static void watch_prints_one_json_line_per_change_then_the_outcome(void **state) {
    (void)state;
    char *out = NULL;
    int rc = sl_test_sluice(&out, "run -p %s --exit-when-idle"
                                  " --allow-superuser --log-level warn",
                            dir);
    if (rc != 0) fail_msg("run: exit %d:\n%s", rc, out ? out : "");
    free(out);
    rc = sl_test_sh(&out, "'%s' watch %s --json --timeout 10s -p %s"
                          " 2>/dev/null",
                    sl_test_bin(), subject, dir);
    assert_int_equal(rc, 0);
    int lines = 0;
    json_t *last = NULL;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l;
         l = strtok_r(NULL, "\n", &save)) {
        json_decref(last);
        last = json_loads(l, 0, NULL);
        if (!last) fail_msg("watch line is not JSON: %s", l);
        want_str(last, "subject", subject);
        want_str(last, "pipeline", "jp");
        want_time(last, "at", 0);
        want_int(last, "progress");
        lines++;
    }
    free(out);
    assert_true(lines >= 2);
    want_str(last, "event", "end");
    want_str(last, "outcome", "done");
    want_str(last, "status", "ready");
    want_int(last, "exit_code");
    json_decref(last);
}

static void stats_purge_alerts_and_token_print_typed_json(void **state) {
    (void)state;
    json_t *v = run_json(0, "stats --json");
    json_t *row = json_array_get(v, 0);
    want_str(row, "queue", "jp_ship");
    want_int(row, "done");
    want_int(row, "pending");
    want_num_or_null(row, "oldest_pending_age");
    if (!json_is_real(get(row, "mean_run_time")))
        fail_msg("mean_run_time is not a number of seconds");
    json_decref(v);

    v = run_json(0, "purge --dry-run --json -p %s", dir);
    want_bool(v, "dry_run", 1);
    want_int(v, "would_delete");
    json_t *q = json_array_get(get(v, "queues"), 0);
    want_job_names(q);
    want_int(q, "count");
    if (!json_is_real(get(q, "older_than"))) fail_msg("older_than");
    json_decref(v);

    sl_test_exec(db, "INSERT INTO sluice.alerts (fingerprint, rule, pipeline,"
                     " stage, state, value, first_fired) VALUES ('f1',"
                     " 'backlog', 'jp', 'ship', 'firing', 120, now())");
    v = run_json(0, "alerts --json -p %s", dir);
    json_t *r = json_array_get(get(v, "rules"), 0);
    want_str(r, "pipeline", "jp");
    want_str(r, "stage", "ship");
    if (!json_is_real(get(r, "for"))) fail_msg("for is not seconds");
    json_t *a = json_array_get(get(v, "alerts"), 0);
    want_str(a, "state", "firing");
    if (!json_is_real(get(a, "value"))) fail_msg("value is not a number");
    want_time(a, "first_fired", 0);
    want_time(a, "resolved_at", 1);
    json_decref(v);

    v = run_json(0, "token %s --ttl 5m --json", subject);
    want_str(v, "token", NULL);
    want_str(v, "subject", subject);
    want_time(v, "expires_at", 0);
    json_decref(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(validate_sql_and_migrate_print_typed_json),
        cmocka_unit_test(enqueue_status_and_jobs_print_typed_json),
        cmocka_unit_test(watch_prints_one_json_line_per_change_then_the_outcome),
        cmocka_unit_test(stats_purge_alerts_and_token_print_typed_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
