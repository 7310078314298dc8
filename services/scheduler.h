/* scheduler.h - the schedule evaluator of a `sluice run` process: a
 * thread with its own connection that evaluates the schedules of the
 * stages this process serves (schedule.h) at every tick, and once at
 * start for the ticks missed while no process ran. Every process does
 * this; the database lets one of them enqueue each tick.
 */
#ifndef SL_SCHEDULER_H
#define SL_SCHEDULER_H

#include <stddef.h>

#include "model.h"

typedef struct sl_scheduler sl_scheduler; /* opaque */

/* Starts the evaluator for the scheduled stages of m picked by the n
 * names in `only` (sl_stage_selected; n 0: all), on the database of
 * conninfo (NULL: DATABASE_URL, else the PG* environment). m must
 * outlive it. Sets *out to NULL and returns 0 when no picked stage has a
 * schedule. Returns a negative SL_E code with a message in err when a
 * time zone cannot be read or the thread cannot start. */
int sl_scheduler_start(const sl_model *m, const char *const *only, size_t n,
                       const char *conninfo, sl_scheduler **out, char *err,
                       size_t errlen);

/* Stops the thread and frees s. NULL is fine. */
void sl_scheduler_stop(sl_scheduler *s);

#endif
