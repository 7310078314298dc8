/* test_web_dashboard.c - the dashboard's files as `sluice serve` sends
 * them (services/webassets.c, web/embed.cmake), over real HTTP: every file
 * of web/dashboard and web/vendor byte for byte with its Content-Type, an
 * ETag and 304, the security headers, / as the page, every file the page
 * and its modules load is served, unknown paths 404, other methods 405.
 * The browser test (tests/browser/run) drives the same files in Chromium. */
#include <curl/curl.h>
#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "httptest.h"
#include "testlib.h"

extern char **environ;

static int port;
static pid_t server;

typedef sl_test_resp resp;

/* One request; if_none_match: an ETag to send (NULL: none). */
static resp call(const char *method, const char *path,
                 const char *if_none_match) {
    char inm[128];
    const char *hs[2] = {NULL, NULL};
    if (if_none_match) {
        snprintf(inm, sizeof inm, "If-None-Match: %s", if_none_match);
        hs[0] = inm;
    }
    return sl_test_http(port, method, path, hs, NULL, NULL, 5000);
}

/* The value of header name in r (static), or "" when absent. */
static const char *header(const resp *r, const char *name) {
    static char v[512];
    v[0] = '\0';
    size_t n = strlen(name);
    for (const char *p = r->headers; p && *p; p = strchr(p, '\n')) {
        if (*p == '\n') p++;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            p += n + 1;
            while (*p == ' ') p++;
            size_t k = strcspn(p, "\r\n");
            snprintf(v, sizeof v, "%.*s", (int)k, p);
            break;
        }
    }
    return v;
}

/* The whole file at path (malloc'd), its length in *len. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int setup(void **state) {
    (void)state;
    sl_test_db("web_dashboard");
    setenv("PGDATABASE", "web_dashboard", 1);
    port = sl_test_free_port();
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *argv[] = {sl_test_bin(), "serve", "-p",
                          SL_SOURCE_DIR "/tests/browser/pipelines",
                          "--listen", listen, NULL};
    assert_int_equal(posix_spawn(&server, sl_test_bin(), NULL, NULL,
                                 (char *const *)argv, environ),
                     0);
    for (int i = 0; i < 100; i++) {
        resp r = call("GET", "/healthz", NULL);
        free(r.body);
        if (r.code == 200) return 0;
        usleep(100 * 1000);
    }
    fail_msg("sluice serve did not start");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (server > 0) {
        kill(server, SIGTERM);
        waitpid(server, NULL, 0);
    }
    return 0;
}

static const char *type_for(const char *name) {
    const char *dot = strrchr(name, '.');
    if (dot && strcmp(dot, ".html") == 0) return "text/html; charset=utf-8";
    if (dot && strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (dot && strcmp(dot, ".css") == 0) return "text/css; charset=utf-8";
    return "text/plain; charset=utf-8";
}

/* Checks every file of web/DIR against /ui/PREFIX... ; returns how many. */
static int check_dir(const char *dir, const char *prefix) {
    char path[512];
    snprintf(path, sizeof path, "%s/web/%s", SL_SOURCE_DIR, dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "README") == 0 ||
            strcmp(e->d_name, "SHA256SUMS") == 0)
            continue;
        char file[800], url[600];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        snprintf(url, sizeof url, "/ui/%s%s", prefix, e->d_name);
        size_t len;
        char *want = slurp(file, &len);
        resp r = call("GET", url, NULL);
        if (r.code != 200 || r.len != len || memcmp(r.body, want, len) != 0)
            fail_msg("%s: HTTP %ld, %zu bytes; the file has %zu", url, r.code,
                     r.len, len);
        assert_string_equal(header(&r, "Content-Type"), type_for(e->d_name));
        assert_non_null(strstr(header(&r, "Content-Security-Policy"),
                               "script-src 'self'"));
        assert_string_equal(header(&r, "X-Content-Type-Options"), "nosniff");
        char etag[128];
        snprintf(etag, sizeof etag, "%s", header(&r, "ETag"));
        assert_true(strlen(etag) > 2);
        resp again = call("GET", url, etag);
        assert_int_equal(again.code, 304);
        assert_int_equal(again.len, 0);
        free(again.body);
        free(r.body);
        free(want);
        n++;
    }
    closedir(d);
    return n;
}

static void every_file_is_served_as_on_disk(void **state) {
    (void)state;
    assert_true(check_dir("dashboard", "") >= 6);
    assert_true(check_dir("vendor", "vendor/") >= 8);
}

static void root_is_the_page(void **state) {
    (void)state;
    size_t len;
    char *want = slurp(SL_SOURCE_DIR "/web/dashboard/index.html", &len);
    resp r = call("GET", "/", NULL);
    assert_int_equal(r.code, 200);
    assert_int_equal(r.len, len);
    assert_memory_equal(r.body, want, len);
    assert_string_equal(header(&r, "Content-Type"), "text/html; charset=utf-8");
    /* No inline script: every <script> has a src. */
    int scripts = 0;
    for (const char *p = strstr(r.body, "<script"); p;
         p = strstr(p + 1, "<script")) {
        const char *end = strchr(p, '>'), *src = strstr(p, " src=");
        if (!end || !src || src > end)
            fail_msg("a <script> without src: %.60s", p);
        scripts++;
    }
    assert_int_equal(scripts, 1);
    free(r.body);
    free(want);
}

/* Every "/ui/..." the page and the dashboard's modules name is served. */
static void everything_the_page_loads_is_served(void **state) {
    (void)state;
    const char *files[] = {"index.html", "app.js", "api.js", "ui.js",
                           "pages.js", "jobs.js"};
    int seen = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/web/dashboard/%s", SL_SOURCE_DIR,
                 files[i]);
        size_t len;
        char *s = slurp(path, &len);
        for (char *p = strstr(s, "\"/ui/"); p; p = strstr(p + 1, "\"/ui/")) {
            char url[256];
            size_t k = strcspn(p + 1, "\"");
            snprintf(url, sizeof url, "%.*s", (int)k, p + 1);
            resp r = call("GET", url, NULL);
            if (r.code != 200)
                fail_msg("%s names %s: HTTP %ld", files[i], url, r.code);
            free(r.body);
            seen++;
        }
        free(s);
    }
    assert_true(seen >= 15);
}

static void unknown_paths_and_methods(void **state) {
    (void)state;
    resp r = call("GET", "/ui/nope.js", NULL);
    assert_int_equal(r.code, 404);
    free(r.body);
    r = call("GET", "/ui/vendor/README", NULL);
    assert_int_equal(r.code, 404);
    free(r.body);
    r = call("POST", "/", NULL);
    assert_int_equal(r.code, 405);
    free(r.body);
    r = call("HEAD", "/ui/app.js", NULL);
    assert_int_equal(r.code, 200);
    assert_int_equal(r.len, 0);
    assert_string_equal(header(&r, "Content-Type"),
                        "text/javascript; charset=utf-8");
    free(r.body);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_file_is_served_as_on_disk),
        cmocka_unit_test(root_is_the_page),
        cmocka_unit_test(everything_the_page_loads_is_served),
        cmocka_unit_test(unknown_paths_and_methods),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
