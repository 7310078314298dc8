/* test_serial_hosts.c - workers on three network hosts talking TCP to a
 * database host (scripts/netns: namespaces joined by a bridge), and the
 * faults a network makes: a worker host partitioned for longer than its
 * lease, a silent drop (blackhole route, no RST), and the database host
 * unreachable from every worker for 10 s. Nothing is lost or completed
 * twice, and a cut-off handler is told to stop within its lease.
 *
 * Needs root and `ip netns`; exits 77 (skipped) otherwise. Serial:
 * its timings must not compete with the rest of the suite.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hostlib.h"
#include "rtlib.h"

#define NET "slhosts"
#define LEASE_MS 2000
#define SWEEP_MS 500
#define SLACK_MS 700 /* a loaded 2-core machine: scheduling, the sweep */

static const char *yaml_fmt =
    "pipeline: hosts\n"
    "subject:\n"
    "  table: items\n"
    "  foreign_key: item_id\n"
    "  status:\n"
    "    column: status\n"
    "    values: [new, running, done, failed]\n"
    "  progress: progress\n"
    "sweep: {interval: 500ms, pending_age: 1m}\n"
    "defaults:\n"
    "  retry: {max_attempts: 10, backoff: fixed, initial: 100ms, jitter: 0}\n"
    "  lease: 2s\n"
    "  heartbeat: 400ms\n"
    "  timeout: 60s\n"
    "stages:\n"
    "  a:\n"
    "    queue: a_jobs\n"
    "    handler: t.probe\n"
    "    with: {sleep_ms: %d, ignore_stop: %s}\n"
    "    status:\n"
    "      on_start: {status: running, progress: 10}\n"
    "      on_done: {status: done, progress: 100}\n"
    "      on_error: {status: failed}\n";

static const char *const log_dbs[] = {"hosts_part", "hosts_drop", "hosts_db",
                                      NULL};

/* A worker process on host wN (2 threads, batch 1). */
static pid_t worker_on(const sl_model *m, const char *db, int n) {
    return hl_worker(m, db, n, 2, 1);
}

static sl_model *setup(const char *db, int sleep_ms, int ignore_stop,
                       long subjects, PGconn **c) {
    char yaml[2048], sql[512];
    snprintf(yaml, sizeof yaml, yaml_fmt, sleep_ms,
             ignore_stop ? "true" : "false");
    sl_model *m = rt_setup(db, yaml, c);
    sl_test_exec(*c,
                 "CREATE TABLE rescue_log (job uuid, owner text,"
                 " at timestamptz DEFAULT clock_timestamp());"
                 "CREATE FUNCTION log_rescue() RETURNS trigger LANGUAGE"
                 " plpgsql AS $$ BEGIN INSERT INTO rescue_log (job, owner)"
                 " VALUES (NEW.id, OLD.locked_by); RETURN NEW; END $$;"
                 "CREATE TRIGGER rescue_log AFTER UPDATE ON a_jobs FOR EACH"
                 " ROW WHEN (OLD.status = 'in_progress' AND NEW.status IN"
                 " ('retry', 'error') AND NEW.error_class = 'lease_expired')"
                 " EXECUTE FUNCTION log_rescue();"
                 "CREATE TABLE faults (what text,"
                 " at timestamptz DEFAULT clock_timestamp())");
    if (subjects > 0) {
        snprintf(sql, sizeof sql,
                 "WITH i AS (INSERT INTO items SELECT gen_random_uuid() FROM"
                 " generate_series(1, %ld) RETURNING id) INSERT INTO a_jobs"
                 " (item_id) SELECT id FROM i",
                 subjects);
        sl_test_exec(*c, sql);
    }
    return m;
}

/* Every job done exactly once (done_log's primary key refuses a second
 * completion) and every subject in its final status. */
static void assert_all_done_once(PGconn *c, long subjects) {
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"),
                     subjects);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM a_jobs WHERE"
                                     " status <> 'done'"),
                     0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM items WHERE"
                                     " status <> 'done' OR progress <> 100"),
                     0);
}

/* ---- the tests -------------------------------------------------------------
 */

static void partitioned_host_loses_its_jobs_to_others_and_its_late_completions_are_refused(
    void **state) {
    (void)state;
    const long subjects = 30;
    PGconn *c;
    /* Handlers that never check should_stop: they finish and try to
     * complete, so the fence, not the handler, must refuse them. */
    sl_model *m = setup("hosts_part", 1500, 1, subjects, &c);
    pid_t w[3];
    for (int i = 0; i < 3; i++) w[i] = worker_on(m, "hosts_part", i + 1);
    assert_true(rt_wait_for(c,
                            "SELECT (count(*) >= 2)::int FROM a_jobs WHERE status ="
                            " 'in_progress' AND locked_by LIKE '" NET "-w1:%'",
                            1, 20000));
    long held = sl_test_long(c, "SELECT count(*) FROM a_jobs WHERE status ="
                                " 'in_progress' AND locked_by LIKE"
                                " '" NET "-w1:%'");
    hl_fault("cut", "w1");
    sl_test_exec(c, "INSERT INTO faults VALUES ('cut w1')");
    int64_t t_cut = sl_test_now_ms();
    /* Longer than the lease: its jobs go to the other hosts. */
    while (sl_test_now_ms() - t_cut < LEASE_MS + 3000) usleep(100000);
    hl_fault("heal", "w1");
    sl_test_exec(c, "INSERT INTO faults VALUES ('heal w1')");
    assert_true(rt_wait_for(c, "SELECT count(*) FROM done_log", subjects,
                            40000));
    /* w1's connections come back (its retransmissions or a reconnect) and
     * its late completions reach the fence. */
    int64_t t_wait = sl_test_now_ms();
    while (hl_log_count("hosts_part", 1, "completion refused") < 1 &&
           sl_test_now_ms() - t_wait < 20000)
        usleep(200000);
    int refused = hl_log_count("hosts_part", 1, "completion refused");
    long rescued = sl_test_long(c, "SELECT count(*) FROM rescue_log WHERE"
                                   " owner LIKE '" NET "-w1:%'");
    long rescue_ms = sl_test_long(
        c, "SELECT (extract(epoch FROM max(r.at) - f.at) * 1000)::bigint"
           " FROM rescue_log r, faults f WHERE f.what = 'cut w1' AND"
           " r.owner LIKE '" NET "-w1:%' GROUP BY f.at");
    long false_rescues = sl_test_long(c, "SELECT count(*) FROM rescue_log"
                                         " WHERE owner NOT LIKE"
                                         " '" NET "-w1:%'");
    print_message("w1 held %ld jobs when cut; %ld rescued, the last %ld ms"
                  " after the cut (bound: lease %d + sweep %d ms); %d late"
                  " completions refused; %ld rescues from live hosts\n",
                  held, rescued, rescue_ms, LEASE_MS, SWEEP_MS, refused,
                  false_rescues);
    assert_true(rescued >= held);
    assert_true(rescue_ms <= LEASE_MS + SWEEP_MS + SLACK_MS);
    assert_true(refused >= 1);
    assert_int_equal(false_rescues, 0);
    assert_all_done_once(c, subjects);
    for (int i = 0; i < 3; i++) assert_true(rt_alive(w[i], NULL));
    for (int i = 0; i < 3; i++) kill(w[i], SIGTERM);
    for (int i = 0; i < 3; i++) assert_int_equal(rt_wait(w[i], 20000), 0);
    PQfinish(c);
    sl_model_free(m);
}

/* The stop times the probe logged for jobs of the given owner prefix:
 * returns the latest, in ms after t_cut, and how many were told. */
static int64_t stops_after(const char *path, int64_t t_cut, int *told) {
    char *s = rt_read_file(path, NULL);
    int64_t worst = -1;
    *told = 0;
    for (char *line = s ? strtok(s, "\n") : NULL; line;
         line = strtok(NULL, "\n")) {
        char job[64];
        long long at;
        if (sscanf(line, "%63s %lld", job, &at) != 2) continue;
        (*told)++;
        if (at - t_cut > worst) worst = at - t_cut;
    }
    free(s);
    return worst;
}

static void silent_drop_stops_the_handler_within_its_lease_and_the_worker_rejoins(
    void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = setup("hosts_drop", 20000, 0, 0, &c);
    char stops[600];
    snprintf(stops, sizeof stops, "%s/hosts_drop-stops", sl_test_tmpdir());
    setenv("RT_PROBE_STOP_LOG", stops, 1);
    pid_t w2 = worker_on(m, "hosts_drop", 2);
    unsetenv("RT_PROBE_STOP_LOG");
    sl_test_exec(c, "WITH i AS (INSERT INTO items SELECT gen_random_uuid()"
                    " FROM generate_series(1, 2) RETURNING id) INSERT INTO"
                    " a_jobs (item_id) SELECT id FROM i");
    assert_true(rt_wait_for(c,
                            "SELECT count(*) FROM a_jobs WHERE status ="
                            " 'in_progress' AND locked_by LIKE '" NET "-w2:%'",
                            2, 20000));
    usleep(500000); /* heartbeats running */
    hl_fault("blackhole", "w2");
    int64_t t_cut = sl_test_now_ms();
    /* Told to stop no later than a lease after the cut. */
    int told = 0;
    int64_t worst = -1;
    while (sl_test_now_ms() - t_cut < LEASE_MS + SLACK_MS + 1000) {
        worst = stops_after(stops, t_cut, &told);
        if (told >= 2) break;
        usleep(50000);
    }
    print_message("blackholed host: %d handlers told to stop, the last %lld"
                  " ms after the drop began (bound: lease %d ms)\n",
                  told, (long long)worst, LEASE_MS);
    assert_int_equal(told, 2);
    assert_true(worst >= 0 && worst <= LEASE_MS + SLACK_MS);
    /* Another host takes the jobs while w2 is cut off. */
    pid_t w1 = worker_on(m, "hosts_drop", 1);
    usleep(4000000);
    hl_fault("heal", "w2");
    int64_t t_heal = sl_test_now_ms();
    /* w2 rejoins: its fence lifts, then it takes new work. */
    while (hl_log_count("hosts_drop", 2, "database answers again") < 1 &&
           sl_test_now_ms() - t_heal < 30000)
        usleep(100000);
    int64_t rejoin = sl_test_now_ms() - t_heal;
    assert_true(hl_log_count("hosts_drop", 2, "database answers again") >= 1);
    assert_true(rt_alive(w2, NULL));
    kill(w1, SIGKILL);
    rt_wait(w1, 5000);
    sl_test_exec(c, "UPDATE a_jobs SET status = 'cancelled'"
                    " WHERE status <> 'done'");
    sl_test_exec(c, "WITH i AS (INSERT INTO items SELECT gen_random_uuid()"
                    " FROM generate_series(1, 1) RETURNING id) INSERT INTO"
                    " a_jobs (item_id) SELECT id FROM i");
    int took = rt_wait_for(c,
                           "SELECT count(*) FROM a_jobs WHERE status ="
                           " 'in_progress' AND locked_by LIKE '" NET "-w2:%'",
                           1, 20000);
    print_message("w2 rejoined %lld ms after the route came back; took new"
                  " work: %s\n",
                  (long long)rejoin, took ? "yes" : "no");
    assert_true(took);
    kill(w2, SIGTERM);
    assert_int_equal(rt_wait(w2, 20000), 0);
    PQfinish(c);
    sl_model_free(m);
}

static void database_host_unreachable_for_ten_seconds_loses_and_repeats_nothing(
    void **state) {
    (void)state;
    const long subjects = 150;
    PGconn *c;
    sl_model *m = setup("hosts_db", 200, 0, subjects, &c);
    pid_t w[3];
    for (int i = 0; i < 3; i++) w[i] = worker_on(m, "hosts_db", i + 1);
    assert_true(rt_wait_for(c, "SELECT (count(*) >= 20)::int FROM done_log", 1,
                            20000));
    hl_fault("cut", "db");
    int64_t t_cut = sl_test_now_ms();
    while (sl_test_now_ms() - t_cut < 10000) usleep(100000);
    long before = sl_test_long(c, "SELECT count(*) FROM done_log");
    hl_fault("heal", "db");
    int64_t t_heal = sl_test_now_ms();
    assert_true(rt_wait_for(c, "SELECT count(*) FROM done_log", subjects,
                            40000));
    int64_t all_done = sl_test_now_ms() - t_heal;
    long recon = 0;
    for (int i = 0; i < 3; i++)
        recon += hl_log_count("hosts_db", i + 1, "reconnected") +
                 hl_log_count("hosts_db", i + 1, "database answers again");
    print_message("database host cut off for 10 s: %ld of %ld done before"
                  " the heal, the rest within %lld ms after it (%ld"
                  " reconnects / fence lifts logged)\n",
                  before, subjects, (long long)all_done, recon);
    assert_all_done_once(c, subjects);
    for (int i = 0; i < 3; i++) assert_true(rt_alive(w[i], NULL));
    for (int i = 0; i < 3; i++) kill(w[i], SIGTERM);
    for (int i = 0; i < 3; i++) assert_int_equal(rt_wait(w[i], 20000), 0);
    PQfinish(c);
    sl_model_free(m);
}

HL_MAIN(NET, log_dbs,
        HL_TEST(partitioned_host_loses_its_jobs_to_others_and_its_late_completions_are_refused),
        HL_TEST(silent_drop_stops_the_handler_within_its_lease_and_the_worker_rejoins),
        HL_TEST(database_host_unreachable_for_ten_seconds_loses_and_repeats_nothing))
