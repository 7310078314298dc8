/* events.c - live subject events over SSE (events.h). */
#include "events.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "dash.h"
#include "error.h"
#include "jobs.h"
#include "log.h"
#include "ops.h"
#include "reads.h"
#include "web.h"
#include "webauth.h"

#define PING_EVERY_MS 15000
#define TURN_MS 1000
#define MAX_PENDING (256 * 1024) /* a stream that stops reading is closed */
#define DASH_POLL_MS 250        /* job transitions read at least this often */
#define DASH_COUNTS_MS 1000     /* counts sent at most this often */

typedef struct stream {
    struct stream *next;
    sl_events *ev;
    struct MHD_Connection *conn;
    const sl_pipeline *p;
    char id[SL_KEY_MAX]; /* the subject key, canonical */
    char last_id[24]; /* the state the client has, "" when none */
    sl_buf out;       /* bytes not yet handed to libmicrohttpd */
    size_t off;
    int suspended, dirty, ended;
    int64_t last_write_ms;
    /* A dashboard stream (GET /api/events; p is NULL): */
    int dash, replay, fresh; /* replay: has after; fresh: wants counts */
    int overflow;            /* frames dropped: reset once drained */
    uint64_t after;          /* Last-Event-ID: the last job frame seen */
} stream;

struct sl_events {
    const sl_model *m;
    sl_dbsource db;
    pthread_t thread;
    int started;
    int wake[2];        /* a pipe: a new stream, or stop */
    pthread_mutex_t mu; /* guards everything below */
    stream *streams;
    size_t nstreams, ndash;
    int stop;
    /* The dashboard streams' source (the events thread only, but ring
     * reads under mu): */
    sl_dash *dash;
    int dash_on; /* polling while a dashboard stream is open */
    int64_t polled_ms, counts_ms;
    int counts_dirty;
    char *counts; /* the last counts frame sent */
};

/* ---- the streams' side (the server's thread) ---------------------------- */

/* Appends text to s and resumes its connection; mu held. */
static void stream_put(stream *s, const char *text) {
    if (s->ended) return;
    if (s->out.len - s->off > MAX_PENDING) {
        /* The client stopped reading, or a burst outran it: a subject
         * stream ends; a dashboard stream drops frames until it drained
         * and is then told to reload (stream_read). */
        if (s->dash)
            s->overflow = 1;
        else
            s->ended = 1;
    } else if (!s->overflow) {
        sl_buf_puts(&s->out, text);
        s->last_write_ms = sl_now_ms();
    }
    if (s->suspended) {
        s->suspended = 0;
        MHD_resume_connection(s->conn);
    }
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream *s = cls;
    (void)pos;
    pthread_mutex_lock(&s->ev->mu);
    const char *all = sl_buf_str(&s->out);
    size_t have = sl_buf_failed(&s->out) ? 0 : s->out.len - s->off;
    ssize_t n;
    if (have) {
        n = (ssize_t)(have < max ? have : max);
        memcpy(buf, all + s->off, (size_t)n);
        s->off += (size_t)n;
        if (s->off == s->out.len) { /* all sent: start the buffer again */
            sl_buf_free(&s->out);
            sl_buf_init(&s->out);
            s->off = 0;
            if (s->overflow) {
                s->overflow = 0;
                sl_buf_puts(&s->out, "event: reset\ndata: {}\n\n");
            }
        }
    } else if (s->ended || sl_buf_failed(&s->out)) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing to send: leave the poll set until stream_put. */
        s->suspended = 1;
        MHD_suspend_connection(s->conn);
        n = 0;
    }
    pthread_mutex_unlock(&s->ev->mu);
    return n;
}

static void stream_free(void *cls) {
    stream *s = cls;
    sl_events *ev = s->ev;
    pthread_mutex_lock(&ev->mu);
    for (stream **pp = &ev->streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            ev->nstreams--;
            ev->ndash -= (size_t)s->dash;
            break;
        }
    pthread_mutex_unlock(&ev->mu);
    sl_buf_free(&s->out);
    free(s);
}

/* Who may follow subject id of p: a subject token for it, or an operator. */
static int authorised(struct MHD_Connection *conn, const sl_pipeline *p,
                      const char *id, const char **code, const char **why) {
    const char *token =
        MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "token");
    if (!token) {
        const char *a =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
        if (sl_webauth_role(a) != SL_WEB_NONE) return 1;
        *code = "unauthorized";
        *why = "a subject token (?token=) or an operator's Bearer token is "
               "required";
        return 0;
    }
    char signed_text[SL_WEBAUTH_SUBJECT_MAX];
    int rc = sl_webauth_subject_text(p, id, signed_text, sizeof signed_text);
    if (rc == 0)
        rc = sl_webauth_check(getenv("SLUICE_TOKEN_SECRET"), signed_text,
                              token, (int64_t)time(NULL));
    if (rc == 0) return 1;
    *code = rc == -SL_EREFUSED ? "token_expired" : "token_invalid";
    *why = rc == -SL_EREFUSED ? "the subject token has expired"
                              : "the subject token is not valid for this "
                                "subject";
    return 0;
}

/* Answers with the stream s (calloc'd, fields of its kind set; owned
 * from here on) and adds it to ev's list. */
static enum MHD_Result start_stream(sl_events *ev, struct MHD_Connection *conn,
                                    stream *s) {
    s->ev = ev;
    s->conn = conn;
    sl_buf_init(&s->out);
    sl_buf_puts(&s->out, "retry: 2000\n\n");
    s->last_write_ms = sl_now_ms();
    struct MHD_Response *r = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
    if (!r) {
        sl_buf_free(&s->out);
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Content-Security-Policy", SL_WEB_CSP);
    /* The widget runs on the application's pages; the token, not the
     * origin, authorises a subject's stream. The dashboard is same-site. */
    if (!s->dash) MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    pthread_mutex_lock(&ev->mu);
    s->next = ev->streams;
    ev->streams = s;
    ev->nstreams++;
    ev->ndash += (size_t)s->dash;
    pthread_mutex_unlock(&ev->mu);
    enum MHD_Result ok = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r); /* stream_free runs when the connection ends */
    if (write(ev->wake[1], "n", 1) < 0) { /* full pipe: already woken */
    }
    return ok;
}

enum MHD_Result sl_events_open(sl_events *ev, struct MHD_Connection *conn,
                               const char *pipeline, const char *id) {
    const sl_pipeline *p = sl_model_pipeline(ev->m, pipeline);
    if (!p || !p->has_subject || !p->subject.channel)
        return sl_web_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                            "no pipeline with a subject channel named '%s'",
                            pipeline);
    char key[SL_KEY_MAX];
    const char *code, *why;
    if (sl_key_canon(p->subject.key_type, id, key, &why) != 0)
        return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "the subject id is not %s", why);
    id = key;
    if (!authorised(conn, p, id, &code, &why))
        return sl_web_error(conn, MHD_HTTP_UNAUTHORIZED, code, "%s", why);
    stream *s = calloc(1, sizeof *s);
    if (!s) return MHD_NO;
    s->p = p;
    snprintf(s->id, sizeof s->id, "%s", id);
    const char *last =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Last-Event-ID");
    if (last) snprintf(s->last_id, sizeof s->last_id, "%s", last);
    s->dirty = 1;
    return start_stream(ev, conn, s);
}

enum MHD_Result sl_events_open_dash(sl_events *ev,
                                    struct MHD_Connection *conn) {
    const char *token =
        MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "token");
    const char *auth =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    char bearer[600];
    if (token) {
        snprintf(bearer, sizeof bearer, "Bearer %s", token);
        auth = bearer;
    }
    if (sl_webauth_role(auth) == SL_WEB_NONE)
        return sl_web_error(conn, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                            "the read or admin token is required (Bearer or"
                            " ?token=)");
    stream *s = calloc(1, sizeof *s);
    if (!s) return MHD_NO;
    s->dash = 1;
    s->fresh = 1;
    const char *last =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Last-Event-ID");
    if (last && *last) {
        char *end;
        unsigned long long v = strtoull(last, &end, 10);
        if (!*end) {
            s->replay = 1;
            s->after = v;
        }
    }
    return start_stream(ev, conn, s);
}

/* ---- the listening thread ----------------------------------------------- */

/* A subject whose row is to be read, and what it showed. */
typedef struct want {
    const sl_pipeline *p;
    char id[SL_KEY_MAX];
    char event_id[24]; /* "" when the row is missing or unreadable */
    char *frame;       /* the SSE frame, malloc'd */
    int missing;
} want;

/* FNV-1a over the state: the event id names the state itself, so a
 * client's Last-Event-ID says which state it has seen. */
static void state_id(const char *a, const char *b, const char *c,
                     char out[24]) {
    uint64_t h = 1469598103934665603ULL;
    const char *parts[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        for (const char *q = parts[i] ? parts[i] : "\x01"; *q; q++)
            h = (h ^ (unsigned char)*q) * 1099511628211ULL;
        h = (h ^ 0x1f) * 1099511628211ULL;
    }
    snprintf(out, 24, "%016llx", (unsigned long long)h);
}

/* Reads w's row on c and builds its frame. */
static void read_want(PGconn *c, want *w) {
    PGresult *r = NULL;
    char err[512];
    if (sl_reads_subject(c, w->p, w->id, &r, err, sizeof err) != 0) {
        sl_log(SL_LOG_WARN, "event stream read failed", "error", err, NULL);
        return;
    }
    if (PQntuples(r) != 1) {
        w->missing = 1;
        PQclear(r);
        return;
    }
    const char *st = PQgetisnull(r, 0, SL_SUBJ_STATUS)
                         ? NULL
                         : PQgetvalue(r, 0, SL_SUBJ_STATUS);
    const char *pr = PQgetisnull(r, 0, SL_SUBJ_PROGRESS)
                         ? NULL
                         : PQgetvalue(r, 0, SL_SUBJ_PROGRESS);
    const char *de = PQgetisnull(r, 0, SL_SUBJ_DETAIL)
                         ? NULL
                         : PQgetvalue(r, 0, SL_SUBJ_DETAIL);
    state_id(st, pr, de, w->event_id);
    json_t *o = json_object();
    json_object_set_new(o, "status", st ? json_string(st) : json_null());
    json_object_set_new(o, "progress",
                        pr ? json_integer(atoll(pr)) : json_null());
    json_object_set_new(o, "detail", de ? json_string(de) : json_null());
    char *data = sl_web_dumps(o);
    json_decref(o);
    PQclear(r);
    if (!data) return;
    sl_buf f;
    sl_buf_init(&f);
    sl_buf_printf(&f, "id: %s\nevent: status\ndata: %s\n\n", w->event_id, data);
    free(data);
    w->frame = sl_buf_failed(&f) ? NULL : sl_buf_steal(&f);
    sl_buf_free(&f);
}

static PGconn *listen_connect(sl_events *ev) {
    char err[512];
    PGconn *c = sl_db_connect(ev->db, err, sizeof err);
    if (!c) return NULL;
    PGresult *r = PQexec(c, "SET statement_timeout = '2s'");
    PQclear(r);
    for (size_t i = 0; i < ev->m->npipelines; i++) {
        const sl_pipeline *p = &ev->m->pipelines[i];
        if (!p->has_subject || !p->subject.channel) continue;
        if (sl_reads_listen_subject(c, p, err, sizeof err) != 0) {
            sl_log(SL_LOG_WARN, "event streams cannot LISTEN", "error", err,
                   NULL);
            PQfinish(c);
            return NULL;
        }
    }
    /* The stages' channels too, and the one of pause and resume: an
     * insert or a return to pending wakes the dashboard's poll at once. */
    for (size_t i = 0; i <= ev->m->npipelines; i++)
        for (size_t k = 0;
             i == ev->m->npipelines ? k < 1 : k < ev->m->pipelines[i].nstages;
             k++) {
            sl_buf q;
            sl_buf_init(&q);
            sl_buf_puts(&q, "LISTEN ");
            sl_buf_ident(&q, i == ev->m->npipelines
                                 ? SL_OPS_CHANNEL
                                 : ev->m->pipelines[i].stages[k].channel);
            r = PQexec(c, sl_buf_str(&q));
            sl_buf_free(&q);
            int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            if (!ok)
                sl_log(SL_LOG_WARN, "event streams cannot LISTEN", "error",
                       sl_db_error(c, r, err, sizeof err), NULL);
            PQclear(r);
            if (!ok) {
                PQfinish(c);
                return NULL;
            }
        }
    return c;
}

/* Marks dirty the streams of the pipeline whose channel is `channel`
 * (every stream when channel is NULL); mu held. */
static void mark(sl_events *ev, const char *channel) {
    for (stream *s = ev->streams; s; s = s->next)
        if (!s->dash &&
            (!channel || strcmp(s->p->subject.channel, channel) == 0))
            s->dirty = 1;
}

/* Reads each dirty stream's subject once and sends what changed. */
static void refresh(sl_events *ev, PGconn *c) {
    size_t n = 0, cap = 0;
    want *w = NULL;
    pthread_mutex_lock(&ev->mu);
    for (stream *s = ev->streams; s; s = s->next) {
        if (!s->dirty) continue;
        s->dirty = 0;
        size_t k = 0;
        while (k < n && !(w[k].p == s->p && strcmp(w[k].id, s->id) == 0))
            k++;
        if (k < n) continue;
        if (n == cap) {
            want *nw = realloc(w, (cap = cap ? cap * 2 : 16) * sizeof *w);
            if (!nw) break;
            w = nw;
        }
        memset(&w[n], 0, sizeof w[n]);
        w[n].p = s->p;
        memcpy(w[n].id, s->id, sizeof w[n].id);
        n++;
    }
    pthread_mutex_unlock(&ev->mu);
    for (size_t k = 0; k < n; k++)
        read_want(c, &w[k]);
    pthread_mutex_lock(&ev->mu);
    for (stream *s = ev->streams; s; s = s->next)
        for (size_t k = 0; k < n && !s->dash; k++) {
            if (w[k].p != s->p || strcmp(w[k].id, s->id) != 0) continue;
            if (w[k].missing) {
                stream_put(s, "event: error\ndata: {\"code\":\"not_found\"}"
                              "\n\n");
                s->ended = 1;
            } else if (w[k].frame && strcmp(w[k].event_id, s->last_id)) {
                stream_put(s, w[k].frame);
                memcpy(s->last_id, w[k].event_id, sizeof s->last_id);
            }
        }
    int64_t t = sl_now_ms();
    for (stream *s = ev->streams; s; s = s->next)
        if (t - s->last_write_ms >= PING_EVERY_MS) stream_put(s, ": ping\n\n");
    pthread_mutex_unlock(&ev->mu);
    for (size_t k = 0; k < n; k++)
        free(w[k].frame);
    free(w);
}

/* ---- the dashboard's streams (GET /api/events) ------------------------- */

/* Puts frame on every dashboard stream that is not waiting for its
 * replay; mu held. */
static void emit_dash(const char *frame, void *arg) {
    sl_events *ev = arg;
    for (stream *s = ev->streams; s; s = s->next)
        if (s->dash && !s->replay) stream_put(s, frame);
}

static void emit_one(const char *frame, void *arg) { stream_put(arg, frame); }

/* Sends the frames of poll r (freed here), after the replays that new
 * streams asked for, so that a resumed stream gets its frames in order;
 * mu held. */
static void ingest(sl_events *ev, PGresult *r) {
    for (stream *s = ev->streams; s; s = s->next) {
        if (!s->dash || !s->replay) continue;
        if (sl_dash_replay(ev->dash, s->after, emit_one, s) != 0)
            stream_put(s, "event: reset\ndata: {}\n\n");
        s->replay = 0;
    }
    if (sl_dash_ingest(ev->dash, r, emit_dash, ev) > 0) ev->counts_dirty = 1;
}

/* Reads the job transitions (every DASH_POLL_MS, or at once after a
 * NOTIFY) and the counts (at most every DASH_COUNTS_MS, when something
 * changed or a stream is new) and sends them. */
static void dash_turn(sl_events *ev, PGconn *c, int notified) {
    pthread_mutex_lock(&ev->mu);
    /* No dashboard stream open: no reads. The next one starts afresh
     * (an old Last-Event-ID then gets a reset: what happened meanwhile
     * was not read). */
    if (ev->dash_on && !ev->ndash) sl_dash_reset(ev->dash);
    ev->dash_on = ev->ndash > 0;
    int on = ev->dash_on, fresh = 0;
    for (stream *s = ev->streams; s; s = s->next)
        fresh |= s->dash && s->fresh;
    pthread_mutex_unlock(&ev->mu);
    int64_t t = sl_now_ms();
    if (!on || (!notified && !fresh && t - ev->polled_ms < DASH_POLL_MS))
        return;
    ev->polled_ms = t;
    if (notified) ev->counts_dirty = 1; /* an insert, a pause, a resume */
    PGresult *r = NULL;
    if (sl_dash_poll(ev->dash, c, &r) != 0) return;
    /* Behind (a burst larger than one poll): catch up at once, a few
     * polls per turn so that the subject streams are not held up. */
    for (int k = 1;; k++) {
        pthread_mutex_lock(&ev->mu);
        ingest(ev, r); /* frees r */
        pthread_mutex_unlock(&ev->mu);
        /* Poll again only for a result that will be ingested: the next
         * turn goes on from where this one's last ingest left off. */
        if (k == 8 || !sl_dash_behind(ev->dash) ||
            sl_dash_poll(ev->dash, c, &r) != 0)
            break;
    }
    if (!fresh && !(ev->counts_dirty && t - ev->counts_ms >= DASH_COUNTS_MS))
        return;
    char *frame = sl_dash_counts(ev->dash, c);
    if (!frame) return;
    ev->counts_ms = t;
    ev->counts_dirty = 0;
    int changed = !ev->counts || strcmp(ev->counts, frame) != 0;
    pthread_mutex_lock(&ev->mu);
    for (stream *s = ev->streams; s; s = s->next)
        if (s->dash && (s->fresh || changed)) {
            stream_put(s, frame);
            s->fresh = 0;
        }
    pthread_mutex_unlock(&ev->mu);
    free(ev->counts);
    ev->counts = frame;
}

static void *events_main(void *arg) {
    sl_events *ev = arg;
    PGconn *c = NULL;
    for (;;) {
        pthread_mutex_lock(&ev->mu);
        int stop = ev->stop;
        pthread_mutex_unlock(&ev->mu);
        if (stop) break;
        if (!c || PQstatus(c) != CONNECTION_OK) {
            if (c) PQfinish(c);
            c = listen_connect(ev);
            /* Notifications may have been missed: read everything. */
            pthread_mutex_lock(&ev->mu);
            mark(ev, NULL);
            pthread_mutex_unlock(&ev->mu);
        }
        struct pollfd fds[2] = {{.fd = ev->wake[0], .events = POLLIN},
                                {.fd = c ? PQsocket(c) : -1, .events = POLLIN}};
        poll(fds, 2, ev->dash_on ? DASH_POLL_MS : TURN_MS);
        if (fds[0].revents & POLLIN) {
            char junk[64];
            while (read(ev->wake[0], junk, sizeof junk) > 0) {
            }
        }
        if (c && PQconsumeInput(c) == 0) {
            PQfinish(c);
            c = NULL;
            continue;
        }
        PGnotify *nf;
        int notified = 0;
        while (c && (nf = PQnotifies(c)) != NULL) {
            pthread_mutex_lock(&ev->mu);
            mark(ev, nf->relname);
            pthread_mutex_unlock(&ev->mu);
            PQfreemem(nf);
            notified = 1;
        }
        if (c) refresh(ev, c);
        if (c) dash_turn(ev, c, notified);
    }
    if (c) PQfinish(c);
    return NULL;
}

/* ---- start and stop ------------------------------------------------------ */

int sl_events_start(const sl_model *m, sl_dbsource db, sl_events **out,
                    char *err, size_t errlen) {
    sl_events *ev = calloc(1, sizeof *ev);
    if (!ev) goto fail_alloc;
    ev->m = m;
    ev->db = db;
    if (!(ev->dash = sl_dash_new(m))) {
        free(ev);
        goto fail_alloc;
    }
    pthread_mutex_init(&ev->mu, NULL);
    if (pipe2(ev->wake, O_NONBLOCK | O_CLOEXEC) != 0) goto fail_pipe;
    if (pthread_create(&ev->thread, NULL, events_main, ev) != 0)
        goto fail_thread;
    ev->started = 1;
    *out = ev;
    return 0;
fail_thread:
    close(ev->wake[0]);
    close(ev->wake[1]);
fail_pipe:
    pthread_mutex_destroy(&ev->mu);
    sl_dash_free(ev->dash);
    free(ev);
fail_alloc:
    snprintf(err, errlen, "cannot start the event streams: %s",
             strerror(errno ? errno : ENOMEM));
    return -SL_ENOMEM;
}

size_t sl_events_streams(sl_events *ev) {
    pthread_mutex_lock(&ev->mu);
    size_t n = ev->nstreams;
    pthread_mutex_unlock(&ev->mu);
    return n;
}

void sl_events_shutdown(sl_events *ev) {
    if (!ev || !ev->started) return;
    pthread_mutex_lock(&ev->mu);
    ev->stop = 1;
    for (stream *s = ev->streams; s; s = s->next) {
        s->ended = 1;
        if (s->suspended) {
            s->suspended = 0;
            MHD_resume_connection(s->conn);
        }
    }
    pthread_mutex_unlock(&ev->mu);
    if (write(ev->wake[1], "s", 1) < 0) {
    }
    pthread_join(ev->thread, NULL);
    ev->started = 0;
}

void sl_events_free(sl_events *ev) {
    if (!ev) return;
    assert(!ev->started);
    close(ev->wake[0]);
    close(ev->wake[1]);
    pthread_mutex_destroy(&ev->mu);
    sl_dash_free(ev->dash);
    free(ev->counts);
    free(ev);
}
