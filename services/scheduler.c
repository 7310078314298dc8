/* scheduler.c - the schedule evaluator thread (scheduler.h).
 *
 * It sleeps until the earliest next tick of its schedules (checking its
 * stop flag every 50 ms) and evaluates only the schedules that are due,
 * so a process costs the database one statement per tick, not a poll.
 */
#include "scheduler.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "cron.h"
#include "db.h"
#include "error.h"
#include "log.h"
#include "schedule.h"

typedef struct entry {
    const sl_stage *st;
    sl_tz *tz;
    int64_t due; /* seconds: evaluate when the clock reaches this */
} entry;

struct sl_scheduler {
    pthread_t th;
    atomic_int stop;
    char *conninfo; /* NULL: sl_db_source's default */
    entry *e;
    size_t n;
    int64_t since; /* when this process began */
};

static int64_t wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

/* Waits until wall-clock second `until` or 1 s, whichever is first;
 * returns non-zero when asked to stop. */
static int nap_until(sl_scheduler *s, int64_t until) {
    int64_t end = sl_now_ms() + 1000;
    while (!atomic_load(&s->stop)) {
        if (wall_s() >= until || sl_now_ms() >= end) return 0;
        sl_sleep_ms(50);
    }
    return 1;
}

/* Evaluates entry e at now and sets when it is due next. */
static void evaluate(sl_scheduler *s, PGconn *c, entry *e, int64_t now) {
    char err[1024] = "", name[300];
    int n = 0;
    sl_schedule_name(e->st, name, sizeof name);
    if (sl_schedule_evaluate(c, e->st, e->tz, s->since, now, &n, err,
                             sizeof err) != 0) {
        sl_log(SL_LOG_ERROR, "schedule evaluation failed", "schedule", name,
               "error", err, NULL);
        e->due = now + 1; /* try again in a second */
        return;
    }
    if (n > 0) {
        char cnt[16];
        snprintf(cnt, sizeof cnt, "%d", n);
        sl_log(SL_LOG_INFO, "scheduled job enqueued", "schedule", name,
               "jobs", cnt, NULL);
    }
    int64_t next = sl_cron_next(&e->st->schedule->parsed, e->tz, now);
    e->due = next < 0 ? INT64_MAX : next;
}

static void *loop(void *arg) {
    sl_scheduler *s = arg;
    PGconn *c = NULL;
    char err[1024];
    while (!atomic_load(&s->stop)) {
        if (c && PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = NULL;
        }
        if (!c) {
            c = sl_db_connect(sl_db_source(s->conninfo), err, sizeof err);
            if (!c) {
                sl_log(SL_LOG_WARN, "schedule evaluator cannot connect",
                       "error", err, NULL);
                if (nap_until(s, INT64_MAX)) break;
                continue;
            }
        }
        int64_t now = wall_s(), next = INT64_MAX;
        for (size_t i = 0; i < s->n; i++) {
            if (now >= s->e[i].due) evaluate(s, c, &s->e[i], now);
            if (s->e[i].due < next) next = s->e[i].due;
        }
        if (nap_until(s, next)) break;
    }
    PQfinish(c);
    return NULL;
}

static void free_scheduler(sl_scheduler *s) {
    for (size_t i = 0; i < s->n; i++) sl_tz_free(s->e[i].tz);
    free(s->e);
    free(s->conninfo);
    free(s);
}

int sl_scheduler_start(const sl_model *m, const char *const *only, size_t n,
                       const char *conninfo, sl_scheduler **out, char *err,
                       size_t errlen) {
    *out = NULL;
    size_t count = 0;
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            const sl_stage *st = &m->pipelines[i].stages[k];
            count += st->schedule && sl_stage_selected(st, only, n);
        }
    if (!count) return 0;
    sl_scheduler *s = calloc(1, sizeof *s);
    if (!s || !(s->e = calloc(count, sizeof *s->e)) ||
        (conninfo && !(s->conninfo = strdup(conninfo)))) {
        if (s) free_scheduler(s);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    s->since = wall_s();
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            const sl_stage *st = &m->pipelines[i].stages[k];
            if (!st->schedule || !sl_stage_selected(st, only, n)) continue;
            entry *e = &s->e[s->n++];
            e->st = st;
            e->due = 0; /* at once: the ticks missed while no process ran */
            int rc = sl_tz_load(st->schedule->timezone, &e->tz, err, errlen);
            if (rc != 0) {
                free_scheduler(s);
                return rc;
            }
        }
    if (pthread_create(&s->th, NULL, loop, s) != 0) {
        free_scheduler(s);
        snprintf(err, errlen, "cannot start the schedule evaluator thread");
        return -SL_ENOMEM;
    }
    *out = s;
    return 0;
}

void sl_scheduler_stop(sl_scheduler *s) {
    if (!s) return;
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    free_scheduler(s);
}
