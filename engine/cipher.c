/*
 * cipher.c - the EVP_CIPHER front shared by every family.
 *
 * Each cipher we register wraps OpenSSL's own implementation of the same
 * algorithm (fetched from the default provider). Outside a pipelined batch
 * every call is forwarded to a "base" context of that implementation, so the
 * cipher behaves exactly like OpenSSL's (invariant 1). A TLS record (one
 * EVP_CTRL_AEAD_TLS1_AAD, or a batch set up with the EVP_CTRL_SET_PIPELINE_*
 * ctrls) is handed to the family's record function, record i on lane context
 * i: a copy of the keyed base, made once per key (invariant 8).
 *
 * First initialisation of a provider context: EVP_CipherInit_ex2() with a
 * cipher asks whether an ENGINE is the default for that NID - that would be
 * us, and we would recurse. So one template context per family is
 * initialised when the engine library is bound, before it can be anybody's
 * default, and every context we need is a copy of a template.
 */
#include "pt_common.h"

#include <openssl/crypto.h>
#include <string.h>

const pt_family *const pt_families[] = {
    &pt_fam_aes_128_gcm,
    &pt_fam_aes_256_gcm,
    &pt_fam_chacha20_poly1305,
    &pt_fam_aes_128_cbc_hmac_sha1,
    &pt_fam_aes_256_cbc_hmac_sha1,
    &pt_fam_aes_128_cbc_hmac_sha256,
    &pt_fam_aes_256_cbc_hmac_sha256,
    &pt_fam_aes_128_cbc,
    &pt_fam_aes_256_cbc,
    NULL,
};

#define N_FAMILIES (sizeof(pt_families) / sizeof(pt_families[0]) - 1)

/* Template contexts (provider cipher set, no key), one per family. Kept for
 * the life of the process: a second load of the engine library reuses them. */
static EVP_CIPHER_CTX *templates[N_FAMILIES];

static int family_index(const pt_family *f)
{
    size_t i;

    for (i = 0; i < N_FAMILIES; i++)
        if (pt_families[i] == f)
            return (int)i;
    return -1;
}

const pt_family *pt_family_by_nid(int nid)
{
    size_t i;

    for (i = 0; i < N_FAMILIES; i++)
        if (pt_families[i]->nid == nid)
            return pt_families[i];
    return NULL;
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

static pt_ctx *data_of(EVP_CIPHER_CTX *ctx)
{
    return (pt_ctx *)EVP_CIPHER_CTX_get_cipher_data(ctx);
}

static void reset_pipeline(pt_ctx *c)
{
    c->n_out = c->n_in = c->n_len = 0;
    c->n_aad = 0;
    c->bad = 0;
}

static void free_lanes(pt_ctx *c)
{
    int i;

    for (i = 0; i < PIPETLS_MAX_PIPES / PT_GROUP; i++) {
        OPENSSL_free(c->scratch[i]);
        c->scratch[i] = NULL;
        c->scratch_len[i] = 0;
    }
    for (i = 0; i < PIPETLS_MAX_PIPES; i++) {
        EVP_CIPHER_CTX_free(c->lane[i]);
        c->lane[i] = NULL;
        c->lane_gen[i] = 0;
    }
}

/* Makes sure c->base exists; created at EVP_CTRL_INIT or first init. */
static int ensure_base(EVP_CIPHER_CTX *ctx, pt_ctx *c)
{
    if (c->fam == NULL)
        c->fam = pt_family_by_nid(EVP_CIPHER_CTX_get_nid(ctx));
    if (c->fam == NULL)
        return 0;
    if (c->base == NULL)
        c->base = new_impl_ctx(c->fam, EVP_CIPHER_CTX_is_encrypting(ctx));
    return c->base != NULL;
}

/* ---- EVP_CIPHER methods ------------------------------------------------- */

static int pt_init(EVP_CIPHER_CTX *ctx, const unsigned char *key,
    const unsigned char *iv, int enc)
{
    pt_ctx *c = data_of(ctx);
    const unsigned char *base_iv = iv;

    if (!ensure_base(ctx, c))
        return 0;
    /* CBC families: EVP has already put the IV to use into ctx->iv (it is
     * reset from the original IV on re-key); the base must start from it. */
    if (c->fam->cbc)
        base_iv = EVP_CIPHER_CTX_iv(ctx);
    if (!EVP_CipherInit_ex2(c->base, NULL, key, base_iv, enc, NULL))
        return 0;
    c->enc = enc;
    /* OpenSSL's stitched CBC-HMAC ciphers neither pad nor hold back a
     * block (their update and final are the stream kind): without this,
     * EVP would pad our legacy cipher and a decrypt Final would fail */
    if (c->fam->mac_len != 0)
        EVP_CIPHER_CTX_set_padding(ctx, 0);
    if (key != NULL)
        c->key_gen++;
    if (iv != NULL && c->fam->nid == NID_chacha20_poly1305)
        memcpy(c->fixed_iv, iv, 12); /* RFC 7905: the fixed IV */
    reset_pipeline(c);
    return 1;
}

static int pt_cleanup(EVP_CIPHER_CTX *ctx)
{
    pt_ctx *c = data_of(ctx);

    if (c == NULL)
        return 1;
    free_lanes(c);
    EVP_CIPHER_CTX_free(c->base);
    c->base = NULL;
    OPENSSL_cleanse(c->fixed_iv, sizeof(c->fixed_iv));
    OPENSSL_cleanse(c->aad, sizeof(c->aad));
    return 1;
}

static int set_pipes(pt_ctx *c, int *count, int arg, const void *ptr)
{
    if (ptr == NULL) {
        ERR_raise_data(ERR_LIB_EVP, ERR_R_PASSED_NULL_PARAMETER,
            "pipetls: pipeline ctrl without an array");
        c->bad = 1;
        return 0;
    }
    if (arg < 1 || arg > PIPETLS_MAX_PIPES) {
        ERR_raise_data(ERR_LIB_EVP, ERR_R_PASSED_INVALID_ARGUMENT,
            "pipetls: %d pipes, must be 1..%d", arg, PIPETLS_MAX_PIPES);
        c->bad = 1;
        return 0;
    }
    *count = arg;
    return 1;
}

static int pt_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
{
    pt_ctx *c = data_of(ctx);
    int pad;

    switch (type) {
    case EVP_CTRL_INIT:
        memset(c, 0, sizeof(*c));
        return ensure_base(ctx, c);

    case EVP_CTRL_COPY: {
        /* EVP has copied our struct byte for byte into the new context */
        pt_ctx *d = data_of((EVP_CIPHER_CTX *)ptr);

        memset(d->lane, 0, sizeof(d->lane));
        memset(d->lane_gen, 0, sizeof(d->lane_gen));
        memset(d->scratch, 0, sizeof(d->scratch));
        memset(d->scratch_len, 0, sizeof(d->scratch_len));
        d->base = NULL;
        reset_pipeline(d);
        if (c->base != NULL) {
            if ((d->base = EVP_CIPHER_CTX_new()) == NULL
                || !EVP_CIPHER_CTX_copy(d->base, c->base)) {
                EVP_CIPHER_CTX_free(d->base);
                d->base = NULL;
                return 0;
            }
        }
        return 1;
    }

    case EVP_CTRL_SET_PIPELINE_OUTPUT_BUFS:
        if (!set_pipes(c, &c->n_out, arg, ptr))
            return 0;
        memcpy(c->out_bufs, ptr, sizeof(unsigned char *) * (size_t)arg);
        return 1;
    case EVP_CTRL_SET_PIPELINE_INPUT_BUFS:
        if (!set_pipes(c, &c->n_in, arg, ptr))
            return 0;
        memcpy(c->in_bufs, ptr, sizeof(unsigned char *) * (size_t)arg);
        return 1;
    case EVP_CTRL_SET_PIPELINE_INPUT_LENS:
        if (!set_pipes(c, &c->n_len, arg, ptr))
            return 0;
        memcpy(c->lens, ptr, sizeof(size_t) * (size_t)arg);
        return 1;

    case EVP_CTRL_AEAD_TLS1_AAD:
        if (!c->fam->tls_aad)
            return -1;
        if (arg != PT_TLS_AAD_LEN || ptr == NULL)
            return 0;
        if (c->n_aad >= PIPETLS_MAX_PIPES) {
            ERR_raise_data(ERR_LIB_EVP, ERR_R_PASSED_INVALID_ARGUMENT,
                "pipetls: more than %d TLS AADs before one cipher call",
                PIPETLS_MAX_PIPES);
            c->bad = 1;
            return 0;
        }
        pad = c->fam->tls_pad(c->fam, ptr, EVP_CIPHER_CTX_is_encrypting(ctx));
        if (pad <= 0)
            return pad;
        memcpy(c->aad[c->n_aad++], ptr, PT_TLS_AAD_LEN);
        return pad;

    case EVP_CTRL_GCM_SET_IV_FIXED:
        if (c->fam->nid == NID_aes_128_gcm || c->fam->nid == NID_aes_256_gcm) {
            if (arg == -1) {
                /* ptr holds the whole IV: its length may be below 12 */
                int n = c->base != NULL ? EVP_CIPHER_CTX_get_iv_length(c->base) : 0;

                if (ptr != NULL && n > 0)
                    memcpy(c->fixed_iv, ptr, n < 12 ? (size_t)n : 12);
            } else if (arg == 4 && ptr != NULL) {
                memcpy(c->fixed_iv, ptr, 4);
            }
        }
        break;

    case EVP_CTRL_AEAD_SET_MAC_KEY:
    case EVP_CTRL_AEAD_SET_IVLEN:
        c->key_gen++; /* lane contexts must be copied again */
        break;

    /* legacy ctrls that OpenSSL does not map onto provider contexts */
    case EVP_CTRL_GET_IVLEN:
        if (c->base == NULL || ptr == NULL)
            return 0;
        *(int *)ptr = EVP_CIPHER_CTX_get_iv_length(c->base);
        return *(int *)ptr > 0;

    case EVP_CTRL_TLS1_1_MULTIBLOCK_MAX_BUFSIZE:
    case EVP_CTRL_TLS1_1_MULTIBLOCK_AAD:
    case EVP_CTRL_TLS1_1_MULTIBLOCK_ENCRYPT:
    case EVP_CTRL_TLS1_1_MULTIBLOCK_DECRYPT:
        return -1; /* we pipeline instead */
    }
    if (c->base == NULL)
        return 0;
    return EVP_CIPHER_CTX_ctrl(c->base, type, arg, ptr);
}

/* ---- batches ------------------------------------------------------------- */

/* Batch jobs: one record, or a group of PT_GROUP records (job i of a
 * grouped batch covers records PT_GROUP*i .. PT_GROUP*i+3, the tail ones
 * are single records). */
typedef struct {
    pt_ctx *c;
    pt_record *recs;
    int enc;
    int groups; /* jobs 0..groups-1 are groups */
} pt_job;

static int run_record(void *arg, int i)
{
    pt_job *j = arg;
    int first, k;

    if (i >= j->groups) {
        first = j->groups * PT_GROUP + (i - j->groups);
        return j->c->fam->record(j->c, j->c->lane[first], &j->recs[first], j->enc) < 0;
    }
    first = i * PT_GROUP;
    if (j->c->fam->group(j->c, j->c->lane[first], &j->recs[first], i) == 0)
        return 0;
    /* the group could not go as one: one record at a time, same lane order */
    for (k = first; k < first + PT_GROUP; k++)
        if (j->c->fam->record(j->c, j->c->lane[k], &j->recs[k], j->enc) < 0)
            return 1;
    return 0;
}

static _Atomic int multiblock_on = 1;

int pt_multiblock_enabled(void)
{
    return multiblock_on;
}

int pt_set_multiblock(long on)
{
    if (on != 0 && on != 1)
        return 0;
    multiblock_on = (int)on;
    return 1;
}

/* Lane context i keyed like base (copied once per key). */
static int ensure_lane(pt_ctx *c, int i)
{
    if (c->lane[i] != NULL && c->lane_gen[i] == c->key_gen)
        return 1;
    if (c->lane[i] == NULL && (c->lane[i] = EVP_CIPHER_CTX_new()) == NULL)
        return 0;
    if (!EVP_CIPHER_CTX_copy(c->lane[i], c->base))
        return 0;
    c->lane_gen[i] = c->key_gen;
    c->lane_seq[i] = UINT64_MAX;
    c->lane_iv_ok[i] = 0;
    return 1;
}

/*
 * Runs n records. CBC families: in a batch every record starts from the
 * context's IV when encrypting (TLS 1.1+ records begin with a random block
 * from libssl, RFC 4346 6.2.3.2 (2)(b)), and from the previous record's last
 * ciphertext block when decrypting (the same answer as one record at a time).
 * Afterwards the context IV is the last ciphertext block, as after OpenSSL's
 * own CBC. Returns 0 on success, -1 when any record failed (then no output of
 * the batch is left for the caller: it is cleansed).
 */
static int run_batch(EVP_CIPHER_CTX *ctx, pt_ctx *c, pt_record *recs, int n)
{
    pt_job job = { c, recs, EVP_CIPHER_CTX_is_encrypting(ctx), 0 };
    size_t sizes[PIPETLS_MAX_PIPES];
    int counts[PIPETLS_MAX_PIPES];
    unsigned char next_iv[16];
    int i, failed, jobs, last = -1; /* the last record of a block or more */

    for (i = 0; i < n; i++) {
        /* a record needs both buffers: EVP_CipherUpdate(out NULL) after a
         * TLS AAD (an AAD update, not a record) or a NULL pipe entry */
        if (recs[i].out == NULL || recs[i].in == NULL) {
            ERR_raise_data(ERR_LIB_EVP, ERR_R_PASSED_NULL_PARAMETER,
                "pipetls: TLS record %d without an %s buffer", i,
                recs[i].out == NULL ? "output" : "input");
            return -1;
        }
        sizes[i] = recs[i].len;
        counts[i] = 1;
        recs[i].pipe = i;
        if (recs[i].len >= 16)
            last = i;
        if (!ensure_lane(c, i))
            return -1;
        if (c->fam->cbc) {
            if (recs[i].len % 16 != 0)
                return -1;
            if (job.enc || i == 0)
                memcpy(recs[i].iv, EVP_CIPHER_CTX_iv(ctx), 16);
            else if (recs[i - 1].len >= 16)
                memcpy(recs[i].iv, recs[i - 1].in + recs[i - 1].len - 16, 16);
            else
                memcpy(recs[i].iv, recs[i - 1].iv, 16);
        }
    }
    /* the chain goes on from the last ciphertext block of the batch, even
     * when empty records follow it (as one record at a time would) */
    if (c->fam->cbc && !job.enc && last >= 0)
        memcpy(next_iv, recs[last].in + recs[last].len - 16, 16);

    /* stitched CBC-HMAC, encrypting: equal records go in groups of four
     * through OpenSSL's MULTIBLOCK code on each lane */
    jobs = n;
    if (job.enc && c->fam->group != NULL && n >= PT_GROUP && multiblock_on
        && c->fam->groupable(c->fam, recs, n)) {
        job.groups = n / PT_GROUP;
        jobs = job.groups + n % PT_GROUP;
        for (i = 0; i < jobs; i++) {
            int first = i < job.groups ? i * PT_GROUP : job.groups * PT_GROUP + (i - job.groups);
            int k, cnt = i < job.groups ? PT_GROUP : 1;

            sizes[i] = 0;
            counts[i] = cnt;
            for (k = first; k < first + cnt; k++)
                sizes[i] += recs[k].len;
        }
    }

    failed = pt_lanes_run(run_record, &job, jobs, sizes, counts);
    if (failed != 0) {
        for (i = 0; i < n; i++)
            if (!job.enc)
                OPENSSL_cleanse(recs[i].out, recs[i].len);
        return -1;
    }
    if (c->fam->cbc && last >= 0) {
        if (job.enc)
            memcpy(next_iv, recs[last].out + recs[last].len - 16, 16);
        memcpy(EVP_CIPHER_CTX_iv_noconst(ctx), next_iv, 16);
        if (!pt_set_iv(c->base, next_iv))
            return -1;
    }
    return 0;
}

static int pt_do_cipher(EVP_CIPHER_CTX *ctx, unsigned char *out,
    const unsigned char *in, size_t len)
{
    pt_ctx *c = data_of(ctx);
    const int fail = c->fam != NULL && c->fam->custom_cipher ? -1 : 0;
    pt_record recs[PIPETLS_MAX_PIPES];
    int i, n, rc;

    if (c->base == NULL)
        return fail;

    if (c->n_out || c->n_in || c->n_len || c->bad) {
        /* a pipelined batch */
        n = c->n_out;
        if (c->bad) {
            rc = fail;
        } else if (c->n_in != n || c->n_len != n) {
            ERR_raise_data(ERR_LIB_EVP, ERR_R_PASSED_INVALID_ARGUMENT,
                "pipetls: pipe counts disagree (out %d, in %d, lens %d)",
                c->n_out, c->n_in, c->n_len);
            rc = fail;
        } else if (c->fam->tls_aad ? c->n_aad != n : c->n_aad != 0) {
            ERR_raise_data(ERR_LIB_EVP, ERR_R_PASSED_INVALID_ARGUMENT,
                "pipetls: %d pipes but %d TLS AADs", n, c->n_aad);
            rc = fail;
        } else {
            for (i = 0; i < n; i++) {
                recs[i].out = c->out_bufs[i];
                recs[i].in = c->in_bufs[i];
                recs[i].len = c->lens[i];
                if (c->fam->tls_aad)
                    memcpy(recs[i].aad, c->aad[i], PT_TLS_AAD_LEN);
            }
            rc = run_batch(ctx, c, recs, n) == 0 ? (c->fam->custom_cipher ? (int)n : 1) : fail;
        }
        reset_pipeline(c);
        return rc;
    }

    if (c->n_aad > 0) {
        /* one TLS record */
        if (c->n_aad != 1) {
            ERR_raise_data(ERR_LIB_EVP, ERR_R_PASSED_INVALID_ARGUMENT,
                "pipetls: %d TLS AADs for one record", c->n_aad);
            reset_pipeline(c);
            return fail;
        }
        recs[0].out = out;
        recs[0].in = in;
        recs[0].len = len;
        memcpy(recs[0].aad, c->aad[0], PT_TLS_AAD_LEN);
        reset_pipeline(c);
        if (run_batch(ctx, c, recs, 1) != 0)
            return fail;
        return c->fam->custom_cipher ? recs[0].result : 1;
    }

    /* plain EVP use (TLS 1.3 records among others): OpenSSL's own cipher */
    pt_stats_stream(in != NULL ? len : 0);
    if (c->fam->custom_cipher) {
        int outl = 0;

        if (in != NULL) {
            if (len > INT_MAX || !EVP_CipherUpdate(c->base, out, &outl, in, (int)len))
                return -1;
        } else if (!EVP_CipherFinal_ex(c->base, out, &outl)) {
            return -1;
        }
        return outl;
    } else {
        unsigned char last[16];
        int enc = EVP_CIPHER_CTX_is_encrypting(ctx);

        if (len == 0)
            return 1;
        if (len > INT_MAX || len < 16)
            return 0;
        if (!enc)
            memcpy(last, in + len - 16, 16);
        if (EVP_Cipher(c->base, out, in, (unsigned int)len) < 0)
            return 0;
        memcpy(EVP_CIPHER_CTX_iv_noconst(ctx), enc ? out + len - 16 : last, 16);
        return 1;
    }
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

/* ---- helpers for the families ------------------------------------------- */

int pt_set_iv(EVP_CIPHER_CTX *lane, const unsigned char *iv)
{
    return EVP_CipherInit_ex2(lane, NULL, NULL, iv, -1, NULL);
}

int pt_cbc_begin(pt_ctx *c, EVP_CIPHER_CTX *lane, const pt_record *r, unsigned char last[16])
{
    int p = r->pipe;

    if (r->len >= 16)
        memcpy(last, r->in + r->len - 16, 16);
    if (c->lane_iv_ok[p] && memcmp(c->lane_iv[p], r->iv, 16) == 0)
        return 1; /* consecutive records on one lane: the chain is right */
    c->lane_iv_ok[p] = 0;
    return pt_set_iv(lane, r->iv);
}

void pt_cbc_end(pt_ctx *c, const pt_record *r, int enc, const unsigned char last[16])
{
    int p = r->pipe;

    if (r->len < 16) {
        c->lane_iv_ok[p] = 0;
        return;
    }
    memcpy(c->lane_iv[p], enc ? r->out + r->len - 16 : last, 16);
    c->lane_iv_ok[p] = 1;
}
