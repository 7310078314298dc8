/* test_cloud_kill.c - a `sluice run` worker SIGKILLed in the middle of each
 * cloud stage: its lease expires, a second worker resumes the job, and the
 * fake server's counters prove that no finished sub-step ran twice (one
 * completed upload, one transcript submitted, one completion per finished
 * chunk). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakes/cloudpipe.h"
#include "fakes/cloudrun.h"
#include "testlib.h"

static cloud_env env;

static int teardown(void **state) {
    (void)state;
    cloud_teardown(&env);
    return 0;
}

#define Q(sql, id, want) cloud_assert_q(&env, sql, id, want)

static void assert_ready(const char *iv) {
    Q("SELECT status::text || '/' || progress FROM interviews WHERE id = $1",
      iv, "ready/100");
}

/* 1 MiB of media, which the fake reads at 64 KiB per 100 ms (~1.6 s). */
static char *big_media(size_t n) {
    char *media = malloc(n + 1);
    memset(media, 'a', n);
    media[n] = '\0';
    return media;
}

static void worker_killed_mid_upload_uploads_again_and_hands_on_one_url(
    void **state) {
    (void)state;
    cloud_setup(&env, "cloud_kill_upload", "--faults 'upload=slowread:100'",
                cloud_yaml((cloud_opts){.request_timeout = "10s"}));
    size_t n = 1 << 20;
    char *media = big_media(n);
    char *iv = cloud_interview(&env, media, NULL, NULL);
    free(media);

    pid_t w = cloud_spawn(&env);
    assert_true(cloud_wait_count(&env, "uploads_started", 1, 10000));
    usleep(300000);
    cloud_kill(w);
    Q("SELECT status::text FROM upload_jobs WHERE interview_id = $1", iv,
      "in_progress");

    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    /* The killed upload's URL never reached the worker, so the retry had
     * to upload again; only the second URL was handed on, once. */
    assert_int_equal(fake_count(&env.fake, "uploads_started"), 2);
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 1);
    Q("SELECT attempts || '/' || error_class FROM upload_jobs WHERE "
      "interview_id = $1",
      iv, "2/lease_expired");
    Q("SELECT count(*) FROM transcription_jobs WHERE interview_id = $1", iv,
      "1");
    char *url = cloud_q(&env,
                        "SELECT upload_url FROM transcription_jobs WHERE "
                        "interview_id = $1",
                        iv);
    json_t *s = fake_stats(&env.fake);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(s, "requests"), i, r) {
        if (strcmp(json_string_value(json_object_get(r, "route")),
                   "transcript") == 0)
            assert_string_equal(json_string_value(json_object_get(
                                    json_object_get(r, "body"), "audio_url")),
                                url);
    }
    json_decref(s);
    free(url);
    free(iv);
}

static void worker_killed_after_the_upload_finished_does_not_upload_again(
    void **state) {
    (void)state;
    cloud_setup(&env, "cloud_kill_uploaded", "--faults 'upload=slowread:100'",
                cloud_yaml((cloud_opts){.request_timeout = "10s"}));
    size_t n = 1 << 20;
    char *media = big_media(n);
    char *iv = cloud_interview(&env, media, NULL, NULL);
    free(media);

    /* Hold the interview row while the upload runs: the worker uploads,
     * saves the URL in its checkpoint, then blocks in the completion
     * (which updates the interview). That is where it is killed. */
    pid_t w = cloud_spawn(&env);
    assert_true(cloud_wait_count(&env, "uploads_started", 1, 10000));
    PGconn *lock = sl_test_connect(getenv("DATABASE_URL"));
    sl_test_exec(lock, "BEGIN");
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT 1 FROM interviews WHERE id = '%s' FOR UPDATE", iv);
    sl_test_exec(lock, sql);
    int64_t end = sl_test_now_ms() + 15000;
    while (cloud_ql(&env,
                    "SELECT count(*) FROM upload_jobs WHERE interview_id = $1 "
                    "AND checkpoint ? 'upload_url'",
                    iv) != 1) {
        if (sl_test_now_ms() > end) fail_msg("the upload URL was never saved");
        usleep(20000);
    }
    usleep(200000);
    Q("SELECT status::text FROM upload_jobs WHERE interview_id = $1", iv,
      "in_progress");
    cloud_kill(w);
    /* A server backend blocked on a lock does not notice that its client
     * died, and would commit the completion once the lock is released; a
     * machine that dies takes its connections with it. End the backend as
     * that would. */
    sl_test_exec(lock, "SELECT pg_terminate_backend(pid) FROM "
                       "pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'");
    sl_test_exec(lock, "ROLLBACK");
    PQfinish(lock);
    assert_int_equal(fake_count(&env.fake, "uploads"), 1);

    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    /* The retry handed the saved URL on: still one upload. */
    assert_int_equal(fake_count(&env.fake, "uploads_started"), 1);
    assert_int_equal(fake_count(&env.fake, "uploads"), 1);
    assert_int_equal(fake_count(&env.fake, "upload_bytes"), (long)n);
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 1);
    Q("SELECT attempts FROM upload_jobs WHERE interview_id = $1", iv, "2");
    Q("SELECT (SELECT upload_url FROM transcription_jobs WHERE interview_id "
      "= $1) = (SELECT checkpoint->>'upload_url' FROM upload_jobs WHERE "
      "interview_id = $1)",
      iv, "t");
    free(iv);
}

static void worker_killed_while_polling_resumes_without_resubmitting(
    void **state) {
    (void)state;
    cloud_setup(&env, "cloud_kill_poll", "--polls-before-complete 12",
                cloud_yaml((cloud_opts){.poll_interval = "150ms"}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);

    pid_t w = cloud_spawn(&env);
    assert_true(cloud_wait_count(&env, "polls", 3, 15000));
    cloud_kill(w);
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 1);
    Q("SELECT checkpoint ? 'transcript_id' FROM transcription_jobs WHERE "
      "interview_id = $1",
      iv, "t");

    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 1);
    assert_true(fake_count(&env.fake, "polls") >= 13);
    assert_int_equal(fake_count(&env.fake, "uploads"), 1);
    Q("SELECT transcript FROM transcription_jobs WHERE interview_id = $1", iv,
      CLOUD_MEDIA);
    free(iv);
}

static void worker_killed_during_analysis_resumes_at_the_next_chunk(
    void **state) {
    (void)state;
    /* The second chunk's completion hangs long enough to kill the worker
     * while it waits. */
    cloud_setup(&env, "cloud_kill_analysis",
                "--faults 'chat=sleep:0,sleep:3000'",
                cloud_yaml((cloud_opts){.request_timeout = "10s"}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);

    pid_t w = cloud_spawn(&env);
    assert_true(cloud_wait_count(&env, "chat", 2, 20000));
    cloud_kill(w);
    Q("SELECT checkpoint->>'next_chunk' FROM analysis_jobs WHERE "
      "interview_id = $1",
      iv, "1");
    Q("SELECT count(*) > 0 AND bool_and(chunk = 1) FROM insights WHERE "
      "interview_id = $1",
      iv, "t");

    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    char n[16];
    snprintf(n, sizeof n, "%d", CLOUD_INSIGHTS);
    Q("SELECT count(*) FROM insights WHERE interview_id = $1", iv, n);
    snprintf(n, sizeof n, "%d", CLOUD_PERSONAS);
    Q("SELECT count(*) FROM personas WHERE interview_id = $1", iv, n);
    /* Chunk 1 was finished before the kill and never sent again; chunk 2
     * was in flight and sent twice; the rest once. */
    json_t *s = fake_stats(&env.fake);
    json_t *byc = json_object_get(s, "chat_by_chunk");
    long chunks = cloud_ql(&env,
                           "SELECT (checkpoint->>'chunks')::int FROM "
                           "analysis_jobs WHERE interview_id = $1",
                           iv);
    assert_true(chunks >= 3);
    const char *k;
    json_t *v;
    json_object_foreach(byc, k, v) {
        long want = strncmp(k, "2/", 2) == 0 ? 2 : 1;
        if (json_integer_value(v) != want)
            fail_msg("chunk %s sent %lld times, want %ld", k,
                     (long long)json_integer_value(v), want);
    }
    assert_int_equal(json_object_size(byc), chunks);
    json_decref(s);
    Q("SELECT attempts || '/' || error_class FROM analysis_jobs WHERE "
      "interview_id = $1",
      iv, "2/lease_expired");
    free(iv);
}

int main(void) {
    cloud_keys();
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_teardown(f, teardown)
        T(worker_killed_mid_upload_uploads_again_and_hands_on_one_url),
        T(worker_killed_after_the_upload_finished_does_not_upload_again),
        T(worker_killed_while_polling_resumes_without_resubmitting),
        T(worker_killed_during_analysis_resumes_at_the_next_chunk),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
