/* bulk.h - operator actions on every job that matches a filter (the web
 * API's retry, cancel and delete with {"filter": ...}), done in batches
 * of SL_BULK_BATCH rows, one statement (one transaction) each, so that
 * no statement holds many row locks or runs long.
 *
 * Queue names come from the validated model and are quoted; the filter's
 * values are bound parameters. Nothing here prints.
 */
#ifndef SL_BULK_H
#define SL_BULK_H

#include <libpq-fe.h>
#include <stddef.h>

#include "jobs.h"
#include "model.h"

#define SL_BULK_BATCH 500

typedef enum {
    SL_BULK_RETRY,  /* error, cancelled -> retry (as sl_jobs_retry) */
    SL_BULK_CANCEL, /* pending, retry, in_progress -> cancelled */
    SL_BULK_DELETE  /* every job but in_progress ones: deleted */
} sl_bulk_op;

/* Which jobs; every field NULL for "any". */
typedef struct sl_bulk_filter {
    const char *pipeline;    /* only stages of this pipeline */
    const char *stage;       /* only stages of this name */
    const char *status;      /* a job_status value (sl_bulk_valid_status) */
    const char *error_class; /* exactly this error class */
    const char *text;        /* a substring of last_error */
} sl_bulk_filter;

/* 1 when s is a job status name. */
int sl_bulk_valid_status(const char *s);

/* The number of stages of m that filter f covers. */
size_t sl_bulk_stages(const sl_model *m, const sl_bulk_filter *f);

/* Applies op to every job of m that passes f, batch by batch; after each
 * batch calls progress (may be NULL) with the total so far. *changed
 * (OUT) counts the jobs changed, also when an error stops it half way.
 * Returns 0, or -SL_EDB / -SL_ECONN / -SL_ENOTFOUND (a queue table is
 * missing) / -SL_ENOMEM with "WHAT: server message" in err. */
int sl_bulk_apply(PGconn *c, const sl_model *m, sl_bulk_op op,
                  const sl_bulk_filter *f,
                  void (*progress)(long changed, void *arg), void *arg,
                  long *changed, char *err, size_t errlen);

/* Deletes job `id` (a UUID) of model m unless it is in_progress (cancel
 * it first). ref (OUT) as sl_jobs_cancel fills it: stage NULL when there
 * is no such job, status before, changed 1 when deleted. Returns 0 or an
 * error as sl_bulk_apply. */
int sl_bulk_delete_id(PGconn *c, const sl_model *m, const char *id,
                      sl_job_ref *ref, char *err, size_t errlen);

#endif
