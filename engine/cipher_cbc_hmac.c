/*
 * cipher_cbc_hmac.c - the stitched MAC-then-encrypt ciphers
 * AES-128/256-CBC-HMAC-SHA1 and AES-128/256-CBC-HMAC-SHA256 (used by libssl
 * for CBC suites with Encrypt-then-MAC off). Each record is handed to
 * OpenSSL's own stitched implementation in its TLS mode: MAC key set once
 * per key, the record's AAD replayed on its lane, padding and the
 * constant-time MAC and padding check are OpenSSL's (invariant 4).
 */
#include "pt_common.h"

#include <string.h>

#define TLS1_1_VERSION_ 0x0302

/* OpenSSL's answer to EVP_CTRL_AEAD_TLS1_AAD for these ciphers. */
static int hmac_tls_pad(const pt_family *f, const unsigned char *aad, int enc)
{
    size_t len = (size_t)aad[11] << 8 | aad[12];
    unsigned int ver = (unsigned int)aad[9] << 8 | aad[10];

    if (!enc)
        return (int)f->mac_len;
    if (ver >= TLS1_1_VERSION_) {
        if (len < 16)
            return 0;
        len -= 16; /* the explicit IV block is not MACed */
    }
    return (int)(((len + f->mac_len + 16) & ~(size_t)15) - len);
}

static int hmac_record(pt_ctx *c, EVP_CIPHER_CTX *lane, pt_record *r, int enc)
{
    unsigned char aad[PT_TLS_AAD_LEN], last[16];

    r->result = -1;
    if (r->len % 16 != 0 || r->len == 0 || r->len > INT_MAX)
        return -1;
    memcpy(aad, r->aad, PT_TLS_AAD_LEN); /* OpenSSL rewrites the length */
    if (!pt_cbc_begin(c, lane, r, last)
        || EVP_CIPHER_CTX_ctrl(lane, EVP_CTRL_AEAD_TLS1_AAD, PT_TLS_AAD_LEN, aad) <= 0
        || EVP_Cipher(lane, r->out, r->in, (unsigned int)r->len) < 0) {
        c->lane_iv_ok[r->pipe] = 0;
        return -1;
    }
    pt_cbc_end(c, r, enc, last);
    return r->result = (int)r->len;
}

/* ---- MULTIBLOCK groups ---------------------------------------------------
 *
 * OpenSSL's stitched ciphers can encrypt four records of one size at once
 * (its MULTIBLOCK code: four AES-CBC streams and four HMACs interleaved in
 * SIMD registers), which is how stock libssl writes big buffers when
 * Encrypt-then-MAC is off. Here each lane does that for four consecutive
 * records of a batch. The code wants the plaintext in one piece and writes
 * whole records (header, its own random explicit IV, ciphertext), so the
 * group goes through the context's scratch buffer: plaintexts in, records
 * out, each record's body copied to its place. The records are valid TLS
 * 1.1+ records (random explicit IV, MAC and padding by OpenSSL); their
 * sequence numbers are consecutive from the first record's AAD. */

static size_t plaintext_len(const pt_record *r)
{
    return ((size_t)r->aad[11] << 8 | r->aad[12]) - 16; /* minus the IV block */
}

static int hmac_groupable(const pt_family *f, const pt_record *r, int n)
{
    size_t p = plaintext_len(&r[0]);
    uint64_t seq0 = 0, seq;
    int i, k;

    if (((unsigned int)r[0].aad[9] << 8 | r[0].aad[10]) < TLS1_1_VERSION_)
        return 0;
    for (k = 0; k < 8; k++)
        seq0 = seq0 << 8 | r[0].aad[k];
    for (i = 0; i < n; i++) {
        if (((size_t)r[i].aad[11] << 8 | r[i].aad[12]) < 16 + 1024
            || plaintext_len(&r[i]) != p
            || r[i].len != 16 + ((p + f->mac_len + 16) & ~(size_t)15)
            || memcmp(r[i].aad + 8, r[0].aad + 8, 3) != 0)
            return 0;
        for (seq = 0, k = 0; k < 8; k++)
            seq = seq << 8 | r[i].aad[k];
        if (seq != seq0 + (uint64_t)i)
            return 0;
    }
    return 1;
}

static int hmac_group(pt_ctx *c, EVP_CIPHER_CTX *lane, pt_record *r, int slot)
{
    EVP_CTRL_TLS1_1_MULTIBLOCK_PARAM mb;
    unsigned char aad[PT_TLS_AAD_LEN];
    size_t p = plaintext_len(&r[0]), body = r[0].len, need, i;
    unsigned char *in, *out;
    int packlen;

    need = PT_GROUP * p + PT_GROUP * (5 + body) + 64;
    if (c->scratch_len[slot] < need) {
        OPENSSL_free(c->scratch[slot]);
        c->scratch_len[slot] = 0;
        if ((c->scratch[slot] = OPENSSL_malloc(need)) == NULL)
            return -1;
        c->scratch_len[slot] = need;
    }
    in = c->scratch[slot];
    out = in + PT_GROUP * p;
    for (i = 0; i < PT_GROUP; i++)
        memcpy(in + i * p, r[i].in + 16, p); /* the plaintext after the IV block */
    memcpy(aad, r[0].aad, PT_TLS_AAD_LEN);
    aad[11] = aad[12] = 0; /* length 0: interleave as asked, not by size */
    mb.out = NULL;
    mb.inp = aad;
    mb.len = PT_GROUP * p;
    mb.interleave = PT_GROUP;
    c->lane_iv_ok[r[0].pipe] = 0;
    packlen = EVP_CIPHER_CTX_ctrl(lane, EVP_CTRL_TLS1_1_MULTIBLOCK_AAD, sizeof(mb), &mb);
    if (packlen != (int)(PT_GROUP * (5 + body)) || mb.interleave != PT_GROUP)
        return -1;
    mb.out = out;
    mb.inp = in;
    mb.len = PT_GROUP * p;
    mb.interleave = PT_GROUP;
    if (EVP_CIPHER_CTX_ctrl(lane, EVP_CTRL_TLS1_1_MULTIBLOCK_ENCRYPT, sizeof(mb), &mb) != packlen)
        return -1;
    for (i = 0; i < PT_GROUP; i++) {
        memcpy(r[i].out, out + i * (5 + body) + 5, body);
        r[i].result = (int)body;
    }
    c->lane_iv_ok[r[0].pipe] = 0; /* MULTIBLOCK leaves the lane's IV elsewhere */
    return 0;
}

#define HMAC_FLAGS (EVP_CIPH_CBC_MODE | EVP_CIPH_FLAG_AEAD_CIPHER)

const pt_family pt_fam_aes_128_cbc_hmac_sha1 = {
    "AES-128-CBC-HMAC-SHA1", NID_aes_128_cbc_hmac_sha1, 16, 16, 16, HMAC_FLAGS,
    1, 0, 1, 20, hmac_tls_pad, hmac_record, hmac_group, hmac_groupable
};
const pt_family pt_fam_aes_256_cbc_hmac_sha1 = {
    "AES-256-CBC-HMAC-SHA1", NID_aes_256_cbc_hmac_sha1, 16, 32, 16, HMAC_FLAGS,
    1, 0, 1, 20, hmac_tls_pad, hmac_record, hmac_group, hmac_groupable
};
const pt_family pt_fam_aes_128_cbc_hmac_sha256 = {
    "AES-128-CBC-HMAC-SHA256", NID_aes_128_cbc_hmac_sha256, 16, 16, 16, HMAC_FLAGS,
    1, 0, 1, 32, hmac_tls_pad, hmac_record, hmac_group, hmac_groupable
};
const pt_family pt_fam_aes_256_cbc_hmac_sha256 = {
    "AES-256-CBC-HMAC-SHA256", NID_aes_256_cbc_hmac_sha256, 16, 32, 16, HMAC_FLAGS,
    1, 0, 1, 32, hmac_tls_pad, hmac_record, hmac_group, hmac_groupable
};
