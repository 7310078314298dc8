/* cli_status.c - `sluice status` and `sluice watch` (docs/cli.md): a
 * subject's (or one job's) state, once or followed live. The reads are in
 * reads.h; this file chooses what to read and prints it. */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_priv.h"
#include "clock.h"
#include "db.h"
#include "error.h"
#include "jobs.h"
#include "reads.h"

/* ---- sluice status ------------------------------------------------------- */

static void status_usage(FILE *f) {
    fprintf(
        f,
        "usage: sluice status ID [--pipeline NAME] [--json] [-p PATH]... "
        "[--database URL]\n"
        "\n"
        "Shows a subject (its status, progress and detail, then every stage's "
        "jobs:\n"
        "status, attempts, last error, timings), or one job when ID is a job "
        "id.\n"
        "  --pipeline NAME   only this pipeline\n"
        "  --json            print one JSON object (docs/cli.md)\n");
}

/* Seconds as a JSON real (2.0, not 2), or null. */
static json_t *secs_json(const PGresult *r, int i, int col) {
    if (PQgetisnull(r, i, col)) return json_null();
    return json_real(atof(PQgetvalue(r, i, col)));
}

/* Row i of a reads.h SL_JOB_* result as the JSON job of docs/cli.md. */
static json_t *job_json(const PGresult *r, int i, const sl_stage *s) {
    json_t *j = json_object();
    json_object_set_new(j, "id", sl_cli_json_str(r, i, SL_JOB_ID));
    json_object_set_new(j, "pipeline", json_string(s->pipeline->name));
    json_object_set_new(j, "stage", json_string(s->name));
    json_object_set_new(j, "queue", json_string(s->queue));
    json_object_set_new(j, "subject", sl_cli_json_str(r, i, SL_JOB_SUBJECT));
    json_object_set_new(j, "status", sl_cli_json_str(r, i, SL_JOB_STATUS));
    json_object_set_new(j, "attempts", sl_cli_json_num(r, i, SL_JOB_ATTEMPTS));
    json_object_set_new(j, "max_attempts",
                        json_integer(s->retry.max_attempts));
    json_object_set_new(j, "progress", sl_cli_json_num(r, i, SL_JOB_PROGRESS));
    json_object_set_new(j, "detail", sl_cli_json_str(r, i, SL_JOB_DETAIL));
    json_object_set_new(j, "locked_by", sl_cli_json_str(r, i, SL_JOB_LOCKED_BY));
    json_object_set_new(j, "created_at",
                        sl_cli_json_str(r, i, SL_JOB_CREATED_UTC));
    json_object_set_new(j, "started_at",
                        sl_cli_json_str(r, i, SL_JOB_STARTED_UTC));
    json_object_set_new(j, "finished_at",
                        sl_cli_json_str(r, i, SL_JOB_FINISHED_UTC));
    json_object_set_new(j, "run_at", sl_cli_json_str(r, i, SL_JOB_RUN_AT_UTC));
    json_object_set_new(j, "took", secs_json(r, i, SL_JOB_TOOK));
    json_object_set_new(j, "runs_in", secs_json(r, i, SL_JOB_RUNS_IN));
    json_object_set_new(j, "error_class",
                        sl_cli_json_str(r, i, SL_JOB_ERROR_CLASS));
    json_object_set_new(j, "last_error", sl_cli_json_str(r, i, SL_JOB_LAST_ERROR));
    return j;
}

/* Prints row i of a reads.h SL_JOB_* result, indented. */
static void print_job(const PGresult *r, int i, const sl_stage *s) {
#define V(k) (PQgetisnull(r, i, k) ? NULL : PQgetvalue(r, i, k))
    const char *status = V(SL_JOB_STATUS), *detail = V(SL_JOB_DETAIL);
    const char *err = V(SL_JOB_LAST_ERROR), *class = V(SL_JOB_ERROR_CLASS);
    char took[32] = "", wait[32] = "";
    const char *took_s = V(SL_JOB_TOOK), *wait_s = V(SL_JOB_RUNS_IN);
    if (took_s) sl_cli_fmt_secs(took, sizeof took, atof(took_s));
    if (wait_s) sl_cli_fmt_secs(wait, sizeof wait, atof(wait_s));
    printf("    job %s  %-11s attempts %s/%d", V(SL_JOB_ID), status,
           V(SL_JOB_ATTEMPTS), s->retry.max_attempts);
    if (strcmp(status, "in_progress") == 0) {
        const char *by = V(SL_JOB_LOCKED_BY);
        printf("  running %s on %s, progress %s%%%s%s", took[0] ? took : "?",
               by ? by : "?", V(SL_JOB_PROGRESS), detail ? ": " : "",
               detail ? detail : "");
    } else if (took[0]) {
        printf("  took %s", took);
    }
    printf("\n      created %s", V(SL_JOB_CREATED));
    if (V(SL_JOB_STARTED)) printf("  started %s", V(SL_JOB_STARTED));
    if (V(SL_JOB_FINISHED)) printf("  finished %s", V(SL_JOB_FINISHED));
    if (wait[0]) printf("  runs at %s (in %s)", V(SL_JOB_RUN_AT), wait);
    printf("\n");
    /* A done job keeps the error of an earlier, failed attempt. */
    if (err)
        printf("      %s%s%s%s: %s\n",
               strcmp(status, "done") == 0 ? "earlier error" : "last error",
               class ? " (" : "", class ? class : "", class ? ")" : "", err);
#undef V
}

/* Appends subject id of p (its row in r, cleared here) with every stage's
 * jobs to out. Returns 1, or -1 after an error. */
static int subject_json(PGconn *c, const sl_pipeline *p, const char *id,
                        PGresult *r, json_t *out) {
    json_t *o = json_object(), *stages = json_array();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "pipeline", json_string(p->name));
    json_object_set_new(o, "table", json_string(p->subject.table));
    json_object_set_new(o, "status", sl_cli_json_str(r, 0, SL_SUBJ_STATUS));
    json_object_set_new(o, "progress", sl_cli_json_num(r, 0, SL_SUBJ_PROGRESS));
    json_object_set_new(o, "detail", sl_cli_json_str(r, 0, SL_SUBJ_DETAIL));
    json_object_set_new(o, "stages", stages);
    json_array_append_new(out, o);
    PQclear(r);
    char err[4096];
    for (size_t k = 0; k < p->nstages; k++) {
        const sl_stage *s = &p->stages[k];
        int e = sl_reads_subject_jobs(c, s, id, &r, err, sizeof err);
        if (e != 0) {
            sl_cli_say_err("status", e, err);
            return -1;
        }
        json_t *js = json_object(), *jobs = json_array();
        json_object_set_new(js, "name", json_string(s->name));
        json_object_set_new(js, "queue", json_string(s->queue));
        for (int i = 0; i < PQntuples(r); i++)
            json_array_append_new(jobs, job_json(r, i, s));
        json_object_set_new(js, "jobs", jobs);
        json_array_append_new(stages, js);
        PQclear(r);
    }
    return 1;
}

/* Prints the subject block of pipeline p for subject id, when the row
 * exists, or (out not NULL) appends it to the JSON array out. Returns 1
 * when shown, 0 when absent, -1 after an error. */
static int status_subject(PGconn *c, const sl_pipeline *p, const char *id,
                          json_t *out) {
    char err[4096];
    PGresult *r;
    int e = sl_reads_subject(c, p, id, &r, err, sizeof err);
    if (e != 0) goto fail;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 0;
    }
    if (out) return subject_json(c, p, id, r, out);
    printf("subject %s (pipeline %s, table %s)\n", id, p->name,
           p->subject.table);
    printf("  status    %s\n", PQgetvalue(r, 0, SL_SUBJ_STATUS));
    if (!PQgetisnull(r, 0, SL_SUBJ_PROGRESS))
        printf("  progress  %s%%\n", PQgetvalue(r, 0, SL_SUBJ_PROGRESS));
    if (!PQgetisnull(r, 0, SL_SUBJ_DETAIL))
        printf("  detail    %s\n", PQgetvalue(r, 0, SL_SUBJ_DETAIL));
    PQclear(r);
    for (size_t k = 0; k < p->nstages; k++) {
        const sl_stage *s = &p->stages[k];
        if ((e = sl_reads_subject_jobs(c, s, id, &r, err, sizeof err)) != 0)
            goto fail;
        printf("  stage %s (queue %s)%s\n", s->name, s->queue,
               PQntuples(r) ? "" : ": no job");
        for (int i = 0; i < PQntuples(r); i++)
            print_job(r, i, s);
        PQclear(r);
    }
    return 1;
fail:
    sl_cli_say_err("status", e, err);
    return -1;
}

/* Prints job id of stage s. Returns 1 when shown, 0 when absent, -1 after
 * an error. */
static int status_job(PGconn *c, const sl_stage *s, const char *id,
                      json_t **out) {
    char err[4096];
    PGresult *r;
    int e = sl_reads_job(c, s, id, &r, err, sizeof err);
    if (e != 0) {
        sl_cli_say_err("status", e, err);
        return -1;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 0;
    }
    if (out) {
        *out = job_json(r, 0, s);
        PQclear(r);
        return 1;
    }
    printf("job %s (pipeline %s, stage %s, queue %s)\n", id, s->pipeline->name,
           s->name, s->queue);
    if (!PQgetisnull(r, 0, SL_JOB_SUBJECT))
        printf("  subject %s (sluice status %s shows every stage)\n",
               PQgetvalue(r, 0, SL_JOB_SUBJECT),
               PQgetvalue(r, 0, SL_JOB_SUBJECT));
    print_job(r, 0, s);
    PQclear(r);
    return 1;
}

/* Shows every subject with id in the pipelines (only `only` when not
 * NULL), else the job with that id. Returns the exit code. */
static int status_show(PGconn *c, const sl_model *m, const char *only,
                       const char *id, int as_json) {
    const char *cmd = "status";
    int shown = 0;
    json_t *subjects = as_json ? json_array() : NULL, *job = NULL;
    char key[SL_KEY_MAX];
    const char *why;
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        if (!p->has_subject || (only && strcmp(only, p->name) != 0)) continue;
        if (sl_key_canon(p->subject.key_type, id, key, &why) != 0) continue;
        int r = status_subject(c, p, key, subjects);
        if (r < 0) {
            json_decref(subjects);
            return SL_EXIT_FAILURE;
        }
        if (r > 0 && shown && !as_json) printf("\n");
        shown += r;
    }
    if (!shown && sl_jobs_is_uuid(id)) {
        sl_job_ref ref;
        char err[1024];
        if (sl_jobs_find(c, m, id, &ref, err, sizeof err) != 0) {
            sl_cli_say(cmd, "%s", err);
            json_decref(subjects);
            return SL_EXIT_FAILURE;
        }
        if (ref.stage &&
            (!only || strcmp(only, ref.stage->pipeline->name) == 0)) {
            int r = status_job(c, ref.stage, id, as_json ? &job : NULL);
            if (r < 0) {
                json_decref(subjects);
                return SL_EXIT_FAILURE;
            }
            shown = r;
        }
    }
    if (!shown) {
        sl_cli_say(cmd, "no subject or job with id %s in the loaded pipelines",
                   id);
        json_decref(subjects);
        return SL_EXIT_FAILURE;
    }
    if (as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(id));
        json_object_set_new(o, "subjects", subjects);
        json_object_set_new(o, "job", job ? job : json_null());
        sl_cli_json_print(o, 0);
    }
    return SL_EXIT_OK;
}

int sl_cmd_status(int argc, char **argv) {
    const char *cmd = "status";
    if (sl_cli_wants_help(argc, argv)) {
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
        {"json", no_argument, 0, 'j'},
        {0, 0, 0, 0}};
    int ch, as_json = 0;
    PGconn *c = NULL;
    rc = SL_EXIT_USAGE;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'P': only = optarg; break;
        case 'D': db = optarg; break;
        case 'j': as_json = 1; break;
        default: status_usage(stderr); goto out;
        }
    }
    if (optind != argc - 1) {
        status_usage(stderr);
        goto out;
    }
    if (only && !sl_cli_find_pipeline(cmd, m, only)) goto out;
    if (sl_cli_key_arg(cmd, m, only, argv[optind], 1) != 0) goto out;
    rc = SL_EXIT_FAILURE;
    if (!(c = sl_cli_connect(cmd, db))) goto out;
    rc = status_show(c, m, only, argv[optind], as_json);
out:
    PQfinish(c);
    sl_model_free(m);
    return rc;
}

/* ---- sluice watch -------------------------------------------------------- */

static void watch_usage(FILE *f) {
    fprintf(
        f,
        "usage: sluice watch SUBJECT [--timeout DURATION] [--pipeline NAME] "
        "[--json]\n"
        "                    [-p PATH]... [--database URL]\n"
        "\n"
        "Follows a subject live (LISTEN on the pipeline's subject.channel) "
        "with a\n"
        "progress bar. Exits 0 when the subject reaches the pipeline's final "
        "status\n"
        "(its last stage's on_done status); 3 at the error status once no "
        "job is left\n"
        "to run (printing the failed job's last error); 4 when its jobs were "
        "cancelled;\n"
        "5 on --timeout; 6 when the subject row is deleted; 1 when the "
        "database fails.\n"
        "  --json             one JSON object per line for each change, then "
        "one\n"
        "                     with the outcome (docs/cli.md)\n");
}

typedef struct watch {
    PGconn *c;
    const sl_pipeline *p;
    const char *id;          /* the argument, then key */
    char key[SL_KEY_MAX];    /* the subject's key in w->p's canonical form */
    const char *finals[16]; /* the pipeline's final statuses */
    int nfinals;
    const char *errors[16]; /* its error statuses */
    int nerrors;
    int tty;
    int json; /* --json: one JSON line per change, then the outcome */
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
    assert(k < w->p->nstages);
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
    char err[4096];
    PGresult *r;
    int e = sl_reads_subject(w->c, w->p, w->id, &r, err, sizeof err);
    if (e != 0) {
        sl_cli_say_err("watch", e, err);
        return -1;
    }
    int found = PQntuples(r) > 0;
    if (found) {
        snprintf(w->status, sizeof w->status, "%s",
                 PQgetvalue(r, 0, SL_SUBJ_STATUS));
        w->progress = PQgetisnull(r, 0, SL_SUBJ_PROGRESS)
                          ? -1
                          : atoi(PQgetvalue(r, 0, SL_SUBJ_PROGRESS));
        snprintf(w->detail, sizeof w->detail, "%s",
                 PQgetisnull(r, 0, SL_SUBJ_DETAIL)
                     ? ""
                     : PQgetvalue(r, 0, SL_SUBJ_DETAIL));
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

/* The time now as RFC 3339 in UTC with milliseconds. */
static json_t *now_json(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char b[40], out[64];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, sizeof out, "%s.%03dZ", b, (int)(ts.tv_nsec / 1000000L));
    return json_string(out);
}

/* One `watch --json` line: a change, or (outcome set) the end. */
static void watch_json(watch *w, const char *event, const char *outcome,
                       int exit_code) {
    json_t *o = json_object();
    json_object_set_new(o, "event", json_string(event));
    json_object_set_new(o, "subject", json_string(w->id));
    json_object_set_new(o, "pipeline", json_string(w->p->name));
    json_object_set_new(o, "status", json_string(w->status));
    json_object_set_new(o, "progress", w->progress >= 0
                                           ? json_integer(w->progress)
                                           : json_null());
    json_object_set_new(o, "detail",
                        w->detail[0] ? json_string(w->detail) : json_null());
    json_object_set_new(o, "at", now_json());
    if (outcome) {
        json_object_set_new(o, "outcome", json_string(outcome));
        json_object_set_new(o, "exit_code", json_integer(exit_code));
    }
    sl_cli_json_print(o, 1);
    fflush(stdout);
}

/* Draws the progress line: in place on a terminal, else one line per
 * change. */
static void watch_draw(watch *w) {
    char line[800];
    size_t k = 0;
    if (w->progress >= 0) {
        int pct = w->progress > 100 ? 100 : w->progress;
        int fill = pct * 30 / 100;
        line[k++] = '[';
        for (int i = 0; i < 30; i++)
            line[k++] = i < fill ? '#' : '.';
        k += (size_t)snprintf(line + k, sizeof line - k, "] %3d%%  ", pct);
    }
    snprintf(line + k, sizeof line - k, "%s%s%s", w->status,
             w->detail[0] ? "  " : "", w->detail);
    if (strcmp(line, w->last_line) == 0) return;
    snprintf(w->last_line, sizeof w->last_line, "%s", line);
    if (w->json)
        watch_json(w, "change", NULL, -1);
    else if (w->tty)
        printf("\r%s\033[K", line);
    else
        printf("%s\n", line);
    fflush(stdout);
}

/* Ends the progress line on a terminal before a message. */
static void watch_end_line(watch *w) {
    if (w->tty) printf("\n");
    w->tty = 0;
}

/* Prints the most recent failed job of the subject and its last error. */
static void watch_print_failure(watch *w) {
    char err[4096];
    PGresult *r;
    int e = sl_reads_last_failure(w->c, w->p, w->id, &r, err, sizeof err);
    if (e != 0) {
        sl_cli_say_err("watch", e, err);
        return;
    }
    if (PQntuples(r) > 0) {
        size_t k = (size_t)atoi(PQgetvalue(r, 0, SL_FAIL_STAGE));
        assert(k < w->p->nstages);
        const sl_stage *s = &w->p->stages[k];
        int has_class = !PQgetisnull(r, 0, SL_FAIL_ERROR_CLASS);
        sl_cli_say("watch", "stage %s failed (job %s, attempt %s/%d%s%s): %s",
                   s->name, PQgetvalue(r, 0, SL_FAIL_ID),
                   PQgetvalue(r, 0, SL_FAIL_ATTEMPTS), s->retry.max_attempts,
                   has_class ? ", " : "",
                   has_class ? PQgetvalue(r, 0, SL_FAIL_ERROR_CLASS) : "",
                   PQgetisnull(r, 0, SL_FAIL_LAST_ERROR)
                       ? "(no message)"
                       : PQgetvalue(r, 0, SL_FAIL_LAST_ERROR));
    }
    PQclear(r);
}

/* Decides whether watching is over: an exit code (SL_EXIT_OK,
 * SL_EXIT_JOB_FAILED, SL_EXIT_CANCELLED, SL_EXIT_FAILURE), or -1: go on.
 * `check_jobs` also looks at the jobs (the slow safety re-read). */
static int watch_verdict(watch *w, int check_jobs) {
    sl_job_counts n;
    char err[4096];
    if (in_list(w->finals, w->nfinals, w->status)) return SL_EXIT_OK;
    int at_error = in_list(w->errors, w->nerrors, w->status);
    if (!at_error && !check_jobs) return -1;
    /* The error status is final only when nothing is left to run: a
     * manual retry may already be waiting. */
    int e = sl_reads_subject_counts(w->c, w->p, w->id, &n, err, sizeof err);
    if (e != 0) {
        sl_cli_say_err("watch", e, err);
        return SL_EXIT_FAILURE;
    }
    if (n.unfinished > 0 || n.total == 0) return -1;
    if (at_error || n.error > 0) {
        /* The jobs were read after the row: when they ended since, show
         * the row as the failure left it before the verdict. */
        if (!at_error && watch_read(w) > 0) watch_draw(w);
        watch_end_line(w);
        watch_print_failure(w);
        return SL_EXIT_JOB_FAILED;
    }
    if (n.cancelled > 0 && n.final_done == 0) {
        watch_end_line(w);
        sl_cli_say("watch", "the subject's jobs were cancelled (status %s)",
                   w->status);
        return SL_EXIT_CANCELLED;
    }
    if (w->nfinals == 0 && n.final_done > 0) return SL_EXIT_OK;
    return -1;
}

/* Finds the pipeline whose subject table holds w->id (only `only` when
 * not NULL) and sets w->p, its final and error statuses. Returns 0 or the
 * exit code. */
static int watch_resolve(watch *w, const sl_model *m, const char *only) {
    const char *cmd = "watch";
    const char *arg = w->id, *why;
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        if (!p->has_subject || (only && strcmp(only, p->name) != 0)) continue;
        watch probe = *w;
        char key[SL_KEY_MAX];
        if (sl_key_canon(p->subject.key_type, arg, key, &why) != 0) continue;
        probe.p = p;
        probe.id = key;
        int r = watch_read(&probe);
        if (r < 0) return SL_EXIT_FAILURE;
        if (r > 0 && w->p) {
            sl_cli_say(cmd,
                       "subject %s belongs to pipelines %s and %s: "
                       "choose one with --pipeline",
                       arg, w->p->name, p->name);
            return SL_EXIT_USAGE;
        }
        if (r > 0) {
            w->p = p;
            memcpy(w->key, key, sizeof key);
        }
    }
    if (w->p) w->id = w->key;
    if (!w->p) {
        sl_cli_say(cmd, "no subject with id %s in %s", w->id,
                   only ? only : "the loaded pipelines");
        return SL_EXIT_FAILURE;
    }
    int *seen = calloc(w->p->nstages, sizeof *seen);
    if (!seen) return SL_EXIT_FAILURE;
    collect_finals(w, &w->p->stages[0], seen);
    free(seen);
    for (size_t k = 0; k < w->p->nstages; k++) {
        const char *e = w->p->stages[k].status.on_error.status;
        if (e && w->nerrors < 16 && !in_list(w->errors, w->nerrors, e))
            w->errors[w->nerrors++] = e;
    }
    return 0;
}

/* Waits for notifications on w->c for at most wait_ms and applies ours.
 * Returns 2 when one asks for a re-read (no payload), 1 when one changed
 * the subject, 0 when none did, -1 after an error. */
static int watch_wait(watch *w, int64_t wait_ms) {
    const char *cmd = "watch";
    struct pollfd pfd = {PQsocket(w->c), POLLIN, 0};
    int pr = poll(&pfd, 1, (int)wait_ms), changed = 0;
    if (pr < 0 && errno != EINTR) {
        sl_cli_say(cmd, "poll: %s", strerror(errno));
        return -1;
    }
    if (pr <= 0) return 0;
    if (!PQconsumeInput(w->c)) {
        char err[1024];
        if (w->tty) printf("\n");
        sl_cli_say(cmd, "lost the database connection: %s",
                   sl_db_error(w->c, NULL, err, sizeof err));
        return -1;
    }
    PGnotify *nt;
    while ((nt = PQnotifies(w->c)) != NULL) {
        /* The channel carries no payload (docs/schema.md): re-read the
         * row. A payload comes from a database not yet migrated. */
        if (!nt->extra[0])
            changed = 2;
        else if (changed != 2)
            changed |= watch_apply(w, nt->extra);
        PQfreemem(nt);
    }
    return changed;
}

/* Follows the subject until a verdict, the timeout (< 0: none) or an
 * error; re-reads the row every reread_ms. Returns the exit code. */
static int watch_loop(watch *w, int64_t timeout_ms, int64_t reread_ms) {
    const char *cmd = "watch";
    int64_t start = sl_now_ms(), next_reread = start + reread_ms;
    int verdict = watch_verdict(w, 1);
    while (verdict < 0) {
        int64_t now = sl_now_ms();
        if (timeout_ms >= 0 && now - start >= timeout_ms) {
            if (w->tty) printf("\n");
            sl_cli_say(cmd, "timed out after %lldms (status %s)",
                       (long long)timeout_ms, w->status);
            return SL_EXIT_TIMEOUT;
        }
        int64_t wait = next_reread - now;
        if (timeout_ms >= 0 && start + timeout_ms - now < wait)
            wait = start + timeout_ms - now;
        int changed = watch_wait(w, wait < 0 ? 0 : wait);
        if (changed < 0) return SL_EXIT_FAILURE;
        int reread = changed == 2 || sl_now_ms() >= next_reread;
        if (reread) {
            /* The safety net for a missed notification. */
            int r = watch_read(w);
            if (r < 0) return SL_EXIT_FAILURE;
            if (r == 0) {
                if (w->tty) printf("\n");
                sl_cli_say(cmd, "subject %s was deleted", w->id);
                return SL_EXIT_GONE;
            }
            next_reread = sl_now_ms() + reread_ms;
        }
        if (changed || reread) {
            watch_draw(w);
            verdict = watch_verdict(w, reread);
        }
    }
    if (w->tty) printf("\n");
    return verdict;
}

/* LISTENs on the subject channel (when the pipeline has one), reads and
 * draws the row, then follows it. Returns the exit code. */
static int watch_follow(watch *w, int64_t timeout_ms) {
    const char *cmd = "watch";
    char err[4096];
    int64_t reread_ms = 2000;
    /* LISTEN before the first read, so no change falls in between. */
    if (w->p->subject.channel) {
        int e = sl_reads_listen_subject(w->c, w->p, err, sizeof err);
        if (e != 0) {
            sl_cli_say_err(cmd, e, err);
            return SL_EXIT_FAILURE;
        }
    } else {
        reread_ms = 500;
        fprintf(stderr,
                "sluice watch: pipeline %s has no subject.channel; "
                "re-reading every 500ms\n",
                w->p->name);
    }
    if (watch_read(w) <= 0) return SL_EXIT_FAILURE;
    watch_draw(w);
    return watch_loop(w, timeout_ms, reread_ms);
}

int sl_cmd_watch(int argc, char **argv) {
    const char *cmd = "watch";
    if (sl_cli_wants_help(argc, argv)) {
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
        {"json", no_argument, 0, 'j'},
        {0, 0, 0, 0}};
    int ch;
    watch w;
    memset(&w, 0, sizeof w);
    rc = SL_EXIT_USAGE;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 't':
            if (sl_cli_parse_duration(cmd, "--timeout", optarg, &timeout_ms) !=
                0)
                goto out;
            break;
        case 'P': only = optarg; break;
        case 'D': db = optarg; break;
        case 'j': w.json = 1; break;
        default: watch_usage(stderr); goto out;
        }
    }
    if (optind != argc - 1) {
        watch_usage(stderr);
        goto out;
    }
    if (only && !sl_cli_find_pipeline(cmd, m, only)) goto out;
    if (sl_cli_key_arg(cmd, m, only, argv[optind], 0) != 0) goto out;
    w.id = argv[optind];
    rc = SL_EXIT_FAILURE;
    if (!(w.c = sl_cli_connect(cmd, db))) goto out;
    if ((rc = watch_resolve(&w, m, only)) != 0) goto out;
    w.tty = !w.json && isatty(STDOUT_FILENO);
    rc = watch_follow(&w, timeout_ms);
    if (w.json && rc != SL_EXIT_FAILURE) {
        static const char *const outcomes[] = {
            [SL_EXIT_OK] = "done",         [SL_EXIT_JOB_FAILED] = "error",
            [SL_EXIT_CANCELLED] = "cancelled", [SL_EXIT_TIMEOUT] = "timeout",
            [SL_EXIT_GONE] = "deleted"};
        const char *oc = rc >= 0 && rc <= SL_EXIT_GONE && outcomes[rc]
                             ? outcomes[rc]
                             : "failed";
        watch_json(&w, "end", oc, rc);
    }
out:
    fflush(stdout);
    PQfinish(w.c);
    sl_model_free(m);
    return rc;
}
