/* fakehooks.h - starts tests/fakes/fake_hooks.py (a recorder for Slack,
 * webhook and Sentry requests) and reads what it recorded.
 *
 * Header-only (static inline), like fakecloud.h.
 */
#ifndef SL_FAKEHOOKS_H
#define SL_FAKEHOOKS_H

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rtlib.h"
#include "testlib.h"

typedef struct fake_hooks {
    pid_t pid;
    int port;
    char log[512];
    char base[64]; /* "http://127.0.0.1:<port>" */
} fake_hooks;

/* Starts the recorder logging to a fresh file `name` in the temp dir,
 * with extra arguments (e.g. "--fail-429 1 --retry-after 2"). */
static inline void hooks_start(fake_hooks *f, const char *name,
                               const char *args) {
    char cmd[2048];
    memset(f, 0, sizeof *f);
    snprintf(f->log, sizeof f->log, "%s", sl_test_file(name, ""));
    snprintf(cmd, sizeof cmd,
             "exec python3 -u %s/tests/fakes/fake_hooks.py --log '%s' %s",
             SL_SOURCE_DIR, f->log, args ? args : "");
    /* A failed assertion skips the test's own fake_stop: rt_teardown
     * ends the server then, or it would hold ctest's output pipe open. */
    f->pid = rt_track(sl_test_spawn_server(cmd, "fake_hooks.py", &f->port));
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", f->port);
}

static inline void hooks_stop(fake_hooks *f) {
    if (f->pid <= 0) return;
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
    f->pid = 0;
}

/* The recorded requests whose path starts with prefix (NULL: all), as a
 * JSON array (caller decrefs). */
static inline json_t *hooks_requests(const fake_hooks *f, const char *prefix) {
    json_t *out = json_array();
    FILE *in = fopen(f->log, "r");
    char line[65536];
    while (in && fgets(line, sizeof line, in)) {
        json_t *r = json_loads(line, 0, NULL);
        if (!r) continue;
        const char *p = json_string_value(json_object_get(r, "path"));
        if (!prefix || (p && strncmp(p, prefix, strlen(prefix)) == 0))
            json_array_append(out, r);
        json_decref(r);
    }
    if (in) fclose(in);
    return out;
}

/* How many requests to paths starting with prefix were recorded. */
static inline size_t hooks_count(const fake_hooks *f, const char *prefix) {
    json_t *a = hooks_requests(f, prefix);
    size_t n = json_array_size(a);
    json_decref(a);
    return n;
}

#endif
