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
#include "runtime_priv.h"

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

#include "clock.h"
#include "db.h"
#include "error.h"
#include "handler.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "schema.h"
#include "text.h"

#define IDLE_SAFETY_MS 30000

atomic_int sl_rt__stop_requested;
atomic_int sl_rt__stop_now;
atomic_llong sl_rt__last_tick;
atomic_int sl_rt__listening;
atomic_llong sl_rt__fenced_at;

/* ---- connections ------------------------------------------------------------
 */


PGconn *sl_rt__connect_worker(runtime *rt, const char *who, int64_t stmt_ms) {
    int64_t delay = 100;
    char err[512];
    for (;;) {
        PGconn *c = sl_db_connect(rt->db, err, sizeof err);
        if (c && rt->o.async_commit) {
            PGresult *r = PQexec(c, "SET synchronous_commit = off");
            PQclear(r);
        }
        if (c && sl_db_bound_statements(c, stmt_ms, err, sizeof err) != 0) {
            PQfinish(c);
            c = NULL;
        }
        if (c && sl_queue_prepare_stages(c, rt->m, rt->o.only,
                                         rt->o.only ? rt->o.nonly : 0, err,
                                         sizeof err) == 0)
            return c;
        if (c) PQfinish(c);
        if (atomic_load(&sl_rt__stop_now)) return NULL;
        sl_log(SL_LOG_WARN, "database unavailable, retrying", "who", who,
               "error", err, NULL);
        sl_sleep_ms(delay);
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
}

int sl_rt__conn_lost(PGconn *c) {
    return !c || PQstatus(c) != CONNECTION_OK;
}

/* Whether rc (from queue.h) means the connection must be re-established. */
int sl_rt__need_reconnect(PGconn *c, int rc) {
    return rc == -SL_ECONN || (rc < 0 && sl_rt__conn_lost(c));
}

static void reconnect(worker *w) {
    if (w->conn) PQfinish(w->conn);
    w->conn = sl_rt__connect_worker(w->rt, w->owner, WORKER_STATEMENT_MS);
    if (w->conn) {
        sl_metrics_reconnect();
        sl_log(SL_LOG_INFO, "reconnected", "worker", w->owner, NULL);
    }
}

/* ---- waking
 * ------------------------------------------------------------------ */

void sl_rt__stage_post(stage_rt *st) {
    pthread_mutex_lock(&st->mu);
    if (st->tokens < st->workers) st->tokens++;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

void sl_rt__stage_broadcast(stage_rt *st) {
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
    while (st->tokens == 0 && !atomic_load(&sl_rt__stop_requested)) {
        if (pthread_cond_timedwait(&st->cv, &st->mu, &dl) == ETIMEDOUT) break;
    }
    if (st->tokens > 0) st->tokens--;
    st->idle--;
    pthread_mutex_unlock(&st->mu);
}

/* ---- the handler context ----------------------------------------------------
 */

int sl_ctx_checkpoint(sl_ctx *ctx, json_t *checkpoint) {
    char err[512];
    worker *w = ctx->w;
    int rc =
        sl_queue_checkpoint(w->conn, w->st->s, w->owner, &w->jobs[ctx->idx],
                            checkpoint, err, sizeof err);
    if (sl_rt__need_reconnect(w->conn, rc)) {
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
    int rc = sl_queue_progress(w->conn, w->st->s, w->owner, &w->jobs[ctx->idx],
                               pct, detail, err, sizeof err);
    if (rc == -SL_ELEASE)
        atomic_store(&w->stop_job[ctx->idx], 1);
    else if (sl_rt__need_reconnect(w->conn, rc))
        reconnect(w);
}

void sl_rt__self_fence(worker *w, int64_t now) {
    long long was = 0;
    atomic_compare_exchange_strong(&sl_rt__fenced_at, &was, now);
    for (int k = 0; k < MAX_BATCH; k++)
        if (atomic_exchange(&w->stop_job[k], 1) == 0 && k < w->njobs) {
            char late[24];
            snprintf(late, sizeof late, "%lld",
                     (long long)(now - atomic_load(&w->lease_until)));
            sl_log(SL_LOG_WARN,
                   "lease not renewed before it ran out: handler told to "
                   "stop; no new work until the database answers",
                   "job", w->jobs[k].id, "stage", w->st->s->name, "late_ms",
                   late, NULL);
        }
}

/* The handler's own thread checks the lease, so a control thread blocked
 * on a dead socket cannot keep a handler running past it. */
int sl_ctx_should_stop(sl_ctx *ctx) {
    worker *w = ctx->w;
    if (!atomic_load(&w->stop_job[ctx->idx])) {
        int64_t t = sl_now_ms();
        if (t >= atomic_load(&w->lease_until)) sl_rt__self_fence(w, t);
    }
    return atomic_load(&w->stop_job[ctx->idx]) ||
           atomic_load(&sl_rt__stop_now);
}

PGconn *sl_ctx_conn(sl_ctx *ctx) {
    return ctx->w->conn;
}

int sl_ctx_act_for_requester(sl_ctx *ctx, PGconn *c, char *err, size_t errlen) {
    worker *w = ctx->w;
    char user[40];
    assert(c && PQtransactionStatus(c) == PQTRANS_INTRANS);
    int rc =
        sl_queue_requester(w->conn, w->st->s, ctx->job.id, user, err, errlen);
    if (rc < 0 || !user[0]) return rc;
    /* The same settings PostgREST sets for a request, so auth.uid() (ours
     * or Supabase's) answers this user; then the application role, so
     * every policy applies. Both end with the transaction. */
    char claims[128];
    snprintf(claims, sizeof claims,
             "{\"sub\": \"%s\", \"role\": "
             "\"authenticated\"}",
             user);
    const char *vals[2] = {user, claims};
    PGresult *r =
        PQexecParams(c,
                     "SELECT set_config('request.jwt.claim.sub', $1, true),"
                     " set_config('request.jwt.claims', $2, true),"
                     " set_config('role', '" SL_APP_ROLE "', true)",
                     2, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m[512];
        snprintf(err, errlen, "acting for user %s as " SL_APP_ROLE ": %s", user,
                 sl_db_error(c, r, m, sizeof m));
        rc = PQstatus(c) == CONNECTION_OK ? -SL_EDB : -SL_ECONN;
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

/* ---- policy
 * -------------------------------------------------------------------- */

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

/* ---- running one batch
 * ----------------------------------------------------------- */

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
#define RETRYING(w, rc, call)                                                  \
    do {                                                                       \
        rc = (call);                                                           \
        for (int tries_ = 0; tries_ < 20 && !atomic_load(&sl_rt__stop_now);    \
             tries_++) {                                                       \
            if (sl_rt__need_reconnect((w)->conn, rc)) {                        \
                reconnect(w);                                                  \
                if (!(w)->conn) break;                                         \
            } else if (rc == -SL_EDB && tries_ < 5) {                          \
                sl_sleep_ms(50LL << tries_);                                   \
            } else {                                                           \
                break;                                                         \
            }                                                                  \
            rc = (call);                                                       \
        }                                                                      \
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
        delay =
            sl_runtime_backoff_ms(&s->retry, j->attempts, jitter_unit(seed));
        if (res->delay_ms > delay) delay = res->delay_ms;
    }
    if (res->message[0])
        sl_text_copy(msg, sizeof msg, res->message,
                     strnlen(res->message, sizeof res->message));
    else
        snprintf(msg, sizeof msg, "handler failed");
    const char *cls = sl_errclass_name(res->errclass);
    int rc;
    RETRYING(w, rc,
             sl_queue_fail(w->conn, s, w->owner, j, retry, delay, cls, msg, err,
                           sizeof err));
    for (int fallback = 1; rc < 0 && rc != -SL_ELEASE && fallback <= 2 &&
                           !atomic_load(&sl_rt__stop_now);
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
        RETRYING(w, rc,
                 sl_queue_fail(w->conn, s, w->owner, j, retry, delay, cls, msg,
                               err, sizeof err));
    }
    if (rc == -SL_ELEASE)
        log_job(SL_LOG_WARN, "failure not recorded: lease lost (fenced)", s, j,
                ms, "error", msg, NULL, NULL);
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
    RETRYING(w, rc,
             sl_queue_snooze(w->conn, w->st->s, w->owner, j, delay, err,
                             sizeof err));
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
    RETRYING(w, rc,
             sl_queue_complete(w->conn, s, w->owner, done, n, err, sizeof err));
    if (rc == -SL_EINVAL && n > 1) {
        for (int i = 0; i < n; i++)
            complete_jobs(w, &done[i], 1, &ms[i], seed);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (rc == -SL_EINVAL) {
            sl_result res;
            memset(&res, 0, sizeof res);
            sl_fail(&res, SL_EC_INVALID_INPUT, "cannot store outputs: %s", err);
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
            for (size_t k = 0; k < s->nnext; k++)
                sl_metrics_enqueued(s->next[k].stage, 1);
            if (s->nnext == 0 && s->pipeline->has_subject)
                sl_metrics_subject_done(s->pipeline, done[i].subject_ms);
            log_job(SL_LOG_INFO, "job done", s, done[i].job, ms[i], NULL, NULL,
                    NULL, NULL);
        }
    }
}

/* Per-worker scratch for one batch, sized to the batch once. */
typedef struct batch_mem {
    sl_qdone *done;
    int64_t *done_ms;
    sl_result res;
    int64_t handler_us; /* the batch's handler calls, in all */
    int ran;            /* how many handler calls that is */
} batch_mem;

/* The adaptive batch, for a stage without `batch:` when `run` has no -b:
 * the claim size follows the handlers' duration so that a batch holds
 * its last job back by about ADAPT_BUDGET_US of batch-mates' handler
 * time at most. It starts at 1; after each batch it becomes the budget
 * divided by the batch's mean handler time (1..ADAPT_MAX): it shrinks at
 * once when handlers get longer, and grows (at most doubling per claim)
 * only while claims come back full, i.e. while jobs are waiting.
 * Sub-millisecond handlers so reach ADAPT_MAX within a few claims; a
 * handler of ADAPT_BUDGET_US or more runs one job per claim, as with
 * `batch: 1`. Leases, fencing and completion are those of any batch. */
#define ADAPT_MAX 100
#define ADAPT_BUDGET_US 10000

static int adapt_batch(int cur, int claimed, const batch_mem *bm) {
    if (bm->ran <= 0) return cur;
    int64_t per = bm->handler_us / bm->ran;
    int64_t want = per > 0 ? ADAPT_BUDGET_US / per : ADAPT_MAX;
    if (want < 1) want = 1;
    if (want > ADAPT_MAX) want = ADAPT_MAX;
    if (want <= cur) return (int)want;
    if (claimed < cur) return cur; /* no backlog: no reason to grow */
    return want < 2 * (int64_t)cur ? (int)want : 2 * cur;
}

static void run_batch(worker *w, batch_mem *bm, unsigned *seed) {
    const sl_stage *s = w->st->s;
    sl_qdone *done = bm->done;
    int ndone = 0;

    for (int i = 0; i < w->njobs; i++) {
        sl_qjob *j = &w->jobs[i];
        sl_result *res = &bm->res;
        int64_t ms;
        memset(res, 0, sizeof *res);
        if (atomic_load(&sl_rt__stop_requested)) {
            /* Shutting down: jobs not yet started go back at once. */
            release_job(w, j, 0);
            continue;
        }
        if (atomic_load(&w->stop_job[i])) {
            /* Cancelled or rescued before it started: never run it. */
            log_job(SL_LOG_INFO, "job skipped: no longer ours", s, j, 0, NULL,
                    NULL, NULL, NULL);
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

        int64_t t0 = sl_now_ms(), u0 = sl_now_us();
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
        bm->handler_us += sl_now_us() - u0;
        bm->ran++;

        if (res->outcome == SL_OUT_DONE) {
            done[ndone].job = j;
            done[ndone].outputs = res->outputs;
            bm->done_ms[ndone] = ms;
            ndone++;
            continue;
        }
        if (atomic_load(&w->timed_out)) {
            sl_fail(res, SL_EC_TIMEOUT,
                    "%s: exceeded the stage timeout "
                    "of %lld ms",
                    s->handler, (long long)s->timeout_ms);
        } else if (atomic_load(&w->stop_job[i]) &&
                   !atomic_load(&sl_rt__stop_requested)) {
            log_job(SL_LOG_WARN, "job abandoned: lease lost or cancelled", s, j,
                    ms, NULL, NULL, NULL, NULL);
            sl_metrics_attempt(s, SL_ATTEMPT_CANCELLED, ms);
            json_decref(res->outputs);
            continue;
        } else if (atomic_load(&sl_rt__stop_requested) &&
                   atomic_load(&w->stop_job[i])) {
            /* Told to stop by shutdown: give it back, no attempt used. */
            release_job(w, j, 0);
            json_decref(res->outputs);
            continue;
        }
        if (res->outcome == SL_OUT_SNOOZE) {
            char err[512];
            int rc;
            RETRYING(w, rc,
                     sl_queue_snooze(w->conn, s, w->owner, j, res->delay_ms,
                                     err, sizeof err));
            if (rc == 0) sl_metrics_attempt(s, SL_ATTEMPT_SNOOZED, ms);
            if (rc < 0)
                log_job(SL_LOG_WARN, "snooze not recorded", s, j, ms, "error",
                        rc == -SL_ELEASE ? "lease lost" : err, NULL, NULL);
        } else {
            fail_job(w, j, res, seed, ms);
        }
        json_decref(res->outputs);
    }
    complete_jobs(w, done, ndone, bm->done_ms, seed);
    for (int i = 0; i < ndone; i++)
        json_decref((json_t *)done[i].outputs);
}

/* ---- worker thread
 * ------------------------------------------------------------------ */

static void *worker_main(void *arg) {
    worker *w = arg;
    runtime *rt = w->rt;
    stage_rt *st = w->st;
    const sl_stage *s = st->s;
    char err[512];
    unsigned seed = (unsigned)(sl_now_ms() ^ (int64_t)(intptr_t)w);
    int pinned = rt->o.batch > 0 ? rt->o.batch : s->batch;
    if (pinned > MAX_BATCH) pinned = MAX_BATCH;
    int cap = pinned > 0 ? pinned : ADAPT_MAX, batch = pinned > 0 ? pinned : 1;
    batch_mem bm = {calloc((size_t)cap, sizeof(sl_qdone)),
                    calloc((size_t)cap, sizeof(int64_t)),
                    {0}, 0, 0};
    if (!bm.done || !bm.done_ms) {
        sl_log(SL_LOG_ERROR, "out of memory", "stage", s->name, NULL);
        goto out_dead;
    }

    if (st->h->init && st->h->init(s, &w->hstate, err, sizeof err) != 0) {
        sl_log(SL_LOG_ERROR, "handler init failed; worker not started", "stage",
               s->name, "handler", s->handler, "error", err, NULL);
        goto out_dead;
    }
    w->conn = sl_rt__connect_worker(rt, w->owner, WORKER_STATEMENT_MS);
    if (!w->conn) goto out_fini;

    while (!atomic_load(&sl_rt__stop_requested)) {
        int n = 0;
        if (atomic_load(&sl_rt__fenced_at) || atomic_load(&st->paused)) {
            /* Self-fenced: no lease taken now could be renewed. Paused:
             * the control thread broadcasts on resume. */
            stage_wait(st, 200);
            continue;
        }
        int64_t t_claim = sl_now_ms();
        int rc = sl_queue_claim(w->conn, s, w->owner, batch, w->jobs, &n, err,
                                sizeof err);
        if (rc == -SL_EINVAL) {
            sl_log(SL_LOG_WARN, "claim could not read inputs; claiming bare",
                   "stage", s->name, "error", err, NULL);
            rc = sl_queue_claim_bare(w->conn, s, w->owner, batch, w->jobs, &n,
                                     err, sizeof err);
        }
        if (rc < 0) {
            if (sl_rt__need_reconnect(w->conn, rc)) {
                sl_log(SL_LOG_WARN, "connection lost", "worker", w->owner,
                       NULL);
                reconnect(w);
                if (!w->conn) break;
            } else {
                sl_log(SL_LOG_ERROR, "claim failed", "stage", s->name, "error",
                       err, NULL);
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
        if (n == batch) sl_rt__stage_post(st); /* more may be waiting */
        for (int i = 0; i < n; i++) sl_metrics_wait(s, w->jobs[i].wait_ms);
        pthread_mutex_lock(&w->mu);
        w->njobs = n;
        w->batch_gen++;
        for (int i = 0; i < n; i++)
            atomic_store(&w->stop_job[i], 0);
        /* The claim set locked_until from the server's clock after it
         * was sent: counting from the sending is never late. */
        atomic_store(&w->lease_until, t_claim + s->lease_ms);
        pthread_mutex_unlock(&w->mu);

        bm.handler_us = 0;
        bm.ran = 0;
        run_batch(w, &bm, &seed);
        if (!pinned) batch = adapt_batch(batch, n, &bm);

        pthread_mutex_lock(&w->mu);
        for (int i = 0; i < w->njobs; i++)
            sl_queue_job_clear(&w->jobs[i]);
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

/* ---- start and stop
 * --------------------------------------------------------------------- */

void sl_runtime_request_stop(void) {
    if (atomic_exchange(&sl_rt__stop_requested, 1))
        atomic_store(&sl_rt__stop_now, 1);
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
    return sl_stage_selected(s, o->only, o->only ? o->nonly : 0);
}

/* rt->worker_id: --worker-id, else "<host>:<pid>". */
static void name_process(runtime *rt) {
    if (rt->o.worker_id && *rt->o.worker_id) {
        snprintf(rt->worker_id, sizeof rt->worker_id, "%s", rt->o.worker_id);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(rt->worker_id, sizeof rt->worker_id, "%s:%d", host,
                 (int)getpid());
    }
}

/* Fills rt->workers (allocated, rt->nworkers long) stage by stage. */
static void init_workers(runtime *rt) {
    size_t wi = 0;
    for (size_t i = 0; i < rt->nstages; i++) {
        for (int k = 0; k < rt->stages[i].workers; k++, wi++) {
            worker *w = &rt->workers[wi];
            w->rt = rt;
            w->st = &rt->stages[i];
            w->index = k;
            w->running = -1;
            pthread_mutex_init(&w->mu, NULL);
            snprintf(w->owner, sizeof w->owner, "%s:%s:%d", rt->worker_id,
                     rt->stages[i].s->name, k);
        }
    }
    assert(wi == rt->nworkers);
}

int sl_runtime_run(const sl_model *m, const sl_runtime_opts *o, char *err,
                   size_t errlen) {
    int rc = 0;
    runtime rt;
    memset(&rt, 0, sizeof rt);
    rt.m = m;
    rt.o = *o;
    rt.db = sl_db_source(o->conninfo && *o->conninfo ? o->conninfo : NULL);
    rt.throttle_ms =
        o->progress_throttle_ms > 0 ? o->progress_throttle_ms : 250;
    atomic_store(&sl_rt__stop_requested, 0);
    atomic_store(&sl_rt__stop_now, 0);
    atomic_store(&sl_rt__fenced_at, 0);
    name_process(&rt);

    /* Stages to run, and the check that each has a handler. */
    size_t total = 0;
    for (size_t i = 0; i < m->npipelines; i++)
        total += m->pipelines[i].nstages;
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
            /* A heartbeat slower than a lease is useless anyway. */
            if (!rt.control_statement_ms ||
                s->lease_ms < rt.control_statement_ms)
                rt.control_statement_ms = s->lease_ms;
        }
    }
    if (rt.control_statement_ms < 1000) rt.control_statement_ms = 1000;
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
    if (sl_queue_prepare_stages(probe, m, o->only, o->only ? o->nonly : 0,
                                err, errlen) != 0) {
        PQfinish(probe);
        rc = -SL_EDB;
        goto out_free;
    }
    /* Before any worker claims: a paused stage starts paused. */
    sl_rt__load_paused(&rt, probe);
    PQfinish(probe);

    rt.workers = calloc(nworkers, sizeof *rt.workers);
    if (!rt.workers) {
        rc = -SL_ENOMEM;
        goto out_free;
    }
    rt.nworkers = nworkers;
    init_workers(&rt);
    char nw[16];
    snprintf(nw, sizeof nw, "%zu", nworkers);
    sl_log(SL_LOG_INFO, "runtime started", "worker", rt.worker_id, "threads",
           nw, NULL);
    for (size_t i = 0; i < nworkers; i++)
        pthread_create(&rt.workers[i].th, NULL, worker_main, &rt.workers[i]);

    sl_rt__control_loop(&rt);

    atomic_store(&sl_rt__stop_requested, 1);
    for (size_t i = 0; i < rt.nstages; i++)
        sl_rt__stage_broadcast(&rt.stages[i]);
    for (size_t i = 0; i < nworkers; i++)
        pthread_join(rt.workers[i].th, NULL);
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
