/*
 * pt_prov_test.c - the pipetls provider through EVP_CipherPipeline*,
 * against the default provider's single-shot ciphers.
 *
 *   pt_prov_test MODULE TEST...
 *     MODULE  path of pipetls-provider.so (loaded with THREADS=2)
 *     TEST    kat      1..32 pipes x lengths 0..65536, with/without AAD
 *             mix      random pipe counts, lengths, AADs, split updates
 *             neg      negative controls (each must fail; its control passes)
 *             rekey    re-init with the same / NULL / a new key
 *             stats    provider parameters and the lanes' statistics
 *             threads  16 threads, each running pipelines on its own contexts
 *             fork     pipelines in a child after the lanes ran in the parent
 *             dump     "vec ..." lines of pipelined seals (decrypted elsewhere)
 *             params   "param NAME VALUE" lines: threads, inline_below, async
 *             badconf  bad THREADS / INLINE_BELOW / ASYNC values fail the load
 *             async    pipelines inside OpenSSL ASYNC jobs: the job pauses
 *                      while the lanes work (ASYNC 2, 1, 0), the counters
 *                      agree with the pauses seen, no pause without a
 *                      worker (THREADS 1), a context freed while its job is
 *                      paused leaks no descriptor
 *             bench    32 x 16 KiB seals, ours against the default's loop
 *             quick    kat and mix with fewer cases (sanitizer builds)
 *     MODULE "--conf": the provider "pipetls" as openssl.cnf configures it
 * Prints one "ok NAME" / "FAIL NAME: why" line per test; exits 1 on any
 * failure.
 */
#include <openssl/async.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXP 32
#define TAG 16
#define IVLEN 12

static const char *const algs[] = { "AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305" };
static const size_t keylens[] = { 16, 32, 32 };
#define N_ALGS 3

static OSSL_PROVIDER *ours_prov, *default_prov;
static EVP_CIPHER *ours[N_ALGS], *deflt[N_ALGS];
static int quick;
static int failures;

static int fail(const char *test, const char *fmt, ...)
{
    va_list ap;

    printf("FAIL %s: ", test);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    ERR_print_errors_fp(stdout);
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------ buffers */

typedef struct {
    int n;
    unsigned char key[32];
    unsigned char *iv[MAXP];
    unsigned char *aad[MAXP];
    size_t aadl[MAXP];
    int with_aad;
    unsigned char *pt[MAXP], *ct[MAXP], *dec[MAXP];
    size_t len[MAXP];
    unsigned char *tag[MAXP], *ref_tag[MAXP];
    unsigned char *ref_ct[MAXP];
} batch;

static void *xmalloc(size_t n)
{
    void *p = malloc(n == 0 ? 1 : n);

    if (p == NULL) {
        perror("malloc");
        exit(2);
    }
    return p;
}

static void batch_alloc(batch *b, int n, const size_t *len, const size_t *aadl, int with_aad,
    size_t keylen)
{
    int i;

    memset(b, 0, sizeof(*b));
    b->n = n;
    b->with_aad = with_aad;
    RAND_bytes(b->key, (int)keylen);
    for (i = 0; i < n; i++) {
        b->len[i] = len[i];
        b->aadl[i] = with_aad ? aadl[i] : 0;
        b->iv[i] = xmalloc(IVLEN);
        RAND_bytes(b->iv[i], IVLEN);
        b->aad[i] = xmalloc(b->aadl[i]);
        if (b->aadl[i] > 0)
            RAND_bytes(b->aad[i], (int)b->aadl[i]);
        b->pt[i] = xmalloc(len[i]);
        if (len[i] > 0)
            RAND_bytes(b->pt[i], (int)len[i]);
        b->ct[i] = xmalloc(len[i]);
        b->ref_ct[i] = xmalloc(len[i]);
        b->dec[i] = xmalloc(len[i]);
        b->tag[i] = xmalloc(TAG);
        b->ref_tag[i] = xmalloc(TAG);
    }
}

static void batch_free(batch *b)
{
    int i;

    for (i = 0; i < b->n; i++) {
        free(b->iv[i]);
        free(b->aad[i]);
        free(b->pt[i]);
        free(b->ct[i]);
        free(b->ref_ct[i]);
        free(b->dec[i]);
        free(b->tag[i]);
        free(b->ref_tag[i]);
    }
}

/* ------------------------------------------------ the default, one by one */

static int ref_seal(int alg, batch *b)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int i, ok = 0, outl;

    for (i = 0; i < b->n; i++) {
        int total = 0;

        if (!EVP_EncryptInit_ex2(c, deflt[alg], b->key, b->iv[i], NULL))
            goto end;
        if (b->aadl[i] > 0 && !EVP_EncryptUpdate(c, NULL, &outl, b->aad[i], (int)b->aadl[i]))
            goto end;
        if (b->len[i] > 0) {
            if (!EVP_EncryptUpdate(c, b->ref_ct[i], &outl, b->pt[i], (int)b->len[i]))
                goto end;
            total = outl;
        }
        if (!EVP_EncryptFinal_ex(c, b->ref_ct[i] + total, &outl)
            || (size_t)(total + outl) != b->len[i]
            || !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TAG, b->ref_tag[i]))
            goto end;
    }
    ok = 1;
end:
    EVP_CIPHER_CTX_free(c);
    return ok;
}

/* ----------------------------------------------------- ours, pipelined */

static OSSL_PARAM tag_param(unsigned char **tags)
{
    static _Thread_local void *holder;

    holder = tags;
    return OSSL_PARAM_construct_octet_ptr(OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG, &holder, TAG);
}

/*
 * One pipelined operation on c: AAD (when the batch has it), the data in
 * `splits` updates, the final; enc: the tags are read after it, else set
 * before. key may be NULL (re-init keeping the key). Output: b->ct (enc)
 * or b->dec.
 */
static int pipe_run(EVP_CIPHER_CTX *c, int alg, batch *b, const unsigned char *key, int enc,
    int splits)
{
    unsigned char *out[MAXP], *tmp[MAXP];
    const unsigned char *in[MAXP];
    size_t inl[MAXP], outl[MAXP], outsize[MAXP], done[MAXP];
    OSSL_PARAM p[2] = { OSSL_PARAM_END, OSSL_PARAM_END };
    int i, s, n = b->n;
    size_t keylen = keylens[alg];
    /* A context in use is re-initialised with cipher NULL: with a cipher,
     * OpenSSL 3.5 resets the context after storing numpipes (the updates
     * would then see 0 pipes) and frees the provider context, key included. */
    const EVP_CIPHER *ciph = EVP_CIPHER_CTX_get0_cipher(c) != ours[alg] ? ours[alg] : NULL;

    if (ciph != NULL && EVP_CIPHER_CTX_get0_cipher(c) != NULL)
        EVP_CIPHER_CTX_reset(c); /* another algorithm: start afresh */

    if (enc ? !EVP_CipherPipelineEncryptInit(c, ciph, key, keylen, (size_t)n,
                  (const unsigned char **)b->iv, IVLEN)
            : !EVP_CipherPipelineDecryptInit(c, ciph, key, keylen, (size_t)n,
                  (const unsigned char **)b->iv, IVLEN))
        return 0;
    if (!enc) {
        p[0] = tag_param(b->tag);
        if (!EVP_CIPHER_CTX_set_params(c, p))
            return 0;
    }
    if (b->with_aad) {
        for (i = 0; i < n; i++) {
            in[i] = b->aad[i];
            inl[i] = b->aadl[i];
        }
        if (!EVP_CipherPipelineUpdate(c, NULL, outl, NULL, in, inl))
            return 0;
    }
    for (i = 0; i < n; i++)
        done[i] = 0;
    for (s = 0; s < splits; s++) {
        for (i = 0; i < n; i++) {
            size_t part = s == splits - 1 ? b->len[i] - done[i] : b->len[i] / splits;

            in[i] = (enc ? b->pt[i] : b->ct[i]) + done[i];
            inl[i] = part;
            out[i] = (enc ? b->ct[i] : b->dec[i]) + done[i];
            outsize[i] = b->len[i] - done[i];
        }
        if (!EVP_CipherPipelineUpdate(c, out, outl, outsize, in, inl))
            return 0;
        for (i = 0; i < n; i++) {
            if (outl[i] != inl[i])
                return 0;
            done[i] += outl[i];
        }
    }
    for (i = 0; i < n; i++) {
        tmp[i] = (enc ? b->ct[i] : b->dec[i]) + done[i];
        outsize[i] = 0;
    }
    if (!EVP_CipherPipelineFinal(c, tmp, outl, outsize))
        return 0;
    for (i = 0; i < n; i++)
        if (outl[i] != 0)
            return 0;
    if (enc) {
        p[0] = tag_param(b->tag);
        if (!EVP_CIPHER_CTX_get_params(c, p))
            return 0;
    }
    return 1;
}

/* Seal and open b with ours; compare with the default pipe by pipe. */
static int check_batch(const char *test, EVP_CIPHER_CTX *ec, EVP_CIPHER_CTX *dc, int alg,
    batch *b, int splits, const unsigned char *key)
{
    int i;

    if (!ref_seal(alg, b))
        return fail(test, "%s: the default provider's seal failed", algs[alg]);
    if (!pipe_run(ec, alg, b, key, 1, splits))
        return fail(test, "%s: pipelined seal of %d pipes failed", algs[alg], b->n);
    for (i = 0; i < b->n; i++) {
        if (memcmp(b->ct[i], b->ref_ct[i], b->len[i]) != 0)
            return fail(test, "%s: pipe %d of %d (%zu bytes): ciphertext differs", algs[alg],
                i + 1, b->n, b->len[i]);
        if (memcmp(b->tag[i], b->ref_tag[i], TAG) != 0)
            return fail(test, "%s: pipe %d of %d: tag differs", algs[alg], i + 1, b->n);
    }
    if (!pipe_run(dc, alg, b, key, 0, splits))
        return fail(test, "%s: pipelined open of %d pipes failed", algs[alg], b->n);
    for (i = 0; i < b->n; i++)
        if (memcmp(b->dec[i], b->pt[i], b->len[i]) != 0)
            return fail(test, "%s: pipe %d of %d: plaintext differs", algs[alg], i + 1, b->n);
    return 1;
}

static const size_t kat_lengths[] = { 0, 1, 15, 16, 17, 255, 16383, 16384, 65536 };
#define N_KAT (sizeof(kat_lengths) / sizeof(kat_lengths[0]))

static int test_kat(void)
{
    int alg, n, aad, cases = 0;
    size_t l;

    for (alg = 0; alg < N_ALGS; alg++) {
        EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new(), *dc = EVP_CIPHER_CTX_new();

        for (n = 1; n <= MAXP; n += quick ? 7 : 1)
            for (l = 0; l < N_KAT; l++)
                for (aad = 0; aad <= 1; aad++) {
                    size_t len[MAXP], aadl[MAXP];
                    batch b;
                    int i, ok;

                    for (i = 0; i < n; i++) {
                        len[i] = kat_lengths[l];
                        aadl[i] = 13 + (size_t)i;
                    }
                    batch_alloc(&b, n, len, aadl, aad, keylens[alg]);
                    ok = check_batch("kat", ec, dc, alg, &b, 1, b.key);
                    batch_free(&b);
                    if (!ok) {
                        printf("  (case: %d pipes of %zu bytes, aad %d)\n", n, kat_lengths[l], aad);
                        return 0;
                    }
                    cases++;
                }
        EVP_CIPHER_CTX_free(ec);
        EVP_CIPHER_CTX_free(dc);
    }
    printf("  kat: %d cases\n", cases);
    return 1;
}

static size_t rnd(size_t below)
{
    unsigned int r;

    RAND_bytes((unsigned char *)&r, sizeof(r));
    return below == 0 ? 0 : r % below;
}

static int test_mix(void)
{
    int alg, round, rounds = quick ? 10 : 60;
    EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new(), *dc = EVP_CIPHER_CTX_new();

    for (round = 0; round < rounds; round++) {
        size_t len[MAXP], aadl[MAXP];
        batch b;
        int i, n = 1 + (int)rnd(MAXP), ok, splits = 1 + (int)rnd(3);

        alg = (int)rnd(N_ALGS);
        for (i = 0; i < n; i++) {
            len[i] = rnd(4) == 0 ? kat_lengths[rnd(N_KAT)] : rnd(70000);
            aadl[i] = rnd(3) == 0 ? 0 : rnd(600);
        }
        batch_alloc(&b, n, len, aadl, (int)rnd(2), keylens[alg]);
        /* a new context now and then, else one keyed once per round */
        ok = check_batch("mix", ec, dc, alg, &b, splits, b.key);
        batch_free(&b);
        if (!ok) {
            printf("  (round %d: %d pipes, %d updates)\n", round, n, splits);
            return 0;
        }
    }
    EVP_CIPHER_CTX_free(ec);
    EVP_CIPHER_CTX_free(dc);
    printf("  mix: %d rounds\n", rounds);
    return 1;
}

/* ----------------------------------------------------------- rekeying */

static unsigned long key_setups(void)
{
    unsigned long n = 0;
    OSSL_PARAM p[2] = { OSSL_PARAM_END, OSSL_PARAM_END };

    p[0] = OSSL_PARAM_construct_ulong("key_setups", &n);
    return OSSL_PROVIDER_get_params(ours_prov, p) ? n : (unsigned long)-1;
}

static int test_rekey(void)
{
    int alg;

    for (alg = 0; alg < N_ALGS; alg++) {
        EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new(), *dc = EVP_CIPHER_CTX_new();
        size_t len[MAXP], aadl[MAXP];
        unsigned char key0[32];
        batch b;
        int i, ok = 1, round;

        for (i = 0; i < MAXP; i++) {
            len[i] = 1000 + (size_t)i;
            aadl[i] = 13;
        }
        batch_alloc(&b, 8, len, aadl, 1, keylens[alg]);
        memcpy(key0, b.key, sizeof(key0));
        /* first with the key, then with NULL (kept), then the same key
         * again: one key schedule per context (invariant 8) */
        for (round = 0; ok && round < 3; round++) {
            unsigned long before = key_setups();

            RAND_bytes(b.iv[0], IVLEN); /* fresh IVs each time */
            ok = check_batch("rekey", ec, dc, alg, &b, 1, round == 1 ? NULL : b.key);
            if (ok && key_setups() - before != (round == 0 ? 2 : 0))
                ok = fail("rekey", "%s: round %d computed %lu key schedules", algs[alg], round,
                    key_setups() - before);
        }
        /* a different key on the same contexts: one schedule each */
        if (ok) {
            unsigned long before = key_setups();

            RAND_bytes(b.key, (int)keylens[alg]);
            ok = check_batch("rekey", ec, dc, alg, &b, 1, b.key);
            if (ok && key_setups() - before != 2)
                ok = fail("rekey", "%s: a new key computed %lu key schedules", algs[alg],
                    key_setups() - before);
        }
        /* a NULL key on a context that never had one must fail */
        if (ok) {
            EVP_CIPHER_CTX *fresh = EVP_CIPHER_CTX_new();

            if (EVP_CipherPipelineEncryptInit(fresh, ours[alg], NULL, 0, 1,
                    (const unsigned char **)b.iv, IVLEN))
                ok = fail("rekey", "%s: pipeline init without any key succeeded", algs[alg]);
            ERR_clear_error();
            EVP_CIPHER_CTX_free(fresh);
        }
        /* a copy of a keyed context works on its own */
        if (ok) {
            EVP_CIPHER_CTX *cp = EVP_CIPHER_CTX_new();

            if (!EVP_CIPHER_CTX_copy(cp, ec))
                ok = fail("rekey", "%s: EVP_CIPHER_CTX_copy failed", algs[alg]);
            else
                ok = check_batch("rekey", cp, dc, alg, &b, 2, NULL);
            EVP_CIPHER_CTX_free(cp);
        }
        (void)key0;
        batch_free(&b);
        EVP_CIPHER_CTX_free(ec);
        EVP_CIPHER_CTX_free(dc);
        if (!ok)
            return 0;
    }
    return 1;
}

/* ---------------------------------------------------- negative controls */

static int err_has_pipetls(void)
{
    unsigned long e;
    int found = 0;

    while ((e = ERR_get_error()) != 0) {
        const char *lib = ERR_lib_error_string(e);

        if (lib != NULL && strcmp(lib, "pipetls") == 0)
            found = 1;
    }
    return found;
}

static int all_zero(const unsigned char *p, size_t n)
{
    size_t i;
    unsigned char acc = 0;

    for (i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* The provider's own dispatch, to call with what EVP would never pass. */
typedef struct {
    OSSL_FUNC_cipher_newctx_fn *newctx;
    OSSL_FUNC_cipher_freectx_fn *freectx;
    OSSL_FUNC_cipher_pipeline_encrypt_init_fn *einit;
    OSSL_FUNC_cipher_pipeline_update_fn *update;
    OSSL_FUNC_cipher_pipeline_final_fn *final;
} raw_fns;

static int raw_lookup(const char *name, raw_fns *r)
{
    int no_cache = 0;
    const OSSL_ALGORITHM *a = OSSL_PROVIDER_query_operation(ours_prov, OSSL_OP_CIPHER, &no_cache);
    const OSSL_DISPATCH *d;

    memset(r, 0, sizeof(*r));
    for (; a != NULL && a->algorithm_names != NULL; a++)
        if (strncmp(a->algorithm_names, name, strlen(name)) == 0)
            break;
    if (a == NULL || a->algorithm_names == NULL)
        return 0;
    for (d = a->implementation; d->function_id != 0; d++)
        switch (d->function_id) {
        case OSSL_FUNC_CIPHER_NEWCTX:
            r->newctx = OSSL_FUNC_cipher_newctx(d);
            break;
        case OSSL_FUNC_CIPHER_FREECTX:
            r->freectx = OSSL_FUNC_cipher_freectx(d);
            break;
        case OSSL_FUNC_CIPHER_PIPELINE_ENCRYPT_INIT:
            r->einit = OSSL_FUNC_cipher_pipeline_encrypt_init(d);
            break;
        case OSSL_FUNC_CIPHER_PIPELINE_UPDATE:
            r->update = OSSL_FUNC_cipher_pipeline_update(d);
            break;
        case OSSL_FUNC_CIPHER_PIPELINE_FINAL:
            r->final = OSSL_FUNC_cipher_pipeline_final(d);
            break;
        }
    return r->newctx && r->freectx && r->einit && r->update && r->final;
}

static int neg_tag(int alg)
{
    EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new(), *dc = EVP_CIPHER_CTX_new();
    size_t len[MAXP], aadl[MAXP];
    batch b;
    int i, bad, ok = 0;

    for (i = 0; i < 8; i++) {
        len[i] = 3000 + 100 * (size_t)i;
        aadl[i] = 13;
    }
    batch_alloc(&b, 8, len, aadl, 1, keylens[alg]);
    if (!check_batch("neg.tag", ec, dc, alg, &b, 1, b.key)) /* the control */
        goto end;
    for (bad = 0; bad < 8; bad += 7) {
        b.tag[bad][bad] ^= 1;
        for (i = 0; i < 8; i++)
            memset(b.dec[i], 0xAA, b.len[i]);
        if (pipe_run(dc, alg, &b, b.key, 0, 2)) {
            fail("neg.tag", "%s: a flipped tag in pipe %d of 8 was accepted", algs[alg], bad + 1);
            goto end;
        }
        if (!err_has_pipetls()) {
            fail("neg.tag", "%s: no pipetls reason on the error queue", algs[alg]);
            goto end;
        }
        /* documented: no pipe's plaintext is left, the good pipes' neither */
        for (i = 0; i < 8; i++)
            if (!all_zero(b.dec[i], b.len[i])) {
                fail("neg.tag", "%s: pipe %d of 8 kept output after the failed final (bad %d)",
                    algs[alg], i + 1, bad + 1);
                goto end;
            }
        b.tag[bad][bad] ^= 1;
        if (!pipe_run(dc, alg, &b, b.key, 0, 1)) { /* the same context recovers */
            fail("neg.tag", "%s: the restored tag was refused", algs[alg]);
            goto end;
        }
    }
    ok = 1;
end:
    batch_free(&b);
    EVP_CIPHER_CTX_free(ec);
    EVP_CIPHER_CTX_free(dc);
    return ok;
}

static int neg_sizes(int alg)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    unsigned char key[32] = { 1 }, iv[MAXP + 1][16], in[MAXP][64], out[MAXP][64];
    unsigned char *ivp[MAXP + 1], *outp[MAXP];
    const unsigned char *inp[MAXP];
    size_t inl[MAXP], outl[MAXP], outsize[MAXP];
    size_t kl = keylens[alg];
    int i, ok = 0;

    for (i = 0; i <= MAXP; i++) {
        memset(iv[i], i, sizeof(iv[i]));
        ivp[i] = iv[i];
    }
    for (i = 0; i < MAXP; i++) {
        inp[i] = in[i];
        outp[i] = out[i];
        inl[i] = 64;
        outsize[i] = 64;
    }
    memset(in, 7, sizeof(in));
    /* more pipes than the maximum */
    if (EVP_CipherPipelineEncryptInit(c, ours[alg], key, kl, MAXP + 1,
            (const unsigned char **)ivp, IVLEN)) {
        fail("neg.max", "%s: %d pipes accepted", algs[alg], MAXP + 1);
        goto end;
    }
    ERR_clear_error();
    /* control: the maximum itself */
    if (!EVP_CipherPipelineEncryptInit(c, ours[alg], key, kl, MAXP,
            (const unsigned char **)ivp, IVLEN)
        || !EVP_CipherPipelineUpdate(c, outp, outl, outsize, inp, inl)) {
        fail("neg.max", "%s: %d pipes refused", algs[alg], MAXP);
        goto end;
    }
    /* wrong IV lengths, then the control */
    if (EVP_CipherPipelineEncryptInit(c, ours[alg], key, kl, 4, (const unsigned char **)ivp, 16)
        || EVP_CipherPipelineEncryptInit(c, ours[alg], key, kl, 4, (const unsigned char **)ivp, 8)) {
        fail("neg.iv", "%s: a wrong IV length was accepted", algs[alg]);
        goto end;
    }
    if (!err_has_pipetls()) {
        fail("neg.iv", "%s: no pipetls reason on the error queue", algs[alg]);
        goto end;
    }
    /* a wrong key length */
    if (EVP_CipherPipelineEncryptInit(c, ours[alg], key, kl - 1, 4,
            (const unsigned char **)ivp, IVLEN)) {
        fail("neg.key", "%s: a wrong key length was accepted", algs[alg]);
        goto end;
    }
    ERR_clear_error();
    /* an output too small in one pipe, then the control */
    if (!EVP_CipherPipelineEncryptInit(c, ours[alg], key, kl, 4, (const unsigned char **)ivp,
            IVLEN)) {
        fail("neg.outsize", "%s: init refused", algs[alg]);
        goto end;
    }
    outsize[2] = 63;
    if (EVP_CipherPipelineUpdate(c, outp, outl, outsize, inp, inl)) {
        fail("neg.outsize", "%s: 63 bytes of output accepted for 64 of input", algs[alg]);
        goto end;
    }
    if (!err_has_pipetls()) {
        fail("neg.outsize", "%s: no pipetls reason on the error queue", algs[alg]);
        goto end;
    }
    outsize[2] = 64;
    if (!EVP_CipherPipelineEncryptInit(c, NULL, NULL, kl, 4, (const unsigned char **)ivp,
            IVLEN)
        || !EVP_CipherPipelineUpdate(c, outp, outl, outsize, inp, inl)
        || !EVP_CipherPipelineFinal(c, outp, outl, outsize)) {
        fail("neg.outsize", "%s: the control failed", algs[alg]);
        goto end;
    }
    /* tags set while encrypting */
    {
        unsigned char *tags[MAXP];
        OSSL_PARAM p[2] = { OSSL_PARAM_END, OSSL_PARAM_END };

        for (i = 0; i < 4; i++)
            tags[i] = out[i];
        p[0] = tag_param(tags);
        if (!EVP_CIPHER_CTX_get_params(c, p)) {
            fail("neg.tagdir", "%s: reading the tags after the final failed", algs[alg]);
            goto end;
        }
        if (EVP_CIPHER_CTX_set_params(c, p)) {
            fail("neg.tagdir", "%s: tags set on an encryption", algs[alg]);
            goto end;
        }
        ERR_clear_error();
    }
    ok = 1;
end:
    EVP_CIPHER_CTX_free(c);
    return ok;
}

/* What EVP never passes: pipe counts that disagree with the init. */
static int neg_counts(int alg)
{
    raw_fns r;
    void *ctx;
    unsigned char key[32] = { 2 }, iv[MAXP + 1][IVLEN], in[MAXP + 1][32], out[MAXP + 1][32];
    unsigned char *ivp[MAXP + 1], *outp[MAXP + 1];
    const unsigned char *inp[MAXP + 1];
    size_t inl[MAXP + 1], outl[MAXP + 1], outsize[MAXP + 1];
    int i, ok = 0;

    if (!raw_lookup(algs[alg], &r))
        return fail("neg.counts", "%s: the provider's dispatch was not found", algs[alg]);
    for (i = 0; i <= MAXP; i++) {
        ivp[i] = iv[i];
        inp[i] = in[i];
        outp[i] = out[i];
        inl[i] = outsize[i] = 32;
        memset(iv[i], i, IVLEN);
    }
    ctx = r.newctx(OSSL_PROVIDER_get0_provider_ctx(ours_prov));
    if (ctx == NULL)
        return fail("neg.counts", "%s: newctx failed", algs[alg]);
    if (r.update(ctx, 4, outp, outl, outsize, inp, inl)) {
        fail("neg.counts", "%s: update before any init accepted", algs[alg]);
        goto end;
    }
    if (r.einit(ctx, key, keylens[alg], MAXP + 1, (const unsigned char **)ivp, IVLEN, NULL)
        || r.einit(ctx, key, keylens[alg], 0, (const unsigned char **)ivp, IVLEN, NULL)) {
        fail("neg.counts", "%s: init with 0 or %d pipes accepted", algs[alg], MAXP + 1);
        goto end;
    }
    if (!r.einit(ctx, key, keylens[alg], 4, (const unsigned char **)ivp, IVLEN, NULL)) {
        fail("neg.counts", "%s: init with 4 pipes refused", algs[alg]);
        goto end;
    }
    if (r.update(ctx, 3, outp, outl, outsize, inp, inl)
        || r.update(ctx, 5, outp, outl, outsize, inp, inl)) {
        fail("neg.counts", "%s: an update with another pipe count than the init's accepted",
            algs[alg]);
        goto end;
    }
    if (!r.update(ctx, 4, outp, outl, outsize, inp, inl)) {
        fail("neg.counts", "%s: the control update failed", algs[alg]);
        goto end;
    }
    if (r.final(ctx, 5, outp, outl, outsize) || r.final(ctx, 3, outp, outl, outsize)) {
        fail("neg.counts", "%s: a final with another pipe count accepted", algs[alg]);
        goto end;
    }
    if (!err_has_pipetls()) {
        fail("neg.counts", "%s: no pipetls reason on the error queue", algs[alg]);
        goto end;
    }
    if (!r.final(ctx, 4, outp, outl, outsize)) {
        fail("neg.counts", "%s: the control final failed", algs[alg]);
        goto end;
    }
    if (r.update(ctx, 4, outp, outl, outsize, inp, inl)) {
        fail("neg.counts", "%s: an update after the final accepted", algs[alg]);
        goto end;
    }
    ERR_clear_error();
    ok = 1;
end:
    r.freectx(ctx);
    return ok;
}

static int test_neg(void)
{
    int alg;

    for (alg = 0; alg < N_ALGS; alg++) {
        if (!EVP_CIPHER_can_pipeline(ours[alg], 1) || !EVP_CIPHER_can_pipeline(ours[alg], 0))
            return fail("neg", "%s: EVP_CIPHER_can_pipeline is false for ours", algs[alg]);
        if (EVP_CIPHER_can_pipeline(deflt[alg], 1))
            return fail("neg", "%s: the default provider's can pipeline?", algs[alg]);
        if (!neg_tag(alg) || !neg_sizes(alg) || !neg_counts(alg))
            return 0;
    }
    ERR_clear_error();
    return 1;
}

/* ------------------------------------------------------------ statistics */

static int get_text(const char *key, char *buf, size_t len)
{
    OSSL_PARAM p[2] = { OSSL_PARAM_END, OSSL_PARAM_END };

    p[0] = OSSL_PARAM_construct_utf8_string(key, buf, len);
    return OSSL_PROVIDER_get_params(ours_prov, p);
}

static long stat_value(const char *text, const char *key)
{
    char pat[64];
    const char *at;

    snprintf(pat, sizeof(pat), "\n%s ", key);
    at = strstr(text, pat);
    return at == NULL ? -1 : atol(at + strlen(pat));
}

static int test_stats(void)
{
    static char text[65536];
    OSSL_PARAM p[4] = { OSSL_PARAM_END, OSSL_PARAM_END, OSSL_PARAM_END, OSSL_PARAM_END };
    int threads = 0, reset = 0;
    size_t inline_below = 0, len[MAXP], aadl[MAXP];
    EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new(), *dc = EVP_CIPHER_CTX_new();
    batch b;
    int i, ok;

    p[0] = OSSL_PARAM_construct_int("threads", &threads);
    p[1] = OSSL_PARAM_construct_size_t("inline_below", &inline_below);
    p[2] = OSSL_PARAM_construct_int("stats_reset", &reset);
    if (!OSSL_PROVIDER_get_params(ours_prov, p) || threads != 2 || inline_below != 8192
        || reset != 1)
        return fail("stats", "threads %d, inline_below %zu (the load asked 2 and 8192), reset %d",
            threads, inline_below, reset);
    for (i = 0; i < MAXP; i++) {
        len[i] = 16384;
        aadl[i] = 13;
    }
    batch_alloc(&b, MAXP, len, aadl, 1, keylens[1]);
    for (i = 0, ok = 1; ok && i < 20; i++)
        ok = check_batch("stats", ec, dc, 1, &b, 1, b.key);
    batch_free(&b);
    EVP_CIPHER_CTX_free(ec);
    EVP_CIPHER_CTX_free(dc);
    if (!ok)
        return 0;
    if (!get_text("stats", text, sizeof(text)))
        return fail("stats", "the stats parameter could not be read");
    if (strncmp(text, "pipetls.stats 1\nlanes 2\n", 24) != 0)
        return fail("stats", "unexpected start of the text: %.60s", text);
    /* 20 x (seal + open): 40 data updates of 32 pipes, + 40 AAD updates */
    if (stat_value(text, "pipelined_batches") < 40 || stat_value(text, "records") < 40 * 32
        || stat_value(text, "bytes") < 40L * 32 * 16384 || stat_value(text, "hist.32") < 40)
        return fail("stats", "counters too low:\n%s", text);
    if (stat_value(text, "lane.1.records") <= 0)
        return fail("stats", "the second lane did no work:\n%s", text);
    if (stat_value(text, "failed_batches") != 0)
        return fail("stats", "failed batches without a failure:\n%s", text);
    /* separate output buffers: no decryption written back to back */
    if (stat_value(text, "contiguous_records") != 0)
        return fail("stats", "contiguous records from separate buffers:\n%s", text);
    /* 4 of 5 plaintexts back to back in one buffer, the fifth apart */
    {
        static unsigned char one[4 * 3000];
        unsigned char *own[5];

        for (i = 0; i < 5; i++)
            len[i] = 3000;
        batch_alloc(&b, 5, len, aadl, 1, keylens[1]);
        for (i = 0; i < 4; i++) {
            own[i] = b.dec[i];
            b.dec[i] = one + (size_t)i * 3000;
        }
        ec = EVP_CIPHER_CTX_new();
        dc = EVP_CIPHER_CTX_new();
        ok = check_batch("stats", ec, dc, 1, &b, 1, b.key);
        for (i = 0; i < 4; i++)
            b.dec[i] = own[i];
        batch_free(&b);
        EVP_CIPHER_CTX_free(ec);
        EVP_CIPHER_CTX_free(dc);
        if (!ok)
            return 0;
        if (!get_text("stats", text, sizeof(text)))
            return fail("stats", "the stats parameter could not be read");
        if (stat_value(text, "contiguous_records") != 4)
            return fail("stats", "4 plaintexts back to back are not 4 contiguous records:\n%s",
                text);
    }
    /* a decryption whose tag check fails counts as one failed batch */
    for (i = 0; i < 4; i++)
        len[i] = 1000;
    batch_alloc(&b, 4, len, aadl, 1, keylens[1]);
    ec = EVP_CIPHER_CTX_new();
    dc = EVP_CIPHER_CTX_new();
    ok = check_batch("stats", ec, dc, 1, &b, 1, b.key);
    b.tag[2][0] ^= 1;
    if (ok && pipe_run(dc, 1, &b, b.key, 0, 2))
        ok = fail("stats", "a flipped tag was accepted");
    ERR_clear_error();
    batch_free(&b);
    EVP_CIPHER_CTX_free(ec);
    EVP_CIPHER_CTX_free(dc);
    if (!ok)
        return 0;
    if (!get_text("stats", text, sizeof(text)))
        return fail("stats", "the stats parameter could not be read");
    if (stat_value(text, "failed_batches") != 1)
        return fail("stats", "a failed tag check is not one failed batch:\n%s", text);
    if (stat_value(text, "crypto_ns") <= 0)
        return fail("stats", "no crypto time:\n%s", text);
    if (!get_text("info", text, sizeof(text)) || strstr(text, "cipher AES-256-GCM\n") == NULL)
        return fail("stats", "the info parameter: %s", text);
    /* too small a buffer must fail */
    if (get_text("stats", text, 10))
        return fail("stats", "the stats text fit in 10 bytes?");
    ERR_clear_error();
    return 1;
}

/* -------------------------------------------------- threads and fork */

typedef struct {
    int id;
    int ok;
} worker;

static void *thread_main(void *arg)
{
    worker *w = arg;
    EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new(), *dc = EVP_CIPHER_CTX_new();
    int round, rounds = quick ? 6 : 25;

    w->ok = 1;
    for (round = 0; w->ok && round < rounds; round++) {
        size_t len[MAXP], aadl[MAXP];
        batch b;
        int i, n = 1 + (int)rnd(MAXP), alg = (w->id + round) % N_ALGS;

        for (i = 0; i < n; i++) {
            len[i] = rnd(20000);
            aadl[i] = rnd(40);
        }
        batch_alloc(&b, n, len, aadl, 1, keylens[alg]);
        /* a new key per round on the same contexts */
        w->ok = check_batch("threads", ec, dc, alg, &b, 1 + round % 2, b.key);
        batch_free(&b);
    }
    EVP_CIPHER_CTX_free(ec);
    EVP_CIPHER_CTX_free(dc);
    ERR_clear_error();
    return NULL;
}

static int test_threads(void)
{
    pthread_t t[16];
    worker w[16];
    int i, ok = 1;

    for (i = 0; i < 16; i++) {
        w[i].id = i;
        if (pthread_create(&t[i], NULL, thread_main, &w[i]) != 0)
            return fail("threads", "pthread_create");
    }
    for (i = 0; i < 16; i++) {
        pthread_join(t[i], NULL);
        ok &= w[i].ok;
    }
    return ok ? 1 : fail("threads", "a thread's pipelines differed from the default's");
}

static int test_fork(void)
{
    worker w = { 0, 0 };
    pid_t pid;
    int status;

    thread_main(&w); /* the lanes have run in the parent */
    if (!w.ok)
        return fail("fork", "the parent's pipelines before fork");
    pid = fork();
    if (pid < 0)
        return fail("fork", "fork failed");
    if (pid == 0) {
        worker c = { 1, 0 };

        thread_main(&c);
        fflush(stdout);
        _exit(c.ok ? 0 : 1);
    }
    w.id = 2;
    thread_main(&w); /* the parent goes on meanwhile */
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return fail("fork", "the child's pipelines failed (status %d)", status);
    return w.ok ? 1 : fail("fork", "the parent's pipelines after fork");
}

/* ------------------------------------------------- vectors for others */

static void hex(const unsigned char *p, size_t n)
{
    size_t i;

    putchar(' ');
    if (n == 0)
        putchar('-');
    for (i = 0; i < n; i++)
        printf("%02x", p[i]);
}

/* "vec ALG KEY IV AAD PLAINTEXT CIPHERTEXT TAG" lines (hex, "-" for
 * empty) of pipelined seals, for an independent decryption elsewhere. */
static int test_dump(void)
{
    static const size_t lens[] = { 0, 1, 15, 16, 17, 255, 16383, 16384, 65536 };
    int alg, i;

    for (alg = 0; alg < N_ALGS; alg++) {
        EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new(), *dc = EVP_CIPHER_CTX_new();
        size_t aadl[MAXP];
        batch b;
        int ok;

        for (i = 0; i < 9; i++)
            aadl[i] = i % 3 == 0 ? 0 : 13 * (size_t)i;
        batch_alloc(&b, 9, lens, aadl, 1, keylens[alg]);
        ok = check_batch("dump", ec, dc, alg, &b, 2, b.key);
        for (i = 0; ok && i < b.n; i++) {
            printf("vec %s", algs[alg]);
            hex(b.key, keylens[alg]);
            hex(b.iv[i], IVLEN);
            hex(b.aad[i], b.aadl[i]);
            hex(b.pt[i], b.len[i]);
            hex(b.ct[i], b.len[i]);
            hex(b.tag[i], TAG);
            putchar('\n');
        }
        batch_free(&b);
        EVP_CIPHER_CTX_free(ec);
        EVP_CIPHER_CTX_free(dc);
        if (!ok)
            return 0;
    }
    return 1;
}

/* "param NAME VALUE" lines of the provider's numbers (openssl.cnf tests). */
static int test_params(void)
{
    OSSL_PARAM p[4] = { OSSL_PARAM_END, OSSL_PARAM_END, OSSL_PARAM_END, OSSL_PARAM_END };
    int threads = 0, async = -1;
    size_t inline_below = 0;

    p[0] = OSSL_PARAM_construct_int("threads", &threads);
    p[1] = OSSL_PARAM_construct_size_t("inline_below", &inline_below);
    p[2] = OSSL_PARAM_construct_int("async", &async);
    if (!OSSL_PROVIDER_get_params(ours_prov, p))
        return fail("params", "OSSL_PROVIDER_get_params");
    printf("param threads %d\nparam inline_below %zu\nparam async %d\n", threads,
        inline_below, async);
    return 1;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "bench ALG ours_s default_s speedup" lines: 32 x 16 KiB seals, ours
 * pipelined against the default provider one pipe after another, in
 * interleaved rounds (a figure to read, not a pass/fail bound). */
static int test_bench(void)
{
    static const int bench_algs[] = { 1, 2 };
    size_t i;

    for (i = 0; i < 2; i++) {
        int alg = bench_algs[i], r, rounds = 30, k;
        size_t len[MAXP], aadl[MAXP];
        EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new(), *dc = EVP_CIPHER_CTX_new();
        double t_ours = 0, t_ref = 0;
        batch b;

        for (k = 0; k < MAXP; k++) {
            len[k] = 16384;
            aadl[k] = 13;
        }
        batch_alloc(&b, MAXP, len, aadl, 1, keylens[alg]);
        if (!check_batch("bench", ec, dc, alg, &b, 1, b.key))
            return 0;
        for (r = 0; r < rounds; r++) {
            double t0 = now_s(), t1, t2;

            for (k = 0; k < 10; k++)
                if (!pipe_run(ec, alg, &b, NULL, 1, 1))
                    return fail("bench", "pipelined seal");
            t1 = now_s();
            for (k = 0; k < 10; k++)
                if (!ref_seal(alg, &b))
                    return fail("bench", "default seal");
            t2 = now_s();
            t_ours += t1 - t0;
            t_ref += t2 - t1;
        }
        printf("bench %s ours %.4f s default %.4f s speedup %.2f\n", algs[alg], t_ours, t_ref,
            t_ref / t_ours);
        batch_free(&b);
        EVP_CIPHER_CTX_free(ec);
        EVP_CIPHER_CTX_free(dc);
    }
    return 1;
}

static const char *module_path;

/* A bad THREADS / INLINE_BELOW fails the load, saying what is allowed. */
static int test_badconf(void)
{
    static const char *const cases[][3] = {
        { "THREADS", "0", "pipetls THREADS must be 1..256" },
        { "THREADS", "two", "pipetls THREADS must be 1..256" },
        { "INLINE_BELOW", "-1", "pipetls INLINE_BELOW must be 0..1073741824 bytes" },
        { "ASYNC", "3", "pipetls ASYNC must be 0, 1 or 2" },
        { "ASYNC", "on", "pipetls ASYNC must be 0, 1 or 2" },
        { "ADAPTIVE", "2", "pipetls ADAPTIVE must be 0 or 1" },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char value[16];
        OSSL_PARAM p[2];
        OSSL_LIB_CTX *lc = OSSL_LIB_CTX_new();
        OSSL_PROVIDER *pv;
        const char *data = NULL;
        int flags = 0, said = 0;
        unsigned long e;

        snprintf(value, sizeof(value), "%s", cases[i][1]);
        p[0] = OSSL_PARAM_construct_utf8_string(cases[i][0], value, 0);
        p[1] = OSSL_PARAM_construct_end();
        ERR_clear_error();
        pv = OSSL_PROVIDER_load_ex(lc, module_path, p);
        while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0)
            if (data != NULL && strstr(data, cases[i][2]) != NULL)
                said = 1;
        OSSL_PROVIDER_unload(pv);
        OSSL_LIB_CTX_free(lc);
        if (pv != NULL)
            return fail("badconf", "%s = %s accepted", cases[i][0], cases[i][1]);
        if (!said)
            return fail("badconf", "%s = %s: no \"%s\" on the error queue", cases[i][0],
                cases[i][1], cases[i][2]);
    }
    return 1;
}

/* ------------------------------------------------------ ASYNC jobs */

/* A setting for the process (ASYNC, THREADS): one more load of the module,
 * in a library context of its own, with that setting (the settings are
 * per process). */
static int set_setting(const char *name, const char *v)
{
    char value[8];
    OSSL_PARAM p[2];
    OSSL_LIB_CTX *lc = OSSL_LIB_CTX_new();
    OSSL_PROVIDER *pv;

    snprintf(value, sizeof(value), "%s", v);
    p[0] = OSSL_PARAM_construct_utf8_string(name, value, 0);
    p[1] = OSSL_PARAM_construct_end();
    pv = OSSL_PROVIDER_load_ex(lc, module_path, p);
    OSSL_PROVIDER_unload(pv);
    OSSL_LIB_CTX_free(lc);
    return pv != NULL;
}

static int set_async(const char *mode)
{
    return set_setting("ASYNC", mode);
}

typedef struct {
    EVP_CIPHER_CTX *c;
    int alg;
    batch *b;
    int enc;
    int ok;
} job_arg;

static int job_main(void *arg)
{
    job_arg *a = *(job_arg **)arg;

    a->ok = pipe_run(a->c, a->alg, a->b, a->b->key, a->enc, 1);
    return 1;
}

/* Waits until one of the wait context's fds is readable (10 s at most). */
static int wait_fds(ASYNC_WAIT_CTX *w)
{
    OSSL_ASYNC_FD fds[8];
    struct pollfd pfd[8];
    size_t n = 0, i;

    if (!ASYNC_WAIT_CTX_get_all_fds(w, NULL, &n) || n == 0 || n > 8
        || !ASYNC_WAIT_CTX_get_all_fds(w, fds, &n))
        return 0;
    for (i = 0; i < n; i++) {
        pfd[i].fd = fds[i];
        pfd[i].events = POLLIN;
    }
    return poll(pfd, n, 10000) > 0;
}

/* Runs a's pipeline in an ASYNC job to its end, resuming it whenever its
 * fd is readable; *pauses: how often it paused. */
static int run_in_job(job_arg *a, int *pauses)
{
    ASYNC_WAIT_CTX *w = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    int ret = 0, r, ok = 0;

    *pauses = 0;
    if (w == NULL)
        return 0;
    for (;;) {
        r = ASYNC_start_job(&job, w, &ret, job_main, &a, sizeof(a));
        if (r == ASYNC_PAUSE) {
            (*pauses)++;
            if (!wait_fds(w))
                break;
            continue;
        }
        ok = r == ASYNC_FINISH && a->ok;
        break;
    }
    ASYNC_WAIT_CTX_free(w);
    return ok;
}

typedef struct {
    uint64_t batches, pauses, resumes, paused_ns;
} async_counts;

static int get_async_counts(async_counts *c, int *mode)
{
    OSSL_PARAM p[6];

    p[0] = OSSL_PARAM_construct_uint64("async_batches", &c->batches);
    p[1] = OSSL_PARAM_construct_uint64("async_pauses", &c->pauses);
    p[2] = OSSL_PARAM_construct_uint64("async_resumes", &c->resumes);
    p[3] = OSSL_PARAM_construct_uint64("async_paused_ns", &c->paused_ns);
    p[4] = OSSL_PARAM_construct_int("async", mode);
    p[5] = OSSL_PARAM_construct_end();
    return OSSL_PROVIDER_get_params(ours_prov, p);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Jobs that paused and were never resumed: still referenced, as an
 * application that freed their connections would hold them. */
static ASYNC_JOB *abandoned[8];

#define JOB_ROUNDS 6
#define JOB_ROUNDS_MAX 60

/* Rounds of seal + open of 8 x 512 KiB in ASYNC jobs under ASYNC mode,
 * every output equal to the default provider's; pauses[0], pauses[1]: the
 * pauses seen opening, sealing. JOB_ROUNDS rounds, and more (up to
 * JOB_ROUNDS_MAX) while a direction in which want[dir] has not paused yet:
 * a job pauses only when its update is not done by the time it has been
 * posted, and on a loaded machine the woken worker may run first and
 * finish it. */
static int async_rounds(const char *mode, int alg, int pauses[2], const int want[2])
{
    size_t len[MAXP], aadl[MAXP];
    EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new(), *dc = EVP_CIPHER_CTX_new();
    int r, i, k, ok = 1;

    pauses[0] = pauses[1] = 0;
    for (k = 0; k < 8; k++) {
        len[k] = 512 * 1024;
        aadl[k] = 13;
    }
    for (r = 0; ok
         && (r < JOB_ROUNDS
             || (r < JOB_ROUNDS_MAX
                 && ((want[0] && pauses[0] == 0) || (want[1] && pauses[1] == 0))));
         r++) {
        batch b;
        job_arg a;
        int p;

        batch_alloc(&b, 8, len, aadl, 1, keylens[alg]);
        if (!ref_seal(alg, &b)) {
            ok = fail("async", "the default provider's seal");
            break;
        }
        a = (job_arg) { ec, alg, &b, 1, 0 };
        if (!run_in_job(&a, &p)) {
            ok = fail("async", "ASYNC %s: a seal in a job failed", mode);
        } else {
            pauses[1] += p;
            for (i = 0; ok && i < b.n; i++)
                if (memcmp(b.ct[i], b.ref_ct[i], b.len[i]) != 0
                    || memcmp(b.tag[i], b.ref_tag[i], TAG) != 0)
                    ok = fail("async", "ASYNC %s: pipe %d of a seal in a job differs", mode,
                        i + 1);
        }
        a = (job_arg) { dc, alg, &b, 0, 0 };
        if (ok && !run_in_job(&a, &p)) {
            ok = fail("async", "ASYNC %s: an open in a job failed", mode);
        } else if (ok) {
            pauses[0] += p;
            for (i = 0; ok && i < b.n; i++)
                if (memcmp(b.dec[i], b.pt[i], b.len[i]) != 0)
                    ok = fail("async", "ASYNC %s: pipe %d of an open in a job differs", mode,
                        i + 1);
        }
        batch_free(&b);
    }
    EVP_CIPHER_CTX_free(ec);
    EVP_CIPHER_CTX_free(dc);
    return ok;
}

/* A seal whose job paused, then its context and buffers freed and the job
 * never resumed (a connection freed while paused): the lanes finish the
 * update on the context's own copy (ASan: no use after free), the eventfd
 * is closed once the wait context is freed too. Returns the number of
 * jobs abandoned so (tries until one paused), or -1. */
static int async_abandon(int alg)
{
    size_t len[MAXP], aadl[MAXP];
    int k, n = 0, fds0 = count_fds();

    for (k = 0; k < 8; k++) {
        len[k] = 256 * 1024;
        aadl[k] = 13;
    }
    for (k = 0; k < 30 && n == 0; k++) {
        ASYNC_WAIT_CTX *w = ASYNC_WAIT_CTX_new();
        EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new();
        job_arg *a = xmalloc(sizeof(*a));
        batch b;
        int ret = 0, r;

        batch_alloc(&b, 8, len, aadl, 1, keylens[alg]);
        *a = (job_arg) { ec, alg, &b, 1, 0 };
        r = ASYNC_start_job(&abandoned[n], w, &ret, job_main, &a, sizeof(a));
        if (r == ASYNC_PAUSE) {
            n++;
        } else {
            while (r == ASYNC_PAUSE) /* not reached: finished at once */
                r = ASYNC_start_job(&abandoned[n], w, &ret, job_main, &a, sizeof(a));
            abandoned[n] = NULL;
        }
        EVP_CIPHER_CTX_free(ec); /* finishes the update still on the lanes */
        batch_free(&b);
        free(a);
        ASYNC_WAIT_CTX_free(w);
    }
    if (count_fds() != fds0)
        return fail("async", "descriptors: %d before, %d after abandoned jobs", fds0, count_fds()),
               -1;
    return n;
}

static int test_async(void)
{
    static const struct {
        const char *mode;
        int enc_may, dec_may; /* may pause */
    } modes[] = { { "2", 1, 1 }, { "1", 1, 0 }, { "0", 0, 0 } };
    async_counts c0, c1;
    size_t m;
    int mode = -1, abandon;

    if (ASYNC_is_capable() == 0)
        return fail("async", "this build of OpenSSL cannot run ASYNC jobs");
    for (m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        int pauses[2], want[2] = { modes[m].dec_may, modes[m].enc_may };

        if (!set_async(modes[m].mode))
            return fail("async", "loading with ASYNC = %s", modes[m].mode);
        if (!get_async_counts(&c0, &mode))
            return fail("async", "the async parameters");
        if (mode != atoi(modes[m].mode))
            return fail("async", "parameter async is %d after ASYNC = %s", mode, modes[m].mode);
        if (!async_rounds(modes[m].mode, m % 2 == 0 ? 1 : 2, pauses, want))
            return 0;
        if (!get_async_counts(&c1, &mode))
            return fail("async", "the async parameters");
        printf("async mode %s seal_pauses %d open_pauses %d posted %llu\n", modes[m].mode,
            pauses[1], pauses[0], (unsigned long long)(c1.batches - c0.batches));
        /* a pause is seen by the job's starter and counted by the provider */
        if (c1.pauses - c0.pauses != (uint64_t)(pauses[0] + pauses[1])
            || c1.resumes - c0.resumes != c1.pauses - c0.pauses)
            return fail("async", "ASYNC %s: %d pauses seen, counters say %llu paused, "
                "%llu resumed", modes[m].mode, pauses[0] + pauses[1],
                (unsigned long long)(c1.pauses - c0.pauses),
                (unsigned long long)(c1.resumes - c0.resumes));
        if ((!modes[m].enc_may && pauses[1] != 0) || (!modes[m].dec_may && pauses[0] != 0)
            || (!modes[m].enc_may && c1.batches != c0.batches))
            return fail("async", "ASYNC %s: a batch paused that must not", modes[m].mode);
        /* up to 60 rounds of 4 MiB per direction on free lanes: not one
         * pause in a direction that may pause means the pause does not work */
        if ((modes[m].enc_may && pauses[1] == 0) || (modes[m].dec_may && pauses[0] == 0))
            return fail("async", "ASYNC %s: no job paused", modes[m].mode);
        if (c1.pauses != c0.pauses && c1.paused_ns == c0.paused_ns)
            return fail("async", "ASYNC %s: paused, but no time paused", modes[m].mode);
    }
    if (!set_async("2"))
        return fail("async", "loading with ASYNC = 2");
    {
        /* no worker (THREADS 1): nothing to hand the update to, so the job
         * never pauses and the caller works every pipe itself */
        int pauses[2], none[2] = { 0, 0 };

        if (!set_setting("THREADS", "1") || !get_async_counts(&c0, &mode))
            return fail("async", "loading with THREADS = 1");
        if (!async_rounds("2, THREADS 1", 0, pauses, none))
            return 0;
        if (!get_async_counts(&c1, &mode) || !set_setting("THREADS", "2"))
            return fail("async", "loading with THREADS = 2");
        printf("async threads 1 seal_pauses %d open_pauses %d posted %llu\n", pauses[1],
            pauses[0], (unsigned long long)(c1.batches - c0.batches));
        if (pauses[0] + pauses[1] != 0 || c1.batches != c0.batches || c1.pauses != c0.pauses)
            return fail("async", "THREADS 1: an update was posted or a job paused");
    }
    if ((abandon = async_abandon(1)) < 0)
        return 0;
    printf("async abandoned %d\n", abandon);
    if (abandon == 0)
        return fail("async", "no job paused to be abandoned");
    return 1;
}

/* ------------------------------------------------------------------ main */

/* MODULE "--conf": the provider "pipetls" as openssl.cnf configures it. */
static int load(const char *module)
{
    /* ADAPTIVE 0: these tests check callers and workers on the same
     * updates (the stats test, that the second lane did work), which
     * adaptive lanes would keep in the caller on a loaded machine */
    char threads[] = "2", inline_below[] = "8192", adaptive[] = "0";
    OSSL_PARAM p[4];
    int i;

    p[0] = OSSL_PARAM_construct_utf8_string("THREADS", threads, 0);
    p[1] = OSSL_PARAM_construct_utf8_string("INLINE_BELOW", inline_below, 0);
    p[2] = OSSL_PARAM_construct_utf8_string("ADAPTIVE", adaptive, 0);
    p[3] = OSSL_PARAM_construct_end();
    /* --conf: the configuration first, its errors reported (OpenSSL's
     * implicit load at init would not say why our section failed) */
    if (strcmp(module, "--conf") == 0
        && (getenv("OPENSSL_CONF") == NULL || !OSSL_LIB_CTX_load_config(NULL, getenv("OPENSSL_CONF"))))
        return fail("load", "the configuration in $OPENSSL_CONF");
    if ((default_prov = OSSL_PROVIDER_load(NULL, "default")) == NULL)
        return fail("load", "the default provider");
    if (strcmp(module, "--conf") == 0)
        ours_prov = OSSL_PROVIDER_load(NULL, "pipetls");
    else
        ours_prov = OSSL_PROVIDER_load_ex(NULL, module, p);
    if (ours_prov == NULL)
        return fail("load", "loading %s", module);
    for (i = 0; i < N_ALGS; i++) {
        ours[i] = EVP_CIPHER_fetch(NULL, algs[i], "provider=pipetls");
        deflt[i] = EVP_CIPHER_fetch(NULL, algs[i], "provider=default");
        if (ours[i] == NULL || deflt[i] == NULL)
            return fail("load", "fetching %s", algs[i]);
    }
    return 1;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(void);
    } tests[] = {
        { "kat", test_kat }, { "mix", test_mix }, { "rekey", test_rekey },
        { "neg", test_neg }, { "stats", test_stats }, { "threads", test_threads },
        { "fork", test_fork }, { "dump", test_dump }, { "params", test_params },
        { "badconf", test_badconf }, { "bench", test_bench }, { "async", test_async },
    };
    int a, i;

    if (argc < 3) {
        fprintf(stderr, "usage: %s MODULE TEST...\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    module_path = argv[1];
    if (!load(argv[1]))
        return 1;
    for (a = 2; a < argc; a++) {
        const char *name = argv[a];
        int found = 0;

        if (strcmp(name, "quick") == 0) {
            quick = 1;
            continue;
        }
        for (i = 0; i < (int)(sizeof(tests) / sizeof(tests[0])); i++)
            if (strcmp(tests[i].name, name) == 0) {
                found = 1;
                if (tests[i].fn())
                    printf("ok %s\n", name);
                else
                    failures++;
                ERR_clear_error();
            }
        if (!found) {
            fprintf(stderr, "unknown test %s\n", name);
            return 2;
        }
    }
    for (i = 0; i < N_ALGS; i++) {
        EVP_CIPHER_free(ours[i]);
        EVP_CIPHER_free(deflt[i]);
    }
    OSSL_PROVIDER_unload(ours_prov);
    OSSL_PROVIDER_unload(default_prov);
    return failures == 0 ? 0 : 1;
}
