/* handler.h - what a stage handler sees, and the handler registry.
 *
 * A handler is a small set of functions registered by name: the built-in
 * ones by sl_stages_register_builtin() (stages/stages.h), others by a
 * program that embeds the engine. The runtime (engine/runtime.c) calls init() once per
 * worker thread, run() once per claimed job, fini() at shutdown. A handler
 * sees only its job, its stage's configuration and a context through which
 * it reports progress, saves checkpoints, logs and reads the worker's
 * database connection. It returns its outcome in an sl_result.
 */
#ifndef SL_HANDLER_H
#define SL_HANDLER_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "errclass.h"
#include "model.h"

typedef struct sl_ctx sl_ctx; /* opaque; owned by the runtime */

/* A claimed job. Everything is owned by the runtime and valid only during
 * run(). */
typedef struct sl_job {
    const char *id;         /* job uuid */
    const char *subject_id; /* the subject key as text (any key_type),
                               NULL for standalone queues */
    int attempt;            /* 1 for the first attempt */
    json_t *input;          /* the job row's declared columns (bytea as
                               "\\x.." hex text), plus "payload" etc. */
    json_t *checkpoint;     /* last saved checkpoint, or NULL */
    const sl_stage *stage;
} sl_job;

typedef enum {
    SL_OUT_DONE = 0, /* outputs hold the results */
    SL_OUT_FAIL,     /* errclass + message; the policy decides retry */
    SL_OUT_SNOOZE    /* run again after delay_ms without using an attempt */
} sl_outcome;

typedef struct sl_result {
    sl_outcome outcome;
    json_t *outputs;      /* DONE: a JSON object; the runtime takes ownership */
    sl_errclass errclass; /* FAIL */
    int64_t delay_ms;     /* FAIL: Retry-After (0 = none); SNOOZE: delay */
    char message[1024];   /* FAIL: human message, never a secret */
} sl_result;

/* Convenience setters; they return the outcome so `return sl_fail(...)`
 * reads naturally in handlers that return it. */
sl_outcome sl_fail(sl_result *r, sl_errclass c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
sl_outcome sl_done(sl_result *r, json_t *outputs /* stolen */);
sl_outcome sl_snooze(sl_result *r, int64_t delay_ms);

/* ---- the context (implemented by the runtime) ------------------------- */

/* Saves a checkpoint, committed at once; the next attempt finds it in
 * job->checkpoint. Borrowed reference. Returns 0 or a negative SL_E code
 * (-SL_ELEASE when the lease was lost: stop working). */
int sl_ctx_checkpoint(sl_ctx *ctx, json_t *checkpoint);

/* Reports progress 0..100 and an optional detail text ("chunk 3/10").
 * Throttled by the runtime; mapped onto the subject's progress range. */
void sl_ctx_progress(sl_ctx *ctx, int pct, const char *detail);

/* Non-zero when the job was cancelled or the worker is shutting down past
 * its deadline: return as soon as possible (any outcome). */
int sl_ctx_should_stop(sl_ctx *ctx);

/* The worker's own connection, for handler SQL outside the queue tables
 * (e.g. upserting insights). Never leave a transaction open. */
PGconn *sl_ctx_conn(sl_ctx *ctx);

/* Inside a transaction the caller opened on c (the worker's connection or
 * a hook's own connection to the same database): when the job was
 * requested through the application (its requested_by is set), makes the
 * rest of the transaction run as the application role for that user
 * (SET LOCAL ROLE + the JWT claims auth.uid() reads), so Row Level
 * Security limits it to what that user may see and write. A job the engine
 * or the owner inserted keeps the owner's rights. Returns 0, -SL_ELEASE
 * when the job no longer exists, or -SL_EDB/-SL_ECONN with the reason in
 * err. */
int sl_ctx_act_for_requester(sl_ctx *ctx, PGconn *c, char *err,
                             size_t errlen);

/* Logs a line with the job's id, stage and attempt. */
void sl_ctx_log(sl_ctx *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- handlers ---------------------------------------------------------- */

typedef struct sl_handler {
    const char *name;
    /* Optional: checks the stage's `with:` at load time (sluice validate).
     * Returns 0 or -1 with a message in err. */
    int (*validate)(const sl_stage *stage, char *err, size_t errlen);
    /* Optional: per worker thread state (curl handle, decoder, Lua state).
     * Returns 0 or -1 with a message in err. */
    int (*init)(const sl_stage *stage, void **state, char *err, size_t errlen);
    void (*fini)(void *state);
    /* Runs one job; fills res. Must not block past the stage timeout. */
    void (*run)(sl_ctx *ctx, const sl_job *job, void *state, sl_result *res);
} sl_handler;

/* The registered handler called `name`, or NULL. */
const sl_handler *sl_handler_find(const char *name);

/* Registers a handler (the built-in ones through
 * sl_stages_register_builtin(), others by a program that embeds the engine
 * and by tests), before any pipeline is loaded or run. Not thread-safe.
 * Returns 0, or -1 when the name is taken or the table is full. */
int sl_handler_register(const sl_handler *h);

/* All handler names, NULL-terminated (for suggestions in errors). */
const char *const *sl_handler_names(void);

#endif
