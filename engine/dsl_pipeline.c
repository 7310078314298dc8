/* dsl_pipeline.c - one file's pipeline: the top-level keys, sweep, the
 * stage settings inherited from `defaults` (retry, timeouts, concurrency),
 * the subject and security.
 */
#include "dsl_priv.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- stage settings inherited from `defaults` ---------------------------- */

/* "10s", "5m", "250ms": a duration as the DSL writes it (rotating static
 * buffers). */
static const char *fmt_ms(int64_t ms) {
    static char buf[4][32];
    static int k;
    char *b = buf[k++ & 3];
    static const struct {
        int64_t mult;
        const char *unit;
    } u[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    for (size_t i = 0; i < 4; i++)
        if (ms != 0 && ms % u[i].mult == 0) {
            snprintf(b, sizeof buf[0], "%lld%s", (long long)(ms / u[i].mult),
                     u[i].unit);
            return b;
        }
    snprintf(b, sizeof buf[0], "%lldms", (long long)ms);
    return b;
}

static void engine_defaults(settings *s) {
    memset(s, 0, sizeof *s);
    s->retry.max_attempts = 5;
    s->retry.backoff = SL_BACKOFF_EXPONENTIAL;
    s->retry.initial_ms = 1000;
    s->retry.factor = 2;
    s->retry.max_delay_ms = 10 * 60 * 1000;
    s->retry.jitter = 0.1;
    s->retry.retry_mask = sl_errclass_default_mask();
    s->timeout_ms = 5 * 60 * 1000;
    s->lease_ms = 30 * 1000;
    s->concurrency = 1;
    s->batch = 0; /* adaptive (runtime.c) until `batch:` pins it */
}

static const char *errclass_names[SL_EC__COUNT + 1];

static int read_classes(loader *L, const node *n, const char *what,
                        uint32_t *mask) {
    if (!errclass_names[0])
        for (int i = 0; i < SL_EC__COUNT; i++)
            errclass_names[i] = sl_errclass_name((sl_errclass)i);
    const node *one = n;
    size_t cnt = 1;
    if (n->kind == N_SEQ)
        cnt = n->n;
    else if (!sl_dsl__expect_kind(L, n, N_SCALAR, what))
        return -1;
    uint32_t m = 0;
    int bad = 0;
    for (size_t i = 0; i < cnt; i++) {
        if (n->kind == N_SEQ) one = n->vals[i];
        if (!sl_dsl__expect_kind(L, one, N_SCALAR, what)) {
            bad = 1;
            continue;
        }
        int c = sl_errclass_parse(one->s);
        if (c < 0) {
            sl_dsl__diag(
                L, one, "%s: unknown error class '%s'%s", what,
                sl_dsl__show(one->s),
                sl_dsl__did_you_mean(one->s, errclass_names, SL_EC__COUNT));
            bad = 1;
            continue;
        }
        m |= 1u << c;
    }
    if (bad) return -1;
    *mask = m;
    return 0;
}

static const char *const retry_keys[] = {"max_attempts", "backoff",   "initial",
                                         "factor",       "max_delay", "jitter",
                                         "on",           "fail_on",   NULL};
static const char *const defaults_keys[] = {"retry",     "timeout",     "lease",
                                            "heartbeat", "concurrency", "batch",
                                            "priority",  "sql_writes",  NULL};

/* Reads settings keys present in m over s; `own` collects the nodes set
 * at this level. */
void sl_dsl__read_settings(loader *L, const node *m, settings *s) {
    assert(L && m && m->kind == N_MAP && s);
    const node *n;
    s->n_timeout = s->n_lease = s->n_heartbeat = NULL;
    s->n_initial = s->n_max_delay = NULL;
    if ((n = sl_dsl__mget(m, "retry")) &&
        sl_dsl__expect_kind(L, n, N_MAP, "retry")) {
        sl_dsl__check_keys(L, n, "retry", retry_keys);
        const node *v;
        if ((v = sl_dsl__mget(n, "max_attempts")))
            sl_dsl__read_int(L, v, "max_attempts", 1, INT_MAX,
                             &s->retry.max_attempts);
        if ((v = sl_dsl__mget(n, "backoff"))) {
            const char *b = sl_dsl__read_value(L, v, "backoff");
            static const char *const kinds[] = {"fixed", "exponential", NULL};
            if (b && !strcmp(b, "fixed"))
                s->retry.backoff = SL_BACKOFF_FIXED;
            else if (b && !strcmp(b, "exponential"))
                s->retry.backoff = SL_BACKOFF_EXPONENTIAL;
            else if (b)
                sl_dsl__diag(
                    L, v, "backoff: expected fixed or exponential, got '%s'%s",
                    sl_dsl__show(b), sl_dsl__did_you_mean(b, kinds, 2));
        }
        if ((v = sl_dsl__mget(n, "initial")) &&
            sl_dsl__read_duration(L, v, "initial", 0, &s->retry.initial_ms) ==
                0)
            s->n_initial = v;
        if ((v = sl_dsl__mget(n, "factor")))
            sl_dsl__read_double(L, v, "factor", 1, HUGE_VAL, &s->retry.factor);
        if ((v = sl_dsl__mget(n, "max_delay")) &&
            sl_dsl__read_duration(L, v, "max_delay", 0,
                                  &s->retry.max_delay_ms) == 0)
            s->n_max_delay = v;
        if ((v = sl_dsl__mget(n, "jitter")))
            sl_dsl__read_double(L, v, "jitter", 0, 1, &s->retry.jitter);
        if ((v = sl_dsl__mget(n, "on")) &&
            read_classes(L, v, "on", &s->on_mask) == 0)
            s->has_on = 1;
        if ((v = sl_dsl__mget(n, "fail_on")) &&
            read_classes(L, v, "fail_on", &s->fail_mask) == 0)
            s->has_fail = 1;
        if (s->n_initial || s->n_max_delay) {
            if (s->retry.max_delay_ms < s->retry.initial_ms) {
                const node *at = s->n_max_delay ? s->n_max_delay : s->n_initial;
                sl_dsl__diag(L, at, "max_delay %s must be >= initial %s",
                             fmt_ms(s->retry.max_delay_ms),
                             fmt_ms(s->retry.initial_ms));
            }
        }
    }
    if ((n = sl_dsl__mget(m, "timeout")) &&
        sl_dsl__read_duration(L, n, "timeout", 1, &s->timeout_ms) == 0)
        s->n_timeout = n;
    if ((n = sl_dsl__mget(m, "lease")) &&
        sl_dsl__read_duration(L, n, "lease", 1000, &s->lease_ms) == 0)
        s->n_lease = n;
    if ((n = sl_dsl__mget(m, "heartbeat")) &&
        sl_dsl__read_duration(L, n, "heartbeat", 1, &s->heartbeat_ms) == 0) {
        s->n_heartbeat = n;
        s->heartbeat_set = 1;
    }
    if ((n = sl_dsl__mget(m, "concurrency")))
        sl_dsl__read_int(L, n, "concurrency", 1, 1024, &s->concurrency);
    if ((n = sl_dsl__mget(m, "batch")))
        sl_dsl__read_int(L, n, "batch", 1, 1000, &s->batch);
    if ((n = sl_dsl__mget(m, "priority")))
        sl_dsl__read_int(L, n, "priority", -1000000, 1000000, &s->priority);
    if ((n = sl_dsl__mget(m, "sql_writes")))
        sl_dsl__read_bool(L, n, "sql_writes", &s->sql_writes);

    /* Heartbeat against timeout and lease, reported where a value was set
     * at this level (values inherited unchanged were checked there). */
    int64_t hb = s->heartbeat_set ? s->heartbeat_ms : s->lease_ms / 3;
    if (s->n_heartbeat || s->n_timeout || s->n_lease) {
        const node *at = s->n_heartbeat ? s->n_heartbeat
                         : s->n_timeout ? s->n_timeout
                                        : s->n_lease;
        const char *src = s->heartbeat_set ? "" : " (the default, lease/3)";
        if (hb >= s->timeout_ms)
            sl_dsl__diag(L, at,
                         "heartbeat %s%s must be shorter than timeout %s",
                         fmt_ms(hb), src, fmt_ms(s->timeout_ms));
        if (hb >= s->lease_ms)
            sl_dsl__diag(L, at, "heartbeat %s%s must be shorter than lease %s",
                         fmt_ms(hb), src, fmt_ms(s->lease_ms));
    }
}

void sl_dsl__apply_settings(const settings *s, sl_stage *st) {
    st->retry = s->retry;
    uint32_t mask = s->has_on ? s->on_mask : sl_errclass_default_mask();
    if (s->has_fail) mask &= ~s->fail_mask;
    st->retry.retry_mask = mask;
    st->timeout_ms = s->timeout_ms;
    st->lease_ms = s->lease_ms;
    st->heartbeat_ms = s->heartbeat_set ? s->heartbeat_ms : s->lease_ms / 3;
    st->concurrency = s->concurrency;
    st->batch = s->batch;
    st->priority = s->priority;
    st->sql_writes = s->sql_writes;
}

static const char *const subject_keys[] = {
    "table",  "key",    "key_type", "foreign_key", "status",
    "progress", "detail", "channel", NULL};

/* interviews -> interview_id; categories -> category_id; boxes -> box_id;
 * classes -> class_id. Anything subtler: set foreign_key. */
static char *default_fk(arena *a, const char *table) {
    size_t n = strlen(table);
    char buf[256];
    if (n >= sizeof buf - 8) return NULL;
    memcpy(buf, table, n + 1);
    if (n > 3 && !strcmp(buf + n - 3, "ies")) {
        strcpy(buf + n - 3, "y");
    } else if (n > 4 &&
               (!strcmp(buf + n - 4, "sses") || !strcmp(buf + n - 3, "xes") ||
                !strcmp(buf + n - 4, "ches") || !strcmp(buf + n - 4, "shes"))) {
        buf[n - 2] = '\0';
    } else if (n > 1 && buf[n - 1] == 's' && buf[n - 2] != 's') {
        buf[n - 1] = '\0';
    }
    strcat(buf, "_id");
    return sl_dsl__arena_strdup(a, buf);
}

static void read_subject(loader *L, const node *n, sl_pipeline *p, draft *dr) {
    if (!sl_dsl__expect_kind(L, n, N_MAP, "subject")) return;
    p->has_subject = 1;
    sl_subject *s = &p->subject;
    sl_dsl__check_keys(L, n, "subject", subject_keys);
    const node *v;
    if (!(v = sl_dsl__mget(n, "table")))
        sl_dsl__diag(L, n, "subject: missing required key 'table'");
    else
        s->table = sl_dsl__read_ident(L, v, "subject table", ID_SQL);
    s->key = "id";
    if ((v = sl_dsl__mget(n, "key")))
        s->key = sl_dsl__read_ident(L, v, "subject key", ID_SQL);
    s->key_type = SL_KEY_UUID;
    if ((v = sl_dsl__mget(n, "key_type")) &&
        sl_dsl__expect_kind(L, v, N_SCALAR, "subject.key_type") &&
        sl_key_type_parse(v->s, &s->key_type) != 0) {
        static const char *const types[] = {"uuid", "bigint", "integer",
                                            "text", NULL};
        sl_dsl__diag(L, v,
                     "subject.key_type: '%s' is not a key type%s (allowed: "
                     "uuid, bigint, integer, text)",
                     sl_dsl__show(v->s),
                     sl_dsl__did_you_mean(v->s, types, 4));
    }
    if ((v = sl_dsl__mget(n, "foreign_key"))) {
        s->fk = sl_dsl__read_ident(L, v, "foreign_key", ID_SQL);
    } else if (s->table) {
        s->fk = default_fk(L->a, s->table);
        if (s->fk && strlen(s->fk) > MAX_IDENT) {
            sl_dsl__diag(
                L, sl_dsl__mget(n, "table"),
                "the default foreign_key '%s' is longer than %d bytes; set "
                "'foreign_key'",
                sl_dsl__show(s->fk), MAX_IDENT);
            s->fk = NULL;
        }
    }
    if (s->fk)
        if (sl_engine_column(s->fk))
            sl_dsl__diag(
                L,
                sl_dsl__mget(n, "foreign_key") ? sl_dsl__mget(n, "foreign_key")
                                               : n,
                "foreign_key '%s' is a column the engine manages; choose "
                "another name",
                s->fk);
    s->status_column = "status";
    if (!(v = sl_dsl__mget(n, "status"))) {
        sl_dsl__diag(L, n,
                     "subject: missing required key 'status' (with 'values')");
    } else if (sl_dsl__expect_kind(L, v, N_MAP, "subject.status")) {
        static const char *const keys[] = {"column", "values", NULL};
        sl_dsl__check_keys(L, v, "subject.status", keys);
        const node *c = sl_dsl__mget(v, "column"),
                   *vals = sl_dsl__mget(v, "values");
        if (c)
            s->status_column =
                sl_dsl__read_ident(L, c, "status column", ID_SQL);
        if (!vals) {
            sl_dsl__diag(L, v, "subject.status: missing required key 'values'");
        } else if (sl_dsl__expect_kind(L, vals, N_SEQ,
                                       "subject.status.values")) {
            if (vals->n == 0)
                sl_dsl__diag(L, vals,
                             "subject.status.values: expected at least one "
                             "value");
            else if (vals->n > MAX_STATUS_VALUES)
                sl_dsl__diag(L, vals,
                             "subject.status.values: at most %d values",
                             MAX_STATUS_VALUES);
            else {
                s->status_values = sl_dsl__arena_alloc(
                    L->a, vals->n * sizeof *s->status_values);
                for (size_t i = 0; s->status_values && i < vals->n; i++) {
                    const char *sv = sl_dsl__read_ident(
                        L, vals->vals[i], "status value", ID_NAME);
                    if (!sv) continue;
                    int dup = 0;
                    for (size_t j = 0; j < s->nstatus_values; j++)
                        if (!strcmp(s->status_values[j], sv)) dup = 1;
                    if (dup)
                        sl_dsl__diag(L, vals->vals[i],
                                     "status value '%s' is listed "
                                     "twice",
                                     sv);
                    else
                        s->status_values[s->nstatus_values++] = sv;
                }
            }
        }
    }
    if ((v = sl_dsl__mget(n, "progress")))
        s->progress_column =
            sl_dsl__read_ident(L, v, "progress column", ID_SQL);
    if ((v = sl_dsl__mget(n, "detail")))
        s->detail_column = sl_dsl__read_ident(L, v, "detail column", ID_SQL);
    if ((v = sl_dsl__mget(n, "channel"))) {
        s->channel = sl_dsl__read_ident(L, v, "subject channel", ID_SQL);
        dr->sline = v->line;
        dr->scol = v->col;
    }
    /* The subject's own columns must be distinct. */
    const char *cols[4] = {s->key, s->status_column, s->progress_column,
                           s->detail_column};
    static const char *const what[4] = {"key", "status column", "progress",
                                        "detail"};
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            if (cols[i] && cols[j] && !strcmp(cols[i], cols[j]))
                sl_dsl__diag(L, n, "subject: %s and %s are both column '%s'",
                             what[i], what[j], cols[i]);
}

static void read_security(loader *L, const node *n, sl_pipeline *p) {
    sl_rls *r = &p->rls;
    r->enabled = 1;
    const node *inh = NULL;
    if (n && sl_dsl__expect_kind(L, n, N_MAP, "security")) {
        static const char *const keys[] = {"rls", "inherit", NULL};
        sl_dsl__check_keys(L, n, "security", keys);
        const node *v;
        if ((v = sl_dsl__mget(n, "rls")))
            sl_dsl__read_bool(L, v, "rls", &r->enabled);
        inh = sl_dsl__mget(n, "inherit");
    } else if (n) {
        return;
    }
    if (p->has_subject) {
        r->table = p->subject.table;
        r->column = p->subject.fk;
        r->key = p->subject.key;
    }
    if (inh && sl_dsl__expect_kind(L, inh, N_MAP, "security.inherit")) {
        static const char *const keys[] = {"table", "column", "key", NULL};
        sl_dsl__check_keys(L, inh, "security.inherit", keys);
        const node *v;
        if ((v = sl_dsl__mget(inh, "table")))
            r->table =
                sl_dsl__read_ident(L, v, "security.inherit table", ID_SQL);
        if ((v = sl_dsl__mget(inh, "column")))
            r->column =
                sl_dsl__read_ident(L, v, "security.inherit column", ID_SQL);
        if ((v = sl_dsl__mget(inh, "key")))
            r->key = sl_dsl__read_ident(L, v, "security.inherit key", ID_SQL);
        else if (!p->has_subject)
            r->key = "id";
        if (!p->has_subject && r->enabled) {
            if (!sl_dsl__mget(inh, "table"))
                sl_dsl__diag(L, inh,
                             "security.inherit: missing required key 'table'");
            if (!sl_dsl__mget(inh, "column"))
                sl_dsl__diag(L, inh,
                             "security.inherit: missing required key "
                             "'column'");
        }
    } else if (!p->has_subject && r->enabled && (!inh)) {
        sl_dsl__diag_at(
            L, L->file, p->line, p->col,
            "pipeline '%s' has no subject, so it needs security.inherit "
            "{table, column, key} (or security.rls: false)",
            p->name ? p->name : "?");
    }
}

/* ---- one file --------------------------------------------------------------
 */

static const char *const top_keys[] = {
    "pipeline", "subject", "security", "sweep", "defaults", "stages", "alerts",
    NULL};

static draft *new_draft(loader *L) {
    if (L->ndrafts == L->capdrafts) {
        size_t cap = L->capdrafts ? L->capdrafts * 2 : 4;
        draft *d = realloc(L->drafts, cap * sizeof *d);
        if (!d) return NULL;
        L->drafts = d;
        L->capdrafts = cap;
    }
    draft *d = &L->drafts[L->ndrafts++];
    memset(d, 0, sizeof *d);
    return d;
}

void sl_dsl__read_pipeline(loader *L, const node *root) {
    assert(L && L->a && L->t && root);
    if (root->kind != N_MAP) {
        sl_dsl__diag(L, root,
                     "expected a mapping with 'pipeline' and 'stages' at "
                     "the top level, got %s",
                     sl_dsl__describe(root));
        return;
    }
    draft *dr = new_draft(L);
    if (!dr) {
        sl_dsl__diag(L, root, "out of memory");
        return;
    }
    sl_pipeline *p = &dr->p;
    dr->file = sl_dsl__arena_strdup(L->a, L->file);
    p->file = sl_dsl__arena_strdup(L->a, L->abs);
    p->line = root->line;
    p->col = root->col;
    sl_dsl__check_keys(L, root, "a pipeline", top_keys);
    const node *n;
    if (!(n = sl_dsl__mget(root, "pipeline")))
        sl_dsl__diag(L, root,
                     "missing required key 'pipeline' (the pipeline's name)");
    else {
        p->name = sl_dsl__read_ident(L, n, "pipeline name", ID_NAME);
        if (!p->name && n->kind == N_SCALAR)
            p->name = sl_dsl__arena_strdup(L->a, n->s);
        p->line = n->line;
        p->col = n->col;
    }
    if ((n = sl_dsl__mget(root, "subject"))) read_subject(L, n, p, dr);
    read_security(L, sl_dsl__mget(root, "security"), p);

    p->sweep_interval_ms = 5000;
    p->sweep_age_ms = 60000;
    if ((n = sl_dsl__mget(root, "sweep")) &&
        sl_dsl__expect_kind(L, n, N_MAP, "sweep")) {
        static const char *const keys[] = {"interval", "pending_age", NULL};
        sl_dsl__check_keys(L, n, "sweep", keys);
        const node *v;
        if ((v = sl_dsl__mget(n, "interval")))
            sl_dsl__read_duration(L, v, "interval", 100, &p->sweep_interval_ms);
        if ((v = sl_dsl__mget(n, "pending_age")))
            sl_dsl__read_duration(L, v, "pending_age", 1000, &p->sweep_age_ms);
    }

    settings defaults;
    engine_defaults(&defaults);
    if ((n = sl_dsl__mget(root, "defaults")) &&
        sl_dsl__expect_kind(L, n, N_MAP, "defaults")) {
        sl_dsl__check_keys(L, n, "defaults", defaults_keys);
        sl_dsl__read_settings(L, n, &defaults);
    }

    const node *stages = sl_dsl__mget(root, "stages");
    if (!stages) {
        sl_dsl__diag(L, root, "missing required key 'stages'");
        return;
    }
    if (!sl_dsl__expect_kind(L, stages, N_MAP, "stages")) return;
    if (stages->n == 0) {
        sl_dsl__diag(L, stages, "stages: expected at least one stage");
        return;
    }
    if (stages->n > MAX_STAGES) {
        sl_dsl__diag(L, stages,
                     "stages: at most %d stages per pipeline, got %zu",
                     MAX_STAGES, stages->n);
        return;
    }
    size_t ns = stages->n;
    p->stages = sl_dsl__arena_alloc(L->a, ns * sizeof *p->stages);
    dr->pos = sl_dsl__arena_alloc(L->a, ns * sizeof *dr->pos);
    stage_aux *ax = sl_dsl__arena_alloc(L->t, ns * sizeof *ax);
    if (!p->stages || !dr->pos || !ax) {
        sl_dsl__diag(L, root, "out of memory");
        return;
    }
    for (size_t i = 0; i < ns; i++) {
        dr->pos[i].file = dr->file;
        sl_dsl__read_stage(L, p, stages->keys[i], stages->vals[i], &defaults,
                           &p->stages[i], &ax[i], &dr->pos[i]);
        p->nstages++;
    }

    /* RLS through a column other than the subject's foreign key: every
     * queue must declare it. */
    if (p->rls.enabled && p->rls.column &&
        !(p->has_subject && p->subject.fk &&
          !strcmp(p->rls.column, p->subject.fk))) {
        for (size_t i = 0; i < ns; i++) {
            sl_stage *st = &p->stages[i];
            if (st->name && !sl_stage_column(st, p->rls.column))
                sl_dsl__diag(L, ax[i].key,
                             "stage '%s' does not declare column '%s', which "
                             "security.inherit needs",
                             st->name, p->rls.column);
        }
    }
    sl_dsl__check_graph(L, p, ax);
    if ((n = sl_dsl__mget(root, "alerts"))) sl_dsl__read_alerts(L, n, p);
}
