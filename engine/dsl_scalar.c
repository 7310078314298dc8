/* dsl_scalar.c - scalar values of the DSL: names, ${VAR} interpolation,
 * integers, numbers, bools, durations and sizes, and `with` as JSON.
 *
 * Names are never interpolated; values are, from the environment, with
 * ${VAR:-default} and "$${" for a literal "${". The value rules themselves
 * (what an identifier or a duration is) live in model.c.
 */
#include "dsl_priv.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Checks an identifier against the rule of model.c (sl_ident_check), and
 * against the SQL reserved words when sql is ID_SQL; reports and returns -1
 * when invalid. */
int sl_dsl__check_ident(loader *L, const node *at, const char *s,
                        const char *what, int sql) {
    assert(L && s && what);
    if (strstr(s, "${")) {
        sl_dsl__diag(L, at,
                     "%s '%s': ${...} interpolation is not allowed in names",
                     what, sl_dsl__show(s));
        return -1;
    }
    switch (sl_ident_check(s)) {
    case SL_IDENT_OK: break;
    case SL_IDENT_EMPTY:
        sl_dsl__diag(L, at, "%s: expected a name, got an empty value", what);
        return -1;
    case SL_IDENT_CHARS:
        sl_dsl__diag(L, at,
                     "%s '%s' is not a valid name: expected lower-case "
                     "letters, digits and '_' ([a-z_][a-z0-9_]*)",
                     what, sl_dsl__show(s));
        return -1;
    case SL_IDENT_TOO_LONG:
        sl_dsl__diag(L, at, "%s '%s' is too long: %zu bytes, at most %d", what,
                     sl_dsl__show(s), strlen(s), SL_IDENT_MAX);
        return -1;
    }
    if (sql && sl_reserved_word(s)) {
        sl_dsl__diag(L, at,
                     "%s '%s' is an SQL reserved word; choose another name",
                     what, s);
        return -1;
    }
    return 0;
}

/* A name from a scalar node: validated, copied into the model arena.
 * NULL (after a diagnostic) when n is not a valid name. */
const char *sl_dsl__read_ident(loader *L, const node *n, const char *what,
                               int sql) {
    if (!n) return NULL;
    if (!sl_dsl__expect_kind(L, n, N_SCALAR, what)) return NULL;
    if (sl_dsl__check_ident(L, n, n->s, what, sql) != 0) return NULL;
    return sl_dsl__arena_strdup(L->a, n->s);
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
                sl_dsl__diag(L, at,
                             "bad interpolation in '%s': expected ${NAME} or "
                             "${NAME:-default}",
                             sl_dsl__show(s));
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
                sl_dsl__diag(L, at,
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
    char *r = bad ? NULL : sl_dsl__arena_strndup(L->t, out, len);
    free(out);
    return r;
}

/* A non-name scalar value, interpolated. NULL after a diagnostic. */
const char *sl_dsl__read_value(loader *L, const node *n, const char *what) {
    assert(L && n && what);
    if (!sl_dsl__expect_kind(L, n, N_SCALAR, what)) return NULL;
    return interpolate(L, n, n->s);
}

const char *sl_dsl__read_text(loader *L, const node *n, const char *what) {
    const char *v = sl_dsl__read_value(L, n, what);
    return v ? sl_dsl__arena_strdup(L->a, v) : NULL;
}

int sl_dsl__parse_ll(const char *s, long long *out) {
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
int sl_dsl__read_int(loader *L, const node *n, const char *what, long long lo,
                     long long hi, int *out) {
    assert(lo <= hi && out);
    const char *v = sl_dsl__read_value(L, n, what);
    if (!v) return -1;
    long long x;
    if (sl_dsl__parse_ll(v, &x) != 0) {
        sl_dsl__diag(L, n, "%s: expected an integer, got '%s'", what,
                     sl_dsl__show(v));
        return -1;
    }
    if (x < lo || x > hi) {
        if (hi >= INT_MAX)
            sl_dsl__diag(L, n, "%s: must be >= %lld, got %lld", what, lo, x);
        else
            sl_dsl__diag(L, n, "%s: must be between %lld and %lld, got %lld",
                         what, lo, hi, x);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int sl_dsl__read_double(loader *L, const node *n, const char *what, double lo,
                        double hi, double *out) {
    assert(lo <= hi && out);
    const char *v = sl_dsl__read_value(L, n, what);
    if (!v) return -1;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    int numeric = *v && !*end && !errno && isfinite(x);
    for (const char *q = v; numeric && *q; q++)
        if (!strchr("0123456789.eE+-", *q)) numeric = 0;
    if (!numeric) {
        sl_dsl__diag(L, n, "%s: expected a number, got '%s'", what,
                     sl_dsl__show(v));
        return -1;
    }
    if (x < lo || x > hi) {
        if (hi == HUGE_VAL)
            sl_dsl__diag(L, n, "%s: must be >= %g, got %s", what, lo,
                         sl_dsl__show(v));
        else
            sl_dsl__diag(L, n, "%s: must be between %g and %g, got %s", what,
                         lo, hi, sl_dsl__show(v));
        return -1;
    }
    *out = x;
    return 0;
}

int sl_dsl__read_bool(loader *L, const node *n, const char *what, int *out) {
    const char *v = sl_dsl__read_value(L, n, what);
    if (!v) return -1;
    if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE")) {
        *out = 1;
        return 0;
    }
    if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE")) {
        *out = 0;
        return 0;
    }
    sl_dsl__diag(L, n, "%s: expected true or false, got '%s'", what,
                 sl_dsl__show(v));
    return -1;
}

int sl_dsl__read_duration(loader *L, const node *n, const char *what,
                          int64_t min_ms, int64_t *out) {
    const char *v = sl_dsl__read_value(L, n, what);
    if (!v) return -1;
    int64_t ms;
    if (sl_duration_parse(v, &ms) != 0) {
        long long dummy;
        sl_dsl__diag(
            L, n,
            "%s: expected a duration such as 250ms, 3s, 5m, 2h or 1d, got "
            "'%s'%s",
            what, sl_dsl__show(v),
            sl_dsl__parse_ll(v, &dummy) == 0 ? " (a number needs a unit)" : "");
        return -1;
    }
    if (ms < min_ms) {
        sl_dsl__diag(L, n, "%s: must be at least %lldms, got '%s'", what,
                     (long long)min_ms, sl_dsl__show(v));
        return -1;
    }
    *out = ms;
    return 0;
}

/* Sizes: an integer with an optional unit B, KB, MB, GB (powers of 1024). */
int sl_dsl__read_size(loader *L, const node *n, const char *what, size_t *out) {
    const char *v = sl_dsl__read_value(L, n, what);
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
        sl_dsl__diag(L, n,
                     "%s: expected a size such as 64MB, 512KB or 1GB, got '%s'",
                     what, sl_dsl__show(v));
        return -1;
    }
    x *= mult;
    if (x < 64 * 1024 || x > 16ull * 1024 * 1024 * 1024) {
        sl_dsl__diag(L, n, "%s: must be between 64KB and 16GB, got '%s'", what,
                     sl_dsl__show(v));
        return -1;
    }
    *out = (size_t)x;
    return 0;
}

/* ---- `with`: YAML -> JSON ------------------------------------------------ */

static int looks_int(const char *s) {
    long long d;
    return sl_dsl__parse_ll(s, &d) == 0;
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

json_t *sl_dsl__to_json(loader *L, const node *n) {
    assert(L && n);
    if (n->kind == N_MAP) {
        json_t *o = json_object();
        for (size_t i = 0; o && i < n->n; i++)
            json_object_set_new(o, sl_dsl__key_name(n->keys[i]),
                                sl_dsl__to_json(L, n->vals[i]));
        return o;
    }
    if (n->kind == N_SEQ) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < n->n; i++)
            json_array_append_new(a, sl_dsl__to_json(L, n->vals[i]));
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
        if (looks_int(v) && sl_dsl__parse_ll(v, &x) == 0)
            return json_integer(x);
        if (looks_float(v)) {
            double d = strtod(v, NULL);
            if (isfinite(d)) return json_real(d);
        }
    }
    json_t *str = json_stringn(v, strlen(v));
    if (!str) {
        sl_dsl__diag(L, n, "value '%s' is not valid UTF-8 after interpolation",
                     sl_dsl__show(v));
        return json_null();
    }
    return str;
}
