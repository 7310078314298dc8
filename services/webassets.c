/* webassets.c - embedded static files (webassets.h). */
#include "webassets.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "web.h"

extern const char sl_widget_js[]; /* generated from web/widget.js */

static struct {
    const char *url, *type, *body;
    char etag[24];
} files[] = {
    {"/widget.js", "text/javascript; charset=utf-8", sl_widget_js, ""}};

static pthread_once_t etags_once = PTHREAD_ONCE_INIT;

/* The ETag is a hash of the content: it changes with each build that
 * changes the file, and only then. */
static void make_etags(void) {
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        uint64_t h = 1469598103934665603ULL;
        for (const char *p = files[i].body; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        snprintf(files[i].etag, sizeof files[i].etag, "\"%016llx\"",
                 (unsigned long long)h);
    }
}

int sl_webassets_has(const char *url) {
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (strcmp(url, files[i].url) == 0) return 1;
    return 0;
}

enum MHD_Result sl_webassets_serve(struct MHD_Connection *conn,
                                   const char *url) {
    pthread_once(&etags_once, make_etags);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (strcmp(url, files[i].url) != 0) continue;
        const char *inm =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "If-None-Match");
        if (inm && strcmp(inm, files[i].etag) == 0)
            return sl_web_reply(conn, MHD_HTTP_NOT_MODIFIED, files[i].type,
                                NULL, 0, 0, files[i].etag);
        return sl_web_reply(conn, MHD_HTTP_OK, files[i].type,
                            (char *)files[i].body, strlen(files[i].body), 0,
                            files[i].etag);
    }
    return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found", "no file %s",
                        url);
}
