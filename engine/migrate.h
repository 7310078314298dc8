/* migrate.h - bringing a database up to the schema the pipelines imply.
 *
 * sl_migrate() takes a transaction-scoped advisory lock, applies
 * sql/base.sql (embedded in the binary) when a pipeline references its
 * tables (or o->base) and it changed or its objects are missing, compares
 * the catalog with sl_schema_build()'s objects and runs only what is
 * missing or changed, all in ONE transaction, and records the SQL it ran
 * with a snapshot of the model in sluice.migrations and what each pipeline
 * owns in sluice.pipelines. Only objects of the pipelines in the model
 * (and o->drop_pipelines) are changed or dropped: other applications'
 * pipelines in the same database are left alone. Additive
 * changes (new queues, columns, indexes, triggers, a changed channel) are
 * applied; destructive ones (a queue table or column the pipelines no
 * longer declare, a changed column type) are refused unless
 * allow_destructive is set. docs/schema.md describes the rules.
 */
#ifndef SL_MIGRATE_H
#define SL_MIGRATE_H

#include <libpq-fe.h>
#include <stddef.h>

#include "model.h"

typedef struct sl_migrate_opts {
    int allow_destructive; /* apply drops and type changes */
    int dry_run;           /* run everything, then roll back: res->sql is what a
                              real run would execute */
    int skip_base; /* leave sql/base.sql out (the app owns those tables) */
    int base;      /* apply sql/base.sql even when no pipeline references
                      its tables (without this, only when one does) */
    const char *const *drop_pipelines; /* pipelines no longer defined
                                          whose objects are to be dropped
                                          (destructive), borrowed */
    size_t ndrop_pipelines;
} sl_migrate_opts;

/* What a migration did. Every string is malloc'd and owned by the result:
 * free with sl_migrate_result_free(). */
typedef struct sl_migrate_result {
    int changed;   /* 0: the database was already up to date */
    char *sql;     /* the SQL run (or, dry run, that would run); NULL when
                      nothing changed */
    char *summary; /* one line per change, e.g. "add column
                      upload_jobs.external_url"; NULL when nothing */
    char *refused; /* the destructive changes that were refused, one per
                      line; NULL unless sl_migrate returned -SL_EREFUSED */
    long id;       /* the sluice.migrations row recorded, 0 when none */
} sl_migrate_result;

/* Migrates the database behind c (an idle connection, no transaction
 * open; the caller keeps ownership) to model m. Returns 0 on success (see
 * res->changed), -SL_EREFUSED when destructive changes were refused (the
 * database is unchanged; err and res->refused name every table/column),
 * -SL_EINVAL when the database lacks what the pipelines reference (a
 * subject table or column, a referenced table), -SL_EDB on an SQL error
 * (rolled back; err names the step), -SL_ENOMEM. res is always
 * initialised; o may be NULL for the defaults. */
int sl_migrate(PGconn *c, const sl_model *m, const sl_migrate_opts *o,
               sl_migrate_result *res, char *err, size_t errlen);

void sl_migrate_result_free(sl_migrate_result *r);

/* The embedded text of sql/base.sql (static storage). */
const char *sl_migrate_base_sql(void);

/* Checks that the database holds every queue table of m with every column
 * and type the model needs (engine/schemacheck.c). Returns 0; -SL_EREFUSED
 * with "queue X of pipeline P is missing (or lacks column C): run `sluice
 * migrate -p FILE`" in err; -SL_ECONN or -SL_EDB when the check could not
 * run. Reads the catalog only. */
int sl_migrate_check(PGconn *c, const sl_model *m, char *err, size_t errlen);

/* sl_migrate_check for the stages picked by the nonly names in `only`
 * (sl_stage_selected: stage, queue or pipeline names; nonly 0: every
 * stage) and the stages they hand off to, as `sluice run -s` needs: a
 * queue it neither runs nor feeds may be missing. */
int sl_migrate_check_stages(PGconn *c, const sl_model *m,
                            const char *const *only, size_t nonly, char *err,
                            size_t errlen);

/* Writes sql to DIR/YYYYMMDDHHMMSS_sluice.sql (UTC; DIR is created when
 * missing) with a header comment naming the pipelines of m, as `sluice
 * migrate --write` does. Fails rather than overwrite an existing file.
 * Returns 0 with the path in path (pathlen bytes), or -SL_EIO with err. */
int sl_migrate_write(const char *dir, const sl_model *m, const char *sql,
                     char *path, size_t pathlen, char *err, size_t errlen);

#endif
