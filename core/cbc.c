/*
 * cbc.c - AES-128-CBC and AES-256-CBC, the ciphers libssl uses for CBC
 * suites under Encrypt-then-MAC: libssl pads and MACs each record itself,
 * only the encryption is ours to pipeline. No TLS AAD. Also the IV chain
 * helpers of every CBC family (this file and cbc_hmac.c).
 */
#include "pt_record.h"
#include "pt_guard.h"

#include <string.h>

int pt_set_iv(EVP_CIPHER_CTX *ctx, const unsigned char *iv)
{
    return EVP_CipherInit_ex2(ctx, NULL, NULL, iv, -1, NULL);
}

int pt_cbc_begin(pt_lane *lane, const pt_record *r, unsigned char last[16])
{
    if (r->len >= 16)
        memcpy(last, r->in + r->len - 16, 16);
    if (lane->iv_ok && memcmp(lane->iv, r->iv, 16) == 0)
        return 1; /* consecutive records on one lane: the chain is right */
    lane->iv_ok = 0;
    return pt_set_iv(lane->evp, r->iv);
}

void pt_cbc_end(pt_lane *lane, const pt_record *r, int enc, const unsigned char last[16])
{
    if (r->len < 16) {
        lane->iv_ok = 0;
        return;
    }
    memcpy(lane->iv, enc ? r->out + r->len - 16 : last, 16);
    lane->iv_ok = 1;
}

static int cbc_record(const pt_tls_params *tls, pt_lane *lane, pt_record *r, int enc)
{
    unsigned char last[16];
    int ok;

    r->result = -1;
    PT_RECORD_ENSURE(r->len % 16 == 0 && r->len <= INT_MAX, r, PT_R_BAD_RECORD_LENGTH);
    if (r->len == 0)
        return r->result = 0;
    ok = pt_cbc_begin(lane, r, last)
        && EVP_Cipher(lane->evp, r->out, r->in, (unsigned int)r->len) >= 0;
    if (!ok)
        lane->iv_ok = 0;
    PT_RECORD_ENSURE(ok, r, PT_R_CIPHER_FAILED);
    pt_cbc_end(lane, r, enc, last);
    return r->result = (int)r->len;
}

#define CBC_FAMILY(nm, id, klen)  \
    {                             \
        .name = nm,               \
        .nid = id,                \
        .block_size = 16,         \
        .key_len = klen,          \
        .iv_len = 16,             \
        .flags = EVP_CIPH_CBC_MODE, \
        .cbc = 1,                 \
        .record = cbc_record,     \
    }

const pt_family pt_fam_aes_128_cbc = CBC_FAMILY("AES-128-CBC", NID_aes_128_cbc, 16);
const pt_family pt_fam_aes_256_cbc = CBC_FAMILY("AES-256-CBC", NID_aes_256_cbc, 32);
