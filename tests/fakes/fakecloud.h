/* fakecloud.h - starts and drives tests/fakes/fake_cloud.py (the fake
 * AssemblyAI + OpenAI server) from a cmocka test.
 *
 * Header-only (static inline) so each test binary that includes it gets
 * its own copy; the CMake glob builds only tests/lib/ as a library.
 */
#ifndef SL_FAKECLOUD_H
#define SL_FAKECLOUD_H

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

typedef struct fake_cloud {
    pid_t pid;
    int port;
    char base[64]; /* "http://127.0.0.1:<port>" */
} fake_cloud;

/* Starts the fake with extra command-line arguments (a shell word list,
 * e.g. "--openai-key k --faults 'chat=500'"). Fails the test when it does
 * not report its port within 10 s. */
static inline void fake_start(fake_cloud *f, const char *args) {
    char cmd[2048];
    memset(f, 0, sizeof *f);
    snprintf(cmd, sizeof cmd,
             "exec python3 -u %s/tests/fakes/fake_cloud.py --port 0 %s",
             SL_SOURCE_DIR, args ? args : "");
    f->pid = sl_test_spawn_server(cmd, "fake_cloud.py", &f->port);
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", f->port);
}

/* Stops the fake (SIGTERM, then waits). */
static inline void fake_stop(fake_cloud *f) {
    if (f->pid <= 0) return;
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
    f->pid = 0;
}

static inline size_t fake__collect(char *d, size_t s, size_t n, void *arg) {
    char **buf = arg;
    size_t old = *buf ? strlen(*buf) : 0;
    char *nb = realloc(*buf, old + s * n + 1);
    if (!nb) return 0;
    memcpy(nb + old, d, s * n);
    nb[old + s * n] = '\0';
    *buf = nb;
    return s * n;
}

/* GET (body NULL) or POST path on the fake; returns the reply as JSON
 * (caller decrefs). Fails the test on any error. */
static inline json_t *fake_call(const fake_cloud *f, const char *path,
                                const char *body) {
    char url[256], *buf = NULL;
    snprintf(url, sizeof url, "%s%s", f->base, path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fake__collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) fail_msg("fake %s: %s", path, curl_easy_strerror(rc));
    json_t *j = json_loads(buf ? buf : "", 0, NULL);
    free(buf);
    if (!j) fail_msg("fake %s: not JSON", path);
    return j;
}

/* The fake's counters and request log (GET /_stats). */
static inline json_t *fake_stats(const fake_cloud *f) {
    return fake_call(f, "/_stats", NULL);
}

/* One integer counter of /_stats. */
static inline long fake_count(const fake_cloud *f, const char *key) {
    json_t *s = fake_stats(f);
    long n = (long)json_integer_value(json_object_get(s, key));
    json_decref(s);
    return n;
}

/* Appends faults to a route's plan, e.g. fake_faults(f, "chat", "[\"500\"]"). */
static inline void fake_faults(const fake_cloud *f, const char *route,
                               const char *json_list) {
    char body[1024];
    snprintf(body, sizeof body, "{\"%s\": %s}", route, json_list);
    json_decref(fake_call(f, "/_faults", body));
}

#endif
