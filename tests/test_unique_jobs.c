/* test_unique_jobs.c - unique jobs (`unique:`, `enqueue --key`) against
 * the real PostgreSQL: concurrent duplicate enqueues give one job in each
 * `while` mode, and each mode lets a new job in exactly when its rule
 * says; the CLI prints the existing job's id and exits 0. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "error.h"
#include "jobs.h"
#include "rtlib.h"

static const char *yaml(const char *name, const char *unique) {
    static char y[1024];
    snprintf(y, sizeof y,
             "pipeline: %s\n"
             "security: {rls: false}\n"
             "stages:\n"
             "  work:\n"
             "    queue: work_jobs\n"
             "    handler: noop\n"
             "    columns: {account: text, n: integer}\n"
             "%s",
             name, unique);
    return y;
}

typedef struct racer {
    const sl_stage *st;
    const char *key; /* NULL: the stage's unique: */
    char id[40];
    int existing, rc;
    pthread_barrier_t *go;
} racer;

static void *race(void *p) {
    racer *r = p;
    char err[512];
    PGconn *c = sl_db_connect(sl_db_source(rt_conninfo()), err, sizeof err);
    json_t *cols = json_pack("{s:s, s:i}", "account", "acme", "n", 1);
    sl_enqueue_opts o = {0};
    o.key = r->key;
    o.existing = &r->existing;
    pthread_barrier_wait(r->go);
    r->rc = c ? sl_jobs_enqueue(c, r->st, NULL, cols, &o, r->id, err,
                                sizeof err)
              : -1;
    if (r->rc) fprintf(stderr, "enqueue: %s\n", err);
    json_decref(cols);
    PQfinish(c);
    return NULL;
}

/* N concurrent enqueues with the same key: at most one job, every caller
 * told its id, `fresh` of them (0 or 1) as new. Returns the id
 * (static). */
static const char *race_one(const sl_stage *st, const char *key, int want) {
    enum { N = 8 };
    static char id[40];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    pthread_t th[N];
    racer r[N];
    for (int i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].st = st;
        r[i].key = key;
        r[i].go = &go;
        pthread_create(&th[i], NULL, race, &r[i]);
    }
    int fresh = 0;
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].rc, 0);
        assert_string_equal(r[i].id, r[0].id);
        fresh += !r[i].existing;
    }
    assert_int_equal(fresh, want);
    pthread_barrier_destroy(&go);
    snprintf(id, sizeof id, "%s", r[0].id);
    return id;
}

static long jobs(PGconn *c) {
    return sl_test_long(c, "SELECT count(*) FROM work_jobs");
}

static void set_status(PGconn *c, const char *status) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE work_jobs SET status = '%s', started_at = now(),"
             " finished_at = CASE WHEN '%s' IN ('done', 'error', "
             "'cancelled') THEN now() END",
             status, status);
    sl_test_exec(c, sql);
}

static void unfinished_blocks_until_the_job_finishes(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("uq_unfinished",
                           yaml("u1", "    unique: {key: account}\n"), &c);
    const sl_stage *st = &m->pipelines[0].stages[0];
    assert_int_equal(st->unique_while, SL_UNIQUE_UNFINISHED);
    char first[40];
    snprintf(first, sizeof first, "%s", race_one(st, NULL, 1));
    set_status(c, "in_progress");
    assert_string_equal(race_one(st, NULL, 0), first); /* still held */
    set_status(c, "done");
    assert_string_not_equal(race_one(st, NULL, 1), first);
    assert_int_equal(jobs(c), 2);
    PQfinish(c);
    sl_model_free(m);
}

static void pending_blocks_until_the_job_starts(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup(
        "uq_pending", yaml("u2", "    unique: {key: [account, n], while: "
                                 "pending}\n"), &c);
    const sl_stage *st = &m->pipelines[0].stages[0];
    char first[40];
    snprintf(first, sizeof first, "%s", race_one(st, NULL, 1));
    assert_int_equal(jobs(c), 1);
    set_status(c, "in_progress");
    char second[40];
    snprintf(second, sizeof second, "%s", race_one(st, NULL, 1));
    assert_string_not_equal(second, first);
    assert_int_equal(jobs(c), 2);
    /* The running job snoozed back to pending keeps its started_at and
     * does not hold the key (nor conflict with the new one). */
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE work_jobs SET status = 'pending' WHERE id = '%s'", first);
    sl_test_exec(c, sql);
    assert_string_equal(race_one(st, NULL, 0), second);
    PQfinish(c);
    sl_model_free(m);
}

static void period_blocks_within_the_window_even_when_done(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup(
        "uq_period", yaml("u3", "    unique: {while: period, period: 1d}\n"),
        &c);
    const sl_stage *st = &m->pipelines[0].stages[0];
    char first[40];
    snprintf(first, sizeof first, "%s", race_one(st, NULL, 1));
    set_status(c, "done");
    assert_string_equal(race_one(st, NULL, 0), first);
    assert_int_equal(jobs(c), 1);
    /* A job from an earlier window (its key names another window) does
     * not hold this one's. */
    sl_test_exec(c, "UPDATE work_jobs SET unique_key = unique_key || 'old'");
    assert_string_not_equal(race_one(st, NULL, 1), first);
    PQfinish(c);
    sl_model_free(m);
}

static void key_option_works_on_a_stage_without_unique(void **state) {
    (void)state;
    PGconn *c;
    const char *y = yaml("u4", "");
    sl_model *m = rt_setup("uq_key", y, &c);
    const sl_stage *st = &m->pipelines[0].stages[0];
    const char *id = race_one(st, "nightly-report", 1);
    char keep[40];
    snprintf(keep, sizeof keep, "%s", id);
    assert_int_equal(jobs(c), 1);
    /* Jobs without a key are never unique. */
    char *out = NULL;
    const char *path = sl_test_file("u4.yaml", y);
    assert_int_equal(sl_test_sluice(&out, "enqueue u4 -p %s", path), 0);
    free(out);
    assert_int_equal(sl_test_sluice(&out, "enqueue u4 -p %s", path), 0);
    free(out);
    assert_int_equal(jobs(c), 3);
    /* The CLI: exit 0, the existing id on stdout, a note on stderr. */
    assert_int_equal(sl_test_sluice(&out, "enqueue u4 -p %s --key "
                                          "nightly-report", path), 0);
    sl_test_expect_in(out, keep);
    sl_test_expect_in(out, "already holds this unique key: no new job");
    free(out);
    assert_int_equal(sl_test_sluice(&out, "enqueue u4 -p %s --key "
                                          "nightly-report --output json",
                                    path), 0);
    sl_test_expect_in(out, "\"existing\": true");
    free(out);
    assert_int_equal(sl_test_sluice(&out, "enqueue u4 -p %s --key other "
                                          "--output json", path), 0);
    sl_test_expect_in(out, "\"existing\": false");
    free(out);
    assert_int_equal(jobs(c), 4);
    assert_int_equal(sl_test_sluice(&out, "enqueue u4 -p %s --key ''", path),
                     64);
    free(out);
    PQfinish(c);
    sl_model_free(m);
}

/* A failed job whose unique key a newer unfinished job holds is not
 * retried: the retry is refused with a message, nothing changes. */
static void retry_of_a_job_whose_key_is_held_is_refused(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("uq_retry",
                           yaml("u5", "    unique: {key: account}\n"), &c);
    const sl_stage *st = &m->pipelines[0].stages[0];
    char failed[40];
    snprintf(failed, sizeof failed, "%s", race_one(st, NULL, 1));
    set_status(c, "error");
    char holder[40];
    snprintf(holder, sizeof holder, "%s", race_one(st, NULL, 1));
    sl_job_ref ref;
    char err[512];
    assert_int_equal(sl_jobs_retry(c, m, failed, &ref, err, sizeof err),
                     -SL_EREFUSED);
    assert_non_null(strstr(err, "holds its unique key"));
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM work_jobs WHERE id = '%s' AND status ="
             " 'error'",
             failed);
    assert_int_equal(sl_test_long(c, sql), 1);
    /* Once the holder finished, the retry goes through. */
    snprintf(sql, sizeof sql,
             "UPDATE work_jobs SET status = 'done', finished_at = now() WHERE"
             " id = '%s'",
             holder);
    sl_test_exec(c, sql);
    assert_int_equal(sl_jobs_retry(c, m, failed, &ref, err, sizeof err), 0);
    assert_true(ref.changed);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unfinished_blocks_until_the_job_finishes),
        cmocka_unit_test(pending_blocks_until_the_job_starts),
        cmocka_unit_test(period_blocks_within_the_window_even_when_done),
        cmocka_unit_test(key_option_works_on_a_stage_without_unique),
        cmocka_unit_test(retry_of_a_job_whose_key_is_held_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
