/* schema.c - DDL generation from the pipeline model (schema.h).
 *
 * Everything spliced into SQL is either a constant of this file or an
 * identifier of the model that passed sl_ident_ok() (model.h); identifiers go
 * through sl_buf_ident() (double quotes) and the few that must appear as
 * string constants (NOTIFY channel names, queue names in the statistics
 * view) through sl_buf_literal(). Column types come from the whitelist
 * of model.c (sl_type_normalise), never from the model's string.
 */
#include "schema.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "error.h"
#include "schema_priv.h"

const char *const sl_job_status_values[] = {
    "pending", "in_progress", "done", "error", "retry", "cancelled", NULL};

/* ------------------------------------------------------------ small tools */

static uint64_t fnv64(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* base + "_" + suffix, shortened to 63 bytes with a hash of base when it
 * would be longer, so distinct bases stay distinct. */
void sl_schema__derive_name(char out[64], const char *base,
                            const char *suffix) {
    size_t bl = strlen(base), sl = strlen(suffix);
    if (sl > 40) sl = 40; /* suffixes are short; keep the bound obvious */
    size_t n = 0;
    if (bl + 1 + sl <= 63) {
        memcpy(out, base, bl);
        n = bl;
    } else {
        size_t keep = 63 - 1 - 8 - 1 - sl;
        char hex[9];
        snprintf(hex, sizeof hex, "%08x",
                 (unsigned)(fnv64(base) & 0xffffffffu));
        memcpy(out, base, keep);
        out[keep] = '_';
        memcpy(out + keep + 1, hex, 8);
        n = keep + 9;
    }
    out[n++] = '_';
    memcpy(out + n, suffix, sl);
    out[n + sl] = '\0';
}

/* ------------------------------------------------------------ the builder */

void sl_schema__fail(builder *b, int rc, const char *fmt, ...) {
    if (b->rc) return;
    b->rc = rc;
    if (b->err && b->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, b->errlen, fmt, ap);
        va_end(ap);
    }
}

char *sl_schema__dup(builder *b, const char *s) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) sl_schema__fail(b, -SL_ENOMEM, "out of memory");
    return d;
}

/* Takes the buffer's string (NULL and an error on allocation failure). */
char *sl_schema__take(builder *b, sl_buf *buf) {
    int failed = sl_buf_failed(buf);
    char *s = sl_buf_steal(buf);
    if (failed || !s) {
        free(s);
        sl_schema__fail(b, -SL_ENOMEM, "out of memory");
        return NULL;
    }
    return s;
}

void sl_schema__check_ident(builder *b, const char *s, const char *what,
                            const char *where) {
    if (b->rc) return;
    if (!sl_ident_ok(s))
        sl_schema__fail(b, -SL_EINVAL,
                        "%s: %s \"%s\" is not a valid SQL identifier "
                        "([a-z_][a-z0-9_]*, at most 63 bytes)",
                        where, what, s ? s : "(missing)");
}

/* Registers a generated name in namespace ns ("relation", "function",
 * "trigger on x", "policy on x"); fails on a collision. */
void sl_schema__claim_name(builder *b, const char *ns, const char *name,
                           const char *what) {
    if (b->rc) return;
    for (size_t i = 0; i < b->nnames; i++)
        if (strcmp(b->names[i].ns, ns) == 0 &&
            strcmp(b->names[i].name, name) == 0) {
            sl_schema__fail(
                b, -SL_EINVAL,
                "generated name \"%s\" (%s) collides with %s; rename one "
                "of the queues",
                name, what, b->names[i].what);
            return;
        }
    if (b->nnames == b->cap_names) {
        size_t cap = b->cap_names ? b->cap_names * 2 : 32;
        gen_name *n = realloc(b->names, cap * sizeof *n);
        if (!n) {
            sl_schema__fail(b, -SL_ENOMEM, "out of memory");
            return;
        }
        b->names = n;
        b->cap_names = cap;
    }
    gen_name *g = &b->names[b->nnames];
    g->ns = sl_schema__dup(b, ns);
    g->name = sl_schema__dup(b, name);
    g->what = sl_schema__dup(b, what);
    b->nnames++;
}

/* Appends an object. `create` is its idempotent SQL; when comment_on is
 * set ("INDEX \"x\""), a fingerprint of `create` is recorded as the
 * object's comment. The strings are copied. */
void sl_schema__add_object(builder *b, sl_obj_kind kind, const char *name,
                           const char *table, int table_index,
                           const char *create, const char *comment_on,
                           const char *replace) {
    if (b->rc) return;
    sl_schema *s = b->s;
    if (s->nobjects == b->cap_objects) {
        size_t cap = b->cap_objects ? b->cap_objects * 2 : 32;
        sl_schema_object *o = realloc(s->objects, cap * sizeof *o);
        if (!o) {
            sl_schema__fail(b, -SL_ENOMEM, "out of memory");
            return;
        }
        s->objects = o;
        b->cap_objects = cap;
    }
    sl_schema_object *o = &s->objects[s->nobjects++];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->table_index = table_index;
    o->name = sl_schema__dup(b, name);
    o->table = sl_schema__dup(b, table);
    o->replace_sql = sl_schema__dup(b, replace);
    o->pipeline = b->owner ? sl_schema__dup(b, b->owner) : NULL;
    sl_buf sql;
    sl_buf_init(&sql);
    sl_buf_puts(&sql, create);
    if (comment_on) {
        char fp[32];
        snprintf(fp, sizeof fp, "sluice:%016llx",
                 (unsigned long long)fnv64(create));
        o->fingerprint = sl_schema__dup(b, fp);
        sl_buf_printf(&sql, "COMMENT ON %s IS ", comment_on);
        sl_buf_literal(&sql, fp);
        sl_buf_puts(&sql, ";\n");
    }
    o->sql = sl_schema__take(b, &sql);
}

/* ------------------------------------------------------------ pieces */

static void build_enum(builder *b) {
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "DO " DQ "\nBEGIN\n  IF to_regtype(");
    sl_buf q2;
    sl_buf_init(&q2);
    sl_buf_ident(&q2, ENUM_NAME);
    sl_buf_literal(&q, sl_buf_str(&q2));
    sl_buf_free(&q2);
    sl_buf_puts(&q, ") IS NULL THEN\n    CREATE TYPE ");
    sl_buf_ident(&q, ENUM_NAME);
    sl_buf_puts(&q, " AS ENUM (");
    for (int i = 0; sl_job_status_values[i]; i++) {
        if (i) sl_buf_puts(&q, ", ");
        sl_buf_literal(&q, sl_job_status_values[i]);
    }
    sl_buf_puts(&q, ");\n  END IF;\nEND\n" DQ ";\n");
    /* A database made from the reference design's five-value enum gains
     * the values it lacks. */
    for (int i = 0; sl_job_status_values[i]; i++) {
        sl_buf_puts(&q, "ALTER TYPE ");
        sl_buf_ident(&q, ENUM_NAME);
        sl_buf_puts(&q, " ADD VALUE IF NOT EXISTS ");
        sl_buf_literal(&q, sl_job_status_values[i]);
        sl_buf_puts(&q, ";\n");
    }
    char *sql = sl_schema__take(b, &q);
    if (sql)
        sl_schema__add_object(b, SL_OBJ_ENUM, ENUM_NAME, NULL, -1, sql, NULL,
                              NULL);
    free(sql);
}

/* CREATE OR REPLACE FUNCTION "name"() RETURNS trigger ... body. */
void sl_schema__add_function(builder *b, const char *name, const char *body) {
    sl_buf q, on;
    sl_buf_init(&q);
    sl_buf_init(&on);
    sl_buf_puts(&q, "CREATE OR REPLACE FUNCTION ");
    sl_buf_ident(&q, name);
    sl_buf_puts(&q, "() RETURNS trigger\n  LANGUAGE plpgsql\nAS " DQ "\n");
    sl_buf_puts(&q, body);
    sl_buf_puts(&q, DQ ";\n");
    sl_buf_puts(&on, "FUNCTION ");
    sl_buf_ident(&on, name);
    sl_buf_puts(&on, "()");
    char *sql = sl_schema__take(b, &q), *target = sl_schema__take(b, &on);
    if (sql && target)
        sl_schema__add_object(b, SL_OBJ_FUNCTION, name, NULL, -1, sql, target,
                              NULL);
    free(sql);
    free(target);
}

static void build_touch_function(builder *b) {
    sl_schema__claim_name(b, "function", TOUCH_FN,
                          "the updated_at trigger function");
    sl_buf body;
    sl_buf_init(&body);
    sl_buf_puts(&body, "BEGIN\n  NEW.");
    sl_buf_ident(&body, "updated_at");
    sl_buf_puts(&body, " := now();\n  RETURN NEW;\nEND\n");
    char *s = sl_schema__take(b, &body);
    if (s) sl_schema__add_function(b, TOUCH_FN, s);
    free(s);
}

/* A column of the table being built. */
static void add_column(builder *b, sl_schema_table *t, size_t *cap,
                       const char *name, const char *type, int is_enum,
                       int not_null, const char *default_sql,
                       const char *ref_table, const char *ref_column,
                       int engine) {
    if (b->rc) return;
    for (size_t k = 0; k < t->ncolumns; k++)
        if (strcmp(t->columns[k].name, name) == 0) {
            sl_schema__fail(
                b, -SL_EINVAL,
                "queue \"%s\": column \"%s\" is declared twice or uses a "
                "name the engine reserves",
                t->name, name);
            return;
        }
    if (t->ncolumns == *cap) {
        size_t nc = *cap ? *cap * 2 : 32;
        sl_schema_column *c = realloc(t->columns, nc * sizeof *c);
        if (!c) {
            sl_schema__fail(b, -SL_ENOMEM, "out of memory");
            return;
        }
        t->columns = c;
        *cap = nc;
    }
    sl_schema_column *c = &t->columns[t->ncolumns++];
    memset(c, 0, sizeof *c);
    c->name = sl_schema__dup(b, name);
    c->not_null = not_null;
    c->engine = engine;
    c->default_sql = sl_schema__dup(b, default_sql);
    c->ref_table = sl_schema__dup(b, ref_table);
    c->ref_column = sl_schema__dup(b, ref_column);
    sl_buf d;
    sl_buf_init(&d);
    sl_buf_ident(&d, name);
    sl_buf_putn(&d, " ", 1);
    if (is_enum) {
        sl_buf q;
        sl_buf_init(&q);
        sl_buf_ident(&q, ENUM_NAME);
        c->sql_type = sl_schema__take(b, &q);
        c->cat_type = sl_schema__dup(b, ENUM_NAME);
        sl_buf_ident(&d, ENUM_NAME);
    } else {
        c->sql_type = sl_schema__dup(b, type);
        c->cat_type = sl_schema__dup(b, sl_type_canonical(type));
        sl_buf_puts(&d, type);
    }
    if (not_null) sl_buf_puts(&d, " NOT NULL");
    if (default_sql) sl_buf_printf(&d, " DEFAULT %s", default_sql);
    if (strcmp(name, "id") == 0 && engine) sl_buf_puts(&d, " PRIMARY KEY");
    if (ref_table) {
        sl_buf_puts(&d, " REFERENCES ");
        sl_buf_ident(&d, ref_table);
        sl_buf_puts(&d, " (");
        sl_buf_ident(&d, ref_column);
        sl_buf_puts(&d, ") ON DELETE CASCADE");
    }
    c->def_sql = sl_schema__take(b, &d);
}

/* The engine's columns (docs/schema.md), then the declared ones. */
static void build_columns(builder *b, sl_schema_table *t, const sl_pipeline *p,
                          const sl_stage *st) {
    size_t cap = 0;
    char prio[32];
    snprintf(prio, sizeof prio, "%d", st->priority);

    for (const sl_engine_col *e = sl_engine_columns; e->name; e++) {
        const char *dflt =
            strcmp(e->name, "priority") == 0 ? prio : e->default_sql;
        add_column(b, t, &cap, e->name, e->type, e->type == NULL, e->not_null,
                   dflt, NULL, NULL, 1);
        if (e == sl_engine_columns && p->has_subject)
            add_column(b, t, &cap, p->subject.fk,
                       sl_key_type_name(p->subject.key_type), 0, 1, NULL,
                       p->subject.table, p->subject.key, 1);
    }

    char where[200];
    snprintf(where, sizeof where, "queue \"%s\"", st->queue);
    for (size_t i = 0; i < st->ncolumns && !b->rc; i++) {
        const sl_column *c = &st->columns[i];
        sl_schema__check_ident(b, c->name, "column", where);
        const char *ti = sl_type_normalise(c->type);
        if (!ti && !b->rc) {
            sl_schema__fail(
                b, -SL_EINVAL,
                "%s: column \"%s\" has type \"%s\", which is not one of "
                "the allowed column types",
                where, c->name, c->type ? c->type : "(missing)");
            break;
        }
        if (c->ref_table || c->ref_column) {
            sl_schema__check_ident(b, c->ref_table, "referenced table", where);
            sl_schema__check_ident(b, c->ref_column, "referenced column",
                                   where);
        }
        add_column(b, t, &cap, c->name, ti, 0, c->not_null, NULL, c->ref_table,
                   c->ref_column, 0);
    }
}

const sl_schema_column *sl_schema__find_column(const sl_schema_table *t,
                                               const char *name) {
    for (size_t i = 0; i < t->ncolumns; i++)
        if (strcmp(t->columns[i].name, name) == 0) return &t->columns[i];
    return NULL;
}

static void build_table_sql(builder *b, sl_schema_table *t) {
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "CREATE TABLE IF NOT EXISTS ");
    sl_buf_ident(&q, t->name);
    sl_buf_puts(&q, " (\n");
    for (size_t i = 0; i < t->ncolumns; i++)
        sl_buf_printf(&q, "  %s%s\n", t->columns[i].def_sql,
                      i + 1 < t->ncolumns ? "," : "");
    sl_buf_puts(&q, ");\nCOMMENT ON TABLE ");
    sl_buf_ident(&q, t->name);
    sl_buf_puts(&q, " IS ");
    sl_buf_literal(&q, t->comment);
    sl_buf_puts(&q, ";\n");
    t->create_sql = sl_schema__take(b, &q);
}

/* CREATE OR REPLACE TRIGGER name <timing> ON table <rest> EXECUTE FUNCTION
 * fn(). */
void sl_schema__add_trigger(builder *b, const char *name, const char *table,
                            const char *timing, const char *rest,
                            const char *fn) {
    char ns[100];
    snprintf(ns, sizeof ns, "trigger on %s", table);
    sl_schema__claim_name(b, ns, name, "a generated trigger");
    sl_buf q, on;
    sl_buf_init(&q);
    sl_buf_init(&on);
    sl_buf_puts(&q, "CREATE OR REPLACE TRIGGER ");
    sl_buf_ident(&q, name);
    sl_buf_printf(&q, "\n  %s ON ", timing);
    sl_buf_ident(&q, table);
    sl_buf_printf(&q, "\n  %s\n  EXECUTE FUNCTION ", rest);
    sl_buf_ident(&q, fn);
    sl_buf_puts(&q, "();\n");
    sl_buf_puts(&on, "TRIGGER ");
    sl_buf_ident(&on, name);
    sl_buf_puts(&on, " ON ");
    sl_buf_ident(&on, table);
    char *sql = sl_schema__take(b, &q), *target = sl_schema__take(b, &on);
    if (sql && target)
        sl_schema__add_object(b, SL_OBJ_TRIGGER, name, table, -1, sql, target,
                              NULL);
    free(sql);
    free(target);
}

static void build_triggers(builder *b, const sl_schema_table *t,
                           const sl_stage *st) {
    char fn_ins[64], fn_upd[64], tg_touch[64];
    sl_schema__derive_name(fn_ins, t->name, "notify_insert");
    sl_schema__derive_name(fn_upd, t->name, "notify_status");
    sl_schema__derive_name(tg_touch, t->name, "updated_at");
    char desc[200];
    snprintf(desc, sizeof desc, "insert NOTIFY function of queue %s", t->name);
    sl_schema__claim_name(b, "function", fn_ins, desc);
    snprintf(desc, sizeof desc, "status NOTIFY function of queue %s", t->name);
    sl_schema__claim_name(b, "function", fn_upd, desc);

    /* Statement level: one NOTIFY per INSERT statement however many rows
     * it adds, and only when one of them is ready to run. */
    sl_buf body;
    sl_buf_init(&body);
    sl_buf_puts(&body, "BEGIN\n  IF EXISTS (SELECT 1 FROM ");
    sl_buf_ident(&body, TRANSITION);
    sl_buf_puts(&body, " WHERE ");
    sl_buf_ident(&body, "status");
    sl_buf_puts(&body,
                " IN ('pending', 'retry')) THEN\n    PERFORM pg_notify(");
    sl_buf_literal(&body, st->channel);
    sl_buf_puts(&body, ", '');\n  END IF;\n  RETURN NULL;\nEND\n");
    char *s = sl_schema__take(b, &body);
    if (s) sl_schema__add_function(b, fn_ins, s);
    free(s);

    /* No payload: a worker only needs waking, and any role that can log
     * in may LISTEN on any channel, so a job id here would tell every
     * tenant about every other tenant's jobs. */
    sl_buf_init(&body);
    sl_buf_puts(&body, "BEGIN\n  PERFORM pg_notify(");
    sl_buf_literal(&body, st->channel);
    sl_buf_puts(&body, ", '');\n  RETURN NULL;\nEND\n");
    s = sl_schema__take(b, &body);
    if (s) sl_schema__add_function(b, fn_upd, s);
    free(s);

    /* Only for updates that did not set updated_at themselves: the
     * engine's own statements do, so the hot path calls no PL/pgSQL. */
    sl_schema__add_trigger(
        b, tg_touch, t->name, "BEFORE UPDATE",
        "FOR EACH ROW WHEN (NEW.\"updated_at\" IS NOT DISTINCT FROM"
        " OLD.\"updated_at\")",
        TOUCH_FN);

    sl_buf rest;
    sl_buf_init(&rest);
    sl_buf_puts(&rest, "REFERENCING NEW TABLE AS ");
    sl_buf_ident(&rest, TRANSITION);
    sl_buf_puts(&rest, " FOR EACH STATEMENT");
    s = sl_schema__take(b, &rest);
    if (s)
        sl_schema__add_trigger(b, fn_ins, t->name, "AFTER INSERT", s, fn_ins);
    free(s);

    sl_buf timing;
    sl_buf_init(&timing);
    sl_buf_init(&rest);
    sl_buf_puts(&timing, "AFTER UPDATE OF ");
    sl_buf_ident(&timing, "status");
    sl_buf_puts(&rest, "FOR EACH ROW WHEN (NEW.");
    sl_buf_ident(&rest, "status");
    sl_buf_puts(&rest, " IN ('pending', 'retry') AND OLD.");
    sl_buf_ident(&rest, "status");
    sl_buf_puts(&rest, " IS DISTINCT FROM NEW.");
    sl_buf_ident(&rest, "status");
    sl_buf_puts(&rest, ")");
    char *tm = sl_schema__take(b, &timing);
    s = sl_schema__take(b, &rest);
    if (s && tm) sl_schema__add_trigger(b, fn_upd, t->name, tm, s, fn_upd);
    free(s);
    free(tm);
}

/* A new table `name` of stage st (the queue's columns), its CREATE and
 * its object; NULL after an error. */
static sl_schema_table *new_table(builder *b, const sl_pipeline *p,
                                  const sl_stage *st, const char *name,
                                  const char *kind) {
    sl_schema *s = b->s;
    if (s->ntables == b->cap_tables) {
        size_t cap = b->cap_tables ? b->cap_tables * 2 : 8;
        sl_schema_table *t = realloc(s->tables, cap * sizeof *t);
        if (!t) {
            sl_schema__fail(b, -SL_ENOMEM, "out of memory");
            return NULL;
        }
        s->tables = t;
        b->cap_tables = cap;
    }
    int ti = (int)s->ntables++;
    sl_schema_table *t = &s->tables[ti];
    memset(t, 0, sizeof *t);
    t->stage = st;
    t->name = sl_schema__dup(b, name);
    t->history = strcmp(kind, "history") == 0;
    char comment[300];
    snprintf(comment, sizeof comment, "sluice %s %s.%s", kind, p->name,
             st->name ? st->name : "");
    t->comment = sl_schema__dup(b, comment);
    if (b->rc) return NULL;
    build_columns(b, t, p, st);
    if (b->rc) return NULL;
    build_table_sql(b, t);
    if (b->rc) return NULL;
    sl_schema__add_object(b, SL_OBJ_TABLE, t->name, t->name, ti, t->create_sql,
                          NULL, NULL);
    return b->rc ? NULL : t;
}

static void build_queue(builder *b, const sl_pipeline *p, const sl_stage *st) {
    char where[200];
    snprintf(where, sizeof where, "pipeline \"%s\", stage \"%s\"", p->name,
             st->name ? st->name : "?");
    sl_schema__check_ident(b, st->queue, "queue", where);
    sl_schema__check_ident(b, st->channel, "channel", where);
    if (b->rc) return;
    sl_schema__claim_name(b, "relation", st->queue, "a queue table");
    const sl_schema_table *t = new_table(b, p, st, st->queue, "queue");
    if (!t) return;
    sl_schema__build_indexes(b, t, p, st);
    build_triggers(b, t, st);
    sl_schema__build_security(b, t, p);
    if (!st->retention_history) return;
    /* Where retention moves finished jobs (docs/dsl.md#retention): the
     * same columns, the listing, finished and subject indexes, the same
     * Row Level Security; no triggers. */
    char hist[64];
    sl_stage_history_table(st, hist);
    sl_schema__claim_name(b, "relation", hist, "a history table");
    const sl_schema_table *h = new_table(b, p, st, hist, "history");
    if (!h) return;
    sl_schema__build_indexes(b, h, p, st);
    sl_schema__build_security(b, h, p);
}

/* The NOTIFY a live UI listens to: an empty notification on every update
 * that changes the subject's status, progress or detail. */
static void build_subject_channel(builder *b, const sl_pipeline *p) {
    const sl_subject *sj = &p->subject;
    char fn[64];
    sl_schema__derive_name(fn, sj->channel, "notify");
    char desc[200];
    snprintf(desc, sizeof desc, "subject NOTIFY function of pipeline %s",
             p->name);
    sl_schema__claim_name(b, "function", fn, desc);

    const char *cols[3] = {sj->status_column, sj->progress_column,
                           sj->detail_column};

    /* No payload: LISTEN needs no privilege, so whatever is sent here
     * reaches every role that can log in. A listener re-reads the rows it
     * follows, under its own Row Level Security (docs/schema.md, "Roles:
     * who sees what"). */
    sl_buf body;
    sl_buf_init(&body);
    sl_buf_puts(&body, "BEGIN\n  PERFORM pg_notify(");
    sl_buf_literal(&body, sj->channel);
    sl_buf_puts(&body, ", '');\n  RETURN NULL;\nEND\n");
    char *s = sl_schema__take(b, &body);
    if (s) sl_schema__add_function(b, fn, s);
    free(s);

    sl_buf rest;
    sl_buf_init(&rest);
    sl_buf_puts(&rest, "FOR EACH ROW WHEN (");
    int first = 1;
    for (int i = 0; i < 3; i++) {
        if (!cols[i]) continue;
        if (!first) sl_buf_puts(&rest, " OR ");
        first = 0;
        sl_buf_puts(&rest, "OLD.");
        sl_buf_ident(&rest, cols[i]);
        sl_buf_puts(&rest, " IS DISTINCT FROM NEW.");
        sl_buf_ident(&rest, cols[i]);
    }
    sl_buf_puts(&rest, ")");
    s = sl_schema__take(b, &rest);
    if (s) sl_schema__add_trigger(b, fn, sj->table, "AFTER UPDATE", s, fn);
    free(s);
}

/* ------------------------------------------------------------ public API */

int sl_schema_build(const sl_model *m, sl_schema **out, char *err,
                    size_t errlen) {
    return sl_schema_build_ex(m, NULL, 0, out, err, errlen);
}

int sl_schema_build_ex(const sl_model *m, const char *const *others,
                       size_t nothers, sl_schema **out, char *err,
                       size_t errlen) {
    *out = NULL;
    if (err && errlen) err[0] = '\0';
    builder b;
    memset(&b, 0, sizeof b);
    b.others = others;
    b.nothers = nothers;
    b.err = err;
    b.errlen = errlen;
    b.s = calloc(1, sizeof *b.s);
    if (!b.s) {
        sl_schema__fail(&b, -SL_ENOMEM, "out of memory");
        return b.rc;
    }
    build_enum(&b);
    build_touch_function(&b);
    for (size_t i = 0; m && i < m->npipelines && !b.rc; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        char where[120];
        snprintf(where, sizeof where, "pipeline \"%s\"",
                 p->name ? p->name : "?");
        sl_schema__check_ident(&b, p->name, "name", where);
        if (p->has_subject) {
            const sl_subject *sj = &p->subject;
            sl_schema__check_ident(&b, sj->table, "subject table", where);
            sl_schema__check_ident(&b, sj->key, "subject key", where);
            sl_schema__check_ident(&b, sj->fk, "subject foreign_key", where);
            sl_schema__check_ident(&b, sj->status_column,
                                   "subject status column", where);
            if (sj->progress_column)
                sl_schema__check_ident(&b, sj->progress_column,
                                       "subject progress column", where);
            if (sj->detail_column)
                sl_schema__check_ident(&b, sj->detail_column,
                                       "subject detail column", where);
            if (sj->channel)
                sl_schema__check_ident(&b, sj->channel, "subject channel",
                                       where);
        }
        b.owner = p->name;
        for (size_t j = 0; j < p->nstages && !b.rc; j++)
            build_queue(&b, p, &p->stages[j]);
        if (p->has_subject && p->subject.channel && !b.rc)
            build_subject_channel(&b, p);
        b.owner = NULL;
    }
    sl_schema__build_view(&b);
    for (size_t i = 0; i < b.nnames; i++) {
        free(b.names[i].ns);
        free(b.names[i].name);
        free(b.names[i].what);
    }
    free(b.names);
    if (b.rc) {
        sl_schema_free(b.s);
        return b.rc;
    }
    *out = b.s;
    return 0;
}

void sl_schema_free(sl_schema *s) {
    if (!s) return;
    for (size_t i = 0; i < s->ntables; i++) {
        sl_schema_table *t = &s->tables[i];
        for (size_t k = 0; k < t->ncolumns; k++) {
            sl_schema_column *c = &t->columns[k];
            free(c->name);
            free(c->sql_type);
            free(c->cat_type);
            free(c->default_sql);
            free(c->ref_table);
            free(c->ref_column);
            free(c->def_sql);
        }
        free(t->columns);
        free(t->name);
        free(t->comment);
        free(t->create_sql);
    }
    free(s->tables);
    for (size_t i = 0; i < s->nobjects; i++) {
        sl_schema_object *o = &s->objects[i];
        free(o->name);
        free(o->table);
        free(o->sql);
        free(o->replace_sql);
        free(o->fingerprint);
        free(o->privileges);
        free(o->insert_columns);
        free(o->update_columns);
        free(o->pipeline);
    }
    free(s->objects);
    free(s);
}

int sl_schema_ddl(const sl_model *m, char **out, char *err, size_t errlen) {
    *out = NULL;
    sl_schema *s;
    int rc = sl_schema_build(m, &s, err, errlen);
    if (rc) return rc;
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "-- Generated by sluice from the pipelines:");
    for (size_t i = 0; m && i < m->npipelines; i++)
        sl_buf_printf(&q, " %s", m->pipelines[i].name);
    sl_buf_puts(&q, ".\n-- Idempotent; `sluice migrate` applies it with "
                    "sql/base.sql (docs/schema.md).\n");
    for (size_t i = 0; i < s->nobjects; i++) {
        sl_buf_puts(&q, "\n");
        sl_buf_puts(&q, s->objects[i].sql);
    }
    sl_schema_free(s);
    int failed = sl_buf_failed(&q);
    *out = sl_buf_steal(&q);
    if (failed || !*out) {
        free(*out);
        *out = NULL;
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    return 0;
}

char *sl_schema_snapshot(const sl_schema *s) {
    json_t *root = json_object(), *tables = json_array();
    if (!root || !tables) goto fail;
    json_object_set_new(root, "format", json_integer(1));
    json_object_set(root, "tables", tables);
    for (size_t i = 0; i < s->ntables; i++) {
        const sl_schema_table *t = &s->tables[i];
        /* Queues only: a history table left out of a later model is kept
         * (migrate drops what a snapshot lists and the model lacks). */
        if (t->history) continue;
        json_t *jt = json_object(), *cols = json_array();
        if (!jt || !cols) {
            json_decref(jt);
            json_decref(cols);
            goto fail;
        }
        json_object_set_new(jt, "name", json_string(t->name));
        json_object_set_new(
            jt, "pipeline",
            json_string(t->stage->pipeline ? t->stage->pipeline->name : ""));
        json_object_set_new(jt, "stage", json_string(t->stage->name));
        json_object_set_new(jt, "channel", json_string(t->stage->channel));
        for (size_t k = 0; k < t->ncolumns; k++) {
            const sl_schema_column *c = &t->columns[k];
            json_t *jc = json_pack("{s:s,s:s,s:b}", "name", c->name, "type",
                                   c->cat_type, "not_null", c->not_null);
            if (c->ref_table && jc)
                json_object_set_new(
                    jc, "references",
                    json_sprintf("%s.%s", c->ref_table, c->ref_column));
            json_array_append_new(cols, jc);
        }
        json_object_set_new(jt, "columns", cols);
        json_array_append_new(tables, jt);
    }
    char *txt = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(tables);
    json_decref(root);
    return txt;
fail:
    json_decref(tables);
    json_decref(root);
    return NULL;
}
