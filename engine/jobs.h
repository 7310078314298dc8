/* jobs.h - user-facing operations on jobs: enqueue (one job or a batch),
 * cancel, manual retry, and finding a job by id across the queues.
 *
 * This is what `sluice enqueue`, `sluice cancel` and `sluice retry` call,
 * and what tests and embedding programs use to feed a pipeline without the
 * CLI. The worker's own SQL (claim, complete, fail, ...) is in queue.h.
 *
 * Identifiers come from the validated model and are quoted; every value
 * (subject id, column values, priority, run_at, file bytes) is a bound
 * parameter. Column values are given as JSON (see sl_jobs_check_value) and
 * are checked against the stage's declared columns before any SQL runs.
 * Nothing here prints; errors come back as a negative SL_E code with the
 * detail in the caller's buffer.
 */
#ifndef SL_JOBS_H
#define SL_JOBS_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "model.h"

/* The largest file `sluice enqueue --file` (bin_data) accepts: 512 MiB.
 * PostgreSQL itself caps a bytea value at 1 GiB, and a job row is read
 * whole by the worker that claims it. */
#define SL_JOBS_MAX_FILE ((size_t)512 * 1024 * 1024)

/* How many rows sl_jobs_enqueue_batch is meant to take per call (the CLI's
 * --bulk batch size). Larger arrays work; they only cost memory. */
#define SL_JOBS_BATCH 1000

/* Optional settings of one enqueue. Zero-initialise, then set fields. */
typedef struct sl_enqueue_opts {
    int has_priority;       /* 1: use priority, else the stage's default */
    int priority;
    const char *run_at;     /* a timestamptz in PostgreSQL's input syntax
                               ("2030-01-01 12:00+00"), bound; NULL = now */
    int64_t delay_ms;       /* > 0 and run_at NULL: run_at = now() + delay */
    const char *bin_column; /* a declared bytea column set from raw bytes */
    const void *bin_data;   /* borrowed; sent as a binary parameter */
    size_t bin_len;         /* <= SL_JOBS_MAX_FILE */
    /* A unique key (`enqueue --key`): the job is not inserted while a job
     * of the stage with the same key is in the stage's `unique.while`
     * state; that job's id is returned instead. NULL: the key the stage's
     * `unique:` computes from the job's values, or no key without one. */
    const char *key;
    int *existing;          /* OUT (may be NULL): 1 when no new job was
                               inserted (the id returned is the existing
                               job's, or "" after a taken tick), else 0 */
    /* A schedule's tick (schedule.c): the job is inserted only together
     * with the row (tick_schedule, tick) of sluice.schedule_ticks, in the
     * same statement; when another process recorded that tick first,
     * nothing is inserted and *existing is 1. NULL: no tick. */
    const char *tick_schedule;
    int64_t tick;           /* seconds since the epoch */
} sl_enqueue_opts;

/* The declared column `name` of stage s, or NULL. */
const sl_column *sl_jobs_column(const sl_stage *s, const char *name);

/* Checks that JSON value v can be stored in column col:
 *   json/jsonb  any JSON value (JSON null stores SQL NULL);
 *   text[], integer[]  a JSON array, or a string in PostgreSQL array
 *               syntax ("{a,b}");
 *   bytea       a string in PostgreSQL bytea syntax ("\\x6869") -- raw
 *               bytes go through sl_enqueue_opts.bin_data instead;
 *   others      a string, number or boolean (PostgreSQL parses it as the
 *               column's type) or null.
 * Returns 0 or -SL_EINVAL with the reason in err. */
int sl_jobs_check_value(const sl_column *col, const json_t *v, char *err,
                        size_t errlen);

/* Converts the command-line text of `--set COL=VALUE` into the JSON value
 * for column col: JSON text for json/jsonb columns (a bare word that is not
 * JSON is taken as a JSON string), a JSON array or PostgreSQL array syntax
 * for array columns, else the text as a string. *out is a new reference.
 * Returns 0 or -SL_EINVAL. */
int sl_jobs_value_from_text(const sl_column *col, const char *text,
                            json_t **out, char *err, size_t errlen);

/* Checks whether text is a UUID (8-4-4-4-12 hex digits). */
int sl_jobs_is_uuid(const char *text);

/* Inserts one job into the queue of stage s. subject_id is required when
 * the stage's pipeline has a subject (and must name an existing subject
 * row) and must be NULL for standalone queues. columns is NULL or a JSON
 * object mapping declared column names to values (sl_jobs_check_value);
 * o may be NULL. On success writes the new job id (36 characters and NUL)
 * to id_out, which has room for at least 40 bytes.
 * With a unique key (o->key, or the stage's `unique:`), a job with the
 * same key in the stage's `while` state makes this return 0 with that
 * job's id and *o->existing = 1, never a second job, also under
 * concurrent enqueues (the unique-job index decides, ON CONFLICT).
 * Returns 0; -SL_EINVAL for an unknown column, a bad value or a missing /
 * superfluous subject, or a value the server refuses (SQLSTATE class 22,
 * 23 or 54: sl_db_data_error, e.g. a run_at that is no timestamp);
 * -SL_ENOTFOUND when the subject row does not exist; -SL_EDB with the
 * server's message. */
int sl_jobs_enqueue(PGconn *c, const sl_stage *s, const char *subject_id,
                    const json_t *columns, const sl_enqueue_opts *o,
                    char *id_out, char *err, size_t errlen);

/* Checks one batch row: a JSON object with "subject" (a key of the
 * pipeline's key_type, a string or, for bigint/integer keys, a number; required
 * with a subject, forbidden without), optional "columns" (object, as for
 * sl_jobs_enqueue), "priority" (integer) and "run_at" (timestamptz
 * string); no other keys. Returns 0 or -SL_EINVAL. */
int sl_jobs_check_row(const sl_stage *s, const json_t *row, char *err,
                      size_t errlen);

/* Inserts every row of the JSON array `rows` (sl_jobs_check_row) into the
 * queue of stage s with one statement: all of them or none. Run it inside
 * the caller's transaction to make several batches atomic. *inserted is
 * the number of jobs inserted. Returns 0; -SL_EINVAL naming the first bad
 * row ("row 3: ..."; rows count from 1); -SL_ENOTFOUND naming the first
 * row whose subject does not exist (nothing is inserted then); -SL_EINVAL
 * also for a value the server refuses (sl_db_data_error); -SL_EDB.
 * With either error, *bad_row (when not NULL) is that row's number, else
 * 0. */
int sl_jobs_enqueue_batch(PGconn *c, const sl_stage *s, const json_t *rows,
                          long *inserted, size_t *bad_row, char *err,
                          size_t errlen);

/* Transactions around several sl_jobs_enqueue_batch calls (what `sluice
 * enqueue --bulk` does: every line or none). sl_jobs_begin and
 * sl_jobs_commit return 0 or -SL_EDB with "begin: ..." / "commit: ..." in
 * err; sl_jobs_rollback ends a transaction that failed (it cannot fail in
 * a way the caller could act on). */
int sl_jobs_begin(PGconn *c, char *err, size_t errlen);
int sl_jobs_commit(PGconn *c, char *err, size_t errlen);
void sl_jobs_rollback(PGconn *c);

/* Appends the subject id of a job of stage s as SQL text: the queue's
 * subject foreign key cast to text (qualified by alias when not NULL), or
 * NULL::text for a standalone queue. The one rule used by every query that
 * reports a job's subject (jobs.c, reads.c). */
void sl_jobs_subject_expr(sl_buf *b, const sl_stage *s, const char *alias);

/* Where a job is and what an action did to it. */
typedef struct sl_job_ref {
    const sl_stage *stage; /* the job's stage in the model; NULL: no such
                              job in any queue of the model */
    char status[16];       /* status before the action */
    char subject[40];      /* subject id, "" for standalone queues */
    char locked_by[128];   /* the worker running it, "" when none */
    int changed;           /* 1: the action applied to the job */
} sl_job_ref;

/* Finds job `id` in every queue of model m. Returns 0 (ref->stage NULL
 * when not found), -SL_EINVAL when id is not a UUID, -SL_EDB. */
int sl_jobs_find(PGconn *c, const sl_model *m, const char *id,
                 sl_job_ref *ref, char *err, size_t errlen);

/* What cancel and retry write (the SET list of an UPDATE of a queue), the
 * one home of both for single jobs (jobs.c) and batches (bulk.c). The
 * lease stays visible in locked_by (who was running it) but expires at
 * once, and the status change is what the worker's heartbeat and
 * completion check. */
#define SL_JOBS_CANCEL_SET                                                  \
    "status = 'cancelled', finished_at = now(), locked_until = NULL"
#define SL_JOBS_RETRY_SET                                                   \
    "status = 'retry', run_at = now(), attempts = 0, locked_by = NULL,"     \
    " locked_until = NULL, finished_at = NULL"

/* Cancels job `id`: a pending or retry job becomes `cancelled` and never
 * starts; an in_progress job becomes `cancelled` too, and its worker
 * learns at its next heartbeat that it no longer owns the job, tells the
 * handler to stop, and its completion is refused (fencing). Jobs already
 * done, error or cancelled are left alone (ref->changed = 0).
 * Returns as sl_jobs_find. */
int sl_jobs_cancel(PGconn *c, const sl_model *m, const char *id,
                   sl_job_ref *ref, char *err, size_t errlen);

/* Manually retries job `id` when it is in status error or cancelled:
 * status retry, run_at now(), attempts reset to 0 (a manual retry grants a
 * fresh set of attempts), lease cleared; last_error and error_class stay
 * until the job runs. The queue's trigger NOTIFYs the workers. Jobs in any
 * other status are left alone (ref->changed = 0). Returns as
 * sl_jobs_find. */
int sl_jobs_retry(PGconn *c, const sl_model *m, const char *id,
                  sl_job_ref *ref, char *err, size_t errlen);

/* Retries every job of stage s in status error, as sl_jobs_retry does;
 * *n = how many. Returns 0 or -SL_EDB. */
int sl_jobs_retry_failed(PGconn *c, const sl_stage *s, long *n, char *err,
                         size_t errlen);

#endif
