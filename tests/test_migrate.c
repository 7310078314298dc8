/* test_migrate.c - `sluice migrate` against the real PostgreSQL
 * (engine/migrate.h): fresh databases, no-op reruns, additive and
 * destructive changes, RLS with two tenants, NOTIFY, and the command line.
 * Each test starts from a freshly created database. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include "dsl.h"
#include "error.h"
#include "migrate.h"
#include "schema.h"
#include "testlib.h"

#define DB "sluice_test_migrate"

static const char *conninfo;
static PGconn *conn;

/* ------------------------------------------------------------ pipelines */

#define UPLOAD_COLS                                                            \
    "      media_file: bytea\n"                                                \
    "      external_url: text\n"                                               \
    "      score: integer\n"

#define ANALYZE_STAGE                                                          \
    "    next: analyze\n"                                                      \
    "  analyze:\n"                                                             \
    "    queue: analysis_jobs\n"                                               \
    "    handler: noop\n"                                                      \
    "    columns:\n"                                                           \
    "      transcript: text\n"

typedef struct ivopts {
    const char *subject_channel; /* default interviews_status */
    const char *upload_channel;  /* default upload_jobs_channel */
    const char *upload_cols;     /* default UPLOAD_COLS */
    const char *extra;           /* appended to the transcribe stage */
} ivopts;

/* The interview pipeline, varied by o (NULL: the defaults). Returns a
 * static buffer. */
static const char *iv_yaml(const ivopts *o) {
    static char buf[4096];
    ivopts d = {0};
    if (!o) o = &d;
    snprintf(buf, sizeof buf,
             "pipeline: interview\n"
             "subject:\n"
             "  table: interviews\n"
             "  status:\n"
             "    values: [uploading, uploaded, transcribed, processing, "
             "ready, error]\n"
             "  progress: progress\n"
             "  detail: status_detail\n"
             "  channel: %s\n"
             "stages:\n"
             "  upload:\n"
             "    queue: upload_jobs\n"
             "    channel: %s\n"
             "    handler: noop\n"
             "    columns:\n"
             "%s"
             "    next: transcribe\n"
             "  transcribe:\n"
             "    queue: transcription_jobs\n"
             "    handler: noop\n"
             "    columns:\n"
             "      upload_url: text\n"
             "      transcript: text\n"
             "%s",
             o->subject_channel ? o->subject_channel : "interviews_status",
             o->upload_channel ? o->upload_channel : "upload_jobs_channel",
             o->upload_cols ? o->upload_cols : UPLOAD_COLS,
             o->extra ? o->extra : "");
    return buf;
}

static sl_model *load(const char *yaml) {
    sl_model *m = NULL;
    sl_diags d = {0};
    if (sl_dsl_load_string("test.yaml", yaml, strlen(yaml), &m, &d) != 0) {
        char *msg = sl_diags_format(&d);
        fail_msg("pipeline does not load:\n%s", msg ? msg : "");
    }
    sl_diags_free(&d);
    return m;
}

enum { ALLOW = 1, DRY = 2, NOBASE = 4 };

static char err[8192];

/* Migrates to the model of yaml; res must be freed by the caller. */
static int migrate_model(const sl_model *m, int flags, sl_migrate_result *res) {
    sl_migrate_opts o = {0};
    o.allow_destructive = !!(flags & ALLOW);
    o.dry_run = !!(flags & DRY);
    o.skip_base = !!(flags & NOBASE);
    return sl_migrate(conn, m, &o, res, err, sizeof err);
}

static int migrate(const char *yaml, int flags, sl_migrate_result *res) {
    sl_model *m = load(yaml);
    int rc = migrate_model(m, flags, res);
    sl_model_free(m);
    return rc;
}

/* Migrates and expects success with a change. */
static void migrate_ok(const char *yaml) {
    sl_migrate_result res;
    int rc = migrate(yaml, 0, &res);
    if (rc != 0) fail_msg("migrate failed (%d): %s", rc, err);
    sl_migrate_result_free(&res);
}

static long scalar_long(const char *sql) {
    return sl_test_long(conn, sql);
}

static void assert_sql_true(const char *sql) {
    char *v = sl_test_scalar(conn, sql);
    if (!v || strcmp(v, "t") != 0)
        fail_msg("expected true: %s (got %s)", sql, v ? v : "NULL");
    free(v);
}

static void assert_sql_str(const char *sql, const char *want) {
    char *v = sl_test_scalar(conn, sql);
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s\n  expected: %s\n  got:      %s", sql, want,
                 v ? v : "NULL");
    free(v);
}

#define assert_contains(hay, needle)                                           \
    do {                                                                       \
        const char *h_ = (hay);                                                \
        if (!h_ || !strstr(h_, (needle)))                                      \
            fail_msg("expected to find \"%s\" in:\n%s", (needle),              \
                     h_ ? h_ : "(null)");                                      \
    } while (0)

#define ACC_A "00000000-0000-0000-0000-00000000000a"
#define ACC_B "00000000-0000-0000-0000-00000000000b"
#define USER_A "11111111-1111-1111-1111-111111111111"
#define USER_B "22222222-2222-2222-2222-222222222222"
#define IV_A "aaaaaaaa-0000-0000-0000-000000000001"
#define IV_B "bbbbbbbb-0000-0000-0000-000000000001"

/* Two accounts with one member and one interview each. */
static void two_tenants(void) {
    sl_test_exec(conn, "INSERT INTO accounts (id, name) VALUES"
                       " ('" ACC_A "', 'A'), ('" ACC_B "', 'B');"
                       "INSERT INTO account_members (account_id, user_id, role)"
                       " VALUES ('" ACC_A "', '" USER_A "', 'owner'),"
                       "        ('" ACC_B "', '" USER_B "', 'owner');"
                       "INSERT INTO interviews (id, account_id, title) VALUES"
                       " ('" IV_A "', '" ACC_A "', 'interview of A'),"
                       " ('" IV_B "', '" ACC_B "', 'interview of B');");
}

/* Notifications received on channel since the last call. */
static int drain_notifies(const char *channel, char *payload, size_t paylen) {
    int n = 0;
    assert_int_equal(PQconsumeInput(conn), 1);
    PGnotify *nf;
    while ((nf = PQnotifies(conn)) != NULL) {
        if (strcmp(nf->relname, channel) == 0) {
            n++;
            if (payload) snprintf(payload, paylen, "%s", nf->extra);
        }
        PQfreemem(nf);
    }
    return n;
}

/* Waits up to ms for input, then drains. */
static int wait_notifies(const char *channel, int ms, char *payload,
                         size_t paylen) {
    int sock = PQsocket(conn);
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(sock, &fds);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    select(sock + 1, &fds, NULL, NULL, &tv);
    return drain_notifies(channel, payload, paylen);
}

/* A fingerprint of every relation, trigger, policy and function (with
 * their oids): equal before and after = nothing was re-created. */
static char *catalog_fingerprint(void) {
    return sl_test_scalar(
        conn,
        "SELECT md5(string_agg(x, ',' ORDER BY x)) FROM ("
        " SELECT c.oid::text || c.relname FROM pg_class c"
        "  WHERE c.relnamespace = 'public'::regnamespace"
        " UNION ALL SELECT t.oid::text || t.tgname FROM pg_trigger t"
        " UNION ALL SELECT p.oid::text || p.polname FROM pg_policy p"
        " UNION ALL SELECT p.oid::text || p.proname FROM pg_proc p"
        "  WHERE p.pronamespace = 'public'::regnamespace"
        " UNION ALL SELECT obj_description(c.oid, 'pg_class') FROM pg_class c"
        "  WHERE c.relnamespace = 'public'::regnamespace"
        "    AND obj_description(c.oid, 'pg_class') IS NOT NULL"
        ") s(x)");
}

/* ------------------------------------------------------------ setup */

static int setup(void **state) {
    (void)state;
    conninfo = sl_test_db(DB);
    conn = sl_test_connect(conninfo);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    PQfinish(conn);
    conn = NULL;
    return 0;
}

/* ------------------------------------------------------------ C API */

static void migrate_creates_base_and_queues_on_a_fresh_database(void **state) {
    (void)state;
    sl_migrate_result res;
    int rc = migrate(iv_yaml(NULL), 0, &res);
    if (rc) fail_msg("%s", err);
    assert_int_equal(res.changed, 1);
    assert_true(res.id > 0);
    assert_contains(res.summary, "apply sql/base.sql\n");
    assert_contains(res.summary, "create table upload_jobs\n");
    assert_contains(res.summary, "create table transcription_jobs\n");
    const char *rels[] = {
        "accounts",    "account_members",    "projects",
        "interviews",  "insights",           "personas",
        "upload_jobs", "transcription_jobs", "sluice_statistics"};
    for (size_t i = 0; i < sizeof rels / sizeof rels[0]; i++) {
        char q[200];
        snprintf(q, sizeof q, "SELECT to_regclass('%s') IS NOT NULL", rels[i]);
        assert_sql_true(q);
    }
    assert_sql_str("SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)"
                   " FROM pg_enum WHERE enumtypid = 'job_status'::regtype",
                   "pending,in_progress,done,error,retry,cancelled");
    assert_sql_true("SELECT to_regprocedure('auth.uid()') IS NOT NULL");
    /* What was applied is recorded, with its checksum and snapshot. */
    assert_int_equal(scalar_long("SELECT count(*) FROM sluice.migrations"), 1);
    assert_sql_true("SELECT checksum = encode(sha256(convert_to(ddl, "
                    "'UTF8')), 'hex') AND ddl LIKE '%CREATE TABLE%'"
                    " FROM sluice.migrations");
    assert_sql_str("SELECT snapshot->'tables'->0->>'name' FROM "
                   "sluice.migrations",
                   "upload_jobs");
    assert_sql_true("SELECT relrowsecurity FROM pg_class WHERE oid = "
                    "'upload_jobs'::regclass");
    sl_migrate_result_free(&res);
}

static void second_migration_is_a_no_op(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    char *before = catalog_fingerprint();
    sl_migrate_result res;
    assert_int_equal(migrate(iv_yaml(NULL), 0, &res), 0);
    assert_int_equal(res.changed, 0);
    assert_null(res.sql);
    assert_int_equal(res.id, 0);
    sl_migrate_result_free(&res);
    char *after = catalog_fingerprint();
    assert_string_equal(before, after);
    assert_int_equal(scalar_long("SELECT count(*) FROM sluice.migrations"), 1);
    free(before);
    free(after);
}

static void new_column_is_added_and_rows_are_kept(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    sl_test_exec(conn, "INSERT INTO upload_jobs (interview_id, external_url,"
                       " score) VALUES ('" IV_A "', 'http://kept', 7)");
    ivopts o = {.upload_cols = UPLOAD_COLS "      language: text\n"};
    sl_migrate_result res;
    assert_int_equal(migrate(iv_yaml(&o), 0, &res), 0);
    assert_int_equal(res.changed, 1);
    assert_contains(res.summary, "add column upload_jobs.language text");
    assert_null(strstr(res.summary, "drop"));
    assert_null(strstr(res.summary, "apply sql/base.sql"));
    sl_migrate_result_free(&res);
    assert_int_equal(scalar_long("SELECT count(*) FROM upload_jobs"), 1);
    assert_sql_str("SELECT external_url || score FROM upload_jobs",
                   "http://kept7");
    assert_sql_true("SELECT count(*) = 1 FROM information_schema.columns "
                    "WHERE table_name = 'upload_jobs' AND column_name = "
                    "'language' AND data_type = 'text'");
}

static void new_stage_and_new_pipeline_are_added(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    sl_test_exec(conn, "INSERT INTO upload_jobs (interview_id) VALUES "
                       "('" IV_A "')");
    ivopts o = {.extra = ANALYZE_STAGE};
    const char *paths[2] = {sl_test_file("interview.yaml", iv_yaml(&o)),
                            sl_test_file("generation.yaml", sl_test_generation_yaml)};
    sl_model *m = NULL;
    sl_diags d = {0};
    assert_int_equal(sl_dsl_load(paths, 2, &m, &d), 0);
    sl_migrate_result res;
    int rc = migrate_model(m, 0, &res);
    if (rc) fail_msg("%s", err);
    assert_contains(res.summary, "create table analysis_jobs");
    assert_contains(res.summary, "create table generation_jobs");
    assert_contains(res.summary, "replace view sluice_statistics");
    sl_migrate_result_free(&res);
    sl_model_free(m);
    sl_diags_free(&d);
    assert_int_equal(scalar_long("SELECT count(*) FROM upload_jobs"), 1);
    assert_int_equal(scalar_long("SELECT count(*) FROM sluice_statistics"), 4);
    assert_sql_str("SELECT string_agg(queue, ',' ORDER BY queue) FROM "
                   "sluice_statistics",
                   "analysis_jobs,generation_jobs,transcription_jobs,"
                   "upload_jobs");
    assert_int_equal(scalar_long("SELECT count(*) FROM sluice.migrations"), 2);
}

static void changed_channels_move_the_notifications(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    ivopts o = {.subject_channel = "interviews_live",
                .upload_channel = "uploads_v2"};
    sl_migrate_result res;
    assert_int_equal(migrate(iv_yaml(&o), 0, &res), 0);
    assert_contains(res.summary, "replace function upload_jobs_notify_insert");
    assert_contains(res.summary,
                    "drop stale trigger interviews_status_notify on "
                    "interviews");
    sl_migrate_result_free(&res);
    sl_test_exec(conn, "LISTEN upload_jobs_channel; LISTEN uploads_v2;"
                       " LISTEN interviews_status; LISTEN interviews_live");
    sl_test_exec(conn, "INSERT INTO upload_jobs (interview_id) VALUES "
                       "('" IV_A "')");
    assert_int_equal(wait_notifies("uploads_v2", 1000, NULL, 0), 1);
    assert_int_equal(drain_notifies("upload_jobs_channel", NULL, 0), 0);
    sl_test_exec(conn, "UPDATE interviews SET status = 'uploaded' WHERE id "
                       "= '" IV_A "'");
    assert_int_equal(wait_notifies("interviews_live", 1000, NULL, 0), 1);
    assert_int_equal(drain_notifies("interviews_status", NULL, 0), 0);
    /* And it is settled: the next run changes nothing. */
    assert_int_equal(migrate(iv_yaml(&o), 0, &res), 0);
    assert_int_equal(res.changed, 0);
    sl_migrate_result_free(&res);
}

static void dropped_column_is_refused_then_applied_when_allowed(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    sl_test_exec(conn, "INSERT INTO upload_jobs (interview_id, external_url)"
                       " VALUES ('" IV_A "', 'http://precious')");
    ivopts o = {.upload_cols = "      media_file: bytea\n"
                               "      score: integer\n"};
    sl_migrate_result res;
    assert_int_equal(migrate(iv_yaml(&o), 0, &res), -SL_EREFUSED);
    assert_contains(err, "drop column upload_jobs.external_url (1 non-null "
                         "values)");
    assert_contains(err, "--allow-destructive");
    assert_contains(res.refused, "upload_jobs.external_url");
    assert_int_equal(res.changed, 0);
    sl_migrate_result_free(&res);
    /* Nothing changed. */
    assert_sql_str("SELECT external_url FROM upload_jobs", "http://precious");
    assert_int_equal(scalar_long("SELECT count(*) FROM sluice.migrations"), 1);

    assert_int_equal(migrate(iv_yaml(&o), ALLOW, &res), 0);
    assert_contains(res.summary, "drop column upload_jobs.external_url");
    sl_migrate_result_free(&res);
    assert_sql_true("SELECT count(*) = 0 FROM information_schema.columns "
                    "WHERE table_name = 'upload_jobs' AND column_name = "
                    "'external_url'");
    assert_int_equal(scalar_long("SELECT count(*) FROM upload_jobs"), 1);
    assert_sql_true("SELECT destructive FROM sluice.migrations ORDER BY id "
                    "DESC LIMIT 1");
}

static void changed_type_is_refused_then_applied_when_allowed(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    sl_test_exec(conn, "INSERT INTO upload_jobs (interview_id, score) VALUES"
                       " ('" IV_A "', 42)");
    ivopts o = {.upload_cols = "      media_file: bytea\n"
                               "      external_url: text\n"
                               "      score: bigint\n"};
    sl_migrate_result res;
    assert_int_equal(migrate(iv_yaml(&o), 0, &res), -SL_EREFUSED);
    assert_contains(err, "change type of column upload_jobs.score from "
                         "integer to bigint");
    sl_migrate_result_free(&res);
    assert_sql_str("SELECT format_type(atttypid, atttypmod) FROM "
                   "pg_attribute WHERE attrelid = 'upload_jobs'::regclass "
                   "AND attname = 'score'",
                   "integer");

    assert_int_equal(migrate(iv_yaml(&o), ALLOW, &res), 0);
    sl_migrate_result_free(&res);
    assert_sql_str("SELECT format_type(atttypid, atttypmod) FROM "
                   "pg_attribute WHERE attrelid = 'upload_jobs'::regclass "
                   "AND attname = 'score'",
                   "bigint");
    assert_int_equal(scalar_long("SELECT score FROM upload_jobs"), 42);
}

static void dropped_queue_is_refused_then_applied_when_allowed(void **state) {
    (void)state;
    ivopts with = {.extra = ANALYZE_STAGE};
    migrate_ok(iv_yaml(&with));
    two_tenants();
    sl_test_exec(conn, "INSERT INTO analysis_jobs (interview_id) VALUES "
                       "('" IV_A "')");
    sl_migrate_result res;
    assert_int_equal(migrate(iv_yaml(NULL), 0, &res), -SL_EREFUSED);
    assert_contains(err, "drop table analysis_jobs (1 rows)");
    sl_migrate_result_free(&res);
    assert_int_equal(scalar_long("SELECT count(*) FROM analysis_jobs"), 1);
    assert_int_equal(scalar_long("SELECT count(*) FROM sluice_statistics"), 3);

    assert_int_equal(migrate(iv_yaml(NULL), ALLOW, &res), 0);
    sl_migrate_result_free(&res);
    assert_sql_true("SELECT to_regclass('analysis_jobs') IS NULL");
    assert_sql_true("SELECT to_regprocedure('analysis_jobs_notify_insert()')"
                    " IS NULL");
    assert_int_equal(scalar_long("SELECT count(*) FROM sluice_statistics"), 2);
}

static void dry_run_reports_the_sql_and_changes_nothing(void **state) {
    (void)state;
    sl_migrate_result res;
    assert_int_equal(migrate(iv_yaml(NULL), DRY, &res), 0);
    assert_int_equal(res.changed, 1);
    assert_int_equal(res.id, 0);
    assert_contains(res.sql, "CREATE TABLE IF NOT EXISTS public.accounts");
    assert_contains(res.sql, "CREATE TABLE IF NOT EXISTS \"upload_jobs\"");
    sl_migrate_result_free(&res);
    assert_sql_true("SELECT to_regclass('upload_jobs') IS NULL");
    assert_sql_true("SELECT to_regclass('accounts') IS NULL");
    assert_sql_true("SELECT to_regclass('sluice.migrations') IS NULL");
}

static void missing_subject_table_is_reported(void **state) {
    (void)state;
    sl_migrate_result res;
    assert_int_equal(migrate(iv_yaml(NULL), NOBASE, &res), -SL_EINVAL);
    assert_contains(err, "pipeline \"interview\": subject table "
                         "\"interviews\" does not exist");
    sl_migrate_result_free(&res);
    assert_sql_true("SELECT to_regclass('upload_jobs') IS NULL");
}

static void reference_design_tables_are_upgraded_in_place(void **state) {
    (void)state;
    /* The seed's own SQL (section 3), applied by hand before sluice. */
    sl_test_exec(conn, sl_migrate_base_sql());
    sl_test_exec(conn,
                 "create type job_status as enum "
                 "('pending','in_progress','done','error','retry');"
                 "create table upload_jobs ("
                 "  id uuid primary key default gen_random_uuid(),"
                 "  interview_id uuid not null references interviews(id) on "
                 "delete cascade,"
                 "  media_file bytea, external_url text,"
                 "  attempts int default 0, last_error text,"
                 "  status job_status not null default 'pending',"
                 "  created_at timestamptz default now(),"
                 "  updated_at timestamptz default now());");
    two_tenants();
    sl_test_exec(conn, "INSERT INTO upload_jobs (interview_id, external_url,"
                       " attempts) VALUES ('" IV_A "', 'http://old', NULL)");
    sl_migrate_result res;
    int rc = migrate(iv_yaml(NULL), 0, &res);
    if (rc) fail_msg("%s", err);
    assert_contains(res.summary, "add value 'cancelled' to type job_status");
    assert_contains(res.summary, "add column upload_jobs.run_at");
    assert_contains(res.summary, "set not null on upload_jobs.attempts");
    sl_migrate_result_free(&res);
    assert_sql_str("SELECT external_url || attempts || status FROM "
                   "upload_jobs",
                   "http://old0pending");
    assert_sql_true("SELECT attnotnull FROM pg_attribute WHERE attrelid = "
                    "'upload_jobs'::regclass AND attname = 'attempts'");
    /* Converged: nothing more to do. */
    assert_int_equal(migrate(iv_yaml(NULL), 0, &res), 0);
    assert_int_equal(res.changed, 0);
    sl_migrate_result_free(&res);
}

/* ------------------------------------------------------------ RLS */

/* Runs sql as sluice_app with the JWT subject user (NULL: anonymous) and
 * returns the first value (malloc'd) or NULL; *ok tells whether it ran. */
static char *as_user(const char *user, const char *sql, int *ok, char *msg,
                     size_t msglen) {
    sl_test_exec(conn, "BEGIN; SET LOCAL ROLE sluice_app");
    if (user) {
        char q[200];
        snprintf(q, sizeof q,
                 "SELECT set_config('request.jwt.claim.sub', '%s', true)",
                 user);
        sl_test_exec(conn, q);
    }
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    *ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
    char *v = NULL;
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strdup(PQgetvalue(r, 0, 0));
    if (!*ok && msg) snprintf(msg, msglen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    sl_test_exec(conn, *ok ? "COMMIT" : "ROLLBACK");
    return v;
}

static void expect_as(const char *user, const char *sql, const char *want) {
    int ok;
    char msg[512] = "";
    char *v = as_user(user, sql, &ok, msg, sizeof msg);
    if (!ok) fail_msg("as %s: %s failed: %s", user, sql, msg);
    if (!v || strcmp(v, want) != 0)
        fail_msg("as %s: %s\n  expected %s, got %s", user ? user : "anon", sql,
                 want, v ? v : "NULL");
    free(v);
}

static void tenants_see_only_their_own_interviews_and_jobs(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    sl_test_exec(conn, "INSERT INTO upload_jobs (interview_id) VALUES"
                       " ('" IV_A "'), ('" IV_B "');"
                       "INSERT INTO transcription_jobs (interview_id) VALUES"
                       " ('" IV_A "'), ('" IV_B "'), ('" IV_B "')");
    /* The test connects as the table owner: RLS does not apply to it. */
    assert_int_equal(scalar_long("SELECT count(*) FROM upload_jobs"), 2);

    expect_as(USER_A, "SELECT string_agg(title, ',') FROM interviews",
              "interview of A");
    expect_as(USER_B, "SELECT string_agg(title, ',') FROM interviews",
              "interview of B");
    expect_as(USER_A,
              "SELECT count(*) || ':' || min(interview_id::text) FROM "
              "upload_jobs",
              "1:" IV_A);
    expect_as(USER_B,
              "SELECT count(*) || ':' || min(interview_id::text) FROM "
              "upload_jobs",
              "1:" IV_B);
    expect_as(USER_B, "SELECT count(*) FROM transcription_jobs", "2");
    expect_as(USER_A, "SELECT count(*) FROM transcription_jobs", "1");
    expect_as(NULL, "SELECT count(*) FROM upload_jobs", "0");
    expect_as(NULL, "SELECT count(*) FROM interviews", "0");
    /* Updates cannot reach the other tenant's jobs either (status is the
     * one column the app may update: to cancel or retry). */
    expect_as(USER_A,
              "WITH u AS (UPDATE upload_jobs SET status = 'cancelled'"
              " RETURNING 1) SELECT count(*) FROM u",
              "1");
    assert_int_equal(scalar_long("SELECT count(*) FROM upload_jobs WHERE"
                                 " status = 'cancelled'"),
                     1);
}

static void
tenant_cannot_enqueue_a_job_for_another_tenants_interview(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    int ok;
    char msg[512] = "";
    char *v = as_user(
        USER_A, "INSERT INTO upload_jobs (interview_id) VALUES ('" IV_B "')",
        &ok, msg, sizeof msg);
    free(v);
    assert_false(ok);
    assert_contains(msg, "row-level security");
    v = as_user(USER_A,
                "INSERT INTO upload_jobs (interview_id) VALUES ('" IV_A "')",
                &ok, msg, sizeof msg);
    free(v);
    if (!ok) fail_msg("own insert failed: %s", msg);
    assert_int_equal(scalar_long("SELECT count(*) FROM upload_jobs"), 1);
    assert_sql_str("SELECT interview_id::text FROM upload_jobs", IV_A);
}

static void statistics_view_counts_only_the_callers_jobs(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    sl_test_exec(conn,
                 "INSERT INTO upload_jobs (interview_id) SELECT '" IV_B
                 "' FROM generate_series(1, 5);"
                 "INSERT INTO upload_jobs (interview_id) VALUES ('" IV_A "')");
    expect_as(USER_A,
              "SELECT pending FROM sluice_statistics WHERE queue = "
              "'upload_jobs'",
              "1");
    expect_as(USER_B,
              "SELECT pending FROM sluice_statistics WHERE queue = "
              "'upload_jobs'",
              "5");
    assert_int_equal(scalar_long("SELECT pending FROM sluice_statistics "
                                 "WHERE queue = 'upload_jobs'"),
                     6);
}

static void
turning_rls_off_drops_the_policy_but_keeps_rows_hidden(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    sl_test_exec(conn,
                 "INSERT INTO upload_jobs (interview_id) VALUES ('" IV_A "')");
    char yaml[4200];
    const char *v1 = iv_yaml(NULL);
    const char *at = strstr(v1, "stages:\n");
    assert_non_null(at);
    snprintf(yaml, sizeof yaml, "%.*ssecurity:\n  rls: false\n%s",
             (int)(at - v1), v1, at);
    sl_migrate_result res;
    assert_int_equal(migrate(yaml, 0, &res), 0);
    assert_contains(res.summary,
                    "drop stale policy sluice_inherit on upload_jobs");
    sl_migrate_result_free(&res);
    assert_int_equal(scalar_long("SELECT count(*) FROM pg_policy WHERE "
                                 "polrelid = 'upload_jobs'::regclass"),
                     0);
    assert_sql_true("SELECT relrowsecurity FROM pg_class WHERE oid = "
                    "'upload_jobs'::regclass");
    expect_as(USER_A, "SELECT count(*) FROM upload_jobs", "0");
}

/* ------------------------------------------------------------ NOTIFY */

static void insert_notifies_the_queue_channel_once_per_statement(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    sl_test_exec(conn, "LISTEN upload_jobs_channel");
    drain_notifies("upload_jobs_channel", NULL, 0);

    char payload[256] = "x";
    sl_test_exec(conn, "INSERT INTO upload_jobs (interview_id) VALUES "
                       "('" IV_A "')");
    assert_int_equal(
        wait_notifies("upload_jobs_channel", 1000, payload, sizeof payload), 1);
    assert_string_equal(payload, "");

    /* A bulk insert: one notification, not one per row. */
    sl_test_exec(conn, "INSERT INTO upload_jobs (interview_id) SELECT '" IV_A
                       "' FROM generate_series(1, 500)");
    assert_int_equal(wait_notifies("upload_jobs_channel", 1000, NULL, 0), 1);
    /* PostgreSQL folds identical notifications of one transaction, so the
     * count alone cannot tell a row trigger from a statement trigger: the
     * catalog can (bit 0 of tgtype is ROW). */
    assert_sql_true("SELECT tgtype & 1 = 0 FROM pg_trigger WHERE tgrelid = "
                    "'upload_jobs'::regclass AND tgname = "
                    "'upload_jobs_notify_insert'");

    /* Jobs that are not due yet are announced too: idle workers sleep
     * until the earliest run_at they know of, and re-plan on a NOTIFY. */
    sl_test_exec(conn, "INSERT INTO upload_jobs (interview_id, run_at) "
                       "VALUES ('" IV_A "', now() + interval '1 hour')");
    assert_int_equal(wait_notifies("upload_jobs_channel", 300, NULL, 0), 1);
}

static void status_change_to_retry_notifies_without_a_payload(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    sl_test_exec(conn, "INSERT INTO upload_jobs (id, interview_id, status) "
                       "VALUES ('cccccccc-0000-0000-0000-000000000001', '" IV_A
                       "', 'in_progress')");
    sl_test_exec(conn, "LISTEN upload_jobs_channel");
    drain_notifies("upload_jobs_channel", NULL, 0);
    sl_test_exec(conn, "UPDATE upload_jobs SET progress = 50");
    assert_int_equal(wait_notifies("upload_jobs_channel", 300, NULL, 0), 0);
    char payload[256] = "";
    sl_test_exec(conn, "UPDATE upload_jobs SET status = 'retry'");
    assert_int_equal(
        wait_notifies("upload_jobs_channel", 1000, payload, sizeof payload), 1);
    /* Any role may LISTEN: the job id would tell every tenant about it. */
    assert_string_equal(payload, "");
    /* updated_at follows every update. */
    assert_sql_true("SELECT updated_at > created_at FROM upload_jobs");
}

static void subject_update_notifies_the_subject_channel_without_a_payload(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    two_tenants();
    sl_test_exec(conn, "LISTEN interviews_status");
    char payload[512] = "";
    sl_test_exec(conn,
                 "UPDATE interviews SET status = 'uploaded', progress "
                 "= 20, status_detail = 'File uploaded' WHERE id = '" IV_A "'");
    assert_int_equal(
        wait_notifies("interviews_status", 1000, payload, sizeof payload), 1);
    /* No payload: a listener re-reads the rows it follows under its own
     * Row Level Security (docs/schema.md, "Roles: who sees what"). */
    assert_string_equal(payload, "");
    /* Other columns changing say nothing. */
    sl_test_exec(conn, "UPDATE interviews SET title = 'renamed'");
    assert_int_equal(wait_notifies("interviews_status", 300, NULL, 0), 0);
}

/* ------------------------------------------------------------ the binary */

static char *sh_out;

static int sluice(const char *args) {
    free(sh_out);
    sh_out = NULL;
    return sl_test_sh(&sh_out, "DATABASE_URL='%s' %s %s 2>&1", conninfo,
                      sl_test_bin(), args);
}

static void cli_migrate_applies_then_reports_up_to_date(void **state) {
    (void)state;
    const char *f = sl_test_file("iv.yaml", iv_yaml(NULL));
    char args[1024];
    snprintf(args, sizeof args, "migrate -p %s", f);
    assert_int_equal(sluice(args), 0);
    assert_contains(sh_out, "applied migration 1");
    assert_contains(sh_out, "create table upload_jobs");
    assert_int_equal(sluice(args), 0);
    assert_contains(sh_out, "up to date");
    assert_int_equal(scalar_long("SELECT count(*) FROM sluice.migrations"), 1);
}

static void cli_migrate_refuses_destructive_changes_with_exit_1(void **state) {
    (void)state;
    migrate_ok(iv_yaml(NULL));
    ivopts o = {.upload_cols = "      media_file: bytea\n"};
    const char *f = sl_test_file("iv2.yaml", iv_yaml(&o));
    char args[1024];
    snprintf(args, sizeof args, "migrate -p %s", f);
    assert_int_equal(sluice(args), 1);
    assert_contains(sh_out, "drop column upload_jobs.external_url");
    assert_contains(sh_out, "drop column upload_jobs.score");
    assert_contains(sh_out, "--allow-destructive");
    assert_sql_true("SELECT count(*) = 1 FROM information_schema.columns "
                    "WHERE table_name = 'upload_jobs' AND column_name = "
                    "'external_url'");
    snprintf(args, sizeof args, "migrate -p %s --allow-destructive", f);
    assert_int_equal(sluice(args), 0);
    assert_sql_true("SELECT count(*) = 0 FROM information_schema.columns "
                    "WHERE table_name = 'upload_jobs' AND column_name = "
                    "'external_url'");
}

static void cli_dry_run_prints_sql_and_changes_nothing(void **state) {
    (void)state;
    const char *f = sl_test_file("iv.yaml", iv_yaml(NULL));
    char args[1024];
    snprintf(args, sizeof args, "migrate --dry-run -p %s", f);
    assert_int_equal(sluice(args), 0);
    assert_contains(sh_out, "CREATE TABLE IF NOT EXISTS \"upload_jobs\"");
    assert_contains(sh_out, "nothing was applied");
    assert_sql_true("SELECT to_regclass('upload_jobs') IS NULL");
}

static void cli_write_saves_a_timestamped_migration_that_applies(void **state) {
    (void)state;
    const char *f = sl_test_file("iv.yaml", iv_yaml(NULL));
    char dir[512], args[2048];
    snprintf(dir, sizeof dir, "%s/migrations", sl_test_tmpdir());
    snprintf(args, sizeof args, "migrate --write=%s -p %s", dir, f);
    assert_int_equal(sluice(args), 0);
    assert_contains(sh_out, "not applied");
    assert_sql_true("SELECT to_regclass('upload_jobs') IS NULL");

    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    char name[256] = "";
    int files = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        files++;
        snprintf(name, sizeof name, "%s", e->d_name);
    }
    closedir(d);
    assert_int_equal(files, 1);
    assert_int_equal(strlen(name), strlen("20250101120000_sluice.sql"));
    for (int i = 0; i < 14; i++)
        assert_true(name[i] >= '0' && name[i] <= '9');
    assert_string_equal(name + 14, "_sluice.sql");

    /* The file is a migration any tool can apply. */
    char *out = NULL;
    int rc = sl_test_sh(&out,
                        "psql -X -q -v ON_ERROR_STOP=1 -1 -d '%s' -f "
                        "'%s/%s' 2>&1",
                        conninfo, dir, name);
    if (rc != 0) fail_msg("psql: %s", out ? out : "");
    free(out);
    assert_sql_true("SELECT to_regclass('upload_jobs') IS NOT NULL");
    snprintf(args, sizeof args, "migrate --no-base -p %s", f);
    assert_int_equal(sluice(args), 0);
    assert_contains(sh_out, "up to date");
}

static void concurrent_migrations_serialise_on_the_lock(void **state) {
    (void)state;
    const char *f = sl_test_file("iv.yaml", iv_yaml(NULL));
    char *out = NULL;
    const char *dir = sl_test_tmpdir();
    int rc =
        sl_test_sh(&out,
                   "export DATABASE_URL='%s';"
                   " (%s migrate -p %s > %s/m1.out 2>&1; echo $? > %s/m1.rc) &"
                   " (%s migrate -p %s > %s/m2.out 2>&1; echo $? > %s/m2.rc) &"
                   " wait; cat %s/m1.rc %s/m2.rc %s/m1.out %s/m2.out",
                   conninfo, sl_test_bin(), f, dir, dir, sl_test_bin(), f, dir,
                   dir, dir, dir, dir, dir);
    assert_int_equal(rc, 0);
    assert_non_null(out);
    if (strncmp(out, "0\n0\n", 4) != 0) fail_msg("exit codes:\n%s", out);
    assert_contains(out, "applied migration 1");
    assert_contains(out, "up to date");
    free(out);
    assert_int_equal(scalar_long("SELECT count(*) FROM sluice.migrations"), 1);
}

static void cli_sql_prints_the_generated_ddl(void **state) {
    (void)state;
    const char *yaml = iv_yaml(NULL);
    const char *f = sl_test_file("iv.yaml", yaml);
    char *out = NULL;
    assert_int_equal(sl_test_sh(&out, "%s sql -p %s", sl_test_bin(), f), 0);
    sl_model *m = load(yaml);
    char *ddl = NULL, e[256];
    assert_int_equal(sl_schema_ddl(m, &ddl, e, sizeof e), 0);
    assert_string_equal(out, ddl);
    free(ddl);
    free(out);
    sl_model_free(m);
    const char *bad = sl_test_file("bad.yaml", "pipeline: [\n");
    assert_int_equal(
        sl_test_sh(NULL, "%s sql -p %s 2>/dev/null", sl_test_bin(), bad),
        SL_EXIT_INVALID);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(migrate_creates_base_and_queues_on_a_fresh_database),
        T(second_migration_is_a_no_op),
        T(new_column_is_added_and_rows_are_kept),
        T(new_stage_and_new_pipeline_are_added),
        T(changed_channels_move_the_notifications),
        T(dropped_column_is_refused_then_applied_when_allowed),
        T(changed_type_is_refused_then_applied_when_allowed),
        T(dropped_queue_is_refused_then_applied_when_allowed),
        T(dry_run_reports_the_sql_and_changes_nothing),
        T(missing_subject_table_is_reported),
        T(reference_design_tables_are_upgraded_in_place),
        T(tenants_see_only_their_own_interviews_and_jobs),
        T(tenant_cannot_enqueue_a_job_for_another_tenants_interview),
        T(statistics_view_counts_only_the_callers_jobs),
        T(turning_rls_off_drops_the_policy_but_keeps_rows_hidden),
        T(insert_notifies_the_queue_channel_once_per_statement),
        T(status_change_to_retry_notifies_without_a_payload),
        T(subject_update_notifies_the_subject_channel_without_a_payload),
        T(cli_migrate_applies_then_reports_up_to_date),
        T(cli_migrate_refuses_destructive_changes_with_exit_1),
        T(cli_dry_run_prints_sql_and_changes_nothing),
        T(cli_write_saves_a_timestamped_migration_that_applies),
        T(concurrent_migrations_serialise_on_the_lock),
        T(cli_sql_prints_the_generated_ddl),
    };
#undef T
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(sh_out);
    return rc;
}
