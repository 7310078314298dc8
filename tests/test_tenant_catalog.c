/* test_tenant_catalog.c - two accounts, every object the catalog lists.
 *
 * All shipped pipelines (every YAML file in pipelines/) are migrated together with the
 * base schema, and tests/keys/orders.yaml, whose subject (an application
 * table of orders owned by accounts) has a bigint key; every stage has a
 * history table (retention.history). Account A, signed in through the application role, then
 * attacks account B through every table, foreign key, column, view,
 * function and channel that pg_class, pg_attribute, pg_constraint,
 * pg_proc and the functions' pg_notify calls list: no hand-kept list of
 * objects. Every read must return nothing of B, every write must be
 * refused (or touch none of B's rows), nothing received may identify B.
 * The same sweep runs once more against deliberately weakened grants and
 * policies and must find each weakness, so it is known to be able to fail.
 *
 * End to end: B's interview runs through the shipped interview pipeline
 * (local providers) to ready, and B's report to done, while A attacks and
 * LISTENs on every channel; B's results are complete, A's report holds
 * nothing of B's. */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsl.h"
#include "migrate.h"
#include "runtime.h"
#include "schema.h"
#include "testlib.h"

#define DB "sluice_test_tenant_catalog"
#define ACC_A "00000000-0000-0000-0000-00000000000a"
#define ACC_B "00000000-0000-0000-0000-00000000000b"
#define USER_A "11111111-1111-1111-1111-111111111111"
#define USER_B "22222222-2222-2222-2222-222222222222"
#define USER_NONE "33333333-3333-3333-3333-333333333333" /* no account */
#define PROJ_A "aaaaaaaa-0000-0000-0000-0000000000a1"
#define PROJ_B "bbbbbbbb-0000-0000-0000-0000000000b1"
#define IV_A "aaaaaaaa-0000-0000-0000-000000000001"
#define IV_B "bbbbbbbb-0000-0000-0000-000000000001"
/* A word that appears only in B's rows. */
#define B_WORD "Zanzibar"

static PGconn *conn;
static sl_model *model;
static sl_schema *schema;

/* Everything that identifies B: its ids and B_WORD. */
static char *markers[512];
static size_t nmarkers;

/* Findings of one sweep, one per line. */
static char findings[1 << 16];
static size_t nfindings;

static void finding(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void finding(const char *fmt, ...) {
    size_t len = strlen(findings);
    va_list ap;
    va_start(ap, fmt);
    if (len + 2 < sizeof findings)
        vsnprintf(findings + len, sizeof findings - len - 1, fmt, ap);
    va_end(ap);
    len = strlen(findings);
    if (len + 1 < sizeof findings) strcat(findings, "\n");
    nfindings++;
}

static const char *leak(const char *text) {
    for (size_t i = 0; text && i < nmarkers; i++)
        if (strstr(text, markers[i])) return markers[i];
    return NULL;
}

/* ---- acting as a user ---------------------------------------------------- */

/* Runs sql as sluice_app for user (NULL: anonymous) in a transaction that
 * is rolled back. Returns the first value of the first row ("" when none)
 * as a malloc'd string, or NULL when the statement was refused (the
 * server's message in msg). */
static char *as_user(const char *user, const char *sql, char *msg,
                     size_t msglen) {
    sl_test_exec(conn, "BEGIN; SET LOCAL ROLE sluice_app");
    if (user) {
        const char *v[1] = {user};
        PGresult *r = PQexecParams(
            conn, "SELECT set_config('request.jwt.claim.sub', $1, true)", 1,
            NULL, v, NULL, NULL, 0);
        PQclear(r);
    }
    PGresult *r = PQexec(conn, sql);
    char *out = NULL;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK)
        out = strdup(PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0)
                                                            : "");
    else if (st == PGRES_COMMAND_OK)
        out = strdup(PQcmdTuples(r));
    else if (msg)
        snprintf(msg, msglen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    sl_test_exec(conn, "ROLLBACK");
    return out;
}

/* A refusal that says why: RLS or a missing privilege. */
static int clear_refusal(const char *msg) {
    return strstr(msg, "row-level security") || strstr(msg, "permission denied");
}

/* A write that must be refused, or succeed without touching B: returns
 * rows as JSON text through RETURNING, checked for markers. */
static void expect_write_refused(const char *what, const char *sql) {
    char msg[512] = "";
    char *v = as_user(USER_A, sql, msg, sizeof msg);
    if (v) finding("%s: accepted: %s", what, sql);
    else if (!clear_refusal(msg))
        finding("%s: refused without a clear reason: %s -> %s", what, sql, msg);
    free(v);
}

static void expect_no_leak(const char *who, const char *what, const char *sql) {
    char msg[512] = "";
    char *v = as_user(who, sql, msg, sizeof msg);
    const char *m = leak(v);
    if (m) finding("%s as %s: %s shows %s", what, who ? who : "anon", sql, m);
    free(v);
}

/* Rows of a one-column query, as the owner, into out[] (malloc'd). */
static size_t owner_rows(const char *sql, char **out, size_t max) {
    PGresult *r = PQexec(conn, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    size_t n = 0;
    for (int i = 0; i < PQntuples(r) && n < max; i++)
        out[n++] = strdup(PQgetisnull(r, i, 0) ? "" : PQgetvalue(r, i, 0));
    PQclear(r);
    return n;
}

static void free_rows(char **rows, size_t n) {
    for (size_t i = 0; i < n; i++) free(rows[i]);
}

/* ---- the sweep ----------------------------------------------------------- */

static const char *const Q_RELATIONS =
    "SELECT format('%I.%I', n.nspname, c.relname) || '|' || c.relkind::text || '|'"
    "       || c.relrowsecurity || '|'"
    "       || coalesce(array_to_string(c.reloptions, ','), '')"
    "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname IN ('public', 'auth') AND c.relkind IN ('r','v','m','p')"
    " ORDER BY 1";

/* Reads: every table and view, as A, as nobody, as a user with no account. */
static void sweep_reads(void) {
    char *rels[256];
    size_t n = owner_rows(Q_RELATIONS, rels, 256);
    for (size_t i = 0; i < n; i++) {
        char name[200], kind = 0, rls = 0;
        char *bar = strchr(rels[i], '|');
        snprintf(name, sizeof name, "%.*s", (int)(bar - rels[i]), rels[i]);
        kind = bar[1];
        rls = bar[3];
        const char *opts = bar + 5;
        if (kind == 'v' && !strstr(opts, "security_invoker=true"))
            finding("view %s runs with its owner's rights (no "
                    "security_invoker): it bypasses RLS",
                    name);
        if (kind == 'r' && rls != 't' && strncmp(name, "auth.", 5) != 0) {
            char q[400];
            snprintf(q, sizeof q,
                     "SELECT has_table_privilege('sluice_app', '%s', 'SELECT')",
                     name);
            char *g = sl_test_scalar(conn, q);
            if (g[0] == 't') finding("table %s: granted without RLS", name);
            free(g);
        }
        char q[400];
        snprintf(q, sizeof q,
                 "SELECT coalesce(string_agg(to_jsonb(t)::text, ' '), '') FROM"
                 " %s t",
                 name);
        expect_no_leak(USER_A, "read", q);
        if (kind != 'r') continue;
        snprintf(q, sizeof q, "SELECT count(*) FROM %s", name);
        static const char *const nobody[2] = {NULL, USER_NONE};
        for (int k = 0; k < 2; k++) {
            char msg[256] = "";
            char *v = as_user(nobody[k], q, msg, sizeof msg);
            if (v && strcmp(v, "0") != 0)
                finding("%s sees %s rows of %s",
                        nobody[k] ? "a user with no account" : "anonymous", v,
                        name);
            free(v);
        }
    }
    free_rows(rels, n);
}

/* B's value of column key in table ref: visible to B, not to A. */
static char *b_row(const char *ref, const char *key) {
    char q[400];
    snprintf(q, sizeof q, "SELECT coalesce(string_agg(%s::text, ','), '') FROM %s",
             key, ref);
    char *vb = as_user(USER_B, q, NULL, 0), *va = as_user(USER_A, q, NULL, 0);
    char *out = NULL;
    for (char *save = NULL, *p = strtok_r(vb ? vb : (char *)"", ",", &save);
         p && !out; p = strtok_r(NULL, ",", &save))
        if (!va || !strstr(va, p)) out = strdup(p);
    free(vb);
    free(va);
    return out;
}

/* Every foreign key: re-point A's rows at B's row, insert a copy of A's
 * row pointing at it. */
static void sweep_foreign_keys(void) {
    char *fks[256];
    size_t n = owner_rows(
        "SELECT format('%s|%s|%I|%s|%I', c.conrelid::regclass,"
        "              c.confrelid::regclass, a.attname, c.conname,"
        "              fa.attname)"
        "  FROM pg_constraint c"
        "  JOIN pg_attribute a ON a.attrelid = c.conrelid"
        "   AND a.attnum = c.conkey[1]"
        "  JOIN pg_attribute fa ON fa.attrelid = c.confrelid"
        "   AND fa.attnum = c.confkey[1]"
        "  JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE c.contype = 'f' AND n.nspname = 'public'"
        "   AND cardinality(c.conkey) = 1 ORDER BY 1",
        fks, 256);
    if (n < 10) finding("only %zu foreign keys found", n);
    for (size_t i = 0; i < n; i++) {
        char tbl[128], ref[128], col[128], con[128], key[128];
        if (sscanf(fks[i], "%127[^|]|%127[^|]|%127[^|]|%127[^|]|%127s", tbl,
                   ref, col, con, key) != 5)
            fail_msg("cannot parse %s", fks[i]);
        char *target = b_row(ref, key);
        if (!target) {
            finding("%s.%s: B has no row in %s to point at (seed one)", tbl,
                    col, ref);
            continue;
        }
        char what[512];
        snprintf(what, sizeof what, "foreign key %s.%s -> %s", tbl, col, ref);
        char q[4096];
        /* A must have a row of its own to copy, or nothing is tested. */
        snprintf(q, sizeof q, "SELECT count(*) FROM %s", tbl);
        char *own = as_user(USER_A, q, NULL, 0);
        if (!own || strcmp(own, "0") == 0)
            finding("%s: A has no row of %s to attack with (seed one)", what,
                    tbl);
        free(own);
        snprintf(q, sizeof q, "UPDATE %s SET %s = '%s'", tbl, col, target);
        char msg[512] = "";
        char *v = as_user(USER_A, q, msg, sizeof msg);
        if (v && strcmp(v, "0") != 0)
            finding("%s: A re-pointed %s row(s) at B's %s", what, v, target);
        else if (!v && !clear_refusal(msg))
            finding("%s: re-point refused without a clear reason: %s", what,
                    msg);
        free(v);
        /* Insert: the columns A may insert that have no default, the
         * foreign key set to B's row. */
        char lq[1200];
        snprintf(lq, sizeof lq,
                 "SELECT coalesce(string_agg(format('%%I', attname), ','"
                 " ORDER BY attnum), '')"
                 "  FROM pg_attribute WHERE attrelid = '%s'::regclass"
                 "   AND attnum > 0 AND NOT attisdropped AND attname <> '%s'"
                 "   AND NOT atthasdef AND has_column_privilege('sluice_app',"
                 "   attrelid, attnum, 'INSERT')",
                 tbl, col);
        char *cols = sl_test_scalar(conn, lq); /* NULL: none */
        if (cols && cols[0])
            snprintf(q, sizeof q,
                     "INSERT INTO %s (%s, %s) SELECT %s, '%s' FROM %s LIMIT 1",
                     tbl, cols, col, cols, target, tbl);
        else
            snprintf(q, sizeof q, "INSERT INTO %s (%s) VALUES ('%s')", tbl, col,
                     target);
        msg[0] = 0;
        v = as_user(USER_A, q, msg, sizeof msg);
        if (v && strcmp(v, "0") != 0)
            finding("%s: A inserted a row pointing at B's %s", what, target);
        else if (!v && !clear_refusal(msg))
            finding("%s: insert refused without a clear reason: %s (%s)", what,
                    msg, q);
        free(v);
        free(cols);
        free(target);
    }
    free_rows(fks, n);
}

/* Updates and deletes: every table, every column A may update, set to
 * itself; every row A may delete. What came back must hold nothing of B. */
static void sweep_updates_and_deletes(void) {
    char *cols[1024];
    size_t n = owner_rows(
        "SELECT format('%s|%I', a.attrelid::regclass, a.attname)"
        "  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        "  JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0"
        "   AND NOT a.attisdropped"
        "   AND has_column_privilege('sluice_app', a.attrelid, a.attnum,"
        "       'UPDATE') ORDER BY 1",
        cols, 1024);
    for (size_t i = 0; i < n; i++) {
        char tbl[128], col[128], q[600];
        sscanf(cols[i], "%127[^|]|%127s", tbl, col);
        snprintf(q, sizeof q,
                 "WITH u AS (UPDATE %s t SET %s = t.%s RETURNING t.*) SELECT"
                 " coalesce(string_agg(to_jsonb(u)::text, ' '), '') FROM u",
                 tbl, col, col);
        expect_no_leak(USER_A, "update", q);
    }
    free_rows(cols, n);
    char *tbls[256];
    n = owner_rows("SELECT c.oid::regclass::text FROM pg_class c JOIN"
                   " pg_namespace n ON n.oid = c.relnamespace WHERE"
                   " n.nspname = 'public' AND c.relkind = 'r' AND"
                   " has_table_privilege('sluice_app', c.oid, 'DELETE')"
                   " ORDER BY 1",
                   tbls, 256);
    for (size_t i = 0; i < n; i++) {
        char q[600];
        snprintf(q, sizeof q,
                 "WITH d AS (DELETE FROM %s t RETURNING t.*) SELECT"
                 " coalesce(string_agg(to_jsonb(d)::text, ' '), '') FROM d",
                 tbls[i]);
        expect_no_leak(USER_A, "delete", q);
    }
    free_rows(tbls, n);
}

static const sl_schema_column *model_column(const char *table,
                                            const char *col) {
    for (size_t i = 0; i < schema->ntables; i++) {
        const sl_schema_table *t = &schema->tables[i];
        if (strcmp(t->name, table) != 0) continue;
        for (size_t k = 0; k < t->ncolumns; k++)
            if (strcmp(t->columns[k].name, col) == 0) return &t->columns[k];
    }
    return NULL;
}

/* Engine columns: every column of every queue table (found by its table
 * comment) that the model marks as the engine's, written by A on its own
 * rows: refused. */
static void sweep_engine_columns(void) {
    char *cols[1024];
    size_t n = owner_rows(
        "SELECT c.relname || '|' || a.attname"
        "  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE obj_description(c.oid, 'pg_class') LIKE 'sluice queue %'"
        "   AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1",
        cols, 1024);
    if (n < 50) finding("only %zu queue columns found", n);
    for (size_t i = 0; i < n; i++) {
        char tbl[128], col[128], q[600];
        sscanf(cols[i], "%127[^|]|%127s", tbl, col);
        const sl_schema_column *c = model_column(tbl, col);
        if (!c) {
            finding("%s.%s: in the database, not in the model", tbl, col);
            continue;
        }
        if (!c->engine) continue;
        char what[512];
        snprintf(what, sizeof what, "engine column %s.%s", tbl, col);
        if (strcmp(col, "status") == 0)
            snprintf(q, sizeof q,
                     "UPDATE %s SET status = CASE WHEN status = 'done' THEN"
                     " 'pending'::job_status ELSE 'done'::job_status END",
                     tbl);
        else
            snprintf(q, sizeof q, "UPDATE %s SET %s = DEFAULT", tbl, col);
        if (!c->ref_table) expect_write_refused(what, q);
        snprintf(q, sizeof q, "INSERT INTO %s (%s) VALUES (DEFAULT)", tbl, col);
        if (!c->ref_table) expect_write_refused(what, q);
    }
    free_rows(cols, n);
}

/* Functions: every SECURITY DEFINER one has a fixed search_path and no
 * EXECUTE for PUBLIC; every one the app may call answers the same for B's
 * ids as for ids that do not exist. */
static void sweep_functions(void) {
    char *defs[128];
    size_t n = owner_rows(
        "SELECT p.oid::regprocedure || '|' ||"
        "       (coalesce(array_to_string(p.proconfig, ','), '') LIKE"
        "        '%search_path=%')::text || '|' ||"
        "       has_function_privilege('public', p.oid, 'EXECUTE')::text"
        "       || '|' || coalesce((SELECT string_agg(r.rolname, ',')"
        "          FROM aclexplode(p.proacl) x JOIN pg_roles r"
        "            ON r.oid = x.grantee"
        "         WHERE x.privilege_type = 'EXECUTE'"
        "           AND r.oid <> p.proowner), '')"
        "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname IN ('public', 'auth') AND p.prosecdef ORDER BY 1",
        defs, 128);
    if (n < 3) finding("only %zu SECURITY DEFINER functions found", n);
    for (size_t i = 0; i < n; i++) {
        char fn[200], path[8], pub[8], roles[200] = "";
        sscanf(defs[i], "%199[^|]|%7[^|]|%7[^|]|%199s", fn, path, pub, roles);
        if (strcmp(path, "true") != 0)
            finding("SECURITY DEFINER %s has no fixed search_path", fn);
        if (strcmp(pub, "false") != 0)
            finding("SECURITY DEFINER %s is executable by PUBLIC", fn);
        if (roles[0] && strcmp(roles, "sluice_app") != 0)
            finding("SECURITY DEFINER %s is executable by %s", fn, roles);
    }
    free_rows(defs, n);

    char *fns[256];
    n = owner_rows(
        "SELECT p.oid::regprocedure || '|' || p.oid || '|' ||"
        "       coalesce((SELECT string_agg(CASE WHEN t = 'uuid'::regtype"
        "          THEN '$ID' ELSE 'NULL::' || t::regtype END, ',' ORDER BY o)"
        "          FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY"
        "            AS a(t, o)), '')"
        "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname IN ('public', 'auth')"
        "   AND p.prorettype <> 'trigger'::regtype AND p.prokind = 'f'"
        "   AND has_function_privilege('sluice_app', p.oid, 'EXECUTE')"
        " ORDER BY 1",
        fns, 256);
    static const char *const ids[] = {ACC_B, PROJ_B, IV_B, USER_B};
    for (size_t i = 0; i < n; i++) {
        char fn[200], oid[20], args[400] = "";
        sscanf(fns[i], "%199[^|]|%19[^|]|%399[^\n]", fn, oid, args);
        char name[200];
        snprintf(name, sizeof name, "%s", fn);
        *strchr(name, '(') = 0;
        for (size_t k = 0; k < sizeof ids / sizeof *ids; k++) {
            char call[2][800];
            for (int w = 0; w < 2; w++) {
                char a[600] = "";
                const char *id = w ? "99999999-9999-9999-9999-999999999999"
                                   : ids[k];
                size_t o = 0;
                for (const char *p = args; *p && o + 60 < sizeof a;) {
                    if (strncmp(p, "$ID", 3) == 0) {
                        o += (size_t)snprintf(a + o, sizeof a - o, "'%s'::uuid",
                                              id);
                        p += 3;
                    } else {
                        a[o++] = *p++;
                    }
                }
                a[o] = 0;
                snprintf(call[w], sizeof call[w], "SELECT %s(%s)::text", name,
                         a);
            }
            char m1[256] = "", m2[256] = "";
            char *v1 = as_user(USER_A, call[0], m1, sizeof m1);
            char *v2 = as_user(USER_A, call[1], m2, sizeof m2);
            if ((v1 == NULL) != (v2 == NULL) ||
                (v1 && strcmp(v1, v2) != 0))
                finding("function %s answers differently for B's %s than for "
                        "a missing id: %s vs %s",
                        fn, ids[k], v1 ? v1 : m1, v2 ? v2 : m2);
            if (leak(v1)) finding("function %s shows %s", fn, leak(v1));
            free(v1);
            free(v2);
            if (!strstr(args, "$ID")) break;
        }
    }
    free_rows(fns, n);
}

/* The channels every generated function notifies on. */
static size_t channels(char **out, size_t max) {
    return owner_rows(
        "SELECT DISTINCT m[1] FROM pg_proc p JOIN pg_namespace n"
        "    ON n.oid = p.pronamespace,"
        "  regexp_matches(p.prosrc, 'pg_notify\\(''([^'']+)''', 'g') m"
        " WHERE n.nspname = 'public' ORDER BY 1",
        out, max);
}

static size_t sweep(void) {
    findings[0] = 0;
    nfindings = 0;
    sweep_reads();
    sweep_foreign_keys();
    sweep_updates_and_deletes();
    sweep_engine_columns();
    sweep_functions();
    return nfindings;
}

/* ---- setup ----------------------------------------------------------------- */

static void add_marker(const char *s) {
    for (size_t i = 0; i < nmarkers; i++)
        if (strcmp(markers[i], s) == 0) return;
    if (nmarkers < sizeof markers / sizeof *markers)
        markers[nmarkers++] = strdup(s);
}

/* B's ids: every uuid `id` B sees that A does not, in every table. */
static void collect_markers(void) {
    add_marker(B_WORD);
    add_marker(USER_B);
    char *tbls[256];
    size_t n = owner_rows(
        "SELECT a.attrelid::regclass::text FROM pg_attribute a JOIN pg_class c"
        "    ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid ="
        "       c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
        "   AND a.attname = 'id' AND a.atttypid = 'uuid'::regtype ORDER BY 1",
        tbls, 256);
    for (size_t i = 0; i < n; i++) {
        char q[300];
        snprintf(q, sizeof q, "SELECT string_agg(id::text, ',') FROM %s",
                 tbls[i]);
        char *vb = as_user(USER_B, q, NULL, 0), *va = as_user(USER_A, q, NULL, 0);
        for (char *save = NULL, *p = strtok_r(vb ? vb : (char *)"", ",", &save);
             p; p = strtok_r(NULL, ",", &save))
            if (!va || !strstr(va, p)) add_marker(p);
        free(vb);
        free(va);
    }
    free_rows(tbls, n);
}

/* Inserts sql's rows as user through the application role, committed. */
static void insert_as(const char *user, const char *sql, int nparams,
                      const char *const *vals, const int *lens,
                      const int *formats) {
    sl_test_exec(conn, "BEGIN; SET LOCAL ROLE sluice_app");
    const char *v[1] = {user};
    PQclear(PQexecParams(conn,
                         "SELECT set_config('request.jwt.claim.sub', $1, true)",
                         1, NULL, v, NULL, NULL, 0));
    PGresult *r = PQexecParams(conn, sql, nparams, NULL, vals, lens, formats, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("as %s: %s: %s", user, sql, PQresultErrorMessage(r));
    PQclear(r);
    sl_test_exec(conn, "COMMIT");
}

static int setup(void **state) {
    (void)state;
    unsetenv("ASSEMBLYAI_API_KEY");
    unsetenv("OPENAI_API_KEY");
    setenv("SLUICE_REPORT_SUMMARIES", "extractive", 1);
    const char *ci = sl_test_db(DB);
    conn = sl_test_connect(ci);
    /* With them, a pipeline whose subject has a bigint key (guessable,
     * unlike a uuid): an application table of orders owned by accounts.
     * Its policy and foreign key need base.sql, so they follow migrate. */
    const char *paths[4] = {SL_SOURCE_DIR "/pipelines/generation.yaml",
                            SL_SOURCE_DIR "/pipelines/interview.yaml",
                            SL_SOURCE_DIR "/pipelines/report.yaml",
                            SL_SOURCE_DIR "/tests/keys/orders.yaml"};
    sl_test_exec(conn, "CREATE TABLE orders (id bigint PRIMARY KEY,"
                       " account_id uuid NOT NULL, status text NOT NULL"
                       " DEFAULT 'new', progress int NOT NULL DEFAULT 0,"
                       " detail text);"
                       "ALTER TABLE orders ENABLE ROW LEVEL SECURITY");
    sl_diags d = {0};
    if (sl_dsl_load(paths, 4, &model, &d) != 0)
        fail_msg("load: %s", sl_diags_format(&d));
    sl_diags_free(&d);
    /* Every queue also keeps a history table (`retention: {history:
     * true}`), so that the sweep, which takes its tables from the
     * catalog, attacks those too; the rows copied there below give it
     * something of B's to find. */
    for (size_t i = 0; i < model->npipelines; i++)
        for (size_t k = 0; k < model->pipelines[i].nstages; k++)
            model->pipelines[i].stages[k].retention_history = 1;
    char err[1024];
    if (sl_schema_build(model, &schema, err, sizeof err) != 0)
        fail_msg("schema: %s", err);
    sl_migrate_result mr;
    memset(&mr, 0, sizeof mr);
    if (sl_migrate(conn, model, NULL, &mr, err, sizeof err) != 0)
        fail_msg("migrate: %s", err);
    sl_migrate_result_free(&mr);
    sl_test_exec(conn,
                 "ALTER TABLE orders ADD FOREIGN KEY (account_id) REFERENCES"
                 " accounts (id) ON DELETE CASCADE;"
                 "CREATE POLICY orders_member ON orders FOR ALL USING"
                 " (public.sluice_is_account_member(account_id)) WITH CHECK"
                 " (public.sluice_is_account_member(account_id));"
                 "GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO"
                 " sluice_app");

    /* Both accounts, as the owner: members, a project, an interview, an
     * insight and a persona each; A's rows also get a job in every queue
     * (inserted as A), so every foreign key has a row to attack with. */
    sl_test_exec(
        conn,
        "INSERT INTO accounts (id, name) VALUES ('" ACC_A "', 'Acme'),"
        " ('" ACC_B "', '" B_WORD " Ltd');"
        "INSERT INTO account_members (account_id, user_id, role) VALUES"
        " ('" ACC_A "', '" USER_A "', 'owner'),"
        " ('" ACC_B "', '" USER_B "', 'owner');"
        "INSERT INTO projects (id, account_id, name) VALUES"
        " ('" PROJ_A "', '" ACC_A "', 'Billing research'),"
        " ('" PROJ_B "', '" ACC_B "', '" B_WORD " roadmap');"
        "INSERT INTO interviews (id, account_id, project_id, title, status)"
        " VALUES ('" IV_A "', '" ACC_A "', '" PROJ_A "', 'Pat', 'ready'),"
        " ('" IV_B "', '" ACC_B "', '" PROJ_B "', '" B_WORD " interview',"
        "  'uploading');"
        "INSERT INTO insights (interview_id, chunk, seq, kind, content,"
        " confidence) VALUES"
        " ('" IV_A "', 0, 0, 'pain_point', 'Exporting spreadsheets loses the"
        " formulas.', 0.9),"
        " ('" IV_A "', 0, 1, 'wish', 'Wants spreadsheets exported with"
        " formulas kept.', 0.8);"
        "INSERT INTO personas (interview_id, name, role) VALUES"
        " ('" IV_A "', 'Pat', 'analyst');"
        "INSERT INTO orders (id, account_id, detail) VALUES"
        " (71, '" ACC_A "', 'Acme order'),"
        " (72, '" ACC_B "', '" B_WORD " order')");
    static const char *const a_jobs[] = {
        "INSERT INTO upload_jobs (interview_id) VALUES ('" IV_A "')",
        "INSERT INTO transcription_jobs (interview_id) VALUES ('" IV_A "')",
        "INSERT INTO analysis_jobs (interview_id) VALUES ('" IV_A "')",
        "INSERT INTO generation_jobs (account_id, project_id) VALUES ('" ACC_A
        "', '" PROJ_A "')",
        "INSERT INTO order_pack_jobs (order_id, note) VALUES (71, 'Acme')",
        "INSERT INTO order_ship_jobs (order_id) VALUES (71)",
        NULL};
    for (int i = 0; a_jobs[i]; i++) insert_as(USER_A, a_jobs[i], 0, NULL, NULL, NULL);
    /* A's jobs wait: only B's run in this test (A's report comes later). */
    sl_test_exec(conn, "UPDATE upload_jobs SET status = 'cancelled';"
                       "UPDATE transcription_jobs SET status = 'cancelled';"
                       "UPDATE analysis_jobs SET status = 'cancelled';"
                       "UPDATE generation_jobs SET status = 'cancelled';"
                       "UPDATE order_pack_jobs SET status = 'cancelled';"
                       "UPDATE order_ship_jobs SET status = 'cancelled'");
    insert_as(USER_A,
              "INSERT INTO report_jobs (account_id, project_id) VALUES"
              " ('" ACC_A "', '" PROJ_A "')",
              0, NULL, NULL, NULL);
    /* B's rows that A's rows do not already cover. */
    sl_test_exec(conn,
                 "INSERT INTO insights (interview_id, chunk, seq, kind, content)"
                 " VALUES ('" IV_B "', 9, 0, 'note', '" B_WORD " seed');"
                 "INSERT INTO personas (interview_id, name) VALUES"
                 " ('" IV_B "', '" B_WORD " persona')");
    insert_as(USER_B,
              "INSERT INTO generation_jobs (account_id, project_id) VALUES"
              " ('" ACC_B "', '" PROJ_B "')",
              0, NULL, NULL, NULL);
    insert_as(USER_B,
              "INSERT INTO order_pack_jobs (order_id, note) VALUES"
              " (72, '" B_WORD " parcel')",
              0, NULL, NULL, NULL);
    sl_test_exec(conn, "UPDATE generation_jobs SET status = 'cancelled';"
                       "UPDATE order_pack_jobs SET status = 'cancelled'"
                       " WHERE order_id = 72");
    /* Each history table gets a copy of its queue's rows (A's and B's),
     * as retention would move them. */
    sl_test_exec(conn,
                 "DO $$ DECLARE r record; BEGIN FOR r IN SELECT c.relname AS"
                 " h, substr(obj_description(c.oid, 'pg_class'), 1) AS d FROM"
                 " pg_class c WHERE c.relkind = 'r' AND obj_description(c.oid,"
                 " 'pg_class') LIKE 'sluice history %' LOOP EXECUTE"
                 " format('INSERT INTO %I SELECT * FROM %I', r.h,"
                 " left(r.h, length(r.h) - 8)); END LOOP; END $$");
    long copied = sl_test_long(conn, "SELECT count(*) FROM"
                                     " generation_jobs_history WHERE"
                                     " account_id = '" ACC_B "'");
    if (copied != 1) fail_msg("B's job was not copied to the history");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    PQfinish(conn);
    sl_schema_free(schema);
    sl_model_free(model);
    for (size_t i = 0; i < nmarkers; i++) free(markers[i]);
    nmarkers = 0;
    return 0;
}

/* ---- the tests ------------------------------------------------------------- */

static pid_t spawn_worker(void) {
    pid_t pid = fork();
    if (pid == 0) {
        sl_runtime_opts o;
        memset(&o, 0, sizeof o);
        o.conninfo = "dbname=" DB;
        o.exit_when_idle = 1;
        o.drain_ms = 1500;
        char err[1024];
        int rc = sl_runtime_run(model, &o, err, sizeof err);
        if (rc) fprintf(stderr, "runtime: %s\n", err);
        _exit(rc ? 1 : 0);
    }
    return pid;
}

/* A LISTENs on every channel through the application role; collects what
 * arrives until the worker exits. Returns the number of notifications. */
static int listen_while(PGconn *l, pid_t worker, int attack) {
    int got = 0, status = 0;
    for (;;) {
        if (attack) {
            /* The attacks, repeated while B's jobs move. */
            if (sweep() != 0) fail_msg("while B's jobs ran:\n%s", findings);
            attack = 0;
        }
        struct pollfd pfd = {PQsocket(l), POLLIN, 0};
        poll(&pfd, 1, 200);
        PQconsumeInput(l);
        PGnotify *nt;
        while ((nt = PQnotifies(l)) != NULL) {
            got++;
            if (strcmp(nt->extra, "") != 0 && strcmp(nt->extra, "sweep") != 0)
                fail_msg("channel %s carried a payload: %s", nt->relname,
                         nt->extra);
            if (leak(nt->extra))
                fail_msg("channel %s carried %s: %s", nt->relname,
                         leak(nt->extra), nt->extra);
            PQfreemem(nt);
        }
        pid_t w = waitpid(worker, &status, WNOHANG);
        if (w == worker) break;
    }
    assert_int_equal(WEXITSTATUS(status), 0);
    return got;
}

static void tenant_a_reaches_nothing_of_b_through_any_catalog_object(void **s) {
    (void)s;
    collect_markers();
    assert_true(nmarkers >= 8);
    if (sweep() != 0) fail_msg("%zu findings:\n%s", nfindings, findings);
}

static void weakened_policy_and_grants_are_found(void **s) {
    (void)s;
    collect_markers();
    /* The policy as it was before references were checked, a table-wide
     * UPDATE grant, a definer function open to PUBLIC. */
    sl_test_exec(conn,
                 "ALTER POLICY sluice_inherit ON report_jobs WITH CHECK (EXISTS"
                 " (SELECT 1 FROM accounts t WHERE t.id ="
                 " report_jobs.account_id));"
                 "GRANT UPDATE ON transcription_jobs TO sluice_app;"
                 "GRANT EXECUTE ON FUNCTION sluice_is_account_owner(uuid) TO"
                 " PUBLIC;"
                 /* The bigint-keyed queue open to everyone. */
                 "ALTER POLICY sluice_inherit ON order_pack_jobs USING (true)"
                 " WITH CHECK (true);"
                 /* A history table whose policy lets every row through. */
                 "ALTER POLICY sluice_inherit ON generation_jobs_history USING"
                 " (true)");
    size_t n = sweep();
    /* Put back what the generator and sql/base.sql make. */
    for (size_t i = 0; i < schema->nobjects; i++) {
        const sl_schema_object *o = &schema->objects[i];
        if ((o->kind == SL_OBJ_POLICY &&
             (strcmp(o->table, "report_jobs") == 0 ||
              strcmp(o->table, "order_pack_jobs") == 0 ||
              strcmp(o->table, "generation_jobs_history") == 0)) ||
            (o->kind == SL_OBJ_GRANT &&
             strcmp(o->table, "transcription_jobs") == 0))
            sl_test_exec(conn, o->sql);
    }
    sl_test_exec(conn, "REVOKE EXECUTE ON FUNCTION"
                       " sluice_is_account_owner(uuid) FROM PUBLIC");
    if (n == 0) fail_msg("the weakened schema passed the sweep");
    assert_non_null(strstr(findings, "foreign key report_jobs.project_id"));
    assert_non_null(strstr(findings, "engine column transcription_jobs.priority"));
    assert_non_null(strstr(findings, "sluice_is_account_owner(uuid) is "
                                     "executable by PUBLIC"));
    assert_non_null(strstr(findings, "order_pack_jobs"));
    assert_non_null(strstr(findings, "generation_jobs_history"));
    /* And the real schema is back to clean. */
    assert_int_equal(sweep(), 0);
}

static void b_runs_to_ready_while_a_attacks_and_listens(void **s) {
    (void)s;
    char *chans[64];
    size_t nch = channels(chans, 64);
    assert_true(nch >= 5);
    PGconn *l = sl_test_connect("dbname=" DB);
    sl_test_exec(l, "SET ROLE sluice_app;"
                    "SELECT set_config('request.jwt.claim.sub', '" USER_A
                    "', false)");
    for (size_t i = 0; i < nch; i++) {
        char q[200];
        snprintf(q, sizeof q, "LISTEN \"%s\"", chans[i]);
        sl_test_exec(l, q);
    }

    /* B uploads its interview through the application role. */
    size_t len = 0;
    char *wav = NULL;
    FILE *f = fopen(SL_SOURCE_DIR "/tests/audio/interview.wav", "rb");
    assert_non_null(f);
    wav = malloc(8 << 20);
    len = fread(wav, 1, 8 << 20, f);
    fclose(f);
    const char *vals[2] = {IV_B, wav};
    int lens[2] = {0, (int)len}, fmts[2] = {0, 1};
    insert_as(USER_B,
              "INSERT INTO upload_jobs (interview_id, media_file) VALUES ($1,"
              " $2)",
              2, vals, lens, fmts);
    free(wav);

    pid_t w = spawn_worker();
    int got = listen_while(l, w, 1);
    assert_true(got >= 3);
    char *st = sl_test_scalar(conn, "SELECT status || ' ' || progress FROM"
                                    " interviews WHERE id = '" IV_B "'");
    assert_string_equal(st, "ready 100");
    free(st);
    assert_true(sl_test_long(conn, "SELECT count(*) FROM insights WHERE"
                                   " interview_id = '" IV_B "' AND content"
                                   " ILIKE '%invoices%'") >= 1);
    /* The hand-off kept B as the requester all the way. */
    assert_int_equal(sl_test_long(conn, "SELECT count(*) FROM analysis_jobs"
                                        " WHERE requested_by = '" USER_B
                                        "' AND status = 'done'"),
                     1);

    /* B asks for its report; A asks for B's project (refused) and its own. */
    char msg[512] = "";
    char *v = as_user(USER_A,
                      "INSERT INTO report_jobs (account_id, project_id) VALUES"
                      " ('" ACC_A "', '" PROJ_B "')",
                      msg, sizeof msg);
    assert_null(v);
    assert_non_null(strstr(msg, "row-level security"));
    insert_as(USER_B,
              "INSERT INTO report_jobs (account_id, project_id) VALUES"
              " ('" ACC_B "', '" PROJ_B "')",
              0, NULL, NULL, NULL);
    w = spawn_worker();
    listen_while(l, w, 1);
    PQfinish(l);

    char *rb = sl_test_scalar(conn, "SELECT status || ' ' || markdown FROM"
                                    " report_jobs WHERE account_id = '" ACC_B
                                    "'");
    assert_true(strncmp(rb, "done ", 5) == 0);
    assert_non_null(strstr(rb, B_WORD " roadmap"));
    assert_non_null(strstr(rb, B_WORD " interview"));
    free(rb);
    char *ra = sl_test_scalar(conn, "SELECT status || ' ' || markdown ||"
                                    " report::text FROM report_jobs WHERE"
                                    " account_id = '" ACC_A "'");
    assert_true(strncmp(ra, "done ", 5) == 0);
    assert_non_null(strstr(ra, "Billing research"));
    if (leak(ra)) fail_msg("A's report holds %s:\n%s", leak(ra), ra);
    free(ra);
    free_rows(chans, nch);
}

/* The runtime acts for the requester: a report job that names a project
 * its requester cannot see (planted by the owner, past the policy) finds
 * no project rather than reading B's. */
static void report_for_a_project_the_requester_cannot_see_reads_nothing(
    void **s) {
    (void)s;
    sl_test_exec(conn, "UPDATE report_jobs SET status = 'cancelled';"
                       "INSERT INTO report_jobs (account_id, project_id,"
                       " requested_by) VALUES ('" ACC_A "', '" PROJ_B "', '"
                       USER_A "')");
    pid_t w = spawn_worker();
    int status = 0;
    waitpid(w, &status, 0);
    char *r = sl_test_scalar(conn, "SELECT status || ' ' ||"
                                   " coalesce(last_error, '') ||"
                                   " coalesce(markdown, '') FROM report_jobs"
                                   " WHERE project_id = '" PROJ_B "' AND"
                                   " account_id = '" ACC_A "'");
    assert_true(strncmp(r, "error ", 6) == 0);
    assert_non_null(strstr(r, "does not exist"));
    assert_null(strstr(r, B_WORD));
    free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tenant_a_reaches_nothing_of_b_through_any_catalog_object),
        cmocka_unit_test(weakened_policy_and_grants_are_found),
        cmocka_unit_test(b_runs_to_ready_while_a_attacks_and_listens),
        cmocka_unit_test(report_for_a_project_the_requester_cannot_see_reads_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
