/* test_http_server.c - `sluice run --http` and `sluice serve` against real
 * PostgreSQL through real HTTP (libcurl): after a known workload the
 * scraped counters equal it exactly and the page passes `promtool check
 * metrics`; /healthz and /readyz say why they are not ready (schema not
 * migrated, database stopped) and recover; systemd sees READY, WATCHDOG
 * and STOPPING on a NOTIFY_SOCKET of the test's own. */
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rtlib.h"

extern char **environ;

static const char *const HOOK =
    "function run(job)\n"
    "  local k = job.input.kind or 'ok'\n"
    "  if k == 'fail' then sluice.fail('broken on purpose', 'invalid_input')"
    " end\n"
    "  if k == 'retry' and job.attempt == 1 then\n"
    "    sluice.retry('not yet', 0.05)\n"
    "  end\n"
    "  return {}\n"
    "end\n";

static const char *const YAML =
    "pipeline: mt\n"
    "security: {rls: false}\n"
    "sweep: {interval: 200ms, pending_age: 1m}\n"
    "defaults:\n"
    "  retry: {max_attempts: 3, backoff: fixed, initial: 50ms, jitter: 0}\n"
    "  lease: 2s\n"
    "  heartbeat: 300ms\n"
    "stages:\n"
    "  work:\n"
    "    queue: mt_jobs\n"
    "    handler: lua\n"
    "    hooks:\n"
    "      run: {file: mt.lua}\n"
    "    columns:\n"
    "      kind: text\n";

/* Starts `sluice ARGS...` with the test's database; returns its pid. */
static pid_t spawn_sluice(const char *const *args) {
    const char *argv[16];
    int n = 0;
    argv[n++] = sl_test_bin();
    for (int i = 0; args[i] && n < 15; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, sl_test_bin(), NULL, NULL,
                                 (char *const *)argv, environ),
                     0);
    return rt_track(pid);
}

typedef struct page {
    char *body;
    size_t len;
} page;

static size_t on_body(char *d, size_t sz, size_t n, void *arg) {
    page *p = arg;
    char *b = realloc(p->body, p->len + sz * n + 1);
    assert_non_null(b);
    memcpy(b + p->len, d, sz * n);
    p->len += sz * n;
    b[p->len] = '\0';
    p->body = b;
    return sz * n;
}

/* GETs path on the port; returns the status (0: no answer) and the body
 * in *body (malloc'd, may be NULL). */
static long get(int port, const char *path, char **body) {
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    page p = {0};
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &p);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    if (body)
        *body = p.body;
    else
        free(p.body);
    return code;
}

/* Polls path until it answers `want`; returns the last status. */
static long wait_status(int port, const char *path, long want,
                        int64_t timeout_ms, char **body) {
    int64_t until = sl_test_now_ms() + timeout_ms;
    long code;
    for (;;) {
        char *b = NULL;
        code = get(port, path, &b);
        if (code == want || sl_test_now_ms() > until) {
            if (body)
                *body = b;
            else
                free(b);
            return code;
        }
        free(b);
        usleep(100 * 1000);
    }
}

/* The value of the sample whose line starts with `series ` in page. */
static double sample(const char *body, const char *series) {
    size_t l = strlen(series);
    for (const char *p = body; p && *p; p = strchr(p, '\n')) {
        if (*p == '\n') p++;
        if (strncmp(p, series, l) == 0 && p[l] == ' ')
            return strtod(p + l + 1, NULL);
    }
    fail_msg("no sample %s in the page", series);
    return -1;
}

static void enqueue(PGconn *c, const char *kind, int n) {
    char sql[200];
    snprintf(sql, sizeof sql,
             "INSERT INTO mt_jobs (kind) SELECT '%s' FROM "
             "generate_series(1, %d)",
             kind, n);
    sl_test_exec(c, sql);
}

#define L "{pipeline=\"mt\",stage=\"work\""

static void counters_equal_a_known_workload(void **state) {
    (void)state;
    PGconn *c;
    sl_test_file("mt.lua", HOOK);
    sl_model *m = rt_setup("http_metrics", YAML, &c);
    /* 5 successes, 2 jobs that fail once and then succeed, 3 permanent
     * failures, and one job whose worker "died": in progress with an
     * expired lease, rescued by the sweep and then run to success. */
    enqueue(c, "ok", 5);
    enqueue(c, "retry", 2);
    enqueue(c, "fail", 3);
    sl_test_exec(c, "INSERT INTO mt_jobs (kind, status, attempts, locked_by,"
                    " locked_until) VALUES ('ok', 'in_progress', 1, 'ghost',"
                    " now() - interval '1 second')");
    int port = sl_test_free_port();
    char listen[32], yaml[512];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(yaml, sizeof yaml, "%s/http_metrics.yaml", sl_test_tmpdir());
    const char *args[] = {"run", "--allow-superuser", "-p", yaml, "--http", listen, NULL};
    pid_t w = spawn_sluice(args);
    assert_int_equal(
        rt_wait_for(c,
                    "SELECT count(*) FROM mt_jobs WHERE status IN"
                    " ('done', 'error')",
                    11, 30000),
        1);
    char *body = NULL;
    assert_int_equal(wait_status(port, "/metrics", 200, 5000, &body), 200);
    print_message("%s", body);
    assert_true(sample(body, "sluice_job_attempts_total" L ",outcome=\"success\"}") == 8);
    assert_true(sample(body, "sluice_job_attempts_total" L ",outcome=\"retry\"}") == 2);
    assert_true(sample(body, "sluice_job_attempts_total" L ",outcome=\"failed\"}") == 3);
    assert_true(sample(body, "sluice_job_attempts_total" L ",outcome=\"lease_expired\"}") == 1);
    assert_true(sample(body, "sluice_leases_expired_total" L "}") == 1);
    /* Every attempt that ran is observed once in the run histogram. */
    assert_true(sample(body, "sluice_job_run_duration_seconds_count" L "}") == 13);
    assert_true(sample(body, "sluice_job_run_duration_seconds_bucket" L ",le=\"+Inf\"}") == 13);
    /* Every claim is observed once in the wait histogram (the ghost's
     * claim was not this process's). */
    assert_true(sample(body, "sluice_job_wait_seconds_count" L "}") == 13);
    /* Hooks that raised: 3 sluice.fail and 2 sluice.retry. */
    assert_true(sample(body, "sluice_lua_errors_total" L "}") == 5);
    assert_true(sample(body, "sluice_worker_slots" L ",state=\"free\"}") +
                    sample(body, "sluice_worker_slots" L ",state=\"busy\"}") ==
                1);
    /* The page is valid Prometheus text (promtool from Debian). */
    const char *path = sl_test_file("metrics.txt", body);
    char *out = NULL;
    int rc = sl_test_sh(&out, "promtool check metrics < %s 2>&1", path);
    print_message("promtool: %s\n", out ? out : "");
    assert_int_equal(rc, 0);
    free(out);
    free(body);
    /* The elected process shows the queue gauges (within 15 s). */
    int64_t until = sl_test_now_ms() + 20000;
    double done = -1;
    while (sl_test_now_ms() < until) {
        body = NULL;
        get(port, "/metrics", &body);
        if (body && strstr(body, "sluice_jobs" L ",status=\"done\"}")) {
            done = sample(body, "sluice_jobs" L ",status=\"done\"}");
            if (done == 8) break;
        }
        free(body);
        body = NULL;
        usleep(200 * 1000);
    }
    free(body);
    assert_true(done == 8);
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 20000), 0);
    PQfinish(c);
    sl_model_free(m);
}

/* /readyz names a schema the pipelines need but the database lacks. */
static void readyz_is_not_ready_until_migrated(void **state) {
    (void)state;
    sl_test_db("http_unmigrated");
    setenv("PGDATABASE", "http_unmigrated", 1);
    sl_test_file("mt.lua", HOOK);
    const char *yaml = sl_test_file("unmigrated.yaml", YAML);
    int port = sl_test_free_port();
    char listen[32];
    snprintf(listen, sizeof listen, "%d", port);
    const char *args[] = {"serve", "-p", yaml, "--listen", listen, NULL};
    pid_t w = spawn_sluice(args);
    char *body = NULL;
    assert_int_equal(wait_status(port, "/healthz", 200, 10000, NULL), 200);
    long code = wait_status(port, "/readyz", 503, 10000, &body);
    print_message("%ld %s", code, body ? body : "");
    assert_int_equal(code, 503);
    assert_non_null(strstr(body, "queue mt_jobs of pipeline mt is missing"));
    assert_non_null(strstr(body, "sluice migrate"));
    free(body);
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 10000), 0);
}

/* A NOTIFY_SOCKET of the test's own sees READY, WATCHDOG pings and
 * STOPPING from `sluice run`. */
static void systemd_hears_ready_watchdog_and_stopping(void **state) {
    (void)state;
    PGconn *c;
    sl_test_file("mt.lua", HOOK);
    sl_model *m = rt_setup("http_notify", YAML, &c);
    char sock[100];
    if (snprintf(sock, sizeof sock, "%s/notify.sock", sl_test_tmpdir()) >=
        (int)sizeof sock)
        skip();
    unlink(sock);
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {0, 200 * 1000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setenv("NOTIFY_SOCKET", sock, 1);
    char wd[32];
    snprintf(wd, sizeof wd, "%d", 600 * 1000); /* 600 ms: ping each 300 */
    setenv("WATCHDOG_USEC", wd, 1);
    char yaml[512];
    snprintf(yaml, sizeof yaml, "%s/http_notify.yaml", sl_test_tmpdir());
    const char *args[] = {"run", "--allow-superuser", "-p", yaml, NULL};
    pid_t w = spawn_sluice(args);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    int ready = 0, pings = 0, stopping = 0, sent_term = 0;
    int64_t until = sl_test_now_ms() + 15000;
    while (sl_test_now_ms() < until && !stopping) {
        char msg[512];
        ssize_t n = recv(s, msg, sizeof msg - 1, 0);
        if (n > 0) {
            msg[n] = '\0';
            ready |= strstr(msg, "READY=1") != NULL;
            pings += strstr(msg, "WATCHDOG=1") != NULL;
            stopping |= strstr(msg, "STOPPING=1") != NULL;
        }
        if (ready && pings >= 3 && !sent_term) {
            kill(w, SIGTERM);
            sent_term = 1;
        }
    }
    print_message("ready %d, watchdog pings %d, stopping %d\n", ready, pings,
                  stopping);
    assert_true(ready);
    assert_true(pings >= 3);
    assert_true(stopping);
    assert_int_equal(rt_wait(w, 20000), 0);
    close(s);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(counters_equal_a_known_workload, rt_teardown),
        cmocka_unit_test_teardown(readyz_is_not_ready_until_migrated,
                                  rt_teardown),
        cmocka_unit_test_teardown(systemd_hears_ready_watchdog_and_stopping,
                                  rt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
