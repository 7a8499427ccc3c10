"""Peer processes: ``openssl s_server`` / ``s_client``, bulk exchanges
between two peer processes, and any TLS program driven through its
stdin/stdout (:class:`StdioPeer`).

Every peer runs in its own process without the engine unless its argv asks
for ``-engine``; the ``openssl`` program is the environment's
(support.programs), never a fixed path. Engine statistics reach a test
through ``PIPETLS_STATS=<file>`` in the engine process's environment: the
engine appends its counters to that file when it is unloaded, which only
happens on a clean exit. So let ``openssl s_server`` end by itself
(``-naccept 1``) rather than terminating it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Mapping, Optional, Sequence, Union

from .net import free_port, wait_listening
from .programs import openssl_program

OPENSSL = openssl_program()
BytesOrPath = Union[bytes, bytearray, memoryview, str, os.PathLike, None]


def _with_engine(argv: Sequence, engine: Optional[str]) -> list:
    argv = [os.fspath(a) for a in argv]
    return argv + ["-engine", os.fspath(engine)] if engine else argv


def _env(additions: Optional[Mapping[str, str]]) -> dict:
    env = dict(os.environ)
    if additions:
        env.update({k: os.fspath(v) for k, v in additions.items()})
    return env


def read_chunks(fd: int, size: int = 1 << 20):
    """What a process writes to the pipe ``fd``, chunk by chunk, until EOF
    (or an error reading it)."""
    while True:
        try:
            chunk = os.read(fd, size)
        except OSError:
            return
        if not chunk:
            return
        yield chunk


# ------------------------------------------------------------------- s_server

class OpenSSLServer:
    """``openssl s_server`` on 127.0.0.1:``port`` as a context manager.

    ::

        with OpenSSLServer(["-cert", certs.cert, "-key", certs.key,
                            "-naccept", "1", "-quiet"],
                           engine=engine_path,
                           env={"PIPETLS_STATS": stats}) as srv:
            run_s_client(srv.port, ["-CAfile", certs.ca], input=b"hi")
        srv.returncode, srv.stdout, srv.stderr, srv.terminated

    ``args`` are s_server options; ``-accept 127.0.0.1:<port>`` is added
    (``port`` defaults to :func:`free_port`) and ``-engine <engine>`` when
    ``engine`` is given. ``env`` is added to this process's environment.
    Without ``stdin`` the server's standard input stays open and empty, because
    s_server ends the connection when its stdin reaches EOF. With ``stdin``
    (bytes or a path) the server sends those bytes to the client, then its
    stdin is closed, so it closes the connection after them. Then let the
    client send something, e.g. ``run_s_client(port, ["-ign_eof", ...],
    input=b"x")``: s_server serves stdin before the socket, so it can finish
    the handshake inside SSL_write and then sit in a blocking SSL_read until
    the client speaks.

    Entering waits (up to ``start_timeout`` s) until the port listens. Leaving
    closes stdin and, when ``-naccept`` is among the args, gives the server
    ``exit_timeout`` s to finish by itself (a clean exit: the engine writes its
    statistics); otherwise, or after that, it is terminated (SIGTERM, then
    SIGKILL) and ``terminated`` is set. ``stdout``/``stderr`` hold its output
    (bytes / text) once it has stopped.
    """

    def __init__(self, args: Sequence = (), *, engine: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None,
                 port: Optional[int] = None, stdin: BytesOrPath = None,
                 start_timeout: float = 10.0, exit_timeout: float = 10.0):
        self.port = port if port is not None else free_port()
        self.argv = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{self.port}",
                     *_with_engine(args, engine)]
        self.env = _env(env)
        self.stdin_data = stdin
        self.start_timeout = start_timeout
        self.exit_timeout = exit_timeout if "-naccept" in self.argv else 0.0
        self.proc: Optional[subprocess.Popen] = None
        self.stdout: bytes = b""
        self.stderr: str = ""
        self.returncode: Optional[int] = None
        self.terminated = False
        self._out: Optional[IO[bytes]] = None
        self._err: Optional[IO[bytes]] = None
        self._feeder: Optional[threading.Thread] = None

    def start(self) -> "OpenSSLServer":
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                     stdout=self._out, stderr=self._err,
                                     env=self.env)
        if self.stdin_data is not None:
            self._feeder = threading.Thread(target=self._feed, daemon=True)
            self._feeder.start()
        try:
            wait_listening(self.port, self.start_timeout, self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{' '.join(self.argv)}\n{self.stderr}") from None
        return self

    def _feed(self) -> None:
        try:
            data = self.stdin_data
            if isinstance(data, (str, os.PathLike)):
                data = Path(data).read_bytes()
            self.proc.stdin.write(data)
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the server went away; stop() reports its output

    def stop(self) -> int:
        """Stop the server (see the class doc) and collect its output."""
        if self.proc is None:
            return self.returncode
        proc = self.proc
        if self._feeder is not None:
            self._feeder.join(self.exit_timeout + 1)
        if proc.poll() is None and self.exit_timeout > 0:
            try:
                proc.wait(self.exit_timeout)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            self.terminated = True
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        try:
            proc.stdin.close()
        except OSError:
            pass
        self.returncode = proc.returncode
        self._out.seek(0)
        self._err.seek(0)
        self.stdout = self._out.read()
        self.stderr = self._err.read().decode(errors="replace")
        self._out.close()
        self._err.close()
        self.proc = None
        return self.returncode

    def __enter__(self) -> "OpenSSLServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------- s_client

def run_s_client(port: int, args: Sequence = (), *, input: BytesOrPath = b"",
                 engine: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None,
                 host: str = "127.0.0.1",
                 timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run one ``openssl s_client -connect host:port`` and return its result.

    ``input`` (bytes, or a path whose file is fed as stdin) is sent to the
    server; at its EOF s_client closes the connection -- unless ``args`` holds
    ``-ign_eof`` (or ``-quiet``, which implies it), in which case it reads on
    until the server closes. Returns a CompletedProcess with ``stdout`` bytes
    and ``stderr`` text; raises ``subprocess.TimeoutExpired`` after
    ``timeout`` s. The exit status is not checked.
    """
    argv = [OPENSSL, "s_client", "-connect", f"{host}:{port}",
            *_with_engine(args, engine)]
    if isinstance(input, (str, os.PathLike)):
        with open(input, "rb") as f:
            proc = subprocess.run(argv, stdin=f, capture_output=True,
                                  env=_env(env), timeout=timeout)
    else:
        proc = subprocess.run(argv, input=bytes(input or b""),
                              capture_output=True, env=_env(env),
                              timeout=timeout)
    proc.stderr = proc.stderr.decode(errors="replace")
    return proc


# ------------------------------------------------------------ bulk exchange

def _grow_pipe(fd: int) -> None:
    try:
        import fcntl  # noqa: PLC0415
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


@dataclass
class StreamSide:
    """What one process of :func:`stream_exchange` did."""

    argv: list
    returncode: Optional[int] = None
    received: int = 0            # bytes read from its stdout
    sha256: str = ""             # of those bytes
    stderr: str = ""
    write_error: Optional[str] = None
    _hash: "hashlib._Hash" = field(default_factory=hashlib.sha256, repr=False)


@dataclass
class StreamResult:
    server: StreamSide
    client: StreamSide
    seconds: float


class _Pump:
    """stdin writer + stdout reader threads for one process."""

    def __init__(self, proc: subprocess.Popen, side: StreamSide,
                 send: memoryview, expect: int, abort: threading.Event,
                 send_after_first: bool = False):
        self.proc, self.side, self.send, self.expect = proc, side, send, expect
        self.abort = abort
        self.got_all = threading.Event()
        self.got_first = threading.Event()
        if expect == 0:
            self.got_all.set()
        if not send_after_first:
            self.got_first.set()
        _grow_pipe(proc.stdin.fileno())
        _grow_pipe(proc.stdout.fileno())
        self.threads = [threading.Thread(target=self._write, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]
        for t in self.threads:
            t.start()

    def _write(self) -> None:
        fd = self.proc.stdin.fileno()
        try:
            while not self.got_first.wait(0.1):
                if self.abort.is_set():
                    return
            off = 0
            while off < len(self.send) and not self.abort.is_set():
                off += os.write(fd, self.send[off:off + (256 << 10)])
            # The peer must not see our EOF before we have everything from it:
            # s_server ends the connection when its stdin closes.
            while not self.got_all.wait(0.1):
                if self.abort.is_set():
                    break
        except OSError as exc:
            self.side.write_error = repr(exc)
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def _read(self) -> None:
        side = self.side
        for chunk in read_chunks(self.proc.stdout.fileno()):
            side._hash.update(chunk)
            side.received += len(chunk)
            self.got_first.set()
            if side.received >= self.expect:
                self.got_all.set()
        side.sha256 = side._hash.hexdigest()
        self.got_first.set()  # EOF: nothing more will come
        self.got_all.set()


def stream_exchange(server_argv: Sequence, client_argv: Sequence, *, port: int,
                    server_send: bytes = b"", client_send: bytes = b"",
                    server_env: Optional[Mapping[str, str]] = None,
                    client_env: Optional[Mapping[str, str]] = None,
                    timeout: float = 120.0) -> StreamResult:
    """Move bulk data both ways through a TLS server and client process.

    Both argv lists are complete commands (e.g. ``[OPENSSL, "s_server",
    "-accept", f"127.0.0.1:{port}", "-quiet", "-naccept", "1", ...]`` and an
    ``s_client -quiet`` one). The server is started first and must listen on
    ``port``; then the client. ``server_send`` goes to the server's stdin (it
    sends it to the client), ``client_send`` to the client's. Each side's
    stdout is hashed (SHA-256) and counted.

    The server's stdin is fed only after the server has received the first
    bytes from the client, so ``client_send`` must not be empty (send a short
    token when only the server has data): s_server serves stdin before the
    socket, so stdin data ready before the handshake makes it complete the
    handshake inside SSL_write and then call a blocking SSL_read on the stale
    "socket readable" of the ClientHello -- a deadlock if the client is
    silent. Once the client's data arrived the handshake is over.

    A process's stdin is closed only
    once its writer is done *and* it has received what the other side sent,
    so s_server (which ends the connection at stdin EOF, then exits with
    ``-naccept 1``) closes the connection only when all data has crossed; a
    ``-quiet`` s_client ignores stdin EOF and exits on the server's
    close_notify. Both processes exit by themselves: a clean exit.

    Raises AssertionError, with both stderr texts, if it takes longer than
    ``timeout`` s (the processes are killed then).
    """
    if not client_send:
        raise ValueError("stream_exchange needs client_send (see the doc)")
    started = time.monotonic()
    deadline = started + timeout
    abort = threading.Event()
    sides, procs, pumps, errs = [], [], [], []
    startup_error = None
    timed_out = False
    try:
        for argv, env, send, expect in (
                (server_argv, server_env, server_send, len(client_send)),
                (client_argv, client_env, client_send, len(server_send))):
            argv = [os.fspath(a) for a in argv]
            side = StreamSide(argv=argv)
            err = tempfile.TemporaryFile()
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=err,
                                    env=_env(env))
            sides.append(side)
            procs.append(proc)
            errs.append(err)
            if len(procs) == 1:
                try:
                    wait_listening(port, 10.0, proc)
                except RuntimeError as exc:
                    startup_error = str(exc)
                    break
            pumps.append(_Pump(proc, side, memoryview(send), expect, abort,
                               send_after_first=len(procs) == 1))

        for proc in procs if startup_error is None else ():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        abort.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for pump in pumps:
            for t in pump.threads:
                t.join(10)
        for side, proc, err in zip(sides, procs, errs):
            side.returncode = proc.returncode
            err.seek(0)
            side.stderr = err.read().decode(errors="replace")
            err.close()
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass

    if startup_error is not None:
        raise AssertionError(f"server did not start: {startup_error}\n"
                             f"{' '.join(sides[0].argv)}\n{sides[0].stderr}")
    result = StreamResult(server=sides[0], client=sides[1],
                          seconds=time.monotonic() - started)
    if timed_out:
        raise AssertionError(
            f"stream_exchange timed out after {timeout}s: "
            f"server got {result.server.received}/{len(client_send)} bytes, "
            f"client got {result.client.received}/{len(server_send)} bytes\n"
            f"--- server {' '.join(result.server.argv)}\n{result.server.stderr}\n"
            f"--- client {' '.join(result.client.argv)}\n{result.client.stderr}")
    return result


# ------------------------------------------------------------- stdio peer

class StdioPeer:
    """A TLS peer process that sends its stdin and prints what it receives.

    ``send`` is written to its stdin; stdin stays open until
    ``close_stdin()`` (s_server ends the connection at stdin EOF). stdout is
    hashed (and kept with ``keep``); ``got_all`` is set once ``expect`` bytes
    arrived or stdout ended."""

    def __init__(self, argv, send: bytes = b"", expect: int = 0, env=None,
                 keep: bool = False, stdin_close_after_send: bool = False,
                 keep_preload: bool = False):
        self.argv = [os.fspath(a) for a in argv]
        self.expect = expect
        self.keep = keep
        self.data = bytearray() if keep else None
        self.received = 0
        self._h = hashlib.sha256()
        self.got_all = threading.Event()
        self._close = threading.Event()
        if stdin_close_after_send:
            self._close.set()
        self._err = tempfile.TemporaryFile()
        full_env = dict(os.environ)
        if not keep_preload:
            # A sanitizer runtime preloaded into pytest (tox -e sanitize/tsan)
            # is only needed by peers that load the (sanitized) engine.
            full_env.pop("LD_PRELOAD", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, env=full_env)
        self._send = memoryview(send)
        self._threads = [threading.Thread(target=self._write, daemon=True),
                         threading.Thread(target=self._read, daemon=True)]
        for t in self._threads:
            t.start()
        self.returncode = None
        self.stderr = ""

    def _write(self):
        fd = self.proc.stdin.fileno()
        try:
            off = 0
            while off < len(self._send):
                off += os.write(fd, self._send[off:off + (256 << 10)])
            self._close.wait(600)
        except OSError:
            pass
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def _read(self):
        for chunk in read_chunks(self.proc.stdout.fileno()):
            self._h.update(chunk)
            if self.data is not None:
                self.data += chunk
            self.received += len(chunk)
            if self.received >= self.expect:
                self.got_all.set()
        self.got_all.set()

    @property
    def sha256(self) -> str:
        return self._h.hexdigest()

    def close_stdin(self):
        self._close.set()

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for exit (kill after ``timeout``); collect stderr."""
        self._close.set()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for t in self._threads:
            t.join(10)
        self.returncode = self.proc.returncode
        self._err.seek(0)
        self.stderr = self._err.read().decode(errors="replace")
        self._err.close()
        try:
            self.proc.stdout.close()
        except OSError:
            pass
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
