/*
 * lanes.c - the process-wide pool of worker lanes.
 *
 * A batch lives on its caller's stack. The caller links it into the pool's
 * list, wakes idle workers, then claims indices of its own batch exactly like
 * a worker does (an atomic counter: claim-by-index), so a batch always
 * completes even when every worker is busy elsewhere (invariant 5). Workers
 * take a reference on a batch under the pool mutex; the caller unlinks the
 * batch when its claims run out and returns once no worker holds it.
 *
 * Idle workers spin for a short, bounded time (new batches of a busy
 * connection arrive every few microseconds) and then sleep on a futex; they
 * never burn a core while the process is idle. Small batches (below
 * INLINE_BELOW bytes) and single records never leave the calling thread.
 *
 * After fork() the child has no workers: pthread_atfork resets the pool and
 * it is rebuilt on the next batch (invariant 6).
 *
 * Adaptive lanes (ADAPTIVE, default on): a worker only helps where it adds
 * parallelism. The pool counts the threads that called in recently (the
 * callers seen in the current and the previous activity window of about a
 * millisecond) and the workers holding a batch now; their sum is not let
 * past the CPUs the process may run on (CPUS, default: online CPUs in its
 * affinity mask, re-read now and then). A batch whose caller finds every
 * core already busy with callers or workers is kept by its caller and run
 * inline: no wake-up, no hand-off, no thread time-slicing with the callers.
 * Otherwise it goes out with no more slots than there are free cores, a
 * worker takes no slot once callers and busy workers fill the CPUs, and an
 * idle worker stops spinning (and sleeps) as soon as they do. The CPUs may
 * also be busy with other processes, or the process held to less than its
 * CPUs (a CPU quota): so every batch sent out is timed against its caller's
 * own pace, and when recent ones gained nothing the callers keep their
 * batches for a while (4 windows, doubling up to 32 while it lasts, and
 * one batch in 32 even then) before one or a few are sent out again; a loss found while callers filled every
 * core is forgotten as soon as they no longer do.
 *
 * The end of a batch: the caller unlinks it, so no worker can take it any
 * more, and waits until the workers holding it have let go (b->refs, changed
 * under the pool mutex). It spins a little, then sleeps on b->done. The last
 * worker out marks the batch done; only when the caller has said it sleeps
 * does that worker wake it (outside the mutex) and then mark the batch
 * released: the caller returns, and the batch on its stack is gone, only
 * after the worker's last touch.
 */
#include "pt_lanes.h"
#include "pt_clock.h"
#include "pt_stats.h"

#include <openssl/crypto.h>
#include <openssl/err.h>

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

#define DEFAULT_INLINE_BELOW 16384
#define WORKER_SPIN_NS 100000 /* idle worker: spin this long before sleeping */
#define CALLER_SPIN_NS 200000 /* caller waiting for the tail of its batch */
/* ADAPTIVE: a worker that, over SHARE_CHECK_NS of running (working or
 * spinning, not sleeping), got less than 4/5 of a CPU (its thread time
 * against the clock) shares its core with other runnable threads, of this
 * process or another. Its spinning then only takes CPU from them, and so
 * does the work it takes from the callers: for a while (mark_contended:
 * 2^4 windows, about 22 ms at a 3 GHz time stamp counter, doubling up to
 * 2^7 while it lasts) the callers keep their batches, workers sleep at once
 * and callers wait for the tails of batches already out with a short spin.
 * Then batches go out again, and the threads measure again. */
#define SHARE_CHECK_NS 4000000
#define PREEMPT_CHECK_TICKS ((uint64_t)1 << (WINDOW_SHIFT + 3))
#define PREEMPTS 3
#define CALLER_SPIN_CONTENDED_NS 5000
#define CONTENDED_SHIFT 7
#define CONTENDED_MIN_SHIFT 4
/* Activity windows: 2^22 ticks (about 1.4 ms at 3 GHz; 4 ms where ticks are
 * nanoseconds). A caller counts as busy in the window it called in and the
 * next one. */
#define WINDOW_SHIFT 22
#define CPUS_REFRESH 256 /* windows between two readings of the CPU count */
/* Batches sent to the lanes must beat the caller alone: a moving average
 * (weight 1/16) of their time over the caller's own pace (1024: no gain)
 * above SLOWNESS_LOSS keeps the batches in their callers for 4, 8, 16 or 32
 * windows, then one or a few are sent again to see; below SLOWNESS_GAIN
 * the wait starts again from 4 windows. */
#define SLOWNESS_MAX 1536 /* one batch counts as at most 1.5 */
#define SLOWNESS_START 768 /* a new pool: the benefit of the doubt */
#define SLOWNESS_PROBE 880 /* after a loss: two or three more losses end the probe */
#define SLOWNESS_LOSS 922 /* 0.9: less than 10 % gained */
#define SLOWNESS_GAIN 717 /* 0.7 */
#define BACKOFF_MIN 2
#define BACKOFF_MAX 5
#define PROBE_EVERY 32 /* ... and one batch in 32 kept for no gain goes out */
/* A batch that took 4 times what its caller alone would have, and a quarter
 * window (about 350 us) more, stalled: a lane holding one of its jobs was
 * not running (its core taken by another thread). An average of ratios
 * hides such rare, long stalls; they are weighed by the time they cost
 * instead: batches are kept for STALL_HOLD times the time lost (at least the
 * usual backoff), with no probe meanwhile, so that a stall costs at most
 * about 1/STALL_HOLD of the time. */
#define STALL_TICKS ((uint64_t)1 << (WINDOW_SHIFT - 2))
#define STALL_HOLD 32

enum {
    B_RUNNING, /* workers hold the batch */
    B_SLEEPING, /* ... and the caller sleeps on done (set by the caller) */
    B_DONE, /* the last worker let go; no sleeper: it touches nothing more */
    B_RELEASED /* the last worker woke the sleeping caller and let go */
};

typedef struct pt_batch {
    pt_job_fn job;
    void *arg;
    const size_t *sizes;
    const int *counts;
    int n;
    int records; /* TLS records in all jobs */
    _Atomic int next; /* next index to claim */
    _Atomic int failed;
    int slots; /* lane slots the caller prepared: 0 is the caller's */
    _Atomic int slots_used;
    _Atomic int refs; /* workers holding the batch (changed under mu) */
    _Atomic uint32_t done; /* futex word: B_RUNNING .. B_RELEASED */
    struct pt_batch *prev_b, *next_b; /* pool list links (under mu) */
    int listed;
    /* posted batches (pt_lanes_post): called once, under mu, by the last
     * worker to let go; NULL for pt_lanes_run's batches */
    void (*notify)(void *arg);
    void *notify_arg;
    uint64_t t0; /* posted at (ticks) */
} pt_batch;

static struct {
    pthread_mutex_t mu; /* list, refs, lifecycle */
    pthread_mutex_t cfg_mu; /* serialises start/stop */
    pt_batch *head, *tail;
    _Atomic uint32_t seq; /* futex word: bumped when a batch is posted */
    _Atomic int sleepers;
    _Atomic int stop;
    _Atomic int running; /* workers started */
    _Atomic int lanes; /* configured, caller included */
    _Atomic size_t inline_below;
    _Atomic int start_failed; /* pthread_create failed: no retry until THREADS changes */
    _Atomic int busy; /* workers holding a batch (changed under mu) */
    _Atomic int adaptive; /* ADAPTIVE: 1 (default) or 0 */
    _Atomic int cpus_set; /* CPUS: 0 (default: the CPUs we may run on) or a count */
    _Atomic int cpus_seen; /* the CPUs we may run on, as last read */
    /* window << 32 | callers seen in the window before << 16 | callers seen
     * in this one (each at most 0xffff) */
    _Atomic uint64_t activity;
    /* the gain of recent batches sent to the lanes: their time over the
     * time the caller alone would have taken, in 1/1024 (a moving average) */
    _Atomic int slowness;
    _Atomic uint64_t keep_until; /* ticks: batches are kept until then */
    /* ticks: until about then the cores are wanted by other threads (a
     * worker got less than its share of a CPU, or a caller was preempted
     * again and again): no spinning, callers keep their batches */
    _Atomic uint64_t contended_until;
    _Atomic int contended_shift; /* the last hold was 2^shift windows */
    _Atomic int backoff; /* keep for 2^backoff windows after the next loss */
    /* ticks: callers filled every core until about then (plus 8 windows) */
    _Atomic uint64_t crowded_until;
    _Atomic int loss_crowded; /* the last loss was found while crowded */
    _Atomic uint64_t stall_until; /* ticks: kept for a stall, no probes until then */
    _Atomic unsigned kept_no_gain; /* batches kept for no gain, for PROBE_EVERY */
    _Atomic unsigned long start_failures; /* threads that could not be started */
    pthread_t threads[PT_MAX_LANES];
} pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cfg_mu = PTHREAD_MUTEX_INITIALIZER,
    .inline_below = DEFAULT_INLINE_BELOW,
    .adaptive = 1,
    .slowness = SLOWNESS_START,
    .backoff = BACKOFF_MIN,
};

/* The caller's last activity window + 1 (0: none yet), per thread. A pthread
 * key, not a _Thread_local: see stats.c. */
static pthread_key_t window_key;

static int read_cpus(void)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    int n = online > 0 ? (int)online : 1;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0
        && CPU_COUNT(&set) < n)
        n = CPU_COUNT(&set);
    return n;
}

/* The CPUs the lanes may keep busy (CPUS, or as last read). */
static int cpus_now(void)
{
    int n = atomic_load_explicit(&pool.cpus_set, memory_order_relaxed);

    if (n > 0)
        return n;
    n = atomic_load_explicit(&pool.cpus_seen, memory_order_relaxed);
    return n > 0 ? n : 1;
}

/* Callers seen in window w and the one before (a thread that stopped
 * calling drops out within two windows). */
static int callers_at(uint64_t a, uint64_t w)
{
    uint64_t aw = a >> 32;
    int cur = (int)(a & 0xffff), prev = (int)(a >> 16 & 0xffff);

    if (aw == (w & 0xffffffffu))
        return cur > prev ? cur : prev;
    if (aw == ((w - 1) & 0xffffffffu))
        return cur;
    return 0;
}

/* This thread calls in at ticks t: counted once per window (one
 * compare-and-swap per thread and window, nothing more on later calls). */
static void note_caller(uint64_t t)
{
    uint64_t w = t >> WINDOW_SHIFT, a, na;
    uintptr_t mine = (uintptr_t)pthread_getspecific(window_key);

    if (mine == (uintptr_t)(w + 1))
        return;
    pthread_setspecific(window_key, (void *)(uintptr_t)(w + 1));
    a = atomic_load_explicit(&pool.activity, memory_order_relaxed);
    do {
        uint64_t aw = a >> 32, cur = a & 0xffff, prev;

        if (aw == (w & 0xffffffffu)) {
            na = cur < 0xffff ? a + 1 : a;
        } else {
            prev = aw == ((w - 1) & 0xffffffffu) ? cur : 0;
            na = (w & 0xffffffffu) << 32 | prev << 16 | 1;
        }
    } while (!atomic_compare_exchange_weak_explicit(&pool.activity, &a, na,
        memory_order_relaxed, memory_order_relaxed));
    if ((w & (CPUS_REFRESH - 1)) == 0 || atomic_load_explicit(&pool.cpus_seen, memory_order_relaxed) == 0)
        atomic_store_explicit(&pool.cpus_seen, read_cpus(), memory_order_relaxed);
}

/* Cores not busy with recent callers or working workers (<= 0: none). */
static int free_cores(uint64_t t, int *callers)
{
    int c = callers_at(atomic_load_explicit(&pool.activity, memory_order_relaxed), t >> WINDOW_SHIFT);

    if (callers != NULL)
        *callers = c;
    return cpus_now() - c - atomic_load_explicit(&pool.busy, memory_order_relaxed);
}

/* A batch sent to the lanes took `taken` ticks from its start to its
 * return; its caller ran `own` of its n jobs in `own_ticks`. Was that faster
 * than the caller alone? Too many losses in a row keep the next batches in
 * their callers for a while (keep_until). */
static void judge(int n, int own, uint64_t own_ticks, uint64_t taken, uint64_t now)
{
    uint64_t alone;
    int r, avg, shift;

    if (own <= 0 || own_ticks == 0)
        return; /* the workers did it all: a gain */
    alone = own_ticks * (uint64_t)n / (uint64_t)own;
    shift = atomic_load_explicit(&pool.backoff, memory_order_relaxed);
    if (taken > 4 * alone && taken - alone > STALL_TICKS) {
        uint64_t hold = STALL_HOLD * (taken - alone);
        uint64_t least = (uint64_t)1 << (WINDOW_SHIFT + shift);

        if (hold < least)
            hold = least;
        atomic_store_explicit(&pool.keep_until, now + hold, memory_order_relaxed);
        atomic_store_explicit(&pool.stall_until, now + hold, memory_order_relaxed);
        if (shift < BACKOFF_MAX)
            atomic_store_explicit(&pool.backoff, shift + 1, memory_order_relaxed);
        atomic_store_explicit(&pool.slowness, SLOWNESS_PROBE, memory_order_relaxed);
        atomic_store_explicit(&pool.loss_crowded,
            now < atomic_load_explicit(&pool.crowded_until, memory_order_relaxed),
            memory_order_relaxed);
        pt_stats_event(PT_EV_BACKOFF);
        pt_stats_event(PT_EV_STALL);
        return;
    }
    /* one outlier (a preempted caller) weighs no more than half a loss */
    r = 2 * taken >= 3 * alone ? SLOWNESS_MAX : (int)(taken * 1024 / alone);
    avg = atomic_load_explicit(&pool.slowness, memory_order_relaxed);
    avg += (r - avg) / 16;
    if (avg > SLOWNESS_LOSS) {
        atomic_store_explicit(&pool.keep_until, now + ((uint64_t)1 << (WINDOW_SHIFT + shift)),
            memory_order_relaxed);
        if (shift < BACKOFF_MAX)
            atomic_store_explicit(&pool.backoff, shift + 1, memory_order_relaxed);
        avg = SLOWNESS_PROBE; /* the next probe starts near the verdict */
        atomic_store_explicit(&pool.loss_crowded,
            now < atomic_load_explicit(&pool.crowded_until, memory_order_relaxed),
            memory_order_relaxed);
        pt_stats_event(PT_EV_BACKOFF);
    } else if (avg < SLOWNESS_GAIN && shift != BACKOFF_MIN) {
        atomic_store_explicit(&pool.backoff, BACKOFF_MIN, memory_order_relaxed);
    }
    atomic_store_explicit(&pool.slowness, avg, memory_order_relaxed);
}

static long futex(_Atomic uint32_t *uaddr, int op, uint32_t val)
{
    return syscall(SYS_futex, (uint32_t *)uaddr, op | FUTEX_PRIVATE_FLAG, val,
        NULL, NULL, 0);
}

static void unlink_locked(pt_batch *b)
{
    if (!b->listed)
        return;
    if (b->prev_b != NULL)
        b->prev_b->next_b = b->next_b;
    else
        pool.head = b->next_b;
    if (b->next_b != NULL)
        b->next_b->prev_b = b->prev_b;
    else
        pool.tail = b->prev_b;
    b->prev_b = b->next_b = NULL;
    b->listed = 0;
}

/* Claims and runs indices of b until none is left, as slot `slot`. t0: a
 * timestamp taken just before (0: none yet). Returns the last timestamp
 * taken; *done (if not NULL): the jobs run. */
static uint64_t work_as(pt_batch *b, int slot, uint64_t t0, int *done)
{
    uint64_t t1;
    int i;

    while ((i = atomic_fetch_add_explicit(&b->next, 1, memory_order_relaxed)) < b->n) {
        int rc;

        if (done != NULL)
            ++*done;

        if (t0 == 0)
            t0 = pt_ticks();
        rc = b->job(b->arg, i, slot);
        t1 = pt_ticks(); /* one read per record: it starts the next one */
        pt_stats_record(b->counts != NULL ? b->counts[i] : 1,
            b->sizes != NULL ? b->sizes[i] : 0, t1 - t0);
        t0 = t1;
        if (rc != 0)
            atomic_fetch_add_explicit(&b->failed, 1, memory_order_relaxed);
    }
    return t0;
}

/* A worker's share: a slot of its own, if the batch has one left (no more
 * threads work on a batch than it has lane slots). */
static void work_on(pt_batch *b)
{
    int slot;

    if (atomic_load_explicit(&b->next, memory_order_relaxed) >= b->n)
        return;
    /* this worker is one of the busy ones already: < 0 means it would
     * time-slice with a caller */
    /* (a posted batch has no caller working on it: never declined) */
    if (b->notify == NULL && atomic_load_explicit(&pool.adaptive, memory_order_relaxed)
        && free_cores(pt_ticks(), NULL) < 0) {
        pt_stats_event(PT_EV_WORKER_DECLINED);
        return;
    }
    slot = atomic_fetch_add_explicit(&b->slots_used, 1, memory_order_relaxed);
    if (slot < b->slots)
        work_as(b, slot, 0, NULL);
}

/* Takes the first batch that still has unclaimed work, with a reference. */
static pt_batch *take(void)
{
    pt_batch *b;

    pthread_mutex_lock(&pool.mu);
    for (b = pool.head; b != NULL;) {
        pt_batch *nb = b->next_b;

        if (atomic_load_explicit(&b->next, memory_order_relaxed) < b->n) {
            atomic_fetch_add(&b->refs, 1);
            atomic_fetch_add(&pool.busy, 1);
            break;
        }
        unlink_locked(b); /* exhausted: nobody needs to find it again */
        b = nb;
    }
    pthread_mutex_unlock(&pool.mu);
    return b;
}

static void release(pt_batch *b)
{
    int wake = 0;

    pthread_mutex_lock(&pool.mu);
    unlink_locked(b);
    atomic_fetch_sub(&pool.busy, 1);
    if (atomic_fetch_sub(&b->refs, 1) == 1) {
        /* posted batch: see pt_lanes_post. Before done changes: once it is
         * B_DONE a caller that spins (not sleeps) may return and reuse the
         * batch's memory (pt_lanes_run's batch lives on its stack). */
        if (b->notify != NULL)
            b->notify(b->notify_arg);
        wake = atomic_exchange(&b->done, B_DONE) == B_SLEEPING;
    }
    pthread_mutex_unlock(&pool.mu);
    /* without a sleeper the batch is not touched after the mutex */
    if (wake) {
        futex(&b->done, FUTEX_WAKE, 1);
        pt_stats_event(PT_EV_CALLER_WAKE);
        /* the last touch: after this store the caller may return */
        atomic_store_explicit(&b->done, B_RELEASED, memory_order_release);
    }
}

/* Was a core lately found wanted by other threads (ADAPTIVE)? */
static int contended(uint64_t t)
{
    return atomic_load_explicit(&pool.adaptive, memory_order_relaxed)
        && t < atomic_load_explicit(&pool.contended_until, memory_order_relaxed);
}

/* CPU time of the calling thread, in ns (0 where it cannot be read) */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Other threads want the cores (found at ticks t): keep batches in their
 * callers, and workers from spinning, for 2^shift windows; a finding soon
 * after the last hold ended doubles the hold (up to CONTENDED_SHIFT), one
 * after a quiet while starts again from CONTENDED_MIN_SHIFT (about 22 ms),
 * so that a burst of other work costs little and a lasting one is probed
 * only now and then. */
static void mark_contended(uint64_t t)
{
    uint64_t last = atomic_load_explicit(&pool.contended_until, memory_order_relaxed);
    int shift = atomic_load_explicit(&pool.contended_shift, memory_order_relaxed);

    if (last != 0 && t < last + ((uint64_t)2 << (WINDOW_SHIFT + shift))) {
        if (shift < CONTENDED_SHIFT)
            shift++;
    } else {
        shift = CONTENDED_MIN_SHIFT;
    }
    atomic_store_explicit(&pool.contended_shift, shift, memory_order_relaxed);
    atomic_store_explicit(&pool.contended_until, t + ((uint64_t)1 << (WINDOW_SHIFT + shift)),
        memory_order_relaxed);
    pt_stats_event(PT_EV_SPIN_STOP);
}

/* A worker's share of the CPU since it last woke (*w0, *c0: clock and
 * thread CPU time at the start of the sample; 0: none yet). */
static void check_share(uint64_t *w0, uint64_t *c0)
{
    uint64_t w = pt_now_ns(), c;

    if (*w0 == 0 || *c0 == 0) {
        *w0 = w;
        *c0 = thread_cpu_ns();
        return;
    }
    if (w - *w0 < SHARE_CHECK_NS)
        return;
    c = thread_cpu_ns();
    if (c != 0 && c >= *c0 && (c - *c0) * 5 < (w - *w0) * 4) {
        mark_contended(pt_ticks());
    }
    *w0 = w;
    *c0 = c;
}

/* A caller preempted (involuntary context switches) PREEMPTS times or more
 * in each of two samples of PREEMPT_CHECK_TICKS (about 11 ms) in a row
 * shares its core with runnable threads: a
 * spinning worker, or another process, took the core it would have had to
 * itself. The same holds as a worker losing its share (check_share). */
static void check_preempted(uint64_t t)
{
    static __thread uint64_t t0;
    static __thread long n0;
    static __thread int streak;
    struct rusage ru;

    if (t0 != 0 && t - t0 < PREEMPT_CHECK_TICKS)
        return;
    if (getrusage(RUSAGE_THREAD, &ru) != 0)
        return;
    /* a core shared with a busy thread preempts every few milliseconds,
     * sample after sample; a short burst of other work does not */
    if (t0 != 0 && t - t0 < 2 * PREEMPT_CHECK_TICKS && ru.ru_nivcsw - n0 >= PREEMPTS)
        streak++;
    else
        streak = 0;
    if (streak >= 2) {
        streak = 0;
        mark_contended(t);
    }
    t0 = t;
    n0 = ru.ru_nivcsw;
}

/* The caller, after its own claims ran out: wait until no worker holds b. */
static void wait_released(pt_batch *b)
{
    uint64_t until;
    unsigned spins;
    int held;

    pthread_mutex_lock(&pool.mu);
    unlink_locked(b); /* no new worker may pick the batch up */
    held = atomic_load(&b->refs) != 0;
    pthread_mutex_unlock(&pool.mu);
    if (!held)
        return;
    until = pt_now_ns() + (contended(pt_ticks()) ? CALLER_SPIN_CONTENDED_NS : CALLER_SPIN_NS);
    for (spins = 1; atomic_load_explicit(&b->done, memory_order_acquire) == B_RUNNING; spins++) {
        uint32_t expect = B_RUNNING;

        if (spins < 64 || (spins & 63) != 0 || pt_now_ns() < until) {
            cpu_relax();
            continue;
        }
        if (!atomic_compare_exchange_strong(&b->done, &expect, B_SLEEPING))
            break; /* B_DONE meanwhile */
        while (atomic_load(&b->done) == B_SLEEPING) {
            pt_stats_event(PT_EV_CALLER_SLEEP);
            futex(&b->done, FUTEX_WAIT, B_SLEEPING);
        }
        /* the waker still holds the batch until it stores B_RELEASED */
        while (atomic_load_explicit(&b->done, memory_order_acquire) != B_RELEASED)
            cpu_relax();
        return;
    }
}

static void *worker_main(void *argp)
{
    int lane = (int)(intptr_t)argp;
    uint64_t share_w0 = 0, share_c0 = 0; /* check_share's sample */

    pt_stats_set_lane(lane);
    while (!atomic_load(&pool.stop)) {
        uint32_t seen = atomic_load(&pool.seq);
        pt_batch *b = take();
        uint64_t until, w0;
        unsigned spins;

        if (atomic_load_explicit(&pool.adaptive, memory_order_relaxed))
            check_share(&share_w0, &share_c0);
        if (b != NULL) {
            work_on(b);
            release(b);
            /* jobs report failures through their own results; what OpenSSL
             * left on this thread's error queue nobody would ever read */
            ERR_clear_error();
            continue;
        }
        /* bounded spin: a busy connection posts its next batch soon; look
         * at the counter after every pause, at the clock now and then */
        w0 = pt_now_ns();
        until = w0 + WORKER_SPIN_NS;
        if (contended(pt_ticks()))
            until = w0; /* no spinning on a core others want */
        for (spins = 1; until > w0 && atomic_load_explicit(&pool.seq, memory_order_acquire) == seen
             && !atomic_load_explicit(&pool.stop, memory_order_relaxed);
             spins++) {
            uint64_t now;

            cpu_relax();
            if ((spins & 63) != 0)
                continue;
            if ((now = pt_now_ns()) > until)
                break;
            /* no spinning on a core a caller needs, nor while the callers
             * keep their batches: sleep at once (the first batch of the
             * next probe pays a wake-up; the worker then spins in full, so
             * the probe judges the lanes, not the wake-ups) */
            if (atomic_load_explicit(&pool.adaptive, memory_order_relaxed)) {
                uint64_t t = pt_ticks();

                if (free_cores(t, NULL) < 1
                    || t < atomic_load_explicit(&pool.keep_until, memory_order_relaxed))
                    break;
            }
        }
        if (atomic_load(&pool.seq) != seen)
            continue;
        atomic_fetch_add(&pool.sleepers, 1);
        if (atomic_load(&pool.seq) == seen && !atomic_load(&pool.stop)) {
            pt_stats_event(PT_EV_WORKER_SLEEP);
            futex(&pool.seq, FUTEX_WAIT, seen);
            share_w0 = 0; /* asleep is not losing the CPU: a new sample */
        }
        atomic_fetch_sub(&pool.sleepers, 1);
    }
    /* free what OpenSSL keeps per thread (the DRBG the MULTIBLOCK code drew
     * explicit IVs from): the pool may be stopped from OPENSSL_cleanup(),
     * too late for libcrypto's own thread-exit hook */
    OPENSSL_thread_stop();
    return NULL;
}

/* After the workers stopped: a posted batch nobody took would keep its
 * paused job waiting for a notify that never comes; notify it now (its
 * job then finds no worker running and collects the batch itself). */
static void wake_posted(void)
{
    pthread_mutex_lock(&pool.mu);
    for (pt_batch *b = pool.head; b != NULL; b = b->next_b)
        if (b->notify != NULL)
            b->notify(b->notify_arg);
    pthread_mutex_unlock(&pool.mu);
}

static void stop_workers_locked(void)
{
    int i, n = atomic_load(&pool.running);

    if (n == 0)
        return;
    atomic_store(&pool.stop, 1);
    atomic_fetch_add(&pool.seq, 1);
    futex(&pool.seq, FUTEX_WAKE, INT32_MAX);
    for (i = 0; i < n; i++)
        pthread_join(pool.threads[i], NULL);
    atomic_store(&pool.running, 0);
    atomic_store(&pool.stop, 0);
    wake_posted();
}

static int default_lanes(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        n = 1;
    if (n > PT_MAX_LANES)
        n = PT_MAX_LANES;
    return (int)n;
}

/* fork: the child keeps none of the parent's threads */
static void atfork_prepare(void)
{
    pthread_mutex_lock(&pool.cfg_mu);
    pthread_mutex_lock(&pool.mu);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool.cfg_mu);
}

static void atfork_child(void)
{
    pool.head = pool.tail = NULL;
    atomic_store(&pool.busy, 0);
    atomic_store(&pool.activity, 0);
    atomic_store(&pool.cpus_seen, 0);
    atomic_store(&pool.slowness, SLOWNESS_START);
    atomic_store(&pool.keep_until, 0);
    atomic_store(&pool.contended_until, 0);
    atomic_store(&pool.contended_shift, CONTENDED_MIN_SHIFT);
    atomic_store(&pool.backoff, BACKOFF_MIN);
    atomic_store(&pool.crowded_until, 0);
    atomic_store(&pool.loss_crowded, 0);
    atomic_store(&pool.stall_until, 0);
    atomic_store(&pool.start_failed, 0);
    atomic_store(&pool.running, 0);
    atomic_store(&pool.sleepers, 0);
    atomic_store(&pool.stop, 0);
    atomic_store(&pool.seq, 0);
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool.cfg_mu);
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static _Atomic int exiting;

/*
 * At exit, stop the workers before OPENSSL_cleanup() runs (atexit handlers
 * run in reverse order; OpenSSL registered its own earlier): each worker
 * then frees its per-thread OpenSSL state while libcrypto can still do it.
 * Batches after this point run in the calling thread.
 */
static void stop_at_exit(void)
{
    atomic_store(&exiting, 1);
    pt_lanes_shutdown();
}

static void init_pool(void)
{
    pt_stats_init();
    pthread_key_create(&window_key, NULL);
    atomic_store(&pool.cpus_seen, read_cpus());
    atexit(stop_at_exit);
    pool.lanes = default_lanes();
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

void pt_lanes_init_once(void)
{
    pthread_once(&init_once, init_pool);
}

/* Starts the workers if they are not running. Returns how many run. A
 * failed pthread_create is not retried on every batch: the batches run in
 * their callers until THREADS changes. */
static int ensure_workers(void)
{
    int n = atomic_load_explicit(&pool.running, memory_order_acquire);

    if (n > 0 || atomic_load_explicit(&exiting, memory_order_relaxed)
        || atomic_load_explicit(&pool.start_failed, memory_order_relaxed))
        return n;
    pthread_mutex_lock(&pool.cfg_mu);
    n = atomic_load(&pool.running);
    /* exiting again under cfg_mu: stop_at_exit may have run meanwhile */
    if (n == 0 && pool.lanes > 1 && !atomic_load(&exiting) && !atomic_load(&pool.start_failed)) {
        int want = pool.lanes - 1;
        pthread_attr_t attr;

        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        for (n = 0; n < want; n++)
            if (pthread_create(&pool.threads[n], &attr, worker_main,
                    (void *)(intptr_t)(n + 1))
                != 0)
                break;
        pthread_attr_destroy(&attr);
        if (n < want) {
            atomic_fetch_add(&pool.start_failures, (unsigned long)(want - n));
            atomic_store(&pool.start_failed, 1);
        }
        atomic_store_explicit(&pool.running, n, memory_order_release);
    }
    pthread_mutex_unlock(&pool.cfg_mu);
    return n;
}

/* Do recent losses keep this batch in its caller (at ticks t)? A loss found
 * while callers crowded every core says nothing once the crowd is gone: then
 * the lanes are tried again at once. */
static int keep_batches(uint64_t t)
{
    if (contended(t))
        return 1; /* the workers' cores are wanted by other threads */
    if (t >= atomic_load_explicit(&pool.keep_until, memory_order_relaxed))
        return 0;
    if (atomic_load_explicit(&pool.loss_crowded, memory_order_relaxed)
        && t >= atomic_load_explicit(&pool.crowded_until, memory_order_relaxed)) {
        atomic_store_explicit(&pool.loss_crowded, 0, memory_order_relaxed);
        atomic_store_explicit(&pool.keep_until, 0, memory_order_relaxed);
        atomic_store_explicit(&pool.backoff, BACKOFF_MIN, memory_order_relaxed);
        atomic_store_explicit(&pool.slowness, SLOWNESS_START, memory_order_relaxed);
        atomic_store_explicit(&pool.stall_until, 0, memory_order_relaxed);
        return 0;
    }
    if (t < atomic_load_explicit(&pool.stall_until, memory_order_relaxed))
        return 1; /* no probe: it would risk another stall */
    /* a long stream of batches learns something before the time is up */
    return (atomic_fetch_add_explicit(&pool.kept_no_gain, 1, memory_order_relaxed) + 1)
            % PROBE_EVERY
        != 0;
}

int pt_lanes_width(int n, size_t total)
{
    int lanes;

    if (n <= 1)
        return 1; /* the single-record path: nothing more */
    pt_lanes_init_once();
    lanes = atomic_load_explicit(&pool.lanes, memory_order_relaxed);
    if (lanes <= 1 || total < atomic_load(&pool.inline_below)
        || (atomic_load_explicit(&pool.start_failed, memory_order_relaxed)
            && atomic_load_explicit(&pool.running, memory_order_relaxed) == 0))
        return 1;
    /* adaptive: a batch never has more threads than CPUs (but at least two
     * slots, so that pt_lanes_run decides, and counts, what its caller keeps) */
    if (atomic_load_explicit(&pool.adaptive, memory_order_relaxed) && cpus_now() < lanes)
        lanes = cpus_now() > 2 ? cpus_now() : 2;
    return n < lanes ? n : lanes;
}

int pt_lanes_run(pt_job_fn job, void *arg, int n, const size_t *sizes, const int *counts,
    int slots)
{
    pt_batch b;
    size_t total = 0;
    uint64_t t0 = pt_ticks();
    int i, workers, failed, woke, fresh;

    pt_lanes_init_once();
    note_caller(t0);
    if (n == 1) {
        /* one job (a lone TLS record): no pool, two time stamps, one
         * statistics update - the single-record path must cost ~nothing */
        uint64_t t1;
        int rc;

        rc = job(arg, 0, 0);
        t1 = pt_ticks();
        pt_stats_single(counts != NULL ? counts[0] : 1, sizes != NULL ? sizes[0] : 0,
            t1 - t0, rc != 0);
        return rc != 0;
    }

    memset(&b, 0, sizeof(b));
    b.job = job;
    b.arg = arg;
    b.sizes = sizes;
    b.counts = counts;
    b.n = n;
    b.records = 0;
    b.slots = slots;
    b.slots_used = 1; /* slot 0 is the caller's */
    for (i = 0; i < n; i++) {
        total += sizes != NULL ? sizes[i] : 0;
        b.records += counts != NULL ? counts[i] : 1;
    }

    fresh = atomic_load_explicit(&pool.running, memory_order_relaxed) == 0;
    if (n <= 1 || slots <= 1 || atomic_load_explicit(&pool.lanes, memory_order_relaxed) <= 1
        || total < atomic_load(&pool.inline_below) || (workers = ensure_workers()) == 0) {
        uint64_t t1 = work_as(&b, 0, t0, NULL);

        failed = atomic_load(&b.failed);
        pt_stats_batch(b.records, 1, failed != 0, t1 - t0);
        return failed;
    }
    if (atomic_load_explicit(&pool.adaptive, memory_order_relaxed)) {
        int callers, spare, lost;

        check_preempted(t0);
        spare = free_cores(t0, &callers);
        lost = spare > 0 && keep_batches(t0);

        if (spare <= 0) {
            /* remember the crowd (a shared store only every few windows) */
            uint64_t until = t0 + ((uint64_t)8 << WINDOW_SHIFT);

            if (atomic_load_explicit(&pool.crowded_until, memory_order_relaxed)
                < until - ((uint64_t)2 << WINDOW_SHIFT))
                atomic_store_explicit(&pool.crowded_until, until, memory_order_relaxed);
        }
        if (spare <= 0 || lost) {
            /* every core is busy, or recent batches gained nothing on the
             * lanes: the caller keeps its batch */
            uint64_t t1 = work_as(&b, 0, t0, NULL);

            failed = atomic_load(&b.failed);
            pt_stats_batch(b.records, 1, failed != 0, t1 - t0);
            pt_stats_kept(b.records, spare > 0 ? PT_KEPT_NO_GAIN
                    : callers >= cpus_now()   ? PT_KEPT_CALLERS
                                              : PT_KEPT_WORKERS);
            return failed;
        }
        if (spare + 1 < b.slots) {
            b.slots = spare + 1; /* the caller and one worker per free core */
            pt_stats_event(PT_EV_NARROWED);
        }
        slots = b.slots;
    }

    pthread_mutex_lock(&pool.mu);
    b.prev_b = pool.tail;
    if (pool.tail != NULL)
        pool.tail->next_b = &b;
    else
        pool.head = &b;
    pool.tail = &b;
    b.listed = 1;
    pthread_mutex_unlock(&pool.mu);
    atomic_fetch_add(&pool.seq, 1);
    if ((woke = atomic_load(&pool.sleepers) > 0)) {
        int want = (n < slots ? n : slots) - 1; /* the caller is one of them */

        pt_stats_event(PT_EV_WAKE);
        futex(&pool.seq, FUTEX_WAKE, (uint32_t)(want < workers ? want : workers));
    }

    {
        uint64_t s0 = pt_ticks(), s1, end;
        int own = 0;

        s1 = work_as(&b, 0, s0, &own);
        wait_released(&b);
        end = pt_ticks();
        pt_stats_wait(end - s1);
        /* a batch that woke a worker pays the wake-up (tens of us in a
         * VM) and sees the worker late, as does the batch that started the
         * workers: that says nothing about the lanes of a busy connection,
         * whose workers are awake between batches */
        if (!woke && !fresh && atomic_load_explicit(&pool.adaptive, memory_order_relaxed))
            judge(n, own, s1 - s0, end - t0, end);
        failed = atomic_load(&b.failed);
        pt_stats_batch(b.records, 0, failed != 0, end - t0);
    }
    return failed;
}

int pt_lanes_set_threads(long lanes)
{
    if (lanes < 1 || lanes > PT_MAX_LANES)
        return 0;
    pt_lanes_init_once();
    pthread_mutex_lock(&pool.cfg_mu);
    if (pool.lanes != (int)lanes) {
        stop_workers_locked();
        pool.lanes = (int)lanes;
        atomic_store(&pool.start_failed, 0); /* worth another try */
    }
    pthread_mutex_unlock(&pool.cfg_mu);
    return 1;
}

int pt_lanes_get_threads(void)
{
    pt_lanes_init_once();
    return pool.lanes;
}

int pt_lanes_workers_running(void)
{
    return atomic_load(&pool.running);
}

unsigned long pt_lanes_start_failures(void)
{
    return atomic_load(&pool.start_failures);
}

int pt_lanes_set_inline_below(long bytes)
{
    if (bytes < 0 || bytes > (1L << 30))
        return 0;
    atomic_store(&pool.inline_below, (size_t)bytes);
    return 1;
}

size_t pt_lanes_get_inline_below(void)
{
    return atomic_load(&pool.inline_below);
}

int pt_lanes_set_adaptive(long on)
{
    if (on != 0 && on != 1)
        return 0;
    atomic_store(&pool.adaptive, (int)on);
    return 1;
}

int pt_lanes_get_adaptive(void)
{
    return atomic_load(&pool.adaptive);
}

int pt_lanes_set_cpus(long cpus)
{
    if (cpus < 0 || cpus > PT_MAX_LANES)
        return 0;
    atomic_store(&pool.cpus_set, (int)cpus);
    return 1;
}

int pt_lanes_get_cpus(void)
{
    pt_lanes_init_once();
    return cpus_now();
}

void pt_lanes_shutdown(void)
{
    pt_lanes_init_once();
    pthread_mutex_lock(&pool.cfg_mu);
    stop_workers_locked();
    pthread_mutex_unlock(&pool.cfg_mu);
}

void pt_lanes_format_config(pt_text *t)
{
    pt_text_put(t, "lanes %d\n", pt_lanes_get_threads());
    pt_text_put(t, "workers %d\n", pt_lanes_workers_running());
    pt_text_put(t, "inline_below %zu\n", pt_lanes_get_inline_below());
    pt_text_put(t, "worker_start_failures %lu\n", pt_lanes_start_failures());
    pt_text_put(t, "adaptive %d\n", pt_lanes_get_adaptive());
    pt_text_put(t, "cpus %d\n", pt_lanes_get_cpus());
}

/* ---- posted batches: submit without working, collect later -------------
 *
 * pt_lanes_post() links a heap batch into the pool and wakes workers, but
 * the caller claims nothing: it may go and do other things (an ASYNC job
 * pauses). Workers take slots 0..slots-1. The last worker to let go of the
 * batch calls notify under the pool mutex; by then every claimed job has
 * finished, and since only workers claim, every job has. pt_lanes_collect()
 * is the caller's return: it claims whatever is still unclaimed (with a
 * free slot, else it leaves the rest to the workers that hold them), waits
 * until no worker holds the batch, and frees it. So a posted batch always
 * completes once collected, whatever the workers are doing (invariant 5).
 */
int pt_lanes_can_post(int n)
{
    int free_now;

    if (n <= 1 || atomic_load_explicit(&exiting, memory_order_relaxed))
        return 0;
    pt_lanes_init_once();
    if (atomic_load_explicit(&pool.lanes, memory_order_relaxed) <= 1 || ensure_workers() == 0)
        return 0;
    /* free: no other batch waits for a worker */
    pthread_mutex_lock(&pool.mu);
    free_now = 1;
    for (pt_batch *b = pool.head; b != NULL; b = b->next_b)
        if (atomic_load_explicit(&b->next, memory_order_relaxed) < b->n) {
            free_now = 0;
            break;
        }
    pthread_mutex_unlock(&pool.mu);
    return free_now;
}

pt_batch *pt_lanes_post(pt_job_fn job, void *arg, int n, const size_t *sizes, const int *counts,
    int slots, void (*notify)(void *), void *notify_arg)
{
    pt_batch *b;
    int i, workers;

    if (!pt_lanes_can_post(n) || slots < 1 || (workers = ensure_workers()) == 0
        || (b = calloc(1, sizeof(*b))) == NULL)
        return NULL;
    b->job = job;
    b->arg = arg;
    b->sizes = sizes;
    b->counts = counts;
    b->n = n;
    for (i = 0; i < n; i++)
        b->records += counts != NULL ? counts[i] : 1;
    b->slots = slots;
    b->slots_used = 0; /* the caller works only in pt_lanes_collect */
    b->notify = notify;
    b->notify_arg = notify_arg;
    b->t0 = pt_ticks();
    pthread_mutex_lock(&pool.mu);
    b->prev_b = pool.tail;
    if (pool.tail != NULL)
        pool.tail->next_b = b;
    else
        pool.head = b;
    pool.tail = b;
    b->listed = 1;
    pthread_mutex_unlock(&pool.mu);
    atomic_fetch_add(&pool.seq, 1);
    if (atomic_load(&pool.sleepers) > 0) {
        int want = n < slots ? n : slots;

        pt_stats_event(PT_EV_WAKE);
        futex(&pool.seq, FUTEX_WAKE, (uint32_t)(want < workers ? want : workers));
    }
    return b;
}

int pt_lanes_posted_done(pt_batch *b)
{
    int done;

    pthread_mutex_lock(&pool.mu);
    done = atomic_load(&b->next) >= b->n && atomic_load(&b->refs) == 0;
    pthread_mutex_unlock(&pool.mu);
    return done;
}

int pt_lanes_collect(pt_batch *b)
{
    int failed, slot;

    if (atomic_load_explicit(&b->next, memory_order_relaxed) < b->n
        && (slot = atomic_fetch_add(&b->slots_used, 1)) < b->slots)
        work_as(b, slot, 0, NULL);
    /* every slot held by a worker: they claim until nothing is left */
    wait_released(b);
    failed = atomic_load(&b->failed);
    pt_stats_batch(b->records, 0, failed != 0, pt_ticks() - b->t0);
    free(b);
    return failed;
}
