"""CBC-HMAC write, stock MULTIBLOCK against pipetls's CBC_HMAC_MODE
choices, in many short interleaved pairs (docs/performance.md, "CBC-HMAC
vs MULTIBLOCK").

Each pair is one stock run (engine unregistered: libssl's own MULTIBLOCK
write) and one pipetls run of a configuration (mode, max_pipelines), in
alternating order, on the harness of ``pipetls bench`` (write scenario: a
null sink, 256 KiB SSL_write calls). The configurations take turns pair by
pair, so slow spells of the machine fall on all of them. Prints per
configuration the median of the pair ratios (pipetls / stock) with a
distribution-free 95 % interval of that median, the median GB/s of each
side, the caller's serial share of the pipetls time and the Amdahl bound
it allows on the lanes used.

    python bench/cbc_hmac_pairs.py [--pairs 30] [--total 16M] [--lanes 2]
        [--cipher AES-128-CBC-HMAC-SHA1 ...] [--config multiblock:8 ...]
        [--clock wall|thread] [--json out.json]

--clock thread (with --lanes 1: all the work in the calling thread) times
each run in the caller's CPU time instead of wall time: on a machine busy
with other work, the time a run spends descheduled then does not count, so
the per-core cost of each path is measured even when a wall-clock speedup
cannot be. "serial" is then the share of the run outside record batches
(from the engine's wall-clock batch time over the run's wall time, both
stretched alike by descheduling), from which the bound on 2 lanes follows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import types

from pipetls import load_engine
from pipetls.bench.harness import one_run
from pipetls.bench.model import Setup, amdahl_bound, median_interval, serial_time
from pipetls.bench.runner import _throwaway_cert

DEFAULT_CONFIGS = ["multiblock:8", "auto:8", "auto:16", "stitched:16", "multiblock:16"]


stamps: list[float] = []  # --clock thread: wall time at each reading of the harness's timer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--total", type=lambda s: int(s.rstrip("M")) << 20, default=16 << 20)
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("--cipher", nargs="+",
                    default=["AES-128-CBC-HMAC-SHA1", "AES-256-CBC-HMAC-SHA256"])
    ap.add_argument("--config", nargs="+", default=DEFAULT_CONFIGS,
                    help="MODE:MAX_PIPELINES, MODE one of auto, stitched, multiblock")
    ap.add_argument("--engine", default=None)
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    if a.clock == "thread":
        if a.lanes != 1:
            ap.error("--clock thread needs --lanes 1 (workers' time is not the caller's)")
        import pipetls.bench.harness as harness

        def cpu_clock() -> float:  # the harness's timer: CPU time, wall time kept aside
            stamps.append(time.perf_counter())
            return time.thread_time()
        harness.time = types.SimpleNamespace(perf_counter=cpu_clock)  # type: ignore
    engine = load_engine(a.engine, register=False)
    tmp = tempfile.mkdtemp(prefix="pipetls-cbc-")
    cert, key = _throwaway_cert(tmp)
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in a.config]
    out = {"lanes": a.lanes, "total": a.total, "pairs": a.pairs, "clock": a.clock, "info": {},
           "rows": []}
    saved = engine.cbc_hmac_mode
    try:
        for cipher in a.cipher:
            setups = {mp: Setup(cipher, "1.2", mp, 256 << 10, mp * 17 << 10, cert, key)
                      for _, mp in configs}
            rows = {c: {"stock": [], "pipetls": [], "ratio": [], "serial": [], "paths": {}}
                    for c in configs}
            one_run(setups[8] if 8 in setups else next(iter(setups.values())), engine, True,
                    "write", 4 << 20, a.lanes)  # warm: pool, measurement, page faults
            for p in range(a.pairs):
                for c in configs:
                    mode, mp = c
                    engine.cbc_hmac_mode = mode
                    st = setups[mp]
                    order = (False, True) if (p + configs.index(c)) % 2 == 0 else (True, False)
                    t, wall = {}, {}
                    delta = None
                    for pipelined in order:
                        w0 = time.perf_counter()
                        del stamps[:]
                        dt, d = one_run(st, engine, pipelined, "write", a.total, a.lanes)
                        # the timed loop's wall time (the last two readings)
                        wall[pipelined] = (stamps[-1] - stamps[-2] if len(stamps) >= 2
                                           else time.perf_counter() - w0)
                        t[pipelined] = dt
                        if pipelined:
                            delta = d
                    r = rows[c]
                    r["stock"].append(a.total / t[False] / 1e9)
                    r["pipetls"].append(a.total / t[True] / 1e9)
                    r["ratio"].append(t[False] / t[True])
                    if a.clock == "thread" and delta is not None:  # wall-clock shares
                        r["serial"].append(max(0.0, 1.0 - delta.batch_ns / 1e9 / max(
                            delta.batch_ns / 1e9, wall[True])))
                    else:
                        r["serial"].append(serial_time(t[True], delta) / t[True])
                    if delta is not None:
                        for k in ("cbc_hmac_stitched", "cbc_hmac_mb4", "cbc_hmac_mb8"):
                            r["paths"][k] = r["paths"].get(k, 0) + getattr(delta, k)
                print(f"{cipher}: pair {p + 1}/{a.pairs}", file=sys.stderr, end="\r")
            print(file=sys.stderr)
            engine.cbc_hmac_mode = "auto"
            out["info"][cipher] = engine.info().get("cbc_hmac_cost." + cipher)
            print(f"\n{cipher}, {a.lanes} lanes, {a.pairs} pairs of {a.total >> 20} MiB, "
                  f"{a.clock} clock; "
                  f"costs stitched:mb4:mb8 = {out['info'][cipher]}")
            print(f"{'mode':<11}{'pipes':>6}{'ratio':>8}  {'95% interval':<14}{'stock':>8}"
                  f"{'pipetls':>9}{'serial':>8}{'bound':>7}  records by path  (bound: on max(lanes, 2) lanes)")
            for (mode, mp), r in rows.items():
                med = statistics.median(r["ratio"])
                lo, hi, cov = median_interval(r["ratio"])
                ser = statistics.median(r["serial"])
                bound = amdahl_bound(max(a.lanes, 2), 1.0, 1.0 - ser)
                paths = " ".join(f"{k[9:]}={v}" for k, v in r["paths"].items())
                print(f"{mode:<11}{mp:>6}{med:>7.2f}x  {lo:.2f}-{hi:.2f}x{'':<4}"
                      f"{statistics.median(r['stock']):>8.3f}{statistics.median(r['pipetls']):>9.3f}"
                      f"{ser:>7.0%}{bound:>6.2f}x  {paths}")
                out["rows"].append({"cipher": cipher, "mode": mode, "max_pipelines": mp,
                                    "ratio_median": med, "ratio_lo": lo, "ratio_hi": hi,
                                    "coverage": cov, "serial_median": ser, "bound": bound,
                                    **{k: r[k] for k in ("stock", "pipetls", "ratio", "serial",
                                                         "paths")}})
    finally:
        engine.cbc_hmac_mode = saved
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
