"""Loading and asking the pipetls *provider* (``pipetls-provider.so``).

The provider is the engine's successor for OpenSSL >= 3.5: the same lanes,
statistics and record code behind OpenSSL's cipher pipeline API
(``EVP_CipherPipeline*``).  Its algorithms (AES-128-GCM, AES-256-GCM,
ChaCha20-Poly1305) carry the property ``provider=pipetls``; loading it
changes nothing for code that fetches without that property.

It needs a libcrypto >= 3.5 in the process, which for a Python program
means ``PIPETLS_OPENSSL=<prefix>`` (see :mod:`pipetls._libload`; invariant
7: such an OpenSSL runs in a process of its own).  On 3.0 :class:`Provider`
raises :class:`~pipetls.errors.ProviderError` saying so, before touching
OpenSSL.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Optional, Union

from . import _ffi
from ._ffi import OSSL_PARAM, check_ptr, drain_errors
from ._knobs import in_range
from .engine import EngineStats
from .errors import ClosedError, ConfigTypeError, ProviderError

__all__ = ["Provider", "ProviderStats", "provider_path", "load_provider", "shared_provider",
           "require_pipeline_api", "ALGORITHMS", "PROPERTY"]

# the algorithms the provider offers, and the property query that picks them
ALGORITHMS = ("AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305")
PROPERTY = b"provider=pipetls"
PROVIDER_FILE = "pipetls-provider.so"

THREADS_RANGE = (1, _ffi.PIPETLS_MAX_LANES)
INLINE_BELOW_RANGE = (0, 1 << 30)

# The provider reports its counters in the engine's STATS format.
ProviderStats = EngineStats

_HERE = os.path.dirname(os.path.abspath(__file__))

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", None]


def require_pipeline_api(what: str = "pipetls.Provider") -> None:
    """ProviderError unless this process's libcrypto has the 3.5 pipeline API."""
    if (_ffi.OpenSSL_version_num() < _ffi.OPENSSL_3_5
            or not _ffi.has_symbol("EVP_CipherPipelineEncryptInit")):
        raise ProviderError(
            "%s needs OpenSSL >= 3.5 (the EVP_CipherPipeline* API) and the pipetls provider "
            "(%s); this process has %s (%s). Run it with PIPETLS_OPENSSL=<prefix of an "
            "OpenSSL >= 3.5>, e.g. the build of openssl_patches/build.py, in a process "
            "of its own" % (what, PROVIDER_FILE, _ffi.openssl_version(), _ffi.LIBCRYPTO_PATH))


def provider_path() -> str:
    """Path of the provider module.

    1. ``$PIPETLS_PROVIDER`` when set (it must exist);
    2. ``pipetls-provider.so`` beside this module (installed wheels built
       against OpenSSL >= 3.5 headers);
    3. in a source checkout, ``<repo>/build/pipetls-provider.so`` or a build
       against the patched OpenSSL (``<repo>/build/provider-3.5/``, what
       ``tox -e patched`` builds, or ``<repo>/build-provider/``).

    Raises ProviderError when none is found.
    """
    env = os.environ.get("PIPETLS_PROVIDER")
    if env:
        if not os.path.isfile(env):
            raise ProviderError("PIPETLS_PROVIDER=%s: no such file" % env)
        return os.path.abspath(env)
    bundled = os.path.join(_HERE, PROVIDER_FILE)
    if os.path.isfile(bundled):
        return bundled
    repo = os.path.dirname(os.path.dirname(_HERE))
    if os.path.isdir(os.path.join(repo, "provider")):
        tried = [os.path.join(repo, *parts, PROVIDER_FILE)
                 for parts in (("build", "provider-3.5"), ("build",), ("build-provider",))]
        for candidate in tried:
            if os.path.isfile(candidate):
                return candidate
        raise ProviderError(
            "%s not found (looked in %s): build it against OpenSSL >= 3.5 headers "
            "(cmake -S %s -B %s/build/provider-3.5 -DOPENSSL_ROOT_DIR=<prefix> && cmake "
            "--build %s/build/provider-3.5) or set PIPETLS_PROVIDER"
            % (PROVIDER_FILE, ", ".join(tried), repo, repo, repo))
    raise ProviderError("%s not found beside %s (this wheel was built against OpenSSL < 3.5 "
                        "headers); set PIPETLS_PROVIDER" % (PROVIDER_FILE, _HERE))


def _param_array(items: list[tuple[bytes, int, Optional[int], int]]) -> ctypes.Array[OSSL_PARAM]:
    """An OSSL_PARAM array (END-terminated) of (key, type, data address, size)."""
    arr = (OSSL_PARAM * (len(items) + 1))()
    for i, (key, dtype, data, size) in enumerate(items):
        arr[i].key = key
        arr[i].data_type = dtype
        arr[i].data = data
        arr[i].data_size = size
        arr[i].return_size = _ffi.OSSL_PARAM_UNMODIFIED
    return arr


class Provider:
    """The pipetls provider loaded into a library context.

    ``Provider(path=None, *, threads=None, inline_below=None)`` loads
    ``path`` (default :func:`provider_path`) into OpenSSL's default library
    context by module path, keeping the fallback (default) provider, with
    ``threads`` / ``inline_below`` passed as its configuration parameters
    (``THREADS`` / ``INLINE_BELOW``, as in openssl.cnf).  ``close()`` frees
    the ciphers fetched through it and unloads it (OpenSSL keeps the module
    while contexts still use it).
    """

    def __init__(self, path: PathArg = None, *, threads: Optional[int] = None,
                 inline_below: Optional[int] = None) -> None:
        if threads is not None:
            threads = in_range("threads", threads, *THREADS_RANGE)
        if inline_below is not None:
            inline_below = in_range("inline_below", inline_below, *INLINE_BELOW_RANGE)
        if path is not None and not isinstance(path, (str, bytes, os.PathLike)):
            raise ConfigTypeError("path must be a path, not %s" % type(path).__name__, knob="path")
        require_pipeline_api()
        path_str = os.fsdecode(path) if path is not None else provider_path()
        if not os.path.isfile(path_str):
            raise ProviderError("provider %s: no such file" % path_str)
        self.path = os.path.abspath(path_str)
        self._lock = threading.RLock()
        self._ciphers: dict[str, int] = {}
        conf: list[tuple[bytes, bytes]] = []
        if threads is not None:
            conf.append((b"THREADS", str(threads).encode()))
        if inline_below is not None:
            conf.append((b"INLINE_BELOW", str(inline_below).encode()))
        values = [ctypes.create_string_buffer(v) for _, v in conf]
        params = _param_array([(k, _ffi.OSSL_PARAM_UTF8_STRING, ctypes.addressof(b), len(b) - 1)
                               for (k, _), b in zip(conf, values)])
        # retain_fallbacks=1: loading a provider explicitly would otherwise
        # stop OpenSSL from activating the default one
        self._p: Optional[int] = check_ptr(
            _ffi.OSSL_PROVIDER_try_load_ex(None, os.fsencode(self.path), params, 1),
            "OSSL_PROVIDER_try_load_ex(%s) failed: not a pipetls provider for this OpenSSL"
            % self.path, exc=ProviderError)
        try:
            for name, want in (("threads", threads), ("inline_below", inline_below)):
                if want is None:
                    continue
                got = self._int_param(name)
                if got != want:
                    raise ProviderError(
                        "%s=%s was asked but the provider reports %s: it was already loaded "
                        "in this process (openssl.cnf, another Provider) with other settings"
                        % (name, want, got))
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ life
    @property
    def handle(self) -> int:
        """The ``OSSL_PROVIDER*`` as an int."""
        if self._p is None:
            raise ClosedError("Provider is closed")
        return self._p

    @property
    def closed(self) -> bool:
        return self._p is None

    @property
    def name(self) -> str:
        """OpenSSL's name for it (the module path it was loaded by)."""
        return (_ffi.OSSL_PROVIDER_get0_name(self.handle) or b"").decode()

    def close(self) -> None:
        with self._lock:
            p, self._p = self._p, None
            if p is None:
                return
            for c in self._ciphers.values():
                _ffi.EVP_CIPHER_free(c)
            self._ciphers.clear()
            _ffi.OSSL_PROVIDER_unload(p)
            _ffi.ERR_clear_error()
        global _shared
        with _shared_lock:
            if _shared is self:
                _shared = None

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<pipetls.Provider %s%s>" % (self.path, " closed" if self.closed else "")

    # ---------------------------------------------------------------- ciphers
    def cipher(self, name: str) -> int:
        """The ``EVP_CIPHER*`` of ``name`` fetched with ``provider=pipetls``
        (owned by this Provider, freed by close())."""
        with self._lock:
            handle = self.handle
            c = self._ciphers.get(name)
            if c is None:
                c = check_ptr(_ffi.EVP_CIPHER_fetch(None, name.encode(), PROPERTY),
                              "EVP_CIPHER_fetch(%s, provider=pipetls) failed: the provider at "
                              "%s does not offer it" % (name, self.path), exc=ProviderError)
                if _ffi.EVP_CIPHER_get0_provider(c) != handle:
                    _ffi.EVP_CIPHER_free(c)
                    raise ProviderError("%s with provider=pipetls comes from another provider "
                                        "than %s (two pipetls providers loaded?)"
                                        % (name, self.path))
                self._ciphers[name] = c
            return c

    def ciphers(self) -> list[str]:
        """The ALGORITHMS this provider offers with pipelining, both ways."""
        out = []
        for name in ALGORITHMS:
            try:
                c = self.cipher(name)
            except ProviderError:
                continue
            if _ffi.EVP_CIPHER_can_pipeline(c, 1) and _ffi.EVP_CIPHER_can_pipeline(c, 0):
                out.append(name)
        _ffi.ERR_clear_error()
        return out

    # ------------------------------------------------------------- parameters
    def gettable(self) -> dict[str, int]:
        """Parameter name -> OSSL_PARAM data type, as the provider declares."""
        ptr = _ffi.OSSL_PROVIDER_gettable_params(self.handle)
        out: dict[str, int] = {}
        if not ptr:
            return out
        p = ctypes.cast(ptr, ctypes.POINTER(OSSL_PARAM))
        i = 0
        while p[i].key is not None:
            out[p[i].key.decode()] = p[i].data_type
            i += 1
        return out

    def get_param(self, name: str) -> Union[int, str, bytes]:
        """One provider parameter (``OSSL_PROVIDER_get_params``), typed by
        what the provider declares gettable."""
        types = self.gettable()
        if name not in types:
            raise ProviderError("the provider has no parameter %r (it has: %s)"
                                % (name, ", ".join(sorted(types))))
        dtype = types[name]
        key = name.encode()
        with self._lock:
            handle = self.handle
            if dtype in (_ffi.OSSL_PARAM_INTEGER, _ffi.OSSL_PARAM_UNSIGNED_INTEGER):
                num = ctypes.c_int64() if dtype == _ffi.OSSL_PARAM_INTEGER else ctypes.c_uint64()
                params = _param_array([(key, dtype, ctypes.addressof(num), 8)])
                self._get(handle, params, name)
                return int(num.value)
            if dtype in (_ffi.OSSL_PARAM_UTF8_PTR, _ffi.OSSL_PARAM_OCTET_PTR):
                ptr = ctypes.c_void_p()
                params = _param_array([(key, dtype, ctypes.addressof(ptr), 0)])
                self._get(handle, params, name)
                size = params[0].return_size
                if not ptr.value:
                    return "" if dtype == _ffi.OSSL_PARAM_UTF8_PTR else b""
                if dtype == _ffi.OSSL_PARAM_UTF8_PTR:
                    return (ctypes.string_at(ptr.value) or b"").decode("utf-8", "replace")
                return ctypes.string_at(ptr.value, size)
            if dtype in (_ffi.OSSL_PARAM_UTF8_STRING, _ffi.OSSL_PARAM_OCTET_STRING):
                # first ask the size (data NULL), then fetch into a buffer
                params = _param_array([(key, dtype, None, 0)])
                self._get(handle, params, name)
                size = params[0].return_size
                if size == _ffi.OSSL_PARAM_UNMODIFIED:
                    size = 1 << 16
                buf = ctypes.create_string_buffer(size + 1)
                params = _param_array([(key, dtype, ctypes.addressof(buf), size + 1)])
                self._get(handle, params, name)
                raw = buf.raw[:params[0].return_size]
                if dtype == _ffi.OSSL_PARAM_UTF8_STRING:
                    return raw.decode("utf-8", "replace")
                return raw
        raise ProviderError("provider parameter %s has type %d, which pipetls cannot read"
                            % (name, dtype))

    @staticmethod
    def _get(handle: int, params: ctypes.Array[OSSL_PARAM], name: str) -> None:
        if _ffi.OSSL_PROVIDER_get_params(handle, params) != 1:
            lines, codes = drain_errors()
            raise ProviderError("OSSL_PROVIDER_get_params(%s) failed" % name, lines, codes)
        if params[0].return_size == _ffi.OSSL_PARAM_UNMODIFIED:
            raise ProviderError("the provider did not answer parameter %s" % name)

    def params(self) -> dict[str, Union[int, str, bytes]]:
        """Every gettable parameter (name, version, buildinfo, status, stats,
        threads, inline_below ...)."""
        out: dict[str, Union[int, str, bytes]] = {}
        for name in self.gettable():
            if name == "stats_reset":  # asking for it zeroes the counters
                continue
            try:
                out[name] = self.get_param(name)
            except ProviderError:
                continue
        return out

    def _int_param(self, name: str) -> int:
        v = self.get_param(name)
        if isinstance(v, int):
            return v
        try:
            return int(v)
        except ValueError:
            raise ProviderError("provider parameter %s is %r, not a number" % (name, v)) from None

    @property
    def threads(self) -> int:
        """Lanes working one batch, the calling thread included."""
        return self._int_param("threads")

    @property
    def inline_below(self) -> int:
        """Batches smaller than this many bytes run in the caller alone."""
        return self._int_param("inline_below")

    def stats_text(self) -> str:
        v = self.get_param("stats")
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    def reset_stats(self) -> None:
        """Zero the counters (the provider's ``stats_reset`` parameter)."""
        if self._int_param("stats_reset") != 1:
            raise ProviderError("the provider did not reset its statistics")

    def stats(self) -> ProviderStats:
        """A snapshot of the counters, in the engine's format (EngineStats)."""
        return ProviderStats.parse(self.stats_text())


# --------------------------------------------------------------------------
# The shared provider.
# --------------------------------------------------------------------------
_shared: Optional[Provider] = None
# re-entrant: a Provider that fails in __init__ (under load_provider) closes itself
_shared_lock = threading.RLock()


def shared_provider() -> Optional[Provider]:
    """The provider load_provider() returned, or None."""
    return _shared


def load_provider(path: PathArg = None, threads: Optional[int] = None,
                  inline_below: Optional[int] = None) -> Provider:
    """Load (once per process) and return the shared provider.

    A second call returns the same Provider; asking for another ``path``,
    or for ``threads`` / ``inline_below`` other than it was loaded with,
    raises ProviderError (they are load-time settings: close it first).
    """
    global _shared
    with _shared_lock:
        p = _shared
        if p is None or p.closed:
            p = _shared = Provider(path, threads=threads, inline_below=inline_below)
            return p
    if path is not None and os.path.abspath(os.fsdecode(path)) != p.path:
        raise ProviderError("the shared provider is %s; close it before loading %s"
                            % (p.path, os.fsdecode(path)))
    for name, want in (("threads", threads), ("inline_below", inline_below)):
        if want is not None and p._int_param(name) != want:
            raise ProviderError("the shared provider was loaded with %s=%d; close it to "
                                "load it with %s=%d" % (name, p._int_param(name), name, want))
    return p
