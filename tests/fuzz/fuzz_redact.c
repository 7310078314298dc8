/* fuzz_redact.c - libFuzzer target for the secret redactor (text.h).
 *
 * 32 secrets, one of every length from 6 to 37 bytes, some ending in
 * punctuation, live in the environment. Each input picks one, an offset
 * and a buffer size, and inserts the secret into the rest of the input at
 * that offset. The copy into a buffer of exactly that size must stay
 * inside it, be valid UTF-8, be a prefix of the uncut result (plus "…"),
 * and the uncut result must hold no long secret anywhere and no short
 * one as a whole token. Build and run: scripts/fuzz. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

#define NSECRETS 32

static char secrets[NSECRETS][40];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    static const char body[] = "q7-vX9.pL2mK8#nR4tY6wB1cD3fG5hJ0kMz";
    for (int i = 0; i < NSECRETS; i++) {
        size_t len = 6 + (size_t)i;
        char name[32];
        secrets[i][0] = (char)('A' + i % 26);
        memcpy(secrets[i] + 1, body, len - 1);
        if (i % 3 == 2) secrets[i][len - 1] = '!';
        secrets[i][len] = '\0';
        snprintf(name, sizeof name, "FUZZ%d_API_KEY", i);
        setenv(name, secrets[i], 1);
    }
    sl_redact_reload();
    return 0;
}

static int is_word(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
           (c >= 'a' && c <= 'z') || c == '_';
}

/* Aborts when secret s occurs in out where the redactor must have caught
 * it: anywhere for a long one, as a whole token for a short one. */
static void check_absent(const char *out, size_t n, const char *s) {
    size_t sl = strlen(s);
    for (const char *p = out; (p = memmem(p, n - (size_t)(p - out), s, sl));
         p++) {
        if (sl >= 16) abort();
        size_t i = (size_t)(p - out);
        int left = i > 0 && is_word((unsigned char)out[i - 1]) &&
                   is_word((unsigned char)s[0]);
        int right = i + sl < n && is_word((unsigned char)out[i + sl]) &&
                    is_word((unsigned char)s[sl - 1]);
        if (!left && !right) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    const char *s = secrets[data[0] % NSECRETS];
    size_t sl = strlen(s), rest = size - 4;
    size_t off = ((size_t)data[1] << 8 | data[2]) % (rest + 1);
    size_t cap = (size_t)data[3] + 1;
    size_t len = rest + sl;
    char *in = malloc(len);
    if (!in) return 0;
    memcpy(in, data + 4, off);
    memcpy(in + off, s, sl);
    memcpy(in + off + sl, data + 4 + off, rest - off);

    char *full = sl_text_dup(in, len, 0);
    char *cut = malloc(cap); /* exactly cap: ASan sees any overrun */
    if (!full || !cut) abort();
    size_t fn = strlen(full);
    size_t cn = sl_text_copy(cut, cap, in, len);
    if (cn != strlen(cut) || cn >= cap) abort();
    if (!sl_text_valid(full, fn) || !sl_text_valid(cut, cn)) abort();
    if (cn == fn) {
        if (memcmp(cut, full, fn) != 0) abort();
    } else {
        size_t keep = cap > 4 ? cn - 3 : cn;
        if (cap > 4 && memcmp(cut + keep, "\xE2\x80\xA6", 3) != 0) abort();
        if (keep > fn || memcmp(cut, full, keep) != 0) abort();
    }
    for (int i = 0; i < NSECRETS; i++) check_absent(full, fn, secrets[i]);
    /* Safe text is a fixed point. */
    char *again = sl_text_dup(full, fn, 0);
    if (!again || strcmp(again, full) != 0) abort();
    free(again);
    free(cut);
    free(full);
    free(in);
    return 0;
}
