"""A process on the patched OpenSSL 3.5 (PIPETLS_OPENSSL, LD_LIBRARY_PATH;
invariant 7): a ``pipetls.Context`` pair over memory connections, the
server writing 4 MiB in writes of 8 full records, the client reading all of
it back from memory with 1 MiB reads; prints JSON: what each read returned,
the read batches of the provider (or of the engine) and whether the data
came through intact.

    python3 read_batches_child.py CERT KEY VERSION SUITE PATH READBUF

VERSION ``1.2`` / ``1.3``; SUITE a TLS 1.3 suite or a TLS 1.2 cipher list;
PATH ``provider`` or ``engine``; READBUF ``auto`` (pipetls's default read
buffer) or a number for ``default_read_buffer_len`` (0: libssl's own).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pipetls
from pipetls import Connection, Context
from pipetls.errors import WantRead

MP = 8
WRITE = MP * 16384
TOTAL = 4 << 20


def main() -> int:
    cert, key, version, suite, path, readbuf = sys.argv[1:7]
    kw = dict(min_version="TLSv" + version, max_version="TLSv" + version, max_pipelines=MP,
              provider=path == "provider", engine=True if path == "engine" else None)
    kw["ciphersuites" if version == "1.3" else "ciphers"] = suite
    ckw = dict(kw)
    if readbuf != "auto":
        ckw["default_read_buffer_len"] = int(readbuf)
    sctx = Context(server=True, certfile=cert, keyfile=key, **kw)
    cctx = Context(verify=False, **ckw)
    meter = pipetls.load_provider() if path == "provider" else pipetls.shared_engine()
    s, c = Connection(sctx), Connection(cctx)
    pipetls.handshake_pair(s, c)
    buf = bytearray(1 << 20)
    try:  # TLS 1.3: the session tickets first, which are not the bulk's
        c.readinto(buf)
        raise SystemExit("read_batches_child: application data before the bulk")
    except WantRead:
        pass
    data = os.urandom(TOTAL)
    view = memoryview(data)
    wire = bytearray()
    for i in range(0, len(data), WRITE):  # 8 records of 16 KiB a write
        chunk = view[i:i + WRITE]
        while chunk:
            n = s.write(chunk)
            chunk = chunk[n:]
        wire += s.drain()
    before = meter.stats()
    c.feed(bytes(wire))
    got = bytearray()
    reads = []
    while len(got) < len(data):
        n = c.readinto(buf)
        reads.append(n)
        got += buf[:n]
    read = meter.stats() - before
    print(json.dumps({
        "intact": hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(),
        "version": c.tls_version, "cipher": c.cipher_name,
        "read_buffer": cctx.default_read_buffer_len, "reads": reads,
        "hist": {str(k): v for k, v in read.hist.items() if v},
        "records": read.records, "batches": read.batches, "failed": read.failed_batches,
        "stream_calls": read.stream_calls, "contiguous": read.contiguous_records,
        "openssl": pipetls.openssl_version()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
