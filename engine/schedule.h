/* schedule.h - recurring jobs: a stage's `schedule:` fired once per tick
 * across every process (docs/dsl.md, schedule).
 *
 * Every `sluice run` process that serves a scheduled stage evaluates its
 * schedule (services/scheduler.c); there is no leader. A tick's job is
 * inserted in the same statement as the tick's row of
 * sluice.schedule_ticks, whose primary key (schedule, tick) lets exactly
 * one process win (jobs.h, tick_schedule). What happens to ticks missed
 * while no process ran is the schedule's `missed` rule (cron.h), applied
 * from the last recorded tick.
 */
#ifndef SL_SCHEDULE_H
#define SL_SCHEDULE_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "cron.h"
#include "model.h"

/* The table of recorded ticks, created by `sluice migrate` when a loaded
 * pipeline has a schedule. */
extern const char sl_schedule_ddl[];

/* Non-zero when a stage of m has a schedule. m may be NULL. */
int sl_schedule_any(const sl_model *m);

/* The schedule's name in sluice.schedule_ticks: "pipeline.stage". */
void sl_schedule_name(const sl_stage *st, char *out, size_t len);

/* The last recorded tick of st's schedule (seconds since the epoch) in
 * *last (OUT), -1 when none. Returns 0 or -SL_EDB. */
int sl_schedule_last(PGconn *c, const sl_stage *st, int64_t *last, char *err,
                     size_t errlen);

/* One evaluation of st's schedule (st->schedule not NULL) in zone tz at
 * instant now: the ticks after the last recorded one (or after `since`,
 * the moment this process began, when none is recorded) that the missed
 * rule keeps are enqueued, each at most once across all processes; a
 * tick passed over is recorded without a job. *enqueued (OUT) counts the
 * jobs this call inserted. Returns 0, or a negative SL_E code with the
 * reason in err. */
int sl_schedule_evaluate(PGconn *c, const sl_stage *st, const sl_tz *tz,
                         int64_t since, int64_t now, int *enqueued,
                         char *err, size_t errlen);

#endif
