/* test_cron.c - cron expressions, time zones and next ticks (cron.h):
 * lists, ranges, steps, names, macros, bad input with its position, the
 * day-of-month/day-of-week rule, DST gaps and repeats, and the missed-tick
 * rules. */
#include <stdlib.h>
#include <string.h>

#include "cron.h"
#include "error.h"
#include "testlib.h"

/* Seconds since the epoch of a UTC calendar time. */
static int64_t utc(int y, int mo, int d, int h, int mi) {
    /* days_from_civil, as in cron.c, kept independent here. */
    int yy = y - (mo <= 2);
    int era = yy / 400;
    int yoe = yy - era * 400;
    int doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + doe - 719468;
    return days * 86400 + h * 3600 + mi * 60;
}

static sl_cron parse_ok(const char *e) {
    sl_cron c;
    char err[256];
    int rc = sl_cron_parse(e, &c, err, sizeof err, NULL);
    if (rc != 0) fail_msg("'%s': %s", e, err);
    return c;
}

static sl_tz *zone(const char *name) {
    sl_tz *z = NULL;
    char err[256];
    if (sl_tz_load(name, &z, err, sizeof err) != 0) fail_msg("%s", err);
    return z;
}

static void parse_lists_ranges_steps_and_names(void **state) {
    (void)state;
    sl_cron c = parse_ok("0,15-17,*/20 9-17/4 1 jan-mar,DEC mon-fri");
    assert_true(c.minute == ((1ull << 0) | (1ull << 15) | (1ull << 16) |
                             (1ull << 17) | (1ull << 20) | (1ull << 40)));
    assert_int_equal(c.hour, (1u << 9) | (1u << 13) | (1u << 17));
    assert_int_equal(c.dom, 1u << 1);
    assert_int_equal(c.month, (1u << 1) | (1u << 2) | (1u << 3) | (1u << 12));
    assert_int_equal(c.dow, 0x3e);
    c = parse_ok("5/15 * * * 7");
    assert_true(c.minute == ((1ull << 5) | (1ull << 20) | (1ull << 35) |
                             (1ull << 50)));
    assert_int_equal(c.dow, 1u); /* 7 is Sunday */
    assert_true(c.dom_any && !c.dow_any);
    c = parse_ok("@daily");
    assert_true(c.minute == 1 && c.hour == 1 && c.dom_any && c.dow_any);
}

static void parse_refuses_bad_input_with_its_position(void **state) {
    (void)state;
    static const struct {
        const char *e, *msg;
        size_t pos;
    } bad[] = {
        {"* * * *", "4 fields where five", 7},
        {"* * * * * *", "more than five fields", 10},
        {"60 * * * *", "minute: '60' is out of range 0-59", 0},
        {"* 24 * * *", "hour: '24' is out of range", 2},
        {"* * 0 * *", "day of month: '0' is out of range 1-31", 4},
        {"* * * 13 *", "month: '13'", 6},
        {"* * * * 8", "day of week: '8'", 8},
        {"5-1 * * * *", "runs backwards", 0},
        {"*/0 * * * *", "minute: '*/0' is not a value", 0},
        {"* * * foo *", "month: 'foo' is not a value", 6},
        {"1,,2 * * * *", "minute: '' is not a value", 2},
        {"mon * * * *", "minute: 'mon'", 0},
        {"@sometimes", "unknown macro", 0},
        {"", "0 fields", 0},
        {"1-2-3 * * * *", "minute: '1-2-3'", 0},
        {"99999999999 * * * *", "minute", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_cron c;
        char err[256] = "";
        size_t pos = 999;
        assert_int_equal(sl_cron_parse(bad[i].e, &c, err, sizeof err, &pos),
                         -SL_EINVAL);
        if (!strstr(err, bad[i].msg))
            fail_msg("'%s': got '%s', want '%s'", bad[i].e, err, bad[i].msg);
        if (pos != bad[i].pos)
            fail_msg("'%s': position %zu, want %zu", bad[i].e, pos, bad[i].pos);
    }
}

static void next_tick_in_utc(void **state) {
    (void)state;
    sl_cron c = parse_ok("*/15 * * * *");
    assert_true(sl_cron_next(&c, NULL, utc(2026, 1, 1, 10, 7)) ==
                utc(2026, 1, 1, 10, 15));
    assert_true(sl_cron_next(&c, NULL, utc(2026, 1, 1, 10, 15)) ==
                utc(2026, 1, 1, 10, 30));
    assert_true(sl_cron_next(&c, NULL, utc(2026, 12, 31, 23, 50)) ==
                utc(2027, 1, 1, 0, 0));
    c = parse_ok("0 12 29 feb *"); /* leap days only */
    assert_true(sl_cron_next(&c, NULL, utc(2026, 3, 1, 0, 0)) ==
                utc(2028, 2, 29, 12, 0));
    c = parse_ok("0 0 30 2 *"); /* never */
    assert_true(sl_cron_next(&c, NULL, utc(2026, 3, 1, 0, 0)) == -1);
}

static void day_fields_match_either_when_both_are_restricted(void **state) {
    (void)state;
    /* The 13th, or any Friday. 2026-03-01 is a Sunday. */
    sl_cron c = parse_ok("0 0 13 * fri");
    assert_true(sl_cron_next(&c, NULL, utc(2026, 3, 1, 0, 0)) ==
                utc(2026, 3, 6, 0, 0));
    assert_true(sl_cron_next(&c, NULL, utc(2026, 3, 6, 0, 0)) ==
                utc(2026, 3, 13, 0, 0));
    /* Only one restricted: both must match (every Monday in March). */
    c = parse_ok("0 0 * 3 mon");
    assert_true(sl_cron_next(&c, NULL, utc(2026, 3, 1, 0, 0)) ==
                utc(2026, 3, 2, 0, 0));
}

static void timezone_unknown_or_malformed_is_refused(void **state) {
    (void)state;
    sl_tz *z = NULL;
    char err[256];
    assert_int_equal(sl_tz_load("Mars/Olympus", &z, err, sizeof err),
                     -SL_ENOTFOUND);
    assert_non_null(strstr(err, "unknown time zone"));
    assert_int_equal(sl_tz_load("../etc/passwd", &z, err, sizeof err),
                     -SL_EINVAL);
    assert_int_equal(sl_tz_load("/etc/passwd", &z, err, sizeof err),
                     -SL_EINVAL);
    assert_int_equal(sl_tz_load("Europe/Berlin;x", &z, err, sizeof err),
                     -SL_EINVAL);
    assert_null(z);
    unsigned char junk[64] = "TZif2";
    assert_int_equal(sl_tz_from_bytes(junk, sizeof junk, &z, err, sizeof err),
                     -SL_EIO);
}

static void local_ticks_follow_the_zone(void **state) {
    (void)state;
    sl_tz *ny = zone("America/New_York");
    sl_cron c = parse_ok("30 9 * * *");
    /* Winter: EST, UTC-5. */
    assert_true(sl_cron_next(&c, ny, utc(2026, 1, 10, 0, 0)) ==
                utc(2026, 1, 10, 14, 30));
    /* Summer: EDT, UTC-4. */
    assert_true(sl_cron_next(&c, ny, utc(2026, 7, 10, 0, 0)) ==
                utc(2026, 7, 10, 13, 30));
    sl_tz_free(ny);
}

static void dst_gap_ticks_run_once_when_the_gap_ends(void **state) {
    (void)state;
    /* Europe/Berlin 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC). */
    sl_tz *be = zone("Europe/Berlin");
    sl_cron c = parse_ok("30 2 * * *");
    int64_t t = sl_cron_next(&c, be, utc(2026, 3, 28, 12, 0));
    assert_true(t == utc(2026, 3, 29, 1, 0)); /* the end of the gap */
    assert_true(sl_cron_next(&c, be, t) == utc(2026, 3, 30, 0, 30));
    /* Every 15 minutes: the four ticks inside the gap are one. */
    c = parse_ok("*/15 * * * *");
    t = sl_cron_next(&c, be, utc(2026, 3, 29, 0, 50)); /* 01:50 CET */
    assert_true(t == utc(2026, 3, 29, 1, 0));          /* 03:00 CEST */
    assert_true(sl_cron_next(&c, be, t) == utc(2026, 3, 29, 1, 15));
    sl_tz_free(be);
}

static void dst_repeated_hour_fires_once(void **state) {
    (void)state;
    /* Europe/Berlin 2026-10-25: 03:00 CEST goes back to 02:00 CET; local
     * 02:30 happens at 00:30 UTC and again at 01:30 UTC. */
    sl_tz *be = zone("Europe/Berlin");
    sl_cron c = parse_ok("30 2 * * *");
    int64_t t = sl_cron_next(&c, be, utc(2026, 10, 24, 12, 0));
    assert_true(t == utc(2026, 10, 25, 0, 30));
    assert_true(sl_cron_next(&c, be, t) == utc(2026, 10, 26, 1, 30));
    /* Hourly ticks keep going through both 02:00s (they are distinct
     * instants an hour apart). */
    c = parse_ok("0 * * * *");
    t = sl_cron_next(&c, be, utc(2026, 10, 24, 23, 30));
    assert_true(t == utc(2026, 10, 25, 0, 0));
    t = sl_cron_next(&c, be, t);
    assert_true(t == utc(2026, 10, 25, 2, 0)); /* the second 02:00 is the
                                                  first one again */
    sl_tz_free(be);
}

static void missed_rules(void **state) {
    (void)state;
    sl_cron c = parse_ok("* * * * *");
    int64_t last = utc(2026, 5, 1, 10, 0), now = utc(2026, 5, 1, 10, 10) + 5;
    int64_t out[16], mark;
    /* latest: only 10:10. */
    assert_int_equal(sl_cron_due(&c, NULL, last, now, SL_MISSED_LATEST, 16,
                                 out, &mark), 1);
    assert_true(out[0] == utc(2026, 5, 1, 10, 10) && mark == -1);
    /* all, capped at 4: the four most recent, oldest first. */
    assert_int_equal(sl_cron_due(&c, NULL, last, now, SL_MISSED_ALL, 4, out,
                                 &mark), 4);
    for (int i = 0; i < 4; i++)
        assert_true(out[i] == utc(2026, 5, 1, 10, 7 + i));
    assert_int_equal(sl_cron_due(&c, NULL, last, now, SL_MISSED_ALL, 16, out,
                                 &mark), 10);
    assert_true(out[0] == utc(2026, 5, 1, 10, 1));
    /* skip: 10:10 is 5 s old, on time: enqueued. */
    assert_int_equal(sl_cron_due(&c, NULL, last, now, SL_MISSED_SKIP, 16, out,
                                 &mark), 1);
    /* skip, 10:10 two minutes old: nothing, marked. */
    sl_cron h = parse_ok("10 * * * *");
    assert_int_equal(sl_cron_due(&h, NULL, last, utc(2026, 5, 1, 10, 12),
                                 SL_MISSED_SKIP, 16, out, &mark), 0);
    assert_true(mark == utc(2026, 5, 1, 10, 10));
    /* A year's downtime of an every-minute schedule: only the most recent
     * ticks are looked at (a window that widens back from now). */
    int64_t far = now - 400 * 86400;
    assert_int_equal(sl_cron_due(&c, NULL, far, now, SL_MISSED_LATEST, 16,
                                 out, &mark), 1);
    assert_true(out[0] == utc(2026, 5, 1, 10, 10));
    assert_int_equal(sl_cron_due(&c, NULL, far, now, SL_MISSED_ALL, 16, out,
                                 &mark), 16);
    assert_true(out[0] == utc(2026, 5, 1, 9, 55) &&
                out[15] == utc(2026, 5, 1, 10, 10));
    /* A weekly schedule after a 3-day downtime: the window widens back to
     * `last` and finds the Sunday in between. */
    sl_cron w = parse_ok("0 0 * * sun");
    assert_int_equal(sl_cron_due(&w, NULL, utc(2026, 5, 1, 0, 0),
                                 utc(2026, 5, 1, 0, 0) + 3 * 86400,
                                 SL_MISSED_ALL, 16, out, &mark), 1);
    assert_true(out[0] == utc(2026, 5, 3, 0, 0)); /* a Sunday */
    /* Nothing due. */
    assert_int_equal(sl_cron_due(&h, NULL, utc(2026, 5, 1, 10, 10),
                                 utc(2026, 5, 1, 10, 50), SL_MISSED_LATEST, 16,
                                 out, &mark), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_lists_ranges_steps_and_names),
        cmocka_unit_test(parse_refuses_bad_input_with_its_position),
        cmocka_unit_test(next_tick_in_utc),
        cmocka_unit_test(day_fields_match_either_when_both_are_restricted),
        cmocka_unit_test(timezone_unknown_or_malformed_is_refused),
        cmocka_unit_test(local_ticks_follow_the_zone),
        cmocka_unit_test(dst_gap_ticks_run_once_when_the_gap_ends),
        cmocka_unit_test(dst_repeated_hour_fires_once),
        cmocka_unit_test(missed_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
