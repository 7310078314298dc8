/* test_dsl_corpus.c - every malformed or malicious pipeline file in
 * tests/dsl/ is refused with the error its first line announces:
 *
 *     # expect: LINE:COL MESSAGE-SUBSTRING
 *
 * The loader must report a diagnostic for that file at exactly LINE:COL
 * whose message contains the substring, and must not crash (the corpus
 * also seeds the fuzzer: scripts/fuzz). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

#include "dsl.h"
#include "error.h"

#define CORPUS SL_SOURCE_DIR "/tests/dsl"

static void run_case(void **state) {
    const char *path = *state;
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char first[1024] = "";
    if (!fgets(first, sizeof first, f)) first[0] = '\0';
    fclose(f);
    first[strcspn(first, "\n")] = '\0';
    int line = 0, col = 0, off = 0;
    if (sscanf(first, "# expect: %d:%d %n", &line, &col, &off) != 2 || !off)
        fail_msg("%s: first line must be '# expect: LINE:COL MESSAGE', got "
                 "'%s'",
                 path, first);
    const char *msg = first + off;

    const char *paths[] = {path};
    sl_model *m = NULL;
    sl_diags d = {0};
    int rc = sl_dsl_load(paths, 1, &m, &d);
    char *all = sl_diags_format(&d);
    if (rc != -SL_EINVAL)
        fail_msg("%s: expected -SL_EINVAL, got %d:\n%s", path, rc, all);
    assert_null(m);
    int found = 0;
    for (size_t i = 0; i < d.n; i++)
        if (d.items[i].line == line && d.items[i].col == col &&
            strstr(d.items[i].message, msg) && !strcmp(d.items[i].file, path))
            found = 1;
    if (!found)
        fail_msg("%s: no diagnostic at %d:%d containing \"%s\"; got:\n%s", path,
                 line, col, msg, all);
    free(all);
    sl_diags_free(&d);
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void) {
    DIR *dir = opendir(CORPUS);
    if (!dir) {
        fprintf(stderr, "cannot open %s\n", CORPUS);
        return 1;
    }
    char **paths = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".yaml")) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            paths = realloc(paths, cap * sizeof *paths);
        }
        size_t plen = strlen(CORPUS) + len + 2;
        paths[n] = malloc(plen);
        snprintf(paths[n], plen, "%s/%s", CORPUS, e->d_name);
        n++;
    }
    closedir(dir);
    qsort(paths, n, sizeof *paths, by_name);
    /* The corpus itself is part of the specification: at least 50 files. */
    if (n < 50) {
        fprintf(stderr, "tests/dsl holds %zu files, expected at least 50\n", n);
        return 1;
    }
    struct CMUnitTest *tests = calloc(n, sizeof *tests);
    for (size_t i = 0; i < n; i++) {
        tests[i].name = strrchr(paths[i], '/') + 1;
        tests[i].test_func = run_case;
        tests[i].initial_state = paths[i];
    }
    int failed = _cmocka_run_group_tests("dsl_corpus", tests, n, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    free(tests);
    return failed;
}
