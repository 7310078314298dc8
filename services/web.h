/* web.h - what the web server's parts share (httpd.c, api.c, events.c,
 * webassets.c): the reply with the security headers every answer carries,
 * and the JSON error body. Internal to services/.
 */
#ifndef SL_WEB_H
#define SL_WEB_H

#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>

/* The Content-Security-Policy of every answer: nothing but this server's
 * own scripts, styles and event streams; no framing. */
#define SL_WEB_CSP                                                          \
    "default-src 'none'; script-src 'self'; style-src 'self';"             \
    " connect-src 'self'; img-src 'self' data:; base-uri 'none';"          \
    " form-action 'none'; frame-ancestors 'none'"

/* Queues an answer: code, Content-Type type, body (len bytes; NULL for
 * none; with owned = 1 it is malloc'd and freed here, else static), and
 * the security headers (CSP, nosniff, no-referrer). Cache-Control is
 * no-store unless etag is given, which is sent as ETag. */
enum MHD_Result sl_web_reply(struct MHD_Connection *conn, unsigned code,
                             const char *type, char *body, size_t len,
                             int owned, const char *etag);

/* Queues {"error": {"code": code, "message": message}} with status. */
enum MHD_Result sl_web_error(struct MHD_Connection *conn, unsigned status,
                             const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* v as compact JSON (malloc'd, caller frees; NULL when out of memory)
 * with <, > and & written \u003c, \u003e, \u0026 (they occur only
 * inside strings), so no text in it can ever be taken for markup. */
char *sl_web_dumps(const json_t *v);

/* Queues v (a reference stolen) as JSON with status. */
enum MHD_Result sl_web_json(struct MHD_Connection *conn, unsigned status,
                            json_t *v);

#endif
