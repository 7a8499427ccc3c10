"""Reads decrypted into the caller's buffer on the patched OpenSSL 3.5
(patch 0006).

With 0006 libssl offers the record layer the buffer of the ``SSL_read`` that
reads a new batch, and the application data records of a batch decrypted
through the provider pipeline API go straight there, back to back, as many
as fit whole: no serial copy out of libssl's plaintext buffer. The
provider's statistics count the records of a decryption written back to
back into one buffer (``contiguous_records``); libssl's own plaintext
buffer has a slot per record, so against the build without 0006 that count
is 0 and the tests that expect records there fail.

Shown here, each case in a process on the patched build
(support/read_into_buffer_child.py; invariant 7):

- bulk reads of 1 MiB: every record of every batch decrypted into the
  reader's buffer, the data intact (TLS 1.3, the three suites; TLS 1.2,
  AES-GCM and ChaCha20-Poly1305 through the provider);
- reads of awkward sizes (1, 7, 16383, 16385, 100000, 131071 bytes): only the
  records that fit whole go there, the others are copied as before; no read
  returns more than asked for;
- TLS 1.3 record padding (records shorter than their room leave gaps that
  libssl closes) and KeyUpdates between writes, so that read batches
  straddle key changes (batches that fail under the old key and are
  decrypted again): data intact;
- ``SSL_OP_CLEANSE_PLAINTEXT`` (libssl wipes what it hands up, so nothing
  may be decrypted in the caller's buffer) and ``SSL_peek``: nothing there,
  data intact;
- a damaged tag inside a batch: the same bytes handed up and the same alert
  as stock on the same build, from the same damaged stream, and no plaintext
  of the damaged record or of any record after it ever in the reader's
  buffer, though the batch was decrypted there first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.patched import penv

pytestmark = pytest.mark.patched

CHILD = Path(__file__).resolve().parent / "support" / "read_into_buffer_child.py"
RECORDS = (4 << 20) // 16384

SUITES = [
    ("1.3", "TLS_AES_128_GCM_SHA256"),
    ("1.3", "TLS_AES_256_GCM_SHA384"),
    ("1.3", "TLS_CHACHA20_POLY1305_SHA256"),
    ("1.2", "ECDHE-RSA-AES256-GCM-SHA384"),
    ("1.2", "ECDHE-RSA-CHACHA20-POLY1305"),
]


def child(prefix, module35, certs, version, suite, *args):
    env = penv(prefix, None, PIPETLS_OPENSSL=prefix, PIPETLS_PROVIDER=module35)
    proc = subprocess.run([sys.executable, str(CHILD), certs.cert, certs.key, version, suite,
                           *[str(a) for a in args]], capture_output=True, text=True,
                          timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["openssl"].startswith("OpenSSL 3.5"), r
    return r


@pytest.mark.parametrize("version,suite", SUITES)
def test_bulk_reads_are_decrypted_into_the_readers_buffer(prefix, module35, certs, version,
                                                          suite):
    r = child(prefix, module35, certs, version, suite, "bulk", 1 << 20, 0, 0)
    assert r["intact"] and r["version"] == "TLSv" + version, r
    assert r["hist"] == {"8": RECORDS // 8} and r["failed"] == 0, r
    assert r["contiguous"] == r["records"] == RECORDS, r


@pytest.mark.parametrize("version,suite", [SUITES[1], SUITES[4]])
def test_awkward_read_sizes(prefix, module35, certs, version, suite):
    r = child(prefix, module35, certs, version, suite, "bulk", "100000,1,16383,16385,131071,7",
              0, 0)
    assert r["intact"] and not r["over"] and r["records"] == RECORDS, r
    # the records that fit whole went there (6 of 8 in a read of 100000
    # bytes, 7 in one of 131071), the rest were copied
    assert 0 < r["contiguous"] < RECORDS, r


def test_record_padding_leaves_gaps_that_libssl_closes(prefix, module35, certs):
    # writes of 80000 bytes: 8 records of 10000, padded to 12288 (block 4096)
    r = child(prefix, module35, certs, "1.3", "TLS_AES_128_GCM_SHA256", "bulk", 1 << 20, 4096, 0,
              80000)
    assert r["intact"] and r["records"] > RECORDS, r
    assert r["contiguous"] == r["records"], r
    # padded: more on the wire than the same records unpadded would take
    assert r["wire"] > r["records"] * 12288, r


@pytest.mark.parametrize("write", [80000, 131072])
@pytest.mark.parametrize("suite", ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"])
def test_key_updates_inside_batches(prefix, module35, certs, suite, write):
    r = child(prefix, module35, certs, "1.3", suite, "keyupdate", write)
    assert r["intact"], r
    # batches that held records under the next key failed and were decrypted
    # again; the others went into the reader's buffer
    assert r["failed"] > 0 and r["contiguous"] > 0, r


def test_cleanse_plaintext_keeps_records_out_of_the_buffer(prefix, module35, certs):
    r = child(prefix, module35, certs, "1.3", "TLS_AES_256_GCM_SHA384", "bulk", 1 << 20, 0, 1)
    assert r["intact"] and r["hist"] == {"8": RECORDS // 8}, r
    assert r["contiguous"] == 0, r


def test_peek_then_read(prefix, module35, certs):
    r = child(prefix, module35, certs, "1.3", "TLS_AES_256_GCM_SHA384", "peek")
    assert r["intact"] and r["peeks"] == r["matched"] > 0, r
    # a batch read by SSL_peek stays in libssl's buffer
    assert r["contiguous"] == 0 and r["records"] == RECORDS, r


@pytest.mark.parametrize("index", [0, 3, 7])
@pytest.mark.parametrize("version,suite", [SUITES[1], SUITES[2], SUITES[3]])
def test_damaged_tag_in_a_batch(prefix, module35, certs, version, suite, index):
    r = child(prefix, module35, certs, version, suite, "tamper", index)
    stock, ours = r["stock"], r["pipetls"]
    assert stock["error"] is not None and stock["good_prefix"], r
    # the same answer as stock on the same build: bytes before it, alert
    assert ours["handed_up"] == stock["handed_up"] and ours["good_prefix"], r
    assert ours["alert"] == stock["alert"] and ours["alert"] is not None, r
    # the batch was decrypted in the reader's buffer, and none of the bad
    # record's plaintext or what follows it stayed there
    assert ours["contiguous"] > 0 and ours["failed"] > 0, r
    assert ours["leaked"] is False, r
