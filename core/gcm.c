/*
 * gcm.c - AES-128-GCM and AES-256-GCM with TLS 1.2 record semantics
 * (RFC 5288): 4-byte fixed IV from key setup, 8-byte explicit nonce in front
 * of each record, 16-byte tag after it.
 *
 * The explicit nonce is the record's sequence number, bytes 0..7 of the TLS
 * AAD - never a per-lane or per-context counter (invariant 2): it is unique
 * for the life of a key because the sequence number is.
 */
#include "pt_record.h"
#include "pt_guard.h"

#include <string.h>

#define EIV 8 /* EVP_GCM_TLS_EXPLICIT_IV_LEN */
#define TAG 16 /* EVP_GCM_TLS_TAG_LEN */

/* OpenSSL's answer to EVP_CTRL_AEAD_TLS1_AAD for GCM: the tag length, or 0
 * when the record is too short to hold the explicit nonce (and tag). */
static int gcm_tls_pad(const pt_family *f, const unsigned char *aad, int enc)
{
    size_t len = pt_tls_aad_parse(aad).len;

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
 * the sequence number. It works in place: out-of-place callers get a copy
 * (of r->plain, the plaintext alone, when it is set), made here on the lane.
 */
static int gcm_record(const pt_tls_params *tls, pt_lane *lane, pt_record *r, int enc)
{
    pt_tls_aad a = pt_tls_aad_parse(r->aad);
    unsigned char iv[12], aad[PT_TLS_AAD_LEN];
    int nonce_ok;

    r->result = -1;
    PT_RECORD_ENSURE(r->len >= EIV + TAG && r->len <= INT_MAX, r, PT_R_BAD_RECORD_LENGTH);
    /* RFC 5288 nonces are 12 bytes (the fixed IV and the explicit part);
     * after EVP_CTRL_AEAD_SET_IVLEN to another length OpenSSL would read the
     * whole IV from iv[] below: such a context takes no TLS records */
    PT_RECORD_ENSURE(EVP_CIPHER_CTX_get_iv_length(lane->evp) == (int)sizeof(iv), r,
        PT_R_CIPHER_FAILED);
    /* the AAD must describe this record */
    PT_RECORD_ENSURE(a.len == (enc ? r->len - TAG : r->len), r, PT_R_AAD_MISMATCH);
    memcpy(iv, tls->fixed_iv, 4);
    memcpy(iv + 4, r->aad, EIV); /* decrypting: replaced by the record's */
    memcpy(aad, r->aad, PT_TLS_AAD_LEN); /* OpenSSL rewrites the length */
    if (enc && r->plain != NULL)
        memmove(r->out + EIV, r->plain, a.len - EIV);
    else if (r->out != r->in)
        memmove(r->out, r->in, r->len);
    /* Encrypting: after a record OpenSSL's TLS mode has counted its IV on
     * by one, so when this lane's last record was seq - 1 the IV is already
     * right. Decrypting: the explicit nonce comes from the record; the lane
     * only needs the fixed IV once (seq 0 marks it primed).
     * UINT64_MAX is also "unknown", so that sequence number always sets it. */
    if (enc ? a.seq == UINT64_MAX || lane->seq != a.seq : lane->seq == UINT64_MAX) {
        lane->seq = UINT64_MAX;
        PT_RECORD_ENSURE(EVP_CIPHER_CTX_ctrl(lane->evp, EVP_CTRL_GCM_SET_IV_FIXED, -1, iv) > 0,
            r, PT_R_CIPHER_FAILED);
        if (!enc)
            lane->seq = 0;
    }
    PT_RECORD_ENSURE(EVP_CIPHER_CTX_ctrl(lane->evp, EVP_CTRL_AEAD_TLS1_AAD, PT_TLS_AAD_LEN, aad)
            == TAG,
        r, PT_R_CIPHER_FAILED);
    r->result = EVP_Cipher(lane->evp, r->out, r->out, (unsigned int)r->len);
    if (r->result < 0)
        lane->seq = UINT64_MAX;
    PT_RECORD_ENSURE(r->result >= 0, r, enc ? PT_R_CIPHER_FAILED : PT_R_RECORD_REJECTED);
    /* invariant 2, checked: the explicit nonce written is the sequence number */
    nonce_ok = !enc || memcmp(r->out, r->aad, EIV) == 0;
    if (!nonce_ok)
        lane->seq = UINT64_MAX;
    PT_RECORD_ENSURE(nonce_ok, r, PT_R_NONCE_MISMATCH);
    if (enc)
        lane->seq = a.seq + 1;
    return r->result;
}

/* the two key sizes differ only in name, NID and key length */
#define GCM_FAMILY(nm, id, klen)                                                     \
    {                                                                                \
        .name = nm,                                                                  \
        .nid = id,                                                                   \
        .block_size = 1,                                                             \
        .key_len = klen,                                                             \
        .iv_len = 12,                                                                \
        .flags = EVP_CIPH_GCM_MODE | EVP_CIPH_CUSTOM_IV | EVP_CIPH_FLAG_CUSTOM_CIPHER \
            | EVP_CIPH_FLAG_AEAD_CIPHER | EVP_CIPH_CUSTOM_IV_LENGTH,                  \
        .tls_aad = 1,                                                                \
        .custom_cipher = 1,                                                          \
        .plain_in = 1,                                                               \
        .tls_pad = gcm_tls_pad,                                                      \
        .record = gcm_record,                                                        \
    }

const pt_family pt_fam_aes_128_gcm = GCM_FAMILY("AES-128-GCM", NID_aes_128_gcm, 16);
const pt_family pt_fam_aes_256_gcm = GCM_FAMILY("AES-256-GCM", NID_aes_256_gcm, 32);
