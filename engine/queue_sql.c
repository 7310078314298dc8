/* queue_sql.c - the text of every statement the runtime runs against
 * queue and subject tables, one builder per operation (queue_priv.h).
 *
 * Identifiers are quoted with sl_buf_ident; every value is a bound
 * parameter, including the mapping's status/progress/detail constants, so
 * no YAML value is ever spliced. queue.c prepares and runs them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "queue_priv.h"

const char *const sl_queue__op_names[OP__COUNT] = {
    "claim",      "complete",  "fail",   "snooze",   "checkpoint",
    "progress",   "heartbeat", "rescue", "nextdue",  "stale",
    "unfinished", "claimbare", "input",  "requester", "purge",
    "purgecount", "claimlock"};

/* ---- helpers ------------------------------------------------------------ */

void sl_queue__stmt_name(const sl_stage *s, int op, char *out, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a of the queue name */
    for (const char *p = s->queue; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    snprintf(out, n, "sl_%s_%08x", sl_queue__op_names[op], h);
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
        sl_buf_printf(b,
                      ") = 'array' THEN ARRAY(SELECT "
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
int sl_queue__mapping_values(const sl_subject *subj, const sl_mapping *m,
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

int sl_queue__has_mapping(const sl_stage *s, const sl_mapping *m) {
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
    if (!sl_queue__has_mapping(s, m)) return;
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

/* ---- statement builders ---------------------------------------------------
 */

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

/* $1 job id. */
static void build_requester(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "SELECT q.requested_by::text FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " q WHERE q.id = $1");
}

/* Whether the claim touches the subject: an on_start mapping to apply, or
 * a detail column that may hold a retry note to replace. */
int sl_queue__claim_touches_subject(const sl_stage *s) {
    return sl_queue__has_mapping(s, &s->status.on_start) ||
           (s->pipeline->has_subject && s->pipeline->subject.detail_column);
}

/* Appends ", s AS (UPDATE subject ...)" for the claim (alias j: the claimed
 * jobs, with j.was their status before the claim and j.resumed whether
 * they ran before), binding on_start's values from *param on, then the
 * stage's progress status when it differs from on_start's.
 *
 * A fresh job gets the on_start mapping as it is. A job that ran before (a
 * retry, a snooze, a rescue, a release at shutdown) resumes its stage:
 * when the subject is still in one of the stage's running statuses (or the
 * stage sets none), status and progress stay where the earlier attempts
 * got them (progress never goes below on_start's), and the detail is kept
 * unless it holds the note written when the job went into retry, which
 * on_start's detail (or "Running attempt n") replaces. docs/dsl.md
 * describes the result. */
static void claim_subject_cte(sl_buf *b, const sl_stage *s, int *param) {
    const sl_subject *subj = &s->pipeline->subject;
    const sl_mapping *m = &s->status.on_start;
    const char *ps = s->status.on_progress_status;
    int st = m->status ? (*param)++ : 0;
    int pg = m->progress >= 0 && subj->progress_column ? (*param)++ : 0;
    int dt = m->detail && subj->detail_column ? (*param)++ : 0;
    int qs = st && ps && strcmp(ps, m->status) != 0 ? (*param)++ : 0;
    int sets = 0;
    sl_buf k;
    sl_buf_init(&k);
    sl_buf_puts(&k, "(j.resumed");
    if (st) {
        sl_buf_puts(&k, " AND (t.");
        sl_buf_ident(&k, subj->status_column);
        sl_buf_printf(&k, " = $%d", st);
        if (qs) {
            sl_buf_puts(&k, " OR t.");
            sl_buf_ident(&k, subj->status_column);
            sl_buf_printf(&k, " = $%d", qs);
        }
        sl_buf_puts(&k, ")");
    }
    sl_buf_puts(&k, ")");
    const char *resumed = sl_buf_str(&k);

    sl_buf_puts(b, ", s AS (UPDATE ");
    sl_buf_ident(b, subj->table);
    sl_buf_puts(b, " t SET ");
    if (st) {
        sl_buf_ident(b, subj->status_column);
        sl_buf_printf(b, " = CASE WHEN %s THEN t.", resumed);
        sl_buf_ident(b, subj->status_column);
        sl_buf_printf(b, " ELSE $%d END", st);
        sets++;
    }
    if (pg) {
        sl_buf_puts(b, sets++ ? ", " : "");
        sl_buf_ident(b, subj->progress_column);
        sl_buf_printf(b, " = CASE WHEN %s THEN GREATEST(t.", resumed);
        sl_buf_ident(b, subj->progress_column);
        sl_buf_printf(b, ", $%d::int) ELSE $%d::int END", pg, pg);
    }
    if (subj->detail_column) {
        sl_buf_puts(b, sets++ ? ", " : "");
        sl_buf_ident(b, subj->detail_column);
        if (dt) {
            sl_buf_printf(b, " = CASE WHEN %s AND j.was <> 'retry' THEN t.",
                          resumed);
            sl_buf_ident(b, subj->detail_column);
            sl_buf_printf(b, " ELSE $%d::text END", dt);
        } else {
            sl_buf_puts(b, " = CASE WHEN j.was = 'retry' THEN 'Running"
                           " attempt ' || j.attempts ELSE t.");
            sl_buf_ident(b, subj->detail_column);
            sl_buf_puts(b, " END");
        }
    }
    sl_buf_puts(b, " FROM j WHERE t.");
    sl_buf_ident(b, subj->key);
    sl_buf_puts(b, " = j.");
    sl_buf_ident(b, subj->fk);
    /* Without a mapping only a retry note has anything to change. */
    if (!sl_queue__has_mapping(s, m)) sl_buf_puts(b, " AND j.was = 'retry'");
    sl_buf_puts(b, ")");
    sl_buf_free(&k);
}

/* The values claim_subject_cte binds, in its order. */
int sl_queue__claim_subject_values(const sl_stage *s, const char **vals,
                                   char progress[12]) {
    const sl_mapping *m = &s->status.on_start;
    const char *ps = s->status.on_progress_status;
    int n =
        sl_queue__has_mapping(s, m)
            ? sl_queue__mapping_values(&s->pipeline->subject, m, vals, progress)
            : 0;
    if (m->status && ps && strcmp(ps, m->status) != 0) vals[n++] = ps;
    return n;
}

/* The parameter numbers of the claim's policy values: after the subject
 * values (claim_subject_cte), limit.max and the locked keys' hashes (with
 * `limit:`), then the fair cursor (with `fair:`). */
void sl_queue__claim_policy_params(const sl_stage *s, sl_policy_params *pp) {
    const char *vals[8];
    char prog[12];
    int n = 4 + (sl_queue__claim_touches_subject(s)
                     ? sl_queue__claim_subject_values(s, vals, prog)
                     : 0);
    pp->batch = 2;
    pp->max = s->limit_key ? n++ : 0;
    pp->locks = s->limit_key ? n++ : 0;
    pp->cursor = s->fair_key ? n++ : 0;
}

/* $1 owner, $2 max, $3 lease ms, then claim_subject_values. The bare
 * variant leaves the input out (read per job with OP_INPUT).
 *
 * Order: priority, then run_at, then attempts (descending): a job that
 * already ran (rescued from a dead worker, which keeps its run_at) goes
 * ahead of the jobs queued with it or after it, ties included: a bulk
 * enqueue gives a whole batch one run_at. The claim index has the same
 * columns (schema.c). */
static void build_claim_any(sl_buf *b, const sl_stage *s, int bare) {
    const char *fk = s->pipeline->has_subject ? s->pipeline->subject.fk : NULL;
    int param = 4;
    if (s->fair_key || s->limit_key) {
        sl_policy_params pp;
        sl_queue__claim_policy_params(s, &pp);
        sl_queue__policy_candidates(b, s, &pp);
    } else {
        sl_buf_puts(b, "WITH c AS (SELECT id, status AS was, started_at IS"
                       " NOT NULL AS resumed, run_at AS due FROM ");
        sl_buf_ident(b, s->queue);
        sl_buf_puts(b, " WHERE status IN ('pending','retry') AND run_at <="
                       " now() ORDER BY priority DESC, run_at, attempts DESC"
                       " LIMIT $2 FOR UPDATE SKIP LOCKED)");
    }
    sl_buf_puts(b, ", j AS (UPDATE ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " q SET status = 'in_progress', attempts = q.attempts + 1,"
                   " updated_at = now(),"
                   " locked_by = $1, locked_until = now() + $3::bigint *"
                   " interval '1 millisecond', started_at = now(),"
                   " finished_at = NULL FROM c WHERE q.id = c.id"
                   /* The same rows again as an array, so that the rows
                    * are found through the primary key: with the join
                    * alone the planner hash-joins c against a sequential
                    * scan of the whole table, finished jobs included
                    * (30 ms per claim of 100 with 20,000 rows). */
                   " AND q.id = ANY(ARRAY(SELECT id FROM c))"
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
    sl_buf_puts(b, ", c.was, c.resumed, (extract(epoch FROM now() - c.due)"
                   " * 1000)::bigint AS wait_ms");
    if (s->fair_key) sl_buf_puts(b, ", c.kt, c.pos"); /* the fair cursor */
    sl_buf_puts(b, ")");
    if (sl_queue__claim_touches_subject(s)) claim_subject_cte(b, s, &param);
    sl_buf_puts(b, " SELECT id, subject, attempts, checkpoint, input, wait_ms");
    if (s->fair_key) sl_buf_puts(b, ", kt, pos");
    sl_buf_puts(b, " FROM j");
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
    if (sl_stage_column(s, from)) {
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
                   " RETURNING j.id, u.o, j.priority, j.requested_by,"
                   " j.subject_started_at");
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
        /* The next job acts for whoever asked for this one. */
        sl_buf_puts(b, " (dedup_key, requested_by, subject_started_at");
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
        sl_buf_puts(b, ") SELECT 'from:' || d.id::text, d.requested_by,"
                       " d.subject_started_at");
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
    sl_buf_puts(b, " SELECT id, (extract(epoch FROM now() -"
                   " subject_started_at) * 1000)::bigint FROM d");
}

/* Appends ", <cte> AS (UPDATE subject SET detail = <note> FROM <from>
 * WHERE key = from.fk AND <cond>)": the note a subject shows while its job
 * waits to run again (docs/dsl.md, "While a job waits"). `at` is the SQL
 * of when it runs again, `attempt` and `max` of the attempt that ended and
 * the stage's max_attempts, `cls` of the error class. Nothing when the
 * subject has no detail column. */
static void retry_note_cte(sl_buf *b, const sl_stage *s, const char *cte,
                           const char *from, const char *cond, const char *at,
                           const char *attempt, const char *max,
                           const char *cls) {
    const sl_pipeline *p = s->pipeline;
    if (!p->has_subject || !p->subject.detail_column) return;
    const char *ts = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";
    sl_buf_printf(b, ", %s AS (UPDATE ", cte);
    sl_buf_ident(b, p->subject.table);
    sl_buf_puts(b, " t SET ");
    sl_buf_ident(b, p->subject.detail_column);
    sl_buf_printf(b,
                  " = CASE WHEN %s = 'rate_limited' THEN 'Rate limited:"
                  " waiting until ' || to_char((%s) AT TIME ZONE 'UTC', %s)"
                  " || ' (attempt ' || %s || ' of ' || %s || ')' ELSE"
                  " 'Retrying at ' || to_char((%s) AT TIME ZONE 'UTC', %s)"
                  " || ': attempt ' || %s || ' of ' || %s || ' failed ('"
                  " || %s || ')' END FROM %s WHERE t.",
                  cls, at, ts, attempt, max, at, ts, attempt, max, cls, from);
    sl_buf_ident(b, p->subject.key);
    sl_buf_printf(b, " = %s.", from);
    sl_buf_ident(b, p->subject.fk);
    sl_buf_printf(b, " AND %s)", cond);
}

/* $1 id, $2 owner, $3 attempts, $4 status, $5 delay ms, $6 message,
 * $7 class, then the on_error mapping, then max_attempts. */
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
    subject_cte(b, s, &s->status.on_error, "s", "f", "$4::job_status = 'error'",
                &param);
    char max[16];
    snprintf(max, sizeof max, "$%d::int", param);
    retry_note_cte(b, s, "w", "f", "$4::job_status = 'retry'",
                   "now() + $5::bigint * interval '1 millisecond'", "$3::int",
                   max, "$7::text");
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
            /* Within one status (a stage's running status) progress only
             * grows: a retried or resumed handler reports from its start
             * or its checkpoint again. */
            sl_buf_puts(b, ", ");
            sl_buf_ident(b, subj->progress_column);
            sl_buf_puts(b, " = CASE WHEN $6 IS NULL OR t.");
            sl_buf_ident(b, subj->status_column);
            sl_buf_puts(b, " = $6 THEN GREATEST(t.");
            sl_buf_ident(b, subj->progress_column);
            sl_buf_puts(b, ", $7::int) ELSE $7::int END");
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
                   " FOR UPDATE SKIP LOCKED) RETURNING q.status, q.attempts,"
                   " q.run_at");
    if (p->has_subject) {
        sl_buf_puts(b, ", q.");
        sl_buf_ident(b, p->subject.fk);
    }
    sl_buf_puts(b, ")");
    subject_cte(b, s, &s->status.on_error, "s", "r", "r.status = 'error'",
                &param);
    retry_note_cte(b, s, "w", "r", "r.status = 'retry'",
                   "GREATEST(r.run_at, now())", "r.attempts", "$1::int",
                   "'lease_expired'::text");
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

/* The jobs of final status $1 that finished more than $2 ms ago, at
 * most $3 of them, oldest first, through the finished index
 * (schema_index.c: the comparison on finished_at implies its predicate,
 * also in a generic plan). The literal status list keeps any row that is
 * not finished out whatever its finished_at says. */
static void purge_where(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, " FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " WHERE status IN ('done', 'error', 'cancelled') AND"
                   " status = $1::job_status AND finished_at < now() -"
                   " $2::bigint * interval '1 millisecond'");
}

/* Every column of the queue of s (engine, subject key, declared), each
 * preceded by `pre`, comma-separated. */
static void all_columns(sl_buf *b, const sl_stage *s, const char *pre) {
    const sl_pipeline *p = s->pipeline;
    int n = 0;
    for (const sl_engine_col *e = sl_engine_columns; e->name; e++) {
        sl_buf_printf(b, "%s%s", n++ ? ", " : "", pre);
        sl_buf_ident(b, e->name);
    }
    if (p->has_subject) {
        sl_buf_printf(b, ", %s", pre);
        sl_buf_ident(b, p->subject.fk);
    }
    for (size_t i = 0; i < s->ncolumns; i++) {
        sl_buf_printf(b, ", %s", pre);
        sl_buf_ident(b, s->columns[i].name);
    }
}

/* $1 status, $2 age ms, $3 batch. Rows another transaction holds (a
 * retry or cancel in flight) are skipped, never waited for. With
 * `retention: {history: true}` the deleted rows are inserted, whole, into
 * the history table in the same statement. */
static void build_purge(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "WITH x AS (SELECT id");
    purge_where(b, s);
    sl_buf_puts(b, " ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED),"
                   " d AS (DELETE FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " q USING x WHERE q.id = x.id RETURNING ");
    if (s->retention_history) {
        all_columns(b, s, "q.");
        char hist[64];
        sl_stage_history_table(s, hist);
        sl_buf_puts(b, "), h AS (INSERT INTO ");
        sl_buf_ident(b, hist);
        sl_buf_puts(b, " (");
        all_columns(b, s, "");
        sl_buf_puts(b, ") SELECT ");
        all_columns(b, s, "");
        sl_buf_puts(b, " FROM d");
    } else {
        sl_buf_puts(b, "1");
    }
    sl_buf_puts(b, ") SELECT count(*) FROM d");
}

/* $1 status, $2 age ms, $3 unused (the same parameters as purge). */
static void build_purge_count(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "SELECT count(*), $3::int");
    purge_where(b, s);
}

static void build_claim_lock(sl_buf *b, const sl_stage *s) {
    sl_queue__build_claim_lock(b, s);
}

const sl_queue__builder sl_queue__builders[OP__COUNT] = {
    build_claim,      build_complete, build_fail,       build_snooze,
    build_checkpoint, build_progress, build_heartbeat,  build_rescue,
    build_next_due,   build_stale,    build_unfinished, build_claim_bare,
    build_input,      build_requester, build_purge,      build_purge_count,
    build_claim_lock};
