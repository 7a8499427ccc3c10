"""Loading and driving the pipetls ENGINE (``pipetls.so``).

Registration is process-wide.  Once :meth:`Engine.register_default` has run,
*every* user of the engine's ciphers in this process goes through the engine:
pipetls connections, Python's own ``ssl`` module (same libcrypto), PEM
decryption, anything that calls ``EVP_aes_128_gcm()``.  Outside a pipelined
batch the engine behaves exactly like OpenSSL's own ciphers (it routes to
them).  Most programs want one shared engine: :func:`load_engine`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
from typing import Any, Optional, Union
import threading
import warnings
import weakref

from . import _ffi
from ._knobs import as_bool, in_range
from ._ffi import check, check_ptr, drain_errors
from .errors import ClosedError, ConfigError, ConfigTypeError, EngineError

__all__ = ["Engine", "EngineStats", "engine_path", "load_engine", "shared_engine"]

THREADS_RANGE = (1, _ffi.PIPETLS_MAX_LANES)
INLINE_BELOW_RANGE = (0, 1 << 30)
CBC_HMAC_MODES = ("auto", "stitched", "multiblock")
CPUS_RANGE = (0, _ffi.PIPETLS_MAX_LANES)

_HERE = os.path.dirname(os.path.abspath(__file__))


# realpath -> the live Engine loaded from it (OpenSSL allows one per library).
_live: weakref.WeakValueDictionary[str, Engine] = weakref.WeakValueDictionary()
_live_lock = threading.Lock()


def engine_path() -> str:
    """Path of the engine shared object.

    1. ``$PIPETLS_ENGINE`` when set (it must exist);
    2. ``pipetls.so`` beside this module (installed wheels);
    3. in a source checkout, ``<repo>/build/pipetls.so`` (never a
       sanitizer build elsewhere under build/: those need their runtime
       preloaded).

    Raises EngineError when none is found.
    """
    env = os.environ.get("PIPETLS_ENGINE")
    if env:
        if not os.path.isfile(env):
            raise EngineError("PIPETLS_ENGINE=%s: no such file" % env)
        return os.path.abspath(env)
    bundled = os.path.join(_HERE, "pipetls.so")
    if os.path.isfile(bundled):
        return bundled
    repo = os.path.dirname(os.path.dirname(_HERE))
    if os.path.isfile(os.path.join(repo, "engine", "pipetls.h")):
        candidate = os.path.join(repo, "build", "pipetls.so")
        if os.path.isfile(candidate):
            return candidate
        raise EngineError(
            "pipetls.so not found: build it (cmake -S %s -B %s/build && cmake --build "
            "%s/build) or set PIPETLS_ENGINE" % (repo, repo, repo)
        )
    raise EngineError("pipetls.so not found beside %s; set PIPETLS_ENGINE" % _HERE)


@dataclasses.dataclass
class EngineStats:
    """The engine's counters (STATS control command), see pipetls.h."""

    lanes: int = 0
    workers: int = 0
    inline_below: int = 0
    batches: int = 0
    pipelined_batches: int = 0
    inline_batches: int = 0
    records: int = 0
    bytes: int = 0
    failed_batches: int = 0
    crypto_ns: int = 0
    batch_ns: int = 0
    stream_calls: int = 0  # plain EVP use: TLS 1.3 records, lone CBC records, ...
    stream_bytes: int = 0
    # records whose plaintext the lanes read from the caller's buffer (the
    # patched libssl's out-of-place writes, patch 0004): no copy by libssl
    plaintext_records: int = 0
    # records of pipelined decryptions written back to back into one buffer:
    # the patched libssl decrypting into the reader's buffer (patch 0006)
    contiguous_records: int = 0
    # CBC-HMAC records encrypted one at a time / in MULTIBLOCK groups of 4 / of 8
    cbc_hmac_stitched: int = 0
    cbc_hmac_mb4: int = 0
    cbc_hmac_mb8: int = 0
    adaptive: int = 0  # ADAPTIVE: workers help only where a core is free
    cpus: int = 0  # the cores adaptive lanes keep busy at most
    batches_kept: int = 0  # batches their caller ran alone: every core busy
    records_kept: int = 0
    kept_busy_callers: int = 0  # ... because callers alone filled the CPUs
    kept_busy_workers: int = 0  # ... because callers and busy workers did
    kept_no_gain: int = 0  # ... because recent batches on the lanes gained nothing
    batches_narrowed: int = 0  # batches sent out with fewer lane slots: few free cores
    worker_declines: int = 0  # a worker left a batch alone: no free core
    backoffs: int = 0  # times the lanes were found to gain nothing
    spin_stops: int = 0  # an idle worker's spin lost its core: no spinning for a while
    stalls: int = 0  # batches that stalled on a lane not running: kept a while
    caller_wait_ns: int = 0  # callers waiting for workers after their own claims
    # SSL_MODE_ASYNC: batches handed to the lanes while their ASYNC job paused
    async_batches: int = 0
    async_pauses: int = 0
    async_resumes: int = 0  # fewer than pauses: jobs abandoned while paused
    async_paused_ns: int = 0
    hist: dict[int, int] = dataclasses.field(default_factory=dict)  # K records -> batches
    lanes_records: dict[int, int] = dataclasses.field(default_factory=dict)  # lane -> records
    lanes_bytes: dict[int, int] = dataclasses.field(default_factory=dict)  # lane -> bytes
    lanes_crypto_ns: dict[int, int] = dataclasses.field(default_factory=dict)  # lane -> ns
    format: int = 1
    extra: dict[str, Union[int, str]] = dataclasses.field(default_factory=dict)  # keys this version does not know

    @classmethod
    def parse(cls, text: str) -> EngineStats:
        s = cls()
        names = {f.name for f in dataclasses.fields(cls)}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            key, value = parts
            try:
                v = int(value)
            except ValueError:
                s.extra[key] = value
                continue
            if key == "pipetls.stats":
                s.format = v
            elif key.startswith("hist."):
                s.hist[int(key[5:])] = v
            elif key.startswith("lane.") and key.count(".") == 2:
                _, lane, what = key.split(".")
                if what == "records":
                    s.lanes_records[int(lane)] = v
                elif what == "bytes":
                    s.lanes_bytes[int(lane)] = v
                elif what == "crypto_ns":
                    s.lanes_crypto_ns[int(lane)] = v
                else:
                    s.extra[key] = v
            elif key in names and key not in ("hist", "lanes_records", "lanes_bytes",
                                                    "lanes_crypto_ns", "extra"):
                setattr(s, key, v)
            else:
                s.extra[key] = v
        return s

    @property
    def max_batch(self) -> int:
        """Largest batch seen (records), 0 if none."""
        return max((k for k, n in self.hist.items() if n), default=0)

    @property
    def mean_batch(self) -> float:
        return self.records / self.batches if self.batches else 0.0

    def __sub__(self, other: EngineStats) -> EngineStats:
        """Counters accumulated between two snapshots (other taken first)."""
        d = dataclasses.replace(self)
        for f in ("batches", "pipelined_batches", "inline_batches", "records", "bytes",
                  "failed_batches", "crypto_ns", "batch_ns", "stream_calls", "stream_bytes",
                  "plaintext_records", "contiguous_records", "cbc_hmac_stitched", "cbc_hmac_mb4", "cbc_hmac_mb8",
                  "batches_kept", "records_kept", "kept_busy_callers", "kept_busy_workers",
                  "kept_no_gain", "batches_narrowed", "worker_declines", "backoffs",
                  "spin_stops", "stalls",
                  "caller_wait_ns",
                  "async_batches", "async_pauses", "async_resumes", "async_paused_ns"):
            setattr(d, f, getattr(self, f) - getattr(other, f))
        d.hist = {k: v - other.hist.get(k, 0) for k, v in self.hist.items()
                  if v - other.hist.get(k, 0)}
        d.lanes_records = {k: v - other.lanes_records.get(k, 0) for k, v in self.lanes_records.items()}
        d.lanes_bytes = {k: v - other.lanes_bytes.get(k, 0) for k, v in self.lanes_bytes.items()}
        d.lanes_crypto_ns = {k: v - other.lanes_crypto_ns.get(k, 0)
                             for k, v in self.lanes_crypto_ns.items()}
        return d


def _release(e: int, registered_flag: list[bool]) -> None:
    # Order: take the ciphers out of OpenSSL's tables, drop our functional
    # reference, then our structural one.  Cipher contexts still using the
    # engine hold their own references, so the .so stays until they go.
    if registered_flag[0]:
        _ffi.ENGINE_unregister_ciphers(e)
        registered_flag[0] = False
    _ffi.ENGINE_finish(e)
    _ffi.ENGINE_free(e)
    _ffi.ERR_clear_error()


class Engine:
    """A loaded pipetls engine.

    ``Engine(path=None, threads=None, inline_below=None, register=False)``
    loads ``path`` (default :func:`engine_path`) through OpenSSL's "dynamic"
    engine (SO_PATH, ID=pipetls, LOAD), applies the settings and initialises
    it.  ``register=True`` (or :meth:`register_default`) makes it the default
    for its ciphers, process-wide.  ``close()`` unregisters and unloads it.
    """

    def __init__(self, path: Union[str, bytes, os.PathLike[str], os.PathLike[bytes], None] = None,
                 *, threads: Optional[int] = None, inline_below: Optional[int] = None,
                 register: bool = False) -> None:
        if threads is not None:
            threads = in_range("threads", threads, *THREADS_RANGE)
        if inline_below is not None:
            inline_below = in_range("inline_below", inline_below, *INLINE_BELOW_RANGE)
        if path is None:
            path = engine_path()
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise ConfigTypeError("path must be a path, not %s" % type(path).__name__, knob="path")
        path_str = os.fsdecode(path)
        if not os.path.isfile(path_str):
            raise EngineError("engine %s: no such file" % path_str)
        self.path = os.path.abspath(path_str)
        self._e: Optional[int] = None
        key = os.path.realpath(self.path)
        with _live_lock:
            other = _live.get(key)
        if other is not None and not other.closed:
            # OpenSSL binds a library's bind_engine() into one ENGINE at a
            # time (engine_add_dynamic_id); a second LOAD fails obscurely.
            raise EngineError(
                "%s is already loaded in this process (%r); OpenSSL allows one "
                "ENGINE per engine library: use that one (pipetls.load_engine() "
                "returns the shared engine) or close it first" % (self.path, other))
        e = check_ptr(_ffi.ENGINE_by_id(b"dynamic"), "OpenSSL has no 'dynamic' engine",
                      exc=EngineError)
        try:
            for cmd, arg in ((b"SO_PATH", os.fsencode(self.path)),
                             (b"ID", _ffi.PIPETLS_ENGINE_ID),
                             (b"LOAD", None)):
                check(_ffi.ENGINE_ctrl_cmd_string(e, cmd, arg, 0),
                      "%s is not a loadable pipetls engine (%s failed)"
                      % (self.path, cmd.decode()), exc=EngineError)
            if threads is not None:
                self._ctrl_string(e, "THREADS", threads)
            if inline_below is not None:
                self._ctrl_string(e, "INLINE_BELOW", inline_below)
            check(_ffi.ENGINE_init(e), "ENGINE_init(pipetls) failed", exc=EngineError)
        except EngineError as exc:
            _ffi.ENGINE_free(e)
            drain_errors()
            if "LOAD failed" in exc.message:
                exc.args = (exc.args[0] + " (is it an OpenSSL engine, and not already "
                            "loaded by other code in this process, e.g. via OPENSSL_CONF?)",)
            raise
        except BaseException:
            _ffi.ENGINE_free(e)
            drain_errors()
            raise
        self._e = e
        self._registered = [False]
        self._lock = threading.RLock()
        self._finalizer = weakref.finalize(self, _release, e, self._registered)
        with _live_lock:
            _live[key] = self
        if register:
            try:
                self.register_default()
            except BaseException:
                self.close()  # a constructor that raises leaves nothing loaded
                raise

    # ------------------------------------------------------------------ life
    @property
    def handle(self) -> int:
        """The ``ENGINE*`` as an int."""
        if self._e is None:
            raise ClosedError("Engine is closed")
        return self._e

    @property
    def closed(self) -> bool:
        return self._e is None

    @property
    def id(self) -> str:
        return (_ffi.ENGINE_get_id(self.handle) or b"").decode()

    @property
    def name(self) -> str:
        return (_ffi.ENGINE_get_name(self.handle) or b"").decode()

    def close(self) -> None:
        """Unregister (if registered) and unload.  Connections already keyed
        with engine ciphers keep working: they hold their own references."""
        with self._lock:
            if self._e is None:
                return
            self._e = None
            self._finalizer()
        global _shared
        with _shared_lock:
            if _shared is self:
                _shared = None

    def unload(self) -> None:
        """Deprecated alias of :meth:`close`."""
        warnings.warn("Engine.unload() is deprecated: use Engine.close()", DeprecationWarning,
                      stacklevel=2)
        self.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<pipetls.Engine %s%s%s>" % (
            self.path, " registered" if self.registered else "", " closed" if self.closed else "")

    # ---------------------------------------------------------- registration
    @property
    def registered(self) -> bool:
        return self._e is not None and self._registered[0]

    def register_default(self) -> None:
        """ENGINE_set_default_ciphers: from now on, process-wide, every
        EVP cipher context for one of the engine's ciphers (libssl's record
        layer included) uses the engine."""
        with self._lock:
            check(_ffi.ENGINE_set_default_ciphers(self.handle),
                  "ENGINE_set_default_ciphers failed", exc=EngineError)
            self._registered[0] = True

    def unregister(self) -> None:
        """Stop being the default for new cipher contexts."""
        with self._lock:
            e = self.handle  # ClosedError after close()
            if self._registered[0]:
                _ffi.ENGINE_unregister_ciphers(e)
                self._registered[0] = False

    # --------------------------------------------------------------- control
    @staticmethod
    def _ctrl_string(e: int, name: str, value: object) -> None:
        check(_ffi.ENGINE_ctrl_cmd_string(e, name.encode(), str(value).encode(), 0),
              "engine refused %s=%s" % (name, value), exc=EngineError)

    @property
    def threads(self) -> int:
        """Lanes working one batch, the calling thread included (1..256)."""
        return self.stats().lanes

    @threads.setter
    def threads(self, value: int) -> None:
        value = in_range("threads", value, *THREADS_RANGE)
        with self._lock:
            self._ctrl_string(self.handle, "THREADS", value)

    @property
    def inline_below(self) -> int:
        """Batches smaller than this many bytes run in the caller alone
        (0..2**30)."""
        return self.stats().inline_below

    @inline_below.setter
    def inline_below(self, value: int) -> None:
        value = in_range("inline_below", value, *INLINE_BELOW_RANGE)
        with self._lock:
            self._ctrl_string(self.handle, "INLINE_BELOW", value)

    @property
    def cbc_hmac_mode(self) -> str:
        """How CBC-HMAC batches are encrypted: "auto", "stitched" or
        "multiblock" (CBC_HMAC_MODE, docs/knobs.md)."""
        return str(self.info()["cbc_hmac_mode"])

    @cbc_hmac_mode.setter
    def cbc_hmac_mode(self, value: str) -> None:
        if value not in CBC_HMAC_MODES:
            raise ConfigError("cbc_hmac_mode must be one of %s, got %r"
                              % (", ".join(CBC_HMAC_MODES), value))
        with self._lock:
            self._ctrl_string(self.handle, "CBC_HMAC_MODE", value)

    @property
    def adaptive(self) -> bool:
        """ADAPTIVE: workers take records only where a core is free; a
        caller that finds every core busy keeps its batch (default True)."""
        return bool(self.stats().adaptive)

    @adaptive.setter
    def adaptive(self, value: bool) -> None:
        on = as_bool("adaptive", value)
        with self._lock:
            self._ctrl_string(self.handle, "ADAPTIVE", int(on))

    @property
    def cpus(self) -> int:
        """The cores adaptive lanes keep busy at most: the CPUS setting, or
        (CPUS 0, the default) the online CPUs the process may run on."""
        return self.stats().cpus

    @cpus.setter
    def cpus(self, value: int) -> None:
        """1..256, or 0 for the online CPUs the process may run on."""
        value = in_range("cpus", value, *CPUS_RANGE)
        with self._lock:
            self._ctrl_string(self.handle, "CPUS", value)

    @property
    def async_pause(self) -> int:
        """Inside an OpenSSL ASYNC job (``Context(async_mode=True)``), which
        pipelined batches pause the job while the lanes run them: 2 encrypt
        and decrypt (default), 1 encrypt only, 0 none (the ASYNC control
        command; docs/async.md)."""
        return int(self.info().get("async", 2))

    @async_pause.setter
    def async_pause(self, value: int) -> None:
        value = in_range("async_pause", value, 0, 2)
        with self._lock:
            self._ctrl_string(self.handle, "ASYNC", value)

    @property
    def out_of_place(self) -> bool:
        """OUT_OF_PLACE: on the patched libssl (openssl_patches/0004) the
        AES-GCM, ChaCha20-Poly1305 and stitched CBC-HMAC ciphers read the
        plaintext of a pipelined write from the caller's buffer, so the
        lanes copy it
        (default True); False: libssl copies it first, as stock does."""
        return bool(int(self.info().get("out_of_place", 1)))

    @out_of_place.setter
    def out_of_place(self, value: bool) -> None:
        on = as_bool("out_of_place", value)
        with self._lock:
            self._ctrl_string(self.handle, "OUT_OF_PLACE", int(on))

    def set_stats_file(self, path: Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]) -> None:
        """Append the counters to ``path`` when the engine is unloaded
        ("-" for stderr)."""
        with self._lock:
            check(_ffi.ENGINE_ctrl_cmd_string(self.handle, b"STATS_FILE", os.fsencode(path), 0),
                  "engine refused STATS_FILE", exc=EngineError)

    def _text(self, cmd: int, what: str) -> str:
        size = 4096
        for _ in range(8):
            buf = ctypes.create_string_buffer(size)
            with self._lock:
                n = _ffi.ENGINE_ctrl(self.handle, cmd, size, buf, None)
            if n <= 0:
                lines, codes = drain_errors()
                raise EngineError("engine %s failed" % what, lines, codes)
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1  # truncated: the return is the full length
        raise EngineError("engine %s text keeps growing" % what)

    def stats_text(self) -> str:
        return self._text(_ffi.PIPETLS_CMD_STATS, "STATS")

    def stats(self) -> EngineStats:
        """A snapshot of the counters as :class:`EngineStats`."""
        return EngineStats.parse(self.stats_text())

    def reset_stats(self) -> None:
        with self._lock:
            check(_ffi.ENGINE_ctrl(self.handle, _ffi.PIPETLS_CMD_RESET_STATS, 0, None, None),
                  "engine RESET_STATS failed", exc=EngineError)

    def info(self) -> dict[str, Any]:
        """{'version': str, 'lanes': int, 'ciphers': [names], ...} from INFO."""
        ciphers: list[str] = []
        out: dict[str, Any] = {"ciphers": ciphers}
        for line in self._text(_ffi.PIPETLS_CMD_INFO, "INFO").splitlines():
            parts = line.split(None, 1)
            if len(parts) != 2:
                continue
            key, value = parts[0], parts[1].strip()
            if key == "cipher":
                ciphers.append(value)
                continue
            try:
                out[key] = int(value)
            except ValueError:
                out[key] = value
        return out

    def offers(self, cipher_name: str) -> bool:
        """True if the engine implements ``cipher_name`` (e.g. 'AES-128-GCM')
        on this CPU."""
        c = _ffi.EVP_get_cipherbyname(cipher_name.encode())
        nid = _ffi.EVP_CIPHER_get_nid(c) if c else _ffi.OBJ_sn2nid(cipher_name.encode())
        if nid <= 0:
            _ffi.ERR_clear_error()
            return False
        found = bool(_ffi.ENGINE_get_cipher(self.handle, nid))
        if not found:
            _ffi.ERR_clear_error()
        return found


# --------------------------------------------------------------------------
# The shared engine.
# --------------------------------------------------------------------------
_shared: Optional[Engine] = None
_shared_lock = threading.Lock()


def shared_engine() -> Optional[Engine]:
    """The engine load_engine() returned, or None."""
    return _shared


def load_engine(path: Union[str, bytes, os.PathLike[str], os.PathLike[bytes], None] = None,
                threads: Optional[int] = None, register: bool = True,
                inline_below: Optional[int] = None) -> Engine:
    """Load (once per process) and return the shared engine.

    A second call returns the same Engine (applying ``threads`` /
    ``inline_below`` / ``register`` if given); asking for a different
    ``path`` than the loaded one raises EngineError.  ``register=True``
    makes it the default for its ciphers, process-wide.
    """
    global _shared
    with _shared_lock:
        e = _shared
        if e is not None and not e.closed:
            if path is not None and os.path.abspath(os.fsdecode(path)) != e.path:
                raise EngineError("the shared engine is %s; close it before loading %s"
                                  % (e.path, os.fsdecode(path)))
        else:
            e = Engine(path, threads=threads, inline_below=inline_below)
            threads = inline_below = None
            _shared = e
    if threads is not None:
        e.threads = threads
    if inline_below is not None:
        e.inline_below = inline_below
    if register and not e.registered:
        e.register_default()
    return e
