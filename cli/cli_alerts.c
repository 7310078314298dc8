/* cli_alerts.c - `sluice alerts`: the rules and their state, a test
 * message, the rules as a Prometheus rule file. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerter.h"
#include "alerts.h"
#include "buf.h"
#include "cli.h"
#include "cli_priv.h"
#include "error.h"
#include "log.h"
#include "notify.h"

static void alerts_usage(FILE *f) {
    fprintf(f,
            "usage: sluice alerts [-p PATH]... [--database URL] [--json]\n"
            "       sluice alerts test NAME [-p PATH]...\n"
            "       sluice alerts export --prometheus [-p PATH]... "
            "[-o FILE]\n"
            "  -p, --pipelines PATH   pipeline file or directory "
            "(repeatable)\n"
            "Lists the alert rules and their state in sluice.alerts; `test` "
            "sends a test\nmessage of rule NAME to its notifiers; `export "
            "--prometheus` writes the rules\nas a Prometheus rule file. See "
            "docs/operations.md, \"Alerts\".\n");
}

static void fmt_ms(char *out, size_t n, int64_t ms) {
    if (ms == 0) snprintf(out, n, "0");
    else sl_cli_fmt_secs(out, n, ms / 1000.0);
}

static void list_rules(const sl_model *m) {
    printf("%-16s %-24s %-16s %-18s %-8s %-8s %s\n", "PIPELINE", "RULE",
           "WHEN", "STAGE", "FOR", "REPEAT", "NOTIFY");
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        for (size_t j = 0; p->alerts && j < p->alerts->nrules; j++) {
            const sl_alert_rule *r = &p->alerts->rules[j];
            char f[32], rep[32];
            fmt_ms(f, sizeof f, r->for_ms);
            fmt_ms(rep, sizeof rep, r->repeat_ms);
            printf("%-16s %-24s %-16s %-18s %-8s %-8s ", p->name, r->name,
                   sl_alert_kind_name(r->kind),
                   r->stage ? r->stage->name
                   : r->kind == SL_ALERT_PROVIDER_ERRORS
                       ? "(prometheus only)"
                       : "*",
                   f, rep);
            for (size_t k = 0; k < r->nnotify; k++)
                printf("%s%s", k ? "," : "", r->notify[k]->name);
            printf("\n");
        }
    }
}

static int cmd_list(const sl_model *m, const char *db, int as_json) {
    if (!as_json) list_rules(m);
    PGconn *c = sl_cli_connect("alerts", db);
    if (!c) return SL_EXIT_FAILURE;
    char err[1024];
    PGresult *r = sl_alerts_state(c, err, sizeof err);
    int rc = SL_EXIT_OK;
    if (!r) {
        sl_cli_say("alerts", "%s (run sluice migrate)", err);
        rc = SL_EXIT_FAILURE;
    } else if (as_json) {
        sl_cli_print_json(r);
    } else {
        static const sl_cli_col cols[] = {
            {"FINGERPRINT", 's'}, {"RULE", 's'},        {"PIPELINE", 's'},
            {"STAGE", 's'},       {"STATE", 's'},       {"VALUE", 'r'},
            {"FIRST_FIRED", 's'}, {"LAST_NOTIFIED", 's'}, {"RESOLVED_AT", 's'}};
        printf("\n");
        if (PQntuples(r) == 0) printf("no alert has been active\n");
        else sl_cli_print_table(r, cols, 9);
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

static int cmd_test(const sl_model *m, const char *name) {
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        for (size_t j = 0; p->alerts && j < p->alerts->nrules; j++) {
            const sl_alert_rule *r = &p->alerts->rules[j];
            if (strcmp(r->name, name)) continue;
            sl_alert_event ev;
            sl_alerts_test_event(p, r, &ev);
            sl_notify *s = NULL;
            char err[512];
            int e = sl_notify_new(&s, NULL, err, sizeof err);
            if (e) {
                sl_cli_say_err("alerts", e, err);
                return SL_EXIT_FAILURE;
            }
            int failed = sl_alerter_dispatch(s, m, &ev, 1);
            sl_notify_free(s);
            if (failed) {
                sl_cli_say("alerts", "%d notifier%s failed (see the log)",
                           failed, failed == 1 ? "" : "s");
                return SL_EXIT_FAILURE;
            }
            printf("sent a test message of %s/%s to %zu notifier%s\n",
                   p->name, r->name, r->nnotify, r->nnotify == 1 ? "" : "s");
            return SL_EXIT_OK;
        }
    }
    sl_cli_say("alerts", "no alert rule '%s' in the loaded pipelines", name);
    return SL_EXIT_USAGE;
}

static int cmd_export(const sl_model *m, const char *file) {
    sl_buf b;
    sl_buf_init(&b);
    sl_alerts_export_prometheus(m, &b);
    int rc = SL_EXIT_OK;
    if (sl_buf_failed(&b)) {
        sl_cli_say("alerts", "out of memory");
        rc = SL_EXIT_FAILURE;
    } else {
        FILE *f = file ? fopen(file, "w") : stdout;
        if (!f || fputs(sl_buf_str(&b), f) < 0 ||
            (file && fclose(f) != 0)) {
            sl_cli_say("alerts", "cannot write %s", file ? file : "stdout");
            rc = SL_EXIT_FAILURE;
        }
    }
    sl_buf_free(&b);
    return rc;
}

int sl_cmd_alerts(int argc, char **argv) {
    if (sl_cli_wants_help(argc, argv)) {
        alerts_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"database", required_argument, 0, 'D'},
        {"prometheus", no_argument, 0, 'P'},
        {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *db = NULL, *out = NULL;
    int as_json = 0, prom = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'j': as_json = 1; break;
        case 'D': db = optarg; break;
        case 'P': prom = 1; break;
        case 'o': out = optarg; break;
        default:
            alerts_usage(stderr);
            rc = SL_EXIT_USAGE;
            goto done;
        }
    }
    sl_log_init(SL_LOGFMT, SL_LOG_WARN);
    const char *sub = optind < argc ? argv[optind] : NULL;
    if (!sub) {
        rc = cmd_list(m, db, as_json);
    } else if (!strcmp(sub, "test") && optind + 2 == argc) {
        rc = cmd_test(m, argv[optind + 1]);
    } else if (!strcmp(sub, "export") && optind + 1 == argc && prom) {
        rc = cmd_export(m, out);
    } else {
        alerts_usage(stderr);
        rc = SL_EXIT_USAGE;
    }
done:
    sl_model_free(m);
    return rc;
}
