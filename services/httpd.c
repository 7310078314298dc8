/* httpd.c - the embedded HTTP server (httpd.h). */
#include "httpd.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "buf.h"
#include "clock.h"
#include "error.h"
#include "events.h"
#include "gauges.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "ops.h"
#include "runtime.h"
#include "schema.h"
#include "web.h"
#include "webassets.h"

#define CHECK_EVERY_MS 1000
#define SCHEMA_EVERY_MS 15000
#define GAUGES_EVERY_MS 15000
/* The statistics rollup (ops.h): every 10 s the elected server recomputes
 * the last 2 minutes, the last hour on its first turn. */
#define ROLLUP_EVERY_MS 10000
#define ROLLUP_LOCK_KEY 7310838339472541699LL /* "sluice-rollup" */
#define BODY_MAX (64 * 1024) /* the largest request body (JSON) */

struct sl_httpd {
    sl_httpd_opts o;
    struct MHD_Daemon *d;
    unsigned port;
    sl_api *api;       /* /api/..., used on the server's thread only */
    sl_events *events; /* /api/subjects/P/ID/events */
    pthread_t checker;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    int stop;
    char db_problem[512];     /* "" when the database answered */
    char schema_problem[512]; /* "" when the schema is what m needs */
    int checked;              /* the first round of checks has run */
    int leader;               /* this process computes the gauges */
    sl_stage_gauges *gauges;  /* one per stage of the model */
    size_t ngauges;
};

/* ---- the checker thread ------------------------------------------------ */

static void set_problem(sl_httpd *h, char *slot, const char *text) {
    pthread_mutex_lock(&h->mu);
    snprintf(slot, 512, "%.500s", text);
    pthread_mutex_unlock(&h->mu);
}

static PGconn *checker_connect(sl_httpd *h) {
    char err[512];
    PGconn *c = sl_db_connect(h->o.db, err, sizeof err);
    if (!c) {
        set_problem(h, h->db_problem, err);
        return NULL;
    }
    PGresult *r = PQexec(c, "SET statement_timeout = '2s'");
    PQclear(r);
    return c;
}

static void read_gauges(sl_httpd *h, PGconn *c) {
    const sl_model *m = h->o.model;
    int leader = sl_gauges_elect(c);
    size_t k = 0;
    sl_stage_gauges *fresh = calloc(h->ngauges ? h->ngauges : 1, sizeof *fresh);
    if (!fresh) return;
    for (size_t i = 0; leader == 1 && i < m->npipelines; i++)
        for (size_t j = 0; j < m->pipelines[i].nstages; j++, k++) {
            char err[512];
            if (sl_gauges_read(c, &m->pipelines[i].stages[j], &fresh[k], err,
                               sizeof err) != 0)
                fresh[k].stage = NULL; /* missing table: no series */
        }
    pthread_mutex_lock(&h->mu);
    h->leader = leader == 1;
    memcpy(h->gauges, fresh, h->ngauges * sizeof *fresh);
    pthread_mutex_unlock(&h->mu);
    free(fresh);
}

/* One turn of the rollup when this server is elected. */
static void rollup(sl_httpd *h, PGconn *c, int *first) {
    if (sl_db_elect(c, ROLLUP_LOCK_KEY) != 1) return;
    char err[512];
    int rc = sl_ops_rollup(c, h->o.model, *first ? 60 : 2, err, sizeof err);
    /* A first turn that failed (too long for the statement timeout) is
     * not repeated: the short window goes on from the next turn. */
    *first = 0;
    if (rc != 0)
        sl_log(SL_LOG_WARN, "statistics rollup failed", "error", err, NULL);
}

static void *checker_main(void *arg) {
    sl_httpd *h = arg;
    PGconn *c = NULL;
    int64_t next_schema = 0, next_gauges = 0, next_rollup = 0;
    int first_rollup = 1;
    for (;;) {
        int64_t t = sl_now_ms();
        if (!c || PQstatus(c) != CONNECTION_OK) {
            if (c) PQfinish(c);
            c = checker_connect(h);
            next_schema = next_gauges = t;
        }
        if (c) {
            PGresult *r = PQexec(c, "SELECT 1");
            if (PQresultStatus(r) == PGRES_TUPLES_OK) {
                set_problem(h, h->db_problem, "");
            } else {
                char m[512], msg[600];
                snprintf(msg, sizeof msg, "database unreachable: %s",
                         sl_db_error(c, r, m, sizeof m));
                set_problem(h, h->db_problem, msg);
                PQfinish(c);
                c = NULL;
            }
            PQclear(r);
        }
        if (c && t >= next_schema) {
            char err[512];
            int rc = sl_migrate_check(c, h->o.model, err, sizeof err);
            if (rc != -SL_ECONN && rc != -SL_EDB)
                set_problem(h, h->schema_problem, rc == 0 ? "" : err);
            next_schema = t + SCHEMA_EVERY_MS;
        }
        if (c && t >= next_gauges) {
            read_gauges(h, c);
            next_gauges = t + GAUGES_EVERY_MS;
        }
        /* Not on the first turn: /readyz waits for that one. (checked is
         * written by this thread only.) */
        if (c && t >= next_rollup && h->checked) {
            rollup(h, c, &first_rollup);
            next_rollup = t + ROLLUP_EVERY_MS;
        }
        pthread_mutex_lock(&h->mu);
        h->checked = 1;
        struct timespec until;
        sl_deadline(&until, CHECK_EVERY_MS);
        while (!h->stop &&
               pthread_cond_timedwait(&h->cv, &h->mu, &until) != ETIMEDOUT) {
        }
        int stop = h->stop;
        pthread_mutex_unlock(&h->mu);
        if (stop) break;
    }
    if (c) PQfinish(c);
    return NULL;
}

/* ---- pages --------------------------------------------------------------- */

static void render_gauges(sl_httpd *h, sl_buf *b) {
    sl_buf_puts(b, "# HELP sluice_gauges_leader 1 when this process computes"
                   " the queue gauges (sluice_jobs, sluice_oldest_due_"
                   "seconds).\n# TYPE sluice_gauges_leader gauge\n");
    pthread_mutex_lock(&h->mu);
    sl_buf_printf(b, "sluice_gauges_leader %d\n", h->leader);
    sl_buf_puts(b, "# HELP sluice_jobs Jobs in the queue by status.\n"
                   "# TYPE sluice_jobs gauge\n");
    for (size_t i = 0; h->leader && i < h->ngauges; i++) {
        const sl_stage *s = h->gauges[i].stage;
        if (!s) continue;
        for (int k = 0; k < SL_GAUGE_STATUSES; k++)
            sl_buf_printf(b,
                          "sluice_jobs{pipeline=\"%s\",stage=\"%s\","
                          "status=\"%s\"} %ld\n",
                          s->pipeline->name, s->name, sl_job_status_values[k],
                          h->gauges[i].count[k]);
    }
    sl_buf_puts(b, "# HELP sluice_oldest_due_seconds Age of the oldest job"
                   " that is due and not yet claimed.\n"
                   "# TYPE sluice_oldest_due_seconds gauge\n");
    for (size_t i = 0; h->leader && i < h->ngauges; i++) {
        const sl_stage *s = h->gauges[i].stage;
        if (s)
            sl_buf_printf(b,
                          "sluice_oldest_due_seconds{pipeline=\"%s\","
                          "stage=\"%s\"} %.3f\n",
                          s->pipeline->name, s->name,
                          h->gauges[i].oldest_due_s);
    }
    pthread_mutex_unlock(&h->mu);
}

/* The process is alive when its control loop turned recently. */
static int health(sl_httpd *h, sl_buf *b) {
    if (!h->o.with_runtime) {
        sl_buf_puts(b, "ok\n");
        return MHD_HTTP_OK;
    }
    sl_runtime_health_t rh;
    sl_runtime_health(&rh);
    int64_t age = rh.last_tick_ms ? sl_now_ms() - rh.last_tick_ms : -1;
    if (age >= 0 && age <= 10000) {
        sl_buf_puts(b, "ok\n");
        return MHD_HTTP_OK;
    }
    if (age < 0)
        sl_buf_puts(b, "not alive: the runtime has not started\n");
    else
        sl_buf_printf(b, "not alive: the control loop last turned %lld ms "
                         "ago\n", (long long)age);
    return MHD_HTTP_SERVICE_UNAVAILABLE;
}

static int readiness(sl_httpd *h, sl_buf *b) {
    int code = MHD_HTTP_OK;
    pthread_mutex_lock(&h->mu);
    if (!h->checked) {
        sl_buf_puts(b, "not ready: the first checks have not run yet\n");
        code = MHD_HTTP_SERVICE_UNAVAILABLE;
    } else if (h->db_problem[0]) {
        sl_buf_printf(b, "not ready: %s\n", h->db_problem);
        code = MHD_HTTP_SERVICE_UNAVAILABLE;
    } else if (h->schema_problem[0]) {
        sl_buf_printf(b, "not ready: %s\n", h->schema_problem);
        code = MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    pthread_mutex_unlock(&h->mu);
    if (code == MHD_HTTP_OK && h->o.with_runtime) {
        sl_runtime_health_t rh;
        sl_runtime_health(&rh);
        if (!rh.listening) {
            sl_buf_puts(b, "not ready: LISTEN is not established\n");
            code = MHD_HTTP_SERVICE_UNAVAILABLE;
        }
    }
    if (code == MHD_HTTP_OK) sl_buf_puts(b, "ready\n");
    return code;
}

static enum MHD_Result reply(struct MHD_Connection *conn, int code,
                             const char *type, sl_buf *b) {
    size_t len = sl_buf_failed(b) ? 0 : strlen(sl_buf_str(b));
    char *body = len ? sl_buf_steal(b) : NULL;
    return sl_web_reply(conn, (unsigned)code, type, body, len, 1, NULL);
}

/* A request's body as it arrives (only /api/ routes take one). */
typedef struct request {
    sl_buf body;
    size_t len;
    int too_big;
} request;

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **req_cls, enum MHD_RequestTerminationCode t) {
    (void)cls;
    (void)conn;
    (void)t;
    request *rq = *req_cls;
    if (rq) {
        sl_buf_free(&rq->body);
        free(rq);
        *req_cls = NULL;
    }
}

/* Routes /api/... and /widget.js; NULL-free url. */
static enum MHD_Result web_route(sl_httpd *h, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 request *rq) {
    if (rq->too_big)
        return sl_web_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
                            "the body is over %d bytes", BODY_MAX);
    if (sl_webassets_has(url)) {
        if (strcmp(method, "GET") && strcmp(method, "HEAD"))
            return sl_web_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                                "method_not_allowed", "use GET");
        return sl_webassets_serve(conn, url);
    }
    if (strcmp(url, "/api/events") == 0 && strcmp(method, "GET") == 0)
        return sl_events_open_dash(h->events, conn);
    /* /api/subjects/PIPELINE/ID/events */
    size_t n = strlen(url);
    if (strncmp(url, "/api/subjects/", 14) == 0 && n > 21 &&
        strcmp(url + n - 7, "/events") == 0 && strcmp(method, "GET") == 0) {
        char rest[SL_IDENT_MAX + 1 + SL_KEY_MAX], *slash;
        if (n - 21 >= sizeof rest)
            return sl_web_error(conn, MHD_HTTP_BAD_REQUEST, "bad_request",
                                "the pipeline name or subject id is too long");
        snprintf(rest, sizeof rest, "%.*s", (int)(n - 21), url + 14);
        if ((slash = strchr(rest, '/')) != NULL && !strchr(slash + 1, '/')) {
            *slash = '\0';
            return sl_events_open(h->events, conn, rest, slash + 1);
        }
    }
    return sl_api_handle(h->api, conn, method, url,
                         rq->len ? sl_buf_str(&rq->body) : NULL, rq->len);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls) {
    sl_httpd *h = cls;
    (void)version;
    if (*req_cls == NULL) { /* headers only so far */
        request *rq = calloc(1, sizeof *rq);
        if (!rq) return MHD_NO;
        sl_buf_init(&rq->body);
        *req_cls = rq;
        return MHD_YES;
    }
    request *rq = *req_cls;
    if (*upload_size) {
        if (rq->len + *upload_size > BODY_MAX)
            rq->too_big = 1;
        else {
            sl_buf_putn(&rq->body, upload, *upload_size);
            rq->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (strncmp(url, "/api/", 5) == 0 || sl_webassets_has(url))
        return web_route(h, conn, url, method, rq);
    sl_buf b;
    sl_buf_init(&b);
    enum MHD_Result rc;
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (!get) {
        sl_buf_puts(&b, "method not allowed\n");
        rc = reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", &b);
    } else if (strcmp(url, "/metrics") == 0) {
        sl_metrics_render(&b);
        render_gauges(h, &b);
        sl_buf_printf(&b, "# HELP sluice_event_streams Open subject event"
                          " streams (SSE).\n# TYPE sluice_event_streams"
                          " gauge\nsluice_event_streams %zu\n",
                      sl_events_streams(h->events));
        rc = reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4", &b);
    } else if (strcmp(url, "/healthz") == 0) {
        int code = health(h, &b);
        rc = reply(conn, code, "text/plain", &b);
    } else if (strcmp(url, "/readyz") == 0) {
        int code = readiness(h, &b);
        rc = reply(conn, code, "text/plain", &b);
    } else {
        sl_buf_puts(&b, "not found\n");
        rc = reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", &b);
    }
    sl_buf_free(&b);
    return rc;
}

/* ---- start and stop ---------------------------------------------------- */

/* Splits "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT" and resolves it
 * (numeric addresses and names such as localhost). */
static int parse_listen(const char *listen, struct sockaddr_storage *sa,
                        socklen_t *salen, char *err, size_t errlen) {
    char host[256] = "127.0.0.1", port[16];
    const char *colon = strrchr(listen, ':');
    if (!colon) {
        snprintf(port, sizeof port, "%s", listen);
    } else {
        size_t hl = (size_t)(colon - listen);
        if (hl > 0) {
            if (listen[0] == '[' && hl >= 2 && listen[hl - 1] == ']') {
                listen++;
                hl -= 2;
            }
            if (hl >= sizeof host) goto bad;
            memcpy(host, listen, hl);
            host[hl] = '\0';
        }
        snprintf(port, sizeof port, "%s", colon + 1);
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!port[0] || *end || p < 0 || p > 65535) goto bad;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) goto bad;
    memcpy(sa, ai->ai_addr, ai->ai_addrlen);
    *salen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
bad:
    snprintf(err, errlen,
             "cannot listen on '%s': expected HOST:PORT, :PORT or PORT "
             "(port 0-65535)",
             listen);
    return -SL_EINVAL;
}

int sl_httpd_start(const sl_httpd_opts *o, sl_httpd **out, char *err,
                   size_t errlen) {
    assert(o && o->listen && o->model && out);
    struct sockaddr_storage sa;
    socklen_t salen;
    int rc = parse_listen(o->listen, &sa, &salen, err, errlen);
    if (rc != 0) return rc;
    sl_httpd *h = calloc(1, sizeof *h);
    if (!h) return -SL_ENOMEM;
    h->o = *o;
    for (size_t i = 0; i < o->model->npipelines; i++)
        h->ngauges += o->model->pipelines[i].nstages;
    h->gauges = calloc(h->ngauges ? h->ngauges : 1, sizeof *h->gauges);
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    h->api = sl_api_new(o->model, o->db);
    if (!h->api || sl_events_start(o->model, o->db, &h->events, err,
                                   errlen) != 0) {
        if (!h->api) snprintf(err, errlen, "out of memory");
        sl_httpd_stop(h);
        return -SL_ENOMEM;
    }
    /* Suspend/resume: event streams wait without a thread (events.h).
     * SL_HTTPD_THREADS polling threads share the connections, each with
     * its own API database connection (api.h). */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
                     MHD_ALLOW_SUSPEND_RESUME;
    if (sa.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &sa,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)SL_HTTPD_THREADS,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)2048,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)64,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
    if (!h->d || !h->gauges) {
        snprintf(err, errlen, "cannot listen on %s: %s", o->listen,
                 h->gauges ? strerror(errno) : "out of memory");
        sl_httpd_stop(h);
        return -SL_EIO;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    if (pthread_create(&h->checker, NULL, checker_main, h) != 0) {
        snprintf(err, errlen, "cannot start the checker thread");
        MHD_stop_daemon(h->d);
        h->d = NULL;
        sl_httpd_stop(h);
        return -SL_ENOMEM;
    }
    char port[16];
    snprintf(port, sizeof port, "%u", h->port);
    sl_log(SL_LOG_INFO, "http server listening", "address", o->listen, "port",
           port, NULL);
    *out = h;
    return 0;
}

unsigned sl_httpd_port(const sl_httpd *h) { return h->port; }

void sl_httpd_stop(sl_httpd *h) {
    if (!h) return;
    if (h->d) {
        pthread_mutex_lock(&h->mu);
        h->stop = 1;
        pthread_cond_signal(&h->cv);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->checker, NULL);
        sl_events_shutdown(h->events);
        MHD_stop_daemon(h->d);
    }
    sl_events_shutdown(h->events); /* no-op when already stopped */
    sl_events_free(h->events);
    sl_api_free(h->api);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h->gauges);
    free(h);
}
