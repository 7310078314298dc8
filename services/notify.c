/* notify.c - Slack and signed-webhook delivery of alert messages
 * (notify.h).
 *
 * A webhook request carries X-Sluice-Timestamp (Unix seconds) and
 * X-Sluice-Signature: sha256=HEX, the HMAC-SHA256 of "<timestamp>.<body>"
 * keyed by the notifier's secret, so a receiver can check both origin and
 * freshness (docs/operations.md shows the check).
 */
#include "notify.h"

#include <assert.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "text.h"

#define MAX_TRIES 5
#define MAX_WAIT_MS 60000
#define MAX_BUCKETS 64

typedef struct bucket {
    const sl_notifier *nt;
    int64_t next_ms; /* sl_now_ms() before which nothing is sent */
} bucket;

struct sl_notify {
    sl_http *http;
    const atomic_int *stop;
    bucket b[MAX_BUCKETS];
    size_t nb;
};

int sl_notify_new(sl_notify **out, const atomic_int *stop, char *err,
                  size_t errlen) {
    sl_notify *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    int rc = sl_http_new(&n->http, err, errlen);
    if (rc) {
        free(n);
        return rc;
    }
    n->stop = stop;
    *out = n;
    return 0;
}

void sl_notify_free(sl_notify *n) {
    if (!n) return;
    sl_http_free(n->http);
    free(n);
}

void sl_notify_sign(const char *secret, const char *ts, const char *body,
                    size_t len, char out[72]) {
    size_t tl = strlen(ts);
    unsigned char *msg = malloc(tl + 1 + len + 1);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    strcpy(out, "sha256=");
    if (!msg) return;
    memcpy(msg, ts, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, len);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, tl + 1 + len, mac,
         &ml);
    free(msg);
    for (unsigned i = 0; i < ml && i < 32; i++)
        sprintf(out + 7 + 2 * i, "%02x", mac[i]);
}

static bucket *bucket_of(sl_notify *s, const sl_notifier *nt) {
    for (size_t i = 0; i < s->nb; i++)
        if (s->b[i].nt == nt) return &s->b[i];
    if (s->nb == MAX_BUCKETS) return &s->b[0]; /* shared: still limited */
    s->b[s->nb].nt = nt;
    s->b[s->nb].next_ms = 0;
    return &s->b[s->nb++];
}

/* Sleeps until `until` (sl_now_ms) in short steps; 0, or -1 when asked
 * to stop. */
static int wait_until(sl_notify *s, int64_t until) {
    for (;;) {
        if (s->stop && atomic_load(s->stop)) return -1;
        int64_t left = until - sl_now_ms();
        if (left <= 0) return 0;
        sl_sleep_ms(left < 100 ? left : 100);
    }
}

static const char *change_name(sl_alert_change c) {
    switch (c) {
    case SL_ALERT_FIRING: return "firing";
    case SL_ALERT_REPEAT: return "firing";
    case SL_ALERT_RESOLVED: return "resolved";
    default: return "test";
    }
}

/* The request body for nt: Slack's {"text": ...}, or the webhook's JSON
 * with every alert. Returns a malloc'd string or NULL. */
static char *make_body(const sl_notifier *nt, const sl_alert_event *ev,
                       size_t n) {
    json_t *o = NULL;
    if (nt->kind == SL_NOTIFIER_SLACK) {
        sl_buf t;
        sl_buf_init(&t);
        if (n == 1)
            sl_buf_puts(&t, ev[0].text);
        else {
            sl_buf_printf(&t, "sluice: %zu alerts", n);
            for (size_t i = 0; i < n; i++)
                sl_buf_printf(&t, "\n\xe2\x80\xa2 %s", ev[i].text);
        }
        o = json_pack("{s:s}", "text", sl_buf_failed(&t) ? "" : sl_buf_str(&t));
        sl_buf_free(&t);
    } else {
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++) {
            const sl_alert_event *e = &ev[i];
            json_array_append_new(
                a, json_pack("{s:s,s:s,s:s?,s:s,s:s,s:b,s:s,s:f,s:s}",
                             "pipeline", e->pipeline->name, "rule",
                             e->rule->name, "stage",
                             e->stage ? e->stage->name : NULL, "kind",
                             sl_alert_kind_name(e->rule->kind), "state",
                             change_name(e->change), "repeat",
                             e->change == SL_ALERT_REPEAT, "severity",
                             e->rule->severity, "value", e->value, "text",
                             e->text));
        }
        o = json_pack("{s:s,s:I,s:o}", "source", "sluice", "count",
                      (json_int_t)n, "alerts", a ? a : json_array());
    }
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return body;
}

int sl_notify_send(sl_notify *s, const sl_notifier *nt,
                   const sl_alert_event *ev, size_t n, char *err,
                   size_t errlen) {
    assert(s && nt && ev && n >= 1);
    const char *url = getenv(nt->url_env);
    if (!url || !*url) {
        snprintf(err, errlen, "notifier %s: $%s is not set", nt->name,
                 nt->url_env);
        return -SL_EINVAL;
    }
    const char *secret = nt->secret_env ? getenv(nt->secret_env) : NULL;
    if (nt->kind == SL_NOTIFIER_WEBHOOK && (!secret || !*secret)) {
        snprintf(err, errlen, "notifier %s: $%s is not set", nt->name,
                 nt->secret_env);
        return -SL_EINVAL;
    }
    char *body = make_body(nt, ev, n);
    if (!body) {
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    bucket *bk = bucket_of(s, nt);
    int rc = -SL_EHTTP;
    int64_t backoff = 1000;
    for (int attempt = 1; attempt <= MAX_TRIES; attempt++) {
        if (wait_until(s, bk->next_ms)) {
            snprintf(err, errlen, "notifier %s: stopped before sending",
                     nt->name);
            rc = -SL_ESTOP;
            break;
        }
        char ts[32], sig[72], h_ts[64], h_sig[128];
        snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
        const char *headers[4] = {"Content-Type: application/json", NULL,
                                  NULL, NULL};
        if (nt->kind == SL_NOTIFIER_WEBHOOK) {
            sl_notify_sign(secret, ts, body, strlen(body), sig);
            snprintf(h_ts, sizeof h_ts, "X-Sluice-Timestamp: %s", ts);
            snprintf(h_sig, sizeof h_sig, "X-Sluice-Signature: %s", sig);
            headers[1] = h_ts;
            headers[2] = h_sig;
        }
        sl_http_req req = {.what = "alert notification",
                           .provider = "alerts",
                           .method = "POST",
                           .url = url,
                           .headers = headers,
                           .body = body,
                           .body_len = strlen(body),
                           .timeout_ms = 10000,
                           .max_response = 64 * 1024};
        sl_http_resp resp = {0};
        sl_result res;
        memset(&res, 0, sizeof res);
        int hr = sl_http_do(s->http, &req, &resp, &res);
        int64_t now = sl_now_ms();
        bk->next_ms = now + nt->min_interval_ms;
        if (hr == 0) {
            sl_http_resp_clear(&resp);
            rc = 0;
            break;
        }
        long status = resp.status;
        int64_t wait = backoff;
        if (resp.retry_after_ms > wait) wait = resp.retry_after_ms;
        if (wait > MAX_WAIT_MS) wait = MAX_WAIT_MS;
        sl_http_resp_clear(&resp);
        /* The server's Retry-After also holds back the next message. */
        if (now + wait > bk->next_ms) bk->next_ms = now + wait;
        backoff *= 2;
        snprintf(err, errlen, "notifier %s: HTTP %ld after %d attempt%s",
                 nt->name, status, attempt, attempt == 1 ? "" : "s");
        char st[16];
        snprintf(st, sizeof st, "%ld", status);
        sl_log(SL_LOG_WARN, "alert notification refused", "notifier",
               nt->name, "status", st, NULL);
        if (status >= 400 && status < 500 && status != 429 && status != 408)
            break; /* our request is wrong: do not repeat it */
    }
    free(body);
    return rc;
}
