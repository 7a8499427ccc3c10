"""Driving memory connections in-process: :func:`handshake_pair` and
:func:`pump`.

Both take two Connections joined by ``Connection.memory_pair()`` (a BIO
pair) or two memory Connections (``Connection(ctx)``), whose ciphertext
they move with ``drain()`` / ``feed()``.  Non-blocking throughout:
``WantRead`` / ``WantWrite`` from a Connection means "move data and retry".
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from . import _ffi
from ._knobs import at_least
from .connection import Connection
from .errors import ConfigTypeError, TLSError, WantRead, WantWrite

__all__ = ["handshake_pair", "pump"]


def _shuttle(a: Connection, b: Connection) -> bool:
    """Move ciphertext between two memory-mode connections; True if any moved."""
    moved = False
    if a.transport == "memory" and b.transport == "memory":
        for src, dst in ((a, b), (b, a)):
            data = src.drain()
            if data:
                dst.feed(data)
                moved = True
    return moved


def handshake_pair(server: Connection, client: Connection, max_rounds: int = 100) -> None:
    """Drive both ends of a memory pair (or two memory connections, whose
    ciphertext is shuttled) until both handshakes are done."""
    _check_pair(server, client)
    max_rounds = at_least("max_rounds", max_rounds, 1)
    for _ in range(max_rounds):
        for c in (client, server):
            if not c.handshake_done:
                try:
                    c.do_handshake()
                except (WantRead, WantWrite):
                    pass
        _shuttle(server, client)
        if server.handshake_done and client.handshake_done:
            return
        if not (_has_input(server) or _has_input(client)):
            break
    raise TLSError("handshake_pair: the handshake did not complete")


def _check_pair(a: object, b: object) -> None:
    for c in (a, b):
        if not isinstance(c, Connection):
            raise ConfigTypeError("expected a pipetls.Connection, not %s" % type(c).__name__,
                                  knob="connection")
        c.handle  # ClosedError after close()


def _has_input(c: Connection) -> bool:
    """Ciphertext is waiting for ``c`` to read (memory BIO or BIO pair)."""
    rbio = _ffi.SSL_get_rbio(c.handle)
    return bool(rbio) and _ffi.BIO_ctrl_pending(rbio) > 0


def pump(sender: Connection, receiver: Connection, data: Any, *, write_size: int = 1 << 17,
         read_size: int = 1 << 20,
         on_data: Optional[Callable[[memoryview], object]] = None) -> int:
    """Send ``data`` from ``sender`` to ``receiver`` (a memory pair, or two
    memory connections) and read it all on the other side.

    ``data``: a bytes-like object, or an int N to send N bytes from one
    reusable zero buffer.  ``write_size``: bytes per SSL_write (with
    max_pipelines k and full records, k records per batch).  ``on_data``:
    called with a memoryview of each decrypted chunk (valid only during the
    call).  Returns the number of bytes received.
    """
    _check_pair(sender, receiver)
    write_size = at_least("write_size", write_size, 1)
    read_size = at_least("read_size", read_size, 1)
    if on_data is not None and not callable(on_data):
        raise ConfigTypeError("on_data must be callable", knob="on_data")
    zeros: Optional[bytearray] = None
    if isinstance(data, int) and not isinstance(data, bool):
        total = at_least("data", data, 0)
        zeros = bytearray(min(write_size, max(total, 1)))
    else:
        view = memoryview(data).cast("B")
        total = len(view)
    rbuf = bytearray(read_size)
    rview = memoryview(rbuf)
    sent = got = 0
    stalls = 0
    while got < total:
        progress = False
        if sent < total:
            n = min(write_size, total - sent)
            chunk = memoryview(zeros)[:n] if zeros is not None else view[sent:sent + n]
            try:
                w = sender.write(chunk)
                sent += w
                progress = progress or w > 0
            except (WantWrite, WantRead):
                pass
        if _shuttle(sender, receiver):
            progress = True
        while True:
            try:
                k = receiver.readinto(rbuf)
            except WantRead:
                break
            except WantWrite:
                _shuttle(sender, receiver)
                break
            got += k
            progress = True
            if on_data is not None:
                on_data(rview[:k])
            if got >= total:
                break
        if not progress:
            stalls += 1
            if stalls > 3:
                raise TLSError("pump: no progress (sent %d, received %d of %d)" % (sent, got, total))
        else:
            stalls = 0
    return got
