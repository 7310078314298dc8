/* cli_schedules.c - `sluice schedules`: every schedule of the loaded
 * pipelines with its cron expression, time zone, missed rule, last
 * recorded tick and next tick (docs/cli.md). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_priv.h"
#include "cron.h"
#include "error.h"
#include "schedule.h"

static const char *const cmd = "schedules";

static void schedules_usage(FILE *f) {
    fprintf(f,
            "usage: sluice schedules [-p PATH]... [--json] [--database URL]"
            "\n\n"
            "Lists every stage's schedule: cron expression, time zone, the "
            "missed-tick\nrule, the last tick recorded in the database "
            "(enqueued or passed over)\nand the next tick, in the "
            "schedule's zone.\n\n"
            "  -p, --pipelines PATH  pipeline file or directory (repeatable)\n"
            "      --json            one JSON object per schedule, one per "
            "line\n"
            "      --database URL    connection (default: DATABASE_URL, "
            "PG*)\n");
}

static const char *const missed_names[] = {"latest", "all", "skip"};

/* t (seconds, UTC) as ISO 8601 in zone tz ("2026-03-29T03:00:00+02:00"),
 * or "never" for t < 0. */
static void fmt_tick(char *out, size_t n, const sl_tz *tz, int64_t t) {
    if (t < 0) {
        snprintf(out, n, "never");
        return;
    }
    int32_t off = sl_tz_offset(tz, t);
    time_t lt = (time_t)(t + off);
    struct tm tm;
    gmtime_r(&lt, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    int a = off < 0 ? -off : off;
    snprintf(out, n, "%s%c%02d:%02d", base, off < 0 ? '-' : '+', a / 3600,
             a / 60 % 60);
}

/* Prints one schedule. Returns 0 or -1 after printing the error. */
static int show(PGconn *c, const sl_stage *st, int have_table, int as_json) {
    const sl_schedule *sc = st->schedule;
    char err[1024];
    sl_tz *tz = NULL;
    int rc = sl_tz_load(sc->timezone, &tz, err, sizeof err);
    if (rc != 0) {
        sl_cli_say_err(cmd, rc, err);
        return -1;
    }
    int64_t last = -1;
    if (have_table && (rc = sl_schedule_last(c, st, &last, err, sizeof err))) {
        sl_cli_say_err(cmd, rc, err);
        sl_tz_free(tz);
        return -1;
    }
    int64_t next = sl_cron_next(&sc->parsed, tz, (int64_t)time(NULL));
    char name[300], l[64], nx[64];
    sl_schedule_name(st, name, sizeof name);
    fmt_tick(l, sizeof l, tz, last);
    fmt_tick(nx, sizeof nx, tz, next);
    if (as_json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "schedule",
                              name, "queue", st->queue, "cron", sc->cron,
                              "timezone", sc->timezone, "missed",
                              missed_names[sc->missed], "next", nx);
        json_object_set_new(o, "last",
                            last < 0 ? json_null() : json_string(l));
        sl_cli_json_print(o, 1);
    } else {
        printf("%-28s %-18s %-16s %-7s %-25s %s\n", name, sc->cron,
               sc->timezone, missed_names[sc->missed], l, nx);
    }
    sl_tz_free(tz);
    return 0;
}

int sl_cmd_schedules(int argc, char **argv) {
    if (sl_cli_wants_help(argc, argv)) {
        schedules_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"database", required_argument, 0, 'D'},
        {0, 0, 0, 0}};
    const char *db = NULL;
    int as_json = 0, ch;
    PGconn *c = NULL;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'j': as_json = 1; break;
        case 'D': db = optarg; break;
        default:
            schedules_usage(stderr);
            rc = SL_EXIT_USAGE;
            goto out;
        }
    }
    if (optind != argc) {
        schedules_usage(stderr);
        rc = SL_EXIT_USAGE;
        goto out;
    }
    rc = SL_EXIT_OK;
    if (!sl_schedule_any(m)) {
        if (!as_json) printf("no stage has a schedule\n");
        goto out;
    }
    rc = SL_EXIT_FAILURE;
    if (!(c = sl_cli_connect(cmd, db))) goto out;
    PGresult *r =
        PQexec(c, "SELECT to_regclass('sluice.schedule_ticks') IS NOT NULL");
    int have_table = PQresultStatus(r) == PGRES_TUPLES_OK &&
                     PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!as_json)
        printf("%-28s %-18s %-16s %-7s %-25s %s\n", "SCHEDULE", "CRON",
               "TIMEZONE", "MISSED", "LAST TICK", "NEXT TICK");
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            const sl_stage *st = &m->pipelines[i].stages[k];
            if (st->schedule && show(c, st, have_table, as_json) != 0)
                goto out;
        }
    rc = SL_EXIT_OK;
out:
    if (c) PQfinish(c);
    sl_model_free(m);
    return rc;
}
