/* cli_serve.c - `sluice serve`: the HTTP server alone; and what `sluice run`
 * shares with it: the server started beside the workers (--http) and the
 * systemd notifications (sd_notify: READY, WATCHDOG, STOPPING). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "alerter.h"
#include "cli.h"
#include "cli_priv.h"
#include "clock.h"
#include "error.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "runtime.h"

/* ---- systemd ------------------------------------------------------------ */

/* sl_runtime_opts.on_event for a worker under systemd (Type=notify): a
 * no-op without NOTIFY_SOCKET. The watchdog is pinged from the control
 * loop, so a stalled loop stops the pings and systemd restarts us. */
void sl_cli_sd_event(const char *event, void *arg) {
    static int64_t last_ping;
    static uint64_t every_us;
    static int watchdog = -1;
    (void)arg;
    if (strcmp(event, "ready") == 0) {
        sd_notify(0, "READY=1\nSTATUS=running");
    } else if (strcmp(event, "stopping") == 0) {
        sd_notify(0, "STOPPING=1\nSTATUS=draining");
    } else if (strcmp(event, "tick") == 0) {
        if (watchdog < 0) watchdog = sd_watchdog_enabled(0, &every_us) > 0;
        int64_t t = sl_now_ms();
        if (watchdog && t - last_ping >= (int64_t)(every_us / 2000)) {
            sd_notify(0, "WATCHDOG=1");
            last_ping = t;
        }
    }
}

/* ---- the server beside the workers --------------------------------------- */

int sl_cli_http_start(const char *cmd, const char *listen, const sl_model *m,
                      int with_runtime, sl_httpd **out) {
    sl_httpd_opts ho = {.listen = listen,
                        .model = m,
                        .db = sl_db_source(NULL),
                        .with_runtime = with_runtime};
    char err[600];
    sl_metrics_init(m);
    if (sl_httpd_start(&ho, out, err, sizeof err) != 0) {
        fprintf(stderr, "sluice %s: %s\n", cmd, err);
        return SL_EXIT_FAILURE;
    }
    return SL_EXIT_OK;
}

/* ---- sluice serve ---------------------------------------------------------- */

static volatile sig_atomic_t serve_stop;

static void on_serve_signal(int sig) {
    (void)sig;
    serve_stop = 1;
}

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: sluice serve [-p PATH]... [--listen ADDR]\n"
            "  -p, --pipelines PATH   pipeline file or directory (repeatable)\n"
            "  -l, --listen ADDR      HOST:PORT, :PORT or PORT (default "
            "127.0.0.1:9400)\n"
            "Serves /metrics, /healthz and /readyz (docs/operations.md) "
            "until SIGTERM or SIGINT.\n"
            "Connects with DATABASE_URL or the libpq environment (PGHOST, "
            "...).\n");
}

int sl_cmd_serve(int argc, char **argv) {
    if (sl_cli_wants_help(argc, argv)) {
        serve_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    const char *listen = "127.0.0.1:9400";
    static const struct option opts[] = {{"listen", required_argument, 0, 'l'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "l:h", opts, NULL)) != -1) {
        if (ch == 'l') {
            listen = optarg;
        } else {
            serve_usage(ch == 'h' ? stdout : stderr);
            rc = ch == 'h' ? SL_EXIT_OK : SL_EXIT_USAGE;
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sluice serve: unexpected argument '%s'\n",
                argv[optind]);
        rc = SL_EXIT_USAGE;
        goto out;
    }
    sl_log_init(SL_LOGFMT, SL_LOG_INFO);
    sl_httpd *h = NULL;
    rc = sl_cli_http_start("serve", listen, m, 0, &h);
    if (rc != SL_EXIT_OK) goto out;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_serve_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sl_alerter *alerter = NULL;
    char err[1024];
    if (sl_alerter_start(m, NULL, &alerter, err, sizeof err) != 0)
        fprintf(stderr, "sluice serve: alerts: %s\n", err);
    sd_notify(0, "READY=1\nSTATUS=serving");
    while (!serve_stop) pause();
    sd_notify(0, "STOPPING=1");
    sl_alerter_stop(alerter);
    sl_httpd_stop(h);
out:
    sl_model_free(m);
    return rc;
}
