/* test_serial_pgrestart.c - PostgreSQL restarted under the workers (fast
 * and immediate shutdown): they reconnect and every job completes once.
 * Runs alone (RUN_SERIAL): it restarts the suite's shared server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rtlib.h"

static const char *yaml =
    "pipeline: rs\n"
    "subject:\n"
    "  table: items\n"
    "  foreign_key: item_id\n"
    "  status: {column: status, values: [new, a_done, done, failed]}\n"
    "sweep: {interval: 200ms, pending_age: 1m}\n"
    "defaults:\n"
    "  retry: {max_attempts: 10, backoff: fixed, initial: 50ms, jitter: 0}\n"
    "  lease: 5s\n"
    "  heartbeat: 500ms\n"
    "stages:\n"
    "  a:\n"
    "    queue: a_jobs\n"
    "    handler: t.probe\n"
    "    with: {sleep_ms: 20}\n"
    "    status: {on_done: {status: a_done}, on_error: {status: failed}}\n"
    "    next: b\n"
    "  b:\n"
    "    queue: b_jobs\n"
    "    handler: t.probe\n"
    "    with: {sleep_ms: 20}\n"
    "    status: {on_done: {status: done}, on_error: {status: failed}}\n";

static void restart_server(const char *mode) {
    const char *host = getenv("PGHOST");
    assert_non_null(host);
    int rc = sl_test_sh(NULL,
                        "d='%s/../data'; if [ \"$(id -u)\" = 0 ]; then"
                        " runuser -u sluicepg -- /usr/lib/postgresql/15/bin/"
                        "pg_ctl -D \"$d\" -m %s -w restart >/dev/null 2>&1;"
                        " else /usr/lib/postgresql/15/bin/pg_ctl -D \"$d\""
                        " -m %s -w restart >/dev/null 2>&1; fi",
                        host, mode, mode);
    assert_int_equal(rc, 0);
}

static void survive(const char *db, const char *mode) {
    PGconn *c;
    sl_model *m = rt_setup(db, yaml, &c);
    sl_test_exec(c, "WITH i AS (INSERT INTO items SELECT gen_random_uuid()"
                    " FROM generate_series(1, 300) RETURNING id) INSERT INTO"
                    " a_jobs (item_id) SELECT id FROM i");
    pid_t w = rt_spawn(m, 4, 1, 1, 1000);
    assert_true(rt_wait_for(c, "SELECT (count(*) >= 50)::int FROM done_log",
                            1, 30000));
    PQfinish(c);
    int64_t t0 = sl_test_now_ms();
    restart_server(mode);
    c = sl_test_connect(rt_conninfo());
    long before = sl_test_long(c, "SELECT count(*) FROM done_log");
    assert_true(rt_wait_for(c, "SELECT (count(*) > 0)::int FROM done_log"
                               " WHERE at > now() - interval '100 ms'",
                            1, 30000));
    print_message("%s restart: work resumed %lld ms after the restart began"
                  " (%ld of 600 done before)\n",
                  mode, (long long)(sl_test_now_ms() - t0), before);
    assert_int_equal(rt_wait(w, 120000), 0);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM done_log"), 600);
    assert_int_equal(
        sl_test_long(c, "SELECT count(*) FROM items WHERE status = 'done'"),
        300);
    PQfinish(c);
    sl_model_free(m);
}

static void fast_restart_loses_nothing(void **state) {
    (void)state;
    survive("rs_fast", "fast");
}

static void immediate_restart_loses_nothing(void **state) {
    (void)state;
    survive("rs_immediate", "immediate");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fast_restart_loses_nothing),
        cmocka_unit_test(immediate_restart_loses_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
