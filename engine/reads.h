/* reads.h - the read side: what `sluice status`, `watch`, `jobs` and
 * `stats` show (a subject and its jobs, one job, a listing across queues,
 * the per-queue statistics) and the LISTEN that lets a reader follow a
 * subject.
 *
 * Table and column names come from the validated model and are quoted
 * (sl_buf_ident); every value (ids, filters, limits) is a bound parameter.
 * Nothing here prints. A function that returns a PGresult through an OUT
 * parameter hands it to the caller, who frees it with PQclear; its columns
 * are the ones named by the enum next to it, all in text format.
 *
 * Errors: -SL_EDB with "WHAT: server message" in err; -SL_ENOTFOUND when
 * a table the pipelines name does not exist (SQLSTATE 42P01: the schema
 * was not migrated), with the same text; -SL_ENOMEM.
 */
#ifndef SL_READS_H
#define SL_READS_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* The columns of sl_reads_subject: the subject's status, progress and
 * detail as text (progress and detail NULL when the pipeline maps no such
 * column, or the row holds NULL). */
enum { SL_SUBJ_STATUS, SL_SUBJ_PROGRESS, SL_SUBJ_DETAIL };

/* Reads the subject row `id` (a key of p's subject.key_type, checked by
 * the caller with sl_key_canon) of pipeline p, which has a subject.
 * *out (OUT: caller PQclears) holds one row, or none when the row does not
 * exist. Returns 0 or an error (above; WHAT is the subject table). */
int sl_reads_subject(PGconn *c, const sl_pipeline *p, const char *id,
                     PGresult **out, char *err, size_t errlen);

/* The columns of sl_reads_subject_jobs and sl_reads_job: one job with its
 * timings. TOOK is the run time in seconds (finished, or so far for a
 * running job; NULL when it never started); RUNS_IN the seconds until a
 * waiting job's run_at (NULL when due or not waiting); SUBJECT the
 * subject id (NULL for standalone queues). Times are timestamptz(0);
 * the *_UTC columns are the same times as RFC 3339 in UTC with
 * milliseconds, for JSON. */
enum {
    SL_JOB_ID,
    SL_JOB_STATUS,
    SL_JOB_ATTEMPTS,
    SL_JOB_LAST_ERROR,
    SL_JOB_ERROR_CLASS,
    SL_JOB_CREATED,
    SL_JOB_STARTED,
    SL_JOB_FINISHED,
    SL_JOB_TOOK,
    SL_JOB_RUN_AT,
    SL_JOB_RUNS_IN,
    SL_JOB_DETAIL,
    SL_JOB_PROGRESS,
    SL_JOB_LOCKED_BY,
    SL_JOB_SUBJECT,
    SL_JOB_CREATED_UTC,
    SL_JOB_STARTED_UTC,
    SL_JOB_FINISHED_UTC,
    SL_JOB_RUN_AT_UTC
};

/* The jobs of stage s (whose pipeline has a subject) for subject `id`,
 * oldest first. *out as above (OUT: caller PQclears). Returns 0 or an
 * error (WHAT is the queue). */
int sl_reads_subject_jobs(PGconn *c, const sl_stage *s, const char *id,
                          PGresult **out, char *err, size_t errlen);

/* Job `id` in the queue of stage s: one row, or none. *out as above
 * (OUT: caller PQclears). Returns 0 or an error (WHAT is the queue). */
int sl_reads_job(PGconn *c, const sl_stage *s, const char *id, PGresult **out,
                 char *err, size_t errlen);

/* How the jobs of one subject stand across its pipeline's stages. */
typedef struct sl_job_counts {
    long total;      /* every job of the subject */
    long unfinished; /* pending, retry or in_progress */
    long error;      /* in status error */
    long cancelled;  /* in status cancelled */
    long final_done; /* done in a stage with no next stage */
} sl_job_counts;

/* Counts the jobs of subject `id` in every stage of pipeline p (which has
 * a subject) into *n (OUT). Returns 0 or an error (WHAT is "reading the
 * subject's jobs"). */
int sl_reads_subject_counts(PGconn *c, const sl_pipeline *p, const char *id,
                            sl_job_counts *n, char *err, size_t errlen);

/* The columns of sl_reads_last_failure: the index of the job's stage in
 * p->stages, the job id, attempts, last_error and error_class. */
enum {
    SL_FAIL_STAGE,
    SL_FAIL_ID,
    SL_FAIL_ATTEMPTS,
    SL_FAIL_LAST_ERROR,
    SL_FAIL_ERROR_CLASS
};

/* The subject's most recently finished job in status error across the
 * stages of pipeline p: one row, or none. *out as above (OUT: caller
 * PQclears). Returns 0 or an error (WHAT is "reading the failed job"). */
int sl_reads_last_failure(PGconn *c, const sl_pipeline *p, const char *id,
                          PGresult **out, char *err, size_t errlen);

/* LISTENs on the subject channel of pipeline p (which has one), so that
 * the NOTIFYs of its subject trigger reach c. Returns 0 or an error (WHAT
 * is "listen"). */
int sl_reads_listen_subject(PGconn *c, const sl_pipeline *p, char *err,
                            size_t errlen);

/* What sl_reads_jobs lists; set every field. */
typedef struct sl_jobs_filter {
    const sl_stage *stage; /* only this stage's queue; NULL: every queue */
    const char *status;    /* only jobs in this status; NULL: any */
    int64_t older_ms;      /* >= 0: created more than this long ago;
                              < 0: any age */
    long limit;            /* at most this many rows; >= 1 */
    int history;           /* 1: list the history tables of the stages
                              with `retention: {history: true}` instead
                              of the queues; 0: the queues */
} sl_jobs_filter;

/* The columns of sl_reads_jobs. ATTEMPTS is "attempts/max"; AGE and
 * RUNS_IN are seconds (float8; RUNS_IN NULL unless the job waits for a
 * later run_at); PRIORITY is an integer. The last four serve JSON output:
 * ATTEMPTS_N and MAX_ATTEMPTS as integers, CREATED_AT and RUN_AT as RFC
 * 3339 text in UTC ("2025-05-01T10:00:02.123Z"). */
enum {
    SL_LIST_QUEUE,
    SL_LIST_ID,
    SL_LIST_SUBJECT,
    SL_LIST_STATUS,
    SL_LIST_ATTEMPTS,
    SL_LIST_PRIORITY,
    SL_LIST_AGE,
    SL_LIST_RUNS_IN,
    SL_LIST_ERROR_CLASS,
    SL_LIST_LAST_ERROR,
    SL_LIST_ATTEMPTS_N,
    SL_LIST_MAX_ATTEMPTS,
    SL_LIST_CREATED_AT,
    SL_LIST_RUN_AT
};

/* The number of queues (or, with f->history, history tables) a listing
 * with filter f covers in model m (0: there are none, and sl_reads_jobs
 * must not be called). */
size_t sl_reads_jobs_queues(const sl_model *m, const sl_jobs_filter *f);

/* Lists the jobs of model m that pass f, newest first (ties by id), at
 * most f->limit. The model must have at least one queue
 * (sl_reads_jobs_queues). *out as above (OUT: caller PQclears). Returns 0
 * or an error (WHAT is "list jobs"). */
int sl_reads_jobs(PGconn *c, const sl_model *m, const sl_jobs_filter *f,
                  PGresult **out, char *err, size_t errlen);

/* What sl_reads_jobs_page lists (the web API's job list); zero-initialise
 * and set fields. Every text filter is NULL for "any". */
typedef struct sl_jobs_query {
    const char *pipeline;    /* only stages of this pipeline */
    const char *stage;       /* only stages of this name */
    const char *status;      /* a job_status value */
    const char *error_class; /* exactly this error class */
    const char *subject;     /* a subject key; only the queues whose key
                                type can hold it are read */
    const char *text;        /* a substring of last_error */
    const char *after_ts;    /* keyset cursor: jobs older than (after_ts,
                                after_id) in the order created_at DESC, id
                                DESC; both set or both NULL */
    const char *after_id;
    long limit;              /* >= 1 */
} sl_jobs_query;

/* The columns of sl_reads_jobs_page: the queue, the job's id, subject
 * (NULL for standalone queues), status, attempts, max_attempts, priority,
 * error_class, last_error, created_at, run_at, finished_at (RFC 3339 in
 * UTC with milliseconds), then CURSOR, created_at with microseconds, which
 * with the id is the cursor of the next page. */
enum {
    SL_PAGE_QUEUE,
    SL_PAGE_ID,
    SL_PAGE_SUBJECT,
    SL_PAGE_STATUS,
    SL_PAGE_ATTEMPTS,
    SL_PAGE_MAX_ATTEMPTS,
    SL_PAGE_PRIORITY,
    SL_PAGE_ERROR_CLASS,
    SL_PAGE_LAST_ERROR,
    SL_PAGE_CREATED_AT,
    SL_PAGE_RUN_AT,
    SL_PAGE_FINISHED_AT,
    SL_PAGE_CURSOR
};

/* The number of queues of model m that query q covers. */
size_t sl_reads_page_queues(const sl_model *m, const sl_jobs_query *q);

/* One page of the jobs of model m that pass q, newest first (created_at
 * DESC, id DESC), at most q->limit rows; covers at least one queue
 * (sl_reads_page_queues). Each queue's branch stops at limit rows, so a
 * page costs limit rows per queue however many finished jobs the queue
 * keeps. *out as above (OUT: caller PQclears). Returns 0 or an error
 * (WHAT is "list jobs"; -SL_EINVAL when the server refuses a value, such
 * as a cursor that is not a timestamp). */
int sl_reads_jobs_page(PGconn *c, const sl_model *m, const sl_jobs_query *q,
                       PGresult **out, char *err, size_t errlen);

/* The declared columns (inputs) of job `id` in the queue of stage s as one
 * JSON object in text: one row, or none. *out as above (OUT: caller
 * PQclears). Returns 0 or an error (WHAT is the queue). */
int sl_reads_job_inputs(PGconn *c, const sl_stage *s, const char *id,
                        PGresult **out, char *err, size_t errlen);

/* The columns of sl_reads_stats: the queue, its counts of pending,
 * in_progress, retry, done, error and cancelled jobs (the last three
 * exact up to 10,000, estimated from the table's statistics beyond:
 * docs/cli.md), then the age of the oldest due pending job and the mean
 * run time of the last 1,000 done jobs, in seconds (float8, NULL when
 * there is none). */
enum {
    SL_STAT_QUEUE,
    SL_STAT_PENDING,
    SL_STAT_IN_PROGRESS,
    SL_STAT_RETRY,
    SL_STAT_DONE,
    SL_STAT_ERROR,
    SL_STAT_CANCELLED,
    SL_STAT_OLDEST_PENDING,
    SL_STAT_MEAN_RUN
};

/* Reads the sluice_statistics view, one row per queue by queue name. *out
 * as above (OUT: caller PQclears). Returns 0 or an error (WHAT is "read
 * sluice_statistics"). */
int sl_reads_stats(PGconn *c, PGresult **out, char *err, size_t errlen);

/* The connections a client such as sluice may open on the server behind
 * c: max_connections less superuser_reserved_connections and, from
 * PostgreSQL 16, reserved_connections, into *n (OUT). Returns 0 or an
 * error (WHAT is "read max_connections"). */
int sl_reads_max_connections(PGconn *c, long *n, char *err, size_t errlen);

/* The role c is connected as: its name into role (rolelen bytes) and
 * whether it is a superuser or has BYPASSRLS (*privileged, OUT: 1 or 0;
 * *what, OUT: "superuser" or "role with BYPASSRLS" when it is). Returns 0
 * or -SL_EDB/-SL_ECONN with the reason in err. */
int sl_reads_role(PGconn *c, char *role, size_t rolelen, int *privileged,
                  const char **what, char *err, size_t errlen);

#endif
