/* model.c - look-ups over the immutable model, and the value rules
 * (model.h) that the loader, the DDL generator and the runtime share. */
#include "model.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "text.h"

const char *const sl_retain_status[SL_RETAIN__COUNT] = {"done", "error",
                                                        "cancelled"};

const sl_pipeline *sl_model_pipeline(const sl_model *m, const char *name) {
    assert(name);
    for (size_t i = 0; m && i < m->npipelines; i++)
        if (strcmp(m->pipelines[i].name, name) == 0) return &m->pipelines[i];
    return NULL;
}

const sl_stage *sl_model_stage(const sl_model *m, const char *pipeline,
                               const char *stage) {
    assert(pipeline && stage);
    const sl_pipeline *p = sl_model_pipeline(m, pipeline);
    for (size_t i = 0; p && i < p->nstages; i++)
        if (strcmp(p->stages[i].name, stage) == 0) return &p->stages[i];
    return NULL;
}

const sl_stage *sl_model_stage_by_queue(const sl_model *m, const char *queue) {
    assert(queue);
    for (size_t i = 0; m && i < m->npipelines; i++)
        for (size_t j = 0; j < m->pipelines[i].nstages; j++)
            if (strcmp(m->pipelines[i].stages[j].queue, queue) == 0)
                return &m->pipelines[i].stages[j];
    return NULL;
}

void sl_stage_history_table(const sl_stage *st, char out[64]) {
    const char *q = st->queue;
    size_t n = strlen(q);
    if (n + 8 <= 63) {
        snprintf(out, 64, "%s_history", q);
        return;
    }
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = q; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    snprintf(out, 64, "%.*s_%08x_history", 63 - 8 - 9, q, (unsigned)h);
}

const sl_column *sl_stage_column(const sl_stage *st, const char *name) {
    assert(st && name);
    assert(st->ncolumns == 0 || st->columns);
    for (size_t i = 0; i < st->ncolumns; i++)
        if (st->columns[i].name && strcmp(st->columns[i].name, name) == 0)
            return &st->columns[i];
    return NULL;
}

/* ---- identifiers --------------------------------------------------------- */

sl_ident_status sl_ident_check(const char *s) {
    if (!s || !*s) return SL_IDENT_EMPTY;
    if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')) return SL_IDENT_CHARS;
    size_t len = 1;
    for (; s[len]; len++)
        if (!((s[len] >= 'a' && s[len] <= 'z') ||
              (s[len] >= '0' && s[len] <= '9') || s[len] == '_'))
            return SL_IDENT_CHARS;
    return len > SL_IDENT_MAX ? SL_IDENT_TOO_LONG : SL_IDENT_OK;
}

int sl_ident_ok(const char *s) {
    return sl_ident_check(s) == SL_IDENT_OK;
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

int sl_reserved_word(const char *s) {
    assert(s);
    for (size_t i = 0; sql_reserved[i]; i++)
        if (strcmp(s, sql_reserved[i]) == 0) return 1;
    return 0;
}

/* ---- column types -------------------------------------------------------- */

/* The allowed types and their format_type() spelling, which the catalog
 * reports and migrate compares against. */
static const struct {
    const char *type, *canonical;
} types[] = {
    {"text", "text"},
    {"bytea", "bytea"},
    {"jsonb", "jsonb"},
    {"json", "json"},
    {"uuid", "uuid"},
    {"boolean", "boolean"},
    {"smallint", "smallint"},
    {"integer", "integer"},
    {"bigint", "bigint"},
    {"real", "real"},
    {"double precision", "double precision"},
    {"numeric", "numeric"},
    {"timestamptz", "timestamp with time zone"},
    {"date", "date"},
    {"text[]", "text[]"},
    {"integer[]", "integer[]"},
};
#define NTYPES (sizeof types / sizeof types[0])

const char *const sl_column_types[NTYPES + 1] = {"text",
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

const char *sl_type_normalise(const char *t) {
    if (!t) return NULL;
    char buf[64];
    size_t o = 0;
    int space = 0;
    for (const char *p = t; *p; p++) {
        if (isspace((unsigned char)*p)) {
            space = o > 0;
            continue;
        }
        /* Room for a space, the character and the NUL; longer is no
         * allowed type. */
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
    for (size_t i = 0; i < NTYPES; i++)
        if (!strcmp(buf, types[i].type)) {
            assert(!strcmp(sl_column_types[i], types[i].type));
            return sl_column_types[i];
        }
    return NULL;
}

const char *sl_type_canonical(const char *t) {
    const char *n = sl_type_normalise(t);
    for (size_t i = 0; n && i < NTYPES; i++)
        if (!strcmp(n, types[i].type)) return types[i].canonical;
    return NULL;
}

/* ---- engine-owned columns ------------------------------------------------ */

const sl_engine_col sl_engine_columns[] = {
    {"id", "uuid", 1, "gen_random_uuid()"},
    {"status", NULL, 1, "'pending'"},
    {"status_detail", "text", 0, NULL},
    {"progress", "integer", 1, "0"},
    {"attempts", "integer", 1, "0"},
    {"last_error", "text", 0, NULL},
    {"error_class", "text", 0, NULL},
    {"priority", "integer", 1, NULL},
    {"run_at", "timestamptz", 1, "now()"},
    {"locked_by", "text", 0, NULL},
    {"locked_until", "timestamptz", 0, NULL},
    {"checkpoint", "jsonb", 0, NULL},
    {"dedup_key", "text", 0, NULL},
    {"started_at", "timestamptz", 0, NULL},
    {"finished_at", "timestamptz", 0, NULL},
    {"created_at", "timestamptz", 1, "now()"},
    {"updated_at", "timestamptz", 1, "now()"},
    /* Who asked for the job: the JWT subject of the session that inserted
     * it (the same settings auth.uid() reads), NULL when the engine or the
     * owner did. The application cannot write it (column grants); the
     * hand-off copies it, and sl_ctx_act_for_requester runs a stage's SQL
     * under this user's Row Level Security. */
    {"requested_by", "uuid", 0,
     "(COALESCE(NULLIF(current_setting('request.jwt.claim.sub', true), ''), "
     "NULLIF(current_setting('request.jwt.claims', true), '')::jsonb ->> "
     "'sub'))::uuid"},
    /* When the subject's first job of this run through the pipeline was
     * queued: the hand-off copies it, so the last stage knows how long
     * the subject took (sluice_subject_duration_seconds). */
    {"subject_started_at", "timestamptz", 1, "now()"},
    /* A unique job's key (`unique:`, `enqueue --key`), set only by the
     * engine's enqueue; the stage's unique-job index refuses a second
     * job with the same key (schema_index.c). NULL: not unique. */
    {"unique_key", "text", 0, NULL},
    {NULL, NULL, 0, NULL},
};

const char *sl_unique_predicate(sl_unique_while w) {
    /* Only states no transition enters from outside (a snoozed job keeps
     * its started_at), so a worker's update never conflicts. */
    switch (w) {
    case SL_UNIQUE_PENDING:
        return " IS NOT NULL AND \"status\" = 'pending' AND \"started_at\""
               " IS NULL";
    case SL_UNIQUE_PERIOD: return " IS NOT NULL";
    default:
        return " IS NOT NULL AND \"status\" IN ('pending', 'retry', "
               "'in_progress')";
    }
}

int sl_engine_column(const char *name) {
    assert(name);
    for (size_t i = 0; sl_engine_columns[i].name; i++)
        if (!strcmp(name, sl_engine_columns[i].name)) return 1;
    return 0;
}

/* ---- durations ----------------------------------------------------------- */

/* ---- subject keys --------------------------------------------------------- */

static const char *const key_names[] = {"uuid", "bigint", "integer", "text"};

const char *sl_key_type_name(sl_key_type t) {
    assert((unsigned)t < sizeof key_names / sizeof key_names[0]);
    return key_names[t];
}

int sl_key_type_parse(const char *s, sl_key_type *t) {
    static const struct {
        const char *name;
        sl_key_type t;
    } names[] = {{"uuid", SL_KEY_UUID},       {"bigint", SL_KEY_BIGINT},
                 {"int8", SL_KEY_BIGINT},     {"integer", SL_KEY_INTEGER},
                 {"int", SL_KEY_INTEGER},     {"int4", SL_KEY_INTEGER},
                 {"text", SL_KEY_TEXT}};
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(s, names[i].name) == 0) {
            *t = names[i].t;
            return 0;
        }
    return -SL_EINVAL;
}

/* An integer key: an optional "-" or "+", then 1..19 digits, within
 * lo..hi; written back without "+" and leading zeros. */
static int canon_int(const char *s, long long lo, long long hi,
                     char out[SL_KEY_MAX]) {
    int neg = *s == '-';
    if (*s == '-' || *s == '+') s++;
    while (*s == '0' && s[1]) s++;
    size_t n = strlen(s);
    if (n == 0 || n > 19) return -SL_EINVAL;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -SL_EINVAL;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    /* 19 digits fit in 64 bits unsigned; compare magnitudes. */
    unsigned long long max = neg ? (unsigned long long)(-(lo + 1)) + 1
                                 : (unsigned long long)hi;
    if (v > max) return -SL_EINVAL;
    snprintf(out, SL_KEY_MAX, "%s%llu", neg && v ? "-" : "", v);
    return 0;
}

int sl_key_canon(sl_key_type t, const char *text, char out[SL_KEY_MAX],
                 const char **why) {
    assert(out && why);
    out[0] = '\0';
    int rc = -SL_EINVAL;
    size_t n = text ? strlen(text) : 0;
    switch (t) {
    case SL_KEY_UUID:
        *why = "a UUID";
        if (n != 36) break;
        rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
            int dash = i == 8 || i == 13 || i == 18 || i == 23;
            if (dash ? text[i] != '-' : !isxdigit((unsigned char)text[i]))
                rc = -SL_EINVAL;
            out[i] = (char)tolower((unsigned char)text[i]);
        }
        out[n] = '\0';
        break;
    case SL_KEY_BIGINT:
        *why = "a bigint (an integer in -9223372036854775808.."
               "9223372036854775807)";
        if (text) rc = canon_int(text, INT64_MIN, INT64_MAX, out);
        break;
    case SL_KEY_INTEGER:
        *why = "an integer (in -2147483648..2147483647)";
        if (text) rc = canon_int(text, INT32_MIN, INT32_MAX, out);
        break;
    case SL_KEY_TEXT:
        *why = "a text key (1..255 bytes of UTF-8, no control characters)";
        if (n == 0 || n >= SL_KEY_MAX || !sl_text_valid(text, n)) break;
        rc = 0;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
                rc = -SL_EINVAL;
        if (rc == 0) memcpy(out, text, n + 1);
        break;
    }
    if (rc != 0) out[0] = '\0';
    return rc;
}

int sl_duration_parse(const char *s, int64_t *ms) {
    assert(ms);
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

/* ---- names on the command line and in files ---------------------------- */

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

const char *sl_model_nearest(const char *s, const char *const *cands,
                             size_t n) {
    assert(s && (cands || n == 0));
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

int sl_stage_selected(const sl_stage *s, const char *const *names, size_t n) {
    assert(s && (names || n == 0));
    if (n == 0) return 1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s->name) == 0 ||
            strcmp(names[i], s->queue) == 0 ||
            strcmp(names[i], s->pipeline->name) == 0)
            return 1;
    return 0;
}
