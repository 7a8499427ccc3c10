"""Full read batches on the patched OpenSSL 3.5 (patch 0005).

A record cut by the end of a read buffer fill used to come up alone: its
body read asked the transport for the rest of that record only, so the
records behind it stayed there and it was decrypted by itself (through the
provider: outside any pipeline; ``stream_calls`` in its statistics). With
0005 that read takes what the buffer has room for, and the records behind
the cut one join its batch. A bulk stream of 4 MiB (256 records, written 8
full records at a time) read from memory with 1 MiB reads must then come up
as 32 reads of 8 records each, every record in a pipelined batch of 8,
with libssl's own read buffer (room for 8 records) and with pipetls's
default (room for 16): through the provider for the TLS 1.3 suites and the
TLS 1.2 AEAD suites, and through the engine for TLS 1.2.

Against the build without 0005 these fail: libssl's buffer reads 8, 1, 8,
1 ... and pipetls's 8, 8, 1 ...  Each case runs in a process on the patched
build (support/read_batches_child.py; invariant 7).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.patched import penv

pytestmark = pytest.mark.patched

CHILD = Path(__file__).resolve().parent / "support" / "read_batches_child.py"
MP = 8
RECORDS = (4 << 20) // 16384

CASES = [
    ("1.3", "TLS_AES_128_GCM_SHA256", "provider"),
    ("1.3", "TLS_AES_256_GCM_SHA384", "provider"),
    ("1.3", "TLS_CHACHA20_POLY1305_SHA256", "provider"),
    ("1.2", "ECDHE-RSA-AES256-GCM-SHA384", "provider"),
    ("1.2", "ECDHE-RSA-CHACHA20-POLY1305", "provider"),
    ("1.2", "ECDHE-RSA-AES128-GCM-SHA256", "engine"),
]


def read_batches(prefix, module35, engine35, certs, version, suite, path, readbuf):
    env = penv(prefix, None, PIPETLS_OPENSSL=prefix, PIPETLS_PROVIDER=module35,
               PIPETLS_ENGINE=engine35)
    proc = subprocess.run([sys.executable, str(CHILD), certs.cert, certs.key, version, suite,
                           path, readbuf], capture_output=True, text=True, timeout=300,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("readbuf", ["0", "auto"])
@pytest.mark.parametrize("version,suite,path", CASES)
def test_bulk_reads_come_up_in_full_batches(prefix, module35, engine35, certs, version, suite,
                                            path, readbuf):
    r = read_batches(prefix, module35, engine35, certs, version, suite, path, readbuf)
    assert r["openssl"].startswith("OpenSSL 3.5") and r["intact"], r
    assert r["version"] == "TLSv" + version, r
    assert (r["read_buffer"] == 0) == (readbuf == "0"), r
    # every read hands up one batch of 8 full records
    assert r["reads"] == [MP * 16384] * (RECORDS // MP), r
    # and every record was decrypted in one: no lone record anywhere
    assert r["hist"] == {str(MP): RECORDS // MP}, r
    assert r["records"] == RECORDS and r["failed"] == 0, r
    if path == "provider":
        assert r["stream_calls"] == 0, r
