#include "chaoslib.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "testlib.h"

const char *const chaos_yaml =
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

static const char *audit_sql =
    "CREATE TABLE chaos_kills (n serial PRIMARY KEY, pid int,"
    " at timestamptz DEFAULT clock_timestamp());"
    "CREATE TABLE rescue_log (job uuid, q text, owner text, attempt int,"
    " to_status text, at timestamptz DEFAULT clock_timestamp());"
    "CREATE FUNCTION log_rescue() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO rescue_log (job, q, owner, attempt, to_status)"
    " VALUES (NEW.id, TG_TABLE_NAME, OLD.locked_by, OLD.attempts,"
    " NEW.status::text); RETURN NEW; END $$;";

void chaos_prepare(PGconn *c, long subjects) {
    char sql[512];
    sl_test_exec(c, audit_sql);
    for (int i = 0; i < 3; i++) {
        snprintf(sql, sizeof sql,
                 "CREATE TRIGGER rescue_log AFTER UPDATE ON %s FOR EACH ROW"
                 " WHEN (OLD.status = 'in_progress' AND NEW.status IN"
                 " ('retry', 'error') AND NEW.error_class = 'lease_expired')"
                 " EXECUTE FUNCTION log_rescue()",
                 queues[i]);
        sl_test_exec(c, sql);
    }
    snprintf(sql, sizeof sql,
             "WITH i AS (INSERT INTO items SELECT gen_random_uuid() FROM"
             " generate_series(1, %ld) RETURNING id) INSERT INTO a_jobs"
             " (item_id) SELECT id FROM i",
             subjects);
    sl_test_exec(c, sql);
}

void chaos_kill(PGconn *c, pid_t pid) {
    char sql[128];
    int st;
    kill(pid, SIGKILL);
    snprintf(sql, sizeof sql, "INSERT INTO chaos_kills (pid) VALUES (%d)",
             (int)pid);
    sl_test_exec(c, sql);
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

void chaos_assert_exactly_once(PGconn *c, long subjects) {
    char sql[512];
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"),
                     subjects * 3);
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
                 queues[i], CHAOS_MAX_ATTEMPTS);
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
}

long chaos_print_kill_figures(PGconn *c) {
    /* Per kill that left jobs behind: the slowest rescue (back to retry)
     * and the slowest re-run (the next attempt's handler started). */
    const char *sql =
        "WITH k AS (SELECT n, pid, at FROM chaos_kills),"
        " r AS (SELECT k.n, r.job, r.attempt, r.at - k.at AS rescue"
        "  FROM rescue_log r JOIN k ON k.pid = " CHAOS_OWNER_PID
        "  AND r.at >= k.at),"
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
    long max_rescue = atol(PQgetvalue(r, 0, 2));
    print_message("kills that left jobs in progress: %ld (%ld jobs rescued)\n",
                  kills_with_jobs, jobs);
    print_message("rescue after SIGKILL (kill -> job back in the queue): max"
                  " %s ms, median %s ms, min %s ms (bound: lease %d ms +"
                  " sweep %d ms = %d ms)\n",
                  PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4),
                  CHAOS_LEASE_MS, CHAOS_SWEEP_MS,
                  CHAOS_LEASE_MS + CHAOS_SWEEP_MS);
    print_message("re-run after SIGKILL (kill -> next attempt's handler"
                  " started, includes waiting behind the backlog): max %s ms,"
                  " median %s ms\n",
                  PQgetvalue(r, 0, 5), PQgetvalue(r, 0, 6));
    PQclear(r);
    assert_true(kills_with_jobs > 0);
    return max_rescue;
}
