/* test_sentry.c - Sentry events against a recording fake envelope endpoint
 * (tests/fakes/fake_hooks.py): a job that fails on every attempt produces
 * exactly one event, when its failure is final, with the pipeline, stage,
 * error class, attempts, job and subject ids as tags and no secret; the
 * DSN parser gives the envelope URL. */
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fakes/fakehooks.h"
#include "rtlib.h"
#include "sentry.h"

extern char **environ;

#define SECRET "sk-live-0123456789abcdefXYZ"

static const char *const HOOK =
    "function run(job)\n"
    "  sluice.fail('upstream refused key " SECRET "', 'retryable')\n"
    "end\n";

static const char *const YAML =
    "pipeline: se\n"
    "security: {rls: false}\n"
    "defaults:\n"
    "  retry: {max_attempts: 2, backoff: fixed, initial: 50ms, jitter: 0}\n"
    "stages:\n"
    "  work:\n"
    "    queue: se_jobs\n"
    "    handler: lua\n"
    "    hooks: {run: {file: se.lua}}\n";

static void
final_failure_sends_one_event_with_tags_and_no_secret(void **state) {
    (void)state;
    sl_test_file("se.lua", HOOK);
    PGconn *c;
    sl_model *m = rt_setup("sentry_fail", YAML, &c);
    fake_hooks f;
    hooks_start(&f, "sentry_hooks.log", NULL);
    char dsn[160];
    snprintf(dsn, sizeof dsn, "http://pubkey42@127.0.0.1:%d/7", f.port);
    setenv("SENTRY_DSN", dsn, 1);
    setenv("UPSTREAM_API_KEY", SECRET, 1);
    setenv("DATABASE_URL", rt_conninfo(), 1);
    char *id = sl_test_scalar(c, "INSERT INTO se_jobs DEFAULT VALUES"
                                 " RETURNING id::text");

    const char *argv[] = {sl_test_bin(),
                          "run",
                          "--allow-superuser",
                          "-p",
                          m->pipelines[0].file,
                          "--exit-when-idle",
                          NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, sl_test_bin(), NULL, NULL,
                                 (char *const *)argv, environ),
                     0);
    rt_track(pid);
    /* Exit 3: the job it ran failed for good (docs/cli.md#exit-codes). */
    assert_int_equal(rt_wait(pid, 60000), 3);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM se_jobs WHERE status = 'error'"
                        " AND attempts = 2"),
        1);

    json_t *a = hooks_requests(&f, NULL);
    assert_int_equal(json_array_size(a), 1);
    json_t *r = json_array_get(a, 0);
    assert_string_equal(json_string_value(json_object_get(r, "path")),
                        "/api/7/envelope/");
    assert_non_null(strstr(json_string_value(json_object_get(r, "auth")),
                           "sentry_key=pubkey42"));
    const char *body = json_string_value(json_object_get(r, "body"));
    assert_null(strstr(body, SECRET));
    /* Header line, item header line, event. */
    const char *l2 = strchr(body, '\n');
    assert_non_null(l2);
    const char *l3 = strchr(l2 + 1, '\n');
    assert_non_null(l3);
    json_t *ev = json_loads(l3 + 1, JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(ev);
    json_t *tags = json_object_get(ev, "tags");
    assert_string_equal(json_string_value(json_object_get(tags, "pipeline")),
                        "se");
    assert_string_equal(json_string_value(json_object_get(tags, "stage")),
                        "work");
    assert_string_equal(json_string_value(json_object_get(tags, "error_class")),
                        "retryable");
    assert_string_equal(json_string_value(json_object_get(tags, "attempts")),
                        "2");
    assert_string_equal(json_string_value(json_object_get(tags, "job_id")), id);
    assert_non_null(json_object_get(tags, "subject_id"));
    assert_string_equal(json_string_value(json_object_get(ev, "level")),
                        "error");
    assert_non_null(strstr(json_string_value(json_object_get(
                               json_object_get(ev, "message"), "formatted")),
                           "upstream refused key"));
    json_decref(ev);
    json_decref(a);
    free(id);
    unsetenv("SENTRY_DSN");
    hooks_stop(&f);
    PQfinish(c);
    sl_model_free(m);
}

static void dsn_gives_the_envelope_url(void **state) {
    (void)state;
    char url[256], key[64], err[128];
    assert_int_equal(sl_sentry_parse_dsn("https://abc@o1.ingest.sentry.io/99",
                                         url, sizeof url, key, sizeof key, err,
                                         sizeof err),
                     0);
    assert_string_equal(url, "https://o1.ingest.sentry.io/api/99/envelope/");
    assert_string_equal(key, "abc");
    assert_int_equal(sl_sentry_parse_dsn("http://k:s@h:9000/sub/path/5", url,
                                         sizeof url, key, sizeof key, err,
                                         sizeof err),
                     0);
    assert_string_equal(url, "http://h:9000/sub/path/api/5/envelope/");
    assert_string_equal(key, "k");
    assert_int_equal(sl_sentry_parse_dsn("abc@host/1", url, sizeof url, key,
                                         sizeof key, err, sizeof err),
                     -SL_EINVAL);
    assert_int_equal(sl_sentry_parse_dsn("https://host/1", url, sizeof url, key,
                                         sizeof key, err, sizeof err),
                     -SL_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            final_failure_sends_one_event_with_tags_and_no_secret, rt_teardown),
        cmocka_unit_test(dsn_gives_the_envelope_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
