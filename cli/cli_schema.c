/* cli_schema.c - `sluice sql` and `sluice migrate` (docs/cli.md). */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_priv.h"
#include "error.h"
#include "migrate.h"
#include "schema.h"

static void sql_usage(FILE *f) {
    fprintf(
        f, "usage: sluice sql [-p PATH]... [--base] [--json]\n"
           "\n"
           "Prints the DDL the pipelines imply (idempotent, deterministic).\n"
           "  -p, --pipelines PATH  pipeline file or directory (repeatable;\n"
           "                        default $SLUICE_PIPELINES or ./pipelines)\n"
           "  --base                print sql/base.sql first\n"
           "  --json                {\"pipelines\", \"objects\", \"sql\"} "
           "(docs/cli.md)\n");
}

/* `sql --json`: the pipelines, every object with its kind, table and
 * owning pipeline (null: shared), and the SQL. */
static int sql_json(const sl_model *m, int base, const char *ddl) {
    sl_schema *s = NULL;
    char err[1024];
    if (sl_schema_build(m, &s, err, sizeof err) != 0) {
        fprintf(stderr, "sluice sql: %s\n", err);
        return SL_EXIT_FAILURE;
    }
    json_t *ps = json_array(), *objs = json_array();
    for (size_t i = 0; i < m->npipelines; i++)
        json_array_append_new(ps, json_string(m->pipelines[i].name));
    static const char *const kinds[] = {
        [SL_OBJ_ENUM] = "type",     [SL_OBJ_FUNCTION] = "function",
        [SL_OBJ_TABLE] = "table",   [SL_OBJ_INDEX] = "index",
        [SL_OBJ_TRIGGER] = "trigger", [SL_OBJ_RLS] = "row level security",
        [SL_OBJ_POLICY] = "policy", [SL_OBJ_GRANT] = "grant",
        [SL_OBJ_VIEW] = "view"};
    for (size_t i = 0; i < s->nobjects; i++) {
        const sl_schema_object *o = &s->objects[i];
        json_t *j = json_object();
        json_object_set_new(j, "kind", json_string(kinds[o->kind]));
        json_object_set_new(j, "name", json_string(o->name));
        json_object_set_new(j, "table",
                            o->table ? json_string(o->table) : json_null());
        json_object_set_new(j, "pipeline", o->pipeline
                                               ? json_string(o->pipeline)
                                               : json_null());
        json_array_append_new(objs, j);
    }
    sl_schema_free(s);
    json_t *v = json_object();
    json_object_set_new(v, "pipelines", ps);
    json_object_set_new(v, "objects", objs);
    json_object_set_new(v, "base_sql",
                        base ? json_string(sl_migrate_base_sql())
                             : json_null());
    json_object_set_new(v, "sql", json_string(ddl));
    sl_cli_json_print(v, 0);
    return SL_EXIT_OK;
}

int sl_cmd_sql(int argc, char **argv) {
    int base = 0, as_json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            sql_usage(stdout);
            return SL_EXIT_OK;
        }
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--base") == 0) {
            base = 1;
        } else if (strcmp(argv[i], "--json") == 0) {
            as_json = 1;
        } else {
            fprintf(stderr, "sluice sql: unknown argument '%s'\n", argv[i]);
            sql_usage(stderr);
            sl_model_free(m);
            return SL_EXIT_USAGE;
        }
    }
    char err[1024];
    char *ddl = NULL;
    int r = sl_schema_ddl(m, &ddl, err, sizeof err);
    if (r != 0) {
        sl_model_free(m);
        fprintf(stderr, "sluice sql: %s\n", err);
        return r == -SL_EINVAL ? SL_EXIT_INVALID : SL_EXIT_FAILURE;
    }
    if (as_json) {
        r = sql_json(m, base, ddl);
        free(ddl);
        sl_model_free(m);
        return r;
    }
    sl_model_free(m);
    if (base) printf("%s\n", sl_migrate_base_sql());
    fputs(ddl, stdout);
    free(ddl);
    return fflush(stdout) == 0 ? SL_EXIT_OK : SL_EXIT_FAILURE;
}

static void migrate_usage(FILE *f) {
    fprintf(
        f,
        "usage: sluice migrate [-p PATH]... [--dry-run] [--allow-destructive]\n"
        "                      [--write[=DIR]] [--base | --no-base] [--json]\n"
        "                      [--drop-pipeline NAME]... [--database URL]\n"
        "\n"
        "Applies the pipelines' schema in one transaction, and sql/base.sql\n"
        "when a pipeline references its tables (accounts, projects,\n"
        "interviews, ...). Only the objects of the given pipelines are\n"
        "managed: another application's pipelines in the same database are\n"
        "left alone.\n"
        "  -p, --pipelines PATH  pipeline file or directory (repeatable)\n"
        "  --dry-run             print the SQL it would run; change nothing\n"
        "  --allow-destructive   also drop tables/columns and change types\n"
        "  --write[=DIR]         save the migration as DIR/YYYYMMDDHHMMSS_\n"
        "                        sluice.sql (default DIR sql/migrations);\n"
        "                        nothing is applied\n"
        "  --base                apply sql/base.sql even when no pipeline\n"
        "                        references its tables\n"
        "  --no-base             leave sql/base.sql out\n"
        "  --json                print the result as one JSON object\n"
        "  --drop-pipeline NAME  drop the objects of pipeline NAME, which is\n"
        "                        no longer defined (with --allow-destructive)\n"
        "  --database URL        connection string (default $DATABASE_URL,\n"
        "                        else the libpq environment: PGHOST, ...)\n"
        "exit: 0 applied or up to date, 1 failure or refused, 2 invalid\n"
        "pipelines, 64 usage\n");
}

/* Prints each line of text indented. */
static void print_lines(FILE *f, const char *text) {
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        fprintf(f, "  %.*s\n", (int)n, p);
        p = nl ? nl + 1 : NULL;
    }
}

/* The lines of text as a JSON array of strings. */
static json_t *json_lines(const char *text) {
    json_t *a = json_array();
    const char *p = text;
    while (a && p && *p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n) json_array_append_new(a, json_stringn(p, n));
        p = nl ? nl + 1 : NULL;
    }
    return a;
}

/* `migrate --json`: {"status", "migration_id", "dry_run", "changes",
 * "refused", "pipelines", "file", "sql", "error"} (docs/cli.md). */
static void migrate_json(const sl_model *m, const sl_migrate_opts *o,
                         const sl_migrate_result *res, int r,
                         const char *path, const char *err) {
    const char *status = r == -SL_EREFUSED ? "refused"
                         : r != 0          ? "failed"
                         : !res->changed   ? "up_to_date"
                         : path            ? "written"
                         : o->dry_run      ? "dry_run"
                                           : "applied";
    json_t *ps = json_array();
    for (size_t i = 0; ps && i < m->npipelines; i++)
        json_array_append_new(ps, json_string(m->pipelines[i].name));
    json_t *v = json_object();
    json_object_set_new(v, "status", json_string(status));
    json_object_set_new(v, "migration_id",
                        res->id ? json_integer(res->id) : json_null());
    json_object_set_new(v, "dry_run", json_boolean(o->dry_run));
    json_object_set_new(v, "changes", json_lines(res->summary));
    json_object_set_new(v, "refused", json_lines(res->refused));
    json_object_set_new(v, "pipelines", ps);
    json_object_set_new(v, "file", path ? json_string(path) : json_null());
    json_object_set_new(v, "sql", o->dry_run && res->sql && r == 0
                                      ? json_string(res->sql)
                                      : json_null());
    json_object_set_new(v, "error", r != 0 && r != -SL_EREFUSED && err[0]
                                        ? json_string(err)
                                        : json_null());
    sl_cli_json_print(v, 0);
}

static int count_lines(const char *text) {
    int n = 0;
    for (const char *p = text; p && *p; p++)
        if (*p == '\n') n++;
    return n;
}

int sl_cmd_migrate(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            migrate_usage(stdout);
            return SL_EXIT_OK;
        }
    }
    sl_model *m = NULL;
    int rc = sl_cli_load(&argc, argv, &m);
    if (rc != 0) return rc;

    sl_migrate_opts o = {0};
    const char *write_dir = NULL, *url = NULL;
    const char *drops[64];
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--dry-run") == 0) {
            o.dry_run = 1;
        } else if (strcmp(a, "--allow-destructive") == 0) {
            o.allow_destructive = 1;
        } else if (strcmp(a, "--no-base") == 0) {
            o.skip_base = 1;
        } else if (strcmp(a, "--base") == 0) {
            o.base = 1;
        } else if (strcmp(a, "--json") == 0) {
            as_json = 1;
        } else if (strcmp(a, "--drop-pipeline") == 0 && i + 1 < argc &&
                   o.ndrop_pipelines < 64) {
            const char *name = argv[++i];
            for (size_t k = 0; k < m->npipelines; k++)
                if (strcmp(m->pipelines[k].name, name) == 0) {
                    fprintf(stderr,
                            "sluice migrate: --drop-pipeline %s: the pipeline "
                            "is loaded; remove its file first\n",
                            name);
                    sl_model_free(m);
                    return SL_EXIT_USAGE;
                }
            drops[o.ndrop_pipelines++] = name;
            o.drop_pipelines = drops;
        } else if (strcmp(a, "--write") == 0) {
            write_dir = "sql/migrations";
        } else if (strncmp(a, "--write=", 8) == 0 && a[8]) {
            write_dir = a + 8;
        } else if (strcmp(a, "--database") == 0 && i + 1 < argc) {
            url = argv[++i];
        } else if (strncmp(a, "--database=", 11) == 0) {
            url = a + 11;
        } else {
            fprintf(stderr, "sluice migrate: unknown argument '%s'\n", a);
            migrate_usage(stderr);
            sl_model_free(m);
            return SL_EXIT_USAGE;
        }
    }
    if (o.base && o.skip_base) {
        fprintf(stderr, "sluice migrate: --base and --no-base exclude each "
                        "other\n");
        sl_model_free(m);
        return SL_EXIT_USAGE;
    }
    if (write_dir) o.dry_run = 1; /* --write only writes the file */

    PGconn *c = sl_cli_connect("migrate", url);
    if (!c) {
        sl_model_free(m);
        return SL_EXIT_FAILURE;
    }
    char err[8192];
    sl_migrate_result res;
    int r = sl_migrate(c, m, &o, &res, err, sizeof err);
    PQfinish(c);
    int exit_code = r != 0 ? SL_EXIT_FAILURE : SL_EXIT_OK;
    char path[4096] = "";
    if (r == 0 && res.changed && write_dir &&
        sl_migrate_write(write_dir, m, res.sql, path, sizeof path, err,
                         sizeof err) != 0) {
        r = -SL_EIO;
        exit_code = SL_EXIT_FAILURE;
        path[0] = '\0';
    }
    if (as_json) {
        migrate_json(m, &o, &res, r, path[0] ? path : NULL, err);
        if (r == -SL_EREFUSED)
            fprintf(stderr, "sluice migrate: refused: rerun with "
                            "--allow-destructive to apply them\n");
        else if (r != 0)
            fprintf(stderr, "sluice migrate: %s\n", err);
    } else if (r == -SL_EREFUSED) {
        fprintf(stderr,
                "sluice migrate: refused: the pipelines no longer declare "
                "what these changes would destroy:\n");
        print_lines(stderr, res.refused);
        fprintf(stderr,
                "nothing was changed; rerun with --allow-destructive to "
                "apply them\n");
    } else if (r != 0) {
        fprintf(stderr, "sluice migrate: %s\n", err);
    } else if (!res.changed) {
        printf("sluice migrate: up to date\n");
    } else if (write_dir) {
        printf("sluice migrate: wrote %s (%d changes, not applied):\n", path,
               count_lines(res.summary));
        print_lines(stdout, res.summary);
    } else if (o.dry_run) {
        fputs(res.sql, stdout);
        printf("\n-- dry run: %d changes, nothing was applied\n",
               count_lines(res.summary));
    } else {
        printf("sluice migrate: applied migration %ld (%d changes):\n", res.id,
               count_lines(res.summary));
        print_lines(stdout, res.summary);
    }
    sl_migrate_result_free(&res);
    sl_model_free(m);
    return exit_code;
}
