/*
 * cipher_cbc.c - AES-128-CBC and AES-256-CBC, the ciphers libssl uses for
 * CBC suites under Encrypt-then-MAC: libssl pads and MACs each record itself,
 * only the encryption is ours to pipeline. No TLS AAD.
 */
#include "pt_common.h"

static int cbc_record(pt_ctx *c, EVP_CIPHER_CTX *lane, pt_record *r, int enc)
{
    unsigned char last[16];

    r->result = -1;
    if (r->len % 16 != 0 || r->len > INT_MAX)
        return -1;
    if (r->len == 0)
        return r->result = 0;
    if (!pt_cbc_begin(c, lane, r, last)
        || EVP_Cipher(lane, r->out, r->in, (unsigned int)r->len) < 0) {
        c->lane_iv_ok[r->pipe] = 0;
        return -1;
    }
    pt_cbc_end(c, r, enc, last);
    return r->result = (int)r->len;
}

const pt_family pt_fam_aes_128_cbc = {
    "AES-128-CBC", NID_aes_128_cbc, 16, 16, 16, EVP_CIPH_CBC_MODE,
    0, 0, 1, 0, NULL, cbc_record, NULL, NULL
};

const pt_family pt_fam_aes_256_cbc = {
    "AES-256-CBC", NID_aes_256_cbc, 16, 32, 16, EVP_CIPH_CBC_MODE,
    0, 0, 1, 0, NULL, cbc_record, NULL, NULL
};
