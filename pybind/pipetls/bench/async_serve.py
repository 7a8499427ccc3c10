"""Bench (not a test): one thread serving N TLS 1.2 connections, async on
and off, in the same run.

    python -m pipetls.bench.async_serve [--conns 1,8,64] [--reps 5]
        [--response 262144] [--total 67108864] [--pipelines 8] [--json]

The server is this process: ONE thread, a ``selectors`` loop over N
non-blocking pipetls Connections (engine registered, ``max_pipelines``),
``Context(async_mode=True)`` or not.  The clients are one other process
(stock OpenSSL through pipetls.Connection without the engine, one
selectors loop): each connection asks for a response of ``--response``
bytes (a 4-byte request), reads it, and asks again, until ``--total``
bytes have crossed over all connections.  The client times each request
(send to last byte) and the whole run.

Reported per N and mode, medians over ``--reps`` interleaved runs
(off, on, off, on, ...): aggregate GB/s, per-request latency p50/p90/p99,
and the engine's async counters (batches posted, pauses) of the server.
Timing on a shared machine is noisy: compare on/off of the same run only.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

from .. import Connection, Context, TLSClosed, WantAsync, WantRead, WantWrite, load_engine

REQ = 4
CHUNK = 1 << 18


def _certs(tmp: str) -> tuple[str, str]:
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


# ------------------------------------------------------------------ server

class _Served:
    __slots__ = ("conn", "sock", "buf", "have", "left", "handshaken", "closed")

    def __init__(self, conn: Connection, sock: socket.socket) -> None:
        self.conn, self.sock = conn, sock
        self.buf = bytearray(1 << 16)  # one buffer: a paused read resumes into it
        self.have = 0  # request bytes read
        self.left = 0  # response bytes still to write
        self.handshaken = False
        self.closed = False


def serve(lsock: socket.socket, ctx: Context, n: int, response: bytes) -> None:
    """Accept n connections and serve them in this thread until all close."""
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    live = 0
    accepted = 0
    view = memoryview(response)
    size = len(response)
    while accepted < n or live:
        for key, _ in sel.select(5.0):
            s: Optional[_Served] = key.data
            if s is None:
                sock, _ = lsock.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                s = _Served(Connection(ctx, sock, timeout=0), sock)
                sel.register(sock, selectors.EVENT_READ, s)
                accepted += 1
                live += 1
                if accepted == n:
                    sel.unregister(lsock)
            elif not isinstance(key.fileobj, socket.socket):
                sel.unregister(key.fd)  # the job's fd: resume it
            elif s.conn.paused_op is not None:
                continue
            events, fds = _step(s, view, size)
            if s.closed:
                sel.unregister(s.sock)
                s.conn.close()
                s.sock.close()
                live -= 1
                continue
            sel.modify(s.sock, events or selectors.EVENT_READ, s)
            for fd in fds:
                sel.register(fd, selectors.EVENT_READ, s)


def _step(s: _Served, view: memoryview, size: int) -> tuple[int, list[int]]:
    c = s.conn
    try:
        if not s.handshaken:
            c.do_handshake()
            s.handshaken = True
        while True:
            if s.left == 0:
                n = c.readinto(s.buf)
                s.have += n
                if s.have >= REQ:
                    s.have = 0
                    s.left = size
            else:
                at = size - s.left
                s.left -= c.write(view[at:at + CHUNK])
    except WantRead:
        return selectors.EVENT_READ, []
    except WantWrite:
        return selectors.EVENT_WRITE, []
    except WantAsync as e:
        return 0, e.fds
    except (TLSClosed, OSError, Exception):
        s.closed = True
        return 0, []


# ------------------------------------------------------------------ client

class _Asking:
    __slots__ = ("conn", "sock", "left", "t0")

    def __init__(self, conn: Connection, sock: socket.socket, left: int) -> None:
        self.conn, self.sock, self.left = conn, sock, left
        self.t0 = time.perf_counter()


def client_main(port: int, n: int, total: int, size: int) -> None:
    """The client process: n connections, requests until total bytes."""
    ctx = Context(verify=False, check_hostname=False, max_version="TLSv1.2",
                  ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(ctx, sock, timeout=None)
        conn.do_handshake()
        sock.setblocking(False)
        conn.timeout = 0
        conns.append((conn, sock))
    requests = max(1, total // size)
    issued = 0
    lat: list[float] = []
    buf = bytearray(1 << 18)
    state: dict[int, _Asking] = {}
    t_start = time.perf_counter()
    for conn, sock in conns:
        if issued < requests:
            conn.write(b"\0" * REQ)
            issued += 1
            state[sock.fileno()] = _Asking(conn, sock, size)
            sel.register(sock, selectors.EVENT_READ, sock.fileno())
    while state:
        for key, _ in sel.select(30.0):
            st = state[key.data]
            try:
                while st.left > 0:
                    st.left -= st.conn.readinto(buf)
            except WantRead:
                continue
            lat.append(time.perf_counter() - st.t0)
            if issued < requests:
                st.conn.write(b"\0" * REQ)
                issued += 1
                st.left, st.t0 = size, time.perf_counter()
            else:
                sel.unregister(st.sock)
                del state[key.data]
    wall = time.perf_counter() - t_start
    for conn, sock in conns:
        conn.close()
        sock.close()
    json.dump({"wall": wall, "bytes": len(lat) * size, "lat": lat}, sys.stdout)


# ------------------------------------------------------------------ driver

def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def one_run(cert: str, key: str, n: int, async_mode: bool, args: argparse.Namespace,
            response: bytes) -> dict[str, Any]:
    engine = load_engine(register=True)
    ctx = Context(server=True, certfile=cert, keyfile=key, max_version="TLSv1.2",
                  ciphers="ECDHE-ECDSA-AES128-GCM-SHA256", max_pipelines=args.pipelines,
                  async_mode=async_mode)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(n)
    port = lsock.getsockname()[1]
    before = engine.stats()
    cli = subprocess.Popen([sys.executable, "-m", "pipetls.bench.async_serve", "--client", str(port), str(n),
                            str(args.total), str(len(response))], stdout=subprocess.PIPE)
    try:
        serve(lsock, ctx, n, response)
        out, _ = cli.communicate(timeout=300)
    finally:
        if cli.poll() is None:
            cli.kill()
        lsock.close()
        ctx.close()
    d = engine.stats() - before
    r = json.loads(out)
    return {"gbps": r["bytes"] / r["wall"] / 1e9, "lat": r["lat"],
            "async_batches": d.async_batches, "async_pauses": d.async_pauses,
            "pipelined": d.pipelined_batches}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipetls.bench.async_serve",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", default="1,8,64")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--response", type=int, default=256 * 1024)
    p.add_argument("--total", type=int, default=64 << 20)
    p.add_argument("--pipelines", type=int, default=8)
    p.add_argument("--json", action="store_true")
    p.add_argument("--client", nargs=4, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        client_main(*args.client)
        return 0
    response = os.urandom(args.response)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = _certs(tmp)
        for n in [int(x) for x in args.conns.split(",")]:
            runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for _ in range(args.reps):
                for mode in (False, True):
                    runs[mode].append(one_run(cert, key, n, mode, args, response))
            for mode in (False, True):
                rs = runs[mode]
                lat = [x for r in rs for x in r["lat"]]
                gb = [r["gbps"] for r in rs]
                rows.append({
                    "conns": n, "async": mode,
                    "gbps_median": statistics.median(gb), "gbps_min": min(gb),
                    "gbps_max": max(gb),
                    "lat_ms_p50": _pct(lat, 0.50) * 1e3, "lat_ms_p90": _pct(lat, 0.90) * 1e3,
                    "lat_ms_p99": _pct(lat, 0.99) * 1e3,
                    "async_batches": sum(r["async_batches"] for r in rs),
                    "async_pauses": sum(r["async_pauses"] for r in rs),
                    "pipelined_batches": sum(r["pipelined"] for r in rs),
                })
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print("conns async  GB/s (min..max)        p50 ms  p90 ms  p99 ms  posted  pauses")
    for r in rows:
        print("%5d %5s  %.3f (%.3f..%.3f)  %7.2f %7.2f %7.2f  %6d  %6d" % (
            r["conns"], "on" if r["async"] else "off", r["gbps_median"], r["gbps_min"],
            r["gbps_max"], r["lat_ms_p50"], r["lat_ms_p90"], r["lat_ms_p99"],
            r["async_batches"], r["async_pauses"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
