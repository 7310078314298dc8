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

/* Starts `sluice run` on stage `stage` (batch 0: no -b, the stage's own
 * setting). With out_pid the process is left running and its pid
 * returned; otherwise runs it until idle and returns its peak RSS in KiB. */
static long run_workers(const char *bin, const char *dir, const char *stage,
                        int conc, int batch, int idle, pid_t *out_pid,
                        int async) {
    char c[16], b[16];
    snprintf(c, sizeof c, "%d", conc);
    snprintf(b, sizeof b, "%d", batch);
    const char *argv[20];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "run";
    argv[n++] = "-p";
    argv[n++] = dir;
    argv[n++] = "-s";
    argv[n++] = stage;
    argv[n++] = "-c";
    argv[n++] = c;
    if (batch > 0) {
        argv[n++] = "-b";
        argv[n++] = b;
    }
    if (idle) argv[n++] = "--exit-when-idle";
    if (async) argv[n++] = "--async-commit";
    argv[n++] = "--allow-superuser";
    argv[n++] = "--log-level";
    argv[n++] = "warn";
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        execv(bin, (char *const *)argv);
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
 * keys > 0 the jobs are spread over that many values of `account`.
 * Returns the rate by the timing rule: jobs done divided by the
 * time from starting the worker process to the last completion
 * (max(finished_at), the server's clock on the same machine). */
static double processing_q(const char *bin, const char *dir, const char *stage,
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
    snprintf(sql, sizeof sql, "SELECT extract(epoch FROM max(finished_at))"
             " FROM %s", queue);
    double to_last = scalar_d(sql) - t0;
    snprintf(sql, sizeof sql, "SELECT extract(epoch FROM max(finished_at) -"
             " min(started_at)) FROM %s", queue);
    double span = scalar_d(sql);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE status ="
             " 'done'", queue);
    double done = scalar_d(sql);
    double rate = to_last > 0 ? done / to_last : 0;
    printf("| process %-30s | %9.0f jobs/s | %.0f of %d done; start to last "
           "%.2fs, first claim to last %.2fs (%.0f/s), process %.2fs; peak "
           "RSS %.1f MiB |\n",
           label, rate, done, n, to_last, span, span > 0 ? done / span : 0,
           wall, (double)rss / 1024.0);
    fflush(stdout);
    return rate;
}

static double processing(const char *bin, const char *dir, const char *label,
                         int n, int conc, int batch, int async) {
    return processing_q(bin, dir, "noop", "bench_jobs", 0, label, n, conc,
                        batch, async);
}

/* graphile-worker on the same database, same job count and timing rule
 * (bench/graphile.cjs), when scripts/bench was run with BENCH_PEERS=1:
 * BENCH_PEERS_DIR holds its node_modules, BENCH_PEERS_SCRIPT is the
 * script. Its untuned row is concurrency 10; its best is the fastest of a
 * few settings its documentation recommends for short jobs (a local
 * queue that fetches a batch, batched completions). Then the ratios. */
static void peers(int n, double untuned, double best, const char *best_label) {
    const char *mod = getenv("BENCH_PEERS_DIR");
    const char *script = getenv("BENCH_PEERS_SCRIPT");
    if (!mod || !script || strchr(mod, '\'') || strchr(script, '\''))
        return;
    static const char *const settings[] = {
        "concurrency=10={\"concurrency\":10}",
        "concurrency=10,localQueue=200,completeJobBatchDelay=0={\"concurrency"
        "\":10,\"worker\":{\"localQueue\":{\"size\":200},"
        "\"completeJobBatchDelay\":0}}",
        "concurrency=24,localQueue=500,completeJobBatchDelay=0={\"concurrency"
        "\":24,\"maxPoolSize\":25,\"worker\":{\"localQueue\":{\"size\""
        ":500},\"completeJobBatchDelay\":0}}",
        "concurrency=4,localQueue=100,completeJobBatchDelay=0={\"concurrency"
        "\":4,\"worker\":{\"localQueue\":{\"size\":100},"
        "\"completeJobBatchDelay\":0}}",
    };
    char cmd[4096];
    int len = snprintf(cmd, sizeof cmd, "node '%s' '%s' %d", script, mod, n);
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        len += snprintf(cmd + len, sizeof cmd - (size_t)len, " '%s'",
                        settings[i]);
    FILE *f = popen(cmd, "r");
    if (!f) return;
    char line[512], label[256], glabel[256] = "";
    double g10 = 0, gbest = 0, rate, secs;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%255s %lf %lf", label, &rate, &secs) != 3) continue;
        printf("| graphile-worker %-17s | %9.0f jobs/s | %s; %d jobs, start "
               "to last %.2fs |\n",
               strcmp(label, "concurrency=10") == 0 ? "(untuned)" : "(tuned)",
               rate, label, n, secs);
        if (strcmp(label, "concurrency=10") == 0) g10 = rate;
        if (rate > gbest) {
            gbest = rate;
            snprintf(glabel, sizeof glabel, "%s", label);
        }
    }
    pclose(f);
    if (g10 > 0)
        printf("| untuned: sluice / graphile       | %9.2fx        | sluice "
               "-c 10 no batch setting %.0f/s, graphile-worker concurrency "
               "10 %.0f/s |\n", untuned / g10, untuned, g10);
    if (gbest > 0)
        printf("| best: sluice / graphile          | %9.2fx        | sluice "
               "%s %.0f/s, graphile-worker %s %.0f/s |\n",
               best / gbest, best_label, best, glabel, gbest);
    fflush(stdout);
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

/* Waits (at most 10 s) until n client connections other than this one
 * are open on the database: a started worker process is ready once its
 * workers and control thread have connected. */
static void wait_connections(int n) {
    for (int i = 0; i < 200; i++) {
        if (scalar_d("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                     " current_database() AND backend_type = 'client"
                     " backend' AND pid <> pg_backend_pid()") >= n)
            break;
        usleep(50000);
    }
    usleep(1000000); /* and have prepared their statements */
}

/* A background load: `per_s` no-op jobs a second into bench_jobs on its
 * own connection, until killed: every 5 ms one INSERT of the rows due by
 * then (per_s/200 when each INSERT keeps up; more in one statement when a
 * commit takes longer, so the rate holds on a slow disk). Returns the
 * child's pid. */
static pid_t start_load(int per_s) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    PGconn *c = PQconnectdb("");
    char sql[160];
    double t0 = now_s(), next = t0;
    long sent = 0;
    for (;;) {
        long due = (long)((now_s() - t0) * per_s) + 1 - sent;
        if (due > 0) {
            snprintf(sql, sizeof sql, "INSERT INTO bench_jobs (payload)"
                     " SELECT NULL FROM generate_series(1, %ld)", due);
            PQclear(PQexec(c, sql));
            sent += due;
        }
        next += 0.005;
        double wait = next - now_s();
        if (wait > 0) usleep((useconds_t)(wait * 1e6));
    }
}

/* Latency from the commit of a single enqueue to the claim that starts
 * it: 200 jobs 10 ms apart, 16 workers with no batch setting; with
 * load_per_s > 0 while that background load runs in the same queue. */
static void latency(const char *bin, const char *dir, int load_per_s) {
    exec_ok("TRUNCATE bench_jobs");
    pid_t w, load = 0;
    run_workers(bin, dir, "noop", 16, 0, 0, &w, 0);
    wait_connections(17); /* 16 workers and the control thread */
    if (load_per_s > 0) {
        load = start_load(load_per_s);
        usleep(1000000); /* let the load settle */
    }
    enum { NL = 200 };
    double lat[NL], committed[NL];
    char ids[NL][40];
    PGresult *r = PQprepare(db, "insid", "INSERT INTO bench_jobs (payload)"
                                         " VALUES ('{}') RETURNING id",
                            0, NULL);
    PQclear(r);
    for (int i = 0; i < NL; i++) {
        r = PQexecPrepared(db, "insid", 0, NULL, NULL, NULL, 0);
        committed[i] = now_s();
        snprintf(ids[i], sizeof ids[i], "%.36s", PQgetvalue(r, 0, 0));
        PQclear(r);
        usleep(10000);
    }
    usleep(300000);
    double loaded = 0;
    if (load > 0) {
        /* What the load process achieved (its rows have no payload). */
        loaded = scalar_d("SELECT count(*) / greatest(extract(epoch FROM"
                          " max(created_at) - min(created_at)), 0.001) FROM"
                          " bench_jobs WHERE payload IS NULL");
        kill(load, 9);
        waitpid(load, NULL, 0);
    }
    r = PQexec(db, "DEALLOCATE insid");
    PQclear(r);
    for (int i = 0; i < NL; i++) {
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
    qsort(lat, NL, sizeof lat[0], cmp_d);
    char under[96] = "";
    if (load > 0)
        snprintf(under, sizeof under, " while %d jobs/s are enqueued (%.0f/s"
                 " achieved)",
                 load_per_s, loaded);
    printf("| latency commit -> start p50      | %8.3f ms    | %d jobs, 10 ms"
           " apart, 16 workers, no batch setting%s |\n", lat[NL / 2], NL,
           under);
    printf("| latency p95%-21s | %8.3f ms    | |\n",
           load ? " (loaded)" : "", lat[NL * 95 / 100]);
    printf("| latency p99%-21s | %8.3f ms    | |\n",
           load ? " (loaded)" : "", lat[NL * 99 / 100]);
    if (!load)
        printf("| worker peak RSS (16 workers)     | %8.1f MiB   | idle + "
               "latency run |\n", (double)ru.ru_maxrss / 1024.0);
    fflush(stdout);
}

/* The interview pipeline's three stages with instant handlers
 * (bench/pipelines/bench_interview.yaml, -c 4): n subjects queued at
 * once (subjects/s, from starting the worker to the last subject ready),
 * then 200 single subjects 20 ms apart on idle workers: what the engine
 * adds to a subject's way through, from its upload job's insert to its
 * analysis job's completion. */
static void pipeline_overhead(const char *bin, const char *dir, int n) {
    static const char *const tables[] = {
        "bench_upload_jobs", "bench_transcription_jobs",
        "bench_analysis_jobs", "bench_interviews"};
    char sql[512];
    exec_ok("TRUNCATE bench_upload_jobs, bench_transcription_jobs,"
            " bench_analysis_jobs, bench_interviews");
    snprintf(sql, sizeof sql,
             "WITH i AS (INSERT INTO bench_interviews SELECT"
             " gen_random_uuid() FROM generate_series(1, %d) RETURNING id)"
             " INSERT INTO bench_upload_jobs (interview_id, external_url)"
             " SELECT id, 'x' FROM i", n);
    exec_ok(sql);
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        snprintf(sql, sizeof sql, "VACUUM ANALYZE %s", tables[i]);
        exec_ok(sql);
    }
    double t0 = now_s();
    run_workers(bin, dir, "bench_interview", 4, 0, 1, NULL, 0);
    double to_last = scalar_d("SELECT extract(epoch FROM max(finished_at))"
                              " FROM bench_analysis_jobs") - t0;
    double ready = scalar_d("SELECT count(*) FROM bench_interviews WHERE"
                            " status = 'ready'");
    printf("| pipeline, 3 stages (-c 4)        | %9.0f subj/s | %.0f of %d "
           "subjects ready (%d jobs), start to last %.2fs |\n",
           to_last > 0 ? ready / to_last : 0, ready, n, 3 * n, to_last);

    exec_ok("TRUNCATE bench_upload_jobs, bench_transcription_jobs,"
            " bench_analysis_jobs, bench_interviews");
    pid_t w;
    run_workers(bin, dir, "bench_interview", 4, 0, 0, &w, 0);
    wait_connections(13); /* 3 stages x 4 workers and the control thread */
    enum { NS = 200 };
    for (int i = 0; i < NS; i++) {
        exec_ok("WITH i AS (INSERT INTO bench_interviews DEFAULT VALUES"
                " RETURNING id) INSERT INTO bench_upload_jobs (interview_id,"
                " external_url) SELECT id, 'x' FROM i");
        usleep(20000);
    }
    usleep(500000);
    kill(w, 15);
    waitpid(w, NULL, 0);
    PGresult *r = PQexec(db, "SELECT extract(epoch FROM a.finished_at -"
                             " u.created_at) * 1000 FROM bench_analysis_jobs"
                             " a JOIN bench_upload_jobs u USING"
                             " (interview_id) WHERE a.status = 'done'"
                             " ORDER BY 1");
    int got = PQntuples(r);
    if (got > 0)
        printf("| pipeline added per subject p50   | %8.3f ms    | %d single "
               "subjects 20 ms apart, enqueue to ready through 3 stages, "
               "idle workers; p99 %.3f ms |\n",
               atof(PQgetvalue(r, got / 2, 0)), got,
               atof(PQgetvalue(r, got * 99 / 100, 0)));
    PQclear(r);
    fflush(stdout);
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

    /* Durable commits unless the label says --async-commit. "No batch
     * setting" is the stage's default (bench.yaml sets none). */
    double untuned = processing(bin, dir, "(-c 10, no batch setting)", n_jobs,
                                10, 0, 0);
    static const struct {
        const char *label;
        int conc, batch;
    } tuned[] = {{"(-c 4 -b 100)", 4, 100},
                 {"(-c 16 -b 50)", 16, 50},
                 {"(-c 6 -b 250)", 6, 250},
                 {"(-c 10 -b 1)", 10, 1}};
    double best = 0;
    const char *best_label = "";
    for (size_t i = 0; i < sizeof tuned / sizeof tuned[0]; i++) {
        double r = processing(bin, dir, tuned[i].label, n_jobs, tuned[i].conc,
                              tuned[i].batch, 0);
        if (r > best) {
            best = r;
            best_label = tuned[i].label;
        }
    }
    if (untuned > best) {
        best = untuned;
        best_label = "(-c 10, no batch setting)";
    }
    processing(bin, dir, "(-c 4 -b 100 --async-commit)", n_jobs, 4, 100, 1);
    peers(n_jobs, untuned, best, best_label);
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
    latency(bin, dir, 0);
    latency(bin, dir, 2000);
    int ns = getenv("BENCH_SUBJECTS") ? atoi(getenv("BENCH_SUBJECTS")) : 2000;
    if (ns > 0) pipeline_overhead(bin, dir, ns);
listing:
    listing(bin, dir);
done:
    PQfinish(db);
    return 0;
}
