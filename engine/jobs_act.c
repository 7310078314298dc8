/* jobs_act.c - finding a job across the queues, cancelling and retrying
 * it (jobs.h). Operator calls, not the worker's hot path: statements are
 * built per call from the model, values bound. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "error.h"
#include "jobs.h"

static void db_err(char *err, size_t n, const char *what, PGconn *c,
                   const PGresult *r) {
    char m[2048];
    snprintf(err, n, "%s: %s", what, sl_db_error(c, r, m, sizeof m));
}

/* ---- finding, cancelling, retrying ---------------------------------------- */

/* The stage with flat index k across the model's pipelines. */
static const sl_stage *stage_at(const sl_model *m, long k) {
    for (size_t i = 0; i < m->npipelines; i++) {
        if (k < (long)m->pipelines[i].nstages) return &m->pipelines[i].stages[k];
        k -= (long)m->pipelines[i].nstages;
    }
    return NULL;
}

static void copy_field(char *dst, size_t n, const PGresult *r, int row,
                       int col) {
    snprintf(dst, n, "%s", PQgetisnull(r, row, col) ? ""
                                                     : PQgetvalue(r, row, col));
}

void sl_jobs_subject_expr(sl_buf *b, const sl_stage *s, const char *alias) {
    assert(b && s && s->pipeline);
    if (s->pipeline->has_subject) {
        if (alias) sl_buf_printf(b, "%s.", alias);
        sl_buf_ident(b, s->pipeline->subject.fk);
        sl_buf_puts(b, "::text");
    } else {
        sl_buf_puts(b, "NULL::text");
    }
}

int sl_jobs_find(PGconn *c, const sl_model *m, const char *id,
                 sl_job_ref *ref, char *err, size_t errlen) {
    assert(c && m && id && ref && err && errlen > 0);
    memset(ref, 0, sizeof *ref);
    if (!sl_jobs_is_uuid(id)) {
        snprintf(err, errlen, "job id '%s' is not a UUID", id);
        return -SL_EINVAL;
    }
    sl_buf q;
    sl_buf_init(&q);
    long k = 0;
    for (size_t i = 0; i < m->npipelines; i++) {
        for (size_t j = 0; j < m->pipelines[i].nstages; j++, k++) {
            const sl_stage *s = &m->pipelines[i].stages[j];
            if (k) sl_buf_puts(&q, " UNION ALL ");
            sl_buf_printf(&q, "SELECT %ld, q.status::text, ", k);
            sl_jobs_subject_expr(&q, s, "q");
            sl_buf_puts(&q, ", q.locked_by FROM ");
            sl_buf_ident(&q, s->queue);
            sl_buf_puts(&q, " q WHERE q.id = $1::uuid");
        }
    }
    if (k == 0) {
        sl_buf_free(&q);
        return 0;
    }
    if (sl_buf_failed(&q)) {
        sl_buf_free(&q);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    const char *vals[1] = {id};
    PGresult *r = PQexecParams(c, sl_buf_str(&q), 1, NULL, vals, NULL, NULL, 0);
    sl_buf_free(&q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        db_err(err, errlen, "find job", c, r);
        PQclear(r);
        return -SL_EDB;
    }
    if (PQntuples(r) > 0) {
        ref->stage = stage_at(m, atol(PQgetvalue(r, 0, 0)));
        copy_field(ref->status, sizeof ref->status, r, 0, 1);
        copy_field(ref->subject, sizeof ref->subject, r, 0, 2);
        copy_field(ref->locked_by, sizeof ref->locked_by, r, 0, 3);
    }
    PQclear(r);
    return 0;
}

/* Applies `set` to job id in its queue when its current status is one of
 * `from` (an SQL list of literals), in one statement that locks the row and
 * reports the status it had. */
static int act(PGconn *c, const sl_model *m, const char *id, const char *set,
               const char *from, sl_job_ref *ref, char *err, size_t errlen) {
    int rc = sl_jobs_find(c, m, id, ref, err, errlen);
    if (rc != 0 || !ref->stage) return rc;
    const sl_stage *s = ref->stage;
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "WITH o AS (SELECT q.id, q.status::text AS st, "
                    "q.locked_by, ");
    sl_jobs_subject_expr(&q, s, "q");
    sl_buf_puts(&q, " AS subj FROM ");
    sl_buf_ident(&q, s->queue);
    sl_buf_puts(&q, " q WHERE q.id = $1::uuid FOR UPDATE), u AS (UPDATE ");
    sl_buf_ident(&q, s->queue);
    sl_buf_printf(&q, " q SET %s FROM o WHERE q.id = o.id AND o.st IN (%s)"
                      " RETURNING q.id) SELECT o.st, o.subj, o.locked_by,"
                      " (SELECT count(*) FROM u) FROM o",
                  set, from);
    if (sl_buf_failed(&q)) {
        sl_buf_free(&q);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    const char *vals[1] = {id};
    PGresult *r = PQexecParams(c, sl_buf_str(&q), 1, NULL, vals, NULL, NULL, 0);
    sl_buf_free(&q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *st = sl_db_sqlstate(r);
        int clash = st && strcmp(st, "23505") == 0;
        char what[160];
        snprintf(what, sizeof what, "update job in %s", s->queue);
        if (clash) /* retry: the stage's unique-job index (docs/dsl.md) */
            snprintf(err, errlen, "job %s was not retried: another unfinished"
                                  " job of %s holds its unique key", id,
                     s->queue);
        else
            db_err(err, errlen, what, c, r);
        PQclear(r);
        return clash ? -SL_EREFUSED : -SL_EDB;
    }
    if (PQntuples(r) == 0) { /* deleted since the look-up */
        ref->stage = NULL;
    } else {
        copy_field(ref->status, sizeof ref->status, r, 0, 0);
        copy_field(ref->subject, sizeof ref->subject, r, 0, 1);
        copy_field(ref->locked_by, sizeof ref->locked_by, r, 0, 2);
        ref->changed = atoi(PQgetvalue(r, 0, 3)) > 0;
    }
    PQclear(r);
    return 0;
}

#define CANCEL_SET SL_JOBS_CANCEL_SET
#define RETRY_SET SL_JOBS_RETRY_SET

int sl_jobs_cancel(PGconn *c, const sl_model *m, const char *id,
                   sl_job_ref *ref, char *err, size_t errlen) {
    return act(c, m, id, CANCEL_SET, "'pending', 'retry', 'in_progress'", ref,
               err, errlen);
}

int sl_jobs_retry(PGconn *c, const sl_model *m, const char *id,
                  sl_job_ref *ref, char *err, size_t errlen) {
    return act(c, m, id, RETRY_SET, "'error', 'cancelled'", ref, err, errlen);
}

int sl_jobs_retry_failed(PGconn *c, const sl_stage *s, long *n, char *err,
                         size_t errlen) {
    assert(c && s && n && err && errlen > 0);
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "UPDATE ");
    sl_buf_ident(&q, s->queue);
    sl_buf_puts(&q, " SET " RETRY_SET " WHERE status = 'error'");
    *n = 0;
    if (sl_buf_failed(&q)) {
        sl_buf_free(&q);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    PGresult *r = PQexec(c, sl_buf_str(&q));
    sl_buf_free(&q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char what[160];
        snprintf(what, sizeof what, "retry failed jobs of %s", s->queue);
        db_err(err, errlen, what, c, r);
        PQclear(r);
        return -SL_EDB;
    }
    *n = atol(PQcmdTuples(r));
    PQclear(r);
    return 0;
}
