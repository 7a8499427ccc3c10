/*
 * cipher.c - the cipher dispatch of the pipetls provider.
 *
 * Single-shot use (init, update, final, cipher, parameters, dup, free):
 * every call goes to the default provider's own implementation of the
 * algorithm, on a context of its own ("inner"), with exactly the arguments
 * we were given - streaming, AAD, tags, TLS 1.2 AAD mode and IV generation
 * are OpenSSL's (invariant 1).
 *
 * The pipeline functions (OSSL_FUNC_CIPHER_PIPELINE_*): one streaming AEAD
 * operation per pipe on the core's AEAD pipes (core/pt_aead.h), run on the
 * lanes. The key schedule is computed once per key: a pipeline init with a
 * NULL key, or with the key already set, keeps it and only sets the IVs.
 * Tags travel through OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG (an array of
 * numpipes buffers). A tag failure in any pipe fails the final, and then no
 * pipe's plaintext is left: everything the operation wrote, in every pipe,
 * is zeroed and every outl is 0.
 */
#include "pt_prov.h"
#include "pt_aead.h"
#include "pt_guard.h"
#include "pt_stats.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <stdatomic.h>
#include <string.h>

const pp_alg pp_algs[PP_N_ALGS] = {
    { "AES-128-GCM", 16, 12 },
    { "AES-256-GCM", 32, 12 },
    { "ChaCha20-Poly1305", 32, 12 },
};

/* The default provider's get_params of each algorithm: it takes no
 * context, and it is the same function for every load of the provider. */
static OSSL_FUNC_cipher_get_params_fn *default_get_params[PP_N_ALGS];

static _Atomic unsigned long key_setups;

unsigned long pp_key_setups(void)
{
    return key_setups;
}

typedef struct {
    pp_provctx *pc;
    const pp_impl *impl;
    void *inner; /* the default provider's context: single-shot use */
    /* pipelines */
    pt_aead aead;
    unsigned char key[32]; /* to tell a re-init with the same key */
    int keyed;
    int enc;
} pp_ctx;

/* ---------------------------------------------------------- single-shot */

static void *newctx(pp_provctx *pc, int alg)
{
    pp_ctx *c;

    if (pc->impl[alg].newctx == NULL)
        return NULL;
    if ((c = OPENSSL_zalloc(sizeof(*c))) == NULL)
        return NULL;
    c->pc = pc;
    c->impl = &pc->impl[alg];
    if ((c->inner = c->impl->newctx(pc->deflt_provctx)) == NULL) {
        OPENSSL_free(c);
        return NULL;
    }
    return c;
}

static void pp_freectx(void *vctx)
{
    pp_ctx *c = vctx;

    if (c == NULL)
        return;
    c->impl->freectx(c->inner);
    pt_aead_free(&c->aead);
    OPENSSL_clear_free(c, sizeof(*c));
}

static void *pp_dupctx(void *vctx)
{
    pp_ctx *c = vctx, *d;

    if (c->impl->dupctx == NULL || (d = OPENSSL_malloc(sizeof(*d))) == NULL)
        return NULL;
    memcpy(d, c, sizeof(*d)); /* key, flags; the contexts below are made anew */
    if ((d->inner = c->impl->dupctx(c->inner)) == NULL) {
        OPENSSL_clear_free(d, sizeof(*d));
        return NULL;
    }
    if (!pt_aead_dup(&d->aead, &c->aead)) {
        c->impl->freectx(d->inner);
        OPENSSL_clear_free(d, sizeof(*d));
        return NULL;
    }
    return d;
}

static int pp_einit(void *vctx, const unsigned char *key, size_t keylen,
    const unsigned char *iv, size_t ivlen, const OSSL_PARAM params[])
{
    pp_ctx *c = vctx;

    return c->impl->einit(c->inner, key, keylen, iv, ivlen, params);
}

static int pp_dinit(void *vctx, const unsigned char *key, size_t keylen,
    const unsigned char *iv, size_t ivlen, const OSSL_PARAM params[])
{
    pp_ctx *c = vctx;

    return c->impl->dinit(c->inner, key, keylen, iv, ivlen, params);
}

static int pp_update(void *vctx, unsigned char *out, size_t *outl, size_t outsize,
    const unsigned char *in, size_t inl)
{
    pp_ctx *c = vctx;

    pt_stats_stream(inl);
    return c->impl->update(c->inner, out, outl, outsize, in, inl);
}

static int pp_final(void *vctx, unsigned char *out, size_t *outl, size_t outsize)
{
    pp_ctx *c = vctx;

    return c->impl->final(c->inner, out, outl, outsize);
}

static int pp_cipher(void *vctx, unsigned char *out, size_t *outl, size_t outsize,
    const unsigned char *in, size_t inl)
{
    pp_ctx *c = vctx;

    pt_stats_stream(in != NULL ? inl : 0);
    return c->impl->cipher(c->inner, out, outl, outsize, in, inl);
}

/* ------------------------------------------------------------ parameters */

static int pp_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    pp_ctx *c = vctx;
    OSSL_PARAM *p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG);

    if (p != NULL) {
        unsigned char **tags = NULL;
        size_t tag_len = 0;

        PT_ENSURE(OSSL_PARAM_get_octet_ptr(p, (const void **)&tags, &tag_len), fail,
            PT_R_BAD_ARGUMENT, "%s: not an octet pointer", OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG);
        if (!pt_aead_get_tags(&c->aead, tags, tag_len))
            return 0;
    }
    return c->impl->get_ctx_params(c->inner, params);
fail:
    return 0;
}

static int pp_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    pp_ctx *c = vctx;
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG);

    if (p != NULL) {
        unsigned char **tags = NULL;
        size_t tag_len = 0;

        PT_ENSURE(OSSL_PARAM_get_octet_ptr(p, (const void **)&tags, &tag_len), fail,
            PT_R_BAD_ARGUMENT, "%s: not an octet pointer", OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG);
        if (!pt_aead_set_tags(&c->aead, tags, tag_len))
            return 0;
    }
    return c->impl->set_ctx_params(c->inner, params);
fail:
    return 0;
}

/* ------------------------------------------------------------- pipelines */

static int pipeline_init(pp_ctx *c, const unsigned char *key, size_t keylen, size_t numpipes,
    const unsigned char **iv, size_t ivlen, const OSSL_PARAM params[], int enc)
{
    const pp_alg *alg = c->impl->alg;
    pt_aead *a = &c->aead;

    PT_ENSURE(numpipes >= 1 && numpipes <= PT_MAX_PIPES, fail, PT_R_BAD_PIPELINE,
        "%s: %zu pipes, must be 1..%d", alg->name, numpipes, PT_MAX_PIPES);
    PT_ENSURE(key == NULL || keylen == alg->key_len, fail, PT_R_BAD_ARGUMENT,
        "%s: key of %zu bytes, must be %zu", alg->name, keylen, alg->key_len);
    PT_ENSURE(iv == NULL || ivlen == alg->iv_len, fail, PT_R_BAD_ARGUMENT,
        "%s: IV of %zu bytes, must be %zu", alg->name, ivlen, alg->iv_len);
    if (iv != NULL) {
        size_t i;

        for (i = 0; i < numpipes; i++)
            PT_ENSURE(iv[i] != NULL, fail, PT_R_BAD_ARGUMENT, "%s: pipe %zu of %zu: no IV",
                alg->name, i + 1, numpipes);
    }
    PT_ENSURE(key != NULL || c->keyed, fail, PT_R_NOT_INITIALISED,
        "%s: pipeline init without a key", alg->name);
    /* the key schedule: once per key */
    if (key != NULL && !(c->keyed && CRYPTO_memcmp(c->key, key, keylen) == 0)) {
        c->keyed = 0;
        if (a->base == NULL)
            a->base = EVP_CIPHER_CTX_new();
        PT_ENSURE(a->base != NULL, fail, PT_R_ALLOC_FAILED, "%s: a context", alg->name);
        PT_ENSURE(EVP_CipherInit_ex2(a->base, c->impl->evp, key, NULL, enc, NULL), fail,
            PT_R_CIPHER_FAILED, "%s: setting the key", alg->name);
        memcpy(c->key, key, keylen);
        c->keyed = 1;
        a->key_gen++;
        key_setups++;
    }
    c->enc = enc;
    if (!pt_aead_start(a, (int)numpipes, iv, enc))
        return 0;
    if (params != NULL && !pp_set_ctx_params(c, params))
        return 0;
    return 1;
fail:
    return 0;
}

static int pp_pipeline_einit(void *vctx, const unsigned char *key, size_t keylen,
    size_t numpipes, const unsigned char **iv, size_t ivlen, const OSSL_PARAM params[])
{
    return pipeline_init(vctx, key, keylen, numpipes, iv, ivlen, params, 1);
}

static int pp_pipeline_dinit(void *vctx, const unsigned char *key, size_t keylen,
    size_t numpipes, const unsigned char **iv, size_t ivlen, const OSSL_PARAM params[])
{
    return pipeline_init(vctx, key, keylen, numpipes, iv, ivlen, params, 0);
}

static int check_pipes(pp_ctx *c, size_t numpipes, const char *what)
{
    PT_ENSURE(c->aead.n > 0, fail, PT_R_NOT_INITIALISED, "%s before a pipeline init", what);
    PT_ENSURE(numpipes == (size_t)c->aead.n, fail, PT_R_BAD_PIPELINE,
        "%s of %zu pipes, the init had %d", what, numpipes, c->aead.n);
    return 1;
fail:
    return 0;
}

static int pp_pipeline_update(void *vctx, size_t numpipes, unsigned char **out, size_t *outl,
    const size_t *outsize, const unsigned char **in, const size_t *inl)
{
    pp_ctx *c = vctx;
    pt_aead_io io[PT_MAX_PIPES];
    size_t i;

    if (!check_pipes(c, numpipes, "pipeline update"))
        return 0;
    PT_ENSURE(in != NULL && inl != NULL && outl != NULL, fail, PT_R_BAD_ARGUMENT,
        "pipeline update: in, inl and outl are needed");
    PT_ENSURE(out == NULL || outsize != NULL, fail, PT_R_BAD_ARGUMENT,
        "pipeline update: output buffers without their sizes");
    for (i = 0; i < numpipes; i++) {
        io[i].out = out != NULL ? out[i] : NULL;
        io[i].in = in[i];
        io[i].len = inl[i];
        if (out != NULL) {
            /* these ciphers write as many bytes as they read */
            PT_ENSURE(out[i] != NULL || inl[i] == 0, fail, PT_R_BAD_ARGUMENT,
                "pipeline update: pipe %zu of %zu has no output buffer", i + 1, numpipes);
            PT_ENSURE(outsize[i] >= inl[i], fail, PT_R_BAD_ARGUMENT,
                "pipeline update: pipe %zu of %zu: output of %zu bytes for %zu bytes of input",
                i + 1, numpipes, outsize[i], inl[i]);
        }
    }
    if (!pt_aead_update(&c->aead, io)) {
        for (i = 0; i < numpipes; i++)
            outl[i] = 0;
        return 0;
    }
    for (i = 0; i < numpipes; i++)
        outl[i] = io[i].outl;
    return 1;
fail:
    return 0;
}

static int pp_pipeline_final(void *vctx, size_t numpipes, unsigned char **out, size_t *outl,
    const size_t *outsize)
{
    pp_ctx *c = vctx;
    pt_aead_io io[PT_MAX_PIPES];
    size_t i;
    int ok;

    if (!check_pipes(c, numpipes, "pipeline final"))
        return 0;
    PT_ENSURE(outl != NULL, fail, PT_R_BAD_ARGUMENT, "pipeline final: outl is needed");
    memset(io, 0, sizeof(io));
    /* these ciphers write nothing at the final: out and outsize may be NULL */
    for (i = 0; i < numpipes; i++)
        io[i].out = out != NULL ? out[i] : NULL;
    ok = pt_aead_final(&c->aead, io);
    for (i = 0; i < numpipes; i++)
        outl[i] = io[i].outl;
    return ok;
fail:
    return 0;
}

/* --------------------------------------------------------- dispatch tables */

#define PP_ALGORITHM(idx, fn)                                                        \
    static void *fn##_newctx(void *provctx)                                          \
    {                                                                                \
        return newctx(provctx, idx);                                                 \
    }                                                                                \
    static int fn##_get_params(OSSL_PARAM params[])                                  \
    {                                                                                \
        return default_get_params[idx] != NULL && default_get_params[idx](params);   \
    }                                                                                \
    static const OSSL_PARAM *fn##_gettable_params(void *provctx)                     \
    {                                                                                \
        pp_provctx *pc = provctx;                                                    \
        return pc->impl[idx].gettable_params(pc->deflt_provctx);                     \
    }                                                                                \
    /* the default's context tables plus the pipeline tag (with or without     \
     * a context: EVP_CIPHER_gettable_ctx_params passes none) */                  \
    static const OSSL_PARAM *fn##_gettable_ctx_params(void *cctx, void *provctx)  \
    {                                                                            \
        return ((pp_provctx *)provctx)->impl[idx].gettable_ctx;                  \
    }                                                                            \
    static const OSSL_PARAM *fn##_settable_ctx_params(void *cctx, void *provctx)  \
    {                                                                            \
        return ((pp_provctx *)provctx)->impl[idx].settable_ctx;                  \
    }                                                                            \
    static const OSSL_DISPATCH fn##_functions[] = {                                  \
        { OSSL_FUNC_CIPHER_NEWCTX, (void (*)(void))fn##_newctx },                    \
        { OSSL_FUNC_CIPHER_FREECTX, (void (*)(void))pp_freectx },                    \
        { OSSL_FUNC_CIPHER_DUPCTX, (void (*)(void))pp_dupctx },                      \
        { OSSL_FUNC_CIPHER_ENCRYPT_INIT, (void (*)(void))pp_einit },                 \
        { OSSL_FUNC_CIPHER_DECRYPT_INIT, (void (*)(void))pp_dinit },                 \
        { OSSL_FUNC_CIPHER_UPDATE, (void (*)(void))pp_update },                      \
        { OSSL_FUNC_CIPHER_FINAL, (void (*)(void))pp_final },                        \
        { OSSL_FUNC_CIPHER_CIPHER, (void (*)(void))pp_cipher },                      \
        { OSSL_FUNC_CIPHER_GET_PARAMS, (void (*)(void))fn##_get_params },            \
        { OSSL_FUNC_CIPHER_GETTABLE_PARAMS, (void (*)(void))fn##_gettable_params },  \
        { OSSL_FUNC_CIPHER_GET_CTX_PARAMS, (void (*)(void))pp_get_ctx_params },      \
        { OSSL_FUNC_CIPHER_SET_CTX_PARAMS, (void (*)(void))pp_set_ctx_params },      \
        { OSSL_FUNC_CIPHER_GETTABLE_CTX_PARAMS,                                      \
            (void (*)(void))fn##_gettable_ctx_params },                              \
        { OSSL_FUNC_CIPHER_SETTABLE_CTX_PARAMS,                                      \
            (void (*)(void))fn##_settable_ctx_params },                              \
        { OSSL_FUNC_CIPHER_PIPELINE_ENCRYPT_INIT, (void (*)(void))pp_pipeline_einit }, \
        { OSSL_FUNC_CIPHER_PIPELINE_DECRYPT_INIT, (void (*)(void))pp_pipeline_dinit }, \
        { OSSL_FUNC_CIPHER_PIPELINE_UPDATE, (void (*)(void))pp_pipeline_update },    \
        { OSSL_FUNC_CIPHER_PIPELINE_FINAL, (void (*)(void))pp_pipeline_final },      \
        OSSL_DISPATCH_END                                                            \
    }

PP_ALGORITHM(0, aes128gcm);
PP_ALGORITHM(1, aes256gcm);
PP_ALGORITHM(2, chacha20poly1305);

/* OpenSSL's names (providers/implementations/include/prov/names.h), so a
 * fetch by any of them, or by NID, finds us under provider=pipetls */
const OSSL_ALGORITHM pp_ciphers[PP_N_ALGS + 1] = {
    { "AES-128-GCM:id-aes128-GCM:2.16.840.1.101.3.4.1.6", "provider=pipetls",
        aes128gcm_functions, "AES-128-GCM, pipelined on the pipetls lanes" },
    { "AES-256-GCM:id-aes256-GCM:2.16.840.1.101.3.4.1.46", "provider=pipetls",
        aes256gcm_functions, "AES-256-GCM, pipelined on the pipetls lanes" },
    { "ChaCha20-Poly1305", "provider=pipetls", chacha20poly1305_functions,
        "ChaCha20-Poly1305, pipelined on the pipetls lanes" },
    { NULL, NULL, NULL, NULL }
};

/* ------------------------------------ the default provider's implementations */

/* Is name the first of the colon-separated names? */
static int first_name_is(const char *names, const char *name)
{
    size_t n = strlen(name);

    return OPENSSL_strncasecmp(names, name, n) == 0 && (names[n] == '\0' || names[n] == ':');
}

/* Our table: the default's, then the pipeline tag (unless it has one). */
static int merge_params(OSSL_PARAM dst[PP_MAX_PARAMS], const OSSL_PARAM *src)
{
    size_t i;

    for (i = 0; src != NULL && src[i].key != NULL; i++) {
        if (i + 2 >= PP_MAX_PARAMS)
            return 0;
        dst[i] = src[i];
    }
    dst[i] = (OSSL_PARAM)OSSL_PARAM_END;
    if (OSSL_PARAM_locate(dst, OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG) == NULL) {
        dst[i++] = (OSSL_PARAM)OSSL_PARAM_octet_ptr(OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG, NULL, 0);
        dst[i] = (OSSL_PARAM)OSSL_PARAM_END;
    }
    return 1;
}

static void take_functions(pp_impl *m, const OSSL_DISPATCH *fns)
{
    for (; fns->function_id != 0; fns++) {
        switch (fns->function_id) {
        case OSSL_FUNC_CIPHER_NEWCTX:
            m->newctx = OSSL_FUNC_cipher_newctx(fns);
            break;
        case OSSL_FUNC_CIPHER_FREECTX:
            m->freectx = OSSL_FUNC_cipher_freectx(fns);
            break;
        case OSSL_FUNC_CIPHER_DUPCTX:
            m->dupctx = OSSL_FUNC_cipher_dupctx(fns);
            break;
        case OSSL_FUNC_CIPHER_ENCRYPT_INIT:
            m->einit = OSSL_FUNC_cipher_encrypt_init(fns);
            break;
        case OSSL_FUNC_CIPHER_DECRYPT_INIT:
            m->dinit = OSSL_FUNC_cipher_decrypt_init(fns);
            break;
        case OSSL_FUNC_CIPHER_UPDATE:
            m->update = OSSL_FUNC_cipher_update(fns);
            break;
        case OSSL_FUNC_CIPHER_FINAL:
            m->final = OSSL_FUNC_cipher_final(fns);
            break;
        case OSSL_FUNC_CIPHER_CIPHER:
            m->cipher = OSSL_FUNC_cipher_cipher(fns);
            break;
        case OSSL_FUNC_CIPHER_GET_PARAMS:
            m->get_params = OSSL_FUNC_cipher_get_params(fns);
            break;
        case OSSL_FUNC_CIPHER_GET_CTX_PARAMS:
            m->get_ctx_params = OSSL_FUNC_cipher_get_ctx_params(fns);
            break;
        case OSSL_FUNC_CIPHER_SET_CTX_PARAMS:
            m->set_ctx_params = OSSL_FUNC_cipher_set_ctx_params(fns);
            break;
        case OSSL_FUNC_CIPHER_GETTABLE_PARAMS:
            m->gettable_params = OSSL_FUNC_cipher_gettable_params(fns);
            break;
        case OSSL_FUNC_CIPHER_GETTABLE_CTX_PARAMS:
            m->gettable_ctx_params = OSSL_FUNC_cipher_gettable_ctx_params(fns);
            break;
        case OSSL_FUNC_CIPHER_SETTABLE_CTX_PARAMS:
            m->settable_ctx_params = OSSL_FUNC_cipher_settable_ctx_params(fns);
            break;
        }
    }
}

int pp_impls_load(pp_provctx *pc)
{
    const OSSL_ALGORITHM *algs;
    int no_cache = 0, i;

    algs = OSSL_PROVIDER_query_operation(pc->deflt, OSSL_OP_CIPHER, &no_cache);
    PT_ENSURE(algs != NULL, fail, PT_R_NOT_INITIALISED, "the default provider has no ciphers");
    for (i = 0; i < PP_N_ALGS; i++) {
        pp_impl *m = &pc->impl[i];
        const OSSL_ALGORITHM *a;

        m->alg = &pp_algs[i];
        for (a = algs; a->algorithm_names != NULL; a++)
            if (first_name_is(a->algorithm_names, m->alg->name))
                break;
        PT_ENSURE(a->algorithm_names != NULL, unquery, PT_R_NOT_INITIALISED,
            "the default provider has no %s", m->alg->name);
        take_functions(m, a->implementation);
        PT_ENSURE(m->newctx != NULL && m->freectx != NULL && m->einit != NULL
                && m->dinit != NULL && m->update != NULL && m->final != NULL
                && m->cipher != NULL && m->get_params != NULL && m->get_ctx_params != NULL
                && m->set_ctx_params != NULL && m->gettable_params != NULL
                && m->gettable_ctx_params != NULL && m->settable_ctx_params != NULL,
            unquery, PT_R_NOT_INITIALISED, "the default provider's %s lacks a function",
            m->alg->name);
        PT_ENSURE(merge_params(m->gettable_ctx, m->gettable_ctx_params(NULL, pc->deflt_provctx))
                && merge_params(m->settable_ctx,
                    m->settable_ctx_params(NULL, pc->deflt_provctx)),
            unquery, PT_R_NOT_INITIALISED, "%s: too many context parameters", m->alg->name);
        m->evp = EVP_CIPHER_fetch(pc->libctx, m->alg->name, "provider=default");
        PT_ENSURE(m->evp != NULL, unquery, PT_R_NOT_INITIALISED,
            "fetching the default provider's %s", m->alg->name);
        default_get_params[i] = m->get_params;
    }
    OSSL_PROVIDER_unquery_operation(pc->deflt, OSSL_OP_CIPHER, algs);
    return 1;
unquery:
    OSSL_PROVIDER_unquery_operation(pc->deflt, OSSL_OP_CIPHER, algs);
fail:
    return 0;
}

void pp_impls_free(pp_provctx *pc)
{
    int i;

    for (i = 0; i < PP_N_ALGS; i++) {
        EVP_CIPHER_free(pc->impl[i].evp);
        pc->impl[i].evp = NULL;
    }
}
