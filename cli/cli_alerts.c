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
            "       sluice alerts test NAME [-p PATH]... [--json]\n"
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

/* `alerts --json`: {"rules": [...], "alerts": [...]} (docs/cli.md). */
static void print_alerts_json(const sl_model *m, const PGresult *r) {
    json_t *rules = json_array(), *alerts = json_array();
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        for (size_t j = 0; p->alerts && j < p->alerts->nrules; j++) {
            const sl_alert_rule *ru = &p->alerts->rules[j];
            json_t *n = json_array();
            for (size_t k = 0; k < ru->nnotify; k++)
                json_array_append_new(n, json_string(ru->notify[k]->name));
            json_t *o = json_object();
            json_object_set_new(o, "pipeline", json_string(p->name));
            json_object_set_new(o, "name", json_string(ru->name));
            json_object_set_new(o, "kind",
                                json_string(sl_alert_kind_name(ru->kind)));
            json_object_set_new(o, "stage", ru->stage
                                                ? json_string(ru->stage->name)
                                                : json_null());
            json_object_set_new(o, "threshold", json_real(ru->threshold));
            json_object_set_new(o, "for", json_real(ru->for_ms / 1000.0));
            json_object_set_new(o, "repeat", json_real(ru->repeat_ms / 1000.0));
            json_object_set_new(o, "severity", json_string(ru->severity));
            json_object_set_new(o, "notify", n);
            json_array_append_new(rules, o);
        }
    }
    static const char *const names[] = {"fingerprint", "rule", "pipeline",
                                        "stage", "state"};
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *o = json_object();
        for (int k = 0; k < 5; k++)
            json_object_set_new(o, names[k], sl_cli_json_str(r, i, k));
        json_object_set_new(o, "value",
                            PQgetisnull(r, i, 9)
                                ? json_null()
                                : json_real(atof(PQgetvalue(r, i, 9))));
        json_object_set_new(o, "first_fired", sl_cli_json_str(r, i, 10));
        json_object_set_new(o, "last_notified", sl_cli_json_str(r, i, 11));
        json_object_set_new(o, "resolved_at", sl_cli_json_str(r, i, 12));
        json_array_append_new(alerts, o);
    }
    json_t *v = json_object();
    json_object_set_new(v, "rules", rules);
    json_object_set_new(v, "alerts", alerts);
    sl_cli_json_print(v, 0);
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
        print_alerts_json(m, r);
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

static int cmd_test(const sl_model *m, const char *name, int as_json) {
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
            if (as_json)
                sl_cli_json_print(json_pack("{s:s,s:s,s:I}", "pipeline",
                                            p->name, "rule", r->name,
                                            "notifiers",
                                            (json_int_t)r->nnotify),
                                  0);
            else
                printf("sent a test message of %s/%s to %zu notifier%s\n",
                       p->name, r->name, r->nnotify,
                       r->nnotify == 1 ? "" : "s");
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
        rc = cmd_test(m, argv[optind + 1], as_json);
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
