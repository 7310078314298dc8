/* queue.h - every SQL statement the runtime runs against the queue tables.
 *
 * All queue SQL lives in queue.c, built once per stage from the model and
 * prepared once per connection (sl_queue_prepare). Values are always bound
 * parameters; identifiers come from the validated model and are quoted.
 *
 * Errors: every operation returns 0, -SL_ECONN when the connection was
 * lost (reconnect and repeat), -SL_EINVAL when the values do not fit the
 * table (SQLSTATE class 22/23: say, an output that is not a valid integer),
 * -SL_ELEASE when fenced off (see below), or -SL_EDB for any other server
 * error (a statement timeout, a deadlock: usually worth repeating).
 *
 * Fencing: a claimed job is owned by (locked_by, attempts). Every write a
 * worker makes to a job it claimed carries both; when another worker has
 * rescued the job, or it was cancelled, the write matches no row and is
 * refused (-SL_ELEASE).
 */
#ifndef SL_QUEUE_H
#define SL_QUEUE_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* One claimed job as the worker keeps it. Strings are owned by the job
 * (sl_queue_job_clear frees them). */
typedef struct sl_qjob {
    char id[40];
    char subject[40]; /* "" for standalone queues */
    int attempts;     /* after the claim: 1 on the first attempt */
    json_t *input;    /* declared columns as JSON (owned) */
    json_t *checkpoint; /* owned, NULL when none */
    int64_t wait_ms;    /* from when it was due to the claim (the server's
                           clock); 0 when unknown */
    char undecodable[200]; /* non-empty: the input or checkpoint could not
                              be decoded without loss (the reason); the
                              job must fail, never run on altered data */
} sl_qjob;

void sl_queue_job_clear(sl_qjob *j);

/* Prepares the statements of every stage in the model on connection c.
 * Returns 0 or -SL_EDB with the server's message in err. */
int sl_queue_prepare(PGconn *c, const sl_model *m, char *err, size_t errlen);

/* Prepares the statements of stage s only (what `run -s` needs: another
 * stage's table may be missing). Same returns as sl_queue_prepare. */
int sl_queue_prepare_stage(PGconn *c, const sl_stage *s, char *err,
                           size_t errlen);

/* sl_queue_prepare for the stages picked by the nonly names in `only`
 * (sl_stage_selected; nonly 0: every stage), as `sluice run -s` needs: an
 * unselected queue need not exist. Their statements still name the
 * queues they hand off to. */
int sl_queue_prepare_stages(PGconn *c, const sl_model *m,
                            const char *const *only, size_t nonly, char *err,
                            size_t errlen);

/* Claims up to max jobs of stage s for worker `owner` with a lease of
 * lease_ms: FOR UPDATE SKIP LOCKED, by priority then run_at; counts the
 * attempt; applies the stage's on_start mapping to the subjects, all in one
 * statement. Fills jobs[0..*n). Returns 0 or -SL_EDB. */
int sl_queue_claim(PGconn *c, const sl_stage *s, const char *owner, int max,
                   sl_qjob *jobs, int *n, char *err, size_t errlen);

/* The same claim without reading the inputs (input = NULL), for when the
 * full claim fails with -SL_EINVAL because one job's input cannot be built
 * (say, larger than jsonb can hold): the worker then reads each input with
 * sl_queue_input and fails only the job whose input is unreadable. */
int sl_queue_claim_bare(PGconn *c, const sl_stage *s, const char *owner,
                        int max, sl_qjob *jobs, int *n, char *err,
                        size_t errlen);

/* Reads job j's declared columns into j->input. */
int sl_queue_input(PGconn *c, const sl_stage *s, sl_qjob *j, char *err,
                   size_t errlen);

/* Who asked for job `id`: its requested_by (the application user whose
 * session inserted it, or whose job handed off to it), copied into out
 * (OUT: a uuid, or "" when the engine or the owner inserted it). Returns 0,
 * -SL_ELEASE when the job no longer exists, or an error as above. */
int sl_queue_requester(PGconn *c, const sl_stage *s, const char *id,
                       char out[40], char *err, size_t errlen);

/* One finished job for sl_queue_complete. */
typedef struct sl_qdone {
    const sl_qjob *job;
    const json_t *outputs; /* JSON object; NULL = {} */
    int completed;         /* OUT: 1 when committed, 0 when fenced off */
    int64_t subject_ms;    /* OUT: since the subject's first job of this
                              run through the pipeline was queued */
} sl_qdone;

/* Completes a batch in one statement (one transaction): each job done with
 * its outputs written into the declared columns of the same name, the next
 * stages' jobs inserted (deduplicated by "from:<job id>"), the subjects'
 * on_done mapping applied. Jobs this worker no longer owns are left alone
 * and reported with completed = 0. Returns 0 or -SL_EDB. */
int sl_queue_complete(PGconn *c, const sl_stage *s, const char *owner,
                      sl_qdone *done, int n, char *err, size_t errlen);

/* Fails a job: status `retry` with run_at = now() + delay_ms when retry is
 * set, else `error` with the subject's on_error mapping. message is stored
 * in last_error (already redacted by the caller). Returns 0, -SL_ELEASE
 * when fenced off, or -SL_EDB. */
int sl_queue_fail(PGconn *c, const sl_stage *s, const char *owner,
                  const sl_qjob *j, int retry, int64_t delay_ms,
                  const char *errclass, const char *message, char *err,
                  size_t errlen);

/* Releases a job to run again after delay_ms without using an attempt
 * (snooze, or shutdown with release = 1). Returns 0, -SL_ELEASE, -SL_EDB. */
int sl_queue_snooze(PGconn *c, const sl_stage *s, const char *owner,
                    const sl_qjob *j, int64_t delay_ms, char *err,
                    size_t errlen);

/* Saves a checkpoint (committed at once) and extends the lease. */
int sl_queue_checkpoint(PGconn *c, const sl_stage *s, const char *owner,
                        const sl_qjob *j, const json_t *checkpoint, char *err,
                        size_t errlen);

/* Writes the job's progress/detail and the subject's mapped progress
 * (pct is the handler's 0..100). */
int sl_queue_progress(PGconn *c, const sl_stage *s, const char *owner,
                      const sl_qjob *j, int pct, const char *detail,
                      char *err, size_t errlen);

/* Extends the leases of the given jobs (ids) owned by owner; sets
 * still_owned[i] to 1 for each job still in progress under owner (0: it
 * was rescued or cancelled: tell the handler to stop). */
int sl_queue_heartbeat(PGconn *c, const sl_stage *s, const char *owner,
                       const char *const *ids, int n, int *still_owned,
                       char *err, size_t errlen);

/* Rescues jobs whose lease expired: back to `retry` (run now) or to
 * `error` when their attempts are exhausted or lease_expired does not
 * retry. *rescued = number of jobs moved. */
int sl_queue_rescue(PGconn *c, const sl_stage *s, int *rescued, char *err,
                    size_t errlen);

/* Milliseconds until the earliest runnable job of the stage (0 when one is
 * due now, -1 when none is waiting). */
int sl_queue_next_due(PGconn *c, const sl_stage *s, int64_t *ms, char *err,
                      size_t errlen);

/* Announces, on the stage's channel, pending jobs older than
 * pipeline->sweep_age_ms (their NOTIFY may have been missed). *stale =
 * how many there were. */
int sl_queue_reannounce(PGconn *c, const sl_stage *s, int *stale, char *err,
                        size_t errlen);

/* Number of jobs of the stage not yet finished (pending, retry,
 * in_progress). */
int sl_queue_unfinished(PGconn *c, const sl_stage *s, long *n, char *err,
                        size_t errlen);

/* Jobs one purge statement deletes at most (one short transaction). */
#define SL_PURGE_BATCH 500

/* Applies stage s's retention policy: deletes the jobs of each final
 * status (done, error, cancelled) that finished longer ago than the
 * stage keeps them, SL_PURGE_BATCH rows per statement (each its own
 * transaction, skipping rows another transaction holds), until none is
 * left or budget_ms has passed (<= 0: no budget). Pending, retrying and
 * running jobs are never touched. With s->retention_history the jobs
 * are moved to the stage's history table (every column) by the same
 * statement instead. counts[st] (OUT) is how many jobs of
 * each status went (with dry_run: would go; nothing is deleted); *more
 * (OUT) is 1 when the budget ran out first. A status the stage keeps
 * forever counts 0. Returns 0 or an error as above. */
int sl_queue_purge(PGconn *c, const sl_stage *s, int dry_run,
                   int64_t budget_ms, long counts[SL_RETAIN__COUNT],
                   int *more, char *err, size_t errlen);

/* Non-zero when stage s removes finished jobs of some status. */
int sl_queue_has_retention(const sl_stage *s);

#endif
