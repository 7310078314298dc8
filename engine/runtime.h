/* runtime.h - the worker runtime: threads that claim and run jobs.
 *
 * sl_runtime_run() starts, per selected stage, `concurrency` worker threads,
 * each with its own connection and handler state, plus one control thread
 * whose connection LISTENs on every stage's channel and wakes workers,
 * extends the leases of running jobs (heartbeats), rescues jobs whose
 * lease expired and re-announces pending jobs whose NOTIFY was missed (the
 * sweep). It returns when stopped (sl_runtime_request_stop, SIGTERM/SIGINT
 * when the caller installs sl_runtime_install_signals) after draining, or,
 * with exit_when_idle, when no job of the selected stages is unfinished.
 */
#ifndef SL_RUNTIME_H
#define SL_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef struct sl_runtime_opts {
    const char *conninfo;   /* NULL or "": DATABASE_URL, else libpq env */
    const char *worker_id;  /* NULL: "<host>:<pid>" */
    const char *const *only; /* stage or queue names to run; NULL = all */
    size_t nonly;
    int exit_when_idle;     /* return once nothing is left to do */
    int64_t drain_ms;       /* on stop: let running jobs finish this long */
    int concurrency;        /* > 0: overrides every stage's concurrency */
    int batch;              /* > 0: overrides every stage's batch size */
    int64_t progress_throttle_ms; /* min interval between progress writes;
                                     0 = default 250 ms */
    int async_commit;       /* SET synchronous_commit = off on worker
                               connections: faster completions; a server
                               crash may undo the last ones (their jobs then
                               run again: docs/performance.md) */
    /* Optional, called on the control thread: "ready" once the workers
     * run and LISTEN is established, "tick" on every turn of the control
     * loop (at least once a second), "stopping" when a stop was
     * requested. For systemd's sd_notify and the like; must not block. */
    void (*on_event)(const char *event, void *arg);
    void *event_arg;
    /* Optional, called on a worker thread once a job's failure is final
     * (recorded as `error`, no retry left): for Sentry and the like. The
     * strings are borrowed for the call; message is already made safe
     * (text.h). subject_id is "" for standalone queues. Must not block. */
    void (*on_final_failure)(const sl_stage *s, const char *job_id,
                             const char *subject_id, const char *errclass,
                             int attempts, const char *message, void *arg);
    void *failure_arg;
} sl_runtime_opts;

/* What /healthz and /readyz read while sl_runtime_run() runs. */
typedef struct sl_runtime_health_t {
    int64_t last_tick_ms; /* sl_now_ms() of the control loop's last turn,
                             0 before the runtime started */
    int listening;        /* the control connection LISTENs */
} sl_runtime_health_t;

/* Fills h (thread-safe, lock-free). */
void sl_runtime_health(sl_runtime_health_t *h);

/* Runs until stopped. Returns 0 on a clean stop, or a negative SL_E code
 * with a message in err when it could not start (no database, no
 * handler for a stage, ...). Connection losses while running are not
 * errors: they are retried with backoff. */
int sl_runtime_run(const sl_model *m, const sl_runtime_opts *o, char *err,
                   size_t errlen);

/* Asks a running runtime to stop (drain, then return). Async-signal-safe. */
void sl_runtime_request_stop(void);

/* Installs SIGTERM/SIGINT handlers that call sl_runtime_request_stop;
 * a second signal stops at once without waiting for the drain. */
void sl_runtime_install_signals(void);

/* The retry delay for a job that failed on attempt `attempt` (1-based)
 * under policy r, before Retry-After; `unit` in [0,1) is the jitter draw.
 * Exposed for tests of the policy. */
int64_t sl_runtime_backoff_ms(const sl_retry *r, int attempt, double unit);

#endif
