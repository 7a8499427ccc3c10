#!/usr/bin/env bash
# CI for the patched OpenSSL 3.5 (openssl_patches/): build it, or reuse the
# build cached on this machine, run OpenSSL's own tests for the patches
# (sslapitest with test_pipelining/dasync and the new SSL_CONF test, and the
# SSL_CONF driven ssl_test suites), then `tox -e patched`.
#
# Called by .ci/run after its setup (root on a Debian 12 machine, tox on
# PATH). Cache: $PIPETLS_CACHE, default /var/cache/pipetls (kept between runs
# where the machine keeps /var/cache). A fresh build takes about 4 minutes on
# 2 cores, 8 with OpenSSL's tests; a cached one a few seconds.
set -euo pipefail

cd "$(dirname "$0")/.."

export PIPETLS_CACHE=${PIPETLS_CACHE:-/var/cache/pipetls}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # perl (Configure needs IPC::Cmd, not in perl-base), patch, the compiler;
    # gpg/gpgv check OpenSSL's signature on the source tarball.
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends \
        perl patch make gcc libc6-dev gpg gpgv ca-certificates
fi

start=$(date +%s)
python3 openssl_patches/build.py --jobs "$(nproc)" --openssl-tests
echo "openssl_patches/ci.sh: patched OpenSSL ready (build or cache hit, OpenSSL's" \
     "tests included) in $(( $(date +%s) - start ))s"

if command -v tox >/dev/null 2>&1; then
    tox -e patched
else
    python3 -m tox -e patched
fi
