/*
 * prov.c - the "pipetls" provider (OpenSSL >= 3.5): init, the algorithm
 * query, the provider parameters (statistics, lanes) and its configuration.
 * The only file that speaks the provider API of the core (OSSL_provider_init).
 *
 * Loading: OSSL_PROVIDER_load(NULL, "/path/pipetls-provider.so"), or
 * openssl.cnf:
 *     [provider_sect]
 *     default = default_sect
 *     pipetls = pipetls_sect
 *     [pipetls_sect]
 *     module = /path/pipetls-provider.so
 *     activate = 1
 *     THREADS = 2          (optional: lanes, 1..256; default: online CPUs)
 *     INLINE_BELOW = 16384 (optional: smaller updates stay in the caller)
 *     ASYNC = 2            (optional: inside an OpenSSL ASYNC job, a data
 *                           update on the lanes pauses the job: 0 never,
 *                           1 encrypting only, 2 both; default 2)
 *     ADAPTIVE = 1         (optional: workers take records only where a
 *                           core is free, as the engine's ADAPTIVE; 0: every
 *                           update of INLINE_BELOW bytes or more goes to the
 *                           lanes; default 1)
 * The same settings may be given as OSSL_PROVIDER_load_ex() parameters.
 *
 * Provider parameters (OSSL_PROVIDER_get_params), besides name, version,
 * buildinfo and status:
 *     "stats"        UTF-8 string: the counters, in the engine's STATS format
 *     "info"         UTF-8 string: version, OpenSSL, lanes, algorithms
 *     "threads"      int: lanes working one batch, the caller included
 *     "workers"      int: worker threads running now
 *     "inline_below" size_t: bytes below which an update stays in the caller
 *     "stats_reset"  int: asking for it zeroes the counters (answers 1)
 *     "key_setups"   unsigned long: pipeline key schedules computed so far
 *     "async"        int: ASYNC (0, 1 or 2)
 *     "async_batches", "async_pauses", "async_resumes", "async_paused_ns"
 *                    uint64: updates posted while their ASYNC job paused,
 *                    ASYNC_pause_job calls, resumes, time paused (as in
 *                    "stats")
 */
#include "pt_prov.h"
#include "pt_async.h"
#include "pt_guard.h"
#include "pt_lanes.h"
#include "pt_report.h"
#include "pt_stats.h"
#include "pt_text.h"

#include <dlfcn.h>
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PP_MIN_OPENSSL 0x30500000L /* the pipeline dispatch came with 3.5 */

#define PARAM_STATS "stats"
#define PARAM_INFO "info"
#define PARAM_THREADS "threads"
#define PARAM_WORKERS "workers"
#define PARAM_INLINE_BELOW "inline_below"
#define PARAM_STATS_RESET "stats_reset"
#define PARAM_KEY_SETUPS "key_setups"
#define PARAM_ASYNC "async"
#define PARAM_ASYNC_BATCHES "async_batches"
#define PARAM_ASYNC_PAUSES "async_pauses"
#define PARAM_ASYNC_RESUMES "async_resumes"
#define PARAM_ASYNC_PAUSED_NS "async_paused_ns"

static const OSSL_PARAM gettable[] = {
    OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, NULL, 0),
    OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_VERSION, NULL, 0),
    OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_BUILDINFO, NULL, 0),
    OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, NULL),
    OSSL_PARAM_utf8_string(PARAM_STATS, NULL, 0),
    OSSL_PARAM_utf8_string(PARAM_INFO, NULL, 0),
    OSSL_PARAM_int(PARAM_THREADS, NULL),
    OSSL_PARAM_int(PARAM_WORKERS, NULL),
    OSSL_PARAM_size_t(PARAM_INLINE_BELOW, NULL),
    OSSL_PARAM_int(PARAM_STATS_RESET, NULL),
    OSSL_PARAM_ulong(PARAM_KEY_SETUPS, NULL),
    OSSL_PARAM_int(PARAM_ASYNC, NULL),
    OSSL_PARAM_uint64(PARAM_ASYNC_BATCHES, NULL),
    OSSL_PARAM_uint64(PARAM_ASYNC_PAUSES, NULL),
    OSSL_PARAM_uint64(PARAM_ASYNC_RESUMES, NULL),
    OSSL_PARAM_uint64(PARAM_ASYNC_PAUSED_NS, NULL),
    OSSL_PARAM_END
};

static const OSSL_PARAM *prov_gettable_params(void *provctx)
{
    return gettable;
}

static size_t format_info(char *buf, size_t len)
{
    pt_text t;
    int i;

    pt_text_init(&t, buf, len);
    pt_text_put(&t, "version %s\n", PT_VERSION);
    pt_text_put(&t, "openssl %s\n", OpenSSL_version(OPENSSL_VERSION));
    pt_text_put(&t, "front provider\n");
    pt_lanes_format_config(&t);
    pt_text_put(&t, "async %d\n", pt_async_pause());
    for (i = 0; i < PP_N_ALGS; i++)
        pt_text_put(&t, "cipher %s\n", pp_algs[i].name);
    return t.off;
}

/* A text parameter: its length when p->data is NULL, else the text (which
 * must fit, with its NUL). */
static int set_text(OSSL_PARAM *p, size_t (*fmt)(char *, size_t))
{
    size_t need = fmt(NULL, 0);
    char *t;
    int ok;

    if (p->data == NULL) {
        p->return_size = need;
        return 1;
    }
    PT_ENSURE((t = OPENSSL_malloc(need + 1)) != NULL, fail, PT_R_ALLOC_FAILED,
        "%zu bytes of text", need + 1);
    fmt(t, need + 1);
    ok = OSSL_PARAM_set_utf8_string(p, t);
    OPENSSL_free(t);
    PT_ENSURE(ok, fail, PT_R_BAD_ARGUMENT, "parameter %s: %zu bytes needed, %zu given",
        p->key, need + 1, p->data_size);
    return 1;
fail:
    return 0;
}

/* The ASYNC counters asked for, read once. */
static int async_params(OSSL_PARAM params[])
{
    static const char *const keys[] = { PARAM_ASYNC_BATCHES, PARAM_ASYNC_PAUSES,
        PARAM_ASYNC_RESUMES, PARAM_ASYNC_PAUSED_NS };
    pt_async_counts ac;
    uint64_t v[4];
    OSSL_PARAM *p;
    size_t i;
    int read = 0;

    for (i = 0; i < 4; i++) {
        if ((p = OSSL_PARAM_locate(params, keys[i])) == NULL)
            continue;
        if (!read) {
            pt_stats_async(&ac);
            v[0] = ac.batches;
            v[1] = ac.pauses;
            v[2] = ac.resumes;
            v[3] = ac.paused_ns;
            read = 1;
        }
        if (!OSSL_PARAM_set_uint64(p, v[i]))
            return 0;
    }
    return 1;
}

static int prov_get_params(void *provctx, OSSL_PARAM params[])
{
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(p, "pipetls: OpenSSL's ciphers, pipelined on lanes"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(p, PT_VERSION))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(p, OPENSSL_VERSION_TEXT))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL
        && !OSSL_PARAM_set_int(p, 1))
        return 0;
    if ((p = OSSL_PARAM_locate(params, PARAM_STATS)) != NULL && !set_text(p, pt_report_stats))
        return 0;
    if ((p = OSSL_PARAM_locate(params, PARAM_INFO)) != NULL && !set_text(p, format_info))
        return 0;
    if ((p = OSSL_PARAM_locate(params, PARAM_THREADS)) != NULL
        && !OSSL_PARAM_set_int(p, pt_lanes_get_threads()))
        return 0;
    if ((p = OSSL_PARAM_locate(params, PARAM_WORKERS)) != NULL
        && !OSSL_PARAM_set_int(p, pt_lanes_workers_running()))
        return 0;
    if ((p = OSSL_PARAM_locate(params, PARAM_INLINE_BELOW)) != NULL
        && !OSSL_PARAM_set_size_t(p, pt_lanes_get_inline_below()))
        return 0;
    if ((p = OSSL_PARAM_locate(params, PARAM_KEY_SETUPS)) != NULL
        && !OSSL_PARAM_set_ulong(p, pp_key_setups()))
        return 0;
    if ((p = OSSL_PARAM_locate(params, PARAM_ASYNC)) != NULL
        && !OSSL_PARAM_set_int(p, pt_async_pause()))
        return 0;
    if (!async_params(params))
        return 0;
    if ((p = OSSL_PARAM_locate(params, PARAM_STATS_RESET)) != NULL) {
        pt_stats_reset();
        if (!OSSL_PARAM_set_int(p, 1))
            return 0;
    }
    return 1;
}

static const OSSL_ALGORITHM *prov_query(void *provctx, int operation_id, int *no_cache)
{
    *no_cache = 0;
    return operation_id == OSSL_OP_CIPHER ? pp_ciphers : NULL;
}

static void prov_free(pp_provctx *pc)
{
    if (pc == NULL)
        return;
    pp_impls_free(pc);
    OSSL_PROVIDER_unload(pc->deflt);
    OSSL_LIB_CTX_free(pc->libctx);
    OPENSSL_free(pc);
}

static void prov_teardown(void *provctx)
{
    /* for programs such as openssl speed that never ask for the parameter */
    pt_report_stats_to(getenv("PIPETLS_STATS"));
    prov_free(provctx);
    pt_err_unload();
}

static const OSSL_DISPATCH prov_functions[] = {
    { OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))prov_teardown },
    { OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))prov_gettable_params },
    { OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))prov_get_params },
    { OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))prov_query },
    OSSL_DISPATCH_END
};

/* A number from the configuration (a string, as openssl.cnf gives it). */
static int conf_number(const char *s, long *v)
{
    char *end;

    errno = 0;
    *v = strtol(s, &end, 10);
    return errno == 0 && end != s && *end == '\0';
}

/* THREADS, INLINE_BELOW, ASYNC and ADAPTIVE from the provider's
 * configuration section (or OSSL_PROVIDER_load_ex parameters). 1 or 0 (then
 * the load fails). */
static int configure(const OSSL_CORE_HANDLE *handle, OSSL_FUNC_core_get_params_fn *get_params)
{
    const char *threads = NULL, *inline_below = NULL, *async = NULL, *adaptive = NULL;
    OSSL_PARAM p[5];
    long v;

    if (get_params == NULL)
        return 1;
    p[0] = OSSL_PARAM_construct_utf8_ptr("THREADS", (char **)&threads, 0);
    p[1] = OSSL_PARAM_construct_utf8_ptr("INLINE_BELOW", (char **)&inline_below, 0);
    p[2] = OSSL_PARAM_construct_utf8_ptr("ASYNC", (char **)&async, 0);
    p[3] = OSSL_PARAM_construct_utf8_ptr("ADAPTIVE", (char **)&adaptive, 0);
    p[4] = OSSL_PARAM_construct_end();
    if (!get_params(handle, p))
        return 1; /* no configuration */
    if (threads != NULL)
        PT_ENSURE(conf_number(threads, &v) && pt_lanes_set_threads(v), fail, PT_R_BAD_ARGUMENT,
            "pipetls THREADS must be 1..%d, got \"%s\"", PT_MAX_LANES, threads);
    if (inline_below != NULL)
        PT_ENSURE(conf_number(inline_below, &v) && pt_lanes_set_inline_below(v), fail,
            PT_R_BAD_ARGUMENT, "pipetls INLINE_BELOW must be 0..1073741824 bytes, got \"%s\"",
            inline_below);
    if (async != NULL)
        PT_ENSURE(conf_number(async, &v) && pt_set_async_pause(v), fail, PT_R_BAD_ARGUMENT,
            "pipetls ASYNC must be 0, 1 or 2, got \"%s\"", async);
    if (adaptive != NULL)
        PT_ENSURE(conf_number(adaptive, &v) && pt_lanes_set_adaptive(v), fail, PT_R_BAD_ARGUMENT,
            "pipetls ADAPTIVE must be 0 or 1, got \"%s\"", adaptive);
    return 1;
fail:
    return 0;
}

/*
 * Our worker threads, thread-specific destructors, pthread_atfork handlers
 * and the error strings point into this module: it must stay mapped after
 * OSSL_PROVIDER_unload() (or a failed init) dlclose()s it.
 */
static void pin_module(void)
{
    Dl_info info;

    if (dladdr((void *)pin_module, &info) && info.dli_fname != NULL)
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

#pragma GCC visibility push(default)
int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
    const OSSL_DISPATCH **out, void **provctx)
{
    OSSL_FUNC_core_get_params_fn *core_get_params = NULL;
    pp_provctx *pc = NULL;

    /* first: the error strings registered below live in this module, and
     * a failed init is followed by dlclose() */
    pin_module();
    pt_err_load();
    /* the pipeline dispatch (OSSL_FUNC_CIPHER_PIPELINE_*) is unknown before
     * 3.5: such a libcrypto would offer our ciphers without it */
    PT_ENSURE(OpenSSL_version_num() >= PP_MIN_OPENSSL, fail, PT_R_UNSUPPORTED_VERSION,
        "the pipetls provider needs OpenSSL 3.5 or later; this process runs %s",
        OpenSSL_version(OPENSSL_VERSION));
    for (; in != NULL && in->function_id != 0; in++)
        if (in->function_id == OSSL_FUNC_CORE_GET_PARAMS)
            core_get_params = OSSL_FUNC_core_get_params(in);
    pt_lanes_init_once();
    if (!configure(handle, core_get_params))
        goto fail;
    PT_ENSURE((pc = OPENSSL_zalloc(sizeof(*pc))) != NULL, fail, PT_R_ALLOC_FAILED,
        "provider context");
    pc->handle = handle;
    /* a library context of our own holds the default provider: a fetch
     * there can never find this provider */
    PT_ENSURE((pc->libctx = OSSL_LIB_CTX_new()) != NULL, fail, PT_R_ALLOC_FAILED,
        "library context");
    PT_ENSURE((pc->deflt = OSSL_PROVIDER_load(pc->libctx, "default")) != NULL, fail,
        PT_R_NOT_INITIALISED, "loading the default provider");
    pc->deflt_provctx = OSSL_PROVIDER_get0_provider_ctx(pc->deflt);
    if (!pp_impls_load(pc))
        goto fail;
    *out = prov_functions;
    *provctx = pc;
    return 1;
fail:
    /* the error strings stay loaded: the reason above must read well */
    prov_free(pc);
    return 0;
}
#pragma GCC visibility pop
