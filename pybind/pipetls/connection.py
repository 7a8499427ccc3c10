"""TLS connections (one ``SSL*`` each) over a socket or memory BIOs.

Transports:

* a socket: ``Connection(ctx, sock, server_hostname=...)``.  The fd is given
  to OpenSSL (``SSL_set_fd``) and put in non-blocking mode at the OS level;
  pipetls waits with ``poll`` itself, so ``timeout`` works like a socket's:
  None blocks, 0 is non-blocking (``WantRead`` / ``WantWrite`` are raised),
  a number of seconds raises ``TLSTimeout`` when exceeded.  ``close()`` does
  not close the socket; it restores the socket's timeout.
* memory: ``Connection(ctx)`` with no socket gets two memory BIOs; move the
  ciphertext with ``feed()`` / ``drain()`` (like ``ssl.MemoryBIO``).
* a BIO pair: ``Connection.memory_pair(server_ctx, client_ctx)`` joins two
  connections in-process; ``handshake_pair()`` and ``pump()``
  (:mod:`pipetls.pairs`) drive them.
* any BIO(s) of your own: ``Connection(ctx, bio=ptr)`` or
  ``bio=(rbio, wbio)``; the connection takes ownership once it is made.

Ownership (one place frees each thing):

* the ``SSL*`` is the Connection's from ``SSL_new`` on; ``close()`` frees it
  (or, failing that, a ``weakref.finalize`` when the object is collected);
  a constructor that raises has already freed it;
* a BIO becomes the ``SSL*``'s only when ``SSL_set_bio`` succeeded, which is
  the constructor's last step: afterwards ``SSL_free`` frees it (a socket BIO
  from ``SSL_set_fd`` too; it does not close the fd).  If the constructor
  raises, BIOs given with ``bio=`` are still the caller's to free;
* the socket stays the caller's: ``close()`` never closes it.

A connection keeps its Context (and the callbacks OpenSSL points at) alive.
Every method raises ``ClosedError`` after ``close()`` instead of touching
freed memory; a per-connection lock serialises calls (OpenSSL allows one
thread per SSL* at a time) and makes ``close()`` from another thread safe.

Alerts: every SSL* gets the info callback (``SSL_set_info_callback``) that
records the alerts it sends and receives, so a failure can name the alert
(:class:`TLSAlertError`).  The registry of SSL* -> alert list lives here.

Names: where a Connection answers what ``ssl.SSLObject`` answers it uses
the stdlib's name and shape (``getpeercert(binary_form=True)``,
``selected_alpn_protocol()``, ``session_reused``) or a name of its own where
its shape differs (``tls_version``, ``cipher_name``, ``pending_plaintext``
are properties, not the stdlib's methods: ``cipher()`` there is a tuple).
The old properties ``version``, ``cipher``, ``pending``, ``alpn_protocol``,
``peer_certificate`` and the aliases ``recv``, ``recv_into``, ``send``,
``unwrap`` keep working for one release with a DeprecationWarning.  They
were not turned into stdlib-style methods under the same names: the old
uses (``conn.version == "TLSv1.2"``, ``if conn.pending:``) would then
compare or test a bound method, silently wrong instead of warned about.

Buffers are never copied on the way in: ``write``/``sendall`` accept any
contiguous bytes-like object (bytes, bytearray, memoryview, array, mmap) and
pass its memory to ``SSL_write_ex`` directly; ``readinto`` decrypts straight
into a writable buffer.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import select
import threading
import time
import warnings
import weakref
from typing import Any, Callable, Optional, Union

from . import _ffi
from ._buffers import pinned_buffer
from ._ffi import check, check_ptr, drain_errors
from ._knobs import PipelineKnobs, at_least
from ._sslerror import ssl_failure
from .context import Context
from .errors import (
    ClosedError,
    ConfigError,
    ConfigTypeError,
    PipetlsError,
    TLSClosed,
    TLSError,
    TLSTimeout,
    WantAsync,
    WantRead,
    WantWrite,
)

__all__ = ["Connection"]

_UNSET: Any = object()
_DEFAULT_SHUTDOWN_WAIT = 2.0
_PAIR_BUFSIZE = 1 << 20

# A BIO given with bio=: an address, a ctypes pointer, or a (read, write) pair.
BioArg = Union[int, ctypes.c_void_p, "tuple[Union[int, ctypes.c_void_p], Union[int, ctypes.c_void_p]]"]

# --------------------------------------------------------------------------
# Alerts: SSL* address -> the list its info callback appends
# (sent, level, alert) to.  A Connection registers its SSL* when it makes it
# and removes it when it frees it; plain dict operations are atomic under
# the GIL.
# --------------------------------------------------------------------------
_alert_sinks: dict[int, list[tuple[bool, int, int]]] = {}


def _info_callback(ssl: int, where: int, ret: int) -> None:
    """SSL_set_info_callback: record alerts sent and received."""
    if where & _ffi.SSL_CB_ALERT:
        sink = _alert_sinks.get(ssl)
        if sink is not None:
            sink.append((bool(where & _ffi.SSL_CB_WRITE), (ret >> 8) & 0xFF, ret & 0xFF))


# One C callback for every connection (it only looks the SSL* up), created
# once and never freed, so OpenSSL can never call into a dead ctypes thunk.
_INFO_CB = _ffi.INFO_CB(_info_callback)


class _SharedPin:
    """pinned_buffer with a count of holders: released when the ``with``
    block and every :class:`_Keep` of it have ended (a paused write keeps
    the caller's buffer pinned after write() returned)."""

    __slots__ = ("_pin", "_holders", "_addr")

    def __init__(self, obj: object) -> None:
        self._pin = pinned_buffer(obj)
        self._holders = 0
        self._addr: tuple[int, int] = (0, 0)

    def acquire(self) -> None:
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._pin.__exit__(None, None, None)

    def __enter__(self) -> tuple[int, int]:
        self._addr = self._pin.__enter__()
        self._holders = 1
        return self._addr

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Keep:
    """One more holder of a _SharedPin, for an ExitStack."""

    __slots__ = ("_pin",)

    def __init__(self, pin: _SharedPin) -> None:
        self._pin = pin

    def __enter__(self) -> None:
        self._pin.acquire()

    def __exit__(self, *exc: object) -> None:
        self._pin.release()


class _Paused:
    """An SSL_read/SSL_write whose ASYNC job is paused (WantAsync): the
    job resumes with the buffer and the count it was started with, so both
    stay alive (and the buffer pinned) until it finishes or the SSL* is
    freed."""

    __slots__ = ("op", "obj", "pin", "addr", "length", "n", "call")

    def __init__(self, op: str, obj: object, pin: contextlib.ExitStack, addr: int,
                 length: int) -> None:
        self.op = op
        self.obj = obj
        self.pin = pin
        self.addr = addr
        self.length = length
        self.n = ctypes.c_size_t(0)
        self.call: Optional[Callable[[int, _Paused], int]] = None


def _free_ssl(ssl: int, keepalive: object = None) -> None:
    # ``keepalive`` (the Context's callbacks) is only held so that it
    # outlives the SSL*.  SSL_free also frees the BIOs attached with
    # SSL_set_fd / SSL_set_bio (a socket BIO does not close the fd).
    _alert_sinks.pop(ssl, None)
    _ffi.SSL_free(ssl)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _deprecated(old: str, new: str) -> None:
    warnings.warn("Connection.%s is deprecated: use %s" % (old, new), DeprecationWarning,
                  stacklevel=3)


def _retry_looks_at_two_buffers(version: int) -> bool:
    """Whether this libssl (OpenSSL_version_num()) has the pipelined write
    retry defect of docs/knobs.md, "Non-blocking writes on a socket": 1.1.1
    to 3.0.21 and 3.1 (3.0.22 has the upstream fix, 3.2 and later a new
    record layer without it; 3.0.21 is not served by Debian and was not
    checked, so it counts as affected)."""
    return version < 0x30000160 or 0x30100000 <= version < 0x30200000


_RETRY_LOOKS_AT_TWO_BUFFERS = _retry_looks_at_two_buffers(int(_ffi.OpenSSL_version_num()))


class Connection(PipelineKnobs):
    """One TLS connection.  See the module docstring for transports."""

    def __init__(self, context: Context, sock: Any = None, *, bio: Optional[BioArg] = None,
                 server_hostname: Optional[str] = None, timeout: Optional[float] = _UNSET) -> None:
        if not isinstance(context, Context):
            raise ConfigTypeError(
                "context must be a pipetls.Context, not %s" % type(context).__name__,
                knob="context",
            )
        if sock is not None and bio is not None:
            raise ConfigError("give a socket or a bio, not both", knob="bio")
        if sock is not None and not (hasattr(sock, "fileno") and hasattr(sock, "gettimeout")):
            raise ConfigTypeError(
                "sock must be a socket (with fileno() and gettimeout()), not %s"
                % type(sock).__name__, knob="sock")
        if sock is None and timeout is not _UNSET and timeout != 0:
            raise ConfigError("timeout applies to socket connections only; memory "
                              "connections are always non-blocking", knob="timeout")
        self._lock = threading.RLock()
        self._ssl: Optional[int] = None
        new = context._new_ssl()  # ClosedError if the context is closed
        ssl = new.ssl
        self._ssl = ssl
        self._context = context
        # finalize holds its arguments until it runs: the Context's callbacks
        # stay alive until after SSL_free.
        self._finalizer = weakref.finalize(self, _free_ssl, ssl, new.keepalive)
        self._alerts: list[tuple[bool, int, int]] = []
        _alert_sinks[ssl] = self._alerts
        _ffi.SSL_set_info_callback(ssl, _INFO_CB)
        self._knobs = new.knobs
        self.server_side = context.server
        self.server_hostname = server_hostname
        self._sock: Any = None
        self._fd: Optional[int] = None
        self._sock_timeout: Optional[float] = None
        self._rbio: Optional[int] = None
        self._wbio: Optional[int] = None
        self._transport = "memory" if sock is None and bio is None else ("socket" if bio is None else "bio")
        self._handshake_done = False
        self._failed = False
        self._shutdown_sent = False
        self._timeout: Optional[float] = None
        self._paused: Optional[_Paused] = None  # async_mode: see WantAsync
        try:
            # Everything that can fail comes before the transport is attached,
            # so that a constructor that raises leaves BIOs passed in with
            # ``bio=`` with their owner (the caller).  See "Ownership" above.
            if sock is None:
                self._timeout = 0.0  # memory and BIO connections never block
            if self.server_side:
                _ffi.SSL_set_accept_state(ssl)
            else:
                _ffi.SSL_set_connect_state(ssl)
                if server_hostname is not None:
                    self._set_hostname(ssl, server_hostname, context.check_hostname)
                elif context.check_hostname:
                    raise ConfigError(
                        "check_hostname is on: give server_hostname (or set "
                        "context.check_hostname = False)",
                        knob="server_hostname",
                    )
            if sock is not None:
                fd = sock.fileno()
                if fd < 0:
                    raise ClosedError("the socket is closed")
                sock_timeout = sock.gettimeout()
                t = self._check_timeout(sock_timeout if timeout is _UNSET else timeout)
                # SSL_set_fd makes a socket BIO (freed by SSL_free; it does
                # not close the fd).
                check(_ffi.SSL_set_fd(ssl, fd), "SSL_set_fd failed")
                self._sock = sock
                self._fd = fd
                self._sock_timeout = sock_timeout
                self._timeout = t
                sock.setblocking(False)  # OS-level non-blocking; we poll
            elif bio is not None:
                rbio, wbio = self._bio_pointers(bio)
                # From here on the SSL* owns the BIO(s) (one reference each;
                # one in all when rbio is wbio) and SSL_free frees them.
                # Nothing after this line can fail.
                _ffi.SSL_set_bio(ssl, rbio, wbio)
            else:
                rbio = check_ptr(_ffi.BIO_new(_ffi.BIO_s_mem()), "BIO_new failed")
                maybe_wbio = _ffi.BIO_new(_ffi.BIO_s_mem())
                if not maybe_wbio:
                    _ffi.BIO_free(rbio)  # not attached yet: ours to free
                wbio = check_ptr(maybe_wbio, "BIO_new failed")
                _ffi.SSL_set_bio(ssl, rbio, wbio)  # both now freed by SSL_free
                self._rbio, self._wbio = rbio, wbio
        except BaseException:
            self.close()  # frees the SSL* (and what SSL_set_* attached to it)
            raise

    @staticmethod
    def _bio_pointers(bio: Any) -> tuple[int, int]:
        """(rbio, wbio) as ints from ``bio=`` (a pointer, a ctypes c_void_p, or
        a pair of them); ConfigError / ConfigTypeError for anything else."""
        pair = bio if isinstance(bio, tuple) else (bio, bio)
        if len(pair) != 2:
            raise ConfigError("bio must be a BIO pointer or a (rbio, wbio) pair", knob="bio")
        out: list[int] = []
        for b in pair:
            if isinstance(b, ctypes.c_void_p):
                b = b.value
            if isinstance(b, bool) or not isinstance(b, (int, type(None))):
                raise ConfigTypeError(
                    "bio must be a BIO pointer (int or ctypes.c_void_p), not %s"
                    % type(b).__name__, knob="bio")
            if not b:
                raise ConfigError("bio must be a non-NULL BIO pointer", knob="bio")
            out.append(b)
        return out[0], out[1]

    @staticmethod
    def _set_hostname(ssl: int, name: str, check_name: bool) -> None:
        if not isinstance(name, str):
            raise ConfigTypeError("server_hostname must be a str", knob="server_hostname")
        ip = _is_ip(name)
        b = name.encode("idna") if not ip else name.encode("ascii")
        if not ip:  # SNI carries DNS names only (RFC 6066)
            check(_ffi.SSL_set_tlsext_host_name(ssl, b), "cannot set SNI %r" % name,
                  exc=ConfigError, knob="server_hostname")
        if check_name:
            if ip:
                check(_ffi.X509_VERIFY_PARAM_set1_ip_asc(_ffi.SSL_get0_param(ssl), b),
                      "bad IP address %r" % name, exc=ConfigError, knob="server_hostname")
            else:
                check(_ffi.SSL_set1_host(ssl, b), "bad host name %r" % name,
                      exc=ConfigError, knob="server_hostname")

    @staticmethod
    def _check_timeout(t: object) -> Optional[float]:
        if t is None:
            return None
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise ConfigTypeError("timeout must be None or a number of seconds", knob="timeout")
        if t < 0:
            raise ConfigError("timeout=%r is out of range: allowed None or >= 0" % t, knob="timeout")
        return float(t)

    # ---------------------------------------------------------------- pairs
    @classmethod
    def memory_pair(cls, server_ctx: Context, client_ctx: Context, *,
                    server_hostname: Optional[str] = None,
                    bufsize: int = _PAIR_BUFSIZE) -> tuple[Connection, Connection]:
        """Two connections joined in-process by a BIO pair of ``bufsize``
        bytes each way: returns ``(server, client)``.  Both are non-blocking
        (``WantRead``/``WantWrite``); drive them with handshake_pair()/pump()."""
        if not isinstance(bufsize, int) or isinstance(bufsize, bool) or bufsize < 1024:
            raise ConfigError("bufsize=%r is out of range: allowed >= 1024" % (bufsize,), knob="bufsize")
        b1, b2 = _ffi.BIO(), _ffi.BIO()
        check(_ffi.BIO_new_bio_pair(ctypes.byref(b1), bufsize, ctypes.byref(b2), bufsize),
              "BIO_new_bio_pair failed")
        # Each half is ours until the Connection made on it returns: a
        # Connection that raises has not taken its BIO (see __init__), one
        # that returned owns it and frees it through SSL_free on close().
        server: Optional[Connection] = None
        client: Optional[Connection] = None
        try:
            server = cls(server_ctx, bio=b1.value)
            client = cls(client_ctx, bio=b2.value, server_hostname=server_hostname)
        except BaseException:
            if server is None:
                _ffi.BIO_free(b1.value)
            else:
                server.close()
            _ffi.BIO_free(b2.value)
            raise
        assert server is not None and client is not None
        return server, client

    # ------------------------------------------------------------ life cycle
    @property
    def handle(self) -> int:
        """The ``SSL*`` as an int."""
        ssl = self._ssl
        if ssl is None:
            raise ClosedError("Connection is closed")
        return ssl

    def _knob_handle(self) -> int:
        return self.handle

    @property
    def closed(self) -> bool:
        return self._ssl is None

    @property
    def context(self) -> Context:
        return self._context

    @property
    def transport(self) -> str:
        """'socket', 'memory' (feed()/drain() work) or 'bio' (a BIO pair or
        BIOs of your own)."""
        return self._transport

    def close(self) -> None:
        """Free the SSL* (and its BIOs).  Does not send close_notify (see
        shutdown()) and does not close the socket."""
        with self._lock:
            if self._paused is not None and self._finalizer.alive:
                self._finish_paused()
            if self._ssl is None and not self._finalizer.alive:
                return
            self._ssl = None
            self._rbio = self._wbio = None
            self._finalizer()
            # only now: a paused job never runs again once its SSL* is freed
            paused, self._paused = self._paused, None
            if paused is not None:
                paused.pin.close()
            sock, self._sock = self._sock, None
            if sock is not None and sock.fileno() >= 0:
                try:
                    sock.settimeout(self._sock_timeout)
                except OSError:
                    pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: object) -> None:
        if exc_type is None and not self.closed:
            try:
                self.shutdown(timeout=0)
            except PipetlsError:
                pass
            except OSError:
                pass
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._ssl is None else "0x%x" % self._ssl
        return "<pipetls.Connection %s %s>" % ("server" if self.server_side else "client", state)

    # -------------------------------------------------------------- timeouts
    @property
    def timeout(self) -> Optional[float]:
        """None: block; 0: non-blocking; t > 0: seconds per operation."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        value = self._check_timeout(value)
        if self._fd is None and value != 0.0:
            raise ConfigError("timeout applies to socket connections only; memory "
                              "connections are always non-blocking", knob="timeout")
        self._timeout = value

    def settimeout(self, value: Optional[float]) -> None:
        self.timeout = value

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self.timeout = None if flag else 0.0

    def fileno(self) -> int:
        self.handle
        return self._fd if self._fd is not None else -1

    # ---------------------------------------------------------- the I/O loop
    def _wait(self, want: type[PipetlsError], deadline: Optional[float]) -> None:
        """Wait for the socket to be readable/writable (want is WantRead or
        WantWrite), or raise ``want`` (non-blocking) / TLSTimeout."""
        if self._fd is None or self._timeout == 0.0:
            raise want("TLS %s would block" % ("read" if want is WantRead else "write"))
        if deadline is None:
            remaining = None
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TLSTimeout("TLS operation timed out after %.3gs" % (self._timeout or 0))
        ev = select.POLLIN if want is WantRead else select.POLLOUT
        p = select.poll()
        assert self._fd is not None
        p.register(self._fd, ev | select.POLLERR | select.POLLHUP)
        if not p.poll(None if remaining is None else max(0, remaining) * 1000.0):
            raise TLSTimeout("TLS operation timed out after %.3gs" % (self._timeout or 0))

    def _run(self, call: Callable[[int], int], op: str) -> int:
        """Run ``call(ssl) -> ret`` until ret > 0, waiting per the timeout.
        Returns ret.  Maps every failure to an exception."""
        deadline = None
        while True:
            with self._lock:
                ssl = self.handle
                if self._failed:
                    raise TLSError("%s: the connection failed earlier and cannot be used" % op)
                del self._alerts[:]
                ctypes.set_errno(0)
                ret = call(ssl)
                if ret > 0:
                    return ret
                err = _ffi.SSL_get_error(ssl, ret)
                want: type[PipetlsError]
                if err == _ffi.SSL_ERROR_WANT_READ:
                    want = WantRead
                elif err == _ffi.SSL_ERROR_WANT_WRITE:
                    want = WantWrite
                elif err in (_ffi.SSL_ERROR_WANT_ASYNC, _ffi.SSL_ERROR_WANT_ASYNC_JOB):
                    want = WantAsync
                    fds = self.async_fds() if err == _ffi.SSL_ERROR_WANT_ASYNC else []
                else:
                    raise self._error(ssl, err, op)
            if deadline is None and self._timeout:
                deadline = time.monotonic() + self._timeout
            if want is WantAsync:
                self._wait_async(op, fds, deadline)
            else:
                self._wait(want, deadline)

    def async_fds(self) -> list[int]:
        """The fds a paused ASYNC job waits on (SSL_get_all_async_fds);
        readable when the job can be resumed.  Owned by OpenSSL/the engine:
        never read or close them."""
        ssl = self.handle
        num = ctypes.c_size_t(0)
        if not _ffi.SSL_get_all_async_fds(ssl, None, ctypes.byref(num)) or num.value == 0:
            return []
        fds = (ctypes.c_int * num.value)()
        if not _ffi.SSL_get_all_async_fds(ssl, fds, ctypes.byref(num)):
            return []
        return list(fds[: num.value])

    @property
    def paused_op(self) -> Optional[str]:
        """``"read"`` or ``"write"`` while that call's ASYNC job is paused
        (after WantAsync): call it again, with the same buffer, before any
        other read or write.  None otherwise."""
        return self._paused.op if self._paused is not None else None

    @property
    def waiting_for_async(self) -> bool:
        """A paused ASYNC job waits to be resumed (SSL_waiting_for_async)."""
        return bool(_ffi.SSL_waiting_for_async(self.handle))

    def _wait_async(self, op: str, fds: list[int], deadline: Optional[float]) -> None:
        """Blocking: wait until an async fd is readable; non-blocking:
        raise WantAsync(fds)."""
        if self._fd is None or self._timeout == 0.0:
            raise WantAsync("TLS %s: the ASYNC job is paused" % op, fds)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TLSTimeout("TLS operation timed out after %.3gs" % (self._timeout or 0))
        if not fds:  # no job to be had (SSL_ERROR_WANT_ASYNC_JOB): try again soon
            time.sleep(0.001)
            return
        p = select.poll()
        for fd in fds:
            p.register(fd, select.POLLIN)
        if not p.poll(None if remaining is None else max(0, remaining) * 1000.0):
            raise TLSTimeout("TLS operation timed out after %.3gs" % (self._timeout or 0))

    def _resume(self, op: str, obj: object) -> Optional[_Paused]:
        """The paused call of kind op, if any (obj: the buffer this call
        was given; a read must come back with the buffer it started with)."""
        paused = self._paused
        if paused is None:
            return None
        if paused.op != op:
            raise PipetlsError("a %s is waiting for its ASYNC job (WantAsync): call %s() "
                               "again before a %s" % (paused.op, paused.op, op))
        if op == "read" and obj is not None and obj is not paused.obj:
            raise ConfigError("readinto() after WantAsync needs the buffer it was first "
                              "given: the paused job writes into that one", knob="buffer")
        return paused

    def _finish_paused(self) -> None:
        """close() with a paused ASYNC job: OpenSSL frees a paused job
        only by running it to its end (SSL_free would leak it, its stack
        included), so wait for the lanes and resume it until the call is
        over, whatever its result.  Bounded: each round is one batch of the
        paused call, on lanes that always finish."""
        deadline = time.monotonic() + 10.0
        while self._paused is not None and time.monotonic() < deadline:
            paused = self._paused
            fds = self.async_fds()
            if fds:
                p = select.poll()
                for fd in fds:
                    p.register(fd, select.POLLIN)
                p.poll(max(0.0, deadline - time.monotonic()) * 1000.0)
            try:
                assert paused.call is not None
                self._run_paused(paused, paused.call)
            except WantAsync:
                continue
            except Exception:  # the call is over: its outcome no longer matters
                pass
            drain_errors()

    def _run_paused(self, paused: _Paused, call: Callable[[int, _Paused], int]) -> int:
        """Run call(ssl, paused) (an SSL_*_ex over paused.addr/length/n);
        on WantAsync keep ``paused`` for the retry, else let it go.
        Returns paused.n."""
        paused.call = call
        try:
            self._run(lambda ssl: call(ssl, paused), paused.op)
        except WantAsync:
            self._paused = paused
            raise
        except BaseException:
            if self._paused is paused:
                self._paused = None
            paused.pin.close()
            raise
        self._paused = None
        paused.pin.close()
        return paused.n.value

    def _error(self, ssl: int, err: int, op: str) -> Exception:
        """The exception for SSL_get_error() == err (error queue drained);
        marks the connection failed when OpenSSL says it is."""
        exc, fatal = ssl_failure(ssl, err, op, self._alerts)
        if fatal:
            self._failed = True
        return exc

    # ------------------------------------------------------------- handshake
    def do_handshake(self) -> None:
        """Complete the TLS handshake."""
        self._run(_ffi.SSL_do_handshake, "handshake")
        self._handshake_done = True

    @property
    def handshake_done(self) -> bool:
        if self._ssl is None:
            return self._handshake_done
        return bool(_ffi.SSL_is_init_finished(self._ssl))

    # ------------------------------------------------------------------ read
    def readinto(self, buffer: Any) -> int:
        """Decrypt up to len(buffer) bytes straight into ``buffer`` (any
        writable contiguous buffer); returns the count (0 only for an empty
        buffer).  Raises TLSClosed after the peer's close_notify."""
        paused = self._resume("read", buffer)
        if paused is None:
            pin = contextlib.ExitStack()
            addr, length = pin.enter_context(pinned_buffer(buffer, writable=True))
            if length == 0:
                pin.close()
                self.handle
                return 0
            paused = _Paused("read", buffer, pin, addr, length)
        return self._run_paused(paused, lambda ssl, p: _ffi.SSL_read_ex(
            ssl, p.addr, p.length, ctypes.byref(p.n)))

    def read(self, n: int = 16384) -> bytes:
        """Read up to ``n`` bytes (at least 1, unless n == 0)."""
        n = at_least("n", n, 0)
        paused = self._paused
        # after WantAsync: the paused job writes into the first call's buffer
        buf = paused.obj if paused is not None and paused.op == "read" else bytearray(n)
        assert isinstance(buf, bytearray)
        k = self.readinto(buf)
        del buf[k:]
        return bytes(buf)

    def recv(self, n: int = 16384) -> bytes:
        """Deprecated alias of :meth:`read`."""
        _deprecated("recv()", "read()")
        return self.read(n)

    def recv_into(self, buffer: Any) -> int:
        """Deprecated alias of :meth:`readinto`."""
        _deprecated("recv_into()", "readinto()")
        return self.readinto(buffer)

    @property
    def pending_plaintext(self) -> int:
        """Decrypted bytes buffered in OpenSSL, readable without I/O
        (SSL_pending; ``ssl.SSLObject.pending()``)."""
        return _ffi.SSL_pending(self.handle)

    @property
    def pending(self) -> int:
        """Deprecated: :attr:`pending_plaintext`."""
        _deprecated("pending", "Connection.pending_plaintext")
        return self.pending_plaintext

    # ----------------------------------------------------------------- write
    def _write_addr(self, addr: int, length: int, pin: Optional[_SharedPin] = None,
                    obj: object = None) -> int:
        if self._paused is not None:
            # the job paused in an earlier call resumes with that call's data
            return self._run_paused(self._resume("write", None) or self._paused,
                                    lambda ssl, p: _ffi.SSL_write_ex(
                                        ssl, p.addr, p.length, ctypes.byref(p.n)))
        if self._shutdown_sent:
            self.handle
            raise TLSClosed("write after shutdown()")
        pipes = self._knobs["max_pipelines"]
        split = self._knobs["split_send_fragment"]
        if (pipes > 1 and self._transport == "socket" and _RETRY_LOOKS_AT_TWO_BUFFERS
                and length <= (pipes - 1) * split):
            # libssl 1.1.1 to 3.0.21 keeps as many write buffers as its
            # widest batch so far and, when a write is retried, looks for
            # unsent bytes in the first and the last of them only (3.0.22
            # and 3.5 do not; docs/knobs.md, "Non-blocking writes"). A batch
            # of fewer records than that, cut short by a full socket, has
            # its retry encrypt a new batch over a half-sent record: the
            # peer gets half of one record and half of another
            # (bad_record_mac). So a write too short to fill every pipeline
            # goes record by record, each an SSL_write with max_pipelines 1
            # (only buffer 0 can then be pending), in the sizes libssl would
            # have apportioned; a long one fills all the pipelines.  BIO
            # transports (memory_pair()) keep the batch.
            return self._write_records(addr, length, pipes, split)
        # the pin (a reference to the caller's pinned buffer) goes with the
        # call: a WantAsync keeps it until the paused job is done
        own = contextlib.ExitStack()
        if pin is not None:
            own.enter_context(_Keep(pin))
        paused = _Paused("write", obj, own, addr, length)
        return self._run_paused(paused, lambda ssl, p: _ffi.SSL_write_ex(
            ssl, p.addr, p.length, ctypes.byref(p.n)))

    def _write_records(self, addr: int, length: int, pipes: int, split: int) -> int:
        """``length`` bytes as the ceil(length/split) records libssl would
        make of them (the first ``length % k`` one byte longer), one
        single-record SSL_write each; returns the bytes written (fewer
        when a later record would block: a partial write)."""
        k = min(pipes, (length - 1) // split + 1)
        base, rem = divmod(length, k)
        done = 0
        for i in range(k):
            size = base + (1 if i < rem else 0)
            n = ctypes.c_size_t(0)

            def call(ssl: int, at: int = addr + done, size: int = size,
                     n: ctypes.c_size_t = n) -> int:
                ahead = _ffi.SSL_get_read_ahead(ssl)
                _ffi.SSL_set_max_pipelines(ssl, 1)
                try:
                    return _ffi.SSL_write_ex(ssl, at, size, ctypes.byref(n))
                finally:
                    _ffi.SSL_set_max_pipelines(ssl, pipes)
                    _ffi.SSL_set_read_ahead(ssl, ahead)  # max_pipelines > 1 set it

            try:
                self._run(call, "write")
            except (WantRead, WantWrite):
                if done:
                    return done  # the caller retries from here, same sizes
                raise
            done += n.value
        return done

    def write(self, data: Any) -> int:
        """One SSL_write_ex of ``data`` (any contiguous bytes-like object,
        not copied).  Returns the bytes written: all of them on a blocking
        socket unless a record batch is cut short (partial writes are on, so
        a non-blocking sender makes progress); 0 for empty data (OpenSSL is
        not called).  Up to max_pipelines records are encrypted per batch;
        on a socket, a write too short to fill every pipeline goes as single
        records of the same sizes (see _write_addr)."""
        pin = _SharedPin(data)
        with pin as (addr, length):
            if length == 0:
                self.handle
                return 0
            return self._write_addr(addr, length, pin, data)

    def send(self, data: Any) -> int:
        """Deprecated alias of :meth:`write`."""
        _deprecated("send()", "write()")
        return self.write(data)

    def sendall(self, data: Any) -> int:
        """Write all of ``data``.  Non-blocking: raises WantWrite with
        ``.written`` set to the bytes already sent."""
        pin = _SharedPin(data)
        with pin as (addr, length):
            done = 0
            self.handle
            while done < length:
                try:
                    done += self._write_addr(addr + done, length - done, pin, data)
                except (WantRead, WantWrite, WantAsync) as e:
                    e.written = done  # type: ignore[union-attr]
                    raise
            return done

    # -------------------------------------------------------------- shutdown
    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Send close_notify and wait (bounded) for the peer's.

        Returns True when both close_notify alerts have been exchanged,
        False when the peer's did not arrive in time (``timeout`` seconds;
        default: the connection's timeout, at most 2 s; 0: do not wait) or
        the transport is memory (call again after feeding the peer's data).
        Writing afterwards raises TLSClosed.
        """
        if timeout is not None:
            timeout = self._check_timeout(timeout)
        with self._lock:
            ssl = self.handle
            if self._failed:
                # After a fatal error OpenSSL must not send close_notify.
                self._shutdown_sent = True
                return False
        wait = timeout
        if wait is None:
            wait = _DEFAULT_SHUTDOWN_WAIT if self._timeout is None else min(
                self._timeout, _DEFAULT_SHUTDOWN_WAIT)
        deadline = time.monotonic() + (wait or 0.0)
        sent_now = False
        want: type[PipetlsError]
        while True:
            with self._lock:
                ssl = self.handle
                ret = _ffi.SSL_shutdown(ssl)
                self._shutdown_sent = bool(_ffi.SSL_get_shutdown(ssl) & _ffi.SSL_SENT_SHUTDOWN)
                if ret == 1:
                    return True
                if ret == 0:
                    # close_notify sent: call again at once to take the peer's
                    # if it is already here (OpenSSL reads it on that call).
                    if not sent_now:
                        sent_now = True
                        continue
                    want = WantRead
                else:
                    err = _ffi.SSL_get_error(ssl, ret)
                    if err == _ffi.SSL_ERROR_WANT_READ:
                        want = WantRead
                    elif err == _ffi.SSL_ERROR_WANT_WRITE:
                        want = WantWrite
                    else:
                        # Peer gone, or application data instead of
                        # close_notify: shutdown is best effort.
                        drain_errors()
                        self._shutdown_sent = True
                        return False
            if self._fd is None:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            p = select.poll()
            p.register(self._fd, (select.POLLIN if want is WantRead else select.POLLOUT)
                       | select.POLLERR | select.POLLHUP)
            if not p.poll(remaining * 1000.0):
                return False

    def unwrap(self, timeout: Optional[float] = None) -> bool:
        """Deprecated alias of :meth:`shutdown` (``ssl.SSLSocket.unwrap``
        returns the socket; this returns shutdown()'s bool)."""
        _deprecated("unwrap()", "shutdown()")
        return self.shutdown(timeout)

    # ------------------------------------------------------------- memory IO
    def _memory_bios(self) -> tuple[int, int]:
        self.handle
        if self._rbio is None or self._wbio is None:
            raise PipetlsError("feed()/drain() need a memory Connection (no socket, no bio)")
        return self._rbio, self._wbio

    def feed(self, data: Any) -> int:
        """Memory connections: hand ``data`` (ciphertext from the peer) to
        OpenSSL.  Returns len(data)."""
        with self._lock:
            rbio, _ = self._memory_bios()
            with pinned_buffer(data) as (addr, length):
                done = 0
                while done < length:
                    chunk = min(length - done, 1 << 30)
                    n = _ffi.BIO_write(rbio, addr + done, chunk)
                    check(n, "BIO_write failed")
                    done += n
                return done

    def feed_eof(self) -> None:
        """Memory connections: the peer's transport has ended."""
        with self._lock:
            rbio, _ = self._memory_bios()
            _ffi.BIO_set_mem_eof_return(rbio, 0)

    @property
    def pending_out(self) -> int:
        """Memory connections: ciphertext waiting for drain()."""
        with self._lock:
            _, wbio = self._memory_bios()
            return _ffi.BIO_ctrl_pending(wbio)

    def drain(self, n: Optional[int] = None) -> bytes:
        """Memory connections: take up to ``n`` (default: all) bytes of
        ciphertext OpenSSL produced for the peer."""
        with self._lock:
            _, wbio = self._memory_bios()
            avail = _ffi.BIO_ctrl_pending(wbio)
            if n is not None:
                avail = min(avail, at_least("n", n, 0))
            if avail == 0:
                return b""
            buf = ctypes.create_string_buffer(avail)
            got = _ffi.BIO_read(wbio, buf, avail)
            if got <= 0:
                drain_errors()
                return b""
            return buf.raw[:got]

    # ------------------------------------------------------------ properties
    @property
    def tls_version(self) -> Optional[str]:
        """Negotiated protocol ('TLSv1.2', 'TLSv1.3'), None before the
        handshake (``ssl.SSLObject.version()``)."""
        ssl = self.handle
        if not _ffi.SSL_is_init_finished(ssl):
            return None
        v = _ffi.SSL_get_version(ssl)
        return v.decode() if v else None

    @property
    def cipher_name(self) -> Optional[str]:
        """Negotiated cipher suite, OpenSSL's name (``ssl.SSLObject.cipher()[0]``),
        None before the handshake."""
        c = _ffi.SSL_get_current_cipher(self.handle)
        if not c:
            return None
        name = _ffi.SSL_CIPHER_get_name(c)
        return name.decode() if name else None

    def getpeercert(self, binary_form: bool = False) -> Optional[bytes]:
        """The peer's certificate as DER bytes (``binary_form=True``, as
        ``ssl.SSLObject.getpeercert(True)``), or None when the peer sent none.

        The decoded-dict form of the stdlib is not offered: parse the DER
        (e.g. with ``cryptography.x509.load_der_x509_certificate``)."""
        if not binary_form:
            raise ConfigError("pipetls returns the certificate as DER only: "
                              "getpeercert(binary_form=True)", knob="binary_form")
        x = _ffi.SSL_get1_peer_certificate(self.handle)
        if not x:
            return None
        try:
            n = check(_ffi.i2d_X509(x, None), "i2d_X509 failed")
            buf = (ctypes.c_ubyte * n)()
            p = ctypes.cast(buf, ctypes.POINTER(ctypes.c_ubyte))
            check(_ffi.i2d_X509(x, ctypes.byref(p)), "i2d_X509 failed")
            return bytes(buf)
        finally:
            _ffi.X509_free(x)

    def selected_alpn_protocol(self) -> Optional[str]:
        """The ALPN protocol agreed on, or None (``ssl.SSLObject``'s name)."""
        data = ctypes.c_void_p()
        n = ctypes.c_uint(0)
        _ffi.SSL_get0_alpn_selected(self.handle, ctypes.byref(data), ctypes.byref(n))
        if not data.value or not n.value:
            return None
        return ctypes.string_at(data.value, n.value).decode("ascii", "replace")

    @property
    def session_reused(self) -> bool:
        return bool(_ffi.SSL_session_reused(self.handle))

    @property
    def verify_result(self) -> int:
        """SSL_get_verify_result: 0 (X509_V_OK) when the peer verified."""
        return _ffi.SSL_get_verify_result(self.handle)

    # ---- deprecated names (one release) ------------------------------------
    @property
    def version(self) -> Optional[str]:
        """Deprecated: :attr:`tls_version`."""
        _deprecated("version", "Connection.tls_version")
        return self.tls_version

    @property
    def cipher(self) -> Optional[str]:
        """Deprecated: :attr:`cipher_name`."""
        _deprecated("cipher", "Connection.cipher_name")
        return self.cipher_name

    @property
    def peer_certificate(self) -> Optional[bytes]:
        """Deprecated: ``getpeercert(binary_form=True)``."""
        _deprecated("peer_certificate", "Connection.getpeercert(binary_form=True)")
        return self.getpeercert(binary_form=True)

    @property
    def alpn_protocol(self) -> Optional[str]:
        """Deprecated: :meth:`selected_alpn_protocol`."""
        _deprecated("alpn_protocol", "Connection.selected_alpn_protocol()")
        return self.selected_alpn_protocol()

    # ------------------------------------------------------------ pipelining
    def _knob_ctrl(self, cmd: int, value: int) -> int:
        with self._lock:
            return _ffi.SSL_ctrl(self.handle, cmd, value, None)

    def _knob_set_read_buffer_len(self, n: int) -> None:
        # Takes effect when the read buffer is allocated (the first read,
        # i.e. the handshake): set it before do_handshake().
        with self._lock:
            _ffi.SSL_set_default_read_buffer_len(self.handle, n)

    def _knob_get_read_ahead(self) -> bool:
        return bool(_ffi.SSL_get_read_ahead(self.handle))

    def _knob_set_read_ahead(self, yes: bool) -> None:
        with self._lock:
            _ffi.SSL_set_read_ahead(self.handle, 1 if yes else 0)
