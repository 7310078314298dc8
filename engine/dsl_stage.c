/* dsl_stage.c - one stage of a pipeline: queue, channel, columns, the
 * status mapping of its subject, and next.
 */
#include "dsl_priv.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static void read_column(loader *L, const node *k, const node *v, sl_column *c,
                        const char *fk) {
    c->line = k->line;
    c->col = k->col;
    c->name = sl_dsl__read_ident(L, k, "column", ID_SQL);
    if (c->name) {
        if (sl_engine_column(c->name))
            sl_dsl__diag(L, k,
                         "column '%s' is managed by the engine; choose another "
                         "name",
                         c->name);
        if (fk && !strcmp(c->name, fk))
            sl_dsl__diag(
                L, k,
                "column '%s' is the subject's foreign key, which the engine "
                "adds itself",
                c->name);
    }
    const node *tn = v;
    if (v->kind == N_MAP) {
        static const char *const keys[] = {"type", "references", "not_null",
                                           NULL};
        sl_dsl__check_keys(L, v, "a column", keys);
        tn = sl_dsl__mget(v, "type");
        if (!tn)
            sl_dsl__diag(L, v, "column '%s': missing required key 'type'",
                         sl_dsl__show(sl_dsl__key_name(k)));
        const node *r = sl_dsl__mget(v, "references");
        if (r && sl_dsl__expect_kind(L, r, N_SCALAR, "references")) {
            const char *dot = strchr(r->s, '.');
            char tbl[128];
            const char *col = dot ? dot + 1 : "id";
            size_t tl = dot ? (size_t)(dot - r->s) : strlen(r->s);
            if (tl >= sizeof tbl || !*col || strchr(col, '.') || tl == 0) {
                sl_dsl__diag(L, r,
                             "references: expected table.column (e.g. "
                             "projects.id), got '%s'",
                             sl_dsl__show(r->s));
            } else {
                memcpy(tbl, r->s, tl);
                tbl[tl] = '\0';
                if (sl_dsl__check_ident(L, r, tbl, "referenced table",
                                        ID_SQL) == 0 &&
                    sl_dsl__check_ident(L, r, col, "referenced column",
                                        ID_SQL) == 0) {
                    c->ref_table = sl_dsl__arena_strdup(L->a, tbl);
                    c->ref_column = sl_dsl__arena_strdup(L->a, col);
                }
            }
        }
        const node *nn = sl_dsl__mget(v, "not_null");
        if (nn) sl_dsl__read_bool(L, nn, "not_null", &c->not_null);
    }
    if (tn && sl_dsl__expect_kind(L, tn, N_SCALAR, "column type")) {
        c->type = sl_type_normalise(tn->s);
        if (!c->type)
            sl_dsl__diag(
                L, tn,
                "column '%s': unsupported type '%s'%s (allowed: text, bytea, "
                "jsonb, json, uuid, boolean, smallint, integer, bigint, "
                "real, double precision, numeric, timestamptz, date, "
                "text[], integer[])",
                sl_dsl__show(sl_dsl__key_name(k)), sl_dsl__show(tn->s),
                sl_dsl__did_you_mean(tn->s, sl_column_types,
                                     sl_dsl__count_list(sl_column_types)));
    }
}

/* A subject status value: one of subject.status.values (the model's own
 * string is returned), or NULL after a diagnostic. */
static const char *read_status_value(loader *L, const node *v,
                                     const sl_subject *subj) {
    if (!sl_dsl__expect_kind(L, v, N_SCALAR, "status")) return NULL;
    for (size_t i = 0; subj && i < subj->nstatus_values; i++)
        if (!strcmp(subj->status_values[i], v->s))
            return subj->status_values[i];
    if (subj && subj->nstatus_values)
        sl_dsl__diag(L, v, "status '%s' is not one of subject.status.values%s",
                     sl_dsl__show(v->s),
                     sl_dsl__did_you_mean(v->s, subj->status_values,
                                          subj->nstatus_values));
    return NULL;
}

static void read_mapping(loader *L, const node *n, const char *what,
                         const sl_subject *subj, int allow_progress,
                         sl_mapping *m, const node **prog_at) {
    m->progress = -1;
    if (!sl_dsl__expect_kind(L, n, N_MAP, what)) return;
    static const char *const keys[] = {"status", "progress", "detail", NULL};
    static const char *const keys_np[] = {"status", "detail", NULL};
    sl_dsl__check_keys(L, n, what, allow_progress ? keys : keys_np);
    const node *v;
    if ((v = sl_dsl__mget(n, "status")))
        m->status = read_status_value(L, v, subj);
    if (allow_progress && (v = sl_dsl__mget(n, "progress")) &&
        sl_dsl__read_int(L, v, "progress", 0, 100, &m->progress) == 0 &&
        prog_at)
        *prog_at = v;
    if ((v = sl_dsl__mget(n, "detail")))
        m->detail = sl_dsl__read_text(L, v, "detail");
}

static const char *const stage_keys[] = {
    "queue",       "channel",  "handler",   "with",       "columns",
    "hooks",       "provider", "providers", "sql_writes", "status",
    "next",        "retry",    "timeout",   "lease",      "heartbeat",
    "concurrency", "batch",    "priority",  "retention",  "fair",
    "limit",       "schedule", "unique",    NULL};

static void read_status(loader *L, const node *n, sl_stage *st,
                        const sl_pipeline *p, stage_aux *ax) {
    sl_status_map *sm = &st->status;
    sm->on_start.progress = sm->on_done.progress = sm->on_error.progress = -1;
    sm->progress_from = sm->progress_to = -1;
    if (!n) return;
    if (!sl_dsl__expect_kind(L, n, N_MAP, "status")) return;
    if (!p->has_subject) {
        sl_dsl__diag(L, n,
                     "status: a status mapping needs a subject, and pipeline "
                     "'%s' has none",
                     p->name ? p->name : "?");
        return;
    }
    static const char *const keys[] = {"on_start", "progress", "on_done",
                                       "on_error", NULL};
    sl_dsl__check_keys(L, n, "status", keys);
    const sl_subject *subj = &p->subject;
    const node *v;
    if ((v = sl_dsl__mget(n, "on_start")))
        read_mapping(L, v, "on_start", subj, 1, &sm->on_start, &ax->prog[0]);
    if ((v = sl_dsl__mget(n, "on_done")))
        read_mapping(L, v, "on_done", subj, 1, &sm->on_done, &ax->prog[3]);
    if ((v = sl_dsl__mget(n, "on_error")))
        read_mapping(L, v, "on_error", subj, 1, &sm->on_error, NULL);
    if ((v = sl_dsl__mget(n, "progress")) &&
        sl_dsl__expect_kind(L, v, N_MAP, "progress")) {
        static const char *const pk[] = {"status", "from", "to", NULL};
        sl_dsl__check_keys(L, v, "progress", pk);
        const node *ps = sl_dsl__mget(v, "status");
        if (ps) sm->on_progress_status = read_status_value(L, ps, subj);
        const node *f = sl_dsl__mget(v, "from"), *t = sl_dsl__mget(v, "to");
        int from = -1, to = -1;
        if (!f) sl_dsl__diag(L, v, "progress: missing required key 'from'");
        if (!t) sl_dsl__diag(L, v, "progress: missing required key 'to'");
        int okf =
            f && sl_dsl__read_int(L, f, "progress.from", 0, 100, &from) == 0;
        int okt = t && sl_dsl__read_int(L, t, "progress.to", 0, 100, &to) == 0;
        if (okf && okt) {
            if (from > to) {
                sl_dsl__diag(L, f,
                             "progress.from %d is greater than progress.to %d",
                             from, to);
            } else {
                sm->progress_from = from;
                sm->progress_to = to;
                ax->prog[1] = f;
                ax->prog[2] = t;
            }
        }
    }
}

/* `retention: {done: 7d, error: 30d, cancelled: 7d}`: how long finished
 * jobs stay; a status left out keeps its jobs forever. */
static void read_retention(loader *L, const node *n, sl_stage *st) {
    if (!sl_dsl__expect_kind(L, n, N_MAP, "retention")) return;
    static const char *const keys[] = {"done", "error", "cancelled",
                                       "history", NULL};
    sl_dsl__check_keys(L, n, "retention", keys);
    const node *h = sl_dsl__mget(n, "history");
    if (h) sl_dsl__read_bool(L, h, "retention.history", &st->retention_history);
    for (int i = 0; i < SL_RETAIN__COUNT; i++) {
        const node *v = sl_dsl__mget(n, sl_retain_status[i]);
        char what[40];
        snprintf(what, sizeof what, "retention.%s", sl_retain_status[i]);
        if (v) sl_dsl__read_duration(L, v, what, 0, &st->retention_ms[i]);
    }
}

/* The `key` of `fair:` or `limit:` (node n): a declared column of st.
 * Returns the model's column name, or NULL after a diagnostic. */
static const char *read_key_column(loader *L, const node *n, const char *what,
                                   const sl_stage *st) {
    const node *k = sl_dsl__mget(n, "key");
    if (!k) {
        sl_dsl__diag(L, n, "%s: missing required key 'key' (a declared column)",
                     what);
        return NULL;
    }
    const char *name = sl_dsl__read_ident(L, k, "key", ID_SQL);
    if (!name) return NULL;
    const sl_column *c = sl_stage_column(st, name);
    if (!c) {
        const char *cands[MAX_COLUMNS];
        for (size_t i = 0; i < st->ncolumns && i < MAX_COLUMNS; i++)
            cands[i] = st->columns[i].name;
        sl_dsl__diag(L, k, "%s.key: '%s' is not a declared column of the stage%s",
                     what, name,
                     sl_dsl__did_you_mean(name, cands, st->ncolumns));
        return NULL;
    }
    const char *t = sl_type_normalise(c->type);
    if (t && strcmp(t, "json") == 0) {
        /* Claims order and compare the keys; json has no ordering. */
        sl_dsl__diag(L, k, "%s.key: column '%s' has type json, which cannot"
                     " be ordered; declare it jsonb", what, name);
        return NULL;
    }
    return c->name;
}

/* `fair: {key: col}` and `limit: {key: col, max: N}`, after the columns. */
static void read_claim_policy(loader *L, const node *v, sl_stage *st) {
    const node *n;
    if ((n = sl_dsl__mget(v, "fair")) &&
        sl_dsl__expect_kind(L, n, N_MAP, "fair")) {
        static const char *const keys[] = {"key", NULL};
        sl_dsl__check_keys(L, n, "fair", keys);
        st->fair_key = read_key_column(L, n, "fair", st);
    }
    if ((n = sl_dsl__mget(v, "limit")) &&
        sl_dsl__expect_kind(L, n, N_MAP, "limit")) {
        static const char *const keys[] = {"key", "max", NULL};
        sl_dsl__check_keys(L, n, "limit", keys);
        const char *key = read_key_column(L, n, "limit", st);
        const node *m = sl_dsl__mget(n, "max");
        int max = 0;
        if (!m)
            sl_dsl__diag(L, n, "limit: missing required key 'max' (1..10000)");
        else if (sl_dsl__read_int(L, m, "limit.max", 1, 10000, &max) == 0 &&
                 key) {
            st->limit_key = key;
            st->limit_max = max;
        }
    }
}

/* Reads a `next` list into a new set of ax. Returns the set (valid until
 * the next call), or NULL after a diagnostic. */
next_set *sl_dsl__read_next(loader *L, const node *n, stage_aux *ax) {
    assert(L && n && ax);
    const node *items[MAX_NEXT];
    size_t cnt = 0;
    if (n->kind == N_SCALAR) {
        items[cnt++] = n;
    } else if (n->kind == N_SEQ) {
        if (n->n > MAX_NEXT) {
            sl_dsl__diag(L, n, "next: at most %d entries, got %zu", MAX_NEXT,
                         n->n);
            return NULL;
        }
        for (size_t i = 0; i < n->n; i++)
            items[cnt++] = n->vals[i];
    } else {
        sl_dsl__diag(L, n,
                     "next: expected a stage name or a list of them, got %s",
                     sl_dsl__describe(n));
        return NULL;
    }
    if (ax->nsets == ax->capsets) {
        size_t cap = ax->capsets ? ax->capsets * 2 : 2;
        next_set *v = sl_dsl__arena_alloc(L->t, cap * sizeof *v);
        if (!v) return NULL;
        if (ax->nsets) memcpy(v, ax->sets, ax->nsets * sizeof *v);
        ax->sets = v;
        ax->capsets = cap;
    }
    next_set *set = &ax->sets[ax->nsets];
    memset(set, 0, sizeof *set);
    set->next = sl_dsl__arena_alloc(L->a, (cnt ? cnt : 1) * sizeof *set->next);
    set->next_at =
        sl_dsl__arena_alloc(L->t, (cnt ? cnt : 1) * sizeof *set->next_at);
    set->to_at =
        sl_dsl__arena_alloc(L->t, (cnt ? cnt : 1) * sizeof *set->to_at);
    if (!set->next || !set->next_at || !set->to_at) return NULL;
    ax->nsets++;
    for (size_t i = 0; i < cnt; i++) {
        const node *it = items[i], *name = it, *map = NULL;
        if (it->kind == N_MAP) {
            static const char *const keys[] = {"stage", "map", NULL};
            sl_dsl__check_keys(L, it, "next", keys);
            name = sl_dsl__mget(it, "stage");
            map = sl_dsl__mget(it, "map");
            if (!name) {
                sl_dsl__diag(L, it, "next: missing required key 'stage'");
                continue;
            }
        } else if (it->kind != N_SCALAR) {
            sl_dsl__diag(L, it,
                         "next: expected a stage name or {stage, map}, got %s",
                         sl_dsl__describe(it));
            continue;
        }
        const char *sn = sl_dsl__read_ident(L, name, "next stage", ID_NAME);
        if (!sn) continue;
        sl_next *nx = &set->next[set->nnext];
        nx->stage_name = sn;
        set->next_at[set->nnext] = name;
        if (map && sl_dsl__expect_kind(L, map, N_MAP, "map")) {
            if (map->n > MAX_MAP) {
                sl_dsl__diag(L, map, "map: at most %d entries", MAX_MAP);
            } else if (map->n) {
                nx->map = sl_dsl__arena_alloc(L->a, map->n * sizeof *nx->map);
                set->to_at[set->nnext] =
                    sl_dsl__arena_alloc(L->t, map->n * sizeof *set->to_at[0]);
                for (size_t j = 0;
                     nx->map && set->to_at[set->nnext] && j < map->n; j++) {
                    const char *to = sl_dsl__read_ident(L, map->keys[j],
                                                        "map column", ID_SQL);
                    const node *fv = map->vals[j];
                    if (!sl_dsl__expect_kind(L, fv, N_SCALAR, "map source"))
                        continue;
                    if (!fv->s[0] || strstr(fv->s, "${")) {
                        sl_dsl__diag(L, fv,
                                     "map source: expected an output field "
                                     "name, got %s",
                                     sl_dsl__describe(fv));
                        continue;
                    }
                    if (!to) continue;
                    nx->map[nx->nmap].to = to;
                    nx->map[nx->nmap].from = sl_dsl__arena_strdup(L->a, fv->s);
                    set->to_at[set->nnext][nx->nmap] = map->keys[j];
                    nx->nmap++;
                }
            }
        }
        set->nnext++;
    }
    return set;
}

void sl_dsl__read_stage(loader *L, sl_pipeline *p, const node *k, const node *v,
                        const settings *defaults, sl_stage *st, stage_aux *ax,
                        stage_pos *pos) {
    assert(L && p && k && v && defaults && st && ax && pos);
    settings s = *defaults;
    ax->key = k;
    st->line = k->line;
    st->col = k->col;
    st->name = sl_dsl__read_ident(L, k, "stage name", ID_NAME);
    /* An invalid name was reported; keep it for look-ups and messages
     * (the model is discarded anyway). */
    if (!st->name) st->name = sl_dsl__arena_strdup(L->a, sl_dsl__key_name(k));
    st->with = json_object();
    for (int i = 0; i < SL_RETAIN__COUNT; i++)
        st->retention_ms[i] = -1;
    st->status.on_start.progress = st->status.on_done.progress = -1;
    st->status.on_error.progress = -1;
    st->status.progress_from = st->status.progress_to = -1;
    sl_dsl__apply_settings(&s, st);
    const char *sname = st->name ? st->name : sl_dsl__show(sl_dsl__key_name(k));
    if (!sl_dsl__expect_kind(L, v, N_MAP, "stage")) return;
    sl_dsl__check_keys(L, v, "a stage", stage_keys);
    const node *n;

    if (!(n = sl_dsl__mget(v, "queue")))
        sl_dsl__diag(L, k,
                     "stage '%s': missing required key 'queue' (the queue "
                     "table)",
                     sname);
    else {
        st->queue = sl_dsl__read_ident(L, n, "queue", ID_SQL);
        pos->qline = n->line;
        pos->qcol = n->col;
    }
    if ((n = sl_dsl__mget(v, "channel"))) {
        st->channel = sl_dsl__read_ident(L, n, "channel", ID_SQL);
        pos->cline = n->line;
        pos->ccol = n->col;
        pos->channel_set = 1;
    } else if (st->queue) {
        pos->cline = pos->qline;
        pos->ccol = pos->qcol;
        if (strlen(st->queue) + strlen("_channel") > MAX_IDENT)
            sl_dsl__diag(
                L, sl_dsl__mget(v, "queue"),
                "the default channel '%s_channel' would be longer than %d "
                "bytes; set 'channel'",
                st->queue, MAX_IDENT);
        else
            st->channel = sl_dsl__arena_printf(L->a, "%s_channel", st->queue);
    }
    const node *provs = sl_dsl__mget(v, "providers");
    if (provs) {
        static const char *const own[] = {"handler", "with", "hooks",
                                          "sql_writes", NULL};
        for (size_t i = 0; own[i]; i++) {
            const node *kn = sl_dsl__mkey(v, own[i]);
            if (kn)
                sl_dsl__diag(L, kn,
                             "stage '%s': '%s' cannot be used together with "
                             "'providers' (each provider sets its own handler, "
                             "with, hooks and sql_writes)",
                             sname, own[i]);
        }
    } else {
        const node *kn = sl_dsl__mkey(v, "provider");
        if (kn)
            sl_dsl__diag(L, kn,
                         "stage '%s': 'provider' chooses one of the stage's "
                         "'providers', and it has none",
                         sname);
        char what[160];
        snprintf(what, sizeof what, "stage '%s'", sname);
        sl_dsl__read_impl(L, v, k, what, 1, st);
    }
    if ((n = sl_dsl__mget(v, "columns")) &&
        sl_dsl__expect_kind(L, n, N_MAP, "columns")) {
        if (n->n > MAX_COLUMNS) {
            sl_dsl__diag(L, n, "columns: at most %d columns, got %zu",
                         MAX_COLUMNS, n->n);
        } else if (n->n) {
            st->columns = sl_dsl__arena_alloc(L->a, n->n * sizeof *st->columns);
            for (size_t i = 0; st->columns && i < n->n; i++)
                read_column(L, n->keys[i], n->vals[i],
                            &st->columns[st->ncolumns++],
                            p->has_subject ? p->subject.fk : NULL);
        }
    }
    read_status(L, sl_dsl__mget(v, "status"), st, p, ax);
    if ((n = sl_dsl__mget(v, "retention"))) read_retention(L, n, st);
    read_claim_policy(L, v, st);
    if ((n = sl_dsl__mget(v, "schedule"))) sl_dsl__read_schedule(L, n, p, st);
    if ((n = sl_dsl__mget(v, "unique"))) sl_dsl__read_unique(L, n, p, st);
    if ((n = sl_dsl__mget(v, "next"))) {
        next_set *set = sl_dsl__read_next(L, n, ax);
        if (set) {
            st->next = set->next;
            st->nnext = set->nnext;
        }
    }
    /* After the stage's own next: a provider's next replaces it. */
    int provider_sql_writes =
        provs ? sl_dsl__read_providers(L, v, sname, st, ax) : -1;

    sl_dsl__read_settings(L, v, &s);
    sl_dsl__apply_settings(&s, st);
    if (provider_sql_writes >= 0) st->sql_writes = provider_sql_writes;
}
