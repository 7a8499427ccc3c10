"""A process on the patched OpenSSL 3.5 (PIPETLS_OPENSSL, LD_LIBRARY_PATH;
invariant 7) that drives a ``pipetls.Context`` pair over memory connections
and prints JSON: whether the data came through intact and the provider's
batches of more than one record around the writes and around the reads.

    python3 python_tls13_child.py CERT KEY VERSION SUITE PROVIDER [ENGINE]

VERSION ``1.2`` / ``1.3``; SUITE a TLS 1.3 suite or a TLS 1.2 cipher list;
PROVIDER ``auto`` / ``true`` / ``false``; ENGINE ``engine`` to make the
contexts with ``engine=True`` (the engine's batches are then reported too).  Errors are printed as JSON too (``error``,
``type``) with exit status 3.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pipetls
from pipetls import Connection, Context


def batched(st) -> dict:
    return {str(k): n for k, n in st.hist.items() if k > 1 and n}


def main() -> int:
    cert, key, version, suite, prov = sys.argv[1:6]
    engine = len(sys.argv) > 6 and sys.argv[6] == "engine"
    provider = {"auto": "auto", "true": True, "false": False}[prov]
    kw = dict(min_version="TLSv" + version, max_version="TLSv" + version, max_pipelines=8,
              provider=provider, engine=True if engine else None)
    kw["ciphersuites" if version == "1.3" else "ciphers"] = suite
    try:
        sctx = Context(server=True, certfile=cert, keyfile=key, **kw)
        cctx = Context(verify=False, **kw)
    except pipetls.PipetlsError as exc:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        return 3
    # the provider's counters: the shared one (loaded by the Context, or
    # here when the Context did not use it, to see that it got nothing)
    p = pipetls.load_provider()
    e = pipetls.shared_engine() if engine else None
    s, c = Connection(sctx), Connection(cctx)
    pipetls.handshake_pair(s, c)
    data = os.urandom(4 << 20)
    before = p.stats()
    ebefore = e.stats() if e is not None else None
    view = memoryview(data)
    wire = bytearray()
    for i in range(0, len(data), 1 << 17):  # 8 records of 16 KiB a write
        chunk = view[i:i + (1 << 17)]
        while chunk:
            n = s.write(chunk)
            chunk = chunk[n:]
        wire += s.drain()
    wrote = p.stats() - before
    ewrote = e.stats() - ebefore if e is not None else None
    before = p.stats()
    ebefore = e.stats() if e is not None else None
    c.feed(bytes(wire))
    got = bytearray()
    buf = bytearray(1 << 20)
    while len(got) < len(data):
        n = c.readinto(buf)
        got += buf[:n]
    read = p.stats() - before
    eread = e.stats() - ebefore if e is not None else None
    print(json.dumps({
        "intact": hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(),
        "version": s.tls_version, "cipher": s.cipher_name,
        "context_provider": [sctx.provider is not None, cctx.provider is not None],
        "write_batched": batched(wrote), "read_batched": batched(read),
        "write_batches": wrote.batches, "read_batches": read.batches,
        "failed": wrote.failed_batches + read.failed_batches,
        "engine_write_batched": batched(ewrote) if ewrote is not None else None,
        "engine_read_batched": batched(eread) if eread is not None else None,
        "openssl": pipetls.openssl_version()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
