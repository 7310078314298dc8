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
    char key[32];
    snprintf(key, sizeof key, "%lld", GAUGE_LOCK_KEY);
    const char *params[1] = {key};
    PGresult *r = PQexecParams(
        c,
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
        " AND pid = pg_backend_pid() AND granted"
        " AND ((classid::bigint << 32) | objid::bigint) = $1::bigint)"
        " OR pg_try_advisory_lock($1::bigint)",
        1, NULL, params, NULL, NULL, 0);
    int rc = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                 ? strcmp(PQgetvalue(r, 0, 0), "t") == 0
                 : -1;
    PQclear(r);
    return rc;
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
