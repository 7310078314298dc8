/* result.c - the outcome setters every handler uses. */
#include <stdarg.h>
#include <stdio.h>

#include "stage.h"
#include "text.h"

sl_outcome sl_fail(sl_result *r, sl_errclass c, const char *fmt, ...) {
    va_list ap;
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
    r->outcome = SL_OUT_DONE;
    json_decref(r->outputs);
    r->outputs = outputs ? outputs : json_object();
    return r->outcome;
}

sl_outcome sl_snooze(sl_result *r, int64_t delay_ms) {
    r->outcome = SL_OUT_SNOOZE;
    r->delay_ms = delay_ms < 0 ? 0 : delay_ms;
    return r->outcome;
}
