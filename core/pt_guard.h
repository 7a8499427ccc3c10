/*
 * pt_guard.h - the one way pipetls code fails: guard macros over the
 * library's own OpenSSL error library.
 *
 * The error library ("pipetls", reason strings below) is registered once per
 * process with ERR_get_next_error_library(); a front loads the strings when
 * it is bound (pt_err_load) and unloads them when it is unbound
 * (pt_err_unload). Every failure path leaves one of these reasons on the
 * OpenSSL error queue of the thread that called into pipetls:
 *
 *   PT_ENSURE(cond, label, reason, fmt, ...)   calling thread: when cond is
 *       false, raise reason with the formatted detail and goto label.
 *   PT_RECORD_ENSURE(cond, r, reason)          record code (pt_record.h),
 *       which may run on a worker thread whose error queue nobody reads:
 *       when cond is false, store reason in the record and fail it; the
 *       batch (pt_conn_run) raises the first failed record's reason in the
 *       calling thread.
 */
#ifndef PT_GUARD_H
#define PT_GUARD_H

#include "pt_base.h"

#include <openssl/err.h>

enum pt_reason {
    PT_R_BAD_PIPELINE = 100, /* pipeline ctrls missing, too many or inconsistent */
    PT_R_BAD_RECORD_LENGTH, /* a record's length does not fit the cipher */
    PT_R_AAD_MISMATCH, /* the TLS AAD does not describe the record */
    PT_R_RECORD_REJECTED, /* decryption: bad tag, MAC or padding */
    PT_R_CIPHER_FAILED, /* OpenSSL's cipher refused a record or a setting */
    PT_R_NONCE_MISMATCH, /* GCM: the explicit nonce is not the sequence number */
    PT_R_LANE_SETUP, /* a keyed lane context could not be made */
    PT_R_NOT_INITIALISED, /* cipher call before the context was set up */
    PT_R_BAD_ARGUMENT, /* a control command's value is out of range */
    PT_R_ALLOC_FAILED,
    PT_R_UNSUPPORTED_VERSION /* the running libcrypto is older than a front needs */
};

/* Registers the library code (once) and loads the reason strings; every
 * bound front (each ENGINE instance) loads once and unloads once, and the
 * strings stay while any is bound. */
void pt_err_load(void);
void pt_err_unload(void);
/* The library code (registered on first use). */
int pt_err_lib(void);
/* Puts reason on this thread's error queue with a formatted detail. */
void pt_err_raise_at(const char *file, int line, const char *func, int reason,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
#define pt_err_raise(reason, ...) \
    pt_err_raise_at(OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC, (reason), __VA_ARGS__)
/* The text of a reason (for a caller that formats its own message). */
const char *pt_err_reason_text(int reason);

#define PT_ENSURE(cond, label, reason, ...)       \
    do {                                          \
        if (!(cond)) {                            \
            pt_err_raise((reason), __VA_ARGS__);  \
            goto label;                           \
        }                                         \
    } while (0)

#define PT_RECORD_ENSURE(cond, r, why)  \
    do {                                \
        if (!(cond)) {                  \
            (r)->reason = (why);        \
            return (r)->result = -1;    \
        }                               \
    } while (0)

#endif
