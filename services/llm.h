/* llm.h - one chat completion against an OpenAI-compatible server.
 *
 * Shared by the llm.analyze and llm.generate stages and by sluice.llm.chat
 * in Lua. The configuration comes from a stage's `with:` (docs/stages.md):
 *   base_url     default https://api.openai.com; "/v1/chat/completions" is
 *                appended ("/chat/completions" when base_url already ends
 *                in /v1), so OPENAI_BASE_URL in either spelling works
 *   model        required
 *   api_key_env  the environment variable holding the key (default
 *                OPENAI_API_KEY); unset: no Authorization header (local
 *                servers). The key itself is never written in YAML.
 *   temperature  optional; omitted from the request when not set (some
 *                models reject it)
 *   max_tokens   optional
 *   response_format  json_schema (default when a schema is given) or
 *                json_object (servers without structured outputs; the
 *                reply is still validated against the schema here)
 *   connect_timeout, request_timeout (default 120s), low_speed_time,
 *   max_response as in http.h
 *
 * A reply is a failure of class invalid_response when finish_reason is
 * "length" (cut short) or "content_filter", when the message carries a
 * refusal, when there is no content, or, with a schema, when the content is
 * not JSON or does not validate against the schema. HTTP failures are
 * classified by http.h (429 honours retry-after-ms, then Retry-After).
 */
#ifndef SL_LLM_H
#define SL_LLM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "handler.h"
#include "http.h"

typedef struct sl_llm_cfg {
    char url[512];       /* the chat completions URL */
    const char *model;   /* borrowed from `with` */
    const char *api_key; /* borrowed from the environment; may be NULL */
    int has_temperature;
    double temperature;
    long max_tokens;    /* 0 = not sent */
    int json_object;    /* response_format json_object instead of
                           json_schema */
    sl_http_req limits; /* timeouts and size cap (only those fields) */
} sl_llm_cfg;

/* Reads cfg from a stage's `with:` (which must outlive cfg). Returns 0 or
 * -SL_EINVAL with a message naming the offending key. */
int sl_llm_cfg_from_with(const json_t *with, sl_llm_cfg *cfg, char *err,
                         size_t errlen);

/* Sends messages (a JSON array of {role, content}, borrowed) to the chat
 * completions endpoint. With schema (a JSON Schema object, borrowed;
 * schema_name names it in the request) the reply must be JSON that
 * validates against it and *out is that JSON; without, *out is the reply
 * text as a JSON string. *out is a new reference owned by the caller.
 * progress (optional) is called during the transfer and aborts it when it
 * returns non-zero (pass one that checks sl_ctx_should_stop).
 * Returns 0, or a negative SL_E code with res filled (outcome FAIL). */
int sl_llm_chat(sl_http *h, const sl_llm_cfg *cfg, const json_t *messages,
                const json_t *schema, const char *schema_name, json_t **out,
                sl_http_progress_fn progress, void *progress_arg,
                sl_result *res);

/* The messages a Lua `prompt` hook returned (ret, stolen): a string is
 * the user message after a system message with system_prompt; a list of
 * {role, content} is used as it is. Returns the messages (a new
 * reference), or NULL with res filled (class script) for anything else. */
json_t *sl_llm_hook_messages(json_t *ret, const char *system_prompt,
                             sl_result *res);

/* Validates v against the subset of JSON Schema that structured outputs
 * use: type (a name or a list of names), properties, required,
 * additionalProperties (false), items, enum, minItems, maxItems,
 * minimum, maximum. Returns 0, or -SL_EINVAL with the failing path and
 * reason in err ("$.insights[2].kind: expected one of ..."). */
int sl_llm_validate(const json_t *schema, const json_t *v, char *err,
                    size_t errlen);

#endif
