/* model.h - the immutable pipeline model.
 *
 * The DSL loader (dsl.h) turns YAML files into one sl_model. Everything else
 * (schema generation, the runtime, the stages) only reads it. Every string
 * and array in the model is owned by the model and freed by sl_model_free();
 * nobody else frees or mutates any part of it.
 *
 * Identifiers (table, column, channel names) in the model have been
 * validated by the loader: [a-z_][a-z0-9_]*, at most 63 bytes, not an SQL
 * reserved word. They are still always quoted when spliced into SQL.
 */
#ifndef SL_MODEL_H
#define SL_MODEL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cron.h"
#include "errclass.h"

typedef enum { SL_BACKOFF_FIXED, SL_BACKOFF_EXPONENTIAL } sl_backoff_kind;

/* A stage's retry policy. Defaults come from the pipeline's `retry:` block,
 * which in turn defaults to the engine defaults (docs/dsl.md). */
typedef struct sl_retry {
    int max_attempts;        /* total attempts, the first one counts; >= 1 */
    sl_backoff_kind backoff; /* delay(n) = initial * factor^(n-1), capped */
    int64_t initial_ms;      /* delay before the 2nd attempt */
    double factor;           /* >= 1; ignored for fixed backoff */
    int64_t max_delay_ms;    /* >= initial_ms */
    double jitter;           /* 0..1: delay is scaled by 1 +- jitter*rand */
    uint32_t retry_mask;     /* bit (1u << class) set: that class retries */
} sl_retry;

/* One subject update: any field may be left unchanged. */
typedef struct sl_mapping {
    const char *status; /* subject status value, NULL = unchanged */
    int progress;       /* 0..100, -1 = unchanged */
    const char *detail; /* detail text, NULL = unchanged */
} sl_mapping;

/* How a stage drives its subject row. A handler's own progress p (0..100)
 * maps onto [progress_from, progress_to] while status is on_progress_status
 * (or on_start.status when that is NULL). progress_from < 0: the handler's
 * progress is not mapped onto the subject. */
typedef struct sl_status_map {
    sl_mapping on_start;
    sl_mapping on_done;
    sl_mapping on_error;
    const char *on_progress_status;
    int progress_from, progress_to;
} sl_status_map;

/* A declared column of a queue table. */
typedef struct sl_column {
    const char *name;
    const char *type;       /* normalised SQL type from the whitelist */
    const char *ref_table;  /* foreign key target table or NULL */
    const char *ref_column; /* foreign key target column or NULL */
    int not_null;
    int line, col;          /* where it was declared */
} sl_column;

/* A Lua hook: hook point name ("chunk", "prompt", "post", "run", ...),
 * the file (absolute path) and the function in it, with its limits. */
typedef struct sl_hook {
    const char *point;
    const char *file;
    const char *function;
    int64_t instruction_limit; /* VM instructions per call */
    size_t memory_limit;       /* bytes of Lua heap per state */
    int line, col;
} sl_hook;

/* One mapping of the hand-off: next job column `to` takes the value of the
 * output field `from` (outputs are the handler's result merged over the
 * job's own row). */
typedef struct sl_field_map {
    const char *to;
    const char *from;
} sl_field_map;

struct sl_stage;

typedef struct sl_next {
    const char *stage_name;
    const struct sl_stage *stage; /* resolved target in the same pipeline */
    sl_field_map *map;            /* empty: copy outputs whose names match */
    size_t nmap;                  /* the target's declared columns */
} sl_next;

struct sl_pipeline;
struct sl_alerts; /* alerts.h */

/* A stage's `schedule:` (docs/dsl.md): the stage gets a job at every tick
 * of `cron` in `timezone`, once across all processes. Only the entry stage
 * of a pipeline without a subject may have one. */
typedef struct sl_schedule {
    const char *cron;     /* the expression as written */
    sl_cron parsed;
    const char *timezone; /* an IANA name; "UTC" by default */
    sl_missed missed;     /* ticks missed while no process ran */
    int catch_up;         /* missed: all -- at most this many (1..1000) */
    /* `args`: declared columns and their values as written (text, read
     * as `enqueue --set COL=VALUE` reads them). */
    const char **arg_columns;
    const char **arg_values;
    size_t nargs;
    int line, col;
} sl_schedule;

/* When a job with a unique key blocks another with the same key. */
typedef enum {
    SL_UNIQUE_UNFINISHED, /* while pending, retry or in_progress (default) */
    SL_UNIQUE_PENDING,    /* while pending and never started */
    SL_UNIQUE_PERIOD      /* within the same period window */
} sl_unique_while;

/* The final statuses a retention policy covers, in `retention:`'s order;
 * sl_retain_status names them as the job_status enum spells them. */
enum { SL_RETAIN_DONE, SL_RETAIN_ERROR, SL_RETAIN_CANCELLED, SL_RETAIN__COUNT };
extern const char *const sl_retain_status[SL_RETAIN__COUNT];

typedef struct sl_stage {
    const char *name;
    const char *queue;   /* queue table name */
    const char *channel; /* NOTIFY channel, default "<queue>_channel" */
    const char *handler; /* registered handler name (stages/stage.h) */
    const char *provider; /* the chosen entry of the stage's `providers:`
                             (its handler, with, hooks, sql_writes and
                             next fill this stage); NULL without providers */
    json_t *with;        /* handler configuration: a JSON object, ${VAR}
                            interpolated; never NULL (empty object) */
    sl_column *columns;
    size_t ncolumns;
    sl_hook *hooks;
    size_t nhooks;
    int concurrency;      /* worker threads for this stage per process */
    int batch;            /* jobs claimed per round trip; 0 (no `batch:`):
                             adaptive, see runtime.c */
    int priority;         /* default priority of new jobs; higher first */
    int64_t timeout_ms;   /* a handler call running longer is a timeout */
    int64_t lease_ms;     /* a claimed job's lease */
    int64_t heartbeat_ms; /* lease extension interval; < timeout */
    sl_retry retry;
    sl_status_map status;
    sl_next *next;
    size_t nnext;
    int sql_writes; /* Lua sluice.sql may write */
    /* How long finished jobs stay, by final status (SL_RETAIN_DONE, ...);
     * -1 keeps them forever (the default). */
    int64_t retention_ms[SL_RETAIN__COUNT];
    /* `retention: {history: true}`: the finished jobs retention removes
     * move to the table <queue>_history (sl_stage_history_table) instead
     * of being deleted. 0: deleted (the default). */
    int retention_history;
    /* `fair: {key}`: a declared column; claims go round-robin across its
     * values. NULL: strict priority/run_at order. */
    const char *fair_key;
    /* `limit: {key, max}`: at most limit_max jobs with the same value of
     * the declared column limit_key in progress at once, across all
     * processes. NULL/0: no limit. */
    const char *limit_key;
    int limit_max;
    /* `schedule:`, or NULL. */
    const sl_schedule *schedule;
    /* `unique:`: unique_declared is 1 when written. A job's key is the
     * values of unique_keys (declared columns, or the subject's foreign
     * key), or `enqueue --key`; unique_while applies to both, also when
     * `unique:` is absent (then only --key sets a key). */
    int unique_declared;
    const char **unique_keys;
    size_t nunique_keys;
    sl_unique_while unique_while;
    int64_t unique_period_ms; /* SL_UNIQUE_PERIOD: the window, >= 1s */
    int line, col;
    const struct sl_pipeline *pipeline;
} sl_stage;

/* The type of a subject's key column (`subject.key_type`). */
typedef enum {
    SL_KEY_UUID = 0, /* the default */
    SL_KEY_BIGINT,
    SL_KEY_INTEGER,
    SL_KEY_TEXT
} sl_key_type;

/* The row a pipeline drives. Absent for standalone queues. */
typedef struct sl_subject {
    const char *table;
    const char *key;             /* its primary key column */
    sl_key_type key_type;        /* that column's type; the queue tables'
                                    fk column has the same */
    const char *fk;              /* the column in queue tables, e.g. interview_id */
    const char *status_column;
    const char **status_values;  /* allowed values */
    size_t nstatus_values;
    const char *progress_column; /* NULL when absent */
    const char *detail_column;   /* NULL when absent */
    const char *channel;         /* NOTIFY on status/progress change, may be NULL */
} sl_subject;

/* Row Level Security for the queue tables: a row is visible when the row it
 * references through `column` in `table`.`key` is visible to the caller.
 * For pipelines with a subject this defaults to the subject. */
typedef struct sl_rls {
    int enabled;
    const char *column;
    const char *table;
    const char *key;
} sl_rls;

typedef struct sl_pipeline {
    const char *name;
    const char *file; /* absolute path of the YAML file */
    int has_subject;
    sl_subject subject;
    sl_rls rls;
    sl_stage *stages; /* in declaration order; stages[0] is the entry */
    size_t nstages;
    int64_t sweep_interval_ms; /* how often expired leases are rescued */
    int64_t sweep_age_ms;      /* pending jobs older than this are re-notified */
    const struct sl_alerts *alerts; /* the `alerts:` section, or NULL */
    int line, col;
} sl_pipeline;

typedef struct sl_model {
    sl_pipeline *pipelines;
    size_t npipelines;
    void *arena; /* private to the loader */
} sl_model;

/* Frees everything the model owns. NULL is fine. */
void sl_model_free(sl_model *m);

/* Look-ups; return NULL when absent. */
const sl_pipeline *sl_model_pipeline(const sl_model *m, const char *name);
const sl_stage *sl_model_stage(const sl_model *m, const char *pipeline,
                               const char *stage);
const sl_stage *sl_model_stage_by_queue(const sl_model *m, const char *queue);

/* ---- value rules ---------------------------------------------------------
 * The one home of every rule about a value the model holds: the loader
 * (dsl.c), the DDL generator (schema.c), the queue SQL (queue.c) and the
 * handlers all ask these functions, so they cannot disagree. */

/* The longest identifier PostgreSQL keeps whole (NAMEDATALEN - 1). */
#define SL_IDENT_MAX 63

/* Why a name is not an identifier (sl_ident_check). */
typedef enum {
    SL_IDENT_OK = 0,
    SL_IDENT_EMPTY,   /* NULL or "" */
    SL_IDENT_CHARS,   /* not [a-z_][a-z0-9_]* */
    SL_IDENT_TOO_LONG /* more than SL_IDENT_MAX bytes */
} sl_ident_status;

/* Checks s against the identifier rule: [a-z_][a-z0-9_]*, 1..SL_IDENT_MAX
 * bytes. The character rule is checked before the length. Reserved words
 * are a separate question (sl_reserved_word). */
sl_ident_status sl_ident_check(const char *s);

/* Non-zero when s is a safe SQL identifier (sl_ident_check is OK). */
int sl_ident_ok(const char *s);

/* Non-zero when s (lower case) is a PostgreSQL reserved key word, which
 * the loader refuses as a table, column or channel name. s must not be
 * NULL. */
int sl_reserved_word(const char *s);

/* The column types a queue may declare, in the spelling the model holds
 * and the DDL writes ("timestamptz"), NULL-terminated. For lists in
 * messages and suggestions. */
extern const char *const sl_column_types[];

/* The model's spelling of a written column type: case and runs of blanks
 * do not matter, and the aliases bool, int, int4, int8, int[] and int4[]
 * are accepted. Returns a string of sl_column_types (static storage), or
 * NULL when the type is not allowed or t is NULL. */
const char *sl_type_normalise(const char *t);

/* Canonical (format_type) spelling of an allowed column type, written as
 * sl_type_normalise accepts it ("int" -> "integer", "timestamptz" ->
 * "timestamp with time zone"), or NULL when the type is not allowed.
 * Static storage. */
const char *sl_type_canonical(const char *t);

/* A column every queue table has and the engine writes itself; declared
 * columns may not take these names. Listed in table order. */
typedef struct sl_engine_col {
    const char *name;
    const char *type;        /* an sl_column_types entry; NULL: the
                                job_status enum */
    int not_null;
    const char *default_sql; /* a constant SQL expression or NULL; the
                                stage's priority for "priority" */
} sl_engine_col;

/* The engine's columns, terminated by an entry with a NULL name. The
 * subject's foreign key (sl_subject.fk) follows "id" in a pipeline with a
 * subject; it is not listed here. */
extern const sl_engine_col sl_engine_columns[];

/* The predicate (after the column name unique_key) under which a job's
 * unique_key blocks another with the same key, e.g. " IS NOT NULL AND
 * \"status\" = 'pending' ...", names quoted: the unique-job index
 * (schema_index.c) and the enqueue's ON CONFLICT (jobs.c) share it.
 * Static storage. */
const char *sl_unique_predicate(sl_unique_while w);

/* Non-zero when name is one of sl_engine_columns. name must not be NULL. */
int sl_engine_column(const char *name);

/* The longest subject key text, with its NUL (a text key: 1..255 bytes). */
#define SL_KEY_MAX 256

/* The SQL name of a key type: "uuid", "bigint", "integer" or "text" (also
 * its format_type spelling). Static storage. */
const char *sl_key_type_name(sl_key_type t);

/* Parses a key type name (case-insensitive; "int", "int4" and "int8" are
 * aliases) into *t (OUT). Returns 0, or -SL_EINVAL and leaves *t alone. */
int sl_key_type_parse(const char *s, sl_key_type *t);

/* Checks that text is a key of type t and writes its canonical text form
 * into out (SL_KEY_MAX bytes): a uuid lower-cased, an integer without a
 * sign "+" or leading zeros, a text key as it is (1..255 bytes of UTF-8
 * without control characters). Returns 0, or -SL_EINVAL with what was
 * expected in *why (static storage, e.g. "a bigint"); out is then "". */
int sl_key_canon(sl_key_type t, const char *text, char out[SL_KEY_MAX],
                 const char **why);

/* Parses a duration with unit ("250ms", "3s", "5m", "2h", "1d"; at most
 * ten years); returns 0 and the milliseconds in *ms (OUT), or -SL_EINVAL
 * and leaves *ms alone. s may be NULL (refused); ms must not be. */
int sl_duration_parse(const char *s, int64_t *ms);

/* The declared column `name` of stage st, or NULL. st and name must not
 * be NULL; a column whose name is still NULL (a draft being loaded) is
 * skipped. */
const sl_column *sl_stage_column(const sl_stage *st, const char *name);

/* The name of stage st's history table (`retention: {history: true}`):
 * "<queue>_history", or, when that would pass 63 bytes, the queue name
 * cut short plus 8 hex digits of its hash, then "_history". */
void sl_stage_history_table(const sl_stage *st, char out[64]);

/* The candidate closest to s by edit distance, or NULL when none is close
 * enough to be a likely typo (or s is one of them). The one rule for "did
 * you mean" hints, in pipeline files and on the command line. cands holds
 * n strings (a NULL entry ends it early); the result points into cands. */
const char *sl_model_nearest(const char *s, const char *const *cands,
                             size_t n);

/* Non-zero when stage s is picked by one of the n names in `names` (its
 * stage name, its queue or its pipeline's name), or when n is 0: the rule
 * of `sluice run -s`. */
int sl_stage_selected(const sl_stage *s, const char *const *names, size_t n);

#endif
