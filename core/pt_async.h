/*
 * pt_async.h - OpenSSL ASYNC jobs (SSL_MODE_ASYNC) and the lanes.
 *
 * When a pipelined batch arrives inside an ASYNC job, the batch is posted
 * to the lanes (pt_lanes_post) and the job pauses; the application's event
 * loop waits on an eventfd registered with the job's ASYNC_WAIT_CTX, which
 * the last worker of the batch makes readable. The eventfd is made once per
 * wait context (one per SSL object) and shared, by reference, with any
 * batch in flight: it stays open until both the wait context (its cleanup
 * callback) and the batch have let go, so a worker never writes to a
 * closed or reused descriptor.
 *
 * Both fronts use it: the engine for batches of TLS records (batch.c), the
 * provider for the data updates of a pipeline (aead.c).
 */
#ifndef PT_ASYNC_H
#define PT_ASYNC_H

#include "pt_lanes.h"

typedef struct pt_notify pt_notify;

/* Which batches pause (the fronts' ASYNC setting, one for the process):
 * 0 none, 1 encrypt batches only, 2 encrypt and decrypt (the default).
 * pt_set_async_pause: 0 when mode is not 0, 1 or 2. */
int pt_async_pause(void);
int pt_set_async_pause(long mode);
/* Inside an ASYNC job that can pause (ASYNC_get_current_job() != NULL). */
int pt_async_in_job(void);
/* A batch in direction enc may pause: the setting allows it and the
 * calling thread runs inside an ASYNC job. */
int pt_async_wanted(int enc);
/* The current job's notifier (made and registered on first use), with a
 * reference for the caller, or NULL (not in a job, no eventfd). */
pt_notify *pt_async_notify_get(void);
/* The pt_lanes_post notify callback: makes the eventfd readable. */
void pt_async_notify_fire(void *nt);
/* Pauses the current job until b is done (resumed early: pauses again),
 * or until it cannot pause any more. Counts pauses, resumes, time paused. */
void pt_async_wait(pt_batch *b, pt_notify *nt);
/* After the batch it was fired for is collected: empties the eventfd (so
 * the next pause waits again) and drops the caller's reference. */
void pt_async_notify_put(pt_notify *nt);

#endif
