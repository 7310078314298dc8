/* jobs.c - enqueue, cancel, retry and find jobs (jobs.h).
 *
 * The statements are built per call from the model: these are operator
 * and application calls, not the worker's hot path, so they are not
 * prepared. Column values arrive as JSON and are bound as text with a cast
 * to the column's declared type (a type name from the DSL's whitelist, so
 * it may be spliced); raw file bytes are bound in binary format.
 */
#include "jobs.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "db.h"
#include "error.h"

/* ---- helpers ------------------------------------------------------------ */

static void db_err(char *err, size_t n, const char *what, PGconn *c,
                   const PGresult *r) {
    char m[2048];
    snprintf(err, n, "%s: %s", what, sl_db_error(c, r, m, sizeof m));
}

static int is_json_type(const char *t) {
    return strcmp(t, "jsonb") == 0 || strcmp(t, "json") == 0;
}

static int is_array_type(const char *t) {
    size_t l = strlen(t);
    return l > 2 && strcmp(t + l - 2, "[]") == 0;
}

static int is_int_type(const char *t) {
    return strcmp(t, "smallint") == 0 || strcmp(t, "integer") == 0 ||
           strcmp(t, "bigint") == 0;
}

static int is_float_type(const char *t) {
    return strcmp(t, "real") == 0 || strcmp(t, "double precision") == 0 ||
           strcmp(t, "numeric") == 0;
}

static int is_int_text(const char *s) {
    while (isspace((unsigned char)*s)) s++;
    if (*s == '-' || *s == '+') s++;
    if (!isdigit((unsigned char)*s)) return 0;
    while (isdigit((unsigned char)*s)) s++;
    while (isspace((unsigned char)*s)) s++;
    return *s == '\0';
}

static int is_float_text(const char *s) {
    char *end;
    if (!*s) return 0;
    (void)strtod(s, &end);
    while (isspace((unsigned char)*end)) end++;
    return end != s && *end == '\0';
}

static int is_bool_text(const char *s) {
    static const char *const words[] = {"t",  "f",   "true", "false", "yes",
                                        "no", "on",  "off",  "1",     "0",
                                        "y",  "n"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcasecmp(s, words[i]) == 0) return 1;
    return 0;
}

int sl_jobs_is_uuid(const char *t) {
    static const int groups[5] = {8, 4, 4, 4, 12};
    if (!t) return 0;
    for (int g = 0; g < 5; g++) {
        for (int i = 0; i < groups[g]; i++, t++)
            if (!isxdigit((unsigned char)*t)) return 0;
        if (g < 4 && *t++ != '-') return 0;
    }
    return *t == '\0';
}

const sl_column *sl_jobs_column(const sl_stage *s, const char *name) {
    for (size_t i = 0; i < s->ncolumns; i++)
        if (strcmp(s->columns[i].name, name) == 0) return &s->columns[i];
    return NULL;
}

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

int sl_jobs_check_value(const sl_column *col, const json_t *v, char *err,
                        size_t errlen) {
    const char *t = col->type;
    if (json_is_null(v) || is_json_type(t)) return 0;
    if (is_array_type(t)) {
        if (json_is_array(v) || json_is_string(v)) return 0;
        snprintf(err, errlen,
                 "column %s (%s) takes a JSON array or a string in "
                 "PostgreSQL array syntax such as \"{a,b}\", not %s",
                 col->name, t, json_kind(v));
        return -SL_EINVAL;
    }
    if (json_is_object(v) || json_is_array(v)) {
        snprintf(err, errlen, "column %s (%s) takes a single value, not %s",
                 col->name, t, json_kind(v));
        return -SL_EINVAL;
    }
    if (strcmp(t, "bytea") == 0 && !json_is_string(v)) {
        snprintf(err, errlen,
                 "column %s (bytea) takes a string in bytea syntax such as "
                 "\"\\\\x6869\" (or --file for raw bytes), not %s",
                 col->name, json_kind(v));
        return -SL_EINVAL;
    }
    const char *s = json_string_value(v);
    int ok = 1;
    if (is_int_type(t))
        ok = json_is_integer(v) || (s && is_int_text(s));
    else if (is_float_type(t))
        ok = json_is_number(v) || (s && is_float_text(s));
    else if (strcmp(t, "boolean") == 0)
        ok = json_is_boolean(v) || (s && is_bool_text(s));
    else if (strcmp(t, "uuid") == 0)
        ok = s && sl_jobs_is_uuid(s);
    if (!ok) {
        char *txt = json_dumps(v, JSON_ENCODE_ANY);
        snprintf(err, errlen, "column %s (%s): %s is not a valid %s",
                 col->name, t, txt ? txt : "value", t);
        free(txt);
        return -SL_EINVAL;
    }
    return 0;
}

int sl_jobs_value_from_text(const sl_column *col, const char *text,
                            json_t **out, char *err, size_t errlen) {
    json_t *v = NULL;
    json_error_t je;
    *out = NULL;
    if (is_json_type(col->type)) {
        v = json_loads(text, JSON_DECODE_ANY, &je);
        if (!v) {
            if (strchr("{[\"", text[0]) && text[0]) {
                snprintf(err, errlen, "column %s (%s): invalid JSON: %s",
                         col->name, col->type, je.text);
                return -SL_EINVAL;
            }
            v = json_string(text);
        }
    } else if (is_array_type(col->type) && text[0] == '[') {
        v = json_loads(text, 0, &je);
        if (!json_is_array(v)) {
            json_decref(v);
            snprintf(err, errlen, "column %s (%s): invalid JSON array",
                     col->name, col->type);
            return -SL_EINVAL;
        }
    } else {
        v = json_string(text);
    }
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    int rc = sl_jobs_check_value(col, v, err, errlen);
    if (rc != 0) {
        json_decref(v);
        return rc;
    }
    *out = v;
    return 0;
}

/* ---- one job ------------------------------------------------------------- */

/* Bound parameters of one statement; text values are owned. */
typedef struct params {
    const char **vals;
    int *lens, *fmts;
    char **owned;
    int n, cap;
} params;

static int params_init(params *p, int cap) {
    memset(p, 0, sizeof *p);
    p->vals = calloc((size_t)cap, sizeof *p->vals);
    p->lens = calloc((size_t)cap, sizeof *p->lens);
    p->fmts = calloc((size_t)cap, sizeof *p->fmts);
    p->owned = calloc((size_t)cap, sizeof *p->owned);
    p->cap = cap;
    return p->vals && p->lens && p->fmts && p->owned ? 0 : -1;
}

static void params_free(params *p) {
    for (int i = 0; i < p->n; i++) free(p->owned[i]);
    free(p->vals);
    free(p->lens);
    free(p->fmts);
    free(p->owned);
}

/* Adds a text parameter (copied when own is set) and returns its number. */
static int param_text(params *p, const char *v, int own) {
    char *copy = own && v ? strdup(v) : NULL;
    p->owned[p->n] = copy;
    p->vals[p->n] = own ? copy : v;
    p->n++;
    return p->n;
}

static int param_bin(params *p, const void *data, size_t len) {
    static const char empty[1] = {0};
    p->vals[p->n] = data ? (const char *)data : empty;
    p->lens[p->n] = (int)len;
    p->fmts[p->n] = 1;
    p->n++;
    return p->n;
}

/* Appends the SQL expression for value v of column col, binding what it
 * needs. Returns 0 or -1 on out of memory. */
static int value_expr(sl_buf *b, params *p, const sl_column *col,
                      const json_t *v) {
    const char *t = col->type;
    char num[64];
    int k;
    if (json_is_null(v)) {
        sl_buf_printf(b, "NULL::%s", t);
        return 0;
    }
    if (is_json_type(t) || (is_array_type(t) && json_is_array(v))) {
        char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!txt) return -1;
        k = param_text(p, txt, 1);
        free(txt);
        if (!p->vals[k - 1]) return -1;
        if (is_json_type(t))
            sl_buf_printf(b, "$%d::%s", k, t);
        else
            sl_buf_printf(b, "ARRAY(SELECT jsonb_array_elements_text($%d::"
                             "jsonb))::%s", k, t);
        return 0;
    }
    const char *s = json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        s = num;
    } else if (json_is_real(v)) {
        snprintf(num, sizeof num, "%.17g", json_real_value(v));
        s = num;
    } else if (json_is_boolean(v)) {
        s = json_is_true(v) ? "true" : "false";
    }
    k = param_text(p, s, 1);
    if (!p->vals[k - 1]) return -1;
    sl_buf_printf(b, "$%d::%s", k, t);
    return 0;
}

static int check_subject(const sl_stage *s, const char *subject_id,
                         char *err, size_t errlen) {
    const sl_pipeline *pl = s->pipeline;
    if (pl->has_subject && !subject_id) {
        snprintf(err, errlen,
                 "pipeline %s has a subject (table %s): a subject id is "
                 "required",
                 pl->name, pl->subject.table);
        return -SL_EINVAL;
    }
    if (!pl->has_subject && subject_id) {
        snprintf(err, errlen,
                 "pipeline %s has no subject (its queues stand alone): "
                 "a subject id makes no sense here",
                 pl->name);
        return -SL_EINVAL;
    }
    if (subject_id && !sl_jobs_is_uuid(subject_id)) {
        snprintf(err, errlen, "subject id '%s' is not a UUID", subject_id);
        return -SL_EINVAL;
    }
    return 0;
}

/* Checks the columns and options of one enqueue against s; *bin gets the
 * bytea column that o->bin_data fills, if any. */
static int check_enqueue(const sl_stage *s, const json_t *columns,
                         const sl_enqueue_opts *o, const sl_column **bin,
                         char *err, size_t errlen) {
    const char *key;
    const json_t *v;
    int rc;
    if (columns && !json_is_object(columns)) {
        snprintf(err, errlen, "columns must be a JSON object");
        return -SL_EINVAL;
    }
    json_object_foreach((json_t *)columns, key, v) {
        const sl_column *col = sl_jobs_column(s, key);
        if (!col) {
            snprintf(err, errlen, "stage %s (queue %s) declares no column %s",
                     s->name, s->queue, key);
            return -SL_EINVAL;
        }
        if ((rc = sl_jobs_check_value(col, v, err, errlen)) != 0) return rc;
    }
    *bin = NULL;
    if (!o->bin_column) return 0;
    *bin = sl_jobs_column(s, o->bin_column);
    if (!*bin || strcmp((*bin)->type, "bytea") != 0) {
        snprintf(err, errlen, "stage %s declares no bytea column %s", s->name,
                 o->bin_column);
        return -SL_EINVAL;
    }
    if (json_object_get(columns, o->bin_column)) {
        snprintf(err, errlen, "column %s is given twice", o->bin_column);
        return -SL_EINVAL;
    }
    if (o->bin_len > SL_JOBS_MAX_FILE) {
        snprintf(err, errlen, "%zu bytes is over the limit of %zu MiB "
                              "for one job's bytea column",
                 o->bin_len, SL_JOBS_MAX_FILE >> 20);
        return -SL_EINVAL;
    }
    return 0;
}

/* The start of the insert: with a subject, it selects from the subject
 * row, so a missing subject inserts nothing instead of failing on the
 * foreign key with a message about constraints. */
static void insert_head(sl_buf *q, const sl_stage *s) {
    const sl_pipeline *pl = s->pipeline;
    if (pl->has_subject) {
        sl_buf_puts(q, "WITH s AS (SELECT t.");
        sl_buf_ident(q, pl->subject.key);
        sl_buf_puts(q, " AS k FROM ");
        sl_buf_ident(q, pl->subject.table);
        sl_buf_puts(q, " t WHERE t.");
        sl_buf_ident(q, pl->subject.key);
        sl_buf_puts(q, " = $1::uuid) ");
    }
    sl_buf_puts(q, "INSERT INTO ");
    sl_buf_ident(q, s->queue);
}

int sl_jobs_enqueue(PGconn *c, const sl_stage *s, const char *subject_id,
                    const json_t *columns, const sl_enqueue_opts *o,
                    char *id_out, char *err, size_t errlen) {
    assert(c && s && s->pipeline && id_out && err && errlen > 0);
    static const sl_enqueue_opts none;
    const sl_pipeline *pl = s->pipeline;
    const sl_column *bin = NULL;
    const json_t *v;
    int rc = check_subject(s, subject_id, err, errlen);
    if (rc != 0) return rc;
    if (!o) o = &none;
    if ((rc = check_enqueue(s, columns, o, &bin, err, errlen)) != 0) return rc;

    params p;
    sl_buf cols, exprs, q;
    PGresult *r = NULL;
    sl_buf_init(&cols);
    sl_buf_init(&exprs);
    sl_buf_init(&q);
    if (params_init(&p, (int)json_object_size(columns) + 6) != 0) {
        rc = -SL_ENOMEM;
        goto out;
    }
    int first = 1;
#define SEP()                                                              \
    do {                                                                   \
        if (!first) {                                                      \
            sl_buf_puts(&cols, ", ");                                      \
            sl_buf_puts(&exprs, ", ");                                     \
        }                                                                  \
        first = 0;                                                         \
    } while (0)
    if (pl->has_subject) {
        SEP();
        sl_buf_ident(&cols, pl->subject.fk);
        sl_buf_puts(&exprs, "s.k");
        param_text(&p, subject_id, 0); /* $1 */
    }
    /* Declaration order keeps the statement text stable. */
    for (size_t i = 0; i < s->ncolumns; i++) {
        const sl_column *col = &s->columns[i];
        v = json_object_get(columns, col->name);
        if (col == bin) {
            SEP();
            sl_buf_ident(&cols, col->name);
            sl_buf_printf(&exprs, "$%d::bytea",
                          param_bin(&p, o->bin_data, o->bin_len));
        } else if (v) {
            SEP();
            sl_buf_ident(&cols, col->name);
            if (value_expr(&exprs, &p, col, v) != 0) {
                rc = -SL_ENOMEM;
                goto out;
            }
        }
    }
    if (o->has_priority) {
        char pr[16];
        snprintf(pr, sizeof pr, "%d", o->priority);
        SEP();
        sl_buf_puts(&cols, "priority");
        sl_buf_printf(&exprs, "$%d::int", param_text(&p, pr, 1));
    }
    if (o->run_at) {
        SEP();
        sl_buf_puts(&cols, "run_at");
        sl_buf_printf(&exprs, "$%d::timestamptz", param_text(&p, o->run_at, 0));
    } else if (o->delay_ms > 0) {
        char d[24];
        snprintf(d, sizeof d, "%lld", (long long)o->delay_ms);
        SEP();
        sl_buf_puts(&cols, "run_at");
        sl_buf_printf(&exprs, "now() + $%d::bigint * interval '1 millisecond'",
                      param_text(&p, d, 1));
    }
#undef SEP

    insert_head(&q, s);
    if (first) {
        sl_buf_puts(&q, " DEFAULT VALUES");
    } else {
        sl_buf_printf(&q, " (%s) SELECT %s", sl_buf_str(&cols),
                      sl_buf_str(&exprs));
        if (pl->has_subject) sl_buf_puts(&q, " FROM s");
    }
    sl_buf_puts(&q, " RETURNING id");
    if (sl_buf_failed(&q) || sl_buf_failed(&cols) || sl_buf_failed(&exprs)) {
        rc = -SL_ENOMEM;
        goto out;
    }
    r = PQexecParams(c, sl_buf_str(&q), p.n, NULL, p.vals, p.lens, p.fmts, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char what[160];
        snprintf(what, sizeof what, "enqueue into %s", s->queue);
        db_err(err, errlen, what, c, r);
        /* A value the server refuses (a --run-at that is no timestamp)
         * is the caller's mistake, not a database failure. */
        rc = sl_db_data_error(r) ? -SL_EINVAL : -SL_EDB;
        goto out;
    }
    if (PQntuples(r) == 0) {
        snprintf(err, errlen, "subject %s not found in table %s (pipeline %s)",
                 subject_id, pl->subject.table, pl->name);
        rc = -SL_ENOTFOUND;
        goto out;
    }
    snprintf(id_out, 40, "%s", PQgetvalue(r, 0, 0));
    rc = 0;
out:
    if (rc == -SL_ENOMEM) snprintf(err, errlen, "out of memory");
    PQclear(r);
    if (p.vals) params_free(&p);
    sl_buf_free(&cols);
    sl_buf_free(&exprs);
    sl_buf_free(&q);
    return rc;
}

/* ---- batches -------------------------------------------------------------- */

int sl_jobs_check_row(const sl_stage *s, const json_t *row, char *err,
                      size_t errlen) {
    const char *key;
    const json_t *v;
    if (!json_is_object(row)) {
        snprintf(err, errlen, "expected a JSON object such as {\"subject\": "
                              "\"<uuid>\", \"columns\": {...}}, got %s",
                 json_kind(row));
        return -SL_EINVAL;
    }
    json_object_foreach((json_t *)row, key, v) {
        if (strcmp(key, "subject") == 0) {
            if (!json_is_string(v)) {
                snprintf(err, errlen, "\"subject\" must be a UUID string");
                return -SL_EINVAL;
            }
        } else if (strcmp(key, "columns") == 0) {
            if (!json_is_object(v)) {
                snprintf(err, errlen, "\"columns\" must be an object");
                return -SL_EINVAL;
            }
        } else if (strcmp(key, "priority") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < -2147483647 ||
                json_integer_value(v) > 2147483647) {
                snprintf(err, errlen, "\"priority\" must be an integer");
                return -SL_EINVAL;
            }
        } else if (strcmp(key, "run_at") == 0) {
            if (!json_is_string(v)) {
                snprintf(err, errlen, "\"run_at\" must be a timestamp string");
                return -SL_EINVAL;
            }
        } else {
            snprintf(err, errlen, "unknown key \"%s\" (expected subject, "
                                  "columns, priority, run_at)",
                     key);
            return -SL_EINVAL;
        }
    }
    int rc = check_subject(
        s, json_string_value(json_object_get(row, "subject")), err, errlen);
    if (rc != 0) return rc;
    json_object_foreach(json_object_get(row, "columns"), key, v) {
        const sl_column *col = sl_jobs_column(s, key);
        if (!col) {
            snprintf(err, errlen, "stage %s (queue %s) declares no column %s",
                     s->name, s->queue, key);
            return -SL_EINVAL;
        }
        if ((rc = sl_jobs_check_value(col, v, err, errlen)) != 0) return rc;
    }
    return 0;
}

/* The batch statement: $1 the rows as a jsonb array, $2 the default
 * priority. Returns (first row whose subject is missing, rows inserted). */
static void build_batch(sl_buf *b, const sl_stage *s) {
    const sl_pipeline *pl = s->pipeline;
    sl_buf_puts(b, "WITH e AS (SELECT x.v, x.n FROM jsonb_array_elements("
                   "$1::jsonb) WITH ORDINALITY x(v, n)), m AS (SELECT ");
    if (pl->has_subject) {
        sl_buf_puts(b, "min(e.n) AS n FROM e WHERE NOT EXISTS (SELECT 1 FROM ");
        sl_buf_ident(b, pl->subject.table);
        sl_buf_puts(b, " t WHERE t.");
        sl_buf_ident(b, pl->subject.key);
        sl_buf_puts(b, " = (e.v->>'subject')::uuid))");
    } else {
        sl_buf_puts(b, "NULL::bigint AS n)");
    }
    sl_buf_puts(b, ", i AS (INSERT INTO ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " (");
    if (pl->has_subject) {
        sl_buf_ident(b, pl->subject.fk);
        sl_buf_puts(b, ", ");
    }
    for (size_t i = 0; i < s->ncolumns; i++) {
        sl_buf_ident(b, s->columns[i].name);
        sl_buf_puts(b, ", ");
    }
    sl_buf_puts(b, "priority, run_at) SELECT ");
    if (pl->has_subject) sl_buf_puts(b, "(e.v->>'subject')::uuid, ");
    for (size_t i = 0; i < s->ncolumns; i++) {
        const sl_column *col = &s->columns[i];
        /* x is the row's JSON value for the column, typed below. */
        sl_buf b2;
        sl_buf_init(&b2);
        sl_buf_puts(&b2, "(e.v->'columns'->");
        sl_buf_literal(&b2, col->name);
        sl_buf_puts(&b2, ")");
        if (sl_buf_failed(&b2)) b->failed = 1;
        const char *x = sl_buf_str(&b2);
        if (is_json_type(col->type)) {
            sl_buf_printf(b, "NULLIF(%s, 'null'::jsonb)::%s", x, col->type);
        } else if (is_array_type(col->type)) {
            sl_buf_printf(b,
                          "CASE jsonb_typeof(%s) WHEN 'array' THEN ARRAY("
                          "SELECT jsonb_array_elements_text(%s))::%s ELSE "
                          "(%s #>> '{}')::%s END",
                          x, x, col->type, x, col->type);
        } else {
            sl_buf_printf(b, "(%s #>> '{}')::%s", x, col->type);
        }
        sl_buf_free(&b2);
        sl_buf_puts(b, ", ");
    }
    sl_buf_puts(b, "COALESCE((e.v->>'priority')::int, $2::int),"
                   " COALESCE((e.v->>'run_at')::timestamptz, now())"
                   " FROM e WHERE (SELECT n FROM m) IS NULL ORDER BY e.n"
                   " RETURNING 1)"
                   " SELECT (SELECT n FROM m), (SELECT count(*) FROM i)");
}

int sl_jobs_enqueue_batch(PGconn *c, const sl_stage *s, const json_t *rows,
                          long *inserted, size_t *bad_row, char *err,
                          size_t errlen) {
    assert(c && s && rows && inserted && err && errlen > 0);
    char row_err[512];
    size_t ignored;
    if (!bad_row) bad_row = &ignored;
    *bad_row = 0;
    *inserted = 0;
    if (!json_is_array(rows)) {
        snprintf(err, errlen, "rows must be a JSON array");
        return -SL_EINVAL;
    }
    for (size_t i = 0; i < json_array_size(rows); i++) {
        if (sl_jobs_check_row(s, json_array_get(rows, i), row_err,
                              sizeof row_err) != 0) {
            snprintf(err, errlen, "row %zu: %s", i + 1, row_err);
            *bad_row = i + 1;
            return -SL_EINVAL;
        }
    }
    if (json_array_size(rows) == 0) return 0;

    int rc = 0;
    PGresult *r = NULL;
    char pr[16];
    sl_buf q;
    sl_buf_init(&q);
    build_batch(&q, s);
    char *payload = json_dumps(rows, JSON_COMPACT);
    if (sl_buf_failed(&q) || !payload) {
        snprintf(err, errlen, "out of memory");
        rc = -SL_ENOMEM;
        goto out;
    }
    snprintf(pr, sizeof pr, "%d", s->priority);
    const char *vals[2] = {payload, pr};
    r = PQexecParams(c, sl_buf_str(&q), 2, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char what[160];
        snprintf(what, sizeof what, "enqueue batch into %s", s->queue);
        db_err(err, errlen, what, c, r);
        rc = sl_db_data_error(r) ? -SL_EINVAL : -SL_EDB;
        goto out;
    }
    if (!PQgetisnull(r, 0, 0)) {
        long n = atol(PQgetvalue(r, 0, 0));
        const json_t *row = json_array_get(rows, (size_t)(n - 1));
        snprintf(err, errlen, "row %ld: subject %s not found in table %s "
                              "(pipeline %s)",
                 n, json_string_value(json_object_get(row, "subject")),
                 s->pipeline->subject.table, s->pipeline->name);
        *bad_row = (size_t)n;
        rc = -SL_ENOTFOUND;
        goto out;
    }
    *inserted = atol(PQgetvalue(r, 0, 1));
out:
    PQclear(r);
    free(payload);
    sl_buf_free(&q);
    return rc;
}

/* Runs one transaction-control statement; `what` names it in err. */
static int transaction(PGconn *c, const char *sql, const char *what,
                       char *err, size_t errlen) {
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        db_err(err, errlen, what, c, r);
        rc = -SL_EDB;
    }
    PQclear(r);
    return rc;
}

int sl_jobs_begin(PGconn *c, char *err, size_t errlen) {
    assert(c && err && errlen > 0);
    return transaction(c, "BEGIN", "begin", err, errlen);
}

int sl_jobs_commit(PGconn *c, char *err, size_t errlen) {
    assert(c && err && errlen > 0);
    return transaction(c, "COMMIT", "commit", err, errlen);
}

void sl_jobs_rollback(PGconn *c) {
    assert(c);
    PQclear(PQexec(c, "ROLLBACK"));
}

/* ---- finding, cancelling, retrying ---------------------------------------- */

/* The stage with flat index k across the model's pipelines. */
static const sl_stage *stage_at(const sl_model *m, long k) {
    for (size_t i = 0; i < m->npipelines; i++) {
        if (k < (long)m->pipelines[i].nstages) return &m->pipelines[i].stages[k];
        k -= (long)m->pipelines[i].nstages;
    }
    return NULL;
}

static void copy_field(char *dst, size_t n, const PGresult *r, int row,
                       int col) {
    snprintf(dst, n, "%s", PQgetisnull(r, row, col) ? ""
                                                     : PQgetvalue(r, row, col));
}

void sl_jobs_subject_expr(sl_buf *b, const sl_stage *s, const char *alias) {
    assert(b && s && s->pipeline);
    if (s->pipeline->has_subject) {
        if (alias) sl_buf_printf(b, "%s.", alias);
        sl_buf_ident(b, s->pipeline->subject.fk);
        sl_buf_puts(b, "::text");
    } else {
        sl_buf_puts(b, "NULL::text");
    }
}

int sl_jobs_find(PGconn *c, const sl_model *m, const char *id,
                 sl_job_ref *ref, char *err, size_t errlen) {
    assert(c && m && id && ref && err && errlen > 0);
    memset(ref, 0, sizeof *ref);
    if (!sl_jobs_is_uuid(id)) {
        snprintf(err, errlen, "job id '%s' is not a UUID", id);
        return -SL_EINVAL;
    }
    sl_buf q;
    sl_buf_init(&q);
    long k = 0;
    for (size_t i = 0; i < m->npipelines; i++) {
        for (size_t j = 0; j < m->pipelines[i].nstages; j++, k++) {
            const sl_stage *s = &m->pipelines[i].stages[j];
            if (k) sl_buf_puts(&q, " UNION ALL ");
            sl_buf_printf(&q, "SELECT %ld, q.status::text, ", k);
            sl_jobs_subject_expr(&q, s, "q");
            sl_buf_puts(&q, ", q.locked_by FROM ");
            sl_buf_ident(&q, s->queue);
            sl_buf_puts(&q, " q WHERE q.id = $1::uuid");
        }
    }
    if (k == 0) {
        sl_buf_free(&q);
        return 0;
    }
    if (sl_buf_failed(&q)) {
        sl_buf_free(&q);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    const char *vals[1] = {id};
    PGresult *r = PQexecParams(c, sl_buf_str(&q), 1, NULL, vals, NULL, NULL, 0);
    sl_buf_free(&q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        db_err(err, errlen, "find job", c, r);
        PQclear(r);
        return -SL_EDB;
    }
    if (PQntuples(r) > 0) {
        ref->stage = stage_at(m, atol(PQgetvalue(r, 0, 0)));
        copy_field(ref->status, sizeof ref->status, r, 0, 1);
        copy_field(ref->subject, sizeof ref->subject, r, 0, 2);
        copy_field(ref->locked_by, sizeof ref->locked_by, r, 0, 3);
    }
    PQclear(r);
    return 0;
}

/* Applies `set` to job id in its queue when its current status is one of
 * `from` (an SQL list of literals), in one statement that locks the row and
 * reports the status it had. */
static int act(PGconn *c, const sl_model *m, const char *id, const char *set,
               const char *from, sl_job_ref *ref, char *err, size_t errlen) {
    int rc = sl_jobs_find(c, m, id, ref, err, errlen);
    if (rc != 0 || !ref->stage) return rc;
    const sl_stage *s = ref->stage;
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "WITH o AS (SELECT q.id, q.status::text AS st, "
                    "q.locked_by, ");
    sl_jobs_subject_expr(&q, s, "q");
    sl_buf_puts(&q, " AS subj FROM ");
    sl_buf_ident(&q, s->queue);
    sl_buf_puts(&q, " q WHERE q.id = $1::uuid FOR UPDATE), u AS (UPDATE ");
    sl_buf_ident(&q, s->queue);
    sl_buf_printf(&q, " q SET %s FROM o WHERE q.id = o.id AND o.st IN (%s)"
                      " RETURNING q.id) SELECT o.st, o.subj, o.locked_by,"
                      " (SELECT count(*) FROM u) FROM o",
                  set, from);
    if (sl_buf_failed(&q)) {
        sl_buf_free(&q);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    const char *vals[1] = {id};
    PGresult *r = PQexecParams(c, sl_buf_str(&q), 1, NULL, vals, NULL, NULL, 0);
    sl_buf_free(&q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char what[160];
        snprintf(what, sizeof what, "update job in %s", s->queue);
        db_err(err, errlen, what, c, r);
        PQclear(r);
        return -SL_EDB;
    }
    if (PQntuples(r) == 0) { /* deleted since the look-up */
        ref->stage = NULL;
    } else {
        copy_field(ref->status, sizeof ref->status, r, 0, 0);
        copy_field(ref->subject, sizeof ref->subject, r, 0, 1);
        copy_field(ref->locked_by, sizeof ref->locked_by, r, 0, 2);
        ref->changed = atoi(PQgetvalue(r, 0, 3)) > 0;
    }
    PQclear(r);
    return 0;
}

#define CANCEL_SET SL_JOBS_CANCEL_SET
#define RETRY_SET SL_JOBS_RETRY_SET

int sl_jobs_cancel(PGconn *c, const sl_model *m, const char *id,
                   sl_job_ref *ref, char *err, size_t errlen) {
    return act(c, m, id, CANCEL_SET, "'pending', 'retry', 'in_progress'", ref,
               err, errlen);
}

int sl_jobs_retry(PGconn *c, const sl_model *m, const char *id,
                  sl_job_ref *ref, char *err, size_t errlen) {
    return act(c, m, id, RETRY_SET, "'error', 'cancelled'", ref, err, errlen);
}

int sl_jobs_retry_failed(PGconn *c, const sl_stage *s, long *n, char *err,
                         size_t errlen) {
    assert(c && s && n && err && errlen > 0);
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "UPDATE ");
    sl_buf_ident(&q, s->queue);
    sl_buf_puts(&q, " SET " RETRY_SET " WHERE status = 'error'");
    *n = 0;
    if (sl_buf_failed(&q)) {
        sl_buf_free(&q);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    PGresult *r = PQexec(c, sl_buf_str(&q));
    sl_buf_free(&q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char what[160];
        snprintf(what, sizeof what, "retry failed jobs of %s", s->queue);
        db_err(err, errlen, what, c, r);
        PQclear(r);
        return -SL_EDB;
    }
    *n = atol(PQcmdTuples(r));
    PQclear(r);
    return 0;
}
