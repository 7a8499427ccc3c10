/*
 * pt_common.h - shared declarations of the pipetls engine.
 *
 * Everything except e_pipetls.c is independent of the ENGINE API: the lane
 * pool (lanes.c), the statistics (stats.c) and the record code (cipher*.c)
 * only use EVP, so a provider front can share them later.
 */
#ifndef PT_COMMON_H
#define PT_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime, dladdr, RTLD_NODELETE */
#endif

/* The ENGINE and a few legacy EVP accessors are deprecated in 3.0; we mean it. */
#ifndef OPENSSL_SUPPRESS_DEPRECATED
#define OPENSSL_SUPPRESS_DEPRECATED
#endif

#include <openssl/err.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "pipetls.h"

#define PT_VERSION "0.1.0"
#define PT_TLS_AAD_LEN 13 /* EVP_AEAD_TLS1_AAD_LEN: seq(8) type(1) version(2) len(2) */

/*
 * Guard macros (one line per check, one way to fail): on failure jump to the
 * label given; PT_RAISE also puts a reason on OpenSSL's error queue.
 */
#define PT_ENSURE(cond, label) \
    do {                       \
        if (!(cond))           \
            goto label;        \
    } while (0)
#define PT_RAISE(cond, label, ...)                                         \
    do {                                                                   \
        if (!(cond)) {                                                     \
            ERR_raise_data(ERR_LIB_EVP, ERR_R_PASSED_INVALID_ARGUMENT,     \
                __VA_ARGS__);                                              \
            goto label;                                                    \
        }                                                                  \
    } while (0)

/* ---- statistics (stats.c) ---------------------------------------------- */

void pt_stats_batch(int records, int inlined, int failed, uint64_t wall_ticks);
void pt_stats_record(int records, size_t bytes, uint64_t crypto_ticks);
/* a batch of one job run inline: pt_stats_batch + pt_stats_record at once */
void pt_stats_single(int records, size_t bytes, uint64_t ticks, int failed);
void pt_stats_stream(size_t bytes); /* plain EVP use (not a TLS 1.2 record) */
enum { PT_EV_WAKE, PT_EV_WORKER_SLEEP, PT_EV_CALLER_SLEEP };
void pt_stats_event(int which); /* futex wake / sleeps: the pool's syscalls */
void pt_stats_set_lane(int lane); /* called once by each worker thread */
void pt_stats_reset(void);
/* Writes the counters as text into buf (NUL-terminated, truncated to len);
 * returns the length of the full text. */
size_t pt_stats_format(char *buf, size_t len);
uint64_t pt_now_ns(void);
uint64_t pt_ticks(void); /* cheap timestamps; stats convert them to ns */
void pt_stats_init(void);

/* ---- lanes (lanes.c) ---------------------------------------------------- */

/* Runs job(arg, i) for i in 0..n-1; each index exactly once, by one thread.
 * The caller works too. sizes[i]: bytes of job i; counts[i]: TLS records in
 * job i (NULL: one each), for the statistics. Returns the number of jobs
 * that failed (job != 0). */
typedef int (*pt_job_fn)(void *arg, int index);
int pt_lanes_run(pt_job_fn job, void *arg, int n, const size_t *sizes, const int *counts);

int pt_lanes_set_threads(long lanes); /* 1..PIPETLS_MAX_LANES */
int pt_lanes_get_threads(void);
int pt_lanes_workers_running(void);
int pt_lanes_set_inline_below(long bytes);
size_t pt_lanes_get_inline_below(void);
void pt_lanes_shutdown(void);
void pt_lanes_init_once(void);

/* ---- ciphers (cipher.c and one file per family) ------------------------ */

typedef struct pt_ctx pt_ctx;

/* One TLS record of a batch: read only from in, written only to out. */
typedef struct {
    unsigned char *out;
    const unsigned char *in;
    size_t len;
    unsigned char aad[PT_TLS_AAD_LEN]; /* as libssl gave it (families with TLS AAD) */
    unsigned char iv[16]; /* CBC families: the IV this record starts from */
    int pipe; /* index in the batch = lane context used */
    int result; /* bytes out, or -1 */
} pt_record;

typedef struct pt_family {
    const char *name; /* OpenSSL's algorithm name, e.g. "AES-128-GCM" */
    int nid;
    int block_size, key_len, iv_len;
    unsigned long flags; /* EVP_CIPH_* of the cipher we present */
    int tls_aad; /* takes EVP_CTRL_AEAD_TLS1_AAD per record */
    int custom_cipher; /* EVP_CIPH_FLAG_CUSTOM_CIPHER calling convention */
    int cbc; /* chained IV in EVP_CIPHER_CTX iv (CBC and CBC-HMAC) */
    size_t mac_len; /* CBC-HMAC: digest length */
    /* The pad libssl must reserve for a record, from the 13-byte AAD (the
     * answer to EVP_CTRL_AEAD_TLS1_AAD), or <= 0 when the AAD is unusable. */
    int (*tls_pad)(const struct pt_family *f, const unsigned char *aad, int enc);
    /* One TLS record on a pre-keyed lane context. Sets r->result. */
    int (*record)(pt_ctx *c, EVP_CIPHER_CTX *lane, pt_record *r, int enc);
    /* Optional: encrypt PT_GROUP consecutive records of equal size at once
     * on one lane (OpenSSL's MULTIBLOCK code). Returns 0, or -1 when the
     * group cannot go that way (the records are then done one by one). */
    int (*group)(pt_ctx *c, EVP_CIPHER_CTX *lane, pt_record *r, int slot);
    /* Can these n records be encrypted in groups? */
    int (*groupable)(const struct pt_family *f, const pt_record *r, int n);
} pt_family;

#define PT_GROUP 4 /* records per MULTIBLOCK group (OpenSSL's 4-way interleave) */
int pt_multiblock_enabled(void);
int pt_set_multiblock(long on);

extern const pt_family pt_fam_aes_128_gcm, pt_fam_aes_256_gcm;
extern const pt_family pt_fam_chacha20_poly1305;
extern const pt_family pt_fam_aes_128_cbc_hmac_sha1, pt_fam_aes_256_cbc_hmac_sha1;
extern const pt_family pt_fam_aes_128_cbc_hmac_sha256, pt_fam_aes_256_cbc_hmac_sha256;
extern const pt_family pt_fam_aes_128_cbc, pt_fam_aes_256_cbc;

/* State behind one EVP_CIPHER_CTX of ours (its cipher_data). */
struct pt_ctx {
    const pt_family *fam;
    EVP_CIPHER_CTX *base; /* OpenSSL's own cipher, keyed: streaming use */
    EVP_CIPHER_CTX *lane[PIPETLS_MAX_PIPES]; /* copies of base, one per pipe */
    uint32_t key_gen, lane_gen[PIPETLS_MAX_PIPES];
    /* GCM: the sequence number lane i's IV is at (its TLS mode counts on
     * after each record), or ~0 when unknown */
    uint64_t lane_seq[PIPETLS_MAX_PIPES];
    /* CBC families: the IV lane i's context is at after its last record
     * (the last ciphertext block), when lane_iv_ok[i] */
    unsigned char lane_iv[PIPETLS_MAX_PIPES][16];
    unsigned char lane_iv_ok[PIPETLS_MAX_PIPES];
    /* CBC-HMAC MULTIBLOCK groups: scratch for group slot i (records 4i..) */
    unsigned char *scratch[PIPETLS_MAX_PIPES / PT_GROUP];
    size_t scratch_len[PIPETLS_MAX_PIPES / PT_GROUP];
    unsigned char fixed_iv[12]; /* GCM: 4 bytes (or 12); ChaCha20: 12 bytes */
    int enc;
    /* pipeline state, set by the EVP_CTRL_SET_PIPELINE_* ctrls */
    int n_out, n_in, n_len;
    unsigned char *out_bufs[PIPETLS_MAX_PIPES];
    unsigned char *in_bufs[PIPETLS_MAX_PIPES];
    size_t lens[PIPETLS_MAX_PIPES];
    int n_aad;
    unsigned char aad[PIPETLS_MAX_PIPES][PT_TLS_AAD_LEN];
    int bad; /* a pipeline ctrl was refused: the next cipher call fails */
};

/* Builds the EVP_CIPHER we register for a family, or NULL when OpenSSL's
 * default provider does not offer the algorithm on this CPU. */
EVP_CIPHER *pt_cipher_new(const pt_family *f);
const pt_family *pt_family_by_nid(int nid);
/* All families, NULL-terminated. */
extern const pt_family *const pt_families[];

/* Shared helpers for the families. */
int pt_set_iv(EVP_CIPHER_CTX *lane, const unsigned char *iv);
/* CBC families: start lane r->pipe at r->iv (skipped when it is already
 * there), and remember where it ends: call pt_cbc_begin before the record
 * (it saves the last input block: decryption may overwrite it) and
 * pt_cbc_end after a successful one. */
int pt_cbc_begin(pt_ctx *c, EVP_CIPHER_CTX *lane, const pt_record *r, unsigned char last[16]);
void pt_cbc_end(pt_ctx *c, const pt_record *r, int enc, const unsigned char last[16]);

#endif
