/* test_tenants.c - tenants and secrets.
 *
 * Tenants: the application role `sluice_app` acting for a user of account
 * A (request.jwt.claim.sub, as Supabase sets it) sees and enqueues only
 * A's subjects and jobs. test_migrate.c covers reading, updating and
 * enqueueing across tenants and the statistics view; this file covers the
 * remaining ways across: moving a job or an interview to B, deleting or
 * cancelling B's jobs, writing B's insights, joining B's account, and an
 * anonymous session.
 *
 * Secrets: an API key that a handler echoes into its failure message, its
 * log lines, its progress detail, its checkpoint and its outputs reaches no
 * log line, no column and no byte of a pg_dump of the database. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "rtlib.h"
#include "handler.h"

static PGconn *conn;
static sl_model *model;

#define ACC_A "00000000-0000-0000-0000-00000000000a"
#define ACC_B "00000000-0000-0000-0000-00000000000b"
#define USER_A "11111111-1111-1111-1111-111111111111"
#define USER_A2 "11111111-1111-1111-1111-222222222222" /* A's plain member */
#define USER_B "22222222-2222-2222-2222-222222222222"
#define IV_A "aaaaaaaa-0000-0000-0000-000000000001"
#define IV_B "bbbbbbbb-0000-0000-0000-000000000001"

static const char *tenant_yaml =
    "pipeline: interview\n"
    "subject:\n"
    "  table: interviews\n"
    "  status:\n"
    "    column: status\n"
    "    values: [uploading, uploaded, transcribed, processing, ready,"
    " error]\n"
    "  progress: progress\n"
    "  detail: status_detail\n"
    "stages:\n"
    "  upload:\n"
    "    queue: upload_jobs\n"
    "    handler: noop\n"
    "    columns: {media_file: bytea}\n"
    "    next: analyze\n"
    "  analyze:\n"
    "    queue: analysis_jobs\n"
    "    handler: noop\n";

static int setup_tenants(void **state) {
    (void)state;
    model = rt_setup("tenants", tenant_yaml, &conn);
    sl_test_exec(
        conn, "INSERT INTO accounts (id, name) VALUES ('" ACC_A "', 'A'),"
              " ('" ACC_B "', 'B');"
              "INSERT INTO account_members (account_id, user_id, role)"
              " VALUES ('" ACC_A "', '" USER_A "', 'owner'),"
              " ('" ACC_A "', '" USER_A2 "', 'member'),"
              " ('" ACC_B "', '" USER_B "', 'owner');"
              "INSERT INTO interviews (id, account_id, title) VALUES"
              " ('" IV_A "', '" ACC_A "', 'A'), ('" IV_B "', '" ACC_B "', 'B');"
              "INSERT INTO upload_jobs (interview_id) VALUES ('" IV_A "'),"
              " ('" IV_B "');"
              "INSERT INTO analysis_jobs (interview_id) VALUES ('" IV_A
              "'), ('" IV_B "');"
              "INSERT INTO insights (interview_id, chunk, seq, kind,"
              " content) VALUES ('" IV_A "', 1, 1, 'wish', 'a'), ('" IV_B
              "', 1, 1, 'wish', 'b');");
    return 0;
}

static int teardown_tenants(void **state) {
    (void)state;
    PQfinish(conn);
    conn = NULL;
    sl_model_free(model);
    model = NULL;
    rt_kill_tracked();
    return 0;
}

/* Runs sql as sluice_app for user (NULL: no user) in a transaction that
 * is rolled back; returns the command's row count ("UPDATE 0" -> 0, a
 * SELECT's first value as a number), or -1 when the statement was refused
 * (the server's message in msg). */
static long as_user(const char *user, const char *sql, char *msg,
                    size_t msglen) {
    sl_test_exec(conn, "BEGIN; SET LOCAL ROLE sluice_app");
    if (user) {
        char q[200];
        snprintf(q, sizeof q,
                 "SELECT set_config('request.jwt.claim.sub', '%s', true)",
                 user);
        sl_test_exec(conn, q);
    }
    PGresult *r = PQexec(conn, sql);
    long n = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        n = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : 0;
    else if (PQresultStatus(r) == PGRES_COMMAND_OK)
        n = atol(PQcmdTuples(r));
    else if (msg)
        snprintf(msg, msglen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    sl_test_exec(conn, "ROLLBACK");
    return n;
}

static void expect_refused(const char *user, const char *sql) {
    char msg[512] = "";
    long n = as_user(user, sql, msg, sizeof msg);
    if (n != -1) fail_msg("as %s: %s was not refused", user, sql);
    if (!strstr(msg, "row-level security") && !strstr(msg, "permission"))
        fail_msg("as %s: %s refused for another reason: %s", user, sql, msg);
}

static void expect_rows(const char *user, const char *sql, long want) {
    char msg[512] = "";
    long n = as_user(user, sql, msg, sizeof msg);
    if (n != want)
        fail_msg("as %s: %s -> %ld (want %ld) %s", user ? user : "anon", sql, n,
                 want, msg);
}

/* ---- tenants ------------------------------------------------------------ */

static void
tenant_cannot_move_its_job_to_another_tenants_interview(void **state) {
    (void)state;
    expect_refused(USER_A, "UPDATE upload_jobs SET interview_id = '" IV_B "'");
    expect_refused(USER_A,
                   "UPDATE analysis_jobs SET interview_id = '" IV_B "'");
    /* Its own job can be cancelled: the policy is not simply read-only;
     * but the engine's columns are not the application's to write. */
    expect_rows(USER_A, "UPDATE upload_jobs SET status = 'cancelled'", 1);
    expect_refused(USER_A, "UPDATE upload_jobs SET priority = 5");
}

static void
tenant_cannot_move_its_interview_into_another_account(void **state) {
    (void)state;
    expect_refused(USER_A, "UPDATE interviews SET account_id = '" ACC_B "'");
    expect_refused(USER_A, "INSERT INTO interviews (account_id, title) VALUES"
                           " ('" ACC_B "', 'planted')");
}

static void tenant_cannot_delete_or_cancel_another_tenants_jobs(void **state) {
    (void)state;
    /* Every row of the table is addressed; only A's own are touched. */
    expect_rows(USER_A, "DELETE FROM upload_jobs", 1);
    expect_rows(USER_A, "UPDATE analysis_jobs SET status = 'cancelled'", 1);
    expect_rows(USER_A, "DELETE FROM interviews", 1);
    expect_rows(USER_A,
                "DELETE FROM upload_jobs WHERE interview_id = '" IV_B "'", 0);
    /* Outside the rolled-back transactions nothing changed. */
    assert_int_equal(sl_test_long(conn, "SELECT count(*) FROM upload_jobs"), 2);
}

static void tenant_cannot_read_or_write_another_tenants_insights(void **state) {
    (void)state;
    expect_rows(USER_A, "SELECT count(*) FROM insights", 1);
    expect_rows(USER_B,
                "SELECT count(*) FROM insights WHERE interview_id ="
                " '" IV_A "'",
                0);
    expect_refused(USER_A, "INSERT INTO insights (interview_id, chunk, seq,"
                           " kind, content) VALUES ('" IV_B "', 9, 9, 'wish',"
                           " 'planted')");
    expect_rows(USER_A, "UPDATE insights SET content = 'x'", 1);
    /* Joins through a queue table reach no further than the tables. */
    expect_rows(USER_A,
                "SELECT count(*) FROM analysis_jobs j JOIN insights i ON"
                " i.interview_id = j.interview_id",
                1);
}

static void member_cannot_join_another_account_or_promote_itself(void **state) {
    (void)state;
    /* A's owner cannot add itself to B. */
    expect_refused(USER_A,
                   "INSERT INTO account_members (account_id, user_id,"
                   " role) VALUES ('" ACC_B "', '" USER_A "', 'owner')");
    /* A's plain member cannot make itself owner, nor add members. */
    expect_rows(USER_A2,
                "UPDATE account_members SET role = 'owner' WHERE user_id ="
                " '" USER_A2 "'",
                0);
    expect_refused(USER_A2, "INSERT INTO account_members (account_id,"
                            " user_id, role) VALUES ('" ACC_A "', '" USER_B
                            "', 'member')");
    /* A new account belongs to its creator only. (Without RETURNING: the
     * new row is not yet visible to its creator when RETURNING is checked,
     * because the owner membership is added by an AFTER trigger.) */
    expect_rows(USER_A2, "INSERT INTO accounts (name) VALUES ('new')", 1);
    expect_rows(USER_B, "SELECT count(*) FROM accounts", 1);
}

static void anonymous_session_sees_and_enqueues_nothing(void **state) {
    (void)state;
    expect_rows(NULL, "SELECT count(*) FROM upload_jobs", 0);
    expect_rows(NULL, "SELECT count(*) FROM interviews", 0);
    expect_rows(NULL, "SELECT count(*) FROM insights", 0);
    expect_refused(NULL, "INSERT INTO upload_jobs (interview_id) VALUES ('" IV_A
                         "')");
    expect_rows(NULL, "UPDATE upload_jobs SET status = 'cancelled'", 0);
}

/* ---- secrets --------------------------------------------------------------
 */

#define SECRET "sk-test-secret-xyz"

/* t.leaky: a careless handler that puts the key everywhere it can. First
 * attempt: log line, progress detail, checkpoint, failure message; second
 * attempt: outputs. */
static void leaky_run(sl_ctx *ctx, const sl_job *job, void *state,
                      sl_result *res) {
    (void)state;
    const char *key = getenv("OPENAI_API_KEY");
    char buf[256];
    if (job->attempt == 1) {
        sl_ctx_log(ctx, SL_LOG_WARN, "calling the API with key %s", key);
        snprintf(buf, sizeof buf, "authorising with %s", key);
        sl_ctx_progress(ctx, 50, buf);
        snprintf(buf, sizeof buf, "Bearer %s", key);
        json_t *cp =
            json_pack("{s:s, s:{s:[s]}}", "auth", buf, "nested", "keys", key);
        sl_ctx_checkpoint(ctx, cp);
        json_decref(cp);
        sl_fail(res, SL_EC_HTTP_5XX,
                "HTTP 503: upstream said: Incorrect API key provided: %s", key);
        return;
    }
    snprintf(buf, sizeof buf, "token=%s", key);
    sl_done(res, json_pack("{s:s}", "result", buf));
}

static const sl_handler leaky = {"t.leaky", NULL, NULL, NULL, leaky_run};

static const char *secret_yaml =
    "pipeline: sec\n"
    "subject:\n"
    "  table: items\n"
    "  foreign_key: item_id\n"
    "  status: {column: status, values: [new, running, done, failed]}\n"
    "  progress: progress\n"
    "  detail: detail\n"
    "defaults:\n"
    "  retry: {max_attempts: 3, backoff: fixed, initial: 50ms, jitter: 0}\n"
    "stages:\n"
    "  a:\n"
    "    queue: a_jobs\n"
    "    handler: t.leaky\n"
    "    columns: {result: text}\n"
    "    status:\n"
    "      on_start: {status: running}\n"
    "      progress: {status: running, from: 10, to: 90}\n"
    "      on_done: {status: done, progress: 100}\n"
    "      on_error: {status: failed}\n";

static void
api_key_echoed_by_a_handler_reaches_no_log_column_or_dump(void **state) {
    (void)state;
    setenv("OPENAI_API_KEY", SECRET, 1);
    sl_redact_reload();
    assert_int_equal(sl_handler_register(&leaky), 0);
    PGconn *c;
    sl_model *m = rt_setup("secrets", secret_yaml, &c);
    sl_test_exec(c, "WITH i AS (INSERT INTO items DEFAULT VALUES RETURNING"
                    " id) INSERT INTO a_jobs (item_id) SELECT id FROM i");
    char log_path[512];
    snprintf(log_path, sizeof log_path, "%s/secrets-worker.log",
             sl_test_tmpdir());
    pid_t w =
        rt_track(rt_spawn_logged(m, 1, 1, 1, 1000, log_path, SL_LOG_DEBUG));
    assert_int_equal(rt_wait(w, 30000), 0);
    /* It ran twice and finished. */
    assert_int_equal(
        sl_test_long(c, "SELECT attempts FROM a_jobs WHERE status = 'done'"),
        2);

    char *log = rt_read_file(log_path, NULL);
    assert_non_null(log);
    if (strstr(log, SECRET)) fail_msg("the key is in the log:\n%s", log);
    /* The lines were written, with the key replaced. */
    assert_non_null(strstr(log, "calling the API with key [redacted]"));
    free(log);

    /* Every column of every row of the job and its subject. */
    char *row = sl_test_scalar(c, "SELECT string_agg(t::text, ' ') FROM"
                                  " (SELECT row_to_json(j)::text AS t FROM"
                                  " a_jobs j UNION ALL SELECT"
                                  " row_to_json(i)::text FROM items i) x");
    if (strstr(row, SECRET)) fail_msg("the key is in the database: %s", row);
    free(row);
    char *err = sl_test_scalar(c, "SELECT last_error FROM a_jobs");
    assert_non_null(err);
    assert_non_null(strstr(err, "[redacted]"));
    free(err);

    /* And anywhere in a full dump (schema and data). */
    char *dump = NULL;
    assert_int_equal(sl_test_sh(&dump, "pg_dump -d secrets 2>&1"), 0);
    assert_non_null(strstr(dump, "a_jobs"));
    if (strstr(dump, SECRET)) fail_msg("the key is in pg_dump's output");
    free(dump);
    PQfinish(c);
    sl_model_free(m);
    unsetenv("OPENAI_API_KEY");
    sl_redact_reload();
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup_tenants, teardown_tenants)
    const struct CMUnitTest tests[] = {
        T(tenant_cannot_move_its_job_to_another_tenants_interview),
        T(tenant_cannot_move_its_interview_into_another_account),
        T(tenant_cannot_delete_or_cancel_another_tenants_jobs),
        T(tenant_cannot_read_or_write_another_tenants_insights),
        T(member_cannot_join_another_account_or_promote_itself),
        T(anonymous_session_sees_and_enqueues_nothing),
        cmocka_unit_test_teardown(
            api_key_echoed_by_a_handler_reaches_no_log_column_or_dump,
            teardown_tenants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
