/* dsl_priv.h - what the parts of the DSL loader share; nothing outside
 * engine/dsl*.c includes it.
 *
 * The loader is split along its passes:
 *   dsl_yaml.c      the arena; libyaml events -> a tree of positioned
 *                   nodes (duplicate keys, anchors, depth refused); the
 *                   tree look-ups (mget, check_keys, expect_kind)
 *   dsl_scalar.c    names, ${VAR} interpolation, integers, numbers, bools,
 *                   durations, sizes; `with` as JSON
 *   dsl_pipeline.c  one file's pipeline: top-level keys, sweep, the
 *                   settings inherited from `defaults`, subject, security
 *   dsl_stage.c     one stage: queue, channel, columns, status, next
 *   dsl_provider.c  what a stage runs: handler, with, Lua hooks, providers
 *   dsl_alerts.c    the `alerts:` section: notifiers and rules
 *   dsl_check.c     the graph of one pipeline; uniqueness across files
 *   dsl.c           the entry points, diagnostics and suggestions
 *
 * Memory: the model (every string and array a sl_model holds) lives in
 * loader.a, freed by sl_model_free(); the tree of the file being read
 * lives in loader.t, freed after that file. Internal names shared between
 * the parts are prefixed sl_dsl__.
 */
#ifndef SL_DSL_PRIV_H
#define SL_DSL_PRIV_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "dsl.h"
#include "model.h"

/* Limits that keep hostile input cheap (docs/dsl.md, "Limits"). */
#define MAX_FILE_BYTES (1u << 20)
#define MAX_DEPTH 64
#define MAX_DIAGS 200
#define MAX_STAGES 1000
#define MAX_COLUMNS 1000
#define MAX_NEXT 64
#define MAX_HOOKS 64
#define MAX_MAP 1000
#define MAX_STATUS_VALUES 256
#define MAX_PROVIDERS 64
#define MAX_WHEN_ENV 64
#define MAX_IDENT SL_IDENT_MAX

/* ---- arena --------------------------------------------------------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} chunk;

typedef struct arena {
    chunk *head;
    int failed; /* an allocation failed; the model is not handed out */
} arena;

/* Zeroed memory from a (a must not be NULL); NULL on allocation failure,
 * which also sets a->failed. */
void *sl_dsl__arena_alloc(arena *a, size_t n);
char *sl_dsl__arena_strndup(arena *a, const char *s, size_t n);
/* NULL s gives NULL. */
char *sl_dsl__arena_strdup(arena *a, const char *s);
char *sl_dsl__arena_printf(arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Frees every chunk and a itself. NULL is fine. */
void sl_dsl__arena_free(arena *a);

/* ---- the YAML tree ------------------------------------------------------- */

enum { N_SCALAR, N_MAP, N_SEQ };

typedef struct node node;
struct node {
    int kind;
    int line, col;
    /* scalar */
    char *s;
    size_t len;
    int plain; /* unquoted: may be null, a number or a bool in `with` */
    /* map: keys[i] -> vals[i]; seq: vals[i] */
    node **keys, **vals;
    size_t n, cap;
};

/* ---- the loader state ---------------------------------------------------- */

typedef struct lua_seen {
    char *path;
    char *error; /* NULL: compiled */
} lua_seen;

/* Where a stage's queue and channel were named (for cross-file errors). */
typedef struct stage_pos {
    const char *file;
    int qline, qcol, cline, ccol;
    int channel_set; /* `channel` written, not the default */
} stage_pos;

typedef struct draft {
    sl_pipeline p;
    const char *file; /* display name */
    stage_pos *pos;   /* per stage */
    int sline, scol;  /* subject channel */
} draft;

typedef struct loader {
    sl_diags *d;
    int full;     /* MAX_DIAGS reached */
    int io_error; /* an unreadable file or directory */
    arena *a;     /* the model's arena */
    arena *t;     /* the current file's tree; freed after the file */
    const char *file;
    const char *dir; /* absolute directory of the file (hooks) */
    const char *abs; /* absolute path of the file */
    draft *drafts;
    size_t ndrafts, capdrafts;
    lua_seen *lua;
    size_t nlua, caplua;
    /* Reading a provider that was not chosen: an unset ${VAR} is no error
     * (the chosen provider's environment may lack it); env_missing records
     * that one was met, so nothing is checked against the empty value. */
    int lenient_env;
    int env_missing;
} loader;

/* Stage settings inherited from `defaults` (dsl_pipeline.c). */
typedef struct settings {
    sl_retry retry;
    int has_on, has_fail;
    uint32_t on_mask, fail_mask;
    int64_t timeout_ms, lease_ms, heartbeat_ms;
    int heartbeat_set;
    int concurrency, batch, priority, sql_writes;
    /* Nodes of the values set at this level (for range errors). */
    const node *n_timeout, *n_lease, *n_heartbeat, *n_initial, *n_max_delay;
} settings;

/* One `next` list as written (the stage's own or a provider's), with
 * the nodes its messages point at. */
typedef struct next_set {
    sl_next *next;
    size_t nnext;
    const node **next_at; /* per next: the stage name node */
    const node ***to_at;  /* per next, per map entry: the `to` key node */
} next_set;

/* Per-stage nodes kept while the file's tree lives (graph checks). */
typedef struct stage_aux {
    const node *key;
    /* Every next list of the stage: its own and each provider's, chosen
     * or not, so the graph checks do not depend on the environment. The
     * model's st->next is one of them (the same array). */
    next_set *sets;
    size_t nsets, capsets;
    const node *prog[4]; /* on_start, from, to, on_done progress nodes */
} stage_aux;

/* ---- diagnostics and suggestions (dsl.c) --------------------------------- */

/* An error at file:line:col (line 0: no position). Ignored once MAX_DIAGS
 * were recorded; the last one then says so. */
void sl_dsl__diag_at(loader *L, const char *file, int line, int col,
                     const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* An error at node n (NULL: no position) of the current file. */
void sl_dsl__diag(loader *L, const node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A printable, bounded rendering of a value for messages; one of four
 * rotating static buffers, so a message can quote up to four values. */
const char *sl_dsl__show(const char *s);
/* What a node is, for "expected X, got Y" messages (rotating buffers). */
const char *sl_dsl__describe(const node *n);
/* The length of a NULL-terminated list. */
size_t sl_dsl__count_list(const char *const *l);
/* " (did you mean 'x'?)" or "" (rotating static buffers). */
const char *sl_dsl__did_you_mean(const char *s, const char *const *cands,
                                 size_t n);

/* ---- the tree (dsl_yaml.c) ----------------------------------------------- */

/* Parses text into a tree in L->t. Returns the root, or NULL after
 * reporting why (syntax error, empty file, unsupported feature). */
node *sl_dsl__parse_yaml(loader *L, const char *text, size_t len);
/* Line and column (1-based, OUT) of a byte offset of text. */
void sl_dsl__offset_pos(const char *text, size_t len, size_t off, int *line,
                        int *col);
/* The value of `key` in mapping m, or NULL (also when m is no mapping). */
node *sl_dsl__mget(const node *m, const char *key);
/* The key node of `key` in mapping m, or NULL. */
const node *sl_dsl__mkey(const node *m, const char *key);
/* A key's name; "" for a key that is not a scalar. */
const char *sl_dsl__key_name(const node *k);
/* Reports keys of mapping m not in allowed[] (NULL-terminated), suggesting
 * the nearest valid one. */
void sl_dsl__check_keys(loader *L, const node *m, const char *where,
                        const char *const *allowed);
/* 1 when n is of `kind`, else 0 after a diagnostic. */
int sl_dsl__expect_kind(loader *L, const node *n, int kind, const char *what);

/* ---- scalars (dsl_scalar.c) ---------------------------------------------- */

enum { ID_NAME = 0, ID_SQL = 1 }; /* ID_SQL: also no SQL reserved word */

/* Checks a name; reports and returns -1 when invalid. */
int sl_dsl__check_ident(loader *L, const node *at, const char *s,
                        const char *what, int sql);
/* A name from a scalar node, validated and copied into the model arena;
 * NULL (after a diagnostic) when invalid. n may be NULL (gives NULL). */
const char *sl_dsl__read_ident(loader *L, const node *n, const char *what,
                               int sql);
/* A non-name scalar value, interpolated (tree arena). NULL after a
 * diagnostic. */
const char *sl_dsl__read_value(loader *L, const node *n, const char *what);
/* As read_value, copied into the model arena. */
const char *sl_dsl__read_text(loader *L, const node *n, const char *what);
/* A decimal integer with an optional sign and nothing else; 0 or -1. */
int sl_dsl__parse_ll(const char *s, long long *out);
/* The readers below return 0 and set *out, or -1 after a diagnostic
 * (leaving *out alone). */
int sl_dsl__read_int(loader *L, const node *n, const char *what, long long lo,
                     long long hi, int *out);
int sl_dsl__read_double(loader *L, const node *n, const char *what, double lo,
                        double hi, double *out);
int sl_dsl__read_bool(loader *L, const node *n, const char *what, int *out);
int sl_dsl__read_duration(loader *L, const node *n, const char *what,
                          int64_t min_ms, int64_t *out);
int sl_dsl__read_size(loader *L, const node *n, const char *what, size_t *out);
/* A `with` tree as JSON, scalars interpolated; plain scalars may be null,
 * bools and numbers. A new reference (caller owns). */
json_t *sl_dsl__to_json(loader *L, const node *n);

/* ---- pipelines, stages, providers ---------------------------------------- */

/* Reads one file's tree into a new draft (dsl_pipeline.c). */
void sl_dsl__read_pipeline(loader *L, const node *root);
/* Reads the settings keys present in m over s (dsl_pipeline.c). */
void sl_dsl__read_settings(loader *L, const node *m, settings *s);
/* Copies the settings into a stage (dsl_pipeline.c). */
void sl_dsl__apply_settings(const settings *s, sl_stage *st);
/* Reads stage k: v of pipeline p into st, ax and pos (dsl_stage.c). */
void sl_dsl__read_stage(loader *L, sl_pipeline *p, const node *k, const node *v,
                        const settings *defaults, sl_stage *st, stage_aux *ax,
                        stage_pos *pos);
/* Reads a `next` list into a new set of ax. Returns the set (valid until
 * the next call), or NULL after a diagnostic (dsl_stage.c). */
next_set *sl_dsl__read_next(loader *L, const node *n, stage_aux *ax);
/* Handler, with and hooks of a stage or provider (dsl_provider.c). */
void sl_dsl__read_impl(loader *L, const node *m, const node *at,
                       const char *what, int is_stage, sl_stage *st);
/* A stage's `providers:`; returns the chosen one's sql_writes or -1
 * (dsl_provider.c). */
int sl_dsl__read_providers(loader *L, const node *v, const char *sname,
                           sl_stage *st, stage_aux *ax);

/* A stage's `schedule:` and `unique:` (node n), after its columns
 * (dsl_schedule.c). */
void sl_dsl__read_schedule(loader *L, const node *n, const sl_pipeline *p,
                           sl_stage *st);
void sl_dsl__read_unique(loader *L, const node *n, const sl_pipeline *p,
                         sl_stage *st);

/* The `alerts:` section n of pipeline p, after its stages
 * (dsl_alerts.c). */
void sl_dsl__read_alerts(loader *L, const node *n, sl_pipeline *p);

/* ---- checks (dsl_check.c) ------------------------------------------------ */

/* Resolves next, checks map targets, cycles, reachability and progress of
 * one pipeline read from the current file. */
void sl_dsl__check_graph(loader *L, sl_pipeline *p, stage_aux *ax);
/* Pipeline names, queue tables and channels unique across all drafts. */
void sl_dsl__check_unique(loader *L);

#endif
