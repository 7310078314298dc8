/* test_provider_faults.c - a batch of interviews through the real interview
 * pipeline (assemblyai.upload -> assemblyai.transcribe -> llm.analyze, run
 * by `sluice run` processes) while the fake AssemblyAI/OpenAI server turns
 * about 30 % of all requests into faults of every kind it knows, transient
 * and permanent. Every interview ends `ready`, or `error` where the retry
 * policy says so, with a clear message; no job uses more attempts than the
 * policy allows; nothing is left unfinished and nothing is written twice.
 *
 * scripts/chaos runs it bigger: SLUICE_FAULTS_INTERVIEWS (default 40),
 * SLUICE_FAULTS_SEED (default 2), SLUICE_FAULTS_RATE (percent, default
 * 30). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "error.h"
#include "fakes/cloudpipe.h"
#include "fakes/cloudrun.h"
#include "rtlib.h"

#define MAX_ATTEMPTS 5
#define MAX_INTERVIEWS 200

/* Every fault the fake can inject (tests/fakes/fake_cloud.py). */
#define ALL_KINDS                                                              \
    "400,401,404,500,502,503,429,429ms,quota,timeout,reset,truncated,"         \
    "malformed,big,error,schema,length,refusal"

static cloud_env env;

static int teardown(void **state) {
    (void)state;
    cloud_teardown(&env);
    return 0;
}

/* Classes a job may end in `error` with before its last attempt: the
 * policy's fail-at-once classes (docs/dsl.md: retry.on's complement). */
static int permanent(const char *cls) {
    static const char *const p[] = {"http_4xx", "quota_exhausted",
                                    "invalid_input", "provider", NULL};
    for (int i = 0; p[i]; i++)
        if (strcmp(cls, p[i]) == 0) return 1;
    return 0;
}

static void
thirty_percent_faults_of_every_kind_end_ready_or_clear_error(void **state) {
    (void)state;
    long n = rt_env_long("SLUICE_FAULTS_INTERVIEWS", 40);
    long seed = rt_env_long("SLUICE_FAULTS_SEED", 2);
    long rate = rt_env_long("SLUICE_FAULTS_RATE", 30);
    if (n > MAX_INTERVIEWS) n = MAX_INTERVIEWS;
    char args[512];
    snprintf(args, sizeof args,
             "--fault-rate %ld.%02ld --seed %ld --slow-seconds 3"
             " --fault-kinds " ALL_KINDS,
             rate / 100, rate % 100, seed);
    cloud_setup(&env, "provider_faults", args,
                cloud_yaml((cloud_opts){.max_attempts = MAX_ATTEMPTS,
                                        .request_timeout = "1s"}));
    char *ivs[MAX_INTERVIEWS];
    for (long i = 0; i < n; i++)
        ivs[i] = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);

    int64_t t0 = sl_test_now_ms();
    pid_t w[2] = {cloud_spawn(&env), cloud_spawn(&env)};
    for (int i = 0; i < 2; i++) {
        /* 0, or 3 when a job it ran failed for good: both are outcomes
         * this test allows (each interview ends ready or in error). */
        int rc = rt_wait(w[i], 240000);
        if (rc != 0 && rc != SL_EXIT_JOB_FAILED) fail_msg("worker exit %d", rc);
    }
    int64_t ms = sl_test_now_ms() - t0;

    /* The fake really injected many faults, of many kinds. */
    json_t *s = fake_stats(&env.fake);
    json_t *faults = json_object_get(s, "faults");
    long nfaults = 0,
         requests = (long)json_array_size(json_object_get(s, "requests"));
    char kinds[1024] = "";
    const char *k;
    json_t *v;
    json_object_foreach(faults, k, v) {
        nfaults += (long)json_integer_value(v);
        size_t l = strlen(kinds);
        snprintf(kinds + l, sizeof kinds - l, "%s%s=%lld", l ? " " : "", k,
                 (long long)json_integer_value(v));
    }
    size_t nkinds = json_object_size(faults);
    json_decref(s);
    print_message("%ld interviews, %ld requests, %ld faults injected in"
                  " %.1f s: %s\n",
                  n, requests, nfaults, ms / 1000.0, kinds);
    assert_true(nfaults >= requests / 6);
    assert_true(nkinds >= 12); /* of 18; which ones depends on timing */

    /* Nothing left unfinished, no job past the policy's attempts. */
    assert_int_equal(
        cloud_ql(&env,
                 "SELECT count(*) FROM (SELECT status FROM upload_jobs UNION"
                 " ALL SELECT status FROM transcription_jobs UNION ALL SELECT"
                 " status FROM analysis_jobs) j WHERE status NOT IN ('done',"
                 " 'error')",
                 NULL),
        0);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM (SELECT attempts FROM upload_jobs UNION"
             " ALL SELECT attempts FROM transcription_jobs UNION ALL SELECT"
             " attempts FROM analysis_jobs) j WHERE attempts > %d",
             MAX_ATTEMPTS);
    assert_int_equal(cloud_ql(&env, sql, NULL), 0);

    long ready = 0, failed = 0;
    for (long i = 0; i < n; i++) {
        char *st = cloud_q(&env,
                           "SELECT status::text FROM interviews WHERE"
                           " id = $1",
                           ivs[i]);
        assert_non_null(st);
        if (strcmp(st, "ready") == 0) {
            ready++;
            /* A ready interview has its analysis exactly once. */
            char want[16];
            snprintf(want, sizeof want, "%d", CLOUD_INSIGHTS);
            cloud_assert_q(&env,
                           "SELECT count(*) FROM insights WHERE"
                           " interview_id = $1",
                           ivs[i], want);
            cloud_assert_q(&env,
                           "SELECT count(DISTINCT quote) FROM insights WHERE"
                           " interview_id = $1",
                           ivs[i], want);
            cloud_assert_q(&env,
                           "SELECT progress || ' ' || status_detail FROM"
                           " interviews WHERE id = $1",
                           ivs[i], "100 Ready!");
        } else if (strcmp(st, "error") == 0) {
            failed++;
            /* Exactly one job failed: the one that stopped the interview,
             * with a class the policy fails at once or its attempts used
             * up, and a message that says what happened. */
            PGresult *r;
            const char *p[1] = {ivs[i]};
            r = PQexecParams(
                env.c,
                "SELECT q, error_class, attempts, last_error FROM (SELECT"
                " 'upload' q, interview_id, status, error_class, attempts,"
                " last_error FROM upload_jobs UNION ALL SELECT 'transcribe',"
                " interview_id, status, error_class, attempts, last_error"
                " FROM transcription_jobs UNION ALL SELECT 'analyze',"
                " interview_id, status, error_class, attempts, last_error"
                " FROM analysis_jobs) j WHERE j.interview_id = $1 AND"
                " j.status = 'error'",
                1, NULL, p, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_TUPLES_OK)
                fail_msg("%s", PQerrorMessage(env.c));
            assert_int_equal(PQntuples(r), 1);
            const char *cls = PQgetvalue(r, 0, 1);
            int att = atoi(PQgetvalue(r, 0, 2));
            const char *msg = PQgetvalue(r, 0, 3);
            print_message("  error: %s, class %s, attempt %d: %.150s\n",
                          PQgetvalue(r, 0, 0), cls, att, msg);
            if (!permanent(cls) && att != MAX_ATTEMPTS)
                fail_msg("a %s failure gave up after %d of %d attempts", cls,
                         att, MAX_ATTEMPTS);
            assert_true(strlen(msg) > 15);
            assert_null(strstr(msg, "handler failed"));
            PQclear(r);
            cloud_assert_q(&env,
                           "SELECT status_detail FROM interviews WHERE id ="
                           " $1",
                           ivs[i], "Processing failed");
        } else {
            fail_msg("interview %s ended in status %s", ivs[i], st);
        }
        free(st);
        free(ivs[i]);
    }
    print_message("%ld ready, %ld error\n", ready, failed);
    assert_int_equal(ready + failed, n);
    /* Each transcript was created at most once per interview, however
     * often its requests failed. */
    assert_true(fake_count(&env.fake, "transcripts_created") <= n);
}

int main(void) {
    cloud_keys();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            thirty_percent_faults_of_every_kind_end_ready_or_clear_error,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
