/* schedule.c - evaluating a stage's schedule against the database
 * (schedule.h). */
#include "schedule.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "error.h"
#include "jobs.h"

const char sl_schedule_ddl[] =
    "CREATE SCHEMA IF NOT EXISTS sluice;\n"
    "CREATE TABLE IF NOT EXISTS sluice.schedule_ticks (\n"
    "  schedule text NOT NULL,\n"
    "  tick timestamptz NOT NULL,\n"
    "  enqueued boolean NOT NULL,\n"
    "  recorded_at timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (schedule, tick)\n"
    ");\n";

/* Recorded ticks older than this (behind the newest) are deleted. */
#define KEEP_DAYS "7"

int sl_schedule_any(const sl_model *m) {
    for (size_t i = 0; m && i < m->npipelines; i++)
        for (size_t s = 0; s < m->pipelines[i].nstages; s++)
            if (m->pipelines[i].stages[s].schedule) return 1;
    return 0;
}

void sl_schedule_name(const sl_stage *st, char *out, size_t len) {
    snprintf(out, len, "%s.%s", st->pipeline->name, st->name);
}

static int db_fail(char *err, size_t errlen, const char *what, PGconn *c,
                   PGresult *r) {
    char m[1024];
    snprintf(err, errlen, "%s: %s", what, sl_db_error(c, r, m, sizeof m));
    PQclear(r);
    return -SL_EDB;
}

int sl_schedule_last(PGconn *c, const sl_stage *st, int64_t *last, char *err,
                     size_t errlen) {
    char name[300];
    sl_schedule_name(st, name, sizeof name);
    const char *v[1] = {name};
    PGresult *r = PQexecParams(c,
                               "SELECT floor(extract(epoch FROM max(tick)))"
                               "::bigint FROM sluice.schedule_ticks WHERE"
                               " schedule = $1",
                               1, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return db_fail(err, errlen, "reading sluice.schedule_ticks", c, r);
    *last = PQgetisnull(r, 0, 0) ? -1 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

/* Records tick without a job (a tick the missed rule passed over). */
static int mark(PGconn *c, const char *name, int64_t tick, char *err,
                size_t errlen) {
    char t[24];
    snprintf(t, sizeof t, "%lld", (long long)tick);
    const char *v[2] = {name, t};
    PGresult *r = PQexecParams(
        c,
        "INSERT INTO sluice.schedule_ticks (schedule, tick, enqueued) VALUES"
        " ($1, to_timestamp($2::bigint), false) ON CONFLICT DO NOTHING",
        2, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return db_fail(err, errlen, "recording a tick", c, r);
    PQclear(r);
    return 0;
}

/* Deletes the schedule's ticks long behind its newest: only the newest
 * decides anything (the next evaluation starts after it). */
static int prune(PGconn *c, const char *name, char *err, size_t errlen) {
    const char *v[1] = {name};
    PGresult *r = PQexecParams(
        c,
        "DELETE FROM sluice.schedule_ticks WHERE schedule = $1 AND tick <"
        " (SELECT max(tick) FROM sluice.schedule_ticks WHERE schedule = $1)"
        " - interval '" KEEP_DAYS " days'",
        1, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return db_fail(err, errlen, "pruning sluice.schedule_ticks", c, r);
    PQclear(r);
    return 0;
}

/* The schedule's args as the JSON columns of sl_jobs_enqueue. */
static int args_json(const sl_stage *st, json_t **out, char *err,
                     size_t errlen) {
    const sl_schedule *sc = st->schedule;
    json_t *o = json_object();
    if (!o) {
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    for (size_t i = 0; i < sc->nargs; i++) {
        const sl_column *col = sl_stage_column(st, sc->arg_columns[i]);
        json_t *v = NULL;
        int rc = col ? sl_jobs_value_from_text(col, sc->arg_values[i], &v, err,
                                               errlen)
                     : -SL_EINVAL;
        if (rc != 0 || json_object_set_new(o, sc->arg_columns[i], v) != 0) {
            json_decref(o);
            if (!rc) snprintf(err, errlen, "out of memory");
            else if (!col)
                snprintf(err, errlen, "no column %s", sc->arg_columns[i]);
            return rc ? rc : -SL_ENOMEM;
        }
    }
    *out = o;
    return 0;
}

int sl_schedule_evaluate(PGconn *c, const sl_stage *st, const sl_tz *tz,
                         int64_t since, int64_t now, int *enqueued,
                         char *err, size_t errlen) {
    assert(c && st && st->schedule && enqueued);
    const sl_schedule *sc = st->schedule;
    *enqueued = 0;
    int64_t last;
    int rc = sl_schedule_last(c, st, &last, err, errlen);
    if (rc != 0) return rc;
    if (last < 0) last = since; /* a new schedule starts now */
    int64_t *ticks = malloc((size_t)sc->catch_up * sizeof *ticks), skipped;
    if (!ticks) {
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    int n = sl_cron_due(&sc->parsed, tz, last, now, sc->missed, sc->catch_up,
                        ticks, &skipped);
    char name[300];
    sl_schedule_name(st, name, sizeof name);
    json_t *cols = NULL;
    if (n > 0) rc = args_json(st, &cols, err, errlen);
    for (int i = 0; i < n && rc == 0; i++) {
        int existing = 0;
        char id[40];
        sl_enqueue_opts o = {0};
        o.tick_schedule = name;
        o.tick = ticks[i];
        o.existing = &existing;
        rc = sl_jobs_enqueue(c, st, NULL, cols, &o, id, err, errlen);
        if (rc == 0 && !existing) ++*enqueued;
    }
    /* A tick SKIP passed over is recorded, so the next evaluation starts
     * after it; the older ticks of LATEST and ALL are behind the one
     * enqueued. */
    if (rc == 0 && skipped >= 0) rc = mark(c, name, skipped, err, errlen);
    if (rc == 0 && *enqueued > 0) rc = prune(c, name, err, errlen);
    json_decref(cols);
    free(ticks);
    return rc;
}
