/*
 * pt_aead.h - AEAD pipes: up to PT_MAX_PIPES independent streaming AEAD
 * operations (each with its own IV, AAD, data and tag) on copies of one
 * keyed context, the pipes of each call run on the lanes.
 *
 * This is the generic job behind a pipeline API that is not TLS records
 * (OpenSSL 3.5's EVP_CipherPipeline*, see provider/): no TLS AAD, no
 * explicit nonce, the caller gives every pipe's IV. What a front provides:
 *   - base: a keyed EVP_CIPHER_CTX (then owned here: pt_aead_free frees it) of OpenSSL's own implementation (from a
 *     provider), no IV needed; the pipe contexts are copies of it, made
 *     once per key (invariant 8: the key schedule is computed once, when
 *     the front keys base);
 *   - key_gen: bumped by the front whenever it re-keys base.
 * Then, per operation: pt_aead_start (IVs, direction), any number of
 * pt_aead_update (AAD when out is NULL, then data), pt_aead_set_tags
 * (decryption) before pt_aead_final, pt_aead_get_tags (encryption) after.
 *
 * Failures leave a reason on the calling thread's error queue (pt_guard.h),
 * whichever thread did the pipe's work. A decryption whose final fails in
 * any pipe (bad tag) leaves no plaintext in ANY pipe: every output byte
 * written since pt_aead_start, by the updates and the final, is cleansed
 * (the whole call fails, as a batch of records does: invariant 3). The
 * output buffers of the updates must therefore stay valid until the final.
 *
 * A pt_aead is used by one thread at a time; during a call each pipe
 * context is used by one lane.
 */
#ifndef PT_AEAD_H
#define PT_AEAD_H

#include "pt_base.h"

#include <openssl/evp.h>

#define PT_AEAD_MAX_TAG 16

/* The output a decryption wrote, to cleanse if its tag fails. */
typedef struct {
    unsigned char *p;
    size_t len;
} pt_aead_region;

typedef struct {
    EVP_CIPHER_CTX *base; /* keyed by the front; freed by pt_aead_free */
    uint32_t key_gen;
    int n; /* pipes of the current operation (0: none started) */
    int enc;
    int finished; /* pt_aead_final ran for this operation */
    /* an update of this operation with output counted its n records; the
     * others (AAD, a trailer after the data) count bytes and time only */
    int counted;
    EVP_CIPHER_CTX *pipe[PT_MAX_PIPES];
    uint32_t gen[PT_MAX_PIPES]; /* key_gen pipe[i] was copied at */
    /* decryption: output written per pipe since pt_aead_start */
    pt_aead_region *regions[PT_MAX_PIPES];
    size_t n_regions[PT_MAX_PIPES], cap_regions[PT_MAX_PIPES];
    /* an update of an ASYNC job on the lanes while the job is paused
     * (aead.c; NULL until the first one) */
    struct pt_aead_parked *parked;
} pt_aead;

/* One pipe's part of an update or the final. */
typedef struct {
    unsigned char *out; /* update: NULL for AAD */
    const unsigned char *in; /* update only */
    size_t len; /* update: bytes of in */
    size_t outl; /* bytes written to out */
    int reason; /* PT_R_* when this pipe failed */
} pt_aead_io;

/* Starts an operation of n pipes (1..PT_MAX_PIPES) in direction enc: the
 * pipe contexts are (re)copied from base when the key changed, then given
 * iv[i] (iv NULL: the direction only, IVs as they are). 1 or 0. */
int pt_aead_start(pt_aead *a, int n, const unsigned char *const *iv, int enc);
/* One update of every pipe of the operation: io[i].out NULL means io[i].in
 * is AAD. Runs on up to pt_lanes_width() lanes. 1 or 0 (then every pipe's
 * io[i].outl is 0 and, decrypting, all plaintext so far is cleansed).
 *
 * Inside an OpenSSL ASYNC job (SSL_MODE_ASYNC, pt_async_wanted()) an
 * update that would use the lanes while they are free is copied into a
 * buffer of the pt_aead, posted to the workers, and the job pauses until
 * they are done (core/async.c); then the output is copied back. The copy
 * makes a context freed while its job is paused safe: the workers never
 * touch the caller's buffers after the pause, and pt_aead_free finishes
 * such an update before it frees the pipe contexts. When the lanes are
 * busy the update runs as always, the caller working on it too. */
int pt_aead_update(pt_aead *a, pt_aead_io *io);
/* The final of every pipe (decryption: the tag checks). 1, or 0: then the
 * first failed pipe's reason is raised and, decrypting, every pipe's
 * plaintext of this operation is cleansed. */
int pt_aead_final(pt_aead *a, pt_aead_io *io);
/* Tags of every pipe: set (decryption, before the final) or get
 * (encryption, after it); tag_len 1..PT_AEAD_MAX_TAG. 1 or 0. */
int pt_aead_set_tags(pt_aead *a, unsigned char *const *tags, size_t tag_len);
int pt_aead_get_tags(pt_aead *a, unsigned char *const *tags, size_t tag_len);
/* dst (zeroed) becomes a copy of src, base and pipes included. 1 or 0. */
int pt_aead_dup(pt_aead *dst, const pt_aead *src);
/* Frees the pipe contexts and the base (an update still on the lanes for
 * a paused ASYNC job that will never be resumed is finished first). */
void pt_aead_free(pt_aead *a);

#endif
