/* test_serial_hosts_chaos.c - the chaos test (tests/lib/chaoslib.h) with
 * its worker processes spread over three network hosts
 * (tests/lib/hostlib.h): six workers, two on each of w1..w3, reach the
 * database host over TCP; every 2 s one of them is killed with SIGKILL
 * and restarted on its host, and when a third of the jobs are done host
 * w2 is cut off (link down, packets vanish both ways) for longer than the
 * lease, then healed. Nothing is lost, nothing is done twice, every
 * subject reaches its final status, and every worker, the cut-off ones
 * included, is still running at the end and stops cleanly.
 *
 *   SLUICE_HOSTS_CHAOS_SUBJECTS  subjects (3 jobs each; default 2000)
 *   SLUICE_HOSTS_CHAOS_TIMEOUT_S give up after this long (default 90)
 *
 * Needs root and `ip netns`; exits 77 (skipped) otherwise. Serial: it
 * owns its namespaces and its timings must not compete with the suite.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chaoslib.h"
#include "hostlib.h"
#include "rtlib.h"

#define NET "slchaos"
#define DB "hosts_chaos"
#define NWORKERS 6
#define CUT_HOST 2 /* w2 */
#define CUT "w2"
#define CUT_MS (CHAOS_LEASE_MS + 3000) /* longer than the lease */
#define KILL_MS 2000

static const char *const log_dbs[] = {DB, NULL};

typedef struct chaos_run {
    PGconn *c;
    const sl_model *m;
    pid_t w[NWORKERS];    /* worker i runs on host i % 3 + 1 */
    int started[4];       /* processes started on host wN so far */
    long total, done, kills, done_at_cut, done_at_heal;
    int64_t t_cut, t_heal; /* 0 until then */
    unsigned seed;
} chaos_run;

static int host_of(int i) { return i % 3 + 1; }

static void start_worker(chaos_run *r, int i) {
    r->w[i] = hl_worker(r->m, DB, host_of(i), 2, 1);
    r->started[host_of(i)]++;
}

static int cut_now(const chaos_run *r) { return r->t_cut && !r->t_heal; }

/* Kills one worker at random and starts another on its host; never one on
 * the cut-off host while it is cut off (a worker that cannot reach the
 * database at start-up exits, by design). */
static void kill_one(chaos_run *r) {
    int v;
    do
        v = rand_r(&r->seed) % NWORKERS;
    while (cut_now(r) && host_of(v) == CUT_HOST);
    chaos_kill(r->c, r->w[v]);
    start_worker(r, v);
    r->kills++;
}

/* The partition: w2 cut once a third of the jobs are done and every
 * process started there has reached the database, healed CUT_MS later. */
static void partition_step(chaos_run *r) {
    int64_t now = sl_test_now_ms();
    if (!r->t_cut && r->done >= r->total / 3 &&
        hl_log_count(DB, CUT_HOST, "runtime started") ==
            r->started[CUT_HOST]) {
        hl_fault("cut", CUT);
        r->t_cut = now;
        r->done_at_cut = r->done;
    } else if (cut_now(r) && now - r->t_cut >= CUT_MS) {
        hl_fault("heal", CUT);
        r->t_heal = now;
        r->done_at_heal = sl_test_long(r->c, "SELECT count(*) FROM done_log");
    }
}

/* Runs the chaos until every job is done and the partition is over, or
 * timeout_s passes; returns the milliseconds it took. */
static int64_t run_chaos(chaos_run *r, long timeout_s) {
    int64_t t0 = sl_test_now_ms();
    int64_t next_kill = t0 + KILL_MS;
    while (sl_test_now_ms() < t0 + timeout_s * 1000) {
        r->done = sl_test_long(r->c, "SELECT count(*) FROM done_log");
        if (r->done >= r->total && r->t_heal) break;
        partition_step(r);
        if (sl_test_now_ms() >= next_kill) {
            kill_one(r);
            next_kill += KILL_MS;
        }
        usleep(100000);
    }
    return sl_test_now_ms() - t0;
}

/* Rescues after the owner's kill are the kills'; the others took jobs
 * from live workers: the cut-off host's, or late heartbeats elsewhere. */
#define KILLED                                                                 \
    "EXISTS (SELECT 1 FROM chaos_kills k WHERE k.pid = " CHAOS_OWNER_PID        \
    " AND k.at <= rescue_log.at)"

/* Prints the rescues and what the cut-off host logged; returns how many
 * jobs were taken from its live workers. */
static long print_rescues(PGconn *c) {
    long killed = sl_test_long(c, "SELECT count(*) FROM rescue_log WHERE "
                                  KILLED);
    long cut = sl_test_long(c, "SELECT count(*) FROM rescue_log WHERE owner"
                               " LIKE '" NET "-" CUT ":%' AND NOT " KILLED);
    long other = sl_test_long(c, "SELECT count(*) FROM rescue_log WHERE"
                                 " owner NOT LIKE '" NET "-" CUT ":%' AND NOT "
                                 KILLED);
    print_message("lease rescues: %ld from killed workers, %ld from the"
                  " cut-off host's live workers, %ld from other live"
                  " workers (heartbeats late on a loaded machine)\n",
                  killed, cut, other);
    print_message("the cut-off host logged %d refused late completions, %d"
                  " fence lifts, %d reconnects\n",
                  hl_log_count(DB, CUT_HOST, "completion refused"),
                  hl_log_count(DB, CUT_HOST, "database answers again"),
                  hl_log_count(DB, CUT_HOST, "reconnected"));
    return cut;
}

static void workers_on_three_hosts_killed_and_partitioned_lose_no_job_and_complete_none_twice(
    void **state) {
    (void)state;
    long subjects = rt_env_long("SLUICE_HOSTS_CHAOS_SUBJECTS", 2000);
    long timeout_s = rt_env_long("SLUICE_HOSTS_CHAOS_TIMEOUT_S", 90);
    chaos_run r;
    memset(&r, 0, sizeof r);
    r.total = subjects * 3;
    r.seed = 11;
    sl_model *m = rt_setup(DB, chaos_yaml, &r.c);
    r.m = m;
    chaos_prepare(r.c, subjects);
    for (int i = 0; i < NWORKERS; i++) start_worker(&r, i);

    int64_t elapsed = run_chaos(&r, timeout_s);
    print_message("%ld jobs (%ld subjects x 3 stages), %d workers on 3 hosts,"
                  " %ld SIGKILLs (one every %d ms): all done in %.1f s (%.0f"
                  " jobs/s)\n",
                  r.total, subjects, NWORKERS, r.kills, KILL_MS,
                  elapsed / 1000.0,
                  r.total * 1000.0 / (double)(elapsed ? elapsed : 1));
    print_message("w2 cut off for %d ms (lease %d ms) with %ld of %ld jobs"
                  " done; %ld done when it was healed\n",
                  CUT_MS, CHAOS_LEASE_MS, r.done_at_cut, r.total,
                  r.done_at_heal);
    if (r.done < r.total)
        fail_msg("only %ld of %ld jobs done after %ld s", r.done, r.total,
                 timeout_s);
    /* The partition came in the middle: work was left when it began, and
     * the other hosts went on meanwhile. */
    assert_true(r.t_heal > 0);
    assert_true(r.done_at_cut < r.total);
    assert_true(r.done_at_heal > r.done_at_cut);
    assert_true(r.kills >= 3);
    /* Every worker survived to the end on its own, and stops cleanly. */
    for (int i = 0; i < NWORKERS; i++) assert_true(rt_alive(r.w[i], NULL));
    for (int i = 0; i < NWORKERS; i++) kill(r.w[i], SIGTERM);
    for (int i = 0; i < NWORKERS; i++)
        assert_int_equal(rt_wait(r.w[i], 30000), 0);

    chaos_assert_exactly_once(r.c, subjects);
    chaos_print_kill_figures(r.c);
    /* The partition bit: jobs w2 held when it was cut off went to the
     * other hosts (its 12 threads are never all between jobs at once). */
    assert_true(print_rescues(r.c) >= 1);
    PQfinish(r.c);
    sl_model_free(m);
}

HL_MAIN(NET, log_dbs,
        HL_TEST(workers_on_three_hosts_killed_and_partitioned_lose_no_job_and_complete_none_twice))
