"""Pipelined non-blocking writes cut short and retried, on the patched
OpenSSL 3.5, without pipetls.Connection's way round the libssl 3.0 defect.

libssl 3.0 before 3.0.22 keeps as many write buffers as its widest batch and
on a retry looks for unsent bytes only in the first and the last of them, so
a shorter batch cut short in a middle record is overwritten by the retry
(tests/test_partial_write_pipelines.py, docs/knobs.md).  3.5's record layer
(ssl/record/methods/tls_common.c) sizes the buffers to each batch and
resumes a retry at the buffer it stopped in; these tests hold it to that:
each chunk is one SSL_write_ex straight on libssl (``raw``, what nginx or
curl do), retried after every WANT_WRITE, and the peer must get every byte,
in order, with each chunk encrypted once as one batch of RECORDS records.
The same child run on libssl 3.0.17, 3.0.19 or 3.0.20 ends in
bad_record_mac for 3, 5 and 7 records.

Every child runs on the patched build only (invariant 7), see
support/partial_write_child.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.patched import assert_only_patched, penv

pytestmark = pytest.mark.patched

CHILD = Path(__file__).resolve().parent / "support" / "partial_write_child.py"
CHUNKS = 200  # support/partial_write_child.py


def run_child(prefix, engine35, certs, records, mode):
    env = penv(prefix, None, PIPETLS_OPENSSL=prefix)
    proc = subprocess.run([sys.executable, str(CHILD), str(records), mode, str(certs.dir),
                           engine35], capture_output=True, text=True, env=env,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["version"].startswith("OpenSSL 3.5."), out["version"]
    assert_only_patched(set(out["libs"]), prefix)
    return out


@pytest.mark.parametrize("mode", ["raw", "connection"])
@pytest.mark.parametrize("records", [2, 3, 5, 7, 8])
def test_retried_short_pipelined_write_after_a_full_batch_35(prefix, engine35, certs,
                                                              records, mode):
    out = run_child(prefix, engine35, certs, records, mode)
    assert out["error"] is None, out
    assert out["cut"] > 0, "the socket never filled: nothing was tested"
    assert out["intact"] and out["got"] == out["sent"], out
    assert out["failed_batches"] == 0, out
    if mode == "raw":
        # each chunk went as one engine batch of `records` records, once:
        # the retries sent what was encrypted, they did not encrypt again
        assert out["hist"].get(str(records)) == CHUNKS, out["hist"]
