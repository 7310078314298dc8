/* webassets.c - embedded static files (webassets.h). */
#include "webassets.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "web.h"

extern const char sl_widget_js[]; /* generated from web/widget.js */
/* generated from web/dashboard and web/vendor */
extern const sl_webasset sl_dashboard_assets[];

#define MAX_FILES 64

/* Every served file: the widget, then the dashboard's. */
static struct {
    const char *url, *type;
    const unsigned char *body;
    size_t len;
    char etag[24];
} files[MAX_FILES];
static size_t nfiles;

static pthread_once_t files_once = PTHREAD_ONCE_INIT;

static const char *type_of(const char *path) {
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
    };
    size_t n = strlen(path);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        size_t k = strlen(types[i][0]);
        if (n > k && strcmp(path + n - k, types[i][0]) == 0)
            return types[i][1];
    }
    return "text/plain; charset=utf-8"; /* the licences */
}

static void add(const char *url, const char *type, const unsigned char *body,
                size_t len) {
    if (nfiles == MAX_FILES) return;
    files[nfiles].url = url;
    files[nfiles].type = type;
    files[nfiles].body = body;
    files[nfiles].len = len;
    /* The ETag is a hash of the content: it changes with each build that
     * changes the file, and only then. */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ body[i]) * 1099511628211ULL;
    snprintf(files[nfiles].etag, sizeof files[nfiles].etag, "\"%016llx\"",
             (unsigned long long)h);
    nfiles++;
}

static void make_files(void) {
    add("/widget.js", "text/javascript; charset=utf-8",
        (const unsigned char *)sl_widget_js, strlen(sl_widget_js));
    for (const sl_webasset *a = sl_dashboard_assets; a->path; a++) {
        add(a->path, type_of(a->path), a->body, a->len);
        if (strcmp(a->path, "/ui/index.html") == 0)
            add("/", type_of(a->path), a->body, a->len);
    }
}

static int find(const char *url) {
    pthread_once(&files_once, make_files);
    for (size_t i = 0; i < nfiles; i++)
        if (strcmp(url, files[i].url) == 0) return (int)i;
    return -1;
}

int sl_webassets_has(const char *url) { return find(url) >= 0; }

enum MHD_Result sl_webassets_serve(struct MHD_Connection *conn,
                                   const char *url) {
    int i = find(url);
    if (i < 0)
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                            "no file %s", url);
    const char *inm =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "If-None-Match");
    if (inm && strcmp(inm, files[i].etag) == 0)
        return sl_web_reply(conn, MHD_HTTP_NOT_MODIFIED, files[i].type, NULL,
                            0, 0, files[i].etag);
    return sl_web_reply(conn, MHD_HTTP_OK, files[i].type,
                        (char *)files[i].body, files[i].len, 0,
                        files[i].etag);
}
