/* log.c - structured logging with secret redaction. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static sl_log_format log_format = SL_LOGFMT;
static int log_min = SL_LOG_INFO;

#define MAX_SECRETS 32
static char *secrets[MAX_SECRETS];
static int nsecrets;
static pthread_mutex_t secrets_lock = PTHREAD_MUTEX_INITIALIZER;

static int is_secret_name(const char *name, size_t len) {
    static const char *const marks[] = {"API_KEY", "TOKEN", "SECRET",
                                        "PASSWORD", "PGPASSWORD"};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        size_t ml = strlen(marks[i]);
        for (size_t j = 0; j + ml <= len; j++)
            if (memcmp(name + j, marks[i], ml) == 0) return 1;
    }
    return 0;
}

void sl_redact_reload(void) {
    pthread_mutex_lock(&secrets_lock);
    for (int i = 0; i < nsecrets; i++) free(secrets[i]);
    nsecrets = 0;
    for (char **e = environ; e && *e && nsecrets < MAX_SECRETS; e++) {
        const char *eq = strchr(*e, '=');
        /* Short values would redact ordinary words; keys are long. */
        if (!eq || strlen(eq + 1) < 6) continue;
        if (is_secret_name(*e, (size_t)(eq - *e)))
            secrets[nsecrets++] = strdup(eq + 1);
    }
    pthread_mutex_unlock(&secrets_lock);
}

void sl_redact(char *buf, size_t cap) {
    static const char repl[] = "[redacted]";
    const size_t rl = sizeof repl - 1;
    pthread_mutex_lock(&secrets_lock);
    for (int i = 0; i < nsecrets; i++) {
        const char *s = secrets[i];
        if (!s) continue;
        size_t sl = strlen(s);
        char *p;
        while ((p = strstr(buf, s)) != NULL) {
            size_t tail = strlen(p + sl);
            size_t pos = (size_t)(p - buf);
            if (pos + rl + tail + 1 > cap) tail = cap - 1 - pos - rl;
            memmove(p + rl, p + sl, tail);
            memcpy(p, repl, rl);
            p[rl + tail] = '\0';
        }
    }
    pthread_mutex_unlock(&secrets_lock);
}

char *sl_redact_dup(const char *s) {
    /* A secret is at least 6 bytes and "[redacted]" is 10: the text grows
     * by at most 10/6. */
    size_t len = strlen(s), cap = len + len * 2 / 3 + 16;
    char *out = malloc(cap);
    if (!out) return NULL;
    memcpy(out, s, len + 1);
    sl_redact(out, cap);
    return out;
}

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

/* Appends v quoted for the active format. */
static size_t put_value(char *out, size_t pos, size_t cap, const char *v) {
    int json = log_format == SL_LOGJSON;
    int quote = json || v[0] == '\0' || strpbrk(v, " =\"\t\n") != NULL;
    if (quote && pos < cap - 1) out[pos++] = '"';
    for (const char *p = v; *p && pos < cap - 8; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            out[pos++] = '\\';
            out[pos++] = (char)c;
        } else if (c == '\n') {
            out[pos++] = '\\';
            out[pos++] = 'n';
        } else if (c < 0x20) {
            pos += (size_t)snprintf(out + pos, cap - pos, "\\u%04x", c);
        } else {
            out[pos++] = (char)c;
        }
    }
    if (quote && pos < cap - 1) out[pos++] = '"';
    return pos;
}

void sl_log(int level, const char *msg, ...) {
    if (level < log_min) return;
    char line[4096];
    size_t pos = 0, cap = sizeof line - 2;
    struct timeval tv;
    struct tm tm;
    char ts[40];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03dZ", (int)(tv.tv_usec / 1000));

    int json = log_format == SL_LOGJSON;
    va_list ap;
    va_start(ap, msg);
    pos += (size_t)snprintf(line, cap, json ? "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":"
                                            : "ts=%s level=%s msg=",
                            ts, level_name(level));
    pos = put_value(line, pos, cap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k) break;
        const char *v = va_arg(ap, const char *);
        if (!v) v = "";
        if (pos >= cap - 16) break;
        pos += (size_t)snprintf(line + pos, cap - pos, json ? ",\"%s\":" : " %s=", k);
        if (pos >= cap) pos = cap - 1;
        pos = put_value(line, pos, cap, v);
    }
    va_end(ap);
    if (json && pos < cap) line[pos++] = '}';
    line[pos] = '\0';
    sl_redact(line, sizeof line - 1);
    pos = strlen(line);
    line[pos++] = '\n';
    ssize_t w = write(2, line, pos);
    (void)w;
}
