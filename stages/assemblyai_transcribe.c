/* assemblyai_transcribe.c - handler "assemblyai.transcribe": submits an
 * audio URL to AssemblyAI's POST /v2/transcript, then polls
 * GET /v2/transcript/{id} until it is completed (docs/stages.md).
 *
 * No thread waits for AssemblyAI: the first run submits and saves the
 * transcript id as the checkpoint; every run after that polls once and,
 * while the transcript is queued or processing, snoozes the job for
 * with.poll_interval (the worker serves other jobs meanwhile; a snooze does
 * not use an attempt). A retry or a worker that died finds the id in the
 * checkpoint and resumes polling.
 *
 * The submission is not idempotent (each POST is a billed transcription)
 * and its answer can be lost after AssemblyAI acted on it (a reset
 * connection, a timeout, an empty or broken 200, a worker killed mid-call).
 * So before the POST the handler records a marker in the checkpoint
 * ({"submitting": {"audio_url", "at"}}); after a POST without a usable
 * answer, and in any later run that finds the marker without an id, it
 * lists the account's recent transcripts (GET /v2/transcript) and adopts
 * one for the same audio_url created since the marker (less a clock
 * allowance) instead of submitting again. docs/stages.md says what this
 * guarantees and what it does not.
 *
 * On completed the outputs are the transcript text (by default one line
 * per utterance, "Speaker A: ..."), the transcript id and audio duration,
 * and the utterances / words arrays when the stage declares columns of
 * those names. An AssemblyAI `error` status is a permanent failure of
 * class `provider` carrying AssemblyAI's message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "db.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "model.h"
#include "handler.h"

#define AAI_DEFAULT_BASE "https://api.assemblyai.com"
#define POLL_DEFAULT_MS 3000
#define MAX_WAIT_DEFAULT_MS (6LL * 3600 * 1000)
/* How far AssemblyAI's clock may be behind ours when a transcript's
 * `created` is compared with the marker's time. */
#define CLOCK_ALLOWANCE_MS (5LL * 60 * 1000)
/* The list is read in pages of LIST_PAGE, at most LIST_PAGES of them. */
#define LIST_PAGE 100
#define LIST_PAGES 10

/* The stage's configuration, read from `with` (borrowed strings). */
typedef struct tx_cfg {
    char submit_url[512];
    const char *key;
    sl_http_req limits;
    int64_t poll_ms, max_wait_ms;
    const char *audio_column, *text_column, *subject_column;
    int speaker_lines;
} tx_cfg;

static int tx_config(const json_t *with, tx_cfg *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    if (sl_with_url(with, AAI_DEFAULT_BASE, "/v2/transcript",
                         c->submit_url, sizeof c->submit_url, err,
                         errlen) != 0 ||
        sl_with_key(with, "ASSEMBLYAI_API_KEY", &c->key, err, errlen) ||
        sl_http_with_limits(with, 60000, &c->limits, err, errlen) ||
        sl_with_duration(with, "poll_interval", POLL_DEFAULT_MS,
                              &c->poll_ms, err, errlen) ||
        sl_with_duration(with, "max_wait", MAX_WAIT_DEFAULT_MS,
                              &c->max_wait_ms, err, errlen))
        return -1;
    static const char *const strings[] = {"audio_column",      "text_column",
                                          "subject_column",    "language_code",
                                          "transcript_format", NULL};
    if (sl_with_strings(with, strings, err, errlen) != 0) return -1;
    c->audio_column = sl_with_str(with, "audio_column", "upload_url");
    c->text_column = sl_with_str(with, "text_column", "transcript");
    c->subject_column = sl_with_str(with, "subject_column", NULL);
    if (c->subject_column && !sl_ident_ok(c->subject_column)) {
        snprintf(err, errlen,
                 "with.subject_column: '%s' is not a column name "
                 "([a-z_][a-z0-9_]*)",
                 c->subject_column);
        return -1;
    }
    const char *fmt = sl_with_str(with, "transcript_format", "speakers");
    if (strcmp(fmt, "speakers") != 0 && strcmp(fmt, "text") != 0) {
        snprintf(err, errlen, "with.transcript_format: speakers or text");
        return -1;
    }
    c->speaker_lines = strcmp(fmt, "speakers") == 0;
    json_t *sm = json_object_get(with, "speech_models");
    if (sm) {
        size_t i;
        json_t *m;
        int ok = json_is_array(sm) && json_array_size(sm) > 0;
        json_array_foreach(sm, i, m) ok = ok && json_is_string(m);
        if (!ok) {
            snprintf(err, errlen,
                     "with.speech_models: expected a list of model names, "
                     "e.g. [universal-3-pro, universal-2]");
            return -1;
        }
    }
    json_t *o = json_object_get(with, "options");
    if (o && !json_is_object(o)) {
        snprintf(err, errlen,
                 "with.options: expected a mapping of "
                 "AssemblyAI request fields");
        return -1;
    }
    json_t *b = json_object_get(with, "speaker_labels");
    if (b && !json_is_boolean(b)) {
        snprintf(err, errlen, "with.speaker_labels: expected true or false");
        return -1;
    }
    return 0;
}

static int tx_validate(const sl_stage *stage, char *err, size_t errlen) {
    tx_cfg c;
    return tx_config(stage->with, &c, err, errlen);
}

static int declares(const sl_stage *s, const char *column) {
    for (size_t i = 0; i < s->ncolumns; i++)
        if (strcmp(s->columns[i].name, column) == 0) return 1;
    return 0;
}

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The request body: audio_url, the model list, speaker labels, language
 * and with.options merged in. */
static json_t *submit_body(const json_t *with, const char *audio_url) {
    json_t *b = json_pack("{s:s}", "audio_url", audio_url);
    json_t *sm = json_object_get(with, "speech_models");
    json_object_set_new(
        b, "speech_models",
        sm ? json_deep_copy(sm)
           : json_pack("[s,s]", "universal-3-pro", "universal-2"));
    json_t *sl = json_object_get(with, "speaker_labels");
    json_object_set_new(b, "speaker_labels",
                        json_boolean(sl ? json_is_true(sl) : 1));
    const char *lang = sl_with_str(with, "language_code", NULL);
    if (lang) json_object_set_new(b, "language_code", json_string(lang));
    json_t *o = json_object_get(with, "options");
    if (json_is_object(o)) json_object_update(b, o);
    json_object_set_new(b, "audio_url", json_string(audio_url));
    return b;
}

/* One request with the key; the reply as JSON in *reply. */
static int call(sl_http *h, const tx_cfg *c, const char *what,
                const char *method, const char *url, const char *body,
                sl_ctx *ctx, json_t **reply, sl_result *res) {
    char auth[1024];
    const char *headers[] = {auth, "Content-Type: application/json", NULL};
    sl_http_resp resp;
    sl_http_req req = c->limits;
    snprintf(auth, sizeof auth, "Authorization: %s", c->key);
    req.what = what;
    req.provider = "assemblyai";
    req.method = method;
    req.url = url;
    req.headers = headers;
    req.body = body;
    req.body_len = body ? strlen(body) : 0;
    req.progress = sl_http_stop_check;
    req.progress_arg = ctx;
    int rc = sl_http_do(h, &req, &resp, res);
    if (rc == 0) rc = sl_http_json(&req, &resp, reply, res);
    explicit_bzero(auth, sizeof auth);
    sl_http_resp_clear(&resp);
    return rc;
}

/* "Speaker A: ..." lines from the utterances, or NULL when there are none
 * (caller frees). */
static char *speaker_text(const json_t *utts) {
    sl_buf b;
    size_t i;
    json_t *u;
    if (!json_is_array(utts) || json_array_size(utts) == 0) return NULL;
    sl_buf_init(&b);
    json_array_foreach(utts, i, u) {
        const char *sp = json_string_value(json_object_get(u, "speaker"));
        const char *tx = json_string_value(json_object_get(u, "text"));
        if (!tx) continue;
        if (!sp || !*sp)
            sl_buf_printf(&b, "%s\n", tx);
        else if (strlen(sp) <= 2)
            sl_buf_printf(&b, "Speaker %s: %s\n", sp, tx);
        else
            sl_buf_printf(&b, "%s: %s\n", sp, tx);
    }
    return sl_buf_steal(&b);
}

/* Stores the text on the subject row too (with.subject_column). */
static int store_on_subject(sl_ctx *ctx, const sl_job *job, const char *col,
                            const char *text, sl_result *res) {
    const sl_pipeline *p = job->stage->pipeline;
    if (!p->has_subject || !job->subject_id) return 0;
    char sql[512];
    snprintf(sql, sizeof sql,
             "UPDATE \"%s\" SET \"%s\" = $1 WHERE \"%s\" = "
             "$2",
             p->subject.table, col, p->subject.key);
    const char *params[2] = {text, job->subject_id};
    PGresult *r =
        PQexecParams(sl_ctx_conn(ctx), sql, 2, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    char m[1024];
    if (!ok)
        sl_fail(res, sl_db_errclass(sl_ctx_conn(ctx), r, SL_EC_INTERNAL),
                "assemblyai.transcribe: storing the transcript on %s.%s: %s",
                p->subject.table, col,
                sl_db_error(sl_ctx_conn(ctx), r, m, sizeof m));
    PQclear(r);
    return ok ? 0 : -1;
}

static void completed(sl_ctx *ctx, const sl_job *job, const tx_cfg *c,
                      json_t *reply, const char *id, sl_result *res) {
    const sl_stage *s = job->stage;
    json_t *utts = json_object_get(reply, "utterances");
    const char *plain = json_string_value(json_object_get(reply, "text"));
    if (!plain) {
        sl_fail(res, SL_EC_INVALID_RESPONSE,
                "AssemblyAI transcript %s: completed without text", id);
        return;
    }
    char *lines = c->speaker_lines ? speaker_text(utts) : NULL;
    const char *text = lines ? lines : plain;
    if (c->subject_column &&
        store_on_subject(ctx, job, c->subject_column, text, res) != 0) {
        free(lines);
        return;
    }
    json_t *out = json_object();
    json_object_set_new(out, c->text_column, json_string(text));
    json_object_set_new(out, "transcript_id", json_string(id));
    json_t *dur = json_object_get(reply, "audio_duration");
    if (json_is_number(dur)) json_object_set(out, "audio_duration", dur);
    if (declares(s, "utterances"))
        json_object_set(out, "utterances", utts ? utts : json_null());
    if (declares(s, "words")) {
        json_t *w = json_object_get(reply, "words");
        json_object_set(out, "words", w ? w : json_null());
    }
    free(lines);
    sl_done(res, out);
}

/* A transcript `created` time ("2024-03-11T21:29:59.936851", UTC) in ms
 * since the epoch, or -1 when it does not parse. */
static int64_t created_ms(const char *t) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = t ? strptime(t, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!end) return -1;
    int64_t ms = (int64_t)timegm(&tm) * 1000;
    if (*end == '.') {
        int64_t scale = 100;
        for (end++; *end >= '0' && *end <= '9'; end++, scale /= 10)
            ms += (*end - '0') * scale;
    }
    return ms;
}

/* An id that can go into a URL path as it is. */
static int usable_id(const char *id) {
    if (!id || !*id || strlen(id) > 128) return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    return 1;
}

/* Looks for a transcript of `audio` created since `since_ms` (less the
 * clock allowance) among the account's transcripts, newest first. Returns
 * 1 with its id in id (idlen bytes), 0 when there is none, or -1 with res
 * filled when the list cannot be read. */
static int find_submitted(sl_http *h, const tx_cfg *c, sl_ctx *ctx,
                          const char *audio, int64_t since_ms, char *id,
                          size_t idlen, sl_result *res) {
    char url[1024], before[160] = "";
    int64_t cutoff = since_ms - CLOCK_ALLOWANCE_MS;
    for (int page = 0; page < LIST_PAGES; page++) {
        json_t *reply = NULL;
        snprintf(url, sizeof url, "%s?limit=%d%s%s", c->submit_url,
                 LIST_PAGE, before[0] ? "&before_id=" : "", before);
        before[0] = '\0'; /* the next page starts after this page's last */
        if (call(h, c, "AssemblyAI transcript list", "GET", url, NULL, ctx,
                 &reply, res) != 0)
            return -1;
        json_t *items = json_object_get(reply, "transcripts");
        if (!json_is_array(items)) {
            json_decref(reply);
            sl_fail(res, SL_EC_INVALID_RESPONSE,
                    "AssemblyAI transcript list: the reply has no "
                    "transcripts");
            return -1;
        }
        size_t i, n = json_array_size(items);
        json_t *t;
        int past = 0;
        json_array_foreach(items, i, t) {
            const char *tid = json_string_value(json_object_get(t, "id"));
            const char *au = json_string_value(json_object_get(t, "audio_url"));
            int64_t at = created_ms(
                json_string_value(json_object_get(t, "created")));
            if (at >= 0 && at < cutoff) {
                past = 1; /* newest first: the rest are older still */
                break;
            }
            if (au && strcmp(au, audio) == 0 && usable_id(tid)) {
                snprintf(id, idlen, "%s", tid);
                json_decref(reply);
                return 1;
            }
            if (i + 1 == n && usable_id(tid))
                snprintf(before, sizeof before, "%s", tid);
        }
        json_t *pd = json_object_get(reply, "page_details");
        int more = json_is_string(json_object_get(pd, "prev_url"));
        json_decref(reply);
        if (past || !more || n == 0 || !before[0]) return 0;
    }
    return 0;
}

/* Saves the transcript id as the checkpoint and snoozes until the first
 * poll. */
static void adopt_id(sl_ctx *ctx, const tx_cfg *c, const char *id,
                      sl_result *res) {
    json_t *cp = json_pack("{s:s, s:I}", "transcript_id", id, "submitted_at",
                           (json_int_t)wall_ms());
    int rc = sl_ctx_checkpoint(ctx, cp);
    json_decref(cp);
    if (rc != 0) {
        /* The marker stays: the next run finds this transcript again. */
        sl_fail(res, SL_EC_RETRYABLE,
                "assemblyai.transcribe: could not save the transcript id %s",
                id);
        return;
    }
    sl_ctx_progress(ctx, 0, "Transcribing (queued)");
    sl_snooze(res, c->poll_ms);
}

/* Whether a failed submission may have been carried out all the same: no
 * answer, or an answer that could not be read. An HTTP error status means
 * AssemblyAI refused it. */
static int outcome_unknown(const sl_result *res) {
    switch (res->errclass) {
    case SL_EC_TIMEOUT:
    case SL_EC_CONNECTION:
    case SL_EC_INVALID_RESPONSE:
    case SL_EC_RETRYABLE:
    case SL_EC_HTTP_5XX: return 1;
    default: return 0;
    }
}

/* Submits `audio` once: recorded as a marker first, reconciled with the
 * account's transcripts when an earlier run left the marker without an id
 * or this POST got no usable answer. */
static void submit(sl_ctx *ctx, const sl_job *job, sl_http *h,
                   const tx_cfg *c, const char *audio, sl_result *res) {
    char found[160];
    json_t *reply = NULL;
    char *body = NULL;
    json_t *mark = json_object_get(job->checkpoint, "submitting");
    const char *mark_audio =
        json_string_value(json_object_get(mark, "audio_url"));
    json_t *mark_at = json_object_get(mark, "at");
    int64_t since = wall_ms();
    if (mark_audio && strcmp(mark_audio, audio) == 0 &&
        json_is_integer(mark_at)) {
        since = json_integer_value(mark_at);
        int rc = find_submitted(h, c, ctx, audio, since, found, sizeof found,
                                res);
        if (rc < 0) return; /* unknown: never submit blind */
        if (rc == 1) {
            sl_ctx_log(ctx, SL_LOG_INFO,
                       "AssemblyAI transcript %s of an earlier unanswered "
                       "submission found; not submitting again",
                       found);
            adopt_id(ctx, c, found, res);
            return;
        }
    } else {
        json_t *cp = json_pack("{s:{s:s, s:I}}", "submitting", "audio_url",
                               audio, "at", (json_int_t)since);
        int rc = cp ? sl_ctx_checkpoint(ctx, cp) : -SL_ENOMEM;
        json_decref(cp);
        if (rc != 0) {
            sl_fail(res, SL_EC_RETRYABLE,
                    "assemblyai.transcribe: could not record the submission "
                    "before making it");
            return;
        }
    }
    json_t *b = submit_body(job->stage->with, audio);
    body = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    if (!body) {
        sl_fail(res, SL_EC_RETRYABLE, "assemblyai.transcribe: out of memory");
        return;
    }
    int rc = call(h, c, "AssemblyAI transcript", "POST", c->submit_url, body,
                  ctx, &reply, res);
    free(body);
    const char *id =
        rc == 0 ? json_string_value(json_object_get(reply, "id")) : NULL;
    if (rc == 0 && !usable_id(id))
        sl_fail(res, SL_EC_INVALID_RESPONSE,
                "AssemblyAI transcript: the reply has no usable id");
    if (usable_id(id)) {
        adopt_id(ctx, c, id, res);
    } else if (outcome_unknown(res) && !sl_ctx_should_stop(ctx)) {
        /* Look now; if the list cannot be read either, the marker makes
         * the next run look before it submits. */
        sl_result lr;
        memset(&lr, 0, sizeof lr);
        if (find_submitted(h, c, ctx, audio, since, found, sizeof found,
                           &lr) == 1) {
            sl_ctx_log(ctx, SL_LOG_INFO,
                       "AssemblyAI transcript %s created by a submission "
                       "whose answer was lost",
                       found);
            memset(res, 0, sizeof *res);
            adopt_id(ctx, c, found, res);
        }
        json_decref(lr.outputs);
    }
    json_decref(reply);
}

static void tx_run(sl_ctx *ctx, const sl_job *job, void *state,
                   sl_result *res) {
    sl_http *h = state;
    tx_cfg c;
    char err[512], url[1024];
    json_t *reply = NULL;
    char *body = NULL;
    if (tx_config(job->stage->with, &c, err, sizeof err) != 0) {
        sl_fail(res, SL_EC_INVALID_INPUT, "assemblyai.transcribe: %s", err);
        return;
    }
    if (!c.key) {
        sl_fail(res, SL_EC_INVALID_INPUT,
                "assemblyai.transcribe: no API key: set %s in the worker's "
                "environment",
                sl_with_str(job->stage->with, "api_key_env",
                                 "ASSEMBLYAI_API_KEY"));
        return;
    }
    const char *id =
        json_string_value(json_object_get(job->checkpoint, "transcript_id"));
    json_t *at = json_object_get(job->checkpoint, "submitted_at");
    int64_t submitted = json_is_integer(at) ? json_integer_value(at) : 0;

    if (!id) {
        const char *audio =
            json_string_value(json_object_get(job->input, c.audio_column));
        if (!audio || !*audio) {
            sl_fail(res, SL_EC_INVALID_INPUT,
                    "assemblyai.transcribe: the job has no %s", c.audio_column);
            return;
        }
        submit(ctx, job, h, &c, audio, res);
        return;
    }

    snprintf(url, sizeof url, "%s/%s", c.submit_url, id);
    if (call(h, &c, "AssemblyAI transcript status", "GET", url, NULL, ctx,
             &reply, res) != 0)
        goto out;
    const char *status = json_string_value(json_object_get(reply, "status"));
    if (!status) {
        sl_fail(res, SL_EC_INVALID_RESPONSE,
                "AssemblyAI transcript %s: the reply has no status", id);
    } else if (strcmp(status, "completed") == 0) {
        completed(ctx, job, &c, reply, id, res);
    } else if (strcmp(status, "error") == 0) {
        const char *msg = json_string_value(json_object_get(reply, "error"));
        sl_fail(res, SL_EC_PROVIDER, "AssemblyAI transcription failed: %s",
                msg ? msg : "(no message)");
    } else if (strcmp(status, "queued") == 0 ||
               strcmp(status, "processing") == 0) {
        if (submitted > 0 && wall_ms() - submitted > c.max_wait_ms) {
            sl_fail(res, SL_EC_TIMEOUT,
                    "AssemblyAI transcript %s still %s after %lld s "
                    "(max_wait)",
                    id, status, (long long)(c.max_wait_ms / 1000));
        } else {
            char detail[64];
            snprintf(detail, sizeof detail, "Transcribing (%s)", status);
            sl_ctx_progress(ctx, strcmp(status, "queued") == 0 ? 0 : 50,
                            detail);
            sl_snooze(res, c.poll_ms);
        }
    } else {
        sl_fail(res, SL_EC_INVALID_RESPONSE,
                "AssemblyAI transcript %s: unknown status '%.40s'", id, status);
    }
out:
    free(body);
    json_decref(reply);
}

const sl_handler sl_handler_assemblyai_transcribe = {
    "assemblyai.transcribe", tx_validate, sl_http_state_init,
    sl_http_state_fini, tx_run};
