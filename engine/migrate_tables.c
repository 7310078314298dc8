/* migrate_tables.c - the plan for queue tables: create the new ones,
 * bring existing ones to the model (columns, types, defaults, foreign
 * keys), and, when a stage or pipeline is gone, drop its table and the
 * stale objects only with --allow-destructive. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "error.h"
#include "migrate_priv.h"

/* ------------------------------------------------------------ tables */

/* "5", "'-1'::integer", "(-1)" -> the integer. */
static int parse_int_default(const char *expr, long *v) {
    const char *p = expr;
    while (*p == '(' || *p == '\'')
        p++;
    char *end;
    errno = 0;
    *v = strtol(p, &end, 10);
    return end != p && errno == 0;
}

static void plan_foreign_keys(mctx *x, const sl_schema_table *t, const char *qt,
                              PGresult *cols) {
    const char *params[1] = {qt};
    PGresult *r = sl_migrate__query(
        x,
        "SELECT a.attname, r.relname, ra.attname, c.conname"
        "  FROM pg_catalog.pg_constraint c"
        "  JOIN pg_catalog.pg_attribute a"
        "    ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        "  JOIN pg_catalog.pg_class r ON r.oid = c.confrelid"
        "  JOIN pg_catalog.pg_attribute ra"
        "    ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]"
        " WHERE c.conrelid = to_regclass($1) AND c.contype = 'f'"
        "   AND cardinality(c.conkey) = 1"
        " ORDER BY c.conname",
        1, params);
    if (!r) return;
    sl_buf q;
    sl_buf_init(&q);
    for (size_t i = 0; i < t->ncolumns; i++) {
        const sl_schema_column *c = &t->columns[i];
        if (sl_migrate__find_row(cols, 0, c->name) < 0)
            continue; /* added whole */
        int matched = 0;
        for (int k = 0; k < PQntuples(r); k++) {
            if (strcmp(PQgetvalue(r, k, 0), c->name) != 0) continue;
            if (c->ref_table && !matched &&
                strcmp(PQgetvalue(r, k, 1), c->ref_table) == 0 &&
                strcmp(PQgetvalue(r, k, 2), c->ref_column) == 0) {
                matched = 1;
                continue;
            }
            sl_buf_free(&q);
            sl_buf_printf(&q, "ALTER TABLE %s DROP CONSTRAINT ", qt);
            sl_buf_ident(&q, PQgetvalue(r, k, 3));
            sl_buf_puts(&q, ";\n");
            sl_migrate__add_step(
                x, sl_buf_str(&q), "drop foreign key %s.%s -> %s.%s", t->name,
                c->name, PQgetvalue(r, k, 1), PQgetvalue(r, k, 2));
        }
        if (c->ref_table && !matched) {
            sl_buf_free(&q);
            sl_buf_printf(&q, "ALTER TABLE %s ADD FOREIGN KEY (", qt);
            sl_buf_ident(&q, c->name);
            sl_buf_puts(&q, ") REFERENCES ");
            sl_buf_ident(&q, c->ref_table);
            sl_buf_puts(&q, " (");
            sl_buf_ident(&q, c->ref_column);
            sl_buf_puts(&q, ") ON DELETE CASCADE;\n");
            sl_migrate__add_step(x, sl_buf_str(&q),
                                 "add foreign key %s.%s -> %s.%s", t->name,
                                 c->name, c->ref_table, c->ref_column);
        }
    }
    if (sl_buf_failed(&q)) sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
    sl_buf_free(&q);
    PQclear(r);
}

static void plan_existing_table(mctx *x, const sl_schema_table *t,
                                const char *qt, const char *comment) {
    const char *params[1] = {qt};
    PGresult *cols = sl_migrate__query(
        x,
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod),"
        "       a.attnotnull, pg_get_expr(d.adbin, d.adrelid), ty.typname"
        "  FROM pg_catalog.pg_attribute a"
        "  JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid"
        "  LEFT JOIN pg_catalog.pg_attrdef d"
        "    ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = to_regclass($1) AND a.attnum > 0"
        "   AND NOT a.attisdropped ORDER BY a.attnum",
        1, params);
    if (!cols) return;
    sl_buf q;
    sl_buf_init(&q);
    for (size_t i = 0; i < t->ncolumns && !x->rc; i++) {
        const sl_schema_column *c = &t->columns[i];
        int row = sl_migrate__find_row(cols, 0, c->name);
        sl_buf_free(&q);
        if (row < 0) {
            sl_buf_printf(&q, "ALTER TABLE %s ADD COLUMN %s;\n", qt,
                          c->def_sql);
            sl_migrate__add_step(x, sl_buf_str(&q), "add column %s.%s %s",
                                 t->name, c->name, c->sql_type);
            continue;
        }
        const char *have = PQgetvalue(cols, row, 1);
        int is_enum = strcmp(c->cat_type, "job_status") == 0;
        if (is_enum ? strcmp(PQgetvalue(cols, row, 4), c->cat_type) != 0
                    : strcmp(have, c->cat_type) != 0) {
            sl_buf_printf(&q, "ALTER TABLE %s ALTER COLUMN ", qt);
            sl_buf_ident(&q, c->name);
            sl_buf_printf(&q, " TYPE %s USING ", c->sql_type);
            sl_buf_ident(&q, c->name);
            sl_buf_printf(&q, "::%s;\n", c->sql_type);
            char what[512];
            snprintf(what, sizeof what,
                     "change type of column %s.%s from %s to %s (%ld "
                     "non-null values)",
                     t->name, c->name, have, c->cat_type,
                     sl_migrate__count_rows(x, t->name, c->name));
            sl_migrate__add_destructive(x, sl_buf_str(&q), what);
            sl_buf_free(&q);
        }
        int has_default = !PQgetisnull(cols, row, 3);
        long want, got;
        int default_differs =
            c->default_sql &&
            (!has_default ||
             (strcmp(c->name, "priority") == 0 &&
              parse_int_default(c->default_sql, &want) &&
              (!parse_int_default(PQgetvalue(cols, row, 3), &got) ||
               want != got)));
        if (default_differs) {
            sl_buf_printf(&q, "ALTER TABLE %s ALTER COLUMN ", qt);
            sl_buf_ident(&q, c->name);
            sl_buf_printf(&q, " SET DEFAULT %s;\n", c->default_sql);
            sl_migrate__add_step(x, sl_buf_str(&q),
                                 "set default of %s.%s to %s", t->name, c->name,
                                 c->default_sql);
            sl_buf_free(&q);
        }
        int have_nn = PQgetvalue(cols, row, 2)[0] == 't';
        if (c->not_null && !have_nn) {
            /* Engine columns have defaults: old rows take them. */
            if (c->default_sql) {
                sl_buf_printf(&q, "UPDATE %s SET ", qt);
                sl_buf_ident(&q, c->name);
                sl_buf_puts(&q, " = DEFAULT WHERE ");
                sl_buf_ident(&q, c->name);
                sl_buf_puts(&q, " IS NULL;\n");
            }
            sl_buf_printf(&q, "ALTER TABLE %s ALTER COLUMN ", qt);
            sl_buf_ident(&q, c->name);
            sl_buf_puts(&q, " SET NOT NULL;\n");
            sl_migrate__add_step(x, sl_buf_str(&q), "set not null on %s.%s",
                                 t->name, c->name);
        } else if (!c->not_null && have_nn) {
            sl_buf_printf(&q, "ALTER TABLE %s ALTER COLUMN ", qt);
            sl_buf_ident(&q, c->name);
            sl_buf_puts(&q, " DROP NOT NULL;\n");
            sl_migrate__add_step(x, sl_buf_str(&q), "drop not null on %s.%s",
                                 t->name, c->name);
        }
    }
    /* Columns the pipelines no longer declare. */
    for (int k = 0; k < PQntuples(cols) && !x->rc; k++) {
        const char *name = PQgetvalue(cols, k, 0);
        int wanted = 0;
        for (size_t i = 0; i < t->ncolumns; i++)
            if (strcmp(t->columns[i].name, name) == 0) wanted = 1;
        if (wanted) continue;
        sl_buf_free(&q);
        sl_buf_printf(&q, "ALTER TABLE %s DROP COLUMN ", qt);
        sl_buf_ident(&q, name);
        sl_buf_puts(&q, ";\n");
        char what[512];
        snprintf(what, sizeof what, "drop column %s.%s (%ld non-null values)",
                 t->name, name, sl_migrate__count_rows(x, t->name, name));
        sl_migrate__add_destructive(x, sl_buf_str(&q), what);
    }
    plan_foreign_keys(x, t, qt, cols);
    if (!comment || strcmp(comment, t->comment) != 0) {
        sl_buf_free(&q);
        sl_buf_printf(&q, "COMMENT ON TABLE %s IS ", qt);
        sl_buf_literal(&q, t->comment);
        sl_buf_puts(&q, ";\n");
        sl_migrate__add_step(x, sl_buf_str(&q), "comment on table %s", t->name);
    }
    if (sl_buf_failed(&q)) sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
    sl_buf_free(&q);
    PQclear(cols);
}

void sl_migrate__plan_table(mctx *x, const sl_schema_object *o) {
    const sl_schema_table *t = &x->s->tables[o->table_index];
    char *qt = sl_migrate__qident(t->name);
    if (!qt) {
        sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        return;
    }
    const char *params[1] = {qt};
    PGresult *r =
        sl_migrate__query(x,
                          "SELECT c.relkind, obj_description(c.oid, 'pg_class')"
                          " FROM pg_catalog.pg_class c"
                          " WHERE c.oid = to_regclass($1)",
                          1, params);
    if (r && PQntuples(r) == 0) {
        sl_migrate__add_step(x, t->create_sql, "create table %s", t->name);
    } else if (r) {
        char kind = PQgetvalue(r, 0, 0)[0];
        if (kind != 'r' && kind != 'p')
            sl_migrate__fail(
                x, -SL_EINVAL,
                "queue \"%s\": a relation of that name exists and is not "
                "a table",
                t->name);
        else
            plan_existing_table(
                x, t, qt, PQgetisnull(r, 0, 1) ? NULL : PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    free(qt);
}

/* ------------------------------------------------------------ removals */

static int dropping(const mctx *x, const char *table) {
    for (size_t i = 0; i < x->ndropped; i++)
        if (strcmp(x->dropped[i], table) == 0) return 1;
    return 0;
}

static void note_dropped(mctx *x, const char *table) {
    if (dropping(x, table)) return;
    char **d = realloc(x->dropped, (x->ndropped + 1) * sizeof *d);
    if (!d || !(d[x->ndropped] = strdup(table))) {
        if (d) x->dropped = d;
        sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        return;
    }
    x->dropped = d;
    x->ndropped++;
}

/* Queue tables that exist but are no longer declared: those with our table
 * comment in the current schema, and those an earlier migration recorded. */
void sl_migrate__find_dropped_tables(mctx *x) {
    PGresult *r = sl_migrate__query(
        x,
        "SELECT c.relname FROM pg_catalog.pg_class c"
        " WHERE c.relkind IN ('r', 'p')"
        "   AND c.relnamespace ="
        "       to_regnamespace(current_schema())"
        "   AND obj_description(c.oid, 'pg_class') LIKE '" QUEUE_COMMENT_PREFIX
        "%'"
        " ORDER BY 1",
        0, NULL);
    for (int i = 0; r && i < PQntuples(r); i++)
        if (!sl_migrate__model_has_queue(x, PQgetvalue(r, i, 0)) &&
            sl_migrate__owned(x, SL_OBJ_TABLE, PQgetvalue(r, i, 0),
                              PQgetvalue(r, i, 0)))
            note_dropped(x, PQgetvalue(r, i, 0));
    PQclear(r);
    json_t *tables = json_object_get(x->last_snapshot, "tables");
    size_t i;
    json_t *jt;
    json_array_foreach(tables, i, jt) {
        const char *name = json_string_value(json_object_get(jt, "name"));
        const char *owner =
            json_string_value(json_object_get(jt, "pipeline"));
        if (!name || sl_migrate__model_has_queue(x, name) ||
            dropping(x, name) || !sl_migrate__given(x, owner))
            continue;
        char *qn = sl_migrate__qident(name);
        const char *params[1] = {qn};
        PGresult *e =
            qn ? sl_migrate__query(x,
                                   "SELECT 1 FROM pg_catalog.pg_class c WHERE"
                                   " c.oid = to_regclass($1)"
                                   " AND c.relkind IN ('r', 'p')",
                                   1, params)
               : NULL;
        if (e && PQntuples(e) > 0) note_dropped(x, name);
        PQclear(e);
        free(qn);
    }
}

void sl_migrate__plan_drop_tables(mctx *x) {
    for (size_t i = 0; i < x->ndropped && !x->rc; i++) {
        sl_buf q;
        sl_buf_init(&q);
        sl_buf_puts(&q, "DROP TABLE ");
        sl_buf_ident(&q, x->dropped[i]);
        sl_buf_puts(&q, ";\n");
        char what[512];
        snprintf(what, sizeof what, "drop table %s (%ld rows)", x->dropped[i],
                 sl_migrate__count_rows(x, x->dropped[i], NULL));
        if (sl_buf_failed(&q)) sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        sl_migrate__add_destructive(x, sl_buf_str(&q), what);
        sl_buf_free(&q);
    }
}

static int wanted_object(const mctx *x, sl_obj_kind kind, const char *name,
                         const char *table) {
    for (size_t i = 0; i < x->s->nobjects; i++) {
        const sl_schema_object *o = &x->s->objects[i];
        if (o->kind == kind && strcmp(o->name, name) == 0 &&
            (!table || (o->table && strcmp(o->table, table) == 0)))
            return 1;
    }
    return 0;
}

/* Generated objects (recognised by their "sluice:" comment) that the
 * pipelines no longer imply: a subject trigger whose channel was renamed,
 * the index of a reference that was removed, the functions of a dropped
 * queue. Removing them loses no data. `functions` selects the pass:
 * functions go last, after the triggers that use them. */
void sl_migrate__plan_stale(mctx *x, int functions) {
    static const char *const q_triggers =
        "SELECT c.relname, t.tgname FROM pg_catalog.pg_trigger t"
        "  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid"
        " WHERE NOT t.tgisinternal"
        "   AND c.relnamespace = to_regnamespace(current_schema())"
        "   AND obj_description(t.oid, 'pg_trigger') LIKE 'sluice:%'"
        " ORDER BY 1, 2";
    static const char *const q_policies =
        "SELECT c.relname, p.polname FROM pg_catalog.pg_policy p"
        "  JOIN pg_catalog.pg_class c ON c.oid = p.polrelid"
        " WHERE c.relnamespace = to_regnamespace(current_schema())"
        "   AND obj_description(p.oid, 'pg_policy') LIKE 'sluice:%'"
        " ORDER BY 1, 2";
    static const char *const q_indexes =
        "SELECT t.relname, c.relname FROM pg_catalog.pg_index i"
        "  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid"
        "  JOIN pg_catalog.pg_class t ON t.oid = i.indrelid"
        " WHERE c.relnamespace = to_regnamespace(current_schema())"
        "   AND obj_description(c.oid, 'pg_class') LIKE 'sluice:%'"
        " ORDER BY 1, 2";
    static const char *const q_functions =
        "SELECT NULL, p.proname FROM pg_catalog.pg_proc p"
        " WHERE p.pronamespace = to_regnamespace(current_schema())"
        "   AND obj_description(p.oid, 'pg_proc') LIKE 'sluice:%'"
        " ORDER BY 2";
    const char *queries[3] = {q_triggers, q_policies, q_indexes};
    const sl_obj_kind kinds[3] = {SL_OBJ_TRIGGER, SL_OBJ_POLICY, SL_OBJ_INDEX};
    int from = functions ? 3 : 0, to = functions ? 4 : 3;
    for (int k = from; k < to && !x->rc; k++) {
        const char *sql = k == 3 ? q_functions : queries[k];
        sl_obj_kind kind = k == 3 ? SL_OBJ_FUNCTION : kinds[k];
        PGresult *r = sl_migrate__query(x, sql, 0, NULL);
        for (int i = 0; r && i < PQntuples(r) && !x->rc; i++) {
            const char *table =
                PQgetisnull(r, i, 0) ? NULL : PQgetvalue(r, i, 0);
            const char *name = PQgetvalue(r, i, 1);
            if (wanted_object(x, kind, name,
                              kind == SL_OBJ_INDEX ? NULL : table))
                continue;
            if (table && dropping(x, table)) continue; /* goes with it */
            if (!sl_migrate__owned(x, kind, name, table)) continue;
            sl_buf q;
            sl_buf_init(&q);
            switch (kind) {
            case SL_OBJ_TRIGGER:
            case SL_OBJ_POLICY:
                sl_buf_printf(&q, "DROP %s IF EXISTS ",
                              kind == SL_OBJ_TRIGGER ? "TRIGGER" : "POLICY");
                sl_buf_ident(&q, name);
                sl_buf_puts(&q, " ON ");
                sl_buf_ident(&q, table);
                break;
            case SL_OBJ_INDEX:
                sl_buf_puts(&q, "DROP INDEX IF EXISTS ");
                sl_buf_ident(&q, name);
                break;
            default:
                sl_buf_puts(&q, "DROP FUNCTION IF EXISTS ");
                sl_buf_ident(&q, name);
                sl_buf_puts(&q, "()");
                break;
            }
            sl_buf_puts(&q, ";\n");
            if (sl_buf_failed(&q))
                sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
            if (table)
                sl_migrate__add_step(x, sl_buf_str(&q),
                                     "drop stale %s %s on %s",
                                     sl_migrate__kind_name(kind), name, table);
            else
                sl_migrate__add_step(x, sl_buf_str(&q), "drop stale %s %s",
                                     sl_migrate__kind_name(kind), name);
            sl_buf_free(&q);
        }
        PQclear(r);
    }
}
