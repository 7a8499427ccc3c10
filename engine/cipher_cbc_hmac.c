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
    unsigned char aad[PT_TLS_AAD_LEN];

    r->result = -1;
    if (r->len % 16 != 0 || r->len == 0 || r->len > INT_MAX)
        return -1;
    memcpy(aad, r->aad, PT_TLS_AAD_LEN); /* OpenSSL rewrites the length */
    if (!pt_set_iv(lane, r->iv)
        || EVP_CIPHER_CTX_ctrl(lane, EVP_CTRL_AEAD_TLS1_AAD, PT_TLS_AAD_LEN, aad) <= 0
        || EVP_Cipher(lane, r->out, r->in, (unsigned int)r->len) < 0)
        return -1;
    return r->result = (int)r->len;
}

#define HMAC_FLAGS (EVP_CIPH_CBC_MODE | EVP_CIPH_FLAG_AEAD_CIPHER)

const pt_family pt_fam_aes_128_cbc_hmac_sha1 = {
    "AES-128-CBC-HMAC-SHA1", NID_aes_128_cbc_hmac_sha1, 16, 16, 16, HMAC_FLAGS,
    1, 0, 1, 20, hmac_tls_pad, hmac_record
};
const pt_family pt_fam_aes_256_cbc_hmac_sha1 = {
    "AES-256-CBC-HMAC-SHA1", NID_aes_256_cbc_hmac_sha1, 16, 32, 16, HMAC_FLAGS,
    1, 0, 1, 20, hmac_tls_pad, hmac_record
};
const pt_family pt_fam_aes_128_cbc_hmac_sha256 = {
    "AES-128-CBC-HMAC-SHA256", NID_aes_128_cbc_hmac_sha256, 16, 16, 16, HMAC_FLAGS,
    1, 0, 1, 32, hmac_tls_pad, hmac_record
};
const pt_family pt_fam_aes_256_cbc_hmac_sha256 = {
    "AES-256-CBC-HMAC-SHA256", NID_aes_256_cbc_hmac_sha256, 16, 32, 16, HMAC_FLAGS,
    1, 0, 1, 32, hmac_tls_pad, hmac_record
};
