"""Make Python's own ``ssl`` module pipeline: :func:`enable_pipelining`.

Python's ``ssl`` and pipetls share one libssl/libcrypto (invariant 7), so the
knobs can be set on the ``SSL_CTX`` behind an ``ssl.SSLContext`` and the
engine, once registered, serves its record ciphers.  Everything here is
process-wide in effect: registering the engine changes the cipher
implementation for every user of those ciphers in the process.

Finding the ``SSL_CTX*``: CPython's ``PySSLContext`` is
``{PyObject_HEAD; SSL_CTX *ctx; ...}``, so the pointer sits right after the
object header, at ``id(ctx) + object.__basicsize__``.  That address is only
a candidate until proven, and nothing here dereferences an unproven pointer:

* memory is read through ``/proc/self/mem`` (:func:`_read_memory`), where an
  address that is not mapped is an ``OSError``, never a fault;
* the offset of ``options`` inside an ``SSL_CTX`` is measured on one made
  here (``SSL_CTX_get_options`` against the bytes of our own ``SSL_CTX``);
* the proof: an option bit is flipped through Python (``ctx.options``, which
  is the documented route to the real ``SSL_CTX``) and the candidate's
  ``options`` word, read through ``/proc/self/mem``, must follow it both
  ways; then it is restored.

Only a proven pointer is handed to OpenSSL.  Anything unexpected -- another
Python implementation, no ``/proc``, a different libssl behind ``_ssl``, a
different object layout, a failed proof -- is a clear :class:`StdlibError`,
never a guess and never a crash.

What a Python ``ssl`` connection pipelines is what OpenSSL pipelines: TLS 1.2
(set ``maximum_version = ssl.TLSVersion.TLSv1_2``) with the engine's ciphers
(AES-GCM, ChaCha20-Poly1305, AES-CBC).  Connections created before
enable_pipelining() keep the old settings (SSL_new copies them).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from typing import Any, Optional

from . import _ffi
from ._knobs import default_read_buffer_for, in_range
from ._ffi import check
from .engine import Engine, load_engine
from .errors import ConfigError, StdlibError

__all__ = ["enable_pipelining", "ssl_ctx_pointer", "StdlibPipelining"]

# A harmless option to flip for the proof: session tickets, only consulted
# during handshakes (and the proof restores it at once).
_PROOF_BIT = _ffi.SSL_OP_NO_TICKET


class NotAnSSLContext(StdlibError, TypeError):
    """enable_pipelining() was given something that is not an ssl.SSLContext."""


class StdlibPipelining:
    """What enable_pipelining() applied (returned for inspection)."""

    __slots__ = ("engine", "ssl_ctx", "max_pipelines", "split_send_fragment", "read_buffer_len")

    def __init__(self, engine: Engine, ssl_ctx: int, max_pipelines: int,
                 split_send_fragment: Optional[int], read_buffer_len: int) -> None:
        self.engine = engine
        self.ssl_ctx = ssl_ctx
        self.max_pipelines = max_pipelines
        self.split_send_fragment = split_send_fragment
        self.read_buffer_len = read_buffer_len

    def __repr__(self) -> str:
        return ("<StdlibPipelining SSL_CTX=0x%x max_pipelines=%d split_send_fragment=%s "
                "read_buffer_len=%d>" % (self.ssl_ctx, self.max_pipelines,
                                         self.split_send_fragment, self.read_buffer_len))


_U64 = struct.Struct("=Q")
_PTR = struct.Struct("@P")  # native pointer


def _read_memory(address: int, size: int) -> Optional[bytes]:
    """``size`` bytes of this process's memory at ``address``, or None when
    any of it is not mapped.  Through /proc/self/mem: the kernel answers an
    unmapped address with EIO, so a wrong guess cannot crash the process."""
    if not isinstance(address, int) or address <= 0 or address % 8:
        return None
    try:
        fd = os.open("/proc/self/mem", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise StdlibError("cannot validate the SSL_CTX of an ssl.SSLContext without "
                          "/proc/self/mem (%s); refusing to guess" % exc) from None
    try:
        data = os.pread(fd, size, address)
    except (OSError, OverflowError):
        return None
    finally:
        os.close(fd)
    return data if len(data) == size else None


def _read_u64(address: int) -> Optional[int]:
    data = _read_memory(address, 8)
    return None if data is None else int(_U64.unpack(data)[0])


_options_offset_cache: list[int] = []


def _options_offset() -> int:
    """Offset of ``options`` in an SSL_CTX of the loaded libssl, measured on
    an SSL_CTX made here: the one 8-byte word that equals
    SSL_CTX_get_options() under three different option sets."""
    if _options_offset_cache:
        return _options_offset_cache[0]
    ctx = _ffi.SSL_CTX_new(_ffi.TLS_method())
    if not ctx:
        _ffi.ERR_clear_error()
        raise StdlibError("SSL_CTX_new failed while measuring the SSL_CTX layout")
    try:
        window = 4096
        found: Optional[set[int]] = None
        for bits in (0, _ffi.SSL_OP_NO_TICKET | _ffi.SSL_OP_NO_COMPRESSION,
                     _ffi.SSL_OP_NO_RENEGOTIATION | _ffi.SSL_OP_ENABLE_KTLS):
            _ffi.SSL_CTX_clear_options(ctx, _PROBE_BITS)
            _ffi.SSL_CTX_set_options(ctx, bits)
            want = _ffi.SSL_CTX_get_options(ctx)
            data = b""
            while window >= 64 and not data:  # our SSL_CTX may end near a page end
                data = _read_memory(ctx, window) or b""
                if not data:
                    window //= 2
            offsets = {o for o in range(0, len(data) - 7, 8)
                       if _U64.unpack_from(data, o)[0] == want}
            found = offsets if found is None else found & offsets
    finally:
        _ffi.SSL_CTX_free(ctx)
    if not found or len(found) != 1:
        raise StdlibError("cannot locate the options field of this libssl's SSL_CTX "
                          "(%d candidates); refusing to guess" % len(found or ()))
    _options_offset_cache.append(found.pop())
    return _options_offset_cache[0]


# The option bits _options_offset() plays with on its own SSL_CTX.
_PROBE_BITS = (_ffi.SSL_OP_NO_TICKET | _ffi.SSL_OP_NO_COMPRESSION
               | _ffi.SSL_OP_NO_RENEGOTIATION | _ffi.SSL_OP_ENABLE_KTLS)


def _read_candidate_pointer(ssl_context: Any) -> Optional[int]:
    """The word right after the PyObject header of ``ssl_context`` (read
    through /proc/self/mem, inside the object), or None."""
    data = _read_memory(id(ssl_context) + object.__basicsize__, _PTR.size)
    return None if data is None else int(_PTR.unpack(data)[0])


def _prove(ssl_context: Any, candidate: int) -> bool:
    """True if ``candidate`` is the SSL_CTX* of ``ssl_context``: an option
    flipped through Python is seen in the candidate's options word, both
    ways.  The candidate is only read through /proc/self/mem."""
    offset = _options_offset()
    original = ssl_context.options
    try:
        for value in (original ^ _PROOF_BIT, original):
            ssl_context.options = value
            seen = _read_u64(candidate + offset)
            if seen is None or seen != int(ssl_context.options):
                return False
            if bool(seen & _PROOF_BIT) != bool(value & _PROOF_BIT):
                return False
        return True
    finally:
        ssl_context.options = original


def ssl_ctx_pointer(ssl_context: Any) -> int:
    """The ``SSL_CTX*`` behind a Python ``ssl.SSLContext``, proven."""
    import ssl  # not at import time: pipetls alone does not load _ssl

    if not isinstance(ssl_context, ssl.SSLContext):
        raise NotAnSSLContext(
            "enable_pipelining needs an ssl.SSLContext, not %s" % type(ssl_context).__name__)
    if platform.python_implementation() != "CPython":
        raise StdlibError("finding the SSL_CTX of an ssl.SSLContext needs CPython, not %s"
                          % platform.python_implementation())
    if not _ffi.stdlib_shares_openssl():
        raise StdlibError(
            "Python's ssl module uses a different libssl/libcrypto than pipetls (%s); "
            "pipelining it would mix two OpenSSLs in one process (invariant 7)"
            % _ffi.LIBSSL_PATH)
    if type(ssl_context).__basicsize__ < object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p):
        raise StdlibError("unexpected ssl.SSLContext layout (basicsize %d)"
                          % type(ssl_context).__basicsize__)
    candidate = _read_candidate_pointer(ssl_context)
    if not candidate:
        raise StdlibError("the ssl.SSLContext has no SSL_CTX")
    if not _prove(ssl_context, candidate):
        raise StdlibError(
            "could not prove that 0x%x is the SSL_CTX of %r (an option flipped through "
            "Python was not seen by OpenSSL); refusing to touch it" % (candidate, ssl_context))
    return candidate


def enable_pipelining(ssl_context: Any, max_pipelines: int = 8,
                      split_send_fragment: Optional[int] = None,
                      read_buffer_len: Optional[int] = None,
                      engine: Optional[Engine] = None) -> StdlibPipelining:
    """Make connections from ``ssl_context`` (a Python ``ssl.SSLContext``)
    pipeline their TLS records through the pipetls engine.

    Sets max_pipelines (1..32; also read_ahead), split_send_fragment
    (512..16384, default: OpenSSL's, i.e. max_send_fragment) and the
    default read buffer (default: room for ``max_pipelines`` records), and
    loads + registers the shared engine (:func:`pipetls.load_engine`) unless
    ``engine`` is given (it is registered if it is not yet).  Process-wide:
    the engine then serves those ciphers for everyone in the process.

    Returns a :class:`StdlibPipelining` describing what was applied.
    Raises StdlibError (NotAnSSLContext for a wrong type) when it cannot be
    sure which SSL_CTX it would touch; ConfigError for bad knobs.
    """
    max_pipelines = in_range("max_pipelines", max_pipelines, 1, _ffi.SSL_MAX_PIPELINES)
    if split_send_fragment is not None:
        split_send_fragment = in_range("split_send_fragment", split_send_fragment,
                                       _ffi.SSL_MIN_SEND_FRAGMENT, _ffi.SSL3_RT_MAX_PLAIN_LENGTH,
                                       "max_send_fragment (16384)")
    if read_buffer_len is None:
        read_buffer_len = default_read_buffer_for(max_pipelines)
    else:
        read_buffer_len = in_range("default_read_buffer_len", read_buffer_len, 0, 1 << 30, "2**30")
    ctx = ssl_ctx_pointer(ssl_context)

    if engine is None:
        engine = load_engine(register=True)
    elif not isinstance(engine, Engine):
        raise StdlibError("engine must be a pipetls.Engine, not %s" % type(engine).__name__)
    elif not engine.registered:
        engine.register_default()

    check(_ffi.SSL_CTX_set_max_pipelines(ctx, max_pipelines),
          "OpenSSL refused max_pipelines=%d" % max_pipelines, exc=ConfigError, knob="max_pipelines")
    if split_send_fragment is not None:
        check(_ffi.SSL_CTX_set_split_send_fragment(ctx, split_send_fragment),
              "OpenSSL refused split_send_fragment=%d (above max_send_fragment?)"
              % split_send_fragment, exc=ConfigError, knob="split_send_fragment")
    if max_pipelines > 1:
        _ffi.SSL_CTX_set_read_ahead(ctx, 1)
    _ffi.SSL_CTX_set_default_read_buffer_len(ctx, read_buffer_len)
    # The engine must outlive the context's connections: keep it on the
    # Python object (SSLContext instances have a __dict__).
    try:
        ssl_context._pipetls_engine = engine
    except AttributeError:
        pass
    return StdlibPipelining(engine, ctx, max_pipelines, split_send_fragment, read_buffer_len)
