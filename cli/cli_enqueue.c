/* cli_enqueue.c - `sluice enqueue` (docs/cli.md): one job from options,
 * or many from a JSON-lines file (--bulk). The checks and the SQL are in
 * jobs.h; this file parses the options, maps them onto the stage's
 * columns and prints the result. */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cli_priv.h"
#include "error.h"
#include "jobs.h"

static const char *const cmd = "enqueue";

static void enqueue_usage(FILE *f) {
    fprintf(
        f,
        "usage: sluice enqueue PIPELINE [--subject ID] [--stage NAME]\n"
        "                      [--file PATH] [--url URL] [--json JSON]\n"
        "                      [--set COL=VALUE]... [--priority N]\n"
        "                      [--run-at TIMESTAMP | --delay DURATION]\n"
        "                      [--key KEY]\n"
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
        "  --key KEY           a unique job: while a job of the stage with "
        "this key\n"
        "                      is unfinished (or as the stage's unique: says), "
        "print\n"
        "                      its id instead of adding a second one\n"
        "  --bulk FILE         one JSON object per line ({\"subject\": ..., "
        "\"columns\":\n"
        "                      {...}, \"priority\": N, \"run_at\": ...}), all "
        "in one\n"
        "                      transaction; \"-\" reads stdin; prints the "
        "count\n"
        "  -p, --pipelines PATH   pipeline file or directory (repeatable)\n"
        "  --database URL      default $DATABASE_URL, else the libpq "
        "environment\n"
        "  --output json       print the result as JSON (--json is the "
        "payload)\n",
        SL_JOBS_MAX_FILE >> 20);
}

/* The command line of one enqueue. */
typedef struct enqueue_args {
    const char *pipeline, *subject, *stage, *file, *url, *json, *bulk, *db;
    char key[SL_KEY_MAX]; /* --subject in its canonical form */
    char **sets; /* the --set values, COL=VALUE */
    int nsets;
    int as_json; /* --output json */
    sl_enqueue_opts o;
} enqueue_args;

/* ---- --bulk -------------------------------------------------------------- */

/* Parses and checks one line of a bulk file into *row (OUT: a new
 * reference). Returns 1 with a row, 0 for a blank line, -1 after saying
 * why the line is refused. */
static int bulk_row(const sl_stage *s, const char *path, size_t lineno,
                    const char *line, json_t **row) {
    char err[1024];
    const char *p = line;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0') return 0;
    json_error_t je;
    *row = json_loads(p, JSON_DISABLE_EOF_CHECK, &je);
    if (!*row) {
        sl_cli_say(cmd, "%s:%zu: invalid JSON: %s", path, lineno, je.text);
        return -1;
    }
    if (sl_jobs_check_row(s, *row, err, sizeof err) != 0) {
        sl_cli_say(cmd, "%s:%zu: %s", path, lineno, err);
        json_decref(*row);
        *row = NULL;
        return -1;
    }
    return 1;
}

/* Inserts the rows of batch; lines[i] is the line of row i. Adds the
 * count to *total. Returns 0, or the exit code after naming the line at
 * fault (SL_EXIT_USAGE for a bad value, SL_EXIT_FAILURE otherwise). */
static int bulk_flush(PGconn *c, const sl_stage *s, const char *path,
                      json_t *batch, const size_t *lines, long *total) {
    char err[1024];
    long n = 0;
    size_t bad = 0;
    int e = sl_jobs_enqueue_batch(c, s, batch, &n, &bad, err, sizeof err);
    if (e != 0) {
        if (bad > 0)
            sl_cli_say(cmd, "%s:%zu: %s", path, lines[bad - 1],
                       strchr(err, ':') ? strchr(err, ':') + 2 : err);
        else
            sl_cli_say(cmd, "%s", err);
        return e == -SL_EINVAL ? SL_EXIT_USAGE : SL_EXIT_FAILURE;
    }
    *total += n;
    json_array_clear(batch);
    return 0;
}

/* Reads FILE (or stdin for "-") line by line and inserts the jobs in
 * batches of SL_JOBS_BATCH within one transaction. */
/* Prints the outcome as the JSON object of docs/cli.md: the job id (NULL
 * after --bulk) or the count, with the subject, stage and pipeline. */
static void enqueue_print_json(const sl_stage *s, const char *id,
                               const char *subject, long count,
                               int existing) {
    json_t *o = json_object();
    if (id)
        json_object_set_new(o, "id", json_string(id));
    else
        json_object_set_new(o, "enqueued", json_integer(count));
    json_object_set_new(o, "pipeline", json_string(s->pipeline->name));
    json_object_set_new(o, "stage", json_string(s->name));
    json_object_set_new(o, "queue", json_string(s->queue));
    if (id) {
        json_object_set_new(o, "subject",
                            subject ? json_string(subject) : json_null());
        json_object_set_new(o, "existing", json_boolean(existing));
    }
    sl_cli_json_print(o, 0);
}

static int enqueue_bulk(PGconn *c, const sl_stage *s, const char *path,
                        int as_json) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        sl_cli_say(cmd, "cannot open %s: %s", path, strerror(errno));
        return SL_EXIT_FAILURE;
    }
    int rc = SL_EXIT_FAILURE;
    char *line = NULL, err[1024];
    size_t cap = 0, lineno = 0, lines[SL_JOBS_BATCH];
    long total = 0;
    int fl;
    json_t *batch = json_array();
    if (sl_jobs_begin(c, err, sizeof err) != 0) {
        sl_cli_say(cmd, "%s", err);
        goto out;
    }
    for (;;) {
        int eof = getline(&line, &cap, f) < 0;
        if (!eof) {
            json_t *row = NULL;
            int got = bulk_row(s, path, ++lineno, line, &row);
            if (got < 0) {
                rc = SL_EXIT_USAGE; /* bad JSON, key, column or value */
                goto rollback;
            }
            if (got == 0) continue;
            lines[json_array_size(batch)] = lineno;
            json_array_append_new(batch, row);
        }
        if ((json_array_size(batch) == SL_JOBS_BATCH ||
             (eof && json_array_size(batch) > 0)) &&
            (fl = bulk_flush(c, s, path, batch, lines, &total)) != 0) {
            rc = fl;
            goto rollback;
        }
        if (eof) break;
    }
    if (ferror(f)) {
        sl_cli_say(cmd, "reading %s: %s", path, strerror(errno));
        goto rollback;
    }
    if (sl_jobs_commit(c, err, sizeof err) != 0) {
        sl_cli_say(cmd, "%s", err);
        goto out;
    }
    if (as_json)
        enqueue_print_json(s, NULL, NULL, total, 0);
    else
        printf("enqueued %ld job%s into %s\n", total, total == 1 ? "" : "s",
           s->queue);
    rc = SL_EXIT_OK;
    goto out;
rollback:
    sl_jobs_rollback(c);
    fprintf(stderr, "sluice enqueue: nothing was enqueued\n");
out:
    json_decref(batch);
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

/* ---- one job: options onto columns --------------------------------------- */

/* The file mapped read-only; *len its size. NULL with a message. */
static void *map_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    void *p = NULL;
    if (fd < 0) {
        sl_cli_say(cmd, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        sl_cli_say(cmd, "%s is not a regular file", path);
        goto out;
    }
    if ((size_t)st.st_size > SL_JOBS_MAX_FILE) {
        sl_cli_say(cmd,
                   "%s is %lld bytes, over the limit of %zu MiB for one "
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
        sl_cli_say(cmd, "cannot read %s: %s", path, strerror(errno));
        p = NULL;
    }
out:
    close(fd);
    return p;
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

/* "name (type), ..." of the stage's columns, for messages. */
static void list_columns(char *out, size_t n, const sl_stage *s) {
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->ncolumns && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s (%s)", i ? ", " : "",
                              s->columns[i].name, s->columns[i].type);
    if (s->ncolumns == 0) snprintf(out, n, "none");
}

/* --json: into the payload column, else an object naming columns. */
static int put_json(const sl_stage *s, const char *text, const char *cols,
                    json_t *columns) {
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    const sl_column *pc = sl_jobs_column(s, "payload");
    if (!v) {
        sl_cli_say(cmd, "--json: invalid JSON: %s", je.text);
        return -1;
    }
    if (pc &&
        (strcmp(pc->type, "jsonb") == 0 || strcmp(pc->type, "json") == 0)) {
        json_object_set_new(columns, "payload", v);
        return 0;
    }
    if (json_is_object(v)) {
        json_object_update(columns, v);
        json_decref(v);
        return 0;
    }
    json_decref(v);
    sl_cli_say(cmd,
               "--json: stage %s has no jsonb column payload, so the "
               "JSON must be an object naming its columns (%s)",
               s->name, cols);
    return -1;
}

/* --set COL=VALUE (set is modified: the '=' becomes a NUL). */
static int put_set(const sl_stage *s, char *set, const char *cols,
                   json_t *columns) {
    char err[1024];
    char *eq = strchr(set, '=');
    if (!eq || eq == set) {
        sl_cli_say(cmd, "--set takes COL=VALUE, not '%s'", set);
        return -1;
    }
    *eq = '\0';
    const sl_column *col = sl_jobs_column(s, set);
    if (!col) {
        sl_cli_say(cmd, "--set: stage %s declares no column %s (columns: %s)",
                   s->name, set, cols);
        return -1;
    }
    json_t *v = NULL;
    if (sl_jobs_value_from_text(col, eq + 1, &v, err, sizeof err) != 0) {
        sl_cli_say(cmd, "--set: %s", err);
        return -1;
    }
    json_object_set_new(columns, col->name, v);
    return 0;
}

/* Fills columns from --json, then --url and --set (later ones win), and
 * maps --file into a->o (*mapped, *len: the mapping to unmap). Returns 0
 * or the exit code. */
static int enqueue_columns(const sl_stage *s, enqueue_args *a, json_t *columns,
                           void **mapped, size_t *len) {
    char cols[1024];
    list_columns(cols, sizeof cols, s);
    if (a->json && put_json(s, a->json, cols, columns) != 0)
        return SL_EXIT_USAGE;
    if (a->url) {
        const sl_column *uc = url_column(s);
        if (!uc) {
            sl_cli_say(cmd,
                       "--url: stage %s has no column external_url nor "
                       "a text column ending in url (columns: %s)",
                       s->name, cols);
            return SL_EXIT_USAGE;
        }
        json_object_set_new(columns, uc->name, json_string(a->url));
    }
    for (int i = 0; i < a->nsets; i++)
        if (put_set(s, a->sets[i], cols, columns) != 0) return SL_EXIT_USAGE;
    if (!a->file) return 0;
    const sl_column *bc = NULL;
    for (size_t i = 0; i < s->ncolumns && !bc; i++)
        if (strcmp(s->columns[i].type, "bytea") == 0) bc = &s->columns[i];
    if (!bc) {
        sl_cli_say(cmd, "--file: stage %s has no bytea column (columns: %s)",
                   s->name, cols);
        return SL_EXIT_USAGE;
    }
    json_object_del(columns, bc->name);
    if (!(*mapped = map_file(a->file, len))) return SL_EXIT_FAILURE;
    a->o.bin_column = bc->name;
    a->o.bin_data = *mapped;
    a->o.bin_len = *len;
    return 0;
}

/* ---- the command --------------------------------------------------------- */

/* Parses the options into *a (a->sets has room for argc values). Returns
 * 0 or the exit code. */
static int enqueue_parse(int argc, char **argv, enqueue_args *a) {
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
        {"output", required_argument, 0, 'o'},
        {"key", required_argument, 0, 'k'},
        {0, 0, 0, 0}};
    int ch;
    long n;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'S': a->subject = optarg; break;
        case 's': a->stage = optarg; break;
        case 'f': a->file = optarg; break;
        case 'u': a->url = optarg; break;
        case 'j': a->json = optarg; break;
        case 'e': a->sets[a->nsets++] = optarg; break;
        case 'P':
            if (sl_cli_parse_int(cmd, "--priority", optarg, -2147483647L,
                                 2147483647L, &n) != 0)
                return SL_EXIT_USAGE;
            a->o.has_priority = 1;
            a->o.priority = (int)n;
            break;
        case 'r': a->o.run_at = optarg; break;
        case 'd':
            if (sl_cli_parse_duration(cmd, "--delay", optarg, &a->o.delay_ms) !=
                0)
                return SL_EXIT_USAGE;
            break;
        case 'b': a->bulk = optarg; break;
        case 'k':
            if (!*optarg) {
                sl_cli_say(cmd, "--key takes a non-empty key");
                return SL_EXIT_USAGE;
            }
            a->o.key = optarg;
            break;
        case 'D': a->db = optarg; break;
        case 'o':
            a->as_json = strcmp(optarg, "json") == 0;
            if (!a->as_json && strcmp(optarg, "text") != 0) {
                sl_cli_say(cmd, "bad --output '%s' (json or text)", optarg);
                return SL_EXIT_USAGE;
            }
            break;
        default: enqueue_usage(stderr); return SL_EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        sl_cli_say(cmd, optind >= argc ? "which pipeline? (give its name)"
                                       : "one pipeline name expected");
        enqueue_usage(stderr);
        return SL_EXIT_USAGE;
    }
    a->pipeline = argv[optind];
    if (a->o.run_at && a->o.delay_ms) {
        sl_cli_say(cmd, "--run-at and --delay exclude each other");
        return SL_EXIT_USAGE;
    }
    if (a->bulk && (a->subject || a->file || a->url || a->json || a->nsets ||
                    a->o.has_priority || a->o.run_at || a->o.delay_ms ||
                    a->o.key)) {
        sl_cli_say(cmd, "--bulk takes every value from its file: it goes "
                        "with --stage only");
        return SL_EXIT_USAGE;
    }
    return 0;
}

/* The stage a names (its pipeline's entry stage, or --stage), with the
 * subject option checked against the pipeline. Returns 0 with *out set,
 * or the exit code. */
static int enqueue_resolve(const sl_model *m, enqueue_args *a,
                           const sl_stage **out) {
    const sl_pipeline *p = sl_cli_find_pipeline(cmd, m, a->pipeline);
    if (!p) return SL_EXIT_USAGE;
    assert(p->nstages > 0);
    const sl_stage *s = a->stage ? NULL : &p->stages[0];
    for (size_t i = 0; i < p->nstages && !s; i++)
        if (strcmp(p->stages[i].name, a->stage) == 0 ||
            strcmp(p->stages[i].queue, a->stage) == 0)
            s = &p->stages[i];
    if (!s) {
        const char *names[2 * 64];
        size_t n = 0;
        char hint[160];
        for (size_t i = 0; i < p->nstages && n + 2 <= 2 * 64; i++) {
            names[n++] = p->stages[i].name;
            names[n++] = p->stages[i].queue;
        }
        sl_cli_say(cmd, "pipeline %s has no stage or queue named '%s'%s",
                   a->pipeline, a->stage,
                   sl_cli_hint(a->stage, names, n, hint, sizeof hint));
        return SL_EXIT_USAGE;
    }
    if (!a->bulk && p->has_subject && !a->subject) {
        sl_cli_say(cmd,
                   "pipeline %s has a subject (table %s): --subject ID "
                   "is required",
                   p->name, p->subject.table);
        return SL_EXIT_USAGE;
    }
    if (!a->bulk && !p->has_subject && a->subject) {
        sl_cli_say(cmd, "pipeline %s has no subject: leave --subject out",
                   p->name);
        return SL_EXIT_USAGE;
    }
    const char *why;
    if (a->subject &&
        sl_key_canon(p->subject.key_type, a->subject, a->key, &why) != 0) {
        sl_cli_say(cmd, "--subject '%s' is not %s (the key type of pipeline "
                        "%s)",
                   a->subject, why, p->name);
        return SL_EXIT_USAGE;
    }
    if (a->subject) a->subject = a->key;
    *out = s;
    return 0;
}

int sl_cmd_enqueue(int argc, char **argv) {
    if (sl_cli_wants_help(argc, argv)) {
        enqueue_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    enqueue_args a;
    memset(&a, 0, sizeof a);
    a.sets = calloc((size_t)argc + 1, sizeof *a.sets);
    json_t *columns = json_object();
    void *mapped = NULL;
    size_t mapped_len = 0;
    PGconn *c = NULL;
    const sl_stage *s = NULL;
    char err[2048], id[40];
    rc = SL_EXIT_USAGE;
    if (!a.sets || !columns) goto out;
    if ((rc = enqueue_parse(argc, argv, &a)) != 0 ||
        (rc = enqueue_resolve(m, &a, &s)) != 0 ||
        (!a.bulk &&
         (rc = enqueue_columns(s, &a, columns, &mapped, &mapped_len)) != 0))
        goto out;
    rc = SL_EXIT_FAILURE;
    if (!(c = sl_cli_connect(cmd, a.db))) goto out;
    if (a.bulk && s->unique_declared) {
        sl_cli_say(cmd, "stage %s has unique: jobs, which --bulk does not "
                        "check; enqueue them one at a time", s->name);
        rc = SL_EXIT_USAGE;
        goto out;
    }
    if (a.bulk) {
        rc = enqueue_bulk(c, s, a.bulk, a.as_json);
        goto out;
    }
    int existing = 0;
    a.o.existing = &existing;
    int e =
        sl_jobs_enqueue(c, s, a.subject, columns, &a.o, id, err, sizeof err);
    if (e != 0) {
        sl_cli_say(cmd, "%s", err);
        rc = e == -SL_EINVAL ? SL_EXIT_USAGE : SL_EXIT_FAILURE;
        goto out;
    }
    if (a.as_json) {
        enqueue_print_json(s, id, a.subject, 0, existing);
    } else {
        printf("%s\n", id);
        if (existing)
            sl_cli_say(cmd, "job %s already holds this unique key: no new "
                            "job", id);
    }
    rc = SL_EXIT_OK;
out:
    if (mapped && mapped_len > 0) munmap(mapped, mapped_len);
    PQfinish(c);
    json_decref(columns);
    free(a.sets);
    sl_model_free(m);
    return rc;
}
