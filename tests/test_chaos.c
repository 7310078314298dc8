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
#include <unistd.h>

#include "chaoslib.h"
#include "rtlib.h"

#define MAX_WORKERS 16

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
    sl_model *m = rt_setup("chaos", chaos_yaml, &c);
    chaos_prepare(c, subjects);

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
            chaos_kill(c, w[v]);
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

    chaos_assert_exactly_once(c, subjects);

    long max_rescue = chaos_print_kill_figures(c);
    /* Jobs rescued from a live worker (its heartbeats fell behind the
     * lease): fencing keeps them correct, but they should be rare. */
    long false_rescues =
        sl_test_long(c, "SELECT count(*) FROM rescue_log WHERE " CHAOS_OWNER_PID
                        " NOT IN (SELECT pid FROM chaos_kills)");
    print_message("rescues of jobs whose worker was alive: %ld\n",
                  false_rescues);
    /* A dead worker's job is back in the queue within lease + sweep
     * interval; 500 ms of slack for a 2-core machine running the suite in
     * parallel (the sweep statement itself, scheduling). */
    assert_true(max_rescue <= CHAOS_LEASE_MS + CHAOS_SWEEP_MS + 500);
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
