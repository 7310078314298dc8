/* alerter.c - the evaluator thread (alerter.h). */
#include "alerter.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerts.h"
#include "clock.h"
#include "db.h"
#include "error.h"
#include "log.h"
#include "notify.h"

struct sl_alerter {
    pthread_t th;
    atomic_int stop;
    const sl_model *m;
    char *conninfo; /* NULL: sl_db_source's default */
    int64_t interval_ms;
    sl_notify *notify;
};

static int names(const sl_alert_rule *r, const sl_notifier *nt) {
    for (size_t i = 0; i < r->nnotify; i++)
        if (r->notify[i] == nt) return 1;
    return 0;
}

int sl_alerter_dispatch(sl_notify *s, const sl_model *m,
                        const sl_alert_event *ev, size_t n) {
    int failed = 0;
    sl_alert_event *mine = n ? malloc(n * sizeof *mine) : NULL;
    if (n && !mine) return 1;
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_alerts *al = m->pipelines[i].alerts;
        for (size_t j = 0; al && j < al->nnotifiers; j++) {
            const sl_notifier *nt = &al->notifiers[j];
            size_t k = 0;
            for (size_t e = 0; e < n; e++)
                if (names(ev[e].rule, nt)) mine[k++] = ev[e];
            if (!k) continue;
            char err[512];
            if (sl_notify_send(s, nt, mine, k, err, sizeof err) != 0) {
                sl_log(SL_LOG_ERROR, "alert not delivered", "error", err,
                       NULL);
                failed++;
            }
        }
    }
    free(mine);
    return failed;
}

/* Waits ms in short steps; returns non-zero when asked to stop. */
static int nap(sl_alerter *a, int64_t ms) {
    int64_t until = sl_now_ms() + ms;
    while (!atomic_load(&a->stop)) {
        int64_t left = until - sl_now_ms();
        if (left <= 0) return 0;
        sl_sleep_ms(left < 50 ? left : 50);
    }
    return 1;
}

static void *loop(void *arg) {
    sl_alerter *a = arg;
    PGconn *c = NULL;
    int leader = 0;
    char err[1024];
    while (!atomic_load(&a->stop)) {
        int64_t start = sl_now_ms();
        if (c && PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = NULL;
        }
        if (!c) {
            leader = 0;
            sl_dbsource src = sl_db_source(a->conninfo);
            c = sl_db_connect(src, err, sizeof err);
            if (!c) {
                sl_log(SL_LOG_WARN, "alert evaluator cannot connect", "error",
                       err, NULL);
                if (nap(a, 1000)) break;
                continue;
            }
        }
        if (!leader) {
            int e = sl_alerts_elect(c);
            if (e < 0) {
                PQfinish(c);
                c = NULL;
            } else if (e == 1) {
                leader = 1;
                sl_log(SL_LOG_INFO, "this process evaluates the alerts",
                       NULL);
            }
        }
        if (leader) {
            sl_alert_event *ev = NULL;
            size_t n = 0;
            if (sl_alerts_evaluate(c, a->m, &ev, &n, err, sizeof err) != 0)
                sl_log(SL_LOG_ERROR, "alert evaluation failed", "error", err,
                       NULL);
            else if (n)
                sl_alerter_dispatch(a->notify, a->m, ev, n);
            free(ev);
        }
        int64_t spent = sl_now_ms() - start;
        if (nap(a, spent < a->interval_ms ? a->interval_ms - spent : 0))
            break;
    }
    PQfinish(c);
    return NULL;
}

int sl_alerter_start(const sl_model *m, const char *conninfo,
                     sl_alerter **out, char *err, size_t errlen) {
    *out = NULL;
    if (!sl_alerts_any(m)) return 0;
    sl_alerter *a = calloc(1, sizeof *a);
    if (!a) goto fail_alloc;
    a->m = m;
    a->interval_ms = sl_alerts_interval_ms(m);
    if (conninfo && !(a->conninfo = strdup(conninfo))) goto fail_alloc;
    int rc = sl_notify_new(&a->notify, &a->stop, err, errlen);
    if (rc) {
        free(a->conninfo);
        free(a);
        return rc;
    }
    if (pthread_create(&a->th, NULL, loop, a) != 0) {
        snprintf(err, errlen, "cannot start the alert evaluator thread");
        sl_notify_free(a->notify);
        free(a->conninfo);
        free(a);
        return -SL_ENOMEM;
    }
    *out = a;
    return 0;
fail_alloc:
    if (a) free(a);
    snprintf(err, errlen, "out of memory");
    return -SL_ENOMEM;
}

void sl_alerter_stop(sl_alerter *a) {
    if (!a) return;
    atomic_store(&a->stop, 1);
    pthread_join(a->th, NULL);
    sl_notify_free(a->notify);
    free(a->conninfo);
    free(a);
}
