/*
 * cbc_hmac.c - the stitched MAC-then-encrypt ciphers
 * AES-128/256-CBC-HMAC-SHA1 and AES-128/256-CBC-HMAC-SHA256 (used by libssl
 * for CBC suites with Encrypt-then-MAC off). Each record is handed to
 * OpenSSL's own stitched implementation in its TLS mode: MAC key set once
 * per key, the record's AAD replayed on its lane, padding and the
 * constant-time MAC and padding check are OpenSSL's (invariant 4).
 */
#include "pt_record.h"
#include "pt_guard.h"

#include <openssl/crypto.h>
#include <string.h>

#define TLS1_1_VERSION_ 0x0302

/* OpenSSL's answer to EVP_CTRL_AEAD_TLS1_AAD for these ciphers. */
static int hmac_tls_pad(const pt_family *f, const unsigned char *aad, int enc)
{
    pt_tls_aad a = pt_tls_aad_parse(aad);
    size_t len = a.len;

    if (!enc)
        return (int)f->mac_len;
    if (a.version >= TLS1_1_VERSION_) {
        if (len < 16)
            return 0;
        len -= 16; /* the explicit IV block is not MACed */
    }
    return (int)(((len + f->mac_len + 16) & ~(size_t)15) - len);
}

static size_t plaintext_len(const pt_record *r);

/* One record, stitched, in OpenSSL's TLS mode: it MACs, pads and encrypts
 * (or decrypts and checks) in place. Encrypting with the plaintext apart
 * (r->plain, patch 0004), the plaintext is moved here, on the lane, to its
 * place after the explicit IV block of the output; the IV block comes from
 * the input (libssl wrote it there). */
static int hmac_record(const pt_tls_params *tls, pt_lane *lane, pt_record *r, int enc)
{
    unsigned char aad[PT_TLS_AAD_LEN], last[16];
    const unsigned char *in = r->in;
    int ok;

    r->result = -1;
    PT_RECORD_ENSURE(r->len % 16 == 0 && r->len != 0 && r->len <= INT_MAX, r,
        PT_R_BAD_RECORD_LENGTH);
    if (enc && r->plain != NULL) {
        size_t p = plaintext_len(r);

        /* the AAD's length (IV block and plaintext) within the record */
        PT_RECORD_ENSURE(pt_tls_aad_parse(r->aad).len >= 16 && p <= r->len - 16, r,
            PT_R_AAD_MISMATCH);
        if (r->out != r->in)
            memmove(r->out, r->in, 16);
        memmove(r->out + 16, r->plain, p);
        in = r->out;
    }
    memcpy(aad, r->aad, PT_TLS_AAD_LEN); /* OpenSSL rewrites the length */
    ok = pt_cbc_begin(lane, r, last)
        && EVP_CIPHER_CTX_ctrl(lane->evp, EVP_CTRL_AEAD_TLS1_AAD, PT_TLS_AAD_LEN, aad) > 0;
    if (!ok)
        lane->iv_ok = 0;
    PT_RECORD_ENSURE(ok, r, PT_R_CIPHER_FAILED);
    ok = EVP_Cipher(lane->evp, r->out, in, (unsigned int)r->len) >= 0;
    if (!ok)
        lane->iv_ok = 0;
    PT_RECORD_ENSURE(ok, r, enc ? PT_R_CIPHER_FAILED : PT_R_RECORD_REJECTED);
    pt_cbc_end(lane, r, enc, last);
    return r->result = (int)r->len;
}

/* ---- MULTIBLOCK groups ---------------------------------------------------
 *
 * OpenSSL's stitched ciphers can encrypt four or eight records of one size
 * at once (its MULTIBLOCK code: four or eight AES-CBC streams and as many
 * HMACs interleaved in SIMD registers), which is how stock libssl writes
 * big buffers when Encrypt-then-MAC is off. Here each lane does that for
 * four or eight consecutive records of a batch (which, and when records go
 * one at a time instead: cbc_hmac_mode.c). The code wants the plaintext in one piece and writes
 * whole records (header, its own random explicit IV, ciphertext), so the
 * group goes through the lane's scratch buffer: plaintexts in, records out,
 * each record's body copied to its place. The records are valid TLS 1.1+
 * records (random explicit IV, MAC and padding by OpenSSL); their sequence
 * numbers are consecutive from the first record's AAD. */

static size_t plaintext_len(const pt_record *r)
{
    return pt_tls_aad_parse(r->aad).len - 16; /* minus the IV block */
}

static int hmac_groupable(const pt_family *f, const pt_record *r, int n)
{
    pt_tls_aad a0 = pt_tls_aad_parse(r[0].aad);
    size_t p = plaintext_len(&r[0]);
    int i;

    if (a0.version < TLS1_1_VERSION_)
        return 0;
    for (i = 0; i < n; i++) {
        pt_tls_aad a = pt_tls_aad_parse(r[i].aad);

        if (a.len < 16 + 1024 || plaintext_len(&r[i]) != p
            || r[i].len != 16 + ((p + f->mac_len + 16) & ~(size_t)15)
            || a.type != a0.type || a.version != a0.version
            || a.seq != a0.seq + (uint64_t)i)
            return 0;
    }
    return 1;
}

static int hmac_group(const pt_family *f, pt_lane *lane, pt_record *r, int n)
{
    EVP_CTRL_TLS1_1_MULTIBLOCK_PARAM mb;
    unsigned char aad[PT_TLS_AAD_LEN];
    size_t p = plaintext_len(&r[0]), body = r[0].len, need, i, g = (size_t)n;
    unsigned char *in, *out;
    const unsigned char *src;
    int packlen, contiguous;

    if (n != PT_GROUP && n != PT_GROUP_MAX)
        return -1;
    need = g * p + g * (5 + body) + 64;
    if (lane->scratch_len < need) {
        OPENSSL_clear_free(lane->scratch, lane->scratch_len);
        lane->scratch_len = 0;
        if ((lane->scratch = OPENSSL_malloc(need)) == NULL)
            return -1;
        lane->scratch_len = need;
    }
    in = lane->scratch;
    out = in + g * p;
    /* the plaintexts in one piece: with the plaintext apart (patch 0004)
     * they usually are already, consecutive in the caller's buffer */
    contiguous = r[0].plain != NULL;
    for (i = 1; contiguous && i < g; i++)
        contiguous = (uintptr_t)r[i].plain == (uintptr_t)r[0].plain + i * p;
    src = contiguous ? r[0].plain : in;
    for (i = 0; !contiguous && i < g; i++) /* the plaintext, or the input after its IV block */
        memcpy(in + i * p, r[i].plain != NULL ? r[i].plain : r[i].in + 16, p);
    memcpy(aad, r[0].aad, PT_TLS_AAD_LEN);
    aad[11] = aad[12] = 0; /* length 0: interleave as asked, not by size */
    mb.out = NULL;
    mb.inp = aad;
    mb.len = g * p;
    mb.interleave = (unsigned int)n;
    lane->iv_ok = 0; /* MULTIBLOCK leaves the lane's IV elsewhere */
    packlen = EVP_CIPHER_CTX_ctrl(lane->evp, EVP_CTRL_TLS1_1_MULTIBLOCK_AAD, sizeof(mb), &mb);
    if (packlen != (int)(g * (5 + body)) || mb.interleave != (unsigned int)n)
        return -1;
    mb.out = out;
    mb.inp = src;
    mb.len = g * p;
    mb.interleave = (unsigned int)n;
    if (EVP_CIPHER_CTX_ctrl(lane->evp, EVP_CTRL_TLS1_1_MULTIBLOCK_ENCRYPT, sizeof(mb), &mb)
        != packlen)
        return -1;
    for (i = 0; i < g; i++) {
        memcpy(r[i].out, out + i * (5 + body) + 5, body);
        r[i].result = (int)body;
    }
    return 0;
}

#define HMAC_FAMILY(nm, id, klen, mlen)  \
    {                                    \
        .name = nm,                      \
        .nid = id,                       \
        .block_size = 16,                \
        .key_len = klen,                 \
        .iv_len = 16,                    \
        .flags = EVP_CIPH_CBC_MODE | EVP_CIPH_FLAG_AEAD_CIPHER, \
        .tls_aad = 1,                    \
        .cbc = 1,                        \
        .mac_len = mlen,                 \
        .tls_pad = hmac_tls_pad,         \
        .record = hmac_record,           \
        .group = hmac_group,             \
        .groupable = hmac_groupable,     \
        .plain_in = 1,                   \
    }

const pt_family pt_fam_aes_128_cbc_hmac_sha1
    = HMAC_FAMILY("AES-128-CBC-HMAC-SHA1", NID_aes_128_cbc_hmac_sha1, 16, 20);
const pt_family pt_fam_aes_256_cbc_hmac_sha1
    = HMAC_FAMILY("AES-256-CBC-HMAC-SHA1", NID_aes_256_cbc_hmac_sha1, 32, 20);
const pt_family pt_fam_aes_128_cbc_hmac_sha256
    = HMAC_FAMILY("AES-128-CBC-HMAC-SHA256", NID_aes_128_cbc_hmac_sha256, 16, 32);
const pt_family pt_fam_aes_256_cbc_hmac_sha256
    = HMAC_FAMILY("AES-256-CBC-HMAC-SHA256", NID_aes_256_cbc_hmac_sha256, 32, 32);
