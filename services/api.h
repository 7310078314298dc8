/* api.h - the JSON API under /api/ (docs/api.md): pipelines, jobs, one
 * job, one subject, workers, statistics; retry, cancel and delete by ids
 * or by filter (bulk.h); pause and resume a stage (ops.h).
 *
 * Runs on the server's polling threads, each with its own database
 * connection (statement_timeout 2 s, re-established when lost), so that
 * one slow query holds up only the requests of its thread. Operators
 * authenticate with Bearer tokens (webauth.h): reads need the read or the
 * admin token, actions the admin token, a JSON body, and a same-site
 * request; every action is written to sluice.audit (audit.h).
 */
#ifndef SL_API_H
#define SL_API_H

#include <jansson.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <stddef.h>

#include "db.h"
#include "model.h"

typedef struct sl_api sl_api;

/* The most server threads the API serves, each with its own database
 * connection (httpd.c starts SL_HTTPD_THREADS <= this). */
#define SL_API_CONNS 8

/* A new API for model m (borrowed) on database db; NULL when out of
 * memory. Connects on first use. */
sl_api *sl_api_new(const sl_model *m, sl_dbsource db);

/* Answers one request to a path under /api/ (url with the query already
 * split off by libmicrohttpd) with body (len bytes; NULL when none). */
enum MHD_Result sl_api_handle(sl_api *a, struct MHD_Connection *conn,
                              const char *method, const char *url,
                              const char *body, size_t len);

/* The body of GET /api/pipelines for model m read on c (also the data of
 * the `counts` events, events.h): a new reference, or NULL with *rc (OUT)
 * and err set as reads.h says. */
json_t *sl_api_pipelines_json(const sl_model *m, PGconn *c, int *rc,
                              char *err, size_t errlen);

/* Closes the connection and frees a. NULL is fine. */
void sl_api_free(sl_api *a);

#endif
