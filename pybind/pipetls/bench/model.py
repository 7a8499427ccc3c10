"""What ``pipetls bench`` measures and how a row is computed: the cipher
table, the result record, the Amdahl bound, and the contexts of one setup."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from ..context import Context
from ..engine import Engine, EngineStats

__all__ = ["CIPHERS", "TLS13_SUITES", "SCENARIOS", "BenchResult", "Setup", "amdahl_bound",
           "median_interval", "serial_time", "use_engine", "contexts"]

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
SCENARIOS = ("write", "read", "latency", "loopback", "evp")


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


def amdahl_bound(lanes: int, t_total: float, t_crypto: float) -> float:
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


def use_engine(engine: Optional[Engine], pipelined: bool, lanes: int) -> None:
    """Before a run: the engine with ``lanes`` lanes as the default for its
    ciphers (pipetls), or not registered at all (stock)."""
    if engine is None:
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
    server = Context(server=True, certfile=st.certfile, keyfile=st.keyfile, **common)
    client = Context(server=False, verify=False, **common)
    return server, client
