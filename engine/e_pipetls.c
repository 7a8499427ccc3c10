/*
 * e_pipetls.c - the "pipetls" ENGINE: binding, control commands, cipher
 * registration. The only file that speaks the ENGINE API.
 *
 * Call order (as for every ENGINE): ENGINE_by_id("dynamic") with SO_PATH and
 * LOAD (or "-engine /path/pipetls.so", or openssl.cnf) -> control commands ->
 * ENGINE_init -> ENGINE_set_default_ciphers. Control commands may come at any
 * time; THREADS rebuilds the lane pool lazily.
 */
#include "pt_cipher.h"
#include "pipetls.h"
#include "pt_guard.h"
#include "pt_lanes.h"
#include "pt_report.h"
#include "pt_stats.h"
#include "pt_text.h"

#include <dlfcn.h>
#include <errno.h>
#include <openssl/engine.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* sorted by number: OpenSSL looks commands up assuming ascending order */
static const ENGINE_CMD_DEFN cmd_defns[] = {
    { PIPETLS_CMD_THREADS, "THREADS",
        "Lanes working one batch, the calling thread included (1..256; default: online CPUs)",
        ENGINE_CMD_FLAG_NUMERIC },
    { PIPETLS_CMD_INLINE_BELOW, "INLINE_BELOW",
        "Batches smaller than this many bytes run in the calling thread alone (0..1073741824; default 16384)",
        ENGINE_CMD_FLAG_NUMERIC },
    { PIPETLS_CMD_STATS, "STATS",
        "Print the counters to stderr (ENGINE_ctrl with a buffer: write them into it)",
        ENGINE_CMD_FLAG_NO_INPUT },
    { PIPETLS_CMD_RESET_STATS, "RESET_STATS", "Zero the counters",
        ENGINE_CMD_FLAG_NO_INPUT },
    { PIPETLS_CMD_STATS_FILE, "STATS_FILE",
        "Append the counters to this file when the engine is unloaded (\"-\" or \"stderr\": standard error)",
        ENGINE_CMD_FLAG_STRING },
    { PIPETLS_CMD_INFO, "INFO",
        "Print version, lanes and the ciphers offered on this CPU (ENGINE_ctrl with a buffer: write them into it)",
        ENGINE_CMD_FLAG_NO_INPUT },
    { PIPETLS_CMD_MULTIBLOCK, "MULTIBLOCK",
        "CBC-HMAC encryption: 1 = CBC_HMAC_MODE multiblock, 0 = CBC_HMAC_MODE stitched",
        ENGINE_CMD_FLAG_NUMERIC },
    { PIPETLS_CMD_CBC_HMAC_MODE, "CBC_HMAC_MODE",
        "CBC-HMAC encryption: auto (default: per batch, whichever finishes first on this CPU), stitched (one record at a time per lane) or multiblock (groups of 4 or 8 equal records per lane)",
        ENGINE_CMD_FLAG_STRING },
    { PIPETLS_CMD_ADAPTIVE, "ADAPTIVE",
        "Workers help a batch only where a core is free; when callers and busy workers fill every CPU, the caller keeps its batch (1, default) or every batch goes to the lanes (0)",
        ENGINE_CMD_FLAG_NUMERIC },
    { PIPETLS_CMD_CPUS, "CPUS",
        "Cores the adaptive lanes may keep busy (1..256; 0, default: the online CPUs the process may run on)",
        ENGINE_CMD_FLAG_NUMERIC },
    { PIPETLS_CMD_ASYNC, "ASYNC",
        "Inside an OpenSSL ASYNC job (SSL_MODE_ASYNC), pause while the lanes run a batch: 0 never, 1 encrypt batches only, 2 encrypt and decrypt (default; PIPETLS_ASYNC sets it too)",
        ENGINE_CMD_FLAG_NUMERIC },
    { PIPETLS_CMD_OUT_OF_PLACE, "OUT_OF_PLACE",
        "With the patched libssl (openssl_patches/0004), AES-GCM, ChaCha20-Poly1305 and the stitched CBC-HMAC ciphers read the plaintext of a pipelined write from the caller's buffer, so the lanes copy it (1, default), or libssl copies it first, serially (0)",
        ENGINE_CMD_FLAG_NUMERIC },
    { 0, NULL, NULL, 0 }
};

#define MAX_CIPHERS 16
static EVP_CIPHER *ciphers[MAX_CIPHERS];
static int cipher_nids[MAX_CIPHERS];
static const char *cipher_names[MAX_CIPHERS];
static int n_ciphers;
static char *stats_file;

static void make_ciphers(void)
{
    int i;

    if (n_ciphers > 0)
        return;
    for (i = 0; pt_families[i] != NULL && n_ciphers < MAX_CIPHERS; i++) {
        EVP_CIPHER *c = pt_cipher_new(pt_families[i]);

        if (c == NULL)
            continue; /* not offered here: left out, the engine still loads */
        ciphers[n_ciphers] = c;
        cipher_names[n_ciphers] = pt_families[i]->name;
        cipher_nids[n_ciphers++] = pt_families[i]->nid;
    }
}

static void free_ciphers(void)
{
    int i;

    for (i = 0; i < n_ciphers; i++)
        EVP_CIPHER_meth_free(ciphers[i]);
    n_ciphers = 0;
}

static int pt_ciphers(ENGINE *e, const EVP_CIPHER **cipher, const int **nids, int nid)
{
    int i;

    if (cipher == NULL) {
        *nids = cipher_nids;
        return n_ciphers;
    }
    for (i = 0; i < n_ciphers; i++)
        if (cipher_nids[i] == nid) {
            *cipher = ciphers[i];
            return 1;
        }
    *cipher = NULL;
    return 0;
}

static size_t format_stats(char *buf, size_t len)
{
    return pt_report_stats(buf, len);
}

/* "cbc_hmac_cost.NAME stitched:S,mb4:F,mb8:1.000": what one record costs
 * each way on this CPU, an 8-group's record = 1 ("unmeasured" before the
 * first measurement; INFO measures in auto mode). */
static void format_cbc_hmac_costs(pt_text *t, const pt_family *f)
{
    EVP_CIPHER_CTX *like = NULL;
    double cost[3];

    if (f == NULL || f->group == NULL)
        return;
    if (pt_cbc_hmac_mode() == PT_CBC_AUTO && !pt_cbc_hmac_costs(f, NULL, cost))
        like = pt_cipher_impl_ctx(f);
    if (pt_cbc_hmac_costs(f, like, cost))
        pt_text_put(t, "cbc_hmac_cost.%s stitched:%.3f,mb4:%.3f,mb8:%.3f\n", f->name, cost[0],
            cost[1], cost[2]);
    else
        pt_text_put(t, "cbc_hmac_cost.%s unmeasured\n", f->name);
    EVP_CIPHER_CTX_free(like);
}

static size_t format_info(char *buf, size_t len)
{
    pt_text t;
    int i;

    pt_text_init(&t, buf, len);
    pt_text_put(&t, "version %s\n", PT_VERSION);
    pt_text_put(&t, "openssl %s\n", OpenSSL_version(OPENSSL_VERSION));
    pt_lanes_format_config(&t);
    pt_text_put(&t, "multiblock %d\n", pt_multiblock_enabled());
    pt_text_put(&t, "cbc_hmac_mode %s\n", pt_cbc_hmac_mode_name(pt_cbc_hmac_mode()));
    pt_text_put(&t, "async %d\n", pt_async_pause());
    pt_text_put(&t, "out_of_place %d\n", pt_cipher_out_of_place());
    for (i = 0; i < n_ciphers; i++)
        pt_text_put(&t, "cipher %s\n", cipher_names[i]);
    for (i = 0; i < n_ciphers; i++)
        format_cbc_hmac_costs(&t, pt_family_by_nid(cipher_nids[i]));
    return t.off;
}

/* Writes text (STATS / INFO) into the caller's buffer, or to stderr. */
static int emit(size_t (*fmt)(char *, size_t), long i, void *p)
{
    size_t need = fmt(NULL, 0);

    if (p != NULL && i > 0) {
        fmt(p, (size_t)i);
        return need > INT_MAX ? INT_MAX : (int)need;
    } else {
        char *t = malloc(need + 1);

        PT_ENSURE(t != NULL, fail, PT_R_ALLOC_FAILED, "%zu bytes of text", need + 1);
        fmt(t, need + 1);
        fputs(t, stderr);
        free(t);
        return 1;
    }
fail:
    return 0;
}

static int parse_number(long i, void *p, long *out)
{
    /* ENGINE_ctrl_cmd_string converts NUMERIC arguments with strtol and
     * passes them in i; p is NULL then. */
    if (p != NULL) {
        char *end;

        errno = 0;
        *out = strtol(p, &end, 10);
        return errno == 0 && end != p && *end == '\0';
    }
    *out = i;
    return 1;
}

static int pt_engine_ctrl(ENGINE *e, int cmd, long i, void *p, void (*f)(void))
{
    long v;

    switch (cmd) {
    case PIPETLS_CMD_THREADS:
        PT_ENSURE(parse_number(i, p, &v) && pt_lanes_set_threads(v), fail, PT_R_BAD_ARGUMENT,
            "pipetls THREADS must be 1..%d, got %ld", PIPETLS_MAX_LANES, i);
        return 1;
    case PIPETLS_CMD_INLINE_BELOW:
        PT_ENSURE(parse_number(i, p, &v) && pt_lanes_set_inline_below(v), fail,
            PT_R_BAD_ARGUMENT, "pipetls INLINE_BELOW must be 0..1073741824 bytes, got %ld", i);
        return 1;
    case PIPETLS_CMD_MULTIBLOCK:
        PT_ENSURE(parse_number(i, p, &v) && pt_set_multiblock(v), fail, PT_R_BAD_ARGUMENT,
            "pipetls MULTIBLOCK must be 0 or 1, got %ld", i);
        return 1;
    case PIPETLS_CMD_CBC_HMAC_MODE:
        PT_ENSURE(p != NULL && pt_set_cbc_hmac_mode(pt_cbc_hmac_mode_parse(p)), fail,
            PT_R_BAD_ARGUMENT, "pipetls CBC_HMAC_MODE must be auto, stitched or multiblock, got %s",
            p != NULL ? (const char *)p : "nothing");
        return 1;
    case PIPETLS_CMD_ADAPTIVE:
        PT_ENSURE(parse_number(i, p, &v) && pt_lanes_set_adaptive(v), fail, PT_R_BAD_ARGUMENT,
            "pipetls ADAPTIVE must be 0 or 1, got %ld", i);
        return 1;
    case PIPETLS_CMD_CPUS:
        PT_ENSURE(parse_number(i, p, &v) && pt_lanes_set_cpus(v), fail, PT_R_BAD_ARGUMENT,
            "pipetls CPUS must be 0..%d, got %ld", PIPETLS_MAX_LANES, i);
        return 1;
    case PIPETLS_CMD_ASYNC:
        PT_ENSURE(parse_number(i, p, &v) && pt_set_async_pause(v), fail, PT_R_BAD_ARGUMENT,
            "pipetls ASYNC must be 0, 1 or 2, got %ld", i);
        return 1;
    case PIPETLS_CMD_OUT_OF_PLACE:
        PT_ENSURE(parse_number(i, p, &v) && pt_cipher_set_out_of_place(v), fail,
            PT_R_BAD_ARGUMENT, "pipetls OUT_OF_PLACE must be 0 or 1, got %ld", i);
        return 1;
    case PIPETLS_CMD_STATS:
        return emit(format_stats, i, p);
    case PIPETLS_CMD_INFO:
        return emit(format_info, i, p);
    case PIPETLS_CMD_RESET_STATS:
        pt_stats_reset();
        return 1;
    case PIPETLS_CMD_STATS_FILE:
        PT_ENSURE(p != NULL && *(const char *)p != '\0', fail, PT_R_BAD_ARGUMENT,
            "pipetls STATS_FILE needs a path (or \"-\" for stderr)");
        free(stats_file);
        stats_file = strdup(p);
        PT_ENSURE(stats_file != NULL, fail, PT_R_ALLOC_FAILED, "STATS_FILE");
        return 1;
    }
    ERR_raise(ERR_LIB_ENGINE, ENGINE_R_CTRL_COMMAND_NOT_IMPLEMENTED);
fail:
    return 0;
}

static void write_stats_at_unload(void)
{
    pt_report_stats_to(stats_file != NULL ? stats_file : getenv("PIPETLS_STATS"));
}

static int pt_engine_destroy(ENGINE *e)
{
    write_stats_at_unload();
    pt_lanes_shutdown();
    free_ciphers();
    free(stats_file);
    stats_file = NULL;
    pt_err_unload();
    return 1;
}

static int pt_engine_init(ENGINE *e)
{
    pt_lanes_init_once();
    return 1;
}

/*
 * Our worker threads, thread-local destructors and pthread_atfork handlers
 * point into this library: it must stay mapped even if the ENGINE code
 * dlclose()s it.
 */
static void pin_library(void)
{
    Dl_info info;

    if (dladdr((void *)pin_library, &info) && info.dli_fname != NULL)
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

/* PIPETLS_ASYNC=0|1|2: the ASYNC default, for programs that cannot send
 * control commands (openssl s_client -engine). Anything else: no engine. */
static int async_from_env(void)
{
    const char *v = getenv("PIPETLS_ASYNC");

    if (v == NULL || *v == '\0')
        return 1;
    PT_ENSURE(v[1] == '\0' && v[0] >= '0' && v[0] <= '2' && pt_set_async_pause(v[0] - '0'),
        fail, PT_R_BAD_ARGUMENT, "PIPETLS_ASYNC must be 0, 1 or 2, not \"%.16s\"", v);
    return 1;
fail:
    return 0;
}

static int bind_pipetls(ENGINE *e)
{
    pin_library();
    pt_err_load();
    pt_lanes_init_once();
    if (!async_from_env())
        return 0;
    make_ciphers();
    if (!ENGINE_set_id(e, PIPETLS_ENGINE_ID)
        || !ENGINE_set_name(e, PIPETLS_ENGINE_NAME)
        || !ENGINE_set_flags(e, ENGINE_FLAGS_NO_REGISTER_ALL)
        || !ENGINE_set_init_function(e, pt_engine_init)
        || !ENGINE_set_destroy_function(e, pt_engine_destroy)
        || !ENGINE_set_ctrl_function(e, pt_engine_ctrl)
        || !ENGINE_set_cmd_defns(e, cmd_defns)
        || !ENGINE_set_ciphers(e, pt_ciphers))
        return 0;
    return 1;
}

static int bind_helper(ENGINE *e, const char *id)
{
    /* "pipetls", or no id (SO_PATH alone), or the path itself (what
     * ENGINE_by_id("/path/pipetls.so") and "openssl engine /path" pass) */
    if (id != NULL && strcmp(id, PIPETLS_ENGINE_ID) != 0 && strchr(id, '/') == NULL)
        return 0;
    return bind_pipetls(e);
}

#pragma GCC visibility push(default)
IMPLEMENT_DYNAMIC_CHECK_FN()
IMPLEMENT_DYNAMIC_BIND_FN(bind_helper)
#pragma GCC visibility pop
