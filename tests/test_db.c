/* test_db.c - what every connection gets from engine/db.c: TCP keepalive,
 * tcp_user_timeout and connect_timeout defaults that the connection
 * string overrides, and a statement bound that a session's own wins over.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "testlib.h"

/* The value libpq holds for keyword on c (static copy), or "". */
static const char *param(PGconn *c, const char *keyword) {
    static char v[64];
    v[0] = '\0';
    PQconninfoOption *opts = PQconninfo(c);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, keyword) == 0 && o->val)
            snprintf(v, sizeof v, "%s", o->val);
    PQconninfoFree(opts);
    return v;
}

static PGconn *connect_tcp(const char *extra) {
    char ci[512], err[512];
    const char *port = getenv("PGPORT");
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%s dbname=postgres %s",
             port ? port : "5432", extra);
    sl_dbsource src = {ci, "--database"};
    PGconn *c = sl_db_connect(src, err, sizeof err);
    if (!c) fail_msg("%s", err);
    return c;
}

static void tcp_connections_get_keepalive_and_timeout_defaults(void **state) {
    (void)state;
    unsetenv("PGCONNECT_TIMEOUT");
    PGconn *c = connect_tcp("");
    assert_string_equal(param(c, "keepalives"), "1");
    assert_string_equal(param(c, "keepalives_idle"), "5");
    assert_string_equal(param(c, "keepalives_interval"), "2");
    assert_string_equal(param(c, "keepalives_count"), "3");
    assert_string_equal(param(c, "tcp_user_timeout"), "10000");
    assert_string_equal(param(c, "connect_timeout"), "10");
    PQfinish(c);
}

static void the_connection_string_and_pgconnect_timeout_override_them(
    void **state) {
    (void)state;
    setenv("PGCONNECT_TIMEOUT", "7", 1);
    PGconn *c = connect_tcp("keepalives_idle=30 tcp_user_timeout=0");
    assert_string_equal(param(c, "keepalives_idle"), "30");
    assert_string_equal(param(c, "tcp_user_timeout"), "0");
    assert_string_equal(param(c, "keepalives_count"), "3");
    assert_string_equal(param(c, "connect_timeout"), "7");
    unsetenv("PGCONNECT_TIMEOUT");
    PQfinish(c);
}

static void statements_are_bounded_unless_the_session_has_a_bound(
    void **state) {
    (void)state;
    char err[256];
    PGconn *c = connect_tcp("");
    assert_int_equal(sl_db_bound_statements(c, 1500, err, sizeof err), 0);
    char *v = sl_test_scalar(c, "SHOW statement_timeout");
    assert_string_equal(v, "1500ms");
    free(v);
    PQfinish(c);
    c = connect_tcp("options='-c statement_timeout=7s'");
    assert_int_equal(sl_db_bound_statements(c, 1500, err, sizeof err), 0);
    v = sl_test_scalar(c, "SHOW statement_timeout");
    assert_string_equal(v, "7s");
    free(v);
    PQfinish(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tcp_connections_get_keepalive_and_timeout_defaults),
        cmocka_unit_test(
            the_connection_string_and_pgconnect_timeout_override_them),
        cmocka_unit_test(
            statements_are_bounded_unless_the_session_has_a_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
