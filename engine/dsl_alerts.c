/* dsl_alerts.c - a pipeline's `alerts:` section: the evaluation interval,
 * the notifiers and the rules (alerts.h, docs/dsl.md "Alerts").
 *
 * Read after the stages, so a rule's `stage` resolves to the stage itself.
 * URLs and secrets are never values here: only the names of environment
 * variables (`url_env`, `secret_env`), checked as names and looked up when
 * a message is sent.
 */
#include "dsl_priv.h"

#include <assert.h>
#include <string.h>

#include "alerts.h"

#define MAX_RULES 256
#define MAX_NOTIFIERS 32

static const char *const kind_names[SL_ALERT__COUNT + 1] = {
    "oldest_pending", "backlog", "failure_ratio", "job_error",
    "stuck",          "no_worker", "provider_errors", NULL};

const char *sl_alert_kind_name(sl_alert_kind k) {
    return (unsigned)k < SL_ALERT__COUNT ? kind_names[k] : NULL;
}

/* An environment variable's name: [A-Za-z_][A-Za-z0-9_]*. */
static const char *read_env_name(loader *L, const node *n, const char *what) {
    if (!sl_dsl__expect_kind(L, n, N_SCALAR, what)) return NULL;
    const char *s = n->s;
    int ok = s[0] && !(s[0] >= '0' && s[0] <= '9') && strlen(s) <= 128;
    for (const char *c = s; ok && *c; c++)
        ok = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
             (*c >= '0' && *c <= '9') || *c == '_';
    if (!ok) {
        sl_dsl__diag(L, n,
                     "%s '%s': expected the name of an environment variable "
                     "([A-Za-z_][A-Za-z0-9_]*), not its value",
                     what, sl_dsl__show(s));
        return NULL;
    }
    return sl_dsl__arena_strdup(L->a, s);
}

static const char *const notifier_keys[] = {"type", "url_env", "secret_env",
                                            "min_interval", NULL};

static void read_notifier(loader *L, const node *k, const node *v,
                          sl_notifier *nt) {
    nt->name = sl_dsl__read_ident(L, k, "notifier name", ID_NAME);
    nt->line = k->line;
    nt->col = k->col;
    nt->min_interval_ms = 1000;
    if (!sl_dsl__expect_kind(L, v, N_MAP, "notifier")) return;
    sl_dsl__check_keys(L, v, "a notifier", notifier_keys);
    const node *n = sl_dsl__mget(v, "type");
    static const char *const types[] = {"slack", "webhook", NULL};
    if (!n)
        sl_dsl__diag(L, k, "notifier '%s': missing required key 'type' "
                           "(slack or webhook)", sl_dsl__show(k->s));
    else if (sl_dsl__expect_kind(L, n, N_SCALAR, "type")) {
        if (!strcmp(n->s, "slack")) nt->kind = SL_NOTIFIER_SLACK;
        else if (!strcmp(n->s, "webhook")) nt->kind = SL_NOTIFIER_WEBHOOK;
        else
            sl_dsl__diag(L, n, "type: expected slack or webhook, got '%s'%s",
                         sl_dsl__show(n->s),
                         sl_dsl__did_you_mean(n->s, types, 2));
    }
    if (!(n = sl_dsl__mget(v, "url_env")))
        sl_dsl__diag(L, k, "notifier '%s': missing required key 'url_env' "
                           "(the environment variable holding the URL)",
                     sl_dsl__show(k->s));
    else
        nt->url_env = read_env_name(L, n, "url_env");
    if ((n = sl_dsl__mget(v, "secret_env"))) {
        if (nt->kind != SL_NOTIFIER_WEBHOOK)
            sl_dsl__diag(L, n, "secret_env: only a webhook notifier signs "
                               "its messages");
        else
            nt->secret_env = read_env_name(L, n, "secret_env");
    } else if (nt->kind == SL_NOTIFIER_WEBHOOK)
        sl_dsl__diag(L, k, "notifier '%s': a webhook needs 'secret_env' (the "
                           "environment variable holding the HMAC key)",
                     sl_dsl__show(k->s));
    if ((n = sl_dsl__mget(v, "min_interval")))
        sl_dsl__read_duration(L, n, "min_interval", 0, &nt->min_interval_ms);
}

static const char *const rule_keys[] = {
    "when",     "stage",     "provider", "over",   "older_than",
    "attempts", "window",    "min_count", "for",   "repeat",
    "resolved", "severity",  "summary",  "notify", NULL};

/* The keys each kind needs (1) or allows (2) beyond the common ones. */
static int kind_key(sl_alert_kind k, const char *key) {
    switch (k) {
    case SL_ALERT_OLDEST_PENDING: return !strcmp(key, "older_than");
    case SL_ALERT_BACKLOG: return !strcmp(key, "over");
    case SL_ALERT_FAILURE_RATIO:
        return !strcmp(key, "over") ? 1
               : (!strcmp(key, "window") || !strcmp(key, "min_count")) ? 2
                                                                       : 0;
    case SL_ALERT_JOB_ERROR: return !strcmp(key, "window") ? 2 : 0;
    case SL_ALERT_STUCK: return !strcmp(key, "attempts") ? 2 : 0;
    case SL_ALERT_NO_WORKER: return 0;
    case SL_ALERT_PROVIDER_ERRORS:
        return (!strcmp(key, "over") || !strcmp(key, "provider")) ? 1
               : !strcmp(key, "window")                         ? 2
                                                                : 0;
    default: return 0;
    }
}

static void read_notify(loader *L, const node *n, const sl_alerts *al,
                        sl_alert_rule *r) {
    size_t cnt = n->kind == N_SEQ ? n->n : 1;
    r->notify = sl_dsl__arena_alloc(L->a, (cnt ? cnt : 1) * sizeof *r->notify);
    if (!r->notify) return;
    for (size_t i = 0; i < cnt; i++) {
        const node *e = n->kind == N_SEQ ? n->vals[i] : n;
        if (!sl_dsl__expect_kind(L, e, N_SCALAR, "notify")) continue;
        const sl_notifier *found = NULL;
        const char *names[MAX_NOTIFIERS];
        for (size_t j = 0; j < al->nnotifiers; j++) {
            names[j] = al->notifiers[j].name ? al->notifiers[j].name : "";
            if (al->notifiers[j].name && !strcmp(e->s, al->notifiers[j].name))
                found = &al->notifiers[j];
        }
        if (!found)
            sl_dsl__diag(L, e, "notify: no notifier '%s' in alerts.notifiers%s",
                         sl_dsl__show(e->s),
                         sl_dsl__did_you_mean(e->s, names, al->nnotifiers));
        else
            r->notify[r->nnotify++] = found;
    }
}

/* A rule's `stage`: a stage of p, resolved to the stage itself. */
static void read_rule_stage(loader *L, const sl_pipeline *p, const node *x,
                            sl_alert_rule *r) {
    if (r->kind == SL_ALERT_PROVIDER_ERRORS) {
        sl_dsl__diag(L, x, "'stage' does not apply to a provider_errors "
                           "rule (it is labelled by provider)");
        return;
    }
    if (!sl_dsl__expect_kind(L, x, N_SCALAR, "stage")) return;
    const char *names[MAX_STAGES];
    size_t nn = 0;
    for (size_t i = 0; i < p->nstages; i++) {
        if (!p->stages[i].name) continue;
        names[nn++] = p->stages[i].name;
        if (!strcmp(p->stages[i].name, x->s)) r->stage = &p->stages[i];
    }
    if (!r->stage)
        sl_dsl__diag(L, x, "stage: no stage '%s' in pipeline '%s'%s",
                     sl_dsl__show(x->s), p->name ? p->name : "?",
                     sl_dsl__did_you_mean(x->s, names, nn));
}

static void read_rule(loader *L, const sl_pipeline *p, const sl_alerts *al,
                      const node *k, const node *v, sl_alert_rule *r) {
    r->name = sl_dsl__read_ident(L, k, "alert rule name", ID_NAME);
    r->line = k->line;
    r->col = k->col;
    r->repeat_ms = 4 * 3600 * 1000;
    r->window_ms = 5 * 60 * 1000;
    r->min_count = 10;
    r->threshold = 3; /* stuck: attempts */
    r->send_resolved = 1;
    r->severity = "warning";
    if (!sl_dsl__expect_kind(L, v, N_MAP, "alert rule")) return;
    sl_dsl__check_keys(L, v, "an alert rule", rule_keys);
    const node *n = sl_dsl__mget(v, "when");
    if (!n) {
        sl_dsl__diag(L, k, "alert rule '%s': missing required key 'when' "
                           "(one of oldest_pending, backlog, failure_ratio, "
                           "job_error, stuck, no_worker, provider_errors)",
                     sl_dsl__show(k->s));
        return;
    }
    if (!sl_dsl__expect_kind(L, n, N_SCALAR, "when")) return;
    int kind = -1;
    for (int i = 0; i < SL_ALERT__COUNT; i++)
        if (!strcmp(n->s, kind_names[i])) kind = i;
    if (kind < 0) {
        sl_dsl__diag(L, n,
                     "when: expected oldest_pending, backlog, failure_ratio, "
                     "job_error, stuck, no_worker or provider_errors, got "
                     "'%s'%s",
                     sl_dsl__show(n->s),
                     sl_dsl__did_you_mean(n->s, kind_names, SL_ALERT__COUNT));
        return;
    }
    r->kind = (sl_alert_kind)kind;
    /* Keys of other kinds are mistakes; required ones must be there. */
    static const char *const specific[] = {"over", "older_than", "attempts",
                                           "window", "min_count", "provider",
                                           NULL};
    for (size_t i = 0; specific[i]; i++) {
        const node *kn = sl_dsl__mkey(v, specific[i]);
        int need = kind_key(r->kind, specific[i]);
        if (kn && !need)
            sl_dsl__diag(L, kn, "'%s' does not apply to a '%s' rule",
                         specific[i], n->s);
        else if (!kn && need == 1)
            sl_dsl__diag(L, k, "alert rule '%s': a '%s' rule needs '%s'",
                         sl_dsl__show(k->s), n->s, specific[i]);
    }
    const node *x;
    if ((x = sl_dsl__mget(v, "over")))
        sl_dsl__read_double(L, x, "over", 0,
                            r->kind == SL_ALERT_FAILURE_RATIO ? 1 : 1e12,
                            &r->threshold);
    if ((x = sl_dsl__mget(v, "older_than"))) {
        int64_t ms = 0;
        if (sl_dsl__read_duration(L, x, "older_than", 0, &ms) == 0)
            r->threshold = ms / 1000.0;
    }
    if ((x = sl_dsl__mget(v, "attempts"))) {
        int a = 0;
        if (sl_dsl__read_int(L, x, "attempts", 1, 1000000, &a) == 0)
            r->threshold = a;
    }
    if ((x = sl_dsl__mget(v, "window")))
        sl_dsl__read_duration(L, x, "window", 1000, &r->window_ms);
    if ((x = sl_dsl__mget(v, "min_count"))) {
        int c = 0;
        if (sl_dsl__read_int(L, x, "min_count", 1, 1000000000, &c) == 0)
            r->min_count = c;
    }
    if ((x = sl_dsl__mget(v, "provider")))
        r->provider = sl_dsl__read_ident(L, x, "provider", ID_NAME);
    if ((x = sl_dsl__mget(v, "for")))
        sl_dsl__read_duration(L, x, "for", 0, &r->for_ms);
    if ((x = sl_dsl__mget(v, "repeat")))
        sl_dsl__read_duration(L, x, "repeat", 1000, &r->repeat_ms);
    if ((x = sl_dsl__mget(v, "resolved")))
        sl_dsl__read_bool(L, x, "resolved", &r->send_resolved);
    if ((x = sl_dsl__mget(v, "severity"))) {
        static const char *const sev[] = {"info", "warning", "critical", NULL};
        const char *s = sl_dsl__read_value(L, x, "severity");
        if (s && strcmp(s, "info") && strcmp(s, "warning") &&
            strcmp(s, "critical"))
            sl_dsl__diag(L, x, "severity: expected info, warning or "
                               "critical, got '%s'%s",
                         sl_dsl__show(s), sl_dsl__did_you_mean(s, sev, 3));
        else if (s)
            r->severity = sl_dsl__arena_strdup(L->a, s);
    }
    if ((x = sl_dsl__mget(v, "summary")))
        r->summary = sl_dsl__read_text(L, x, "summary");
    if ((x = sl_dsl__mget(v, "stage"))) read_rule_stage(L, p, x, r);
    if ((x = sl_dsl__mget(v, "notify")))
        read_notify(L, x, al, r);
    else if (al->nnotifiers) {
        r->notify =
            sl_dsl__arena_alloc(L->a, al->nnotifiers * sizeof *r->notify);
        for (size_t i = 0; r->notify && i < al->nnotifiers; i++)
            r->notify[r->nnotify++] = &al->notifiers[i];
    }
    if (!r->nnotify && !x)
        sl_dsl__diag(L, k, "alert rule '%s': no notifier to send to (declare "
                           "one under alerts.notifiers)",
                     sl_dsl__show(k->s));
}

/* A mapping section `what` of `alerts` with at most max entries; NULL when
 * absent or not a mapping. */
static const node *section(loader *L, const node *al, const char *what,
                           size_t max) {
    const node *n = sl_dsl__mget(al, what);
    if (!n || !sl_dsl__expect_kind(L, n, N_MAP, what)) return NULL;
    if (n->n > max) {
        sl_dsl__diag(L, n, "%s: at most %zu entries, got %zu", what, max,
                     n->n);
        return NULL;
    }
    return n;
}

void sl_dsl__read_alerts(loader *L, const node *n, sl_pipeline *p) {
    assert(L && n && p);
    if (!sl_dsl__expect_kind(L, n, N_MAP, "alerts")) return;
    static const char *const keys[] = {"interval", "notifiers", "rules", NULL};
    sl_dsl__check_keys(L, n, "alerts", keys);
    sl_alerts *al = sl_dsl__arena_alloc(L->a, sizeof *al);
    if (!al) return;
    al->interval_ms = 15000;
    const node *x;
    if ((x = sl_dsl__mget(n, "interval")))
        sl_dsl__read_duration(L, x, "interval", 100, &al->interval_ms);
    const node *ns = section(L, n, "notifiers", MAX_NOTIFIERS);
    if (ns && ns->n) {
        al->notifiers = sl_dsl__arena_alloc(L->a, ns->n * sizeof *al->notifiers);
        for (size_t i = 0; al->notifiers && i < ns->n; i++) {
            read_notifier(L, ns->keys[i], ns->vals[i], &al->notifiers[i]);
            al->nnotifiers++;
        }
    }
    const node *rs = section(L, n, "rules", MAX_RULES);
    if (rs && rs->n) {
        al->rules = sl_dsl__arena_alloc(L->a, rs->n * sizeof *al->rules);
        for (size_t i = 0; al->rules && i < rs->n; i++) {
            read_rule(L, p, al, rs->keys[i], rs->vals[i], &al->rules[i]);
            al->nrules++;
        }
    }
    p->alerts = al;
}
