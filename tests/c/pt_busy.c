/*
 * pt_busy.c - a busy server in one process: N threads, each writing over a
 * TLS 1.2 connection of its own, at the same time. Stock OpenSSL or the
 * pipetls ENGINE, one of them per process (a driver interleaves runs, see
 * bench/busy_pairs.py).
 *
 *   pt_busy stock|ENGINE.so CERT KEY [threads=2] [MiB per thread=64]
 *           [suite=ECDHE-RSA-AES128-GCM-SHA256] [lanes=0: the engine's default]
 *           [max_pipelines=8]
 *
 * Each thread makes a connection over a BIO pair (handshake untimed), turns
 * the writer's output into a null sink and, once every thread is ready,
 * writes its MiB in 256 KiB SSL_write calls. The harness stays out of the
 * timed loop (one buffer per thread, no allocation).
 *
 * Prints "key value" lines: aggregate_gbps (all bytes over the time from
 * the common start to the last thread's end), the slowest and fastest
 * thread, the process's CPU time and context switches during the timed part
 * (getrusage), the writing threads' own CPU time (the rest is the engine's
 * workers), and for the engine its STATS text. Exit status 0 when every
 * write succeeded.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../../engine/pipetls.h"

#define CALL_BYTES (256 * 1024)

static const char *cert, *key, *suite;
static size_t per_thread;
static int max_pipelines;
static int use_engine;
static pthread_barrier_t ready, go;

typedef struct {
    int ok;
    double t0, t1, cpu; /* cpu: this thread's CPU seconds in the timed part */
} job;

static double thread_cpu(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static SSL_CTX *make_ctx(int server)
{
    SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

    if (c == NULL)
        return NULL;
    if (server && (!SSL_CTX_use_certificate_file(c, cert, SSL_FILETYPE_PEM)
            || !SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM)))
        goto err;
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
    if (!SSL_CTX_set_cipher_list(c, suite))
        goto err;
    if (strstr(suite, "GCM") == NULL && strstr(suite, "CHACHA") == NULL)
        SSL_CTX_set_options(c, SSL_OP_NO_ENCRYPT_THEN_MAC); /* stitched CBC-HMAC */
    if (use_engine && max_pipelines > 1 && !SSL_CTX_set_max_pipelines(c, max_pipelines))
        goto err;
    SSL_CTX_clear_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE);
    return c;
err:
    SSL_CTX_free(c);
    return NULL;
}

static void *thread_main(void *p)
{
    job *j = p;
    SSL_CTX *sc = make_ctx(1), *cc = make_ctx(0);
    SSL *s = NULL, *c = NULL;
    BIO *sb = NULL, *cb = NULL, *sink;
    unsigned char *buf = calloc(1, CALL_BYTES);
    size_t done = 0;
    int i, ok = 0;

    if (sc == NULL || cc == NULL || buf == NULL)
        goto wait;
    s = SSL_new(sc);
    c = SSL_new(cc);
    if (s == NULL || c == NULL || !BIO_new_bio_pair(&sb, 64 * 1024, &cb, 64 * 1024))
        goto wait;
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    for (i = 0; i < 100 && (!SSL_is_init_finished(s) || !SSL_is_init_finished(c)); i++) {
        SSL_do_handshake(c);
        SSL_do_handshake(s);
    }
    if (!SSL_is_init_finished(s) || !SSL_is_init_finished(c))
        goto wait;
    if ((sink = BIO_new(BIO_s_null())) == NULL)
        goto wait;
    BIO_up_ref(cb); /* SSL_set0_wbio drops the old one, the read side keeps it */
    SSL_set0_wbio(c, sink);
    ok = 1;
wait:
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&go);
    j->cpu = thread_cpu();
    j->t0 = now();
    while (ok && done < per_thread) {
        size_t n = per_thread - done < CALL_BYTES ? per_thread - done : CALL_BYTES;

        if (SSL_write(c, buf, (int)n) != (int)n)
            ok = 0;
        else
            done += n;
    }
    j->t1 = now();
    j->cpu = thread_cpu() - j->cpu;
    j->ok = ok;
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(sc);
    SSL_CTX_free(cc);
    free(buf);
    ERR_clear_error();
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 4 ? atoi(argv[4]) : 2, lanes = argc > 7 ? atoi(argv[7]) : 0, i, bad = 0;
    pthread_t *t;
    job *jobs;
    ENGINE *eng = NULL;
    struct rusage r0, r1;
    double start, end, slow = 0, fast = 1e30, callers_cpu = 0;

    if (argc < 4 || n < 1) {
        fprintf(stderr, "usage: pt_busy stock|ENGINE.so CERT KEY [threads] [MiB] [suite] "
                        "[lanes] [max_pipelines]\n");
        return 2;
    }
    cert = argv[2];
    key = argv[3];
    per_thread = (size_t)(argc > 5 ? atol(argv[5]) : 64) << 20;
    suite = argc > 6 ? argv[6] : "ECDHE-RSA-AES128-GCM-SHA256";
    max_pipelines = argc > 8 ? atoi(argv[8]) : 8;
    use_engine = strcmp(argv[1], "stock") != 0;
    if (use_engine) {
        char lanes_s[16];

        snprintf(lanes_s, sizeof(lanes_s), "%d", lanes);
        if ((eng = ENGINE_by_id("dynamic")) == NULL
            || !ENGINE_ctrl_cmd_string(eng, "SO_PATH", argv[1], 0)
            || !ENGINE_ctrl_cmd_string(eng, "LOAD", NULL, 0)
            || (lanes > 0 && !ENGINE_ctrl_cmd_string(eng, "THREADS", lanes_s, 0))
            || !ENGINE_init(eng) || !ENGINE_set_default_ciphers(eng)) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
    }
    t = calloc((size_t)n, sizeof(*t));
    jobs = calloc((size_t)n, sizeof(*jobs));
    pthread_barrier_init(&ready, NULL, (unsigned)n + 1);
    pthread_barrier_init(&go, NULL, (unsigned)n + 1);
    for (i = 0; i < n; i++)
        pthread_create(&t[i], NULL, thread_main, &jobs[i]);
    pthread_barrier_wait(&ready);
    if (eng != NULL)
        ENGINE_ctrl(eng, PIPETLS_CMD_RESET_STATS, 0, NULL, NULL);
    getrusage(RUSAGE_SELF, &r0);
    pthread_barrier_wait(&go);
    for (i = 0; i < n; i++) {
        double d;

        pthread_join(t[i], NULL);
        bad += !jobs[i].ok;
        callers_cpu += jobs[i].cpu;
        d = jobs[i].t1 - jobs[i].t0;
        slow = d > slow ? d : slow;
        fast = d < fast ? d : fast;
    }
    getrusage(RUSAGE_SELF, &r1);
    start = jobs[0].t0;
    end = jobs[0].t1;
    for (i = 1; i < n; i++) {
        start = jobs[i].t0 < start ? jobs[i].t0 : start;
        end = jobs[i].t1 > end ? jobs[i].t1 : end;
    }
    printf("mode %s\nthreads %d\nbytes %zu\nfailed %d\n", use_engine ? "pipetls" : "stock", n,
        per_thread * (size_t)n, bad);
    printf("aggregate_gbps %.4f\n", (double)(per_thread * (size_t)n) / (end - start) / 1e9);
    printf("thread_gbps_min %.4f\nthread_gbps_max %.4f\n", (double)per_thread / slow / 1e9,
        (double)per_thread / fast / 1e9);
    printf("cpu_s %.4f\nwall_s %.4f\n",
        (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec)
            + (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec
                   - r0.ru_stime.tv_usec) * 1e-6,
        end - start);
    printf("callers_cpu_s %.4f\n", callers_cpu);
    printf("sys_s %.4f\n", (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec)
            + (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) * 1e-6);
    printf("voluntary_switches %ld\ninvoluntary_switches %ld\n", r1.ru_nvcsw - r0.ru_nvcsw,
        r1.ru_nivcsw - r0.ru_nivcsw);
    if (eng != NULL) {
        char stats[8192];

        ENGINE_ctrl(eng, PIPETLS_CMD_STATS, sizeof(stats), stats, NULL);
        fputs(stats, stdout);
        ENGINE_finish(eng);
        ENGINE_free(eng);
    }
    free(t);
    free(jobs);
    return bad ? 1 : 0;
}
