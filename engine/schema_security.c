/* schema_security.c - who may do what to a queue table: the grants of the
 * application role (column by column), the guard trigger that lets it only
 * cancel and retry, and the Row Level Security policy inherited from the
 * subject (docs/schema.md, "Roles: who sees what"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "schema_priv.h"

void sl_schema__add_grant(builder *b, const char *table, const char *privs) {
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "DO " DQ "\nBEGIN\n  IF EXISTS (SELECT 1 FROM "
                    "pg_catalog.pg_roles WHERE rolname = ");
    sl_buf_literal(&q, SL_APP_ROLE);
    sl_buf_printf(&q, ") THEN\n    GRANT %s ON TABLE ", privs);
    sl_buf_ident(&q, table);
    sl_buf_puts(&q, " TO ");
    sl_buf_ident(&q, SL_APP_ROLE);
    sl_buf_puts(&q, ";\n  END IF;\nEND\n" DQ ";\n");
    char *sql = sl_schema__take(b, &q);
    if (sql)
        sl_schema__add_object(b, SL_OBJ_GRANT, table, table, -1, sql, NULL,
                              NULL);
    free(sql);
    if (!b->rc)
        b->s->objects[b->s->nobjects - 1].privileges = sl_schema__dup(b, privs);
}

/* The application may change one engine column, status, and only to
 * cancel a job or to retry it (what `sluice cancel` and `sluice retry`
 * do); every other change of status by a role that neither owns the table
 * nor bypasses RLS is refused. Column grants keep it away from the rest. */
static void build_guard(builder *b, const sl_schema_table *t) {
    char fn[64];
    sl_schema__derive_name(fn, t->name, "guard");
    char desc[200];
    snprintf(desc, sizeof desc, "status guard function of queue %s", t->name);
    sl_schema__claim_name(b, "function", fn, desc);
    sl_schema__add_function(
        b, fn,
        "BEGIN\n"
        "  IF pg_has_role(current_user, (SELECT c.relowner FROM"
        " pg_catalog.pg_class c WHERE c.oid = TG_RELID), 'USAGE')\n"
        "     OR (SELECT r.rolbypassrls FROM pg_catalog.pg_roles r"
        " WHERE r.rolname = current_user) THEN\n"
        "    RETURN NEW;\n"
        "  END IF;\n"
        "  IF NEW.\"status\" = 'cancelled'\n"
        "     AND OLD.\"status\" IN ('pending', 'retry', 'in_progress') THEN\n"
        "    NEW.\"finished_at\" := now();\n"
        "    NEW.\"locked_until\" := NULL;\n"
        "  ELSIF NEW.\"status\" IN ('pending', 'retry')\n"
        "        AND OLD.\"status\" IN ('error', 'cancelled') THEN\n"
        "    NEW.\"status\" := 'retry';\n"
        "    NEW.\"run_at\" := now();\n"
        "    NEW.\"attempts\" := 0;\n"
        "    NEW.\"locked_by\" := NULL;\n"
        "    NEW.\"locked_until\" := NULL;\n"
        "    NEW.\"finished_at\" := NULL;\n"
        "  ELSE\n"
        "    RAISE EXCEPTION 'permission denied: the application may only"
        " cancel a job (pending, retry, in_progress -> cancelled) or retry it"
        " (error, cancelled -> retry), not change its status from % to %',\n"
        "      OLD.\"status\", NEW.\"status\"\n"
        "      USING ERRCODE = 'insufficient_privilege';\n"
        "  END IF;\n"
        "  RETURN NEW;\n"
        "END\n");
    /* The engine's statements set updated_at (which the application may
     * not), so the claim/complete hot path does not call it. */
    sl_schema__add_trigger(
        b, fn, t->name, "BEFORE UPDATE OF \"status\"",
        "FOR EACH ROW WHEN (OLD.\"status\" IS DISTINCT FROM"
        " NEW.\"status\" AND NEW.\"updated_at\" IS NOT DISTINCT FROM"
        " OLD.\"updated_at\")",
        fn);
}

/* The application role's privileges on a queue: it reads its rows and
 * deletes them; it inserts only the subject key and the declared columns
 * (never an engine column: not priority, run_at, attempts, dedup_key,
 * requested_by, ...); it updates only status, through the guard. A queue
 * without RLS is not granted to it at all. REVOKE ALL first, so a database
 * from before these column grants loses its table-wide INSERT and UPDATE. */
static void build_queue_grant(builder *b, const sl_schema_table *t,
                              const sl_pipeline *p) {
    sl_buf cols, q;
    sl_buf_init(&cols);
    sl_buf_init(&q);
    for (size_t i = 0; i < t->ncolumns; i++) {
        const sl_schema_column *c = &t->columns[i];
        if (c->engine &&
            !(p->has_subject && strcmp(c->name, p->subject.fk) == 0))
            continue;
        if (cols.len) sl_buf_putn(&cols, ",", 1);
        sl_buf_puts(&cols, c->name);
    }
    sl_buf_puts(&q, "DO " DQ "\nBEGIN\n  IF EXISTS (SELECT 1 FROM "
                    "pg_catalog.pg_roles WHERE rolname = ");
    sl_buf_literal(&q, SL_APP_ROLE);
    sl_buf_puts(&q, ") THEN\n    REVOKE ALL ON TABLE ");
    sl_buf_ident(&q, t->name);
    sl_buf_puts(&q, " FROM ");
    sl_buf_ident(&q, SL_APP_ROLE);
    sl_buf_puts(&q, ";\n    GRANT SELECT, DELETE ON TABLE ");
    sl_buf_ident(&q, t->name);
    sl_buf_puts(&q, " TO ");
    sl_buf_ident(&q, SL_APP_ROLE);
    sl_buf_puts(&q, ";\n    GRANT INSERT (");
    for (size_t i = 0, n = 0; i < t->ncolumns; i++) {
        const sl_schema_column *c = &t->columns[i];
        if (c->engine &&
            !(p->has_subject && strcmp(c->name, p->subject.fk) == 0))
            continue;
        if (n++) sl_buf_puts(&q, ", ");
        sl_buf_ident(&q, c->name);
    }
    sl_buf_puts(&q, ") ON TABLE ");
    sl_buf_ident(&q, t->name);
    sl_buf_puts(&q, " TO ");
    sl_buf_ident(&q, SL_APP_ROLE);
    sl_buf_puts(&q, ";\n    GRANT UPDATE (");
    sl_buf_ident(&q, "status");
    sl_buf_puts(&q, ") ON TABLE ");
    sl_buf_ident(&q, t->name);
    sl_buf_puts(&q, " TO ");
    sl_buf_ident(&q, SL_APP_ROLE);
    sl_buf_puts(&q, ";\n  END IF;\nEND\n" DQ ";\n");
    char *sql = sl_schema__take(b, &q), *ins = sl_schema__take(b, &cols);
    if (sql && ins) {
        sl_schema__add_object(b, SL_OBJ_GRANT, t->name, t->name, -1, sql, NULL,
                              NULL);
        if (!b->rc) {
            sl_schema_object *o = &b->s->objects[b->s->nobjects - 1];
            o->privileges = sl_schema__dup(b, "SELECT, DELETE");
            o->insert_columns = ins;
            ins = NULL;
            o->update_columns = sl_schema__dup(b, "status");
        }
    }
    free(sql);
    free(ins);
}

void sl_schema__build_security(builder *b, const sl_schema_table *t,
                               const sl_pipeline *p) {
    char where[200];
    snprintf(where, sizeof where, "pipeline \"%s\", queue \"%s\"", p->name,
             t->name);
    if (!p->rls.enabled) return;
    sl_schema__check_ident(b, p->rls.table, "security.inherit table", where);
    sl_schema__check_ident(b, p->rls.column, "security.inherit column", where);
    sl_schema__check_ident(b, p->rls.key, "security.inherit key", where);
    if (b->rc) return;
    if (!sl_schema__find_column(t, p->rls.column)) {
        sl_schema__fail(
            b, -SL_EINVAL,
            "%s: security.inherit column \"%s\" is not a column of the "
            "queue table",
            where, p->rls.column);
        return;
    }
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "ALTER TABLE ");
    sl_buf_ident(&q, t->name);
    sl_buf_puts(&q, " ENABLE ROW LEVEL SECURITY;\n");
    char *sql = sl_schema__take(b, &q);
    if (sql)
        sl_schema__add_object(b, SL_OBJ_RLS, t->name, t->name, -1, sql, NULL,
                              NULL);
    free(sql);

    /* A queue row is visible exactly when the row it belongs to is: the
     * sub-select runs under the caller's own policies on that table. */
    sl_buf cond;
    sl_buf_init(&cond);
    sl_buf_puts(&cond, "EXISTS (SELECT 1 FROM ");
    sl_buf_ident(&cond, p->rls.table);
    sl_buf_puts(&cond, " ");
    sl_buf_ident(&cond, "t");
    sl_buf_puts(&cond, " WHERE ");
    sl_buf_ident(&cond, "t");
    sl_buf_puts(&cond, ".");
    sl_buf_ident(&cond, p->rls.key);
    sl_buf_puts(&cond, " = ");
    sl_buf_ident(&cond, t->name);
    sl_buf_puts(&cond, ".");
    sl_buf_ident(&cond, p->rls.column);
    sl_buf_puts(&cond, ")");

    sl_buf_init(&q);
    sl_buf_puts(&q, "DROP POLICY IF EXISTS ");
    sl_buf_ident(&q, POLICY_NAME);
    sl_buf_puts(&q, " ON ");
    sl_buf_ident(&q, t->name);
    sl_buf_puts(&q, ";\nCREATE POLICY ");
    sl_buf_ident(&q, POLICY_NAME);
    sl_buf_puts(&q, " ON ");
    sl_buf_ident(&q, t->name);
    sl_buf_printf(&q, " FOR ALL\n  USING (%s)\n  WITH CHECK (%s",
                  sl_buf_str(&cond), sl_buf_str(&cond));
    /* References stay inside what the caller may see: a foreign key is
     * checked without Row Level Security, so without this a tenant could
     * point its job at another account's row (a report of B's project)
     * and have the engine, which runs as the owner, read it. The
     * sub-select runs under the caller's policies on the referenced
     * table, so an invisible row and a missing one are refused alike. */
    for (size_t i = 0; i < t->ncolumns; i++) {
        const sl_schema_column *c = &t->columns[i];
        if (!c->ref_table) continue;
        if (strcmp(c->name, p->rls.column) == 0 &&
            strcmp(c->ref_table, p->rls.table) == 0 &&
            strcmp(c->ref_column, p->rls.key) == 0)
            continue; /* the inherit condition checks it already */
        sl_buf_puts(&q, "\n    AND (");
        sl_buf_ident(&q, t->name);
        sl_buf_putn(&q, ".", 1);
        sl_buf_ident(&q, c->name);
        sl_buf_puts(&q, " IS NULL OR EXISTS (SELECT 1 FROM ");
        sl_buf_ident(&q, c->ref_table);
        sl_buf_puts(&q, " ");
        sl_buf_ident(&q, "r");
        sl_buf_puts(&q, " WHERE ");
        sl_buf_ident(&q, "r");
        sl_buf_putn(&q, ".", 1);
        sl_buf_ident(&q, c->ref_column);
        sl_buf_puts(&q, " = ");
        sl_buf_ident(&q, t->name);
        sl_buf_putn(&q, ".", 1);
        sl_buf_ident(&q, c->name);
        sl_buf_puts(&q, "))");
    }
    sl_buf_puts(&q, ");\n");
    sl_buf on;
    sl_buf_init(&on);
    sl_buf_puts(&on, "POLICY ");
    sl_buf_ident(&on, POLICY_NAME);
    sl_buf_puts(&on, " ON ");
    sl_buf_ident(&on, t->name);
    sql = sl_schema__take(b, &q);
    char *target = sl_schema__take(b, &on);
    if (sl_buf_failed(&cond)) sl_schema__fail(b, -SL_ENOMEM, "out of memory");
    if (sql && target)
        sl_schema__add_object(b, SL_OBJ_POLICY, POLICY_NAME, t->name, -1, sql,
                              target, NULL);
    free(sql);
    free(target);
    sl_buf_free(&cond);

    if (t->history) {
        /* Read and erase, under the same policy; rows arrive only through
         * retention, which runs as the owner. */
        sl_schema__add_grant(b, t->name, "SELECT, DELETE");
        return;
    }
    build_guard(b, t);
    build_queue_grant(b, t, p);
}
