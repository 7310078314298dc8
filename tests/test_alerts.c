/* test_alerts.c - alert rules end to end: `sluice run` processes evaluate
 * the rules against real PostgreSQL and send to a recording fake Slack and
 * webhook (tests/fakes/fake_hooks.py). A backlog rule fires once after its
 * `for`, repeats only after its repeat interval and resolves once, with two
 * processes running; 50 failed jobs give one digest; a 429 with
 * Retry-After holds the next send back; webhook signatures verify;
 * promtool accepts the exported rules. */
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsl.h"
#include "fakes/fakehooks.h"
#include "rtlib.h"

extern char **environ;

/* Starts `sluice ARGS...` with the test's environment; returns its pid. */
static pid_t spawn_sluice(const char *const *args) {
    const char *argv[16];
    int n = 0;
    argv[n++] = sl_test_bin();
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, sl_test_bin(), NULL, NULL,
                                 (char *const *)argv, environ),
                     0);
    return rt_track(pid);
}

static void stop_sluice(pid_t pid) {
    kill(pid, SIGTERM);
    assert_int_equal(rt_wait(pid, 15000), 0);
}

/* Waits until `prefix` has n requests; returns 1 when it has. */
static int wait_count(const fake_hooks *f, const char *prefix, size_t n,
                      int64_t timeout_ms) {
    int64_t until = sl_test_now_ms() + timeout_ms;
    while (sl_test_now_ms() < until) {
        if (hooks_count(f, prefix) >= n) return 1;
        usleep(50 * 1000);
    }
    return hooks_count(f, prefix) >= n;
}

static double req_time(json_t *a, size_t i) {
    return json_real_value(json_object_get(json_array_get(a, i), "t"));
}

static const char *req_body(json_t *a, size_t i) {
    return json_string_value(json_object_get(json_array_get(a, i), "body"));
}

static void set_urls(const fake_hooks *f) {
    char url[128];
    snprintf(url, sizeof url, "%s/slack", f->base);
    setenv("AL_SLACK_URL", url, 1);
    snprintf(url, sizeof url, "%s/hook", f->base);
    setenv("AL_HOOK_URL", url, 1);
    setenv("AL_HOOK_SECRET", "s3cret-key", 1);
    setenv("DATABASE_URL", rt_conninfo(), 1);
}

static const char *const BACKLOG_YAML =
    "pipeline: al\n"
    "security: {rls: false}\n"
    "stages:\n"
    "  a: {queue: al_a, handler: noop, next: [b]}\n"
    "  b: {queue: al_b, handler: noop}\n"
    "alerts:\n"
    "  interval: 250ms\n"
    "  notifiers:\n"
    "    slack: {type: slack, url_env: AL_SLACK_URL, min_interval: 100ms}\n"
    "  rules:\n"
    "    backlog_a: {when: backlog, stage: a, over: 2, for: 1s, repeat: 3s}\n";

static void backlog_fires_once_repeats_and_resolves_once(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("alerts_backlog", BACKLOG_YAML, &c);
    fake_hooks f;
    hooks_start(&f, "backlog_hooks.log", NULL);
    set_urls(&f);
    const char *file = m->pipelines[0].file;
    /* Two processes; neither runs stage a, so its backlog stays. */
    const char *args[] = {"run", "--allow-superuser", "-p", file, "-s", "b",
                          NULL};
    pid_t w1 = spawn_sluice(args), w2 = spawn_sluice(args);

    int64_t t0 = sl_test_now_ms();
    sl_test_exec(c, "INSERT INTO al_a SELECT FROM generate_series(1, 5)");
    assert_true(wait_count(&f, "/slack", 1, 6000));
    int64_t fired = sl_test_now_ms();
    assert_true(fired - t0 >= 1000); /* `for: 1s` */
    json_t *a = hooks_requests(&f, "/slack");
    assert_non_null(strstr(req_body(a, 0), "[FIRING]"));
    assert_non_null(strstr(req_body(a, 0), "backlog 5 jobs"));
    json_decref(a);

    sleep(2); /* within the repeat interval: nothing new */
    assert_int_equal(hooks_count(&f, "/slack"), 1);
    assert_true(wait_count(&f, "/slack", 2, 4000));
    a = hooks_requests(&f, "/slack");
    assert_true(req_time(a, 1) - req_time(a, 0) >= 2.9);
    assert_non_null(strstr(req_body(a, 1), "[FIRING]"));
    json_decref(a);

    sl_test_exec(c, "UPDATE al_a SET status = 'cancelled'");
    assert_true(wait_count(&f, "/slack", 3, 4000));
    a = hooks_requests(&f, "/slack");
    assert_non_null(strstr(req_body(a, 2), "[RESOLVED]"));
    json_decref(a);
    sleep(2); /* resolved once; no duplicate from the second process */
    assert_int_equal(hooks_count(&f, "/slack"), 3);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM sluice.alerts WHERE state ="
                        " 'resolved' AND first_fired IS NOT NULL"),
        1);

    stop_sluice(w1);
    stop_sluice(w2);
    hooks_stop(&f);
    PQfinish(c);
    sl_model_free(m);
}

static const char *const FAIL_HOOK =
    "function run(job) sluice.fail('broken on purpose', 'invalid_input')"
    " end\n";

#define BURST_STAGES                                                           \
    "pipeline: bx\n"                                                           \
    "security: {rls: false}\n"                                                 \
    "defaults: {retry: {max_attempts: 1}}\n"                                   \
    "stages:\n"                                                                \
    "  work:\n"                                                                \
    "    queue: bx_jobs\n"                                                     \
    "    handler: lua\n"                                                       \
    "    hooks: {run: {file: bx.lua}}\n"

static const char *const BURST_YAML =
    BURST_STAGES "alerts:\n"
                 "  interval: 250ms\n"
                 "  notifiers:\n"
                 "    slack: {type: slack, url_env: AL_SLACK_URL}\n"
                 "    hook: {type: webhook, url_env: AL_HOOK_URL,"
                 " secret_env: AL_HOOK_SECRET}\n"
                 "  rules:\n"
                 "    errors: {when: job_error, window: 1m}\n"
                 "    ratio: {when: failure_ratio, over: 0.5, min_count: 10,"
                 " window: 1m, severity: critical}\n";

static void burst_of_50_errors_gives_one_signed_digest(void **state) {
    (void)state;
    sl_test_file("bx.lua", FAIL_HOOK);
    PGconn *c;
    sl_model *m = rt_setup("alerts_burst", BURST_YAML, &c);
    fake_hooks f;
    hooks_start(&f, "burst_hooks.log", "--secret s3cret-key");
    set_urls(&f);
    /* The jobs fail through a worker that does not evaluate alerts (the
     * same pipeline without its alerts section), so the evaluator below
     * sees the whole burst at once. */
    const char *quiet = sl_test_file("bx_quiet.yaml", BURST_STAGES);
    sl_test_exec(c, "INSERT INTO bx_jobs SELECT FROM generate_series(1, 50)");
    const char *drain[] = {"run", "--allow-superuser", "-p",
                           quiet, "--exit-when-idle",  NULL};
    /* Exit 3: the jobs it ran failed for good (docs/cli.md#exit-codes). */
    assert_int_equal(rt_wait(spawn_sluice(drain), 60000), 3);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM bx_jobs WHERE status = 'error'"),
        50);

    const char *args[] = {"run", "--allow-superuser", "-p",
                          m->pipelines[0].file, NULL};
    pid_t w = spawn_sluice(args);
    assert_true(wait_count(&f, "/slack", 1, 6000));
    assert_true(wait_count(&f, "/hook", 1, 6000));
    sleep(2);
    json_t *s = hooks_requests(&f, "/slack");
    assert_int_equal(json_array_size(s), 1);
    assert_non_null(strstr(req_body(s, 0), "sluice: 2 alerts"));
    assert_non_null(strstr(req_body(s, 0), "50 jobs ended in error"));
    assert_non_null(strstr(req_body(s, 0), "failure ratio 1.00"));
    json_decref(s);
    json_t *h = hooks_requests(&f, "/hook");
    assert_int_equal(json_array_size(h), 1);
    assert_true(json_is_true(json_object_get(json_array_get(h, 0), "sig_ok")));
    json_t *body = json_loads(req_body(h, 0), 0, NULL);
    assert_non_null(body);
    assert_int_equal(json_integer_value(json_object_get(body, "count")), 2);
    json_decref(body);
    json_decref(h);

    stop_sluice(w);
    hooks_stop(&f);
    PQfinish(c);
    sl_model_free(m);
}

static const char *const SLOW_YAML =
    "pipeline: rl\n"
    "security: {rls: false}\n"
    "stages:\n"
    "  work: {queue: rl_jobs, handler: noop}\n"
    "alerts:\n"
    "  interval: 250ms\n"
    "  notifiers:\n"
    "    slack: {type: slack, url_env: AL_SLACK_URL}\n"
    "  rules:\n"
    "    errors: {when: job_error, window: 1m}\n";

static void retry_after_of_a_429_delays_the_next_send(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("alerts_429", SLOW_YAML, &c);
    fake_hooks f;
    hooks_start(&f, "rl_hooks.log", "--fail-429 1 --retry-after 2");
    set_urls(&f);
    sl_test_exec(c, "INSERT INTO rl_jobs (status, finished_at) VALUES"
                    " ('error', now())");
    const char *args[] = {"run", "--allow-superuser", "-p",
                          m->pipelines[0].file, NULL};
    pid_t w = spawn_sluice(args);
    assert_true(wait_count(&f, "/slack", 2, 10000));
    sleep(1);
    json_t *a = hooks_requests(&f, "/slack");
    assert_int_equal(json_array_size(a), 2);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(a, 0), "status")),
        429);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(a, 1), "status")),
        200);
    assert_true(req_time(a, 1) - req_time(a, 0) >= 1.95);
    json_decref(a);
    stop_sluice(w);
    hooks_stop(&f);
    PQfinish(c);
    sl_model_free(m);
}

static void promtool_accepts_the_exported_rules(void **state) {
    (void)state;
    sl_test_file("bx.lua", FAIL_HOOK);
    const char *yaml = sl_test_file(
        "export.yaml", BURST_STAGES
        "alerts:\n"
        "  notifiers:\n"
        "    slack: {type: slack, url_env: AL_SLACK_URL}\n"
        "  rules:\n"
        "    old: {when: oldest_pending, older_than: 10m, for: 5m}\n"
        "    backlog: {when: backlog, over: 1000, for: 250ms}\n"
        "    errors: {when: job_error}\n"
        "    ratio: {when: failure_ratio, over: 0.2, min_count: 20}\n"
        "    stuck: {when: stuck, attempts: 3}\n"
        "    idle: {when: no_worker, for: 2m}\n"
        "    provider: {when: provider_errors, provider: assemblyai,"
        " over: 0.5, summary: \"AssemblyAI \\\"fails\\\"\"}\n");
    char *out = NULL;
    int rc =
        sl_test_sh(&out,
                   "'%s' alerts export --prometheus -p '%s' -o '%s/r.yml'"
                   " && promtool check rules '%s/r.yml'",
                   sl_test_bin(), yaml, sl_test_tmpdir(), sl_test_tmpdir());
    if (rc != 0) fail_msg("export or promtool failed: %s", out);
    assert_non_null(strstr(out, "SUCCESS: 7 rules found"));
    free(out);
}

static void alerts_test_sends_one_message(void **state) {
    (void)state;
    fake_hooks f;
    hooks_start(&f, "test_hooks.log", NULL);
    set_urls(&f);
    const char *yaml = sl_test_file("t.yaml", BACKLOG_YAML);
    char *out = NULL;
    int rc = sl_test_sh(&out, "'%s' alerts test backlog_a -p '%s'",
                        sl_test_bin(), yaml);
    if (rc != 0) fail_msg("alerts test failed: %s", out);
    free(out);
    json_t *a = hooks_requests(&f, "/slack");
    assert_int_equal(json_array_size(a), 1);
    assert_non_null(strstr(req_body(a, 0), "[TEST]"));
    json_decref(a);
    hooks_stop(&f);
}

static void yaml_mistakes_are_reported_at_file_line_col(void **state) {
    (void)state;
    static const char bad[] =
        "pipeline: al\n"
        "security: {rls: false}\n"
        "stages:\n"
        "  a: {queue: al_a, handler: noop}\n"
        "alerts:\n"
        "  notifiers:\n"
        "    s: {type: slak, url_env: \"https://x\"}\n"
        "  rules:\n"
        "    r1: {when: backlogg}\n"
        "    r2: {when: backlog, over: 1, stage: b, notify: [t]}\n"
        "    r3: {when: failure_ratio, over: 2, attempts: 3}\n";
    sl_model *m = NULL;
    sl_diags d = {0};
    assert_int_not_equal(
        sl_dsl_load_string("p.yaml", bad, sizeof bad - 1, &m, &d), 0);
    char *msg = sl_diags_format(&d);
    assert_non_null(strstr(msg, "p.yaml:7:15: type: expected slack or "
                                "webhook, got 'slak' (did you mean "
                                "'slack'?)"));
    assert_non_null(strstr(msg, "p.yaml:7:30: url_env 'https://x': expected "
                                "the name of an environment variable"));
    assert_non_null(strstr(msg, "p.yaml:9:16: when: expected"));
    assert_non_null(strstr(msg, "(did you mean 'backlog'?)"));
    assert_non_null(strstr(msg, "p.yaml:10:41: stage: no stage 'b'"));
    assert_non_null(strstr(msg, "notify: no notifier 't'"));
    assert_non_null(strstr(msg, "p.yaml:11:37: over: must be between 0 and 1"));
    assert_non_null(strstr(msg, "'attempts' does not apply to a "
                                "'failure_ratio' rule"));
    free(msg);
    sl_diags_free(&d);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(yaml_mistakes_are_reported_at_file_line_col),
        cmocka_unit_test_teardown(backlog_fires_once_repeats_and_resolves_once,
                                  rt_teardown),
        cmocka_unit_test_teardown(burst_of_50_errors_gives_one_signed_digest,
                                  rt_teardown),
        cmocka_unit_test_teardown(retry_after_of_a_429_delays_the_next_send,
                                  rt_teardown),
        cmocka_unit_test(promtool_accepts_the_exported_rules),
        cmocka_unit_test(alerts_test_sends_one_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
