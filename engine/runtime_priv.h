/* runtime_priv.h - what the worker side (runtime.c) and the control
 * thread (control.c) of the runtime share. Not for other modules. */
#ifndef SL_RUNTIME_PRIV_H
#define SL_RUNTIME_PRIV_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "db.h"
#include "handler.h"
#include "queue.h"
#include "runtime.h"

#define MAX_BATCH 1000

/* Set by sl_runtime_request_stop: the first asks for a drain, the second
 * for an immediate stop. */
extern atomic_int sl_rt__stop_requested;
extern atomic_int sl_rt__stop_now;
/* For sl_runtime_health(): the control loop's last turn and LISTEN. */
extern atomic_llong sl_rt__last_tick;
extern atomic_int sl_rt__listening;
/* Self-fencing: when (monotonic ms) a worker last found a lease it could
 * not renew in time; 0 while every lease is renewed. While set, no worker
 * claims; the control thread clears it after a successful round trip that
 * began later. */
extern atomic_llong sl_rt__fenced_at;

/* statement_timeout of worker connections when the session has none. */
#define WORKER_STATEMENT_MS 60000

/* ---- structures -----------------------------------------------------------
 */

struct runtime;

typedef struct stage_rt {
    const sl_stage *s;
    const sl_handler *h;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int tokens;  /* pending wake-ups */
    int idle;    /* workers waiting */
    int workers; /* workers alive */
    atomic_int paused; /* listed in sluice.paused: claim nothing */
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
    unsigned batch_gen;    /* bumped with every claimed batch */
    int64_t running_since; /* when the current handler call began, 0 idle */
    int running;           /* index of the job whose handler runs, -1 */
    atomic_int stop_job[MAX_BATCH];
    atomic_int timed_out;
    /* When (monotonic ms) the leases of the batch in hand run out as far
     * as this process knows: the claim's or the last successful
     * heartbeat's sending time + lease. Past it the handler is told to
     * stop (self-fencing). */
    atomic_llong lease_until;
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
    int64_t control_statement_ms; /* the shortest lease, at least 1 s */
} runtime;

struct sl_ctx {
    worker *w;
    int idx;
    sl_job job;
    int64_t last_progress;
};

int sl_rt__conn_lost(PGconn *c);
/* Connects (retrying with backoff until it works or the runtime stops at
 * once), bounds its statements to stmt_ms and prepares the queue
 * statements. */
PGconn *sl_rt__connect_worker(runtime *rt, const char *who, int64_t stmt_ms);
/* Tells every handler of w's batch to stop because its leases ran out
 * unrenewed (now is past w->lease_until), and stops new claims. */
void sl_rt__self_fence(worker *w, int64_t now);
int sl_rt__need_reconnect(PGconn *c, int rc);
void sl_rt__stage_broadcast(stage_rt *st);
void sl_rt__stage_post(stage_rt *st);

/* control.c: reads sluice.paused on c and sets each stage's paused flag,
 * waking the workers of a stage that was resumed. A missing table (not
 * migrated) pauses nothing. Returns non-zero when the connection failed. */
int sl_rt__load_paused(runtime *rt, PGconn *c);

/* control.c: the control thread's loop (LISTEN, heartbeats, sweep, drain);
 * returns when the runtime stops. */
void sl_rt__control_loop(runtime *rt);

#endif
