/* hostlib.h - the test hosts of scripts/netns for the many-hosts suites
 * (tests/test_serial_hosts*.c): a database host running a private
 * PostgreSQL over TCP and three worker hosts w1..w3 in network namespaces,
 * worker processes started on them, link faults, and the workers' logs.
 *
 * A suite's main() is HL_MAIN(...) (or calls hl_start() first): it exits
 * 77 (ctest's SKIP_RETURN_CODE for these tests) when namespaces cannot be
 * made here, and otherwise builds the hosts and makes sure they are
 * removed when the process ends, whether its tests pass, fail or it is
 * interrupted.
 */
#ifndef SL_HOSTLIB_H
#define SL_HOSTLIB_H

#include <sys/types.h>

#include "model.h"
#include "testlib.h"

#define HL_SKIP 77 /* the exit code of a suite that cannot run here */

/* Builds the hosts named `name` (at most 10 characters: scripts/netns),
 * the cluster's data under the temp dir, and points PGHOST, PGPORT and
 * PGUSER at its Unix socket (the test's own connection, which no network
 * fault touches). Returns 0 when the hosts are up, HL_SKIP after printing
 * why when namespaces are not permitted here (not root, no `ip netns`),
 * 1 after printing what failed. */
int hl_start(const char *name);

/* Ends every tracked worker and removes the hosts and the cluster; safe
 * to call more than once. Registered with atexit() by hl_start(). */
void hl_stop(void);

/* The conninfo worker hosts use to reach database db over TCP (static
 * storage, valid until the next call). */
const char *hl_conninfo(const char *db);

/* Runs `scripts/netns WHAT NAME HOST` (cut, blackhole, heal) and fails
 * the test when it fails. */
void hl_fault(const char *what, const char *host);

/* A cmocka teardown: ends the test's workers and heals every link and
 * route, even after a failed assertion. With SLUICE_HOSTS_LOGS set it
 * first prints the logs of the workers of the suite's databases. */
int hl_teardown(void **state);

/* Builds hosts `name` (hl_start), then runs the cmocka tests, each with
 * hl_teardown, which prints the worker logs of the databases in log_dbs
 * (NULL-terminated) when asked to. Returns main()'s exit code. */
int hl_run(const char *name, const char *const *log_dbs,
           const struct CMUnitTest *tests, size_t ntests);

/* main() of a suite of tests named NAME, one per test function. */
#define HL_MAIN(name, log_dbs, ...)                                            \
    int main(void) {                                                           \
        const struct CMUnitTest hl_tests_[] = {__VA_ARGS__};                    \
        return hl_run(name, log_dbs, hl_tests_,                                \
                      sizeof hl_tests_ / sizeof hl_tests_[0]);                 \
    }
#define HL_TEST(f) cmocka_unit_test_teardown(f, hl_teardown)

/* Starts a worker process on host wN (n 1..3) for database db through
 * rt_spawn_host (its owner names read "<NAME>-wN:<pid>:<stage>:<thread>"),
 * logging to hl_log_path(db, n) (appended: workers restarted on one host
 * share it); the pid is tracked for rt_kill_tracked(). */
pid_t hl_worker(const sl_model *m, const char *db, int n, int concurrency,
                int batch);

/* The log file of the workers of db on host wN (static storage, valid
 * until the next call). */
const char *hl_log_path(const char *db, int n);

/* How often the log of the workers of db on host wN contains `what`. */
int hl_log_count(const char *db, int n, const char *what);

#endif
