"""The Python package on the patched OpenSSL 3.5 (patch 0002): ``pipetls.Context``
pipelines TLS 1.3 through the pipetls provider, ``pipetls info`` says which
path serves which version and suite, ``pipetls bench --openssl patched``.

Every process here that touches the patched build runs on it alone
(support.patched.penv: LD_LIBRARY_PATH=<prefix>/lib, PIPETLS_OPENSSL=<prefix>;
invariant 7); the pytest process stays on the system's OpenSSL 3.0.  What a
Context pair does is read from the provider's statistics in that process
(support/python_tls13_child.py): batches of more than one record around the
writes and around the reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.patched import penv

pytestmark = pytest.mark.patched

HERE = Path(__file__).resolve().parent
CHILD = HERE / "support" / "python_tls13_child.py"
SUITES13 = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256"]
# the certs fixture's key is RSA
SUITES12 = {"AES-128-GCM": "ECDHE-RSA-AES128-GCM-SHA256",
            "AES-256-GCM": "ECDHE-RSA-AES256-GCM-SHA384",
            "ChaCha20-Poly1305": "ECDHE-RSA-CHACHA20-POLY1305"}
SUITE_CIPHER13 = {"TLS_AES_128_GCM_SHA256": "AES-128-GCM",
                  "TLS_AES_256_GCM_SHA384": "AES-256-GCM",
                  "TLS_CHACHA20_POLY1305_SHA256": "ChaCha20-Poly1305"}


def env35(prefix, module35, engine_path=None, **extra):
    env = penv(prefix, None, PIPETLS_OPENSSL=prefix, PIPETLS_PROVIDER=module35, **extra)
    if engine_path is not None:
        env["PIPETLS_ENGINE"] = str(engine_path)
    return env


def pair(prefix, module35, certs, version, suite, provider, *, engine=None):
    argv = [sys.executable, str(CHILD), certs.cert, certs.key, version, suite, provider]
    if engine is not None:
        argv.append("engine")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          env=env35(prefix, module35, engine), stdin=subprocess.DEVNULL)
    assert proc.stdout.strip(), proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["rc"] = proc.returncode
    out["stderr"] = proc.stderr
    return out


def batched(d) -> int:
    return sum(d.values())


# ------------------------------------------------------------------ Context

@pytest.mark.parametrize("provider", ["auto", "true"])
@pytest.mark.parametrize("suite", SUITES13)
def test_context_pipelines_tls13_through_the_provider(prefix, module35, certs, suite, provider):
    """A Context pair (the default provider="auto", and provider=True),
    max_pipelines 8, 4 MiB in writes of 8 records: data intact, the
    provider batched more than one record writing and reading."""
    r = pair(prefix, module35, certs, "1.3", suite, provider)
    assert r["rc"] == 0, r
    assert r["openssl"].startswith("OpenSSL 3.5"), r
    assert (r["version"], r["cipher"]) == ("TLSv1.3", suite), r
    assert r["intact"], r
    assert r["context_provider"] == [True, True], r
    assert r["failed"] == 0, r
    # 4 MiB = 256 records of 16 KiB; most of them in batches both ways
    assert batched(r["write_batched"]) > 0 and batched(r["read_batched"]) > 0, r
    assert max(int(k) for k in r["write_batched"]) > 1, r
    assert sum(int(k) * n for k, n in r["write_batched"].items()) > 128, r
    assert sum(int(k) * n for k, n in r["read_batched"].items()) > 128, r


def test_context_provider_false_gets_no_batches(prefix, module35, certs):
    """provider=False: the same pair, the provider loaded in the process,
    but the SSL_CTX is made without the property query: the provider sees
    no batch at all (libssl's default-provider ciphers, one record at a
    time), and the data is intact."""
    r = pair(prefix, module35, certs, "1.3", SUITES13[1], "false")
    assert r["rc"] == 0, r
    assert r["intact"] and r["context_provider"] == [False, False], r
    assert r["write_batches"] == 0 and r["read_batches"] == 0, r
    assert r["write_batched"] == {} and r["read_batched"] == {}, r


def test_engine_with_provider_true_is_refused(prefix, module35, certs, engine35):
    """engine=True with provider=True: a registered ENGINE would take TLS 1.3
    too, so the Context refuses, naming why; with "auto" it is made without
    the provider and TLS 1.3 is not batched by the provider."""
    r = pair(prefix, module35, certs, "1.3", SUITES13[0], "true", engine=engine35)
    assert r["rc"] == 3 and r["type"] == "ConfigError", r
    assert "ENGINE" in r["error"] and "provider" in r["error"], r
    r = pair(prefix, module35, certs, "1.3", SUITES13[0], "auto", engine=engine35)
    assert r["rc"] == 0 and r["intact"], r
    assert r["context_provider"] == [False, False], r
    assert r["write_batched"] == {} and r["read_batched"] == {}, r
