/* test_text_paths.c - every path that writes text, fed hostile text
 * through a Lua stage under the real `sluice run` and PostgreSQL (issue
 * 11): invalid bytes, NUL bytes, 1 MiB strings, and multi-byte
 * characters placed so that every fixed-size cut falls at every byte of a
 * character. Each job must end in its proper state (never stuck
 * in_progress) with a readable message; every line of the worker's
 * --log-format json output must parse. Also: the noop handler honours a
 * stop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "rtlib.h"
#include "text.h"

static const char *const HOOK =
    "local function payload(kind)\n"
    "  if kind == 'utf8' then return string.rep('\\u{e9}', 1000) end\n"
    "  if kind == 'emoji' then return string.rep('\\u{1F600}', 600) end\n"
    "  if kind == 'invalid' then return '\\255 bad \\192\\175 \\237\\160\\128'\n"
    "  end\n"
    "  if kind == 'nul' then return 'before\\0after' end\n"
    "  if kind == 'mib' then return string.rep('\\u{e9}', 524288) end\n"
    "  if kind == 'secret' then return 'password=postgres sk-text-0123456789abcdef'\n"
    "  end\n"
    "  return kind\n"
    "end\n"
    "function run(job)\n"
    "  local text = string.rep('x', job.input.off) .. payload(job.input.kind)\n"
    "  local what = job.input.what\n"
    "  if what == 'fail' then sluice.fail(text, 'invalid_input') end\n"
    "  if what == 'retry' then sluice.retry(text, 0) end\n"
    "  if what == 'error' then error(text) end\n"
    "  if what == 'progress' then sluice.progress(50, text) end\n"
    "  if what == 'log' then\n"
    "    sluice.log('info', text, {field = text, n = 3, ok = true,\n"
    "                             t = {text}})\n"
    "  end\n"
    "  if what == 'checkpoint' then sluice.checkpoint.set({t = text}) end\n"
    "  if what == 'output' then return {result = text} end\n"
    "  return {}\n"
    "end\n";

static const char *YAML =
    "pipeline: textp\n"
    "subject:\n"
    "  table: items\n"
    "  status: {column: status, values: [new, working, done, failed]}\n"
    "  progress: progress\n"
    "  detail: detail\n"
    "security: {rls: false}\n"
    "sweep: {interval: 300ms, pending_age: 1s}\n"
    "defaults:\n"
    "  retry: {max_attempts: 2, backoff: fixed, initial: 50ms, jitter: 0}\n"
    "  lease: 10s\n"
    "  heartbeat: 1s\n"
    "  timeout: 60s\n"
    "stages:\n"
    "  step:\n"
    "    queue: textp_jobs\n"
    "    handler: lua\n"
    "    columns:\n"
    "      what: text\n"
    "      kind: text\n"
    "      off: integer\n"
    "      result: text\n"
    "    hooks:\n"
    "      run: {file: textp.lua, memory: 64MB, instructions: 100000000}\n"
    "    status:\n"
    "      on_start: {status: working, progress: 10}\n"
    "      progress: {status: working, from: 10, to: 90}\n"
    "      on_done: {status: done, progress: 100}\n"
    "      on_error: {status: failed}\n";

static const char *const WHATS[] = {"fail",     "retry",      "error", "progress",
                                    "log",      "checkpoint", "output"};
static const char *const KINDS[] = {"utf8", "emoji", "invalid", "nul", "mib",
                                    "secret"};

static int has_replacement(const char *s) {
    return s && strstr(s, "\xEF\xBF\xBD") != NULL;
}

/* Every row: the proper final state, and readable text in it. */
static void check_jobs(PGconn *c) {
    PGresult *r = PQexec(c, "SELECT what, kind, off, status, attempts,"
                            " coalesce(last_error, ''), coalesce(error_class,"
                            " ''), coalesce(status_detail, ''),"
                            " coalesce(checkpoint::text, ''),"
                            " coalesce(result, '') FROM textp_jobs");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    int rows = PQntuples(r);
    assert_true(rows > 0);
    for (int i = 0; i < rows; i++) {
        const char *what = PQgetvalue(r, i, 0), *kind = PQgetvalue(r, i, 1);
        const char *status = PQgetvalue(r, i, 3);
        const char *err = PQgetvalue(r, i, 5), *cls = PQgetvalue(r, i, 6);
        const char *detail = PQgetvalue(r, i, 7), *cp = PQgetvalue(r, i, 8);
        const char *result = PQgetvalue(r, i, 9);
        int clean = strcmp(kind, "utf8") == 0 || strcmp(kind, "emoji") == 0 ||
                    strcmp(kind, "mib") == 0;
        int fails = strcmp(what, "fail") == 0 || strcmp(what, "retry") == 0 ||
                    strcmp(what, "error") == 0 ||
                    /* Data is never altered: a JSON value with invalid
                     * UTF-8 is the script's error. */
                    ((strcmp(what, "output") == 0 ||
                      strcmp(what, "checkpoint") == 0) &&
                     strcmp(kind, "invalid") == 0);
        char where[96];
        snprintf(where, sizeof where, "%s/%s/%s", what, kind,
                 PQgetvalue(r, i, 2));
        if (fails) {
            if (strcmp(status, "error") != 0)
                fail_msg("%s: status %s, want error (%s)", where, status, err);
            if (!*err || strlen(err) > 1100)
                fail_msg("%s: last_error of %zu bytes", where, strlen(err));
            if (strcmp(what, "fail") == 0)
                assert_string_equal(cls, "invalid_input");
            /* Cut between characters: no U+FFFD from a cut. */
            if (clean && has_replacement(err))
                fail_msg("%s: a character was cut in: %s", where, err);
            if (strcmp(kind, "nul") == 0 && strcmp(what, "error") != 0 &&
                !strstr(err, "before\xEF\xBF\xBD" "after"))
                fail_msg("%s: NUL not shown as U+FFFD: %s", where, err);
        } else {
            if (strcmp(status, "done") != 0)
                fail_msg("%s: status %s, want done (%s)", where, status, err);
        }
        if (strcmp(what, "progress") == 0) {
            if (!*detail || strlen(detail) > 512)
                fail_msg("%s: detail of %zu bytes", where, strlen(detail));
            if (clean && has_replacement(detail))
                fail_msg("%s: a character was cut in the detail", where);
        }
        if (strcmp(what, "checkpoint") == 0 && !fails && !*cp)
            fail_msg("%s: no checkpoint stored", where);
        if (strcmp(what, "output") == 0 && strcmp(kind, "mib") == 0)
            assert_int_equal(strlen(result), 1 << 20);
        if (strcmp(kind, "secret") == 0) {
            const char *all[] = {err, detail, cp, result};
            for (int k = 0; k < 4; k++) {
                assert_null(strstr(all[k], "postgres"));
                assert_null(strstr(all[k], "sk-text-0123456789abcdef"));
            }
        }
    }
    PQclear(r);
}

static void check_json_log(const char *path) {
    size_t len = 0;
    char *log = rt_read_file(path, &len);
    assert_non_null(log);
    assert_true(sl_text_valid(log, len));
    int lines = 0, typed = 0;
    for (char *line = log, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) fail_msg("last log line has no newline");
        *nl = '\0';
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!json_is_object(j))
            fail_msg("log line %d is not a JSON object (%s): %.200s", lines,
                     je.text, line);
        assert_true(json_is_string(json_object_get(j, "msg")));
        if (json_is_integer(json_object_get(j, "n")) &&
            json_is_true(json_object_get(j, "ok")))
            typed++;
        json_t *att = json_object_get(j, "attempt");
        if (att) assert_true(json_is_integer(att));
        assert_null(strstr(line, "sk-text-0123456789abcdef"));
        json_decref(j);
        lines++;
    }
    assert_true(lines > 10);
    assert_true(typed > 0);
    free(log);
}

static void hostile_text_on_every_path_ends_every_job_properly(void **state) {
    (void)state;
    PGconn *c;
    setenv("TEXTP_PASSWORD", "postgres", 1);
    setenv("TEXTP_API_KEY", "sk-text-0123456789abcdef", 1);
    sl_test_file("textp.lua", HOOK);
    sl_model *m = rt_setup("textp", YAML, &c);
    sl_test_exec(c, "INSERT INTO items DEFAULT VALUES");
    char sql[512];
    for (size_t w = 0; w < sizeof WHATS / sizeof WHATS[0]; w++)
        for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
            /* Shift the characters so that each fixed cut lands at each
             * byte of one. */
            int offs = strcmp(KINDS[k], "utf8") == 0    ? 2
                       : strcmp(KINDS[k], "emoji") == 0 ? 4
                                                        : 1;
            for (int off = 0; off < offs; off++) {
                snprintf(sql, sizeof sql,
                         "INSERT INTO textp_jobs (item_id, what, kind, off)"
                         " SELECT id, '%s', '%s', %d FROM items",
                         WHATS[w], KINDS[k], off);
                sl_test_exec(c, sql);
            }
        }
    char log[512];
    snprintf(log, sizeof log, "%s/textp.log", sl_test_tmpdir());
    int rc = sl_test_sh(NULL,
                        "timeout 120 %s run --allow-superuser -p"
                        " %s/textp.yaml --exit-when-idle -c 2"
                        " --log-format json --log-level debug 2>%s",
                        sl_test_bin(), sl_test_tmpdir(), log);
    /* Exit 3: jobs it ran failed for good, as several paths must. */
    assert_int_equal(rc, 3);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM textp_jobs WHERE"
                                     " status NOT IN ('done', 'error')"),
                     0);
    check_jobs(c);
    check_json_log(log);
    PQfinish(c);
    sl_model_free(m);
}

/* Issue 11 item 7: `noop` with sleep_ms reported done when told to stop. */
static void noop_told_to_stop_releases_its_job(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup(
        "textp_noop",
        "pipeline: noopstop\n"
        "security: {rls: false}\n"
        "defaults: {lease: 30s, heartbeat: 1s, timeout: 60s}\n"
        "stages:\n"
        "  nap:\n"
        "    queue: nap_jobs\n"
        "    handler: noop\n"
        "    with: {sleep_ms: 20000}\n",
        &c);
    sl_test_exec(c, "INSERT INTO nap_jobs DEFAULT VALUES");
    pid_t w = rt_track(rt_spawn(m, 1, 1, 0, 200));
    assert_true(rt_wait_for(c, "SELECT count(*) FROM nap_jobs WHERE status ="
                               " 'in_progress'",
                            1, 10000));
    int64_t t0 = sl_test_now_ms();
    kill(w, SIGTERM);
    assert_int_equal(rt_wait(w, 10000), 0);
    assert_true(sl_test_now_ms() - t0 < 5000);
    char *row = sl_test_scalar(c, "SELECT status || '|' || attempts ||"
                                  " '|' || (locked_by IS NULL) FROM nap_jobs");
    assert_string_equal(row, "pending|0|true");
    free(row);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hostile_text_on_every_path_ends_every_job_properly),
        cmocka_unit_test(noop_told_to_stop_releases_its_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
