/* dsl_yaml.c - the loader's arena, and libyaml events -> a tree of nodes
 * that remember their line and column.
 *
 * Anchors, aliases, tags, a second document and nesting deeper than
 * MAX_DEPTH are refused while parsing, and duplicate keys are reported
 * when their mapping ends, so nothing downstream can blow up on hostile
 * input. The tree lives in the loader's tree arena (L->t).
 */
#include "dsl_priv.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

/* ---- arena ------------------------------------------------------------- */

void *sl_dsl__arena_alloc(arena *a, size_t n) {
    assert(a);
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

char *sl_dsl__arena_strndup(arena *a, const char *s, size_t n) {
    assert(a && s);
    char *p = sl_dsl__arena_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *sl_dsl__arena_strdup(arena *a, const char *s) {
    return s ? sl_dsl__arena_strndup(a, s, strlen(s)) : NULL;
}

char *sl_dsl__arena_printf(arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *p = sl_dsl__arena_alloc(a, (size_t)n + 1);
    if (!p) return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void sl_dsl__arena_free(arena *a) {
    if (!a) return;
    chunk *c = a->head;
    while (c) {
        chunk *n = c->next;
        free(c);
        c = n;
    }
    free(a);
}

/* ---- parsing: YAML events -> tree --------------------------------------- */

static node *new_node(loader *L, int kind, yaml_mark_t m) {
    node *n = sl_dsl__arena_alloc(L->t, sizeof *n);
    if (!n) return NULL;
    n->kind = kind;
    n->line = (int)m.line + 1;
    n->col = (int)m.column + 1;
    return n;
}

static int push_child(loader *L, node *parent, node *child, int is_key) {
    assert(parent->kind == N_MAP || parent->kind == N_SEQ);
    if (parent->kind == N_MAP && !is_key) {
        parent->vals[parent->n - 1] = child;
        return 0;
    }
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        node **v = sl_dsl__arena_alloc(L->t, cap * sizeof *v);
        if (!v) return -1;
        if (parent->n) memcpy(v, parent->vals, parent->n * sizeof *v);
        parent->vals = v;
        if (parent->kind == N_MAP) {
            node **k = sl_dsl__arena_alloc(L->t, cap * sizeof *k);
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
void sl_dsl__offset_pos(const char *text, size_t len, size_t off, int *line,
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
            sl_dsl__diag(L, refs[i].key,
                         "duplicate key '%s' (first defined at line %d)",
                         sl_dsl__show(refs[i].key->s), refs[first].key->line);
            i++;
        }
    }
    free(refs);
}

/* The parser's position in the tree: the open mappings and lists, and
 * for each open mapping whether its next child is a key. */
typedef struct tree_state {
    node *stack[MAX_DEPTH + 1];
    int is_key[MAX_DEPTH + 1];
    int depth, docs;
    node *root;
} tree_state;

/* Reports libyaml's error with the best position it gives. */
static void syntax_error(loader *L, const yaml_parser_t *p, const char *text,
                         size_t len) {
    int line, col;
    if (p->error == YAML_READER_ERROR) {
        sl_dsl__offset_pos(text, len, p->problem_offset, &line, &col);
    } else {
        line = (int)p->problem_mark.line + 1;
        col = (int)p->problem_mark.column + 1;
    }
    char where[80] = "";
    if (p->context && p->error != YAML_READER_ERROR &&
        (p->context_mark.line != p->problem_mark.line ||
         p->context_mark.column != p->problem_mark.column))
        snprintf(where, sizeof where, " (which started at line %d, column %d)",
                 (int)p->context_mark.line + 1,
                 (int)p->context_mark.column + 1);
    sl_dsl__diag_at(L, L->file, line, col, "YAML syntax error: %s%s%s%s",
                    p->problem ? p->problem : "unknown problem",
                    p->context ? " " : "", p->context ? p->context : "", where);
}

/* The node an event opens (a scalar, a mapping or a list), or NULL for
 * other events, which are handled here: a second document and aliases are
 * refused (*ok = 0), an ending mapping is checked for duplicate keys.
 * *anchor and *tag (OUT) are the event's, when it has them. */
static node *event_node(loader *L, tree_state *ts, const yaml_event_t *ev,
                        const yaml_char_t **anchor, const yaml_char_t **tag,
                        int *ok) {
    node *n = NULL;
    int line = (int)ev->start_mark.line + 1;
    int col = (int)ev->start_mark.column + 1;
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++ts->docs > 1) {
            sl_dsl__diag_at(L, L->file, line, col,
                            "a second YAML document: a pipeline file holds "
                            "exactly one document");
            *ok = 0;
        }
        break;
    case YAML_ALIAS_EVENT:
        sl_dsl__diag_at(L, L->file, line, col,
                        "YAML alias '*%s': anchors and aliases are not "
                        "supported in pipeline files",
                        sl_dsl__show((const char *)ev->data.alias.anchor));
        *ok = 0;
        break;
    case YAML_SCALAR_EVENT:
        *anchor = ev->data.scalar.anchor;
        *tag = ev->data.scalar.tag;
        n = new_node(L, N_SCALAR, ev->start_mark);
        if (!n) break;
        n->len = ev->data.scalar.length;
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        n->s = sl_dsl__arena_strndup(L->t, (const char *)ev->data.scalar.value,
                                     n->len);
        if (n->s && strlen(n->s) != n->len) {
            sl_dsl__diag(L, n, "a NUL character in a value");
            n->len = strlen(n->s);
        }
        break;
    case YAML_MAPPING_START_EVENT:
        *anchor = ev->data.mapping_start.anchor;
        *tag = ev->data.mapping_start.tag;
        n = new_node(L, N_MAP, ev->start_mark);
        break;
    case YAML_SEQUENCE_START_EVENT:
        *anchor = ev->data.sequence_start.anchor;
        *tag = ev->data.sequence_start.tag;
        n = new_node(L, N_SEQ, ev->start_mark);
        break;
    case YAML_MAPPING_END_EVENT:
    case YAML_SEQUENCE_END_EVENT:
        if (ts->depth > 0) {
            node *done = ts->stack[--ts->depth];
            if (done->kind == N_MAP) check_duplicates(L, done);
        }
        break;
    default: break;
    }
    return n;
}

/* Hangs node n (NULL: its allocation failed) into the tree and opens it
 * when it is a mapping or a list. Returns 0, or -1 after a diagnostic
 * that ends the parse. */
static int attach(loader *L, tree_state *ts, node *n) {
    if (!n) {
        sl_dsl__diag_at(L, L->file, 0, 0, "out of memory");
        return -1;
    }
    if (ts->depth == 0) {
        ts->root = n;
    } else {
        node *parent = ts->stack[ts->depth - 1];
        int key = parent->kind == N_MAP && ts->is_key[ts->depth - 1];
        if (key && n->kind != N_SCALAR)
            sl_dsl__diag(L, n, "a mapping key must be a plain name, not %s",
                         sl_dsl__describe(n));
        if (push_child(L, parent, n, key) != 0) {
            sl_dsl__diag_at(L, L->file, 0, 0, "out of memory");
            return -1;
        }
        if (parent->kind == N_MAP) ts->is_key[ts->depth - 1] = !key;
    }
    if (n->kind == N_SCALAR) return 0;
    if (ts->depth == MAX_DEPTH) {
        sl_dsl__diag(L, n, "nesting deeper than %d levels", MAX_DEPTH);
        return -1;
    }
    ts->is_key[ts->depth] = 1;
    ts->stack[ts->depth++] = n;
    return 0;
}

node *sl_dsl__parse_yaml(loader *L, const char *text, size_t len) {
    assert(L && L->t && text);
    yaml_parser_t p;
    yaml_event_t ev;
    tree_state ts;
    int ok = 1;

    memset(&ts, 0, sizeof ts);
    if (!yaml_parser_initialize(&p)) {
        sl_dsl__diag_at(L, L->file, 0, 0, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (;;) {
        if (!yaml_parser_parse(&p, &ev)) {
            syntax_error(L, &p, text, len);
            ok = 0;
            break;
        }
        yaml_event_type_t type = ev.type;
        const yaml_char_t *anchor = NULL, *tag = NULL;
        node *n = event_node(L, &ts, &ev, &anchor, &tag, &ok);
        if (ok && anchor) {
            sl_dsl__diag_at(L, L->file, (int)ev.start_mark.line + 1,
                            (int)ev.start_mark.column + 1,
                            "YAML anchor '&%s': anchors and aliases are not "
                            "supported in pipeline files",
                            sl_dsl__show((const char *)anchor));
            ok = 0;
        }
        if (ok && tag) {
            sl_dsl__diag_at(L, L->file, (int)ev.start_mark.line + 1,
                            (int)ev.start_mark.column + 1,
                            "YAML tag '%s' is not supported (quote a value to "
                            "make it a string)",
                            sl_dsl__show((const char *)tag));
        }
        if (ok &&
            (type == YAML_SCALAR_EVENT || type == YAML_MAPPING_START_EVENT ||
             type == YAML_SEQUENCE_START_EVENT) &&
            attach(L, &ts, n) != 0)
            ok = 0;
        yaml_event_delete(&ev);
        if (!ok || type == YAML_STREAM_END_EVENT) break;
    }
    yaml_parser_delete(&p);
    if (!ok) return NULL;
    if (!ts.root) {
        sl_dsl__diag_at(L, L->file, 1, 1,
                        "the file is empty: expected a mapping with "
                        "'pipeline' and 'stages'");
        return NULL;
    }
    return ts.root;
}

/* ---- reading helpers ----------------------------------------------------- */

node *sl_dsl__mget(const node *m, const char *key) {
    assert(key);
    if (!m || m->kind != N_MAP) return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (m->keys[i]->kind == N_SCALAR && strcmp(m->keys[i]->s, key) == 0)
            return m->vals[i];
    return NULL;
}

const char *sl_dsl__key_name(const node *k) {
    return k->kind == N_SCALAR ? k->s : "";
}

/* Reports keys of m not in allowed[] (NULL-terminated), suggesting the
 * nearest valid one. */
void sl_dsl__check_keys(loader *L, const node *m, const char *where,
                        const char *const *allowed) {
    assert(L && m && m->kind == N_MAP && where && allowed);
    size_t na = sl_dsl__count_list(allowed);
    for (size_t i = 0; i < m->n; i++) {
        const node *k = m->keys[i];
        if (k->kind != N_SCALAR) continue;
        size_t j;
        for (j = 0; j < na; j++)
            if (strcmp(k->s, allowed[j]) == 0) break;
        if (j < na) continue;
        if (L->full) return;
        const char *m2 = sl_model_nearest(k->s, allowed, na);
        if (m2) {
            sl_dsl__diag(L, k, "unknown key '%s' in %s (did you mean '%s'?)",
                         sl_dsl__show(k->s), where, m2);
        } else {
            char list[512];
            size_t o = 0;
            list[0] = '\0';
            for (j = 0; j < na && o < sizeof list - 64; j++)
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%s",
                                      j ? ", " : "", allowed[j]);
            sl_dsl__diag(L, k, "unknown key '%s' in %s (expected one of: %s)",
                         sl_dsl__show(k->s), where, list);
        }
    }
}

int sl_dsl__expect_kind(loader *L, const node *n, int kind, const char *what) {
    assert(L && n && what);
    if (n->kind == kind) return 1;
    sl_dsl__diag(L, n, "%s: expected %s, got %s", what,
                 kind == N_MAP   ? "a mapping"
                 : kind == N_SEQ ? "a list"
                                 : "a value",
                 sl_dsl__describe(n));
    return 0;
}

/* The key node of `key` in mapping m, or NULL. */
const node *sl_dsl__mkey(const node *m, const char *key) {
    assert(key);
    if (!m || m->kind != N_MAP) return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (m->keys[i]->kind == N_SCALAR && strcmp(m->keys[i]->s, key) == 0)
            return m->keys[i];
    return NULL;
}
