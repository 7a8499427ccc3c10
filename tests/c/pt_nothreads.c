/*
 * pt_nothreads.c - the engine when its worker threads cannot be started.
 *
 * This program defines pthread_create (link with -rdynamic so that the
 * engine, loaded later, binds to it): while `refuse` is set it fails with
 * EAGAIN and counts the attempts, else it calls the C library's. Pipelined
 * AES-128-GCM batches through EVP must still be right (the caller does
 * them), the engine must not try again on every batch, must report the
 * failure in STATS and INFO, and must try again once THREADS changes.
 *
 *   pt_nothreads ENGINE.so      prints "key value" lines, then OK or FAILED
 */
#define _GNU_SOURCE
#define OPENSSL_SUPPRESS_DEPRECATED
#include <dlfcn.h>
#include <errno.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/pipetls.h"

static int refuse = 1, attempts;

int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

    if (refuse) {
        attempts++;
        return EAGAIN;
    }
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "pthread_create");
    return real(t, a, fn, arg);
}

#define N 4
#define LEN 20000

static long value(ENGINE *e, int cmd, const char *key)
{
    static char buf[16384];
    size_t k = strlen(key);
    const char *p;

    ENGINE_ctrl(e, cmd, sizeof(buf), buf, NULL);
    for (p = buf; (p = strstr(p, key)) != NULL; p += k)
        if ((p == buf || p[-1] == '\n') && p[k] == ' ')
            return atol(p + k + 1);
    return -1;
}

/* One pipelined encrypt batch of N records and a check against OpenSSL's own
 * AES-128-GCM, record by record. Returns 1 when every record is right. */
static int batch(ENGINE *e)
{
    static unsigned char rec[N][8 + LEN + 16], ref[8 + LEN + 16];
    unsigned char key[16] = { 1 }, fixed[4] = { 2 }, aad[13];
    unsigned char *bufs[N];
    size_t lens[N];
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new(), *r = EVP_CIPHER_CTX_new();
    EVP_CIPHER *impl = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    int i, ok = 1;

    if (!EVP_CipherInit_ex(c, ENGINE_get_cipher(e, NID_aes_128_gcm), e, key, NULL, 1)
        || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IV_FIXED, 4, fixed) != 1)
        return 0;
    for (i = 0; i < N; i++) {
        memset(rec[i], 'a' + i, sizeof(rec[i]));
        memset(aad, 0, sizeof(aad));
        aad[7] = (unsigned char)i;
        aad[8] = 23;
        aad[9] = aad[10] = 3;
        aad[11] = (8 + LEN) >> 8;
        aad[12] = (8 + LEN) & 0xff;
        if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_TLS1_AAD, 13, aad) != 16)
            return 0;
        bufs[i] = rec[i];
        lens[i] = sizeof(rec[i]);
    }
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_SET_PIPELINE_OUTPUT_BUFS, N, bufs) != 1
        || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_SET_PIPELINE_INPUT_BUFS, N, bufs) != 1
        || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_SET_PIPELINE_INPUT_LENS, N, lens) != 1
        || EVP_Cipher(c, bufs[0], bufs[0], 0) != N)
        return 0;
    for (i = 0; i < N && ok; i++) {
        unsigned char iv[12] = { 0 };

        memcpy(iv, fixed, 4);
        iv[11] = (unsigned char)i; /* the explicit nonce is the sequence number */
        memset(ref, 'a' + i, sizeof(ref));
        memset(aad, 0, sizeof(aad));
        aad[7] = (unsigned char)i;
        aad[8] = 23;
        aad[9] = aad[10] = 3;
        aad[11] = (8 + LEN) >> 8;
        aad[12] = (8 + LEN) & 0xff;
        ok = EVP_CipherInit_ex2(r, impl, key, NULL, 1, NULL)
            && EVP_CIPHER_CTX_ctrl(r, EVP_CTRL_GCM_SET_IV_FIXED, -1, iv) == 1
            && EVP_CIPHER_CTX_ctrl(r, EVP_CTRL_AEAD_TLS1_AAD, 13, aad) == 16
            && EVP_Cipher(r, ref, ref, sizeof(ref)) == (int)sizeof(ref)
            && memcmp(ref, rec[i], sizeof(ref)) == 0;
    }
    EVP_CIPHER_CTX_free(c);
    EVP_CIPHER_CTX_free(r);
    EVP_CIPHER_free(impl);
    return ok;
}

int main(int argc, char **argv)
{
    ENGINE *e;
    int bad = 0, first, i;
    long failures, inline0, inline1;

    if (argc < 2) {
        fprintf(stderr, "usage: pt_nothreads ENGINE.so\n");
        return 2;
    }
    if ((e = ENGINE_by_id("dynamic")) == NULL
        || !ENGINE_ctrl_cmd_string(e, "SO_PATH", argv[1], 0)
        || !ENGINE_ctrl_cmd_string(e, "LOAD", NULL, 0)
        || !ENGINE_ctrl_cmd_string(e, "THREADS", "3", 0)
        || !ENGINE_ctrl_cmd_string(e, "INLINE_BELOW", "0", 0) || !ENGINE_init(e)) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    /* the engine tries to start 2 workers once, then no more */
    inline0 = value(e, PIPETLS_CMD_STATS, "inline_batches");
    for (i = 0; i < 5; i++)
        if (!batch(e)) {
            printf("batch %d: wrong output\n", i);
            bad++;
        }
    first = attempts;
    failures = value(e, PIPETLS_CMD_STATS, "worker_start_failures");
    inline1 = value(e, PIPETLS_CMD_STATS, "inline_batches");
    printf("attempts %d\n", attempts);
    printf("stats.worker_start_failures %ld\n", failures);
    printf("info.worker_start_failures %ld\n", value(e, PIPETLS_CMD_INFO, "worker_start_failures"));
    printf("stats.workers %ld\n", value(e, PIPETLS_CMD_STATS, "workers"));
    printf("inline_batches %ld\n", inline1 - inline0);
    if (attempts != 1 || failures != 2 || inline1 - inline0 != 5
        || value(e, PIPETLS_CMD_INFO, "worker_start_failures") != 2)
        bad++;

    /* THREADS changes: worth another try, and now the threads start */
    refuse = 0;
    if (!ENGINE_ctrl_cmd_string(e, "THREADS", "2", 0) || !batch(e))
        bad++;
    printf("after_threads.workers %ld\n", value(e, PIPETLS_CMD_STATS, "workers"));
    printf("after_threads.attempts %d\n", attempts - first);
    if (value(e, PIPETLS_CMD_STATS, "workers") != 1)
        bad++;
    ENGINE_finish(e);
    ENGINE_free(e);
    printf("%s\n", bad ? "FAILED" : "OK");
    return bad ? 1 : 0;
}
