/* test_schema.c - SQL generation from the pipeline model (engine/schema.h).
 *
 * No database here: these tests read the generated text. test_migrate.c
 * runs it against PostgreSQL. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl.h"
#include "error.h"
#include "schema.h"
#include "handler.h"
#include "testlib.h"

/* ------------------------------------------------------------ fixtures */

static const char *const INTERVIEW_YAML =
    "pipeline: interview\n"
    "subject:\n"
    "  table: interviews\n"
    "  status:\n"
    "    values: [uploading, uploaded, transcribed, processing, ready, "
    "error]\n"
    "  progress: progress\n"
    "  detail: status_detail\n"
    "  channel: interviews_status\n"
    "stages:\n"
    "  upload:\n"
    "    queue: upload_jobs\n"
    "    handler: noop\n"
    "    columns:\n"
    "      media_file: bytea\n"
    "      external_url: text\n"
    "    next: transcribe\n"
    "  transcribe:\n"
    "    queue: transcription_jobs\n"
    "    handler: noop\n"
    "    priority: 3\n"
    "    columns:\n"
    "      upload_url: text\n"
    "      transcript: text\n";

static sl_model *load_yaml(const char *name, const char *yaml) {
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = sl_dsl_load_string(name, yaml, strlen(yaml), &m, &d);
    if (rc != 0) {
        char *msg = sl_diags_format(&d);
        fail_msg("loading %s failed (%d):\n%s", name, rc, msg ? msg : "");
    }
    sl_diags_free(&d);
    return m;
}

/* SQL generation does not depend on the stage handlers, only on their
 * names being known to the loader. A handler the shipped pipelines name
 * that this build does not register (yet) is stood in for, under its own
 * name, by noop's functions; a registered one is used as it is. */
static void know_shipped_handlers(void) {
    static const char *const names[] = {"assemblyai.upload",
                                        "assemblyai.transcribe", "llm.analyze",
                                        "llm.generate"};
    static sl_handler standin[4];
    const sl_handler *noop = sl_handler_find("noop");
    assert_non_null(noop);
    for (int i = 0; i < 4; i++) {
        if (sl_handler_find(names[i])) continue;
        standin[i] = *noop;
        standin[i].name = names[i];
        assert_int_equal(sl_handler_register(&standin[i]), 0);
    }
}

static sl_model *load_file(const char *path) {
    know_shipped_handlers();
    sl_model *m = NULL;
    sl_diags d = {0};
    const char *paths[1] = {path};
    int rc = sl_dsl_load(paths, 1, &m, &d);
    if (rc != 0) {
        char *msg = sl_diags_format(&d);
        fail_msg("loading %s failed (%d):\n%s", path, rc, msg ? msg : "");
    }
    sl_diags_free(&d);
    return m;
}

static char *ddl_of(const sl_model *m) {
    char *out = NULL, err[512];
    int rc = sl_schema_ddl(m, &out, err, sizeof err);
    if (rc != 0) fail_msg("sl_schema_ddl: %d %s", rc, err);
    assert_non_null(out);
    return out;
}

#define assert_contains(hay, needle)                                           \
    do {                                                                       \
        if (!strstr((hay), (needle)))                                          \
            fail_msg("expected the DDL to contain:\n  %s", (needle));          \
    } while (0)

#define assert_not_contains(hay, needle)                                       \
    do {                                                                       \
        if (strstr((hay), (needle)))                                           \
            fail_msg("expected the DDL not to contain:\n  %s", (needle));      \
    } while (0)

/* ------------------------------------------------------------ a tiny lexer */

/* Calls fn for every bare word (unquoted identifier or keyword) of sql.
 * String literals and comments are skipped; dollar-quoted bodies are SQL
 * too and are scanned. */
typedef void (*word_fn)(const char *w, size_t n, void *arg);

static void each_bare_word(const char *sql, word_fn fn, void *arg) {
    const char *p = sql;
    while (*p) {
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (*p == '\'') {
            p++;
            while (*p && !(*p == '\'' && p[1] != '\''))
                p += *p == '\'' ? 2 : 1;
            if (*p) p++;
        } else if (*p == '"') {
            p++;
            while (*p && !(*p == '"' && p[1] != '"'))
                p += *p == '"' ? 2 : 1;
            if (*p) p++;
        } else if (*p == '$') {
            p++;
            while (*p && *p != '$')
                p++; /* the tag */
            if (*p) p++;
        } else if (isalpha((unsigned char)*p) || *p == '_') {
            const char *s = p;
            while (isalnum((unsigned char)*p) || *p == '_')
                p++;
            fn(s, (size_t)(p - s), arg);
        } else if (isdigit((unsigned char)*p)) {
            while (isalnum((unsigned char)*p))
                p++;
        } else {
            p++;
        }
    }
}

typedef struct {
    const char **names;
    size_t n;
    char found[128];
} forbidden;

static void check_word(const char *w, size_t n, void *arg) {
    forbidden *f = arg;
    for (size_t i = 0; i < f->n; i++)
        if (strlen(f->names[i]) == n && strncmp(f->names[i], w, n) == 0 &&
            !f->found[0])
            snprintf(f->found, sizeof f->found, "%s", f->names[i]);
}

/* ------------------------------------------------------------ tests */

static void ddl_is_deterministic(void **state) {
    (void)state;
    sl_model *a = load_yaml("a.yaml", INTERVIEW_YAML);
    sl_model *b = load_yaml("a.yaml", INTERVIEW_YAML);
    char *x = ddl_of(a), *y = ddl_of(a), *z = ddl_of(b);
    assert_string_equal(x, y);
    assert_string_equal(x, z);
    free(x);
    free(y);
    free(z);
    sl_model_free(a);
    sl_model_free(b);
}

static void every_identifier_is_quoted(void **state) {
    (void)state;
    sl_model *m = load_yaml("i.yaml", INTERVIEW_YAML);
    sl_model *g = load_yaml("g.yaml", sl_test_generation_yaml);
    char *ddl1 = ddl_of(m), *ddl2 = ddl_of(g);
    /* Every name that comes from the model or that the generator derives
     * from it, and the engine's column names. */
    const char *names[] = {"interviews",
                           "id",
                           "interview_id",
                           "status",
                           "progress",
                           "status_detail",
                           "interviews_status",
                           "upload_jobs",
                           "transcription_jobs",
                           "upload_jobs_channel",
                           "transcription_jobs_channel",
                           "media_file",
                           "external_url",
                           "upload_url",
                           "transcript",
                           "generation_jobs",
                           "projects",
                           "accounts",
                           "project_id",
                           "account_id",
                           "payload",
                           "result",
                           "attempts",
                           "last_error",
                           "error_class",
                           "priority",
                           "run_at",
                           "locked_by",
                           "locked_until",
                           "checkpoint",
                           "dedup_key",
                           "started_at",
                           "finished_at",
                           "created_at",
                           "updated_at",
                           "job_status",
                           "new_rows",
                           "sluice_app",
                           "sluice_statistics",
                           "sluice_inherit",
                           "sluice_set_updated_at",
                           "upload_jobs_claim_idx",
                           "upload_jobs_notify_insert",
                           "upload_jobs_notify_status",
                           "upload_jobs_updated_at",
                           "interviews_status_notify",
                           "queue",
                           "pending",
                           "t"};
    forbidden f = {names, sizeof names / sizeof names[0], ""};
    each_bare_word(ddl1, check_word, &f);
    each_bare_word(ddl2, check_word, &f);
    if (f.found[0])
        fail_msg("identifier \"%s\" appears unquoted in the DDL", f.found);
    /* And they do appear, quoted. */
    assert_contains(ddl1, "\"upload_jobs\"");
    assert_contains(ddl1, "\"interview_id\"");
    assert_contains(ddl2, "\"project_id\"");
    free(ddl1);
    free(ddl2);
    sl_model_free(m);
    sl_model_free(g);
}

static void
interview_pipeline_has_the_seeds_tables_columns_and_channels(void **state) {
    (void)state;
    sl_model *m = load_file(SL_SOURCE_DIR "/pipelines/interview.yaml");
    char *ddl = ddl_of(m);
    const char *tables[] = {"upload_jobs", "transcription_jobs",
                            "analysis_jobs"};
    for (int i = 0; i < 3; i++) {
        char want[300];
        snprintf(want, sizeof want, "CREATE TABLE IF NOT EXISTS \"%s\" (",
                 tables[i]);
        assert_contains(ddl, want);
        snprintf(want, sizeof want, "PERFORM pg_notify('%s_channel', '')",
                 tables[i]);
        assert_contains(ddl, want);
    }
    /* The seed's columns, each queue table. */
    assert_contains(ddl, "\"id\" uuid NOT NULL DEFAULT gen_random_uuid() "
                         "PRIMARY KEY");
    assert_contains(ddl, "\"interview_id\" uuid NOT NULL REFERENCES "
                         "\"interviews\" (\"id\") ON DELETE CASCADE");
    assert_contains(ddl, "\"attempts\" integer NOT NULL DEFAULT 0");
    assert_contains(ddl, "\"last_error\" text");
    assert_contains(ddl, "\"status\" \"job_status\" NOT NULL DEFAULT "
                         "'pending'");
    assert_contains(ddl, "\"status_detail\" text");
    assert_contains(ddl, "\"progress\" integer NOT NULL DEFAULT 0");
    assert_contains(ddl, "\"created_at\" timestamptz NOT NULL DEFAULT now()");
    assert_contains(ddl, "\"updated_at\" timestamptz NOT NULL DEFAULT now()");
    /* The seed's declared columns. */
    assert_contains(ddl, "\"media_file\" bytea");
    assert_contains(ddl, "\"external_url\" text");
    assert_contains(ddl, "\"upload_url\" text");
    assert_contains(ddl, "\"transcript\" text");
    /* The seed's five job states plus cancelled. */
    assert_contains(ddl, "CREATE TYPE \"job_status\" AS ENUM ('pending', "
                         "'in_progress', 'done', 'error', 'retry', "
                         "'cancelled')");
    free(ddl);
    sl_model_free(m);
}

static void insert_notify_trigger_is_statement_level(void **state) {
    (void)state;
    sl_model *m = load_yaml("i.yaml", INTERVIEW_YAML);
    char *ddl = ddl_of(m);
    assert_contains(ddl, "CREATE OR REPLACE TRIGGER \"upload_jobs_notify_"
                         "insert\"\n  AFTER INSERT ON \"upload_jobs\"\n  "
                         "REFERENCING NEW TABLE AS \"new_rows\" FOR EACH "
                         "STATEMENT\n");
    assert_contains(ddl, "IF EXISTS (SELECT 1 FROM \"new_rows\" WHERE "
                         "\"status\" IN ('pending', 'retry')) THEN\n    "
                         "PERFORM pg_notify('upload_jobs_channel', '');");
    /* Row level only for a status change back to runnable. */
    assert_contains(ddl, "AFTER UPDATE OF \"status\" ON \"upload_jobs\"\n  "
                         "FOR EACH ROW WHEN (NEW.\"status\" IN ('pending', "
                         "'retry') AND OLD.\"status\" IS DISTINCT FROM "
                         "NEW.\"status\")");
    /* No payload on either: any role may LISTEN (docs/schema.md). */
    assert_not_contains(ddl, "NEW.\"id\"::text");
    assert_not_contains(ddl, "AFTER INSERT ON \"upload_jobs\"\n  FOR EACH "
                             "ROW");
    free(ddl);
    sl_model_free(m);
}

static void rls_policy_inherits_visibility_from_the_subject(void **state) {
    (void)state;
    sl_model *m = load_yaml("i.yaml", INTERVIEW_YAML);
    char *ddl = ddl_of(m);
    assert_contains(ddl, "ALTER TABLE \"upload_jobs\" ENABLE ROW LEVEL "
                         "SECURITY;");
    assert_contains(ddl, "ALTER TABLE \"transcription_jobs\" ENABLE ROW "
                         "LEVEL SECURITY;");
    const char *cond = "EXISTS (SELECT 1 FROM \"interviews\" \"t\" WHERE "
                       "\"t\".\"id\" = \"upload_jobs\".\"interview_id\")";
    char want[512];
    snprintf(want, sizeof want,
             "CREATE POLICY \"sluice_inherit\" ON \"upload_jobs\" FOR ALL\n"
             "  USING (%s)\n  WITH CHECK (%s);",
             cond, cond);
    assert_contains(ddl, want);
    assert_not_contains(ddl, "FORCE ROW LEVEL SECURITY");
    /* Column grants: inputs only, and status through the guard. */
    assert_contains(ddl, "REVOKE ALL ON TABLE \"upload_jobs\" FROM "
                         "\"sluice_app\";\n    GRANT SELECT, DELETE ON TABLE "
                         "\"upload_jobs\" TO \"sluice_app\";\n    GRANT INSERT "
                         "(\"interview_id\", \"media_file\", \"external_url\") ON "
                         "TABLE \"upload_jobs\" TO \"sluice_app\";\n    GRANT "
                         "UPDATE (\"status\") ON TABLE \"upload_jobs\" TO "
                         "\"sluice_app\";");
    assert_not_contains(ddl, "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE");
    assert_contains(ddl, "BEFORE UPDATE OF \"status\" ON \"upload_jobs\"");
    free(ddl);
    sl_model_free(m);
}

static void standalone_queue_gets_its_references_and_no_subject(void **state) {
    (void)state;
    sl_model *m = load_yaml("g.yaml", sl_test_generation_yaml);
    char *ddl = ddl_of(m);
    assert_contains(ddl, "\"account_id\" uuid REFERENCES \"accounts\" "
                         "(\"id\") ON DELETE CASCADE");
    assert_contains(ddl, "\"project_id\" uuid NOT NULL REFERENCES "
                         "\"projects\" (\"id\") ON DELETE CASCADE");
    assert_contains(ddl, "\"payload\" jsonb");
    assert_contains(ddl, "\"result\" jsonb");
    assert_contains(ddl, "CREATE INDEX IF NOT EXISTS "
                         "\"generation_jobs_project_id_idx\" ON "
                         "\"generation_jobs\" (\"project_id\");");
    assert_contains(ddl, "EXISTS (SELECT 1 FROM \"projects\" \"t\" WHERE "
                         "\"t\".\"id\" = \"generation_jobs\".\"project_id\")");
    /* A reference other than the inherited one must be visible too. */
    assert_contains(ddl, "AND (\"generation_jobs\".\"account_id\" IS NULL OR "
                         "EXISTS (SELECT 1 FROM \"accounts\" \"r\" WHERE "
                         "\"r\".\"id\" = \"generation_jobs\".\"account_id\")));");
    assert_not_contains(ddl, "interview");
    assert_not_contains(ddl, "subject_idx");
    free(ddl);
    sl_model_free(m);
}

static void shipped_generation_pipeline_is_a_standalone_queue(void **state) {
    (void)state;
    sl_model *m = load_file(SL_SOURCE_DIR "/pipelines/generation.yaml");
    char *ddl = ddl_of(m);
    assert_contains(ddl, "CREATE TABLE IF NOT EXISTS \"generation_jobs\" (");
    assert_contains(ddl, "\"payload\" jsonb");
    assert_contains(ddl, "\"result\" jsonb");
    assert_contains(ddl, "pg_notify('generation_jobs_channel', '')");
    assert_contains(ddl, "REFERENCES \"projects\" (\"id\") ON DELETE CASCADE");
    free(ddl);
    sl_model_free(m);
}

static void claim_lease_and_dedup_indexes_are_partial(void **state) {
    (void)state;
    sl_model *m = load_yaml("i.yaml", INTERVIEW_YAML);
    char *ddl = ddl_of(m);
    assert_contains(ddl, "CREATE INDEX IF NOT EXISTS \"upload_jobs_claim_idx\""
                         " ON \"upload_jobs\" (\"priority\" DESC, \"run_at\","
                         " \"attempts\" DESC)"
                         " WHERE \"status\" IN ('pending', 'retry');");
    assert_contains(ddl, "CREATE INDEX IF NOT EXISTS \"upload_jobs_lease_idx\""
                         " ON \"upload_jobs\" (\"locked_until\") WHERE "
                         "\"status\" = 'in_progress';");
    assert_contains(ddl, "CREATE UNIQUE INDEX IF NOT EXISTS "
                         "\"upload_jobs_dedup_key\" ON \"upload_jobs\" "
                         "(\"dedup_key\") WHERE \"dedup_key\" IS NOT NULL;");
    assert_contains(ddl, "CREATE INDEX IF NOT EXISTS "
                         "\"upload_jobs_subject_idx\" ON \"upload_jobs\" "
                         "(\"interview_id\");");
    free(ddl);
    sl_model_free(m);
}

static void stage_priority_is_the_column_default(void **state) {
    (void)state;
    sl_model *m = load_yaml("i.yaml", INTERVIEW_YAML);
    sl_schema *s;
    char err[256];
    assert_int_equal(sl_schema_build(m, &s, err, sizeof err), 0);
    assert_int_equal(s->ntables, 2);
    assert_string_equal(s->tables[1].name, "transcription_jobs");
    int found = 0;
    for (size_t i = 0; i < s->tables[1].ncolumns; i++)
        if (strcmp(s->tables[1].columns[i].name, "priority") == 0) {
            assert_string_equal(s->tables[1].columns[i].default_sql, "3");
            found = 1;
        }
    assert_true(found);
    sl_schema_free(s);
    sl_model_free(m);
}

static void subject_channel_notifies_status_progress_and_detail(void **state) {
    (void)state;
    sl_model *m = load_yaml("i.yaml", INTERVIEW_YAML);
    char *ddl = ddl_of(m);
    /* No payload: a listener re-reads the row under its own RLS. */
    assert_contains(ddl, "PERFORM pg_notify('interviews_status', '');");
    assert_not_contains(ddl, "json_build_object");
    assert_contains(ddl, "AFTER UPDATE ON \"interviews\"\n  FOR EACH ROW WHEN "
                         "(OLD.\"status\" IS DISTINCT FROM NEW.\"status\" OR "
                         "OLD.\"progress\" IS DISTINCT FROM NEW.\"progress\" "
                         "OR OLD.\"status_detail\" IS DISTINCT FROM "
                         "NEW.\"status_detail\")");
    free(ddl);
    sl_model_free(m);
}

static void no_subject_trigger_without_a_channel(void **state) {
    (void)state;
    char *yaml = strdup(INTERVIEW_YAML);
    char *ch = strstr(yaml, "  channel: interviews_status\n");
    assert_non_null(ch);
    memmove(ch, ch + strlen("  channel: interviews_status\n"),
            strlen(ch + strlen("  channel: interviews_status\n")) + 1);
    sl_model *m = load_yaml("i.yaml", yaml);
    char *ddl = ddl_of(m);
    assert_not_contains(ddl, "ON \"interviews\"\n");
    assert_not_contains(ddl, "json_build_object");
    free(ddl);
    free(yaml);
    sl_model_free(m);
}

static void statistics_view_has_a_row_per_queue(void **state) {
    (void)state;
    sl_model *m = load_yaml("i.yaml", INTERVIEW_YAML);
    char *ddl = ddl_of(m);
    assert_contains(ddl, "CREATE OR REPLACE VIEW \"sluice_statistics\" WITH "
                         "(security_invoker = true) AS\n");
    assert_contains(ddl, "SELECT 'upload_jobs'::text AS \"queue\"");
    assert_contains(ddl, "SELECT 'transcription_jobs'::text AS \"queue\"");
    assert_contains(ddl, "AS \"oldest_pending_age\"");
    /* The mean run time of the last 1,000 done jobs, by finished_at. */
    assert_contains(ddl, "ORDER BY \"finished_at\" DESC LIMIT 1000) d) AS"
                         " \"mean_run_time\"");
    /* Every count compares with the enum value made at run time, so an
     * index serves it; finished statuses are counted up to 10,001. */
    const char *counts[] = {"pending", "in_progress", "retry",
                            "done",    "error",       "cancelled"};
    for (int i = 0; i < 6; i++) {
        char want[300];
        snprintf(want, sizeof want,
                 "FROM \"upload_jobs\" WHERE \"status\" ="
                 " '%s'::text::\"job_status\"%s",
                 counts[i], i < 3 ? ") AS c" : " LIMIT 10001) l) AS c");
        assert_contains(ddl, want);
    }
    assert_not_contains(ddl, "\"status\"::text = ");
    free(ddl);
    sl_model_free(m);
}

static void snapshot_lists_queue_tables_and_column_types(void **state) {
    (void)state;
    sl_model *m = load_yaml("g.yaml", sl_test_generation_yaml);
    sl_schema *s;
    char err[256];
    assert_int_equal(sl_schema_build(m, &s, err, sizeof err), 0);
    char *snap = sl_schema_snapshot(s);
    assert_non_null(snap);
    json_t *j = json_loads(snap, 0, NULL);
    assert_non_null(j);
    json_t *t = json_array_get(json_object_get(j, "tables"), 0);
    assert_string_equal(json_string_value(json_object_get(t, "name")),
                        "generation_jobs");
    json_t *cols = json_object_get(t, "columns");
    int seen = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cols, i, c) {
        const char *n = json_string_value(json_object_get(c, "name"));
        const char *ty = json_string_value(json_object_get(c, "type"));
        if (strcmp(n, "run_at") == 0) {
            assert_string_equal(ty, "timestamp with time zone");
            seen++;
        }
        if (strcmp(n, "project_id") == 0) {
            assert_string_equal(
                json_string_value(json_object_get(c, "references")),
                "projects.id");
            seen++;
        }
    }
    assert_int_equal(seen, 2);
    json_decref(j);
    free(snap);
    sl_schema_free(s);
    sl_model_free(m);
}

static void type_aliases_have_one_canonical_spelling(void **state) {
    (void)state;
    assert_string_equal(sl_type_canonical("int"), "integer");
    assert_string_equal(sl_type_canonical("INT4"), "integer");
    assert_string_equal(sl_type_canonical("bool"), "boolean");
    assert_string_equal(sl_type_canonical("int8"), "bigint");
    assert_string_equal(sl_type_canonical("timestamptz"),
                        "timestamp with time zone");
    assert_string_equal(sl_type_canonical("text[]"), "text[]");
    assert_null(sl_type_canonical("text); drop table x; --"));
    assert_null(sl_type_canonical("money"));
}

/* ---- hand-built models: what the loader would never let through ---- */

typedef struct handmade {
    sl_model m;
    sl_pipeline p;
    sl_stage st[2];
    sl_column cols[2];
} handmade;

static void handmade_init(handmade *h, const char *queue) {
    memset(h, 0, sizeof *h);
    h->p.name = "hand";
    h->p.rls.enabled = 0;
    h->p.stages = h->st;
    h->p.nstages = 1;
    h->st[0].name = "only";
    h->st[0].queue = queue;
    h->st[0].channel = "hand_channel";
    h->st[0].pipeline = &h->p;
    h->m.pipelines = &h->p;
    h->m.npipelines = 1;
}

static void unsafe_identifier_in_a_handmade_model_is_rejected(void **state) {
    (void)state;
    handmade h;
    handmade_init(&h, "jobs\"; DROP TABLE accounts; --");
    char *out = NULL, err[256];
    assert_int_equal(sl_schema_ddl(&h.m, &out, err, sizeof err), -SL_EINVAL);
    assert_null(out);
    assert_non_null(strstr(err, "is not a valid SQL identifier"));

    handmade_init(&h, "jobs");
    h.st[0].channel = "c'); select pg_sleep(10); --";
    assert_int_equal(sl_schema_ddl(&h.m, &out, err, sizeof err), -SL_EINVAL);
    assert_non_null(strstr(err, "channel"));
}

static void unknown_column_type_is_rejected(void **state) {
    (void)state;
    handmade h;
    handmade_init(&h, "jobs");
    h.cols[0].name = "x";
    h.cols[0].type = "text DEFAULT pg_read_file('/etc/passwd')";
    h.st[0].columns = h.cols;
    h.st[0].ncolumns = 1;
    char *out = NULL, err[256];
    assert_int_equal(sl_schema_ddl(&h.m, &out, err, sizeof err), -SL_EINVAL);
    assert_non_null(strstr(err, "not one of the allowed column types"));
}

static void declared_column_may_not_shadow_an_engine_column(void **state) {
    (void)state;
    handmade h;
    handmade_init(&h, "jobs");
    h.cols[0].name = "attempts";
    h.cols[0].type = "text";
    h.st[0].columns = h.cols;
    h.st[0].ncolumns = 1;
    char *out = NULL, err[256];
    assert_int_equal(sl_schema_ddl(&h.m, &out, err, sizeof err), -SL_EINVAL);
    assert_non_null(strstr(err, "\"attempts\""));
}

static void colliding_generated_names_are_rejected(void **state) {
    (void)state;
    /* Queue q's reference column "claim" would get the index q_claim_idx,
     * which is already q's claim index. */
    handmade h;
    handmade_init(&h, "q");
    h.cols[0].name = "claim";
    h.cols[0].type = "uuid";
    h.cols[0].ref_table = "projects";
    h.cols[0].ref_column = "id";
    h.st[0].columns = h.cols;
    h.st[0].ncolumns = 1;
    char *out = NULL, err[256];
    assert_int_equal(sl_schema_ddl(&h.m, &out, err, sizeof err), -SL_EINVAL);
    assert_non_null(strstr(err, "\"q_claim_idx\""));
    assert_non_null(strstr(err, "collides"));
}

static void long_queue_names_get_distinct_names_within_63_bytes(void **state) {
    (void)state;
    char q1[64], q2[64];
    memset(q1, 'a', 63);
    q1[63] = '\0';
    memcpy(q2, q1, 64);
    q2[62] = 'b';
    handmade h;
    handmade_init(&h, q1);
    h.st[1] = h.st[0];
    h.st[1].name = "other";
    h.st[1].queue = q2;
    h.st[1].channel = "other_channel";
    h.p.nstages = 2;
    sl_schema *s;
    char err[256];
    assert_int_equal(sl_schema_build(&h.m, &s, err, sizeof err), 0);
    for (size_t i = 0; i < s->nobjects; i++) {
        assert_true(strlen(s->objects[i].name) <= 63);
        for (size_t k = i + 1; k < s->nobjects; k++)
            if (s->objects[i].kind == s->objects[k].kind &&
                s->objects[i].kind != SL_OBJ_GRANT &&
                s->objects[i].kind != SL_OBJ_RLS &&
                s->objects[i].kind != SL_OBJ_POLICY)
                assert_string_not_equal(s->objects[i].name, s->objects[k].name);
    }
    sl_schema_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ddl_is_deterministic),
        cmocka_unit_test(every_identifier_is_quoted),
        cmocka_unit_test(
            interview_pipeline_has_the_seeds_tables_columns_and_channels),
        cmocka_unit_test(insert_notify_trigger_is_statement_level),
        cmocka_unit_test(rls_policy_inherits_visibility_from_the_subject),
        cmocka_unit_test(standalone_queue_gets_its_references_and_no_subject),
        cmocka_unit_test(shipped_generation_pipeline_is_a_standalone_queue),
        cmocka_unit_test(claim_lease_and_dedup_indexes_are_partial),
        cmocka_unit_test(stage_priority_is_the_column_default),
        cmocka_unit_test(subject_channel_notifies_status_progress_and_detail),
        cmocka_unit_test(no_subject_trigger_without_a_channel),
        cmocka_unit_test(statistics_view_has_a_row_per_queue),
        cmocka_unit_test(snapshot_lists_queue_tables_and_column_types),
        cmocka_unit_test(type_aliases_have_one_canonical_spelling),
        cmocka_unit_test(unsafe_identifier_in_a_handmade_model_is_rejected),
        cmocka_unit_test(unknown_column_type_is_rejected),
        cmocka_unit_test(declared_column_may_not_shadow_an_engine_column),
        cmocka_unit_test(colliding_generated_names_are_rejected),
        cmocka_unit_test(long_queue_names_get_distinct_names_within_63_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
