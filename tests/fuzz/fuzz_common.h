/*
 * fuzz_common.h - shared pieces of the libFuzzer targets in tests/fuzz/:
 * the engine bound in-process, the nine ciphers it offers with OpenSSL's own
 * implementation beside each, a reader that turns fuzzer bytes into choices,
 * and a per-input arena for the buffers handed to the engine.
 *
 * Buffer rule: every buffer the harness hands to a cipher has exactly the
 * length the call declares (the caller's side of libssl's contract), so an
 * ASan report is always the engine's (or OpenSSL's) access, never ours.
 */
#ifndef PT_FUZZ_COMMON_H
#define PT_FUZZ_COMMON_H

#ifndef OPENSSL_SUPPRESS_DEPRECATED
#define OPENSSL_SUPPRESS_DEPRECATED
#endif

#include <openssl/engine.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { FZ_GCM, FZ_CHACHA, FZ_HMAC, FZ_CBC };

typedef struct {
    const char *name; /* OpenSSL's algorithm name */
    int nid;
    int kind; /* FZ_* */
    int key_len, iv_len;
    int mac_len; /* FZ_HMAC: digest length */
    const EVP_CIPHER *ours; /* the engine's cipher, NULL when not offered */
    EVP_CIPHER *impl; /* OpenSSL's own, from the default provider */
} fz_cipher;

#define FZ_N_CIPHERS 9
extern fz_cipher fz_ciphers[FZ_N_CIPHERS];
extern ENGINE *fz_engine;

/* Binds the engine in-process (once) and looks up the ciphers. Aborts on
 * failure: a fuzzer without its engine would report nothing. */
void fz_init(void);
void fz_engine_cmd(const char *cmd, const char *arg);

/* ---- input reader: exhausted input reads as zeros ------------------------ */
typedef struct {
    const uint8_t *p;
    size_t n;
} fz_reader;

uint8_t fz_u8(fz_reader *r);
uint16_t fz_u16(fz_reader *r);
uint64_t fz_u64(fz_reader *r);
void fz_bytes(fz_reader *r, unsigned char *out, size_t len);
/* Starts reading an input: its first byte picks the cipher; NULL when that
 * cipher is not offered here (the input is then skipped). */
const fz_cipher *fz_start(fz_reader *r, const uint8_t *data, size_t size);

/* ---- per-input arena: exact-size heap blocks, freed at the end of the input
 * (the engine keeps the pipeline pointers until its next cipher call, so a
 * buffer must outlive every ctrl that named it) ---------------------------- */
unsigned char *fz_alloc(size_t len); /* len 0: a 1-byte block, never read */
void fz_free_all(void);

/* PIPETLS_FUZZ_TRACE=1 in the environment: each target prints its calls
 * (for reading a reproducer; slow) */
extern int fz_trace;
#define FZ_TRACE(...)                                                         \
    do {                                                                      \
        if (fz_trace)                                                         \
            fprintf(stderr, "pipetls-fuzz: " __VA_ARGS__);                    \
    } while (0)

/* Aborts with a message: a differential mismatch or a broken invariant. */
#define FZ_CHECK(cond, ...)                                                   \
    do {                                                                      \
        if (!(cond))                                                          \
            fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                  \
    } while (0)
void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

#endif
