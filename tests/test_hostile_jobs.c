/* test_hostile_jobs.c - jobs whose rows are hostile: odd JSON payloads,
 * outputs that do not fit their columns, missing or forbidden local files,
 * garbage audio, giant inputs, a subject deleted while its job runs. Each
 * ends in a clear job error or a clean skip; the worker process never
 * crashes and serves the next job. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rtlib.h"
#include "handler.h"

/* ---- t.echo: hands parts of its input back as outputs ------------------- */

/* outputs: echo <- input.payload (any JSON), n <- input.want (as given, so
 * a string lands in an integer column), size <- length of input.blob (the
 * bytea's hex text) and keys <- the input's keys, comma-separated. */
static void echo_run(sl_ctx *ctx, const sl_job *job, void *state,
                     sl_result *res) {
    (void)ctx;
    (void)state;
    json_t *out = json_object();
    json_t *p = json_object_get(job->input, "payload");
    if (p) json_object_set(out, "echo", p);
    json_t *want = json_object_get(job->input, "want");
    if (want) json_object_set(out, "n", want);
    json_t *blob = json_object_get(job->input, "blob");
    if (json_is_string(blob))
        json_object_set_new(out, "size",
                            json_integer((json_int_t)json_string_length(blob)));
    char keys[256] = "";
    const char *k;
    json_t *v;
    json_object_foreach(job->input, k, v) {
        if (keys[0]) strncat(keys, ",", sizeof keys - strlen(keys) - 1);
        strncat(keys, k, sizeof keys - strlen(keys) - 1);
    }
    json_object_set_new(out, "keys", json_string(keys));
    sl_done(res, out);
}

static const sl_handler echo = {"t.echo", NULL, NULL, NULL, echo_run};

static void register_echo(void) {
    static int done;
    if (!done) assert_int_equal(sl_handler_register(&echo), 0);
    done = 1;
}

/* A one-stage pipeline over items; %s slots: handler, with, columns. */
static const char *pipeline(const char *handler, const char *with,
                            const char *columns) {
    static char y[2048];
    snprintf(y, sizeof y,
             "pipeline: hj\n"
             "subject:\n"
             "  table: items\n"
             "  foreign_key: item_id\n"
             "  status: {column: status, values: [new, running, done,"
             " failed]}\n"
             "  detail: detail\n"
             "sweep: {interval: 200ms, pending_age: 1m}\n"
             "defaults:\n"
             "  retry: {max_attempts: 3, backoff: fixed, initial: 50ms,"
             " jitter: 0}\n"
             "  lease: 10s\n"
             "  heartbeat: 1s\n"
             "  timeout: 2m\n"
             "stages:\n"
             "  a:\n"
             "    queue: a_jobs\n"
             "    handler: %s\n"
             "    with: %s\n"
             "    columns: %s\n"
             "    status:\n"
             "      on_start: {status: running}\n"
             "      on_done: {status: done}\n"
             "      on_error: {status: failed, detail: \"a failed\"}\n",
             handler, with, columns);
    return y;
}

static const char *echo_columns =
    "{payload: jsonb, want: text, blob: bytea, echo: jsonb, n: integer,"
    " size: bigint, keys: text}";

static sl_model *setup_echo(const char *db, PGconn **c) {
    register_echo();
    return rt_setup(db, pipeline("t.echo", "{}", echo_columns), c);
}

/* Enqueues one job for a new item with `cols` = `vals` (SQL). */
static void enqueue(PGconn *c, const char *cols, const char *vals) {
    char *sql = malloc(strlen(cols) + strlen(vals) + 256);
    sprintf(sql,
            "WITH i AS (INSERT INTO items DEFAULT VALUES RETURNING id)"
            " INSERT INTO a_jobs (item_id%s%s) SELECT id%s%s FROM i",
            *cols ? ", " : "", cols, *vals ? ", " : "", vals);
    sl_test_exec(c, sql);
    free(sql);
}

/* The worker is alive, then completes one more ordinary job, then stops
 * cleanly on SIGTERM. */
static void assert_worker_serves_on(PGconn *c, pid_t w, const char *cols,
                                    const char *vals) {
    assert_true(rt_alive(w, NULL));
    long before = sl_test_long(c, "SELECT count(*) FROM done_log");
    enqueue(c, cols, vals);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM done_log");
    assert_true(rt_wait_for(c, sql, before + 1, 30000));
    assert_true(rt_alive(w, NULL));
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 30000), 0);
}

/* Waits until no a_jobs row is unfinished. */
static void wait_settled(PGconn *c, int64_t timeout_ms) {
    assert_true(rt_wait_for(c,
                            "SELECT count(*) FROM a_jobs WHERE status IN"
                            " ('pending', 'retry', 'in_progress')",
                            0, timeout_ms));
}

/* ---- payloads ----------------------------------------------------------- */

static void odd_json_payloads_reach_the_handler_unchanged(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = setup_echo("hj_payloads", &c);
    static const char *payloads[] = {
        "'\"just a string\"'",
        "'42'",
        "'-0'",
        "'null'",
        "'true'",
        "'[]'",
        "'{}'",
        "'{\"\": \"\"}'",
        "'{\"a\\\"b;c''d\": \"x''); DROP TABLE items; --\"}'",
        "'\"\\u202eevil \\ud83d\\udca5 caf\\u00e9 \\u4e2d\\u6587\"'",
        "'[1, \"two\", {\"three\": [4, null, false]}]'",
        "(SELECT (repeat('[', 200) || '1' || repeat(']', 200))::jsonb)",
        "(SELECT to_jsonb(repeat('x', 1000000)))",
        "(SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1,"
        " 10000) g)",
        "'9223372036854775807'",
    };
    size_t n = sizeof payloads / sizeof payloads[0];
    for (size_t i = 0; i < n; i++)
        enqueue(c, "payload", payloads[i]);
    pid_t w = rt_track(rt_spawn(m, 2, 4, 0, 1000));
    wait_settled(c, 60000);
    /* Each payload came back as it went in. */
    char *bad = sl_test_scalar(
        c, "SELECT string_agg(left(payload::text, 60) || ' -> ' ||"
           " coalesce(left(echo::text, 60), 'NULL') || ' [' || status ||"
           " ']', E'\\n') FROM a_jobs WHERE status <> 'done' OR echo IS"
           " DISTINCT FROM payload");
    if (bad) fail_msg("payloads changed on the way:\n%s", bad);
    assert_worker_serves_on(c, w, "payload", "'{\"ok\": 1}'");
    PQfinish(c);
    sl_model_free(m);
}

/* Decimal numbers reach a handler as IEEE doubles and are written back
 * with 15 significant digits: everyday decimals come back as they went in
 * (a double that needs 16 or 17 digits would come back rounded). */
static void decimal_payloads_come_back_unchanged(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = setup_echo("hj_decimals", &c);
    static const char *payloads[] = {"'3.14159'", "'0.1'", "'-2.5e-7'",
                                     "'1e-300'", "'{\"price\": 19.99}'"};
    size_t n = sizeof payloads / sizeof payloads[0];
    for (size_t i = 0; i < n; i++)
        enqueue(c, "payload", payloads[i]);
    pid_t w = rt_track(rt_spawn(m, 1, 4, 0, 1000));
    wait_settled(c, 30000);
    char *bad = sl_test_scalar(
        c, "SELECT string_agg(payload::text || ' -> ' || coalesce(echo::text,"
           " 'NULL') || ' [' || status || ']', E'\\n') FROM a_jobs WHERE"
           " status <> 'done' OR echo IS DISTINCT FROM payload");
    if (bad) fail_msg("decimals changed on the way:\n%s", bad);
    assert_worker_serves_on(c, w, "payload", "'1'");
    PQfinish(c);
    sl_model_free(m);
}

/* Payloads that cannot be decoded into the handler's JSON without loss
 * (numbers beyond 64-bit integers and doubles, nesting deeper than the
 * decoder allows) must not reach the handler changed or emptied: the job
 * either completes with its payload intact or fails with invalid_input. */
static void undecodable_payloads_are_never_handed_over_altered(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = setup_echo("hj_undecodable", &c);
    static const char *payloads[] = {
        "'100000000000000000000000000000'",
        "'{\"big\": 1e400}'",
        "'0.1e-400'",
        "(SELECT (repeat('[', 5000) || '1' || repeat(']', 5000))::jsonb)",
    };
    size_t n = sizeof payloads / sizeof payloads[0];
    for (size_t i = 0; i < n; i++)
        enqueue(c, "payload", payloads[i]);
    pid_t w = rt_track(rt_spawn(m, 1, 1, 0, 1000));
    wait_settled(c, 60000);
    char *bad = sl_test_scalar(
        c, "SELECT string_agg(left(payload::text, 40) || ' -> ' || status ||"
           " ' echo=' || coalesce(left(echo::text, 40), 'NULL') || ' keys='"
           " || coalesce(keys, 'NULL') || ' error=' || coalesce(error_class,"
           " '') || ' ' || coalesce(last_error, ''), E'\\n') FROM a_jobs"
           " WHERE NOT ((status = 'done' AND echo = payload) OR (status ="
           " 'error' AND error_class = 'invalid_input'))");
    if (bad) fail_msg("payloads handed over altered:\n%s", bad);
    assert_worker_serves_on(c, w, "payload", "'{\"ok\": 1}'");
    PQfinish(c);
    sl_model_free(m);
}

/* ---- outputs ------------------------------------------------------------ */

static void
output_that_does_not_fit_its_column_fails_only_that_job(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = setup_echo("hj_outputs", &c);
    static const char *wants[] = {
        "'7'", "'abc'", "'99999999999'", "'8'", "'1.5'", "'-3'", "''"};
    for (size_t i = 0; i < sizeof wants / sizeof wants[0]; i++)
        enqueue(c, "want", wants[i]);
    /* One claim of all seven: the batch completion fails as a whole, then
     * the runtime completes them one by one. */
    pid_t w = rt_track(rt_spawn(m, 1, 8, 0, 1000));
    wait_settled(c, 30000);
    char *done = sl_test_scalar(c, "SELECT string_agg(n::text, ',' ORDER BY"
                                   " n) FROM a_jobs WHERE status = 'done'");
    assert_non_null(done);
    assert_string_equal(done, "-3,7,8");
    free(done);
    PGresult *r = PQexec(c, "SELECT want, error_class, last_error FROM a_jobs"
                            " WHERE status = 'error' ORDER BY want");
    assert_int_equal(PQntuples(r), 4);
    for (int i = 0; i < PQntuples(r); i++) {
        const char *msg = PQgetvalue(r, i, 2);
        print_message("want '%s' -> %s: %s\n", PQgetvalue(r, i, 0),
                      PQgetvalue(r, i, 1), msg);
        assert_string_equal(PQgetvalue(r, i, 1), "invalid_input");
        assert_non_null(strstr(msg, "cannot store outputs"));
        assert_true(strstr(msg, "integer") || strstr(msg, "out of range"));
    }
    PQclear(r);
    /* A permanent class: each ran once, and its subject shows the error. */
    assert_int_equal(sl_test_long(c, "SELECT max(attempts) FROM a_jobs"), 1);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM items WHERE status = 'failed'"),
        4);
    assert_worker_serves_on(c, w, "want", "'9'");
    PQfinish(c);
    sl_model_free(m);
}

/* ---- giant inputs ------------------------------------------------------- */

static void fifty_megabyte_bytea_is_handed_over_whole(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = setup_echo("hj_giant", &c);
    enqueue(c, "blob", "convert_to(repeat('x', 50 * 1024 * 1024), 'UTF8')");
    pid_t w = rt_track(rt_spawn(m, 1, 1, 0, 1000));
    int64_t t0 = sl_test_now_ms();
    wait_settled(c, 120000);
    print_message("a 50 MiB bytea input was claimed and handled in %lld ms\n",
                  (long long)(sl_test_now_ms() - t0));
    /* "\x" and two hex digits per byte. */
    assert_int_equal(sl_test_long(c, "SELECT size FROM a_jobs WHERE status ="
                                     " 'done'"),
                     2 + 2L * 50 * 1024 * 1024);
    assert_worker_serves_on(c, w, "want", "'1'");
    PQfinish(c);
    sl_model_free(m);
}

static void
input_too_large_to_claim_fails_that_job_and_the_queue_moves(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = setup_echo("hj_too_large", &c);
    /* 140 MiB of bytea is 280 MiB of hex text: more than a jsonb string
     * may hold (256 MiB), so the job's input cannot be built. */
    enqueue(c, "blob", "convert_to(repeat('x', 140 * 1024 * 1024), 'UTF8')");
    sl_test_exec(c, "UPDATE a_jobs SET priority = 10");
    for (int i = 0; i < 5; i++)
        enqueue(c, "want", "'5'");
    pid_t w = rt_track(rt_spawn(m, 1, 1, 0, 1000));
    /* The small jobs behind it are not blocked for good. */
    assert_true(rt_wait_for(c,
                            "SELECT count(*) FROM a_jobs WHERE status ="
                            " 'done'",
                            5, 60000));
    wait_settled(c, 60000);
    char *st = sl_test_scalar(c, "SELECT status || ' ' || coalesce("
                                 "error_class, '') || ': ' || coalesce("
                                 "last_error, '') FROM a_jobs WHERE"
                                 " priority = 10");
    print_message("oversized input: %s\n", st);
    assert_non_null(strstr(st, "error invalid_input"));
    free(st);
    assert_worker_serves_on(c, w, "want", "'1'");
    PQfinish(c);
    sl_model_free(m);
}

/* ---- files -------------------------------------------------------------- */

static void
missing_forbidden_and_garbage_media_are_clear_job_errors(void **state) {
    (void)state;
    char root[512], with[700], sql[1024];
    snprintf(root, sizeof root, "%s/media", sl_test_tmpdir());
    mkdir(root, 0755);
    snprintf(sql, sizeof sql, "%s/notes.txt", root);
    FILE *f = fopen(sql, "w");
    assert_non_null(f);
    fputs("this is not audio\n", f);
    fclose(f);
    snprintf(with, sizeof with, "{path_root: \"%s\"}", root);
    PGconn *c;
    sl_model *m = rt_setup(
        "hj_files",
        pipeline("local.transcribe", with,
                 "{media_file: bytea, media_path: text, transcript: text}"),
        &c);
    struct {
        const char *cols, *vals, *expect;
    } cases[] = {
        {"media_path", "'%s/does-not-exist.wav'", "No such file"},
        {"media_path", "'%s/../../../../etc/passwd'", "outside path_root"},
        {"media_path", "'/etc/hostname'", "outside path_root"},
        {"media_path", "'%s'", ""}, /* a directory */
        {"media_path", "'%s/notes.txt'", ""},
        {"media_file", "convert_to(repeat('garbage, not audio', 1000), 'UTF8')",
         "Invalid data"},
        {"media_file", "''::bytea", "no audio"},
    };
    size_t n = sizeof cases / sizeof cases[0];
    char *ids[16];
    for (size_t i = 0; i < n; i++) {
        char vals[700];
        snprintf(vals, sizeof vals, cases[i].vals, root);
        snprintf(sql, sizeof sql,
                 "WITH i AS (INSERT INTO items DEFAULT VALUES RETURNING id)"
                 " INSERT INTO a_jobs (item_id, %s) SELECT id, %s FROM i"
                 " RETURNING id",
                 cases[i].cols, vals);
        ids[i] = sl_test_scalar(c, sql);
    }
    pid_t w = rt_track(rt_spawn(m, 1, 1, 0, 1000));
    wait_settled(c, 90000);
    for (size_t i = 0; i < n; i++) {
        snprintf(sql, sizeof sql,
                 "SELECT status || '|' || coalesce(error_class, '') || '|' ||"
                 " coalesce(last_error, '') FROM a_jobs WHERE id = '%s'",
                 ids[i]);
        char *got = sl_test_scalar(c, sql);
        assert_non_null(got);
        char vals[700];
        snprintf(vals, sizeof vals, cases[i].vals, root);
        print_message("%s = %.60s -> %s\n", cases[i].cols, vals, got);
        if (strncmp(got, "error|invalid_input|local.transcribe: ", 38) != 0)
            fail_msg("case %zu: expected a permanent invalid_input error,"
                     " got %s",
                     i, got);
        if (!strstr(got, cases[i].expect))
            fail_msg("case %zu: expected '%s' in %s", i, cases[i].expect, got);
        free(got);
        free(ids[i]);
    }
    assert_int_equal(sl_test_long(c, "SELECT max(attempts) FROM a_jobs"), 1);
    assert_true(rt_alive(w, NULL));
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 30000), 0);
    PQfinish(c);
    sl_model_free(m);
}

/* ---- the subject goes away -------------------------------------------- */

static void
subject_deleted_while_its_job_runs_is_skipped_cleanly(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m =
        rt_setup("hj_deleted",
                 pipeline("t.probe", "{sleep_ms: 1500}", "{want: text}"), &c);
    enqueue(c, "want", "'doomed'");
    pid_t w = rt_track(rt_spawn(m, 1, 1, 0, 1000));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM probe_runs", 1, 10000));
    /* ON DELETE CASCADE takes the running job's row with it. */
    sl_test_exec(c, "DELETE FROM items");
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM a_jobs"), 0);
    usleep(2500000); /* past the handler's end and a heartbeat */
    assert_true(rt_alive(w, NULL));
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"), 0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM items"), 0);
    /* Nothing was re-created for the deleted subject, and the next job is
     * served. */
    assert_worker_serves_on(c, w, "want", "'next'");
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM a_jobs"), 1);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM probe_runs"), 2);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(odd_json_payloads_reach_the_handler_unchanged,
                                  rt_teardown),
        cmocka_unit_test_teardown(decimal_payloads_come_back_unchanged,
                                  rt_teardown),
        cmocka_unit_test_teardown(
            undecodable_payloads_are_never_handed_over_altered, rt_teardown),
        cmocka_unit_test_teardown(
            output_that_does_not_fit_its_column_fails_only_that_job,
            rt_teardown),
        cmocka_unit_test_teardown(fifty_megabyte_bytea_is_handed_over_whole,
                                  rt_teardown),
        cmocka_unit_test_teardown(
            input_too_large_to_claim_fails_that_job_and_the_queue_moves,
            rt_teardown),
        cmocka_unit_test_teardown(
            missing_forbidden_and_garbage_media_are_clear_job_errors,
            rt_teardown),
        cmocka_unit_test_teardown(
            subject_deleted_while_its_job_runs_is_skipped_cleanly,
            rt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
