/* notify.h - sending alert messages to Slack incoming webhooks and to
 * generic webhooks signed with HMAC-SHA256 (docs/operations.md, "Alerts").
 *
 * One sl_notify per sending thread (it wraps one sl_http client). Each
 * notifier has a token bucket of one message per `min_interval`; a send
 * waits for its token, and retries a refused send with backoff, waiting
 * at least what a 429's Retry-After asks (which also delays the next
 * message). URLs and keys are read from the environment at each send and
 * never appear in messages.
 */
#ifndef SL_NOTIFY_H
#define SL_NOTIFY_H

#include <stdatomic.h>
#include <stddef.h>

#include "alerts.h"

typedef struct sl_notify sl_notify; /* opaque */

/* Creates a sender. stop (may be NULL) is polled while waiting: once
 * non-zero, waits end and sends give up. Returns 0 and *out (free with
 * sl_notify_free), or a negative SL_E code with a message in err. */
int sl_notify_new(sl_notify **out, const atomic_int *stop, char *err,
                  size_t errlen);

void sl_notify_free(sl_notify *n);

/* Sends the n events (n >= 1) to notifier nt as one message: the event's
 * line when n is 1, else a digest of all of them. Returns 0 once a 2xx
 * answer came, else a negative SL_E code with a message in err (the
 * notifier's name, never its URL). */
int sl_notify_send(sl_notify *s, const sl_notifier *nt,
                   const sl_alert_event *ev, size_t n, char *err,
                   size_t errlen);

/* The signature header value of a webhook body: "sha256=" and the hex
 * HMAC-SHA256, keyed by secret, of "<ts>.<body>" (out: 72 bytes). */
void sl_notify_sign(const char *secret, const char *ts, const char *body,
                    size_t len, char out[72]);

#endif
