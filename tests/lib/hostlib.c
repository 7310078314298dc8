#include "hostlib.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rtlib.h"

static char net[16];    /* the hosts' name (scripts/netns NAME) */
static char tcp[256];   /* conninfo of the database host over TCP */
static char pgdir[512]; /* the cluster's directory */
static int up;          /* the hosts exist and must be removed */

static const char *const *log_dbs; /* whose logs hl_teardown prints */

void hl_stop(void) {
    rt_kill_tracked();
    if (!up) return;
    up = 0;
    sl_test_sh(NULL, "%s/scripts/netns down %s %s >/dev/null 2>&1",
               SL_SOURCE_DIR, net, pgdir);
}

/* An interrupted suite (ctest's timeout sends SIGTERM first, a developer
 * presses ^C) still removes its namespaces: not async-signal-safe, but
 * the process only ends after it. */
static void on_signal(int sig) {
    hl_stop();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Reads the PG* and SLUICE_NETNS_TCP lines `scripts/netns up` printed
 * into the environment and tcp; returns 0, or -1 when they are missing. */
static int read_up_output(const char *out) {
    char host[512], user[64], ps[16];
    int port = 0;
    const char *p = strstr(out, "PGHOST=");
    const char *q = strstr(out, "SLUICE_NETNS_TCP='");
    if (!p || !q ||
        sscanf(p, "PGHOST=%511s PGPORT=%d PGUSER=%63s", host, &port, user) !=
            3 ||
        sscanf(q, "SLUICE_NETNS_TCP='%255[^']'", tcp) != 1)
        return -1;
    snprintf(ps, sizeof ps, "%d", port);
    setenv("PGHOST", host, 1);
    setenv("PGPORT", ps, 1);
    setenv("PGUSER", user, 1);
    return 0;
}

int hl_start(const char *name) {
    char *out = NULL;
    if (geteuid() != 0) {
        printf("skipped: not root: network namespaces need it\n");
        return HL_SKIP;
    }
    if (sl_test_sh(&out, "%s/scripts/netns check 2>&1", SL_SOURCE_DIR) != 0) {
        printf("skipped: ip netns unavailable: %s\n", out ? out : "?");
        free(out);
        return HL_SKIP;
    }
    free(out);
    snprintf(net, sizeof net, "%s", name);
    snprintf(pgdir, sizeof pgdir, "%s/hostpg", sl_test_tmpdir());
    /* Registered after the temp dir's own clean-up, so it runs first. */
    atexit(hl_stop);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    up = 1;
    int rc = sl_test_sh(&out,
                        "SLUICE_PG_FSYNC=off %s/scripts/netns up %s %s 2>&1",
                        SL_SOURCE_DIR, net, pgdir);
    if (rc != 0 || read_up_output(out) != 0) {
        fprintf(stderr, "scripts/netns up failed (%d):\n%s\n", rc,
                out ? out : "");
        free(out);
        hl_stop();
        return 1;
    }
    free(out);
    return 0;
}

const char *hl_conninfo(const char *db) {
    static char ci[400];
    snprintf(ci, sizeof ci, "%s dbname=%s", tcp, db);
    return ci;
}

void hl_fault(const char *what, const char *host) {
    assert_int_equal(sl_test_sh(NULL, "%s/scripts/netns %s %s %s",
                                SL_SOURCE_DIR, what, net, host),
                     0);
}

/* Prints the last 2000 bytes of the logs of db's workers. */
static void dump_logs(const char *db) {
    for (int n = 1; n <= 3; n++) {
        char *s = rt_read_file(hl_log_path(db, n), NULL);
        size_t l = s ? strlen(s) : 0;
        print_message("---- %s w%d (last 2000 bytes)\n%s\n", db, n,
                      s ? s + (l > 2000 ? l - 2000 : 0) : "(none)");
        free(s);
    }
}

int hl_teardown(void **state) {
    if (getenv("SLUICE_HOSTS_LOGS"))
        for (const char *const *d = log_dbs; d && *d; d++) dump_logs(*d);
    rt_teardown(state);
    if (up) sl_test_sh(NULL, "%s/scripts/netns heal %s", SL_SOURCE_DIR, net);
    return 0;
}

const char *hl_log_path(const char *db, int n) {
    static char path[600];
    snprintf(path, sizeof path, "%s/%s-w%d.log", sl_test_tmpdir(), db, n);
    return path;
}

pid_t hl_worker(const sl_model *m, const char *db, int n, int concurrency,
                int batch) {
    char ns[32], log[600];
    snprintf(ns, sizeof ns, "%s-w%d", net, n);
    snprintf(log, sizeof log, "%s", hl_log_path(db, n));
    return rt_track(
        rt_spawn_host(m, ns, hl_conninfo(db), concurrency, batch, log));
}

int hl_log_count(const char *db, int n, const char *what) {
    char *s = rt_read_file(hl_log_path(db, n), NULL);
    int k = 0;
    for (const char *p = s; p && (p = strstr(p, what)) != NULL; p++) k++;
    free(s);
    return k;
}

int hl_run(const char *name, const char *const *dbs,
           const struct CMUnitTest *tests, size_t ntests) {
    int rc = hl_start(name);
    if (rc != 0) return rc;
    log_dbs = dbs;
    return _cmocka_run_group_tests(name, tests, ntests, NULL, NULL);
}
