/* test_cloud_once.c - provider calls that are not idempotent, made once per
 * logical step when their answer is lost (docs/stages.md, "What is
 * guaranteed against a lost answer"). The fake server carries out a
 * request whose answer it then loses, as the real services do, and counts
 * what it created:
 *   - POST /v2/transcript: never a second transcription; the handler finds
 *     the first one in GET /v2/transcript and polls it;
 *   - POST /v2/upload: cannot be looked up, so it is sent again, and only
 *     the answered upload is ever transcribed;
 *   - chat completions: the chunk is asked again; its result is stored
 *     once and no finished chunk is asked twice. */
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
    char n[16];
    snprintf(n, sizeof n, "%d", CLOUD_INSIGHTS);
    Q("SELECT count(*) FROM insights WHERE interview_id = $1", iv, n);
}

/* The one transcript the fake created is the one the job polled to the
 * end, and it is of the audio the upload handed on. */
static void assert_one_transcript(const char *iv) {
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 1);
    json_t *s = fake_stats(&env.fake);
    size_t i;
    json_t *r;
    const char *polled = NULL;
    json_array_foreach(json_object_get(s, "requests"), i, r) {
        if (strcmp(json_string_value(json_object_get(r, "route")), "poll") ==
            0)
            polled = json_string_value(json_object_get(r, "id"));
    }
    assert_non_null(polled);
    Q("SELECT checkpoint->>'transcript_id' FROM transcription_jobs WHERE"
      " interview_id = $1",
      iv, polled);
    json_decref(s);
}

/* A transcript submission whose answer is lost with `fault`: the pipeline
 * ends ready with one transcription, found by listing. */
static void lost_submission_answer(const char *db, const char *fault) {
    char args[256];
    snprintf(args, sizeof args, "--slow-seconds 3 --faults 'transcript=%s'",
             fault);
    cloud_setup(&env, db, args,
                cloud_yaml((cloud_opts){.request_timeout = "1s"}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    assert_one_transcript(iv);
    assert_true(fake_count(&env.fake, "lists") >= 1);
    /* Found in the same attempt: nothing was retried. */
    Q("SELECT attempts FROM transcription_jobs WHERE interview_id = $1", iv,
      "1");
    free(iv);
}

static void reset_mid_answer_does_not_transcribe_twice(void **state) {
    (void)state;
    lost_submission_answer("once_reset", "reset");
}

static void empty_200_does_not_transcribe_twice(void **state) {
    (void)state;
    lost_submission_answer("once_empty", "empty");
}

static void truncated_200_does_not_transcribe_twice(void **state) {
    (void)state;
    lost_submission_answer("once_truncated", "truncated");
}

static void malformed_200_does_not_transcribe_twice(void **state) {
    (void)state;
    lost_submission_answer("once_malformed", "malformed");
}

static void timed_out_submission_does_not_transcribe_twice(void **state) {
    (void)state;
    lost_submission_answer("once_timeout", "timeout");
}

/* The answer is lost and the list cannot be read either: the job fails
 * with a retry, and the next attempt looks again before submitting. */
static void unreadable_list_is_retried_before_any_resubmission(void **state) {
    (void)state;
    cloud_setup(&env, "once_list_down", "--faults 'transcript=reset;list=500'",
                cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    assert_one_transcript(iv);
    assert_int_equal(fake_count(&env.fake, "lists"), 2);
    Q("SELECT attempts FROM transcription_jobs WHERE interview_id = $1", iv,
      "2");
    free(iv);
}

/* A worker killed while the submission's answer is on its way: the next
 * worker finds the marker in the checkpoint and the transcript in the
 * list. */
static void worker_killed_mid_submission_does_not_transcribe_twice(
    void **state) {
    (void)state;
    cloud_setup(&env, "once_killed", "--faults 'transcript=sleep:3000'",
                cloud_yaml((cloud_opts){.request_timeout = "10s"}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    pid_t w = cloud_spawn(&env);
    assert_true(cloud_wait_count(&env, "transcripts_created", 1, 15000));
    cloud_kill(w);
    Q("SELECT checkpoint->'submitting' ? 'audio_url' FROM transcription_jobs"
      " WHERE interview_id = $1",
      iv, "t");
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    assert_one_transcript(iv);
    Q("SELECT attempts || '/' || error_class FROM transcription_jobs WHERE "
      "interview_id = $1",
      iv, "2/lease_expired");
    free(iv);
}

/* The transcript is found a page back: 150 transcripts of other audio were
 * created after it (the list is read newest first, 100 a page). */
static void transcript_found_past_the_first_page_of_the_list(void **state) {
    (void)state;
    cloud_setup(&env, "once_paged", "--faults 'transcript=sleep:3000'",
                cloud_yaml((cloud_opts){.request_timeout = "10s"}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    pid_t w = cloud_spawn(&env);
    assert_true(cloud_wait_count(&env, "transcripts_created", 1, 15000));
    cloud_kill(w);
    int rc = sl_test_sh(NULL,
                        "for i in $(seq 150); do curl -sf -o /dev/null -H "
                        "'Authorization: %s' -d '{\"audio_url\": "
                        "\"https://example.com/other.mp3\"}' "
                        "%s/v2/transcript || exit 1; done",
                        CLOUD_AKEY, env.fake.base);
    assert_int_equal(rc, 0);
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 151);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 151);
    assert_int_equal(fake_count(&env.fake, "lists"), 2);
    free(iv);
}

/* An HTTP error status is a refusal: nothing to find, so the next attempt
 * submits (once). */
static void refused_submission_is_submitted_again_once(void **state) {
    (void)state;
    cloud_setup(&env, "once_refused", "--faults 'transcript=503'",
                cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    /* A 503 created nothing: the second attempt submitted (once). */
    assert_one_transcript(iv);
    Q("SELECT attempts FROM transcription_jobs WHERE interview_id = $1", iv,
      "2");
    free(iv);
}

/* POST /v2/upload cannot be looked up afterwards: a lost answer means a
 * second upload, but only the answered one reaches a transcription. */
static void lost_upload_answer_uploads_again_but_transcribes_once(
    void **state) {
    (void)state;
    cloud_setup(&env, "once_upload", "--faults 'upload=reset'",
                cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    assert_int_equal(fake_count(&env.fake, "uploads_unanswered"), 1);
    assert_int_equal(fake_count(&env.fake, "uploads"), 1);
    assert_one_transcript(iv);
    /* The transcript is of the upload whose answer arrived. */
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

/* A chat completion whose answer is lost is asked again (and billed
 * again); its chunk's result is stored once, and no other chunk is asked
 * twice. */
static void lost_chat_answer_asks_that_chunk_again_only(void **state) {
    (void)state;
    cloud_setup(&env, "once_chat", "--faults 'chat=sleep:0,reset'",
                cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    Q("SELECT count(DISTINCT quote) FROM insights WHERE interview_id = $1",
      iv, "5");
    long chunks = cloud_ql(&env,
                           "SELECT (checkpoint->>'chunks')::int FROM "
                           "analysis_jobs WHERE interview_id = $1",
                           iv);
    assert_int_equal(fake_count(&env.fake, "chat"), chunks + 1);
    json_t *s = fake_stats(&env.fake);
    const char *k;
    json_t *v;
    long twice = 0;
    json_object_foreach(json_object_get(s, "chat_by_chunk"), k, v) {
        if (json_integer_value(v) == 2) twice++;
        else assert_int_equal(json_integer_value(v), 1);
    }
    assert_int_equal(twice, 1);
    json_decref(s);
    free(iv);
}

int main(void) {
    cloud_keys();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(reset_mid_answer_does_not_transcribe_twice,
                                  teardown),
        cmocka_unit_test_teardown(empty_200_does_not_transcribe_twice,
                                  teardown),
        cmocka_unit_test_teardown(truncated_200_does_not_transcribe_twice,
                                  teardown),
        cmocka_unit_test_teardown(malformed_200_does_not_transcribe_twice,
                                  teardown),
        cmocka_unit_test_teardown(
            timed_out_submission_does_not_transcribe_twice, teardown),
        cmocka_unit_test_teardown(
            unreadable_list_is_retried_before_any_resubmission, teardown),
        cmocka_unit_test_teardown(
            worker_killed_mid_submission_does_not_transcribe_twice, teardown),
        cmocka_unit_test_teardown(
            transcript_found_past_the_first_page_of_the_list, teardown),
        cmocka_unit_test_teardown(refused_submission_is_submitted_again_once,
                                  teardown),
        cmocka_unit_test_teardown(
            lost_upload_answer_uploads_again_but_transcribes_once, teardown),
        cmocka_unit_test_teardown(lost_chat_answer_asks_that_chunk_again_only,
                                  teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
