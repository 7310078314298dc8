/* lua_host.h - the embedded, sandboxed Lua 5.4 host for hooks and Lua
 * stages (docs/lua.md).
 *
 * One sl_lua per worker thread per stage. sl_lua_open() creates a Lua state,
 * loads and compiles every hook file of the stage once (never per job) and
 * resolves each hook point to its function. The state is sandboxed: a
 * whitelist of libraries (base without dofile/loadfile, `load` of text
 * chunks only, string, table, math, utf8, os.time/os.clock/os.date),
 * `require` only of modules inside the hook file's directory, globals locked
 * after loading, and per call an instruction budget and a memory cap taken
 * from the hook (sl_hook.instruction_limit, memory_limit). The `sluice`
 * table gives hooks the engine's API (json, log, progress, checkpoint,
 * retry, sql, http, llm).
 *
 * An sl_lua is not thread-safe: use it from one thread at a time. After a
 * failed call (a script error, an exceeded budget) the state keeps serving
 * further calls.
 */
#ifndef SL_LUA_HOST_H
#define SL_LUA_HOST_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "handler.h"
#include "model.h"

typedef struct sl_lua sl_lua; /* opaque; owned by whoever opened it */

/* Creates a sandboxed state for `stage` (which must outlive it) and loads
 * every hook in stage->hooks. On success returns 0 and sets *out (free with
 * sl_lua_close). On failure returns a negative SL_E code (-SL_ELUA for a
 * syntax error, a missing file or function, an error raised while loading)
 * with "file:line: message" in err, and *out = NULL. A stage without hooks
 * gives a usable state with no hook points. */
int sl_lua_open(const sl_stage *stage, sl_lua **out, char *err, size_t errlen);

/* Loads and compiles the stage's hooks and closes the state again: what
 * `sluice validate` calls. Same return and err as sl_lua_open. */
int sl_lua_check(const sl_stage *stage, char *err, size_t errlen);

/* Non-zero when the stage declares hook `point` ("chunk", "prompt",
 * "post", "run", ...). */
int sl_lua_has(const sl_lua *L, const char *point);

/* Calls hook `point` with the elements of the JSON array `args` (borrowed;
 * NULL = no arguments) as Lua arguments, converted as docs/lua.md says
 * (JSON null <-> sluice.json.null; arrays keep being arrays). `job` is
 * exposed to the sluice API (checkpoint, log fields); `ctx` backs progress,
 * checkpoint.set and sql. Both may be NULL outside a job: API functions
 * that need them then raise "not inside a job".
 *
 * On success returns 0 and sets *ret (OUT, owned by the caller) to the
 * hook's first return value as JSON, or to NULL when the hook returned
 * nothing or nil. On failure returns a negative SL_E code (-SL_ELUA for a
 * failure of the hook, -SL_ENOTFOUND when the stage has no hook `point`,
 * -SL_EINVAL when an argument cannot be converted), *ret = NULL, and fills
 * res with outcome SL_OUT_FAIL: class `script` (permanent) with the Lua
 * message and a traceback; `retryable` with delay_ms when the hook called
 * sluice.retry(msg[, delay_s]); or the class of an engine error the API
 * raised (e.g. `timeout` from sluice.http.request). */
int sl_lua_call(sl_lua *L, const char *point, sl_ctx *ctx, const sl_job *job,
                json_t *args, json_t **ret, sl_result *res);

/* The connection sluice.sql uses when a call has no ctx (tools, tests);
 * borrowed, NULL to unset. Inside a job sluice.sql uses sl_ctx_conn(ctx). */
void sl_lua_set_conn(sl_lua *L, PGconn *conn);

/* The table a Lua stage's run(job) receives and sluice.job() returns, as
 * JSON: {id, subject_id, attempt, input, checkpoint, config, stage,
 * pipeline}; absent fields are omitted, and so are input columns that are
 * SQL NULL (nil in Lua). Returns a new reference, or NULL
 * when out of memory. */
json_t *sl_lua_job_json(const sl_job *job);

/* Frees the state. NULL is fine. */
void sl_lua_close(sl_lua *L);

#endif
