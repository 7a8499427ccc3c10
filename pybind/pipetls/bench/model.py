"""What ``pipetls bench`` measures and how a row is computed: the cipher
table, the result record, the Amdahl bound, and the contexts of one setup."""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence, Union

from ..context import Context
from ..engine import Engine, EngineStats
from ..provider import Provider

__all__ = ["CIPHERS", "TLS13_SUITES", "SCENARIOS", "BenchResult", "Setup", "amdahl_bound",
           "median_interval", "bootstrap_median", "cpu_clock", "steal_fraction", "busy_lanes",
           "verdict", "serial_time", "use_engine",
           "contexts", "Meter", "Pipetls", "BOOTSTRAP_SEED", "BOOTSTRAP_RESAMPLES", "MAX_REL_WIDTH",
           "PAIR_BYTES_PRESETS", "counter_delta", "parse_counters", "Measurement", "Probe"]

# name -> (TLS 1.2 suite, Encrypt-then-MAC, stock baseline label)
CIPHERS: dict[str, tuple[str, bool, str]] = {
    "AES-128-GCM": ("ECDHE-RSA-AES128-GCM-SHA256", True, "stock"),
    "AES-256-GCM": ("ECDHE-RSA-AES256-GCM-SHA384", True, "stock"),
    "ChaCha20-Poly1305": ("ECDHE-RSA-CHACHA20-POLY1305", True, "stock"),
    "AES-128-CBC-HMAC-SHA1": ("AES128-SHA", False, "stock MULTIBLOCK"),
    "AES-256-CBC-HMAC-SHA256": ("AES256-SHA256", False, "stock MULTIBLOCK"),
    "AES-256-CBC+HMAC-SHA256-EtM": ("AES256-SHA256", True, "stock"),
}
TLS13_SUITES: dict[str, str] = {
    "AES-128-GCM": "TLS_AES_128_GCM_SHA256",
    "AES-256-GCM": "TLS_AES_256_GCM_SHA384",
    "ChaCha20-Poly1305": "TLS_CHACHA20_POLY1305_SHA256",
}
SCENARIOS = ("write", "read", "latency", "loopback", "busy", "evp")

# --pair-bytes by name (bytes per side of one pair)
PAIR_BYTES_PRESETS: dict[str, int] = {"small": 1 << 20, "medium": 16 << 20, "large": 32 << 20}

# The interval of a row's speedup: a percentile bootstrap of the median of
# its pair ratios, BOOTSTRAP_RESAMPLES resamples drawn by random.Random
# seeded with BOOTSTRAP_SEED (the same pairs always give the same interval).
BOOTSTRAP_SEED = 20261201
BOOTSTRAP_RESAMPLES = 2000
# An interval wider than this fraction of its median is too wide to conclude.
MAX_REL_WIDTH = 0.25


@dataclass
class BenchResult:
    scenario: str
    cipher: str
    suite: str
    etm: bool
    tls: str
    max_pipelines: int
    lanes: int
    baseline: str
    total_bytes: int
    write_size: int
    stock_gbps: float
    pipetls_gbps: float
    speedup: float
    bound: float
    efficiency: float
    crypto_fraction: float
    serial_fraction: float = 0.0
    batches: int = 0
    mean_batch: float = 0.0
    stock_reps: list[float] = field(default_factory=list)
    pipetls_reps: list[float] = field(default_factory=list)
    unit: str = "GB/s"
    # evp rows: the interval of the median speedup (of interleaved pairs),
    # its confidence, and the ratio before the Python loop's cost is taken out
    speedup_lo: Optional[float] = None
    speedup_hi: Optional[float] = None
    interval_confidence: Optional[float] = None
    raw_speedup: Optional[float] = None
    harness_s: list[float] = field(default_factory=list)  # evp: the loops' own cost (stock, pipetls)
    # the interleaved pairs: [{"order", "stock_s", "stock_bytes", "pipetls_s",
    # "pipetls_bytes", "stock_cpu_s", "pipetls_cpu_s", "ratio", "bound",
    # "efficiency"}], one per pair (cpu: the process's CPU time, all threads)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    interval_method: str = ""  # "bootstrap" (TLS rows) or "order statistics" (evp)
    verdict: str = ""  # faster / slower / straddles 1.0 / too wide (see verdict())
    conclusive: bool = False
    efficiency_raw: float = 0.0  # before the clamp at 1.0
    efficiency_clamped: bool = False
    connections: int = 1  # busy: connections (one thread each)
    # the engine's counters summed over the pipetls side of every pair (every
    # integer key of its STATS text, known to this version or not)
    counters: dict[str, int] = field(default_factory=dict)
    # what pipelines the pipetls side: "engine" (ENGINE ciphers, TLS 1.2) or
    # "provider" (SSL_CTX made with ?provider=pipetls; patch 0002 for TLS 1.3)
    path: str = "engine"
    openssl: str = ""  # the libssl of the run (OpenSSL_version)
    # --control: True on a control row (stock on ``lanes`` connections at
    # once, one process each: the ceiling of the same pairs); on the pipetls
    # row, the median over the pairs of control time / pipetls time (what
    # share of that ceiling pipetls reached) with its bootstrap interval
    control: bool = False
    # the share of the machine's CPU time its hypervisor gave to others
    # while the row's pairs ran (/proc/stat steal; None where unknown)
    steal_fraction: Optional[float] = None
    of_control: Optional[float] = None
    of_control_lo: Optional[float] = None
    of_control_hi: Optional[float] = None


def cpu_clock() -> tuple[float, Optional[int], int]:
    """(now, the system's steal ticks so far or None, online CPUs): what
    :func:`steal_fraction` compares."""
    now = time.perf_counter()
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        steal: Optional[int] = int(fields[8]) if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError):
        steal = None
    return now, steal, os.cpu_count() or 1


def steal_fraction(before: tuple[float, Optional[int], int],
                   after: tuple[float, Optional[int], int]) -> Optional[float]:
    """The share of all CPUs' time between two :func:`cpu_clock` readings
    that the hypervisor ran something else on them (steal), or None where
    /proc/stat has no steal count.  Ticks are of 1/SC_CLK_TCK s (usually
    10 ms): meaningful over a row of pairs, not over one run."""
    (t0, s0, cpus), (t1, s1, _) = before, after
    if s0 is None or s1 is None or t1 <= t0:
        return None
    try:
        tick = float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError):
        tick = 100.0
    return round(min(max((s1 - s0) / tick / ((t1 - t0) * cpus), 0.0), 1.0), 4)


def amdahl_bound(lanes: float, t_total: float, t_crypto: float) -> float:
    """L*T / (L*T_serial + T_crypto), T_serial = T - T_crypto (>= 0)."""
    if t_total <= 0:
        return 1.0
    t_crypto = min(max(t_crypto, 0.0), t_total)
    t_serial = t_total - t_crypto
    return lanes * t_total / (lanes * t_serial + t_crypto)


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free interval for the median of ``values``: the order
    statistics (x_(k), x_(n+1-k)) for the largest k whose coverage
    1 - 2 P(Binomial(n, 1/2) < k) is at least ``confidence`` (k = 1, the
    range, when n is too small).  Returns (lo, hi, coverage)."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("median_interval of no values")
    below = 0.0  # P(B <= j - 1)
    k, coverage = 1, 1.0 - 2.0 * 0.5 ** n
    for j in range(1, (n + 1) // 2 + 1):
        below += math.comb(n, j - 1) * 0.5 ** n
        cov = 1.0 - 2.0 * below
        if cov < confidence:
            break
        k, coverage = j, cov
    return xs[k - 1], xs[n - k], coverage


def busy_lanes(lanes: int, connections: int, cpus: int) -> float:
    """The parallelism pipetls can add to ``connections`` busy threads:
    stock already keeps min(connections, cpus) cores busy, the lanes at most
    min(lanes, cpus); their ratio (at least 1).  At connections >= cpus it
    is 1: the bound is 1.0, matching stock is the best there is."""
    cpus = max(cpus, 1)
    return max(1.0, min(lanes, cpus) / min(connections, cpus))


def bootstrap_median(values: Sequence[float], confidence: float = 0.95,
                     resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """A percentile bootstrap interval for the median of ``values``:
    ``resamples`` samples of len(values) drawn with replacement by
    ``random.Random(seed)``; returns the (1-confidence)/2 and
    (1+confidence)/2 quantiles of their medians."""
    xs = list(values)
    if not xs:
        raise ValueError("bootstrap_median of no values")
    if len(xs) == 1:
        return xs[0], xs[0]
    rng = random.Random(seed)
    n = len(xs)
    meds = sorted(statistics.median(rng.choices(xs, k=n)) for _ in range(resamples))
    lo_i = int(math.floor((1.0 - confidence) / 2 * (resamples - 1)))
    hi_i = int(math.ceil((1.0 + confidence) / 2 * (resamples - 1)))
    return meds[lo_i], meds[hi_i]


def verdict(speedup: float, lo: float, hi: float,
            max_rel_width: float = MAX_REL_WIDTH) -> tuple[str, bool]:
    """What an interval allows to say, and whether the row is a conclusion:

    * ("faster", True) / ("slower", True): the interval lies above / below
      1.0 and is at most ``max_rel_width`` of the median wide;
    * ("faster, wide", False) / ("slower, wide", False): the direction is
      known, the size is not (the interval is wider than that);
    * ("straddles 1.0", False): a narrow interval that holds 1.0: no
      difference resolved;
    * ("too wide", False): a wide interval that holds 1.0: nothing to say.
    """
    wide = speedup <= 0 or (hi - lo) / speedup > max_rel_width
    if lo <= 1.0 <= hi:
        return ("too wide" if wide else "straddles 1.0"), False
    word = "faster" if lo > 1.0 else "slower"
    return (word + ", wide", False) if wide else (word, True)


def parse_counters(text: str) -> dict[str, int]:
    """Every ``key integer`` line of the engine's STATS text (hist.K,
    lane.N.*, and counters this version does not know yet)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


# STATS keys that are settings, not counters: reported as they are
_SETTINGS = ("pipetls.stats", "lanes", "workers", "inline_below")


def counter_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """``after - before`` key by key (settings taken from ``after``)."""
    return {k: (v if k in _SETTINGS else v - before.get(k, 0)) for k, v in after.items()}


@dataclass
class Measurement:
    """One side of one pair: its seconds and bytes, and for pipetls the
    engine's counters over the timed part."""

    seconds: float
    nbytes: int
    delta: Optional[EngineStats] = None
    counters: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # the process's CPU time (all threads) over the same region


# what serves the pipetls side of a run: the engine, the provider, or nothing
Pipetls = Union[Engine, Provider, None]


class Meter(Protocol):
    """What a Probe reads: the engine or the provider (same STATS text)."""

    def stats_text(self) -> str: ...


class Probe:
    """The engine's (or provider's) STATS around a timed region (nothing
    without one or on the stock side)."""

    def __init__(self, engine: Optional[Meter], pipelined: bool) -> None:
        self.engine = engine if pipelined else None
        self.before: Optional[str] = None
        self.cpu0 = 0.0

    def start(self) -> None:
        if self.engine is not None:
            self.before = self.engine.stats_text()
        self.cpu0 = time.process_time()

    def measurement(self, seconds: float, nbytes: int) -> Measurement:
        cpu = time.process_time() - self.cpu0
        if self.engine is None or self.before is None:
            return Measurement(seconds, nbytes, cpu_seconds=cpu)
        after = self.engine.stats_text()
        return Measurement(seconds, nbytes,
                           EngineStats.parse(after) - EngineStats.parse(self.before),
                           counter_delta(parse_counters(after), parse_counters(self.before)),
                           cpu_seconds=cpu)


def serial_time(t_pipetls: float, delta: Optional[EngineStats]) -> float:
    """The serial part of a pipetls run: its time outside record batches."""
    if delta is None:
        return t_pipetls
    return min(max(t_pipetls - delta.batch_ns / 1e9, 0.0), t_pipetls)


@dataclass
class Setup:
    cipher: str
    tls: str
    max_pipelines: int
    write_size: int
    read_buf: int
    certfile: str
    keyfile: str
    # the pipetls side's path: "engine", or the Provider its SSL_CTX prefers
    provider: Optional[Provider] = None


def use_engine(engine: Pipetls, pipelined: bool, lanes: int) -> None:
    """Before a run: the engine with ``lanes`` lanes as the default for its
    ciphers (pipetls), or not registered at all (stock).  Nothing for the
    provider (its lanes are a load-time setting)."""
    if not isinstance(engine, Engine):
        return
    if pipelined:
        engine.threads = lanes
        engine.register_default()
    else:
        engine.unregister()


def contexts(st: Setup, pipelined: bool) -> tuple[Context, Context]:
    suite, etm, _ = CIPHERS[st.cipher]
    knobs: dict[str, int] = {}
    if pipelined:
        knobs = {"max_pipelines": st.max_pipelines}
        if st.max_pipelines > 1:
            knobs["default_read_buffer_len"] = st.read_buf
    common: dict[str, Any] = dict(max_version="TLSv1.3" if st.tls == "1.3" else "TLSv1.2",
                  min_version="TLSv1.3" if st.tls == "1.3" else "TLSv1.2",
                  encrypt_then_mac=etm, **knobs)
    if st.tls == "1.3":
        common["ciphersuites"] = TLS13_SUITES[st.cipher]
    else:
        common["ciphers"] = suite
    # stock: the default provider's ciphers, never the pipetls provider's
    common["provider"] = st.provider if pipelined and st.provider is not None else False
    server = Context(server=True, certfile=st.certfile, keyfile=st.keyfile, **common)
    client = Context(server=False, verify=False, **common)
    return server, client
