/* test_providers_pipeline.c - the shipped pipelines/interview.yaml run end
 * to end with each choice of providers, made by the environment alone:
 * no API keys (noop upload, pocketsphinx, the Lua analysis), both keys
 * (AssemblyAI and the LLM, served by the fake cloud), and only the
 * AssemblyAI key (cloud transcription, local analysis). Real PostgreSQL,
 * real runtime, the shipped files unchanged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsl.h"
#include "error.h"
#include "migrate.h"
#include "rtlib.h"
#include "runtime.h"

#include "fakes/cloudpipe.h"
#include "fakes/cloudrun.h"

#define SHIPPED SL_SOURCE_DIR "/pipelines/interview.yaml"
#define ACCOUNT "00000000-0000-0000-0000-00000000a001"
#define IV "00000000-0000-0000-0000-00000000c001"

static void clear_provider_env(void) {
    unsetenv("ASSEMBLYAI_API_KEY");
    unsetenv("OPENAI_API_KEY");
    unsetenv("SLUICE_TRANSCRIBE_PROVIDER");
    unsetenv("SLUICE_ANALYZE_PROVIDER");
}

static char *read_source(const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SL_SOURCE_DIR, rel);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot read %s", path);
    char *buf = malloc(1 << 20);
    size_t len = fread(buf, 1, (1 << 20) - 1, f);
    buf[len] = '\0';
    fclose(f);
    return buf;
}

static int has_word(const char *text, const char *word) {
    return text && strcasestr(text, word) != NULL;
}

/* ---- no keys: everything on this machine -------------------------------- */

static void without_keys_the_shipped_pipeline_runs_locally_to_ready(void **s) {
    (void)s;
    clear_provider_env();
    static const char *db = "sluice_test_providers_local";
    const char *ci = sl_test_db(db);
    PGconn *c = sl_test_connect(ci);
    const char *paths[1] = {SHIPPED};
    sl_model *m = NULL;
    sl_diags d = {0};
    if (sl_dsl_load(paths, 1, &m, &d) != 0)
        fail_msg("load: %s", sl_diags_format(&d));
    sl_diags_free(&d);
    assert_string_equal(sl_model_stage(m, "interview", "transcribe")->handler,
                        "local.transcribe");
    sl_migrate_result mr;
    memset(&mr, 0, sizeof mr);
    char err[1024];
    if (sl_migrate(c, m, NULL, &mr, err, sizeof err) != 0)
        fail_msg("migrate: %s", err);
    sl_migrate_result_free(&mr);
    sl_test_exec(
        c, "CREATE TABLE iv_log (n bigserial PRIMARY KEY, id uuid, status"
           " text, progress int, detail text);"
           "CREATE FUNCTION iv_log() RETURNS trigger LANGUAGE plpgsql AS"
           " $$ BEGIN INSERT INTO iv_log (id, status, progress, detail)"
           " VALUES (NEW.id, NEW.status, NEW.progress,"
           " NEW.status_detail); RETURN NEW; END $$;"
           "CREATE TRIGGER iv_log AFTER UPDATE ON interviews FOR EACH ROW"
           " EXECUTE FUNCTION iv_log();"
           "INSERT INTO accounts (id, name) VALUES ('" ACCOUNT "', 'Acme');"
           "INSERT INTO interviews (id, account_id, title) VALUES"
           " ('" IV "', '" ACCOUNT "', 'Dana')");
    /* As a user would: sluice enqueue with the file, no keys anywhere. */
    char *out = NULL;
    int rc = sl_test_sh(&out,
                        "env -u ASSEMBLYAI_API_KEY -u OPENAI_API_KEY '%s' "
                        "enqueue interview -p '%s' --database dbname=%s "
                        "--subject %s --file '%s' 2>&1",
                        sl_test_bin(), SHIPPED, db, IV,
                        SL_SOURCE_DIR "/tests/audio/interview.wav");
    if (rc != 0) fail_msg("sluice enqueue: %s", out ? out : "");
    free(out);

    char ci2[128];
    snprintf(ci2, sizeof ci2, "dbname=%s", db);
    sl_runtime_opts o;
    memset(&o, 0, sizeof o);
    o.conninfo = ci2;
    o.exit_when_idle = 1;
    o.drain_ms = 1000;
    o.progress_throttle_ms = 1;
    if (sl_runtime_run(m, &o, err, sizeof err) != 0)
        fail_msg("runtime: %s", err);

    char *st = sl_test_scalar(c, "SELECT status || ' ' || progress || ' ' ||"
                                 " status_detail FROM interviews");
    assert_string_equal(st, "ready 100 Ready!");
    free(st);
    /* The reference design's statuses, in order. */
    char *path = sl_test_scalar(
        c, "SELECT string_agg(status, ' ' ORDER BY first) FROM (SELECT status,"
           " min(n) AS first FROM iv_log GROUP BY status) x");
    assert_string_equal(path,
                        "uploading uploaded transcribed processing ready");
    free(path);
    /* The decoder's progress shows while the status is uploaded. */
    assert_true(sl_test_long(c, "SELECT count(*) FROM iv_log WHERE status ="
                                " 'uploaded' AND progress BETWEEN 21 AND 49"
                                " AND detail LIKE 'decoding %'") >= 1);
    /* The audio went from the upload row to the recogniser; nothing was
     * uploaded anywhere. */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM transcription_jobs"
                                     " WHERE media_file IS NOT NULL AND"
                                     " upload_url IS NULL AND status = 'done'"),
                     1);
    char *t = sl_test_scalar(c, "SELECT transcript FROM analysis_jobs");
    assert_true(has_word(t, "invoices") && has_word(t, "reminders"));
    free(t);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM insights WHERE"
                                     " kind = 'pain_point' AND content ILIKE"
                                     " '%invoices are slow%'"),
                     1);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM insights WHERE"
                                     " kind = 'wish' AND content ILIKE"
                                     " '%reminders%'"),
                     1);
    PQfinish(c);
    sl_model_free(m);
}

/* ---- keys: the cloud providers (the fake cloud) ----------------------- */

static cloud_env env;

/* The shipped interview.yaml and its hooks in a directory of their own,
 * migrated, with the fake cloud started (its URLs in the environment). */
static void shipped_on_fake_cloud(const char *db) {
    char *yaml = read_source("pipelines/interview.yaml");
    char *la = read_source("pipelines/hooks/local_analysis.lua");
    char *tu = read_source("pipelines/hooks/textutil.lua");
    const char *const files[] = {"interview.yaml",
                                 yaml,
                                 "hooks/local_analysis.lua",
                                 la,
                                 "hooks/textutil.lua",
                                 tu,
                                 NULL};
    cloud_setup_files(&env, db, "--polls-before-complete 0", files);
    free(yaml);
    free(la);
    free(tu);
}

static void with_both_keys_the_shipped_pipeline_runs_on_the_cloud(void **s) {
    (void)s;
    clear_provider_env();
    cloud_keys();
    shipped_on_fake_cloud("sluice_test_providers_cloud");
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 90), 0);
    cloud_assert_q(&env,
                   "SELECT status::text || ' ' || progress FROM interviews "
                   "WHERE id = $1",
                   iv, "ready 100");
    /* The reference hand-off: the upload URL, never the bytes. */
    cloud_assert_q(&env,
                   "SELECT (upload_url IS NOT NULL AND media_file IS NULL)"
                   "::text FROM transcription_jobs WHERE interview_id = $1",
                   iv, "true");
    assert_int_equal(fake_count(&env.fake, "uploads"), 1);
    assert_true(fake_count(&env.fake, "chat") >= 1);
    char n[16];
    snprintf(n, sizeof n, "%d", CLOUD_INSIGHTS);
    cloud_assert_q(
        &env, "SELECT count(*) FROM insights WHERE interview_id = $1", iv, n);
    free(iv);
    cloud_teardown(&env);
    clear_provider_env();
}

static void with_only_the_assemblyai_key_analysis_runs_locally(void **s) {
    (void)s;
    clear_provider_env();
    cloud_keys();
    unsetenv("OPENAI_API_KEY");
    shipped_on_fake_cloud("sluice_test_providers_mixed");
    char *iv = cloud_interview(&env, CLOUD_MEDIA, NULL, NULL);
    assert_int_equal(cloud_run(&env, 90), 0);
    cloud_assert_q(&env,
                   "SELECT status::text || ' ' || progress FROM interviews "
                   "WHERE id = $1",
                   iv, "ready 100");
    /* Transcribed by (fake) AssemblyAI, analysed without any LLM call. */
    assert_int_equal(fake_count(&env.fake, "transcripts_created"), 1);
    assert_int_equal(fake_count(&env.fake, "chat"), 0);
    long found = cloud_ql(&env,
                          "SELECT count(*) FROM insights WHERE interview_id = "
                          "$1 AND kind = 'pain_point' AND content ILIKE "
                          "'%slow%'",
                          iv);
    assert_true(found >= 1);
    free(iv);
    cloud_teardown(&env);
    clear_provider_env();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            without_keys_the_shipped_pipeline_runs_locally_to_ready),
        cmocka_unit_test(with_both_keys_the_shipped_pipeline_runs_on_the_cloud),
        cmocka_unit_test(with_only_the_assemblyai_key_analysis_runs_locally),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
