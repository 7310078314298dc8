/* metrics.h - the process's counters and histograms, in Prometheus terms.
 *
 * Every metric is labelled by pipeline and stage (and provider where it
 * applies); none carries a job or subject id, so the series are bounded by
 * the model. The runtime, the services and the stages record; the HTTP
 * server renders (sl_metrics_render). All recording functions are
 * thread-safe and lock-free on the hot path (atomics); recording before
 * sl_metrics_init() or for a stage of another model is a no-op.
 *
 * The names, types and meanings are listed in docs/operations.md.
 */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stdint.h>

#include "buf.h"
#include "model.h"

/* How one attempt at a job ended. */
typedef enum {
    SL_ATTEMPT_SUCCESS,
    SL_ATTEMPT_RETRY,         /* failed, will run again */
    SL_ATTEMPT_FAILED,        /* failed for good: the job is in error */
    SL_ATTEMPT_CANCELLED,     /* cancelled while it ran */
    SL_ATTEMPT_LEASE_EXPIRED, /* its worker died or was cut off; rescued */
    SL_ATTEMPT_SNOOZED,       /* the handler asked to run later */
    SL_ATTEMPT__COUNT
} sl_attempt_outcome;

/* Sets up the per-stage series of m (which must outlive every later call)
 * and records the build information. Call once, before the runtime starts;
 * a second call replaces the first model (the counters restart). */
void sl_metrics_init(const sl_model *m);

/* Releases what sl_metrics_init allocated. */
void sl_metrics_fini(void);

/* n jobs of stage s were enqueued by this process (hand-offs when a job
 * of the stage before it completed). */
void sl_metrics_enqueued(const sl_stage *s, long n);

/* One attempt of a job of s ended with outcome o after run_ms of handler
 * time (run_ms < 0: it did not run, e.g. a rescue). */
void sl_metrics_attempt(const sl_stage *s, sl_attempt_outcome o,
                        int64_t run_ms);

/* The attempts that ended with outcome o across every stage since
 * sl_metrics_init (0 before it): `run --exit-when-idle` exits non-zero
 * when jobs it ran failed for good (SL_ATTEMPT_FAILED). */
long long sl_metrics_attempts_total(sl_attempt_outcome o);

/* A job of s waited wait_ms from when it was due to when it was claimed. */
void sl_metrics_wait(const sl_stage *s, int64_t wait_ms);

/* A subject of pipeline p had its last stage done e2e_ms after its first
 * job was queued. */
void sl_metrics_subject_done(const sl_pipeline *p, int64_t e2e_ms);

/* Worker slots of s: `total` threads, of which `busy` are running jobs. */
void sl_metrics_slots(const sl_stage *s, int total, int busy);

/* A Lua hook of stage s raised an error. */
void sl_metrics_lua_error(const sl_stage *s);

/* The database refused a statement / a connection was re-established. */
void sl_metrics_db_error(void);
void sl_metrics_reconnect(void);

/* One request to an external provider ("assemblyai", "llm", "http", ...:
 * a bounded set named by the handlers) took ms; status is the HTTP status
 * (0 when no answer came). */
void sl_metrics_external(const char *provider, int64_t ms, long status);

/* Appends the whole page in the Prometheus text exposition format
 * (version 0.0.4) to b. */
void sl_metrics_render(sl_buf *b);

#endif
