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

TLS 1.3 (the patched OpenSSL 3.5, patch 0002; Python started with
``LD_LIBRARY_PATH=<prefix>/lib`` so that ``_ssl`` itself runs on it): libssl
fetches an ``SSL_CTX``'s record ciphers once, when ``ssl.SSLContext()``
makes it, with the process's default property query.  So
:func:`prefer_provider` must come *before* the ``ssl.SSLContext``: it loads
the pipetls provider and adds ``?provider=pipetls`` to the default
properties (``EVP_set_default_properties``: process-wide, every later fetch
of AES-GCM or ChaCha20-Poly1305 prefers the provider, which answers exactly
as the default provider outside a pipeline); then ``enable_pipelining(ctx)``
sets the knobs and leaves the engine out (a registered ENGINE would take
TLS 1.3 from the provider).  An openssl.cnf with ``default_properties =
?provider=pipetls`` (``pipetls config --provider``) does the same for the
whole process.  A context made before the preference keeps the default
provider's ciphers; ``enable_pipelining(..., provider=True)`` refuses it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import struct
import threading
import weakref
from typing import Any, Optional, Union

from . import _ffi
from ._knobs import default_read_buffer_for, in_range
from ._ffi import check
from .engine import Engine, load_engine
from .errors import ConfigError, ConfigTypeError, ProviderError, StdlibError
from .provider import Provider

__all__ = ["enable_pipelining", "ssl_ctx_pointer", "StdlibPipelining", "prefer_provider",
           "provider_preferred"]

# A harmless option to flip for the proof: session tickets, only consulted
# during handshakes (and the proof restores it at once).
_PROOF_BIT = _ffi.SSL_OP_NO_TICKET


class NotAnSSLContext(StdlibError, TypeError):
    """enable_pipelining() was given something that is not an ssl.SSLContext."""


class StdlibPipelining:
    """What enable_pipelining() applied (returned for inspection)."""

    __slots__ = ("engine", "provider", "ssl_ctx", "max_pipelines", "split_send_fragment",
                 "read_buffer_len")

    def __init__(self, engine: Optional[Engine], ssl_ctx: int, max_pipelines: int,
                 split_send_fragment: Optional[int], read_buffer_len: int,
                 provider: Optional[Provider] = None) -> None:
        self.engine = engine  # None on the provider path
        self.provider = provider
        self.ssl_ctx = ssl_ctx
        self.max_pipelines = max_pipelines
        self.split_send_fragment = split_send_fragment
        self.read_buffer_len = read_buffer_len

    def __repr__(self) -> str:
        return ("<StdlibPipelining SSL_CTX=0x%x %s max_pipelines=%d split_send_fragment=%s "
                "read_buffer_len=%d>" % (self.ssl_ctx, "provider" if self.provider else "engine",
                                         self.max_pipelines, self.split_send_fragment,
                                         self.read_buffer_len))


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


# ----------------------------------------------------------- TLS 1.3: provider
_pref_lock = threading.Lock()
_preferred: list[Provider] = []  # the provider prefer_provider() set up, once
# ssl.SSLContext objects that existed when the preference was set: their
# SSL_CTX fetched its ciphers before it
_made_before: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _default_properties() -> str:
    ptr = _ffi.EVP_get1_default_properties(None)
    if not ptr:
        _ffi.ERR_clear_error()
        return ""
    try:
        return (ctypes.string_at(ptr) or b"").decode("ascii", "replace")
    finally:
        _ffi.CRYPTO_free(ptr, None, 0)


def provider_preferred() -> bool:
    """Whether the process's default property query prefers the pipetls
    provider (prefer_provider(), or ``default_properties`` in openssl.cnf)
    and a pipetls provider is loaded: ``ssl.SSLContext`` objects made since
    then get its ciphers."""
    if (_ffi.OpenSSL_version_num() < _ffi.OPENSSL_3_5
            or not _ffi.has_symbol("EVP_get1_default_properties")):
        return False
    from .provider import shared_provider

    shared = shared_provider()
    loaded = (shared is not None and not shared.closed) or \
        bool(_ffi.OSSL_PROVIDER_available(None, b"pipetls"))
    return loaded and "provider=pipetls" in _default_properties().replace(" ", "")


def _check_provider_possible() -> None:
    """Raise, naming what is missing, unless Python's ssl can pipeline TLS
    1.3 through the pipetls provider here."""
    from .paths import engine_registered_for, probe

    if not _ffi.stdlib_shares_openssl():
        raise StdlibError(
            "Python's ssl module uses a different libssl/libcrypto than pipetls (%s); for "
            "TLS 1.3 through the provider start Python with LD_LIBRARY_PATH=<prefix of the "
            "patched OpenSSL>/lib (and without PIPETLS_OPENSSL) so that both use it"
            % _ffi.LIBSSL_PATH)
    try:
        found = probe("1.3")
    except ProviderError as exc:
        raise ProviderError(
            "TLS 1.3 through the pipetls provider needs OpenSSL >= 3.5 "
            "with patch 0002 (openssl_patches/, 'pipetls build-openssl') under Python's ssl "
            "and pipetls-provider.so built against it: %s" % exc) from None
    if engine_registered_for("AES-128-GCM"):
        raise StdlibError("an ENGINE is registered for AES-128-GCM; libssl "
                          "would use it before any provider (unregister it first)")
    if not found.pipelined:
        raise ProviderError("TLS 1.3 through the pipetls provider: %s" % found.reason)


def prefer_provider() -> Provider:
    """Make every ``ssl.SSLContext`` created from now on pipeline TLS 1.3
    through the pipetls provider (the patched OpenSSL 3.5): loads the shared
    provider (:func:`pipetls.load_provider`, the default provider kept) and
    adds ``?provider=pipetls`` to the process's default property query.
    Call it before creating the contexts, then :func:`enable_pipelining`.

    ProviderError where this libssl does not pipeline TLS 1.3 through the
    provider (OpenSSL 3.0, stock 3.5, no provider module), naming what is
    missing; StdlibError when Python's ssl does not share pipetls's OpenSSL
    or an ENGINE is registered for those ciphers (it would take them)."""
    from .provider import load_provider

    _check_provider_possible()
    import ssl

    with _pref_lock:
        p = load_provider()
        props = _default_properties()
        if "provider=pipetls" not in props.replace(" ", ""):
            new = (props + "," if props else "") + "?provider=pipetls"
            check(_ffi.EVP_set_default_properties(None, new.encode()),
                  "EVP_set_default_properties(%r) failed" % new, exc=StdlibError)
            # the contexts that exist now fetched their ciphers without it
            for obj in gc.get_objects():
                if isinstance(obj, ssl.SSLContext):
                    _made_before.add(obj)
        if not _preferred:
            _preferred.append(p)
        return p


def enable_pipelining(ssl_context: Any, max_pipelines: int = 8,
                      split_send_fragment: Optional[int] = None,
                      read_buffer_len: Optional[int] = None,
                      engine: Optional[Engine] = None,
                      provider: Union[bool, str] = "auto") -> StdlibPipelining:
    """Make connections from ``ssl_context`` (a Python ``ssl.SSLContext``)
    pipeline their TLS records through the pipetls engine.

    Sets max_pipelines (1..32; also read_ahead), split_send_fragment
    (512..16384, default: OpenSSL's, i.e. max_send_fragment) and the
    default read buffer (default: room for ``max_pipelines`` records), and
    loads + registers the shared engine (:func:`pipetls.load_engine`) unless
    ``engine`` is given (it is registered if it is not yet).  Process-wide:
    the engine then serves those ciphers for everyone in the process.

    ``provider`` (default ``"auto"``): TLS 1.3 through the pipetls
    provider instead of the engine when the context prefers the provider's
    ciphers (made after :func:`prefer_provider`, or with openssl.cnf's
    ``default_properties = ?provider=pipetls``): the engine is then not
    loaded (it would take TLS 1.3 from the provider).  ``True``: required,
    StdlibError (or ProviderError on a libssl that cannot) otherwise;
    ``False``: the engine, as before.

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
    if provider is not True and provider is not False and provider != "auto":
        raise ConfigTypeError("provider must be True, False or 'auto', not %r" % (provider,),
                              knob="provider")
    ctx = ssl_ctx_pointer(ssl_context)

    use = _provider_for(ssl_context, provider, engine)
    if use is not None:
        _apply_knobs(ctx, max_pipelines, split_send_fragment, read_buffer_len)
        try:
            ssl_context._pipetls_provider = use
        except AttributeError:
            pass
        return StdlibPipelining(None, ctx, max_pipelines, split_send_fragment,
                                read_buffer_len, provider=use)

    if engine is None:
        engine = load_engine(register=True)
    elif not isinstance(engine, Engine):
        raise StdlibError("engine must be a pipetls.Engine, not %s" % type(engine).__name__)
    elif not engine.registered:
        engine.register_default()

    _apply_knobs(ctx, max_pipelines, split_send_fragment, read_buffer_len)
    # The engine must outlive the context's connections: keep it on the
    # Python object (SSLContext instances have a __dict__).
    try:
        ssl_context._pipetls_engine = engine
    except AttributeError:
        pass
    return StdlibPipelining(engine, ctx, max_pipelines, split_send_fragment, read_buffer_len)


def _apply_knobs(ctx: int, max_pipelines: int, split_send_fragment: Optional[int],
                 read_buffer_len: int) -> None:
    check(_ffi.SSL_CTX_set_max_pipelines(ctx, max_pipelines),
          "OpenSSL refused max_pipelines=%d" % max_pipelines, exc=ConfigError, knob="max_pipelines")
    if split_send_fragment is not None:
        check(_ffi.SSL_CTX_set_split_send_fragment(ctx, split_send_fragment),
              "OpenSSL refused split_send_fragment=%d (above max_send_fragment?)"
              % split_send_fragment, exc=ConfigError, knob="split_send_fragment")
    if max_pipelines > 1:
        _ffi.SSL_CTX_set_read_ahead(ctx, 1)
    _ffi.SSL_CTX_set_default_read_buffer_len(ctx, read_buffer_len)


def _provider_for(ssl_context: Any, provider: Union[bool, str],
                  engine: Optional[Engine]) -> Optional[Provider]:
    """The provider ``ssl_context`` pipelines through, or None: the engine."""
    from .provider import shared_provider

    if provider is False:
        return None
    preferred = provider_preferred() and ssl_context not in _made_before
    if provider == "auto":
        if engine is not None or not preferred:
            return None
    else:  # True
        if engine is not None:
            raise StdlibError("enable_pipelining(provider=True, engine=...): a registered "
                              "ENGINE would take TLS 1.3 from the provider; give one of them")
        if not preferred:
            if ssl_context in _made_before:
                raise StdlibError(
                    "enable_pipelining(provider=True): this ssl.SSLContext was made before "
                    "prefer_provider(), so its TLS 1.3 ciphers are the default provider's; "
                    "make it after pipetls.stdlib.prefer_provider()")
            _check_provider_possible()  # raises, naming what is missing, where it cannot
            raise StdlibError(
                "enable_pipelining(provider=True): this ssl.SSLContext was made before the "
                "provider was preferred; call pipetls.stdlib.prefer_provider() before "
                "creating it")
    p = _preferred[0] if _preferred else shared_provider()
    if p is None or p.closed:
        from .provider import load_provider

        p = load_provider()  # openssl.cnf loaded it by name: this one carries the stats
    return p
