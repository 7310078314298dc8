/* test_dsl_providers.c - choosing a stage's provider in YAML: `providers:`
 * (name -> handler, with, hooks, sql_writes, next, when_env) and
 * `provider: NAME|auto`, decided when the file is loaded; what the chosen
 * provider puts in the model, what is checked in the ones not chosen, the
 * errors with their line:column, and the shipped interview pipeline
 * choosing cloud or local providers by the API keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsltest.h"
#include "testlib.h"

#include "dsl.h"
#include "error.h"
#include "handler.h"

/* ---- helpers ------------------------------------------------------------ */

static sl_model *load_ok(const char *yaml) {
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = sl_dsl_load_string("t.yaml", yaml, strlen(yaml), &m, &d);
    if (rc != 0) fail_msg("load failed (%d):\n%s", rc, sl_test_diags(&d));
    assert_int_equal(d.n, 0);
    sl_diags_free(&d);
    return m;
}

static void expect_error(const char *yaml, int line, int col, const char *msg) {
    sl_test_expect_diag(NULL, 0, yaml, "t.yaml", line, col, msg);
}

static const char *with_str(const sl_stage *st, const char *key) {
    return json_string_value(json_object_get(st->with, key));
}

#define HEAD "pipeline: p\nsecurity: {rls: false}\nstages:\n"

/* Stage a: provider cloud when SLT_KEY is set, else local. Line 6 is
 * `providers:`, line 7 `cloud:`, line 11 `local:`. */
#define TWO_PROVIDERS                                                          \
    "    providers:\n"                                                         \
    "      cloud:\n"                                                           \
    "        when_env: [SLT_KEY]\n"                                            \
    "        handler: noop\n"                                                  \
    "        with: {tag: cloud}\n"                                             \
    "      local:\n"                                                           \
    "        handler: noop\n"                                                  \
    "        with: {tag: local}\n"

#define STAGE_TWO HEAD "  a:\n    queue: a_jobs\n" TWO_PROVIDERS

static void clear_env(void) {
    unsetenv("SLT_KEY");
    unsetenv("SLT_A");
    unsetenv("SLT_B");
    unsetenv("SLT_SWITCH");
    unsetenv("SLT_UNSET");
}

/* ---- choosing ------------------------------------------------------------ */

static void auto_picks_the_first_provider_whose_when_env_is_set(void **s) {
    (void)s;
    clear_env();
    setenv("SLT_KEY", "secret", 1);
    sl_model *m = load_ok(STAGE_TWO);
    const sl_stage *a = &m->pipelines[0].stages[0];
    assert_string_equal(a->provider, "cloud");
    assert_string_equal(a->handler, "noop");
    assert_string_equal(with_str(a, "tag"), "cloud");
    sl_model_free(m);

    unsetenv("SLT_KEY");
    m = load_ok(STAGE_TWO);
    a = &m->pipelines[0].stages[0];
    assert_string_equal(a->provider, "local");
    assert_string_equal(with_str(a, "tag"), "local");
    sl_model_free(m);
}

static void an_empty_variable_counts_as_unset(void **s) {
    (void)s;
    clear_env();
    setenv("SLT_KEY", "", 1);
    sl_model *m = load_ok(STAGE_TWO);
    assert_string_equal(m->pipelines[0].stages[0].provider, "local");
    sl_model_free(m);
    clear_env();
}

static void every_when_env_variable_must_be_set(void **s) {
    (void)s;
    clear_env();
    const char *yaml = HEAD "  a:\n    queue: a_jobs\n"
                            "    providers:\n"
                            "      both:\n"
                            "        when_env: [SLT_A, SLT_B]\n"
                            "        handler: noop\n"
                            "      one:\n"
                            "        when_env: SLT_A\n"
                            "        handler: noop\n"
                            "      local:\n"
                            "        handler: noop\n";
    setenv("SLT_A", "1", 1);
    sl_model *m = load_ok(yaml);
    assert_string_equal(m->pipelines[0].stages[0].provider, "one");
    sl_model_free(m);
    setenv("SLT_B", "1", 1);
    m = load_ok(yaml);
    assert_string_equal(m->pipelines[0].stages[0].provider, "both");
    sl_model_free(m);
    clear_env();
}

static void a_provider_without_when_env_always_qualifies(void **s) {
    (void)s;
    clear_env();
    setenv("SLT_KEY", "secret", 1);
    /* Declared first, it wins even though the cloud one's key is set:
     * the fallback goes last. */
    sl_model *m = load_ok(HEAD "  a:\n    queue: a_jobs\n"
                               "    providers:\n"
                               "      local: {handler: noop}\n"
                               "      cloud: {handler: noop, when_env: "
                               "[SLT_KEY]}\n");
    assert_string_equal(m->pipelines[0].stages[0].provider, "local");
    sl_model_free(m);
    clear_env();
}

static void an_explicit_provider_wins_over_when_env(void **s) {
    (void)s;
    clear_env();
    setenv("SLT_KEY", "secret", 1);
    sl_model *m = load_ok(HEAD "  a:\n    queue: a_jobs\n"
                               "    provider: local\n" TWO_PROVIDERS);
    assert_string_equal(m->pipelines[0].stages[0].provider, "local");
    sl_model_free(m);
    /* Named, a provider runs even without its variables (its handler
     * reports a missing key itself). */
    unsetenv("SLT_KEY");
    m = load_ok(HEAD "  a:\n    queue: a_jobs\n"
                     "    provider: cloud\n" TWO_PROVIDERS);
    assert_string_equal(m->pipelines[0].stages[0].provider, "cloud");
    sl_model_free(m);
}

static void the_switch_is_interpolated_and_auto_or_empty_mean_auto(void **s) {
    (void)s;
    clear_env();
    const char *yaml = HEAD "  a:\n    queue: a_jobs\n"
                            "    provider: ${SLT_SWITCH:-auto}\n" TWO_PROVIDERS;
    setenv("SLT_KEY", "secret", 1);
    sl_model *m = load_ok(yaml);
    assert_string_equal(m->pipelines[0].stages[0].provider, "cloud");
    sl_model_free(m);
    setenv("SLT_SWITCH", "local", 1);
    m = load_ok(yaml);
    assert_string_equal(m->pipelines[0].stages[0].provider, "local");
    sl_model_free(m);
    setenv("SLT_SWITCH", "auto", 1);
    m = load_ok(yaml);
    assert_string_equal(m->pipelines[0].stages[0].provider, "cloud");
    sl_model_free(m);
    m = load_ok(HEAD "  a:\n    queue: a_jobs\n"
                     "    provider: ''\n" TWO_PROVIDERS);
    assert_string_equal(m->pipelines[0].stages[0].provider, "cloud");
    sl_model_free(m);
    clear_env();
}

static void the_chosen_provider_fills_handler_with_hooks_sql_writes(void **s) {
    (void)s;
    clear_env();
    sl_test_file("run.lua", "function run(job) return {} end\n");
    const char *yaml = HEAD "  a:\n    queue: a_jobs\n"
                            "    provider: ${SLT_SWITCH:-auto}\n"
                            "    columns: {note: text}\n"
                            "    timeout: 70s\n"
                            "    providers:\n"
                            "      script:\n"
                            "        when_env: [SLT_KEY]\n"
                            "        handler: lua\n"
                            "        sql_writes: true\n"
                            "        with: {chunk: 3}\n"
                            "        hooks: {run: run.lua}\n"
                            "      plain:\n"
                            "        handler: noop\n";
    const char *path = sl_test_file("fill.yaml", yaml);
    setenv("SLT_KEY", "1", 1);
    sl_model *m = NULL;
    sl_diags d = {0};
    if (sl_dsl_load(&path, 1, &m, &d) != 0) fail_msg("load: %s", sl_test_diags(&d));
    const sl_stage *a = &m->pipelines[0].stages[0];
    assert_string_equal(a->provider, "script");
    assert_string_equal(a->handler, "lua");
    assert_int_equal(a->sql_writes, 1);
    assert_int_equal(json_integer_value(json_object_get(a->with, "chunk")), 3);
    assert_int_equal(a->nhooks, 1);
    assert_string_equal(a->hooks[0].point, "run");
    assert_non_null(strstr(a->hooks[0].file, "/run.lua"));
    /* Stage-level fields are shared by every provider. */
    assert_int_equal(a->ncolumns, 1);
    assert_int_equal(a->timeout_ms, 70000);
    sl_model_free(m);

    unsetenv("SLT_KEY");
    if (sl_dsl_load(&path, 1, &m, &d) != 0) fail_msg("load: %s", sl_test_diags(&d));
    a = &m->pipelines[0].stages[0];
    assert_string_equal(a->provider, "plain");
    assert_string_equal(a->handler, "noop");
    assert_int_equal(a->sql_writes, 0);
    assert_int_equal(a->nhooks, 0);
    assert_int_equal(json_object_size(a->with), 0);
    assert_int_equal(a->ncolumns, 1);
    assert_int_equal(a->timeout_ms, 70000);
    sl_model_free(m);
    sl_diags_free(&d);
}

static void a_stage_without_providers_has_no_provider(void **s) {
    (void)s;
    sl_model *m = load_ok(HEAD "  a:\n    queue: a_jobs\n    handler: noop\n");
    assert_null(m->pipelines[0].stages[0].provider);
    assert_string_equal(m->pipelines[0].stages[0].handler, "noop");
    sl_model_free(m);
}

static void a_provider_next_replaces_the_stage_next(void **s) {
    (void)s;
    clear_env();
    const char *yaml = HEAD "  a:\n    queue: a_jobs\n"
                            "    next: [{stage: b, map: {x: x}}]\n"
                            "    providers:\n"
                            "      cloud:\n"
                            "        when_env: [SLT_KEY]\n"
                            "        handler: noop\n"
                            "        next: [{stage: b, map: {y: y}}]\n"
                            "      local:\n"
                            "        handler: noop\n"
                            "  b:\n    queue: b_jobs\n    handler: noop\n"
                            "    columns: {x: text, y: text}\n";
    setenv("SLT_KEY", "1", 1);
    sl_model *m = load_ok(yaml);
    const sl_stage *a = &m->pipelines[0].stages[0];
    assert_int_equal(a->nnext, 1);
    assert_ptr_equal(a->next[0].stage, &m->pipelines[0].stages[1]);
    assert_int_equal(a->next[0].nmap, 1);
    assert_string_equal(a->next[0].map[0].to, "y");
    sl_model_free(m);
    /* The local provider sets no next: the stage's own applies. */
    unsetenv("SLT_KEY");
    m = load_ok(yaml);
    a = &m->pipelines[0].stages[0];
    assert_int_equal(a->nnext, 1);
    assert_string_equal(a->next[0].map[0].to, "x");
    assert_ptr_equal(a->next[0].stage, &m->pipelines[0].stages[1]);
    sl_model_free(m);
}

/* ---- errors ---------------------------------------------------------------
 */

static void an_unknown_provider_name_lists_the_choices(void **s) {
    (void)s;
    clear_env();
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    provider: locl\n" TWO_PROVIDERS,
                 6, 15,
                 "provider 'locl': stage 'a' has no such provider (choices: "
                 "cloud, local, or auto) (did you mean 'local'?)");
    /* Also when the name comes from the environment. */
    setenv("SLT_SWITCH", "cluod", 1);
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    provider: ${SLT_SWITCH:-auto}\n" TWO_PROVIDERS,
                 6, 15, "provider 'cluod': stage 'a' has no such provider");
    clear_env();
}

static void no_qualifying_provider_names_the_missing_variables(void **s) {
    (void)s;
    clear_env();
    setenv("SLT_A", "1", 1);
    expect_error(HEAD
                 "  a:\n    queue: a_jobs\n"
                 "    providers:\n"
                 "      cloud: {handler: noop, when_env: [SLT_KEY]}\n"
                 "      other: {handler: noop, when_env: [SLT_A, SLT_B]}\n",
                 6, 5,
                 "stage 'a': no provider qualifies: 'cloud' needs SLT_KEY; "
                 "'other' needs SLT_B (set the variables");
    clear_env();
}

static void providers_together_with_handler_is_an_error(void **s) {
    (void)s;
    clear_env();
    expect_error(HEAD "  a:\n    queue: a_jobs\n    handler: noop\n"
                      "    providers:\n      local: {handler: noop}\n",
                 6, 5,
                 "stage 'a': 'handler' cannot be used together with "
                 "'providers'");
    expect_error(HEAD "  a:\n    queue: a_jobs\n    with: {x: 1}\n"
                      "    providers:\n      local: {handler: noop}\n",
                 6, 5, "'with' cannot be used together with 'providers'");
    expect_error(HEAD "  a:\n    queue: a_jobs\n    sql_writes: true\n"
                      "    providers:\n      local: {handler: noop}\n",
                 6, 5, "'sql_writes' cannot be used together with 'providers'");
    expect_error(HEAD "  a:\n    queue: a_jobs\n    hooks: {run: x.lua}\n"
                      "    providers:\n      local: {handler: noop}\n",
                 6, 5, "'hooks' cannot be used together with 'providers'");
}

static void provider_without_providers_is_an_error(void **s) {
    (void)s;
    expect_error(HEAD "  a:\n    queue: a_jobs\n    handler: noop\n"
                      "    provider: local\n",
                 7, 5,
                 "stage 'a': 'provider' chooses one of the stage's "
                 "'providers', and it has none");
}

static void a_typo_in_the_unused_provider_is_still_reported(void **s) {
    (void)s;
    clear_env();
    setenv("SLT_KEY", "secret", 1); /* cloud chosen; local unused */
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    providers:\n"
                      "      cloud:\n"
                      "        when_env: [SLT_KEY]\n"
                      "        handler: noop\n"
                      "      local:\n"
                      "        handler: noopp\n",
                 11, 18, "unknown handler 'noopp' (did you mean 'noop'?)");
    /* A provider without a handler, and an unknown key in one. */
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    providers:\n"
                      "      cloud: {handler: noop, when_env: [SLT_KEY]}\n"
                      "      local: {with: {x: 1}}\n",
                 8, 7,
                 "stage 'a', provider 'local': missing required key "
                 "'handler'");
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    providers:\n"
                      "      cloud: {handler: noop, when_env: [SLT_KEY]}\n"
                      "      local: {handler: noop, hook: {}}\n",
                 8, 30,
                 "unknown key 'hook' in a provider (did you mean 'hooks'?)");
    /* An unused lua provider still needs its run hook. */
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    providers:\n"
                      "      cloud: {handler: noop, when_env: [SLT_KEY]}\n"
                      "      local: {handler: lua}\n",
                 8, 24,
                 "stage 'a', provider 'local': handler 'lua' needs a 'run' "
                 "hook");
    clear_env();
}

static void an_unused_provider_hook_must_compile(void **s) {
    (void)s;
    clear_env();
    sl_test_file("broken.lua", "function run(job)\n  return {\nend\n");
    const char *path =
        sl_test_file("hooks.yaml", HEAD "  a:\n    queue: a_jobs\n"
                                        "    providers:\n"
                                        "      cloud: {handler: noop}\n"
                                        "      local:\n"
                                        "        handler: lua\n"
                                        "        hooks: {run: broken.lua}\n");
    sl_test_expect_diag(&path, 1, NULL, path, 10, 22,
                    "hook 'run': Lua syntax error: broken.lua:");
}

static void an_unused_provider_next_is_checked(void **s) {
    (void)s;
    clear_env();
    const char *head = HEAD "  a:\n    queue: a_jobs\n"
                            "    providers:\n"
                            "      cloud: {handler: noop}\n"
                            "      local:\n"
                            "        handler: noop\n";
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "%s        next: [{stage: bb, map: {y: y}}]\n"
             "  b:\n    queue: b_jobs\n    handler: noop\n"
             "    columns: {x: text}\n",
             head);
    expect_error(yaml, 10, 24,
                 "next stage 'bb' does not exist in pipeline 'p' (did you "
                 "mean 'b'?)");
    snprintf(yaml, sizeof yaml,
             "%s        next: [{stage: b, map: {z: x}}]\n"
             "  b:\n    queue: b_jobs\n    handler: noop\n"
             "    columns: {x: text}\n",
             head);
    expect_error(yaml, 10, 33, "map: next stage 'b' declares no column 'z'");
}

static void graph_checks_cover_every_provider_next(void **s) {
    (void)s;
    clear_env();
    /* b is reached only through the unused provider: still reachable,
     * so validation does not depend on the environment. */
    sl_model *m = load_ok(HEAD "  a:\n    queue: a_jobs\n"
                               "    providers:\n"
                               "      cloud: {handler: noop}\n"
                               "      local: {handler: noop, next: b}\n"
                               "  b:\n    queue: b_jobs\n    handler: noop\n");
    assert_int_equal(m->pipelines[0].stages[0].nnext, 0);
    sl_model_free(m);
    /* A cycle through an unused provider's next is an error. */
    expect_error(HEAD "  a:\n    queue: a_jobs\n    handler: noop\n"
                      "    next: b\n"
                      "  b:\n    queue: b_jobs\n"
                      "    providers:\n"
                      "      cloud: {handler: noop}\n"
                      "      local: {handler: noop, next: a}\n",
                 12, 36, "cycle in next: a -> b -> a");
}

static void unset_variables_only_matter_in_the_chosen_provider(void **s) {
    (void)s;
    clear_env();
    const char *yaml = HEAD "  a:\n    queue: a_jobs\n"
                            "    providers:\n"
                            "      cloud:\n"
                            "        when_env: [SLT_KEY]\n"
                            "        handler: noop\n"
                            "        with: {url: \"${SLT_UNSET}\"}\n"
                            "      local:\n"
                            "        handler: noop\n";
    sl_model *m = load_ok(yaml); /* local chosen: cloud's ${SLT_UNSET} is
                                    not needed */
    assert_string_equal(m->pipelines[0].stages[0].provider, "local");
    sl_model_free(m);
    setenv("SLT_KEY", "1", 1);
    expect_error(yaml, 10, 21, "environment variable 'SLT_UNSET' is not set");
    clear_env();
}

static void the_handler_check_runs_for_the_chosen_provider_only(void **s) {
    (void)s;
    clear_env();
    /* local.transcribe needs a bytea column; the stage declares none. */
    const char *yaml = HEAD "  a:\n    queue: a_jobs\n"
                            "    providers:\n"
                            "      cloud:\n"
                            "        when_env: [SLT_KEY]\n"
                            "        handler: local.transcribe\n"
                            "      local:\n"
                            "        handler: noop\n";
    sl_model *m = load_ok(yaml);
    sl_model_free(m);
    setenv("SLT_KEY", "1", 1);
    expect_error(yaml, 4, 3,
                 "stage 'a' (provider 'cloud'): handler 'local.transcribe': "
                 "local.transcribe: the stage declares no bytea column");
    clear_env();
}

static void provider_names_and_when_env_are_checked(void **s) {
    (void)s;
    clear_env();
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    providers:\n      Cloud: {handler: noop}\n",
                 7, 7, "provider name 'Cloud' is not a valid name");
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    providers:\n      auto: {handler: noop}\n",
                 7, 7, "provider name 'auto' is reserved");
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    providers:\n"
                      "      cloud: {handler: noop, when_env: [\"${KEY}\"]}\n"
                      "      local: {handler: noop}\n",
                 7, 41, "when_env: '${KEY}' is not an environment variable");
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    providers:\n"
                      "      cloud: {handler: noop, when_env: []}\n",
                 7, 40,
                 "when_env: expected the names of environment "
                 "variables, got an empty list");
    expect_error(HEAD "  a:\n    queue: a_jobs\n    providers: {}\n", 6, 16,
                 "providers: expected at least one provider");
    expect_error(HEAD "  a:\n    queue: a_jobs\n    providers: [noop]\n", 6, 16,
                 "providers: expected a mapping, got a list");
    expect_error(HEAD "  a:\n    queue: a_jobs\n"
                      "    providers:\n      local: {handler: noop}\n"
                      "      local: {handler: noop}\n",
                 8, 7, "duplicate key 'local'");
}

static void a_missing_handler_mentions_providers(void **s) {
    (void)s;
    expect_error(HEAD "  a:\n    queue: a_jobs\n", 4, 3,
                 "stage 'a': missing required key 'handler' (or "
                 "'providers', a choice of handlers)");
}

/* ---- the shipped interview pipeline ----------------------------------- */

static void clear_provider_env(void) {
    unsetenv("ASSEMBLYAI_API_KEY");
    unsetenv("OPENAI_API_KEY");
    unsetenv("SLUICE_TRANSCRIBE_PROVIDER");
    unsetenv("SLUICE_ANALYZE_PROVIDER");
}

static sl_model *load_interview(void) {
    const char *paths[] = {SL_SOURCE_DIR "/pipelines/interview.yaml"};
    sl_model *m = NULL;
    sl_diags d = {0};
    if (sl_dsl_load(paths, 1, &m, &d) != 0)
        fail_msg("pipelines/interview.yaml does not load:\n%s", sl_test_diags(&d));
    sl_diags_free(&d);
    return m;
}

static void assert_stage(const sl_model *m, const char *stage,
                         const char *queue, const char *provider,
                         const char *handler) {
    const sl_stage *st = sl_model_stage(m, "interview", stage);
    assert_non_null(st);
    assert_string_equal(st->queue, queue);
    assert_string_equal(st->provider, provider);
    assert_string_equal(st->handler, handler);
}

static void shipped_interview_runs_locally_without_keys(void **s) {
    (void)s;
    clear_provider_env();
    sl_model *m = load_interview();
    assert_stage(m, "upload", "upload_jobs", "local", "noop");
    assert_stage(m, "transcribe", "transcription_jobs", "local",
                 "local.transcribe");
    assert_stage(m, "analyze", "analysis_jobs", "local", "lua");
    const sl_stage *up = sl_model_stage(m, "interview", "upload");
    const sl_stage *tr = sl_model_stage(m, "interview", "transcribe");
    const sl_stage *an = sl_model_stage(m, "interview", "analyze");
    /* The audio is handed on to the local recogniser. */
    assert_int_equal(up->nnext, 1);
    assert_ptr_equal(up->next[0].stage, tr);
    assert_int_equal(up->next[0].nmap, 1);
    assert_string_equal(up->next[0].map[0].to, "media_file");
    assert_string_equal(up->next[0].map[0].from, "media_file");
    /* The Lua analysis writes insights and personas. */
    assert_int_equal(an->sql_writes, 1);
    assert_int_equal(an->nhooks, 1);
    assert_non_null(strstr(an->hooks[0].file, "/hooks/local_analysis.lua"));
    sl_model_free(m);
}

static void shipped_interview_runs_on_the_cloud_with_both_keys(void **s) {
    (void)s;
    clear_provider_env();
    setenv("ASSEMBLYAI_API_KEY", "k1", 1);
    setenv("OPENAI_API_KEY", "k2", 1);
    sl_model *m = load_interview();
    assert_stage(m, "upload", "upload_jobs", "assemblyai", "assemblyai.upload");
    assert_stage(m, "transcribe", "transcription_jobs", "assemblyai",
                 "assemblyai.transcribe");
    assert_stage(m, "analyze", "analysis_jobs", "llm", "llm.analyze");
    const sl_stage *up = sl_model_stage(m, "interview", "upload");
    const sl_stage *an = sl_model_stage(m, "interview", "analyze");
    /* The reference hand-off: only the upload URL, never the bytes. */
    assert_int_equal(up->next[0].nmap, 1);
    assert_string_equal(up->next[0].map[0].to, "upload_url");
    assert_int_equal(an->sql_writes, 0);
    assert_int_equal(an->nhooks, 0);
    assert_string_equal(with_str(an, "model"), "gpt-4o-mini");
    sl_model_free(m);
    clear_provider_env();
}

static void shipped_interview_mixes_providers_by_key(void **s) {
    (void)s;
    clear_provider_env();
    setenv("ASSEMBLYAI_API_KEY", "k1", 1);
    sl_model *m = load_interview();
    assert_stage(m, "transcribe", "transcription_jobs", "assemblyai",
                 "assemblyai.transcribe");
    assert_stage(m, "analyze", "analysis_jobs", "local", "lua");
    sl_model_free(m);
    clear_provider_env();
    setenv("OPENAI_API_KEY", "k2", 1);
    m = load_interview();
    assert_stage(m, "upload", "upload_jobs", "local", "noop");
    assert_stage(m, "transcribe", "transcription_jobs", "local",
                 "local.transcribe");
    assert_stage(m, "analyze", "analysis_jobs", "llm", "llm.analyze");
    sl_model_free(m);
    clear_provider_env();
}

static void shipped_interview_switches_override_the_keys(void **s) {
    (void)s;
    clear_provider_env();
    setenv("ASSEMBLYAI_API_KEY", "k1", 1);
    setenv("OPENAI_API_KEY", "k2", 1);
    setenv("SLUICE_TRANSCRIBE_PROVIDER", "local", 1);
    setenv("SLUICE_ANALYZE_PROVIDER", "local", 1);
    sl_model *m = load_interview();
    /* Upload and transcription follow one switch, so they never disagree
     * about where the audio is. */
    assert_stage(m, "upload", "upload_jobs", "local", "noop");
    assert_stage(m, "transcribe", "transcription_jobs", "local",
                 "local.transcribe");
    assert_stage(m, "analyze", "analysis_jobs", "local", "lua");
    sl_model_free(m);
    clear_provider_env();
}

static void shipped_interview_keeps_the_reference_statuses(void **s) {
    (void)s;
    /* The same subject updates whichever providers run. */
    for (int cloud = 0; cloud < 2; cloud++) {
        clear_provider_env();
        if (cloud) {
            setenv("ASSEMBLYAI_API_KEY", "k1", 1);
            setenv("OPENAI_API_KEY", "k2", 1);
        }
        sl_model *m = load_interview();
        const sl_pipeline *p = sl_model_pipeline(m, "interview");
        assert_int_equal(p->nstages, 3);
        const sl_stage *up = &p->stages[0], *tr = &p->stages[1],
                       *an = &p->stages[2];
        assert_string_equal(up->status.on_start.status, "uploading");
        assert_int_equal(up->status.on_start.progress, 5);
        assert_string_equal(up->status.on_done.status, "uploaded");
        assert_int_equal(up->status.on_done.progress, 20);
        assert_string_equal(tr->status.on_start.detail, "Transcribing");
        assert_int_equal(tr->status.progress_from, 20);
        assert_int_equal(tr->status.progress_to, 49);
        assert_string_equal(tr->status.on_done.status, "transcribed");
        assert_int_equal(tr->status.on_done.progress, 50);
        assert_int_equal(an->status.on_start.progress, 70);
        assert_int_equal(an->status.progress_from, 70);
        assert_int_equal(an->status.progress_to, 99);
        assert_string_equal(an->status.on_done.status, "ready");
        assert_int_equal(an->status.on_done.progress, 100);
        /* Columns are the stage's, shared by its providers. */
        assert_int_equal(tr->ncolumns, 5);
        sl_model_free(m);
    }
    clear_provider_env();
}

static void validate_prints_the_chosen_providers(void **s) {
    (void)s;
    char *out = NULL;
    int rc = sl_test_sh(&out,
                        "env -u ASSEMBLYAI_API_KEY -u OPENAI_API_KEY "
                        "-u SLUICE_TRANSCRIBE_PROVIDER "
                        "-u SLUICE_ANALYZE_PROVIDER '%s' validate "
                        "'%s/pipelines/interview.yaml' 2>&1",
                        sl_test_bin(), SL_SOURCE_DIR);
    if (rc != 0) fail_msg("validate exited %d: %s", rc, out);
    assert_non_null(strstr(out, "transcribe (queue transcription_jobs, "
                                "provider local: local.transcribe)"));
    free(out);
    rc = sl_test_sh(&out,
                    "env -u SLUICE_TRANSCRIBE_PROVIDER "
                    "SLUICE_ANALYZE_PROVIDER=local ASSEMBLYAI_API_KEY=k "
                    "OPENAI_API_KEY=k '%s' validate "
                    "'%s/pipelines/interview.yaml' 2>&1",
                    sl_test_bin(), SL_SOURCE_DIR);
    if (rc != 0) fail_msg("validate exited %d: %s", rc, out);
    assert_non_null(strstr(out, "upload (queue upload_jobs, provider "
                                "assemblyai: assemblyai.upload)"));
    assert_non_null(
        strstr(out, "analyze (queue analysis_jobs, provider local: lua)"));
    free(out);
    /* A misspelt switch: exit 2 with file:line:col. */
    rc = sl_test_sh(&out,
                    "SLUICE_ANALYZE_PROVIDER=lmm '%s' validate "
                    "'%s/pipelines/interview.yaml' 2>&1",
                    sl_test_bin(), SL_SOURCE_DIR);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "interview.yaml:"));
    assert_non_null(strstr(out, "provider 'lmm': stage 'analyze' has no such "
                                "provider (choices: llm, local, or auto) "
                                "(did you mean 'llm'?)"));
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auto_picks_the_first_provider_whose_when_env_is_set),
        cmocka_unit_test(an_empty_variable_counts_as_unset),
        cmocka_unit_test(every_when_env_variable_must_be_set),
        cmocka_unit_test(a_provider_without_when_env_always_qualifies),
        cmocka_unit_test(an_explicit_provider_wins_over_when_env),
        cmocka_unit_test(
            the_switch_is_interpolated_and_auto_or_empty_mean_auto),
        cmocka_unit_test(
            the_chosen_provider_fills_handler_with_hooks_sql_writes),
        cmocka_unit_test(a_stage_without_providers_has_no_provider),
        cmocka_unit_test(a_provider_next_replaces_the_stage_next),
        cmocka_unit_test(an_unknown_provider_name_lists_the_choices),
        cmocka_unit_test(no_qualifying_provider_names_the_missing_variables),
        cmocka_unit_test(providers_together_with_handler_is_an_error),
        cmocka_unit_test(provider_without_providers_is_an_error),
        cmocka_unit_test(a_typo_in_the_unused_provider_is_still_reported),
        cmocka_unit_test(an_unused_provider_hook_must_compile),
        cmocka_unit_test(an_unused_provider_next_is_checked),
        cmocka_unit_test(graph_checks_cover_every_provider_next),
        cmocka_unit_test(unset_variables_only_matter_in_the_chosen_provider),
        cmocka_unit_test(the_handler_check_runs_for_the_chosen_provider_only),
        cmocka_unit_test(provider_names_and_when_env_are_checked),
        cmocka_unit_test(a_missing_handler_mentions_providers),
        cmocka_unit_test(shipped_interview_runs_locally_without_keys),
        cmocka_unit_test(shipped_interview_runs_on_the_cloud_with_both_keys),
        cmocka_unit_test(shipped_interview_mixes_providers_by_key),
        cmocka_unit_test(shipped_interview_switches_override_the_keys),
        cmocka_unit_test(shipped_interview_keeps_the_reference_statuses),
        cmocka_unit_test(validate_prints_the_chosen_providers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
