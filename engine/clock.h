/* clock.h - the engine's clocks. */
#ifndef SL_CLOCK_H
#define SL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on the monotonic clock (for intervals and deadlines). */
int64_t sl_now_ms(void);

/* Microseconds on the same clock (for timing short handler calls). */
int64_t sl_now_us(void);

/* Sleeps ms milliseconds, resuming after signals. */
void sl_sleep_ms(int64_t ms);

/* *ts = now + ms on the monotonic clock (for pthread_cond_timedwait on a
 * condition variable created with CLOCK_MONOTONIC). */
void sl_deadline(struct timespec *ts, int64_t ms);

#endif
