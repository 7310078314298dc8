/* runtime.c - worker threads, the control thread, and the handler context.
 *
 * Threads and connections: one worker thread per unit of stage concurrency,
 * each owning one connection (prepared statements, handler SQL) and its
 * handler state; one control thread owning one connection that LISTENs,
 * heartbeats and sweeps. Nothing opens a connection per job.
 *
 * Waking: a NOTIFY on a stage's channel posts one wake token to that
 * stage; one idle worker takes it and claims. A worker whose claim came
 * back full posts another token, so a bulk insert fans out over the
 * workers without waking all of them for every job. Idle workers also
 * wake on their own when the earliest delayed job falls due (never later
 * than the sweep interval), so delayed jobs and retries need no polling.
 */
#include "runtime.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "clock.h"
#include "db.h"
#include "metrics.h"
#include "queue.h"
#include "handler.h"
#include "schema.h"
#include "text.h"

#define MAX_BATCH 1000
#define IDLE_SAFETY_MS 30000

static atomic_int stop_requested;
static atomic_int stop_now;
/* For sl_runtime_health(): the control loop's last turn and LISTEN. */
static atomic_llong last_tick;
static atomic_int listening;

/* ---- structures ----------------------------------------------------------- */

struct runtime;

typedef struct stage_rt {
    const sl_stage *s;
    const sl_handler *h;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int tokens;  /* pending wake-ups */
    int idle;    /* workers waiting */
    int workers; /* workers alive */
} stage_rt;

typedef struct worker {
    struct runtime *rt;
    stage_rt *st;
    int index;
    pthread_t th;
    PGconn *conn;
    char owner[160];
    void *hstate;
    /* The batch in hand; guarded by mu for the control thread. */
    pthread_mutex_t mu;
    sl_qjob jobs[MAX_BATCH];
    int njobs;
    int64_t running_since; /* when the current handler call began, 0 idle */
    int running;           /* index of the job whose handler runs, -1 */
    atomic_int stop_job[MAX_BATCH];
    atomic_int timed_out;
} worker;

typedef struct runtime {
    const sl_model *m;
    sl_runtime_opts o;
    sl_dbsource db;
    char worker_id[128];
    stage_rt *stages;
    size_t nstages;
    worker *workers;
    size_t nworkers;
    int64_t sweep_ms;
    int64_t throttle_ms;
} runtime;

struct sl_ctx {
    worker *w;
    int idx;
    sl_job job;
    int64_t last_progress;
};

/* ---- connections ------------------------------------------------------------ */

/* Connects and prepares, retrying with backoff until it works or the
 * runtime stops at once. */
static PGconn *connect_worker(runtime *rt, const char *who) {
    int64_t delay = 100;
    char err[512];
    for (;;) {
        PGconn *c = sl_db_connect(rt->db, err, sizeof err);
        if (c && rt->o.async_commit) {
            PGresult *r = PQexec(c, "SET synchronous_commit = off");
            PQclear(r);
        }
        if (c && sl_queue_prepare(c, rt->m, err, sizeof err) == 0) return c;
        if (c) PQfinish(c);
        if (atomic_load(&stop_now)) return NULL;
        sl_log(SL_LOG_WARN, "database unavailable, retrying", "who", who,
               "error", err, NULL);
        sl_sleep_ms(delay);
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
}

static int conn_lost(PGconn *c) { return !c || PQstatus(c) != CONNECTION_OK; }

/* Whether rc (from queue.h) means the connection must be re-established. */
static int need_reconnect(PGconn *c, int rc) {
    return rc == -SL_ECONN || (rc < 0 && conn_lost(c));
}

static void reconnect(worker *w) {
    if (w->conn) PQfinish(w->conn);
    w->conn = connect_worker(w->rt, w->owner);
    if (w->conn) {
        sl_metrics_reconnect();
        sl_log(SL_LOG_INFO, "reconnected", "worker", w->owner, NULL);
    }
}

/* ---- waking ------------------------------------------------------------------ */

static void stage_post(stage_rt *st) {
    pthread_mutex_lock(&st->mu);
    if (st->tokens < st->workers) st->tokens++;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void stage_broadcast(stage_rt *st) {
    pthread_mutex_lock(&st->mu);
    st->tokens = st->workers;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* Waits for a wake token or timeout_ms. */
static void stage_wait(stage_rt *st, int64_t timeout_ms) {
    struct timespec dl;
    sl_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&st->mu);
    st->idle++;
    while (st->tokens == 0 && !atomic_load(&stop_requested)) {
        if (pthread_cond_timedwait(&st->cv, &st->mu, &dl) == ETIMEDOUT) break;
    }
    if (st->tokens > 0) st->tokens--;
    st->idle--;
    pthread_mutex_unlock(&st->mu);
}

/* ---- the handler context ---------------------------------------------------- */

int sl_ctx_checkpoint(sl_ctx *ctx, json_t *checkpoint) {
    char err[512];
    worker *w = ctx->w;
    int rc = sl_queue_checkpoint(w->conn, w->st->s, w->owner,
                                 &w->jobs[ctx->idx], checkpoint, err,
                                 sizeof err);
    if (need_reconnect(w->conn, rc)) {
        reconnect(w);
        if (w->conn)
            rc = sl_queue_checkpoint(w->conn, w->st->s, w->owner,
                                     &w->jobs[ctx->idx], checkpoint, err,
                                     sizeof err);
    }
    if (rc == -SL_ELEASE) {
        atomic_store(&w->stop_job[ctx->idx], 1);
        sl_log(SL_LOG_WARN, "checkpoint refused: lease lost", "job",
               ctx->job.id, "stage", w->st->s->name, NULL);
    } else if (rc < 0) {
        sl_log(SL_LOG_ERROR, "checkpoint failed", "job", ctx->job.id, "error",
               err, NULL);
    } else {
        /* The next read of job->checkpoint in this attempt sees it too. */
        sl_qjob *j = &w->jobs[ctx->idx];
        json_decref(j->checkpoint);
        j->checkpoint = json_deep_copy(checkpoint);
        ctx->job.checkpoint = j->checkpoint;
    }
    return rc;
}

void sl_ctx_progress(sl_ctx *ctx, int pct, const char *detail) {
    worker *w = ctx->w;
    int64_t t = sl_now_ms();
    if (pct < 100 && t - ctx->last_progress < w->rt->throttle_ms) return;
    ctx->last_progress = t;
    char err[512];
    int rc = sl_queue_progress(w->conn, w->st->s, w->owner,
                               &w->jobs[ctx->idx], pct, detail, err,
                               sizeof err);
    if (rc == -SL_ELEASE) atomic_store(&w->stop_job[ctx->idx], 1);
    else if (need_reconnect(w->conn, rc)) reconnect(w);
}

int sl_ctx_should_stop(sl_ctx *ctx) {
    return atomic_load(&ctx->w->stop_job[ctx->idx]) || atomic_load(&stop_now);
}

PGconn *sl_ctx_conn(sl_ctx *ctx) { return ctx->w->conn; }

int sl_ctx_act_for_requester(sl_ctx *ctx, char *err, size_t errlen) {
    worker *w = ctx->w;
    char user[40];
    assert(PQtransactionStatus(w->conn) == PQTRANS_INTRANS);
    int rc = sl_queue_requester(w->conn, w->st->s, ctx->job.id, user, err,
                                errlen);
    if (rc < 0 || !user[0]) return rc;
    /* The same settings PostgREST sets for a request, so auth.uid() (ours
     * or Supabase's) answers this user; then the application role, so
     * every policy applies. Both end with the transaction. */
    char claims[128];
    snprintf(claims, sizeof claims, "{\"sub\": \"%s\", \"role\": "
             "\"authenticated\"}", user);
    const char *vals[2] = {user, claims};
    PGresult *r = PQexecParams(
        w->conn,
        "SELECT set_config('request.jwt.claim.sub', $1, true),"
        " set_config('request.jwt.claims', $2, true),"
        " set_config('role', '" SL_APP_ROLE "', true)",
        2, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m[512];
        snprintf(err, errlen, "acting for user %s as " SL_APP_ROLE ": %s",
                 user, sl_db_error(w->conn, r, m, sizeof m));
        rc = PQstatus(w->conn) == CONNECTION_OK ? -SL_EDB : -SL_ECONN;
    }
    PQclear(r);
    return rc;
}

void sl_ctx_log(sl_ctx *ctx, int level, const char *fmt, ...) {
    char msg[1024], att[16];
    va_list ap;
    va_start(ap, fmt);
    sl_text_vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(att, sizeof att, "%d", ctx->job.attempt);
    sl_log(level, msg, "job", ctx->job.id, "stage", ctx->w->st->s->name,
           "attempt", att, NULL);
}

/* ---- policy -------------------------------------------------------------------- */

int64_t sl_runtime_backoff_ms(const sl_retry *r, int attempt, double unit) {
    double d = (double)r->initial_ms;
    if (r->backoff == SL_BACKOFF_EXPONENTIAL)
        for (int i = 1; i < attempt && d < (double)r->max_delay_ms; i++)
            d *= r->factor;
    if (d > (double)r->max_delay_ms) d = (double)r->max_delay_ms;
    d *= 1.0 + r->jitter * (2.0 * unit - 1.0);
    if (d > (double)r->max_delay_ms) d = (double)r->max_delay_ms;
    if (d < 0) d = 0;
    return (int64_t)d;
}

static double jitter_unit(unsigned *seed) {
    return (double)rand_r(seed) / ((double)RAND_MAX + 1.0);
}

/* ---- running one batch ----------------------------------------------------------- */

static void log_job(int level, const char *msg, const sl_stage *s,
                    const sl_qjob *j, int64_t ms, const char *k1,
                    const char *v1, const char *k2, const char *v2) {
    char att[16], dur[24];
    snprintf(att, sizeof att, "%d", j->attempts);
    snprintf(dur, sizeof dur, "%lld", (long long)ms);
    sl_log(level, msg, "job", j->id, "stage", s->name, "queue", s->queue,
           "attempt", att, "duration_ms", dur, k1, v1, k2, v2, NULL);
}

/* Runs `call` again while it fails for reasons outside the job: after a
 * reconnect when the connection was lost (a restarting server can drop a
 * fresh connection again), after a short pause on other server errors
 * (statement timeout, deadlock). Fencing makes repeating a queue write
 * safe. Data errors (-SL_EINVAL) and fencing (-SL_ELEASE) are final. */
#define RETRYING(w, rc, call)                                                 \
    do {                                                                      \
        rc = (call);                                                          \
        for (int tries_ = 0; tries_ < 20 && !atomic_load(&stop_now);          \
             tries_++) {                                                      \
            if (need_reconnect((w)->conn, rc)) {                              \
                reconnect(w);                                                 \
                if (!(w)->conn) break;                                        \
            } else if (rc == -SL_EDB && tries_ < 5) {                         \
                sl_sleep_ms(50LL << tries_);                                     \
            } else {                                                          \
                break;                                                        \
            }                                                                 \
            rc = (call);                                                      \
        }                                                                     \
    } while (0)

/* Records a failure. The message is made safe first (text.h); should the
 * server still refuse it (or the write fail for any reason but a lost
 * lease), a shortened message and then a fixed one are tried, so that a
 * failure is recorded whenever the database can be written at all and
 * the job never stays in_progress until its lease runs out. */
static void fail_job(worker *w, const sl_qjob *j, sl_result *res,
                     unsigned *seed, int64_t ms) {
    const sl_stage *s = w->st->s;
    char err[512], msg[1100];
    int retryable = (s->retry.retry_mask >> res->errclass) & 1u;
    int retry = retryable && j->attempts < s->retry.max_attempts;
    int64_t delay = 0;
    if (retry) {
        delay = sl_runtime_backoff_ms(&s->retry, j->attempts,
                                      jitter_unit(seed));
        if (res->delay_ms > delay) delay = res->delay_ms;
    }
    if (res->message[0])
        sl_text_copy(msg, sizeof msg, res->message,
                     strnlen(res->message, sizeof res->message));
    else
        snprintf(msg, sizeof msg, "handler failed");
    const char *cls = sl_errclass_name(res->errclass);
    int rc;
    RETRYING(w, rc, sl_queue_fail(w->conn, s, w->owner, j, retry, delay, cls,
                                  msg, err, sizeof err));
    for (int fallback = 1; rc < 0 && rc != -SL_ELEASE && fallback <= 2 &&
                           !atomic_load(&stop_now);
         fallback++) {
        log_job(SL_LOG_WARN, "failure message refused; recording a shorter one",
                s, j, ms, "error", err, NULL, NULL);
        char shorter[sizeof msg];
        if (fallback == 1)
            sl_text_format(shorter, 240, "%s", msg);
        else
            snprintf(shorter, sizeof shorter,
                     "%s: the failure message could not be recorded", cls);
        snprintf(msg, sizeof msg, "%s", shorter);
        RETRYING(w, rc, sl_queue_fail(w->conn, s, w->owner, j, retry, delay,
                                      cls, msg, err, sizeof err));
    }
    if (rc == -SL_ELEASE)
        log_job(SL_LOG_WARN, "failure not recorded: lease lost (fenced)", s,
                j, ms, "error", msg, NULL, NULL);
    else if (rc < 0)
        log_job(SL_LOG_ERROR, "failure not recorded", s, j, ms, "error", err,
                NULL, NULL);
    else {
        sl_metrics_attempt(s, retry ? SL_ATTEMPT_RETRY : SL_ATTEMPT_FAILED, ms);
        log_job(retry ? SL_LOG_WARN : SL_LOG_ERROR,
                retry ? "job failed, will retry" : "job failed", s, j, ms,
                "class", cls, "error", msg);
        if (!retry && w->rt->o.on_final_failure)
            w->rt->o.on_final_failure(s, j->id, j->subject, cls, j->attempts,
                                      msg, w->rt->o.failure_arg);
    }
}

static void release_job(worker *w, const sl_qjob *j, int64_t delay) {
    char err[512];
    int rc;
    RETRYING(w, rc, sl_queue_snooze(w->conn, w->st->s, w->owner, j,
                                          delay, err, sizeof err));
    if (rc < 0 && rc != -SL_ELEASE)
        sl_log(SL_LOG_ERROR, "release failed", "job", j->id, "error", err,
               NULL);
    else if (rc == 0)
        sl_log(SL_LOG_INFO, "job released", "job", j->id, "queue",
               w->st->s->queue, NULL);
}

/* Completes the DONE jobs in one statement. When the values of one job do
 * not fit (say an output that is not a valid integer) the batch is
 * completed one by one, so that job alone fails, with the server's
 * message. A completion that cannot be recorded at all (server errors
 * past the retries) is left to the lease: the job is rescued and runs
 * again, which fencing keeps safe. */
static void complete_jobs(worker *w, sl_qdone *done, int n, int64_t *ms,
                          unsigned *seed) {
    const sl_stage *s = w->st->s;
    char err[512];
    int rc;
    if (n == 0) return;
    RETRYING(w, rc, sl_queue_complete(w->conn, s, w->owner, done, n, err,
                                      sizeof err));
    if (rc == -SL_EINVAL && n > 1) {
        for (int i = 0; i < n; i++) complete_jobs(w, &done[i], 1, &ms[i], seed);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (rc == -SL_EINVAL) {
            sl_result res;
            memset(&res, 0, sizeof res);
            sl_fail(&res, SL_EC_INVALID_INPUT, "cannot store outputs: %s",
                    err);
            fail_job(w, done[i].job, &res, seed, ms[i]);
        } else if (rc < 0) {
            log_job(SL_LOG_ERROR,
                    "completion not recorded; the job will run again after "
                    "its lease expires",
                    s, done[i].job, ms[i], "error", err, NULL, NULL);
        } else if (!done[i].completed) {
            log_job(SL_LOG_WARN, "completion refused: lease lost (fenced)", s,
                    done[i].job, ms[i], NULL, NULL, NULL, NULL);
        } else {
            sl_metrics_attempt(s, SL_ATTEMPT_SUCCESS, ms[i]);
            log_job(SL_LOG_INFO, "job done", s, done[i].job, ms[i], NULL,
                    NULL, NULL, NULL);
        }
    }
}

/* Per-worker scratch for one batch, sized to the batch once. */
typedef struct batch_mem {
    sl_qdone *done;
    int64_t *done_ms;
    sl_result res;
} batch_mem;

static void run_batch(worker *w, batch_mem *bm, unsigned *seed) {
    const sl_stage *s = w->st->s;
    sl_qdone *done = bm->done;
    int ndone = 0;

    for (int i = 0; i < w->njobs; i++) {
        sl_qjob *j = &w->jobs[i];
        sl_result *res = &bm->res;
        int64_t ms;
        memset(res, 0, sizeof *res);
        if (atomic_load(&stop_requested)) {
            /* Shutting down: jobs not yet started go back at once. */
            release_job(w, j, 0);
            continue;
        }
        if (atomic_load(&w->stop_job[i])) {
            /* Cancelled or rescued before it started: never run it. */
            log_job(SL_LOG_INFO, "job skipped: no longer ours", s, j, 0,
                    NULL, NULL, NULL, NULL);
            continue;
        }
        if (!j->input) {
            /* Claimed bare (the batch's inputs could not be built in one
             * statement): read this one alone; if it cannot be read, this
             * job fails and the others go on. */
            char err[512];
            int rc;
            RETRYING(w, rc, sl_queue_input(w->conn, s, j, err, sizeof err));
            if (rc < 0) {
                sl_fail(res,
                        rc == -SL_EINVAL ? SL_EC_INVALID_INPUT
                                         : SL_EC_RETRYABLE,
                        "input cannot be read: %s", err);
                fail_job(w, j, res, seed, 0);
                continue;
            }
        }
        if (j->undecodable[0]) {
            /* Never run a handler on an input it would see altered. */
            sl_fail(res, SL_EC_INVALID_INPUT, "%s", j->undecodable);
            fail_job(w, j, res, seed, 0);
            continue;
        }
        sl_ctx ctx = {.w = w, .idx = i, .last_progress = 0};
        ctx.job.id = j->id;
        ctx.job.subject_id = j->subject[0] ? j->subject : NULL;
        ctx.job.attempt = j->attempts;
        ctx.job.input = j->input;
        ctx.job.checkpoint = j->checkpoint;
        ctx.job.stage = s;
        res->outcome = SL_OUT_FAIL;
        res->errclass = SL_EC_INTERNAL;

        int64_t t0 = sl_now_ms();
        pthread_mutex_lock(&w->mu);
        w->running = i;
        w->running_since = t0;
        pthread_mutex_unlock(&w->mu);
        atomic_store(&w->timed_out, 0);

        w->st->h->run(&ctx, &ctx.job, w->hstate, res);

        pthread_mutex_lock(&w->mu);
        w->running = -1;
        w->running_since = 0;
        pthread_mutex_unlock(&w->mu);
        ms = sl_now_ms() - t0;

        if (res->outcome == SL_OUT_DONE) {
            done[ndone].job = j;
            done[ndone].outputs = res->outputs;
            bm->done_ms[ndone] = ms;
            ndone++;
            continue;
        }
        if (atomic_load(&w->timed_out)) {
            sl_fail(res, SL_EC_TIMEOUT, "%s: exceeded the stage timeout "
                                        "of %lld ms",
                    s->handler, (long long)s->timeout_ms);
        } else if (atomic_load(&w->stop_job[i]) &&
                   !atomic_load(&stop_requested)) {
            log_job(SL_LOG_WARN, "job abandoned: lease lost or cancelled", s,
                    j, ms, NULL, NULL, NULL, NULL);
            sl_metrics_attempt(s, SL_ATTEMPT_CANCELLED, ms);
            json_decref(res->outputs);
            continue;
        } else if (atomic_load(&stop_requested) &&
                   atomic_load(&w->stop_job[i])) {
            /* Told to stop by shutdown: give it back, no attempt used. */
            release_job(w, j, 0);
            json_decref(res->outputs);
            continue;
        }
        if (res->outcome == SL_OUT_SNOOZE) {
            char err[512];
            int rc;
            RETRYING(w, rc, sl_queue_snooze(w->conn, s, w->owner, j,
                                                  res->delay_ms, err,
                                                  sizeof err));
            if (rc == 0) sl_metrics_attempt(s, SL_ATTEMPT_SNOOZED, ms);
            if (rc < 0)
                log_job(SL_LOG_WARN, "snooze not recorded", s, j,
                        ms, "error",
                        rc == -SL_ELEASE ? "lease lost" : err, NULL, NULL);
        } else {
            fail_job(w, j, res, seed, ms);
        }
        json_decref(res->outputs);
    }
    complete_jobs(w, done, ndone, bm->done_ms, seed);
    for (int i = 0; i < ndone; i++) json_decref((json_t *)done[i].outputs);
}

/* ---- worker thread ------------------------------------------------------------------ */

static void *worker_main(void *arg) {
    worker *w = arg;
    runtime *rt = w->rt;
    stage_rt *st = w->st;
    const sl_stage *s = st->s;
    char err[512];
    unsigned seed = (unsigned)(sl_now_ms() ^ (int64_t)(intptr_t)w);
    int batch = rt->o.batch > 0 ? rt->o.batch : s->batch;
    if (batch > MAX_BATCH) batch = MAX_BATCH;
    batch_mem bm = {calloc((size_t)batch, sizeof(sl_qdone)),
                    calloc((size_t)batch, sizeof(int64_t)), {0}};
    if (!bm.done || !bm.done_ms) {
        sl_log(SL_LOG_ERROR, "out of memory", "stage", s->name, NULL);
        goto out_dead;
    }

    if (st->h->init && st->h->init(s, &w->hstate, err, sizeof err) != 0) {
        sl_log(SL_LOG_ERROR, "handler init failed; worker not started",
               "stage", s->name, "handler", s->handler, "error", err, NULL);
        goto out_dead;
    }
    w->conn = connect_worker(rt, w->owner);
    if (!w->conn) goto out_fini;

    while (!atomic_load(&stop_requested)) {
        int n = 0;
        int rc = sl_queue_claim(w->conn, s, w->owner, batch, w->jobs, &n, err,
                                sizeof err);
        if (rc == -SL_EINVAL) {
            sl_log(SL_LOG_WARN, "claim could not read inputs; claiming bare",
                   "stage", s->name, "error", err, NULL);
            rc = sl_queue_claim_bare(w->conn, s, w->owner, batch, w->jobs, &n,
                                     err, sizeof err);
        }
        if (rc < 0) {
            if (need_reconnect(w->conn, rc)) {
                sl_log(SL_LOG_WARN, "connection lost", "worker", w->owner,
                       NULL);
                reconnect(w);
                if (!w->conn) break;
            } else {
                sl_log(SL_LOG_ERROR, "claim failed", "stage", s->name,
                       "error", err, NULL);
                stage_wait(st, 1000);
            }
            continue;
        }
        if (n == 0) {
            /* Sleep until the earliest delayed job is due; every insert
             * and every return to pending/retry NOTIFYs, so nothing else
             * needs a timer. The long cap is a safety net only. */
            int64_t due = -1;
            int64_t wait = IDLE_SAFETY_MS;
            if (sl_queue_next_due(w->conn, s, &due, err, sizeof err) == 0 &&
                due >= 0 && due < wait)
                wait = due > 0 ? due : 1;
            stage_wait(st, wait);
            continue;
        }
        if (n == batch) stage_post(st); /* more may be waiting */
        pthread_mutex_lock(&w->mu);
        w->njobs = n;
        for (int i = 0; i < n; i++) atomic_store(&w->stop_job[i], 0);
        pthread_mutex_unlock(&w->mu);

        run_batch(w, &bm, &seed);

        pthread_mutex_lock(&w->mu);
        for (int i = 0; i < w->njobs; i++) sl_queue_job_clear(&w->jobs[i]);
        w->njobs = 0;
        pthread_mutex_unlock(&w->mu);
    }

    if (w->conn) PQfinish(w->conn);
    w->conn = NULL;
out_fini:
    if (st->h->fini) st->h->fini(w->hstate);
out_dead:
    free(bm.done);
    free(bm.done_ms);
    pthread_mutex_lock(&st->mu);
    st->workers--;
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* ---- control thread: listen, heartbeat, sweep ------------------------------------ */

static int listen_all(runtime *rt, PGconn *c, char *err, size_t errlen) {
    for (size_t i = 0; i < rt->nstages; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "LISTEN \"%s\"", rt->stages[i].s->channel);
        PGresult *r = PQexec(c, sql);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) {
            char m[512];
            snprintf(err, errlen, "LISTEN: %s", sl_db_error(c, r, m, sizeof m));
        }
        PQclear(r);
        if (!ok) return -SL_EDB;
    }
    return 0;
}

static PGconn *control_connect(runtime *rt) {
    char err[512];
    int64_t delay = 100;
    for (;;) {
        PGconn *c = connect_worker(rt, "control");
        if (!c) return NULL;
        if (listen_all(rt, c, err, sizeof err) == 0) {
            atomic_store(&listening, 1);
            return c;
        }
        PQfinish(c);
        sl_log(SL_LOG_WARN, "listen failed, retrying", "error", err, NULL);
        sl_sleep_ms(delay);
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
}

/* Returns non-zero when the connection failed. */
static int heartbeat(runtime *rt, PGconn *c) {
    char err[512];
    int lost = 0;
    int64_t t = sl_now_ms();
    for (size_t i = 0; i < rt->nworkers; i++) {
        worker *w = &rt->workers[i];
        const sl_stage *s = w->st->s;
        const char *ids[MAX_BATCH];
        int owned[MAX_BATCH];
        pthread_mutex_lock(&w->mu);
        int n = w->njobs;
        for (int k = 0; k < n; k++) ids[k] = w->jobs[k].id;
        if (w->running >= 0 && t - w->running_since > s->timeout_ms &&
            !atomic_load(&w->timed_out)) {
            atomic_store(&w->timed_out, 1);
            atomic_store(&w->stop_job[w->running], 1);
        }
        int rc = n > 0 && !lost ? sl_queue_heartbeat(c, s, w->owner, ids, n,
                                                   owned, err, sizeof err)
                                : -1;
        if (rc == 0) {
            for (int k = 0; k < n; k++)
                if (!owned[k]) atomic_store(&w->stop_job[k], 1);
        } else if (need_reconnect(c, rc) && n > 0) {
            lost = 1;
        }
        pthread_mutex_unlock(&w->mu);
    }
    return lost;
}

/* Returns non-zero when the connection failed. */
static int sweep(runtime *rt, PGconn *c) {
    char err[512], num[16];
    for (size_t i = 0; i < rt->nstages; i++) {
        const sl_stage *s = rt->stages[i].s;
        int rescued = 0, stale = 0;
        int rc = sl_queue_rescue(c, s, &rescued, err, sizeof err);
        if (rc < 0) {
            sl_log(SL_LOG_WARN, "sweep failed", "queue", s->queue, "error",
                   err, NULL);
            if (need_reconnect(c, rc)) return 1;
            continue;
        }
        for (int k = 0; k < rescued; k++)
            sl_metrics_attempt(s, SL_ATTEMPT_LEASE_EXPIRED, -1);
        if (rescued > 0) {
            snprintf(num, sizeof num, "%d", rescued);
            sl_log(SL_LOG_WARN, "rescued jobs with expired leases", "queue",
                   s->queue, "count", num, NULL);
        }
        if (sl_queue_reannounce(c, s, &stale, err, sizeof err) == 0 &&
            stale > 0) {
            snprintf(num, sizeof num, "%d", stale);
            sl_log(SL_LOG_INFO, "re-announced stale pending jobs", "queue",
                   s->queue, "count", num, NULL);
            stage_broadcast(&rt->stages[i]);
        }
    }
    return 0;
}

static int all_idle(runtime *rt, PGconn *c) {
    char err[256];
    for (size_t i = 0; i < rt->nstages; i++) {
        stage_rt *st = &rt->stages[i];
        pthread_mutex_lock(&st->mu);
        int busy = st->idle < st->workers || st->tokens > 0;
        pthread_mutex_unlock(&st->mu);
        if (busy) return 0;
    }
    for (size_t i = 0; i < rt->nstages; i++) {
        long n = 0;
        if (sl_queue_unfinished(c, rt->stages[i].s, &n, err, sizeof err) < 0 ||
            n > 0)
            return 0;
    }
    return 1;
}

static stage_rt *stage_by_channel(runtime *rt, const char *ch) {
    for (size_t i = 0; i < rt->nstages; i++)
        if (strcmp(rt->stages[i].s->channel, ch) == 0) return &rt->stages[i];
    return NULL;
}

/* Says what stopping will take: the jobs in flight, how long they may run
 * on, and what a second signal does. */
static void log_drain(runtime *rt) {
    int running = 0;
    for (size_t i = 0; i < rt->nworkers; i++) {
        pthread_mutex_lock(&rt->workers[i].mu);
        running += rt->workers[i].njobs;
        pthread_mutex_unlock(&rt->workers[i].mu);
    }
    char n[16], ms[24];
    snprintf(n, sizeof n, "%d", running);
    snprintf(ms, sizeof ms, "%lld", (long long)rt->o.drain_ms);
    sl_log(SL_LOG_INFO,
           "stopping: claimed jobs may finish until the drain time; then they "
           "are released without using an attempt (a second signal releases "
           "them at once)",
           "claimed_jobs", n, "drain_ms", ms, NULL);
}

static void event(runtime *rt, const char *what) {
    if (rt->o.on_event) rt->o.on_event(what, rt->o.event_arg);
}

/* Publishes the busy and free worker slots of every stage. */
static void publish_slots(runtime *rt) {
    for (size_t i = 0; i < rt->nstages; i++) {
        stage_rt *st = &rt->stages[i];
        pthread_mutex_lock(&st->mu);
        int total = st->workers, idle = st->idle;
        pthread_mutex_unlock(&st->mu);
        sl_metrics_slots(st->s, total, total - idle);
    }
}

void sl_runtime_health(sl_runtime_health_t *h) {
    h->last_tick_ms = atomic_load(&last_tick);
    h->listening = atomic_load(&listening);
}

static void control_loop(runtime *rt) {
    PGconn *c = control_connect(rt);
    int64_t hb_every = INT64_MAX;
    for (size_t i = 0; i < rt->nstages; i++)
        if (rt->stages[i].s->heartbeat_ms < hb_every)
            hb_every = rt->stages[i].s->heartbeat_ms;
    int64_t next_hb = sl_now_ms() + hb_every, next_sweep = sl_now_ms();
    int64_t drain_deadline = 0, idle_since = 0;

    event(rt, "ready");
    while (c) {
        int64_t t = sl_now_ms();
        atomic_store(&last_tick, t);
        event(rt, "tick");
        if (atomic_load(&stop_requested)) {
            if (!drain_deadline) {
                event(rt, "stopping");
                log_drain(rt);
                drain_deadline = t + rt->o.drain_ms;
                for (size_t i = 0; i < rt->nstages; i++)
                    stage_broadcast(&rt->stages[i]);
            }
            int alive = 0;
            for (size_t i = 0; i < rt->nstages; i++) {
                pthread_mutex_lock(&rt->stages[i].mu);
                alive += rt->stages[i].workers;
                pthread_mutex_unlock(&rt->stages[i].mu);
            }
            if (alive == 0) break;
            if (t >= drain_deadline || atomic_load(&stop_now)) {
                /* Past the deadline: tell every running handler to stop;
                 * their jobs are released without using an attempt. */
                for (size_t i = 0; i < rt->nworkers; i++)
                    for (int k = 0; k < MAX_BATCH; k++)
                        atomic_store(&rt->workers[i].stop_job[k], 1);
            }
        }
        int64_t wait = next_hb - t;
        if (next_sweep - t < wait) wait = next_sweep - t;
        if (rt->o.exit_when_idle || atomic_load(&stop_requested))
            wait = wait > 50 ? 50 : wait;
        if (wait > 1000) wait = 1000; /* a tick a second at least */
        if (wait < 0) wait = 0;

        struct pollfd pfd = {PQsocket(c), POLLIN, 0};
        int pr = poll(&pfd, 1, (int)wait);
        if (pr > 0 && !PQconsumeInput(c)) {
            sl_log(SL_LOG_WARN, "control connection lost, reconnecting", NULL);
            atomic_store(&listening, 0);
            PQfinish(c);
            c = control_connect(rt);
            /* Notifications may have been missed while down. */
            for (size_t i = 0; i < rt->nstages; i++)
                stage_broadcast(&rt->stages[i]);
            continue;
        }
        PGnotify *nf;
        while ((nf = PQnotifies(c)) != NULL) {
            stage_rt *st = stage_by_channel(rt, nf->relname);
            if (st) stage_post(st);
            PQfreemem(nf);
        }
        t = sl_now_ms();
        publish_slots(rt);
        int lost = 0;
        if (t >= next_hb) {
            lost |= heartbeat(rt, c);
            next_hb = t + hb_every;
        }
        if (t >= next_sweep && !lost) {
            lost |= sweep(rt, c);
            next_sweep = t + rt->sweep_ms;
        }
        if (lost || conn_lost(c)) {
            atomic_store(&listening, 0);
            PQfinish(c);
            c = control_connect(rt);
            for (size_t i = 0; i < rt->nstages; i++)
                stage_broadcast(&rt->stages[i]);
            continue;
        }
        if (rt->o.exit_when_idle && !atomic_load(&stop_requested)) {
            if (all_idle(rt, c)) {
                if (!idle_since) idle_since = t;
                /* Idle twice in a row, 100 ms apart: nothing in flight. */
                if (t - idle_since >= 100) {
                    sl_log(SL_LOG_INFO, "idle: nothing left to do", NULL);
                    atomic_store(&stop_requested, 1);
                }
            } else {
                idle_since = 0;
            }
        }
    }
    atomic_store(&listening, 0);
    if (c) PQfinish(c);
}

/* ---- start and stop --------------------------------------------------------------------- */

void sl_runtime_request_stop(void) {
    if (atomic_exchange(&stop_requested, 1)) atomic_store(&stop_now, 1);
}

static void on_signal(int sig) {
    (void)sig;
    sl_runtime_request_stop();
}

void sl_runtime_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int selected(const sl_runtime_opts *o, const sl_stage *s) {
    if (!o->only || o->nonly == 0) return 1;
    for (size_t i = 0; i < o->nonly; i++)
        if (strcmp(o->only[i], s->name) == 0 ||
            strcmp(o->only[i], s->queue) == 0 ||
            strcmp(o->only[i], s->pipeline->name) == 0)
            return 1;
    return 0;
}

int sl_runtime_run(const sl_model *m, const sl_runtime_opts *o, char *err,
                   size_t errlen) {
    int rc = 0;
    runtime rt;
    memset(&rt, 0, sizeof rt);
    rt.m = m;
    rt.o = *o;
    rt.db = sl_db_source(o->conninfo && *o->conninfo ? o->conninfo : NULL);
    rt.throttle_ms = o->progress_throttle_ms > 0 ? o->progress_throttle_ms
                                                 : 250;
    atomic_store(&stop_requested, 0);
    atomic_store(&stop_now, 0);
    if (o->worker_id && *o->worker_id) {
        snprintf(rt.worker_id, sizeof rt.worker_id, "%s", o->worker_id);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(rt.worker_id, sizeof rt.worker_id, "%s:%d", host,
                 (int)getpid());
    }

    /* Stages to run, and the check that each has a handler. */
    size_t total = 0;
    for (size_t i = 0; i < m->npipelines; i++) total += m->pipelines[i].nstages;
    rt.stages = calloc(total ? total : 1, sizeof *rt.stages);
    if (!rt.stages) return -SL_ENOMEM;
    rt.sweep_ms = INT64_MAX;
    size_t nworkers = 0;
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        for (size_t k = 0; k < p->nstages; k++) {
            const sl_stage *s = &p->stages[k];
            if (!selected(o, s)) continue;
            stage_rt *st = &rt.stages[rt.nstages++];
            st->s = s;
            st->h = sl_handler_find(s->handler);
            if (!st->h) {
                snprintf(err, errlen, "stage %s: no handler named '%s'",
                         s->name, s->handler);
                rc = -SL_EINVAL;
                goto out_free;
            }
            pthread_mutex_init(&st->mu, NULL);
            pthread_condattr_t ca;
            pthread_condattr_init(&ca);
            pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
            pthread_cond_init(&st->cv, &ca);
            pthread_condattr_destroy(&ca);
            st->workers = o->concurrency > 0 ? o->concurrency : s->concurrency;
            nworkers += (size_t)st->workers;
            if (p->sweep_interval_ms < rt.sweep_ms)
                rt.sweep_ms = p->sweep_interval_ms;
        }
    }
    if (rt.nstages == 0) {
        snprintf(err, errlen, "no stage selected to run");
        rc = -SL_EINVAL;
        goto out_free;
    }

    /* Fail fast when the database cannot be reached at all. */
    PGconn *probe = sl_db_connect(rt.db, err, errlen);
    if (!probe) {
        rc = -SL_EDB;
        goto out_free;
    }
    if (sl_queue_prepare(probe, m, err, errlen) != 0) {
        PQfinish(probe);
        rc = -SL_EDB;
        goto out_free;
    }
    PQfinish(probe);

    rt.workers = calloc(nworkers, sizeof *rt.workers);
    if (!rt.workers) {
        rc = -SL_ENOMEM;
        goto out_free;
    }
    rt.nworkers = nworkers;
    size_t wi = 0;
    for (size_t i = 0; i < rt.nstages; i++) {
        for (int k = 0; k < rt.stages[i].workers; k++, wi++) {
            worker *w = &rt.workers[wi];
            w->rt = &rt;
            w->st = &rt.stages[i];
            w->index = k;
            w->running = -1;
            pthread_mutex_init(&w->mu, NULL);
            snprintf(w->owner, sizeof w->owner, "%s:%s:%d", rt.worker_id,
                     rt.stages[i].s->name, k);
        }
    }
    char nw[16];
    snprintf(nw, sizeof nw, "%zu", nworkers);
    sl_log(SL_LOG_INFO, "runtime started", "worker", rt.worker_id, "threads",
           nw, NULL);
    for (size_t i = 0; i < nworkers; i++)
        pthread_create(&rt.workers[i].th, NULL, worker_main, &rt.workers[i]);

    control_loop(&rt);

    atomic_store(&stop_requested, 1);
    for (size_t i = 0; i < rt.nstages; i++) stage_broadcast(&rt.stages[i]);
    for (size_t i = 0; i < nworkers; i++) pthread_join(rt.workers[i].th, NULL);
    for (size_t i = 0; i < nworkers; i++)
        pthread_mutex_destroy(&rt.workers[i].mu);
    sl_log(SL_LOG_INFO, "runtime stopped", "worker", rt.worker_id, NULL);

out_free:
    for (size_t i = 0; i < rt.nstages; i++) {
        if (!rt.stages[i].h) continue;
        pthread_mutex_destroy(&rt.stages[i].mu);
        pthread_cond_destroy(&rt.stages[i].cv);
    }
    free(rt.workers);
    free(rt.stages);
    return rc;
}
