"""``pipetls bench --scenario evp``: OpenSSL 3.5's cipher pipeline API with
the pipetls provider against the default provider's one-at-a-time loop.

One batch: ``pipes`` (32) messages of ``size`` (16 KiB) bytes, each with its
own 12-byte IV and a 13-byte (TLS-like) AAD, under one key; both directions
(``seal``: encrypt and read the tags; ``open``: set the tags, decrypt and
check them), one row each.

* pipetls: ``EVP_CipherPipeline{Encrypt,Decrypt}Init`` (the key: the
  provider keeps its schedule) / [tags in] / ``Update`` (AAD) / ``Update`` /
  ``Final`` / [tags out through ``OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG``]
  per batch; the pipes run on the provider's lanes.
* stock: the same messages with the default provider, one after another:
  ``EVP_CipherInit_ex`` (the IV; the key schedule is kept) / ``Update``
  (AAD) / ``Update`` / [``ctrl(SET_TAG)``] / ``Final_ex`` /
  [``ctrl(GET_TAG)``] per message.

Both timed loops are C (``pipetls-evpbench.so``, built beside the provider
from ``provider/bench/pt_evp_bench.c``), timed there with CLOCK_MONOTONIC:
no Python runs inside a measurement, so nothing is estimated or subtracted
(``raw_speedup`` equals ``speedup``; ``harness_s`` is [0, 0]).  Every call's
result is checked in the loop; the outputs of both sides are compared with
:func:`pipetls.evp.seal_each` before and after the pairs.

With more than one lane a third side runs in every pair, the *control*
(its own row, baseline ``control: N plain threads``): stock's loop split
over N = lanes plain threads, each with its own context, running all its
batches without waiting for the others.  It is what N threads get from the
machine at that moment, with no pool, no per-batch synchronisation and no
pipeline API; its speedup over stock is the ceiling of any pipelining in
the same run (on a machine whose other cores are busy it is well below N,
and the pipetls row cannot be above it).

``pairs`` interleaved pairs (the order alternates: stock, pipetls, control
then control, pipetls, stock), each side running ``batches`` batches back
to back; the speedup is the median of the pairs' ratios, its 95 % interval
a percentile bootstrap of that median (2000 resamples, a fixed seed:
:func:`.model.bootstrap_median`, as every other row).  The Amdahl bound uses the provider's
statistics: ``T_serial`` is the pipetls time outside its lane batches (IVs,
finals, tags, the EVP layer), measured per pair; ``serial_fraction`` =
T_serial / T_pipetls.
"""

from __future__ import annotations

import ctypes
import os
import statistics
from ctypes import POINTER, c_int, c_size_t, c_uint64, c_void_p
from typing import Any, Callable, Optional, Sequence

from .. import _ffi
from ..errors import ProviderError
from ..evp import CIPHERS as AEADS
from ..evp import fetch_cipher, seal_each
from ..provider import Provider, load_provider, require_pipeline_api, shared_provider
from ..provider import provider_path as _provider_path
from .model import BenchResult, amdahl_bound, bootstrap_median, serial_time, verdict

__all__ = ["EVP_CIPHERS", "DIRECTIONS", "evp_run", "bench_lib_path"]

EVP_CIPHERS = tuple(AEADS)
DIRECTIONS = ("seal", "open")
AAD_LEN = 13
TAG_LEN = 16
BENCH_FILE = "pipetls-evpbench.so"
BENCH_ABI = 1


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------
# --------------------------------------------------------------------------
# The C loops
# --------------------------------------------------------------------------
def bench_lib_path() -> str:
    """``$PIPETLS_EVPBENCH``, else ``pipetls-evpbench.so`` beside the
    provider module (the same build directory, or the wheel's package)."""
    env = os.environ.get("PIPETLS_EVPBENCH")
    if env:
        if not os.path.isfile(env):
            raise ProviderError("PIPETLS_EVPBENCH=%s: no such file" % env)
        return os.path.abspath(env)
    prov = _provider_path()
    path = os.path.join(os.path.dirname(prov), BENCH_FILE)
    if not os.path.isfile(path):
        raise ProviderError(
            "pipetls bench --scenario evp: %s not found beside %s (it is built with the "
            "provider, from provider/bench/pt_evp_bench.c); rebuild, or set PIPETLS_EVPBENCH"
            % (BENCH_FILE, prov))
    return path


_lib: Optional[ctypes.CDLL] = None


def _bench_lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        path = bench_lib_path()
        lib = ctypes.CDLL(path)
        try:
            lib.ptb_version.restype = c_int
            lib.ptb_version.argtypes = []
            ptrs = POINTER(c_void_p)
            lib.ptb_stock.restype = c_int
            lib.ptb_stock.argtypes = [c_void_p, c_int, c_int, ptrs, ptrs, c_int, ptrs, c_int,
                                      ptrs, ptrs, c_int, POINTER(c_uint64)]
            lib.ptb_threads.restype = c_int
            lib.ptb_threads.argtypes = [c_int, ptrs, c_int, c_int, ptrs, ptrs, c_int, ptrs, c_int,
                                        ptrs, ptrs, c_int, POINTER(c_uint64)]
            lib.ptb_pipeline.restype = c_int
            lib.ptb_pipeline.argtypes = [c_void_p, c_int, c_int, c_void_p, c_size_t, ptrs,
                                         ptrs, c_int, ptrs, c_int, ptrs, ptrs, c_int,
                                         POINTER(c_uint64)]
        except AttributeError as e:
            raise ProviderError("%s is not a pipetls bench module: %s" % (path, e)) from None
        if lib.ptb_version() != BENCH_ABI:
            raise ProviderError("%s has ABI %d, this pipetls needs %d: rebuild it"
                                % (path, lib.ptb_version(), BENCH_ABI))
        _lib = lib
    return _lib


def _ptrs(bufs: Sequence[Any]) -> ctypes.Array[c_void_p]:
    arr = (c_void_p * len(bufs))()
    for i, b in enumerate(bufs):
        arr[i] = ctypes.addressof(b)
    return arr


def _bufs(data: Sequence[bytes], size: int) -> list[ctypes.Array[ctypes.c_char]]:
    return [ctypes.create_string_buffer(bytes(d), size) for d in data]


class _Workload:
    """Key, IVs, AADs, inputs and the outputs of both sides (0 stock, 1
    pipetls), as C pointer arrays built once."""

    def __init__(self, cipher: str, enc: int, pipes: int, size: int) -> None:
        spec = AEADS[cipher]
        self.cipher, self.enc, self.pipes, self.size = cipher, enc, pipes, size
        self.key = ctypes.create_string_buffer(os.urandom(spec.key_size), spec.key_size)
        ivs = [os.urandom(12) for _ in range(pipes)]
        aads = [os.urandom(AAD_LEN) for _ in range(pipes)]
        pts = [os.urandom(size) for _ in range(pipes)]
        cts, tags = seal_each(cipher, self.key, ivs, aads, pts)
        # what each side must produce
        self.want = [bytes(c) for c in cts] if enc else pts
        self.want_tags = tags
        self.ivs, self.aads = _bufs(ivs, 12), _bufs(aads, AAD_LEN)
        self.inp = _bufs(pts if enc else [bytes(c) for c in cts], size)
        self.outs = [[ctypes.create_string_buffer(size) for _ in range(pipes)] for _ in (0, 1)]
        # seal: each side writes its tags; open: both read the right ones
        self.tags = ([[ctypes.create_string_buffer(TAG_LEN) for _ in range(pipes)]
                      for _ in (0, 1)] if enc else [_bufs(tags, TAG_LEN)] * 2)
        self.p_iv, self.p_aad, self.p_in = _ptrs(self.ivs), _ptrs(self.aads), _ptrs(self.inp)
        self.p_out = [_ptrs(o) for o in self.outs]
        self.p_tag = [_ptrs(t) for t in self.tags]

    def check(self, side: int) -> None:
        """Side's outputs are what the default provider gives, pipe by pipe."""
        for i in range(self.pipes):
            if self.outs[side][i].raw != self.want[i] or (
                    self.enc and self.tags[side][i].raw != self.want_tags[i]):
                raise RuntimeError("bench evp: %s %s pipe %d of the %s run differs from the "
                                   "default provider" % (self.cipher, DIRECTIONS[1 - self.enc],
                                                         i, ("stock", "pipetls")[side]))
            ctypes.memset(self.outs[side][i], 0, self.size)

    def close(self) -> None:
        _ffi.OPENSSL_cleanse(self.key, len(self.key))


class _Sides:
    """The two contexts and the two timed C loops of one workload."""

    def __init__(self, w: _Workload, provider: Provider, threads: int) -> None:
        self.w, self.lib, self.threads = w, _bench_lib(), threads
        self.stock = self.piped = 0
        self.ctl: list[int] = []
        try:
            self.stock = self._stock_ctx()
            self.ctl = [self._stock_ctx() for _ in range(threads)]
            self.p_ctl = (c_void_p * threads)(*self.ctl)
            self.piped = _ffi.check_ptr(_ffi.EVP_CIPHER_CTX_new(), "EVP_CIPHER_CTX_new failed")
            init = (_ffi.EVP_CipherPipelineEncryptInit if w.enc
                    else _ffi.EVP_CipherPipelineDecryptInit)
            # the cipher is fetched into the context once; the timed inits pass NULL
            _ffi.check(init(self.piped, provider.cipher(w.cipher), w.key, len(w.key), w.pipes,
                            w.p_iv, 12),
                       "EVP_CipherPipeline%sInit(%s) failed"
                       % ("Encrypt" if w.enc else "Decrypt", w.cipher))
        except BaseException:
            self.close()
            raise
        self.ns = c_uint64()

    def _stock_ctx(self) -> int:
        w = self.w
        ctx = _ffi.check_ptr(_ffi.EVP_CIPHER_CTX_new(), "EVP_CIPHER_CTX_new failed")
        try:
            _ffi.check(_ffi.EVP_CipherInit_ex(ctx, fetch_cipher(w.cipher), None, w.key, None,
                                              w.enc),
                       "EVP_CipherInit_ex(%s) failed" % w.cipher)
        except BaseException:
            _ffi.EVP_CIPHER_CTX_free(ctx)
            raise
        return ctx

    def run(self, side: int, batches: int) -> float:
        """Seconds for ``batches`` batches of ``side`` (0 stock, 1 pipetls,
        2 the control: stock on ``threads`` plain threads), timed in C; the
        control writes where stock does."""
        w = self.w
        if side == 2:
            ok = self.lib.ptb_threads(self.threads, self.p_ctl, w.enc, w.pipes, w.p_iv, w.p_aad,
                                      AAD_LEN, w.p_in, w.size, w.p_out[0], w.p_tag[0], batches,
                                      ctypes.byref(self.ns))
        elif side == 0:
            ok = self.lib.ptb_stock(self.stock, w.enc, w.pipes, w.p_iv, w.p_aad, AAD_LEN, w.p_in,
                                    w.size, w.p_out[0], w.p_tag[0], batches, ctypes.byref(self.ns))
        else:
            ok = self.lib.ptb_pipeline(self.piped, w.enc, w.pipes, ctypes.addressof(w.key),
                                       len(w.key), w.p_iv, w.p_aad, AAD_LEN, w.p_in, w.size,
                                       w.p_out[1], w.p_tag[1], batches, ctypes.byref(self.ns))
        _ffi.check(ok, "bench evp: the %s loop of %s failed"
                   % (("stock", "pipetls", "control")[side], w.cipher))
        return self.ns.value / 1e9

    def close(self) -> None:
        for ctx in [self.stock, self.piped] + self.ctl:
            if ctx:
                _ffi.EVP_CIPHER_CTX_free(ctx)
        self.stock = self.piped = 0
        self.ctl = []


def _one(cipher: str, direction: str, provider: Provider, lanes: int, pipes: int, size: int,
         pairs: int, batches: int) -> list[BenchResult]:
    enc = 1 if direction == "seal" else 0
    control = lanes > 1
    w = _Workload(cipher, enc, pipes, size)
    sides = _Sides(w, provider, min(lanes, pipes))
    order = (0, 1, 2) if control else (0, 1)
    try:
        for side in order:  # warm: page faults, clocks, the lanes; then the answers
            sides.run(side, 2)
            w.check(0 if side == 2 else side)
        ratios, ctl_ratios, t_stock, t_pipe, t_ctl = [], [], [], [], []
        bounds, crypto, serial = [], [], []
        for k in range(pairs):
            t = [0.0, 0.0, 0.0]
            delta = None
            for side in (order if k % 2 == 0 else order[::-1]):
                if side == 1:
                    before = provider.stats()
                    t[1] = sides.run(1, batches)
                    delta = provider.stats() - before
                else:
                    t[side] = sides.run(side, batches)
            assert delta is not None
            s, p, c = t
            ratios.append(s / p)
            t_stock.append(s)
            t_pipe.append(p)
            if control:
                ctl_ratios.append(s / c)
                t_ctl.append(c)
            t_serial = serial_time(p, delta)
            bounds.append(amdahl_bound(lanes, s, s - t_serial))
            serial.append(t_serial / p if p else 0.0)
            crypto.append(delta.crypto_ns / 1e9 / s if s else 0.0)
        for side in (0, 1):
            w.check(side)
    finally:
        sides.close()
        w.close()
    total = pipes * size * batches
    rows = []
    for what, rs, ts in (("pipetls", ratios, t_pipe), ("control", ctl_ratios, t_ctl)):
        if not rs:
            continue
        speedup = statistics.median(rs)
        lo, hi = bootstrap_median(rs)
        word, conclusive = verdict(speedup, lo, hi)
        bound = statistics.median(bounds) if what == "pipetls" else float(min(lanes, pipes))
        baseline = ("default provider, one at a time: %s" % direction if what == "pipetls"
                    else "control: %d plain threads: %s" % (min(lanes, pipes), direction))
        rows.append(BenchResult(
            scenario="evp", cipher=cipher,
            suite="EVP_CipherPipeline %s %dx%d" % (direction, pipes, size),
            etm=False, tls="-", max_pipelines=pipes, lanes=lanes, baseline=baseline,
            total_bytes=total, write_size=size,
            stock_gbps=round(total / statistics.median(t_stock) / 1e9, 4),
            pipetls_gbps=round(total / statistics.median(ts) / 1e9, 4),
            speedup=round(speedup, 4), bound=round(bound, 4),
            efficiency=round(speedup / bound, 4) if bound else 0.0,
            crypto_fraction=round(statistics.median(crypto), 4) if what == "pipetls" else 0.0,
            serial_fraction=round(statistics.median(serial), 4) if what == "pipetls" else 0.0,
            batches=batches, mean_batch=float(pipes),
            stock_reps=[round(x, 6) for x in t_stock], pipetls_reps=[round(x, 6) for x in ts],
            speedup_lo=round(lo, 4), speedup_hi=round(hi, 4), interval_confidence=0.95,
            raw_speedup=round(speedup, 4), harness_s=[0.0, 0.0],
            interval_method="bootstrap", verdict=word, conclusive=conclusive))
    return rows


def evp_run(ciphers: Optional[list[str]] = None, lanes: Optional[list[int]] = None,
            pipes: int = 32, size: int = 16384, pairs: int = 21, batches: int = 32,
            provider_path: Optional[str] = None, directions: Sequence[str] = DIRECTIONS,
            progress: Optional[Callable[[int, int, str], object]] = None) -> list[BenchResult]:
    """The evp rows: every lanes value x cipher x direction (the provider is
    loaded with THREADS = lanes; a shared provider already loaded with other
    settings is refused)."""
    require_pipeline_api("pipetls bench --scenario evp")
    ciphers = [c for c in (ciphers or EVP_CIPHERS) if c in AEADS]
    if not ciphers:
        raise SystemExit("pipetls bench --scenario evp: choose ciphers among %s"
                         % ", ".join(EVP_CIPHERS))
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or not directions:
        raise SystemExit("pipetls bench --scenario evp: directions are %s, not %s"
                         % (", ".join(DIRECTIONS), ", ".join(bad) or "none"))
    lane_list = list(lanes or [os.cpu_count() or 1])
    plan = [(lane, c, d) for lane in lane_list for c in ciphers for d in directions]
    results: list[BenchResult] = []
    for i, (lane, cipher, direction) in enumerate(plan):
        if progress:
            progress(i, len(plan), "evp %s %s %dx%d lanes=%d"
                     % (cipher, direction, pipes, size, lane))
        shared = shared_provider()
        if shared is not None and shared.threads != lane:
            shared.close()
        provider = load_provider(provider_path, threads=lane)
        results += _one(cipher, direction, provider, provider.threads, pipes, size, pairs,
                        batches)
    if progress:
        progress(len(plan), len(plan), "done")
    return results
