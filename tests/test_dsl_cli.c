/* test_dsl_cli.c - `sluice validate` as a process (exit codes and
 * file:line:col output) and sl_cli_load's option handling. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

#include "cli.h"
#include "error.h"
#include "handler.h"

#define VALID                                                                  \
    "pipeline: p\nsecurity: {rls: false}\nstages:\n"                           \
    "  a: {queue: a_jobs, handler: noop}\n"
#define INVALID                                                                \
    "pipeline: p\nsecurity: {rls: false}\nstages:\n"                           \
    "  a:\n    queue: a_jobs\n    handler: nop\n    timeout: 5\n"

static int run(char **out, const char *args) {
    return sl_test_sh(out, "'%s' validate %s 2>&1", sl_test_bin(), args);
}

static void valid_file_exits_0_and_summarises(void **state) {
    (void)state;
    const char *path = sl_test_file("valid.yaml", VALID);
    char args[700], *out = NULL;
    snprintf(args, sizeof args, "'%s'", path);
    assert_int_equal(run(&out, args), SL_EXIT_OK);
    assert_non_null(strstr(out, "ok: 1 pipeline, 1 stage"));
    assert_non_null(strstr(out, "a (queue a_jobs)"));
    free(out);
}

static void quiet_valid_file_prints_nothing(void **state) {
    (void)state;
    const char *path = sl_test_file("valid_q.yaml", VALID);
    char args[700], *out = NULL;
    snprintf(args, sizeof args, "-q '%s'", path);
    assert_int_equal(run(&out, args), SL_EXIT_OK);
    assert_string_equal(out, "");
    free(out);
}

static void invalid_file_exits_2_with_every_error_located(void **state) {
    (void)state;
    const char *path = sl_test_file("invalid.yaml", INVALID);
    char args[700], *out = NULL, expect[800];
    snprintf(args, sizeof args, "'%s'", path);
    assert_int_equal(run(&out, args), SL_EXIT_INVALID);
    snprintf(expect, sizeof expect,
             "%s:6:14: unknown handler 'nop' (did you mean 'noop'?)\n", path);
    if (!strstr(out, expect)) fail_msg("missing '%s' in:\n%s", expect, out);
    snprintf(expect, sizeof expect,
             "%s:7:14: timeout: expected a duration such as", path);
    if (!strstr(out, expect)) fail_msg("missing '%s' in:\n%s", expect, out);
    assert_null(strstr(out, "ok:"));
    free(out);
}

static void missing_file_exits_1(void **state) {
    (void)state;
    char *out = NULL;
    assert_int_equal(run(&out, "/nonexistent/sluice.yaml"), SL_EXIT_FAILURE);
    assert_non_null(strstr(out, "/nonexistent/sluice.yaml: cannot read"));
    free(out);
}

static void unknown_option_exits_64(void **state) {
    (void)state;
    char *out = NULL;
    assert_int_equal(run(&out, "--frobnicate"), SL_EXIT_USAGE);
    assert_non_null(strstr(out, "unknown option '--frobnicate'"));
    free(out);
    assert_int_equal(run(&out, "-p"), SL_EXIT_USAGE);
    free(out);
}

static void help_exits_0_and_documents_exit_codes(void **state) {
    (void)state;
    char *out = NULL;
    assert_int_equal(run(&out, "--help"), SL_EXIT_OK);
    assert_non_null(strstr(out, "usage: sluice validate"));
    assert_non_null(strstr(out, "2 invalid definitions"));
    free(out);
}

static void pipelines_option_and_positional_paths_combine(void **state) {
    (void)state;
    const char *a = sl_test_file("combo_a.yaml", VALID);
    char a_copy[600];
    snprintf(a_copy, sizeof a_copy, "%s", a);
    const char *b = sl_test_file(
        "combo_b.yaml", "pipeline: q\nsecurity: {rls: false}\nstages:\n"
                        "  b: {queue: b_jobs, handler: noop}\n");
    char args[1400], *out = NULL;
    snprintf(args, sizeof args, "-p '%s' '%s'", a_copy, b);
    assert_int_equal(run(&out, args), SL_EXIT_OK);
    assert_non_null(strstr(out, "ok: 2 pipelines, 2 stages"));
    free(out);
    /* --pipelines=PATH and a duplicate queue across the two files. */
    const char *c = sl_test_file(
        "combo_c.yaml", "pipeline: r\nsecurity: {rls: false}\nstages:\n"
                        "  c: {queue: a_jobs, handler: noop}\n");
    snprintf(args, sizeof args, "--pipelines='%s' '%s'", a_copy, c);
    assert_int_equal(run(&out, args), SL_EXIT_INVALID);
    char expect[1400];
    snprintf(expect, sizeof expect,
             "%s:4:14: queue table 'a_jobs' is already used by stage 'a' of "
             "pipeline 'p' (%s:4:14)",
             c, a_copy);
    if (!strstr(out, expect)) fail_msg("missing '%s' in:\n%s", expect, out);
    free(out);
}

static void
environment_and_default_directory_are_used_without_paths(void **state) {
    (void)state;
    sl_test_sh(NULL, "mkdir -p '%s/envdir' '%s/cwd/pipelines'",
               sl_test_tmpdir(), sl_test_tmpdir());
    sl_test_file("envdir/e.yaml", VALID);
    sl_test_file("cwd/pipelines/d.yaml", INVALID);
    char *out = NULL;
    assert_int_equal(sl_test_sh(&out,
                                "cd '%s/cwd' && SLUICE_PIPELINES='%s/nothere:"
                                "%s/envdir' '%s' validate 2>&1",
                                sl_test_tmpdir(), sl_test_tmpdir(),
                                sl_test_tmpdir(), sl_test_bin()),
                     SL_EXIT_FAILURE);
    assert_non_null(strstr(out, "nothere: cannot read"));
    free(out);
    assert_int_equal(sl_test_sh(&out,
                                "cd '%s/cwd' && SLUICE_PIPELINES='%s/envdir' "
                                "'%s' validate 2>&1",
                                sl_test_tmpdir(), sl_test_tmpdir(),
                                sl_test_bin()),
                     SL_EXIT_OK);
    free(out);
    /* No paths, no variable: ./pipelines. */
    assert_int_equal(sl_test_sh(&out,
                                "cd '%s/cwd' && env -u SLUICE_PIPELINES '%s' "
                                "validate 2>&1",
                                sl_test_tmpdir(), sl_test_bin()),
                     SL_EXIT_INVALID);
    assert_non_null(strstr(out, "pipelines/d.yaml:6:14: unknown handler"));
    free(out);
}

static void shipped_pipelines_validate(void **state) {
    (void)state;
    static const char *const handlers[] = {"assemblyai.upload",
                                           "assemblyai.transcribe",
                                           "llm.analyze", "llm.generate", NULL};
    for (size_t i = 0; handlers[i]; i++)
        if (!sl_handler_find(handlers[i])) {
            print_message("handler %s not registered yet\n", handlers[i]);
            skip();
        }
    char *out = NULL;
    int rc = sl_test_sh(&out, "'%s' validate '%s/pipelines' 2>&1",
                        sl_test_bin(), SL_SOURCE_DIR);
    if (rc != 0) fail_msg("sluice validate pipelines/ exited %d:\n%s", rc, out);
    free(out);
}

/* sl_cli_load takes -p/--pipelines out of argv and leaves the rest. */
static void cli_load_removes_its_options_from_argv(void **state) {
    (void)state;
    const char *path = sl_test_file("argv.yaml", VALID);
    char *argv[] = {"sql",   "--base", "-p", (char *)path,
                    "extra", "--keep", NULL};
    int argc = 6;
    sl_model *m = NULL;
    assert_int_equal(sl_cli_load(&argc, argv, &m), SL_EXIT_OK);
    assert_non_null(m);
    assert_int_equal(argc, 4);
    assert_string_equal(argv[0], "sql");
    assert_string_equal(argv[1], "--base");
    assert_string_equal(argv[2], "extra");
    assert_string_equal(argv[3], "--keep");
    assert_null(argv[4]);
    sl_model_free(m);
}

static void cli_load_reports_invalid_definitions_as_exit_2(void **state) {
    (void)state;
    const char *path = sl_test_file("argv_bad.yaml", INVALID);
    char opt[700];
    snprintf(opt, sizeof opt, "-p%s", path);
    char *argv[] = {"run", opt, NULL};
    int argc = 2;
    sl_model *m = NULL;
    assert_int_equal(sl_cli_load(&argc, argv, &m), SL_EXIT_INVALID);
    assert_null(m);
    assert_int_equal(argc, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_file_exits_0_and_summarises),
        cmocka_unit_test(quiet_valid_file_prints_nothing),
        cmocka_unit_test(invalid_file_exits_2_with_every_error_located),
        cmocka_unit_test(missing_file_exits_1),
        cmocka_unit_test(unknown_option_exits_64),
        cmocka_unit_test(help_exits_0_and_documents_exit_codes),
        cmocka_unit_test(pipelines_option_and_positional_paths_combine),
        cmocka_unit_test(
            environment_and_default_directory_are_used_without_paths),
        cmocka_unit_test(shipped_pipelines_validate),
        cmocka_unit_test(cli_load_removes_its_options_from_argv),
        cmocka_unit_test(cli_load_reports_invalid_definitions_as_exit_2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
