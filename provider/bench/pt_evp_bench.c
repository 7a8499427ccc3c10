/*
 * pt_evp_bench.c - the timed loops of `pipetls bench --scenario evp`
 * (pybind/pipetls/bench/evp.py loads pipetls-evpbench.so with ctypes).
 *
 * Both sides of a pair run here, in C, so that neither is charged with the
 * cost of a Python loop (the stock side makes five EVP calls per message,
 * 32 times more than the pipeline side):
 *
 *   ptb_stock():    the default provider one message at a time, what a
 *                   caller without pipelines writes: EVP_CipherInit_ex (the
 *                   IV; the key schedule is kept), EVP_CipherUpdate (AAD),
 *                   EVP_CipherUpdate (data), [set tag], EVP_CipherFinal_ex,
 *                   [get tag] per message;
 *   ptb_pipeline(): one EVP_CipherPipeline{Encrypt,Decrypt}Init (the key,
 *                   kept by the provider), [set tags], Update (AAD), Update
 *                   (data), Final, [get tags] per batch of pipes;
 *   ptb_threads():  the control: ptb_stock's work split over `threads`
 *                   plain threads (pipes t, t + threads, ... on thread t,
 *                   its own context), each running all its batches without
 *                   waiting for the others - what the machine lets that
 *                   many threads do right now, with no pool, no batch
 *                   synchronisation and no pipeline API: the ceiling of any
 *                   pipelining on this machine at this moment.
 *
 * Each runs `batches` batches back to back and returns the elapsed
 * CLOCK_MONOTONIC nanoseconds through *ns. Every call's result is checked
 * (a failed call ends the run: 0 is returned and OpenSSL's error queue
 * holds why); the outputs are compared with each other by the caller,
 * outside the timed region. The contexts are prepared by the caller: `ctx`
 * of ptb_stock keyed for the algorithm, `ctx` of ptb_pipeline having run
 * one pipeline init with the cipher (so NULL fetches nothing here).
 *
 * Not part of the provider: a separate module, built beside it.
 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define PTB_EXPORT __attribute__((visibility("default")))
#define PTB_TAG 16

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The ABI version the Python side checks before it calls anything. */
PTB_EXPORT int ptb_version(void)
{
    return 1;
}

PTB_EXPORT int ptb_stock(EVP_CIPHER_CTX *ctx, int enc, int pipes,
    unsigned char *const *iv, unsigned char *const *aad, int aad_len,
    unsigned char *const *in, int len, unsigned char *const *out,
    unsigned char *const *tag, int batches, uint64_t *ns)
{
    uint64_t t0 = now_ns();
    int b, i, outl;

    for (b = 0; b < batches; b++)
        for (i = 0; i < pipes; i++) {
            if (!EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv[i], enc)
                || (aad_len > 0 && !EVP_CipherUpdate(ctx, NULL, &outl, aad[i], aad_len))
                || !EVP_CipherUpdate(ctx, out[i], &outl, in[i], len)
                || (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, PTB_TAG, tag[i]) <= 0)
                || !EVP_CipherFinal_ex(ctx, out[i] + outl, &outl)
                || (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, PTB_TAG, tag[i]) <= 0))
                return 0;
        }
    *ns = now_ns() - t0;
    return 1;
}

PTB_EXPORT int ptb_pipeline(EVP_CIPHER_CTX *ctx, int enc, int pipes,
    const unsigned char *key, size_t key_len,
    const unsigned char **iv, const unsigned char **aad, int aad_len,
    const unsigned char **in, int len, unsigned char **out,
    unsigned char **tag, int batches, uint64_t *ns)
{
    size_t aad_lens[EVP_MAX_PIPES], in_lens[EVP_MAX_PIPES], sizes[EVP_MAX_PIPES];
    size_t outl[EVP_MAX_PIPES], fin_sizes[EVP_MAX_PIPES];
    unsigned char *fin[EVP_MAX_PIPES];
    OSSL_PARAM tags[2];
    uint64_t t0;
    int b, i;

    if (pipes < 1 || pipes > EVP_MAX_PIPES)
        return 0;
    /* the arrays a caller keeps between batches */
    for (i = 0; i < pipes; i++) {
        aad_lens[i] = (size_t)aad_len;
        in_lens[i] = sizes[i] = (size_t)len;
        fin[i] = out[i] + len; /* these AEADs write everything at the update */
        fin_sizes[i] = 0;
    }
    tags[0] = OSSL_PARAM_construct_octet_ptr(OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG,
        (void **)&tag, PTB_TAG);
    tags[1] = OSSL_PARAM_construct_end();

    t0 = now_ns();
    for (b = 0; b < batches; b++) {
        int ok = enc ? EVP_CipherPipelineEncryptInit(ctx, NULL, key, key_len, (size_t)pipes, iv, 12)
                     : EVP_CipherPipelineDecryptInit(ctx, NULL, key, key_len, (size_t)pipes, iv, 12);

        if (!ok
            || (!enc && !EVP_CIPHER_CTX_set_params(ctx, tags))
            || (aad_len > 0 && !EVP_CipherPipelineUpdate(ctx, NULL, outl, NULL, aad, aad_lens))
            || !EVP_CipherPipelineUpdate(ctx, out, outl, sizes, in, in_lens)
            || !EVP_CipherPipelineFinal(ctx, fin, outl, fin_sizes)
            || (enc && !EVP_CIPHER_CTX_get_params(ctx, tags)))
            return 0;
    }
    *ns = now_ns() - t0;
    return 1;
}

typedef struct {
    EVP_CIPHER_CTX *ctx;
    int enc, pipes, aad_len, len, batches, ok;
    unsigned char *iv[EVP_MAX_PIPES], *aad[EVP_MAX_PIPES], *in[EVP_MAX_PIPES];
    unsigned char *out[EVP_MAX_PIPES], *tag[EVP_MAX_PIPES];
} share;

static void *run_share(void *arg)
{
    share *s = arg;
    uint64_t ns;

    s->ok = ptb_stock(s->ctx, s->enc, s->pipes, s->iv, s->aad, s->aad_len, s->in, s->len,
        s->out, s->tag, s->batches, &ns);
    return NULL;
}

PTB_EXPORT int ptb_threads(int threads, EVP_CIPHER_CTX *const *ctx, int enc, int pipes,
    unsigned char *const *iv, unsigned char *const *aad, int aad_len,
    unsigned char *const *in, int len, unsigned char *const *out,
    unsigned char *const *tag, int batches, uint64_t *ns)
{
    share sh[EVP_MAX_PIPES];
    pthread_t tid[EVP_MAX_PIPES];
    uint64_t t0;
    int t, i, started, ok = 1;

    if (threads < 1 || threads > pipes || pipes > EVP_MAX_PIPES)
        return 0;
    for (t = 0; t < threads; t++) {
        share *s = &sh[t];

        s->ctx = ctx[t];
        s->enc = enc;
        s->aad_len = aad_len;
        s->len = len;
        s->batches = batches;
        s->ok = 0;
        for (s->pipes = 0, i = t; i < pipes; i += threads, s->pipes++) {
            s->iv[s->pipes] = iv[i];
            s->aad[s->pipes] = aad[i];
            s->in[s->pipes] = in[i];
            s->out[s->pipes] = out[i];
            s->tag[s->pipes] = tag[i];
        }
    }
    t0 = now_ns();
    for (started = 1; started < threads; started++)
        if (pthread_create(&tid[started], NULL, run_share, &sh[started]) != 0)
            break;
    run_share(&sh[0]); /* the calling thread is thread 0 */
    for (t = 1; t < started; t++)
        pthread_join(tid[t], NULL);
    *ns = now_ns() - t0;
    for (t = 0; t < threads; t++)
        ok &= t < started && sh[t].ok;
    return ok;
}
