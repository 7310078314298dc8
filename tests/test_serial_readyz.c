/* test_serial_readyz.c - /readyz follows the database: ready, not ready
 * within a few seconds of PostgreSQL stopping (with the reason in the
 * body), ready again after it starts. Runs alone (it stops the shared
 * server). */
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rtlib.h"

extern char **environ;

static const char *const YAML = "pipeline: rz\n"
                                "security: {rls: false}\n"
                                "stages:\n"
                                "  a:\n"
                                "    queue: rz_jobs\n"
                                "    handler: noop\n";

static size_t keep(char *d, size_t sz, size_t n, void *arg) {
    char *buf = arg;
    size_t have = strlen(buf), add = sz * n;
    if (have + add > 1023) add = 1023 - have;
    memcpy(buf + have, d, add);
    buf[have + add] = '\0';
    return sz * n;
}

/* GET /readyz: the status (0 when no answer) and the body in buf. */
static long readyz(int port, char buf[1024]) {
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", port);
    buf[0] = '\0';
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, buf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    return code;
}

/* Polls /readyz until it answers want; returns the milliseconds it took,
 * or fails after timeout_ms. */
static int64_t until_readyz(int port, long want, int64_t timeout_ms,
                            char buf[1024]) {
    int64_t t0 = sl_test_now_ms();
    for (;;) {
        long code = readyz(port, buf);
        if (code == want) return sl_test_now_ms() - t0;
        if (sl_test_now_ms() - t0 > timeout_ms)
            fail_msg("/readyz stayed %ld (want %ld): %s", code, want, buf);
        usleep(100 * 1000);
    }
}

static void pg_ctl(const char *what) {
    const char *host = getenv("PGHOST");
    assert_non_null(host);
    int rc = sl_test_sh(NULL,
                        "d='%s/../data'; if [ \"$(id -u)\" = 0 ]; then"
                        " runuser -u sluicepg -- /usr/lib/postgresql/15/bin/"
                        "pg_ctl -D \"$d\" -m fast -w %s >/dev/null 2>&1;"
                        " else /usr/lib/postgresql/15/bin/pg_ctl -D \"$d\""
                        " -m fast -w %s >/dev/null 2>&1; fi",
                        host, what, what);
    assert_int_equal(rc, 0);
}

static void readyz_follows_the_database(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("serial_readyz", YAML, &c);
    PQfinish(c);
    char yaml[512], listen[16], body[1024];
    snprintf(yaml, sizeof yaml, "%s/serial_readyz.yaml", sl_test_tmpdir());
    int port = sl_test_free_port();
    snprintf(listen, sizeof listen, "%d", port);
    const char *argv[] = {sl_test_bin(), "serve",  "-p", yaml,
                          "--listen",    listen,   NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, sl_test_bin(), NULL, NULL,
                                 (char *const *)argv, environ),
                     0);
    rt_track(pid);
    until_readyz(port, 200, 10000, body);
    assert_non_null(strstr(body, "ready"));

    pg_ctl("stop");
    int64_t ms = until_readyz(port, 503, 10000, body);
    print_message("not ready %lld ms after the stop: %s", (long long)ms,
                  body);
    assert_true(ms <= 5000);
    assert_non_null(strstr(body, "database unreachable"));

    /* restart starts a stopped server with the options it last had. */
    pg_ctl("restart");
    ms = until_readyz(port, 200, 15000, body);
    print_message("ready again %lld ms after the start\n", (long long)ms);

    kill(pid, SIGTERM);
    assert_int_equal(rt_wait(pid, 10000), 0);
    sl_model_free(m);
}

/* The server must come back for the tests after this one whatever
 * happened. */
static int restart_if_down(void **state) {
    (void)state;
    sl_test_sh(NULL,
               "d='%s/../data'; if [ \"$(id -u)\" = 0 ]; then runuser -u"
               " sluicepg -- /usr/lib/postgresql/15/bin/pg_ctl -D \"$d\""
               " status >/dev/null 2>&1 || runuser -u sluicepg --"
               " /usr/lib/postgresql/15/bin/pg_ctl -D \"$d\" -w restart"
               " >/dev/null 2>&1; else /usr/lib/postgresql/15/bin/pg_ctl -D"
               " \"$d\" status >/dev/null 2>&1 ||"
               " /usr/lib/postgresql/15/bin/pg_ctl -D \"$d\" -w restart"
               " >/dev/null 2>&1; fi",
               getenv("PGHOST"));
    return rt_teardown(state);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(readyz_follows_the_database,
                                  restart_if_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
