/*
 * stats.c - engine statistics.
 *
 * Every thread that does record work owns a cache-line-aligned block of
 * counters and is its only writer (relaxed atomics, no lock, no sharing on
 * the hot path). Readers sum all blocks. Blocks of exited threads are kept
 * (their counts still count) and reused by new threads of the same lane.
 * RESET_STATS does not touch other threads' counters: it records a baseline
 * that later readings subtract.
 */
#include "pt_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    C_BATCHES,
    C_PIPELINED,
    C_INLINE,
    C_RECORDS,
    C_BYTES,
    C_FAILED,
    C_CRYPTO_NS,
    C_BATCH_NS,
    C_STREAM_CALLS,
    C_STREAM_BYTES,
    C_WAKE_CALLS,
    C_WORKER_SLEEPS,
    C_CALLER_SLEEPS,
    C_HIST, /* C_HIST + k for batches of k records, k = 1..32 */
    C_COUNT = C_HIST + PIPETLS_MAX_PIPES + 1
};

typedef struct pt_block {
    _Alignas(64) _Atomic uint64_t c[C_COUNT];
    int lane;
    int in_use;
    struct pt_block *next;
} pt_block;

typedef struct {
    uint64_t c[C_COUNT];
    uint64_t lane_records[PIPETLS_MAX_LANES];
    uint64_t lane_bytes[PIPETLS_MAX_LANES];
    uint64_t lane_crypto[PIPETLS_MAX_LANES];
} pt_totals;

static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
static pt_block *blocks;
static pt_totals baseline;
/* Each thread's block hangs on a pthread key, not a _Thread_local: this
 * library is dlopen()ed, so its thread-locals would live in dynamic TLS,
 * which ThreadSanitizer cannot follow across thread exit and reuse. */
static pthread_key_t release_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

uint64_t pt_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Ticks: the time stamp counter where there is one (about 15 ns to read
 * against 50 ns for clock_gettime here: the single-record path reads it
 * twice per record), else nanoseconds. Counters keep ticks; the text shows
 * nanoseconds, converted with the ratio observed since the library loaded.
 */
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

/* fork: the child must not inherit blocks_mu locked by another thread */
static void fork_prepare(void)
{
    pthread_mutex_lock(&blocks_mu);
}

static void fork_release(void)
{
    pthread_mutex_unlock(&blocks_mu);
}

static void set_origin(void)
{
    origin_ns = pt_now_ns();
    origin_ticks = pt_ticks();
    pthread_atfork(fork_prepare, fork_release, fork_release);
}

void pt_stats_init(void)
{
    pthread_once(&origin_once, set_origin);
}

/* nanoseconds per tick, from the time since the origin (at least 2 ms) */
static double ns_per_tick(void)
{
    uint64_t ns, t;

    if (!HAVE_TSC)
        return 1.0;
    pt_stats_init();
    for (;;) {
        ns = pt_now_ns();
        t = pt_ticks();
        if (ns - origin_ns >= 2000000 && t > origin_ticks)
            return (double)(ns - origin_ns) / (double)(t - origin_ticks);
    }
}

static void release_block(void *p)
{
    pt_block *b = p;

    pthread_mutex_lock(&blocks_mu);
    b->in_use = 0;
    pthread_mutex_unlock(&blocks_mu);
}

static void make_key(void)
{
    pthread_key_create(&release_key, release_block);
}

/* This thread's block for lane `lane`: a free one of that lane, or new. */
static pt_block *block_lane(int lane)
{
    pt_block *b;

    pthread_once(&key_once, make_key);
    pthread_mutex_lock(&blocks_mu);
    for (b = blocks; b != NULL; b = b->next)
        if (!b->in_use && b->lane == lane)
            break;
    if (b == NULL) {
        b = aligned_alloc(64, sizeof(*b));
        if (b != NULL) {
            memset(b, 0, sizeof(*b));
            b->lane = lane;
            b->next = blocks;
            blocks = b;
        }
    }
    if (b != NULL)
        b->in_use = 1;
    pthread_mutex_unlock(&blocks_mu);
    if (b != NULL)
        pthread_setspecific(release_key, b);
    return b;
}

static pt_block *block(void)
{
    pt_block *b;

    pthread_once(&key_once, make_key);
    b = pthread_getspecific(release_key);
    return b != NULL ? b : block_lane(0); /* a calling thread: lane 0 */
}

static inline void add(pt_block *b, int i, uint64_t v)
{
    /* single writer: a relaxed load and store, no locked instruction */
    atomic_store_explicit(&b->c[i],
        atomic_load_explicit(&b->c[i], memory_order_relaxed) + v,
        memory_order_relaxed);
}

void pt_stats_set_lane(int lane)
{
    pt_block *old;

    pthread_once(&key_once, make_key);
    if ((old = pthread_getspecific(release_key)) != NULL)
        release_block(old);
    block_lane(lane);
}

void pt_stats_batch(int records, int inlined, int failed, uint64_t wall_ticks)
{
    pt_block *b = block();

    if (b == NULL)
        return;
    add(b, C_BATCHES, 1);
    if (records > 1)
        add(b, C_PIPELINED, 1);
    if (inlined)
        add(b, C_INLINE, 1);
    if (failed)
        add(b, C_FAILED, 1);
    add(b, C_BATCH_NS, wall_ticks);
    if (records >= 1 && records <= PIPETLS_MAX_PIPES)
        add(b, C_HIST + records, 1);
}

void pt_stats_record(int records, size_t bytes, uint64_t crypto_ticks)
{
    pt_block *b = block();

    if (b == NULL)
        return;
    add(b, C_RECORDS, (uint64_t)records);
    add(b, C_BYTES, bytes);
    add(b, C_CRYPTO_NS, crypto_ticks);
}

void pt_stats_single(int records, size_t bytes, uint64_t ticks, int failed)
{
    pt_block *b = block();

    if (b == NULL)
        return;
    add(b, C_BATCHES, 1);
    add(b, C_INLINE, 1);
    add(b, C_RECORDS, (uint64_t)records);
    add(b, C_BYTES, bytes);
    add(b, C_CRYPTO_NS, ticks);
    add(b, C_BATCH_NS, ticks);
    if (records > 1)
        add(b, C_PIPELINED, 1);
    if (failed)
        add(b, C_FAILED, 1);
    if (records >= 1 && records <= PIPETLS_MAX_PIPES)
        add(b, C_HIST + records, 1);
}

void pt_stats_stream(size_t bytes)
{
    pt_block *b = block();

    if (b == NULL)
        return;
    add(b, C_STREAM_CALLS, 1);
    add(b, C_STREAM_BYTES, bytes);
}

void pt_stats_event(int which)
{
    pt_block *b = block();

    if (b == NULL)
        return;
    add(b, which == PT_EV_WAKE ? C_WAKE_CALLS : which == PT_EV_WORKER_SLEEP ? C_WORKER_SLEEPS
                                                                           : C_CALLER_SLEEPS, 1);
}

static void sum(pt_totals *t)
{
    pt_block *b;
    int i;

    memset(t, 0, sizeof(*t));
    pthread_mutex_lock(&blocks_mu);
    for (b = blocks; b != NULL; b = b->next) {
        for (i = 0; i < C_COUNT; i++)
            t->c[i] += atomic_load_explicit(&b->c[i], memory_order_relaxed);
        if (b->lane >= 0 && b->lane < PIPETLS_MAX_LANES) {
            t->lane_records[b->lane] += atomic_load_explicit(&b->c[C_RECORDS], memory_order_relaxed);
            t->lane_bytes[b->lane] += atomic_load_explicit(&b->c[C_BYTES], memory_order_relaxed);
            t->lane_crypto[b->lane] += atomic_load_explicit(&b->c[C_CRYPTO_NS], memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&blocks_mu);
}

void pt_stats_reset(void)
{
    pt_totals t;

    sum(&t);
    pthread_mutex_lock(&blocks_mu);
    baseline = t;
    pthread_mutex_unlock(&blocks_mu);
}

/* snprintf into buf at *off, keeping count of the full length. */
static void put(char *buf, size_t len, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#include <stdarg.h>
static void put(char *buf, size_t len, size_t *off, const char *fmt, ...)
{
    va_list ap;
    int n;
    char *dst = NULL;
    size_t room = 0;

    if (buf != NULL && *off < len) {
        dst = buf + *off;
        room = len - *off;
    }
    va_start(ap, fmt);
    n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        *off += (size_t)n;
}

size_t pt_stats_format(char *buf, size_t len)
{
    pt_totals t, base;
    size_t off = 0;
    int i, lanes = pt_lanes_get_threads();
    double scale;

    sum(&t);
    pthread_mutex_lock(&blocks_mu);
    base = baseline;
    pthread_mutex_unlock(&blocks_mu);
    for (i = 0; i < C_COUNT; i++)
        t.c[i] -= base.c[i];
    scale = ns_per_tick();
    t.c[C_CRYPTO_NS] = (uint64_t)((double)t.c[C_CRYPTO_NS] * scale);
    t.c[C_BATCH_NS] = (uint64_t)((double)t.c[C_BATCH_NS] * scale);
    for (i = 0; i < PIPETLS_MAX_LANES; i++) {
        t.lane_records[i] -= base.lane_records[i];
        t.lane_bytes[i] -= base.lane_bytes[i];
        t.lane_crypto[i] -= base.lane_crypto[i];
    }
    if (buf != NULL && len > 0)
        buf[0] = '\0';
    put(buf, len, &off, "pipetls.stats 1\n");
    put(buf, len, &off, "lanes %d\n", lanes);
    put(buf, len, &off, "workers %d\n", pt_lanes_workers_running());
    put(buf, len, &off, "inline_below %zu\n", pt_lanes_get_inline_below());
    put(buf, len, &off, "batches %llu\n", (unsigned long long)t.c[C_BATCHES]);
    put(buf, len, &off, "pipelined_batches %llu\n", (unsigned long long)t.c[C_PIPELINED]);
    put(buf, len, &off, "inline_batches %llu\n", (unsigned long long)t.c[C_INLINE]);
    put(buf, len, &off, "records %llu\n", (unsigned long long)t.c[C_RECORDS]);
    put(buf, len, &off, "bytes %llu\n", (unsigned long long)t.c[C_BYTES]);
    put(buf, len, &off, "failed_batches %llu\n", (unsigned long long)t.c[C_FAILED]);
    put(buf, len, &off, "crypto_ns %llu\n", (unsigned long long)t.c[C_CRYPTO_NS]);
    put(buf, len, &off, "batch_ns %llu\n", (unsigned long long)t.c[C_BATCH_NS]);
    put(buf, len, &off, "stream_calls %llu\n", (unsigned long long)t.c[C_STREAM_CALLS]);
    put(buf, len, &off, "stream_bytes %llu\n", (unsigned long long)t.c[C_STREAM_BYTES]);
    put(buf, len, &off, "wake_calls %llu\n", (unsigned long long)t.c[C_WAKE_CALLS]);
    put(buf, len, &off, "worker_sleeps %llu\n", (unsigned long long)t.c[C_WORKER_SLEEPS]);
    put(buf, len, &off, "caller_sleeps %llu\n", (unsigned long long)t.c[C_CALLER_SLEEPS]);
    for (i = 1; i <= PIPETLS_MAX_PIPES; i++)
        if (t.c[C_HIST + i] != 0)
            put(buf, len, &off, "hist.%d %llu\n", i, (unsigned long long)t.c[C_HIST + i]);
    for (i = 0; i < PIPETLS_MAX_LANES; i++)
        if (i < lanes || t.lane_records[i] != 0) {
            put(buf, len, &off, "lane.%d.records %llu\n", i, (unsigned long long)t.lane_records[i]);
            put(buf, len, &off, "lane.%d.bytes %llu\n", i, (unsigned long long)t.lane_bytes[i]);
            put(buf, len, &off, "lane.%d.crypto_ns %llu\n", i,
                (unsigned long long)((double)t.lane_crypto[i] * scale));
        }
    return off;
}
