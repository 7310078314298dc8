/* registry.c - the one table of native stage handlers, by name.
 * A new handler: define `const sl_handler sl_handler_x` in its own file and
 * add it here. */
#include <string.h>

#include "stage.h"

extern const sl_handler sl_handler_noop;

static const sl_handler *const handlers[] = {
    &sl_handler_noop,
};

#define NHANDLERS (sizeof handlers / sizeof handlers[0])

const sl_handler *sl_handler_find(const char *name) {
    for (size_t i = 0; i < NHANDLERS; i++)
        if (strcmp(handlers[i]->name, name) == 0) return handlers[i];
    return NULL;
}

const char *const *sl_handler_names(void) {
    static const char *names[NHANDLERS + 1];
    for (size_t i = 0; i < NHANDLERS; i++) names[i] = handlers[i]->name;
    names[NHANDLERS] = NULL;
    return names;
}
