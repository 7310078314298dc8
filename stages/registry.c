/* registry.c - the one table of native stage handlers, by name.
 * A new handler: define `const sl_handler sl_handler_x` in its own file and
 * add it here. */
#include <string.h>

#include "stage.h"

extern const sl_handler sl_handler_noop;
extern const sl_handler sl_handler_lua;
extern const sl_handler sl_handler_local_transcribe;
extern const sl_handler sl_handler_assemblyai_upload;
extern const sl_handler sl_handler_assemblyai_transcribe;
extern const sl_handler sl_handler_llm_analyze;
extern const sl_handler sl_handler_llm_generate;
extern const sl_handler sl_handler_http;

static const sl_handler *const handlers[] = {
    &sl_handler_noop,
    &sl_handler_lua,
    &sl_handler_local_transcribe,
    &sl_handler_assemblyai_upload,
    &sl_handler_assemblyai_transcribe,
    &sl_handler_llm_analyze,
    &sl_handler_llm_generate,
    &sl_handler_http,
};

#define NHANDLERS (sizeof handlers / sizeof handlers[0])
#define MAX_EXTRA 32

/* Handlers registered at run time by a program embedding the engine. */
static const sl_handler *extra[MAX_EXTRA];
static size_t nextra;

int sl_handler_register(const sl_handler *h) {
    if (nextra >= MAX_EXTRA || sl_handler_find(h->name)) return -1;
    extra[nextra++] = h;
    return 0;
}

const sl_handler *sl_handler_find(const char *name) {
    for (size_t i = 0; i < NHANDLERS; i++)
        if (strcmp(handlers[i]->name, name) == 0) return handlers[i];
    for (size_t i = 0; i < nextra; i++)
        if (strcmp(extra[i]->name, name) == 0) return extra[i];
    return NULL;
}

const char *const *sl_handler_names(void) {
    static const char *names[NHANDLERS + MAX_EXTRA + 1];
    size_t n = 0;
    for (size_t i = 0; i < NHANDLERS; i++) names[n++] = handlers[i]->name;
    for (size_t i = 0; i < nextra; i++) names[n++] = extra[i]->name;
    names[n] = NULL;
    return names;
}
