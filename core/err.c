/*
 * err.c - the "pipetls" OpenSSL error library (see pt_guard.h).
 */
#include "pt_guard.h"

#include <pthread.h>
#include <stdarg.h>

static ERR_STRING_DATA reasons[] = {
    { ERR_PACK(0, 0, PT_R_BAD_PIPELINE), "pipeline ctrls missing or inconsistent" },
    { ERR_PACK(0, 0, PT_R_BAD_RECORD_LENGTH), "record length does not fit the cipher" },
    { ERR_PACK(0, 0, PT_R_AAD_MISMATCH), "TLS AAD does not describe the record" },
    { ERR_PACK(0, 0, PT_R_RECORD_REJECTED), "record rejected: bad tag, MAC or padding" },
    { ERR_PACK(0, 0, PT_R_CIPHER_FAILED), "OpenSSL's cipher refused the record" },
    { ERR_PACK(0, 0, PT_R_NONCE_MISMATCH), "explicit nonce is not the sequence number" },
    { ERR_PACK(0, 0, PT_R_LANE_SETUP), "cannot set up a lane context" },
    { ERR_PACK(0, 0, PT_R_NOT_INITIALISED), "cipher context not initialised" },
    { ERR_PACK(0, 0, PT_R_BAD_ARGUMENT), "argument out of range" },
    { ERR_PACK(0, 0, PT_R_ALLOC_FAILED), "memory allocation failed" },
    { ERR_PACK(0, 0, PT_R_UNSUPPORTED_VERSION), "OpenSSL version not supported" },
    { 0, NULL }
};

static ERR_STRING_DATA lib_name[] = {
    { 0, "pipetls" },
    { 0, NULL }
};

static int lib_code;
static int loaded; /* fronts bound now (under mu) */
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void get_lib(void)
{
    lib_code = ERR_get_next_error_library();
}

int pt_err_lib(void)
{
    pthread_once(&lib_once, get_lib);
    return lib_code;
}

void pt_err_load(void)
{
    int lib = pt_err_lib();

    pthread_mutex_lock(&mu);
    if (loaded++ == 0) {
        /* the library name is keyed ERR_PACK(lib, 0, 0), which
         * ERR_load_strings cannot patch in (0 ends its list) */
        lib_name[0].error = ERR_PACK(lib, 0, 0);
        ERR_load_strings(0, lib_name);
        ERR_load_strings(lib, reasons);
    }
    pthread_mutex_unlock(&mu);
}

void pt_err_unload(void)
{
    pthread_mutex_lock(&mu);
    if (loaded > 0 && --loaded == 0) {
        ERR_unload_strings(lib_code, reasons);
        ERR_unload_strings(0, lib_name);
    }
    pthread_mutex_unlock(&mu);
}

void pt_err_raise_at(const char *file, int line, const char *func, int reason,
    const char *fmt, ...)
{
    va_list ap;

    ERR_new();
    ERR_set_debug(file, line, func);
    va_start(ap, fmt);
    ERR_vset_error(pt_err_lib(), reason, fmt, ap);
    va_end(ap);
}

const char *pt_err_reason_text(int reason)
{
    size_t i;

    for (i = 0; reasons[i].string != NULL; i++)
        if (ERR_GET_REASON(reasons[i].error) == reason)
            return reasons[i].string;
    return "unknown reason";
}
