/* cron.c - cron expressions, TZif zones and tick computation (cron.h).
 *
 * Next-tick search works on local wall-clock minutes as if the zone were
 * UTC (a proleptic Gregorian calendar, no DST), then maps each matching
 * local minute to its instant with sl_tz_to_utc. Because that mapping
 * never goes backwards, the first match whose instant lies after `after`
 * is the next tick: a repeated hour fires once (its first occurrence) and
 * a skipped hour's ticks collapse onto the end of the gap.
 */
#include "cron.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

/* ---- parsing ------------------------------------------------------------- */

typedef struct field {
    const char *name;
    int lo, hi;
    const char *const *names; /* names[i] is value lo + i, or NULL */
} field;

static const char *const month_names[] = {"jan", "feb", "mar", "apr",
                                          "may", "jun", "jul", "aug",
                                          "sep", "oct", "nov", "dec"};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed",
                                        "thu", "fri", "sat", "sun"};

static const field fields[5] = {
    {"minute", 0, 59, NULL},
    {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL},
    {"month", 1, 12, month_names},
    {"day of week", 0, 7, dow_names},
};

/* Reads a number or a name at *p; advances *p. Returns 0 or -1. */
static int read_value(const field *f, const char **p, int *v) {
    const char *s = *p;
    if (isdigit((unsigned char)*s)) {
        long n = 0;
        while (isdigit((unsigned char)*s) && n < 1000) n = n * 10 + (*s++ - '0');
        if (isdigit((unsigned char)*s)) return -1;
        *v = (int)n;
        *p = s;
        return 0;
    }
    if (!f->names) return -1;
    for (int i = 0; i <= f->hi - f->lo; i++)
        if (strncasecmp(s, f->names[i], 3) == 0 &&
            !isalpha((unsigned char)s[3])) {
            *v = f->lo + i;
            *p = s + 3;
            return 0;
        }
    return -1;
}

/* Parses one field [s, end) into *bits. */
static int parse_field(const field *f, const char *s, const char *end,
                       uint64_t *bits, int *any, const char *base, char *err,
                       size_t errlen, size_t *errpos) {
    *bits = 0;
    *any = (end - s == 1 && *s == '*');
    const char *p = s;
    for (;;) {
        const char *item = p;
        int a, b, step = 1, ranged = 0;
        if (*p == '*') {
            a = f->lo;
            b = f->hi;
            p++;
            ranged = 1;
        } else {
            if (read_value(f, &p, &a) != 0) goto bad;
            b = a;
            if (*p == '-') {
                p++;
                if (read_value(f, &p, &b) != 0) goto bad;
                ranged = 1;
            }
        }
        if (*p == '/') {
            p++;
            if (!isdigit((unsigned char)*p) || read_value(&fields[0], &p, &step) ||
                step < 1) goto bad;
            if (!ranged) b = f->hi;
        }
        if (p != end && *p != ',') goto bad;
        if (a < f->lo || a > f->hi || b < f->lo || b > f->hi) {
            snprintf(err, errlen, "%s: '%.*s' is out of range %d-%d", f->name,
                     (int)(p - item), item, f->lo, f->hi);
            if (errpos) *errpos = (size_t)(item - base);
            return -SL_EINVAL;
        }
        if (a > b) {
            snprintf(err, errlen, "%s: range '%.*s' runs backwards", f->name,
                     (int)(p - item), item);
            if (errpos) *errpos = (size_t)(item - base);
            return -SL_EINVAL;
        }
        for (int v = a; v <= b; v += step) *bits |= (uint64_t)1 << v;
        if (p == end) return 0;
        p++; /* ',' */
        continue;
    bad:
        while (p < end && *p != ',') p++;
        snprintf(err, errlen,
                 "%s: '%.*s' is not a value, range (N-M), list or step "
                 "(*/N)%s",
                 f->name, (int)(p - item), item,
                 f->names ? "; names are allowed too" : "");
        if (errpos) *errpos = (size_t)(item - base);
        return -SL_EINVAL;
    }
}

static const struct {
    const char *name, *expr;
} macros[] = {{"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
              {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
              {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
              {"@hourly", "0 * * * *"}};

int sl_cron_parse(const char *expr, sl_cron *out, char *err, size_t errlen,
                  size_t *errpos) {
    assert(expr && out && err);
    if (errpos) *errpos = 0;
    memset(out, 0, sizeof *out);
    const char *s = expr;
    while (*s == ' ' || *s == '\t') s++;
    if (*s == '@') {
        for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
            if (strcasecmp(s, macros[i].name) == 0)
                return sl_cron_parse(macros[i].expr, out, err, errlen, NULL);
        snprintf(err, errlen, "unknown macro '%.40s' (@yearly, @monthly, "
                              "@weekly, @daily, @hourly)", s);
        if (errpos) *errpos = (size_t)(s - expr);
        return -SL_EINVAL;
    }
    uint64_t bits[5];
    int any[5];
    for (int i = 0; i < 5; i++) {
        while (*s == ' ' || *s == '\t') s++;
        const char *e = s;
        while (*e && *e != ' ' && *e != '\t') e++;
        if (e == s) {
            snprintf(err, errlen, "%d field%s where five are needed (minute "
                     "hour day-of-month month day-of-week)", i,
                     i == 1 ? "" : "s");
            if (errpos) *errpos = (size_t)(s - expr);
            return -SL_EINVAL;
        }
        int rc = parse_field(&fields[i], s, e, &bits[i], &any[i], expr, err,
                             errlen, errpos);
        if (rc != 0) return rc;
        s = e;
    }
    while (*s == ' ' || *s == '\t') s++;
    if (*s) {
        snprintf(err, errlen, "more than five fields (seconds and years are "
                              "not supported): '%.40s'", s);
        if (errpos) *errpos = (size_t)(s - expr);
        return -SL_EINVAL;
    }
    out->minute = bits[0];
    out->hour = (uint32_t)bits[1];
    out->dom = (uint32_t)bits[2];
    out->month = (uint32_t)bits[3];
    out->dow = (uint32_t)((bits[4] | (bits[4] >> 7)) & 0x7f);
    out->dom_any = any[2];
    out->dow_any = any[4];
    return 0;
}

/* ---- the calendar -------------------------------------------------------- */

/* Days since 1970-01-01 of y-m-d (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int day_matches(const sl_cron *c, int64_t day, int dom) {
    int dow = (int)(((day % 7) + 7 + 4) % 7); /* 1970-01-01: Thursday */
    int dm = (c->dom >> dom) & 1, wm = (c->dow >> dow) & 1;
    if (c->dom_any || c->dow_any) return dm && wm;
    return dm || wm;
}

/* The first local minute >= lm (minutes since the epoch, wall clock) that
 * c matches, or INT64_MIN when none within nine years (Feb 29 of 2096
 * is followed by that of 2104). */
static int64_t naive_next(const sl_cron *c, int64_t lm) {
    int64_t stop = lm + (int64_t)9 * 366 * 1440;
    while (lm < stop) {
        int64_t day = floor_div(lm, 1440);
        int64_t y;
        int m, d;
        civil_from_days(day, &y, &m, &d);
        int mod = (int)(lm - day * 1440), h = mod / 60, mi = mod % 60;
        if (!((c->month >> m) & 1)) {
            int64_t ny = y + (m == 12), nm = m == 12 ? 1 : m + 1;
            lm = days_from_civil(ny, (int)nm, 1) * 1440;
        } else if (!day_matches(c, day, d)) {
            lm = (day + 1) * 1440;
        } else if (!((c->hour >> h) & 1)) {
            lm = day * 1440 + (h + 1) * 60;
        } else if (!((c->minute >> mi) & 1)) {
            lm++;
        } else {
            return lm;
        }
    }
    return INT64_MIN;
}

/* ---- time zones ---------------------------------------------------------- */

struct sl_tz {
    size_t n;       /* transitions */
    int64_t *trans; /* ascending instants */
    int32_t *off;   /* offset in effect from trans[i] */
    int32_t off0;   /* offset before the first transition */
};

int sl_tz_name_ok(const char *name) {
    if (!name || !*name || *name == '/' || strlen(name) > 128) return 0;
    if (strstr(name, "..")) return 0;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("/_-+", *p)) return 0;
    return 1;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static int64_t be64(const unsigned char *p) {
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

int sl_tz_from_bytes(const unsigned char *data, size_t len, sl_tz **out,
                     char *err, size_t errlen) {
    *out = NULL;
    const unsigned char *p = data, *end = data + len;
    int tsize = 4;
    for (int pass = 0; pass < 2; pass++) {
        if (end - p < 44 || memcmp(p, "TZif", 4) != 0) break;
        uint32_t cnt[6];
        for (int i = 0; i < 6; i++) cnt[i] = be32(p + 20 + 4 * i);
        /* isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt */
        if (cnt[3] > 100000 || cnt[4] == 0 || cnt[4] > 256 || cnt[5] > 100000 ||
            cnt[2] > 100000 || cnt[0] > 256 || cnt[1] > 256)
            break;
        size_t body = (size_t)cnt[3] * tsize + cnt[3] + (size_t)cnt[4] * 6 +
                      cnt[5] + (size_t)cnt[2] * (tsize + 4) + cnt[1] + cnt[0];
        if ((size_t)(end - p - 44) < body) break;
        if (pass == 0 && p[4] >= '2') { /* use the 64-bit block */
            p += 44 + body;
            tsize = 8;
            continue;
        }
        const unsigned char *tt = p + 44, *ix = tt + (size_t)cnt[3] * tsize,
                            *ti = ix + cnt[3];
        sl_tz *z = calloc(1, sizeof *z);
        if (!z) return -SL_ENOMEM;
        z->n = cnt[3];
        z->trans = calloc(z->n + 1, sizeof *z->trans);
        z->off = calloc(z->n + 1, sizeof *z->off);
        if (!z->trans || !z->off) {
            sl_tz_free(z);
            return -SL_ENOMEM;
        }
        z->off0 = (int32_t)be32(ti);
        for (size_t i = 0; i < z->n; i++) {
            z->trans[i] = tsize == 8 ? be64(tt + 8 * i) : (int32_t)be32(tt + 4 * i);
            unsigned k = ix[i];
            if (k >= cnt[4] || (i && z->trans[i] <= z->trans[i - 1])) {
                sl_tz_free(z);
                goto bad;
            }
            z->off[i] = (int32_t)be32(ti + 6 * k);
            if (z->off[i] < -86400 || z->off[i] > 86400) {
                sl_tz_free(z);
                goto bad;
            }
        }
        if (z->off0 < -86400 || z->off0 > 86400) {
            sl_tz_free(z);
            goto bad;
        }
        *out = z;
        return 0;
    }
bad:
    snprintf(err, errlen, "not a valid TZif time zone file");
    return -SL_EIO;
}

int sl_tz_load(const char *name, sl_tz **out, char *err, size_t errlen) {
    assert(out && err);
    *out = NULL;
    if (!sl_tz_name_ok(name)) {
        snprintf(err, errlen, "'%.60s' is not a time zone name (an IANA name "
                              "such as Europe/Berlin or UTC)", name ? name : "");
        return -SL_EINVAL;
    }
    if (strcmp(name, "UTC") == 0) {
        *out = calloc(1, sizeof **out);
        return *out ? 0 : -SL_ENOMEM;
    }
    const char *dir = getenv("TZDIR");
    if (!dir || !*dir) dir = "/usr/share/zoneinfo";
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "unknown time zone '%s' (no %s)", name, path);
        return errno == ENOENT || errno == ENOTDIR ? -SL_ENOTFOUND : -SL_EIO;
    }
    unsigned char *buf = malloc(1 << 20);
    size_t len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    if (!buf) return -SL_ENOMEM;
    int rc = sl_tz_from_bytes(buf, len, out, err, errlen);
    free(buf);
    if (rc == -SL_EIO)
        snprintf(err, errlen, "time zone '%s': %s is not a TZif file", name,
                 path);
    return rc;
}

void sl_tz_free(sl_tz *tz) {
    if (!tz) return;
    free(tz->trans);
    free(tz->off);
    free(tz);
}

/* The index of the last transition at or before t, or -1. */
static long last_trans(const sl_tz *tz, int64_t t) {
    long lo = 0, hi = (long)tz->n - 1, best = -1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        if (tz->trans[mid] <= t) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return best;
}

int32_t sl_tz_offset(const sl_tz *tz, int64_t t) {
    if (!tz) return 0;
    long i = last_trans(tz, t);
    return i < 0 ? tz->off0 : tz->off[i];
}

int64_t sl_tz_to_utc(const sl_tz *tz, int64_t local) {
    if (!tz || tz->n == 0) return local - (tz ? tz->off0 : 0);
    /* Periods: -1 is (-inf, trans[0]); i is [trans[i], trans[i+1]). Their
     * local ranges ascend, apart from overlaps (clocks set back) and gaps
     * (clocks set forward). Start two days before: no offset exceeds one. */
    long i = last_trans(tz, local - 2 * 86400);
    for (; i < (long)tz->n; i++) {
        int32_t o = i < 0 ? tz->off0 : tz->off[i];
        int64_t a = i < 0 ? INT64_MIN : tz->trans[i];
        int has_b = i + 1 < (long)tz->n;
        int64_t b = has_b ? tz->trans[i + 1] : 0;
        if (i >= 0 && a + o > local) return a; /* in the gap before period i */
        if (!has_b || local < b + o) return local - o;
    }
    return local - tz->off[tz->n - 1];
}

/* ---- ticks --------------------------------------------------------------- */

int64_t sl_cron_next(const sl_cron *c, const sl_tz *tz, int64_t after) {
    assert(c);
    /* Start at after's own local minute: sl_tz_to_utc never goes
     * backwards and maps that minute to at most `after` (its first
     * occurrence), so no earlier local minute can be the answer. */
    int64_t lm = floor_div(after + sl_tz_offset(tz, after), 60);
    int64_t stop = lm + (int64_t)9 * 366 * 1440;
    while (lm < stop) {
        lm = naive_next(c, lm);
        if (lm == INT64_MIN) return -1;
        int64_t u = sl_tz_to_utc(tz, lm * 60);
        if (u > after) return u;
        lm++;
    }
    return -1;
}

static void reverse(int64_t *v, int a, int b) {
    for (; a < b; a++, b--) {
        int64_t t = v[a];
        v[a] = v[b];
        v[b] = t;
    }
}

/* The `max` most recent ticks in (start, now], oldest first, in out;
 * returns how many. */
static int ring(const sl_cron *c, const sl_tz *tz, int64_t start, int64_t now,
                int max, int64_t *out) {
    int n = 0, head = 0;
    int64_t t = start;
    while ((t = sl_cron_next(c, tz, t)) >= 0 && t <= now) {
        out[head] = t;
        head = (head + 1) % max;
        if (n < max) n++;
    }
    if (n == max && head != 0) { /* rotate: oldest first */
        reverse(out, 0, head - 1);
        reverse(out, head, max - 1);
        reverse(out, 0, max - 1);
    }
    return n;
}

int sl_cron_due(const sl_cron *c, const sl_tz *tz, int64_t last, int64_t now,
                sl_missed missed, int max, int64_t *out, int64_t *mark) {
    assert(c && out && mark && max >= 1);
    *mark = -1;
    if (last < now - 366 * 86400) last = now - 366 * 86400;
    if (missed != SL_MISSED_ALL) max = 1;
    /* Only the `max` most recent ticks matter: look back an hour, then
     * eight times further each round, until there are enough or the
     * window reaches `last`; the cost is that of the last window, not of
     * a year of every-minute ticks. */
    int n = 0;
    for (int64_t window = 3600;; window *= 8) {
        int64_t start = now - window;
        int final = start <= last;
        if (final) start = last;
        n = ring(c, tz, start, now, max, out);
        if (n >= max || final) break;
    }
    if (n == 0) return 0;
    if (missed == SL_MISSED_SKIP && now - out[0] >= SL_CRON_GRACE_S) {
        *mark = out[0];
        return 0;
    }
    return n;
}
