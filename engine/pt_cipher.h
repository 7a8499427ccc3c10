/*
 * pt_cipher.h - the EVP_CIPHER front of the pipetls ENGINE (cipher.c): one
 * EVP_CIPHER per family of the core, whose contexts hold a pt_ctx.
 */
#ifndef PT_CIPHER_H
#define PT_CIPHER_H

/* The ENGINE and the EVP_CIPHER_meth_* API are deprecated in 3.0; we mean it. */
#ifndef OPENSSL_SUPPRESS_DEPRECATED
#define OPENSSL_SUPPRESS_DEPRECATED
#endif

#include "pt_record.h"

/* The plaintext of each record of a pipelined TLS encryption, apart from its
 * input buffer: libssl with the pipetls patch series (0004) hands over the
 * caller's buffers to a cipher with the flag, so that the lanes, not libssl,
 * copy the plaintext into the records. Defined there as
 * EVP_CIPH_FLAG_PIPELINE_PLAINTEXT and EVP_CTRL_SET_PIPELINE_PLAINTEXT_BUFS;
 * stock OpenSSL (3.0 to 3.5) uses neither number. The values are the
 * patch's: were upstream to give these numbers other meanings, the engine
 * would have to follow its headers (the #ifdef). */
#ifdef EVP_CTRL_SET_PIPELINE_PLAINTEXT_BUFS
#define PT_CTRL_SET_PIPELINE_PLAINTEXT_BUFS EVP_CTRL_SET_PIPELINE_PLAINTEXT_BUFS
#define PT_CIPH_FLAG_PIPELINE_PLAINTEXT EVP_CIPH_FLAG_PIPELINE_PLAINTEXT
#else
#define PT_CTRL_SET_PIPELINE_PLAINTEXT_BUFS 0x2B
#define PT_CIPH_FLAG_PIPELINE_PLAINTEXT 0x10000000
#endif

/* What the EVP_CTRL_SET_PIPELINE_* ctrls and the TLS AADs after the first
 * set up for one pipelined cipher call: allocated by the first of them,
 * freed after the call, so an idle context does not hold it. */
typedef struct {
    unsigned char *out_bufs[PT_MAX_PIPES];
    unsigned char *in_bufs[PT_MAX_PIPES];
    size_t lens[PT_MAX_PIPES];
    const unsigned char *plain_bufs[PT_MAX_PIPES]; /* PT_CTRL_SET_PIPELINE_PLAINTEXT_BUFS */
    unsigned char aad[PT_MAX_PIPES][PT_TLS_AAD_LEN]; /* [0] unused: aad0 */
} pt_pipes;

/* State behind one EVP_CIPHER_CTX of ours (its cipher_data). */
typedef struct pt_ctx {
    pt_conn conn; /* what the core needs: family, keyed base, lanes */
    int enc;
    /* pipeline state, set by the EVP_CTRL_SET_PIPELINE_* ctrls */
    int n_out, n_in, n_len, n_plain;
    int n_aad;
    unsigned char aad0[PT_TLS_AAD_LEN]; /* the first TLS AAD (a lone record's) */
    pt_pipes *pipes; /* NULL outside a pipelined call's setup */
    int bad; /* a pipeline ctrl was refused: the next cipher call fails */
} pt_ctx;

/* OUT_OF_PLACE: take the caller's plaintext buffers (0 or 1; returns 0 for
 * anything else). */
int pt_cipher_set_out_of_place(long on);
int pt_cipher_out_of_place(void);

/* Builds the EVP_CIPHER we register for a family, or NULL when OpenSSL's
 * default provider does not offer the algorithm on this CPU. */
EVP_CIPHER *pt_cipher_new(const pt_family *f);
/* A fresh, unkeyed encrypting context of OpenSSL's own implementation of
 * the family (never an ENGINE's), or NULL; the caller frees it. */
EVP_CIPHER_CTX *pt_cipher_impl_ctx(const pt_family *f);

#endif
