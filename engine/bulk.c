/* bulk.c - actions on the jobs that match a filter, in batches (bulk.h). */
#include "bulk.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "error.h"
#include "jobs.h"

static const char *const STATUSES[] = {"pending", "in_progress", "retry",
                                       "done",    "error",       "cancelled"};

int sl_bulk_valid_status(const char *s) {
    for (size_t i = 0; s && i < sizeof STATUSES / sizeof STATUSES[0]; i++)
        if (strcmp(s, STATUSES[i]) == 0) return 1;
    return 0;
}

static int covers(const sl_stage *s, const sl_bulk_filter *f) {
    return (!f->pipeline || strcmp(f->pipeline, s->pipeline->name) == 0) &&
           (!f->stage || strcmp(f->stage, s->name) == 0);
}

size_t sl_bulk_stages(const sl_model *m, const sl_bulk_filter *f) {
    assert(m && f);
    size_t n = 0;
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++)
            n += covers(&m->pipelines[i].stages[k], f);
    return n;
}

/* One batch of op on stage s's queue: $1 status, $2 error class, $3
 * text. */
static void batch_sql(sl_buf *q, const sl_stage *s, sl_bulk_op op) {
    static const char *const from[] = {
        [SL_BULK_RETRY] = "'error', 'cancelled'",
        [SL_BULK_CANCEL] = "'pending', 'retry', 'in_progress'",
        [SL_BULK_DELETE] = "'pending', 'retry', 'done', 'error', 'cancelled'"};
    sl_buf_puts(q, "WITH t AS (SELECT id FROM ");
    sl_buf_ident(q, s->queue);
    sl_buf_printf(q, " WHERE status::text IN (%s)"
                     " AND ($1::text IS NULL OR status::text = $1)"
                     " AND ($2::text IS NULL OR error_class = $2)"
                     " AND ($3::text IS NULL OR strpos(last_error, $3) > 0)"
                     " LIMIT %d FOR UPDATE) ",
                  from[op], SL_BULK_BATCH);
    if (op == SL_BULK_DELETE) {
        sl_buf_puts(q, "DELETE FROM ");
        sl_buf_ident(q, s->queue);
        sl_buf_puts(q, " q USING t WHERE q.id = t.id");
    } else {
        sl_buf_puts(q, "UPDATE ");
        sl_buf_ident(q, s->queue);
        sl_buf_printf(q, " SET %s FROM t WHERE ",
                      op == SL_BULK_RETRY ? SL_JOBS_RETRY_SET
                                          : SL_JOBS_CANCEL_SET);
        sl_buf_ident(q, s->queue);
        sl_buf_puts(q, ".id = t.id");
    }
}

/* Applies op to stage s until a batch comes back short. */
static int apply_stage(PGconn *c, const sl_stage *s, sl_bulk_op op,
                       const sl_bulk_filter *f,
                       void (*progress)(long, void *), void *arg,
                       long *changed, char *err, size_t errlen) {
    sl_buf q;
    sl_buf_init(&q);
    batch_sql(&q, s, op);
    if (sl_buf_failed(&q)) {
        sl_buf_free(&q);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    const char *vals[3] = {f->status, f->error_class, f->text};
    int rc = 0;
    for (;;) {
        PGresult *r =
            PQexecParams(c, sl_buf_str(&q), 3, NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char m[1024];
            const char *st = sl_db_sqlstate(r);
            snprintf(err, errlen, "%s: %s", s->queue,
                     sl_db_error(c, r, m, sizeof m));
            rc = PQstatus(c) != CONNECTION_OK       ? -SL_ECONN
                 : st && strcmp(st, "42P01") == 0 ? -SL_ENOTFOUND
                 : st && strcmp(st, "23505") == 0 ? -SL_EREFUSED
                                                  : -SL_EDB;
            if (rc == -SL_EREFUSED) /* retry: the unique-job index */
                snprintf(err, errlen, "%s: %ld jobs retried, then stopped: a"
                                      " job to retry shares its unique key"
                                      " with an unfinished job (or another"
                                      " in the same batch)",
                         s->queue, *changed);
            PQclear(r);
            break;
        }
        long n = atol(PQcmdTuples(r));
        PQclear(r);
        *changed += n;
        if (progress && n > 0) progress(*changed, arg);
        if (n < SL_BULK_BATCH) break;
    }
    sl_buf_free(&q);
    return rc;
}

int sl_bulk_apply(PGconn *c, const sl_model *m, sl_bulk_op op,
                  const sl_bulk_filter *f,
                  void (*progress)(long changed, void *arg), void *arg,
                  long *changed, char *err, size_t errlen) {
    assert(c && m && f && changed && err && errlen > 0);
    assert(!f->status || sl_bulk_valid_status(f->status));
    *changed = 0;
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            const sl_stage *s = &m->pipelines[i].stages[k];
            if (!covers(s, f)) continue;
            int rc = apply_stage(c, s, op, f, progress, arg, changed, err,
                                 errlen);
            if (rc != 0) return rc;
        }
    return 0;
}

int sl_bulk_delete_id(PGconn *c, const sl_model *m, const char *id,
                      sl_job_ref *ref, char *err, size_t errlen) {
    assert(c && m && id && ref);
    int rc = sl_jobs_find(c, m, id, ref, err, errlen);
    if (rc != 0 || !ref->stage) return rc;
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "WITH o AS (SELECT status::text AS st FROM ");
    sl_buf_ident(&q, ref->stage->queue);
    sl_buf_puts(&q, " WHERE id = $1::uuid FOR UPDATE), d AS (DELETE FROM ");
    sl_buf_ident(&q, ref->stage->queue);
    sl_buf_puts(&q, " q USING o WHERE q.id = $1::uuid AND o.st <>"
                    " 'in_progress' RETURNING 1)"
                    " SELECT o.st, (SELECT count(*) FROM d) FROM o");
    if (sl_buf_failed(&q)) {
        sl_buf_free(&q);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    const char *vals[1] = {id};
    PGresult *r = PQexecParams(c, sl_buf_str(&q), 1, NULL, vals, NULL, NULL, 0);
    sl_buf_free(&q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m2[1024];
        snprintf(err, errlen, "delete job in %s: %s", ref->stage->queue,
                 sl_db_error(c, r, m2, sizeof m2));
        rc = PQstatus(c) != CONNECTION_OK ? -SL_ECONN : -SL_EDB;
    } else if (PQntuples(r) == 0) { /* gone since the look-up */
        ref->stage = NULL;
    } else {
        snprintf(ref->status, sizeof ref->status, "%s", PQgetvalue(r, 0, 0));
        ref->changed = atoi(PQgetvalue(r, 0, 1)) > 0;
    }
    PQclear(r);
    return rc;
}
