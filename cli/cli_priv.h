/* cli_priv.h - what the subcommands share (cli_common.c): messages on
 * stderr, connecting, option parsing and printing results as a table or
 * JSON. Internal to cli/; the commands themselves are declared in cli.h.
 */
#ifndef SL_CLI_PRIV_H
#define SL_CLI_PRIV_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

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

/* A duration in seconds as "250ms", "3.2s", "4m05s", "2h03m", "3d04h". */
void sl_cli_fmt_secs(char *out, size_t n, double s);

/* The stage of model m called `name` (queue name, else a stage name used
 * by one pipeline); NULL after printing why there is none. */
const sl_stage *sl_cli_find_queue(const char *cmd, const sl_model *m,
                                  const char *name);

/* How sl_cli_print_table shows a column: 's' text, 'r' right-aligned
 * text, 'd' seconds as a duration, 'e' long text cut to 60 characters. */
typedef struct sl_cli_col {
    const char *title;
    char kind;
} sl_cli_col;

/* Prints the first ncols (<= 32) columns of r as an aligned table with a
 * title row on stdout; NULL shows as "-". */
void sl_cli_print_table(const PGresult *r, const sl_cli_col *cols, int ncols);

/* Prints r on stdout as a JSON array of objects keyed by column name;
 * integers, floats and booleans typed from the column's type. */
void sl_cli_print_json(const PGresult *r);

#endif
