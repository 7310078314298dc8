/* test_runtime.c - the queue runtime against the real PostgreSQL: claims,
 * completion, hand-off, retries, snooze, checkpoints, leases, fencing,
 * cancel, shutdown. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "queue.h"
#include "rtlib.h"

/* A two-stage pipeline a -> b over items; %s slots: retry block, a's
 * with, b's with, lease, heartbeat. */
static char *pipeline_yaml(const char *retry, const char *a_with,
                           const char *b_with, const char *lease,
                           const char *heartbeat) {
    static char y[4096];
    snprintf(y, sizeof y,
             "pipeline: rt\n"
             "subject:\n"
             "  table: items\n"
             "  key: id\n"
             "  foreign_key: item_id\n"
             "  status:\n"
             "    column: status\n"
             "    values: [new, a_running, a_done, b_running, done, failed]\n"
             "  progress: progress\n"
             "  detail: detail\n"
             "sweep:\n"
             "  interval: 200ms\n"
             "  pending_age: 1m\n"
             "defaults:\n"
             "  retry: %s\n"
             "  lease: %s\n"
             "  heartbeat: %s\n"
             "  timeout: 30s\n"
             "stages:\n"
             "  a:\n"
             "    queue: a_jobs\n"
             "    handler: t.probe\n"
             "    with: %s\n"
             "    columns:\n"
             "      note: text\n"
             "      token: text\n"
             "    status:\n"
             "      on_start: {status: a_running, progress: 10, detail: "
             "\"a started\"}\n"
             "      progress: {status: a_running, from: 10, to: 40}\n"
             "      on_done: {status: a_done, progress: 50, detail: \"a "
             "done\"}\n"
             "      on_error: {status: failed, detail: \"a failed\"}\n"
             "    next:\n"
             "      - stage: b\n"
             "        map: {token: token}\n"
             "  b:\n"
             "    queue: b_jobs\n"
             "    handler: t.probe\n"
             "    with: %s\n"
             "    columns:\n"
             "      token: text\n"
             "    status:\n"
             "      on_start: {status: b_running, progress: 60}\n"
             "      on_done: {status: done, progress: 100, detail: "
             "\"all done\"}\n"
             "      on_error: {status: failed, detail: \"b failed\"}\n",
             retry, lease, heartbeat, a_with, b_with);
    return y;
}

static const char *default_retry =
    "{max_attempts: 3, backoff: fixed, initial: 50ms, jitter: 0}";

static void add_items(PGconn *c, int n) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "WITH i AS (INSERT INTO items SELECT gen_random_uuid() FROM"
             " generate_series(1, %d) RETURNING id) INSERT INTO a_jobs"
             " (item_id, note) SELECT id, 'n' FROM i",
             n);
    sl_test_exec(c, sql);
}

static void four_workers_complete_every_job_exactly_once(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m =
        rt_setup("rt_exactly_once",
                 pipeline_yaml(default_retry, "{output: {token: t1}}", "{}",
                               "30s", "5s"),
                 &c);
    add_items(c, 5000); /* 5,000 a-jobs + 5,000 b-jobs = 10,000 jobs */
    pid_t w[4];
    for (int i = 0; i < 4; i++) w[i] = rt_spawn(m, 4, 16, 1, 1000);
    for (int i = 0; i < 4; i++) assert_int_equal(rt_wait(w[i], 300000), 0);

    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"), 10000);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM a_jobs WHERE status='done'"),
        5000);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM b_jobs WHERE status='done'"),
        5000);
    /* One hand-off per subject, carrying the output. */
    assert_int_equal(sl_test_long(c, "SELECT count(DISTINCT item_id) FROM"
                                     " b_jobs WHERE token = 't1'"),
                     5000);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM items WHERE status <> 'done'"),
        0);
    /* Without crashes every job ran exactly once. */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM (SELECT job FROM"
                                     " probe_runs GROUP BY job HAVING"
                                     " count(*) > 1) x"),
                     0);
    PQfinish(c);
    sl_model_free(m);
}

static void killed_worker_jobs_are_rescued_and_completed_once(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_rescue",
                           pipeline_yaml(default_retry,
                                         "{sleep_ms: 1500, checkpoint: true}",
                                         "{}", "1s", "250ms"),
                           &c);
    add_items(c, 1);
    pid_t a = rt_spawn(m, 1, 1, 0, 1000);
    assert_true(rt_wait_for(c, "SELECT count(*) FROM a_jobs WHERE"
                               " checkpoint IS NOT NULL",
                            1, 10000));
    kill(a, SIGKILL);
    rt_wait(a, 5000);
    int64_t killed = sl_test_now_ms();
    pid_t b = rt_spawn(m, 1, 1, 1, 1000);
    assert_true(rt_wait_for(c, "SELECT count(*) FROM a_jobs WHERE attempts = 2",
                            1, 10000));
    int64_t rescued = sl_test_now_ms() - killed;
    assert_int_equal(rt_wait(b, 30000), 0);
    print_message("rescue after SIGKILL took %lld ms (lease 1s, sweep "
                  "200ms)\n",
                  (long long)rescued);
    assert_true(rescued < 1000 + 200 + 1000);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"), 2);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM probe_runs WHERE"
                                     " stage = 'a'"),
                     2);
    /* The second attempt saw the first one's checkpoint. */
    char *seen = sl_test_scalar(c, "SELECT checkpoint->>'saved_by_attempt'"
                                   " FROM a_jobs");
    assert_string_equal(seen, "2");
    free(seen);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM items WHERE status = 'done'"), 1);
    PQfinish(c);
    sl_model_free(m);
}

static void checkpoint_survives_a_crash(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_checkpoint",
                           pipeline_yaml(default_retry,
                                         "{sleep_ms: 3000, checkpoint: true,"
                                         " output: {token: x}}",
                                         "{}", "1s", "250ms"),
                           &c);
    add_items(c, 1);
    pid_t a = rt_spawn(m, 1, 1, 0, 1000);
    assert_true(rt_wait_for(c, "SELECT count(*) FROM a_jobs WHERE"
                               " checkpoint->>'saved_by_attempt' = '1'",
                            1, 10000));
    kill(a, SIGKILL);
    rt_wait(a, 5000);
    rt_run_until_idle(m, 1, 1);
    /* The handler of attempt 2 was handed attempt 1's checkpoint. */
    char *seen = sl_test_scalar(c, "SELECT b.token FROM b_jobs b");
    assert_string_equal(seen, "x");
    free(seen);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM probe_runs p JOIN"
                                     " a_jobs a ON a.id = p.job WHERE"
                                     " p.attempt = 2"),
                     1);
    PQfinish(c);
    sl_model_free(m);
}

static void retry_delays_follow_the_policy(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup(
        "rt_backoff",
        pipeline_yaml("{max_attempts: 5, backoff: exponential, initial: "
                      "200ms, factor: 2, max_delay: 10s, jitter: 0}",
                      "{fail_first: 3}", "{}", "30s", "5s"),
        &c);
    add_items(c, 1);
    rt_run_until_idle(m, 1, 1);
    PGresult *r = PQexec(c, "SELECT (extract(epoch FROM at - lag(at) OVER"
                            " (ORDER BY n)) * 1000)::int FROM probe_runs"
                            " WHERE stage = 'a' ORDER BY n");
    assert_int_equal(PQntuples(r), 4);
    int expect[3] = {200, 400, 800};
    for (int i = 1; i < 4; i++) {
        int gap = atoi(PQgetvalue(r, i, 0));
        print_message("retry %d after %d ms (policy %d ms)\n", i, gap,
                      expect[i - 1]);
        assert_true(gap >= expect[i - 1] - 5);
        assert_true(gap < expect[i - 1] + 1500);
    }
    PQclear(r);
    assert_int_equal(
        sl_test_long(c, "SELECT attempts FROM a_jobs WHERE status = 'done'"),
        4);
    PQfinish(c);
    sl_model_free(m);
}

static void retry_after_overrides_a_shorter_backoff(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup(
        "rt_retry_after",
        pipeline_yaml(default_retry,
                      "{fail_first: 1, fail_class: rate_limited,"
                      " retry_after_ms: 700}",
                      "{}", "30s", "5s"),
        &c);
    add_items(c, 1);
    rt_run_until_idle(m, 1, 1);
    long gap = sl_test_long(c, "SELECT (extract(epoch FROM max(at) - min(at))"
                               " * 1000)::int FROM probe_runs WHERE stage ="
                               " 'a'");
    assert_true(gap >= 695);
    PQfinish(c);
    sl_model_free(m);
}

static void permanent_error_class_fails_at_once(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_permanent",
                           pipeline_yaml(default_retry,
                                         "{fail_first: 9, fail_class: "
                                         "http_4xx}",
                                         "{}", "30s", "5s"),
                           &c);
    add_items(c, 1);
    rt_run_until_idle(m, 1, 1);
    assert_int_equal(sl_test_long(c, "SELECT attempts FROM a_jobs WHERE"
                                     " status = 'error' AND error_class ="
                                     " 'http_4xx'"),
                     1);
    char *msg = sl_test_scalar(c, "SELECT last_error FROM a_jobs");
    assert_non_null(strstr(msg, "planned failure on attempt 1"));
    free(msg);
    char *st = sl_test_scalar(c, "SELECT status || '|' || detail FROM items");
    assert_string_equal(st, "failed|a failed");
    free(st);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM b_jobs"), 0);
    PQfinish(c);
    sl_model_free(m);
}

static void configured_class_retries(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup(
        "rt_class_retry",
        pipeline_yaml("{max_attempts: 3, backoff: fixed, initial: 20ms, "
                      "jitter: 0, on: [http_4xx]}",
                      "{fail_first: 1, fail_class: http_4xx}", "{}", "30s",
                      "5s"),
        &c);
    add_items(c, 1);
    rt_run_until_idle(m, 1, 1);
    assert_int_equal(
        sl_test_long(c, "SELECT attempts FROM a_jobs WHERE status = 'done'"),
        2);
    PQfinish(c);
    sl_model_free(m);
}

static void exhausted_attempts_end_in_error_with_subject_mapped(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_exhausted",
                           pipeline_yaml(default_retry, "{fail_first: 99}",
                                         "{}", "30s", "5s"),
                           &c);
    add_items(c, 1);
    sl_test_exec(c, "UPDATE a_jobs SET note = 'partial data'");
    rt_run_until_idle(m, 1, 1);
    char *row = sl_test_scalar(c, "SELECT status || '|' || attempts || '|' ||"
                                  " error_class || '|' || note FROM a_jobs");
    assert_string_equal(row, "error|3|retryable|partial data");
    free(row);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM probe_runs"), 3);
    char *st = sl_test_scalar(c, "SELECT status FROM items");
    assert_string_equal(st, "failed");
    free(st);
    PQfinish(c);
    sl_model_free(m);
}

static void snooze_does_not_use_an_attempt(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_snooze",
                           pipeline_yaml(default_retry,
                                         "{snooze_times: 3, snooze_ms: 30}",
                                         "{}", "30s", "5s"),
                           &c);
    add_items(c, 1);
    rt_run_until_idle(m, 1, 1);
    assert_int_equal(
        sl_test_long(c, "SELECT attempts FROM a_jobs WHERE status = 'done'"),
        1);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM probe_runs WHERE stage = 'a'"),
        4);
    PQfinish(c);
    sl_model_free(m);
}

static void subject_status_follows_the_mapping(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_mapping",
                           pipeline_yaml(default_retry,
                                         "{progress_steps: 3}", "{}", "30s",
                                         "5s"),
                           &c);
    add_items(c, 1);
    rt_run_until_idle(m, 1, 1);
    char *seq = sl_test_scalar(
        c, "SELECT string_agg(status || ':' || progress || ':' ||"
           " coalesce(detail, '-'), ' ' ORDER BY n) FROM subject_log");
    assert_string_equal(seq, "a_running:10:a started "
                             "a_running:17:step 1/3 "
                             "a_running:25:step 2/3 "
                             "a_running:32:step 3/3 "
                             "a_done:50:a done "
                             "b_running:60:a done "
                             "done:100:all done");
    free(seq);
    PQfinish(c);
    sl_model_free(m);
}

static void fenced_completion_is_refused(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m =
        rt_setup("rt_fence", pipeline_yaml(default_retry, "{}", "{}", "30s",
                                           "5s"),
                 &c);
    const sl_stage *a = sl_model_stage(m, "rt", "a");
    char err[512];
    add_items(c, 1);
    assert_int_equal(sl_queue_prepare(c, m, err, sizeof err), 0);
    sl_qjob j1, j2;
    int n = 0;
    assert_int_equal(sl_queue_claim(c, a, "w1", 1, &j1, &n, err, sizeof err),
                     0);
    assert_int_equal(n, 1);
    /* w1's lease runs out; the sweep rescues the job; w2 claims it. */
    sl_test_exec(c, "UPDATE a_jobs SET locked_until = now() - interval '1s'");
    int rescued = 0;
    assert_int_equal(sl_queue_rescue(c, a, &rescued, err, sizeof err), 0);
    assert_int_equal(rescued, 1);
    assert_int_equal(sl_queue_claim(c, a, "w2", 1, &j2, &n, err, sizeof err),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(j2.attempts, 2);
    /* w1 comes back and tries to complete: refused. */
    sl_qdone d = {&j1, NULL, 0, 0};
    assert_int_equal(sl_queue_complete(c, a, "w1", &d, 1, err, sizeof err), 0);
    assert_int_equal(d.completed, 0);
    json_t *cp = json_object();
    assert_int_equal(sl_queue_checkpoint(c, a, "w1", &j1, cp, err, sizeof err),
                     -SL_ELEASE);
    json_decref(cp);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM b_jobs"), 0);
    /* w2 completes. */
    sl_qdone d2 = {&j2, NULL, 0, 0};
    assert_int_equal(sl_queue_complete(c, a, "w2", &d2, 1, err, sizeof err), 0);
    assert_int_equal(d2.completed, 1);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM b_jobs"), 1);
    /* A replayed completion hands nothing off twice. */
    assert_int_equal(sl_queue_complete(c, a, "w2", &d2, 1, err, sizeof err), 0);
    assert_int_equal(d2.completed, 0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM b_jobs"), 1);
    sl_queue_job_clear(&j1);
    sl_queue_job_clear(&j2);
    PQfinish(c);
    sl_model_free(m);
}

static void cancelled_jobs_never_start_and_running_ones_stop(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_cancel",
                           pipeline_yaml(default_retry, "{sleep_ms: 20000}",
                                         "{}", "2s", "200ms"),
                           &c);
    add_items(c, 2);
    sl_test_exec(c, "UPDATE a_jobs SET status = 'cancelled' WHERE id ="
                    " (SELECT min(id::text)::uuid FROM a_jobs)");
    pid_t w = rt_spawn(m, 1, 1, 1, 1000);
    assert_true(rt_wait_for(c, "SELECT count(*) FROM a_jobs WHERE status ="
                               " 'in_progress'",
                            1, 10000));
    int64_t t0 = sl_test_now_ms();
    sl_test_exec(c, "UPDATE a_jobs SET status = 'cancelled' WHERE status ="
                    " 'in_progress'");
    assert_int_equal(rt_wait(w, 15000), 0);
    /* The handler was told to stop long before its 20 s sleep ended. */
    assert_true(sl_test_now_ms() - t0 < 5000);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM a_jobs WHERE"
                                     " status = 'cancelled'"),
                     2);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM probe_runs"), 1);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"), 0);
    PQfinish(c);
    sl_model_free(m);
}

static void manual_retry_runs_a_failed_job_again(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_manual_retry",
                           pipeline_yaml("{max_attempts: 1}",
                                         "{fail_first: 1}", "{}", "30s",
                                         "5s"),
                           &c);
    add_items(c, 1);
    rt_run_until_idle(m, 1, 1);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM a_jobs WHERE status = 'error'"),
        1);
    /* A manual retry grants a fresh set of attempts. */
    sl_test_exec(c, "UPDATE a_jobs SET status = 'retry', attempts = 0,"
                    " run_at = now()");
    rt_run_until_idle(m, 1, 1);
    /* Attempt 1 again, which fails again (fail_first: 1) ... */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM probe_runs"), 2);
    /* ... so grant a retry past the planned failure. */
    sl_test_exec(c, "UPDATE a_jobs SET status = 'retry', attempts = 1");
    rt_run_until_idle(m, 1, 1);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM items WHERE status = 'done'"), 1);
    PQfinish(c);
    sl_model_free(m);
}

static void delayed_jobs_wait_and_priorities_order_claims(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_delay",
                           pipeline_yaml(default_retry, "{}", "{}", "30s",
                                         "5s"),
                           &c);
    sl_test_exec(c, "INSERT INTO items (id) VALUES"
                    " ('00000000-0000-0000-0000-000000000001'),"
                    " ('00000000-0000-0000-0000-000000000002'),"
                    " ('00000000-0000-0000-0000-000000000003')");
    sl_test_exec(c, "INSERT INTO a_jobs (item_id, priority, run_at) VALUES"
                    " ('00000000-0000-0000-0000-000000000001', 0, now()),"
                    " ('00000000-0000-0000-0000-000000000002', 5, now()),"
                    " ('00000000-0000-0000-0000-000000000003', 9, now() +"
                    " interval '600 ms')");
    int64_t t0 = sl_test_now_ms();
    rt_run_until_idle(m, 1, 1);
    assert_true(sl_test_now_ms() - t0 >= 550);
    char *order = sl_test_scalar(
        c, "SELECT string_agg(right(a.item_id::text, 1), '' ORDER BY p.n)"
           " FROM probe_runs p JOIN a_jobs a ON a.id = p.job");
    assert_string_equal(order, "213");
    free(order);
    PQfinish(c);
    sl_model_free(m);
}

static void sigterm_drains_running_jobs_or_releases_them(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_drain",
                           pipeline_yaml(default_retry, "{sleep_ms: 800}",
                                         "{}", "30s", "5s"),
                           &c);
    add_items(c, 1);
    /* Generous drain: the running job finishes. */
    pid_t w = rt_spawn(m, 1, 1, 0, 10000);
    assert_true(rt_wait_for(c, "SELECT count(*) FROM a_jobs WHERE status ="
                               " 'in_progress'",
                            1, 10000));
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 10000), 0);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM a_jobs WHERE status = 'done'"),
        1);
    PQfinish(c);
    sl_model_free(m);

    /* Short drain: the job is released without using an attempt. */
    m = rt_setup("rt_release",
                 pipeline_yaml(default_retry, "{sleep_ms: 20000}", "{}",
                               "30s", "5s"),
                 &c);
    add_items(c, 1);
    w = rt_spawn(m, 1, 1, 0, 100);
    assert_true(rt_wait_for(c, "SELECT count(*) FROM a_jobs WHERE status ="
                               " 'in_progress'",
                            1, 10000));
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 10000), 0);
    char *row = sl_test_scalar(c, "SELECT status || '|' || attempts ||"
                                  " '|' || (locked_by IS NULL) FROM a_jobs");
    assert_string_equal(row, "pending|0|true");
    free(row);
    PQfinish(c);
    sl_model_free(m);
}

static void terminated_connections_are_reestablished(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_terminate",
                           pipeline_yaml(default_retry, "{sleep_ms: 10}",
                                         "{}", "30s", "5s"),
                           &c);
    add_items(c, 300);
    pid_t w = rt_spawn(m, 2, 1, 1, 1000);
    assert_true(rt_wait_for(c, "SELECT (count(*) > 20)::int FROM done_log",
                            1, 20000));
    int64_t t0 = sl_test_now_ms();
    sl_test_exec(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <>"
                    " pg_backend_pid()");
    long before = sl_test_long(c, "SELECT count(*) FROM done_log");
    char more[128];
    snprintf(more, sizeof more,
             "SELECT (count(*) > %ld + 4)::int FROM done_log", before);
    assert_true(rt_wait_for(c, more, 1, 20000));
    print_message("work resumed %lld ms after pg_terminate_backend (%ld done"
                  " before)\n",
                  (long long)(sl_test_now_ms() - t0), before);
    assert_int_equal(rt_wait(w, 60000), 0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"), 600);
    PQfinish(c);
    sl_model_free(m);
}

static void idle_workers_do_not_poll(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rt_idle",
                           pipeline_yaml(default_retry, "{}", "{}", "30s",
                                         "5s"),
                           &c);
    pid_t w = rt_spawn(m, 4, 1, 0, 1000);
    usleep(1500000); /* started, queues empty */
    /* Backends report their counts at most once a second, so measure a
     * 3 s window. */
    const char *xacts = "SELECT xact_commit + xact_rollback FROM"
                        " pg_stat_database WHERE datname = current_database()";
    sl_test_exec(c, "SELECT pg_stat_clear_snapshot()");
    long before = sl_test_long(c, xacts);
    usleep(3000000);
    sl_test_exec(c, "SELECT pg_stat_clear_snapshot()");
    long during = sl_test_long(c, xacts) - before;
    print_message("8 idle worker threads: %ld transactions in 3 s\n", during);
    /* The sweep runs 2 statements per stage every 200 ms here (60 in 3 s),
     * plus this test's own queries; a worker polling at the sweep interval
     * would add 240 more. */
    assert_true(during < 150);
    /* And they still wake at once for new work. */
    add_items(c, 1);
    assert_true(rt_wait_for(c, "SELECT count(*) FROM done_log", 2, 5000));
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 10000), 0);
    PQfinish(c);
    sl_model_free(m);
}

/* Without `batch:` or -b the claim size adapts (docs/dsl.md#batch): a
 * batch shares its claim's started_at, so distinct started_at values
 * count the claims. Instant handlers over a backlog grow it towards 100;
 * handlers of 15 ms (past the 10 ms budget) keep one job per claim. */
static void adaptive_batch_grows_for_quick_handlers_only(void **state) {
    (void)state;
    PGconn *c;
    /* The built-in noop: no database work in the handler, so its time
     * is microseconds however loaded the machine is. */
    sl_model *m = rt_setup("rt_adaptive",
                           "pipeline: adapt\n"
                           "security: {rls: false}\n"
                           "sweep: {interval: 200ms, pending_age: 1m}\n"
                           "stages:\n"
                           "  q:\n"
                           "    queue: q_jobs\n"
                           "    handler: noop\n"
                           "    columns: {n: int}\n",
                           &c);
    sl_test_exec(c, "INSERT INTO q_jobs (n) SELECT g FROM"
                    " generate_series(1, 2000) g");
    pid_t w = rt_spawn(m, 1, 0, 1, 1000);
    assert_int_equal(rt_wait(w, 300000), 0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"), 2000);
    long claims = sl_test_long(c, "SELECT count(DISTINCT started_at) FROM"
                                  " q_jobs");
    print_message("2,000 instant jobs in %ld claims\n", claims);
    assert_true(claims >= 20);  /* 1, 2, 4 .. 64, then at most 100 */
    assert_true(claims <= 500); /* batch 1 would take 2,000 */
    PQfinish(c);
    sl_model_free(m);

    m = rt_setup("rt_adaptive_slow",
                 pipeline_yaml(default_retry, "{sleep_ms: 15}", "{}", "30s",
                               "5s"),
                 &c);
    add_items(c, 30);
    w = rt_spawn(m, 1, 0, 1, 1000);
    assert_int_equal(rt_wait(w, 300000), 0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM a_jobs WHERE"
                                     " status = 'done'"), 30);
    /* The first claim takes 1; 15 ms handlers never let it grow. */
    assert_int_equal(sl_test_long(c, "SELECT count(DISTINCT started_at) FROM"
                                     " a_jobs"), 30);
    PQfinish(c);
    sl_model_free(m);
}

static void backoff_is_exponential_capped_and_jittered(void **state) {
    (void)state;
    sl_retry r = {5, SL_BACKOFF_EXPONENTIAL, 1000, 2.0, 5000, 0.2, 0};
    assert_int_equal(sl_runtime_backoff_ms(&r, 1, 0.5), 1000);
    assert_int_equal(sl_runtime_backoff_ms(&r, 2, 0.5), 2000);
    assert_int_equal(sl_runtime_backoff_ms(&r, 3, 0.5), 4000);
    assert_int_equal(sl_runtime_backoff_ms(&r, 4, 0.5), 5000);
    assert_int_equal(sl_runtime_backoff_ms(&r, 40, 0.5), 5000);
    assert_int_equal(sl_runtime_backoff_ms(&r, 1, 0.0), 800);
    assert_int_equal(sl_runtime_backoff_ms(&r, 2, 0.999999), 2399);
    assert_int_equal(sl_runtime_backoff_ms(&r, 4, 0.999999), 5000);
    r.backoff = SL_BACKOFF_FIXED;
    assert_int_equal(sl_runtime_backoff_ms(&r, 3, 0.5), 1000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backoff_is_exponential_capped_and_jittered),
        cmocka_unit_test(fenced_completion_is_refused),
        cmocka_unit_test(adaptive_batch_grows_for_quick_handlers_only),
        cmocka_unit_test(idle_workers_do_not_poll),
        cmocka_unit_test(subject_status_follows_the_mapping),
        cmocka_unit_test(snooze_does_not_use_an_attempt),
        cmocka_unit_test(retry_delays_follow_the_policy),
        cmocka_unit_test(retry_after_overrides_a_shorter_backoff),
        cmocka_unit_test(permanent_error_class_fails_at_once),
        cmocka_unit_test(configured_class_retries),
        cmocka_unit_test(exhausted_attempts_end_in_error_with_subject_mapped),
        cmocka_unit_test(manual_retry_runs_a_failed_job_again),
        cmocka_unit_test(delayed_jobs_wait_and_priorities_order_claims),
        cmocka_unit_test(cancelled_jobs_never_start_and_running_ones_stop),
        cmocka_unit_test(sigterm_drains_running_jobs_or_releases_them),
        cmocka_unit_test(killed_worker_jobs_are_rescued_and_completed_once),
        cmocka_unit_test(checkpoint_survives_a_crash),
        cmocka_unit_test(terminated_connections_are_reestablished),
        cmocka_unit_test(four_workers_complete_every_job_exactly_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
