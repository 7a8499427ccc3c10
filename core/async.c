/*
 * async.c - pausing an OpenSSL ASYNC job while the lanes run its batch
 * (see pt_async.h). The pattern is OpenSSL's engines/e_dasync.c: a wait fd
 * kept in the job's ASYNC_WAIT_CTX under a key of ours, with a cleanup
 * callback; the difference is that here the fd becomes readable when real
 * work on other cores is done, not at once.
 */
#include "pt_async.h"
#include "pt_clock.h"
#include "pt_stats.h"

#include <openssl/async.h>
#include <openssl/crypto.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct pt_notify {
    int fd; /* eventfd, non-blocking */
    _Atomic int refs; /* the wait context's, and one per batch in flight */
};

static const char notify_key[] = "pipetls"; /* ASYNC_WAIT_CTX key */

static void notify_unref(pt_notify *nt)
{
    if (atomic_fetch_sub(&nt->refs, 1) == 1) {
        close(nt->fd);
        OPENSSL_free(nt);
    }
}

/* ASYNC_WAIT_CTX cleanup: the wait context (its SSL) is going away. */
static void notify_cleanup(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD fd, void *custom)
{
    notify_unref(custom);
}

static _Atomic int async_pause = 2;

int pt_async_pause(void)
{
    return async_pause;
}

int pt_set_async_pause(long mode)
{
    if (mode < 0 || mode > 2)
        return 0;
    async_pause = (int)mode;
    return 1;
}

int pt_async_in_job(void)
{
    return ASYNC_get_current_job() != NULL;
}

int pt_async_wanted(int enc)
{
    return async_pause > (enc ? 0 : 1) && pt_async_in_job();
}

pt_notify *pt_async_notify_get(void)
{
    ASYNC_JOB *job = ASYNC_get_current_job();
    ASYNC_WAIT_CTX *wctx;
    OSSL_ASYNC_FD fd;
    void *custom = NULL;
    pt_notify *nt;

    if (job == NULL || (wctx = ASYNC_get_wait_ctx(job)) == NULL)
        return NULL;
    if (ASYNC_WAIT_CTX_get_fd(wctx, notify_key, &fd, &custom) && custom != NULL) {
        nt = custom;
        atomic_fetch_add(&nt->refs, 1);
        return nt;
    }
    if ((nt = OPENSSL_zalloc(sizeof(*nt))) == NULL)
        return NULL;
    if ((nt->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        OPENSSL_free(nt);
        return NULL;
    }
    atomic_init(&nt->refs, 2); /* the wait context's and the caller's */
    if (!ASYNC_WAIT_CTX_set_wait_fd(wctx, notify_key, nt->fd, nt, notify_cleanup)) {
        close(nt->fd);
        OPENSSL_free(nt);
        return NULL;
    }
    return nt;
}

void pt_async_notify_fire(void *arg)
{
    pt_notify *nt = arg;
    uint64_t one = 1;

    /* EAGAIN only when the counter is full: it is readable then anyway */
    while (write(nt->fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

void pt_async_wait(pt_batch *b, pt_notify *nt)
{
    uint64_t t0 = 0;

    pt_stats_event(PT_EV_ASYNC_POST);
    while (!pt_lanes_posted_done(b) && pt_lanes_workers_running() > 0) {
        int ok;

        if (t0 == 0)
            t0 = pt_ticks();
        pt_stats_event(PT_EV_ASYNC_PAUSE);
        ok = ASYNC_pause_job();
        if (ok)
            pt_stats_event(PT_EV_ASYNC_RESUME); /* the application resumed the job */
        if (!ok)
            break; /* cannot pause: pt_lanes_collect works the rest */
    }
    if (t0 != 0)
        pt_stats_async_paused(pt_ticks() - t0);
}

void pt_async_notify_put(pt_notify *nt)
{
    uint64_t v;

    while (read(nt->fd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
    notify_unref(nt);
}
