/* dsl.c - the pipeline DSL: YAML files -> the immutable sl_model.
 *
 * A load runs in three passes per file and one over all files:
 *   1. libyaml's event parser builds a small tree of nodes that remember
 *      their line and column (anchors, aliases, tags and deep nesting are
 *      refused here, so nothing downstream can blow up);
 *   2. the tree is read into a pipeline (types, ranges, identifiers,
 *      defaults inherited, ${VAR} interpolated, `with` turned into JSON,
 *      Lua hooks compiled; a stage's `providers` are all read and checked
 *      and the one the environment chooses fills the stage);
 *   3. the pipeline is checked as a graph (next resolved, cycles,
 *      reachability, progress monotonic, map targets), over every
 *      provider's next so the result does not depend on the environment;
 *   4. across files: pipeline names, queue tables and channels unique,
 *      then each handler's own validate hook.
 * Every check records a diagnostic and carries on, so one run reports
 * every error. The model lives in one arena freed by sl_model_free().
 */
#include "dsl.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <yaml.h>

#include "error.h"
#include "handler.h"

/* Limits that keep hostile input cheap (docs/dsl.md, "Limits"). */
#define MAX_FILE_BYTES (1u << 20)
#define MAX_DEPTH 64
#define MAX_DIAGS 200
#define MAX_STAGES 1000
#define MAX_COLUMNS 1000
#define MAX_NEXT 64
#define MAX_HOOKS 64
#define MAX_MAP 1000
#define MAX_STATUS_VALUES 256
#define MAX_PROVIDERS 64
#define MAX_WHEN_ENV 64
#define MAX_IDENT 63

/* ---- arena ------------------------------------------------------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} chunk;

typedef struct arena {
    chunk *head;
    int failed;
} arena;

static void *arena_alloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 64 * 1024 ? n : 64 * 1024;
        chunk *c = malloc(sizeof *c + cap);
        if (!c) {
            a->failed = 1;
            return NULL;
        }
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

static char *arena_strndup(arena *a, const char *s, size_t n) {
    char *p = arena_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *arena_strdup(arena *a, const char *s) {
    return s ? arena_strndup(a, s, strlen(s)) : NULL;
}

static char *arena_printf(arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *arena_printf(arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *p = arena_alloc(a, (size_t)n + 1);
    if (!p) return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

static void arena_free(arena *a) {
    if (!a) return;
    chunk *c = a->head;
    while (c) {
        chunk *n = c->next;
        free(c);
        c = n;
    }
    free(a);
}

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

/* ---- the YAML tree ------------------------------------------------------ */

enum { N_SCALAR, N_MAP, N_SEQ };

typedef struct node node;
struct node {
    int kind;
    int line, col;
    /* scalar */
    char *s;
    size_t len;
    int plain; /* unquoted: may be null, a number or a bool in `with` */
    /* map: keys[i] -> vals[i]; seq: vals[i] */
    node **keys, **vals;
    size_t n, cap;
};

/* ---- the loader state --------------------------------------------------- */

typedef struct lua_seen {
    char *path;
    char *error; /* NULL: compiled */
} lua_seen;

/* Where a stage's queue and channel were named (for cross-file errors). */
typedef struct stage_pos {
    const char *file;
    int qline, qcol, cline, ccol;
    int channel_set; /* `channel` written, not the default */
} stage_pos;

typedef struct draft {
    sl_pipeline p;
    const char *file; /* display name */
    stage_pos *pos;   /* per stage */
    int sline, scol;  /* subject channel */
} draft;

typedef struct loader {
    sl_diags *d;
    int full;     /* MAX_DIAGS reached */
    int io_error; /* an unreadable file or directory */
    arena *a;     /* the model's arena */
    arena *t;     /* the current file's tree; freed after the file */
    const char *file;
    const char *dir; /* absolute directory of the file (hooks) */
    const char *abs; /* absolute path of the file */
    draft *drafts;
    size_t ndrafts, capdrafts;
    lua_seen *lua;
    size_t nlua, caplua;
    /* Reading a provider that was not chosen: an unset ${VAR} is no error
     * (the chosen provider's environment may lack it); env_missing records
     * that one was met, so nothing is checked against the empty value. */
    int lenient_env;
    int env_missing;
} loader;

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

static void diag_at(loader *L, const char *file, int line, int col,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void diag_at(loader *L, const char *file, int line, int col,
                    const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vdiag_at(L, file, line, col, fmt, ap);
    va_end(ap);
}

/* An error at node n of the current file. */
static void diag(loader *L, const node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void diag(loader *L, const node *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vdiag_at(L, L->file, n ? n->line : 0, n ? n->col : 0, fmt, ap);
    va_end(ap);
}

/* A printable, bounded rendering of a value for messages: control bytes
 * escaped, long values cut with "...". Returns a static buffer among
 * four rotating ones, so a message can quote up to four values. */
static const char *show(const char *s) {
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
static const char *describe(const node *n) {
    static char buf[4][120];
    static int k;
    if (n->kind == N_MAP) return "a mapping";
    if (n->kind == N_SEQ) return "a list";
    if (n->plain &&
        (n->len == 0 || strcmp(n->s, "~") == 0 || strcmp(n->s, "null") == 0))
        return "an empty value";
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "'%s'", show(n->s));
    return b;
}

/* ---- suggestions -------------------------------------------------------- */

/* Levenshtein distance with a cap on the inputs' length (suggestions for
 * long garbage are pointless and would cost quadratic time). */
static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return SIZE_MAX;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t best = prev + (a[i - 1] == b[j - 1] ? 0 : 1);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

/* The candidate closest to s, or NULL when none is close enough. */
static const char *nearest(const char *s, const char *const *cands, size_t n) {
    const char *best = NULL;
    size_t bestd = SIZE_MAX;
    for (size_t i = 0; i < n && cands[i]; i++) {
        size_t d = edit_distance(s, cands[i]);
        if (d < bestd) {
            bestd = d;
            best = cands[i];
        }
    }
    size_t len = strlen(s);
    size_t limit = len <= 4 ? 1 : len <= 8 ? 2 : len / 4 + 1;
    if (bestd == 0 || bestd > limit || bestd >= len) return NULL;
    return best;
}

static size_t count_list(const char *const *l) {
    size_t n = 0;
    while (l[n])
        n++;
    return n;
}

/* " (did you mean 'x'?)" or "" in a rotating static buffer. */
static const char *did_you_mean(const char *s, const char *const *cands,
                                size_t n) {
    static char buf[2][128];
    static int k;
    const char *m = nearest(s, cands, n);
    if (!m) return "";
    char *b = buf[k++ & 1];
    snprintf(b, sizeof buf[0], " (did you mean '%s'?)", m);
    return b;
}

/* ---- parsing: YAML events -> tree --------------------------------------- */

static node *new_node(loader *L, int kind, yaml_mark_t m) {
    node *n = arena_alloc(L->t, sizeof *n);
    if (!n) return NULL;
    n->kind = kind;
    n->line = (int)m.line + 1;
    n->col = (int)m.column + 1;
    return n;
}

static int push_child(loader *L, node *parent, node *child, int is_key) {
    if (parent->kind == N_MAP && !is_key) {
        parent->vals[parent->n - 1] = child;
        return 0;
    }
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        node **v = arena_alloc(L->t, cap * sizeof *v);
        if (!v) return -1;
        if (parent->n) memcpy(v, parent->vals, parent->n * sizeof *v);
        parent->vals = v;
        if (parent->kind == N_MAP) {
            node **k = arena_alloc(L->t, cap * sizeof *k);
            if (!k) return -1;
            if (parent->n) memcpy(k, parent->keys, parent->n * sizeof *k);
            parent->keys = k;
        }
        parent->cap = cap;
    }
    if (parent->kind == N_MAP) {
        parent->keys[parent->n] = child;
        parent->vals[parent->n] = NULL;
    } else {
        parent->vals[parent->n] = child;
    }
    parent->n++;
    return 0;
}

/* Line and column of a byte offset (for reader errors, which have no
 * mark). */
static void offset_pos(const char *text, size_t len, size_t off, int *line,
                       int *col) {
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

typedef struct key_ref {
    node *key;
    size_t idx;
} key_ref;

static int key_ref_cmp(const void *a, const void *b) {
    const key_ref *x = a, *y = b;
    int c = strcmp(x->key->s, y->key->s);
    if (c) return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Reports duplicate keys of a finished mapping: the later occurrence,
 * naming the line of the first. Sorting keeps this n log n for maps with
 * many keys. */
static void check_duplicates(loader *L, node *m) {
    if (m->n < 2) return;
    key_ref *refs = malloc(m->n * sizeof *refs);
    if (!refs) return;
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++)
        if (m->keys[i]->kind == N_SCALAR) refs[k++] = (key_ref){m->keys[i], i};
    qsort(refs, k, sizeof *refs, key_ref_cmp);
    for (size_t i = 1; i < k; i++) {
        size_t first = i - 1;
        while (i < k && strcmp(refs[i].key->s, refs[first].key->s) == 0) {
            diag(L, refs[i].key,
                 "duplicate key '%s' (first defined at line %d)",
                 show(refs[i].key->s), refs[first].key->line);
            i++;
        }
    }
    free(refs);
}

/* Parses text into a tree in L->t. Returns the root, or NULL after
 * reporting why (syntax error, empty file, unsupported feature). */
static node *parse_yaml(loader *L, const char *text, size_t len) {
    yaml_parser_t p;
    yaml_event_t ev;
    node *stack[MAX_DEPTH + 1];
    int is_key[MAX_DEPTH + 1];
    int depth = 0, docs = 0, ok = 1;
    node *root = NULL;

    if (!yaml_parser_initialize(&p)) {
        diag_at(L, L->file, 0, 0, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (;;) {
        if (!yaml_parser_parse(&p, &ev)) {
            int line, col;
            if (p.error == YAML_READER_ERROR) {
                offset_pos(text, len, p.problem_offset, &line, &col);
            } else {
                line = (int)p.problem_mark.line + 1;
                col = (int)p.problem_mark.column + 1;
            }
            char where[80] = "";
            if (p.context && p.error != YAML_READER_ERROR &&
                (p.context_mark.line != p.problem_mark.line ||
                 p.context_mark.column != p.problem_mark.column))
                snprintf(where, sizeof where,
                         " (which started at line %d, column %d)",
                         (int)p.context_mark.line + 1,
                         (int)p.context_mark.column + 1);
            diag_at(L, L->file, line, col, "YAML syntax error: %s%s%s%s",
                    p.problem ? p.problem : "unknown problem",
                    p.context ? " " : "", p.context ? p.context : "", where);
            ok = 0;
            break;
        }
        yaml_event_type_t type = ev.type;
        node *n = NULL;
        const yaml_char_t *anchor = NULL, *tag = NULL;
        switch (type) {
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                diag_at(L, L->file, (int)ev.start_mark.line + 1,
                        (int)ev.start_mark.column + 1,
                        "a second YAML document: a pipeline file holds "
                        "exactly one document");
                ok = 0;
            }
            break;
        case YAML_ALIAS_EVENT:
            diag_at(L, L->file, (int)ev.start_mark.line + 1,
                    (int)ev.start_mark.column + 1,
                    "YAML alias '*%s': anchors and aliases are not "
                    "supported in pipeline files",
                    show((const char *)ev.data.alias.anchor));
            ok = 0;
            break;
        case YAML_SCALAR_EVENT:
            anchor = ev.data.scalar.anchor;
            tag = ev.data.scalar.tag;
            n = new_node(L, N_SCALAR, ev.start_mark);
            if (!n) break;
            n->len = ev.data.scalar.length;
            n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
            n->s =
                arena_strndup(L->t, (const char *)ev.data.scalar.value, n->len);
            if (n->s && strlen(n->s) != n->len) {
                diag(L, n, "a NUL character in a value");
                n->len = strlen(n->s);
            }
            break;
        case YAML_MAPPING_START_EVENT:
            anchor = ev.data.mapping_start.anchor;
            tag = ev.data.mapping_start.tag;
            n = new_node(L, N_MAP, ev.start_mark);
            break;
        case YAML_SEQUENCE_START_EVENT:
            anchor = ev.data.sequence_start.anchor;
            tag = ev.data.sequence_start.tag;
            n = new_node(L, N_SEQ, ev.start_mark);
            break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            if (depth > 0) {
                node *done = stack[--depth];
                if (done->kind == N_MAP) check_duplicates(L, done);
            }
            break;
        default: break;
        }
        if (ok && anchor) {
            diag_at(L, L->file, (int)ev.start_mark.line + 1,
                    (int)ev.start_mark.column + 1,
                    "YAML anchor '&%s': anchors and aliases are not "
                    "supported in pipeline files",
                    show((const char *)anchor));
            ok = 0;
        }
        if (ok && tag) {
            diag_at(L, L->file, (int)ev.start_mark.line + 1,
                    (int)ev.start_mark.column + 1,
                    "YAML tag '%s' is not supported (quote a value to make "
                    "it a string)",
                    show((const char *)tag));
        }
        if (ok &&
            (type == YAML_SCALAR_EVENT || type == YAML_MAPPING_START_EVENT ||
             type == YAML_SEQUENCE_START_EVENT)) {
            if (!n) {
                diag_at(L, L->file, 0, 0, "out of memory");
                ok = 0;
            } else if (depth == 0) {
                root = n;
            } else {
                node *parent = stack[depth - 1];
                int key = parent->kind == N_MAP && is_key[depth - 1];
                if (key && n->kind != N_SCALAR) {
                    diag(L, n, "a mapping key must be a plain name, not %s",
                         describe(n));
                }
                if (push_child(L, parent, n, key) != 0) {
                    diag_at(L, L->file, 0, 0, "out of memory");
                    ok = 0;
                }
                if (parent->kind == N_MAP) is_key[depth - 1] = !key;
            }
            if (ok && n->kind != N_SCALAR) {
                if (depth == MAX_DEPTH) {
                    diag(L, n, "nesting deeper than %d levels", MAX_DEPTH);
                    ok = 0;
                } else {
                    is_key[depth] = 1;
                    stack[depth++] = n;
                }
            }
        }
        yaml_event_delete(&ev);
        if (!ok || type == YAML_STREAM_END_EVENT) break;
    }
    yaml_parser_delete(&p);
    if (!ok) return NULL;
    if (!root) {
        diag_at(L, L->file, 1, 1,
                "the file is empty: expected a mapping with 'pipeline' and "
                "'stages'");
        return NULL;
    }
    /* A non-scalar key leaves the key's entry with a string-less node;
     * give it an empty name so look-ups stay simple. */
    return root;
}

/* ---- reading helpers ----------------------------------------------------- */

static node *mget(const node *m, const char *key) {
    if (!m || m->kind != N_MAP) return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (m->keys[i]->kind == N_SCALAR && strcmp(m->keys[i]->s, key) == 0)
            return m->vals[i];
    return NULL;
}

static const char *key_name(const node *k) {
    return k->kind == N_SCALAR ? k->s : "";
}

/* Reports keys of m not in allowed[] (NULL-terminated), suggesting the
 * nearest valid one. */
static void check_keys(loader *L, const node *m, const char *where,
                       const char *const *allowed) {
    size_t na = count_list(allowed);
    for (size_t i = 0; i < m->n; i++) {
        const node *k = m->keys[i];
        if (k->kind != N_SCALAR) continue;
        size_t j;
        for (j = 0; j < na; j++)
            if (strcmp(k->s, allowed[j]) == 0) break;
        if (j < na) continue;
        if (L->full) return;
        const char *m2 = nearest(k->s, allowed, na);
        if (m2) {
            diag(L, k, "unknown key '%s' in %s (did you mean '%s'?)",
                 show(k->s), where, m2);
        } else {
            char list[512];
            size_t o = 0;
            list[0] = '\0';
            for (j = 0; j < na && o < sizeof list - 64; j++)
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%s",
                                      j ? ", " : "", allowed[j]);
            diag(L, k, "unknown key '%s' in %s (expected one of: %s)",
                 show(k->s), where, list);
        }
    }
}

static int expect_kind(loader *L, const node *n, int kind, const char *what) {
    if (n->kind == kind) return 1;
    diag(L, n, "%s: expected %s, got %s", what,
         kind == N_MAP   ? "a mapping"
         : kind == N_SEQ ? "a list"
                         : "a value",
         describe(n));
    return 0;
}

static const char *const sql_reserved[] = {
    /* PostgreSQL reserved key words (PostgreSQL 15 documentation, appendix
     * C: "reserved" and "reserved (can be function or type)"). */
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    NULL};

/* Non-zero when s is a PostgreSQL reserved key word. */
int sl_dsl_reserved_word(const char *s) {
    for (size_t i = 0; sql_reserved[i]; i++)
        if (strcmp(s, sql_reserved[i]) == 0) return 1;
    return 0;
}

enum { ID_NAME = 0, ID_SQL = 1 };

/* Checks an identifier; reports and returns -1 when invalid. */
static int check_ident(loader *L, const node *at, const char *s,
                       const char *what, int sql) {
    size_t len = strlen(s);
    if (strstr(s, "${")) {
        diag(L, at, "%s '%s': ${...} interpolation is not allowed in names",
             what, show(s));
        return -1;
    }
    if (len == 0) {
        diag(L, at, "%s: expected a name, got an empty value", what);
        return -1;
    }
    int ok = (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_';
    for (size_t i = 1; ok && i < len; i++)
        ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
             s[i] == '_';
    if (!ok) {
        diag(L, at,
             "%s '%s' is not a valid name: expected lower-case letters, "
             "digits and '_' ([a-z_][a-z0-9_]*)",
             what, show(s));
        return -1;
    }
    if (len > MAX_IDENT) {
        diag(L, at, "%s '%s' is too long: %zu bytes, at most %d", what, show(s),
             len, MAX_IDENT);
        return -1;
    }
    if (sql && sl_dsl_reserved_word(s)) {
        diag(L, at, "%s '%s' is an SQL reserved word; choose another name",
             what, s);
        return -1;
    }
    return 0;
}

/* A name from a scalar node: validated, copied into the model arena.
 * NULL (after a diagnostic) when n is not a valid name. */
static const char *read_ident(loader *L, const node *n, const char *what,
                              int sql) {
    if (!n) return NULL;
    if (!expect_kind(L, n, N_SCALAR, what)) return NULL;
    if (check_ident(L, n, n->s, what, sql) != 0) return NULL;
    return arena_strdup(L->a, n->s);
}

/* Interpolates ${VAR} and ${VAR:-default} in s; "$${" stands for a
 * literal "${". Returns a string in the tree arena, or NULL after a
 * diagnostic. */
static char *interpolate(loader *L, const node *at, const char *s) {
    if (!strchr(s, '$')) return (char *)s;
    size_t cap = strlen(s) + 64, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    const char *p = s;
    int bad = 0;
    while (*p) {
        const char *piece = NULL;
        size_t plen = 0;
        char name[256];
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
            piece = "${";
            plen = 2;
            p += 3;
        } else if (p[0] == '$' && p[1] == '{') {
            const char *q = p + 2, *nb = q;
            while ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') ||
                   (*q >= '0' && *q <= '9') || *q == '_')
                q++;
            size_t nlen = (size_t)(q - nb);
            const char *dflt = NULL;
            size_t dlen = 0;
            if (q[0] == ':' && q[1] == '-') {
                dflt = q + 2;
                const char *e = strchr(dflt, '}');
                if (!e)
                    q = dflt + strlen(dflt);
                else {
                    dlen = (size_t)(e - dflt);
                    q = e;
                }
            }
            if (*q != '}' || nlen == 0 || nlen >= sizeof name ||
                (nb[0] >= '0' && nb[0] <= '9')) {
                diag(L, at,
                     "bad interpolation in '%s': expected ${NAME} or "
                     "${NAME:-default}",
                     show(s));
                bad = 1;
                break;
            }
            memcpy(name, nb, nlen);
            name[nlen] = '\0';
            const char *v = getenv(name);
            if (dflt && (!v || !*v)) {
                piece = dflt;
                plen = dlen;
            } else if (v) {
                piece = v;
                plen = strlen(v);
            } else if (L->lenient_env) {
                L->env_missing = 1;
                piece = "";
                plen = 0;
            } else {
                diag(L, at,
                     "environment variable '%s' is not set (write "
                     "${%s:-default} to give a default)",
                     name, name);
                bad = 1;
                piece = "";
                plen = 0;
            }
            p = q + 1;
        } else {
            piece = p;
            plen = 1;
            p++;
        }
        if (len + plen + 1 > cap) {
            while (len + plen + 1 > cap)
                cap *= 2;
            char *o2 = realloc(out, cap);
            if (!o2) {
                free(out);
                return NULL;
            }
            out = o2;
        }
        memcpy(out + len, piece, plen);
        len += plen;
    }
    out[len] = '\0';
    char *r = bad ? NULL : arena_strndup(L->t, out, len);
    free(out);
    return r;
}

/* A non-name scalar value, interpolated. NULL after a diagnostic. */
static const char *read_value(loader *L, const node *n, const char *what) {
    if (!expect_kind(L, n, N_SCALAR, what)) return NULL;
    return interpolate(L, n, n->s);
}

static const char *read_text(loader *L, const node *n, const char *what) {
    const char *v = read_value(L, n, what);
    return v ? arena_strdup(L->a, v) : NULL;
}

static int parse_ll(const char *s, long long *out) {
    if (!*s) return -1;
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!isdigit((unsigned char)*p)) return -1;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q)) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

/* An integer in lo..hi. Returns 0 and sets *out, or -1 after a diag. */
static int read_int(loader *L, const node *n, const char *what, long long lo,
                    long long hi, int *out) {
    const char *v = read_value(L, n, what);
    if (!v) return -1;
    long long x;
    if (parse_ll(v, &x) != 0) {
        diag(L, n, "%s: expected an integer, got '%s'", what, show(v));
        return -1;
    }
    if (x < lo || x > hi) {
        if (hi >= INT_MAX)
            diag(L, n, "%s: must be >= %lld, got %lld", what, lo, x);
        else
            diag(L, n, "%s: must be between %lld and %lld, got %lld", what, lo,
                 hi, x);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int read_double(loader *L, const node *n, const char *what, double lo,
                       double hi, double *out) {
    const char *v = read_value(L, n, what);
    if (!v) return -1;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    int numeric = *v && !*end && !errno && isfinite(x);
    for (const char *q = v; numeric && *q; q++)
        if (!strchr("0123456789.eE+-", *q)) numeric = 0;
    if (!numeric) {
        diag(L, n, "%s: expected a number, got '%s'", what, show(v));
        return -1;
    }
    if (x < lo || x > hi) {
        if (hi == HUGE_VAL)
            diag(L, n, "%s: must be >= %g, got %s", what, lo, show(v));
        else
            diag(L, n, "%s: must be between %g and %g, got %s", what, lo, hi,
                 show(v));
        return -1;
    }
    *out = x;
    return 0;
}

static int read_bool(loader *L, const node *n, const char *what, int *out) {
    const char *v = read_value(L, n, what);
    if (!v) return -1;
    if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE")) {
        *out = 1;
        return 0;
    }
    if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE")) {
        *out = 0;
        return 0;
    }
    diag(L, n, "%s: expected true or false, got '%s'", what, show(v));
    return -1;
}

int sl_duration_parse(const char *s, int64_t *ms) {
    if (!s) return -SL_EINVAL;
    const char *p = s;
    if (!isdigit((unsigned char)*p)) return -SL_EINVAL;
    int64_t v = 0;
    while (isdigit((unsigned char)*p)) {
        if (v > (INT64_MAX - 9) / 10) return -SL_EINVAL;
        v = v * 10 + (*p - '0');
        p++;
    }
    int64_t mult;
    if (strcmp(p, "ms") == 0)
        mult = 1;
    else if (strcmp(p, "s") == 0)
        mult = 1000;
    else if (strcmp(p, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(p, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(p, "d") == 0)
        mult = 86400 * 1000;
    else
        return -SL_EINVAL;
    /* At most ten years: anything longer is a typo. */
    if (v > (int64_t)3650 * 86400 * 1000 / mult) return -SL_EINVAL;
    *ms = v * mult;
    return 0;
}

static int read_duration(loader *L, const node *n, const char *what,
                         int64_t min_ms, int64_t *out) {
    const char *v = read_value(L, n, what);
    if (!v) return -1;
    int64_t ms;
    if (sl_duration_parse(v, &ms) != 0) {
        long long dummy;
        diag(L, n,
             "%s: expected a duration such as 250ms, 3s, 5m, 2h or 1d, got "
             "'%s'%s",
             what, show(v),
             parse_ll(v, &dummy) == 0 ? " (a number needs a unit)" : "");
        return -1;
    }
    if (ms < min_ms) {
        diag(L, n, "%s: must be at least %lldms, got '%s'", what,
             (long long)min_ms, show(v));
        return -1;
    }
    *out = ms;
    return 0;
}

/* Sizes: an integer with an optional unit B, KB, MB, GB (powers of 1024). */
static int read_size(loader *L, const node *n, const char *what, size_t *out) {
    const char *v = read_value(L, n, what);
    if (!v) return -1;
    const char *p = v;
    unsigned long long x = 0;
    int ok = isdigit((unsigned char)*p);
    while (ok && isdigit((unsigned char)*p)) {
        if (x > 1000000000ull) ok = 0;
        x = x * 10 + (unsigned)(*p++ - '0');
    }
    unsigned long long mult = 0;
    if (!*p || !strcmp(p, "B"))
        mult = 1;
    else if (!strcmp(p, "KB"))
        mult = 1024;
    else if (!strcmp(p, "MB"))
        mult = 1024 * 1024;
    else if (!strcmp(p, "GB"))
        mult = 1024ull * 1024 * 1024;
    if (!ok || !mult) {
        diag(L, n, "%s: expected a size such as 64MB, 512KB or 1GB, got '%s'",
             what, show(v));
        return -1;
    }
    x *= mult;
    if (x < 64 * 1024 || x > 16ull * 1024 * 1024 * 1024) {
        diag(L, n, "%s: must be between 64KB and 16GB, got '%s'", what,
             show(v));
        return -1;
    }
    *out = (size_t)x;
    return 0;
}

/* ---- `with`: YAML -> JSON ------------------------------------------------ */

static int looks_int(const char *s) {
    long long d;
    return parse_ll(s, &d) == 0;
}

static int looks_float(const char *s) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    int digits = 0, dot = 0;
    while (isdigit((unsigned char)*p) || *p == '.') {
        if (*p == '.') {
            if (dot++) return 0;
        } else {
            digits++;
        }
        p++;
    }
    if (!digits) return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!isdigit((unsigned char)*p)) return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    return *p == '\0';
}

static json_t *to_json(loader *L, const node *n) {
    if (n->kind == N_MAP) {
        json_t *o = json_object();
        for (size_t i = 0; o && i < n->n; i++)
            json_object_set_new(o, key_name(n->keys[i]),
                                to_json(L, n->vals[i]));
        return o;
    }
    if (n->kind == N_SEQ) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < n->n; i++)
            json_array_append_new(a, to_json(L, n->vals[i]));
        return a;
    }
    const char *v = interpolate(L, n, n->s);
    if (!v) return json_null();
    if (n->plain) {
        if (!*v || !strcmp(v, "~") || !strcmp(v, "null") ||
            !strcmp(v, "Null") || !strcmp(v, "NULL"))
            return json_null();
        if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE"))
            return json_true();
        if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE"))
            return json_false();
        long long x;
        if (looks_int(v) && parse_ll(v, &x) == 0) return json_integer(x);
        if (looks_float(v)) {
            double d = strtod(v, NULL);
            if (isfinite(d)) return json_real(d);
        }
    }
    json_t *str = json_stringn(v, strlen(v));
    if (!str) {
        diag(L, n, "value '%s' is not valid UTF-8 after interpolation",
             show(v));
        return json_null();
    }
    return str;
}

/* ---- Lua hooks ------------------------------------------------------------
 */

/* Compiles a hook file (text chunks only: precompiled bytecode is
 * refused) in a fresh Lua state. Returns NULL when it compiles, else a
 * message (static or in the tree arena). Results are cached per path. */
static const char *compile_lua(loader *L, const char *abs, const char *shown) {
    for (size_t i = 0; i < L->nlua; i++)
        if (strcmp(L->lua[i].path, abs) == 0) return L->lua[i].error;
    char *err = NULL;
    struct stat st;
    FILE *f = NULL;
    char *buf = NULL;
    lua_State *ls = NULL;
    char msg[600];
    if (stat(abs, &st) != 0) {
        snprintf(msg, sizeof msg, "Lua file '%s' not found (%s)", show(shown),
                 strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(msg, sizeof msg, "Lua file '%s' is not a regular file",
                 show(shown));
        goto fail;
    }
    if (st.st_size > (off_t)MAX_FILE_BYTES) {
        snprintf(msg, sizeof msg,
                 "Lua file '%s' is too large (%lld bytes, "
                 "at most %u)",
                 show(shown), (long long)st.st_size, MAX_FILE_BYTES);
        goto fail;
    }
    f = fopen(abs, "rb");
    buf = malloc((size_t)st.st_size + 1);
    if (!f || !buf) {
        snprintf(msg, sizeof msg, "Lua file '%s' cannot be read (%s)",
                 show(shown), strerror(errno));
        goto fail;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    ls = luaL_newstate();
    if (!ls) {
        snprintf(msg, sizeof msg, "out of memory compiling '%s'", show(shown));
        goto fail;
    }
    char chunkname[300];
    snprintf(chunkname, sizeof chunkname, "=%s", shown);
    if (luaL_loadbufferx(ls, buf, n, chunkname, "t") != LUA_OK) {
        const char *e = lua_tostring(ls, -1);
        snprintf(msg, sizeof msg, "Lua syntax error: %s", e ? e : "?");
        goto fail;
    }
    goto done;
fail:
    err = arena_strdup(L->a, msg);
done:
    if (ls) lua_close(ls);
    if (f) fclose(f);
    free(buf);
    if (L->nlua == L->caplua) {
        size_t cap = L->caplua ? L->caplua * 2 : 8;
        lua_seen *v = realloc(L->lua, cap * sizeof *v);
        if (!v) return err;
        L->lua = v;
        L->caplua = cap;
    }
    L->lua[L->nlua].path = strdup(abs);
    L->lua[L->nlua].error = err;
    if (L->lua[L->nlua].path) L->nlua++;
    return err;
}

/* ---- stage settings inherited from `defaults` ---------------------------- */

typedef struct settings {
    sl_retry retry;
    int has_on, has_fail;
    uint32_t on_mask, fail_mask;
    int64_t timeout_ms, lease_ms, heartbeat_ms;
    int heartbeat_set;
    int concurrency, batch, priority, sql_writes;
    /* Nodes of the values set at this level (for range errors). */
    const node *n_timeout, *n_lease, *n_heartbeat, *n_initial, *n_max_delay;
} settings;

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
    s->batch = 1;
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
    else if (!expect_kind(L, n, N_SCALAR, what))
        return -1;
    uint32_t m = 0;
    int bad = 0;
    for (size_t i = 0; i < cnt; i++) {
        if (n->kind == N_SEQ) one = n->vals[i];
        if (!expect_kind(L, one, N_SCALAR, what)) {
            bad = 1;
            continue;
        }
        int c = sl_errclass_parse(one->s);
        if (c < 0) {
            diag(L, one, "%s: unknown error class '%s'%s", what, show(one->s),
                 did_you_mean(one->s, errclass_names, SL_EC__COUNT));
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
static void read_settings(loader *L, const node *m, settings *s) {
    const node *n;
    s->n_timeout = s->n_lease = s->n_heartbeat = NULL;
    s->n_initial = s->n_max_delay = NULL;
    if ((n = mget(m, "retry")) && expect_kind(L, n, N_MAP, "retry")) {
        check_keys(L, n, "retry", retry_keys);
        const node *v;
        if ((v = mget(n, "max_attempts")))
            read_int(L, v, "max_attempts", 1, INT_MAX, &s->retry.max_attempts);
        if ((v = mget(n, "backoff"))) {
            const char *b = read_value(L, v, "backoff");
            static const char *const kinds[] = {"fixed", "exponential", NULL};
            if (b && !strcmp(b, "fixed"))
                s->retry.backoff = SL_BACKOFF_FIXED;
            else if (b && !strcmp(b, "exponential"))
                s->retry.backoff = SL_BACKOFF_EXPONENTIAL;
            else if (b)
                diag(L, v, "backoff: expected fixed or exponential, got '%s'%s",
                     show(b), did_you_mean(b, kinds, 2));
        }
        if ((v = mget(n, "initial")) &&
            read_duration(L, v, "initial", 0, &s->retry.initial_ms) == 0)
            s->n_initial = v;
        if ((v = mget(n, "factor")))
            read_double(L, v, "factor", 1, HUGE_VAL, &s->retry.factor);
        if ((v = mget(n, "max_delay")) &&
            read_duration(L, v, "max_delay", 0, &s->retry.max_delay_ms) == 0)
            s->n_max_delay = v;
        if ((v = mget(n, "jitter")))
            read_double(L, v, "jitter", 0, 1, &s->retry.jitter);
        if ((v = mget(n, "on")) && read_classes(L, v, "on", &s->on_mask) == 0)
            s->has_on = 1;
        if ((v = mget(n, "fail_on")) &&
            read_classes(L, v, "fail_on", &s->fail_mask) == 0)
            s->has_fail = 1;
        if (s->n_initial || s->n_max_delay) {
            if (s->retry.max_delay_ms < s->retry.initial_ms) {
                const node *at = s->n_max_delay ? s->n_max_delay : s->n_initial;
                diag(L, at, "max_delay %s must be >= initial %s",
                     fmt_ms(s->retry.max_delay_ms),
                     fmt_ms(s->retry.initial_ms));
            }
        }
    }
    if ((n = mget(m, "timeout")) &&
        read_duration(L, n, "timeout", 1, &s->timeout_ms) == 0)
        s->n_timeout = n;
    if ((n = mget(m, "lease")) &&
        read_duration(L, n, "lease", 1000, &s->lease_ms) == 0)
        s->n_lease = n;
    if ((n = mget(m, "heartbeat")) &&
        read_duration(L, n, "heartbeat", 1, &s->heartbeat_ms) == 0) {
        s->n_heartbeat = n;
        s->heartbeat_set = 1;
    }
    if ((n = mget(m, "concurrency")))
        read_int(L, n, "concurrency", 1, 1024, &s->concurrency);
    if ((n = mget(m, "batch"))) read_int(L, n, "batch", 1, 1000, &s->batch);
    if ((n = mget(m, "priority")))
        read_int(L, n, "priority", -1000000, 1000000, &s->priority);
    if ((n = mget(m, "sql_writes")))
        read_bool(L, n, "sql_writes", &s->sql_writes);

    /* Heartbeat against timeout and lease, reported where a value was set
     * at this level (values inherited unchanged were checked there). */
    int64_t hb = s->heartbeat_set ? s->heartbeat_ms : s->lease_ms / 3;
    if (s->n_heartbeat || s->n_timeout || s->n_lease) {
        const node *at = s->n_heartbeat ? s->n_heartbeat
                         : s->n_timeout ? s->n_timeout
                                        : s->n_lease;
        const char *src = s->heartbeat_set ? "" : " (the default, lease/3)";
        if (hb >= s->timeout_ms)
            diag(L, at, "heartbeat %s%s must be shorter than timeout %s",
                 fmt_ms(hb), src, fmt_ms(s->timeout_ms));
        if (hb >= s->lease_ms)
            diag(L, at, "heartbeat %s%s must be shorter than lease %s",
                 fmt_ms(hb), src, fmt_ms(s->lease_ms));
    }
}

static void apply_settings(const settings *s, sl_stage *st) {
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

/* ---- reading one pipeline ------------------------------------------------ */

/* One `next` list as written (the stage's own or a provider's), with
 * the nodes its messages point at. */
typedef struct next_set {
    sl_next *next;
    size_t nnext;
    const node **next_at; /* per next: the stage name node */
    const node ***to_at;  /* per next, per map entry: the `to` key node */
} next_set;

/* Per-stage nodes kept while the file's tree lives (graph checks). */
typedef struct stage_aux {
    const node *key;
    /* Every next list of the stage: its own and each provider's, chosen
     * or not, so the graph checks do not depend on the environment. The
     * model's st->next is one of them (the same array). */
    next_set *sets;
    size_t nsets, capsets;
    const node *prog[4]; /* on_start, from, to, on_done progress nodes */
} stage_aux;

static const char *const column_types[] = {"text",
                                           "bytea",
                                           "jsonb",
                                           "json",
                                           "uuid",
                                           "boolean",
                                           "smallint",
                                           "integer",
                                           "bigint",
                                           "real",
                                           "double precision",
                                           "numeric",
                                           "timestamptz",
                                           "date",
                                           "text[]",
                                           "integer[]",
                                           NULL};

static const char *const engine_columns[] = {
    "id",         "status",     "status_detail", "progress",
    "attempts",   "last_error", "error_class",   "priority",
    "run_at",     "locked_by",  "locked_until",  "checkpoint",
    "dedup_key",  "started_at", "finished_at",   "created_at",
    "updated_at", NULL};

/* The normalised type (static string) or NULL. */
static const char *normalise_type(const char *t) {
    char buf[64];
    size_t o = 0;
    int space = 0;
    for (const char *p = t; *p; p++) {
        if (isspace((unsigned char)*p)) {
            space = o > 0;
            continue;
        }
        /* Room for a space, the character and the NUL; longer is no
         * type of the whitelist. */
        if (o + 3 > sizeof buf) return NULL;
        if (space) buf[o++] = ' ';
        space = 0;
        buf[o++] = (char)tolower((unsigned char)*p);
    }
    buf[o] = '\0';
    static const struct {
        const char *alias, *type;
    } aliases[] = {{"bool", "boolean"},    {"int", "integer"},
                   {"int4", "integer"},    {"int8", "bigint"},
                   {"int[]", "integer[]"}, {"int4[]", "integer[]"}};
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcmp(buf, aliases[i].alias)) return aliases[i].type;
    for (size_t i = 0; column_types[i]; i++)
        if (!strcmp(buf, column_types[i])) return column_types[i];
    return NULL;
}

static void read_column(loader *L, const node *k, const node *v, sl_column *c,
                        const char *fk) {
    c->line = k->line;
    c->col = k->col;
    c->name = read_ident(L, k, "column", ID_SQL);
    if (c->name) {
        for (size_t i = 0; engine_columns[i]; i++)
            if (!strcmp(c->name, engine_columns[i]))
                diag(L, k,
                     "column '%s' is managed by the engine; choose another "
                     "name",
                     c->name);
        if (fk && !strcmp(c->name, fk))
            diag(L, k,
                 "column '%s' is the subject's foreign key, which the engine "
                 "adds itself",
                 c->name);
    }
    const node *tn = v;
    if (v->kind == N_MAP) {
        static const char *const keys[] = {"type", "references", "not_null",
                                           NULL};
        check_keys(L, v, "a column", keys);
        tn = mget(v, "type");
        if (!tn)
            diag(L, v, "column '%s': missing required key 'type'",
                 show(key_name(k)));
        const node *r = mget(v, "references");
        if (r && expect_kind(L, r, N_SCALAR, "references")) {
            const char *dot = strchr(r->s, '.');
            char tbl[128];
            const char *col = dot ? dot + 1 : "id";
            size_t tl = dot ? (size_t)(dot - r->s) : strlen(r->s);
            if (tl >= sizeof tbl || !*col || strchr(col, '.') || tl == 0) {
                diag(L, r,
                     "references: expected table.column (e.g. "
                     "projects.id), got '%s'",
                     show(r->s));
            } else {
                memcpy(tbl, r->s, tl);
                tbl[tl] = '\0';
                if (check_ident(L, r, tbl, "referenced table", ID_SQL) == 0 &&
                    check_ident(L, r, col, "referenced column", ID_SQL) == 0) {
                    c->ref_table = arena_strdup(L->a, tbl);
                    c->ref_column = arena_strdup(L->a, col);
                }
            }
        }
        const node *nn = mget(v, "not_null");
        if (nn) read_bool(L, nn, "not_null", &c->not_null);
    }
    if (tn && expect_kind(L, tn, N_SCALAR, "column type")) {
        c->type = normalise_type(tn->s);
        if (!c->type)
            diag(L, tn,
                 "column '%s': unsupported type '%s'%s (allowed: text, bytea, "
                 "jsonb, json, uuid, boolean, smallint, integer, bigint, "
                 "real, double precision, numeric, timestamptz, date, "
                 "text[], integer[])",
                 show(key_name(k)), show(tn->s),
                 did_you_mean(tn->s, column_types, count_list(column_types)));
    }
}

static int is_lua_name(const char *s) {
    if (!(isalpha((unsigned char)*s) || *s == '_')) return 0;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_')) return 0;
    return strlen(s) <= 63;
}

static void read_hook(loader *L, const node *k, const node *v, sl_hook *h) {
    h->line = k->line;
    h->col = k->col;
    h->point = read_ident(L, k, "hook point", ID_NAME);
    h->function = h->point;
    h->instruction_limit = 10000000;
    h->memory_limit = 64u * 1024 * 1024;
    const node *fn = v;
    if (v->kind == N_MAP) {
        static const char *const keys[] = {"file", "function", "instructions",
                                           "memory", NULL};
        check_keys(L, v, "a hook", keys);
        fn = mget(v, "file");
        if (!fn)
            diag(L, v, "hook '%s': missing required key 'file'",
                 show(key_name(k)));
        const node *f = mget(v, "function");
        if (f && expect_kind(L, f, N_SCALAR, "function")) {
            if (!is_lua_name(f->s))
                diag(L, f, "function: '%s' is not a Lua function name",
                     show(f->s));
            else
                h->function = arena_strdup(L->a, f->s);
        }
        const node *ins = mget(v, "instructions");
        if (ins) {
            const char *iv = read_value(L, ins, "instructions");
            long long x;
            if (iv &&
                (parse_ll(iv, &x) != 0 || x < 1000 || x > 1000000000000LL))
                diag(L, ins,
                     "instructions: expected an integer between 1000 "
                     "and 1000000000000, got '%s'",
                     show(iv));
            else if (iv)
                h->instruction_limit = x;
        }
        const node *mem = mget(v, "memory");
        if (mem) read_size(L, mem, "memory", &h->memory_limit);
    } else if (v->kind != N_SCALAR) {
        diag(L, v,
             "hook '%s': expected a file name or a mapping with file "
             "and function, got %s",
             show(key_name(k)), describe(v));
        return;
    }
    if (!fn) return;
    L->env_missing = 0;
    const char *file = read_value(L, fn, "file");
    if (!file || L->env_missing) return;
    if (!*file) {
        diag(L, fn, "file: expected a Lua file name, got an empty value");
        return;
    }
    h->file = file[0] == '/' ? arena_strdup(L->a, file)
                             : arena_printf(L->a, "%s/%s", L->dir, file);
    const char *err = h->file ? compile_lua(L, h->file, file) : NULL;
    if (err) diag(L, fn, "hook '%s': %s", show(key_name(k)), err);
}

/* A subject status value: one of subject.status.values (the model's own
 * string is returned), or NULL after a diagnostic. */
static const char *read_status_value(loader *L, const node *v,
                                     const sl_subject *subj) {
    if (!expect_kind(L, v, N_SCALAR, "status")) return NULL;
    for (size_t i = 0; subj && i < subj->nstatus_values; i++)
        if (!strcmp(subj->status_values[i], v->s))
            return subj->status_values[i];
    if (subj && subj->nstatus_values)
        diag(L, v, "status '%s' is not one of subject.status.values%s",
             show(v->s),
             did_you_mean(v->s, subj->status_values, subj->nstatus_values));
    return NULL;
}

static void read_mapping(loader *L, const node *n, const char *what,
                         const sl_subject *subj, int allow_progress,
                         sl_mapping *m, const node **prog_at) {
    m->progress = -1;
    if (!expect_kind(L, n, N_MAP, what)) return;
    static const char *const keys[] = {"status", "progress", "detail", NULL};
    static const char *const keys_np[] = {"status", "detail", NULL};
    check_keys(L, n, what, allow_progress ? keys : keys_np);
    const node *v;
    if ((v = mget(n, "status"))) m->status = read_status_value(L, v, subj);
    if (allow_progress && (v = mget(n, "progress")) &&
        read_int(L, v, "progress", 0, 100, &m->progress) == 0 && prog_at)
        *prog_at = v;
    if ((v = mget(n, "detail"))) m->detail = read_text(L, v, "detail");
}

static const char *const stage_keys[] = {
    "queue",       "channel",  "handler",   "with",       "columns",
    "hooks",       "provider", "providers", "sql_writes", "status",
    "next",        "retry",    "timeout",   "lease",      "heartbeat",
    "concurrency", "batch",    "priority",  NULL};

static const char *const provider_keys[] = {
    "handler", "with", "hooks", "sql_writes", "next", "when_env", NULL};

static void read_status(loader *L, const node *n, sl_stage *st,
                        const sl_pipeline *p, stage_aux *ax) {
    sl_status_map *sm = &st->status;
    sm->on_start.progress = sm->on_done.progress = sm->on_error.progress = -1;
    sm->progress_from = sm->progress_to = -1;
    if (!n) return;
    if (!expect_kind(L, n, N_MAP, "status")) return;
    if (!p->has_subject) {
        diag(L, n,
             "status: a status mapping needs a subject, and pipeline "
             "'%s' has none",
             p->name ? p->name : "?");
        return;
    }
    static const char *const keys[] = {"on_start", "progress", "on_done",
                                       "on_error", NULL};
    check_keys(L, n, "status", keys);
    const sl_subject *subj = &p->subject;
    const node *v;
    if ((v = mget(n, "on_start")))
        read_mapping(L, v, "on_start", subj, 1, &sm->on_start, &ax->prog[0]);
    if ((v = mget(n, "on_done")))
        read_mapping(L, v, "on_done", subj, 1, &sm->on_done, &ax->prog[3]);
    if ((v = mget(n, "on_error")))
        read_mapping(L, v, "on_error", subj, 1, &sm->on_error, NULL);
    if ((v = mget(n, "progress")) && expect_kind(L, v, N_MAP, "progress")) {
        static const char *const pk[] = {"status", "from", "to", NULL};
        check_keys(L, v, "progress", pk);
        const node *ps = mget(v, "status");
        if (ps) sm->on_progress_status = read_status_value(L, ps, subj);
        const node *f = mget(v, "from"), *t = mget(v, "to");
        int from = -1, to = -1;
        if (!f) diag(L, v, "progress: missing required key 'from'");
        if (!t) diag(L, v, "progress: missing required key 'to'");
        int okf = f && read_int(L, f, "progress.from", 0, 100, &from) == 0;
        int okt = t && read_int(L, t, "progress.to", 0, 100, &to) == 0;
        if (okf && okt) {
            if (from > to) {
                diag(L, f, "progress.from %d is greater than progress.to %d",
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

/* Reads a `next` list into a new set of ax. Returns the set (valid until
 * the next call), or NULL after a diagnostic. */
static next_set *read_next(loader *L, const node *n, stage_aux *ax) {
    const node *items[MAX_NEXT];
    size_t cnt = 0;
    if (n->kind == N_SCALAR) {
        items[cnt++] = n;
    } else if (n->kind == N_SEQ) {
        if (n->n > MAX_NEXT) {
            diag(L, n, "next: at most %d entries, got %zu", MAX_NEXT, n->n);
            return NULL;
        }
        for (size_t i = 0; i < n->n; i++)
            items[cnt++] = n->vals[i];
    } else {
        diag(L, n, "next: expected a stage name or a list of them, got %s",
             describe(n));
        return NULL;
    }
    if (ax->nsets == ax->capsets) {
        size_t cap = ax->capsets ? ax->capsets * 2 : 2;
        next_set *v = arena_alloc(L->t, cap * sizeof *v);
        if (!v) return NULL;
        if (ax->nsets) memcpy(v, ax->sets, ax->nsets * sizeof *v);
        ax->sets = v;
        ax->capsets = cap;
    }
    next_set *set = &ax->sets[ax->nsets];
    memset(set, 0, sizeof *set);
    set->next = arena_alloc(L->a, (cnt ? cnt : 1) * sizeof *set->next);
    set->next_at = arena_alloc(L->t, (cnt ? cnt : 1) * sizeof *set->next_at);
    set->to_at = arena_alloc(L->t, (cnt ? cnt : 1) * sizeof *set->to_at);
    if (!set->next || !set->next_at || !set->to_at) return NULL;
    ax->nsets++;
    for (size_t i = 0; i < cnt; i++) {
        const node *it = items[i], *name = it, *map = NULL;
        if (it->kind == N_MAP) {
            static const char *const keys[] = {"stage", "map", NULL};
            check_keys(L, it, "next", keys);
            name = mget(it, "stage");
            map = mget(it, "map");
            if (!name) {
                diag(L, it, "next: missing required key 'stage'");
                continue;
            }
        } else if (it->kind != N_SCALAR) {
            diag(L, it, "next: expected a stage name or {stage, map}, got %s",
                 describe(it));
            continue;
        }
        const char *sn = read_ident(L, name, "next stage", ID_NAME);
        if (!sn) continue;
        sl_next *nx = &set->next[set->nnext];
        nx->stage_name = sn;
        set->next_at[set->nnext] = name;
        if (map && expect_kind(L, map, N_MAP, "map")) {
            if (map->n > MAX_MAP) {
                diag(L, map, "map: at most %d entries", MAX_MAP);
            } else if (map->n) {
                nx->map = arena_alloc(L->a, map->n * sizeof *nx->map);
                set->to_at[set->nnext] =
                    arena_alloc(L->t, map->n * sizeof *set->to_at[0]);
                for (size_t j = 0;
                     nx->map && set->to_at[set->nnext] && j < map->n; j++) {
                    const char *to =
                        read_ident(L, map->keys[j], "map column", ID_SQL);
                    const node *fv = map->vals[j];
                    if (!expect_kind(L, fv, N_SCALAR, "map source")) continue;
                    if (!fv->s[0] || strstr(fv->s, "${")) {
                        diag(L, fv,
                             "map source: expected an output field "
                             "name, got %s",
                             describe(fv));
                        continue;
                    }
                    if (!to) continue;
                    nx->map[nx->nmap].to = to;
                    nx->map[nx->nmap].from = arena_strdup(L->a, fv->s);
                    set->to_at[set->nnext][nx->nmap] = map->keys[j];
                    nx->nmap++;
                }
            }
        }
        set->nnext++;
    }
    return set;
}

/* The key node of `key` in mapping m, or NULL. */
static const node *mkey(const node *m, const char *key) {
    if (!m || m->kind != N_MAP) return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (m->keys[i]->kind == N_SCALAR && strcmp(m->keys[i]->s, key) == 0)
            return m->keys[i];
    return NULL;
}

/* A handler name (never interpolated) into st->handler; an unknown one is
 * reported with the nearest registered name. */
static void read_handler(loader *L, const node *n, sl_stage *st) {
    if (!expect_kind(L, n, N_SCALAR, "handler")) return;
    if (strstr(n->s, "${")) {
        diag(L, n,
             "handler '%s': ${...} interpolation is not allowed in "
             "handler names (choose between handlers with 'providers')",
             show(n->s));
        return;
    }
    st->handler = arena_strdup(L->a, n->s);
    if (sl_handler_find(n->s)) return;
    const char *const *names = sl_handler_names();
    const char *m = nearest(n->s, names, count_list(names));
    char list[512];
    size_t o = 0;
    list[0] = '\0';
    for (size_t i = 0; names[i] && o < sizeof list - 64; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "",
                              names[i]);
    if (m)
        diag(L, n, "unknown handler '%s' (did you mean '%s'?)", show(n->s), m);
    else
        diag(L, n, "unknown handler '%s' (registered: %s)", show(n->s), list);
}

/* What a stage runs: handler, with and hooks, read from the stage's own
 * mapping m or from one of its providers. `what` names the owner in
 * messages ("stage 'a'", "stage 'a', provider 'local'"); a missing
 * handler is reported at `at`. */
static void read_impl(loader *L, const node *m, const node *at,
                      const char *what, int is_stage, sl_stage *st) {
    const node *n, *run_hook_at = NULL;
    if (!(n = mget(m, "handler")))
        diag(L, at, "%s: missing required key 'handler'%s", what,
             is_stage ? " (or 'providers', a choice of handlers)" : "");
    else
        read_handler(L, n, st);
    if ((n = mget(m, "with")) && expect_kind(L, n, N_MAP, "with")) {
        json_t *w = to_json(L, n);
        if (w) {
            json_decref(st->with);
            st->with = w;
        }
    }
    if ((n = mget(m, "hooks")) && expect_kind(L, n, N_MAP, "hooks")) {
        if (n->n > MAX_HOOKS) {
            diag(L, n, "hooks: at most %d hooks, got %zu", MAX_HOOKS, n->n);
        } else if (n->n) {
            st->hooks = arena_alloc(L->a, n->n * sizeof *st->hooks);
            for (size_t i = 0; st->hooks && i < n->n; i++) {
                read_hook(L, n->keys[i], n->vals[i], &st->hooks[st->nhooks++]);
                if (!strcmp(key_name(n->keys[i]), "run"))
                    run_hook_at = n->keys[i];
            }
        }
    }
    if (st->handler && !strcmp(st->handler, "lua") && !run_hook_at)
        diag(L, mget(m, "handler"),
             "%s: handler 'lua' needs a 'run' hook (hooks: {run: "
             "{file: ..., function: ...}})",
             what);
}

static int is_env_name(const char *s) {
    if (!(isalpha((unsigned char)*s) || *s == '_')) return 0;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_')) return 0;
    return strlen(s) <= 255;
}

/* A provider's when_env (a variable name or a list of them). Returns 1
 * when every variable is set and non-empty (or there is no when_env),
 * else 0 with the unset ones in *missing ("A, B"; tree arena); -1 after
 * a diagnostic. */
static int read_when_env(loader *L, const node *n, const char **missing) {
    *missing = NULL;
    if (!n) return 1;
    const node *const *items = (const node *const *)&n;
    size_t cnt = 1;
    if (n->kind == N_SEQ) {
        items = (const node *const *)n->vals;
        cnt = n->n;
        if (cnt == 0) {
            diag(L, n,
                 "when_env: expected the names of environment variables, "
                 "got an empty list");
            return -1;
        }
        if (cnt > MAX_WHEN_ENV) {
            diag(L, n, "when_env: at most %d variables, got %zu", MAX_WHEN_ENV,
                 cnt);
            return -1;
        }
    } else if (n->kind != N_SCALAR) {
        diag(L, n,
             "when_env: expected an environment variable name or a list of "
             "them, got %s",
             describe(n));
        return -1;
    }
    char buf[1024];
    size_t o = 0;
    int ok = 1, bad = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < cnt; i++) {
        const node *it = items[i];
        if (!expect_kind(L, it, N_SCALAR, "when_env")) {
            bad = 1;
            continue;
        }
        if (!is_env_name(it->s)) {
            diag(L, it,
                 "when_env: '%s' is not an environment variable name "
                 "(letters, digits and '_'; no ${...})",
                 show(it->s));
            bad = 1;
            continue;
        }
        const char *v = getenv(it->s);
        if (v && *v) continue;
        ok = 0;
        if (o < sizeof buf - 80)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s",
                                  o ? ", " : "", show(it->s));
    }
    if (bad) return -1;
    if (!ok) *missing = arena_strdup(L->t, buf);
    return ok;
}

/* Reads `providers:` and chooses one: the one `provider:` names, or (auto)
 * the first in order whose when_env variables are all set and non-empty.
 * The chosen provider fills st (handler, with, hooks, next); every other
 * one is read into a scratch stage and checked the same way (handler
 * registered, hooks compile, next targets exist), except that an unset
 * ${VAR} in it is no error. Returns the chosen provider's sql_writes, or
 * -1 when it does not set it. */
static int read_providers(loader *L, const node *v, const char *sname,
                          sl_stage *st, stage_aux *ax) {
    const node *pk = mkey(v, "providers"), *provs = mget(v, "providers");
    const node *pv = mget(v, "provider");
    int sql_writes = -1, bad = 0, chosen = -1;
    if (!expect_kind(L, provs, N_MAP, "providers")) return -1;
    if (provs->n == 0) {
        diag(L, provs,
             "providers: expected at least one provider (name: {handler: "
             "...})");
        return -1;
    }
    if (provs->n > MAX_PROVIDERS) {
        diag(L, provs, "providers: at most %d providers, got %zu",
             MAX_PROVIDERS, provs->n);
        return -1;
    }
    size_t np = provs->n;
    const char **names = arena_alloc(L->t, (np + 1) * sizeof *names);
    const char **missing = arena_alloc(L->t, np * sizeof *missing);
    int *fits = arena_alloc(L->t, np * sizeof *fits);
    if (!names || !missing || !fits) return -1;

    /* The requested provider: a name, or auto (also when empty). */
    const char *want = NULL;
    if (pv) {
        const char *x = read_value(L, pv, "provider");
        if (!x)
            bad = 1;
        else if (*x && strcmp(x, "auto") != 0)
            want = x;
    }
    for (size_t i = 0; i < np; i++) {
        const node *nk = provs->keys[i], *pm = provs->vals[i];
        names[i] = key_name(nk);
        if (check_ident(L, nk, names[i], "provider name", ID_NAME) != 0)
            bad = 1;
        else if (!strcmp(names[i], "auto")) {
            diag(L, nk,
                 "provider name 'auto' is reserved ('provider: auto' picks "
                 "the first provider whose when_env variables are set)");
            bad = 1;
        }
        fits[i] = pm->kind == N_MAP
                      ? read_when_env(L, mget(pm, "when_env"), &missing[i])
                      : -1;
    }
    if (want) {
        for (size_t i = 0; i < np && chosen < 0; i++)
            if (!strcmp(names[i], want)) chosen = (int)i;
        if (chosen < 0) {
            char list[512];
            size_t o = 0;
            list[0] = '\0';
            for (size_t i = 0; i < np && o < sizeof list - 80; i++)
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%s",
                                      i ? ", " : "", show(names[i]));
            diag(L, pv,
                 "provider '%s': stage '%s' has no such provider (choices: "
                 "%s, or auto)%s",
                 show(want), sname, list, did_you_mean(want, names, np));
        }
    } else if (!bad) {
        for (size_t i = 0; i < np && chosen < 0; i++)
            if (fits[i] == 1) chosen = (int)i;
        int invalid = 0;
        for (size_t i = 0; i < np; i++)
            if (fits[i] < 0) invalid = 1;
        if (chosen < 0 && !invalid) {
            char why[700];
            size_t o = 0;
            why[0] = '\0';
            for (size_t i = 0; i < np && o < sizeof why - 160; i++)
                o += (size_t)snprintf(
                    why + o, sizeof why - o, "%s'%s' needs %s", i ? "; " : "",
                    show(names[i]), missing[i] ? missing[i] : "?");
            diag(L, pk,
                 "stage '%s': no provider qualifies: %s (set the variables, "
                 "choose one with 'provider', or add a provider without "
                 "when_env last, as the fallback)",
                 sname, why);
        }
    }

    for (size_t i = 0; i < np; i++) {
        const node *nk = provs->keys[i], *pm = provs->vals[i], *n;
        if (!expect_kind(L, pm, N_MAP, "provider")) continue;
        check_keys(L, pm, "a provider", provider_keys);
        char what[200];
        snprintf(what, sizeof what, "stage '%s', provider '%s'", sname,
                 show(names[i]));
        int is_chosen = (int)i == chosen;
        sl_stage scratch;
        memset(&scratch, 0, sizeof scratch);
        scratch.name = st->name;
        scratch.with = json_object();
        sl_stage *into = is_chosen ? st : &scratch;
        L->lenient_env = !is_chosen;
        read_impl(L, pm, nk, what, 0, into);
        if ((n = mget(pm, "next"))) {
            next_set *set = read_next(L, n, ax);
            if (set && is_chosen) {
                st->next = set->next;
                st->nnext = set->nnext;
            }
        }
        if ((n = mget(pm, "sql_writes"))) {
            int b;
            if (is_chosen) {
                if (read_bool(L, n, "sql_writes", &b) == 0) sql_writes = b;
            } else if (n->kind != N_SCALAR || !strstr(n->s, "${")) {
                read_bool(L, n, "sql_writes", &b);
            }
        }
        L->lenient_env = 0;
        json_decref(scratch.with);
    }
    if (chosen >= 0) st->provider = arena_strdup(L->a, names[chosen]);
    return sql_writes;
}

static void read_stage(loader *L, sl_pipeline *p, const node *k, const node *v,
                       const settings *defaults, sl_stage *st, stage_aux *ax,
                       stage_pos *pos) {
    settings s = *defaults;
    ax->key = k;
    st->line = k->line;
    st->col = k->col;
    st->name = read_ident(L, k, "stage name", ID_NAME);
    /* An invalid name was reported; keep it for look-ups and messages
     * (the model is discarded anyway). */
    if (!st->name) st->name = arena_strdup(L->a, key_name(k));
    st->with = json_object();
    st->status.on_start.progress = st->status.on_done.progress = -1;
    st->status.on_error.progress = -1;
    st->status.progress_from = st->status.progress_to = -1;
    apply_settings(&s, st);
    const char *sname = st->name ? st->name : show(key_name(k));
    if (!expect_kind(L, v, N_MAP, "stage")) return;
    check_keys(L, v, "a stage", stage_keys);
    const node *n;

    if (!(n = mget(v, "queue")))
        diag(L, k,
             "stage '%s': missing required key 'queue' (the queue "
             "table)",
             sname);
    else {
        st->queue = read_ident(L, n, "queue", ID_SQL);
        pos->qline = n->line;
        pos->qcol = n->col;
    }
    if ((n = mget(v, "channel"))) {
        st->channel = read_ident(L, n, "channel", ID_SQL);
        pos->cline = n->line;
        pos->ccol = n->col;
        pos->channel_set = 1;
    } else if (st->queue) {
        pos->cline = pos->qline;
        pos->ccol = pos->qcol;
        if (strlen(st->queue) + strlen("_channel") > MAX_IDENT)
            diag(L, mget(v, "queue"),
                 "the default channel '%s_channel' would be longer than %d "
                 "bytes; set 'channel'",
                 st->queue, MAX_IDENT);
        else
            st->channel = arena_printf(L->a, "%s_channel", st->queue);
    }
    const node *provs = mget(v, "providers");
    if (provs) {
        static const char *const own[] = {"handler", "with", "hooks",
                                          "sql_writes", NULL};
        for (size_t i = 0; own[i]; i++) {
            const node *kn = mkey(v, own[i]);
            if (kn)
                diag(L, kn,
                     "stage '%s': '%s' cannot be used together with "
                     "'providers' (each provider sets its own handler, "
                     "with, hooks and sql_writes)",
                     sname, own[i]);
        }
    } else {
        const node *kn = mkey(v, "provider");
        if (kn)
            diag(L, kn,
                 "stage '%s': 'provider' chooses one of the stage's "
                 "'providers', and it has none",
                 sname);
        char what[160];
        snprintf(what, sizeof what, "stage '%s'", sname);
        read_impl(L, v, k, what, 1, st);
    }
    if ((n = mget(v, "columns")) && expect_kind(L, n, N_MAP, "columns")) {
        if (n->n > MAX_COLUMNS) {
            diag(L, n, "columns: at most %d columns, got %zu", MAX_COLUMNS,
                 n->n);
        } else if (n->n) {
            st->columns = arena_alloc(L->a, n->n * sizeof *st->columns);
            for (size_t i = 0; st->columns && i < n->n; i++)
                read_column(L, n->keys[i], n->vals[i],
                            &st->columns[st->ncolumns++],
                            p->has_subject ? p->subject.fk : NULL);
        }
    }
    read_status(L, mget(v, "status"), st, p, ax);
    if ((n = mget(v, "next"))) {
        next_set *set = read_next(L, n, ax);
        if (set) {
            st->next = set->next;
            st->nnext = set->nnext;
        }
    }
    /* After the stage's own next: a provider's next replaces it. */
    int provider_sql_writes = provs ? read_providers(L, v, sname, st, ax) : -1;

    read_settings(L, v, &s);
    apply_settings(&s, st);
    if (provider_sql_writes >= 0) st->sql_writes = provider_sql_writes;
}

static const char *const subject_keys[] = {"table",   "key",      "foreign_key",
                                           "status",  "progress", "detail",
                                           "channel", NULL};

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
    return arena_strdup(a, buf);
}

static void read_subject(loader *L, const node *n, sl_pipeline *p, draft *dr) {
    if (!expect_kind(L, n, N_MAP, "subject")) return;
    p->has_subject = 1;
    sl_subject *s = &p->subject;
    check_keys(L, n, "subject", subject_keys);
    const node *v;
    if (!(v = mget(n, "table")))
        diag(L, n, "subject: missing required key 'table'");
    else
        s->table = read_ident(L, v, "subject table", ID_SQL);
    s->key = "id";
    if ((v = mget(n, "key"))) s->key = read_ident(L, v, "subject key", ID_SQL);
    if ((v = mget(n, "foreign_key"))) {
        s->fk = read_ident(L, v, "foreign_key", ID_SQL);
    } else if (s->table) {
        s->fk = default_fk(L->a, s->table);
        if (s->fk && strlen(s->fk) > MAX_IDENT) {
            diag(L, mget(n, "table"),
                 "the default foreign_key '%s' is longer than %d bytes; set "
                 "'foreign_key'",
                 show(s->fk), MAX_IDENT);
            s->fk = NULL;
        }
    }
    if (s->fk)
        for (size_t i = 0; engine_columns[i]; i++)
            if (!strcmp(s->fk, engine_columns[i]))
                diag(L, mget(n, "foreign_key") ? mget(n, "foreign_key") : n,
                     "foreign_key '%s' is a column the engine manages; choose "
                     "another name",
                     s->fk);
    s->status_column = "status";
    if (!(v = mget(n, "status"))) {
        diag(L, n, "subject: missing required key 'status' (with 'values')");
    } else if (expect_kind(L, v, N_MAP, "subject.status")) {
        static const char *const keys[] = {"column", "values", NULL};
        check_keys(L, v, "subject.status", keys);
        const node *c = mget(v, "column"), *vals = mget(v, "values");
        if (c) s->status_column = read_ident(L, c, "status column", ID_SQL);
        if (!vals) {
            diag(L, v, "subject.status: missing required key 'values'");
        } else if (expect_kind(L, vals, N_SEQ, "subject.status.values")) {
            if (vals->n == 0)
                diag(L, vals,
                     "subject.status.values: expected at least one "
                     "value");
            else if (vals->n > MAX_STATUS_VALUES)
                diag(L, vals, "subject.status.values: at most %d values",
                     MAX_STATUS_VALUES);
            else {
                s->status_values =
                    arena_alloc(L->a, vals->n * sizeof *s->status_values);
                for (size_t i = 0; s->status_values && i < vals->n; i++) {
                    const char *sv =
                        read_ident(L, vals->vals[i], "status value", ID_NAME);
                    if (!sv) continue;
                    int dup = 0;
                    for (size_t j = 0; j < s->nstatus_values; j++)
                        if (!strcmp(s->status_values[j], sv)) dup = 1;
                    if (dup)
                        diag(L, vals->vals[i],
                             "status value '%s' is listed "
                             "twice",
                             sv);
                    else
                        s->status_values[s->nstatus_values++] = sv;
                }
            }
        }
    }
    if ((v = mget(n, "progress")))
        s->progress_column = read_ident(L, v, "progress column", ID_SQL);
    if ((v = mget(n, "detail")))
        s->detail_column = read_ident(L, v, "detail column", ID_SQL);
    if ((v = mget(n, "channel"))) {
        s->channel = read_ident(L, v, "subject channel", ID_SQL);
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
                diag(L, n, "subject: %s and %s are both column '%s'", what[i],
                     what[j], cols[i]);
}

static void read_security(loader *L, const node *n, sl_pipeline *p) {
    sl_rls *r = &p->rls;
    r->enabled = 1;
    const node *inh = NULL;
    if (n && expect_kind(L, n, N_MAP, "security")) {
        static const char *const keys[] = {"rls", "inherit", NULL};
        check_keys(L, n, "security", keys);
        const node *v;
        if ((v = mget(n, "rls"))) read_bool(L, v, "rls", &r->enabled);
        inh = mget(n, "inherit");
    } else if (n) {
        return;
    }
    if (p->has_subject) {
        r->table = p->subject.table;
        r->column = p->subject.fk;
        r->key = p->subject.key;
    }
    if (inh && expect_kind(L, inh, N_MAP, "security.inherit")) {
        static const char *const keys[] = {"table", "column", "key", NULL};
        check_keys(L, inh, "security.inherit", keys);
        const node *v;
        if ((v = mget(inh, "table")))
            r->table = read_ident(L, v, "security.inherit table", ID_SQL);
        if ((v = mget(inh, "column")))
            r->column = read_ident(L, v, "security.inherit column", ID_SQL);
        if ((v = mget(inh, "key")))
            r->key = read_ident(L, v, "security.inherit key", ID_SQL);
        else if (!p->has_subject)
            r->key = "id";
        if (!p->has_subject && r->enabled) {
            if (!mget(inh, "table"))
                diag(L, inh, "security.inherit: missing required key 'table'");
            if (!mget(inh, "column"))
                diag(L, inh,
                     "security.inherit: missing required key "
                     "'column'");
        }
    } else if (!p->has_subject && r->enabled && (!inh)) {
        diag_at(L, L->file, p->line, p->col,
                "pipeline '%s' has no subject, so it needs security.inherit "
                "{table, column, key} (or security.rls: false)",
                p->name ? p->name : "?");
    }
}

/* ---- graph checks -------------------------------------------------------- */

static sl_stage *find_stage(sl_pipeline *p, const char *name) {
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].name && !strcmp(p->stages[i].name, name))
            return &p->stages[i];
    return NULL;
}

static const sl_column *find_column(const sl_stage *st, const char *name) {
    for (size_t i = 0; i < st->ncolumns; i++)
        if (st->columns[i].name && !strcmp(st->columns[i].name, name))
            return &st->columns[i];
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
                diag(g->L, set->next_at[e], "cycle in next: %s", path);
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
                diag(g->L, g->ax[u].prog[f] ? g->ax[u].prog[f] : g->ax[u].key,
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

static void check_graph(loader *L, sl_pipeline *p, stage_aux *ax) {
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
                    diag(L, set->next_at[j],
                         "next stage '%s' does not exist in pipeline '%s'%s",
                         nx->stage_name, p->name ? p->name : "?",
                         names ? did_you_mean(nx->stage_name, names, nn) : "");
                    continue;
                }
                nx->stage = t;
                const char **cols = calloc(t->ncolumns + 1, sizeof *cols);
                size_t nc = 0;
                for (size_t c = 0; cols && c < t->ncolumns; c++)
                    if (t->columns[c].name) cols[nc++] = t->columns[c].name;
                for (size_t m = 0; m < nx->nmap; m++) {
                    if (find_column(t, nx->map[m].to)) continue;
                    diag(L, set->to_at[j][m],
                         "map: next stage '%s' declares no column '%s'%s",
                         t->name, nx->map[m].to,
                         cols ? did_you_mean(nx->map[m].to, cols, nc) : "");
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
            diag(L, ax[i].key,
                 "stage '%s' is not reachable from the entry stage '%s' (the "
                 "first stage)",
                 p->stages[i].name,
                 p->stages[0].name ? p->stages[0].name : "?");
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

/* ---- one file --------------------------------------------------------------
 */

static const char *const top_keys[] = {
    "pipeline", "subject", "security", "sweep", "defaults", "stages", NULL};

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

static void read_pipeline(loader *L, const node *root) {
    if (root->kind != N_MAP) {
        diag(L, root,
             "expected a mapping with 'pipeline' and 'stages' at "
             "the top level, got %s",
             describe(root));
        return;
    }
    draft *dr = new_draft(L);
    if (!dr) {
        diag(L, root, "out of memory");
        return;
    }
    sl_pipeline *p = &dr->p;
    dr->file = arena_strdup(L->a, L->file);
    p->file = arena_strdup(L->a, L->abs);
    p->line = root->line;
    p->col = root->col;
    check_keys(L, root, "a pipeline", top_keys);
    const node *n;
    if (!(n = mget(root, "pipeline")))
        diag(L, root, "missing required key 'pipeline' (the pipeline's name)");
    else {
        p->name = read_ident(L, n, "pipeline name", ID_NAME);
        if (!p->name && n->kind == N_SCALAR) p->name = arena_strdup(L->a, n->s);
        p->line = n->line;
        p->col = n->col;
    }
    if ((n = mget(root, "subject"))) read_subject(L, n, p, dr);
    read_security(L, mget(root, "security"), p);

    p->sweep_interval_ms = 5000;
    p->sweep_age_ms = 60000;
    if ((n = mget(root, "sweep")) && expect_kind(L, n, N_MAP, "sweep")) {
        static const char *const keys[] = {"interval", "pending_age", NULL};
        check_keys(L, n, "sweep", keys);
        const node *v;
        if ((v = mget(n, "interval")))
            read_duration(L, v, "interval", 100, &p->sweep_interval_ms);
        if ((v = mget(n, "pending_age")))
            read_duration(L, v, "pending_age", 1000, &p->sweep_age_ms);
    }

    settings defaults;
    engine_defaults(&defaults);
    if ((n = mget(root, "defaults")) && expect_kind(L, n, N_MAP, "defaults")) {
        check_keys(L, n, "defaults", defaults_keys);
        read_settings(L, n, &defaults);
    }

    const node *stages = mget(root, "stages");
    if (!stages) {
        diag(L, root, "missing required key 'stages'");
        return;
    }
    if (!expect_kind(L, stages, N_MAP, "stages")) return;
    if (stages->n == 0) {
        diag(L, stages, "stages: expected at least one stage");
        return;
    }
    if (stages->n > MAX_STAGES) {
        diag(L, stages, "stages: at most %d stages per pipeline, got %zu",
             MAX_STAGES, stages->n);
        return;
    }
    size_t ns = stages->n;
    p->stages = arena_alloc(L->a, ns * sizeof *p->stages);
    dr->pos = arena_alloc(L->a, ns * sizeof *dr->pos);
    stage_aux *ax = arena_alloc(L->t, ns * sizeof *ax);
    if (!p->stages || !dr->pos || !ax) {
        diag(L, root, "out of memory");
        return;
    }
    for (size_t i = 0; i < ns; i++) {
        dr->pos[i].file = dr->file;
        read_stage(L, p, stages->keys[i], stages->vals[i], &defaults,
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
            if (st->name && !find_column(st, p->rls.column))
                diag(L, ax[i].key,
                     "stage '%s' does not declare column '%s', which "
                     "security.inherit needs",
                     st->name, p->rls.column);
        }
    }
    check_graph(L, p, ax);
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
        diag_at(L, name, 0, 0, "out of memory");
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
        diag_at(L, name, 1, 1, "the file is too large (%zu bytes, at most %u)",
                len, MAX_FILE_BYTES);
        goto out;
    }
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        int line, col;
        offset_pos(text, len, (size_t)(nul - text), &line, &col);
        diag_at(L, name, line, col,
                "a NUL byte: a pipeline file is UTF-8 "
                "text");
        goto out;
    }
    node *root = parse_yaml(L, text, len);
    if (root) read_pipeline(L, root);
out:
    arena_free(L->t);
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
        diag_at(L, path, 0, 0, "cannot read: %s", strerror(errno));
        L->io_error = 1;
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        diag_at(L, path, 0, 0, "not a regular file");
        L->io_error = 1;
        return;
    }
    if (st.st_size > (off_t)MAX_FILE_BYTES) {
        diag_at(L, path, 1, 1, "the file is too large (%lld bytes, at most %u)",
                (long long)st.st_size, MAX_FILE_BYTES);
        return;
    }
    f = fopen(path, "rb");
    if (!f) {
        diag_at(L, path, 0, 0, "cannot open: %s", strerror(errno));
        L->io_error = 1;
        return;
    }
    buf = malloc((size_t)st.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)st.st_size + 1, f) : 0;
    if (!buf || ferror(f)) {
        diag_at(L, path, 0, 0, "cannot read: %s",
                buf ? strerror(errno) : "out of memory");
        L->io_error = 1;
    } else if (n > (size_t)st.st_size) {
        diag_at(L, path, 1, 1, "the file grew while being read");
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
        diag_at(L, path, 0, 0, "cannot open directory: %s", strerror(errno));
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
        diag_at(L, path, 0, 0,
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

/* ---- across files -----------------------------------------------------------
 */

static void check_unique(loader *L) {
    for (size_t i = 0; i < L->ndrafts; i++) {
        draft *a = &L->drafts[i];
        for (size_t j = 0; j < i; j++) {
            draft *b = &L->drafts[j];
            if (a->p.name && b->p.name && !strcmp(a->p.name, b->p.name))
                diag_at(L, a->file, a->p.line, a->p.col,
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
                        diag_at(L, a->file, pa->qline, pa->qcol,
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
                        diag_at(L, a->file, pa->cline, pa->ccol,
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
                    diag_at(L, a->file, pa->qline, pa->qcol,
                            "queue table '%s' is the subject table of "
                            "pipeline '%s'",
                            sa->queue, b->p.name ? b->p.name : "?");
                    qdone = 1;
                }
                if (!cdone && sa->channel && b->p.has_subject &&
                    b->p.subject.channel &&
                    !strcmp(sa->channel, b->p.subject.channel)) {
                    diag_at(L, a->file, pa->cline, pa->ccol,
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
                    diag_at(L, a->file, a->sline, a->scol,
                            "channel '%s' is already the subject channel of "
                            "pipeline '%s' (%s:%d:%d)",
                            a->p.subject.channel, b->p.name ? b->p.name : "?",
                            b->file, b->sline, b->scol);
                    break;
                }
            }
    }
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
    arena_free(m->arena); /* m itself lives in the arena */
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
    int rc = 0;
    if (L->d->n == diags_before && L->ndrafts == 0) {
        diag_at(L, "", 0, 0, "no pipelines loaded");
    }
    check_unique(L);
    sl_model *m = NULL;
    if (L->d->n == diags_before && !L->a->failed) {
        m = arena_alloc(L->a, sizeof *m);
        sl_pipeline *ps = m ? arena_alloc(L->a, L->ndrafts * sizeof *ps) : NULL;
        if (!m || !ps) {
            diag_at(L, "", 0, 0, "out of memory");
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
                        diag_at(L, L->drafts[i].file, st->line, st->col,
                                "stage '%s'%s%s%s: handler '%s': %s", st->name,
                                st->provider ? " (provider '" : "",
                                st->provider ? st->provider : "",
                                st->provider ? "')" : "", st->handler,
                                err[0] ? err : "invalid with:");
                }
        }
    }
    if (L->a->failed && L->d->n == diags_before)
        diag_at(L, "", 0, 0, "out of memory");
    if (L->d->n > diags_before) {
        rc = L->io_error ? -SL_EIO : -SL_EINVAL;
        free_drafts(L);
        arena_free(L->a);
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
    if (npaths == 0) diag_at(&L, "", 0, 0, "no pipeline files given");
    return finish(&L, out, before);
}

int sl_dsl_load_string(const char *name, const char *text, size_t len,
                       sl_model **out, sl_diags *diags) {
    loader L;
    *out = NULL;
    if (loader_init(&L, diags) != 0) return -SL_ENOMEM;
    size_t before = diags->n;
    load_text(&L, name, text ? text : "", text ? len : 0);
    return finish(&L, out, before);
}
