/* cli_dsl.c - loading pipelines for every subcommand, and `sluice
 * validate`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_priv.h"
#include "dsl.h"
#include "error.h"

/* Prints diagnostics to stderr and maps a load result onto an exit code. */
static int report(int rc, const sl_diags *d) {
    char *text = sl_diags_format(d);
    if (text) {
        fputs(text, stderr);
        free(text);
    }
    if (rc == 0) return SL_EXIT_OK;
    return rc == -SL_EINVAL ? SL_EXIT_INVALID : SL_EXIT_FAILURE;
}

/* Set by validate, which lists what it loaded on stdout anyway. */
static int quiet_load;

/* Loads paths, or $SLUICE_PIPELINES, or ./pipelines when npaths is 0. */
static int load_paths(const char **paths, size_t npaths, sl_model **out) {
    char *env_copy = NULL;
    const char **env_paths = NULL;
    int rc, fallback = 0;
    if (npaths == 0) {
        const char *env = getenv("SLUICE_PIPELINES");
        if (env && *env) {
            env_copy = strdup(env);
            size_t n = 1;
            for (const char *p = env; *p; p++)
                n += *p == ':';
            env_paths = calloc(n, sizeof *env_paths);
            if (!env_copy || !env_paths) {
                free(env_copy);
                free(env_paths);
                fprintf(stderr, "sluice: out of memory\n");
                return SL_EXIT_FAILURE;
            }
            char *save = NULL;
            for (char *t = strtok_r(env_copy, ":", &save); t;
                 t = strtok_r(NULL, ":", &save))
                env_paths[npaths++] = t;
            paths = env_paths;
        }
        if (npaths == 0) {
            static const char *dflt[] = {"pipelines"};
            paths = dflt;
            npaths = 1;
            fallback = 1;
        }
    }
    sl_diags d = {0};
    rc = sl_dsl_load(paths, npaths, out, &d);
    int code = report(rc, &d);
    /* Definitions picked up from the working directory are named, so a
     * stray ./pipelines is never used unnoticed (docs/cli.md). */
    if (code == SL_EXIT_OK && fallback && !quiet_load) {
        fprintf(stderr, "sluice: loaded ./pipelines (");
        for (size_t i = 0; i < (*out)->npipelines; i++)
            fprintf(stderr, "%s%s", i ? ", " : "", (*out)->pipelines[i].name);
        fprintf(stderr, "); -p PATH or $SLUICE_PIPELINES chooses others\n");
    }
    sl_diags_free(&d);
    free(env_paths);
    free(env_copy);
    return code;
}

/* Removes argv[i .. i+n-1], keeping argv NULL-terminated. */
static void drop_args(int *argc, char **argv, int i, int n) {
    for (int j = i; j + n <= *argc; j++)
        argv[j] = argv[j + n];
    *argc -= n;
}

/* Collects -p/--pipelines options from argv into paths (removing them).
 * Returns the count, or -1 (after a message) when an option lacks its
 * value. */
static int take_pipeline_opts(int *argc, char **argv, const char **paths,
                              int max) {
    int n = 0;
    for (int i = 1; i < *argc;) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) break;
        const char *val = NULL;
        int used = 0;
        if (!strcmp(a, "-p") || !strcmp(a, "--pipelines")) {
            if (i + 1 >= *argc) {
                fprintf(stderr, "sluice: %s needs a path\n", a);
                return -1;
            }
            val = argv[i + 1];
            used = 2;
        } else if (!strncmp(a, "--pipelines=", 12)) {
            val = a + 12;
            used = 1;
        } else if (!strncmp(a, "-p", 2) && a[2]) {
            val = a + 2;
            used = 1;
        }
        if (!used) {
            i++;
            continue;
        }
        if (n < max) paths[n++] = val;
        drop_args(argc, argv, i, used);
    }
    return n;
}

int sl_cli_load(int *argc, char **argv, sl_model **out) {
    *out = NULL;
    const char **paths = calloc((size_t)*argc + 1, sizeof *paths);
    if (!paths) return SL_EXIT_FAILURE;
    int n = take_pipeline_opts(argc, argv, paths, *argc);
    int rc = n < 0 ? SL_EXIT_USAGE : load_paths(paths, (size_t)n, out);
    free(paths);
    return rc;
}

static void validate_usage(FILE *f) {
    fprintf(f, "usage: sluice validate [-q] [-p PATH]... [FILE|DIR]...\n"
               "Loads and checks pipeline definitions; prints every error as "
               "file:line:col: message.\n"
               "Without paths: $SLUICE_PIPELINES (colon-separated), else "
               "./pipelines.\n"
               "  -q, --quiet   print nothing when the definitions are valid\n"
               "  --json        print what was loaded as JSON (docs/cli.md)\n"
               "exit codes: 0 valid, 2 invalid definitions, 1 a file or "
               "directory could not be read, 64 usage\n");
}

/* Prints what validate loaded as the JSON object of docs/cli.md. */
static void validate_json(const sl_model *m) {
    json_t *o = json_object(), *ps = json_array();
    size_t stages = 0;
    for (size_t i = 0; i < m->npipelines; i++) {
        const sl_pipeline *p = &m->pipelines[i];
        json_t *jp = json_object(), *js = json_array();
        json_object_set_new(jp, "name", json_string(p->name));
        json_object_set_new(jp, "file", json_string(p->file));
        json_object_set_new(jp, "subject", p->has_subject
                                               ? json_string(p->subject.table)
                                               : json_null());
        for (size_t k = 0; k < p->nstages; k++, stages++) {
            const sl_stage *st = &p->stages[k];
            json_t *x = json_object();
            json_object_set_new(x, "name", json_string(st->name));
            json_object_set_new(x, "queue", json_string(st->queue));
            json_object_set_new(x, "handler", json_string(st->handler));
            json_object_set_new(x, "provider", st->provider
                                                   ? json_string(st->provider)
                                                   : json_null());
            json_object_set_new(x, "concurrency",
                                json_integer(st->concurrency));
            json_array_append_new(js, x);
        }
        json_object_set_new(jp, "stages", js);
        json_array_append_new(ps, jp);
    }
    json_object_set_new(o, "valid", json_true());
    json_object_set_new(o, "pipeline_count", json_integer((json_int_t)m->npipelines));
    json_object_set_new(o, "stage_count", json_integer((json_int_t)stages));
    json_object_set_new(o, "pipelines", ps);
    sl_cli_json_print(o, 0);
}

int sl_cmd_validate(int argc, char **argv) {
    int quiet = 0, as_json = 0;
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    if (!paths) return SL_EXIT_FAILURE;
    int n = take_pipeline_opts(&argc, argv, paths, argc);
    int rc = SL_EXIT_OK;
    if (n < 0) {
        rc = SL_EXIT_USAGE;
        goto out;
    }
    int dashdash = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!dashdash && !strcmp(a, "--")) {
            dashdash = 1;
        } else if (!dashdash && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            validate_usage(stdout);
            goto out;
        } else if (!dashdash && (!strcmp(a, "-q") || !strcmp(a, "--quiet"))) {
            quiet = 1;
        } else if (!dashdash && !strcmp(a, "--json")) {
            as_json = 1;
        } else if (!dashdash && a[0] == '-' && a[1]) {
            fprintf(stderr, "sluice validate: unknown option '%s'\n", a);
            validate_usage(stderr);
            rc = SL_EXIT_USAGE;
            goto out;
        } else {
            paths[n++] = a;
        }
    }
    sl_model *m = NULL;
    quiet_load = 1;
    rc = load_paths(paths, (size_t)n, &m);
    if (rc == SL_EXIT_OK && as_json) {
        validate_json(m);
    } else if (rc == SL_EXIT_OK && !quiet) {
        size_t stages = 0;
        for (size_t i = 0; i < m->npipelines; i++)
            stages += m->pipelines[i].nstages;
        printf("ok: %zu pipeline%s, %zu stage%s\n", m->npipelines,
               m->npipelines == 1 ? "" : "s", stages, stages == 1 ? "" : "s");
        for (size_t i = 0; i < m->npipelines; i++) {
            const sl_pipeline *p = &m->pipelines[i];
            printf("  %s (%s): ", p->name, p->file);
            for (size_t s = 0; s < p->nstages; s++) {
                const sl_stage *st = &p->stages[s];
                printf("%s%s (queue %s", s ? ", " : "", st->name, st->queue);
                if (st->provider)
                    printf(", provider %s: %s", st->provider, st->handler);
                printf(")");
            }
            printf("\n");
        }
    }
    sl_model_free(m);
out:
    free(paths);
    return rc;
}
