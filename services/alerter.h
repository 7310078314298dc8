/* alerter.h - the alert evaluator of a `sluice run` / `sluice serve`
 * process: a thread with its own connection that, every
 * `alerts.interval`, tries to be the one evaluator (alerts.h), evaluates
 * the rules and sends what changed, one message (a digest) per notifier
 * per evaluation (notify.h). Sending may wait (token bucket, Retry-After);
 * it never holds up a worker.
 */
#ifndef SL_ALERTER_H
#define SL_ALERTER_H

#include <stddef.h>

#include "model.h"

typedef struct sl_alerter sl_alerter; /* opaque */

/* Starts the evaluator for m (which must outlive it) on the database of
 * conninfo (NULL: DATABASE_URL, else the PG* environment). Sets *out to
 * NULL and returns 0 when m has no alert rules. Returns a negative SL_E
 * code with a message in err when the thread cannot start. */
int sl_alerter_start(const sl_model *m, const char *conninfo,
                     sl_alerter **out, char *err, size_t errlen);

/* Stops the thread (an unfinished send is abandoned) and frees a. NULL is
 * fine. */
void sl_alerter_stop(sl_alerter *a);

/* Sends the events of one evaluation of m: for every notifier, one
 * message with the events of the rules that name it. Returns how many
 * messages failed. Used by the evaluator and by `sluice alerts test`. */
struct sl_notify;
struct sl_alert_event;
int sl_alerter_dispatch(struct sl_notify *s, const sl_model *m,
                        const struct sl_alert_event *ev, size_t n);

#endif
