/* fuzz_cron.c - libFuzzer target for cron expressions and TZif zones
 * (cron.h).
 *
 * Even first byte: the rest is a cron expression; when it parses, the
 * next ticks after a few instants must ascend and lie after them. Odd:
 * the rest is a TZif image; when it loads, offsets and local-to-UTC
 * mappings are computed across its range and must not crash. Run:
 * scripts/fuzz cron. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char err[256];
    if ((data[0] & 1) == 0) {
        char *e = malloc(size);
        if (!e) return 0;
        memcpy(e, data + 1, size - 1);
        e[size - 1] = '\0';
        sl_cron c;
        size_t pos;
        if (sl_cron_parse(e, &c, err, sizeof err, &pos) == 0) {
            int64_t t = 1700000000 + (int64_t)data[0] * 7919;
            for (int i = 0; i < 3; i++) {
                int64_t n = sl_cron_next(&c, NULL, t);
                if (n == -1) break;
                if (n <= t) abort();
                t = n;
            }
        } else if (pos > size - 1) {
            abort();
        }
        free(e);
        return 0;
    }
    sl_tz *z = NULL;
    if (sl_tz_from_bytes(data + 1, size - 1, &z, err, sizeof err) == 0) {
        for (int64_t t = -2000000000; t < 4000000000; t += 250000000) {
            (void)sl_tz_offset(z, t);
            (void)sl_tz_to_utc(z, t);
        }
        sl_tz_free(z);
    }
    return 0;
}
