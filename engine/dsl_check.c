/* dsl_check.c - checks over a whole pipeline and over all files: next
 * resolved, map targets declared, no cycles, every stage reachable,
 * progress never going backwards; pipeline names, queue tables and
 * channels unique across files.
 */
#include "dsl_priv.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- graph checks -------------------------------------------------------- */

static sl_stage *find_stage(sl_pipeline *p, const char *name) {
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].name && !strcmp(p->stages[i].name, name))
            return &p->stages[i];
    return NULL;
}

typedef struct graph {
    loader *L;
    sl_pipeline *p;
    stage_aux *ax;
    int *color; /* 0 white, 1 on the stack, 2 done */
    size_t *stack, depth;
    size_t *order, norder; /* post-order */
    int cyclic;
} graph;

static size_t stage_index(const sl_pipeline *p, const sl_stage *s) {
    return (size_t)(s - p->stages);
}

static void dfs(graph *g, size_t u) {
    g->color[u] = 1;
    g->stack[g->depth++] = u;
    const stage_aux *ax = &g->ax[u];
    for (size_t k = 0; k < ax->nsets; k++) {
        const next_set *set = &ax->sets[k];
        for (size_t e = 0; e < set->nnext; e++) {
            if (!set->next[e].stage) continue;
            size_t v = stage_index(g->p, set->next[e].stage);
            if (g->color[v] == 1) {
                char path[1024];
                size_t o = 0, from = 0;
                while (g->stack[from] != v)
                    from++;
                path[0] = '\0';
                for (size_t j = from; j < g->depth && o < sizeof path - 80; j++)
                    o += (size_t)snprintf(path + o, sizeof path - o, "%s -> ",
                                          g->p->stages[g->stack[j]].name);
                snprintf(path + o, sizeof path - o, "%s", g->p->stages[v].name);
                sl_dsl__diag(g->L, set->next_at[e], "cycle in next: %s", path);
                g->cyclic = 1;
            } else if (g->color[v] == 0) {
                dfs(g, v);
            }
        }
    }
    g->depth--;
    g->color[u] = 2;
    g->order[g->norder++] = u;
}

/* Progress never goes backwards: along every path, each set progress
 * value (on_start, progress.from, progress.to, on_done) is >= every value
 * set before it. Walks stages in topological order carrying the highest
 * value reached so far and who set it. */
static void check_progress(graph *g) {
    sl_pipeline *p = g->p;
    size_t n = p->nstages;
    int *floor_v = calloc(n, sizeof *floor_v);
    size_t *floor_s = calloc(n, sizeof *floor_s);
    int *floor_f = calloc(n, sizeof *floor_f);
    if (!floor_v || !floor_s || !floor_f) goto out;
    for (size_t i = 0; i < n; i++)
        floor_v[i] = -1;
    static const char *const field[4] = {"on_start progress", "progress.from",
                                         "progress.to", "on_done progress"};
    for (size_t k = g->norder; k-- > 0;) {
        size_t u = g->order[k];
        sl_stage *st = &p->stages[u];
        int vals[4] = {st->status.on_start.progress, st->status.progress_from,
                       st->status.progress_to, st->status.on_done.progress};
        int cur = floor_v[u];
        size_t cs = floor_s[u];
        int cf = floor_f[u];
        for (int f = 0; f < 4; f++) {
            if (vals[f] < 0) continue;
            if (vals[f] < cur) {
                sl_dsl__diag(
                    g->L, g->ax[u].prog[f] ? g->ax[u].prog[f] : g->ax[u].key,
                    "progress goes backwards: %s %d of stage '%s' is lower "
                    "than %s %d of stage '%s'",
                    field[f], vals[f], st->name, field[cf], cur,
                    p->stages[cs].name);
            } else {
                cur = vals[f];
                cs = u;
                cf = f;
            }
        }
        /* Every provider's next: the rule holds whichever runs. */
        for (size_t ks = 0; ks < g->ax[u].nsets; ks++) {
            const next_set *set = &g->ax[u].sets[ks];
            for (size_t i = 0; i < set->nnext; i++) {
                if (!set->next[i].stage) continue;
                size_t v = stage_index(p, set->next[i].stage);
                if (cur > floor_v[v]) {
                    floor_v[v] = cur;
                    floor_s[v] = cs;
                    floor_f[v] = cf;
                }
            }
        }
    }
out:
    free(floor_v);
    free(floor_s);
    free(floor_f);
}

void sl_dsl__check_graph(loader *L, sl_pipeline *p, stage_aux *ax) {
    assert(L && p && (p->nstages == 0 || ax));
    size_t n = p->nstages;
    if (n == 0) return;
    const char **names = calloc(n + 1, sizeof *names);
    size_t nn = 0;
    for (size_t i = 0; names && i < n; i++)
        if (p->stages[i].name) names[nn++] = p->stages[i].name;
    /* Resolve next and check map targets: every next list of every
     * stage, the chosen providers' and the others'. */
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < ax[i].nsets; k++) {
            next_set *set = &ax[i].sets[k];
            for (size_t j = 0; j < set->nnext; j++) {
                sl_next *nx = &set->next[j];
                sl_stage *t = find_stage(p, nx->stage_name);
                if (!t) {
                    sl_dsl__diag(
                        L, set->next_at[j],
                        "next stage '%s' does not exist in pipeline '%s'%s",
                        nx->stage_name, p->name ? p->name : "?",
                        names ? sl_dsl__did_you_mean(nx->stage_name, names, nn)
                              : "");
                    continue;
                }
                nx->stage = t;
                const char **cols = calloc(t->ncolumns + 1, sizeof *cols);
                size_t nc = 0;
                for (size_t c = 0; cols && c < t->ncolumns; c++)
                    if (t->columns[c].name) cols[nc++] = t->columns[c].name;
                for (size_t m = 0; m < nx->nmap; m++) {
                    if (sl_stage_column(t, nx->map[m].to)) continue;
                    sl_dsl__diag(
                        L, set->to_at[j][m],
                        "map: next stage '%s' declares no column '%s'%s",
                        t->name, nx->map[m].to,
                        cols ? sl_dsl__did_you_mean(nx->map[m].to, cols, nc)
                             : "");
                }
                free(cols);
            }
        }
    }
    free(names);

    graph g = {0};
    g.L = L;
    g.p = p;
    g.ax = ax;
    g.color = calloc(n, sizeof *g.color);
    g.stack = calloc(n, sizeof *g.stack);
    g.order = calloc(n, sizeof *g.order);
    if (!g.color || !g.stack || !g.order) goto out;
    dfs(&g, 0);
    for (size_t i = 1; i < n; i++)
        if (g.color[i] == 0 && p->stages[i].name &&
            find_stage(p, p->stages[i].name) == &p->stages[i])
            sl_dsl__diag(
                L, ax[i].key,
                "stage '%s' is not reachable from the entry stage '%s' (the "
                "first stage)",
                p->stages[i].name, p->stages[0].name ? p->stages[0].name : "?");
    /* A stage whose name repeats an earlier one was reported as a
     * duplicate key; it is not also called unreachable. The rest of the
     * graph is walked for the cycle check only. */
    for (size_t i = 1; i < n; i++)
        if (g.color[i] == 0) dfs(&g, i);
    if (!g.cyclic) check_progress(&g);
out:
    free(g.color);
    free(g.stack);
    free(g.order);
}

/* ---- across files -----------------------------------------------------------
 */

void sl_dsl__check_unique(loader *L) {
    assert(L && (L->ndrafts == 0 || L->drafts));
    for (size_t i = 0; i < L->ndrafts; i++) {
        draft *a = &L->drafts[i];
        for (size_t j = 0; j < i; j++) {
            draft *b = &L->drafts[j];
            if (a->p.name && b->p.name && !strcmp(a->p.name, b->p.name))
                sl_dsl__diag_at(L, a->file, a->p.line, a->p.col,
                                "pipeline '%s' is already defined at %s:%d:%d",
                                a->p.name, b->file, b->p.line, b->p.col);
        }
    }
    /* Queue tables against earlier queues and every subject table, and
     * channels against earlier channels (stage and subject channels). */
    for (size_t i = 0; i < L->ndrafts; i++) {
        draft *a = &L->drafts[i];
        for (size_t s = 0; s < a->p.nstages; s++) {
            sl_stage *sa = &a->p.stages[s];
            stage_pos *pa = &a->pos[s];
            int qdone = 0, cdone = 0;
            for (size_t j = 0; j <= i; j++) {
                draft *b = &L->drafts[j];
                size_t lim = j == i ? s : b->p.nstages;
                for (size_t t = 0; t < lim; t++) {
                    sl_stage *sb = &b->p.stages[t];
                    stage_pos *pb = &b->pos[t];
                    if (!qdone && sa->queue && sb->queue &&
                        !strcmp(sa->queue, sb->queue)) {
                        sl_dsl__diag_at(
                            L, a->file, pa->qline, pa->qcol,
                            "queue table '%s' is already used by stage "
                            "'%s' of pipeline '%s' (%s:%d:%d)",
                            sa->queue, sb->name ? sb->name : "?",
                            b->p.name ? b->p.name : "?", b->file, pb->qline,
                            pb->qcol);
                        qdone = 1;
                    }
                    /* A default channel repeats a duplicate queue's
                     * error: say it once. */
                    if (qdone && !pa->channel_set) cdone = 1;
                    if (!cdone && sa->channel && sb->channel &&
                        !strcmp(sa->channel, sb->channel)) {
                        sl_dsl__diag_at(
                            L, a->file, pa->cline, pa->ccol,
                            "channel '%s' is already used by stage '%s' "
                            "of pipeline '%s' (%s:%d:%d)",
                            sa->channel, sb->name ? sb->name : "?",
                            b->p.name ? b->p.name : "?", b->file, pb->cline,
                            pb->ccol);
                        cdone = 1;
                    }
                }
            }
            for (size_t j = 0; j < L->ndrafts; j++) {
                draft *b = &L->drafts[j];
                if (!qdone && sa->queue && b->p.has_subject &&
                    b->p.subject.table &&
                    !strcmp(sa->queue, b->p.subject.table)) {
                    sl_dsl__diag_at(L, a->file, pa->qline, pa->qcol,
                                    "queue table '%s' is the subject table of "
                                    "pipeline '%s'",
                                    sa->queue, b->p.name ? b->p.name : "?");
                    qdone = 1;
                }
                if (!cdone && sa->channel && b->p.has_subject &&
                    b->p.subject.channel &&
                    !strcmp(sa->channel, b->p.subject.channel)) {
                    sl_dsl__diag_at(
                        L, a->file, pa->cline, pa->ccol,
                        "channel '%s' is already the subject channel of "
                        "pipeline '%s' (%s:%d:%d)",
                        sa->channel, b->p.name ? b->p.name : "?", b->file,
                        b->sline, b->scol);
                    cdone = 1;
                }
            }
        }
        if (a->p.has_subject && a->p.subject.channel)
            for (size_t j = 0; j < i; j++) {
                draft *b = &L->drafts[j];
                if (b->p.has_subject && b->p.subject.channel &&
                    !strcmp(a->p.subject.channel, b->p.subject.channel)) {
                    sl_dsl__diag_at(
                        L, a->file, a->sline, a->scol,
                        "channel '%s' is already the subject channel of "
                        "pipeline '%s' (%s:%d:%d)",
                        a->p.subject.channel, b->p.name ? b->p.name : "?",
                        b->file, b->sline, b->scol);
                    break;
                }
            }
    }
}
