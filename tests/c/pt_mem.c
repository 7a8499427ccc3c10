/*
 * pt_mem.c - one TLS 1.2 connection in memory through libssl, with or
 * without the pipetls engine: write S bytes in W-byte SSL_write calls into a
 * null BIO sink, then SSL_read the same stream (produced untimed) from a
 * read-only memory BIO, and check every byte. Prints one line of key=value.
 *
 *   pt_mem [-e engine.so] [-c cipher] [-n (EtM off)] [-p max_pipelines]
 *          [-f split_send_fragment] [-t threads] [-m MiB] [-w write_KiB]
 *          [-3 (TLS 1.3)] [-r reps]
 * CRT and KEY (environment) name a PEM certificate and key.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *m)
{
    fprintf(stderr, "pt_mem: %s\n", m);
    ERR_print_errors_fp(stderr);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *cipher = "ECDHE-RSA-AES128-GCM-SHA256", *eng = NULL, *threads = NULL;
    int etm = 1, mp = 1, tls13 = 0, opt;
    long split = 0;
    size_t total = 64 << 20, chunk = 256 << 10;
    ENGINE *e = NULL;

    while ((opt = getopt(argc, argv, "e:c:np:f:t:m:w:3")) != -1) {
        switch (opt) {
        case 'e': eng = optarg; break;
        case 'c': cipher = optarg; break;
        case 'n': etm = 0; break;
        case 'p': mp = atoi(optarg); break;
        case 'f': split = atol(optarg); break;
        case 't': threads = optarg; break;
        case 'm': total = (size_t)atol(optarg) << 20; break;
        case 'w': chunk = (size_t)atol(optarg) << 10; break;
        case '3': tls13 = 1; break;
        default: die("bad option");
        }
    }
    if (eng != NULL) {
        if ((e = ENGINE_by_id("dynamic")) == NULL
            || !ENGINE_ctrl_cmd_string(e, "SO_PATH", eng, 0)
            || !ENGINE_ctrl_cmd_string(e, "LOAD", NULL, 0))
            die("engine load");
        if (threads != NULL && !ENGINE_ctrl_cmd_string(e, "THREADS", threads, 0))
            die("THREADS");
        if (!ENGINE_init(e) || !ENGINE_set_default_ciphers(e))
            die("engine init");
    }
    const char *crt = getenv("CRT"), *key = getenv("KEY");
    SSL_CTX *sc = SSL_CTX_new(TLS_server_method()), *cc = SSL_CTX_new(TLS_client_method());
    if (!SSL_CTX_use_certificate_file(sc, crt, SSL_FILETYPE_PEM)
        || !SSL_CTX_use_PrivateKey_file(sc, key, SSL_FILETYPE_PEM))
        die("cert");
    SSL_CTX *both[2] = { sc, cc };
    for (int i = 0; i < 2; i++) {
        if (tls13) {
            SSL_CTX_set_min_proto_version(both[i], TLS1_3_VERSION);
            if (!SSL_CTX_set_ciphersuites(both[i], cipher)) die("ciphersuites");
        } else {
            SSL_CTX_set_max_proto_version(both[i], TLS1_2_VERSION);
            if (!SSL_CTX_set_cipher_list(both[i], cipher)) die("cipher");
        }
        if (!etm)
            SSL_CTX_set_options(both[i], SSL_OP_NO_ENCRYPT_THEN_MAC);
        if (mp > 1) {
            if (!SSL_CTX_set_max_pipelines(both[i], mp)) die("max_pipelines");
            SSL_CTX_set_default_read_buffer_len(both[i], 40 * 16384 * 2);
        }
        if (split > 0 && !SSL_CTX_set_split_send_fragment(both[i], split)) die("split");
    }
    SSL *s = SSL_new(sc), *c = SSL_new(cc);
    BIO *sb, *cb;
    BIO_new_bio_pair(&sb, 1 << 20, &cb, 1 << 20);
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    for (int i = 0; i < 100 && (!SSL_is_init_finished(s) || !SSL_is_init_finished(c)); i++) {
        SSL_do_handshake(c);
        SSL_do_handshake(s);
    }
    if (!SSL_is_init_finished(s) || !SSL_is_init_finished(c)) die("handshake");
    {   /* TLS 1.3: let the client consume the session tickets */
        unsigned char t[1];
        SSL_read(c, t, 1);
        ERR_clear_error();
    }
    unsigned char *buf = malloc(chunk), *rbuf = malloc(chunk);
    for (size_t i = 0; i < chunk; i++) buf[i] = (unsigned char)(i * 131 + (i >> 8));
    int write_only = getenv("PT_WRITE_ONLY") != NULL; /* for profilers */
    BIO *cap = BIO_new(BIO_s_mem());
    BIO_up_ref(cap);
    SSL_set0_wbio(s, cap);
    for (size_t n = write_only ? total : 0; n < total;) {
        int w = SSL_write(s, buf, (int)chunk);
        if (w <= 0) die("write");
        n += w;
        if (total - n < chunk && total > n) { /* last, partial call */
            if (SSL_write(s, buf, (int)(total - n)) <= 0) die("write");
            n = total;
        }
    }
    BIO *null = BIO_new(BIO_s_null());
    SSL_set0_wbio(s, null);
    double t0 = now();
    for (size_t n = 0; n < total;) {
        int w = SSL_write(s, buf, (int)chunk);
        if (w <= 0) die("write2");
        n += w;
    }
    double tw = now() - t0;
    if (write_only) {
        printf("write_gbps=%.3f\n", total / tw / 1e9);
        return 0;
    }
    char *data;
    long len = BIO_get_mem_data(cap, &data);
    BIO *rd = BIO_new_mem_buf(data, len);
    BIO_up_ref(rd);
    SSL_set0_rbio(c, rd);
    t0 = now();
    size_t got = 0, bad = 0;
    int r;
    while ((r = SSL_read(c, rbuf, (int)chunk)) > 0) {
        for (size_t i = 0; i < (size_t)r;) {
            size_t off = (got + i) % chunk, k = chunk - off;
            if (k > (size_t)r - i) k = (size_t)r - i;
            bad += memcmp(rbuf + i, buf + off, k) != 0;
            i += k;
        }
        got += r;
    }
    double tr = now() - t0;
    if (got < total) die("short read");
    if (bad) die("data mismatch");
    printf("cipher=%s etm=%d mp=%d write_gbps=%.3f read_gbps=%.3f\n",
        SSL_CIPHER_get_name(SSL_get_current_cipher(s)), etm, mp,
        total / tw / 1e9, total / tr / 1e9);
    if (e != NULL)
        ENGINE_ctrl_cmd_string(e, "STATS", NULL, 0);
    SSL_free(s);
    SSL_free(c);
    SSL_CTX_free(sc);
    SSL_CTX_free(cc);
    if (e != NULL) {
        ENGINE_finish(e);
        ENGINE_free(e);
    }
    return 0;
}
