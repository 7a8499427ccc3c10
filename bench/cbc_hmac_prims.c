/*
 * cbc_hmac_prims.c - per-core throughput of OpenSSL's stitched CBC-HMAC
 * primitives, the ones pipetls's lanes can choose between:
 *   stitched  one TLS record at a time (EVP_CTRL_AEAD_TLS1_AAD + EVP_Cipher
 *             in place: OpenSSL's stitched AES-CBC + HMAC code),
 *   mb4, mb8  MULTIBLOCK groups of 4 or 8 equal records
 *             (EVP_CTRL_TLS1_1_MULTIBLOCK_ENCRYPT, interleave 4 or 8),
 *   copy      the two memcpy a lane's MULTIBLOCK group costs (plaintext
 *             into the group buffer, record bodies out of it).
 * Measured in many short rounds, the variants' order rotated every round;
 * each round's time is the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so
 * time the thread spent descheduled on a loaded machine does not count.
 * Prints the median rate of each variant and the median of the per-round
 * ratios to mb8, with the 10th..90th percentile of those ratios.
 *
 *   cc -O2 -o cbc_hmac_prims bench/cbc_hmac_prims.c -lcrypto
 *   ./cbc_hmac_prims [AES-128-CBC-HMAC-SHA1|AES-256-CBC-HMAC-SHA256] [rounds]
 */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define P 16384 /* plaintext per record (a full TLS fragment) */
#define RECS 16 /* records per round and variant */
enum { V_STITCHED, V_MB4, V_MB8, V_COPY, NV };
static const char *names[NV] = { "stitched", "mb4", "mb8", "copy" };

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double q)
{
    qsort(v, n, sizeof(*v), cmp);
    return v[(int)(q * (n - 1) + 0.5)];
}

static unsigned char key[32], mackey[32];
static unsigned char *plain, *rec, *mbout, *copybuf;
static size_t mac_len, body;

static void die(const char *what)
{
    fprintf(stderr, "cbc_hmac_prims: %s failed\n", what);
    exit(1);
}

static void aad_of(unsigned char aad[13], unsigned long long seq, size_t len)
{
    int i;

    for (i = 0; i < 8; i++)
        aad[i] = (unsigned char)(seq >> (56 - 8 * i));
    aad[8] = 23;
    aad[9] = 3;
    aad[10] = 3;
    aad[11] = (unsigned char)(len >> 8);
    aad[12] = (unsigned char)len;
}

static void stitched(EVP_CIPHER_CTX *c, unsigned long long *seq)
{
    unsigned char aad[13];
    int i;

    for (i = 0; i < RECS; i++) {
        aad_of(aad, (*seq)++, 16 + P);
        /* in place over the record, as a lane does (libssl already put the
         * plaintext there): no copy */
        if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_TLS1_AAD, 13, aad) <= 0
            || EVP_Cipher(c, rec, rec, (unsigned int)body) <= 0)
            die("stitched record");
    }
}

static void mb(EVP_CIPHER_CTX *c, unsigned long long *seq, int n)
{
    EVP_CTRL_TLS1_1_MULTIBLOCK_PARAM m;
    unsigned char aad[13];
    int g, packlen;

    for (g = 0; g < RECS / n; g++) {
        aad_of(aad, *seq, 0);
        *seq += n;
        m.out = NULL;
        m.inp = aad;
        m.len = (size_t)n * P;
        m.interleave = n;
        packlen = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_TLS1_1_MULTIBLOCK_AAD, sizeof(m), &m);
        if (packlen <= 0 || m.interleave != (unsigned int)n)
            die("MULTIBLOCK_AAD");
        m.out = mbout;
        m.inp = plain + (size_t)g * n * P;
        m.len = (size_t)n * P;
        m.interleave = n;
        if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_TLS1_1_MULTIBLOCK_ENCRYPT, sizeof(m), &m) != packlen)
            die("MULTIBLOCK_ENCRYPT");
    }
}

static void copies(void)
{
    int i;

    for (i = 0; i < RECS; i++) /* in: plaintext to the group buffer; out: body to its record */
        memcpy(copybuf + (size_t)(i % 8) * P, plain + (size_t)i * P, P);
    for (i = 0; i < RECS; i++)
        memcpy(rec, mbout + (size_t)(i % 8) * (5 + body) + 5, body);
}

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "AES-128-CBC-HMAC-SHA1";
    int rounds = argc > 2 ? atoi(argv[2]) : 200, r, v, k;
    const EVP_CIPHER *ci = EVP_get_cipherbyname(name);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    unsigned long long seq = 0;
    double *t[NV], *ratio[NV];

    if (ci == NULL || c == NULL || rounds < 4)
        die("cipher lookup");
    mac_len = strstr(name, "SHA256") != NULL ? 32 : 20;
    body = 16 + ((P + mac_len + 16) & ~(size_t)15);
    plain = malloc((size_t)RECS * P);
    rec = malloc(body + 64);
    mbout = malloc(8 * (5 + body) + 64);
    copybuf = malloc(8 * (size_t)P);
    for (v = 0; v < NV; v++) {
        t[v] = calloc(rounds, sizeof(double));
        ratio[v] = calloc(rounds, sizeof(double));
    }
    RAND_bytes(key, sizeof(key));
    RAND_bytes(mackey, sizeof(mackey));
    RAND_bytes(plain, RECS * P);
    if (!EVP_EncryptInit_ex(c, ci, NULL, key, NULL)
        || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_MAC_KEY, (int)mac_len, mackey) <= 0)
        die("key setup");
    for (r = -5; r < rounds; r++) { /* 5 warm-up rounds */
        for (k = 0; k < NV; k++) {
            double t0;

            v = (k + (r < 0 ? 0 : r)) % NV;
            t0 = now();
            if (v == V_STITCHED)
                stitched(c, &seq);
            else if (v == V_MB4)
                mb(c, &seq, 4);
            else if (v == V_MB8)
                mb(c, &seq, 8);
            else
                copies();
            if (r >= 0)
                t[v][r] = now() - t0;
        }
        if (r >= 0)
            for (v = 0; v < NV; v++)
                ratio[v][r] = t[V_MB8][r] / t[v][r]; /* rate relative to mb8 */
    }
    printf("%s, %d rounds of %d records of %d bytes, thread CPU time\n", name, rounds, RECS, P);
    for (v = 0; v < NV; v++) {
        double med = pct(t[v], rounds, 0.5);

        printf("%-9s %7.3f GB/s  rate/mb8 median %.3f  p10..p90 %.3f..%.3f\n", names[v],
            (double)RECS * P / med / 1e9, pct(ratio[v], rounds, 0.5), pct(ratio[v], rounds, 0.1),
            pct(ratio[v], rounds, 0.9));
    }
    EVP_CIPHER_CTX_free(c);
    return 0;
}
