/*
 * clock.c - monotonic nanoseconds and cheap ticks (see pt_clock.h).
 */
#include "pt_clock.h"

#include <pthread.h>
#include <time.h>

uint64_t pt_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
uint64_t pt_ticks(void)
{
    return __rdtsc();
}
#define HAVE_TSC 1
#else
uint64_t pt_ticks(void)
{
    return pt_now_ns();
}
#define HAVE_TSC 0
#endif

static uint64_t origin_ns, origin_ticks;
static pthread_once_t origin_once = PTHREAD_ONCE_INIT;

static void set_origin(void)
{
    origin_ns = pt_now_ns();
    origin_ticks = pt_ticks();
}

void pt_clock_init(void)
{
    pthread_once(&origin_once, set_origin);
}

/* nanoseconds per tick, from the time since the origin (at least 2 ms) */
double pt_ns_per_tick(void)
{
    uint64_t ns, t;

    if (!HAVE_TSC)
        return 1.0;
    pt_clock_init();
    for (;;) {
        ns = pt_now_ns();
        t = pt_ticks();
        if (ns - origin_ns >= 2000000 && t > origin_ticks)
            return (double)(ns - origin_ns) / (double)(t - origin_ticks);
    }
}
