/* queue.c - all SQL the runtime runs against queue and subject tables.
 *
 * Each stage gets a family of statements, built here from the model and
 * prepared once per connection under names derived from a hash of the
 * queue name ("sl_claim_1a2b3c4d"). Identifiers are quoted with
 * sl_buf_ident; every value is a bound parameter, including the mapping's
 * status/progress/detail constants, so no YAML value is ever spliced.
 */
#include "queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "error.h"
#include "log.h"

enum {
    OP_CLAIM,
    OP_COMPLETE,
    OP_FAIL,
    OP_SNOOZE,
    OP_CHECKPOINT,
    OP_PROGRESS,
    OP_HEARTBEAT,
    OP_RESCUE,
    OP_NEXT_DUE,
    OP_STALE,
    OP_UNFINISHED,
    OP_CLAIM_BARE,
    OP_INPUT,
    OP__COUNT
};

static const char *const op_names[OP__COUNT] = {
    "claim",     "complete", "fail",    "snooze",  "checkpoint", "progress",
    "heartbeat", "rescue",   "nextdue", "stale",   "unfinished",
    "claimbare", "input"};

/* ---- helpers ------------------------------------------------------------ */

static void stmt_name(const sl_stage *s, int op, char *out, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a of the queue name */
    for (const char *p = s->queue; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    snprintf(out, n, "sl_%s_%08x", op_names[op], h);
}

static void set_err(char *err, size_t n, const char *what, PGconn *c,
                    const PGresult *r) {
    char m[2048];
    snprintf(err, n, "%s: %s", what, sl_db_error(c, r, m, sizeof m));
}

static const sl_column *find_column(const sl_stage *s, const char *name) {
    for (size_t i = 0; i < s->ncolumns; i++)
        if (strcmp(s->columns[i].name, name) == 0) return &s->columns[i];
    return NULL;
}

static int is_json_type(const char *t) {
    return strcmp(t, "jsonb") == 0 || strcmp(t, "json") == 0;
}

static int is_array_type(const char *t) {
    size_t l = strlen(t);
    return l > 2 && strcmp(t + l - 2, "[]") == 0;
}

/* Appends the SQL reading field `key` of the jsonb expression `obj` as a
 * value of SQL type `type`. */
static void json_field_as(sl_buf *b, const char *obj, const char *key,
                          const char *type) {
    if (is_json_type(type)) {
        sl_buf_printf(b, "(%s->", obj);
        sl_buf_literal(b, key);
        sl_buf_printf(b, ")::%s", type);
    } else if (is_array_type(type)) {
        sl_buf_printf(b, "(CASE WHEN jsonb_typeof(%s->", obj);
        sl_buf_literal(b, key);
        sl_buf_printf(b, ") = 'array' THEN ARRAY(SELECT "
                         "jsonb_array_elements_text(%s->",
                      obj);
        sl_buf_literal(b, key);
        sl_buf_printf(b, "))::%s END)", type);
    } else {
        sl_buf_printf(b, "(%s->>", obj);
        sl_buf_literal(b, key);
        sl_buf_printf(b, ")::%s", type);
    }
}

/* Appends "SET"-list assignments for a subject mapping, binding the values
 * as parameters starting at *param. Returns how many were added. */
static int mapping_sets(sl_buf *b, const sl_subject *subj, const sl_mapping *m,
                        const char *alias, int *param) {
    int n = 0;
    if (m->status) {
        sl_buf_ident(b, subj->status_column);
        sl_buf_printf(b, " = $%d", (*param)++);
        n++;
    }
    if (m->progress >= 0 && subj->progress_column) {
        sl_buf_puts(b, n ? ", " : "");
        sl_buf_ident(b, subj->progress_column);
        sl_buf_printf(b, " = $%d::int", (*param)++);
        n++;
    }
    if (m->detail && subj->detail_column) {
        sl_buf_puts(b, n ? ", " : "");
        sl_buf_ident(b, subj->detail_column);
        sl_buf_printf(b, " = $%d::text", (*param)++);
        n++;
    }
    (void)alias;
    return n;
}

/* The parameter values of a mapping, in mapping_sets' order. */
static int mapping_values(const sl_subject *subj, const sl_mapping *m,
                          const char **vals, char progress[12]) {
    int n = 0;
    if (m->status) vals[n++] = m->status;
    if (m->progress >= 0 && subj->progress_column) {
        snprintf(progress, 12, "%d", m->progress);
        vals[n++] = progress;
    }
    if (m->detail && subj->detail_column) vals[n++] = m->detail;
    return n;
}

static int has_mapping(const sl_stage *s, const sl_mapping *m) {
    const sl_subject *subj = &s->pipeline->subject;
    return s->pipeline->has_subject &&
           (m->status || (m->progress >= 0 && subj->progress_column) ||
            (m->detail && subj->detail_column));
}

/* Appends ", s AS (UPDATE subject ... FROM <from> WHERE key = from.fk
 * [AND cond])" for mapping m. */
static void subject_cte(sl_buf *b, const sl_stage *s, const sl_mapping *m,
                        const char *cte, const char *from, const char *cond,
                        int *param) {
    const sl_subject *subj = &s->pipeline->subject;
    if (!has_mapping(s, m)) return;
    sl_buf_printf(b, ", %s AS (UPDATE ", cte);
    sl_buf_ident(b, subj->table);
    sl_buf_puts(b, " t SET ");
    mapping_sets(b, subj, m, "t", param);
    sl_buf_printf(b, " FROM %s WHERE t.", from);
    sl_buf_ident(b, subj->key);
    sl_buf_printf(b, " = %s.", from);
    sl_buf_ident(b, subj->fk);
    if (cond) sl_buf_printf(b, " AND %s", cond);
    sl_buf_puts(b, ")");
}

/* ---- statement builders --------------------------------------------------- */

/* The job's declared columns as one jsonb value (alias q). */
static void input_expr(sl_buf *b, const sl_stage *s) {
    if (s->ncolumns == 0) {
        sl_buf_puts(b, "NULL::jsonb");
        return;
    }
    sl_buf_puts(b, "jsonb_build_object(");
    for (size_t i = 0; i < s->ncolumns; i++) {
        sl_buf_puts(b, i ? ", " : "");
        sl_buf_literal(b, s->columns[i].name);
        sl_buf_puts(b, ", q.");
        sl_buf_ident(b, s->columns[i].name);
    }
    sl_buf_puts(b, ")");
}

/* $1 job id. */
static void build_input(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "SELECT ");
    input_expr(b, s);
    sl_buf_puts(b, " FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " q WHERE q.id = $1");
}

/* $1 owner, $2 max, $3 lease ms, then the on_start mapping. The bare
 * variant leaves the input out (read per job with OP_INPUT). */
static void build_claim_any(sl_buf *b, const sl_stage *s, int bare) {
    const char *fk = s->pipeline->has_subject ? s->pipeline->subject.fk : NULL;
    int param = 4;
    sl_buf_puts(b, "WITH c AS (SELECT id FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " WHERE status IN ('pending','retry') AND run_at <= now()"
                   " ORDER BY priority DESC, run_at LIMIT $2"
                   " FOR UPDATE SKIP LOCKED), j AS (UPDATE ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " q SET status = 'in_progress', attempts = q.attempts + 1,"
                   " updated_at = now(),"
                   " locked_by = $1, locked_until = now() + $3::bigint *"
                   " interval '1 millisecond', started_at = now(),"
                   " finished_at = NULL FROM c WHERE q.id = c.id"
                   " RETURNING q.id, ");
    if (fk) {
        sl_buf_puts(b, "q.");
        sl_buf_ident(b, fk);
    } else {
        sl_buf_puts(b, "NULL::uuid");
    }
    sl_buf_puts(b, " AS subject, q.attempts, q.checkpoint, ");
    if (bare)
        sl_buf_puts(b, "NULL::jsonb");
    else
        input_expr(b, s);
    sl_buf_puts(b, " AS input");
    if (fk) {
        sl_buf_puts(b, ", q.");
        sl_buf_ident(b, fk);
    }
    sl_buf_puts(b, ")");
    subject_cte(b, s, &s->status.on_start, "s", "j", NULL, &param);
    sl_buf_puts(b, " SELECT id, subject, attempts, checkpoint, input FROM j");
}

static void build_claim(sl_buf *b, const sl_stage *s) {
    build_claim_any(b, s, 0);
}

static void build_claim_bare(sl_buf *b, const sl_stage *s) {
    build_claim_any(b, s, 1);
}

/* The value handed to next-stage column `to` (type `type`) from field
 * `from`: the job's column after the update (outputs merged over the row)
 * when `from` is a declared column, else the output field. */
static void handoff_value(sl_buf *b, const sl_stage *s, const char *from,
                          const char *type) {
    if (find_column(s, from)) {
        sl_buf_puts(b, "d.");
        sl_buf_ident(b, from);
        sl_buf_printf(b, "::%s", type);
    } else {
        json_field_as(b, "d.o", from, type);
    }
}

/* $1 owner, $2 jsonb array of {"id","a","o"}, then the on_done mapping. */
static void build_complete(sl_buf *b, const sl_stage *s) {
    const sl_pipeline *p = s->pipeline;
    const char *fk = p->has_subject ? p->subject.fk : NULL;
    int param = 3;
    sl_buf_puts(b, "WITH u AS (SELECT (e->>'id')::uuid AS id, (e->>'a')::int"
                   " AS a, COALESCE(e->'o', '{}'::jsonb) AS o"
                   " FROM jsonb_array_elements($2::jsonb) e), d AS (UPDATE ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " j SET status = 'done', finished_at = now(),"
                   " updated_at = now(),"
                   " locked_by = NULL, locked_until = NULL, progress = 100");
    for (size_t i = 0; i < s->ncolumns; i++) {
        const sl_column *col = &s->columns[i];
        sl_buf_puts(b, ", ");
        sl_buf_ident(b, col->name);
        sl_buf_puts(b, " = CASE WHEN u.o ? ");
        sl_buf_literal(b, col->name);
        sl_buf_puts(b, " THEN ");
        json_field_as(b, "u.o", col->name, col->type);
        sl_buf_puts(b, " ELSE j.");
        sl_buf_ident(b, col->name);
        sl_buf_puts(b, " END");
    }
    sl_buf_puts(b, " FROM u WHERE j.id = u.id AND j.locked_by = $1 AND"
                   " j.attempts = u.a AND j.status = 'in_progress'"
                   " RETURNING j.id, u.o, j.priority");
    if (fk) {
        sl_buf_puts(b, ", j.");
        sl_buf_ident(b, fk);
    }
    for (size_t i = 0; i < s->ncolumns; i++) {
        sl_buf_puts(b, ", j.");
        sl_buf_ident(b, s->columns[i].name);
    }
    sl_buf_puts(b, ")");

    for (size_t k = 0; k < s->nnext; k++) {
        const sl_next *nx = &s->next[k];
        const sl_stage *t = nx->stage;
        sl_buf_printf(b, ", n%zu AS (INSERT INTO ", k);
        sl_buf_ident(b, t->queue);
        sl_buf_puts(b, " (dedup_key");
        if (fk) {
            sl_buf_puts(b, ", ");
            sl_buf_ident(b, fk);
        }
        /* Which target columns get a value, and from where. */
        for (size_t c = 0; c < t->ncolumns; c++) {
            const char *to = t->columns[c].name, *from = NULL;
            if (nx->nmap) {
                for (size_t m = 0; m < nx->nmap; m++)
                    if (strcmp(nx->map[m].to, to) == 0) from = nx->map[m].from;
                if (!from) continue;
            }
            sl_buf_puts(b, ", ");
            sl_buf_ident(b, to);
        }
        sl_buf_puts(b, ") SELECT 'from:' || d.id::text");
        if (fk) {
            sl_buf_puts(b, ", d.");
            sl_buf_ident(b, fk);
        }
        for (size_t c = 0; c < t->ncolumns; c++) {
            const char *to = t->columns[c].name, *from = to;
            if (nx->nmap) {
                from = NULL;
                for (size_t m = 0; m < nx->nmap; m++)
                    if (strcmp(nx->map[m].to, to) == 0) from = nx->map[m].from;
                if (!from) continue;
            }
            sl_buf_puts(b, ", ");
            handoff_value(b, s, from, t->columns[c].type);
        }
        sl_buf_puts(b, " FROM d ON CONFLICT (dedup_key) WHERE dedup_key IS"
                       " NOT NULL DO NOTHING)");
    }
    subject_cte(b, s, &s->status.on_done, "s", "d", NULL, &param);
    sl_buf_puts(b, " SELECT id FROM d");
}

/* $1 id, $2 owner, $3 attempts, $4 status, $5 delay ms, $6 message,
 * $7 class, then the on_error mapping. */
static void build_fail(sl_buf *b, const sl_stage *s) {
    const sl_pipeline *p = s->pipeline;
    int param = 8;
    sl_buf_puts(b, "WITH f AS (UPDATE ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " SET status = $4::job_status, updated_at = now(),"
                   " run_at = now() +"
                   " $5::bigint * interval '1 millisecond', last_error = $6,"
                   " error_class = $7, locked_by = NULL, locked_until = NULL,"
                   " finished_at = CASE WHEN $4::job_status = 'error' THEN"
                   " now() END WHERE id = $1 AND locked_by = $2 AND"
                   " attempts = $3 AND status = 'in_progress' RETURNING ");
    if (p->has_subject)
        sl_buf_ident(b, p->subject.fk);
    else
        sl_buf_puts(b, "id");
    sl_buf_puts(b, ")");
    subject_cte(b, s, &s->status.on_error, "s", "f",
                "$4::job_status = 'error'", &param);
    sl_buf_puts(b, " SELECT count(*) FROM f");
}

/* $1 id, $2 owner, $3 attempts, $4 delay ms. */
static void build_snooze(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "UPDATE ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " SET status = 'pending', attempts = attempts - 1,"
                   " updated_at = now(),"
                   " run_at = now() + $4::bigint * interval '1 millisecond',"
                   " locked_by = NULL, locked_until = NULL WHERE id = $1 AND"
                   " locked_by = $2 AND attempts = $3 AND"
                   " status = 'in_progress'");
}

/* $1 id, $2 owner, $3 attempts, $4 checkpoint, $5 lease ms. */
static void build_checkpoint(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "UPDATE ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " SET checkpoint = $4::jsonb, updated_at = now(),"
                   " locked_until = now() +"
                   " $5::bigint * interval '1 millisecond' WHERE id = $1 AND"
                   " locked_by = $2 AND attempts = $3 AND"
                   " status = 'in_progress'");
}

/* $1 id, $2 owner, $3 attempts, $4 job pct, $5 detail, [$6 subject status,
 * $7 subject pct]. */
static void build_progress(sl_buf *b, const sl_stage *s) {
    const sl_pipeline *p = s->pipeline;
    const sl_subject *subj = &p->subject;
    int mapped = p->has_subject && s->status.progress_from >= 0;
    sl_buf_puts(b, "WITH p AS (UPDATE ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " SET progress = $4::int, updated_at = now(),"
                   " status_detail ="
                   " COALESCE($5::text, status_detail) WHERE id = $1 AND"
                   " locked_by = $2 AND attempts = $3 AND"
                   " status = 'in_progress' RETURNING ");
    sl_buf_ident(b, p->has_subject ? subj->fk : "id");
    sl_buf_puts(b, " AS fk)");
    if (mapped) {
        sl_buf_puts(b, ", s AS (UPDATE ");
        sl_buf_ident(b, subj->table);
        sl_buf_puts(b, " t SET ");
        sl_buf_ident(b, subj->status_column);
        sl_buf_puts(b, " = COALESCE($6, t.");
        sl_buf_ident(b, subj->status_column);
        sl_buf_puts(b, ")");
        if (subj->progress_column) {
            sl_buf_puts(b, ", ");
            sl_buf_ident(b, subj->progress_column);
            sl_buf_puts(b, " = $7::int");
        }
        if (subj->detail_column) {
            sl_buf_puts(b, ", ");
            sl_buf_ident(b, subj->detail_column);
            sl_buf_puts(b, " = COALESCE($5::text, t.");
            sl_buf_ident(b, subj->detail_column);
            sl_buf_puts(b, ")");
        }
        sl_buf_puts(b, " FROM p WHERE t.");
        sl_buf_ident(b, subj->key);
        sl_buf_puts(b, " = p.fk)");
    } else {
        /* Keep $6/$7 typed so one parameter list fits both shapes. */
        sl_buf_puts(b, ", s AS (SELECT $6::text, $7::int)");
    }
    sl_buf_puts(b, " SELECT count(*) FROM p");
}

/* $1 uuid[] ids, $2 owner, $3 lease ms. */
static void build_heartbeat(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "UPDATE ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " SET updated_at = now(), locked_until = now() +"
                   " $3::bigint * interval"
                   " '1 millisecond' WHERE id = ANY($1::uuid[]) AND"
                   " locked_by = $2 AND status = 'in_progress' RETURNING id");
}

/* $1 max attempts, $2 lease_expired retries (bool), then on_error. A
 * rescued job keeps its run_at, so it runs before the jobs queued after
 * it rather than behind the whole backlog. */
static void build_rescue(sl_buf *b, const sl_stage *s) {
    const sl_pipeline *p = s->pipeline;
    int param = 3;
    sl_buf_puts(b, "WITH r AS (UPDATE ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " q SET updated_at = now(), status = CASE WHEN $2::bool"
                   " AND q.attempts < $1::int"
                   " THEN 'retry'::job_status ELSE 'error'::job_status END,"
                   " last_error = 'lease expired: worker ' ||"
                   " COALESCE(q.locked_by, '?') || ' stopped renewing it',"
                   " error_class = 'lease_expired', locked_by = NULL,"
                   " locked_until = NULL, finished_at = CASE WHEN $2::bool"
                   " AND q.attempts < $1::int THEN NULL ELSE now() END"
                   " WHERE q.id IN (SELECT id FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " WHERE status = 'in_progress' AND locked_until < now()"
                   " FOR UPDATE SKIP LOCKED) RETURNING q.status");
    if (p->has_subject) {
        sl_buf_puts(b, ", q.");
        sl_buf_ident(b, p->subject.fk);
    }
    sl_buf_puts(b, ")");
    subject_cte(b, s, &s->status.on_error, "s", "r", "r.status = 'error'",
                &param);
    sl_buf_puts(b, " SELECT count(*) FROM r");
}

static void build_next_due(sl_buf *b, const sl_stage *s) {
    /* GREATEST ignores NULLs: without the CASE an empty queue reads as
     * "due now". */
    sl_buf_puts(b, "SELECT CASE WHEN min(run_at) IS NOT NULL THEN GREATEST(0,"
                   " ceil(EXTRACT(EPOCH FROM (min(run_at) -"
                   " clock_timestamp())) * 1000))::bigint END FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " WHERE status IN ('pending','retry')");
}

/* $1 age ms, $2 channel. */
static void build_stale(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "WITH st AS (SELECT count(*) AS n FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " WHERE status IN ('pending','retry') AND run_at <= now() -"
                   " $1::bigint * interval '1 millisecond') SELECT st.n,"
                   " CASE WHEN st.n > 0 THEN pg_notify($2, 'sweep') END::text"
                   " FROM st");
}

static void build_unfinished(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "SELECT count(*) FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " WHERE status IN ('pending','retry','in_progress')");
}

typedef void (*builder)(sl_buf *, const sl_stage *);
static const builder builders[OP__COUNT] = {
    build_claim,     build_complete, build_fail,      build_snooze,
    build_checkpoint, build_progress, build_heartbeat, build_rescue,
    build_next_due,  build_stale,    build_unfinished, build_claim_bare,
    build_input};

int sl_queue_prepare_stage(PGconn *c, const sl_stage *s, char *err,
                           size_t errlen) {
    for (int op = 0; op < OP__COUNT; op++) {
        sl_buf b;
        char name[64];
        sl_buf_init(&b);
        builders[op](&b, s);
        if (sl_buf_failed(&b)) {
            sl_buf_free(&b);
            snprintf(err, errlen, "out of memory");
            return -SL_ENOMEM;
        }
        stmt_name(s, op, name, sizeof name);
        PGresult *r = PQprepare(c, name, sl_buf_str(&b), 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char what[128];
            snprintf(what, sizeof what, "prepare %s for %s", op_names[op],
                     s->queue);
            set_err(err, errlen, what, c, r);
            PQclear(r);
            sl_buf_free(&b);
            return -SL_EDB;
        }
        PQclear(r);
        sl_buf_free(&b);
    }
    return 0;
}

int sl_queue_prepare(PGconn *c, const sl_model *m, char *err, size_t errlen) {
    for (size_t pi = 0; pi < m->npipelines; pi++) {
        const sl_pipeline *p = &m->pipelines[pi];
        for (size_t si = 0; si < p->nstages; si++) {
            int rc = sl_queue_prepare_stage(c, &p->stages[si], err, errlen);
            if (rc != 0) return rc;
        }
    }
    return 0;
}

/* ---- execution -------------------------------------------------------------- */

/* Connection trouble, as opposed to an error in the statement: libpq's own
 * errors carry no SQLSTATE; the server's say 08xxx (connection exception)
 * or 57P0x (admin shutdown, crash shutdown, cannot connect now). */
static int conn_error(PGconn *c, const PGresult *r) {
    return sl_db_errclass(c, r, SL_EC_INTERNAL) == SL_EC_CONNECTION;
}

/* The values did not fit the statement: a data exception (class 22, such
 * as an output that is not a valid integer) or an integrity violation
 * (class 23), or a value past a limit (class 54). Anything else (a statement timeout, a deadlock, lack of
 * resources) says nothing about the job and is worth repeating. */
static int data_error(const PGresult *r) { return sl_db_data_error(r); }

/* Runs prepared statement `op` of stage s. Returns 0 with *out set (the
 * caller clears it), -SL_ECONN when the connection is the problem,
 * -SL_EINVAL when the bound values do not fit, or -SL_EDB for another
 * (usually passing) error; err says which. */
static int exec(PGconn *c, const sl_stage *s, int op, int n,
                const char *const *vals, ExecStatusType want, PGresult **out,
                char *err, size_t errlen) {
    char name[64];
    stmt_name(s, op, name, sizeof name);
    PGresult *r = PQexecPrepared(c, name, n, vals, NULL, NULL, 0);
    *out = NULL;
    if (PQresultStatus(r) != want) {
        char what[128];
        /* A prepared statement that vanished (26000) is mended like a lost
         * connection: a new one prepares every statement again. */
        const char *state = sl_db_sqlstate(r);
        int gone = state && strcmp(state, "26000") == 0;
        int rc = conn_error(c, r) || gone ? -SL_ECONN
                 : data_error(r)          ? -SL_EINVAL
                                          : -SL_EDB;
        snprintf(what, sizeof what, "%s on %s", op_names[op], s->queue);
        set_err(err, errlen, what, c, r);
        PQclear(r);
        return rc;
    }
    /* Never trust the shape of a result: a statement of this session
     * replaced by another would make the readers below index columns
     * that do not exist. Columns read: claims 0..2 (3 and 4 only through
     * PQgetisnull, which is safe out of range), the others 0. */
    int need = op == OP_CLAIM || op == OP_CLAIM_BARE ? 3 : 1;
    if (want == PGRES_TUPLES_OK && PQnfields(r) < need) {
        snprintf(err, errlen,
                 "%s on %s: unexpected result (%d columns); the session's "
                 "statements are replaced by a new connection",
                 op_names[op], s->queue, PQnfields(r));
        PQclear(r);
        return -SL_ECONN;
    }
    *out = r;
    return 0;
}

void sl_queue_job_clear(sl_qjob *j) {
    json_decref(j->input);
    json_decref(j->checkpoint);
    memset(j, 0, sizeof *j);
}

/* Non-zero when JSON text holds a number a double cannot represent
 * (overflow or underflow: strtod's ERANGE). jansson rejects overflow but
 * reads an underflowing number as 0 without a word; a handler must never
 * see its input altered, so such a job fails instead. */
static int json_numbers_lossy(const char *t) {
    const char *p = t;
    while (*p) {
        if (*p == '"') { /* skip the string, escapes included */
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1]) p++;
            if (*p) p++;
            continue;
        }
        if (*p == '-' || (*p >= '0' && *p <= '9')) {
            char *end;
            errno = 0;
            double v = strtod(p, &end);
            (void)v;
            if (errno == ERANGE) return 1;
            p = end > p ? end : p + 1;
            continue;
        }
        p++;
    }
    return 0;
}

static int claim(PGconn *c, const sl_stage *s, int op, const char *owner,
                 int max, sl_qjob *jobs, int *n, char *err, size_t errlen) {
    const char *vals[8];
    char maxs[16], lease[24], prog[12];
    snprintf(maxs, sizeof maxs, "%d", max);
    snprintf(lease, sizeof lease, "%lld", (long long)s->lease_ms);
    vals[0] = owner;
    vals[1] = maxs;
    vals[2] = lease;
    int nv = 3;
    if (has_mapping(s, &s->status.on_start))
        nv += mapping_values(&s->pipeline->subject, &s->status.on_start,
                             vals + 3, prog);
    *n = 0;
    PGresult *r;
    int rc = exec(c, s, op, nv, vals, PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    int rows = PQntuples(r);
    for (int i = 0; i < rows && i < max; i++) {
        sl_qjob *j = &jobs[i];
        memset(j, 0, sizeof *j);
        snprintf(j->id, sizeof j->id, "%s", PQgetvalue(r, i, 0));
        if (!PQgetisnull(r, i, 1))
            snprintf(j->subject, sizeof j->subject, "%s", PQgetvalue(r, i, 1));
        j->attempts = atoi(PQgetvalue(r, i, 2));
        json_error_t je;
        if (!PQgetisnull(r, i, 3)) {
            j->checkpoint = json_loads(PQgetvalue(r, i, 3), JSON_DECODE_ANY,
                                       &je);
            if (!j->checkpoint)
                snprintf(j->undecodable, sizeof j->undecodable,
                         "checkpoint cannot be decoded: %.150s", je.text);
        }
        if (!PQgetisnull(r, i, 4)) {
            const char *text = PQgetvalue(r, i, 4);
            j->input = json_loads(text, 0, &je);
            if (j->input && json_numbers_lossy(text)) {
                json_decref(j->input);
                j->input = NULL;
                snprintf(je.text, sizeof je.text,
                         "a number is out of the range of a double");
            }
            if (!j->input) {
                snprintf(j->undecodable, sizeof j->undecodable,
                         "input cannot be decoded: %.150s", je.text);
                j->input = json_object();
            }
        }
        if (!j->input && op == OP_CLAIM) j->input = json_object();
        (*n)++;
    }
    PQclear(r);
    return 0;
}

int sl_queue_claim(PGconn *c, const sl_stage *s, const char *owner, int max,
                   sl_qjob *jobs, int *n, char *err, size_t errlen) {
    return claim(c, s, OP_CLAIM, owner, max, jobs, n, err, errlen);
}

int sl_queue_claim_bare(PGconn *c, const sl_stage *s, const char *owner,
                        int max, sl_qjob *jobs, int *n, char *err,
                        size_t errlen) {
    return claim(c, s, OP_CLAIM_BARE, owner, max, jobs, n, err, errlen);
}

int sl_queue_input(PGconn *c, const sl_stage *s, sl_qjob *j, char *err,
                   size_t errlen) {
    const char *vals[1] = {j->id};
    PGresult *r;
    int rc = exec(c, s, OP_INPUT, 1, vals, PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    json_decref(j->input);
    j->input = NULL;
    if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
        json_error_t je;
        const char *text = PQgetvalue(r, 0, 0);
        j->input = json_loads(text, 0, &je);
        if (j->input && json_numbers_lossy(text)) {
            json_decref(j->input);
            j->input = NULL;
            snprintf(je.text, sizeof je.text,
                     "a number is out of the range of a double");
        }
        if (!j->input)
            snprintf(j->undecodable, sizeof j->undecodable,
                     "input cannot be decoded: %.150s", je.text);
    }
    if (!j->input) j->input = json_object();
    PQclear(r);
    return 0;
}

int sl_queue_complete(PGconn *c, const sl_stage *s, const char *owner,
                      sl_qdone *done, int n, char *err, size_t errlen) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        json_t *o = done[i].outputs ? json_deep_copy(done[i].outputs)
                                    : json_object();
        json_array_append_new(arr, json_pack("{s:s, s:i, s:o}", "id",
                                             done[i].job->id, "a",
                                             done[i].job->attempts, "o", o));
        done[i].completed = 0;
    }
    char *raw = json_dumps(arr, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(arr);
    /* No secret reaches a table, whatever a handler returns. */
    char *payload = raw ? sl_redact_dup(raw) : NULL;
    free(raw);
    if (!payload) {
        snprintf(err, errlen, "complete: cannot encode outputs");
        return -SL_ENOMEM;
    }
    const char *vals[8];
    char prog[12];
    vals[0] = owner;
    vals[1] = payload;
    int nv = 2;
    if (has_mapping(s, &s->status.on_done))
        nv += mapping_values(&s->pipeline->subject, &s->status.on_done,
                             vals + 2, prog);
    PGresult *r;
    int rc = exec(c, s, OP_COMPLETE, nv, vals, PGRES_TUPLES_OK, &r, err,
                  errlen);
    free(payload);
    if (rc < 0) return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *id = PQgetvalue(r, i, 0);
        for (int k = 0; k < n; k++)
            if (strcmp(done[k].job->id, id) == 0) done[k].completed = 1;
    }
    PQclear(r);
    return 0;
}

static int count_result(PGresult *r) {
    int v = PQntuples(r) > 0 ? atoi(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return v;
}

int sl_queue_fail(PGconn *c, const sl_stage *s, const char *owner,
                  const sl_qjob *j, int retry, int64_t delay_ms,
                  const char *errclass, const char *message, char *err,
                  size_t errlen) {
    const char *vals[12];
    char att[16], delay[24], prog[12];
    snprintf(att, sizeof att, "%d", j->attempts);
    snprintf(delay, sizeof delay, "%lld", (long long)(retry ? delay_ms : 0));
    vals[0] = j->id;
    vals[1] = owner;
    vals[2] = att;
    vals[3] = retry ? "retry" : "error";
    vals[4] = delay;
    vals[5] = message;
    vals[6] = errclass;
    int nv = 7;
    if (has_mapping(s, &s->status.on_error))
        nv += mapping_values(&s->pipeline->subject, &s->status.on_error,
                             vals + 7, prog);
    PGresult *r;
    int rc = exec(c, s, OP_FAIL, nv, vals, PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    return count_result(r) == 1 ? 0 : -SL_ELEASE;
}

static int exec_fenced(PGconn *c, const sl_stage *s, int op, int nv,
                       const char *const *vals, char *err, size_t errlen) {
    PGresult *r;
    int rc = exec(c, s, op, nv, vals, PGRES_COMMAND_OK, &r, err, errlen);
    if (rc < 0) return rc;
    int rows = atoi(PQcmdTuples(r));
    PQclear(r);
    return rows == 1 ? 0 : -SL_ELEASE;
}

int sl_queue_snooze(PGconn *c, const sl_stage *s, const char *owner,
                    const sl_qjob *j, int64_t delay_ms, char *err,
                    size_t errlen) {
    char att[16], delay[24];
    snprintf(att, sizeof att, "%d", j->attempts);
    snprintf(delay, sizeof delay, "%lld", (long long)delay_ms);
    const char *vals[4] = {j->id, owner, att, delay};
    return exec_fenced(c, s, OP_SNOOZE, 4, vals, err, errlen);
}

int sl_queue_checkpoint(PGconn *c, const sl_stage *s, const char *owner,
                        const sl_qjob *j, const json_t *checkpoint, char *err,
                        size_t errlen) {
    char att[16], lease[24];
    char *raw = json_dumps(checkpoint, JSON_COMPACT | JSON_ENCODE_ANY);
    char *cp = raw ? sl_redact_dup(raw) : NULL;
    free(raw);
    if (!cp) {
        snprintf(err, errlen, "checkpoint: cannot encode");
        return -SL_EINVAL;
    }
    snprintf(att, sizeof att, "%d", j->attempts);
    snprintf(lease, sizeof lease, "%lld", (long long)s->lease_ms);
    const char *vals[5] = {j->id, owner, att, cp, lease};
    int rc = exec_fenced(c, s, OP_CHECKPOINT, 5, vals, err, errlen);
    free(cp);
    return rc;
}

int sl_queue_progress(PGconn *c, const sl_stage *s, const char *owner,
                      const sl_qjob *j, int pct, const char *detail,
                      char *err, size_t errlen) {
    char att[16], jp[12], sp[12];
    if (pct < 0) pct = 0;
    if (pct > 100) pct = 100;
    snprintf(att, sizeof att, "%d", j->attempts);
    snprintf(jp, sizeof jp, "%d", pct);
    const sl_status_map *m = &s->status;
    int mapped = m->progress_from >= 0 ? m->progress_from +
                                             (m->progress_to - m->progress_from) *
                                                 pct / 100
                                       : 0;
    snprintf(sp, sizeof sp, "%d", mapped);
    const char *st = m->on_progress_status ? m->on_progress_status
                                           : m->on_start.status;
    char safe[512];
    if (detail) {
        snprintf(safe, sizeof safe, "%s", detail);
        sl_redact(safe, sizeof safe);
    }
    const char *vals[7] = {j->id, owner, att, jp, detail ? safe : NULL, st,
                           sp};
    PGresult *r;
    int rc = exec(c, s, OP_PROGRESS, 7, vals, PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    return count_result(r) == 1 ? 0 : -SL_ELEASE;
}

int sl_queue_heartbeat(PGconn *c, const sl_stage *s, const char *owner,
                       const char *const *ids, int n, int *still_owned,
                       char *err, size_t errlen) {
    sl_buf arr;
    char lease[24];
    sl_buf_init(&arr);
    sl_buf_puts(&arr, "{");
    for (int i = 0; i < n; i++) {
        sl_buf_puts(&arr, i ? "," : "");
        sl_buf_puts(&arr, ids[i]);
        still_owned[i] = 0;
    }
    sl_buf_puts(&arr, "}");
    snprintf(lease, sizeof lease, "%lld", (long long)s->lease_ms);
    const char *vals[3] = {sl_buf_str(&arr), owner, lease};
    PGresult *r;
    int rc = exec(c, s, OP_HEARTBEAT, 3, vals, PGRES_TUPLES_OK, &r, err,
                  errlen);
    sl_buf_free(&arr);
    if (rc < 0) return rc;
    for (int i = 0; i < PQntuples(r); i++)
        for (int k = 0; k < n; k++)
            if (strcmp(ids[k], PQgetvalue(r, i, 0)) == 0) still_owned[k] = 1;
    PQclear(r);
    return 0;
}

int sl_queue_rescue(PGconn *c, const sl_stage *s, int *rescued, char *err,
                    size_t errlen) {
    const char *vals[8];
    char max[16], prog[12];
    snprintf(max, sizeof max, "%d", s->retry.max_attempts);
    vals[0] = max;
    vals[1] = (s->retry.retry_mask & (1u << SL_EC_LEASE_EXPIRED)) ? "true"
                                                                  : "false";
    int nv = 2;
    if (has_mapping(s, &s->status.on_error))
        nv += mapping_values(&s->pipeline->subject, &s->status.on_error,
                             vals + 2, prog);
    PGresult *r;
    int rc = exec(c, s, OP_RESCUE, nv, vals, PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    *rescued = count_result(r);
    return 0;
}

int sl_queue_next_due(PGconn *c, const sl_stage *s, int64_t *ms, char *err,
                      size_t errlen) {
    PGresult *r;
    int rc = exec(c, s, OP_NEXT_DUE, 0, NULL, PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    *ms = PQgetisnull(r, 0, 0) ? -1 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

int sl_queue_reannounce(PGconn *c, const sl_stage *s, int *stale, char *err,
                        size_t errlen) {
    char age[24];
    snprintf(age, sizeof age, "%lld", (long long)s->pipeline->sweep_age_ms);
    const char *vals[2] = {age, s->channel};
    PGresult *r;
    int rc = exec(c, s, OP_STALE, 2, vals, PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    *stale = count_result(r);
    return 0;
}

int sl_queue_unfinished(PGconn *c, const sl_stage *s, long *n, char *err,
                        size_t errlen) {
    PGresult *r;
    int rc = exec(c, s, OP_UNFINISHED, 0, NULL, PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    *n = count_result(r);
    return 0;
}
