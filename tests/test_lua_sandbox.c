/* test_lua_sandbox.c - the Lua host: loading hooks, the sandbox refusing
 * each escape with a clear error while the same state keeps serving normal
 * calls, the budgets, JSON conversion, and the sluice API outside a job.
 * sluice.sql runs against the real PostgreSQL (sl_lua_set_conn). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "lua_host.h"
#include "testlib.h"

/* The hook file every test loads: `ok` is the normal call; the others each
 * try one escape. `calls` is file-local state that survives failures. */
static const char *const HOOKS =
    "local calls = 0\n"
    "function ok(x)\n"
    "  calls = calls + 1\n"
    "  return {pong = x, calls = calls}\n"
    "end\n"
    "function io_open() return io.open('/etc/passwd') end\n"
    "function os_execute() return os.execute('true') end\n"
    "function os_getenv() return os.getenv('HOME') end\n"
    "function require_arbitrary() return require('socket') end\n"
    "function require_parent() return require('..secret') end\n"
    "function require_local() return require('helpers.text').shout('hi') end\n"
    "function load_binary()\n"
    "  local f, err = load(string.dump(function() return 1 end))\n"
    "  if not f then error(err, 0) end\n"
    "  return f()\n"
    "end\n"
    "function load_text() return load('return 1 + 2')() end\n"
    "function memory_bomb() return #string.rep('x', 1 << 30) end\n"
    "function table_bomb()\n"
    "  local t = {}\n"
    "  for i = 1, 1e9 do t[i] = {i} end\n"
    "end\n"
    "function infinite_loop() while true do end end\n"
    "function loop_that_catches()\n"
    "  while true do pcall(function() while true do end end) end\n"
    "end\n"
    "function deep_recursion()\n"
    "  local function f(n) return f(n + 1) + 1 end\n"
    "  return f(1)\n"
    "end\n"
    "function write_global() counter = 1 end\n"
    "function read_global() return undefined_thing + 1 end\n"
    "function unlock_env() setmetatable(_ENV, nil) end\n"
    "function dofile_call() return dofile('/etc/passwd') end\n"
    "function runtime_error() local t = nil; return t.field end\n"
    "function retry_later() sluice.retry('upstream busy', 7) end\n"
    "function fail_invalid() sluice.fail('bad transcript', 'invalid_input') "
    "end\n"
    "function progress() sluice.progress(50, 'half') end\n"
    "function checkpoint_get() return sluice.checkpoint.get() end\n"
    "function sql_read(v) return sluice.sql.query('SELECT $1::int + 1 AS n, "
    "NULL::text AS gone, true AS b, $2::jsonb AS j', v, {a = {1, 2}}) end\n"
    "function sql_write(v)\n"
    "  local rows, n = sluice.sql.query('INSERT INTO lua_t (v) VALUES ($1)', "
    "v)\n"
    "  return n\n"
    "end\n"
    "function echo(...) return {...} end\n"
    "function identity(v) return v end\n"
    "function is_null(v) return v == sluice.json.null end\n"
    "function encode(v) return sluice.json.encode(v) end\n"
    "function decode(s) return sluice.json.decode(s) end\n"
    "function empty_array() return sluice.json.array({}) end\n"
    "function empty_table() return {} end\n"
    "function bad_return() return {f = print} end\n"
    "function log_it() sluice.log('info', 'hello', {n = 1, t = {a = 1}}) end\n"
    "function config() return sluice.config() end\n";

static const char *const HELPER =
    "local M = {}\n"
    "function M.shout(s) return string.upper(s) .. '!' end\n"
    "return M\n";

/* Hook points of the stage; every one is bound to the function of the
 * same name. */
static const char *const POINTS[] = {"ok",
                                     "io_open",
                                     "os_execute",
                                     "os_getenv",
                                     "require_arbitrary",
                                     "require_parent",
                                     "require_local",
                                     "load_binary",
                                     "load_text",
                                     "memory_bomb",
                                     "table_bomb",
                                     "infinite_loop",
                                     "loop_that_catches",
                                     "deep_recursion",
                                     "write_global",
                                     "read_global",
                                     "unlock_env",
                                     "dofile_call",
                                     "runtime_error",
                                     "retry_later",
                                     "fail_invalid",
                                     "progress",
                                     "checkpoint_get",
                                     "sql_read",
                                     "sql_write",
                                     "echo",
                                     "identity",
                                     "is_null",
                                     "encode",
                                     "decode",
                                     "empty_array",
                                     "empty_table",
                                     "bad_return",
                                     "log_it",
                                     "config",
                                     NULL};

#define NPOINTS (sizeof POINTS / sizeof POINTS[0] - 1)

typedef struct fixture {
    sl_stage stage;
    sl_hook hooks[NPOINTS];
    sl_lua *L;
} fixture;

static const char *hook_file(void) {
    static char path[512];
    if (!path[0]) {
        char dir[400];
        snprintf(dir, sizeof dir, "%s/helpers", sl_test_tmpdir());
        mkdir(dir, 0755);
        sl_test_file("helpers/text.lua", HELPER);
        sl_test_file("secret.lua", "return 'secret'\n");
        snprintf(path, sizeof path, "%s", sl_test_file("hooks.lua", HOOKS));
    }
    return path;
}

static void init_stage(fixture *f, int sql_writes) {
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < NPOINTS; i++) {
        f->hooks[i].point = POINTS[i];
        f->hooks[i].file = hook_file();
        f->hooks[i].function = POINTS[i];
        f->hooks[i].instruction_limit = 2000000;
        f->hooks[i].memory_limit = (size_t)16 << 20;
    }
    /* Limits are per hook: deep recursion gets room to reach Lua's own
     * stack limit before the memory cap. */
    for (size_t i = 0; i < NPOINTS; i++)
        if (strcmp(POINTS[i], "deep_recursion") == 0)
            f->hooks[i].memory_limit = (size_t)96 << 20;
    f->stage.name = "sandboxed";
    f->stage.queue = "sandboxed_jobs";
    f->stage.handler = "lua";
    f->stage.with = json_pack("{s:s,s:i}", "model", "m1", "size", 3);
    f->stage.hooks = f->hooks;
    f->stage.nhooks = NPOINTS;
    f->stage.timeout_ms = 10000;
    f->stage.sql_writes = sql_writes;
}

static int setup(void **state) {
    fixture *f = malloc(sizeof *f);
    init_stage(f, 0);
    char err[512];
    int rc = sl_lua_open(&f->stage, &f->L, err, sizeof err);
    if (rc != 0) fail_msg("sl_lua_open: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    sl_lua_close(f->L);
    json_decref(f->stage.with);
    free(f);
    return 0;
}

/* Calls `point` with args (stolen, may be NULL); returns rc, fills res and
 * *ret (caller frees). */
static int call(fixture *f, const char *point, json_t *args, json_t **ret,
                sl_result *res) {
    memset(res, 0, sizeof *res);
    int rc = sl_lua_call(f->L, point, NULL, NULL, args, ret, res);
    json_decref(args);
    return rc;
}

static long ok_calls(fixture *f) {
    json_t *ret = NULL;
    sl_result res;
    int rc = call(f, "ok", json_pack("[s]", "ping"), &ret, &res);
    if (rc != 0) fail_msg("the normal call failed: %s", res.message);
    assert_string_equal(json_string_value(json_object_get(ret, "pong")),
                        "ping");
    long n = (long)json_integer_value(json_object_get(ret, "calls"));
    json_decref(ret);
    return n;
}

/* Asserts that `point` fails with class `script` and a message containing
 * `want`, and that the same state keeps serving: the file-local counter of
 * the normal call goes on from where it was (the state was not rebuilt). */
static void assert_refused(fixture *f, const char *point, const char *want) {
    long before = ok_calls(f);
    json_t *ret = NULL;
    sl_result res;
    int rc = call(f, point, NULL, &ret, &res);
    assert_int_equal(rc, -SL_ELUA);
    assert_null(ret);
    assert_int_equal(res.outcome, SL_OUT_FAIL);
    assert_int_equal(res.errclass, SL_EC_SCRIPT);
    if (!strstr(res.message, want))
        fail_msg("%s: expected '%s' in: %s", point, want, res.message);
    assert_int_equal(ok_calls(f), before + 1);
}

/* ---- loading ----------------------------------------------------------- */

static void open_binds_every_hook_point(void **state) {
    fixture *f = *state;
    for (size_t i = 0; i < NPOINTS; i++)
        assert_true(sl_lua_has(f->L, POINTS[i]));
    assert_false(sl_lua_has(f->L, "chunk"));
}

static void normal_call_returns_json_and_keeps_file_state(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "ok", json_pack("[s]", "a"), &ret, &res), 0);
    assert_int_equal(json_integer_value(json_object_get(ret, "calls")), 1);
    json_decref(ret);
    assert_int_equal(call(f, "ok", json_pack("[s]", "b"), &ret, &res), 0);
    assert_int_equal(json_integer_value(json_object_get(ret, "calls")), 2);
    assert_string_equal(json_string_value(json_object_get(ret, "pong")), "b");
    json_decref(ret);
}

static void syntax_error_fails_open_with_file_and_line(void **state) {
    (void)state;
    fixture f;
    init_stage(&f, 0);
    const char *bad =
        sl_test_file("bad.lua", "function run()\n  x = = 1\nend\n");
    sl_hook h = {.point = "run", .file = bad, .function = "run"};
    f.stage.hooks = &h;
    f.stage.nhooks = 1;
    char err[512];
    sl_lua *L = (sl_lua *)1;
    assert_int_equal(sl_lua_open(&f.stage, &L, err, sizeof err), -SL_ELUA);
    assert_null(L);
    assert_non_null(strstr(err, "bad.lua:2:"));
    json_decref(f.stage.with);
}

static void missing_function_fails_open(void **state) {
    (void)state;
    fixture f;
    init_stage(&f, 0);
    sl_hook h = {.point = "chunk", .file = hook_file(), .function = "nope"};
    f.stage.hooks = &h;
    f.stage.nhooks = 1;
    char err[512];
    sl_lua *L = NULL;
    assert_int_equal(sl_lua_check(&f.stage, err, sizeof err), -SL_ELUA);
    assert_non_null(strstr(err, "no function 'nope'"));
    assert_int_equal(sl_lua_open(&f.stage, &L, err, sizeof err), -SL_ELUA);
    json_decref(f.stage.with);
}

static void two_files_may_define_the_same_function_name(void **state) {
    (void)state;
    fixture f;
    init_stage(&f, 0);
    const char *a = sl_test_file("a.lua", "function run() return 'a' end\n");
    const char *b = sl_test_file("b.lua", "function run() return 'b' end\n");
    sl_hook h[2] = {{.point = "run", .file = a, .function = "run"},
                    {.point = "post", .file = b, .function = "run"}};
    f.stage.hooks = h;
    f.stage.nhooks = 2;
    char err[512];
    sl_lua *L = NULL;
    assert_int_equal(sl_lua_open(&f.stage, &L, err, sizeof err), 0);
    json_t *ret = NULL;
    sl_result res = {0};
    assert_int_equal(sl_lua_call(L, "run", NULL, NULL, NULL, &ret, &res), 0);
    assert_string_equal(json_string_value(ret), "a");
    json_decref(ret);
    assert_int_equal(sl_lua_call(L, "post", NULL, NULL, NULL, &ret, &res), 0);
    assert_string_equal(json_string_value(ret), "b");
    json_decref(ret);
    sl_lua_close(L);
    json_decref(f.stage.with);
}

static void calling_an_undeclared_point_is_not_found(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "chunk", NULL, &ret, &res), -SL_ENOTFOUND);
    assert_null(ret);
}

/* ---- the escapes --------------------------------------------------------- */

static void io_open_is_refused(void **state) {
    assert_refused(*state, "io_open", "'io' is not available");
}

static void os_execute_is_refused(void **state) {
    assert_refused(*state, "os_execute", "os.execute is not available");
}

static void os_getenv_is_refused(void **state) {
    assert_refused(*state, "os_getenv", "os.getenv is not available");
}

static void dofile_is_refused(void **state) {
    assert_refused(*state, "dofile_call", "'dofile' is not available");
}

static void require_of_an_arbitrary_module_is_refused(void **state) {
    assert_refused(*state, "require_arbitrary",
                   "require('socket') refused: no module socket.lua inside "
                   "the hook directory");
}

static void require_outside_the_hook_directory_is_refused(void **state) {
    assert_refused(*state, "require_parent", "require('..secret') refused");
}

static void require_of_a_module_in_the_hook_directory_works(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "require_local", NULL, &ret, &res), 0);
    assert_string_equal(json_string_value(ret), "HI!");
    json_decref(ret);
}

static void load_of_a_binary_chunk_is_refused(void **state) {
    assert_refused(*state, "load_binary",
                   "load of a binary chunk is not allowed");
}

static void load_of_a_text_chunk_works(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "load_text", NULL, &ret, &res), 0);
    assert_int_equal(json_integer_value(ret), 3);
    json_decref(ret);
}

static void string_rep_memory_bomb_is_stopped(void **state) {
    assert_refused(*state, "memory_bomb",
                   "memory limit exceeded (16777216 bytes)");
}

static void table_memory_bomb_is_stopped(void **state) {
    assert_refused(*state, "table_bomb", "memory limit exceeded");
}

static void infinite_loop_is_stopped(void **state) {
    assert_refused(*state, "infinite_loop",
                   "instruction limit exceeded (2000000 instructions)");
}

static void infinite_loop_catching_the_error_is_still_stopped(void **state) {
    assert_refused(*state, "loop_that_catches", "instruction limit exceeded");
}

static void deep_recursion_is_stopped(void **state) {
    assert_refused(*state, "deep_recursion", "stack overflow");
}

static void writing_a_global_is_refused(void **state) {
    assert_refused(*state, "write_global",
                   "assignment to undeclared global 'counter'");
}

static void reading_an_undeclared_global_is_an_error(void **state) {
    assert_refused(*state, "read_global",
                   "read of undeclared global 'undefined_thing'");
}

static void unlocking_the_environment_is_refused(void **state) {
    assert_refused(*state, "unlock_env", "protected metatable");
}

static void runtime_error_carries_message_and_traceback(void **state) {
    assert_refused(*state, "runtime_error", "hooks.lua:");
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    call(f, "runtime_error", NULL, &ret, &res);
    assert_non_null(strstr(res.message, "attempt to index a nil value"));
    assert_non_null(strstr(res.message, "stack traceback:"));
}

/* ---- API outcomes -------------------------------------------------------- */

static void retry_raises_a_retryable_error_with_delay(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "retry_later", NULL, &ret, &res), -SL_ELUA);
    assert_int_equal(res.errclass, SL_EC_RETRYABLE);
    assert_int_equal(res.delay_ms, 7000);
    assert_non_null(strstr(res.message, "upstream busy"));
}

static void fail_raises_the_named_class(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "fail_invalid", NULL, &ret, &res), -SL_ELUA);
    assert_int_equal(res.errclass, SL_EC_INVALID_INPUT);
    assert_non_null(strstr(res.message, "bad transcript"));
}

static void progress_outside_a_job_is_a_clear_error(void **state) {
    assert_refused(*state, "progress", "sluice.progress: not inside a job");
}

static void checkpoint_outside_a_job_is_a_clear_error(void **state) {
    assert_refused(*state, "checkpoint_get",
                   "sluice.checkpoint.get: not inside a job");
}

static void sql_without_a_connection_is_a_clear_error(void **state) {
    assert_refused(*state, "sql_read", "sluice.sql.query: not inside a job");
}

static void checkpoint_get_returns_the_jobs_checkpoint(void **state) {
    fixture *f = *state;
    sl_job job = {.id = "j1",
                  .attempt = 2,
                  .checkpoint = json_pack("{s:i}", "next_chunk", 4),
                  .stage = &f->stage};
    json_t *ret = NULL;
    sl_result res = {0};
    assert_int_equal(
        sl_lua_call(f->L, "checkpoint_get", NULL, &job, NULL, &ret, &res), 0);
    assert_int_equal(json_integer_value(json_object_get(ret, "next_chunk")), 4);
    json_decref(ret);
    json_decref(job.checkpoint);
}

static void log_with_fields_succeeds(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "log_it", NULL, &ret, &res), 0);
    assert_null(ret);
}

static void config_is_the_stage_with_table(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "config", NULL, &ret, &res), 0);
    assert_true(json_equal(ret, f->stage.with));
    json_decref(ret);
}

/* ---- JSON <-> Lua -------------------------------------------------------- */

static void arguments_and_results_round_trip_through_json(void **state) {
    fixture *f = *state;
    json_t *args = json_loads(
        "[1, 2.5, \"s\", true, null, [], {}, [1, [2, {\"a\": null}]], "
        "{\"k\": [\"v\"]}]",
        0, NULL);
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "echo", json_incref(args), &ret, &res), 0);
    if (!json_equal(ret, args))
        fail_msg("round trip changed the value: %s",
                 json_dumps(ret, JSON_COMPACT));
    json_decref(ret);
    json_decref(args);
}

static void json_null_is_the_sluice_null_sentinel(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "is_null", json_pack("[n]"), &ret, &res), 0);
    assert_true(json_is_true(ret));
    json_decref(ret);
    assert_int_equal(call(f, "is_null", json_pack("[i]", 0), &ret, &res), 0);
    assert_true(json_is_false(ret));
    json_decref(ret);
}

static void empty_table_is_an_object_unless_marked_array(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "empty_table", NULL, &ret, &res), 0);
    assert_true(json_is_object(ret));
    json_decref(ret);
    assert_int_equal(call(f, "empty_array", NULL, &ret, &res), 0);
    assert_true(json_is_array(ret));
    json_decref(ret);
}

static void json_encode_and_decode_match_jansson(void **state) {
    fixture *f = *state;
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "encode",
                          json_loads("[{\"b\": [], \"a\": null}]", 0, NULL),
                          &ret, &res),
                     0);
    assert_string_equal(json_string_value(ret), "{\"a\":null,\"b\":[]}");
    json_decref(ret);
    assert_int_equal(
        call(f, "decode", json_pack("[s]", "{\"x\": [1, {}]}"), &ret, &res), 0);
    assert_int_equal(
        json_integer_value(json_array_get(json_object_get(ret, "x"), 0)), 1);
    json_decref(ret);
    assert_int_equal(call(f, "decode", json_pack("[s]", "{oops"), &ret, &res),
                     -SL_ELUA);
    assert_non_null(strstr(res.message, "sluice.json.decode"));
}

static void unconvertible_return_value_is_a_script_error(void **state) {
    assert_refused(*state, "bad_return", "cannot be converted to JSON");
}

/* ---- sluice.sql against PostgreSQL --------------------------------------- */

static PGconn *sql_db(void) {
    static PGconn *c;
    if (!c) {
        c = sl_test_connect(sl_test_db("sluice_test_lua_sandbox"));
        sl_test_exec(c, "CREATE TABLE lua_t (v int)");
    }
    return c;
}

static void sql_query_binds_parameters_and_converts_types(void **state) {
    fixture *f = *state;
    sl_lua_set_conn(f->L, sql_db());
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(f, "sql_read", json_pack("[i]", 41), &ret, &res), 0);
    json_t *row = json_array_get(ret, 0);
    assert_int_equal(json_integer_value(json_object_get(row, "n")), 42);
    assert_true(json_is_true(json_object_get(row, "b")));
    assert_null(json_object_get(row, "gone"));
    assert_int_equal(json_integer_value(json_array_get(
                         json_object_get(json_object_get(row, "j"), "a"), 1)),
                     2);
    json_decref(ret);
    sl_lua_set_conn(f->L, NULL);
}

static void sql_write_is_refused_by_postgres_when_not_allowed(void **state) {
    fixture *f = *state;
    PGconn *c = sql_db();
    sl_lua_set_conn(f->L, c);
    assert_refused(f, "sql_write",
                   "cannot execute INSERT in a read-only "
                   "transaction");
    json_t *ret = NULL;
    sl_result res;
    call(f, "sql_write", json_pack("[i]", 5), &ret, &res);
    assert_non_null(strstr(res.message, "sql_writes: true"));
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM lua_t"), 0);
    /* The connection is left idle and usable. */
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    assert_int_equal(call(f, "sql_read", json_pack("[i]", 1), &ret, &res), 0);
    json_decref(ret);
    sl_lua_set_conn(f->L, NULL);
}

static void sql_write_succeeds_when_the_stage_allows_it(void **state) {
    (void)state;
    fixture f;
    init_stage(&f, 1);
    char err[512];
    assert_int_equal(sl_lua_open(&f.stage, &f.L, err, sizeof err), 0);
    PGconn *c = sql_db();
    sl_lua_set_conn(f.L, c);
    json_t *ret = NULL;
    sl_result res;
    assert_int_equal(call(&f, "sql_write", json_pack("[i]", 9), &ret, &res), 0);
    assert_int_equal(json_integer_value(ret), 1);
    json_decref(ret);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM lua_t WHERE v = 9"),
                     1);
    sl_test_exec(c, "DELETE FROM lua_t");
    sl_lua_close(f.L);
    json_decref(f.stage.with);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(open_binds_every_hook_point),
        T(normal_call_returns_json_and_keeps_file_state),
        cmocka_unit_test(syntax_error_fails_open_with_file_and_line),
        cmocka_unit_test(missing_function_fails_open),
        cmocka_unit_test(two_files_may_define_the_same_function_name),
        T(calling_an_undeclared_point_is_not_found),
        T(io_open_is_refused),
        T(os_execute_is_refused),
        T(os_getenv_is_refused),
        T(dofile_is_refused),
        T(require_of_an_arbitrary_module_is_refused),
        T(require_outside_the_hook_directory_is_refused),
        T(require_of_a_module_in_the_hook_directory_works),
        T(load_of_a_binary_chunk_is_refused),
        T(load_of_a_text_chunk_works),
        T(string_rep_memory_bomb_is_stopped),
        T(table_memory_bomb_is_stopped),
        T(infinite_loop_is_stopped),
        T(infinite_loop_catching_the_error_is_still_stopped),
        T(deep_recursion_is_stopped),
        T(writing_a_global_is_refused),
        T(reading_an_undeclared_global_is_an_error),
        T(unlocking_the_environment_is_refused),
        T(runtime_error_carries_message_and_traceback),
        T(retry_raises_a_retryable_error_with_delay),
        T(fail_raises_the_named_class),
        T(progress_outside_a_job_is_a_clear_error),
        T(checkpoint_outside_a_job_is_a_clear_error),
        T(sql_without_a_connection_is_a_clear_error),
        T(checkpoint_get_returns_the_jobs_checkpoint),
        T(log_with_fields_succeeds),
        T(config_is_the_stage_with_table),
        T(arguments_and_results_round_trip_through_json),
        T(json_null_is_the_sluice_null_sentinel),
        T(empty_table_is_an_object_unless_marked_array),
        T(json_encode_and_decode_match_jansson),
        T(unconvertible_return_value_is_a_script_error),
        T(sql_query_binds_parameters_and_converts_types),
        T(sql_write_is_refused_by_postgres_when_not_allowed),
        T(sql_write_succeeds_when_the_stage_allows_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
