/*
 * batch.c - a batch of TLS records on the lanes (see pt_record.h): lane
 * contexts keyed once per key (invariant 8), the CBC IV chain across the
 * batch, MULTIBLOCK groups, and the one place a failed record's reason is
 * raised, in the calling thread.
 */
#include "pt_record.h"
#include "pt_guard.h"
#include "pt_lanes.h"
#include "pt_stats.h"
#include "pt_async.h"

#include <openssl/crypto.h>
#include <stdatomic.h>
#include <string.h>

const pt_family *const pt_families[PT_N_FAMILIES + 1] = {
    &pt_fam_aes_128_gcm,
    &pt_fam_aes_256_gcm,
    &pt_fam_chacha20_poly1305,
    &pt_fam_aes_128_cbc_hmac_sha1,
    &pt_fam_aes_256_cbc_hmac_sha1,
    &pt_fam_aes_128_cbc_hmac_sha256,
    &pt_fam_aes_256_cbc_hmac_sha256,
    &pt_fam_aes_128_cbc,
    &pt_fam_aes_256_cbc,
    NULL,
};

const pt_family *pt_family_by_nid(int nid)
{
    size_t i;

    for (i = 0; pt_families[i] != NULL; i++)
        if (pt_families[i]->nid == nid)
            return pt_families[i];
    return NULL;
}

/* Room for n lane slots (the ones there are kept, moved if need be). */
static int ensure_slots(pt_conn *k, int n)
{
    pt_lane *grown;

    if (n <= k->n_lane)
        return 1;
    if ((grown = OPENSSL_zalloc(sizeof(*grown) * (size_t)n)) == NULL)
        return 0;
    if (k->lane != NULL) {
        memcpy(grown, k->lane, sizeof(*grown) * (size_t)k->n_lane);
        OPENSSL_clear_free(k->lane, sizeof(*k->lane) * (size_t)k->n_lane);
    }
    k->lane = grown;
    k->n_lane = n;
    return 1;
}

/* Lane context i keyed like base (copied once per key); slot i exists. */
static int ensure_lane(pt_conn *k, int i)
{
    pt_lane *l = &k->lane[i];

    if (l->evp != NULL && l->gen == k->key_gen)
        return 1;
    if (l->evp == NULL && (l->evp = EVP_CIPHER_CTX_new()) == NULL)
        return 0;
    if (!EVP_CIPHER_CTX_copy(l->evp, k->base))
        return 0;
    l->gen = k->key_gen;
    l->seq = UINT64_MAX;
    l->iv_ok = 0;
    return 1;
}

static void free_parked(pt_conn *k);

void pt_conn_free_lanes(pt_conn *k)
{
    int i;

    free_parked(k);

    for (i = 0; i < k->n_lane; i++) {
        pt_lane *l = &k->lane[i];

        OPENSSL_clear_free(l->scratch, l->scratch_len);
        EVP_CIPHER_CTX_free(l->evp);
    }
    OPENSSL_clear_free(k->lane, sizeof(*k->lane) * (size_t)k->n_lane);
    k->lane = NULL;
    k->n_lane = 0;
}

int pt_conn_lanes_made(const pt_conn *k)
{
    int i, n = 0;

    for (i = 0; i < k->n_lane; i++)
        n += k->lane[i].evp != NULL;
    return n;
}

/* Batch jobs: one record each, or for CBC-HMAC encryption the jobs of a
 * pt_plan (MULTIBLOCK groups and single records). */
typedef struct {
    pt_conn *k;
    pt_record *recs;
    int enc;
    int hmac_enc; /* CBC-HMAC encryption: count records by path */
    const pt_plan *plan; /* NULL: job i is record i */
} pt_job;

static int run_record(void *arg, int i, int slot)
{
    pt_job *j = arg;
    const pt_family *f = j->k->fam;
    pt_lane *lane = &j->k->lane[slot];
    int first, cnt, r;

    first = j->plan != NULL ? j->plan->first[i] : i;
    cnt = j->plan != NULL ? j->plan->count[i] : 1;
    if (cnt > 1 && f->group(f, lane, &j->recs[first], cnt) == 0) {
        pt_stats_cbc_hmac(cnt == PT_GROUP ? PT_CBC_MB4 : PT_CBC_MB8, cnt);
        return 0;
    }
    /* a single record, or a group that could not go as one: one record at
     * a time, same lane */
    for (r = first; r < first + cnt; r++)
        if (f->record(&j->k->tls, lane, &j->recs[r], j->enc) < 0)
            return 1;
    if (j->hmac_enc)
        pt_stats_cbc_hmac(PT_CBC_ONE, cnt);
    return 0;
}

typedef struct {
    size_t total;
} pt_width_arg;

static int width_for(int jobs, void *arg)
{
    return pt_lanes_width(jobs, ((pt_width_arg *)arg)->total);
}

/* A batch of an ASYNC job, on the lanes while the job is paused: copies of
 * the records over the pt_conn's own buffer (see pt_conn_run). */
typedef struct pt_parked {
    pt_job job;
    pt_record recs[PT_MAX_PIPES];
    size_t sizes[PT_MAX_PIPES];
    int counts[PT_MAX_PIPES];
    int n; /* records */
    unsigned char *scratch;
    size_t cap;
    pt_batch *b; /* posted, not yet collected */
    pt_notify *nt;
    int failed;
} pt_parked;

/* Collects the posted batch; recs: where the output goes (NULL: nowhere,
 * the job was abandoned). */
static void finish_parked(pt_conn *k, pt_record *recs)
{
    pt_parked *p = k->parked;
    int i;

    if (p == NULL || p->b == NULL)
        return;
    p->failed = pt_lanes_collect(p->b);
    p->b = NULL;
    pt_async_notify_put(p->nt);
    p->nt = NULL;
    if (recs == NULL)
        return;
    for (i = 0; i < p->n; i++) {
        recs[i].result = p->recs[i].result;
        recs[i].reason = p->recs[i].reason;
        /* no plaintext of a failed decrypt batch reaches the caller */
        if (p->failed == 0)
            memcpy(recs[i].out, p->recs[i].out, recs[i].len);
    }
}

static void free_parked(pt_conn *k)
{
    if (k->parked == NULL)
        return;
    finish_parked(k, NULL); /* an abandoned job's batch: end it first */
    OPENSSL_clear_free(k->parked->scratch, k->parked->cap);
    OPENSSL_free(k->parked);
    k->parked = NULL;
}

/* The batch inside an ASYNC job, with the lanes free: post it and pause.
 * Returns the number of failed jobs, or -1 when it cannot go that way
 * (nothing done: run it as usual). */
static int run_parked(pt_conn *k, const pt_job *job, int n, int jobs, const size_t *sizes,
    const int *counts, int width, size_t total)
{
    pt_parked *p = k->parked;
    size_t off = 0;
    int i;

    if (!pt_lanes_can_post(jobs))
        return -1;
    /* a plaintext apart (pt_record.plain) is the caller's buffer: not read
     * after the job has paused and its call returned (the ENGINE front
     * never hands one over inside such a job) */
    for (i = 0; i < n; i++)
        if (job->recs[i].plain != NULL)
            return -1;
    if (p == NULL && (p = k->parked = OPENSSL_zalloc(sizeof(*p))) == NULL)
        return -1;
    if (p->cap < total) {
        unsigned char *buf = OPENSSL_malloc(total);

        if (buf == NULL)
            return -1;
        OPENSSL_clear_free(p->scratch, p->cap);
        p->scratch = buf;
        p->cap = total;
    }
    if ((p->nt = pt_async_notify_get()) == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        p->recs[i] = job->recs[i];
        p->recs[i].in = p->recs[i].out = p->scratch + off;
        memcpy(p->scratch + off, job->recs[i].in, job->recs[i].len);
        off += job->recs[i].len;
    }
    memcpy(p->sizes, sizes, sizeof(*sizes) * (size_t)jobs);
    memcpy(p->counts, counts, sizeof(*counts) * (size_t)jobs);
    p->job = *job;
    p->job.recs = p->recs;
    p->n = n;
    p->b = pt_lanes_post(run_record, &p->job, jobs, p->sizes, p->counts, width,
        pt_async_notify_fire, p->nt);
    if (p->b == NULL) {
        pt_async_notify_put(p->nt);
        p->nt = NULL;
        return -1;
    }
    pt_async_wait(p->b, p->nt);
    finish_parked(k, job->recs);
    return p->failed;
}

static void raise_failed(const pt_record *recs, int n)
{
    int i;

    for (i = 0; i < n; i++)
        if (recs[i].result < 0) {
            pt_err_raise(recs[i].reason != 0 ? recs[i].reason : PT_R_CIPHER_FAILED,
                "record %d of %d (%zu bytes)", i + 1, n, recs[i].len);
            return;
        }
    pt_err_raise(PT_R_CIPHER_FAILED, "a batch of %d records", n);
}

int pt_conn_run(pt_conn *k, pt_record *recs, int n, int enc, unsigned char iv[16])
{
    const pt_family *f = k->fam;
    pt_job job = { k, recs, enc, enc && f->group != NULL, NULL };
    pt_plan plan;
    size_t sizes[PT_MAX_PIPES], total = 0;
    int counts[PT_MAX_PIPES];
    unsigned char next_iv[16];
    int i, failed, jobs, width, last = -1; /* last: the last record of a block or more */

    for (i = 0; i < n; i++) {
        /* a record needs both buffers: EVP_CipherUpdate(out NULL) after a
         * TLS AAD (an AAD update, not a record) or a NULL pipe entry */
        PT_ENSURE(recs[i].out != NULL && recs[i].in != NULL, fail, PT_R_BAD_PIPELINE,
            "record %d of %d without an %s buffer", i + 1, n,
            recs[i].out == NULL ? "output" : "input");
        if (recs[i].len >= 16)
            last = i;
        sizes[i] = recs[i].len;
        total += recs[i].len;
        counts[i] = 1;
        recs[i].result = -1;
        recs[i].reason = 0;
        if (f->cbc) {
            PT_ENSURE(recs[i].len % 16 == 0, fail, PT_R_BAD_RECORD_LENGTH,
                "record %d of %d: %zu bytes, not whole CBC blocks", i + 1, n, recs[i].len);
            if (enc || i == 0)
                memcpy(recs[i].iv, iv, 16);
            else if (recs[i - 1].len >= 16)
                memcpy(recs[i].iv, recs[i - 1].in + recs[i - 1].len - 16, 16);
            else
                memcpy(recs[i].iv, recs[i - 1].iv, 16);
        }
    }
    /* the chain goes on from the last ciphertext block of the batch, even
     * when empty records follow it (as one record at a time would) */
    if (f->cbc && !enc && last >= 0)
        memcpy(next_iv, recs[last].in + recs[last].len - 16, 16);

    /* stitched CBC-HMAC, encrypting: equal records may go in MULTIBLOCK
     * groups of four or eight per lane (cbc_hmac_mode.c decides) */
    jobs = n;
    if (job.hmac_enc) {
        pt_width_arg wa = { total };
        int groupable = n >= PT_GROUP && pt_cbc_hmac_mode() != PT_CBC_STITCHED
            && f->groupable(f, recs, n);

        pt_cbc_hmac_plan(f, k->base, n, groupable, width_for, &wa, &plan);
        job.plan = &plan;
        jobs = plan.jobs;
        for (i = 0; i < jobs; i++) {
            int r;

            sizes[i] = 0;
            counts[i] = plan.count[i];
            for (r = plan.first[i]; r < plan.first[i] + plan.count[i]; r++)
                sizes[i] += recs[r].len;
        }
    }

    /* no more lane contexts than can run at once */
    width = pt_lanes_width(jobs, total);
    PT_ENSURE(ensure_slots(k, width), fail, PT_R_LANE_SETUP, "%d lane slots", width);
    for (i = 0; i < width; i++)
        PT_ENSURE(ensure_lane(k, i), fail, PT_R_LANE_SETUP, "lane context %d of %d", i, width);

    failed = -1;
    if (width > 1 && pt_async_wanted(enc))
        failed = run_parked(k, &job, n, jobs, sizes, counts, width, total);
    if (failed < 0)
        failed = pt_lanes_run(run_record, &job, jobs, sizes, counts, width);
    if (failed != 0) {
        raise_failed(recs, n);
        if (!enc)
            for (i = 0; i < n; i++)
                OPENSSL_cleanse(recs[i].out, recs[i].len);
        return -1;
    }
    if (f->cbc && last >= 0) {
        if (enc)
            memcpy(next_iv, recs[last].out + recs[last].len - 16, 16);
        memcpy(iv, next_iv, 16);
        PT_ENSURE(pt_set_iv(k->base, next_iv), fail, PT_R_CIPHER_FAILED,
            "setting the chaining IV after a batch");
    }
    return 0;

fail:
    return -1;
}
