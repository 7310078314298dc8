/* test_lua_stage.c - the `lua` handler under the real runtime and
 * PostgreSQL: a Lua stage completes with its outputs in the queue row,
 * reports progress onto the subject, checkpoints and resumes after its
 * worker is SIGKILLed, retries through sluice.retry, fails permanently on a
 * script error, and a worker keeps serving jobs after sandbox violations. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rtlib.h"

static const char *const HOOK =
    "local function pause(job)\n"
    "  local p = tonumber(job.input.pause or 0) or 0\n"
    "  if p > 0 then sluice.sql.query('SELECT pg_sleep($1)', p) end\n"
    "end\n"
    "function run(job)\n"
    "  local w = job.input.word or ''\n"
    "  if w == 'escape' then return io.open('/etc/passwd') end\n"
    "  if w == 'spin' then while true do end end\n"
    "  if w == 'boom' then local t = nil; return t.field end\n"
    "  if w == 'retry' and job.attempt == 1 then\n"
    "    sluice.retry('not ready yet', 0.1)\n"
    "  end\n"
    "  if w == 'write' then\n"
    "    sluice.sql.query('INSERT INTO lua_steps (job, step, attempt)'\n"
    "      .. ' VALUES ($1, 0, $2)', job.id, job.attempt)\n"
    "  end\n"
    "  local steps = job.config.steps\n"
    "  local cp = sluice.checkpoint.get() or {}\n"
    "  local first = (cp.step or 0) + 1\n"
    "  for i = first, steps do\n"
    "    pause(job)\n"
    "    if job.config.log_steps then\n"
    "      sluice.sql.query('INSERT INTO lua_steps (job, step, attempt)'\n"
    "        .. ' VALUES ($1, $2, $3)', job.id, i, job.attempt)\n"
    "    end\n"
    "    sluice.checkpoint.set({step = i})\n"
    "    sluice.progress(i * 100 // steps, string.format('step %d/%d', i, "
    "steps))\n"
    "  end\n"
    "  sluice.log('info', 'lua stage done', {word = w})\n"
    "  return {result = string.upper(w), steps_done = steps,\n"
    "          resumed_from = first, extra = 'not a column'}\n"
    "end\n";

/* A pipeline over rtlib's `items` subject with one Lua stage. */
static const char *yaml(int sql_writes, int log_steps, long long instructions,
                        const char *timeout) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "pipeline: luat\n"
             "subject:\n"
             "  table: items\n"
             "  status: {column: status, values: [new, working, done, "
             "failed]}\n"
             "  progress: progress\n"
             "  detail: detail\n"
             "security: {rls: false}\n"
             "sweep: {interval: 300ms, pending_age: 1s}\n"
             "defaults:\n"
             "  retry: {max_attempts: 3, backoff: fixed, initial: 100ms, "
             "max_delay: 1s, jitter: 0}\n"
             "  lease: 1500ms\n"
             "  heartbeat: 300ms\n"
             "  timeout: %s\n"
             "stages:\n"
             "  step:\n"
             "    queue: luat_jobs\n"
             "    handler: lua\n"
             "    sql_writes: %s\n"
             "    with: {steps: 4, log_steps: %s}\n"
             "    columns:\n"
             "      word: text\n"
             "      pause: real\n"
             "      result: text\n"
             "      steps_done: integer\n"
             "      resumed_from: integer\n"
             "    hooks:\n"
             "      run: {file: luat.lua, instructions: %lld}\n"
             "    status:\n"
             "      on_start: {status: working, progress: 10}\n"
             "      progress: {status: working, from: 10, to: 90}\n"
             "      on_done: {status: done, progress: 100}\n"
             "      on_error: {status: failed}\n",
             timeout, sql_writes ? "true" : "false",
             log_steps ? "true" : "false", instructions);
    return buf;
}

static sl_model *setup_with(const char *db, int sql_writes, int log_steps,
                            long long instructions, const char *timeout,
                            PGconn **c) {
    sl_test_file("luat.lua", HOOK);
    sl_model *m =
        rt_setup(db, yaml(sql_writes, log_steps, instructions, timeout), c);
    sl_test_exec(*c, "CREATE TABLE lua_steps (job uuid, step int, attempt int,"
                     " at timestamptz DEFAULT clock_timestamp())");
    return m;
}

static sl_model *setup_db(const char *db, int sql_writes, int log_steps,
                          PGconn **c) {
    return setup_with(db, sql_writes, log_steps, 1000000, "30s", c);
}

/* Inserts a subject and a job; returns the job id (static buffer). */
static const char *enqueue(PGconn *c, const char *word, double pause) {
    static char id[8][64];
    static int n;
    char *item = sl_test_scalar(c, "INSERT INTO items DEFAULT VALUES "
                                   "RETURNING id");
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO luat_jobs (item_id, word, pause) VALUES ('%s', "
             "'%s', %g) RETURNING id",
             item, word, pause);
    char *j = sl_test_scalar(c, sql);
    char *out = id[n++ % 8];
    snprintf(out, 64, "%s", j);
    free(j);
    free(item);
    return out;
}

static char *job_field(PGconn *c, const char *id, const char *expr) {
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT %s FROM luat_jobs WHERE id = '%s'", expr,
             id);
    return sl_test_scalar(c, sql);
}

static long job_long(PGconn *c, const char *id, const char *expr) {
    char *v = job_field(c, id, expr);
    long n = v ? strtol(v, NULL, 10) : -1;
    free(v);
    return n;
}

static void assert_job(PGconn *c, const char *id, const char *expr,
                       const char *want) {
    char *v = job_field(c, id, expr);
    if (!v || strcmp(v, want) != 0)
        fail_msg("job %s: %s = '%s', want '%s'", id, expr, v ? v : "NULL",
                 want);
    free(v);
}

static void lua_stage_completes_and_writes_outputs_to_its_columns(void **s) {
    (void)s;
    PGconn *c;
    sl_model *m = setup_db("sluice_test_lua_stage_done", 0, 0, &c);
    const char *id = enqueue(c, "hello", 0);
    rt_run_until_idle(m, 1, 1);
    assert_job(c, id, "status::text", "done");
    assert_job(c, id, "result", "HELLO");
    assert_job(c, id, "steps_done::text", "4");
    assert_job(c, id, "resumed_from::text", "1");
    assert_job(c, id, "attempts::text", "1");
    assert_job(c, id, "checkpoint->>'step'", "4");
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT i.status FROM items i JOIN luat_jobs j ON j.item_id = "
             "i.id WHERE j.id = '%s'",
             id);
    char *st = sl_test_scalar(c, sql);
    assert_string_equal(st, "done");
    free(st);
    PQfinish(c);
    sl_model_free(m);
}

static void lua_stage_progress_is_mapped_onto_the_subject(void **s) {
    (void)s;
    PGconn *c;
    sl_model *m = setup_db("sluice_test_lua_stage_progress", 0, 0, &c);
    enqueue(c, "progress", 0.05);
    rt_run_until_idle(m, 1, 1);
    /* Steps 1..4 report 25/50/75/100 %, mapped onto 10..90 while the
     * subject is `working`: 30, 50, 70 (and 90) must all have been seen. */
    assert_int_equal(sl_test_long(c, "SELECT count(DISTINCT progress) FROM "
                                     "subject_log WHERE status = 'working' "
                                     "AND progress IN (30, 50, 70)"),
                     3);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM subject_log WHERE detail = "
                        "'step 2/4'"),
        1);
    PQfinish(c);
    sl_model_free(m);
}

static long poll_checkpoint(PGconn *c, const char *id, long at_least,
                            int64_t timeout_ms) {
    int64_t end = sl_test_now_ms() + timeout_ms;
    while (sl_test_now_ms() < end) {
        long v = job_long(c, id, "coalesce((checkpoint->>'step')::int, 0)");
        if (v >= at_least) return v;
        usleep(20000);
    }
    return -1;
}

static void lua_stage_resumes_from_its_checkpoint_after_a_kill(void **s) {
    (void)s;
    PGconn *c;
    sl_model *m = setup_db("sluice_test_lua_stage_kill", 1, 1, &c);
    const char *id = enqueue(c, "durable", 0.4);

    pid_t w1 = rt_spawn(m, 1, 1, 0, 0);
    assert_true(poll_checkpoint(c, id, 2, 20000) >= 2);
    kill(w1, SIGKILL);
    int st;
    waitpid(w1, &st, 0);
    assert_true(WIFSIGNALED(st));
    long saved = job_long(c, id, "(checkpoint->>'step')::int");
    assert_true(saved >= 2 && saved < 4);
    assert_job(c, id, "status::text", "in_progress");

    pid_t w2 = rt_spawn(m, 1, 1, 1, 1000);
    assert_int_equal(rt_wait(w2, 30000), 0);
    assert_job(c, id, "status::text", "done");
    assert_job(c, id, "attempts::text", "2");
    char want[32];
    snprintf(want, sizeof want, "%ld", saved + 1);
    assert_job(c, id, "resumed_from::text", want);

    /* Steps up to the saved checkpoint ran once, in the first attempt; the
     * second attempt started right after it and ran each later step once. */
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM lua_steps WHERE job = '%s' AND step <= %ld "
             "AND attempt <> 1",
             id, saved);
    assert_int_equal(sl_test_long(c, sql), 0);
    snprintf(sql, sizeof sql,
             "SELECT min(step) FROM lua_steps WHERE job = '%s' AND attempt = 2",
             id);
    assert_int_equal(sl_test_long(c, sql), saved + 1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM lua_steps WHERE job = '%s' AND attempt = 2",
             id);
    assert_int_equal(sl_test_long(c, sql), 4 - saved);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM (SELECT step FROM lua_steps WHERE job = '%s'"
             " AND step <= %ld GROUP BY step HAVING count(*) > 1) d",
             id, saved);
    assert_int_equal(sl_test_long(c, sql), 0);
    PQfinish(c);
    sl_model_free(m);
}

static void lua_stage_retry_runs_the_job_again(void **s) {
    (void)s;
    PGconn *c;
    sl_model *m = setup_db("sluice_test_lua_stage_retry", 0, 0, &c);
    const char *id = enqueue(c, "retry", 0);
    rt_run_until_idle(m, 1, 1);
    assert_job(c, id, "status::text", "done");
    assert_job(c, id, "attempts::text", "2");
    assert_job(c, id, "result", "RETRY");
    PQfinish(c);
    sl_model_free(m);
}

static void lua_script_error_fails_the_job_at_once_with_a_traceback(void **s) {
    (void)s;
    PGconn *c;
    sl_model *m = setup_db("sluice_test_lua_stage_error", 0, 0, &c);
    const char *id = enqueue(c, "boom", 0);
    rt_run_until_idle(m, 1, 1);
    assert_job(c, id, "status::text", "error");
    assert_job(c, id, "attempts::text", "1");
    assert_job(c, id, "error_class", "script");
    char *e = job_field(c, id, "last_error");
    assert_non_null(e);
    assert_non_null(strstr(e, "attempt to index a nil value"));
    assert_non_null(strstr(e, "stack traceback:"));
    free(e);
    PQfinish(c);
    sl_model_free(m);
}

static void worker_keeps_serving_after_sandbox_violations(void **s) {
    (void)s;
    PGconn *c;
    sl_model *m = setup_db("sluice_test_lua_stage_violations", 0, 0, &c);
    const char *esc = enqueue(c, "escape", 0);
    const char *spin = enqueue(c, "spin", 0);
    const char *wr = enqueue(c, "write", 0);
    const char *ok = enqueue(c, "fine", 0);
    /* One worker thread, one state, serving all four in turn. */
    rt_run_until_idle(m, 1, 1);
    assert_job(c, esc, "status::text", "error");
    char *e = job_field(c, esc, "last_error");
    assert_non_null(strstr(e, "'io' is not available"));
    free(e);
    assert_job(c, spin, "status::text", "error");
    e = job_field(c, spin, "last_error");
    assert_non_null(strstr(e, "instruction limit exceeded"));
    free(e);
    assert_job(c, wr, "status::text", "error");
    e = job_field(c, wr, "last_error");
    assert_non_null(strstr(e, "read-only transaction"));
    free(e);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM lua_steps"), 0);
    assert_job(c, ok, "status::text", "done");
    assert_job(c, ok, "result", "FINE");
    PQfinish(c);
    sl_model_free(m);
}

static void
lua_stage_past_its_timeout_is_stopped_and_the_worker_goes_on(void **s) {
    (void)s;
    PGconn *c;
    /* A budget far beyond the timeout: only the timeout can stop it. */
    sl_model *m = setup_with("sluice_test_lua_stage_timeout", 0, 0,
                             100000000000LL, "1s", &c);
    const char *spin = enqueue(c, "spin", 0);
    const char *ok = enqueue(c, "after", 0);
    int64_t t0 = sl_test_now_ms();
    rt_run_until_idle(m, 1, 1);
    assert_true(sl_test_now_ms() - t0 < 15000);
    assert_job(c, spin, "error_class", "timeout");
    assert_job(c, ok, "status::text", "done");
    assert_job(c, ok, "result", "AFTER");
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lua_stage_completes_and_writes_outputs_to_its_columns),
        cmocka_unit_test(lua_stage_progress_is_mapped_onto_the_subject),
        cmocka_unit_test(lua_stage_resumes_from_its_checkpoint_after_a_kill),
        cmocka_unit_test(lua_stage_retry_runs_the_job_again),
        cmocka_unit_test(
            lua_script_error_fails_the_job_at_once_with_a_traceback),
        cmocka_unit_test(worker_keeps_serving_after_sandbox_violations),
        cmocka_unit_test(
            lua_stage_past_its_timeout_is_stopped_and_the_worker_goes_on),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
