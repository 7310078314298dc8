/* cli_jobs.c - the operator's job commands `sluice jobs`, `retry`,
 * `cancel` and `stats` (docs/cli.md). Retry and cancel go through jobs.h,
 * the listing and the statistics through reads.h; this file parses the
 * options and prints. */
#include <assert.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_priv.h"
#include "error.h"
#include "jobs.h"
#include "reads.h"

/* ---- sluice jobs --------------------------------------------------------- */

static void jobs_usage(FILE *f) {
    fprintf(
        f,
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
        "  --history              the history tables (stages with retention"
        " history)\n"
        "  --json                 a JSON array instead of a table\n");
}

/* The command line of `sluice jobs`. */
typedef struct jobs_args {
    const char *db, *queue;
    sl_jobs_filter f;
    int as_json;
} jobs_args;

/* Parses the options into *a. Returns 0 or the exit code. */
static int jobs_parse(int argc, char **argv, jobs_args *a) {
    static const char *const statuses[] = {
        "pending", "in_progress", "retry", "done", "error", "cancelled"};
    static const struct option opts[] = {
        {"queue", required_argument, 0, 'q'},
        {"status", required_argument, 0, 's'},
        {"older-than", required_argument, 0, 'o'},
        {"limit", required_argument, 0, 'l'},
        {"json", no_argument, 0, 'j'},
        {"history", no_argument, 0, 'H'},
        {"database", required_argument, 0, 'D'},
        {0, 0, 0, 0}};
    const char *cmd = "jobs";
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'q': a->queue = optarg; break;
        case 's': a->f.status = optarg; break;
        case 'o':
            if (sl_cli_parse_duration(cmd, "--older-than", optarg,
                                      &a->f.older_ms) != 0)
                return SL_EXIT_USAGE;
            break;
        case 'l':
            if (sl_cli_parse_int(cmd, "--limit", optarg, 1, 1000000,
                                 &a->f.limit) != 0)
                return SL_EXIT_USAGE;
            break;
        case 'j': a->as_json = 1; break;
        case 'H': a->f.history = 1; break;
        case 'D': a->db = optarg; break;
        default: jobs_usage(stderr); return SL_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        jobs_usage(stderr);
        return SL_EXIT_USAGE;
    }
    if (a->f.status) {
        int ok = 0;
        for (size_t i = 0; i < 6; i++)
            ok |= strcmp(statuses[i], a->f.status) == 0;
        if (!ok) {
            sl_cli_say(cmd,
                       "bad --status '%s' (pending, in_progress, retry, "
                       "done, error or cancelled)",
                       a->f.status);
            return SL_EXIT_USAGE;
        }
    }
    return 0;
}

/* Prints a listing as the JSON array of docs/cli.md (`sluice jobs`). */
static void jobs_print_json(const PGresult *r, const sl_model *m) {
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        const sl_stage *s =
            sl_model_stage_by_queue(m, PQgetvalue(r, i, SL_LIST_QUEUE));
        assert(s);
        json_t *o = json_object();
        json_object_set_new(o, "id", sl_cli_json_str(r, i, SL_LIST_ID));
        json_object_set_new(o, "pipeline", json_string(s->pipeline->name));
        json_object_set_new(o, "stage", json_string(s->name));
        json_object_set_new(o, "queue", json_string(s->queue));
        json_object_set_new(o, "subject",
                            sl_cli_json_str(r, i, SL_LIST_SUBJECT));
        json_object_set_new(o, "status", sl_cli_json_str(r, i, SL_LIST_STATUS));
        json_object_set_new(o, "attempts",
                            sl_cli_json_num(r, i, SL_LIST_ATTEMPTS_N));
        json_object_set_new(o, "max_attempts",
                            sl_cli_json_num(r, i, SL_LIST_MAX_ATTEMPTS));
        json_object_set_new(o, "priority",
                            sl_cli_json_num(r, i, SL_LIST_PRIORITY));
        json_object_set_new(o, "created_at",
                            sl_cli_json_str(r, i, SL_LIST_CREATED_AT));
        json_object_set_new(o, "run_at", sl_cli_json_str(r, i, SL_LIST_RUN_AT));
        json_object_set_new(
            o, "age", json_real(atof(PQgetvalue(r, i, SL_LIST_AGE))));
        json_object_set_new(o, "runs_in",
                            PQgetisnull(r, i, SL_LIST_RUNS_IN)
                                ? json_null()
                                : json_real(atof(
                                      PQgetvalue(r, i, SL_LIST_RUNS_IN))));
        json_object_set_new(o, "error_class",
                            sl_cli_json_str(r, i, SL_LIST_ERROR_CLASS));
        json_object_set_new(o, "last_error",
                            sl_cli_json_str(r, i, SL_LIST_LAST_ERROR));
        json_array_append_new(arr, o);
    }
    sl_cli_json_print(arr, 0);
}

/* Prints a listing (SL_LIST_* columns) as JSON or as a table. */
static void jobs_print(const PGresult *r, const sl_model *m,
                       const jobs_args *a) {
    static const sl_cli_col cols[] = {{"QUEUE", 's'},    {"ID", 's'},
                                      {"SUBJECT", 's'},  {"STATUS", 's'},
                                      {"ATTEMPTS", 'r'}, {"PRIORITY", 'r'},
                                      {"AGE", 'd'},      {"RUNS IN", 'd'},
                                      {"CLASS", 's'},    {"LAST ERROR", 'e'}};
    if (a->as_json) {
        jobs_print_json(r, m);
    } else if (PQntuples(r) == 0) {
        printf("no jobs\n");
    } else {
        sl_cli_print_table(r, cols, 10);
        if (PQntuples(r) == a->f.limit)
            fprintf(stderr, "(the newest %ld; --limit N shows more)\n",
                    a->f.limit);
    }
}

int sl_cmd_jobs(int argc, char **argv) {
    const char *cmd = "jobs";
    if (sl_cli_wants_help(argc, argv)) {
        jobs_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    jobs_args a;
    memset(&a, 0, sizeof a);
    a.f.older_ms = -1;
    a.f.limit = 50;
    PGconn *c = NULL;
    PGresult *r = NULL;
    char err[4096];
    if ((rc = jobs_parse(argc, argv, &a)) != 0) goto out;
    rc = SL_EXIT_USAGE;
    if (a.queue && !(a.f.stage = sl_cli_find_queue(cmd, m, a.queue))) goto out;
    rc = SL_EXIT_FAILURE;
    if (sl_reads_jobs_queues(m, &a.f) == 0) {
        if (a.as_json)
            puts("[]");
        else
            printf(a.f.history ? "no selected stage keeps a history"
                                 " (retention: {history: true})\n"
                               : "no queues in the loaded pipelines\n");
        rc = SL_EXIT_OK;
        goto out;
    }
    if (!(c = sl_cli_connect(cmd, a.db))) goto out;
    int e = sl_reads_jobs(c, m, &a.f, &r, err, sizeof err);
    if (e != 0) {
        sl_cli_say_err(cmd, e, err);
        goto out;
    }
    jobs_print(r, m, &a);
    rc = SL_EXIT_OK;
out:
    PQclear(r);
    PQfinish(c);
    sl_model_free(m);
    return rc;
}

/* ---- sluice retry / cancel ----------------------------------------------- */

static void retry_usage(FILE *f) {
    fprintf(
        f,
        "usage: sluice retry JOB_ID... [-p PATH]... [--database URL]\n"
        "       sluice retry --queue Q --failed\n"
        "\n"
        "Runs failed (error) or cancelled jobs again: status retry, run at "
        "once,\n"
        "attempts reset to 0 (a manual retry grants a fresh set of attempts);\n"
        "last_error stays until the job runs; a saved checkpoint is resumed.\n"
        "  --queue Q --failed   every job in status error of queue (or stage) "
        "Q\n"
        "  --json               print the outcome as JSON (docs/cli.md)\n");
}

static void cancel_usage(FILE *f) {
    fprintf(
        f,
        "usage: sluice cancel JOB_ID... [-p PATH]... [--database URL]\n"
        "\n"
        "Cancels jobs: a pending or retrying job never starts; a running job's "
        "worker\n"
        "is told to stop at its next heartbeat and its result is discarded.\n"
        "  --json   print the outcome as JSON (docs/cli.md)\n");
}

/* The pipeline, stage and queue of s into o (JSON output). */
static void json_stage(json_t *o, const sl_stage *s) {
    json_object_set_new(o, "pipeline", s ? json_string(s->pipeline->name)
                                          : json_null());
    json_object_set_new(o, "stage", s ? json_string(s->name) : json_null());
    json_object_set_new(o, "queue", s ? json_string(s->queue) : json_null());
}

/* Appends to arr what retry or cancel did to job id (docs/cli.md). */
static void json_action(json_t *arr, const char *id, const sl_job_ref *ref,
                        int cancel) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "result",
                        json_string(!ref->stage     ? "not_found"
                                    : !ref->changed ? "unchanged"
                                    : cancel        ? "cancelled"
                                                    : "retried"));
    json_object_set_new(o, "was", ref->stage ? json_string(ref->status)
                                             : json_null());
    json_stage(o, ref->stage);
    json_array_append_new(arr, o);
}

/* Prints what retry or cancel did to job id. Returns 1 when it changed
 * the job, else 0. */
static int print_action(const char *id, const sl_job_ref *ref, int cancel) {
    if (!ref->stage) {
        printf("%s: not found in any queue\n", id);
        return 0;
    }
    if (!ref->changed) {
        printf("%s: not %s: it is %s (queue %s)%s\n", id,
               cancel ? "cancelled" : "retried", ref->status, ref->stage->queue,
               cancel ? "" : "; only error or cancelled jobs are retried");
        return 0;
    }
    if (!cancel)
        printf("%s: retried (was %s; queue %s; attempts reset to 0 of %d)\n",
               id, ref->status, ref->stage->queue,
               ref->stage->retry.max_attempts);
    else if (strcmp(ref->status, "in_progress") == 0)
        printf("%s: cancelled while running on %s (queue %s); the worker "
               "stops it at its next heartbeat and its result is "
               "discarded\n",
               id, ref->locked_by[0] ? ref->locked_by : "?", ref->stage->queue);
    else
        printf("%s: cancelled (was %s; queue %s); it will not run\n", id,
               ref->status, ref->stage->queue);
    return 1;
}

/* The shared body of retry and cancel over job ids. */
static int act_on_ids(const char *cmd, PGconn *c, const sl_model *m, int n,
                      char **ids, int cancel, int as_json) {
    int failed = 0;
    json_t *arr = as_json ? json_array() : NULL;
    for (int i = 0; i < n; i++) {
        sl_job_ref ref;
        char err[1024], id[40];
        if (sl_cli_uuid(id, ids[i]) != 0) return SL_EXIT_USAGE; /* checked */
        int e = cancel ? sl_jobs_cancel(c, m, id, &ref, err, sizeof err)
                       : sl_jobs_retry(c, m, id, &ref, err, sizeof err);
        if (e != 0) {
            sl_cli_say(cmd, "%s", err);
            json_decref(arr);
            return SL_EXIT_FAILURE;
        }
        if (arr) json_action(arr, id, &ref, cancel);
        if (arr ? !ref.changed : !print_action(id, &ref, cancel)) failed = 1;
    }
    if (arr) sl_cli_json_print(arr, 0);
    return failed ? SL_EXIT_FAILURE : SL_EXIT_OK;
}

/* `sluice retry --queue Q --failed`. */
static int retry_queue(const char *cmd, PGconn *c, const sl_stage *s,
                       int as_json) {
    long n = 0;
    char err[1024];
    if (sl_jobs_retry_failed(c, s, &n, err, sizeof err) != 0) {
        sl_cli_say(cmd, "%s", err);
        return SL_EXIT_FAILURE;
    }
    if (as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "retried", json_integer(n));
        json_stage(o, s);
        sl_cli_json_print(o, 0);
        return SL_EXIT_OK;
    }
    printf("retried %ld failed job%s in %s\n", n, n == 1 ? "" : "s", s->queue);
    return SL_EXIT_OK;
}

static int retry_or_cancel(int argc, char **argv, int cancel) {
    const char *cmd = cancel ? "cancel" : "retry";
    void (*usage)(FILE *) = cancel ? cancel_usage : retry_usage;
    if (sl_cli_wants_help(argc, argv)) {
        usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    const char *db = NULL, *queue = NULL;
    int failed_flag = 0, as_json = 0;
    static const struct option retry_opts[] = {
        {"queue", required_argument, 0, 'q'},
        {"failed", no_argument, 0, 'F'},
        {"database", required_argument, 0, 'D'},
        {"json", no_argument, 0, 'j'},
        {0, 0, 0, 0}};
    static const struct option cancel_opts[] = {
        {"database", required_argument, 0, 'D'},
        {"json", no_argument, 0, 'j'},
        {0, 0, 0, 0}};
    int ch;
    PGconn *c = NULL;
    rc = SL_EXIT_USAGE;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", cancel ? cancel_opts : retry_opts,
                             NULL)) != -1) {
        switch (ch) {
        case 'q': queue = optarg; break;
        case 'F': failed_flag = 1; break;
        case 'D': db = optarg; break;
        case 'j': as_json = 1; break;
        default: usage(stderr); goto out;
        }
    }
    int nids = argc - optind;
    if ((queue || failed_flag) && (!queue || !failed_flag || nids > 0)) {
        sl_cli_say(cmd, "--queue Q and --failed go together, without job ids");
        goto out;
    }
    if (!queue && nids == 0) {
        usage(stderr);
        goto out;
    }
    const sl_stage *s = NULL;
    if (queue && !(s = sl_cli_find_queue(cmd, m, queue))) goto out;
    for (int i = optind; i < argc; i++) {
        char id[40];
        if (sl_cli_uuid(id, argv[i]) != 0) {
            sl_cli_say(cmd, "'%s' is not a job id (expected a UUID)", argv[i]);
            goto out;
        }
    }
    rc = SL_EXIT_FAILURE;
    if (!(c = sl_cli_connect(cmd, db))) goto out;
    rc = s ? retry_queue(cmd, c, s, as_json)
           : act_on_ids(cmd, c, m, nids, argv + optind, cancel, as_json);
out:
    PQfinish(c);
    sl_model_free(m);
    return rc;
}

int sl_cmd_retry(int argc, char **argv) {
    return retry_or_cancel(argc, argv, 0);
}

int sl_cmd_cancel(int argc, char **argv) {
    return retry_or_cancel(argc, argv, 1);
}

/* ---- sluice stats -------------------------------------------------------- */

static void stats_usage(FILE *f) {
    fprintf(
        f,
        "usage: sluice stats [--json] [--database URL]\n"
        "\n"
        "Prints the sluice_statistics view: per queue, jobs by status, the "
        "oldest\n"
        "runnable pending job's age and the mean run time of done jobs. With "
        "--json,\n"
        "ages and times are in seconds. Needs no pipeline files.\n");
}

int sl_cmd_stats(int argc, char **argv) {
    static const sl_cli_col cols[] = {
        {"QUEUE", 's'},     {"PENDING", 'r'},        {"IN_PROGRESS", 'r'},
        {"RETRY", 'r'},     {"DONE", 'r'},           {"ERROR", 'r'},
        {"CANCELLED", 'r'}, {"OLDEST_PENDING", 'd'}, {"MEAN_RUN", 'd'}};
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"database", required_argument, 0, 'D'},
        {"pipelines", required_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *cmd = "stats", *db = NULL;
    int as_json = 0, ch;
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
    PGconn *c = sl_cli_connect(cmd, db);
    if (!c) return SL_EXIT_FAILURE;
    PGresult *r = NULL;
    char err[4096];
    int e = sl_reads_stats(c, &r, err, sizeof err), rc = SL_EXIT_FAILURE;
    if (e != 0) {
        sl_cli_say_err(cmd, e, err);
    } else {
        if (as_json)
            sl_cli_print_json(r);
        else if (PQntuples(r) == 0)
            printf("no queues\n");
        else
            sl_cli_print_table(r, cols, 9);
        rc = SL_EXIT_OK;
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}
