/*
 * pt_lanes.h - the process-wide pool of worker lanes.
 *
 * A batch is n independent jobs. pt_lanes_run() runs job(arg, i, slot) for
 * every i in 0..n-1, each index exactly once, by one thread; the calling
 * thread works too (invariant 5). slot (0..slots-1) names the thread's share
 * of the batch: no two threads run jobs of one batch with the same slot at
 * the same time, so a job may use per-slot state (a keyed lane context)
 * without locking. At most min(n, lanes, slots) slots are used;
 * pt_lanes_width() says how many a batch of this size will want, so the
 * caller prepares no more state than can run at once.
 */
#ifndef PT_LANES_H
#define PT_LANES_H

#include "pt_base.h"
#include "pt_text.h"

typedef int (*pt_job_fn)(void *arg, int index, int slot);

/* sizes[i]: bytes of job i; counts[i]: TLS records in job i (NULL: one
 * each), for the statistics. Returns the number of jobs that failed
 * (job != 0). */
int pt_lanes_run(pt_job_fn job, void *arg, int n, const size_t *sizes, const int *counts,
    int slots);
/* Slots a batch of n jobs and total bytes will use at most now (1 when it
 * will run in the calling thread alone). */
int pt_lanes_width(int n, size_t total);

/*
 * Submit without waiting, collect later (ASYNC jobs, see core/async.c).
 * pt_lanes_can_post(n): workers run and none is wanted by another batch.
 * pt_lanes_post() hands all n jobs to the workers (slots 0..slots-1) and
 * returns at once, or NULL when it cannot (run the batch with
 * pt_lanes_run then). notify(notify_arg) is called exactly once, from a
 * worker holding the pool mutex (keep it short: an eventfd write), when
 * the workers have finished with the batch. job, arg, sizes and counts
 * must stay valid until pt_lanes_collect(), which works what is left,
 * waits for the workers, frees the batch and returns the number of failed
 * jobs; every posted batch must be collected exactly once.
 * pt_lanes_posted_done(): notify has been called (nothing left to wait for).
 */
typedef struct pt_batch pt_batch;
int pt_lanes_can_post(int n);
pt_batch *pt_lanes_post(pt_job_fn job, void *arg, int n, const size_t *sizes, const int *counts,
    int slots, void (*notify)(void *), void *notify_arg);
int pt_lanes_posted_done(pt_batch *b);
int pt_lanes_collect(pt_batch *b);

int pt_lanes_set_threads(long lanes); /* 1..PT_MAX_LANES */
int pt_lanes_get_threads(void);
int pt_lanes_workers_running(void);
/* Worker threads that could not be started (pthread_create failed) since
 * the process began; after a failure no start is tried again until THREADS
 * changes (or after fork). */
unsigned long pt_lanes_start_failures(void);
int pt_lanes_set_inline_below(long bytes);
size_t pt_lanes_get_inline_below(void);
/* ADAPTIVE (1, default): workers help only where a core is free (see
 * lanes.c); 0: every batch that may pipeline goes to the lanes. */
int pt_lanes_set_adaptive(long on);
int pt_lanes_get_adaptive(void);
/* CPUS: the cores adaptive lanes may keep busy, 1..PT_MAX_LANES, or 0 (the
 * default) for the online CPUs the process may run on. */
int pt_lanes_set_cpus(long cpus);
int pt_lanes_get_cpus(void); /* in effect now */
void pt_lanes_shutdown(void);
/* The configuration lines a front's STATS and INFO texts begin with
 * ("lanes N", "workers N", "inline_below N", "worker_start_failures N",
 * "adaptive 0|1", "cpus N"). */
void pt_lanes_format_config(pt_text *t);
void pt_lanes_init_once(void);

#endif
