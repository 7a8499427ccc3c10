/*
 * pt_base.h - what every file of the pipetls core includes first: feature
 * macros and the limits the core shares with its fronts.
 *
 * The core (this folder) includes no <openssl/engine.h> and uses no ENGINE
 * or EVP_CIPHER method type: it is shared by the ENGINE front (engine/) and,
 * later, a provider front.
 */
#ifndef PT_BASE_H
#define PT_BASE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime, dladdr, RTLD_NODELETE */
#endif

#include <stddef.h>
#include <stdint.h>

#define PT_VERSION "0.1.0"
/* Largest batch (SSL_MAX_PIPELINES); engine/pipetls.h publishes it as
 * PIPETLS_MAX_PIPES. */
#define PT_MAX_PIPES 32
/* Most lanes (threads working one batch, the caller included);
 * PIPETLS_MAX_LANES in engine/pipetls.h. */
#define PT_MAX_LANES 256

#endif
