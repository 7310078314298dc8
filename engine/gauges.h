/* gauges.h - the queue gauges /metrics shows: jobs by status and the age
 * of the oldest due job, per stage.
 *
 * Reading them scans each queue's status index, so one elected process
 * computes them (sl_gauges_elect under a session advisory lock) and the
 * others show only their own counters; see docs/operations.md.
 */
#ifndef SL_GAUGES_H
#define SL_GAUGES_H

#include <libpq-fe.h>
#include <stddef.h>

#include "model.h"

#define SL_GAUGE_STATUSES 6 /* the job_status values */

typedef struct sl_stage_gauges {
    const sl_stage *stage;          /* borrowed from the model */
    long count[SL_GAUGE_STATUSES];  /* by status, in sl_job_status order */
    double oldest_due_s;            /* oldest pending/retry job whose run_at
                                       has passed; 0 when none */
} sl_stage_gauges;

/* Tries to become (or stay) the process that computes the gauges: takes a
 * session-level advisory lock on c. Returns 1 when c holds it, 0 when
 * another process does, -1 on a database error. */
int sl_gauges_elect(PGconn *c);

/* Reads the gauges of stage s into g. Returns 0, or a negative SL_E code
 * with a message in err. */
int sl_gauges_read(PGconn *c, const sl_stage *s, sl_stage_gauges *g,
                   char *err, size_t errlen);


/* The status names are sl_job_status_values (schema.h), in that order. */

#endif
