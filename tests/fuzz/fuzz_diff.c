/*
 * fuzz_diff.c - libFuzzer target "pipetls_diff": every engine answer against
 * OpenSSL's own cipher (invariant 1), under ASan+UBSan.
 *
 * Input: [cipher][flags] ... ; flags bit 7 picks the mode.
 *
 * Stream mode: one engine context and one context of OpenSSL's own cipher
 * (the default provider's), keyed alike, get the same calls - Update, AAD
 * update, Final, EVP_Cipher, tag get/set, IV length, re-init with a new IV or
 * key, padding, copy - and must give the same success or failure, lengths and
 * bytes.
 *
 * TLS mode: keyed like libssl keys them (GCM: fixed IV by
 * EVP_CTRL_GCM_SET_IV_FIXED 4; ChaCha20: the 12-byte fixed IV; CBC-HMAC: MAC
 * key), engine contexts get batches of 1..32 TLS 1.2 records through the
 * pipeline ctrls (or one record by EVP_Cipher), each record compared with
 * OpenSSL's TLS record mode on a fresh context: the same EVP_CTRL_AEAD_TLS1_AAD
 * answer, the same bytes out, and the batch fails exactly when a record fails
 * (a failed decrypt batch leaves no record's plaintext behind). Decrypt
 * batches are valid records made by OpenSSL, sometimes damaged or replaced by
 * garbage. The one allowed difference: the engine refuses a record whose AAD
 * length does not describe its buffer, which OpenSSL would process anyway.
 * With MULTIBLOCK on (CBC_HMAC_MODE multiblock, or auto when flag 8 is set
 * too), stitched-cipher records encrypted four or eight at a time carry
 * OpenSSL's random explicit IVs: those are checked by decrypting them.
 *
 * The model of the CBC chain (the engine's documented semantics): in an
 * encrypt batch every record starts from the context's IV; in a decrypt
 * batch from the previous record's last ciphertext block, as one record at a
 * time would; afterwards the IV is the last ciphertext block of the batch
 * (empty records after it change nothing).
 */
#include "fuzz_common.h"

#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PIPES 32
#define BUDGET (96 * 1024)

typedef struct {
    fz_reader r;
    const fz_cipher *c;
    int enc;
    unsigned char key[32], iv[16], fixed[12], mac[32];
    size_t budget;
} dst;

static int custom(const fz_cipher *c)
{
    return c->kind == FZ_GCM || c->kind == FZ_CHACHA;
}

static size_t pick_len(dst *d, size_t max)
{
    uint8_t how = fz_u8(&d->r);
    uint16_t v = fz_u16(&d->r);
    size_t len;

    switch (how % 4) {
    case 0:
        len = v % 48;
        break;
    case 1:
        len = v % 600;
        break;
    case 2:
        len = v % 2100;
        break;
    default:
        len = v % 16385;
        break;
    }
    if (len > max)
        len = max;
    if (len > d->budget)
        len = d->budget % 64;
    d->budget -= len < d->budget ? len : d->budget;
    return len;
}

static void fill(dst *d, unsigned char *p, size_t len)
{
    size_t k = len < 32 ? len : 32, i;

    fz_bytes(&d->r, p, k);
    for (i = k; i < len; i++)
        p[i] = (unsigned char)(p[i % 32] + i);
}

/* success as EVP_Cipher reports it: an engine cipher of the legacy kind
 * returns 1/0, custom ciphers and every provider cipher the length or -1 */
static int cipher_ok(const fz_cipher *c, int engine, int rc)
{
    return engine && !custom(c) ? rc == 1 : rc >= 0;
}

/* ======================================================== stream mode */

static EVP_CIPHER_CTX *new_pair_ctx(dst *d, int engine, const unsigned char *iv)
{
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int ok;

    if (x == NULL)
        abort();
    if (engine)
        ok = EVP_CipherInit_ex(x, d->c->ours, fz_engine, d->key, iv, d->enc);
    else
        ok = EVP_CipherInit_ex2(x, d->c->impl, d->key, iv, d->enc, NULL);
    FZ_CHECK(ok == 1, "%s: %s key setup failed", d->c->name, engine ? "engine" : "OpenSSL");
    return x;
}

static int ivlen_of(EVP_CIPHER_CTX *x)
{
    int n = EVP_CIPHER_CTX_get_iv_length(x);

    ERR_clear_error();
    return n;
}

static void stream_mode(dst *d)
{
    const fz_cipher *c = d->c;
    unsigned char iv[16];
    EVP_CIPHER_CTX *e, *o;
    int ops = 0, finals = 0, api = 0;

    fz_bytes(&d->r, iv, 16);
    e = new_pair_ctx(d, 1, iv);
    o = new_pair_ctx(d, 0, iv);
    while (d->r.n > 0 && ops++ < 48) {
        uint8_t op = fz_u8(&d->r), b = fz_u8(&d->r);

        FZ_TRACE("stream %s op %d b %02x\n", c->name, op % 11, b);
        /* after Final only a new init is legal (EVP_EncryptInit(3)): EVP's
         * legacy Final, which the engine's cipher goes through, and
         * OpenSSL's provider answer a second Final differently */
        if (finals > 0 && (op % 11 <= 2 || op % 11 == 7))
            continue;
        /* a block cipher is used through Update/Final or through EVP_Cipher,
         * not both between two inits: legacy EVP decrypts the block it holds
         * back, the provider keeps it undecrypted, so the CBC chain differs */
        if (!custom(c) && op % 11 <= 2)
            api |= 1;
        if (!custom(c) && op % 11 == 7)
            api |= 2;
        if (api == 3) {
            api = op % 11 == 7 ? 1 : 2;
            continue;
        }

        switch (op % 11) {
        case 0: /* update */
        case 1: { /* AAD update (AEADs) */
            size_t len = pick_len(d, 20000);
            unsigned char *in = fz_alloc(len), *oe = fz_alloc(len + 16), *oo = fz_alloc(len + 16);
            int le = -1, lo = -1, re, ro, aad = op % 11 == 1 && custom(c);

            /* OpenSSL's stitched ciphers take whole blocks only and refuse a
             * part (stream update); EVP buffers a part for our legacy cipher
             * until the block is whole: a known difference, not asked for */
            if (c->kind == FZ_HMAC)
                len &= ~(size_t)15;

            fill(d, in, len);
            re = EVP_CipherUpdate(e, aad ? NULL : oe, &le, in, (int)len);
            ro = EVP_CipherUpdate(o, aad ? NULL : oo, &lo, in, (int)len);
            FZ_CHECK((re == 1) == (ro == 1), "%s update(%zu%s): engine %d, OpenSSL %d",
                c->name, len, aad ? ", AAD" : "", re, ro);
            if (re == 1) {
                FZ_CHECK(le == lo, "%s update(%zu): engine %d bytes, OpenSSL %d", c->name, len, le, lo);
                FZ_CHECK(aad || le <= 0 || memcmp(oe, oo, (size_t)le) == 0,
                    "%s update(%zu): bytes differ", c->name, len);
            }
            break;
        }
        case 2: { /* final */
            unsigned char oe[32], oo[32];
            int le = -1, lo = -1, re, ro;

            re = EVP_CipherFinal_ex(e, oe, &le);
            ro = EVP_CipherFinal_ex(o, oo, &lo);
            FZ_CHECK((re == 1) == (ro == 1), "%s final: engine %d, OpenSSL %d", c->name, re, ro);
            if (re == 1)
                FZ_CHECK(le == lo && (le <= 0 || memcmp(oe, oo, (size_t)le) == 0),
                    "%s final: engine %d bytes, OpenSSL %d (or bytes differ)", c->name, le, lo);
            finals++;
            break;
        }
        case 3: /* get / set tag */
        case 4: {
            size_t len = 1 + b % 16;
            unsigned char *te = fz_alloc(len), *to = fz_alloc(len);
            int type = op % 11 == 3 ? EVP_CTRL_AEAD_GET_TAG : EVP_CTRL_AEAD_SET_TAG, re, ro;

            fz_bytes(&d->r, te, len);
            memcpy(to, te, len);
            re = EVP_CIPHER_CTX_ctrl(e, type, (int)len, te);
            ro = EVP_CIPHER_CTX_ctrl(o, type, (int)len, to);
            FZ_CHECK((re > 0) == (ro > 0), "%s %s tag(%zu): engine %d, OpenSSL %d", c->name,
                type == EVP_CTRL_AEAD_GET_TAG ? "get" : "set", len, re, ro);
            if (re > 0 && type == EVP_CTRL_AEAD_GET_TAG)
                FZ_CHECK(memcmp(te, to, len) == 0, "%s get tag: bytes differ", c->name);
            break;
        }
        case 5: /* new IV, or new key and maybe IV */
        case 6: {
            int le = ivlen_of(e), lo = ivlen_of(o), re, ro;
            size_t n = (size_t)(le > lo ? le : lo);
            unsigned char *niv = fz_alloc(n);
            int with_iv = op % 11 == 5 || (b & 1);

            /* le and lo may differ here: EVP caches an ENGINE context's IV
             * length and a legacy ctrl (EVP_CTRL_AEAD_SET_IVLEN) does not
             * clear the cache until the next init (OpenSSL's evp_enc.c) */
            fz_bytes(&d->r, niv, n);
            if (op % 11 == 6)
                fz_bytes(&d->r, d->key, 32);
            re = EVP_CipherInit_ex(e, NULL, NULL, op % 11 == 6 ? d->key : NULL,
                with_iv ? niv : NULL, -1);
            ro = EVP_CipherInit_ex2(o, NULL, op % 11 == 6 ? d->key : NULL,
                with_iv ? niv : NULL, -1, NULL);
            FZ_CHECK(re == ro, "%s re-init: engine %d, OpenSSL %d", c->name, re, ro);
            if (re == 1)
                finals = api = 0;
            break;
        }
        case 7: { /* EVP_Cipher */
            size_t len = pick_len(d, 20000);
            unsigned char *in, *oe, *oo;
            /* EVP_Cipher(in NULL): a legacy custom cipher cannot tell it
             * from EVP_CipherFinal_ex, and the engine finishes (computes the
             * tag) as Final does; OpenSSL's ChaCha20-Poly1305 takes it as an
             * empty update. Asked of GCM only, where both finish. */
            int re, ro, final = c->kind == FZ_GCM && (b & 3) == 3;

            if (!custom(c))
                len &= ~(size_t)15; /* whole blocks: EVP_Cipher's contract */
            in = fz_alloc(len);
            oe = fz_alloc(len);
            oo = fz_alloc(len);
            fill(d, in, len);
            /* The legacy calling convention of a custom cipher cannot tell
             * EVP_Cipher(in, 0) from EVP_CipherUpdate(in, 0): the engine
             * does the latter; OpenSSL's own EVP_Cipher takes its one-shot
             * path, whose answer and state after it differ (it fails once the
             * tag is done, and changes how a later key-only init treats the
             * IV). Not asked. */
            if (custom(c) && !final && len == 0)
                break;
            re = EVP_Cipher(e, oe, final ? NULL : in, final ? 0 : (unsigned int)len);
            ro = EVP_Cipher(o, oo, final ? NULL : in, final ? 0 : (unsigned int)len);
            FZ_TRACE("EVP_Cipher(%zu%s): engine %d, OpenSSL %d\n", len, final ? ", final" : "", re, ro);
            finals += final;
            FZ_CHECK(cipher_ok(c, 1, re) == cipher_ok(c, 0, ro),
                "%s EVP_Cipher(%zu%s): engine %d, OpenSSL %d", c->name, len,
                final ? ", final" : "", re, ro);
            if (cipher_ok(c, 1, re)) {
                FZ_CHECK(!custom(c) || re == ro, "%s EVP_Cipher(%zu): engine %d, OpenSSL %d",
                    c->name, len, re, ro);
                FZ_CHECK(final || len == 0 || memcmp(oe, oo, len) == 0,
                    "%s EVP_Cipher(%zu): bytes differ", c->name, len);
            }
            break;
        }
        case 8: { /* IV length (the AEADs) */
            int arg = 1 + b % 20, re, ro;

            if (!custom(c))
                break;
            re = EVP_CIPHER_CTX_ctrl(e, EVP_CTRL_AEAD_SET_IVLEN, arg, NULL);
            ro = EVP_CIPHER_CTX_ctrl(o, EVP_CTRL_AEAD_SET_IVLEN, arg, NULL);
            FZ_CHECK((re > 0) == (ro > 0), "%s set IV length %d: engine %d, OpenSSL %d",
                c->name, arg, re, ro);
            break;
        }
        case 9:
            if (c->kind == FZ_HMAC)
                break; /* padding means nothing to OpenSSL's stitched ciphers */
            if (api != 0 || finals != 0)
                break; /* set after init, before data (EVP_CIPHER_CTX_set_padding(3)) */
            EVP_CIPHER_CTX_set_padding(e, b & 1);
            EVP_CIPHER_CTX_set_padding(o, b & 1);
            break;
        default: { /* copy; go on with the copy or the original */
            EVP_CIPHER_CTX *e2 = EVP_CIPHER_CTX_new(), *o2 = EVP_CIPHER_CTX_new();
            int re = EVP_CIPHER_CTX_copy(e2, e), ro = EVP_CIPHER_CTX_copy(o2, o);

            FZ_CHECK(re == ro, "%s copy: engine %d, OpenSSL %d", c->name, re, ro);
            if ((b & 1) && re == 1) {
                EVP_CIPHER_CTX_free(e);
                EVP_CIPHER_CTX_free(o);
                e = e2;
                o = o2;
            } else {
                EVP_CIPHER_CTX_free(e2);
                EVP_CIPHER_CTX_free(o2);
            }
            break;
        }
        }
        ERR_clear_error();
    }
    EVP_CIPHER_CTX_free(e);
    EVP_CIPHER_CTX_free(o);
}

/* =========================================================== TLS mode */

typedef struct {
    size_t len; /* bytes of the record buffer */
    size_t plain; /* plaintext bytes (encrypting) */
    unsigned char aad[13];
    int has_aad;
    int skewed; /* the AAD's length does not describe the buffer */
    unsigned char *data; /* the record as handed to the engine */
    unsigned char *ref; /* OpenSSL's answer, in place */
    unsigned char *eout; /* where the engine wrote */
    unsigned char *orig; /* MULTIBLOCK: the record before the engine saw it */
    unsigned char *before; /* decrypting: the engine's output buffer before the call */
    unsigned char iv[16]; /* CBC families: the chain IV of this record */
    int ref_ok, ref_pad, eng_pad;
} rec;

static void make_aad(unsigned char a[13], uint64_t seq, unsigned int ver, size_t len)
{
    int i;

    for (i = 0; i < 8; i++)
        a[i] = (unsigned char)(seq >> (56 - 8 * i));
    a[8] = 23;
    a[9] = (unsigned char)(ver >> 8);
    a[10] = (unsigned char)ver;
    a[11] = (unsigned char)(len >> 8);
    a[12] = (unsigned char)len;
}

/* OpenSSL's TLS record mode on a fresh context: len bytes from in to out
 * (the same buffer, or one the caller filled beforehand). */
static int ref_record2(dst *d, int enc, unsigned char *out, const unsigned char *in, size_t len,
    const unsigned char *aad, const unsigned char iv[16], int *pad)
{
    const fz_cipher *c = d->c;
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    const unsigned char *kiv = c->kind == FZ_CHACHA ? d->fixed : c->kind == FZ_GCM ? NULL : iv;
    unsigned char a[13], full[12];
    int rc = -1;

    *pad = 0;
    if (x == NULL || !EVP_CipherInit_ex2(x, c->impl, d->key, kiv, enc, NULL))
        abort();
    if (c->kind == FZ_CBC)
        EVP_CIPHER_CTX_set_padding(x, 0);
    if (c->kind == FZ_GCM) {
        memcpy(full, d->fixed, 4);
        memcpy(full + 4, aad, 8); /* the nonce the engine promises: seq */
        if (EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_IV_FIXED, -1, full) != 1)
            abort();
    }
    if (c->kind == FZ_HMAC
        && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_MAC_KEY, c->mac_len, d->mac) != 1)
        abort();
    if (aad != NULL) {
        memcpy(a, aad, 13);
        *pad = EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_TLS1_AAD, 13, a);
        if (*pad <= 0)
            goto done;
    }
    rc = EVP_Cipher(x, out, in, (unsigned int)len);
done:
    EVP_CIPHER_CTX_free(x);
    ERR_clear_error();
    return rc >= 0;
}

static int ref_record(dst *d, int enc, unsigned char *buf, size_t len,
    const unsigned char *aad, const unsigned char iv[16], int *pad)
{
    return ref_record2(d, enc, buf, buf, len, aad, iv, pad);
}

static EVP_CIPHER_CTX *tls_ctx(dst *d, int enc)
{
    const fz_cipher *c = d->c;
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    const unsigned char *kiv = c->kind == FZ_CHACHA ? d->fixed : c->kind == FZ_GCM ? NULL : d->iv;

    if (x == NULL)
        abort();
    FZ_CHECK(EVP_CipherInit_ex(x, c->ours, fz_engine, d->key, kiv, enc) == 1,
        "%s: engine key setup failed", c->name);
    if (c->kind == FZ_GCM)
        FZ_CHECK(EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_IV_FIXED, 4, d->fixed) == 1,
            "%s: engine refused the fixed IV", c->name);
    if (c->kind == FZ_HMAC)
        FZ_CHECK(EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_MAC_KEY, c->mac_len, d->mac) == 1,
            "%s: engine refused the MAC key", c->name);
    return x;
}

/* The buffer of an encrypt record with p bytes of plaintext (libssl's layout). */
static void enc_layout(dst *d, rec *r, uint64_t seq, unsigned int ver, size_t p)
{
    const fz_cipher *c = d->c;
    size_t head = 0, alen = p;

    switch (c->kind) {
    case FZ_GCM:
        head = 8;
        alen = 8 + p;
        r->len = 8 + p + 16;
        break;
    case FZ_CHACHA:
        r->len = p + 16;
        break;
    case FZ_HMAC:
        head = ver >= 0x0302 ? 16 : 0;
        alen = head + p;
        r->len = head + p + (((p + (size_t)c->mac_len + 16) & ~(size_t)15) - p);
        break;
    default:
        r->len = (p + 15) & ~(size_t)15;
        break;
    }
    r->plain = p;
    r->data = fz_alloc(r->len);
    memset(r->data, 0, r->len);
    if (c->kind == FZ_HMAC && head)
        fz_bytes(&d->r, r->data, 16); /* libssl's random explicit IV */
    fill(d, r->data + head, c->kind == FZ_CBC ? r->len : p);
    r->has_aad = c->kind != FZ_CBC;
    if (r->has_aad)
        make_aad(r->aad, seq, ver, alen);
}

static void tls_mode(dst *d, uint8_t flags)
{
    const fz_cipher *c = d->c;
    EVP_CIPHER_CTX *e;
    uint64_t seq = fz_u64(&d->r);
    unsigned char iv_cur[16];
    int batches = 0, multiblock = (flags & 2) && c->kind == FZ_HMAC && d->enc;

    fz_bytes(&d->r, d->fixed, 12);
    fz_bytes(&d->r, d->iv, 16);
    fz_bytes(&d->r, d->mac, 32);
    memcpy(iv_cur, d->iv, 16);
    if (multiblock)
        fz_engine_cmd("CBC_HMAC_MODE", flags & 8 ? "auto" : "multiblock");
    e = tls_ctx(d, d->enc);

    while (d->r.n > 0 && batches++ < 8) {
        uint8_t a = fz_u8(&d->r), b = fz_u8(&d->r), t = fz_u8(&d->r);
        int n = 1 + a % MAX_PIPES, single = n == 1 && (a & 0x80), i, rc, eng_ok, ref_all = 1;
        int skewed = 0, in_place = b & 8, cbc_chain = c->kind == FZ_CBC || c->kind == FZ_HMAC;
        unsigned int ver = (b & 4) ? 0x0300 + fz_u8(&d->r) % 5 : 0x0303;
        size_t uniform = (b & 2) ? pick_len(d, 16384) : 0;
        unsigned char chain[16];
        rec rs[MAX_PIPES];
        unsigned char *outs[MAX_PIPES], *ins[MAX_PIPES];
        size_t lens[MAX_PIPES];

        if (b & 0x80)
            seq = fz_u64(&d->r); /* a jump (or a repeat) */
        memcpy(chain, iv_cur, 16);
        memset(rs, 0, sizeof(rs));
        for (i = 0; i < n; i++) {
            rec *r = &rs[i];
            size_t p = (b & 2) ? uniform : pick_len(d, 16384);

            enc_layout(d, r, seq + (uint64_t)i, ver, p);
            if (!d->enc) {
                /* a record made by OpenSSL, on the chain a decryptor sees */
                int pad, ok = ref_record(d, 1, r->data, r->len, r->has_aad ? r->aad : NULL,
                    chain, &pad);

                if (r->has_aad)
                    make_aad(r->aad, seq + (uint64_t)i, ver, r->len);
                if (!ok || ((t & 0x40) && (fz_u8(&d->r) & 7) == 0)) {
                    size_t g = pick_len(d, 4096);

                    if (c->kind != FZ_GCM && c->kind != FZ_CHACHA && !(t & 0x20))
                        g &= ~(size_t)15;
                    r->data = fz_alloc(g); /* garbage */
                    r->len = g;
                    fill(d, r->data, g);
                    if (r->has_aad)
                        make_aad(r->aad, seq + (uint64_t)i, ver, g);
                }
                if ((t & 0x80) && r->len > 0 && (fz_u8(&d->r) & 3) == 0) {
                    uint16_t pos = fz_u16(&d->r);

                    r->data[pos % r->len] ^= (unsigned char)(1 << (pos >> 13));
                }
            }
            if (c->kind == FZ_CBC && (t & 0x20) && (fz_u8(&d->r) & 7) == 0 && r->len > 0)
                r->len--; /* not whole blocks: to be refused */
            if (custom(c) && (t & 0x10) && (fz_u8(&d->r) & 7) == 0) {
                size_t alen = (size_t)r->aad[11] << 8 | r->aad[12];

                alen += 1 + fz_u8(&d->r) % 40;
                r->aad[11] = (unsigned char)(alen >> 8);
                r->aad[12] = (unsigned char)alen;
                r->skewed = skewed = 1;
            }
            /* the chain IV of record i */
            memcpy(r->iv, d->enc ? iv_cur : chain, 16);
            if (!d->enc && r->len >= 16 && r->len % 16 == 0)
                memcpy(chain, r->data + r->len - 16, 16);
            /* OpenSSL's AEADs work in place only (the engine copies an
             * out-of-place record first); its stitched decrypt leaves the
             * explicit IV block of the output alone: out of place as well */
            r->ref = fz_alloc(r->len);
            if (in_place || custom(c))
                memcpy(r->ref, r->data, r->len);
            else
                memset(r->ref, 0xee, r->len);
            if (c->kind == FZ_CBC && r->len % 16 != 0)
                r->ref_ok = 0; /* EVP_Cipher's contract: whole blocks only */
            else
                r->ref_ok = ref_record2(d, d->enc, r->ref, in_place || custom(c) ? r->ref : r->data,
                    r->len, r->has_aad ? r->aad : NULL, r->iv, &r->ref_pad);
            if (r->has_aad && r->ref_pad <= 0)
                r->ref_ok = 0;
            ref_all &= r->ref_ok;
            if (multiblock) {
                r->orig = fz_alloc(r->len);
                memcpy(r->orig, r->data, r->len);
            }
            r->eout = in_place ? r->data : fz_alloc(r->len);
            if (!in_place)
                memset(r->eout, 0xee, r->len);
            if (!d->enc) {
                r->before = fz_alloc(r->len);
                memcpy(r->before, r->eout, r->len);
            }
            outs[i] = r->eout;
            ins[i] = r->data;
            lens[i] = r->len;
        }

        FZ_TRACE("tls %s %s batch n %d ver %04x seq %llu single %d in_place %d multiblock %d\n",
            c->name, d->enc ? "enc" : "dec", n, ver, (unsigned long long)seq, single, in_place,
            multiblock);
        for (i = 0; i < n; i++)
            FZ_TRACE("  record %d len %zu plain %zu aad-len %u ref_ok %d pad %d skewed %d\n", i,
                rs[i].len, rs[i].plain, (unsigned)(rs[i].aad[11] << 8 | rs[i].aad[12]),
                rs[i].ref_ok, rs[i].ref_pad, rs[i].skewed);
        /* the engine: libssl's calls */
        for (i = 0; i < n; i++) {
            rec *r = &rs[i];
            unsigned char aad[13];

            if (!r->has_aad)
                continue;
            memcpy(aad, r->aad, 13);
            r->eng_pad = EVP_CIPHER_CTX_ctrl(e, EVP_CTRL_AEAD_TLS1_AAD, 13, aad);
            FZ_CHECK(r->eng_pad == r->ref_pad,
                "%s TLS AAD of record %d (len field %u, ver %04x, %s): engine pad %d, OpenSSL %d",
                c->name, i, (unsigned)(r->aad[11] << 8 | r->aad[12]), ver,
                d->enc ? "enc" : "dec", r->eng_pad, r->ref_pad);
        }
        /* a refused AAD ends libssl's record there; the pipelined batch is
         * still sent below: the engine must refuse it (an AAD is missing) */
        if (single && rs[0].has_aad && rs[0].ref_pad <= 0)
            break;
        if (single && c->kind == FZ_CBC && rs[0].len % 16 != 0)
            single = 0; /* EVP_Cipher of a block cipher takes whole blocks */
        if (single) {
            rc = EVP_Cipher(e, rs[0].eout, rs[0].data, (unsigned int)rs[0].len);
        } else {
            FZ_CHECK(EVP_CIPHER_CTX_ctrl(e, EVP_CTRL_SET_PIPELINE_OUTPUT_BUFS, n, outs) == 1
                    && EVP_CIPHER_CTX_ctrl(e, EVP_CTRL_SET_PIPELINE_INPUT_BUFS, n, ins) == 1
                    && EVP_CIPHER_CTX_ctrl(e, EVP_CTRL_SET_PIPELINE_INPUT_LENS, n, lens) == 1,
                "%s: pipeline ctrls refused for %d pipes", c->name, n);
            rc = EVP_Cipher(e, outs[0], ins[0], (unsigned int)lens[0]);
        }
        eng_ok = cipher_ok(c, 1, rc);
        FZ_TRACE("engine rc %d\n", rc);
        if (fz_trace)
            ERR_print_errors_fp(stderr);
        ERR_clear_error();

        if (eng_ok) {
            FZ_CHECK(ref_all, "%s %s batch of %d: the engine succeeded where OpenSSL failed",
                c->name, d->enc ? "encrypt" : "decrypt", n);
            for (i = 0; i < n; i++) {
                rec *r = &rs[i];

                if (r->len == 0 || memcmp(r->eout, r->ref, r->len) == 0)
                    continue;
                /* MULTIBLOCK: OpenSSL's random explicit IVs; must decrypt */
                if (multiblock && ver >= 0x0302) {
                    unsigned char *chk = fz_alloc(r->len), a2[13];
                    int pad;

                    memcpy(chk, r->eout, r->len);
                    memcpy(a2, r->aad, 13);
                    a2[11] = (unsigned char)(r->len >> 8);
                    a2[12] = (unsigned char)r->len;
                    FZ_CHECK(ref_record(d, 0, chk, r->len, a2, r->iv, &pad)
                            && memcmp(chk + 16, r->orig + 16, r->plain) == 0,
                        "%s MULTIBLOCK record %d of %d (%zu bytes): does not decrypt to its plaintext",
                        c->name, i, n, r->plain);
                    continue;
                }
                FZ_CHECK(0, "%s %s record %d of %d (%zu bytes, %s): engine and OpenSSL differ",
                    c->name, d->enc ? "encrypt" : "decrypt", i, n, r->len,
                    single ? "one call" : "pipelined");
            }
            if (custom(c) && single)
                FZ_CHECK(rc == (int)rs[0].len || rc >= 0, "%s: one record returned %d", c->name, rc);
        } else {
            FZ_CHECK(!ref_all || skewed,
                "%s %s batch of %d (%s): the engine failed (rc %d) where OpenSSL succeeded",
                c->name, d->enc ? "encrypt" : "decrypt", n, single ? "one call" : "pipelined", rc);
            if (!d->enc)
                for (i = 0; i < n; i++) {
                    /* the part OpenSSL decrypts: after the explicit nonce or
                     * IV block, before the tag */
                    size_t from = c->kind == FZ_GCM ? 8 : c->kind == FZ_HMAC && ver >= 0x0302 ? 16 : 0;
                    size_t to = custom(c) && rs[i].len >= 16 ? rs[i].len - 16 : rs[i].len;

                    size_t k, nonzero = 0;

                    for (k = from; k < to; k++)
                        nonzero |= rs[i].ref[k]; /* zeros: what a cleanse leaves */
                    /* what was there before the call is no leak either (a
                     * refused batch leaves the buffers alone) */
                    FZ_CHECK(!rs[i].ref_ok || to <= from || nonzero == 0
                            || memcmp(rs[i].before + from, rs[i].ref + from, to - from) == 0
                            || memcmp(rs[i].eout + from, rs[i].ref + from, to - from) != 0,
                        "%s failed decrypt batch: record %d's plaintext left behind", c->name, i);
                }
            break; /* libssl ends the connection */
        }

        /* the model's next state */
        seq += (uint64_t)n;
        if (cbc_chain && d->enc) {
            for (i = n - 1; i >= 0; i--) /* the last ciphertext block */
                if (rs[i].len >= 16) {
                    memcpy(iv_cur, rs[i].eout + rs[i].len - 16, 16);
                    break;
                }
        } else if (cbc_chain) {
            memcpy(iv_cur, chain, 16);
        }
    }
    EVP_CIPHER_CTX_free(e);
    if (multiblock)
        fz_engine_cmd("MULTIBLOCK", "0");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_init();
    /* bit-exact with OpenSSL's record mode unless an input asks otherwise */
    fz_engine_cmd("MULTIBLOCK", "0");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dst d;
    uint8_t flags;

    memset(&d, 0, sizeof(d));
    if ((d.c = fz_start(&d.r, data, size)) == NULL)
        return 0;
    flags = fz_u8(&d.r);
    d.enc = flags & 1;
    d.budget = BUDGET;
    fz_bytes(&d.r, d.key, 32);
    if (flags & 4)
        fz_engine_cmd("INLINE_BELOW", "0"); /* every batch through the lanes */
    if (flags & 0x80)
        tls_mode(&d, flags);
    else
        stream_mode(&d);
    if (flags & 4)
        fz_engine_cmd("INLINE_BELOW", "16384");
    fz_free_all();
    ERR_clear_error();
    return 0;
}
