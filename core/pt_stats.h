/*
 * pt_stats.h - counters of the pipetls core.
 *
 * Every thread that does record work owns its block of counters (see
 * stats.c); calls here are cheap and lock-free on the hot path. The text
 * (pt_stats_format) holds the counters only; the lines describing the
 * configuration (lanes, workers, ...) are written by the front, which knows
 * them, before it.
 */
#ifndef PT_STATS_H
#define PT_STATS_H

#include "pt_base.h"
#include "pt_text.h"

void pt_stats_batch(int records, int inlined, int failed, uint64_t wall_ticks);
void pt_stats_record(int records, size_t bytes, uint64_t crypto_ticks);
/* a batch of one job run inline: pt_stats_batch + pt_stats_record at once */
void pt_stats_single(int records, size_t bytes, uint64_t ticks, int failed);
void pt_stats_stream(size_t bytes); /* plain EVP use (not a TLS 1.2 record) */
/* records of a batch whose plaintext the lanes copy from the caller's
 * buffers (encrypted out of place; the patched libssl) */
void pt_stats_plaintext(int records);
/* records of a pipelined decryption whose plaintexts the caller placed back
 * to back, each right after the one before (the patched libssl decrypting
 * into the reader's buffer) */
void pt_stats_contiguous(int records);
void pt_stats_failed(void); /* a batch that failed after its updates (a tag) */
enum {
    PT_EV_WAKE, /* a caller woke sleeping workers */
    PT_EV_WORKER_SLEEP,
    PT_EV_CALLER_SLEEP,
    PT_EV_CALLER_WAKE, /* the last worker of a batch woke its sleeping caller */
    PT_EV_NARROWED, /* a batch went out with fewer slots: few free cores */
    PT_EV_WORKER_DECLINED, /* a worker left a batch alone: no free core */
    PT_EV_BACKOFF, /* batches on the lanes gained nothing: keep them a while */
    PT_EV_SPIN_STOP, /* an idle worker's spin lost its core to another thread */
    PT_EV_STALL, /* a batch on the lanes stalled: a lane holding a job was not running */
    PT_EV_ASYNC_POST, /* a batch inside an ASYNC job went to the lanes alone */
    PT_EV_ASYNC_PAUSE, /* ... and its job paused (once per ASYNC_pause_job) */
    PT_EV_ASYNC_RESUME /* ... and the application resumed it */
};
void pt_stats_event(int which); /* the pool's futex syscalls, adaptive lanes */
/* CBC-HMAC records encrypted one at a time, in 4-groups, in 8-groups */
enum { PT_CBC_ONE, PT_CBC_MB4, PT_CBC_MB8 };
void pt_stats_cbc_hmac(int path, int records);
/* Why a caller kept a batch that could have pipelined (adaptive lanes). */
enum {
    PT_KEPT_CALLERS, /* callers alone keep every core busy */
    PT_KEPT_WORKERS, /* callers and busy workers do */
    PT_KEPT_NO_GAIN /* recent batches on the lanes were no faster */
};
void pt_stats_kept(int records, int reason);
/* A caller waited this long for the workers after its own claims ran out. */
void pt_stats_wait(uint64_t ticks);
/* time from a job's first pause for a batch to the batch's end */
void pt_stats_async_paused(uint64_t ticks);
/* The ASYNC counters since the last reset (the text's async_batches,
 * async_pauses, async_resumes, async_paused_ns). */
typedef struct {
    uint64_t batches, pauses, resumes, paused_ns;
} pt_async_counts;
void pt_stats_async(pt_async_counts *out);
void pt_stats_set_lane(int lane); /* called once by each worker thread */
void pt_stats_reset(void);
void pt_stats_init(void); /* fork handler, clock origin; idempotent */
/* Appends the counters ("batches N" ... "lane.I.crypto_ns N", see
 * engine/pipetls.h) to t; lane rows are written for lanes 0..lanes-1 and
 * for any other lane that did records. */
void pt_stats_format(pt_text *t, int lanes);

#endif
