/* test_lua_hooks.c - Lua hooks change what llm.analyze sends, observed on
 * the fake OpenAI server (tests/fakes/fake_cloud.py logs every request
 * body): the `chunk` hook decides the chunks, `prompt` the messages, and
 * `post` what is stored. The same transcript without hooks is the
 * control. Also: sluice.llm.chat from a hook, and the report pipeline's
 * LLM summaries. Real runtime, real PostgreSQL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "fakes/fakecloud.h"
#include "lua_host.h"
#include "rtlib.h"

#define KEY "sk-test-hooks-4242"
#define ACCOUNT "00000000-0000-0000-0000-0000000000a0"
#define PROJECT "00000000-0000-0000-0000-0000000000b0"
#define IV "00000000-0000-0000-0000-0000000000c1"

static const char *const HOOKS =
    "-- Chunks are the sections between lines '---'.\n"
    "function chunk(transcript, config)\n"
    "  local parts = {}\n"
    "  for part in (transcript .. '\\n---\\n'):gmatch('(.-)\\n%-%-%-\\n') do\n"
    "    part = part:gsub('^%s+', ''):gsub('%s+$', '')\n"
    "    if part ~= '' then parts[#parts + 1] = part end\n"
    "  end\n"
    "  return parts\n"
    "end\n"
    "function prompt(chunk, index, count, config)\n"
    "  return {\n"
    "    {role = 'system', content = 'LUA SYSTEM PROMPT for ' .. "
    "config.model},\n"
    "    {role = 'user', content = string.format('Lua chunk %d/%d\\n%s',\n"
    "                                            index, count, chunk)},\n"
    "  }\n"
    "end\n"
    "function post(result, index, count)\n"
    "  for _, ins in ipairs(result.insights) do\n"
    "    ins.content = '[lua ' .. index .. '/' .. count .. '] ' .. "
    "ins.content\n"
    "  end\n"
    "  return result\n"
    "end\n";

static const char *const SECTIONS[3] = {
    "Dana: Honestly the export is frustrating and slow.",
    "Dana: I wish the reports were automatic.",
    "Dana: I love how simple the search is.",
};

static char transcript[512];

static const char *make_transcript(void) {
    snprintf(transcript, sizeof transcript, "%s\n---\n%s\n---\n%s\n",
             SECTIONS[0], SECTIONS[1], SECTIONS[2]);
    return transcript;
}

static const char *analyze_yaml(const char *base, int hooks) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "pipeline: hooked\n"
             "subject:\n"
             "  table: interviews\n"
             "  status:\n"
             "    column: status\n"
             "    values: [uploading, uploaded, transcribed, processing, "
             "ready, error]\n"
             "security: {rls: false}\n"
             "stages:\n"
             "  analyze:\n"
             "    queue: hooked_analysis_jobs\n"
             "    handler: llm.analyze\n"
             "    with: {base_url: \"%s\", model: m1}\n"
             "    columns:\n"
             "      transcript: text\n"
             "%s",
             base,
             hooks ? "    hooks:\n"
                     "      chunk: {file: hooks_llm.lua}\n"
                     "      prompt: {file: hooks_llm.lua}\n"
                     "      post: {file: hooks_llm.lua}\n"
                   : "");
    return buf;
}

static void seed(PGconn *c) {
    sl_test_exec(c,
                 "INSERT INTO accounts (id, name) VALUES ('" ACCOUNT "', 'A');"
                 "INSERT INTO projects (id, account_id, name) VALUES ('" PROJECT
                 "', '" ACCOUNT "', 'Research Ops');"
                 "INSERT INTO interviews (id, account_id, project_id, title) "
                 "VALUES ('" IV "', '" ACCOUNT "', '" PROJECT "', 'Dana')");
}

static void run_analysis(fake_cloud *f, int hooks, const char *db,
                         PGconn **out) {
    setenv("OPENAI_API_KEY", KEY, 1);
    sl_test_file("hooks_llm.lua", HOOKS);
    PGconn *c;
    sl_model *m = rt_setup(db, analyze_yaml(f->base, hooks), &c);
    seed(c);
    const char *params[1] = {make_transcript()};
    PGresult *r =
        PQexecParams(c,
                     "INSERT INTO hooked_analysis_jobs "
                     "(interview_id, transcript) VALUES ('" IV "', $1)",
                     1, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    rt_run_until_idle(m, 1, 1);
    char *st = sl_test_scalar(c, "SELECT status::text || ' ' || "
                                 "coalesce(last_error, '') FROM "
                                 "hooked_analysis_jobs");
    if (strcmp(st, "done ") != 0) fail_msg("analysis job: %s", st);
    free(st);
    sl_model_free(m);
    *out = c;
}

/* The chat requests the fake received, in order. */
static json_t *chat_bodies(fake_cloud *f) {
    json_t *st = fake_stats(f);
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(st, "requests"), i, r) {
        const char *route = json_string_value(json_object_get(r, "route"));
        if (route && strcmp(route, "chat") == 0)
            json_array_append(out, json_object_get(r, "body"));
    }
    json_decref(st);
    return out;
}

static const char *msg(json_t *body, size_t i) {
    return json_string_value(json_object_get(
        json_array_get(json_object_get(body, "messages"), i), "content"));
}

static void hooks_decide_the_chunks_and_prompts_the_llm_receives(void **s) {
    (void)s;
    fake_cloud f;
    fake_start(&f, "--openai-key " KEY);
    PGconn *c;
    run_analysis(&f, 1, "sluice_test_lua_hooks_on", &c);

    json_t *bodies = chat_bodies(&f);
    /* One request per section: the chunk hook's split. */
    assert_int_equal(json_array_size(bodies), 3);
    for (size_t k = 0; k < 3; k++) {
        json_t *b = json_array_get(bodies, k);
        /* Exactly the prompt hook's two messages. */
        assert_int_equal(json_array_size(json_object_get(b, "messages")), 2);
        assert_string_equal(msg(b, 0), "LUA SYSTEM PROMPT for m1");
        char want[256];
        snprintf(want, sizeof want, "Lua chunk %zu/3\n%s", k + 1, SECTIONS[k]);
        assert_string_equal(msg(b, 1), want);
    }
    json_decref(bodies);

    /* The post hook rewrote what was stored, chunk by chunk. */
    long all = sl_test_long(c, "SELECT count(*) FROM insights");
    assert_true(all >= 3);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM insights WHERE "
                                     "content LIKE '[lua %/3] %'"),
                     all);
    assert_int_equal(sl_test_long(c,
                                  "SELECT count(*) FROM insights WHERE "
                                  "content LIKE '[lua 2/3] %' AND chunk = 2"),
                     sl_test_long(c, "SELECT count(*) FROM insights WHERE "
                                     "chunk = 2"));
    PQfinish(c);
    fake_stop(&f);
}

static void without_hooks_the_defaults_are_sent(void **s) {
    (void)s;
    fake_cloud f;
    fake_start(&f, "--openai-key " KEY);
    PGconn *c;
    run_analysis(&f, 0, "sluice_test_lua_hooks_off", &c);
    json_t *bodies = chat_bodies(&f);
    /* The short transcript is one default chunk, with the default prompt. */
    assert_int_equal(json_array_size(bodies), 1);
    json_t *b = json_array_get(bodies, 0);
    assert_null(strstr(msg(b, 0), "LUA SYSTEM PROMPT"));
    assert_non_null(strstr(msg(b, 1), SECTIONS[0]));
    assert_non_null(strstr(msg(b, 1), SECTIONS[2]));
    json_decref(bodies);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM insights WHERE "
                                     "content LIKE '[lua%'"),
                     0);
    PQfinish(c);
    fake_stop(&f);
}

/* ---- sluice.llm.chat ---------------------------------------------------- */

static const char *const CHAT_HOOKS =
    "function ask(text)\n"
    "  return sluice.llm.chat{messages = {{role = 'user', content = text}},\n"
    "                         temperature = 0.2}\n"
    "end\n"
    "function ask_schema(text)\n"
    "  return sluice.llm.chat{\n"
    "    messages = {{role = 'user', content = text}},\n"
    "    schema = {type = 'object', additionalProperties = false,\n"
    "              required = {'title'},\n"
    "              properties = {title = {type = 'string'}}},\n"
    "    schema_name = 'title_only'}\n"
    "end\n"
    "function available() return sluice.llm.available() end\n";

typedef struct chat_fx {
    fake_cloud f;
    sl_stage stage;
    sl_hook hooks[3];
    sl_lua *L;
} chat_fx;

static int chat_setup(void **state) {
    chat_fx *x = calloc(1, sizeof *x);
    fake_start(&x->f, "--openai-key " KEY);
    setenv("OPENAI_API_KEY", KEY, 1);
    const char *file = sl_test_file("chat_hooks.lua", CHAT_HOOKS);
    const char *pts[3] = {"ask", "ask_schema", "available"};
    for (int i = 0; i < 3; i++)
        x->hooks[i] =
            (sl_hook){.point = pts[i], .file = file, .function = pts[i]};
    x->stage.name = "chat";
    x->stage.with =
        json_pack("{s:s, s:s}", "base_url", x->f.base, "model", "m-lua");
    x->stage.hooks = x->hooks;
    x->stage.nhooks = 3;
    char err[512];
    if (sl_lua_open(&x->stage, &x->L, err, sizeof err) != 0)
        fail_msg("open: %s", err);
    *state = x;
    return 0;
}

static int chat_teardown(void **state) {
    chat_fx *x = *state;
    sl_lua_close(x->L);
    fake_stop(&x->f);
    json_decref(x->stage.with);
    free(x);
    return 0;
}

static void llm_chat_sends_the_stage_model_and_returns_text(void **state) {
    chat_fx *x = *state;
    json_t *ret = NULL, *args = json_pack("[s]", "say hi");
    sl_result res = {0};
    int rc = sl_lua_call(x->L, "ask", NULL, NULL, args, &ret, &res);
    json_decref(args);
    if (rc != 0) fail_msg("%s", res.message);
    assert_true(json_is_string(ret));
    assert_non_null(strstr(json_string_value(ret), "say hi"));
    json_decref(ret);
    json_t *bodies = chat_bodies(&x->f);
    json_t *b = json_array_get(bodies, 0);
    assert_string_equal(json_string_value(json_object_get(b, "model")),
                        "m-lua");
    assert_true(json_real_value(json_object_get(b, "temperature")) == 0.2);
    assert_string_equal(msg(b, 0), "say hi");
    json_decref(bodies);
}

static void llm_chat_with_a_schema_returns_validated_json(void **state) {
    chat_fx *x = *state;
    json_t *ret = NULL, *args = json_pack("[s]", "name it");
    sl_result res = {0};
    int rc = sl_lua_call(x->L, "ask_schema", NULL, NULL, args, &ret, &res);
    json_decref(args);
    if (rc != 0) fail_msg("%s", res.message);
    assert_true(json_is_string(json_object_get(ret, "title")));
    json_decref(ret);
    json_t *bodies = chat_bodies(&x->f);
    json_t *rf = json_object_get(json_array_get(bodies, 0), "response_format");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(rf, "json_schema"), "name")),
                        "title_only");
    json_decref(bodies);
}

static void llm_chat_failure_carries_the_error_class(void **state) {
    chat_fx *x = *state;
    fake_faults(&x->f, "chat", "[\"quota\"]");
    json_t *ret = NULL, *args = json_pack("[s]", "x");
    sl_result res = {0};
    assert_int_equal(sl_lua_call(x->L, "ask", NULL, NULL, args, &ret, &res),
                     -SL_ELUA);
    json_decref(args);
    assert_int_equal(res.errclass, SL_EC_QUOTA_EXHAUSTED);
    assert_null(strstr(res.message, KEY));
}

static void llm_available_follows_the_key_in_the_environment(void **state) {
    chat_fx *x = *state;
    json_t *ret = NULL;
    sl_result res = {0};
    assert_int_equal(
        sl_lua_call(x->L, "available", NULL, NULL, NULL, &ret, &res), 0);
    assert_true(json_is_true(ret));
    json_decref(ret);
    unsetenv("OPENAI_API_KEY");
    assert_int_equal(
        sl_lua_call(x->L, "available", NULL, NULL, NULL, &ret, &res), 0);
    assert_true(json_is_false(ret));
    json_decref(ret);
    setenv("OPENAI_API_KEY", KEY, 1);
}

/* ---- the report pipeline with an LLM ------------------------------------- */

static char *read_source(const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SL_SOURCE_DIR, rel);
    FILE *fp = fopen(path, "r");
    if (!fp) fail_msg("cannot read %s", path);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static void report_summaries_come_from_the_llm_when_configured(void **s) {
    (void)s;
    fake_cloud f;
    fake_start(&f, "--openai-key " KEY);
    setenv("OPENAI_API_KEY", KEY, 1);
    setenv("OPENAI_BASE_URL", f.base, 1);
    setenv("SLUICE_REPORT_SUMMARIES", "auto", 1);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/hooks", sl_test_tmpdir());
    mkdir(dir, 0755);
    static const char *const files[] = {"report.lua", "textutil.lua", NULL};
    for (int i = 0; files[i]; i++) {
        char rel[128], name[128];
        snprintf(rel, sizeof rel, "pipelines/hooks/%s", files[i]);
        snprintf(name, sizeof name, "hooks/%s", files[i]);
        char *text = read_source(rel);
        sl_test_file(name, text);
        free(text);
    }
    char *yaml = read_source("pipelines/report.yaml");
    PGconn *c;
    sl_model *m = rt_setup("sluice_test_lua_report_llm", yaml, &c);
    free(yaml);
    seed(c);
    sl_test_exec(c,
                 "INSERT INTO insights (interview_id, chunk, seq, kind, "
                 "content, confidence) VALUES"
                 " ('" IV "', 0, 0, 'pain_point', 'Search is slow.', 0.8),"
                 " ('" IV "', 0, 1, 'pain_point', 'Search misses quotes and "
                 "is slow.', 0.7),"
                 " ('" IV "', 0, 2, 'wish', 'Automatic weekly reports.', 0.6)");
    sl_test_exec(c, "INSERT INTO report_jobs (account_id, project_id) VALUES"
                    " ('" ACCOUNT "', '" PROJECT "')");
    rt_run_until_idle(m, 1, 1);
    char *st = sl_test_scalar(c, "SELECT status::text || ' ' || "
                                 "coalesce(last_error, '') FROM report_jobs");
    if (strcmp(st, "done ") != 0) fail_msg("report job: %s", st);
    free(st);
    /* One LLM call per real topic (the search cluster), none for "Other". */
    json_t *bodies = chat_bodies(&f);
    assert_int_equal(json_array_size(bodies), 1);
    assert_non_null(
        strstr(msg(json_array_get(bodies, 0), 1), "Search is slow."));
    json_decref(bodies);
    char *src = sl_test_scalar(c, "SELECT report->'topics'->0->>"
                                  "'summary_source' FROM report_jobs");
    assert_string_equal(src, "llm");
    free(src);
    char *sum = sl_test_scalar(c, "SELECT report->'topics'->0->>'summary' "
                                  "FROM report_jobs");
    assert_non_null(strstr(sum, "generated from"));
    free(sum);
    char *other = sl_test_scalar(c, "SELECT report->'topics'->1->>"
                                    "'summary_source' FROM report_jobs");
    assert_string_equal(other, "extractive");
    free(other);
    unsetenv("OPENAI_BASE_URL");
    PQfinish(c);
    sl_model_free(m);
    fake_stop(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hooks_decide_the_chunks_and_prompts_the_llm_receives),
        cmocka_unit_test(without_hooks_the_defaults_are_sent),
        cmocka_unit_test_setup_teardown(
            llm_chat_sends_the_stage_model_and_returns_text, chat_setup,
            chat_teardown),
        cmocka_unit_test_setup_teardown(
            llm_chat_with_a_schema_returns_validated_json, chat_setup,
            chat_teardown),
        cmocka_unit_test_setup_teardown(
            llm_chat_failure_carries_the_error_class, chat_setup,
            chat_teardown),
        cmocka_unit_test_setup_teardown(
            llm_available_follows_the_key_in_the_environment, chat_setup,
            chat_teardown),
        cmocka_unit_test(report_summaries_come_from_the_llm_when_configured),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
