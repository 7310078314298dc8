#include "testlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char conninfo[256];
static char tmpdir[256];

static void rm_tmpdir(void) {
    if (tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) { /* best effort */
        }
    }
}

const char *sl_test_tmpdir(void) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-t.XXXXXX");
        if (!mkdtemp(tmpdir)) fail_msg("mkdtemp: %s", strerror(errno));
        chmod(tmpdir, 0755);
        if (!getenv("SLUICE_KEEP_TMP")) atexit(rm_tmpdir);
    }
    return tmpdir;
}

const char *sl_test_db(const char *name) {
    PGconn *c = PQconnectdb("dbname=postgres");
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("no PostgreSQL (run through scripts/test): %s",
                 PQerrorMessage(c));
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)",
             name);
    sl_test_exec(c, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name);
    sl_test_exec(c, sql);
    PQfinish(c);
    snprintf(conninfo, sizeof conninfo, "dbname=%s", name);
    return conninfo;
}

PGconn *sl_test_connect(const char *ci) {
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect '%s': %s", ci, PQerrorMessage(c));
    PQsetNoticeProcessor(c, NULL, NULL);
    return c;
}

static void notice_quiet(void *arg, const char *msg) {
    (void)arg;
    (void)msg;
}

void sl_test_exec(PGconn *c, const char *sql) {
    PQsetNoticeProcessor(c, notice_quiet, NULL);
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
        PQclear(r);
        fail_msg("SQL failed: %s\n  in: %.300s", msg, sql);
    }
    PQclear(r);
}

char *sl_test_scalar(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
        PQclear(r);
        fail_msg("SQL failed: %s\n  in: %.300s", msg, sql);
    }
    char *v = NULL;
    if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

long sl_test_long(PGconn *c, const char *sql) {
    char *v = sl_test_scalar(c, sql);
    long n = v ? strtol(v, NULL, 10) : 0;
    free(v);
    return n;
}

const char *sl_test_file(const char *name, const char *content) {
    static char paths[64][512];
    static int n;
    char *p = paths[n++ % 64];
    snprintf(p, 512, "%s/%s", sl_test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    if (!f) fail_msg("write %s: %s", p, strerror(errno));
    fputs(content, f);
    fclose(f);
    return p;
}

int sl_test_sh(char **out, const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t k;
    while (buf && (k = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += k;
        if (cap - len < 1024) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) break;
            buf = nb;
        }
    }
    if (buf) buf[len] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *sl_test_bin(void) {
    const char *b = getenv("SLUICE_BIN");
    return b ? b : SL_BINARY_DIR "/sluice";
}

int64_t sl_test_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *const sl_test_generation_yaml =
    "pipeline: generation\n"
    "security:\n"
    "  inherit: {table: projects, column: project_id, key: id}\n"
    "stages:\n"
    "  generate:\n"
    "    queue: generation_jobs\n"
    "    handler: noop\n"
    "    columns:\n"
    "      account_id: {type: uuid, references: accounts.id}\n"
    "      project_id: {type: uuid, references: projects.id, not_null: "
    "true}\n"
    "      payload: jsonb\n"
    "      result: jsonb\n";

int sl_test_free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &l), 0);
    close(s);
    return ntohs(a.sin_port);
}

pid_t sl_test_spawn_server(const char *cmd, const char *what, int *port) {
    int fd[2];
    if (pipe(fd) != 0) fail_msg("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    FILE *in = fdopen(fd[0], "r");
    char line[128] = "";
    if (!in || !fgets(line, sizeof line, in) ||
        sscanf(line, "PORT %d", port) != 1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("%s did not start (read '%s')", what, line);
    }
    fclose(in);
    return pid;
}

int sl_test_sluice(char **out, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return sl_test_sh(out, "'%s' %s 2>&1", sl_test_bin(), args);
}

void sl_test_expect_in(const char *out, const char *what) {
    if (!out || !strstr(out, what))
        fail_msg("expected \"%s\" in the output:\n%s", what,
                 out ? out : "(none)");
}
