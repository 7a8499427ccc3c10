/*
 * pt_prov.h - the pipetls provider (OpenSSL >= 3.5): what its two files
 * share. prov.c is the provider (init, query, provider parameters,
 * configuration); cipher.c the cipher dispatch of each algorithm.
 *
 * Every algorithm delegates its single-shot functions to the default
 * provider's implementation of the same algorithm, loaded in a library
 * context of our own (so a fetch never finds us again), by calling that
 * implementation's own dispatch functions with the arguments we were given:
 * it behaves exactly like the default provider's (invariant 1). The
 * pipeline functions run the pipes on the core's lanes (core/pt_aead.h).
 */
#ifndef PT_PROV_H
#define PT_PROV_H

#include "pt_base.h"

#include <openssl/core.h>
#include <openssl/core_dispatch.h>

#define PP_N_ALGS 3
#define PP_MAX_PARAMS 64 /* entries of a merged gettable/settable table */

/* What we know of one algorithm before anything is loaded. */
typedef struct {
    const char *name; /* the first of OpenSSL's names, e.g. "AES-128-GCM" */
    size_t key_len, iv_len;
} pp_alg;

extern const pp_alg pp_algs[PP_N_ALGS];

/* The default provider's implementation of one algorithm: its dispatch
 * functions and the EVP_CIPHER fetched with "provider=default" (the pipe
 * contexts are EVP contexts of it). */
typedef struct {
    const pp_alg *alg;
    EVP_CIPHER *evp;
    OSSL_FUNC_cipher_newctx_fn *newctx;
    OSSL_FUNC_cipher_freectx_fn *freectx;
    OSSL_FUNC_cipher_dupctx_fn *dupctx;
    OSSL_FUNC_cipher_encrypt_init_fn *einit;
    OSSL_FUNC_cipher_decrypt_init_fn *dinit;
    OSSL_FUNC_cipher_update_fn *update;
    OSSL_FUNC_cipher_final_fn *final;
    OSSL_FUNC_cipher_cipher_fn *cipher;
    OSSL_FUNC_cipher_get_params_fn *get_params;
    OSSL_FUNC_cipher_get_ctx_params_fn *get_ctx_params;
    OSSL_FUNC_cipher_set_ctx_params_fn *set_ctx_params;
    OSSL_FUNC_cipher_gettable_params_fn *gettable_params;
    OSSL_FUNC_cipher_gettable_ctx_params_fn *gettable_ctx_params;
    OSSL_FUNC_cipher_settable_ctx_params_fn *settable_ctx_params;
    /* the default's context tables plus OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG */
    OSSL_PARAM gettable_ctx[PP_MAX_PARAMS];
    OSSL_PARAM settable_ctx[PP_MAX_PARAMS];
} pp_impl;

/* Our provider context (one per load: per OSSL_LIB_CTX). */
typedef struct {
    const OSSL_CORE_HANDLE *handle;
    OSSL_LIB_CTX *libctx; /* ours: holds the default provider alone */
    OSSL_PROVIDER *deflt;
    void *deflt_provctx;
    pp_impl impl[PP_N_ALGS];
} pp_provctx;

/* cipher.c: our algorithm table (OSSL_OP_CIPHER). */
extern const OSSL_ALGORITHM pp_ciphers[PP_N_ALGS + 1];
/* Fills pc->impl[] from the default provider loaded in pc->libctx. 1 or 0. */
int pp_impls_load(pp_provctx *pc);
/* Pipeline key schedules computed since the process began (invariant 8:
 * one per key, not per init). */
unsigned long pp_key_setups(void);
void pp_impls_free(pp_provctx *pc);

#endif
