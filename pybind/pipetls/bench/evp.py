"""``pipetls bench --scenario evp``: OpenSSL 3.5's cipher pipeline API with
the pipetls provider against the default provider's one-at-a-time loop.

One batch: ``pipes`` (32) messages of ``size`` (16 KiB) bytes, each with its
own 12-byte IV and a 13-byte (TLS-like) AAD, under one key.

* pipetls: ``EVP_CipherPipelineEncryptInit`` / ``Update`` (AAD) /
  ``Update`` / ``Final`` and the tags read through
  ``OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG``: five ctypes calls per batch;
  the pipes run on the provider's lanes.
* stock: the same messages with the default provider, one after another:
  ``EVP_EncryptInit_ex`` (the IV; the key schedule is kept) / ``Update``
  (AAD) / ``Update`` / ``Final_ex`` / ``ctrl(GET_TAG)`` per message, five
  ctypes calls per message.

Both loops are prepared outside the timed region (buffers, pointer arrays,
bound arguments: no allocation, no result checks inside); the outputs of
both are compared afterwards (ciphertexts and tags must be equal pipe by
pipe).  The calls go through prototypes without argument types, with ready
ctypes objects as arguments (the cheapest call ctypes makes).  The Python
loop's own cost (the same loop, the same argument objects, calling a no-op C
function) is measured and
subtracted from both sides (the fastest of five runs of it: noise only adds):
otherwise the stock loop's 32x more ctypes calls would be charged to
OpenSSL.  The raw ratio (nothing subtracted) is kept
in the JSON (``raw_speedup``).

``pairs`` interleaved pairs (the order alternates), each side running
``batches`` batches; the speedup is the median of the pairs' ratios with a
distribution-free interval (order statistics of the binomial).  The Amdahl
bound uses the provider's statistics: ``T_serial`` is the pipetls time
outside its batches.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import time
from ctypes import addressof, c_int, c_size_t
from typing import Any, Callable, Optional

from .. import _ffi
from ..evp import CIPHERS as AEADS
from ..evp import PipelineCipher, _Arrays, fetch_cipher, seal_each
from ..provider import Provider, load_provider, require_pipeline_api, shared_provider
from .model import BenchResult, amdahl_bound, median_interval, serial_time, verdict

__all__ = ["EVP_CIPHERS", "evp_run"]

EVP_CIPHERS = tuple(AEADS)
AAD_LEN = 13

_Call = tuple[Callable[..., Any], tuple[Any, ...]]


_NOOP = ctypes.cast(_ffi.libcrypto.ERR_peek_error, ctypes.c_void_p).value


def _bare(fn: Any, noop: bool) -> Callable[..., Any]:
    """``fn`` (or, ``noop``, a C function that ignores its arguments:
    ERR_peek_error) through a prototype without argument types, called with
    ready ctypes objects: ctypes passes them as they are, the cheapest call
    it makes.  The no-op costs what the call costs without its work (on
    x86-64 and AArch64 the caller owns the argument registers and stack, so
    the extra arguments are harmless)."""
    addr = _NOOP if noop else ctypes.cast(fn, ctypes.c_void_p).value
    assert addr is not None
    f: Callable[..., Any] = ctypes.CFUNCTYPE(ctypes.c_int)(addr)
    return f


def _p(x: Any) -> ctypes.c_void_p:
    """A pointer argument as a ready c_void_p (an address, a ctypes object or
    None).  It holds the address only: the caller keeps the object alive."""
    if x is None:
        return ctypes.c_void_p()
    return ctypes.c_void_p(x if isinstance(x, int) else addressof(x))


def _timed(calls: list[_Call], batches: int) -> float:
    t0 = time.perf_counter()
    for _ in range(batches):
        for f, a in calls:
            f(*a)
    return time.perf_counter() - t0


class _Workload:
    """Key, IVs, AADs, plaintexts and the output buffers of both sides."""

    def __init__(self, cipher: str, pipes: int, size: int) -> None:
        spec = AEADS[cipher]
        self.cipher, self.pipes, self.size = cipher, pipes, size
        self.key = ctypes.create_string_buffer(os.urandom(spec.key_size), spec.key_size)
        self.ivs = [ctypes.create_string_buffer(os.urandom(12), 12) for _ in range(pipes)]
        self.aads = [ctypes.create_string_buffer(os.urandom(AAD_LEN), AAD_LEN) for _ in range(pipes)]
        self.pts = [ctypes.create_string_buffer(os.urandom(size), size) for _ in range(pipes)]
        self.outs = {s: [ctypes.create_string_buffer(size) for _ in range(pipes)] for s in (0, 1)}
        self.tags = {s: [ctypes.create_string_buffer(16) for _ in range(pipes)] for s in (0, 1)}
        self.outl = c_int()

    def close(self) -> None:
        _ffi.OPENSSL_cleanse(self.key, len(self.key))


def _stock_calls(w: _Workload, ctx: int, noop: bool) -> list[_Call]:
    """The default provider's loop over the pipes: five calls per message."""
    outl = w.outl  # _p() keeps only its address: w keeps it alive
    init, update, final, ctrl = (_bare(f, noop) for f in (
        _ffi.EVP_EncryptInit_ex, _ffi.EVP_EncryptUpdate, _ffi.EVP_EncryptFinal_ex,
        _ffi.EVP_CIPHER_CTX_ctrl))
    c, null, ref = _p(ctx), _p(None), _p(outl)
    calls: list[_Call] = []
    for i in range(w.pipes):
        out = addressof(w.outs[0][i])
        calls += [(init, (c, null, null, null, _p(w.ivs[i]))),
                  (update, (c, null, ref, _p(w.aads[i]), c_int(AAD_LEN))),
                  (update, (c, _p(out), ref, _p(w.pts[i]), c_int(w.size))),
                  (final, (c, _p(out + w.size), ref)),
                  (ctrl, (c, c_int(_ffi.EVP_CTRL_AEAD_GET_TAG), c_int(16), _p(w.tags[0][i])))]
    return calls


def _pipetls_calls(w: _Workload, pc: PipelineCipher, a: _Arrays, noop: bool) -> list[_Call]:
    """One batch through EVP_CipherPipeline*: five calls (the first batch,
    run untimed before, has fetched the cipher into the context)."""
    init, update, final, get_params = (_bare(f, noop) for f in (
        _ffi.EVP_CipherPipelineEncryptInit, _ffi.EVP_CipherPipelineUpdate,
        _ffi.EVP_CipherPipelineFinal, _ffi.EVP_CIPHER_CTX_get_params))
    c, null = _p(pc._context(1)), _p(None)
    return [(init, (c, null, _p(pc._key), c_size_t(pc.spec.key_size), c_size_t(a.n),
                    _p(a.iv), c_size_t(pc.spec.iv_size))),
            (update, (c, null, _p(a.outl), null, _p(a.aad), _p(a.aad_len))),
            (update, (c, _p(a.out), _p(a.outl), _p(a.out_size), _p(a.inp), _p(a.in_len))),
            (final, (c, _p(a.fin), _p(a.outl), _p(a.fin_size))),
            (get_params, (c, _p(a.tag_param)))]


def _check_equal(w: _Workload) -> None:
    """Both sides' answers agree pipe by pipe, and with seal_each."""
    ref_cts, ref_tags = seal_each(w.cipher, w.key, list(w.ivs), list(w.aads), list(w.pts))
    for i in range(w.pipes):
        for side in (0, 1):
            if w.outs[side][i].raw != bytes(ref_cts[i]) or w.tags[side][i].raw != ref_tags[i]:
                raise RuntimeError("bench evp: %s pipe %d of the %s run differs from the "
                                   "default provider" % (w.cipher, i,
                                                         ("stock", "pipetls")[side]))


def _one_cipher(cipher: str, provider: Provider, lanes: int, pipes: int, size: int,
                pairs: int, batches: int) -> BenchResult:
    w = _Workload(cipher, pipes, size)
    pc = PipelineCipher(cipher, w.key, provider=provider)
    ctx0 = 0
    try:
        ctx0 = _ffi.check_ptr(_ffi.EVP_CIPHER_CTX_new(), "EVP_CIPHER_CTX_new failed")
        _ffi.check(_ffi.EVP_EncryptInit_ex(ctx0, fetch_cipher(cipher), None, w.key, None),
                   "EVP_EncryptInit_ex(%s) failed" % cipher)
        a = _Arrays(pipes, 16)
        with contextlib.ExitStack() as stack:
            pc._fill(stack, a, w.ivs, w.aads, w.pts, w.outs[1], w.tags[1], True)
            pc._run(1, a)  # untimed: keys the context, checks the output sizes
            stock, piped = _stock_calls(w, ctx0, False), _pipetls_calls(w, pc, a, False)
            stock_dry, piped_dry = _stock_calls(w, ctx0, True), _pipetls_calls(w, pc, a, True)
            _timed(stock, 2)  # warm: page faults, clocks, the lanes
            _timed(piped, 2)
            _check_equal(w)
            # the Python loop's own cost: the least disturbed of a few runs
            h_stock = min(_timed(stock_dry, batches) for _ in range(5))
            h_pipe = min(_timed(piped_dry, batches) for _ in range(5))
            ratios, raw, t_stock, t_pipe, bounds, crypto = [], [], [], [], [], []
            for k in range(pairs):
                sides: dict[str, float] = {}
                delta = None
                for side in (("stock", "pipetls") if k % 2 == 0 else ("pipetls", "stock")):
                    if side == "stock":
                        sides[side] = _timed(stock, batches)
                    else:
                        before = provider.stats()
                        sides[side] = _timed(piped, batches)
                        delta = provider.stats() - before
                assert delta is not None
                s = max(sides["stock"] - h_stock, sides["stock"] * 0.05)
                p = max(sides["pipetls"] - h_pipe, sides["pipetls"] * 0.05)
                ratios.append(s / p)
                raw.append(sides["stock"] / sides["pipetls"])
                t_stock.append(s)
                t_pipe.append(p)
                t_serial = serial_time(p, delta)
                bounds.append(amdahl_bound(lanes, s, s - t_serial))
                crypto.append(delta.crypto_ns / 1e9 / s if s else 0.0)
            _check_equal(w)
    finally:
        if ctx0:
            _ffi.EVP_CIPHER_CTX_free(ctx0)
        pc.close()
        w.close()
    total = pipes * size * batches
    speedup = statistics.median(ratios)
    lo, hi, conf = median_interval(ratios)
    bound = statistics.median(bounds)
    word, conclusive = verdict(speedup, lo, hi)
    return BenchResult(
        scenario="evp", cipher=cipher, suite="EVP_CipherPipeline %dx%d" % (pipes, size),
        etm=False, tls="-", max_pipelines=pipes, lanes=lanes,
        baseline="default provider, one at a time", total_bytes=total, write_size=size,
        stock_gbps=round(total / statistics.median(t_stock) / 1e9, 4),
        pipetls_gbps=round(total / statistics.median(t_pipe) / 1e9, 4),
        speedup=round(speedup, 4), bound=round(bound, 4),
        efficiency=round(speedup / bound, 4) if bound else 0.0,
        crypto_fraction=round(statistics.median(crypto), 4),
        batches=batches, mean_batch=float(pipes),
        stock_reps=[round(x, 6) for x in t_stock], pipetls_reps=[round(x, 6) for x in t_pipe],
        speedup_lo=round(lo, 4), speedup_hi=round(hi, 4), interval_confidence=round(conf, 4),
        raw_speedup=round(statistics.median(raw), 4),
        interval_method="order statistics", verdict=word, conclusive=conclusive,
        harness_s=[round(h_stock, 6), round(h_pipe, 6)])


def evp_run(ciphers: Optional[list[str]] = None, lanes: Optional[list[int]] = None,
            pipes: int = 32, size: int = 16384, pairs: int = 21, batches: int = 32,
            provider_path: Optional[str] = None,
            progress: Optional[Callable[[int, int, str], object]] = None) -> list[BenchResult]:
    """The evp rows: every cipher x lanes value (the provider is loaded
    with THREADS = lanes; a shared provider already loaded with other
    settings is refused)."""
    require_pipeline_api("pipetls bench --scenario evp")
    ciphers = [c for c in (ciphers or EVP_CIPHERS) if c in AEADS]
    if not ciphers:
        raise SystemExit("pipetls bench --scenario evp: choose ciphers among %s"
                         % ", ".join(EVP_CIPHERS))
    lane_list = list(lanes or [os.cpu_count() or 1])
    plan = [(lane, c) for lane in lane_list for c in ciphers]
    results: list[BenchResult] = []
    for i, (lane, cipher) in enumerate(plan):
        if progress:
            progress(i, len(plan), "evp %s %dx%d lanes=%d" % (cipher, pipes, size, lane))
        shared = shared_provider()
        if shared is not None and shared.threads != lane:
            shared.close()
        provider = load_provider(provider_path, threads=lane)
        results.append(_one_cipher(cipher, provider, provider.threads, pipes, size, pairs,
                                   batches))
    if progress:
        progress(len(plan), len(plan), "done")
    return results
