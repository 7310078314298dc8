/* main.c - the sluice command line: dispatch to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "error.h"
#include "stages.h"
#include "version.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    /* Each subcommand registers one line here. */
    {"validate", sl_cmd_validate, "check pipeline definitions"},
    {"sql", sl_cmd_sql, "print the DDL the pipelines imply"},
    {"migrate", sl_cmd_migrate, "apply the schema to the database"},
    {"run", sl_cmd_run, "run the workers"},
    {"enqueue", sl_cmd_enqueue, "add a job to a pipeline"},
    {"status", sl_cmd_status, "show a subject's (or job's) progress"},
    {"watch", sl_cmd_watch, "follow a subject live until done or failed"},
    {"jobs", sl_cmd_jobs, "list jobs by queue, status, age"},
    {"retry", sl_cmd_retry, "run failed or cancelled jobs again"},
    {"cancel", sl_cmd_cancel, "cancel pending or running jobs"},
    {"stats", sl_cmd_stats, "per-queue counts and timings"},
    {"serve", sl_cmd_serve, "serve the API, widget, /metrics, /healthz, /readyz"},
    {"alerts", sl_cmd_alerts, "alert rules: state, test message, export"},
    {"token", sl_cmd_token, "mint a subject token for the progress widget"},
    {"purge", sl_cmd_purge, "delete finished jobs past their retention"},
    {"schedules", sl_cmd_schedules, "recurring jobs: cron, last and next tick"},
    {"workers", sl_cmd_workers, "list the running worker processes"},
    {"pause", sl_cmd_pause, "stop the workers claiming a stage's jobs"},
    {"resume", sl_cmd_resume, "let the workers claim a paused stage again"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f) {
    fprintf(f, "usage: sluice COMMAND [options]\n\ncommands:\n");
    for (int i = 0; commands[i].name; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n`sluice help COMMAND` shows a command's options; "
               "`sluice --version` the version.\n"
               "exit codes: 0 ok, 1 failure, 2 invalid pipeline definitions, "
               "3 jobs failed,\n4 cancelled, 5 timed out, 6 subject deleted "
               "(watch), 64 bad command line\n(docs/cli.md#exit-codes)\n");
}

int main(int argc, char **argv) {
    sl_stages_register_builtin();
    if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? SL_EXIT_USAGE : SL_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("sluice %s\n", SL_VERSION);
        return SL_EXIT_OK;
    }
    /* `sluice help COMMAND` is `sluice COMMAND --help`. */
    int help = strcmp(argv[1], "help") == 0;
    if (help && argc == 2) {
        usage(stdout);
        return SL_EXIT_OK;
    }
    const char *name = argv[1 + help];
    for (int i = 0; commands[i].name; i++) {
        if (strcmp(commands[i].name, name) != 0) continue;
        if (!help) return commands[i].fn(argc - 1, argv + 1);
        char *hargv[] = {argv[2], "--help", NULL};
        return commands[i].fn(2, hargv);
    }
    const char *names[32];
    size_t n = 0;
    for (int i = 0; commands[i].name && n < 32; i++)
        names[n++] = commands[i].name;
    const char *near = sl_model_nearest(name, names, n);
    fprintf(stderr, "sluice: unknown command '%s'", name);
    if (near) fprintf(stderr, " (did you mean '%s'?)", near);
    fprintf(stderr, "\n");
    usage(stderr);
    return SL_EXIT_USAGE;
}
