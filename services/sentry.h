/* sentry.h - a job's final failure as a Sentry event, through the
 * envelope endpoint of the project named by SENTRY_DSN
 * (docs/operations.md, "Sentry").
 *
 * One sender per process: sl_sentry_start() reads SENTRY_DSN and starts a
 * background thread; sl_sentry_job_failed() only formats the event and
 * queues it (a bounded queue; a full queue or an exhausted rate drops the
 * event and counts it), so a worker never waits on the network. Every
 * string of the event passes the sanitiser (text.h): secrets from the
 * environment are redacted as in the logs.
 */
#ifndef SL_SENTRY_H
#define SL_SENTRY_H

#include <stddef.h>

#include "model.h"

/* Parses a DSN "SCHEME://KEY[:SECRET]@HOST[:PORT]/[PATH/]PROJECT" into the
 * envelope URL "SCHEME://HOST[:PORT]/[PATH/]api/PROJECT/envelope/" and the
 * public key. Returns 0, or -SL_EINVAL with the reason in err (never the
 * key). */
int sl_sentry_parse_dsn(const char *dsn, char *url, size_t urllen, char *key,
                        size_t keylen, char *err, size_t errlen);

/* Starts the sender when SENTRY_DSN is set and not empty (returns 0 and
 * does nothing otherwise). Returns a negative SL_E code with a message in
 * err for an invalid DSN or a thread that cannot start. */
int sl_sentry_start(char *err, size_t errlen);

/* Sends what is queued (waiting at most drain_ms), then stops the
 * thread. Nothing when not started. */
void sl_sentry_stop(long drain_ms);

/* Queues the event of a job of stage s that failed for good. Never
 * blocks; a no-op when the sender is not started. Matches the runtime's
 * on_final_failure callback (runtime.h); arg is unused. */
void sl_sentry_job_failed(const sl_stage *s, const char *job_id,
                          const char *subject_id, const char *errclass,
                          int attempts, const char *message, void *arg);

#endif
