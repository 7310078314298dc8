/* llm_generate.c - handler "llm.generate": one completion per job, for
 * queues such as generation_jobs (docs/stages.md).
 *
 * payload (jsonb) -> messages (default prompt, or the Lua hook `prompt`)
 * -> chat completion -> the Lua hook `post` (optional) -> output `result`
 * (jsonb). With with.schema the model must answer JSON matching it and
 * `result` is that JSON; without, `result` is {"text": "<reply>"}. Errors
 * are classified as in llm.h: a reply cut short, a refusal or one that
 * does not match the schema is invalid_response.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http.h"
#include "llm.h"
#include "lua_host.h"
#include "handler.h"

static const char DEFAULT_SYSTEM[] =
    "You generate content for a product team from the parameters you are "
    "given. Follow the instructions in the parameters; be concrete and "
    "concise; use only facts present in the parameters.";

typedef struct gen_cfg {
    sl_llm_cfg llm;
    const char *payload_column, *result_column, *system_prompt, *schema_name;
    const json_t *schema; /* borrowed from `with`, may be NULL */
} gen_cfg;

typedef struct gen_state {
    sl_http *h;
    sl_lua *L; /* NULL without hooks */
} gen_state;

static int gen_config(const json_t *with, gen_cfg *c, char *err,
                      size_t errlen) {
    memset(c, 0, sizeof *c);
    if (sl_llm_cfg_from_with(with, &c->llm, err, errlen) != 0) return -1;
    static const char *const strings[] = {"payload_column", "result_column",
                                          "system_prompt", "schema_name", NULL};
    if (sl_with_strings(with, strings, err, errlen) != 0) return -1;
    c->payload_column = sl_with_str(with, "payload_column", "payload");
    c->result_column = sl_with_str(with, "result_column", "result");
    c->system_prompt = sl_with_str(with, "system_prompt", DEFAULT_SYSTEM);
    c->schema_name = sl_with_str(with, "schema_name", "generation");
    c->schema = json_object_get(with, "schema");
    if (c->schema && !json_is_object(c->schema)) {
        snprintf(err, errlen, "with.schema: expected a JSON Schema mapping");
        return -1;
    }
    return 0;
}

static int gen_validate(const sl_stage *stage, char *err, size_t errlen) {
    gen_cfg c;
    if (gen_config(stage->with, &c, err, errlen) != 0) return -1;
    if (stage->nhooks && sl_lua_check(stage, err, errlen) != 0) return -1;
    return 0;
}

static void gen_fini(void *state) {
    gen_state *st = state;
    if (!st) return;
    sl_http_free(st->h);
    sl_lua_close(st->L);
    free(st);
}

static int gen_init(const sl_stage *stage, void **state, char *err,
                    size_t errlen) {
    gen_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (sl_http_new(&st->h, err, errlen) != 0 ||
        (stage->nhooks && sl_lua_open(stage, &st->L, err, errlen) != 0)) {
        gen_fini(st);
        return -1;
    }
    *state = st;
    return 0;
}

/* The user message: payload.prompt when it is a string, else the payload
 * itself as JSON. */
static json_t *default_messages(const gen_cfg *c, const json_t *payload) {
    const char *prompt = json_string_value(json_object_get(payload, "prompt"));
    char *dump = NULL, *user = NULL;
    json_t *m = NULL;
    if (!prompt) {
        dump = json_dumps(payload, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (!dump) return NULL;
        const char *head = "Generate the content these parameters "
                           "describe:\n\n";
        user = malloc(strlen(head) + strlen(dump) + 1);
        if (user) {
            strcpy(user, head);
            strcat(user, dump);
        }
        prompt = user;
    }
    if (prompt)
        m = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content",
                      c->system_prompt, "role", "user", "content", prompt);
    free(user);
    free(dump);
    return m;
}

static json_t *messages(gen_state *st, const gen_cfg *c, sl_ctx *ctx,
                        const sl_job *job, const json_t *payload,
                        sl_result *res) {
    if (!st->L || !sl_lua_has(st->L, "prompt")) {
        json_t *m = default_messages(c, payload);
        if (!m) sl_fail(res, SL_EC_RETRYABLE, "llm.generate: out of memory");
        return m;
    }
    json_t *args = json_pack("[O, O]", (json_t *)payload, job->stage->with);
    json_t *ret = NULL;
    int rc = sl_lua_call(st->L, "prompt", ctx, job, args, &ret, res);
    json_decref(args);
    if (rc != 0) return NULL;
    return sl_llm_hook_messages(ret, c->system_prompt, res);
}

static void gen_run(sl_ctx *ctx, const sl_job *job, void *state,
                    sl_result *res) {
    gen_state *st = state;
    gen_cfg c;
    char err[512];
    json_t *msgs = NULL, *reply = NULL, *result = NULL;
    if (gen_config(job->stage->with, &c, err, sizeof err) != 0) {
        sl_fail(res, SL_EC_INVALID_INPUT, "llm.generate: %s", err);
        return;
    }
    json_t *payload = json_object_get(job->input, c.payload_column);
    if (!payload || json_is_null(payload)) {
        sl_fail(res, SL_EC_INVALID_INPUT, "llm.generate: the job has no %s",
                c.payload_column);
        return;
    }
    msgs = messages(st, &c, ctx, job, payload, res);
    if (!msgs) goto out;
    sl_ctx_progress(ctx, 10, "Generating");
    if (sl_llm_chat(st->h, &c.llm, msgs, c.schema, c.schema_name, &reply,
                    sl_http_stop_check, ctx, res) != 0)
        goto out;
    result = c.schema ? json_incref(reply) : json_pack("{s:O}", "text", reply);
    if (st->L && sl_lua_has(st->L, "post")) {
        json_t *args = json_pack("[O, O]", result, (json_t *)payload);
        json_t *ret = NULL;
        int rc = sl_lua_call(st->L, "post", ctx, job, args, &ret, res);
        json_decref(args);
        if (rc != 0) goto out;
        if (ret) {
            json_decref(result);
            result = ret;
        }
    }
    sl_done(res, json_pack("{s:O}", c.result_column, result));
out:
    json_decref(result);
    json_decref(reply);
    json_decref(msgs);
}

const sl_handler sl_handler_llm_generate = {"llm.generate", gen_validate,
                                            gen_init, gen_fini, gen_run};
