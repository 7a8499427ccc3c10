"""Helpers of the API tests (test_api.py, test_stdlib.py): counters
around a block, TLS 1.2 contexts on the P-256 PKI (the ``pt_certs``
fixture), a real loopback connection between two pipetls Connections, and
changing the shared engine's process-wide settings for a while.

The engine is registered process-wide, so one pytest process shares one
engine (the ``pt_engine`` fixture). Tests that read the counters take a
snapshot before and subtract (``EngineStats.__sub__``) instead of
resetting, so they do not disturb each other.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import pipetls
from pipetls import _ffi

__all__ = ["engine_settings", "socket_pair_connections", "stats_delta", "tls12_client_ctx",
           "tls12_server_ctx"]


@contextlib.contextmanager
def engine_settings(engine, **settings):
    """Set process-wide engine settings (``threads``, ``inline_below``) for
    the block and restore the old values after it, whatever happens."""
    old = {k: getattr(engine, k) for k in settings}
    try:
        for k, v in settings.items():
            setattr(engine, k, v)
        yield engine
    finally:
        for k, v in old.items():
            setattr(engine, k, v)


class stats_delta:
    """``with stats_delta(engine) as d: ...``; then ``d.stats`` holds the
    counters accumulated inside the block."""

    def __init__(self, engine):
        self.engine = engine
        self.stats = None

    def __enter__(self):
        self._before = self.engine.stats()
        return self

    def __exit__(self, *exc):
        self.stats = self.engine.stats() - self._before
        return False


def tls12_server_ctx(pt_certs, **kw):
    kw.setdefault("max_version", "TLSv1.2")
    return pipetls.Context(server=True, certfile=pt_certs.cert, keyfile=pt_certs.key, **kw)


def tls12_client_ctx(pt_certs, **kw):
    kw.setdefault("max_version", "TLSv1.2")
    return pipetls.Context(server=False, cafile=pt_certs.ca, **kw)


def socket_pair_connections(server_ctx, client_ctx, timeout=10.0, hostname="localhost"):
    """A real TCP connection on 127.0.0.1; handshakes both ends (server in a
    thread).  Returns (server_conn, client_conn, server_sock, client_sock)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    result = {}

    def accept():
        try:
            s, _ = lsock.accept()
            s.settimeout(timeout)
            conn = pipetls.Connection(server_ctx, s)
            result["sock"] = s
            result["conn"] = conn
            conn.do_handshake()
        except BaseException as e:  # reported in the main thread
            result["error"] = e
        finally:
            _ffi.ERR_clear_error()

    th = threading.Thread(target=accept)
    th.start()
    csock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        cconn = pipetls.Connection(client_ctx, csock, server_hostname=hostname)
        cconn.do_handshake()
    finally:
        th.join(timeout + 5)
        lsock.close()
    if "error" in result:
        raise result["error"]
    return result["conn"], cconn, result["sock"], csock
