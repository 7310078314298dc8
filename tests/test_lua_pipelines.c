/* test_lua_pipelines.c - the pipelines shipped in pipelines/ that are
 * written in YAML and Lua only: the report pipeline produces its report
 * from seeded insights, and the local (no-LLM) analysis hook writes
 * insights and personas for a transcript. Real runtime, real PostgreSQL,
 * the shipped files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rtlib.h"

static char *read_source(const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SL_SOURCE_DIR, rel);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot read %s", path);
    static char *bufs[8];
    static int n;
    char *buf = malloc(1 << 20);
    size_t len = fread(buf, 1, (1 << 20) - 1, f);
    buf[len] = '\0';
    fclose(f);
    free(bufs[n % 8]);
    bufs[n++ % 8] = buf;
    return buf;
}

/* Copies the shipped hooks next to the YAML that rt_setup writes. */
static void copy_hooks(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/hooks", sl_test_tmpdir());
    mkdir(dir, 0755);
    static const char *const files[] = {"report.lua", "local_analysis.lua",
                                        "textutil.lua", NULL};
    for (int i = 0; files[i]; i++) {
        char rel[256], name[256];
        snprintf(rel, sizeof rel, "pipelines/hooks/%s", files[i]);
        snprintf(name, sizeof name, "hooks/%s", files[i]);
        sl_test_file(name, read_source(rel));
    }
}

#define ACCOUNT "00000000-0000-0000-0000-0000000000a0"
#define PROJECT "00000000-0000-0000-0000-0000000000b0"
#define OTHER_PROJECT "00000000-0000-0000-0000-0000000000b9"
#define IV1 "00000000-0000-0000-0000-0000000000c1"
#define IV2 "00000000-0000-0000-0000-0000000000c2"
#define IV3 "00000000-0000-0000-0000-0000000000c3"

static void seed_project(PGconn *c) {
    sl_test_exec(
        c, "INSERT INTO accounts (id, name) VALUES ('" ACCOUNT "', 'Acme');"
           "INSERT INTO projects (id, account_id, name) VALUES"
           " ('" PROJECT "', '" ACCOUNT "', 'Research Ops'),"
           " ('" OTHER_PROJECT "', '" ACCOUNT "', 'Elsewhere');"
           "INSERT INTO interviews (id, account_id, project_id, title,"
           " status, created_at) VALUES"
           " ('" IV1 "', '" ACCOUNT "', '" PROJECT "', 'Dana', 'ready',"
           "  now() - interval '2 hours'),"
           " ('" IV2 "', '" ACCOUNT "', '" PROJECT "', 'Sam', 'ready',"
           "  now() - interval '1 hour'),"
           " ('" IV3 "', '" ACCOUNT "', '" OTHER_PROJECT "', 'Kim',"
           "  'ready', now())");
}

static void seed_insights(PGconn *c) {
    sl_test_exec(
        c,
        "INSERT INTO insights (interview_id, chunk, seq, kind, content, quote,"
        " speaker, confidence) VALUES"
        " ('" IV1 "', 0, 0, 'pain_point', 'Search across old interviews is "
        "slow and never finds the quote.', 'the search never finds the quote',"
        " 'Dana', 0.8),"
        " ('" IV1 "', 0, 1, 'pain_point', 'Exporting notes to the wiki breaks "
        "the formatting.', NULL, 'Dana', 0.7),"
        " ('" IV1 "', 0, 2, 'wish', 'Wants to search interviews by keyword "
        "and jump to the quote.', NULL, 'Dana', 0.6),"
        " ('" IV2 "', 0, 0, 'pain_point', 'Interview search is slow; finding "
        "a quote takes minutes.', NULL, 'Sam', 0.75),"
        " ('" IV2 "', 0, 1, 'pain_point', 'The wiki export loses formatting "
        "every time.', NULL, 'Sam', 0.65),"
        " ('" IV2 "', 0, 2, 'pain_point', 'Pricing is too expensive for a "
        "small team.', NULL, 'Sam', 0.5),"
        " ('" IV3 "', 0, 0, 'pain_point', 'Search in another project entirely"
        " is slow.', NULL, 'Kim', 0.9);"
        "INSERT INTO personas (interview_id, name, role, description) VALUES"
        " ('" IV1 "', 'Dana', 'product manager', 'Runs customer research.'),"
        " ('" IV3 "', 'Kim', 'designer', 'Not in this project.')");
}

static json_t *report_of(PGconn *c, const char *job) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT report FROM report_jobs WHERE id = '%s'",
             job);
    char *text = sl_test_scalar(c, sql);
    if (!text) fail_msg("report_jobs.report is NULL");
    json_t *r = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(r);
    return r;
}

static json_t *topic_with_keyword(json_t *report, const char *word) {
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(report, "topics"), i, t) {
        size_t k;
        json_t *w;
        json_array_foreach(json_object_get(t, "keywords"), k,
                           w) if (strcmp(json_string_value(w), word) ==
                                  0) return t;
    }
    return NULL;
}

static void report_pipeline_builds_topics_from_seeded_insights(void **s) {
    (void)s;
    setenv("SLUICE_REPORT_SUMMARIES", "extractive", 1);
    copy_hooks();
    PGconn *c;
    sl_model *m = rt_setup("sluice_test_lua_report",
                           read_source("pipelines/report.yaml"), &c);
    seed_project(c);
    seed_insights(c);
    char *job = sl_test_scalar(c, "INSERT INTO report_jobs (account_id, "
                                  "project_id) VALUES ('" ACCOUNT "', '" PROJECT
                                  "') RETURNING id");
    rt_run_until_idle(m, 1, 1);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT status::text || ' ' || coalesce(last_error, '') FROM "
             "report_jobs WHERE id = '%s'",
             job);
    char *st = sl_test_scalar(c, sql);
    if (strcmp(st, "done ") != 0) fail_msg("report job: %s", st);
    free(st);

    json_t *r = report_of(c, job);
    /* Only this project's interviews and insights. */
    assert_int_equal(json_integer_value(json_object_get(r, "interview_count")),
                     2);
    assert_int_equal(json_integer_value(json_object_get(r, "insight_count")),
                     6);
    /* Search (3 insights over both interviews) is the biggest topic, export
     * the next (2); the pricing remark shares no keywords: "Other". */
    json_t *topics = json_object_get(r, "topics");
    assert_int_equal(json_array_size(topics), 3);
    json_t *search = topic_with_keyword(r, "search");
    assert_non_null(search);
    assert_ptr_equal(search, json_array_get(topics, 0));
    assert_int_equal(json_integer_value(json_object_get(search, "size")), 3);
    assert_int_equal(json_integer_value(json_object_get(search, "interviews")),
                     2);
    json_t *exp = json_array_get(topics, 1);
    assert_int_equal(json_integer_value(json_object_get(exp, "size")), 2);
    assert_non_null(
        strstr(json_string_value(json_object_get(exp, "title")), "formatting"));
    json_t *other = json_array_get(topics, 2);
    assert_string_equal(json_string_value(json_object_get(other, "title")),
                        "Other insights");
    assert_non_null(strstr(
        json_string_value(json_object_get(
            json_array_get(json_object_get(other, "insights"), 0), "content")),
        "Pricing"));
    assert_string_equal(
        json_string_value(json_object_get(search, "summary_source")),
        "extractive");
    /* Personas of the project only. */
    json_t *personas = json_object_get(r, "personas");
    assert_int_equal(json_array_size(personas), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(personas, 0), "name")),
        "Dana");
    json_decref(r);

    snprintf(sql, sizeof sql,
             "SELECT markdown FROM report_jobs WHERE id = '%s'", job);
    char *md = sl_test_scalar(c, sql);
    assert_non_null(md);
    assert_non_null(strstr(md, "# Research report: Research Ops"));
    assert_non_null(strstr(md, "### 1. "));
    assert_non_null(strstr(md, "### 3. Other insights"));
    assert_non_null(
        strstr(md, "> \"the search never finds the quote\" - Dana"));
    assert_non_null(strstr(md, "## Personas"));
    assert_null(strstr(md, "Kim"));
    free(md);
    free(job);
    PQfinish(c);
    sl_model_free(m);
}

static void report_of_a_missing_project_fails_as_invalid_input(void **s) {
    (void)s;
    setenv("SLUICE_REPORT_SUMMARIES", "extractive", 1);
    copy_hooks();
    PGconn *c;
    sl_model *m = rt_setup("sluice_test_lua_report_missing",
                           read_source("pipelines/report.yaml"), &c);
    seed_project(c);
    sl_test_exec(c, "INSERT INTO report_jobs (account_id, project_id) VALUES"
                    " ('" ACCOUNT "', NULL)");
    rt_run_until_idle(m, 1, 1);
    char *st = sl_test_scalar(c, "SELECT status::text || ' ' || error_class || "
                                 "' ' || attempts FROM report_jobs");
    assert_string_equal(st, "error invalid_input 1");
    free(st);
    PQfinish(c);
    sl_model_free(m);
}

/* A pipeline on the base schema's interviews that runs the shipped local
 * analysis hook. */
static const char *const LOCAL_YAML =
    "pipeline: offline\n"
    "subject:\n"
    "  table: interviews\n"
    "  status:\n"
    "    column: status\n"
    "    values: [uploading, uploaded, transcribed, processing, ready, error]\n"
    "  progress: progress\n"
    "  detail: status_detail\n"
    "security: {rls: false}\n"
    "stages:\n"
    "  analyze:\n"
    "    queue: offline_analysis_jobs\n"
    "    handler: lua\n"
    "    sql_writes: true\n"
    "    with: {chunk_sentences: 3}\n"
    "    columns:\n"
    "      transcript: text\n"
    "    hooks:\n"
    "      run: {file: hooks/local_analysis.lua}\n"
    "    status:\n"
    "      on_start: {status: processing, progress: 70}\n"
    "      progress: {status: processing, from: 70, to: 99}\n"
    "      on_done: {status: ready, progress: 100}\n"
    "      on_error: {status: error}\n";

static const char *const TRANSCRIPT =
    "Interviewer: Thanks for joining. Can you tell me about your role?\n"
    "Dana: Sure. I'm a product manager at a logistics company and I run our "
    "customer research.\n"
    "Interviewer: How do you handle recordings today?\n"
    "Dana: Honestly it's a nightmare. Someone transcribes them by hand, "
    "which takes forever.\n"
    "Dana: The export to our wiki is really frustrating because the "
    "formatting breaks every time.\n"
    "Dana: I wish I could search across all interviews for a keyword.\n"
    "Interviewer: What works well?\n"
    "Dana: I love how fast the tagging is, it's simple and intuitive.\n";

static long count(PGconn *c, const char *sql) {
    return sl_test_long(c, sql);
}

static void local_analysis_writes_insights_and_personas(void **s) {
    (void)s;
    copy_hooks();
    PGconn *c;
    sl_model *m = rt_setup("sluice_test_lua_local", LOCAL_YAML, &c);
    seed_project(c);
    const char *params[1] = {TRANSCRIPT};
    for (int round = 0; round < 2; round++) {
        PGresult *r = PQexecParams(
            c,
            "INSERT INTO offline_analysis_jobs (interview_id, transcript) "
            "VALUES ('" IV1 "', $1)",
            1, NULL, params, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
        rt_run_until_idle(m, 1, 1);
        assert_int_equal(count(c, "SELECT count(*) FROM offline_analysis_jobs"
                                  " WHERE status <> 'done'"),
                         0);
        /* Pain points, the wish, the praise; the interviewer's questions
         * are not analysed. */
        assert_int_equal(count(c, "SELECT count(*) FROM insights WHERE kind ="
                                  " 'pain_point' AND content LIKE '%wiki%"
                                  "frustrating%'"),
                         1);
        assert_int_equal(count(c, "SELECT count(*) FROM insights WHERE kind ="
                                  " 'pain_point' AND content LIKE '%forever%'"),
                         1);
        assert_int_equal(count(c, "SELECT count(*) FROM insights WHERE kind ="
                                  " 'wish' AND content LIKE 'I wish I could "
                                  "search%'"),
                         1);
        assert_int_equal(count(c, "SELECT count(*) FROM insights WHERE kind ="
                                  " 'praise' AND speaker = 'Dana'"),
                         1);
        assert_int_equal(count(c, "SELECT count(*) FROM insights WHERE "
                                  "content LIKE '%?'"),
                         0);
        assert_true(count(c, "SELECT count(*) FROM insights WHERE kind = "
                             "'quote'") >= 1);
        assert_int_equal(count(c, "SELECT count(*) FROM insights WHERE kind = "
                                  "'keywords'"),
                         1);
        assert_int_equal(count(c, "SELECT count(*) FROM personas WHERE name ="
                                  " 'Dana' AND role = 'product manager'"),
                         1);
        assert_int_equal(count(c, "SELECT count(*) FROM personas"), 1);
        assert_int_equal(count(c, "SELECT count(*) FROM insights WHERE "
                                  "data->>'method' = 'lexical-heuristic' AND"
                                  " confidence > 0 AND confidence <= 0.9"),
                         count(c, "SELECT count(*) FROM insights WHERE kind"
                                  " <> 'keywords'"));
    }
    /* Running it twice produced no duplicates (UPSERTs). */
    assert_int_equal(count(c, "SELECT count(*) - count(DISTINCT content) FROM "
                              "insights WHERE kind <> 'quote'"),
                     0);
    char *st = sl_test_scalar(c, "SELECT status::text || ' ' || progress FROM "
                                 "interviews WHERE id = '" IV1 "'");
    assert_string_equal(st, "ready 100");
    free(st);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(report_pipeline_builds_topics_from_seeded_insights),
        cmocka_unit_test(report_of_a_missing_project_fails_as_invalid_input),
        cmocka_unit_test(local_analysis_writes_insights_and_personas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
