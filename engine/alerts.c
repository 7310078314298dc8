/* alerts.c - evaluating alert rules against the queue tables and keeping
 * their state in sluice.alerts (alerts.h).
 *
 * Every rule is measured per stage (or for its one stage) with one
 * statement; the state of each (pipeline, rule, stage) - its fingerprint -
 * moves pending -> firing -> resolved in the table, with the database's
 * clock, so a new evaluator (another process that took the lock) carries
 * on where the last one stopped and never repeats a message early.
 */
#include "alerts.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "error.h"
#include "text.h"

/* The advisory lock of the one evaluator (class: "sluice" as in the
 * other locks, object: "ALRT"). */
#define ALERTS_LOCK "1936483683, 1095520852"

const char sl_alerts_ddl[] =
    "CREATE SCHEMA IF NOT EXISTS sluice;\n"
    "CREATE TABLE IF NOT EXISTS sluice.alerts (\n"
    "  fingerprint text PRIMARY KEY,\n"
    "  rule text NOT NULL,\n"
    "  pipeline text NOT NULL,\n"
    "  stage text,\n"
    "  state text NOT NULL CHECK (state IN ('pending', 'firing', "
    "'resolved')),\n"
    "  value double precision,\n"
    "  summary text,\n"
    "  pending_since timestamptz,\n"
    "  first_fired timestamptz,\n"
    "  last_notified timestamptz,\n"
    "  resolved_at timestamptz,\n"
    "  updated_at timestamptz NOT NULL DEFAULT now()\n"
    ");\n";

int sl_alerts_any(const sl_model *m) {
    for (size_t i = 0; m && i < m->npipelines; i++)
        if (m->pipelines[i].alerts && m->pipelines[i].alerts->nrules) return 1;
    return 0;
}

int64_t sl_alerts_interval_ms(const sl_model *m) {
    int64_t best = 0;
    for (size_t i = 0; m && i < m->npipelines; i++) {
        const sl_alerts *a = m->pipelines[i].alerts;
        if (a && a->nrules && (!best || a->interval_ms < best))
            best = a->interval_ms;
    }
    return best;
}

int sl_alerts_elect(PGconn *c) {
    PGresult *r = PQexec(c, "SELECT pg_try_advisory_lock(" ALERTS_LOCK ")");
    int rc = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        rc = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return rc;
}

PGresult *sl_alerts_state(PGconn *c, char *err, size_t errlen) {
    PGresult *r = PQexec(
        c, "SELECT fingerprint, rule, pipeline, stage, state,"
           " round(value::numeric, 3)::text AS value,"
           " to_char(first_fired, 'YYYY-MM-DD HH24:MI:SS') AS first_fired,"
           " to_char(last_notified, 'YYYY-MM-DD HH24:MI:SS') AS last_notified,"
           " to_char(resolved_at, 'YYYY-MM-DD HH24:MI:SS') AS resolved_at,"
           " value::float8,"
           " to_char(first_fired AT TIME ZONE 'UTC',"
           "  'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
           " to_char(last_notified AT TIME ZONE 'UTC',"
           "  'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
           " to_char(resolved_at AT TIME ZONE 'UTC',"
           "  'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
           " FROM sluice.alerts ORDER BY pipeline, rule, stage");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sl_db_error(c, r, err, errlen);
        PQclear(r);
        return NULL;
    }
    return r;
}

/* ---- measuring ------------------------------------------------------------ */

/* The statement that measures rule r on stage s: one row, value first
 * (and for failure_ratio and no_worker a second count). $1 is the window
 * in milliseconds where the kind has one. */
static void build_measure(sl_buf *b, const sl_alert_rule *r,
                          const sl_stage *s) {
    switch (r->kind) {
    case SL_ALERT_OLDEST_PENDING:
        sl_buf_puts(b, "SELECT COALESCE(EXTRACT(EPOCH FROM now() -"
                       " min(run_at)), 0)::float8, 0 FROM ");
        sl_buf_ident(b, s->queue);
        sl_buf_puts(b, " WHERE status IN ('pending','retry') AND run_at <="
                       " now()");
        break;
    case SL_ALERT_BACKLOG:
        sl_buf_puts(b, "SELECT count(*)::float8, 0 FROM ");
        sl_buf_ident(b, s->queue);
        sl_buf_puts(b, " WHERE status IN ('pending','retry')");
        break;
    case SL_ALERT_FAILURE_RATIO:
    case SL_ALERT_JOB_ERROR:
        sl_buf_puts(b, "SELECT (count(*) FILTER (WHERE status = 'error'))"
                       "::float8, count(*)::float8 FROM ");
        sl_buf_ident(b, s->queue);
        sl_buf_puts(b, " WHERE status IN ('done','error') AND finished_at >"
                       " now() - $1::bigint * interval '1 millisecond'");
        break;
    case SL_ALERT_STUCK:
        sl_buf_puts(b, "SELECT count(*)::float8, 0 FROM ");
        sl_buf_ident(b, s->queue);
        sl_buf_puts(b, " WHERE status IN ('pending','retry','in_progress')"
                       " AND error_class = 'lease_expired' AND attempts >="
                       " $1::bigint");
        break;
    case SL_ALERT_NO_WORKER:
        sl_buf_puts(b, "SELECT (count(*) FILTER (WHERE status IN ('pending',"
                       "'retry') AND run_at <= now()))::float8, (count(*)"
                       " FILTER (WHERE status = 'in_progress' AND"
                       " locked_until > now()))::float8 FROM ");
        sl_buf_ident(b, s->queue);
        break;
    default: assert(0);
    }
}

/* Measures r on s: *value and whether the rule is *active. Returns 0 or a
 * negative SL_E code with a message in err. */
static int measure(PGconn *c, const sl_alert_rule *r, const sl_stage *s,
                   double *value, int *active, char *err, size_t errlen) {
    sl_buf b;
    sl_buf_init(&b);
    build_measure(&b, r, s);
    if (sl_buf_failed(&b)) {
        sl_buf_free(&b);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    char param[32];
    if (r->kind == SL_ALERT_STUCK)
        snprintf(param, sizeof param, "%lld", (long long)r->threshold);
    else
        snprintf(param, sizeof param, "%lld", (long long)r->window_ms);
    int np = strstr(sl_buf_str(&b), "$1") ? 1 : 0;
    const char *params[1] = {param};
    PGresult *res = PQexecParams(c, sl_buf_str(&b), np, NULL,
                                 np ? params : NULL, NULL, NULL, 0);
    sl_buf_free(&b);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        char msg[512];
        snprintf(err, errlen, "alert rule %s on queue %s: %s", r->name,
                 s->queue, sl_db_error(c, res, msg, sizeof msg));
        PQclear(res);
        return -SL_EDB;
    }
    double a = strtod(PQgetvalue(res, 0, 0), NULL);
    double b2 = strtod(PQgetvalue(res, 0, 1), NULL);
    PQclear(res);
    switch (r->kind) {
    case SL_ALERT_FAILURE_RATIO:
        *value = b2 > 0 ? a / b2 : 0;
        *active = b2 >= (double)r->min_count && *value > r->threshold;
        break;
    case SL_ALERT_NO_WORKER:
        *value = a;
        *active = a > 0 && b2 == 0;
        break;
    case SL_ALERT_JOB_ERROR:
    case SL_ALERT_STUCK:
        *value = a;
        *active = a > 0;
        break;
    default:
        *value = a;
        *active = a > r->threshold;
    }
    return 0;
}

/* A one-line description of what a rule saw. */
static void describe(const sl_pipeline *p, const sl_alert_rule *r,
                     const sl_stage *s, double v, sl_alert_change ch,
                     char *out, size_t cap) {
    static const char *const tag[] = {"FIRING", "FIRING", "RESOLVED",
                                      "TEST"};
    char what[200];
    switch (r->kind) {
    case SL_ALERT_OLDEST_PENDING:
        snprintf(what, sizeof what, "oldest due job waited %.0fs (limit %.0fs)",
                 v, r->threshold);
        break;
    case SL_ALERT_BACKLOG:
        snprintf(what, sizeof what, "backlog %.0f jobs (limit %.0f)", v,
                 r->threshold);
        break;
    case SL_ALERT_FAILURE_RATIO:
        snprintf(what, sizeof what, "failure ratio %.2f (limit %.2f)", v,
                 r->threshold);
        break;
    case SL_ALERT_JOB_ERROR:
        snprintf(what, sizeof what, "%.0f job%s ended in error", v,
                 v == 1 ? "" : "s");
        break;
    case SL_ALERT_STUCK:
        snprintf(what, sizeof what, "%.0f job%s rescued after %.0f attempts",
                 v, v == 1 ? "" : "s", r->threshold);
        break;
    case SL_ALERT_NO_WORKER:
        snprintf(what, sizeof what, "%.0f due jobs and no live worker", v);
        break;
    default: snprintf(what, sizeof what, "%s", sl_alert_kind_name(r->kind));
    }
    sl_text_format(out, cap, "[%s] %s %s/%s%s%s: %s%s%s", tag[ch],
                   r->severity, p->name, r->name, s ? " stage " : "",
                   s ? s->name : "", ch == SL_ALERT_RESOLVED ? "was " : "",
                   what, r->summary ? " - " : "");
    if (r->summary) {
        size_t l = strlen(out);
        sl_text_format(out + l, cap - l, "%s", r->summary);
    }
}

void sl_alerts_test_event(const sl_pipeline *p, const sl_alert_rule *r,
                          sl_alert_event *ev) {
    memset(ev, 0, sizeof *ev);
    ev->rule = r;
    ev->pipeline = p;
    ev->stage = r->stage;
    ev->change = SL_ALERT_TEST;
    char line[400];
    describe(p, r, r->stage, 0, SL_ALERT_TEST, line, sizeof line);
    sl_text_format(ev->text, sizeof ev->text,
                   "%s (a test message from `sluice alerts test`)", line);
}

/* ---- state ---------------------------------------------------------------- */

typedef struct prior {
    char state;         /* 'p'ending, 'f'iring, 'r'esolved, 0: none */
    int64_t pending_ms; /* since pending_since */
    int64_t notified_ms; /* since last_notified (-1: never) */
} prior;

/* Reads the state of fingerprint fp into *pr. */
static int read_prior(PGconn *c, const char *fp, prior *pr, char *err,
                      size_t errlen) {
    const char *params[1] = {fp};
    PGresult *r = PQexecParams(
        c, "SELECT state, (EXTRACT(EPOCH FROM now() - pending_since) *"
           " 1000)::bigint, COALESCE((EXTRACT(EPOCH FROM now() -"
           " last_notified) * 1000)::bigint, -1) FROM sluice.alerts WHERE"
           " fingerprint = $1",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(err, errlen, "reading sluice.alerts: %s",
                 sl_db_error(c, r, msg, sizeof msg));
        PQclear(r);
        return -SL_EDB;
    }
    memset(pr, 0, sizeof *pr);
    if (PQntuples(r) == 1) {
        pr->state = PQgetvalue(r, 0, 0)[0];
        pr->pending_ms = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        pr->notified_ms = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    }
    PQclear(r);
    return 0;
}

/* Writes the state of one fingerprint. The flags reset the timestamps:
 * pending (a new episode: pending_since = now, the rest cleared), fired,
 * notified, resolved (each = now). */
static int write_state(PGconn *c, const char *fp, const sl_pipeline *p,
                       const sl_alert_rule *r, const sl_stage *s,
                       const char *state, double value, const char *summary,
                       int pending, int fired, int notified, int resolved,
                       char *err, size_t errlen) {
    char v[64];
    snprintf(v, sizeof v, "%.17g", isfinite(value) ? value : 0);
    const char *params[11] = {fp,
                              r->name,
                              p->name,
                              s ? s->name : NULL,
                              state,
                              v,
                              summary,
                              pending ? "t" : "f",
                              fired ? "t" : "f",
                              notified ? "t" : "f",
                              resolved ? "t" : "f"};
    PGresult *res = PQexecParams(
        c,
        "INSERT INTO sluice.alerts AS a (fingerprint, rule, pipeline, stage,"
        " state, value, summary, pending_since, first_fired, last_notified,"
        " resolved_at) VALUES ($1, $2, $3, $4, $5, $6::float8, $7,"
        " CASE WHEN $8::bool THEN now() END, CASE WHEN $9::bool THEN now()"
        " END, CASE WHEN $10::bool THEN now() END, CASE WHEN $11::bool THEN"
        " now() END) ON CONFLICT (fingerprint) DO UPDATE SET state = $5,"
        " value = $6::float8, summary = $7, pending_since = CASE WHEN"
        " $8::bool THEN now() ELSE a.pending_since END, first_fired = CASE"
        " WHEN $9::bool THEN now() WHEN $8::bool THEN NULL ELSE a.first_fired"
        " END, last_notified = CASE WHEN $10::bool THEN now() WHEN $8::bool"
        " THEN NULL ELSE a.last_notified END, resolved_at = CASE WHEN"
        " $11::bool THEN now() WHEN $8::bool THEN NULL ELSE a.resolved_at"
        " END, updated_at = now()",
        11, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char msg[512];
        snprintf(err, errlen, "writing sluice.alerts: %s",
                 sl_db_error(c, res, msg, sizeof msg));
        rc = -SL_EDB;
    }
    PQclear(res);
    return rc;
}

typedef struct evlist {
    sl_alert_event *v;
    size_t n, cap;
} evlist;

static sl_alert_event *push(evlist *l) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        sl_alert_event *v = realloc(l->v, cap * sizeof *v);
        if (!v) return NULL;
        l->v = v;
        l->cap = cap;
    }
    sl_alert_event *e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    return e;
}

/* One rule on one stage: measure, move the state, maybe add an event. */
static int step(PGconn *c, const sl_pipeline *p, const sl_alert_rule *r,
                const sl_stage *s, evlist *out, char *err, size_t errlen) {
    double value = 0;
    int active = 0;
    int rc = measure(c, r, s, &value, &active, err, errlen);
    if (rc) return rc;
    char fp[3 * 70];
    snprintf(fp, sizeof fp, "%s/%s/%s", p->name, r->name, s->name);
    prior pr;
    if ((rc = read_prior(c, fp, &pr, err, errlen))) return rc;

    int change = -1;
    const char *state = NULL;
    int pending = 0, fired = 0, notified = 0, resolved = 0;
    if (active) {
        if (pr.state == 0 || pr.state == 'r') {
            pending = 1;
            state = "pending";
            if (r->for_ms == 0) state = "firing", fired = notified = 1;
        } else if (pr.state == 'p') {
            state = "pending";
            if (pr.pending_ms >= r->for_ms)
                state = "firing", fired = notified = 1;
        } else {
            state = "firing";
            if (pr.notified_ms < 0 || pr.notified_ms >= r->repeat_ms)
                notified = 1, change = SL_ALERT_REPEAT;
        }
        if (fired) change = SL_ALERT_FIRING;
    } else {
        if (pr.state == 0 || pr.state == 'r') return 0; /* quiet */
        state = "resolved";
        resolved = 1;
        if (pr.state == 'f' && r->send_resolved) change = SL_ALERT_RESOLVED;
    }
    char text[512];
    describe(p, r, s, value, change < 0 ? SL_ALERT_FIRING : change, text,
             sizeof text);
    if ((rc = write_state(c, fp, p, r, s, state, value, text, pending, fired,
                          notified, resolved, err, errlen)))
        return rc;
    if (change < 0) return 0;
    sl_alert_event *e = push(out);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    e->rule = r;
    e->pipeline = p;
    e->stage = s;
    e->change = (sl_alert_change)change;
    e->value = value;
    memcpy(e->text, text, sizeof e->text);
    return 0;
}

int sl_alerts_evaluate(PGconn *c, const sl_model *m, sl_alert_event **out,
                       size_t *n, char *err, size_t errlen) {
    assert(c && m && out && n);
    evlist l = {0};
    int rc = 0;
    for (size_t i = 0; !rc && i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        if (!p->alerts) continue;
        for (size_t j = 0; !rc && j < p->alerts->nrules; j++) {
            const sl_alert_rule *r = &p->alerts->rules[j];
            /* Provider rates live in each process's counters: Prometheus
             * evaluates them (sluice alerts export). */
            if (r->kind == SL_ALERT_PROVIDER_ERRORS) continue;
            for (size_t k = 0; !rc && k < p->nstages; k++) {
                const sl_stage *s = &p->stages[k];
                if (r->stage && r->stage != s) continue;
                rc = step(c, p, r, s, &l, err, errlen);
            }
        }
    }
    if (rc) {
        free(l.v);
        l.v = NULL;
        l.n = 0;
    }
    *out = l.v;
    *n = l.n;
    return rc;
}
