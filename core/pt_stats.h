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
void pt_stats_failed(void); /* a batch that failed after its updates (a tag) */
enum {
    PT_EV_WAKE, /* a caller woke sleeping workers */
    PT_EV_WORKER_SLEEP,
    PT_EV_CALLER_SLEEP,
    PT_EV_CALLER_WAKE /* the last worker of a batch woke its sleeping caller */
};
void pt_stats_event(int which); /* the pool's futex syscalls */
void pt_stats_set_lane(int lane); /* called once by each worker thread */
void pt_stats_reset(void);
void pt_stats_init(void); /* fork handler, clock origin; idempotent */
/* Appends the counters ("batches N" ... "lane.I.crypto_ns N", see
 * engine/pipetls.h) to t; lane rows are written for lanes 0..lanes-1 and
 * for any other lane that did records. */
void pt_stats_format(pt_text *t, int lanes);

#endif
