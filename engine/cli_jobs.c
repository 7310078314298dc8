/* cli_jobs.c - the operator's job commands: `sluice enqueue`, `status`,
 * `watch`, `jobs`, `retry`, `cancel` and `stats` (docs/cli.md).
 *
 * Enqueue, cancel and retry go through jobs.h; the read-only queries
 * (status, watch, jobs, stats) are built here from the model, with quoted
 * identifiers and bound values. Every message that may carry server or
 * connection text is redacted before it is printed.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cli.h"
#include "dsl.h"
#include "error.h"
#include "jobs.h"
#include "log.h"

/* ---- shared helpers ------------------------------------------------------ */

/* The password of the connection string in use, redacted from messages
 * (sl_redact covers PGPASSWORD and *_PASSWORD variables, not a password
 * inside DATABASE_URL). */
static char conn_password[256];

/* Replaces the connection password in msg (NUL-terminated, cap bytes). */
static void redact_password(char *msg, size_t cap) {
    size_t pl = strlen(conn_password), k = 0;
    char out[4096];
    if (pl < 3 || !strstr(msg, conn_password)) return;
    for (const char *p = msg; *p && k + 11 < sizeof out;) {
        if (strncmp(p, conn_password, pl) == 0) {
            memcpy(out + k, "[redacted]", 10);
            k += 10;
            p += pl;
        } else {
            out[k++] = *p++;
        }
    }
    out[k] = '\0';
    snprintf(msg, cap, "%s", out);
}

/* Prints "sluice CMD: message" on stderr, with secrets redacted. */
static void say(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(const char *cmd, const char *fmt, ...) {
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sl_redact(msg, sizeof msg);
    redact_password(msg, sizeof msg);
    size_t l = strlen(msg);
    while (l > 0 && msg[l - 1] == '\n') msg[--l] = '\0';
    fprintf(stderr, "sluice %s: %s\n", cmd, msg);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Connects with url (--database), else DATABASE_URL, else the libpq
 * environment. Returns NULL after printing why. */
static PGconn *connect_db(const char *cmd, const char *url) {
    if (!url) url = getenv("DATABASE_URL");
    if (!url) url = "";
    sl_redact_reload();
    conn_password[0] = '\0';
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val)
            snprintf(conn_password, sizeof conn_password, "%s", o->val);
    PQconninfoFree(opts);
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        say(cmd, "cannot connect to the database: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, NULL, NULL);
    return c;
}

/* Prints a database error, adding a hint when the schema is missing. */
static void say_db(const char *cmd, PGconn *c, const PGresult *r,
                   const char *what) {
    const char *m = r ? PQresultErrorMessage(r) : "";
    if (!m || !*m) m = PQerrorMessage(c);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", m);
    size_t l = strlen(msg);
    while (l > 0 && (msg[l - 1] == '\n' || msg[l - 1] == ' ')) msg[--l] = 0;
    say(cmd, "%s: %s%s", what, msg,
        state && strcmp(state, "42P01") == 0
            ? "\n(hint: run `sluice migrate` to create the queue tables)"
            : "");
}

/* Runs the SQL built in q (freed here) with the one parameter id. Returns
 * the result, or NULL after saying what failed (`what`). */
static PGresult *query_id(const char *cmd, PGconn *c, sl_buf *q,
                          const char *id, const char *what) {
    const char *vals[1] = {id};
    PGresult *r = PQexecParams(c, sl_buf_str(q), 1, NULL, vals, NULL, NULL, 0);
    sl_buf_free(q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        say_db(cmd, c, r, what);
        PQclear(r);
        return NULL;
    }
    return r;
}

static void lower(char *s) {
    for (; *s; s++) *s = (char)tolower((unsigned char)*s);
}

/* "250ms", "3.2s", "4m05s", "2h03m", "3d04h". */
static void fmt_secs(char *out, size_t n, double s) {
    if (s < 0) s = 0;
    if (s < 1)
        snprintf(out, n, "%dms", (int)(s * 1000 + 0.5));
    else if (s < 60)
        snprintf(out, n, "%.1fs", s);
    else if (s < 3600)
        snprintf(out, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else if (s < 86400)
        snprintf(out, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
    else
        snprintf(out, n, "%dd%02dh", (int)(s / 86400),
                 (int)(s - 86400.0 * (int)(s / 86400)) / 3600);
}

/* The stage of model m called `name` (stage or queue name); NULL with a
 * message when there is none or the stage name is ambiguous. */
static const sl_stage *find_queue(const char *cmd, const sl_model *m,
                                  const char *name) {
    const sl_stage *s = sl_model_stage_by_queue(m, name), *found = NULL;
    if (s) return s;
    int n = 0;
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t j = 0; j < m->pipelines[i].nstages; j++)
            if (strcmp(m->pipelines[i].stages[j].name, name) == 0) {
                found = &m->pipelines[i].stages[j];
                n++;
            }
    if (n == 1) return found;
    if (n > 1)
        say(cmd, "stage name '%s' is used by several pipelines: give the "
                 "queue name", name);
    else
        say(cmd, "no queue or stage named '%s' in the loaded pipelines",
            name);
    return NULL;
}

/* Returns 1 when argv has -h/--help (checked before loading pipelines). */
static int wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    }
    return 0;
}

/* A duration option; prints the error. */
static int parse_duration(const char *cmd, const char *opt, const char *v,
                          int64_t *ms) {
    if (sl_duration_parse(v, ms) == 0) return 0;
    say(cmd, "bad %s '%s' (expected a duration such as 250ms, 30s, 5m, 2h, "
             "1d)", opt, v);
    return -1;
}

static int parse_int(const char *cmd, const char *opt, const char *v,
                     long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi) {
        say(cmd, "bad %s '%s' (expected an integer %ld..%ld)", opt, v, lo, hi);
        return -1;
    }
    *out = n;
    return 0;
}

/* Appends the subject foreign key of stage s as text (or NULL::text),
 * qualified by alias when not NULL. */
static void fk_text(sl_buf *b, const sl_stage *s, const char *alias) {
    if (s->pipeline->has_subject) {
        if (alias) sl_buf_printf(b, "%s.", alias);
        sl_buf_ident(b, s->pipeline->subject.fk);
        sl_buf_puts(b, "::text");
    } else {
        sl_buf_puts(b, "NULL::text");
    }
}

/* ---- tables ---------------------------------------------------------------- */

/* How print_table shows a column: 's' text, 'r' right-aligned text,
 * 'd' seconds as a duration, 'e' long text cut to 60 characters. */
typedef struct col_spec {
    const char *title;
    char kind;
} col_spec;

static void cell(char *out, size_t n, const PGresult *r, int row, int col,
                 char kind) {
    if (PQgetisnull(r, row, col)) {
        snprintf(out, n, "-");
        return;
    }
    const char *v = PQgetvalue(r, row, col);
    if (kind == 'd') {
        fmt_secs(out, n, atof(v));
    } else if (kind == 'e') {
        /* One line, cut at 60 characters. */
        size_t k = 0;
        for (const char *p = v; *p && k < n - 1; p++)
            out[k++] = (*p == '\n' || *p == '\t') ? ' ' : *p;
        out[k] = '\0';
        if (k > 60) snprintf(out + 57, n - 57, "...");
    } else {
        snprintf(out, n, "%s", v);
    }
}

static void print_table(const PGresult *r, const col_spec *cols, int ncols) {
    int rows = PQntuples(r);
    int w[32];
    char buf[512];
    for (int c = 0; c < ncols; c++) w[c] = (int)strlen(cols[c].title);
    for (int i = 0; i < rows; i++)
        for (int c = 0; c < ncols; c++) {
            cell(buf, sizeof buf, r, i, c, cols[c].kind);
            if ((int)strlen(buf) > w[c]) w[c] = (int)strlen(buf);
        }
    for (int c = 0; c < ncols; c++) {
        int right = cols[c].kind == 'r' || cols[c].kind == 'd';
        if (c + 1 < ncols)
            printf(right ? "%*s  " : "%-*s  ", w[c], cols[c].title);
        else
            printf("%s\n", cols[c].title);
    }
    for (int i = 0; i < rows; i++)
        for (int c = 0; c < ncols; c++) {
            int right = cols[c].kind == 'r' || cols[c].kind == 'd';
            cell(buf, sizeof buf, r, i, c, cols[c].kind);
            if (c + 1 < ncols)
                printf(right ? "%*s  " : "%-*s  ", w[c], buf);
            else
                printf("%s\n", buf);
        }
}

/* The result as a JSON array of objects keyed by column name; numbers and
 * booleans typed from the column's type. */
static void print_json(const PGresult *r) {
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *o = json_object();
        for (int c = 0; c < PQnfields(r); c++) {
            const char *v = PQgetvalue(r, i, c);
            json_t *j;
            if (PQgetisnull(r, i, c)) {
                j = json_null();
            } else {
                switch (PQftype(r, c)) {
                case 20: case 21: case 23: /* int8, int2, int4 */
                    j = json_integer(strtoll(v, NULL, 10));
                    break;
                case 700: case 701: case 1700: /* float4/8, numeric */
                    j = json_real(strtod(v, NULL));
                    break;
                case 16: j = json_boolean(v[0] == 't'); break;
                default: j = json_string(v);
                }
            }
            json_object_set_new(o, PQfname(r, c), j);
        }
        json_array_append_new(arr, o);
    }
    char *s = json_dumps(arr, JSON_INDENT(2));
    if (s) puts(s);
    free(s);
    json_decref(arr);
}

/* ---- sluice enqueue --------------------------------------------------------- */

static void enqueue_usage(FILE *f) {
    fprintf(f,
        "usage: sluice enqueue PIPELINE [--subject ID] [--stage NAME]\n"
        "                      [--file PATH] [--url URL] [--json JSON]\n"
        "                      [--set COL=VALUE]... [--priority N]\n"
        "                      [--run-at TIMESTAMP | --delay DURATION]\n"
        "       sluice enqueue PIPELINE [--stage NAME] --bulk FILE\n"
        "\n"
        "Inserts a job into the pipeline's entry stage (or --stage) and "
        "prints its id.\n"
        "  --subject ID        the subject row (required when the pipeline "
        "has one)\n"
        "  --stage NAME        stage or queue name (default: the entry "
        "stage)\n"
        "  --file PATH         the file's bytes into the stage's first "
        "bytea column\n"
        "                      (at most %zu MiB)\n"
        "  --url URL           into column external_url (else the first text "
        "column\n"
        "                      whose name ends in url)\n"
        "  --json JSON         into the jsonb column payload; without one, an "
        "object\n"
        "                      fills declared columns by name\n"
        "  --set COL=VALUE     one declared column (repeatable)\n"
        "  --priority N        higher runs first (default: the stage's)\n"
        "  --run-at TIMESTAMP  not before this time (\"2030-01-01 "
        "12:00+00\")\n"
        "  --delay DURATION    not before now + DURATION (30s, 5m)\n"
        "  --bulk FILE         one JSON object per line ({\"subject\": ..., "
        "\"columns\":\n"
        "                      {...}, \"priority\": N, \"run_at\": ...}), all "
        "in one\n"
        "                      transaction; \"-\" reads stdin; prints the "
        "count\n"
        "  -p, --pipelines PATH   pipeline file or directory (repeatable)\n"
        "  --database URL      default $DATABASE_URL, else the libpq "
        "environment\n",
        SL_JOBS_MAX_FILE >> 20);
}

/* The stage's column for --url: external_url, else the first text column
 * whose name ends in "url". */
static const sl_column *url_column(const sl_stage *s) {
    const sl_column *c = sl_jobs_column(s, "external_url");
    if (c) return c;
    for (size_t i = 0; i < s->ncolumns; i++) {
        const char *n = s->columns[i].name;
        size_t l = strlen(n);
        if (strcmp(s->columns[i].type, "text") == 0 && l >= 3 &&
            strcmp(n + l - 3, "url") == 0)
            return &s->columns[i];
    }
    return NULL;
}

static void list_columns(char *out, size_t n, const sl_stage *s) {
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->ncolumns && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s (%s)", i ? ", " : "",
                              s->columns[i].name, s->columns[i].type);
    if (s->ncolumns == 0) snprintf(out, n, "none");
}

/* Reads FILE (or stdin for "-") line by line and inserts the jobs in
 * batches of SL_JOBS_BATCH within one transaction. */
static int enqueue_bulk(PGconn *c, const sl_stage *s, const char *path) {
    const char *cmd = "enqueue";
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        say(cmd, "cannot open %s: %s", path, strerror(errno));
        return SL_EXIT_FAILURE;
    }
    int rc = SL_EXIT_FAILURE;
    char *line = NULL, err[1024];
    size_t cap = 0, lineno = 0;
    size_t lines[SL_JOBS_BATCH];
    long total = 0;
    json_t *batch = json_array();
    PGresult *r = PQexec(c, "BEGIN");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        say_db(cmd, c, r, "begin");
        PQclear(r);
        goto out;
    }
    PQclear(r);
    for (;;) {
        ssize_t len = getline(&line, &cap, f);
        int eof = len < 0;
        if (!eof) {
            lineno++;
            const char *p = line;
            while (isspace((unsigned char)*p)) p++;
            if (*p == '\0') continue;
            json_error_t je;
            json_t *row = json_loads(p, JSON_DISABLE_EOF_CHECK, &je);
            if (!row) {
                say(cmd, "%s:%zu: invalid JSON: %s", path, lineno, je.text);
                goto rollback;
            }
            if (sl_jobs_check_row(s, row, err, sizeof err) != 0) {
                say(cmd, "%s:%zu: %s", path, lineno, err);
                json_decref(row);
                goto rollback;
            }
            lines[json_array_size(batch)] = lineno;
            json_array_append_new(batch, row);
        }
        if (json_array_size(batch) == SL_JOBS_BATCH ||
            (eof && json_array_size(batch) > 0)) {
            long n = 0;
            size_t bad = 0;
            int e = sl_jobs_enqueue_batch(c, s, batch, &n, &bad, err,
                                          sizeof err);
            if (e != 0) {
                if (bad > 0)
                    say(cmd, "%s:%zu: %s", path, lines[bad - 1],
                        strchr(err, ':') ? strchr(err, ':') + 2 : err);
                else
                    say(cmd, "%s", err);
                goto rollback;
            }
            total += n;
            json_array_clear(batch);
        }
        if (eof) break;
    }
    if (ferror(f)) {
        say(cmd, "reading %s: %s", path, strerror(errno));
        goto rollback;
    }
    r = PQexec(c, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        say_db(cmd, c, r, "commit");
        PQclear(r);
        goto out;
    }
    PQclear(r);
    printf("enqueued %ld job%s into %s\n", total, total == 1 ? "" : "s",
           s->queue);
    rc = SL_EXIT_OK;
    goto out;
rollback:
    PQclear(PQexec(c, "ROLLBACK"));
    fprintf(stderr, "sluice enqueue: nothing was enqueued\n");
out:
    json_decref(batch);
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

/* The file mapped read-only; *len its size. NULL with a message. */
static void *map_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    void *p = NULL;
    if (fd < 0) {
        say("enqueue", "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        say("enqueue", "%s is not a regular file", path);
        goto out;
    }
    if ((size_t)st.st_size > SL_JOBS_MAX_FILE) {
        say("enqueue", "%s is %lld bytes, over the limit of %zu MiB for one "
                       "job (store it elsewhere and pass --url)",
            path, (long long)st.st_size, SL_JOBS_MAX_FILE >> 20);
        goto out;
    }
    *len = (size_t)st.st_size;
    if (*len == 0) {
        p = (void *)""; /* an empty file is an empty value */
        goto out;
    }
    p = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        say("enqueue", "cannot read %s: %s", path, strerror(errno));
        p = NULL;
    }
out:
    close(fd);
    return p;
}

int sl_cmd_enqueue(int argc, char **argv) {
    const char *cmd = "enqueue";
    if (wants_help(argc, argv)) {
        enqueue_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;

    const char *subject = NULL, *stage_name = NULL, *file = NULL, *url = NULL,
               *json_text = NULL, *bulk = NULL, *db = NULL;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int nsets = 0;
    sl_enqueue_opts o;
    memset(&o, 0, sizeof o);
    json_t *columns = json_object();
    void *mapped = NULL;
    size_t mapped_len = 0;
    PGconn *c = NULL;
    char err[2048];
    rc = SL_EXIT_USAGE;
    if (!sets || !columns) goto out;

    static const struct option opts[] = {
        {"subject", required_argument, 0, 'S'},
        {"stage", required_argument, 0, 's'},
        {"file", required_argument, 0, 'f'},
        {"url", required_argument, 0, 'u'},
        {"json", required_argument, 0, 'j'},
        {"set", required_argument, 0, 'e'},
        {"priority", required_argument, 0, 'P'},
        {"run-at", required_argument, 0, 'r'},
        {"delay", required_argument, 0, 'd'},
        {"bulk", required_argument, 0, 'b'},
        {"database", required_argument, 0, 'D'},
        {0, 0, 0, 0}};
    int ch;
    long n;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'S': subject = optarg; break;
        case 's': stage_name = optarg; break;
        case 'f': file = optarg; break;
        case 'u': url = optarg; break;
        case 'j': json_text = optarg; break;
        case 'e': sets[nsets++] = optarg; break;
        case 'P':
            if (parse_int(cmd, "--priority", optarg, -2147483647L, 2147483647L,
                          &n) != 0)
                goto out;
            o.has_priority = 1;
            o.priority = (int)n;
            break;
        case 'r': o.run_at = optarg; break;
        case 'd':
            if (parse_duration(cmd, "--delay", optarg, &o.delay_ms) != 0)
                goto out;
            break;
        case 'b': bulk = optarg; break;
        case 'D': db = optarg; break;
        default: enqueue_usage(stderr); goto out;
        }
    }
    if (optind != argc - 1) {
        say(cmd, optind >= argc ? "which pipeline? (give its name)"
                                : "one pipeline name expected");
        enqueue_usage(stderr);
        goto out;
    }
    if (o.run_at && o.delay_ms) {
        say(cmd, "--run-at and --delay exclude each other");
        goto out;
    }
    if (bulk && (subject || file || url || json_text || nsets ||
                 o.has_priority || o.run_at || o.delay_ms)) {
        say(cmd, "--bulk takes every value from its file: it goes with "
                 "--stage only");
        goto out;
    }
    const char *pname = argv[optind];
    const sl_pipeline *p = sl_model_pipeline(m, pname);
    if (!p) {
        char names[512] = "";
        size_t k = 0;
        for (size_t i = 0; i < m->npipelines && k < sizeof names; i++)
            k += (size_t)snprintf(names + k, sizeof names - k, "%s%s",
                                  i ? ", " : "", m->pipelines[i].name);
        say(cmd, "no pipeline named '%s' (loaded: %s)", pname,
            k ? names : "none");
        rc = SL_EXIT_FAILURE;
        goto out;
    }
    const sl_stage *s = &p->stages[0];
    if (stage_name) {
        s = NULL;
        for (size_t i = 0; i < p->nstages && !s; i++)
            if (strcmp(p->stages[i].name, stage_name) == 0 ||
                strcmp(p->stages[i].queue, stage_name) == 0)
                s = &p->stages[i];
        if (!s) {
            say(cmd, "pipeline %s has no stage or queue named '%s'", pname,
                stage_name);
            rc = SL_EXIT_FAILURE;
            goto out;
        }
    }
    if (!bulk) {
        if (p->has_subject && !subject) {
            say(cmd, "pipeline %s has a subject (table %s): --subject ID is "
                     "required", p->name, p->subject.table);
            goto out;
        }
        if (!p->has_subject && subject) {
            say(cmd, "pipeline %s has no subject: leave --subject out",
                p->name);
            goto out;
        }
    }

    /* Column values: --json first, then --url and --set override. */
    char cols[1024];
    list_columns(cols, sizeof cols, s);
    if (json_text) {
        json_error_t je;
        json_t *v = json_loads(json_text, JSON_DECODE_ANY, &je);
        const sl_column *pc = sl_jobs_column(s, "payload");
        if (!v) {
            say(cmd, "--json: invalid JSON: %s", je.text);
            goto out;
        }
        if (pc && (strcmp(pc->type, "jsonb") == 0 ||
                   strcmp(pc->type, "json") == 0)) {
            json_object_set_new(columns, "payload", v);
        } else if (json_is_object(v)) {
            json_object_update(columns, v);
            json_decref(v);
        } else {
            json_decref(v);
            say(cmd, "--json: stage %s has no jsonb column payload, so the "
                     "JSON must be an object naming its columns (%s)",
                s->name, cols);
            goto out;
        }
    }
    if (url) {
        const sl_column *uc = url_column(s);
        if (!uc) {
            say(cmd, "--url: stage %s has no column external_url nor a text "
                     "column ending in url (columns: %s)", s->name, cols);
            goto out;
        }
        json_object_set_new(columns, uc->name, json_string(url));
    }
    for (int i = 0; i < nsets; i++) {
        char *eq = strchr(sets[i], '=');
        if (!eq || eq == sets[i]) {
            say(cmd, "--set takes COL=VALUE, not '%s'", sets[i]);
            goto out;
        }
        *eq = '\0';
        const sl_column *col = sl_jobs_column(s, sets[i]);
        if (!col) {
            say(cmd, "--set: stage %s declares no column %s (columns: %s)",
                s->name, sets[i], cols);
            goto out;
        }
        json_t *v = NULL;
        if (sl_jobs_value_from_text(col, eq + 1, &v, err, sizeof err) != 0) {
            say(cmd, "--set: %s", err);
            goto out;
        }
        json_object_set_new(columns, col->name, v);
    }
    if (file) {
        const sl_column *bc = NULL;
        for (size_t i = 0; i < s->ncolumns && !bc; i++)
            if (strcmp(s->columns[i].type, "bytea") == 0) bc = &s->columns[i];
        if (!bc) {
            say(cmd, "--file: stage %s has no bytea column (columns: %s)",
                s->name, cols);
            goto out;
        }
        json_object_del(columns, bc->name);
        mapped = map_file(file, &mapped_len);
        if (!mapped) {
            rc = SL_EXIT_FAILURE;
            goto out;
        }
        o.bin_column = bc->name;
        o.bin_data = mapped;
        o.bin_len = mapped_len;
    }

    rc = SL_EXIT_FAILURE;
    c = connect_db(cmd, db);
    if (!c) goto out;
    if (bulk) {
        rc = enqueue_bulk(c, s, bulk);
        goto out;
    }
    char id[40];
    int e = sl_jobs_enqueue(c, s, subject, columns, &o, id, err, sizeof err);
    if (e != 0) {
        say(cmd, "%s", err);
        rc = e == -SL_EINVAL ? SL_EXIT_USAGE : SL_EXIT_FAILURE;
        goto out;
    }
    printf("%s\n", id);
    rc = SL_EXIT_OK;
out:
    if (mapped && mapped_len > 0) munmap(mapped, mapped_len);
    PQfinish(c);
    json_decref(columns);
    free(sets);
    sl_model_free(m);
    return rc;
}

/* ---- sluice status ------------------------------------------------------------ */

static void status_usage(FILE *f) {
    fprintf(f,
        "usage: sluice status ID [--pipeline NAME] [-p PATH]... "
        "[--database URL]\n"
        "\n"
        "Shows a subject (its status, progress and detail, then every stage's "
        "jobs:\n"
        "status, attempts, last error, timings), or one job when ID is a job "
        "id.\n"
        "  --pipeline NAME   only this pipeline\n");
}

/* The columns status prints for a job, selected from queue alias q. */
static void job_columns(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "SELECT q.id::text, q.status::text, q.attempts, q.last_error,"
                   " q.error_class, q.created_at::timestamptz(0)::text,"
                   " q.started_at::timestamptz(0)::text,"
                   " q.finished_at::timestamptz(0)::text,"
                   " EXTRACT(EPOCH FROM COALESCE(q.finished_at, CASE WHEN"
                   " q.status = 'in_progress' THEN now() END) -"
                   " q.started_at)::float8,"
                   " q.run_at::timestamptz(0)::text,"
                   " CASE WHEN q.status IN ('pending','retry') AND q.run_at >"
                   " now() THEN EXTRACT(EPOCH FROM q.run_at - now())::float8"
                   " END, q.status_detail, q.progress, q.locked_by, ");
    fk_text(b, s, "q");
    sl_buf_puts(b, " FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " q");
}

/* Prints row i of a job_columns result, indented. */
static void print_job(const PGresult *r, int i, const sl_stage *s) {
#define V(k) (PQgetisnull(r, i, k) ? NULL : PQgetvalue(r, i, k))
    const char *status = V(1);
    char took[32] = "", wait[32] = "";
    const char *took_s = V(8), *wait_s = V(10);
    if (took_s) fmt_secs(took, sizeof took, atof(took_s));
    if (wait_s) fmt_secs(wait, sizeof wait, atof(wait_s));
    printf("    job %s  %-11s attempts %s/%d", V(0), status, V(2),
           s->retry.max_attempts);
    if (strcmp(status, "in_progress") == 0) {
        printf("  running %s on %s, progress %s%%%s%s", took[0] ? took : "?",
               V(13) ? V(13) : "?", V(12), V(11) ? ": " : "",
               V(11) ? V(11) : "");
    } else if (took[0]) {
        printf("  took %s", took);
    }
    printf("\n      created %s", V(5));
    if (V(6)) printf("  started %s", V(6));
    if (V(7)) printf("  finished %s", V(7));
    if (wait[0]) printf("  runs at %s (in %s)", V(9), wait);
    printf("\n");
    /* A done job keeps the error of an earlier, failed attempt. */
    if (V(3))
        printf("      %s%s%s%s: %s\n",
               strcmp(status, "done") == 0 ? "earlier error" : "last error",
               V(4) ? " (" : "", V(4) ? V(4) : "", V(4) ? ")" : "", V(3));
#undef V
}

/* Prints the subject block of pipeline p for subject id, when the row
 * exists. Returns 1 when shown, 0 when absent, -1 on a database error. */
static int status_subject(PGconn *c, const sl_pipeline *p, const char *id) {
    const sl_subject *sj = &p->subject;
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT ");
    sl_buf_ident(&q, sj->status_column);
    sl_buf_puts(&q, "::text, ");
    if (sj->progress_column) {
        sl_buf_ident(&q, sj->progress_column);
        sl_buf_puts(&q, "::text, ");
    } else {
        sl_buf_puts(&q, "NULL::text, ");
    }
    if (sj->detail_column) {
        sl_buf_ident(&q, sj->detail_column);
        sl_buf_puts(&q, "::text");
    } else {
        sl_buf_puts(&q, "NULL::text");
    }
    sl_buf_puts(&q, " FROM ");
    sl_buf_ident(&q, sj->table);
    sl_buf_puts(&q, " WHERE ");
    sl_buf_ident(&q, sj->key);
    sl_buf_puts(&q, " = $1::uuid");
    PGresult *r = query_id("status", c, &q, id, sj->table);
    if (!r) return -1;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 0;
    }
    printf("subject %s (pipeline %s, table %s)\n", id, p->name, sj->table);
    printf("  status    %s\n", PQgetvalue(r, 0, 0));
    if (!PQgetisnull(r, 0, 1)) printf("  progress  %s%%\n", PQgetvalue(r, 0, 1));
    if (!PQgetisnull(r, 0, 2)) printf("  detail    %s\n", PQgetvalue(r, 0, 2));
    PQclear(r);

    for (size_t k = 0; k < p->nstages; k++) {
        const sl_stage *s = &p->stages[k];
        sl_buf_init(&q);
        job_columns(&q, s);
        sl_buf_puts(&q, " WHERE q.");
        sl_buf_ident(&q, sj->fk);
        sl_buf_puts(&q, " = $1::uuid ORDER BY q.created_at, q.id");
        r = query_id("status", c, &q, id, s->queue);
        if (!r) return -1;
        printf("  stage %s (queue %s)%s\n", s->name, s->queue,
               PQntuples(r) ? "" : ": no job");
        for (int i = 0; i < PQntuples(r); i++) print_job(r, i, s);
        PQclear(r);
    }
    return 1;
}

/* Prints one job found by id. */
static int status_job(PGconn *c, const sl_job_ref *ref, const char *id) {
    const sl_stage *s = ref->stage;
    sl_buf q;
    sl_buf_init(&q);
    job_columns(&q, s);
    sl_buf_puts(&q, " WHERE q.id = $1::uuid");
    PGresult *r = query_id("status", c, &q, id, s->queue);
    if (!r) return -1;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 0;
    }
    printf("job %s (pipeline %s, stage %s, queue %s)\n", id,
           s->pipeline->name, s->name, s->queue);
    if (!PQgetisnull(r, 0, 14))
        printf("  subject %s (sluice status %s shows every stage)\n",
               PQgetvalue(r, 0, 14), PQgetvalue(r, 0, 14));
    print_job(r, 0, s);
    PQclear(r);
    return 1;
}

int sl_cmd_status(int argc, char **argv) {
    const char *cmd = "status";
    if (wants_help(argc, argv)) {
        status_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    const char *db = NULL, *only = NULL;
    static const struct option opts[] = {
        {"pipeline", required_argument, 0, 'P'},
        {"database", required_argument, 0, 'D'},
        {0, 0, 0, 0}};
    int ch;
    PGconn *c = NULL;
    rc = SL_EXIT_USAGE;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'P': only = optarg; break;
        case 'D': db = optarg; break;
        default: status_usage(stderr); goto out;
        }
    }
    if (optind != argc - 1) {
        status_usage(stderr);
        goto out;
    }
    char id[40];
    snprintf(id, sizeof id, "%s", argv[optind]);
    if (!sl_jobs_is_uuid(id)) {
        say(cmd, "'%s' is not a subject or job id (expected a UUID)",
            argv[optind]);
        goto out;
    }
    lower(id);
    if (only && !sl_model_pipeline(m, only)) {
        say(cmd, "no pipeline named '%s'", only);
        goto out;
    }
    rc = SL_EXIT_FAILURE;
    if (!(c = connect_db(cmd, db))) goto out;
    int shown = 0;
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        if (!p->has_subject || (only && strcmp(only, p->name) != 0)) continue;
        int r = status_subject(c, p, id);
        if (r < 0) goto out;
        if (r > 0 && shown) printf("\n");
        shown += r;
    }
    if (!shown) {
        sl_job_ref ref;
        char err[1024];
        if (sl_jobs_find(c, m, id, &ref, err, sizeof err) != 0) {
            say(cmd, "%s", err);
            goto out;
        }
        if (ref.stage && (!only || strcmp(only, ref.stage->pipeline->name) ==
                                       0)) {
            int r = status_job(c, &ref, id);
            if (r < 0) goto out;
            shown = r;
        }
    }
    if (!shown) {
        say(cmd, "no subject or job with id %s in the loaded pipelines", id);
        goto out;
    }
    rc = SL_EXIT_OK;
out:
    PQfinish(c);
    sl_model_free(m);
    return rc;
}

/* ---- sluice watch ---------------------------------------------------------------- */

static void watch_usage(FILE *f) {
    fprintf(f,
        "usage: sluice watch SUBJECT [--timeout DURATION] [--pipeline NAME]\n"
        "                    [-p PATH]... [--database URL]\n"
        "\n"
        "Follows a subject live (LISTEN on the pipeline's subject.channel) "
        "with a\n"
        "progress bar. Exits 0 when the subject reaches the pipeline's final "
        "status\n"
        "(its last stage's on_done status), 1 at the error status once no "
        "job is left\n"
        "to run (printing the failed job's last error), when its jobs were "
        "cancelled,\n"
        "or on --timeout.\n");
}

typedef struct watch {
    PGconn *c;
    const sl_pipeline *p;
    const char *id;
    const char *finals[16]; /* the pipeline's final statuses */
    int nfinals;
    const char *errors[16]; /* its error statuses */
    int nerrors;
    int tty;
    char status[128], detail[512];
    int progress; /* -1: no progress column */
    char last_line[800];
} watch;

static int in_list(const char *const *list, int n, const char *v) {
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], v) == 0) return 1;
    return 0;
}

/* Marks the stages reachable from s and collects the on_done status of the
 * reachable stages with no next stage. */
static void collect_finals(watch *w, const sl_stage *s, int *seen) {
    size_t k = (size_t)(s - w->p->stages);
    if (seen[k]) return;
    seen[k] = 1;
    if (s->nnext == 0 && s->status.on_done.status && w->nfinals < 16 &&
        !in_list(w->finals, w->nfinals, s->status.on_done.status))
        w->finals[w->nfinals++] = s->status.on_done.status;
    for (size_t i = 0; i < s->nnext; i++)
        if (s->next[i].stage) collect_finals(w, s->next[i].stage, seen);
}

/* Reads the subject row into w. Returns 1 found, 0 gone, -1 error. */
static int watch_read(watch *w) {
    const sl_subject *sj = &w->p->subject;
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT ");
    sl_buf_ident(&q, sj->status_column);
    sl_buf_puts(&q, "::text, ");
    if (sj->progress_column) sl_buf_ident(&q, sj->progress_column);
    else sl_buf_puts(&q, "NULL");
    sl_buf_puts(&q, "::int, ");
    if (sj->detail_column) sl_buf_ident(&q, sj->detail_column);
    else sl_buf_puts(&q, "NULL");
    sl_buf_puts(&q, "::text FROM ");
    sl_buf_ident(&q, sj->table);
    sl_buf_puts(&q, " WHERE ");
    sl_buf_ident(&q, sj->key);
    sl_buf_puts(&q, " = $1::uuid");
    PGresult *r = query_id("watch", w->c, &q, w->id, sj->table);
    if (!r) return -1;
    int found = PQntuples(r) > 0;
    if (found) {
        snprintf(w->status, sizeof w->status, "%s", PQgetvalue(r, 0, 0));
        w->progress = PQgetisnull(r, 0, 1) ? -1 : atoi(PQgetvalue(r, 0, 1));
        snprintf(w->detail, sizeof w->detail, "%s",
                 PQgetisnull(r, 0, 2) ? "" : PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    return found;
}

/* Applies a NOTIFY payload ({"id","status","progress","detail"}) for our
 * subject. Returns 1 when it was ours. */
static int watch_apply(watch *w, const char *payload) {
    json_t *o = json_loads(payload, 0, NULL);
    const char *id = json_string_value(json_object_get(o, "id"));
    int ours = id && strcasecmp(id, w->id) == 0;
    if (ours) {
        json_t *v = json_object_get(o, "status");
        if (json_is_string(v))
            snprintf(w->status, sizeof w->status, "%s", json_string_value(v));
        v = json_object_get(o, "progress");
        if (json_is_integer(v)) w->progress = (int)json_integer_value(v);
        v = json_object_get(o, "detail");
        if (json_is_string(v) || json_is_null(v))
            snprintf(w->detail, sizeof w->detail, "%s",
                     json_is_string(v) ? json_string_value(v) : "");
    }
    json_decref(o);
    return ours;
}

/* Draws the progress line: in place on a terminal, else one line per
 * change. */
static void watch_draw(watch *w) {
    char line[800];
    size_t k = 0;
    if (w->progress >= 0) {
        int pct = w->progress < 0 ? 0 : w->progress > 100 ? 100 : w->progress;
        int fill = pct * 30 / 100;
        line[k++] = '[';
        for (int i = 0; i < 30; i++) line[k++] = i < fill ? '#' : '.';
        k += (size_t)snprintf(line + k, sizeof line - k, "] %3d%%  ", pct);
    }
    snprintf(line + k, sizeof line - k, "%s%s%s", w->status,
             w->detail[0] ? "  " : "", w->detail);
    if (strcmp(line, w->last_line) == 0) return;
    snprintf(w->last_line, sizeof w->last_line, "%s", line);
    if (w->tty)
        printf("\r%s\033[K", line);
    else
        printf("%s\n", line);
    fflush(stdout);
}

/* Counts of the subject's jobs across the pipeline's stages. */
typedef struct job_counts {
    long total, unfinished, error, cancelled, final_done;
} job_counts;

static int watch_jobs(watch *w, job_counts *n) {
    const sl_pipeline *p = w->p;
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT count(*), count(*) FILTER (WHERE st IN"
                    " ('pending','retry','in_progress')), count(*) FILTER"
                    " (WHERE st = 'error'), count(*) FILTER (WHERE st ="
                    " 'cancelled'), count(*) FILTER (WHERE st = 'done' AND"
                    " last) FROM (");
    for (size_t k = 0; k < p->nstages; k++) {
        if (k) sl_buf_puts(&q, " UNION ALL ");
        sl_buf_printf(&q, "SELECT status::text AS st, %s AS last FROM ",
                      p->stages[k].nnext == 0 ? "true" : "false");
        sl_buf_ident(&q, p->stages[k].queue);
        sl_buf_puts(&q, " WHERE ");
        sl_buf_ident(&q, p->subject.fk);
        sl_buf_puts(&q, " = $1::uuid");
    }
    sl_buf_puts(&q, ") j");
    PGresult *r = query_id("watch", w->c, &q, w->id,
                           "reading the subject's jobs");
    if (!r) return -1;
    n->total = atol(PQgetvalue(r, 0, 0));
    n->unfinished = atol(PQgetvalue(r, 0, 1));
    n->error = atol(PQgetvalue(r, 0, 2));
    n->cancelled = atol(PQgetvalue(r, 0, 3));
    n->final_done = atol(PQgetvalue(r, 0, 4));
    PQclear(r);
    return 0;
}

/* Prints the most recent failed job of the subject and its last error. */
static void watch_print_failure(watch *w) {
    const sl_pipeline *p = w->p;
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "SELECT * FROM (");
    for (size_t k = 0; k < p->nstages; k++) {
        if (k) sl_buf_puts(&q, " UNION ALL ");
        sl_buf_printf(&q, "SELECT %zu AS k, id::text, attempts, last_error,"
                          " error_class, finished_at FROM ", k);
        sl_buf_ident(&q, p->stages[k].queue);
        sl_buf_puts(&q, " WHERE ");
        sl_buf_ident(&q, p->subject.fk);
        sl_buf_puts(&q, " = $1::uuid AND status = 'error'");
    }
    sl_buf_puts(&q, ") e ORDER BY finished_at DESC NULLS LAST LIMIT 1");
    const char *vals[1] = {w->id};
    PGresult *r =
        PQexecParams(w->c, sl_buf_str(&q), 1, NULL, vals, NULL, NULL, 0);
    sl_buf_free(&q);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
        const sl_stage *s = &p->stages[atoi(PQgetvalue(r, 0, 0))];
        say("watch", "stage %s failed (job %s, attempt %s/%d%s%s): %s",
            s->name, PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
            s->retry.max_attempts, PQgetisnull(r, 0, 4) ? "" : ", ",
            PQgetisnull(r, 0, 4) ? "" : PQgetvalue(r, 0, 4),
            PQgetisnull(r, 0, 3) ? "(no message)" : PQgetvalue(r, 0, 3));
    } else if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        say_db("watch", w->c, r, "reading the failed job");
    }
    PQclear(r);
}

/* Decides whether watching is over: 0 success, 1 failure, -1 go on.
 * `check_jobs` also looks at the jobs (the slow safety re-read). */
static int watch_verdict(watch *w, int check_jobs) {
    job_counts n;
    if (in_list(w->finals, w->nfinals, w->status)) return SL_EXIT_OK;
    int at_error = in_list(w->errors, w->nerrors, w->status);
    if (!at_error && !check_jobs) return -1;
    /* The error status is final only when nothing is left to run: a
     * manual retry may already be waiting. */
    if (watch_jobs(w, &n) != 0) return SL_EXIT_FAILURE;
    if (n.unfinished > 0 || n.total == 0) return -1;
    if (at_error || n.error > 0) {
        if (w->tty) printf("\n");
        w->tty = 0;
        watch_print_failure(w);
        return SL_EXIT_FAILURE;
    }
    if (n.cancelled > 0 && n.final_done == 0) {
        if (w->tty) printf("\n");
        w->tty = 0;
        say("watch", "the subject's jobs were cancelled (status %s)",
            w->status);
        return SL_EXIT_FAILURE;
    }
    if (w->nfinals == 0 && n.final_done > 0) return SL_EXIT_OK;
    return -1;
}

int sl_cmd_watch(int argc, char **argv) {
    const char *cmd = "watch";
    if (wants_help(argc, argv)) {
        watch_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    const char *db = NULL, *only = NULL;
    int64_t timeout_ms = -1;
    static const struct option opts[] = {
        {"timeout", required_argument, 0, 't'},
        {"pipeline", required_argument, 0, 'P'},
        {"database", required_argument, 0, 'D'},
        {0, 0, 0, 0}};
    int ch;
    watch w;
    memset(&w, 0, sizeof w);
    rc = SL_EXIT_USAGE;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 't':
            if (parse_duration(cmd, "--timeout", optarg, &timeout_ms) != 0)
                goto out;
            break;
        case 'P': only = optarg; break;
        case 'D': db = optarg; break;
        default: watch_usage(stderr); goto out;
        }
    }
    if (optind != argc - 1) {
        watch_usage(stderr);
        goto out;
    }
    char id[40];
    snprintf(id, sizeof id, "%s", argv[optind]);
    if (!sl_jobs_is_uuid(id)) {
        say(cmd, "'%s' is not a subject id (expected a UUID)", argv[optind]);
        goto out;
    }
    lower(id);
    w.id = id;
    rc = SL_EXIT_FAILURE;
    if (!(w.c = connect_db(cmd, db))) goto out;

    /* The pipeline: the one whose subject table holds the row. */
    int matches = 0;
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        if (!p->has_subject || (only && strcmp(only, p->name) != 0)) continue;
        watch probe = w;
        probe.p = p;
        int r = watch_read(&probe);
        if (r < 0) goto out;
        if (r > 0) {
            if (matches++ == 0) w.p = p;
            else {
                say(cmd, "subject %s belongs to pipelines %s and %s: choose "
                         "one with --pipeline", id, w.p->name, p->name);
                rc = SL_EXIT_USAGE;
                goto out;
            }
        }
    }
    if (!w.p) {
        say(cmd, "no subject with id %s in %s", id,
            only ? only : "the loaded pipelines");
        goto out;
    }
    int *seen = calloc(w.p->nstages, sizeof *seen);
    if (!seen) goto out;
    collect_finals(&w, &w.p->stages[0], seen);
    free(seen);
    for (size_t k = 0; k < w.p->nstages; k++) {
        const char *e = w.p->stages[k].status.on_error.status;
        if (e && w.nerrors < 16 && !in_list(w.errors, w.nerrors, e))
            w.errors[w.nerrors++] = e;
    }
    w.tty = isatty(STDOUT_FILENO);

    /* LISTEN before the first read, so no change falls in between. */
    const char *channel = w.p->subject.channel;
    int64_t reread_ms = 2000;
    if (channel) {
        sl_buf q;
        sl_buf_init(&q);
        sl_buf_puts(&q, "LISTEN ");
        sl_buf_ident(&q, channel);
        PGresult *r = PQexec(w.c, sl_buf_str(&q));
        sl_buf_free(&q);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            say_db(cmd, w.c, r, "listen");
            PQclear(r);
            goto out;
        }
        PQclear(r);
    } else {
        reread_ms = 500;
        fprintf(stderr, "sluice watch: pipeline %s has no subject.channel; "
                        "re-reading every 500ms\n", w.p->name);
    }
    if (watch_read(&w) <= 0) goto out;
    watch_draw(&w);

    int64_t start = now_ms(), next_reread = start + reread_ms;
    int verdict = watch_verdict(&w, 1);
    while (verdict < 0) {
        int64_t now = now_ms();
        if (timeout_ms >= 0 && now - start >= timeout_ms) {
            if (w.tty) printf("\n");
            say(cmd, "timed out after %lldms (status %s)",
                (long long)timeout_ms, w.status);
            goto out;
        }
        int64_t wait = next_reread - now;
        if (timeout_ms >= 0 && start + timeout_ms - now < wait)
            wait = start + timeout_ms - now;
        if (wait < 0) wait = 0;
        struct pollfd pfd = {PQsocket(w.c), POLLIN, 0};
        int pr = poll(&pfd, 1, (int)wait);
        if (pr < 0 && errno != EINTR) {
            say(cmd, "poll: %s", strerror(errno));
            goto out;
        }
        int changed = 0, reread = now_ms() >= next_reread;
        if (pr > 0) {
            if (!PQconsumeInput(w.c)) {
                if (w.tty) printf("\n");
                say(cmd, "lost the database connection: %s",
                    PQerrorMessage(w.c));
                goto out;
            }
            PGnotify *nt;
            while ((nt = PQnotifies(w.c)) != NULL) {
                /* The channel carries no payload (docs/schema.md): re-read
                 * the row. A payload is from a database not yet migrated. */
                if (!nt->extra[0]) reread = 1;
                else changed |= watch_apply(&w, nt->extra);
                PQfreemem(nt);
            }
        }
        if (reread) {
            /* The safety net for a missed notification. */
            int r = watch_read(&w);
            if (r < 0) goto out;
            if (r == 0) {
                if (w.tty) printf("\n");
                say(cmd, "subject %s was deleted", id);
                goto out;
            }
            next_reread = now_ms() + reread_ms;
        }
        if (changed || reread) {
            watch_draw(&w);
            verdict = watch_verdict(&w, reread);
        }
    }
    if (w.tty) printf("\n");
    rc = verdict;
out:
    fflush(stdout);
    PQfinish(w.c);
    sl_model_free(m);
    return rc;
}

/* ---- sluice jobs ----------------------------------------------------------------- */

static void jobs_usage(FILE *f) {
    fprintf(f,
        "usage: sluice jobs [--queue Q] [--status S] [--older-than DURATION]\n"
        "                   [--limit N] [--json] [-p PATH]... "
        "[--database URL]\n"
        "\n"
        "Lists jobs across the loaded pipelines' queues, newest first.\n"
        "  --queue Q              a queue or stage name\n"
        "  --status S             pending, in_progress, retry, done, error or "
        "cancelled\n"
        "  --older-than DURATION  created more than DURATION ago (10m, 1h)\n"
        "  --limit N              at most N jobs (default 50)\n"
        "  --json                 a JSON array instead of a table\n");
}

int sl_cmd_jobs(int argc, char **argv) {
    const char *cmd = "jobs";
    static const char *const statuses[] = {"pending", "in_progress", "retry",
                                           "done",    "error",       "cancelled"};
    if (wants_help(argc, argv)) {
        jobs_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    const char *db = NULL, *queue = NULL, *status = NULL;
    int64_t older = -1;
    long limit = 50;
    int as_json = 0;
    static const struct option opts[] = {
        {"queue", required_argument, 0, 'q'},
        {"status", required_argument, 0, 's'},
        {"older-than", required_argument, 0, 'o'},
        {"limit", required_argument, 0, 'l'},
        {"json", no_argument, 0, 'j'},
        {"database", required_argument, 0, 'D'},
        {0, 0, 0, 0}};
    int ch;
    PGconn *c = NULL;
    PGresult *r = NULL;
    sl_buf q;
    sl_buf_init(&q);
    rc = SL_EXIT_USAGE;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'q': queue = optarg; break;
        case 's': status = optarg; break;
        case 'o':
            if (parse_duration(cmd, "--older-than", optarg, &older) != 0)
                goto out;
            break;
        case 'l':
            if (parse_int(cmd, "--limit", optarg, 1, 1000000, &limit) != 0)
                goto out;
            break;
        case 'j': as_json = 1; break;
        case 'D': db = optarg; break;
        default: jobs_usage(stderr); goto out;
        }
    }
    if (optind != argc) {
        jobs_usage(stderr);
        goto out;
    }
    if (status) {
        int ok = 0;
        for (size_t i = 0; i < 6; i++) ok |= strcmp(statuses[i], status) == 0;
        if (!ok) {
            say(cmd, "bad --status '%s' (pending, in_progress, retry, done, "
                     "error or cancelled)", status);
            goto out;
        }
    }
    const sl_stage *one = NULL;
    if (queue && !(one = find_queue(cmd, m, queue))) {
        rc = SL_EXIT_FAILURE;
        goto out;
    }
    rc = SL_EXIT_FAILURE;
    int branches = 0;
    sl_buf_puts(&q, "SELECT queue, id, subject, status, attempts, priority,"
                    " age, runs_in, error_class, last_error FROM (");
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            const sl_stage *s = &m->pipelines[i].stages[k];
            if (one && one != s) continue;
            if (branches++) sl_buf_puts(&q, " UNION ALL ");
            sl_buf_puts(&q, "(SELECT ");
            sl_buf_literal(&q, s->queue);
            sl_buf_puts(&q, "::text AS queue, id::text AS id, ");
            fk_text(&q, s, NULL);
            sl_buf_printf(&q, " AS subject, status::text AS status,"
                              " attempts::text || '/%d' AS attempts,"
                              " priority, EXTRACT(EPOCH FROM now() -"
                              " created_at)::float8 AS age, CASE WHEN status"
                              " IN ('pending','retry') AND run_at > now()"
                              " THEN EXTRACT(EPOCH FROM run_at -"
                              " now())::float8 END AS runs_in, error_class,"
                              " last_error, created_at FROM ",
                          s->retry.max_attempts);
            sl_buf_ident(&q, s->queue);
            sl_buf_puts(&q, " WHERE ($1::text IS NULL OR status::text = $1)"
                            " AND ($2::bigint IS NULL OR created_at < now() -"
                            " $2::bigint * interval '1 millisecond')"
                            " ORDER BY created_at DESC LIMIT $3)");
        }
    if (branches == 0) {
        if (as_json) puts("[]");
        else printf("no queues in the loaded pipelines\n");
        rc = SL_EXIT_OK;
        goto out;
    }
    sl_buf_puts(&q, ") j ORDER BY created_at DESC, id LIMIT $3");
    if (!(c = connect_db(cmd, db))) goto out;
    char olders[24], limits[24];
    snprintf(olders, sizeof olders, "%lld", (long long)older);
    snprintf(limits, sizeof limits, "%ld", limit);
    const char *vals[3] = {status, older >= 0 ? olders : NULL, limits};
    r = PQexecParams(c, sl_buf_str(&q), 3, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        say_db(cmd, c, r, "list jobs");
        goto out;
    }
    if (as_json) {
        print_json(r);
    } else if (PQntuples(r) == 0) {
        printf("no jobs\n");
    } else {
        static const col_spec cols[] = {
            {"QUEUE", 's'},  {"ID", 's'},       {"SUBJECT", 's'},
            {"STATUS", 's'}, {"ATTEMPTS", 'r'}, {"PRIORITY", 'r'},
            {"AGE", 'd'},    {"RUNS IN", 'd'},  {"CLASS", 's'},
            {"LAST ERROR", 'e'}};
        print_table(r, cols, 10);
        if (PQntuples(r) == limit)
            fprintf(stderr, "(the newest %ld; --limit N shows more)\n", limit);
    }
    rc = SL_EXIT_OK;
out:
    PQclear(r);
    sl_buf_free(&q);
    PQfinish(c);
    sl_model_free(m);
    return rc;
}

/* ---- sluice retry / cancel ---------------------------------------------------------- */

static void retry_usage(FILE *f) {
    fprintf(f,
        "usage: sluice retry JOB_ID... [-p PATH]... [--database URL]\n"
        "       sluice retry --queue Q --failed\n"
        "\n"
        "Runs failed (error) or cancelled jobs again: status retry, run at "
        "once,\n"
        "attempts reset to 0 (a manual retry grants a fresh set of attempts);\n"
        "last_error stays until the job runs; a saved checkpoint is resumed.\n"
        "  --queue Q --failed   every job in status error of queue (or stage) "
        "Q\n");
}

static void cancel_usage(FILE *f) {
    fprintf(f,
        "usage: sluice cancel JOB_ID... [-p PATH]... [--database URL]\n"
        "\n"
        "Cancels jobs: a pending or retrying job never starts; a running job's "
        "worker\n"
        "is told to stop at its next heartbeat and its result is discarded.\n");
}

/* The shared body of retry and cancel over job ids. */
static int act_on_ids(const char *cmd, PGconn *c, const sl_model *m, int n,
                      char **ids, int cancel) {
    int failed = 0;
    for (int i = 0; i < n; i++) {
        sl_job_ref ref;
        char err[1024], id[40];
        snprintf(id, sizeof id, "%s", ids[i]);
        lower(id);
        int e = cancel ? sl_jobs_cancel(c, m, id, &ref, err, sizeof err)
                       : sl_jobs_retry(c, m, id, &ref, err, sizeof err);
        if (e == -SL_EINVAL) {
            say(cmd, "'%s' is not a job id (expected a UUID)", ids[i]);
            failed = 1;
            continue;
        }
        if (e != 0) {
            say(cmd, "%s", err);
            return SL_EXIT_FAILURE;
        }
        if (!ref.stage) {
            printf("%s: not found in any queue\n", id);
            failed = 1;
        } else if (!ref.changed) {
            printf("%s: not %s: it is %s (queue %s)%s\n", id,
                   cancel ? "cancelled" : "retried", ref.status,
                   ref.stage->queue,
                   cancel ? "" : "; only error or cancelled jobs are retried");
            failed = 1;
        } else if (!cancel) {
            printf("%s: retried (was %s; queue %s; attempts reset to 0 of "
                   "%d)\n", id, ref.status, ref.stage->queue,
                   ref.stage->retry.max_attempts);
        } else if (strcmp(ref.status, "in_progress") == 0) {
            printf("%s: cancelled while running on %s (queue %s); the worker "
                   "stops it at its next heartbeat and its result is "
                   "discarded\n", id, ref.locked_by[0] ? ref.locked_by : "?",
                   ref.stage->queue);
        } else {
            printf("%s: cancelled (was %s; queue %s); it will not run\n", id,
                   ref.status, ref.stage->queue);
        }
    }
    return failed ? SL_EXIT_FAILURE : SL_EXIT_OK;
}

static int retry_or_cancel(int argc, char **argv, int cancel) {
    const char *cmd = cancel ? "cancel" : "retry";
    void (*usage)(FILE *) = cancel ? cancel_usage : retry_usage;
    if (wants_help(argc, argv)) {
        usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    const char *db = NULL, *queue = NULL;
    int failed_flag = 0;
    static const struct option retry_opts[] = {
        {"queue", required_argument, 0, 'q'},
        {"failed", no_argument, 0, 'F'},
        {"database", required_argument, 0, 'D'},
        {0, 0, 0, 0}};
    static const struct option cancel_opts[] = {
        {"database", required_argument, 0, 'D'},
        {0, 0, 0, 0}};
    int ch;
    PGconn *c = NULL;
    rc = SL_EXIT_USAGE;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "",
                             cancel ? cancel_opts : retry_opts, NULL)) != -1) {
        switch (ch) {
        case 'q': queue = optarg; break;
        case 'F': failed_flag = 1; break;
        case 'D': db = optarg; break;
        default: usage(stderr); goto out;
        }
    }
    int nids = argc - optind;
    if ((queue || failed_flag) && (!queue || !failed_flag || nids > 0)) {
        say(cmd, "--queue Q and --failed go together, without job ids");
        goto out;
    }
    if (!queue && nids == 0) {
        usage(stderr);
        goto out;
    }
    rc = SL_EXIT_FAILURE;
    const sl_stage *s = NULL;
    if (queue && !(s = find_queue(cmd, m, queue))) goto out;
    if (!(c = connect_db(cmd, db))) goto out;
    if (s) {
        long n = 0;
        char err[1024];
        if (sl_jobs_retry_failed(c, s, &n, err, sizeof err) != 0) {
            say(cmd, "%s", err);
            goto out;
        }
        printf("retried %ld failed job%s in %s\n", n, n == 1 ? "" : "s",
               s->queue);
        rc = SL_EXIT_OK;
        goto out;
    }
    rc = act_on_ids(cmd, c, m, nids, argv + optind, cancel);
out:
    PQfinish(c);
    sl_model_free(m);
    return rc;
}

int sl_cmd_retry(int argc, char **argv) { return retry_or_cancel(argc, argv, 0); }

int sl_cmd_cancel(int argc, char **argv) {
    return retry_or_cancel(argc, argv, 1);
}

/* ---- sluice stats ------------------------------------------------------------------- */

static void stats_usage(FILE *f) {
    fprintf(f,
        "usage: sluice stats [--json] [--database URL]\n"
        "\n"
        "Prints the sluice_statistics view: per queue, jobs by status, the "
        "oldest\n"
        "runnable pending job's age and the mean run time of done jobs. With "
        "--json,\n"
        "ages and times are in seconds. Needs no pipeline files.\n");
}

int sl_cmd_stats(int argc, char **argv) {
    const char *cmd = "stats";
    const char *db = NULL;
    int as_json = 0;
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"database", required_argument, 0, 'D'},
        {"pipelines", required_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "p:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'j': as_json = 1; break;
        case 'D': db = optarg; break;
        case 'p': break; /* accepted for symmetry; the view needs none */
        case 'h': stats_usage(stdout); return SL_EXIT_OK;
        default: stats_usage(stderr); return SL_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        stats_usage(stderr);
        return SL_EXIT_USAGE;
    }
    PGconn *c = connect_db(cmd, db);
    if (!c) return SL_EXIT_FAILURE;
    PGresult *r = PQexec(
        c, "SELECT queue, pending, in_progress, retry, done, error, cancelled,"
           " EXTRACT(EPOCH FROM oldest_pending_age)::float8 AS"
           " oldest_pending_age, EXTRACT(EPOCH FROM mean_run_time)::float8 AS"
           " mean_run_time FROM sluice_statistics ORDER BY queue");
    int rc = SL_EXIT_FAILURE;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        say_db(cmd, c, r, "read sluice_statistics");
    } else {
        if (as_json) {
            print_json(r);
        } else if (PQntuples(r) == 0) {
            printf("no queues\n");
        } else {
            static const col_spec cols[] = {
                {"QUEUE", 's'}, {"PENDING", 'r'},   {"IN_PROGRESS", 'r'},
                {"RETRY", 'r'}, {"DONE", 'r'},      {"ERROR", 'r'},
                {"CANCELLED", 'r'}, {"OLDEST_PENDING", 'd'},
                {"MEAN_RUN", 'd'}};
            print_table(r, cols, 9);
        }
        rc = SL_EXIT_OK;
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}
