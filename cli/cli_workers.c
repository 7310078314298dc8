/* cli_workers.c - `sluice workers` (the registry of running worker
 * processes) and `sluice pause` / `sluice resume` (a stage's claims),
 * docs/cli.md. */
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_priv.h"
#include "error.h"
#include "ops.h"

static void workers_usage(FILE *f) {
    fprintf(f, "usage: sluice workers [--json] [--database URL]\n\n"
               "Lists the running worker processes (`sluice run`) from"
               " sluice.workers: id,\nhost, pid, version, stages, worker"
               " threads, start and last heartbeat. A\nprocess whose last"
               " heartbeat is older than %d s is shown as not alive.\n\n"
               "      --json          one JSON array\n"
               "      --database URL  connection (default: DATABASE_URL,"
               " PG*)\n",
            SL_OPS_ALIVE_S);
}

int sl_cmd_workers(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"database", required_argument, 0, 'D'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *db = NULL;
    int json = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'j': json = 1; break;
        case 'D': db = optarg; break;
        case 'h': workers_usage(stdout); return SL_EXIT_OK;
        default: workers_usage(stderr); return SL_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        workers_usage(stderr);
        return SL_EXIT_USAGE;
    }
    PGconn *c = sl_cli_connect("workers", db);
    if (!c) return SL_EXIT_FAILURE;
    PGresult *r = NULL;
    char err[1024];
    int e = sl_ops_workers(c, &r, err, sizeof err);
    PQfinish(c);
    if (e != 0) {
        sl_cli_say_err("workers", e, err);
        return SL_EXIT_FAILURE;
    }
    if (json) {
        json_t *arr = json_array();
        for (int i = 0; i < PQntuples(r); i++) {
            json_t *st = json_loads(PQgetvalue(r, i, SL_WK_STAGES), 0, NULL);
            json_array_append_new(
                arr,
                json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b}", "id",
                          sl_cli_json_str(r, i, SL_WK_ID), "host",
                          sl_cli_json_str(r, i, SL_WK_HOST), "pid",
                          sl_cli_json_num(r, i, SL_WK_PID), "version",
                          sl_cli_json_str(r, i, SL_WK_VERSION), "stages",
                          st ? st : json_array(), "concurrency",
                          sl_cli_json_num(r, i, SL_WK_CONCURRENCY),
                          "started_at", sl_cli_json_str(r, i, SL_WK_STARTED),
                          "heartbeat_at",
                          sl_cli_json_str(r, i, SL_WK_HEARTBEAT), "alive",
                          PQgetvalue(r, i, SL_WK_ALIVE)[0] == 't'));
        }
        sl_cli_json_print(arr, 0);
    } else if (PQntuples(r) == 0) {
        printf("no worker is registered\n");
    } else {
        static const sl_cli_col cols[] = {
            {"ID", 's'},      {"HOST", 's'},    {"PID", 'r'},
            {"VERSION", 's'}, {"STAGES", 'e'},  {"THREADS", 'r'},
            {"STARTED", 's'}, {"HEARTBEAT", 's'}, {"ALIVE", 's'}};
        sl_cli_print_table(r, cols, 9);
    }
    PQclear(r);
    return SL_EXIT_OK;
}

/* ---- pause and resume ---------------------------------------------------- */

static void pause_usage(FILE *f, const char *cmd) {
    fprintf(f,
            "usage: sluice %s PIPELINE.STAGE [-p PATH]... [--database URL]\n\n"
            "%s\n\n"
            "  -p, --pipelines PATH  pipeline file or directory (repeatable)\n"
            "      --database URL    connection (default: DATABASE_URL,"
            " PG*)\n",
            cmd,
            strcmp(cmd, "pause") == 0
                ? "Stops every running worker from claiming jobs of the"
                  " stage, within a second\nand without a restart; jobs"
                  " already running finish. Recorded in sluice.paused."
                : "Lets the workers claim jobs of a paused stage again,"
                  " within a second.");
}

static int pause_cmd(int argc, char **argv, int paused) {
    const char *cmd = paused ? "pause" : "resume";
    if (sl_cli_wants_help(argc, argv)) {
        pause_usage(stdout, cmd);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    static const struct option opts[] = {
        {"database", required_argument, 0, 'D'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *db = NULL;
    int ch;
    PGconn *c = NULL;
    optind = 1;
    rc = SL_EXIT_USAGE;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == 'D') {
            db = optarg;
            continue;
        }
        pause_usage(ch == 'h' ? stdout : stderr, cmd);
        if (ch == 'h') rc = SL_EXIT_OK;
        goto out;
    }
    if (optind + 1 != argc) {
        pause_usage(stderr, cmd);
        goto out;
    }
    char name[256];
    snprintf(name, sizeof name, "%s", argv[optind]);
    char *dot = strchr(name, '.');
    const sl_stage *s = NULL;
    if (dot) {
        *dot = '\0';
        s = sl_model_stage(m, name, dot + 1);
    }
    if (!s) {
        sl_cli_say(cmd, "no stage '%s': expected PIPELINE.STAGE of the loaded"
                        " pipelines", argv[optind]);
        goto out;
    }
    rc = SL_EXIT_FAILURE;
    if (!(c = sl_cli_connect(cmd, db))) goto out;
    char who[128], err[1024];
    struct passwd *pw = getpwuid(getuid());
    snprintf(who, sizeof who, "cli:%s", pw ? pw->pw_name : "?");
    int e = sl_ops_pause(c, s, paused, who, err, sizeof err);
    if (e != 0) {
        sl_cli_say_err(cmd, e, err);
        goto out;
    }
    printf("%s.%s %s\n", s->pipeline->name, s->name,
           paused ? "paused" : "resumed");
    rc = SL_EXIT_OK;
out:
    if (c) PQfinish(c);
    sl_model_free(m);
    return rc;
}

int sl_cmd_pause(int argc, char **argv) { return pause_cmd(argc, argv, 1); }

int sl_cmd_resume(int argc, char **argv) { return pause_cmd(argc, argv, 0); }
