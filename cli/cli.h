/* cli.h - the sluice subcommands. Each takes the argv after the command
 * name (argv[0] is the command) and returns the process exit code
 * (SL_EXIT_* in error.h). Only these functions print for the user. */
#ifndef SL_CLI_H
#define SL_CLI_H

#include "model.h"

/* Loads the pipelines named by -p/--pipelines PATH options (repeatable)
 * found in argv, else $SLUICE_PIPELINES (colon-separated), else
 * ./pipelines. Prints diagnostics to stderr. Returns 0 with *out set, or
 * SL_EXIT_INVALID / SL_EXIT_FAILURE. Consumed options are removed from
 * argv (argc updated). */
int sl_cli_load(int *argc, char **argv, sl_model **out);

int sl_cmd_validate(int argc, char **argv); /* cli_dsl.c */
int sl_cmd_sql(int argc, char **argv);      /* cli_schema.c */
int sl_cmd_migrate(int argc, char **argv);  /* cli_schema.c */
int sl_cmd_run(int argc, char **argv);      /* cli_run.c */
int sl_cmd_enqueue(int argc, char **argv);  /* cli_enqueue.c */
int sl_cmd_status(int argc, char **argv);   /* cli_status.c */
int sl_cmd_watch(int argc, char **argv);    /* cli_status.c */
int sl_cmd_jobs(int argc, char **argv);     /* cli_jobs.c */
int sl_cmd_retry(int argc, char **argv);    /* cli_jobs.c */
int sl_cmd_cancel(int argc, char **argv);   /* cli_jobs.c */
int sl_cmd_stats(int argc, char **argv);    /* cli_jobs.c */
int sl_cmd_serve(int argc, char **argv);    /* cli_serve.c */
int sl_cmd_alerts(int argc, char **argv);   /* cli_alerts.c */
int sl_cmd_token(int argc, char **argv);    /* cli_token.c */
int sl_cmd_purge(int argc, char **argv);    /* cli_purge.c */
int sl_cmd_schedules(int argc, char **argv); /* cli_schedules.c */
int sl_cmd_workers(int argc, char **argv);  /* cli_workers.c */
int sl_cmd_pause(int argc, char **argv);    /* cli_workers.c */
int sl_cmd_resume(int argc, char **argv);   /* cli_workers.c */

/* cli_serve.c: what `run` shares with `serve`. */
typedef struct sl_httpd sl_httpd;
/* Starts the HTTP server for m on listen (metrics initialised for m);
 * prints why not and returns SL_EXIT_FAILURE when it cannot. */
int sl_cli_http_start(const char *cmd, const char *listen, const sl_model *m,
                      int with_runtime, sl_httpd **out);
/* sl_runtime_opts.on_event that speaks systemd's notify protocol. */
void sl_cli_sd_event(const char *event, void *arg);

#endif
