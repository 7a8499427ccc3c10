/*
 * cipher_chacha.c - ChaCha20-Poly1305 with TLS 1.2 record semantics
 * (RFC 7905): the nonce is the 12-byte fixed IV XOR the record's sequence
 * number (left-padded to 12 bytes); no explicit nonce; 16-byte tag.
 */
#include "pt_common.h"

#include <string.h>

#define TAG 16

static size_t aad_len(const unsigned char *aad)
{
    return (size_t)aad[11] << 8 | aad[12];
}

static int chacha_tls_pad(const pt_family *f, const unsigned char *aad, int enc)
{
    if (!enc && aad_len(aad) < TAG)
        return 0;
    return TAG;
}

/* Encrypt: in/out hold [plaintext | tag space], the AAD's length is the
 * plaintext length. Decrypt: [ciphertext | tag], the AAD's length is all. */
static int chacha_record(pt_ctx *c, EVP_CIPHER_CTX *lane, pt_record *r, int enc)
{
    unsigned char nonce[12], aad[PT_TLS_AAD_LEN];
    size_t plen;
    int i;

    r->result = -1;
    if (r->len < TAG)
        return -1;
    plen = r->len - TAG;
    if (aad_len(r->aad) != (enc ? plen : r->len))
        return -1;
    memcpy(nonce, c->fixed_iv, 12);
    for (i = 0; i < 8; i++)
        nonce[4 + i] ^= r->aad[i];
    memcpy(aad, r->aad, PT_TLS_AAD_LEN);
    aad[11] = (unsigned char)(plen >> 8);
    aad[12] = (unsigned char)plen;
    if (pt_aead_record(lane, nonce, aad, r->out, r->in, plen,
            enc ? r->out + plen : NULL, enc ? NULL : r->in + plen)
        != 0)
        return -1;
    r->result = (int)(enc ? r->len : plen);
    return r->result;
}

const pt_family pt_fam_chacha20_poly1305 = {
    "ChaCha20-Poly1305", NID_chacha20_poly1305, 1, 32, 12,
    EVP_CIPH_CUSTOM_IV | EVP_CIPH_FLAG_CUSTOM_CIPHER | EVP_CIPH_FLAG_AEAD_CIPHER
        | EVP_CIPH_CUSTOM_IV_LENGTH,
    1, 1, 0, 0, chacha_tls_pad, chacha_record
};
