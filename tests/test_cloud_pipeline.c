/* test_cloud_pipeline.c - the interview pipeline (assemblyai.upload ->
 * assemblyai.transcribe -> llm.analyze) run by real `sluice run` worker
 * processes against PostgreSQL and the fake AssemblyAI/OpenAI server:
 * from an upload row to `ready` with transcript, insights and personas;
 * every injected fault retried or failed as the policy says, with bounded
 * attempts and nothing lost or written twice; keys absent from logs and
 * from the database. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakes/cloudpipe.h"
#include "error.h"
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
    Q("SELECT status::text FROM interviews WHERE id = $1", iv, "ready");
    Q("SELECT progress FROM interviews WHERE id = $1", iv, "100");
    Q("SELECT status_detail FROM interviews WHERE id = $1", iv, "Ready!");
}

/* The insights and personas of one clean analysis, each exactly once. */
static void assert_analysis(const char *iv) {
    char n[16];
    snprintf(n, sizeof n, "%d", CLOUD_INSIGHTS);
    Q("SELECT count(*) FROM insights WHERE interview_id = $1", iv, n);
    snprintf(n, sizeof n, "%d", CLOUD_PERSONAS);
    Q("SELECT count(*) FROM personas WHERE interview_id = $1", iv, n);
    Q("SELECT string_agg(kind || ':' || speaker, ',' ORDER BY chunk, seq) "
      "FROM insights WHERE interview_id = $1",
      iv, "pain_point:Dana,wish:Dana,praise:Sam,pain_point:Sam,wish:Sam");
    Q("SELECT string_agg(name, ',' ORDER BY name) FROM personas WHERE "
      "interview_id = $1",
      iv, "Dana,Sam");
    snprintf(n, sizeof n, "%d", CLOUD_INSIGHTS);
    Q("SELECT count(DISTINCT quote) FROM insights WHERE interview_id = $1",
      iv, n);
}

/* Every chunk was sent to the LLM exactly `per_chunk` times. */
static long assert_chat_per_chunk(const char *iv, long per_chunk) {
    long chunks = cloud_ql(&env,
                           "SELECT (checkpoint->>'chunks')::int FROM "
                           "analysis_jobs WHERE interview_id = $1",
                           iv);
    assert_true(chunks >= 3);
    json_t *s = fake_stats(&env.fake);
    json_t *byc = json_object_get(s, "chat_by_chunk");
    assert_int_equal(json_object_size(byc), chunks);
    const char *k;
    json_t *v;
    json_object_foreach(byc, k, v) {
        if (json_integer_value(v) != per_chunk)
            fail_msg("chunk %s sent %lld times, want %ld", k,
                     (long long)json_integer_value(v), per_chunk);
    }
    json_decref(s);
    return chunks;
}

/* ---- the happy path ---------------------------------------------------- */

static void upload_row_reaches_ready_with_transcript_insights_and_personas(
    void **state) {
    (void)state;
    cloud_setup(&env, "cloud_happy", NULL, cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), 0);

    assert_ready(iv);
    assert_analysis(iv);
    /* The transcript, one line per utterance, on the job and the subject. */
    Q("SELECT transcript FROM transcription_jobs WHERE interview_id = $1", iv,
      CLOUD_MEDIA);
    Q("SELECT transcript FROM interviews WHERE id = $1", iv, CLOUD_MEDIA);
    Q("SELECT jsonb_array_length(utterances) FROM transcription_jobs WHERE "
      "interview_id = $1",
      iv, "9");
    Q("SELECT words->0->>'text' FROM transcription_jobs WHERE interview_id = "
      "$1",
      iv, "Thanks");
    Q("SELECT upload_url LIKE 'https://cdn.assemblyai.invalid/upload/%' FROM "
      "transcription_jobs WHERE interview_id = $1",
      iv, "t");
    /* Every job done on its first attempt. */
    Q("SELECT string_agg(status::text || '/' || attempts, ',') FROM (SELECT "
      "status, attempts FROM upload_jobs WHERE interview_id = $1 UNION ALL "
      "SELECT status, attempts FROM transcription_jobs WHERE interview_id = "
      "$1 UNION ALL SELECT status, attempts FROM analysis_jobs WHERE "
      "interview_id = $1) j",
      iv, "done/1,done/1,done/1");

    /* The fake saw one upload of the exact bytes, one transcript, one chat
     * per chunk. */
    assert_int_equal(fake_count(&env.fake, "uploads"), 1);
    assert_int_equal(fake_count(&env.fake, "upload_bytes"),
                     (long)strlen(CLOUD_MEDIA));
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 1);
    assert_int_equal(fake_count(&env.fake, "unauthorized"), 0);
    long chunks = assert_chat_per_chunk(iv, 1);
    assert_int_equal(fake_count(&env.fake, "chat"), chunks);
    free(iv);
}

static void requests_carry_the_configured_options(void **state) {
    (void)state;
    cloud_setup(&env, "cloud_wire", NULL, cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    json_t *s = fake_stats(&env.fake);
    json_t *reqs = json_object_get(s, "requests");
    size_t i;
    json_t *r;
    int transcripts = 0, chats = 0;
    json_array_foreach(reqs, i, r) {
        const char *route = json_string_value(json_object_get(r, "route"));
        json_t *b = json_object_get(r, "body");
        if (strcmp(route, "transcript") == 0) {
            transcripts++;
            json_t *sm = json_object_get(b, "speech_models");
            assert_int_equal(json_array_size(sm), 2);
            assert_string_equal(json_string_value(json_array_get(sm, 0)),
                                "universal-3-pro");
            assert_true(json_is_true(json_object_get(b, "speaker_labels")));
        } else if (strcmp(route, "chat") == 0) {
            chats++;
            assert_string_equal(
                json_string_value(json_object_get(b, "model")), "test-model");
            assert_true(json_real_value(json_object_get(b, "temperature")) ==
                        0.2);
            json_t *rf = json_object_get(b, "response_format");
            assert_string_equal(
                json_string_value(json_object_get(rf, "type")), "json_schema");
            json_t *js = json_object_get(rf, "json_schema");
            assert_string_equal(
                json_string_value(json_object_get(js, "name")),
                "interview_analysis");
            assert_true(json_is_true(json_object_get(js, "strict")));
            json_t *msgs = json_object_get(b, "messages");
            assert_string_equal(json_string_value(json_object_get(
                                    json_array_get(msgs, 0), "role")),
                                "system");
            assert_non_null(strstr(json_string_value(json_object_get(
                                       json_array_get(msgs, 1), "content")),
                                   "Interview transcript, chunk "));
        }
    }
    assert_int_equal(transcripts, 1);
    assert_true(chats >= 3);
    json_decref(s);
    free(iv);
}

static void external_url_is_handed_on_without_an_upload(void **state) {
    (void)state;
    cloud_setup(&env, "cloud_external", NULL, cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, NULL, "https://media.example.com/a.mp3",
                               NULL);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    assert_int_equal(fake_count(&env.fake, "uploads_started"), 0);
    Q("SELECT upload_url FROM transcription_jobs WHERE interview_id = $1", iv,
      "https://media.example.com/a.mp3");
    /* The fake's built-in interview for audio it did not receive. */
    Q("SELECT count(*) > 0 FROM insights WHERE interview_id = $1", iv, "t");
    free(iv);
}

static void upload_url_saved_by_an_earlier_attempt_is_not_uploaded_again(
    void **state) {
    (void)state;
    cloud_setup(&env, "cloud_saved_url", NULL, cloud_yaml((cloud_opts){0}));
    /* A previous attempt uploaded and checkpointed, then died. */
    char *iv = cloud_interview(
        &env, CLOUD_MEDIA, NULL,
        "{\"upload_url\": \"https://cdn.assemblyai.invalid/upload/earlier\"}");
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    assert_int_equal(fake_count(&env.fake, "uploads_started"), 0);
    Q("SELECT upload_url FROM transcription_jobs WHERE interview_id = $1", iv,
      "https://cdn.assemblyai.invalid/upload/earlier");
    free(iv);
}

/* ---- faults the policy retries ------------------------------------------ */

static void transient_faults_are_retried_to_ready_with_nothing_twice(
    void **state) {
    (void)state;
    cloud_setup(&env, "cloud_transient",
                "--faults 'upload=500,reset;transcript=503;poll=429;"
                "chat=truncated,malformed,schema,length,refusal,408,409'",
                cloud_yaml((cloud_opts){.max_attempts = 8}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 90), 0);
    assert_ready(iv);
    assert_analysis(iv);
    /* attempts = the failures + 1 (snoozes use none). */
    Q("SELECT attempts FROM upload_jobs WHERE interview_id = $1", iv, "3");
    Q("SELECT attempts FROM transcription_jobs WHERE interview_id = $1", iv,
      "3");
    Q("SELECT attempts FROM analysis_jobs WHERE interview_id = $1", iv, "8");
    /* The last failure stays on record after the success. */
    Q("SELECT error_class FROM analysis_jobs WHERE interview_id = $1", iv,
      "http_5xx");
    assert_int_equal(fake_count(&env.fake, "uploads"), 1);
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 1);
    /* Seven failed tries on chunk 1, then one each: the failed attempts
     * resumed at chunk 1 and never replayed a finished chunk. */
    json_t *s = fake_stats(&env.fake);
    json_t *byc = json_object_get(s, "chat_by_chunk");
    const char *k;
    json_t *v;
    json_object_foreach(byc, k, v) {
        long want = strncmp(k, "1/", 2) == 0 ? 8 : 1;
        if (json_integer_value(v) != want)
            fail_msg("chunk %s sent %lld times, want %ld", k,
                     (long long)json_integer_value(v), want);
    }
    json_decref(s);
    free(iv);
}

static void rate_limit_waits_for_retry_after(void **state) {
    (void)state;
    cloud_setup(&env, "cloud_429", "--faults 'chat=429'",
                cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    Q("SELECT attempts FROM analysis_jobs WHERE interview_id = $1", iv, "2");
    /* The retry came no sooner than the server's Retry-After: 1 (the
     * backoff alone would be 50 ms). */
    json_t *s = fake_stats(&env.fake);
    json_t *reqs = json_object_get(s, "requests");
    double t429 = -1, tnext = -1;
    size_t i;
    json_t *r;
    json_array_foreach(reqs, i, r) {
        if (strcmp(json_string_value(json_object_get(r, "route")), "chat"))
            continue;
        double at = json_number_value(json_object_get(r, "at"));
        if (t429 < 0) t429 = at;
        else if (tnext < 0) tnext = at;
    }
    json_decref(s);
    assert_true(t429 > 0 && tnext > 0);
    if (tnext - t429 < 0.95)
        fail_msg("retried after %.3f s, before Retry-After", tnext - t429);
    free(iv);
}

static void slow_responses_time_out_and_are_retried(void **state) {
    (void)state;
    cloud_setup(&env, "cloud_timeout",
                "--slow-seconds 3 --faults 'upload=timeout;chat=timeout'",
                cloud_yaml((cloud_opts){.request_timeout = "700ms"}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    Q("SELECT attempts FROM upload_jobs WHERE interview_id = $1", iv, "2");
    Q("SELECT error_class FROM upload_jobs WHERE interview_id = $1", iv,
      "timeout");
    Q("SELECT attempts FROM analysis_jobs WHERE interview_id = $1", iv, "2");
    Q("SELECT error_class FROM analysis_jobs WHERE interview_id = $1", iv,
      "timeout");
    free(iv);
}

static void long_analysis_yields_before_the_stage_timeout(void **state) {
    (void)state;
    /* Every completion takes 1.2 s; the stage timeout is 3 s, so the three
     * chunks (3.6 s) do not fit in one run. */
    cloud_setup(&env, "cloud_yield", "--faults 'chat=sleep:1200*10'",
                cloud_yaml((cloud_opts){.timeout = "3s"}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), 0);
    assert_ready(iv);
    assert_analysis(iv);
    /* No attempt was lost to a timeout, no chunk was sent twice. */
    Q("SELECT attempts || '/' || coalesce(error_class, '-') FROM "
      "analysis_jobs WHERE interview_id = $1",
      iv, "1/-");
    assert_chat_per_chunk(iv, 1);
    char *log = cloud_log(&env);
    assert_non_null(strstr(log, "yielding after chunk"));
    free(log);
    free(iv);
}

/* ---- faults that fail at once or exhaust the attempts --------------------- */

static void quota_exhausted_fails_at_once_and_keeps_the_transcript(
    void **state) {
    (void)state;
    cloud_setup(&env, "cloud_quota", "--faults 'chat=quota'",
                cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), SL_EXIT_JOB_FAILED);
    Q("SELECT status::text || '/' || attempts || '/' || error_class FROM "
      "analysis_jobs WHERE interview_id = $1",
      iv, "error/1/quota_exhausted");
    Q("SELECT last_error LIKE '%exceeded your current quota%' FROM "
      "analysis_jobs WHERE interview_id = $1",
      iv, "t");
    Q("SELECT status::text || '/' || status_detail FROM interviews WHERE id "
      "= $1",
      iv, "error/Processing failed");
    /* Partial data is kept. */
    Q("SELECT transcript FROM interviews WHERE id = $1", iv, CLOUD_MEDIA);
    assert_int_equal(fake_count(&env.fake, "chat"), 1);
    free(iv);
}

static void client_errors_fail_at_once(void **state) {
    (void)state;
    cloud_setup(&env, "cloud_4xx", "--faults 'upload=400'",
                cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), SL_EXIT_JOB_FAILED);
    Q("SELECT status::text || '/' || attempts || '/' || error_class FROM "
      "upload_jobs WHERE interview_id = $1",
      iv, "error/1/http_4xx");
    Q("SELECT last_error LIKE '%HTTP 400%injected 400%' FROM upload_jobs "
      "WHERE interview_id = $1",
      iv, "t");
    Q("SELECT count(*) FROM transcription_jobs WHERE interview_id = $1", iv,
      "0");
    Q("SELECT status::text FROM interviews WHERE id = $1", iv, "error");
    free(iv);
}

static void transcript_error_is_a_permanent_provider_failure(void **state) {
    (void)state;
    cloud_setup(&env, "cloud_aai_error", "--faults 'poll=error'",
                cloud_yaml((cloud_opts){0}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), SL_EXIT_JOB_FAILED);
    Q("SELECT status::text || '/' || attempts || '/' || error_class FROM "
      "transcription_jobs WHERE interview_id = $1",
      iv, "error/1/provider");
    Q("SELECT last_error FROM transcription_jobs WHERE interview_id = $1", iv,
      "AssemblyAI transcription failed: Transcoding failed: the file does "
      "not appear to contain audio.");
    Q("SELECT count(*) FROM analysis_jobs WHERE interview_id = $1", iv, "0");
    Q("SELECT status::text FROM interviews WHERE id = $1", iv, "error");
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 1);
    free(iv);
}

static void retries_stop_after_max_attempts(void **state) {
    (void)state;
    cloud_setup(&env, "cloud_exhaust", "--faults 'chat=500*10'",
                cloud_yaml((cloud_opts){.max_attempts = 3}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), SL_EXIT_JOB_FAILED);
    Q("SELECT status::text || '/' || attempts || '/' || error_class FROM "
      "analysis_jobs WHERE interview_id = $1",
      iv, "error/3/http_5xx");
    Q("SELECT last_error LIKE 'chunk 1/%HTTP 500%' FROM analysis_jobs WHERE "
      "interview_id = $1",
      iv, "t");
    assert_int_equal(fake_count(&env.fake, "chat"), 3);
    Q("SELECT status::text FROM interviews WHERE id = $1", iv, "error");
    free(iv);
}

static void a_fault_mid_analysis_keeps_finished_chunks(void **state) {
    (void)state;
    /* Chunk 1 succeeds, chunk 2 fails permanently: chunk 1's insights stay
     * and the checkpoint says where a manual retry would resume. */
    cloud_setup(&env, "cloud_partial", NULL, cloud_yaml((cloud_opts){0}));
    fake_faults(&env.fake, "chat", "[\"sleep:0\", \"quota\"]");
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 60), SL_EXIT_JOB_FAILED);
    Q("SELECT status::text FROM analysis_jobs WHERE interview_id = $1", iv,
      "error");
    Q("SELECT checkpoint->>'next_chunk' FROM analysis_jobs WHERE "
      "interview_id = $1",
      iv, "1");
    Q("SELECT count(*) > 0 AND bool_and(chunk = 1) FROM insights WHERE "
      "interview_id = $1",
      iv, "t");
    free(iv);
}

/* ---- secrets ------------------------------------------------------------ */

static void wrong_key_fails_without_the_key_anywhere(void **state) {
    (void)state;
    cloud_setup(&env, "cloud_badkey", NULL, cloud_yaml((cloud_opts){0}));
    setenv("ASSEMBLYAI_API_KEY", "aai-wrong-key-0000111122", 1);
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    int rc = cloud_run(&env, 60);
    cloud_keys();
    assert_int_equal(rc, SL_EXIT_JOB_FAILED);
    Q("SELECT status::text || '/' || attempts || '/' || error_class FROM "
      "upload_jobs WHERE interview_id = $1",
      iv, "error/1/http_4xx");
    Q("SELECT last_error LIKE '%HTTP 401%Authentication error%' FROM "
      "upload_jobs WHERE interview_id = $1",
      iv, "t");
    Q("SELECT last_error LIKE '%0000111122%' FROM upload_jobs WHERE "
      "interview_id = $1",
      iv, "f");
    char *log = cloud_log(&env);
    assert_null(strstr(log, "0000111122"));
    free(log);
    free(iv);
}

static void keys_never_reach_logs_or_the_database(void **state) {
    (void)state;
    /* A run with failures in every stage, so that messages were written. */
    cloud_setup(&env, "cloud_secrets",
                "--faults 'upload=500;transcript=503;poll=429;chat=schema,"
                "malformed'",
                cloud_yaml((cloud_opts){.max_attempts = 5}));
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(sl_test_sh(NULL,
                                "timeout -s KILL 60 '%s' run --allow-superuser --exit-when-idle "
                                "-p '%s' --log-level debug >> '%s' 2>&1",
                                sl_test_bin(), env.dir, env.log),
                     0);
    assert_ready(iv);
    char *log = cloud_log(&env);
    assert_non_null(strstr(log, "will retry")); /* failures were logged */
    assert_null(strstr(log, CLOUD_AKEY));
    assert_null(strstr(log, CLOUD_OKEY));
    assert_null(strstr(log, "Bearer"));
    free(log);
    char *dump = NULL;
    assert_int_equal(sl_test_sh(&dump, "pg_dump --data-only '%s'",
                                getenv("DATABASE_URL")),
                     0);
    assert_non_null(strstr(dump, "pain_point")); /* the dump has the data */
    assert_null(strstr(dump, CLOUD_AKEY));
    assert_null(strstr(dump, CLOUD_OKEY));
    free(dump);
    free(iv);
}

/* ---- chaos -------------------------------------------------------------- */

static void random_faults_on_every_route_still_reach_ready_exactly_once(
    void **state) {
    (void)state;
    cloud_setup(&env, "cloud_chaos",
                "--fault-rate 0.4 --seed 7 --fault-kinds "
                "500,503,429ms,reset,truncated,malformed,schema,length",
                cloud_yaml((cloud_opts){.max_attempts = 12}));
    char *ivs[3];
    for (int i = 0; i < 3; i++)
        ivs[i] = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 120), 0);
    json_t *s = fake_stats(&env.fake);
    long faults = 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(s, "faults"), k, v) faults +=
        (long)json_integer_value(v);
    json_decref(s);
    assert_true(faults >= 3); /* the run really was disturbed */
    for (int i = 0; i < 3; i++) {
        assert_ready(ivs[i]);
        assert_analysis(ivs[i]);
        Q("SELECT count(*) FROM transcription_jobs WHERE interview_id = $1",
          ivs[i], "1");
        Q("SELECT count(*) FROM analysis_jobs WHERE interview_id = $1",
          ivs[i], "1");
        free(ivs[i]);
    }
    /* Each interview's transcript was created once, however often its
     * requests failed. */
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 3);
}

int main(void) {
    cloud_keys();
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_teardown(f, teardown)
        T(upload_row_reaches_ready_with_transcript_insights_and_personas),
        T(requests_carry_the_configured_options),
        T(external_url_is_handed_on_without_an_upload),
        T(upload_url_saved_by_an_earlier_attempt_is_not_uploaded_again),
        T(transient_faults_are_retried_to_ready_with_nothing_twice),
        T(rate_limit_waits_for_retry_after),
        T(slow_responses_time_out_and_are_retried),
        T(long_analysis_yields_before_the_stage_timeout),
        T(quota_exhausted_fails_at_once_and_keeps_the_transcript),
        T(client_errors_fail_at_once),
        T(transcript_error_is_a_permanent_provider_failure),
        T(retries_stop_after_max_attempts),
        T(a_fault_mid_analysis_keeps_finished_chunks),
        T(wrong_key_fails_without_the_key_anywhere),
        T(keys_never_reach_logs_or_the_database),
        T(random_faults_on_every_route_still_reach_ready_exactly_once),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
