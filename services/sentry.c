/* sentry.c - Sentry events from a background thread (sentry.h).
 *
 * Events go to POST <url> as one envelope (a header line, an item header
 * line, the event) with X-Sentry-Auth naming the public key; Sentry needs
 * no secret key for that. Rate: a token bucket of BURST events refilled at
 * one per REFILL_MS, so a stage that fails every job sends a handful, not
 * thousands; Sentry's own 429 Retry-After pauses the sender.
 */
#include "sentry.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "text.h"
#include "version.h"

#define QUEUE_MAX 64
#define BURST 10
#define REFILL_MS 6000

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int started, stopping;
    char url[1024];
    char auth[512];
    char *q[QUEUE_MAX]; /* envelopes waiting to be sent */
    size_t head, n;
    double tokens;
    int64_t refilled_ms;
    int64_t paused_until_ms; /* Retry-After from Sentry */
    long dropped;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

int sl_sentry_parse_dsn(const char *dsn, char *url, size_t urllen, char *key,
                        size_t keylen, char *err, size_t errlen) {
    const char *sep = dsn ? strstr(dsn, "://") : NULL;
    if (!sep || (strncmp(dsn, "http://", 7) && strncmp(dsn, "https://", 8))) {
        snprintf(err, errlen, "SENTRY_DSN: expected http(s)://KEY@HOST/PROJECT");
        return -SL_EINVAL;
    }
    const char *user = sep + 3, *at = strchr(user, '@');
    const char *slash = at ? strchr(at, '/') : NULL;
    const char *last = slash ? strrchr(slash, '/') : NULL;
    if (!at || !slash || at == user || !last || !last[1] ||
        strcspn(last + 1, "?#") == 0) {
        snprintf(err, errlen, "SENTRY_DSN: expected http(s)://KEY@HOST/PROJECT");
        return -SL_EINVAL;
    }
    size_t klen = strcspn(user, ":@");
    if (klen + 1 > keylen) {
        snprintf(err, errlen, "SENTRY_DSN: the key is too long");
        return -SL_EINVAL;
    }
    memcpy(key, user, klen);
    key[klen] = '\0';
    int n = snprintf(url, urllen, "%.*s%.*sapi/%.*s/envelope/",
                     (int)(sep + 3 - dsn), dsn, (int)(last + 1 - (at + 1)),
                     at + 1, (int)strcspn(last + 1, "?#/"), last + 1);
    if (n < 0 || (size_t)n >= urllen) {
        snprintf(err, errlen, "SENTRY_DSN: too long");
        return -SL_EINVAL;
    }
    return 0;
}

/* Takes one token; 0 when none is left. Caller holds S.mu. */
static int take_token(void) {
    int64_t now = sl_now_ms();
    S.tokens += (double)(now - S.refilled_ms) / REFILL_MS;
    if (S.tokens > BURST) S.tokens = BURST;
    S.refilled_ms = now;
    if (S.tokens < 1 || now < S.paused_until_ms) return 0;
    S.tokens -= 1;
    return 1;
}

static void send_one(sl_http *h, const char *env) {
    const char *headers[3] = {"Content-Type: application/x-sentry-envelope",
                              S.auth, NULL};
    sl_http_req req = {.what = "Sentry event",
                       .provider = "sentry",
                       .method = "POST",
                       .url = S.url,
                       .headers = headers,
                       .body = env,
                       .body_len = strlen(env),
                       .timeout_ms = 10000,
                       .max_response = 64 * 1024};
    sl_http_resp resp = {0};
    sl_result res;
    memset(&res, 0, sizeof res);
    if (sl_http_do(h, &req, &resp, &res) != 0) {
        sl_log(SL_LOG_WARN, "Sentry event not delivered", "error",
               res.message, NULL);
        if (resp.status == 429) {
            int64_t wait = resp.retry_after_ms > 0 ? resp.retry_after_ms
                                                   : 60000;
            pthread_mutex_lock(&S.mu);
            S.paused_until_ms = sl_now_ms() + wait;
            pthread_mutex_unlock(&S.mu);
        }
    }
    json_decref(res.outputs);
    sl_http_resp_clear(&resp);
}

static void *sender(void *arg) {
    (void)arg;
    sl_http *h = NULL;
    char err[256];
    if (sl_http_new(&h, err, sizeof err) != 0)
        sl_log(SL_LOG_ERROR, "Sentry sender cannot start", "error", err, NULL);
    pthread_mutex_lock(&S.mu);
    for (;;) {
        while (!S.n && !S.stopping) pthread_cond_wait(&S.cv, &S.mu);
        if (!S.n) break;
        char *env = S.q[S.head];
        S.head = (S.head + 1) % QUEUE_MAX;
        S.n--;
        pthread_mutex_unlock(&S.mu);
        if (h) send_one(h, env);
        free(env);
        pthread_mutex_lock(&S.mu);
    }
    pthread_mutex_unlock(&S.mu);
    sl_http_free(h);
    return NULL;
}

int sl_sentry_start(char *err, size_t errlen) {
    const char *dsn = getenv("SENTRY_DSN");
    if (!dsn || !*dsn || S.started) return 0;
    char key[256];
    int rc = sl_sentry_parse_dsn(dsn, S.url, sizeof S.url, key, sizeof key,
                                 err, errlen);
    if (rc) return rc;
    snprintf(S.auth, sizeof S.auth,
             "X-Sentry-Auth: Sentry sentry_version=7, sentry_client=sluice/"
             SL_VERSION ", sentry_key=%s",
             key);
    S.tokens = BURST;
    S.refilled_ms = sl_now_ms();
    S.stopping = 0;
    if (pthread_create(&S.th, NULL, sender, NULL) != 0) {
        snprintf(err, errlen, "cannot start the Sentry sender thread");
        return -SL_ENOMEM;
    }
    S.started = 1;
    return 0;
}

void sl_sentry_stop(long drain_ms) {
    if (!S.started) return;
    int64_t until = sl_now_ms() + drain_ms;
    pthread_mutex_lock(&S.mu);
    while (S.n && sl_now_ms() < until) {
        pthread_mutex_unlock(&S.mu);
        sl_sleep_ms(20);
        pthread_mutex_lock(&S.mu);
    }
    /* What is still queued past the drain is dropped. */
    while (S.n) {
        free(S.q[S.head]);
        S.head = (S.head + 1) % QUEUE_MAX;
        S.n--;
        S.dropped++;
    }
    S.stopping = 1;
    pthread_cond_signal(&S.cv);
    pthread_mutex_unlock(&S.mu);
    pthread_join(S.th, NULL);
    S.started = 0;
    if (S.dropped) {
        char d[32];
        snprintf(d, sizeof d, "%ld", S.dropped);
        sl_log(SL_LOG_WARN, "Sentry events dropped (rate or queue limit)",
               "count", d, NULL);
    }
}

/* The envelope of one event (malloc'd), or NULL. */
static char *envelope(const sl_stage *s, const char *job_id,
                      const char *subject_id, const char *errclass,
                      int attempts, const char *message) {
    unsigned char rnd[16];
    char id[33];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (unsigned char)rand();
    for (size_t i = 0; i < sizeof rnd; i++) sprintf(id + 2 * i, "%02x", rnd[i]);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char att[16];
    snprintf(att, sizeof att, "%d", attempts);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const char *penv = getenv("SENTRY_ENVIRONMENT");
    json_t *ev = json_pack(
        "{s:s,s:f,s:s,s:s,s:s,s:s,s:s,s:{s:s},s:{s:[{s:s,s:s}]},"
        "s:{s:s,s:s,s:s,s:s,s:s,s:s},s:[s,s,s,s]}",
        "event_id", id, "timestamp", ts.tv_sec + ts.tv_nsec / 1e9, "platform",
        "native", "level", "error", "logger", "sluice", "server_name", host,
        "release", "sluice@" SL_VERSION, "message", "formatted", message,
        "exception", "values", "type", errclass, "value", message, "tags",
        "pipeline", s->pipeline->name, "stage", s->name, "error_class",
        errclass, "attempts", att, "job_id", job_id, "subject_id",
        subject_id && *subject_id ? subject_id : "-", "fingerprint", "sluice",
        s->pipeline->name, s->name, errclass);
    if (!ev) return NULL;
    if (penv && *penv) json_object_set_new(ev, "environment", json_string(penv));
    /* Secrets out of every string, as in the logs. */
    char *payload = sl_text_json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (!payload) return NULL;
    size_t plen = strlen(payload);
    size_t cap = plen + 256;
    char *out = malloc(cap);
    if (out)
        snprintf(out, cap,
                 "{\"event_id\":\"%s\"}\n{\"type\":\"event\",\"length\":%zu,"
                 "\"content_type\":\"application/json\"}\n%s\n",
                 id, plen, payload);
    free(payload);
    return out;
}

void sl_sentry_job_failed(const sl_stage *s, const char *job_id,
                          const char *subject_id, const char *errclass,
                          int attempts, const char *message, void *arg) {
    (void)arg;
    if (!S.started) return;
    pthread_mutex_lock(&S.mu);
    int ok = S.n < QUEUE_MAX && take_token();
    if (!ok) S.dropped++;
    pthread_mutex_unlock(&S.mu);
    if (!ok) return;
    char *env = envelope(s, job_id, subject_id, errclass, attempts, message);
    if (!env) return;
    pthread_mutex_lock(&S.mu);
    if (S.n < QUEUE_MAX) {
        S.q[(S.head + S.n) % QUEUE_MAX] = env;
        S.n++;
        env = NULL;
        pthread_cond_signal(&S.cv);
    }
    pthread_mutex_unlock(&S.mu);
    free(env);
}
