#!/usr/bin/env python3
"""Busy-server ratios from tests/c/pt_busy: N threads writing at once, stock
OpenSSL against one or more pipetls engines, in interleaved rounds.

    bench/busy_pairs.py --harness build/pt_busy --cert C --key K \\
        --engine new=build/pipetls.so [--engine old=/tmp/old.so] \\
        --threads 1,2,8 --rounds 15 --mib 32

Every round runs stock and each engine once, one process each, in an order
rotated from round to round; the ratio of a round is engine / stock from
that round. Prints, per thread count and engine, the median ratio, its
interquartile range and its extremes; the work ratio (stock's CPU seconds
over the engine's, all threads, for the same bytes: the throughput ratio to
expect when every core is busy, and one that other load on the machine
blurs far less than wall time); the median counters that explain it
(context switches, CPU seconds, batches kept by their callers) and,
with --json FILE, every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any


def run_one(harness: str, mode: str, cert: str, key: str, threads: int, mib: int,
            suite: str, lanes: int, pipelines: int, rt: bool = False) -> dict[str, Any]:
    cmd = [harness, mode, cert, key, str(threads), str(mib), suite, str(lanes), str(pipelines)]
    if rt:
        cmd = ["chrt", "-f", "1"] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if p.returncode != 0:
        sys.exit("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
    out: dict[str, Any] = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = float(v) if "." in v else int(v)
        except ValueError:
            out[k] = v
    return out


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--harness", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--engine", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--threads", default="1,2,8")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--mib", type=int, default=32, help="MiB written per thread")
    ap.add_argument("--suite", default="ECDHE-RSA-AES128-GCM-SHA256")
    ap.add_argument("--lanes", type=int, default=0, help="engine THREADS (0: its default)")
    ap.add_argument("--pipelines", type=int, default=8)
    ap.add_argument("--rt", action="store_true",
                    help="run the harness under chrt -f 1 (root): on a machine shared with "
                         "other work, its threads then have the cores to themselves, as on an "
                         "idle machine; keep runs short (the kernel's RT throttling still holds)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    engines = [tuple(e.split("=", 1)) for e in a.engine]
    modes = [("stock", "stock")] + [(n, p) for n, p in engines]
    doc: dict[str, Any] = {"suite": a.suite, "mib": a.mib, "rounds": a.rounds, "rt": a.rt,
                           "runs": []}
    for threads in [int(t) for t in a.threads.split(",")]:
        ratios: dict[str, list[float]] = {n: [] for n, _ in engines}
        work: dict[str, list[float]] = {n: [] for n, _ in engines}
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n, _ in modes}
        for r in range(a.rounds):
            k = r % len(modes)
            order = modes[k:] + modes[:k]
            got = {}
            for name, path in order:
                got[name] = run_one(a.harness, path, a.cert, a.key, threads, a.mib, a.suite,
                                    a.lanes, a.pipelines, a.rt)
                runs[name].append(got[name])
                doc["runs"].append({"threads": threads, "round": r, "name": name, **got[name]})
            for name, _ in engines:
                ratios[name].append(got[name]["aggregate_gbps"] / got["stock"]["aggregate_gbps"])
                work[name].append(got["stock"]["cpu_s"] / max(got[name]["cpu_s"], 1e-9))
        stock_gbps = statistics.median(x["aggregate_gbps"] for x in runs["stock"])
        print("threads %d: stock %.2f GB/s (median of %d)" % (threads, stock_gbps, a.rounds))
        for name, _ in engines:
            xs = sorted(ratios[name])
            q1, q3 = quartiles(xs)

            def med(key: str, name: str = name) -> float:
                return statistics.median(float(x.get(key, 0)) for x in runs[name])
            ws = sorted(work[name])
            w1, w3 = quartiles(ws)
            print("  %-8s ratio median %.3f  IQR %.3f-%.3f  range %.3f-%.3f  "
                  "work ratio median %.3f IQR %.3f-%.3f  "
                  "invol %.0f vol %.0f cpu/wall %.2f  kept %.0f/%.0f batches"
                  % (name, statistics.median(xs), q1, q3, xs[0], xs[-1],
                     statistics.median(ws), w1, w3,
                     med("involuntary_switches"), med("voluntary_switches"),
                     med("cpu_s") / max(med("wall_s"), 1e-9), med("batches_kept"), med("batches")))
        print("  stock    invol %.0f vol %.0f cpu/wall %.2f" % (
            statistics.median(float(x["involuntary_switches"]) for x in runs["stock"]),
            statistics.median(float(x["voluntary_switches"]) for x in runs["stock"]),
            statistics.median(float(x["cpu_s"]) for x in runs["stock"])
            / max(statistics.median(float(x["wall_s"]) for x in runs["stock"]), 1e-9)))
        sys.stdout.flush()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
