/* chaoslib.h - the chaos workload shared by tests/test_chaos.c (worker
 * processes on this host) and tests/test_serial_hosts_chaos.c (worker
 * processes on three network hosts): a three-stage pipeline a -> b -> c
 * over rt_setup's items, the audit of the chaos itself, and the checks
 * that nothing was lost or done twice.
 */
#ifndef SL_CHAOSLIB_H
#define SL_CHAOSLIB_H

#include <libpq-fe.h>
#include <sys/types.h>

#define CHAOS_LEASE_MS 2000
#define CHAOS_SWEEP_MS 500
#define CHAOS_MAX_ATTEMPTS 10

/* The pipeline (for rt_setup): stages a, b, c on queues a_jobs, b_jobs,
 * c_jobs, the probe sleeping 5 ms a job, lease 2 s, heartbeat 400 ms,
 * sweep 500 ms, at most 10 attempts; a and b hand a token on. */
extern const char *const chaos_yaml;

/* The pid inside an owner name "<host>:<pid>:<stage>:<thread>" (SQL on a
 * column named owner). */
#define CHAOS_OWNER_PID "substring(owner from ':([0-9]+):[^:]+:[0-9]+$')::int"

/* Installs the audit tables (chaos_kills: every kill with the test's
 * clock; rescue_log: every lease rescue with the owner that lost the job)
 * and enqueues `subjects` subjects into a_jobs. */
void chaos_prepare(PGconn *c, long subjects);

/* Kills worker pid (a child of this process) with SIGKILL, records the
 * kill in chaos_kills, reaps it and asserts that the signal ended it. */
void chaos_kill(PGconn *c, pid_t pid);

/* Asserts that every one of the subjects x 3 jobs was done exactly once
 * (done_log's primary key refuses a second completion), none is left
 * behind, none used more than the allowed attempts, every subject is in
 * its final status, and each hand-off carried its output exactly once. */
void chaos_assert_exactly_once(PGconn *c, long subjects);

/* Prints, per kill that left jobs in progress, the slowest rescue and
 * re-run; asserts that some kill left jobs behind. Returns the slowest
 * rescue in ms (kill -> job back in the queue). */
long chaos_print_kill_figures(PGconn *c);

#endif
