/* test_hostile_defs.c - `sluice validate` as a process on every malformed
 * or malicious pipeline file: the corpus in tests/dsl/ (syntax, types,
 * ranges, references, identifiers with quotes/semicolons/unicode, alias
 * bombs, deep nesting, binary data, a Lua hook that does not compile) and
 * huge files generated here. Each must exit with 2 and a
 * FILE:LINE:COL: message line within a few seconds: never a crash, a hang
 * or an exit code that hides the problem.
 *
 * test_dsl_corpus.c checks the exact diagnostic of each corpus file in
 * process; this test checks what an operator sees: the binary, its exit
 * code, its output, its time. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "testlib.h"

#define CORPUS SL_SOURCE_DIR "/tests/dsl"
#define LIMIT_S 10

/* Runs `sluice validate path` under a time limit; returns the exit code
 * (124 on timeout, 128+N on signal N) and its output in *out. */
static int validate(const char *path, char **out, int64_t *ms) {
    int64_t t0 = sl_test_now_ms();
    int rc = sl_test_sh(out,
                        "timeout -s KILL %d '%s' validate '%s' 2>&1; rc=$?;"
                        " exit $rc",
                        LIMIT_S, sl_test_bin(), path);
    *ms = sl_test_now_ms() - t0;
    return rc;
}

/* The output holds a line "<path>:<line>:<col>: <message>". */
static int has_location(const char *out, const char *path) {
    size_t n = strlen(path);
    for (const char *p = out; (p = strstr(p, path)) != NULL; p += n) {
        int line = 0, col = 0, used = 0;
        if (sscanf(p + n, ":%d:%d: %n", &line, &col, &used) == 2 && used &&
            line > 0 && col > 0 && p[n + used] && p[n + used] != '\n')
            return 1;
    }
    return 0;
}

static void expect_refused(const char *path, int64_t *slowest) {
    char *out = NULL;
    int64_t ms;
    int rc = validate(path, &out, &ms);
    if (rc != SL_EXIT_INVALID)
        fail_msg("%s: exit %d (want %d) after %lld ms:\n%.2000s", path, rc,
                 SL_EXIT_INVALID, (long long)ms, out ? out : "");
    if (!has_location(out, path))
        fail_msg("%s: no FILE:LINE:COL: message in:\n%.2000s", path, out);
    if (ms > *slowest) *slowest = ms;
    free(out);
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void every_corpus_file_exits_2_with_a_location(void **state) {
    (void)state;
    DIR *dir = opendir(CORPUS);
    assert_non_null(dir);
    char *paths[512];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && n < 512) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".yaml")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", CORPUS, e->d_name);
        paths[n++] = strdup(p);
    }
    closedir(dir);
    qsort(paths, n, sizeof *paths, by_name);
    assert_true(n >= 50);
    int64_t slowest = 0;
    for (size_t i = 0; i < n; i++) {
        expect_refused(paths[i], &slowest);
        free(paths[i]);
    }
    print_message("%zu corpus files: all exit 2 with FILE:LINE:COL, slowest"
                  " %lld ms\n",
                  n, (long long)slowest);
}

/* Writes a generated file: head, then `repeat` copies of body, then tail. */
static const char *generate(const char *name, const char *head,
                            const char *body, long repeat, const char *tail) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", sl_test_tmpdir(), name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(head, f);
    for (long i = 0; i < repeat; i++)
        fputs(body, f);
    fputs(tail, f);
    fclose(f);
    return path;
}

/* Refused, and the message names `where` (a "LINE:COL: text" piece). */
static void expect_refused_at(const char *path, const char *where,
                              int64_t *slowest) {
    expect_refused(path, slowest);
    char *out = NULL;
    int64_t ms;
    validate(path, &out, &ms);
    if (!strstr(out, where))
        fail_msg("%s: expected '%s' in:\n%.2000s", path, where, out);
    free(out);
}

static void huge_files_are_refused_quickly(void **state) {
    (void)state;
    int64_t slowest = 0;
    char where[128];
    /* Past the size limit: 32 MiB of comments, a 16 MiB scalar. */
    expect_refused_at(generate("huge-comments.yaml", "pipeline: p\n",
                               "# padding padding padding padding padding\n",
                               800000, "stages: 7\n"),
                      "1:1: the file is too large", &slowest);
    char *name = malloc(16 * 1024 * 1024 + 1);
    assert_non_null(name);
    memset(name, 'a', 16 * 1024 * 1024);
    name[16 * 1024 * 1024] = '\0';
    expect_refused_at(
        generate("huge-scalar.yaml", "pipeline: ", name, 1, "\nstages: {}\n"),
        "1:1: the file is too large", &slowest);
    free(name);

    /* Just under it, so the parser and validator do the work: 1,000
     * stages whose last is broken; 45,000 keys of one `with:` mapping
     * with a duplicate at the end; 1,000,000 nested sequences; 30,000
     * stages. */
    const char *path = generate("many-stages.yaml", "", "", 0, "");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("pipeline: p\nstages:\n", f);
    for (int i = 0; i < 999; i++)
        fprintf(f, "  s%d: {queue: q%d, handler: noop, next: s%d}\n", i, i,
                i + 1);
    fputs("  s999: {queue: q999, handler: nope}\n", f);
    fclose(f);
    expect_refused_at(path, "1002:32: unknown handler 'nope'", &slowest);

    path = generate("many-keys.yaml", "", "", 0, "");
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("pipeline: p\nstages:\n  a:\n    queue: a_jobs\n"
          "    handler: noop\n    with:\n",
          f);
    for (long i = 0; i < 45000; i++)
        fprintf(f, "      k%ld: %ld\n", i, i);
    fputs("      k7: 7\n", f);
    fclose(f);
    snprintf(where, sizeof where, "%d:7: duplicate key 'k7'", 45007);
    expect_refused_at(path, where, &slowest);

    expect_refused_at(
        generate("deep-nesting.yaml", "pipeline: p\nx: ", "[", 1000000, "\n"),
        "nesting deeper than", &slowest);
    expect_refused_at(generate("too-many-stages.yaml", "pipeline: p\nstages:\n",
                               "  s: {queue: q, handler: noop}\n", 30000, ""),
                      "3:3: ", &slowest);
    print_message("huge files (32 MiB of comments, a 16 MiB scalar, 1,000"
                  " chained stages, 45,000 keys, 1,000,000 nested sequences,"
                  " 30,000 stages): all exit 2 at the right place, slowest"
                  " %lld ms\n",
                  (long long)slowest);
    /* A pipeline file is read by people: seconds would be a bug. */
    assert_true(slowest < 5000);
}

static void file_that_is_a_directory_or_a_device_is_not_a_crash(void **state) {
    (void)state;
    char *out = NULL;
    int64_t ms;
    /* Not invalid definitions but unreadable input: exit 1, no crash. */
    int rc = validate(sl_test_tmpdir(), &out, &ms);
    assert_true(rc == SL_EXIT_FAILURE || rc == SL_EXIT_INVALID);
    free(out);
    rc = validate("/dev/zero", &out, &ms);
    print_message("/dev/zero: exit %d after %lld ms: %.200s\n", rc,
                  (long long)ms, out);
    assert_true(rc == SL_EXIT_FAILURE || rc == SL_EXIT_INVALID);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_corpus_file_exits_2_with_a_location),
        cmocka_unit_test(huge_files_are_refused_quickly),
        cmocka_unit_test(file_that_is_a_directory_or_a_device_is_not_a_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
