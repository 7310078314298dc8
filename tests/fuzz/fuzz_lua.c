/* fuzz_lua.c - libFuzzer target for the Lua sandbox (docs/lua.md).
 *
 * Runs arbitrary bytes as a hook file under the runtime's limits: the file
 * is loaded as a `lua` stage's hook (its top level runs), then its `run`
 * function, when it defines one, is called twice with a job table (the
 * second call checks that the state survived the first and was restored).
 * The host must return (a result or a failure) without crashing, hanging
 * past the instruction budget, leaking or tripping ASan/UBSan. There is no
 * database connection (sluice.sql fails with "not inside a job") and
 * sluice.http refuses private addresses. Build and run: scripts/fuzz. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "lua_host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[256];

static const char *hook_file(void) {
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/sluice-fuzz-lua-%d.lua",
                 (int)getpid());
        sl_log_init(SL_LOGFMT, SL_LOG_ERROR + 1);
    }
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(hook_file(), "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);

    sl_hook hook = {.point = "run",
                    .file = path,
                    .function = "run",
                    .instruction_limit = 1000000,
                    .memory_limit = (size_t)16 << 20};
    sl_stage stage;
    memset(&stage, 0, sizeof stage);
    stage.name = "fuzz";
    stage.hooks = &hook;
    stage.nhooks = 1;
    stage.timeout_ms = 1000;
    stage.with = json_pack("{s:s}", "api_key_env", "SLUICE_FUZZ_NO_KEY");

    sl_lua *L = NULL;
    char err[1024];
    if (sl_lua_open(&stage, &L, err, sizeof err) == 0) {
        sl_job job = {.id = "00000000-0000-0000-0000-000000000001",
                      .attempt = 1,
                      .input = json_pack("{s:s}", "text", "hello"),
                      .stage = &stage};
        for (int i = 0; i < 2; i++) {
            json_t *args = json_pack("[o]", sl_lua_job_json(&job));
            json_t *ret = NULL;
            sl_result res;
            memset(&res, 0, sizeof res);
            int rc = sl_lua_call(L, "run", NULL, &job, args, &ret, &res);
            /* The contract: a value or a failure with a message. */
            if (rc != 0 && (ret || res.outcome != SL_OUT_FAIL ||
                            !res.message[0]))
                abort();
            json_decref(ret);
            json_decref(res.outputs);
            json_decref(args);
        }
        json_decref(job.input);
    } else if (!err[0]) {
        abort();
    }
    sl_lua_close(L);
    json_decref(stage.with);
    return 0;
}
