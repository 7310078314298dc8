/* cli_run.c - `sluice run`: start the workers. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "scheduler.h"
#include "cli.h"
#include "cli_priv.h"
#include "db.h"
#include "dsl.h"
#include "error.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "runtime.h"
#include "sentry.h"

static void run_usage(FILE *f) {
    fprintf(f,
            "usage: sluice run [-p PATH]... [options]\n"
            "  -p, --pipelines PATH   pipeline file or directory (repeatable)\n"
            "  -s, --stage NAME       run only this stage, queue or pipeline "
            "(repeatable)\n"
            "  -c, --concurrency N    worker threads per stage (overrides "
            "YAML)\n"
            "  -b, --batch N          jobs claimed per round trip (overrides "
            "YAML)\n"
            "      --drain DURATION   on SIGTERM, let running jobs finish "
            "this long (default 30s)\n"
            "      --exit-when-idle   stop once no job is pending, retrying "
            "or running\n"
            "      --async-commit     do not wait for WAL flush on completions "
            "(faster;\n"
            "                         a server crash may re-run the last "
            "jobs)\n"
            "      --worker-id ID     name in locked_by (default host:pid)\n"
            "      --http ADDR        also serve /metrics, /healthz, /readyz "
            "on ADDR\n"
            "                         (HOST:PORT, :PORT or PORT; host "
            "127.0.0.1 unless given)\n"
            "      --allow-superuser  run even when connected as a superuser or "
            "a\n"
            "                         BYPASSRLS role (hooks could then read "
            "server\n"
            "                         files and bypass row security)\n"
            "      --log-format F     logfmt (default) or json\n"
            "      --log-level L      debug, info (default), warn, error\n"
            "Connects with DATABASE_URL or the libpq environment (PGHOST, "
            "...).\n");
}

/* The level named s, or -1. */
static int log_level_parse(const char *s) {
    if (strcmp(s, "debug") == 0) return SL_LOG_DEBUG;
    if (strcmp(s, "info") == 0) return SL_LOG_INFO;
    if (strcmp(s, "warn") == 0) return SL_LOG_WARN;
    if (strcmp(s, "error") == 0) return SL_LOG_ERROR;
    return -1;
}

/* Runs the workers (with the alert checker and the Sentry sender beside
 * them) until they stop; returns the exit code: 0, 1 (could not start or
 * run), 2 (a stage without a handler) or, with
 * --exit-when-idle, 3 when a job this process ran failed for good. */
static int run_workers(const sl_model *m, sl_runtime_opts *o) {
    char err[1024];
    sl_alerter *alerter = NULL;
    sl_scheduler *sched = NULL;
    if (sl_sentry_start(err, sizeof err) != 0 ||
        sl_alerter_start(m, o->conninfo, &alerter, err, sizeof err) != 0 ||
        sl_scheduler_start(m, o->only, o->nonly, o->conninfo, &sched, err,
                           sizeof err) != 0) {
        sl_alerter_stop(alerter);
        fprintf(stderr, "sluice run: %s\n", err);
        return SL_EXIT_FAILURE;
    }
    o->on_final_failure = sl_sentry_job_failed;
    int r = sl_runtime_run(m, o, err, sizeof err);
    sl_scheduler_stop(sched);
    sl_alerter_stop(alerter);
    if (r != 0) {
        sl_redact(err, sizeof err);
        fprintf(stderr, "sluice run: %s\n", err);
        return r == -SL_EINVAL ? SL_EXIT_INVALID : SL_EXIT_FAILURE;
    }
    long long failed = sl_metrics_attempts_total(SL_ATTEMPT_FAILED);
    if (o->exit_when_idle && failed > 0) {
        /* Through the log, so that a JSON log stays JSON line by line. */
        char msg[96];
        snprintf(msg, sizeof msg, "idle; %lld job%s failed for good", failed,
                 failed == 1 ? "" : "s");
        sl_log(SL_LOG_ERROR, msg, NULL);
        return SL_EXIT_JOB_FAILED;
    }
    return SL_EXIT_OK;
}

int sl_cmd_run(int argc, char **argv) {
    if (sl_cli_wants_help(argc, argv)) {
        run_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;

    sl_runtime_opts o;
    memset(&o, 0, sizeof o);
    o.drain_ms = 30000;
    const char *only[64];
    size_t nonly = 0;
    sl_log_format fmt = SL_LOGFMT;
    const char *http = NULL;
    sl_httpd *server = NULL;
    int level = SL_LOG_INFO;
    int allow_superuser = 0;
    static const struct option opts[] = {
        {"stage", required_argument, 0, 's'},
        {"concurrency", required_argument, 0, 'c'},
        {"batch", required_argument, 0, 'b'},
        {"drain", required_argument, 0, 'd'},
        {"exit-when-idle", no_argument, 0, 'x'},
        {"async-commit", no_argument, 0, 'a'},
        {"worker-id", required_argument, 0, 'w'},
        {"allow-superuser", no_argument, 0, 'S'},
        {"log-format", required_argument, 0, 'f'},
        {"log-level", required_argument, 0, 'l'},
        {"http", required_argument, 0, 'H'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int ch;
    long n;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "s:c:b:h", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            if (nonly < 64) only[nonly++] = optarg;
            break;
        case 'c':
        case 'b':
            /* The YAML's ranges (concurrency 1..1024, batch 1..1000). */
            if (sl_cli_parse_int("run", ch == 'c' ? "--concurrency" : "--batch",
                                 optarg, 1, ch == 'c' ? 1024 : 1000, &n) != 0) {
                rc = SL_EXIT_USAGE;
                goto out;
            }
            *(ch == 'c' ? &o.concurrency : &o.batch) = (int)n;
            break;
        case 'd':
            if (sl_cli_parse_duration("run", "--drain", optarg,
                                      &o.drain_ms) != 0) {
                rc = SL_EXIT_USAGE;
                goto out;
            }
            break;
        case 'x': o.exit_when_idle = 1; break;
        case 'a': o.async_commit = 1; break;
        case 'w': o.worker_id = optarg; break;
        case 'H': http = optarg; break;
        case 'S': allow_superuser = 1; break;
        case 'f':
            fmt = strcmp(optarg, "json") == 0 ? SL_LOGJSON : SL_LOGFMT;
            if (fmt == SL_LOGFMT && strcmp(optarg, "logfmt") != 0) {
                fprintf(stderr, "sluice run: --log-format is logfmt or json\n");
                rc = SL_EXIT_USAGE;
                goto out;
            }
            break;
        case 'l':
            level = log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "sluice run: --log-level is debug, info, "
                                "warn or error\n");
                rc = SL_EXIT_USAGE;
                goto out;
            }
            break;
        case 'h':
            run_usage(stdout);
            rc = SL_EXIT_OK;
            goto out;
        default:
            run_usage(stderr);
            rc = SL_EXIT_USAGE;
            goto out;
        }
    }
    if (optind != argc || sl_cli_check_stages("run", m, only, nonly) != 0) {
        if (optind != argc) run_usage(stderr); /* a stray argument */
        rc = SL_EXIT_USAGE;
        goto out;
    }
    o.only = nonly ? only : NULL;
    o.nonly = nonly;
    sl_log_init(fmt, level);
    sl_runtime_install_signals();
    o.on_event = sl_cli_sd_event;
    if ((rc = sl_cli_run_preflight(m, &o, allow_superuser)) != 0) goto out;
    if (http && (rc = sl_cli_http_start("run", http, m, 1, &server)) != 0)
        goto out;
    rc = run_workers(m, &o);
out:
    sl_sentry_stop(5000);
    sl_httpd_stop(server);
    sl_model_free(m);
    return rc;
}
