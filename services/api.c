/* api.c - the JSON API (api.h). */
#include "api.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "bulk.h"
#include "error.h"
#include "jobs.h"
#include "log.h"
#include "ops.h"
#include "reads.h"
#include "web.h"
#include "webauth.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX 500
#define IDS_MAX 1000
#define STATS_MINUTES_MAX 10080 /* a week */

/* One database connection per server thread (SL_API_CONNS at most, the
 * server's polling threads), made on that thread's first request and
 * kept: a slow query holds up that thread's connections only, and no
 * connection is shared between threads. */
struct sl_api {
    const sl_model *m;
    sl_dbsource db;
    pthread_mutex_t mu; /* guards owner and n */
    pthread_t owner[SL_API_CONNS];
    PGconn *c[SL_API_CONNS];
    int n;
};

sl_api *sl_api_new(const sl_model *m, sl_dbsource db) {
    sl_api *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->m = m;
    a->db = db;
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

void sl_api_free(sl_api *a) {
    if (!a) return;
    for (int i = 0; i < a->n; i++)
        if (a->c[i]) PQfinish(a->c[i]);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* The calling thread's connection slot, or NULL when more threads than
 * SL_API_CONNS ask (the server never starts more). */
static PGconn **slot(sl_api *a) {
    pthread_t me = pthread_self();
    PGconn **c = NULL;
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < a->n && !c; i++)
        if (pthread_equal(a->owner[i], me)) c = &a->c[i];
    if (!c && a->n < SL_API_CONNS) {
        a->owner[a->n] = me;
        c = &a->c[a->n++];
    }
    pthread_mutex_unlock(&a->mu);
    return c;
}

/* This thread's connection, (re)connected when needed, with a 2 s
 * statement_timeout; NULL with err set. */
static PGconn *conn_db(sl_api *a, char *err, size_t errlen) {
    PGconn **c = slot(a);
    if (!c) {
        snprintf(err, errlen, "no database connection for this server thread");
        return NULL;
    }
    if (*c && PQstatus(*c) == CONNECTION_OK) return *c;
    if (*c) PQfinish(*c);
    *c = sl_db_connect(a->db, err, errlen);
    if (*c) {
        PGresult *r = PQexec(*c, "SET statement_timeout = '2s'");
        PQclear(r);
    }
    return *c;
}

/* ---- JSON from result columns ------------------------------------------ */

static json_t *text_or_null(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col)) return json_null();
    json_t *s = json_string(PQgetvalue(r, row, col));
    return s ? s : json_null();
}

static json_t *int_or_null(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col)) return json_null();
    return json_integer(atoll(PQgetvalue(r, row, col)));
}

static json_t *real_or_null(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col)) return json_null();
    return json_real(atof(PQgetvalue(r, row, col)));
}

/* A database failure as an answer: 404 for a missing table, 400 for a
 * refused value, else 503. */
static enum MHD_Result db_failure(struct MHD_Connection *conn, int rc,
                                  const char *err) {
    if (rc == -SL_ENOTFOUND)
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_migrated", "%s",
                            err);
    if (rc == -SL_EINVAL)
        return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request", "%s",
                            err);
    if (rc == -SL_EREFUSED)
        return sl_web_error(conn, MHD_HTTP_CONFLICT, "conflict", "%s", err);
    return sl_web_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "database", "%s",
                        err);
}

static const char *arg(struct MHD_Connection *conn, const char *name) {
    const char *v =
        MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    return v && v[0] ? v : NULL;
}

/* ---- GET /api/pipelines -------------------------------------------------- */

json_t *sl_api_pipelines_json(const sl_model *m, PGconn *c, int *rc,
                               char *err, size_t errlen) {
    PGresult *r;
    *rc = sl_reads_stats(c, &r, err, errlen);
    if (*rc != 0) return NULL;
    static const char *const names[] = {"pending", "in_progress", "retry",
                                        "done",    "error",       "cancelled"};
    /* Not migrated for pauses yet: nothing is paused. */
    PGresult *paused = NULL;
    char perr[256];
    if (sl_ops_paused(c, &paused, perr, sizeof perr) != 0) paused = NULL;
    json_t *ps = json_array();
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        json_t *stages = json_array();
        for (size_t k = 0; k < p->nstages; k++) {
            const sl_stage *s = &p->stages[k];
            json_t *o = json_pack("{s:s,s:s,s:n,s:n,s:n,s:b}", "name",
                                  s->name, "queue", s->queue, "counts",
                                  "oldest_pending_s", "mean_run_s", "paused",
                                  sl_ops_is_paused(paused, s));
            for (int row = 0; row < PQntuples(r); row++) {
                if (strcmp(PQgetvalue(r, row, SL_STAT_QUEUE), s->queue))
                    continue;
                json_t *counts = json_object();
                for (int j = 0; j < 6; j++)
                    json_object_set_new(
                        counts, names[j],
                        int_or_null(r, row, SL_STAT_PENDING + j));
                json_object_set_new(o, "counts", counts);
                json_object_set_new(
                    o, "oldest_pending_s",
                    real_or_null(r, row, SL_STAT_OLDEST_PENDING));
                json_object_set_new(o, "mean_run_s",
                                    real_or_null(r, row, SL_STAT_MEAN_RUN));
            }
            json_array_append_new(stages, o);
        }
        json_array_append_new(ps, json_pack("{s:s,s:b,s:o}", "name", p->name,
                                            "subject", p->has_subject, "stages",
                                            stages));
    }
    PQclear(r);
    PQclear(paused);
    return json_pack("{s:o}", "pipelines", ps);
}

static enum MHD_Result pipelines(sl_api *a, struct MHD_Connection *conn) {
    char err[1024];
    PGconn *c = conn_db(a, err, sizeof err);
    if (!c) return db_failure(conn, -SL_ECONN, err);
    int rc;
    json_t *v = sl_api_pipelines_json(a->m, c, &rc, err, sizeof err);
    if (!v) return db_failure(conn, rc, err);
    return sl_web_json(conn, MHD_HTTP_OK, v);
}

/* ---- GET /api/jobs
 * ----------------------------------------------------------- */

static json_t *page_row(const sl_model *m, const PGresult *r, int i) {
    const sl_stage *s =
        sl_model_stage_by_queue(m, PQgetvalue(r, i, SL_PAGE_QUEUE));
    json_t *o = json_object();
    json_object_set_new(o, "pipeline",
                        s ? json_string(s->pipeline->name) : json_null());
    json_object_set_new(o, "stage", s ? json_string(s->name) : json_null());
    static const struct {
        const char *name;
        int col, integer;
    } cols[] = {{"queue", SL_PAGE_QUEUE, 0},
                {"id", SL_PAGE_ID, 0},
                {"subject", SL_PAGE_SUBJECT, 0},
                {"status", SL_PAGE_STATUS, 0},
                {"attempts", SL_PAGE_ATTEMPTS, 1},
                {"max_attempts", SL_PAGE_MAX_ATTEMPTS, 1},
                {"priority", SL_PAGE_PRIORITY, 1},
                {"error_class", SL_PAGE_ERROR_CLASS, 0},
                {"last_error", SL_PAGE_LAST_ERROR, 0},
                {"created_at", SL_PAGE_CREATED_AT, 0},
                {"run_at", SL_PAGE_RUN_AT, 0},
                {"finished_at", SL_PAGE_FINISHED_AT, 0}};
    for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++)
        json_object_set_new(o, cols[k].name,
                            cols[k].integer ? int_or_null(r, i, cols[k].col)
                                            : text_or_null(r, i, cols[k].col));
    return o;
}

static enum MHD_Result jobs(sl_api *a, struct MHD_Connection *conn) {
    sl_jobs_query q = {.pipeline = arg(conn, "pipeline"),
                       .stage = arg(conn, "stage"),
                       .status = arg(conn, "status"),
                       .error_class = arg(conn, "error_class"),
                       .subject = arg(conn, "subject"),
                       .text = arg(conn, "q"),
                       .limit = PAGE_DEFAULT};
    const char *limit = arg(conn, "limit"), *cursor = arg(conn, "cursor");
    if (limit) {
        char *end;
        q.limit = strtol(limit, &end, 10);
        if (*end || q.limit < 1 || q.limit > PAGE_MAX)
            return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
                                "limit must be 1..%d", PAGE_MAX);
    }
    if (q.subject) {
        /* A subject no selected queue's key type can hold is a mistake,
         * not an empty page. */
        sl_jobs_query any = q;
        any.subject = NULL;
        if (sl_reads_page_queues(a->m, &any) > 0 &&
            sl_reads_page_queues(a->m, &q) == 0)
            return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
                                "subject '%.300s' is no key of the selected "
                                "pipelines' key types",
                                q.subject);
    }
    char ts[64];
    if (cursor) {
        const char *comma = strchr(cursor, ',');
        if (!comma || comma == cursor ||
            (size_t)(comma - cursor) >= sizeof ts ||
            !sl_jobs_is_uuid(comma + 1))
            return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
                                "cursor must be CREATED_AT,ID as returned in"
                                " next_cursor");
        memcpy(ts, cursor, (size_t)(comma - cursor));
        ts[comma - cursor] = '\0';
        q.after_ts = ts;
        q.after_id = comma + 1;
    }
    if (sl_reads_page_queues(a->m, &q) == 0)
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                            "no stage matches pipeline '%s' and stage '%s'",
                            q.pipeline ? q.pipeline : "*",
                            q.stage ? q.stage : "*");
    char err[1024];
    PGconn *c = conn_db(a, err, sizeof err);
    if (!c) return db_failure(conn, -SL_ECONN, err);
    PGresult *r;
    int rc = sl_reads_jobs_page(c, a->m, &q, &r, err, sizeof err);
    if (rc != 0) return db_failure(conn, rc, err);
    json_t *list = json_array();
    int n = PQntuples(r);
    for (int i = 0; i < n; i++)
        json_array_append_new(list, page_row(a->m, r, i));
    json_t *next = json_null();
    if (n == q.limit) {
        char cur[128];
        snprintf(cur, sizeof cur, "%s,%s", PQgetvalue(r, n - 1, SL_PAGE_CURSOR),
                 PQgetvalue(r, n - 1, SL_PAGE_ID));
        next = json_string(cur);
    }
    PQclear(r);
    return sl_web_json(
        conn, MHD_HTTP_OK,
        json_pack("{s:o,s:o}", "jobs", list, "next_cursor", next));
}

/* ---- one job, one subject --------------------------------------------------
 */

/* The SL_JOB_* columns of row i as an object. */
static json_t *job_row(const PGresult *r, int i) {
    static const struct {
        const char *name;
        int col, kind; /* 0 text, 1 integer, 2 real */
    } cols[] = {{"id", SL_JOB_ID, 0},
                {"status", SL_JOB_STATUS, 0},
                {"attempts", SL_JOB_ATTEMPTS, 1},
                {"last_error", SL_JOB_LAST_ERROR, 0},
                {"error_class", SL_JOB_ERROR_CLASS, 0},
                {"created_at", SL_JOB_CREATED, 0},
                {"started_at", SL_JOB_STARTED, 0},
                {"finished_at", SL_JOB_FINISHED, 0},
                {"took_s", SL_JOB_TOOK, 2},
                {"run_at", SL_JOB_RUN_AT, 0},
                {"runs_in_s", SL_JOB_RUNS_IN, 2},
                {"detail", SL_JOB_DETAIL, 0},
                {"progress", SL_JOB_PROGRESS, 1},
                {"locked_by", SL_JOB_LOCKED_BY, 0},
                {"subject", SL_JOB_SUBJECT, 0}};
    json_t *o = json_object();
    for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++)
        json_object_set_new(o, cols[k].name,
                            cols[k].kind == 0 ? text_or_null(r, i, cols[k].col)
                            : cols[k].kind == 1
                                ? int_or_null(r, i, cols[k].col)
                                : real_or_null(r, i, cols[k].col));
    return o;
}

static enum MHD_Result job(sl_api *a, struct MHD_Connection *conn,
                           const char *queue, const char *id) {
    const sl_stage *s = sl_model_stage_by_queue(a->m, queue);
    if (!s)
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                            "no queue named '%s'", queue);
    if (!sl_jobs_is_uuid(id))
        return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "the job id is not a UUID");
    char err[1024];
    PGconn *c = conn_db(a, err, sizeof err);
    if (!c) return db_failure(conn, -SL_ECONN, err);
    PGresult *r;
    int rc = sl_reads_job(c, s, id, &r, err, sizeof err);
    if (rc != 0) return db_failure(conn, rc, err);
    if (PQntuples(r) != 1) {
        PQclear(r);
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                            "no job %s in queue %s", id, queue);
    }
    json_t *o = job_row(r, 0);
    PQclear(r);
    json_object_set_new(o, "pipeline", json_string(s->pipeline->name));
    json_object_set_new(o, "stage", json_string(s->name));
    json_object_set_new(o, "queue", json_string(s->queue));
    const char *in = arg(conn, "inputs");
    if (in && strcmp(in, "1") == 0) {
        rc = sl_reads_job_inputs(c, s, id, &r, err, sizeof err);
        if (rc != 0) {
            json_decref(o);
            return db_failure(conn, rc, err);
        }
        json_t *v =
            PQntuples(r) == 1 ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
        PQclear(r);
        json_object_set_new(o, "inputs", v ? v : json_null());
    }
    return sl_web_json(conn, MHD_HTTP_OK, o);
}

static enum MHD_Result subject(sl_api *a, struct MHD_Connection *conn,
                               const char *pipeline, const char *id) {
    const sl_pipeline *p = sl_model_pipeline(a->m, pipeline);
    if (!p || !p->has_subject)
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                            "no pipeline with a subject named '%s'", pipeline);
    char key[SL_KEY_MAX];
    const char *why;
    if (sl_key_canon(p->subject.key_type, id, key, &why) != 0)
        return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "the subject id is not %s", why);
    id = key;
    char err[1024];
    PGconn *c = conn_db(a, err, sizeof err);
    if (!c) return db_failure(conn, -SL_ECONN, err);
    PGresult *r;
    int rc = sl_reads_subject(c, p, id, &r, err, sizeof err);
    if (rc != 0) return db_failure(conn, rc, err);
    if (PQntuples(r) != 1) {
        PQclear(r);
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                            "no subject %s in pipeline %s", id, pipeline);
    }
    json_t *o = json_pack("{s:s,s:s,s:o,s:o,s:o}", "pipeline", p->name, "id",
                          id, "status", text_or_null(r, 0, SL_SUBJ_STATUS),
                          "progress", int_or_null(r, 0, SL_SUBJ_PROGRESS),
                          "detail", text_or_null(r, 0, SL_SUBJ_DETAIL));
    PQclear(r);
    json_t *stages = json_array();
    for (size_t k = 0; k < p->nstages; k++) {
        rc = sl_reads_subject_jobs(c, &p->stages[k], id, &r, err, sizeof err);
        if (rc != 0) {
            json_decref(o);
            json_decref(stages);
            return db_failure(conn, rc, err);
        }
        json_t *js = json_array();
        for (int i = 0; i < PQntuples(r); i++)
            json_array_append_new(js, job_row(r, i));
        PQclear(r);
        json_array_append_new(
            stages, json_pack("{s:s,s:s,s:o}", "name", p->stages[k].name,
                              "queue", p->stages[k].queue, "jobs", js));
    }
    json_object_set_new(o, "stages", stages);
    return sl_web_json(conn, MHD_HTTP_OK, o);
}

/* ---- who acts ------------------------------------------------------------ */

/* "admin@<client address>" into who (96 bytes). */
static void client_who(struct MHD_Connection *conn, char who[96]) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(who, 96, "admin");
    if (ci && ci->client_addr) {
        char host[64] = "";
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
                      host, sizeof host);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr,
                      host, sizeof host);
        snprintf(who, 96, "admin@%s", host);
    }
}

/* ---- POST /api/jobs/retry, cancel, delete ----------------------------------
 */

/* The action on the jobs of `ids` one by one; results as in docs/api.md. */
static int act_ids(sl_api *a, PGconn *c, const char *what, json_t *ids,
                   json_t *results, long *changed, char *err, size_t errlen) {
    int rc = 0;
    for (size_t i = 0; i < json_array_size(ids) && rc == 0; i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        sl_job_ref ref;
        memset(&ref, 0, sizeof ref);
        rc = what[0] == 'r'   ? sl_jobs_retry(c, a->m, id, &ref, err, errlen)
             : what[0] == 'c' ? sl_jobs_cancel(c, a->m, id, &ref, err, errlen)
                              : sl_bulk_delete_id(c, a->m, id, &ref, err,
                                                  errlen);
        if (rc == -SL_EREFUSED) { /* its unique key is held: this one only */
            json_array_append_new(results,
                                  json_pack("{s:s,s:s}", "id", id, "error",
                                            "unique_key_held"));
            rc = 0;
            continue;
        }
        if (rc != 0) break;
        *changed += ref.changed;
        json_array_append_new(
            results,
            ref.stage ? json_pack("{s:s,s:s,s:s,s:b}", "id", id, "queue",
                                  ref.stage->queue, "was", ref.status,
                                  "changed", ref.changed)
                      : json_pack("{s:s,s:s}", "id", id, "error", "not_found"));
    }
    return rc;
}

/* The filter object f as a bulk filter; NULL when valid, else why not. */
static const char *parse_filter(const sl_model *m, json_t *f,
                                sl_bulk_filter *out) {
    static const char *const keys[] = {"pipeline", "stage", "status",
                                       "error_class", "q"};
    const char *v[5] = {0};
    if (!json_is_object(f)) return "filter must be an object";
    const char *key;
    json_t *val;
    json_object_foreach(f, key, val) {
        size_t k = 0;
        while (k < 5 && strcmp(key, keys[k]) != 0)
            k++;
        if (k == 5)
            return "filter takes pipeline, stage, status, error_class, q";
        if (!json_is_string(val) || !json_string_value(val)[0])
            return "filter values must be non-empty strings";
        v[k] = json_string_value(val);
    }
    *out = (sl_bulk_filter){v[0], v[1], v[2], v[3], v[4]};
    if (out->status && !sl_bulk_valid_status(out->status))
        return "filter.status must be pending, in_progress, retry, done,"
               " error or cancelled";
    if (sl_bulk_stages(m, out) == 0) return NULL; /* 404 below */
    return NULL;
}

static void log_progress(long changed, void *arg) {
    char n[24];
    snprintf(n, sizeof n, "%ld", changed);
    sl_log(SL_LOG_INFO, "bulk action progress", "action", (const char *)arg,
           "changed", n, NULL);
}

static enum MHD_Result act(sl_api *a, struct MHD_Connection *conn,
                           const char *what, const char *body, size_t len) {
    json_error_t je;
    json_t *in = body ? json_loadb(body, len, 0, &je) : NULL;
    json_t *ids = json_object_get(in, "ids"), *filter = json_object_get(in,
                                                                     "filter");
    size_t n = json_array_size(ids);
    if (!json_is_object(in) || json_object_size(in) != 1 ||
        (!filter && (!json_is_array(ids) || n == 0 || n > IDS_MAX))) {
        json_decref(in);
        return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "the body must be {\"ids\": [UUID, ...]} with 1..%d"
                            " ids, or {\"filter\": {...}}",
                            IDS_MAX);
    }
    sl_bulk_filter bf;
    const char *why = filter ? parse_filter(a->m, filter, &bf) : NULL;
    for (size_t i = 0; !filter && i < n && !why; i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        if (!id || !sl_jobs_is_uuid(id)) why = "every id must be a UUID";
    }
    if (why) {
        json_decref(in);
        return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request", "%s",
                            why);
    }
    if (filter && sl_bulk_stages(a->m, &bf) == 0) {
        json_decref(in);
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                            "no stage matches the filter's pipeline and stage");
    }
    char err[1024];
    PGconn *c = conn_db(a, err, sizeof err);
    if (!c) {
        json_decref(in);
        return db_failure(conn, -SL_ECONN, err);
    }
    json_t *results = json_array();
    long changed = 0;
    int rc;
    if (filter) {
        sl_bulk_op op = what[0] == 'r'   ? SL_BULK_RETRY
                        : what[0] == 'c' ? SL_BULK_CANCEL
                                         : SL_BULK_DELETE;
        rc = sl_bulk_apply(c, a->m, op, &bf, log_progress, (void *)what,
                           &changed, err, sizeof err);
    } else {
        rc = act_ids(a, c, what, ids, results, &changed, err, sizeof err);
    }
    /* Whatever was changed is audited, even when a later batch failed. */
    char who[96], aerr[1024];
    client_who(conn, who);
    int arc = sl_audit_write(c, who, what, in, changed, aerr, sizeof aerr);
    json_decref(in);
    if (rc != 0 || arc != 0) {
        json_decref(results);
        return db_failure(conn, rc ? rc : arc, rc ? err : aerr);
    }
    if (filter) {
        json_decref(results);
        return sl_web_json(conn, MHD_HTTP_OK,
                           json_pack("{s:I,s:b}", "changed",
                                     (json_int_t)changed, "filter", 1));
    }
    return sl_web_json(
        conn, MHD_HTTP_OK,
        json_pack("{s:I,s:o}", "changed", (json_int_t)changed, "results",
                  results));
}

/* ---- POST /api/stages/:pipeline/:stage/pause|resume ------------------------
 */

static enum MHD_Result pause_stage(sl_api *a, struct MHD_Connection *conn,
                             const char *pipeline, const char *stage,
                             int paused) {
    const sl_stage *s = sl_model_stage(a->m, pipeline, stage);
    if (!s)
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                            "no stage %s.%s", pipeline, stage);
    char err[1024];
    PGconn *c = conn_db(a, err, sizeof err);
    if (!c) return db_failure(conn, -SL_ECONN, err);
    char who[96];
    client_who(conn, who);
    int rc = sl_ops_pause(c, s, paused, who, err, sizeof err);
    if (rc != 0) return db_failure(conn, rc, err);
    json_t *f = json_pack("{s:s,s:s}", "pipeline", s->pipeline->name, "stage",
                          s->name);
    rc = sl_audit_write(c, who, paused ? "pause" : "resume", f, 1, err,
                        sizeof err);
    json_decref(f);
    if (rc != 0) return db_failure(conn, rc, err);
    return sl_web_json(conn, MHD_HTTP_OK,
                       json_pack("{s:s,s:s,s:b}", "pipeline",
                                 s->pipeline->name, "stage", s->name,
                                 "paused", paused));
}

/* ---- GET /api/workers, GET /api/stats ------------------------------------- */

static enum MHD_Result workers(sl_api *a, struct MHD_Connection *conn) {
    char err[1024];
    PGconn *c = conn_db(a, err, sizeof err);
    if (!c) return db_failure(conn, -SL_ECONN, err);
    PGresult *r;
    int rc = sl_ops_workers(c, &r, err, sizeof err);
    if (rc != 0) return db_failure(conn, rc, err);
    json_t *list = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *st = json_loads(PQgetvalue(r, i, SL_WK_STAGES), 0, NULL);
        json_array_append_new(
            list,
            json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b}", "id",
                      text_or_null(r, i, SL_WK_ID), "host",
                      text_or_null(r, i, SL_WK_HOST), "pid",
                      int_or_null(r, i, SL_WK_PID), "version",
                      text_or_null(r, i, SL_WK_VERSION), "stages",
                      st ? st : json_array(), "concurrency",
                      int_or_null(r, i, SL_WK_CONCURRENCY), "started_at",
                      text_or_null(r, i, SL_WK_STARTED), "heartbeat_at",
                      text_or_null(r, i, SL_WK_HEARTBEAT), "alive",
                      PQgetvalue(r, i, SL_WK_ALIVE)[0] == 't'));
    }
    PQclear(r);
    return sl_web_json(conn, MHD_HTTP_OK, json_pack("{s:o}", "workers", list));
}

static enum MHD_Result stats(sl_api *a, struct MHD_Connection *conn) {
    const char *pl = arg(conn, "pipeline"), *st = arg(conn, "stage"),
               *mi = arg(conn, "minutes");
    long minutes = 60;
    if (mi) {
        char *end;
        minutes = strtol(mi, &end, 10);
        if (*end || minutes < 1 || minutes > STATS_MINUTES_MAX)
            return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
                                "minutes must be 1..%d", STATS_MINUTES_MAX);
    }
    sl_bulk_filter f = {.pipeline = pl, .stage = st};
    if (sl_bulk_stages(a->m, &f) == 0)
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                            "no stage matches pipeline '%s' and stage '%s'",
                            pl ? pl : "*", st ? st : "*");
    char err[1024];
    PGconn *c = conn_db(a, err, sizeof err);
    if (!c) return db_failure(conn, -SL_ECONN, err);
    PGresult *r;
    int rc = sl_ops_stats(c, pl, st, (int)minutes, &r, err, sizeof err);
    if (rc != 0) return db_failure(conn, rc, err);
    json_t *list = json_array();
    for (int i = 0; i < PQntuples(r); i++)
        json_array_append_new(
            list,
            json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "minute",
                      text_or_null(r, i, SL_ST_MINUTE), "pipeline",
                      text_or_null(r, i, SL_ST_PIPELINE), "stage",
                      text_or_null(r, i, SL_ST_STAGE), "done",
                      int_or_null(r, i, SL_ST_DONE), "failed",
                      int_or_null(r, i, SL_ST_FAILED), "run_p50_ms",
                      real_or_null(r, i, SL_ST_RUN_P50), "run_p95_ms",
                      real_or_null(r, i, SL_ST_RUN_P95), "wait_p50_ms",
                      real_or_null(r, i, SL_ST_WAIT_P50), "wait_p95_ms",
                      real_or_null(r, i, SL_ST_WAIT_P95)));
    PQclear(r);
    return sl_web_json(conn, MHD_HTTP_OK, json_pack("{s:o}", "minutes", list));
}

/* ---- routing
 * ------------------------------------------------------------------ */

/* Splits url (after "/api/") into at most 4 segments in parts; returns the
 * number, or -1 when there are more. seg holds the copies. */
static int split(const char *url, char seg[512], const char *parts[4]) {
    snprintf(seg, 512, "%s", url + strlen("/api/"));
    int n = 0;
    for (char *p = seg; *p;) {
        if (n == 4) return -1;
        parts[n++] = p;
        char *slash = strchr(p, '/');
        if (!slash) break;
        *slash = '\0';
        p = slash + 1;
    }
    return n;
}

/* The rules of every action: POST, the admin token, same site, a JSON
 * body. Returns MHD_YES with *answered = 0 when the request passes. */
static enum MHD_Result gate(struct MHD_Connection *conn, const char *method,
                            sl_web_role role, int *answered) {
    *answered = 1;
    if (strcmp(method, "POST") != 0)
        return sl_web_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                            "method_not_allowed", "use POST");
    if (role != SL_WEB_ADMIN)
        return sl_web_error(conn, MHD_HTTP_FORBIDDEN, "forbidden",
                            "actions need the admin token");
    if (sl_webauth_cross_site(
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                        "Sec-Fetch-Site"),
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin"),
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host")))
        return sl_web_error(conn, MHD_HTTP_FORBIDDEN, "cross_site",
                            "actions from another site are refused");
    const char *type =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    if (!type || strncmp(type, "application/json", 16) != 0)
        return sl_web_error(conn, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                            "unsupported_media_type",
                            "the body must be application/json");
    *answered = 0;
    return MHD_YES;
}

enum MHD_Result sl_api_handle(sl_api *a, struct MHD_Connection *conn,
                              const char *method, const char *url,
                              const char *body, size_t len) {
    assert(a && strncmp(url, "/api/", 5) == 0);
    char seg[512];
    const char *p[4];
    int n = split(url, seg, p);
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    sl_web_role role = sl_webauth_role(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"));
    if (role == SL_WEB_NONE)
        return sl_web_error(conn, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                            "a Bearer token (SLUICE_READ_TOKEN or "
                            "SLUICE_ADMIN_TOKEN) is required");
    if (n == 1 && strcmp(p[0], "pipelines") == 0 && get)
        return pipelines(a, conn);
    if (n == 1 && strcmp(p[0], "jobs") == 0 && get) return jobs(a, conn);
    if (n == 1 && strcmp(p[0], "workers") == 0 && get) return workers(a, conn);
    if (n == 1 && strcmp(p[0], "stats") == 0 && get) return stats(a, conn);
    if (n == 3 && strcmp(p[0], "jobs") == 0 && get)
        return job(a, conn, p[1], p[2]);
    if (n == 3 && strcmp(p[0], "subjects") == 0 && get)
        return subject(a, conn, p[1], p[2]);
    int answered;
    if (n == 2 && strcmp(p[0], "jobs") == 0 &&
        (strcmp(p[1], "retry") == 0 || strcmp(p[1], "cancel") == 0 ||
         strcmp(p[1], "delete") == 0)) {
        enum MHD_Result r = gate(conn, method, role, &answered);
        return answered ? r : act(a, conn, p[1], body, len);
    }
    if (n == 4 && strcmp(p[0], "stages") == 0 &&
        (strcmp(p[3], "pause") == 0 || strcmp(p[3], "resume") == 0)) {
        enum MHD_Result r = gate(conn, method, role, &answered);
        return answered ? r
                        : pause_stage(a, conn, p[1], p[2],
                                      strcmp(p[3], "pause") == 0);
    }
    if (n > 0 && get == 0 && post == 0)
        return sl_web_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                            "method_not_allowed", "method %s is not allowed",
                            method);
    return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found", "no route %s %s",
                        method, url);
}
