/*
 * stats.c - statistics of the pipetls core.
 *
 * Every thread that does record work owns a cache-line-aligned block of
 * counters and is its only writer (relaxed atomics, no lock, no sharing on
 * the hot path). Readers sum all blocks. Blocks of exited threads are kept
 * (their counts still count) and reused by new threads of the same lane.
 * RESET_STATS does not touch other threads' counters: it records a baseline
 * that later readings subtract.
 */
#include "pt_stats.h"
#include "pt_clock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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
    C_PLAINTEXT, /* records whose plaintext the lanes read from the caller's buffer */
    C_CONTIGUOUS, /* decrypted records written back to back (the caller's buffer) */
    C_WAKE_CALLS,
    C_WORKER_SLEEPS,
    C_CALLER_SLEEPS,
    C_CALLER_WAKES,
    C_CBC_ONE, /* CBC-HMAC records encrypted one at a time (PT_CBC_ONE ...) */
    C_CBC_MB4,
    C_CBC_MB8,
    C_KEPT,
    C_KEPT_RECORDS,
    C_KEPT_CALLERS,
    C_KEPT_WORKERS,
    C_KEPT_NO_GAIN,
    C_NARROWED,
    C_DECLINED,
    C_BACKOFFS,
    C_SPIN_STOPS,
    C_STALLS,
    C_WAIT_NS,
    C_ASYNC_POSTED,
    C_ASYNC_PAUSES,
    C_ASYNC_RESUMES,
    C_ASYNC_PAUSED_NS,
    C_HIST, /* C_HIST + k for batches of k records, k = 1..32 */
    C_COUNT = C_HIST + PT_MAX_PIPES + 1
};

typedef struct pt_block {
    _Alignas(64) _Atomic uint64_t c[C_COUNT];
    int lane;
    int in_use;
    struct pt_block *next;
} pt_block;

typedef struct {
    uint64_t c[C_COUNT];
    uint64_t lane_records[PT_MAX_LANES];
    uint64_t lane_bytes[PT_MAX_LANES];
    uint64_t lane_crypto[PT_MAX_LANES];
} pt_totals;

static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
static pt_block *blocks;
static pt_totals baseline;
/* Each thread's block hangs on a pthread key, not a _Thread_local: this
 * library is dlopen()ed, so its thread-locals would live in dynamic TLS,
 * which ThreadSanitizer cannot follow across thread exit and reuse. */
static pthread_key_t release_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void release_block(void *p);

/* fork: the child must not inherit blocks_mu locked by another thread */
static void fork_prepare(void)
{
    pthread_mutex_lock(&blocks_mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&blocks_mu);
}

/* The child starts from zero: no counts of the parent's, and the blocks of
 * the parent's other threads (which the child does not have) are free for
 * the child's own lanes. */
static void fork_child(void)
{
    pt_block *b, *mine = pthread_getspecific(release_key);

    for (b = blocks; b != NULL; b = b->next) {
        memset((void *)b->c, 0, sizeof(b->c));
        if (b != mine)
            b->in_use = 0;
    }
    memset(&baseline, 0, sizeof(baseline));
    pthread_mutex_unlock(&blocks_mu);
}

static void make_key(void)
{
    pthread_key_create(&release_key, release_block);
}

static void init_stats(void)
{
    pt_clock_init();
    pthread_once(&key_once, make_key);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void pt_stats_init(void)
{
    pthread_once(&init_once, init_stats);
}

static void release_block(void *p)
{
    pt_block *b = p;

    pthread_mutex_lock(&blocks_mu);
    b->in_use = 0;
    pthread_mutex_unlock(&blocks_mu);
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
    if (records == 0) {
        /* work on records counted by another batch (a pipeline's AAD or
         * trailer): its jobs' bytes and time are counted, not a batch */
        if (failed)
            add(b, C_FAILED, 1);
        return;
    }
    add(b, C_BATCHES, 1);
    if (records > 1)
        add(b, C_PIPELINED, 1);
    if (inlined)
        add(b, C_INLINE, 1);
    if (failed)
        add(b, C_FAILED, 1);
    add(b, C_BATCH_NS, wall_ticks);
    if (records >= 1 && records <= PT_MAX_PIPES)
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
    if (records == 0) {
        /* see pt_stats_batch */
        add(b, C_BYTES, bytes);
        add(b, C_CRYPTO_NS, ticks);
        if (failed)
            add(b, C_FAILED, 1);
        return;
    }
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
    if (records >= 1 && records <= PT_MAX_PIPES)
        add(b, C_HIST + records, 1);
}

void pt_stats_failed(void)
{
    pt_block *b = block();

    if (b != NULL)
        add(b, C_FAILED, 1);
}

void pt_stats_stream(size_t bytes)
{
    pt_block *b = block();

    if (b == NULL)
        return;
    add(b, C_STREAM_CALLS, 1);
    add(b, C_STREAM_BYTES, bytes);
}

void pt_stats_plaintext(int records)
{
    pt_block *b = block();

    if (b != NULL)
        add(b, C_PLAINTEXT, (uint64_t)records);
}

void pt_stats_contiguous(int records)
{
    pt_block *b = block();

    if (b != NULL)
        add(b, C_CONTIGUOUS, (uint64_t)records);
}

void pt_stats_event(int which)
{
    pt_block *b = block();
    static const int counter[] = {
        [PT_EV_WAKE] = C_WAKE_CALLS,
        [PT_EV_WORKER_SLEEP] = C_WORKER_SLEEPS,
        [PT_EV_CALLER_SLEEP] = C_CALLER_SLEEPS,
        [PT_EV_CALLER_WAKE] = C_CALLER_WAKES,
        [PT_EV_NARROWED] = C_NARROWED,
        [PT_EV_WORKER_DECLINED] = C_DECLINED,
        [PT_EV_BACKOFF] = C_BACKOFFS,
        [PT_EV_SPIN_STOP] = C_SPIN_STOPS,
        [PT_EV_STALL] = C_STALLS,
        [PT_EV_ASYNC_POST] = C_ASYNC_POSTED,
        [PT_EV_ASYNC_PAUSE] = C_ASYNC_PAUSES,
        [PT_EV_ASYNC_RESUME] = C_ASYNC_RESUMES,
    };

    if (b == NULL || which < 0 || which > PT_EV_ASYNC_RESUME)
        return;
    add(b, counter[which], 1);
}

void pt_stats_cbc_hmac(int path, int records)
{
    pt_block *b = block();

    if (b == NULL || path < PT_CBC_ONE || path > PT_CBC_MB8)
        return;
    add(b, C_CBC_ONE + path, (uint64_t)records);
}

void pt_stats_kept(int records, int reason)
{
    pt_block *b = block();

    if (b == NULL || records == 0)
        return;
    add(b, C_KEPT, 1);
    add(b, C_KEPT_RECORDS, (uint64_t)records);
    add(b, reason == PT_KEPT_CALLERS ? C_KEPT_CALLERS
            : reason == PT_KEPT_WORKERS ? C_KEPT_WORKERS
                                        : C_KEPT_NO_GAIN,
        1);
}

void pt_stats_wait(uint64_t ticks)
{
    pt_block *b = block();

    if (b != NULL)
        add(b, C_WAIT_NS, ticks);
}

void pt_stats_async_paused(uint64_t ticks)
{
    pt_block *b = block();

    if (b != NULL)
        add(b, C_ASYNC_PAUSED_NS, ticks);
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
        if (b->lane >= 0 && b->lane < PT_MAX_LANES) {
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

void pt_stats_async(pt_async_counts *out)
{
    pt_totals t, base;

    sum(&t);
    pthread_mutex_lock(&blocks_mu);
    base = baseline;
    pthread_mutex_unlock(&blocks_mu);
    out->batches = t.c[C_ASYNC_POSTED] - base.c[C_ASYNC_POSTED];
    out->pauses = t.c[C_ASYNC_PAUSES] - base.c[C_ASYNC_PAUSES];
    out->resumes = t.c[C_ASYNC_RESUMES] - base.c[C_ASYNC_RESUMES];
    out->paused_ns = (uint64_t)((double)(t.c[C_ASYNC_PAUSED_NS] - base.c[C_ASYNC_PAUSED_NS])
        * pt_ns_per_tick());
}

void pt_stats_format(pt_text *out, int lanes)
{
    static const struct {
        const char *key;
        int c;
    } rows[] = {
        { "batches", C_BATCHES },
        { "pipelined_batches", C_PIPELINED },
        { "inline_batches", C_INLINE },
        { "records", C_RECORDS },
        { "bytes", C_BYTES },
        { "failed_batches", C_FAILED },
        { "crypto_ns", C_CRYPTO_NS },
        { "batch_ns", C_BATCH_NS },
        { "stream_calls", C_STREAM_CALLS },
        { "stream_bytes", C_STREAM_BYTES },
        { "plaintext_records", C_PLAINTEXT },
        { "contiguous_records", C_CONTIGUOUS },
        { "wake_calls", C_WAKE_CALLS },
        { "worker_sleeps", C_WORKER_SLEEPS },
        { "caller_sleeps", C_CALLER_SLEEPS },
        { "caller_wakes", C_CALLER_WAKES },
        { "cbc_hmac_stitched", C_CBC_ONE },
        { "cbc_hmac_mb4", C_CBC_MB4 },
        { "cbc_hmac_mb8", C_CBC_MB8 },
        { "batches_kept", C_KEPT },
        { "records_kept", C_KEPT_RECORDS },
        { "kept_busy_callers", C_KEPT_CALLERS },
        { "kept_busy_workers", C_KEPT_WORKERS },
        { "kept_no_gain", C_KEPT_NO_GAIN },
        { "batches_narrowed", C_NARROWED },
        { "worker_declines", C_DECLINED },
        { "backoffs", C_BACKOFFS },
        { "spin_stops", C_SPIN_STOPS },
        { "stalls", C_STALLS },
        { "caller_wait_ns", C_WAIT_NS },
        { "async_batches", C_ASYNC_POSTED },
        { "async_pauses", C_ASYNC_PAUSES },
        { "async_resumes", C_ASYNC_RESUMES },
        { "async_paused_ns", C_ASYNC_PAUSED_NS },
    };
    pt_totals t, base;
    size_t r;
    int i;
    double scale;

    sum(&t);
    pthread_mutex_lock(&blocks_mu);
    base = baseline;
    pthread_mutex_unlock(&blocks_mu);
    for (i = 0; i < C_COUNT; i++)
        t.c[i] -= base.c[i];
    scale = pt_ns_per_tick();
    t.c[C_CRYPTO_NS] = (uint64_t)((double)t.c[C_CRYPTO_NS] * scale);
    t.c[C_BATCH_NS] = (uint64_t)((double)t.c[C_BATCH_NS] * scale);
    t.c[C_WAIT_NS] = (uint64_t)((double)t.c[C_WAIT_NS] * scale);
    t.c[C_ASYNC_PAUSED_NS] = (uint64_t)((double)t.c[C_ASYNC_PAUSED_NS] * scale);
    for (i = 0; i < PT_MAX_LANES; i++) {
        t.lane_records[i] -= base.lane_records[i];
        t.lane_bytes[i] -= base.lane_bytes[i];
        t.lane_crypto[i] -= base.lane_crypto[i];
    }
    for (r = 0; r < sizeof(rows) / sizeof(rows[0]); r++)
        pt_text_put(out, "%s %llu\n", rows[r].key, (unsigned long long)t.c[rows[r].c]);
    for (i = 1; i <= PT_MAX_PIPES; i++)
        if (t.c[C_HIST + i] != 0)
            pt_text_put(out, "hist.%d %llu\n", i, (unsigned long long)t.c[C_HIST + i]);
    for (i = 0; i < PT_MAX_LANES; i++)
        if (i < lanes || t.lane_records[i] != 0) {
            pt_text_put(out, "lane.%d.records %llu\n", i, (unsigned long long)t.lane_records[i]);
            pt_text_put(out, "lane.%d.bytes %llu\n", i, (unsigned long long)t.lane_bytes[i]);
            pt_text_put(out, "lane.%d.crypto_ns %llu\n", i,
                (unsigned long long)((double)t.lane_crypto[i] * scale));
        }
}
