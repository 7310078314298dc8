/* cron.h - five-field cron expressions, IANA time zones, next ticks.
 *
 * The one home of "when does a schedule fire" (docs/dsl.md, schedule):
 * the DSL loader validates with sl_cron_parse and sl_tz_load, the
 * scheduler (schedule.c) and `sluice schedules` compute ticks with
 * sl_cron_next and sl_cron_due. Pure computation: no database, no clock,
 * no global state (the process's TZ is never touched), so every rule is
 * tested directly (tests/test_cron.c) and fuzzed (tests/fuzz/fuzz_cron.c).
 *
 * Times are seconds since the Unix epoch (UTC instants). A tick is the
 * UTC instant of a local wall-clock minute the expression matches.
 */
#ifndef SL_CRON_H
#define SL_CRON_H

#include <stddef.h>
#include <stdint.h>

/* A parsed expression: one bit per allowed value of each field. */
typedef struct sl_cron {
    uint64_t minute; /* bits 0..59 */
    uint32_t hour;   /* bits 0..23 */
    uint32_t dom;    /* bits 1..31 */
    uint32_t month;  /* bits 1..12 */
    uint32_t dow;    /* bits 0..6, Sunday = 0 (7 is accepted as Sunday) */
    int dom_any;     /* the day-of-month field was `*` */
    int dow_any;     /* the day-of-week field was `*` */
} sl_cron;

/* Parses a cron expression: five fields separated by blanks (minute 0-59,
 * hour 0-23, day of month 1-31, month 1-12 or jan-dec, day of week 0-7 or
 * sun-sat), each a comma list of `*`, `N`, `N-M`, any of them followed by
 * `/STEP` (`N/STEP` runs from N to the field's maximum); or one of the
 * macros @yearly, @annually, @monthly, @weekly, @daily, @midnight,
 * @hourly. Names are case-insensitive. When both day fields are
 * restricted, a day matches either (the Vixie cron rule).
 * Returns 0, or -SL_EINVAL with the reason in err and the byte offset of
 * the offending text in *errpos (OUT, may be NULL). */
int sl_cron_parse(const char *expr, sl_cron *out, char *err, size_t errlen,
                  size_t *errpos);

/* A time zone read from a TZif file. Opaque; sl_tz_free frees it. */
typedef struct sl_tz sl_tz;

/* Non-zero when name is shaped like an IANA zone name ("UTC",
 * "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5"):
 * letters, digits, '/', '_', '-', '+', no "..", no leading '/'. */
int sl_tz_name_ok(const char *name);

/* Loads zone `name` from $TZDIR, else /usr/share/zoneinfo ("UTC" needs no
 * file). *out (OUT) is owned by the caller. Returns 0; -SL_EINVAL for a
 * malformed name, -SL_ENOTFOUND for a zone that does not exist, -SL_EIO
 * for a file that is not TZif; the reason in err. */
int sl_tz_load(const char *name, sl_tz **out, char *err, size_t errlen);

/* Builds a zone from a TZif image in memory (what sl_tz_load reads; the
 * fuzz target's entry). Returns as sl_tz_load. */
int sl_tz_from_bytes(const unsigned char *data, size_t len, sl_tz **out,
                     char *err, size_t errlen);

void sl_tz_free(sl_tz *tz);

/* The zone's UTC offset in seconds at instant t (tz NULL: UTC). Past the
 * file's last transition (2037 in Debian's files) the last offset holds. */
int32_t sl_tz_offset(const sl_tz *tz, int64_t t);

/* The instant of local wall-clock time `local` (seconds, as if the zone
 * were UTC). A local time that occurs twice (clocks set back) is its
 * first occurrence; one that never occurs (clocks set forward) is the
 * instant the gap ends. */
int64_t sl_tz_to_utc(const sl_tz *tz, int64_t local);

/* The first tick of c in zone tz strictly after instant `after`, or -1
 * when none comes within nine years (`0 0 30 2 *`). */
int64_t sl_cron_next(const sl_cron *c, const sl_tz *tz, int64_t after);

/* What happens to ticks that passed while no process ran (docs/dsl.md). */
typedef enum {
    SL_MISSED_LATEST, /* enqueue only the most recent missed tick */
    SL_MISSED_ALL,    /* enqueue every missed tick, up to a cap */
    SL_MISSED_SKIP    /* enqueue none; wait for the next tick */
} sl_missed;

/* A tick is on time, not missed, while less than this has passed. */
#define SL_CRON_GRACE_S 60

/* The ticks to enqueue at instant `now` when the last recorded tick is
 * `last` (ticks in (last, now], looked for at most 366 days back): for
 * LATEST the most recent; for ALL the `max` most recent, oldest first;
 * for SKIP the most recent if it is on time (SL_CRON_GRACE_S), else none.
 * Writes up to max (>= 1) ticks to out and returns how many; *mark (OUT)
 * is the most recent tick passed over without a job (to record, so the
 * next call starts after it), or -1. */
int sl_cron_due(const sl_cron *c, const sl_tz *tz, int64_t last, int64_t now,
                sl_missed missed, int max, int64_t *out, int64_t *mark);

#endif
