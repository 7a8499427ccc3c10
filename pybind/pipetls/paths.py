"""Which pipetls path serves which TLS version on this libssl: the engine,
the provider, or none.

* **engine** (``pipetls.so``): libssl 3.0 and 3.5 pipeline TLS 1.1/1.2
  records through ENGINE ciphers (``EVP_CIPH_FLAG_PIPELINE``).  Never TLS
  1.3: stock libssl refuses more than one TLS 1.3 record per call.
* **provider** (``pipetls-provider.so``, OpenSSL >= 3.5): libssl pipelines
  through a provided cipher only with patch 0002 (TLS 1.3) and, for TLS 1.2,
  once the libssl supports provided ciphers there too (patch 0003).

Nothing here trusts a version number for the patches: :func:`probe`
*measures*.  It loads the shared provider (:func:`pipetls.load_provider`,
the default provider kept), makes a server and a client ``SSL_CTX`` with the
property query ``?provider=pipetls`` (:data:`PROPQ`), a throwaway Ed25519
certificate made in memory, ``max_pipelines`` 4, and hands 4 full records
each way over memory BIOs.  The libssl pipelines that version through the
provider when the provider's statistics show a batch of more than one
record around the ``SSL_write`` *and* around the ``SSL_read``.  The answer
is cached per process (libssl is loaded once per process), except when an
ENGINE is registered for the cipher: libssl then takes the ENGINE's cipher
before any provider's (``ssl_evp_cipher_fetch``, and ``EVP_CipherInit_ex``
again when it keys a connection), so the probe says so and is not cached.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from . import _ffi
from .errors import PipetlsError, ProviderError

if TYPE_CHECKING:
    from .engine import Engine
    from .provider import Provider

__all__ = ["PROPQ", "ProbeResult", "probe", "probe_engine", "path_table", "INFO_SUITES",
           "engine_registered_for", "PROBE_SUITES",
           "TLS13_SUITES", "TLS12_AEAD_SUITES", "TLS12_CBC_SUITES"]

# The property query of an SSL_CTX whose ciphers should be the provider's:
# optional ("?"), so what the provider does not offer comes from the default
# provider as before.
PROPQ = b"?provider=pipetls"

# EVP cipher name -> TLS suite, per version
TLS13_SUITES = {
    "AES-128-GCM": "TLS_AES_128_GCM_SHA256",
    "AES-256-GCM": "TLS_AES_256_GCM_SHA384",
    "ChaCha20-Poly1305": "TLS_CHACHA20_POLY1305_SHA256",
}
TLS12_AEAD_SUITES = {
    "AES-128-GCM": "ECDHE-RSA-AES128-GCM-SHA256",
    "AES-256-GCM": "ECDHE-RSA-AES256-GCM-SHA384",
    "ChaCha20-Poly1305": "ECDHE-RSA-CHACHA20-POLY1305",
}
TLS12_CBC_SUITES = {
    "AES-128-CBC": "ECDHE-RSA-AES128-SHA",
    "AES-256-CBC": "ECDHE-RSA-AES256-SHA384",
}
# what the probe negotiates (its certificate is Ed25519: ECDSA suites in 1.2)
PROBE_SUITES = {
    "1.3": TLS13_SUITES,
    "1.2": {"AES-128-GCM": "ECDHE-ECDSA-AES128-GCM-SHA256",
            "AES-256-GCM": "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ChaCha20-Poly1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
            "AES-128-CBC": "ECDHE-ECDSA-AES128-SHA",
            "AES-256-CBC": "ECDHE-ECDSA-AES256-SHA384"},
}
# the provider's algorithms (pipetls.provider.ALGORITHMS) and the CBC ones
# of the engine
_NIDS = {"AES-128-GCM": 895, "AES-256-GCM": 901, "ChaCha20-Poly1305": 1018,
         "AES-128-CBC": 419, "AES-256-CBC": 427}
_AEAD = ("AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305")

_PIPES = 4
_RECORD = 16384
_BIO_CTRL_INFO = 3  # BIO_get_mem_data


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe` saw for one TLS version and cipher."""

    version: str  # "1.2" or "1.3"
    cipher: str  # EVP name, e.g. "AES-128-GCM"
    pipelined: bool  # batches of more than one record both ways, in the provider
    write_batches: int  # provider batches of > 1 record around the SSL_write
    read_batches: int  # ... around the SSL_read
    negotiated: str  # "TLSv1.3 TLS_AES_128_GCM_SHA256" ('' when it did not connect)
    reason: str = ""  # why not, when not pipelined

    def __str__(self) -> str:
        if self.pipelined:
            return ("TLS %s %s: pipelined through the provider (batches of > 1 record: "
                    "%d writing, %d reading)" % (self.version, self.cipher,
                                                  self.write_batches, self.read_batches))
        return "TLS %s %s: not pipelined through the provider: %s" % (
            self.version, self.cipher, self.reason)


_cache: dict[tuple[str, str], ProbeResult] = {}
_lock = threading.Lock()


def engine_registered_for(cipher: str) -> bool:
    """True when an ENGINE is registered as the default for ``cipher``
    (libssl then uses it before any provider)."""
    e = _ffi.ENGINE_get_cipher_engine(_NIDS[cipher])
    if not e:
        return False
    _ffi.ENGINE_finish(e)  # ENGINE_get_cipher_engine returned a functional reference
    return True


def probe(version: str = "1.3", cipher: str = "AES-128-GCM") -> ProbeResult:
    """Whether this libssl pipelines TLS ``version`` records of ``cipher``
    through the pipetls provider (see the module's text for how).

    Raises ProviderError when there is nothing to probe: OpenSSL < 3.5 or
    no provider module (:func:`pipetls.provider_path`)."""
    from .provider import load_provider, require_pipeline_api

    if version not in PROBE_SUITES:
        raise ValueError("version must be '1.2' or '1.3', not %r" % (version,))
    if cipher not in _AEAD or cipher not in PROBE_SUITES[version]:
        raise ValueError("cipher must be one of %s, not %r" % (", ".join(_AEAD), cipher))
    require_pipeline_api("pipelining TLS through the pipetls provider")
    with _lock:
        hit = _cache.get((version, cipher))
        if hit is not None:
            return hit
        if engine_registered_for(cipher):
            return ProbeResult(version, cipher, False, 0, 0, "",
                               "an ENGINE is registered for %s: libssl uses its cipher "
                               "before any provider's" % cipher)
        result = _run(load_provider(), version, cipher)
        _cache[(version, cipher)] = result
        return result


class _Probe:
    """Two SSL_CTX (server, client) made with ``propq`` and their SSL pair
    over memory BIOs; freed by close()."""

    def __init__(self, version: str, cipher: str, propq: Optional[bytes]) -> None:
        self.ptrs: list[tuple[Callable[[int], object], int]] = []  # (free function, pointer), freed in reverse
        vnum = _ffi.TLS1_3_VERSION if version == "1.3" else _ffi.TLS1_2_VERSION
        suite = PROBE_SUITES[version][cipher].encode()
        pkey = self._own(_ffi.EVP_PKEY_free, _ffi.EVP_PKEY_new_raw_private_key(
            _ffi.EVP_PKEY_ED25519, None, os.urandom(32), 32), "an Ed25519 key")
        cert = self._own(_ffi.X509_free, _ffi.X509_new(), "X509_new")
        _ffi.X509_gmtime_adj(_ffi.X509_getm_notBefore(cert), -60)
        _ffi.X509_gmtime_adj(_ffi.X509_getm_notAfter(cert), 3600)
        if _ffi.X509_set_pubkey(cert, pkey) != 1 or _ffi.X509_sign(cert, pkey, None) <= 0:
            raise self._fail("cannot make the probe's certificate")
        self.ssl: list[int] = []
        self.bios: list[tuple[int, int]] = []  # (read, write), owned by the SSL
        for server in (True, False):
            method = _ffi.TLS_server_method() if server else _ffi.TLS_client_method()
            ctx = self._own(_ffi.SSL_CTX_free, _ffi.SSL_CTX_new_ex(None, propq, method),
                            "SSL_CTX_new_ex")
            _ffi.SSL_CTX_set_min_proto_version(ctx, vnum)
            _ffi.SSL_CTX_set_max_proto_version(ctx, vnum)
            if version == "1.3":
                ok = _ffi.SSL_CTX_set_ciphersuites(ctx, suite)
            else:
                ok = _ffi.SSL_CTX_set_cipher_list(ctx, suite)
            if ok != 1:
                raise self._fail("this libssl does not offer %s" % suite.decode())
            if server and (_ffi.SSL_CTX_use_certificate(ctx, cert) != 1
                           or _ffi.SSL_CTX_use_PrivateKey(ctx, pkey) != 1):
                raise self._fail("cannot use the probe's certificate")
            _ffi.SSL_CTX_set_max_pipelines(ctx, _PIPES)
            _ffi.SSL_CTX_set_read_ahead(ctx, 1)
            _ffi.SSL_CTX_set_default_read_buffer_len(ctx, (_PIPES + 1) * (_RECORD + 512))
            ssl = self._own(_ffi.SSL_free, _ffi.SSL_new(ctx), "SSL_new")
            rbio, wbio = _ffi.BIO_new(_ffi.BIO_s_mem()), _ffi.BIO_new(_ffi.BIO_s_mem())
            if not rbio or not wbio:
                _ffi.BIO_free(rbio)
                _ffi.BIO_free(wbio)
                raise self._fail("BIO_new failed")
            _ffi.SSL_set_bio(ssl, rbio, wbio)  # freed by SSL_free
            self.bios.append((rbio, wbio))
            (_ffi.SSL_set_accept_state if server else _ffi.SSL_set_connect_state)(ssl)
            self.ssl.append(ssl)

    def _own(self, free: Callable[[int], object], ptr: Optional[int], what: str) -> int:
        if not ptr:
            raise self._fail("%s failed" % what)
        self.ptrs.append((free, ptr))
        return ptr

    @staticmethod
    def _fail(msg: str) -> PipetlsError:
        _ffi.ERR_clear_error()
        return PipetlsError("probe: " + msg)

    def close(self) -> None:
        while self.ptrs:
            free, ptr = self.ptrs.pop()
            free(ptr)
        _ffi.ERR_clear_error()

    def shuttle(self, src: int, dst: int, buf: ctypes.Array[ctypes.c_char]) -> None:
        """Move what ssl[src] wrote into ssl[dst]'s read BIO."""
        while True:
            n = _ffi.BIO_read(self.bios[src][1], buf, len(buf))
            if n <= 0:
                return
            _ffi.BIO_write(self.bios[dst][0], buf, n)

    def handshake(self) -> None:
        server, client = self.ssl
        buf = ctypes.create_string_buffer(1 << 16)
        for _ in range(20):
            _ffi.SSL_do_handshake(client)
            self.shuttle(1, 0, buf)
            _ffi.SSL_do_handshake(server)
            self.shuttle(0, 1, buf)
            if _ffi.SSL_is_init_finished(server) and _ffi.SSL_is_init_finished(client):
                _ffi.ERR_clear_error()
                return
        raise self._fail("the probe's handshake did not complete")


def _batched(meter: Union[Provider, Engine], before: str) -> int:
    """Batches of more than one record since ``before`` (a stats text)."""
    from .engine import EngineStats

    d = EngineStats.parse(meter.stats_text()) - EngineStats.parse(before)
    return sum(n for k, n in d.hist.items() if k > 1)


def _run(meter: Union[Provider, Engine], version: str, cipher: str,
         propq: Optional[bytes] = PROPQ) -> ProbeResult:
    """Hand _PIPES full records each way and count ``meter``'s batches."""
    p = _Probe(version, cipher, propq)
    try:
        p.handshake()
        server, client = p.ssl
        negotiated = "%s %s" % (
            (_ffi.SSL_get_version(server) or b"?").decode(),
            (_ffi.SSL_CIPHER_get_name(_ffi.SSL_get_current_cipher(server)) or b"?").decode())
        n = _PIPES * _RECORD
        data = ctypes.create_string_buffer(os.urandom(n), n)
        done = ctypes.c_size_t()
        stats = meter.stats_text
        before = stats()
        if _ffi.SSL_write_ex(server, data, n, ctypes.byref(done)) != 1 or done.value != n:
            raise p._fail("SSL_write failed")
        wrote = _batched(meter, before)
        buf = ctypes.create_string_buffer(1 << 17)
        p.shuttle(0, 1, buf)
        before = stats()
        got = bytearray()
        out = ctypes.create_string_buffer(n)
        while len(got) < n:
            if _ffi.SSL_read_ex(client, out, n, ctypes.byref(done)) != 1:
                raise p._fail("SSL_read failed after %d of %d bytes" % (len(got), n))
            got += out.raw[:done.value]
        read = _batched(meter, before)
        if bytes(got) != data.raw:
            raise p._fail("the data read is not what was written")
    except PipetlsError as exc:
        return ProbeResult(version, cipher, False, 0, 0, "", str(exc))
    finally:
        p.close()
    ok = wrote > 0 and read > 0
    if propq is None:  # the engine
        return ProbeResult(version, cipher, ok, wrote, read, negotiated, "" if ok else (
            "libssl (%s) handed the engine one record at a time (%s)%s"
            % (_ffi.openssl_version(), negotiated,
               ": libssl pipelines ENGINE ciphers in TLS 1.1/1.2 only" if version == "1.3"
               else "")))
    reason = "" if ok else (
        "libssl (%s) handed the provider one record at a time (%s); %s" % (
            _ffi.openssl_version(), negotiated,
            "TLS 1.3 pipelining through provider ciphers is patch 0002 (openssl_patches/, "
            "pipetls build-openssl)" if version == "1.3" else
            "TLS 1.2 pipelining through provider ciphers needs a libssl that supports it "
            "(openssl_patches/); the engine pipelines TLS 1.2 on any libssl"))
    return ProbeResult(version, cipher, ok, wrote, read, negotiated, reason)


def provider_error_for(what: str) -> Optional[ProviderError]:
    """Why ``what`` cannot pipeline TLS 1.3 through the provider here, or None."""
    try:
        r = probe("1.3")
    except ProviderError as exc:
        return exc
    return None if r.pipelined else ProviderError("%s: %s" % (what, r.reason))


def probe_engine(engine: Engine, version: str = "1.2",
                 cipher: str = "AES-128-GCM") -> ProbeResult:
    """Whether this libssl pipelines TLS ``version`` records of ``cipher``
    through ``engine``: the same exchange as :func:`probe`, on SSL_CTXs made
    without a property query, with ``engine`` registered as the default for
    its ciphers meanwhile (process-wide: it is unregistered again after, if
    it was not registered before).  Not cached."""
    if version not in PROBE_SUITES or cipher not in PROBE_SUITES[version]:
        raise ValueError("no probe suite for TLS %s %s" % (version, cipher))
    with _lock:
        was = engine.registered
        if not was:
            engine.register_default()
        try:
            return _run(engine, version, cipher, None)
        finally:
            if not was:
                engine.unregister()


# the suites `pipetls info` reports, per version: (EVP cipher, suite name)
INFO_SUITES = (
    [("1.3", c, s) for c, s in TLS13_SUITES.items()]
    + [("1.2", c, s) for c, s in TLS12_AEAD_SUITES.items()]
    + [("1.2", c, s) for c, s in TLS12_CBC_SUITES.items()])


def path_table(engine: Optional[Engine]) -> list[dict[str, Any]]:
    """Which path serves which suite and version here, each one measured:
    for every INFO_SUITES entry, {"tls", "suite", "cipher", "probed_with"
    (the suite of the probe: the ECDSA twin in TLS 1.2, same record
    cipher; the probe's certificate is Ed25519), "engine",
    "provider" (True / False / None: cannot be tried here), "served_by"
    ("engine", "provider", "engine or provider", "none"), "detail"}.

    The provider is probed first (a registered ENGINE would take its
    ciphers), then the engine, registered for the time of its probes."""
    from .provider import ALGORITHMS

    rows: list[dict[str, Any]] = []
    for version, cipher, suite in INFO_SUITES:
        row: dict[str, Any] = {"tls": version, "suite": suite, "cipher": cipher,
                               "probed_with": PROBE_SUITES[version][cipher],
                               "engine": None, "provider": None, "detail": []}
        if cipher in ALGORITHMS:
            try:
                r = probe(version, cipher)
                row["provider"] = r.pipelined
                if not r.pipelined:
                    row["detail"].append("provider: " + r.reason)
            except ProviderError as exc:
                if _ffi.OpenSSL_version_num() < _ffi.OPENSSL_3_5:
                    row["detail"].append("provider: needs OpenSSL >= 3.5 (this is %s)"
                                         % _ffi.openssl_version())
                else:
                    row["detail"].append("provider: %s" % exc)
        else:
            row["provider"] = False
            row["detail"].append("provider: does not offer %s" % cipher)
        rows.append(row)
    if engine is not None:
        offered = set(engine.info().get("ciphers", []))
        for row in rows:
            if row["cipher"] not in offered:
                row["engine"] = False
                row["detail"].append("engine: does not offer %s on this CPU" % row["cipher"])
                continue
            r = probe_engine(engine, row["tls"], row["cipher"])
            row["engine"] = r.pipelined
            if not r.pipelined:
                row["detail"].append("engine: " + r.reason)
    for row in rows:
        by = [name for name in ("engine", "provider") if row[name]]
        row["served_by"] = " or ".join(by) if by else "none"
        row["detail"] = "; ".join(row["detail"])
    return rows
