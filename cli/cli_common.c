/* cli_common.c - what the subcommands share (cli_priv.h): messages,
 * connecting, option parsing, tables and JSON. */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_priv.h"
#include "db.h"
#include "dsl.h"
#include "error.h"
#include "jobs.h"
#include "log.h"

/* ---- messages and connecting --------------------------------------------- */

void sl_cli_say(const char *cmd, const char *fmt, ...) {
    assert(cmd && fmt);
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sl_redact(msg, sizeof msg);
    size_t l = strlen(msg);
    while (l > 0 && msg[l - 1] == '\n')
        msg[--l] = '\0';
    fprintf(stderr, "sluice %s: %s\n", cmd, msg);
}

void sl_cli_say_err(const char *cmd, int rc, const char *err) {
    assert(rc < 0 && err);
    sl_cli_say(cmd, "%s%s", err,
               rc == -SL_ENOTFOUND
                   ? "\n(hint: run `sluice migrate` to create the queue "
                     "tables)"
                   : "");
}

PGconn *sl_cli_connect(const char *cmd, const char *flag) {
    char err[2048];
    /* Secrets set in the environment since the last look are redacted
     * from every message printed from here on. */
    sl_redact_reload();
    PGconn *c = sl_db_connect(sl_db_source(flag), err, sizeof err);
    if (!c) sl_cli_say(cmd, "%s", err);
    return c;
}

/* ---- options ------------------------------------------------------------- */

int sl_cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    }
    return 0;
}

int sl_cli_parse_duration(const char *cmd, const char *opt, const char *v,
                          int64_t *ms) {
    assert(v && ms);
    if (sl_duration_parse(v, ms) == 0) return 0;
    sl_cli_say(cmd,
               "bad %s '%s' (expected a duration such as 250ms, 30s, "
               "5m, 2h, 1d)",
               opt, v);
    return -1;
}

int sl_cli_parse_int(const char *cmd, const char *opt, const char *v, long lo,
                     long hi, long *out) {
    assert(v && out && lo <= hi);
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi) {
        sl_cli_say(cmd, "bad %s '%s' (expected an integer %ld..%ld)", opt, v,
                   lo, hi);
        return -1;
    }
    *out = n;
    return 0;
}

int sl_cli_uuid(char id[40], const char *arg) {
    assert(id && arg);
    snprintf(id, 40, "%s", arg);
    if (!sl_jobs_is_uuid(id)) return -1;
    for (char *s = id; *s; s++)
        *s = (char)tolower((unsigned char)*s);
    return 0;
}

int sl_cli_key_arg(const char *cmd, const sl_model *m, const char *only,
                   const char *arg, int job_too) {
    assert(cmd && m && arg);
    if (job_too && sl_jobs_is_uuid(arg)) return 0;
    char key[SL_KEY_MAX], why[512] = "";
    const char *w;
    size_t n = 0;
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        if (!p->has_subject || (only && strcmp(only, p->name) != 0)) continue;
        if (sl_key_canon(p->subject.key_type, arg, key, &w) == 0) return 0;
        if (n < sizeof why)
            n += (size_t)snprintf(why + n, sizeof why - n, "%s%s of pipeline %s",
                                  n ? "; " : "", w, p->name);
    }
    if (!n) {
        sl_cli_say(cmd, "no loaded pipeline%s%s has a subject", only ? " " : "",
                   only ? only : "");
        return -1;
    }
    sl_cli_say(cmd, "'%s' is not a subject %sid: expected %s%s", arg,
               job_too ? "or job " : "", why,
               job_too ? ", or a job id (a UUID)" : "");
    return -1;
}

const char *sl_cli_hint(const char *name, const char *const *cands, size_t n,
                        char *buf, size_t len) {
    assert(name && buf && len > 0);
    const char *m = sl_model_nearest(name, cands, n);
    buf[0] = '\0';
    if (m) snprintf(buf, len, " (did you mean '%s'?)", m);
    return buf;
}

/* " (did you mean 'x'?)" for a stage or queue name of m, or "". */
static const char *stage_hint(const sl_model *m, const char *name, char *buf,
                              size_t len) {
    size_t total = 0, n = 0;
    for (size_t i = 0; i < m->npipelines; i++)
        total += 2 * m->pipelines[i].nstages + 1;
    const char **c = calloc(total + 1, sizeof *c);
    buf[0] = '\0';
    if (!c) return buf;
    for (size_t i = 0; i < m->npipelines; i++) {
        c[n++] = m->pipelines[i].name;
        for (size_t j = 0; j < m->pipelines[i].nstages; j++) {
            c[n++] = m->pipelines[i].stages[j].queue;
            c[n++] = m->pipelines[i].stages[j].name;
        }
    }
    sl_cli_hint(name, c, n, buf, len);
    free(c);
    return buf;
}

const sl_stage *sl_cli_find_queue(const char *cmd, const sl_model *m,
                                  const char *name) {
    assert(m && name);
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
    char hint[160];
    if (n > 1)
        sl_cli_say(cmd,
                   "stage name '%s' is used by several pipelines: give "
                   "the queue name",
                   name);
    else
        sl_cli_say(cmd, "no queue or stage named '%s' in the loaded pipelines%s",
                   name, stage_hint(m, name, hint, sizeof hint));
    return NULL;
}

int sl_cli_check_stages(const char *cmd, const sl_model *m,
                        const char *const *names, size_t n) {
    assert(m && (names || n == 0));
    for (size_t i = 0; i < n; i++) {
        int found = 0;
        for (size_t p = 0; p < m->npipelines && !found; p++)
            for (size_t k = 0; k < m->pipelines[p].nstages && !found; k++)
                found = sl_stage_selected(&m->pipelines[p].stages[k],
                                          &names[i], 1);
        if (!found) {
            char hint[160];
            sl_cli_say(cmd,
                       "no stage, queue or pipeline named '%s' in the loaded "
                       "pipelines%s",
                       names[i], stage_hint(m, names[i], hint, sizeof hint));
            return -1;
        }
    }
    return 0;
}

const sl_pipeline *sl_cli_find_pipeline(const char *cmd, const sl_model *m,
                                        const char *name) {
    assert(m && name);
    const sl_pipeline *p = sl_model_pipeline(m, name);
    if (p) return p;
    const char **c = calloc(m->npipelines + 1, sizeof *c);
    char hint[160] = "", names[512] = "";
    size_t k = 0;
    for (size_t i = 0; i < m->npipelines; i++) {
        if (c) c[i] = m->pipelines[i].name;
        if (k < sizeof names)
            k += (size_t)snprintf(names + k, sizeof names - k, "%s%s",
                                  i ? ", " : "", m->pipelines[i].name);
    }
    if (c) sl_cli_hint(name, c, m->npipelines, hint, sizeof hint);
    free(c);
    sl_cli_say(cmd, "no pipeline named '%s'%s (loaded: %s)", name, hint,
               k ? names : "none");
    return NULL;
}

/* ---- tables and JSON ----------------------------------------------------- */

void sl_cli_fmt_secs(char *out, size_t n, double s) {
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

/* Formats cell (row, col) of r for a table column of the given kind. */
static void cell(char *out, size_t n, const PGresult *r, int row, int col,
                 char kind) {
    if (PQgetisnull(r, row, col)) {
        snprintf(out, n, "-");
        return;
    }
    const char *v = PQgetvalue(r, row, col);
    if (kind == 'd') {
        sl_cli_fmt_secs(out, n, atof(v));
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

void sl_cli_print_table(const PGresult *r, const sl_cli_col *cols, int ncols) {
    int w[32];
    char buf[512];
    assert(r && cols && ncols > 0 && ncols <= 32 && ncols <= PQnfields(r));
    int rows = PQntuples(r);
    for (int c = 0; c < ncols; c++)
        w[c] = (int)strlen(cols[c].title);
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

/* The JSON value of cell (row, col) of r, typed by the column's type. */
static json_t *json_cell(const PGresult *r, int row, int col) {
    const char *v = PQgetvalue(r, row, col);
    if (PQgetisnull(r, row, col)) return json_null();
    switch (PQftype(r, col)) {
    case 20:
    case 21:
    case 23: /* int8, int2, int4 */ return json_integer(strtoll(v, NULL, 10));
    case 700:
    case 701:
    case 1700: /* float4/8, numeric */ return json_real(strtod(v, NULL));
    case 16: return json_boolean(v[0] == 't');
    default: return json_string(v);
    }
}

void sl_cli_json_print(json_t *v, int lines) {
    assert(v);
    char *s = json_dumps(v, lines ? JSON_COMPACT | JSON_PRESERVE_ORDER
                                  : JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) puts(s);
    free(s);
    fflush(stdout);
    json_decref(v);
}

json_t *sl_cli_json_num(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col)) return json_null();
    const char *v = PQgetvalue(r, row, col);
    if (strpbrk(v, ".eE")) return json_real(strtod(v, NULL));
    return json_integer(strtoll(v, NULL, 10));
}

json_t *sl_cli_json_str(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col)) return json_null();
    return json_string(PQgetvalue(r, row, col));
}

void sl_cli_print_json(const PGresult *r) {
    assert(r);
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *o = json_object();
        for (int c = 0; c < PQnfields(r); c++)
            json_object_set_new(o, PQfname(r, c), json_cell(r, i, c));
        json_array_append_new(arr, o);
    }
    char *s = json_dumps(arr, JSON_INDENT(2));
    if (s) puts(s);
    free(s);
    json_decref(arr);
}
