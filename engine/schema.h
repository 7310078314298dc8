/* schema.h - the SQL a pipeline model implies (docs/schema.md).
 *
 * sl_schema_build() turns a validated model into a description of the
 * database objects it needs: the job_status enum, one queue table per stage
 * (columns as in docs/schema.md), their indexes, trigger functions,
 * triggers, Row Level Security and grants, the NOTIFY trigger on each
 * subject table that has a channel, and the sluice_statistics view. Every
 * object carries the idempotent SQL that creates it, so the concatenation
 * (sl_schema_ddl) can be run on a fresh database, and `sluice migrate`
 * (migrate.h) picks only the objects the catalog lacks.
 *
 * The SQL contains only identifiers from the model, always double-quoted,
 * and constants; identifiers are checked again here ([a-z_][a-z0-9_]*, at
 * most 63 bytes) so a hand-built model cannot smuggle anything in. The
 * output is deterministic: the same model gives the same bytes.
 *
 * Non-table objects carry a fingerprint ("sluice:" + 16 hex digits of a
 * hash of their definition) that the SQL records as the object's COMMENT;
 * migrate compares it with the catalog to tell a changed definition from an
 * unchanged one.
 */
#ifndef SL_SCHEMA_H
#define SL_SCHEMA_H

#include <stddef.h>

#include "model.h"

/* The application role: sql/base.sql creates it; the generated schema
 * grants to it; the runtime acts as it for a job's requester. */
#define SL_APP_ROLE "sluice_app"

/* The job_status values in enum order, NULL-terminated. */
extern const char *const sl_job_status_values[];

typedef enum {
    SL_OBJ_ENUM,     /* the job_status type */
    SL_OBJ_FUNCTION, /* a trigger function; name is the function */
    SL_OBJ_TABLE,    /* a queue table; see sl_schema.tables[table_index] */
    SL_OBJ_INDEX,    /* name is the index */
    SL_OBJ_TRIGGER,  /* name on table */
    SL_OBJ_RLS,      /* ENABLE ROW LEVEL SECURITY on table */
    SL_OBJ_POLICY,   /* name on table */
    SL_OBJ_GRANT,    /* privileges of the role sluice_app on table */
    SL_OBJ_VIEW      /* name is the view */
} sl_obj_kind;

/* A column of a queue table. */
typedef struct sl_schema_column {
    char *name;
    char *sql_type; /* as written in the DDL ("timestamptz", "job_status") */
    char *cat_type; /* as format_type() spells it ("timestamp with time
                       zone"), for comparison with the catalog */
    int not_null;
    char *default_sql;            /* DEFAULT expression, or NULL */
    char *ref_table, *ref_column; /* foreign key target, or NULL */
    int engine;                   /* 1: engine column, 0: declared in YAML */
    char *def_sql;                /* the full column definition, quoted */
} sl_schema_column;

/* A queue table. `stage` points into the model (borrowed). */
typedef struct sl_schema_table {
    char *name;
    const sl_stage *stage;
    sl_schema_column *columns;
    size_t ncolumns;
    char *comment;    /* "sluice queue <pipeline>.<stage>" */
    char *create_sql; /* CREATE TABLE IF NOT EXISTS ...; COMMENT ON TABLE */
    int history;      /* 1: the stage's history table (the queue's columns,
                         "sluice history <pipeline>.<stage>"), not a queue */
} sl_schema_table;

/* One database object and how to make it. */
typedef struct sl_schema_object {
    sl_obj_kind kind;
    char *name;        /* object name; for TABLE/RLS/GRANT the table */
    char *table;       /* table it belongs to (INDEX/TRIGGER/RLS/POLICY/
                          GRANT/TABLE), else NULL */
    int table_index;   /* TABLE: index into sl_schema.tables, else -1 */
    char *sql;         /* idempotent statements, each ending ";\n" */
    char *replace_sql; /* run before sql when an existing object's
                          fingerprint differs (e.g. DROP INDEX), or NULL */
    char *fingerprint; /* "sluice:<hex>" stored as COMMENT, or NULL */
    char *privileges;  /* GRANT: table-wide "SELECT, DELETE", else NULL */
    char *insert_columns; /* GRANT on a queue: the only columns the app
                             role may INSERT, "a,b,c"; NULL elsewhere */
    char *update_columns; /* GRANT on a queue: the only columns it may
                             UPDATE ("status"); NULL elsewhere */
    char *pipeline; /* the pipeline that owns it (its queues' objects, its
                       subject trigger), or NULL for the objects every
                       pipeline shares: job_status, sluice_set_updated_at,
                       sluice_statistics */
} sl_schema_object;

/* The whole schema. Owns every string; borrows the model's stages, so the
 * model must outlive it. Free with sl_schema_free(). */
typedef struct sl_schema {
    sl_schema_table *tables; /* model order: pipelines, then stages */
    size_t ntables;
    sl_schema_object *objects; /* in creation order */
    size_t nobjects;
} sl_schema;

/* Builds the schema for model m. Returns 0 and sets *out (caller frees with
 * sl_schema_free), -SL_EINVAL with a message in err when the model holds
 * something that cannot be expressed safely (an invalid identifier, an
 * unknown column type, a generated name that collides), or -SL_ENOMEM. */
int sl_schema_build(const sl_model *m, sl_schema **out, char *err,
                    size_t errlen);

/* As sl_schema_build, with the nothers queue tables in `others` (those
 * of other applications' pipelines in the same database, which migrate
 * finds) counted by the sluice_statistics view too. With others, the
 * view lists every queue in name order, so two applications build the
 * same view. */
int sl_schema_build_ex(const sl_model *m, const char *const *others,
                       size_t nothers, sl_schema **out, char *err,
                       size_t errlen);

void sl_schema_free(sl_schema *s);

/* The complete DDL of m, as `sluice sql` prints it: a header comment, then
 * every object's SQL in order. Returns 0 and a malloc'd string in *out
 * (caller frees), or the error of sl_schema_build. */
int sl_schema_ddl(const sl_model *m, char **out, char *err, size_t errlen);

/* A JSON description of s that migrate records with each migration:
 * {"format":1,"tables":[{"name","pipeline","stage","channel","columns":
 * [{"name","type"}...]}...]}. Returns a malloc'd string (caller frees) or
 * NULL on allocation failure. */
char *sl_schema_snapshot(const sl_schema *s);

#endif
