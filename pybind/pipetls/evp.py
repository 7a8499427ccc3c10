"""Many AEAD messages in one call: OpenSSL 3.5's cipher pipeline API.

``seal_many(cipher, key, ivs, aads, plaintexts)`` -> ``(ciphertexts, tags)``
and ``open_many(cipher, key, ivs, aads, ciphertexts, tags)`` -> plaintexts
encrypt or decrypt up to 32 independent messages ("pipes") under one key
through ``EVP_CipherPipelineEncryptInit`` / ``DecryptInit`` / ``Update`` /
``Final`` with the pipetls provider, which runs the pipes in parallel on its
lanes.  Pipe *i* is read only from ``plaintexts[i]`` (``aads[i]``,
``ivs[i]``) and written only to ``ciphertexts[i]`` / ``tags[i]``.

* Ciphers: ``"AES-128-GCM"``, ``"AES-256-GCM"``, ``"ChaCha20-Poly1305"``
  (:data:`CIPHERS`: key, IV and tag sizes); 12-byte IVs, 16-byte tags.
* ``aads``: ``None`` (no AAD) or one buffer per pipe (empty ones allowed).
* Inputs: any contiguous buffer (bytes, bytearray, memoryview, array,
  mmap); their memory is handed to OpenSSL as is, never copied.  Outputs
  are fresh ``bytearray`` objects, one per pipe (tags are ``bytes``).
* Everything is checked before OpenSSL is touched: the cipher name, key and
  IV sizes, tag sizes, the number of pipes (1..32, the same in every list)
  and the message lengths; a bad value raises
  :class:`~pipetls.errors.ConfigError` (a ``ValueError``) naming the limit,
  a wrong type :class:`~pipetls.errors.ConfigTypeError` (a ``TypeError``).
* A tag that does not verify raises :class:`~pipetls.errors.TagError`
  (``.pipes``: which pipes failed, found by checking each pipe alone with
  the default provider) and no plaintext of *any* pipe is returned: the
  output buffers are cleansed before they are dropped.

It needs a process whose libcrypto is >= 3.5 (``PIPETLS_OPENSSL=<prefix>``,
:mod:`pipetls._libload`) and the provider (:func:`pipetls.provider_path`);
elsewhere (OpenSSL 3.0) every call raises
:class:`~pipetls.errors.ProviderError` saying so.  :class:`PipelineCipher`
keeps the cipher contexts between calls (the key schedule is computed once);
the module functions make a temporary one.

``seal_each`` / ``open_each`` do the same work one message at a time with
``EVP_EncryptInit_ex`` / ``Update`` / ``Final_ex`` of another provider
(``provider=default`` unless told): the reference the tests and ``pipetls
bench --scenario evp`` compare with.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from ctypes import addressof, c_int, c_size_t, c_void_p
from dataclasses import dataclass
from typing import Optional, Sequence

from . import _ffi
from ._buffers import pinned_buffer
from ._ffi import OSSL_PARAM, check, check_ptr, drain_errors, drain_errors_detailed
from .errors import ConfigError, ConfigTypeError, ProviderError, TagError
from .provider import Provider, load_provider, require_pipeline_api

__all__ = ["seal_many", "open_many", "seal_each", "open_each", "PipelineCipher", "AeadSpec",
           "fetch_cipher", "CIPHERS", "MAX_PIPES", "IV_SIZE", "TAG_SIZE"]

MAX_PIPES = _ffi.EVP_MAX_PIPES  # EVP_MAX_PIPES, SSL_MAX_PIPELINES
IV_SIZE = 12
TAG_SIZE = 16
INT_MAX = (1 << 31) - 1


@dataclass(frozen=True)
class AeadSpec:
    name: str
    key_size: int
    iv_size: int
    tag_size: int
    max_bytes: int  # the algorithm's limit on one message


CIPHERS: dict[str, AeadSpec] = {
    # NIST SP 800-38D: at most 2^39 - 256 bits of plaintext per invocation
    "AES-128-GCM": AeadSpec("AES-128-GCM", 16, IV_SIZE, TAG_SIZE, (1 << 36) - 32),
    "AES-256-GCM": AeadSpec("AES-256-GCM", 32, IV_SIZE, TAG_SIZE, (1 << 36) - 32),
    # RFC 8439 section 2.8: at most 2^38 - 64 bytes (a 32-bit block counter)
    "ChaCha20-Poly1305": AeadSpec("ChaCha20-Poly1305", 32, IV_SIZE, TAG_SIZE, (1 << 38) - 64),
}
_BY_LOWER = {k.lower(): v for k, v in CIPHERS.items()}
_BUFFER_TYPES = "bytes, bytearray or memoryview"


# --------------------------------------------------------------------------
# Validation (before OpenSSL is touched)
# --------------------------------------------------------------------------
def _spec(cipher: object) -> AeadSpec:
    if not isinstance(cipher, str):
        raise ConfigTypeError("cipher must be a str (one of %s), not %s"
                              % (", ".join(CIPHERS), type(cipher).__name__), knob="cipher")
    spec = _BY_LOWER.get(cipher.lower())
    if spec is None:
        raise ConfigError("cipher %r is not one of %s" % (cipher, ", ".join(CIPHERS)),
                          knob="cipher")
    return spec


def _nbytes(obj: object, what: str) -> int:
    if isinstance(obj, (str, int)) or obj is None:
        raise ConfigTypeError("%s must be %s, not %s" % (what, _BUFFER_TYPES, type(obj).__name__),
                              knob=what.split("[")[0])
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigTypeError("%s must be %s, not %s" % (what, _BUFFER_TYPES, type(obj).__name__),
                              knob=what.split("[")[0]) from None
    with view:
        if not view.c_contiguous:
            raise ConfigTypeError("%s must be a contiguous buffer" % what, knob=what.split("[")[0])
        return view.nbytes


def _pipes(obj: object, what: str) -> Sequence[object]:
    """A list/tuple of per-pipe buffers (a buffer itself is refused)."""
    if isinstance(obj, (bytes, bytearray, memoryview, str)) or not isinstance(obj, (list, tuple)):
        raise ConfigTypeError("%s must be a list (or tuple) with one buffer per pipe, not %s"
                              % (what, type(obj).__name__), knob=what)
    if not 1 <= len(obj) <= MAX_PIPES:
        raise ConfigError("%s: %d pipes; a pipeline has 1 to %d (EVP_MAX_PIPES)"
                          % (what, len(obj), MAX_PIPES), knob=what)
    return obj


def _validate(spec: AeadSpec, key: object, ivs: object, aads: object, data: object,
              data_name: str, tags: object = None, serial: bool = False) -> int:
    """Checks every argument; returns the number of pipes."""
    n_key = _nbytes(key, "key")
    if n_key != spec.key_size:
        raise ConfigError("key is %d bytes; %s takes a %d-byte key"
                          % (n_key, spec.name, spec.key_size), knob="key")
    lists = [("ivs", _pipes(ivs, "ivs")), (data_name, _pipes(data, data_name))]
    if aads is not None:
        lists.append(("aads", _pipes(aads, "aads")))
    if tags is not None:
        lists.append(("tags", _pipes(tags, "tags")))
    n = len(lists[0][1])
    if any(len(seq) != n for _, seq in lists):
        raise ConfigError("the pipe counts disagree (%s): every list has one entry per pipe"
                          % ", ".join("%d %s" % (len(seq), name) for name, seq in lists),
                          knob="pipes")
    limit = min(spec.max_bytes, INT_MAX) if serial else spec.max_bytes
    for name, seq in lists:
        for i, item in enumerate(seq):
            size = _nbytes(item, "%s[%d]" % (name, i))
            if name == "ivs" and size != spec.iv_size:
                raise ConfigError("ivs[%d] is %d bytes; %s pipelines take %d-byte IVs"
                                  % (i, size, spec.name, spec.iv_size), knob="ivs")
            if name == "tags" and size != spec.tag_size:
                raise ConfigError("tags[%d] is %d bytes; %s tags are %d bytes"
                                  % (i, size, spec.name, spec.tag_size), knob="tags")
            if name in (data_name, "aads") and size > limit:
                raise ConfigError("%s[%d] is %d bytes; the limit for one %s message is %d"
                                  % (name, i, size, spec.name, limit), knob=name)
    return n


# --------------------------------------------------------------------------
# One batch as C sees it: pointer and length arrays
# --------------------------------------------------------------------------
class _Arrays:
    """The arrays EVP_CipherPipeline* takes for ``n`` pipes, and the
    OSSL_PARAM that carries the per-pipe tag pointers."""

    def __init__(self, n: int, tag_size: int) -> None:
        ptrs, sizes = c_void_p * n, c_size_t * n
        self.n = n
        self.iv, self.aad, self.inp, self.out, self.fin, self.tag = (
            ptrs(), ptrs(), ptrs(), ptrs(), ptrs(), ptrs())
        self.aad_len, self.in_len, self.out_size, self.outl, self.fin_size = (
            sizes(), sizes(), sizes(), sizes(), sizes())
        self.has_aad = False
        # OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG: an octet pointer whose value is
        # the address of the array of tag pointers (unsigned char **)
        self._tag_holder = c_void_p(addressof(self.tag))
        self.tag_param = (OSSL_PARAM * 2)()
        self.tag_param[0].key = _ffi.OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG
        self.tag_param[0].data_type = _ffi.OSSL_PARAM_OCTET_PTR
        self.tag_param[0].data = addressof(self._tag_holder)
        self.tag_param[0].data_size = tag_size
        self.tag_param[0].return_size = _ffi.OSSL_PARAM_UNMODIFIED


_SCRATCH = ctypes.create_string_buffer(1)  # the output of an empty pipe (never written)


def _out_buffers(sizes: list[int]) -> list[bytearray]:
    return [bytearray(s) for s in sizes]


def _cleanse(bufs: Sequence[bytearray]) -> None:
    for b in bufs:
        if b:
            with pinned_buffer(b, writable=True) as (addr, size):
                _ffi.OPENSSL_cleanse(addr, size)


class PipelineCipher:
    """A key of one AEAD algorithm on the pipetls provider, with its cipher
    contexts kept between calls (the provider computes the key schedule
    once).  ``provider``: a :class:`~pipetls.provider.Provider`, default
    :func:`~pipetls.provider.load_provider` (the shared one).

    Thread safety: one call at a time per object (a lock serialises them);
    use one object per thread for parallel callers.
    """

    def __init__(self, cipher: str, key: object, *, provider: Optional[Provider] = None) -> None:
        self.spec = _spec(cipher)
        n_key = _nbytes(key, "key")
        if n_key != self.spec.key_size:
            raise ConfigError("key is %d bytes; %s takes a %d-byte key"
                              % (n_key, self.spec.name, self.spec.key_size), knob="key")
        require_pipeline_api("pipetls.evp")
        self.provider = provider if provider is not None else load_provider()
        self._cipher = self.provider.cipher(self.spec.name)
        if not (_ffi.EVP_CIPHER_can_pipeline(self._cipher, 1)
                and _ffi.EVP_CIPHER_can_pipeline(self._cipher, 0)):
            drain_errors()
            raise ProviderError("%s of %s cannot pipeline (EVP_CIPHER_can_pipeline)"
                                % (self.spec.name, self.provider.path))
        self._key = ctypes.create_string_buffer(self.spec.key_size)  # our one copy of it
        with pinned_buffer(key) as (addr, _):
            ctypes.memmove(self._key, addr, self.spec.key_size)
        self._ctx: dict[int, Optional[int]] = {1: None, 0: None}
        self._keyed: dict[int, bool] = {1: False, 0: False}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ life
    def close(self) -> None:
        with self._lock:
            for enc in (1, 0):
                self._drop_ctx(enc)
            if self._key is not None:
                _ffi.OPENSSL_cleanse(self._key, len(self._key))

    def __enter__(self) -> PipelineCipher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            for enc in (1, 0):
                self._drop_ctx(enc)
        except Exception:
            pass

    def _drop_ctx(self, enc: int) -> None:
        ctx = self._ctx.get(enc)
        if ctx:
            _ffi.EVP_CIPHER_CTX_free(ctx)
        self._ctx[enc] = None
        self._keyed[enc] = False

    def _context(self, enc: int) -> int:
        ctx = self._ctx[enc]
        if ctx is None:
            ctx = check_ptr(_ffi.EVP_CIPHER_CTX_new(), "EVP_CIPHER_CTX_new failed")
            self._ctx[enc] = ctx
            self._keyed[enc] = False
        return ctx

    # ------------------------------------------------------------------- core
    def _run(self, enc: int, a: _Arrays, exact: bool = True) -> bool:
        """One batch through EVP_CipherPipeline*.  ``exact``: the output of
        the update is checked and the final's output pointers follow it;
        otherwise ``a.fin``/``a.fin_size`` are used as prepared (each output
        buffer's end, nothing left: what these stream AEADs produce).
        Encrypt: raises on failure.  Decrypt: False when the final failed
        (a tag), the error queue left for the caller to drain."""
        ctx = self._context(enc)
        init = _ffi.EVP_CipherPipelineEncryptInit if enc else _ffi.EVP_CipherPipelineDecryptInit
        # the first init fetches the cipher into the context; later ones pass
        # NULL so the provider context (and its key schedule) is kept
        cipher = None if self._keyed[enc] else self._cipher
        try:
            check(init(ctx, cipher, self._key, self.spec.key_size, a.n, a.iv, self.spec.iv_size),
                  "EVP_CipherPipeline%sInit(%s, %d pipes) failed"
                  % ("Encrypt" if enc else "Decrypt", self.spec.name, a.n))
            self._keyed[enc] = True
            if not enc:
                check(_ffi.EVP_CIPHER_CTX_set_params(ctx, a.tag_param),
                      "setting the %d pipeline tags failed" % a.n)
            if a.has_aad:
                check(_ffi.EVP_CipherPipelineUpdate(ctx, None, a.outl, None, a.aad, a.aad_len),
                      "EVP_CipherPipelineUpdate (AAD) failed")
            check(_ffi.EVP_CipherPipelineUpdate(ctx, a.out, a.outl, a.out_size, a.inp, a.in_len),
                  "EVP_CipherPipelineUpdate failed")
            done: list[int] = []
            if exact:
                for i in range(a.n):
                    got = a.outl[i]
                    if got > a.out_size[i]:
                        raise ProviderError("pipe %d: the update wrote %d bytes into %d"
                                            % (i, got, a.out_size[i]))
                    done.append(got)
                    a.fin[i] = (a.out[i] or 0) + got
                    a.fin_size[i] = a.out_size[i] - got
            ok = _ffi.EVP_CipherPipelineFinal(ctx, a.fin, a.outl, a.fin_size) == 1
            if not enc and not ok:
                self._drop_ctx(enc)  # a fresh context for the next batch
                return False
            check(int(ok), "EVP_CipherPipelineFinal failed")
            if exact:
                for i in range(a.n):
                    if done[i] + a.outl[i] != a.in_len[i]:
                        raise ProviderError("pipe %d: %d bytes in, %d out"
                                            % (i, a.in_len[i], done[i] + a.outl[i]))
            if enc:
                check(_ffi.EVP_CIPHER_CTX_get_params(ctx, a.tag_param),
                      "reading the %d pipeline tags failed" % a.n)
            return True
        except BaseException:
            self._drop_ctx(enc)
            raise

    def _fill(self, stack: contextlib.ExitStack, a: _Arrays, ivs: Sequence[object],
              aads: Optional[Sequence[object]], inputs: Sequence[object],
              outputs: Sequence[object], tags: Sequence[object], tags_writable: bool) -> None:
        """Pins every buffer for the life of ``stack`` and writes its address
        and length into ``a`` (no copies)."""
        pin = stack.enter_context
        scratch = addressof(_SCRATCH)
        for i in range(a.n):
            a.iv[i] = pin(pinned_buffer(ivs[i]))[0]
            addr, size = pin(pinned_buffer(inputs[i]))
            a.inp[i], a.in_len[i] = addr or scratch, size
            addr, size = pin(pinned_buffer(outputs[i], writable=True))
            base = addr if size and addr else scratch
            a.out[i], a.out_size[i] = base, size
            a.fin[i], a.fin_size[i] = (base + size if size else scratch), 0
            a.tag[i] = pin(pinned_buffer(tags[i], writable=tags_writable))[0]
        a.has_aad = aads is not None
        if aads is not None:
            for i in range(a.n):
                addr, size = pin(pinned_buffer(aads[i]))
                a.aad[i], a.aad_len[i] = addr or addressof(_SCRATCH), size

    # ---------------------------------------------------------------- the API
    def seal_many(self, ivs: Sequence[object], aads: Optional[Sequence[object]],
                  plaintexts: Sequence[object]) -> tuple[list[bytearray], list[bytes]]:
        """Encrypt pipe by pipe; returns (ciphertexts, tags)."""
        n = _validate(self.spec, self._key, ivs, aads, plaintexts, "plaintexts")
        outs = _out_buffers([_nbytes(p, "plaintexts") for p in plaintexts])
        tag_bufs = [bytearray(self.spec.tag_size) for _ in range(n)]
        a = _Arrays(n, self.spec.tag_size)
        with self._lock, contextlib.ExitStack() as stack:
            self._fill(stack, a, ivs, aads, plaintexts, outs, tag_bufs, True)
            self._run(1, a)
        return outs, [bytes(t) for t in tag_bufs]

    def open_many(self, ivs: Sequence[object], aads: Optional[Sequence[object]],
                  ciphertexts: Sequence[object], tags: Sequence[object]) -> list[bytearray]:
        """Decrypt and verify pipe by pipe; TagError (and no plaintext at
        all) if any tag fails."""
        n = _validate(self.spec, self._key, ivs, aads, ciphertexts, "ciphertexts", tags)
        outs = _out_buffers([_nbytes(c, "ciphertexts") for c in ciphertexts])
        a = _Arrays(n, self.spec.tag_size)
        ok = False
        try:
            with self._lock, contextlib.ExitStack() as stack:
                self._fill(stack, a, ivs, aads, ciphertexts, outs, tags, False)
                ok = self._run(0, a)
        finally:
            if not ok:
                _cleanse(outs)  # nothing of any pipe reaches the caller
        if ok:
            return outs
        lines, codes = drain_errors_detailed()  # the provider says "pipe K of N"
        failed = _failing_pipes(self.spec, self._key, ivs, aads, ciphertexts, tags)
        if not failed:
            raise ProviderError("EVP_CipherPipelineFinal(%s, %d pipes) failed, yet every tag "
                                "verifies with the default provider" % (self.spec.name, n),
                                lines, codes)
        raise TagError(_tag_message(self.spec, failed), failed, lines, codes)


def _tag_message(spec: AeadSpec, failed: list[int]) -> str:
    if len(failed) == 1:
        what = "the tag of pipe %d does not verify" % failed[0]
    else:
        what = "the tags of pipes %s do not verify" % ", ".join(map(str, failed))
    return "%s: %s; no plaintext of any pipe is returned" % (spec.name, what)


def _failing_pipes(spec: AeadSpec, key: object, ivs: Sequence[object],
                   aads: Optional[Sequence[object]], ciphertexts: Sequence[object],
                   tags: Sequence[object]) -> list[int]:
    """Which pipes' tags fail, each checked alone with the default provider."""
    out = []
    for i in range(len(ivs)):
        try:
            pts = open_each(spec.name, key, [ivs[i]], None if aads is None else [aads[i]],
                            [ciphertexts[i]], [tags[i]])
            _cleanse(pts)
        except TagError:
            out.append(i)
    return out


# --------------------------------------------------------------------------
# The module API
# --------------------------------------------------------------------------
def seal_many(cipher: str, key: object, ivs: Sequence[object], aads: Optional[Sequence[object]],
              plaintexts: Sequence[object], *,
              provider: Optional[Provider] = None) -> tuple[list[bytearray], list[bytes]]:
    """Encrypt ``len(plaintexts)`` messages (1..32) in one pipelined call
    of the pipetls provider; returns ``(ciphertexts, tags)``."""
    spec = _spec(cipher)
    _validate(spec, key, ivs, aads, plaintexts, "plaintexts")
    with PipelineCipher(spec.name, key, provider=provider) as pc:
        return pc.seal_many(ivs, aads, plaintexts)


def open_many(cipher: str, key: object, ivs: Sequence[object], aads: Optional[Sequence[object]],
              ciphertexts: Sequence[object], tags: Sequence[object], *,
              provider: Optional[Provider] = None) -> list[bytearray]:
    """Decrypt and verify ``len(ciphertexts)`` messages (1..32) in one
    pipelined call; TagError naming the failing pipes, and no plaintext,
    if any tag does not verify."""
    spec = _spec(cipher)
    _validate(spec, key, ivs, aads, ciphertexts, "ciphertexts", tags)
    with PipelineCipher(spec.name, key, provider=provider) as pc:
        return pc.open_many(ivs, aads, ciphertexts, tags)


# --------------------------------------------------------------------------
# One message at a time (the reference): EVP_EncryptInit_ex / Update / Final
# --------------------------------------------------------------------------
_fetched: dict[tuple[str, bytes], int] = {}
_fetched_lock = threading.Lock()


def fetch_cipher(name: str, properties: bytes = b"provider=default") -> int:
    """``EVP_CIPHER_fetch(NULL, name, properties)``, cached for the process."""
    with _fetched_lock:
        c = _fetched.get((name, properties))
        if c is None:
            c = check_ptr(_ffi.EVP_CIPHER_fetch(None, name.encode(), properties),
                          "EVP_CIPHER_fetch(%s, %s) failed" % (name, properties.decode()))
            _fetched[(name, properties)] = c
        return c


class _Serial:
    """One context of a one-at-a-time cipher, keyed once."""

    def __init__(self, spec: AeadSpec, key: object, enc: int, properties: bytes) -> None:
        self.spec, self.enc = spec, enc
        self.cipher = fetch_cipher(spec.name, properties)
        self.ctx = check_ptr(_ffi.EVP_CIPHER_CTX_new(), "EVP_CIPHER_CTX_new failed")
        init = _ffi.EVP_EncryptInit_ex if enc else _ffi.EVP_DecryptInit_ex
        try:
            with pinned_buffer(key) as (kaddr, _):
                check(init(self.ctx, self.cipher, None, kaddr, None), "%s init failed" % spec.name)
        except BaseException:
            self.close()
            raise
        self.outl = c_int()
        self.outl_ref = ctypes.byref(self.outl)

    def close(self) -> None:
        if self.ctx:
            _ffi.EVP_CIPHER_CTX_free(self.ctx)
            self.ctx = 0

    def one(self, iv: int, aad: Optional[tuple[int, int]], inp: int, n: int, out: int,
            tag: int) -> bool:
        """One message; the key schedule stays (init with a NULL key)."""
        ctx, ref = self.ctx, self.outl_ref
        if self.enc:
            init, update, final = (_ffi.EVP_EncryptInit_ex, _ffi.EVP_EncryptUpdate,
                                   _ffi.EVP_EncryptFinal_ex)
        else:
            init, update, final = (_ffi.EVP_DecryptInit_ex, _ffi.EVP_DecryptUpdate,
                                   _ffi.EVP_DecryptFinal_ex)
        check(init(ctx, None, None, None, iv), "%s: setting the IV failed" % self.spec.name)
        if not self.enc:
            check(_ffi.EVP_CIPHER_CTX_ctrl(ctx, _ffi.EVP_CTRL_AEAD_SET_TAG, self.spec.tag_size, tag),
                  "setting the tag failed")
        if aad is not None and aad[1]:
            check(update(ctx, None, ref, aad[0], aad[1]), "AAD update failed")
        check(update(ctx, out, ref, inp, n), "update failed")
        done = self.outl.value
        if final(ctx, out + done, ref) != 1:
            if self.enc:
                check(0, "final failed")
            return False
        if self.enc:
            check(_ffi.EVP_CIPHER_CTX_ctrl(ctx, _ffi.EVP_CTRL_AEAD_GET_TAG, self.spec.tag_size, tag),
                  "reading the tag failed")
        return True


def _each(spec: AeadSpec, key: object, enc: int, ivs: Sequence[object],
          aads: Optional[Sequence[object]], inputs: Sequence[object], tags: Sequence[object],
          properties: bytes) -> tuple[list[bytearray], list[int]]:
    """The one-at-a-time loop: (outputs, pipes whose tag failed).  ``tags``
    are written (enc) or read (EVP_CTRL_AEAD_SET_TAG copies them)."""
    outs = _out_buffers([_nbytes(x, "inputs") for x in inputs])
    failed: list[int] = []
    s = _Serial(spec, key, enc, properties)
    scratch = addressof(_SCRATCH)
    try:
        with contextlib.ExitStack() as stack:
            pin = stack.enter_context
            for i in range(len(inputs)):
                aad = pin(pinned_buffer(aads[i])) if aads is not None else None
                inp, size = pin(pinned_buffer(inputs[i]))
                out = pin(pinned_buffer(outs[i], writable=True))[0] if size else 0
                tag = pin(pinned_buffer(tags[i], writable=bool(enc)))[0]
                if not s.one(pin(pinned_buffer(ivs[i]))[0], aad, inp or scratch, size,
                             out or scratch, tag):
                    failed.append(i)
    finally:
        s.close()
        if failed:
            _cleanse(outs)
    return outs, failed


def seal_each(cipher: str, key: object, ivs: Sequence[object], aads: Optional[Sequence[object]],
              plaintexts: Sequence[object],
              properties: bytes = b"provider=default") -> tuple[list[bytearray], list[bytes]]:
    """:func:`seal_many`'s work one message at a time with the cipher that
    ``properties`` fetches (default provider), EVP_EncryptInit_ex / Update /
    Final_ex per message."""
    spec = _spec(cipher)
    n = _validate(spec, key, ivs, aads, plaintexts, "plaintexts", serial=True)
    tag_bufs = [bytearray(spec.tag_size) for _ in range(n)]
    outs, _ = _each(spec, key, 1, ivs, aads, plaintexts, tag_bufs, properties)
    return outs, [bytes(t) for t in tag_bufs]


def open_each(cipher: str, key: object, ivs: Sequence[object], aads: Optional[Sequence[object]],
              ciphertexts: Sequence[object], tags: Sequence[object],
              properties: bytes = b"provider=default") -> list[bytearray]:
    """:func:`open_many`'s work one message at a time (default provider);
    TagError naming every failing pipe, and no plaintext, if any fails."""
    spec = _spec(cipher)
    _validate(spec, key, ivs, aads, ciphertexts, "ciphertexts", tags, serial=True)
    outs, failed = _each(spec, key, 0, ivs, aads, ciphertexts, tags, properties)
    if failed:
        lines, codes = drain_errors()
        raise TagError(_tag_message(spec, failed), failed, lines, codes)
    return outs
