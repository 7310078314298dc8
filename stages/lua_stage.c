/* lua_stage.c - handler "lua": the whole step is the Lua function
 * run(job) -> outputs (docs/lua.md).
 *
 * hooks:
 *   run: {file: hooks/x.lua}   required; the function gets the job table
 *                              {id, subject_id, attempt, input, checkpoint,
 *                              config, stage, pipeline} and returns a table
 *                              of outputs (or nil for none)
 * with:                        free-form; the hook reads it as job.config
 * sql_writes: true             lets sluice.sql write (default read-only)
 *
 * Each worker thread owns one Lua state, loaded at start-up. Progress,
 * checkpoints and retries go through the sluice API; the returned table is
 * the job's outputs, which the runtime writes into the declared columns
 * and hands to the next stage.
 */
#include <stdio.h>
#include <string.h>

#include "lua_host.h"
#include "handler.h"

static int has_run_hook(const sl_stage *stage) {
    for (size_t i = 0; i < stage->nhooks; i++)
        if (strcmp(stage->hooks[i].point, "run") == 0) return 1;
    return 0;
}

static int lua_validate(const sl_stage *stage, char *err, size_t errlen) {
    if (!has_run_hook(stage)) {
        snprintf(err, errlen,
                 "handler lua needs a `run` hook: hooks: {run: {file: "
                 "hooks/%s.lua}}",
                 stage->name ? stage->name : "step");
        return -1;
    }
    return sl_lua_check(stage, err, errlen) == 0 ? 0 : -1;
}

static int lua_init(const sl_stage *stage, void **state, char *err,
                    size_t errlen) {
    if (lua_validate(stage, err, errlen) != 0) return -1;
    sl_lua *L = NULL;
    if (sl_lua_open(stage, &L, err, errlen) != 0) return -1;
    *state = L;
    return 0;
}

static void lua_fini(void *state) {
    sl_lua_close(state);
}

static void lua_run(sl_ctx *ctx, const sl_job *job, void *state,
                    sl_result *res) {
    sl_lua *L = state;
    json_t *args = json_array();
    json_t *jobt = sl_lua_job_json(job);
    json_t *ret = NULL;
    if (!args || !jobt || json_array_append(args, jobt) != 0) {
        sl_fail(res, SL_EC_INTERNAL, "lua: out of memory");
        goto out;
    }
    if (sl_lua_call(L, "run", ctx, job, args, &ret, res) != 0) goto out;
    if (ret && !json_is_object(ret)) {
        sl_fail(res, SL_EC_SCRIPT,
                "Lua hook 'run' must return a table of outputs keyed by name "
                "(or nil), not %s",
                json_is_array(ret)    ? "an array"
                : json_is_string(ret) ? "a string"
                                      : "a scalar");
        goto out;
    }
    sl_done(res, ret ? ret : json_object());
    ret = NULL;
out:
    json_decref(ret);
    json_decref(jobt);
    json_decref(args);
}

const sl_handler sl_handler_lua = {"lua", lua_validate, lua_init, lua_fini,
                                   lua_run};
