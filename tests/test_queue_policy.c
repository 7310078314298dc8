/* test_queue_policy.c - the stage options that shape the queue, against
 * the real PostgreSQL: retention (`retention:`, the elected purge and
 * `sluice purge`), fair share between keys (`fair:`) and per-key
 * concurrency limits (`limit:`). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "queue.h"
#include "reads.h"
#include "rtlib.h"

/* A standalone queue `jobs` whose stage takes the options in `extra`. */
static const char *yaml_with(const char *name, const char *with,
                             const char *extra) {
    static char y[2048];
    snprintf(y, sizeof y,
             "pipeline: %s\n"
             "security: {rls: false}\n"
             "sweep: {interval: 200ms, pending_age: 1m}\n"
             "defaults: {lease: 5s, heartbeat: 1s, timeout: 30s}\n"
             "stages:\n"
             "  work:\n"
             "    queue: jobs\n"
             "    handler: t.probe\n"
             "    with: %s\n"
             "    columns: {account_id: text}\n"
             "%s",
             name, with, extra);
    return y;
}

/* Finished jobs of every status at several ages, and unfinished ones
 * whose finished_at is (wrongly) old, so that only the status and the
 * age can keep a row. Tags in account_id say which must go. */
static void seed_history(PGconn *c) {
    sl_test_exec(
        c,
        "INSERT INTO jobs (status, finished_at, account_id)"
        " SELECT 'done', now() - interval '2 hours', 'go' FROM"
        " generate_series(1, 1203);" /* more than two purge batches */
        "INSERT INTO jobs (status, finished_at, account_id) VALUES"
        " ('done', now() - interval '30 minutes', 'keep'),"
        " ('error', now() - interval '3 hours', 'go'),"
        " ('error', now() - interval '90 minutes', 'keep'),"
        " ('cancelled', now() - interval '2 hours', 'keep-forever'),"
        " ('pending', now() - interval '9 hours', 'keep'),"
        " ('retry', now() - interval '9 hours', 'keep'),"
        " ('in_progress', now() - interval '9 hours', 'keep');"
        "UPDATE jobs SET run_at = now() + interval '1 day'"
        " WHERE status IN ('pending', 'retry');"
        "UPDATE jobs SET locked_by = 'someone', locked_until = now() +"
        " interval '1 day' WHERE status = 'in_progress'");
}

static const char *retention_yaml =
    "    retention: {done: 1h, error: 2h}\n";

static void retention_removes_exactly_what_the_policy_says(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("qp_retention", yaml_with("ret", "{}",
                                                     retention_yaml), &c);
    const sl_stage *s = &m->pipelines[0].stages[0];
    assert_int_equal(s->retention_ms[SL_RETAIN_DONE], 3600000);
    assert_int_equal(s->retention_ms[SL_RETAIN_ERROR], 7200000);
    assert_int_equal(s->retention_ms[SL_RETAIN_CANCELLED], -1);
    seed_history(c);
    char err[1024];
    assert_int_equal(sl_queue_prepare(c, m, err, sizeof err), 0);

    long counts[SL_RETAIN__COUNT];
    int more = 1;
    /* A dry run counts and deletes nothing. */
    assert_int_equal(
        sl_queue_purge(c, s, 1, 0, counts, &more, err, sizeof err), 0);
    assert_int_equal(counts[SL_RETAIN_DONE], 1203);
    assert_int_equal(counts[SL_RETAIN_ERROR], 1);
    assert_int_equal(counts[SL_RETAIN_CANCELLED], 0);
    assert_int_equal(more, 0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM jobs"), 1210);

    assert_int_equal(
        sl_queue_purge(c, s, 0, 0, counts, &more, err, sizeof err), 0);
    assert_int_equal(counts[SL_RETAIN_DONE], 1203);
    assert_int_equal(counts[SL_RETAIN_ERROR], 1);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM jobs WHERE account_id = 'go'"),
        0);
    /* Everything else is still there: the young finished jobs, the
     * cancelled one (kept forever) and every unfinished job. */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM jobs"), 6);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM jobs WHERE status IN"
                        " ('pending', 'retry', 'in_progress')"),
        3);
    PQfinish(c);
    sl_model_free(m);
}

static void elected_worker_and_purge_command_apply_retention(void **state) {
    (void)state;
    PGconn *c;
    const char *y = yaml_with("ret2", "{}", retention_yaml);
    sl_model *m = rt_setup("qp_retention2", y, &c);
    seed_history(c);
    /* A worker that idles (nothing is due) purges after its sweep. */
    pid_t w = rt_track(rt_spawn(m, 2, 1, 0, 1000));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM jobs WHERE account_id"
                               " = 'go'",
                            0, 30000));
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 30000), 0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM jobs"), 6);

    /* The command: a dry run, then the deletion. */
    sl_test_exec(c, "INSERT INTO jobs (status, finished_at, account_id)"
                    " SELECT 'done', now() - interval '5 hours', 'go' FROM"
                    " generate_series(1, 7)");
    char *out = NULL;
    /* The binary knows the built-in handlers only. */
    char cli_yaml[2048];
    snprintf(cli_yaml, sizeof cli_yaml, "%s", y);
    memcpy(strstr(cli_yaml, "t.probe"), "noop   ", 7);
    const char *path = sl_test_file("qp_retention2_cli.yaml", cli_yaml);
    int rc = sl_test_sh(&out, "%s purge -p %s --dry-run", sl_test_bin(), path);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "would delete 7 finished jobs"));
    free(out);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM jobs"), 13);
    rc = sl_test_sh(&out, "%s purge -p %s -s work", sl_test_bin(), path);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "deleted 7 finished jobs"));
    free(out);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM jobs"), 6);
    PQfinish(c);
    sl_model_free(m);
}

/* `history: true`: the same jobs leave the queue, and arrive in
 * jobs_history whole (every column, byte for byte); nothing else moves;
 * `sluice jobs --history` lists them. */
static void retention_with_history_moves_rows_whole(void **state) {
    (void)state;
    PGconn *c;
    const char *y = yaml_with("reth", "{}",
                              "    retention: {done: 1h, error: 2h,"
                              " history: true}\n");
    sl_model *m = rt_setup("qp_retention_history", y, &c);
    const sl_stage *s = &m->pipelines[0].stages[0];
    assert_int_equal(s->retention_history, 1);
    seed_history(c);
    const char *rows = "SELECT md5(string_agg(to_jsonb(t)::text, ',' ORDER BY"
                       " id)) FROM %s t WHERE account_id = 'go'";
    char q[256];
    snprintf(q, sizeof q, rows, "jobs");
    char *before = sl_test_scalar(c, q);
    char err[1024];
    assert_int_equal(sl_queue_prepare(c, m, err, sizeof err), 0);
    long counts[SL_RETAIN__COUNT];
    int more = 1;
    assert_int_equal(
        sl_queue_purge(c, s, 0, 0, counts, &more, err, sizeof err), 0);
    assert_int_equal(counts[SL_RETAIN_DONE], 1203);
    assert_int_equal(counts[SL_RETAIN_ERROR], 1);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM jobs"), 6);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM jobs_history"),
                     1204);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM jobs_history"
                                     " WHERE account_id <> 'go'"),
                     0);
    snprintf(q, sizeof q, rows, "jobs_history");
    char *after = sl_test_scalar(c, q);
    assert_string_equal(before, after);
    free(before);
    free(after);

    char cli_yaml[2048];
    snprintf(cli_yaml, sizeof cli_yaml, "%s", y);
    memcpy(strstr(cli_yaml, "t.probe"), "noop   ", 7);
    const char *path = sl_test_file("qp_retention_history.yaml", cli_yaml);
    char *out = NULL;
    int rc = sl_test_sh(&out, "%s jobs -p %s --history --status error --json",
                        sl_test_bin(), path);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "\"status\": \"error\""));
    assert_null(strstr(out, "\"done\""));
    free(out);
    PQfinish(c);
    sl_model_free(m);
}

/* With A's 5,000 jobs queued first, B's single job is claimed by the
 * first or second claim (batch 1, one worker: claims alternate keys). */
static void fair_claim_starts_the_small_account_within_two_claims(
    void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("qp_fair", yaml_with("fair", "{}",
                                                "    fair: {key: account_id}\n"),
                           &c);
    sl_test_exec(c, "INSERT INTO jobs (account_id) SELECT 'a' FROM"
                    " generate_series(1, 5000)");
    sl_test_exec(c, "INSERT INTO jobs (account_id) VALUES ('b')");
    pid_t w = rt_track(rt_spawn(m, 1, 1, 0, 1000));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM jobs WHERE account_id ="
                               " 'b' AND status = 'done'",
                            1, 60000));
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 30000), 0);
    long before = sl_test_long(
        c, "SELECT count(*) FROM jobs WHERE started_at < (SELECT started_at"
           " FROM jobs WHERE account_id = 'b')");
    print_message("jobs of A started before B's: %ld\n", before);
    assert_true(before <= 1);
    PQfinish(c);
    sl_model_free(m);
}

/* Fair claims are not serialised: under 4 processes of 4 workers each,
 * every job still runs exactly once (probe_runs records each handler
 * call) and no completion is fenced off by a second claim. */
static void fair_claims_never_take_a_job_twice(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("qp_fair_many",
                           yaml_with("fairmany", "{}",
                                     "    fair: {key: account_id}\n"),
                           &c);
    sl_test_exec(c, "INSERT INTO jobs (account_id) SELECT 'acct' || (i % 20)"
                    " FROM generate_series(1, 2000) i");
    pid_t w[4];
    for (int i = 0; i < 4; i++)
        w[i] = rt_track(rt_spawn(m, 4, 1 + i % 2 * 9, 0, 1000));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM jobs WHERE status ="
                               " 'done'",
                            2000, 120000));
    for (int i = 0; i < 4; i++)
        kill(w[i], SIGTERM);
    for (int i = 0; i < 4; i++)
        assert_int_equal(rt_wait(w[i], 30000), 0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM probe_runs"),
                     2000);
    assert_int_equal(sl_test_long(c, "SELECT max(attempts) FROM jobs"), 1);
    PQfinish(c);
    sl_model_free(m);
}

/* Records, each time a job starts, how many jobs of its account are in
 * progress (the statement's own changes included: AFTER ROW triggers
 * run at the end of the statement). */
static const char *limit_audit_sql =
    "CREATE TABLE limit_audit (account text, running int);"
    "CREATE FUNCTION audit_limit() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO limit_audit SELECT NEW.account_id, count(*) FROM"
    " jobs WHERE status = 'in_progress' AND account_id = NEW.account_id;"
    " RETURN NEW; END $$;"
    "CREATE TRIGGER audit_limit AFTER UPDATE ON jobs FOR EACH ROW WHEN"
    " (NEW.status = 'in_progress' AND OLD.status <> 'in_progress')"
    " EXECUTE FUNCTION audit_limit()";

static void limit_is_never_exceeded_under_four_processes(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup(
        "qp_limit",
        yaml_with("lim", "{sleep_ms: 40}",
                  "    limit: {key: account_id, max: 2}\n"),
        &c);
    sl_test_exec(c, limit_audit_sql);
    sl_test_exec(c, "INSERT INTO jobs (account_id) SELECT 'acct' || (i % 3)"
                    " FROM generate_series(1, 150) i");
    pid_t w[4];
    for (int i = 0; i < 4; i++)
        w[i] = rt_track(rt_spawn(m, 4, 2, 0, 1000));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM jobs WHERE status ="
                               " 'done'",
                            150, 120000));
    for (int i = 0; i < 4; i++)
        kill(w[i], SIGTERM);
    for (int i = 0; i < 4; i++)
        assert_int_equal(rt_wait(w[i], 30000), 0);
    long worst = sl_test_long(c, "SELECT max(running) FROM limit_audit");
    print_message("most jobs of one account in progress at once: %ld (limit"
                  " 2, 4 processes x 4 workers)\n",
                  worst);
    assert_int_equal(worst, 2); /* reached, never exceeded */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM limit_audit"),
                     150);
    PQfinish(c);
    sl_model_free(m);
}

/* Three keys and a NULL group, one worker with batch 1: the first four
 * jobs started are one of each (the cursor rotates through the keys in
 * order, the NULL group last), and so are the next four. */
static void fair_rotation_serves_every_key_once_per_round(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("qp_fair_round",
                           yaml_with("fairround", "{}",
                                     "    fair: {key: account_id}\n"),
                           &c);
    sl_test_exec(c, "INSERT INTO jobs (account_id) SELECT k FROM"
                    " unnest(ARRAY['c', 'a', 'b', NULL]) k,"
                    " generate_series(1, 10)");
    pid_t w = rt_track(rt_spawn(m, 1, 1, 1, 1000));
    assert_int_equal(rt_wait(w, 60000), 0);
    const char *round =
        "SELECT count(DISTINCT coalesce(account_id, '-')) FROM (SELECT"
        " account_id FROM jobs ORDER BY started_at OFFSET %d LIMIT 4) r";
    for (int r = 0; r < 2; r++) {
        char q[256];
        snprintf(q, sizeof q, round, r * 4);
        assert_int_equal(sl_test_long(c, q), 4);
    }
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM jobs WHERE"
                                     " status = 'done'"),
                     40);
    PQfinish(c);
    sl_model_free(m);
}

/* Statistics and listings over more finished jobs than the view counts
 * exactly: unfinished statuses stay exact, done becomes the estimate
 * (never below 10,001), and listings still find the few pending and
 * failed jobs among them, newest first. */
static void stats_and_listings_with_many_finished_jobs(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("qp_stats", yaml_with("stats", "{}", ""), &c);
    sl_test_exec(c,
                 "INSERT INTO jobs (status, started_at, finished_at,"
                 " created_at, account_id) SELECT 'done', now() - g *"
                 " interval '1 minute' - interval '2 seconds', now() - g *"
                 " interval '1 minute', now() - g * interval '1 minute',"
                 " 'old' FROM generate_series(1, 12000) g;"
                 "INSERT INTO jobs (status, finished_at, account_id) VALUES"
                 " ('error', now(), 'e1'), ('error', now(), 'e2');"
                 "INSERT INTO jobs (account_id, created_at) SELECT 'p' || g,"
                 " now() + g * interval '1 second' FROM"
                 " generate_series(1, 3) g;"
                 "ANALYZE jobs");
    char err[1024];
    PGresult *r = NULL;
    assert_int_equal(sl_reads_stats(c, &r, err, sizeof err), 0);
    assert_int_equal(PQntuples(r), 1);
    assert_string_equal(PQgetvalue(r, 0, SL_STAT_PENDING), "3");
    assert_string_equal(PQgetvalue(r, 0, SL_STAT_ERROR), "2");
    assert_string_equal(PQgetvalue(r, 0, SL_STAT_CANCELLED), "0");
    long done = atol(PQgetvalue(r, 0, SL_STAT_DONE));
    print_message("done shown as %ld (12,000 rows)\n", done);
    assert_true(done >= 10001 && done <= 14000);
    assert_false(PQgetisnull(r, 0, SL_STAT_MEAN_RUN));
    assert_true(atof(PQgetvalue(r, 0, SL_STAT_MEAN_RUN)) > 1.9);
    PQclear(r);

    sl_jobs_filter f = {.stage = NULL, .status = "pending", .older_ms = -1,
                        .limit = 50};
    assert_int_equal(sl_reads_jobs(c, m, &f, &r, err, sizeof err), 0);
    assert_int_equal(PQntuples(r), 3);
    PQclear(r);
    f.status = NULL;
    f.limit = 4;
    assert_int_equal(sl_reads_jobs(c, m, &f, &r, err, sizeof err), 0);
    assert_int_equal(PQntuples(r), 4);
    /* Newest first across statuses: the three pending jobs (created in
     * the future), then the failed ones (created now). */
    for (int i = 0; i < 3; i++)
        assert_string_equal(PQgetvalue(r, i, SL_LIST_STATUS), "pending");
    assert_string_equal(PQgetvalue(r, 3, SL_LIST_STATUS), "error");
    PQclear(r);
    sl_jobs_query q = {.status = "error", .limit = 10};
    assert_int_equal(sl_reads_jobs_page(c, m, &q, &r, err, sizeof err), 0);
    assert_int_equal(PQntuples(r), 2);
    PQclear(r);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(retention_removes_exactly_what_the_policy_says),
        cmocka_unit_test_teardown(
            elected_worker_and_purge_command_apply_retention, rt_teardown),
        cmocka_unit_test(retention_with_history_moves_rows_whole),
        cmocka_unit_test_teardown(
            fair_claim_starts_the_small_account_within_two_claims,
            rt_teardown),
        cmocka_unit_test_teardown(fair_claims_never_take_a_job_twice,
                                  rt_teardown),
        cmocka_unit_test_teardown(
            limit_is_never_exceeded_under_four_processes, rt_teardown),
        cmocka_unit_test_teardown(
            fair_rotation_serves_every_key_once_per_round, rt_teardown),
        cmocka_unit_test(stats_and_listings_with_many_finished_jobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
