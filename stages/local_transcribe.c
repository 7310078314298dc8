/* local_transcribe.c - handler "local.transcribe": offline speech
 * recognition with pocketsphinx (engine/asr.h), no network, no key.
 *
 * The audio comes from the job's declared columns, as for
 * assemblyai.upload: a bytea column (with.media_column, else the first
 * bytea column with a value), written to a temporary file for ffmpeg; or,
 * only when with.path_root is set, a text column holding a path on the
 * worker's machine (with.path_column, default media_path) that must lie
 * under path_root, so that a job row cannot make the worker read any file
 * it can. Anything ffmpeg decodes is accepted: wav, mp3, ogg, flac, m4a,
 * opus.
 *
 * Outputs have the shape of the AssemblyAI stage's: transcript (text),
 * words and utterances (JSON arrays, times in milliseconds), plus
 * audio_duration (seconds) and provider; the runtime writes them into the
 * declared columns of the same names and hands them to the next stage.
 *
 * with: (all optional)
 *   media_column: media_file the bytea column with the audio
 *   path_root: /srv/audio    allow local files under this directory ...
 *   path_column: media_path  ... named by this text column
 *   model_dir, hmm, lm, dict pocketsphinx model files (asr.h)
 *   pause_ms: 200            a pause this long ends an utterance
 *   max_utterance_ms: 30000  the longest utterance decoded in one piece
 *   tmp_dir: /tmp            where bytea audio is written while decoding
 *                            (default $TMPDIR, else /tmp)
 *
 * The decoder (~0.5 s and ~100 MB to load) is created once per worker
 * thread in init() and reused for every job. A corrupt or unsupported
 * file, or one without any audio, fails the job with class invalid_input
 * (permanent) and ffmpeg's own words.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asr.h"
#include "error.h"
#include "handler.h"

static const char *str_opt(const sl_stage *st, const char *key) {
    json_t *v = json_object_get(st->with, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int int_opt(const sl_stage *st, const char *key) {
    json_t *v = json_object_get(st->with, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : 0;
}

static const sl_column *find_col(const sl_stage *st, const char *name) {
    for (size_t i = 0; i < st->ncolumns; i++)
        if (strcmp(st->columns[i].name, name) == 0) return &st->columns[i];
    return NULL;
}

static int lt_validate(const sl_stage *st, char *err, size_t errlen) {
    static const char *const strings[] = {
        "media_column", "path_column", "path_root", "model_dir", "hmm",
        "lm",           "dict",        "tmp_dir",   NULL};
    static const char *const ints[] = {"pause_ms", "max_utterance_ms", NULL};
    const char *k;
    json_t *v;
    json_object_foreach(st->with, k, v) {
        int known = 0;
        for (int i = 0; strings[i]; i++)
            if (strcmp(k, strings[i]) == 0) {
                known = 1;
                if (!json_is_string(v)) {
                    snprintf(err, errlen, "local.transcribe: with.%s must be a "
                                          "string", k);
                    return -1;
                }
            }
        for (int i = 0; ints[i]; i++)
            if (strcmp(k, ints[i]) == 0) {
                known = 1;
                if (!json_is_integer(v) || json_integer_value(v) < 10 ||
                    json_integer_value(v) > 600000) {
                    snprintf(err, errlen, "local.transcribe: with.%s must be a "
                                          "number of milliseconds (10..600000)",
                             k);
                    return -1;
                }
            }
        if (!known) {
            snprintf(err, errlen,
                     "local.transcribe: unknown option with.%s (known: "
                     "media_column, path_column, path_root, model_dir, hmm, "
                     "lm, dict, pause_ms, max_utterance_ms, tmp_dir)",
                     k);
            return -1;
        }
    }
    const char *col = str_opt(st, "media_column");
    if (col) {
        const sl_column *c = find_col(st, col);
        if (!c || strcmp(c->type, "bytea") != 0) {
            snprintf(err, errlen, "local.transcribe: with.media_column '%s' is "
                                  "not a declared bytea column of this stage",
                     col);
            return -1;
        }
    }
    const char *root = str_opt(st, "path_root");
    const char *pc = str_opt(st, "path_column");
    if (pc && !root) {
        snprintf(err, errlen, "local.transcribe: with.path_column needs "
                              "with.path_root (the directory audio files may "
                              "be read from)");
        return -1;
    }
    if (root) {
        if (!pc) pc = "media_path";
        const sl_column *c = find_col(st, pc);
        if (!c || strcmp(c->type, "text") != 0) {
            snprintf(err, errlen, "local.transcribe: the path column '%s' is "
                                  "not a declared text column of this stage",
                     pc);
            return -1;
        }
    }
    int has_bytea = 0;
    for (size_t i = 0; i < st->ncolumns; i++)
        if (strcmp(st->columns[i].type, "bytea") == 0) has_bytea = 1;
    if (!has_bytea && !root) {
        snprintf(err, errlen, "local.transcribe: the stage declares no bytea "
                              "column for the audio (e.g. media_file: bytea) "
                              "and no with.path_root for local files");
        return -1;
    }
    return 0;
}

static int lt_init(const sl_stage *st, void **state, char *err,
                   size_t errlen) {
    if (lt_validate(st, err, errlen) != 0) return -1;
    sl_asr_opts o;
    memset(&o, 0, sizeof o);
    o.model_dir = str_opt(st, "model_dir");
    o.hmm = str_opt(st, "hmm");
    o.lm = str_opt(st, "lm");
    o.dict = str_opt(st, "dict");
    o.pause_ms = int_opt(st, "pause_ms");
    o.max_utterance_ms = int_opt(st, "max_utterance_ms");
    sl_asr *a = NULL;
    char e[512];
    if (sl_asr_new(&o, &a, e, sizeof e) != 0) {
        snprintf(err, errlen, "local.transcribe: %s", e);
        return -1;
    }
    *state = a;
    return 0;
}

static void lt_fini(void *state) { sl_asr_free(state); }

/* ---- getting the audio into a file ------------------------------------- */

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Writes PostgreSQL's bytea hex text ("\x4142...") decoded into a new
 * temporary file under dir; its path goes to path (OUT). Returns 0, or
 * -SL_EINVAL (not bytea hex text) / -SL_EIO with a message. */
static int bytea_to_file(const char *hex, size_t len, const char *dir,
                         char *path, size_t pathlen, char *err,
                         size_t errlen) {
    if (len < 2 || hex[0] != '\\' || hex[1] != 'x' || len % 2 != 0) {
        snprintf(err, errlen, "the audio column does not hold bytea data");
        return -SL_EINVAL;
    }
    snprintf(path, pathlen, "%s/sluice-audio-XXXXXX", dir);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a temporary file in %s: %s", dir,
                 strerror(errno));
        path[0] = '\0';
        return -SL_EIO;
    }
    unsigned char out[65536];
    size_t n = 0;
    int rc = 0;
    for (size_t i = 2; i < len && rc == 0; i += 2) {
        int hi = hexval((unsigned char)hex[i]);
        int lo = hexval((unsigned char)hex[i + 1]);
        if (hi < 0 || lo < 0) {
            snprintf(err, errlen, "the audio column holds malformed bytea hex");
            rc = -SL_EINVAL;
            break;
        }
        out[n++] = (unsigned char)(hi << 4 | lo);
        if (n == sizeof out || i + 2 >= len) {
            size_t off = 0;
            while (off < n) {
                ssize_t w = write(fd, out + off, n - off);
                if (w < 0 && errno == EINTR) continue;
                if (w < 0) {
                    snprintf(err, errlen, "cannot write %s: %s", path,
                             strerror(errno));
                    rc = -SL_EIO;
                    break;
                }
                off += (size_t)w;
            }
            n = 0;
        }
    }
    if (close(fd) != 0 && rc == 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        rc = -SL_EIO;
    }
    if (rc != 0) {
        unlink(path);
        path[0] = '\0';
    }
    return rc;
}

/* Resolves a path column's value inside path_root. Returns 0 with the
 * real path in out, or -SL_EINVAL with a message. */
static int checked_path(const char *value, const char *root, char *out,
                        char *err, size_t errlen) {
    char rroot[PATH_MAX];
    if (!realpath(root, rroot)) {
        snprintf(err, errlen, "path_root %s: %s", root, strerror(errno));
        return -SL_EINVAL;
    }
    if (!realpath(value, out)) {
        snprintf(err, errlen, "cannot open %s: %s", value, strerror(errno));
        return -SL_EINVAL;
    }
    size_t n = strlen(rroot);
    if (strncmp(out, rroot, n) != 0 || (out[n] != '/' && rroot[n - 1] != '/')) {
        snprintf(err, errlen, "%s is outside path_root %s", value, root);
        return -SL_EINVAL;
    }
    return 0;
}

/* ---- run --------------------------------------------------------------- */

static void on_progress(void *user, int pct, const char *detail) {
    sl_ctx_progress(user, pct, detail);
}

static int on_should_stop(void *user) { return sl_ctx_should_stop(user); }

static void lt_run(sl_ctx *ctx, const sl_job *job, void *state,
                   sl_result *res) {
    const sl_stage *st = job->stage;
    sl_asr *asr = state;
    char tmp[PATH_MAX] = "", path[PATH_MAX], err[1024];
    json_t *out = NULL;
    const char *root = str_opt(st, "path_root");
    const char *pc = str_opt(st, "path_column");
    int rc;
    if (!pc) pc = "media_path";

    /* The bytes in a bytea column first, else a file under path_root. */
    const char *col = str_opt(st, "media_column");
    json_t *v = col ? json_object_get(job->input, col) : NULL;
    for (size_t i = 0; !col && i < st->ncolumns; i++) {
        if (strcmp(st->columns[i].type, "bytea") != 0) continue;
        json_t *c = json_object_get(job->input, st->columns[i].name);
        if (json_is_string(c)) {
            col = st->columns[i].name;
            v = c;
        }
    }
    json_t *pv = root ? json_object_get(job->input, pc) : NULL;
    if (json_is_string(v) && json_string_length(v) > 2) {
        const char *dir = str_opt(st, "tmp_dir");
        if (!dir) dir = getenv("TMPDIR");
        if (!dir || !*dir) dir = "/tmp";
        rc = bytea_to_file(json_string_value(v), json_string_length(v), dir,
                           tmp, sizeof tmp, err, sizeof err);
        if (rc != 0) {
            sl_fail(res, rc == -SL_EINVAL ? SL_EC_INVALID_INPUT
                                          : SL_EC_RETRYABLE,
                    "local.transcribe: %s", err);
            return;
        }
        snprintf(path, sizeof path, "%s", tmp);
    } else if (json_is_string(pv) && json_string_length(pv) > 0) {
        rc = checked_path(json_string_value(pv), root, path, err, sizeof err);
        if (rc != 0) {
            sl_fail(res, SL_EC_INVALID_INPUT, "local.transcribe: %s", err);
            return;
        }
    } else {
        sl_fail(res, SL_EC_INVALID_INPUT,
                "local.transcribe: no audio in the job (column %s is empty%s%s)",
                col ? col : "media_file", root ? ", and so is " : "",
                root ? pc : "");
        return;
    }

    sl_ctx_progress(ctx, 0, "decoding audio");
    sl_asr_cb cb = {on_progress, on_should_stop, ctx};
    rc = sl_asr_transcribe_file(asr, path, &cb, &out, err, sizeof err);
    if (tmp[0]) unlink(tmp);
    switch (rc) {
    case 0:
        sl_done(res, out);
        break;
    case -SL_EINVAL:
        sl_fail(res, SL_EC_INVALID_INPUT, "local.transcribe: %s", err);
        break;
    case -SL_ESTOP:
        sl_fail(res, SL_EC_RETRYABLE,
                "local.transcribe: stopped before the end of the audio");
        break;
    default:
        sl_fail(res, SL_EC_RETRYABLE, "local.transcribe: %s", err);
        break;
    }
}

const sl_handler sl_handler_local_transcribe = {
    "local.transcribe", lt_validate, lt_init, lt_fini, lt_run};
