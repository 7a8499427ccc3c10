"""The Python layer as a service: the stock `openssl s_client` against a
pipetls server (8 MiB, hashes equal, batches > 1), and a loop of 1000
connections that must not grow memory or file descriptors."""
import ctypes
import hashlib
import os
import subprocess

import pytest

import pipetls
from pipetls import Connection, Context, handshake_pair
from support.peers import OPENSSL
from support.proof import PtServer

needs_openssl = pytest.mark.needs_program("openssl")


@pytest.fixture(scope="module")
def engine(engine_path):
    return pipetls.load_engine(engine_path, register=True)


@needs_openssl
def test_stock_s_client_against_pipetls_server(engine, certs):
    """pipetls serves 8 MiB in 1 MiB writes with max_pipelines 8; the stock
    s_client (no engine) receives it all; the engine wrote pipelined batches."""
    data = os.urandom(8 << 20)
    ctx = Context(server=True, certfile=str(certs.cert), keyfile=str(certs.key),
                  max_version="TLSv1.2", ciphers="ECDHE-RSA-AES256-GCM-SHA384",
                  max_pipelines=8, engine=engine)
    box = {}

    def serve(conn):
        before = engine.stats()
        view = memoryview(data)
        for off in range(0, len(data), 1 << 20):
            conn.sendall(view[off:off + (1 << 20)])
        box["delta"] = engine.stats() - before
        conn.shutdown(timeout=10)

    srv = PtServer(ctx, serve, timeout=30)
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    try:
        p = subprocess.run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % srv.port,
                            "-quiet", "-tls1_2", "-CAfile", str(certs.ca)],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60, env=env)
        srv.join()
    finally:
        ctx.close()
    assert hashlib.sha256(p.stdout).hexdigest() == hashlib.sha256(data).hexdigest(), \
        (len(p.stdout), p.stderr[-2000:])
    d = box["delta"]
    assert d.pipelined_batches > 0 and max(k for k, v in d.hist.items() if v) == 8


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _Mallinfo2
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]


def _in_use_kib():
    """Bytes malloc has handed out and not had back (OpenSSL's allocations
    included), in KiB: unlike RSS this does not hide a leak in free lists."""
    m = _libc.mallinfo2()
    return (m.uordblks + m.hblkhd) // 1024


def _fds():
    return len(os.listdir("/proc/self/fd"))


def test_1000_connections_do_not_grow(engine, certs):
    """1000 connections (handshake, a pipelined 64 KiB each way, close) over
    memory BIOs: file descriptors unchanged, memory bounded."""
    sctx = Context(server=True, certfile=str(certs.cert), keyfile=str(certs.key),
                   max_version="TLSv1.2", max_pipelines=8, split_send_fragment=4096,
                   engine=engine)
    cctx = Context(server=False, verify=False, max_version="TLSv1.2", max_pipelines=8,
                   default_read_buffer_len=1 << 17, engine=engine)
    payload = os.urandom(64 << 10)

    def one():
        s, c = Connection(sctx), Connection(cctx)
        try:
            handshake_pair(s, c)
            for a, b in ((s, c), (c, s)):
                a.sendall(payload)
                b.feed(a.drain())
                got = bytearray()
                while len(got) < len(payload):
                    got += b.read(1 << 20)
                assert got == payload
        finally:
            s.close()
            c.close()

    for _ in range(100):  # warm up: pools, caches, lazily made lane contexts
        one()
    fds, used = _fds(), _in_use_kib()
    before = engine.stats()
    for _ in range(1000):
        one()
    delta = engine.stats() - before
    grown = _in_use_kib() - used
    assert _fds() == fds, "file descriptors leaked"
    # a leak of one SSL (~100 KiB with its buffers) per connection would be ~100 MiB
    assert grown < 16 * 1024, "memory grew by %d KiB over 1000 connections" % grown
    assert delta.pipelined_batches >= 2000 and delta.failed_batches == 0
    sctx.close()
    cctx.close()


def test_growth_check_can_fail():
    """Negative control: 32 MiB that C code allocates and never frees (what
    a leaked SSL per connection would look like) is seen."""
    used = _in_use_kib()
    leaked = [_libc.malloc(32 << 10) for _ in range(1024)]
    try:
        assert _in_use_kib() - used >= 16 * 1024
    finally:
        for p in leaked:
            _libc.free(p)
