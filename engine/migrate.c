/* migrate.c - applying the schema to a database (migrate.h).
 *
 * The plan is computed from the catalog, not from the recorded history:
 * whatever state a database is in (fresh, made by the reference design's
 * SQL, edited by hand, migrated by an older sluice), the plan holds exactly
 * the statements that bring it to the schema the pipelines imply. The
 * history (sluice.migrations) adds one thing the catalog cannot say: which
 * tables an earlier migration created, so that a queue removed from the
 * pipelines is noticed even if its table comment was lost.
 *
 * Every name that reaches SQL here is quoted with sl_buf_ident(); names are
 * passed to catalog queries as bound parameters.
 */
#include "migrate.h"
#include "migrate_priv.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "alerts.h"
#include "ops.h"
#include "buf.h"
#include "db.h"
#include "error.h"
#include "schedule.h"
#include "schema.h"

extern const char sl_base_sql[]; /* generated from sql/base.sql */

const char *sl_migrate_base_sql(void) {
    return sl_base_sql;
}

/* pg_advisory_xact_lock(LOCK_CLASS, LOCK_OBJ): 'sluc', 1. */
#define LOCK_CLASS "1936487779"
#define LOCK_OBJ "1"

/* ------------------------------------------------------------ plan */

void sl_migrate__fail(mctx *x, int rc, const char *fmt, ...) {
    if (x->rc) return;
    x->rc = rc;
    if (x->err && x->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err, x->errlen, fmt, ap);
        va_end(ap);
    }
}

/* Adds a step; takes ownership of nothing (copies). */
void sl_migrate__add_step(mctx *x, const char *sql, const char *fmt, ...) {
    if (x->rc) return;
    if (x->nsteps == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 32;
        step *s = realloc(x->steps, cap * sizeof *s);
        if (!s) {
            sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
            return;
        }
        x->steps = s;
        x->cap = cap;
    }
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* Summaries become SQL comments: keep them on one line. */
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    step *s = &x->steps[x->nsteps];
    s->summary = strdup(line);
    s->sql = strdup(sql);
    if (!s->summary || !s->sql) {
        free(s->summary);
        free(s->sql);
        sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        return;
    }
    x->nsteps++;
}

/* A destructive change: refused (noted) unless allowed, then a step. */
void sl_migrate__add_destructive(mctx *x, const char *sql, const char *what) {
    x->ndestructive++;
    sl_buf_printf(&x->refused, "%s\n", what);
    sl_migrate__add_step(x, sql, "%s", what);
}

char *sl_migrate__qident(const char *name) {
    sl_buf b;
    sl_buf_init(&b);
    sl_buf_ident(&b, name);
    return sl_buf_steal(&b);
}

/* ------------------------------------------------------------ SQL helpers */

/* Runs a query with text parameters; returns the result (caller PQclear)
 * or NULL with x->rc set. */
PGresult *sl_migrate__query(mctx *x, const char *sql, int n,
                            const char *const *params) {
    if (x->rc) return NULL;
    PGresult *r = PQexecParams(x->c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        char msg[600];
        sl_db_error(x->c, r, msg, sizeof msg);
        msg[strcspn(msg, "\n")] = '\0';
        sl_migrate__fail(x, -SL_EDB, "catalog query failed: %s", msg);
        PQclear(r);
        return NULL;
    }
    return r;
}

static int exec_simple(PGconn *c, const char *sql, char *msg, size_t len) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok && msg) {
        sl_db_error(c, r, msg, len);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* The comment of a catalog object found by `sql` (one row, one column):
 * *exists tells whether the row was there; *comment is malloc'd or NULL. */
static void object_comment(mctx *x, const char *sql, const char *p1,
                           const char *p2, int *exists, char **comment) {
    *exists = 0;
    *comment = NULL;
    const char *params[2] = {p1, p2};
    PGresult *r = sl_migrate__query(x, sql, p2 ? 2 : 1, params);
    if (!r) return;
    if (PQntuples(r) > 0) {
        *exists = 1;
        if (!PQgetisnull(r, 0, 0)) *comment = strdup(PQgetvalue(r, 0, 0));
    }
    PQclear(r);
}

long sl_migrate__count_rows(mctx *x, const char *table, const char *column) {
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT count(*) FROM ");
    sl_buf_ident(&q, table);
    if (column) {
        sl_buf_puts(&q, " WHERE ");
        sl_buf_ident(&q, column);
        sl_buf_puts(&q, " IS NOT NULL");
    }
    PGresult *r = sl_buf_failed(&q)
                      ? NULL
                      : sl_migrate__query(x, sl_buf_str(&q), 0, NULL);
    sl_buf_free(&q);
    long n = r && PQntuples(r) ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    return n;
}

/* ------------------------------------------------------------ base.sql */

static int base_objects_present(mctx *x) {
    for (size_t i = 0; i < sizeof x->base_before && x->base_before[i]; i++)
        if (x->base_before[i] != 't') return 0;
    return x->base_before[0] == 't';
}

/* Applies sql/base.sql when a pipeline needs it (or --base) and it changed
 * or an object of it is missing; lists what it created. */
static void plan_base(mctx *x) {
    const char *params[1] = {sl_base_sql};
    PGresult *r = sl_migrate__query(
        x, "SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')", 1, params);
    if (!r) return;
    x->base_checksum = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!x->base_checksum) {
        sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        return;
    }
    x->base_needed = sl_migrate__base_needed(x);
    if (!x->base_needed) return;
    sl_migrate__base_before(x);
    int same = x->last_base_checksum &&
               strcmp(x->last_base_checksum, x->base_checksum) == 0;
    if (same && base_objects_present(x)) return;
    if (x->rc) return;
    /* Applied at once (not just planned) so that the queue tables' plan
     * sees the base tables they reference. */
    char msg[600];
    if (exec_simple(x->c, sl_base_sql, msg, sizeof msg) != 0) {
        sl_migrate__fail(x, -SL_EDB, "applying sql/base.sql: %s", msg);
        return;
    }
    x->base_applied = 1;
    sl_migrate__base_created(x);
}

/* ------------------------------------------------------------ history */

static void ensure_history(mctx *x) {
    char msg[600];
    if (exec_simple(x->c,
                    "CREATE SCHEMA IF NOT EXISTS sluice;\n"
                    "CREATE TABLE IF NOT EXISTS sluice.migrations (\n"
                    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
                    "  applied_at timestamptz NOT NULL DEFAULT now(),\n"
                    "  checksum text NOT NULL,\n"
                    "  base_checksum text,\n"
                    "  destructive boolean NOT NULL DEFAULT false,\n"
                    "  ddl text NOT NULL,\n"
                    "  snapshot jsonb NOT NULL\n"
                    ");\n"
                    /* Every action of the web API (audit.h). */
                    "CREATE TABLE IF NOT EXISTS sluice.audit (\n"
                    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
                    "  at timestamptz NOT NULL DEFAULT now(),\n"
                    "  who text NOT NULL,\n"
                    "  what text NOT NULL,\n"
                    "  filter jsonb NOT NULL,\n"
                    "  count bigint NOT NULL\n"
                    ");\n"
                    /* Which pipeline owns what (migrate_scope.c). */
                    SL_MIGRATE_PIPELINES_DDL,
                    msg, sizeof msg) != 0) {
        sl_migrate__fail(x, -SL_EDB,
                         "creating sluice.migrations, sluice.audit and "
                         "sluice.pipelines: %s",
                         msg);
        return;
    }
    PGresult *r =
        sl_migrate__query(x,
                          "SELECT base_checksum, snapshot::text FROM "
                          "sluice.migrations ORDER BY id DESC LIMIT 1",
                          0, NULL);
    if (!r) return;
    if (PQntuples(r) == 1) {
        if (!PQgetisnull(r, 0, 0))
            x->last_base_checksum = strdup(PQgetvalue(r, 0, 0));
        x->last_snapshot = json_loads(PQgetvalue(r, 0, 1), 0, NULL);
    }
    PQclear(r);
}

/* sluice.alerts, when a pipeline has alert rules and it is missing. */
static void plan_alerts(mctx *x) {
    if (!sl_alerts_any(x->m)) return;
    PGresult *r = sl_migrate__query(
        x, "SELECT to_regclass('sluice.alerts') IS NULL", 0, NULL);
    if (!r) return;
    int missing = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (missing)
        sl_migrate__add_step(x, sl_alerts_ddl,
                             "create table sluice.alerts (alert state)");
}

/* sluice.schedule_ticks, when a pipeline has a schedule and it is
 * missing. */
static void plan_schedules(mctx *x) {
    if (!sl_schedule_any(x->m)) return;
    PGresult *r = sl_migrate__query(
        x, "SELECT to_regclass('sluice.schedule_ticks') IS NULL", 0, NULL);
    if (!r) return;
    int missing = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (missing)
        sl_migrate__add_step(x, sl_schedule_ddl, "create table "
                             "sluice.schedule_ticks (schedule ticks)");
}

/* The operators' tables (ops.h), when one of them is missing. */
static void plan_ops(mctx *x) {
    PGresult *r = sl_migrate__query(
        x,
        "SELECT to_regclass('sluice.workers') IS NULL OR"
        " to_regclass('sluice.paused') IS NULL OR"
        " to_regclass('sluice.stats_minute') IS NULL",
        0, NULL);
    if (!r) return;
    int missing = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (missing)
        sl_migrate__add_step(x, sl_ops_ddl,
                             "create the operators' tables (sluice.workers,"
                             " sluice.paused, sluice.stats_minute)");
}

/* ------------------------------------------------------------ checks */

int sl_migrate__model_has_queue(const mctx *x, const char *name) {
    for (size_t i = 0; i < x->s->ntables; i++)
        if (strcmp(x->s->tables[i].name, name) == 0) return 1;
    return 0;
}

/* Columns of table: name -> (type name, enum labels). Returns the result
 * of: attname, format_type, typtype, enum labels (text[]); NULL rows when
 * the table does not exist. */
static PGresult *table_columns(mctx *x, const char *table) {
    char *qt = sl_migrate__qident(table);
    if (!qt) {
        sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        return NULL;
    }
    const char *params[1] = {qt};
    PGresult *r = sl_migrate__query(
        x,
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typtype,"
        " ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e"
        "       WHERE e.enumtypid = a.atttypid ORDER BY e.enumsortorder)"
        "  FROM pg_catalog.pg_attribute a"
        "  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = to_regclass($1) AND a.attnum > 0"
        "   AND NOT a.attisdropped",
        1, params);
    free(qt);
    return r;
}

int sl_migrate__find_row(PGresult *r, int col, const char *value) {
    for (int i = 0; i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, col), value) == 0) return i;
    return -1;
}

/* Does the text[] literal `arr` ({a,b,"c d"}) contain v? Labels checked
 * here are identifiers-like DSL values, compared element-wise. */
static int array_has(const char *arr, const char *v) {
    size_t n = strlen(v);
    const char *p = arr;
    if (*p == '{') p++;
    while (*p && *p != '}') {
        int quoted = *p == '"';
        if (quoted) p++;
        const char *start = p;
        while (*p && (quoted ? *p != '"' : (*p != ',' && *p != '}'))) {
            if (quoted && *p == '\\' && p[1]) p++;
            p++;
        }
        if ((size_t)(p - start) == n && strncmp(start, v, n) == 0) return 1;
        if (quoted && *p == '"') p++;
        if (*p == ',') p++;
    }
    return 0;
}

/* The subject's key column (in r, table_columns' rows) must have the type
 * subject.key_type declares: the queue tables' foreign key takes it. */
static void key_type_check(sl_buf *e, const sl_pipeline *p,
                           const PGresult *r) {
    const sl_subject *sj = &p->subject;
    int row = sl_migrate__find_row((PGresult *)r, 0, sj->key);
    if (row < 0) return;
    const char *have = PQgetvalue(r, row, 1);
    const char *want = sl_key_type_name(sj->key_type);
    if (strcmp(have, want) == 0) return;
    sl_key_type t;
    sl_buf_printf(e,
                  "pipeline \"%s\": subject key %s.%s is of type %s, but "
                  "subject.key_type is %s%s%s%s\n",
                  p->name, sj->table, sj->key, have, want,
                  sl_key_type_parse(have, &t) == 0 ? " (set key_type: " : "",
                  sl_key_type_parse(have, &t) == 0 ? have : "",
                  sl_key_type_parse(have, &t) == 0
                      ? ")"
                      : " (a subject key must be uuid, bigint, integer or "
                        "text)");
}

/* The database must hold what the pipelines reference. All problems are
 * collected into one message. */
static void check_references(mctx *x) {
    sl_buf e;
    sl_buf_init(&e);
    for (size_t i = 0; i < x->m->npipelines && !x->rc; i++) {
        const sl_pipeline *p = &x->m->pipelines[i];
        if (p->has_subject) {
            const sl_subject *sj = &p->subject;
            PGresult *r = table_columns(x, sj->table);
            if (!r) break;
            if (PQntuples(r) == 0) {
                sl_buf_printf(&e,
                              "pipeline \"%s\": subject table \"%s\" does not "
                              "exist (create it first, or let sluice migrate "
                              "apply sql/base.sql)\n",
                              p->name, sj->table);
            } else {
                const char *cols[4] = {sj->key, sj->status_column,
                                       sj->progress_column, sj->detail_column};
                for (int k = 0; k < 4; k++) {
                    if (!cols[k]) continue;
                    if (sl_migrate__find_row(r, 0, cols[k]) < 0)
                        sl_buf_printf(&e,
                                      "pipeline \"%s\": subject table \"%s\" "
                                      "has no column \"%s\"\n",
                                      p->name, sj->table, cols[k]);
                }
                key_type_check(&e, p, r);
                int row = sl_migrate__find_row(r, 0, sj->status_column);
                if (row >= 0 && PQgetvalue(r, row, 2)[0] == 'e') {
                    for (size_t v = 0; v < sj->nstatus_values; v++)
                        if (!array_has(PQgetvalue(r, row, 3),
                                       sj->status_values[v]))
                            sl_buf_printf(
                                &e,
                                "pipeline \"%s\": status value \"%s\" is not "
                                "a value of %s.%s (type %s)\n",
                                p->name, sj->status_values[v], sj->table,
                                sj->status_column, PQgetvalue(r, row, 1));
                }
            }
            PQclear(r);
        }
        if (p->rls.enabled && p->rls.table &&
            !sl_migrate__model_has_queue(x, p->rls.table)) {
            PGresult *r = table_columns(x, p->rls.table);
            if (!r) break;
            if (PQntuples(r) == 0)
                sl_buf_printf(&e,
                              "pipeline \"%s\": security.inherit table \"%s\" "
                              "does not exist\n",
                              p->name, p->rls.table);
            else if (sl_migrate__find_row(r, 0, p->rls.key) < 0)
                sl_buf_printf(&e,
                              "pipeline \"%s\": security.inherit table \"%s\" "
                              "has no column \"%s\"\n",
                              p->name, p->rls.table, p->rls.key);
            PQclear(r);
        }
        for (size_t j = 0; j < p->nstages && !x->rc; j++) {
            const sl_stage *st = &p->stages[j];
            for (size_t k = 0; k < st->ncolumns; k++) {
                const sl_column *c = &st->columns[k];
                if (!c->ref_table ||
                    sl_migrate__model_has_queue(x, c->ref_table))
                    continue;
                PGresult *r = table_columns(x, c->ref_table);
                if (!r) break;
                if (PQntuples(r) == 0)
                    sl_buf_printf(&e,
                                  "queue \"%s\": column \"%s\" references "
                                  "table \"%s\", which does not exist\n",
                                  st->queue, c->name, c->ref_table);
                else if (sl_migrate__find_row(r, 0, c->ref_column) < 0)
                    sl_buf_printf(&e,
                                  "queue \"%s\": column \"%s\" references "
                                  "\"%s\".\"%s\", which does not exist\n",
                                  st->queue, c->name, c->ref_table,
                                  c->ref_column);
                PQclear(r);
            }
        }
    }
    if (!x->rc && e.len) {
        if (e.s[e.len - 1] == '\n') e.s[--e.len] = '\0';
        sl_migrate__fail(x, -SL_EINVAL, "%s", sl_buf_str(&e));
    }
    sl_buf_free(&e);
}

/* ------------------------------------------------------------ objects */

const char *sl_migrate__kind_name(sl_obj_kind k) {
    switch (k) {
    case SL_OBJ_ENUM: return "type";
    case SL_OBJ_FUNCTION: return "function";
    case SL_OBJ_TABLE: return "table";
    case SL_OBJ_INDEX: return "index";
    case SL_OBJ_TRIGGER: return "trigger";
    case SL_OBJ_RLS: return "row level security";
    case SL_OBJ_POLICY: return "policy";
    case SL_OBJ_GRANT: return "grant";
    case SL_OBJ_VIEW: return "view";
    }
    return "object";
}

static void plan_enum(mctx *x, const sl_schema_object *o) {
    char *qn = sl_migrate__qident(o->name);
    const char *params[1] = {qn};
    PGresult *r = qn ? sl_migrate__query(
                           x,
                           "SELECT t.typtype, ARRAY(SELECT e.enumlabel::text"
                           " FROM pg_catalog.pg_enum e WHERE e.enumtypid ="
                           " t.oid ORDER BY e.enumsortorder)"
                           " FROM pg_catalog.pg_type t"
                           " WHERE t.oid = to_regtype($1)",
                           1, params)
                     : NULL;
    if (!qn) sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
    sl_buf q;
    sl_buf_init(&q);
    if (r && PQntuples(r) == 0) {
        sl_buf_printf(&q, "CREATE TYPE %s AS ENUM (", qn);
        for (int i = 0; sl_job_status_values[i]; i++) {
            if (i) sl_buf_puts(&q, ", ");
            sl_buf_literal(&q, sl_job_status_values[i]);
        }
        sl_buf_puts(&q, ");\n");
        sl_migrate__add_step(x, sl_buf_str(&q), "create type %s", o->name);
    } else if (r && PQgetvalue(r, 0, 0)[0] != 'e') {
        sl_migrate__fail(x, -SL_EINVAL, "type \"%s\" exists and is not an enum",
                         o->name);
    } else if (r) {
        for (int i = 0; sl_job_status_values[i]; i++) {
            if (array_has(PQgetvalue(r, 0, 1), sl_job_status_values[i]))
                continue;
            sl_buf_free(&q);
            sl_buf_printf(&q, "ALTER TYPE %s ADD VALUE ", qn);
            sl_buf_literal(&q, sl_job_status_values[i]);
            sl_buf_puts(&q, ";\n");
            sl_migrate__add_step(x, sl_buf_str(&q), "add value '%s' to type %s",
                                 sl_job_status_values[i], o->name);
        }
    }
    if (sl_buf_failed(&q)) sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
    sl_buf_free(&q);
    PQclear(r);
    free(qn);
}

/* Objects recognised by their fingerprint comment. An object of that name
 * without a sluice comment is someone else's: left alone. */
static void plan_fingerprinted(mctx *x, const sl_schema_object *o) {
    const char *sql = NULL;
    char *p1 = NULL;
    const char *p2 = NULL;
    sl_buf b;
    sl_buf_init(&b);
    sl_buf_ident(&b, o->kind == SL_OBJ_TRIGGER || o->kind == SL_OBJ_POLICY
                         ? o->table
                         : o->name);
    if (o->kind == SL_OBJ_FUNCTION) sl_buf_puts(&b, "()");
    p1 = sl_buf_steal(&b);
    if (!p1) {
        sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        return;
    }
    switch (o->kind) {
    case SL_OBJ_FUNCTION:
        sql = "SELECT obj_description(p.oid, 'pg_proc')"
              " FROM pg_catalog.pg_proc p WHERE p.oid = to_regprocedure($1)";
        break;
    case SL_OBJ_INDEX:
    case SL_OBJ_VIEW:
        sql = "SELECT obj_description(c.oid, 'pg_class')"
              " FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)";
        break;
    case SL_OBJ_TRIGGER:
        sql = "SELECT obj_description(t.oid, 'pg_trigger')"
              " FROM pg_catalog.pg_trigger t"
              " WHERE t.tgrelid = to_regclass($1) AND t.tgname = $2";
        p2 = o->name;
        break;
    case SL_OBJ_POLICY:
        sql = "SELECT obj_description(p.oid, 'pg_policy')"
              " FROM pg_catalog.pg_policy p"
              " WHERE p.polrelid = to_regclass($1) AND p.polname = $2";
        p2 = o->name;
        break;
    default: break;
    }
    int exists;
    char *comment;
    object_comment(x, sql, p1, p2, &exists, &comment);
    free(p1);
    if (x->rc) return;
    const char *kind = sl_migrate__kind_name(o->kind);
    char on[200] = "";
    if (o->kind == SL_OBJ_TRIGGER || o->kind == SL_OBJ_POLICY)
        snprintf(on, sizeof on, " on %s", o->table);
    if (!exists) {
        sl_migrate__add_step(x, o->sql, "create %s %s%s", kind, o->name, on);
    } else if (comment && strncmp(comment, "sluice:", 7) == 0 &&
               strcmp(comment, o->fingerprint) != 0) {
        sl_buf q;
        sl_buf_init(&q);
        if (o->replace_sql) sl_buf_puts(&q, o->replace_sql);
        sl_buf_puts(&q, o->sql);
        if (sl_buf_failed(&q)) sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        sl_migrate__add_step(x, sl_buf_str(&q), "replace %s %s%s", kind,
                             o->name, on);
        sl_buf_free(&q);
    }
    free(comment);
}

static void plan_rls(mctx *x, const sl_schema_object *o) {
    char *qt = sl_migrate__qident(o->table);
    const char *params[1] = {qt};
    PGresult *r = qt ? sl_migrate__query(
                           x,
                           "SELECT c.relrowsecurity FROM pg_catalog.pg_class"
                           " c WHERE c.oid = to_regclass($1)",
                           1, params)
                     : NULL;
    if (r && (PQntuples(r) == 0 || PQgetvalue(r, 0, 0)[0] != 't'))
        sl_migrate__add_step(x, o->sql, "enable row level security on %s",
                             o->table);
    PQclear(r);
    free(qt);
}

static int app_role_exists(mctx *x) {
    PGresult *r =
        sl_migrate__query(x,
                          "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = "
                          "'" SL_APP_ROLE "'",
                          0, NULL);
    int yes = r && PQntuples(r) > 0;
    PQclear(r);
    return yes;
}

static void plan_grant(mctx *x, const sl_schema_object *o) {
    if (!app_role_exists(x)) return;
    char *qt = sl_migrate__qident(o->table);
    if (!qt) {
        sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        return;
    }
    int missing = 0;
    char privs[128];
    snprintf(privs, sizeof privs, "%s", o->privileges);
    for (char *save = NULL, *p = strtok_r(privs, ", ", &save); p && !missing;
         p = strtok_r(NULL, ", ", &save)) {
        const char *params[2] = {qt, p};
        PGresult *r =
            sl_migrate__query(x,
                              "SELECT has_table_privilege('" SL_APP_ROLE
                              "', c.oid, $2) FROM pg_catalog.pg_class c"
                              " WHERE c.oid = to_regclass($1)",
                              2, params);
        if (!r) break;
        if (PQntuples(r) == 0 || PQgetvalue(r, 0, 0)[0] != 't') missing = 1;
        PQclear(r);
    }
    /* A queue's column grants: the role may INSERT and UPDATE exactly
     * the listed columns. has_column_privilege also sees a table-wide
     * grant, so a database from before the column grants (table-wide
     * INSERT, UPDATE) differs here and gets the REVOKE ALL + GRANTs. */
    if (!missing && !x->rc && o->insert_columns && o->update_columns) {
        sl_buf ins, upd;
        sl_buf_init(&ins);
        sl_buf_init(&upd);
        sl_buf_printf(&ins, "{%s}", o->insert_columns);
        sl_buf_printf(&upd, "{%s}", o->update_columns);
        const char *params[3] = {qt, sl_buf_str(&ins), sl_buf_str(&upd)};
        PGresult *r = sl_buf_failed(&ins) || sl_buf_failed(&upd)
                          ? NULL
                          : sl_migrate__query(
                                x,
                                "SELECT count(*) FROM pg_catalog.pg_attribute a"
                                " WHERE a.attrelid = to_regclass($1)"
                                "   AND a.attnum > 0 AND NOT a.attisdropped"
                                "   AND (has_column_privilege('" SL_APP_ROLE
                                "', a.attrelid, a.attnum, 'INSERT')"
                                "        <> (a.attname = ANY ($2::text[]))"
                                "     OR has_column_privilege('" SL_APP_ROLE
                                "', a.attrelid, a.attnum, 'UPDATE')"
                                "        <> (a.attname = ANY ($3::text[])))",
                                3, params);
        if (r && PQntuples(r) == 1 && atol(PQgetvalue(r, 0, 0)) > 0)
            missing = 1;
        PQclear(r);
        sl_buf_free(&ins);
        sl_buf_free(&upd);
    }
    free(qt);
    if (missing && o->insert_columns)
        sl_migrate__add_step(
            x, o->sql, "grant %s, INSERT (%s), UPDATE (%s) on %s to " SL_APP_ROLE,
            o->privileges, o->insert_columns, o->update_columns, o->table);
    else if (missing)
        sl_migrate__add_step(x, o->sql, "grant %s on %s to " SL_APP_ROLE,
                             o->privileges, o->table);
}

static void plan_all(mctx *x) {
    for (size_t i = 0; i < x->s->nobjects && !x->rc; i++) {
        const sl_schema_object *o = &x->s->objects[i];
        switch (o->kind) {
        case SL_OBJ_ENUM: plan_enum(x, o); break;
        case SL_OBJ_TABLE: sl_migrate__plan_table(x, o); break;
        case SL_OBJ_RLS: plan_rls(x, o); break;
        case SL_OBJ_GRANT: plan_grant(x, o); break;
        default: plan_fingerprinted(x, o); break;
        }
    }
    sl_migrate__find_dropped_tables(x);
    sl_migrate__plan_stale(x, 0);
    sl_migrate__plan_drop_tables(x);
    sl_migrate__plan_stale(x, 1);
}

/* Reads the history and the owners, then plans everything. The schema
 * *s is rebuilt when other applications' queues share the database (the
 * statistics view counts them too). */
static void plan(mctx *x, sl_schema **s) {
    ensure_history(x);
    sl_migrate__load_owners(x);
    sl_migrate__find_others(x);
    if (!x->rc && x->nothers) {
        sl_schema *with = NULL;
        int rc = sl_schema_build_ex(x->m, (const char *const *)x->others,
                                    x->nothers, &with, x->err, x->errlen);
        if (rc) {
            x->rc = rc;
            return;
        }
        sl_schema_free(*s);
        x->s = *s = with;
    }
    plan_base(x);
    check_references(x);
    plan_all(x);
    plan_alerts(x);
    plan_schedules(x);
    plan_ops(x);
    sl_migrate__plan_owners(x);
}

/* ------------------------------------------------------------ apply */

static void apply_steps(mctx *x) {
    for (size_t i = 0; i < x->nsteps && !x->rc; i++) {
        char msg[800];
        if (exec_simple(x->c, x->steps[i].sql, msg, sizeof msg) != 0)
            sl_migrate__fail(x, -SL_EDB, "%s: %s", x->steps[i].summary, msg);
    }
}

static void record(mctx *x, const char *ddl, sl_migrate_result *res) {
    char *snap = sl_schema_snapshot(x->s);
    if (!snap) {
        sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        return;
    }
    const char *base =
        x->base_needed ? x->base_checksum : x->last_base_checksum;
    const char *params[4] = {ddl, snap, base,
                             x->ndestructive ? "true" : "false"};
    PGresult *r =
        sl_migrate__query(x,
                          "INSERT INTO sluice.migrations"
                          " (checksum, ddl, snapshot, base_checksum,"
                          "  destructive)"
                          " VALUES (encode(sha256(convert_to($1, 'UTF8')),"
                          " 'hex'), $1, $2::jsonb, $3, $4::boolean)"
                          " RETURNING id",
                          4, params);
    if (r && PQntuples(r) == 1) res->id = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    free(snap);
}

void sl_migrate_result_free(sl_migrate_result *r) {
    if (!r) return;
    free(r->sql);
    free(r->summary);
    free(r->refused);
    memset(r, 0, sizeof *r);
}

int sl_migrate(PGconn *c, const sl_model *m, const sl_migrate_opts *o,
               sl_migrate_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    if (err && errlen) err[0] = '\0';
    mctx x;
    memset(&x, 0, sizeof x);
    x.c = c;
    x.m = m;
    x.err = err;
    x.errlen = errlen;
    if (o) x.o = *o;
    sl_buf_init(&x.refused);
    sl_buf_init(&x.base_created);

    /* Built once before connecting, so an invalid model fails early; built
     * again below with the queues of other applications for the view. */
    sl_schema *s = NULL;
    int rc = sl_schema_build(m, &s, err, errlen);
    if (rc) return rc;
    x.s = s;

    char msg[600];
    if (PQtransactionStatus(c) != PQTRANS_IDLE) {
        sl_migrate__fail(&x, -SL_EDB, "the connection is %s",
                         PQstatus(c) == CONNECTION_OK ? "inside a transaction"
                                                      : "not connected");
        goto out_schema;
    }
    if (exec_simple(c, "BEGIN", msg, sizeof msg) != 0) {
        sl_migrate__fail(&x, -SL_EDB, "BEGIN: %s", msg);
        goto out_schema;
    }
    /* Notices ("relation exists, skipping") are noise for the caller. */
    if (exec_simple(c, "SET LOCAL client_min_messages = warning", msg,
                    sizeof msg) != 0 ||
        exec_simple(
            c, "SELECT pg_advisory_xact_lock(" LOCK_CLASS ", " LOCK_OBJ ")",
            msg, sizeof msg) != 0) {
        sl_migrate__fail(&x, -SL_EDB, "taking the migration lock: %s", msg);
        goto out_rollback;
    }
    plan(&x, &s);
    if (x.rc) goto out_rollback;

    if (x.ndestructive && !x.o.allow_destructive) {
        res->refused = sl_buf_steal(&x.refused);
        sl_migrate__fail(&x, -SL_EREFUSED,
                         "refusing %d destructive change%s (rerun with "
                         "--allow-destructive to apply):\n%s",
                         x.ndestructive, x.ndestructive == 1 ? "" : "s",
                         res->refused ? res->refused : "");
        if (err && errlen) {
            size_t n = strlen(err);
            if (n && err[n - 1] == '\n') err[n - 1] = '\0';
        }
        goto out_rollback;
    }
    if (!x.base_applied && x.nsteps == 0) goto out_rollback; /* up to date */

    apply_steps(&x);
    if (x.rc) goto out_rollback;

    sl_buf sql, sum;
    sl_buf_init(&sql);
    sl_buf_init(&sum);
    if (x.base_applied) {
        sl_buf_puts(&sql, "-- apply sql/base.sql\n");
        sl_buf_puts(&sql, sl_base_sql);
        sl_buf_puts(&sum, "apply sql/base.sql\n");
        if (x.base_created.len) sl_buf_puts(&sum, sl_buf_str(&x.base_created));
    }
    for (size_t i = 0; i < x.nsteps; i++) {
        sl_buf_printf(&sql, "%s-- %s\n%s", sql.len ? "\n" : "",
                      x.steps[i].summary, x.steps[i].sql);
        sl_buf_printf(&sum, "%s\n", x.steps[i].summary);
    }
    int failed = sl_buf_failed(&sql) || sl_buf_failed(&sum);
    res->sql = sl_buf_steal(&sql);
    res->summary = sl_buf_steal(&sum);
    if (failed || !res->sql || !res->summary) {
        sl_migrate__fail(&x, -SL_ENOMEM, "out of memory");
        goto out_rollback;
    }
    res->changed = 1;
    if (x.o.dry_run) goto out_rollback;
    record(&x, res->sql, res);
    if (x.rc) goto out_rollback;
    if (exec_simple(c, "COMMIT", msg, sizeof msg) != 0) {
        sl_migrate__fail(&x, -SL_EDB, "COMMIT: %s", msg);
        res->id = 0;
    }
    goto out_schema;

out_rollback:
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        exec_simple(c, "ROLLBACK", NULL, 0);
    if (x.rc && x.rc != -SL_EREFUSED) res->changed = 0;
out_schema:
    for (size_t i = 0; i < x.nsteps; i++) {
        free(x.steps[i].summary);
        free(x.steps[i].sql);
    }
    free(x.steps);
    for (size_t i = 0; i < x.ndropped; i++)
        free(x.dropped[i]);
    free(x.dropped);
    sl_buf_free(&x.refused);
    sl_buf_free(&x.base_created);
    for (size_t i = 0; i < x.nothers; i++)
        free(x.others[i]);
    free(x.others);
    json_decref(x.owners);
    json_decref(x.last_snapshot);
    free(x.last_base_checksum);
    free(x.base_checksum);
    sl_schema_free(s);
    return x.rc;
}
