/* cli_priv.h - what the subcommands share (cli_common.c): messages on
 * stderr, connecting, option parsing and printing results as a table or
 * JSON. Internal to cli/; the commands themselves are declared in cli.h.
 */
#ifndef SL_CLI_PRIV_H
#define SL_CLI_PRIV_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "model.h"
#include "runtime.h"

/* Prints "sluice CMD: message" on stderr, with trailing newlines removed
 * and secrets redacted (sl_redact). */
void sl_cli_say(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints the error of a core call (rc < 0, text in err) as sl_cli_say
 * does, adding a hint to run `sluice migrate` when rc is -SL_ENOTFOUND
 * (a table the pipelines name does not exist; reads.h). */
void sl_cli_say_err(const char *cmd, int rc, const char *err);

/* Connects with flag (a --database value) when not NULL, else
 * $DATABASE_URL, else the libpq environment (sl_db_source). Returns the
 * connection (caller PQfinishes), or NULL after printing sl_db_connect's
 * "cannot connect to the database (from ORIGIN): reason". */
PGconn *sl_cli_connect(const char *cmd, const char *flag);

/* 1 when argv has -h/--help before "--" (checked before loading
 * pipelines), else 0. */
int sl_cli_wants_help(int argc, char **argv);

/* Parses option opt's value v as a duration into *ms (OUT), or prints why
 * not and returns -1. */
int sl_cli_parse_duration(const char *cmd, const char *opt, const char *v,
                          int64_t *ms);

/* Parses option opt's value v as an integer in lo..hi into *out (OUT), or
 * prints why not and returns -1. */
int sl_cli_parse_int(const char *cmd, const char *opt, const char *v, long lo,
                     long hi, long *out);

/* Copies a UUID argument into id (40 bytes), lower-cased. Returns 0, or -1
 * when arg is not a UUID (nothing printed). */
int sl_cli_uuid(char id[40], const char *arg);

/* Checks the ID argument of status/watch: it must be a key of the type of
 * some loaded pipeline with a subject (only pipeline `only` when not
 * NULL), or, when job_too, a job id (a UUID).
 * Returns 0, or -1 after printing what was expected; callers exit
 * SL_EXIT_USAGE then. */
int sl_cli_key_arg(const char *cmd, const sl_model *m, const char *only,
                   const char *arg, int job_too);

/* A duration in seconds as "250ms", "3.2s", "4m05s", "2h03m", "3d04h". */
void sl_cli_fmt_secs(char *out, size_t n, double s);

/* " (did you mean 'x'?)" in buf (len bytes) when one of the n cands is
 * close to name (sl_model_nearest), else ""; returns buf. */
const char *sl_cli_hint(const char *name, const char *const *cands, size_t n,
                        char *buf, size_t len);

/* The stage of model m called `name` (queue name, else a stage name used
 * by one pipeline); NULL after printing why there is none, with the
 * nearest name as a hint. Callers exit SL_EXIT_USAGE then. */
const sl_stage *sl_cli_find_queue(const char *cmd, const sl_model *m,
                                  const char *name);

/* The pipeline of m called `name`; NULL after printing why there is none
 * (with a hint and the loaded names). Callers exit SL_EXIT_USAGE then. */
const sl_pipeline *sl_cli_find_pipeline(const char *cmd, const sl_model *m,
                                        const char *name);

/* Checks that each of the n names picks a stage of m as `run -s` does
 * (sl_stage_selected). Returns 0, or -1 after naming the first that picks
 * none, with a hint. */
int sl_cli_check_stages(const char *cmd, const sl_model *m,
                        const char *const *names, size_t n);

/* cli_runcheck.c: before `sluice run` starts a worker, connects as the
 * runtime will, checks the schema of the selected stages (printing "queue
 * X of pipeline P is missing (or lacks column C): run `sluice migrate -p
 * FILE`"), warns when the run's connections exceed what the server
 * allows, and starts counting outcomes (metrics.h). Returns 0 or the exit
 * code (SL_EXIT_FAILURE). */
int sl_cli_run_preflight(const sl_model *m, const sl_runtime_opts *o,
                         int allow_superuser);

/* How sl_cli_print_table shows a column: 's' text, 'r' right-aligned
 * text, 'd' seconds as a duration, 'e' long text cut to 60 characters. */
typedef struct sl_cli_col {
    const char *title;
    char kind;
} sl_cli_col;

/* Prints the first ncols (<= 32) columns of r as an aligned table with a
 * title row on stdout; NULL shows as "-". */
void sl_cli_print_table(const PGresult *r, const sl_cli_col *cols, int ncols);

/* Prints v on stdout (indented, or on one line when `lines`, as `watch
 * --json` does) and releases it (v is stolen). Keys keep their order. */
void sl_cli_json_print(json_t *v, int lines);

/* Cell (row, col) of r as a JSON number (integer unless the text has a
 * point or exponent) or a string; null when the cell is NULL. New
 * references. */
json_t *sl_cli_json_num(const PGresult *r, int row, int col);
json_t *sl_cli_json_str(const PGresult *r, int row, int col);

/* Prints r on stdout as a JSON array of objects keyed by column name;
 * integers, floats and booleans typed from the column's type. */
void sl_cli_print_json(const PGresult *r);

#endif
