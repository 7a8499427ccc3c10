"""TLS contexts: one ``SSL_CTX`` each, with the pipelining knobs.

Pipelining needs the pipetls engine registered as the default cipher
implementation (``load_engine()`` or ``Context(engine=True)``); stock
OpenSSL only pipelines TLS 1.2 records (TLS 1.1+ with explicit IVs) and only
with ENGINE ciphers.  Register the engine before creating contexts; libssl
looks the engine up again when it keys a connection, so a context made
earlier still pipelines, but only connections made after the knobs were set
get them (SSL_new copies them).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import warnings
import weakref
from typing import IO, Any, Callable, Iterable, NamedTuple, Optional, Union

from . import _ffi
from ._ffi import check, check_ptr, drain_errors
from ._knobs import DEFAULTS, PipelineKnobs, as_bool
from .engine import Engine, load_engine
from .errors import ClosedError, ConfigError, ConfigTypeError, OpenSSLError, ProviderError
from .paths import PROPQ
from .provider import Provider

ProviderArg = Union[bool, str, Provider, None]

__all__ = ["Context", "TLS_VERSIONS"]

TLS_VERSIONS = {
    "TLSv1": _ffi.TLS1_VERSION,
    "TLSv1.0": _ffi.TLS1_VERSION,
    "TLSv1.1": _ffi.TLS1_1_VERSION,
    "TLSv1.2": _ffi.TLS1_2_VERSION,
    "TLSv1.3": _ffi.TLS1_3_VERSION,
}
_VERSION_NAMES = {
    _ffi.TLS1_VERSION: "TLSv1",
    _ffi.TLS1_1_VERSION: "TLSv1.1",
    _ffi.TLS1_2_VERSION: "TLSv1.2",
    _ffi.TLS1_3_VERSION: "TLSv1.3",
}

StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
TLSVersionName = Union[str, int, None]


def _version_value(v: TLSVersionName, what: str) -> int:
    if v is None:
        return 0
    if isinstance(v, str):
        try:
            return TLS_VERSIONS[v]
        except KeyError:
            raise ConfigError(
                "%s: unknown TLS version %r; allowed %s or None"
                % (what, v, ", ".join(sorted(set(TLS_VERSIONS)))),
                knob=what,
            ) from None
    if isinstance(v, bool) or not isinstance(v, int):
        # ssl.TLSVersion is an IntEnum: accept it.
        raise ConfigTypeError("%s must be a version name like 'TLSv1.2', not %r" % (what, v), knob=what)
    if int(v) not in _VERSION_NAMES:
        raise ConfigError(
            "%s: unknown TLS version 0x%04x; allowed TLSv1..TLSv1.3" % (what, int(v)), knob=what
        )
    return int(v)


def _path(p: object, what: str) -> bytes:
    if not isinstance(p, (str, bytes, os.PathLike)):
        raise ConfigTypeError("%s must be a path, not %s" % (what, type(p).__name__), knob=what)
    return os.fsencode(p)


def _choose_provider(provider: ProviderArg, engine: Optional[Engine]) -> Optional[Provider]:
    """The provider a new Context prefers (see Context's ``provider``)."""
    from .paths import engine_registered_for, probe
    from .provider import load_provider, provider_path, require_pipeline_api

    if provider is None or provider is False:
        return None
    if provider == "auto":
        if (_ffi.OpenSSL_version_num() < _ffi.OPENSSL_3_5
                or not _ffi.has_symbol("EVP_CipherPipelineEncryptInit")):
            return None  # stock 3.0: nothing changes
        if engine is not None or engine_registered_for("AES-128-GCM"):
            return None  # the engine serves every cipher it offers
        try:
            found = probe("1.3")
        except ProviderError:
            return None  # no provider module
        return load_provider() if found.pipelined else None
    if provider is not True and not isinstance(provider, Provider):
        raise ConfigTypeError("provider must be True, False, 'auto' or a pipetls.Provider, "
                              "not %r" % (provider,), knob="provider")
    if isinstance(provider, Provider) and provider.closed:
        raise ClosedError("Context(provider=...): that Provider is closed")
    try:
        require_pipeline_api("Context(provider=True)")
        if not isinstance(provider, Provider):
            provider_path()  # the module must exist
    except ProviderError as exc:  # OpenSSL < 3.5, or no provider module
        raise ProviderError(
            "Context(provider=True) pipelines TLS 1.3 through the pipetls provider, which "
            "needs OpenSSL >= 3.5 with patch 0002 (openssl_patches/, 'pipetls build-openssl'; "
            "run with PIPETLS_OPENSSL=<its prefix>) and pipetls-provider.so built against "
            "it: %s" % exc) from None
    if engine is not None or engine_registered_for("AES-128-GCM"):
        raise ConfigError(
            "Context(provider=True) with the pipetls engine registered: libssl takes an "
            "ENGINE's cipher before any provider's, TLS 1.3 included, so the provider would "
            "serve nothing; leave the engine out (engine=None, or Engine.unregister())",
            knob="provider")
    found = probe("1.3")
    if not found.pipelined:
        raise ProviderError("Context(provider=True): %s" % found.reason)
    return provider if isinstance(provider, Provider) else load_provider()


class _KeepAlive:
    """Python objects OpenSSL points at (callbacks, buffers).  Connections hold
    a reference so these outlive every SSL* made from the context."""

    __slots__ = ("keylog_cb", "alpn_cb", "alpn_wire", "keylog_fn", "keylog_file",
                 "keylog_lock", "__weakref__")

    def __init__(self) -> None:
        self.keylog_cb: Any = None
        self.alpn_cb: Any = None
        self.alpn_wire: Any = None
        self.keylog_fn: Optional[Callable[[str], object]] = None
        self.keylog_file: Optional[IO[str]] = None
        self.keylog_lock = threading.Lock()


class NewSSL(NamedTuple):
    """What :meth:`Context._new_ssl` hands a Connection: a fresh ``SSL*``
    (the caller owns it and must ``SSL_free`` it), the objects OpenSSL points
    at that must outlive it, and the knob values it inherited."""

    ssl: int
    keepalive: _KeepAlive
    knobs: dict[str, int]


class Context(PipelineKnobs):
    """A TLS context (``SSL_CTX``) for servers (``server=True``) or clients.

    ``verify``: clients verify the server's certificate by default (against
    ``cafile`` or the system store) and check the host name given to the
    Connection (``check_hostname``); servers do not ask for client
    certificates unless ``verify=True``.

    Pipelining knobs (``max_pipelines``, ``split_send_fragment``,
    ``max_send_fragment``, ``read_ahead``, ``default_read_buffer_len``) are
    properties; see :mod:`pipetls._knobs` for ranges and which getters are
    cached in Python.  They apply to connections created afterwards.

    ``release_buffers`` (default True): libssl frees a connection's read
    and write buffers whenever they are empty (``SSL_MODE_RELEASE_BUFFERS``)
    and allocates them again for the next record; an idle connection then
    holds none of them, however many pipelines its last burst used (see
    docs/knobs.md, "Memory").  False keeps OpenSSL's own behaviour: the
    buffers of the widest batch stay allocated for the connection's life.

    ``provider`` (default ``"auto"``): make the ``SSL_CTX`` with the
    property query ``?provider=pipetls`` (``SSL_CTX_new_ex``), so that its
    record ciphers are the pipetls provider's and libssl pipelines TLS 1.3
    through it.  ``"auto"``: only where this libssl does (OpenSSL >= 3.5
    with patch 0002, found by :func:`pipetls.paths.probe`, and no ENGINE
    registered for those ciphers), loading the shared provider
    (:func:`pipetls.load_provider`) beside the default one; elsewhere, as on
    stock OpenSSL 3.0, nothing changes.  ``True`` (or a
    :class:`~pipetls.Provider`) asks for it and raises ProviderError where it
    cannot pipeline (naming what is missing); ``False`` never uses it.  The
    engine keeps serving TLS 1.2 (``engine=True``), but a registered ENGINE
    takes every cipher it offers, TLS 1.3 included, before any provider:
    ``engine=True`` with ``provider=True`` is refused, and with ``"auto"``
    the provider is left out (docs/knobs.md, "Provider").

    ``keylog_file=path`` appends SSLKEYLOGFILE lines to ``path``;
    ``keylog_callback=fn`` calls ``fn(line: str)``.  Neither is set unless
    asked for: key material is secret.
    """

    def __init__(
        self,
        server: bool = False,
        *,
        verify: Optional[bool] = None,
        check_hostname: Optional[bool] = None,
        cafile: Optional[StrPath] = None,
        certfile: Optional[StrPath] = None,
        keyfile: Optional[StrPath] = None,
        min_version: TLSVersionName = "TLSv1.2",
        max_version: TLSVersionName = None,
        ciphers: Optional[str] = None,
        ciphersuites: Optional[str] = None,
        alpn_protocols: Optional[Iterable[Union[str, bytes]]] = None,
        keylog_file: Optional[StrPath] = None,
        keylog_callback: Optional[Callable[[str], object]] = None,
        max_pipelines: Optional[int] = None,
        split_send_fragment: Optional[int] = None,
        max_send_fragment: Optional[int] = None,
        read_ahead: Optional[bool] = None,
        default_read_buffer_len: Optional[int] = None,
        encrypt_then_mac: Optional[bool] = None,
        release_buffers: bool = True,
        engine: Union[bool, Engine, None] = None,
        async_mode: Optional[bool] = None,
        provider: ProviderArg = "auto",
    ) -> None:
        self.server = as_bool("server", server)
        self._engine: Optional[Engine] = None
        self._ctx: Optional[int] = None
        if engine is not None and engine is not False:
            # Register before SSL_CTX_new so libssl picks the engine ciphers.
            if engine is not True and not isinstance(engine, Engine):
                raise ConfigTypeError(
                    "engine must be True (the shared engine), False/None or a "
                    "pipetls.Engine, not %s (load a path with pipetls.load_engine(path))"
                    % type(engine).__name__, knob="engine")
            self._engine = load_engine(register=True) if engine is True else engine
            if not self._engine.registered:
                self._engine.register_default()
        self._provider = _choose_provider(provider, self._engine)
        method = _ffi.TLS_server_method() if self.server else _ffi.TLS_client_method()
        if self._provider is not None:
            # the record ciphers are fetched here, once, with this query
            ptr = check_ptr(_ffi.SSL_CTX_new_ex(None, PROPQ, method), "SSL_CTX_new_ex failed")
        else:
            ptr = check_ptr(_ffi.SSL_CTX_new(method), "SSL_CTX_new failed")
        self._ctx = ptr
        # The SSL_CTX is freed by close() or, failing that, when this object
        # is collected.  Connections keep the Context object alive, and every
        # SSL* holds its own reference to the SSL_CTX inside OpenSSL.
        self._finalizer = weakref.finalize(self, _ffi.SSL_CTX_free, ptr)
        self._keepalive = _KeepAlive()
        self._knobs = dict(DEFAULTS)
        self._alpn: Optional[list[str]] = None
        try:
            # Partial writes: write() returns after each batch of records, so a
            # non-blocking sender makes progress; moving buffer: a retry may pass
            # a different (equal) buffer object.
            _ffi.SSL_CTX_set_mode(
                ptr, _ffi.SSL_MODE_ENABLE_PARTIAL_WRITE | _ffi.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
            )
            self.release_buffers = release_buffers

            if verify is None:
                verify = not self.server
            self._check_hostname = False
            self.verify = verify
            if check_hostname is not None:
                self.check_hostname = check_hostname
            if cafile is not None:
                self.load_verify_locations(cafile)
            elif self.verify and not self.server:
                check(_ffi.SSL_CTX_set_default_verify_paths(ptr), "SSL_CTX_set_default_verify_paths")
            if certfile is not None:
                self.load_cert_chain(certfile, keyfile)
            self.set_versions(min_version, max_version)
            if ciphers is not None:
                self.set_ciphers(ciphers)
            if ciphersuites is not None:
                self.set_ciphersuites(ciphersuites)
            if alpn_protocols is not None:
                self.set_alpn_protocols(alpn_protocols)
            if keylog_file is not None or keylog_callback is not None:
                self.set_keylog(file=keylog_file, callback=keylog_callback)
            if max_send_fragment is not None:
                self.max_send_fragment = max_send_fragment
            if max_pipelines is not None:
                self.max_pipelines = max_pipelines
            if split_send_fragment is not None:
                self.split_send_fragment = split_send_fragment
            if read_ahead is not None:
                self.read_ahead = read_ahead
            if default_read_buffer_len is not None:
                self.default_read_buffer_len = default_read_buffer_len
            if encrypt_then_mac is not None:
                self.encrypt_then_mac = encrypt_then_mac
            if async_mode is not None:
                self.async_mode = async_mode
        except BaseException:
            # A constructor that fails part-way frees what it made: the
            # SSL_CTX and a keylog file it opened.
            self.close()
            raise

    # ------------------------------------------------------------------ life
    @property
    def handle(self) -> int:
        """The ``SSL_CTX*`` as an int (for code that calls OpenSSL itself)."""
        if self._ctx is None:
            raise ClosedError("Context is closed")
        return self._ctx

    def _knob_handle(self) -> int:
        return self.handle

    @property
    def closed(self) -> bool:
        return self._ctx is None

    @property
    def provider(self) -> Optional[Provider]:
        """The pipetls provider whose ciphers this context prefers (its
        ``SSL_CTX`` was made with ``?provider=pipetls``), or None."""
        return self._provider

    def _new_ssl(self) -> NewSSL:
        """For Connection, the one way it uses a Context's insides: a new
        ``SSL*`` from this context (ClosedError once closed), with what must
        outlive it and the knob values it inherits (SSL_new copies them)."""
        ssl = check_ptr(_ffi.SSL_new(self.handle), "SSL_new failed")
        return NewSSL(ssl, self._keepalive, dict(self._knobs))

    def close(self) -> None:
        """Drop this object's reference to the SSL_CTX.  Connections made from
        it keep working (each SSL* holds its own reference)."""
        if self._ctx is None:
            return
        self._ctx = None
        self._finalizer()
        f = self._keepalive.keylog_file
        if f is not None:
            with self._keepalive.keylog_lock:
                self._keepalive.keylog_file = None
                f.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._ctx is None else "0x%x" % self._ctx
        return "<pipetls.Context %s %s>" % ("server" if self.server else "client", state)

    # --------------------------------------------------------- certificates
    def load_cert_chain(self, certfile: StrPath, keyfile: Optional[StrPath] = None) -> None:
        """Load a PEM certificate chain and its private key (PEM, unencrypted;
        ``keyfile`` defaults to ``certfile``)."""
        ctx = self.handle
        cert = _path(certfile, "certfile")
        key = _path(keyfile if keyfile is not None else certfile, "keyfile")
        check(
            _ffi.SSL_CTX_use_certificate_chain_file(ctx, cert),
            "cannot load certificate chain %s" % os.fsdecode(cert),
            exc=OpenSSLError,
        )
        check(
            _ffi.SSL_CTX_use_PrivateKey_file(ctx, key, _ffi.SSL_FILETYPE_PEM),
            "cannot load private key %s" % os.fsdecode(key),
        )
        check(_ffi.SSL_CTX_check_private_key(ctx), "private key does not match the certificate")

    def load_verify_locations(self, cafile: Optional[StrPath] = None,
                              capath: Optional[StrPath] = None) -> None:
        """Trust the PEM certificates in ``cafile`` (and/or hashed ``capath``)."""
        ctx = self.handle
        if cafile is None and capath is None:
            raise ConfigError("load_verify_locations needs cafile or capath", knob="cafile")
        f = _path(cafile, "cafile") if cafile is not None else None
        d = _path(capath, "capath") if capath is not None else None
        check(
            _ffi.SSL_CTX_load_verify_locations(ctx, f, d),
            "cannot load verify locations %s" % os.fsdecode(f or d or b""),
        )

    @property
    def verify(self) -> bool:
        """Verify the peer's certificate (clients: the server's; servers:
        require a client certificate)."""
        return bool(_ffi.SSL_CTX_get_verify_mode(self.handle) & _ffi.SSL_VERIFY_PEER)

    @verify.setter
    def verify(self, value: bool) -> None:
        value = as_bool("verify", value)
        mode = _ffi.SSL_VERIFY_NONE
        if value:
            mode = _ffi.SSL_VERIFY_PEER
            if self.server:
                mode |= _ffi.SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        _ffi.SSL_CTX_set_verify(self.handle, mode, None)
        if not value:
            self._check_hostname = False
        elif not self.server:
            self._check_hostname = True

    @property
    def check_hostname(self) -> bool:
        """Clients: match the server certificate against ``server_hostname``
        (on by default when ``verify`` is)."""
        return self._check_hostname

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        value = as_bool("check_hostname", value)
        if value and self.server:
            raise ConfigError("check_hostname is for client contexts", knob="check_hostname")
        if value and not self.verify:
            raise ConfigError("check_hostname=True needs verify=True", knob="check_hostname")
        self._check_hostname = value

    # ------------------------------------------------------ protocol choices
    def set_versions(self, min: TLSVersionName = None, max: TLSVersionName = None) -> None:
        """Limit the protocol versions: names 'TLSv1.2', 'TLSv1.3' (or
        ssl.TLSVersion values); None means no limit on that side."""
        lo = _version_value(min, "min_version")
        hi = _version_value(max, "max_version")
        if lo and hi and lo > hi:
            raise ConfigError(
                "min_version %s is above max_version %s" % (_VERSION_NAMES[lo], _VERSION_NAMES[hi]),
                knob="min_version",
            )
        ctx = self.handle
        check(_ffi.SSL_CTX_set_min_proto_version(ctx, lo), "OpenSSL refused min_version",
              exc=ConfigError, knob="min_version")
        check(_ffi.SSL_CTX_set_max_proto_version(ctx, hi), "OpenSSL refused max_version",
              exc=ConfigError, knob="max_version")

    @property
    def versions(self) -> tuple[Optional[str], Optional[str]]:
        """(min, max) as names; None where unlimited."""
        ctx = self.handle
        lo = _ffi.SSL_CTX_get_min_proto_version(ctx)
        hi = _ffi.SSL_CTX_get_max_proto_version(ctx)
        return _VERSION_NAMES.get(lo), _VERSION_NAMES.get(hi)

    def set_ciphers(self, ciphers: str) -> None:
        """TLS 1.2 and older cipher list (OpenSSL syntax, e.g.
        'ECDHE-RSA-AES128-GCM-SHA256')."""
        if not isinstance(ciphers, str):
            raise ConfigTypeError("ciphers must be a str", knob="ciphers")
        check(_ffi.SSL_CTX_set_cipher_list(self.handle, ciphers.encode()),
              "no usable cipher in %r" % ciphers, exc=ConfigError, knob="ciphers")

    def set_ciphersuites(self, ciphersuites: str) -> None:
        """TLS 1.3 cipher suites (e.g. 'TLS_AES_128_GCM_SHA256')."""
        if not isinstance(ciphersuites, str):
            raise ConfigTypeError("ciphersuites must be a str", knob="ciphersuites")
        check(_ffi.SSL_CTX_set_ciphersuites(self.handle, ciphersuites.encode()),
              "bad TLS 1.3 ciphersuites %r" % ciphersuites, exc=ConfigError, knob="ciphersuites")

    @property
    def options(self) -> int:
        """SSL_CTX_get_options (a uint64 bit set)."""
        return _ffi.SSL_CTX_get_options(self.handle)

    def set_options(self, bits: int) -> int:
        return _ffi.SSL_CTX_set_options(self.handle, bits)

    def clear_options(self, bits: int) -> int:
        return _ffi.SSL_CTX_clear_options(self.handle, bits)

    @property
    def encrypt_then_mac(self) -> bool:
        """Encrypt-then-MAC for CBC suites (RFC 7366; on by default).  Off
        lets libssl use the stitched CBC-HMAC ciphers."""
        return not (self.options & _ffi.SSL_OP_NO_ENCRYPT_THEN_MAC)

    @encrypt_then_mac.setter
    def encrypt_then_mac(self, value: bool) -> None:
        if as_bool("encrypt_then_mac", value):
            self.clear_options(_ffi.SSL_OP_NO_ENCRYPT_THEN_MAC)
        else:
            self.set_options(_ffi.SSL_OP_NO_ENCRYPT_THEN_MAC)

    @property
    def release_buffers(self) -> bool:
        """libssl frees the read and write buffers of a connection whenever
        they are empty (``SSL_MODE_RELEASE_BUFFERS``; on by default).  Read
        from OpenSSL; connections made afterwards inherit it."""
        return bool(_ffi.SSL_CTX_get_mode(self.handle) & _ffi.SSL_MODE_RELEASE_BUFFERS)

    @release_buffers.setter
    def release_buffers(self, value: bool) -> None:
        if as_bool("release_buffers", value):
            _ffi.SSL_CTX_set_mode(self.handle, _ffi.SSL_MODE_RELEASE_BUFFERS)
        else:
            _ffi.SSL_CTX_clear_mode(self.handle, _ffi.SSL_MODE_RELEASE_BUFFERS)

    @property
    def async_mode(self) -> bool:
        """``SSL_MODE_ASYNC`` (off by default): every SSL_read/SSL_write runs
        in an OpenSSL ASYNC job, and a pipelined batch the engine hands to
        its lanes pauses the job instead of blocking the thread; a
        non-blocking Connection then raises :class:`WantAsync` with the fds
        to wait on (see docs/async.md).  Applies to connections made
        afterwards."""
        return bool(_ffi.SSL_CTX_get_mode(self.handle) & _ffi.SSL_MODE_ASYNC)

    @async_mode.setter
    def async_mode(self, value: bool) -> None:
        if as_bool("async_mode", value):
            _ffi.SSL_CTX_set_mode(self.handle, _ffi.SSL_MODE_ASYNC)
        else:
            _ffi.SSL_CTX_clear_mode(self.handle, _ffi.SSL_MODE_ASYNC)

    # ------------------------------------------------------------------ ALPN
    def set_alpn_protocols(self, protocols: Iterable[Union[str, bytes]]) -> None:
        """ALPN protocols in preference order, e.g. ['h2', 'http/1.1']."""
        if isinstance(protocols, (str, bytes)):
            raise ConfigTypeError("alpn_protocols must be a list of str", knob="alpn_protocols")
        wire = bytearray()
        names = []
        try:
            protocols = list(protocols)
        except TypeError:
            raise ConfigTypeError("alpn_protocols must be a list of str", knob="alpn_protocols") from None
        for p in protocols:
            if isinstance(p, str):
                try:
                    b = p.encode("ascii")
                except UnicodeEncodeError:
                    raise ConfigError("ALPN protocol %r is not ASCII" % (p,), knob="alpn_protocols") from None
            elif isinstance(p, (bytes, bytearray)):
                b = bytes(p)
            else:
                raise ConfigTypeError("ALPN protocols must be str or bytes, not %s"
                                      % type(p).__name__, knob="alpn_protocols")
            if not 1 <= len(b) <= 255:
                raise ConfigError("ALPN protocol %r: length must be 1..255" % (p,), knob="alpn_protocols")
            wire += bytes([len(b)]) + b
            names.append(b.decode("ascii", "replace"))
        ctx = self.handle
        buf = ctypes.create_string_buffer(bytes(wire), len(wire))
        keep = self._keepalive
        if self.server:
            def select(ssl: int, out: Any, outlen: Any, inp: int, inlen: int, arg: int,
                       _buf: Any = buf, _n: int = len(wire)) -> int:
                r = _ffi.SSL_select_next_proto(out, outlen, ctypes.addressof(_buf), _n, inp, inlen)
                if r == _ffi.OPENSSL_NPN_NEGOTIATED:
                    return _ffi.SSL_TLSEXT_ERR_OK
                return _ffi.SSL_TLSEXT_ERR_NOACK

            cb = _ffi.ALPN_SELECT_CB(select)
            # Keep the old callback alive too: a handshake in flight may still
            # be inside it.  Both are dropped with the Context.
            keep.alpn_cb = (cb, keep.alpn_cb)
            keep.alpn_wire = (buf, keep.alpn_wire)
            _ffi.SSL_CTX_set_alpn_select_cb(ctx, cb, None)
        else:
            # SSL_CTX_set_alpn_protos copies the list and returns 0 on success.
            if _ffi.SSL_CTX_set_alpn_protos(ctx, bytes(wire), len(wire)) != 0:
                lines, codes = drain_errors()
                raise ConfigError("OpenSSL refused alpn_protocols", lines, codes, knob="alpn_protocols")
        self._alpn = names

    @property
    def alpn_protocols(self) -> Optional[list[str]]:
        return list(self._alpn) if self._alpn is not None else None

    # ---------------------------------------------------------------- keylog
    def set_keylog(self, file: Optional[StrPath] = None,
                   callback: Optional[Callable[[str], object]] = None) -> None:
        """Log TLS secrets in SSLKEYLOGFILE format: append lines to ``file``
        and/or call ``callback(line)``.  Both None turns logging off."""
        ctx = self.handle
        keep = self._keepalive
        if callback is not None and not callable(callback):
            raise ConfigTypeError("keylog_callback must be callable", knob="keylog_callback")
        new_file = open(os.fsdecode(_path(file, "keylog_file")), "a", encoding="ascii") if file is not None else None
        with keep.keylog_lock:
            old, keep.keylog_file, keep.keylog_fn = keep.keylog_file, new_file, callback
        if old is not None:
            old.close()
        if new_file is None and callback is None:
            _ffi.SSL_CTX_set_keylog_callback(ctx, _ffi.KEYLOG_CB())
            return
        if keep.keylog_cb is None:
            ref = weakref.ref(keep)

            def keylog(ssl: int, line: bytes) -> None:
                k = ref()
                if k is None:
                    return
                text = line.decode("ascii", "replace")
                with k.keylog_lock:
                    if k.keylog_file is not None:
                        k.keylog_file.write(text + "\n")
                        k.keylog_file.flush()
                    fn = k.keylog_fn
                if fn is not None:
                    fn(text)

            keep.keylog_cb = _ffi.KEYLOG_CB(keylog)
        _ffi.SSL_CTX_set_keylog_callback(ctx, keep.keylog_cb)

    # ------------------------------------------------------------ pipelining
    def _knob_ctrl(self, cmd: int, value: int) -> int:
        return _ffi.SSL_CTX_ctrl(self.handle, cmd, value, None)

    def _knob_set_read_buffer_len(self, n: int) -> None:
        _ffi.SSL_CTX_set_default_read_buffer_len(self.handle, n)

    def _knob_get_read_ahead(self) -> bool:
        return bool(_ffi.SSL_CTX_get_read_ahead(self.handle))

    def _knob_set_read_ahead(self, yes: bool) -> None:
        _ffi.SSL_CTX_set_read_ahead(self.handle, yes)

    # ------------------------------------------------------------ connections
    def wrap(self, sock: Any = None, **kw: Any) -> Any:
        """Deprecated: ``Connection(ctx, sock, **kw)`` is the one way to make
        a connection.  Kept for one release with a DeprecationWarning.

        The Connection class is looked up in sys.modules (pipetls/__init__.py
        always loads it), not imported: context.py does not depend on
        connection.py, which depends on it."""
        warnings.warn("Context.wrap() is deprecated: use pipetls.Connection(ctx, sock, ...)",
                      DeprecationWarning, stacklevel=2)
        connection = sys.modules[__name__.rpartition(".")[0] + ".connection"]
        return connection.Connection(self, sock, **kw)
