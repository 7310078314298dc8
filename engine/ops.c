/* ops.c - workers registry, paused stages, statistics rollup (ops.h). */
#include "ops.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "error.h"

const char *const sl_ops_ddl =
    "CREATE SCHEMA IF NOT EXISTS sluice;\n"
    /* One row per running `sluice run` process (ops.h). */
    "CREATE TABLE IF NOT EXISTS sluice.workers (\n"
    "  id text PRIMARY KEY,\n"
    "  host text NOT NULL,\n"
    "  pid integer NOT NULL,\n"
    "  version text NOT NULL,\n"
    "  stages jsonb NOT NULL,\n"
    "  concurrency integer NOT NULL,\n"
    "  started_at timestamptz NOT NULL DEFAULT now(),\n"
    "  heartbeat_at timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    /* A stage listed here is not claimed from. */
    "CREATE TABLE IF NOT EXISTS sluice.paused (\n"
    "  pipeline text NOT NULL,\n"
    "  stage text NOT NULL,\n"
    "  at timestamptz NOT NULL DEFAULT now(),\n"
    "  who text NOT NULL,\n"
    "  PRIMARY KEY (pipeline, stage)\n"
    ");\n"
    /* The statistics page's per-minute rollup. */
    "CREATE TABLE IF NOT EXISTS sluice.stats_minute (\n"
    "  minute timestamptz NOT NULL,\n"
    "  pipeline text NOT NULL,\n"
    "  stage text NOT NULL,\n"
    "  done bigint NOT NULL,\n"
    "  failed bigint NOT NULL,\n"
    "  run_p50_ms float8, run_p95_ms float8,\n"
    "  wait_p50_ms float8, wait_p95_ms float8,\n"
    "  PRIMARY KEY (minute, pipeline, stage)\n"
    ");\n";

#define RFC3339(col)                                                        \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* Runs q (freed here) with vals; a result of rows (want_rows) goes to
 * *out when out is not NULL, else is cleared. */
static int exec(PGconn *c, sl_buf *q, int n, const char *const *vals,
                int want_rows, const char *what, PGresult **out, char *err,
                size_t errlen) {
    if (out) *out = NULL;
    if (sl_buf_failed(q)) {
        sl_buf_free(q);
        snprintf(err, errlen, "%s: out of memory", what);
        return -SL_ENOMEM;
    }
    PGresult *r = PQexecParams(c, sl_buf_str(q), n, NULL, vals, NULL, NULL, 0);
    sl_buf_free(q);
    ExecStatusType want = want_rows ? PGRES_TUPLES_OK : PGRES_COMMAND_OK;
    if (PQresultStatus(r) == want) {
        if (out)
            *out = r;
        else
            PQclear(r);
        return 0;
    }
    char m[1024];
    const char *st = sl_db_sqlstate(r);
    int missing = st && strcmp(st, "42P01") == 0; /* st lives in r */
    snprintf(err, errlen, "%s: %s", what, sl_db_error(c, r, m, sizeof m));
    PQclear(r);
    if (PQstatus(c) != CONNECTION_OK) return -SL_ECONN;
    return missing ? -SL_ENOTFOUND : -SL_EDB;
}

/* ---- workers ------------------------------------------------------------ */

int sl_ops_worker_beat(PGconn *c, const sl_ops_worker *w, char *err,
                       size_t errlen) {
    assert(c && w && w->id && w->host && w->version && w->stages);
    char pid[16], conc[16];
    snprintf(pid, sizeof pid, "%d", w->pid);
    snprintf(conc, sizeof conc, "%d", w->concurrency);
    const char *vals[6] = {w->id, w->host, pid, w->version, w->stages, conc};
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "WITH gone AS (DELETE FROM sluice.workers WHERE"
                    " heartbeat_at < now() - interval '1 day')"
                    " INSERT INTO sluice.workers (id, host, pid, version,"
                    " stages, concurrency) VALUES ($1, $2, $3::int, $4,"
                    " $5::jsonb, $6::int) ON CONFLICT (id) DO UPDATE SET"
                    " host = EXCLUDED.host, pid = EXCLUDED.pid,"
                    " version = EXCLUDED.version, stages = EXCLUDED.stages,"
                    " concurrency = EXCLUDED.concurrency,"
                    " heartbeat_at = now()");
    return exec(c, &q, 6, vals, 0, "worker heartbeat", NULL, err, errlen);
}

int sl_ops_worker_remove(PGconn *c, const char *id, char *err, size_t errlen) {
    assert(c && id);
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "DELETE FROM sluice.workers WHERE id = $1");
    const char *vals[1] = {id};
    return exec(c, &q, 1, vals, 0, "worker removal", NULL, err, errlen);
}

int sl_ops_workers(PGconn *c, PGresult **out, char *err, size_t errlen) {
    assert(c && out);
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_printf(&q,
                  "SELECT id, host, pid, version, stages::text, concurrency, "
                  RFC3339("started_at") ", " RFC3339("heartbeat_at") ","
                  " heartbeat_at > now() - interval '%d seconds'"
                  " FROM sluice.workers ORDER BY started_at DESC, id",
                  SL_OPS_ALIVE_S);
    return exec(c, &q, 0, NULL, 1, "read sluice.workers", out, err, errlen);
}

/* ---- paused stages ------------------------------------------------------ */

int sl_ops_pause(PGconn *c, const sl_stage *s, int paused, const char *who,
                 char *err, size_t errlen) {
    assert(c && s && who);
    char payload[160];
    snprintf(payload, sizeof payload, "%s.%s", s->pipeline->name, s->name);
    const char *vals[4] = {s->pipeline->name, s->name, who, payload};
    sl_buf q;
    sl_buf_init(&q);
    if (paused)
        sl_buf_puts(&q, "WITH w AS (INSERT INTO sluice.paused (pipeline,"
                        " stage, who) VALUES ($1, $2, $3) ON CONFLICT"
                        " (pipeline, stage) DO NOTHING RETURNING 1)");
    else
        sl_buf_puts(&q, "WITH w AS (DELETE FROM sluice.paused WHERE"
                        " pipeline = $1 AND stage = $2 AND $3::text IS NOT"
                        " NULL RETURNING 1)");
    sl_buf_puts(&q, " SELECT pg_notify('" SL_OPS_CHANNEL "', $4),"
                    " (SELECT count(*) FROM w)");
    return exec(c, &q, 4, vals, 1, paused ? "pause" : "resume", NULL, err,
                errlen);
}

int sl_ops_paused(PGconn *c, PGresult **out, char *err, size_t errlen) {
    assert(c && out);
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT pipeline, stage FROM sluice.paused");
    return exec(c, &q, 0, NULL, 1, "read sluice.paused", out, err, errlen);
}

int sl_ops_is_paused(const PGresult *r, const sl_stage *s) {
    for (int i = 0; r && i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), s->pipeline->name) == 0 &&
            strcmp(PQgetvalue(r, i, 1), s->name) == 0)
            return 1;
    return 0;
}

/* ---- statistics rollup -------------------------------------------------- */

/* The upsert of stage s's minutes since $3 minutes ago. */
static void rollup_sql(sl_buf *q, const sl_stage *s) {
    sl_buf_puts(q, "INSERT INTO sluice.stats_minute AS m (minute, pipeline,"
                   " stage, done, failed, run_p50_ms, run_p95_ms,"
                   " wait_p50_ms, wait_p95_ms) SELECT"
                   " date_trunc('minute', finished_at), $1, $2,"
                   " count(*) FILTER (WHERE status = 'done'),"
                   " count(*) FILTER (WHERE status = 'error'),"
                   " percentile_cont(0.5) WITHIN GROUP (ORDER BY r),"
                   " percentile_cont(0.95) WITHIN GROUP (ORDER BY r),"
                   " percentile_cont(0.5) WITHIN GROUP (ORDER BY w),"
                   " percentile_cont(0.95) WITHIN GROUP (ORDER BY w)"
                   " FROM (SELECT finished_at, status,"
                   " extract(epoch FROM finished_at - started_at) * 1000"
                   " AS r, greatest(extract(epoch FROM started_at - run_at)"
                   " * 1000, 0) AS w FROM ");
    sl_buf_ident(q, s->queue);
    sl_buf_puts(q, " WHERE finished_at >= date_trunc('minute', now()) -"
                   " make_interval(mins => $3::int)"
                   " AND status IN ('done', 'error')) j GROUP BY 1"
                   " ON CONFLICT (minute, pipeline, stage) DO UPDATE SET"
                   " done = EXCLUDED.done, failed = EXCLUDED.failed,"
                   " run_p50_ms = EXCLUDED.run_p50_ms,"
                   " run_p95_ms = EXCLUDED.run_p95_ms,"
                   " wait_p50_ms = EXCLUDED.wait_p50_ms,"
                   " wait_p95_ms = EXCLUDED.wait_p95_ms");
}

int sl_ops_rollup(PGconn *c, const sl_model *m, int minutes, char *err,
                  size_t errlen) {
    assert(c && m && minutes >= 0);
    char mins[16];
    snprintf(mins, sizeof mins, "%d", minutes);
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            const sl_stage *s = &m->pipelines[i].stages[k];
            const char *vals[3] = {s->pipeline->name, s->name, mins};
            sl_buf q;
            sl_buf_init(&q);
            rollup_sql(&q, s);
            int rc = exec(c, &q, 3, vals, 0, "statistics rollup", NULL, err,
                          errlen);
            /* A queue that was never migrated has nothing to count; the
             * rollup table itself missing is the caller's to report. */
            if (rc == -SL_ENOTFOUND && strstr(err, "stats_minute") == NULL)
                continue;
            if (rc != 0) return rc;
        }
    return 0;
}

int sl_ops_stats(PGconn *c, const char *pipeline, const char *stage,
                 int minutes, PGresult **out, char *err, size_t errlen) {
    assert(c && out && minutes > 0);
    char mins[16];
    snprintf(mins, sizeof mins, "%d", minutes);
    const char *vals[3] = {pipeline, stage, mins};
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT " RFC3339("minute") ", pipeline, stage, done,"
                    " failed, round(run_p50_ms::numeric, 3),"
                    " round(run_p95_ms::numeric, 3),"
                    " round(wait_p50_ms::numeric, 3),"
                    " round(wait_p95_ms::numeric, 3)"
                    " FROM sluice.stats_minute WHERE minute >="
                    " date_trunc('minute', now()) -"
                    " make_interval(mins => $3::int - 1)"
                    " AND ($1::text IS NULL OR pipeline = $1)"
                    " AND ($2::text IS NULL OR stage = $2)"
                    " ORDER BY minute, pipeline, stage");
    return exec(c, &q, 3, vals, 1, "read sluice.stats_minute", out, err,
                errlen);
}

/* ---- job transitions ---------------------------------------------------- */

#define RFC3339_US(col)                                                     \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* One branch per index that can find the changed rows of stage s. */
static void transitions_branch(sl_buf *q, const sl_stage *s) {
    static const char *const where[] = {
        "status IN ('pending', 'retry')", "status = 'in_progress'",
        ("finished_at >= coalesce($1::timestamptz - interval '2 seconds',"
         " now())")};
    for (int k = 0; k < 3; k++) {
        sl_buf_puts(q, " UNION ALL (SELECT ");
        sl_buf_literal(q, s->queue);
        sl_buf_puts(q, "::text AS queue, id, status::text AS status,"
                       " updated_at FROM ");
        sl_buf_ident(q, s->queue);
        /* After a cut: exactly past the last row (keyset), else with the
         * overlap. */
        sl_buf_printf(q, " WHERE %s AND CASE WHEN $2::uuid IS NULL THEN"
                         " updated_at > coalesce($1::timestamptz - interval"
                         " '2 seconds', now()) ELSE (updated_at, id) >"
                         " ($1::timestamptz, $2::uuid) END)", where[k]);
    }
}

int sl_ops_transitions(PGconn *c, const sl_model *m, const char *since,
                       const char *after_id, int limit, PGresult **out,
                       char *err, size_t errlen) {
    assert(c && m && out && limit > 0);
    *out = NULL;
    /* Only the queues whose table exists (a partial migration). */
    sl_buf q;
    sl_buf_init(&q);
    /* One row of NULLs with NOW when nothing changed. NOW is held back
     * to the start of the oldest writing transaction (visible to this
     * role) of at most 25 s ago: its rows carry that now() but are not
     * visible before it commits. */
    sl_buf_puts(&q, "SELECT queue, id::text, status, " RFC3339_US("updated_at")
                    ", " RFC3339_US("n.t") " FROM (SELECT least(now(),"
                    " greatest(now() - interval '25 seconds',"
                    " coalesce(min(xact_start), now()))) AS t FROM"
                    " pg_stat_activity WHERE backend_xid IS NOT NULL AND"
                    " datname = current_database() AND pid <>"
                    " pg_backend_pid()) n"
                    " LEFT JOIN LATERAL (SELECT * FROM (SELECT NULL::text AS"
                    " queue, NULL::uuid AS id, NULL::text AS status,"
                    " NULL::timestamptz AS updated_at WHERE false");
    PGresult *have = PQexec(c, "SELECT relname FROM pg_class WHERE"
                               " relkind IN ('r', 'p') AND"
                               " pg_table_is_visible(oid)");
    if (PQresultStatus(have) != PGRES_TUPLES_OK) {
        char m2[512];
        snprintf(err, errlen, "read job transitions: %s",
                 sl_db_error(c, have, m2, sizeof m2));
        PQclear(have);
        sl_buf_free(&q);
        return PQstatus(c) != CONNECTION_OK ? -SL_ECONN : -SL_EDB;
    }
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            const sl_stage *s = &m->pipelines[i].stages[k];
            for (int row = 0; row < PQntuples(have); row++)
                if (strcmp(PQgetvalue(have, row, 0), s->queue) == 0) {
                    transitions_branch(&q, s);
                    break;
                }
        }
    PQclear(have);
    sl_buf_printf(&q, ") u ORDER BY updated_at, id LIMIT %d) t ON true"
                      " ORDER BY updated_at, id", limit);
    const char *vals[2] = {since, after_id};
    return exec(c, &q, 2, vals, 1, "read job transitions", out, err, errlen);
}
