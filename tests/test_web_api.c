/* test_web_api.c - the web side of `sluice run --http` against real
 * PostgreSQL through real HTTP (libcurl): tokens (none, read-only, admin,
 * expired subject token, a token for another subject), cross-site writes
 * refused, audit rows, every /api/ route with filters and keyset
 * pagination, a hostile last_error returned JSON-escaped, an event stream
 * that sees its subject reach its final status and resumes with
 * Last-Event-ID, and widget.js with its ETag. */
#include <curl/curl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "httptest.h"
#include "rtlib.h"
#include "webauth.h"

extern char **environ;

#define ADMIN "admin-token-for-tests"
#define READ "read-token-for-tests"
#define SECRET "subject-secret-for-tests"
#define XSS "<img src=x onerror=alert(1)>"

static const char *const YAML =
    "pipeline: wb\n"
    "subject:\n"
    "  table: items\n"
    "  foreign_key: item_id\n"
    "  status:\n"
    "    column: status\n"
    "    values: [new, working, done, failed]\n"
    "  progress: progress\n"
    "  detail: detail\n"
    "  channel: items_progress\n"
    "sweep: {interval: 200ms, pending_age: 1m}\n"
    "stages:\n"
    "  work:\n"
    "    queue: wb_jobs\n"
    "    handler: noop\n"
    "    columns:\n"
    "      note: text\n"
    "    status:\n"
    "      on_start: {status: working, progress: 10, detail: started}\n"
    "      on_done: {status: done, progress: 100, detail: finished}\n"
    "      on_error: {status: failed, detail: failed}\n";

static PGconn *db;
static int port;

typedef sl_test_resp resp;

/* One request: method, path, Bearer token (NULL: none), extra header lines
 * (NULL-terminated), JSON body (NULL: none); timeout_ms for streams. */
static resp call(const char *method, const char *path, const char *token,
                 const char *const *extra, const char *body,
                 const char *stop_at, long timeout_ms) {
    char auth[128];
    const char *hs[8];
    int n = 0;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hs[n++] = auth;
    }
    for (int i = 0; extra && extra[i]; i++) {
        assert_true(n < 7);
        hs[n++] = extra[i];
    }
    hs[n] = NULL;
    return sl_test_http(port, method, path, hs, body, stop_at, timeout_ms);
}

static resp get(const char *path, const char *token) {
    return call("GET", path, token, NULL, NULL, NULL, 5000);
}

static int setup(void **state) {
    (void)state;
    setenv("SLUICE_ADMIN_TOKEN", ADMIN, 1);
    setenv("SLUICE_READ_TOKEN", READ, 1);
    setenv("SLUICE_TOKEN_SECRET", SECRET, 1);
    sl_model *m = rt_setup("web_api", YAML, &db);
    sl_model_free(m);
    port = sl_test_free_port();
    char listen[32], yaml[512];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(yaml, sizeof yaml, "%s/web_api.yaml", sl_test_tmpdir());
    const char *argv[] = {sl_test_bin(), "run", "--allow-superuser",
                          "-p",          yaml,  "--http",
                          listen,        NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, sl_test_bin(), NULL, NULL,
                                 (char *const *)argv, environ),
                     0);
    rt_track(pid);
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

/* Inserts an item and n failed jobs of it; returns the item id (static). */
static const char *failed_jobs(int n, const char *error) {
    static char id[40];
    char *v =
        sl_test_scalar(db, "INSERT INTO items DEFAULT VALUES RETURNING id");
    snprintf(id, sizeof id, "%s", v);
    free(v);
    char sql[600];
    snprintf(sql, sizeof sql,
             "INSERT INTO wb_jobs (item_id, note, status, last_error,"
             " error_class, attempts, finished_at) SELECT '%s', 'secret input',"
             " 'error', '%s', 'invalid_input', 1, now() FROM"
             " generate_series(1, %d)",
             id, error, n);
    sl_test_exec(db, sql);
    return id;
}

/* ---- tokens and the cross-site rule -------------------------------------- */

static void api_needs_a_token(void **state) {
    (void)state;
    resp r = get("/api/pipelines", NULL);
    assert_int_equal(r.code, 401);
    assert_non_null(strstr(r.body, "{\"error\":{\"code\":\"unauthorized\""));
    assert_non_null(
        strstr(r.headers, "Content-Security-Policy: default-src 'none'"));
    free(r.body);
    r = get("/api/pipelines", "wrong");
    assert_int_equal(r.code, 401);
    free(r.body);
    r = get("/api/pipelines", READ);
    assert_int_equal(r.code, 200);
    free(r.body);
    r = get("/api/pipelines", ADMIN);
    assert_int_equal(r.code, 200);
    free(r.body);
}

static void read_token_cannot_act(void **state) {
    (void)state;
    resp r = call("POST", "/api/jobs/retry", READ, NULL,
                  "{\"ids\":[\"00000000-0000-0000-0000-000000000001\"]}", NULL,
                  5000);
    assert_int_equal(r.code, 403);
    assert_non_null(strstr(r.body, "\"forbidden\""));
    free(r.body);
}

static void cross_site_writes_are_refused(void **state) {
    (void)state;
    const char *body = "{\"ids\":[\"00000000-0000-0000-0000-000000000001\"]}";
    const char *fetch[] = {"Sec-Fetch-Site: cross-site", NULL};
    resp r = call("POST", "/api/jobs/cancel", ADMIN, fetch, body, NULL, 5000);
    assert_int_equal(r.code, 403);
    assert_non_null(strstr(r.body, "\"cross_site\""));
    free(r.body);
    const char *origin[] = {"Origin: https://evil.example", NULL};
    r = call("POST", "/api/jobs/cancel", ADMIN, origin, body, NULL, 5000);
    assert_int_equal(r.code, 403);
    free(r.body);
    long before = sl_test_long(db, "SELECT count(*) FROM sluice.audit");
    assert_int_equal(before, 0);
}

/* ---- routes -----------------------------------------------------------------
 */

static void pipelines_show_counts_by_status(void **state) {
    (void)state;
    failed_jobs(2, "boom");
    resp r = get("/api/pipelines", READ);
    assert_int_equal(r.code, 200);
    print_message("%s\n", r.body);
    assert_non_null(strstr(r.body, "\"name\":\"wb\""));
    assert_non_null(strstr(r.body, "\"queue\":\"wb_jobs\""));
    assert_non_null(strstr(r.body, "\"oldest_pending_s\""));
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *st = json_array_get(
        json_object_get(json_array_get(json_object_get(j, "pipelines"), 0),
                        "stages"),
        0);
    assert_true(json_integer_value(json_object_get(
                    json_object_get(st, "counts"), "error")) >= 2);
    json_decref(j);
    free(r.body);
}

static void jobs_filter_and_page_by_cursor(void **state) {
    (void)state;
    const char *item = failed_jobs(5, "quota exceeded here");
    char path[400];
    snprintf(path, sizeof path,
             "/api/jobs?stage=work&status=error&error_class=invalid_input"
             "&subject=%s&q=quota&limit=2",
             item);
    int seen = 0, pages = 0;
    char cursor[200] = "";
    for (;;) {
        char p[700];
        snprintf(p, sizeof p, "%s%s%s", path, cursor[0] ? "&cursor=" : "",
                 cursor);
        resp r = get(p, READ);
        assert_int_equal(r.code, 200);
        json_t *j = json_loads(r.body, 0, NULL);
        assert_non_null(j);
        json_t *jobs = json_object_get(j, "jobs");
        seen += (int)json_array_size(jobs);
        for (size_t i = 0; i < json_array_size(jobs); i++) {
            json_t *o = json_array_get(jobs, i);
            assert_string_equal(
                json_string_value(json_object_get(o, "subject")), item);
            assert_string_equal(json_string_value(json_object_get(o, "stage")),
                                "work");
        }
        pages++;
        json_t *next = json_object_get(j, "next_cursor");
        if (!json_is_string(next)) {
            json_decref(j);
            free(r.body);
            break;
        }
        /* The cursor goes back in a query string: escape it. */
        char *esc = curl_easy_escape(NULL, json_string_value(next), 0);
        snprintf(cursor, sizeof cursor, "%s", esc);
        curl_free(esc);
        json_decref(j);
        free(r.body);
        assert_true(pages < 10);
    }
    assert_int_equal(seen, 5);
    assert_int_equal(pages, 3);
    resp r = get("/api/jobs?status=error&q=no-such-text", READ);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.body, "\"jobs\":[]"));
    free(r.body);
    r = get("/api/jobs?cursor=nonsense", READ);
    assert_int_equal(r.code, 400);
    free(r.body);
    r = get("/api/jobs?stage=nope", READ);
    assert_int_equal(r.code, 404);
    free(r.body);
}

static void hostile_last_error_is_json_escaped(void **state) {
    (void)state;
    const char *item = failed_jobs(1, XSS);
    char path[200];
    snprintf(path, sizeof path, "/api/jobs?subject=%s", item);
    resp r = get(path, READ);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.headers, "Content-Type: application/json"));
    assert_non_null(strstr(r.headers, "X-Content-Type-Options: nosniff"));
    assert_null(strstr(r.body, "<img"));
    assert_non_null(
        strstr(r.body, "\"\\u003cimg src=x onerror=alert(1)\\u003e\""));
    json_t *j = json_loads(r.body, 0, NULL);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(j, "jobs"), 0), "last_error")),
        XSS);
    json_decref(j);
    free(r.body);
}

static void job_detail_hides_inputs_unless_asked(void **state) {
    (void)state;
    const char *item = failed_jobs(1, "x");
    char sql[200], path[200];
    snprintf(sql, sizeof sql, "SELECT id FROM wb_jobs WHERE item_id = '%s'",
             item);
    char *id = sl_test_scalar(db, sql);
    snprintf(path, sizeof path, "/api/jobs/wb_jobs/%s", id);
    resp r = get(path, READ);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.body, "\"status\":\"error\""));
    assert_null(strstr(r.body, "secret input"));
    assert_null(strstr(r.body, "\"inputs\""));
    free(r.body);
    snprintf(path, sizeof path, "/api/jobs/wb_jobs/%s?inputs=1", id);
    r = get(path, READ);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.body, "\"inputs\":{\"note\":\"secret input\"}"));
    free(r.body);
    r = get("/api/jobs/wb_jobs/00000000-0000-0000-0000-000000000009", READ);
    assert_int_equal(r.code, 404);
    free(r.body);
    r = get("/api/jobs/nope/00000000-0000-0000-0000-000000000009", READ);
    assert_int_equal(r.code, 404);
    free(r.body);
    /* The subject page lists the job under its stage. */
    snprintf(path, sizeof path, "/api/subjects/wb/%s", item);
    r = get(path, READ);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.body, id));
    assert_non_null(strstr(r.body, "\"status\":\"new\""));
    free(r.body);
    r = get("/api/subjects/wb/00000000-0000-0000-0000-000000000009", READ);
    assert_int_equal(r.code, 404);
    free(r.body);
    free(id);
}

static void retry_and_cancel_are_audited(void **state) {
    (void)state;
    const char *item = failed_jobs(1, "x");
    char sql[200], body[200];
    snprintf(sql, sizeof sql, "SELECT id FROM wb_jobs WHERE item_id = '%s'",
             item);
    char *id = sl_test_scalar(db, sql);
    snprintf(body, sizeof body, "{\"ids\":[\"%s\"]}", id);
    resp r = call("POST", "/api/jobs/retry", ADMIN, NULL, body, NULL, 5000);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.body, "\"changed\":1"));
    free(r.body);
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM sluice.audit WHERE"
                                      " what = 'retry' AND count = 1 AND who ="
                                      " 'admin@127.0.0.1'"),
                     1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM sluice.audit WHERE filter->'ids'->>0 = '%s'",
             id);
    assert_int_equal(sl_test_long(db, sql), 1);
    /* The retried job runs (noop) to done; cancelling it changes nothing
     * but is still audited. */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM wb_jobs WHERE id = '%s' AND status = 'done'",
             id);
    assert_int_equal(rt_wait_for(db, sql, 1, 20000), 1);
    r = call("POST", "/api/jobs/cancel", ADMIN, NULL, body, NULL, 5000);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.body, "\"changed\":0"));
    free(r.body);
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM sluice.audit WHERE"
                                      " what = 'cancel' AND count = 0"),
                     1);
    r = call("POST", "/api/jobs/cancel", ADMIN, NULL, "{\"ids\":\"x\"}", NULL,
             5000);
    assert_int_equal(r.code, 400);
    assert_non_null(strstr(r.body, "\"bad_request\""));
    free(r.body);
    free(id);
}

/* ---- event streams
 * ------------------------------------------------------------ */

static void stream_path(char *out, size_t n, const char *item,
                        const char *token) {
    snprintf(out, n, "/api/subjects/wb/%s/events?token=%s", item, token);
}

static void stream_refuses_bad_tokens(void **state) {
    (void)state;
    char *item =
        sl_test_scalar(db, "INSERT INTO items DEFAULT VALUES RETURNING id");
    char other[SL_WEBAUTH_TOKEN_MAX], expired[SL_WEBAUTH_TOKEN_MAX], path[400];
    assert_int_equal(sl_webauth_mint(SECRET,
                                     "00000000-0000-0000-0000-000000000001",
                                     time(NULL) + 600, other),
                     0);
    assert_int_equal(sl_webauth_mint(SECRET, item, time(NULL) - 1, expired), 0);
    snprintf(path, sizeof path, "/api/subjects/wb/%s/events", item);
    resp r = get(path, NULL);
    assert_int_equal(r.code, 401);
    free(r.body);
    stream_path(path, sizeof path, item, other);
    r = get(path, NULL);
    assert_int_equal(r.code, 401);
    assert_non_null(strstr(r.body, "\"token_invalid\""));
    free(r.body);
    stream_path(path, sizeof path, item, expired);
    r = get(path, NULL);
    assert_int_equal(r.code, 401);
    assert_non_null(strstr(r.body, "\"token_expired\""));
    free(r.body);
    free(item);
}

static void stream_follows_a_subject_to_its_final_status(void **state) {
    (void)state;
    char *item =
        sl_test_scalar(db, "INSERT INTO items DEFAULT VALUES RETURNING id");
    char tok[SL_WEBAUTH_TOKEN_MAX], path[400], sql[300];
    char *out = NULL;
    assert_int_equal(sl_test_sh(&out,
                                "SLUICE_TOKEN_SECRET=%s %s token %s --ttl 5m",
                                SECRET, sl_test_bin(), item),
                     0);
    snprintf(tok, sizeof tok, "%.*s", (int)strcspn(out, "\n"), out);
    free(out);
    assert_int_equal(sl_webauth_check(SECRET, item, tok, time(NULL)), 0);
    stream_path(path, sizeof path, item, tok);
    /* Enqueue once the stream is open: a child process inserts the job
     * half a second from now while this one reads the stream. */
    snprintf(
        sql, sizeof sql,
        "sleep 0.5; psql -qc \"INSERT INTO wb_jobs (item_id) VALUES ('%s')\""
        " -d web_api >/dev/null &",
        item);
    assert_int_equal(sl_test_sh(NULL, "%s", sql), 0);
    resp r = call("GET", path, NULL, NULL, NULL, "\"status\":\"done\"", 20000);
    print_message("%s\n", r.body);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.headers, "Content-Type: text/event-stream"));
    assert_non_null(strstr(r.body, "event: status\ndata: {\"status\":\"new\""));
    assert_non_null(strstr(r.body,
                           "data: {\"status\":\"done\",\"progress\":100,"
                           "\"detail\":\"finished\"}"));
    /* Exactly the subject row: no job id, no other field. */
    assert_null(strstr(r.body, "\"id\""));
    /* Resume with the last event id: the client has the final state, so
     * nothing but the retry line comes. */
    const char *last = strstr(r.body, "id: ");
    const char *id_done = NULL;
    for (const char *p = last; p; p = strstr(p + 1, "id: "))
        id_done = p;
    char hdr[80];
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %.16s", id_done + 4);
    const char *extra[] = {hdr, NULL};
    resp again = call("GET", path, NULL, extra, NULL, NULL, 1500);
    assert_null(strstr(again.body, "event: status"));
    free(again.body);
    const char *stale[] = {"Last-Event-ID: 0000000000000000", NULL};
    again = call("GET", path, NULL, stale, NULL, "\"done\"", 5000);
    assert_non_null(strstr(again.body, "\"status\":\"done\""));
    free(again.body);
    free(r.body);
    free(item);
}

static void quiet_stream_gets_pings_and_is_counted(void **state) {
    (void)state;
    char *item =
        sl_test_scalar(db, "INSERT INTO items DEFAULT VALUES RETURNING id");
    char path[200];
    /* An operator's token also opens a stream. */
    snprintf(path, sizeof path, "/api/subjects/wb/%s/events", item);
    resp r = call("GET", path, READ, NULL, NULL, ": ping\n\n", 20000);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.body, ": ping\n\n"));
    free(r.body);
    resp m = get("/metrics", NULL);
    assert_non_null(strstr(m.body, "# TYPE sluice_event_streams gauge"));
    free(m.body);
    free(item);
}

/* ---- the widget
 * ------------------------------------------------------------------ */

static void widget_is_served_with_an_etag(void **state) {
    (void)state;
    resp r = get("/widget.js", NULL);
    assert_int_equal(r.code, 200);
    assert_non_null(
        strstr(r.body, "customElements.define(\"sluice-progress\""));
    assert_null(strstr(r.body, "innerHTML"));
    assert_non_null(strstr(r.headers, "Content-Type: text/javascript"));
    const char *e = strstr(r.headers, "ETag: ");
    assert_non_null(e);
    char hdr[80];
    snprintf(hdr, sizeof hdr, "If-None-Match: %.*s",
             (int)strcspn(e + 6, "\r\n"), e + 6);
    free(r.body);
    const char *extra[] = {hdr, NULL};
    r = call("GET", "/widget.js", NULL, extra, NULL, NULL, 5000);
    assert_int_equal(r.code, 304);
    free(r.body);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(api_needs_a_token),
        cmocka_unit_test(read_token_cannot_act),
        cmocka_unit_test(cross_site_writes_are_refused),
        cmocka_unit_test(pipelines_show_counts_by_status),
        cmocka_unit_test(jobs_filter_and_page_by_cursor),
        cmocka_unit_test(hostile_last_error_is_json_escaped),
        cmocka_unit_test(job_detail_hides_inputs_unless_asked),
        cmocka_unit_test(retry_and_cancel_are_audited),
        cmocka_unit_test(stream_refuses_bad_tokens),
        cmocka_unit_test(stream_follows_a_subject_to_its_final_status),
        cmocka_unit_test(quiet_stream_gets_pings_and_is_counted),
        cmocka_unit_test(widget_is_served_with_an_etag),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
