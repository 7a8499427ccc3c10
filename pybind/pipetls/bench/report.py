"""``pipetls bench``'s report: the results table and the plot."""

from __future__ import annotations

import importlib
from typing import Any

from .model import BenchResult

__all__ = ["print_results", "plot"]


def print_results(console: Any, doc: dict[str, Any], results: list[BenchResult], tls: str,
                  reps: int) -> None:
    """The table of ``results`` and the legend, on ``console`` (rich)."""
    from rich.table import Table

    table = Table(title="pipetls bench (%s, %d CPUs, TLS %s; medians of %d)"
                  % (doc["machine"]["openssl"], doc["machine"]["cpus"], tls, reps))
    for col in ("scenario", "cipher", "mp", "lanes", "baseline", "stock", "pipetls",
                "speedup", "bound", "eff."):
        table.add_column(col, justify="right" if col not in ("scenario", "cipher", "baseline")
                         else "left")
    for r in results:
        speedup = "%.2fx" % r.speedup
        if r.speedup_lo is not None and r.speedup_hi is not None:
            speedup += " [%.2f-%.2f]" % (r.speedup_lo, r.speedup_hi)
        table.add_row(r.scenario, r.cipher, str(r.max_pipelines), str(r.lanes), r.baseline,
                      "%.3f %s" % (r.stock_gbps, r.unit), "%.3f %s" % (r.pipetls_gbps, r.unit),
                      speedup, "%.2fx" % r.bound, "%.0f%%" % (100 * r.efficiency))
    console.print(table)
    evp = [r for r in results if r.scenario == "evp"]
    if evp:
        console.print(
            "evp: %s messages of %d bytes per pipeline (mp = pipes), EVP_CipherPipeline* "
            "with the pipetls provider against the default provider one message at a time; "
            "speedup = median of %d interleaved pairs [%.0f%% bootstrap interval], both "
            "loops timed in C, nothing subtracted; control = stock's loop on plain threads "
            "in the same pairs, the ceiling this machine allows now"
            % (evp[0].max_pipelines, evp[0].write_size, len(evp[0].stock_reps),
               100 * (evp[0].interval_confidence or 0)))
    console.print("speedup = stock time / pipetls time (latency: stock us / pipetls us); "
                  "bound = Amdahl bound L*T/(L*T_serial + T - T_serial), T = stock time, "
                  "T_serial = the engine's time outside record batches; eff. = speedup / bound")


def plot(results: list[BenchResult], path: str) -> None:
    try:
        # imported by name: an optional dependency, typed or not
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise SystemExit(
            "pipetls bench --plot needs matplotlib: pip install 'pipetls[plot]'") from None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = [r for r in results if r.scenario in ("write", "read", "loopback")]
    if not rows:
        raise SystemExit("pipetls bench --plot: no write/read/loopback rows to plot")
    top_mp = max(r.max_pipelines for r in rows)
    top_lanes = max(r.lanes for r in rows)
    # left: against lanes at the largest max_pipelines; right: against
    # max_pipelines at the most lanes; one line per scenario and cipher
    for key, fixed, value, ax in (("lanes", "max_pipelines", top_mp, axes[0]),
                                  ("max_pipelines", "lanes", top_lanes, axes[1])):
        series: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for r in rows:
            if getattr(r, fixed) == value:
                series.setdefault((r.scenario, r.cipher), []).append((getattr(r, key), r.speedup))
        for (scen, cipher), pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label="%s %s" % (scen, cipher))
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel(key)
        ax.set_ylabel("speedup vs stock")
        ax.set_title("%s = %d" % (fixed, value), fontsize=9)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
