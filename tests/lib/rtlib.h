/* rtlib.h - fixtures for runtime tests: a probe handler, pipelines written
 * to the temp dir and migrated, and worker processes that can be killed.
 */
#ifndef SL_RTLIB_H
#define SL_RTLIB_H

#include <sys/types.h>

#include "model.h"
#include "runtime.h"
#include "testlib.h"

/* Registers the "t.probe" handler (once). Its `with:` options:
 *   sleep_ms N        sleep (in 20 ms steps, honouring should_stop)
 *   fail_first N      fail the first N attempts ...
 *   fail_class NAME   ... with this error class (default retryable)
 *   retry_after_ms N  ... asking for this Retry-After
 *   snooze_times N    snooze N times (counted in the checkpoint) first
 *   snooze_ms N       ... for this long each
 *   progress_steps N  report progress N times ("step i/N")
 *   ignore_stop true  sleep on when told to stop (a handler that never
 *                     checks); either way the first time it is told is
 *                     appended to $RT_PROBE_STOP_LOG as "<job> <mono ms>"
 *   checkpoint true   save {"saved_by_attempt": attempt} before sleeping
 *   output {...}      outputs to return (merged with
 *                     {"seen_checkpoint": <checkpoint or null>})
 * Every call is recorded in table probe_runs(job, stage, attempt, at) when
 * that table exists (rt_setup creates it). */
void rt_register_probe(void);

/* Creates database `db`, the subject table items(id, status, progress,
 * detail), the audit tables probe_runs, done_log (one row per job that
 * reached done: a unique key makes a second completion fail loudly) and
 * subject_log (every status/progress/detail change of items), writes
 * `yaml` to a file, runs `sluice migrate` on it, installs the done_log
 * triggers on every queue, and loads the model. Returns the model (the
 * caller frees) and sets the connection for the test. */
sl_model *rt_setup(const char *db, const char *yaml, PGconn **conn);

/* Runs the runtime in this process until idle. */
void rt_run_until_idle(const sl_model *m, int concurrency, int batch);

/* Forks a worker process running the runtime (exit_when_idle as given);
 * returns its pid. */
pid_t rt_spawn(const sl_model *m, int concurrency, int batch,
               int exit_when_idle, int64_t drain_ms);

/* Waits for pid to exit within timeout_ms; returns its exit status or -1
 * on timeout (the process is then killed). */
int rt_wait(pid_t pid, int64_t timeout_ms);

/* Polls `sql` (a scalar query) until it returns `want` or timeout_ms
 * passes; returns 1 on success. */
int rt_wait_for(PGconn *c, const char *sql, long want, int64_t timeout_ms);

/* The conninfo of the current test database. */
const char *rt_conninfo(void);

/* ---- helpers for the reliability suites (tests/test_chaos.c, ...) ---- */

/* Like rt_spawn, but the worker's log lines (stderr) are appended to
 * log_path and logged from min_level up (SL_LOG_DEBUG..SL_LOG_ERROR). */
pid_t rt_spawn_logged(const sl_model *m, int concurrency, int batch,
                      int exit_when_idle, int64_t drain_ms,
                      const char *log_path, int min_level);

/* Forks a worker process that enters network namespace `netns` (a name
 * under /var/run/netns, as scripts/netns makes) and runs the runtime
 * against `conninfo` (TCP to the database host), logging from INFO up to
 * log_path, under the worker id "<netns>:<pid>". It never exits when
 * idle. Returns its pid. */
pid_t rt_spawn_host(const sl_model *m, const char *netns,
                    const char *conninfo, int concurrency, int batch,
                    const char *log_path);
/* 1 while pid (a child of this process) is running, 0 once it exited (it
 * is then reaped; *status gets its wait status when status is not NULL). */
int rt_alive(pid_t pid, int *status);

/* The resident set size of process pid in KiB (VmRSS), or -1. */
long rt_rss_kb(pid_t pid);

/* An integer from the environment, or dflt when unset or not a number
 * (lets scripts/chaos and scripts/load run the CI tests longer). */
long rt_env_long(const char *name, long dflt);

/* Reads a whole file into a malloc'd NUL-terminated string (caller frees);
 * NULL when it cannot be read. *len gets its length when len is not NULL. */
char *rt_read_file(const char *path, size_t *len);

/* Remembers a worker pid so that rt_kill_tracked() can end it when a test
 * fails half-way (cmocka then skips the test's own cleanup). Returns pid. */
pid_t rt_track(pid_t pid);

/* SIGKILLs and reaps every tracked worker still running; forgets them.
 * Use as (part of) a cmocka teardown. */
void rt_kill_tracked(void);

/* The cmocka teardown of every test that starts workers: a failed
 * assertion skips the test's own cleanup, so end its workers here. */
int rt_teardown(void **state);

#endif
