"""The ``loopback`` scenario of ``pipetls bench``: a real TCP connection on
127.0.0.1, the sender here and the receiver a second process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from ..connection import Connection
from .model import CIPHERS, Pipetls, TLS13_SUITES, Measurement, Probe, Setup, contexts, use_engine

__all__ = ["loopback_run"]

_RECEIVER = r"""
import socket, sys
import pipetls
from pipetls import Context, Connection
port, total, pipelined, mp, rb, cipher, etm, tls, engine, provider = sys.argv[1:11]
total, mp, rb = int(total), int(mp), int(rb)
prov = False
if pipelined == "1" and provider:
    prov = pipetls.load_provider(provider)
elif pipelined == "1":
    pipetls.load_engine(engine, register=True)
knobs = {"max_pipelines": mp, "default_read_buffer_len": rb} if pipelined == "1" else {}
kw = dict(verify=False, encrypt_then_mac=etm == "1", provider=prov, **knobs)
if tls == "1.3":
    kw.update(min_version="TLSv1.3", max_version="TLSv1.3", ciphersuites=cipher)
else:
    kw.update(max_version="TLSv1.2", ciphers=cipher)
ctx = Context(server=False, **kw)
sock = socket.create_connection(("127.0.0.1", int(port)), timeout=60)
conn = Connection(ctx, sock, timeout=60)
conn.do_handshake()
buf = bytearray(1 << 20)
got = 0
while got < total:
    got += conn.readinto(buf)
conn.write(b"k")
conn.close()
"""


def loopback_run(st: Setup, engine: Pipetls, pipelined: bool, total: int, lanes: int,
                 engine_file: str) -> Measurement:
    """One side of a loopback pair; ``engine`` is the engine or, for the
    provider path, the Provider (the receiver loads the same module)."""
    suite, etm, _ = CIPHERS[st.cipher]
    if st.tls == "1.3":
        suite = TLS13_SUITES[st.cipher]
    use_engine(engine, pipelined, lanes)
    sctx, cctx = contexts(st, pipelined)
    cctx.close()  # the receiver process makes its own
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER, str(port), str(total), "1" if pipelined else "0",
         str(st.max_pipelines), str(st.read_buf), suite, "1" if etm else "0", st.tls, engine_file,
         st.provider.path if st.provider is not None else ""])
    try:
        lsock.settimeout(60)
        sock, _ = lsock.accept()
        conn = Connection(sctx, sock, timeout=60)
        conn.do_handshake()
        buf = bytearray(st.write_size)
        probe = Probe(engine, pipelined)
        probe.start()
        t0 = time.perf_counter()
        sent = 0
        view = memoryview(buf)
        while sent < total:
            n = min(len(buf), total - sent)
            conn.sendall(view[:n])
            sent += n
        conn.read(1)
        dt = time.perf_counter() - t0
        m = probe.measurement(dt, total)
        conn.close()
    finally:
        lsock.close()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        sctx.close()
    if child.returncode != 0:
        raise RuntimeError("bench: loopback receiver failed")
    return m
