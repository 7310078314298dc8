/* test_migrate_apps.c - two applications in one database, through the
 * binary: each `sluice migrate` manages only the pipelines it is given
 * (docs/schema.md, "Several applications in one database"), so disjoint
 * pipelines migrate, run and change independently, and
 * `--allow-destructive` for one never touches the other's objects. The
 * base schema (accounts, interviews, the auth shim) comes only when asked
 * or when a pipeline references it.
 *
 * Application A: pipeline fetch (queue fetch_jobs). Application B:
 * pipeline crawl (crawl_jobs -> index_jobs). Both standalone, no RLS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"

#define DB "sluice_test_migrate_apps"

static const char *fetch_yaml = "pipeline: fetch\n"
                                "security: {rls: false}\n"
                                "stages:\n"
                                "  fetch:\n"
                                "    queue: fetch_jobs\n"
                                "    handler: noop\n"
                                "    columns:\n"
                                "      url: text\n"
                                "%s";

static const char *crawl_yaml = "pipeline: crawl\n"
                                "security: {rls: false}\n"
                                "subject:\n"
                                "  table: sites\n"
                                "  status:\n"
                                "    values: [new, crawled, indexed]\n"
                                "  channel: sites_live\n"
                                "stages:\n"
                                "  crawl:\n"
                                "    queue: crawl_jobs\n"
                                "    handler: noop\n"
                                "    columns:\n"
                                "      depth: integer\n"
                                "%s";

static const char *index_stage = "    next: index\n"
                                 "  index:\n"
                                 "    queue: index_jobs\n"
                                 "    handler: noop\n";

static PGconn *db;
static char dir_a[512], dir_b[512];

/* Writes app's pipeline file, the format filled with `extra`. */
static void write_app(const char *dir, const char *name, const char *fmt,
                      const char *extra) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s.yaml", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, fmt, extra);
    fclose(f);
}

static int setup(void **state) {
    (void)state;
    sl_test_db(DB);
    setenv("PGDATABASE", DB, 1);
    unsetenv("DATABASE_URL");
    db = sl_test_connect("dbname=" DB);
    sl_test_exec(db, "CREATE TABLE sites (id uuid PRIMARY KEY DEFAULT"
                     " gen_random_uuid(), status text NOT NULL DEFAULT"
                     " 'new')");
    snprintf(dir_a, sizeof dir_a, "%s/app_a", sl_test_tmpdir());
    snprintf(dir_b, sizeof dir_b, "%s/app_b", sl_test_tmpdir());
    mkdir(dir_a, 0755);
    mkdir(dir_b, 0755);
    write_app(dir_a, "fetch", fetch_yaml, "");
    write_app(dir_b, "crawl", crawl_yaml, index_stage);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    PQfinish(db);
    return 0;
}

static void expect_not_in(const char *out, const char *what) {
    if (out && strstr(out, what))
        fail_msg("did not expect '%s' in:\n%s", what, out);
}

static void expect_true(const char *sql) {
    char *v = sl_test_scalar(db, sql);
    if (!v || strcmp(v, "t") != 0)
        fail_msg("expected true: %s (got %s)", sql, v ? v : "NULL");
    free(v);
}

/* migrate -p dir ARGS must exit `want`; returns the output (caller
 * frees). */
static char *migrate(const char *dir, const char *args, int want) {
    char *out = NULL;
    int rc = sl_test_sluice(&out, "migrate -p %s %s", dir, args);
    if (rc != want)
        fail_msg("migrate -p %s %s: exit %d, expected %d:\n%s", dir, args, rc,
                 want, out ? out : "");
    return out;
}

/* Both applications migrate into one fresh database, without the base
 * schema, and each second run is up to date. */
static void two_applications_migrate_without_the_base_schema(void **state) {
    (void)state;
    char *out = migrate(dir_a, "", 0);
    sl_test_expect_in(out, "create table fetch_jobs");
    expect_not_in(out, "accounts");
    expect_not_in(out, "sql/base.sql");
    free(out);
    out = migrate(dir_b, "", 0);
    sl_test_expect_in(out, "create table crawl_jobs");
    sl_test_expect_in(out, "create table index_jobs");
    expect_not_in(out, "drop");
    expect_not_in(out, "fetch_jobs");
    free(out);
    expect_true("SELECT to_regclass('accounts') IS NULL"
                " AND to_regclass('interviews') IS NULL"
                " AND to_regnamespace('auth') IS NULL");
    out = migrate(dir_a, "", 0);
    sl_test_expect_in(out, "up to date");
    free(out);
    out = migrate(dir_b, "", 0);
    sl_test_expect_in(out, "up to date");
    free(out);
    /* Who owns what is recorded; the view counts every application. */
    expect_true("SELECT string_agg(name, ',' ORDER BY name) ="
                " 'crawl,fetch' FROM sluice.pipelines");
    expect_true("SELECT string_agg(queue, ',' ORDER BY queue) ="
                " 'crawl_jobs,fetch_jobs,index_jobs' FROM sluice_statistics");
}

/* Each application's workers run its own jobs only. */
static void each_application_runs_its_own_jobs(void **state) {
    (void)state;
    sl_test_exec(db, "INSERT INTO fetch_jobs (url) SELECT 'http://x/' || i"
                     " FROM generate_series(1, 7) i");
    sl_test_exec(db, "INSERT INTO sites DEFAULT VALUES");
    sl_test_exec(db, "INSERT INTO crawl_jobs (site_id) SELECT id FROM sites");
    char *out = NULL;
    int rc = sl_test_sluice(&out, "run -p %s --exit-when-idle"
                                  " --allow-superuser --log-level warn",
                            dir_a);
    if (rc != 0) fail_msg("run A: exit %d:\n%s", rc, out ? out : "");
    free(out);
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM fetch_jobs"
                                      " WHERE status = 'done'"),
                     7);
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM crawl_jobs"
                                      " WHERE status = 'pending'"),
                     1);
    rc = sl_test_sluice(&out, "run -p %s --exit-when-idle --allow-superuser"
                              " --log-level warn",
                        dir_b);
    if (rc != 0) fail_msg("run B: exit %d:\n%s", rc, out ? out : "");
    free(out);
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM index_jobs"
                                      " WHERE status = 'done'"),
                     1);
}

/* B drops a stage: refused without --allow-destructive, which then drops
 * B's table only; A's queue, rows, functions and triggers stay. */
static void destructive_change_of_one_never_touches_the_other(void **state) {
    (void)state;
    write_app(dir_b, "crawl", crawl_yaml, "");
    char *out = migrate(dir_b, "", 1);
    sl_test_expect_in(out, "drop table index_jobs (1 rows)");
    expect_not_in(out, "fetch_jobs");
    free(out);
    out = migrate(dir_b, "--allow-destructive", 0);
    sl_test_expect_in(out, "drop table index_jobs");
    expect_not_in(out, "fetch");
    free(out);
    expect_true("SELECT to_regclass('index_jobs') IS NULL");
    expect_true("SELECT to_regprocedure('index_jobs_notify_insert()') IS NULL");
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM fetch_jobs"), 7);
    expect_true("SELECT to_regprocedure('fetch_jobs_notify_insert()')"
                " IS NOT NULL");
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM pg_trigger"
                                      " WHERE tgrelid = 'fetch_jobs'::regclass"
                                      " AND NOT tgisinternal"),
                     3);
    /* A, even with --allow-destructive, leaves B's queue and its subject
     * trigger alone, and is up to date. */
    out = migrate(dir_a, "--allow-destructive", 0);
    sl_test_expect_in(out, "up to date");
    free(out);
    expect_true("SELECT to_regclass('crawl_jobs') IS NOT NULL");
    expect_true("SELECT count(*) = 1 FROM pg_trigger WHERE tgrelid ="
                " 'sites'::regclass AND tgname = 'sites_live_notify'");
    expect_true("SELECT string_agg(queue, ',' ORDER BY queue) ="
                " 'crawl_jobs,fetch_jobs' FROM sluice_statistics");
}

/* A adds a column while B's pipelines are absent: additive for A only. */
static void additive_change_of_one_leaves_the_other_alone(void **state) {
    (void)state;
    write_app(dir_a, "fetch", fetch_yaml, "      lang: text\n");
    char *out = migrate(dir_a, "", 0);
    sl_test_expect_in(out, "add column fetch_jobs.lang text");
    expect_not_in(out, "crawl");
    expect_not_in(out, "sites");
    free(out);
    out = migrate(dir_b, "", 0);
    sl_test_expect_in(out, "up to date");
    free(out);
}

/* A queue that belongs to the other application is refused, not taken. */
static void a_queue_of_another_pipeline_is_refused(void **state) {
    (void)state;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/app_c", sl_test_tmpdir());
    mkdir(dir, 0755);
    write_app(dir, "steal",
              "pipeline: steal\nsecurity: {rls: false}\nstages:\n"
              "  s:\n    queue: crawl_jobs\n    handler: noop\n%s",
              "");
    char *out = migrate(dir, "--allow-destructive", 1);
    sl_test_expect_in(out, "is the queue of pipeline \"crawl\"");
    free(out);
    expect_true("SELECT count(*) = 1 FROM information_schema.columns WHERE"
                " table_name = 'crawl_jobs' AND column_name = 'depth'");
}

/* The base schema comes when a pipeline references its tables, listing
 * every object it creates, or with --base. */
static void base_schema_comes_on_demand_and_is_listed(void **state) {
    (void)state;
    char *out = migrate(dir_a, "--dry-run --base --json", 0);
    sl_test_expect_in(out, "\"create table accounts\"");
    sl_test_expect_in(out, "\"create schema auth\"");
    free(out);
    expect_true("SELECT to_regclass('accounts') IS NULL");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/app_d", sl_test_tmpdir());
    mkdir(dir, 0755);
    write_app(dir, "gen", "%s", sl_test_generation_yaml);
    out = migrate(dir, "", 0);
    sl_test_expect_in(out, "apply sql/base.sql");
    sl_test_expect_in(out, "create table accounts");
    sl_test_expect_in(out, "create table projects");
    sl_test_expect_in(out, "create table generation_jobs");
    expect_not_in(out, "crawl");
    expect_not_in(out, "fetch");
    free(out);
    expect_true("SELECT to_regclass('accounts') IS NOT NULL");
    out = migrate(dir_a, "--no-base --base", 64);
    free(out);
}

/* A pipeline removed from B's directory is dropped only when named. */
static void a_removed_pipeline_is_dropped_only_when_named(void **state) {
    (void)state;
    char *out = migrate(dir_a, "--drop-pipeline fetch", 64);
    free(out);
    out = migrate(dir_a, "--drop-pipeline crawl", 1);
    sl_test_expect_in(out, "drop table crawl_jobs");
    expect_not_in(out, "fetch_jobs");
    free(out);
    out = migrate(dir_a, "--drop-pipeline crawl --allow-destructive", 0);
    sl_test_expect_in(out, "drop table crawl_jobs");
    sl_test_expect_in(out, "drop stale trigger sites_live_notify on sites");
    sl_test_expect_in(out, "forget pipeline crawl");
    free(out);
    expect_true("SELECT to_regclass('crawl_jobs') IS NULL");
    expect_true("SELECT to_regprocedure('sites_live_notify()') IS NULL");
    expect_true("SELECT to_regclass('sites') IS NOT NULL");
    expect_true("SELECT NOT EXISTS (SELECT 1 FROM sluice.pipelines"
                " WHERE name = 'crawl')");
    assert_int_equal(sl_test_long(db, "SELECT count(*) FROM fetch_jobs"), 7);
    out = migrate(dir_a, "", 0);
    sl_test_expect_in(out, "up to date");
    free(out);
}

/* A database whose owners are not recorded yet (made by an earlier
 * version): another application's queue functions, in use by its
 * triggers, are still not this migration's to drop. */
static void unrecorded_objects_of_another_application_are_kept(void **state) {
    (void)state;
    sl_test_exec(db, "DELETE FROM sluice.pipelines");
    char *out = migrate(dir_a, "--allow-destructive", 0);
    sl_test_expect_in(out, "record pipeline fetch");
    expect_not_in(out, "drop");
    expect_not_in(out, "generation");
    free(out);
    expect_true("SELECT to_regprocedure('generation_jobs_notify_insert()')"
                " IS NOT NULL");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_applications_migrate_without_the_base_schema),
        cmocka_unit_test(each_application_runs_its_own_jobs),
        cmocka_unit_test(destructive_change_of_one_never_touches_the_other),
        cmocka_unit_test(additive_change_of_one_leaves_the_other_alone),
        cmocka_unit_test(a_queue_of_another_pipeline_is_refused),
        cmocka_unit_test(base_schema_comes_on_demand_and_is_listed),
        cmocka_unit_test(a_removed_pipeline_is_dropped_only_when_named),
        cmocka_unit_test(unrecorded_objects_of_another_application_are_kept),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
