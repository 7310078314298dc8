/* test_resume.c - what a job that runs again looks like from outside: the
 * subject's progress on its NOTIFY channel never goes backwards across
 * snoozes, retries and a rescue, the subject says when a waiting job runs
 * again, and a job rescued from a killed worker is claimed ahead of the
 * jobs queued with it and after it. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "queue.h"
#include "rtlib.h"

static int teardown(void **state) {
    (void)state;
    rt_kill_tracked();
    return 0;
}

/* A two-stage pipeline a -> b over items with a subject channel; %s slots:
 * a's with, lease. */
static const char *resume_yaml(const char *a_with, const char *lease) {
    static char y[4096];
    snprintf(y, sizeof y,
             "pipeline: rs\n"
             "subject:\n"
             "  table: items\n"
             "  foreign_key: item_id\n"
             "  status:\n"
             "    column: status\n"
             "    values: [new, a_running, a_done, b_running, done, failed]\n"
             "  progress: progress\n"
             "  detail: detail\n"
             "  channel: items_progress\n"
             "sweep: {interval: 200ms, pending_age: 1m}\n"
             "defaults:\n"
             "  retry: {max_attempts: 5, backoff: fixed, initial: 300ms, "
             "jitter: 0}\n"
             "  lease: %s\n"
             "  heartbeat: 250ms\n"
             "  timeout: 30s\n"
             "stages:\n"
             "  a:\n"
             "    queue: a_jobs\n"
             "    handler: t.probe\n"
             "    with: %s\n"
             "    status:\n"
             "      on_start: {status: a_running, progress: 10, detail: "
             "\"a started\"}\n"
             "      progress: {status: a_running, from: 10, to: 40}\n"
             "      on_done: {status: a_done, progress: 50, detail: \"a "
             "done\"}\n"
             "      on_error: {status: failed, detail: \"a failed\"}\n"
             "    next: [b]\n"
             "  b:\n"
             "    queue: b_jobs\n"
             "    handler: t.probe\n"
             "    status:\n"
             "      on_start: {status: b_running, progress: 60}\n"
             "      on_done: {status: done, progress: 100, detail: \"all "
             "done\"}\n",
             lease, a_with);
    return y;
}

/* Reads every notification waiting on `l` (up to wait_ms for the first).
 * The subject channel carries no payload (docs/schema.md): each
 * notification makes the listener re-read the subject row, as a live UI
 * does, and the progress read must never be lower than the last seen.
 * Counts the notifications and the retry notes seen. */
typedef struct watch {
    PGconn *c; /* reads the subject row */
    int last, n, notes;
    char trail[4096];
} watch;

static void drain(PGconn *l, watch *w, int wait_ms) {
    struct pollfd p = {.fd = PQsocket(l), .events = POLLIN};
    while (poll(&p, 1, wait_ms) > 0) {
        wait_ms = 50;
        if (!PQconsumeInput(l)) fail_msg("listen: %s", PQerrorMessage(l));
        PGnotify *nt;
        while ((nt = PQnotifies(l)) != NULL) {
            if (nt->extra[0])
                fail_msg("the subject channel carries a payload: %s",
                         nt->extra);
            PQfreemem(nt);
            PGresult *r = PQexec(w->c, "SELECT status, progress, detail FROM"
                                       " items LIMIT 1");
            if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
                fail_msg("re-reading the subject: %s",
                         PQresultErrorMessage(r));
            const char *st = PQgetvalue(r, 0, 0);
            int pct = atoi(PQgetvalue(r, 0, 1));
            const char *d = PQgetisnull(r, 0, 2) ? NULL : PQgetvalue(r, 0, 2);
            size_t l = strlen(w->trail);
            snprintf(w->trail + l, sizeof w->trail - l, "%s %d%% %s\n", st,
                     pct, d ? d : "-");
            if (pct < w->last)
                fail_msg("progress went backwards: %d after %d; seen so "
                         "far:\n%s",
                         pct, w->last, w->trail);
            if (d && strncmp(d, "Retrying at ", 12) == 0) w->notes++;
            w->last = pct;
            w->n++;
            PQclear(r);
        }
    }
}

static void progress_on_the_channel_never_decreases_across_retries_snoozes_and_a_rescue(
    void **state) {
    (void)state;
    PGconn *c;
    /* Every attempt of a: two snoozes, progress 25/50/75 % (mapped to
     * 17/25/32), a checkpoint (which resets the snooze count, so each
     * attempt snoozes again), 1 s of work; attempts 1 and 2 fail. Attempt
     * 1 is killed during its work, so it is rescued; attempt 2 fails with
     * a retry. */
    sl_model *m = rt_setup("rs_progress",
                           resume_yaml("{snooze_times: 2, snooze_ms: 30, "
                                       "progress_steps: 3, checkpoint: true, "
                                       "sleep_ms: 1000, fail_first: 2}",
                                       "1s"),
                           &c);
    PGconn *l = sl_test_connect(rt_conninfo());
    sl_test_exec(l, "LISTEN items_progress");
    sl_test_exec(c, "INSERT INTO items DEFAULT VALUES");
    sl_test_exec(c, "INSERT INTO a_jobs (item_id) SELECT id FROM items");
    watch w = {.c = c};

    pid_t a = rt_track(rt_spawn(m, 1, 1, 0, 1000));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM a_jobs WHERE"
                               " checkpoint->>'saved_by_attempt' = '1'",
                            1, 10000));
    kill(a, SIGKILL);
    rt_wait(a, 5000);
    drain(l, &w, 10);
    pid_t b = rt_track(rt_spawn(m, 1, 1, 1, 1000));
    int64_t end = sl_test_now_ms() + 30000;
    int status = -1;
    while (rt_alive(b, &status) && sl_test_now_ms() < end) drain(l, &w, 100);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    drain(l, &w, 100);
    print_message("%d notifications:\n%s", w.n, w.trail);

    assert_int_equal(w.last, 100);
    /* The rescue and the failed attempt 2 each announced the retry. */
    assert_int_equal(w.notes, 2);
    assert_int_equal(sl_test_long(c, "SELECT attempts FROM a_jobs"), 3);
    char *st = sl_test_scalar(c, "SELECT status || ' ' || progress || ' ' ||"
                                 " detail FROM items");
    assert_string_equal(st, "done 100 all done");
    free(st);
    /* What stage a showed once resumed: its furthest progress, never
     * on_start's 10 % again (the subject table's own audit log agrees). */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM subject_log WHERE"
                                     " progress = 10"),
                     1);
    PQfinish(l);
    PQfinish(c);
    sl_model_free(m);
}

static void a_retry_note_says_when_the_job_runs_again(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m =
        rt_setup("rs_note",
                 resume_yaml("{progress_steps: 1, fail_first: 1, fail_class: "
                             "rate_limited, retry_after_ms: 1500}",
                             "30s"),
                 &c);
    sl_test_exec(c, "INSERT INTO items DEFAULT VALUES");
    sl_test_exec(c, "INSERT INTO a_jobs (item_id) SELECT id FROM items");
    pid_t w = rt_track(rt_spawn(m, 1, 1, 1, 1000));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM a_jobs WHERE status ="
                               " 'retry'",
                            1, 10000));
    /* While it waits: status and progress where attempt 1 left them, the
     * detail saying until when (the job's run_at, to the second). */
    char *st = sl_test_scalar(c, "SELECT status || ' ' || progress FROM"
                                 " items");
    assert_string_equal(st, "a_running 25");
    free(st);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM items i, a_jobs a WHERE"
                        " i.detail = 'Rate limited: waiting until ' ||"
                        " to_char(date_trunc('second', a.run_at) AT TIME"
                        " ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') ||"
                        " ' (attempt 1 of 5)'"),
        1);
    assert_int_equal(rt_wait(w, 20000), 0);
    /* Running again replaced the note with on_start's detail. */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM subject_log WHERE"
                                     " status = 'a_running' AND progress = 25"
                                     " AND detail = 'a started'"),
                     1);
    PQfinish(c);
    sl_model_free(m);
}

/* Bulk enqueue: one INSERT, so every job of the batch has the same run_at. */
static void enqueue(PGconn *c, int n) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "WITH i AS (INSERT INTO items SELECT gen_random_uuid() FROM"
             " generate_series(1, %d) RETURNING id) INSERT INTO a_jobs"
             " (item_id) SELECT id FROM i",
             n);
    sl_test_exec(c, sql);
}

static void a_rescued_job_is_claimed_before_jobs_enqueued_with_or_after_it(
    void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("rs_order", resume_yaml("{sleep_ms: 1000}", "1s"),
                           &c);
    enqueue(c, 20);
    pid_t a = rt_track(rt_spawn(m, 1, 1, 0, 1000));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM probe_runs", 1, 10000));
    kill(a, SIGKILL);
    rt_wait(a, 5000);
    char *rescued = sl_test_scalar(c, "SELECT job::text FROM probe_runs");
    /* Queued after the killed one started: a second batch. */
    enqueue(c, 20);
    /* Past the lease, the same statement the sweep runs puts it back. */
    usleep(1200 * 1000);
    const sl_stage *s = sl_model_stage(m, "rs", "a");
    char err[512];
    int n = 0;
    assert_int_equal(sl_queue_prepare(c, m, err, sizeof err), 0);
    assert_int_equal(sl_queue_rescue(c, s, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM a_jobs WHERE"
                                     " status = 'retry' AND run_at = (SELECT"
                                     " min(run_at) FROM a_jobs)"),
                     1);

    pid_t b = rt_track(rt_spawn(m, 1, 1, 0, 1000));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM probe_runs", 2, 10000));
    kill(b, SIGKILL);
    rt_wait(b, 5000);
    char *next = sl_test_scalar(c, "SELECT job::text || ' ' || attempt FROM"
                                   " probe_runs ORDER BY n OFFSET 1 LIMIT 1");
    char want[128];
    snprintf(want, sizeof want, "%s 2", rescued);
    assert_string_equal(next, want);
    free(next);
    free(rescued);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            progress_on_the_channel_never_decreases_across_retries_snoozes_and_a_rescue,
            teardown),
        cmocka_unit_test_teardown(a_retry_note_says_when_the_job_runs_again,
                                  teardown),
        cmocka_unit_test_teardown(
            a_rescued_job_is_claimed_before_jobs_enqueued_with_or_after_it,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
