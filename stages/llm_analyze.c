/* llm_analyze.c - handler "llm.analyze": analyses a transcript chunk by
 * chunk with an OpenAI-compatible model and UPSERTs insights and personas
 * (docs/stages.md).
 *
 * For each chunk: build the messages (default prompt, or the Lua hook
 * `prompt`), ask for JSON matching the interview_analysis schema, validate
 * it, let the Lua hook `post` adjust it, then write the chunk's insights
 * (keyed by subject, chunk, seq) and personas (keyed by subject, name) in
 * one transaction, save the checkpoint {"next_chunk": k, "chunks": n} and
 * report progress "chunk k/n". A retry resumes at next_chunk; a chunk that
 * is replayed (a crash between its commit and its checkpoint) overwrites
 * its own rows and deletes any extra ones, so nothing is written twice.
 * Past half of the stage timeout the job snoozes (no attempt used) and
 * continues at the next chunk in its next run.
 * The split into chunks is the default (by line/utterance, then paragraph,
 * then sentence, up to chunk_chars) or the Lua hook `chunk`.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "db.h"
#include "error.h"
#include "handler.h"
#include "http.h"
#include "llm.h"
#include "log.h"
#include "lua_host.h"
#include "model.h"
#include "text.h"

#define DEFAULT_CHUNK_CHARS 6000
#define MIN_CHUNK_CHARS 200

static const char DEFAULT_SYSTEM[] =
    "You are a user-research analyst. You read one part of an interview "
    "transcript and extract insights and personas.\n"
    "Insights: concrete pain points (problems, frustrations, workarounds), "
    "wishes (needs, requests, ideas), praise (what works well) and other "
    "notable observations. `content` states the insight in one sentence in "
    "your own words; `quote` is the speaker's exact words from the "
    "transcript, or null; `speaker` is the speaker label as written in the "
    "transcript, or null; `confidence` is between 0 and 1.\n"
    "Personas: one per interviewee (not the interviewer) who speaks in this "
    "part. `name` is their speaker label exactly as written in the "
    "transcript; `role` their job or relation to the product when stated, "
    "else null; `description` one or two sentences; `traits` short "
    "phrases.\n"
    "Use only what the transcript says. Return empty arrays when there is "
    "nothing to report. Answer with JSON that matches the schema.";

typedef struct an_cfg {
    sl_llm_cfg llm;
    const char *transcript_column;
    long chunk_chars;
    const char *insights_table, *personas_table, *fk;
    const char *system_prompt, *instructions;
} an_cfg;

typedef struct an_state {
    sl_http *h;
    sl_lua *L;      /* NULL when the stage declares no hooks */
    json_t *schema; /* interview_analysis, with the configured kinds */
} an_state;

static int an_config(const sl_stage *s, an_cfg *c, char *err, size_t errlen) {
    const json_t *with = s->with;
    memset(c, 0, sizeof *c);
    if (sl_llm_cfg_from_with(with, &c->llm, err, errlen) != 0) return -1;
    static const char *const strings[] = {"transcript_column",
                                          "insights_table",
                                          "personas_table",
                                          "subject_column",
                                          "system_prompt",
                                          "instructions",
                                          NULL};
    if (sl_with_strings(with, strings, err, errlen) != 0) return -1;
    c->transcript_column =
        sl_with_str(with, "transcript_column", "transcript");
    c->insights_table = sl_with_str(with, "insights_table", "insights");
    c->personas_table = sl_with_str(with, "personas_table", "personas");
    c->fk = sl_with_str(with, "subject_column",
                             s->pipeline && s->pipeline->has_subject
                                 ? s->pipeline->subject.fk
                                 : NULL);
    c->system_prompt = sl_with_str(with, "system_prompt", DEFAULT_SYSTEM);
    c->instructions = sl_with_str(with, "instructions", NULL);
    const char *idents[][2] = {{"insights_table", c->insights_table},
                               {"personas_table", c->personas_table},
                               {"subject_column", c->fk}};
    for (size_t i = 0; i < 3; i++) {
        if (!idents[i][1]) {
            snprintf(err, errlen,
                     "with.subject_column: required for a pipeline without "
                     "a subject (the column of %s and %s that holds the "
                     "subject id)",
                     c->insights_table, c->personas_table);
            return -1;
        }
        if (!sl_ident_ok(idents[i][1])) {
            snprintf(err, errlen,
                     "with.%s: '%s' is not a table or column "
                     "name ([a-z_][a-z0-9_]*)",
                     idents[i][0], idents[i][1]);
            return -1;
        }
    }
    json_t *v = json_object_get(with, "chunk_chars");
    c->chunk_chars = DEFAULT_CHUNK_CHARS;
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < MIN_CHUNK_CHARS) {
            snprintf(err, errlen, "with.chunk_chars: expected an integer >= %d",
                     MIN_CHUNK_CHARS);
            return -1;
        }
        c->chunk_chars = (long)json_integer_value(v);
    }
    v = json_object_get(with, "insight_kinds");
    if (v) {
        size_t i;
        json_t *k;
        int ok = json_is_array(v) && json_array_size(v) > 0;
        json_array_foreach(v, i, k) ok = ok && json_is_string(k);
        if (!ok) {
            snprintf(err, errlen,
                     "with.insight_kinds: expected a list of "
                     "names");
            return -1;
        }
    }
    return 0;
}

/* The interview_analysis schema (strict structured outputs: every field
 * required, no extra fields). */
static json_t *analysis_schema(const json_t *with) {
    json_t *kinds = json_object_get(with, "insight_kinds");
    kinds = kinds ? json_deep_copy(kinds)
                  : json_pack("[s,s,s,s]", "pain_point", "wish", "praise",
                              "observation");
    return json_pack(
        "{s:s, s:b, s:[s,s], s:{"
        "s:{s:s, s:{s:s, s:b, s:[s,s,s,s,s], s:{s:{s:s, s:o}, s:{s:s},"
        " s:{s:[s,s]}, s:{s:[s,s]}, s:{s:s}}}},"
        "s:{s:s, s:{s:s, s:b, s:[s,s,s,s], s:{s:{s:s}, s:{s:[s,s]},"
        " s:{s:[s,s]}, s:{s:s, s:{s:s}}}}}}}",
        "type", "object", "additionalProperties", 0, "required", "insights",
        "personas", "properties",
        /* insights */
        "insights", "type", "array", "items", "type", "object",
        "additionalProperties", 0, "required", "kind", "content", "quote",
        "speaker", "confidence", "properties", "kind", "type", "string", "enum",
        kinds, "content", "type", "string", "quote", "type", "string", "null",
        "speaker", "type", "string", "null", "confidence", "type", "number",
        /* personas */
        "personas", "type", "array", "items", "type", "object",
        "additionalProperties", 0, "required", "name", "role", "description",
        "traits", "properties", "name", "type", "string", "role", "type",
        "string", "null", "description", "type", "string", "null", "traits",
        "type", "array", "items", "type", "string");
}

static int an_validate(const sl_stage *stage, char *err, size_t errlen) {
    an_cfg c;
    if (an_config(stage, &c, err, errlen) != 0) return -1;
    if (stage->nhooks && sl_lua_check(stage, err, errlen) != 0) return -1;
    return 0;
}

static void an_fini(void *state) {
    an_state *st = state;
    if (!st) return;
    sl_http_free(st->h);
    sl_lua_close(st->L);
    json_decref(st->schema);
    free(st);
}

static int an_init(const sl_stage *stage, void **state, char *err,
                   size_t errlen) {
    an_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (sl_http_new(&st->h, err, errlen) != 0 ||
        (stage->nhooks && sl_lua_open(stage, &st->L, err, errlen) != 0)) {
        an_fini(st);
        return -1;
    }
    st->schema = analysis_schema(stage->with);
    if (!st->schema) {
        snprintf(err, errlen, "out of memory");
        an_fini(st);
        return -1;
    }
    *state = st;
    return 0;
}

/* ---- chunking ------------------------------------------------------------ */

typedef struct piece {
    const char *s;
    size_t n;
} piece;

/* Appends the pieces of [s, s+n) no longer than max, cut after sentence
 * ends and, for a sentence that is still too long, at the last space. */
static int split_long(const char *s, size_t n, size_t max, piece **out,
                      size_t *np, size_t *cap) {
    while (n > 0) {
        size_t take = n;
        if (n > max) {
            take = 0;
            for (size_t i = 1; i < max; i++)
                if ((s[i - 1] == '.' || s[i - 1] == '?' || s[i - 1] == '!') &&
                    s[i] == ' ')
                    take = i;
            if (take == 0)
                for (size_t i = max; i > max / 2; i--)
                    if (s[i] == ' ') {
                        take = i;
                        break;
                    }
            if (take == 0) take = max;
        }
        if (*np == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            piece *p = realloc(*out, nc * sizeof *p);
            if (!p) return -1;
            *out = p;
            *cap = nc;
        }
        (*out)[(*np)++] = (piece){s, take};
        s += take;
        n -= take;
        while (n > 0 && *s == ' ')
            s++, n--;
    }
    return 0;
}

/* The default split: units are lines (utterances) when the text has
 * several, else paragraphs, else the whole text; units longer than max are
 * cut at sentences; consecutive units are packed into chunks of at most max
 * characters. Returns a JSON array of strings, or NULL when out of memory. */
static json_t *default_chunks(const char *text, size_t max) {
    piece *units = NULL;
    size_t nu = 0, cap = 0;
    int lines = strchr(text, '\n') != NULL;
    const char *p = text;
    while (*p) {
        const char *end = lines ? strchr(p, '\n') : NULL;
        if (!end) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (b > a && split_long(a, (size_t)(b - a), max, &units, &nu, &cap)) {
            free(units);
            return NULL;
        }
        p = *end ? end + 1 : end;
    }
    json_t *chunks = json_array();
    char *buf = malloc(max + 1);
    size_t len = 0;
    if (!chunks || !buf) goto fail;
    for (size_t i = 0; i <= nu; i++) {
        if (i == nu || (len && len + 1 + units[i].n > max)) {
            if (len && json_array_append_new(chunks, json_stringn(buf, len)))
                goto fail;
            len = 0;
            if (i == nu) break;
        }
        if (len) buf[len++] = '\n';
        memcpy(buf + len, units[i].s, units[i].n);
        len += units[i].n;
    }
    free(buf);
    free(units);
    return chunks;
fail:
    free(buf);
    free(units);
    json_decref(chunks);
    return NULL;
}

/* ---- one chunk ------------------------------------------------------------
 */

static json_t *default_messages(const an_cfg *c, const char *chunk, size_t k,
                                size_t n) {
    char head[96];
    snprintf(head, sizeof head, "Interview transcript, chunk %zu/%zu:\n\n", k,
             n);
    size_t sl = strlen(c->system_prompt);
    size_t il = c->instructions ? strlen(c->instructions) : 0;
    char *sys = malloc(sl + il + 3);
    char *user = malloc(strlen(head) + strlen(chunk) + 1);
    json_t *m = NULL;
    if (sys && user) {
        memcpy(sys, c->system_prompt, sl + 1);
        if (il) {
            memcpy(sys + sl, "\n\n", 2);
            memcpy(sys + sl + 2, c->instructions, il + 1);
        }
        strcpy(user, head);
        strcat(user, chunk);
        m = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content",
                      sys, "role", "user", "content", user);
    }
    free(sys);
    free(user);
    return m;
}

/* The messages for chunk k of n: the Lua hook `prompt` (returning a user
 * message string or a list of {role, content}) or the default. */
static json_t *chunk_messages(an_state *st, const an_cfg *c, sl_ctx *ctx,
                              const sl_job *job, const char *chunk, size_t k,
                              size_t n, sl_result *res) {
    if (!st->L || !sl_lua_has(st->L, "prompt")) {
        json_t *m = default_messages(c, chunk, k, n);
        if (!m) sl_fail(res, SL_EC_RETRYABLE, "llm.analyze: out of memory");
        return m;
    }
    json_t *args = json_pack("[s, I, I, O]", chunk, (json_int_t)k,
                             (json_int_t)n, job->stage->with);
    json_t *ret = NULL;
    int rc = sl_lua_call(st->L, "prompt", ctx, job, args, &ret, res);
    json_decref(args);
    if (rc != 0) return NULL;
    return sl_llm_hook_messages(ret, c->system_prompt, res);
}

/* Classifies a failed statement: connection and concurrency trouble retry;
 * anything else (a missing table, a constraint) is for a person to fix. */
static void db_fail(PGconn *conn, PGresult *r, const char *what,
                    sl_result *res) {
    char m[1024];
    sl_fail(res, sl_db_errclass(conn, r, SL_EC_INTERNAL), "llm.analyze: %s: %s",
            what, sl_db_error(conn, r, m, sizeof m));
}

static int exec_ok(PGconn *conn, const char *sql, int n,
                   const char *const *params, const char *what,
                   sl_result *res) {
    PGresult *r = n ? PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0)
                    : PQexec(conn, sql);
    ExecStatusType s = PQresultStatus(r);
    int ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
    if (!ok) db_fail(conn, r, what, res);
    PQclear(r);
    return ok ? 0 : -1;
}

static const char *str_or_null(const json_t *o, const char *k) {
    return json_string_value(json_object_get(o, k));
}

/* Writes one chunk's result in one transaction. */
static int store_chunk(PGconn *conn, const an_cfg *c, const char *subject,
                       size_t k, const json_t *result, sl_result *res) {
    char ins[768], del[256], per[1024], ck[24], seq[24], conf[32];
    snprintf(ins, sizeof ins,
             "INSERT INTO \"%s\" (\"%s\", chunk, seq, kind, content, quote, "
             "speaker, confidence, data) VALUES ($1, $2::int, $3::int, "
             "$4, $5, $6, $7, $8::real, $9::jsonb) ON CONFLICT (\"%s\", "
             "chunk, seq) DO UPDATE SET kind = EXCLUDED.kind, content = "
             "EXCLUDED.content, quote = EXCLUDED.quote, speaker = "
             "EXCLUDED.speaker, confidence = EXCLUDED.confidence, data = "
             "EXCLUDED.data",
             c->insights_table, c->fk, c->fk);
    snprintf(del, sizeof del,
             "DELETE FROM \"%s\" WHERE \"%s\" = $1 AND chunk = $2::int "
             "AND seq >= $3::int",
             c->insights_table, c->fk);
    /* Personas recur across chunks: keep what earlier chunks said unless
     * this one says more, and collect traits. */
    snprintf(per, sizeof per,
             "INSERT INTO \"%s\" AS p (\"%s\", name, role, description, "
             "traits) VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT "
             "(\"%s\", name) DO UPDATE SET role = COALESCE(EXCLUDED.role, "
             "p.role), description = COALESCE(EXCLUDED.description, "
             "p.description), traits = (SELECT COALESCE(jsonb_agg(DISTINCT "
             "t), '[]'::jsonb) FROM jsonb_array_elements(COALESCE(p.traits, "
             "'[]'::jsonb) || COALESCE(EXCLUDED.traits, '[]'::jsonb)) t)",
             c->personas_table, c->fk, c->fk);
    snprintf(ck, sizeof ck, "%zu", k);

    /* The provider's text as the database will hold it: no NUL, no
     * secret (text.h). */
    json_t *safe = sl_text_json(result);
    if (!safe) {
        sl_fail(res, SL_EC_RETRYABLE, "llm.analyze: out of memory");
        return -1;
    }
    if (exec_ok(conn, "BEGIN", 0, NULL, "BEGIN", res) != 0) {
        json_decref(safe);
        return -1;
    }
    json_t *insights = json_object_get(safe, "insights");
    json_t *personas = json_object_get(safe, "personas");
    size_t i;
    json_t *it;
    size_t nseq = 0;
    json_array_foreach(insights, i, it) {
        /* 0.55 stays 0.55 (not 0.55000000000000004). */
        char *data = sl_text_json_dumps(it, JSON_COMPACT);
        double cf = json_number_value(json_object_get(it, "confidence"));
        if (cf < 0) cf = 0;
        if (cf > 1) cf = 1;
        snprintf(seq, sizeof seq, "%zu", nseq);
        snprintf(conf, sizeof conf, "%.4f", cf);
        const char *params[9] = {subject,
                                 ck,
                                 seq,
                                 str_or_null(it, "kind"),
                                 str_or_null(it, "content"),
                                 str_or_null(it, "quote"),
                                 str_or_null(it, "speaker"),
                                 conf,
                                 data};
        int rc = data ? exec_ok(conn, ins, 9, params, "storing an insight", res)
                      : (sl_fail(res, SL_EC_RETRYABLE, "out of memory"), -1);
        free(data);
        if (rc != 0) goto rollback;
        nseq++;
    }
    snprintf(seq, sizeof seq, "%zu", nseq);
    const char *dparams[3] = {subject, ck, seq};
    if (exec_ok(conn, del, 3, dparams, "clearing replaced insights", res))
        goto rollback;
    json_array_foreach(personas, i, it) {
        const char *name = str_or_null(it, "name");
        if (!name || !*name) continue;
        char *traits = sl_text_json_dumps(json_object_get(it, "traits"),
                                          JSON_COMPACT);
        const char *params[5] = {subject, name, str_or_null(it, "role"),
                                 str_or_null(it, "description"), traits};
        int rc = exec_ok(conn, per, 5, params, "storing a persona", res);
        free(traits);
        if (rc != 0) goto rollback;
    }
    if (exec_ok(conn, "COMMIT", 0, NULL, "COMMIT", res) != 0) goto rollback;
    json_decref(safe);
    return 0;
rollback:
    PQclear(PQexec(conn, "ROLLBACK"));
    json_decref(safe);
    return -1;
}

/* The `post` hook may replace a chunk's result; the replacement must still
 * match the schema. */
static int post_hook(an_state *st, sl_ctx *ctx, const sl_job *job,
                     json_t **result, size_t k, size_t n, sl_result *res) {
    if (!st->L || !sl_lua_has(st->L, "post")) return 0;
    json_t *args =
        json_pack("[O, I, I]", *result, (json_int_t)k, (json_int_t)n);
    json_t *ret = NULL;
    int rc = sl_lua_call(st->L, "post", ctx, job, args, &ret, res);
    json_decref(args);
    if (rc != 0) return -1;
    if (!ret) return 0;
    char verr[512];
    if (sl_llm_validate(st->schema, ret, verr, sizeof verr) != 0) {
        json_decref(ret);
        sl_fail(res, SL_EC_SCRIPT,
                "Lua hook 'post' returned a result that does not match the "
                "schema: %s",
                verr);
        return -1;
    }
    json_decref(*result);
    *result = ret;
    return 0;
}

/* The chunks: the Lua hook `chunk` (a list of strings) or the default. */
static json_t *make_chunks(an_state *st, const an_cfg *c, sl_ctx *ctx,
                           const sl_job *job, const char *text,
                           sl_result *res) {
    if (!st->L || !sl_lua_has(st->L, "chunk")) {
        json_t *ch = default_chunks(text, (size_t)c->chunk_chars);
        if (!ch) sl_fail(res, SL_EC_RETRYABLE, "llm.analyze: out of memory");
        return ch;
    }
    json_t *args = json_pack("[s, O]", text, job->stage->with);
    json_t *ret = NULL;
    if (sl_lua_call(st->L, "chunk", ctx, job, args, &ret, res) != 0) {
        json_decref(args);
        return NULL;
    }
    json_decref(args);
    size_t i;
    json_t *s;
    int ok = json_is_array(ret);
    json_array_foreach(ret, i, s) ok =
        ok && json_is_string(s) && json_string_length(s) > 0;
    if (!ok) {
        json_decref(ret);
        sl_fail(res, SL_EC_SCRIPT,
                "Lua hook 'chunk' must return a list of non-empty strings");
        return NULL;
    }
    return ret;
}

static long count_rows(PGconn *conn, const char *table, const char *fk,
                       const char *subject) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM \"%s\" WHERE \"%s\" = "
             "$1",
             table, fk);
    const char *params[1] = {subject};
    PGresult *r = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
    long n = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                 ? atol(PQgetvalue(r, 0, 0))
                 : -1;
    PQclear(r);
    return n;
}

static void an_run(sl_ctx *ctx, const sl_job *job, void *state,
                   sl_result *res) {
    int64_t t0 = sl_now_ms();
    an_state *st = state;
    an_cfg c;
    char err[512];
    json_t *chunks = NULL, *result = NULL;
    if (an_config(job->stage, &c, err, sizeof err) != 0) {
        sl_fail(res, SL_EC_INVALID_INPUT, "llm.analyze: %s", err);
        return;
    }
    const char *subject =
        job->subject_id ? job->subject_id
                        : json_string_value(json_object_get(job->input, c.fk));
    if (!subject) {
        sl_fail(res, SL_EC_INVALID_INPUT,
                "llm.analyze: the job has no subject id (%s)", c.fk);
        return;
    }
    const char *text =
        json_string_value(json_object_get(job->input, c.transcript_column));
    const char *t = text;
    while (t && isspace((unsigned char)*t))
        t++;
    if (!t || !*t) {
        sl_fail(res, SL_EC_INVALID_INPUT,
                "llm.analyze: the job's %s is "
                "empty",
                c.transcript_column);
        return;
    }
    chunks = make_chunks(st, &c, ctx, job, text, res);
    if (!chunks) return;
    size_t n = json_array_size(chunks);

    /* Resume after the chunks an earlier attempt finished; a different
     * split (the transcript or the hook changed) starts over. */
    size_t first = 0;
    json_t *nc = json_object_get(job->checkpoint, "next_chunk");
    json_t *cc = json_object_get(job->checkpoint, "chunks");
    if (json_is_integer(nc) && json_is_integer(cc)) {
        if ((size_t)json_integer_value(cc) == n &&
            json_integer_value(nc) >= 0 && (size_t)json_integer_value(nc) <= n)
            first = (size_t)json_integer_value(nc);
        else
            sl_ctx_log(ctx, SL_LOG_WARN,
                       "llm.analyze: the transcript now splits into %zu "
                       "chunks, not %lld: starting over",
                       n, (long long)json_integer_value(cc));
    }
    if (first > 0)
        sl_ctx_log(ctx, SL_LOG_INFO, "llm.analyze: resuming at chunk %zu/%zu",
                   first + 1, n);

    for (size_t i = first; i < n; i++) {
        size_t k = i + 1;
        if (sl_ctx_should_stop(ctx)) {
            sl_fail(res, SL_EC_RETRYABLE,
                    "llm.analyze: stopped before chunk "
                    "%zu/%zu",
                    k, n);
            goto out;
        }
        const char *chunk = json_string_value(json_array_get(chunks, i));
        json_t *msgs = chunk_messages(st, &c, ctx, job, chunk, k, n, res);
        if (!msgs) goto out;
        int rc =
            sl_llm_chat(st->h, &c.llm, msgs, st->schema, "interview_analysis",
                        &result, sl_http_stop_check, ctx, res);
        json_decref(msgs);
        if (rc != 0) {
            char m[sizeof res->message];
            sl_text_format(m, sizeof m, "chunk %zu/%zu: %s", k, n,
                           res->message);
            memcpy(res->message, m, sizeof m);
            goto out;
        }
        if (post_hook(st, ctx, job, &result, k, n, res) != 0 ||
            store_chunk(sl_ctx_conn(ctx), &c, subject, k, result, res) != 0)
            goto out;
        json_decref(result);
        result = NULL;
        json_t *cp = json_pack("{s:I, s:I}", "next_chunk", (json_int_t)k,
                               "chunks", (json_int_t)n);
        rc = sl_ctx_checkpoint(ctx, cp);
        json_decref(cp);
        if (rc == -SL_ELEASE) {
            sl_fail(res, SL_EC_LEASE_EXPIRED,
                    "llm.analyze: lease lost after chunk %zu/%zu", k, n);
            goto out;
        }
        char detail[64];
        snprintf(detail, sizeof detail, "chunk %zu/%zu", k, n);
        sl_ctx_progress(ctx, (int)(k * 100 / n), detail);
        /* A long transcript must not run into the stage timeout (which
         * would cost an attempt): past half of it, hand the job back. It
         * runs again at once, resuming at the next chunk, and a snooze
         * uses no attempt. */
        if (k < n && sl_now_ms() - t0 > job->stage->timeout_ms / 2) {
            sl_ctx_log(ctx, SL_LOG_INFO,
                       "llm.analyze: yielding after chunk %zu/%zu (half the "
                       "stage timeout used)",
                       k, n);
            sl_snooze(res, 0);
            goto out;
        }
    }
    PGconn *conn = sl_ctx_conn(ctx);
    json_t *out = json_pack("{s:I}", "chunks", (json_int_t)n);
    long ni = count_rows(conn, c.insights_table, c.fk, subject);
    long np = count_rows(conn, c.personas_table, c.fk, subject);
    if (ni >= 0) json_object_set_new(out, "insights", json_integer(ni));
    if (np >= 0) json_object_set_new(out, "personas", json_integer(np));
    sl_done(res, out);
out:
    json_decref(result);
    json_decref(chunks);
}

const sl_handler sl_handler_llm_analyze = {"llm.analyze", an_validate, an_init,
                                           an_fini, an_run};
