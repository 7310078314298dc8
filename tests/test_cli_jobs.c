/* test_cli_jobs.c - the operator commands against a real PostgreSQL:
 * sluice enqueue (file, URL, JSON, --set, bulk), status, watch, jobs,
 * retry, cancel and stats, each run as a process like a user would.
 *
 * Three test pipelines: tp (subject items, two noop stages ending at
 * `ready`), tf (subject things, one stage that always fails, two attempts)
 * tslow (a standalone queue whose handler sleeps 20 s, for cancelling
 * a running job) and td (a standalone queue nobody runs, for delayed
 * jobs). Every `sluice run` selects its stages with -s so no test
 * waits on another's jobs.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "dsl.h"
#include "error.h"
#include "jobs.h"
#include "testlib.h"

#define DB "cli_jobs"

static const char *tp_yaml =
    "pipeline: tp\n"
    "subject:\n"
    "  table: items\n"
    "  foreign_key: item_id\n"
    "  status:\n"
    "    values: [new, started, halfway, ready, error]\n"
    "  progress: progress\n"
    "  detail: detail\n"
    "  channel: items_status\n"
    "stages:\n"
    "  first:\n"
    "    queue: tp_first\n"
    "    handler: noop\n"
    "    with: {sleep_ms: 300}\n"
    "    columns:\n"
    "      media: bytea\n"
    "      external_url: text\n"
    "      payload: jsonb\n"
    "      n: integer\n"
    "      tags: text[]\n"
    "    status:\n"
    "      on_start: {status: started, progress: 10, detail: First running}\n"
    "      on_done: {status: halfway, progress: 50, detail: First done}\n"
    "      on_error: {status: error, detail: First failed}\n"
    "    next: second\n"
    "  second:\n"
    "    queue: tp_second\n"
    "    handler: noop\n"
    "    with: {sleep_ms: 300}\n"
    "    status:\n"
    "      on_done: {status: ready, progress: 100, detail: All done}\n"
    "      on_error: {status: error, detail: Second failed}\n";

#define TF_YAML(with)                                                          \
    "pipeline: tf\n"                                                           \
    "subject:\n"                                                               \
    "  table: things\n"                                                        \
    "  foreign_key: thing_id\n"                                                \
    "  status:\n"                                                              \
    "    values: [new, started, ready, error]\n"                               \
    "  progress: progress\n"                                                   \
    "  detail: detail\n"                                                       \
    "  channel: things_status\n"                                               \
    "defaults:\n"                                                              \
    "  retry: {max_attempts: 2, initial: 20ms, jitter: 0}\n"                   \
    "stages:\n"                                                                \
    "  only:\n"                                                                \
    "    queue: tf_only\n"                                                     \
    "    handler: noop\n"                                                      \
    "    with: " with "\n"                                                     \
    "    status:\n"                                                            \
    "      on_start: {status: started, progress: 10}\n"                        \
    "      on_done: {status: ready, progress: 100, detail: Done}\n"            \
    "      on_error: {status: error, detail: It failed}\n"

static const char *tslow_yaml = "pipeline: tslow\n"
                                "security: {rls: false}\n"
                                "stages:\n"
                                "  slow:\n"
                                "    queue: tslow_jobs\n"
                                "    handler: noop\n"
                                "    with: {sleep_ms: 20000}\n"
                                "    lease: 2s\n"
                                "    heartbeat: 100ms\n"
                                "    timeout: 60s\n"
                                "    columns: {note: text}\n";

/* Delayed jobs go here: no test runs this queue (a worker started with
 * --exit-when-idle waits for delayed jobs too). */
static const char *td_yaml = "pipeline: td\n"
                             "security: {rls: false}\n"
                             "stages:\n"
                             "  later:\n"
                             "    queue: td_jobs\n"
                             "    handler: noop\n"
                             "    columns: {note: text}\n";

static PGconn *db;
static char fixed_dir[512];

/* Creates the database, the subject tables and the pipelines, and runs
 * `sluice migrate` once per process. */
static void ready(void) {
    static int done;
    if (done) return;
    char dir[512], *out = NULL;
    sl_test_db(DB);
    setenv("PGDATABASE", DB, 1);
    db = sl_test_connect("dbname=" DB);
    sl_test_exec(db, "CREATE TABLE items (id uuid PRIMARY KEY DEFAULT"
                     " gen_random_uuid(), status text NOT NULL DEFAULT 'new',"
                     " progress int NOT NULL DEFAULT 0, detail text);"
                     "CREATE TABLE things (LIKE items INCLUDING ALL)");
    snprintf(dir, sizeof dir, "%s/pipelines", sl_test_tmpdir());
    mkdir(dir, 0755);
    snprintf(fixed_dir, sizeof fixed_dir, "%s/fixed", sl_test_tmpdir());
    mkdir(fixed_dir, 0755);
    sl_test_file("pipelines/tp.yaml", tp_yaml);
    sl_test_file("pipelines/tf.yaml", TF_YAML("{fail_first: 100}"));
    sl_test_file("pipelines/tslow.yaml", tslow_yaml);
    sl_test_file("pipelines/td.yaml", td_yaml);
    /* The same tf pipeline with its fault fixed (no migration needed). */
    sl_test_file("fixed/tf.yaml", TF_YAML("{}"));
    setenv("SLUICE_PIPELINES", dir, 1);
    int rc = sl_test_sh(&out, "'%s' migrate 2>&1", sl_test_bin());
    if (rc != 0) fail_msg("sluice migrate failed (%d): %s", rc, out);
    free(out);
    done = 1;
}

/* A new subject row; the caller frees the id. */
static char *new_row(const char *table) {
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s DEFAULT VALUES RETURNING id",
             table);
    return sl_test_scalar(db, sql);
}

/* Enqueues with ARGS and returns the printed job id (caller frees). */
static char *enqueue(const char *args) {
    char *out = NULL;
    int rc = sl_test_sluice(&out, "enqueue %s", args);
    if (rc != 0) fail_msg("enqueue %s: exit %d: %s", args, rc, out);
    out[strcspn(out, "\n")] = '\0';
    assert_int_equal(strlen(out), 36);
    return out;
}

/* The scalar of a query with %s substitutions. */
static char *q(const char *fmt, const char *a, const char *b) {
    char sql[1024];
    snprintf(sql, sizeof sql, fmt, a, b ? b : "");
    return sl_test_scalar(db, sql);
}

static long qn(const char *fmt, const char *a) {
    char sql[1024];
    snprintf(sql, sizeof sql, fmt, a);
    return sl_test_long(db, sql);
}

static void expect_q(const char *want, const char *fmt, const char *a) {
    char *v = q(fmt, a, NULL);
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s -> %s, expected %s", fmt, v ? v : "NULL", want);
    free(v);
}

/* ---- enqueue ------------------------------------------------------------- */

static void enqueue_file_stores_the_exact_bytes(void **state) {
    (void)state;
    ready();
    char path[600];
    size_t n = 300000;
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 7 ^ i >> 8);
    data[0] = 0; /* a NUL first: no string handling anywhere */
    snprintf(path, sizeof path, "%s/blob.bin", sl_test_tmpdir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    char *item = new_row("items"), args[1024];
    snprintf(args, sizeof args, "tp --subject %s --file '%s'", item, path);
    char *id = enqueue(args);

    const char *vals[2] = {(const char *)data, id};
    int lens[2] = {(int)n, 0}, fmts[2] = {1, 0};
    PGresult *r = PQexecParams(db,
                               "SELECT media = $1::bytea, length(media),"
                               " item_id::text FROM tp_first WHERE id = $2",
                               2, NULL, vals, lens, fmts, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    assert_string_equal(PQgetvalue(r, 0, 0), "t");
    assert_int_equal(atol(PQgetvalue(r, 0, 1)), (long)n);
    assert_string_equal(PQgetvalue(r, 0, 2), item);
    PQclear(r);
    free(data);
    free(item);
    free(id);
}

static void enqueue_sets_url_json_payload_and_declared_columns(void **state) {
    (void)state;
    ready();
    char *item = new_row("items"), args[1024];
    snprintf(args, sizeof args,
             "tp --subject %s --url https://media.example/a.mp3"
             " --json '{\"lang\": \"en\", \"n\": [1, 2]}' --set n=42"
             " --set 'tags=[\"x\", \"y z\"]' --priority 7",
             item);
    char *id = enqueue(args);
    expect_q("https://media.example/a.mp3",
             "SELECT external_url FROM tp_first WHERE id = '%s'", id);
    expect_q("{\"n\": [1, 2], \"lang\": \"en\"}",
             "SELECT payload::text FROM tp_first WHERE id = '%s'", id);
    expect_q("42", "SELECT n FROM tp_first WHERE id = '%s'", id);
    expect_q("{x,\"y z\"}", "SELECT tags::text FROM tp_first WHERE id = '%s'",
             id);
    expect_q("7", "SELECT priority FROM tp_first WHERE id = '%s'", id);
    expect_q("pending", "SELECT status FROM tp_first WHERE id = '%s'", id);
    free(item);
    free(id);
}

static void enqueue_delay_sets_run_at_in_the_future(void **state) {
    (void)state;
    ready();
    char *id = enqueue("td --set note=later --delay 1h");
    expect_q("t",
             "SELECT run_at BETWEEN now() + interval '59 minutes' AND now() +"
             " interval '61 minutes' FROM td_jobs WHERE id = '%s'",
             id);
    free(id);
}

static void enqueue_run_at_sets_that_time(void **state) {
    (void)state;
    ready();
    char *id = enqueue("td --run-at '2031-02-03 04:05:06+00'");
    expect_q("t",
             "SELECT run_at = '2031-02-03 04:05:06+00' FROM td_jobs WHERE id"
             " = '%s'",
             id);
    free(id);
}

static void
enqueue_json_object_fills_columns_of_a_standalone_queue(void **state) {
    (void)state;
    ready();
    char *id = enqueue("tslow --json '{\"note\": \"hello\"}'");
    expect_q("hello", "SELECT note FROM tslow_jobs WHERE id = '%s'", id);
    /* Nobody should run it (its handler sleeps 20 s). */
    char sql[128];
    snprintf(sql, sizeof sql, "DELETE FROM tslow_jobs WHERE id = '%s'", id);
    sl_test_exec(db, sql);
    free(id);
}

static void
enqueue_for_a_missing_subject_fails_with_a_clear_message(void **state) {
    (void)state;
    ready();
    char *out = NULL;
    const char *ghost = "0b3e9c52-1f00-4c7e-8a59-3f5b1d2f0c11";
    int rc = sl_test_sluice(&out, "enqueue tp --subject %s --set n=1", ghost);
    assert_int_equal(rc, 1);
    sl_test_expect_in(
        out, "subject 0b3e9c52-1f00-4c7e-8a59-3f5b1d2f0c11 not found in"
             " table items");
    assert_int_equal(
        qn("SELECT count(*) FROM tp_first WHERE item_id = '%s'", ghost), 0);
    free(out);
}

static void enqueue_without_the_subject_of_a_subject_pipeline_is_a_usage_error(
    void **state) {
    (void)state;
    ready();
    char *out = NULL;
    assert_int_equal(sl_test_sluice(&out, "enqueue tp --set n=1"), 64);
    sl_test_expect_in(out, "--subject ID is required");
    free(out);
}

static void enqueue_rejects_an_undeclared_column_and_a_bad_value(void **state) {
    (void)state;
    ready();
    char *item = new_row("items"), *out = NULL;
    assert_int_equal(
        sl_test_sluice(&out, "enqueue tp --subject %s --set nope=1", item), 64);
    sl_test_expect_in(out, "declares no column nope");
    free(out);
    assert_int_equal(
        sl_test_sluice(&out, "enqueue tp --subject %s --set n=many", item), 64);
    sl_test_expect_in(out, "\"many\" is not a valid integer");
    free(out);
    assert_int_equal(
        qn("SELECT count(*) FROM tp_first WHERE item_id = '%s'", item), 0);
    free(item);
}

static void enqueue_of_an_unknown_pipeline_fails(void **state) {
    (void)state;
    ready();
    char *out = NULL;
    assert_int_equal(sl_test_sluice(&out, "enqueue nosuch"), 64);
    sl_test_expect_in(out, "no pipeline named 'nosuch'");
    free(out);
    assert_int_equal(sl_test_sluice(&out, "enqueue tpp"), 64);
    sl_test_expect_in(out, "no pipeline named 'tpp' (did you mean 'tp'?)");
    free(out);
    assert_int_equal(sl_test_sluice(&out, "enqueue tp --stage secnod"), 64);
    sl_test_expect_in(out, "(did you mean 'second'?)");
    free(out);
}

/* Writes `lines` bulk lines for subject s (line `bad` names a missing
 * subject when > 0) and returns the file's path. */
static const char *bulk_file(const char *name, const char *s, int lines,
                             int bad) {
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", sl_test_tmpdir(), name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 1; i <= lines; i++) {
        if (i == bad)
            fprintf(f, "{\"subject\": \"00000000-0000-0000-0000-00000000"
                       "0bad\"}\n");
        else
            fprintf(f,
                    "{\"subject\": \"%s\", \"columns\": {\"n\": %d, \"tags\":"
                    " [\"a\"]}, \"priority\": %d}\n",
                    s, i, i % 3);
        if (i % 500 == 0) fprintf(f, "\n"); /* blank lines are skipped */
    }
    fclose(f);
    return path;
}

static void enqueue_bulk_inserts_every_line_in_batches(void **state) {
    (void)state;
    ready();
    char *item = new_row("items"), *out = NULL;
    const char *path = bulk_file("bulk.jsonl", item, 2500, 0);
    assert_int_equal(sl_test_sluice(&out, "enqueue tp --bulk '%s'", path), 0);
    sl_test_expect_in(out, "enqueued 2500 jobs into tp_first");
    assert_int_equal(
        qn("SELECT count(*) FROM tp_first WHERE item_id = '%s'", item), 2500);
    assert_int_equal(
        qn("SELECT sum(n) FROM tp_first WHERE item_id = '%s'", item),
        2500L * 2501 / 2);
    assert_int_equal(qn("SELECT count(*) FROM tp_first WHERE item_id = '%s'"
                        " AND priority = n %% 3 AND tags = '{a}'",
                        item),
                     2500);
    /* Leave nothing for the tests that run the pipeline. */
    char sql[160];
    snprintf(sql, sizeof sql, "DELETE FROM tp_first WHERE item_id = '%s'",
             item);
    sl_test_exec(db, sql);
    free(out);
    free(item);
}

static void enqueue_bulk_with_a_missing_subject_enqueues_nothing(void **state) {
    (void)state;
    ready();
    char *item = new_row("items"), *out = NULL;
    /* The bad line is in the second batch: the first is rolled back. */
    const char *path = bulk_file("bad.jsonl", item, 1500, 1203);
    assert_int_equal(sl_test_sluice(&out, "enqueue tp --bulk '%s'", path), 1);
    sl_test_expect_in(out, "bad.jsonl:1205: subject 00000000-0000-0000-0000-"
                           "000000000bad not found in table items");
    sl_test_expect_in(out, "nothing was enqueued");
    assert_int_equal(
        qn("SELECT count(*) FROM tp_first WHERE item_id = '%s'", item), 0);
    free(out);
    free(item);
}

/* ---- status ----------------------------------------------------------------
 */

/* A thing whose only job has failed both attempts; returns the job id and
 * sets *thing. */
static char *failed_job(char **thing) {
    char args[128], *out = NULL;
    *thing = new_row("things");
    snprintf(args, sizeof args, "tf --subject %s", *thing);
    char *id = enqueue(args);
    /* Exit 3: a job it ran failed for good (docs/cli.md#exit-codes). */
    int rc = sl_test_sluice(
        &out, "run --allow-superuser -s tf --exit-when-idle --log-level error");
    if (rc != 3) fail_msg("sluice run: %d, expected 3: %s", rc, out);
    sl_test_expect_in(out, "failed for good");
    free(out);
    expect_q("error", "SELECT status FROM tf_only WHERE id = '%s'", id);
    return id;
}

static void status_shows_attempts_and_last_error(void **state) {
    (void)state;
    ready();
    char *thing, *out = NULL;
    char *id = failed_job(&thing);
    assert_int_equal(sl_test_sluice(&out, "status %s", thing), 0);
    sl_test_expect_in(out, "pipeline tf, table things");
    sl_test_expect_in(out, "status    error");
    sl_test_expect_in(out, "detail    It failed");
    sl_test_expect_in(out, id);
    sl_test_expect_in(out, "attempts 2/2");
    sl_test_expect_in(out, "last error (retryable): noop: planned failure on"
                           " attempt 2");
    sl_test_expect_in(out, "finished ");
    free(out);
    free(thing);
    free(id);
}

static void status_of_a_job_id_shows_that_job(void **state) {
    (void)state;
    ready();
    char *out = NULL;
    char *id = enqueue("td --delay 10m");
    assert_int_equal(sl_test_sluice(&out, "status %s", id), 0);
    sl_test_expect_in(out, "pipeline td, stage later, queue td_jobs");
    sl_test_expect_in(out, "pending");
    sl_test_expect_in(out, "attempts 0/5");
    sl_test_expect_in(out, "runs at ");
    free(out);
    free(id);
}

static void status_of_a_job_id_names_its_subject(void **state) {
    (void)state;
    ready();
    char *thing, *out = NULL;
    char *id = failed_job(&thing);
    assert_int_equal(sl_test_sluice(&out, "status %s", id), 0);
    sl_test_expect_in(out, "pipeline tf, stage only, queue tf_only");
    sl_test_expect_in(out, thing);
    sl_test_expect_in(out, "attempts 2/2");
    free(out);
    free(thing);
    free(id);
}

static void status_of_an_unknown_id_fails(void **state) {
    (void)state;
    ready();
    char *out = NULL;
    assert_int_equal(
        sl_test_sluice(&out, "status 6d1c1a3e-0000-4000-8000-000000000001"), 1);
    sl_test_expect_in(out, "no subject or job with id");
    free(out);
    assert_int_equal(sl_test_sluice(&out, "status not-a-uuid"), 64);
    free(out);
}

/* ---- cancel
 * ------------------------------------------------------------------ */

static void cancel_of_a_pending_job_means_it_never_runs(void **state) {
    (void)state;
    ready();
    char *item = new_row("items"), args[128], *out = NULL;
    snprintf(args, sizeof args, "tp --subject %s --set n=1", item);
    char *doomed = enqueue(args);
    char *other = enqueue(args);
    assert_int_equal(sl_test_sluice(&out, "cancel %s", doomed), 0);
    sl_test_expect_in(out, "cancelled (was pending");
    free(out);
    assert_int_equal(
        sl_test_sluice(
            &out,
            "run --allow-superuser -s tp --exit-when-idle --log-level error"),
        0);
    free(out);
    expect_q("cancelled", "SELECT status FROM tp_first WHERE id = '%s'",
             doomed);
    expect_q("0", "SELECT attempts FROM tp_first WHERE id = '%s'", doomed);
    expect_q("t", "SELECT started_at IS NULL FROM tp_first WHERE id = '%s'",
             doomed);
    expect_q("done", "SELECT status FROM tp_first WHERE id = '%s'", other);
    /* Cancelling it again changes nothing and says so. */
    assert_int_equal(sl_test_sluice(&out, "cancel %s", doomed), 1);
    sl_test_expect_in(out, "not cancelled: it is cancelled");
    free(out);
    free(item);
    free(doomed);
    free(other);
}

static int pid_alive(pid_t pid) {
    return kill(pid, 0) == 0 || errno == EPERM;
}

static void
cancel_of_a_running_job_stops_it_and_refuses_its_completion(void **state) {
    (void)state;
    ready();
    char *id = enqueue("tslow --set note=long"), *out = NULL, log[600];
    snprintf(log, sizeof log, "%s/slow.log", sl_test_tmpdir());
    /* A worker in the background: the handler sleeps 20 s unless told to
     * stop. */
    int rc = sl_test_sh(
        &out,
        "'%s' run --allow-superuser -s tslow --exit-when-idle >'%s' 2>&1 &"
        " echo $!",
        sl_test_bin(), log);
    assert_int_equal(rc, 0);
    pid_t pid = (pid_t)atol(out);
    free(out);
    int64_t t0 = sl_test_now_ms();
    while (qn("SELECT count(*) FROM tslow_jobs WHERE id = '%s' AND status ="
              " 'in_progress'",
              id) == 0) {
        if (sl_test_now_ms() - t0 > 10000) fail_msg("the job never started");
        usleep(20000);
    }
    assert_int_equal(sl_test_sluice(&out, "cancel %s", id), 0);
    sl_test_expect_in(out, "cancelled while running on");
    free(out);
    int64_t t1 = sl_test_now_ms();
    while (pid_alive(pid) && sl_test_now_ms() - t1 < 15000)
        usleep(20000);
    assert_false(pid_alive(pid));
    /* Well before the handler's 20 s: it was told to stop. */
    assert_true(sl_test_now_ms() - t1 < 10000);
    expect_q("cancelled", "SELECT status FROM tslow_jobs WHERE id = '%s'", id);
    expect_q("t",
             "SELECT finished_at IS NOT NULL FROM tslow_jobs WHERE id ="
             " '%s'",
             id);
    FILE *f = fopen(log, "r");
    char buf[8192] = "";
    if (f) {
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        buf[k] = '\0';
        fclose(f);
    }
    /* The handler stops when told (noop honours should_stop) and the
     * runtime writes nothing for a job that is no longer its own. */
    sl_test_expect_in(buf, "job abandoned: lease lost or cancelled");
    free(id);
}

static void cancel_of_an_unknown_job_fails(void **state) {
    (void)state;
    ready();
    char *out = NULL;
    assert_int_equal(
        sl_test_sluice(&out, "cancel 6d1c1a3e-0000-4000-8000-000000000002"), 1);
    sl_test_expect_in(out, "not found in any queue");
    free(out);
}

/* ---- retry
 * ------------------------------------------------------------------- */

static void retry_of_an_errored_job_runs_it_again(void **state) {
    (void)state;
    ready();
    char *thing, *out = NULL;
    char *id = failed_job(&thing);
    assert_int_equal(sl_test_sluice(&out, "retry %s", id), 0);
    sl_test_expect_in(out, "retried (was error");
    free(out);
    /* A fresh set of attempts; the old error stays until it runs. */
    expect_q("retry", "SELECT status FROM tf_only WHERE id = '%s'", id);
    expect_q("0", "SELECT attempts FROM tf_only WHERE id = '%s'", id);
    expect_q("noop: planned failure on attempt 2",
             "SELECT last_error FROM tf_only WHERE id = '%s'", id);
    /* The operator fixed the stage's configuration; the job now runs. */
    assert_int_equal(
        sl_test_sluice(&out,
                       "run --allow-superuser -p '%s' -s tf --exit-when-idle"
                       " --log-level error",
                       fixed_dir),
        0);
    free(out);
    expect_q("done", "SELECT status FROM tf_only WHERE id = '%s'", id);
    expect_q("1", "SELECT attempts FROM tf_only WHERE id = '%s'", id);
    expect_q("ready", "SELECT status FROM things WHERE id = '%s'", thing);
    free(thing);
    free(id);
}

static void retry_of_a_job_that_did_not_fail_is_refused(void **state) {
    (void)state;
    ready();
    char *out = NULL;
    char *id = enqueue("td --delay 1h");
    assert_int_equal(sl_test_sluice(&out, "retry %s", id), 1);
    sl_test_expect_in(out, "not retried: it is pending");
    free(out);
    expect_q("pending", "SELECT status FROM td_jobs WHERE id = '%s'", id);
    free(id);
}

static void retry_queue_failed_retries_every_failed_job(void **state) {
    (void)state;
    ready();
    char *t1, *t2, *out = NULL, want[64];
    char *j1 = failed_job(&t1), *j2 = failed_job(&t2);
    long failed =
        sl_test_long(db, "SELECT count(*) FROM tf_only WHERE status = 'error'");
    assert_true(failed >= 2);
    assert_int_equal(sl_test_sluice(&out, "retry --queue tf_only --failed"), 0);
    snprintf(want, sizeof want, "retried %ld failed jobs in tf_only", failed);
    sl_test_expect_in(out, want);
    free(out);
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM tf_only WHERE"
                                      " status = 'error'"),
                     0);
    expect_q("retry", "SELECT status FROM tf_only WHERE id = '%s'", j1);
    expect_q("retry", "SELECT status FROM tf_only WHERE id = '%s'", j2);
    assert_int_equal(sl_test_sluice(&out, "retry --failed"), 64);
    free(out);
    free(t1);
    free(t2);
    free(j1);
    free(j2);
}

/* ---- watch
 * ------------------------------------------------------------------- */

/* Starts `sluice watch SUBJECT` in the background, waits until it has drawn
 * its first line (it LISTENs before that, so it misses no change), runs
 * the stages `stages` until idle, and returns watch's exit code with its
 * output in *out. */
static int watch_a_run(const char *subject, const char *stages, char **out) {
    char path[600];
    snprintf(path, sizeof path, "%s/watch-%s.out", sl_test_tmpdir(), subject);
    return sl_test_sh(out,
                      "'%1$s' watch %2$s --timeout 60s >'%3$s' 2>&1 & w=$!;"
                      " i=0; while [ ! -s '%3$s' ] && [ $i -lt 600 ]; do"
                      " sleep 0.05; i=$((i+1)); done;"
                      " '%1$s' run --allow-superuser -s %4$s --exit-when-idle "
                      ">/dev/null 2>&1;"
                      " wait $w; rc=$?; cat '%3$s'; exit $rc",
                      sl_test_bin(), subject, path, stages);
}

static void watch_ends_0_when_the_pipeline_reaches_ready(void **state) {
    (void)state;
    ready();
    char *item = new_row("items"), args[128], *out = NULL;
    snprintf(args, sizeof args, "tp --subject %s", item);
    free(enqueue(args));
    int rc = watch_a_run(item, "tp", &out);
    if (rc != 0) fail_msg("watch: exit %d: %s", rc, out);
    /* Not a terminal: one line per change, from the current row to the
     * final status. */
    sl_test_expect_in(out, "[..............................]   0%  new\n");
    sl_test_expect_in(out,
                      "[###...........................]  10%  started  First"
                      " running\n");
    sl_test_expect_in(out,
                      "[###############...............]  50%  halfway  First"
                      " done\n");
    sl_test_expect_in(
        out, "[##############################] 100%  ready  All done\n");
    free(out);
    free(item);
}

static void watch_ends_3_at_the_error_status_with_the_last_error(void **state) {
    (void)state;
    ready();
    char *thing = new_row("things"), args[128], *out = NULL;
    snprintf(args, sizeof args, "tf --subject %s", thing);
    free(enqueue(args));
    int rc = watch_a_run(thing, "tf", &out);
    if (rc != 3) fail_msg("watch: exit %d, expected 3: %s", rc, out);
    sl_test_expect_in(out, "error  It failed");
    sl_test_expect_in(out, "stage only failed");
    sl_test_expect_in(out, "noop: planned failure on attempt 2");
    free(out);
    free(thing);
}

static void watch_times_out_with_5(void **state) {
    (void)state;
    ready();
    char *item = new_row("items"), *out = NULL;
    int64_t t0 = sl_test_now_ms();
    assert_int_equal(sl_test_sluice(&out, "watch %s --timeout 300ms", item), 5);
    assert_true(sl_test_now_ms() - t0 < 5000);
    sl_test_expect_in(out, "timed out");
    sl_test_expect_in(out, "new");
    free(out);
    free(item);
}

static void watch_of_an_unknown_subject_fails(void **state) {
    (void)state;
    ready();
    char *out = NULL;
    assert_int_equal(
        sl_test_sluice(&out, "watch 6d1c1a3e-0000-4000-8000-000000000003"), 1);
    sl_test_expect_in(out, "no subject with id");
    free(out);
}

/* ---- jobs and stats
 * ------------------------------------------------------------ */

static void jobs_filters_by_queue_and_status(void **state) {
    (void)state;
    ready();
    char *thing, *out = NULL;
    char *id = failed_job(&thing);
    assert_int_equal(
        sl_test_sluice(
            &out, "jobs --queue tf_only --status error --limit 1000 --json"),
        0);
    json_error_t je;
    json_t *arr = json_loads(out, 0, &je);
    if (!json_is_array(arr)) fail_msg("not JSON: %s\n%s", je.text, out);
    assert_int_equal((long)json_array_size(arr),
                     sl_test_long(db, "SELECT count(*) FROM tf_only WHERE"
                                      " status = 'error'"));
    int seen = 0;
    size_t i;
    json_t *j;
    json_array_foreach(arr, i, j) {
        assert_string_equal(json_string_value(json_object_get(j, "queue")),
                            "tf_only");
        assert_string_equal(json_string_value(json_object_get(j, "status")),
                            "error");
        if (strcmp(json_string_value(json_object_get(j, "id")), id) == 0) {
            seen = 1;
            assert_string_equal(
                json_string_value(json_object_get(j, "subject")), thing);
            assert_int_equal(json_integer_value(json_object_get(j, "attempts")),
                             2);
            assert_int_equal(
                json_integer_value(json_object_get(j, "max_attempts")), 2);
        }
    }
    assert_true(seen);
    json_decref(arr);
    free(out);
    /* The table form names the job and its error. */
    assert_int_equal(
        sl_test_sluice(&out, "jobs --queue tf_only --status error"), 0);
    sl_test_expect_in(out, "LAST ERROR");
    sl_test_expect_in(out, id);
    free(out);
    /* Nothing in tf_only is older than a day. */
    assert_int_equal(
        sl_test_sluice(&out, "jobs --queue tf_only --older-than 1d"), 0);
    sl_test_expect_in(out, "no jobs");
    free(out);
    assert_int_equal(sl_test_sluice(&out, "jobs --status nonsense"), 64);
    free(out);
    free(thing);
    free(id);
}

static void stats_counts_match_the_queues(void **state) {
    (void)state;
    ready();
    static const char *const st[] = {"pending", "in_progress", "retry",
                                     "done",    "error",       "cancelled"};
    char *out = NULL;
    assert_int_equal(sl_test_sluice(&out, "stats --json"), 0);
    json_t *arr = json_loads(out, 0, NULL);
    if (!json_is_array(arr)) fail_msg("not JSON:\n%s", out);
    assert_int_equal(json_array_size(arr), 5);
    size_t i;
    json_t *row;
    json_array_foreach(arr, i, row) {
        const char *queue = json_string_value(json_object_get(row, "queue"));
        assert_non_null(queue);
        for (int k = 0; k < 6; k++) {
            char sql[256];
            snprintf(sql, sizeof sql,
                     "SELECT count(*) FROM \"%s\" WHERE status = '%s'", queue,
                     st[k]);
            json_t *v = json_object_get(row, st[k]);
            assert_true(json_is_integer(v));
            if (json_integer_value(v) != sl_test_long(db, sql))
                fail_msg("%s %s: stats says %lld, the table has %ld", queue,
                         st[k], (long long)json_integer_value(v),
                         sl_test_long(db, sql));
        }
    }
    json_decref(arr);
    free(out);
    assert_int_equal(sl_test_sluice(&out, "stats"), 0);
    sl_test_expect_in(out, "QUEUE");
    sl_test_expect_in(out, "tf_only");
    sl_test_expect_in(out, "tslow_jobs");
    free(out);
}

/* ---- the C API (jobs.h)
 * --------------------------------------------------------- */

static sl_model *load_model(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/pipelines", sl_test_tmpdir());
    const char *paths[1] = {dir};
    sl_model *m = NULL;
    sl_diags d = {0};
    if (sl_dsl_load(paths, 1, &m, &d) != 0) {
        char *msg = sl_diags_format(&d);
        fail_msg("load: %s", msg);
    }
    sl_diags_free(&d);
    return m;
}

static void check_value_accepts_only_values_of_the_column_type(void **state) {
    (void)state;
    char err[256];
    sl_column n = {.name = "n", .type = "integer"};
    sl_column j = {.name = "meta", .type = "jsonb"};
    sl_column t = {.name = "tags", .type = "text[]"};
    sl_column u = {.name = "ref", .type = "uuid"};
    json_t *v;
#define CHECK(col, json, want)                                                 \
    v = json_loads(json, JSON_DECODE_ANY, NULL);                               \
    assert_non_null(v);                                                        \
    assert_int_equal(sl_jobs_check_value(&col, v, err, sizeof err), want);     \
    json_decref(v)
    CHECK(n, "12", 0);
    CHECK(n, "\"-12\"", 0);
    CHECK(n, "\"12a\"", -SL_EINVAL);
    CHECK(n, "{\"a\": 1}", -SL_EINVAL);
    CHECK(n, "null", 0);
    CHECK(j, "{\"a\": [1, 2]}", 0);
    CHECK(j, "\"text\"", 0);
    CHECK(t, "[\"a\", \"b\"]", 0);
    CHECK(t, "\"{a,b}\"", 0);
    CHECK(t, "7", -SL_EINVAL);
    CHECK(u, "\"6d1c1a3e-0000-4000-8000-000000000001\"", 0);
    CHECK(u, "\"6d1c1a3e\"", -SL_EINVAL);
#undef CHECK
    assert_non_null(strstr(err, "column ref (uuid)"));
}

static void batch_rejects_a_bad_row_before_sending_anything(void **state) {
    (void)state;
    ready();
    sl_model *m = load_model();
    const sl_stage *s = sl_model_stage_by_queue(m, "td_jobs");
    assert_non_null(s);
    json_t *rows = json_loads("[{\"columns\": {\"note\": \"ok\"}},"
                              " {\"columns\": {\"nope\": 1}}]",
                              0, NULL);
    long before = sl_test_long(db, "SELECT count(*) FROM td_jobs");
    long n = -1;
    size_t bad = 0;
    char err[512];
    assert_int_equal(
        sl_jobs_enqueue_batch(db, s, rows, &n, &bad, err, sizeof err),
        -SL_EINVAL);
    assert_int_equal(bad, 2);
    assert_int_equal(n, 0);
    assert_string_equal(err, "row 2: stage later (queue td_jobs) declares no"
                             " column nope");
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM td_jobs"), before);
    json_decref(rows);
    sl_model_free(m);
}

static void library_enqueues_cancels_and_retries_without_the_cli(void **state) {
    (void)state;
    ready();
    sl_model *m = load_model();
    const sl_stage *s = sl_model_stage_by_queue(m, "td_jobs");
    char err[512], id[40], id2[40];
    long n = 0;
    json_t *rows = json_loads(
        "[{\"columns\": {\"note\": \"b1\"}, \"run_at\": \"2031-01-01"
        " 00:00+00\"}, {\"columns\": {\"note\": \"b2\"}, \"priority\": 9,"
        " \"run_at\": \"2031-01-01 00:00+00\"}]",
        0, NULL);
    assert_int_equal(
        sl_jobs_enqueue_batch(db, s, rows, &n, NULL, err, sizeof err), 0);
    assert_int_equal(n, 2);
    json_decref(rows);
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM td_jobs WHERE"
                                      " note = 'b2' AND priority = 9 AND"
                                      " run_at = '2031-01-01 00:00+00'"),
                     1);

    sl_enqueue_opts o = {.delay_ms = 3600000, .has_priority = 1, .priority = 3};
    json_t *cols = json_pack("{s:s}", "note", "single");
    assert_int_equal(
        sl_jobs_enqueue(db, s, NULL, cols, &o, id, err, sizeof err), 0);
    json_decref(cols);
    /* A subject id for a standalone queue is refused. */
    assert_int_equal(sl_jobs_enqueue(db, s,
                                     "6d1c1a3e-0000-4000-8000-000000000001",
                                     NULL, NULL, id2, err, sizeof err),
                     -SL_EINVAL);

    sl_job_ref ref;
    assert_int_equal(sl_jobs_cancel(db, m, id, &ref, err, sizeof err), 0);
    assert_ptr_equal(ref.stage, s);
    assert_string_equal(ref.status, "pending");
    assert_int_equal(ref.changed, 1);
    expect_q("cancelled", "SELECT status FROM td_jobs WHERE id = '%s'", id);
    /* Retry brings a cancelled job back; cancel it again to leave the
     * queue idle. */
    assert_int_equal(sl_jobs_retry(db, m, id, &ref, err, sizeof err), 0);
    assert_string_equal(ref.status, "cancelled");
    assert_int_equal(ref.changed, 1);
    expect_q("retry", "SELECT status FROM td_jobs WHERE id = '%s'", id);
    assert_int_equal(sl_jobs_cancel(db, m, id, &ref, err, sizeof err), 0);
    assert_int_equal(ref.changed, 1);
    assert_int_equal(sl_jobs_find(db, m, "6d1c1a3e-0000-4000-8000-00000000000f",
                                  &ref, err, sizeof err),
                     0);
    assert_null(ref.stage);
    assert_int_equal(sl_jobs_find(db, m, "nope", &ref, err, sizeof err),
                     -SL_EINVAL);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(enqueue_file_stores_the_exact_bytes),
        cmocka_unit_test(enqueue_sets_url_json_payload_and_declared_columns),
        cmocka_unit_test(enqueue_delay_sets_run_at_in_the_future),
        cmocka_unit_test(enqueue_run_at_sets_that_time),
        cmocka_unit_test(
            enqueue_json_object_fills_columns_of_a_standalone_queue),
        cmocka_unit_test(
            enqueue_for_a_missing_subject_fails_with_a_clear_message),
        cmocka_unit_test(
            enqueue_without_the_subject_of_a_subject_pipeline_is_a_usage_error),
        cmocka_unit_test(enqueue_rejects_an_undeclared_column_and_a_bad_value),
        cmocka_unit_test(enqueue_of_an_unknown_pipeline_fails),
        cmocka_unit_test(enqueue_bulk_inserts_every_line_in_batches),
        cmocka_unit_test(enqueue_bulk_with_a_missing_subject_enqueues_nothing),
        cmocka_unit_test(status_shows_attempts_and_last_error),
        cmocka_unit_test(status_of_a_job_id_shows_that_job),
        cmocka_unit_test(status_of_a_job_id_names_its_subject),
        cmocka_unit_test(status_of_an_unknown_id_fails),
        cmocka_unit_test(cancel_of_a_pending_job_means_it_never_runs),
        cmocka_unit_test(
            cancel_of_a_running_job_stops_it_and_refuses_its_completion),
        cmocka_unit_test(cancel_of_an_unknown_job_fails),
        cmocka_unit_test(retry_of_an_errored_job_runs_it_again),
        cmocka_unit_test(retry_of_a_job_that_did_not_fail_is_refused),
        cmocka_unit_test(retry_queue_failed_retries_every_failed_job),
        cmocka_unit_test(watch_ends_0_when_the_pipeline_reaches_ready),
        cmocka_unit_test(watch_ends_3_at_the_error_status_with_the_last_error),
        cmocka_unit_test(watch_times_out_with_5),
        cmocka_unit_test(watch_of_an_unknown_subject_fails),
        cmocka_unit_test(jobs_filters_by_queue_and_status),
        cmocka_unit_test(stats_counts_match_the_queues),
        cmocka_unit_test(check_value_accepts_only_values_of_the_column_type),
        cmocka_unit_test(batch_rejects_a_bad_row_before_sending_anything),
        cmocka_unit_test(library_enqueues_cancels_and_retries_without_the_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
