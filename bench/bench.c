/* bench.c - sluice's benchmark: enqueue rate, processing rate, latency and
 * worker memory, against a real PostgreSQL. scripts/bench runs it; it
 * prints a table and never fails on a figure.
 *
 * usage: sluice-bench SLUICE_BINARY PIPELINE_DIR
 * (PG* environment: the database to use; it must be migrated.)
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static PGconn *db;

static void exec_ok(const char *sql) {
    PGresult *r = PQexec(db, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK &&
        PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench: %s\n  %s\n", PQresultErrorMessage(r), sql);
        exit(1);
    }
    PQclear(r);
}

static double scalar_d(const char *sql) {
    PGresult *r = PQexec(db, sql);
    double v = PQntuples(r) ? atof(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return v;
}

/* Runs `sluice run` until idle; returns its peak RSS in KiB. */
static long run_workers(const char *bin, const char *dir, const char *stage,
                        int conc, int batch, int idle, pid_t *out_pid,
                        int async) {
    char c[16], b[16];
    snprintf(c, sizeof c, "%d", conc);
    snprintf(b, sizeof b, "%d", batch);
    pid_t pid = fork();
    if (pid == 0) {
        if (idle)
            execl(bin, bin, "run", "-p", dir, "-s", stage, "-c", c, "-b", b,
                  "--exit-when-idle", "--allow-superuser", "--log-level", "warn",
                  async ? "--async-commit" : "--exit-when-idle", (char *)NULL);
        else
            execl(bin, bin, "run", "-p", dir, "-s", stage, "-c", c, "-b", b,
                  "--allow-superuser", "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    if (out_pid) {
        *out_pid = pid;
        return 0;
    }
    int st;
    struct rusage ru;
    wait4(pid, &st, 0, &ru);
    return ru.ru_maxrss;
}

/* Processes n pre-loaded no-op jobs of `queue` (stage `stage`); with
 * keys > 0 the jobs are spread over that many values of `account`. */
static void processing_q(const char *bin, const char *dir, const char *stage,
                         const char *queue, int keys, const char *label,
                         int n, int conc, int batch, int async) {
    char sql[512];
    snprintf(sql, sizeof sql, "TRUNCATE %s", queue);
    exec_ok(sql);
    if (keys > 0)
        snprintf(sql, sizeof sql,
                 "INSERT INTO %s (payload, account) SELECT NULL, 'a' ||"
                 " (g %% %d) FROM generate_series(1, %d) g",
                 queue, keys, n);
    else
        snprintf(sql, sizeof sql,
                 "INSERT INTO %s (payload) SELECT NULL FROM"
                 " generate_series(1, %d)", queue, n);
    exec_ok(sql);
    snprintf(sql, sizeof sql, "VACUUM ANALYZE %s", queue);
    exec_ok(sql);
    double t0 = now_s();
    long rss = run_workers(bin, dir, stage, conc, batch, 1, NULL, async);
    double wall = now_s() - t0;
    snprintf(sql, sizeof sql, "SELECT extract(epoch FROM max(finished_at) -"
             " min(started_at)) FROM %s", queue);
    double span = scalar_d(sql);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE status ="
             " 'done'", queue);
    double done = scalar_d(sql);
    printf("| process %-30s | %9.0f jobs/s | %6.0f of %d done, %.2fs (process "
           "%.2fs), peak RSS %.1f MiB |\n",
           label, done / span, done, n, span, wall, (double)rss / 1024.0);
    fflush(stdout);
}

static void processing(const char *bin, const char *dir, const char *label,
                       int n, int conc, int batch, int async) {
    processing_q(bin, dir, "noop", "bench_jobs", 0, label, n, conc, batch,
                 async);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median wall time of 5 runs of `sluice ARGS -p DIR`, in ms (the
 * whole process: loading the pipelines, connecting, the query). */
static double time_cli(const char *bin, const char *dir, const char *args) {
    char cmd[1024];
    double t[5];
    snprintf(cmd, sizeof cmd, "%s %s -p %s >/dev/null", bin, args, dir);
    for (int i = 0; i < 5; i++) {
        double t0 = now_s();
        if (system(cmd) != 0) fprintf(stderr, "bench: failed: %s\n", cmd);
        t[i] = (now_s() - t0) * 1000.0;
    }
    qsort(t, 5, sizeof t[0], cmp_d);
    return t[2];
}

/* Listings and statistics over BENCH_HISTORY_ROWS (default 2,000,000; 0
 * skips) finished jobs, one a second back from now (90 % done, 9 % error,
 * 1 % cancelled), and 1,000 pending ones. */
static void listing(const char *bin, const char *dir) {
    long n = getenv("BENCH_HISTORY_ROWS") ? atol(getenv("BENCH_HISTORY_ROWS"))
                                          : 2000000;
    if (n <= 0) return;
    char sql[1024];
    exec_ok("TRUNCATE bench_jobs");
    double t0 = now_s();
    snprintf(sql, sizeof sql,
             "INSERT INTO bench_jobs (payload, status, attempts, started_at,"
             " finished_at, created_at, updated_at) SELECT NULL, CASE WHEN g"
             " %% 100 = 0 THEN 'cancelled' WHEN g %% 100 < 10 THEN 'error'"
             " ELSE 'done' END::job_status, 1, t - interval '1 second', t,"
             " t - interval '2 seconds', t FROM generate_series(1, %ld) g,"
             " LATERAL (SELECT now() - g * interval '1 second' AS t) x",
             n);
    exec_ok(sql);
    exec_ok("INSERT INTO bench_jobs (payload) SELECT NULL FROM"
            " generate_series(1, 1000)");
    exec_ok("VACUUM ANALYZE bench_jobs");
    printf("| load finished jobs               | %9.1f s      | %ld rows"
           " (generate_series INSERT, VACUUM ANALYZE) |\n",
           now_s() - t0, n);
    static const char *const cmds[] = {
        "jobs --limit 50", "jobs --limit 50 --status pending",
        "jobs --limit 50 --status error", "stats"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        printf("| `%-31s` | %9.1f ms    | median of 5, whole process, %ld"
               " finished rows |\n",
               cmds[i], time_cli(bin, dir, cmds[i]), n);
    fflush(stdout);
    exec_ok("TRUNCATE bench_jobs");
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sluice-bench SLUICE_BINARY PIPELINE_DIR\n");
        return 64;
    }
    const char *bin = argv[1], *dir = argv[2];
    int n_jobs = getenv("BENCH_JOBS") ? atoi(getenv("BENCH_JOBS")) : 20000;
    db = PQconnectdb("");
    if (PQstatus(db) != CONNECTION_OK) {
        fprintf(stderr, "bench: %s", PQerrorMessage(db));
        return 1;
    }
    /* BENCH_ONLY=policy or BENCH_ONLY=listing: only those rows. */
    const char *only = getenv("BENCH_ONLY");
    int all = !only || !*only;
    printf("| measure                          | figure         | notes |\n");
    printf("|----------------------------------|----------------|-------|\n");

    if (!all && strcmp(only, "policy") == 0) goto policy;
    if (!all && strcmp(only, "listing") == 0) goto listing;

    /* Enqueue one at a time: one prepared INSERT per job, autocommit. */
    exec_ok("TRUNCATE bench_jobs");
    PGresult *r = PQprepare(db, "ins", "INSERT INTO bench_jobs (payload)"
                                       " VALUES ($1::jsonb)", 1, NULL);
    PQclear(r);
    int single = 5000;
    double t0 = now_s();
    for (int i = 0; i < single; i++) {
        const char *v[1] = {"{\"n\":1}"};
        r = PQexecPrepared(db, "ins", 1, v, NULL, NULL, 0);
        PQclear(r);
    }
    double dt = now_s() - t0;
    printf("| enqueue one at a time            | %9.0f jobs/s | %d single-row"
           " INSERTs, each its own commit |\n", single / dt, single);

    /* Bulk: one INSERT of n rows. */
    exec_ok("TRUNCATE bench_jobs");
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO bench_jobs (payload) SELECT jsonb_build_object('n',"
             " g) FROM generate_series(1, %d) g", n_jobs);
    t0 = now_s();
    exec_ok(sql);
    dt = now_s() - t0;
    printf("| enqueue bulk                     | %9.0f jobs/s | one INSERT of "
           "%d rows |\n", n_jobs / dt, n_jobs);

    processing(bin, dir, "(default: -c 16 -b 1)", n_jobs, 16, 1, 0);
    processing(bin, dir, "(-c 4 -b 100)", n_jobs, 4, 100, 0);
    processing(bin, dir, "(-c 16 -b 50)", n_jobs, 16, 50, 0);
    processing(bin, dir, "(-c 16 -b 1 --async-commit)", n_jobs, 16, 1, 1);
    processing(bin, dir, "(-c 4 -b 100 --async-commit)", n_jobs, 4, 100, 1);
policy:
    /* What fair share and a per-key limit cost: the same no-op jobs spread
     * over 100 accounts (the limit never binds), against the plain stage
     * with the same job count: BENCH_POLICY_JOBS (default 5000) jobs; 0
     * skips the rows. */
    int np = getenv("BENCH_POLICY_JOBS") ? atoi(getenv("BENCH_POLICY_JOBS"))
                                         : 5000;
    if (np > 0) {
        static const struct {
            const char *stage, *queue, *label;
            int conc, batch;
        } rows[] = {
            {"noop", "bench_jobs", "plain, N jobs (-c 16 -b 1)", 16, 1},
            {"fair", "bench_fair_jobs", "fair, 100 keys (-c 16 -b 1)", 16, 1},
            {"limited", "bench_limited_jobs", "limit, 100 keys (-c 16 -b 1)",
             16, 1},
            {"noop", "bench_jobs", "plain, N jobs (-c 4 -b 100)", 4, 100},
            {"fair", "bench_fair_jobs", "fair, 100 keys (-c 4 -b 100)", 4,
             100},
            {"limited", "bench_limited_jobs", "limit, 100 keys (-c 4 -b 100)",
             4, 100},
        };
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
            processing_q(bin, dir, rows[i].stage, rows[i].queue,
                         strcmp(rows[i].stage, "noop") ? 100 : 0,
                         rows[i].label, np, rows[i].conc, rows[i].batch, 0);
    }

    if (!all) goto done;

    /* Latency: commit of a single enqueue -> the claim that starts it. */
    exec_ok("TRUNCATE bench_jobs");
    pid_t w;
    run_workers(bin, dir, "noop", 16, 1, 0, &w, 0);
    usleep(500000);
    int nl = 200;
    double lat[200];
    PGresult *ri = PQprepare(db, "insid", "INSERT INTO bench_jobs (payload)"
                                          " VALUES ('{}') RETURNING id",
                             0, NULL);
    PQclear(ri);
    char ids[200][40];
    double committed[200];
    for (int i = 0; i < nl; i++) {
        r = PQexecPrepared(db, "insid", 0, NULL, NULL, NULL, 0);
        committed[i] = now_s();
        snprintf(ids[i], sizeof ids[i], "%.36s", PQgetvalue(r, 0, 0));
        PQclear(r);
        usleep(10000);
    }
    usleep(300000);
    for (int i = 0; i < nl; i++) {
        const char *v[1] = {ids[i]};
        r = PQexecParams(db, "SELECT extract(epoch FROM started_at) FROM"
                             " bench_jobs WHERE id = $1",
                         1, NULL, v, NULL, NULL, 0);
        double started = PQntuples(r) ? atof(PQgetvalue(r, 0, 0)) : 0;
        PQclear(r);
        lat[i] = (started - committed[i]) * 1000.0;
    }
    kill(w, 15);
    int st;
    struct rusage ru;
    wait4(w, &st, 0, &ru);
    qsort(lat, (size_t)nl, sizeof lat[0], cmp_d);
    printf("| latency commit -> start p50      | %8.3f ms    | %d jobs, 10 ms"
           " apart, 16 idle workers |\n", lat[nl / 2], nl);
    printf("| latency p95                      | %8.3f ms    | |\n",
           lat[nl * 95 / 100]);
    printf("| latency p99                      | %8.3f ms    | |\n",
           lat[nl * 99 / 100]);
    printf("| worker peak RSS (16 workers)     | %8.1f MiB   | idle + "
           "latency run |\n", (double)ru.ru_maxrss / 1024.0);
listing:
    listing(bin, dir);
done:
    PQfinish(db);
    return 0;
}
