/* noop.c - a handler that does nothing, for benchmarks and tests.
 *
 * with:
 *   fail_first: N   fail the first N attempts with class `retryable`
 *   sleep_ms: N     sleep before finishing (tests of leases and shutdown);
 *                   told to stop before then, the job is released, not done
 */
#include <time.h>

#include "handler.h"

static void noop_run(sl_ctx *ctx, const sl_job *job, void *state,
                     sl_result *res) {
    (void)state;
    json_t *v = json_object_get(job->stage->with, "sleep_ms");
    if (json_is_integer(v)) {
        json_int_t left = json_integer_value(v);
        while (left > 0 && !sl_ctx_should_stop(ctx)) {
            json_int_t step = left > 50 ? 50 : left;
            struct timespec ts = {step / 1000, (long)(step % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            left -= step;
        }
        /* Told to stop (shutdown past the drain, cancelled, lease lost,
         * timed out): the sleep was not done, so neither is the job. A
         * snooze gives it back without using an attempt; the runtime
         * turns it into a release, an abandon or a timeout as the
         * reason requires. */
        if (left > 0) return (void)sl_snooze(res, 0);
    }
    v = json_object_get(job->stage->with, "fail_first");
    if (json_is_integer(v) && job->attempt <= json_integer_value(v)) {
        sl_fail(res, SL_EC_RETRYABLE, "noop: planned failure on attempt %d",
                job->attempt);
        return;
    }
    sl_done(res, json_object());
}

const sl_handler sl_handler_noop = {"noop", NULL, NULL, NULL, noop_run};
