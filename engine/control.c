/* control.c - the runtime's control thread: one connection that LISTENs on
 * every stage's channel and wakes workers, extends the leases of running
 * jobs (heartbeats), rescues jobs whose lease expired and re-announces
 * pending jobs whose NOTIFY was missed (the sweep), publishes liveness and
 * worker slots, and drives the drain on stop. */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "db.h"
#include "error.h"
#include "log.h"
#include "buf.h"
#include "version.h"
#include "metrics.h"
#include "ops.h"
#include "runtime_priv.h"

/* ---- control thread: listen, heartbeat, sweep
 * ------------------------------------ */

static int listen_all(runtime *rt, PGconn *c, char *err, size_t errlen) {
    for (size_t i = 0; i <= rt->nstages; i++) {
        char sql[160];
        /* The stages' channels, then the one of pause and resume. */
        snprintf(sql, sizeof sql, "LISTEN \"%s\"",
                 i < rt->nstages ? rt->stages[i].s->channel : SL_OPS_CHANNEL);
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
        PGconn *c =
            sl_rt__connect_worker(rt, "control", rt->control_statement_ms);
        if (!c) return NULL;
        if (listen_all(rt, c, err, sizeof err) == 0) {
            atomic_store(&sl_rt__listening, 1);
            return c;
        }
        PQfinish(c);
        sl_log(SL_LOG_WARN, "listen failed, retrying", "error", err, NULL);
        sl_sleep_ms(delay);
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
}

/* Returns non-zero when the connection failed. The statement runs with
 * the worker's lock released: on a dead socket it can block until TCP
 * gives up, and the worker must not wait on that to finish its batch. */
static int heartbeat(runtime *rt, PGconn *c) {
    char err[512];
    static char idbuf[MAX_BATCH][40]; /* only the control thread */
    int lost = 0;
    int64_t t = sl_now_ms();
    for (size_t i = 0; i < rt->nworkers; i++) {
        worker *w = &rt->workers[i];
        const sl_stage *s = w->st->s;
        const char *ids[MAX_BATCH];
        int owned[MAX_BATCH];
        pthread_mutex_lock(&w->mu);
        int n = w->njobs;
        unsigned gen = w->batch_gen;
        for (int k = 0; k < n; k++) {
            snprintf(idbuf[k], sizeof idbuf[k], "%s", w->jobs[k].id);
            ids[k] = idbuf[k];
        }
        if (w->running >= 0 && t - w->running_since > s->timeout_ms &&
            !atomic_load(&w->timed_out)) {
            atomic_store(&w->timed_out, 1);
            atomic_store(&w->stop_job[w->running], 1);
        }
        pthread_mutex_unlock(&w->mu);
        if (n == 0) continue;
        int64_t sent = sl_now_ms();
        int rc = !lost ? sl_queue_heartbeat(c, s, w->owner, ids, n, owned, err,
                                            sizeof err)
                       : -1;
        pthread_mutex_lock(&w->mu);
        if (gen != w->batch_gen) {
            /* The batch ended meanwhile: nothing to apply. */
        } else if (rc == 0) {
            atomic_store(&w->lease_until, sent + s->lease_ms);
            for (int k = 0; k < n; k++)
                if (!owned[k]) atomic_store(&w->stop_job[k], 1);
        } else {
            int64_t now = sl_now_ms();
            if (now >= atomic_load(&w->lease_until))
                sl_rt__self_fence(w, now);
        }
        if (rc != 0 && sl_rt__need_reconnect(c, rc)) lost = 1;
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
            sl_log(SL_LOG_WARN, "sweep failed", "queue", s->queue, "error", err,
                   NULL);
            if (sl_rt__need_reconnect(c, rc)) return 1;
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
            sl_rt__stage_broadcast(&rt->stages[i]);
        }
    }
    return 0;
}

int sl_rt__load_paused(runtime *rt, PGconn *c) {
    static int warned; /* only the control thread, after the first call */
    char err[512];
    PGresult *r = NULL;
    int rc = sl_ops_paused(c, &r, err, sizeof err);
    if (rc != 0 && rc != -SL_ENOTFOUND) {
        sl_log(SL_LOG_WARN, "cannot read paused stages", "error", err, NULL);
        return rc == -SL_ECONN || sl_rt__conn_lost(c);
    }
    if (rc == -SL_ENOTFOUND && !warned++)
        sl_log(SL_LOG_WARN, "sluice.paused is missing (run `sluice migrate`):"
               " no stage can be paused", NULL);
    for (size_t i = 0; i < rt->nstages; i++) {
        stage_rt *st = &rt->stages[i];
        int now = sl_ops_is_paused(r, st->s);
        int was = atomic_exchange(&st->paused, now);
        if (was != now)
            sl_log(SL_LOG_INFO, now ? "stage paused" : "stage resumed",
                   "pipeline", st->s->pipeline->name, "stage", st->s->name,
                   NULL);
        if (was && !now) sl_rt__stage_broadcast(st);
    }
    PQclear(r);
    return 0;
}

/* Writes this process's row in sluice.workers (ops.h); a failure is
 * logged once and never stops the workers. Returns non-zero when the
 * connection failed. */
static int registry_beat(runtime *rt, PGconn *c) {
    static int warned;
    sl_buf st;
    sl_buf_init(&st);
    sl_buf_puts(&st, "[");
    int threads = 0;
    for (size_t i = 0; i < rt->nstages; i++) {
        sl_buf_printf(&st, "%s\"%s.%s\"", i ? "," : "",
                      rt->stages[i].s->pipeline->name, rt->stages[i].s->name);
        threads += rt->stages[i].workers;
    }
    sl_buf_puts(&st, "]");
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    sl_ops_worker w = {.id = rt->worker_id,
                       .host = host,
                       .pid = (int)getpid(),
                       .version = SL_VERSION,
                       .stages = sl_buf_failed(&st) ? "[]" : sl_buf_str(&st),
                       .concurrency = threads};
    char err[512];
    int rc = sl_ops_worker_beat(c, &w, err, sizeof err);
    sl_buf_free(&st);
    if (rc != 0 && !warned++)
        sl_log(SL_LOG_WARN, "cannot write the worker registry (sluice.workers)",
               "error", err, NULL);
    return rc != 0 && sl_rt__conn_lost(c);
}

/* The database answered a round that began at t, after the fence was
 * raised at fenced_at: workers may claim again. Notifications may have
 * been missed meanwhile, so every stage is woken. */
static void unfence(runtime *rt, long long fenced_at, int64_t t) {
    if (t < fenced_at ||
        !atomic_compare_exchange_strong(&sl_rt__fenced_at, &fenced_at, 0))
        return;
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)(sl_now_ms() - fenced_at));
    sl_log(SL_LOG_INFO, "database answers again: taking new work",
           "fenced_ms", ms, NULL);
    for (size_t i = 0; i < rt->nstages; i++)
        sl_rt__stage_broadcast(&rt->stages[i]);
}

/* The advisory lock of the one process that applies retention
 * ("sluice-retention"). */
#define RETENTION_LOCK_KEY 7310838339472541698LL
/* How long one sweep may spend deleting, so that heartbeats (the same
 * thread) are never late by more than this. */
#define RETENTION_BUDGET_MS 200

/* Applies the stages' retention policies when this process is the one
 * elected to (a session advisory lock on the control connection), in
 * batches of SL_PURGE_BATCH within RETENTION_BUDGET_MS; what is left
 * waits for the next sweep. Workers never wait: the deletes skip locked
 * rows and touch only finished jobs. Returns non-zero when the connection
 * failed. */
static int retention(runtime *rt, PGconn *c) {
    int any = 0;
    for (size_t i = 0; i < rt->nstages; i++)
        any |= sl_queue_has_retention(rt->stages[i].s);
    if (!any) return 0;
    int elected = sl_db_elect(c, RETENTION_LOCK_KEY);
    if (elected <= 0) return elected < 0 && sl_rt__conn_lost(c);
    int64_t deadline = sl_now_ms() + RETENTION_BUDGET_MS;
    char err[512], num[24];
    for (size_t i = 0; i < rt->nstages; i++) {
        const sl_stage *s = rt->stages[i].s;
        int64_t left = deadline - sl_now_ms();
        if (left <= 0) break;
        if (!sl_queue_has_retention(s)) continue;
        long counts[SL_RETAIN__COUNT];
        int more = 0;
        int rc = sl_queue_purge(c, s, 0, left, counts, &more, err, sizeof err);
        if (rc < 0) {
            sl_log(SL_LOG_WARN, "retention failed", "queue", s->queue,
                   "error", err, NULL);
            if (sl_rt__need_reconnect(c, rc)) return 1;
            continue;
        }
        long total = 0;
        for (int k = 0; k < SL_RETAIN__COUNT; k++)
            total += counts[k];
        if (total > 0) {
            snprintf(num, sizeof num, "%ld", total);
            sl_log(SL_LOG_DEBUG, "removed finished jobs past retention",
                   "queue", s->queue, "count", num, NULL);
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
    h->last_tick_ms = atomic_load(&sl_rt__last_tick);
    h->listening = atomic_load(&sl_rt__listening);
}

void sl_rt__control_loop(runtime *rt) {
    PGconn *c = control_connect(rt);
    int64_t hb_every = INT64_MAX;
    for (size_t i = 0; i < rt->nstages; i++)
        if (rt->stages[i].s->heartbeat_ms < hb_every)
            hb_every = rt->stages[i].s->heartbeat_ms;
    int64_t next_hb = sl_now_ms() + hb_every, next_sweep = sl_now_ms();
    int64_t drain_deadline = 0, idle_since = 0, next_beat = sl_now_ms();

    event(rt, "ready");
    while (c) {
        int64_t t = sl_now_ms();
        atomic_store(&sl_rt__last_tick, t);
        event(rt, "tick");
        if (atomic_load(&sl_rt__stop_requested)) {
            if (!drain_deadline) {
                event(rt, "stopping");
                log_drain(rt);
                drain_deadline = t + rt->o.drain_ms;
                for (size_t i = 0; i < rt->nstages; i++)
                    sl_rt__stage_broadcast(&rt->stages[i]);
            }
            int alive = 0;
            for (size_t i = 0; i < rt->nstages; i++) {
                pthread_mutex_lock(&rt->stages[i].mu);
                alive += rt->stages[i].workers;
                pthread_mutex_unlock(&rt->stages[i].mu);
            }
            if (alive == 0) break;
            if (t >= drain_deadline || atomic_load(&sl_rt__stop_now)) {
                /* Past the deadline: tell every running handler to stop;
                 * their jobs are released without using an attempt. */
                for (size_t i = 0; i < rt->nworkers; i++)
                    for (int k = 0; k < MAX_BATCH; k++)
                        atomic_store(&rt->workers[i].stop_job[k], 1);
            }
        }
        int64_t wait = next_hb - t;
        if (next_sweep - t < wait) wait = next_sweep - t;
        if (rt->o.exit_when_idle || atomic_load(&sl_rt__stop_requested))
            wait = wait > 50 ? 50 : wait;
        if (wait > 1000) wait = 1000; /* a tick a second at least */
        if (wait < 0) wait = 0;

        struct pollfd pfd = {PQsocket(c), POLLIN, 0};
        int pr = poll(&pfd, 1, (int)wait);
        if (pr > 0 && !PQconsumeInput(c)) {
            sl_log(SL_LOG_WARN, "control connection lost, reconnecting", NULL);
            atomic_store(&sl_rt__listening, 0);
            PQfinish(c);
            c = control_connect(rt);
            if (c) sl_rt__load_paused(rt, c);
            /* Notifications may have been missed while down. */
            for (size_t i = 0; i < rt->nstages; i++)
                sl_rt__stage_broadcast(&rt->stages[i]);
            continue;
        }
        PGnotify *nf;
        int lost = 0;
        while ((nf = PQnotifies(c)) != NULL) {
            /* A pause is applied before the stage's later NOTIFYs. */
            if (strcmp(nf->relname, SL_OPS_CHANNEL) == 0)
                lost |= sl_rt__load_paused(rt, c);
            stage_rt *st = stage_by_channel(rt, nf->relname);
            if (st) sl_rt__stage_post(st);
            PQfreemem(nf);
        }
        t = sl_now_ms();
        publish_slots(rt);
        if (t >= next_beat && !lost) {
            lost |= registry_beat(rt, c);
            next_beat = t + SL_OPS_BEAT_MS;
        }
        int64_t fenced = atomic_load(&sl_rt__fenced_at);
        if (fenced) next_sweep = t; /* a round trip proves the way back */
        if (t >= next_hb) {
            lost |= heartbeat(rt, c);
            next_hb = t + hb_every;
        }
        if (t >= next_sweep && !lost) {
            lost |= sweep(rt, c);
            if (!lost) lost |= sl_rt__load_paused(rt, c);
            if (!lost) lost |= retention(rt, c);
            next_sweep = t + rt->sweep_ms;
            if (!lost && fenced) unfence(rt, fenced, t);
        }
        if (lost || sl_rt__conn_lost(c)) {
            atomic_store(&sl_rt__listening, 0);
            PQfinish(c);
            c = control_connect(rt);
            if (c) sl_rt__load_paused(rt, c);
            for (size_t i = 0; i < rt->nstages; i++)
                sl_rt__stage_broadcast(&rt->stages[i]);
            continue;
        }
        if (rt->o.exit_when_idle && !atomic_load(&sl_rt__stop_requested)) {
            if (all_idle(rt, c)) {
                if (!idle_since) idle_since = t;
                /* Idle twice in a row, 100 ms apart: nothing in flight. */
                if (t - idle_since >= 100) {
                    sl_log(SL_LOG_INFO, "idle: nothing left to do", NULL);
                    atomic_store(&sl_rt__stop_requested, 1);
                }
            } else {
                idle_since = 0;
            }
        }
    }
    atomic_store(&sl_rt__listening, 0);
    if (c) {
        char err[512];
        sl_ops_worker_remove(c, rt->worker_id, err, sizeof err);
        PQfinish(c);
    }
}
