/* lua_api.c - the `sluice` table that hooks call (docs/lua.md).
 *
 * Every function here runs inside a protected call made by the host. C
 * resources that must survive a Lua allocation (which may raise) are held
 * in a box (sl_lua__box) that the collector frees if we never get to.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "error.h"
#include "http.h"
#include "llm.h"
#include "log.h"
#include "lua_priv.h"
#include "text.h"

/* ------------------------------------------------------------------ */
/* sluice.json                                                        */
/* ------------------------------------------------------------------ */

const char *sl_lua__push_encoded(lua_State *L, int idx, size_t flags,
                                 const char *who) {
    idx = lua_absindex(L, idx);
    sl_lua__box *b = sl_lua__box_new(L);
    char err[256];
    b->json = sl_lua__to_json(L, idx, err, sizeof err);
    if (!b->json) return (luaL_error(L, "%s: %s", who, err), NULL);
    b->str = json_dumps(b->json, flags | JSON_ENCODE_ANY);
    if (!b->str) return (luaL_error(L, "%s: out of memory", who), NULL);
    lua_pushstring(L, b->str);
    sl_lua__box_free(b);
    lua_remove(L, -2);
    return lua_tostring(L, -1);
}

/* sluice.json.encode(value [, {pretty = true}]) -> string */
static int json_encode(lua_State *L) {
    luaL_checkany(L, 1);
    size_t flags = JSON_COMPACT | JSON_SORT_KEYS;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "pretty");
        if (lua_toboolean(L, -1)) flags = JSON_INDENT(2) | JSON_SORT_KEYS;
        lua_pop(L, 1);
    }
    sl_lua__push_encoded(L, 1, flags, "sluice.json.encode");
    return 1;
}

/* sluice.json.decode(text) -> value; raises on malformed JSON. */
static int json_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    sl_lua__box *b = sl_lua__box_new(L);
    json_error_t je;
    b->json = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!b->json)
        return luaL_error(L, "sluice.json.decode: %s (line %d, column %d)",
                          je.text, je.line, je.column);
    sl_lua__push_json(L, b->json);
    sl_lua__box_free(b);
    return 1;
}

/* sluice.json.array([t]) -> t marked as a JSON array (so {} encodes as
 * [] and a sparse table is not taken for an object). */
static int json_array_mark(lua_State *L) {
    if (lua_isnoneornil(L, 1)) lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_array_mt);
    lua_setmetatable(L, 1);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Log, progress, checkpoint, retry                                   */
/* ------------------------------------------------------------------ */

static const char *job_id(sl_lua *h) {
    return h->job && h->job->id ? h->job->id : "";
}

/* The string argument at idx made safe (text.h) into buf (cap bytes): a
 * NUL byte or invalid UTF-8 replaced, cut between characters. */
static const char *safe_arg(lua_State *L, int idx, char *buf, size_t cap) {
    size_t len;
    const char *s = luaL_checklstring(L, idx, &len);
    sl_text_copy(buf, cap, s, len);
    return buf;
}

/* sluice.log(level, message [, fields]): fields keep their types in JSON
 * lines (numbers, booleans); a table is written as its JSON text. */
static int api_log(lua_State *L) {
    static const char *const names[] = {"debug", "info", "warn", "error", NULL};
    int level = luaL_checkoption(L, 1, NULL, names);
    char msg[2048];
    safe_arg(L, 2, msg, sizeof msg);
    sl_lua *h = sl_lua__host(L);
    lua_settop(L, 3);
    /* The fields live in a box: a Lua error below frees them. */
    sl_lua__box *b = sl_lua__box_new(L);
    b->json = json_object();
    if (!b->json) return luaL_error(L, "sluice.log: out of memory");
    json_object_set_new(
        b->json, "stage",
        json_string(h->stage && h->stage->name ? h->stage->name : ""));
    json_object_set_new(b->json, "job", json_string(job_id(h)));
    json_object_set_new(b->json, "hook", json_string(h->point ? h->point : ""));
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        luaL_checkstack(L, 8, "sluice.log");
        int n = 0;
        lua_pushnil(L);
        while (n < 16 && lua_next(L, 3) != 0) {
            int top = lua_gettop(L); /* key at top-1, value at top */
            if (lua_type(L, top - 1) != LUA_TSTRING) {
                lua_pop(L, 1);
                continue;
            }
            size_t kl, vl;
            const char *k = lua_tolstring(L, top - 1, &kl);
            json_t *v = NULL;
            char *text = NULL;
            switch (lua_type(L, top)) {
            case LUA_TBOOLEAN: v = json_boolean(lua_toboolean(L, top)); break;
            case LUA_TNUMBER:
                if (lua_isinteger(L, top))
                    v = json_integer((json_int_t)lua_tointeger(L, top));
                else if (isfinite(lua_tonumber(L, top)))
                    v = json_real(lua_tonumber(L, top));
                break;
            case LUA_TTABLE: {
                /* Its JSON text; a table without one (invalid UTF-8, a
                 * function) is logged with the reason, not an error. */
                char e[160] = "(no JSON form)";
                sl_lua__box *tb = sl_lua__box_new(L);
                tb->json = sl_lua__to_json(L, top, e, sizeof e);
                tb->str = tb->json ? json_dumps(tb->json, JSON_COMPACT |
                                                              JSON_SORT_KEYS |
                                                              JSON_ENCODE_ANY)
                                   : NULL;
                if (tb->str)
                    text = sl_text_dup(tb->str, strlen(tb->str), 0);
                else
                    text = sl_text_dup(e, strlen(e), 0);
                sl_lua__box_free(tb);
                lua_pop(L, 1);
                break;
            }
            default: break;
            }
            if (!v && !text) {
                const char *t = luaL_tolstring(L, top, &vl);
                text = sl_text_dup(t, vl, 0);
                lua_pop(L, 1);
            }
            if (text) v = json_string_nocheck(text);
            free(text);
            char *key = sl_text_dup(k, kl, 0);
            if (key && v)
                json_object_set_new_nocheck(b->json, key, v);
            else
                json_decref(v);
            free(key);
            n++;
            lua_settop(L, top - 1); /* the key goes back to lua_next */
        }
    }
    sl_log_fields(level, msg, b->json);
    sl_lua__box_free(b);
    return 0;
}

static sl_ctx *need_ctx(lua_State *L, const char *who) {
    sl_lua *h = sl_lua__host(L);
    if (!h->ctx)
        luaL_error(L, "%s: not inside a job (no job context in this call)",
                   who);
    return h->ctx;
}

/* sluice.progress(pct [, detail]) */
static int api_progress(lua_State *L) {
    lua_Number pct = luaL_checknumber(L, 1);
    char buf[1024];
    const char *detail =
        lua_isnoneornil(L, 2) ? NULL : safe_arg(L, 2, buf, sizeof buf);
    sl_ctx *ctx = need_ctx(L, "sluice.progress");
    if (!(pct >= 0)) pct = 0; /* also NaN */
    if (pct > 100) pct = 100;
    sl_ctx_progress(ctx, (int)pct, detail);
    return 0;
}

/* sluice.checkpoint.get() -> the saved checkpoint or nil */
static int api_checkpoint_get(lua_State *L) {
    sl_lua *h = sl_lua__host(L);
    if (!h->job && !h->ctx)
        return luaL_error(L, "sluice.checkpoint.get: not inside a job (no "
                             "job context in this call)");
    sl_lua__push_json(L, h->checkpoint);
    return 1;
}

/* sluice.checkpoint.set(value): saves it at once (committed). */
static int api_checkpoint_set(lua_State *L) {
    luaL_checkany(L, 1);
    sl_ctx *ctx = need_ctx(L, "sluice.checkpoint.set");
    sl_lua *h = sl_lua__host(L);
    char err[256];
    json_t *j = sl_lua__to_json(L, 1, err, sizeof err);
    if (!j) return luaL_error(L, "sluice.checkpoint.set: %s", err);
    int rc = sl_ctx_checkpoint(ctx, j);
    if (rc == -SL_ELEASE) {
        json_decref(j);
        return sl_lua__raise(L, SL_EC_LEASE_EXPIRED, 0,
                             "sluice.checkpoint.set: the lease was lost "
                             "(another worker owns the job now)");
    }
    if (rc < 0) {
        json_decref(j);
        return sl_lua__raise(L, SL_EC_CONNECTION, 0,
                             "sluice.checkpoint.set: could not save the "
                             "checkpoint: %s",
                             sl_strerror(rc));
    }
    json_decref(h->checkpoint);
    h->checkpoint = j;
    return 0;
}

/* sluice.retry(message [, delay_seconds]): fails the job with class
 * `retryable`, to run again after the delay (or the policy's backoff). */
static int api_retry(lua_State *L) {
    char buf[1024];
    const char *msg = lua_isnoneornil(L, 1) ? "retry requested by the hook"
                                            : safe_arg(L, 1, buf, sizeof buf);
    lua_Number delay = luaL_optnumber(L, 2, 0);
    if (!(delay >= 0)) delay = 0;
    if (delay > 86400.0 * 365) delay = 86400.0 * 365;
    return sl_lua__raise(L, SL_EC_RETRYABLE, (int64_t)(delay * 1000.0), "%s",
                         msg);
}

/* sluice.fail(message [, class]): fails the job with an error class
 * (default `script`); the stage's retry policy decides what follows. */
static int api_fail(lua_State *L) {
    char buf[1024];
    const char *msg = safe_arg(L, 1, buf, sizeof buf);
    const char *name = luaL_optstring(L, 2, "script");
    int cls = sl_errclass_parse(name);
    if (cls < 0)
        return luaL_error(L, "sluice.fail: unknown error class '%s'", name);
    return sl_lua__raise(L, (sl_errclass)cls, 0, "%s", msg);
}

/* sluice.should_stop() -> true when the job should return soon. */
static int api_should_stop(lua_State *L) {
    sl_lua *h = sl_lua__host(L);
    lua_pushboolean(L, h->ctx && sl_ctx_should_stop(h->ctx));
    return 1;
}

/* sluice.job() -> the job table (as run(job) receives it) or nil. */
static int api_job(lua_State *L) {
    sl_lua *h = sl_lua__host(L);
    if (!h->job) {
        lua_pushnil(L);
        return 1;
    }
    sl_lua__box *b = sl_lua__box_new(L);
    b->json = sl_lua_job_json(h->job);
    if (!b->json) return luaL_error(L, "sluice.job: out of memory");
    if (h->checkpoint) json_object_set(b->json, "checkpoint", h->checkpoint);
    sl_lua__push_json(L, b->json);
    sl_lua__box_free(b);
    return 1;
}

/* sluice.config() -> the stage's `with:` table. */
static int api_config(lua_State *L) {
    sl_lua *h = sl_lua__host(L);
    if (h->stage && h->stage->with)
        sl_lua__push_json(L, h->stage->with);
    else
        lua_newtable(L);
    return 1;
}

/* ------------------------------------------------------------------ */
/* sluice.http                                                        */
/* ------------------------------------------------------------------ */

static int http_progress(void *arg, int64_t sent, int64_t total) {
    (void)sent;
    (void)total;
    sl_lua *h = arg;
    return h->ctx && sl_ctx_should_stop(h->ctx);
}

/* The client of sluice.llm (h->http) or of sluice.http.request
 * (h->http_req: its own, so that it never reuses a connection that the
 * LLM client opened to a configured private endpoint). */
static sl_http *need_http(lua_State *L, sl_http **client) {
    if (!*client) {
        char err[256];
        if (sl_http_new(client, err, sizeof err) != 0)
            luaL_error(L, "sluice.http.request: %s", err);
    }
    return *client;
}

/* Whether url starts with prefix at a boundary (the prefix ends with '/',
 * or the URL goes on with '/', '?', '#' or ends), so that
 * "https://api.example.com" does not admit "https://api.example.com.evil"
 * or "https://api.example.com@evil". */
static int url_under(const char *url, const char *prefix) {
    size_t n = strlen(prefix);
    if (n == 0 || strncmp(url, prefix, n) != 0) return 0;
    char next = url[n];
    return prefix[n - 1] == '/' || next == '\0' || next == '/' || next == '?' ||
           next == '#';
}

/* auth = ... sends the key only to the stage's base_url or a URL under one
 * of with.http_auth_urls. */
static int auth_url_allowed(const json_t *with, const char *url) {
    const json_t *base = json_object_get(with, "base_url");
    if (json_is_string(base) && url_under(url, json_string_value(base)))
        return 1;
    const json_t *list = json_object_get(with, "http_auth_urls");
    size_t i;
    const json_t *v;
    json_array_foreach(list, i,
                       v) if (json_is_string(v) &&
                              url_under(url, json_string_value(v))) return 1;
    return 0;
}

static int64_t opt_ms(lua_State *L, int t, const char *field) {
    int64_t ms = 0;
    if (lua_getfield(L, t, field) != LUA_TNIL) {
        lua_Number sec = lua_tonumber(L, -1);
        if (!(sec > 0) || sec > 86400)
            luaL_error(L,
                       "sluice.http.request: %s must be seconds in "
                       "(0, 86400]",
                       field);
        ms = (int64_t)(sec * 1000.0);
    }
    lua_pop(L, 1);
    return ms;
}

/* The Authorization header of auth = "bearer" | "raw" (the value at the
 * top of the stack): the key named by the stage's with.api_key_env, added
 * here so that Lua never sees it, and only for a URL the stage allows
 * (auth_url_allowed). The line is held by a box pushed on the stack. */
static const char *auth_header(lua_State *L, sl_lua *h, const char *url) {
    const char *scheme = luaL_checkstring(L, -1);
    int bearer = strcmp(scheme, "bearer") == 0;
    if (!bearer && strcmp(scheme, "raw") != 0)
        luaL_error(L, "sluice.http.request: auth is \"bearer\" or \"raw\"");
    const json_t *with = h->stage ? h->stage->with : NULL;
    const char *key = NULL;
    char err[256];
    if (!auth_url_allowed(with, url))
        luaL_error(L, "sluice.http.request: auth refused for this URL: the "
                      "key is only sent to the stage's with.base_url or a "
                      "URL under with.http_auth_urls");
    if (!json_is_string(json_object_get(with, "api_key_env")))
        luaL_error(L, "sluice.http.request: auth needs with.api_key_env on "
                      "the stage (the environment variable holding the key)");
    if (sl_with_key(with, "", &key, err, sizeof err) != 0)
        luaL_error(L, "sluice.http.request: %s", err);
    if (!key)
        luaL_error(L,
                   "sluice.http.request: the environment variable %s is not "
                   "set",
                   json_string_value(json_object_get(with, "api_key_env")));
    sl_lua__box *kb = sl_lua__box_new(L);
    size_t kl = strlen(key) + 32;
    kb->str = malloc(kl);
    if (!kb->str) luaL_error(L, "sluice.http.request: out of memory");
    snprintf(kb->str, kl, "Authorization: %s%s", bearer ? "Bearer " : "", key);
    return kb->str;
}

/* Pushes the answer table of sluice.http.request: status, body,
 * content_type, retry_after, and for a failure kept (errors = "return")
 * error and class; json when the body is JSON. b holds the body. */
static void push_response(lua_State *L, sl_lua__box *b,
                          const sl_http_resp *resp, int rc,
                          const sl_result *res) {
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, resp->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, b->str ? b->str : "", b->str ? resp->body_len : 0);
    lua_setfield(L, -2, "body");
    lua_pushstring(L, resp->content_type);
    lua_setfield(L, -2, "content_type");
    if (resp->retry_after_ms >= 0) {
        lua_pushnumber(L, (lua_Number)resp->retry_after_ms / 1000.0);
        lua_setfield(L, -2, "retry_after");
    }
    if (rc != 0) {
        lua_pushstring(L, res->message);
        lua_setfield(L, -2, "error");
        lua_pushstring(L, sl_errclass_name(res->errclass));
        lua_setfield(L, -2, "class");
    }
    if (b->str && strstr(resp->content_type, "json")) {
        json_error_t je;
        b->json = json_loadb(b->str, resp->body_len, JSON_DECODE_ANY, &je);
        if (b->json) {
            sl_lua__push_json(L, b->json);
            lua_setfield(L, -2, "json");
        }
    }
}

/* sluice.http.request{method, url, headers, body, timeout, ...} -> response
 *
 * Goes through the engine's HTTP client (engine/http.h): its timeouts,
 * size cap and error classes. A failed transfer or a non-2xx status raises
 * an error of the class http.h assigns (so the stage's retry policy
 * applies) unless `errors = "return"`, which returns the response of a
 * non-2xx status instead (transport failures still raise). The response
 * is {status, body, content_type, json (when the body is JSON), error,
 * class (on a non-2xx status)}. */
static int http_request(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    sl_lua *h = sl_lua__host(L);
    sl_http_req req;
    memset(&req, 0, sizeof req);
    req.what = "sluice.http.request";
    req.provider = "lua";

    lua_getfield(L, 1, "url"); /* 2 */
    req.url = lua_tostring(L, 2);
    if (!req.url) return luaL_error(L, "sluice.http.request: url is required");
    lua_getfield(L, 1, "method"); /* 3 */
    req.method = lua_isnil(L, 3) ? "GET" : luaL_checkstring(L, 3);

    /* The body: a string as is, a table as JSON. */
    int json_body = 0;
    lua_getfield(L, 1, "body"); /* 4 */
    if (lua_istable(L, 4)) {
        sl_lua__push_encoded(L, 4, JSON_COMPACT, "sluice.http.request: body");
        lua_replace(L, 4);
        json_body = 1;
    }
    if (!lua_isnil(L, 4)) {
        size_t n;
        req.body = luaL_checklstring(L, 4, &n);
        req.body_len = n;
    }

    /* Headers: {["Name"] = "value"} or {"Name: value", ...}. */
    lua_getfield(L, 1, "headers");                                    /* 5 */
    const char **hdrs = lua_newuserdatauv(L, sizeof(char *) * 66, 0); /* 6 */
    int nh = 0, has_ct = 0;
    if (lua_istable(L, 5)) {
        lua_pushnil(L);
        while (lua_next(L, 5) != 0) {
            if (nh >= 64)
                return luaL_error(L, "sluice.http.request: too many headers");
            int top = lua_gettop(L); /* key at top - 1, value at top */
            const char *line;
            if (lua_type(L, top - 1) == LUA_TSTRING) {
                const char *v = luaL_tolstring(L, top, NULL);
                line =
                    lua_pushfstring(L, "%s: %s", lua_tostring(L, top - 1), v);
                lua_remove(L, top + 1);
            } else {
                line = luaL_tolstring(L, top, NULL);
            }
            /* key, value, line -> line, key: the line stays referenced
             * below the key that lua_next needs. */
            lua_rotate(L, top - 1, 1);
            lua_pop(L, 1);
            if (strchr(line, '\r') || strchr(line, '\n'))
                return luaL_error(L, "sluice.http.request: a header contains "
                                     "a line break");
            if (strncasecmp(line, "content-type:", 13) == 0) has_ct = 1;
            hdrs[nh++] = line;
        }
    }
    if (json_body && !has_ct) hdrs[nh++] = "Content-Type: application/json";
    /* auth = "bearer" | "raw": the key named by the stage's
     * with.api_key_env, added here so that Lua never sees it. */
    lua_getfield(L, 1, "auth");
    if (!lua_isnil(L, -1)) hdrs[nh++] = auth_header(L, h, req.url);
    hdrs[nh] = NULL;
    req.headers = hdrs;

    req.timeout_ms = opt_ms(L, 1, "timeout");
    req.connect_timeout_ms = opt_ms(L, 1, "connect_timeout");
    lua_getfield(L, 1, "max_bytes");
    if (!lua_isnil(L, -1)) {
        lua_Integer mb = luaL_checkinteger(L, -1);
        req.max_response = mb > 0 ? (size_t)mb : 1;
    }
    lua_pop(L, 1);
    /* The body becomes a Lua string: it must fit in what is left of the
     * hook's memory limit (counted twice: the buffer and the string). */
    if (h->mem_limit > 0) {
        size_t left =
            h->mem_limit > h->mem_used ? (h->mem_limit - h->mem_used) / 2 : 1;
        if (!req.max_response || req.max_response > left)
            req.max_response = left ? left : 1;
    }
    req.public_only = !json_is_true(
        json_object_get(h->stage ? h->stage->with : NULL, "http_private"));
    lua_getfield(L, 1, "follow_redirects");
    req.follow_redirects = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "errors");
    int return_errors =
        lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "return") == 0;
    lua_pop(L, 1);
    req.progress = http_progress;
    req.progress_arg = h;

    sl_http *client = need_http(L, &h->http_req);
    sl_lua__box *b = sl_lua__box_new(L);
    sl_http_resp resp;
    memset(&resp, 0, sizeof resp);
    sl_result res;
    memset(&res, 0, sizeof res);
    int rc = sl_http_do(client, &req, &resp, &res);
    /* The box owns the body from here on. */
    b->str = resp.body;
    resp.body = NULL;
    if (rc != 0 && !(return_errors && resp.status >= 300)) {
        sl_lua__box_free(b);
        sl_http_resp_clear(&resp);
        return sl_lua__raise(L, res.errclass, res.delay_ms, "%s", res.message);
    }
    push_response(L, b, &resp, rc, &res);
    sl_lua__box_free(b);
    sl_http_resp_clear(&resp);
    return 1;
}

/* ------------------------------------------------------------------ */
/* sluice.llm                                                         */
/* ------------------------------------------------------------------ */

/* Call options that may override the stage's `with:`. The endpoint and the
 * key (base_url, api_key_env) come from YAML only. */
static const char *const llm_overrides[] = {
    "model",           "temperature",     "max_tokens",
    "response_format", "request_timeout", NULL};

/* sluice.llm.chat{messages = {...} [, schema = {...}, schema_name = "x",
 * model = ..., temperature = ..., max_tokens = ...]} -> reply
 *
 * One chat completion through the engine's LLM client (engine/llm.h),
 * configured by the stage's `with:` (base_url, model, api_key_env, ...).
 * With a schema the reply is the validated JSON as a table; without it is
 * the reply text. Failures raise with the client's error class. */
static int llm_chat(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    sl_lua *h = sl_lua__host(L);
    char err[256];
    sl_lua__box *cfgbox = sl_lua__box_new(L); /* 2 */
    cfgbox->json = h->stage && h->stage->with ? json_deep_copy(h->stage->with)
                                              : json_object();
    if (!cfgbox->json) return luaL_error(L, "sluice.llm.chat: out of memory");
    for (int i = 0; llm_overrides[i]; i++) {
        if (lua_getfield(L, 1, llm_overrides[i]) != LUA_TNIL) {
            json_t *v = sl_lua__to_json(L, -1, err, sizeof err);
            if (!v)
                return luaL_error(L, "sluice.llm.chat: %s: %s",
                                  llm_overrides[i], err);
            json_object_set_new(cfgbox->json, llm_overrides[i], v);
        }
        lua_pop(L, 1);
    }
    sl_llm_cfg cfg;
    if (sl_llm_cfg_from_with(cfgbox->json, &cfg, err, sizeof err) != 0)
        return luaL_error(L, "sluice.llm.chat: %s", err);

    sl_lua__box *msgbox = sl_lua__box_new(L); /* 3 */
    lua_getfield(L, 1, "messages");
    msgbox->json = sl_lua__to_json(L, -1, err, sizeof err);
    lua_pop(L, 1);
    if (!msgbox->json || !json_is_array(msgbox->json) ||
        json_array_size(msgbox->json) == 0)
        return luaL_error(L,
                          "sluice.llm.chat: messages must be a non-empty "
                          "list of {role = ..., content = ...}%s%s",
                          msgbox->json ? "" : ": ", msgbox->json ? "" : err);

    sl_lua__box *schemabox = sl_lua__box_new(L); /* 4 */
    if (lua_getfield(L, 1, "schema") != LUA_TNIL) {
        schemabox->json = sl_lua__to_json(L, -1, err, sizeof err);
        if (!json_is_object(schemabox->json))
            return luaL_error(L,
                              "sluice.llm.chat: schema must be a JSON "
                              "Schema table%s%s",
                              schemabox->json ? "" : ": ",
                              schemabox->json ? "" : err);
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "schema_name");
    const char *schema_name = luaL_optstring(L, -1, "response");

    sl_http *client = need_http(L, &h->http);
    sl_lua__box *outbox = sl_lua__box_new(L);
    sl_result res;
    memset(&res, 0, sizeof res);
    int rc = sl_llm_chat(client, &cfg, msgbox->json, schemabox->json,
                         schema_name, &outbox->json, http_progress, h, &res);
    if (rc != 0)
        return sl_lua__raise(L, res.errclass, res.delay_ms, "%s", res.message);
    sl_lua__push_json(L, outbox->json);
    sl_lua__box_free(outbox);
    sl_lua__box_free(schemabox);
    sl_lua__box_free(msgbox);
    sl_lua__box_free(cfgbox);
    return 1;
}

/* sluice.llm.available() -> true when the stage's `with:` configures a
 * model and the API key's environment variable is set. */
static int llm_available(lua_State *L) {
    sl_lua *h = sl_lua__host(L);
    sl_llm_cfg cfg;
    char err[256];
    int ok = h->stage && h->stage->with &&
             sl_llm_cfg_from_with(h->stage->with, &cfg, err, sizeof err) == 0 &&
             cfg.api_key != NULL;
    lua_pushboolean(L, ok);
    return 1;
}

void sl_lua__close_api(sl_lua *h) {
    sl_http_free(h->http);
    h->http = NULL;
    sl_http_free(h->http_req);
    h->http_req = NULL;
    sl_lua__sql_close(h);
}

/* ------------------------------------------------------------------ */
/* Installation                                                       */
/* ------------------------------------------------------------------ */

static void set_funcs(lua_State *L, const luaL_Reg *fns) {
    for (; fns->name; fns++) {
        lua_pushcfunction(L, fns->func);
        lua_setfield(L, -2, fns->name);
    }
}

void sl_lua__open_api(lua_State *L) {
    static const luaL_Reg top[] = {{"log", api_log},
                                   {"progress", api_progress},
                                   {"retry", api_retry},
                                   {"fail", api_fail},
                                   {"should_stop", api_should_stop},
                                   {"job", api_job},
                                   {"config", api_config},
                                   {NULL, NULL}};
    static const luaL_Reg json[] = {{"encode", json_encode},
                                    {"decode", json_decode},
                                    {"array", json_array_mark},
                                    {NULL, NULL}};
    static const luaL_Reg checkpoint[] = {
        {"get", api_checkpoint_get}, {"set", api_checkpoint_set}, {NULL, NULL}};
    static const luaL_Reg sql[] = {{"query", sl_lua__sql_query}, {NULL, NULL}};
    static const luaL_Reg http[] = {{"request", http_request}, {NULL, NULL}};
    static const luaL_Reg llm[] = {
        {"chat", llm_chat}, {"available", llm_available}, {NULL, NULL}};

    lua_newtable(L);
    set_funcs(L, top);
    lua_newtable(L);
    set_funcs(L, json);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_null);
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "json");
    lua_newtable(L);
    set_funcs(L, checkpoint);
    lua_setfield(L, -2, "checkpoint");
    lua_newtable(L);
    set_funcs(L, sql);
    lua_setfield(L, -2, "sql");
    lua_newtable(L);
    set_funcs(L, http);
    lua_setfield(L, -2, "http");
    lua_newtable(L);
    set_funcs(L, llm);
    lua_setfield(L, -2, "llm");
    lua_setglobal(L, "sluice");
}
