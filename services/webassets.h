/* webassets.h - the static files the server carries in the binary
 * (web/widget.js, embedded at build time by sql/embed.cmake). */
#ifndef SL_WEBASSETS_H
#define SL_WEBASSETS_H

#include <microhttpd.h>

/* 1 when url names an embedded file. */
int sl_webassets_has(const char *url);

/* Answers GET url (sl_webassets_has) with the file and its ETag, or 304
 * when If-None-Match names that ETag. */
enum MHD_Result sl_webassets_serve(struct MHD_Connection *conn,
                                   const char *url);

#endif
