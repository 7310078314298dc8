/* events.h - live subject events as server-sent events (SSE) for the
 * progress widget: GET /api/subjects/PIPELINE/ID/events.
 *
 * One thread holds ONE database connection that LISTENs on the subject
 * channel of every pipeline that has one. Subject NOTIFYs carry no payload
 * (docs/schema.md), so on each one the thread re-reads the rows of the
 * subjects that streams follow on that pipeline (once per subject however
 * many streams follow it) and sends an event to each stream whose state
 * changed. Streams are libmicrohttpd connections suspended while they
 * have nothing to send (MHD_suspend_connection) and resumed by the thread:
 * no thread per stream.
 *
 * An event carries exactly what the subject row shows:
 *     id: <hash of the state>
 *     event: status
 *     data: {"status": "...", "progress": 40, "detail": "..."}
 * A new stream gets the current state first, unless its Last-Event-ID
 * names that very state (a reconnecting client that saw it). Every ~15 s
 * of silence a ": ping" comment is sent. After the LISTEN connection is
 * re-established every stream's subject is read again, so a client never
 * misses a final status (it may miss intermediate ones).
 */
#ifndef SL_EVENTS_H
#define SL_EVENTS_H

#include <microhttpd.h>
#include <stddef.h>

#include "db.h"
#include "model.h"

typedef struct sl_events sl_events;

/* Starts the thread. m is borrowed and outlives the streams. Returns 0
 * and *out, or -SL_ENOMEM with a message in err. */
int sl_events_start(const sl_model *m, sl_dbsource db, sl_events **out,
                    char *err, size_t errlen);

/* Answers GET /api/subjects/PIPELINE/ID/events (rest is "PIPELINE/ID",
 * query and headers read from conn): checks the subject token (?token=,
 * webauth.h) or an operator's Bearer token, and starts the stream, or
 * answers a JSON error (400, 401, 404). Called on the server's thread. */
enum MHD_Result sl_events_open(sl_events *ev, struct MHD_Connection *conn,
                               const char *pipeline, const char *id);

/* Answers GET /api/events, the dashboard's stream: needs the read or
 * admin token (Authorization: Bearer, or ?token=). Sends `job` events
 * (id: a number; data {"pipeline","stage","queue","id","status"}) for
 * every job transition the queues show (read every 250 ms, at once after
 * a stage's NOTIFY, with a 2 s overlap so that late commits are not
 * lost), and `counts` events (data: the body of GET /api/pipelines) when
 * they changed, at most once a second, and first thing. Last-Event-ID
 * replays the job events after it from a ring of the last 4096; when it
 * is older, an `event: reset` says to reload. Called on the server's
 * thread. */
enum MHD_Result sl_events_open_dash(sl_events *ev,
                                    struct MHD_Connection *conn);

/* Ends every stream (they see the end of the body) and stops the thread;
 * call before MHD_stop_daemon. sl_events_free after MHD_stop_daemon. */
void sl_events_shutdown(sl_events *ev);
void sl_events_free(sl_events *ev);

/* The number of open streams (the sluice_event_streams gauge). */
size_t sl_events_streams(sl_events *ev);

#endif
