/* fuzz_text.c - libFuzzer target for the text sanitiser (text.h) on
 * random bytes.
 *
 * The bytes are sanitised whole and into buffers of every small size,
 * formatted, read as JSON (NUL escapes allowed) and written back through
 * sl_text_json_dumps. Everything produced must
 * be valid UTF-8 without NUL, stay inside its buffer, and JSON written
 * must read back. Build and run: scripts/fuzz. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "text.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    setenv("FUZZ_PASSWORD", "hunter22", 1);
    setenv("FUZZ_API_KEY", "sk-fuzz-0123456789abcdef", 1);
    sl_redact_reload();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = (const char *)data;
    char *whole = sl_text_dup(in, size, 0);
    if (!whole || !sl_text_valid(whole, strlen(whole))) abort();
    for (size_t cap = 1; cap <= 24 && cap <= size + 2; cap++) {
        char *b = malloc(cap);
        size_t n = sl_text_copy(b, cap, in, size);
        if (n >= cap || n != strlen(b) || !sl_text_valid(b, n)) abort();
        free(b);
    }
    char fmt[64];
    size_t fn = sl_text_format(fmt, sizeof fmt, "<%s>", whole);
    if (!sl_text_valid(fmt, fn)) abort();
    free(whole);

    json_t *j = json_loadb(in, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (j) {
        char *text = sl_text_json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text || !sl_text_valid(text, strlen(text))) abort();
        json_t *back = json_loads(text, JSON_DECODE_ANY, NULL);
        if (!back) abort();
        json_decref(back);
        free(text);
        json_decref(j);
    }
    return 0;
}
