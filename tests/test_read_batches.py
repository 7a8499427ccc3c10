"""Read batches with pipetls's default read buffer (issue 13, section 5).

libssl 3.0 decrypts in one batch the complete application-data records its
read buffer holds, up to max_pipelines; a fill of the buffer that ends
inside a record hands that record up alone next. pipetls's Contexts set a
read buffer of two records per pipeline when ``default_read_buffer_len`` is
not given (``pipetls._knobs.read_buffer_auto``), twice what libssl allocates
by itself; a bulk stream then reads in batches k, k, 1 instead of k, 1
(means (2k + 1) / 3 and (k + 1) / 2). The engine's statistics count the
batches; the writer's batches are made before the snapshot, so the delta is
the reader's alone.

READ_FRACTION: the mean read batch of an 8-record-per-write stream, as a
fraction of max_pipelines, that the default must reach. Measured: 0.71
(5.67 of 8) with the new default, 0.56 (4.50) with OpenSSL's, over memory
BIOs, for each AEAD suite below; 0.65 leaves margin on both sides.
"""

from __future__ import annotations

import socket
import threading

import pytest

from pipetls import Connection, Context
from pipetls._knobs import READ_BUFFER_RECORD, read_buffer_auto
from pipetls.pairs import handshake_pair

MP = 8
READ_FRACTION = 0.65
WRITE = MP * 16384          # one SSL_write = one batch of 8 full records
TOTAL = 4 << 20


def _read_mean(engine, certs, cipher: str, reader_knobs: dict) -> float:
    kw = dict(max_version="TLSv1.2", ciphers=cipher, engine=engine, max_pipelines=MP)
    with Context(server=True, certfile=str(certs.cert), keyfile=str(certs.key), **kw) as sctx, \
            Context(server=False, verify=False, **kw, **reader_knobs) as cctx:
        s, c = Connection(sctx), Connection(cctx)
        with s, c:
            handshake_pair(s, c)
            data = bytes(range(256)) * (WRITE // 256)
            wire = bytearray()
            for _ in range(TOTAL // WRITE):
                assert s.write(data) == WRITE
                wire += s.drain()
            before = engine.stats()
            c.feed(wire)
            buf = bytearray(1 << 20)
            got = 0
            while got < TOTAL:
                got += c.readinto(buf)
            delta = engine.stats() - before
    assert got == TOTAL
    assert delta.records == TOTAL // 16384, delta   # every record went through the engine
    return delta.mean_batch


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"])
def test_default_read_buffer_gives_larger_read_batches(pt_engine, certs, cipher):
    """Same run, same stream: the reader with pipetls's default reaches
    READ_FRACTION x max_pipelines records per batch on average; the reader
    with OpenSSL's own buffer (default_read_buffer_len=0) does not."""
    new = _read_mean(pt_engine, certs, cipher, {})
    old = _read_mean(pt_engine, certs, cipher, {"default_read_buffer_len": 0})
    print("%s mean read batch: OpenSSL's buffer %.2f, pipetls default %.2f (max_pipelines %d)"
          % (cipher, old, new, MP))
    assert new >= READ_FRACTION * MP, (old, new)
    assert old < READ_FRACTION * MP, (old, new)   # the old default fails this test


def test_small_read_returns_promptly_with_the_large_buffer(pt_engine, certs):
    """read_ahead takes what the socket has, not a buffer's worth: a 1 KiB
    write on a socket is read at once (a read that waited for more would
    time out: the writer sends nothing else)."""
    kw = dict(max_version="TLSv1.2", ciphers="ECDHE-RSA-AES128-GCM-SHA256", engine=pt_engine,
              max_pipelines=MP)
    with Context(server=True, certfile=str(certs.cert), keyfile=str(certs.key), **kw) as sctx, \
            Context(server=False, verify=False, **kw) as cctx:
        assert cctx.default_read_buffer_len == read_buffer_auto(MP) > MP * READ_BUFFER_RECORD
        a, b = socket.socketpair()
        with a, b:
            s = Connection(sctx, a, timeout=10)
            c = Connection(cctx, b, timeout=10)
            with s, c:
                t = threading.Thread(target=s.do_handshake)
                t.start()
                c.do_handshake()
                t.join()
                s.write(b"x" * 1024)
                assert c.read(1 << 20) == b"x" * 1024


def test_read_buffer_follows_max_pipelines_until_set():
    with Context() as ctx:
        assert ctx.default_read_buffer_len == 0           # one pipeline: OpenSSL's
        ctx.max_pipelines = 4
        assert ctx.default_read_buffer_len == 2 * 4 * READ_BUFFER_RECORD
        ctx.max_pipelines = 1
        assert ctx.default_read_buffer_len == 0
        ctx.default_read_buffer_len = 0                   # explicit: kept from now on
        ctx.max_pipelines = 8
        assert ctx.default_read_buffer_len == 0
    with Context(max_pipelines=8, default_read_buffer_len=65536) as ctx:
        assert ctx.default_read_buffer_len == 65536
        ctx.max_pipelines = 2
        assert ctx.default_read_buffer_len == 65536


def test_connection_inherits_and_follows():
    with Context(server=True, max_pipelines=2) as ctx:
        c = Connection(ctx)
        with c:
            assert c.default_read_buffer_len == read_buffer_auto(2)
            c.max_pipelines = 8
            assert c.default_read_buffer_len == read_buffer_auto(8)
