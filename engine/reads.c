/* reads.c - the read side: status, listings, statistics (reads.h).
 *
 * Like jobs.c, the statements are built per call from the model: they
 * serve an operator at a terminal, not the workers' hot path, so they are
 * not prepared. Identifiers are quoted with sl_buf_ident; the only text
 * spliced otherwise is numbers the engine formats itself (a stage's index,
 * its max_attempts) and queue names as literals (sl_buf_literal).
 */
#include "reads.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "error.h"
#include "jobs.h"
#include "schema.h"

/* A timestamptz column as RFC 3339 text in UTC with milliseconds
 * ("2025-05-01T10:00:02.123Z"), for JSON output. */
#define SL_READS_RFC3339(col)                                               \
    "to_char(" col " AT TIME ZONE 'UTC',"                                   \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* ---- running a statement ------------------------------------------------- */

/* Runs the SQL in q (freed here) with nvals text parameters and expects
 * rows. Returns 0 with *out set, or an error naming `what` in err; with
 * data_inval, a value the server refuses (sl_db_data_error) is
 * -SL_EINVAL. */
static int run_ex(PGconn *c, sl_buf *q, int nvals, const char *const *vals,
                  int data_inval, const char *what, PGresult **out, char *err,
                  size_t errlen) {
    assert(c && q && what && out && err && errlen > 0);
    *out = NULL;
    if (sl_buf_failed(q)) {
        sl_buf_free(q);
        snprintf(err, errlen, "%s: out of memory", what);
        return -SL_ENOMEM;
    }
    PGresult *r =
        PQexecParams(c, sl_buf_str(q), nvals, NULL, vals, NULL, NULL, 0);
    sl_buf_free(q);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        *out = r;
        return 0;
    }
    char m[2048];
    const char *st = sl_db_sqlstate(r);
    /* 42P01 undefined_table: a queue or subject table was never created.
     * (st lives in r: read it before PQclear.) */
    int missing = st && strcmp(st, "42P01") == 0;
    snprintf(err, errlen, "%s: %s", what, sl_db_error(c, r, m, sizeof m));
    int inval = data_inval && sl_db_data_error(r);
    PQclear(r);
    if (inval) return -SL_EINVAL;
    return missing ? -SL_ENOTFOUND : -SL_EDB;
}

static int run(PGconn *c, sl_buf *q, int nvals, const char *const *vals,
               const char *what, PGresult **out, char *err, size_t errlen) {
    return run_ex(c, q, nvals, vals, 0, what, out, err, errlen);
}

/* As run, with the one parameter id. */
static int run_id(PGconn *c, sl_buf *q, const char *id, const char *what,
                  PGresult **out, char *err, size_t errlen) {
    const char *vals[1] = {id};
    return run(c, q, 1, vals, what, out, err, errlen);
}

/* ---- a subject and its jobs ---------------------------------------------- */

/* Appends "<column>::text", or NULL::text when the model maps none. */
static void text_column(sl_buf *b, const char *column) {
    if (column)
        sl_buf_ident(b, column);
    else
        sl_buf_puts(b, "NULL");
    sl_buf_puts(b, "::text");
}

int sl_reads_subject(PGconn *c, const sl_pipeline *p, const char *id,
                     PGresult **out, char *err, size_t errlen) {
    assert(p && p->has_subject && id);
    const sl_subject *sj = &p->subject;
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT ");
    text_column(&q, sj->status_column);
    sl_buf_puts(&q, ", ");
    text_column(&q, sj->progress_column);
    sl_buf_puts(&q, ", ");
    text_column(&q, sj->detail_column);
    sl_buf_puts(&q, " FROM ");
    sl_buf_ident(&q, sj->table);
    sl_buf_puts(&q, " WHERE ");
    sl_buf_ident(&q, sj->key);
    sl_buf_printf(&q, " = $1::%s", sl_key_type_name(sj->key_type));
    return run_id(c, &q, id, sj->table, out, err, errlen);
}

/* The SL_JOB_* columns of stage s's queue, aliased q. */
static void job_columns(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b,
                "SELECT q.id::text, q.status::text, q.attempts, q.last_error,"
                " q.error_class, q.created_at::timestamptz(0)::text,"
                " q.started_at::timestamptz(0)::text,"
                " q.finished_at::timestamptz(0)::text,"
                " EXTRACT(EPOCH FROM COALESCE(q.finished_at, CASE WHEN"
                " q.status = 'in_progress' THEN now() END) -"
                " q.started_at)::float8,"
                " q.run_at::timestamptz(0)::text,"
                " CASE WHEN q.status IN ('pending','retry') AND q.run_at >"
                " now() THEN EXTRACT(EPOCH FROM q.run_at - now())::float8"
                " END, q.status_detail, q.progress, q.locked_by, ");
    sl_jobs_subject_expr(b, s, "q");
    sl_buf_puts(b, ", " SL_READS_RFC3339("q.created_at") ", "
                   SL_READS_RFC3339("q.started_at") ", "
                   SL_READS_RFC3339("q.finished_at") ", "
                   SL_READS_RFC3339("q.run_at"));
    sl_buf_puts(b, " FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " q");
}

int sl_reads_subject_jobs(PGconn *c, const sl_stage *s, const char *id,
                          PGresult **out, char *err, size_t errlen) {
    assert(s && s->pipeline && s->pipeline->has_subject && id);
    sl_buf q;
    sl_buf_init(&q);
    job_columns(&q, s);
    sl_buf_puts(&q, " WHERE q.");
    sl_buf_ident(&q, s->pipeline->subject.fk);
    sl_buf_printf(&q, " = $1::%s ORDER BY q.created_at, q.id",
                  sl_key_type_name(s->pipeline->subject.key_type));
    return run_id(c, &q, id, s->queue, out, err, errlen);
}

int sl_reads_job(PGconn *c, const sl_stage *s, const char *id, PGresult **out,
                 char *err, size_t errlen) {
    assert(s && s->pipeline && id);
    sl_buf q;
    sl_buf_init(&q);
    job_columns(&q, s);
    sl_buf_puts(&q, " WHERE q.id = $1::uuid");
    return run_id(c, &q, id, s->queue, out, err, errlen);
}

int sl_reads_subject_counts(PGconn *c, const sl_pipeline *p, const char *id,
                            sl_job_counts *n, char *err, size_t errlen) {
    assert(p && p->has_subject && p->nstages > 0 && id && n);
    memset(n, 0, sizeof *n);
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT count(*), count(*) FILTER (WHERE st IN"
                    " ('pending','retry','in_progress')), count(*) FILTER"
                    " (WHERE st = 'error'), count(*) FILTER (WHERE st ="
                    " 'cancelled'), count(*) FILTER (WHERE st = 'done' AND"
                    " last) FROM (");
    for (size_t k = 0; k < p->nstages; k++) {
        if (k) sl_buf_puts(&q, " UNION ALL ");
        sl_buf_printf(&q, "SELECT status::text AS st, %s AS last FROM ",
                      p->stages[k].nnext == 0 ? "true" : "false");
        sl_buf_ident(&q, p->stages[k].queue);
        sl_buf_puts(&q, " WHERE ");
        sl_buf_ident(&q, p->subject.fk);
        sl_buf_printf(&q, " = $1::%s", sl_key_type_name(p->subject.key_type));
    }
    sl_buf_puts(&q, ") j");
    PGresult *r;
    int rc = run_id(c, &q, id, "reading the subject's jobs", &r, err, errlen);
    if (rc != 0) return rc;
    assert(PQntuples(r) == 1);
    n->total = atol(PQgetvalue(r, 0, 0));
    n->unfinished = atol(PQgetvalue(r, 0, 1));
    n->error = atol(PQgetvalue(r, 0, 2));
    n->cancelled = atol(PQgetvalue(r, 0, 3));
    n->final_done = atol(PQgetvalue(r, 0, 4));
    PQclear(r);
    return 0;
}

int sl_reads_last_failure(PGconn *c, const sl_pipeline *p, const char *id,
                          PGresult **out, char *err, size_t errlen) {
    assert(p && p->has_subject && p->nstages > 0 && id);
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT * FROM (");
    for (size_t k = 0; k < p->nstages; k++) {
        if (k) sl_buf_puts(&q, " UNION ALL ");
        sl_buf_printf(&q,
                      "SELECT %zu AS k, id::text, attempts, last_error,"
                      " error_class, finished_at FROM ",
                      k);
        sl_buf_ident(&q, p->stages[k].queue);
        sl_buf_puts(&q, " WHERE ");
        sl_buf_ident(&q, p->subject.fk);
        sl_buf_printf(&q, " = $1::%s AND status = 'error'",
                      sl_key_type_name(p->subject.key_type));
    }
    sl_buf_puts(&q, ") e ORDER BY finished_at DESC NULLS LAST LIMIT 1");
    return run_id(c, &q, id, "reading the failed job", out, err, errlen);
}

int sl_reads_listen_subject(PGconn *c, const sl_pipeline *p, char *err,
                            size_t errlen) {
    assert(c && p && p->has_subject && p->subject.channel && err);
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "LISTEN ");
    sl_buf_ident(&q, p->subject.channel);
    if (sl_buf_failed(&q)) {
        sl_buf_free(&q);
        snprintf(err, errlen, "listen: out of memory");
        return -SL_ENOMEM;
    }
    PGresult *r = PQexec(c, sl_buf_str(&q));
    sl_buf_free(&q);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char m[2048];
        snprintf(err, errlen, "listen: %s", sl_db_error(c, r, m, sizeof m));
        rc = -SL_EDB;
    }
    PQclear(r);
    return rc;
}

/* ---- listings and statistics --------------------------------------------- */

/* Whether the listing with filter f reads stage s. */
static int list_covers(const sl_stage *s, const sl_jobs_filter *f) {
    return (!f->stage || f->stage == s) &&
           (!f->history || s->retention_history);
}

size_t sl_reads_jobs_queues(const sl_model *m, const sl_jobs_filter *f) {
    assert(m && f);
    size_t n = 0;
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++)
            n += list_covers(&m->pipelines[i].stages[k], f);
    return n;
}

/* Appends " WHERE status = '<st>' AND ($1::text IS NULL OR $1 = '<st>')":
 * one status's part of a queue's branch. A listing reads each status
 * separately, newest first, through the listing index on (status,
 * created_at, id) (schema_index.c), so a page costs `limit` index entries
 * per status and queue however many finished jobs the queue keeps; the
 * statuses a filter excludes are pruned when the statement is planned
 * with its values. The columns shown are computed outside that inner
 * SELECT *, for the rows it keeps only. */
static void status_part(sl_buf *q, const char *st) {
    sl_buf_puts(q, " WHERE status = ");
    sl_buf_literal(q, st);
    sl_buf_puts(q, "::job_status AND ($1::text IS NULL OR $1 = ");
    sl_buf_literal(q, st);
    sl_buf_puts(q, ")");
}

/* One queue's branch of the listing: its newest jobs that pass the
 * filter ($1 status, $2 minimum age in ms, $3 limit), as SL_LIST_*
 * columns plus created_at and uid for the outer ORDER BY. */
static void list_branch(sl_buf *q, const sl_stage *s, int history) {
    char hist[64];
    sl_stage_history_table(s, hist);
    for (int k = 0; sl_job_status_values[k]; k++) {
        if (k) sl_buf_puts(q, " UNION ALL ");
        sl_buf_puts(q, "(SELECT ");
        sl_buf_literal(q, s->queue);
        sl_buf_puts(q, "::text AS queue, id::text AS id, ");
        sl_jobs_subject_expr(q, s, NULL);
        sl_buf_printf(q,
                      " AS subject, status::text AS status,"
                      " attempts::text || '/%d' AS attempts,"
                      " priority, EXTRACT(EPOCH FROM now() -"
                      " created_at)::float8 AS age, CASE WHEN status"
                      " IN ('pending','retry') AND run_at > now()"
                      " THEN EXTRACT(EPOCH FROM run_at -"
                      " now())::float8 END AS runs_in, error_class,"
                      " last_error, attempts AS attempts_n, %d AS"
                      " max_attempts, "
                      SL_READS_RFC3339("created_at") " AS created_at_utc, "
                      SL_READS_RFC3339("run_at") " AS run_at_utc,"
                      " created_at, id AS uid FROM (SELECT * FROM ",
                      s->retry.max_attempts, s->retry.max_attempts);
        sl_buf_ident(q, history ? hist : s->queue);
        status_part(q, sl_job_status_values[k]);
        sl_buf_puts(q, " AND ($2::bigint IS NULL OR created_at < now() -"
                       " $2::bigint * interval '1 millisecond')"
                       " ORDER BY created_at DESC, id DESC LIMIT $3) q)");
    }
}

int sl_reads_jobs(PGconn *c, const sl_model *m, const sl_jobs_filter *f,
                  PGresult **out, char *err, size_t errlen) {
    assert(m && f && f->limit >= 1 && sl_reads_jobs_queues(m, f) > 0);
    sl_buf q;
    sl_buf_init(&q);
    int branches = 0;
    sl_buf_puts(&q, "SELECT queue, id, subject, status, attempts, priority,"
                    " age, runs_in, error_class, last_error, attempts_n,"
                    " max_attempts, created_at_utc, run_at_utc FROM (");
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            const sl_stage *s = &m->pipelines[i].stages[k];
            if (!list_covers(s, f)) continue;
            if (branches++) sl_buf_puts(&q, " UNION ALL ");
            list_branch(&q, s, f->history);
        }
    sl_buf_puts(&q, ") j ORDER BY created_at DESC, uid DESC LIMIT $3");
    char older[24], limit[24];
    snprintf(older, sizeof older, "%lld", (long long)f->older_ms);
    snprintf(limit, sizeof limit, "%ld", f->limit);
    const char *vals[3] = {f->status, f->older_ms >= 0 ? older : NULL, limit};
    return run_ex(c, &q, 3, vals, 1, "list jobs", out, err, errlen);
}

int sl_reads_stats(PGconn *c, PGresult **out, char *err, size_t errlen) {
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT queue, pending, in_progress, retry, done, error,"
                    " cancelled, EXTRACT(EPOCH FROM oldest_pending_age)::float8"
                    " AS oldest_pending_age, EXTRACT(EPOCH FROM"
                    " mean_run_time)::float8 AS mean_run_time"
                    " FROM sluice_statistics ORDER BY queue");
    return run(c, &q, 0, NULL, "read sluice_statistics", out, err, errlen);
}

/* ---- the web API's pages ------------------------------------------------ */

static int page_covers(const sl_stage *s, const sl_jobs_query *q) {
    char key[SL_KEY_MAX];
    const char *why;
    const sl_pipeline *p = s->pipeline;
    return (!q->pipeline || strcmp(q->pipeline, p->name) == 0) &&
           (!q->stage || strcmp(q->stage, s->name) == 0) &&
           (!q->subject ||
            (p->has_subject &&
             sl_key_canon(p->subject.key_type, q->subject, key, &why) == 0));
}

size_t sl_reads_page_queues(const sl_model *m, const sl_jobs_query *q) {
    assert(m && q);
    size_t n = 0;
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++)
            n += page_covers(&m->pipelines[i].stages[k], q);
    return n;
}

/* One queue's branch of a page: $1 status, $2 error class, $3 subject,
 * $4 text, $5/$6 the cursor, $7 the limit; one part per status, as in
 * list_branch. */
static void page_branch(sl_buf *q, const sl_stage *s) {
    for (int k = 0; sl_job_status_values[k]; k++) {
        if (k) sl_buf_puts(q, " UNION ALL ");
        sl_buf_puts(q, "(SELECT ");
        sl_buf_literal(q, s->queue);
        sl_buf_puts(q, "::text AS queue, id::text AS id, ");
        sl_jobs_subject_expr(q, s, NULL);
        sl_buf_printf(q,
                      " AS subject, status::text AS status, attempts,"
                      " %d AS max_attempts, priority, error_class,"
                      " last_error, "
                      SL_READS_RFC3339("created_at") " AS c, "
                      SL_READS_RFC3339("run_at") " AS r, "
                      SL_READS_RFC3339("finished_at") " AS f, "
                      "to_char(created_at AT TIME ZONE 'UTC',"
                      " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS cursor,"
                      " created_at, id AS uid FROM (SELECT * FROM ",
                      s->retry.max_attempts);
        sl_buf_ident(q, s->queue);
        status_part(q, sl_job_status_values[k]);
        sl_buf_puts(q, " AND ($2::text IS NULL OR error_class = $2) AND ");
        if (s->pipeline->has_subject) {
            /* $3 is text in every branch; page_covers left out the
             * queues whose key type cannot hold it. */
            sl_buf_puts(q, "($3::text IS NULL OR ");
            sl_buf_ident(q, s->pipeline->subject.fk);
            sl_buf_printf(q, " = $3::text::%s)",
                          sl_key_type_name(s->pipeline->subject.key_type));
        } else {
            sl_buf_puts(q, "$3::text IS NULL");
        }
        sl_buf_puts(q, " AND ($4::text IS NULL OR strpos(last_error, $4) >"
                       " 0) AND ($5::timestamptz IS NULL OR (created_at, id)"
                       " < ($5::timestamptz, $6::uuid))"
                       " ORDER BY created_at DESC, id DESC LIMIT $7) q)");
    }
}

int sl_reads_jobs_page(PGconn *c, const sl_model *m, const sl_jobs_query *f,
                       PGresult **out, char *err, size_t errlen) {
    assert(m && f && f->limit >= 1 && sl_reads_page_queues(m, f) > 0);
    assert(!f->after_ts == !f->after_id);
    sl_buf q;
    sl_buf_init(&q);
    int branches = 0;
    sl_buf_puts(&q, "SELECT queue, id, subject, status, attempts,"
                    " max_attempts, priority, error_class, last_error, c, r,"
                    " f, cursor FROM (");
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            const sl_stage *s = &m->pipelines[i].stages[k];
            if (!page_covers(s, f)) continue;
            if (branches++) sl_buf_puts(&q, " UNION ALL ");
            page_branch(&q, s);
        }
    sl_buf_puts(&q, ") j ORDER BY created_at DESC, uid DESC LIMIT $7");
    char limit[24];
    snprintf(limit, sizeof limit, "%ld", f->limit);
    const char *vals[7] = {f->status,   f->error_class, f->subject, f->text,
                           f->after_ts, f->after_id,    limit};
    /* A cursor or status the server cannot parse is the caller's mistake,
     * not a database failure. */
    return run_ex(c, &q, 7, vals, 1, "list jobs", out, err, errlen);
}

int sl_reads_job_inputs(PGconn *c, const sl_stage *s, const char *id,
                        PGresult **out, char *err, size_t errlen) {
    assert(s && id);
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT jsonb_build_object(");
    for (size_t k = 0; k < s->ncolumns; k++) {
        if (k) sl_buf_puts(&q, ", ");
        sl_buf_literal(&q, s->columns[k].name);
        sl_buf_puts(&q, "::text, ");
        sl_buf_ident(&q, s->columns[k].name);
    }
    sl_buf_puts(&q, ")::text FROM ");
    sl_buf_ident(&q, s->queue);
    sl_buf_puts(&q, " WHERE id = $1::uuid");
    return run_id(c, &q, id, s->queue, out, err, errlen);
}

int sl_reads_max_connections(PGconn *c, long *n, char *err, size_t errlen) {
    assert(c && n);
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT current_setting('max_connections')::int -"
                    " current_setting('superuser_reserved_connections')::int"
                    " - COALESCE(current_setting('reserved_connections',"
                    " true)::int, 0)");
    PGresult *r = NULL;
    int rc = run(c, &q, 0, NULL, "read max_connections", &r, err, errlen);
    if (rc == 0) *n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

int sl_reads_role(PGconn *c, char *role, size_t rolelen, int *privileged,
                  const char **what, char *err, size_t errlen) {
    assert(c && role && privileged && what);
    PGresult *r = PQexec(c, "SELECT current_user, rolsuper, rolbypassrls "
                            "FROM pg_roles WHERE rolname = current_user");
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
        PQnfields(r) != 3) {
        char m[512];
        snprintf(err, errlen, "cannot read the connection's role: %s",
                 sl_db_error(c, r, m, sizeof m));
        rc = PQstatus(c) == CONNECTION_OK ? -SL_EDB : -SL_ECONN;
    } else {
        snprintf(role, rolelen, "%s", PQgetvalue(r, 0, 0));
        int super = PQgetvalue(r, 0, 1)[0] == 't';
        int bypass = PQgetvalue(r, 0, 2)[0] == 't';
        *privileged = super || bypass;
        *what = super ? "superuser" : bypass ? "role with BYPASSRLS" : "";
    }
    PQclear(r);
    return rc;
}
