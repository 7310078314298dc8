/* gauges.c - per-stage counts and oldest due age for /metrics. */
#include "gauges.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "error.h"
#include "schema.h"

/* The advisory lock key of the gauge leader ("sluice-gauges"). */
#define GAUGE_LOCK_KEY 7310838339472541697LL

int sl_gauges_elect(PGconn *c) {
    return sl_db_elect(c, GAUGE_LOCK_KEY);
}

int sl_gauges_read(PGconn *c, const sl_stage *s, sl_stage_gauges *g,
                   char *err, size_t errlen) {
    assert(c && s && g);
    memset(g, 0, sizeof *g);
    g->stage = s;
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT status::text, count(*), coalesce(extract(epoch"
                    " FROM now() - min(run_at) FILTER (WHERE status IN"
                    " ('pending', 'retry') AND run_at <= now())), 0) FROM ");
    sl_buf_ident(&q, s->queue);
    sl_buf_puts(&q, " GROUP BY status");
    PGresult *r = sl_buf_failed(&q) ? NULL
                                    : PQexec(c, sl_buf_str(&q));
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m[512];
        snprintf(err, errlen, "gauges of %s: %s", s->queue,
                 sl_db_error(c, r, m, sizeof m));
        rc = -SL_EDB;
    } else {
        for (int i = 0; i < PQntuples(r); i++) {
            const char *st = PQgetvalue(r, i, 0);
            for (int k = 0; k < SL_GAUGE_STATUSES; k++)
                if (strcmp(st, sl_job_status_values[k]) == 0)
                    g->count[k] = strtol(PQgetvalue(r, i, 1), NULL, 10);
            double age = strtod(PQgetvalue(r, i, 2), NULL);
            if (age > g->oldest_due_s) g->oldest_due_s = age;
        }
    }
    PQclear(r);
    sl_buf_free(&q);
    return rc;
}
