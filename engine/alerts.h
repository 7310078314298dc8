/* alerts.h - alert rules and notifiers (the `alerts:` section of a
 * pipeline file), their evaluation against the queue tables, and the
 * alert state kept in PostgreSQL (table sluice.alerts).
 *
 * The loader (dsl_alerts.c) fills an sl_alerts per pipeline; like the rest
 * of the model it is owned by the model and never mutated. One process at
 * a time evaluates (sl_alerts_elect, a session advisory lock); the
 * evaluation moves each rule's state (pending -> firing -> resolved) in the
 * table and hands back what to tell the notifiers. Sending is the job of
 * services/notify.c; the loop that drives both is services/alerter.c.
 * docs/operations.md ("Alerts") describes the behaviour, docs/dsl.md the
 * fields.
 */
#ifndef SL_ALERTS_H
#define SL_ALERTS_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "model.h"

typedef enum { SL_NOTIFIER_SLACK, SL_NOTIFIER_WEBHOOK } sl_notifier_kind;

/* Where messages go. URLs and secrets are never in the file: only the
 * names of the environment variables that hold them. */
typedef struct sl_notifier {
    const char *name;
    sl_notifier_kind kind;
    const char *url_env;    /* variable holding the URL */
    const char *secret_env; /* webhook: variable holding the HMAC key */
    int64_t min_interval_ms; /* token bucket: one message per interval */
    int line, col;
} sl_notifier;

/* What a rule watches. */
typedef enum {
    SL_ALERT_OLDEST_PENDING,  /* oldest due job older than threshold s */
    SL_ALERT_BACKLOG,         /* pending + retry jobs over threshold */
    SL_ALERT_FAILURE_RATIO,   /* error / (done + error) in window */
    SL_ALERT_JOB_ERROR,       /* any job ended in error in window */
    SL_ALERT_STUCK,           /* unfinished jobs rescued, attempts >= thr */
    SL_ALERT_NO_WORKER,       /* due jobs and no live lease */
    SL_ALERT_PROVIDER_ERRORS, /* 5xx/429 per second (Prometheus only) */
    SL_ALERT__COUNT
} sl_alert_kind;

typedef struct sl_alert_rule {
    const char *name;
    sl_alert_kind kind;
    const sl_stage *stage;  /* NULL: every stage of the pipeline */
    const char *provider;   /* provider_errors: the provider label */
    double threshold;       /* meaning per kind, see above */
    int64_t window_ms;      /* failure_ratio, job_error, provider_errors */
    long min_count;         /* failure_ratio: finished jobs in the window */
    int64_t for_ms;         /* active this long before it fires */
    int64_t repeat_ms;      /* a firing alert is repeated this often */
    int send_resolved;      /* tell the notifiers when it resolves */
    const char *severity;   /* "warning" unless written */
    const char *summary;    /* the owner's text, or NULL */
    const sl_notifier **notify; /* where to send; all notifiers by default */
    size_t nnotify;
    int line, col;
} sl_alert_rule;

typedef struct sl_alerts {
    int64_t interval_ms; /* evaluation interval */
    sl_notifier *notifiers;
    size_t nnotifiers;
    sl_alert_rule *rules;
    size_t nrules;
} sl_alerts;

/* The kind's name as written in YAML ("backlog", ...); NULL if invalid. */
const char *sl_alert_kind_name(sl_alert_kind k);

/* The DDL of sluice.alerts (idempotent); migrate applies it. */
extern const char sl_alerts_ddl[];

/* Non-zero when some pipeline of m has an alert rule. */
int sl_alerts_any(const sl_model *m);

/* The shortest evaluation interval of m's pipelines (0 without rules). */
int64_t sl_alerts_interval_ms(const sl_model *m);

typedef enum {
    SL_ALERT_FIRING,   /* fired now (its `for` elapsed) */
    SL_ALERT_REPEAT,   /* still firing, the repeat interval elapsed */
    SL_ALERT_RESOLVED, /* was firing, no longer */
    SL_ALERT_TEST      /* `sluice alerts test` */
} sl_alert_change;

/* One thing to tell the rule's notifiers. */
typedef struct sl_alert_event {
    const sl_alert_rule *rule;
    const sl_pipeline *pipeline;
    const sl_stage *stage; /* NULL for pipeline-wide rules */
    sl_alert_change change;
    double value;
    char text[512]; /* one line, safe (text.h) */
} sl_alert_event;

/* Tries to become (or stay) the one evaluator: a session advisory lock on
 * c. Returns 1 when c holds it, 0 when another process does, -1 on a
 * database error. */
int sl_alerts_elect(PGconn *c);

/* Evaluates every rule of m once and moves the state in sluice.alerts.
 * Returns 0 and the events to send in *out (malloc'd array, caller frees;
 * NULL when none) and *n, or a negative SL_E code with a message in err.
 * Call only while sl_alerts_elect() holds the lock. */
int sl_alerts_evaluate(PGconn *c, const sl_model *m, sl_alert_event **out,
                       size_t *n, char *err, size_t errlen);

/* Fills ev with a test event of rule r of pipeline p. */
void sl_alerts_test_event(const sl_pipeline *p, const sl_alert_rule *r,
                          sl_alert_event *ev);

/* The rows of sluice.alerts: fingerprint, rule, pipeline, stage, state,
 * value, first_fired, last_notified, resolved_at (text), then for JSON
 * the value as float8 and the three times as RFC 3339 in UTC with
 * milliseconds (columns 9..12). Returns the
 * result (caller PQclears) or NULL with a message in err. */
PGresult *sl_alerts_state(PGconn *c, char *err, size_t errlen);

/* Appends m's rules as a Prometheus rule file (YAML) using the metric
 * names of docs/operations.md. */
void sl_alerts_export_prometheus(const sl_model *m, sl_buf *b);

#endif
