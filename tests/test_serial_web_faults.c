/* test_serial_web_faults.c - the dashboard's event streams under faults,
 * against `sluice serve` (SLUICE_BIN) and real PostgreSQL: 200 open
 * /api/events streams see every job's final status although PostgreSQL
 * restarts in the middle (the streams stay open and catch up), and a
 * client that stops reading neither grows the server's memory nor keeps
 * its connection. Runs alone (RUN_SERIAL): it restarts the suite's shared
 * server. Jobs are moved by SQL: no worker is needed. */
#include <curl/curl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rtlib.h"

extern char **environ;

#define READ "read-token-for-faults"
#define STREAMS 200
#define JOBS 20 /* per side of the restart */

static const char *const YAML = "pipeline: wf\n"
                                "security:\n"
                                "  rls: false\n"
                                "stages:\n"
                                "  work:\n"
                                "    queue: wf_jobs\n"
                                "    handler: noop\n"
                                "    columns:\n"
                                "      note: text\n";

static PGconn *db;
static int port;
static pid_t server;

typedef struct stream {
    CURL *h;
    char *body;
    size_t len;
} stream;

static size_t on_body(char *d, size_t sz, size_t n, void *arg) {
    stream *s = arg;
    char *b = realloc(s->body, s->len + sz * n + 1);
    assert_non_null(b);
    memcpy(b + s->len, d, sz * n);
    s->len += sz * n;
    b[s->len] = '\0';
    s->body = b;
    return sz * n;
}

/* Opens stream s on multi m from source address 127.0.0.<2 + i / 50>
 * (the server allows 64 connections per client address). */
static void open_stream(CURLM *m, stream *s, int i) {
    char url[128], src[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/events?token=%s", port,
             READ);
    snprintf(src, sizeof src, "host!127.0.0.%d", 2 + i / 50);
    s->h = curl_easy_init();
    curl_easy_setopt(s->h, CURLOPT_URL, url);
    curl_easy_setopt(s->h, CURLOPT_INTERFACE, src);
    curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
    /* Closed, not cached, when removed at the end. */
    curl_easy_setopt(s->h, CURLOPT_FORBID_REUSE, 1L);
    curl_multi_add_handle(m, s->h);
}

/* Drives the transfers until every stream's body has each of the n
 * needles or timeout_ms passes; returns 1 when they all have them. Fails
 * when a stream ended. */
static int pump(CURLM *m, stream *ss, int nstreams, char **needles, int n,
                int64_t timeout_ms) {
    int64_t until = sl_test_now_ms() + timeout_ms;
    while (sl_test_now_ms() < until) {
        int running;
        curl_multi_perform(m, &running);
        if (running != nstreams)
            fail_msg("%d of %d streams ended", nstreams - running, nstreams);
        int all = 1;
        for (int i = 0; i < nstreams && all; i++)
            for (int k = 0; k < n && all; k++)
                all = ss[i].body && strstr(ss[i].body, needles[k]);
        if (all) return 1;
        curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    return 0;
}

static int setup(void **state) {
    (void)state;
    setenv("SLUICE_READ_TOKEN", READ, 1);
    sl_model *m = rt_setup("web_faults", YAML, &db);
    sl_model_free(m);
    port = sl_test_free_port();
    char listen[32], yaml[512];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(yaml, sizeof yaml, "%s/web_faults.yaml", sl_test_tmpdir());
    const char *argv[] = {sl_test_bin(), "serve", "-p",  yaml,
                          "--listen",    listen,  NULL};
#ifdef __SANITIZE_ADDRESS__
    /* AddressSanitizer keeps freed memory in quarantine (256 MB by
     * default), which a memory bound would measure instead of the
     * server: keep it small, the checks stay on. */
    const char *asan = getenv("ASAN_OPTIONS");
    char opts[512];
    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=4", asan ? asan : "",
             asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
#endif
    assert_int_equal(posix_spawn(&server, sl_test_bin(), NULL, NULL,
                                 (char *const *)argv, environ),
                     0);
    rt_track(server);
    char cmd[160];
    snprintf(cmd, sizeof cmd,
             "curl -sf http://127.0.0.1:%d/healthz >/dev/null", port);
    for (int i = 0; i < 100; i++) {
        if (sl_test_sh(NULL, "%s", cmd) == 0) return 0;
        usleep(100 * 1000);
    }
    fail_msg("the server did not start");
    return 0;
}

static int teardown(void **state) {
    rt_teardown(state);
    PQfinish(db);
    return 0;
}

static void restart_server(void) {
    const char *host = getenv("PGHOST");
    assert_non_null(host);
    int rc = sl_test_sh(NULL,
                        "d='%s/../data'; if [ \"$(id -u)\" = 0 ]; then"
                        " runuser -u sluicepg -- /usr/lib/postgresql/15/bin/"
                        "pg_ctl -D \"$d\" -m fast -w restart >/dev/null 2>&1;"
                        " else /usr/lib/postgresql/15/bin/pg_ctl -D \"$d\""
                        " -m fast -w restart >/dev/null 2>&1; fi",
                        host);
    assert_int_equal(rc, 0);
}

/* Inserts JOBS jobs and finishes them; their "done" needles go to
 * needles[at..]. */
static void jobs_done(char **needles, int at) {
    PGresult *r = PQexec(db, "WITH i AS (INSERT INTO wf_jobs (note) SELECT"
                             " 'f' FROM generate_series(1, 20) RETURNING id)"
                             " SELECT id FROM i");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), JOBS);
    for (int i = 0; i < JOBS; i++) {
        needles[at + i] = malloc(96);
        snprintf(needles[at + i], 96, "\"id\":\"%s\",\"status\":\"done\"",
                 PQgetvalue(r, i, 0));
    }
    PQclear(r);
    sl_test_exec(db, "UPDATE wf_jobs SET status = 'done', started_at = now(),"
                     " finished_at = now(), attempts = 1 WHERE status ="
                     " 'pending'");
}

static void streams_miss_no_final_status_across_a_restart(void **state) {
    (void)state;
    CURLM *m = curl_multi_init();
    stream *ss = calloc(STREAMS, sizeof *ss);
    for (int i = 0; i < STREAMS; i++)
        open_stream(m, &ss[i], i);
    char *counts = "event: counts";
    assert_true(pump(m, ss, STREAMS, &counts, 1, 60000));
    char *needles[2 * JOBS];
    jobs_done(needles, 0);
    restart_server();
    PQfinish(db);
    db = sl_test_connect(rt_conninfo());
    jobs_done(needles, JOBS);
    int ok = pump(m, ss, STREAMS, needles, 2 * JOBS, 60000);
    int missing = 0;
    for (int i = 0; i < STREAMS; i++)
        for (int k = 0; k < 2 * JOBS; k++)
            missing += !ss[i].body || !strstr(ss[i].body, needles[k]);
    if (!ok) fail_msg("%d final statuses missing from the streams", missing);
    for (int i = 0; i < STREAMS; i++) {
        curl_multi_remove_handle(m, ss[i].h);
        curl_easy_cleanup(ss[i].h);
        free(ss[i].body);
    }
    for (int k = 0; k < 2 * JOBS; k++)
        free(needles[k]);
    free(ss);
    curl_multi_cleanup(m);
}

/* The value of the sluice_event_streams gauge, or -1. */
static long open_streams(void) {
    char *out = NULL;
    if (sl_test_sh(&out, "curl -s http://127.0.0.1:%d/metrics | sed -n"
                         " 's/^sluice_event_streams //p'",
                   port) != 0) {
        free(out);
        return -1;
    }
    long n = out && *out ? atol(out) : -1;
    free(out);
    return n;
}

static void a_stalled_client_costs_bounded_memory(void **state) {
    (void)state;
    /* A client with a tiny receive buffer that never reads. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(0x7f000001)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int n = snprintf(req, sizeof req,
                     "GET /api/events?token=%s HTTP/1.1\r\nHost: x\r\n\r\n",
                     READ);
    assert_int_equal(write(fd, req, (size_t)n), n);
    for (int i = 0; i < 50 && open_streams() != 1; i++)
        usleep(100 * 1000);
    assert_int_equal(open_streams(), 1);
    long rss0 = rt_rss_kb(server);
    /* 100,000 jobs, each seen pending then done: some 35 MB of frames
     * that the stalled stream would hold if it were not cut at 256 KiB. */
    sl_test_exec(db, "INSERT INTO wf_jobs (note) SELECT 'm' FROM"
                     " generate_series(1, 100000)");
    sl_test_exec(db, "UPDATE wf_jobs SET status = 'done', started_at = now(),"
                     " finished_at = now(), attempts = 1 WHERE note = 'm'");
    /* The server sends the frames, the stalled stream is ended and its
     * connection closed (by the 30 s idle timeout at the latest). */
    int closed = 0;
    long peak = rss0;
    for (int i = 0; i < 900 && !closed; i++) {
        long rss = rt_rss_kb(server);
        if (rss > peak) peak = rss;
        closed = open_streams() == 0;
        usleep(100 * 1000);
    }
    print_message("server RSS %ld KiB before, peak %ld KiB (a stalled"
                  " stream and 200,000 job events)\n",
                  rss0, peak);
    assert_true(closed);
#ifdef __SANITIZE_ADDRESS__
    /* Shadow memory and redzones grow with the heap under ASan. */
    assert_true(peak - rss0 < 48 * 1024);
#else
    assert_true(peak - rss0 < 24 * 1024);
#endif
    close(fd);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        /* First: the other leaves 200 streams to the server's pings. */
        cmocka_unit_test(a_stalled_client_costs_bounded_memory),
        cmocka_unit_test(streams_miss_no_final_status_across_a_restart),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
