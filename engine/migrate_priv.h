/* migrate_priv.h - what the parts of the migrator share (migrate.c plans
 * and applies; migrate_tables.c plans the queue tables: new, changed,
 * dropped, and the stale objects of removed stages). Not for other
 * modules. */
#ifndef SL_MIGRATE_PRIV_H
#define SL_MIGRATE_PRIV_H

#include <jansson.h>
#include <libpq-fe.h>

#include "buf.h"
#include "migrate.h"
#include "schema.h"

/* The start of a queue table's COMMENT (schema.c writes it). */
#define QUEUE_COMMENT_PREFIX "sluice queue "

typedef struct step {
    char *summary; /* one line: "add column upload_jobs.x" */
    char *sql;     /* statements, each ending ";\n" */
} step;

typedef struct mctx {
    PGconn *c;
    const sl_model *m;
    const sl_schema *s;
    sl_migrate_opts o;
    char *err;
    size_t errlen;
    int rc;
    json_t *last_snapshot;    /* the newest recorded snapshot, or NULL */
    char *last_base_checksum; /* its base checksum, or NULL */
    char *base_checksum;      /* of the embedded base.sql */
    int base_applied;
    step *steps;
    size_t nsteps, cap;
    sl_buf refused; /* destructive changes, one per line */
    int ndestructive;
    char **dropped; /* tables the plan drops */
    size_t ndropped;
    json_t *owners;     /* sluice.pipelines: name -> [{kind, name, table}] */
    int has_owners;     /* some pipeline's ownership is recorded */
    char **others;      /* queue tables of pipelines not given */
    size_t nothers;
    int base_needed;    /* --base, or a pipeline references a base table */
    char base_before[32]; /* which base objects existed ('t'/'f') */
    sl_buf base_created;  /* "create table accounts\n" ... */
} mctx;

/* The table of ownership records, idempotent. */
#define SL_MIGRATE_PIPELINES_DDL                                               \
    "CREATE SCHEMA IF NOT EXISTS sluice;\n"                                    \
    "CREATE TABLE IF NOT EXISTS sluice.pipelines (\n"                          \
    "  name text PRIMARY KEY,\n"                                               \
    "  objects jsonb NOT NULL,\n"                                              \
    "  updated_at timestamptz NOT NULL DEFAULT now()\n"                        \
    ");\n"

void sl_migrate__fail(mctx *x, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sl_migrate__add_step(mctx *x, const char *sql, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sl_migrate__add_destructive(mctx *x, const char *sql, const char *what);
long sl_migrate__count_rows(mctx *x, const char *table, const char *column);
int sl_migrate__find_row(PGresult *r, int col, const char *value);
const char *sl_migrate__kind_name(sl_obj_kind k);
int sl_migrate__model_has_queue(const mctx *x, const char *name);
char *sl_migrate__qident(const char *name);
PGresult *sl_migrate__query(mctx *x, const char *sql, int n,
                            const char *const *params);

/* migrate_tables.c */
void sl_migrate__find_dropped_tables(mctx *x);
void sl_migrate__plan_drop_tables(mctx *x);
void sl_migrate__plan_stale(mctx *x, int functions);
void sl_migrate__plan_table(mctx *x, const sl_schema_object *o);

/* migrate_scope.c: the base schema on demand, ownership per pipeline */
int sl_migrate__base_needed(const mctx *x);
void sl_migrate__base_before(mctx *x);
void sl_migrate__base_created(mctx *x);
int sl_migrate__given(const mctx *x, const char *pipeline);
void sl_migrate__load_owners(mctx *x);
void sl_migrate__find_others(mctx *x);
/* 1 when the object (table: the one it is on, or NULL) belongs to a
 * pipeline this migration was given, so it may be dropped. */
int sl_migrate__owned(mctx *x, sl_obj_kind kind, const char *name,
                      const char *table);
void sl_migrate__plan_owners(mctx *x);

#endif
