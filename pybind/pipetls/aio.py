"""asyncio over non-blocking :class:`~pipetls.Connection` objects.

A connection made with ``Context(async_mode=True)`` and ``timeout=0``
raises :class:`~pipetls.WantRead` / :class:`~pipetls.WantWrite` when the
socket is not ready and :class:`~pipetls.WantAsync` while the engine's
lanes work on one of its record batches (the OpenSSL ASYNC job is paused);
:class:`AsyncConnection` turns each into an ``await`` on the right fd
(``loop.add_reader`` / ``add_writer``) and calls the operation again, so
one event-loop thread serves many connections while their batches run on
the other cores.  Python's own :mod:`ssl` is not involved.

::

    server = await pipetls.aio.start_server(handle, "127.0.0.1", 0, server_ctx)
    conn = await pipetls.aio.open_connection("127.0.0.1", port, client_ctx,
                                             server_hostname="localhost")
    await conn.sendall(data); reply = await conn.read(65536)

See docs/async.md.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Awaitable, Callable, Optional, TypeVar

from .connection import Connection
from .context import Context
from .errors import TLSClosed, WantAsync, WantRead, WantWrite

__all__ = ["AsyncConnection", "Server", "open_connection", "start_server", "wait_readable"]

T = TypeVar("T")


async def wait_readable(fds: list[int]) -> None:
    """Until one of ``fds`` is readable (an empty list: one loop turn)."""
    if not fds:
        await asyncio.sleep(0)
        return
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    for fd in fds:
        loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        for fd in fds:
            loop.remove_reader(fd)


async def _wait_writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await fut
    finally:
        loop.remove_writer(fd)


class AsyncConnection:
    """A non-blocking Connection driven by the running asyncio loop.

    One read and one write may run at once (two tasks). An SSL* has one
    ASYNC job: while a read's job is paused a write waits for it to end,
    and the other way round.

    ``async_waits`` counts the WantAsync waits (a batch of this
    connection's records was on the lanes while the loop ran other work).
    ``trace``, if set, is called with ("pause" | "resume" | "done", kind)
    around each wait and after each completed call (kind: "read", "write",
    "handshake", "shutdown")."""

    def __init__(self, conn: Connection) -> None:
        if conn.timeout != 0:
            conn.timeout = 0
        self.conn = conn
        self.async_waits = 0
        self.trace: Optional[Callable[[str, str], None]] = None
        self._job_over = asyncio.Event()

    async def _drive(self, kind: str, op: Callable[[], T]) -> T:
        while True:
            paused = self.conn.paused_op
            if paused is not None and paused != kind:
                # the other call's job must finish first
                self._job_over.clear()
                await self._job_over.wait()
                continue
            try:
                r = op()
            except WantRead:
                await wait_readable([self.conn.fileno()])
                continue
            except WantWrite:
                await _wait_writable(self.conn.fileno())
                continue
            except WantAsync as e:
                self.async_waits += 1
                if self.trace is not None:
                    self.trace("pause", kind)
                await wait_readable(e.fds)
                if self.trace is not None:
                    self.trace("resume", kind)
                continue
            except BaseException:
                self._job_over.set()
                raise
            self._job_over.set()
            if self.trace is not None:
                self.trace("done", kind)
            return r

    async def do_handshake(self) -> None:
        await self._drive("handshake", self.conn.do_handshake)

    async def read(self, n: int = 65536) -> bytes:
        """Up to n bytes (at least one); b"" after the peer's close_notify."""
        try:
            return await self._drive("read", lambda: self.conn.read(n))
        except TLSClosed:
            return b""

    async def readinto(self, buffer: Any) -> int:
        """Decrypt into ``buffer``; 0 after the peer's close_notify."""
        try:
            return await self._drive("read", lambda: self.conn.readinto(buffer))
        except TLSClosed:
            return 0

    async def write(self, data: Any) -> int:
        return await self._drive("write", lambda: self.conn.write(data))

    async def sendall(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += await self.write(view[done:])

    async def shutdown(self) -> None:
        """Send close_notify (not waiting for the peer's)."""
        await self._drive("shutdown", lambda: self.conn.shutdown(0))

    def close(self) -> None:
        self.conn.close()

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def open_connection(host: str, port: int, context: Context, *,
                          server_hostname: Optional[str] = None) -> AsyncConnection:
    """Connect, handshake, and return the AsyncConnection (its socket is
    closed with it)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
        conn = AsyncConnection(Connection(context, sock, server_hostname=server_hostname,
                                          timeout=0))
    except BaseException:
        sock.close()
        raise
    conn.conn._owned_sock = sock  # type: ignore[attr-defined]
    try:
        await conn.do_handshake()
    except BaseException:
        _close(conn)
        raise
    return conn


def _close(conn: AsyncConnection) -> None:
    sock = getattr(conn.conn, "_owned_sock", None)
    conn.close()
    if sock is not None:
        sock.close()


class Server:
    """What :func:`start_server` returns: ``port``, ``close()``,
    ``await wait_closed()``."""

    def __init__(self, lsock: socket.socket, task: asyncio.Task[None]) -> None:
        self.socket = lsock
        self.port: int = lsock.getsockname()[1]
        self._task = task
        self.handlers: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        self._task.cancel()

    async def wait_closed(self) -> None:
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        if self.handlers:
            await asyncio.gather(*self.handlers, return_exceptions=True)
        self.socket.close()


async def start_server(handler: Callable[[AsyncConnection], Awaitable[None]], host: str,
                       port: int, context: Context, *, backlog: int = 128) -> Server:
    """Accept TLS connections on (host, port); each gets its handshake done
    and then ``await handler(conn)`` in a task of its own; the connection
    and its socket are closed when the handler returns."""
    loop = asyncio.get_running_loop()
    lsock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(backlog)
    lsock.setblocking(False)
    server: Optional[Server] = None

    async def serve_one(sock: socket.socket) -> None:
        try:
            conn = AsyncConnection(Connection(context, sock, timeout=0))
        except BaseException:
            sock.close()
            raise
        conn.conn._owned_sock = sock  # type: ignore[attr-defined]
        try:
            await conn.do_handshake()
            await handler(conn)
        finally:
            _close(conn)

    async def accept_loop() -> None:
        while True:
            sock, _ = await loop.sock_accept(lsock)
            sock.setblocking(False)
            task = loop.create_task(serve_one(sock))
            assert server is not None
            server.handlers.add(task)
            task.add_done_callback(server.handlers.discard)

    server = Server(lsock, loop.create_task(accept_loop()))
    return server
