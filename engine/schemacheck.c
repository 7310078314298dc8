/* schemacheck.c - does the database hold what the loaded pipelines need?
 *
 * One catalog query per check: every queue table of the model with its
 * columns and their types, compared with sl_schema_build()'s tables. Used
 * by `sluice run` before any worker starts and by /readyz. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "error.h"
#include "migrate.h"
#include "schema.h"

/* Finds table t's column named col in the catalog rows (table, column,
 * type); returns the row or -1. */
static int catalog_row(const PGresult *r, const char *t, const char *col) {
    for (int i = 0; i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), t) == 0 &&
            strcmp(PQgetvalue(r, i, 1), col) == 0)
            return i;
    return -1;
}

static int table_known(const PGresult *r, const char *t) {
    for (int i = 0; i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), t) == 0) return 1;
    return 0;
}

/* Non-zero when the queue of st must exist for a run of the stages picked
 * by `only`: st is picked, or a picked stage hands off to it. */
static int needed(const sl_stage *st, const char *const *only, size_t nonly) {
    if (sl_stage_selected(st, only, nonly)) return 1;
    const sl_pipeline *p = st->pipeline;
    for (size_t k = 0; k < p->nstages; k++) {
        if (!sl_stage_selected(&p->stages[k], only, nonly)) continue;
        for (size_t i = 0; i < p->stages[k].nnext; i++)
            if (p->stages[k].next[i].stage == st) return 1;
    }
    return 0;
}

/* The first difference between the selected tables of s and the catalog,
 * in words, or 0. */
static int compare(const sl_schema *s, const char *const *only, size_t nonly,
                   const PGresult *r, char *err, size_t errlen) {
    for (size_t i = 0; i < s->ntables; i++) {
        const sl_schema_table *t = &s->tables[i];
        const sl_stage *st = t->stage;
        if (!needed(st, only, nonly)) continue;
        if (!table_known(r, t->name)) {
            snprintf(err, errlen,
                     "queue %s of pipeline %s is missing: run `sluice "
                     "migrate -p %s`",
                     t->name, st->pipeline->name, st->pipeline->file);
            return -SL_EREFUSED;
        }
        for (size_t k = 0; k < t->ncolumns; k++) {
            const sl_schema_column *c = &t->columns[k];
            int row = catalog_row(r, t->name, c->name);
            if (row < 0 || strcmp(PQgetvalue(r, row, 2), c->cat_type) != 0) {
                snprintf(err, errlen,
                         "queue %s of pipeline %s %s column %s (%s): run "
                         "`sluice migrate -p %s`",
                         t->name, st->pipeline->name,
                         row < 0 ? "lacks" : "has another type for",
                         c->name, c->cat_type, st->pipeline->file);
                return -SL_EREFUSED;
            }
        }
    }
    return 0;
}

/* sluice.schedule_ticks, when a picked stage has a schedule. */
static int check_ticks(PGconn *c, const sl_model *m, const char *const *only,
                       size_t nonly, char *err, size_t errlen) {
    const sl_stage *st = NULL;
    for (size_t i = 0; i < m->npipelines && !st; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages && !st; k++)
            if (m->pipelines[i].stages[k].schedule &&
                sl_stage_selected(&m->pipelines[i].stages[k], only, nonly))
                st = &m->pipelines[i].stages[k];
    if (!st) return 0;
    PGresult *r =
        PQexec(c, "SELECT to_regclass('sluice.schedule_ticks') IS NOT NULL");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK &&
             PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (ok) return 0;
    snprintf(err, errlen,
             "table sluice.schedule_ticks (for the schedule of stage %s) is "
             "missing: run `sluice migrate -p %s`",
             st->name, st->pipeline->file);
    return -SL_EREFUSED;
}

int sl_migrate_check(PGconn *c, const sl_model *m, char *err, size_t errlen) {
    return sl_migrate_check_stages(c, m, NULL, 0, err, errlen);
}

int sl_migrate_check_stages(PGconn *c, const sl_model *m,
                            const char *const *only, size_t nonly, char *err,
                            size_t errlen) {
    assert(c && m && err && (only || nonly == 0));
    sl_schema *s = NULL;
    int rc = sl_schema_build(m, &s, err, errlen);
    if (rc != 0) return rc;
    sl_buf names;
    sl_buf_init(&names);
    sl_buf_puts(&names, "{");
    for (size_t i = 0; i < s->ntables; i++) {
        if (i) sl_buf_puts(&names, ",");
        sl_buf_puts(&names, s->tables[i].name); /* validated identifiers */
    }
    sl_buf_puts(&names, "}");
    const char *params[1] = {sl_buf_str(&names)};
    PGresult *r = PQexecParams(
        c,
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
        "  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
        " WHERE c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p')"
        "   AND pg_table_is_visible(c.oid) AND a.attnum > 0"
        "   AND NOT a.attisdropped",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m2[512];
        snprintf(err, errlen, "checking the schema: %s",
                 sl_db_error(c, r, m2, sizeof m2));
        rc = sl_db_errclass(c, r, SL_EC_INTERNAL) == SL_EC_CONNECTION
                 ? -SL_ECONN
                 : -SL_EDB;
    } else {
        rc = compare(s, only, nonly, r, err, errlen);
        if (rc == 0) rc = check_ticks(c, m, only, nonly, err, errlen);
    }
    PQclear(r);
    sl_buf_free(&names);
    sl_schema_free(s);
    return rc;
}
