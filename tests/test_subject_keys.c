/* test_subject_keys.c - subjects whose key is not a uuid, end to end
 * against a real PostgreSQL, through the sluice binary like a user.
 *
 * Two pipelines in tests/keys: orders (a bigint key, two noop stages) and
 * tickets (a text key in a column named code, a Lua stage handing off to
 * a noop one). Each runs enqueue -> hand-off -> final status with the
 * subject row's status mapping checked, is shown by `sluice status` and
 * followed by `sluice watch` by its key, and is read through the HTTP
 * API's subject route and event stream with a subject token. A key of the
 * wrong type is refused with exit 64 (or HTTP 400); migrate refuses a
 * key_type the table's column does not have. Last, the base schema's
 * accounts take INSERT ... RETURNING from the application role.
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "model.h"
#include "testlib.h"

#define DB "subject_keys"
#define KEYS SL_SOURCE_DIR "/tests/keys"
#define ADMIN "admin-token-for-key-tests"
#define SECRET "subject-secret-for-key-tests"
/* Over 2^31: a key only a bigint holds. */
#define ORDER "9000000001"
#define ORDER2 "9000000002"
/* A text key with a space and a non-ASCII letter (shell-quoted below). */
#define TICKET "T-1 über"

static PGconn *db;

/* Creates the database, the subject tables and migrates tests/keys once. */
static void ready(void) {
    static int done;
    if (done) return;
    char *out = NULL;
    sl_test_db(DB);
    setenv("PGDATABASE", DB, 1);
    unsetenv("SLUICE_PIPELINES");
    db = sl_test_connect("dbname=" DB);
    /* Orders belong to accounts (sql/base.sql, applied by `migrate --base`) under
     * Row Level Security, so that a guessable key meets a hostile tenant
     * (tenant_cannot_reach_another_tenants_bigint_subject). */
    sl_test_exec(db, "CREATE TABLE orders (id bigint PRIMARY KEY, status text"
                     " NOT NULL DEFAULT 'new', progress int NOT NULL DEFAULT"
                     " 0, detail text, account_id uuid);"
                     "CREATE TABLE tickets (code text PRIMARY KEY, status"
                     " text NOT NULL DEFAULT 'open', progress int NOT NULL"
                     " DEFAULT 0)");
    int rc = sl_test_sluice(&out, "migrate --base -p '%s'", KEYS);
    if (rc != 0) fail_msg("sluice migrate failed (%d): %s", rc, out);
    free(out);
    sl_test_exec(db, "ALTER TABLE orders ENABLE ROW LEVEL SECURITY;"
                     "CREATE POLICY orders_member ON orders FOR ALL USING"
                     " (public.sluice_is_account_member(account_id));"
                     "GRANT SELECT ON orders TO sluice_app");
    done = 1;
}

static void expect_sql(const char *want, const char *sql) {
    char *v = sl_test_scalar(db, sql);
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s -> %s, expected %s", sql, v ? v : "NULL", want);
    free(v);
}

/* Runs `sluice watch KEY` in the background until its first line, then
 * the workers of `pipeline` until idle; returns watch's exit code and its
 * output in *out. */
static int watch_a_run(const char *key, const char *pipeline, char **out) {
    char path[600];
    snprintf(path, sizeof path, "%s/watch-%s.out", sl_test_tmpdir(),
             pipeline);
    return sl_test_sh(out,
                      "'%1$s' watch '%2$s' -p '%5$s' --timeout 60s >'%3$s'"
                      " 2>&1 & w=$!;"
                      " i=0; while [ ! -s '%3$s' ] && [ $i -lt 600 ]; do"
                      " sleep 0.05; i=$((i+1)); done;"
                      " '%1$s' run --allow-superuser -p '%5$s' -s %4$s"
                      " --exit-when-idle >/dev/null 2>&1;"
                      " wait $w; rc=$?; cat '%3$s'; exit $rc",
                      sl_test_bin(), key, path, pipeline, KEYS);
}

/* ---- the value rule ------------------------------------------------------ */

static void key_canon_accepts_only_values_of_the_type(void **state) {
    (void)state;
    static const struct {
        sl_key_type t;
        const char *in, *out; /* out NULL: refused */
    } cases[] = {
        {SL_KEY_UUID, "6F0C1E2D-0000-4000-8000-00000000ABCD",
         "6f0c1e2d-0000-4000-8000-00000000abcd"},
        {SL_KEY_UUID, "6f0c1e2d00004000800000000000abcd", NULL},
        {SL_KEY_UUID, "42", NULL},
        {SL_KEY_BIGINT, "42", "42"},
        {SL_KEY_BIGINT, "+0042", "42"},
        {SL_KEY_BIGINT, "-0", "0"},
        {SL_KEY_BIGINT, "9223372036854775807", "9223372036854775807"},
        {SL_KEY_BIGINT, "-9223372036854775808", "-9223372036854775808"},
        {SL_KEY_BIGINT, "9223372036854775808", NULL},
        {SL_KEY_BIGINT, "-9223372036854775809", NULL},
        {SL_KEY_BIGINT, "99999999999999999999", NULL},
        {SL_KEY_BIGINT, "", NULL},
        {SL_KEY_BIGINT, "-", NULL},
        {SL_KEY_BIGINT, " 1", NULL},
        {SL_KEY_BIGINT, "1e3", NULL},
        {SL_KEY_INTEGER, "2147483647", "2147483647"},
        {SL_KEY_INTEGER, "-2147483648", "-2147483648"},
        {SL_KEY_INTEGER, "2147483648", NULL},
        {SL_KEY_INTEGER, "-2147483649", NULL},
        {SL_KEY_TEXT, "T-1 \xc3\xbc/x", "T-1 \xc3\xbc/x"},
        {SL_KEY_TEXT, "", NULL},
        {SL_KEY_TEXT, "a\nb", NULL},
        {SL_KEY_TEXT, "\xc3", NULL}, /* cut UTF-8 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[SL_KEY_MAX];
        const char *why = NULL;
        int rc = sl_key_canon(cases[i].t, cases[i].in, out, &why);
        if (cases[i].out ? rc != 0 || strcmp(out, cases[i].out) != 0
                         : rc != -SL_EINVAL || out[0] != '\0' || !why)
            fail_msg("%s '%s': rc %d out '%s'",
                     sl_key_type_name(cases[i].t), cases[i].in, rc, out);
    }
    char longkey[SL_KEY_MAX + 1], out[SL_KEY_MAX];
    const char *why;
    memset(longkey, 'k', SL_KEY_MAX);
    longkey[SL_KEY_MAX] = '\0';
    assert_int_equal(sl_key_canon(SL_KEY_TEXT, longkey, out, &why), -SL_EINVAL);
    longkey[SL_KEY_MAX - 1] = '\0';
    assert_int_equal(sl_key_canon(SL_KEY_TEXT, longkey, out, &why), 0);
    sl_key_type t;
    assert_int_equal(sl_key_type_parse("INT8", &t), 0);
    assert_int_equal(t, SL_KEY_BIGINT);
    assert_int_equal(sl_key_type_parse("serial", &t), -SL_EINVAL);
}

/* ---- bigint ---------------------------------------------------------------- */

static void bigint_key_runs_end_to_end(void **state) {
    (void)state;
    ready();
    char *out = NULL;
    sl_test_exec(db, "INSERT INTO orders (id) VALUES (" ORDER ")");
    int rc = sl_test_sluice(&out, "enqueue orders --subject " ORDER
                                  " --set note=fragile --output json -p '%s'",
                            KEYS);
    if (rc != 0) fail_msg("enqueue: exit %d: %s", rc, out);
    sl_test_expect_in(out, "\"subject\": \"" ORDER "\"");
    free(out);
    expect_sql(ORDER, "SELECT order_id FROM order_pack_jobs");

    rc = watch_a_run(ORDER, "orders", &out);
    if (rc != 0) fail_msg("watch: exit %d: %s", rc, out);
    sl_test_expect_in(out, "  0%  new");
    sl_test_expect_in(out, "50%  packed  Packed");
    sl_test_expect_in(out, "100%  shipped  Shipped");
    free(out);

    /* The mapping drove the row; the hand-off carried the bigint key. */
    expect_sql("shipped|100|Shipped",
               "SELECT status || '|' || progress || '|' || detail FROM"
               " orders WHERE id = " ORDER);
    expect_sql("done", "SELECT status FROM order_ship_jobs WHERE order_id = "
                       ORDER);
    expect_sql("bigint", "SELECT format_type(atttypid, atttypmod) FROM"
                         " pg_attribute WHERE attrelid = 'order_ship_jobs'"
                         "::regclass AND attname = 'order_id'");

    /* status by key: the subject block, and with leading zeros. */
    rc = sl_test_sluice(&out, "status " ORDER " -p '%s'", KEYS);
    if (rc != 0) fail_msg("status: exit %d: %s", rc, out);
    sl_test_expect_in(out, "subject " ORDER " (pipeline orders, table orders)");
    sl_test_expect_in(out, "status    shipped");
    sl_test_expect_in(out, "stage ship (queue order_ship_jobs)");
    free(out);
    rc = sl_test_sluice(&out, "status 000" ORDER " --pipeline orders -p '%s'",
                        KEYS);
    if (rc != 0) fail_msg("status 000...: exit %d: %s", rc, out);
    sl_test_expect_in(out, "subject " ORDER " (pipeline orders");
    free(out);

    /* watch of a subject already at its final status ends at once with 0. */
    rc = sl_test_sluice(&out, "watch " ORDER " --pipeline orders -p '%s'",
                        KEYS);
    if (rc != 0) fail_msg("watch at final: exit %d: %s", rc, out);
    free(out);
}

static void bigint_key_of_the_wrong_type_is_exit_64(void **state) {
    (void)state;
    ready();
    static const char *const cmds[] = {
        "enqueue orders --subject abc",
        "enqueue orders --subject 1.5",
        "enqueue orders --subject 9223372036854775808",
        "status abc --pipeline orders",
        "watch 12x --pipeline orders",
        "token abc --pipeline orders",
    };
    setenv("SLUICE_TOKEN_SECRET", SECRET, 1);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char *out = NULL;
        int rc = sl_test_sluice(&out, "%s -p '%s'", cmds[i], KEYS);
        if (rc != 64) fail_msg("%s: exit %d, expected 64: %s", cmds[i], rc, out);
        sl_test_expect_in(out, "bigint");
        free(out);
    }
    /* --bulk: a JSON number is a bigint key too; a string that is no
     * bigint is refused before anything is sent. */
    const char *good = sl_test_file("bulk_good.jsonl",
                                    "{\"subject\": " ORDER2 "}\n"
                                    "{\"subject\": \"+" ORDER2 "\"}\n");
    const char *bad = sl_test_file("bulk_bad.jsonl",
                                   "{\"subject\": " ORDER2 "}\n"
                                   "{\"subject\": \"x" ORDER2 "\"}\n");
    char *bout = NULL;
    sl_test_exec(db, "INSERT INTO orders (id) VALUES (" ORDER2 ")"
                     " ON CONFLICT DO NOTHING");
    int brc = sl_test_sluice(&bout, "enqueue orders --bulk '%s' -p '%s'", bad,
                             KEYS);
    if (brc != 64) fail_msg("bulk bad: exit %d: %s", brc, bout);
    sl_test_expect_in(bout, "bulk_bad.jsonl:2: subject id 'x" ORDER2
                            "' is not a bigint");
    free(bout);
    brc = sl_test_sluice(&bout, "enqueue orders --bulk '%s' -p '%s'", good,
                         KEYS);
    if (brc != 0) fail_msg("bulk good: exit %d: %s", brc, bout);
    free(bout);
    expect_sql("2", "SELECT count(*) FROM order_pack_jobs WHERE order_id = "
                    ORDER2);
    sl_test_exec(db, "DELETE FROM order_pack_jobs WHERE order_id = " ORDER2);
    /* Without --pipeline, an id no loaded key type holds (nor a job id). */
    char *out = NULL;
    int rc = sl_test_sluice(&out, "watch '' -p '%s'", KEYS);
    if (rc != 64) fail_msg("watch '': exit %d, expected 64: %s", rc, out);
    free(out);
    /* Nothing was enqueued by the refused commands. */
    expect_sql("0", "SELECT count(*) FROM order_pack_jobs WHERE order_id"
                    " IS NULL");
}

/* ---- text -------------------------------------------------------------- */

static void text_key_runs_end_to_end_through_lua(void **state) {
    (void)state;
    ready();
    char *out = NULL;
    sl_test_exec(db, "INSERT INTO tickets (code) VALUES ('" TICKET "')");
    int rc = sl_test_sluice(&out, "enqueue tickets --subject '" TICKET
                                  "' --set body=broken -p '%s'",
                            KEYS);
    if (rc != 0) fail_msg("enqueue: exit %d: %s", rc, out);
    free(out);

    rc = watch_a_run(TICKET, "tickets", &out);
    if (rc != 0) fail_msg("watch: exit %d: %s", rc, out);
    sl_test_expect_in(out, "100%  closed");
    free(out);
    expect_sql("closed|100", "SELECT status || '|' || progress FROM tickets"
                             " WHERE code = '" TICKET "'");
    /* Lua saw the text key; its output reached the next stage. */
    expect_sql("triaged " TICKET ": broken",
               "SELECT label FROM ticket_close_jobs WHERE ticket_code = '"
               TICKET "' AND status = 'done'");

    rc = sl_test_sluice(&out, "status '" TICKET "' -p '%s'", KEYS);
    if (rc != 0) fail_msg("status: exit %d: %s", rc, out);
    sl_test_expect_in(out, "subject " TICKET " (pipeline tickets, table"
                           " tickets)");
    sl_test_expect_in(out, "status    closed");
    free(out);
}

/* ---- the HTTP API ---------------------------------------------------------- */

typedef struct body {
    char *s;
    size_t n;
} body;

static size_t on_body(char *d, size_t sz, size_t n, void *arg) {
    body *b = arg;
    char *s = realloc(b->s, b->n + sz * n + 1);
    assert_non_null(s);
    memcpy(s + b->n, d, sz * n);
    b->n += sz * n;
    s[b->n] = '\0';
    b->s = s;
    /* An event stream: stop after the first frame. */
    return strstr(s, "\n\n") && strstr(s, "event: ") ? 0 : sz * n;
}

/* GET path on port with the admin token when `admin`; the body in *out. */
static long get(int port, const char *path, int admin, char **out) {
    char url[600], auth[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", ADMIN);
    body b = {NULL, 0};
    long code = 0;
    CURL *h = curl_easy_init();
    struct curl_slist *hs = admin ? curl_slist_append(NULL, auth) : NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    curl_slist_free_all(hs);
    *out = b.s ? b.s : strdup("");
    return code;
}

/* `sluice token ARGS`, the token without its newline (caller frees). */
static char *token(const char *args) {
    char *out = NULL;
    int rc = sl_test_sluice(&out, "token %s -p '%s'", args, KEYS);
    if (rc != 0) fail_msg("token %s: exit %d: %s", args, rc, out);
    out[strcspn(out, "\n")] = '\0';
    return out;
}

static void api_reads_subjects_by_typed_key(void **state) {
    (void)state;
    ready();
    sl_test_exec(db, "INSERT INTO orders (id, status, progress, detail)"
                     " VALUES (" ORDER2 ", 'packed', 50, 'Packed') ON CONFLICT (id)"
                     " DO UPDATE SET status = 'packed', progress = 50,"
                     " detail = 'Packed'");
    sl_test_exec(db, "INSERT INTO tickets (code) VALUES ('" ORDER2 "')");
    setenv("SLUICE_ADMIN_TOKEN", ADMIN, 1);
    setenv("SLUICE_TOKEN_SECRET", SECRET, 1);
    int port = sl_test_free_port();
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(sl_test_bin(), "sluice", "run", "--allow-superuser", "-p", KEYS,
              "--http", listen, (char *)NULL);
        _exit(127);
    }
    char *out = NULL;
    long code = 0;
    for (int i = 0; i < 100 && code != 200; i++) {
        free(out);
        code = get(port, "/healthz", 0, &out);
        if (code != 200) usleep(100 * 1000);
    }
    if (code != 200) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("the server did not start: %ld %s", code, out);
    }
    free(out);

    code = get(port, "/api/subjects/orders/" ORDER2, 1, &out);
    if (code != 200) fail_msg("subject route: %ld %s", code, out);
    sl_test_expect_in(out, "\"id\":\"" ORDER2 "\"");
    sl_test_expect_in(out, "\"status\":\"packed\"");
    free(out);
    code = get(port, "/api/subjects/orders/0" ORDER2, 1, &out);
    assert_int_equal(code, 200);
    sl_test_expect_in(out, "\"id\":\"" ORDER2 "\"");
    free(out);
    code = get(port, "/api/subjects/orders/abc", 1, &out);
    if (code != 400) fail_msg("a text id for a bigint key: %ld %s", code, out);
    sl_test_expect_in(out, "bigint");
    free(out);
    code = get(port, "/api/subjects/tickets/T-1%20%C3%BCber", 1, &out);
    if (code != 200) fail_msg("text key route: %ld %s", code, out);
    sl_test_expect_in(out, "\"id\":\"" TICKET "\"");
    free(out);
    code = get(port, "/api/jobs?subject=abc&pipeline=orders", 1, &out);
    if (code != 400) fail_msg("jobs?subject=abc: %ld %s", code, out);
    free(out);

    /* The event stream takes a token minted for orders/KEY, and refuses
     * it for the same key text in another pipeline. */
    char *t = token(ORDER2 " --pipeline orders"), path[400];
    snprintf(path, sizeof path, "/api/subjects/orders/%s/events?token=%s",
             ORDER2, t);
    code = get(port, path, 0, &out);
    if (code != 200) fail_msg("events: %ld %s", code, out);
    sl_test_expect_in(out, "\"status\":\"packed\"");
    free(out);
    snprintf(path, sizeof path, "/api/subjects/tickets/%s/events?token=%s",
             ORDER2, t);
    code = get(port, path, 0, &out);
    if (code != 401) fail_msg("orders' token on tickets: %ld %s", code, out);
    free(out);
    free(t);
    code = get(port, "/api/subjects/orders/x1/events?token=1.abc", 0, &out);
    assert_int_equal(code, 400);
    free(out);

    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
}

/* ---- migrate --------------------------------------------------------------- */

static void migrate_refuses_a_key_type_the_column_does_not_have(void **state) {
    (void)state;
    ready();
    const char *yaml = sl_test_file(
        "wrong_orders.yaml",
        "pipeline: wrong\n"
        "subject:\n"
        "  table: orders\n"
        "  foreign_key: wrong_order_id\n"
        "  status: {values: [new, packed]}\n"
        "stages:\n"
        "  only: {queue: wrong_jobs, handler: noop}\n");
    char *out = NULL;
    int rc = sl_test_sluice(&out, "migrate -p '%s'", yaml);
    if (rc == 0) fail_msg("migrate accepted a uuid key on a bigint column");
    sl_test_expect_in(out, "subject key orders.id is of type bigint, but"
                           " subject.key_type is uuid (set key_type: bigint)");
    free(out);
    expect_sql("f", "SELECT to_regclass('wrong_jobs') IS NOT NULL");
    rc = sl_test_sluice(&out, "validate -p '%s'",
                        sl_test_file("bad_key_type.yaml",
                                     "pipeline: k\n"
                                     "subject:\n"
                                     "  table: orders\n"
                                     "  key_type: bigserial\n"
                                     "  status: {values: [new]}\n"
                                     "stages:\n"
                                     "  only: {queue: k_jobs, handler: noop}\n"));
    if (rc != 2) fail_msg("validate: exit %d, expected 2: %s", rc, out);
    sl_test_expect_in(out, "subject.key_type: 'bigserial' is not a key type");
    free(out);
}

/* ---- tenants ----------------------------------------------------------------- */

#define ACC_A "00000000-0000-0000-0000-0000000000a1"
#define ACC_B "00000000-0000-0000-0000-0000000000b1"
#define USER_A "11111111-1111-1111-1111-1111111111a1"
#define USER_B "22222222-2222-2222-2222-2222222222b1"

/* Runs sql as the application role for user; returns the PGresult status
 * and the first value (or "") in val. */
static ExecStatusType as_user(PGconn *c, const char *user, const char *sql,
                              char *val, size_t n) {
    char set[200];
    snprintf(set, sizeof set,
             "SET ROLE sluice_app; SET request.jwt.claim.sub = '%s'", user);
    sl_test_exec(c, set);
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    snprintf(val, n, "%s",
             st == PGRES_TUPLES_OK && PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    sl_test_exec(c, "RESET ROLE");
    return st;
}

static void tenant_cannot_reach_another_tenants_bigint_subject(void **state) {
    (void)state;
    ready();
    sl_test_exec(db, "INSERT INTO accounts (id, name) VALUES ('" ACC_A "',"
                     " 'a'), ('" ACC_B "', 'b');"
                     "INSERT INTO account_members VALUES ('" ACC_A "', '"
                     USER_A "', 'owner'), ('" ACC_B "', '" USER_B "', 'owner');"
                     "INSERT INTO orders (id, account_id) VALUES (71, '"
                     ACC_A "'), (72, '" ACC_B "');"
                     "INSERT INTO order_pack_jobs (order_id, note) VALUES"
                     " (72, 'b secret')");
    PGconn *c = sl_test_connect("dbname=" DB);
    char v[128];
    /* B's key is easy to guess; A reads, enqueues and moves nothing. */
    assert_int_equal(as_user(c, USER_A, "SELECT count(*) FROM"
                                        " order_pack_jobs WHERE order_id = 72",
                             v, sizeof v),
                     PGRES_TUPLES_OK);
    assert_string_equal(v, "0");
    assert_int_equal(as_user(c, USER_A, "SELECT count(*) FROM orders", v,
                             sizeof v),
                     PGRES_TUPLES_OK);
    assert_string_equal(v, "1");
    assert_int_equal(as_user(c, USER_A, "INSERT INTO order_pack_jobs"
                                        " (order_id) VALUES (72)",
                             v, sizeof v),
                     PGRES_FATAL_ERROR);
    assert_int_equal(as_user(c, USER_A, "INSERT INTO order_pack_jobs"
                                        " (order_id) VALUES (71)",
                             v, sizeof v),
                     PGRES_COMMAND_OK);
    ExecStatusType st = as_user(c, USER_A, "UPDATE order_pack_jobs SET"
                                           " order_id = 72 WHERE order_id = 71",
                                v, sizeof v);
    assert_true(st == PGRES_FATAL_ERROR);
    as_user(c, USER_A, "DELETE FROM order_pack_jobs WHERE order_id = 72", v,
            sizeof v);
    expect_sql("1", "SELECT count(*) FROM order_pack_jobs WHERE order_id = 72"
                    " AND note = 'b secret'");
    expect_sql("1", "SELECT count(*) FROM order_pack_jobs WHERE order_id = 71");
    /* B sees its own job. */
    assert_int_equal(as_user(c, USER_B, "SELECT note FROM order_pack_jobs"
                                        " WHERE order_id = 72",
                             v, sizeof v),
                     PGRES_TUPLES_OK);
    assert_string_equal(v, "b secret");
    sl_test_exec(db, "DELETE FROM order_pack_jobs WHERE order_id IN (71, 72)");
    PQfinish(c);
}

/* ---- the base schema's accounts ------------------------------------------ */

static void app_role_inserts_an_account_with_returning(void **state) {
    (void)state;
    ready();
    PGconn *c = sl_test_connect("dbname=" DB);
    sl_test_exec(c, "SET ROLE sluice_app; SET request.jwt.claim.sub ="
                    " '44444444-4444-4444-4444-444444444444'");
    char *id = sl_test_scalar(c, "INSERT INTO accounts (name) VALUES"
                                 " ('mine') RETURNING id");
    assert_non_null(id);
    char sql[300];
    /* The trigger made the creator its owner; the creator reads it. */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM account_members WHERE account_id = '%s'"
             " AND role = 'owner'",
             id);
    assert_int_equal(sl_test_long(c, sql), 1);
    /* Another user sees nothing of it, cannot pose as its creator. */
    sl_test_exec(c, "SET request.jwt.claim.sub ="
                    " '55555555-5555-5555-5555-555555555555'");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM accounts WHERE id = '%s'",
             id);
    assert_int_equal(sl_test_long(c, sql), 0);
    PGresult *r = PQexec(c, "INSERT INTO accounts (name, created_by) VALUES"
                            " ('x', '44444444-4444-4444-4444-444444444444')");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    /* A creator removed from the account no longer sees it. */
    sl_test_exec(db, "INSERT INTO account_members (account_id, user_id)"
                     " SELECT id, '55555555-5555-5555-5555-555555555555'"
                     " FROM accounts WHERE name = 'mine'");
    sl_test_exec(c, "SET request.jwt.claim.sub ="
                    " '44444444-4444-4444-4444-444444444444'");
    assert_int_equal(sl_test_long(c, sql), 1);
    sl_test_exec(db, "DELETE FROM account_members WHERE user_id ="
                     " '44444444-4444-4444-4444-444444444444'");
    assert_int_equal(sl_test_long(c, sql), 0);
    free(id);
    /* So does one whose membership row is moved to another user. */
    id = sl_test_scalar(c, "INSERT INTO accounts (name) VALUES ('moved')"
                           " RETURNING id");
    assert_non_null(id);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM accounts WHERE id = '%s'",
             id);
    assert_int_equal(sl_test_long(c, sql), 1);
    char move[300];
    snprintf(move, sizeof move,
             "UPDATE account_members SET user_id ="
             " '66666666-6666-6666-6666-666666666666' WHERE account_id = '%s'",
             id);
    sl_test_exec(db, move);
    assert_int_equal(sl_test_long(c, sql), 0);
    free(id);
    PQfinish(c);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_canon_accepts_only_values_of_the_type),
        cmocka_unit_test(bigint_key_runs_end_to_end),
        cmocka_unit_test(bigint_key_of_the_wrong_type_is_exit_64),
        cmocka_unit_test(text_key_runs_end_to_end_through_lua),
        cmocka_unit_test(api_reads_subjects_by_typed_key),
        cmocka_unit_test(migrate_refuses_a_key_type_the_column_does_not_have),
        cmocka_unit_test(tenant_cannot_reach_another_tenants_bigint_subject),
        cmocka_unit_test(app_role_inserts_an_account_with_returning),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
