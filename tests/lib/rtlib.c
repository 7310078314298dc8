#include "rtlib.h"
#include <sched.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dsl.h"
#include "log.h"
#include "migrate.h"
#include "handler.h"

static char conninfo[256];

const char *rt_conninfo(void) { return conninfo; }

static json_int_t opt_int(const sl_stage *s, const char *k, json_int_t d) {
    json_t *v = json_object_get(s->with, k);
    return json_is_integer(v) ? json_integer_value(v) : d;
}

static void probe_record(sl_ctx *ctx, const sl_job *job) {
    char att[16];
    snprintf(att, sizeof att, "%d", job->attempt);
    const char *vals[3] = {job->id, job->stage->name, att};
    PGresult *r = PQexecParams(sl_ctx_conn(ctx),
                               "INSERT INTO probe_runs (job, stage, attempt)"
                               " VALUES ($1, $2, $3)",
                               3, NULL, vals, NULL, NULL, 0);
    PQclear(r);
}

/* Appends "<job> <monotonic ms>" to $RT_PROBE_STOP_LOG: when a handler
 * was first told to stop. */
static void probe_log_stop(const sl_job *job) {
    const char *path = getenv("RT_PROBE_STOP_LOG");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (!f) return;
    fprintf(f, "%s %lld\n", job->id, (long long)sl_test_now_ms());
    fclose(f);
}

/* Sleeps ms; returns 0, or -1 when told to stop first (unless
 * ignore_stop, which sleeps on and only logs it). */
static int probe_sleep(sl_ctx *ctx, const sl_job *job, json_int_t ms,
                       int ignore_stop) {
    int told = 0;
    while (ms > 0) {
        if (!told && sl_ctx_should_stop(ctx)) {
            told = 1;
            probe_log_stop(job);
            if (!ignore_stop) return -1;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        ms -= 20;
    }
    return 0;
}

static void probe_run(sl_ctx *ctx, const sl_job *job, void *state,
                      sl_result *res) {
    (void)state;
    const sl_stage *s = job->stage;
    probe_record(ctx, job);

    json_int_t snoozes = opt_int(s, "snooze_times", 0);
    json_int_t done_snoozes = 0;
    if (job->checkpoint)
        done_snoozes =
            json_integer_value(json_object_get(job->checkpoint, "snoozes"));
    if (done_snoozes < snoozes) {
        json_t *cp = json_pack("{s:I}", "snoozes", done_snoozes + 1);
        sl_ctx_checkpoint(ctx, cp);
        json_decref(cp);
        sl_snooze(res, opt_int(s, "snooze_ms", 50));
        return;
    }
    json_int_t steps = opt_int(s, "progress_steps", 0);
    for (json_int_t i = 1; i <= steps; i++) {
        char detail[64];
        snprintf(detail, sizeof detail, "step %lld/%lld", (long long)i,
                 (long long)steps);
        sl_ctx_progress(ctx, (int)(i * 100 / (steps + 1)), detail);
        /* Past the runtime's 1 ms test throttle, so every step is kept. */
        struct timespec ts = {0, 3 * 1000000L};
        nanosleep(&ts, NULL);
    }
    json_t *seen = job->checkpoint ? json_incref(job->checkpoint) : json_null();
    if (json_is_true(json_object_get(s->with, "checkpoint"))) {
        json_t *cp = json_pack("{s:i}", "saved_by_attempt", job->attempt);
        sl_ctx_checkpoint(ctx, cp);
        json_decref(cp);
    }
    if (probe_sleep(ctx, job, opt_int(s, "sleep_ms", 0),
                    json_is_true(json_object_get(s->with, "ignore_stop"))) !=
        0) {
        sl_fail(res, SL_EC_RETRYABLE, "probe: interrupted");
        json_decref(seen);
        return;
    }
    if (job->attempt <= opt_int(s, "fail_first", 0)) {
        json_t *cls = json_object_get(s->with, "fail_class");
        int c = cls ? sl_errclass_parse(json_string_value(cls))
                    : SL_EC_RETRYABLE;
        sl_fail(res, c < 0 ? SL_EC_INTERNAL : (sl_errclass)c,
                "probe: planned failure on attempt %d", job->attempt);
        res->delay_ms = opt_int(s, "retry_after_ms", 0);
        json_decref(seen);
        return;
    }
    json_t *out = json_deep_copy(json_object_get(s->with, "output"));
    if (!json_is_object(out)) {
        json_decref(out);
        out = json_object();
    }
    json_object_set_new(out, "seen_checkpoint", seen);
    sl_done(res, out);
}

static const sl_handler probe = {"t.probe", NULL, NULL, NULL, probe_run};

void rt_register_probe(void) {
    static int done;
    if (!done) sl_handler_register(&probe);
    done = 1;
    if (!getenv("SLUICE_TEST_VERBOSE")) sl_log_init(SL_LOGFMT, SL_LOG_ERROR);
}

static const char *audit_sql =
    "CREATE TABLE items (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " status text NOT NULL DEFAULT 'new', progress int NOT NULL DEFAULT 0,"
    " detail text);"
    "CREATE TABLE probe_runs (n bigserial PRIMARY KEY, job uuid, stage text,"
    " attempt int, at timestamptz DEFAULT clock_timestamp());"
    "CREATE TABLE done_log (job uuid PRIMARY KEY, q text,"
    " at timestamptz DEFAULT clock_timestamp());"
    "CREATE TABLE subject_log (n bigserial PRIMARY KEY, item uuid,"
    " status text, progress int, detail text);"
    "CREATE FUNCTION log_done() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO done_log (job, q) VALUES (NEW.id, TG_TABLE_NAME);"
    " RETURN NEW; END $$;"
    "CREATE FUNCTION log_subject() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO subject_log (item, status, progress, detail)"
    " VALUES (NEW.id, NEW.status, NEW.progress, NEW.detail); RETURN NEW;"
    " END $$;"
    "CREATE TRIGGER items_log AFTER UPDATE ON items FOR EACH ROW WHEN"
    " ((OLD.status, OLD.progress, OLD.detail) IS DISTINCT FROM"
    " (NEW.status, NEW.progress, NEW.detail)) EXECUTE FUNCTION log_subject();";

sl_model *rt_setup(const char *db, const char *yaml, PGconn **conn) {
    rt_register_probe();
    snprintf(conninfo, sizeof conninfo, "%s", sl_test_db(db));
    setenv("PGDATABASE", db, 1);
    PGconn *c = sl_test_connect(conninfo);
    sl_test_exec(c, audit_sql);

    char name[128];
    snprintf(name, sizeof name, "%s.yaml", db);
    const char *path = sl_test_file(name, yaml);
    sl_model *m = NULL;
    sl_diags d = {0};
    const char *paths[1] = {path};
    if (sl_dsl_load(paths, 1, &m, &d) != 0) {
        char *msg = sl_diags_format(&d);
        fail_msg("load failed: %s", msg);
    }
    sl_diags_free(&d);
    /* In process: the binary does not know the probe handler. */
    sl_migrate_opts mo = {0};
    sl_migrate_result mr;
    memset(&mr, 0, sizeof mr);
    char err[1024];
    if (sl_migrate(c, m, &mo, &mr, err, sizeof err) != 0)
        fail_msg("migrate failed: %s", err);
    sl_migrate_result_free(&mr);
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            char sql[512];
            const char *q = m->pipelines[i].stages[k].queue;
            snprintf(sql, sizeof sql,
                     "CREATE TRIGGER done_log AFTER UPDATE ON \"%s\" FOR EACH"
                     " ROW WHEN (NEW.status = 'done' AND OLD.status IS"
                     " DISTINCT FROM 'done') EXECUTE FUNCTION log_done()",
                     q);
            sl_test_exec(c, sql);
        }
    *conn = c;
    return m;
}

static sl_runtime_opts opts(int concurrency, int batch, int idle,
                            int64_t drain) {
    sl_runtime_opts o;
    memset(&o, 0, sizeof o);
    o.conninfo = conninfo;
    o.concurrency = concurrency;
    o.batch = batch;
    o.exit_when_idle = idle;
    o.drain_ms = drain;
    o.progress_throttle_ms = 1;
    return o;
}

void rt_run_until_idle(const sl_model *m, int concurrency, int batch) {
    sl_runtime_opts o = opts(concurrency, batch, 1, 1000);
    char err[512];
    int rc = sl_runtime_run(m, &o, err, sizeof err);
    if (rc != 0) fail_msg("runtime: %s", err);
}

pid_t rt_spawn(const sl_model *m, int concurrency, int batch,
               int exit_when_idle, int64_t drain_ms) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* Never outlive the test: a failed assertion in the parent must
         * not leave workers holding ctest's output pipe. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sl_runtime_opts o = opts(concurrency, batch, exit_when_idle, drain_ms);
        char err[512];
        sl_runtime_install_signals();
        int rc = sl_runtime_run(m, &o, err, sizeof err);
        if (rc != 0) fprintf(stderr, "worker: %s\n", err);
        _exit(rc == 0 ? 0 : 1);
    }
    return pid;
}

int rt_wait(pid_t pid, int64_t timeout_ms) {
    int64_t end = sl_test_now_ms() + timeout_ms;
    int st;
    while (sl_test_now_ms() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

int rt_wait_for(PGconn *c, const char *sql, long want, int64_t timeout_ms) {
    int64_t end = sl_test_now_ms() + timeout_ms;
    while (sl_test_now_ms() < end) {
        if (sl_test_long(c, sql) == want) return 1;
        usleep(20000);
    }
    return 0;
}

/* ---- helpers for the reliability suites ---------------------------------- */

pid_t rt_spawn_logged(const sl_model *m, int concurrency, int batch,
                      int exit_when_idle, int64_t drain_ms,
                      const char *log_path, int min_level) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        sl_log_init(SL_LOGFMT, min_level);
        sl_runtime_opts o = opts(concurrency, batch, exit_when_idle, drain_ms);
        char err[512];
        sl_runtime_install_signals();
        int rc = sl_runtime_run(m, &o, err, sizeof err);
        if (rc != 0) fprintf(stderr, "worker: %s\n", err);
        _exit(rc == 0 ? 0 : 1);
    }
    return pid;
}

pid_t rt_spawn_host(const sl_model *m, const char *netns,
                    const char *conninfo, int concurrency, int batch,
                    const char *log_path) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        char path[256];
        snprintf(path, sizeof path, "/var/run/netns/%s", netns);
        int ns = open(path, O_RDONLY | O_CLOEXEC);
        if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
            fprintf(stderr, "worker: cannot enter %s\n", path);
            _exit(2);
        }
        close(ns);
        sl_log_init(SL_LOGFMT, SL_LOG_INFO);
        sl_runtime_opts o = opts(concurrency, batch, 0, 1000);
        o.conninfo = conninfo;
        /* Owners read "<netns>:<pid>:<stage>:<thread>": the host, and
         * which of the processes started there. */
        char wid[160];
        snprintf(wid, sizeof wid, "%s:%d", netns, (int)getpid());
        o.worker_id = wid;
        char err[512];
        sl_runtime_install_signals();
        int rc = sl_runtime_run(m, &o, err, sizeof err);
        if (rc != 0) fprintf(stderr, "worker: %s\n", err);
        _exit(rc == 0 ? 0 : 1);
    }
    return pid;
}

int rt_alive(pid_t pid, int *status) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == 0) return 1;
    if (status) *status = st;
    return 0;
}

long rt_rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
    fclose(f);
    return kb;
}

long rt_env_long(const char *name, long dflt) {
    const char *v = getenv(name);
    char *end;
    if (!v || !*v) return dflt;
    long n = strtol(v, &end, 10);
    return *end ? dflt : n;
}

char *rt_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, k;
    char *buf = malloc(cap);
    while (buf && (k = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (cap - n - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

#define RT_MAX_TRACKED 64
static pid_t tracked[RT_MAX_TRACKED];
static int ntracked;

pid_t rt_track(pid_t pid) {
    if (ntracked == RT_MAX_TRACKED) { /* forget the ones already reaped */
        int k = 0;
        for (int i = 0; i < ntracked; i++)
            if (kill(tracked[i], 0) == 0) tracked[k++] = tracked[i];
        ntracked = k;
    }
    if (ntracked < RT_MAX_TRACKED) tracked[ntracked++] = pid;
    return pid;
}

void rt_kill_tracked(void) {
    for (int i = 0; i < ntracked; i++) {
        if (tracked[i] > 0 && kill(tracked[i], 0) == 0 &&
            waitpid(tracked[i], NULL, WNOHANG) == 0) {
            kill(tracked[i], SIGKILL);
            waitpid(tracked[i], NULL, 0);
        }
    }
    ntracked = 0;
}

int rt_teardown(void **state) {
    (void)state;
    rt_kill_tracked();
    return 0;
}
