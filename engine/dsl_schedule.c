/* dsl_schedule.c - a stage's `schedule:` and `unique:` (docs/dsl.md).
 *
 * Both are read after the stage's columns, which they name. The cron
 * expression and the time zone are checked here with the engine's own
 * parser and zone reader (cron.h), so a pipeline that validates is one
 * the scheduler can run.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "cron.h"
#include "dsl_priv.h"
#include "error.h"
#include "jobs.h"

#define MAX_ARGS MAX_COLUMNS

/* The column `name` of st, reported with a suggestion when missing. */
static const sl_column *declared(loader *L, const node *at, const char *what,
                                 const char *name, const sl_stage *st) {
    const sl_column *c = sl_stage_column(st, name);
    if (c) return c;
    const char *cands[MAX_COLUMNS];
    for (size_t i = 0; i < st->ncolumns && i < MAX_COLUMNS; i++)
        cands[i] = st->columns[i].name;
    sl_dsl__diag(L, at, "%s: '%s' is not a declared column of the stage%s",
                 what, name, sl_dsl__did_you_mean(name, cands, st->ncolumns));
    return NULL;
}

static void read_cron(loader *L, const node *n, sl_schedule *sc) {
    const char *e = sl_dsl__read_value(L, n, "schedule.cron");
    if (!e) return;
    char err[256];
    size_t pos = 0;
    if (sl_cron_parse(e, &sc->parsed, err, sizeof err, &pos) != 0) {
        /* Point at the offending field (a quoted scalar starts one column
         * after its quote; interpolated text has no exact column). */
        int col = n->col + (int)pos + (n->plain ? 0 : 1);
        if (strcmp(e, n->s) != 0) col = n->col;
        sl_dsl__diag_at(L, L->file, n->line, col, "schedule.cron: %s", err);
        return;
    }
    sc->cron = sl_dsl__arena_strdup(L->a, e);
}

static void read_args(loader *L, const node *n, sl_schedule *sc,
                      const sl_stage *st) {
    if (!sl_dsl__expect_kind(L, n, N_MAP, "schedule.args")) return;
    if (n->n > MAX_ARGS) {
        sl_dsl__diag(L, n, "schedule.args: at most %d columns", MAX_ARGS);
        return;
    }
    sc->arg_columns = sl_dsl__arena_alloc(L->a, (n->n + 1) * sizeof(char *));
    sc->arg_values = sl_dsl__arena_alloc(L->a, (n->n + 1) * sizeof(char *));
    if (!sc->arg_columns || !sc->arg_values) return;
    for (size_t i = 0; i < n->n; i++) {
        const char *name = sl_dsl__key_name(n->keys[i]);
        const sl_column *c =
            declared(L, n->keys[i], "schedule.args", name, st);
        const char *v = sl_dsl__read_value(L, n->vals[i], "schedule.args");
        if (!c || !v) continue;
        json_t *j = NULL;
        char err[256];
        if (sl_jobs_value_from_text(c, v, &j, err, sizeof err) != 0) {
            sl_dsl__diag(L, n->vals[i], "schedule.args: %s", err);
            continue;
        }
        json_decref(j);
        sc->arg_columns[sc->nargs] = c->name;
        sc->arg_values[sc->nargs++] = sl_dsl__arena_strdup(L->a, v);
    }
}

/* Refuses what a scheduled job could not satisfy. */
static void check_place(loader *L, const node *at, const sl_pipeline *p,
                        const sl_stage *st, const sl_schedule *sc) {
    if (p->has_subject)
        sl_dsl__diag(L, at,
                     "schedule: pipeline '%s' has a subject (table %s), and a "
                     "scheduled job has no subject row; schedule a stage of "
                     "a pipeline without 'subject:'",
                     p->name ? p->name : "?", p->subject.table);
    else if (st != &p->stages[0])
        sl_dsl__diag(L, at,
                     "schedule: only the entry stage (the first, '%s') "
                     "can have a schedule",
                     p->stages[0].name ? p->stages[0].name : "?");
    for (size_t i = 0; i < st->ncolumns; i++) {
        const sl_column *c = &st->columns[i];
        if (!c->not_null || !c->name) continue;
        int given = 0;
        for (size_t k = 0; k < sc->nargs; k++)
            given |= strcmp(sc->arg_columns[k], c->name) == 0;
        if (!given)
            sl_dsl__diag(L, at,
                         "schedule: column '%s' is not_null, so "
                         "schedule.args must give it",
                         c->name);
    }
}

void sl_dsl__read_schedule(loader *L, const node *n, const sl_pipeline *p,
                           sl_stage *st) {
    assert(L && n && p && st);
    sl_schedule *sc = sl_dsl__arena_alloc(L->a, sizeof *sc);
    if (!sc) return;
    sc->line = n->line;
    sc->col = n->col;
    sc->timezone = "UTC";
    sc->missed = SL_MISSED_LATEST;
    sc->catch_up = 10;
    if (n->kind == N_SCALAR) { /* the short form, schedule: "0 * * * *" */
        read_cron(L, n, sc);
    } else if (sl_dsl__expect_kind(L, n, N_MAP, "schedule")) {
        static const char *const keys[] = {"cron",     "timezone", "missed",
                                           "catch_up", "args",     NULL};
        sl_dsl__check_keys(L, n, "schedule", keys);
        const node *v;
        if (!(v = sl_dsl__mget(n, "cron")))
            sl_dsl__diag(L, n, "schedule: missing required key 'cron' (five "
                               "fields: minute hour day month weekday)");
        else
            read_cron(L, v, sc);
        const char *s;
        if ((v = sl_dsl__mget(n, "timezone")) &&
            (s = sl_dsl__read_value(L, v, "schedule.timezone"))) {
            sl_tz *tz = NULL;
            char err[256];
            if (sl_tz_load(s, &tz, err, sizeof err) != 0)
                sl_dsl__diag(L, v, "schedule.timezone: %s", err);
            sl_tz_free(tz);
            sc->timezone = sl_dsl__arena_strdup(L->a, s);
        }
        if ((v = sl_dsl__mget(n, "missed")) &&
            (s = sl_dsl__read_value(L, v, "schedule.missed"))) {
            if (!strcmp(s, "latest")) sc->missed = SL_MISSED_LATEST;
            else if (!strcmp(s, "all")) sc->missed = SL_MISSED_ALL;
            else if (!strcmp(s, "skip")) sc->missed = SL_MISSED_SKIP;
            else
                sl_dsl__diag(L, v, "schedule.missed: '%s' is not one of "
                                   "latest, all, skip", sl_dsl__show(s));
        }
        if ((v = sl_dsl__mget(n, "catch_up")))
            sl_dsl__read_int(L, v, "schedule.catch_up", 1, 1000, &sc->catch_up);
        if ((v = sl_dsl__mget(n, "args"))) read_args(L, v, sc, st);
    }
    check_place(L, n, p, st, sc);
    if (sc->cron) st->schedule = sc;
}

/* `unique.key`: a column name or a list of them. */
static void read_unique_keys(loader *L, const node *k, const sl_pipeline *p,
                             sl_stage *st) {
    size_t n = k->kind == N_SEQ ? k->n : 1;
    if (k->kind == N_MAP || n > MAX_COLUMNS) {
        sl_dsl__diag(L, k, "unique.key: expected a column or a list of "
                           "columns, got %s", sl_dsl__describe(k));
        return;
    }
    st->unique_keys = sl_dsl__arena_alloc(L->a, (n + 1) * sizeof(char *));
    if (!st->unique_keys) return;
    for (size_t i = 0; i < n; i++) {
        const node *e = k->kind == N_SEQ ? k->vals[i] : k;
        const char *name = sl_dsl__read_ident(L, e, "unique.key", ID_SQL);
        if (!name) continue;
        if (p->has_subject && p->subject.fk && !strcmp(name, p->subject.fk)) {
            st->unique_keys[st->nunique_keys++] = p->subject.fk;
            continue;
        }
        const sl_column *c = declared(L, e, "unique.key", name, st);
        if (c) st->unique_keys[st->nunique_keys++] = c->name;
    }
}

void sl_dsl__read_unique(loader *L, const node *n, const sl_pipeline *p,
                         sl_stage *st) {
    assert(L && n && p && st);
    if (!sl_dsl__expect_kind(L, n, N_MAP, "unique")) return;
    static const char *const keys[] = {"key", "while", "period", NULL};
    sl_dsl__check_keys(L, n, "unique", keys);
    st->unique_declared = 1;
    const node *v;
    if ((v = sl_dsl__mget(n, "key"))) {
        read_unique_keys(L, v, p, st);
    } else { /* every declared column, and the subject */
        size_t cap = st->ncolumns + 1;
        st->unique_keys = sl_dsl__arena_alloc(L->a, cap * sizeof(char *));
        if (!st->unique_keys) return;
        if (p->has_subject && p->subject.fk)
            st->unique_keys[st->nunique_keys++] = p->subject.fk;
        for (size_t i = 0; i < st->ncolumns; i++)
            if (st->columns[i].name)
                st->unique_keys[st->nunique_keys++] = st->columns[i].name;
    }
    const char *s;
    if ((v = sl_dsl__mget(n, "while")) &&
        (s = sl_dsl__read_value(L, v, "unique.while"))) {
        if (!strcmp(s, "unfinished")) st->unique_while = SL_UNIQUE_UNFINISHED;
        else if (!strcmp(s, "pending")) st->unique_while = SL_UNIQUE_PENDING;
        else if (!strcmp(s, "period")) st->unique_while = SL_UNIQUE_PERIOD;
        else
            sl_dsl__diag(L, v, "unique.while: '%s' is not one of pending, "
                               "unfinished, period", sl_dsl__show(s));
    }
    const node *pn = sl_dsl__mget(n, "period");
    if (st->unique_while == SL_UNIQUE_PERIOD) {
        if (!pn)
            sl_dsl__diag(L, n, "unique: 'while: period' needs 'period' (a "
                               "duration such as 1h)");
        else
            sl_dsl__read_duration(L, pn, "unique.period", 1000,
                                  &st->unique_period_ms);
    } else if (pn) {
        sl_dsl__diag(L, pn, "unique.period: only with 'while: period'");
    }
}
