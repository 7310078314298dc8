/* ops.h - the operators' state in the database, beside the queues: the
 * registry of live worker processes (sluice.workers), paused stages
 * (sluice.paused) and the per-minute statistics rollup
 * (sluice.stats_minute). `sluice migrate` creates the three tables
 * (sl_ops_ddl, run with the migration history's tables).
 *
 * Values are always bound parameters; queue names come from the validated
 * model and are quoted. Nothing here prints. A function that returns a
 * PGresult through an OUT parameter hands it to the caller (PQclear), its
 * columns named by the enum next to it, all text.
 *
 * Errors: -SL_EDB with "WHAT: server message" in err; -SL_ENOTFOUND when
 * the table does not exist (SQLSTATE 42P01: run `sluice migrate`);
 * -SL_ECONN when the connection is gone; -SL_ENOMEM.
 */
#ifndef SL_OPS_H
#define SL_OPS_H

#include <libpq-fe.h>
#include <stddef.h>

#include "model.h"

/* The DDL of the three tables (CREATE ... IF NOT EXISTS). */
extern const char *const sl_ops_ddl;

/* The channel a pause or resume NOTIFYs (payload "PIPELINE.STAGE"):
 * running workers LISTEN on it and re-read sluice.paused. */
#define SL_OPS_CHANNEL "sluice_control"

/* A worker after this long without a heartbeat is shown as not alive. */
#define SL_OPS_ALIVE_S 30
/* How often a running worker writes its heartbeat row. */
#define SL_OPS_BEAT_MS 5000

/* One worker process as the registry holds it. */
typedef struct sl_ops_worker {
    const char *id;      /* "<host>:<pid>" or --worker-id */
    const char *host;
    int pid;
    const char *version;
    const char *stages;  /* a JSON array of "pipeline.stage" names */
    int concurrency;     /* worker threads in all */
} sl_ops_worker;

/* Writes w's row (insert, or on a known id refresh every field but
 * started_at) with heartbeat_at = now(); also deletes the rows of workers
 * silent for a day. Returns 0 or an error (above). */
int sl_ops_worker_beat(PGconn *c, const sl_ops_worker *w, char *err,
                       size_t errlen);

/* Removes worker id's row (a clean exit). Returns 0 or an error. */
int sl_ops_worker_remove(PGconn *c, const char *id, char *err, size_t errlen);

/* The columns of sl_ops_workers: id, host, pid, version, stages (JSON
 * array text), concurrency, started_at and heartbeat_at (RFC 3339, UTC),
 * alive ("t"/"f": a heartbeat within SL_OPS_ALIVE_S). */
enum {
    SL_WK_ID,
    SL_WK_HOST,
    SL_WK_PID,
    SL_WK_VERSION,
    SL_WK_STAGES,
    SL_WK_CONCURRENCY,
    SL_WK_STARTED,
    SL_WK_HEARTBEAT,
    SL_WK_ALIVE
};

/* Every registered worker, the most recently started first. *out (OUT:
 * caller PQclears). Returns 0 or an error. */
int sl_ops_workers(PGconn *c, PGresult **out, char *err, size_t errlen);

/* Pauses (paused = 1) or resumes stage s, recording who, and NOTIFYs
 * SL_OPS_CHANNEL in the same statement. Returns 0 or an error. */
int sl_ops_pause(PGconn *c, const sl_stage *s, int paused, const char *who,
                 char *err, size_t errlen);

/* The paused stages: columns pipeline, stage. *out (OUT: caller
 * PQclears). Returns 0 or an error. */
int sl_ops_paused(PGconn *c, PGresult **out, char *err, size_t errlen);

/* 1 when rows r of sl_ops_paused (NULL: none) hold stage s. */
int sl_ops_is_paused(const PGresult *r, const sl_stage *s);

/* Recomputes the rollup rows of every stage of m for the minutes from
 * `minutes` ago (rounded down to the minute) until now: jobs that finished
 * done or error per minute, and the 50th/95th percentiles of their run
 * time (finished_at - started_at) and wait (started_at - run_at), in ms.
 * A queue whose table is missing is skipped. The caller holds the
 * election (sl_db_elect). Returns 0 or an error. */
int sl_ops_rollup(PGconn *c, const sl_model *m, int minutes, char *err,
                  size_t errlen);

/* The columns of sl_ops_stats: minute (RFC 3339), pipeline, stage, done,
 * failed, run_p50_ms, run_p95_ms, wait_p50_ms, wait_p95_ms (NULL when no
 * job finished that minute). */
enum {
    SL_ST_MINUTE,
    SL_ST_PIPELINE,
    SL_ST_STAGE,
    SL_ST_DONE,
    SL_ST_FAILED,
    SL_ST_RUN_P50,
    SL_ST_RUN_P95,
    SL_ST_WAIT_P50,
    SL_ST_WAIT_P95
};

/* The rollup rows of the last `minutes` minutes, oldest first, of
 * pipeline and stage (NULL: any). *out (OUT: caller PQclears). Returns 0
 * or an error. */
int sl_ops_stats(PGconn *c, const char *pipeline, const char *stage,
                 int minutes, PGresult **out, char *err, size_t errlen);

/* The columns of sl_ops_transitions: queue, job id, status, updated_at
 * (RFC 3339 with microseconds, UTC), then NOW in the same format (the
 * next call's `since`): the statement's now(), or the start of the oldest
 * transaction that writes in this database (as far as this role may see
 * it in pg_stat_activity; at most 25 s back), whose rows may commit
 * later with that time in updated_at. */
enum { SL_TR_QUEUE, SL_TR_ID, SL_TR_STATUS, SL_TR_UPDATED, SL_TR_NOW };

/* The jobs of every queue of m whose row changed (updated_at) after
 * `since` less 2 s (RFC 3339 text; NULL: now): the overlap catches a
 * transaction that committed after the previous call although its now()
 * was earlier, so callers drop what they have seen. Oldest change first, at most
 * `limit`: pending, retry and in_progress jobs through the claim and
 * lease indexes, finished ones through the finished index, so a call
 * costs the changed rows, not the table. *out (OUT: caller PQclears).
 * With after_id (a call cut at `limit`: since and after_id are its last
 * row's updated_at and id) it reads exactly the rows after that one, in
 * (updated_at, id) order, with no overlap.
 * Queues whose table is missing are left out. When nothing changed the
 * result is one row with NULL in all but NOW. Returns 0 or an error. */
int sl_ops_transitions(PGconn *c, const sl_model *m, const char *since,
                       const char *after_id, int limit, PGresult **out,
                       char *err, size_t errlen);

#endif
