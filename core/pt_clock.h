/*
 * pt_clock.h - clocks of the pipetls core.
 *
 * pt_ticks() is the cheap one (the time stamp counter where there is one,
 * about 15 ns to read against 50 ns for clock_gettime: the single-record
 * path reads it twice per record); counters keep ticks and are converted to
 * nanoseconds when shown, with the ratio observed since pt_clock_init().
 */
#ifndef PT_CLOCK_H
#define PT_CLOCK_H

#include "pt_base.h"

uint64_t pt_now_ns(void); /* CLOCK_MONOTONIC */
uint64_t pt_ticks(void);
void pt_clock_init(void); /* marks the origin of the ratio; idempotent */
double pt_ns_per_tick(void); /* waits until 2 ms have passed since the origin */

#endif
