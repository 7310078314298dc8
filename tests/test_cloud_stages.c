/* test_cloud_stages.c - llm.generate, the http stage and llm.analyze's Lua
 * hooks under `sluice run` against the fake server: what each writes into
 * its queue row, what the fake received, and how failures are classified.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakes/cloudpipe.h"
#include "error.h"
#include "fakes/cloudrun.h"
#include "testlib.h"

static cloud_env env;

static const char GEN_YAML[] =
    "pipeline: gen\n"
    "security: {rls: false}\n"
    "sweep: {interval: 200ms, pending_age: 1s}\n"
    "defaults:\n"
    "  retry: {max_attempts: 3, backoff: fixed, initial: 50ms, max_delay: "
    "1s, jitter: 0}\n"
    "stages:\n"
    "  plain:\n"
    "    queue: gen_plain_jobs\n"
    "    handler: llm.generate\n"
    "    with: {base_url: \"${OPENAI_BASE_URL}\", model: gen-model, "
    "request_timeout: 2s}\n"
    "    columns: {payload: jsonb, result: jsonb}\n";

static const char GEN2_YAML[] =
    "pipeline: gen2\n"
    "security: {rls: false}\n"
    "sweep: {interval: 200ms, pending_age: 1s}\n"
    "defaults:\n"
    "  retry: {max_attempts: 3, backoff: fixed, initial: 50ms, max_delay: "
    "1s, jitter: 0}\n"
    "stages:\n"
    "  structured:\n"
    "    queue: gen_struct_jobs\n"
    "    handler: llm.generate\n"
    "    with:\n"
    "      base_url: \"${OPENAI_BASE_URL}\"\n"
    "      model: gen-model\n"
    "      schema_name: report\n"
    "      schema:\n"
    "        type: object\n"
    "        additionalProperties: false\n"
    "        required: [title, bullets]\n"
    "        properties:\n"
    "          title: {type: string}\n"
    "          bullets: {type: array, items: {type: string}}\n"
    "    columns: {payload: jsonb, result: jsonb}\n"
    "    hooks:\n"
    "      prompt: {file: hooks/gen.lua}\n"
    "      post: {file: hooks/gen.lua}\n";

static const char GEN_LUA[] =
    "function prompt(payload, config)\n"
    "  return 'Report on ' .. payload.topic .. ' for ' .. config.model\n"
    "end\n"
    "function post(result, payload)\n"
    "  result.source = 'hook'\n"
    "  result.topic = payload.topic\n"
    "  return result\n"
    "end\n";

static const char HOOK_YAML[] =
    "pipeline: hooks\n"
    "security: {rls: false}\n"
    "sweep: {interval: 200ms, pending_age: 1s}\n"
    "defaults:\n"
    "  retry: {max_attempts: 3, backoff: fixed, initial: 50ms, max_delay: "
    "1s, jitter: 0}\n"
    "stages:\n"
    "  notify:\n"
    "    queue: webhook_jobs\n"
    "    handler: http\n"
    "    with:\n"
    "      url: \"${OPENAI_BASE_URL}/echo\"\n"
    "      headers: {X-Source: sluice}\n"
    "      headers_env: {X-Token: OPENAI_API_KEY}\n"
    "      request_timeout: 2s\n"
    "    columns: {event: text, data: jsonb, status_code: integer, response: "
    "jsonb}\n";

static const char ANALYSIS_YAML[] =
    "pipeline: hooked\n"
    "subject:\n"
    "  table: interviews\n"
    "  foreign_key: interview_id\n"
    "  status: {column: status, values: [uploading, uploaded, transcribed, "
    "processing, ready, error]}\n"
    "security: {rls: false}\n"
    "sweep: {interval: 200ms, pending_age: 1s}\n"
    "stages:\n"
    "  analyze:\n"
    "    queue: hooked_analysis_jobs\n"
    "    handler: llm.analyze\n"
    "    with: {base_url: \"${OPENAI_BASE_URL}\", model: test-model}\n"
    "    columns: {transcript: text}\n"
    "    hooks:\n"
    "      chunk: {file: hooks/analysis.lua}\n"
    "      prompt: {file: hooks/analysis.lua}\n"
    "      post: {file: hooks/analysis.lua}\n"
    "    status:\n"
    "      on_done: {status: ready}\n";

/* One chunk per participant line; a prompt of our own; praise dropped. */
static const char ANALYSIS_LUA[] =
    "function chunk(transcript, config)\n"
    "  local out = {}\n"
    "  for line in transcript:gmatch('[^\\n]+') do\n"
    "    if not line:match('^Interviewer:') then out[#out + 1] = line end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "function prompt(chunk, index, count, config)\n"
    "  return string.format('Custom prompt, Chunk %d/%d:\\n%s', index, "
    "count, chunk)\n"
    "end\n"
    "function post(result, index, count)\n"
    "  local kept = sluice.json.array()\n"
    "  for _, ins in ipairs(result.insights) do\n"
    "    if ins.kind ~= 'praise' then kept[#kept + 1] = ins end\n"
    "  end\n"
    "  result.insights = kept\n"
    "  return result\n"
    "end\n";

static int setup_group(void **state) {
    (void)state;
    cloud_keys();
    const char *const files[] = {"gen.yaml",          GEN_YAML,
                                 "gen2.yaml",         GEN2_YAML,
                                 "hooks/gen.lua",     GEN_LUA,
                                 "hooks.yaml",        HOOK_YAML,
                                 "analysis.yaml",     ANALYSIS_YAML,
                                 "hooks/analysis.lua", ANALYSIS_LUA,
                                 NULL};
    cloud_setup_files(&env, "cloud_stages", NULL, files);
    return 0;
}

static int teardown_group(void **state) {
    (void)state;
    cloud_teardown(&env);
    return 0;
}

static int reset(void **state) {
    (void)state;
    json_decref(fake_call(&env.fake, "/_reset", "{}"));
    return 0;
}

#define Q(sql, id, want) cloud_assert_q(&env, sql, id, want)

/* Inserts a row and returns its id (caller frees). */
static char *insert(const char *sql, const char *arg) {
    char *id = cloud_q(&env, sql, arg);
    assert_non_null(id);
    return id;
}

/* The fake's log entries of one route, as a new array. */
static json_t *requests(const char *route) {
    json_t *s = fake_stats(&env.fake), *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(s, "requests"), i, r) {
        if (strcmp(json_string_value(json_object_get(r, "route")), route) ==
            0)
            json_array_append(out, r);
    }
    json_decref(s);
    return out;
}

static const char *user_content(json_t *chat_req) {
    json_t *msgs = json_object_get(json_object_get(chat_req, "body"),
                                   "messages");
    return json_string_value(json_object_get(
        json_array_get(msgs, json_array_size(msgs) - 1), "content"));
}

/* ---- llm.generate -------------------------------------------------------- */

static void generate_writes_the_reply_text_into_result(void **state) {
    (void)state;
    char *id = insert("INSERT INTO gen_plain_jobs (payload) VALUES "
                      "($1::jsonb) RETURNING id",
                      "{\"prompt\": \"Write a tagline\"}");
    assert_int_equal(cloud_run(&env, 30), 0);
    Q("SELECT status::text || '/' || attempts FROM gen_plain_jobs WHERE id = "
      "$1",
      id, "done/1");
    Q("SELECT result::text FROM gen_plain_jobs WHERE id = $1", id,
      "{\"text\": \"Generated: Write a tagline\"}");
    json_t *chats = requests("chat");
    assert_int_equal(json_array_size(chats), 1);
    assert_string_equal(user_content(json_array_get(chats, 0)),
                        "Write a tagline");
    json_decref(chats);
    free(id);
}

static void generate_sends_a_payload_without_prompt_as_json(void **state) {
    (void)state;
    char *id = insert("INSERT INTO gen_plain_jobs (payload) VALUES "
                      "($1::jsonb) RETURNING id",
                      "{\"topic\": \"invoices\", \"length\": 3}");
    assert_int_equal(cloud_run(&env, 30), 0);
    Q("SELECT status::text FROM gen_plain_jobs WHERE id = $1", id, "done");
    json_t *chats = requests("chat");
    const char *u = user_content(json_array_get(chats, 0));
    assert_non_null(strstr(u, "\"topic\": \"invoices\""));
    assert_non_null(strstr(u, "\"length\": 3"));
    json_decref(chats);
    free(id);
}

static void generate_with_schema_and_hooks_stores_the_hooked_json(
    void **state) {
    (void)state;
    char *id = insert("INSERT INTO gen_struct_jobs (payload) VALUES "
                      "($1::jsonb) RETURNING id",
                      "{\"topic\": \"onboarding\"}");
    assert_int_equal(cloud_run(&env, 30), 0);
    Q("SELECT status::text FROM gen_struct_jobs WHERE id = $1", id, "done");
    Q("SELECT result->>'source' || '/' || (result->>'topic') || '/' || "
      "jsonb_typeof(result->'bullets') FROM gen_struct_jobs WHERE id = $1",
      id, "hook/onboarding/array");
    Q("SELECT result->>'title' FROM gen_struct_jobs WHERE id = $1", id,
      "generated from: Report on onboarding for gen-model");
    json_t *chats = requests("chat");
    json_t *rf = json_object_get(
        json_object_get(json_array_get(chats, 0), "body"), "response_format");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(rf, "json_schema"), "name")),
                        "report");
    json_decref(chats);
    free(id);
}

static void generate_without_payload_fails_at_once(void **state) {
    (void)state;
    char *id = insert("INSERT INTO gen_plain_jobs (payload) VALUES (NULL) "
                      "RETURNING id",
                      NULL);
    assert_int_equal(cloud_run(&env, 30), SL_EXIT_JOB_FAILED);
    Q("SELECT status::text || '/' || attempts || '/' || error_class FROM "
      "gen_plain_jobs WHERE id = $1",
      id, "error/1/invalid_input");
    assert_int_equal(fake_count(&env.fake, "chat"), 0);
    free(id);
}

static void generate_retries_a_reply_that_breaks_the_schema(void **state) {
    (void)state;
    fake_faults(&env.fake, "chat", "[\"schema\"]");
    char *id = insert("INSERT INTO gen_struct_jobs (payload) VALUES "
                      "($1::jsonb) RETURNING id",
                      "{\"topic\": \"pricing\"}");
    assert_int_equal(cloud_run(&env, 30), 0);
    Q("SELECT status::text || '/' || attempts || '/' || error_class FROM "
      "gen_struct_jobs WHERE id = $1",
      id, "done/2/invalid_response");
    free(id);
}

/* ---- http ------------------------------------------------------------------ */

static void http_stage_posts_the_job_input_with_headers(void **state) {
    (void)state;
    char *id = insert("INSERT INTO webhook_jobs (event, data) VALUES "
                      "('signup', $1::jsonb) RETURNING id",
                      "{\"plan\": \"pro\"}");
    assert_int_equal(cloud_run(&env, 30), 0);
    Q("SELECT status::text || '/' || status_code FROM webhook_jobs WHERE id "
      "= $1",
      id, "done/200");
    Q("SELECT (response->>'token_ok') || '/' || (response->'received'->>"
      "'event') || '/' || (response->'received'->'data'->>'plan') FROM "
      "webhook_jobs WHERE id = $1",
      id, "true/signup/pro");
    json_t *echo = requests("echo");
    assert_int_equal(json_array_size(echo), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(echo, 0), "content_type")),
                        "application/json");
    json_decref(echo);
    free(id);
}

static void http_stage_retries_a_server_error(void **state) {
    (void)state;
    fake_faults(&env.fake, "echo", "[\"503\"]");
    char *id = insert("INSERT INTO webhook_jobs (event) VALUES ('retry') "
                      "RETURNING id",
                      NULL);
    assert_int_equal(cloud_run(&env, 30), 0);
    Q("SELECT status::text || '/' || attempts || '/' || error_class FROM "
      "webhook_jobs WHERE id = $1",
      id, "done/2/http_5xx");
    free(id);
}

/* A lost answer (the receiver acted, the connection reset) is sent again
 * with the same Idempotency-Key, the job's id, for the receiver to
 * deduplicate. */
static void http_stage_resends_a_lost_answer_with_the_same_idempotency_key(
    void **state) {
    (void)state;
    fake_faults(&env.fake, "echo", "[\"reset\"]");
    char *id = insert("INSERT INTO webhook_jobs (event) VALUES ('lost') "
                      "RETURNING id",
                      NULL);
    assert_int_equal(cloud_run(&env, 30), 0);
    Q("SELECT status::text || '/' || attempts FROM webhook_jobs WHERE id = "
      "$1",
      id, "done/2");
    json_t *echo = requests("echo");
    assert_int_equal(json_array_size(echo), 2);
    for (size_t i = 0; i < 2; i++)
        assert_string_equal(json_string_value(json_object_get(
                                json_array_get(echo, i), "idempotency_key")),
                            id);
    json_decref(echo);
    free(id);
}

static void http_stage_fails_a_client_error_at_once(void **state) {
    (void)state;
    fake_faults(&env.fake, "echo", "[\"422\"]");
    char *id = insert("INSERT INTO webhook_jobs (event) VALUES ('bad') "
                      "RETURNING id",
                      NULL);
    assert_int_equal(cloud_run(&env, 30), SL_EXIT_JOB_FAILED);
    Q("SELECT status::text || '/' || attempts || '/' || error_class FROM "
      "webhook_jobs WHERE id = $1",
      id, "error/1/http_4xx");
    Q("SELECT last_error LIKE '%POST %/echo: HTTP 422%' FROM webhook_jobs "
      "WHERE id = $1",
      id, "t");
    free(id);
}

/* ---- llm.analyze hooks ------------------------------------------------------ */

static void analysis_hooks_replace_chunking_prompts_and_results(
    void **state) {
    (void)state;
    const char *p[1] = {env.account};
    PGresult *r = PQexecParams(env.c,
                               "INSERT INTO interviews (account_id) VALUES "
                               "($1) RETURNING id",
                               1, NULL, p, NULL, NULL, 0);
    char *iv = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *p2[2] = {iv, CLOUD_MEDIA};
    PQclear(PQexecParams(env.c,
                         "INSERT INTO hooked_analysis_jobs (interview_id, "
                         "transcript) VALUES ($1, $2)",
                         2, NULL, p2, NULL, NULL, 0));
    assert_int_equal(cloud_run(&env, 30), 0);
    Q("SELECT status::text FROM interviews WHERE id = $1", iv, "ready");
    /* Five participant lines: five chunks, each sent once with the hook's
     * prompt. */
    json_t *s = fake_stats(&env.fake);
    json_t *byc = json_object_get(s, "chat_by_chunk");
    assert_int_equal(json_object_size(byc), 5);
    assert_int_equal(json_integer_value(json_object_get(byc, "3/5")), 1);
    json_decref(s);
    json_t *chats = requests("chat");
    assert_string_equal(user_content(json_array_get(chats, 0)),
                        "Custom prompt, Chunk 1/5:\nDana: Honestly it is "
                        "frustrating, the export is slow and I redo it by "
                        "hand.");
    json_decref(chats);
    /* The post hook dropped the praise. */
    Q("SELECT string_agg(kind, ',' ORDER BY chunk, seq) FROM insights WHERE "
      "interview_id = $1",
      iv, "pain_point,wish,pain_point,wish");
    Q("SELECT count(*) FROM personas WHERE interview_id = $1", iv, "2");
    free(iv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup(f, reset)
        T(generate_writes_the_reply_text_into_result),
        T(generate_sends_a_payload_without_prompt_as_json),
        T(generate_with_schema_and_hooks_stores_the_hooked_json),
        T(generate_without_payload_fails_at_once),
        T(generate_retries_a_reply_that_breaks_the_schema),
        T(http_stage_posts_the_job_input_with_headers),
        T(http_stage_retries_a_server_error),
        T(http_stage_resends_a_lost_answer_with_the_same_idempotency_key),
        T(http_stage_fails_a_client_error_at_once),
        T(analysis_hooks_replace_chunking_prompts_and_results),
#undef T
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
