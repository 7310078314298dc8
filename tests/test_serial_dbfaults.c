/* test_serial_dbfaults.c - database faults under running workers: every
 * connection (workers' and the control connection) terminated with
 * pg_terminate_backend, statement timeouts, PostgreSQL restarted several
 * times in a row. Workers recover, no job is lost, none fails because of
 * the fault, and the time to recover is printed.
 *
 * Runs alone (RUN_SERIAL): the restart case restarts the suite's shared
 * server, and the timing figures are cleaner without neighbours. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rtlib.h"

/* A two-stage pipeline a -> b; %s slots: sweep interval, lease, heartbeat,
 * a's with, b's with. */
static const char *pipeline(const char *sweep, const char *lease,
                            const char *heartbeat, const char *a_with,
                            const char *b_with) {
    static char y[2048];
    snprintf(y, sizeof y,
             "pipeline: dbf\n"
             "subject:\n"
             "  table: items\n"
             "  foreign_key: item_id\n"
             "  status: {column: status, values: [new, a_done, done,"
             " failed]}\n"
             "sweep: {interval: %s, pending_age: 1m}\n"
             "defaults:\n"
             "  retry: {max_attempts: 10, backoff: fixed, initial: 50ms,"
             " jitter: 0}\n"
             "  lease: %s\n"
             "  heartbeat: %s\n"
             "  timeout: 30s\n"
             "stages:\n"
             "  a:\n"
             "    queue: a_jobs\n"
             "    handler: t.probe\n"
             "    with: %s\n"
             "    status: {on_done: {status: a_done}, on_error: {status:"
             " failed}}\n"
             "    next: b\n"
             "  b:\n"
             "    queue: b_jobs\n"
             "    handler: t.probe\n"
             "    with: %s\n"
             "    status: {on_done: {status: done}, on_error: {status:"
             " failed}}\n",
             sweep, lease, heartbeat, a_with, b_with);
    return y;
}

static void add_items(PGconn *c, int n) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "WITH i AS (INSERT INTO items SELECT gen_random_uuid() FROM"
             " generate_series(1, %d) RETURNING id) INSERT INTO a_jobs"
             " (item_id) SELECT id FROM i",
             n);
    sl_test_exec(c, sql);
}

/* Terminates every other backend of the test database; returns how many. */
static long terminate_all(PGconn *c) {
    return sl_test_long(c, "SELECT count(pg_terminate_backend(pid)) FROM"
                           " pg_stat_activity WHERE datname ="
                           " current_database() AND pid <> pg_backend_pid() AND"
                           " backend_type = 'client backend'");
}

/* Waits until done_log grows past `before`; returns the milliseconds it
 * took from t0, or -1 after timeout_ms. */
static long wait_progress(PGconn *c, long before, int64_t t0,
                          int64_t timeout_ms) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT (count(*) > %ld)::int FROM done_log",
             before);
    if (!rt_wait_for(c, sql, 1, timeout_ms)) return -1;
    return (long)(sl_test_now_ms() - t0);
}

/* Every job of both stages done exactly once, no subject failed. */
static void assert_all_done_once(PGconn *c, long items) {
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"),
                     items * 2);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM items WHERE status = 'done'"),
        items);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM (SELECT status"
                                     " FROM a_jobs UNION ALL SELECT status"
                                     " FROM b_jobs) j WHERE status <> 'done'"),
                     0);
}

static void terminating_every_connection_mid_run_loses_nothing(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup(
        "dbf_terminate",
        pipeline("200ms", "5s", "500ms", "{sleep_ms: 20}", "{sleep_ms: 20}"),
        &c);
    add_items(c, 400);
    pid_t w[2] = {rt_track(rt_spawn(m, 2, 1, 1, 1000)),
                  rt_track(rt_spawn(m, 2, 1, 1, 1000))};
    long threshold[2] = {150, 450};
    for (int round = 0; round < 2; round++) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "SELECT (count(*) >= %ld)::int FROM"
                 " done_log",
                 threshold[round]);
        assert_true(rt_wait_for(c, sql, 1, 60000));
        int64_t t0 = sl_test_now_ms();
        long killed = terminate_all(c);
        long before = sl_test_long(c, "SELECT count(*) FROM done_log");
        long ms = wait_progress(c, before + 4, t0, 30000);
        print_message("pg_terminate_backend of %ld connections (2 workers x"
                      " (4 worker + 1 control)): work resumed after %ld ms\n",
                      killed, ms);
        /* Both processes' workers and control connections were hit. */
        assert_true(killed >= 10);
        assert_true(ms >= 0 && ms < 10000);
    }
    assert_int_equal(rt_wait(w[0], 120000), 0);
    assert_int_equal(rt_wait(w[1], 120000), 0);
    assert_all_done_once(c, 400);
    PQfinish(c);
    sl_model_free(m);
}

static void running_job_keeps_its_lease_across_a_terminated_control_connection(
    void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup(
        "dbf_lease", pipeline("200ms", "1s", "250ms", "{sleep_ms: 3000}", "{}"),
        &c);
    add_items(c, 1);
    pid_t w = rt_track(rt_spawn(m, 1, 1, 1, 1000));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM probe_runs", 1, 10000));
    usleep(300000);
    assert_true(terminate_all(c) >= 2);
    usleep(300000);
    assert_true(terminate_all(c) >= 1);
    assert_int_equal(rt_wait(w, 30000), 0);
    /* The lease (1 s) was renewed by the reconnected control connection
     * through a 3 s job: it was never rescued, it ran once. */
    assert_int_equal(sl_test_long(c, "SELECT attempts FROM a_jobs"), 1);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM a_jobs WHERE"
                                     " last_error IS NOT NULL"),
                     0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM probe_runs WHERE"
                                     " stage = 'a'"),
                     1);
    assert_all_done_once(c, 1);
    PQfinish(c);
    sl_model_free(m);
}

static void
idle_workers_hear_notifications_after_their_connections_die(void **state) {
    (void)state;
    PGconn *c;
    /* A 30 s sweep: only a NOTIFY on the re-established LISTEN can wake
     * the idle workers within the few seconds allowed below. */
    sl_model *m =
        rt_setup("dbf_listen", pipeline("30s", "5s", "1s", "{}", "{}"), &c);
    pid_t w = rt_track(rt_spawn(m, 2, 1, 0, 1000));
    add_items(c, 1);
    assert_true(rt_wait_for(c, "SELECT count(*) FROM done_log", 2, 10000));
    assert_true(terminate_all(c) >= 5);
    usleep(1000000);
    int64_t t0 = sl_test_now_ms();
    add_items(c, 1);
    assert_true(rt_wait_for(c, "SELECT count(*) FROM done_log", 4, 10000));
    long ms = (long)(sl_test_now_ms() - t0);
    print_message("a job enqueued after every connection was terminated ran"
                  " through both stages in %ld ms (sweep interval 30 s)\n",
                  ms);
    assert_true(ms < 5000);
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 10000), 0);
    PQfinish(c);
    sl_model_free(m);
}

/* Workers run with statement_timeout = 100ms (set on the database) while
 * the test holds an exclusive lock on `locked` for 2 s, so their
 * statements on it are cancelled. */
static void statement_timeouts_fail_no_job(const char *db, const char *locked) {
    PGconn *c;
    sl_model *m = rt_setup(
        db,
        pipeline("200ms", "2s", "500ms", "{sleep_ms: 10}", "{sleep_ms: 10}"),
        &c);
    char sql[256];
    snprintf(sql, sizeof sql,
             "ALTER DATABASE \"%s\" SET statement_timeout = '100ms'", db);
    sl_test_exec(c, sql);
    add_items(c, 300);
    pid_t w = rt_track(rt_spawn(m, 2, 1, 1, 1000));
    assert_true(
        rt_wait_for(c, "SELECT (count(*) >= 60)::int FROM done_log", 1, 30000));
    /* The workers' sessions carry the database's setting. */
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND backend_type ="
                        " 'client backend'"),
        5);
    sl_test_exec(c, "BEGIN");
    snprintf(sql, sizeof sql, "LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", locked);
    sl_test_exec(c, sql);
    usleep(2000000);
    sl_test_exec(c, "COMMIT");
    int64_t t0 = sl_test_now_ms();
    long before = sl_test_long(c, "SELECT count(*) FROM done_log");
    long ms = wait_progress(c, before + 4, t0, 30000);
    print_message("statement timeouts (100 ms) on %s locked for 2 s: work"
                  " resumed %ld ms after the lock was released\n",
                  locked, ms);
    assert_true(ms >= 0);
    assert_int_equal(rt_wait(w, 120000), 0);
    snprintf(sql, sizeof sql, "ALTER DATABASE \"%s\" RESET statement_timeout",
             db);
    sl_test_exec(c, sql);
    char *errors = sl_test_scalar(
        c, "SELECT string_agg(DISTINCT last_error, '; ') FROM (SELECT"
           " status, last_error FROM a_jobs UNION ALL SELECT status,"
           " last_error FROM b_jobs) j WHERE status = 'error'");
    if (errors) fail_msg("jobs failed because of the timeouts: %s", errors);
    assert_all_done_once(c, 300);
    PQfinish(c);
    sl_model_free(m);
}

static void statement_timeouts_on_the_claimed_queue_fail_no_job(void **state) {
    (void)state;
    statement_timeouts_fail_no_job("dbf_timeout_claim", "a_jobs");
}

static void statement_timeouts_on_the_next_queue_fail_no_job(void **state) {
    (void)state;
    /* The completion of an a-job inserts into b_jobs: it is the statement
     * that times out, not the claim. */
    statement_timeouts_fail_no_job("dbf_timeout_next", "b_jobs");
}

static void restart_server(const char *mode) {
    const char *host = getenv("PGHOST");
    assert_non_null(host);
    int rc = sl_test_sh(NULL,
                        "d='%s/../data'; if [ \"$(id -u)\" = 0 ]; then"
                        " runuser -u sluicepg -- /usr/lib/postgresql/15/bin/"
                        "pg_ctl -D \"$d\" -m %s -w restart >/dev/null 2>&1;"
                        " else /usr/lib/postgresql/15/bin/pg_ctl -D \"$d\""
                        " -m %s -w restart >/dev/null 2>&1; fi",
                        host, mode, mode);
    assert_int_equal(rc, 0);
}

static void three_restarts_in_a_row_lose_nothing(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup(
        "dbf_restarts",
        pipeline("200ms", "5s", "500ms", "{sleep_ms: 20}", "{sleep_ms: 20}"),
        &c);
    add_items(c, 400);
    pid_t w[2] = {rt_track(rt_spawn(m, 2, 1, 1, 1000)),
                  rt_track(rt_spawn(m, 2, 1, 1, 1000))};
    const char *modes[3] = {"fast", "immediate", "fast"};
    long threshold[3] = {100, 300, 500};
    for (int i = 0; i < 3; i++) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "SELECT (count(*) >= %ld)::int FROM"
                 " done_log",
                 threshold[i]);
        assert_true(rt_wait_for(c, sql, 1, 60000));
        PQfinish(c);
        int64_t t0 = sl_test_now_ms();
        restart_server(modes[i]);
        int64_t up = sl_test_now_ms() - t0;
        c = sl_test_connect(rt_conninfo());
        long before = sl_test_long(c, "SELECT count(*) FROM done_log");
        long ms = wait_progress(c, before + 4, t0, 30000);
        print_message("restart %d (%s): server back after %lld ms, work"
                      " resumed %ld ms after the restart began\n",
                      i + 1, modes[i], (long long)up, ms);
        assert_true(ms >= 0);
    }
    assert_int_equal(rt_wait(w[0], 120000), 0);
    assert_int_equal(rt_wait(w[1], 120000), 0);
    assert_all_done_once(c, 400);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            terminating_every_connection_mid_run_loses_nothing, rt_teardown),
        cmocka_unit_test_teardown(
            running_job_keeps_its_lease_across_a_terminated_control_connection,
            rt_teardown),
        cmocka_unit_test_teardown(
            idle_workers_hear_notifications_after_their_connections_die,
            rt_teardown),
        cmocka_unit_test_teardown(
            statement_timeouts_on_the_claimed_queue_fail_no_job, rt_teardown),
        cmocka_unit_test_teardown(
            statement_timeouts_on_the_next_queue_fail_no_job, rt_teardown),
        cmocka_unit_test_teardown(three_restarts_in_a_row_lose_nothing,
                                  rt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
