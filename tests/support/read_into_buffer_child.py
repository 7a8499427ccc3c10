"""A process on the patched OpenSSL 3.5 (PIPETLS_OPENSSL, LD_LIBRARY_PATH;
invariant 7) for patch 0006: a ``pipetls.Context`` pair over memory
connections, the server writing in writes of 8 full records, the client
reading from memory; prints one line of JSON.

    python3 read_into_buffer_child.py CERT KEY VERSION SUITE MODE [ARGS]

VERSION ``1.2`` / ``1.3``; SUITE a TLS 1.3 suite or a TLS 1.2 cipher list.

MODE ``bulk READS PADDING CLEANSE [WRITE]``: 4 MiB of random data read back with
``SSL_read`` calls of the sizes in READS (a comma list, used in turn);
PADDING: the server's ``SSL_CTX_set_block_padding`` (0: none); CLEANSE 1:
the client sets ``SSL_OP_CLEANSE_PLAINTEXT``; WRITE: bytes per write
(default 8 full records). Prints whether the data came
through intact, the sizes the reads returned, and the provider's read
statistics (``contiguous_records``: records decrypted back to back into one
buffer, the reader's).

MODE ``keyupdate WRITE``: the same, written WRITE bytes at a time with a
KeyUpdate after each write (requested and not requested in turn), read with
1 MiB reads.

MODE ``peek``: the same stream read as ``SSL_peek_ex`` of 1000 bytes, then
``SSL_read`` of 1 MiB, in turn; the peeked bytes must be the ones read next.

MODE ``tamper INDEX``: one write of 8 records, the tag of record INDEX
(0-based) flipped on the wire; the client reads it with 1 MiB reads into a
buffer filled with 0xA5, on this build with pipetls (the provider,
``max_pipelines`` 8) and on the same build stock (the default provider,
``max_pipelines`` 1), each from the same damaged bytes. For each: the bytes
handed up before the error, the alert, and for pipetls whether any 16-byte
block of a record from INDEX on was ever in the read buffer after a read.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import sys

import pipetls
from pipetls import Connection, Context, _ffi
from pipetls.errors import TLSAlertError, TLSError, WantRead

MP = 8
WRITE = MP * 16384
TOTAL = 4 << 20
SSL_OP_CLEANSE_PLAINTEXT = 1 << 1


def contexts(cert: str, key: str, version: str, suite: str, pipelined: bool,
             padding: int = 0, cleanse: bool = False) -> tuple[Context, Context]:
    kw = dict(min_version="TLSv" + version, max_version="TLSv" + version,
              max_pipelines=MP if pipelined else 1, provider=pipelined)
    kw["ciphersuites" if version == "1.3" else "ciphers"] = suite
    sctx = Context(server=True, certfile=cert, keyfile=key, **kw)
    cctx = Context(verify=False, **kw)
    if padding:
        f = _ffi.libssl.SSL_CTX_set_block_padding
        f.argtypes, f.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_int
        if f(sctx.handle, padding) != 1:
            raise SystemExit("read_into_buffer_child: SSL_CTX_set_block_padding refused")
    if cleanse:
        cctx.set_options(SSL_OP_CLEANSE_PLAINTEXT)
    return sctx, cctx


def connect(sctx: Context, cctx: Context) -> tuple[Connection, Connection]:
    s, c = Connection(sctx), Connection(cctx)
    pipetls.handshake_pair(s, c)
    try:  # TLS 1.3: the session tickets first, which are not the bulk's
        c.readinto(bytearray(1024))
        raise SystemExit("read_into_buffer_child: application data before the bulk")
    except WantRead:
        pass
    return s, c


def wire_of(s: Connection, data: memoryview, write: int = WRITE,
            key_updates: bool = False) -> bytes:
    """The records of ``data`` written ``write`` bytes at a time; with
    ``key_updates``, a KeyUpdate after every write but the last (requested
    and not requested in turn), so that read batches straddle key changes."""
    wire = bytearray()
    update = _ffi.libssl.SSL_key_update
    update.argtypes, update.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int
    for k, i in enumerate(range(0, len(data), write)):
        chunk = data[i:i + write]
        while chunk:
            n = s.write(chunk)
            chunk = chunk[n:]
        if key_updates and i + write < len(data) and update(s.handle, k % 2) != 1:
            raise SystemExit("read_into_buffer_child: SSL_key_update refused")
        wire += s.drain()
    return bytes(wire)


def stats_of(read: pipetls.ProviderStats) -> dict:
    return {"records": read.records, "hist": {str(k): v for k, v in read.hist.items() if v},
            "contiguous": read.contiguous_records, "stream_calls": read.stream_calls,
            "failed": read.failed_batches}


def bulk(cert: str, key: str, version: str, suite: str, reads: list[int], padding: int,
         cleanse: bool, write: int = WRITE, key_updates: bool = False) -> dict:
    sctx, cctx = contexts(cert, key, version, suite, True, padding, cleanse)
    meter = pipetls.load_provider()
    s, c = connect(sctx, cctx)
    data = os.urandom(TOTAL)
    wire = wire_of(s, memoryview(data), write, key_updates)
    before = meter.stats()
    c.feed(wire)
    bufs = [bytearray(n) for n in reads]
    got = bytearray()
    sizes = []
    while len(got) < len(data):
        buf = bufs[len(sizes) % len(bufs)]
        n = c.readinto(buf)
        sizes.append(n)
        got += buf[:n]
    r = stats_of(meter.stats() - before)
    r.update({"intact": hashlib.sha256(got).digest() == hashlib.sha256(data).digest(),
              "version": c.tls_version, "cipher": c.cipher_name, "wire": len(wire),
              "reads": len(sizes), "max_read": max(sizes),
              "over": any(n > reads[i % len(reads)] for i, n in enumerate(sizes))})
    return r


def peek(cert: str, key: str, version: str, suite: str) -> dict:
    sctx, cctx = contexts(cert, key, version, suite, True)
    meter = pipetls.load_provider()
    s, c = connect(sctx, cctx)
    data = os.urandom(TOTAL)
    wire = wire_of(s, memoryview(data))
    before = meter.stats()
    c.feed(wire)
    pbuf, buf = ctypes.create_string_buffer(1000), bytearray(1 << 20)
    peek_ex = _ffi.libssl.SSL_peek_ex
    peek_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                        ctypes.POINTER(ctypes.c_size_t)]
    peek_ex.restype = ctypes.c_int
    got = bytearray()
    peeks = matched = 0
    while len(got) < len(data):
        done = ctypes.c_size_t()
        if peek_ex(c.handle, pbuf, 1000, ctypes.byref(done)) != 1:
            raise SystemExit("read_into_buffer_child: SSL_peek_ex failed")
        peeked = pbuf.raw[:done.value]
        n = c.readinto(buf)
        peeks += 1
        matched += bytes(buf[:len(peeked)]) == peeked
        got += buf[:n]
    r = stats_of(meter.stats() - before)
    r.update({"intact": bytes(got) == data, "peeks": peeks, "matched": matched,
              "version": c.tls_version})
    return r


def records_of(wire: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each record of the stream (header included)."""
    out, i = [], 0
    while i < len(wire):
        n = int.from_bytes(wire[i + 3:i + 5], "big")
        out.append((i, 5 + n))
        i += 5 + n
    return out


def tamper(cert: str, key: str, version: str, suite: str, index: int) -> dict:
    data = os.urandom(WRITE)
    result = {}
    for side in ("stock", "pipetls"):
        sctx, cctx = contexts(cert, key, version, suite, side == "pipetls")
        if side == "pipetls":
            meter = pipetls.load_provider()
        s, c = connect(sctx, cctx)
        wire = bytearray(wire_of(s, memoryview(data)))
        recs = records_of(bytes(wire))
        off, length = recs[index]
        wire[off + length - 1] ^= 0x01  # the last byte of its tag
        before = meter.stats() if side == "pipetls" else None
        c.feed(bytes(wire))
        buf = bytearray(b"\xa5" * (1 << 20))
        got = bytearray()
        # pieces of the plaintext of the damaged record and of every record
        # after it: none may ever be in the read buffer
        probes = [data[k * 16384 + o:k * 16384 + o + 32]
                  for k in range(index, MP) for o in (0, 5000, 10000, 16352)]
        seen = False
        alert = error = None
        while error is None and len(got) < len(data):
            try:
                n = c.readinto(buf)
                got += buf[:n]
            except TLSAlertError as e:
                alert, error = e.alert_name, str(e)
            except (TLSError, WantRead) as e:
                error = "%s: %s" % (type(e).__name__, e)
            whole = bytes(buf)
            seen = seen or any(p in whole for p in probes)
        r = {"handed_up": len(got), "good_prefix": bytes(got) == data[:len(got)],
             "alert": alert, "error": error}
        if side == "pipetls":
            r["leaked"] = seen
            r.update(stats_of(meter.stats() - before))
        result[side] = r
    return result


def main() -> int:
    cert, key, version, suite, mode = sys.argv[1:6]
    args = sys.argv[6:]
    if mode == "bulk":
        out = bulk(cert, key, version, suite, [int(x) for x in args[0].split(",")],
                   int(args[1]), args[2] == "1", int(args[3]) if len(args) > 3 else WRITE)
    elif mode == "keyupdate":
        out = bulk(cert, key, version, suite, [1 << 20], 0, False, int(args[0]), True)
    elif mode == "peek":
        out = peek(cert, key, version, suite)
    elif mode == "tamper":
        out = tamper(cert, key, version, suite, int(args[0]))
    else:
        raise SystemExit("read_into_buffer_child: unknown mode %r" % mode)
    out["openssl"] = pipetls.openssl_version()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
