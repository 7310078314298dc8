/* cloudrun.h - the cloud pipeline under test: a fresh database migrated
 * with a pipeline file, the fake cloud server, and `sluice run` worker
 * processes pointed at both through the environment (DATABASE_URL,
 * ASSEMBLYAI_BASE_URL, OPENAI_BASE_URL, the API keys).
 *
 * Header-only (static inline), like fakecloud.h.
 */
#ifndef SL_CLOUDRUN_H
#define SL_CLOUDRUN_H

#include <fcntl.h>
#include <sys/stat.h>

#include "fakecloud.h"

#define CLOUD_AKEY "aai-secret-key-4e1d7b20c9"
#define CLOUD_OKEY "sk-secret-openai-9a8b7c6d5e"

typedef struct cloud_env {
    fake_cloud fake;
    char dir[512]; /* the pipeline directory */
    char log[600]; /* every worker's stderr, appended */
    PGconn *c;
    char account[64];
} cloud_env;

/* Sets the keys every worker inherits (call once per process). */
static inline void cloud_keys(void) {
    setenv("ASSEMBLYAI_API_KEY", CLOUD_AKEY, 1);
    setenv("OPENAI_API_KEY", CLOUD_OKEY, 1);
}

/* Starts the fake with fake_args (the keys are added), creates database
 * db, writes files (pairs of relative path and content, NULL-terminated;
 * "hooks/x.lua" creates hooks/) under <tmp>/<db>/, migrates that
 * directory, connects and creates an account. */
static inline void cloud_setup_files(cloud_env *e, const char *db,
                                     const char *fake_args,
                                     const char *const *files) {
    char args[1024], path[700];
    memset(e, 0, sizeof *e);
    snprintf(args, sizeof args, "--assemblyai-key %s --openai-key %s %s",
             CLOUD_AKEY, CLOUD_OKEY, fake_args ? fake_args : "");
    fake_start(&e->fake, args);
    setenv("ASSEMBLYAI_BASE_URL", e->fake.base, 1);
    setenv("OPENAI_BASE_URL", e->fake.base, 1);
    setenv("DATABASE_URL", sl_test_db(db), 1);
    snprintf(e->dir, sizeof e->dir, "%s/%s", sl_test_tmpdir(), db);
    mkdir(e->dir, 0755);
    for (const char *const *f = files; f[0]; f += 2) {
        snprintf(path, sizeof path, "%s/%s", e->dir, f[0]);
        char *slash = strrchr(path, '/');
        *slash = '\0';
        mkdir(path, 0755);
        *slash = '/';
        FILE *fp = fopen(path, "w");
        if (!fp) fail_msg("cannot write %s", path);
        fputs(f[1], fp);
        fclose(fp);
    }
    snprintf(e->log, sizeof e->log, "%s/worker.log", e->dir);
    char *out = NULL;
    int rc = sl_test_sh(&out, "'%s' migrate -p '%s' 2>&1", sl_test_bin(),
                        e->dir);
    if (rc != 0) fail_msg("sluice migrate failed (%d): %s", rc, out);
    free(out);
    e->c = sl_test_connect(getenv("DATABASE_URL"));
    char *acc = sl_test_scalar(e->c, "INSERT INTO accounts (name) VALUES "
                                     "('acme') RETURNING id");
    snprintf(e->account, sizeof e->account, "%s", acc);
    free(acc);
}

/* cloud_setup_files with one file, interview.yaml. */
static inline void cloud_setup(cloud_env *e, const char *db,
                               const char *fake_args, const char *yaml) {
    const char *const files[] = {"interview.yaml", yaml, NULL};
    cloud_setup_files(e, db, fake_args, files);
}

static inline void cloud_teardown(cloud_env *e) {
    if (e->c) PQfinish(e->c);
    e->c = NULL;
    fake_stop(&e->fake);
}

/* Creates an interview and its upload job with the media (text bytes) or
 * an external URL; optional checkpoint JSON for the job. Returns the
 * interview id (caller frees). */
static inline char *cloud_interview(cloud_env *e, const char *media,
                                    const char *external_url,
                                    const char *checkpoint) {
    const char *p1[1] = {e->account};
    PGresult *r = PQexecParams(e->c,
                               "INSERT INTO interviews (account_id, title) "
                               "VALUES ($1, 'test') RETURNING id",
                               1, NULL, p1, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("insert interview: %s", PQerrorMessage(e->c));
    char *id = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *p2[4] = {id, media, external_url, checkpoint};
    r = PQexecParams(e->c,
                     "INSERT INTO upload_jobs (interview_id, media_file, "
                     "external_url, checkpoint) VALUES ($1, "
                     "convert_to($2, 'UTF8'), $3, $4::jsonb)",
                     4, NULL, p2, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("insert upload job: %s", PQerrorMessage(e->c));
    PQclear(r);
    return id;
}

/* Runs one worker process until idle (at most timeout_s); returns its exit
 * status. */
static inline int cloud_run(cloud_env *e, int timeout_s) {
    return sl_test_sh(NULL,
                      "timeout -s KILL %d '%s' run --allow-superuser --exit-when-idle -p '%s' "
                      "--drain 1s >> '%s' 2>&1",
                      timeout_s, sl_test_bin(), e->dir, e->log);
}

/* Starts a worker process in the background (exit when idle); returns its
 * pid. */
static inline pid_t cloud_spawn(cloud_env *e) {
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(e->log, O_WRONLY | O_APPEND | O_CREAT, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        /* The tests' cluster user is a superuser. */
        execl(sl_test_bin(), "sluice", "run", "--allow-superuser",
              "--exit-when-idle", "-p",
              e->dir, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Kills a worker with SIGKILL and reaps it. */
static inline void cloud_kill(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Waits until the fake's counter `key` reaches at least want (within
 * timeout_ms); returns 1 when it did. */
static inline int cloud_wait_count(cloud_env *e, const char *key, long want,
                                   int64_t timeout_ms) {
    int64_t end = sl_test_now_ms() + timeout_ms;
    while (sl_test_now_ms() < end) {
        if (fake_count(&e->fake, key) >= want) return 1;
        usleep(20000);
    }
    return 0;
}

/* The worker log's content (caller frees). */
static inline char *cloud_log(cloud_env *e) {
    char *out = NULL;
    sl_test_sh(&out, "cat '%s' 2>/dev/null", e->log);
    return out ? out : strdup("");
}

/* A scalar of SQL with one bound parameter (the interview id, say) as a
 * malloc'd string, NULL for SQL NULL. */
static inline char *cloud_q(cloud_env *e, const char *sql, const char *arg) {
    const char *p[1] = {arg};
    PGresult *r = PQexecParams(e->c, sql, arg ? 1 : 0, NULL, arg ? p : NULL,
                               NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(e->c));
    char *v = PQntuples(r) && !PQgetisnull(r, 0, 0)
                  ? strdup(PQgetvalue(r, 0, 0))
                  : NULL;
    PQclear(r);
    return v;
}

static inline long cloud_ql(cloud_env *e, const char *sql, const char *arg) {
    char *v = cloud_q(e, sql, arg);
    long n = v ? atol(v) : -1;
    free(v);
    return n;
}

/* Asserts that the scalar equals want. */
static inline void cloud_assert_q(cloud_env *e, const char *sql,
                                  const char *arg, const char *want) {
    char *v = cloud_q(e, sql, arg);
    if (!v || strcmp(v, want) != 0) {
        char *log = cloud_log(e);
        size_t n = strlen(log);
        fail_msg("%s -> '%s', want '%s'\n--- worker log (tail) ---\n%s", sql,
                 v ? v : "NULL", want, n > 6000 ? log + n - 6000 : log);
    }
    free(v);
}

#endif
