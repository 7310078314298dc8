/* log.c - structured logging: fields sanitised (text.h), JSON lines built
 * with jansson, logfmt lines escaped by hand. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

/* Bounds on one line's parts, after sanitising (cut between characters). */
#define MAX_MSG 2048
#define MAX_VALUE 1024
#define MAX_KEY 64

static sl_log_format log_format = SL_LOGFMT;
static int log_min = SL_LOG_INFO;

void sl_log_init(sl_log_format fmt, int min_level) {
    log_format = fmt;
    log_min = min_level;
    sl_redact_reload();
}

static const char *level_name(int l) {
    switch (l) {
    case SL_LOG_DEBUG: return "debug";
    case SL_LOG_INFO: return "info";
    case SL_LOG_WARN: return "warn";
    default: return "error";
    }
}

/* ---- values ------------------------------------------------------------- */

/* A sanitised string value (or NULL when out of memory). */
static json_t *safe_value(const char *s, size_t len, size_t max) {
    char *c = sl_text_dup(s, len, max);
    json_t *j = c ? json_string_nocheck(c) : NULL;
    free(c);
    return j;
}

/* The value of a string field: an integer when it is one written plainly
 * (no sign but '-', no leading zero, at most 18 digits), a boolean for
 * "true" and "false", else the sanitised string. */
static json_t *typed_value(const char *v) {
    size_t n = strlen(v);
    if (strcmp(v, "true") == 0) return json_true();
    if (strcmp(v, "false") == 0) return json_false();
    const char *d = v[0] == '-' ? v + 1 : v;
    size_t dl = strlen(d);
    int plain = dl > 0 && dl <= 18 && (d[0] != '0' || dl == 1) &&
                strspn(d, "0123456789") == dl && strcmp(v, "-0") != 0;
    if (plain) {
        /* A number can be a (short) secret too: only a value the
         * sanitiser leaves as it is becomes a number. */
        char safe[32];
        sl_text_copy(safe, sizeof safe, v, n);
        if (strcmp(safe, v) == 0)
            return json_integer((json_int_t)strtoll(v, NULL, 10));
    }
    return safe_value(v, n, MAX_VALUE);
}

/* A typed field from sl_log_fields: numbers and booleans as they are
 * (unless the sanitiser would change their text), strings sanitised,
 * anything else as its sanitised JSON text. */
static json_t *field_value(const json_t *v) {
    if (json_is_string(v))
        return safe_value(json_string_value(v), json_string_length(v),
                          MAX_VALUE);
    if (json_is_boolean(v) || json_is_null(v)) return json_copy((json_t *)v);
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY |
                                   JSON_REAL_PRECISION(15));
    if (!text) return NULL;
    json_t *out;
    char safe[64];
    size_t tl = strlen(text);
    if (json_is_number(v) && tl < sizeof safe &&
        sl_text_copy(safe, sizeof safe, text, tl) == tl &&
        strcmp(safe, text) == 0)
        out = json_copy((json_t *)v);
    else
        out = safe_value(text, tl, MAX_VALUE);
    free(text);
    return out;
}

/* Adds key (sanitised) = value to the line's object unless the key is
 * already there. Steals value. */
static void add_field(json_t *line, const char *key, size_t klen,
                      json_t *value) {
    char k[MAX_KEY];
    if (!value) return;
    sl_text_copy(k, sizeof k, key, klen);
    if (!k[0] || json_object_get(line, k)) {
        json_decref(value);
        return;
    }
    json_object_set_new_nocheck(line, k, value);
}

/* ---- writing ------------------------------------------------------------ */

static int logfmt_needs_quotes(const char *v) {
    if (!*v) return 1;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= ' ' || *p == '=' || *p == '"' || *p == '\\' || *p == 0x7f)
            return 1;
    return 0;
}

static void logfmt_string(sl_buf *b, const char *v) {
    if (!logfmt_needs_quotes(v)) {
        sl_buf_puts(b, v);
        return;
    }
    sl_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        switch (*p) {
        case '"': sl_buf_puts(b, "\\\""); break;
        case '\\': sl_buf_puts(b, "\\\\"); break;
        case '\n': sl_buf_puts(b, "\\n"); break;
        case '\r': sl_buf_puts(b, "\\r"); break;
        case '\t': sl_buf_puts(b, "\\t"); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                sl_buf_printf(b, "\\u%04x", *p);
            else
                sl_buf_putn(b, (const char *)p, 1);
        }
    }
    sl_buf_puts(b, "\"");
}

/* A logfmt key: letters, digits, '_', '.', '-'; anything else is '_'. */
static void logfmt_key(sl_buf *b, const char *k) {
    for (const unsigned char *p = (const unsigned char *)k; *p; p++) {
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                 (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' ||
                 *p == '-';
        sl_buf_putn(b, ok ? (const char *)p : "_", 1);
    }
}

/* Writes the line (an object whose first members are ts, level, msg). */
static void emit(json_t *line) {
    sl_buf b;
    sl_buf_init(&b);
    if (log_format == SL_LOGJSON) {
        char *s = json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(15));
        if (s) sl_buf_puts(&b, s);
        free(s);
    } else {
        const char *k;
        json_t *v;
        int first = 1;
        json_object_foreach(line, k, v) {
            if (!first) sl_buf_puts(&b, " ");
            first = 0;
            logfmt_key(&b, k);
            sl_buf_puts(&b, "=");
            if (json_is_string(v)) {
                logfmt_string(&b, json_string_value(v));
            } else {
                char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY |
                                            JSON_REAL_PRECISION(15));
                if (s) sl_buf_puts(&b, s);
                free(s);
            }
        }
    }
    sl_buf_puts(&b, "\n");
    if (!sl_buf_failed(&b) && sl_buf_str(&b)[0] != '\n') {
        ssize_t w = write(2, sl_buf_str(&b), b.len);
        (void)w;
    } else {
        static const char oom[] = "level=error msg=\"log line lost: out of "
                                  "memory\"\n";
        ssize_t w = write(2, oom, sizeof oom - 1);
        (void)w;
    }
    sl_buf_free(&b);
}

/* The line's object with ts, level and msg, or NULL when out of memory. */
static json_t *line_start(int level, const char *msg) {
    struct timeval tv;
    struct tm tm;
    char ts[40];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03dZ", (int)(tv.tv_usec / 1000));
    json_t *line = json_object();
    if (!line) return NULL;
    json_object_set_new_nocheck(line, "ts", json_string_nocheck(ts));
    json_object_set_new_nocheck(line, "level",
                                json_string_nocheck(level_name(level)));
    json_object_set_new_nocheck(line, "msg",
                                safe_value(msg ? msg : "",
                                           msg ? strlen(msg) : 0, MAX_MSG));
    return line;
}

void sl_log(int level, const char *msg, ...) {
    if (level < log_min) return;
    json_t *line = line_start(level, msg);
    if (!line) return;
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k) break;
        const char *v = va_arg(ap, const char *);
        add_field(line, k, strlen(k), typed_value(v ? v : ""));
    }
    va_end(ap);
    emit(line);
    json_decref(line);
}

void sl_log_fields(int level, const char *msg, const json_t *fields) {
    if (level < log_min) return;
    json_t *line = line_start(level, msg);
    if (!line) return;
    const char *k;
    size_t kl;
    json_t *v;
    if (json_is_object(fields))
        json_object_keylen_foreach((json_t *)fields, k, kl, v)
            add_field(line, k, kl, field_value(v));
    emit(line);
    json_decref(line);
}
