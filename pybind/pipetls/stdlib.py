"""Make Python's own ``ssl`` module pipeline: :func:`enable_pipelining`.

Python's ``ssl`` and pipetls share one libssl/libcrypto (invariant 7), so the
knobs can be set on the ``SSL_CTX`` behind an ``ssl.SSLContext`` and the
engine, once registered, serves its record ciphers.  Everything here is
process-wide in effect: registering the engine changes the cipher
implementation for every user of those ciphers in the process.

Finding the ``SSL_CTX*``: CPython's ``PySSLContext`` is
``{PyObject_HEAD; SSL_CTX *ctx; ...}``, so the pointer sits right after the
object header, at ``id(ctx) + object.__basicsize__``.  That address is only
a candidate until proven: an option bit is flipped through Python
(``ctx.options``) and read back through ``SSL_CTX_get_options`` on the
candidate, both ways, then restored.  Anything unexpected -- another Python
implementation, a different libssl behind ``_ssl``, a failed proof -- is a
clear :class:`StdlibError`, never a guess.

What a Python ``ssl`` connection pipelines is what OpenSSL pipelines: TLS 1.2
(set ``maximum_version = ssl.TLSVersion.TLSv1_2``) with the engine's ciphers
(AES-GCM, ChaCha20-Poly1305, AES-CBC).  Connections created before
enable_pipelining() keep the old settings (SSL_new copies them).
"""

from __future__ import annotations

import ctypes
import platform

from . import _ffi
from ._knobs import default_read_buffer_for, in_range
from .errors import ConfigError, StdlibError, check

__all__ = ["enable_pipelining", "ssl_ctx_pointer", "StdlibPipelining"]

# A harmless option to flip for the proof: session tickets, only consulted
# during handshakes (and the proof restores it at once).
_PROOF_BIT = _ffi.SSL_OP_NO_TICKET


class NotAnSSLContext(StdlibError, TypeError):
    """enable_pipelining() was given something that is not an ssl.SSLContext."""


class StdlibPipelining:
    """What enable_pipelining() applied (returned for inspection)."""

    __slots__ = ("engine", "ssl_ctx", "max_pipelines", "split_send_fragment", "read_buffer_len")

    def __init__(self, engine, ssl_ctx, max_pipelines, split_send_fragment, read_buffer_len):
        self.engine = engine
        self.ssl_ctx = ssl_ctx
        self.max_pipelines = max_pipelines
        self.split_send_fragment = split_send_fragment
        self.read_buffer_len = read_buffer_len

    def __repr__(self):
        return ("<StdlibPipelining SSL_CTX=0x%x max_pipelines=%d split_send_fragment=%s "
                "read_buffer_len=%d>" % (self.ssl_ctx, self.max_pipelines,
                                         self.split_send_fragment, self.read_buffer_len))


def _read_candidate_pointer(ssl_context):
    """The word right after the PyObject header of ``ssl_context``."""
    return ctypes.c_void_p.from_address(id(ssl_context) + object.__basicsize__).value


def _prove(ssl_context, candidate):
    """True if ``candidate`` is the SSL_CTX* of ``ssl_context``: an option
    flipped through Python is seen through SSL_CTX_get_options, both ways."""
    original = ssl_context.options
    try:
        for value in (original ^ _PROOF_BIT, original):
            ssl_context.options = value
            seen = _ffi.SSL_CTX_get_options(candidate)
            if seen != int(ssl_context.options):
                return False
            if bool(seen & _PROOF_BIT) != bool(value & _PROOF_BIT):
                return False
        return True
    finally:
        ssl_context.options = original


def ssl_ctx_pointer(ssl_context):
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


def enable_pipelining(ssl_context, max_pipelines=8, split_send_fragment=None,
                      read_buffer_len=None, engine=None):
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

    from .engine import Engine, load_engine

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
