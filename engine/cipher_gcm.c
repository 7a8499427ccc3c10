/*
 * cipher_gcm.c - AES-128-GCM and AES-256-GCM with TLS 1.2 record semantics
 * (RFC 5288): 4-byte fixed IV from key setup, 8-byte explicit nonce in front
 * of each record, 16-byte tag after it.
 *
 * The explicit nonce is the record's sequence number, bytes 0..7 of the TLS
 * AAD - never a per-lane or per-context counter (invariant 2): it is unique
 * for the life of a key because the sequence number is.
 */
#include "pt_common.h"

#include <string.h>

#define EIV 8 /* EVP_GCM_TLS_EXPLICIT_IV_LEN */
#define TAG 16 /* EVP_GCM_TLS_TAG_LEN */

static uint64_t be64(uint64_t x)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap64(x);
#else
    return x;
#endif
}

static size_t aad_len(const unsigned char *aad)
{
    return (size_t)aad[11] << 8 | aad[12];
}

/* OpenSSL's answer to EVP_CTRL_AEAD_TLS1_AAD for GCM: the tag length, or 0
 * when the record is too short to hold the explicit nonce (and tag). */
static int gcm_tls_pad(const pt_family *f, const unsigned char *aad, int enc)
{
    size_t len = aad_len(aad);

    if (len < EIV || (!enc && len < EIV + TAG))
        return 0;
    return TAG;
}

/*
 * Encrypt: in/out hold [explicit nonce space | plaintext | tag space];
 * the AAD's length field is the plaintext length plus EIV. Decrypt: in is
 * [explicit nonce | ciphertext | tag], the AAD's length is the whole record.
 *
 * OpenSSL's own TLS record mode does the work: the full 12-byte IV is set to
 * fixed IV | sequence number just before, so the explicit nonce it writes is
 * the sequence number. It works in place: out-of-place callers get a copy.
 */
static int gcm_record(pt_ctx *c, EVP_CIPHER_CTX *lane, pt_record *r, int enc)
{
    unsigned char iv[12], aad[PT_TLS_AAD_LEN];
    uint64_t seq;

    r->result = -1;
    if (r->len < EIV + TAG || r->len > INT_MAX)
        return -1;
    /* RFC 5288 nonces are 12 bytes (the fixed IV and the explicit part);
     * after EVP_CTRL_AEAD_SET_IVLEN to another length OpenSSL would read the
     * whole IV from iv[] below: such a context takes no TLS records */
    if (EVP_CIPHER_CTX_get_iv_length(lane) != (int)sizeof(iv))
        return -1;
    /* the AAD must describe this record */
    if (aad_len(r->aad) != (enc ? r->len - TAG : r->len))
        return -1;
    memcpy(iv, c->fixed_iv, 4);
    memcpy(iv + 4, r->aad, EIV); /* decrypting: replaced by the record's */
    memcpy(aad, r->aad, PT_TLS_AAD_LEN); /* OpenSSL rewrites the length */
    if (r->out != r->in)
        memmove(r->out, r->in, r->len);
    memcpy(&seq, r->aad, EIV);
    seq = be64(seq);
    /* Encrypting: after a record OpenSSL's TLS mode has counted its IV on
     * by one, so when this lane's last record was seq - 1 the IV is already
     * right. Decrypting: the explicit nonce comes from the record; the lane
     * only needs the fixed IV once (lane_seq 0 marks it primed).
     * UINT64_MAX is also "unknown", so that sequence number always sets it. */
    if (enc ? seq == UINT64_MAX || c->lane_seq[r->pipe] != seq
            : c->lane_seq[r->pipe] == UINT64_MAX) {
        c->lane_seq[r->pipe] = UINT64_MAX;
        if (EVP_CIPHER_CTX_ctrl(lane, EVP_CTRL_GCM_SET_IV_FIXED, -1, iv) <= 0)
            return -1;
        if (!enc)
            c->lane_seq[r->pipe] = 0;
    }
    if (EVP_CIPHER_CTX_ctrl(lane, EVP_CTRL_AEAD_TLS1_AAD, PT_TLS_AAD_LEN, aad) != TAG)
        return -1;
    r->result = EVP_Cipher(lane, r->out, r->out, (unsigned int)r->len);
    /* invariant 2, checked: the explicit nonce written is the sequence number */
    if (r->result < 0 || (enc && memcmp(r->out, r->aad, EIV) != 0)) {
        c->lane_seq[r->pipe] = UINT64_MAX;
        return r->result = -1;
    }
    if (enc)
        c->lane_seq[r->pipe] = seq + 1;
    return r->result;
}

#define GCM_FLAGS (EVP_CIPH_GCM_MODE | EVP_CIPH_CUSTOM_IV | EVP_CIPH_FLAG_CUSTOM_CIPHER \
    | EVP_CIPH_FLAG_AEAD_CIPHER | EVP_CIPH_CUSTOM_IV_LENGTH)

const pt_family pt_fam_aes_128_gcm = {
    "AES-128-GCM", NID_aes_128_gcm, 1, 16, 12, GCM_FLAGS,
    1, 1, 0, 0, gcm_tls_pad, gcm_record, NULL, NULL
};

const pt_family pt_fam_aes_256_gcm = {
    "AES-256-GCM", NID_aes_256_gcm, 1, 32, 12, GCM_FLAGS,
    1, 1, 0, 0, gcm_tls_pad, gcm_record, NULL, NULL
};
