/* dash.h - what the dashboard's event stream (GET /api/events, events.h)
 * sends, kept apart from the streams themselves: job transitions read
 * from the queues (ops.h) turned into numbered `job` frames, a ring of the
 * latest ones for clients that resume with Last-Event-ID, and the
 * `counts` frame (the body of GET /api/pipelines) when it changed.
 *
 * Used by the events thread only, except where said; not thread-safe.
 * Internal to services/.
 */
#ifndef SL_DASH_H
#define SL_DASH_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* How many job frames the ring keeps for Last-Event-ID. */
#define SL_DASH_RING 4096

typedef struct sl_dash sl_dash;

/* A new state for model m (borrowed); NULL when out of memory. */
sl_dash *sl_dash_new(const sl_model *m);
void sl_dash_free(sl_dash *d);

/* Reads the transitions since the last poll on c (no lock needed: only
 * the events thread calls it). *out (OUT: caller passes it to
 * sl_dash_ingest). Returns 0, or non-zero when the read failed (logged). */
int sl_dash_poll(sl_dash *d, PGconn *c, PGresult **out);

/* Turns the rows of r (freed here) into frames it has not sent before,
 * appends them to the ring and calls emit for each. Returns how many. */
size_t sl_dash_ingest(sl_dash *d, PGresult *r,
                      void (*emit)(const char *frame, void *arg), void *arg);

/* 1 when the last ingested poll stopped at its row limit: poll again. */
int sl_dash_behind(const sl_dash *d);

/* Forgets where the reads were (the next poll starts at its now()) and
 * puts every frame number handed out so far out of reach of replay, so
 * that a client resuming with one of them gets a reset. For when no
 * dashboard stream was open and nothing was read. */
void sl_dash_reset(sl_dash *d);

/* Calls emit with every ring frame numbered after `after`. Returns 0, or
 * -1 when frames after it have left the ring already (or `after` is from
 * another server: larger than the last number). */
int sl_dash_replay(const sl_dash *d, uint64_t after,
                   void (*emit)(const char *frame, void *arg), void *arg);

/* The `counts` frame read on c now (malloc'd, caller frees), or NULL when
 * the read failed (logged). */
char *sl_dash_counts(sl_dash *d, PGconn *c);

#endif
