"""``pipetls bench``'s plan: every scenario x cipher x max_pipelines x
lanes (x connections for busy), measured in interleaved stock/pipetls pairs,
and one :class:`BenchResult` per row (the median pair ratio, its bootstrap
interval, the pairs themselves)."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from typing import Any, Callable, Iterable, Optional

from .. import _ffi
from .._knobs import read_buffer_auto
from .._libload import prefix_library_env
from ..engine import Engine, load_engine
from ..provider import Provider
from .busy import busy_run, control_run, per_connection_bytes
from .harness import one_run
from .loopback import loopback_run
from .model import (CIPHERS, TLS13_SUITES, BenchResult, Measurement, Pipetls, Setup,
                    amdahl_bound, cpu_clock, steal_fraction,
                    bootstrap_median, busy_lanes, serial_time, verdict)

__all__ = ["run", "machine_info", "default_read_buf", "DEFAULT_PAIRS", "DEFAULT_PAIR_BYTES",
           "DEFAULT_CONNECTIONS", "LATENCY_BYTES", "BUSY_CIPHER"]

DEFAULT_PAIRS = 40
DEFAULT_PAIR_BYTES = 16 << 20
DEFAULT_CONNECTIONS = (1, 2, 4, 16, 64)
LATENCY_BYTES = 2 << 20  # latency rows: at most this many bytes (of 1 KiB writes) a side
BUSY_CIPHER = "AES-128-GCM"  # busy rows when --cipher is not given

def _throwaway_cert(tmp: str) -> tuple[str, str]:
    # the openssl program of the libssl in use: PIPETLS_OPENSSL's when set
    prefix = os.environ.get("PIPETLS_OPENSSL")
    own = os.path.join(prefix, "bin", "openssl") if prefix else ""
    openssl = own if own and os.path.isfile(own) else shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("bench needs the openssl program to make a throwaway certificate "
                           "(or pass --cert and --key)")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    env = dict(os.environ)
    if prefix and openssl == own:
        # its own libraries, whatever this process found them by (a path, not
        # LD_LIBRARY_PATH, when PIPETLS_OPENSSL alone chose them)
        env = prefix_library_env(prefix, env)
        # a build's prefix may have no openssl.cnf (openssl_patches/build.py's has none)
        env.setdefault("OPENSSL_CONF", os.devnull)
    proc = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                           key, "-out", cert, "-days", "1", "-subj", "/CN=pipetls-bench"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError("bench: %s req could not make a throwaway certificate (pass --cert "
                           "and --key): %s" % (openssl, proc.stderr.strip()[-500:]))
    return cert, key


Progress = Callable[[int, int, str], object]


def run(scenarios: Iterable[str] = ("write", "read"), ciphers: Optional[Iterable[str]] = None,
        total: int = DEFAULT_PAIR_BYTES, write_size: int = 256 << 10,
        max_pipelines: Iterable[int] = (8,), lanes: Optional[Iterable[int]] = None,
        reps: Optional[int] = None, tls: str = "1.2", read_buf: Optional[int] = None,
        engine_path: Optional[str] = None, certfile: Optional[str] = None,
        keyfile: Optional[str] = None, latency_size: int = 1024,
        progress: Optional[Progress] = None,
        evp: Optional[dict[str, Any]] = None, pairs: Optional[int] = None,
        connections: Iterable[int] = DEFAULT_CONNECTIONS,
        row_done: Optional[Callable[[BenchResult], object]] = None,
        provider: Optional[Provider] = None, control: bool = False) -> list[BenchResult]:
    """Runs the benchmark and returns one BenchResult per row.

    Every row is ``pairs`` (default 40; ``reps`` is the older name)
    interleaved pairs, stock then pipetls in even pairs and pipetls then
    stock in odd ones, each side moving ``total`` bytes (latency: at most
    LATENCY_BYTES; busy: ``total`` shared by the connections, at least four
    writes each).  ``busy`` runs one row per ``connections`` value.  The
    ``evp`` scenario (:func:`pipetls.bench.evp.evp_run`, OpenSSL >= 3.5
    only) takes its own arguments in ``evp``: pipes, size, pairs, batches,
    provider_path.

    ``provider``: the pipetls side is the provider's (its SSL_CTX made with
    ``?provider=pipetls``, the engine not loaded; lanes: the provider's
    THREADS, a load-time setting), the stock side the default provider's,
    with ``max_pipelines`` 1.

    ``control``: the write and read rows with more than one lane and
    ``max_pipelines`` above 1 get a third side in every pair,
    :func:`pipetls.bench.busy.control_run` (stock on ``lanes`` connections
    at once, one process each, each moving the pair's bytes), and a control row
    after theirs: the ceiling those cores give a pipelining of one
    connection in the same pairs."""
    scenarios = list(scenarios)
    n_pairs = pairs if pairs is not None else (reps if reps is not None else DEFAULT_PAIRS)
    if n_pairs < 1:
        raise ValueError("pairs must be >= 1")
    results: list[BenchResult] = []
    if "evp" in scenarios:
        from .evp import evp_run

        scenarios.remove("evp")
        results += evp_run(ciphers=list(ciphers) if ciphers else None,
                           lanes=list(lanes) if lanes else None,
                           progress=progress if not scenarios else None, **(evp or {}))
        if not scenarios:
            return results
    engine: Pipetls
    if provider is not None:
        engine = provider
        if lanes and list(lanes) != [provider.threads]:
            raise ValueError("the provider's lanes are its THREADS, set when it is loaded "
                             "(%d here): --lanes %s cannot change them"
                             % (provider.threads, ",".join(map(str, lanes))))
        lanes = [provider.threads]
    else:
        engine = load_engine(engine_path, register=False)
    lanes = list(lanes or [os.cpu_count() or 1])
    given = list(ciphers) if ciphers else None
    ciphers = given or list(CIPHERS)
    if tls == "1.3" or provider is not None:
        ciphers = [c for c in ciphers if c in TLS13_SUITES]  # the AEAD ones
    busy_ciphers = [c for c in ciphers if given] or [BUSY_CIPHER]
    tmp = None
    if certfile is None:
        tmp = tempfile.mkdtemp(prefix="pipetls-bench-")
        certfile, keyfile = _throwaway_cert(tmp)
    keyfile = keyfile or certfile
    saved_threads = engine.threads if isinstance(engine, Engine) else 0
    plan: list[tuple[str, str, int, int, int]] = []
    for scenario in scenarios:
        for cipher in (busy_ciphers if scenario == "busy" else ciphers):
            if scenario == "latency":
                plan.append((scenario, cipher, 1, lanes[0], 1))
                continue
            for mp in max_pipelines:
                for lane in lanes:
                    for conns in (connections if scenario == "busy" else (1,)):
                        plan.append((scenario, cipher, mp, lane, conns))
    steps = len(plan) * n_pairs
    try:
        # warm up (engine pool, page faults, CPU clocks): one small untimed run
        if plan:
            warm = Setup(plan[0][1], tls, 8, write_size, read_buf or 200000, certfile, keyfile,
                         provider)
            for piped in (False, True):
                one_run(warm, engine, piped, "write", min(total, 16 << 20), lanes[0])
        for i, (scenario, cipher, mp, lane, conns) in enumerate(plan):
            what = "%s %s mp=%d lanes=%d" % (scenario, cipher, mp, lane)
            if scenario == "busy":
                what += " connections=%d" % conns
            size = latency_size if scenario == "latency" else write_size
            n_bytes = min(total, LATENCY_BYTES) if scenario == "latency" else total
            rb = read_buf or default_read_buf(mp)
            st = Setup(cipher, tls, mp, size, rb, certfile, keyfile, provider)
            per_conn = per_connection_bytes(n_bytes, conns, size)

            def side(piped: bool) -> Measurement:
                if scenario == "loopback":
                    return loopback_run(st, engine, piped, n_bytes, lane,
                                        engine.path if isinstance(engine, Engine) else "")
                if scenario == "busy":
                    return busy_run(st, engine, piped, conns, per_conn, lane)
                return one_run(st, engine, piped, scenario, n_bytes, lane)

            with_control = control and scenario in ("write", "read") and lane > 1 and mp > 1
            measured: list[tuple[str, Measurement, Measurement]] = []
            controls: list[Measurement] = []
            clock0 = cpu_clock()
            for k in range(n_pairs):
                if progress:
                    progress(i * n_pairs + k, steps, "%s pair %d/%d" % (what, k + 1, n_pairs))
                # the order alternates: stock, pipetls (, control) then the reverse
                if k % 2 == 0:
                    a = side(False)
                    b = side(True)
                    if with_control:
                        controls.append(control_run(st, engine, scenario, n_bytes * lane, lane))
                    measured.append(("stock-first", a, b))
                else:
                    if with_control:
                        controls.append(control_run(st, engine, scenario, n_bytes * lane, lane))
                    b = side(True)
                    a = side(False)
                    measured.append(("pipetls-first", a, b))
            path = "provider" if provider is not None else "engine"
            r = _row(scenario, cipher, mp, lane, conns, tls, size, measured, path)
            r.steal_fraction = steal_fraction(clock0, cpu_clock())
            rows = [r]
            if with_control:
                rows.append(_control_row(r, measured, controls, scenario, cipher, mp, lane,
                                         tls, size, path))
            for row in rows:
                results.append(row)
                if row_done:
                    row_done(row)
        if progress:
            progress(steps, steps, "done")
    finally:
        if isinstance(engine, Engine):
            engine.threads = saved_threads
            engine.unregister()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def default_read_buf(mp: int) -> int:
    """The pipetls side's read buffer when --read-buf is not given: what a
    pipetls.Context sets by itself (``read_buffer_auto``: room for 2 x
    max_pipelines records; OpenSSL's own size at max_pipelines 1), so that
    the bench reads as a pipetls program does.  The bench used to set room
    for about nine records at max_pipelines 8, which made libssl hand up
    batches of 8, 1, 1 (docs/performance.md, "Read batches")."""
    return read_buffer_auto(mp)


def _row(scenario: str, cipher: str, mp: int, lane: int, conns: int, tls: str, size: int,
         measured: list[tuple[str, Measurement, Measurement]],
         path: str = "engine") -> BenchResult:
    """One row from its pairs: the median pair ratio and its bootstrap
    interval; the bound and the efficiency per pair, then their medians."""
    pairs: list[dict[str, Any]] = []
    ratios, bounds, effs, crypto, serial = [], [], [], [], []
    counters: dict[str, int] = {}
    for order, a, b in measured:
        # seconds per byte on each side (both sides move the same bytes)
        t_stock = a.seconds * b.nbytes / a.nbytes if a.nbytes else a.seconds
        ratio = t_stock / b.seconds
        t_serial = serial_time(b.seconds, b.delta)
        eff_lanes = busy_lanes(lane, conns, os.cpu_count() or 1) if scenario == "busy" else lane
        bound = amdahl_bound(eff_lanes, t_stock, t_stock - t_serial) if mp > 1 else 1.0
        ratios.append(ratio)
        bounds.append(bound)
        effs.append(ratio / bound)
        crypto.append(b.delta.crypto_ns / 1e9 / t_stock if b.delta and t_stock else 0.0)
        serial.append(min(t_serial / t_stock, 1.0) if t_stock else 0.0)
        for key, v in b.counters.items():
            counters[key] = v if key in ("pipetls.stats", "lanes", "workers", "inline_below") \
                else counters.get(key, 0) + v
        pairs.append({"order": order, "stock_s": round(a.seconds, 7), "stock_bytes": a.nbytes,
                      "pipetls_s": round(b.seconds, 7), "pipetls_bytes": b.nbytes,
                      "stock_cpu_s": round(a.cpu_seconds, 6),
                      "pipetls_cpu_s": round(b.cpu_seconds, 6),
                      "ratio": round(ratio, 5), "bound": round(bound, 5),
                      "efficiency": round(ratio / bound, 5)})
    stock_s = [a.seconds for _, a, _ in measured]
    pipe_s = [b.seconds for _, _, b in measured]
    # the pipetls side's time for the stock side's bytes (a control side moves more)
    pipe_norm = [b.seconds * a.nbytes / b.nbytes if b.nbytes else b.seconds
                 for _, a, b in measured]
    n_bytes = measured[0][1].nbytes
    speedup = statistics.median(ratios)
    lo, hi = bootstrap_median(ratios)
    word, conclusive = verdict(speedup, lo, hi)
    eff_raw = statistics.median(effs)
    t_stock, t_pipe = statistics.median(stock_s), statistics.median(pipe_norm)
    if scenario == "latency":
        writes = n_bytes / size
        s_val, p_val, unit = t_stock / writes * 1e6, t_pipe / writes * 1e6, "us/write"
    else:
        s_val, p_val, unit = n_bytes / t_stock / 1e9, n_bytes / t_pipe / 1e9, "GB/s"
    batches, records = counters.get("batches", 0), counters.get("records", 0)
    if path == "provider":
        baseline = "stock %s (default provider, max_pipelines 1)" % _ffi.openssl_version().split()[1]
    else:
        baseline = (CIPHERS[cipher][2] if tls == "1.2" and scenario not in ("latency", "busy")
                    else "stock")
    return BenchResult(
        scenario=scenario, cipher=cipher, suite=CIPHERS[cipher][0] if tls == "1.2"
        else TLS13_SUITES[cipher], etm=CIPHERS[cipher][1], tls=tls, max_pipelines=mp,
        lanes=lane, baseline=baseline, path=path, openssl=_ffi.openssl_version(),
        total_bytes=n_bytes, write_size=size, stock_gbps=round(s_val, 4),
        pipetls_gbps=round(p_val, 4), speedup=round(speedup, 4),
        bound=round(statistics.median(bounds), 4),
        efficiency=round(min(eff_raw, 1.0), 4), efficiency_raw=round(eff_raw, 4),
        efficiency_clamped=eff_raw > 1.0,
        crypto_fraction=round(statistics.median(crypto), 4),
        serial_fraction=round(statistics.median(serial), 4),
        batches=batches, mean_batch=round(records / batches, 3) if batches else 0.0,
        stock_reps=[round(x, 7) for x in stock_s], pipetls_reps=[round(x, 7) for x in pipe_s],
        unit=unit, speedup_lo=round(lo, 4), speedup_hi=round(hi, 4),
        interval_confidence=0.95, interval_method="bootstrap", verdict=word,
        conclusive=conclusive, pairs=pairs, connections=conns, counters=counters)


def _control_row(r: BenchResult, measured: list[tuple[str, Measurement, Measurement]],
                 controls: list[Measurement], scenario: str, cipher: str, mp: int, lane: int,
                 tls: str, size: int, path: str) -> BenchResult:
    """The control row of ``r``'s pairs (stock on ``lane`` connections at
    once against stock on one: the ceiling), and on ``r`` the share of that
    ceiling pipetls reached (control time / pipetls time, pair by pair)."""
    ctl = _row(scenario, cipher, mp, lane, 1, tls, size,
               [(o, a, c) for (o, a, _), c in zip(measured, controls)], path)
    shares = [(c.seconds / c.nbytes) / (b.seconds / b.nbytes)
              for (_, _, b), c in zip(measured, controls)]
    r.of_control = round(statistics.median(shares), 4)
    lo, hi = bootstrap_median(shares)
    r.of_control_lo, r.of_control_hi = round(lo, 4), round(hi, 4)
    # no serial part on the control side: its bound is the cores it has
    ctl.control = True
    ctl.steal_fraction = r.steal_fraction
    ctl.baseline = "control: %d stock connections in %d processes" % (lane, lane)
    ctl.bound = float(lane)
    eff = ctl.speedup / ctl.bound
    ctl.efficiency, ctl.efficiency_raw, ctl.efficiency_clamped = \
        round(min(eff, 1.0), 4), round(eff, 4), eff > 1.0
    ctl.crypto_fraction = ctl.serial_fraction = 0.0
    ctl.batches, ctl.mean_batch, ctl.counters = 0, 0.0, {}
    for p in ctl.pairs:  # the control side under its own name
        p["control_s"] = p.pop("pipetls_s")
        p["control_bytes"] = p.pop("pipetls_bytes")
        p["control_cpu_s"] = p.pop("pipetls_cpu_s")
        p["bound"] = float(lane)
        p["efficiency"] = round(p["ratio"] / lane, 5)
    return ctl


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
