/* test_slow_schedules.c - the acceptance run for recurring jobs:
 * three `sluice run` processes serving a once-a-minute schedule for three
 * minutes produce exactly three jobs, one per tick, with no leader (every
 * process evaluates every tick; sluice.schedule_ticks lets one win). It
 * takes about three and a half minutes, so it carries the label slow and
 * stays out of the sanitizer pass. The missed-tick rules are
 * tests/test_schedules.c. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rtlib.h"

static const char *const yaml =
    "pipeline: minutely\n"
    "security: {rls: false}\n"
    "stages:\n"
    "  tick:\n"
    "    queue: minute_jobs\n"
    "    handler: noop\n"
    "    columns: {note: text}\n"
    "    schedule: {cron: '* * * * *', args: {note: every minute}}\n";

static pid_t spawn_run(const char *path, int i) {
    char log[512];
    snprintf(log, sizeof log, "%s/run%d.log", sl_test_tmpdir(), i);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        execl(sl_test_bin(), "sluice", "run", "-p", path, "--allow-superuser",
              (char *)NULL);
        _exit(127);
    }
    return rt_track(pid);
}

static void three_processes_three_minutes_three_jobs(void **state) {
    (void)state;
    PGconn *c;
    sl_model *m = rt_setup("slow_sched", yaml, &c);
    const char *path = sl_test_file("minutely.yaml", yaml);
    /* Start 20 s into a minute, stop 180 s later (20 s into the fourth
     * minute): ticks at +40 s, +100 s and +160 s, none within 20 s of
     * a start or a stop. */
    while ((long)time(NULL) % 60 != 20) sleep(1);
    pid_t pid[3];
    for (int i = 0; i < 3; i++) pid[i] = spawn_run(path, i);
    sleep(180);
    for (int i = 0; i < 3; i++) kill(pid[i], SIGTERM);
    for (int i = 0; i < 3; i++) assert_int_equal(rt_wait(pid[i], 30000), 0);

    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM minute_jobs"), 3);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM minute_jobs WHERE"
                                     " note = 'every minute'"), 3);
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM "
                                     "sluice.schedule_ticks WHERE enqueued"),
                     3);
    /* One per minute: consecutive ticks 60 s apart. */
    assert_int_equal(sl_test_long(c, "SELECT extract(epoch FROM max(tick) -"
                                     " min(tick))::bigint FROM "
                                     "sluice.schedule_ticks"), 120);
    /* The noop handler ran each of them (the last 20 s before the stop). */
    assert_int_equal(sl_test_long(c, "SELECT count(*) FROM minute_jobs WHERE"
                                     " status = 'done'"), 3);
    PQfinish(c);
    sl_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(three_processes_three_minutes_three_jobs,
                                  rt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
