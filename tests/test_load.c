/* test_load.c - a sustained run at a high enqueue rate: one worker process
 * keeps up, and its memory (VmRSS) and its number of database connections
 * stay flat while tens of thousands of jobs pass through.
 *
 * The CI run is short (20 s); scripts/load runs it for minutes through
 * the environment:
 *   SLUICE_LOAD_SECONDS  how long to enqueue (default 20)
 *   SLUICE_LOAD_RATE     subjects enqueued per second, 2 jobs each
 *                        (default 1000)
 *   SLUICE_LOAD_VERBOSE  print every sample (1 s apart)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rtlib.h"

#define CONCURRENCY 4

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif
#define MAX_SAMPLES 7200

static const char *yaml =
    "pipeline: load\n"
    "subject:\n"
    "  table: items\n"
    "  foreign_key: item_id\n"
    "  status: {column: status, values: [new, a_running, a_done, b_running,"
    " done, failed]}\n"
    "  progress: progress\n"
    "  detail: detail\n"
    "sweep: {interval: 1s, pending_age: 1m}\n"
    "defaults:\n"
    "  lease: 30s\n"
    "  batch: 16\n"
    "stages:\n"
    "  a:\n"
    "    queue: a_jobs\n"
    "    handler: noop\n"
    "    columns: {payload: jsonb}\n"
    "    status:\n"
    "      on_start: {status: a_running, progress: 10}\n"
    "      on_done: {status: a_done, progress: 50, detail: halfway}\n"
    "      on_error: {status: failed}\n"
    "    next: b\n"
    "  b:\n"
    "    queue: b_jobs\n"
    "    handler: noop\n"
    "    status:\n"
    "      on_start: {status: b_running, progress: 60}\n"
    "      on_done: {status: done, progress: 100, detail: finished}\n"
    "      on_error: {status: failed}\n";

typedef struct sample {
    long t_ms, rss_kb, conns, backlog, done;
} sample;

static sample samples[MAX_SAMPLES];

/* Max RSS over samples [from, to). */
static long max_rss(int from, int to) {
    long m = 0;
    for (int i = from; i < to; i++)
        if (samples[i].rss_kb > m) m = samples[i].rss_kb;
    return m;
}

static void
worker_memory_and_connections_stay_flat_under_sustained_load(void **state) {
    (void)state;
    long seconds = rt_env_long("SLUICE_LOAD_SECONDS", 20);
    long rate = rt_env_long("SLUICE_LOAD_RATE", 1000);
    int verbose = rt_env_long("SLUICE_LOAD_VERBOSE", 0) != 0;
    if (seconds > MAX_SAMPLES - 120) seconds = MAX_SAMPLES - 120;
    PGconn *c;
    sl_model *m = rt_setup("load", yaml, &c);
    /* The test's own audit triggers would grow without bound; a load run
     * measures the engine alone. */
    sl_test_exec(c, "DROP TRIGGER done_log ON a_jobs;"
                    "DROP TRIGGER done_log ON b_jobs;"
                    "DROP TRIGGER items_log ON items");
    pid_t w = rt_track(rt_spawn(m, CONCURRENCY, 0, 0, 2000));

    const char *count_conns =
        "SELECT count(*) FROM pg_stat_activity WHERE datname ="
        " current_database() AND pid <> pg_backend_pid() AND backend_type ="
        " 'client backend'";
    const char *count_backlog =
        "SELECT (SELECT count(*) FROM a_jobs WHERE status <> 'done') +"
        " (SELECT count(*) FROM b_jobs WHERE status <> 'done')";
    const char *count_done = "SELECT count(*) FROM b_jobs WHERE status ="
                             " 'done'";
    char sql[512];
    int64_t t0 = sl_test_now_ms(), next_sample = t0 + 1000;
    long enqueued = 0, ns = 0, tick = 0;
    /* Enqueue every 100 ms; sample every second. */
    while (sl_test_now_ms() - t0 < seconds * 1000) {
        long want = (long)((sl_test_now_ms() - t0) * rate / 1000);
        if (want > enqueued) {
            snprintf(sql, sizeof sql,
                     "WITH i AS (INSERT INTO items SELECT gen_random_uuid()"
                     " FROM generate_series(1, %ld) RETURNING id) INSERT"
                     " INTO a_jobs (item_id, payload) SELECT id,"
                     " jsonb_build_object('n', %ld, 'text', repeat('x',"
                     " 200)) FROM i",
                     want - enqueued, tick++);
            sl_test_exec(c, sql);
            enqueued = want;
        }
        if (sl_test_now_ms() >= next_sample && ns < MAX_SAMPLES) {
            sample *s = &samples[ns++];
            s->t_ms = (long)(sl_test_now_ms() - t0);
            s->rss_kb = rt_rss_kb(w);
            s->conns = sl_test_long(c, count_conns);
            s->backlog = sl_test_long(c, count_backlog);
            s->done = sl_test_long(c, count_done);
            if (verbose)
                print_message("t=%5.1fs rss=%ld KiB conns=%ld backlog=%ld"
                              " subjects_done=%ld\n",
                              s->t_ms / 1000.0, s->rss_kb, s->conns, s->backlog,
                              s->done);
            next_sample += 1000;
        }
        usleep(100000);
    }
    /* The backlog drains: the worker kept up with the rate. */
    int64_t t_end = sl_test_now_ms();
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM b_jobs WHERE status ="
             " 'done'");
    int drained = rt_wait_for(c, sql, enqueued, 60000);
    int64_t drain_ms = sl_test_now_ms() - t_end;
    long rss_end = rt_rss_kb(w);
    assert_true(rt_alive(w, NULL));
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 30000), 0);

    /* Figures: warm-up is the first quarter (at least 3 s). */
    assert_true(ns >= 8);
    int warm = ns / 4 > 3 ? (int)(ns / 4) : 3;
    int half = warm + (int)(ns - warm) / 2;
    long cmin = samples[warm].conns, cmax = cmin, bmax = 0;
    for (int i = warm; i < ns; i++) {
        if (samples[i].conns < cmin) cmin = samples[i].conns;
        if (samples[i].conns > cmax) cmax = samples[i].conns;
        if (samples[i].backlog > bmax) bmax = samples[i].backlog;
    }
    long rss_first = max_rss(warm, half), rss_second = max_rss(half, (int)ns);
    print_message("%ld s at %ld subjects/s: %ld subjects = %ld jobs (%.0f"
                  " jobs/s); backlog max %ld jobs, drained %lld ms after the"
                  " last enqueue\n",
                  seconds, rate, enqueued, 2 * enqueued,
                  2.0 * enqueued / (double)seconds, bmax, (long long)drain_ms);
    print_message("worker RSS: %ld KiB at %.0f s, max %ld KiB in %.0f..%.0f"
                  " s, max %ld KiB in %.0f..%.0f s, %ld KiB at the end\n",
                  samples[warm].rss_kb, samples[warm].t_ms / 1000.0, rss_first,
                  samples[warm].t_ms / 1000.0, samples[half].t_ms / 1000.0,
                  rss_second, samples[half].t_ms / 1000.0,
                  samples[ns - 1].t_ms / 1000.0, rss_end);
    print_message("worker connections: %ld..%ld (%d worker threads x 2"
                  " stages + 1 control)\n",
                  cmin, cmax, CONCURRENCY);
    assert_true(drained);
    /* One connection per worker thread plus the control connection, the
     * whole time: nothing opens a connection per job. */
    assert_int_equal(cmin, 2 * CONCURRENCY + 1);
    assert_int_equal(cmax, 2 * CONCURRENCY + 1);
    /* Memory is flat: the second half of the run peaks no higher than the
     * first half plus 2 MiB (allocator noise), whatever the job count.
     * Not under AddressSanitizer: its quarantine keeps up to 256 MiB of
     * freed memory resident on purpose, so RSS climbs until it is full. */
    if (!SANITIZED && rss_second > rss_first + 2048)
        fail_msg("worker RSS grew from %ld KiB to %ld KiB", rss_first,
                 rss_second);
    if (SANITIZED)
        print_message("(AddressSanitizer build: RSS includes its quarantine"
                      " of freed memory and is not checked)\n");
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM items WHERE"
                                     " status <> 'done'"),
                     0);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            worker_memory_and_connections_stay_flat_under_sustained_load,
            rt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
