/* cli_purge.c - `sluice purge`: applies the stages' retention policies
 * now (docs/cli.md), as the elected worker does after each sweep. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_priv.h"
#include "error.h"
#include "queue.h"

static void purge_usage(FILE *f) {
    fprintf(f,
            "usage: sluice purge [-p PATH]... [-s STAGE]... [--dry-run]"
            " [--json] [--database URL]\n\n"
            "Deletes the finished jobs each stage's `retention:` no longer"
            " keeps (done,\nerror, cancelled), %d rows per transaction, and"
            " prints how many per\nqueue and status. Pending, retrying and"
            " running jobs are never touched;\na stage without `retention:`"
            " keeps everything.\n\n"
            "  -p, --pipelines PATH  pipeline file or directory (repeatable)\n"
            "  -s, --stage NAME      only this stage, queue or pipeline"
            " (repeatable)\n"
            "      --dry-run         count what would go; delete nothing\n"
            "      --json            print one JSON object (docs/cli.md)\n"
            "      --database URL    connection (default: DATABASE_URL,"
            " PG*)\n",
            SL_PURGE_BATCH);
}

/* Purges stage s and prints one line per status it has a policy for (or,
 * with rows, appends one JSON object per status to it). Returns 0, or -1
 * after printing the error. */
static int purge_stage(PGconn *c, const sl_stage *s, int dry_run,
                       long *total, json_t *rows) {
    long counts[SL_RETAIN__COUNT];
    int more = 0;
    char err[2048];
    int e = sl_queue_purge(c, s, dry_run, 0, counts, &more, err, sizeof err);
    if (e != 0) {
        sl_cli_say_err("purge", e, err);
        return -1;
    }
    for (int st = 0; st < SL_RETAIN__COUNT; st++) {
        if (s->retention_ms[st] < 0) continue;
        *total += counts[st];
        if (rows) {
            json_t *o = json_object();
            json_object_set_new(o, "pipeline", json_string(s->pipeline->name));
            json_object_set_new(o, "stage", json_string(s->name));
            json_object_set_new(o, "queue", json_string(s->queue));
            json_object_set_new(o, "status",
                                json_string(sl_retain_status[st]));
            json_object_set_new(o, "count", json_integer(counts[st]));
            json_object_set_new(o, "older_than",
                                json_real(s->retention_ms[st] / 1000.0));
            json_array_append_new(rows, o);
            continue;
        }
        char age[32];
        sl_cli_fmt_secs(age, sizeof age, (double)s->retention_ms[st] / 1000);
        printf("%-24s %-10s %10ld  (older than %s)\n", s->queue,
               sl_retain_status[st], counts[st], age);
    }
    return 0;
}

int sl_cmd_purge(int argc, char **argv) {
    if (sl_cli_wants_help(argc, argv)) {
        purge_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    static const struct option opts[] = {
        {"stage", required_argument, 0, 's'},
        {"dry-run", no_argument, 0, 'n'},
        {"json", no_argument, 0, 'j'},
        {"database", required_argument, 0, 'D'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *only[64], *db = NULL;
    size_t nonly = 0;
    int dry_run = 0, as_json = 0, ch;
    PGconn *c = NULL;
    json_t *rows = NULL;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "s:h", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            if (nonly < 64) only[nonly++] = optarg;
            break;
        case 'n': dry_run = 1; break;
        case 'j': as_json = 1; break;
        case 'D': db = optarg; break;
        case 'h':
            purge_usage(stdout);
            rc = SL_EXIT_OK;
            goto out;
        default:
            purge_usage(stderr);
            rc = SL_EXIT_USAGE;
            goto out;
        }
    }
    if (optind != argc || sl_cli_check_stages("purge", m, only, nonly) != 0) {
        if (optind != argc) purge_usage(stderr);
        rc = SL_EXIT_USAGE;
        goto out;
    }
    rc = SL_EXIT_FAILURE;
    if (!(c = sl_cli_connect("purge", db))) goto out;
    char err[2048];
    if (sl_queue_prepare_stages(c, m, only, nonly, err, sizeof err) != 0) {
        sl_cli_say_err("purge", -SL_EDB, err);
        goto out;
    }
    long total = 0;
    int policies = 0;
    if (as_json) rows = json_array();
    for (size_t pi = 0; pi < m->npipelines; pi++) {
        const sl_pipeline *p = &m->pipelines[pi];
        for (size_t si = 0; si < p->nstages; si++) {
            const sl_stage *s = &p->stages[si];
            if (!sl_stage_selected(s, only, nonly) ||
                !sl_queue_has_retention(s))
                continue;
            policies++;
            if (purge_stage(c, s, dry_run, &total, rows) != 0) goto out;
        }
    }
    if (as_json) {
        json_t *v = json_object();
        json_object_set_new(v, "dry_run", json_boolean(dry_run));
        json_object_set_new(v, dry_run ? "would_delete" : "deleted",
                            json_integer(total));
        json_object_set_new(v, "queues", rows);
        rows = NULL;
        sl_cli_json_print(v, 0);
    } else if (!policies)
        printf("no selected stage sets retention: nothing to purge\n");
    else
        printf("%s %ld finished job%s\n", dry_run ? "would delete" : "deleted",
               total, total == 1 ? "" : "s");
    rc = SL_EXIT_OK;
out:
    json_decref(rows);
    if (c) PQfinish(c);
    sl_model_free(m);
    return rc;
}
