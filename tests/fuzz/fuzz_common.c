/*
 * fuzz_common.c - see fuzz_common.h.
 */
#include "fuzz_common.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The engine's exported entry point (IMPLEMENT_DYNAMIC_BIND_FN in e_pipetls.c),
 * linked into this binary: called as the "dynamic" ENGINE would, with our own
 * static state so that it keeps libcrypto's allocator. */
int bind_engine(ENGINE *e, const char *id, const dynamic_fns *fns);

ENGINE *fz_engine;
int fz_trace;

fz_cipher fz_ciphers[FZ_N_CIPHERS] = {
    { "AES-128-GCM", NID_aes_128_gcm, FZ_GCM, 16, 12, 0, NULL, NULL },
    { "AES-256-GCM", NID_aes_256_gcm, FZ_GCM, 32, 12, 0, NULL, NULL },
    { "ChaCha20-Poly1305", NID_chacha20_poly1305, FZ_CHACHA, 32, 12, 0, NULL, NULL },
    { "AES-128-CBC-HMAC-SHA1", NID_aes_128_cbc_hmac_sha1, FZ_HMAC, 16, 16, 20, NULL, NULL },
    { "AES-256-CBC-HMAC-SHA1", NID_aes_256_cbc_hmac_sha1, FZ_HMAC, 32, 16, 20, NULL, NULL },
    { "AES-128-CBC-HMAC-SHA256", NID_aes_128_cbc_hmac_sha256, FZ_HMAC, 16, 16, 32, NULL, NULL },
    { "AES-256-CBC-HMAC-SHA256", NID_aes_256_cbc_hmac_sha256, FZ_HMAC, 32, 16, 32, NULL, NULL },
    { "AES-128-CBC", NID_aes_128_cbc, FZ_CBC, 16, 16, 0, NULL, NULL },
    { "AES-256-CBC", NID_aes_256_cbc, FZ_CBC, 32, 16, 0, NULL, NULL },
};

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "\n==pipetls-fuzz== %s:%d: check failed: %s\n==pipetls-fuzz== ",
        file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void fz_engine_cmd(const char *cmd, const char *arg)
{
    if (ENGINE_ctrl_cmd_string(fz_engine, cmd, arg, 0) != 1)
        fz_fail(__FILE__, __LINE__, cmd, "engine command %s %s refused", cmd, arg);
}

/* At exit, before OpenSSL's own cleanup (registered earlier, so run later):
 * the engine's destroy function stops the worker threads, whose per-thread
 * OpenSSL state would otherwise be reported as leaked. */
static void fz_shutdown(void)
{
    int i;

    for (i = 0; i < FZ_N_CIPHERS; i++) {
        EVP_CIPHER_free(fz_ciphers[i].impl);
        fz_ciphers[i].impl = NULL;
        fz_ciphers[i].ours = NULL;
    }
    ENGINE_finish(fz_engine);
    ENGINE_free(fz_engine);
    fz_engine = NULL;
}

void fz_init(void)
{
    dynamic_fns fns;
    int i, offered = 0;

    if (fz_engine != NULL)
        return;
    fz_trace = getenv("PIPETLS_FUZZ_TRACE") != NULL;
    memset(&fns, 0, sizeof(fns));
    fns.static_state = ENGINE_get_static_state();
    if ((fz_engine = ENGINE_new()) == NULL
        || !bind_engine(fz_engine, "pipetls", &fns)
        || !ENGINE_init(fz_engine)) {
        ERR_print_errors_fp(stderr);
        fz_fail(__FILE__, __LINE__, "bind", "cannot bind the pipetls engine in-process");
    }
    atexit(fz_shutdown);
    /* two lanes (one worker thread beside the caller): batches really are
     * shared, without burning the machine's cores */
    fz_engine_cmd("THREADS", "2");
    for (i = 0; i < FZ_N_CIPHERS; i++) {
        fz_cipher *c = &fz_ciphers[i];

        c->ours = ENGINE_get_cipher(fz_engine, c->nid);
        ERR_set_mark();
        c->impl = EVP_CIPHER_fetch(NULL, c->name, NULL);
        ERR_pop_to_mark();
        if (c->ours == NULL || c->impl == NULL) {
            fprintf(stderr, "pipetls-fuzz: %s not offered here, left out\n", c->name);
            c->ours = NULL;
        } else {
            offered++;
        }
    }
    if (offered == 0)
        fz_fail(__FILE__, __LINE__, "offered", "the engine offers no cipher");
    ERR_clear_error();
}

uint8_t fz_u8(fz_reader *r)
{
    uint8_t v;

    if (r->n == 0)
        return 0;
    v = *r->p++;
    r->n--;
    return v;
}

uint16_t fz_u16(fz_reader *r)
{
    uint16_t hi = fz_u8(r);

    return (uint16_t)(hi << 8 | fz_u8(r));
}

uint64_t fz_u64(fz_reader *r)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = v << 8 | fz_u8(r);
    return v;
}

void fz_bytes(fz_reader *r, unsigned char *out, size_t len)
{
    size_t k = len < r->n ? len : r->n;

    if (k > 0)
        memcpy(out, r->p, k);
    if (len > k)
        memset(out + k, 0, len - k);
    r->p += k;
    r->n -= k;
}

const fz_cipher *fz_start(fz_reader *r, const uint8_t *data, size_t size)
{
    const fz_cipher *c;

    r->p = data;
    r->n = size;
    c = &fz_ciphers[fz_u8(r) % FZ_N_CIPHERS];
    return c->ours != NULL ? c : NULL;
}

/* ---- arena ---------------------------------------------------------------- */

#define ARENA_MAX 4096
static void *arena[ARENA_MAX];
static int arena_n;

unsigned char *fz_alloc(size_t len)
{
    unsigned char *p;

    if (arena_n == ARENA_MAX)
        fz_fail(__FILE__, __LINE__, "arena", "more than %d buffers in one input", ARENA_MAX);
    /* malloc(0) under ASan: a block any access to which is reported */
    if ((p = malloc(len)) == NULL && len != 0)
        abort();
    if (p == NULL)
        p = malloc(1);
    arena[arena_n++] = p;
    return p;
}

void fz_free_all(void)
{
    while (arena_n > 0)
        free(arena[--arena_n]);
}
