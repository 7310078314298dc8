/* handler.c - the handler registry and the outcome setters every handler
 * uses. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "handler.h"
#include "text.h"

/* ---- outcomes ----------------------------------------------------------- */

sl_outcome sl_fail(sl_result *r, sl_errclass c, const char *fmt, ...) {
    va_list ap;
    assert(r && fmt);
    r->outcome = SL_OUT_FAIL;
    r->errclass = c;
    va_start(ap, fmt);
    /* Whatever a handler formats in (a provider's body, a Lua string), the
     * message is safe text: valid UTF-8, cut between characters, no
     * secret. */
    sl_text_vformat(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
    return r->outcome;
}

sl_outcome sl_done(sl_result *r, json_t *outputs) {
    assert(r);
    r->outcome = SL_OUT_DONE;
    json_decref(r->outputs);
    r->outputs = outputs ? outputs : json_object();
    return r->outcome;
}

sl_outcome sl_snooze(sl_result *r, int64_t delay_ms) {
    assert(r);
    r->outcome = SL_OUT_SNOOZE;
    r->delay_ms = delay_ms < 0 ? 0 : delay_ms;
    return r->outcome;
}

/* ---- registry ----------------------------------------------------------- */

#define MAX_HANDLERS 64

static const sl_handler *handlers[MAX_HANDLERS];
static const char *names[MAX_HANDLERS + 1];
static size_t nhandlers;

int sl_handler_register(const sl_handler *h) {
    assert(h && h->name && h->run);
    if (nhandlers >= MAX_HANDLERS || sl_handler_find(h->name)) return -1;
    handlers[nhandlers] = h;
    names[nhandlers++] = h->name;
    names[nhandlers] = NULL;
    return 0;
}

const sl_handler *sl_handler_find(const char *name) {
    assert(name);
    for (size_t i = 0; i < nhandlers; i++)
        if (strcmp(handlers[i]->name, name) == 0) return handlers[i];
    return NULL;
}

const char *const *sl_handler_names(void) { return names; }
