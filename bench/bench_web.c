/* bench_web.c - the dashboard server's benchmark driver (scripts/bench-web,
 * docs/performance.md): N concurrent /api/events streams on the one
 * server thread, the time from a job's commit to its `job` event on every
 * stream (p50/p99), the server's RSS, and the p50/p99 of GET /api/jobs.
 * Prints figures; never fails on them.
 *
 * usage: sluice-bench-web PORT READ_TOKEN SERVER_PID STREAMS ROUNDS
 *                         [--jobs-only]   (REQUESTS: per job-list variant,
 *                         default 50)
 * The database (PG* environment) has the queue bw_jobs (bench/pipelines/
 * bench_web.yaml) migrated; `sluice serve` listens on 127.0.0.1:PORT. */
#include <curl/curl.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long rss_kb(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
    if (!n) return 0;
    qsort(v, n, sizeof *v, cmp);
    size_t k = (size_t)(p * (double)(n - 1) + 0.5);
    return v[k];
}

typedef struct stream {
    CURL *h;
    char tail[1024]; /* the last bytes seen, for needles split by chunks */
    size_t tlen;
    int counted;     /* saw the first counts frame */
    int got;         /* saw the current needle */
} stream;

static char needle[128];
static double t_commit;
static double *lat;
static size_t nlat;

static size_t on_body(char *d, size_t sz, size_t n, void *arg) {
    stream *s = arg;
    size_t len = sz * n;
    for (size_t off = 0; off < len;) {
        size_t room = sizeof s->tail - 1 - s->tlen;
        size_t k = len - off < room ? len - off : room;
        memcpy(s->tail + s->tlen, d + off, k);
        s->tlen += k;
        off += k;
        s->tail[s->tlen] = '\0';
        if (strstr(s->tail, "event: counts")) s->counted = 1;
        if (needle[0] && !s->got && strstr(s->tail, needle)) {
            s->got = 1;
            lat[nlat++] = now_ms() - t_commit;
        }
        if (s->tlen > 512) { /* keep the last 256 bytes */
            memmove(s->tail, s->tail + s->tlen - 256, 256);
            s->tlen = 256;
            s->tail[256] = '\0';
        }
    }
    return len;
}

static size_t sink(char *d, size_t sz, size_t n, void *arg) {
    (void)d;
    (void)arg;
    return sz * n;
}

/* Drives m until done(arg) or timeout_ms; returns 1 when done. */
static int pump(CURLM *m, int (*done)(stream *, int), stream *ss, int n,
                double timeout_ms) {
    double until = now_ms() + timeout_ms;
    while (now_ms() < until) {
        int running;
        curl_multi_perform(m, &running);
        if (done(ss, n)) return 1;
        curl_multi_poll(m, NULL, 0, 5, NULL);
    }
    return 0;
}

static int all_counted(stream *ss, int n) {
    for (int i = 0; i < n; i++)
        if (!ss[i].counted) return 0;
    return 1;
}

static int all_got(stream *ss, int n) {
    for (int i = 0; i < n; i++)
        if (!ss[i].got) return 0;
    return 1;
}

static void jobs_route(int port, const char *token) {
    static const char *const paths[] = {
        "/api/jobs?limit=50", "/api/jobs?status=done&limit=50",
        "/api/jobs?status=error&limit=50", "/api/jobs?q=boom&limit=50"};
    char url[256], auth[160];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    struct curl_slist *hs = curl_slist_append(NULL, auth);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    int reqs = getenv("REQUESTS") ? atoi(getenv("REQUESTS")) : 50;
    if (reqs < 1 || reqs > 1000) reqs = 50;
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        double v[1000];
        long code = 0;
        for (int i = 0; i < reqs; i++) {
            snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, paths[p]);
            curl_easy_setopt(h, CURLOPT_URL, url);
            double t = now_ms();
            curl_easy_perform(h);
            v[i] = now_ms() - t;
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        }
        printf("GET %-36s HTTP %ld  p50 %7.1f ms  p99 %7.1f ms (%d requests)\n",
               paths[p], code, pct(v, (size_t)reqs, 0.5),
               pct(v, (size_t)reqs, 0.99), reqs);
        fflush(stdout);
    }
    curl_easy_cleanup(h);
    curl_slist_free_all(hs);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: sluice-bench-web PORT READ_TOKEN SERVER_PID"
                        " STREAMS ROUNDS [--jobs-only]\n");
        return 64;
    }
    int port = atoi(argv[1]), pid = atoi(argv[3]), n = atoi(argv[4]),
        rounds = atoi(argv[5]);
    const char *token = argv[2];
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (argc > 6 && strcmp(argv[6], "--jobs-only") == 0) {
        jobs_route(port, token);
        return 0;
    }
    PGconn *db = PQconnectdb("");
    if (PQstatus(db) != CONNECTION_OK) {
        fprintf(stderr, "bench-web: %s", PQerrorMessage(db));
        return 1;
    }
    long rss_idle = rss_kb(pid);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)n + 10);
    stream *ss = calloc((size_t)n, sizeof *ss);
    lat = calloc((size_t)n * (size_t)rounds + 1, sizeof *lat);
    char url[256], src[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/events?token=%s", port,
             token);
    for (int i = 0; i < n; i++) {
        ss[i].h = curl_easy_init();
        /* The server allows 64 connections per client address. */
        snprintf(src, sizeof src, "host!127.0.%d.%d", 1 + i / 60 / 250,
                 2 + (i / 60) % 250);
        curl_easy_setopt(ss[i].h, CURLOPT_URL, url);
        curl_easy_setopt(ss[i].h, CURLOPT_INTERFACE, src);
        curl_easy_setopt(ss[i].h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(ss[i].h, CURLOPT_WRITEDATA, &ss[i]);
        curl_multi_add_handle(m, ss[i].h);
    }
    double t0 = now_ms();
    int ok = pump(m, all_counted, ss, n, 120000);
    printf("%d event streams open in %.0f ms%s; server RSS %ld KiB idle,"
           " %ld KiB with the streams\n",
           n, now_ms() - t0, ok ? "" : " (NOT ALL)", rss_idle, rss_kb(pid));
    long peak = 0;
    int missed = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < n; i++)
            ss[i].got = 0;
        PGresult *res = PQexec(db, "INSERT INTO bw_jobs (note) VALUES ('b')"
                                   " RETURNING id");
        t_commit = now_ms(); /* autocommit: the INSERT has committed */
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "bench-web: %s", PQerrorMessage(db));
            return 1;
        }
        snprintf(needle, sizeof needle, "\"id\":\"%s\",\"status\":\"pending\"",
                 PQgetvalue(res, 0, 0));
        PQclear(res);
        if (!pump(m, all_got, ss, n, 10000)) missed++;
        long rss = rss_kb(pid);
        if (rss > peak) peak = rss;
    }
    printf("commit -> job event on every stream (%zu deliveries, %d rounds):"
           " p50 %.1f ms  p99 %.1f ms  max %.1f ms%s\n",
           nlat, rounds, pct(lat, nlat, 0.5), pct(lat, nlat, 0.99),
           pct(lat, nlat, 1.0), missed ? "  (SOME MISSED)" : "");
    printf("server RSS peak %ld KiB (%.1f MiB) with %d streams\n", peak,
           (double)peak / 1024, n);
    for (int i = 0; i < n; i++) {
        curl_multi_remove_handle(m, ss[i].h);
        curl_easy_cleanup(ss[i].h);
    }
    curl_multi_cleanup(m);
    PQfinish(db);
    return 0;
}
