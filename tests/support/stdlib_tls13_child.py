"""Python's own ``ssl`` on the patched OpenSSL 3.5 (started with
LD_LIBRARY_PATH=<prefix>/lib, so that ``_ssl`` and pipetls share it):
``pipetls.stdlib.prefer_provider()``, then ssl.SSLContext pairs with
``enable_pipelining``; prints JSON with the provider's batches of more than
one record around the writes and the reads (ssl.MemoryBIO pairs).

    python3 stdlib_tls13_child.py CERT KEY
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import sys

import pipetls
import pipetls._knobs
from pipetls import stdlib


def contexts(cert, key):
    s = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    s.load_cert_chain(cert, key)
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    for x in (s, c):
        x.minimum_version = ssl.TLSVersion.TLSv1_3
    return s, c


def exchange(s, c, meter):
    si, so, ci, co = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    a = s.wrap_bio(si, so, server_side=True)
    b = c.wrap_bio(ci, co, server_side=False)
    for _ in range(50):
        for obj in (b, a):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        if co.pending:
            si.write(co.read())
        if so.pending:
            ci.write(so.read())
        try:
            a.do_handshake()
            b.do_handshake()
            break
        except ssl.SSLWantReadError:
            continue
    data = os.urandom(4 << 20)
    before = meter.stats()
    for i in range(0, len(data), 1 << 17):
        a.write(data[i:i + (1 << 17)])
    wrote = meter.stats() - before
    ci.write(so.read())
    before = meter.stats()
    got = bytearray()
    while len(got) < len(data):
        try:
            got += b.read(1 << 20)
        except ssl.SSLWantReadError:
            break
    read = meter.stats() - before
    batched = lambda st: sum(n for k, n in st.hist.items() if k > 1)  # noqa: E731
    return {"version": a.version(), "cipher": a.cipher()[0],
            "intact": hashlib.sha256(got).digest() == hashlib.sha256(data).digest(),
            "write_batched": batched(wrote), "read_batched": batched(read)}


def main() -> int:
    cert, key = sys.argv[1:3]
    out = {}
    early, early_c = contexts(cert, key)  # made before the preference
    p = stdlib.prefer_provider()
    # control: the same knobs on the early pair (no engine): the provider sees nothing
    for x in (early, early_c):
        stdlib._apply_knobs(stdlib.ssl_ctx_pointer(x), 8, None,
                            pipetls._knobs.default_read_buffer_for(8))
    out["early"] = exchange(early, early_c, p)
    s, c = contexts(cert, key)
    rs, rc = stdlib.enable_pipelining(s), stdlib.enable_pipelining(c)
    out["paths"] = [r.provider is not None and r.engine is None for r in (rs, rc)]
    out["provider"] = exchange(s, c, p)
    try:
        stdlib.enable_pipelining(early, provider=True)
        out["early_true"] = "accepted"
    except pipetls.StdlibError as exc:
        out["early_true"] = str(exc)
    r = stdlib.enable_pipelining(early)  # auto: the engine, as before
    out["early_auto"] = "engine" if r.engine is not None and r.provider is None else "?"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
