/* test_schedules.c - recurring jobs (schedule.h, docs/dsl.md#schedule)
 * against the real PostgreSQL: one job per tick however many connections
 * evaluate it, the missed-tick rules from the last recorded tick, a
 * `sluice run` process started after a downtime, `sluice schedules`, and
 * the loader's errors. The three-process, three-minute run is
 * tests/test_slow_schedules.c. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "dsltest.h"
#include "error.h"
#include "rtlib.h"
#include "schedule.h"

static const char *yaml(const char *name, const char *schedule) {
    static char y[1024];
    snprintf(y, sizeof y,
             "pipeline: %s\n"
             "security: {rls: false}\n"
             "stages:\n"
             "  tick:\n"
             "    queue: tick_jobs\n"
             "    handler: noop\n"
             "    columns: {kind: text, n: integer}\n"
             "    schedule: %s\n",
             name, schedule);
    return y;
}

static int64_t minute_floor(int64_t t) { return t - t % 60; }

static void record_tick(PGconn *c, const char *schedule, int64_t tick) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO sluice.schedule_ticks VALUES ('%s', to_timestamp("
             "%lld), true)", schedule, (long long)tick);
    sl_test_exec(c, sql);
}

/* ---- many evaluators, one job per tick ------------------------------------ */

typedef struct eval_arg {
    const sl_stage *st;
    int64_t since, now;
    int enqueued;
    pthread_barrier_t *go;
} eval_arg;

static void *eval_thread(void *p) {
    eval_arg *a = p;
    char err[512];
    PGconn *c = sl_db_connect(sl_db_source(rt_conninfo()), err, sizeof err);
    pthread_barrier_wait(a->go);
    int rc = c ? sl_schedule_evaluate(c, a->st, NULL, a->since, a->now,
                                      &a->enqueued, err, sizeof err)
               : -1;
    if (rc != 0) a->enqueued = -1000;
    PQfinish(c);
    return NULL;
}

static void each_tick_is_enqueued_once_by_concurrent_evaluators(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("sched_once",
                           yaml("once", "{cron: '* * * * *', args: {kind: "
                                        "minutely, n: 3}}"),
                           &c);
    const sl_stage *st = &m->pipelines[0].stages[0];
    int64_t t0 = minute_floor((int64_t)time(NULL)) - 3600;
    enum { N = 6 };
    for (int tick = 0; tick < 3; tick++) {
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, N);
        pthread_t th[N];
        eval_arg a[N];
        for (int i = 0; i < N; i++) {
            a[i] = (eval_arg){st, t0 - 30, t0 + 60 * tick + 1, 0, &go};
            pthread_create(&th[i], NULL, eval_thread, &a[i]);
        }
        int total = 0;
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            total += a[i].enqueued;
        }
        pthread_barrier_destroy(&go);
        assert_int_equal(total, 1);
    }
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM tick_jobs"), 3);
    assert_int_equal(sl_test_long(c, "SELECT count(DISTINCT created_at) FROM "
                                     "tick_jobs WHERE kind = 'minutely' AND "
                                     "n = 3"), 3);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM "
                                     "sluice.schedule_ticks WHERE enqueued"),
                     3);
    PQfinish(c);
    sl_model_free(m);
}

/* ---- missed ticks ------------------------------------------------------------ */

/* Evaluates the schedule of a fresh database once, 10 minutes and `late`
 * seconds after its recorded last tick; returns the jobs enqueued. */
static int after_downtime(const char *db, const char *schedule, int late,
                          PGconn **cp, sl_model **mp, int64_t *last) {
    sl_model *m = rt_setup(db, yaml(db, schedule), cp);
    const sl_stage *st = &m->pipelines[0].stages[0];
    int64_t now = (int64_t)time(NULL);
    *last = now - now % 600 - 3600; /* on a tick of every schedule here */
    char name[128];
    sl_schedule_name(st, name, sizeof name);
    record_tick(*cp, name, *last);
    int n = -1;
    char err[512];
    if (sl_schedule_evaluate(*cp, st, NULL, 0, *last + 600 + late, &n, err,
                             sizeof err) != 0)
        fail_msg("%s", err);
    *mp = m;
    return n;
}

static void missed_latest_enqueues_only_the_most_recent_tick(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m;
    int64_t last;
    assert_int_equal(after_downtime("sched_latest", "'* * * * *'", 5, &c, &m,
                                    &last), 1);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT extract(epoch FROM max(tick))::bigint - %lld FROM "
             "sluice.schedule_ticks", (long long)last);
    assert_int_equal(sl_test_long(c, sql), 600);
    PQfinish(c);
    sl_model_free(m);
}

static void missed_all_enqueues_the_most_recent_up_to_catch_up(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m;
    int64_t last;
    assert_int_equal(after_downtime("sched_all",
                                    "{cron: '* * * * *', missed: all, "
                                    "catch_up: 4}", 5, &c, &m, &last), 4);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT min(extract(epoch FROM tick))::bigint - %lld FROM "
             "sluice.schedule_ticks WHERE enqueued", (long long)last);
    assert_int_equal(sl_test_long(c, sql), 0); /* the old last tick */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM sluice.schedule_ticks WHERE tick >"
             " to_timestamp(%lld)", (long long)last + 360);
    assert_int_equal(sl_test_long(c, sql), 4); /* minutes 7, 8, 9, 10 */
    PQfinish(c);
    sl_model_free(m);
}

static void missed_skip_waits_for_the_next_tick(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m;
    int64_t last;
    assert_int_equal(after_downtime("sched_skip",
                                    "{cron: '*/10 * * * *', missed: skip}",
                                    SL_CRON_GRACE_S + 5, &c, &m, &last),
                     0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM tick_jobs"), 0);
    /* The passed-over tick is recorded without a job ... */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM "
                                     "sluice.schedule_ticks WHERE NOT "
                                     "enqueued"), 1);
    /* ... and the next tick, on time, is enqueued. */
    int n = 0;
    char err[512];
    assert_int_equal(sl_schedule_evaluate(c, &m->pipelines[0].stages[0], NULL,
                                          0, last + 1202, &n, err, sizeof err),
                     0);
    assert_int_equal(n, 1);
    PQfinish(c);
    sl_model_free(m);
}

/* ---- a real process after a downtime --------------------------------------- */

static pid_t spawn_run(const char *path, const char *log) {
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        execl(sl_test_bin(), "sluice", "run", "-p", path, "--allow-superuser",
              (char *)NULL);
        _exit(127);
    }
    return rt_track(pid);
}

static void a_process_started_after_a_downtime_enqueues_the_latest_tick(
    void **state) {
    (void)state;
    /* Far from a minute boundary, so that no new tick comes during it. */
    while ((int64_t)time(NULL) % 60 > 40) sleep(1);
    PGconn *c;
    const char *y = yaml("down", "'* * * * *'");
    sl_model *m = rt_setup("sched_down", y, &c);
    int64_t now = (int64_t)time(NULL);
    record_tick(c, "down.tick", minute_floor(now) - 5 * 60);
    const char *path = sl_test_file("down.yaml", y);
    char log[512];
    snprintf(log, sizeof log, "%s/down.log", sl_test_tmpdir());
    pid_t pid = spawn_run(path, log);
    assert_true(rt_wait_for(c, "SELECT count(*) FROM tick_jobs", 1, 20000));
    sleep(2); /* time for a wrong second job */
    kill(pid, SIGTERM);
    assert_int_equal(rt_wait(pid, 30000), 0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM tick_jobs"), 1);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT extract(epoch FROM max(tick))::bigint - %lld FROM "
             "sluice.schedule_ticks", (long long)minute_floor(now));
    assert_int_equal(sl_test_long(c, sql), 0);

    /* `sluice schedules` shows it. */
    char *out = NULL;
    assert_int_equal(sl_test_sluice(&out, "schedules -p %s --json", path), 0);
    sl_test_expect_in(out, "\"schedule\":\"down.tick\"");
    sl_test_expect_in(out, "\"cron\":\"* * * * *\"");
    sl_test_expect_in(out, "\"timezone\":\"UTC\"");
    sl_test_expect_in(out, "\"missed\":\"latest\"");
    assert_null(strstr(out, "\"last\":null"));
    free(out);
    assert_int_equal(sl_test_sluice(&out, "schedules -p %s", path), 0);
    sl_test_expect_in(out, "NEXT TICK");
    free(out);
    PQfinish(c);
    sl_model_free(m);
}

/* ---- the loader ---------------------------------------------------------------- */

static void schedule_errors_point_at_the_value(void **state) {
    (void)state;
    const char *base = "pipeline: p\nsecurity: {rls: false}\nstages:\n"
                       "  a:\n    queue: a_jobs\n    handler: noop\n";
    char y[1024];
    snprintf(y, sizeof y, "%s    schedule: '0 9 * * mon-fry'\n", base);
    sl_test_expect_diag(NULL, 0, y, "s.yaml", 7, 24,
                        "day of week: 'mon-fry'");
    snprintf(y, sizeof y,
             "%s    schedule: {cron: '@daily', timezone: Europe/Nowhere}\n",
             base);
    sl_test_expect_diag(NULL, 0, y, "s.yaml", 7, 42, "unknown time zone");
    snprintf(y, sizeof y,
             "%s    next: b\n  b:\n    queue: b_jobs\n    handler: noop\n"
             "    schedule: '@hourly'\n", base);
    sl_test_expect_diag(NULL, 0, y, "s.yaml", 11, 15,
                        "only the entry stage");
    snprintf(y, sizeof y, "%s    schedule: {cron: '@daily', missed: some}\n",
             base);
    sl_test_expect_diag(NULL, 0, y, "s.yaml", 7, 40, "latest, all, skip");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_tick_is_enqueued_once_by_concurrent_evaluators),
        cmocka_unit_test(missed_latest_enqueues_only_the_most_recent_tick),
        cmocka_unit_test(missed_all_enqueues_the_most_recent_up_to_catch_up),
        cmocka_unit_test(missed_skip_waits_for_the_next_tick),
        cmocka_unit_test_teardown(
            a_process_started_after_a_downtime_enqueues_the_latest_tick,
            rt_teardown),
        cmocka_unit_test(schedule_errors_point_at_the_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
