"""Heap per live connection pair, measured with glibc's mallinfo2 in a
process of its own (``python -m support.memory_child CERTDIR [options]``,
run from tests/; prints one JSON object).

A *pair* is a pipetls server Connection and a pipetls client Connection
joined by an AF_UNIX socketpair (the kernel's socket buffers are not on the
heap, so only libssl's, the engine's and the package's allocations count),
TLS 1.2 with ECDHE-RSA-AES128-GCM-SHA256. For each configuration, N pairs
are made, handshaken, and move one ``--write`` byte write each way; then,
with every pair still open and nothing in flight (*idle*), the heap in use
(``uordblks + hblkhd``: bytes handed out by malloc, in the arenas and in
mmapped chunks) less the heap before the first pair, over N, is the heap per
pair. A *burst* state is measured too: each client has a write of
``--burst`` bytes that the socket could not take at once (the rest waits in
libssl's write buffers) and each server has read one record of it (its read
buffer holds more). The heap per pair there is what a connection costs
while it moves data.

``stock`` is libssl with its own defaults (no engine loaded yet, one
pipeline, buffers kept: ``release_buffers=False``); it is measured first, in
the same process, the same way, and ``stock_released`` beside it (the same
with ``SSL_MODE_RELEASE_BUFFERS``: the difference to pipetls is what the
engine itself holds); then the engine is loaded and registered and the
pipetls configurations follow (``--config mp:release``, e.g. ``8:1``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import socket
import sys
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent.parent
try:
    import pipetls
except ModuleNotFoundError as exc:  # a source tree without `pip install .`
    if exc.name != "pipetls":
        raise
    sys.path.insert(0, str(REPO / "pybind"))
    import pipetls
from pipetls import Connection, Context, WantRead, WantWrite

CIPHER = "ECDHE-RSA-AES128-GCM-SHA256"


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


_libc = ctypes.CDLL(None)
_mallinfo2 = _libc.mallinfo2
_mallinfo2.restype = _Mallinfo2
_mallinfo2.argtypes = []


def heap_in_use() -> int:
    """Bytes malloc has handed out and not had back (all arenas + mmapped)."""
    gc.collect()
    m = _mallinfo2()
    return int(m.uordblks + m.hblkhd)


class _Pair:
    def __init__(self, sctx: Context, cctx: Context) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socks = (a, b)
        self.server = Connection(sctx, a, timeout=0)
        self.client = Connection(cctx, b, timeout=0)

    def close(self) -> None:
        self.server.close()
        self.client.close()
        for s in self.socks:
            s.close()


def _step(fn: Any, *args: Any) -> Optional[int]:
    try:
        r = fn(*args)
        return 0 if r is None else int(r)
    except (WantRead, WantWrite):
        return None


def _handshake(p: _Pair) -> None:
    for _ in range(200):
        for c in (p.client, p.server):
            if not c.handshake_done:
                _step(c.do_handshake)
        if p.client.handshake_done and p.server.handshake_done:
            return
    raise RuntimeError("handshake did not complete")


def _transfer(src: Connection, dst: Connection, data: memoryview, rbuf: bytearray) -> None:
    sent = got = 0
    n = len(data)
    for _ in range(100000):
        if got >= n:
            return
        if sent < n:
            w = _step(src.write, data[sent:])
            sent += w or 0
        while got < n:
            r = _step(dst.readinto, rbuf)
            if r is None:
                break
            got += r
    raise RuntimeError("transfer stalled at %d of %d" % (got, n))


def _contexts(certs: Path, mp: int, release: bool, engine: bool) -> tuple[Context, Context]:
    kw: dict[str, Any] = dict(max_version="TLSv1.2", ciphers=CIPHER, engine=engine or None,
                              release_buffers=release)
    if mp > 1:
        kw["max_pipelines"] = mp
    sctx = Context(server=True, certfile=str(certs / "server.pem"),
                   keyfile=str(certs / "server.key"), **kw)
    cctx = Context(server=False, verify=False, **kw)
    return sctx, cctx


def measure(certs: Path, n: int, mp: int, release: bool, engine: bool,
            write: int, burst: int) -> dict[str, Any]:
    """Heap per pair (bytes) idle after one ``write``-byte write each way,
    and during a ``burst``-byte write."""
    data = memoryview(bytearray(max(write, burst)))
    rbuf = bytearray(1 << 17)
    one = bytearray(16384)
    sctx, cctx = _contexts(certs, mp, release, engine)
    base = heap_in_use()
    pairs = []
    try:
        for _ in range(n):
            p = _Pair(sctx, cctx)
            pairs.append(p)
            _handshake(p)
            _transfer(p.client, p.server, data[:write], rbuf)
            _transfer(p.server, p.client, data[:write], rbuf)
        idle = (heap_in_use() - base) / n
        # burst: the client's write is cut short by a full socket (the rest
        # is pending in libssl's write buffers), the server read one record
        for p in pairs:
            p.socks[1].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
            # a partial batch (WantWrite) or whole batches: either way the
            # rest of the write waits in libssl's write buffers
            _step(p.client.write, data[:burst])
            if _step(p.server.readinto, one) is None:
                raise RuntimeError("burst read got nothing")
        during = (heap_in_use() - base) / n
    finally:
        for p in pairs:
            p.close()
        sctx.close()
        cctx.close()
    return {"max_pipelines": mp, "release_buffers": release, "engine": engine,
            "idle": idle, "burst": during}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("certs", type=Path, help="directory of the test PKI (support.pki)")
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--write", type=int, default=128 << 10)
    ap.add_argument("--burst", type=int, default=1 << 20)
    ap.add_argument("--config", action="append", default=[],
                    help="MP:RELEASE for a pipetls configuration, e.g. 8:1 (repeatable)")
    ap.add_argument("--threads", type=int, default=0, help="engine THREADS (0: its default)")
    a = ap.parse_args(argv)
    out: dict[str, Any] = {"pairs": a.pairs, "write": a.write, "burst": a.burst}
    # warm-up: libssl's and the package's one-time allocations (error
    # strings, method tables, ctypes prototypes) are made before any baseline
    measure(a.certs, 2, 1, False, False, a.write, a.burst)
    out["stock"] = measure(a.certs, a.pairs, 1, False, False, a.write, a.burst)
    # stock libssl with SSL_MODE_RELEASE_BUFFERS: what the engine itself adds
    out["stock_released"] = measure(a.certs, a.pairs, 1, True, False, a.write, a.burst)
    eng = pipetls.load_engine(register=True)
    if a.threads:
        eng.threads = a.threads
    out["threads"] = eng.threads
    measure(a.certs, 2, 8, True, True, a.write, a.burst)
    out["pipetls"] = []
    for spec in a.config or ["8:1"]:
        mp, rel = (int(x) for x in spec.split(":"))
        out["pipetls"].append(measure(a.certs, a.pairs, mp, bool(rel), True, a.write, a.burst))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
