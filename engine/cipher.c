/*
 * cipher.c - the EVP_CIPHER front of the ENGINE, shared by every family.
 *
 * Each cipher we register wraps OpenSSL's own implementation of the same
 * algorithm (fetched from the default provider). Outside a pipelined batch
 * every call is forwarded to a "base" context of that implementation, so the
 * cipher behaves exactly like OpenSSL's (invariant 1). A TLS record (one
 * EVP_CTRL_AEAD_TLS1_AAD, or a batch set up with the EVP_CTRL_SET_PIPELINE_*
 * ctrls) is handed to the core (pt_conn_run), which runs the family's record
 * function on lane contexts: copies of the keyed base, made once per key
 * (invariant 8), no more than can run at once. Plain EVP use is OpenSSL's
 * own cipher, failures and error queue included.
 *
 * First initialisation of a provider context: EVP_CipherInit_ex2() with a
 * cipher asks whether an ENGINE is the default for that NID - that would be
 * us, and we would recurse. So one template context per family is
 * initialised when the engine library is bound, before it can be anybody's
 * default, and every context we need is a copy of a template.
 */
#include "pt_cipher.h"
#include "pipetls.h"
#include "pt_guard.h"
#include "pt_stats.h"

#include <openssl/crypto.h>
#include <stdatomic.h>
#include <string.h>

_Static_assert(PIPETLS_MAX_PIPES == PT_MAX_PIPES, "pipetls.h and the core disagree");
_Static_assert(PIPETLS_MAX_LANES == PT_MAX_LANES, "pipetls.h and the core disagree");

#define N_FAMILIES PT_N_FAMILIES

/* Template contexts (provider cipher set, no key), one per family. Kept for
 * the life of the process: a second load of the engine library reuses them. */
static EVP_CIPHER_CTX *templates[N_FAMILIES];

static _Atomic int out_of_place = 1; /* OUT_OF_PLACE */

int pt_cipher_set_out_of_place(long on)
{
    if (on != 0 && on != 1)
        return 0;
    atomic_store(&out_of_place, (int)on);
    return 1;
}

int pt_cipher_out_of_place(void)
{
    return atomic_load(&out_of_place);
}

static int family_index(const pt_family *f)
{
    size_t i;

    for (i = 0; i < N_FAMILIES && pt_families[i] != NULL; i++)
        if (pt_families[i] == f)
            return (int)i;
    return -1;
}

static EVP_CIPHER_CTX *template_for(const pt_family *f)
{
    int i = family_index(f);
    EVP_CIPHER *impl;
    EVP_CIPHER_CTX *t;

    if (i < 0)
        return NULL;
    if (templates[i] != NULL)
        return templates[i];
    ERR_set_mark();
    impl = EVP_CIPHER_fetch(NULL, f->name, NULL);
    if (impl == NULL) {
        ERR_pop_to_mark(); /* not offered on this CPU: the cipher is left out */
        return NULL;
    }
    ERR_clear_last_mark();
    t = EVP_CIPHER_CTX_new();
    if (t == NULL || !EVP_CipherInit_ex2(t, impl, NULL, NULL, 1, NULL)
        || EVP_CIPHER_get0_provider(EVP_CIPHER_CTX_get0_cipher(t)) == NULL) {
        /* another ENGINE is already the default for this NID */
        EVP_CIPHER_CTX_free(t);
        t = NULL;
    }
    EVP_CIPHER_free(impl);
    templates[i] = t;
    return t;
}

/* A fresh context of OpenSSL's own implementation, direction enc. */
static EVP_CIPHER_CTX *new_impl_ctx(const pt_family *f, int enc)
{
    EVP_CIPHER_CTX *t = template_for(f), *c;

    if (t == NULL || (c = EVP_CIPHER_CTX_new()) == NULL)
        return NULL;
    if (!EVP_CIPHER_CTX_copy(c, t)
        || !EVP_CipherInit_ex2(c, NULL, NULL, NULL, enc, NULL)) {
        EVP_CIPHER_CTX_free(c);
        return NULL;
    }
    return c;
}

EVP_CIPHER_CTX *pt_cipher_impl_ctx(const pt_family *f)
{
    return new_impl_ctx(f, 1);
}

static pt_ctx *data_of(EVP_CIPHER_CTX *ctx)
{
    return (pt_ctx *)EVP_CIPHER_CTX_get_cipher_data(ctx);
}

static void reset_pipeline(pt_ctx *c)
{
    c->n_out = c->n_in = c->n_len = c->n_plain = 0;
    c->n_aad = 0;
    c->bad = 0;
    OPENSSL_clear_free(c->pipes, sizeof(*c->pipes));
    c->pipes = NULL;
}

/* The pipe arrays of the call being set up (allocated on first use). */
static pt_pipes *pipes_of(pt_ctx *c)
{
    if (c->pipes == NULL && (c->pipes = OPENSSL_zalloc(sizeof(*c->pipes))) == NULL) {
        c->bad = 1;
        pt_err_raise(PT_R_ALLOC_FAILED, "pipeline state");
    }
    return c->pipes;
}

/* TLS AAD i of the call being set up (i > 0 needs c->pipes). */
static unsigned char *aad_at(pt_ctx *c, int i)
{
    return i == 0 ? c->aad0 : c->pipes->aad[i];
}

/* Makes sure the base exists; created at EVP_CTRL_INIT or first init. */
static int ensure_base(EVP_CIPHER_CTX *ctx, pt_ctx *c)
{
    pt_conn *k = &c->conn;

    if (k->fam == NULL)
        k->fam = pt_family_by_nid(EVP_CIPHER_CTX_get_nid(ctx));
    PT_ENSURE(k->fam != NULL, fail, PT_R_NOT_INITIALISED, "no pipetls family for NID %d",
        EVP_CIPHER_CTX_get_nid(ctx));
    if (k->base == NULL)
        k->base = new_impl_ctx(k->fam, EVP_CIPHER_CTX_is_encrypting(ctx));
    PT_ENSURE(k->base != NULL, fail, PT_R_NOT_INITIALISED,
        "OpenSSL's own %s could not be set up", k->fam->name);
    return 1;
fail:
    return 0;
}

/* ---- EVP_CIPHER methods ------------------------------------------------- */

static int pt_init(EVP_CIPHER_CTX *ctx, const unsigned char *key,
    const unsigned char *iv, int enc)
{
    pt_ctx *c = data_of(ctx);
    pt_conn *k = &c->conn;
    const unsigned char *base_iv = iv;

    if (!ensure_base(ctx, c))
        return 0;
    /* CBC families: EVP has already put the IV to use into ctx->iv (it is
     * reset from the original IV on re-key); the base must start from it. */
    if (k->fam->cbc)
        base_iv = EVP_CIPHER_CTX_iv(ctx);
    PT_ENSURE(EVP_CipherInit_ex2(k->base, NULL, key, base_iv, enc, NULL), fail,
        PT_R_CIPHER_FAILED, "%s: setting key or IV", k->fam->name);
    c->enc = enc;
    /* OpenSSL's stitched CBC-HMAC ciphers neither pad nor hold back a
     * block (their update and final are the stream kind): without this,
     * EVP would pad our legacy cipher and a decrypt Final would fail */
    if (k->fam->mac_len != 0)
        EVP_CIPHER_CTX_set_padding(ctx, 0);
    if (key != NULL)
        k->key_gen++;
    if (iv != NULL && k->fam->nid == NID_chacha20_poly1305)
        memcpy(k->tls.fixed_iv, iv, 12); /* RFC 7905: the fixed IV */
    reset_pipeline(c);
    return 1;
fail:
    return 0;
}

static int pt_cleanup(EVP_CIPHER_CTX *ctx)
{
    pt_ctx *c = data_of(ctx);

    if (c == NULL)
        return 1;
    pt_conn_free_lanes(&c->conn);
    EVP_CIPHER_CTX_free(c->conn.base);
    c->conn.base = NULL;
    OPENSSL_cleanse(&c->conn.tls, sizeof(c->conn.tls));
    OPENSSL_cleanse(c->aad0, sizeof(c->aad0));
    reset_pipeline(c);
    return 1;
}

static int set_pipes(pt_ctx *c, int *count, int arg, const void *ptr)
{
    PT_ENSURE(ptr != NULL, bad, PT_R_BAD_PIPELINE, "pipeline ctrl without an array");
    PT_ENSURE(arg >= 1 && arg <= PT_MAX_PIPES, bad, PT_R_BAD_PIPELINE,
        "%d pipes, must be 1..%d", arg, PT_MAX_PIPES);
    *count = arg;
    return 1;
bad:
    c->bad = 1;
    return 0;
}

static int pt_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
{
    pt_ctx *c = data_of(ctx);
    pt_conn *k = &c->conn;
    int pad;

    switch (type) {
    case EVP_CTRL_INIT:
        memset(c, 0, sizeof(*c));
        return ensure_base(ctx, c);

    case EVP_CTRL_COPY: {
        /* EVP has copied our struct byte for byte into the new context */
        pt_ctx *d = data_of((EVP_CIPHER_CTX *)ptr);

        d->conn.lane = NULL; /* the copy makes its own lane contexts */
        d->conn.n_lane = 0;
        d->conn.parked = NULL; /* the copy makes its own when it pauses */
        d->conn.base = NULL;
        d->pipes = NULL; /* the original's, copied byte for byte */
        reset_pipeline(d);
        if (k->base != NULL) {
            if ((d->conn.base = EVP_CIPHER_CTX_new()) == NULL
                || !EVP_CIPHER_CTX_copy(d->conn.base, k->base)) {
                EVP_CIPHER_CTX_free(d->conn.base);
                d->conn.base = NULL;
                pt_err_raise(PT_R_ALLOC_FAILED, "copying a %s context", k->fam->name);
                return 0;
            }
        }
        return 1;
    }

    case EVP_CTRL_SET_PIPELINE_OUTPUT_BUFS:
        if (!set_pipes(c, &c->n_out, arg, ptr) || pipes_of(c) == NULL)
            return 0;
        memcpy(c->pipes->out_bufs, ptr, sizeof(unsigned char *) * (size_t)arg);
        return 1;
    case EVP_CTRL_SET_PIPELINE_INPUT_BUFS:
        if (!set_pipes(c, &c->n_in, arg, ptr) || pipes_of(c) == NULL)
            return 0;
        memcpy(c->pipes->in_bufs, ptr, sizeof(unsigned char *) * (size_t)arg);
        return 1;
    case EVP_CTRL_SET_PIPELINE_INPUT_LENS:
        if (!set_pipes(c, &c->n_len, arg, ptr) || pipes_of(c) == NULL)
            return 0;
        memcpy(c->pipes->lens, ptr, sizeof(size_t) * (size_t)arg);
        return 1;
    case PT_CTRL_SET_PIPELINE_PLAINTEXT_BUFS:
        /* Not taken (libssl puts the plaintext into the input buffers) by
         * other families, for decryption, with OUT_OF_PLACE 0, and inside
         * an ASYNC job whose batch may pause: SSL_write returns while the
         * lanes run, and the caller's buffer is then not libssl's to lend. */
        if (!k->fam->plain_in || !EVP_CIPHER_CTX_is_encrypting(ctx)
            || !atomic_load_explicit(&out_of_place, memory_order_relaxed) || pt_async_wanted(1))
            return -1;
        /* a refusal, not a failure of the batch: libssl then copies */
        if (ptr == NULL || arg < 1 || arg > PT_MAX_PIPES || pipes_of(c) == NULL)
            return 0;
        c->n_plain = arg;
        memcpy(c->pipes->plain_bufs, ptr, sizeof(unsigned char *) * (size_t)arg);
        return 1;

    case EVP_CTRL_AEAD_TLS1_AAD:
        if (!k->fam->tls_aad)
            return -1;
        PT_ENSURE(arg == PT_TLS_AAD_LEN && ptr != NULL, fail, PT_R_BAD_PIPELINE,
            "TLS AAD of %d bytes, must be %d", arg, PT_TLS_AAD_LEN);
        if (c->n_aad >= PT_MAX_PIPES) {
            c->bad = 1;
            PT_ENSURE(0, fail, PT_R_BAD_PIPELINE,
                "more than %d TLS AADs before one cipher call", PT_MAX_PIPES);
        }
        pad = k->fam->tls_pad(k->fam, ptr, EVP_CIPHER_CTX_is_encrypting(ctx));
        PT_ENSURE(pad > 0, fail, PT_R_AAD_MISMATCH, "TLS AAD: record length %zu too short",
            pt_tls_aad_parse(ptr).len);
        if (c->n_aad > 0 && pipes_of(c) == NULL)
            return 0;
        memcpy(aad_at(c, c->n_aad++), ptr, PT_TLS_AAD_LEN);
        return pad;

    case EVP_CTRL_GCM_SET_IV_FIXED:
        if (k->fam->nid == NID_aes_128_gcm || k->fam->nid == NID_aes_256_gcm) {
            if (arg == -1) {
                /* ptr holds the whole IV: its length may be below 12 */
                int len = k->base != NULL ? EVP_CIPHER_CTX_get_iv_length(k->base) : 0;

                if (ptr != NULL && len > 0)
                    memcpy(k->tls.fixed_iv, ptr, len < 12 ? (size_t)len : 12);
            } else if (arg == 4 && ptr != NULL) {
                memcpy(k->tls.fixed_iv, ptr, 4);
            }
        }
        break;

    case EVP_CTRL_AEAD_SET_MAC_KEY:
    case EVP_CTRL_AEAD_SET_IVLEN:
        k->key_gen++; /* lane contexts must be copied again */
        break;

    /* legacy ctrls that OpenSSL does not map onto provider contexts */
    case EVP_CTRL_GET_IVLEN:
        PT_ENSURE(k->base != NULL && ptr != NULL, fail, PT_R_NOT_INITIALISED,
            "EVP_CTRL_GET_IVLEN");
        *(int *)ptr = EVP_CIPHER_CTX_get_iv_length(k->base);
        return *(int *)ptr > 0;

    case EVP_CTRL_TLS1_1_MULTIBLOCK_MAX_BUFSIZE:
    case EVP_CTRL_TLS1_1_MULTIBLOCK_AAD:
    case EVP_CTRL_TLS1_1_MULTIBLOCK_ENCRYPT:
    case EVP_CTRL_TLS1_1_MULTIBLOCK_DECRYPT:
        return -1; /* we pipeline instead */
    }
    PT_ENSURE(k->base != NULL, fail, PT_R_NOT_INITIALISED, "ctrl %d", type);
    return EVP_CIPHER_CTX_ctrl(k->base, type, arg, ptr);
fail:
    return 0;
}

/* A batch set up with the EVP_CTRL_SET_PIPELINE_* ctrls. Returns 0 or -1. */
static int do_pipeline(EVP_CIPHER_CTX *ctx, pt_ctx *c)
{
    const pt_family *f = c->conn.fam;
    pt_record recs[PT_MAX_PIPES];
    int i, n = c->n_out;

    PT_ENSURE(!c->bad, fail, PT_R_BAD_PIPELINE, "a pipeline ctrl was refused before this call");
    PT_ENSURE(c->n_in == n && c->n_len == n && (c->n_plain == 0 || c->n_plain == n), fail,
        PT_R_BAD_PIPELINE, "pipe counts disagree (out %d, in %d, lens %d, plaintexts %d)",
        c->n_out, c->n_in, c->n_len, c->n_plain);
    PT_ENSURE(f->tls_aad ? c->n_aad == n : c->n_aad == 0, fail, PT_R_BAD_PIPELINE,
        "%d pipes but %d TLS AADs", n, c->n_aad);
    PT_ENSURE(c->pipes != NULL, fail, PT_R_BAD_PIPELINE, "a pipelined call without its pipes");
    for (i = 0; i < n; i++) {
        recs[i].out = c->pipes->out_bufs[i];
        recs[i].in = c->pipes->in_bufs[i];
        recs[i].len = c->pipes->lens[i];
        recs[i].plain = c->n_plain ? c->pipes->plain_bufs[i] : NULL;
        PT_ENSURE(c->n_plain == 0 || recs[i].plain != NULL, fail, PT_R_BAD_PIPELINE,
            "record %d of %d without its plaintext buffer", i + 1, n);
        if (f->tls_aad)
            memcpy(recs[i].aad, aad_at(c, i), PT_TLS_AAD_LEN);
    }
    if (pt_conn_run(&c->conn, recs, n, EVP_CIPHER_CTX_is_encrypting(ctx),
            EVP_CIPHER_CTX_iv_noconst(ctx))
        != 0)
        return -1;
    if (c->n_plain)
        pt_stats_plaintext(n);
    return 0;
fail:
    return -1;
}

/* Plain EVP use (TLS 1.3 records among others): OpenSSL's own cipher,
 * answers and error queue included (invariant 1). */
static int do_stream(EVP_CIPHER_CTX *ctx, pt_ctx *c, unsigned char *out,
    const unsigned char *in, size_t len)
{
    EVP_CIPHER_CTX *base = c->conn.base;

    pt_stats_stream(in != NULL ? len : 0);
    if (c->conn.fam->custom_cipher) {
        int outl = 0;

        if (in != NULL) {
            PT_ENSURE(len <= INT_MAX, fail_custom, PT_R_BAD_RECORD_LENGTH, "%zu bytes", len);
            if (!EVP_CipherUpdate(base, out, &outl, in, (int)len))
                return -1;
        } else if (!EVP_CipherFinal_ex(base, out, &outl)) {
            return -1;
        }
        return outl;
    fail_custom:
        return -1;
    } else {
        unsigned char last[16];
        int enc = EVP_CIPHER_CTX_is_encrypting(ctx);

        if (len == 0)
            return 1;
        PT_ENSURE(len <= INT_MAX && len >= 16, fail, PT_R_BAD_RECORD_LENGTH,
            "%zu bytes for %s", len, c->conn.fam->name);
        if (!enc)
            memcpy(last, in + len - 16, 16);
        if (EVP_Cipher(base, out, in, (unsigned int)len) < 0)
            return 0;
        memcpy(EVP_CIPHER_CTX_iv_noconst(ctx), enc ? out + len - 16 : last, 16);
        return 1;
    fail:
        return 0;
    }
}

static int pt_do_cipher(EVP_CIPHER_CTX *ctx, unsigned char *out,
    const unsigned char *in, size_t len)
{
    pt_ctx *c = data_of(ctx);
    const pt_family *f = c->conn.fam;
    const int fail = f != NULL && f->custom_cipher ? -1 : 0;
    pt_record rec;
    int rc;

    PT_ENSURE(c->conn.base != NULL, failed, PT_R_NOT_INITIALISED, "cipher call without a key");

    /* plaintext buffers alone make a batch too: it fails (counts disagree) */
    if (c->n_out || c->n_in || c->n_len || c->n_plain || c->bad) {
        int n = c->n_out;

        rc = do_pipeline(ctx, c);
        reset_pipeline(c);
        return rc == 0 ? (f->custom_cipher ? n : 1) : fail;
    }

    if (c->n_aad > 0) {
        /* one TLS record */
        int n_aad = c->n_aad;

        reset_pipeline(c);
        PT_ENSURE(n_aad == 1, failed, PT_R_BAD_PIPELINE, "%d TLS AADs for one record", n_aad);
        rec.out = out;
        rec.in = in;
        rec.len = len;
        rec.plain = NULL;
        memcpy(rec.aad, c->aad0, PT_TLS_AAD_LEN);
        if (pt_conn_run(&c->conn, &rec, 1, EVP_CIPHER_CTX_is_encrypting(ctx),
                EVP_CIPHER_CTX_iv_noconst(ctx))
            != 0)
            return fail;
        return f->custom_cipher ? rec.result : 1;
    }

    return do_stream(ctx, c, out, in, len);
failed:
    return fail;
}

EVP_CIPHER *pt_cipher_new(const pt_family *f)
{
    EVP_CIPHER *m;

    if (template_for(f) == NULL)
        return NULL;
    m = EVP_CIPHER_meth_new(f->nid, f->block_size, f->key_len);
    if (m == NULL
        || !EVP_CIPHER_meth_set_iv_length(m, f->iv_len)
        || !EVP_CIPHER_meth_set_flags(m, f->flags | EVP_CIPH_FLAG_PIPELINE
                | (f->plain_in ? PT_CIPH_FLAG_PIPELINE_PLAINTEXT : 0)
                | EVP_CIPH_ALWAYS_CALL_INIT | EVP_CIPH_CTRL_INIT
                | EVP_CIPH_CUSTOM_COPY | EVP_CIPH_FLAG_DEFAULT_ASN1)
        || !EVP_CIPHER_meth_set_init(m, pt_init)
        || !EVP_CIPHER_meth_set_do_cipher(m, pt_do_cipher)
        || !EVP_CIPHER_meth_set_cleanup(m, pt_cleanup)
        || !EVP_CIPHER_meth_set_ctrl(m, pt_ctrl)
        || !EVP_CIPHER_meth_set_impl_ctx_size(m, sizeof(pt_ctx))) {
        EVP_CIPHER_meth_free(m);
        return NULL;
    }
    return m;
}
