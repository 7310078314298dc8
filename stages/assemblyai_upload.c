/* assemblyai_upload.c - handler "assemblyai.upload": streams the job's
 * media to AssemblyAI's POST /v2/upload and hands `upload_url` on
 * (docs/stages.md).
 *
 * The media comes from, in this order:
 *   1. the checkpoint of an earlier attempt ({"upload_url": ...}): the file
 *      is already uploaded, nothing is sent again;
 *   2. the url column (default external_url): a URL AssemblyAI fetches
 *      itself, handed on as it is;
 *   3. the media column (default media_file, bytea): the bytes;
 *   4. the path column (default media_path), only when with.path_root is
 *      set: a local file that must lie under path_root (rows are written by
 *      app users, so an unrestricted path would let them upload any file
 *      the worker can read);
 *   5. with.path: a fixed local file named by the pipeline (demos).
 * A file is streamed from disk; bytea arrives as hex text in the job input
 * and is decoded into memory once.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "handler.h"
#include "http.h"
#include "log.h"

#define AAI_DEFAULT_BASE "https://api.assemblyai.com"
#define UPLOAD_DEFAULT_TIMEOUT_MS (30LL * 60 * 1000)

static int upload_validate(const sl_stage *stage, char *err, size_t errlen) {
    static const char *const strings[] = {
        "media_column", "url_column", "path_column", "path_root", "path", NULL};
    const json_t *with = stage->with;
    char url[512];
    const char *key;
    sl_http_req req;
    if (sl_with_url(with, AAI_DEFAULT_BASE, "/v2/upload", url, sizeof url, err,
                    errlen) ||
        sl_with_key(with, "ASSEMBLYAI_API_KEY", &key, err, errlen) ||
        sl_http_with_limits(with, UPLOAD_DEFAULT_TIMEOUT_MS, &req, err, errlen))
        return -1;
    return sl_with_strings(with, strings, err, errlen) ? -1 : 0;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes PostgreSQL's bytea hex output ("\x0a1b...") into a new buffer. */
static int bytea_decode(const char *hex, unsigned char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    if (hex[0] != '\\' || hex[1] != 'x') return -SL_EINVAL;
    hex += 2;
    size_t n = strlen(hex);
    if (n % 2) return -SL_EINVAL;
    unsigned char *d = malloc(n / 2 + 1);
    if (!d) return -SL_ENOMEM;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval((unsigned char)hex[2 * i]);
        int lo = hexval((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(d);
            return -SL_EINVAL;
        }
        d[i] = (unsigned char)(hi << 4 | lo);
    }
    *data = d;
    *len = n / 2;
    return 0;
}

/* The input column `key` as a non-empty string, or NULL. */
static const char *input_str(const sl_job *job, const char *key) {
    const char *s = json_string_value(json_object_get(job->input, key));
    return s && *s ? s : NULL;
}

/* Resolves a path from the job row under root; fills res on refusal. */
static int resolve_path(const char *root, const char *path, char *out,
                        sl_result *res) {
    char rroot[PATH_MAX];
    if (!realpath(root, rroot)) {
        sl_fail(res, SL_EC_INTERNAL,
                "assemblyai.upload: path_root %s does "
                "not exist",
                root);
        return -1;
    }
    if (!realpath(path, out)) {
        sl_fail(res, SL_EC_INVALID_INPUT,
                "assemblyai.upload: media file %s not found", path);
        return -1;
    }
    size_t rl = strlen(rroot);
    if (strncmp(out, rroot, rl) != 0 || (out[rl] != '/' && rl > 1)) {
        sl_fail(res, SL_EC_INVALID_INPUT,
                "assemblyai.upload: media file %s lies outside path_root",
                path);
        return -1;
    }
    return 0;
}

typedef struct upload_progress {
    sl_ctx *ctx;
    int last;
} upload_progress;

static int on_progress(void *arg, int64_t sent, int64_t total) {
    upload_progress *p = arg;
    if (sl_ctx_should_stop(p->ctx)) return 1;
    if (total > 0) {
        int pct = (int)(sent * 100 / total);
        if (pct != p->last && pct < 100) {
            char detail[64];
            p->last = pct;
            snprintf(detail, sizeof detail, "AssemblyAI upload %d %%", pct);
            sl_ctx_progress(p->ctx, pct, detail);
        }
    }
    return 0;
}

static void done_with_url(sl_result *res, const char *url) {
    sl_done(res, json_pack("{s:s}", "upload_url", url));
}

/* Steps 3.-5.: the media of the job as req's body: the bytea column
 * (decoded into *bytes, which the caller frees), a path in the row under
 * path_root, or a fixed path. Returns 0, or -1 with res failed. */
static int media_body(const sl_job *job, const json_t *with, sl_http_req *req,
                      unsigned char **bytes, size_t *nbytes,
                      char path[PATH_MAX], sl_result *res) {
    const char *hex =
        input_str(job, sl_with_str(with, "media_column", "media_file"));
    const char *root = sl_with_str(with, "path_root", NULL);
    const char *rowpath =
        root ? input_str(job, sl_with_str(with, "path_column", "media_path"))
             : NULL;
    const char *fixed = sl_with_str(with, "path", NULL);
    if (hex) {
        int rc = bytea_decode(hex, bytes, nbytes);
        if (rc == -SL_ENOMEM) {
            sl_fail(res, SL_EC_RETRYABLE,
                    "assemblyai.upload: out of memory "
                    "decoding the media");
            return -1;
        }
        if (rc != 0) {
            sl_fail(res, SL_EC_INVALID_INPUT,
                    "assemblyai.upload: the media column is not bytea");
            return -1;
        }
        if (*nbytes == 0) {
            sl_fail(res, SL_EC_INVALID_INPUT,
                    "assemblyai.upload: the media file is empty");
            return -1;
        }
        req->body = (const char *)*bytes;
        req->body_len = *nbytes;
    } else if (rowpath) {
        if (resolve_path(root, rowpath, path, res) != 0) return -1;
        req->body_file = path;
    } else if (fixed) {
        snprintf(path, PATH_MAX, "%s", fixed);
        req->body_file = path;
    } else {
        sl_fail(res, SL_EC_INVALID_INPUT,
                "assemblyai.upload: no media: the job has neither %s nor %s%s",
                sl_with_str(with, "media_column", "media_file"),
                sl_with_str(with, "url_column", "external_url"),
                root ? " nor a path" : "");
        return -1;
    }
    return 0;
}

static void upload_run(sl_ctx *ctx, const sl_job *job, void *state,
                       sl_result *res) {
    sl_http *h = state;
    const json_t *with = job->stage->with;
    char url[512], err[512], auth[1024] = "", path[PATH_MAX];
    const char *key = NULL;
    unsigned char *bytes = NULL;
    size_t nbytes = 0;
    json_t *reply = NULL;
    sl_http_resp resp;
    sl_http_req req;
    memset(&resp, 0, sizeof resp);
    memset(&req, 0, sizeof req);

    /* 1. Uploaded by an earlier attempt. */
    const char *saved =
        json_string_value(json_object_get(job->checkpoint, "upload_url"));
    if (saved && *saved) {
        sl_ctx_log(ctx, SL_LOG_INFO,
                   "upload already done by an earlier attempt");
        done_with_url(res, saved);
        return;
    }
    /* 2. A URL AssemblyAI fetches itself. */
    const char *ext =
        input_str(job, sl_with_str(with, "url_column", "external_url"));
    if (ext) {
        if (strncmp(ext, "https://", 8) != 0 &&
            strncmp(ext, "http://", 7) != 0) {
            sl_fail(res, SL_EC_INVALID_INPUT,
                    "assemblyai.upload: external_url must be an http(s) URL");
            return;
        }
        done_with_url(res, ext);
        return;
    }

    if (sl_with_url(with, AAI_DEFAULT_BASE, "/v2/upload", url, sizeof url, err,
                    sizeof err) != 0 ||
        sl_with_key(with, "ASSEMBLYAI_API_KEY", &key, err, sizeof err) != 0 ||
        sl_http_with_limits(with, UPLOAD_DEFAULT_TIMEOUT_MS, &req, err,
                            sizeof err) != 0) {
        sl_fail(res, SL_EC_INVALID_INPUT, "assemblyai.upload: %s", err);
        return;
    }
    if (!key) {
        sl_fail(res, SL_EC_INVALID_INPUT,
                "assemblyai.upload: no API key: set %s in the worker's "
                "environment",
                sl_with_str(with, "api_key_env", "ASSEMBLYAI_API_KEY"));
        return;
    }

    /* 3.-5. The media itself. */
    if (media_body(job, with, &req, &bytes, &nbytes, path, res) != 0) goto out;

    snprintf(auth, sizeof auth, "Authorization: %s", key);
    const char *headers[] = {auth, "Content-Type: application/octet-stream",
                             NULL};
    upload_progress prog = {ctx, -1};
    req.what = "AssemblyAI upload";
    req.provider = "assemblyai";
    req.method = "POST";
    req.url = url;
    req.headers = headers;
    req.progress = on_progress;
    req.progress_arg = &prog;
    if (sl_http_do(h, &req, &resp, res) != 0 ||
        sl_http_json(&req, &resp, &reply, res) != 0)
        goto out;
    const char *uploaded =
        json_string_value(json_object_get(reply, "upload_url"));
    if (!uploaded || !*uploaded) {
        sl_fail(res, SL_EC_INVALID_RESPONSE,
                "AssemblyAI upload: the reply has no upload_url");
        goto out;
    }
    /* Saved at once: a retry after this point (a crash before the job is
     * marked done) hands the same URL on instead of uploading again. */
    json_t *cp = json_pack("{s:s}", "upload_url", uploaded);
    sl_ctx_checkpoint(ctx, cp);
    json_decref(cp);
    done_with_url(res, uploaded);
out:
    explicit_bzero(auth, sizeof auth);
    json_decref(reply);
    sl_http_resp_clear(&resp);
    free(bytes);
}

const sl_handler sl_handler_assemblyai_upload = {
    "assemblyai.upload", upload_validate, sl_http_state_init,
    sl_http_state_fini, upload_run};
