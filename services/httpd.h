/* httpd.h - the embedded HTTP server (libmicrohttpd): /metrics, /healthz,
 * /readyz.
 *
 * SL_HTTPD_THREADS internal polling threads share the connections (event
 * streams are suspended connections on them, no thread per stream); the
 * API (api.h) gives each its own database connection. A checker thread
 * with its own database connection (statement_timeout 2 s) checks the
 * database every second and the schema every 15 s, and, when this process
 * wins the gauge election (gauges.h), reads the queue gauges every 15 s.
 * /metrics, /healthz and /readyz never touch the database: they read what
 * that thread cached, so a slow or dead database cannot pile up requests.
 * Routes and bodies are documented in docs/operations.md and docs/api.md.
 */
#ifndef SL_HTTPD_H
#define SL_HTTPD_H

#include <stddef.h>

#include "db.h"
#include "model.h"

typedef struct sl_httpd sl_httpd;

/* The server's polling threads (at most SL_API_CONNS, api.h). */
#define SL_HTTPD_THREADS 4

typedef struct sl_httpd_opts {
    const char *listen;    /* "HOST:PORT", ":PORT" or "PORT"; the host
                              defaults to 127.0.0.1; port 0 picks one */
    const sl_model *model; /* borrowed; outlives the server */
    sl_dbsource db;
    int with_runtime; /* 1: /healthz and /readyz also judge the runtime of
                         this process (sl_runtime_health) */
} sl_httpd_opts;

/* Starts the server. Returns 0 and *out (stop with sl_httpd_stop), or
 * -SL_EINVAL (bad address) / -SL_EIO (cannot bind) with a message in err. */
int sl_httpd_start(const sl_httpd_opts *o, sl_httpd **out, char *err,
                   size_t errlen);

/* The port the server listens on. */
unsigned sl_httpd_port(const sl_httpd *h);

/* Stops both threads and frees h. NULL is fine. */
void sl_httpd_stop(sl_httpd *h);

#endif
