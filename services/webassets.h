/* webassets.h - the static files the server carries in the binary:
 * web/widget.js (embedded by sql/embed.cmake) and the operator dashboard,
 * every file of web/dashboard and web/vendor (embedded by
 * web/embed.cmake), served as / (the dashboard's index.html) and
 * /ui/FILE, /ui/vendor/FILE. */
#ifndef SL_WEBASSETS_H
#define SL_WEBASSETS_H

#include <microhttpd.h>
#include <stddef.h>

/* One embedded dashboard file (the generated table ends with a NULL
 * path). */
typedef struct sl_webasset {
    const char *path;
    const unsigned char *body;
    size_t len;
} sl_webasset;

/* 1 when url names an embedded file. */
int sl_webassets_has(const char *url);

/* Answers GET url (sl_webassets_has) with the file, its Content-Type
 * (by extension) and its ETag, or 304 when If-None-Match names that
 * ETag. */
enum MHD_Result sl_webassets_serve(struct MHD_Connection *conn,
                                   const char *url);

#endif
