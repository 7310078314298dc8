/* registry.c - the one table of built-in stage handlers.
 * A new handler: define `const sl_handler sl_handler_x` in its own file and
 * add it here. */
#include "handler.h"
#include "stages.h"

extern const sl_handler sl_handler_noop;
extern const sl_handler sl_handler_lua;
extern const sl_handler sl_handler_local_transcribe;
extern const sl_handler sl_handler_assemblyai_upload;
extern const sl_handler sl_handler_assemblyai_transcribe;
extern const sl_handler sl_handler_llm_analyze;
extern const sl_handler sl_handler_llm_generate;
extern const sl_handler sl_handler_http;

static const sl_handler *const builtin[] = {
    &sl_handler_noop,
    &sl_handler_lua,
    &sl_handler_local_transcribe,
    &sl_handler_assemblyai_upload,
    &sl_handler_assemblyai_transcribe,
    &sl_handler_llm_analyze,
    &sl_handler_llm_generate,
    &sl_handler_http,
};

void sl_stages_register_builtin(void) {
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (!sl_handler_find(builtin[i]->name)) sl_handler_register(builtin[i]);
}
