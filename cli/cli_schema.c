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
        f, "usage: sluice sql [-p PATH]... [--base]\n"
           "\n"
           "Prints the DDL the pipelines imply (idempotent, deterministic).\n"
           "  -p, --pipelines PATH  pipeline file or directory (repeatable;\n"
           "                        default $SLUICE_PIPELINES or ./pipelines)\n"
           "  --base                print sql/base.sql first\n");
}

int sl_cmd_sql(int argc, char **argv) {
    int base = 0;
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
    sl_model_free(m);
    if (r != 0) {
        fprintf(stderr, "sluice sql: %s\n", err);
        return r == -SL_EINVAL ? SL_EXIT_INVALID : SL_EXIT_FAILURE;
    }
    if (base) printf("%s\n", sl_migrate_base_sql());
    fputs(ddl, stdout);
    free(ddl);
    return fflush(stdout) == 0 ? SL_EXIT_OK : SL_EXIT_FAILURE;
}

static void migrate_usage(FILE *f) {
    fprintf(
        f,
        "usage: sluice migrate [-p PATH]... [--dry-run] [--allow-destructive]\n"
        "                      [--write[=DIR]] [--no-base] [--database URL]\n"
        "\n"
        "Applies sql/base.sql and the pipelines' schema in one transaction.\n"
        "  -p, --pipelines PATH  pipeline file or directory (repeatable)\n"
        "  --dry-run             print the SQL it would run; change nothing\n"
        "  --allow-destructive   also drop tables/columns and change types\n"
        "  --write[=DIR]         save the migration as DIR/YYYYMMDDHHMMSS_\n"
        "                        sluice.sql (default DIR sql/migrations);\n"
        "                        nothing is applied\n"
        "  --no-base             leave sql/base.sql out\n"
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
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--dry-run") == 0) {
            o.dry_run = 1;
        } else if (strcmp(a, "--allow-destructive") == 0) {
            o.allow_destructive = 1;
        } else if (strcmp(a, "--no-base") == 0) {
            o.skip_base = 1;
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
    int exit_code = SL_EXIT_OK;
    if (r == -SL_EREFUSED) {
        fprintf(stderr,
                "sluice migrate: refused: the pipelines no longer declare "
                "what these changes would destroy:\n");
        print_lines(stderr, res.refused);
        fprintf(stderr,
                "nothing was changed; rerun with --allow-destructive to "
                "apply them\n");
        exit_code = SL_EXIT_FAILURE;
    } else if (r != 0) {
        fprintf(stderr, "sluice migrate: %s\n", err);
        exit_code = SL_EXIT_FAILURE;
    } else if (!res.changed) {
        printf("sluice migrate: up to date\n");
    } else if (write_dir) {
        char path[4096];
        if (sl_migrate_write(write_dir, m, res.sql, path, sizeof path, err,
                             sizeof err) != 0) {
            fprintf(stderr, "sluice migrate: %s\n", err);
            exit_code = SL_EXIT_FAILURE;
        } else {
            printf("sluice migrate: wrote %s (%d changes, not applied):\n",
                   path, count_lines(res.summary));
            print_lines(stdout, res.summary);
        }
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
