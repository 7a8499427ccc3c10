/*
 * pipeline_harness.c - OpenSSL's own test_evp_cipher_pipeline (OpenSSL
 * 3.5, test/evp_extra_test.c) run against the pipetls provider.
 *
 * The function is copied from the OpenSSL source tree at configure time
 * (CMakeLists.txt, PIPETLS_OPENSSL_SRC) into evp_cipher_pipeline.inc with
 * two substitutions and no other change:
 *     "provider=fake-pipeline"  -> "provider=pipetls"
 *     "provider!=fake-pipeline" -> "provider!=pipetls"
 * and fake_pipeline_start() below loads pipetls-provider.so (the path in
 * $PIPETLS_PROVIDER) where OpenSSL's test starts its in-test fake provider
 * (test/fake_pipelineprov.c, which loops over the pipes). The rest is
 * OpenSSL's test framework (test/testutil), unchanged.
 *
 *   PIPETLS_PROVIDER=/path/pipetls-provider.so ossl_pipeline_test
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include "testutil.h"

static OSSL_LIB_CTX *testctx = NULL;
static OSSL_PROVIDER *default_prov = NULL;

static OSSL_PROVIDER *fake_pipeline_start(OSSL_LIB_CTX *libctx)
{
    const char *module = getenv("PIPETLS_PROVIDER");
    OSSL_PROVIDER *p;

    if (!TEST_ptr(module) || !TEST_ptr(p = OSSL_PROVIDER_load(libctx, module)))
        return NULL;
    return p;
}

static void fake_pipeline_finish(OSSL_PROVIDER *p)
{
    OSSL_PROVIDER_unload(p);
}

#include "evp_cipher_pipeline.inc"

int setup_tests(void)
{
    /* the default provider beside ours, as in evp_extra_test */
    if (!TEST_ptr(testctx = OSSL_LIB_CTX_new())
        || !TEST_ptr(default_prov = OSSL_PROVIDER_load(testctx, "default")))
        return 0;
    ADD_TEST(test_evp_cipher_pipeline);
    return 1;
}

void cleanup_tests(void)
{
    OSSL_PROVIDER_unload(default_prov);
    OSSL_LIB_CTX_free(testctx);
}
