/* test_chaos.c - workers killed with SIGKILL while 10,000 jobs flow through
 * a three-stage pipeline: every subject still reaches its final status,
 * no job completes twice, none is left behind, and a dead worker's jobs
 * are rescued within lease + sweep interval.
 *
 * The CI run is this file with its defaults; scripts/chaos runs it longer
 * and bigger through the environment:
 *   SLUICE_CHAOS_SUBJECTS  subjects (3 jobs each; default 3334 -> 10,002)
 *   SLUICE_CHAOS_KILL_MS   one worker killed this often (default 2000)
 *   SLUICE_CHAOS_WORKERS   worker processes (default 4)
 *   SLUICE_CHAOS_TIMEOUT_S give up after this long (default 240)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rtlib.h"

#define LEASE_MS 2000
#define SWEEP_MS 500
#define MAX_ATTEMPTS 10
#define MAX_WORKERS 16

static const char *yaml =
    "pipeline: chaos\n"
    "subject:\n"
    "  table: items\n"
    "  foreign_key: item_id\n"
    "  status:\n"
    "    column: status\n"
    "    values: [new, a_running, a_done, b_running, b_done, c_running,"
    " done, failed]\n"
    "  progress: progress\n"
    "  detail: detail\n"
    "sweep: {interval: 500ms, pending_age: 1m}\n"
    "defaults:\n"
    "  retry: {max_attempts: 10, backoff: fixed, initial: 100ms, jitter: 0}\n"
    "  lease: 2s\n"
    "  heartbeat: 400ms\n"
    "  timeout: 30s\n"
    "stages:\n"
    "  a:\n"
    "    queue: a_jobs\n"
    "    handler: t.probe\n"
    "    with: {sleep_ms: 5, output: {token: from_a}}\n"
    "    columns: {token: text}\n"
    "    status:\n"
    "      on_start: {status: a_running, progress: 10}\n"
    "      on_done: {status: a_done, progress: 33}\n"
    "      on_error: {status: failed, detail: \"a failed\"}\n"
    "    next: b\n"
    "  b:\n"
    "    queue: b_jobs\n"
    "    handler: t.probe\n"
    "    with: {sleep_ms: 5, output: {token: from_b}}\n"
    "    columns: {token: text}\n"
    "    status:\n"
    "      on_start: {status: b_running, progress: 40}\n"
    "      on_done: {status: b_done, progress: 66}\n"
    "      on_error: {status: failed, detail: \"b failed\"}\n"
    "    next: c\n"
    "  c:\n"
    "    queue: c_jobs\n"
    "    handler: t.probe\n"
    "    with: {sleep_ms: 5}\n"
    "    columns: {token: text}\n"
    "    status:\n"
    "      on_start: {status: c_running, progress: 70}\n"
    "      on_done: {status: done, progress: 100, detail: finished}\n"
    "      on_error: {status: failed, detail: \"c failed\"}\n";

static const char *queues[3] = {"a_jobs", "b_jobs", "c_jobs"};

/* Audit of the chaos itself: kills (test clock in the database) and every
 * lease rescue with the owner that lost the job. */
static const char *audit_sql =
    "CREATE TABLE chaos_kills (n serial PRIMARY KEY, pid int,"
    " at timestamptz DEFAULT clock_timestamp());"
    "CREATE TABLE rescue_log (job uuid, q text, owner text, attempt int,"
    " to_status text, at timestamptz DEFAULT clock_timestamp());"
    "CREATE FUNCTION log_rescue() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO rescue_log (job, q, owner, attempt, to_status)"
    " VALUES (NEW.id, TG_TABLE_NAME, OLD.locked_by, OLD.attempts,"
    " NEW.status::text); RETURN NEW; END $$;";

static void install_rescue_log(PGconn *c) {
    sl_test_exec(c, audit_sql);
    for (int i = 0; i < 3; i++) {
        char sql[400];
        snprintf(sql, sizeof sql,
                 "CREATE TRIGGER rescue_log AFTER UPDATE ON %s FOR EACH ROW"
                 " WHEN (OLD.status = 'in_progress' AND NEW.status IN"
                 " ('retry', 'error') AND NEW.error_class = 'lease_expired')"
                 " EXECUTE FUNCTION log_rescue()",
                 queues[i]);
        sl_test_exec(c, sql);
    }
}

/* The pid inside an owner name "<host>:<pid>:<stage>:<thread>". */
#define OWNER_PID "substring(owner from ':([0-9]+):[^:]+:[0-9]+$')::int"

static void print_kill_figures(PGconn *c, long *max_rescue) {
    /* Per kill that left jobs behind: the slowest rescue (back to retry)
     * and the slowest re-run (the next attempt's handler started). */
    const char *sql =
        "WITH k AS (SELECT n, pid, at FROM chaos_kills),"
        " r AS (SELECT k.n, r.job, r.attempt, r.at - k.at AS rescue"
        "  FROM rescue_log r JOIN k ON k.pid = " OWNER_PID "),"
        " rr AS (SELECT r.n, r.rescue, (SELECT min(p.at) FROM probe_runs p"
        "  WHERE p.job = r.job AND p.attempt > r.attempt) - k.at AS rerun"
        "  FROM r JOIN k ON k.n = r.n),"
        " per AS (SELECT n, count(*) AS jobs, max(rescue) AS rescue,"
        "  max(rerun) AS rerun FROM rr GROUP BY n)"
        " SELECT count(*), coalesce(sum(jobs), 0),"
        " coalesce((extract(epoch FROM max(rescue)) * 1000)::bigint, 0),"
        " coalesce((extract(epoch FROM percentile_cont(0.5) WITHIN GROUP"
        "  (ORDER BY rescue)) * 1000)::bigint, 0),"
        " coalesce((extract(epoch FROM min(rescue)) * 1000)::bigint, 0),"
        " coalesce((extract(epoch FROM max(rerun)) * 1000)::bigint, 0),"
        " coalesce((extract(epoch FROM percentile_cont(0.5) WITHIN GROUP"
        "  (ORDER BY rerun)) * 1000)::bigint, 0) FROM per";
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("figures: %s", PQresultErrorMessage(r));
    long kills_with_jobs = atol(PQgetvalue(r, 0, 0));
    long jobs = atol(PQgetvalue(r, 0, 1));
    *max_rescue = atol(PQgetvalue(r, 0, 2));
    print_message("kills that left jobs in progress: %ld (%ld jobs rescued)\n",
                  kills_with_jobs, jobs);
    print_message("rescue after SIGKILL (kill -> job back in the queue): max"
                  " %s ms, median %s ms, min %s ms (bound: lease %d ms +"
                  " sweep %d ms = %d ms)\n",
                  PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4),
                  LEASE_MS, SWEEP_MS, LEASE_MS + SWEEP_MS);
    print_message("re-run after SIGKILL (kill -> next attempt's handler"
                  " started, includes waiting behind the backlog): max %s ms,"
                  " median %s ms\n",
                  PQgetvalue(r, 0, 5), PQgetvalue(r, 0, 6));
    PQclear(r);
    assert_true(kills_with_jobs > 0);
}

static void killed_workers_lose_no_job_and_complete_none_twice(void **state) {
    (void)state;
    long subjects = rt_env_long("SLUICE_CHAOS_SUBJECTS", 3334);
    long kill_ms = rt_env_long("SLUICE_CHAOS_KILL_MS", 2000);
    long nworkers = rt_env_long("SLUICE_CHAOS_WORKERS", 4);
    long timeout_s = rt_env_long("SLUICE_CHAOS_TIMEOUT_S", 240);
    if (nworkers < 2) nworkers = 2;
    if (nworkers > MAX_WORKERS) nworkers = MAX_WORKERS;
    long total = subjects * 3;
    PGconn *c;
    sl_model *m = rt_setup("chaos", yaml, &c);
    install_rescue_log(c);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "WITH i AS (INSERT INTO items SELECT gen_random_uuid() FROM"
             " generate_series(1, %ld) RETURNING id) INSERT INTO a_jobs"
             " (item_id) SELECT id FROM i",
             subjects);
    sl_test_exec(c, sql);

    pid_t w[MAX_WORKERS];
    for (long i = 0; i < nworkers; i++)
        w[i] = rt_track(rt_spawn(m, 2, 1, 0, 1000));
    int64_t t0 = sl_test_now_ms();
    int64_t deadline = t0 + timeout_s * 1000;
    int64_t next_kill = t0 + kill_ms;
    long kills = 0, done = 0;
    unsigned seed = 7;
    while (sl_test_now_ms() < deadline) {
        done = sl_test_long(c, "SELECT count(*) FROM done_log");
        if (done >= total) break;
        if (sl_test_now_ms() >= next_kill) {
            long v = rand_r(&seed) % nworkers;
            kill(w[v], SIGKILL);
            snprintf(sql, sizeof sql,
                     "INSERT INTO chaos_kills (pid) VALUES (%d)", (int)w[v]);
            sl_test_exec(c, sql);
            int st;
            waitpid(w[v], &st, 0);
            assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
            w[v] = rt_track(rt_spawn(m, 2, 1, 0, 1000));
            kills++;
            next_kill += kill_ms;
        }
        usleep(100000);
    }
    int64_t elapsed = sl_test_now_ms() - t0;
    /* Every worker survived to the end on its own: none exited or
     * crashed between kills. */
    for (long i = 0; i < nworkers; i++)
        assert_true(rt_alive(w[i], NULL));
    for (long i = 0; i < nworkers; i++)
        kill(w[i], SIGTERM);
    for (long i = 0; i < nworkers; i++)
        assert_int_equal(rt_wait(w[i], 30000), 0);

    print_message("%ld jobs (%ld subjects x 3 stages), %ld workers, %ld"
                  " SIGKILLs (one every %ld ms): all done in %.1f s"
                  " (%.0f jobs/s)\n",
                  total, subjects, nworkers, kills, kill_ms, elapsed / 1000.0,
                  total * 1000.0 / (double)(elapsed ? elapsed : 1));
    if (done < total)
        fail_msg("only %ld of %ld jobs done after %ld s", done, total,
                 timeout_s);
    assert_true(kills >= 3);

    /* Every job done exactly once: done_log's primary key refuses a second
     * completion, so its count equals the number of jobs. */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"), total);
    for (int i = 0; i < 3; i++) {
        /* One job per subject and stage, each done, none left behind. */
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FILTER (WHERE status = 'done') ||"
                 " '/' || count(DISTINCT item_id) || '/' || count(*) FROM %s",
                 queues[i]);
        char want[64];
        snprintf(want, sizeof want, "%ld/%ld/%ld", subjects, subjects,
                 subjects);
        char *got = sl_test_scalar(c, sql);
        if (strcmp(got, want) != 0)
            fail_msg("%s: done/subjects/jobs = %s, want %s", queues[i], got,
                     want);
        free(got);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM %s WHERE attempts > %d OR attempts < 1",
                 queues[i], MAX_ATTEMPTS);
        assert_int_equal(sl_test_long(c, sql), 0);
    }
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM items WHERE status <> 'done'"
                        " OR progress <> 100"),
        0);
    /* The hand-off carried each stage's output exactly once. */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM c_jobs WHERE"
                                     " token = 'from_b'"),
                     subjects);

    long max_rescue = 0;
    print_kill_figures(c, &max_rescue);
    /* Jobs rescued from a live worker (its heartbeats fell behind the
     * lease): fencing keeps them correct, but they should be rare. */
    long false_rescues =
        sl_test_long(c, "SELECT count(*) FROM rescue_log WHERE " OWNER_PID
                        " NOT IN (SELECT pid FROM chaos_kills)");
    print_message("rescues of jobs whose worker was alive: %ld\n",
                  false_rescues);
    /* A dead worker's job is back in the queue within lease + sweep
     * interval; 500 ms of slack for a 2-core machine running the suite in
     * parallel (the sweep statement itself, scheduling). */
    assert_true(max_rescue <= LEASE_MS + SWEEP_MS + 500);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            killed_workers_lose_no_job_and_complete_none_twice, rt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
