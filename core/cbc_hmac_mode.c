/*
 * cbc_hmac_mode.c - how the records of a CBC-HMAC encrypt batch go through
 * OpenSSL's stitched code: one at a time per lane, or in MULTIBLOCK groups
 * of four or eight per lane (see pt_record.h, PT_CBC_*).
 *
 * Per core a MULTIBLOCK group is cheaper per record than a stitched record
 * (the group runs four or eight AES-CBC chains side by side; a stitched
 * record waits on one chain's AES latency), and an 8-group is cheaper than
 * a 4-group. But a group is one job for one lane: with few records and
 * many lanes, records one at a time keep more lanes busy. So, per batch,
 * the plan that finishes first wins: the batch's jobs are laid on the lanes
 * in index order, each to the lane free first (as the lanes claim them),
 * and the plan with the earliest last finish is taken. The per-record
 * costs come from a short measurement on this CPU (PT_CBC_AUTO, once per
 * family, the first time the family encrypts a batch or INFO asks); a
 * forced PT_CBC_MULTIBLOCK uses fixed costs and never measures.
 */
#include "pt_record.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

enum { K_STITCHED, K_MB4, K_MB8, K_N };

/* Fixed costs (per record, an 8-group's = 1), near what AMD EPYC (Zen,
 * SHA-NI, AVX2) measures for 16 KiB records: see docs/performance.md. */
static const double fixed_cost[K_N] = { 1.6, 1.1, 1.0 };

static _Atomic int mode = PT_CBC_AUTO;

static const char *const mode_names[] = {
    [PT_CBC_AUTO] = "auto",
    [PT_CBC_STITCHED] = "stitched",
    [PT_CBC_MULTIBLOCK] = "multiblock",
};

int pt_cbc_hmac_mode(void)
{
    return mode;
}

int pt_set_cbc_hmac_mode(int m)
{
    if (m != PT_CBC_AUTO && m != PT_CBC_STITCHED && m != PT_CBC_MULTIBLOCK)
        return 0;
    mode = m;
    return 1;
}

const char *pt_cbc_hmac_mode_name(int m)
{
    return m >= PT_CBC_AUTO && m <= PT_CBC_MULTIBLOCK ? mode_names[m] : "?";
}

int pt_cbc_hmac_mode_parse(const char *name)
{
    int m;

    for (m = PT_CBC_AUTO; name != NULL && m <= PT_CBC_MULTIBLOCK; m++)
        if (strcmp(name, mode_names[m]) == 0)
            return m;
    return -1;
}

int pt_multiblock_enabled(void)
{
    return mode != PT_CBC_STITCHED;
}

int pt_set_multiblock(long on)
{
    if (on != 0 && on != 1)
        return 0;
    mode = on ? PT_CBC_MULTIBLOCK : PT_CBC_STITCHED;
    return 1;
}

/* ---- the measurement ----------------------------------------------------
 *
 * On a throwaway copy of OpenSSL's own context, random keys: eight
 * 16 KiB records one at a time, as two 4-groups and as one 8-group, through
 * the family's own record and group functions (the group's copies
 * included), the order rotated, the thread's CPU time (so time spent
 * descheduled on a busy machine does not count), the least of eight rounds
 * after one to warm up. About 3 ms once per family. */

#define CAL_PLAIN 16384
#define CAL_RECS 8
#define CAL_ROUNDS 8

/* state: 0 not measured, 1 being measured (by one thread; the others use
 * the fixed costs meanwhile, nobody waits, and no lock can be inherited
 * held across fork), 2 done (0 in cost[0]: the measurement failed) */
typedef struct {
    _Atomic int state;
    double cost[K_N];
} pt_cal;

static pt_cal cal[PT_N_FAMILIES];

static double cpu_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cal_kind(const pt_family *f, pt_lane *lane, pt_record *r, int kind)
{
    static const pt_tls_params none;
    int i;

    if (kind == K_MB8)
        return f->group(f, lane, r, PT_GROUP_MAX);
    if (kind == K_MB4)
        return f->group(f, lane, r, PT_GROUP) | f->group(f, lane, r + PT_GROUP, PT_GROUP);
    for (i = 0; i < CAL_RECS; i++)
        if (f->record(&none, lane, &r[i], 1) < 0)
            return -1;
    return 0;
}

static int measure(const pt_family *f, const EVP_CIPHER_CTX *like, double cost[K_N])
{
    size_t body = 16 + ((CAL_PLAIN + f->mac_len + 16) & ~(size_t)15);
    unsigned char key[32], mac_key[32], *buf = NULL;
    double best[K_N] = { 0 };
    pt_record r[CAL_RECS];
    pt_lane lane;
    int ok = 0, round, k, i;

    memset(&lane, 0, sizeof(lane));
    memset(r, 0, sizeof(r));
    ERR_set_mark();
    /* a copy of OpenSSL's own context, re-keyed with random keys (no key
     * of the caller's is used) */
    if (f->group == NULL || (lane.evp = EVP_CIPHER_CTX_new()) == NULL
        || !EVP_CIPHER_CTX_copy(lane.evp, like)
        || (buf = OPENSSL_zalloc(CAL_RECS * body)) == NULL
        || RAND_bytes(key, sizeof(key)) <= 0 || RAND_bytes(mac_key, sizeof(mac_key)) <= 0
        || !EVP_CipherInit_ex2(lane.evp, NULL, key, NULL, 1, NULL)
        || EVP_CIPHER_CTX_ctrl(lane.evp, EVP_CTRL_AEAD_SET_MAC_KEY, (int)f->mac_len, mac_key) <= 0)
        goto end;
    for (i = 0; i < CAL_RECS; i++) {
        r[i].in = r[i].out = buf + (size_t)i * body;
        r[i].len = body;
        r[i].aad[7] = (unsigned char)i; /* sequence number i */
        r[i].aad[8] = 23; /* application data, TLS 1.2 */
        r[i].aad[9] = 3;
        r[i].aad[10] = 3;
        r[i].aad[11] = (unsigned char)((16 + CAL_PLAIN) >> 8);
        r[i].aad[12] = (unsigned char)(16 + CAL_PLAIN);
    }
    for (round = -1; round < CAL_ROUNDS; round++)
        for (k = 0; k < K_N; k++) {
            int kind = (k + (round < 0 ? 0 : round)) % K_N;
            double t0 = cpu_seconds(), t;

            if (cal_kind(f, &lane, r, kind) != 0)
                goto end;
            t = cpu_seconds() - t0;
            if (round >= 0 && (best[kind] == 0 || t < best[kind]))
                best[kind] = t;
        }
    for (k = 0; k < K_N; k++)
        if (best[k] <= 0 || best[K_MB8] <= 0)
            goto end;
    for (k = 0; k < K_N; k++)
        cost[k] = best[k] / best[K_MB8];
    ok = 1;
end:
    ERR_pop_to_mark(); /* a failed measurement is no error of the caller's */
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(mac_key, sizeof(mac_key));
    OPENSSL_clear_free(lane.scratch, lane.scratch_len);
    OPENSSL_clear_free(buf, CAL_RECS * body);
    EVP_CIPHER_CTX_free(lane.evp);
    return ok;
}

static int family_index(const pt_family *f)
{
    int i;

    for (i = 0; i < PT_N_FAMILIES && pt_families[i] != NULL; i++)
        if (pt_families[i] == f)
            return i;
    return -1;
}

int pt_cbc_hmac_costs(const pt_family *f, const EVP_CIPHER_CTX *like, double cost[3])
{
    int i = family_index(f);
    pt_cal *c;

    memset(cost, 0, 3 * sizeof(double));
    if (i < 0 || f->group == NULL)
        return 0;
    c = &cal[i];
    if (atomic_load_explicit(&c->state, memory_order_acquire) != 2) {
        double m[K_N] = { 0 };
        int expect = 0;

        if (like == NULL
            || !atomic_compare_exchange_strong_explicit(&c->state, &expect, 1,
                memory_order_acq_rel, memory_order_acquire))
            return 0; /* not measured yet, or being measured by another thread */
        if (measure(f, like, m))
            memcpy(c->cost, m, sizeof(m));
        atomic_store_explicit(&c->state, 2, memory_order_release);
    }
    memcpy(cost, c->cost, 3 * sizeof(double));
    return cost[0] > 0;
}

/* ---- the plan ------------------------------------------------------------ */

/* Groups of g (8: then one of 4 if 4 or more are left), then single records. */
static void build(pt_plan *p, int n, int g)
{
    int r = 0;

    p->jobs = 0;
    while (g > 1 && n - r >= g) {
        p->first[p->jobs] = (unsigned char)r;
        p->count[p->jobs++] = (unsigned char)g;
        r += g;
    }
    if (g == PT_GROUP_MAX && n - r >= PT_GROUP) {
        p->first[p->jobs] = (unsigned char)r;
        p->count[p->jobs++] = PT_GROUP;
        r += PT_GROUP;
    }
    while (r < n) {
        p->first[p->jobs] = (unsigned char)r;
        p->count[p->jobs++] = 1;
        r++;
    }
}

/* When the last lane finishes: jobs in index order, each to the lane that
 * is free first. */
static double finish(const pt_plan *p, const double cost[K_N], int lanes)
{
    double busy[PT_MAX_PIPES] = { 0 }, end = 0;
    int i, l, w = lanes < 1 ? 1 : lanes > p->jobs ? p->jobs : lanes;

    for (i = 0; i < p->jobs; i++) {
        int c = p->count[i], best = 0;

        for (l = 1; l < w; l++)
            if (busy[l] < busy[best])
                best = l;
        busy[best] += c * cost[c == 1 ? K_STITCHED : c == PT_GROUP ? K_MB4 : K_MB8];
        if (busy[best] > end)
            end = busy[best];
    }
    return end;
}

void pt_cbc_hmac_plan(const pt_family *f, const EVP_CIPHER_CTX *like, int n, int groupable,
    int (*lanes_for)(int, void *), void *arg, pt_plan *plan)
{
    static const int sizes[] = { 1, PT_GROUP, PT_GROUP_MAX };
    double cost[K_N], best = 0;
    int m = mode, k;

    if (n > PT_MAX_PIPES)
        n = PT_MAX_PIPES;
    if (!groupable || m == PT_CBC_STITCHED || f->group == NULL || n < PT_GROUP) {
        build(plan, n, 1);
        return;
    }
    if (m != PT_CBC_AUTO || !pt_cbc_hmac_costs(f, like, cost))
        memcpy(cost, fixed_cost, sizeof(cost));
    for (k = m == PT_CBC_MULTIBLOCK ? 1 : 0; k < 3; k++) {
        pt_plan p;
        double t;

        build(&p, n, sizes[k]);
        t = finish(&p, cost, lanes_for(p.jobs, arg));
        if (best == 0 || t < best) {
            best = t;
            *plan = p;
        }
    }
}
