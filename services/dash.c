/* dash.c - the dashboard stream's frames (dash.h). */
#include "dash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "buf.h"
#include "clock.h"
#include "log.h"
#include "ops.h"
#include "web.h"

#define POLL_LIMIT 5000
#define SEEN_ROTATE_MS 30000 /* more than the reads' 25 s + 2 s overlap */

/* A set of 64-bit keys (open addressing; 0 is the empty slot). */
typedef struct keyset {
    uint64_t *k;
    size_t cap, n;
} keyset;

static int keyset_has(const keyset *s, uint64_t key) {
    if (!s->cap) return 0;
    for (size_t i = key & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->k[i] == key) return 1;
        if (s->k[i] == 0) return 0;
    }
}

static void keyset_put(keyset *s, uint64_t key) {
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        uint64_t *k = calloc(cap, sizeof *k);
        if (!k) return; /* at worst a frame is sent twice */
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->k[i]) continue;
            size_t j = s->k[i] & (cap - 1);
            while (k[j]) j = (j + 1) & (cap - 1);
            k[j] = s->k[i];
        }
        free(s->k);
        s->k = k;
        s->cap = cap;
    }
    size_t i = key & (s->cap - 1);
    while (s->k[i] && s->k[i] != key) i = (i + 1) & (s->cap - 1);
    if (!s->k[i]) s->n++;
    s->k[i] = key;
}

struct sl_dash {
    const sl_model *m;
    char since[40]; /* "" until the first poll */
    char after[40]; /* the last row's id after a cut poll, else "" */
    uint64_t seq;   /* the last frame's number */
    char *ring[SL_DASH_RING];
    keyset seen, old; /* two generations: what the overlap brings again */
    int cut;          /* the last poll stopped at its limit */
    int64_t rotated_ms;
};

sl_dash *sl_dash_new(const sl_model *m) {
    sl_dash *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->m = m;
    d->rotated_ms = sl_now_ms();
    return d;
}

void sl_dash_free(sl_dash *d) {
    if (!d) return;
    for (size_t i = 0; i < SL_DASH_RING; i++)
        free(d->ring[i]);
    free(d->seen.k);
    free(d->old.k);
    free(d);
}

int sl_dash_poll(sl_dash *d, PGconn *c, PGresult **out) {
    char err[512];
    int rc = sl_ops_transitions(c, d->m, d->since[0] ? d->since : NULL,
                                d->after[0] ? d->after : NULL, POLL_LIMIT,
                                out, err, sizeof err);
    if (rc != 0) sl_log(SL_LOG_WARN, "dashboard events: read failed", "error",
                        err, NULL);
    return rc;
}

static uint64_t key_of(const PGresult *r, int i) {
    uint64_t h = 1469598103934665603ULL;
    for (int col = SL_TR_QUEUE; col <= SL_TR_UPDATED; col++) {
        for (const char *q = PQgetvalue(r, i, col); *q; q++)
            h = (h ^ (unsigned char)*q) * 1099511628211ULL;
        h = (h ^ 0x1f) * 1099511628211ULL;
    }
    return h ? h : 1;
}

size_t sl_dash_ingest(sl_dash *d, PGresult *r,
                      void (*emit)(const char *frame, void *arg), void *arg) {
    int64_t t = sl_now_ms();
    if (t - d->rotated_ms >= SEEN_ROTATE_MS) {
        free(d->old.k);
        d->old = d->seen;
        memset(&d->seen, 0, sizeof d->seen);
        d->rotated_ms = t;
    }
    int n = PQntuples(r);
    size_t sent = 0;
    for (int i = 0; i < n; i++) {
        if (PQgetisnull(r, i, SL_TR_QUEUE)) continue; /* nothing changed */
        uint64_t key = key_of(r, i);
        if (keyset_has(&d->seen, key) || keyset_has(&d->old, key)) continue;
        keyset_put(&d->seen, key);
        const sl_stage *s =
            sl_model_stage_by_queue(d->m, PQgetvalue(r, i, SL_TR_QUEUE));
        if (!s) continue;
        json_t *o = json_pack(
            "{s:s,s:s,s:s,s:s,s:s}", "pipeline", s->pipeline->name, "stage",
            s->name, "queue", s->queue, "id", PQgetvalue(r, i, SL_TR_ID),
            "status", PQgetvalue(r, i, SL_TR_STATUS));
        char *data = o ? sl_web_dumps(o) : NULL;
        json_decref(o);
        if (!data) continue;
        sl_buf f;
        sl_buf_init(&f);
        sl_buf_printf(&f, "id: %llu\nevent: job\ndata: %s\n\n",
                      (unsigned long long)(d->seq + 1), data);
        free(data);
        char *frame = sl_buf_failed(&f) ? NULL : sl_buf_steal(&f);
        sl_buf_free(&f);
        if (!frame) continue;
        d->seq++;
        size_t slot = d->seq % SL_DASH_RING;
        free(d->ring[slot]);
        d->ring[slot] = frame;
        emit(frame, arg);
        sent++;
    }
    /* The next poll starts at this one's now(), or at the last row when
     * the poll was cut at its limit. */
    d->cut = n == POLL_LIMIT;
    if (d->cut) {
        snprintf(d->since, sizeof d->since, "%s",
                 PQgetvalue(r, n - 1, SL_TR_UPDATED));
        snprintf(d->after, sizeof d->after, "%s",
                 PQgetvalue(r, n - 1, SL_TR_ID));
    } else if (n > 0) {
        /* Caught up: from this poll's now(), with the overlap. A cut
         * catch-up keeps its since instead (now() may be past rows that
         * commit late). */
        if (!d->after[0])
            snprintf(d->since, sizeof d->since, "%s",
                     PQgetvalue(r, 0, SL_TR_NOW));
        d->after[0] = '\0';
    }
    PQclear(r);
    return sent;
}

int sl_dash_replay(const sl_dash *d, uint64_t after,
                   void (*emit)(const char *frame, void *arg), void *arg) {
    if (after > d->seq) return -1;
    if (d->seq - after > SL_DASH_RING - 1) return -1;
    for (uint64_t k = after + 1; k <= d->seq; k++)
        emit(d->ring[k % SL_DASH_RING], arg);
    return 0;
}

char *sl_dash_counts(sl_dash *d, PGconn *c) {
    char err[512];
    int rc;
    json_t *v = sl_api_pipelines_json(d->m, c, &rc, err, sizeof err);
    if (!v) {
        sl_log(SL_LOG_WARN, "dashboard events: counts failed", "error", err,
               NULL);
        return NULL;
    }
    char *data = sl_web_dumps(v);
    json_decref(v);
    if (!data) return NULL;
    sl_buf f;
    sl_buf_init(&f);
    sl_buf_printf(&f, "event: counts\ndata: %s\n\n", data);
    free(data);
    char *frame = sl_buf_failed(&f) ? NULL : sl_buf_steal(&f);
    sl_buf_free(&f);
    return frame;
}

int sl_dash_behind(const sl_dash *d) { return d->cut; }

void sl_dash_reset(sl_dash *d) {
    d->since[0] = d->after[0] = '\0';
    d->cut = 0;
    d->seq += SL_DASH_RING; /* every earlier frame number is out of reach */
}
