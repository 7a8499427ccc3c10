/*
 * chacha.c - ChaCha20-Poly1305 with TLS 1.2 record semantics (RFC 7905):
 * the nonce is the 12-byte fixed IV XOR the record's sequence number
 * (left-padded to 12 bytes); no explicit nonce; 16-byte tag.
 */
#include "pt_record.h"
#include "pt_guard.h"

#include <string.h>

#define TAG 16

static int chacha_tls_pad(const pt_family *f, const unsigned char *aad, int enc)
{
    if (!enc && pt_tls_aad_parse(aad).len < TAG)
        return 0;
    return TAG;
}

/* Encrypt: in/out hold [plaintext | tag space], the AAD's length is the
 * plaintext length (r->plain, when set, holds the plaintext instead of in).
 * Decrypt: [ciphertext | tag], the AAD's length is all.
 * OpenSSL's own TLS record mode does the work (it derives the nonce from the
 * fixed IV set at key setup and the AAD's sequence number). */
static int chacha_record(const pt_tls_params *tls, pt_lane *lane, pt_record *r, int enc)
{
    unsigned char aad[PT_TLS_AAD_LEN];

    r->result = -1;
    PT_RECORD_ENSURE(r->len >= TAG && r->len <= INT_MAX, r, PT_R_BAD_RECORD_LENGTH);
    PT_RECORD_ENSURE(pt_tls_aad_parse(r->aad).len == (enc ? r->len - TAG : r->len), r,
        PT_R_AAD_MISMATCH);
    memcpy(aad, r->aad, PT_TLS_AAD_LEN);
    if (enc && r->plain != NULL)
        memmove(r->out, r->plain, r->len - TAG);
    else if (r->out != r->in)
        memmove(r->out, r->in, r->len);
    PT_RECORD_ENSURE(EVP_CIPHER_CTX_ctrl(lane->evp, EVP_CTRL_AEAD_TLS1_AAD, PT_TLS_AAD_LEN, aad)
            == TAG,
        r, PT_R_CIPHER_FAILED);
    r->result = EVP_Cipher(lane->evp, r->out, r->out, (unsigned int)r->len);
    PT_RECORD_ENSURE(r->result >= 0, r, enc ? PT_R_CIPHER_FAILED : PT_R_RECORD_REJECTED);
    return r->result;
}

const pt_family pt_fam_chacha20_poly1305 = {
    .name = "ChaCha20-Poly1305",
    .nid = NID_chacha20_poly1305,
    .block_size = 1,
    .key_len = 32,
    .iv_len = 12,
    .flags = EVP_CIPH_CUSTOM_IV | EVP_CIPH_FLAG_CUSTOM_CIPHER | EVP_CIPH_FLAG_AEAD_CIPHER
        | EVP_CIPH_CUSTOM_IV_LENGTH,
    .tls_aad = 1,
    .custom_cipher = 1,
    .plain_in = 1,
    .tls_pad = chacha_tls_pad,
    .record = chacha_record,
};
