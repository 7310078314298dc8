/* queue.c - the queue operations of queue.h: prepares the statements of
 * queue_sql.c (all queue SQL) and runs them.
 *
 * Each stage gets a family of statements, built from the model and
 * prepared once per connection under names derived from a hash of the
 * queue name ("sl_claim_1a2b3c4d").
 */
#include "queue.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "db.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "queue_priv.h"
#include "text.h"

static void set_err(char *err, size_t n, const char *what, PGconn *c,
                    const PGresult *r) {
    char m[2048];
    snprintf(err, n, "%s: %s", what, sl_db_error(c, r, m, sizeof m));
}

int sl_queue_prepare_stage(PGconn *c, const sl_stage *s, char *err,
                           size_t errlen) {
    for (int op = 0; op < OP__COUNT; op++) {
        sl_buf b;
        char name[64];
        sl_buf_init(&b);
        sl_queue__builders[op](&b, s);
        if (sl_buf_failed(&b)) {
            sl_buf_free(&b);
            snprintf(err, errlen, "out of memory");
            return -SL_ENOMEM;
        }
        sl_queue__stmt_name(s, op, name, sizeof name);
        PGresult *r = PQprepare(c, name, sl_buf_str(&b), 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char what[128];
            snprintf(what, sizeof what, "prepare %s for %s",
                     sl_queue__op_names[op], s->queue);
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
    return sl_queue_prepare_stages(c, m, NULL, 0, err, errlen);
}

int sl_queue_prepare_stages(PGconn *c, const sl_model *m,
                            const char *const *only, size_t nonly, char *err,
                            size_t errlen) {
    for (size_t pi = 0; pi < m->npipelines; pi++) {
        const sl_pipeline *p = &m->pipelines[pi];
        for (size_t si = 0; si < p->nstages; si++) {
            const sl_stage *s = &p->stages[si];
            if (!sl_stage_selected(s, only, nonly)) continue;
            int rc = sl_queue_prepare_stage(c, s, err, errlen);
            if (rc != 0) return rc;
        }
    }
    return 0;
}

/* ---- execution --------------------------------------------------------------
 */

/* Connection trouble, as opposed to an error in the statement: libpq's own
 * errors carry no SQLSTATE; the server's say 08xxx (connection exception)
 * or 57P0x (admin shutdown, crash shutdown, cannot connect now). */
static int conn_error(PGconn *c, const PGresult *r) {
    return sl_db_errclass(c, r, SL_EC_INTERNAL) == SL_EC_CONNECTION;
}

/* The values did not fit the statement: a data exception (class 22, such
 * as an output that is not a valid integer) or an integrity violation
 * (class 23), or a value past a limit (class 54). Anything else (a statement
 * timeout, a deadlock, lack of resources) says nothing about the job and is
 * worth repeating. */
static int data_error(const PGresult *r) {
    return sl_db_data_error(r);
}

/* Runs prepared statement `op` of stage s. Returns 0 with *out set (the
 * caller clears it), -SL_ECONN when the connection is the problem,
 * -SL_EINVAL when the bound values do not fit, or -SL_EDB for another
 * (usually passing) error; err says which. */
static int exec(PGconn *c, const sl_stage *s, int op, int n,
                const char *const *vals, ExecStatusType want, PGresult **out,
                char *err, size_t errlen) {
    char name[64];
    sl_queue__stmt_name(s, op, name, sizeof name);
    PGresult *r = PQexecPrepared(c, name, n, vals, NULL, NULL, 0);
    *out = NULL;
    if (PQresultStatus(r) != want) {
        char what[128];
        /* A prepared statement that vanished (26000) is mended like a lost
         * connection: a new one prepares every statement again. */
        const char *state = sl_db_sqlstate(r);
        int gone = state && strcmp(state, "26000") == 0;
        sl_metrics_db_error();
        int rc = conn_error(c, r) || gone ? -SL_ECONN
                 : data_error(r)          ? -SL_EINVAL
                                          : -SL_EDB;
        snprintf(what, sizeof what, "%s on %s", sl_queue__op_names[op], s->queue);
        set_err(err, errlen, what, c, r);
        PQclear(r);
        return rc;
    }
    /* Never trust the shape of a result: a statement of this session
     * replaced by another would make the readers below index columns
     * that do not exist. Columns read: claims 0..2 (3 and more only
     * through PQgetisnull, which is safe out of range), the others 0. */
    int need = op == OP_CLAIM || op == OP_CLAIM_BARE ? 3 : 1;
    if (want == PGRES_TUPLES_OK && PQnfields(r) < need) {
        snprintf(err, errlen,
                 "%s on %s: unexpected result (%d columns); the session's "
                 "statements are replaced by a new connection",
                 sl_queue__op_names[op], s->queue, PQnfields(r));
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

/* Runs a no-result transaction-control command: 0, -SL_ECONN or -SL_EDB. */
static int txn(PGconn *c, const sl_stage *s, const char *cmd, char *err,
               size_t errlen) {
    PGresult *r = PQexec(c, cmd);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char what[128];
        snprintf(what, sizeof what, "%s on %s", cmd, s->queue);
        set_err(err, errlen, what, c, r);
        rc = conn_error(c, r) ? -SL_ECONN : -SL_EDB;
    }
    PQclear(r);
    return rc;
}

/* The claim of a stage with `limit:`: one transaction that first takes
 * the advisory locks of the keys it may claim from (OP_CLAIM_LOCK, never
 * waiting), then claims from those keys only, so that the claim's count
 * of jobs in progress per key already sees every earlier claim of those
 * keys (read committed: the claim's snapshot is taken after the locks).
 * The locks are held for the claim only, never while jobs run. vals[
 * locks_at] receives the locked hashes. Same returns as exec; *out holds
 * the claimed rows only once committed (none when no key was free). */
static int limited_claim(PGconn *c, const sl_stage *s, int op, int n,
                         const char **vals, int locks_at,
                         const char *cursor, PGresult **out, char *err,
                         size_t errlen) {
    PGresult *lock = NULL;
    sl_buf arr;
    sl_buf_init(&arr);
    *out = NULL;
    int rc = txn(c, s, "BEGIN", err, errlen);
    if (rc < 0) goto done;
    const char *lv[3] = {vals[1], vals[locks_at - 1], cursor};
    rc = exec(c, s, OP_CLAIM_LOCK, s->fair_key ? 3 : 2, lv, PGRES_TUPLES_OK,
              &lock, err, errlen);
    if (rc == 0) {
        sl_buf_puts(&arr, "{");
        for (int i = 0; i < PQntuples(lock); i++)
            sl_buf_printf(&arr, "%s%s", i ? "," : "", PQgetvalue(lock, i, 0));
        sl_buf_puts(&arr, "}");
        vals[locks_at] = sl_buf_str(&arr);
        if (sl_buf_failed(&arr)) {
            snprintf(err, errlen, "claim: out of memory");
            rc = -SL_ENOMEM;
        }
    }
    if (rc == 0 && PQntuples(lock) > 0)
        rc = exec(c, s, op, n, vals, PGRES_TUPLES_OK, out, err, errlen);
    if (rc == 0) rc = txn(c, s, "COMMIT", err, errlen);
done:
    PQclear(lock);
    sl_buf_free(&arr);
    vals[locks_at] = NULL;
    if (rc < 0) {
        PQclear(*out);
        *out = NULL;
        if (PQtransactionStatus(c) != PQTRANS_IDLE) {
            char ignored[512];
            txn(c, s, "ROLLBACK", ignored, sizeof ignored);
        }
    }
    return rc;
}

/* ---- the fair cursor ------------------------------------------------------
 *
 * Each process remembers, per fair stage, the key its last claim served
 * last; the next claim starts the rotation after it (docs/dsl.md). Kept
 * here, not in the database, so that claims share no row to update. */

#define FAIR_CURSORS 64

static pthread_mutex_t fair_mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
    const sl_stage *stage;
    char *key; /* NULL: start from the first key */
} fair_cursors[FAIR_CURSORS];

/* Forgets stage s's cursor (the next claim starts from the first key):
 * after a claim the server refused, such as a cursor that no longer
 * parses as the key's type. */
static void fair_cursor_reset(const sl_stage *s) {
    pthread_mutex_lock(&fair_mu);
    for (int i = 0; i < FAIR_CURSORS && fair_cursors[i].stage; i++)
        if (fair_cursors[i].stage == s) {
            free(fair_cursors[i].key);
            fair_cursors[i].key = NULL;
        }
    pthread_mutex_unlock(&fair_mu);
}
/* A copy of stage s's cursor (caller frees), or NULL. */
static char *fair_cursor_get(const sl_stage *s) {
    char *k = NULL;
    pthread_mutex_lock(&fair_mu);
    for (int i = 0; i < FAIR_CURSORS && fair_cursors[i].stage; i++)
        if (fair_cursors[i].stage == s) {
            k = fair_cursors[i].key ? strdup(fair_cursors[i].key) : NULL;
            break;
        }
    pthread_mutex_unlock(&fair_mu);
    return k;
}

/* Sets stage s's cursor from a claim's rows: the key of the row furthest
 * along the rotation (columns 6 kt and 7 pos). The NULL group comes last
 * in the rotation, so after it the cursor starts over. */
static void fair_cursor_set(const sl_stage *s, PGresult *r) {
    int best = -1;
    long long bestpos = -1;
    if (PQnfields(r) < 8) return;
    for (int i = 0; i < PQntuples(r); i++) {
        long long pos = strtoll(PQgetvalue(r, i, 7), NULL, 10);
        if (pos > bestpos) {
            bestpos = pos;
            best = i;
        }
    }
    if (best < 0) return;
    char *k = PQgetisnull(r, best, 6) ? NULL : strdup(PQgetvalue(r, best, 6));
    pthread_mutex_lock(&fair_mu);
    for (int i = 0; i < FAIR_CURSORS; i++) {
        if (fair_cursors[i].stage && fair_cursors[i].stage != s) continue;
        fair_cursors[i].stage = s;
        free(fair_cursors[i].key);
        fair_cursors[i].key = k;
        k = NULL;
        break;
    }
    pthread_mutex_unlock(&fair_mu);
    free(k); /* more fair stages than slots: this one starts over */
}

static int claim(PGconn *c, const sl_stage *s, int op, const char *owner,
                 int max, sl_qjob *jobs, int *n, char *err, size_t errlen) {
    const char *vals[12];
    char maxs[16], lease[24], prog[12];
    snprintf(maxs, sizeof maxs, "%d", max);
    snprintf(lease, sizeof lease, "%lld", (long long)s->lease_ms);
    vals[0] = owner;
    vals[1] = maxs;
    vals[2] = lease;
    int nv = 3;
    if (sl_queue__claim_touches_subject(s))
        nv += sl_queue__claim_subject_values(s, vals + 3, prog);
    char limit[16];
    sl_policy_params pp;
    sl_queue__claim_policy_params(s, &pp);
    if (s->limit_key) {
        assert(nv + 1 == pp.max && pp.locks == pp.max + 1);
        snprintf(limit, sizeof limit, "%d", s->limit_max);
        vals[nv++] = limit;
        vals[nv++] = NULL; /* the locked keys, set by limited_claim */
    }
    char *cursor = NULL;
    if (s->fair_key) {
        assert(nv + 1 == pp.cursor);
        cursor = fair_cursor_get(s);
        vals[nv++] = cursor;
    }
    *n = 0;
    PGresult *r;
    int rc = s->limit_key ? limited_claim(c, s, op, nv, vals, pp.locks - 1,
                                          cursor, &r, err, errlen)
                          : exec(c, s, op, nv, vals, PGRES_TUPLES_OK, &r,
                                 err, errlen);
    free(cursor);
    if (rc == -SL_EINVAL && s->fair_key) fair_cursor_reset(s);
    if (rc < 0) return rc;
    if (!r) return 0; /* a limited claim found no free key */
    if (s->fair_key) fair_cursor_set(s, r);
    int rows = PQntuples(r);
    for (int i = 0; i < rows && i < max; i++) {
        sl_qjob *j = &jobs[i];
        memset(j, 0, sizeof *j);
        snprintf(j->id, sizeof j->id, "%s", PQgetvalue(r, i, 0));
        if (!PQgetisnull(r, i, 1))
            snprintf(j->subject, sizeof j->subject, "%s", PQgetvalue(r, i, 1));
        j->attempts = atoi(PQgetvalue(r, i, 2));
        if (PQnfields(r) > 5 && !PQgetisnull(r, i, 5))
            j->wait_ms = strtoll(PQgetvalue(r, i, 5), NULL, 10);
        json_error_t je;
        if (!PQgetisnull(r, i, 3)) {
            j->checkpoint =
                json_loads(PQgetvalue(r, i, 3), JSON_DECODE_ANY, &je);
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

int sl_queue_requester(PGconn *c, const sl_stage *s, const char *id,
                       char out[40], char *err, size_t errlen) {
    const char *vals[1] = {id};
    PGresult *r;
    out[0] = '\0';
    int rc =
        exec(c, s, OP_REQUESTER, 1, vals, PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    if (PQntuples(r) == 0) {
        snprintf(err, errlen, "job %s of %s no longer exists", id, s->queue);
        rc = -SL_ELEASE;
    } else if (!PQgetisnull(r, 0, 0)) {
        snprintf(out, 40, "%s", PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return rc;
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
        json_t *o = done[i].outputs ? json_incref((json_t *)done[i].outputs)
                                    : json_object();
        json_array_append_new(arr, json_pack("{s:s, s:i, s:o}", "id",
                                             done[i].job->id, "a",
                                             done[i].job->attempts, "o", o));
        done[i].completed = 0;
    }
    /* No secret, NUL or invalid text reaches a table, whatever a handler
     * returns. */
    char *payload = sl_text_json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (!payload) {
        snprintf(err, errlen, "complete: cannot encode outputs");
        return -SL_ENOMEM;
    }
    const char *vals[8];
    char prog[12];
    vals[0] = owner;
    vals[1] = payload;
    int nv = 2;
    if (sl_queue__has_mapping(s, &s->status.on_done))
        nv += sl_queue__mapping_values(&s->pipeline->subject,
                                       &s->status.on_done, vals + 2, prog);
    PGresult *r;
    int rc =
        exec(c, s, OP_COMPLETE, nv, vals, PGRES_TUPLES_OK, &r, err, errlen);
    free(payload);
    if (rc < 0) return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *id = PQgetvalue(r, i, 0);
        for (int k = 0; k < n; k++)
            if (strcmp(done[k].job->id, id) == 0) {
                done[k].completed = 1;
                done[k].subject_ms =
                    PQnfields(r) > 1 ? strtoll(PQgetvalue(r, i, 1), NULL, 10)
                                     : 0;
            }
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
    if (sl_queue__has_mapping(s, &s->status.on_error))
        nv += sl_queue__mapping_values(&s->pipeline->subject,
                                       &s->status.on_error, vals + 7, prog);
    char max[16];
    snprintf(max, sizeof max, "%d", s->retry.max_attempts);
    if (s->pipeline->has_subject && s->pipeline->subject.detail_column)
        vals[nv++] = max;
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
    char *cp = sl_text_json_dumps(checkpoint, JSON_COMPACT | JSON_ENCODE_ANY);
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
                      const sl_qjob *j, int pct, const char *detail, char *err,
                      size_t errlen) {
    char att[16], jp[12], sp[12];
    if (pct < 0) pct = 0;
    if (pct > 100) pct = 100;
    snprintf(att, sizeof att, "%d", j->attempts);
    snprintf(jp, sizeof jp, "%d", pct);
    const sl_status_map *m = &s->status;
    int mapped =
        m->progress_from >= 0
            ? m->progress_from + (m->progress_to - m->progress_from) * pct / 100
            : 0;
    snprintf(sp, sizeof sp, "%d", mapped);
    const char *st =
        m->on_progress_status ? m->on_progress_status : m->on_start.status;
    char safe[512];
    if (detail) sl_text_copy(safe, sizeof safe, detail, strlen(detail));
    const char *vals[7] = {j->id, owner, att, jp, detail ? safe : NULL, st, sp};
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
    int rc =
        exec(c, s, OP_HEARTBEAT, 3, vals, PGRES_TUPLES_OK, &r, err, errlen);
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
    vals[1] =
        (s->retry.retry_mask & (1u << SL_EC_LEASE_EXPIRED)) ? "true" : "false";
    int nv = 2;
    if (sl_queue__has_mapping(s, &s->status.on_error))
        nv += sl_queue__mapping_values(&s->pipeline->subject,
                                       &s->status.on_error, vals + 2, prog);
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
    int rc =
        exec(c, s, OP_UNFINISHED, 0, NULL, PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    *n = count_result(r);
    return 0;
}

/* One purge statement (OP_PURGE, or OP_PURGE_COUNT for a dry run) for
 * final status st of stage s. */
static int purge_one(PGconn *c, const sl_stage *s, int st, int dry_run,
                     long *n, char *err, size_t errlen) {
    char age[24], batch[16];
    snprintf(age, sizeof age, "%lld", (long long)s->retention_ms[st]);
    snprintf(batch, sizeof batch, "%d", SL_PURGE_BATCH);
    const char *vals[3] = {sl_retain_status[st], age, batch};
    PGresult *r;
    int rc = exec(c, s, dry_run ? OP_PURGE_COUNT : OP_PURGE, 3, vals,
                  PGRES_TUPLES_OK, &r, err, errlen);
    if (rc < 0) return rc;
    *n = count_result(r);
    return 0;
}

int sl_queue_purge(PGconn *c, const sl_stage *s, int dry_run,
                   int64_t budget_ms, long counts[SL_RETAIN__COUNT],
                   int *more, char *err, size_t errlen) {
    assert(c && s && counts && more);
    int64_t deadline = budget_ms > 0 ? sl_now_ms() + budget_ms : INT64_MAX;
    *more = 0;
    for (int st = 0; st < SL_RETAIN__COUNT; st++) {
        counts[st] = 0;
        if (s->retention_ms[st] < 0) continue;
        for (;;) {
            long n = 0;
            int rc = purge_one(c, s, st, dry_run, &n, err, errlen);
            if (rc < 0) return rc;
            counts[st] += n;
            if (dry_run || n < SL_PURGE_BATCH) break;
            if (sl_now_ms() >= deadline) {
                *more = 1;
                return 0;
            }
        }
    }
    return 0;
}

int sl_queue_has_retention(const sl_stage *s) {
    for (int st = 0; st < SL_RETAIN__COUNT; st++)
        if (s->retention_ms[st] >= 0) return 1;
    return 0;
}
