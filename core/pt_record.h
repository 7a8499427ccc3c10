/*
 * pt_record.h - TLS 1.2 records on keyed lane contexts: the per-family
 * record functions and the batch that runs them on the lanes.
 *
 * What a front (the ENGINE front in engine/, a provider front later)
 * provides for each cipher context of its own, in a pt_conn:
 *   - fam: the family (pt_family_by_nid / pt_families);
 *   - base: a keyed EVP_CIPHER_CTX of OpenSSL's own implementation of the
 *     family's algorithm (fetched from a provider, never an ENGINE cipher),
 *     in the direction of use; the lane contexts are copies of it;
 *   - key_gen: bumped whenever the key of base changes (or anything the
 *     copies must see again: MAC key, IV length), so lane contexts are
 *     copied again before the next batch;
 *   - tls: the per-connection parameters the record code reads (the fixed
 *     IV of the TLS 1.2 AEAD ciphers);
 *   - the records: out/in/len and the 13-byte TLS AAD libssl gave for each.
 * Then pt_conn_run() runs them, pt_conn_free_lanes() frees the lane
 * contexts. A pt_conn is used by one thread at a time (as an
 * EVP_CIPHER_CTX is); during a batch each lane context is used by one lane
 * at a time.
 */
#ifndef PT_RECORD_H
#define PT_RECORD_H

#include "pt_async.h"
#include "pt_base.h"

#include <openssl/evp.h>
#include <string.h>

#define PT_TLS_AAD_LEN 13 /* EVP_AEAD_TLS1_AAD_LEN: seq(8) type(1) version(2) len(2) */
/* records per MULTIBLOCK group: OpenSSL's 4-way and 8-way interleaves */
#define PT_GROUP 4
#define PT_GROUP_MAX 8

/* The fields of a TLS AAD (RFC 5246 6.2.3.3: seq_num | type | version | length). */
typedef struct {
    uint64_t seq;
    unsigned int type, version;
    size_t len;
} pt_tls_aad;

static inline pt_tls_aad pt_tls_aad_parse(const unsigned char aad[PT_TLS_AAD_LEN])
{
    pt_tls_aad a;

    memcpy(&a.seq, aad, 8); /* big-endian on the wire */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    a.seq = __builtin_bswap64(a.seq);
#endif
    a.type = aad[8];
    a.version = (unsigned int)aad[9] << 8 | aad[10];
    a.len = (size_t)aad[11] << 8 | aad[12];
    return a;
}

/* One TLS record of a batch: read only from in (and plain), written only
 * to out. */
typedef struct {
    unsigned char *out;
    const unsigned char *in;
    size_t len;
    /* Encrypting out of place (families with plain_in): the plaintext alone,
     * the length the AAD gives less any explicit nonce or IV block, read
     * from here into its place in out (moved: it may overlap this record's
     * out, never another record's); of in, only a CBC record's explicit IV
     * block is then read. NULL: in holds the record. */
    const unsigned char *plain;
    unsigned char aad[PT_TLS_AAD_LEN]; /* as libssl gave it (families with TLS AAD) */
    unsigned char iv[16]; /* CBC families: the IV this record starts from */
    int result; /* bytes out, or -1 */
    int reason; /* PT_R_* (pt_guard.h) when result is -1 */
} pt_record;

/* A keyed copy of the connection's cipher, used by one lane at a time, and
 * what the record code knows about where that copy is. */
typedef struct {
    EVP_CIPHER_CTX *evp;
    uint32_t gen; /* pt_conn key_gen it was copied at */
    /* GCM: the sequence number the context's IV is at (OpenSSL's TLS mode
     * counts on after each record), or UINT64_MAX when unknown */
    uint64_t seq;
    /* CBC families: the IV the context is at after its last record (the
     * last ciphertext block), when iv_ok */
    unsigned char iv[16];
    int iv_ok;
    /* CBC-HMAC MULTIBLOCK groups: plaintext and records (cleared on free) */
    unsigned char *scratch;
    size_t scratch_len;
} pt_lane;

/* Per-connection parameters the record code reads (never written by it). */
typedef struct {
    unsigned char fixed_iv[12]; /* GCM: 4 bytes (or 12); ChaCha20: 12 bytes */
} pt_tls_params;

typedef struct pt_family {
    const char *name; /* OpenSSL's algorithm name, e.g. "AES-128-GCM" */
    int nid;
    int block_size, key_len, iv_len;
    /* EVP_CIPH_* flags of the cipher a front presents (mode, AEAD, custom
     * IV): evp.h constants, no method type */
    unsigned long flags;
    int tls_aad; /* takes EVP_CTRL_AEAD_TLS1_AAD per record */
    /* EVP_CIPH_FLAG_CUSTOM_CIPHER calling convention (returns bytes) */
    int custom_cipher;
    int cbc; /* chained IV (CBC and CBC-HMAC): see pt_conn_run */
    int plain_in; /* record() takes pt_record.plain when encrypting */
    size_t mac_len; /* CBC-HMAC: digest length */
    /* The pad libssl must reserve for a record, from the 13-byte AAD (the
     * answer to EVP_CTRL_AEAD_TLS1_AAD), or <= 0 when the AAD is unusable. */
    int (*tls_pad)(const struct pt_family *f, const unsigned char *aad, int enc);
    /* One TLS record on a keyed lane context. Sets r->result (and
     * r->reason on failure); returns r->result. */
    int (*record)(const pt_tls_params *tls, pt_lane *lane, pt_record *r, int enc);
    /* Optional: encrypt n (PT_GROUP or PT_GROUP_MAX) consecutive records of
     * equal size at once on one lane (OpenSSL's MULTIBLOCK code). Returns 0,
     * or -1 when the group cannot go that way (the records are then done
     * one by one). */
    int (*group)(const struct pt_family *f, pt_lane *lane, pt_record *r, int n);
    /* Can these n records be encrypted in groups? */
    int (*groupable)(const struct pt_family *f, const pt_record *r, int n);
} pt_family;

extern const pt_family pt_fam_aes_128_gcm, pt_fam_aes_256_gcm;
extern const pt_family pt_fam_chacha20_poly1305;
extern const pt_family pt_fam_aes_128_cbc_hmac_sha1, pt_fam_aes_256_cbc_hmac_sha1;
extern const pt_family pt_fam_aes_128_cbc_hmac_sha256, pt_fam_aes_256_cbc_hmac_sha256;
extern const pt_family pt_fam_aes_128_cbc, pt_fam_aes_256_cbc;
/* All families, NULL-terminated. */
#define PT_N_FAMILIES 9
extern const pt_family *const pt_families[PT_N_FAMILIES + 1];
const pt_family *pt_family_by_nid(int nid);

/* CBC families (cbc.c): set a lane context's IV; start a lane at r->iv
 * (skipped when the lane is already there) and remember where it ends:
 * pt_cbc_begin before the record (it saves the last input block, which
 * decryption in place overwrites), pt_cbc_end after a successful one. */
int pt_set_iv(EVP_CIPHER_CTX *ctx, const unsigned char *iv);
int pt_cbc_begin(pt_lane *lane, const pt_record *r, unsigned char last[16]);
void pt_cbc_end(pt_lane *lane, const pt_record *r, int enc, const unsigned char last[16]);

/* CBC-HMAC encryption (cbc_hmac_mode.c): how the records of a batch go
 * through OpenSSL's stitched code. PT_CBC_STITCHED: one record at a time
 * (bit-exact with OpenSSL's TLS record mode); PT_CBC_MULTIBLOCK: groups of
 * four or eight equal records per lane (OpenSSL's MULTIBLOCK code);
 * PT_CBC_AUTO (default): per batch, whichever of the two finishes first on
 * the lanes there are, from per-record costs measured once per family on
 * this CPU. */
enum { PT_CBC_AUTO, PT_CBC_STITCHED, PT_CBC_MULTIBLOCK };
int pt_cbc_hmac_mode(void);
int pt_set_cbc_hmac_mode(int mode); /* 0 if mode is not one of the above */
const char *pt_cbc_hmac_mode_name(int mode);
int pt_cbc_hmac_mode_parse(const char *name); /* -1 if unknown */
/* The MULTIBLOCK command of old: 1 = PT_CBC_MULTIBLOCK, 0 = PT_CBC_STITCHED;
 * enabled: the mode is not PT_CBC_STITCHED. */
int pt_multiblock_enabled(void);
int pt_set_multiblock(long on);

/* The jobs of one batch: job i is records first[i] .. first[i]+count[i]-1,
 * a MULTIBLOCK group when count[i] > 1. */
typedef struct {
    int jobs;
    unsigned char first[PT_MAX_PIPES], count[PT_MAX_PIPES];
} pt_plan;
/* The plan for n records of a family, encrypting (groupable: the family
 * has a group function and f->groupable said yes). lanes_for(jobs, arg) is
 * how many lanes a plan of that many jobs gets (pt_lanes_width); like: a
 * context of OpenSSL's own cipher of the family, for the measurement. */
void pt_cbc_hmac_plan(const pt_family *f, const EVP_CIPHER_CTX *like, int n, int groupable,
    int (*lanes_for)(int jobs, void *arg), void *arg, pt_plan *plan);
/* Per-record costs of the family's stitched record, 4-group and 8-group
 * (relative to the 8-group), measured once per family on a copy of like
 * (re-keyed at random) when like is not NULL. Returns 1 with the costs, or
 * 0 (costs 0) when not measured (yet) or the measurement failed. */
int pt_cbc_hmac_costs(const pt_family *f, const EVP_CIPHER_CTX *like, double cost[3]);

/* What a front keeps per cipher context: see the top of this file. */
typedef struct {
    const pt_family *fam;
    EVP_CIPHER_CTX *base;
    uint32_t key_gen;
    pt_tls_params tls;
    /* lane contexts: no more are made than lanes can use at once
     * (pt_lanes_width), at most one per record of a batch; the slots are
     * allocated for the widest batch so far (n_lane of them), not for
     * PT_MAX_PIPES: a context that never pipelines holds one */
    pt_lane *lane;
    int n_lane;
    /* a batch of an ASYNC job on the lanes while the job is paused
     * (batch.c; NULL until the first one) */
    struct pt_parked *parked;
} pt_conn;

/*
 * Runs the n records of a batch in direction enc, on up to pt_lanes_width()
 * lane contexts. CBC families: iv is the chaining IV (the context's IV
 * before, the last ciphertext block after, as after OpenSSL's own CBC; base
 * is left there too); in an encrypt batch every record starts from that IV
 * (safe only because TLS 1.1+ records begin with a random block, see
 * engine/pipetls.h), in a decrypt batch from the previous record's last
 * ciphertext block. Returns 0, or -1 with a reason on the calling thread's
 * error queue; then no output of a decrypt batch is left for the caller (it
 * is cleansed).
 *
 * Inside an OpenSSL ASYNC job (SSL_MODE_ASYNC) a batch that would use the
 * lanes while they are free is copied into a buffer of the pt_conn, posted
 * to the workers, and the job pauses until they are done (core/async.c);
 * then the output is copied back. The copy is what makes a connection
 * freed while paused safe: the workers never touch libssl's buffers after
 * the pause. When the lanes are busy the batch runs as always, the caller
 * working on it too.
 */
int pt_conn_run(pt_conn *k, pt_record *recs, int n, int enc, unsigned char iv[16]);
/* Frees the lane contexts (clearing their scratch) and their slots; base
 * is the front's. A batch still on the lanes for a paused ASYNC job that
 * will never be resumed (its SSL is being freed) is finished first. */
void pt_conn_free_lanes(pt_conn *k);
/* Lane contexts currently made (for measurements). */
int pt_conn_lanes_made(const pt_conn *k);

#endif
