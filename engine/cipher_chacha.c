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
 * plaintext length. Decrypt: [ciphertext | tag], the AAD's length is all.
 * OpenSSL's own TLS record mode does the work (it derives the nonce from the
 * fixed IV set at key setup and the AAD's sequence number). */
static int chacha_record(pt_ctx *c, EVP_CIPHER_CTX *lane, pt_record *r, int enc)
{
    unsigned char aad[PT_TLS_AAD_LEN];

    r->result = -1;
    if (r->len < TAG || r->len > INT_MAX)
        return -1;
    if (aad_len(r->aad) != (enc ? r->len - TAG : r->len))
        return -1;
    memcpy(aad, r->aad, PT_TLS_AAD_LEN);
    if (r->out != r->in)
        memmove(r->out, r->in, r->len);
    if (EVP_CIPHER_CTX_ctrl(lane, EVP_CTRL_AEAD_TLS1_AAD, PT_TLS_AAD_LEN, aad) != TAG)
        return -1;
    r->result = EVP_Cipher(lane, r->out, r->out, (unsigned int)r->len);
    return r->result < 0 ? (r->result = -1) : r->result;
}

const pt_family pt_fam_chacha20_poly1305 = {
    "ChaCha20-Poly1305", NID_chacha20_poly1305, 1, 32, 12,
    EVP_CIPH_CUSTOM_IV | EVP_CIPH_FLAG_CUSTOM_CIPHER | EVP_CIPH_FLAG_AEAD_CIPHER
        | EVP_CIPH_CUSTOM_IV_LENGTH,
    1, 1, 0, 0, chacha_tls_pad, chacha_record, NULL, NULL
};
