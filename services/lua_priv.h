/* lua_priv.h - internals shared by the Lua host (lua_host.c) and the
 * `sluice` API it installs (lua_api.c). Nothing outside these two files
 * includes it. */
#ifndef SL_LUA_PRIV_H
#define SL_LUA_PRIV_H

#include <jansson.h>
#include <lauxlib.h>
#include <libpq-fe.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "lua_host.h"

/* The per-state bookkeeping. The lua_State's extra space holds a pointer
 * back to it (sl_lua__host). */
struct sl_lua {
    lua_State *L;
    const sl_stage *stage;
    /* Memory accounting (the allocator). mem_limit 0 = unlimited. */
    size_t mem_used, mem_limit;
    int mem_exceeded;
    /* The instruction budget (the count hook). insn_limit 0 = unlimited. */
    int64_t insn_limit, insn_used;
    int insn_exceeded;
    unsigned ticks;
    int stopped;
    /* The job being served, valid during sl_lua_call only. */
    sl_ctx *ctx;
    const sl_job *job;
    const char *point;
    json_t *checkpoint;   /* owned: the job's checkpoint or the last one set */
    PGconn *conn;         /* sl_lua_set_conn; used when ctx is NULL */
    struct sl_http *http; /* sluice.llm's client, created on first use */
    struct sl_http *http_req; /* sluice.http.request's, on first use */
    PGconn *sqlconn;      /* sluice.sql's own connection (lua_sql.c) */
    size_t sql_bytes;     /* bytes read on it since it was opened */
};

/* Registry keys (their addresses are the keys). */
extern const char sl_lua__key_null;     /* the sluice.json.null sentinel */
extern const char sl_lua__key_array_mt; /* metatable marking JSON arrays */
extern const char sl_lua__key_error_mt; /* metatable of sluice errors */
extern const char sl_lua__key_box_mt;   /* metatable of sl_lua__box */

/* The host of a Lua state. */
sl_lua *sl_lua__host(lua_State *L);

/* Raises an engine error carrying an error class (a table with metatable
 * key_error_mt and fields class, message, delay_ms). Never returns. */
int sl_lua__raise(lua_State *L, sl_errclass cls, int64_t delay_ms,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Pushes the Lua value of JSON v (borrowed). Raises only on memory
 * exhaustion. */
void sl_lua__push_json(lua_State *L, json_t *v);

/* Converts the Lua value at idx to new JSON, or returns NULL with a reason
 * in err. nil gives JSON null. Never raises. */
json_t *sl_lua__to_json(lua_State *L, int idx, char *err, size_t errlen);

/* A userdata that frees what it holds when collected, so C resources stay
 * owned while Lua calls that may raise run. Fields may be set and cleared
 * freely; sl_lua__box_free releases them at once. */
typedef struct sl_lua__box {
    PGresult *res;
    json_t *json;
    char *str;
} sl_lua__box;

sl_lua__box *sl_lua__box_new(lua_State *L); /* pushes it */
void sl_lua__box_free(sl_lua__box *b);

/* Pushes the JSON text of the value at idx (a table, string, number...)
 * and returns it; raises with `who` in the message when it has no JSON
 * form (lua_api.c). */
const char *sl_lua__push_encoded(lua_State *L, int idx, size_t flags,
                                 const char *who);

/* lua_sql.c: sluice.sql.query; closing the hook's own connection; the end
 * of a call (a connection not left idle is closed). */
int sl_lua__sql_query(lua_State *L);
void sl_lua__sql_close(sl_lua *h);
void sl_lua__sql_end_call(sl_lua *h);

/* Installs the global table `sluice` (lua_api.c). Runs in protected mode
 * during sl_lua_open. */
void sl_lua__open_api(lua_State *L);

/* Frees what the API keeps per state (the HTTP client). */
void sl_lua__close_api(sl_lua *h);

/* Adds n to the instruction count of the current call; raises
 * "instruction limit exceeded" when the budget is spent, or the stop error
 * when the job must stop (what the count hook does every 1000 VM
 * instructions). For loops that run in C. */
void sl_lua__charge(lua_State *L, int64_t n);

/* Replaces string.find, match, gmatch and gsub in the string table at
 * strtab by the step-counted copies of lua_match.c. */
void sl_lua__open_match(lua_State *L, int strtab);

/* lua_guard.c: installs the sandbox's pcall, xpcall, setmetatable (no
 * __gc) and the charged table functions and pattern matching into the
 * global table. */
void sl_lua__guard_install(lua_State *L);

/* lua_guard.c: records the global table, the tables it holds two levels
 * down and the string metatable as they are now (once, after the sandbox
 * is built); sl_lua__snapshot_add records one more table (a hook file's
 * environment, the JSON array metatable). sl_lua__restore puts every
 * recorded table's fields and metatable back: called at the start of
 * every hook call, in protected mode (it may allocate). */
void sl_lua__snapshot_libs(lua_State *L);
void sl_lua__snapshot_add(lua_State *L, int idx);
void sl_lua__restore(lua_State *L);

/* The message handler used for every call: adds a traceback. */
int sl_lua__msgh(lua_State *L);

#endif
