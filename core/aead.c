/*
 * aead.c - AEAD pipes on copies of one keyed context (see pt_aead.h).
 *
 * Each pipe keeps its own EVP_CIPHER_CTX of OpenSSL's implementation for
 * the whole operation (the GHASH / Poly1305 state runs across updates), a
 * copy of the keyed base made once per key. An update is a batch of jobs,
 * one per pipe, on pt_lanes_run: pipe i is read only from io[i].in and
 * written only to io[i].out, by exactly one lane (invariant 3).
 */
#include "pt_aead.h"
#include "pt_async.h"
#include "pt_guard.h"
#include "pt_lanes.h"
#include "pt_stats.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <limits.h>
#include <string.h>

#define CHUNK (1 << 30) /* EVP_CipherUpdate takes an int length */

/* Pipe i keyed like base: copied only when the key changed. */
static int ensure_pipe(pt_aead *a, int i)
{
    if (a->pipe[i] != NULL && a->gen[i] == a->key_gen)
        return 1;
    if (a->pipe[i] == NULL && (a->pipe[i] = EVP_CIPHER_CTX_new()) == NULL)
        return 0;
    if (!EVP_CIPHER_CTX_copy(a->pipe[i], a->base))
        return 0;
    a->gen[i] = a->key_gen;
    return 1;
}

static void forget_regions(pt_aead *a)
{
    int i;

    for (i = 0; i < PT_MAX_PIPES; i++)
        a->n_regions[i] = 0;
}

/* Every byte of plaintext the operation wrote, in every pipe. */
static void cleanse_regions(pt_aead *a)
{
    size_t r;
    int i;

    for (i = 0; i < PT_MAX_PIPES; i++) {
        for (r = 0; r < a->n_regions[i]; r++)
            OPENSSL_cleanse(a->regions[i][r].p, a->regions[i][r].len);
        a->n_regions[i] = 0;
    }
}

static int remember_region(pt_aead *a, int i, unsigned char *p, size_t len)
{
    if (len == 0)
        return 1;
    if (a->n_regions[i] == a->cap_regions[i]) {
        size_t cap = a->cap_regions[i] == 0 ? 4 : 2 * a->cap_regions[i];
        pt_aead_region *nr = OPENSSL_realloc(a->regions[i], cap * sizeof(*nr));

        if (nr == NULL)
            return 0;
        a->regions[i] = nr;
        a->cap_regions[i] = cap;
    }
    a->regions[i][a->n_regions[i]].p = p;
    a->regions[i][a->n_regions[i]++].len = len;
    return 1;
}

int pt_aead_start(pt_aead *a, int n, const unsigned char *const *iv, int enc)
{
    int i;

    a->n = 0;
    forget_regions(a);
    PT_ENSURE(a->base != NULL, fail, PT_R_NOT_INITIALISED, "pipeline without a key");
    PT_ENSURE(n >= 1 && n <= PT_MAX_PIPES, fail, PT_R_BAD_PIPELINE, "%d pipes, must be 1..%d",
        n, PT_MAX_PIPES);
    for (i = 0; i < n; i++) {
        PT_ENSURE(ensure_pipe(a, i), fail, PT_R_LANE_SETUP, "pipe context %d of %d", i + 1, n);
        PT_ENSURE(EVP_CipherInit_ex2(a->pipe[i], NULL, NULL, iv != NULL ? iv[i] : NULL, enc,
                      NULL),
            fail, PT_R_CIPHER_FAILED, "pipe %d of %d: setting the IV", i + 1, n);
    }
    a->n = n;
    a->enc = enc;
    a->finished = 0;
    a->counted = 0;
    return 1;
fail:
    return 0;
}

typedef struct {
    pt_aead *a;
    pt_aead_io *io;
} update_job;

/* One pipe's update, on whichever lane claims it. */
static int run_update(void *arg, int i, int slot)
{
    update_job *j = arg;
    pt_aead_io *io = &j->io[i];
    EVP_CIPHER_CTX *c = j->a->pipe[i];
    size_t done = 0;

    io->outl = 0;
    while (done < io->len) {
        size_t chunk = io->len - done < CHUNK ? io->len - done : CHUNK;
        int outl = 0;

        if (!EVP_CipherUpdate(c, io->out != NULL ? io->out + io->outl : NULL, &outl,
                io->in + done, (int)chunk)) {
            io->reason = PT_R_CIPHER_FAILED;
            return 1;
        }
        if (io->out != NULL)
            io->outl += (size_t)outl;
        done += chunk;
    }
    return 0;
}

static void raise_failed(const pt_aead_io *io, int n, const char *what)
{
    int i;

    for (i = 0; i < n; i++)
        if (io[i].reason != 0) {
            pt_err_raise(io[i].reason, "%s: pipe %d of %d", what, i + 1, n);
            return;
        }
    pt_err_raise(PT_R_CIPHER_FAILED, "%s of %d pipes", what, n);
}

/* An update of an ASYNC job, on the lanes while the job is paused: copies
 * of the pipes' input over the pt_aead's own buffer, worked in place. */
typedef struct pt_aead_parked {
    update_job job;
    pt_aead_io io[PT_MAX_PIPES];
    size_t sizes[PT_MAX_PIPES];
    unsigned char *scratch;
    size_t cap;
    size_t used; /* bytes of scratch the update holds */
    pt_batch *b; /* posted, not yet collected */
    pt_notify *nt;
} pt_aead_parked;

/* Collects the posted update; io: where the output goes (NULL: nowhere,
 * the job was abandoned). Returns the number of failed pipes. */
static int finish_parked(pt_aead *a, pt_aead_io *io)
{
    pt_aead_parked *p = a->parked;
    int i, failed;

    if (p == NULL || p->b == NULL)
        return 0;
    failed = pt_lanes_collect(p->b);
    p->b = NULL;
    pt_async_notify_put(p->nt);
    p->nt = NULL;
    for (i = 0; io != NULL && i < a->n; i++) {
        io[i].outl = p->io[i].outl;
        io[i].reason = p->io[i].reason;
        /* no output of a failed update reaches the caller */
        if (failed == 0 && io[i].out != NULL && io[i].outl > 0)
            memcpy(io[i].out, p->io[i].out, io[i].outl);
    }
    OPENSSL_cleanse(p->scratch, p->used); /* plaintext, one way or the other */
    p->used = 0;
    return failed;
}

static void free_parked(pt_aead *a)
{
    if (a->parked == NULL)
        return;
    finish_parked(a, NULL); /* an abandoned job's update: end it first */
    OPENSSL_clear_free(a->parked->scratch, a->parked->cap);
    OPENSSL_free(a->parked);
    a->parked = NULL;
}

/* The update inside an ASYNC job, with the lanes free: post it and pause.
 * Returns the number of failed pipes, or -1 when it cannot go that way
 * (nothing done: run it as usual). */
static int run_parked(pt_aead *a, pt_aead_io *io, const size_t *sizes, const int *counts,
    int width, size_t total)
{
    pt_aead_parked *p = a->parked;
    size_t off = 0;
    int i, n = a->n;

    if (total == 0 || !pt_lanes_can_post(n))
        return -1;
    if (p == NULL && (p = a->parked = OPENSSL_zalloc(sizeof(*p))) == NULL)
        return -1;
    if (p->cap < total) {
        unsigned char *buf = OPENSSL_malloc(total);

        if (buf == NULL)
            return -1;
        OPENSSL_clear_free(p->scratch, p->cap);
        p->scratch = buf;
        p->cap = total;
    }
    if ((p->nt = pt_async_notify_get()) == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        p->io[i] = io[i];
        p->io[i].in = p->scratch + off;
        if (io[i].out != NULL)
            p->io[i].out = p->scratch + off;
        if (io[i].len > 0)
            memcpy(p->scratch + off, io[i].in, io[i].len);
        off += io[i].len;
    }
    p->used = total;
    memcpy(p->sizes, sizes, sizeof(*sizes) * (size_t)n);
    p->job.a = a;
    p->job.io = p->io;
    /* counts is NULL or static: it outlives the posted batch, as sizes must */
    p->b = pt_lanes_post(run_update, &p->job, n, p->sizes, counts, width, pt_async_notify_fire,
        p->nt);
    if (p->b == NULL) {
        pt_async_notify_put(p->nt);
        p->nt = NULL;
        OPENSSL_cleanse(p->scratch, p->used);
        p->used = 0;
        return -1;
    }
    pt_async_wait(p->b, p->nt);
    return finish_parked(a, io);
}

/* The records of a decryption's first update written back to back from the
 * first one on: the caller decrypts into one buffer of its own (the reader's,
 * with the patched libssl) rather than into a slot per record. */
static void count_contiguous(const pt_aead_io *io, int n)
{
    int run = 1;

    while (run < n && io[run].out != NULL && io[run - 1].out != NULL
        && io[run].out == io[run - 1].out + io[run - 1].len)
        run++;
    if (run > 1)
        pt_stats_contiguous(run);
}

int pt_aead_update(pt_aead *a, pt_aead_io *io)
{
    static const int no_records[PT_MAX_PIPES] = { 0 };
    update_job job = { a, io };
    size_t sizes[PT_MAX_PIPES], total = 0;
    const int *counts = no_records;
    int i, n = a->n, width, failed;

    PT_ENSURE(n > 0 && !a->finished, fail, PT_R_NOT_INITIALISED,
        "pipeline update without a started operation");
    for (i = 0; i < n; i++) {
        PT_ENSURE(io[i].len == 0 || io[i].in != NULL, fail, PT_R_BAD_ARGUMENT,
            "pipe %d of %d: no input", i + 1, n);
        io[i].outl = 0;
        io[i].reason = 0;
        sizes[i] = io[i].len;
        total += io[i].len;
        /* the first update with output is the batch of n records (one per
         * pipe) in the statistics; the AAD and any later part of the same
         * records count as work, not as more records */
        if (io[i].out != NULL && !a->counted)
            counts = NULL;
    }
    if (counts == NULL) {
        a->counted = 1;
        if (!a->enc)
            count_contiguous(io, n);
    }
    width = pt_lanes_width(n, total);
    failed = -1;
    if (width > 1 && pt_async_wanted(a->enc))
        failed = run_parked(a, io, sizes, counts, width, total);
    if (failed < 0)
        failed = pt_lanes_run(run_update, &job, n, sizes, counts, width);
    if (!a->enc)
        for (i = 0; i < n; i++)
            if (io[i].out != NULL && !remember_region(a, i, io[i].out, io[i].outl)) {
                OPENSSL_cleanse(io[i].out, io[i].outl);
                if (failed == 0)
                    io[i].reason = PT_R_ALLOC_FAILED;
                failed++;
            }
    if (failed != 0) {
        raise_failed(io, n, "pipeline update");
        if (!a->enc)
            cleanse_regions(a);
        for (i = 0; i < n; i++)
            io[i].outl = 0;
        a->finished = 1; /* the operation is over: a new start is needed */
        return 0;
    }
    return 1;
fail:
    return 0;
}

int pt_aead_final(pt_aead *a, pt_aead_io *io)
{
    unsigned char none[16];
    int i, n = a->n, failed = 0;

    PT_ENSURE(n > 0 && !a->finished, fail, PT_R_NOT_INITIALISED,
        "pipeline final without a started operation");
    /* little work per pipe (the last GHASH / Poly1305 blocks and the tag):
     * the calling thread does them all */
    for (i = 0; i < n; i++) {
        int outl = 0;

        io[i].outl = 0;
        io[i].reason = 0;
        if (!EVP_CipherFinal_ex(a->pipe[i], io[i].out != NULL ? io[i].out : none, &outl)) {
            io[i].reason = a->enc ? PT_R_CIPHER_FAILED : PT_R_RECORD_REJECTED;
            failed++;
            continue;
        }
        io[i].outl = io[i].out != NULL ? (size_t)outl : 0;
        if (!a->enc && io[i].out != NULL && !remember_region(a, i, io[i].out, io[i].outl)) {
            OPENSSL_cleanse(io[i].out, io[i].outl);
            io[i].reason = PT_R_ALLOC_FAILED;
            failed++;
        }
    }
    a->finished = 1;
    OPENSSL_cleanse(none, sizeof(none));
    if (failed != 0) {
        /* OpenSSL's own reason (e.g. of the first pipe) stays queued below ours */
        pt_stats_failed();
        raise_failed(io, n, a->enc ? "pipeline final" : "pipeline final (tag check)");
        if (!a->enc)
            cleanse_regions(a);
        for (i = 0; i < n; i++)
            io[i].outl = 0;
        return 0;
    }
    forget_regions(a);
    return 1;
fail:
    return 0;
}

static int tag_params(pt_aead *a, unsigned char *const *tags, size_t tag_len, int set)
{
    int i;

    PT_ENSURE(a->n > 0, fail, PT_R_NOT_INITIALISED, "pipeline tags before the pipeline init");
    PT_ENSURE(tags != NULL, fail, PT_R_BAD_ARGUMENT, "pipeline tags: no array");
    PT_ENSURE(tag_len >= 1 && tag_len <= PT_AEAD_MAX_TAG, fail, PT_R_BAD_ARGUMENT,
        "pipeline tags of %zu bytes, must be 1..%d", tag_len, PT_AEAD_MAX_TAG);
    for (i = 0; i < a->n; i++) {
        OSSL_PARAM p[2] = { OSSL_PARAM_END, OSSL_PARAM_END };

        PT_ENSURE(tags[i] != NULL, fail, PT_R_BAD_ARGUMENT, "pipe %d of %d: no tag buffer",
            i + 1, a->n);
        p[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tags[i], tag_len);
        PT_ENSURE(set ? EVP_CIPHER_CTX_set_params(a->pipe[i], p)
                      : EVP_CIPHER_CTX_get_params(a->pipe[i], p),
            fail, PT_R_CIPHER_FAILED, "pipe %d of %d: %s the tag", i + 1, a->n,
            set ? "setting" : "getting");
    }
    return 1;
fail:
    return 0;
}

int pt_aead_set_tags(pt_aead *a, unsigned char *const *tags, size_t tag_len)
{
    PT_ENSURE(!a->enc, fail, PT_R_BAD_ARGUMENT, "pipeline tags are set when decrypting");
    return tag_params(a, tags, tag_len, 1);
fail:
    return 0;
}

int pt_aead_get_tags(pt_aead *a, unsigned char *const *tags, size_t tag_len)
{
    PT_ENSURE(a->enc && a->finished, fail, PT_R_BAD_ARGUMENT,
        "pipeline tags are read after an encryption's final");
    return tag_params(a, tags, tag_len, 0);
fail:
    return 0;
}

int pt_aead_dup(pt_aead *dst, const pt_aead *src)
{
    int i;

    memset(dst, 0, sizeof(*dst));
    dst->key_gen = src->key_gen;
    dst->n = src->n;
    dst->enc = src->enc;
    dst->finished = src->finished;
    if (src->base != NULL
        && ((dst->base = EVP_CIPHER_CTX_new()) == NULL
            || !EVP_CIPHER_CTX_copy(dst->base, src->base)))
        goto fail;
    for (i = 0; i < PT_MAX_PIPES; i++) {
        if (src->pipe[i] == NULL)
            continue;
        if ((dst->pipe[i] = EVP_CIPHER_CTX_new()) == NULL
            || !EVP_CIPHER_CTX_copy(dst->pipe[i], src->pipe[i]))
            goto fail;
        dst->gen[i] = src->gen[i];
        /* the copy owns none of the original's output buffers */
    }
    return 1;
fail:
    pt_aead_free(dst);
    pt_err_raise(PT_R_ALLOC_FAILED, "copying a pipeline context");
    return 0;
}

void pt_aead_free(pt_aead *a)
{
    int i;

    free_parked(a);
    for (i = 0; i < PT_MAX_PIPES; i++) {
        EVP_CIPHER_CTX_free(a->pipe[i]);
        OPENSSL_free(a->regions[i]);
    }
    EVP_CIPHER_CTX_free(a->base);
    memset(a, 0, sizeof(*a));
}
