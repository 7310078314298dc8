/* test_web_actions.c - the operator routes of the dashboard against a
 * real `sluice run --http` (SLUICE_BIN) and real PostgreSQL: the workers
 * registry shows the running process, pause and resume are honoured by
 * that running worker (nothing claimed while paused, the job runs after
 * resume), through the API and the CLI; retry, cancel and delete by
 * filter in batches and delete by ids; the statistics rollup; the
 * dashboard event stream (counts, job transitions, Last-Event-ID); tokens
 * (none/read/admin) and the cross-site rule on the new routes; audit
 * rows. */
#include <curl/curl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "httptest.h"
#include "rtlib.h"

extern char **environ;

#define ADMIN "admin-token-for-actions"
#define READ "read-token-for-actions"

static const char *const YAML = "pipeline: wa\n"
                                "security:\n"
                                "  rls: false\n"
                                "sweep: {interval: 200ms, pending_age: 1m}\n"
                                "stages:\n"
                                "  work:\n"
                                "    queue: wa_jobs\n"
                                "    handler: noop\n"
                                "    columns:\n"
                                "      note: text\n";

static PGconn *db;
static int port;
static pid_t server;
static char yaml_path[512];

typedef sl_test_resp resp;

/* One request: method, path, Bearer token (NULL: none), one extra header
 * line (NULL: none), JSON body (NULL: none); timeout_ms for streams. */
static resp call(const char *method, const char *path, const char *token,
                 const char *extra, const char *body, const char *stop_at,
                 long timeout_ms) {
    char auth[128];
    const char *hs[3];
    int n = 0;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hs[n++] = auth;
    }
    if (extra) hs[n++] = extra;
    hs[n] = NULL;
    return sl_test_http(port, method, path, hs, body, stop_at, timeout_ms);
}

static resp get(const char *path, const char *token) {
    return call("GET", path, token, NULL, NULL, NULL, 5000);
}

static resp post(const char *path, const char *token, const char *body) {
    return call("POST", path, token, NULL, body, NULL, 30000);
}

/* Asserts that r has status code and contains `has`; frees it. */
static void expect(resp r, long code, const char *has) {
    if (r.code != code || (has && !strstr(r.body, has)))
        fail_msg("expected %ld with %s, got %ld: %s", code, has ? has : "-",
                 r.code, r.body);
    free(r.body);
}

static long count(const char *sql) { return sl_test_long(db, sql); }

static int setup(void **state) {
    (void)state;
    setenv("SLUICE_ADMIN_TOKEN", ADMIN, 1);
    setenv("SLUICE_READ_TOKEN", READ, 1);
    sl_model *m = rt_setup("web_actions", YAML, &db);
    sl_model_free(m);
    port = sl_test_free_port();
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(yaml_path, sizeof yaml_path, "%s/web_actions.yaml",
             sl_test_tmpdir());
    const char *argv[] = {sl_test_bin(), "run",    "--allow-superuser",
                          "-p",          yaml_path, "--http",
                          listen,        NULL};
    assert_int_equal(posix_spawn(&server, sl_test_bin(), NULL, NULL,
                                 (char *const *)argv, environ),
                     0);
    rt_track(server);
    for (int i = 0; i < 100; i++) {
        resp r = get("/healthz", NULL);
        free(r.body);
        if (r.code == 200) return 0;
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

/* Pauses (1) or resumes (0) wa.work through the API. */
static void set_paused(int paused) {
    expect(post(paused ? "/api/stages/wa/work/pause"
                       : "/api/stages/wa/work/resume",
                ADMIN, "{}"),
           200, paused ? "\"paused\":true" : "\"paused\":false");
}

/* ---- tokens and the cross-site rule -------------------------------------- */

static void new_routes_need_a_token(void **state) {
    (void)state;
    static const char *const reads[] = {"/api/workers", "/api/stats",
                                        "/api/events"};
    for (int i = 0; i < 3; i++) {
        expect(get(reads[i], NULL), 401, "\"unauthorized\"");
        expect(get(reads[i], "wrong"), 401, "\"unauthorized\"");
    }
    expect(get("/api/workers", READ), 200, "\"workers\"");
    expect(get("/api/stats", ADMIN), 200, "\"minutes\"");
    expect(post("/api/stages/wa/work/pause", NULL, "{}"), 401, NULL);
    expect(post("/api/stages/wa/work/pause", READ, "{}"), 403,
           "\"forbidden\"");
    expect(post("/api/jobs/delete", READ, "{\"filter\":{}}"), 403,
           "\"forbidden\"");
    expect(call("GET", "/api/stages/wa/work/pause", ADMIN, NULL, NULL, NULL,
                5000),
           405, "method_not_allowed");
    expect(post("/api/stages/wa/nope/pause", ADMIN, "{}"), 404, "not_found");
    assert_int_equal(count("SELECT count(*) FROM sluice.paused"), 0);
}

static void cross_site_actions_are_refused(void **state) {
    (void)state;
    expect(call("POST", "/api/stages/wa/work/pause", ADMIN,
                "Sec-Fetch-Site: cross-site", "{}", NULL, 5000),
           403, "\"cross_site\"");
    expect(call("POST", "/api/jobs/delete", ADMIN,
                "Origin: http://evil.example", "{\"filter\":{}}", NULL, 5000),
           403, "\"cross_site\"");
    /* No JSON content type. */
    expect(call("POST", "/api/stages/wa/work/resume", ADMIN, NULL, NULL, NULL,
                5000),
           415, "unsupported_media_type");
    assert_int_equal(count("SELECT count(*) FROM sluice.paused"), 0);
}

/* ---- workers ------------------------------------------------------------- */

static void workers_registry_shows_the_running_process(void **state) {
    (void)state;
    char pid[32];
    snprintf(pid, sizeof pid, "\"pid\":%d", (int)server);
    expect(get("/api/workers", READ), 200, pid);
    resp r = get("/api/workers", READ);
    assert_non_null(strstr(r.body, "\"stages\":[\"wa.work\"]"));
    assert_non_null(strstr(r.body, "\"alive\":true"));
    assert_non_null(strstr(r.body, "\"heartbeat_at\":\""));
    free(r.body);
    char *out = NULL;
    assert_int_equal(sl_test_sluice(&out, "workers --json"), 0);
    snprintf(pid, sizeof pid, "\"pid\": %d", (int)server);
    sl_test_expect_in(out, pid);
    free(out);
}

/* ---- pause and resume ---------------------------------------------------- */

/* Enqueues one job and checks it stays pending for 2 s (nothing claims
 * it), then resumes with `resume` and waits until it is done. */
static void paused_job_waits_then_runs(void (*resume)(void)) {
    char *id = sl_test_scalar(db, "INSERT INTO wa_jobs (note) VALUES"
                                  " ('while paused') RETURNING id");
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM wa_jobs WHERE id = '%s' AND status ="
             " 'pending' AND attempts = 0",
             id);
    for (int i = 0; i < 20; i++) { /* 2 s, more than the 1.5 s asked */
        assert_int_equal(count(sql), 1);
        usleep(100 * 1000);
    }
    resume();
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM wa_jobs WHERE id = '%s' AND status ="
             " 'done'",
             id);
    assert_true(rt_wait_for(db, sql, 1, 15000));
    free(id);
}

static void resume_api(void) { set_paused(0); }

static void pause_is_honoured_by_the_running_worker(void **state) {
    (void)state;
    set_paused(1);
    expect(get("/api/pipelines", READ), 200, "\"paused\":true");
    /* Give the NOTIFY its second, as the issue allows. */
    usleep(1000 * 1000);
    paused_job_waits_then_runs(resume_api);
    expect(get("/api/pipelines", READ), 200, "\"paused\":false");
    assert_int_equal(count("SELECT count(*) FROM sluice.audit WHERE what ="
                           " 'pause' AND who LIKE 'admin@127.0.0.1'"
                           " AND filter = '{\"pipeline\": \"wa\", \"stage\":"
                           " \"work\"}'"),
                     1);
    assert_int_equal(count("SELECT count(*) FROM sluice.audit WHERE what ="
                           " 'resume'"),
                     1);
}

static void resume_cli(void) {
    char *out = NULL;
    assert_int_equal(sl_test_sluice(&out, "resume wa.work -p %s", yaml_path),
                     0);
    sl_test_expect_in(out, "wa.work resumed");
    free(out);
}

static void cli_pause_and_resume(void **state) {
    (void)state;
    char *out = NULL;
    assert_int_equal(sl_test_sluice(&out, "pause wa.work -p %s", yaml_path), 0);
    sl_test_expect_in(out, "wa.work paused");
    free(out);
    usleep(1000 * 1000);
    paused_job_waits_then_runs(resume_cli);
    assert_int_equal(
        sl_test_sluice(&out, "pause wa.nope -p %s", yaml_path), 64);
    free(out);
}

/* ---- bulk actions ---------------------------------------------------------- */

static void retry_by_filter_in_batches(void **state) {
    (void)state;
    set_paused(1); /* retried jobs stay visible as retry */
    sl_test_exec(db, "DELETE FROM wa_jobs");
    sl_test_exec(db, "INSERT INTO wa_jobs (note, status, error_class,"
                     " last_error, attempts, finished_at) SELECT 'x', 'error',"
                     " 'invalid_input', 'bad row ' || g, 1, now() FROM"
                     " generate_series(1, 1203) g");
    sl_test_exec(db, "INSERT INTO wa_jobs (note, status, error_class,"
                     " last_error, attempts, finished_at) SELECT 'x', 'error',"
                     " 'timeout', 'slow', 1, now() FROM generate_series(1, 3)");
    expect(post("/api/jobs/retry", ADMIN,
                "{\"filter\":{\"stage\":\"work\",\"error_class\":"
                "\"invalid_input\"}}"),
           200, "{\"changed\":1203,\"filter\":true}");
    assert_int_equal(count("SELECT count(*) FROM wa_jobs WHERE status ="
                           " 'retry' AND attempts = 0"),
                     1203);
    assert_int_equal(count("SELECT count(*) FROM wa_jobs WHERE status ="
                           " 'error'"),
                     3);
    /* q: a substring of last_error. */
    expect(post("/api/jobs/cancel", ADMIN,
                "{\"filter\":{\"pipeline\":\"wa\",\"q\":\"bad row 12\"}}"),
           200, "{\"changed\":15,\"filter\":true}"); /* 12, 120-129, 1200-3 */
    assert_int_equal(
        count("SELECT count(*) FROM sluice.audit WHERE what = 'retry' AND"
              " count = 1203 AND filter->'filter'->>'error_class' ="
              " 'invalid_input'"),
        1);
    sl_test_exec(db, "DELETE FROM wa_jobs");
    set_paused(0);
}

static void cancel_and_delete_by_filter(void **state) {
    (void)state;
    set_paused(1);
    sl_test_exec(db, "DELETE FROM wa_jobs");
    sl_test_exec(db, "INSERT INTO wa_jobs (note) SELECT 'p' FROM"
                     " generate_series(1, 700)");
    expect(post("/api/jobs/cancel", ADMIN,
                "{\"filter\":{\"status\":\"pending\"}}"),
           200, "{\"changed\":700,\"filter\":true}");
    expect(post("/api/jobs/delete", ADMIN,
                "{\"filter\":{\"status\":\"cancelled\"}}"),
           200, "{\"changed\":700,\"filter\":true}");
    assert_int_equal(count("SELECT count(*) FROM wa_jobs"), 0);
    assert_int_equal(count("SELECT count(*) FROM sluice.audit WHERE what ="
                           " 'delete' AND count = 700"),
                     1);
    set_paused(0);
}

static void delete_by_ids_spares_running_jobs(void **state) {
    (void)state;
    set_paused(1);
    char *done = sl_test_scalar(db, "INSERT INTO wa_jobs (note, status,"
                                    " finished_at) VALUES ('d', 'done',"
                                    " now()) RETURNING id");
    char *running = sl_test_scalar(
        db, "INSERT INTO wa_jobs (note, status, locked_by, locked_until,"
            " started_at, attempts) VALUES ('r', 'in_progress', 'elsewhere',"
            " now() + interval '1 hour', now(), 1) RETURNING id");
    char body[300];
    snprintf(body, sizeof body,
             "{\"ids\":[\"%s\",\"%s\","
             "\"00000000-0000-4000-8000-000000000000\"]}",
             done, running);
    resp r = post("/api/jobs/delete", ADMIN, body);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.body, "\"changed\":1,"));
    assert_non_null(strstr(r.body, "\"was\":\"in_progress\",\"changed\":false"));
    assert_non_null(strstr(r.body, "\"error\":\"not_found\""));
    free(r.body);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM wa_jobs WHERE id = '%s'",
             running);
    assert_int_equal(count(sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM wa_jobs WHERE id = '%s'",
             done);
    assert_int_equal(count(sql), 0);
    sl_test_exec(db, "DELETE FROM wa_jobs");
    free(done);
    free(running);
    set_paused(0);
}

static void bad_filters_are_refused(void **state) {
    (void)state;
    expect(post("/api/jobs/retry", ADMIN,
                "{\"filter\":{\"status\":\"nope\"}}"),
           400, "filter.status");
    expect(post("/api/jobs/retry", ADMIN, "{\"filter\":{\"colour\":\"x\"}}"),
           400, "bad_request");
    expect(post("/api/jobs/retry", ADMIN, "{\"filter\":[1]}"), 400,
           "bad_request");
    expect(post("/api/jobs/delete", ADMIN,
                "{\"filter\":{\"pipeline\":\"nope\"}}"),
           404, "not_found");
    expect(post("/api/jobs/delete", ADMIN, "{\"ids\":[],\"filter\":{}}"), 400,
           "bad_request");
}

/* ---- statistics ------------------------------------------------------------ */

static void stats_from_the_rollup(void **state) {
    (void)state;
    sl_test_exec(db, "INSERT INTO wa_jobs (note, status, run_at, started_at,"
                     " finished_at, attempts) SELECT 's', 'done', now() -"
                     " interval '3 s', now() - interval '2 s', now(), 1 FROM"
                     " generate_series(1, 5)");
    sl_test_exec(db, "INSERT INTO wa_jobs (note, status, run_at, started_at,"
                     " finished_at, attempts, error_class) SELECT 's',"
                     " 'error', now(), now(), now(), 1, 'timeout'");
    /* The rollup turns every 10 s. */
    int seen = 0;
    for (int i = 0; i < 300 && !seen; i++) {
        resp r = get("/api/stats?pipeline=wa&stage=work&minutes=5", READ);
        seen = r.code == 200 && strstr(r.body, "\"done\":5,\"failed\":1");
        if (seen) {
            assert_non_null(strstr(r.body, "\"pipeline\":\"wa\","
                                           "\"stage\":\"work\""));
            assert_non_null(strstr(r.body, "\"minute\":\""));
            assert_non_null(strstr(r.body, "\"run_p95_ms\":2000"));
        }
        free(r.body);
        if (!seen) usleep(100 * 1000);
    }
    assert_true(seen);
    expect(get("/api/stats?minutes=0", READ), 400, "minutes must be");
    expect(get("/api/stats?stage=nope", READ), 404, "not_found");
    sl_test_exec(db, "DELETE FROM wa_jobs");
}

/* ---- the dashboard's event stream ---------------------------------------- */

static void *enqueue_later(void *arg) {
    char *id = arg;
    usleep(700 * 1000);
    PGconn *c = sl_test_connect(rt_conninfo());
    char *v = sl_test_scalar(c, "INSERT INTO wa_jobs (note) VALUES ('ev')"
                                " RETURNING id");
    snprintf(id, 40, "%s", v);
    free(v);
    PQfinish(c);
    return NULL;
}

static void events_stream_counts_and_job_transitions(void **state) {
    (void)state;
    char id[40] = "";
    pthread_t th;
    pthread_create(&th, NULL, enqueue_later, id);
    char path[64];
    snprintf(path, sizeof path, "/api/events?token=%s", READ);
    resp r = call("GET", path, NULL, NULL, NULL, "\"status\":\"done\"}",
                  15000);
    pthread_join(th, NULL);
    assert_non_null(strstr(r.headers, "text/event-stream"));
    assert_non_null(strstr(r.body, "event: counts\ndata: {\"pipelines\":"));
    char want[120];
    snprintf(want, sizeof want, "\"id\":\"%s\",\"status\":\"done\"}", id);
    assert_non_null(strstr(r.body, want));
    assert_non_null(strstr(r.body, "event: job\ndata: {\"pipeline\":\"wa\","
                                   "\"stage\":\"work\",\"queue\":\"wa_jobs\""));
    /* The done frame's number; resuming before it replays it. */
    char *done = strstr(r.body, want);
    char *idline = NULL;
    for (char *p = r.body; (p = strstr(p, "id: ")) && p < done; p++)
        idline = p;
    assert_non_null(idline);
    unsigned long long n = strtoull(idline + 4, NULL, 10);
    free(r.body);
    char last[64];
    snprintf(last, sizeof last, "Last-Event-ID: %llu", n - 1);
    r = call("GET", "/api/events", READ, last, NULL, want, 10000);
    assert_non_null(strstr(r.body, want));
    free(r.body);
    /* A number this server never sent: reset. */
    r = call("GET", "/api/events", READ, "Last-Event-ID: 999999999", NULL,
             "event: reset", 10000);
    assert_non_null(strstr(r.body, "event: reset"));
    free(r.body);
}

/* A query held up by a lock (until the API's 2 s statement_timeout) stops
 * only its own server thread: requests that arrive meanwhile on new
 * connections are answered by the other threads before it ends. */
static volatile int slow_done;
static long slow_code;

static void *slow_listing(void *arg) {
    (void)arg;
    resp r = call("GET", "/api/jobs?stage=work", READ, NULL, NULL, NULL, 10000);
    slow_code = r.code;
    free(r.body);
    __atomic_store_n(&slow_done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void a_slow_query_holds_up_only_its_thread(void **state) {
    (void)state;
    PGconn *locker = sl_test_connect("");
    sl_test_exec(locker, "BEGIN; LOCK TABLE wa_jobs IN ACCESS EXCLUSIVE MODE");
    slow_done = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_listing, NULL), 0);
    /* Until the listing waits on the lock. */
    for (int i = 0; i < 100 && count("SELECT count(*) FROM pg_locks WHERE"
                                      " NOT granted") == 0;
         i++)
        usleep(20000);
    int answered_meanwhile = 0;
    for (int i = 0; i < 8 && !__atomic_load_n(&slow_done, __ATOMIC_SEQ_CST);
         i++) {
        resp r = get("/api/workers", READ);
        if (r.code == 200 && !__atomic_load_n(&slow_done, __ATOMIC_SEQ_CST))
            answered_meanwhile++;
        free(r.body);
    }
    pthread_join(t, NULL);
    sl_test_exec(locker, "ROLLBACK");
    PQfinish(locker);
    print_message("answered while a listing waited on a lock: %d\n",
                  answered_meanwhile);
    assert_int_equal(slow_code, 503);
    assert_true(answered_meanwhile > 0);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_routes_need_a_token),
        cmocka_unit_test(cross_site_actions_are_refused),
        cmocka_unit_test(workers_registry_shows_the_running_process),
        cmocka_unit_test(pause_is_honoured_by_the_running_worker),
        cmocka_unit_test(cli_pause_and_resume),
        cmocka_unit_test(retry_by_filter_in_batches),
        cmocka_unit_test(cancel_and_delete_by_filter),
        cmocka_unit_test(delete_by_ids_spares_running_jobs),
        cmocka_unit_test(bad_filters_are_refused),
        cmocka_unit_test(stats_from_the_rollup),
        cmocka_unit_test(events_stream_counts_and_job_transitions),
        cmocka_unit_test(a_slow_query_holds_up_only_its_thread),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
