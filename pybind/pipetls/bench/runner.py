"""``pipetls bench``'s plan: every scenario x cipher x max_pipelines x
lanes, stock and pipetls interleaved ``reps`` times, and one
:class:`BenchResult` per row."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from typing import Any, Callable, Iterable, Optional

from .. import _ffi
from ..engine import load_engine
from .harness import one_run
from .loopback import loopback_run
from .model import CIPHERS, TLS13_SUITES, BenchResult, Setup, amdahl_bound, serial_time

__all__ = ["run", "machine_info"]

def _throwaway_cert(tmp: str) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("bench needs the openssl program to make a throwaway certificate "
                           "(or pass --cert and --key)")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=pipetls-bench"],
                   check=True, capture_output=True)
    return cert, key


def run(scenarios: Iterable[str] = ("write", "read"), ciphers: Optional[Iterable[str]] = None,
        total: int = 256 << 20, write_size: int = 256 << 10,
        max_pipelines: Iterable[int] = (8,), lanes: Optional[Iterable[int]] = None,
        reps: int = 3, tls: str = "1.2", read_buf: Optional[int] = None,
        engine_path: Optional[str] = None, certfile: Optional[str] = None,
        keyfile: Optional[str] = None, latency_size: int = 1024,
        progress: Optional[Callable[[int, int, str], object]] = None,
        evp: Optional[dict[str, Any]] = None) -> list[BenchResult]:
    """Runs the benchmark and returns a list of BenchResult.  The ``evp``
    scenario (:func:`pipetls.bench.evp.evp_run`, OpenSSL >= 3.5 only) takes
    its own arguments in ``evp``: pipes, size, pairs, batches,
    provider_path."""
    scenarios = list(scenarios)
    results: list[BenchResult] = []
    if "evp" in scenarios:
        from .evp import evp_run

        scenarios.remove("evp")
        results += evp_run(ciphers=list(ciphers) if ciphers else None,
                           lanes=list(lanes) if lanes else None,
                           progress=progress if not scenarios else None, **(evp or {}))
        if not scenarios:
            return results
    engine = load_engine(engine_path, register=False)
    lanes = list(lanes or [os.cpu_count() or 1])
    ciphers = list(ciphers or CIPHERS)
    if tls == "1.3":
        ciphers = [c for c in ciphers if c in TLS13_SUITES]
    tmp = None
    if certfile is None:
        tmp = tempfile.mkdtemp(prefix="pipetls-bench-")
        certfile, keyfile = _throwaway_cert(tmp)
    keyfile = keyfile or certfile
    saved_threads = engine.threads
    plan: list[tuple[str, str, int, int]] = []
    for scenario in scenarios:
        for cipher in ciphers:
            if scenario == "latency":
                plan.append((scenario, cipher, 1, lanes[0]))
                continue
            for mp in max_pipelines:
                for lane in lanes:
                    plan.append((scenario, cipher, mp, lane))
    try:
        # warm up (engine pool, page faults, CPU clocks): one small untimed run
        if plan:
            warm = Setup(plan[0][1], tls, 8, write_size, read_buf or 200000, certfile, keyfile)
            for piped in (False, True):
                one_run(warm, engine, piped, "write", min(total, 16 << 20), lanes[0])
        for i, (scenario, cipher, mp, lane) in enumerate(plan):
            if progress:
                progress(i, len(plan), "%s %s mp=%d lanes=%d" % (scenario, cipher, mp, lane))
            size = latency_size if scenario == "latency" else write_size
            n_bytes = min(total, 16 << 20) if scenario == "latency" else total
            rb = read_buf or max(8 * 16384 + 16384, mp * (16384 + 512) + 16384)
            st = Setup(cipher, tls, mp, size, rb, certfile, keyfile)
            stock: list[float] = []
            pipe: list[float] = []
            deltas: list[Any] = []
            for _ in range(reps):
                if scenario == "loopback":
                    a = loopback_run(st, engine, False, n_bytes, lane, engine.path)
                    b = loopback_run(st, engine, True, n_bytes, lane, engine.path)
                else:
                    a = one_run(st, engine, False, scenario, n_bytes, lane)
                    b = one_run(st, engine, True, scenario, n_bytes, lane)
                stock.append(a[0])
                pipe.append(b[0])
                deltas.append(b[1])
            t_stock, t_pipe = statistics.median(stock), statistics.median(pipe)
            mid = pipe.index(sorted(pipe)[len(pipe) // 2])
            d = deltas[mid]
            t_crypto = d.crypto_ns / 1e9 if d is not None else 0.0
            t_serial = serial_time(pipe[mid], d)
            bound = amdahl_bound(lane, t_stock, t_stock - t_serial) if mp > 1 else 1.0
            speedup = t_stock / t_pipe
            if scenario == "latency":
                writes = n_bytes / size
                s_val, p_val, unit = t_stock / writes * 1e6, t_pipe / writes * 1e6, "us/write"
            else:
                s_val, p_val, unit = n_bytes / t_stock / 1e9, n_bytes / t_pipe / 1e9, "GB/s"
            results.append(BenchResult(
                scenario=scenario, cipher=cipher, suite=CIPHERS[cipher][0] if tls == "1.2"
                else TLS13_SUITES[cipher], etm=CIPHERS[cipher][1], tls=tls, max_pipelines=mp,
                lanes=lane, baseline=(CIPHERS[cipher][2] if tls == "1.2" and scenario != "latency"
                                      else "stock"),
                total_bytes=n_bytes, write_size=size, stock_gbps=round(s_val, 4),
                pipetls_gbps=round(p_val, 4), speedup=round(speedup, 4), bound=round(bound, 4),
                efficiency=round(speedup / bound, 4),
                crypto_fraction=round(t_crypto / t_stock, 4) if t_stock else 0.0,
                serial_fraction=round(min(t_serial / t_stock, 1.0), 4) if t_stock else 0.0,
                batches=d.batches if d else 0,
                mean_batch=round(d.records / d.batches, 3) if d and d.batches else 0.0,
                stock_reps=[round(x, 6) for x in stock], pipetls_reps=[round(x, 6) for x in pipe],
                unit=unit))
        if progress:
            progress(len(plan), len(plan), "done")
    finally:
        engine.threads = saved_threads
        engine.unregister()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def machine_info() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "processor": _cpu_model(), "openssl": _ffi.openssl_version(),
            "python": platform.python_version()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
