"""A process on the patched OpenSSL 3.5 (PIPETLS_OPENSSL, LD_LIBRARY_PATH;
invariant 7) with support/c/count_memmove.c preloaded (LD_PRELOAD), for
patch 0007: a ``pipetls.Context`` pair over memory connections, the server
writing 4 MiB in writes of 8 full records, all of it fed to the client's
memory BIO, then read back with reads of 1 MiB while the shim counts the
memmove() calls of 32 KiB or more (libssl moving what its read buffer
holds to the buffer's front); prints one line of JSON.

    python3 read_moves_child.py CERT KEY VERSION SUITE PATH READBUF

PATH ``provider`` (``max_pipelines`` 8 through the pipetls provider) or
``stock`` (``max_pipelines`` 1, the default provider, ``read_ahead`` on);
READBUF the client's ``default_read_buffer_len`` (0: libssl's own, ``auto``:
pipetls's default).
"""

from __future__ import annotations

import ctypes
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
    shim = ctypes.CDLL(os.environ["PIPETLS_MEMMOVE_SHIM"])
    shim.pt_big_moves.restype = shim.pt_big_bytes.restype = ctypes.c_size_t
    pipelined = path == "provider"
    kw = dict(min_version="TLSv" + version, max_version="TLSv" + version,
              max_pipelines=MP if pipelined else 1, provider=pipelined)
    kw["ciphersuites" if version == "1.3" else "ciphers"] = suite
    ckw = dict(kw, read_ahead=True)
    if readbuf != "auto":
        ckw["default_read_buffer_len"] = int(readbuf)
    sctx = Context(server=True, certfile=cert, keyfile=key, **kw)
    cctx = Context(verify=False, **ckw)
    s, c = Connection(sctx), Connection(cctx)
    pipetls.handshake_pair(s, c)
    buf = bytearray(1 << 20)
    try:  # TLS 1.3: the session tickets first, which are not the bulk's
        c.readinto(buf)
        raise SystemExit("read_moves_child: application data before the bulk")
    except WantRead:
        pass
    data = os.urandom(TOTAL)
    view = memoryview(data)
    wire = bytearray()
    for i in range(0, len(data), WRITE):
        chunk = view[i:i + WRITE]
        while chunk:
            chunk = chunk[s.write(chunk):]
        wire += s.drain()
    c.feed(bytes(wire))
    meter = pipetls.load_provider() if pipelined else None
    before = meter.stats() if meter is not None else None
    got = hashlib.sha256()
    n_got = reads = 0
    shim.pt_count_memmove(1)
    while n_got < len(data):
        n = c.readinto(buf)
        got.update(memoryview(buf)[:n])
        n_got += n
        reads += 1
    shim.pt_count_memmove(0)
    out = {"intact": got.digest() == hashlib.sha256(data).digest(), "reads": reads,
           "version": c.tls_version, "read_buffer": cctx.default_read_buffer_len,
           "read_ahead": cctx.read_ahead, "big_moves": shim.pt_big_moves(),
           "big_bytes": shim.pt_big_bytes(), "wire": len(wire),
           "openssl": pipetls.openssl_version()}
    if meter is not None:
        read = meter.stats() - before
        out.update({"hist": {str(k): v for k, v in read.hist.items() if v},
                    "records": read.records})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
