/*
 * pt_stress.c - many pipelining TLS 1.2 connections at once through one
 * pipetls lane pool, then fork() with the pool running and pipelining in
 * parent and child. Every byte is checked. Built normally and under
 * AddressSanitizer+UBSan / ThreadSanitizer (see CMakeLists.txt, tox.ini).
 *
 *   pt_stress ENGINE.so CERT KEY [connections=16] [KiB per direction=4096] [nofork]
 *
 * nofork: skip the fork part. Under LeakSanitizer the forked child reports
 * the parent's worker threads' per-thread OpenSSL state (copied by fork(),
 * referenced only from threads the child does not have), so the test runs
 * the fork part with leak detection off and the rest with it on.
 *
 * Exit status 0 when all data arrived intact and the engine's statistics
 * show pipelined batches; prints the statistics.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../engine/pipetls.h"

static const char *suites[][2] = {
    { "ECDHE-RSA-AES128-GCM-SHA256", "etm" },
    { "ECDHE-RSA-AES256-GCM-SHA384", "etm" },
    { "ECDHE-RSA-CHACHA20-POLY1305", "etm" },
    { "AES128-SHA", "noetm" }, /* stitched AES-128-CBC-HMAC-SHA1 */
    { "AES256-SHA256", "etm" }, /* plain AES-256-CBC, encrypt-then-MAC */
};
#define N_SUITES (sizeof(suites) / sizeof(suites[0]))

static const char *cert, *key;
static size_t per_dir;
static ENGINE *eng;

typedef struct {
    int id;
    int ok;
    char err[256];
} job;

static unsigned char pattern(int id, size_t i, int dir)
{
    return (unsigned char)(i * 131 + (i >> 9) * 7 + id * 17 + dir * 101);
}

static SSL_CTX *make_ctx(int server, const char *suite, int etm)
{
    SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

    if (c == NULL)
        return NULL;
    if (server && (!SSL_CTX_use_certificate_file(c, cert, SSL_FILETYPE_PEM)
            || !SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM)))
        goto err;
    SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
    if (!SSL_CTX_set_cipher_list(c, suite) || !SSL_CTX_set_max_pipelines(c, 8))
        goto err;
    SSL_CTX_set_split_send_fragment(c, 4096);
    SSL_CTX_set_default_read_buffer_len(c, 256 * 1024);
    if (!etm)
        SSL_CTX_set_options(c, SSL_OP_NO_ENCRYPT_THEN_MAC);
    return c;
err:
    SSL_CTX_free(c);
    return NULL;
}

/* Moves per_dir bytes each way over one in-memory connection. */
static int one_connection(int id, char *err, size_t errlen)
{
    const char *suite = suites[id % N_SUITES][0];
    int etm = strcmp(suites[id % N_SUITES][1], "etm") == 0;
    SSL_CTX *sc = make_ctx(1, suite, etm), *cc = make_ctx(0, suite, etm);
    SSL *s = NULL, *c = NULL;
    BIO *sb = NULL, *cb = NULL;
    unsigned char *wbuf = malloc(65536), *rbuf = malloc(65536);
    size_t sent[2] = { 0, 0 }, got[2] = { 0, 0 };
    int i, rc = 0;

    if (sc == NULL || cc == NULL || wbuf == NULL || rbuf == NULL) {
        snprintf(err, errlen, "setup %s", suite);
        goto done;
    }
    s = SSL_new(sc);
    c = SSL_new(cc);
    BIO_new_bio_pair(&sb, 512 * 1024, &cb, 512 * 1024);
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    for (i = 0; i < 100 && (!SSL_is_init_finished(s) || !SSL_is_init_finished(c)); i++) {
        SSL_do_handshake(c);
        SSL_do_handshake(s);
    }
    if (!SSL_is_init_finished(s) || !SSL_is_init_finished(c)) {
        snprintf(err, errlen, "handshake %s", suite);
        goto done;
    }
    /* dir 0: client -> server, dir 1: server -> client */
    while (got[0] < per_dir || got[1] < per_dir) {
        int dir;

        for (dir = 0; dir < 2; dir++) {
            SSL *w = dir == 0 ? c : s, *r = dir == 0 ? s : c;
            size_t n = per_dir - sent[dir], k;
            int m;

            if (n > 65536)
                n = 65536;
            if (n > 0) {
                for (k = 0; k < n; k++)
                    wbuf[k] = pattern(id, sent[dir] + k, dir);
                m = SSL_write(w, wbuf, (int)n);
                if (m > 0)
                    sent[dir] += (size_t)m;
                else if (SSL_get_error(w, m) != SSL_ERROR_WANT_WRITE) {
                    snprintf(err, errlen, "write %s", suite);
                    goto done;
                }
            }
            while ((m = SSL_read(r, rbuf, 65536)) > 0) {
                for (k = 0; k < (size_t)m; k++)
                    if (rbuf[k] != pattern(id, got[dir] + k, dir)) {
                        snprintf(err, errlen, "data mismatch %s at %zu", suite, got[dir] + k);
                        goto done;
                    }
                got[dir] += (size_t)m;
            }
            if (SSL_get_error(r, m) != SSL_ERROR_WANT_READ) {
                snprintf(err, errlen, "read %s", suite);
                goto done;
            }
        }
    }
    rc = 1;
done:
    SSL_free(s);
    SSL_free(c);
    SSL_CTX_free(sc);
    SSL_CTX_free(cc);
    free(wbuf);
    free(rbuf);
    ERR_clear_error();
    return rc;
}

static void *thread_main(void *p)
{
    job *j = p;

    j->ok = one_connection(j->id, j->err, sizeof(j->err));
    return NULL;
}

static long stat_value(const char *text, const char *name)
{
    const char *p = text;
    size_t n = strlen(name);

    while ((p = strstr(p, name)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return atol(p + n + 1);
        p += n;
    }
    return -1;
}

static long pipelined(void)
{
    char buf[8192];

    ENGINE_ctrl(eng, PIPETLS_CMD_STATS, sizeof(buf), buf, NULL);
    return stat_value(buf, "pipelined_batches");
}

int main(int argc, char **argv)
{
    int n = argc > 4 ? atoi(argv[4]) : 16, i, bad = 0, status = 0;
    pthread_t *t;
    job *jobs;
    char stats[8192];
    pid_t pid;
    char err[256];

    int do_fork = !(argc > 6 && strcmp(argv[6], "nofork") == 0);

    if (argc < 4) {
        fprintf(stderr, "usage: pt_stress ENGINE.so CERT KEY [connections] [KiB] [nofork]\n");
        return 2;
    }
    cert = argv[2];
    key = argv[3];
    per_dir = (size_t)(argc > 5 ? atol(argv[5]) : 4096) * 1024;
    if ((eng = ENGINE_by_id("dynamic")) == NULL
        || !ENGINE_ctrl_cmd_string(eng, "SO_PATH", argv[1], 0)
        || !ENGINE_ctrl_cmd_string(eng, "LOAD", NULL, 0)
        || !ENGINE_ctrl_cmd_string(eng, "THREADS", "4", 0)
        || !ENGINE_ctrl_cmd_string(eng, "INLINE_BELOW", "0", 0)
        /* every batch to the lanes: this is a stress test of callers and
         * workers on the same batches, not of ADAPTIVE, which keeps the
         * batches of 16 callers on a 2-CPU machine in their callers */
        || !ENGINE_ctrl_cmd_string(eng, "ADAPTIVE", "0", 0)
        || !ENGINE_init(eng) || !ENGINE_set_default_ciphers(eng)) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    t = calloc((size_t)n, sizeof(*t));
    jobs = calloc((size_t)n, sizeof(*jobs));
    for (i = 0; i < n; i++) {
        jobs[i].id = i;
        pthread_create(&t[i], NULL, thread_main, &jobs[i]);
    }
    for (i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        if (!jobs[i].ok) {
            fprintf(stderr, "connection %d failed: %s\n", i, jobs[i].err);
            bad++;
        }
    }
    printf("concurrent: %d connections, %d failed, pipelined_batches %ld\n", n, bad, pipelined());
    if (pipelined() <= 0)
        bad++;

    /* fork with the pool running: both sides must pipeline afterwards, and
     * the child starts with zeroed statistics (the parent's are not reset
     * before the fork) */
    fflush(stdout);
    pid = do_fork ? fork() : -2;
    if (pid == 0) {
        char first[8192];
        long before, records;
        int ok;

        ENGINE_ctrl(eng, PIPETLS_CMD_STATS, sizeof(first), first, NULL);
        records = stat_value(first, "records");
        before = pipelined();
        ok = records == 0 && before == 0;
        if (!ok)
            snprintf(err, sizeof(err), "statistics inherited: records %ld, pipelined_batches %ld",
                records, before);
        else
            ok = one_connection(1, err, sizeof(err)) && pipelined() > before;
        if (!ok)
            fprintf(stderr, "child: %s\n", err);
        printf("fork child: %s, pipelined_batches %ld\n", ok ? "ok" : "FAILED", pipelined());
        fflush(stdout);
        _exit(ok ? 0 : 1);
    }
    ENGINE_ctrl(eng, PIPETLS_CMD_RESET_STATS, 0, NULL, NULL);
    if (!one_connection(2, err, sizeof(err))) {
        fprintf(stderr, "parent after fork: %s\n", err);
        bad++;
    }
    if (do_fork && (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)
                       || WEXITSTATUS(status) != 0)) {
        fprintf(stderr, "fork child failed\n");
        bad++;
    }
    printf("fork parent: pipelined_batches %ld\n", pipelined());
    ENGINE_ctrl(eng, PIPETLS_CMD_STATS, sizeof(stats), stats, NULL);
    fputs(stats, stdout);
    free(t);
    free(jobs);
    ENGINE_finish(eng);
    ENGINE_free(eng);
    printf("%s\n", bad ? "FAILED" : "OK");
    return bad ? 1 : 0;
}
