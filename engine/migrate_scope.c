/* migrate_scope.c - what one migration may touch (docs/schema.md).
 *
 * Several applications can share a database: each migration manages only
 * the objects of the pipelines it was given. A queue table names its
 * pipeline in its comment ("sluice queue <pipeline>.<stage>"), and
 * sluice.pipelines records, per pipeline, every object the pipeline's
 * schema holds (tables, indexes, triggers, functions, policies), so a
 * trigger on a subject table or a trigger function is attributed too.
 * Only a database that has no such record yet (made by an earlier
 * version, when one application had the whole database) lets migrate
 * treat an unattributed sluice object as its own.
 *
 * The base schema (sql/base.sql: accounts, projects, interviews, ... and
 * the auth shim and the sluice_app role) is applied only when asked
 * (--base) or when a loaded pipeline references one of its tables.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "error.h"
#include "migrate_priv.h"

/* ------------------------------------------------------------ base */

static const char *const base_tables[] = {
    "accounts", "account_members", "projects",
    "interviews", "insights", "personas", NULL};

static int is_base_table(const mctx *x, const char *t) {
    if (!t || sl_migrate__model_has_queue(x, t)) return 0;
    for (int i = 0; base_tables[i]; i++)
        if (strcmp(base_tables[i], t) == 0) return 1;
    return 0;
}

int sl_migrate__base_needed(const mctx *x) {
    if (x->o.skip_base) return 0;
    if (x->o.base) return 1;
    for (size_t i = 0; i < x->m->npipelines; i++) {
        const sl_pipeline *p = &x->m->pipelines[i];
        if (p->has_subject && is_base_table(x, p->subject.table)) return 1;
        if (p->rls.enabled && is_base_table(x, p->rls.table)) return 1;
        for (size_t j = 0; j < p->nstages; j++)
            for (size_t k = 0; k < p->stages[j].ncolumns; k++)
                if (is_base_table(x, p->stages[j].columns[k].ref_table))
                    return 1;
    }
    return 0;
}

/* What sql/base.sql creates, as it is listed, and how to find it. */
static const struct {
    const char *what, *probe;
} base_objects[] = {
    {"schema auth", "to_regnamespace('auth') IS NOT NULL"},
    {"function auth.uid()", "to_regprocedure('auth.uid()') IS NOT NULL"},
    {"role sluice_app",
     "EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = "
     "'sluice_app')"},
    {"table accounts", "to_regclass('public.accounts') IS NOT NULL"},
    {"table account_members",
     "to_regclass('public.account_members') IS NOT NULL"},
    {"table projects", "to_regclass('public.projects') IS NOT NULL"},
    {"type interview_status",
     "to_regtype('public.interview_status') IS NOT NULL"},
    {"table interviews", "to_regclass('public.interviews') IS NOT NULL"},
    {"table insights", "to_regclass('public.insights') IS NOT NULL"},
    {"table personas", "to_regclass('public.personas') IS NOT NULL"},
    {"function sluice_base_set_updated_at()",
     "to_regprocedure('public.sluice_base_set_updated_at()') IS NOT NULL"},
    {"function sluice_is_account_member(uuid)",
     "to_regprocedure('public.sluice_is_account_member(uuid)') IS NOT NULL"},
    {"function sluice_is_account_owner(uuid)",
     "to_regprocedure('public.sluice_is_account_owner(uuid)') IS NOT NULL"},
    {"function sluice_base_add_account_owner()",
     "to_regprocedure('public.sluice_base_add_account_owner()') IS NOT "
     "NULL"},
};
#define NBASE (sizeof base_objects / sizeof base_objects[0])

/* Which base objects exist: one 't'/'f' per entry in out (NBASE + 1). */
static void base_presence(mctx *x, char *out) {
    memset(out, 'f', NBASE);
    out[NBASE] = '\0';
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT ");
    for (size_t i = 0; i < NBASE; i++)
        sl_buf_printf(&q, "%s(%s)", i ? ", " : "", base_objects[i].probe);
    PGresult *r = sl_buf_failed(&q)
                      ? NULL
                      : sl_migrate__query(x, sl_buf_str(&q), 0, NULL);
    sl_buf_free(&q);
    for (size_t i = 0; r && PQntuples(r) == 1 && i < NBASE; i++)
        out[i] = PQgetvalue(r, 0, (int)i)[0];
    PQclear(r);
}

void sl_migrate__base_before(mctx *x) {
    base_presence(x, x->base_before);
}

/* Lists, after base.sql ran, each base object it created. */
void sl_migrate__base_created(mctx *x) {
    char after[NBASE + 1];
    base_presence(x, after);
    for (size_t i = 0; i < NBASE && !x->rc; i++)
        if (after[i] == 't' && x->base_before[i] != 't')
            sl_buf_printf(&x->base_created, "create %s\n",
                          base_objects[i].what);
}

/* ------------------------------------------------------------ owners */

int sl_migrate__given(const mctx *x, const char *pipeline) {
    for (size_t i = 0; pipeline && i < x->m->npipelines; i++)
        if (strcmp(x->m->pipelines[i].name, pipeline) == 0) return 1;
    for (size_t i = 0; pipeline && i < x->o.ndrop_pipelines; i++)
        if (strcmp(x->o.drop_pipelines[i], pipeline) == 0) return 1;
    return 0;
}

/* The pipeline named by a queue table's comment "sluice queue P.S" into
 * out (n bytes); 0 when the comment is not one. */
static int comment_owner(const char *comment, char *out, size_t n) {
    size_t plen = strlen(QUEUE_COMMENT_PREFIX);
    if (!comment || strncmp(comment, QUEUE_COMMENT_PREFIX, plen) != 0)
        return 0;
    const char *p = comment + plen, *dot = strchr(p, '.');
    size_t len = dot ? (size_t)(dot - p) : strlen(p);
    if (len == 0 || len >= n) return 0;
    memcpy(out, p, len);
    out[len] = '\0';
    return 1;
}

void sl_migrate__load_owners(mctx *x) {
    PGresult *r = sl_migrate__query(
        x, "SELECT name, objects::text FROM sluice.pipelines ORDER BY name",
        0, NULL);
    if (!r) return;
    x->owners = json_object();
    for (int i = 0; x->owners && i < PQntuples(r); i++) {
        json_t *v = json_loads(PQgetvalue(r, i, 1), 0, NULL);
        if (v) json_object_set_new(x->owners, PQgetvalue(r, i, 0), v);
    }
    x->has_owners = PQntuples(r) > 0;
    PQclear(r);
    if (!x->owners) sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
}

/* Queue tables of pipelines this migration was not given: kept out of
 * the plan, counted by the statistics view. A queue the model declares
 * that belongs to such a pipeline is refused: two applications cannot
 * share one queue table. */
void sl_migrate__find_others(mctx *x) {
    PGresult *r = sl_migrate__query(
        x,
        "SELECT c.relname, obj_description(c.oid, 'pg_class')"
        "  FROM pg_catalog.pg_class c"
        " WHERE c.relkind IN ('r', 'p')"
        "   AND c.relnamespace = to_regnamespace(current_schema())"
        "   AND obj_description(c.oid, 'pg_class') LIKE '" QUEUE_COMMENT_PREFIX
        "%' ORDER BY 1",
        0, NULL);
    sl_buf e;
    sl_buf_init(&e);
    for (int i = 0; r && i < PQntuples(r) && !x->rc; i++) {
        const char *t = PQgetvalue(r, i, 0);
        char owner[128];
        if (!comment_owner(PQgetvalue(r, i, 1), owner, sizeof owner) ||
            sl_migrate__given(x, owner))
            continue;
        const sl_stage *mine = NULL;
        for (size_t p = 0; p < x->m->npipelines && !mine; p++)
            for (size_t s = 0; s < x->m->pipelines[p].nstages; s++)
                if (strcmp(x->m->pipelines[p].stages[s].queue, t) == 0)
                    mine = &x->m->pipelines[p].stages[s];
        if (mine) {
            sl_buf_printf(&e,
                          "queue \"%s\" of pipeline \"%s\" is the queue of "
                          "pipeline \"%s\", which this migration was not "
                          "given: name the queue differently, or migrate "
                          "\"%s\" together with \"%s\"\n",
                          t, mine->pipeline->name, owner, owner,
                          mine->pipeline->name);
            continue;
        }
        char **o = realloc(x->others, (x->nothers + 1) * sizeof *o);
        if (!o || !(o[x->nothers] = strdup(t))) {
            if (o) x->others = o;
            sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
            break;
        }
        x->others = o;
        x->nothers++;
    }
    PQclear(r);
    if (e.len && !x->rc) {
        sl_migrate__fail(x, -SL_EINVAL, "%.*s", (int)e.len - 1,
                         sl_buf_str(&e));
    }
    sl_buf_free(&e);
}

/* Does the owners' record of pipeline `p` list (kind, name, table)? */
static int record_lists(json_t *objs, const char *kind, const char *name,
                        const char *table) {
    size_t i;
    json_t *o;
    json_array_foreach(objs, i, o) {
        const char *k = json_string_value(json_object_get(o, "kind"));
        const char *n = json_string_value(json_object_get(o, "name"));
        const char *t = json_string_value(json_object_get(o, "table"));
        if (k && n && strcmp(k, kind) == 0 && strcmp(n, name) == 0 &&
            (!table || (t && strcmp(t, table) == 0)))
            return 1;
    }
    return 0;
}

/* Is function `name` the trigger function of a queue table whose comment
 * names a pipeline this migration was not given? (Unrecorded objects of a
 * database from before sluice.pipelines: another application's queue
 * functions are in use by its triggers.) */
static int used_by_others(mctx *x, const char *name) {
    sl_buf b;
    sl_buf_init(&b);
    sl_buf_ident(&b, name);
    sl_buf_puts(&b, "()");
    const char *params[1] = {sl_buf_str(&b)};
    PGresult *r = sl_buf_failed(&b)
                      ? NULL
                      : sl_migrate__query(
                            x,
                            "SELECT obj_description(t.tgrelid, 'pg_class')"
                            "  FROM pg_catalog.pg_trigger t"
                            " WHERE t.tgfoid = to_regprocedure($1)",
                            1, params);
    sl_buf_free(&b);
    int others = 0;
    for (int i = 0; r && i < PQntuples(r) && !others; i++) {
        char owner[128];
        if (!PQgetisnull(r, i, 0) &&
            comment_owner(PQgetvalue(r, i, 0), owner, sizeof owner) &&
            !sl_migrate__given(x, owner))
            others = 1;
    }
    PQclear(r);
    return others;
}

int sl_migrate__owned(mctx *x, sl_obj_kind kind, const char *name,
                      const char *table) {
    const char *kn = sl_migrate__kind_name(kind);
    const char *p;
    json_t *objs;
    json_object_foreach(x->owners, p, objs) {
        if (record_lists(objs, kn, name, table))
            return sl_migrate__given(x, p);
    }
    if (table) {
        char *qt = sl_migrate__qident(table);
        const char *params[1] = {qt};
        PGresult *r =
            qt ? sl_migrate__query(x,
                                   "SELECT obj_description(to_regclass($1),"
                                   " 'pg_class')",
                                   1, params)
               : NULL;
        free(qt);
        char owner[128];
        int known = r && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) &&
                    comment_owner(PQgetvalue(r, 0, 0), owner, sizeof owner);
        PQclear(r);
        if (known) return sl_migrate__given(x, owner);
    }
    if (kind == SL_OBJ_FUNCTION && !x->has_owners &&
        used_by_others(x, name))
        return 0;
    return !x->has_owners;
}

/* The objects pipeline p owns in s, as recorded in sluice.pipelines. */
static json_t *owned_objects(const mctx *x, const char *p) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < x->s->nobjects; i++) {
        const sl_schema_object *o = &x->s->objects[i];
        if (!o->pipeline || strcmp(o->pipeline, p) != 0) continue;
        if (o->kind == SL_OBJ_RLS || o->kind == SL_OBJ_GRANT) continue;
        json_t *j = json_pack("{s:s,s:s}", "kind",
                              sl_migrate__kind_name(o->kind), "name", o->name);
        if (j && o->table)
            json_object_set_new(j, "table", json_string(o->table));
        json_array_append_new(a, j);
    }
    return a;
}

/* The record of each pipeline to drop goes with its objects. */
static void plan_forget(mctx *x) {
    for (size_t i = 0; i < x->o.ndrop_pipelines && !x->rc; i++) {
        const char *p = x->o.drop_pipelines[i];
        if (!json_object_get(x->owners, p)) continue;
        sl_buf q;
        sl_buf_init(&q);
        sl_buf_puts(&q, "DELETE FROM sluice.pipelines WHERE name = ");
        sl_buf_literal(&q, p);
        sl_buf_puts(&q, ";\n");
        if (sl_buf_failed(&q)) sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        sl_migrate__add_step(x, sl_buf_str(&q), "forget pipeline %s", p);
        sl_buf_free(&q);
    }
}

/* A step that records what each given pipeline owns, when the record
 * differs. The SQL is self-contained, so a --write file records it too. */
void sl_migrate__plan_owners(mctx *x) {
    plan_forget(x);
    for (size_t i = 0; i < x->m->npipelines && !x->rc; i++) {
        const char *p = x->m->pipelines[i].name;
        json_t *want = owned_objects(x, p);
        if (!want) {
            sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
            return;
        }
        json_t *have = json_object_get(x->owners, p);
        if (have && json_equal(have, want)) {
            json_decref(want);
            continue;
        }
        char *txt = json_dumps(want, JSON_COMPACT);
        size_t n = json_array_size(want);
        json_decref(want);
        sl_buf q;
        sl_buf_init(&q);
        sl_buf_puts(&q, SL_MIGRATE_PIPELINES_DDL
                    "INSERT INTO sluice.pipelines (name, objects) VALUES (");
        sl_buf_literal(&q, p);
        sl_buf_puts(&q, ", ");
        sl_buf_literal(&q, txt ? txt : "[]");
        sl_buf_puts(&q, "::jsonb) ON CONFLICT (name) DO UPDATE SET"
                        " objects = EXCLUDED.objects, updated_at = now();\n");
        free(txt);
        if (sl_buf_failed(&q) || !txt)
            sl_migrate__fail(x, -SL_ENOMEM, "out of memory");
        sl_migrate__add_step(x, sl_buf_str(&q),
                             "record pipeline %s (%zu objects)", p, n);
        sl_buf_free(&q);
    }
}
