/*
 * fuzz_ops.c - libFuzzer target "pipetls_ops": one engine cipher driven
 * through an arbitrary sequence of the calls libssl and other EVP users make,
 * under ASan+UBSan. It checks no answers (pipetls_diff does that): what it
 * finds is a crash, a sanitizer report, a leak, or a broken invariant the
 * engine documents (a failed decrypt batch leaves no output behind).
 *
 * Input: [cipher][flags] then ops, one byte each followed by its arguments:
 *   0 INIT      EVP_CipherInit_ex with the engine's cipher (key/IV/cipher NULL
 *               or not, direction kept or flipped)
 *   1 AAD       EVP_CTRL_AEAD_TLS1_AAD: raw 13 bytes, or made to describe the
 *               next pipe's buffer; sometimes a wrong length
 *   2 MAC_KEY   EVP_CTRL_AEAD_SET_MAC_KEY, 0..79 bytes
 *   3 IV_FIXED  EVP_CTRL_GCM_SET_IV_FIXED, arg 4, -1 (the whole IV) or other
 *   4 IVLEN     EVP_CTRL_AEAD_SET_IVLEN
 *   5 PIPES     one of the three EVP_CTRL_SET_PIPELINE_* ctrls, or the
 *               patched libssl's PLAINTEXT_BUFS (the input buffers as the
 *               plaintexts): count -2..40, a NULL array or a NULL buffer in
 *               it, in place or not, lengths at or below capacity
 *   6 CIPHER    EVP_Cipher: a pending batch, or one call on fresh buffers
 *               (in NULL = final, out NULL = AAD for the AEADs)
 *   7 UPDATE    EVP_CipherUpdate / EVP_CipherFinal_ex
 *   8 TAG       EVP_CTRL_AEAD_GET_TAG / SET_TAG, 0..20 bytes
 *   9 COPY      EVP_CIPHER_CTX_copy into the other context, maybe switch
 *  10 RESET     EVP_CIPHER_CTX_reset (cleanup) or free + new
 *  11 BATCH     a whole libssl-like batch: n AADs (n-1, n+1 ...), the three
 *               ctrls with count n (or one of them off), EVP_Cipher
 *  12 ENGINE    engine commands: MULTIBLOCK 0/1, INLINE_BELOW 0/16384,
 *               OUT_OF_PLACE 0/1
 *
 * The pipe buffers: up to 40 slots, each with an input and an output buffer
 * of one capacity, made when first needed and alive until the input ends.
 * Every length handed to the engine is at most the capacity of the buffers
 * passed with it (that is the caller's contract), so a report is the engine's.
 */
#include "fuzz_common.h"

#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 40
#define PLAINTEXT_BUFS 0x2B /* EVP_CTRL_SET_PIPELINE_PLAINTEXT_BUFS (patch 0004) */
#define MAX_OPS 96
#define BUDGET (256 * 1024) /* bytes of slot capacity per input */

typedef struct {
    fz_reader r;
    const fz_cipher *c;
    EVP_CIPHER_CTX *ctx[2];
    int cur;
    int enc;
    int n_slots;
    size_t cap[SLOTS];
    unsigned char *in[SLOTS], *out[SLOTS];
    size_t budget;
    int aad_next; /* the slot the next derived AAD describes */
    /* each context's IV length as EVP_CTRL_AEAD_SET_IVLEN left it (0: the
     * cipher's default). Tracked here, not asked: EVP caches an ENGINE
     * context's IV length until its next init, so
     * EVP_CIPHER_CTX_get_iv_length can be stale in between. */
    int ivl[2];
    unsigned char key[32];
} st;

static size_t pick_len(st *s)
{
    uint8_t how = fz_u8(&s->r);
    uint16_t v = fz_u16(&s->r);

    switch (how % 4) {
    case 0:
        return v % 64;
    case 1:
        return v % 2048;
    case 2:
        return (v % 1100) & ~(size_t)15; /* block multiples */
    default:
        return v % 16700; /* up to a full record and a little more */
    }
}

static void make_slots(st *s)
{
    int i;

    if (s->n_slots > 0)
        return;
    for (i = 0; i < SLOTS; i++) {
        size_t len = pick_len(s);

        if (len > s->budget)
            len = len % 64;
        s->budget -= len < s->budget ? len : s->budget;
        s->cap[i] = len;
        s->in[i] = fz_alloc(len);
        s->out[i] = fz_alloc(len);
        fz_bytes(&s->r, s->in[i], len < 48 ? len : 48);
        if (len > 48)
            memset(s->in[i] + 48, (int)i, len - 48);
    }
    s->n_slots = SLOTS;
}

static int iv_len_now(st *s)
{
    return s->ivl[s->cur] > 0 ? s->ivl[s->cur] : s->c->iv_len;
}

/* The TLS AAD of a record whose buffer is cap bytes (what libssl passes). */
static void derived_aad(st *s, unsigned char aad[13], size_t cap, uint8_t b)
{
    size_t len = cap;
    unsigned int ver = (b & 0x40) ? 0x0301 + (b & 3) : 0x0303;
    int mac = s->c->mac_len;

    fz_bytes(&s->r, aad, 8);
    aad[8] = 23;
    aad[9] = (unsigned char)(ver >> 8);
    aad[10] = (unsigned char)ver;
    if (s->enc) {
        switch (s->c->kind) {
        case FZ_GCM:
        case FZ_CHACHA:
            len = cap >= 16 ? cap - 16 : cap;
            break;
        case FZ_HMAC: {
            /* cap = [IV block] + p + pad, pad = 16 - (p + mac) % 16 */
            size_t k = 1 + (b & 15), iv = ver >= 0x0302 ? 16 : 0;

            len = cap >= iv + (size_t)mac + k ? cap - (size_t)mac - k : cap;
            break;
        }
        default:
            break;
        }
    }
    aad[11] = (unsigned char)(len >> 8);
    aad[12] = (unsigned char)len;
}

static void op_init(st *s)
{
    uint8_t v = fz_u8(&s->r);
    EVP_CIPHER_CTX *ctx = s->ctx[s->cur];
    const EVP_CIPHER *cipher = (v & 4) && EVP_CIPHER_CTX_get0_cipher(ctx) != NULL ? NULL : s->c->ours;
    /* EVP keeps an ENGINE context of the same cipher as it is (no reset):
     * the IV length is the context's, or the default without a cipher */
    int ivlen = iv_len_now(s), enc, had = EVP_CIPHER_CTX_get0_cipher(ctx) != NULL;
    unsigned char *iv = fz_alloc((size_t)ivlen);

    fz_bytes(&s->r, iv, (size_t)ivlen);
    if (v & 8)
        fz_bytes(&s->r, s->key, 32);
    enc = (v & 0x30) == 0x30 ? -1 : (v & 0x10) ? !s->enc : s->enc;
    if (EVP_CipherInit_ex(ctx, cipher, cipher != NULL ? fz_engine : NULL,
            (v & 1) ? s->key : NULL, (v & 2) ? iv : NULL, enc) == 1 && enc != -1)
        s->enc = enc;
    if (!had)
        s->ivl[s->cur] = 0;
    s->aad_next = 0;
}

/* EVP_Cipher has no check for a context without a cipher (after a reset):
 * calling it there is the caller's error, not the engine's. */
static int has_cipher(st *s)
{
    return EVP_CIPHER_CTX_get0_cipher(s->ctx[s->cur]) != NULL;
}

static int ctrl(st *s, int type, int arg, void *ptr)
{
    return EVP_CIPHER_CTX_ctrl(s->ctx[s->cur], type, arg, ptr);
}

static void op_aad(st *s)
{
    uint8_t b = fz_u8(&s->r);
    unsigned char *aad;
    int arg = 13;

    if ((b & 0x80) && (b & 0x30) == 0x30)
        arg = (int)(fz_u8(&s->r) % 20) - 2; /* a wrong length */
    aad = fz_alloc(arg > 13 ? (size_t)arg : 13);
    if (b & 0x80) {
        fz_bytes(&s->r, aad, 13);
    } else {
        make_slots(s);
        derived_aad(s, aad, s->cap[s->aad_next % SLOTS], b);
        s->aad_next++;
    }
    ctrl(s, EVP_CTRL_AEAD_TLS1_AAD, arg, aad);
}

static void op_mac_key(st *s)
{
    size_t len = fz_u8(&s->r) % 80;
    unsigned char *k = fz_alloc(len);

    fz_bytes(&s->r, k, len);
    ctrl(s, EVP_CTRL_AEAD_SET_MAC_KEY, (int)len, k);
}

static void op_iv_fixed(st *s)
{
    uint8_t b = fz_u8(&s->r);
    int arg = b % 4 == 0 ? -1 : b % 4 == 1 ? 4 : (int)(b % 24);
    size_t len = arg == -1 ? (size_t)iv_len_now(s) : (size_t)arg;
    unsigned char *p;

    /* OpenSSL 3.0's GCM (providers/.../ciphercommon_gcm.c setivfixed)
     * overruns its own context when the fixed part is longer than an IV
     * length set below it: its defect, reached the same way without the
     * engine, so not asked for here */
    if (arg > 0 && arg > iv_len_now(s))
        return;
    p = fz_alloc(len);
    fz_bytes(&s->r, p, len);
    ctrl(s, EVP_CTRL_GCM_SET_IV_FIXED, arg, p);
}

static void op_ivlen(st *s)
{
    uint8_t b = fz_u8(&s->r);

    int arg = b < 200 ? b % 20 : b;

    if (ctrl(s, EVP_CTRL_AEAD_SET_IVLEN, arg, NULL) > 0)
        s->ivl[s->cur] = arg;
}

/* One of the three pipeline ctrls, on the slots. */
static void pipe_ctrl(st *s, int which, int count, int null_array, int in_place, int shorter,
    int null_entry)
{
    unsigned char *ptrs[SLOTS];
    size_t lens[SLOTS];
    int i;

    make_slots(s);
    for (i = 0; i < SLOTS; i++) {
        ptrs[i] = which == 0 && !in_place ? s->out[i] : s->in[i];
        /* a length below the capacity is legal too (a shorter record) */
        lens[i] = shorter && s->cap[i] > 0 ? s->cap[i] - 1 - (size_t)(i % 16) % s->cap[i] : s->cap[i];
    }
    if (null_entry >= 0 && which != 2)
        ptrs[null_entry % SLOTS] = NULL; /* a buffer missing: to be refused */
    switch (which) {
    case 0:
        ctrl(s, EVP_CTRL_SET_PIPELINE_OUTPUT_BUFS, count, null_array ? NULL : ptrs);
        break;
    case 1:
        ctrl(s, EVP_CTRL_SET_PIPELINE_INPUT_BUFS, count, null_array ? NULL : ptrs);
        break;
    case 3:
        ctrl(s, PLAINTEXT_BUFS, count, null_array ? NULL : ptrs);
        break;
    default:
        ctrl(s, EVP_CTRL_SET_PIPELINE_INPUT_LENS, count, null_array ? NULL : lens);
        break;
    }
}

static void op_pipes(st *s)
{
    uint8_t a = fz_u8(&s->r), b = fz_u8(&s->r);

    pipe_ctrl(s, a % 4, (int)(b % 43) - 2, (a & 0xc0) == 0xc0, (a >> 2) & 1, (a >> 3) & 1,
        (a & 0xc0) == 0x80 ? (a >> 4) & 3 : -1);
}

static void op_cipher(st *s)
{
    uint8_t b = fz_u8(&s->r);
    size_t len = pick_len(s), olen = len;
    unsigned char *in, *out;
    int custom = s->c->kind == FZ_GCM || s->c->kind == FZ_CHACHA;

    if (!has_cipher(s))
        return;
    if (!custom) /* EVP_Cipher of a block cipher writes whole blocks */
        olen = (len + 15) & ~(size_t)15;
    in = fz_alloc(olen);
    fz_bytes(&s->r, in, len < 64 ? len : 64);
    if (len > 64)
        memset(in + 64, 0xa5, len - 64);
    out = (b & 1) ? in : fz_alloc(olen);
    if (custom && (b & 0x06) == 0x06)
        EVP_Cipher(s->ctx[s->cur], out, NULL, 0); /* final */
    else if (custom && (b & 0x06) == 0x04)
        EVP_Cipher(s->ctx[s->cur], NULL, in, (unsigned int)len); /* AAD */
    else
        EVP_Cipher(s->ctx[s->cur], out, in, (unsigned int)len);
    s->aad_next = 0;
}

static void op_update(st *s)
{
    uint8_t b = fz_u8(&s->r);
    size_t len = pick_len(s);
    unsigned char *in = fz_alloc(len), *out = fz_alloc(len + 32);
    int outl = 0;

    fz_bytes(&s->r, in, len < 64 ? len : 64);
    if (len > 64)
        memset(in + 64, 0x5a, len - 64);
    if (b & 1)
        EVP_CipherFinal_ex(s->ctx[s->cur], out, &outl);
    else if ((b & 2) && (s->c->kind == FZ_GCM || s->c->kind == FZ_CHACHA))
        EVP_CipherUpdate(s->ctx[s->cur], NULL, &outl, in, (int)len); /* AAD */
    else
        EVP_CipherUpdate(s->ctx[s->cur], out, &outl, in, (int)len);
    if (b & 4)
        EVP_CIPHER_CTX_set_padding(s->ctx[s->cur], 0);
}

static void op_tag(st *s)
{
    uint8_t b = fz_u8(&s->r);
    size_t len = b % 21;
    unsigned char *t = fz_alloc(len);

    fz_bytes(&s->r, t, len);
    ctrl(s, (b & 0x80) ? EVP_CTRL_AEAD_SET_TAG : EVP_CTRL_AEAD_GET_TAG, (int)len, t);
}

static void op_copy(st *s)
{
    uint8_t b = fz_u8(&s->r);
    EVP_CIPHER_CTX *dst = s->ctx[!s->cur];

    int ok = EVP_CIPHER_CTX_copy(dst, s->ctx[s->cur]) == 1;

    s->ivl[!s->cur] = s->ivl[s->cur];
    if (ok && (b & 1))
        s->cur = !s->cur;
}

static void op_reset(st *s)
{
    uint8_t b = fz_u8(&s->r);

    if (b & 1) {
        EVP_CIPHER_CTX_free(s->ctx[s->cur]);
        s->ctx[s->cur] = EVP_CIPHER_CTX_new();
    } else {
        EVP_CIPHER_CTX_reset(s->ctx[s->cur]);
    }
    s->ivl[s->cur] = 0;
}

/* libssl's sequence for one batch, with one thing perhaps off. */
static void op_batch(st *s)
{
    uint8_t a = fz_u8(&s->r), b = fz_u8(&s->r), d = fz_u8(&s->r);
    int n = 1 + a % 32, n_aad = n, i, skip = -1;
    int tls_aad = s->c->kind != FZ_CBC;
    unsigned char aad[13];

    make_slots(s);
    switch (b % 8) {
    case 0:
        n_aad = n - 1;
        break;
    case 1:
        n_aad = n + 1;
        break;
    case 2:
        skip = b / 8 % 3; /* one ctrl left out */
        break;
    case 3:
        n = 33 + b / 8 % 8; /* too many */
        n_aad = 32;
        break;
    default:
        break;
    }
    if (tls_aad)
        for (i = 0; i < n_aad && i < SLOTS; i++) {
            derived_aad(s, aad, s->cap[i], d);
            ctrl(s, EVP_CTRL_AEAD_TLS1_AAD, 13, aad);
        }
    for (i = 0; i < 3; i++)
        if (i != skip)
            pipe_ctrl(s, i, n, 0, d & 0x80, 0, -1);
    if (has_cipher(s))
        EVP_Cipher(s->ctx[s->cur], s->in[0], s->in[0], (unsigned int)s->cap[0]);
    s->aad_next = 0;
}

static void op_engine(st *s)
{
    uint8_t b = fz_u8(&s->r);

    fz_engine_cmd(b & 4 ? "OUT_OF_PLACE" : b & 2 ? "INLINE_BELOW" : "MULTIBLOCK",
        b & 1 ? "1" : "0");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st s;
    int ops = 0, i;

    memset(&s, 0, sizeof(s));
    if ((s.c = fz_start(&s.r, data, size)) == NULL)
        return 0;
    s.enc = fz_u8(&s.r) & 1;
    s.budget = BUDGET;
    fz_bytes(&s.r, s.key, 32);
    s.ctx[0] = EVP_CIPHER_CTX_new();
    s.ctx[1] = EVP_CIPHER_CTX_new();
    if (s.ctx[0] == NULL || s.ctx[1] == NULL)
        abort();
    /* keyed to start with, as libssl's contexts are */
    EVP_CipherInit_ex(s.ctx[0], s.c->ours, fz_engine, s.key, NULL, s.enc);
    while (s.r.n > 0 && ops++ < MAX_OPS) {
        switch (fz_u8(&s.r) % 13) {
        case 0: op_init(&s); break;
        case 1: op_aad(&s); break;
        case 2: op_mac_key(&s); break;
        case 3: op_iv_fixed(&s); break;
        case 4: op_ivlen(&s); break;
        case 5: op_pipes(&s); break;
        case 6: op_cipher(&s); break;
        case 7: op_update(&s); break;
        case 8: op_tag(&s); break;
        case 9: op_copy(&s); break;
        case 10: op_reset(&s); break;
        case 11: op_batch(&s); break;
        default: op_engine(&s); break;
        }
    }
    /* the contexts go before the buffers their last ctrls named */
    for (i = 0; i < 2; i++)
        EVP_CIPHER_CTX_free(s.ctx[i]);
    fz_free_all();
    fz_engine_cmd("MULTIBLOCK", "1");
    fz_engine_cmd("INLINE_BELOW", "16384");
    ERR_clear_error();
    return 0;
}
