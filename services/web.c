/* web.c - answers with the security headers (web.h). */
#include "web.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum MHD_Result sl_web_reply(struct MHD_Connection *conn, unsigned code,
                             const char *type, char *body, size_t len,
                             int owned, const char *etag) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body,
        owned && body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (owned) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (etag) {
        MHD_add_response_header(r, "ETag", etag);
        MHD_add_response_header(r, "Cache-Control", "no-cache");
    } else {
        MHD_add_response_header(r, "Cache-Control", "no-store");
    }
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Content-Security-Policy", SL_WEB_CSP);
    enum MHD_Result ok = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ok;
}

char *sl_web_dumps(const json_t *v) {
    char *s = json_dumps(v, JSON_COMPACT);
    if (!s) return NULL;
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += strchr("<>&", *p) ? 6 : 1;
    char *out = malloc(n + 1), *o = out;
    for (const char *p = s; out && *p; p++) {
        if (*p == '<' || *p == '>' || *p == '&')
            o += sprintf(o, "\\u%04x", (unsigned)*p);
        else
            *o++ = *p;
    }
    if (out) *o = '\0';
    free(s);
    return out;
}

enum MHD_Result sl_web_json(struct MHD_Connection *conn, unsigned status,
                            json_t *v) {
    char *s = v ? sl_web_dumps(v) : NULL;
    json_decref(v);
    if (!s) return MHD_NO;
    return sl_web_reply(conn, status, "application/json", s, strlen(s), 1,
                        NULL);
}

enum MHD_Result sl_web_error(struct MHD_Connection *conn, unsigned status,
                             const char *code, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* A message cut inside a UTF-8 character is no JSON string. */
    json_t *m = json_string(msg);
    if (!m) m = json_string("(the message is not valid UTF-8)");
    return sl_web_json(
        conn, status,
        json_pack("{s:{s:s,s:o}}", "error", "code", code, "message", m));
}
