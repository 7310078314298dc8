/* dsl.c - the pipeline DSL: YAML files -> the immutable sl_model.
 *
 * A load runs in three passes per file and one over all files:
 *   1. libyaml's event parser builds a small tree of nodes that remember
 *      their line and column (anchors, aliases, tags and deep nesting are
 *      refused here, so nothing downstream can blow up; dsl_yaml.c);
 *   2. the tree is read into a pipeline (types, ranges, identifiers,
 *      defaults inherited, ${VAR} interpolated, `with` turned into JSON,
 *      Lua hooks compiled; a stage's `providers` are all read and checked
 *      and the one the environment chooses fills the stage; dsl_scalar.c,
 *      dsl_pipeline.c, dsl_stage.c, dsl_provider.c);
 *   3. the pipeline is checked as a graph (next resolved, cycles,
 *      reachability, progress monotonic, map targets), over every
 *      provider's next so the result does not depend on the environment
 *      (dsl_check.c);
 *   4. across files: pipeline names, queue tables and channels unique,
 *      then each handler's own validate hook.
 * Every check records a diagnostic and carries on, so one run reports
 * every error. The model lives in one arena freed by sl_model_free().
 *
 * This file holds the entry points, the reading of files and directories,
 * and the diagnostics with their suggestions.
 */
#include "dsl_priv.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "handler.h"

/* ---- diagnostics ------------------------------------------------------- */

void sl_diags_free(sl_diags *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->items[i].file);
        free(d->items[i].message);
    }
    free(d->items);
    d->items = NULL;
    d->n = d->cap = 0;
}

char *sl_diags_format(const sl_diags *d) {
    size_t total = 1;
    for (size_t i = 0; d && i < d->n; i++)
        total += strlen(d->items[i].file ? d->items[i].file : "") +
                 strlen(d->items[i].message) + 32;
    char *s = malloc(total);
    if (!s) return NULL;
    size_t len = 0;
    s[0] = '\0';
    for (size_t i = 0; d && i < d->n; i++) {
        const sl_diag *g = &d->items[i];
        const char *f = g->file ? g->file : "";
        int n;
        if (g->line > 0)
            n = snprintf(s + len, total - len, "%s:%d:%d: %s\n", f, g->line,
                         g->col, g->message);
        else
            n = snprintf(s + len, total - len, "%s: %s\n", f, g->message);
        if (n > 0) len += (size_t)n;
    }
    return s;
}

static void vdiag_at(loader *L, const char *file, int line, int col,
                     const char *fmt, va_list ap) {
    sl_diags *d = L->d;
    if (L->full) return;
    char msg[1024];
    if (d->n + 1 >= MAX_DIAGS) {
        L->full = 1;
        snprintf(msg, sizeof msg, "too many errors (%d); stopping", MAX_DIAGS);
    } else {
        vsnprintf(msg, sizeof msg, fmt, ap);
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        sl_diag *items = realloc(d->items, cap * sizeof *items);
        if (!items) return;
        d->items = items;
        d->cap = cap;
    }
    sl_diag *g = &d->items[d->n];
    g->file = strdup(file ? file : "");
    g->message = strdup(msg);
    if (!g->file || !g->message) {
        free(g->file);
        free(g->message);
        return;
    }
    g->line = line;
    g->col = col;
    d->n++;
}

void sl_dsl__diag_at(loader *L, const char *file, int line, int col,
                     const char *fmt, ...) {
    assert(L && fmt);
    va_list ap;
    va_start(ap, fmt);
    vdiag_at(L, file, line, col, fmt, ap);
    va_end(ap);
}

/* An error at node n of the current file. */
void sl_dsl__diag(loader *L, const node *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vdiag_at(L, L->file, n ? n->line : 0, n ? n->col : 0, fmt, ap);
    va_end(ap);
}

/* A printable, bounded rendering of a value for messages: control bytes
 * escaped, long values cut with "...". Returns a static buffer among
 * four rotating ones, so a message can quote up to four values. */
const char *sl_dsl__show(const char *s) {
    assert(s);
    static char bufs[4][100];
    static int k;
    char *b = bufs[k++ & 3];
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (o > 60) {
            memcpy(b + o, "...", 4);
            return b;
        }
        if (*p < 0x20 || *p == 0x7f)
            o += (size_t)snprintf(b + o, sizeof bufs[0] - o, "\\x%02x", *p);
        else
            b[o++] = (char)*p;
    }
    b[o] = '\0';
    return b;
}

/* What a node is, for "expected X, got Y" messages. */
const char *sl_dsl__describe(const node *n) {
    assert(n);
    static char buf[4][120];
    static int k;
    if (n->kind == N_MAP) return "a mapping";
    if (n->kind == N_SEQ) return "a list";
    if (n->plain &&
        (n->len == 0 || strcmp(n->s, "~") == 0 || strcmp(n->s, "null") == 0))
        return "an empty value";
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "'%s'", sl_dsl__show(n->s));
    return b;
}

/* ---- suggestions -------------------------------------------------------- */

size_t sl_dsl__count_list(const char *const *l) {
    size_t n = 0;
    while (l[n])
        n++;
    return n;
}

/* " (did you mean 'x'?)" or "" in a rotating static buffer. */
const char *sl_dsl__did_you_mean(const char *s, const char *const *cands,
                                 size_t n) {
    static char buf[2][128];
    static int k;
    const char *m = sl_model_nearest(s, cands, n);
    if (!m) return "";
    char *b = buf[k++ & 1];
    snprintf(b, sizeof buf[0], " (did you mean '%s'?)", m);
    return b;
}

static char *abs_path(const char *path) {
    char *r = realpath(path, NULL);
    if (r) return r;
    if (path[0] == '/') return strdup(path);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) return strdup(path);
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", cwd, path);
    return s;
}

/* Loads one document held in memory (the file's content) as file `name`. */
static void load_text(loader *L, const char *name, const char *text,
                      size_t len) {
    L->file = name;
    char *abs = abs_path(name);
    if (!abs) {
        sl_dsl__diag_at(L, name, 0, 0, "out of memory");
        return;
    }
    char *dir = strdup(abs);
    if (!dir) {
        free(abs);
        return;
    }
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    L->abs = abs;
    L->dir = dir;
    L->t = calloc(1, sizeof *L->t);
    if (!L->t) goto out;
    if (len > MAX_FILE_BYTES) {
        sl_dsl__diag_at(L, name, 1, 1,
                        "the file is too large (%zu bytes, at most %u)", len,
                        MAX_FILE_BYTES);
        goto out;
    }
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        int line, col;
        sl_dsl__offset_pos(text, len, (size_t)(nul - text), &line, &col);
        sl_dsl__diag_at(L, name, line, col,
                        "a NUL byte: a pipeline file is UTF-8 "
                        "text");
        goto out;
    }
    node *root = sl_dsl__parse_yaml(L, text, len);
    if (root) sl_dsl__read_pipeline(L, root);
out:
    sl_dsl__arena_free(L->t);
    L->t = NULL;
    free(abs);
    free(dir);
    L->abs = L->dir = NULL;
}

static void load_file(loader *L, const char *path) {
    struct stat st;
    FILE *f = NULL;
    char *buf = NULL;
    if (stat(path, &st) != 0) {
        sl_dsl__diag_at(L, path, 0, 0, "cannot read: %s", strerror(errno));
        L->io_error = 1;
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        sl_dsl__diag_at(L, path, 0, 0, "not a regular file");
        L->io_error = 1;
        return;
    }
    if (st.st_size > (off_t)MAX_FILE_BYTES) {
        sl_dsl__diag_at(L, path, 1, 1,
                        "the file is too large (%lld bytes, at most %u)",
                        (long long)st.st_size, MAX_FILE_BYTES);
        return;
    }
    f = fopen(path, "rb");
    if (!f) {
        sl_dsl__diag_at(L, path, 0, 0, "cannot open: %s", strerror(errno));
        L->io_error = 1;
        return;
    }
    buf = malloc((size_t)st.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)st.st_size + 1, f) : 0;
    if (!buf || ferror(f)) {
        sl_dsl__diag_at(L, path, 0, 0, "cannot read: %s",
                        buf ? strerror(errno) : "out of memory");
        L->io_error = 1;
    } else if (n > (size_t)st.st_size) {
        sl_dsl__diag_at(L, path, 1, 1, "the file grew while being read");
    } else {
        load_text(L, path, buf, n);
    }
    free(buf);
    fclose(f);
}

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_ext(const char *s, const char *ext) {
    size_t n = strlen(s), e = strlen(ext);
    return n > e && !strcmp(s + n - e, ext);
}

static void load_dir(loader *L, const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        sl_dsl__diag_at(L, path, 0, 0, "cannot open directory: %s",
                        strerror(errno));
        L->io_error = 1;
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (!has_ext(e->d_name, ".yaml") && !has_ext(e->d_name, ".yml"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **v = realloc(names, cap * sizeof *v);
            if (!v) break;
            names = v;
        }
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        names[n] = malloc(len);
        if (!names[n]) break;
        snprintf(names[n], len, "%s%s%s", path,
                 path[strlen(path) - 1] == '/' ? "" : "/", e->d_name);
        n++;
    }
    closedir(d);
    if (n == 0) {
        sl_dsl__diag_at(L, path, 0, 0,
                        "no pipeline files (*.yaml, *.yml) in this "
                        "directory");
        L->io_error = 1;
    }
    qsort(names, n, sizeof *names, str_cmp);
    for (size_t i = 0; i < n; i++) {
        load_file(L, names[i]);
        free(names[i]);
    }
    free(names);
}

/* ---- the public entry points ------------------------------------------------
 */

static void free_drafts(loader *L) {
    for (size_t i = 0; i < L->ndrafts; i++)
        for (size_t s = 0; s < L->drafts[i].p.nstages; s++)
            json_decref(L->drafts[i].p.stages[s].with);
    free(L->drafts);
    L->drafts = NULL;
    L->ndrafts = 0;
}

void sl_model_free(sl_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t s = 0; s < m->pipelines[i].nstages; s++)
            json_decref(m->pipelines[i].stages[s].with);
    sl_dsl__arena_free(m->arena); /* m itself lives in the arena */
}

typedef struct diag_ref {
    sl_diag d;
    size_t idx;
} diag_ref;

/* Diagnostics sorted by position within each file, files kept in the
 * order they were loaded. */
static void sort_diags(sl_diags *all, size_t from) {
    if (all->n < from + 2) return;
    sl_diags view = {all->items + from, all->n - from, 0};
    sl_diags *d = &view;
    size_t n = d->n;
    /* Insertion sort by (first appearance of file, line, col, index):
     * stable and n is at most MAX_DIAGS. */
    char **files = malloc(n * sizeof *files);
    size_t nf = 0;
    size_t *rank = malloc(n * sizeof *rank);
    if (!files || !rank) {
        free(files);
        free(rank);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t f;
        for (f = 0; f < nf; f++)
            if (!strcmp(files[f], d->items[i].file)) break;
        if (f == nf) files[nf++] = d->items[i].file;
        rank[i] = f;
    }
    for (size_t i = 1; i < n; i++) {
        sl_diag g = d->items[i];
        size_t r = rank[i];
        size_t j = i;
        while (j > 0) {
            sl_diag *h = &d->items[j - 1];
            size_t rh = rank[j - 1];
            int later =
                rh > r || (rh == r && (h->line > g.line ||
                                       (h->line == g.line && h->col > g.col)));
            if (!later) break;
            d->items[j] = *h;
            rank[j] = rh;
            j--;
        }
        d->items[j] = g;
        rank[j] = r;
    }
    free(files);
    free(rank);
}

static int finish(loader *L, sl_model **out, size_t diags_before) {
    assert(L->a && out && L->d->n >= diags_before);
    int rc = 0;
    if (L->d->n == diags_before && L->ndrafts == 0) {
        sl_dsl__diag_at(L, "", 0, 0, "no pipelines loaded");
    }
    sl_dsl__check_unique(L);
    sl_model *m = NULL;
    if (L->d->n == diags_before && !L->a->failed) {
        m = sl_dsl__arena_alloc(L->a, sizeof *m);
        sl_pipeline *ps =
            m ? sl_dsl__arena_alloc(L->a, L->ndrafts * sizeof *ps) : NULL;
        if (!m || !ps) {
            sl_dsl__diag_at(L, "", 0, 0, "out of memory");
        } else {
            for (size_t i = 0; i < L->ndrafts; i++) {
                ps[i] = L->drafts[i].p;
                for (size_t s = 0; s < ps[i].nstages; s++)
                    ps[i].stages[s].pipeline = &ps[i];
            }
            m->pipelines = ps;
            m->npipelines = L->ndrafts;
            m->arena = L->a;
            /* Handlers check their own configuration last, on a complete
             * model. */
            for (size_t i = 0; i < m->npipelines; i++)
                for (size_t s = 0; s < ps[i].nstages; s++) {
                    const sl_stage *st = &ps[i].stages[s];
                    const sl_handler *h = sl_handler_find(st->handler);
                    char err[512] = "";
                    if (h && h->validate &&
                        h->validate(st, err, sizeof err) != 0)
                        sl_dsl__diag_at(L, L->drafts[i].file, st->line, st->col,
                                        "stage '%s'%s%s%s: handler '%s': %s",
                                        st->name,
                                        st->provider ? " (provider '" : "",
                                        st->provider ? st->provider : "",
                                        st->provider ? "')" : "", st->handler,
                                        err[0] ? err : "invalid with:");
                }
        }
    }
    if (L->a->failed && L->d->n == diags_before)
        sl_dsl__diag_at(L, "", 0, 0, "out of memory");
    if (L->d->n > diags_before) {
        rc = L->io_error ? -SL_EIO : -SL_EINVAL;
        free_drafts(L);
        sl_dsl__arena_free(L->a);
        *out = NULL;
    } else {
        free(L->drafts);
        L->drafts = NULL;
        *out = m;
    }
    L->a = NULL;
    for (size_t i = 0; i < L->nlua; i++)
        free(L->lua[i].path);
    free(L->lua);
    sort_diags(L->d, diags_before);
    return rc;
}

static int loader_init(loader *L, sl_diags *d) {
    memset(L, 0, sizeof *L);
    L->d = d;
    L->a = calloc(1, sizeof *L->a);
    return L->a ? 0 : -SL_ENOMEM;
}

int sl_dsl_load(const char *const *paths, size_t npaths, sl_model **out,
                sl_diags *diags) {
    assert(out && diags && (paths || npaths == 0));
    loader L;
    *out = NULL;
    if (loader_init(&L, diags) != 0) return -SL_ENOMEM;
    size_t before = diags->n;
    for (size_t i = 0; i < npaths; i++) {
        struct stat st;
        if (stat(paths[i], &st) == 0 && S_ISDIR(st.st_mode))
            load_dir(&L, paths[i]);
        else
            load_file(&L, paths[i]);
    }
    if (npaths == 0) sl_dsl__diag_at(&L, "", 0, 0, "no pipeline files given");
    return finish(&L, out, before);
}

int sl_dsl_load_string(const char *name, const char *text, size_t len,
                       sl_model **out, sl_diags *diags) {
    assert(name && out && diags);
    loader L;
    *out = NULL;
    if (loader_init(&L, diags) != 0) return -SL_ENOMEM;
    size_t before = diags->n;
    load_text(&L, name, text ? text : "", text ? len : 0);
    return finish(&L, out, before);
}
